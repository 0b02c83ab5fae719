//! The JSON-RPC session with one server, without I/O: stdout lines, operator calls and the
//! time come in; [`Effect`]s go out (bytes for its stdin, answers for callers, timers,
//! events, what the supervisor must hear, "end this run because …"). The handshake, the
//! paginated tool listing, tool calls with progress and deadlines, health pings, and the
//! server's own requests and notifications live here; `pipes.rs` carries bytes and timers
//! between the loop and the session.
//!
//! Protocol eras (DESIGN.md §6): a run opens with a `server/discover` probe. A
//! `DiscoverResult` naming a version of [`MODERN_VERSIONS`] makes the run modern (stateless:
//! every request carries `_meta` with the version, our capabilities and identity; health is
//! a `server/discover` round trip, as `ping` is gone; list changes come on a
//! `subscriptions/listen` request, which also carries the resources `/mcp` clients subscribed
//! to, as the era has no `resources/subscribe` ([`Session::listen_to`]); the tool list is
//! re-read on use once its `ttlMs`, bounded by [`TTL_FLOOR`] and [`TTL_CEILING`], has
//! passed). An `UnsupportedProtocolVersion` error is a modern server we share no version with
//! (the run ends, no fallback, as the specification says). Any other error, or no answer
//! within [`PROBE_TIMEOUT`], makes us fall back to `initialize`; whichever of the two answers
//! first decides the era of the run.
//!
//! Invariants: a request we sent is in `pending` exactly until its answer, its deadline or
//! the end of the run that sent it; everything kept from the server is bounded (the tool
//! list by [`tools::Listing`], handshake items by [`HANDSHAKE_ITEM_MAX`], texts by
//! [`TEXT_MAX`]); a bound broken ends the run as misbehaviour ([`Effect::Misbehaved`]).
//! The session is generic over the caller's reply handle `R` and the loop's timer handle
//! `T`, so it imports neither the daemon nor the reactor.

use super::asks::{self, Asks};
use super::jsonrpc::{self, Line, Message};
use super::server::{
    bounded_value, truncate, Status, HANDSHAKE_ITEM_MAX, MODERN_VERSIONS, PROTOCOL_VERSIONS,
    TEXT_MAX,
};
use super::tools::{self, Flood, Kind, Listing, Relist};
use crate::api::{Answer, ApiError, ErrorCode, RawCall};
use crate::events::EventData;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Tool names an `mcp_server_tools_changed` event carries at most (`count` has them all).
const EVENT_TOOL_NAMES: usize = 100;
/// Protocol errors within a minute that count as persistent (the server is restarted).
pub const PERSISTENT_PROTOCOL_ERRORS: usize = 50;
/// Longest free text kept from a notification (progress messages, log data).
pub const NOTE_MAX: usize = 1024;
/// How long the `server/discover` probe may go unanswered before `initialize` follows it (a
/// legacy server may ignore an unknown request before its handshake), at most: half the
/// start deadline when that is shorter. A later answer to the probe still counts if it
/// comes before the answer to `initialize`.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The shortest freshness we grant a modern server's tool list (`ttlMs` 0 would otherwise
/// mean a `tools/list` before every call).
pub const TTL_FLOOR: Duration = Duration::from_secs(10);
/// The longest freshness we grant a modern server's tool list.
pub const TTL_CEILING: Duration = Duration::from_secs(3600);
/// Resource URIs a modern server's listen carries at most (the gateway holds no more in all).
pub const SUBSCRIPTIONS_MAX: usize = 1024;
/// How long a listen not yet acknowledged holds back the next one: changes that come in the
/// meantime go out together once it is acknowledged, or after this at the next health round.
pub const LISTEN_ACK_WAIT: Duration = Duration::from_secs(5);
/// JSON-RPC code of `UnsupportedProtocolVersion` (2026-07-28).
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// `_meta` keys of the 2026-07-28 era.
pub mod meta {
    /// The request's protocol version.
    pub const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
    /// The client's capabilities for the request.
    pub const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
    /// The client's name and version.
    pub const CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
    /// The server's name and version (in results).
    pub const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
    /// The `subscriptions/listen` request a notification belongs to.
    pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
    /// The log level a request asks for (its log messages; replaces `logging/setLevel`).
    pub const LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
}

/// The log levels of MCP (RFC 5424's), from the most verbose to the most severe.
pub const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// The rank of a level name in [`LOG_LEVELS`] (0: debug), `None` for another name.
pub fn log_rank(level: &str) -> Option<usize> {
    LOG_LEVELS.iter().position(|l| *l == level)
}

/// Log messages and resource updates passed on per second and server, on average.
pub const NOTES_PER_SECOND: f64 = 50.0;
/// How many of them may come at once before the rate applies.
pub const NOTES_BURST: f64 = 200.0;
/// The longest log message `data` passed on as sent (its JSON text); a longer one becomes
/// that much of its text.
pub const LOG_DATA_MAX: usize = 8 * 1024;
/// The longest logger name kept.
pub const LOGGER_MAX: usize = 128;
/// The longest resource URI of an update that is passed on.
pub const URI_MAX: usize = 8 * 1024;

/// A token bucket: [`NOTES_PER_SECOND`] refill, [`NOTES_BURST`] capacity.
#[derive(Debug, Clone)]
struct NoteBudget {
    tokens: f64,
    at: Option<Instant>,
}

impl Default for NoteBudget {
    fn default() -> Self {
        NoteBudget {
            tokens: NOTES_BURST,
            at: None,
        }
    }
}

impl NoteBudget {
    /// Takes one token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        if let Some(at) = self.at {
            let refill = now.saturating_duration_since(at).as_secs_f64() * NOTES_PER_SECOND;
            self.tokens = (self.tokens + refill).min(NOTES_BURST);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The protocol era a run speaks, found by the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// `initialize` handshake (2025-11-25 and older).
    Legacy,
    /// Stateless, `_meta` on every request (2026-07-28).
    Modern,
}

impl Era {
    /// `legacy` or `modern`.
    pub fn as_str(self) -> &'static str {
        match self {
            Era::Legacy => "legacy",
            Era::Modern => "modern",
        }
    }
}

/// A request we sent and await an answer to.
#[derive(Debug)]
pub enum Pending<R, T> {
    /// The handshake.
    Initialize,
    /// The `server/discover` probe; `late` once its deadline passed and `initialize` went out.
    Discover {
        /// Whether `initialize` followed it.
        late: bool,
    },
    /// The `subscriptions/listen` of a modern server (tool list changes, resource updates):
    /// open until the run ends, the server closes it or a newer one replaces it.
    Listen,
    /// A page of `tools/list`; tools gathered so far.
    ToolsList(Listing),
    /// A page of another list (resources, resource templates, prompts); items so far.
    ExtraList(Listing),
    /// A health ping, and when it was sent.
    Ping(Instant),
    /// A tool call for a client.
    Call {
        /// Where the answer goes.
        reply: R,
        /// Its deadline timer.
        timer: T,
        /// When it was sent.
        started: Instant,
        /// When its deadline passes (an `input_required` answer says how long is left).
        deadline: Instant,
        /// Tool name.
        tool: String,
        /// The progress token the server was given for it.
        token: String,
    },
    /// A request forwarded for a client other than a tool call (`resources/read`,
    /// `prompts/get`): answered with the server's result as it is (an `input_required` one
    /// as a call's, see [`input_required`]).
    Forward {
        /// Where the answer goes.
        reply: R,
        /// Its deadline timer.
        timer: T,
        /// When it was sent.
        started: Instant,
        /// When its deadline passes (as for a call).
        deadline: Instant,
        /// The method.
        method: &'static str,
        /// The progress token its params carried (`_meta.progressToken`), by which its caller
        /// can cancel it as a call.
        token: Option<String>,
    },
}

/// What the loop must do for the session.
#[derive(Debug)]
pub enum Effect<R, T> {
    /// Write these bytes to the server's stdin.
    Send(Vec<u8>),
    /// Answer a caller.
    Reply(R, Answer),
    /// Answer a tool call's caller with the server's result bytes as they came (see
    /// [`RawCall`]).
    ReplyRaw(R, RawCall),
    /// Cancel a timer the session no longer needs.
    CancelTimer(T),
    /// Call [`Session::on_relist_timer`] at this instant.
    RelistAt(Instant),
    /// Call [`Session::on_extra_relist_timer`] for this list at this instant.
    RelistExtraAt(Kind, Instant),
    /// Call [`Session::on_probe_deadline`] at this instant.
    ProbeAt(Instant),
    /// Publish an event on the `mcp_servers` channel: (type, data).
    Event(EventData),
    /// A tool call finished: (outcome, seconds, tool), for the metrics and the
    /// `mcp_tool_call` event.
    ToolCall(&'static str, f64, String),
    /// A forwarded request other than a tool call finished: (method, outcome: `ok`,
    /// `mcp_error`, `timeout`, `cancelled` or `server_exited`), for the metrics.
    Request(&'static str, &'static str),
    /// The handshake completed with this protocol version (the supervisor's `Handshake`).
    Handshake(String),
    /// The first listing of the run completed with this many tools (the supervisor's `Listed`).
    Listed(usize),
    /// A health ping was answered.
    PingAnswered,
    /// A health round found the last ping unanswered: this many in a row.
    PingMissed(u32),
    /// The server broke the protocol (counted; logged and kept by the loop).
    ProtocolError(String),
    /// End the run: the server cannot be used (a failed handshake).
    EndRun(String),
    /// End the run: the server broke the daemon's bounds (counts as a failed start).
    Misbehaved(String),
    /// Pass the server's notification about a relayed request to the client that was asked
    /// (`notifications/elicitation/complete`).
    Notify {
        /// Its method.
        method: String,
        /// Its params.
        params: Value,
    },
    /// Relay the server's request to its client (see [`asks`]): answer it with
    /// [`Session::answer_ask`]`(ask, ...)`.
    Ask {
        /// Its id among the server's waiting requests.
        ask: u64,
        /// Its method.
        method: String,
        /// Its params, as the server sent them.
        params: Value,
        /// The progress tokens of the tool calls in flight.
        calls: Vec<String>,
        /// Whether other requests (`resources/read`, `prompts/get`) are in flight.
        others: bool,
    },
}

/// This run's `subscriptions/listen` (modern servers).
#[derive(Debug, Clone, Copy)]
struct Listen {
    /// Its request id (the subscription id).
    rpc: u64,
    /// When it went out.
    sent: Instant,
    /// Whether the server acknowledged it.
    acked: bool,
    /// Whether what it should carry changed since it went out.
    stale: bool,
}

/// What the session needs to know about its surroundings when a line arrives.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// The server's lifecycle status.
    pub status: Status,
    /// Now.
    pub now: Instant,
    /// Bounds of the tool list.
    pub limits: tools::Limits,
    /// Longest stdout line (for the message when one is longer).
    pub max_line: usize,
}

/// One server's session. Per-run state is reset by [`Session::begin_run`]; the tool list,
/// handshake data and counters survive a run (they are shown while it restarts).
#[derive(Debug)]
pub struct Session<R, T> {
    id: String,
    next_id: u64,
    pending: HashMap<u64, Pending<R, T>>,
    /// Negotiated protocol version of the current run.
    pub protocol_version: Option<String>,
    /// The era of the current run, once the probe or the handshake told.
    pub era: Option<Era>,
    /// Whether this run probed again after `initialize` was refused as a modern server does.
    reprobed: bool,
    /// Whether runs start with `initialize` instead of the probe: a run ended while its probe
    /// was unanswered (a legacy server that dies on an unknown request). Kept while runs
    /// stay legacy; a modern server refusing `initialize` probes again ([`Session::reprobed`]).
    pub skip_probe: bool,
    /// The `ttlMs` of the last complete listing (modern servers; the smallest of its pages).
    pub list_ttl_ms: Option<u64>,
    /// The smallest `ttlMs` of the pages of the listing in flight.
    listing_ttl_ms: Option<u64>,
    /// Until when the tool list is fresh (modern servers); re-read on the first use after.
    fresh_until: Option<Instant>,
    /// `serverInfo` from the handshake.
    pub server_info: Value,
    /// `capabilities` from the handshake.
    pub server_capabilities: Value,
    /// `instructions` from the handshake.
    pub instructions: Option<String>,
    /// Tools from the last complete listing.
    pub tools: Vec<Value>,
    /// Complete listings that changed `tools` in this session (with the server's run, it
    /// names a tool list, so followers can skip re-reading one they have seen).
    pub listings: u64,
    /// Resources from the last complete `resources/list` (empty when it offers none).
    pub resources: Vec<Value>,
    /// Resource templates from the last complete `resources/templates/list`.
    pub resource_templates: Vec<Value>,
    /// Prompts from the last complete `prompts/list`.
    pub prompts: Vec<Value>,
    relist: Relist,
    /// When to list resources, resource templates and prompts again, indexed by
    /// `Kind as usize` (the tools' place is unused: they have `relist`).
    extra_relist: [Relist; 4],
    list_changed: Flood,
    recent_protocol_errors: Flood,
    /// Whether this run completed the handshake and its first listing.
    pub initialized: bool,
    /// Health pings missed in a row.
    pub missed_pings: u32,
    /// Round trips of the latest answered health pings (all runs).
    pub ping: PingLatency,
    /// Lines on stdout that were not JSON-RPC (all runs).
    pub protocol_errors: u64,
    /// Tool calls answered, failed, timed out (all runs).
    pub calls: (u64, u64, u64),
    /// Whether the next runs offer the sampling and elicitation client capabilities and
    /// relay those requests (`gateway.client_requests`; set by the MCP room).
    pub client_requests: bool,
    /// Whether this run's `initialize` offered them.
    asks_declared: bool,
    /// The server's requests waiting for a client's answer (this run).
    asks: Asks,
    /// The budget of log messages and resource updates passed on.
    notes: NoteBudget,
    /// Log messages and resource updates dropped beyond the budget (all runs).
    pub notes_dropped: u64,
    /// The log level asked for (`/mcp`'s clients want it): a modern server gets it in the
    /// `_meta` of the requests made for clients, since its era has no `logging/setLevel`.
    pub log_level: Option<&'static str>,
    /// `notes_dropped` when the daemon's log last said how many.
    notes_reported: u64,
    /// The resources `/mcp` clients subscribed to while the server spoke 2026-07-28 (at most
    /// [`SUBSCRIPTIONS_MAX`]): its listen carries them. Kept across runs, so that the first
    /// listen of a new run has them; emptied by a run of the other era.
    pub subscriptions: BTreeSet<String>,
    /// This run's listen.
    listen: Option<Listen>,
}

type Effects<R, T> = Vec<Effect<R, T>>;

/// Answered health pings kept per server for the latency figures.
pub const PING_WINDOW: usize = 32;

/// Round trips of the latest [`PING_WINDOW`] answered health pings, in milliseconds: the
/// last one, and p50/p95 over the window (a copy of at most 32 values is sorted per read).
#[derive(Debug, Default, Clone)]
pub struct PingLatency {
    window: std::collections::VecDeque<f64>,
}

impl PingLatency {
    /// One answered ping.
    pub fn record(&mut self, rtt: Duration) {
        if self.window.len() == PING_WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(rtt.as_secs_f64() * 1000.0);
    }

    /// The latest round trip, in ms.
    pub fn last_ms(&self) -> Option<f64> {
        self.window.back().copied()
    }

    /// The `q` quantile (0..=1, nearest rank) over the window, in ms.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let mut v: Vec<f64> = self.window.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
        v.get(rank.saturating_sub(1)).copied()
    }

    /// `{"last_ms", "p50_ms", "p95_ms", "samples"}` (nulls before the first answer).
    pub fn to_json(&self) -> Value {
        let round = |v: Option<f64>| v.map(|x| (x * 1000.0).round() / 1000.0);
        json!({
            "last_ms": round(self.last_ms()),
            "p50_ms": round(self.quantile_ms(0.5)),
            "p95_ms": round(self.quantile_ms(0.95)),
            "samples": self.window.len(),
        })
    }
}

