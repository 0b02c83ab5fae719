//! Server-to-client requests through `/mcp` (`gateway.client_requests`): an MCP server's
//! `sampling/createMessage` or `elicitation/create`, made while a `/mcp` client's
//! `tools/call` is in flight on it, goes to that client on the call's stream (the POST's
//! answer becomes an SSE stream if it was not one already), under an id the gateway mints;
//! the client POSTs its JSON-RPC response (202), which goes back to the server with the
//! server's own id (the MCP room keeps it, see `mcp/asks.rs`).
//!
//! Routing: stdio names no related request, so the MCP room sends the progress tokens of
//! every tool call in flight on the server. The request is relayed only when all of them are
//! `/mcp` calls of one session (and no `resources/read` or `prompts/get` is in flight there):
//! then it goes on the stream of that session's oldest call that accepts an event stream. A
//! call from the REST API, CLI or WebSocket, or calls of several sessions, make the asker
//! unknowable: the server gets a JSON-RPC error at once, never a wait. So does a request the client did not declare
//! the capability for (`sampling`, `sampling.tools` for a request with tools, `elicitation`
//! form or url mode), and one beyond the bounds.
//!
//! Invariants: at most [`MAX_ASKS_PER_SESSION`] requests wait per session and [`MAX_ASKS`]
//! in all; each is answered to the MCP room exactly once: with the client's response (only
//! from the session it was sent to), or with an error when the call it went out on ends (its
//! answer, its deadline, its cancellation, the client's hang-up or the session's end), and
//! then the client is told with `notifications/cancelled` on the call's stream when it is
//! one. Its deadline is the call's: the MCP room ends the call at its deadline.

use super::{code, sse_message, Gateway, Output, Pending, TOKEN_PREFIX};
use crate::api::{Answer, ApiError, ErrorCode, GatewayRequest, ReplyTo};
use crate::room::RoomCx;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Relayed requests waiting for one session's answer.
pub const MAX_ASKS_PER_SESSION: usize = 16;
/// Relayed requests waiting for an answer on `/mcp`, all sessions together.
pub const MAX_ASKS: usize = 256;
/// URL-mode elicitations remembered for their `notifications/elicitation/complete` (the
/// oldest is forgotten beyond: the notification is optional, a client must not wait for it).
pub const URL_ELICITATIONS: usize = 64;
/// JSON-RPC code of the gateway's own refusals (the code SDK clients answer a request they
/// do not support with); a client's own error keeps its code.
pub const REFUSED: i64 = code::INVALID_REQUEST;

/// The client capabilities a session declared in `initialize` that relaying looks at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    sampling: bool,
    sampling_tools: bool,
    form: bool,
    url: bool,
}

impl Declared {
    /// From `initialize`'s params (`capabilities.sampling`, `.elicitation`): an empty
    /// `elicitation` object means form mode (as the specification keeps it compatible).
    pub fn from_initialize(params: Option<&Value>) -> Declared {
        let caps = params.and_then(|p| p.get("capabilities"));
        fn object(v: Option<&Value>) -> Option<&Value> {
            v.filter(|v| v.is_object())
        }
        let sampling = object(caps.and_then(|c| c.get("sampling")));
        let elicitation = object(caps.and_then(|c| c.get("elicitation")));
        let (form, url) = match elicitation {
            None => (false, false),
            Some(e) => {
                let form = object(e.get("form")).is_some();
                let url = object(e.get("url")).is_some();
                (form || !url, url)
            }
        };
        Declared {
            sampling: sampling.is_some(),
            sampling_tools: object(sampling.and_then(|s| s.get("tools"))).is_some(),
            form,
            url,
        }
    }

    /// Whether it declared anything that can be relayed.
    pub(super) fn any(&self) -> bool {
        *self != Declared::default()
    }

    /// What of it can be relayed, as client capabilities: what a 2026-07-28 server is told
    /// the client of a session-era call can answer (see [`super::input`]).
    pub(super) fn capabilities(&self) -> Value {
        let mut caps = Map::new();
        if self.sampling {
            let tools = if self.sampling_tools {
                json!({"tools": {}})
            } else {
                json!({})
            };
            caps.insert("sampling".into(), tools);
        }
        let mut modes = Map::new();
        for (on, mode) in [(self.form, "form"), (self.url, "url")] {
            if on {
                modes.insert(mode.into(), json!({}));
            }
        }
        if !modes.is_empty() {
            caps.insert("elicitation".into(), Value::Object(modes));
        }
        Value::Object(caps)
    }

