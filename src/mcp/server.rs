//! One managed MCP server: its spec, lifecycle status with history, the JSON-RPC session
//! (handshake, tool listing, pending requests), its tools, and what went wrong lately.
//!
//! Invariants: every history, tail and error list here is bounded, and so is every text in
//! them ([`TEXT_MAX`]) and every handshake item ([`HANDSHAKE_ITEM_MAX`]); a pending request is in
//! `pending` exactly until its answer, its deadline, or the end of the run that sent it.

use super::jsonrpc::LineSplitter;
use super::process::Process;
use super::registry::ServerSpec;
use super::session::Session;
use super::supervisor::Life;
use crate::api::ReplyTo;
use crate::reactor::timer::TimerId;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

/// Protocol versions of the `initialize` era we speak, newest first; we offer the first.
pub const PROTOCOL_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Protocol versions of the stateless era (no `initialize`, `_meta` on every request) we
/// speak, newest first; the `server/discover` probe asks for the first.
pub const MODERN_VERSIONS: [&str; 1] = ["2026-07-28"];

const HISTORY: usize = 32;
const ERRORS: usize = 16;
const STDERR_TAIL: usize = 20;
/// Longest reason or error text kept (they may quote what the server sent).
pub const TEXT_MAX: usize = 1024;
/// Largest handshake item kept (`serverInfo`, `capabilities`, `instructions`), as JSON.
pub const HANDSHAKE_ITEM_MAX: usize = 16 * 1024;

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let total = text.len();
        text.truncate(crate::text::floor_boundary(&text, max));
        text.push_str(&format!("... [{total} bytes]"));
    }
    text
}

/// A handshake value kept only when small: a server may send megabytes there.
pub fn bounded_value(value: Value) -> Value {
    let size = super::tools::json_size(&value);
    if size > HANDSHAKE_ITEM_MAX {
        json!({"omitted": format!("{size} bytes, more than the {HANDSHAKE_ITEM_MAX} kept")})
    } else {
        value
    }
}

/// Lifecycle states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Known, never started (or not autostarted).
    Registered,
    /// Spawned; `initialize` in flight.
    Starting,
    /// Handshake done; listing tools.
    Initializing,
    /// Serving.
    Active,
    /// Serving, but health pings are being missed.
    Degraded,
    /// Waiting to restart after a failure.
    Backoff,
    /// Graceful stop in progress.
    Stopping,
    /// Stopped by an operator.
    Stopped,
    /// Circuit breaker open: no automatic restarts.
    Failed,
}

/// The legal status changes: `(from, to)`, every one reachable by a real sequence of events
/// (`supervisor::step` decides them; its test walks the events and finds each row). A row
/// from a status to itself records a new reason in the history without a change (a further
/// missed ping, another failed start). Anything else is a bug and is refused.
pub const TRANSITIONS: &[(Status, Status)] = {
    use Status::*;
    &[
        (Registered, Starting),
        (Registered, Backoff),
        (Registered, Failed),
        (Registered, Stopped),
        (Starting, Initializing),
        (Starting, Stopping),
        (Starting, Backoff),
        (Starting, Failed),
        (Initializing, Active),
        (Initializing, Stopping),
        (Initializing, Backoff),
        (Initializing, Failed),
        (Active, Degraded),
        (Active, Stopping),
        (Active, Backoff),
        (Active, Failed),
        (Degraded, Degraded),
        (Degraded, Active),
        (Degraded, Stopping),
        (Degraded, Backoff),
        (Degraded, Failed),
        (Backoff, Starting),
        (Backoff, Backoff),
        (Backoff, Failed),
        (Backoff, Stopped),
        (Stopping, Stopped),
        (Stopped, Starting),
        (Stopped, Backoff),
        (Stopped, Failed),
        (Failed, Starting),
        (Failed, Backoff),
        (Failed, Failed),
        (Failed, Stopped),
    ]
};

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 9] = [
        Status::Registered,
        Status::Starting,
        Status::Initializing,
        Status::Active,
        Status::Degraded,
        Status::Backoff,
        Status::Stopping,
        Status::Stopped,
        Status::Failed,
    ];

    /// Whether `self -> to` is a row of [`TRANSITIONS`].
    pub fn may_become(self, to: Status) -> bool {
        TRANSITIONS.contains(&(self, to))
    }

    /// Lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Registered => "registered",
            Status::Starting => "starting",
            Status::Initializing => "initializing",
            Status::Active => "active",
            Status::Degraded => "degraded",
            Status::Backoff => "backoff",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
        }
    }

    /// Whether tool calls are accepted.
    pub fn serves(self) -> bool {
        matches!(self, Status::Active | Status::Degraded)
    }

    /// Whether a process is (or should be) running.
    pub fn has_process(self) -> bool {
        matches!(
            self,
            Status::Starting
                | Status::Initializing
                | Status::Active
                | Status::Degraded
                | Status::Stopping
        )
    }
}

