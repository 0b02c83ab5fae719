//! Who may call over TCP, and the WebSocket side: upgrade, commands, accept loops.

use super::*;

impl Daemon {
    /// Host allow-list, then the bearer token (everything but `GET /api/v1/health`).
    pub(super) fn check_tcp_access(&mut self, request: &http::Request) -> Result<(), ApiError> {
        if !self.access.host_allowed(request.header("host")) {
            self.telemetry.auth_failure("host");
            log::warn!(
                "refused a request for Host {:?} (not an allowed name)",
                request.header("host").unwrap_or("")
            );
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "Host not allowed: add it to http.allowed_hosts to reach the API by that name",
            ));
        }
        if request.path == "/ws/monitor" && !self.access.origin_allowed(request.header("origin")) {
            self.telemetry.auth_failure("origin");
            log::warn!(
                "refused a WebSocket from Origin {:?}",
                request.header("origin").unwrap_or("")
            );
            return Err(ApiError::new(ErrorCode::Forbidden, "Origin not allowed"));
        }
        let exempt =
            request.method == "GET" && request.path.trim_end_matches('/') == "/api/v1/health";
        let query_token = (request.path == "/ws/monitor")
            .then(|| {
                request
                    .query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("token="))
            })
            .flatten();
        if !exempt
            && !self
                .access
                .token_ok(request.header("authorization"), query_token)
        {
            self.telemetry.auth_failure("token");
            log::warn!("refused an unauthenticated request for {}", request.path);
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "a valid bearer token is required",
            ));
        }
        Ok(())
    }

    pub(super) fn upgrade_ws(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        conn: ConnId,
        seq: u64,
        request: &http::Request,
        reply: ReplyTo,
    ) {
        if request.method != "GET" {
            let e = ApiError::new(
                ErrorCode::MethodNotAllowed,
                "/ws/monitor takes GET with Upgrade: websocket",
            );
            self.answer_with(cx, reply, Err(e), Some(("Allow", "GET".into())), false);
            return;
        }
        let response = match net::ws::handshake_response(request) {
            Ok(r) => r,
            Err((status, message)) => {
                let code = if status == 426 {
                    ErrorCode::UpgradeRequired
                } else {
                    ErrorCode::BadRequest
                };
                let header = (status == 426).then(|| ("Upgrade", "websocket".to_string()));
                self.answer_with(cx, reply, Err(ApiError::new(code, message)), header, true);
                return;
            }
        };
        let cursor = self.logging.ring.last_seq();
        if let Err(message) = self.server.upgrade(cx, conn, seq, &response, cursor) {
            self.answer_with(
                cx,
                reply,
                Err(ApiError::new(ErrorCode::BadRequest, message)),
                None,
                true,
            );
            return;
        }
        log::debug!("WebSocket client connected");
        let hello = json!({"type": "connected", "timestamp": now_string(),
                           "data": {"version": env!("CARGO_PKG_VERSION"), "channels": net::ws::CHANNELS,
                                    "silent_channels": net::ws::SILENT_CHANNELS}});
        self.server.ws_send(cx, conn, hello.to_string().into());
    }

    pub(super) fn handle_ws_text(&mut self, cx: &mut Cx<'_, Timer>, conn: ConnId, text: &str) {
        let started = Instant::now();
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let reply_direct =
            |server: &mut Server, cx: &mut Cx<'_, Timer>, id: Option<Value>, answer: Answer| {
                let mut bytes = Vec::with_capacity(512);
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                let id = id.unwrap_or(Value::Null);
                api::write_envelope(
                    &mut bytes,
                    &answer,
                    request_id,
                    ms,
                    &now_string(),
                    Some(&id),
                );
                let text = String::from_utf8(bytes).unwrap_or_default();
                server.ws_send(cx, conn, text.into());
            };
        match net::ws::parse_command(text) {
            Err((id, e)) => reply_direct(&mut self.server, cx, id, Err(e)),
            Ok(net::ws::Command::Subscribe(id, channels))
            | Ok(net::ws::Command::Unsubscribe(id, channels))
                if self.server.ws_mut(conn).is_none() =>
            {
                let _ = (id, channels);
            }
            Ok(net::ws::Command::Subscribe(id, channels)) => {
                let now = self.server.ws_mut(conn).map(|w| {
                    w.channels.extend(channels);
                    w.channels.iter().cloned().collect::<Vec<_>>()
                });
                reply_direct(&mut self.server, cx, id, Ok(json!({"subscribed": now})));
            }
            Ok(net::ws::Command::Unsubscribe(id, channels)) => {
                let now = self.server.ws_mut(conn).map(|w| {
                    for c in &channels {
                        w.channels.remove(c);
                    }
                    w.channels.iter().cloned().collect::<Vec<_>>()
                });
                reply_direct(&mut self.server, cx, id, Ok(json!({"subscribed": now})));
            }
            Ok(net::ws::Command::Api(id, request)) => {
                let Some(local) = self
                    .server
                    .ws_mut(conn)
                    .map(|w| w.remember_id(id.clone().unwrap_or(Value::Null)))
                else {
                    return;
                };
                let reply = ReplyTo::Ws {
                    conn,
                    local,
                    started,
                    request_id,
                };
                if (request.path == "/api/v1/logs" || request.path == "/api/v1/events")
                    && request.query.contains("follow=true")
                {
                    let e = ApiError::new(
                        ErrorCode::BadRequest,
                        "subscribe to the logs channel or an event channel instead of following",
                    );
                    self.answer(cx, reply, Err(e));
                    return;
                }
                match routes::route(&request) {
                    Ok(req) => self.handle(cx, req, reply),
                    Err(e) => self.answer(cx, reply, Err(e.error)),
                }
            }
        }
    }

    pub(super) fn accept_tcp(&mut self, cx: &mut Cx<'_, Timer>) {
        loop {
            let accepted = match &self.tcp {
                Some(l) => l.accept(),
                None => return,
            };
            match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let peer = Peer {
                        via: net::Via::Tcp,
                        uid: None,
                        pid: None,
                        addr: Some(addr),
                        authorized: true,
                    };
                    self.server.adopt(cx, net::Stream::Tcp(stream), peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("accept on the TCP listener failed: {e}");
                    return;
                }
            }
        }
    }

    pub(super) fn accept_control(&mut self, cx: &mut Cx<'_, Timer>) {
        loop {
            let accepted = match &self.control {
                Some(c) => c.listener.accept(),
                None => return,
            };
            match accepted {
                Ok((stream, _)) => {
                    let (allowed, cred) = listener::unix_peer_allowed(&stream);
                    if !allowed {
                        log::warn!(
                            "refused control connection from uid {} pid {}: only uid {} and root may use the daemon",
                            cred.map_or(-1, |c| c.uid as i64),
                            cred.map_or(-1, |c| c.pid as i64),
                            sys::euid()
                        );
                    }
                    let peer = Peer {
                        via: net::Via::Unix,
                        uid: cred.map(|c| c.uid),
                        pid: cred.map(|c| c.pid),
                        addr: None,
                        authorized: allowed,
                    };
                    self.server.adopt(cx, net::Stream::Unix(stream), peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: log and wait for the next readiness event.
                    log::warn!("accept on the control socket failed: {e}");
                    return;
                }
            }
        }
    }
}
