//! Lifecycle of a server run: spawn in the sandbox (after checking its working directory),
//! graceful stop, the end of a run (its exit, or its stdout closing while it lives on) and
//! the restart decision, orphan sweeping. Memory a run held is handed back to the system
//! when it ends.

use super::*;

impl Mcp {
    /// Starts a server (also closes an open circuit breaker).
    ///
    /// # Errors
    /// Unknown id, or `max_concurrent_servers` reached.
    pub fn start(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        out: &mut Vec<Output>,
    ) -> Result<Value, ApiError> {
        let running = self.running();
        let limit = self.settings.config.max_concurrent_servers as usize;
        let server = self.servers.get_mut(id).ok_or_else(|| not_found(id))?;
        match server.status {
            Status::Stopping => {
                server.restart_requested = true;
                return Ok(
                    json!({"server": id, "status": "stopping", "note": "starts again once stopped"}),
                );
            }
            s if s.has_process() => return Ok(json!({"server": id, "status": s.as_str()})),
            Status::Backoff => {
                if let Some(t) = server.timer.take() {
                    cx.timers.cancel(t);
                }
            }
            _ => {
                if running >= limit {
                    return Err(ApiError::new(
                        ErrorCode::Conflict,
                        format!("mcp_servers.max_concurrent_servers ({limit}) reached: stop a server first"),
                    ));
                }
            }
        }
        server.breaker.reset();
        server.attempt = 0;
        self.spawn_run(cx, id, out);
        let s = &self.servers[id];
        Ok(json!({"server": id, "status": s.status.as_str(), "pid": s.pid()}))
    }

    /// Stops a server gracefully.
    ///
    /// # Errors
    /// Unknown id.
    pub fn stop(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        out: &mut Vec<Output>,
    ) -> Result<Value, ApiError> {
        let server = self.servers.get_mut(id).ok_or_else(|| not_found(id))?;
        server.restart_requested = false;
        match server.status {
            Status::Stopping | Status::Stopped => {}
            s if s.has_process() => self.begin_stop(cx, id, "stop requested", out),
            _ => {
                if let Some(t) = server.timer.take() {
                    cx.timers.cancel(t);
                }
                self.transition(id, Status::Stopped, "stop requested", out);
            }
        }
        Ok(json!({"server": id, "status": self.servers[id].status.as_str()}))
    }

    /// Restarts a server (stop, then start once it has exited).
    ///
    /// # Errors
    /// Unknown id.
    pub fn restart(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        out: &mut Vec<Output>,
    ) -> Result<Value, ApiError> {
        let server = self.servers.get_mut(id).ok_or_else(|| not_found(id))?;
        if server.status.has_process() {
            server.restart_requested = true;
            if server.status != Status::Stopping {
                self.begin_stop(cx, id, "restart requested", out);
            }
            Ok(json!({"server": id, "status": "stopping", "note": "starts again once stopped"}))
        } else {
            self.start(cx, id, out)
        }
    }

    /// Closes an open circuit breaker and starts the server again.
    ///
    /// # Errors
    /// Unknown id.
    pub fn reset(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        out: &mut Vec<Output>,
    ) -> Result<Value, ApiError> {
        let server = self.servers.get_mut(id).ok_or_else(|| not_found(id))?;
        let was_open = server.breaker.is_open();
        server.breaker.reset();
        server.attempt = 0;
        if server.status == Status::Failed {
            self.transition(id, Status::Stopped, "circuit breaker reset", out);
            self.start(cx, id, out)?;
        }
        let s = &self.servers[id];
        Ok(json!({"server": id, "circuit_was_open": was_open, "status": s.status.as_str()}))
    }

    pub(super) fn begin_stop(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        reason: &str,
        out: &mut Vec<Output>,
    ) {
        let grace = Duration::from_millis(self.settings.config.stop_grace_ms);
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        if let Some(t) = server.timer.take() {
            cx.timers.cancel(t);
        }
        if let Some(p) = server.process.as_mut() {
            // MCP servers over stdio exit when stdin closes.
            p.close_stdin(cx.registry);
        }
        let slot = server.slot;
        let run = server.run;
        server.timer = Some(cx.timers.insert(
            Instant::now() + grace,
            Timer {
                slot,
                run,
                kind: TimerKind::StopTerm,
            },
        ));
        self.transition(id, Status::Stopping, reason, out);
    }

