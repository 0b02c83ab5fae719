//! Reply encoding and the effect bus: rooms' outputs are delivered here, and every answer is
//! encoded for the transport its [`ReplyTo`] names (an HTTP response, a WebSocket message).

use super::*;

/// Capacity up to which [`Daemon::deliver`] keeps its emptied buffers.
const KEPT_BUS: usize = 16;

impl Daemon {
    /// Delivers what the rooms produced (answers, events, requests to other rooms, document
    /// writes) until nothing is left: carrying one out may produce more.
    pub(super) fn deliver(&mut self, cx: &mut Cx<'_, Timer>) {
        loop {
            let mut outputs = std::mem::take(&mut self.outputs);
            let mut effects = std::mem::take(&mut self.effects);
            if outputs.is_empty() && effects.is_empty() {
                self.outputs = outputs;
                self.effects = effects;
                return;
            }
            for output in outputs.drain(..) {
                match output {
                    Output::Reply(reply, answer) => self.answer(cx, reply, answer),
                    Output::ReplyRaw(reply, raw) => self.answer_call(cx, reply, raw),
                    Output::ToolCall {
                        server,
                        tool,
                        outcome,
                        seconds,
                    } => {
                        self.telemetry.tool_call(&server, outcome, seconds);
                        let call = EventData::McpToolCall {
                            server_id: server,
                            tool,
                            outcome,
                            latency_ms: seconds * 1000.0,
                        };
                        self.publish(cx, Channel::McpServers, call);
                    }
                    Output::Request(server, method, outcome) => {
                        self.telemetry.request(&server, method, outcome)
                    }
                    Output::Restart(server) => self.telemetry.server_restart(&server),
                    Output::Unregistered(server) => self.telemetry.forget_server(&server),
                    Output::Event(channel, data) => self.publish(cx, channel, data),
                    Output::Effect(effect) => self.carry_out(cx, effect),
                }
            }
            for effect in effects.drain(..) {
                self.carry_out(cx, effect);
            }
            // The emptied buffers are kept for the next delivery (a small one: a burst's
            // would stay), so that a call's outputs and effects do not allocate them anew.
            if self.outputs.is_empty() && outputs.capacity() <= KEPT_BUS {
                self.outputs = outputs;
            }
            if self.effects.is_empty() && effects.capacity() <= KEPT_BUS {
                self.effects = effects;
            }
        }
    }

    /// Carries out one common effect of a room.
    fn carry_out(&mut self, cx: &mut Cx<'_, Timer>, effect: Effect) {
        match effect {
            Effect::Reply(reply, answer) => self.answer(cx, reply, answer),
            Effect::Event(channel, data) => self.publish(cx, channel, data),
            Effect::Publish(name, kind, data) => match Channel::parse(name) {
                Some(channel) => self.publish(cx, channel, EventData::Other { kind, data }),
                // A room's bug, not a client's: said loudly, and the event goes nowhere
                // (no subscriber could have asked for that channel).
                None => log::error!("event {kind} dropped: there is no channel {name}"),
            },
            Effect::Request { from, tag, request } => {
                self.handle(cx, *request, ReplyTo::Room { room: from, tag })
            }
            Effect::Persist(write) => self.persist(cx, write),
            Effect::Observe(obs) => self.observe(cx, obs),
        }
    }

    /// Records an event in the history and sends it, serialized once, to the WebSocket
    /// clients subscribed to its channel (SSE followers read it from the history).
    ///
    /// The rooms see it (`Room::on_event`) once it is recorded and sent, with the sequence
    /// number it got: what a room does in answer (which may publish events of its own, at once
    /// when its outputs are carried out directly) comes after it, in the history as on the
    /// wire. The rooms read the typed data from the history (see [`Daemon::rooms_event`]).
    fn publish(&mut self, cx: &mut Cx<'_, Timer>, channel: Channel, data: EventData) {
        self.telemetry.event(data.kind());
        // The history keeps data that is not an object under `value`; the rooms get it as
        // it was published.
        let published = match &data {
            EventData::Other { data: d, .. } if !d.is_object() => Some(data.clone()),
            _ => None,
        };
        let servers_changed = matches!(
            data,
            EventData::McpServerRegistered { .. }
                | EventData::McpServerUnregistered { .. }
                | EventData::McpServerStatusChange { .. }
                | EventData::McpServerToolsChanged { .. }
                | EventData::McpServerListChanged { .. }
        );
        let event = self.events.publish(channel, data);
        let seq = event.seq;
        // Serialized only when someone may want it now (a WebSocket client); a history
        // query or an SSE stream serializes it later, once.
        if self.server.ws_clients() > 0 {
            let text: tungstenite::protocol::frame::Utf8Bytes = event.wire().to_string().into();
            self.server
                .ws_broadcast(&mut cx.narrow(Timer::Net).cx(), channel.name(), &text);
        }
        self.rooms_event(cx, seq, channel, published);
        if servers_changed {
            self.rooms_servers_changed(cx);
        }
    }

