//! The gateway room: the daemon as one MCP server at `/mcp` (Streamable HTTP, protocol
//! 2025-11-25, with 2025-06-18 and 2025-03-26 accepted), offering the tools, prompts,
//! resources and resource templates of every active server it supervises (see [`catalog`])
//! and forwarding calls (`tools/call`, `prompts/get`, `resources/read`) to the MCP room
//! through the command layer, so a call here is exactly a `tools/call` of the REST API: the
//! same per-call deadline, the same fast refusal when the server is not active.
//!
//! Transport: `POST /mcp` carries one JSON-RPC message; requests are answered with
//! `application/json`, notifications and responses with 202. A `tools/call` that asked for
//! progress (`params._meta.progressToken`) from a client that accepts `text/event-stream`
//! is answered as an SSE stream once the server reports progress: the progress
//! notifications (with the client's token), then the response. `initialize` opens a session
//! (`Mcp-Session-Id`); every later message names it and, when it sends
//! `MCP-Protocol-Version`, that must be a version we speak (400 otherwise). `GET /mcp`
//! opens the session's one server-to-client SSE stream (`notifications/tools/list_changed`,
//! `resources/list_changed`, `prompts/list_changed`, each when its part of the aggregate
//! changed), whose events carry ids: a GET with `Last-Event-ID` gets what it missed from the
//! session's replay buffer first. Open streams get a `: keep-alive` comment every
//! `gateway.keepalive_ms`. `DELETE /mcp` ends the session. The access layer has already
//! checked Host, Origin (403), the bearer token (401) and the body size before a request
//! gets here.
//!
//! Logging, completions and resource subscriptions are relayed: a session's
//! `logging/setLevel` is kept and each server is asked for the most verbose level any session
//! wants (once per change and run); servers' log messages (`mcp_server_log` events) go to the
//! sessions whose level admits them, logger prefixed with the server id, on the stream of the
//! session's call to that server or else its GET stream; `completion/complete` goes to the
//! owner of the prompt or resource template; `resources/subscribe` is held once per server and
//! URI for all sessions (reference-counted, ended with the last holder, renewed for a new
//! run), and updates (`mcp_resource_updated` events) go to every holder.
//!
//! Calls are forwarded with a progress token of the daemon's own (`vsm/gateway/TAG`, unique
//! over the daemon's life, since clients share servers); a client's
//! `notifications/cancelled`, its POST's connection closing before the answer, and the end
//! of its session cancel the call at the server (the MCP room sends
//! `notifications/cancelled` with the id it used) and no response is sent for it. A server's
//! `sampling/createMessage` or `elicitation/create` during a call goes to the client on that
//! call's stream and its POSTed response back to the server (`gateway.client_requests`, see
//! [`ask`]); so do the input requests of a 2026-07-28 server's `input_required` answer to a
//! call, `prompts/get` or `resources/read`, whose responses go back in the request asked
//! again (see [`input`]).
//!
//! Invariants: sessions are at most `gateway.max_sessions` (an `initialize` beyond is refused,
//! never evicts a live client) and a session without requests and without an open stream
//! for `gateway.session_idle_ms` ends; each session has at most one GET stream; calls in
//! flight are at most [`MAX_CALLS_PER_SESSION`] per session and [`MAX_CALLS`] in all;
//! every forwarded call is answered exactly once (the MCP room answers every request it
//! takes) and each client request gets one HTTP answer (a response, a stream, or a 202
//! when it was cancelled); replay buffers hold at most [`REPLAY_EVENTS`] events and
//! [`REPLAY_BYTES`] bytes per session; progress goes out at most once per
//! [`PROGRESS_INTERVAL`] per call (the latest is held, not lost); resource subscriptions are at most
//! [`MAX_SUBSCRIPTIONS_PER_SESSION`] per session and [`MAX_SUBSCRIPTIONS`] distinct ones,
//! each (server, URI) held upstream exactly while some session or listen stream holds it;
//! completions pass back at most [`MAX_COMPLETION_VALUES`] values.

pub mod ask;
mod body;
pub mod catalog;
pub mod input;
pub mod modern;
pub mod ops;
pub mod stdio;

use crate::api::{
    Answer, ConnId, DaemonRequest, ErrorCode, McpRequest, ReplyTo, Request, VarietyRequest,
};
use crate::config::{Config, GatewayConfig};
use crate::mcp::jsonrpc::{self, Arguments};
use crate::mcp::session::{log_rank, LOG_LEVELS};
use crate::net::http;
use crate::room::{Effect, Room, RoomCx};
use catalog::{Catalog, Offer, Target};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The protocol versions `/mcp` speaks, newest first (the first is offered to clients that
/// ask for one we do not know).
pub const VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];

/// Calls in flight for one session.
pub const MAX_CALLS_PER_SESSION: usize = 64;
/// Calls in flight for all sessions together.
pub const MAX_CALLS: usize = 1024;
/// Events of the GET stream a session keeps for a client that reconnects.
pub const REPLAY_EVENTS: usize = 64;
/// Bytes of those events a session keeps.
pub const REPLAY_BYTES: usize = 256 * 1024;
/// Shortest time between two progress notifications of one call sent to the client: one
/// that comes sooner is held, replaced by any newer one, and sent when the interval is over
/// or just before the answer (the client always gets the latest, never after the response).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(50);
/// The longest progress token of a client that is passed back (a longer one is not used).
const TOKEN_MAX: usize = 256;
/// The daemon's own progress tokens (a `/` is in no server id, so no token of the MCP
/// room's own, `SERVER:RPC`, looks like one).
const TOKEN_PREFIX: &str = "vsm/gateway/";

/// The progress token the server sees for call `tag`: `TOKEN_PREFIX` and the tag in decimal,
/// written without the formatting machinery (once per call).
fn token_of(tag: u64) -> String {
    let mut tmp = [0u8; 20];
    let digits = crate::sys::decimal(tag, &mut tmp);
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + digits.len());
    token.push_str(TOKEN_PREFIX);
    // ASCII digits: always UTF-8.
    token.push_str(std::str::from_utf8(digits).unwrap_or_default());
    token
}

/// Longest resource URI `resources/read` routes (it is matched against every template).
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Resource subscriptions one session may hold.
pub const MAX_SUBSCRIPTIONS_PER_SESSION: usize = 64;
/// Distinct (server, URI) subscriptions held upstream for all sessions together.
pub const MAX_SUBSCRIPTIONS: usize = 1024;
/// Completion values passed back at most (the specification's limit).
pub const MAX_COMPLETION_VALUES: usize = 100;
/// The level servers are set to once no session wants their log messages any more (only
/// servers this gateway had set; the others keep their own default): `warning`.
const IDLE_LOG_LEVEL: usize = 3;

/// JSON-RPC error codes.
mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// A resource URI no active server offers (the MCP specification's code).
    pub const RESOURCE_NOT_FOUND: i64 = -32002;
    /// Transport-level refusals (no session, wrong version); the SDKs use it too.
    pub const SERVER_ERROR: i64 = -32000;
    /// The session named is unknown or over.
    pub const SESSION_NOT_FOUND: i64 = -32001;
    /// A tool call needs the user to open URLs first (2025-11-25 URL elicitation).
    pub const URL_ELICITATION_REQUIRED: i64 = -32042;
}

/// The room's timers (sessions are swept when requests arrive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Time to send open streams a keep-alive comment.
    KeepAlive,
    /// The progress held back for a call (see [`PROGRESS_INTERVAL`]) is due.
    Progress(u64),
    /// The deadline of a call collecting its client's input (see [`input`]).
    Input(u64),
}

/// The room has no worker jobs.
#[derive(Debug)]
pub enum Job {}

/// What the gateway asks of the wiring: the common effects and the transport's own steps.
#[derive(Debug)]
pub enum Output {
    /// A common effect (asking the MCP room, events).
    Effect(Effect),
    /// Answer the HTTP request `reply` names with this response.
    Http {
        /// The request (an [`ReplyTo::Http`]).
        reply: ReplyTo,
        /// The response.
        response: http::Response,
    },
    /// Turn the request into an SSE stream (the session's GET stream).
    Stream {
        /// The request (an [`ReplyTo::Http`]).
        reply: ReplyTo,
    },
    /// Write SSE bytes to an open stream.
    Push {
        /// The stream's connection.
        conn: ConnId,
        /// Whole SSE events.
        bytes: Vec<u8>,
    },
    /// Close a stream (its session ended).
    Close {
        /// The stream's connection.
        conn: ConnId,
    },
    /// End a stream once what was pushed is written (a POST answered as a stream).
    End {
        /// The stream's connection.
        conn: ConnId,
    },
}

impl From<Effect> for Output {
    fn from(e: Effect) -> Self {
        Output::Effect(e)
    }
}

/// One client's session.
#[derive(Debug)]
struct Session {
    /// Its id (the map's key), shared with its calls in flight.
    id: Rc<str>,
    /// The negotiated protocol version.
    version: &'static str,
    /// Last request.
    last_seen: Instant,
    /// The open GET stream, if any.
    stream: Option<ConnId>,
    /// Calls in flight.
    calls: usize,
    /// The id the next GET-stream event gets.
    next_event: u64,
    /// The latest GET-stream events (id, bytes), for a client that reconnects.
    replay: VecDeque<(u64, Vec<u8>)>,
    /// Bytes in `replay`.
    replay_bytes: usize,
    /// The client capabilities relaying looks at (see [`ask`]).
    declared: ask::Declared,
    /// The least severe log level the client wants (a rank in `LOG_LEVELS`), once it sent
    /// `logging/setLevel`; until then it gets no log messages.
    log_level: Option<usize>,
    /// The resources it subscribed to: (server, URI).
    subscriptions: BTreeSet<(String, String)>,
}

impl Session {
    fn new(id: &str, version: &'static str, now: Instant) -> Session {
        Session {
            id: id.into(),
            version,
            last_seen: now,
            stream: None,
            calls: 0,
            next_event: 1,
            replay: VecDeque::new(),
            replay_bytes: 0,
            declared: ask::Declared::default(),
            log_level: None,
            subscriptions: BTreeSet::new(),
        }
    }

    /// Gives `message` the next event id, keeps it for replay (the oldest go beyond the
    /// bounds) and returns its SSE bytes.
    fn record(&mut self, message: &Value) -> Vec<u8> {
        let id = self.next_event;
        self.next_event += 1;
        let bytes = format!("id: {id}\nevent: message\ndata: {message}\n\n").into_bytes();
        self.replay_bytes += bytes.len();
        self.replay.push_back((id, bytes.clone()));
        while self.replay.len() > REPLAY_EVENTS || self.replay_bytes > REPLAY_BYTES {
            match self.replay.pop_front() {
                Some((_, b)) => self.replay_bytes -= b.len(),
                None => break,
            }
        }
        bytes
    }

    /// The events after `last` (a `Last-Event-ID`), when the buffer still holds all of them;
    /// `None` when it does not (too old, or not an id this session gave): start afresh.
    fn missed_since(&self, last: u64) -> Option<Vec<u8>> {
        let first = self.replay.front().map_or(self.next_event, |(id, _)| *id);
        if last >= self.next_event || last + 1 < first {
            return None;
        }
        let mut out = Vec::new();
        for (_, bytes) in self.replay.iter().filter(|(id, _)| *id > last) {
            out.extend_from_slice(bytes);
        }
        Some(out)
    }
}

/// What a forwarded request was, which says how its answer becomes a JSON-RPC result.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Forwarded {
    /// A server's tool: its `CallToolResult`, or a tool error saying why not.
    Tool,
    /// One of the daemon's own tools: a JSON document, as structured content.
    Own,
    /// `resources/read`, `prompts/get`, `resources/(un)subscribe`: the server's result, or a
    /// JSON-RPC error.
    Request,
    /// `completion/complete`: as `Request`, with at most [`MAX_COMPLETION_VALUES`] values.
    Complete,
}

/// A forwarded call waiting for its answer.
#[derive(Debug)]
struct Pending {
    reply: ReplyTo,
    /// The client's JSON-RPC id.
    id: Value,
    what: Forwarded,
    /// The session it belongs to (empty: none, a 2026-07-28 request).
    session: Rc<str>,
    /// The server it went to (`None`: one of the daemon's own tools, nothing to cancel).
    server: Option<Rc<str>>,
    /// The client's progress token, when it asked for progress and accepts an SSE answer.
    progress: Option<Value>,
    /// When progress last went to the client.
    progress_sent: Option<Instant>,
    /// The latest progress that came sooner than [`PROGRESS_INTERVAL`] after the one sent:
    /// sent when the interval is over or before the answer, whichever comes first (a newer one
    /// replaces it, so the client always ends up with the latest).
    progress_held: Option<Value>,
    /// Whether the answer became an SSE stream (progress or log messages went out on it).
    streaming: bool,
    /// Whether the client accepts an SSE answer, for a request that went to a server: its
    /// server's log messages for this session, and its requests to the client (see [`ask`]),
    /// go on it while it is in flight.
    sse: bool,
    /// Whether it came as a 2026-07-28 request (the result says `resultType`).
    modern: bool,
    /// The log level a 2026-07-28 call asked for (`_meta` `io.modelcontextprotocol/logLevel`,
    /// a rank in `LOG_LEVELS`): its server's log messages at that level or above go on its
    /// stream.
    log_level: Option<usize>,
    /// What asking it again takes, for a session-era call that a 2026-07-28 server may
    /// answer with `input_required` (see [`input`]).
    retry: Option<Box<input::Retry>>,
}