impl<R: Copy, T: Copy> Session<R, T> {
    /// A session for server `id`, before its first run.
    pub fn new(id: &str) -> Self {
        Session {
            id: id.to_string(),
            next_id: 1,
            pending: HashMap::new(),
            protocol_version: None,
            era: None,
            reprobed: false,
            skip_probe: false,
            list_ttl_ms: None,
            listing_ttl_ms: None,
            fresh_until: None,
            server_info: Value::Null,
            server_capabilities: Value::Null,
            instructions: None,
            tools: Vec::new(),
            listings: 0,
            resources: Vec::new(),
            resource_templates: Vec::new(),
            prompts: Vec::new(),
            relist: Relist::default(),
            extra_relist: Default::default(),
            list_changed: Flood::default(),
            recent_protocol_errors: Flood::default(),
            initialized: false,
            missed_pings: 0,
            ping: PingLatency::default(),
            protocol_errors: 0,
            calls: (0, 0, 0),
            client_requests: true,
            asks_declared: false,
            asks: Asks::default(),
            notes: NoteBudget::default(),
            notes_dropped: 0,
            log_level: None,
            notes_reported: 0,
            subscriptions: BTreeSet::new(),
            listen: None,
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A new run was spawned: forgets the last run's requests and probes its era with
    /// `server/discover`, which may go unanswered for `probe_timeout` ([`Effect::ProbeAt`]).
    pub fn begin_run(&mut self, now: Instant, probe_timeout: Duration) -> Effects<R, T> {
        self.pending.clear();
        self.pending.shrink_to_fit();
        self.initialized = false;
        self.relist = Relist::default();
        self.extra_relist = Default::default();
        self.list_changed = Flood::default();
        self.recent_protocol_errors = Flood::default();
        self.missed_pings = 0;
        self.protocol_version = None;
        self.era = None;
        self.reprobed = false;
        self.fresh_until = None;
        self.listing_ttl_ms = None;
        self.asks.clear();
        self.asks_declared = false;
        self.listen = None;
        let mut out = Vec::new();
        if self.skip_probe {
            self.send_initialize(&mut out);
        } else {
            self.probe(&mut out);
            out.push(Effect::ProbeAt(now + probe_timeout));
        }
        out
    }

    /// Sends `server/discover` asking for our newest modern version.
    fn probe(&mut self, out: &mut Effects<R, T>) {
        let rpc = self.take_id();
        self.pending.insert(rpc, Pending::Discover { late: false });
        let params = json!({"_meta": request_meta()});
        out.push(Effect::Send(jsonrpc::request(
            rpc,
            "server/discover",
            params,
        )));
    }

    /// Sends `initialize`, offering our newest protocol version of that era.
    fn send_initialize(&mut self, out: &mut Effects<R, T>) {
        let rpc = self.take_id();
        self.pending.insert(rpc, Pending::Initialize);
        self.asks_declared = self.client_requests;
        let init = jsonrpc::request(
            rpc,
            "initialize",
            json!({
                "protocolVersion": PROTOCOL_VERSIONS[0],
                "capabilities": client_capabilities(self.asks_declared),
                "clientInfo": {"name": "vsm-daemon", "version": env!("CARGO_PKG_VERSION")},
            }),
        );
        out.push(Effect::Send(init));
    }

    /// The probe's deadline passed: if the era is still unknown and `initialize` has not
    /// gone out, it goes now (the probe stays pending: a late answer may still decide).
    pub fn on_probe_deadline(&mut self) -> Effects<R, T> {
        let mut out = Vec::new();
        if self.era.is_some() || self.initialize_pending() {
            return out;
        }
        let mut probing = false;
        for p in self.pending.values_mut() {
            if let Pending::Discover { late } = p {
                *late = true;
                probing = true;
            }
        }
        if probing {
            log::debug!(
                "MCP server {}: no answer to server/discover in time; trying initialize",
                self.id
            );
            self.send_initialize(&mut out);
        }
        out
    }

    fn initialize_pending(&self) -> bool {
        self.pending
            .values()
            .any(|p| matches!(p, Pending::Initialize))
    }

    fn discover_pending(&self) -> bool {
        self.pending
            .values()
            .any(|p| matches!(p, Pending::Discover { .. }))
    }

    /// A request of this run: for a modern server its params carry the `_meta` of the era
    /// (merged with any `_meta` already there, such as a progress token).
    fn request(&self, rpc: u64, method: &str, mut params: Value) -> Vec<u8> {
        if self.era == Some(Era::Modern) {
            if !params.is_object() {
                params = json!({});
            }
            if let Some(map) = params.as_object_mut() {
                let entry = map
                    .entry("_meta")
                    .or_insert_with(|| Value::Object(Default::default()));
                if !entry.is_object() {
                    *entry = Value::Object(Default::default());
                }
                if let (Some(m), Value::Object(ours)) = (entry.as_object_mut(), request_meta()) {
                    // A `/mcp` client's own capabilities for its call stay (see `retry_input`).
                    for (k, v) in ours {
                        m.entry(k).or_insert(v);
                    }
                    let for_a_client = matches!(
                        method,
                        "tools/call" | "prompts/get" | "resources/read" | "completion/complete"
                    );
                    if let Some(level) = self.log_level.filter(|_| for_a_client) {
                        m.insert(meta::LOG_LEVEL.into(), Value::String(level.into()));
                    }
                }
            }
        }
        jsonrpc::request(rpc, method, params)
    }

    /// Calls in flight (tool calls and forwarded requests: both count against
    /// `max_in_flight_calls`).
    pub fn calls_in_flight(&self) -> usize {
        self.pending
            .values()
            .filter(|p| matches!(p, Pending::Call { .. } | Pending::Forward { .. }))
            .count()
    }

    /// The list of `kind` from its last complete listing.
    pub fn list(&self, kind: Kind) -> &[Value] {
        match kind {
            Kind::Tools => &self.tools,
            Kind::Resources => &self.resources,
            Kind::ResourceTemplates => &self.resource_templates,
            Kind::Prompts => &self.prompts,
        }
    }

    fn list_mut(&mut self, kind: Kind) -> &mut Vec<Value> {
        match kind {
            Kind::Tools => &mut self.tools,
            Kind::Resources => &mut self.resources,
            Kind::ResourceTemplates => &mut self.resource_templates,
            Kind::Prompts => &mut self.prompts,
        }
    }

    /// Whether the server's `initialize` capabilities offer the list of `kind`.
    pub fn offers(&self, kind: Kind) -> bool {
        self.server_capabilities
            .get(kind.capability())
            .is_some_and(|c| !c.is_null())
    }

    /// Whether the server's capabilities declare `path` (`resources`, `resources.subscribe`,
    /// `logging`, `completions`...): present, and neither null nor false.
    pub fn declares(&self, path: &str) -> bool {
        let mut at = &self.server_capabilities;
        for part in path.split('.') {
            match at.get(part) {
                Some(v) => at = v,
                None => return false,
            }
        }
        !at.is_null() && *at != Value::Bool(false)
    }

    /// Tool names from the last listing.
    pub fn tool_names(&self) -> Vec<&str> {
        self.tools
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect()
    }

    /// One complete stdout line.
    pub fn on_line(&mut self, line: Line, cx: Context) -> Effects<R, T> {
        let mut out = Vec::new();
        self.on_line_into(line, cx, &mut out);
        out
    }

    /// [`Self::on_line`], its effects appended to `out` (a list the caller keeps).
    pub fn on_line_into(&mut self, line: Line, cx: Context, out: &mut Effects<R, T>) {
        let bytes = match line {
            Line::TooLong { len } => {
                let max = cx.max_line;
                let why = format!("stdout line of more than {max} bytes (saw {len})");
                out.push(Effect::Misbehaved(why));
                return;
            }
            Line::Complete(b) if b.iter().all(u8::is_ascii_whitespace) => return,
            Line::Complete(b) => b,
        };
        let bytes = match self.raw_call_answer(bytes, cx, out) {
            Ok(()) => {
                self.settle_asks(out);
                return;
            }
            Err(bytes) => bytes,
        };
        match jsonrpc::parse(&bytes) {
            Ok(messages) => {
                // The raw line is not needed once parsed: a tool result of megabytes is held
                // once (as the parsed value), not twice while it is answered.
                drop(bytes);
                for m in messages {
                    self.on_message(m, cx, out);
                }
                self.settle_asks(out);
            }
            Err(e) => {
                let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
                let what = format!("protocol error: {e}: {shown}");
                drop(bytes);
                self.protocol_error(what, cx.now, out);
            }
        }
    }

    /// The common answer to a tool call, taken without parsing its result into a [`Value`]:
    /// a line that is exactly `{"jsonrpc": "2.0", "id": N, "result": {...}}` answering a call
    /// in flight, whose result says no `isError: true` and no `resultType` but `complete`.
    /// It is answered as [`Effect::ReplyRaw`] with the line itself (the result's bytes are
    /// cut out of it, not copied), with the same outcome, counters and events as
    /// [`Self::on_response`] gives it. Anything else (another shape, more members, a batch,
    /// escapes in `"2.0"`, an error, an answer that needs reading) is handed back for the
    /// ordinary path, which decides as before.
    fn raw_call_answer(
        &mut self,
        bytes: Vec<u8>,
        cx: Context,
        out: &mut Effects<R, T>,
    ) -> Result<(), Vec<u8>> {
        let Some((rpc, range, has_result_type, has_meta)) = raw_call_head(&bytes) else {
            return Err(bytes);
        };
        if !matches!(self.pending.get(&rpc), Some(Pending::Call { .. })) {
            return Err(bytes);
        }
        let Some(Pending::Call {
            reply,
            timer,
            started,
            tool,
            ..
        }) = self.pending.remove(&rpc)
        else {
            return Err(bytes);
        };
        out.push(Effect::CancelTimer(timer));
        let elapsed = cx.now.saturating_duration_since(started);
        out.push(Effect::ToolCall("ok", elapsed.as_secs_f64(), tool.clone()));
        self.calls.0 += 1;
        let ms = elapsed.as_secs_f64() * 1000.0;
        let raw = RawCall::new(
            self.id.clone(),
            tool,
            ms,
            bytes,
            range,
            has_result_type,
            has_meta,
        );
        out.push(Effect::ReplyRaw(reply, raw));
        Ok(())
    }

    /// Counts a protocol error; more than [`PERSISTENT_PROTOCOL_ERRORS`] within a minute end
    /// the run as misbehaviour.
    fn protocol_error(&mut self, what: String, now: Instant, out: &mut Effects<R, T>) {
        self.protocol_errors += 1;
        let persistent = self
            .recent_protocol_errors
            .hit(now, PERSISTENT_PROTOCOL_ERRORS);
        out.push(Effect::ProtocolError(what));
        if persistent {
            out.push(Effect::Misbehaved(format!(
                "more than {PERSISTENT_PROTOCOL_ERRORS} protocol errors within a minute"
            )));
        }
    }

    fn on_message(&mut self, message: Message, cx: Context, out: &mut Effects<R, T>) {
        let id = &self.id;
        match message {
            Message::Response { id: rpc, result } => {
                match rpc.as_u64().and_then(|n| self.pending.remove(&n)) {
                    Some(p) => self.on_response(p, result, cx, out),
                    None => {
                        let rpc = truncate(rpc.to_string(), 64);
                        log::debug!("MCP server {id}: dropped a late or unknown response {rpc}")
                    }
                }
            }
            Message::Request {
                id: rpc,
                method,
                params,
            } if self.asks_declared && asks::relayed(&method) => self.ask(rpc, method, params, out),
            Message::Request {
                id: rpc, method, ..
            } => {
                let answer = if method == "ping" {
                    jsonrpc::response(&rpc, json!({}))
                } else {
                    jsonrpc::error_response(
                        &rpc,
                        -32601,
                        &format!(
                            "method not found: {} (vsm-daemon declares no client capabilities)",
                            truncate(method, 128)
                        ),
                    )
                };
                out.push(Effect::Send(answer));
            }
            Message::Notification { method, params }
                if self.asks_declared
                    && method == asks::ELICITATION_COMPLETE
                    && params["elicitationId"]
                        .as_str()
                        .is_some_and(|e| e.len() <= asks::ELICITATION_ID_MAX) =>
            {
                out.push(Effect::Notify { method, params })
            }
            Message::Notification { method, params } => match method.as_str() {
                "notifications/tools/list_changed" => self.on_list_changed(cx, out),
                "notifications/resources/list_changed" | "notifications/prompts/list_changed" => {
                    self.on_extra_list_changed(Kind::from_list_changed(&method), cx, out)
                }
                "notifications/progress" => {
                    if let Some(event) = self.progress_event(&params) {
                        out.push(Effect::Event(event));
                    }
                }
                "notifications/message" => {
                    if let Some(event) = self.log_event(params, cx.now) {
                        out.push(Effect::Event(event));
                    }
                }
                "notifications/resources/updated" => {
                    if let Some(event) = self.updated_event(&params, cx.now) {
                        out.push(Effect::Event(event));
                    }
                }
                "notifications/subscriptions/acknowledged" => {
                    self.on_listen_acknowledged(&params, cx.now, out)
                }
                _ => {
                    let method = truncate(method, 128);
                    log::debug!("MCP server {id}: notification {method}")
                }
            },
        }
    }

    fn on_response(
        &mut self,
        pending: Pending<R, T>,
        result: Result<Value, jsonrpc::RpcError>,
        cx: Context,
        out: &mut Effects<R, T>,
    ) {
        match pending {
            Pending::Discover { .. } => self.on_discover(result, cx, out),
            Pending::Listen => {
                match result {
                    Ok(_) => log::debug!("MCP server {}: the server ended its listen", self.id),
                    Err(e) => log::debug!(
                        "MCP server {}: subscriptions/listen refused: {} ({})",
                        self.id,
                        truncate(e.message, TEXT_MAX),
                        e.code
                    ),
                }
                // Only the latest listen is pending. It is opened again only when what it
                // should carry changed meanwhile (a refusal would otherwise repeat).
                if self.listen.take().is_some_and(|l| l.stale) {
                    self.relisten(cx.now, out);
                }
            }
            Pending::Initialize if self.era.is_some() => {}
            Pending::Initialize => match result {
                Ok(mut v) => {
                    let version = v["protocolVersion"].as_str().unwrap_or("").to_string();
                    if !PROTOCOL_VERSIONS.contains(&version.as_str()) {
                        out.push(Effect::EndRun(format!(
                            "server chose protocol version '{}', which vsm-daemon does not speak ({})",
                            truncate(version, 64),
                            PROTOCOL_VERSIONS.join(", ")
                        )));
                        return;
                    }
                    // The handshake answered first: a probe still out is forgotten.
                    self.era = Some(Era::Legacy);
                    // Its subscriptions go as `resources/subscribe` (the gateway's, again).
                    self.subscriptions.clear();
                    self.pending
                        .retain(|_, p| !matches!(p, Pending::Discover { .. }));
                    self.protocol_version = Some(version.clone());
                    self.server_info = bounded_value(v["serverInfo"].take());
                    self.server_capabilities = bounded_value(v["capabilities"].take());
                    self.instructions = v["instructions"]
                        .as_str()
                        .map(|t| truncate(t.to_string(), HANDSHAKE_ITEM_MAX));
                    let initialized =
                        jsonrpc::notification("notifications/initialized", Value::Null);
                    out.push(Effect::Send(initialized));
                    out.push(Effect::Handshake(version));
                    self.start_listing(cx.now, out);
                }
                // A late probe may still answer: it decides then.
                Err(_) if self.discover_pending() => {}
                // A modern server refusing the handshake: probe once more.
                Err(e) if e.code == UNSUPPORTED_PROTOCOL_VERSION && !self.reprobed => {
                    self.reprobed = true;
                    self.probe(out);
                }
                Err(e) => out.push(Effect::EndRun(format!(
                    "initialize failed: {} ({})",
                    e.message, e.code
                ))),
            },
            Pending::ToolsList(mut listing) => {
                match result {
                    Ok(mut v) => {
                        if let Some(ttl) = v.get("ttlMs").and_then(Value::as_i64) {
                            // A negative ttlMs counts as 0 (the specification's caching rules).
                            let ttl = ttl.max(0) as u64;
                            self.listing_ttl_ms =
                                Some(self.listing_ttl_ms.map_or(ttl, |t| t.min(ttl)));
                        }
                        let page = tools::take_page(&mut v);
                        if let Err(why) = listing.add_page(page, cx.limits) {
                            out.push(Effect::Misbehaved(why));
                            return;
                        }
                        if let Some(cursor) = v["nextCursor"].as_str().filter(|c| !c.is_empty()) {
                            let cursor = cursor.to_string();
                            self.list_tools(Some(cursor), listing, out);
                            return;
                        }
                    }
                    // A server without tools may refuse tools/list: it simply has none.
                    Err(e) => {
                        let why = truncate(e.message, TEXT_MAX);
                        log::debug!("MCP server {}: tools/list failed: {why}", self.id)
                    }
                }
                self.finish_listing(listing.into_tools(), cx, out);
            }
            Pending::ExtraList(mut listing) => {
                let kind = listing.kind();
                match result {
                    Ok(mut v) => {
                        let page = tools::take_items(&mut v, kind);
                        if let Err(why) = listing.add_page(page, cx.limits) {
                            out.push(Effect::Misbehaved(why));
                            return;
                        }
                        if let Some(cursor) = v["nextCursor"].as_str().filter(|c| !c.is_empty()) {
                            let cursor = cursor.to_string();
                            self.list_extra(Some(cursor), listing, out);
                            return;
                        }
                    }
                    // Refused: the server has none of these (as for tools).
                    Err(e) => {
                        let why = truncate(e.message, TEXT_MAX);
                        log::debug!("MCP server {}: {} failed: {why}", self.id, kind.method())
                    }
                }
                self.finish_extra(kind, listing.into_tools(), cx, out);
            }
            Pending::Forward {
                reply,
                timer,
                started,
                deadline,
                method,
                ..
            } => {
                out.push(Effect::CancelTimer(timer));
                let outcome = if result.is_ok() { "ok" } else { "mcp_error" };
                out.push(Effect::Request(method, outcome));
                let id = self.id.as_str();
                let answer = match result {
                    Ok(v) if v["resultType"] == "input_required" => {
                        let left = deadline.saturating_duration_since(cx.now);
                        Err(input_required(id, ("method", method.to_string()), v, left))
                    }
                    Ok(v) => {
                        let ms = cx.now.saturating_duration_since(started).as_secs_f64() * 1000.0;
                        let mut map = serde_json::Map::with_capacity(4);
                        map.insert("server".into(), Value::String(id.to_string()));
                        map.insert("method".into(), Value::String(method.to_string()));
                        map.insert("result".into(), v);
                        map.insert("duration_ms".into(), json!(ms));
                        Ok(Value::Object(map))
                    }
                    Err(e) => Err(ApiError::new(
                        ErrorCode::McpError,
                        format!("{id} refused {method}: {} ({})", e.message, e.code),
                    )
                    .with_data(
                        json!({"server": id, "method": method, "code": e.code, "data": e.data}),
                    )),
                };
                out.push(Effect::Reply(reply, answer));
            }
            Pending::Ping(sent) => {
                self.missed_pings = 0;
                self.ping.record(cx.now.saturating_duration_since(sent));
                out.push(Effect::PingAnswered);
            }
            Pending::Call {
                reply,
                timer,
                started,
                deadline,
                tool,
                ..
            } => {
                out.push(Effect::CancelTimer(timer));
                let elapsed = cx.now.saturating_duration_since(started);
                let ms = elapsed.as_secs_f64() * 1000.0;
                let kind = match &result {
                    Ok(v) => v
                        .get("resultType")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    Err(_) => None,
                };
                let outcome = match &result {
                    Ok(_) if kind.as_deref() == Some("input_required") => "tool_error",
                    Ok(_) if !matches!(kind.as_deref(), None | Some("complete")) => "mcp_error",
                    Ok(v) if v["isError"] == true => "tool_error",
                    Ok(_) => "ok",
                    Err(_) => "mcp_error",
                };
                out.push(Effect::ToolCall(
                    outcome,
                    elapsed.as_secs_f64(),
                    tool.clone(),
                ));
                let id = self.id.as_str();
                let answer = match result {
                    Ok(v) if kind.as_deref() == Some("input_required") => {
                        self.calls.1 += 1;
                        let left = deadline.saturating_duration_since(cx.now);
                        Err(input_required(id, ("tool", tool), v, left))
                    }
                    Ok(_) if !matches!(kind.as_deref(), None | Some("complete")) => {
                        self.calls.1 += 1;
                        let kind = truncate(kind.unwrap_or_default(), 64);
                        Err(ApiError::new(
                            ErrorCode::McpError,
                            format!("{id} answered the call to {tool} with resultType {kind:?}, which vsm-daemon does not know"),
                        )
                        .with_data(json!({"server": id, "tool": tool})))
                    }
                    Ok(v) if v["isError"] == true => {
                        self.calls.1 += 1;
                        Err(ApiError::new(
                            ErrorCode::ToolError,
                            format!("tool {tool} on {id} reported an error: {}", first_text(&v)),
                        )
                        .with_data(call_result(id, tool, v, ms)))
                    }
                    Ok(v) => {
                        self.calls.0 += 1;
                        Ok(call_result(id, tool, v, ms))
                    }
                    Err(e) => {
                        self.calls.1 += 1;
                        Err(ApiError::new(
                            ErrorCode::McpError,
                            format!(
                                "{id} refused the call to {tool}: {} ({})",
                                e.message, e.code
                            ),
                        )
                        .with_data(
                            json!({"server": id, "tool": tool, "code": e.code, "data": e.data}),
                        ))
                    }
                };
                out.push(Effect::Reply(reply, answer));
            }
        }
    }

    /// The answer to the `server/discover` probe (the first answer of the run decides its
    /// era; one after the handshake answered is dropped before it gets here).
    fn on_discover(
        &mut self,
        result: Result<Value, jsonrpc::RpcError>,
        cx: Context,
        out: &mut Effects<R, T>,
    ) {
        if self.era.is_some() {
            return;
        }
        match result {
            Ok(mut v) => {
                let offered: Vec<&str> = v
                    .get("supportedVersions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                match MODERN_VERSIONS.iter().find(|m| offered.contains(m)) {
                    Some(version) => {
                        self.era = Some(Era::Modern);
                        self.pending.retain(|_, p| {
                            !matches!(p, Pending::Initialize | Pending::Discover { .. })
                        });
                        self.protocol_version = Some(version.to_string());
                        let info = v
                            .get_mut("_meta")
                            .and_then(|m| m.get_mut(meta::SERVER_INFO))
                            .map(Value::take)
                            .unwrap_or(Value::Null);
                        self.server_info = bounded_value(info);
                        let caps = v.get_mut("capabilities").map(Value::take);
                        self.server_capabilities = bounded_value(caps.unwrap_or(Value::Null));
                        self.instructions = v
                            .get("instructions")
                            .and_then(Value::as_str)
                            .map(|t| truncate(t.to_string(), HANDSHAKE_ITEM_MAX));
                        out.push(Effect::Handshake(version.to_string()));
                        self.start_listing(cx.now, out);
                    }
                    // It answers discover but names no modern version we speak: the
                    // handshake may still work.
                    None if !self.initialize_pending() => self.send_initialize(out),
                    None => {}
                }
            }
            Err(e) if e.code == UNSUPPORTED_PROTOCOL_VERSION => {
                // A modern server that shares no version with us: no fallback (spec).
                let supported = e
                    .data
                    .as_ref()
                    .and_then(|d| d.get("supported"))
                    .map(|s| truncate(s.to_string(), 200))
                    .unwrap_or_else(|| "-".into());
                out.push(Effect::EndRun(format!(
                    "server speaks only protocol versions {supported}; vsm-daemon speaks {} and {}",
                    MODERN_VERSIONS.join(", "),
                    PROTOCOL_VERSIONS.join(", ")
                )));
            }
            // Any other error: a legacy server (method not found, invalid params, ...).
            Err(_) if !self.initialize_pending() => self.send_initialize(out),
            Err(_) => {}
        }
    }

    fn start_listing(&mut self, now: Instant, out: &mut Effects<R, T>) {
        self.relist.started(now);
        self.listing_ttl_ms = None;
        self.list_tools(None, Listing::default(), out);
    }

    fn list_tools(&mut self, cursor: Option<String>, listing: Listing, out: &mut Effects<R, T>) {
        let rpc = self.take_id();
        self.pending.insert(rpc, Pending::ToolsList(listing));
        let params = match cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        out.push(Effect::Send(self.request(rpc, "tools/list", params)));
    }

    /// `notifications/tools/list_changed`: list again, coalesced and rate-limited; a flood
    /// counts as protocol errors.
    fn on_list_changed(&mut self, cx: Context, out: &mut Effects<R, T>) {
        if self
            .list_changed
            .hit(cx.now, tools::LIST_CHANGED_PER_MINUTE)
        {
            let what = format!(
                "protocol error: more than {} notifications/tools/list_changed within a minute",
                tools::LIST_CHANGED_PER_MINUTE
            );
            self.protocol_error(what, cx.now, out);
            return;
        }
        if !matches!(
            cx.status,
            Status::Initializing | Status::Active | Status::Degraded
        ) {
            return;
        }
        let next = self.relist.changed(cx.now);
        self.relist_next(next, cx, out);
    }

    /// The timer from [`Effect::RelistAt`] fired.
    pub fn on_relist_timer(&mut self, cx: Context) -> Effects<R, T> {
        let mut out = Vec::new();
        let next = self.relist.timer_fired();
        self.relist_next(next, cx, &mut out);
        out
    }

    fn relist_next(&mut self, next: tools::Next, cx: Context, out: &mut Effects<R, T>) {
        match next {
            tools::Next::Nothing => {}
            tools::Next::ListNow => {
                if cx.status.serves() {
                    self.start_listing(cx.now, out);
                }
            }
            tools::Next::WaitUntil(at) => out.push(Effect::RelistAt(at)),
        }
    }

    fn finish_listing(&mut self, tools: Vec<Value>, cx: Context, out: &mut Effects<R, T>) {
        let count = tools.len();
        let changed = self.tools != tools;
        self.listings += u64::from(changed);
        self.tools = tools;
        if self.era == Some(Era::Modern) {
            self.list_ttl_ms = self.listing_ttl_ms.take();
            let ttl = Duration::from_millis(self.list_ttl_ms.unwrap_or(0));
            self.fresh_until = Some(cx.now + ttl.clamp(TTL_FLOOR, TTL_CEILING));
        }
        if cx.status == Status::Initializing {
            self.initialized = true;
            out.push(Effect::Listed(count));
            self.start_extra_listings(cx, out);
            // Modern servers send list changes and resource updates only on a listen.
            self.relisten(cx.now, out);
        } else if changed {
            log::info!("MCP server {}: tool list changed ({count} tools)", self.id);
            // Events are kept in the history: name a bounded number of tools, briefly.
            let names: Vec<String> = self
                .tool_names()
                .iter()
                .take(EVENT_TOOL_NAMES)
                .map(|n| truncate(n.to_string(), 128))
                .collect();
            out.push(Effect::Event(EventData::McpServerToolsChanged {
                server_id: self.id.clone(),
                tools: names,
                count,
            }));
        }
        let next = self.relist.finished(cx.now);
        self.relist_next(next, cx, out);
    }

    /// The request id of the call in flight that was given `token`.
    fn call_with_token(&self, token: &str) -> Option<u64> {
        // Calls in flight are few (`max_in_flight_calls`), so a scan costs less than an index
        // kept in step with `pending`.
        self.pending.iter().find_map(|(rpc, p)| match p {
            Pending::Call { token: t, .. } if t == token => Some(*rpc),
            Pending::Forward { token: Some(t), .. } if t == token => Some(*rpc),
            _ => None,
        })
    }

    /// After the run's first tool listing: lists what else the server offers (its
    /// capabilities say); a list it no longer offers is emptied.
    fn start_extra_listings(&mut self, cx: Context, out: &mut Effects<R, T>) {
        for kind in Kind::EXTRAS {
            if self.offers(kind) {
                self.extra_relist[kind as usize].started(cx.now);
                self.list_extra(None, Listing::new(kind), out);
            } else if !self.list(kind).is_empty() {
                self.list_mut(kind).clear();
                out.push(self.list_changed_event(kind));
            }
        }
    }

    fn list_extra(&mut self, cursor: Option<String>, listing: Listing, out: &mut Effects<R, T>) {
        let rpc = self.take_id();
        let method = listing.kind().method();
        self.pending.insert(rpc, Pending::ExtraList(listing));
        let params = match cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        out.push(Effect::Send(self.request(rpc, method, params)));
    }

    fn list_changed_event(&self, kind: Kind) -> Effect<R, T> {
        Effect::Event(EventData::McpServerListChanged {
            server_id: self.id.clone(),
            list: kind.name(),
            count: self.list(kind).len(),
        })
    }

    fn finish_extra(
        &mut self,
        kind: Kind,
        items: Vec<Value>,
        cx: Context,
        out: &mut Effects<R, T>,
    ) {
        if *self.list(kind) != items {
            log::info!(
                "MCP server {}: {} listed ({} items)",
                self.id,
                kind.name(),
                items.len()
            );
            *self.list_mut(kind) = items;
            out.push(self.list_changed_event(kind));
        }
        let next = self.extra_relist[kind as usize].finished(cx.now);
        self.extra_relist_next(kind, next, cx, out);
    }

    /// `notifications/resources/list_changed` or `prompts/list_changed`: the lists of `kinds`
    /// are listed again, coalesced and rate-limited like tools (and counted in the same flood).
    fn on_extra_list_changed(&mut self, kinds: &[Kind], cx: Context, out: &mut Effects<R, T>) {
        if self
            .list_changed
            .hit(cx.now, tools::LIST_CHANGED_PER_MINUTE)
        {
            let what = format!(
                "protocol error: more than {} list_changed notifications within a minute",
                tools::LIST_CHANGED_PER_MINUTE
            );
            self.protocol_error(what, cx.now, out);
            return;
        }
        if !cx.status.serves() {
            return;
        }
        for &kind in kinds {
            if !self.offers(kind) {
                continue;
            }
            let next = self.extra_relist[kind as usize].changed(cx.now);
            self.extra_relist_next(kind, next, cx, out);
        }
    }

    /// The timer from [`Effect::RelistExtraAt`] fired.
    pub fn on_extra_relist_timer(&mut self, kind: Kind, cx: Context) -> Effects<R, T> {
        let mut out = Vec::new();
        let next = self.extra_relist[kind as usize].timer_fired();
        self.extra_relist_next(kind, next, cx, &mut out);
        out
    }

    fn extra_relist_next(
        &mut self,
        kind: Kind,
        next: tools::Next,
        cx: Context,
        out: &mut Effects<R, T>,
    ) {
        match next {
            tools::Next::Nothing => {}
            tools::Next::ListNow => {
                if cx.status.serves() && self.offers(kind) {
                    self.extra_relist[kind as usize].started(cx.now);
                    self.list_extra(None, Listing::new(kind), out);
                }
            }
            tools::Next::WaitUntil(at) => out.push(Effect::RelistExtraAt(kind, at)),
        }
    }

    /// Whether a call may be sent now: not while the run ends (`ending`), only while serving.
    fn serving(&self, status: Status, ending: Option<&str>) -> Result<(), ApiError> {
        let id = &self.id;
        if let Some(why) = ending {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("MCP server '{id}' is ending its run: {why}"),
            ));
        }
        if !status.serves() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "MCP server '{id}' is not active (status {})",
                    status.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// Whether one more call fits among those in flight (tool calls and forwarded requests).
    fn room_for_a_call(&self, max_in_flight: usize) -> Result<(), ApiError> {
        if self.calls_in_flight() >= max_in_flight {
            return Err(ApiError::new(
                ErrorCode::Busy,
                format!("{max_in_flight} calls already in flight on '{}'", self.id),
            ));
        }
        Ok(())
    }

    /// Forwards a request other than a tool call (`resources/read`, `prompts/get`,
    /// `resources/subscribe`, `completion/complete`, `logging/setLevel`...) with `params`;
    /// its answer (the server's result, or its error) arrives later as an [`Effect::Reply`].
    /// Deadline and bounds as for [`Session::call`]. `needs` is the capability the server
    /// must have declared (see [`Session::declares`]). `input` goes to a modern server as a
    /// call's does (see [`retry_input`]); a legacy one never sees it. A modern server's
    /// `input_required` answer comes back as for a call (see [`input_required`]).
    ///
    /// # Errors
    /// Server ending its run or not serving, not declaring `needs`, too many calls in flight.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &mut self,
        status: Status,
        ending: Option<&str>,
        method: &'static str,
        needs: &str,
        (mut params, input): (Value, Option<Value>),
        timeout: Duration,
        max_in_flight: usize,
        reply: R,
        now: Instant,
        arm: impl FnOnce(u64, Instant) -> T,
    ) -> Result<Effects<R, T>, ApiError> {
        self.serving(status, ending)?;
        self.needs(needs, method)?;
        let id = self.id.as_str();
        self.room_for_a_call(max_in_flight)?;
        let token = params
            .pointer("/_meta/progressToken")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(t) = &token {
            if t.len() > NOTE_MAX || self.call_with_token(t).is_some() {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "progress token of {} bytes is too long or already in flight on '{id}'",
                        t.len()
                    ),
                ));
            }
        }
        if self.era == Some(Era::Modern) {
            retry_input(&mut params, input);
        }
        let rpc = self.take_id();
        let bytes = self.request(rpc, method, params);
        let deadline = now + timeout;
        let timer = arm(rpc, deadline);
        self.pending.insert(
            rpc,
            Pending::Forward {
                reply,
                timer,
                started: now,
                deadline,
                method,
                token,
            },
        );
        Ok(vec![Effect::Send(bytes)])
    }

    /// Whether the server declares capability `needs`, which `method` needs.
    fn needs(&self, needs: &str, method: &str) -> Result<(), ApiError> {
        if self.declares(needs) {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "MCP server '{}' offers no {needs} (its initialize capabilities do not declare it), needed for {method}",
                self.id
            ),
        ))
    }

    /// A modern server's resource subscription to `uri` begins or ends (`subscribe`): that
    /// era has no `resources/subscribe`, so the URI joins or leaves the set its listen carries
    /// ([`Session::subscriptions`]), and the listen is opened again when the set changed.
    /// Ending one always succeeds (a server that is down has nothing to be told).
    ///
    /// # Errors
    /// Beginning one: server ending its run or not serving, not declaring
    /// `resources.subscribe`, [`SUBSCRIPTIONS_MAX`] held already.
    pub fn listen_to(
        &mut self,
        status: Status,
        ending: Option<&str>,
        uri: &str,
        subscribe: bool,
        now: Instant,
    ) -> Result<Effects<R, T>, ApiError> {
        let changed = if subscribe {
            self.serving(status, ending)?;
            self.needs("resources.subscribe", "subscriptions/listen")?;
            let held = self.subscriptions.len();
            if held >= SUBSCRIPTIONS_MAX && !self.subscriptions.contains(uri) {
                return Err(ApiError::new(
                    ErrorCode::Busy,
                    format!("{held} resources are subscribed to on '{}'", self.id),
                ));
            }
            self.subscriptions.insert(uri.to_string())
        } else {
            self.subscriptions.remove(uri)
        };
        let mut out = Vec::new();
        if changed && status.serves() {
            self.relisten(now, &mut out);
        }
        Ok(out)
    }

    /// Opens this run's listen (modern servers, once listed) with what we follow: tool list
    /// changes when the server declares them, updates of [`Session::subscriptions`]. A listen
    /// the server has not acknowledged yet (for less than [`LISTEN_ACK_WAIT`]) is kept and
    /// marked stale, so that changes coming together make one new listen, sent when it is
    /// acknowledged; otherwise the old one is cancelled (`notifications/cancelled`, as the
    /// specification ends one on stdio) and the new one replaces it.
    fn relisten(&mut self, now: Instant, out: &mut Effects<R, T>) {
        if self.era != Some(Era::Modern) || !self.initialized {
            return;
        }
        if let Some(l) = self.listen.as_mut() {
            if !l.acked && now.saturating_duration_since(l.sent) < LISTEN_ACK_WAIT {
                l.stale = true;
                return;
            }
            let rpc = l.rpc;
            self.listen = None;
            self.pending.remove(&rpc);
            out.push(Effect::Send(jsonrpc::notification(
                "notifications/cancelled",
                json!({"requestId": rpc, "reason": "replaced by a newer subscriptions/listen"}),
            )));
        }
        let mut filter = serde_json::Map::new();
        if self.server_capabilities["tools"]["listChanged"] == true {
            filter.insert("toolsListChanged".into(), Value::Bool(true));
        }
        if !self.subscriptions.is_empty() {
            filter.insert("resourceSubscriptions".into(), json!(self.subscriptions));
        }
        if filter.is_empty() {
            return;
        }
        let rpc = self.take_id();
        self.pending.insert(rpc, Pending::Listen);
        self.listen = Some(Listen {
            rpc,
            sent: now,
            acked: false,
            stale: false,
        });
        let params = json!({ "notifications": filter });
        out.push(Effect::Send(self.request(
            rpc,
            "subscriptions/listen",
            params,
        )));
    }

    /// `notifications/subscriptions/acknowledged`: when it is for this run's listen, a change
    /// held back meanwhile goes out now.
    fn on_listen_acknowledged(&mut self, params: &Value, now: Instant, out: &mut Effects<R, T>) {
        let id = &params["_meta"][meta::SUBSCRIPTION_ID];
        // Our ids are numbers; a server may echo one as a string.
        let id = id
            .as_u64()
            .or_else(|| id.as_str().and_then(|s| s.parse().ok()));
        let Some(l) = self.listen.as_mut().filter(|l| Some(l.rpc) == id) else {
            return;
        };
        l.acked = true;
        if l.stale {
            self.relisten(now, out);
        }
    }

    /// Whether one more of the server's notes (log messages, resource updates) may be passed
    /// on now; one beyond the budget is counted in `notes_dropped`.
    fn note_admitted(&mut self, now: Instant) -> bool {
        if self.notes.take(now) {
            return true;
        }
        self.notes_dropped += 1;
        false
    }

    /// A `notifications/message` as an `mcp_server_log` event: the level must be one of the
    /// eight, the logger is bounded, `data` is kept as sent when its text is at most
    /// [`LOG_DATA_MAX`] bytes and otherwise becomes that much of its text. Beyond the
    /// budget ([`NOTES_PER_SECOND`], bursts of [`NOTES_BURST`]) messages are dropped and
    /// counted. The daemon's own log gets a line for each one passed on: debug for the
    /// server's debug, info and notice, info for warning, warn for error and above.
    fn log_event(&mut self, mut params: Value, now: Instant) -> Option<EventData> {
        let id = self.id.as_str();
        let Some(level) = params["level"]
            .as_str()
            .and_then(|l| LOG_LEVELS.iter().find(|k| **k == l))
            .copied()
        else {
            let shown = truncate(params["level"].to_string(), 40);
            log::debug!(
                "MCP server {id}: a log message with level {shown}, not one of the eight, dropped"
            );
            return None;
        };
        let dropped = self.notes_dropped;
        if !self.note_admitted(now) {
            return None;
        }
        let id = self.id.as_str();
        if dropped > self.notes_reported {
            log::info!(
                "MCP server {id}: {} log messages or resource updates dropped so far (more than {NOTES_PER_SECOND} a second)",
                dropped
            );
        }
        self.notes_reported = dropped;
        let logger = params["logger"]
            .as_str()
            .map(|l| truncate(l.to_string(), LOGGER_MAX));
        let text = params["data"].to_string();
        let data = if text.len() <= LOG_DATA_MAX {
            params["data"].take()
        } else {
            Value::String(truncate(text, LOG_DATA_MAX))
        };
        let shown = truncate(data.to_string(), NOTE_MAX);
        let who = logger.as_deref().unwrap_or("-");
        match log_rank(level) {
            Some(0..=2) => log::debug!(target: "mcp", "[{id}] {level} {who}: {shown}"),
            Some(3) => log::info!(target: "mcp", "[{id}] {level} {who}: {shown}"),
            _ => log::warn!(target: "mcp", "[{id}] {level} {who}: {shown}"),
        }
        Some(EventData::McpServerLog {
            server_id: self.id.clone(),
            level,
            logger,
            data,
        })
    }

    /// A `notifications/resources/updated` as an `mcp_resource_updated` event (within the
    /// same budget as log messages; a URI longer than [`URI_MAX`] is dropped).
    fn updated_event(&mut self, params: &Value, now: Instant) -> Option<EventData> {
        let uri = params["uri"].as_str().filter(|u| u.len() <= URI_MAX)?;
        if !self.note_admitted(now) {
            return None;
        }
        Some(EventData::McpResourceUpdated {
            server_id: self.id.clone(),
            uri: uri.to_string(),
        })
    }

    /// A `notifications/progress` as an event, when it is about one of our calls in flight
    /// (its token is one we gave); its free-text parts are bounded.
    fn progress_event(&self, params: &Value) -> Option<EventData> {
        let token = params["progressToken"].as_str()?;
        self.call_with_token(token)?;
        let number = |v: &Value| {
            if v.is_number() {
                v.clone()
            } else {
                Value::Null
            }
        };
        let message = params["message"]
            .as_str()
            .map(|m| truncate(m.to_string(), NOTE_MAX));
        Some(EventData::McpToolProgress {
            server_id: self.id.clone(),
            progress_token: token.to_string(),
            progress: number(&params["progress"]),
            total: number(&params["total"]),
            message,
        })
    }

    /// Forwards a tool call; its answer arrives later as an [`Effect::Reply`]. For a modern
    /// server, `input` (a `/mcp` client's `clientCapabilities`, and after `input_required`
    /// its `inputResponses` and `requestState`) goes with it. The server
    /// gets `token` as the call's progress token (`None`: `SERVER:RPC`; a caller's own must
    /// be unique among its calls in flight). `arm` sets the call's deadline on the loop's
    /// timers (given the request id and the instant); when it passes, the loop calls
    /// [`Session::on_call_deadline`].
    ///
    /// # Errors
    /// Server ending its run (`ending`) or not serving, unknown tool, too many calls in flight.
    #[allow(clippy::too_many_arguments)]
    pub fn call_into(
        &mut self,
        out: &mut Effects<R, T>,
        status: Status,
        ending: Option<&str>,
        tool: &str,
        arguments: jsonrpc::Arguments,
        input: Option<Value>,
        token: Option<String>,
        timeout: Duration,
        max_in_flight: usize,
        reply: R,
        now: Instant,
        arm: impl FnOnce(u64, Instant) -> T,
    ) -> Result<(), ApiError> {
        self.serving(status, ending)?;
        let id = self.id.as_str();
        if !self.tools.is_empty() && !self.tools.iter().any(|t| t["name"].as_str() == Some(tool)) {
            return Err(ApiError::field(
                ErrorCode::ToolNotFound,
                "name",
                format!(
                    "MCP server '{id}' has no tool '{tool}' (tools: {})",
                    self.tool_names().join(", ")
                ),
            ));
        }
        self.room_for_a_call(max_in_flight)?;
        if let Some(t) = &token {
            if t.len() > NOTE_MAX || self.call_with_token(t).is_some() {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "progress token of {} bytes is too long or already in flight on '{id}'",
                        t.len()
                    ),
                ));
            }
        }
        let rpc = self.take_id();
        let token = token.unwrap_or_else(|| format!("{}:{rpc}", self.id));
        let bytes = if self.era == Some(Era::Modern) {
            let arguments = arguments.to_value();
            let mut params =
                json!({"name": tool, "arguments": arguments, "_meta": {"progressToken": token}});
            retry_input(&mut params, input);
            self.request(rpc, "tools/call", params)
        } else {
            // The arguments as they came, spliced (the bytes `request` would write).
            jsonrpc::call_request(rpc, tool, &arguments, &token)
        };
        let deadline = now + timeout;
        let timer = arm(rpc, deadline);
        self.pending.insert(
            rpc,
            Pending::Call {
                reply,
                timer,
                started: now,
                deadline,
                tool: tool.to_string(),
                token,
            },
        );
        out.push(Effect::Send(bytes));
        // A modern server's list past its freshness is read again (after the call went out).
        if self.fresh_until.is_some_and(|t| now >= t) {
            self.fresh_until = None;
            match self.relist.changed(now) {
                tools::Next::ListNow => self.start_listing(now, out),
                tools::Next::WaitUntil(at) => out.push(Effect::RelistAt(at)),
                tools::Next::Nothing => {}
            }
        }
        Ok(())
    }

    /// [`Self::call_into`] with a list of its own.
    #[cfg(test)]
    #[allow(clippy::too_many_arguments)]
    pub fn call(
        &mut self,
        status: Status,
        ending: Option<&str>,
        tool: &str,
        arguments: jsonrpc::Arguments,
        input: Option<Value>,
        token: Option<String>,
        timeout: Duration,
        max_in_flight: usize,
        reply: R,
        now: Instant,
        arm: impl FnOnce(u64, Instant) -> T,
    ) -> Result<Effects<R, T>, ApiError> {
        let mut out = Vec::new();
        self.call_into(
            &mut out,
            status,
            ending,
            tool,
            arguments,
            input,
            token,
            timeout,
            max_in_flight,
            reply,
            now,
            arm,
        )?;
        Ok(out)
    }

    /// A call's deadline passed: the caller gets a timeout, the server `notifications/cancelled`.
    pub fn on_call_deadline(&mut self, rpc: u64, now: Instant) -> Effects<R, T> {
        let mut out = self.end_call(rpc, None, now);
        self.settle_asks(&mut out);
        out
    }

    /// The caller of the call given progress token `token` gave up on it (`reason`): it ends
    /// as on its deadline, with the caller answered `Conflict` ("cancelled") and the server
    /// sent `notifications/cancelled` with the request id we used. `None` when no call in
    /// flight has that token (it was answered already).
    pub fn cancel(&mut self, token: &str, reason: &str, now: Instant) -> Option<Effects<R, T>> {
        let rpc = self.call_with_token(token)?;
        let mut out = self.end_call(rpc, Some(reason), now);
        self.settle_asks(&mut out);
        Some(out)
    }

    /// Ends call `rpc` before its answer: at its deadline (`cancelled` is `None`, the deadline
    /// timer has fired) or cancelled by its caller for the reason given (its timer is
    /// cancelled). Either way the server is told with `notifications/cancelled`.
    fn end_call(&mut self, rpc: u64, cancelled: Option<&str>, now: Instant) -> Effects<R, T> {
        if let Some(Pending::Forward { .. }) = self.pending.get(&rpc) {
            return self.end_forward(rpc, cancelled, now);
        }
        let Some(Pending::Call {
            reply,
            tool,
            started,
            timer,
            ..
        }) = self.pending.remove(&rpc)
        else {
            return Vec::new();
        };
        let elapsed = now.saturating_duration_since(started);
        let id = &self.id;
        let ms = elapsed.as_millis();
        let mut out = Vec::with_capacity(4);
        let (outcome, error, reason) = match cancelled {
            None => {
                self.calls.2 += 1;
                let message = format!("tool {tool} on {id} did not answer within {ms} ms");
                (
                    "timeout",
                    ApiError::new(ErrorCode::Timeout, message),
                    "timed out",
                )
            }
            Some(reason) => {
                self.calls.1 += 1;
                out.push(Effect::CancelTimer(timer));
                let message =
                    format!("the call to {tool} on {id} was cancelled by its caller: {reason}");
                (
                    "cancelled",
                    ApiError::new(ErrorCode::Conflict, message),
                    reason,
                )
            }
        };
        let reason = truncate(reason.to_string(), NOTE_MAX);
        out.push(Effect::ToolCall(outcome, elapsed.as_secs_f64(), tool));
        out.push(Effect::Reply(reply, Err(error)));
        out.push(Effect::Send(jsonrpc::notification(
            "notifications/cancelled",
            json!({"requestId": rpc, "reason": reason}),
        )));
        out
    }

    /// Ends forwarded request `rpc` before its answer, as [`Session::end_call`] ends a call.
    fn end_forward(&mut self, rpc: u64, cancelled: Option<&str>, now: Instant) -> Effects<R, T> {
        let Some(Pending::Forward {
            reply,
            started,
            method,
            timer,
            ..
        }) = self.pending.remove(&rpc)
        else {
            return Vec::new();
        };
        let ms = now.saturating_duration_since(started).as_millis();
        let id = &self.id;
        let mut out = Vec::with_capacity(3);
        let (error, reason) = match cancelled {
            None => (
                ApiError::new(
                    ErrorCode::Timeout,
                    format!("{id} did not answer {method} within {ms} ms"),
                ),
                "timed out",
            ),
            Some(reason) => {
                out.push(Effect::CancelTimer(timer));
                let message = format!("{method} on {id} was cancelled by its caller: {reason}");
                (ApiError::new(ErrorCode::Conflict, message), reason)
            }
        };
        let reason = truncate(reason.to_string(), NOTE_MAX);
        let outcome = if cancelled.is_some() {
            "cancelled"
        } else {
            "timeout"
        };
        out.push(Effect::Request(method, outcome));
        out.push(Effect::Reply(reply, Err(error)));
        out.push(Effect::Send(jsonrpc::notification(
            "notifications/cancelled",
            json!({"requestId": rpc, "reason": reason}),
        )));
        out
    }

    /// One health round (the server serves): an unanswered ping counts as missed; unless
    /// that makes `allowed` misses (the run ends), a new ping goes out.
    pub fn ping_round(&mut self, allowed: u32, now: Instant) -> Effects<R, T> {
        let mut out = Vec::new();
        let before = self.pending.len();
        self.pending.retain(|_, p| !matches!(p, Pending::Ping(_)));
        if self.pending.len() < before {
            self.missed_pings += 1;
            out.push(Effect::PingMissed(self.missed_pings));
            if self.missed_pings >= allowed {
                return out;
            }
        }
        let rpc = self.take_id();
        self.pending.insert(rpc, Pending::Ping(now));
        // `ping` is gone in the modern era: `server/discover` is its cheapest request.
        let method = match self.era {
            Some(Era::Modern) => "server/discover",
            _ => "ping",
        };
        out.push(Effect::Send(self.request(rpc, method, json!({}))));
        // A listen left unacknowledged does not hold back changes for ever.
        if self.listen.is_some_and(|l| l.stale) {
            self.relisten(now, &mut out);
        }
        out
    }

    /// The run is over (`reason` says how): every request in flight ends, and calls get a
    /// `server_exited` error.
    pub fn end_run(&mut self, reason: &str, now: Instant) -> Effects<R, T> {
        let mut out = Vec::new();
        self.skip_probe = match self.era {
            Some(Era::Legacy) => self.skip_probe,
            Some(Era::Modern) => false,
            None => self.discover_pending() && !self.initialize_pending(),
        };
        if self.skip_probe && self.era.is_none() {
            log::info!(
                "MCP server {}: its run ended during the server/discover probe; the next starts with initialize",
                self.id
            );
        }
        self.asks.clear();
        for (_, p) in self.pending.drain() {
            if let Pending::Forward {
                reply,
                timer,
                method,
                ..
            } = p
            {
                out.push(Effect::CancelTimer(timer));
                out.push(Effect::Request(method, "server_exited"));
                out.push(Effect::Reply(
                    reply,
                    Err(ApiError::new(
                        ErrorCode::ServerExited,
                        format!("MCP server {} {reason} during {method}", self.id),
                    )),
                ));
                continue;
            }
            if let Pending::Call {
                reply,
                timer,
                tool,
                started,
                ..
            } = p
            {
                out.push(Effect::CancelTimer(timer));
                self.calls.1 += 1;
                let seconds = now.saturating_duration_since(started).as_secs_f64();
                out.push(Effect::ToolCall("server_exited", seconds, tool.clone()));
                out.push(Effect::Reply(
                    reply,
                    Err(ApiError::new(
                        ErrorCode::ServerExited,
                        format!("MCP server {} {reason} during the call to {tool}", self.id),
                    )),
                ));
            }
        }
        // A burst of calls may have grown the map: the next run starts small.
        self.pending.shrink_to_fit();
        out
    }
}