    /// A tool call's answer with the server's result bytes: spliced into the envelope for an
    /// HTTP caller, handed as they are to a room (the gateway splices them into its answer),
    /// parsed into the ordinary answer for a WebSocket client.
    fn answer_call(&mut self, cx: &mut Cx<'_, Timer>, reply: ReplyTo, raw: crate::api::RawCall) {
        match reply {
            ReplyTo::Http { .. } => {
                let data = raw.data();
                let _ = self.answer_serialized(cx, reply, &data);
            }
            ReplyTo::Room { room, tag } => self.room_raw_answer(cx, room, tag, raw),
            ReplyTo::Ws { .. } => self.answer(cx, reply, raw.into_answer()),
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
        respond_serialized(
            &mut self.server,
            &mut self.telemetry,
            &mut self.incoming,
            cx,
            reply,
            None,
            data,
        )
        .err()
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
                    Ok(_) if method == "POST" && crate::ops::ACCEPTED.contains(&route) => 202,
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
            ReplyTo::Room { room, tag } => self.room_answer(cx, room, tag, answer),
        }
    }

    /// A file of the status page, with its security headers (over the WebSocket, its text).
    pub(super) fn answer_page(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        reply: ReplyTo,
        asset: crate::page::Asset,
    ) {
        let body = std::borrow::Cow::Borrowed(asset.body().as_bytes());
        let headers = crate::page::Asset::headers();
        self.answer_raw_with(cx, reply, asset.content_type(), headers, body);
    }

    /// A reply that is not wrapped in the envelope (Prometheus text, the OpenAPI document).
    pub(super) fn answer_raw(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        reply: ReplyTo,
        content_type: &'static str,
        body: std::borrow::Cow<'static, [u8]>,
    ) {
        self.answer_raw_with(cx, reply, content_type, Vec::new(), body);
    }

    /// [`Daemon::answer_raw`] with extra headers (HTTP only).
    fn answer_raw_with(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        reply: ReplyTo,
        content_type: &'static str,
        headers: Vec<(&'static str, String)>,
        body: std::borrow::Cow<'static, [u8]>,
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
                    headers,
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
            ReplyTo::Ws { .. } | ReplyTo::Room { .. } => {
                let text = String::from_utf8_lossy(&body).into_owned();
                let data = serde_json::from_str(&text).unwrap_or(Value::String(text));
                self.answer(cx, reply, Ok(data));
            }
        }
    }
}

pub(super) fn now_string() -> state::Stamp {
    state::rfc3339_utc_millis_stamp(SystemTime::now())
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
    server.ws_answer(&mut cx.narrow(Timer::Net).cx(), conn, text.into());
}

/// Sends `data`, already serialized JSON, in the envelope (the error's when there is one) to an
/// HTTP caller. Takes the daemon's fields apart so a caller can lend `data` from a room.
/// `Err`: not an HTTP caller, handed back for the ordinary answer.
pub(super) fn respond_serialized(
    server: &mut Server,
    telemetry: &mut crate::telemetry::Telemetry,
    incoming: &mut VecDeque<Incoming>,
    cx: &mut Cx<'_, Timer>,
    reply: ReplyTo,
    error: Option<&ApiError>,
    data: &[u8],
) -> Result<(), ReplyTo> {
    let ReplyTo::Http {
        conn,
        seq,
        started,
        request_id,
        route,
        method,
    } = reply
    else {
        return Err(reply);
    };
    let status = error.map_or(200, |e| e.code.http_status());
    telemetry.http_request(route, method, status, started.elapsed().as_secs_f64());
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut bytes = Vec::with_capacity(data.len() + 200);
    api::write_envelope_raw(&mut bytes, error, data, request_id, ms, &now_string(), None);
    bytes.push(b'\n');
    let response = http::Response::json(status, bytes);
    server.respond(
        &mut cx.narrow(Timer::Net).cx(),
        conn,
        seq,
        &response,
        false,
        incoming,
    );
    Ok(())
}