    /// Whether the client may be sent `method` with `params`; otherwise why not.
    pub(super) fn allows(&self, method: &str, params: &Value) -> Result<(), String> {
        let missing = |what: &str| {
            Err(format!(
                "the /mcp client did not declare the {what} capability"
            ))
        };
        match method {
            "sampling/createMessage" if !self.sampling => missing("sampling"),
            "sampling/createMessage"
                if !self.sampling_tools
                    && (params.get("tools").is_some() || params.get("toolChoice").is_some()) =>
            {
                missing("sampling.tools")
            }
            "sampling/createMessage" => Ok(()),
            "elicitation/create" => match params.get("mode").and_then(Value::as_str) {
                None | Some("form") if self.form => Ok(()),
                None | Some("form") => missing("elicitation (form mode)"),
                Some("url") if self.url => Ok(()),
                Some("url") => missing("elicitation.url"),
                Some(other) => Err(format!(
                    "elicitation mode {:?} is not one the gateway knows",
                    other.chars().take(32).collect::<String>()
                )),
            },
            other => Err(format!(
                "{} is not relayed to /mcp clients",
                other.chars().take(80).collect::<String>()
            )),
        }
    }
}

/// A relayed request waiting for its client's response.
#[derive(Debug)]
struct Asked {
    /// The session it was sent to.
    session: String,
    /// The call on whose stream it went.
    call: u64,
    /// Who takes the answer.
    reply: Asker,
}

/// Who asked a relayed request, and so takes its client's answer.
#[derive(Debug)]
pub(super) enum Asker {
    /// A server, during the call: the MCP room's request (answered once).
    Server(ReplyTo),
    /// A 2026-07-28 server, in its call's `input_required` answer: the key of that input
    /// request (the answer goes into the call's next round, see [`super::input`]).
    Input(String),
}

/// A URL-mode elicitation relayed: whose completion goes where.
#[derive(Debug)]
struct UrlElicitation {
    server: String,
    id: String,
    session: String,
    call: u64,
}

/// The relayed requests waiting, by the id the client was given.
#[derive(Debug, Default)]
pub struct Asks {
    waiting: HashMap<u64, Asked>,
    next: u64,
    /// URL-mode elicitations relayed, oldest first (at most [`URL_ELICITATIONS`]).
    urls: VecDeque<UrlElicitation>,
}

impl Asks {
    /// Keeps a request sent to `session` on the stream of call `call`; the id it goes under.
    pub(super) fn mint(&mut self, session: &str, call: u64, reply: Asker) -> u64 {
        self.next += 1;
        let asked = Asked {
            session: session.to_string(),
            call,
            reply,
        };
        self.waiting.insert(self.next, asked);
        self.next
    }

    /// Why `more` requests cannot wait for `session`'s answers besides those that do, if so.
    pub(super) fn full(&self, session: &str, more: usize) -> Result<(), String> {
        let in_session = self
            .waiting
            .values()
            .filter(|a| a.session == session)
            .count();
        if in_session + more > MAX_ASKS_PER_SESSION {
            return Err(format!(
                "{in_session} requests already wait for this /mcp session's answers (at most {MAX_ASKS_PER_SESSION})"
            ));
        }
        if self.waiting.len() + more > MAX_ASKS {
            return Err(format!(
                "{} requests already wait for /mcp clients' answers (at most {MAX_ASKS})",
                self.waiting.len()
            ));
        }
        Ok(())
    }

    /// Requests waiting for an answer.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }
}

/// A refusal for the MCP room: the server gets a JSON-RPC error with this message.
fn refusal(message: String) -> ApiError {
    ApiError::new(ErrorCode::Conflict, message).with_data(json!({"code": REFUSED}))
}