/// Relaying a server's requests to the `/mcp` client of the call in flight (see [`asks`]).
impl<R: Copy, T: Copy> Session<R, T> {
    /// The server asks its client `method` (relayed): with a tool call in flight, the loop
    /// is told to relay it ([`Effect::Ask`]); otherwise, or when relaying was turned off since
    /// the run began, or too many wait, the server gets a JSON-RPC error at once.
    fn ask(&mut self, rpc: Value, method: String, params: Value, out: &mut Effects<R, T>) {
        let mut calls: Vec<(u64, String)> = self
            .pending
            .iter()
            .filter_map(|(n, p)| match p {
                Pending::Call { token, .. } => Some((*n, token.clone())),
                _ => None,
            })
            .collect();
        calls.sort_unstable();
        let others = self
            .pending
            .values()
            .any(|p| matches!(p, Pending::Forward { .. }));
        let taken = if self.client_requests {
            self.asks
                .take(rpc.clone(), calls.iter().map(|(n, _)| *n).collect())
        } else {
            Err("relaying requests to clients is turned off (gateway.client_requests)".into())
        };
        match taken {
            Ok(ask) => out.push(Effect::Ask {
                ask,
                method,
                params,
                calls: calls.into_iter().map(|(_, t)| t).collect(),
                others,
            }),
            Err(why) => {
                let method = truncate(method, 128);
                log::debug!("MCP server {}: {method} refused: {why}", self.id);
                out.push(Effect::Send(jsonrpc::error_response(
                    &rpc,
                    asks::NO_CLIENT,
                    &format!("vsm-daemon cannot relay {method}: {why}"),
                )));
            }
        }
    }

