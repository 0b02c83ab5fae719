//! Logging: `log` records go to stderr through `env_logger` (journald-friendly when stderr
//! is the journal) and into a bounded in-memory ring that `vsm-daemon logs` reads.
//!
//! Invariants: the ring holds at most `capacity` records of at most [`MAX_MESSAGE_BYTES`]
//! each; every record gets a sequence number, so a reader that fell behind can tell how many
//! it missed. The ring is the one piece of state shared with other threads (the worker logs
//! too), so it sits behind a `Mutex`; holders never block on anything else.

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::SystemTime;

/// Longest message kept in the ring; longer ones are cut with a marker.
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// One log record as kept in the ring.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// Sequence number, strictly increasing.
    pub seq: u64,
    /// When it was logged.
    pub time: SystemTime,
    /// Severity.
    pub level: log::Level,
    /// Module or component (`vsm_daemon::daemon`, `mcp:time`).
    pub target: String,
    /// The message, possibly truncated.
    pub message: String,
}

impl LogRecord {
    /// JSON form used by the API.
    pub fn to_json(&self) -> Value {
        json!({
            "seq": self.seq,
            "timestamp": crate::state::rfc3339_utc_millis(self.time),
            "level": self.level.as_str().to_ascii_lowercase(),
            "target": self.target,
            "message": self.message,
        })
    }
}

#[derive(Debug)]
struct Ring {
    records: VecDeque<LogRecord>,
    capacity: usize,
    next_seq: u64,
}

/// Bounded ring of recent records.
#[derive(Debug)]
pub struct LogRing {
    inner: Mutex<Ring>,
}

impl LogRing {
    /// An empty ring holding at most `capacity` records.
    pub fn new(capacity: usize) -> Self {
        LogRing {
            inner: Mutex::new(Ring {
                records: VecDeque::with_capacity(capacity.min(1024)),
                capacity: capacity.max(1),
                next_seq: 1,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panic while holding the lock cannot leave the ring inconsistent (push is one step).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a record, evicting the oldest when full.
    pub fn push(&self, time: SystemTime, level: log::Level, target: &str, message: String) {
        let mut ring = self.lock();
        let seq = ring.next_seq;
        ring.next_seq += 1;
        if ring.records.len() >= ring.capacity {
            ring.records.pop_front();
        }
        ring.records.push_back(LogRecord {
            seq,
            time,
            level,
            target: target.to_string(),
            message: truncate(message),
        });
    }

    /// Changes the capacity, dropping the oldest records if it shrinks.
    pub fn set_capacity(&self, capacity: usize) {
        let mut ring = self.lock();
        ring.capacity = capacity.max(1);
        while ring.records.len() > ring.capacity {
            ring.records.pop_front();
        }
    }

    /// Sequence number of the newest record (0 when none yet).
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// The sequence number of the oldest of what [`LogRing::query`] would return, without
    /// copying the records (where a follower starts).
    pub fn first_of_newest(
        &self,
        after: u64,
        limit: usize,
        keep: impl Fn(&LogRecord) -> bool,
    ) -> Option<u64> {
        let ring = self.lock();
        ring.records
            .iter()
            .rev()
            .take_while(|r| r.seq > after)
            .filter(|r| keep(r))
            .take(limit)
            .last()
            .map(|r| r.seq)
    }

    /// Records with `seq > after` that pass `keep`, the oldest `limit` of them, oldest first
    /// (a follower's next batch: it copies no more than it sends).
    pub fn next_after(
        &self,
        after: u64,
        limit: usize,
        keep: impl Fn(&LogRecord) -> bool,
    ) -> Vec<LogRecord> {
        let ring = self.lock();
        let start = ring.records.partition_point(|r| r.seq <= after);
        ring.records
            .range(start..)
            .filter(|r| keep(r))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Records with `seq > after` that pass `keep`, newest `limit` of them, oldest first.
    pub fn query(
        &self,
        after: u64,
        limit: usize,
        keep: impl Fn(&LogRecord) -> bool,
    ) -> Vec<LogRecord> {
        let ring = self.lock();
        let mut out: Vec<LogRecord> = ring
            .records
            .iter()
            .rev()
            .take_while(|r| r.seq > after)
            .filter(|r| keep(r))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// Sequence number of the oldest record still held.
    pub fn first_seq(&self) -> u64 {
        let ring = self.lock();
        ring.records.front().map_or(ring.next_seq, |r| r.seq)
    }
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        message.truncate(crate::text::floor_boundary(&message, MAX_MESSAGE_BYTES));
        message.push_str(" …[truncated]");
    }
    message
}

/// The process-wide logger: env_logger for stderr, plus the ring.
struct TeeLogger {
    stderr: env_logger::Logger,
    ring: Arc<LogRing>,
    followers: Arc<AtomicUsize>,
    waker: OnceLock<(ThreadId, Arc<mio::Waker>)>,
}

impl log::Log for TeeLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if self.stderr.matches(record) {
            self.stderr.log(record);
        }
        self.ring.push(
            SystemTime::now(),
            record.level(),
            record.target(),
            record.args().to_string(),
        );
        // Records from other threads must wake the loop so followers see them; records from
        // the loop thread are flushed at the end of the current iteration anyway.
        if self.followers.load(Ordering::Relaxed) > 0 {
            if let Some((loop_thread, waker)) = self.waker.get() {
                if *loop_thread != std::thread::current().id() {
                    let _ = waker.wake();
                }
            }
        }
    }

    fn flush(&self) {
        self.stderr.flush();
    }
}

/// Handle kept by the daemon to steer logging at run time.
#[derive(Clone)]
pub struct Logging {
    /// The ring of recent records.
    pub ring: Arc<LogRing>,
    followers: Arc<AtomicUsize>,
    logger: Option<&'static TeeLogger>,
}

impl Logging {
    /// Installs the global logger (once per process; later calls return a detached handle
    /// whose ring still works, which is what unit tests need).
    pub fn init(level: log::LevelFilter, capacity: usize) -> Logging {
        let ring = Arc::new(LogRing::new(capacity));
        let followers = Arc::new(AtomicUsize::new(0));
        let mut builder = env_logger::Builder::new();
        builder.filter_level(log::LevelFilter::Trace);
        if let Ok(filters) = std::env::var("RUST_LOG") {
            builder.parse_filters(&filters);
        }
        let journal = std::env::var_os("JOURNAL_STREAM").is_some();
        builder.format(move |buf, record| {
            if journal {
                // sd-daemon(3) priority prefixes; the journal adds its own timestamps.
                let prio = match record.level() {
                    log::Level::Error => 3,
                    log::Level::Warn => 4,
                    log::Level::Info => 6,
                    log::Level::Debug | log::Level::Trace => 7,
                };
                writeln!(buf, "<{prio}>{}: {}", record.target(), record.args())
            } else {
                writeln!(
                    buf,
                    "{} {:<5} {}: {}",
                    crate::state::rfc3339_utc_millis(SystemTime::now()),
                    record.level(),
                    record.target(),
                    record.args()
                )
            }
        });
        let logger: &'static TeeLogger = Box::leak(Box::new(TeeLogger {
            stderr: builder.build(),
            ring: ring.clone(),
            followers: followers.clone(),
            waker: OnceLock::new(),
        }));
        let installed = log::set_logger(logger).is_ok();
        if installed {
            log::set_max_level(level);
        }
        Logging {
            ring,
            followers,
            logger: installed.then_some(logger),
        }
    }