    /// Stops every server (daemon shutdown): gracefully, or at once with SIGKILL.
    pub fn stop_all(&mut self, cx: &mut Cx<'_, Timer>, graceful: bool, out: &mut Vec<Output>) {
        let ids: Vec<String> = self.servers.keys().cloned().collect();
        for id in ids {
            let Some(s) = self.servers.get_mut(&id) else {
                continue;
            };
            s.restart_requested = false;
            match (&s.process, graceful) {
                (Some(_), true) if s.status != Status::Stopping => {
                    self.begin_stop(cx, &id, "daemon stopping", out)
                }
                (Some(p), false) => {
                    p.signal_group(libc::SIGKILL);
                    s.set_status(Status::Stopping, "daemon stopping now");
                }
                (None, _) => {
                    if let Some(t) = s.timer.take() {
                        cx.timers.cancel(t);
                    }
                    if s.status == Status::Backoff {
                        self.transition(&id, Status::Stopped, "daemon stopping", out);
                    }
                }
                _ => {}
            }
        }
    }

    /// SIGKILLs every remaining process group (shutdown deadline).
    pub fn kill_all(&mut self) {
        for s in self.servers.values() {
            if let Some(p) = &s.process {
                p.signal_group(libc::SIGKILL);
            }
        }
    }

    pub(super) fn launch(
        &self,
        spec: &ServerSpec,
    ) -> Result<(Launch, Option<std::os::fd::OwnedFd>, String), String> {
        let c = &self.settings.config;
        if let Some(cwd) = &spec.cwd {
            process::check_cwd(std::path::Path::new(cwd))?;
        }
        let mut env: Vec<(String, String)> = ENV_ALLOW
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .filter(|(k, _)| !spec.env.contains_key(k))
            .collect();
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let root = sys::euid() == 0;
        if !root && (spec.limits.uid.is_some() || spec.limits.gid.is_some()) {
            return Err("limits.uid/gid need the daemon to run as root".into());
        }
        let sandbox = sys::ChildSandbox {
            parent: std::process::id() as i32,
            max_open_files: Some(spec.limits.max_open_files.unwrap_or(c.max_open_files)),
            max_cpu_seconds: Some(spec.limits.max_cpu_seconds.unwrap_or(c.max_cpu_seconds)),
            max_data_bytes: Some(
                spec.limits.max_memory_mb.unwrap_or(c.max_memory_mb) * 1024 * 1024,
            ),
            uid: spec.limits.uid,
            gid: spec.limits.gid,
            landlock_fd: None,
        };
        let mut launch = Launch {
            command: spec.command.clone(),
            args: spec.args.clone(),
            env,
            cwd: spec.cwd.as_ref().map(PathBuf::from),
            sandbox,
        };
        let (ruleset, landlock) = if c.landlock && self.settings.sandbox_enabled {
            let home = std::env::var_os("HOME").map(PathBuf::from);
            let mut writable = vec![
                self.settings.state_dir.clone(),
                PathBuf::from("/tmp"),
                PathBuf::from("/dev"),
            ];
            writable.extend(launch.cwd.clone());
            writable.extend(home);
            let paths: Vec<&std::path::Path> = writable.iter().map(PathBuf::as_path).collect();
            match sys::landlock_write_ruleset(&paths) {
                Ok((fd, abi)) => {
                    launch.sandbox.landlock_fd = Some(std::os::fd::AsRawFd::as_raw_fd(&fd));
                    let dirs: Vec<String> =
                        writable.iter().map(|p| p.display().to_string()).collect();
                    (
                        Some(fd),
                        format!(
                            "enforced (ABI {abi}): writes only beneath {}",
                            dirs.join(", ")
                        ),
                    )
                }
                Err(e) => (None, format!("not enforced: {e}")),
            }
        } else {
            (None, "disabled by configuration".to_string())
        };
        Ok((launch, ruleset, landlock))
    }

