//! Who may call: the TCP rules of [`listener::TcpAccess`], the media-type rule of both
//! listeners, the control-socket-only routes, and the WebSocket side: upgrade, commands,
//! accept loops.
//!
//! Every refusal is counted in `vsm_auth_failures_total{reason}` and logged through one
//! [`crate::logs::LogThrottle`], so a flood of bad requests writes a bounded number of lines.

use super::*;
use crate::net::listener::Refusal;

/// Log lines per refusal reason per window; the rest are counted and summarised.
const REFUSAL_LINES_PER_WINDOW: u32 = 5;
/// Window of the refusal-log throttle.
pub(super) const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

/// The throttle used for refusal log lines.
pub(super) fn refusal_throttle() -> crate::logs::LogThrottle {
    crate::logs::LogThrottle::new(REFUSAL_LOG_WINDOW, REFUSAL_LINES_PER_WINDOW)
}

/// A client-chosen header value, quoted and cut short enough to log.
fn shown(value: Option<&str>) -> String {
    let v = value.unwrap_or("");
    let cut: String = v.chars().take(80).collect();
    if cut.len() < v.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// The answer to a refused request.
fn refusal_error(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Host => ApiError::new(
            ErrorCode::Forbidden,
            "Host not allowed: add it to http.allowed_hosts to reach the API by that name",
        ),
        Refusal::Origin => ApiError::new(
            ErrorCode::Forbidden,
            "Origin not allowed: only the daemon's own origin (its host and port) and http.allowed_origins may call",
        ),
        Refusal::CrossSite => ApiError::new(
            ErrorCode::Forbidden,
            "cross-site request refused: Sec-Fetch-Site is cross-site or same-site and no allowed Origin was sent",
        ),
        Refusal::Token => ApiError::new(ErrorCode::Unauthorized, "a valid bearer token is required"),
        Refusal::MediaType => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send Content-Type: application/json (request bodies are JSON; over TCP every POST, PUT, PATCH and DELETE must declare it)",
        ),
    }
}

impl Daemon {
    /// Counts a refusal and logs it, at most a few lines per reason per window.
    pub(super) fn log_refusal(&mut self, reason: &'static str, line: impl FnOnce() -> String) {
        self.telemetry.auth_failure(reason);
        let admission = self.refusal_log.admit(reason, Instant::now());
        if admission.suppressed > 0 {
            log::warn!(
                "suppressed {} similar messages (refused: {reason}) in a {} s window",
                admission.suppressed,
                REFUSAL_LOG_WINDOW.as_secs()
            );
        }
        if admission.log {
            log::warn!("{}", line());
        }
    }

    /// Logs the "suppressed" summary of refusal floods that have stopped (called from the
    /// periodic health tick, so it costs nothing while idle).
    pub(super) fn flush_refusal_log(&mut self) {
        for (reason, n) in self.refusal_log.take_expired(Instant::now()) {
            log::warn!(
                "suppressed {n} similar messages (refused: {reason}) in a {} s window",
                REFUSAL_LOG_WINDOW.as_secs()
            );
        }
    }

    /// The TCP rules (Host, Origin, Sec-Fetch-Site, token, media type); refusals are
    /// counted and logged (throttled).
    pub(super) fn check_tcp_access(&mut self, request: &http::Request) -> Result<(), ApiError> {
        let Err(refusal) = self.access.check(request) else {
            return Ok(());
        };
        let path: String = request.path.chars().take(120).collect();
        self.log_refusal(refusal.reason(), || match refusal {
            Refusal::Host => format!(
                "refused a request for Host {} (not an allowed name)",
                shown(request.header("host"))
            ),
            Refusal::Origin => format!(
                "refused a request for {path:?} from Origin {} (not an allowed origin)",
                shown(request.header("origin"))
            ),
            Refusal::CrossSite => format!(
                "refused a cross-site request for {path:?} (Sec-Fetch-Site {}, no Origin)",
                shown(request.header("sec-fetch-site"))
            ),
            Refusal::Token => format!("refused an unauthenticated request for {path:?}"),
            Refusal::MediaType => format!(
                "refused {} {path:?} with Content-Type {} (only application/json)",
                routes::method_label(&request.method),
                shown(request.header("content-type"))
            ),
        });
        Err(refusal_error(refusal))
    }

