//! A 2026-07-28 server's `input_required` answer to a session-era `/mcp` client's
//! `tools/call`, `prompts/get` or `resources/read` (a "call" below): that client cannot
//! retry it (its era has no `inputResponses`), but it can answer requests on the call's
//! stream. So the gateway asks it, in its own era, each input request
//! (`elicitation/create`, `sampling/createMessage`) as a server-to-client request under an
//! id it mints (the relaying of [`super::ask`], with its capability checks and bounds),
//! collects the results by the input requests' keys, and when all are in sends the server
//! the same request again ([`Retry`] keeps it) under the same tag, with `inputResponses`,
//! the `requestState` echoed as it came, and the client capabilities of the session's
//! `initialize`. The client sees one call: the requests, then the real result. What ends a
//! call early is said as a tool error for a tool call, as a JSON-RPC error otherwise.
//!
//! Every session-era call that could be asked (the client declared sampling or elicitation,
//! its POST accepts an event stream, `gateway.client_requests` is on) carries those
//! capabilities to a 2026-07-28 server from its first request, so the server asks only
//! what the client can answer. A request that cannot be relayed (`roots/list`: a client's
//! roots are paths on its own machine, not the daemon's; a capability not declared; a POST
//! without an event stream; the bounds) ends the call with a tool error that says which
//! request and why, before any of the round is relayed.
//!
//! Invariants: while a call collects input, its `Pending` entry stays (so the client's
//! cancellation, its hang-up, its session's end and the bounds of calls in flight see it)
//! but no request is at the server, so nothing is cancelled there; a timer ends the
//! collecting at the call's deadline (what the MCP room reported was left of it); the retry
//! gets only what is left; at most [`MAX_ROUNDS`] rounds are relayed per call, and the answers
//! held for rounds being collected are at most [`MAX_HELD_BYTES`] in all; a client's
//! error for any request ends the call (an `inputResponses` entry has no error form);
//! every end of the call answers nothing to a server but tells the client with
//! `notifications/cancelled` for each request still waiting (see [`Gateway::end_asks`]).

use super::ask::Asker;
use super::{send_answer, Call, Forwarded, Gateway, Pending, Timer};
use crate::api::{Answer, ApiError, ErrorCode, McpRequest, Request};
use crate::reactor::timer::TimerId;
use crate::room::RoomCx;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

/// Rounds of `input_required` relayed for one call; a server that asks once more gets the
/// call ended with an error (the client is told why).
pub const MAX_ROUNDS: u32 = 8;
/// Bytes of clients' answers held for the rounds being collected, all calls together (each
/// answer is at most a POST body; they wait for the round's last one): an answer beyond
/// ends its call with an error.
pub const MAX_HELD_BYTES: usize = 4 * 1024 * 1024;

/// What a session-era request to a server needs for being asked again.
#[derive(Debug)]
pub struct Retry {
    /// The request to send again (`tools/call`, `prompts/get` or `resources/read`), as it
    /// was first sent without its `input`; each retry gets its own `input` and deadline.
    again: McpRequest,
    /// The client capabilities relaying can serve (see [`super::ask::Declared`]).
    capabilities: Value,
    /// Rounds relayed so far.
    rounds: u32,
    /// The round being collected; `None` while the call is at its server.
    round: Option<Round>,
}

/// One round of input being collected.
#[derive(Debug)]
struct Round {
    /// The server's `requestState`, echoed as it came.
    state: Option<Value>,
    /// The client's results by input request key.
    responses: Map<String, Value>,
    /// Requests not answered yet.
    missing: usize,
    /// Bytes of `responses` (as compact JSON).
    bytes: usize,
    /// The call's deadline, and its timer.
    deadline: Instant,
    timer: TimerId,
}

impl Retry {
    /// The `input` of the call's first request: the capabilities alone.
    pub(super) fn first_input(&self) -> Value {
        json!({"clientCapabilities": self.capabilities})
    }

    /// Whether the call is collecting its client's input (at no server).
    pub(super) fn collecting(&self) -> bool {
        self.round.is_some()
    }

    /// Disarms the collecting round's timer (the call ended).
    pub(super) fn disarm(&self, cx: &mut RoomCx<'_, Gateway>) {
        if let Some(round) = &self.round {
            cx.timers().cancel(round.timer);
        }
    }
}