/// A status change that [`TRANSITIONS`] does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IllegalTransition {
    /// The status kept.
    pub from: Status,
    /// The status refused.
    pub to: Status,
}

/// Where a spec came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Registered over the API (persisted in the state dir).
    Api,
    /// Declared in the config file.
    Config,
    /// A sandboxed trial of an unregistered spec (never persisted; removed when it settles,
    /// see `trial`).
    Trial,
}

impl Source {
    /// Its name in answers and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Config => "config",
            Source::Trial => "trial",
        }
    }
}

/// One managed server.
#[derive(Debug)]
pub struct Server {
    /// The spec.
    pub spec: ServerSpec,
    /// API or config file.
    pub source: Source,
    /// Its slot (tokens derive from it).
    pub slot: usize,
    /// Current status.
    pub status: Status,
    /// Recent transitions: (when, status, reason).
    pub history: VecDeque<(SystemTime, Status, String)>,
    /// The running process.
    pub process: Option<Process>,
    /// Increases with every spawn; timers carry it so stale ones are ignored.
    pub run: u64,
    /// The JSON-RPC session (handshake, tools, requests in flight, counters).
    pub session: Session<ReplyTo, TimerId>,
    /// The current run is being ended for breaking the daemon's bounds.
    pub misbehaved: bool,
    /// What the supervisor keeps between events: backoff attempt, circuit breaker,
    /// pending operator restart or removal.
    pub life: Life,
    /// Automatic restarts so far.
    pub restarts: u32,
    /// The timer of the current phase (backoff, init deadline, stop escalation).
    pub timer: Option<TimerId>,
    /// Why the current run is being ended, when we end it.
    pub ending: Option<String>,
    /// Recent errors: (when, what).
    pub last_errors: VecDeque<(SystemTime, String)>,
    /// Last stderr lines.
    pub stderr_tail: VecDeque<String>,
    /// stderr lines not logged because of the rate limit.
    pub stderr_suppressed: u64,
    /// Token bucket for stderr logging: (tokens, last refill).
    pub stderr_bucket: (f64, Instant),
    /// Landlock status of the current run.
    pub landlock: String,
    /// Sandbox denials seen on stderr: when the last `sandbox_denied` event went out, and
    /// the denial lines held back since (at most one event per [`DENIAL_EVENT_INTERVAL`]).
    pub denials: (Option<Instant>, u64),
    /// Pid of the current or last run.
    pub last_pid: Option<i32>,
    /// Splits stdout into JSON-RPC lines.
    pub stdout_lines: LineSplitter,
    /// Splits stderr into log lines.
    pub stderr_lines: LineSplitter,
    /// The capability policy's verdicts on the tools called so far (see [`Refusals`]).
    pub refusals: Refusals,
}

/// The blocked capabilities each called tool falls under, kept so that a call does not
/// split the tool's name and description into words and match every rule again. Valid for
/// one tools listing of one run under one `allow_capabilities` (anything else starts afresh)
/// and one policy (the room clears it when the configuration is applied). Holds at most one
/// entry per tool the server lists.
#[derive(Debug, Default)]
pub struct Refusals {
    /// The run, the listing and the spec's `allow_capabilities` the entries hold for.
    of: (u64, u64, Vec<String>),
    /// Tool name → the blocked capabilities it falls under (empty: callable).
    by_tool: std::collections::HashMap<String, Vec<String>>,
}