    /// The answer to relayed request `ask` (the client's result, or an error whose
    /// `data.code` is the JSON-RPC code): to the server with its own request id, unless the
    /// request no longer waits (its calls ended, the run ended).
    pub fn answer_ask(&mut self, ask: u64, answer: Answer) -> Effects<R, T> {
        self.asks
            .answer(ask, answer)
            .map(Effect::Send)
            .into_iter()
            .collect()
    }

    /// Requests waiting for a client's answer (this run).
    pub fn asks_waiting(&self) -> usize {
        self.asks.len()
    }

    /// Answers, with an error, the waiting requests whose tool calls have all ended.
    fn settle_asks(&mut self, out: &mut Effects<R, T>) {
        if self.asks.is_empty() {
            return;
        }
        let pending = &self.pending;
        let ended = self
            .asks
            .settle(|c| matches!(pending.get(&c), Some(Pending::Call { .. })));
        out.extend(ended.into_iter().map(Effect::Send));
    }
}

/// What [`raw_call_head`] tells of a line.
type RawHead = Option<(u64, std::ops::Range<usize>, bool, bool)>;

/// A response line of the one shape [`Session::raw_call_answer`] takes: its id, where its
/// result (an object) is in the line, and whether that result has `resultType` and `_meta`
/// members. `None` for any other line, or a result that must be read (`isError: true`, a
/// `resultType` other than `complete`).
///
/// The line is read once ([`raw_call_head_at_once`]); the rare result that one pass cannot
/// place (no members, or a key with escapes) is read apart as a second value.
fn raw_call_head(line: &[u8]) -> RawHead {
    raw_call_head_at_once(line).unwrap_or_else(|| raw_call_head_apart(line))
}