    /// Lets records from other threads wake the loop (the calling thread is the loop).
    pub fn set_waker(&self, waker: Arc<mio::Waker>) {
        if let Some(logger) = self.logger {
            let _ = logger.waker.set((std::thread::current().id(), waker));
        }
    }

    /// Changes the level live.
    pub fn set_level(&self, level: log::LevelFilter) {
        if self.logger.is_some() {
            log::set_max_level(level);
        }
    }

    /// Records how many streams follow the log (they need cross-thread wake-ups).
    pub fn set_followers(&self, n: usize) {
        self.followers.store(n, Ordering::Relaxed);
    }
}

/// What [`LogThrottle::admit`] decided for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Log this message.
    pub log: bool,
    /// Messages of this kind suppressed in the window that just ended: when non-zero, log
    /// "suppressed K similar messages" (before this one).
    pub suppressed: u64,
}

/// At most `per_window` log lines per kind of message per `window`; the rest are counted and
/// reported as one line when the next message of that kind arrives after the window, or when
/// the owner calls [`LogThrottle::take_expired`] (so a flood that stops is still reported). A flood of
/// refused requests thus costs a bounded number of lines (at most `per_window + 1` per kind per
/// window) however fast it comes. Pure: the caller passes the time, so tests need no clock.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    window: std::time::Duration,
    per_window: u32,
    kinds: Vec<ThrottleWindow>,
}

#[derive(Debug, Clone)]
struct ThrottleWindow {
    kind: &'static str,
    start: std::time::Instant,
    logged: u32,
    suppressed: u64,
}

impl LogThrottle {
    /// A throttle of `per_window` lines per kind per `window`.
    pub fn new(window: std::time::Duration, per_window: u32) -> Self {
        LogThrottle {
            window,
            per_window,
            kinds: Vec::new(),
        }
    }

    /// Decides about one message of `kind` at `now`. Kinds are a small fixed set of static
    /// names, so the state stays bounded.
    pub fn admit(&mut self, kind: &'static str, now: std::time::Instant) -> Admission {
        let i = match self.kinds.iter().position(|w| w.kind == kind) {
            Some(i) => i,
            None => {
                self.kinds.push(ThrottleWindow {
                    kind,
                    start: now,
                    logged: 0,
                    suppressed: 0,
                });
                self.kinds.len() - 1
            }
        };
        let w = &mut self.kinds[i];
        let mut suppressed = 0;
        if now.saturating_duration_since(w.start) >= self.window {
            suppressed = std::mem::take(&mut w.suppressed);
            w.start = now;
            w.logged = 0;
        }
        let log = w.logged < self.per_window;
        if log {
            w.logged += 1;
        } else {
            w.suppressed += 1;
        }
        Admission { log, suppressed }
    }
}

