//! Writes of state documents on the worker thread, reported back to the loop exactly once.
//!
//! The loop serializes a document ([`StateDir::prepare`]) and hands the blocking part
//! ([`state::PreparedWrite::commit`]: temp file, fsync, rename, fsync of the directory) to the
//! worker; its outcome comes back through a [`WriteTicket`], and the loop is woken. A job
//! dropped without running (the worker was stopped with it queued) reports
//! [`Outcome::NotRun`]: nothing was written, so its callers can be refused truthfully. With no
//! worker, or its queue full, the write runs on the loop as it did before the worker took it.

use super::*;
use crate::reactor::worker::Job;
use crate::state::PreparedWrite;
use std::sync::Mutex;

/// What became of a write handed to the worker.
#[derive(Debug)]
pub(super) enum Outcome {
    Done(Result<(), StateError>),
    /// The job was dropped without running (the worker stopped): nothing was written.
    NotRun,
}

/// The loop's side of a write on the worker: its outcome appears here exactly once, and the
/// loop is woken when it does.
#[derive(Debug)]
pub(super) struct WriteTicket {
    slot: Arc<Mutex<Option<Outcome>>>,
}

/// The worker's side: reports the result, or [`Outcome::NotRun`] when dropped unused.
struct Reporter {
    slot: Arc<Mutex<Option<Outcome>>>,
    waker: Arc<mio::Waker>,
    reported: bool,
}

impl Reporter {
    fn report(&mut self, outcome: Outcome) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(outcome);
        drop(slot);
        self.reported = true;
        // A failed wake means the loop is gone; nobody is left to answer.
        let _ = self.waker.wake();
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if !self.reported {
            self.report(Outcome::NotRun);
        }
    }
}

impl WriteTicket {
    /// A ticket and the worker job that commits `write` and reports through it.
    fn new(write: PreparedWrite, waker: Arc<mio::Waker>) -> (WriteTicket, Job<WorkResult>) {
        let slot = Arc::new(Mutex::new(None));
        let mut reporter = Reporter {
            slot: slot.clone(),
            waker,
            reported: false,
        };
        let job = Box::new(move || {
            reporter.report(Outcome::Done(write.commit()));
            WorkResult::Saved
        });
        (WriteTicket { slot }, job)
    }

    pub(super) fn take(&self) -> Option<Outcome> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Outcome {
    /// The write's result; "not run" is an error naming `path` (the file was not touched).
    pub(super) fn into_result(self, path: &Path) -> Result<(), StateError> {
        match self {
            Outcome::Done(result) => result,
            Outcome::NotRun => Err(StateError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other("the worker stopped before saving it"),
            }),
        }
    }
}

impl Daemon {
    /// Hands `write` to the worker (`Ok`: its ticket) or, without a worker to take it, writes
    /// it here (`Err`: the result, final).
    pub(super) fn dispatch_write(
        &mut self,
        write: PreparedWrite,
    ) -> Result<WriteTicket, Result<(), StateError>> {
        if let Some(worker) = self.worker.as_mut() {
            let (ticket, job) = WriteTicket::new(write.clone(), self.waker.clone());
            if worker.submit(job).is_ok() {
                return Ok(ticket);
            }
        }
        Err(write.commit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(dir: &Path) -> (StateDir, PreparedWrite) {
        let state = StateDir::open(dir).expect("state dir");
        let write = state.prepare("t.json", &json!([1])).expect("prepare");
        (state, write)
    }

    #[test]
    fn a_ticket_reports_exactly_once_even_when_its_job_never_runs() {
        let poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(1)).expect("waker"));
        let dir = std::env::temp_dir().join(format!("vsm-ticket-{}", std::process::id()));
        let (_state, write) = prepared(&dir);

        let (ticket, job) = WriteTicket::new(write.clone(), waker.clone());
        assert!(ticket.take().is_none(), "nothing before the job ran");
        drop(job);
        assert!(matches!(ticket.take(), Some(Outcome::NotRun)));
        assert!(ticket.take().is_none(), "once");

        let (ticket, job) = WriteTicket::new(write, waker);
        let result = std::thread::spawn(job).join().expect("job");
        assert!(matches!(result, WorkResult::Saved));
        assert!(matches!(ticket.take(), Some(Outcome::Done(Ok(())))));
        assert!(dir.join("t.json").is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
