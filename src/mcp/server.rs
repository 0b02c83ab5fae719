//! One managed MCP server: its spec, lifecycle status with history, the JSON-RPC session
//! (handshake, tool listing, pending requests), its tools, and what went wrong lately.
//!
//! Invariants: every history, tail and error list here is bounded, and so is every text in
//! them ([`TEXT_MAX`]) and every handshake item ([`HANDSHAKE_ITEM_MAX`]); a pending request is in
//! `pending` exactly until its answer, its deadline, or the end of the run that sent it.

use super::jsonrpc::LineSplitter;
use super::process::Process;
use super::registry::ServerSpec;
use super::supervisor::CircuitBreaker;
use super::tools::{Flood, Listing, Relist};
use crate::api::ReplyTo;
use crate::reactor::timer::TimerId;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::time::{Instant, SystemTime};

/// Protocol versions we speak, newest first; we offer the first.
pub const PROTOCOL_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

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
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let total = text.len();
        text.truncate(end);
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

impl Status {
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

/// Where a spec came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Registered over the API (persisted in the state dir).
    Api,
    /// Declared in the config file.
    Config,
}

/// A request we sent and await an answer to.
#[derive(Debug)]
pub enum Pending {
    /// The handshake.
    Initialize,
    /// A page of `tools/list`; tools gathered so far.
    ToolsList(Listing),
    /// A health ping.
    Ping(Instant),
    /// A tool call for a client.
    Call {
        /// Where the answer goes.
        reply: ReplyTo,
        /// Its deadline timer.
        timer: TimerId,
        /// When it was sent.
        started: Instant,
        /// Tool name.
        tool: String,
    },
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
    /// Next JSON-RPC id.
    pub next_id: u64,
    /// Requests awaiting answers.
    pub pending: HashMap<u64, Pending>,
    /// Negotiated protocol version.
    pub protocol_version: Option<String>,
    /// `serverInfo` from the handshake.
    pub server_info: Value,
    /// `capabilities` from the handshake.
    pub server_capabilities: Value,
    /// `instructions` from the handshake.
    pub instructions: Option<String>,
    /// Tools from the last complete listing.
    pub tools: Vec<Value>,
    /// When to list the tools again after `list_changed`.
    pub relist: Relist,
    /// Recent `list_changed` notifications (a flood counts as protocol errors).
    pub list_changed: Flood,
    /// The current run is being ended for breaking the daemon's bounds.
    pub misbehaved: bool,
    /// Whether this run completed the handshake.
    pub initialized: bool,
    /// Consecutive failed starts (drives the backoff).
    pub attempt: u32,
    /// Failed starts within the window.
    pub breaker: CircuitBreaker,
    /// Automatic restarts so far.
    pub restarts: u32,
    /// The timer of the current phase (backoff, init deadline, stop escalation).
    pub timer: Option<TimerId>,
    /// Start again once the current process has exited (operator restart).
    pub restart_requested: bool,
    /// Why the current run is being ended, when we end it.
    pub ending: Option<String>,
    /// Health pings missed in a row.
    pub missed_pings: u32,
    /// Lines on stdout that were not JSON-RPC.
    pub protocol_errors: u64,
    /// Recent protocol errors (for the "persistent" rule).
    pub recent_protocol_errors: Flood,
    /// Recent errors: (when, what).
    pub last_errors: VecDeque<(SystemTime, String)>,
    /// Last stderr lines.
    pub stderr_tail: VecDeque<String>,
    /// stderr lines not logged because of the rate limit.
    pub stderr_suppressed: u64,
    /// Token bucket for stderr logging: (tokens, last refill).
    pub stderr_bucket: (f64, Instant),
    /// Tool calls answered, failed, timed out.
    pub calls: (u64, u64, u64),
    /// Landlock status of the current run.
    pub landlock: String,
    /// Pid of the current or last run.
    pub last_pid: Option<i32>,
    /// Remove the server once its process has exited (unregistered while running).
    pub remove_when_stopped: bool,
    /// Splits stdout into JSON-RPC lines.
    pub stdout_lines: LineSplitter,
    /// Splits stderr into log lines.
    pub stderr_lines: LineSplitter,
}