impl Gateway {
    /// The MCP room relays server `server`'s request `method` (see the module's routing).
    #[allow(clippy::too_many_arguments)]
    fn relay(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        server: &str,
        method: &str,
        params: Value,
        calls: &[String],
        others: bool,
        reply: ReplyTo,
    ) {
        match self.route(server, method, &params, calls, others) {
            Err(why) => {
                log::debug!("/mcp: {method} of {server} not relayed: {why}");
                cx.reply(reply, Err(refusal(why)));
            }
            Ok(tag) => {
                let Some(p) = self.pending.get(&tag) else {
                    return cx.reply(reply, Err(refusal("the call ended".into())));
                };
                let id = self.asks.mint(&p.session, tag, Asker::Server(reply));
                let url_id = params
                    .get("elicitationId")
                    .and_then(Value::as_str)
                    .filter(|_| params.get("mode").and_then(Value::as_str) == Some("url"));
                if let Some(url_id) = url_id {
                    if self.asks.urls.len() >= URL_ELICITATIONS {
                        self.asks.urls.pop_front();
                    }
                    self.asks.urls.push_back(UrlElicitation {
                        server: server.to_string(),
                        id: url_id.to_string(),
                        session: p.session.to_string(),
                        call: tag,
                    });
                }
                let message =
                    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
                self.push_on_call(cx, tag, &message, Instant::now());
            }
        }
    }

    /// The call whose stream server `server`'s request goes on, or why there is none.
    fn route(
        &self,
        server: &str,
        method: &str,
        params: &Value,
        calls: &[String],
        others: bool,
    ) -> Result<u64, String> {
        if !self.settings.client_requests {
            return Err(
                "relaying requests to /mcp clients is turned off (gateway.client_requests)".into(),
            );
        }
        let mut ours = Vec::new();
        let mut foreign = 0;
        for token in calls {
            match token
                .strip_prefix(TOKEN_PREFIX)
                .and_then(|t| t.parse::<u64>().ok())
            {
                Some(tag) if self.pending.contains_key(&tag) => ours.push(tag),
                // A /mcp call that ended here already (its cancel is on its way).
                Some(_) => {}
                None => foreign += 1,
            }
        }
        if foreign > 0 {
            return Err(format!(
                "{foreign} tool call(s) from the REST API, CLI or WebSocket are in flight on '{server}', and they cannot answer it (only a /mcp client can)"
            ));
        }
        if others {
            return Err(format!(
                "a resources/read or prompts/get is in flight on '{server}', so the client that asked cannot be told"
            ));
        }
        let sessions: Vec<&str> = {
            let mut s: Vec<&str> = ours
                .iter()
                .filter_map(|t| self.pending.get(t).map(|p| &*p.session))
                .collect();
            s.sort_unstable();
            s.dedup();
            s
        };
        let session = match sessions[..] {
            [] => return Err(format!("no /mcp tool call is in flight on '{server}'")),
            [one] => one,
            _ => {
                return Err(format!(
                    "tool calls of {} /mcp sessions are in flight on '{server}', so the client that asked cannot be told",
                    sessions.len()
                ))
            }
        };
        // The oldest call whose answer can become a stream carries it.
        let streamable = ours
            .iter()
            .copied()
            .filter(|t| self.pending.get(t).is_some_and(|p| p.sse))
            .min();
        let Some(tag) = streamable.or_else(|| ours.iter().copied().min()) else {
            return Err(format!("no /mcp tool call is in flight on '{server}'"));
        };
        let Some(p) = self.pending.get(&tag) else {
            return Err("the call ended".into());
        };
        if p.modern {
            return Err(
                "the call came as a 2026-07-28 request, an era without server-to-client requests"
                    .into(),
            );
        }
        if !p.sse {
            return Err("the client's tools/call did not accept text/event-stream, the only way to send it a request".into());
        }
        let declared = self.sessions.get(session).map(|s| s.declared);
        declared.unwrap_or_default().allows(method, params)?;
        self.asks.full(session, 1)?;
        Ok(tag)
    }

    /// A client POSTed a JSON-RPC response (`map`) in session `session`: when it answers a
    /// request relayed to that session, it goes to the server. Any other response (a late
    /// one, another session's id) is dropped; the POST gets its 202 either way.
    pub(super) fn client_answered(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        session: &str,
        map: &Map<String, Value>,
    ) {
        let id = map.get("id").and_then(Value::as_u64);
        let mine = id.filter(|id| {
            self.asks
                .waiting
                .get(id)
                .is_some_and(|a| a.session == session)
        });
        let Some(asked) = mine.and_then(|id| self.asks.waiting.remove(&id)) else {
            log::debug!("/mcp: a response to no request of this session waiting: dropped");
            return;
        };
        let answer = match (map.get("result"), map.get("error")) {
            (Some(result), None) => Ok(result.clone()),
            (None, Some(error)) => {
                let code = error.get("code").and_then(Value::as_i64);
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .map(|m| m.chars().take(1024).collect::<String>());
                let data = error.get("data").cloned().unwrap_or(Value::Null);
                Err(match (code, message) {
                    (Some(code), Some(message)) => ApiError::new(ErrorCode::McpError, message)
                        .with_data(json!({"code": code, "data": data})),
                    _ => refusal("the /mcp client answered with a malformed JSON-RPC error".into()),
                })
            }
            _ => Err(refusal(
                "the /mcp client's response has neither a result nor an error".into(),
            )),
        };
        match asked.reply {
            Asker::Server(reply) => cx.reply(reply, answer),
            Asker::Input(key) => self.input_answered(cx, asked.call, key, answer),
        }
    }

