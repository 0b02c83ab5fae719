//! Lifecycle of a server run: spawn in the sandbox (after checking its working directory),
//! graceful stop, the end of a run (its exit, or its stdout closing while it lives on),
//! orphan sweeping. Memory a run held is handed back to the system when it ends.
//!
//! Every decision about a server's lifecycle (operator requests, the end of a run, the
//! backoff timer, what the session reports) is [`supervisor::step`]'s; this file feeds it
//! events and carries out its actions ([`Mcp::supervise`]).

use super::*;
use supervisor::{step, Action, Event};

impl Mcp {
    /// Feeds `event` to the supervisor and carries out what it decides. `reason` explains
    /// the event (history, log, status events); the end of a run adds the restart delay or
    /// the opened circuit to it. Returns whether a start was refused at the concurrency limit.
    pub(super) fn supervise(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        event: Event,
        reason: &str,
        out: &mut Vec<Output>,
    ) -> bool {
        let policy = match self.servers.get(id) {
            Some(s) => self.policy(&s.spec),
            None => return false,
        };
        let unit = self.jitter.unit();
        let Some(server) = self.servers.get_mut(id) else {
            return false;
        };
        let actions = step(
            server.status,
            &mut server.life,
            event,
            &policy,
            Instant::now(),
            unit,
        );
        let mut refused = false;
        let mut backoff: Option<Duration> = None;
        for action in actions {
            let Some(server) = self.servers.get_mut(id) else {
                return refused;
            };
            match action {
                Action::Become(status) => {
                    let text = match (status, event) {
                        (Status::Backoff, _) => match (backoff, event) {
                            (Some(d), _) => format!("{reason}; restart in {} ms", d.as_millis()),
                            // A good run ended: callers are waiting, so no backoff (DESIGN.md §6).
                            (None, Event::Ended(_)) => {
                                format!("{reason}; restarting at once after a good run")
                            }
                            (None, _) => reason.to_string(),
                        },
                        (Status::Failed, Event::Ended(_)) => format!(
                            "{reason}; circuit breaker open after {} failed starts within {} s",
                            policy.max_failures,
                            policy.window.as_secs()
                        ),
                        (Status::Stopped, Event::Reset { .. }) => "circuit breaker reset".into(),
                        _ => reason.to_string(),
                    };
                    self.transition(id, status, &text, out);
                }
                Action::Spawn => self.spawn_run(cx, id, out),
                Action::BeginStop => self.begin_stop(cx, id),
                Action::KillNow => {
                    if let Some(p) = &server.process {
                        p.signal_group(libc::SIGKILL);
                    }
                }
                Action::EndRun => self.kill_run(id, reason.to_string()),
                Action::CancelTimer => {
                    if let Some(t) = server.timer.take() {
                        cx.timers.cancel(t);
                    }
                }
                Action::ArmBackoff(delay) => {
                    backoff = Some(delay);
                    arm(cx, server, Instant::now() + delay, TimerKind::Backoff);
                }
                Action::CountRestart { automatic } => {
                    server.restarts += 1;
                    if automatic {
                        out.push(Output::Restart(id.to_string()));
                    }
                }
                Action::Remove => self.remove(cx, id, out),
                Action::RefuseAtLimit => {
                    let limit = self.settings.config.max_concurrent_servers;
                    let reason = format!(
                        "not started: mcp_servers.max_concurrent_servers ({limit}) reached"
                    );
                    server.note_held(&reason);
                    out.push(Output::Event(
                        Channel::McpServers,
                        EventData::McpServerStartRefused {
                            server_id: id.to_string(),
                            reason,
                        },
                    ));
                    refused = true;
                }
            }
        }
        refused
    }