/// [`raw_call_head`] in one pass over the line, the result's members read as they come (a
/// second parse of the result would scan its bytes again, and allocate again for its nested
/// values). `None`: the result cannot be placed this way (it has no members, or a key with
/// escapes, which does not borrow from the line), or the line is not of the shape at all;
/// the caller then reads it apart.
fn raw_call_head_at_once(line: &[u8]) -> Option<RawHead> {
    use serde::de::{Error, MapAccess, Visitor};
    use serde_json::value::RawValue;
    /// The result's members that decide, and where its first key and last value lie.
    #[derive(Default)]
    struct Members<'a> {
        result_type: Option<&'a RawValue>,
        is_error: Option<&'a RawValue>,
        meta: Option<&'a RawValue>,
        first_key: Option<&'a str>,
        last_value: Option<&'a RawValue>,
    }
    impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Read<'a>(std::marker::PhantomData<&'a ()>);
            impl<'de: 'a, 'a> Visitor<'de> for Read<'a> {
                type Value = Members<'a>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a result object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'a>, A::Error> {
                    let mut m = Members::default();
                    // A key with escapes does not borrow: an error here, read apart then.
                    while let Some(key) = map.next_key::<&'de str>()? {
                        m.first_key.get_or_insert(key);
                        let value: &'de RawValue = map.next_value()?;
                        m.last_value = Some(value);
                        let member = match key {
                            "resultType" => &mut m.result_type,
                            "isError" => &mut m.is_error,
                            "_meta" => &mut m.meta,
                            _ => continue,
                        };
                        // As a struct's field would be: twice is an error.
                        if member.replace(value).is_some() {
                            return Err(A::Error::custom("duplicate member"));
                        }
                    }
                    Ok(m)
                }
            }
            d.deserialize_map(Read(std::marker::PhantomData))
        }
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Head<'a> {
        jsonrpc: &'a str,
        id: u64,
        #[serde(borrow)]
        result: Members<'a>,
    }
    let head: Head<'_> = serde_json::from_slice(line).ok()?;
    let m = head.result;
    let (first_key, last_value) = (m.first_key?, m.last_value?);
    // The object runs from the `{` before its first key's quote to the `}` after its last
    // value, with only whitespace between (it was parsed so).
    let blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let base = line.as_ptr() as usize;
    let quote = (first_key.as_ptr() as usize)
        .checked_sub(base)?
        .checked_sub(1)?;
    let before = line.get(..quote)?;
    let start = before.len() - before.iter().rev().take_while(|b| blank(b)).count();
    let start = start
        .checked_sub(1)
        .filter(|&i| line.get(i) == Some(&b'{'))?;
    let text = last_value.get();
    let after = (text.as_ptr() as usize).checked_sub(base)? + text.len();
    let end = after + line.get(after..)?.iter().take_while(|b| blank(b)).count();
    (line.get(end) == Some(&b'}')).then_some(())?;
    if head.jsonrpc != "2.0"
        || m.result_type.is_some_and(|t| t.get() != "\"complete\"")
        || m.is_error.is_some_and(|e| e.get() == "true")
    {
        return Some(None);
    }
    Some(Some((
        head.id,
        start..end + 1,
        m.result_type.is_some(),
        m.meta.is_some(),
    )))
}

/// [`raw_call_head`] reading the line, then its result apart.
fn raw_call_head_apart(line: &[u8]) -> RawHead {
    use serde_json::value::RawValue;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Head<'a> {
        jsonrpc: &'a str,
        id: u64,
        #[serde(borrow)]
        result: &'a RawValue,
    }
    /// A member that is there, whatever its value (`null` too: unlike `Option`).
    #[derive(Default)]
    struct Seen<'a>(Option<&'a RawValue>);
    impl<'de: 'a, 'a> serde::Deserialize<'de> for Seen<'a> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            <&'a RawValue>::deserialize(d).map(|v| Seen(Some(v)))
        }
    }
    #[derive(serde::Deserialize)]
    struct Peek<'a> {
        #[serde(rename = "resultType", default, borrow)]
        result_type: Seen<'a>,
        #[serde(rename = "isError", default, borrow)]
        is_error: Seen<'a>,
        #[serde(rename = "_meta", default, borrow)]
        meta: Seen<'a>,
    }
    let head: Head<'_> = serde_json::from_slice(line).ok()?;
    let text = head.result.get();
    // An object only (a struct also reads from an array).
    if head.jsonrpc != "2.0" || !text.starts_with('{') {
        return None;
    }
    let peek: Peek<'_> = serde_json::from_str(text).ok()?;
    if peek
        .result_type
        .0
        .is_some_and(|t| t.get() != "\"complete\"")
        || peek.is_error.0.is_some_and(|e| e.get() == "true")
    {
        return None;
    }
    // The result borrows from the line: its place in it.
    let start = (text.as_ptr() as usize).checked_sub(line.as_ptr() as usize)?;
    let end = start + text.len();
    (line.get(start..end) == Some(text.as_bytes())).then_some((
        head.id,
        start..end,
        peek.result_type.0.is_some(),
        peek.meta.0.is_some(),
    ))
}

/// The client capabilities an `initialize` offers: sampling and elicitation (both modes)
/// when requests are relayed to `/mcp` clients, otherwise none.
fn client_capabilities(relayed: bool) -> Value {
    if relayed {
        json!({"sampling": {}, "elicitation": {"form": {}, "url": {}}})
    } else {
        json!({})
    }
}

/// The answer data of a tool call. The result is moved in, not copied: a tool may return
/// megabytes, and `json!` would clone them.
fn call_result(server: &str, tool: String, result: Value, ms: f64) -> Value {
    let mut map = serde_json::Map::with_capacity(4);
    map.insert("server".into(), Value::String(server.to_string()));
    map.insert("tool".into(), Value::String(tool));
    map.insert("result".into(), result);
    map.insert("duration_ms".into(), json!(ms));
    Value::Object(map)
}

/// The `_meta` every modern request carries: our newest modern version, no client
/// capabilities (the daemon answers no server-to-client requests; a `/mcp` client's call
/// carries that client's, see [`retry_input`]), our identity.
fn request_meta() -> Value {
    json!({
        meta::PROTOCOL_VERSION: MODERN_VERSIONS[0],
        meta::CLIENT_CAPABILITIES: {},
        meta::CLIENT_INFO: {"name": "vsm-daemon", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// A call (or a forwarded `prompts/get`, `resources/read`: `what` is `("tool", name)` or
/// `("method", method)`) answered `resultType: "input_required"`: the server wants the
/// client to answer requests of its own (elicitation, sampling, roots) and to ask again. The
/// daemon cannot answer them, so the caller gets an error (a tool error for a tool) that says
/// what was asked, not a wait; its data carries the requests, the state and the time `left` before the deadline,
/// for the `/mcp` gateway, which asks its client and asks again within that time.
fn input_required(
    server: &str,
    (kind, name): (&str, String),
    mut result: Value,
    left: Duration,
) -> ApiError {
    let asks: Vec<String> = result["inputRequests"]
        .as_object()
        .into_iter()
        .flatten()
        .take(8)
        .map(|(key, r)| {
            let method = r["method"].as_str().unwrap_or("?");
            match r["params"]["message"].as_str() {
                Some(m) => format!("{key}: {method} {:?}", truncate(m.to_string(), 200)),
                None => format!("{key}: {method}"),
            }
        })
        .collect();
    let requests = bounded_value(result["inputRequests"].take());
    // A tool's is a tool error (its model reads it); a prompt's or a resource's, the
    // server's.
    let code = if kind == "tool" {
        ErrorCode::ToolError
    } else {
        ErrorCode::McpError
    };
    ApiError::new(
        code,
        format!(
            "{kind} {name} on {server} needs input the daemon cannot supply (input_required: {})",
            if asks.is_empty() {
                "no input requests named".to_string()
            } else {
                asks.join("; ")
            }
        ),
    )
    .with_data(json!({
        "server": server,
        kind: name,
        "result_type": "input_required",
        "input_requests": requests,
        "request_state": bounded_value(result["requestState"].take()),
        "remaining_ms": left.as_millis() as u64,
    }))
}

/// A 2026-07-28 call for a `/mcp` client, maybe retried after `input_required`: its
/// `inputResponses` and `requestState` go into the call's params, and the client's
/// `clientCapabilities` into its `_meta` (a modern request carries the capabilities of the
/// client it is for, so the server asks only what that client can answer).
fn retry_input(params: &mut Value, input: Option<Value>) {
    let Some(Value::Object(mut input)) = input else {
        return;
    };
    for key in ["inputResponses", "requestState"] {
        if let Some(v) = input.remove(key) {
            params[key] = v;
        }
    }
    if let Some(caps) = input.remove("clientCapabilities").filter(Value::is_object) {
        params["_meta"][meta::CLIENT_CAPABILITIES] = caps;
    }
}

fn first_text(result: &Value) -> String {
    result["content"]
        .as_array()
        .and_then(|c| c.iter().find_map(|i| i["text"].as_str()))
        .unwrap_or("no text")
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::jsonrpc::LineSplitter;

    /// Reply handles and timers are plain numbers here.
    type S = Session<u32, u64>;

    fn args(v: Value) -> jsonrpc::Arguments {
        jsonrpc::Arguments::from_value(&v).expect("an object")
    }
    type E = Effects<u32, u64>;

    const LIMITS: tools::Limits = tools::Limits {
        max_bytes: 64 * 1024,
        max_tools: 100,
    };

    fn cx(status: Status, now: Instant) -> Context {
        Context {
            status,
            now,
            limits: LIMITS,
            max_line: 1024,
        }
    }

    /// Feeds raw stdout bytes through the line splitter, as the loop does.
    fn feed(s: &mut S, bytes: &[u8], status: Status, now: Instant) -> E {
        let mut splitter = LineSplitter::new(1024);
        let mut lines = Vec::new();
        splitter.push(bytes, &mut lines);
        lines
            .into_iter()
            .flat_map(|l| s.on_line(l, cx(status, now)))
            .collect()
    }

    /// The JSON-RPC messages among the effects' sends.
    fn sent(effects: &E) -> Vec<Value> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send(b) => Some(serde_json::from_slice(b).expect("JSON we sent")),
                _ => None,
            })
            .collect()
    }

    /// A new run of a legacy server: the probe (id 1) is refused as an unknown method and
    /// `initialize` (id 2) follows.
    fn begin_legacy(s: &mut S, now: Instant) {
        let e = s.begin_run(now, PROBE_TIMEOUT);
        let probe = sent(&e);
        assert_eq!(probe[0]["method"], "server/discover");
        assert_eq!(
            probe[0]["params"]["_meta"][meta::PROTOCOL_VERSION],
            MODERN_VERSIONS[0]
        );
        assert!(
            matches!(e[..], [Effect::Send(_), Effect::ProbeAt(at)] if at == now + PROBE_TIMEOUT),
            "{e:?}"
        );
        let id = probe[0]["id"].clone();
        let refusal = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"error\":{{\"code\":-32601,\"message\":\"Method not found\"}}}}\n"
        );
        let init = sent(&feed(s, refusal.as_bytes(), Status::Starting, now));
        assert_eq!(init[0]["method"], "initialize");
        assert_eq!(init[0]["params"]["protocolVersion"], PROTOCOL_VERSIONS[0]);
        assert_eq!(init[0]["id"], id.as_u64().expect("id") + 1);
    }

    /// A session through its handshake in `version` and a one-tool listing.
    #[test]
    fn a_forwarded_request_with_a_token_is_cancelled_by_it_as_a_call_is() {
        let init = br#"{"jsonrpc":"2.0","id":2,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{},"prompts":{}}}}
"#;
        let now = Instant::now();
        let mut s = S::new("p");
        begin_legacy(&mut s, now);
        feed(&mut s, init, Status::Starting, now);
        let params = json!({"name": "slow", "_meta": {"progressToken": "vsm/gateway/9"}});
        let forward = |s: &mut S, params: Value| {
            s.forward(
                Status::Active,
                None,
                "prompts/get",
                "prompts",
                (params, None),
                Duration::from_secs(1),
                4,
                1,
                now,
                |_, _| 70,
            )
        };
        let e = forward(&mut s, params.clone()).expect("forwarded");
        let rpc = sent_id(&e, "prompts/get");
        let again = forward(&mut s, params).expect_err("a token in flight");
        assert_eq!(again.code, ErrorCode::Conflict);
        let e = s
            .cancel("vsm/gateway/9", "the client cancelled it", now)
            .expect("found by its token");
        match &e[..] {
            [Effect::CancelTimer(70), Effect::Request("prompts/get", "cancelled"), Effect::Reply(1, Err(err)), Effect::Send(_)] =>
            {
                assert_eq!(err.code, ErrorCode::Conflict);
                assert!(
                    err.message.contains("cancelled by its caller"),
                    "{}",
                    err.message
                );
            }
            other => panic!("{other:?}"),
        }
        let note = &sent(&e)[0];
        assert_eq!(note["method"], "notifications/cancelled");
        assert_eq!(note["params"]["requestId"], rpc);
        assert!(
            s.cancel("vsm/gateway/9", "again", now).is_none(),
            "answered once"
        );
        assert_eq!(s.calls_in_flight(), 0);
    }

    #[test]
    fn log_messages_and_updates_become_bounded_events_within_a_budget() {
        let (mut s, now) = active("2025-11-25");
        let note = |level: &str, data: Value| {
            line(json!({"jsonrpc": "2.0", "method": "notifications/message",
                        "params": {"level": level, "logger": "l".repeat(500), "data": data}}))
        };
        let e = feed(
            &mut s,
            &note("warning", json!({"k": 1})),
            Status::Active,
            now,
        );
        match &e[..] {
            [Effect::Event(EventData::McpServerLog {
                server_id,
                level,
                logger,
                data,
            })] => {
                assert_eq!((server_id.as_str(), *level), ("t", "warning"));
                let logger = logger.as_deref().unwrap_or_default();
                assert!(logger.starts_with(&"l".repeat(LOGGER_MAX)), "{logger}");
                assert!(logger.ends_with("... [500 bytes]"), "{logger}");
                assert_eq!(data, &json!({"k": 1}));
            }
            other => panic!("{other:?}"),
        }
        assert!(feed(&mut s, &note("loud", json!(1)), Status::Active, now).is_empty());
        // (A line that long is beyond this test's line bound: the message is handed over.)
        let big = json!({"level": "info", "data": "x".repeat(LOG_DATA_MAX * 2)});
        match s.log_event(big, now) {
            Some(EventData::McpServerLog { data, .. }) => {
                assert!(data.as_str().is_some_and(|t| t.len() < LOG_DATA_MAX + 32));
            }
            other => panic!("{other:?}"),
        }
        let updated = line(
            json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
                                  "params": {"uri": "x://r"}}),
        );
        let e = feed(&mut s, &updated, Status::Active, now);
        assert!(
            matches!(&e[..], [Effect::Event(EventData::McpResourceUpdated { uri, .. })] if uri == "x://r"),
            "{e:?}"
        );
        // A flood at one instant: the burst passes, the rest is dropped and counted.
        let mut passed = 3;
        for _ in 0..(NOTES_BURST as usize + 50) {
            passed += feed(&mut s, &note("info", json!(1)), Status::Active, now).len();
        }
        assert_eq!(passed, NOTES_BURST as usize);
        assert_eq!(s.notes_dropped, 53);
        // A second later the budget has refilled by the rate.
        let later = now + Duration::from_secs(1);
        let mut again = 0;
        for _ in 0..(NOTES_PER_SECOND as usize + 10) {
            again += feed(&mut s, &note("info", json!(1)), Status::Active, later).len();
        }
        assert_eq!(again, NOTES_PER_SECOND as usize);
    }

    fn active(version: &str) -> (S, Instant) {
        let now = Instant::now();
        let mut s = S::new("t");
        begin_legacy(&mut s, now);
        let answer = format!(
            r#"{{"jsonrpc":"2.0","id":2,"result":{{"protocolVersion":"{version}","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"x"}}}}}}"#
        );
        let e = feed(
            &mut s,
            format!("{answer}\n").as_bytes(),
            Status::Starting,
            now,
        );
        assert!(
            matches!(&e[1], Effect::Handshake(v) if v == version),
            "{e:?}"
        );
        let msgs = sent(&e);
        assert_eq!(msgs[0]["method"], "notifications/initialized");
        assert_eq!(msgs[1]["method"], "tools/list");
        assert_eq!(msgs[1]["id"], 3);
        assert!(
            msgs[1]["params"].get("_meta").is_none(),
            "no _meta for legacy"
        );
        let list =
            br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"echo","inputSchema":{}}]}}
