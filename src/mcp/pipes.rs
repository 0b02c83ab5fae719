//! Carries bytes and timers between the loop and each server's [`Session`]: drains the
//! pipes into lines, feeds stdout lines to the session and stderr lines to the log (rate
//! limited), writes what the session sends, and carries out its [`Effect`]s (answers,
//! timers, events, supervisor events, ending a run).

use super::session::{Context, Effect};
use super::*;

/// Size of the one read buffer the drains share: a full pipe's worth (Linux's default pipe
/// capacity), so one `read` empties a full pipe.
const READ_BUF_BYTES: usize = 64 * 1024;

/// Capacity up to which the effects list is kept between a session's lines and calls (a
/// tool call's answer has three effects; a burst's list is let go).
pub(super) const KEPT_EFFECTS: usize = 8;

impl Mcp {
    /// Writes to a server's stdin; a stuck server's run is ended.
    pub(super) fn send(&mut self, id: &str, bytes: &[u8]) {
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        let Some(p) = server.process.as_mut() else {
            return;
        };
        match p.send(bytes) {
            Ok(()) => {}
            // It closed stdin or exited: the exit status (on SIGCHLD) tells the story.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                log::debug!("MCP server {id}: stdin closed: {e}");
            }
            Err(e) => {
                // Stuck (not reading its stdin) or broken otherwise: end the run.
                let reason = format!("cannot write to the server: {e}");
                log::warn!("MCP server {id}: {reason}");
                server.ending.get_or_insert(reason);
                p.signal_group(libc::SIGKILL);
            }
        }
    }

    /// What the session needs to know about server `id` now.
    pub(super) fn context(&self, id: &str) -> Option<Context> {
        let server = self.servers.get(id)?;
        let c = &self.settings.config;
        Some(Context {
            status: server.status,
            now: Instant::now(),
            limits: tools::Limits {
                max_bytes: c.max_tool_list_bytes,
                max_tools: c.max_tools,
            },
            max_line: c.max_line_bytes,
        })
    }

    /// Carries out what a session decided, in order.
    pub(super) fn apply(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        mut effects: Vec<Effect<ReplyTo, TimerId>>,
        out: &mut Vec<Output>,
    ) {
        self.apply_from(cx, id, &mut effects, out);
    }

    /// Carries out `effects` (see [`Self::apply`]) and keeps the emptied list for the next
    /// line or call, unless it grew past [`KEPT_EFFECTS`].
    fn apply_kept(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        mut effects: Vec<Effect<ReplyTo, TimerId>>,
        out: &mut Vec<Output>,
    ) {
        self.apply_from(cx, id, &mut effects, out);
        // Carrying them out may have kept a list of its own (a nested line or call).
        if effects.capacity() <= KEPT_EFFECTS && self.effects.capacity() == 0 {
            self.effects = effects;
        }
    }

    /// [`Self::apply`], leaving `effects` empty.
    fn apply_from(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        effects: &mut Vec<Effect<ReplyTo, TimerId>>,
        out: &mut Vec<Output>,
    ) {
        for effect in effects.drain(..) {
            match effect {
                Effect::Send(bytes) => self.send(id, &bytes),
                Effect::Reply(reply, answer) => out.push(Output::Reply(reply, answer)),
                Effect::ReplyRaw(reply, raw) => out.push(Output::ReplyRaw(reply, raw)),
                Effect::CancelTimer(t) => {
                    cx.timers.cancel(t);
                }
                Effect::RelistAt(at) => {
                    if let Some(s) = self.servers.get(id) {
                        let (slot, run) = (s.slot, s.run);
                        let kind = TimerKind::Relist;
                        cx.timers.insert(at, Timer { slot, run, kind });
                    }
                }
                Effect::RelistExtraAt(list, at) => {
                    if let Some(s) = self.servers.get(id) {
                        let (slot, run) = (s.slot, s.run);
                        let kind = TimerKind::RelistExtra(list);
                        cx.timers.insert(at, Timer { slot, run, kind });
                    }
                }
                Effect::ProbeAt(at) => {
                    if let Some(s) = self.servers.get(id) {
                        let (slot, run) = (s.slot, s.run);
                        let kind = TimerKind::Probe;
                        cx.timers.insert(at, Timer { slot, run, kind });
                    }
                }
                Effect::Event(data) => out.push(Output::Event(Channel::McpServers, data)),
                Effect::Request(method, outcome) => {
                    out.push(Output::Request(id.to_string(), method, outcome))
                }
                Effect::ToolCall(outcome, seconds, tool) => out.push(Output::ToolCall {
                    server: id.to_string(),
                    tool,
                    outcome,
                    seconds,
                }),
                Effect::Handshake(version) => {
                    let reason = format!("protocol {version}");
                    self.supervise(cx, id, supervisor::Event::Handshake, &reason, out);
                }
                Effect::Listed(count) => {
                    // The handshake deadline is met.
                    if let Some(t) = self.servers.get_mut(id).and_then(|s| s.timer.take()) {
                        cx.timers.cancel(t);
                    }
                    let reason = format!("ready with {count} tools");
                    self.supervise(cx, id, supervisor::Event::Listed, &reason, out);
                }
                Effect::PingAnswered => {
                    let answered = supervisor::Event::PingAnswered;
                    self.supervise(cx, id, answered, "answered a health ping", out);
                }
                Effect::PingMissed(missed) => {
                    let allowed = self.settings.config.ping_misses;
                    let event = supervisor::Event::PingMissed { missed, allowed };
                    let reason = if missed >= allowed {
                        format!("missed {missed} health pings")
                    } else {
                        format!("missed {missed} health ping(s)")
                    };
                    self.supervise(cx, id, event, &reason, out);
                }
                Effect::ProtocolError(what) => {
                    let Some(server) = self.servers.get_mut(id) else {
                        continue;
                    };
                    if server.session.protocol_errors <= 10 {
                        log::warn!("MCP server {id}: {what}");
                    } else {
                        log::debug!("MCP server {id}: {what}");
                    }
                    server.note_error(what);
                }
                Effect::Ask {
                    ask,
                    method,
                    params,
                    calls,
                    others,
                } => {
                    let tag = self.relays.tag(id, ask);
                    let request = crate::api::GatewayRequest::Ask {
                        server: id.to_string(),
                        method,
                        params,
                        calls,
                        others,
                    };
                    out.push(Output::Effect(crate::room::Effect::Request {
                        from: <Mcp as crate::room::Room>::NAME,
                        tag,
                        request: Box::new(crate::api::Request::Gateway(request)),
                    }));
                }
                Effect::Notify { method, params } => {
                    let request = crate::api::GatewayRequest::Notify {
                        server: id.to_string(),
                        method,
                        params,
                    };
                    out.push(Output::Effect(crate::room::Effect::Request {
                        from: <Mcp as crate::room::Room>::NAME,
                        tag: super::asks::Relays::NOTE_TAG,
                        request: Box::new(crate::api::Request::Gateway(request)),
                    }));
                }
                Effect::EndRun(reason) => self.kill_run(id, reason),
                Effect::Misbehaved(reason) => {
                    // A run already ending is not killed twice.
                    if self.servers.get(id).is_some_and(|s| s.ending.is_none()) {
                        self.kill_misbehaving(id, reason);
                    }
                }
            }
        }
    }

    /// The gateway's answer to relayed request `tag` (the client's, or its refusal): to the
    /// server that asked, if its request still waits.
    pub(super) fn relay_answered(
        &mut self,
        cx: &mut crate::room::RoomCx<'_, Mcp>,
        tag: u64,
        answer: Answer,
    ) {
        if tag == super::asks::Relays::NOTE_TAG {
            return;
        }
        let Some((id, ask)) = self.relays.take(tag) else {
            log::debug!("an answer for relayed request {tag}, which nobody waits for");
            return;
        };
        let Some(server) = self.servers.get_mut(&id) else {
            return;
        };
        let effects = server.session.answer_ask(ask, answer);
        let (mut lcx, out) = cx.split();
        self.apply(&mut lcx, &id, effects, out);
    }

    /// Readiness on a pipe token.
    /// Handles readiness of a child's pipe; `ended`: the event also reported the writer's close
    /// (or an error), so reading goes on to the end of the file.
    pub fn on_ready(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        token: mio::Token,
        ended: bool,
        out: &mut Vec<Output>,
    ) {
        let Some(n) = self.tokens.index(token) else {
            return;
        };
        let (slot, pipe) = (n / 3, [Pipe::Stdin, Pipe::Stdout, Pipe::Stderr][n % 3]);
        let Some(id) = self.slots.get(slot).cloned().flatten() else {
            return;
        };
        let id = &*id;
        match pipe {
            Pipe::Stdin => {
                if let Some(p) = self.servers.get_mut(id).and_then(|s| s.process.as_mut()) {
                    if p.flush().is_err() {
                        p.close_stdin(cx.registry);
                    }
                }
            }
            Pipe::Stdout | Pipe::Stderr => self.read_pipe(cx, id, pipe, !ended, out),
        }
    }

    /// Reads and handles everything the pipe holds, to `WouldBlock` or the end of the file.
    pub(super) fn drain(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        pipe: Pipe,
        out: &mut Vec<Output>,
    ) {
        self.read_pipe(cx, id, pipe, false, out);
    }

    /// Reads and handles what the pipe holds. `short_read_drains`: on a fresh edge, a read that
    /// does not fill the buffer has emptied the pipe (a later write raises a new edge: the
    /// kernel wakes epoll waiters on every write to a polled pipe), so the read that would only
    /// say `WouldBlock` is skipped: one syscall less per line a server sends.
    fn read_pipe(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        pipe: Pipe,
        short_read_drains: bool,
        out: &mut Vec<Output>,
    ) {
        let open = self
            .servers
            .get(id)
            .and_then(|s| s.process.as_ref())
            .is_some_and(|p| p.is_open(pipe));
        if !open {
            return;
        }
        // One read buffer for every drain (allocated on first use, 64 KiB: a full pipe's
        // worth): a fresh zeroed one per readiness event cost a malloc and a 64 KiB memset on
        // each line a server sent. Taken out of `self` while the lines are handled, because
        // handling them needs `self` whole.
        let mut buf = std::mem::take(&mut self.read_buf);
        if buf.is_empty() {
            buf = vec![0u8; READ_BUF_BYTES].into_boxed_slice();
        }
        self.drain_into(cx, id, pipe, short_read_drains, out, &mut buf);
        self.read_buf = buf;
    }

    fn drain_into(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        pipe: Pipe,
        short_read_drains: bool,
        out: &mut Vec<Output>,
        buf: &mut [u8],
    ) {
        let mut more = true;
        while more {
            let Some(server) = self.servers.get_mut(id) else {
                return;
            };
            let Some(p) = server.process.as_mut() else {
                return;
            };
            let n = match p.read_chunk(pipe, cx.registry, buf) {
                Chunk::Data(n) => {
                    self.read_since_trim = self.read_since_trim.saturating_add(n);
                    more = !short_read_drains || n == buf.len();
                    n
                }
                Chunk::Empty => return,
                Chunk::Eof => {
                    if pipe == Pipe::Stdout {
                        self.on_stdout_eof(cx, id);
                    }
                    return;
                }
            };
            // The lines are taken one at a time and handled at once (no list of them per
            // read); what a line does cannot end the run before the next is taken (a run ends
            // on the child's exit), but a run that did is not fed the rest.
            let run = server.run;
            let mut data = &buf[..n];
            loop {
                let Some(server) = self.servers.get_mut(id).filter(|s| s.run == run) else {
                    return;
                };
                let splitter = if pipe == Pipe::Stdout {
                    &mut server.stdout_lines
                } else {
                    &mut server.stderr_lines
                };
                let Some(line) = splitter.next_line(&mut data) else {
                    break;
                };
                if pipe == Pipe::Stdout {
                    self.on_stdout_line(cx, id, line, out);
                } else {
                    self.on_stderr_line(id, line, out);
                }
            }
        }
    }

    pub(super) fn on_stderr_line(&mut self, id: &str, line: Line, out: &mut Vec<Output>) {
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        let text = match line {
            Line::Complete(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Line::TooLong { len } => format!("[stderr line of {len}+ bytes truncated]"),
        };
        if server.sandbox_denial(&text) {
            let now = Instant::now();
            let (last, held) = server.denials;
            if last.is_some_and(|t| now.duration_since(t) < server::DENIAL_EVENT_INTERVAL) {
                server.denials = (last, held.saturating_add(1));
            } else {
                server.denials = (Some(now), 0);
                out.push(Output::Event(
                    crate::events::Channel::Security,
                    crate::events::EventData::SandboxDenied {
                        server_id: id.to_string(),
                        line: server::truncate(text.clone(), server::TEXT_MAX),
                        suppressed: held,
                    },
                ));
            }
        }
        server.note_stderr(text.clone());
        let rate = f64::from(self.settings.config.stderr_lines_per_second);
        let (tokens, last) = server.stderr_bucket;
        let now = Instant::now();
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate * 5.0);
        if tokens >= 1.0 {
            server.stderr_bucket = (tokens - 1.0, now);
            if server.stderr_suppressed > 0 {
                log::warn!(target: "mcp", "[{id}] {} stderr lines suppressed by the rate limit", server.stderr_suppressed);
                server.stderr_suppressed = 0;
            }
            log::info!(target: "mcp", "[{id}] {text}");
        } else {
            server.stderr_bucket = (tokens, now);
            server.stderr_suppressed += 1;
        }
    }

    pub(super) fn on_stdout_line(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        line: Line,
        out: &mut Vec<Output>,
    ) {
        let Some(context) = self.context(id) else {
            return;
        };
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        let mut effects = std::mem::take(&mut self.effects);
        server.session.on_line_into(line, context, &mut effects);
        self.apply_kept(cx, id, effects, out);
    }

    /// Forwards a tool call; the answer arrives later as an [`Output::Reply`].
    ///
    /// # Errors
    /// Unknown server or tool, server not active, too many calls in flight.
    #[allow(clippy::too_many_arguments)]
    pub fn call(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        tool: &str,
        arguments: jsonrpc::Arguments,
        input: Option<Value>,
        timeout_ms: Option<u64>,
        progress_token: Option<String>,
        reply: ReplyTo,
    ) -> Result<(), ApiError> {
        let max_in_flight = self.settings.config.max_in_flight_calls as usize;
        let default_timeout = self.settings.config.call_timeout_ms;
        let server = self.servers.get_mut(id).ok_or_else(|| not_found(id))?;
        let timeout = Duration::from_millis(
            timeout_ms
                .or(server.spec.call_timeout_ms)
                .unwrap_or(default_timeout),
        );
        let (slot, run) = (server.slot, server.run);
        let timers = &mut *cx.timers;
        let mut effects = std::mem::take(&mut self.effects);
        let called = server.session.call_into(
            &mut effects,
            server.status,
            server.ending.as_deref(),
            tool,
            arguments,
            input,
            progress_token,
            timeout,
            max_in_flight,
            reply,
            Instant::now(),
            |rpc, at| {
                let kind = TimerKind::Call(rpc);
                timers.insert(at, Timer { slot, run, kind })
            },
        );
        if let Err(e) = called {
            self.effects = effects;
            return Err(e);
        }
        // A call only sends: nothing reaches the outputs here.
        let mut none = Vec::new();
        self.apply_kept(cx, id, effects, &mut none);
        debug_assert!(none.is_empty());
        Ok(())
    }

    /// Cancels the call in flight on server `id` that was given `progress_token`: its caller
    /// is answered with an error and the server gets `notifications/cancelled` with the
    /// request id the daemon used (the path a call's deadline takes).
    ///
    /// # Errors
    /// Unknown server; no call in flight with that token (it was answered already).
    pub fn cancel(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        progress_token: &str,
        reason: &str,
        out: &mut Vec<Output>,
    ) -> Result<(), ApiError> {
        let server = self.servers.get_mut(id).ok_or_else(|| not_found(id))?;
        let effects = server
            .session
            .cancel(progress_token, reason, Instant::now())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "no call in flight on '{id}' has that progress token (it was answered)"
                    ),
                )
            })?;
        self.apply(cx, id, effects, out);
        Ok(())
    }

    /// Forwards `method` (`resources/read`, `prompts/get`, ...) with `params` to server `id`, under
    /// the deadline and the in-flight bound of a tool call; the answer arrives later as an
    /// [`Output::Reply`].
    ///
    /// # Errors
    /// Unknown server, server not active or not declaring the capability `needs`, too many
    /// calls in flight.
    pub fn forward(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        method: &'static str,
        needs: &str,
        params: Value,
        reply: ReplyTo,
    ) -> Result<(), ApiError> {
        self.forward_again(cx, id, method, needs, params, (None, None), reply)
    }

    /// [`Mcp::forward`] for a `/mcp` client's `prompts/get` or `resources/read`, which may be
    /// asked again after `input_required`: `timeout_ms` overrides the deadline (what is left
    /// of the first one), and `input` goes to a 2026-07-28 server as a call's does (see
    /// `Session::forward`).
    ///
    /// # Errors
    /// As [`Mcp::forward`].
    #[allow(clippy::too_many_arguments)]
    pub fn forward_again(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        method: &'static str,
        needs: &str,
        params: Value,
        (timeout_ms, input): (Option<u64>, Option<Value>),
        reply: ReplyTo,
    ) -> Result<(), ApiError> {
        let max_in_flight = self.settings.config.max_in_flight_calls as usize;
        let default_timeout = self.settings.config.call_timeout_ms;
        let server = self.servers.get_mut(id).ok_or_else(|| not_found(id))?;
        let timeout = Duration::from_millis(
            timeout_ms
                .or(server.spec.call_timeout_ms)
                .unwrap_or(default_timeout),
        );
        let (slot, run) = (server.slot, server.run);
        let timers = &mut *cx.timers;
        let effects = server.session.forward(
            server.status,
            server.ending.as_deref(),
            method,
            needs,
            (params, input),
            timeout,
            max_in_flight,
            reply,
            Instant::now(),
            |rpc, at| {
                let kind = TimerKind::Call(rpc);
                timers.insert(at, Timer { slot, run, kind })
            },
        )?;
        let mut none = Vec::new();
        self.apply(cx, id, effects, &mut none);
        debug_assert!(none.is_empty());
        Ok(())
    }

    /// A resource subscription on server `id` when its run speaks 2026-07-28, which has no
    /// `resources/subscribe`: its listen carries the URI (see `Session::listen_to`). `None`
    /// for a server of the other era (or unknown), which is forwarded `resources/subscribe`.
    pub fn listen_to(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        uri: &str,
        subscribe: bool,
    ) -> Option<Answer> {
        let server = self.servers.get_mut(id)?;
        if server.session.era != Some(session::Era::Modern) {
            return None;
        }
        let (status, ending) = (server.status, server.ending.as_deref());
        let effects = server
            .session
            .listen_to(status, ending, uri, subscribe, Instant::now());
        Some(effects.map(|effects| {
            let mut none = Vec::new();
            self.apply(cx, id, effects, &mut none);
            json!({"server": id, "method": "subscriptions/listen", "result": {}})
        }))
    }

    /// One health round: every serving server gets a ping; unanswered ones count as missed.
    pub fn ping_all(&mut self, cx: &mut Cx<'_, Timer>, out: &mut Vec<Output>) {
        if !self.settings.config.health_check_enabled {
            return;
        }
        let allowed = self.settings.config.ping_misses;
        let ids: Vec<String> = self
            .servers
            .iter()
            .filter(|(_, s)| s.status.serves())
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            let Some(server) = self.servers.get_mut(&id) else {
                continue;
            };
            let effects = server.session.ping_round(allowed, Instant::now());
            self.apply(cx, &id, effects, out);
        }
    }
}