    /// Server `server`'s notification `method` about a URL-mode elicitation relayed before:
    /// to the session that was asked, on its call's stream while that call is in flight,
    /// else on its GET stream (kept for replay like the stream's other events). Dropped when
    /// the elicitation is unknown (never relayed, forgotten, its session ended).
    fn notify(&mut self, cx: &mut RoomCx<'_, Self>, server: &str, method: &str, params: Value) {
        let id = params.get("elicitationId").and_then(Value::as_str);
        let found = self
            .asks
            .urls
            .iter()
            .position(|u| u.server == server && Some(u.id.as_str()) == id);
        let Some(url) = found.and_then(|i| self.asks.urls.remove(i)) else {
            log::debug!("/mcp: {method} of {server} for no elicitation relayed: dropped");
            return;
        };
        let message = json!({"jsonrpc": "2.0", "method": method, "params": params});
        match self.pending.get(&url.call) {
            Some(p) if p.streaming && *p.session == *url.session => {
                if let ReplyTo::Http { conn, .. } = p.reply {
                    cx.emit(Output::Push {
                        conn,
                        bytes: sse_message(&message),
                    });
                }
            }
            _ => {
                if let Some(s) = self.sessions.get_mut(&url.session) {
                    let bytes = s.record(&message);
                    if let Some(conn) = s.stream {
                        cx.emit(Output::Push { conn, bytes });
                    }
                }
            }
        }
    }

    /// Call `tag` ended (`p`): the requests relayed on its stream are answered to the server
    /// with an error, and the client, when the call's answer is a stream, is told with
    /// `notifications/cancelled` before the call's own end.
    pub(super) fn end_asks(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64, p: &Pending) {
        if let Some(retry) = &p.retry {
            retry.disarm(cx);
        }
        if self.asks.waiting.is_empty() {
            return;
        }
        let ids: Vec<u64> = self
            .asks
            .waiting
            .iter()
            .filter(|(_, a)| a.call == tag)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(asked) = self.asks.waiting.remove(&id) else {
                continue;
            };
            let reason = "the tool call it was made during ended";
            if let Asker::Server(reply) = asked.reply {
                cx.reply(
                    reply,
                    Err(refusal(format!("{reason} before the client answered"))),
                );
            }
            if let (true, ReplyTo::Http { conn, .. }) = (p.streaming, p.reply) {
                let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                  "params": {"requestId": id, "reason": reason}});
                cx.emit(Output::Push {
                    conn,
                    bytes: sse_message(&note),
                });
            }
        }
    }
}

/// What a 2026-07-28 `tools/call` carries for a modern server besides its arguments (a
/// retry after `input_required`): its `inputResponses` and `requestState`, and the client's
/// `clientCapabilities` from its `_meta`. `None` for a request of the session era.
pub(super) fn modern_input(params: Option<&super::body::Params<'_>>) -> Option<Value> {
    let params = params?;
    let meta = params.meta.as_ref()?.as_object()?;
    meta.version.as_ref()?;
    let capabilities = meta.capabilities.as_ref().map(|c| c.to_value());
    Some(input_from(|key| params.other.get(key), capabilities))
}

/// [`modern_input`] of a 2026-07-28 `prompts/get` or `resources/read` (its `params`, read as
/// a `Value`).
pub(super) fn modern_input_of(params: &Value) -> Option<Value> {
    let meta = params.get("_meta")?.as_object()?;
    meta.get(super::modern::META_VERSION)?;
    let capabilities = meta.get(super::modern::META_CAPABILITIES).cloned();
    Some(input_from(|key| params.get(key), capabilities))
}