impl Refusals {
    /// The verdict on `tool` for run `run`, listing `listing` and `allow`, if known.
    pub fn get(
        &mut self,
        run: u64,
        listing: u64,
        allow: &[String],
        tool: &str,
    ) -> Option<&[String]> {
        if self.of.0 != run || self.of.1 != listing || self.of.2 != allow {
            self.by_tool.clear();
            self.of = (run, listing, allow.to_vec());
            return None;
        }
        self.by_tool.get(tool).map(Vec::as_slice)
    }

    /// Keeps the verdict on `tool` (for the key [`Self::get`] last saw).
    pub fn insert(&mut self, tool: &str, refused: Vec<String>) {
        self.by_tool.insert(tool.to_string(), refused);
    }

    /// Forgets every verdict (the policy changed).
    pub fn clear(&mut self) {
        self.by_tool.clear();
    }
}

impl Server {
    /// A new server in `registered`.
    pub fn new(spec: ServerSpec, source: Source, slot: usize) -> Self {
        let spec_id = spec.id.clone();
        let mut s = Server {
            spec,
            source,
            slot,
            status: Status::Registered,
            history: VecDeque::new(),
            process: None,
            run: 0,
            session: Session::new(&spec_id),
            misbehaved: false,
            life: Life::default(),
            restarts: 0,
            timer: None,
            ending: None,
            last_errors: VecDeque::new(),
            stderr_tail: VecDeque::new(),
            stderr_suppressed: 0,
            stderr_bucket: (0.0, Instant::now()),
            landlock: "not started".into(),
            denials: (None, 0),
            last_pid: None,
            stdout_lines: LineSplitter::new(1),
            stderr_lines: LineSplitter::new(1),
            refusals: Refusals::default(),
        };
        s.history
            .push_back((SystemTime::now(), Status::Registered, "registered".into()));
        s
    }

    /// Records a transition and returns the old status; the one place a status changes.
    ///
    /// An illegal transition (not in [`TRANSITIONS`]) is a bug in the daemon: it is refused
    /// (the status stays, the refusal is logged as an error) and panics in debug builds, so
    /// the tests find it.
    pub fn set_status(
        &mut self,
        status: Status,
        reason: &str,
    ) -> Result<Status, IllegalTransition> {
        let old = self.status;
        if !old.may_become(status) {
            let illegal = IllegalTransition {
                from: old,
                to: status,
            };
            log::error!(
                "bug: MCP server {}: refused the illegal transition {} -> {} ({})",
                self.spec.id,
                old.as_str(),
                status.as_str(),
                truncate(reason.to_string(), 200)
            );
            debug_assert!(false, "{illegal:?} ({reason})");
            return Err(illegal);
        }
        self.status = status;
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        let reason = truncate(reason.to_string(), TEXT_MAX);
        self.history.push_back((SystemTime::now(), status, reason));
        Ok(old)
    }

    /// Records in the history why the server stays in its status (e.g. a start held back by
    /// `max_concurrent_servers`). The same reason twice in a row is recorded once, so repeated
    /// refusals do not push the transitions out of the bounded history.
    pub fn note_held(&mut self, reason: &str) {
        let reason = truncate(reason.to_string(), TEXT_MAX);
        if self
            .history
            .back()
            .is_some_and(|(_, st, r)| *st == self.status && *r == reason)
        {
            return;
        }
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        self.history
            .push_back((SystemTime::now(), self.status, reason));
    }

    /// Remembers an error.
    pub fn note_error(&mut self, what: String) {
        if self.last_errors.len() >= ERRORS {
            self.last_errors.pop_front();
        }
        self.last_errors
            .push_back((SystemTime::now(), truncate(what, TEXT_MAX)));
    }