/// Whether `answer` is a server's `input_required` (the MCP room's error for it).
pub(super) fn asks_input(answer: &Answer) -> bool {
    matches!(answer, Err(e) if e.data.as_ref().is_some_and(|d| d["result_type"] == "input_required"))
}

/// Gives `request` (one a server may answer with `input_required`) its `input` and
/// deadline; other requests are left as they are.
pub(super) fn set_input(request: &mut McpRequest, with: Value, timeout: Option<u64>) {
    match request {
        McpRequest::Call {
            input, timeout_ms, ..
        } => {
            *input = Some(with);
            *timeout_ms = timeout;
        }
        McpRequest::GetPrompt {
            input, timeout_ms, ..
        }
        | McpRequest::ReadResource {
            input, timeout_ms, ..
        } => {
            *input = Some(Box::new(with));
            *timeout_ms = timeout;
        }
        _ => {}
    }
}

impl Gateway {
    /// What asking a session-era request of `call` again would take (`again` makes the
    /// request, without its `input`), when its client can be asked at all. The request
    /// sent first carries [`Retry::first_input`].
    pub(super) fn retry_for(
        &self,
        call: &Call,
        again: impl FnOnce() -> McpRequest,
    ) -> Option<Box<Retry>> {
        if !self.settings.client_requests || !call.sse {
            return None;
        }
        let declared = self.sessions.get(&*call.session)?.declared;
        declared.any().then(|| {
            Box::new(Retry {
                again: again(),
                capabilities: declared.capabilities(),
                rounds: 0,
                round: None,
            })
        })
    }

    /// Call `tag`'s server answered `input_required` (`answer`): its input requests go to
    /// the client, or the call ends saying why they cannot.
    pub(super) fn collect_input(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64, answer: Answer) {
        let mut data = match answer {
            Err(e) => e.data.unwrap_or_default(),
            Ok(_) => return,
        };
        let requests = match self.round_of(tag, &data) {
            Ok(r) => r,
            Err(why) => {
                let server = data["server"].as_str().unwrap_or("the server");
                let m = format!(
                    "{server} asked for input that cannot be relayed to this /mcp client: {why}"
                );
                return self.fail_input(cx, tag, &m);
            }
        };
        let Some(p) = self.pending.get_mut(&tag) else {
            return;
        };
        let Some(retry) = p.retry.as_mut() else {
            return;
        };
        let now = Instant::now();
        let deadline = now + Duration::from_millis(data["remaining_ms"].as_u64().unwrap_or(0));
        let timer = cx.timers().insert(deadline, Timer::Input(tag));
        let state = Some(data["request_state"].take()).filter(|s| !s.is_null());
        retry.rounds += 1;
        retry.round = Some(Round {
            state,
            responses: Map::new(),
            missing: requests.len(),
            bytes: 0,
            deadline,
            timer,
        });
        if requests.is_empty() {
            // Only a `requestState`: the client MAY retry at once.
            return self.ask_again(cx, tag);
        }
        let session = p.session.clone();
        for (key, method, params) in requests {
            let id = self.asks.mint(&session, tag, Asker::Input(key));
            let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            self.push_on_call(cx, tag, &message, now);
        }
    }

    /// The input requests of call `tag`'s `input_required` (`data`): (key, method,
    /// params) of each, or why the client cannot be asked them.
    fn round_of(&self, tag: u64, data: &Value) -> Result<Vec<(String, String, Value)>, String> {
        let p = self.pending.get(&tag).ok_or("the call ended")?;
        let state = &data["request_state"];
        if !(state.is_null() || state.is_string()) {
            return Err("its requestState is not a string, or over the size kept".into());
        }
        let mut requests = Vec::new();
        let asked = match &data["input_requests"] {
            Value::Null => None,
            Value::Object(map) => Some(map),
            _ => return Err("its inputRequests is not an object".into()),
        };
        let declared = self
            .sessions
            .get(&*p.session)
            .map(|s| s.declared)
            .unwrap_or_default();
        for (key, request) in asked.into_iter().flatten() {
            let key_shown: String = key.chars().take(64).collect();
            let method = request["method"].as_str().unwrap_or_default();
            let params = match &request["params"] {
                Value::Null => json!({}),
                v @ Value::Object(_) => v.clone(),
                _ => return Err(format!("{key_shown}: its params are not an object")),
            };
            if method == "roots/list" {
                return Err(format!("{key_shown}: roots/list cannot be answered through /mcp (a client's roots are paths on its own machine)"));
            }
            declared
                .allows(method, &params)
                .map_err(|why| format!("{key_shown}: {why}"))?;
            requests.push((key.clone(), method.to_string(), params));
        }
        if state.is_null() && requests.is_empty() {
            return Err("it named neither input requests nor a requestState".into());
        }
        if !requests.is_empty() {
            if !self.settings.client_requests {
                return Err(
                    "relaying requests to /mcp clients is turned off (gateway.client_requests)"
                        .into(),
                );
            }
            if !p.sse {
                return Err("the client's request did not accept text/event-stream, the only way to send it a request".into());
            }
            self.asks.full(&p.session, requests.len())?;
        }
        match &p.retry {
            Some(r) if r.rounds >= MAX_ROUNDS => Err(format!(
                "it asked again after {MAX_ROUNDS} rounds of input (at most {MAX_ROUNDS})"
            )),
            Some(_) => Ok(requests),
            None => Err("this call cannot be asked again".into()),
        }
    }