/// What a forwarded request's answer will need, besides the request it answers.
#[derive(Debug)]
struct Waiting {
    what: Forwarded,
    session: Rc<str>,
    /// The server a tool call, `resources/read`, `prompts/get` or `completion/complete` went
    /// to (what a cancel is sent to); `None` for the daemon's own tools and for
    /// `resources/(un)subscribe`, which the MCP room's deadline ends.
    server: Option<Rc<str>>,
    progress: Option<Value>,
    /// Whether the client accepts an SSE answer.
    sse: bool,
    /// The log level a 2026-07-28 call asks for.
    log_level: Option<usize>,
    /// What asking it again takes (see [`input`]).
    retry: Option<Box<input::Retry>>,
}

/// A server as the gateway last heard of it: id, status, and (when it serves) the tools the
/// capability policy lets it offer, its resources, resource templates and prompts.
#[derive(Debug)]
struct Offered {
    id: String,
    status: &'static str,
    serves: bool,
    /// Its run (a new one after each start).
    run: u64,
    tools: Vec<Value>,
    /// Its tools the capability policy blocks: (tool, blocked capabilities).
    blocked: Vec<(String, Vec<String>)>,
    resources: Vec<Value>,
    resource_templates: Vec<Value>,
    prompts: Vec<Value>,
}

/// Hashes the gateway's tags: numbers it hands out in sequence itself, so no peer chooses
/// them to collide. One multiply (an odd constant keeps the low bits distinct for
/// consecutive tags) instead of SipHash.
#[derive(Debug, Default)]
struct TagHasher(u64);