impl Server {
    /// A new server in `registered`.
    pub fn new(spec: ServerSpec, source: Source, slot: usize) -> Self {
        let mut s = Server {
            spec,
            source,
            slot,
            status: Status::Registered,
            history: VecDeque::new(),
            process: None,
            run: 0,
            next_id: 1,
            pending: HashMap::new(),
            protocol_version: None,
            server_info: Value::Null,
            server_capabilities: Value::Null,
            instructions: None,
            tools: Vec::new(),
            relist: Relist::default(),
            list_changed: Flood::default(),
            misbehaved: false,
            initialized: false,
            attempt: 0,
            breaker: CircuitBreaker::default(),
            restarts: 0,
            timer: None,
            restart_requested: false,
            ending: None,
            missed_pings: 0,
            protocol_errors: 0,
            recent_protocol_errors: Flood::default(),
            last_errors: VecDeque::new(),
            stderr_tail: VecDeque::new(),
            stderr_suppressed: 0,
            stderr_bucket: (0.0, Instant::now()),
            calls: (0, 0, 0),
            landlock: "not started".into(),
            last_pid: None,
            remove_when_stopped: false,
            stdout_lines: LineSplitter::new(1),
            stderr_lines: LineSplitter::new(1),
        };
        s.history
            .push_back((SystemTime::now(), Status::Registered, "registered".into()));
        s
    }

    /// Records a transition; returns the old status.
    pub fn set_status(&mut self, status: Status, reason: &str) -> Status {
        let old = self.status;
        self.status = status;
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        let reason = truncate(reason.to_string(), TEXT_MAX);
        self.history.push_back((SystemTime::now(), status, reason));
        old
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
        self.pending.shrink_to_fit();
    }

    /// Keeps a stderr line in the tail.
    pub fn note_stderr(&mut self, line: String) {
        if self.stderr_tail.len() >= STDERR_TAIL {
            self.stderr_tail.pop_front();
        }
        self.stderr_tail.push_back(line);
    }

    /// Takes a JSON-RPC id.
    pub fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Pid of the running process.
    pub fn pid(&self) -> Option<i32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// Tool names from the last listing.
    pub fn tool_names(&self) -> Vec<&str> {
        self.tools
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect()
    }

    /// Calls in flight.
    pub fn calls_in_flight(&self) -> usize {
        self.pending
            .values()
            .filter(|p| matches!(p, Pending::Call { .. }))
            .count()
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
            "tools": self.tools.len(),
            "capabilities": self.spec.capabilities,
            "source": match self.source { Source::Api => "api", Source::Config => "config" },
        })
    }

    /// Full JSON for `mcp show`.
    pub fn details(&self) -> Value {
        let mut v = self.summary();
        let ts = crate::state::rfc3339_utc_millis;
        v["spec"] = serde_json::to_value(&self.spec).unwrap_or(Value::Null);
        v["history"] = self
            .history
            .iter()
            .map(|(t, s, r)| json!({"at": ts(*t), "status": s.as_str(), "reason": r}))
            .collect();
        v["protocol_version"] = json!(self.protocol_version);
        v["server_info"] = self.server_info.clone();
        v["server_capabilities"] = self.server_capabilities.clone();
        v["instructions"] = json!(self.instructions);
        v["tools"] = Value::Array(self.tools.clone());
        v["last_errors"] = self
            .last_errors
            .iter()
            .map(|(t, e)| json!({"at": ts(*t), "error": e}))
            .collect();
        v["stderr_tail"] = json!(self.stderr_tail);
        v["stderr_suppressed"] = json!(self.stderr_suppressed);
        v["protocol_errors"] = json!(self.protocol_errors);
        v["circuit_breaker"] = json!({
            "open": self.breaker.is_open(),
            "recent_failures": self.breaker.recent_failures(),
        });
        v["calls"] = json!({"ok": self.calls.0, "failed": self.calls.1, "timed_out": self.calls.2, "in_flight": self.calls_in_flight()});
        v["missed_pings"] = json!(self.missed_pings);
        v["landlock"] = json!(self.landlock);
        v["last_pid"] = json!(self.last_pid);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            s.set_status(Status::Backoff, &"r".repeat(1 << 20));
        }
        assert_eq!(s.last_errors.len(), ERRORS);
        assert_eq!(s.history.len(), HISTORY);
        assert!(s.last_errors.iter().all(|(_, e)| e.len() < TEXT_MAX + 32));
        assert!(s.history.iter().all(|(_, _, r)| r.len() < TEXT_MAX + 32));
    }
}