    pub(super) fn spawn_run(&mut self, cx: &mut Cx<'_, Timer>, id: &str, out: &mut Vec<Output>) {
        let Some(spec) = self.servers.get(id).map(|s| s.spec.clone()) else {
            return;
        };
        let max_line = self.settings.config.max_line_bytes;
        let init_timeout = Duration::from_millis(self.settings.config.init_timeout_ms);
        let launched = self.launch(&spec).and_then(|(launch, ruleset, landlock)| {
            let slot = self.servers[id].slot;
            let result = Process::spawn(&launch, cx.registry, tokens(self.tokens, slot))
                .map_err(|e| process::describe_spawn_error(&launch, &e));
            drop(ruleset);
            result.map(|p| (p, landlock))
        });
        let Some(server) = self.servers.get_mut(id) else {
            // Cannot happen (checked above, nothing removes it in between); never leak a child.
            if let Ok((p, _)) = launched {
                p.signal_group(libc::SIGKILL);
            }
            return;
        };
        server.run += 1;
        match launched {
            Ok((process, landlock)) => {
                self.pids.insert(process.pid, id.to_string());
                if let Some(r) = self.reaper.as_mut() {
                    r.track(process.pid, true);
                }
                server.last_pid = Some(process.pid);
                server.landlock = landlock;
                server.process = Some(process);
                server.pending.clear();
                server.initialized = false;
                server.misbehaved = false;
                server.relist = tools::Relist::default();
                server.list_changed = tools::Flood::default();
                server.recent_protocol_errors = tools::Flood::default();
                server.missed_pings = 0;
                server.protocol_version = None;
                server.stdout_lines = LineSplitter::new(max_line);
                server.stderr_lines = LineSplitter::new(STDERR_LINE_MAX);
                server.stderr_bucket = (
                    f64::from(self.settings.config.stderr_lines_per_second) * 5.0,
                    Instant::now(),
                );
                let rpc = server.take_id();
                server.pending.insert(rpc, Pending::Initialize);
                let init = jsonrpc::request(
                    rpc,
                    "initialize",
                    json!({
                        "protocolVersion": PROTOCOL_VERSIONS[0],
                        "capabilities": {},
                        "clientInfo": {"name": "vsm-daemon", "version": env!("CARGO_PKG_VERSION")},
                    }),
                );
                let (slot, run) = (server.slot, server.run);
                server.timer = Some(cx.timers.insert(
                    Instant::now() + init_timeout,
                    Timer {
                        slot,
                        run,
                        kind: TimerKind::InitDeadline,
                    },
                ));
                let pid = server.pid();
                self.transition(
                    id,
                    Status::Starting,
                    &format!("spawned pid {}", pid.unwrap_or(0)),
                    out,
                );
                self.send(id, &init);
            }
            Err(e) => {
                log::warn!("MCP server {id}: {e}");
                server.note_error(e.clone());
                let end = RunEnd {
                    uptime: Duration::ZERO,
                    initialized: false,
                    requested: false,
                    misbehaved: false,
                };
                self.after_run_ended(cx, id, end, e, out);
            }
        }
    }

    /// Kills the current run because the server broke the daemon's bounds: the end counts
    /// as a failed start (see [`supervisor`]).
    pub(super) fn kill_misbehaving(&mut self, id: &str, reason: String) {
        if let Some(server) = self.servers.get_mut(id) {
            server.misbehaved = true;
        }
        self.kill_run(id, reason);
    }

    /// The server closed its stdout: the session is over, whatever the process does.
    /// Pending calls fail now; the process is stopped without the stdin grace (SIGTERM to
    /// its group, SIGKILL after `term_timeout_ms`), and its exit goes through the restart
    /// policy like a crash.
    pub(super) fn on_stdout_eof(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        out: &mut Vec<Output>,
    ) {
        let term_timeout = Duration::from_millis(self.settings.config.term_timeout_ms);
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        let Some(p) = server.process.as_ref() else {
            return;
        };
        // An exit closes stdout too: then SIGCHLD tells the story, not this.
        if p.exit_status.is_some()
            || server.status == Status::Stopping
            || server.ending.is_some()
            || sys::child_has_exited(p.pid)
        {
            return;
        }
        p.signal_group(libc::SIGTERM);
        let reason = "closed its stdout".to_string();
        log::warn!("MCP server {id} {reason} but is still running; stopping it");
        server.note_error(reason.clone());
        server.ending = Some(reason.clone());
        if let Some(t) = server.timer.take() {
            cx.timers.cancel(t);
        }
        let (slot, run) = (server.slot, server.run);
        server.timer = Some(cx.timers.insert(
            Instant::now() + term_timeout,
            Timer {
                slot,
                run,
                kind: TimerKind::StopKill,
            },
        ));
        self.fail_pending(cx, id, &reason, out);
    }

