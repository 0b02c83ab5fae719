//! MCP servers as supervised child processes speaking JSON-RPC over stdio.
//!
//! [`Mcp`] owns every [`Server`]: it spawns them in their sandbox, drives their pipes from
//! the loop, runs the handshake and tool listing, forwards tool calls with deadlines, pings
//! them, and applies the restart policy of [`supervisor`] when a process ends. It never
//! blocks and never answers a client directly: answers and events go out as [`Output`]s
//! that the daemon delivers.
//!
//! Invariants: a server owns its slot (and so its three pipe tokens) for its whole
//! registration; every timer carries the run it belongs to, so a timer of an earlier run
//! is ignored; a pid is signalled only until it is reaped.

pub mod jsonrpc;
pub mod process;
pub mod reaper;
pub mod registry;
pub mod server;
pub mod supervisor;

use crate::api::{Answer, ApiError, ErrorCode};
use crate::config::McpServersConfig;
use crate::daemon::{ReplyTo, Timer};
use crate::reactor::Cx;
use crate::sys;
use jsonrpc::{Line, LineSplitter, Message};
use process::{Chunk, Launch, Pipe, PipeTokens, Process};
use registry::ServerSpec;
use serde_json::{json, Value};
use server::{Pending, PROTOCOL_VERSIONS};
pub use server::{Server, Source, Status};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use supervisor::{after_run, Decision, Jitter, RestartPolicy, RunEnd};

/// Pipe tokens start here; server slot `n` owns `BASE + 3n .. BASE + 3n + 2`.
pub const TOKEN_BASE: usize = 1 << 20;
/// Environment variables passed through from the daemon; everything else must be in the spec.
pub const ENV_ALLOW: [&str; 5] = ["PATH", "HOME", "LANG", "TERM", "USER"];
/// Protocol errors within a minute that count as persistent (the server is restarted).
const PERSISTENT_PROTOCOL_ERRORS: usize = 50;
/// Longest stderr line kept.
const STDERR_LINE_MAX: usize = 1024;

/// A timer of one server's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McpTimer {
    slot: usize,
    run: u64,
    kind: TimerKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    Backoff,
    InitDeadline,
    StopTerm,
    StopKill,
    Call(u64),
}

/// What the daemon must deliver.
#[derive(Debug)]
pub enum Output {
    /// An answer to a client.
    Reply(ReplyTo, Answer),
    /// An event for the event log and subscribers: (channel, type, data).
    Event(&'static str, &'static str, Value),
    /// A tool call finished: (server, outcome, seconds) for the metrics.
    ToolCall(String, &'static str, f64),
    /// A server was restarted automatically.
    Restart(String),
}

/// Defaults and limits from `[mcp_servers]` plus where the daemon keeps its state.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config section.
    pub config: McpServersConfig,
    /// Whether sandboxing (Landlock) is on (`security.sandbox_enabled`).
    pub sandbox_enabled: bool,
    /// The state directory (writable for servers under Landlock).
    pub state_dir: PathBuf,
}

/// All managed servers.
pub struct Mcp {
    servers: BTreeMap<String, Server>,
    slots: Vec<Option<String>>,
    pids: HashMap<i32, String>,
    /// Settings, updated on config changes.
    pub settings: Settings,
    jitter: Jitter,
    reaper: Option<reaper::Reaper>,
}

fn tokens(slot: usize) -> PipeTokens {
    let base = TOKEN_BASE + 3 * slot;
    PipeTokens {
        stdin: mio::Token(base),
        stdout: mio::Token(base + 1),
        stderr: mio::Token(base + 2),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::field(
        ErrorCode::ServerNotFound,
        "id",
        format!("no MCP server '{id}'"),
    )
}

fn describe_exit(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("ended (wait status {status})")
    }
}

