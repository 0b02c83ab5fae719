//! The gateway room: the daemon as one MCP server at `/mcp` (Streamable HTTP, protocol
//! 2025-11-25, with 2025-06-18 and 2025-03-26 accepted), offering the tools of every active
//! server it supervises (see [`catalog`]) and forwarding calls to the MCP room through the
//! command layer, so a call here is exactly a `tools/call` of the REST API: the same
//! per-call deadline, the same fast refusal when the server is not active.
//!
//! Transport: `POST /mcp` carries one JSON-RPC message; requests are answered with
//! `application/json`, notifications and responses with 202. `initialize` opens a session
//! (`Mcp-Session-Id`); every later message names it and, when it sends
//! `MCP-Protocol-Version`, that must be a version we speak (400 otherwise). `GET /mcp`
//! opens the session's one server-to-client SSE stream (`notifications/tools/list_changed`);
//! `DELETE /mcp` ends the session. The access layer has already checked Host, Origin (403),
//! the bearer token (401) and the body size before a request gets here.
//!
//! Invariants: sessions are at most `gateway.max_sessions` (an `initialize` beyond is refused,
//! never evicts a live client) and a session without requests and without an open stream
//! for `gateway.session_idle_ms` ends; each session has at most one stream; every forwarded
//! call is answered exactly once (the MCP room answers every request it takes).

pub mod catalog;
pub mod stdio;

use crate::api::{Answer, ConnId, DaemonRequest, ErrorCode, McpRequest, ReplyTo, Request};
use crate::config::{Config, GatewayConfig};
use crate::net::http;
use crate::room::{Effect, Room, RoomCx};
use catalog::{Catalog, Target};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The protocol versions `/mcp` speaks, newest first (the first is offered to clients that
/// ask for one we do not know).
pub const VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];

/// JSON-RPC error codes.
mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    /// Transport-level refusals (no session, wrong version); the SDKs use it too.
    pub const SERVER_ERROR: i64 = -32000;
    /// The session named is unknown or over.
    pub const SESSION_NOT_FOUND: i64 = -32001;
}

/// The room has no timers: sessions are swept when requests arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {}

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
}

impl From<Effect> for Output {
    fn from(e: Effect) -> Self {
        Output::Effect(e)
    }
}

/// One client's session.
#[derive(Debug)]
struct Session {
    /// The negotiated protocol version.
    version: &'static str,
    /// Last request.
    last_seen: Instant,
    /// The open GET stream, if any.
    stream: Option<ConnId>,
}

/// A forwarded call waiting for its answer.
#[derive(Debug)]
struct Pending {
    reply: ReplyTo,
    /// The client's JSON-RPC id.
    id: Value,
    /// Whether it went to one of the daemon's own tools (the answer is a status document,
    /// not a tool result).
    own: bool,
}

/// The `/mcp` endpoint.
#[derive(Debug)]
pub struct Gateway {
    settings: GatewayConfig,
    sessions: HashMap<String, Session>,
    /// Every server's id, status and (when active) the tools the capability policy lets it
    /// offer, as the MCP room last reported them.
    servers: Vec<(String, &'static str, Vec<Value>)>,
    /// The capability policy, from the configuration.
    policy: crate::variety::policy::Policy,
    /// Tools of active servers that the policy keeps off the list, by the name they would have
    /// (`SERVER__TOOL`): (server, tool, blocked capabilities). A call of one is refused.
    blocked: HashMap<String, (String, String, Vec<String>)>,
    catalog: Catalog,
    pending: HashMap<u64, Pending>,
    next_tag: u64,
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
            sessions: HashMap::new(),
            servers: Vec::new(),
            policy: crate::variety::policy::Policy::new(config),
            blocked: HashMap::new(),
            catalog,
            pending: HashMap::new(),
            next_tag: 1,
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
    }

