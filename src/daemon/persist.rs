//! Writes of state documents on the worker thread, reported back to the loop exactly once.
//!
//! The loop serializes a document ([`StateDir::prepare`]) and hands the blocking part
//! ([`state::PreparedWrite::commit`]: temp file, fsync, rename, fsync of the directory) to the
//! worker; its outcome comes back through a [`WriteTicket`], and the loop is woken. A job
//! dropped without running (the worker was stopped with it queued) reports
//! [`Outcome::NotRun`]: nothing was written, so its callers can be refused truthfully. With no
//! worker, or its queue full, the write runs on the loop as it did before the worker took it.
//!
//! Rooms write their documents with `Effect::Persist` ([`Documents`]): per file one write in
//! flight, the next one carrying the latest document queued meanwhile (writes coalesce), and
//! each acknowledgement sent only once the write that contains its change is on disk.

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

/// Acknowledgements waiting per file, bounded: beyond this a change is refused (`busy`).
const ACKS_WAITING: usize = 1024;

/// The documents rooms write (`Effect::Persist`): the decisions, without the I/O.
#[derive(Default)]
pub(super) struct Documents {
    files: BTreeMap<&'static str, Doc>,
}

struct Doc {
    /// The newest document not yet handed to a write.
    latest: Option<Value>,
    acks: state::WriteQueue<Option<(ReplyTo, Value)>>,
    ticket: Option<WriteTicket>,
}

impl Documents {
    /// Queues `write`. `Ok(Some(document))`: nothing is in flight for that file, write this
    /// now; `Ok(None)`: it goes with the next write. `Err`: too many waiting, its ack back.
    fn queue(
        &mut self,
        write: crate::room::Persist,
    ) -> Result<Option<Value>, Option<(ReplyTo, Value)>> {
        let doc = self.files.entry(write.file).or_insert_with(|| Doc {
            latest: None,
            acks: state::WriteQueue::new(ACKS_WAITING),
            ticket: None,
        });
        doc.acks.push(write.ack)?;
        doc.latest = Some(write.document);
        Ok(Self::next(doc))
    }

    /// The write of `file` finished: the acknowledgements it carried, and the next document
    /// to write, if changes came meanwhile.
    fn finished(&mut self, file: &str) -> (Vec<(ReplyTo, Value)>, Option<Value>) {
        let Some(doc) = self.files.get_mut(file) else {
            return (Vec::new(), None);
        };
        doc.ticket = None;
        let acks = doc.acks.finish().into_iter().flatten().collect();
        (acks, Self::next(doc))
    }

    fn next(doc: &mut Doc) -> Option<Value> {
        if doc.acks.start() {
            doc.latest.take()
        } else {
            None
        }
    }

    /// Writes on the worker whose outcome has come back.
    fn reported(&mut self) -> Vec<(&'static str, Outcome)> {
        self.files
            .iter()
            .filter_map(|(file, doc)| Some((*file, doc.ticket.as_ref()?.take()?)))
            .collect()
    }
}

impl Daemon {
    /// A room's `Effect::Persist`: queued for its file, written on the worker.
    pub(super) fn persist(&mut self, cx: &mut Cx<'_, Timer>, write: crate::room::Persist) {
        let file = write.file;
        match self.documents.queue(write) {
            Ok(Some(document)) => self.write_document(cx, file, &document),
            Ok(None) => {}
            Err(ack) => {
                if let Some((to, _)) = ack {
                    let e = ApiError::new(
                        ErrorCode::Busy,
                        format!("{file}: too many changes waiting; try again"),
                    );
                    self.answer(cx, to, Err(e));
                }
            }
        }
    }

    fn write_document(&mut self, cx: &mut Cx<'_, Timer>, file: &'static str, document: &Value) {
        let result = match self.state.prepare(file, document) {
            Ok(write) => match self.dispatch_write(write) {
                Ok(ticket) => {
                    if let Some(doc) = self.documents.files.get_mut(file) {
                        doc.ticket = Some(ticket);
                    }
                    return;
                }
                Err(result) => result,
            },
            Err(e) => Err(e),
        };
        self.document_written(cx, file, result);
    }

    /// Called on every wake: finishes the rooms' writes the worker reported.
    pub(super) fn poll_document_writes(&mut self, cx: &mut Cx<'_, Timer>) {
        for (file, outcome) in self.documents.reported() {
            let result = outcome.into_result(&self.state.path().join(file));
            self.document_written(cx, file, result);
        }
    }

    /// Answers the changes the write carried (with the failure if it failed) and starts the
    /// next write of that file.
    fn document_written(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        file: &'static str,
        result: Result<(), StateError>,
    ) {
        if let Err(e) = &result {
            log::error!("cannot save {file}: {e}");
        }
        let (acks, next) = self.documents.finished(file);
        for (to, data) in acks {
            let answer = match &result {
                Ok(()) => Ok(data),
                Err(e) => Err(persist_error(e)),
            };
            self.answer(cx, to, answer);
        }
        if let Some(document) = next {
            self.write_document(cx, file, &document);
        }
    }

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

    fn to(tag: u64) -> ReplyTo {
        ReplyTo::Room { room: "test", tag }
    }

    fn write(n: u64) -> crate::room::Persist {
        crate::room::Persist {
            file: "doc.json",
            document: json!({ "n": n }),
            ack: Some((to(n), json!(n))),
        }
    }

    fn tags(acks: &[(ReplyTo, Value)]) -> Vec<u64> {
        acks.iter()
            .map(|(to, _)| match to {
                ReplyTo::Room { tag, .. } => *tag,
                _ => panic!("not ours"),
            })
            .collect()
    }

    #[test]
    fn a_rooms_write_is_acknowledged_only_with_the_write_that_carries_it() {
        let mut docs = Documents::default();
        assert_eq!(
            docs.queue(write(1)).ok(),
            Some(Some(json!({"n": 1}))),
            "idle: write now"
        );
        // Two more while the first is in flight: nothing to write, and nobody answered yet.
        assert_eq!(docs.queue(write(2)).ok(), Some(None));
        assert_eq!(docs.queue(write(3)).ok(), Some(None));
        // The first write lands: only its own change is acknowledged; the next write carries
        // the newest document, for both waiting changes.
        let (acks, next) = docs.finished("doc.json");
        assert_eq!(tags(&acks), [1]);
        assert_eq!(next, Some(json!({"n": 3})));
        let (acks, next) = docs.finished("doc.json");
        assert_eq!(tags(&acks), [2, 3]);
        assert_eq!(next, None);
        assert_eq!(docs.finished("doc.json").0.len(), 0, "nothing twice");
    }

    #[test]
    fn a_rooms_writes_are_bounded() {
        let mut docs = Documents::default();
        assert!(docs.queue(write(0)).is_ok());
        for n in 1..=ACKS_WAITING as u64 {
            assert!(docs.queue(write(n)).is_ok());
        }
        let refused = docs.queue(write(7)).err().flatten();
        assert!(matches!(refused, Some((ReplyTo::Room { tag: 7, .. }, _))));
    }
}