    /// The client answered input request `key` of call `tag` (`answer`): kept for the
    /// retry, which goes when the round is complete; an error, or an answer beyond
    /// [`MAX_HELD_BYTES`], ends the call.
    pub(super) fn input_answered(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        tag: u64,
        key: String,
        answer: Result<Value, ApiError>,
    ) {
        let key_shown: String = key.chars().take(64).collect();
        let result = match answer {
            Ok(result) => result,
            Err(e) => {
                let m = format!(
                    "the /mcp client answered the server's input request {key_shown} with an error: {}",
                    e.message
                );
                return self.fail_input(cx, tag, &m);
            }
        };
        let size = crate::mcp::tools::json_size(&result);
        if self.held_bytes() + size > MAX_HELD_BYTES {
            let m = format!("the answer to input request {key_shown} would make more than {MAX_HELD_BYTES} bytes of answers wait on /mcp");
            return self.fail_input(cx, tag, &m);
        }
        let round = self
            .pending
            .get_mut(&tag)
            .and_then(|p| p.retry.as_mut())
            .and_then(|r| r.round.as_mut());
        let Some(round) = round else {
            return;
        };
        round.bytes += size;
        round.responses.insert(key, result);
        round.missing = round.missing.saturating_sub(1);
        if round.missing == 0 {
            self.ask_again(cx, tag);
        }
    }

    /// Bytes of answers held for rounds being collected (the calls in flight, at most
    /// [`super::MAX_CALLS`], are looked at: answers come at a person's pace).
    fn held_bytes(&self) -> usize {
        self.pending
            .values()
            .filter_map(|p| p.retry.as_ref()?.round.as_ref())
            .map(|r| r.bytes)
            .sum()
    }

    /// Call `tag`'s round is complete: its server is asked again with the client's results,
    /// within what is left of the call's time.
    fn ask_again(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64) {
        let Some(p) = self.pending.get_mut(&tag) else {
            return;
        };
        let Some(retry) = p.retry.as_mut() else {
            return;
        };
        let Some(round) = retry.round.take() else {
            return;
        };
        cx.timers().cancel(round.timer);
        let mut input = Map::new();
        input.insert("inputResponses".into(), Value::Object(round.responses));
        if let Some(state) = round.state {
            input.insert("requestState".into(), state);
        }
        input.insert("clientCapabilities".into(), retry.capabilities.clone());
        let left = round.deadline.saturating_duration_since(Instant::now());
        let mut request = retry.again.clone();
        let timeout = Some((left.as_millis() as u64).max(1));
        set_input(&mut request, Value::Object(input), timeout);
        cx.ask(tag, Request::Mcp(request));
    }

    /// Call `tag`'s deadline came while it collected input: it ends with a tool error.
    pub(super) fn input_deadline(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64) {
        if self
            .pending
            .get(&tag)
            .is_some_and(|p| p.retry.as_ref().is_some_and(|r| r.collecting()))
        {
            let m = "the /mcp client did not answer the server's input requests within the call's deadline";
            self.fail_input(cx, tag, m);
        }
    }