    fn rebuild(&mut self, cx: &mut RoomCx<'_, Self>) {
        let catalog = Catalog::build(
            self.servers
                .iter()
                .map(|(id, _, t)| (id.as_str(), t.as_slice())),
            &self.settings.tool_separator,
            &self.settings.daemon_tools,
        );
        if catalog == self.catalog {
            return;
        }
        self.catalog = catalog;
        let event =
            sse_message(&json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}));
        for s in self.sessions.values() {
            if let Some(conn) = s.stream {
                cx.emit(Output::Push {
                    conn,
                    bytes: event.clone(),
                });
            }
        }
    }

    /// Ends sessions idle for longer than `gateway.session_idle_ms` (a session with an open
    /// stream is not idle).
    fn sweep(&mut self, now: Instant) {
        let idle = Duration::from_millis(self.settings.session_idle_ms);
        self.sessions.retain(|id, s| {
            let keep = s.stream.is_some() || now.duration_since(s.last_seen) < idle;
            if !keep {
                log::debug!("/mcp session {id} expired");
            }
            keep
        });
    }

    /// One HTTP request for `/mcp` (already through the access checks).
    pub fn on_http(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        request: &http::Request,
        reply: ReplyTo,
        now: Instant,
    ) {
        self.sweep(now);
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
                    let Some(s) = self.sessions.get_mut(&id) else {
                        return;
                    };
                    if s.stream.is_some() {
                        let m = "this session already has its event stream open";
                        return refuse(cx, reply, (409, code::SERVER_ERROR, m.into()));
                    }
                    s.stream = Some(conn);
                    cx.emit(Output::Stream { reply });
                }
            },
            "DELETE" => match self.session_of(request, now) {
                Err(r) => refuse(cx, reply, r),
                Ok(id) => {
                    if let Some(conn) = self.sessions.remove(&id).and_then(|s| s.stream) {
                        cx.emit(Output::Close { conn });
                    }
                    log::debug!("/mcp session {id} ended by its client");
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
    fn session_of(&mut self, request: &http::Request, now: Instant) -> Result<String, Refusal> {
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
        Ok(id.to_string())
    }

    fn post(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        request: &http::Request,
        reply: ReplyTo,
        now: Instant,
    ) {
        let message: Value = match serde_json::from_slice(&request.body) {
            Ok(v) => v,
            Err(e) => {
                let m = format!("the body is not JSON: {e}");
                return refuse(cx, reply, (400, code::PARSE_ERROR, m));
            }
        };
        let Value::Object(map) = &message else {
            let m = if message.is_array() {
                "JSON-RPC batches are not accepted: send one message per POST"
            } else {
                "a JSON-RPC message is an object"
            };
            return refuse(cx, reply, (400, code::INVALID_REQUEST, m.into()));
        };
        let id = map.get("id").cloned();
        let Some(method) = map.get("method").and_then(Value::as_str) else {
            if map.contains_key("result") || map.contains_key("error") {
                // A client's answer to a server request: we send none, so it is noted only.
                if let Err(r) = self.session_of(request, now) {
                    return refuse(cx, reply, r);
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
        if let Err(r) = self.session_of(request, now) {
            return refuse(cx, reply, r);
        }
        let Some(id) = id else {
            // Notifications (initialized, cancelled, roots changed...) need no answer.
            return accepted(cx, reply);
        };
        let params = map.get("params").unwrap_or(&Value::Null);
        match method {
            "ping" => respond(cx, reply, &id, json!({})),
            "tools/list" => respond(cx, reply, &id, json!({"tools": self.catalog.listing()})),
            "tools/call" => self.call(cx, reply, id, params),
            _ => {
                let m: String = method.chars().take(80).collect();
                let response = rpc_error_response(
                    200,
                    &id,
                    code::METHOD_NOT_FOUND,
                    &format!("method {m:?} is not offered here (tools only)"),
                );
                cx.emit(Output::Http { reply, response });
            }
        }
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
        self.sessions.insert(
            session.clone(),
            Session {
                version,
                last_seen: now,
                stream: None,
            },
        );
        log::debug!("/mcp session {session} opened ({version})");
        let result = json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": true}},
            "serverInfo": {
                "name": "vsm-daemon",
                "title": "vsm-daemon MCP gateway",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "instructions": format!(
                "Tools of the MCP servers this daemon supervises, named SERVER{sep}TOOL, and the daemon's own under vsm{sep}.",
                sep = self.settings.tool_separator
            ),
        });
        let mut response = rpc_response(&id, result);
        response.headers.push(("Mcp-Session-Id", session));
        cx.emit(Output::Http { reply, response });
    }

    fn call(&mut self, cx: &mut RoomCx<'_, Self>, reply: ReplyTo, id: Value, params: &Value) {
        let Some(name) = params.get("name").and_then(Value::as_str) else {
            let response = rpc_error_response(
                200,
                &id,
                code::INVALID_PARAMS,
                "tools/call needs params.name",
            );
            return cx.emit(Output::Http { reply, response });
        };
        let arguments = match params.get("arguments") {
            None | Some(Value::Null) => json!({}),
            Some(a @ Value::Object(_)) => a.clone(),
            Some(_) => {
                let response = rpc_error_response(
                    200,
                    &id,
                    code::INVALID_PARAMS,
                    "tools/call params.arguments must be an object",
                );
                return cx.emit(Output::Http { reply, response });
            }
        };
        if let Some((server, tool, capabilities)) = self.blocked.get(name) {
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
            // A tool of a server that is down: say so at once (the client's list is older
            // than the server's stop), as a tool error the model can read.
            let sep = &self.settings.tool_separator;
            let down = self.servers.iter().find(|(id, status, _)| {
                !matches!(*status, "active" | "degraded")
                    && name.len() > id.len() + sep.len()
                    && name.starts_with(id.as_str())
                    && name[id.len()..].starts_with(sep.as_str())
            });
            if let Some((server, status, _)) = down {
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
        let (request, own) = match &entry.target {
            Target::Server { server, tool } => (
                Request::Mcp(McpRequest::Call {
                    id: server.clone(),
                    name: tool.clone(),
                    arguments,
                    timeout_ms: None,
                }),
                false,
            ),
            Target::Daemon(t) if t == "status" => (
                Request::Daemon(DaemonRequest::Status { detailed: false }),
                true,
            ),
            Target::Daemon(_) => (Request::Mcp(McpRequest::List { status: "all" }), true),
        };
        let tag = self.next_tag;
        self.next_tag += 1;
        self.pending.insert(tag, Pending { reply, id, own });
        cx.ask(tag, request);
    }
}

/// The servers or their tools changed: the active servers' tools, less those the capability
/// policy blocks, make the catalog; clients with an open stream get
/// `notifications/tools/list_changed` when it changed.
impl crate::room::Follows for Gateway {
    fn servers(&mut self, cx: &mut RoomCx<'_, Self>, servers: &[crate::snapshot::ServerView<'_>]) {
        self.blocked.clear();
        let sep = &self.settings.tool_separator;
        self.servers = servers
            .iter()
            .map(|s| {
                let mut tools = Vec::new();
                if s.serves {
                    for t in s.tools {
                        let text = crate::variety::policy::tool_text(t);
                        let refused = self.policy.tool_refused(text, s.allow_capabilities);
                        if refused.is_empty() {
                            tools.push(t.clone());
                        } else {
                            let name = format!("{}{sep}{}", s.id, text.name);
                            let entry = (s.id.to_string(), text.name.to_string(), refused);
                            self.blocked.insert(name, entry);
                        }
                    }
                }
                (s.id.to_string(), s.status, tools)
            })
            .collect();
        self.rebuild(cx);
    }
}

impl Room for Gateway {
    type Timer = Timer;
    type Job = Job;
    type Output = Output;
    const NAME: &'static str = "gateway";

    fn on_timer(&mut self, _cx: &mut RoomCx<'_, Self>, timer: Timer) {
        match timer {}
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
        let Some(p) = self.pending.remove(&tag) else {
            log::warn!("/mcp: an answer for call {tag}, which is not waiting");
            return;
        };
        let result = if p.own {
            own_result(answer)
        } else {
            tool_result(answer)
        };
        cx.emit(Output::Http {
            reply: p.reply,
            response: rpc_response(&p.id, result),
        });
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
    http::Response::json(200, body.to_string().into_bytes())
}

/// A JSON-RPC error as a response of `status`.
fn rpc_error_response(status: u16, id: &Value, code: i64, message: &str) -> http::Response {
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    http::Response::json(status, body.to_string().into_bytes())
}

/// One SSE `message` event carrying a JSON-RPC message.
fn sse_message(message: &Value) -> Vec<u8> {
    format!("event: message\ndata: {message}\n\n").into_bytes()
}