impl Mcp {
    /// No servers yet.
    pub fn new(settings: Settings) -> Self {
        Mcp {
            servers: BTreeMap::new(),
            slots: Vec::new(),
            pids: HashMap::new(),
            settings,
            jitter: Jitter::new(),
            reaper: None,
        }
    }

    /// Starts the companion that kills server process groups if the daemon dies.
    pub fn start_reaper(&mut self) {
        match reaper::Reaper::spawn() {
            Ok(r) => self.reaper = Some(r),
            Err(e) => log::warn!(
                "no reaper process ({e}): grandchildren of MCP servers may outlive a killed daemon"
            ),
        }
    }

    /// Whether a token is one of ours.
    pub fn owns(token: mio::Token) -> bool {
        token.0 >= TOKEN_BASE && token.0 < usize::MAX - 16
    }

    fn policy(&self, spec: &ServerSpec) -> RestartPolicy {
        let c = &self.settings.config;
        let ms = Duration::from_millis;
        RestartPolicy {
            initial: ms(spec.backoff_initial_ms.unwrap_or(c.backoff_initial_ms)),
            max: ms(spec.backoff_max_ms.unwrap_or(c.backoff_max_ms)),
            jitter: 0.2,
            reset_after: ms(c.backoff_reset_after_ms),
            max_failures: spec.max_failures.unwrap_or(c.max_failures),
            window: ms(c.failure_window_ms),
            min_uptime: ms(c.min_uptime_ms),
        }
    }

    /// Specs registered over the API (what `servers.json` holds).
    pub fn api_specs(&self) -> Vec<ServerSpec> {
        self.servers
            .values()
            .filter(|s| s.source == Source::Api && !s.remove_when_stopped)
            .map(|s| s.spec.clone())
            .collect()
    }

    /// Counts for `status`: (active, registered).
    pub fn counts(&self) -> (usize, usize) {
        let active = self.servers.values().filter(|s| s.status.serves()).count();
        (active, self.servers.len())
    }

    /// Servers whose process runs or will run again soon.
    fn running(&self) -> usize {
        self.servers
            .values()
            .filter(|s| s.status.has_process() || s.status == Status::Backoff)
            .count()
    }

    /// Whether no server process is left.
    pub fn all_exited(&self) -> bool {
        self.servers.values().all(|s| s.process.is_none())
    }

    // ----- registration -----

    /// Registers a server and starts it when it autostarts.
    ///
    /// # Errors
    /// Invalid spec, duplicate id.
    pub fn register(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        spec: ServerSpec,
        source: Source,
        start: bool,
        out: &mut Vec<Output>,
    ) -> Result<Value, ApiError> {
        spec.validate()
            .map_err(|(field, m)| ApiError::field(ErrorCode::InvalidParameter, field, m))?;
        if self.servers.contains_key(&spec.id) {
            return Err(ApiError::field(
                ErrorCode::AlreadyExists,
                "id",
                format!("an MCP server '{}' is already registered", spec.id),
            ));
        }
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let id = spec.id.clone();
        let autostart = start && spec.autostart;
        self.slots[slot] = Some(id.clone());
        self.servers
            .insert(id.clone(), Server::new(spec, source, slot));
        log::info!("MCP server {id} registered");
        out.push(Output::Event(
            "mcp_servers",
            "mcp_server_registered",
            json!({"server_id": id, "source": if source == Source::Api { "api" } else { "config" }}),
        ));
        if autostart {
            if let Err(e) = self.start(cx, &id, out) {
                log::warn!("MCP server {id} not started: {e}");
                if let Some(s) = self.servers.get_mut(&id) {
                    s.note_error(e.message.clone());
                }
            }
        }
        self.show(&id)
    }