/// The `input` of a 2026-07-28 request for the MCP room: its `inputResponses` and
/// `requestState` (`member` reads one of its params) and its client's `capabilities`.
fn input_from<'v>(
    member: impl Fn(&str) -> Option<&'v Value>,
    capabilities: Option<Value>,
) -> Value {
    let mut input = Map::new();
    for key in ["inputResponses", "requestState"] {
        if let Some(v) = member(key) {
            input.insert(key.into(), v.clone());
        }
    }
    if let Some(caps) = capabilities {
        input.insert("clientCapabilities".into(), caps);
    }
    Value::Object(input)
}

/// A modern server's `input_required` answer to a 2026-07-28 client's call, `prompts/get` or
/// `resources/read` (`modern`) is that client's to answer: its result (`resultType`,
/// `inputRequests`, `requestState`), which the client answers by asking again
/// ([`modern_input`]). Any other answer is handed back.
pub(super) fn input_required(modern: bool, answer: Answer) -> Result<Value, Answer> {
    match answer {
        Err(mut e)
            if modern
                && e.data
                    .as_ref()
                    .is_some_and(|d| d["result_type"] == "input_required") =>
        {
            let mut data = e.data.take().unwrap_or_default();
            let mut result = json!({
                "resultType": "input_required",
                "inputRequests": data["input_requests"].take(),
            });
            let state = data["request_state"].take();
            if !state.is_null() {
                result["requestState"] = state;
            }
            Ok(result)
        }
        other => Err(other),
    }
}

/// The gateway's one request: a server's request to relay, from the MCP room.
impl crate::room::Serve for Gateway {
    type Request = GatewayRequest;