"#;
        let e = feed(&mut s, list, Status::Initializing, now);
        assert!(matches!(e[..], [Effect::Listed(1)]), "{e:?}");
        assert!(s.initialized);
        assert_eq!(s.protocol_version.as_deref(), Some(version));
        assert_eq!(s.server_info["name"], "x");
        assert_eq!(s.era, Some(Era::Legacy));
        (s, now)
    }

    #[test]
    fn the_handshake_accepts_every_version_we_speak_and_ends_the_run_on_others() {
        for version in PROTOCOL_VERSIONS {
            active(version);
        }
        let mut s = S::new("t");
        begin_legacy(&mut s, Instant::now());
        let e = feed(
            &mut s,
            b"{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"protocolVersion\":\"1999-01-01\"}}\n",
            Status::Starting,
            Instant::now(),
        );
        assert!(
            matches!(&e[..], [Effect::EndRun(why)] if why.contains("'1999-01-01'")),
            "{e:?}"
        );
        assert_eq!(s.protocol_version, None);
        let mut s = S::new("t");
        begin_legacy(&mut s, Instant::now());
        let e = feed(
            &mut s,
            b"{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-32602,\"message\":\"no\"}}\n",
            Status::Starting,
            Instant::now(),
        );
        assert!(
            matches!(&e[..], [Effect::EndRun(why)] if why == "initialize failed: no (-32602)"),
            "{e:?}"
        );
    }

    #[test]
    fn a_paginated_listing_follows_next_cursor_and_a_relisting_reports_changes() {
        let (mut s, now) = active("2025-06-18");
        // list_changed while serving: listed at once (the last start was long enough ago).
        let later = now + Duration::from_secs(2);
        let e = feed(
            &mut s,
            b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n",
            Status::Active,
            later,
        );
        let m = sent(&e);
        assert_eq!(
            (m[0]["method"].as_str(), m[0]["params"].clone()),
            (Some("tools/list"), json!({}))
        );
        let id = m[0]["id"].as_u64().expect("id");
        let page1 = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"tools\":[{{\"name\":\"a\"}}],\"nextCursor\":\"p2\"}}}}\n"
        );
        let e = feed(&mut s, page1.as_bytes(), Status::Active, later);
        let m = sent(&e);
        assert_eq!(m[0]["params"]["cursor"], "p2");
        let id = m[0]["id"].as_u64().expect("id");
        assert_eq!(
            s.tool_names(),
            ["echo"],
            "the old list stands until the listing completes"
        );
        let page2 = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"tools\":[{{\"name\":\"b\"}}],\"nextCursor\":\"\"}}}}\n"
        );
        let e = feed(&mut s, page2.as_bytes(), Status::Active, later);
        assert_eq!(s.tool_names(), ["a", "b"]);
        assert!(
            matches!(&e[..], [Effect::Event(EventData::McpServerToolsChanged { count: 2, tools, .. })] if *tools == ["a", "b"]),
            "{e:?}"
        );
        // Another list_changed within a second of the last start waits for a timer.
        let e = feed(
            &mut s,
            b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n",
            Status::Active,
            later + Duration::from_millis(10),
        );
        assert!(
            matches!(e[..], [Effect::RelistAt(at)] if at == later + tools::RELIST_INTERVAL),
            "{e:?}"
        );
        let e = s.on_relist_timer(cx(Status::Active, later + tools::RELIST_INTERVAL));
        assert_eq!(sent(&e)[0]["method"], "tools/list");
    }

    #[test]
    fn an_oversized_tool_list_ends_the_run_as_misbehaviour() {
        let mut s = S::new("t");
        let now = Instant::now();
        begin_legacy(&mut s, now);
        feed(
            &mut s,
            b"{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"protocolVersion\":\"2025-11-25\"}}\n",
            Status::Starting,
            now,
        );
        let big = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{{\"tools\":[{{\"name\":\"x\",\"description\":\"{}\"}}]}}}}",
            "d".repeat(2000)
        );
        let mut context = cx(Status::Initializing, now);
        context.limits.max_bytes = 1000;
        let e = s.on_line(Line::Complete(big.into_bytes()), context);
        assert!(
            matches!(&e[..], [Effect::Misbehaved(why)] if why.contains("max_tool_list_bytes")),
            "{e:?}"
        );
        assert!(s.tools.is_empty() && !s.initialized);
        // A line over the line limit, too.
        let e = s.on_line(Line::TooLong { len: 5000 }, context);
        assert!(
            matches!(&e[..], [Effect::Misbehaved(why)] if why == "stdout line of more than 1024 bytes (saw 5000)"),
            "{e:?}"
        );
    }

    #[test]
    fn only_a_plain_call_result_is_taken_as_bytes() {
        let head = |line: &str| raw_call_head(line.as_bytes());
        let line = r#"{"jsonrpc":"2.0","id":3,"result":{"z":1e400,"a":"\u00e9"}}"#;
        let (id, range, has_type, has_meta) = head(line).expect("plain");
        assert_eq!(
            (id, &line[range], has_type, has_meta),
            (3, r#"{"z":1e400,"a":"\u00e9"}"#, false, false)
        );
        let line = r#" { "result" : { "resultType" : "complete", "_meta": null } , "id" : 4, "jsonrpc":"2.0" } "#;
        let (id, range, has_type, has_meta) = head(line).expect("spaces, any order");
        assert_eq!(
            (id, &line[range], has_type, has_meta),
            (
                4,
                r#"{ "resultType" : "complete", "_meta": null }"#,
                true,
                true
            )
        );
        assert!(head(r#"{"jsonrpc":"2.0","id":3,"result":{"isError":false}}"#).is_some());
        for other in [
            r#"{"jsonrpc":"2.0","id":3,"result":{"isError":true}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{"resultType":"input_required"}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{"resultType":null}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":[1,2,3]}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":"text"}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{},"error":null}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{},"id":4}"#,
            r#"{"jsonrpc":"2.0","id":3.0,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":"3","result":{}}"#,
            r#"{"jsonrpc":"2\u002e0","id":3,"result":{}}"#,
            r#"{"jsonrpc":"1.0","id":3,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{"a":1,"a":2,"isError":true,"isError":false}}"#,
            r#"[{"jsonrpc":"2.0","id":3,"result":{}}]"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{}"#,
        ] {
            assert!(head(other).is_none(), "{other}");
        }
    }

    /// The one-pass reading places and judges a result as reading it apart does, and hands
    /// over only the results it cannot place.
    #[test]
    fn a_result_read_in_one_pass_is_read_as_apart() {
        let placed = [
            r#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"hi"}]}}"#,
            r#"{"id":3,"result":{"z":1e400,"a":"\u00e9","b":{"c":[[]]}},"jsonrpc":"2.0"}"#,
            " { \"result\" :\t{\r\n \"resultType\" : \"complete\", \"_meta\": null\n} , \"id\" : 4, \"jsonrpc\":\"2.0\" } ",
            r#"{"jsonrpc":"2.0","id":3,"result":{"isError":false,"x":"}"}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{"a":1,"a":2}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{"isError":true}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{"resultType":"input_required"}}"#,
            r#"{"jsonrpc":"1.0","id":3,"result":{"a":1}}"#,
        ];
        let apart = [
            r#"{"jsonrpc":"2.0","id":3,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{ }}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{"\u0069sError":true}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{"a":1,"\u005fmeta":{}}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{"a":1,"isError":true,"isError":false}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":[1]}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{"a":1}"#,
            r#"{"jsonrpc":"2\u002e0","id":3,"result":{"a":1}}"#,
        ];
        for line in placed.iter().chain(&apart) {
            let once = raw_call_head_at_once(line.as_bytes());
            assert_eq!(once.is_some(), placed.contains(line), "{line}");
            let head = raw_call_head(line.as_bytes());
            assert_eq!(head, raw_call_head_apart(line.as_bytes()), "{line}");
            if let Some(once) = once {
                assert_eq!(once, head, "{line}");
            }
        }
        let (_, range, ..) = raw_call_head(placed[2].as_bytes()).expect("plain");
        assert_eq!(
            &placed[2][range],
            "{\r\n \"resultType\" : \"complete\", \"_meta\": null\n}"
        );
        // Escapes in a key are read apart, as before: the answer is still taken as bytes.
        assert!(raw_call_head(apart[3].as_bytes()).is_some_and(|h| h.3));
        assert!(raw_call_head(apart[2].as_bytes()).is_none());
    }

    #[test]
    fn a_call_reports_progress_and_is_answered() {
        let (mut s, now) = active("2025-11-25");
        let mut armed = None;
        let e = s
            .call(
                Status::Active,
                None,
                "echo",
                args(json!({"m": 1})),
                None,
                None,
                Duration::from_secs(5),
                4,
                7,
                now,
                |rpc, at| {
                    armed = Some((rpc, at));
                    99
                },
            )
            .expect("call");
        let (rpc, at) = armed.expect("a deadline was armed");
        assert_eq!(at, now + Duration::from_secs(5));
        let m = sent(&e);
        assert_eq!(m[0]["method"], "tools/call");
        assert_eq!(m[0]["id"], rpc);
        assert_eq!(m[0]["params"]["_meta"]["progressToken"], format!("t:{rpc}"));
        assert_eq!(s.calls_in_flight(), 1);
        let progress = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progressToken\":\"t:{rpc}\",\"progress\":1,\"total\":2,\"message\":\"half\"}}}}\n"
        );
        let e = feed(&mut s, progress.as_bytes(), Status::Active, now);
        assert!(
            matches!(&e[..], [Effect::Event(EventData::McpToolProgress { progress, total, message, .. })] if *progress == 1 && *total == 2 && message.as_deref() == Some("half")),
            "{e:?}"
        );
        // Progress for a token that is not one of our calls is ignored.
        let stray = b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"t:12345\",\"progress\":1}}\n";
        assert!(feed(&mut s, stray, Status::Active, now).is_empty());
        let answer = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{rpc},\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\"hi\"}}]}}}}\n"
        );
        let e = feed(
            &mut s,
            answer.as_bytes(),
            Status::Active,
            now + Duration::from_millis(3),
        );
        match &e[..] {
            [Effect::CancelTimer(99), Effect::ToolCall("ok", _, _), Effect::ReplyRaw(7, raw)] => {
                // The server's result bytes, as they came.
                assert_eq!(
                    raw.result(),
                    br#"{"content":[{"type":"text","text":"hi"}]}"#
                );
                assert_eq!((raw.tool.as_str(), raw.server.as_str()), ("echo", "t"));
                assert!(!raw.has_meta && !raw.has_result_type);
            }
            other => panic!("{other:?}"),
        }
        let Some(Effect::ReplyRaw(_, raw)) = e.into_iter().nth(2) else {
            unreachable!()
        };
        let v = raw.into_answer().expect("the result reads");
        assert_eq!(v["result"]["content"][0]["text"], "hi");
        assert_eq!(v["tool"], "echo");
        assert_eq!((s.calls, s.calls_in_flight()), ((1, 0, 0), 0));
        // Refusals: unknown tool, not serving, too many in flight, ending.
        let call = |s: &mut S, status, ending, tool: &str, max| {
            s.call(
                status,
                ending,
                tool,
                args(json!({})),
                None,
                None,
                Duration::from_secs(1),
                max,
                1,
                now,
                |_, _| 0,
            )
            .map(|_| ())
            .map_err(|e| e.code)
        };
        assert_eq!(
            call(&mut s, Status::Active, None, "nope", 4),
            Err(ErrorCode::ToolNotFound)
        );
        assert_eq!(
            call(&mut s, Status::Starting, None, "echo", 4),
            Err(ErrorCode::Conflict)
        );
        assert_eq!(
            call(&mut s, Status::Active, Some("x"), "echo", 4),
            Err(ErrorCode::Conflict)
        );
        assert_eq!(call(&mut s, Status::Active, None, "echo", 1), Ok(()));
        assert_eq!(
            call(&mut s, Status::Active, None, "echo", 1),
            Err(ErrorCode::Busy)
        );
        // The end of the run fails the call in flight.
        let e = s.end_run("exited with code 1", now);
        assert!(
            matches!(&e[..], [Effect::CancelTimer(0), Effect::ToolCall("server_exited", _, _), Effect::Reply(1, Err(err))] if err.code == ErrorCode::ServerExited),
            "{e:?}"
        );
        assert_eq!(s.calls_in_flight(), 0);
    }

    #[test]
    fn a_call_past_its_deadline_times_out_and_is_cancelled_at_the_server() {
        let (mut s, now) = active("2025-03-26");
        let mut rpc = 0;
        s.call(
            Status::Active,
            None,
            "echo",
            args(json!({})),
            None,
            None,
            Duration::from_millis(50),
            4,
            3,
            now,
            |r, _| {
                rpc = r;
                5
            },
        )
        .expect("call");
        let e = s.on_call_deadline(rpc, now + Duration::from_millis(50));
        match &e[..] {
            [Effect::ToolCall("timeout", _, _), Effect::Reply(3, Err(err)), Effect::Send(b)] => {
                assert_eq!(err.code, ErrorCode::Timeout);
                let m: Value = serde_json::from_slice(b).expect("json");
                assert_eq!(m["method"], "notifications/cancelled");
                assert_eq!(m["params"]["requestId"], rpc);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.calls, (0, 0, 1));
        // Its late answer is dropped; a second deadline does nothing.
        let late = format!("{{\"jsonrpc\":\"2.0\",\"id\":{rpc},\"result\":{{}}}}\n");
        assert!(feed(&mut s, late.as_bytes(), Status::Active, now).is_empty());
        assert!(s.on_call_deadline(rpc, now).is_empty());
    }

    #[test]
    fn a_call_with_a_callers_token_reports_progress_by_it_and_is_cancelled_by_it() {
        let (mut s, now) = active("2025-11-25");
        let mut rpc = 0;
        let mut call = |s: &mut S, token: &str, reply| {
            s.call(
                Status::Active,
                None,
                "echo",
                args(json!({})),
                None,
                Some(token.to_string()),
                Duration::from_secs(5),
                4,
                reply,
                now,
                |r, _| {
                    rpc = r;
                    40 + u64::from(reply)
                },
            )
        };
        let e = call(&mut s, "vsm/gateway/7", 1).expect("call");
        assert_eq!(
            sent(&e)[0]["params"]["_meta"]["progressToken"],
            "vsm/gateway/7"
        );
        // A token already in flight is refused (progress could not be told apart).
        let again = call(&mut s, "vsm/gateway/7", 2)
            .map(|_| ())
            .map_err(|e| e.code);
        assert_eq!(again, Err(ErrorCode::Conflict));
        let progress = b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"vsm/gateway/7\",\"progress\":1}}\n";
        let e = feed(&mut s, progress, Status::Active, now);
        assert!(
            matches!(&e[..], [Effect::Event(EventData::McpToolProgress { progress_token, .. })] if progress_token == "vsm/gateway/7"),
            "{e:?}"
        );
        assert!(s.cancel("vsm/gateway/8", "nobody", now).is_none());
        let e = s
            .cancel("vsm/gateway/7", "the client disconnected", now)
            .expect("in flight");
        match &e[..] {
            [Effect::CancelTimer(41), Effect::ToolCall("cancelled", _, _), Effect::Reply(1, Err(err)), Effect::Send(b)] =>
            {
                assert_eq!(err.code, ErrorCode::Conflict);
                let m: Value = serde_json::from_slice(b).expect("json");
                assert_eq!(m["method"], "notifications/cancelled");
                assert_eq!(m["params"]["requestId"], rpc);
                assert_eq!(m["params"]["reason"], "the client disconnected");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!((s.calls, s.calls_in_flight()), ((0, 1, 0), 0));
        // Its late answer is dropped, its token free again.
        let late = format!("{{\"jsonrpc\":\"2.0\",\"id\":{rpc},\"result\":{{}}}}\n");
        assert!(feed(&mut s, late.as_bytes(), Status::Active, now).is_empty());
        assert!(s.cancel("vsm/gateway/7", "again", now).is_none());
    }

    #[test]
    fn server_requests_get_ping_answered_and_the_rest_refused() {
        let (mut s, now) = active("2024-11-05");
        let e = feed(
            &mut s,
            b"{\"jsonrpc\":\"2.0\",\"id\":\"p\",\"method\":\"ping\"}\n{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"sampling/createMessage\",\"params\":{}}\n",
            Status::Active,
            now,
        );
        let m = sent(&e);
        assert_eq!(m[0], json!({"jsonrpc": "2.0", "id": "p", "result": {}}));
        // Sampling is relayed only during a tool call: refused at once without one.
        assert_eq!(m[1]["id"], 9);
        assert_eq!(m[1]["error"]["code"], asks::NO_CLIENT);
        let why = m[1]["error"]["message"].as_str().unwrap_or_default();
        assert!(why.contains("no tool call is in flight"), "{why}");
        // roots/list is not relayed: method not found.
        let roots = b"{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"roots/list\"}\n";
        let m = sent(&feed(&mut s, roots, Status::Active, now));
        assert_eq!(m[0]["id"], 10);
        assert_eq!(m[0]["error"]["code"], -32601);
        // Our pings: answered, missed, and the run ends at the allowed number of misses.
        let ping = sent(&s.ping_round(3, now));
        assert_eq!(ping[0]["method"], "ping");
        let answer = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{{}}}}\n",
            ping[0]["id"]
        );
        let later = now + Duration::from_millis(7);
        let e = feed(&mut s, answer.as_bytes(), Status::Active, later);
        assert!(matches!(e[..], [Effect::PingAnswered]), "{e:?}");
        assert_eq!(s.ping.last_ms(), Some(7.0), "the round trip is measured");
        s.ping_round(3, now);
        let e = s.ping_round(3, now);
        assert!(
            matches!(e[0], Effect::PingMissed(1)) && sent(&e).len() == 1,
            "{e:?}"
        );
        s.ping_round(3, now);
        let e = s.ping_round(3, now);
        assert!(
            matches!(e[..], [Effect::PingMissed(3)]),
            "no new ping for an ending run: {e:?}"
        );
    }

    #[test]
    fn ping_latency_keeps_a_bounded_window_and_its_quantiles() {
        let mut p = PingLatency::default();
        assert_eq!((p.last_ms(), p.quantile_ms(0.5)), (None, None));
        for ms in 1..=100u64 {
            p.record(Duration::from_millis(ms));
        }
        // Only the latest 32 (69..=100) are kept.
        assert_eq!(p.last_ms(), Some(100.0));
        assert_eq!(p.quantile_ms(0.0), Some(69.0));
        assert_eq!(p.quantile_ms(0.5), Some(84.0));
        assert_eq!(p.quantile_ms(0.95), Some(99.0));
        assert_eq!(p.to_json()["samples"], PING_WINDOW);
    }

    #[test]
    fn garbage_lines_are_protocol_errors_and_a_flood_ends_the_run() {
        let (mut s, now) = active("2025-11-25");
        let e = feed(&mut s, b"hello\n   \n\x00\xff\n", Status::Active, now);
        assert_eq!(e.len(), 2, "blank lines are ignored: {e:?}");
        assert!(e.iter().all(
            |x| matches!(x, Effect::ProtocolError(w) if w.starts_with("protocol error: not JSON"))
        ));
        assert_eq!(s.protocol_errors, 2);
        // Errors 3 to 50 are counted; the 51st within a minute ends the run.
        for n in 3..=PERSISTENT_PROTOCOL_ERRORS + 1 {
            let e = feed(&mut s, b"{\"no\":\"rpc\"}\n", Status::Active, now);
            let ends = e.iter().any(|x| matches!(x, Effect::Misbehaved(_)));
            assert_eq!(ends, n > PERSISTENT_PROTOCOL_ERRORS, "error {n}: {e:?}");
        }
        // A new run forgets the flood, not the count.
        s.begin_run(now, PROBE_TIMEOUT);
        let e = feed(&mut s, b"nope\n", Status::Starting, now);
        assert!(matches!(e[..], [Effect::ProtocolError(_)]), "{e:?}");
        assert_eq!(s.protocol_errors, PERSISTENT_PROTOCOL_ERRORS as u64 + 2);
    }

    /// The id of the request of `method` among the sends.
    fn sent_id(effects: &E, method: &str) -> u64 {
        sent(effects)
            .iter()
            .find(|m| m["method"] == method)
            .and_then(|m| m["id"].as_u64())
            .unwrap_or_else(|| panic!("no {method} in {effects:?}"))
    }

    #[test]
    fn resources_templates_and_prompts_are_listed_when_offered_and_requests_forwarded() {
        let now = Instant::now();
        let mut s = S::new("t");
        begin_legacy(&mut s, now);
        let init = br#"{"jsonrpc":"2.0","id":2,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{},"resources":{"listChanged":true},"prompts":{}}}}
"#;
        feed(&mut s, init, Status::Starting, now);
        let e = feed(
            &mut s,
            b"{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"tools\":[]}}\n",
            Status::Initializing,
            now,
        );
        assert!(matches!(e[0], Effect::Listed(0)), "{e:?}");
        let resources = sent_id(&e, "resources/list");
        let templates = sent_id(&e, "resources/templates/list");
        let prompts = sent_id(&e, "prompts/list");
        // Pages are followed; each completed list that changed is an event.
        let page = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{resources},\"result\":{{\"resources\":[{{\"uri\":\"x://1\",\"name\":\"one\"}}],\"nextCursor\":\"2\"}}}}\n"
        );
        let e = feed(&mut s, page.as_bytes(), Status::Active, now);
        let m = sent(&e);
        assert_eq!(
            (m[0]["method"].as_str(), &m[0]["params"]["cursor"]),
            (Some("resources/list"), &json!("2"))
        );
        let next = m[0]["id"].clone();
        let page = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{next},\"result\":{{\"resources\":[{{\"uri\":\"x://2\",\"name\":\"two\"}}]}}}}\n"
        );
        let e = feed(&mut s, page.as_bytes(), Status::Active, now);
        assert!(
            matches!(
                &e[..],
                [Effect::Event(EventData::McpServerListChanged {
                    list: "resources",
                    count: 2,
                    ..
                })]
            ),
            "{e:?}"
        );
        let page = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{templates},\"result\":{{\"resourceTemplates\":[{{\"uriTemplate\":\"x://{{n}}\",\"name\":\"n\"}}]}}}}\n"
        );
        feed(&mut s, page.as_bytes(), Status::Active, now);
        // A server that refuses a list has none.
        let refused = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{prompts},\"error\":{{\"code\":-32601,\"message\":\"no\"}}}}\n"
        );
        assert!(feed(&mut s, refused.as_bytes(), Status::Active, now).is_empty());
        assert_eq!(s.list(Kind::Resources).len(), 2);
        assert_eq!(s.list(Kind::ResourceTemplates)[0]["name"], "n");
        assert!(s.list(Kind::Prompts).is_empty());

        // resources/list_changed lists resources and templates again, not prompts.
        let later = now + Duration::from_secs(2);
        let e = feed(
            &mut s,
            b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/resources/list_changed\"}\n",
            Status::Active,
            later,
        );
        let methods: Vec<Value> = sent(&e).iter().map(|m| m["method"].clone()).collect();
        assert_eq!(
            methods,
            [json!("resources/list"), json!("resources/templates/list")]
        );

        // Forwarded requests: answered with the server's result; past the deadline a
        // timeout and a cancellation; when the run ends, the server's exit.
        let forward = |s: &mut S, method, needs, reply| {
            s.forward(
                Status::Active,
                None,
                method,
                needs,
                (json!({"uri": "x://1"}), None),
                Duration::from_secs(1),
                4,
                reply,
                later,
                |_, _| 50 + u64::from(reply),
            )
        };
        let e = forward(&mut s, "resources/read", "resources", 1).expect("forwarded");
        let read = sent_id(&e, "resources/read");
        let answer = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{read},\"result\":{{\"contents\":[{{\"uri\":\"x://1\",\"text\":\"hi\"}}]}}}}\n"
        );
        let e = feed(&mut s, answer.as_bytes(), Status::Active, later);
        match &e[..] {
            [Effect::CancelTimer(51), Effect::Request("resources/read", "ok"), Effect::Reply(1, Ok(v))] =>
            {
                assert_eq!(v["result"]["contents"][0]["text"], "hi");
                assert_eq!(v["method"], "resources/read");
            }
            other => panic!("{other:?}"),
        }
        let e = forward(&mut s, "resources/read", "resources", 2).expect("forwarded");
        let late = sent_id(&e, "resources/read");
        let e = s.on_call_deadline(late, later + Duration::from_secs(1));
        assert!(
            matches!(&e[..], [Effect::Request("resources/read", "timeout"), Effect::Reply(2, Err(err)), Effect::Send(_)] if err.code == ErrorCode::Timeout),
            "{e:?}"
        );
        assert_eq!(sent(&e)[0]["params"]["requestId"], late);
        forward(&mut s, "resources/read", "resources", 3).expect("forwarded");
        assert_eq!(s.calls_in_flight(), 1, "forwarded requests count as calls");
        let e = s.end_run("exited with code 1", later);
        assert!(
            matches!(&e[..], [Effect::CancelTimer(53), Effect::Request("resources/read", "server_exited"), Effect::Reply(3, Err(err))] if err.code == ErrorCode::ServerExited),
            "{e:?}"
        );
        // What the server does not offer is refused at once, as is a server not serving.
        let mut s = S::new("u");
        let err = s
            .forward(
                Status::Active,
                None,
                "prompts/get",
                "prompts",
                (json!({}), None),
                Duration::from_secs(1),
                4,
                1,
                now,
                |_, _| 0,
            )
            .expect_err("no prompts offered");
        assert_eq!(err.code, ErrorCode::Conflict);
        assert!(err.message.contains("offers no prompts"), "{}", err.message);
        let err = s
            .forward(
                Status::Stopped,
                None,
                "prompts/get",
                "prompts",
                (json!({}), None),
                Duration::from_secs(1),
                4,
                1,
                now,
                |_, _| 0,
            )
            .expect_err("stopped");
        assert!(err.message.contains("not active"), "{}", err.message);
    }

    /// A line of JSON-RPC for `feed`.
    fn line(v: Value) -> Vec<u8> {
        let mut b = serde_json::to_vec(&v).expect("json");
        b.push(b'\n');
        b
    }

    /// A modern session: the probe answered with a DiscoverResult, one tool listed with
    /// `ttl_ms`.
    fn modern(list_changed: bool, ttl_ms: u64) -> (S, Instant) {
        let now = Instant::now();
        let mut s = S::new("m");
        let probe = sent(&s.begin_run(now, PROBE_TIMEOUT));
        let discover = json!({"jsonrpc": "2.0", "id": probe[0]["id"], "result": {
            "resultType": "complete", "supportedVersions": ["2026-07-28"],
            "capabilities": {"tools": {"listChanged": list_changed}},
            "_meta": {meta::SERVER_INFO: {"name": "modern-x", "version": "1"}},
            "instructions": "hi", "ttlMs": 0, "cacheScope": "public"}});
        let e = feed(&mut s, &line(discover), Status::Starting, now);
        assert!(
            matches!(&e[0], Effect::Handshake(v) if v == "2026-07-28"),
            "{e:?}"
        );
        let list = &sent(&e)[0];
        assert_eq!(list["method"], "tools/list");
        assert_eq!(
            list["params"]["_meta"][meta::PROTOCOL_VERSION],
            "2026-07-28"
        );
        assert_eq!(
            list["params"]["_meta"][meta::CLIENT_CAPABILITIES],
            json!({})
        );
        assert_eq!(
            list["params"]["_meta"][meta::CLIENT_INFO]["name"],
            "vsm-daemon"
        );
        let answer = json!({"jsonrpc": "2.0", "id": list["id"], "result": {
            "resultType": "complete", "tools": [{"name": "echo", "inputSchema": {}}],
            "ttlMs": ttl_ms, "cacheScope": "public"}});
        let e = feed(&mut s, &line(answer), Status::Initializing, now);
        assert!(matches!(e[0], Effect::Listed(1)), "{e:?}");
        let listen = sent(&e);
        if list_changed {
            assert_eq!(listen[0]["method"], "subscriptions/listen");
            assert_eq!(
                listen[0]["params"]["notifications"],
                json!({"toolsListChanged": true})
            );
            assert_eq!(
                listen[0]["params"]["_meta"][meta::PROTOCOL_VERSION],
                "2026-07-28"
            );
        } else {
            assert!(listen.is_empty(), "{listen:?}");
        }
        assert_eq!(s.era, Some(Era::Modern));
        assert_eq!(s.protocol_version.as_deref(), Some("2026-07-28"));
        assert_eq!(s.server_info["name"], "modern-x");
        assert_eq!(s.instructions.as_deref(), Some("hi"));
        assert_eq!(s.list_ttl_ms, Some(ttl_ms));
        (s, now)
    }

    fn call_echo(s: &mut S, now: Instant) -> (E, u64) {
        let mut rpc = 0;
        let e = s
            .call(
                Status::Active,
                None,
                "echo",
                args(json!({"m": 1})),
                None,
                None,
                Duration::from_secs(5),
                4,
                7,
                now,
                |r, _| {
                    rpc = r;
                    9
                },
            )
            .expect("call");
        (e, rpc)
    }

    #[test]
    fn a_modern_server_gets_the_wanted_log_level_in_the_meta_of_requests_for_clients() {
        let (mut s, now) = modern(true, 60_000);
        let (e, _) = call_echo(&mut s, now);
        assert!(sent(&e)[0]["params"]["_meta"]
            .get(meta::LOG_LEVEL)
            .is_none());
        s.log_level = Some("warning");
        let (e, _) = call_echo(&mut s, now);
        assert_eq!(sent(&e)[0]["params"]["_meta"][meta::LOG_LEVEL], "warning");
        let e = s.ping_round(3, now);
        let discover = &sent(&e)[0];
        assert_eq!(discover["method"], "server/discover");
        assert!(
            discover["params"]["_meta"].get(meta::LOG_LEVEL).is_none(),
            "{discover}"
        );
    }

    /// The `notifications/subscriptions/acknowledged` of listen `rpc`.
    fn acknowledged(rpc: u64) -> Vec<u8> {
        line(
            json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                    "params": {"_meta": {meta::SUBSCRIPTION_ID: rpc}, "notifications": {}}}),
        )
    }

    #[test]
    fn a_modern_servers_resource_subscriptions_ride_its_listen_replaced_as_they_change() {
        let (mut s, now) = modern(true, 60_000);
        let first = s.listen.expect("the listen for tool list changes").rpc;
        // Without `resources.subscribe` declared: refused, nothing sent.
        let refused = s.listen_to(Status::Active, None, "x://a", true, now);
        assert_eq!(refused.err().map(|e| e.code), Some(ErrorCode::Conflict));
        s.server_capabilities["resources"] = json!({"subscribe": true});
        // Two subscriptions before the first listen is acknowledged: held back, together.
        for uri in ["x://a", "x://b"] {
            let e = s
                .listen_to(Status::Active, None, uri, true, now)
                .expect("ok");
            assert!(sent(&e).is_empty(), "{e:?}");
        }
        let e = feed(&mut s, &acknowledged(first), Status::Active, now);
        let m = sent(&e);
        assert_eq!(m[0]["method"], "notifications/cancelled", "{m:?}");
        assert_eq!(m[0]["params"]["requestId"], first);
        assert_eq!(m[1]["method"], "subscriptions/listen");
        assert_eq!(
            m[1]["params"]["notifications"],
            json!({"toolsListChanged": true, "resourceSubscriptions": ["x://a", "x://b"]})
        );
        assert_eq!(
            m[1]["params"]["_meta"][meta::PROTOCOL_VERSION],
            "2026-07-28"
        );
        let second = m[1]["id"].as_u64().expect("id");
        // An acknowledgement of the cancelled one changes nothing.
        assert!(feed(&mut s, &acknowledged(first), Status::Active, now).is_empty());
        // Acknowledged (its id as a string, as some servers echo it): a change goes at once.
        let ack = line(
            json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                              "params": {"_meta": {meta::SUBSCRIPTION_ID: second.to_string()}}}),
        );
        assert!(feed(&mut s, &ack, Status::Active, now).is_empty());
        // The same subscription again changes nothing; ending one re-listens without it.
        let e = s
            .listen_to(Status::Active, None, "x://b", true, now)
            .expect("ok");
        assert!(e.is_empty(), "{e:?}");
        let m = sent(
            &s.listen_to(Status::Active, None, "x://a", false, now)
                .expect("ok"),
        );
        assert_eq!(m[0]["params"]["requestId"], second, "{m:?}");
        assert_eq!(
            m[1]["params"]["notifications"]["resourceSubscriptions"],
            json!(["x://b"])
        );
        // Its update becomes the event the session era's does.
        let update = line(
            json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
                                 "params": {"_meta": {meta::SUBSCRIPTION_ID: m[1]["id"]}, "uri": "x://b"}}),
        );
        let e = feed(&mut s, &update, Status::Active, now);
        assert!(
            matches!(&e[..], [Effect::Event(EventData::McpResourceUpdated { uri, .. })] if uri == "x://b"),
            "{e:?}"
        );
        // A server that never acknowledges: the change held back goes with a health round
        // once LISTEN_ACK_WAIT has passed.
        let e = s
            .listen_to(Status::Active, None, "x://c", true, now)
            .expect("ok");
        assert!(e.is_empty(), "{e:?}");
        let m = sent(&s.ping_round(3, now + LISTEN_ACK_WAIT));
        assert_eq!(m[0]["method"], "server/discover", "{m:?}");
        assert_eq!(m[1]["method"], "notifications/cancelled", "{m:?}");
        assert_eq!(
            m[2]["params"]["notifications"]["resourceSubscriptions"],
            json!(["x://b", "x://c"])
        );
        // The set outlives the run: the next run's first listen carries it. A server that is
        // down is not asked, but its subscription can end.
        let e = s
            .listen_to(Status::Backoff, None, "x://c", false, now)
            .expect("ok");
        assert!(e.is_empty(), "{e:?}");
        let e = s.listen_to(Status::Backoff, None, "x://d", true, now);
        assert_eq!(e.err().map(|e| e.code), Some(ErrorCode::Conflict));
        assert_eq!(s.subscriptions.iter().collect::<Vec<_>>(), ["x://b"]);
    }

    #[test]
    fn a_modern_server_gets_meta_on_every_request_and_discover_for_health() {
        let (mut s, now) = modern(true, 60_000);
        // A list change arrives on the listen stream, with its subscription id.
        let later = now + Duration::from_secs(2);
        let changed = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
            "params": {"_meta": {meta::SUBSCRIPTION_ID: 4}}});
        let e = feed(&mut s, &line(changed), Status::Active, later);
        assert_eq!(sent(&e)[0]["method"], "tools/list");
        // A call: the progress token and the era's _meta side by side.
        let (e, rpc) = call_echo(&mut s, later);
        let m = sent(&e);
        assert_eq!(m.len(), 1, "the list is fresh: no re-read {m:?}");
        assert_eq!(m[0]["params"]["_meta"]["progressToken"], format!("m:{rpc}"));
        assert_eq!(
            m[0]["params"]["_meta"][meta::PROTOCOL_VERSION],
            "2026-07-28"
        );
        // input_required is a clear tool error naming what was asked, not a wait.
        let asks = json!({"jsonrpc": "2.0", "id": rpc, "result": {
            "resultType": "input_required",
            "inputRequests": {"login": {"method": "elicitation/create",
                "params": {"mode": "form", "message": "Your GitHub name?", "requestedSchema": {}}}},
            "requestState": "abc"}});
        let e = feed(&mut s, &line(asks), Status::Active, later);
        match &e[..] {
            [Effect::CancelTimer(9), Effect::ToolCall("tool_error", _, _), Effect::Reply(7, Err(err))] =>
            {
                assert_eq!(err.code, ErrorCode::ToolError);
                assert!(err.message.contains("input_required"), "{}", err.message);
                assert!(
                    err.message
                        .contains("login: elicitation/create \"Your GitHub name?\""),
                    "{}",
                    err.message
                );
                let data = err.data.as_ref().expect("data");
                assert_eq!(data["result_type"], "input_required");
                assert_eq!(
                    data["input_requests"]["login"]["method"],
                    "elicitation/create"
                );
                // The call's time left (answered at once: all of its 5 s).
                assert_eq!(data["remaining_ms"], 5000);
            }
            other => panic!("{other:?}"),
        }
        // An unknown resultType is refused as invalid.
        let (_, rpc) = call_echo(&mut s, later);
        let odd = json!({"jsonrpc": "2.0", "id": rpc, "result": {"resultType": "weird"}});
        let e = feed(&mut s, &line(odd), Status::Active, later);
        assert!(
            matches!(&e[..], [_, Effect::ToolCall("mcp_error", _, _), Effect::Reply(7, Err(err))] if err.code == ErrorCode::McpError),
            "{e:?}"
        );
        // Health: server/discover with _meta, not ping.
        let e = s.ping_round(3, later);
        let m = sent(&e);
        assert_eq!(m[0]["method"], "server/discover");
        assert_eq!(
            m[0]["params"]["_meta"][meta::PROTOCOL_VERSION],
            "2026-07-28"
        );
        let answer =
            json!({"jsonrpc": "2.0", "id": m[0]["id"], "result": {"resultType": "complete"}});
        let e = feed(&mut s, &line(answer), Status::Active, later);
        assert!(matches!(e[..], [Effect::PingAnswered]), "{e:?}");
    }

    #[test]
    fn a_forwarded_request_carries_a_clients_input_to_a_modern_server_only_and_can_be_asked_input()
    {
        let now = Instant::now();
        let input = json!({"inputResponses": {"who": {"action": "accept"}},
                           "requestState": "g-1", "clientCapabilities": {"elicitation": {}}});
        let forward = |s: &mut S, input: Option<Value>| {
            let params = json!({"name": "greeting", "_meta": {"progressToken": "vsm/gateway/3"}});
            s.forward(
                Status::Active,
                None,
                "prompts/get",
                "prompts",
                (params, input),
                Duration::from_secs(5),
                4,
                1,
                now,
                |_, _| 70,
            )
            .expect("forwarded")
        };
        // A legacy server never sees the input (it could not know it).
        let init = br#"{"jsonrpc":"2.0","id":2,"result":{"protocolVersion":"2025-11-25","capabilities":{"prompts":{}}}}
"#;
        let mut s = S::new("p");
        begin_legacy(&mut s, now);
        feed(&mut s, init, Status::Starting, now);
        let m = &sent(&forward(&mut s, Some(input.clone())))[0];
        assert_eq!(
            m["params"],
            json!({"name": "greeting", "_meta": {"progressToken": "vsm/gateway/3"}})
        );
        // A modern one gets it in the params, the capabilities in `_meta`.
        let mut s = S::new("m");
        let probe = sent(&s.begin_run(now, PROBE_TIMEOUT));
        let discover = json!({"jsonrpc": "2.0", "id": probe[0]["id"], "result": {
            "resultType": "complete", "supportedVersions": ["2026-07-28"],
            "capabilities": {"tools": {}, "prompts": {}}, "ttlMs": 0, "cacheScope": "public"}});
        let list = sent(&feed(&mut s, &line(discover), Status::Starting, now));
        let answer = json!({"jsonrpc": "2.0", "id": list[0]["id"], "result": {
            "resultType": "complete", "tools": [], "ttlMs": 0, "cacheScope": "public"}});
        feed(&mut s, &line(answer), Status::Initializing, now);
        let e = forward(&mut s, Some(input));
        let m = &sent(&e)[0];
        let rpc = sent_id(&e, "prompts/get");
        assert_eq!(m["params"]["inputResponses"]["who"]["action"], "accept");
        assert_eq!(m["params"]["requestState"], "g-1");
        let meta = &m["params"]["_meta"];
        assert_eq!(meta[meta::CLIENT_CAPABILITIES], json!({"elicitation": {}}));
        assert_eq!(meta["progressToken"], "vsm/gateway/3");
        // Its input_required is the server's error with a call's data and the time left.
        let asks = json!({"jsonrpc": "2.0", "id": rpc, "result": {
            "resultType": "input_required",
            "inputRequests": {"who": {"method": "elicitation/create",
                "params": {"mode": "form", "message": "Your name?", "requestedSchema": {}}}},
            "requestState": "g-2"}});
        let later = now + Duration::from_secs(2);
        let e = feed(&mut s, &line(asks), Status::Active, later);
        match &e[..] {
            [Effect::CancelTimer(70), Effect::Request("prompts/get", "ok"), Effect::Reply(1, Err(err))] =>
            {
                assert_eq!(err.code, ErrorCode::McpError);
                assert!(
                    err.message
                        .contains("method prompts/get on m needs input the daemon cannot supply"),
                    "{}",
                    err.message
                );
                let data = err.data.as_ref().expect("data");
                assert_eq!(data["result_type"], "input_required");
                assert_eq!(data["method"], "prompts/get");
                assert_eq!(data["request_state"], "g-2");
                assert_eq!(
                    data["input_requests"]["who"]["method"],
                    "elicitation/create"
                );
                assert_eq!(data["remaining_ms"], 3000);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_modern_tool_list_is_read_again_on_use_once_its_bounded_ttl_passed() {
        // ttlMs 0: fresh for the floor, not re-read before every call.
        let (mut s, now) = modern(false, 0);
        let (e, _) = call_echo(&mut s, now + TTL_FLOOR - Duration::from_millis(1));
        assert_eq!(sent(&e).len(), 1);
        let (e, _) = call_echo(&mut s, now + TTL_FLOOR);
        let m = sent(&e);
        assert_eq!(
            (m[0]["method"].as_str(), m[1]["method"].as_str()),
            (Some("tools/call"), Some("tools/list"))
        );
        // Once, until that listing completes.
        let (e, _) = call_echo(&mut s, now + TTL_FLOOR);
        assert_eq!(sent(&e).len(), 1);
        // A day-long ttlMs is held for at most the ceiling.
        let (mut s, now) = modern(false, 86_400_000);
        let (e, _) = call_echo(&mut s, now + TTL_CEILING - Duration::from_secs(1));
        assert_eq!(sent(&e).len(), 1);
        let (e, _) = call_echo(&mut s, now + TTL_CEILING);
        assert_eq!(sent(&e).len(), 2);
    }

    #[test]
    fn a_server_that_dies_on_the_probe_gets_initialize_first_while_it_stays_legacy() {
        let now = Instant::now();
        let mut s = S::new("t");
        s.begin_run(now, PROBE_TIMEOUT);
        s.end_run("exited with code 1", now);
        assert!(s.skip_probe);
        let first = sent(&s.begin_run(now, PROBE_TIMEOUT));
        assert_eq!(first[0]["method"], "initialize");
        let id = first[0]["id"].clone();
        let ok = json!({"jsonrpc": "2.0", "id": id, "result": {"protocolVersion": "2025-11-25"}});
        feed(&mut s, &line(ok), Status::Starting, now);
        assert_eq!(s.era, Some(Era::Legacy));
        s.end_run("exited with code 1", now);
        assert!(s.skip_probe, "still legacy: no probe");
        // A modern server behind it refuses initialize with -32022: probed again, modern,
        // and the next run probes first.
        let first = sent(&s.begin_run(now, PROBE_TIMEOUT));
        let refused = json!({"jsonrpc": "2.0", "id": first[0]["id"], "error": {"code": -32022, "message": "modern only"}});
        let probe = sent(&feed(&mut s, &line(refused), Status::Starting, now));
        assert_eq!(probe[0]["method"], "server/discover");
        let found = json!({"jsonrpc": "2.0", "id": probe[0]["id"], "result": {"supportedVersions": ["2026-07-28"]}});
        feed(&mut s, &line(found), Status::Starting, now);
        s.end_run("exited", now);
        assert!(!s.skip_probe);
        assert_eq!(
            sent(&s.begin_run(now, PROBE_TIMEOUT))[0]["method"],
            "server/discover"
        );
    }

    #[test]
    fn the_probe_falls_back_on_silence_and_the_first_answer_decides() {
        // Silence: initialize follows at the deadline; its answer makes the run legacy and a
        // late probe answer is dropped.
        let now = Instant::now();
        let mut s = S::new("t");
        s.begin_run(now, PROBE_TIMEOUT);
        let init = sent(&s.on_probe_deadline());
        assert_eq!(
            (init[0]["method"].as_str(), init[0]["id"].as_u64()),
            (Some("initialize"), Some(2))
        );
        assert!(s.on_probe_deadline().is_empty(), "initialize goes once");
        let ok = json!({"jsonrpc": "2.0", "id": 2, "result": {"protocolVersion": "2025-06-18"}});
        let e = feed(&mut s, &line(ok), Status::Starting, now);
        assert!(
            matches!(&e[1], Effect::Handshake(v) if v == "2025-06-18"),
            "{e:?}"
        );
        assert_eq!(s.era, Some(Era::Legacy));
        let late =
            json!({"jsonrpc": "2.0", "id": 1, "result": {"supportedVersions": ["2026-07-28"]}});
        assert!(feed(&mut s, &line(late), Status::Initializing, now).is_empty());
        assert_eq!(s.era, Some(Era::Legacy));

        // A slow modern server: the late DiscoverResult comes first and wins; the refused
        // initialize is dropped.
        let mut s = S::new("t");
        s.begin_run(now, PROBE_TIMEOUT);
        s.on_probe_deadline();
        let late = json!({"jsonrpc": "2.0", "id": 1, "result": {"supportedVersions": ["2026-07-28"], "capabilities": {}}});
        let e = feed(&mut s, &line(late), Status::Starting, now);
        assert!(
            matches!(&e[0], Effect::Handshake(v) if v == "2026-07-28"),
            "{e:?}"
        );
        let refused =
            json!({"jsonrpc": "2.0", "id": 2, "error": {"code": -32022, "message": "modern only"}});
        assert!(feed(&mut s, &line(refused), Status::Initializing, now).is_empty());
        assert_eq!(s.era, Some(Era::Modern));

        // initialize refused with UnsupportedProtocolVersion once the probe is settled: probe again.
        let mut s = S::new("t");
        s.begin_run(now, PROBE_TIMEOUT);
        s.on_probe_deadline();
        let odd = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "?"}});
        assert!(
            feed(&mut s, &line(odd), Status::Starting, now).is_empty(),
            "initialize is already out"
        );
        let refused =
            json!({"jsonrpc": "2.0", "id": 2, "error": {"code": -32022, "message": "modern only"}});
        let again = sent(&feed(&mut s, &line(refused.clone()), Status::Starting, now));
        assert_eq!(again[0]["method"], "server/discover");

        // A modern server sharing no version with us: the run ends, no fallback.
        let mut s = S::new("t");
        s.begin_run(now, PROBE_TIMEOUT);
        let disjoint = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32022,
            "message": "Unsupported protocol version", "data": {"supported": ["2099-01-01"], "requested": "2026-07-28"}}});
        let e = feed(&mut s, &line(disjoint), Status::Starting, now);
        assert!(
            matches!(&e[..], [Effect::EndRun(why)] if why.contains("2099-01-01") && why.contains("2026-07-28")),
            "{e:?}"
        );
        // A DiscoverResult naming no modern version we speak: the handshake is tried.
        let mut s = S::new("t");
        s.begin_run(now, PROBE_TIMEOUT);
        let other =
            json!({"jsonrpc": "2.0", "id": 1, "result": {"supportedVersions": ["2099-01-01"]}});
        assert_eq!(
            sent(&feed(&mut s, &line(other), Status::Starting, now))[0]["method"],
            "initialize"
        );
    }

    /// A call in flight on `s`: (its request id, its progress token).
    fn call_in_flight(s: &mut S, now: Instant, token: &str) -> u64 {
        let mut armed = None;
        s.call(
            Status::Active,
            None,
            "echo",
            args(json!({})),
            None,
            Some(token.to_string()),
            Duration::from_secs(5),
            4,
            7,
            now,
            |rpc, _| {
                armed = Some(rpc);
                99
            },
        )
        .expect("call");
        armed.expect("armed")
    }

    #[test]
    fn a_servers_request_during_a_call_is_relayed_and_answered_once_with_its_own_id() {
        // Offered in initialize when relaying is on, not when it is off.
        let mut s = S::new("t");
        let now = Instant::now();
        s.skip_probe = true;
        let init = sent(&s.begin_run(now, PROBE_TIMEOUT));
        assert_eq!(
            init[0]["params"]["capabilities"],
            json!({"sampling": {}, "elicitation": {"form": {}, "url": {}}})
        );
        s.client_requests = false;
        let init = sent(&s.begin_run(now, PROBE_TIMEOUT));
        assert_eq!(init[0]["params"]["capabilities"], json!({}));

        let (mut s, now) = active("2025-11-25");
        let a = call_in_flight(&mut s, now, "vsm/gateway/1");
        let b = call_in_flight(&mut s, now, "vsm/gateway/2");
        let ask = b"{\"jsonrpc\":\"2.0\",\"id\":\"s1\",\"method\":\"sampling/createMessage\",\"params\":{\"maxTokens\":9}}\n";
        let e = feed(&mut s, ask, Status::Active, now);
        let first = match &e[..] {
            [Effect::Ask {
                ask,
                method,
                params,
                calls,
                others: false,
            }] => {
                assert_eq!(method, "sampling/createMessage");
                assert_eq!(params["maxTokens"], 9);
                assert_eq!(calls, &["vsm/gateway/1", "vsm/gateway/2"], "oldest first");
                *ask
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(s.asks_waiting(), 1);
        // The answer goes back with the server's id, once.
        let m = sent(&s.answer_ask(first, Ok(json!({"role": "assistant"}))));
        assert_eq!(
            m[0],
            json!({"jsonrpc": "2.0", "id": "s1", "result": {"role": "assistant"}})
        );
        assert!(s.answer_ask(first, Ok(json!({}))).is_empty());
        // Another waits while call `a` or `b` is in flight: `a` answers, `b` times out, and
        // then the server hears that nobody will answer.
        let ask =
            b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"elicitation/create\",\"params\":{}}\n";
        let e = feed(&mut s, ask, Status::Active, now);
        let second = match &e[..] {
            [Effect::Ask { ask, .. }] => *ask,
            other => panic!("{other:?}"),
        };
        let answer = format!("{{\"jsonrpc\":\"2.0\",\"id\":{a},\"result\":{{\"content\":[]}}}}\n");
        let e = feed(&mut s, answer.as_bytes(), Status::Active, now);
        assert!(sent(&e).is_empty(), "still tied to call b: {e:?}");
        assert_eq!(s.asks_waiting(), 1);
        let e = s.on_call_deadline(b, now + Duration::from_secs(5));
        let m = sent(&e);
        let refusal = m.iter().find(|m| m["id"] == 2).expect("answered");
        assert_eq!(refusal["error"]["code"], asks::NO_CLIENT);
        assert_eq!(s.asks_waiting(), 0);
        assert!(s.answer_ask(second, Ok(json!({}))).is_empty(), "too late");
        // Turned off while the run lasts: refused at once, not relayed.
        call_in_flight(&mut s, now, "vsm/gateway/3");
        s.client_requests = false;
        let ask =
            b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"elicitation/create\",\"params\":{}}\n";
        let m = sent(&feed(&mut s, ask, Status::Active, now));
        assert_eq!(m[0]["id"], 3);
        let why = m[0]["error"]["message"].as_str().unwrap_or_default();
        assert!(why.contains("gateway.client_requests"), "{why}");
        // The run's end forgets what waits.
        s.client_requests = true;
        let ask =
            b"{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"elicitation/create\",\"params\":{}}\n";
        let e = feed(&mut s, ask, Status::Active, now);
        let third = match &e[..] {
            [Effect::Ask { ask, .. }] => *ask,
            other => panic!("{other:?}"),
        };
        s.end_run("exited", now);
        assert_eq!(s.asks_waiting(), 0);
        assert!(s.answer_ask(third, Ok(json!({}))).is_empty());
    }

    #[test]
    fn a_modern_retry_carries_the_clients_input_and_capabilities() {
        let mut params = json!({"name": "ask", "arguments": {}, "_meta": {"progressToken": "p"}});
        retry_input(&mut params, None);
        assert!(params.get("inputResponses").is_none());
        let input = json!({"inputResponses": {"name": {"action": "accept"}},
                           "requestState": "ask-1",
                           "clientCapabilities": {"elicitation": {}}});
        retry_input(&mut params, Some(input));
        assert_eq!(params["requestState"], "ask-1");
        assert_eq!(params["inputResponses"]["name"]["action"], "accept");
        assert_eq!(
            params["_meta"][meta::CLIENT_CAPABILITIES],
            json!({"elicitation": {}})
        );
        assert_eq!(params["_meta"]["progressToken"], "p");
    }

    #[test]
    fn an_elicitation_complete_notification_goes_to_the_gateway_only_when_offered() {
        let (mut s, now) = active("2025-11-25");
        let note = b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/elicitation/complete\",\"params\":{\"elicitationId\":\"e1\"}}\n";
        let e = feed(&mut s, note, Status::Active, now);
        assert!(
            matches!(&e[..], [Effect::Notify { method, params }] if method == asks::ELICITATION_COMPLETE && params["elicitationId"] == "e1"),
            "{e:?}"
        );
        // Without an id, or with one too long: not passed on.
        let bad = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/elicitation/complete\",\"params\":{{\"elicitationId\":\"{}\"}}}}\n",
            "x".repeat(asks::ELICITATION_ID_MAX + 1)
        );
        assert!(feed(&mut s, bad.as_bytes(), Status::Active, now).is_empty());
        // A run that offered no client capabilities passes nothing on.
        let mut s = S::new("t");
        s.client_requests = false;
        s.skip_probe = true;
        s.begin_run(now, PROBE_TIMEOUT);
        assert!(feed(&mut s, note, Status::Active, now).is_empty());
    }
}