    /// Ends every request in flight: calls get a `server_exited` error naming `reason`.
    pub(super) fn fail_pending(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        reason: &str,
        out: &mut Vec<Output>,
    ) {
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        for (_, p) in server.pending.drain() {
            if let Pending::Call {
                reply,
                timer,
                tool,
                started,
            } = p
            {
                cx.timers.cancel(timer);
                server.calls.1 += 1;
                out.push(Output::ToolCall(
                    id.to_string(),
                    "server_exited",
                    started.elapsed().as_secs_f64(),
                ));
                out.push(Output::Reply(
                    reply,
                    Err(ApiError::new(
                        ErrorCode::ServerExited,
                        format!("MCP server {id} {reason} during the call to {tool}"),
                    )),
                ));
            }
        }
    }

    /// Kills the current run for a reason; the exit path decides what happens next.
    pub(super) fn kill_run(&mut self, id: &str, reason: String) {
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        let reason = truncate(reason, server::TEXT_MAX);
        log::warn!("MCP server {id}: {reason}; killing it");
        server.note_error(reason.clone());
        server.ending.get_or_insert(reason);
        if let Some(p) = &server.process {
            p.signal_group(libc::SIGKILL);
        }
    }

    /// A timer of ours fired.
    pub fn on_timer(&mut self, cx: &mut Cx<'_, Timer>, t: Timer, out: &mut Vec<Output>) {
        let Some(id) = self.slots.get(t.slot).cloned().flatten() else {
            return;
        };
        let Some(server) = self.servers.get_mut(&id) else {
            return;
        };
        if server.run != t.run {
            return;
        }
        let term_timeout = Duration::from_millis(self.settings.config.term_timeout_ms);
        match t.kind {
            TimerKind::Backoff => {
                server.timer = None;
                if server.status == Status::Backoff {
                    server.restarts += 1;
                    out.push(Output::Restart(id.clone()));
                    self.spawn_run(cx, &id, out);
                }
            }
            TimerKind::InitDeadline => {
                server.timer = None;
                if matches!(server.status, Status::Starting | Status::Initializing) {
                    let phase = if server.status == Status::Starting {
                        "answer initialize"
                    } else {
                        "list its tools"
                    };
                    let ms = self.settings.config.init_timeout_ms;
                    self.kill_run(&id, format!("did not {phase} within {ms} ms"));
                }
            }
            TimerKind::StopTerm => {
                server.timer = None;
                if let (Status::Stopping, Some(p)) = (server.status, &server.process) {
                    p.signal_group(libc::SIGTERM);
                    let (slot, run) = (server.slot, server.run);
                    server.timer = Some(cx.timers.insert(
                        Instant::now() + term_timeout,
                        Timer {
                            slot,
                            run,
                            kind: TimerKind::StopKill,
                        },
                    ));
                }
            }
            TimerKind::StopKill => {
                server.timer = None;
                let ending = server.status == Status::Stopping || server.ending.is_some();
                if let (true, Some(p)) = (ending, &server.process) {
                    log::warn!("MCP server {id} ignored SIGTERM; sending SIGKILL");
                    p.signal_group(libc::SIGKILL);
                }
            }
            TimerKind::Relist => {
                let next = server.relist.timer_fired();
                self.relist_next(cx, &id, next);
            }
            TimerKind::Call(rpc) => {
                if let Some(Pending::Call {
                    reply,
                    tool,
                    started,
                    ..
                }) = server.pending.remove(&rpc)
                {
                    server.calls.2 += 1;
                    out.push(Output::ToolCall(
                        id.clone(),
                        "timeout",
                        started.elapsed().as_secs_f64(),
                    ));
                    let ms = started.elapsed().as_millis();
                    out.push(Output::Reply(
                        reply,
                        Err(ApiError::new(
                            ErrorCode::Timeout,
                            format!("tool {tool} on {id} did not answer within {ms} ms"),
                        )),
                    ));
                    let cancel = jsonrpc::notification(
                        "notifications/cancelled",
                        json!({"requestId": rpc, "reason": "timed out"}),
                    );
                    self.send(&id, &cancel);
                }
            }
        }
    }

