//! Reply encoding and the effect bus: rooms' outputs are delivered here, and every answer is
//! encoded for the transport its [`ReplyTo`] names (an HTTP response, a WebSocket message).

use super::*;

impl Daemon {
    /// Delivers what the MCP layer produced: answers and events.
    pub(super) fn deliver(&mut self, cx: &mut Cx<'_, Timer>) {
        let effects = std::mem::take(&mut self.effects);
        self.outputs.extend(effects.into_iter().map(Output::from));
        while !self.outputs.is_empty() {
            for output in std::mem::take(&mut self.outputs) {
                match output {
                    Output::Reply(reply, answer) => self.answer(cx, reply, answer),
                    Output::ToolCall(server, outcome, seconds) => {
                        self.telemetry.tool_call(&server, outcome, seconds)
                    }
                    Output::Restart(server) => self.telemetry.server_restart(&server),
                    Output::Unregistered(server) => self.telemetry.forget_server(&server),
                    Output::Event(channel, kind, data) => {
                        self.telemetry.event(kind);
                        let seq = self.events.publish(channel, kind, data);
                        self.broadcast_event(cx, seq);
                    }
                }
            }
        }
    }

    pub(super) fn answer(&mut self, cx: &mut Cx<'_, Timer>, reply: ReplyTo, answer: Answer) {
        self.answer_with(cx, reply, answer, None, false);
    }

    /// Answers an HTTP request with `data`, already serialized JSON (a typed snapshot), in the
    /// success envelope. Any other caller is handed back, for the ordinary [`Self::answer`].
    pub(super) fn answer_serialized(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        reply: ReplyTo,
        data: &[u8],
    ) -> Option<ReplyTo> {
        let ReplyTo::Http {
            conn,
            seq,
            started,
            request_id,
            route,
            method,
        } = reply
        else {
            return Some(reply);
        };
        self.telemetry
            .http_request(route, method, 200, started.elapsed().as_secs_f64());
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut bytes = Vec::with_capacity(data.len() + 200);
        api::write_envelope_raw(&mut bytes, None, data, request_id, ms, &now_string(), None);
        bytes.push(b'\n');
        let response = http::Response::json(200, bytes);
        self.server.respond(
            &mut cx.narrow(Timer::Net).cx(),
            conn,
            seq,
            &response,
            false,
            &mut self.incoming,
        );
        None
    }

    pub(super) fn answer_with(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        reply: ReplyTo,
        answer: Answer,
        header: Option<(&'static str, String)>,
        close: bool,
    ) {
        match reply {
            ReplyTo::Http {
                conn,
                seq,
                started,
                request_id,
                route,
                method,
            } => {
                let status = match &answer {
                    Ok(_) => 200,
                    Err(e) => e.code.http_status(),
                };
                self.telemetry
                    .http_request(route, method, status, started.elapsed().as_secs_f64());
                if !self.server.is_open(conn) {
                    return;
                }
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                let mut bytes = Vec::with_capacity(512);
                api::write_envelope(&mut bytes, &answer, request_id, ms, &now_string(), None);
                bytes.push(b'\n');
                let mut response = http::Response::json(status, bytes);
                response.headers.extend(header);
                self.server.respond(
                    &mut cx.narrow(Timer::Net).cx(),
                    conn,
                    seq,
                    &response,
                    close,
                    &mut self.incoming,
                );
            }
            ReplyTo::Ws {
                conn,
                local,
                started,
                request_id,
            } => {
                let Some(id) = self.server.ws_mut(conn).and_then(|w| w.take_id(local)) else {
                    return;
                };
                send_ws_envelope(
                    &mut self.server,
                    cx,
                    conn,
                    &answer,
                    request_id,
                    started,
                    &id,
                );
            }
        }
    }

    /// A reply that is not wrapped in the envelope (Prometheus text, the OpenAPI document).
    pub(super) fn answer_raw(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        reply: ReplyTo,
        content_type: &'static str,
        body: Vec<u8>,
    ) {
        match reply {
            ReplyTo::Http {
                conn,
                seq,
                started,
                route,
                method,
                ..
            } => {
                self.telemetry
                    .http_request(route, method, 200, started.elapsed().as_secs_f64());
                let response = http::Response {
                    status: 200,
                    content_type,
                    headers: Vec::new(),
                    body,
                };
                self.server.respond(
                    &mut cx.narrow(Timer::Net).cx(),
                    conn,
                    seq,
                    &response,
                    false,
                    &mut self.incoming,
                );
            }
            ReplyTo::Ws { .. } => {
                let text = String::from_utf8_lossy(&body).into_owned();
                let data = serde_json::from_str(&text).unwrap_or(Value::String(text));
                self.answer(cx, reply, Ok(data));
            }
        }
    }
}

pub(super) fn now_string() -> String {
    state::rfc3339_utc_millis(SystemTime::now())
}

/// Sends `answer` in the envelope to WebSocket client `conn`, carrying the client's own `id`.
pub(super) fn send_ws_envelope(
    server: &mut Server,
    cx: &mut Cx<'_, Timer>,
    conn: ConnId,
    answer: &Answer,
    request_id: u64,
    started: Instant,
    id: &Value,
) {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut bytes = Vec::with_capacity(512);
    api::write_envelope(&mut bytes, answer, request_id, ms, &now_string(), Some(id));
    let text = String::from_utf8(bytes).unwrap_or_default();
    server.ws_send(&mut cx.narrow(Timer::Net).cx(), conn, text.into());
}