    /// Ends call `tag` saying `message` (no request of it is at a server): a tool call with a
    /// tool error (its model reads it), a `prompts/get` or `resources/read` with a JSON-RPC
    /// error.
    fn fail_input(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64, message: &str) {
        let Some(p): Option<Pending> = self.take_pending(tag) else {
            return;
        };
        log::debug!("/mcp call {tag}: {message}");
        self.end_asks(cx, tag, &p);
        let answer = if p.what == Forwarded::Tool {
            let result = super::tool_result(Err(ApiError::new(ErrorCode::ToolError, message)));
            json!({"jsonrpc": "2.0", "id": p.id, "result": result})
        } else {
            super::rpc_error(&p.id, super::code::INTERNAL_ERROR, message)
        };
        send_answer(cx, p, serde_json::to_vec(&answer).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConnId;
    use crate::gateway::tests::Harness;
    use crate::gateway::Output;
    use crate::room::Effect;

    /// What the gateway said since the last look.
    #[derive(Default)]
    struct Said {
        /// HTTP answers: connection, status, body.
        answers: Vec<(ConnId, u16, Value)>,
        /// JSON-RPC messages pushed on streams.
        pushed: Vec<(ConnId, Value)>,
        /// Streams ended.
        ended: Vec<ConnId>,
        /// Requests asked of other rooms, with their tags.
        asked: Vec<(u64, Request)>,
    }

    fn said(h: &mut Harness) -> Said {
        let mut s = Said::default();
        for o in h.out.drain(..) {
            match o {
                Output::Http {
                    reply: crate::api::ReplyTo::Http { conn, .. },
                    response,
                } => {
                    let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
                    s.answers.push((conn, response.status, body));
                }
                Output::Push { conn, bytes } => {
                    let text = String::from_utf8_lossy(&bytes).to_string();
                    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
                        s.pushed
                            .push((conn, serde_json::from_str(data).expect("JSON")));
                    }
                }
                Output::End { conn } => s.ended.push(conn),
                Output::Effect(Effect::Request { tag, request, .. }) => {
                    s.asked.push((tag, *request))
                }
                _ => {}
            }
        }
        s
    }

    /// Server `s` serving tool `t` (`s__t`), and a session whose client declared `caps`.
    fn setup(caps: Value) -> (Harness, String) {
        let mut h = Harness::new();
        let tools = [json!({"name": "t", "inputSchema": {"type": "object"}})];
        let prompts = [json!({"name": "p"})];
        let resources = [json!({"uri": "x://r", "name": "r"})];
        let view = crate::snapshot::ServerView {
            id: "s",
            status: "active",
            serves: true,
            breaker_open: false,
            capabilities: &[],
            allow_capabilities: &[],
            tools: &tools,
            tools_version: (1, 0),
            resources: &resources,
            resource_templates: &[],
            prompts: &prompts,
        };
        h.cx_do(|g, cx| crate::room::Follows::servers(g, cx, &[view]));
        h.out.clear();
        let session = h.open_with(caps);
        (h, session)
    }

    const SSE: (&str, &str) = ("Accept", "application/json, text/event-stream");

    /// The requests a server may answer with `input_required`.
    const ASKED: [&str; 3] = ["tools/call", "prompts/get", "resources/read"];

    /// `tools/call s__t` (id 5) in session `sid`: its connection, tag and the request asked.
    fn call(h: &mut Harness, sid: &str, sse: bool) -> (ConnId, u64, Request) {
        request(h, sid, sse, "tools/call")
    }

    /// `method` (one of [`ASKED`], id 5) of `s`'s tool `t`, prompt `p` or resource `x://r`
    /// in session `sid`: its connection, tag and the request asked.
    fn request(h: &mut Harness, sid: &str, sse: bool, method: &str) -> (ConnId, u64, Request) {
        let params = match method {
            "tools/call" => json!({"name": "s__t", "arguments": {"a": 1}}),
            "prompts/get" => json!({"name": "s__p", "arguments": {"k": "v"}}),
            _ => json!({"uri": "x://r"}),
        };
        let body = json!({"jsonrpc": "2.0", "id": 5, "method": method, "params": params});
        let mut headers = vec![("Mcp-Session-Id", sid)];
        if sse {
            headers.push(SSE);
        }
        let conn = h.send("POST", &headers, &body.to_string());
        let mut s = said(h);
        assert!(s.answers.is_empty(), "{:?}", s.answers);
        let (tag, request) = s.asked.pop().expect("the call asked of the MCP room");
        (conn, tag, request)
    }

    /// The MCP room's answer to a call its server answered `input_required`.
    fn needs(requests: Value, state: Option<&str>) -> Answer {
        Err(
            ApiError::new(ErrorCode::ToolError, "needs input").with_data(json!({
            "server": "s", "tool": "t", "result_type": "input_required",
            "input_requests": requests, "request_state": state, "remaining_ms": 60_000})),
        )
    }

    fn elicit() -> Value {
        json!({"method": "elicitation/create",
               "params": {"mode": "form", "message": "who?", "requestedSchema": {"type": "object"}}})
    }

    fn sample() -> Value {
        json!({"method": "sampling/createMessage", "params": {"messages": [], "maxTokens": 9}})
    }

    fn answer(h: &mut Harness, tag: u64, answer: Answer) -> Said {
        h.cx_do(|g, cx| crate::room::Room::on_answer(g, cx, tag, answer));
        said(h)
    }

    /// The client POSTs `message` (a response or notification) in session `sid`.
    fn post(h: &mut Harness, sid: &str, message: Value) -> Said {
        h.send("POST", &[("Mcp-Session-Id", sid)], &message.to_string());
        said(h)
    }

    /// The `input` and deadline of a `tools/call`, `prompts/get` or `resources/read` asked of
    /// the MCP room (each checked to be the client's request, under the server's names).
    fn input_of(request: &Request) -> (Value, Option<u64>) {
        let (input, timeout_ms) = match request {
            Request::Mcp(McpRequest::Call {
                id,
                name,
                arguments,
                input,
                timeout_ms,
                ..
            }) => {
                assert_eq!((id.as_str(), name.as_str()), ("s", "t"));
                assert_eq!(arguments.to_value(), json!({"a": 1}));
                (input.clone(), timeout_ms)
            }
            Request::Mcp(McpRequest::GetPrompt {
                id,
                name,
                arguments,
                input,
                timeout_ms,
                ..
            }) => {
                assert_eq!((id.as_str(), name.as_str()), ("s", "p"));
                assert_eq!(*arguments, json!({"k": "v"}));
                (input.as_deref().cloned(), timeout_ms)
            }
            Request::Mcp(McpRequest::ReadResource {
                id,
                uri,
                input,
                timeout_ms,
                ..
            }) => {
                assert_eq!((id.as_str(), uri.as_str()), ("s", "x://r"));
                (input.as_deref().cloned(), timeout_ms)
            }
            other => panic!("{other:?}"),
        };
        (input.unwrap_or_default(), *timeout_ms)
    }

    /// Timers armed besides the keep-alive of streams.
    fn deadlines(h: &Harness) -> usize {
        h.wiring.wheel.len() - usize::from(h.gateway.keepalive)
    }

    /// Nothing is left of the call: no pending entry, no request waiting, no deadline armed.
    fn all_gone(h: &Harness) {
        assert!(h.gateway.pending.is_empty());
        assert_eq!(h.gateway.asks.len(), 0);
        assert_eq!(deadlines(h), 0, "timers left");
    }

    #[test]
    fn a_session_era_clients_answers_go_back_in_the_call_asked_again() {
        let (mut h, sid) = setup(json!({"sampling": {}, "elicitation": {}}));
        let (conn, tag, first) = call(&mut h, &sid, true);
        // The server is told from the first request what the client can answer.
        let caps = json!({"sampling": {}, "elicitation": {"form": {}}});
        assert_eq!(
            input_of(&first),
            (json!({"clientCapabilities": caps}), None)
        );

        // input_required: both requests go to the client on the call's stream.
        let s = answer(
            &mut h,
            tag,
            needs(json!({"who": elicit(), "poem": sample()}), Some("st-1")),
        );
        assert!(s.answers.is_empty() && s.asked.is_empty());
        let methods: Vec<_> = s
            .pushed
            .iter()
            .map(|(c, m)| (*c, m["method"].clone()))
            .collect();
        assert_eq!(
            methods,
            [
                (conn, json!("sampling/createMessage")),
                (conn, json!("elicitation/create"))
            ]
        );
        let id_of = |method: &str| {
            s.pushed
                .iter()
                .find(|(_, m)| m["method"] == method)
                .map(|(_, m)| m["id"].clone())
                .expect("asked")
        };
        let (who, poem) = (id_of("elicitation/create"), id_of("sampling/createMessage"));
        assert_eq!(s.pushed[1].1["params"]["message"], "who?");
        assert_eq!(deadlines(&h), 1, "the collecting deadline");

        // One answer: still collecting.
        let accept = json!({"action": "accept", "content": {"name": "Ada"}});
        let s = post(
            &mut h,
            &sid,
            json!({"jsonrpc": "2.0", "id": who, "result": accept}),
        );
        assert_eq!(s.answers.iter().map(|a| a.1).collect::<Vec<_>>(), [202]);
        assert!(s.asked.is_empty());
        // The other: the server is asked again, with both results and its state.
        let text =
            json!({"role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "m"});
        let s = post(
            &mut h,
            &sid,
            json!({"jsonrpc": "2.0", "id": poem, "result": text}),
        );
        let [(again, retry)] = &s.asked[..] else {
            panic!("{:?}", s.asked.len())
        };
        assert_eq!(*again, tag, "the same tag: the same call for the client");
        let (input, timeout) = input_of(retry);
        assert_eq!(
            input,
            json!({"inputResponses": {"who": accept, "poem": text}, "requestState": "st-1",
                   "clientCapabilities": caps})
        );
        assert!(timeout.is_some_and(|t| t <= 60_000), "{timeout:?}");
        assert_eq!(deadlines(&h), 0, "no deadline of ours while at the server");

        // The tool's real result ends the stream.
        let done = json!({"server": "s", "tool": "t", "duration_ms": 1.0,
                          "result": {"content": [{"type": "text", "text": "hello Ada"}]}});
        let s = answer(&mut h, tag, Ok(done));
        let last = &s.pushed.last().expect("the answer").1;
        assert_eq!(
            (
                last["id"].clone(),
                last["result"]["content"][0]["text"].clone()
            ),
            (json!(5), json!("hello Ada"))
        );
        assert_eq!(s.ended, [conn]);
        all_gone(&h);
    }

    /// The MCP room's answer to a `prompts/get` or `resources/read` its server answered
    /// `input_required` (an error of the server's, with a call's data).
    fn needs_for(method: &str, requests: Value, state: Option<&str>) -> Answer {
        Err(
            ApiError::new(ErrorCode::McpError, "needs input").with_data(json!({
            "server": "s", "method": method, "result_type": "input_required",
            "input_requests": requests, "request_state": state, "remaining_ms": 60_000})),
        )
    }

    #[test]
    fn a_session_era_prompt_or_resource_read_is_asked_again_with_the_answers() {
        for (method, done) in [
            (
                "prompts/get",
                json!({"messages": [{"role": "user",
                "content": {"type": "text", "text": "hello Ada"}}]}),
            ),
            (
                "resources/read",
                json!({"contents": [{"uri": "x://r", "text": "hello Ada"}]}),
            ),
        ] {
            let (mut h, sid) = setup(json!({"elicitation": {}}));
            let (conn, tag, first) = request(&mut h, &sid, true, method);
            let caps = json!({"elicitation": {"form": {}}});
            assert_eq!(
                input_of(&first),
                (json!({"clientCapabilities": caps}), None),
                "{method}"
            );
            // The server's elicitation goes to the client on the request's stream.
            let s = answer(
                &mut h,
                tag,
                needs_for(method, json!({"who": elicit()}), Some("g-1")),
            );
            assert!(s.answers.is_empty() && s.asked.is_empty(), "{method}");
            let [(c, asked)] = &s.pushed[..] else {
                panic!("{method}: {:?}", s.pushed)
            };
            assert_eq!((*c, &asked["method"]), (conn, &json!("elicitation/create")));
            let accept = json!({"action": "accept", "content": {"name": "Ada"}});
            let reply = json!({"jsonrpc": "2.0", "id": asked["id"], "result": accept});
            let s = post(&mut h, &sid, reply);
            // Asked again under the same tag: the same request, with the answer and the state.
            let [(again, retry)] = &s.asked[..] else {
                panic!("{method}: {:?}", s.asked.len())
            };
            assert_eq!(*again, tag);
            let (input, timeout) = input_of(retry);
            assert_eq!(
                input,
                json!({"inputResponses": {"who": accept}, "requestState": "g-1",
                       "clientCapabilities": caps}),
                "{method}"
            );
            assert!(timeout.is_some_and(|t| t <= 60_000), "{timeout:?}");
            // The server's final result is the client's one answer, ending the stream.
            let result = json!({"server": "s", "method": method, "result": done.clone()});
            let s = answer(&mut h, tag, Ok(result));
            let last = &s.pushed.last().expect("the answer").1;
            assert_eq!(
                (&last["id"], &last["result"]),
                (&json!(5), &done),
                "{method}"
            );
            assert_eq!(s.ended, [conn]);
            all_gone(&h);
            // A client that declared nothing is asked nothing, and told why in an error.
            let sid = h.open_with(json!({}));
            let (_, tag, first) = request(&mut h, &sid, true, method);
            assert_eq!(input_of(&first).0, Value::Null);
            let s = answer(
                &mut h,
                tag,
                needs_for(method, json!({"who": elicit()}), None),
            );
            let why = ended_with(&s);
            assert!(
                why.contains(
                    "who: the /mcp client did not declare the elicitation (form mode) capability"
                ),
                "{why}"
            );
            assert!(!s.pushed.iter().any(|(_, m)| m.get("method").is_some()));
            all_gone(&h);
        }
    }

    /// The error text a call ended with (on its stream, or as its JSON answer): a tool
    /// error, or for a `prompts/get` or `resources/read` a JSON-RPC error.
    fn ended_with(s: &Said) -> String {
        let from_stream = s.pushed.iter().map(|(_, m)| m).find(|m| m["id"] == 5);
        let from_http = s.answers.iter().map(|(_, _, b)| b).find(|b| b["id"] == 5);
        let m = from_stream.or(from_http).expect("the call's answer");
        if let Some(e) = m.get("error") {
            assert_eq!(e["code"], crate::gateway::code::INTERNAL_ERROR, "{m}");
            return e["message"].as_str().unwrap_or_default().to_string();
        }
        assert_eq!(m["result"]["isError"], true, "{m}");
        m["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn what_cannot_be_relayed_ends_the_call_saying_which_request_and_why() {
        // Sampling only: an elicitation is refused naming the capability, nothing relayed.
        let (mut h, sid) = setup(json!({"sampling": {}}));
        let (_, tag, _) = call(&mut h, &sid, true);
        let s = answer(
            &mut h,
            tag,
            needs(json!({"poem": sample(), "who": elicit()}), None),
        );
        let why = ended_with(&s);
        assert!(
            why.contains(
                "who: the /mcp client did not declare the elicitation (form mode) capability"
            ),
            "{why}"
        );
        assert!(
            !s.pushed.iter().any(|(_, m)| m.get("method").is_some()),
            "nothing relayed"
        );
        all_gone(&h);
        // roots/list cannot be answered.
        let (_, tag, _) = call(&mut h, &sid, true);
        let s = answer(
            &mut h,
            tag,
            needs(json!({"r": {"method": "roots/list"}}), None),
        );
        assert!(
            ended_with(&s).contains("r: roots/list cannot be answered"),
            "{:?}",
            s.answers
        );
        // A POST without an event stream cannot carry a request.
        let (_, tag, first) = call(&mut h, &sid, false);
        assert_eq!(
            input_of(&first).0,
            Value::Null,
            "nothing to offer without a stream"
        );
        let s = answer(&mut h, tag, needs(json!({"poem": sample()}), None));
        assert!(
            ended_with(&s).contains("text/event-stream"),
            "{:?}",
            s.answers
        );
        // Neither requests nor state.
        let (_, tag, _) = call(&mut h, &sid, true);
        let s = answer(&mut h, tag, needs(Value::Null, None));
        assert!(ended_with(&s).contains("neither"), "{:?}", s.answers);
        all_gone(&h);
        // A client that declared nothing is offered nothing, and told what was missing.
        let (mut h, sid) = setup(json!({}));
        let (_, tag, first) = call(&mut h, &sid, true);
        assert_eq!(input_of(&first).0, Value::Null);
        let s = answer(&mut h, tag, needs(json!({"poem": sample()}), None));
        let why = ended_with(&s);
        assert!(
            why.contains("did not declare the sampling capability"),
            "{why}"
        );
        all_gone(&h);
    }

    #[test]
    fn a_server_that_keeps_asking_is_stopped_after_the_round_bound() {
        let (mut h, sid) = setup(json!({"elicitation": {}}));
        let (conn, tag, _) = call(&mut h, &sid, true);
        // State-only rounds are asked again at once; each counts.
        for round in 1..=MAX_ROUNDS {
            let s = answer(&mut h, tag, needs(Value::Null, Some(&format!("r{round}"))));
            let [(t, again)] = &s.asked[..] else {
                panic!("round {round}: {:?}", s.answers)
            };
            assert_eq!(*t, tag);
            assert_eq!(input_of(again).0["requestState"], format!("r{round}"));
        }
        let s = answer(&mut h, tag, needs(Value::Null, Some("more")));
        assert!(s.asked.is_empty());
        let why = ended_with(&s);
        assert!(why.contains("after 8 rounds"), "{why}");
        assert_eq!(s.answers.iter().map(|a| a.0).collect::<Vec<_>>(), [conn]);
        all_gone(&h);
    }

    /// A `method` request collecting one elicitation: its connection, tag and the minted id.
    fn collecting(h: &mut Harness, sid: &str, method: &str) -> (ConnId, u64, Value) {
        let (conn, tag, _) = request(h, sid, true, method);
        let s = answer(h, tag, needs(json!({"who": elicit()}), Some("x")));
        let id = s.pushed[0].1["id"].clone();
        assert!(id.is_u64(), "{:?}", s.pushed);
        (conn, tag, id)
    }

    /// The client was told request `id` is over, and the call went to no server.
    fn cancelled_here(s: &Said, id: &Value) {
        assert!(
            s.pushed
                .iter()
                .any(|(_, m)| m["method"] == "notifications/cancelled"
                    && m["params"]["requestId"] == *id),
            "{:?}",
            s.pushed
        );
        assert!(
            !s.asked
                .iter()
                .any(|(_, r)| matches!(r, Request::Mcp(McpRequest::Cancel { .. }))),
            "no call at a server to cancel"
        );
    }

    #[test]
    fn a_call_collecting_input_ends_cleanly_however_it_ends() {
        for method in ASKED {
            ends_cleanly(method);
        }
    }

    /// A `method` request collecting input, ended each way there is.
    fn ends_cleanly(method: &str) {
        let (mut h, sid) = setup(json!({"elicitation": {}}));
        // The client cancels it.
        let (conn, _, id) = collecting(&mut h, &sid, method);
        let s = post(
            &mut h,
            &sid,
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                           "params": {"requestId": 5}}),
        );
        cancelled_here(&s, &id);
        assert!(s.ended.contains(&conn));
        all_gone(&h);
        // A late answer is dropped (202), nothing asked.
        let s = post(
            &mut h,
            &sid,
            json!({"jsonrpc": "2.0", "id": id, "result": {"action": "decline"}}),
        );
        assert!(s.asked.is_empty() && s.answers.iter().all(|a| a.1 == 202));
        // The client hangs up.
        let (conn, _, id) = collecting(&mut h, &sid, method);
        h.hangup(conn);
        cancelled_here(&said(&mut h), &id);
        all_gone(&h);
        // The client answers with an error: the call ends saying so.
        let (_, _, id) = collecting(&mut h, &sid, method);
        let s = post(
            &mut h,
            &sid,
            json!({"jsonrpc": "2.0", "id": id,
                                           "error": {"code": -1, "message": "user said no"}}),
        );
        let why = ended_with(&s);
        assert!(why.contains("who with an error: user said no"), "{why}");
        all_gone(&h);
        // Answers beyond the bound of what may wait end the call.
        let (_, _, id) = collecting(&mut h, &sid, method);
        let big = "x".repeat(MAX_HELD_BYTES);
        let s = post(
            &mut h,
            &sid,
            json!({"jsonrpc": "2.0", "id": id,
                                           "result": {"action": "accept", "content": {"a": big}}}),
        );
        let why = ended_with(&s);
        assert!(why.contains("more than 4194304 bytes of answers"), "{why}");
        all_gone(&h);
        // The deadline passes.
        let (_, tag, id) = collecting(&mut h, &sid, method);
        h.cx_do(|g, cx| crate::room::Room::on_timer(g, cx, Timer::Input(tag)));
        let s = said(&mut h);
        assert!(ended_with(&s).contains("within the call's deadline"));
        cancelled_here(&s, &id);
        all_gone(&h);
        // The session ends.
        let (_, _, id) = collecting(&mut h, &sid, method);
        h.send("DELETE", &[("Mcp-Session-Id", sid.as_str())], "");
        cancelled_here(&said(&mut h), &id);
        all_gone(&h);
    }
}