    /// Whether another server may start now (`max_concurrent_servers`).
    fn at_limit(&self) -> bool {
        self.running() >= self.settings.config.max_concurrent_servers as usize
    }

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
        let at_limit = self.at_limit();
        let status = self.servers.get(id).ok_or_else(|| not_found(id))?.status;
        if self.supervise(cx, id, Event::Start { at_limit }, "start requested", out) {
            return Err(self.limit_error());
        }
        Ok(self.start_answer(id, status))
    }

    fn limit_error(&self) -> ApiError {
        let limit = self.settings.config.max_concurrent_servers;
        ApiError::new(
            ErrorCode::Conflict,
            format!("mcp_servers.max_concurrent_servers ({limit}) reached: stop a server first"),
        )
    }

    /// The answer to a start (or a restart of a server without a process): `before` is the
    /// status the request found.
    fn start_answer(&self, id: &str, before: Status) -> Value {
        let Some(s) = self.servers.get(id) else {
            return json!({"server": id, "status": "stopped"});
        };
        match before {
            Status::Stopping => {
                json!({"server": id, "status": "stopping", "note": "starts again once stopped"})
            }
            b if b.has_process() => json!({"server": id, "status": s.status.as_str()}),
            _ => json!({"server": id, "status": s.status.as_str(), "pid": s.pid()}),
        }
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
        self.servers.get(id).ok_or_else(|| not_found(id))?;
        self.supervise(cx, id, Event::Stop, "stop requested", out);
        Ok(json!({"server": id, "status": self.servers[id].status.as_str()}))
    }

    /// Restarts a server (stop, then start once it has exited).
    ///
    /// # Errors
    /// Unknown id, or `max_concurrent_servers` reached (for a server without a process).
    pub fn restart(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        out: &mut Vec<Output>,
    ) -> Result<Value, ApiError> {
        let at_limit = self.at_limit();
        let status = self.servers.get(id).ok_or_else(|| not_found(id))?.status;
        if self.supervise(
            cx,
            id,
            Event::Restart { at_limit },
            "restart requested",
            out,
        ) {
            return Err(self.limit_error());
        }
        if status.has_process() {
            Ok(json!({"server": id, "status": "stopping", "note": "starts again once stopped"}))
        } else {
            Ok(self.start_answer(id, status))
        }
    }

    /// Closes an open circuit breaker and starts the server again.
    ///
    /// # Errors
    /// Unknown id, or `max_concurrent_servers` reached (for a failed server).
    pub fn reset(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        out: &mut Vec<Output>,
    ) -> Result<Value, ApiError> {
        let at_limit = self.at_limit();
        let server = self.servers.get(id).ok_or_else(|| not_found(id))?;
        let was_open = server.life.breaker.is_open();
        if self.supervise(cx, id, Event::Reset { at_limit }, "reset requested", out) {
            return Err(self.limit_error());
        }
        let s = &self.servers[id];
        Ok(json!({"server": id, "circuit_was_open": was_open, "status": s.status.as_str()}))
    }

    /// Closes stdin (MCP servers over stdio exit then) and arms the stop escalation; the
    /// supervisor changes the status.
    pub(super) fn begin_stop(&mut self, cx: &mut Cx<'_, Timer>, id: &str) {
        let grace = Duration::from_millis(self.settings.config.stop_grace_ms);
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        if let Some(t) = server.timer.take() {
            cx.timers.cancel(t);
        }
        if let Some(p) = server.process.as_mut() {
            p.close_stdin(cx.registry);
        }
        arm(cx, server, Instant::now() + grace, TimerKind::StopTerm);
    }

    /// Stops every server (daemon shutdown): gracefully, or at once with SIGKILL.
    pub fn stop_all(&mut self, cx: &mut Cx<'_, Timer>, graceful: bool, out: &mut Vec<Output>) {
        let ids: Vec<String> = self.servers.keys().cloned().collect();
        let reason = if graceful {
            "daemon stopping"
        } else {
            "daemon stopping now"
        };
        for id in ids {
            self.supervise(cx, &id, Event::Shutdown { graceful }, reason, out);
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
                server.misbehaved = false;
                server.stdout_lines = LineSplitter::new(max_line);
                server.stderr_lines = LineSplitter::new(STDERR_LINE_MAX);
                server.stderr_bucket = (
                    f64::from(self.settings.config.stderr_lines_per_second) * 5.0,
                    Instant::now(),
                );
                let probe = (init_timeout / 2).min(session::PROBE_TIMEOUT);
                server.session.client_requests = self.relays.enabled;
                let init = server.session.begin_run(Instant::now(), probe);
                arm(
                    cx,
                    server,
                    Instant::now() + init_timeout,
                    TimerKind::InitDeadline,
                );
                let pid = server.pid();
                let reason = format!("spawned pid {}", pid.unwrap_or(0));
                self.supervise(cx, id, Event::Spawned, &reason, out);
                self.apply(cx, id, init, out);
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
                self.supervise(cx, id, Event::Ended(end), &e, out);
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

    /// The server's stdout reached EOF. A process that exits closes its stdout a moment before
    /// it becomes reapable, so this alone is no verdict: the run gets [`STDOUT_EOF_GRACE`] for
    /// its exit to arrive (SIGCHLD then tells the story) before it is ended as a server that
    /// closed its stdout but lives on.
    pub(super) fn on_stdout_eof(&mut self, cx: &mut Cx<'_, Timer>, id: &str) {
        let Some(server) = self.live_run_without_stdout(id) else {
            return;
        };
        arm(
            cx,
            server,
            Instant::now() + STDOUT_EOF_GRACE,
            TimerKind::StdoutClosed,
        );
    }

    /// The server whose stdout closed, if its run is still ours to end: its process has not
    /// exited (reaped, or a zombie waiting for SIGCHLD's turn), and no stop or end is under way.
    fn live_run_without_stdout(&mut self, id: &str) -> Option<&mut Server> {
        let server = self.servers.get_mut(id)?;
        let p = server.process.as_ref()?;
        let exited = p.exit_status.is_some() || sys::child_has_exited(p.pid);
        let ending = server.status == Status::Stopping || server.ending.is_some();
        (!exited && !ending).then_some(server)
    }

    /// The session is over: the server closed its stdout and did not exit within the grace.
    /// Pending calls fail now; the process is stopped without the stdin grace (SIGTERM to
    /// its group, SIGKILL after `term_timeout_ms`), and its exit goes through the restart
    /// policy like a crash.
    fn end_closed_stdout(&mut self, cx: &mut Cx<'_, Timer>, id: &str, out: &mut Vec<Output>) {
        let term_timeout = Duration::from_millis(self.settings.config.term_timeout_ms);
        let Some(server) = self.live_run_without_stdout(id) else {
            return;
        };
        let Some(p) = server.process.as_ref() else {
            return;
        };
        p.signal_group(libc::SIGTERM);
        let reason = "closed its stdout".to_string();
        log::warn!("MCP server {id} {reason} but is still running; stopping it");
        server.note_error(reason.clone());
        server.ending = Some(reason.clone());
        arm(
            cx,
            server,
            Instant::now() + term_timeout,
            TimerKind::StopKill,
        );
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
        let effects = server.session.end_run(reason, Instant::now());
        self.apply(cx, id, effects, out);
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
        let id = String::from(&*id);
        if t.kind == TimerKind::Trial {
            self.trial_deadline(cx, &id, out);
            return;
        }
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
                self.supervise(cx, &id, Event::BackoffElapsed, "backoff elapsed", out);
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
                    arm(
                        cx,
                        server,
                        Instant::now() + term_timeout,
                        TimerKind::StopKill,
                    );
                }
            }
            TimerKind::StdoutClosed => {
                server.timer = None;
                self.end_closed_stdout(cx, &id, out);
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
                let Some(context) = self.context(&id) else {
                    return;
                };
                let Some(server) = self.servers.get_mut(&id) else {
                    return;
                };
                let effects = server.session.on_relist_timer(context);
                self.apply(cx, &id, effects, out);
            }
            TimerKind::RelistExtra(kind) => {
                let Some(context) = self.context(&id) else {
                    return;
                };
                let Some(server) = self.servers.get_mut(&id) else {
                    return;
                };
                let effects = server.session.on_extra_relist_timer(kind, context);
                self.apply(cx, &id, effects, out);
            }
            TimerKind::Probe => {
                let effects = server.session.on_probe_deadline();
                self.apply(cx, &id, effects, out);
            }
            TimerKind::Trial => {}
            TimerKind::Call(rpc) => {
                let effects = server.session.on_call_deadline(rpc, Instant::now());
                self.apply(cx, &id, effects, out);
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
        // A child that never reached its exec says why (spawns do not wait for the exec).
        let exit = process
            .exec_failure()
            .unwrap_or_else(|| describe_exit(status));
        drop(process);
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
        let initialized = server.session.initialized;
        if server.status != Status::Stopping {
            log::warn!(
                "MCP server {id} {reason} after {:.1} s",
                uptime.as_secs_f64()
            );
            server.note_error(reason.clone());
        }
        let end = RunEnd {
            uptime,
            initialized,
            requested: false,
            misbehaved,
        };
        self.supervise(cx, &id, Event::Ended(end), &reason, out);
        self.sweep_orphans();
        // What the run held (pages of tools, large results) is freed: return it.
        if self.read_since_trim >= TRIM_AFTER_BYTES {
            self.read_since_trim = 0;
            sys::release_free_memory();
        }
        true
    }

    /// Kills processes re-parented to us (we are a subreaper) that no server owns: the
    /// double-forked leftovers of servers that are gone.
    pub(super) fn sweep_orphans(&self) {
        let reaper = self.reaper.as_ref().map(reaper::Reaper::pid);
        for pid in sys::own_children() {
            if !self.pids.contains_key(&pid)
                && !self.spare_pids.contains(&pid)
                && Some(pid) != reaper
                && sys::process_running(pid)
            {
                log::warn!("killing orphaned process {pid} left behind by an MCP server");
                let _ = sys::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Arms the server's one lifecycle timer for its current run, replacing (and cancelling) the
/// one it had: a server waits for one thing at a time (init, backoff, stop, stdout grace).
fn arm(cx: &mut Cx<'_, Timer>, server: &mut Server, at: Instant, kind: TimerKind) {
    if let Some(t) = server.timer.take() {
        cx.timers.cancel(t);
    }
    let (slot, run) = (server.slot, server.run);
    server.timer = Some(cx.timers.insert(at, Timer { slot, run, kind }));
}