impl std::hash::Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Hashes session ids: 8 bytes at a time, one multiply each, instead of SipHash. The ids
/// are the gateway's own random tokens, so the keys the map holds are spread whatever the
/// hash; an id a client makes up finds no session, and the map holds at most
/// `gateway.max_sessions` of them, which bounds what a collision could cost.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // The high bits of the products into the low ones, which pick the bucket.
        (self.0 ^ (self.0 >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.write_u64(u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.write_u64(u64::from(b));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(23) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The `/mcp` endpoint.
#[derive(Debug)]
pub struct Gateway {
    settings: GatewayConfig,
    sessions: HashMap<String, Session, BuildHasherDefault<IdHasher>>,
    /// The session of a request that has none (a 2026-07-28 one): empty, made once.
    unsessioned: Rc<str>,
    /// Every server's id, status and (when active) the tools the capability policy lets it
    /// offer, as the MCP room last reported them.
    servers: Vec<Offered>,
    /// The capability policy, from the configuration.
    policy: crate::variety::policy::Policy,
    catalog: Catalog,
    pending: HashMap<u64, Pending, BuildHasherDefault<TagHasher>>,
    next_tag: u64,
    /// Whether the keep-alive timer is armed.
    keepalive: bool,
    /// Open `subscriptions/listen` streams (2026-07-28, see [`modern`]).
    listeners: Vec<modern::Listener>,
    /// Servers' requests relayed to clients, waiting for their responses (see [`ask`]).
    asks: ask::Asks,
    /// Resource subscriptions held upstream: (server, URI) and the sessions that hold them
    /// (one upstream subscription however many sessions).
    subscribed: BTreeMap<(String, String), BTreeSet<String>>,
    /// `resources/subscribe` requests in flight: tag, (server, URI) and the session (a
    /// refusal undoes its subscription).
    subscribing: HashMap<u64, ((String, String), String)>,
    /// Per serving server: the run seen and the log level asked of it in that run.
    upstream: HashMap<String, Upstream>,
    /// Resource subscriptions of listen streams that closed, to let go of: (key, holder).
    closed_listens: Vec<((String, String), String)>,
}

/// What the gateway asked of one server's run.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Upstream {
    run: u64,
    /// The log level set (a rank in `LOG_LEVELS`), if one was.
    level: Option<usize>,
}

/// Why a message is refused before it is handled: HTTP status, JSON-RPC code, message.
type Refusal = (u16, i64, String);

impl Gateway {
    /// A gateway with no sessions and no servers yet.
    pub fn new(config: &Config) -> Gateway {
        let settings = &config.gateway;
        let catalog = Catalog::build([], &settings.tool_separator, &settings.daemon_tools);
        Gateway {
            settings: settings.clone(),
            sessions: HashMap::default(),
            unsessioned: Rc::from(""),
            servers: Vec::new(),
            policy: crate::variety::policy::Policy::new(config),
            catalog,
            pending: HashMap::default(),
            next_tag: 1,
            keepalive: false,
            listeners: Vec::new(),
            asks: ask::Asks::default(),
            subscribed: BTreeMap::new(),
            subscribing: HashMap::new(),
            upstream: HashMap::new(),
            closed_listens: Vec::new(),
        }
    }

    /// Open sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Forgets streams whose connection closed (`open` tells), so that their sessions can
    /// expire and a client may open a new stream.
    pub fn prune_streams(&mut self, open: impl Fn(ConnId) -> bool) {
        for s in self.sessions.values_mut() {
            if s.stream.is_some_and(|c| !open(c)) {
                s.stream = None;
            }
        }
        let (kept, closed): (Vec<_>, Vec<_>) = self.listeners.drain(..).partition(|l| open(l.conn));
        self.listeners = kept;
        // Their resource subscriptions are let go of with the next step that can ask.
        for l in closed {
            let holder = l.holder();
            self.closed_listens
                .extend(l.resources.into_iter().map(|k| (k, holder.clone())));
        }
    }

    /// Lets go of the resource subscriptions of listen streams that closed.
    fn release_closed_listens(&mut self, cx: &mut RoomCx<'_, Self>) {
        for (key, holder) in std::mem::take(&mut self.closed_listens) {
            self.release(cx, &key, &holder);
        }
    }

    /// Whether calls are in flight, or listen streams hold resource subscriptions (the
    /// wiring then reports connections that went away).
    pub fn has_calls(&self) -> bool {
        !self.pending.is_empty() || self.listeners.iter().any(|l| !l.resources.is_empty())
    }

    /// Connections went away (`gone` tells which): calls whose client's POST is among them
    /// are cancelled at their server (their answer could reach nobody), and their GET
    /// streams are forgotten.
    pub fn on_hangups(&mut self, cx: &mut RoomCx<'_, Self>, gone: impl Fn(ConnId) -> bool) {
        self.prune_streams(|c| !gone(c));
        self.release_closed_listens(cx);
        let tags: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| matches!(p.reply, ReplyTo::Http { conn, .. } if gone(conn)))
            .map(|(tag, _)| *tag)
            .collect();
        for tag in tags {
            self.cancel(cx, tag, "the client disconnected", None);
        }
    }

    /// Ends call `tag` before its answer: its server is told (the MCP room sends
    /// `notifications/cancelled` with its own request id) and the client's request gets
    /// `answer` if one is given, otherwise nothing (a 202, or the end of its stream).
    fn cancel(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64, reason: &str, answer: Option<Value>) {
        let Some(p) = self.take_pending(tag) else {
            return;
        };
        self.end_asks(cx, tag, &p);
        log::debug!("/mcp call {tag} cancelled: {reason}");
        // A call collecting its client's input is at no server.
        let at_server = p
            .server
            .filter(|_| !p.retry.as_ref().is_some_and(|r| r.collecting()));
        if let Some(server) = at_server {
            let ask = self.next_tag;
            self.next_tag += 1;
            cx.ask(
                ask,
                Request::Mcp(McpRequest::Cancel {
                    id: server.to_string(),
                    progress_token: token_of(tag),
                    reason: reason.to_string(),
                }),
            );
        }
        let conn = match p.reply {
            ReplyTo::Http { conn, .. } => conn,
            _ => return,
        };
        match (p.streaming, answer) {
            (true, answer) => {
                if let Some(a) = answer {
                    cx.emit(Output::Push {
                        conn,
                        bytes: sse_message(&a),
                    });
                }
                cx.emit(Output::End { conn });
            }
            (false, Some(a)) => cx.emit(Output::Http {
                reply: p.reply,
                response: http::Response::json(200, a.to_string().into_bytes()),
            }),
            (false, None) => accepted(cx, p.reply),
        }
    }

    /// Removes call `tag` from the waiting ones (and from its session's count).
    fn take_pending(&mut self, tag: u64) -> Option<Pending> {
        if !self.subscribing.is_empty() {
            self.subscribing.remove(&tag);
        }
        let p = self.pending.remove(&tag)?;
        // A 2026-07-28 call has no session.
        if !p.session.is_empty() {
            if let Some(s) = self.sessions.get_mut(&*p.session) {
                s.calls = s.calls.saturating_sub(1);
            }
        }
        Some(p)
    }

    /// Ends session `id` (its client said so, or it expired): its stream closes and its
    /// calls in flight are cancelled, each answered with a "session ended" error.
    fn end_session(&mut self, cx: &mut RoomCx<'_, Self>, id: &str, why: &str) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        if let Some(conn) = session.stream {
            cx.emit(Output::Close { conn });
        }
        for key in &session.subscriptions {
            self.release(cx, key, id);
        }
        if session.log_level.is_some() {
            self.sync_levels(cx);
        }
        if session.calls > 0 {
            let tags: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| *p.session == *id)
                .map(|(tag, _)| *tag)
                .collect();
            for tag in tags {
                let client_id = self.pending.get(&tag).map(|p| p.id.clone());
                let answer = client_id.map(|cid| {
                    rpc_error(&cid, code::SESSION_NOT_FOUND, &format!("the session {why}"))
                });
                self.cancel(cx, tag, &format!("the client's session {why}"), answer);
            }
        }
        log::debug!("/mcp session {id} {why}");
    }

    /// Arms the keep-alive timer unless it is.
    fn keep_alive(&mut self, cx: &mut RoomCx<'_, Self>, now: Instant) {
        if !self.keepalive {
            self.keepalive = true;
            let every = Duration::from_millis(self.settings.keepalive_ms);
            cx.timers().insert(now + every, Timer::KeepAlive);
        }
    }

    /// The open streams: GET streams and POSTs answered as streams.
    fn streams(&self) -> impl Iterator<Item = ConnId> + '_ {
        let gets = self.sessions.values().filter_map(|s| s.stream);
        let posts = self.pending.values().filter_map(|p| match p.reply {
            ReplyTo::Http { conn, .. } if p.streaming => Some(conn),
            _ => None,
        });
        let listens = self.listeners.iter().map(|l| l.conn);
        gets.chain(posts).chain(listens)
    }

    fn rebuild(&mut self, cx: &mut RoomCx<'_, Self>) {
        let sep = &self.settings.tool_separator;
        let catalog = Catalog::build(
            self.servers
                .iter()
                .map(|s| (s.id.as_str(), s.tools.as_slice())),
            sep,
            &self.settings.daemon_tools,
        )
        .with_blocked(
            self.servers.iter().flat_map(|s| {
                s.blocked
                    .iter()
                    .map(move |(tool, caps)| (s.id.as_str(), tool.as_str(), caps.as_slice()))
            }),
            sep,
        )
        .with_offers(
            self.servers.iter().filter(|s| s.serves).map(|s| Offer {
                server: &s.id,
                resources: &s.resources,
                resource_templates: &s.resource_templates,
                prompts: &s.prompts,
            }),
            sep,
        );
        if catalog == self.catalog {
            return;
        }
        let mut changed = Vec::new();
        if !catalog.same_tools(&self.catalog) {
            changed.push("notifications/tools/list_changed");
        }
        if !catalog.same_resources(&self.catalog) {
            changed.push("notifications/resources/list_changed");
        }
        if !catalog.same_prompts(&self.catalog) {
            changed.push("notifications/prompts/list_changed");
        }
        self.catalog = catalog;
        if changed.is_empty() {
            // Only which tools are blocked changed: nothing a client lists.
            return;
        }
        // Every session keeps them, so that a client whose stream is down gets them on return.
        for s in self.sessions.values_mut() {
            let mut bytes = Vec::new();
            for method in &changed {
                bytes.extend(s.record(&json!({"jsonrpc": "2.0", "method": method})));
            }
            if let Some(conn) = s.stream {
                cx.emit(Output::Push { conn, bytes });
            }
        }
        self.notify_listeners(cx, &changed);
    }

    /// Ends sessions idle for longer than `gateway.session_idle_ms` (a session with an open
    /// stream or a call in flight is not idle).
    fn sweep(&mut self, cx: &mut RoomCx<'_, Self>, now: Instant) {
        let idle = Duration::from_millis(self.settings.session_idle_ms);
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.stream.is_none() && s.calls == 0 && now.duration_since(s.last_seen) >= idle
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.end_session(cx, &id, "expired");
        }
    }

    /// One HTTP request for `/mcp` (already through the access checks).
    pub fn on_http(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        request: &http::Request,
        reply: ReplyTo,
        now: Instant,
    ) {
        self.sweep(cx, now);
        self.release_closed_listens(cx);
        match request.method.as_str() {
            "POST" => self.post(cx, request, reply, now),
            "GET" | "HEAD" => match self.session_of(request, now) {
                Err(r) => refuse(cx, reply, r),
                Ok(id) => {
                    if !request.accepts_event_stream() {
                        let m = "GET /mcp opens an event stream: send Accept: text/event-stream";
                        return refuse(cx, reply, (406, code::SERVER_ERROR, m.into()));
                    }
                    let ReplyTo::Http { conn, .. } = reply else {
                        return;
                    };
                    let Some(s) = self.sessions.get_mut(&*id) else {
                        return;
                    };
                    if s.stream.is_some() {
                        let m = "this session already has its event stream open";
                        return refuse(cx, reply, (409, code::SERVER_ERROR, m.into()));
                    }
                    s.stream = Some(conn);
                    // A client that comes back names the last event it saw: what followed
                    // goes first, when the session still has all of it.
                    let missed = request
                        .header("last-event-id")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .and_then(|last| s.missed_since(last));
                    cx.emit(Output::Stream { reply });
                    if let Some(bytes) = missed.filter(|b| !b.is_empty()) {
                        cx.emit(Output::Push { conn, bytes });
                    }
                    self.keep_alive(cx, now);
                }
            },
            "DELETE" => match self.session_of(request, now) {
                Err(r) => refuse(cx, reply, r),
                Ok(id) => {
                    self.end_session(cx, &id, "was ended by its client");
                    cx.emit(Output::Http {
                        reply,
                        response: http::Response::json(200, Vec::new()),
                    });
                }
            },
            _ => {
                let mut response = rpc_error_response(
                    405,
                    &Value::Null,
                    code::SERVER_ERROR,
                    "/mcp takes POST, GET and DELETE",
                );
                response
                    .headers
                    .push(("Allow", "GET, HEAD, POST, DELETE".to_string()));
                cx.emit(Output::Http { reply, response });
            }
        }
    }

    /// The session a request names (touched), or why it is refused.
    fn session_of(&mut self, request: &http::Request, now: Instant) -> Result<Rc<str>, Refusal> {
        let Some(id) = request.header("mcp-session-id") else {
            return Err((
                400,
                code::SERVER_ERROR,
                "Mcp-Session-Id header is required (send initialize first)".into(),
            ));
        };
        let Some(session) = self.sessions.get_mut(id) else {
            return Err((
                404,
                code::SESSION_NOT_FOUND,
                "session not found (it ended or expired): send initialize again".into(),
            ));
        };
        // The spec refuses (400) only an invalid or unsupported version; a client SHOULD send
        // the negotiated one, and the session answers in that one whatever it sends (the
        // conformance suite sends 2025-03-26 on a 2025-11-25 session, as SDK servers accept).
        match request.header("mcp-protocol-version") {
            None => {}
            Some(v) if VERSIONS.contains(&v) => {}
            Some(v) => {
                let v: String = v.chars().take(40).collect();
                return Err((
                    400,
                    code::SERVER_ERROR,
                    format!(
                        "unsupported MCP-Protocol-Version {v:?} (this session speaks {}; supported: {})",
                        session.version,
                        VERSIONS.join(", ")
                    ),
                ));
            }
        }
        session.last_seen = now;
        Ok(Rc::clone(&session.id))
    }

    fn post(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        request: &http::Request,
        reply: ReplyTo,
        now: Instant,
    ) {
        let not_json = |e: serde_json::Error| {
            let m = format!("the body is not JSON: {e}");
            (400, code::PARSE_ERROR, m)
        };
        let message = match body::read(&request.body) {
            Ok(body::Body::Object(message)) => message,
            Ok(other) => {
                let m = if matches!(other, body::Body::Array) {
                    "JSON-RPC batches are not accepted: send one message per POST"
                } else {
                    "a JSON-RPC message is an object"
                };
                return refuse(cx, reply, (400, code::INVALID_REQUEST, m.into()));
            }
            Err(e) => return refuse(cx, reply, not_json(e)),
        };
        let mut lines = false;
        if let Some(raw) = message.arguments() {
            // Raw arguments were not read as a Value: when they hold what such a read may
            // refuse, the body is read so, and refused as it always was.
            let found = jsonrpc::scan(raw.get());
            if found.unusual {
                if let Err(e) = serde_json::from_slice::<Value>(&request.body) {
                    return refuse(cx, reply, not_json(e));
                }
            }
            lines = found.lines;
        }
        // A tools/call is served from its members as read; other methods see them as a
        // Value read would have made them (arguments included).
        if message.method.as_ref().and_then(body::Read::as_str) == Some("tools/call") {
            return self.post_call(cx, request, reply, &message, lines, now);
        }
        let message = match message.into_map() {
            Ok(map) => map,
            Err(e) => return refuse(cx, reply, not_json(e)),
        };
        let map = &message;
        if modern::is_modern(request, map) {
            return self.modern(cx, request, reply, map);
        }
        let id = map.get("id").cloned();
        let Some(method) = map.get("method").and_then(Value::as_str) else {
            if map.contains_key("result") || map.contains_key("error") {
                // A client's answer to a server request relayed to it (see `ask`).
                match self.session_of(request, now) {
                    Err(r) => return refuse(cx, reply, r),
                    Ok(session) => self.client_answered(cx, &session, map),
                }
                return accepted(cx, reply);
            }
            let m = "a JSON-RPC request needs a string method";
            return refuse(cx, reply, (400, code::INVALID_REQUEST, m.into()));
        };
        if method == "initialize" {
            let Some(id) = id else {
                let m = "initialize is a request: it needs an id";
                return refuse(cx, reply, (400, code::INVALID_REQUEST, m.into()));
            };
            return self.initialize(cx, reply, id, map.get("params"), now);
        }
        let session = match self.session_of(request, now) {
            Ok(s) => s,
            Err(r) => return refuse(cx, reply, r),
        };
        let params = map.get("params").unwrap_or(&Value::Null);
        let Some(id) = id else {
            // Notifications (initialized, roots changed...) need no answer.
            if method == "notifications/cancelled" {
                self.cancelled(cx, &session, params);
            }
            return accepted(cx, reply);
        };
        match method {
            "ping" => respond(cx, reply, &id, json!({})),
            "tools/list" => respond(cx, reply, &id, json!({"tools": self.catalog.listing()})),
            "prompts/list" => respond(
                cx,
                reply,
                &id,
                json!({"prompts": self.catalog.prompt_listing()}),
            ),
            "resources/list" => respond(
                cx,
                reply,
                &id,
                json!({"resources": self.catalog.resource_listing()}),
            ),
            "resources/templates/list" => respond(
                cx,
                reply,
                &id,
                json!({"resourceTemplates": self.catalog.template_listing()}),
            ),
            "prompts/get" | "resources/read" => {
                let call = Call {
                    session,
                    sse: request.accepts_event_stream(),
                    log_level: None,
                };
                if method == "prompts/get" {
                    self.get_prompt(cx, reply, id, params, call);
                } else {
                    self.read_resource(cx, reply, id, params, call);
                }
            }
            "logging/setLevel" => self.set_level(cx, reply, id, params, &session),
            "completion/complete" => self.complete(cx, reply, id, params, session),
            "resources/subscribe" => self.subscribe(cx, reply, id, params, session.to_string()),
            "resources/unsubscribe" => self.unsubscribe(cx, reply, id, params, session),
            _ => {
                let m: String = method.chars().take(80).collect();
                let response = rpc_error_response(
                    200,
                    &id,
                    code::METHOD_NOT_FOUND,
                    &format!("method {m:?} is not offered here (tools, prompts, resources, completions and logging)"),
                );
                cx.emit(Output::Http { reply, response });
            }
        }
    }

    /// A `tools/call` POST of either era: what `post` and `modern` decide for any method,
    /// in the same order, from the members as read (no `Value` of the message).
    fn post_call(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        request: &http::Request,
        reply: ReplyTo,
        message: &body::Message<'_>,
        lines: bool,
        now: Instant,
    ) {
        let params = message.params.as_ref().and_then(body::Read::as_object);
        let meta = params
            .and_then(|p| p.meta.as_ref())
            .and_then(body::Read::as_object);
        let id = message.id.as_ref().map(body::Member::to_value);
        let sse = request.accepts_event_stream();
        if modern::is_modern_by(request, meta.is_some_and(|m| m.version.is_some())) {
            let Some(id) = id else {
                // This era defines no client notifications over HTTP; one is taken and dropped.
                return accepted(cx, reply);
            };
            let name = params
                .and_then(|p| p.name.as_ref())
                .and_then(body::Read::as_str);
            let seen = modern::Seen {
                version: meta
                    .and_then(|m| m.version.as_ref())
                    .map(body::Read::as_str),
                capabilities: meta.is_some_and(|m| m.capabilities.is_some()),
                named: name,
            };
            if let Err(r) = modern::check_seen(request, "tools/call", seen) {
                return modern::refuse_with(cx, reply, &id, r);
            }
            // No session: bounded by the calls in flight in all; cancelled by hanging up.
            // Log messages, when it asks for them (this era's per-request opt-in): its
            // server is asked for that level first if none as verbose is set, and left
            // there after the call (no request per call to put it back).
            let log_level = meta
                .and_then(|m| m.log_level.as_ref())
                .and_then(body::Read::as_str)
                .and_then(log_rank);
            let tag = self.next_tag;
            let call = Call {
                session: Rc::clone(&self.unsessioned),
                sse,
                log_level,
            };
            self.call(cx, reply, id, (params, lines), call);
            // The answer is marked as this era's.
            if let Some(p) = self.pending.get_mut(&tag) {
                p.modern = true;
            }
            return;
        }
        let session = match self.session_of(request, now) {
            Ok(s) => s,
            Err(r) => return refuse(cx, reply, r),
        };
        let Some(id) = id else {
            // A notification needs no answer.
            return accepted(cx, reply);
        };
        let call = Call {
            session,
            sse,
            log_level: None,
        };
        self.call(cx, reply, id, (params, lines), call);
    }

    fn initialize(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        reply: ReplyTo,
        id: Value,
        params: Option<&Value>,
        now: Instant,
    ) {
        if self.sessions.len() >= self.settings.max_sessions as usize {
            let m = format!(
                "{} /mcp sessions are open (gateway.max_sessions): end one or wait for one to expire",
                self.sessions.len()
            );
            let response = rpc_error_response(503, &id, code::SERVER_ERROR, &m);
            return cx.emit(Output::Http { reply, response });
        }
        let asked = params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str);
        let version = asked
            .and_then(|a| VERSIONS.iter().find(|v| **v == a))
            .copied()
            .unwrap_or(VERSIONS[0]);
        let mut raw = [0u8; 16];
        if let Err(e) = crate::sys::random_bytes(&mut raw) {
            let m = format!("cannot make a session id: {e}");
            let response = rpc_error_response(500, &id, code::SERVER_ERROR, &m);
            return cx.emit(Output::Http { reply, response });
        }
        let session: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let mut opened = Session::new(&session, version, now);
        opened.declared = ask::Declared::from_initialize(params);
        self.sessions.insert(session.clone(), opened);
        log::debug!("/mcp session {session} opened ({version})");
        let result = json!({
            "protocolVersion": version,
            "capabilities": {
                "tools": {"listChanged": true},
                "prompts": {"listChanged": true},
                "resources": {"listChanged": true, "subscribe": true},
                "logging": {},
                "completions": {},
            },
            "serverInfo": {
                "name": "vsm-daemon",
                "title": "vsm-daemon MCP gateway",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "instructions": format!(
                "Tools and prompts of the MCP servers this daemon supervises, named SERVER{sep}TOOL and SERVER{sep}PROMPT, the daemon's own tools under vsm{sep}, and the servers' resources under their own URIs.",
                sep = self.settings.tool_separator
            ),
        });
        let mut response = rpc_response(&id, result);
        response.headers.push(("Mcp-Session-Id", session));
        cx.emit(Output::Http { reply, response });
    }

    /// A client's `notifications/cancelled`: its call `requestId` (an id of its session)
    /// ends at its server; the request gets no response.
    fn cancelled(&mut self, cx: &mut RoomCx<'_, Self>, session: &str, params: &Value) {
        let Some(request_id) = params.get("requestId") else {
            return;
        };
        let found = self
            .pending
            .iter()
            .find(|(_, p)| *p.session == *session && p.id == *request_id)
            .map(|(tag, _)| *tag);
        let Some(tag) = found else {
            // Answered already, or never ours: nothing to do (the spec says to ignore it).
            return;
        };
        let reason = match params.get("reason").and_then(Value::as_str) {
            Some(r) => format!(
                "the client cancelled it: {}",
                r.chars().take(200).collect::<String>()
            ),
            None => "the client cancelled it".to_string(),
        };
        self.cancel(cx, tag, &reason, None);
    }

    fn call(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        reply: ReplyTo,
        id: Value,
        (params, lines): (Option<&body::Params<'_>>, bool),
        call: Call,
    ) {
        let name = params.and_then(|p| p.name.as_ref());
        let Some(name) = name.and_then(body::Read::as_str) else {
            let response = rpc_error_response(
                200,
                &id,
                code::INVALID_PARAMS,
                "tools/call needs params.name",
            );
            return cx.emit(Output::Http { reply, response });
        };
        let arguments = match params.and_then(|p| p.arguments) {
            None => Some(Arguments::empty()),
            Some(raw) if raw.get() == "null" => Some(Arguments::empty()),
            Some(raw) => Arguments::from_raw(raw, lines),
        };
        let Some(arguments) = arguments else {
            let response = rpc_error_response(
                200,
                &id,
                code::INVALID_PARAMS,
                "tools/call params.arguments must be an object",
            );
            return cx.emit(Output::Http { reply, response });
        };
        if let Some((server, tool, capabilities)) = self.catalog.blocked(name) {
            let message = format!(
                "tool {name:?} is blocked by the capability policy ({} in security.blocked_capabilities)",
                capabilities.join(", ")
            );
            cx.event(
                crate::events::Channel::Security,
                crate::events::EventData::ToolCallBlocked {
                    server_id: server.clone(),
                    tool: tool.clone(),
                    capabilities: capabilities.clone(),
                },
            );
            let response = rpc_error_response(200, &id, code::INVALID_PARAMS, &message);
            return cx.emit(Output::Http { reply, response });
        }
        let Some(entry) = self.catalog.get(name) else {
            // One of the daemon's own tools that configuration does not allow (a server's
            // tool of that name, from a server called `vsm`, would have been found above).
            let own = name
                .strip_prefix("vsm")
                .and_then(|n| n.strip_prefix(self.settings.tool_separator.as_str()));
            if let Some(own) = own.filter(|n| catalog::is_daemon_tool(n)) {
                let message = format!(
                    "tool {name:?} is not allowed here: the daemon's own tool '{own}' is not in gateway.daemon_tools"
                );
                let response = rpc_error_response(200, &id, code::INVALID_PARAMS, &message);
                return cx.emit(Output::Http { reply, response });
            }
            // A tool of a server that is down: say so at once (the client's list is older
            // than the server's stop), as a tool error the model can read.
            if let Some((server, status)) = self.down_server_of(name) {
                let text = format!(
                    "MCP server '{server}' is not active (status {status}): its tools cannot be called now"
                );
                let result = json!({"content": [{"type": "text", "text": text}], "isError": true});
                return respond(cx, reply, &id, result);
            }
            let shown: String = name.chars().take(130).collect();
            let response = rpc_error_response(
                200,
                &id,
                code::INVALID_PARAMS,
                &format!("unknown tool {shown:?} (tools/list names the tools offered now)"),
            );
            return cx.emit(Output::Http { reply, response });
        };
        // As `admit`, inline: `entry` borrows the catalog.
        if let Some(m) = self.full(&call.session) {
            let response = rpc_error_response(200, &id, code::SERVER_ERROR, &m);
            return cx.emit(Output::Http { reply, response });
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        let mut retry = None;
        let (request, what, server) = match &entry.target {
            Target::Server { server, tool } => {
                // Built in place (a request moved by value costs its size in copies).
                let input = match ask::modern_input(params) {
                    Some(input) => Some(input),
                    None => {
                        retry = self.retry_for(&call, || McpRequest::Call {
                            id: server.to_string(),
                            name: tool.clone(),
                            arguments: arguments.clone(),
                            timeout_ms: None,
                            progress_token: Some(token_of(tag)),
                            input: None,
                        });
                        retry.as_ref().map(|r| r.first_input())
                    }
                };
                (
                    Request::Mcp(McpRequest::Call {
                        id: server.to_string(),
                        name: tool.clone(),
                        arguments,
                        timeout_ms: None,
                        progress_token: Some(token_of(tag)),
                        input,
                    }),
                    Forwarded::Tool,
                    Some(server.clone()),
                )
            }
            Target::Daemon(t) => match own_request(t, &arguments.to_value()) {
                Ok(request) => (request, Forwarded::Own, None),
                Err(text) => {
                    let result =
                        json!({"content": [{"type": "text", "text": text}], "isError": true});
                    return respond(cx, reply, &id, result);
                }
            },
        };
        // Progress needs a stream to go on: without one the client gets the answer alone.
        let progress = params
            .and_then(|p| p.meta.as_ref())
            .and_then(body::Read::as_object)
            .and_then(|m| m.progress_token.as_ref())
            .filter(|t| match t.as_str() {
                Some(s) => s.len() <= TOKEN_MAX,
                None => t.as_value().is_some_and(Value::is_number),
            })
            .filter(|_| call.sse && server.is_some())
            .map(body::Member::to_value);
        let waiting = Waiting {
            what,
            session: call.session,
            sse: call.sse && server.is_some(),
            log_level: call.log_level.filter(|_| server.is_some()),
            server,
            progress,
            retry,
        };
        self.forward(cx, tag, (reply, id), request, waiting);
    }

    /// Why no more calls can be taken for `session` now, if so (the bounds of calls in
    /// flight: per session and in all).
    fn full(&self, session: &str) -> Option<String> {
        let in_session = self.sessions.get(session).map_or(0, |s| s.calls);
        if in_session >= MAX_CALLS_PER_SESSION {
            Some(format!("{in_session} calls of this session are in flight (at most {MAX_CALLS_PER_SESSION}): wait for one to finish"))
        } else if self.pending.len() >= MAX_CALLS {
            Some(format!(
                "{} calls are in flight on /mcp (at most {MAX_CALLS}): try again shortly",
                self.pending.len()
            ))
        } else {
            None
        }
    }

    /// Asks for `request` under `tag` and keeps what its answer needs (`to`: the client's
    /// request and its JSON-RPC id).
    fn forward(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        tag: u64,
        (reply, id): (ReplyTo, Value),
        request: Request,
        w: Waiting,
    ) {
        if let Some(s) = self.sessions.get_mut(&*w.session) {
            s.calls += 1;
        }
        let pending = Pending {
            reply,
            id,
            what: w.what,
            session: w.session,
            server: w.server,
            progress: w.progress,
            progress_sent: None,
            progress_held: None,
            streaming: false,
            sse: w.sse,
            modern: false,
            log_level: w.log_level,
            retry: w.retry,
        };
        self.pending.insert(tag, pending);
        // A call that wants log messages: its server is asked for the level first.
        if w.log_level.is_some() {
            self.sync_levels(cx);
        }
        cx.ask(tag, request);
    }

    /// `resources/(un)subscribe` to a server, under the same bounds as a call (not
    /// cancellable: quick, and what it changes is undone by the next unsubscribe).
    fn forward_request(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        to: (ReplyTo, Value),
        request: Request,
        session: Rc<str>,
    ) {
        self.forward_as(cx, to, session, (Forwarded::Request, None), |_| request);
    }

    /// The tag of a new request of `session` to a server, or `None` when that session or
    /// the gateway has as many in flight as it may: its client (`reply`, request `id`) is
    /// then told so.
    fn admit(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        reply: ReplyTo,
        id: &Value,
        session: &str,
    ) -> Option<u64> {
        if let Some(m) = self.full(session) {
            let response = rpc_error_response(200, id, code::SERVER_ERROR, &m);
            cx.emit(Output::Http { reply, response });
            return None;
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        Some(tag)
    }

    /// A request to a server (`what`: how its answer becomes a result), under the same
    /// bounds as a call. With the server named, `make` is given the daemon's progress token
    /// for it (`vsm/gateway/TAG`), by which it is cancelled at the server as a call is.
    fn forward_as(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        (reply, id): (ReplyTo, Value),
        session: Rc<str>,
        (what, server): (Forwarded, Option<Rc<str>>),
        make: impl FnOnce(Option<String>) -> Request,
    ) {
        let Some(tag) = self.admit(cx, reply, &id, &session) else {
            return;
        };
        let token = server.as_ref().map(|_| token_of(tag));
        let request = make(token);
        let waiting = Waiting {
            what,
            session,
            server,
            progress: None,
            sse: false,
            log_level: None,
            retry: None,
        };
        self.forward(cx, tag, (reply, id), request, waiting);
    }

    /// A server's progress on a call: to its client, on the call's stream (opened with
    /// the first), with the client's own token.
    fn progress(&mut self, cx: &mut RoomCx<'_, Self>, token: &str, note: ProgressNote<'_>) {
        let Some(tag) = token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|t| t.parse::<u64>().ok())
        else {
            return;
        };
        let Some(p) = self.pending.get_mut(&tag) else {
            return;
        };
        let (Some(client_token), ReplyTo::Http { .. }) = (&p.progress, p.reply) else {
            return;
        };
        let now = Instant::now();
        let mut params = json!({"progressToken": client_token, "progress": note.progress});
        if !note.total.is_null() {
            params["total"] = note.total.clone();
        }
        if let Some(m) = note.message {
            params["message"] = Value::String(m.to_string());
        }
        if let Some(sent) = p.progress_sent {
            let due = sent + PROGRESS_INTERVAL;
            if now < due {
                // Held, not dropped: the newest replaces what was held, and goes out when
                // the interval is over (or before the answer).
                if p.progress_held.replace(params).is_none() {
                    cx.timers().insert(due, Timer::Progress(tag));
                }
                return;
            }
        }
        p.progress_held = None;
        self.send_progress(cx, tag, params, now);
    }

    /// Sends a call's progress on its answer, which becomes an event stream if it is not yet.
    fn send_progress(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64, params: Value, now: Instant) {
        let Some(p) = self.pending.get_mut(&tag) else {
            return;
        };
        p.progress_sent = Some(now);
        let message =
            json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": params});
        self.push_on_call(cx, tag, &message, now);
    }

    /// The progress held back for call `tag`, if it still waits, goes out now.
    fn flush_progress(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64) {
        let Some(p) = self.pending.get_mut(&tag) else {
            return;
        };
        let Some(params) = p.progress_held.take() else {
            return;
        };
        self.send_progress(cx, tag, params, Instant::now());
    }
}

/// What a `tools/call` request says about its client.
struct Call {
    /// Its session.
    session: Rc<str>,
    /// Whether it accepts an SSE answer.
    sse: bool,
    /// The log level a 2026-07-28 call asks for (a rank in `LOG_LEVELS`).
    log_level: Option<usize>,
}

/// A server's progress notification, as the MCP room's event has it.
struct ProgressNote<'a> {
    progress: &'a Value,
    total: &'a Value,
    message: Option<&'a str>,
}