    /// The media-type rule on the control socket: a body must be declared JSON.
    pub(super) fn check_unix_media_type(
        &mut self,
        request: &http::Request,
    ) -> Result<(), ApiError> {
        if listener::media_type_ok(request, false) {
            return Ok(());
        }
        let path: String = request.path.chars().take(120).collect();
        self.log_refusal(Refusal::MediaType.reason(), || {
            format!(
                "refused {} {path:?} on the control socket with Content-Type {} (only application/json)",
                routes::method_label(&request.method),
                shown(request.header("content-type"))
            )
        });
        Err(refusal_error(Refusal::MediaType))
    }

    /// Refuses the control-socket-only routes (the token routes) to TCP callers, even those
    /// that sent a valid token: a leaked token must not hand out its successor.
    pub(super) fn check_not_control_socket_only(
        &mut self,
        resolved: Option<&routes::Resolved>,
    ) -> Result<(), ApiError> {
        let Some(pattern) = resolved
            .map(|r| r.pattern)
            .filter(|p| routes::control_socket_only(p))
        else {
            return Ok(());
        };
        self.log_refusal("control_socket_only", || {
            format!("refused a request for {pattern} over TCP (control socket only)")
        });
        Err(ApiError::new(
            ErrorCode::Forbidden,
            "the API token is only available on the control socket: run `vsm-daemon token`",
        ))
    }

