//! The one thread for blocking work (DNS, registry HTTP, slow disk probes). Jobs go in over a
//! bounded channel; results come back over a channel plus a `mio::Waker`, so the loop never
//! blocks and never polls for them.
//!
//! Invariant: the worker never spawns child processes (PR_SET_PDEATHSIG is tied to the
//! thread that forks; all children are spawned from the loop thread).

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