impl Gateway {
    /// The server that is not active now whose prefix `name` (`SERVER<sep>...`) carries:
    /// (id, status). A client's list may be older than the server's stop.
    fn down_server_of(&self, name: &str) -> Option<(&str, &'static str)> {
        let sep = self.settings.tool_separator.as_str();
        self.servers
            .iter()
            .find(|s| {
                !s.serves
                    && name.len() > s.id.len() + sep.len()
                    && name.starts_with(s.id.as_str())
                    && name[s.id.len()..].starts_with(sep)
            })
            .map(|s| (s.id.as_str(), s.status))
    }

    /// `prompts/get`: to the server of the prompt, under its own name.
    fn get_prompt(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        reply: ReplyTo,
        id: Value,
        params: &Value,
        call: Call,
    ) {
        let Some(name) = params.get("name").and_then(Value::as_str) else {
            let m = "prompts/get needs params.name";
            let response = rpc_error_response(200, &id, code::INVALID_PARAMS, m);
            return cx.emit(Output::Http { reply, response });
        };
        let arguments = match params.get("arguments") {
            None | Some(Value::Null) => json!({}),
            Some(a @ Value::Object(_)) => a.clone(),
            Some(_) => {
                let m = "prompts/get params.arguments must be an object";
                let response = rpc_error_response(200, &id, code::INVALID_PARAMS, m);
                return cx.emit(Output::Http { reply, response });
            }
        };
        let Some(Target::Server { server, tool }) = self.catalog.prompt(name).map(|e| &e.target)
        else {
            let shown: String = name.chars().take(130).collect();
            let message = match self.down_server_of(name) {
                Some((server, status)) => format!(
                    "MCP server '{server}' is not active (status {status}): its prompts cannot be got now"
                ),
                None => format!("unknown prompt {shown:?} (prompts/list names the prompts offered now)"),
            };
            let response = rpc_error_response(200, &id, code::INVALID_PARAMS, &message);
            return cx.emit(Output::Http { reply, response });
        };
        let (server, name) = (Rc::clone(server), tool.clone());
        let to = Rc::clone(&server);
        self.forward_asking(cx, (reply, id), call, params, to, |progress_token| {
            McpRequest::GetPrompt {
                id: server.to_string(),
                name,
                arguments,
                progress_token,
                timeout_ms: None,
                input: None,
            }
        });
    }