    /// Unregisters a server (stopping it first when it runs).
    ///
    /// # Errors
    /// Unknown id, or a server declared in the config file.
    pub fn unregister(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        out: &mut Vec<Output>,
    ) -> Result<Value, ApiError> {
        let server = self.servers.get_mut(id).ok_or_else(|| not_found(id))?;
        if server.source == Source::Config {
            return Err(ApiError::field(
                ErrorCode::Conflict,
                "id",
                format!(
                    "MCP server '{id}' is declared in the config file; remove it there and reload"
                ),
            ));
        }
        server.remove_when_stopped = true;
        server.restart_requested = false;
        if server.process.is_some() {
            self.begin_stop(cx, id, "unregistered", out);
        } else {
            self.remove(cx, id, out);
        }
        Ok(json!({"unregistered": id}))
    }

    fn remove(&mut self, cx: &mut Cx<'_, Timer>, id: &str, out: &mut Vec<Output>) {
        if let Some(server) = self.servers.remove(id) {
            if let Some(t) = server.timer {
                cx.timers.cancel(t);
            }
            self.slots[server.slot] = None;
            log::info!("MCP server {id} unregistered");
            out.push(Output::Event(
                "mcp_servers",
                "mcp_server_unregistered",
                json!({"server_id": id}),
            ));
        }
    }

    /// Brings config-declared servers in line with the config file: new ones registered,
    /// removed ones stopped and dropped, changed ones updated and restarted.
    pub fn sync_config_servers(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        specs: &[ServerSpec],
        out: &mut Vec<Output>,
    ) {
        let wanted: BTreeMap<&str, &ServerSpec> =
            specs.iter().map(|s| (s.id.as_str(), s)).collect();
        let gone: Vec<String> = self
            .servers
            .values()
            .filter(|s| s.source == Source::Config && !wanted.contains_key(s.spec.id.as_str()))
            .map(|s| s.spec.id.clone())
            .collect();
        for id in gone {
            if let Some(s) = self.servers.get_mut(&id) {
                s.source = Source::Api;
            }
            let _ = self.unregister(cx, &id, out);
        }
        for spec in specs {
            match self.servers.get_mut(&spec.id) {
                None => {
                    if let Err(e) = self.register(cx, spec.clone(), Source::Config, true, out) {
                        log::error!("server {} from the config file: {e}", spec.id);
                    }
                }
                Some(s) if s.source == Source::Api => {
                    log::warn!("server {} is declared in the config file and registered over the API; the API registration wins", spec.id);
                }
                Some(s) if s.spec != *spec => {
                    s.spec = spec.clone();
                    log::info!(
                        "MCP server {} changed in the config file; restarting it",
                        spec.id
                    );
                    let _ = self.restart(cx, &spec.id, out);
                }
                Some(_) => {}
            }
        }
    }

    // ----- queries -----

    /// `mcp list`.
    pub fn list(&self, filter: &str) -> Value {
        let servers: Vec<Value> = self
            .servers
            .values()
            .filter(|s| match filter {
                "active" => s.status.serves(),
                "inactive" => !s.status.serves(),
                _ => true,
            })
            .map(Server::summary)
            .collect();
        json!({"servers": servers})
    }

    /// `mcp show`.
    ///
    /// # Errors
    /// Unknown id.
    pub fn show(&self, id: &str) -> Result<Value, ApiError> {
        self.servers
            .get(id)
            .map(Server::details)
            .ok_or_else(|| not_found(id))
    }

    /// `mcp tools`.
    ///
    /// # Errors
    /// Unknown id.
    pub fn tools(&self, id: &str) -> Result<Value, ApiError> {
        let s = self.servers.get(id).ok_or_else(|| not_found(id))?;
        Ok(json!({"server": id, "status": s.status.as_str(), "tools": s.tools}))
    }

    // ----- lifecycle -----