    /// A child was reaped. Returns false when the pid was not one of our servers.
    pub fn on_child_exit(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        pid: i32,
        status: i32,
        out: &mut Vec<Output>,
    ) -> bool {
        let Some(id) = self.pids.remove(&pid) else {
            return false;
        };
        // Reaped: from now on its stdout EOF is the exit's, and its pid is not signalled.
        if let Some(p) = self.servers.get_mut(&id).and_then(|s| s.process.as_mut()) {
            p.exit_status = Some(status);
        }
        // Read what it wrote before dying (its last answers), then close the pipes.
        self.drain(cx, &id, Pipe::Stdout, out);
        self.drain(cx, &id, Pipe::Stderr, out);
        let Some(server) = self.servers.get_mut(&id) else {
            return true;
        };
        let Some(mut process) = server.process.take() else {
            return true;
        };
        // Grandchildren left in its group die with it.
        process.signal_group(libc::SIGKILL);
        if let Some(r) = self.reaper.as_mut() {
            r.track(process.pid, false);
        }
        process.close_all(cx.registry);
        if let Some(t) = server.timer.take() {
            cx.timers.cancel(t);
        }
        let uptime = process.started.elapsed();
        drop(process);
        let exit = describe_exit(status);
        let reason = match server.ending.take() {
            Some(r) => format!("{r} ({exit})"),
            None => exit,
        };
        let misbehaved = std::mem::take(&mut server.misbehaved);
        server.release_run_memory();
        self.fail_pending(cx, &id, &reason, out);
        let Some(server) = self.servers.get_mut(&id) else {
            return true;
        };
        let initialized = server.initialized;
        if server.status == Status::Stopping {
            if server.remove_when_stopped {
                self.transition(&id, Status::Stopped, &reason, out);
                self.remove(cx, &id, out);
            } else if std::mem::take(&mut server.restart_requested) {
                self.transition(&id, Status::Stopped, &reason, out);
                if let Some(s) = self.servers.get_mut(&id) {
                    s.restarts += 1;
                }
                self.spawn_run(cx, &id, out);
            } else {
                self.transition(&id, Status::Stopped, &reason, out);
            }
        } else {
            log::warn!(
                "MCP server {id} {reason} after {:.1} s",
                uptime.as_secs_f64()
            );
            server.note_error(reason.clone());
            let end = RunEnd {
                uptime,
                initialized,
                requested: false,
                misbehaved,
            };
            self.after_run_ended(cx, &id, end, reason, out);
        }
        self.sweep_orphans();
        // What the run held (pages of tools, large results) is freed: return it.
        if self.read_since_trim >= TRIM_AFTER_BYTES {
            self.read_since_trim = 0;
            sys::release_free_memory();
        }
        true
    }

    pub(super) fn after_run_ended(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        end: RunEnd,
        reason: String,
        out: &mut Vec<Output>,
    ) {
        let policy = match self.servers.get(id) {
            Some(s) => self.policy(&s.spec),
            None => return,
        };
        let unit = self.jitter.unit();
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        let (decision, attempt) = after_run(
            end,
            server.attempt,
            &mut server.breaker,
            &policy,
            Instant::now(),
            unit,
        );
        server.attempt = attempt;
        match decision {
            Decision::RestartAfter(delay) => {
                let (slot, run) = (server.slot, server.run);
                server.timer = Some(cx.timers.insert(
                    Instant::now() + delay,
                    Timer {
                        slot,
                        run,
                        kind: TimerKind::Backoff,
                    },
                ));
                let text = format!("{reason}; restart in {} ms", delay.as_millis());
                self.transition(id, Status::Backoff, &text, out);
            }
            Decision::Fail => {
                let text = format!(
                    "{reason}; circuit breaker open after {} failed starts within {} s",
                    policy.max_failures,
                    policy.window.as_secs()
                );
                self.transition(id, Status::Failed, &text, out);
            }
            Decision::StayStopped => self.transition(id, Status::Stopped, &reason, out),
        }
    }

    /// Kills processes re-parented to us (we are a subreaper) that no server owns: the
    /// double-forked leftovers of servers that are gone.
    pub(super) fn sweep_orphans(&self) {
        let reaper = self.reaper.as_ref().map(reaper::Reaper::pid);
        for pid in sys::own_children() {
            if !self.pids.contains_key(&pid) && Some(pid) != reaper && sys::process_running(pid) {
                log::warn!("killing orphaned process {pid} left behind by an MCP server");
                let _ = sys::kill(pid, libc::SIGKILL);
            }
        }
    }
}