    /// The server that `params.uri` of a `method` request goes to, and the URI; or the
    /// JSON-RPC error answer (no URI, too long, no active server lists it or has a template
    /// that matches it).
    fn route_uri(
        &self,
        method: &str,
        id: &Value,
        params: &Value,
    ) -> Result<(String, String), http::Response> {
        let Some(uri) = params.get("uri").and_then(Value::as_str) else {
            let m = format!("{method} needs params.uri");
            return Err(rpc_error_response(200, id, code::INVALID_PARAMS, &m));
        };
        if uri.len() > MAX_URI_BYTES {
            let m = format!("{method} params.uri is longer than {MAX_URI_BYTES} bytes");
            return Err(rpc_error_response(200, id, code::INVALID_PARAMS, &m));
        }
        let Some(server) = self.catalog.route(uri) else {
            let shown: String = uri.chars().take(200).collect();
            let body = json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": code::RESOURCE_NOT_FOUND,
                "message": format!("resource not found: no active server lists {shown:?} or has a template that matches it"),
                "data": {"uri": shown},
            }});
            return Err(http::Response::json(200, body.to_string().into_bytes()));
        };
        Ok((server.to_string(), uri.to_string()))
    }

    /// `resources/read`: to the server the catalog routes the URI to, URI unchanged.
    fn read_resource(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        reply: ReplyTo,
        id: Value,
        params: &Value,
        call: Call,
    ) {
        let (server, uri) = match self.route_uri("resources/read", &id, params) {
            Ok(routed) => routed,
            Err(response) => return cx.emit(Output::Http { reply, response }),
        };
        let to = server.as_str().into();
        self.forward_asking(cx, (reply, id), call, params, to, |progress_token| {
            McpRequest::ReadResource {
                id: server,
                uri,
                progress_token,
                timeout_ms: None,
                input: None,
            }
        });
    }

    /// A `prompts/get` or `resources/read` (`make` builds it, given its progress token) to
    /// server `to`, which a 2026-07-28 server may answer with `input_required` as it may a
    /// tool call: a 2026-07-28 request carries its client's `inputResponses`,
    /// `requestState` and capabilities (from its `params`), a session-era one what asking
    /// it again takes (see [`input`]).
    fn forward_asking(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        (reply, id): (ReplyTo, Value),
        call: Call,
        params: &Value,
        to: Rc<str>,
        make: impl FnOnce(Option<String>) -> McpRequest,
    ) {
        let Some(tag) = self.admit(cx, reply, &id, &call.session) else {
            return;
        };
        let mut request = make(Some(token_of(tag)));
        let retry = match ask::modern_input_of(params) {
            Some(input) => {
                input::set_input(&mut request, input, None);
                None
            }
            None => {
                let retry = self.retry_for(&call, || request.clone());
                if let Some(r) = &retry {
                    input::set_input(&mut request, r.first_input(), None);
                }
                retry
            }
        };
        let waiting = Waiting {
            what: Forwarded::Request,
            session: call.session,
            server: Some(to),
            progress: None,
            sse: call.sse,
            log_level: None,
            retry,
        };
        self.forward(cx, tag, (reply, id), Request::Mcp(request), waiting);
    }
}

/// Logging, completions and resource subscriptions relayed (see the README's `/mcp` part).
impl Gateway {
    /// Asks the MCP room for `request` with nobody waiting for the answer (upstream
    /// bookkeeping: log levels, resubscriptions, the last unsubscribe of a session that
    /// ended).
    fn ask_quietly(&mut self, cx: &mut RoomCx<'_, Self>, request: Request) {
        let tag = self.next_tag;
        self.next_tag += 1;
        cx.ask(tag, request);
    }

    /// `logging/setLevel`: the session's level; the servers are then asked for the most
    /// verbose level any session wants.
    fn set_level(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        reply: ReplyTo,
        id: Value,
        params: &Value,
        session: &str,
    ) {
        let Some(rank) = params
            .get("level")
            .and_then(Value::as_str)
            .and_then(log_rank)
        else {
            let m = format!(
                "logging/setLevel needs params.level, one of {}",
                LOG_LEVELS.join(", ")
            );
            let response = rpc_error_response(200, &id, code::INVALID_PARAMS, &m);
            return cx.emit(Output::Http { reply, response });
        };
        if let Some(s) = self.sessions.get_mut(session) {
            s.log_level = Some(rank);
        }
        respond(cx, reply, &id, json!({}));
        self.sync_levels(cx);
    }

    /// The most verbose level a session (or a 2026-07-28 call in flight) wants, if any wants
    /// log messages.
    fn wanted_level(&self) -> Option<usize> {
        let calls = self.pending.values().filter_map(|p| p.log_level);
        self.sessions
            .values()
            .filter_map(|s| s.log_level)
            .chain(calls)
            .min()
    }

    /// Asks each serving server whose level differs from the one wanted now for that level
    /// (once per change and run: the MCP room refuses, without a word to the server, one
    /// that declared no `logging`). When no session wants log messages any more, servers
    /// that were set go to `warning`; servers never set keep their own default.
    fn sync_levels(&mut self, cx: &mut RoomCx<'_, Self>) {
        let want = self.wanted_level();
        let mut asks = Vec::new();
        for s in self.servers.iter().filter(|s| s.serves) {
            let Some(up) = self.upstream.get_mut(&s.id) else {
                continue;
            };
            let target = match (want, up.level) {
                (Some(w), _) => Some(w),
                (None, Some(_)) => Some(IDLE_LOG_LEVEL),
                (None, None) => None,
            };
            if let Some(t) = target.filter(|t| up.level != Some(*t)) {
                up.level = Some(t);
                asks.push((s.id.clone(), t));
            }
        }
        for (id, rank) in asks {
            let level = LOG_LEVELS[rank];
            log::debug!("/mcp: asking MCP server {id} for log level {level}");
            self.ask_quietly(cx, Request::Mcp(McpRequest::SetLogLevel { id, level }));
        }
    }

    /// After the servers changed: a server serving a run not seen before gets the log level
    /// wanted and the resource subscriptions sessions hold (its earlier run's are gone).
    fn follow_runs(&mut self, cx: &mut RoomCx<'_, Self>) {
        let ids: BTreeSet<&str> = self.servers.iter().map(|s| s.id.as_str()).collect();
        self.upstream.retain(|id, _| ids.contains(id.as_str()));
        let mut fresh = Vec::new();
        for s in self.servers.iter().filter(|s| s.serves) {
            if self.upstream.get(&s.id).map(|u| u.run) != Some(s.run) {
                let up = Upstream {
                    run: s.run,
                    level: None,
                };
                self.upstream.insert(s.id.clone(), up);
                fresh.push(s.id.clone());
            }
        }
        if fresh.is_empty() {
            return;
        }
        self.sync_levels(cx);
        let again: Vec<(String, String)> = self
            .subscribed
            .keys()
            .filter(|(server, _)| fresh.contains(server))
            .cloned()
            .collect();
        for (id, uri) in again {
            log::debug!("/mcp: subscribing again to {uri} of MCP server {id} (a new run)");
            let subscribe = true;
            let request = McpRequest::Subscribe { id, uri, subscribe };
            self.ask_quietly(cx, Request::Mcp(request));
        }
    }

    /// A server's log message: to each session whose level admits it, with the logger
    /// prefixed by the server's id; on the stream of that session's call in flight to the
    /// server when there is one (the first such call, opened as a stream if it was not),
    /// otherwise on the session's GET stream (kept for replay like its other events).
    fn relay_log(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        server: &str,
        level: &str,
        logger: Option<&str>,
        data: &Value,
    ) {
        let Some(rank) = log_rank(level) else {
            return;
        };
        let admitted: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.log_level.is_some_and(|l| rank >= l))
            .map(|(id, _)| id.clone())
            .collect();
        // 2026-07-28 calls to this server that asked for this level or a more verbose one.
        let calls: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                p.sse
                    && p.log_level.is_some_and(|l| rank >= l)
                    && p.server.as_deref() == Some(server)
            })
            .map(|(tag, _)| *tag)
            .collect();
        if admitted.is_empty() && calls.is_empty() {
            return;
        }
        let sep = &self.settings.tool_separator;
        let logger = match logger {
            Some(l) => format!("{server}{sep}{l}"),
            None => server.to_string(),
        };
        let message = json!({"jsonrpc": "2.0", "method": "notifications/message",
                             "params": {"level": level, "logger": logger, "data": data}});
        let now = Instant::now();
        for tag in calls {
            self.push_on_call(cx, tag, &message, now);
        }
        for session in admitted {
            let call = self
                .pending
                .iter()
                .filter(|(_, p)| {
                    p.sse && *p.session == *session && p.server.as_deref() == Some(server)
                })
                .map(|(tag, _)| *tag)
                .min();
            if call.is_some_and(|tag| self.push_on_call(cx, tag, &message, now)) {
                continue;
            }
            self.notify_session(cx, &session, &message);
        }
    }

    /// `message` on the stream of call `tag` (opened as one if it was not); whether it went.
    fn push_on_call(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        tag: u64,
        message: &Value,
        now: Instant,
    ) -> bool {
        let Some(p) = self.pending.get_mut(&tag) else {
            return false;
        };
        let ReplyTo::Http { conn, .. } = p.reply else {
            return false;
        };
        if !p.streaming {
            p.streaming = true;
            cx.emit(Output::Stream { reply: p.reply });
            self.keep_alive(cx, now);
        }
        cx.emit(Output::Push {
            conn,
            bytes: sse_message(message),
        });
        true
    }

    /// `message` on session `id`'s GET stream (and in its replay buffer).
    fn notify_session(&mut self, cx: &mut RoomCx<'_, Self>, id: &str, message: &Value) {
        if let Some(s) = self.sessions.get_mut(id) {
            let bytes = s.record(message);
            if let Some(conn) = s.stream {
                cx.emit(Output::Push { conn, bytes });
            }
        }
    }

    /// A server's `notifications/resources/updated`: to every session subscribed to it.
    fn relay_updated(&mut self, cx: &mut RoomCx<'_, Self>, server: &str, uri: &str) {
        let key = (server.to_string(), uri.to_string());
        let Some(sessions) = self.subscribed.get(&key) else {
            return;
        };
        let sessions: Vec<String> = sessions.iter().cloned().collect();
        let message = json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
                             "params": {"uri": uri}});
        for session in sessions {
            if session.starts_with("listen/") {
                // A 2026-07-28 listen stream: tagged with its subscription id.
                if let Some(l) = self.listeners.iter().find(|l| l.holder() == session) {
                    let mut tagged = message.clone();
                    tagged["params"]["_meta"] =
                        json!({"io.modelcontextprotocol/subscriptionId": l.id_value()});
                    cx.emit(Output::Push {
                        conn: l.conn,
                        bytes: sse_message(&tagged),
                    });
                }
                continue;
            }
            self.notify_session(cx, &session, &message);
        }
    }

    /// `completion/complete`: to the server of the prompt (`ref/prompt`, by its gateway
    /// name) or of the resource or template (`ref/resource`, routed as `resources/read`
    /// is), with the server's own names; at most [`MAX_COMPLETION_VALUES`] values back.
    fn complete(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        reply: ReplyTo,
        id: Value,
        params: &Value,
        session: Rc<str>,
    ) {
        let invalid = |cx: &mut RoomCx<'_, Self>, reply, m: &str| {
            let response = rpc_error_response(200, &id, code::INVALID_PARAMS, m);
            cx.emit(Output::Http { reply, response });
        };
        let argument_ok = params
            .get("argument")
            .is_some_and(|a| a["name"].is_string() && a["value"].is_string());
        if !argument_ok {
            let m = "completion/complete needs params.argument with a string name and value";
            return invalid(cx, reply, m);
        }
        let reference = params.get("ref").unwrap_or(&Value::Null);
        let mut forwarded = params.clone();
        if let Some(map) = forwarded.as_object_mut() {
            map.remove("_meta");
        }
        let server = match reference["type"].as_str() {
            Some("ref/prompt") => {
                let Some(name) = reference["name"].as_str() else {
                    return invalid(cx, reply, "a ref/prompt needs a name");
                };
                match self.catalog.prompt(name).map(|e| &e.target) {
                    Some(Target::Server { server, tool }) => {
                        forwarded["ref"]["name"] = Value::String(tool.clone());
                        Rc::clone(server)
                    }
                    _ => {
                        let shown: String = name.chars().take(130).collect();
                        let m = match self.down_server_of(name) {
                            Some((server, status)) => format!(
                                "MCP server '{server}' is not active (status {status}): its prompts cannot be completed now"
                            ),
                            None => format!(
                                "unknown prompt {shown:?} (prompts/list names the prompts offered now)"
                            ),
                        };
                        return invalid(cx, reply, &m);
                    }
                }
            }
            Some("ref/resource") => {
                let Some(uri) = reference["uri"]
                    .as_str()
                    .filter(|u| u.len() <= MAX_URI_BYTES)
                else {
                    let m = format!("a ref/resource needs a uri of at most {MAX_URI_BYTES} bytes");
                    return invalid(cx, reply, &m);
                };
                let owner = self
                    .catalog
                    .template_server(uri)
                    .or_else(|| self.catalog.route(uri));
                let Some(server) = owner else {
                    let shown: String = uri.chars().take(200).collect();
                    let m = format!("unknown resource or resource template {shown:?} (no active server lists it)");
                    return invalid(cx, reply, &m);
                };
                Rc::from(server)
            }
            _ => {
                let m = "completion/complete params.ref.type must be ref/prompt or ref/resource";
                return invalid(cx, reply, m);
            }
        };
        let what = (Forwarded::Complete, Some(server.clone()));
        self.forward_as(cx, (reply, id), session, what, |token| {
            if let (Some(t), Some(map)) = (token, forwarded.as_object_mut()) {
                map.insert("_meta".into(), json!({ "progressToken": t }));
            }
            Request::Mcp(McpRequest::Complete {
                id: server.to_string(),
                params: forwarded,
            })
        });
    }

    /// `resources/subscribe`: to the server the URI routes to, once for all sessions; a
    /// session's second subscription to a URI, or one to a URI another session holds
    /// already, is answered at once.
    fn subscribe(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        reply: ReplyTo,
        id: Value,
        params: &Value,
        session: String,
    ) {
        let key = match self.route_uri("resources/subscribe", &id, params) {
            Ok(routed) => routed,
            Err(response) => return cx.emit(Output::Http { reply, response }),
        };
        let held = self
            .sessions
            .get(&session)
            .map_or(0, |s| s.subscriptions.len());
        if self
            .sessions
            .get(&session)
            .is_some_and(|s| s.subscriptions.contains(&key))
        {
            return respond(cx, reply, &id, json!({}));
        }
        let shared = self.subscribed.contains_key(&key);
        let refusal = if held >= MAX_SUBSCRIPTIONS_PER_SESSION {
            Some(format!("this session holds {held} resource subscriptions (at most {MAX_SUBSCRIPTIONS_PER_SESSION}): unsubscribe from one first"))
        } else if !shared && self.subscribed.len() >= MAX_SUBSCRIPTIONS {
            Some(format!(
                "{} resources are subscribed to on /mcp (at most {MAX_SUBSCRIPTIONS}): try again later",
                self.subscribed.len()
            ))
        } else if !shared {
            self.full(&session)
        } else {
            None
        };
        if let Some(m) = refusal {
            let response = rpc_error_response(200, &id, code::SERVER_ERROR, &m);
            return cx.emit(Output::Http { reply, response });
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.subscriptions.insert(key.clone());
        }
        self.subscribed
            .entry(key.clone())
            .or_default()
            .insert(session.clone());
        // Held upstream already (and not only being asked for): nothing to ask.
        let asking = self.subscribing.values().any(|(k, _)| *k == key);
        if shared && !asking {
            return respond(cx, reply, &id, json!({}));
        }
        let tag = self.next_tag;
        let request = Request::Mcp(McpRequest::Subscribe {
            id: key.0.clone(),
            uri: key.1.clone(),
            subscribe: true,
        });
        self.forward_request(cx, (reply, id), request, session.as_str().into());
        if self.pending.contains_key(&tag) {
            self.subscribing.insert(tag, (key, session));
        } else {
            // Refused before it went out (no room): undone.
            if let Some(s) = self.sessions.get_mut(&session) {
                s.subscriptions.remove(&key);
            }
            self.forget_subscriber(&key, &session);
        }
    }

    /// `resources/unsubscribe`: the session's subscription ends; the server's when it was
    /// the last session holding it (its answer is relayed then, `{}` otherwise).
    fn unsubscribe(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        reply: ReplyTo,
        id: Value,
        params: &Value,
        session: Rc<str>,
    ) {
        let Some(uri) = params.get("uri").and_then(Value::as_str) else {
            let response = rpc_error_response(
                200,
                &id,
                code::INVALID_PARAMS,
                "resources/unsubscribe needs params.uri",
            );
            return cx.emit(Output::Http { reply, response });
        };
        let key = self.sessions.get_mut(&*session).and_then(|s| {
            let key = s.subscriptions.iter().find(|(_, u)| u == uri).cloned()?;
            s.subscriptions.remove(&key);
            Some(key)
        });
        let Some(key) = key else {
            // Not subscribed (or already unsubscribed): nothing to end.
            return respond(cx, reply, &id, json!({}));
        };
        if !self.forget_subscriber(&key, &session) || self.full(&session).is_some() {
            if !self.subscribed.contains_key(&key) {
                self.upstream_unsubscribe(cx, &key);
            }
            return respond(cx, reply, &id, json!({}));
        }
        let (server, uri) = key;
        let request = Request::Mcp(McpRequest::Subscribe {
            id: server,
            uri,
            subscribe: false,
        });
        self.forward_request(cx, (reply, id), request, session);
    }

    /// Removes `session` from the holders of `key`; whether it was the last one (the
    /// subscription is gone).
    fn forget_subscriber(&mut self, key: &(String, String), session: &str) -> bool {
        let Some(holders) = self.subscribed.get_mut(key) else {
            return false;
        };
        holders.remove(session);
        if holders.is_empty() {
            self.subscribed.remove(key);
            return true;
        }
        false
    }

    /// A session that ended lets go of `key`: the server's subscription ends with the last.
    fn release(&mut self, cx: &mut RoomCx<'_, Self>, key: &(String, String), session: &str) {
        if self.forget_subscriber(key, session) {
            self.upstream_unsubscribe(cx, key);
        }
    }

    /// `resources/unsubscribe` to the server, nobody waiting for the answer.
    fn upstream_unsubscribe(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        (server, uri): &(String, String),
    ) {
        log::debug!("/mcp: unsubscribing from {uri} of MCP server {server} (no session holds it)");
        let request = McpRequest::Subscribe {
            id: server.clone(),
            uri: uri.clone(),
            subscribe: false,
        };
        self.ask_quietly(cx, Request::Mcp(request));
    }
}