impl LogThrottle {
    /// Kinds whose window has ended with suppressed messages, and how many; their counts are
    /// reset (each suppressed message is reported once, here or by [`LogThrottle::admit`]).
    pub fn take_expired(&mut self, now: std::time::Instant) -> Vec<(&'static str, u64)> {
        let window = self.window;
        self.kinds
            .iter_mut()
            .filter(|w| w.suppressed > 0 && now.saturating_duration_since(w.start) >= window)
            .map(|w| (w.kind, std::mem::take(&mut w.suppressed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_that_stops_is_reported_by_take_expired() {
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let mut t = LogThrottle::new(Duration::from_secs(10), 1);
        for _ in 0..5 {
            t.admit("origin", t0);
        }
        assert!(t.take_expired(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(
            t.take_expired(t0 + Duration::from_secs(10)),
            vec![("origin", 4)]
        );
        assert!(t.take_expired(t0 + Duration::from_secs(20)).is_empty());
        // Reported once: the next admission does not repeat it.
        let a = t.admit("origin", t0 + Duration::from_secs(30));
        assert_eq!(
            a,
            Admission {
                log: true,
                suppressed: 0
            }
        );
    }

    #[test]
    fn throttle_bounds_lines_per_kind_and_reports_the_rest() {
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let mut t = LogThrottle::new(Duration::from_secs(10), 3);
        let mut lines = 0;
        for i in 0..1000 {
            let a = t.admit("token", t0 + Duration::from_millis(i));
            assert_eq!(a.suppressed, 0);
            lines += u32::from(a.log);
        }
        assert_eq!(lines, 3);
        // Another kind has its own budget.
        assert!(t.admit("host", t0 + Duration::from_secs(1)).log);
        // The window rolls over: one summary, then a fresh budget.
        let a = t.admit("token", t0 + Duration::from_secs(10));
        assert_eq!(
            a,
            Admission {
                log: true,
                suppressed: 997
            }
        );
        assert!(t.admit("token", t0 + Duration::from_secs(11)).log);
        assert!(t.admit("token", t0 + Duration::from_secs(12)).log);
        let a = t.admit("token", t0 + Duration::from_secs(13));
        assert_eq!(
            a,
            Admission {
                log: false,
                suppressed: 0
            }
        );
        // A quiet window reports nothing.
        let a = t.admit("token", t0 + Duration::from_secs(60));
        assert_eq!(
            a,
            Admission {
                log: true,
                suppressed: 1
            }
        );
        let a = t.admit("token", t0 + Duration::from_secs(120));
        assert_eq!(
            a,
            Admission {
                log: true,
                suppressed: 0
            }
        );
    }

    #[test]
    fn ring_is_bounded_and_sequenced() {
        let ring = LogRing::new(3);
        for i in 0..5 {
            ring.push(SystemTime::now(), log::Level::Info, "t", format!("m{i}"));
        }
        assert_eq!(ring.last_seq(), 5);
        assert_eq!(ring.first_seq(), 3);
        let all = ring.query(0, 10, |_| true);
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        let newest = ring.query(0, 2, |_| true);
        assert_eq!(newest.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(ring.query(4, 10, |_| true).len(), 1);
        ring.set_capacity(1);
        assert_eq!(ring.query(0, 10, |_| true).len(), 1);
    }

    #[test]
    fn next_after_gives_the_oldest_batch_from_a_cursor() {
        let ring = LogRing::new(10);
        for i in 0..8 {
            let target = if i % 2 == 0 { "even" } else { "odd" };
            ring.push(SystemTime::now(), log::Level::Info, target, format!("m{i}"));
        }
        let seqs = |v: Vec<LogRecord>| v.iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(ring.next_after(0, 3, |_| true)), vec![1, 2, 3]);
        assert_eq!(seqs(ring.next_after(3, 3, |_| true)), vec![4, 5, 6]);
        assert_eq!(seqs(ring.next_after(6, 3, |_| true)), vec![7, 8]);
        assert!(ring.next_after(8, 3, |_| true).is_empty());
        assert_eq!(ring.first_of_newest(0, 3, |_| true), Some(6));
        assert_eq!(ring.first_of_newest(0, 100, |r| r.target == "odd"), Some(2));
        assert_eq!(ring.first_of_newest(8, 3, |_| true), None);
        assert_eq!(
            seqs(ring.next_after(2, 2, |r| r.target == "even")),
            vec![3, 5]
        );
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let ring = LogRing::new(2);
        ring.push(SystemTime::now(), log::Level::Warn, "t", "é".repeat(5000));
        let rec = &ring.query(0, 1, |_| true)[0];
        assert!(rec.message.len() <= MAX_MESSAGE_BYTES + 20);
        assert!(rec.message.ends_with("[truncated]"));
    }
}