    /// `GET /api/v1/auth/token` and `POST /api/v1/auth/token/rotate` (the router lets them
    /// through on the control socket only).
    pub(super) fn auth_token(&mut self, rotate: bool) -> Answer {
        let Some(current) = &self.access.token else {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "the TCP listener is not running, so no API token is in effect",
            ));
        };
        if rotate {
            if !matches!(current.source, net::token::TokenSource::Generated(_)) {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "the token comes from {}: change it there (only a generated token can be rotated)",
                        current.source
                    ),
                ));
            }
            let token = net::token::rotate(self.state.path())
                .map_err(|m| ApiError::new(ErrorCode::Internal, m))?;
            self.access.token = Some(token);
        }
        let Some(token) = &self.access.token else {
            return Err(ApiError::new(ErrorCode::Internal, "no API token"));
        };
        Ok(json!({
            "token": token.value,
            "source": token.source.kind(),
            "path": token.source.path(),
            "rotated": rotate,
            "page": self.tcp_addr.map(|a| crate::page::link(a, &token.value)),
        }))
    }

    pub(super) fn upgrade_ws(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        conn: ConnId,
        seq: u64,
        request: &http::Request,
        reply: ReplyTo,
    ) {
        if request.method != "GET" && request.method != "HEAD" {
            let e = ApiError::new(
                ErrorCode::MethodNotAllowed,
                "/ws/monitor takes GET with Upgrade: websocket",
            );
            let allow = Some(("Allow", routes::allow_header(&["GET"])));
            self.answer_with(cx, reply, Err(e), allow, false);
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
        if let Err(message) = self.server.upgrade(
            &mut cx.narrow(Timer::Net).cx(),
            conn,
            seq,
            &response,
            cursor,
        ) {
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
        let hello = json!({"type": "connected", "timestamp": &*now_string(),
                           "data": {"version": env!("CARGO_PKG_VERSION"), "channels": net::ws::CHANNELS,
                                    "silent_channels": net::ws::SILENT_CHANNELS}});
        self.server.ws_send(
            &mut cx.narrow(Timer::Net).cx(),
            conn,
            hello.to_string().into(),
        );
    }

    pub(super) fn handle_ws_text(&mut self, cx: &mut Cx<'_, Timer>, conn: ConnId, text: &str) {
        let started = Instant::now();
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let reply_direct =
            |server: &mut Server, cx: &mut Cx<'_, Timer>, id: Option<Value>, answer: Answer| {
                let id = id.unwrap_or(Value::Null);
                reply::send_ws_envelope(server, cx, conn, &answer, request_id, started, &id);
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
                if let Err(e) =
                    self.check_not_control_socket_only(routes::resolve(&request.path).as_ref())
                {
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
                    self.server.adopt(
                        &mut cx.narrow(Timer::Net).cx(),
                        net::Stream::Tcp(stream),
                        peer,
                    );
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
                        // Counted when its request is refused; the line is throttled here.
                        let admission = self.refusal_log.admit("peer_uid", Instant::now());
                        if admission.suppressed > 0 {
                            log::warn!(
                                "suppressed {} similar messages (refused: peer_uid)",
                                admission.suppressed
                            );
                        }
                        if admission.log {
                            log::warn!(
                                "refused control connection from uid {} pid {}: only uid {} and root may use the daemon",
                                cred.map_or(-1, |c| c.uid as i64),
                                cred.map_or(-1, |c| c.pid as i64),
                                sys::euid()
                            );
                        }
                    }
                    let peer = Peer {
                        via: net::Via::Unix,
                        uid: cred.map(|c| c.uid),
                        pid: cred.map(|c| c.pid),
                        addr: None,
                        authorized: allowed,
                    };
                    self.server.adopt(
                        &mut cx.narrow(Timer::Net).cx(),
                        net::Stream::Unix(stream),
                        peer,
                    );
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

/// Requests as they arrive: parse errors, peer and access checks, the WebSocket upgrade,
/// then routing into [`Daemon::handle`].
impl Daemon {
    pub(super) fn handle_incoming(&mut self, cx: &mut Cx<'_, Timer>, incoming: Incoming) {
        let (conn, seq, request, peer) = match incoming {
            Incoming::Http {
                conn,
                seq,
                request,
                peer,
            } => (conn, seq, request, peer),
            Incoming::WsText { conn, text } => {
                self.handle_ws_text(cx, conn, &text);
                return;
            }
        };
        let resolved = request.as_ref().ok().and_then(|r| routes::resolve(&r.path));
        let (route, method) = match &request {
            Ok(r) => (
                routes::label(resolved.as_ref()),
                routes::method_label(&r.method),
            ),
            Err(_) => ("invalid", "OTHER"),
        };
        let reply = ReplyTo::Http {
            conn,
            seq,
            started: Instant::now(),
            request_id: self.next_request_id,
            route,
            method,
        };
        self.next_request_id += 1;
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                let code = match e.status {
                    431 => ErrorCode::HeaderTooLarge,
                    413 => ErrorCode::PayloadTooLarge,
                    411 => ErrorCode::LengthRequired,
                    _ => ErrorCode::BadRequest,
                };
                self.answer_with(cx, reply, Err(ApiError::new(code, e.message)), None, true);
                return;
            }
        };
        self.handle_request(cx, (conn, seq), &request, &peer, reply, resolved);
        // Its buffers serve the next request parsed.
        self.server.recycle(request);
    }

    fn handle_request(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        (conn, seq): (ConnId, u64),
        request: &http::Request,
        peer: &net::Peer,
        reply: ReplyTo,
        resolved: Option<routes::Resolved>,
    ) {
        if !peer.authorized {
            // The accept loop logged (throttled) who it was.
            self.telemetry.auth_failure("peer_uid");
            let err = ApiError::new(
                ErrorCode::Forbidden,
                "this user may not use the control socket",
            );
            self.answer_with(cx, reply, Err(err), None, true);
            return;
        }
        let checked = if peer.via == net::Via::Tcp {
            self.check_tcp_access(request)
        } else {
            self.check_unix_media_type(request)
        };
        if let Some(ip) = peer.addr.map(|a| a.ip()) {
            // Security signals: requests, failed tokens and refused Host/Origin per peer.
            let signals = &mut self.rooms.security;
            signals.request(ip);
            match checked.as_ref().map_err(|e| e.code) {
                Err(ErrorCode::Unauthorized) => signals.auth_failure(ip),
                Err(ErrorCode::Forbidden) => signals.refused_origin(ip),
                _ => {}
            }
        }
        if let Err(e) = checked {
            let header = (e.code == ErrorCode::Unauthorized)
                .then(|| ("WWW-Authenticate", "Bearer".to_string()));
            self.answer_with(cx, reply, Err(e), header, false);
            return;
        }
        if peer.via == net::Via::Tcp {
            if let Err(e) = self.check_not_control_socket_only(resolved.as_ref()) {
                self.answer_with(cx, reply, Err(e), None, false);
                return;
            }
        }
        if request.path == "/mcp" {
            self.gateway_http(cx, request, reply);
            return;
        }
        if request.path == "/ws/monitor" {
            self.upgrade_ws(cx, conn, seq, request, reply);
            return;
        }
        match routes::route_resolved(request, resolved) {
            Ok(req) => self.handle(cx, req, reply),
            Err(e) => {
                let allow = e.allow.map(|a| ("Allow", a));
                self.answer_with(cx, reply, Err(e.error), allow, false);
            }
        }
    }
}