/// The command-layer request behind one of the daemon's own tools, or why the arguments
/// do not make one (as a tool error, so the model can correct them).
fn own_request(tool: &str, arguments: &Value) -> Result<Request, String> {
    Ok(match tool {
        "status" => Request::Daemon(DaemonRequest::Status { detailed: false }),
        "variety" => Request::Variety(VarietyRequest::Analysis),
        "discover" => {
            let text = |field: &str| match arguments.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(format!("{field} must be a string")),
            };
            let source = match text("source")? {
                None | Some("") => None,
                Some(s) => Some(
                    ["catalog", "registry", "npm", "github"]
                        .into_iter()
                        .find(|k| *k == s)
                        .ok_or_else(|| {
                            let s: String = s.chars().take(40).collect();
                            format!("source {s:?} is not one of catalog, registry, npm, github")
                        })?,
                ),
            };
            // The discovery room checks the query, exactly as for the REST operation.
            Request::Discovery(crate::api::DiscoveryRequest::Discover {
                source,
                query: text("query")?.unwrap_or_default().to_string(),
            })
        }
        "acquire" => {
            let text = |field: &str| match arguments.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("{field} must be a string")),
            };
            let capability = text("capability_type")?
                .ok_or_else(|| "capability_type is required (e.g. \"memory\")".to_string())?;
            // The variety room checks the values, exactly as for the REST operation.
            Request::Variety(VarietyRequest::Acquire {
                capability,
                method: "mcp_server".into(),
                priority: text("priority")?.unwrap_or_else(|| "medium".into()),
            })
        }
        _ => Request::Mcp(McpRequest::List { status: "all" }),
    })
}

/// The servers or their tools changed: the active servers' tools, less those the capability
/// policy blocks, make the catalog; clients with an open stream get
/// `notifications/tools/list_changed` when it changed.
impl crate::room::Follows for Gateway {
    fn servers(&mut self, cx: &mut RoomCx<'_, Self>, servers: &[crate::snapshot::ServerView<'_>]) {
        self.servers = servers
            .iter()
            .map(|s| {
                let mut tools = Vec::new();
                let mut blocked = Vec::new();
                let extras = |list: &[Value]| if s.serves { list.to_vec() } else { Vec::new() };
                if s.serves {
                    for t in s.tools {
                        let text = crate::variety::policy::tool_text(t);
                        let refused = self.policy.tool_refused(text, s.allow_capabilities);
                        if refused.is_empty() {
                            tools.push(t.clone());
                        } else {
                            blocked.push((text.name.to_string(), refused));
                        }
                    }
                }
                Offered {
                    id: s.id.to_string(),
                    status: s.status,
                    serves: s.serves,
                    run: s.tools_version.0,
                    tools,
                    blocked,
                    resources: extras(s.resources),
                    resource_templates: extras(s.resource_templates),
                    prompts: extras(s.prompts),
                }
            })
            .collect();
        self.rebuild(cx);
        self.follow_runs(cx);
    }
}

impl Room for Gateway {
    type Timer = Timer;
    type Job = Job;
    type Output = Output;
    const NAME: &'static str = "gateway";

    fn on_timer(&mut self, cx: &mut RoomCx<'_, Self>, timer: Timer) {
        match timer {
            Timer::KeepAlive => {
                self.keepalive = false;
                let streams: Vec<ConnId> = self.streams().collect();
                if streams.is_empty() {
                    return;
                }
                for conn in streams {
                    cx.emit(Output::Push {
                        conn,
                        bytes: b": keep-alive\n\n".to_vec(),
                    });
                }
                self.keep_alive(cx, Instant::now());
            }
            Timer::Progress(tag) => self.flush_progress(cx, tag),
            Timer::Input(tag) => self.input_deadline(cx, tag),
        }
    }

    fn on_event(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        _seq: u64,
        _channel: crate::events::Channel,
        data: &crate::events::EventData,
    ) {
        match data {
            crate::events::EventData::McpServerLog {
                server_id,
                level,
                logger,
                data,
            } => return self.relay_log(cx, server_id, level, logger.as_deref(), data),
            crate::events::EventData::McpResourceUpdated { server_id, uri } => {
                return self.relay_updated(cx, server_id, uri)
            }
            _ => {}
        }
        if let crate::events::EventData::McpToolProgress {
            progress_token,
            progress,
            total,
            message,
            ..
        } = data
        {
            if self.pending.is_empty() {
                return;
            }
            let note = ProgressNote {
                progress,
                total,
                message: message.as_deref(),
            };
            self.progress(cx, progress_token, note);
        }
    }

    fn on_job(&mut self, _cx: &mut RoomCx<'_, Self>, done: Job) {
        match done {}
    }

    fn apply_config(&mut self, cx: &mut RoomCx<'_, Self>, config: &Config) {
        // A changed policy takes effect with the catalogue the wiring hands over next.
        self.policy = crate::variety::policy::Policy::new(config);
        if self.settings != config.gateway {
            self.settings = config.gateway.clone();
            self.rebuild(cx);
        }
    }

    fn on_answer(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64, answer: Answer) {
        // A refused subscription is undone (the session holds it no more).
        if let (Some((key, session)), Err(_)) = (self.subscribing.get(&tag).cloned(), &answer) {
            if let Some(s) = self.sessions.get_mut(&session) {
                s.subscriptions.remove(&key);
            }
            self.forget_subscriber(&key, &session);
        }
        // A 2026-07-28 server asks a session-era client for input: the call (or
        // `prompts/get`, `resources/read`) goes on.
        if input::asks_input(&answer)
            && self.pending.get(&tag).is_some_and(|p| {
                matches!(p.what, Forwarded::Tool | Forwarded::Request) && !p.modern
            })
        {
            return self.collect_input(cx, tag, answer);
        }
        let Some(p) = self.take_pending(tag) else {
            // A cancelled call's answer, or that of the cancel itself: nobody waits for it.
            log::debug!("/mcp: an answer for {tag}, which nobody waits for");
            return;
        };
        self.end_asks(cx, tag, &p);
        // A 2026-07-28 request's result says its `resultType`.
        let modern = p.modern;
        let result = |r: Value| {
            let r = if modern { self.modern_result(r) } else { r };
            json!({"jsonrpc": "2.0", "id": p.id, "result": r})
        };
        let message = match p.what {
            Forwarded::Own => result(own_result(answer)),
            Forwarded::Tool => match ask::input_required(modern, answer) {
                Ok(asked) => result(asked),
                Err(answer) => {
                    url_required(&p.id, &answer).unwrap_or_else(|| result(tool_result(answer)))
                }
            },
            Forwarded::Request | Forwarded::Complete => match ask::input_required(modern, answer) {
                Ok(asked) => result(asked),
                Err(Ok(mut v)) if p.what == Forwarded::Complete => {
                    result(bounded_completion(v["result"].take()))
                }
                Err(Ok(mut v)) => result(v["result"].take()),
                Err(Err(e)) => {
                    // The server's own JSON-RPC error passes through; the daemon's reasons
                    // (not active, timed out, busy, gone) are internal errors with its message.
                    let data = e.data.as_ref();
                    let server_code = data
                        .filter(|_| e.code == ErrorCode::McpError)
                        .and_then(|d| d["code"].as_i64());
                    let code = server_code.unwrap_or(code::INTERNAL_ERROR);
                    rpc_error(&p.id, code, &e.message)
                }
            },
        };
        // `to_vec` writes straight into the buffer: `to_string` goes through a formatter for
        // every piece (the same bytes, fewer instructions).
        send_answer(cx, p, serde_json::to_vec(&message).unwrap_or_default());
    }