    fn transition(&mut self, id: &str, status: Status, reason: &str, out: &mut Vec<Output>) {
        let Some(s) = self.servers.get_mut(id) else {
            return;
        };
        let old = s.set_status(status, reason);
        if old == status {
            return;
        }
        log::info!(
            "MCP server {id}: {} -> {} ({reason})",
            old.as_str(),
            status.as_str()
        );
        out.push(Output::Event(
            "mcp_servers",
            "mcp_server_status_change",
            json!({
                "server_id": id,
                "old_status": old.as_str(),
                "new_status": status.as_str(),
                "reason": reason,
                "capabilities": s.spec.capabilities,
            }),
        ));
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

    fn begin_stop(
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
            Timer::Mcp(McpTimer {
                slot,
                run,
                kind: TimerKind::StopTerm,
            }),
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

    fn launch(
        &self,
        spec: &ServerSpec,
    ) -> Result<(Launch, Option<std::os::fd::OwnedFd>, String), String> {
        let c = &self.settings.config;
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

    fn spawn_run(&mut self, cx: &mut Cx<'_, Timer>, id: &str, out: &mut Vec<Output>) {
        let Some(spec) = self.servers.get(id).map(|s| s.spec.clone()) else {
            return;
        };
        let max_line = self.settings.config.max_line_bytes;
        let init_timeout = Duration::from_millis(self.settings.config.init_timeout_ms);
        let launched = self.launch(&spec).and_then(|(launch, ruleset, landlock)| {
            let slot = self.servers[id].slot;
            let result = Process::spawn(&launch, cx.registry, tokens(slot))
                .map_err(|e| format!("cannot start '{}': {e}", spec.command));
            drop(ruleset);
            result.map(|p| (p, landlock))
        });
        let server = self.servers.get_mut(id).expect("present");
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
                    Timer::Mcp(McpTimer {
                        slot,
                        run,
                        kind: TimerKind::InitDeadline,
                    }),
                ));
                let pid = server.pid();
                self.transition(
                    id,
                    Status::Starting,
                    &format!("spawned pid {}", pid.unwrap_or(0)),
                    out,
                );
                self.send(cx, id, &init, out);
            }
            Err(e) => {
                log::warn!("MCP server {id}: {e}");
                server.note_error(e.clone());
                self.after_run_ended(cx, id, Duration::ZERO, false, e, out);
            }
        }
    }

    fn send(&mut self, _cx: &mut Cx<'_, Timer>, id: &str, bytes: &[u8], _out: &mut Vec<Output>) {
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        let Some(p) = server.process.as_mut() else {
            return;
        };
        if let Err(e) = p.send(bytes) {
            // The process is gone or stuck: end the run; SIGCHLD does the rest.
            let reason = format!("cannot write to the server: {e}");
            log::warn!("MCP server {id}: {reason}");
            server.ending.get_or_insert(reason);
            p.signal_group(libc::SIGKILL);
        }
    }

    /// Kills the current run for a reason; the exit path decides what happens next.
    fn kill_run(&mut self, id: &str, reason: String) {
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        log::warn!("MCP server {id}: {reason}; killing it");
        server.note_error(reason.clone());
        server.ending.get_or_insert(reason);
        if let Some(p) = &server.process {
            p.signal_group(libc::SIGKILL);
        }
    }

    // ----- pipes -----

    /// Readiness on a pipe token.
    pub fn on_ready(&mut self, cx: &mut Cx<'_, Timer>, token: mio::Token, out: &mut Vec<Output>) {
        let n = token.0 - TOKEN_BASE;
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

    fn drain(&mut self, cx: &mut Cx<'_, Timer>, id: &str, pipe: Pipe, out: &mut Vec<Output>) {
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
                Chunk::Data(n) => n,
                Chunk::Empty | Chunk::Eof => return,
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

    fn on_stderr_line(&mut self, id: &str, line: Line) {
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

    fn on_stdout_line(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        line: Line,
        out: &mut Vec<Output>,
    ) {
        let max = self.settings.config.max_line_bytes;
        let bytes = match line {
            Line::TooLong { len } => {
                self.kill_run(
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
                for m in messages {
                    self.on_message(cx, id, m, out);
                }
            }
            Err(e) => {
                let Some(server) = self.servers.get_mut(id) else {
                    return;
                };
                server.protocol_errors += 1;
                let now = Instant::now();
                server.recent_protocol_errors.push_back(now);
                while server
                    .recent_protocol_errors
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
                {
                    server.recent_protocol_errors.pop_front();
                }
                let shown: String =
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
                let what = format!("protocol error: {e}: {shown}");
                if server.protocol_errors <= 10 {
                    log::warn!("MCP server {id}: {what}");
                } else {
                    log::debug!("MCP server {id}: {what}");
                }
                server.note_error(what);
                if server.recent_protocol_errors.len() > PERSISTENT_PROTOCOL_ERRORS {
                    self.kill_run(id, format!("more than {PERSISTENT_PROTOCOL_ERRORS} protocol errors within a minute"));
                }
            }
        }
    }

    fn on_message(
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
                        &format!("method not found: {method} (vsm-daemon declares no client capabilities)"),
                    )
                };
                self.send(cx, id, &answer, out);
            }
            Message::Notification { method, params } => match method.as_str() {
                "notifications/tools/list_changed" => self.relist(cx, id, out),
                "notifications/progress" => out.push(Output::Event(
                    "mcp_servers",
                    "mcp_tool_progress",
                    json!({
                        "server_id": id,
                        "progress_token": params["progressToken"],
                        "progress": params["progress"],
                        "total": params["total"],
                        "message": params["message"],
                    }),
                )),
                "notifications/message" => {
                    log::info!(target: "mcp", "[{id}] {}: {}", params["level"].as_str().unwrap_or("info"), params["data"]);
                }
                _ => log::debug!("MCP server {id}: notification {method}"),
            },
        }
    }

    fn on_response(
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
                    server.server_info = v["serverInfo"].clone();
                    server.server_capabilities = v["capabilities"].clone();
                    server.instructions = v["instructions"].as_str().map(str::to_string);
                    let initialized =
                        jsonrpc::notification("notifications/initialized", Value::Null);
                    self.send(cx, id, &initialized, out);
                    self.transition(
                        id,
                        Status::Initializing,
                        &format!("protocol {version}"),
                        out,
                    );
                    self.list_tools(cx, id, None, Vec::new(), out);
                }
                Err(e) => {
                    self.kill_run(id, format!("initialize failed: {} ({})", e.message, e.code))
                }
            },
            Pending::ToolsList(mut acc) => {
                match result {
                    Ok(v) => {
                        acc.extend(v["tools"].as_array().cloned().unwrap_or_default());
                        if let Some(cursor) = v["nextCursor"].as_str().filter(|c| !c.is_empty()) {
                            if acc.len() > 10_000 {
                                self.kill_run(id, "more than 10000 tools listed".into());
                            } else {
                                let cursor = cursor.to_string();
                                self.list_tools(cx, id, Some(cursor), acc, out);
                            }
                            return;
                        }
                    }
                    // A server without tools may refuse tools/list: it simply has none.
                    Err(e) => log::debug!("MCP server {id}: tools/list failed: {}", e.message),
                }
                self.finish_listing(cx, id, acc, out);
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
                        .with_data(
                            json!({"server": id, "tool": tool, "result": v, "duration_ms": ms}),
                        ))
                    }
                    Ok(v) => {
                        server.calls.0 += 1;
                        Ok(json!({"server": id, "tool": tool, "result": v, "duration_ms": ms}))
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

    fn list_tools(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        cursor: Option<String>,
        acc: Vec<Value>,
        out: &mut Vec<Output>,
    ) {
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        let rpc = server.take_id();
        server.pending.insert(rpc, Pending::ToolsList(acc));
        let params = match cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let bytes = jsonrpc::request(rpc, "tools/list", params);
        self.send(cx, id, &bytes, out);
    }

    fn relist(&mut self, cx: &mut Cx<'_, Timer>, id: &str, out: &mut Vec<Output>) {
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        if server
            .pending
            .values()
            .any(|p| matches!(p, Pending::ToolsList(_)))
        {
            server.relist_wanted = true;
        } else if matches!(server.status, Status::Active | Status::Degraded) {
            self.list_tools(cx, id, None, Vec::new(), out);
        }
    }

    fn finish_listing(
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
            out.push(Output::Event(
                "mcp_servers",
                "mcp_server_tools_changed",
                json!({"server_id": id, "tools": self.servers[id].tool_names()}),
            ));
        }
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        if std::mem::take(&mut server.relist_wanted) {
            self.list_tools(cx, id, None, Vec::new(), out);
        }
    }

    // ----- tool calls and pings -----

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
        arguments: Value,
        timeout_ms: Option<u64>,
        reply: ReplyTo,
        out: &mut Vec<Output>,
    ) -> Result<(), ApiError> {
        let max_in_flight = self.settings.config.max_in_flight_calls as usize;
        let default_timeout = self.settings.config.call_timeout_ms;
        let server = self.servers.get_mut(id).ok_or_else(|| not_found(id))?;
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
            Timer::Mcp(McpTimer {
                slot,
                run,
                kind: TimerKind::Call(rpc),
            }),
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
        self.send(cx, id, &bytes, out);
        Ok(())
    }

    /// One health round: every serving server gets a ping; unanswered ones count as missed.
    pub fn ping_all(&mut self, cx: &mut Cx<'_, Timer>, out: &mut Vec<Output>) {
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
            self.send(cx, &id, &bytes, out);
        }
    }

    // ----- timers and exits -----

    /// A timer of ours fired.
    pub fn on_timer(&mut self, cx: &mut Cx<'_, Timer>, t: McpTimer, out: &mut Vec<Output>) {
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
                        Timer::Mcp(McpTimer {
                            slot,
                            run,
                            kind: TimerKind::StopKill,
                        }),
                    ));
                }
            }
            TimerKind::StopKill => {
                server.timer = None;
                if let (Status::Stopping, Some(p)) = (server.status, &server.process) {
                    log::warn!("MCP server {id} ignored SIGTERM; sending SIGKILL");
                    p.signal_group(libc::SIGKILL);
                }
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
                    self.send(cx, &id, &cancel, out);
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
        // Read what it wrote before dying (its last answers), then close the pipes.
        self.drain(cx, &id, Pipe::Stdout, out);
        self.drain(cx, &id, Pipe::Stderr, out);
        let Some(server) = self.servers.get_mut(&id) else {
            return true;
        };
        let Some(mut process) = server.process.take() else {
            return true;
        };
        process.exit_status = Some(status);
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
        let exit = describe_exit(status);
        let reason = match server.ending.take() {
            Some(r) => format!("{r} ({exit})"),
            None => exit,
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
                    id.clone(),
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
            self.after_run_ended(cx, &id, uptime, initialized, reason, out);
        }
        self.sweep_orphans();
        true
    }

    fn after_run_ended(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        uptime: Duration,
        initialized: bool,
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
        let end = RunEnd {
            uptime,
            initialized,
            requested: false,
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
                    Timer::Mcp(McpTimer {
                        slot,
                        run,
                        kind: TimerKind::Backoff,
                    }),
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
    fn sweep_orphans(&self) {
        let reaper = self.reaper.as_ref().map(reaper::Reaper::pid);
        for pid in sys::own_children() {
            if !self.pids.contains_key(&pid) && Some(pid) != reaper && sys::process_running(pid) {
                log::warn!("killing orphaned process {pid} left behind by an MCP server");
                let _ = sys::kill(pid, libc::SIGKILL);
            }
        }
    }
}

fn first_text(result: &Value) -> String {
    result["content"]
        .as_array()
        .and_then(|c| c.iter().find_map(|i| i["text"].as_str()))
        .unwrap_or("no text")
        .chars()
        .take(300)
        .collect()
}