    fn handle(&mut self, cx: &mut RoomCx<'_, Self>, request: GatewayRequest, reply: ReplyTo) {
        match request {
            GatewayRequest::Ask {
                server,
                method,
                params,
                calls,
                others,
            } => self.relay(cx, &server, &method, params, &calls, others, reply),
            GatewayRequest::Notify {
                server,
                method,
                params,
            } => {
                self.notify(cx, &server, &method, params);
                cx.reply(reply, Ok(Value::Null));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConnId;
    use crate::config::Config;

    /// A gateway with sessions `a` and `b` (both declared sampling and form elicitation).
    fn gateway() -> Gateway {
        let mut g = Gateway::new(&Config::default());
        for id in ["a", "b"] {
            let mut s = super::super::Session::new(id, super::super::VERSIONS[0], Instant::now());
            s.declared = declared(json!({"sampling": {}, "elicitation": {}}));
            g.sessions.insert(id.to_string(), s);
        }
        g
    }

    /// Call `tag` of `session` in flight (accepting SSE unless `sse` is false).
    fn call(g: &mut Gateway, tag: u64, session: &str, sse: bool) -> String {
        let reply = ReplyTo::Http {
            conn: ConnId {
                slot: tag as u32,
                generation: 0,
            },
            seq: 0,
            started: Instant::now(),
            request_id: 0,
            route: "/mcp",
            method: "POST",
        };
        g.pending.insert(
            tag,
            Pending {
                reply,
                id: json!(tag),
                what: super::super::Forwarded::Tool,
                session: session.into(),
                server: Some("srv".into()),
                progress: None,
                progress_sent: None,
                progress_held: None,
                streaming: false,
                modern: false,
                sse,
                log_level: None,
                retry: None,
            },
        );
        format!("{TOKEN_PREFIX}{tag}")
    }

    #[test]
    fn a_request_goes_to_the_one_session_with_calls_there_or_is_refused_saying_why() {
        let sampling = json!({"messages": []});
        let route = |g: &Gateway, calls: &[String], others: bool| {
            g.route("srv", "sampling/createMessage", &sampling, calls, others)
        };
        let mut g = gateway();
        // One session's calls: the oldest carries it.
        let c7 = call(&mut g, 7, "a", true);
        let c3 = call(&mut g, 3, "a", true);
        assert_eq!(route(&g, &[c7.clone(), c3.clone()], false), Ok(3));
        // A call of the MCP room's own token (REST, CLI, WebSocket) makes it unanswerable.
        let why = route(&g, &[c7.clone(), "srv:12".into()], false).expect_err("foreign");
        assert!(why.contains("REST API, CLI or WebSocket"), "{why}");
        let why = route(&g, std::slice::from_ref(&c7), true).expect_err("others");
        assert!(why.contains("resources/read or prompts/get"), "{why}");
        // Calls of two sessions: which one asked cannot be told.
        let c9 = call(&mut g, 9, "b", true);
        let why = route(&g, &[c7.clone(), c9.clone()], false).expect_err("two sessions");
        assert!(why.contains("2 /mcp sessions"), "{why}");
        // A call that ended here already does not count; none left: no client.
        let why = route(&g, &[format!("{TOKEN_PREFIX}99")], false).expect_err("none");
        assert!(why.contains("no /mcp tool call"), "{why}");
        // A call that does not accept SSE cannot carry it.
        let c11 = call(&mut g, 11, "b", false);
        let why = route(&g, std::slice::from_ref(&c11), false).expect_err("no SSE");
        assert!(why.contains("text/event-stream"), "{why}");
        // ... unless a later call of the session does.
        let c12 = call(&mut g, 12, "b", true);
        assert_eq!(route(&g, &[c11, c12], false), Ok(12));
        // What the client did not declare is not sent.
        let why = g
            .route(
                "srv",
                "elicitation/create",
                &json!({"mode": "url"}),
                std::slice::from_ref(&c9),
                false,
            )
            .expect_err("url");
        assert!(why.contains("elicitation.url"), "{why}");
        // Bounded per session.
        for n in 0..MAX_ASKS_PER_SESSION as u64 {
            g.asks.waiting.insert(
                1000 + n,
                Asked {
                    session: "b".into(),
                    call: 9,
                    reply: Asker::Server(ReplyTo::Room {
                        room: "mcp",
                        tag: n,
                    }),
                },
            );
        }
        let why = route(&g, std::slice::from_ref(&c9), false).expect_err("full");
        assert!(why.contains("at most"), "{why}");
        assert_eq!(
            route(&g, std::slice::from_ref(&c3), false),
            Ok(3),
            "another session has room"
        );
        // Turned off.
        g.settings.client_requests = false;
        let why = route(&g, &[c3], false).expect_err("off");
        assert!(why.contains("gateway.client_requests"), "{why}");
    }

    fn declared(caps: Value) -> Declared {
        Declared::from_initialize(Some(&json!({ "capabilities": caps })))
    }

    #[test]
    fn what_a_client_declared_decides_what_it_is_sent() {
        let none = declared(json!({}));
        assert!(none.allows("sampling/createMessage", &json!({})).is_err());
        assert!(none.allows("elicitation/create", &json!({})).is_err());
        // An empty elicitation object is form mode only.
        let both = declared(json!({"sampling": {}, "elicitation": {}}));
        assert!(both
            .allows("sampling/createMessage", &json!({"messages": []}))
            .is_ok());
        assert!(both
            .allows("elicitation/create", &json!({"message": "m"}))
            .is_ok());
        assert!(both
            .allows("elicitation/create", &json!({"mode": "form"}))
            .is_ok());
        let why = both
            .allows("elicitation/create", &json!({"mode": "url"}))
            .expect_err("url not declared");
        assert!(why.contains("elicitation.url"), "{why}");
        // Sampling with tools needs sampling.tools.
        let why = both
            .allows("sampling/createMessage", &json!({"tools": []}))
            .expect_err("tools not declared");
        assert!(why.contains("sampling.tools"), "{why}");
        let tools = declared(json!({"sampling": {"tools": {}}}));
        assert!(tools
            .allows("sampling/createMessage", &json!({"tools": []}))
            .is_ok());
        // url alone is url only.
        let url = declared(json!({"elicitation": {"url": {}}}));
        assert!(url
            .allows("elicitation/create", &json!({"mode": "url"}))
            .is_ok());
        assert!(url.allows("elicitation/create", &json!({})).is_err());
        assert!(url.allows("roots/list", &json!({})).is_err());
        // Not objects: not declared.
        let odd = declared(json!({"sampling": true, "elicitation": "yes"}));
        assert_eq!(odd, Declared::default());
        assert_eq!(Declared::from_initialize(None), Declared::default());
    }

    /// The loop as the gateway sees it (no jobs).
    struct Loop {
        wheel: crate::reactor::timer::TimerWheel<super::super::Timer>,
    }

    impl crate::room::Wiring<super::super::Timer, super::super::Job> for Loop {
        fn timers(&mut self) -> &mut dyn crate::reactor::Timers<super::super::Timer> {
            &mut self.wheel
        }
        #[allow(unreachable_code)]
        fn submit(
            &mut self,
            _timeout: std::time::Duration,
            _work: Box<dyn FnOnce() -> super::super::Job + Send>,
            fail: Box<dyn FnOnce(&str) -> super::super::Job>,
        ) -> Result<(), super::super::Job> {
            match fail("no worker") {}
        }
    }

    /// Runs `f` on `g` with a context; what it said.
    fn with(
        g: &mut Gateway,
        f: impl FnOnce(&mut Gateway, &mut RoomCx<'_, Gateway>),
    ) -> Vec<Output> {
        let poll = mio::Poll::new().expect("poll");
        let stats = crate::reactor::LoopStats::default();
        let mut wiring = Loop {
            wheel: crate::reactor::timer::TimerWheel::new(Instant::now()),
        };
        let mut out = Vec::new();
        let mut cx = RoomCx::new(poll.registry(), &stats, &mut wiring, &mut out);
        f(g, &mut cx);
        out
    }

    /// The JSON-RPC messages pushed on streams, and the answers given to the MCP room.
    fn said(out: Vec<Output>) -> (Vec<Value>, Vec<(u64, Answer)>) {
        let mut pushed = Vec::new();
        let mut answers = Vec::new();
        for o in out {
            match o {
                Output::Push { bytes, .. } => {
                    let text = String::from_utf8_lossy(&bytes).to_string();
                    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
                        pushed.push(serde_json::from_str(data).expect("JSON"));
                    }
                }
                Output::Effect(crate::room::Effect::Reply(ReplyTo::Room { tag, .. }, a)) => {
                    answers.push((tag, a))
                }
                _ => {}
            }
        }
        (pushed, answers)
    }

    fn ask(server: &str, method: &str, params: Value, calls: &[String]) -> GatewayRequest {
        GatewayRequest::Ask {
            server: server.into(),
            method: method.into(),
            params,
            calls: calls.to_vec(),
            others: false,
        }
    }

    #[test]
    fn a_relayed_request_is_answered_once_by_its_session_or_by_its_calls_end() {
        use crate::room::Serve;
        let mut g = gateway();
        let c4 = call(&mut g, 4, "a", true);
        let mcp = |tag| ReplyTo::Room { room: "mcp", tag };
        // Relayed: the call's answer becomes a stream carrying the request under a minted id.
        let out = with(&mut g, |g, cx| {
            let r = ask(
                "srv",
                "elicitation/create",
                json!({"message": "m"}),
                std::slice::from_ref(&c4),
            );
            g.handle(cx, r, mcp(100));
        });
        assert!(out.iter().any(|o| matches!(o, Output::Stream { .. })));
        let (pushed, answers) = said(out);
        assert!(answers.is_empty());
        let id = pushed[0]["id"].as_u64().expect("a minted number");
        assert_eq!(pushed[0]["method"], "elicitation/create");
        assert!(g.pending.get(&4).is_some_and(|p| p.streaming));
        // Session b's answer with that id is not taken; a's is, once.
        let answer = |id: u64| {
            json!({"jsonrpc": "2.0", "id": id, "result": {"action": "decline"}})
                .as_object()
                .cloned()
                .expect("object")
        };
        let out = with(&mut g, |g, cx| g.client_answered(cx, "b", &answer(id)));
        assert!(said(out).1.is_empty());
        let out = with(&mut g, |g, cx| g.client_answered(cx, "a", &answer(id)));
        match &said(out).1[..] {
            [(100, Ok(v))] => assert_eq!(v["action"], "decline"),
            other => panic!("{other:?}"),
        }
        let out = with(&mut g, |g, cx| g.client_answered(cx, "a", &answer(id)));
        assert!(said(out).1.is_empty(), "answered once");
        // A client's error keeps its code.
        let out = with(&mut g, |g, cx| {
            g.handle(
                cx,
                ask(
                    "srv",
                    "sampling/createMessage",
                    json!({}),
                    std::slice::from_ref(&c4),
                ),
                mcp(101),
            );
        });
        let id = said(out).0[0]["id"].as_u64().expect("id");
        let error = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -1, "message": "no"}});
        let out = with(&mut g, |g, cx| {
            g.client_answered(cx, "a", error.as_object().expect("object"))
        });
        match &said(out).1[..] {
            [(101, Err(e))] => {
                assert_eq!(e.message, "no");
                assert_eq!(e.data.as_ref().map(|d| d["code"].clone()), Some(json!(-1)));
            }
            other => panic!("{other:?}"),
        }
        // Unanswered when the call ends: the server hears so, the client gets cancelled.
        let out = with(&mut g, |g, cx| {
            g.handle(
                cx,
                ask(
                    "srv",
                    "sampling/createMessage",
                    json!({}),
                    std::slice::from_ref(&c4),
                ),
                mcp(102),
            );
        });
        let id = said(out).0[0]["id"].clone();
        let out = with(&mut g, |g, cx| {
            g.cancel(cx, 4, "the client cancelled it", None)
        });
        let (pushed, answers) = said(out);
        match &answers[..] {
            [(102, Err(e))] => assert_eq!(
                e.data.as_ref().map(|d| d["code"].clone()),
                Some(json!(REFUSED))
            ),
            other => panic!("{other:?}"),
        }
        assert!(
            pushed.iter().any(|m| m["method"] == "notifications/cancelled" && m["params"]["requestId"] == id),
            "{pushed:?}"
        );
        assert!(g.asks.waiting.is_empty());
        // A refusal is an answer at once.
        let out = with(&mut g, |g, cx| {
            g.handle(
                cx,
                ask(
                    "srv",
                    "sampling/createMessage",
                    json!({}),
                    &["srv:1".into()],
                ),
                mcp(103),
            );
        });
        assert!(matches!(&said(out).1[..], [(103, Err(_))]));
    }