    /// A server tool's success with its result bytes as they came: a `/mcp` tool call's
    /// answer is written around them (for a 2026-07-28 request with `resultType` and our
    /// `_meta` added after the server's members), without parsing the result. A result with
    /// `_meta` of its own in that era, and every other request, take the parsed path.
    fn on_raw_answer(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64, raw: crate::api::RawCall) {
        let spliced = self
            .pending
            .get(&tag)
            .is_some_and(|p| p.what == Forwarded::Tool && !(p.modern && raw.has_meta));
        if !spliced {
            return self.on_answer(cx, tag, raw.into_answer());
        }
        let Some(p) = self.take_pending(tag) else {
            return;
        };
        self.end_asks(cx, tag, &p);
        let result = raw.result();
        let mut bytes = Vec::with_capacity(result.len() + 160);
        bytes.extend_from_slice(b"{\"id\":");
        // Writes into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut bytes, &p.id);
        bytes.extend_from_slice(b",\"jsonrpc\":\"2.0\",\"result\":");
        if p.modern {
            modern::write_modern_result(&mut bytes, result, raw.has_result_type);
        } else {
            bytes.extend_from_slice(result);
        }
        bytes.push(b'}');
        send_answer(cx, p, bytes);
    }
}

/// Sends the answer `message` (a serialized JSON-RPC response) for `p`: at the end of its
/// SSE stream when it became one (after the progress held back), otherwise as the HTTP
/// response.
fn send_answer(cx: &mut RoomCx<'_, Gateway>, p: Pending, message: Vec<u8>) {
    match (p.streaming, p.reply) {
        (true, ReplyTo::Http { conn, .. }) => {
            if let Some(params) = p.progress_held {
                // The latest progress comes before the answer, never after it.
                let note = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                                  "params": params});
                cx.emit(Output::Push {
                    conn,
                    bytes: sse_message(&note),
                });
            }
            let mut bytes = Vec::with_capacity(message.len() + 24);
            bytes.extend_from_slice(b"event: message\ndata: ");
            bytes.extend_from_slice(&message);
            bytes.extend_from_slice(b"\n\n");
            cx.emit(Output::Push { conn, bytes });
            cx.emit(Output::End { conn });
        }
        _ => cx.emit(Output::Http {
            reply: p.reply,
            response: http::Response::json(200, message),
        }),
    }
}

/// A server tool's answer as a `CallToolResult`: the server's own result when it gave one
/// (also when it said `isError`), otherwise a tool error saying why the call did not happen
/// (server not active, timed out, busy, gone), so the model reads the reason.
fn tool_result(answer: Answer) -> Value {
    match answer {
        Ok(mut v) => v["result"].take(),
        Err(mut e) => match e.data.as_mut().map(|d| d["result"].take()) {
            Some(r @ Value::Object(_)) if e.code == ErrorCode::ToolError => r,
            _ => json!({
                "content": [{"type": "text", "text": e.message}],
                "isError": true,
            }),
        },
    }
}

/// A server's `-32042` (URL elicitation required) refusing a tool call, as the JSON-RPC error
/// the client gets: the specification has it reach the client as that error, whose
/// `data.elicitations` name the URLs to open. Bounded: at most [`ask::URL_ELICITATIONS`]
/// elicitations, each an object of at most [`MAX_URI_BYTES`] of JSON (larger ones are left
/// out). `None` for any other answer.
fn url_required(id: &Value, answer: &Answer) -> Option<Value> {
    let e = answer.as_ref().err()?;
    let data = e.data.as_ref().filter(|_| e.code == ErrorCode::McpError)?;
    if data["code"].as_i64() != Some(code::URL_ELICITATION_REQUIRED) {
        return None;
    }
    let elicitations: Vec<&Value> = data["data"]["elicitations"]
        .as_array()?
        .iter()
        .filter(|e| e.is_object() && e.to_string().len() <= MAX_URI_BYTES)
        .take(ask::URL_ELICITATIONS)
        .collect();
    Some(json!({"jsonrpc": "2.0", "id": id, "error": {
        "code": code::URL_ELICITATION_REQUIRED,
        "message": e.message,
        "data": {"elicitations": elicitations},
    }}))
}

/// A server's `CompleteResult` with at most [`MAX_COMPLETION_VALUES`] values (`hasMore` set
/// when some were left out).
fn bounded_completion(mut result: Value) -> Value {
    if let Some(Value::Object(completion)) = result.get_mut("completion") {
        if let Some(Value::Array(values)) = completion.get_mut("values") {
            if values.len() > MAX_COMPLETION_VALUES {
                values.truncate(MAX_COMPLETION_VALUES);
                completion.insert("hasMore".into(), Value::Bool(true));
            }
        }
    }
    result
}

/// A daemon tool's answer (a JSON document) as a `CallToolResult` with structured content.
fn own_result(answer: Answer) -> Value {
    match answer {
        Ok(v) => {
            let structured = if v.is_object() {
                v
            } else {
                json!({"value": v})
            };
            json!({
                "content": [{"type": "text", "text": structured.to_string()}],
                "structuredContent": structured,
            })
        }
        Err(e) => json!({
            "content": [{"type": "text", "text": e.message}],
            "isError": true,
        }),
    }
}

fn refuse(cx: &mut RoomCx<'_, Gateway>, reply: ReplyTo, (status, code, message): Refusal) {
    let response = rpc_error_response(status, &Value::Null, code, &message);
    cx.emit(Output::Http { reply, response });
}

fn accepted(cx: &mut RoomCx<'_, Gateway>, reply: ReplyTo) {
    cx.emit(Output::Http {
        reply,
        response: http::Response::json(202, Vec::new()),
    });
}

fn respond(cx: &mut RoomCx<'_, Gateway>, reply: ReplyTo, id: &Value, result: Value) {
    cx.emit(Output::Http {
        reply,
        response: rpc_response(id, result),
    });
}

/// A JSON-RPC result as a 200 `application/json` response.
fn rpc_response(id: &Value, result: Value) -> http::Response {
    let body = json!({"jsonrpc": "2.0", "id": id, "result": result});
    http::Response::json(200, serde_json::to_vec(&body).unwrap_or_default())
}

/// A JSON-RPC error message.
fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// A JSON-RPC error as a response of `status`.
fn rpc_error_response(status: u16, id: &Value, code: i64, message: &str) -> http::Response {
    http::Response::json(
        status,
        rpc_error(id, code, message).to_string().into_bytes(),
    )
}