    /// Releases what a finished run left behind: capacity of the line buffers and a tool
    /// list so large it is better rebuilt by the next run than kept.
    pub fn release_run_memory(&mut self) {
        self.stdout_lines = LineSplitter::new(1);
        self.stderr_lines = LineSplitter::new(1);
    }

    /// Whether a stderr line of this run is evidence that its sandbox refused it something:
    /// Landlock is enforced for the run and the line says so as libc and the usual runtimes
    /// word it (`Permission denied`, `Operation not permitted`, `EACCES`, `EPERM`). Without
    /// an enforced sandbox the same words are the server's own business.
    pub fn sandbox_denial(&self, line: &str) -> bool {
        self.landlock.starts_with("enforced") && denial_words(line)
    }

    /// Keeps a stderr line in the tail.
    pub fn note_stderr(&mut self, line: String) {
        if self.stderr_tail.len() >= STDERR_TAIL {
            self.stderr_tail.pop_front();
        }
        self.stderr_tail.push_back(line);
    }

    /// Pid of the running process.
    pub fn pid(&self) -> Option<i32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// Short JSON for lists.
    pub fn summary(&self) -> Value {
        let uptime = self.process.as_ref().map(|p| p.started.elapsed().as_secs());
        json!({
            "id": self.spec.id,
            "status": self.status.as_str(),
            "pid": self.pid(),
            "uptime_seconds": uptime,
            "restarts": self.restarts,
            "tools": self.session.tools.len(),
            "capabilities": self.spec.capabilities,
            "source": self.source.as_str(),
            "era": self.session.era.map(|e| e.as_str()),
        })
    }

    /// Full JSON for `mcp show`.
    pub fn details(&self) -> Value {
        let mut v = self.summary();
        let ts = crate::state::rfc3339_utc_millis;
        // Environment values are shown masked (they live in the secrets file).
        v["spec"] = serde_json::to_value(super::secrets::masked(&self.spec)).unwrap_or(Value::Null);
        v["history"] = self
            .history
            .iter()
            .map(|(t, s, r)| json!({"at": ts(*t), "status": s.as_str(), "reason": r}))
            .collect();
        let session = &self.session;
        v["protocol_version"] = json!(session.protocol_version);
        v["server_info"] = session.server_info.clone();
        v["server_capabilities"] = session.server_capabilities.clone();
        v["instructions"] = json!(session.instructions);
        v["tools"] = Value::Array(session.tools.clone());
        v["last_errors"] = self
            .last_errors
            .iter()
            .map(|(t, e)| json!({"at": ts(*t), "error": e}))
            .collect();
        v["stderr_tail"] = json!(self.stderr_tail);
        v["stderr_suppressed"] = json!(self.stderr_suppressed);
        v["protocol_errors"] = json!(session.protocol_errors);
        // Log messages and resource updates beyond the relay budget (all runs).
        v["notifications_dropped"] = json!(session.notes_dropped);
        v["circuit_breaker"] = json!({
            "open": self.life.breaker.is_open(),
            "recent_failures": self.life.breaker.recent_failures(),
        });
        v["calls"] = json!({"ok": session.calls.0, "failed": session.calls.1, "timed_out": session.calls.2, "in_flight": session.calls_in_flight()});
        v["missed_pings"] = json!(session.missed_pings);
        v["ping"] = session.ping.to_json();
        v["landlock"] = json!(self.landlock);
        v["last_pid"] = json!(self.last_pid);
        v
    }
}

