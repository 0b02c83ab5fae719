//! The one thread for blocking work (DNS, registry HTTP, slow disk probes). Jobs go in over a
//! bounded channel; results come back over a channel plus a `mio::Waker`, so the loop never
//! blocks and never polls for them.
//!
//! Invariant: the worker never spawns child processes (PR_SET_PDEATHSIG is tied to the
//! thread that forks; all children are spawned from the loop thread).

use super::timer::TimerId;
use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A unit of blocking work.
pub type Job<R> = Box<dyn FnOnce() -> R + Send + 'static>;

/// Why a job was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full.
    Busy,
    /// The thread is gone.
    Gone,
}

/// Handle to the worker thread.
pub struct Worker<R> {
    jobs: SyncSender<(u64, Job<R>)>,
    results: Receiver<(u64, R)>,
    thread: JoinHandle<()>,
    next_id: u64,
}

impl<R: Send + 'static> Worker<R> {
    /// Starts the thread with a queue of `queue` jobs.
    ///
    /// # Errors
    /// The OS refused to create the thread.
    pub fn spawn(waker: Arc<mio::Waker>, queue: usize) -> std::io::Result<Self> {
        let (jobs, job_rx) = mpsc::sync_channel::<(u64, Job<R>)>(queue);
        let (result_tx, results) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("vsm-worker".into())
            .spawn(move || {
                for (id, job) in job_rx {
                    if result_tx.send((id, job())).is_err() {
                        break;
                    }
                    // A failed wake means the loop is gone; the send above already failed then.
                    let _ = waker.wake();
                }
            })?;
        Ok(Worker {
            jobs,
            results,
            thread,
            next_id: 1,
        })
    }

    /// Queues a job; returns its id, which comes back with the result.
    ///
    /// # Errors
    /// [`SubmitError::Busy`] when the queue is full, [`SubmitError::Gone`] when the thread died.
    pub fn submit(&mut self, job: Job<R>) -> Result<u64, SubmitError> {
        let id = self.next_id;
        match self.jobs.try_send((id, job)) {
            Ok(()) => {
                self.next_id += 1;
                Ok(id)
            }
            Err(TrySendError::Full(_)) => Err(SubmitError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Gone),
        }
    }

    /// A finished job's result, if one is waiting.
    pub fn try_result(&self) -> Option<(u64, R)> {
        self.results.try_recv().ok()
    }

    /// Whether the thread is still running.
    pub fn is_alive(&self) -> bool {
        !self.thread.is_finished()
    }
}

/// What a job's owner gets when the job does not come back: built from why it did not.
type Failure<R> = Box<dyn FnOnce(&str) -> R>;

/// The jobs the loop waits for, each with its deadline timer and the result its owner gets
/// if the job does not come back (deadline passed, worker stopped).
///
/// A job's result type `R` carries everything its owner needs (the work closure moved it
/// in), and so does the failure: nothing pairs a result with a waiting entry at run time.
/// A job exists here until exactly one of [`Waiting::finished`], [`Waiting::missed`] or
/// [`Waiting::fail_all`] takes it; a result that comes back after that is late and dropped.
pub struct Waiting<R> {
    jobs: HashMap<u64, (TimerId, Failure<R>)>,
}

impl<R> Default for Waiting<R> {
    fn default() -> Self {
        Waiting {
            jobs: HashMap::new(),
        }
    }
}

impl<R> Waiting<R> {
    /// Waits for job `id` until the timer `deadline`; `fail` builds its result if it does
    /// not come back.
    pub fn wait(&mut self, id: u64, deadline: TimerId, fail: impl FnOnce(&str) -> R + 'static) {
        self.jobs.insert(id, (deadline, Box::new(fail)));
    }

    /// Job `id` came back: its deadline timer to cancel, or `None` when nobody waits for it
    /// any more (late, or never waited for) and its result is to be dropped.
    pub fn finished(&mut self, id: u64) -> Option<TimerId> {
        self.jobs.remove(&id).map(|(timer, _)| timer)
    }

    /// Job `id`'s deadline passed: the result its owner gets instead.
    pub fn missed(&mut self, id: u64, why: &str) -> Option<R> {
        self.jobs.remove(&id).map(|(_, fail)| fail(why))
    }

    /// Every waiting job failed (the worker was stopped): their deadline timers to cancel and
    /// the results their owners get.
    pub fn fail_all(&mut self, why: &str) -> Vec<(TimerId, R)> {
        let mut ids: Vec<u64> = self.jobs.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| self.jobs.remove(&id))
            .map(|(timer, fail)| (timer, fail(why)))
            .collect()
    }

    /// Jobs waited for.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job is waited for.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn results_come_back_with_a_wake() {
        let mut poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(9)).expect("waker"));
        let mut worker: Worker<u32> = Worker::spawn(waker, 4).expect("spawn");
        let id = worker.submit(Box::new(|| 40 + 2)).expect("submit");
        let mut events = mio::Events::with_capacity(4);
        let mut got = None;
        for _ in 0..100 {
            poll.poll(&mut events, Some(Duration::from_secs(5)))
                .expect("poll");
            if let Some(r) = worker.try_result() {
                got = Some(r);
                break;
            }
        }
        assert_eq!(got, Some((id, 42)));
        assert!(worker.is_alive());
    }

    #[test]
    fn a_waited_job_ends_exactly_once() {
        let mut wheel = super::super::timer::TimerWheel::new(std::time::Instant::now());
        let t1 = wheel.insert(std::time::Instant::now(), ());
        let t2 = wheel.insert(std::time::Instant::now(), ());
        let mut waiting: Waiting<String> = Waiting::default();
        waiting.wait(1, t1, |why| format!("one: {why}"));
        waiting.wait(2, t2, |why| format!("two: {why}"));
        assert_eq!(waiting.missed(1, "late").as_deref(), Some("one: late"));
        assert_eq!(waiting.finished(1), None, "a late result is dropped");
        assert_eq!(waiting.missed(1, "late"), None);
        assert_eq!(waiting.finished(2), Some(t2));
        assert!(waiting.is_empty());
        waiting.wait(3, t1, |why| format!("three: {why}"));
        assert_eq!(
            waiting.fail_all("stopped"),
            vec![(t1, "three: stopped".to_string())]
        );
        assert_eq!(waiting.finished(3), None);
    }

    #[test]
    fn full_queue_is_busy_not_blocking() {
        let poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(9)).expect("waker"));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let mut worker: Worker<()> = Worker::spawn(waker, 1).expect("spawn");
        worker
            .submit(Box::new(move || {
                let _ = release_rx.recv_timeout(Duration::from_secs(10));
            }))
            .expect("first");
        let mut busy = false;
        for _ in 0..3 {
            if worker.submit(Box::new(|| ())) == Err(SubmitError::Busy) {
                busy = true;
            }
        }
        assert!(busy);
        let _ = release_tx.send(());
    }
}