/// One SSE `message` event carrying a JSON-RPC message.
fn sse_message(message: &Value) -> Vec<u8> {
    format!("event: message\ndata: {message}\n\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::timer::TimerWheel;
    use crate::reactor::{LoopStats, Timers};
    use crate::room::Wiring;

    /// The loop as the gateway sees it: its timers (no worker jobs).
    pub(super) struct Loop {
        pub(super) wheel: TimerWheel<Timer>,
    }

    impl Wiring<Timer, Job> for Loop {
        fn timers(&mut self) -> &mut dyn Timers<Timer> {
            &mut self.wheel
        }
        // The gateway has no jobs (`Job` has no values): a submission cannot even be built.
        #[allow(unreachable_code)]
        fn submit(
            &mut self,
            _timeout: Duration,
            _work: Box<dyn FnOnce() -> Job + Send>,
            fail: Box<dyn FnOnce(&str) -> Job>,
        ) -> Result<(), Job> {
            match fail("no worker") {}
        }
    }

    /// A gateway driven by synthetic requests; what it says is kept in `out`.
    pub(super) struct Harness {
        pub(super) gateway: Gateway,
        poll: mio::Poll,
        stats: LoopStats,
        pub(super) wiring: Loop,
        pub(super) out: Vec<Output>,
        next_conn: u32,
    }

    impl Harness {
        pub(super) fn new() -> Harness {
            Harness {
                gateway: Gateway::new(&Config::default()),
                poll: mio::Poll::new().expect("poll"),
                stats: LoopStats::default(),
                wiring: Loop {
                    wheel: TimerWheel::new(Instant::now()),
                },
                out: Vec::new(),
                next_conn: 0,
            }
        }

        /// One request on a connection of its own; the connection.
        pub(super) fn send(
            &mut self,
            method: &str,
            headers: &[(&str, &str)],
            body: &str,
        ) -> ConnId {
            self.next_conn += 1;
            let conn = ConnId {
                slot: self.next_conn,
                generation: 0,
            };
            let request = http::Request {
                method: method.into(),
                path: "/mcp".into(),
                query: String::new(),
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase().into(), v.to_string()))
                    .collect(),
                body: body.as_bytes().to_vec(),
                keep_alive: true,
            };
            let reply = ReplyTo::Http {
                conn,
                seq: 0,
                started: Instant::now(),
                request_id: 0,
                route: "/mcp",
                method: "POST",
            };
            let mut cx = RoomCx::new(
                self.poll.registry(),
                &self.stats,
                &mut self.wiring,
                &mut self.out,
            );
            self.gateway
                .on_http(&mut cx, &request, reply, Instant::now());
            conn
        }

        pub(super) fn hangup(&mut self, gone: ConnId) {
            let mut cx = RoomCx::new(
                self.poll.registry(),
                &self.stats,
                &mut self.wiring,
                &mut self.out,
            );
            self.gateway.on_hangups(&mut cx, |c| c == gone);
        }

        /// The HTTP answers given (conn, status, body) and the requests asked, since the last
        /// look.
        fn take(&mut self) -> (Vec<(ConnId, u16, Value)>, Vec<Request>) {
            let mut answers = Vec::new();
            let mut asked = Vec::new();
            for o in self.out.drain(..) {
                match o {
                    Output::Http {
                        reply: ReplyTo::Http { conn, .. },
                        response,
                    } => {
                        let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
                        answers.push((conn, response.status, body));
                    }
                    Output::Effect(Effect::Request { request, .. }) => asked.push(*request),
                    _ => {}
                }
            }
            (answers, asked)
        }
    }

    fn call(id: u64) -> String {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "vsm__status", "arguments": {}}})
        .to_string()
    }

    #[test]
    fn session_ids_spread_over_the_buckets() {
        use std::hash::BuildHasher;
        // Ids as `initialize` makes them (32 hex digits of random bytes), from a fixed LCG.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut buckets = BTreeSet::new();
        let hasher = BuildHasherDefault::<IdHasher>::default();
        for _ in 0..256 {
            let id: String = (0..16)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    format!("{:02x}", (state >> 56) as u8)
                })
                .collect();
            // hashbrown picks the bucket by the low bits: 256 ids over 128 buckets fill
            // about 110 of them when spread.
            buckets.insert(hasher.hash_one(id.as_str()) & 127);
        }
        assert!(buckets.len() > 95, "{} buckets", buckets.len());
    }

    #[test]
    fn a_token_is_the_prefix_and_the_tag_in_decimal() {
        for tag in [0, 7, 10, 99, 100, 123_456_789, u64::MAX] {
            assert_eq!(token_of(tag), format!("{TOKEN_PREFIX}{tag}"));
        }
    }

    #[test]
    fn calls_in_flight_are_bounded_per_session_and_cancelled_by_the_client_or_its_end() {
        let mut h = Harness::new();
        let session = h.open();
        let sid = ("Mcp-Session-Id", session.as_str());
        let mut conns = Vec::new();
        for id in 1..=MAX_CALLS_PER_SESSION as u64 {
            conns.push(h.send("POST", &[sid], &call(id)));
        }
        let (answers, asked) = h.take();
        assert!(answers.is_empty(), "{answers:?}");
        assert_eq!(asked.len(), MAX_CALLS_PER_SESSION);
        // One more is refused with a JSON-RPC error saying why.
        let extra = h.send("POST", &[sid], &call(1000));
        let (answers, asked) = h.take();
        assert!(asked.is_empty());
        match &answers[..] {
            [(c, 200, body)] if *c == extra => {
                assert_eq!(body["id"], 1000, "{body}");
                assert_eq!(body["error"]["code"], code::SERVER_ERROR, "{body}");
                let m = body["error"]["message"].as_str().unwrap_or_default();
                assert!(m.contains("in flight"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        // The client cancels call 1: its POST gets a 202 and no response, and there is room.
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                            "params": {"requestId": 1, "reason": "enough"}});
        let note = h.send("POST", &[sid], &cancel.to_string());
        let (answers, _) = h.take();
        let statuses: Vec<(ConnId, u16)> = answers.iter().map(|(c, s, _)| (*c, *s)).collect();
        assert_eq!(statuses, [(conns[0], 202), (note, 202)]);
        h.send("POST", &[sid], &call(1001));
        let (answers, asked) = h.take();
        assert!(answers.is_empty() && asked.len() == 1, "{answers:?}");
        // The client of call 2 goes away: its call ends (its POST gets a 202 nobody reads).
        h.hangup(conns[1]);
        let (answers, _) = h.take();
        assert_eq!(
            answers.iter().map(|(c, s, _)| (*c, *s)).collect::<Vec<_>>(),
            [(conns[1], 202)]
        );
        // The session ends: every call left is answered with -32001, once.
        h.send("DELETE", &[sid], "");
        let (answers, _) = h.take();
        let errors = answers
            .iter()
            .filter(|(_, _, b)| b["error"]["code"] == code::SESSION_NOT_FOUND)
            .count();
        assert_eq!(errors, MAX_CALLS_PER_SESSION - 1, "{answers:?}");
        assert!(h.gateway.pending.is_empty());
    }

    impl Harness {
        pub(super) fn cx_do(&mut self, f: impl FnOnce(&mut Gateway, &mut RoomCx<'_, Gateway>)) {
            let mut cx = RoomCx::new(
                self.poll.registry(),
                &self.stats,
                &mut self.wiring,
                &mut self.out,
            );
            f(&mut self.gateway, &mut cx);
        }

        /// Server `s`, serving run `run` (or stopped), listing `x://r` and the template
        /// `x://t/{n}`.
        fn serve(&mut self, run: u64, serves: bool) {
            let resources = [json!({"uri": "x://r", "name": "r"})];
            let templates = [json!({"uriTemplate": "x://t/{n}", "name": "t"})];
            let view = crate::snapshot::ServerView {
                id: "s",
                status: if serves { "active" } else { "stopped" },
                serves,
                breaker_open: false,
                capabilities: &[],
                allow_capabilities: &[],
                tools: &[],
                tools_version: (run, 0),
                resources: &resources,
                resource_templates: &templates,
                prompts: &[],
            };
            self.cx_do(|g, cx| crate::room::Follows::servers(g, cx, &[view]));
        }

        /// `initialize`; the session id.
        fn open(&mut self) -> String {
            self.open_with(json!({}))
        }

        /// `initialize` by a client that declared `caps`; the session id.
        pub(super) fn open_with(&mut self, caps: Value) -> String {
            let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                              "params": {"protocolVersion": "2025-11-25", "capabilities": caps}});
            self.send("POST", &[], &init.to_string());
            let id = self
                .out
                .iter()
                .find_map(|o| match o {
                    Output::Http { response, .. } => response
                        .headers
                        .iter()
                        .find(|(k, _)| *k == "Mcp-Session-Id")
                        .map(|(_, v)| v.clone()),
                    _ => None,
                })
                .expect("a session");
            self.out.clear();
            id
        }

        /// One request of session `sid`: (the JSON-RPC answers given, the requests asked
        /// with their tags).
        fn rpc(
            &mut self,
            sid: &str,
            method: &str,
            params: Value,
        ) -> (Vec<Value>, Vec<(u64, Request)>) {
            let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
            self.send("POST", &[("Mcp-Session-Id", sid)], &body.to_string());
            self.drain()
        }

        fn drain(&mut self) -> (Vec<Value>, Vec<(u64, Request)>) {
            let mut answers = Vec::new();
            let mut asked = Vec::new();
            for o in self.out.drain(..) {
                match o {
                    Output::Http { response, .. } => {
                        answers.push(serde_json::from_slice(&response.body).unwrap_or(Value::Null))
                    }
                    Output::Effect(Effect::Request { tag, request, .. }) => {
                        asked.push((tag, *request))
                    }
                    _ => {}
                }
            }
            (answers, asked)
        }

        fn end(&mut self, sid: &str) -> Vec<(u64, Request)> {
            self.send("DELETE", &[("Mcp-Session-Id", sid)], "");
            self.drain().1
        }

        fn answer(&mut self, tag: u64, answer: Answer) -> Vec<Value> {
            self.cx_do(|g, cx| g.on_answer(cx, tag, answer));
            self.drain().0
        }
    }

    /// (server, uri, subscribe) of each `Subscribe` asked.
    fn subscribes(asked: &[(u64, Request)]) -> Vec<(String, String, bool)> {
        asked
            .iter()
            .filter_map(|(_, r)| match r {
                Request::Mcp(McpRequest::Subscribe { id, uri, subscribe }) => {
                    Some((id.clone(), uri.clone(), *subscribe))
                }
                _ => None,
            })
            .collect()
    }

    /// (server, level) of each `SetLogLevel` asked.
    fn levels(asked: &[(u64, Request)]) -> Vec<(String, &'static str)> {
        asked
            .iter()
            .filter_map(|(_, r)| match r {
                Request::Mcp(McpRequest::SetLogLevel { id, level }) => Some((id.clone(), *level)),
                _ => None,
            })
            .collect()
    }

    fn sub(uri: &str, on: bool) -> (String, String, bool) {
        ("s".into(), uri.into(), on)
    }

    #[test]
    fn a_subscription_is_held_once_upstream_ends_with_its_last_session_and_is_renewed_by_a_new_run()
    {
        let mut h = Harness::new();
        h.serve(1, true);
        let (a, b) = (h.open(), h.open());
        let uri = json!({"uri": "x://r"});
        // The first asks the server and is answered with its answer.
        let (answers, asked) = h.rpc(&a, "resources/subscribe", uri.clone());
        assert!(answers.is_empty(), "{answers:?}");
        assert_eq!(subscribes(&asked), [sub("x://r", true)]);
        let answers = h.answer(asked[0].0, Ok(json!({"result": {}})));
        assert_eq!(answers[0]["result"], json!({}), "{answers:?}");
        // A second session, and the first again: answered at once, nothing asked.
        for sid in [&b, &a] {
            let (answers, asked) = h.rpc(sid, "resources/subscribe", uri.clone());
            assert_eq!(answers[0]["result"], json!({}), "{answers:?}");
            assert!(asked.is_empty(), "{asked:?}");
        }
        // One unsubscribes: the other holds it, so the server is not told.
        let (answers, asked) = h.rpc(&a, "resources/unsubscribe", uri.clone());
        assert_eq!(answers[0]["result"], json!({}), "{answers:?}");
        assert!(asked.is_empty(), "{asked:?}");
        // An update reaches the session holding it only (its replay keeps it).
        let updated = crate::events::EventData::McpResourceUpdated {
            server_id: "s".into(),
            uri: "x://r".into(),
        };
        h.cx_do(|g, cx| g.on_event(cx, 1, crate::events::Channel::McpServers, &updated));
        assert_eq!(h.gateway.sessions[&b].replay.len(), 1);
        assert!(h.gateway.sessions[&a].replay.is_empty());
        // A new run of the server: subscribed again.
        h.serve(1, false);
        h.serve(2, true);
        assert_eq!(subscribes(&h.drain().1), [sub("x://r", true)]);
        // The last session holding it ends: the server's subscription ends.
        assert_eq!(subscribes(&h.end(&b)), [sub("x://r", false)]);
        assert!(h.gateway.subscribed.is_empty());
        // A URI no server offers, and a refusal of the server (undone).
        let (answers, _) = h.rpc(&a, "resources/subscribe", json!({"uri": "y://none"}));
        assert_eq!(answers[0]["error"]["code"], code::RESOURCE_NOT_FOUND);
        let (_, asked) = h.rpc(&a, "resources/subscribe", json!({"uri": "x://t/1"}));
        let refused =
            crate::api::ApiError::new(ErrorCode::Conflict, "offers no resources.subscribe");
        let answers = h.answer(asked[0].0, Err(refused));
        assert!(answers[0]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("subscribe")));
        assert!(h.gateway.subscribed.is_empty());
        assert!(h.gateway.sessions[&a].subscriptions.is_empty());
        // Bounded per session.
        for n in 0..MAX_SUBSCRIPTIONS_PER_SESSION {
            let (_, asked) = h.rpc(
                &a,
                "resources/subscribe",
                json!({"uri": format!("x://t/{n}")}),
            );
            h.answer(asked[0].0, Ok(json!({"result": {}})));
        }
        let (answers, asked) = h.rpc(&a, "resources/subscribe", json!({"uri": "x://r"}));
        assert!(asked.is_empty());
        let m = answers[0]["error"]["message"].as_str().unwrap_or_default();
        assert!(m.contains("at most 64"), "{m}");
        // Its end lets go of all of them.
        assert_eq!(subscribes(&h.end(&a)).len(), MAX_SUBSCRIPTIONS_PER_SESSION);
        assert!(h.gateway.subscribed.is_empty());
    }

    #[test]
    fn servers_get_the_most_verbose_level_wanted_once_per_change_and_run_and_logs_are_filtered() {
        let mut h = Harness::new();
        h.serve(1, true);
        let (a, b) = (h.open(), h.open());
        let (answers, asked) = h.rpc(&a, "logging/setLevel", json!({"level": "warning"}));
        assert_eq!(answers[0]["result"], json!({}));
        assert_eq!(levels(&asked), [("s".to_string(), "warning")]);
        let (answers, asked) = h.rpc(&a, "logging/setLevel", json!({"level": "loud"}));
        assert_eq!(answers[0]["error"]["code"], code::INVALID_PARAMS);
        assert!(asked.is_empty());
        let (_, asked) = h.rpc(&b, "logging/setLevel", json!({"level": "debug"}));
        assert_eq!(levels(&asked), [("s".to_string(), "debug")]);
        let (_, asked) = h.rpc(&b, "logging/setLevel", json!({"level": "debug"}));
        assert!(asked.is_empty(), "no change, nothing asked: {asked:?}");
        // A log message goes to the sessions whose level admits it, logger prefixed.
        let log = |level: &'static str| crate::events::EventData::McpServerLog {
            server_id: "s".into(),
            level,
            logger: Some("lg".into()),
            data: json!("hello"),
        };
        for level in ["info", "error"] {
            let e = log(level);
            h.cx_do(|g, cx| g.on_event(cx, 1, crate::events::Channel::McpServers, &e));
        }
        assert_eq!(h.gateway.sessions[&b].replay.len(), 2);
        let kept = &h.gateway.sessions[&a].replay;
        assert_eq!(kept.len(), 1, "only the error passes warning");
        let text = String::from_utf8_lossy(&kept[0].1);
        assert!(
            text.contains(r#""logger":"s__lg""#) && text.contains(r#""level":"error""#),
            "{text}"
        );
        // The verbose session ends: back to warning; the last ends: warning stays.
        assert_eq!(levels(&h.end(&b)), [("s".to_string(), "warning")]);
        assert!(levels(&h.end(&a)).is_empty());
        // A new run with nobody wanting logs is left alone; a new wish reaches it.
        h.serve(2, true);
        assert!(levels(&h.drain().1).is_empty());
        let c = h.open();
        let (_, asked) = h.rpc(&c, "logging/setLevel", json!({"level": "info"}));
        assert_eq!(levels(&asked), [("s".to_string(), "info")]);
        h.serve(3, true);
        assert_eq!(
            levels(&h.drain().1),
            [("s".to_string(), "info")],
            "again for a new run"
        );
    }

    #[test]
    fn completions_are_bounded_to_a_hundred_values() {
        let many: Vec<Value> = (0..150).map(|n| json!(n.to_string())).collect();
        let r = bounded_completion(json!({"completion": {"values": many, "hasMore": false}}));
        assert_eq!(
            r["completion"]["values"].as_array().map(Vec::len),
            Some(100)
        );
        assert_eq!(r["completion"]["hasMore"], true);
        let few = json!({"completion": {"values": ["a"], "total": 1}});
        assert_eq!(bounded_completion(few.clone()), few);
        assert_eq!(
            bounded_completion(json!([1])),
            json!([1]),
            "not a result: as it is"
        );
    }

    fn list_changed(n: u64) -> Value {
        json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": {"n": n}})
    }

    #[test]
    fn the_replay_buffer_gives_what_was_missed_or_nothing_when_it_cannot() {
        let mut s = Session::new("s", VERSIONS[0], Instant::now());
        assert!(
            s.missed_since(0).is_none_or(|m| m.is_empty()),
            "nothing given yet"
        );
        let first = s.record(&list_changed(1));
        assert!(first.starts_with(b"id: 1\nevent: message\ndata: {"));
        s.record(&list_changed(2));
        let missed = s.missed_since(1).expect("kept");
        assert!(
            missed.starts_with(b"id: 2\n"),
            "{}",
            String::from_utf8_lossy(&missed)
        );
        assert_eq!(
            s.missed_since(2).as_deref(),
            Some(&b""[..]),
            "nothing missed"
        );
        assert_eq!(
            s.missed_since(0).map(|m| m.len()),
            Some(first.len() + missed.len())
        );
        assert_eq!(s.missed_since(3), None, "an id not given");
        // Bounded by count: the oldest go, and an id before the buffer starts afresh.
        for n in 3..=(REPLAY_EVENTS as u64 + 10) {
            s.record(&list_changed(n));
        }
        assert_eq!(s.replay.len(), REPLAY_EVENTS);
        assert_eq!(s.missed_since(1), None, "too old");
        let oldest = s.replay.front().map(|(id, _)| *id).expect("events");
        assert!(s.missed_since(oldest - 1).is_some());
        // Bounded by bytes.
        let big = json!({"jsonrpc": "2.0", "method": "x", "params": {"pad": "p".repeat(40_000)}});
        for _ in 0..10 {
            s.record(&big);
        }
        assert!(s.replay_bytes <= REPLAY_BYTES, "{}", s.replay_bytes);
        assert_eq!(
            s.replay_bytes,
            s.replay.iter().map(|(_, b)| b.len()).sum::<usize>()
        );
    }
}