/// Sandbox-denial events per server at most once per this interval; the lines in between
/// are counted in the next one.
pub const DENIAL_EVENT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `line` reads like a refused file or socket operation (see
/// [`Server::sandbox_denial`]). Linear in the line, which is bounded by the stderr splitter.
pub fn denial_words(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    [
        "permission denied",
        "operation not permitted",
        "eacces",
        "eperm",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_count_only_under_an_enforced_sandbox() {
        let spec: ServerSpec =
            serde_json::from_value(json!({"id": "t", "command": "x"})).expect("spec");
        let mut s = Server::new(spec, Source::Api, 0);
        let touch = "touch: cannot touch '/var/x': Permission denied";
        s.landlock = "not enforced: kernel without Landlock".into();
        assert!(!s.sandbox_denial(touch));
        s.landlock = "enforced (ABI 7): writes only beneath /tmp".into();
        for line in [
            touch,
            "PermissionError: [Errno 13] Permission denied: '/etc/x'",
            "Error: EACCES: permission denied, open '/usr/x'",
            "mkdir: cannot create directory '/opt/y': Operation not permitted",
            "bind failed: EPERM",
        ] {
            assert!(s.sandbox_denial(line), "{line}");
        }
        for line in [
            "listening on stdio",
            "permission granted",
            "deny-list loaded",
        ] {
            assert!(!s.sandbox_denial(line), "{line}");
        }
    }

    #[test]
    fn held_reasons_are_recorded_once_in_a_row() {
        let spec: ServerSpec =
            serde_json::from_value(json!({"id": "t", "command": "x"})).expect("spec");
        let mut s = Server::new(spec, Source::Api, 0);
        s.note_held("not started: limit");
        s.note_held("not started: limit");
        assert_eq!(s.history.len(), 2);
        assert_eq!(s.history[1].1, Status::Registered);
        assert_eq!(s.history[1].2, "not started: limit");
        s.note_held("other");
        s.note_held("not started: limit");
        assert_eq!(s.history.len(), 4);
    }

    #[test]
    fn texts_and_handshake_items_are_bounded() {
        assert_eq!(truncate("short".into(), 10), "short");
        let cut = truncate("é".repeat(100), 11);
        assert!(cut.starts_with(&"é".repeat(5)), "{cut}");
        assert!(cut.ends_with("... [200 bytes]"), "{cut}");
        let small = json!({"name": "x"});
        assert_eq!(bounded_value(small.clone()), small);
        let big = json!({"name": "x".repeat(HANDSHAKE_ITEM_MAX)});
        assert!(bounded_value(big)["omitted"].is_string());
        let spec: ServerSpec =
            serde_json::from_value(json!({"id": "t", "command": "x"})).expect("spec");
        let mut s = Server::new(spec, Source::Api, 0);
        for _ in 0..100 {
            s.note_error("e".repeat(1 << 20));
            s.set_status(Status::Backoff, &"r".repeat(1 << 20))
                .expect("registered -> backoff -> backoff");
        }
        assert_eq!(s.last_errors.len(), ERRORS);
        assert_eq!(s.history.len(), HISTORY);
        assert!(s.last_errors.iter().all(|(_, e)| e.len() < TEXT_MAX + 32));
        assert!(s.history.iter().all(|(_, _, r)| r.len() < TEXT_MAX + 32));
    }

    #[test]
    fn set_status_follows_the_table_and_refuses_the_rest() {
        let spec: ServerSpec =
            serde_json::from_value(json!({"id": "t", "command": "x"})).expect("spec");
        let mut s = Server::new(spec, Source::Api, 0);
        for to in [
            Status::Starting,
            Status::Initializing,
            Status::Active,
            Status::Degraded,
        ] {
            assert!(s.set_status(to, "step").is_ok(), "{to:?}");
        }
        assert_eq!(s.history.len(), 5);
        // Degraded -> Registered is no row: refused, and a panic in debug builds.
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.set_status(Status::Registered, "bug")
        }));
        if cfg!(debug_assertions) {
            assert!(
                refused.is_err(),
                "debug builds panic on an illegal transition"
            );
        } else {
            assert!(matches!(refused, Ok(Err(IllegalTransition { .. }))));
        }
        assert_eq!(s.status, Status::Degraded, "the status stays");
        assert_eq!(s.history.len(), 5, "nothing recorded");
        // The table has no duplicates and names each status at least once as a source.
        for (i, row) in TRANSITIONS.iter().enumerate() {
            assert!(!TRANSITIONS[..i].contains(row), "{row:?} twice");
        }
        for st in Status::ALL {
            assert!(TRANSITIONS.iter().any(|(from, _)| *from == st), "{st:?}");
        }
    }
}