    #[test]
    fn a_url_elicitations_completion_goes_to_the_session_that_was_asked() {
        use crate::room::Serve;
        let mut g = gateway();
        if let Some(s) = g.sessions.get_mut("a") {
            s.declared = declared(json!({"elicitation": {"url": {}}}));
        }
        let c4 = call(&mut g, 4, "a", true);
        let url = json!({"mode": "url", "message": "m", "url": "https://example.org/x", "elicitationId": "e1"});
        with(&mut g, |g, cx| {
            g.handle(
                cx,
                ask("srv", "elicitation/create", url, std::slice::from_ref(&c4)),
                ReplyTo::Room {
                    room: "mcp",
                    tag: 1,
                },
            );
        });
        let done = |id: &str| GatewayRequest::Notify {
            server: "srv".into(),
            method: "notifications/elicitation/complete".into(),
            params: json!({"elicitationId": id}),
        };
        // While the call is in flight: on its stream.
        let out = with(&mut g, |g, cx| {
            g.handle(
                cx,
                done("e1"),
                ReplyTo::Room {
                    room: "mcp",
                    tag: 2,
                },
            )
        });
        let (pushed, answers) = said(out);
        assert_eq!(pushed[0]["params"]["elicitationId"], "e1");
        assert!(matches!(&answers[..], [(2, Ok(Value::Null))]));
        // Once only, and an unknown one goes nowhere.
        let out = with(&mut g, |g, cx| {
            g.handle(
                cx,
                done("e1"),
                ReplyTo::Room {
                    room: "mcp",
                    tag: 3,
                },
            )
        });
        assert!(said(out).0.is_empty());
        // After the call: on the session's GET stream, kept for replay.
        let url = json!({"mode": "url", "message": "m", "url": "https://example.org/x", "elicitationId": "e2"});
        with(&mut g, |g, cx| {
            g.handle(
                cx,
                ask("srv", "elicitation/create", url, std::slice::from_ref(&c4)),
                ReplyTo::Room {
                    room: "mcp",
                    tag: 4,
                },
            );
        });
        with(&mut g, |g, cx| g.cancel(cx, 4, "done", None));
        let stream = ConnId {
            slot: 77,
            generation: 0,
        };
        if let Some(s) = g.sessions.get_mut("a") {
            s.stream = Some(stream);
        }
        let out = with(&mut g, |g, cx| {
            g.handle(
                cx,
                done("e2"),
                ReplyTo::Room {
                    room: "mcp",
                    tag: 5,
                },
            )
        });
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Push { conn, .. } if *conn == stream)));
        assert_eq!(said(out).0[0]["params"]["elicitationId"], "e2");
        assert_eq!(g.sessions.get("a").map(|s| s.replay.len()), Some(1));
    }
}
