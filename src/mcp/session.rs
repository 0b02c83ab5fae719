//! The JSON-RPC session with a running server: pipes, handshake, tool listing, tool calls,
//! health pings, and the server's own requests and notifications.

use super::*;

/// Tool names an `mcp_server_tools_changed` event carries at most (`count` has them all).
const EVENT_TOOL_NAMES: usize = 100;

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

    /// Readiness on a pipe token.
    pub fn on_ready(&mut self, cx: &mut Cx<'_, Timer>, token: mio::Token, out: &mut Vec<Output>) {
        let Some(n) = self.tokens.index(token) else {
            return;
        };
        let (slot, pipe) = (n / 3, [Pipe::Stdin, Pipe::Stdout, Pipe::Stderr][n % 3]);
        let Some(id) = self.slots.get(slot).cloned().flatten() else {
            return;
        };
        match pipe {
            Pipe::Stdin => {
                if let Some(p) = self.servers.get_mut(&id).and_then(|s| s.process.as_mut()) {
                    if p.flush().is_err() {
                        p.close_stdin(cx.registry);
                    }
                }
            }
            Pipe::Stdout | Pipe::Stderr => self.drain(cx, &id, pipe, out),
        }
    }

    pub(super) fn drain(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        pipe: Pipe,
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
        let mut buf = vec![0u8; 64 * 1024];
        let mut lines = Vec::new();
        loop {
            let Some(server) = self.servers.get_mut(id) else {
                return;
            };
            let Some(p) = server.process.as_mut() else {
                return;
            };
            let n = match p.read_chunk(pipe, cx.registry, &mut buf) {
                Chunk::Data(n) => {
                    self.read_since_trim = self.read_since_trim.saturating_add(n);
                    n
                }
                Chunk::Empty => return,
                Chunk::Eof => {
                    if pipe == Pipe::Stdout {
                        self.on_stdout_eof(cx, id, out);
                    }
                    return;
                }
            };
            let splitter = if pipe == Pipe::Stdout {
                &mut server.stdout_lines
            } else {
                &mut server.stderr_lines
            };
            splitter.push(&buf[..n], &mut lines);
            for line in lines.drain(..) {
                if pipe == Pipe::Stdout {
                    self.on_stdout_line(cx, id, line, out);
                } else {
                    self.on_stderr_line(id, line);
                }
            }
        }
    }

    pub(super) fn on_stderr_line(&mut self, id: &str, line: Line) {
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        let text = match line {
            Line::Complete(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Line::TooLong { len } => format!("[stderr line of {len}+ bytes truncated]"),
        };
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
        let max = self.settings.config.max_line_bytes;
        let bytes = match line {
            Line::TooLong { len } => {
                self.kill_misbehaving(
                    id,
                    format!("stdout line of more than {max} bytes (saw {len})"),
                );
                return;
            }
            Line::Complete(b) if b.iter().all(u8::is_ascii_whitespace) => return,
            Line::Complete(b) => b,
        };
        match jsonrpc::parse(&bytes) {
            Ok(messages) => {
                // The raw line is not needed once parsed: a tool result of megabytes is held
                // once (as the parsed value), not twice while it is answered.
                drop(bytes);
                for m in messages {
                    self.on_message(cx, id, m, out);
                }
            }
            Err(e) => {
                let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
                let what = format!("protocol error: {e}: {shown}");
                drop(bytes);
                self.protocol_error(id, what);
            }
        }
    }

    /// Counts a protocol error; more than [`PERSISTENT_PROTOCOL_ERRORS`] within a minute end
    /// the run as misbehaviour.
    pub(super) fn protocol_error(&mut self, id: &str, what: String) {
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        server.protocol_errors += 1;
        let persistent = server
            .recent_protocol_errors
            .hit(Instant::now(), PERSISTENT_PROTOCOL_ERRORS);
        if server.protocol_errors <= 10 {
            log::warn!("MCP server {id}: {what}");
        } else {
            log::debug!("MCP server {id}: {what}");
        }
        server.note_error(what);
        if persistent && server.ending.is_none() {
            self.kill_misbehaving(
                id,
                format!("more than {PERSISTENT_PROTOCOL_ERRORS} protocol errors within a minute"),
            );
        }
    }

    pub(super) fn on_message(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        message: Message,
        out: &mut Vec<Output>,
    ) {
        match message {
            Message::Response { id: rpc, result } => {
                let Some(server) = self.servers.get_mut(id) else {
                    return;
                };
                let pending = rpc.as_u64().and_then(|n| server.pending.remove(&n));
                match pending {
                    Some(p) => self.on_response(cx, id, p, result, out),
                    None => {
                        let rpc = truncate(rpc.to_string(), 64);
                        log::debug!("MCP server {id}: dropped a late or unknown response {rpc}")
                    }
                }
            }
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
                self.send(id, &answer);
            }
            Message::Notification { method, params } => match method.as_str() {
                "notifications/tools/list_changed" => self.on_list_changed(cx, id),
                "notifications/progress" => {
                    if let Some(event) = self.progress_event(id, &params) {
                        out.push(Output::Event("mcp_servers", "mcp_tool_progress", event));
                    }
                }
                "notifications/message" => {
                    let level = params["level"].as_str().unwrap_or("info");
                    let data = super::server::truncate(params["data"].to_string(), STDERR_LINE_MAX);
                    log::info!(target: "mcp", "[{id}] {}: {data}", level.chars().take(16).collect::<String>());
                }
                _ => {
                    let method = truncate(method, 128);
                    log::debug!("MCP server {id}: notification {method}")
                }
            },
        }
    }

    pub(super) fn on_response(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        pending: Pending,
        result: Result<Value, jsonrpc::RpcError>,
        out: &mut Vec<Output>,
    ) {
        match pending {
            Pending::Initialize => match result {
                Ok(v) => {
                    let version = v["protocolVersion"].as_str().unwrap_or("").to_string();
                    if !PROTOCOL_VERSIONS.contains(&version.as_str()) {
                        self.kill_run(
                            id,
                            format!("server chose protocol version '{version}', which vsm-daemon does not speak ({})", PROTOCOL_VERSIONS.join(", ")),
                        );
                        return;
                    }
                    let Some(server) = self.servers.get_mut(id) else {
                        return;
                    };
                    server.protocol_version = Some(version.clone());
                    let mut v = v;
                    server.server_info = bounded_value(v["serverInfo"].take());
                    server.server_capabilities = bounded_value(v["capabilities"].take());
                    server.instructions = v["instructions"]
                        .as_str()
                        .map(|t| truncate(t.to_string(), HANDSHAKE_ITEM_MAX));
                    let initialized =
                        jsonrpc::notification("notifications/initialized", Value::Null);
                    self.send(id, &initialized);
                    self.transition(
                        id,
                        Status::Initializing,
                        &format!("protocol {version}"),
                        out,
                    );
                    self.start_listing(id);
                }
                Err(e) => {
                    self.kill_run(id, format!("initialize failed: {} ({})", e.message, e.code))
                }
            },
            Pending::ToolsList(mut listing) => {
                match result {
                    Ok(mut v) => {
                        let page = tools::take_page(&mut v);
                        let limits = tools::Limits {
                            max_bytes: self.settings.config.max_tool_list_bytes,
                            max_tools: self.settings.config.max_tools,
                        };
                        if let Err(why) = listing.add_page(page, limits) {
                            drop(listing);
                            self.kill_misbehaving(id, why);
                            return;
                        }
                        if let Some(cursor) = v["nextCursor"].as_str().filter(|c| !c.is_empty()) {
                            let cursor = cursor.to_string();
                            self.list_tools(id, Some(cursor), listing);
                            return;
                        }
                    }
                    // A server without tools may refuse tools/list: it simply has none.
                    Err(e) => {
                        let why = truncate(e.message, server::TEXT_MAX);
                        log::debug!("MCP server {id}: tools/list failed: {why}")
                    }
                }
                self.finish_listing(cx, id, listing.into_tools(), out);
            }
            Pending::Ping(_) => {
                let Some(server) = self.servers.get_mut(id) else {
                    return;
                };
                server.missed_pings = 0;
                if server.status == Status::Degraded {
                    self.transition(id, Status::Active, "answered a health ping", out);
                }
            }
            Pending::Call {
                reply,
                timer,
                started,
                tool,
            } => {
                cx.timers.cancel(timer);
                let Some(server) = self.servers.get_mut(id) else {
                    return;
                };
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                let seconds = started.elapsed().as_secs_f64();
                let outcome = match &result {
                    Ok(v) if v["isError"] == true => "tool_error",
                    Ok(_) => "ok",
                    Err(_) => "mcp_error",
                };
                out.push(Output::ToolCall(id.to_string(), outcome, seconds));
                let answer = match result {
                    Ok(v) if v["isError"] == true => {
                        server.calls.1 += 1;
                        Err(ApiError::new(
                            ErrorCode::ToolError,
                            format!("tool {tool} on {id} reported an error: {}", first_text(&v)),
                        )
                        .with_data(call_result(id, tool, v, ms)))
                    }
                    Ok(v) => {
                        server.calls.0 += 1;
                        Ok(call_result(id, tool, v, ms))
                    }
                    Err(e) => {
                        server.calls.1 += 1;
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
                out.push(Output::Reply(reply, answer));
            }
        }
    }

    /// Starts a listing from the first page.
    pub(super) fn start_listing(&mut self, id: &str) {
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        server.relist.started(Instant::now());
        self.list_tools(id, None, tools::Listing::default());
    }

    pub(super) fn list_tools(&mut self, id: &str, cursor: Option<String>, listing: tools::Listing) {
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        let rpc = server.take_id();
        server.pending.insert(rpc, Pending::ToolsList(listing));
        let params = match cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let bytes = jsonrpc::request(rpc, "tools/list", params);
        self.send(id, &bytes);
    }

    /// `notifications/tools/list_changed`: list again, coalesced and rate-limited; a flood
    /// counts as protocol errors.
    pub(super) fn on_list_changed(&mut self, cx: &mut Cx<'_, Timer>, id: &str) {
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        let now = Instant::now();
        if server.list_changed.hit(now, tools::LIST_CHANGED_PER_MINUTE) {
            let what = format!(
                "protocol error: more than {} notifications/tools/list_changed within a minute",
                tools::LIST_CHANGED_PER_MINUTE
            );
            self.protocol_error(id, what);
            return;
        }
        if !matches!(
            server.status,
            Status::Initializing | Status::Active | Status::Degraded
        ) {
            return;
        }
        let next = server.relist.changed(now);
        self.relist_next(cx, id, next);
    }

    /// Carries out what [`tools::Relist`] decided.
    pub(super) fn relist_next(&mut self, cx: &mut Cx<'_, Timer>, id: &str, next: tools::Next) {
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        match next {
            tools::Next::Nothing => {}
            tools::Next::ListNow => {
                if server.status.serves() {
                    self.start_listing(id);
                }
            }
            tools::Next::WaitUntil(at) => {
                let (slot, run) = (server.slot, server.run);
                cx.timers.insert(
                    at,
                    Timer {
                        slot,
                        run,
                        kind: TimerKind::Relist,
                    },
                );
            }
        }
    }

    pub(super) fn finish_listing(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        tools: Vec<Value>,
        out: &mut Vec<Output>,
    ) {
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        let count = tools.len();
        let changed = server.tools != tools;
        server.tools = tools;
        if server.status == Status::Initializing {
            server.initialized = true;
            if let Some(t) = server.timer.take() {
                cx.timers.cancel(t);
            }
            self.transition(
                id,
                Status::Active,
                &format!("ready with {count} tools"),
                out,
            );
        } else if changed {
            log::info!("MCP server {id}: tool list changed ({count} tools)");
            // Events are kept in the history: name a bounded number of tools, briefly.
            let names: Vec<String> = self.servers[id]
                .tool_names()
                .iter()
                .take(EVENT_TOOL_NAMES)
                .map(|n| truncate(n.to_string(), 128))
                .collect();
            out.push(Output::Event(
                "mcp_servers",
                "mcp_server_tools_changed",
                json!({"server_id": id, "tools": names, "count": count}),
            ));
        }
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        let next = server.relist.finished(Instant::now());
        self.relist_next(cx, id, next);
    }

    /// A `notifications/progress` as an event, when it is about one of our calls in flight
    /// (its token is ours); its free-text parts are bounded.
    fn progress_event(&self, id: &str, params: &Value) -> Option<Value> {
        let server = self.servers.get(id)?;
        let token = params["progressToken"].as_str()?;
        let rpc: u64 = token.strip_prefix(id)?.strip_prefix(':')?.parse().ok()?;
        if !matches!(server.pending.get(&rpc), Some(Pending::Call { .. })) {
            return None;
        }
        let number = |v: &Value| {
            if v.is_number() {
                v.clone()
            } else {
                Value::Null
            }
        };
        let message = params["message"]
            .as_str()
            .map(|m| truncate(m.to_string(), STDERR_LINE_MAX));
        Some(json!({
            "server_id": id,
            "progress_token": token,
            "progress": number(&params["progress"]),
            "total": number(&params["total"]),
            "message": message,
        }))
    }

    /// Forwards a tool call; the answer arrives later as an [`Output::Reply`].
    ///
    /// # Errors
    /// Unknown server or tool, server not active, too many calls in flight.
    pub fn call(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        tool: &str,
        arguments: Value,
        timeout_ms: Option<u64>,
        reply: ReplyTo,
    ) -> Result<(), ApiError> {
        let max_in_flight = self.settings.config.max_in_flight_calls as usize;
        let default_timeout = self.settings.config.call_timeout_ms;
        let server = self.servers.get_mut(id).ok_or_else(|| not_found(id))?;
        if let Some(why) = &server.ending {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("MCP server '{id}' is ending its run: {why}"),
            ));
        }
        if !server.status.serves() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "MCP server '{id}' is not active (status {})",
                    server.status.as_str()
                ),
            ));
        }
        if !server.tools.is_empty() && !server.tool_names().contains(&tool) {
            return Err(ApiError::field(
                ErrorCode::ToolNotFound,
                "name",
                format!(
                    "MCP server '{id}' has no tool '{tool}' (tools: {})",
                    server.tool_names().join(", ")
                ),
            ));
        }
        if server.calls_in_flight() >= max_in_flight {
            return Err(ApiError::new(
                ErrorCode::Busy,
                format!("{max_in_flight} calls already in flight on '{id}'"),
            ));
        }
        let timeout = Duration::from_millis(
            timeout_ms
                .or(server.spec.call_timeout_ms)
                .unwrap_or(default_timeout),
        );
        let rpc = server.take_id();
        let (slot, run) = (server.slot, server.run);
        let timer = cx.timers.insert(
            Instant::now() + timeout,
            Timer {
                slot,
                run,
                kind: TimerKind::Call(rpc),
            },
        );
        server.pending.insert(
            rpc,
            Pending::Call {
                reply,
                timer,
                started: Instant::now(),
                tool: tool.to_string(),
            },
        );
        let bytes = jsonrpc::request(
            rpc,
            "tools/call",
            json!({"name": tool, "arguments": arguments, "_meta": {"progressToken": format!("{id}:{rpc}")}}),
        );
        self.send(id, &bytes);
        Ok(())
    }

    /// One health round: every serving server gets a ping; unanswered ones count as missed.
    pub fn ping_all(&mut self, out: &mut Vec<Output>) {
        if !self.settings.config.health_check_enabled {
            return;
        }
        let misses_allowed = self.settings.config.ping_misses;
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
            let outstanding: Vec<u64> = server
                .pending
                .iter()
                .filter(|(_, p)| matches!(p, Pending::Ping(_)))
                .map(|(k, _)| *k)
                .collect();
            if !outstanding.is_empty() {
                for k in outstanding {
                    server.pending.remove(&k);
                }
                server.missed_pings += 1;
                let missed = server.missed_pings;
                if missed >= misses_allowed {
                    self.kill_run(&id, format!("missed {missed} health pings"));
                    continue;
                }
                self.transition(
                    &id,
                    Status::Degraded,
                    &format!("missed {missed} health ping(s)"),
                    out,
                );
            }
            let Some(server) = self.servers.get_mut(&id) else {
                continue;
            };
            let rpc = server.take_id();
            server.pending.insert(rpc, Pending::Ping(Instant::now()));
            let bytes = jsonrpc::request(rpc, "ping", json!({}));
            self.send(&id, &bytes);
        }
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
