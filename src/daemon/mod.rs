//! The daemon: owns every component and answers every [`api::Request`]. It is the only place
//! where components meet; the reactor drives it, the transports feed it.
//!
//! Components (each can be stopped, started and restarted in-process):
//! - `control`: the Unix control socket listener;
//! - `worker`: the blocking-work thread;
//! - `monitor`: the periodic health check on `monitoring.health_check_interval_ms`.
//!
//! Health checks report per component; one place (the health room,
//! [`crate::components::health`]) decides what to do about a failure, and the wiring carries
//! out the repair (restart the control socket or the worker).

mod access;
mod health;
mod metrics;
mod persist;
mod registration;
mod rooms;
mod settings;
mod streams;

use crate::api::{self, Answer, ApiError, ErrorCode, EventQuery, LogQuery, ReplyTo, Request};
use crate::components::{self, diagnostics::Diagnostics};
use crate::config::{self, Config, ConfigError};
use crate::events::{Event, EventLog};
use crate::logs::{LogRecord, Logging};
use crate::mcp::registry::{ServerSpec, REGISTRY_FILE};
use crate::mcp::{self, Mcp, Output, Source};
use crate::monitor;
use crate::net::listener::{self, ControlListener};
use crate::net::{self, http, routes, ConnId, ConnPolicy, Incoming, Peer, Server};
use crate::reactor::timer::TimerId;
use crate::reactor::worker::{SubmitError, Waiting, Worker};
use crate::reactor::{Cx, Handler, LoopStats, Reactor};
use crate::room::Room;
use crate::state::{self, StateDir, StateError};
use crate::sys;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Name of the overrides document in the state directory.
const OVERRIDES_FILE: &str = "overrides.json";
/// Every document the daemon keeps in the state directory.
const STATE_DOCUMENTS: &[&str] = &[REGISTRY_FILE, OVERRIDES_FILE];
/// Stream back-pressure: a follower with more than this unsent is skipped until it drains.
const STREAM_BACKLOG_LIMIT: usize = 1024 * 1024;
/// The TCP API token a configuration asks for: `security.api_token`, the first line of
/// `security.api_token_file`, or the one generated into `<state dir>/api_token`.
fn api_token(config: &Config, state_dir: &Path) -> Result<net::token::ApiToken, String> {
    net::token::resolve(config, state_dir)
}

/// A remote client needs a token someone set on purpose: a generated token (which only the
/// local uid can read) does not open a non-loopback listener.
fn token_fits_listener(
    token: &net::token::ApiToken,
    bound: std::net::SocketAddr,
) -> Result<(), String> {
    if bound.ip().is_loopback() || !matches!(token.source, net::token::TokenSource::Generated(_)) {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {bound}, not a loopback address, with a generated token: set security.api_token or security.api_token_file, or bind a loopback address"
    ))
}

/// Events kept in the history ring.
const EVENT_HISTORY: usize = 1000;
/// Component names, in display order.
pub const COMPONENTS: [&str; 3] = ["control", "worker", "monitor"];

/// How `start` was asked to run.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// `--config PATH`.
    pub config: Option<PathBuf>,
    /// `--state-dir DIR` (or `VSM_DAEMON_STATE_DIR`).
    pub state_dir: Option<PathBuf>,
    /// `--socket PATH` (or `VSM_DAEMON_SOCKET`).
    pub socket: Option<PathBuf>,
    /// Print one JSON line on stdout once ready (`start --json`).
    pub ready_json: bool,
    /// `--listen ADDR`: overrides `daemon.http_listen`.
    pub listen: Option<std::net::SocketAddr>,
}

/// Why the daemon could not start.
#[derive(Debug)]
pub enum StartError {
    /// The config file is invalid.
    Config(ConfigError),
    /// The state directory is unusable or locked.
    State(StateError),
    /// The control socket could not be bound.
    Bind(listener::BindError),
    /// Another OS error, with what we were doing.
    Io(String, std::io::Error),
    /// The API token is unusable or missing where it is required.
    Token(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "invalid configuration: {e}"),
            StartError::State(e) => write!(f, "state directory: {e}"),
            StartError::Bind(e) => write!(f, "{e}"),
            StartError::Io(what, e) => write!(f, "{what}: {e}"),
            StartError::Token(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for StartError {}

/// Timers of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// A timer of the network floor (connection deadlines).
    Net(net::Timer),
    /// The periodic health check.
    HealthCheck,
    /// Time to tell systemd we are alive.
    Watchdog,
    /// A worker job's deadline.
    Job(u64),
    /// Graceful shutdown took too long.
    ShutdownDeadline,
    /// A timer of an MCP server.
    Mcp(mcp::Timer),
}

/// Results of blocking jobs. Each carries everything its owner needs (what the job was for
/// moved into it), and a job that does not come back yields the same variant built by its
/// failure ([`Waiting`]): no result is ever paired with a waiting entry at run time.
#[derive(Debug)]
pub enum WorkResult {
    /// A job of the health-rounds room (its probe of the state directory).
    Health(components::health::Job),
    /// A job of the diagnostics room.
    Diagnostics(components::diagnostics::Job),
    /// A state document was written; the outcome went through the write's own ticket.
    Saved,
}

#[derive(Debug, Clone)]
struct ComponentState {
    running: bool,
    since: SystemTime,
    restarts: u32,
    last_error: Option<String>,
}

/// What a stream follows.
enum Feed {
    Logs(LogQuery),
    Events(EventQuery),
}

struct Follower {
    conn: ConnId,
    feed: Feed,
    cursor: u64,
}

/// Where the daemon's configuration comes from and what overrides it.
struct ConfigLayers {
    file: Option<PathBuf>,
    base: Config,
    overrides: Value,
    overrides_problem: Option<String>,
    effective: Config,
}

/// The tokens of the two listeners, allocated by the reactor like every other floor's.
#[derive(Debug, Clone, Copy)]
struct ListenerTokens {
    control: mio::Token,
    tcp: mio::Token,
}

impl ListenerTokens {
    fn take(reactor: &mut Reactor<Timer>) -> Result<Self, StartError> {
        let range = reactor.tokens(2);
        match (range.token(0), range.token(1)) {
            (Some(control), Some(tcp)) => Ok(ListenerTokens { control, tcp }),
            _ => Err(StartError::Io(
                "event loop".into(),
                std::io::Error::other("no tokens left for the listeners"),
            )),
        }
    }
}

/// The daemon.
pub struct Daemon {
    config: ConfigLayers,
    state: StateDir,
    logging: Logging,
    socket_path: PathBuf,
    pid_file: PathBuf,
    control: Option<ControlListener>,
    tcp: Option<mio::net::TcpListener>,
    listeners: ListenerTokens,
    tcp_addr: Option<std::net::SocketAddr>,
    access: listener::TcpAccess,
    /// Refusal log lines per reason per window (see `access.rs`).
    refusal_log: crate::logs::LogThrottle,
    server: Server,
    incoming: VecDeque<Incoming>,
    worker: Option<Worker<WorkResult>>,
    waker: Arc<mio::Waker>,
    components: BTreeMap<&'static str, ComponentState>,
    health_timer: Option<TimerId>,
    health: components::health::Health,
    jobs: Waiting<WorkResult>,
    followers: Vec<Follower>,
    /// Registry changes waiting for their `servers.json` write (see `registration`).
    registry_writes: state::WriteQueue<registration::PendingChange>,
    /// The registry write on the worker, while one is in flight.
    registry_write: Option<persist::WriteTicket>,
    /// Configuration patches waiting for their `overrides.json` write (see `settings`).
    overrides_writes: state::WriteQueue<settings::PendingPatch>,
    /// The overrides write on the worker, while one is in flight.
    overrides_write: Option<persist::WriteTicket>,
    mcp: Mcp,
    diagnostics: Diagnostics,
    events: EventLog,
    outputs: Vec<Output>,
    /// What rooms other than MCP said (delivered with MCP's outputs).
    effects: Vec<crate::room::Effect>,
    telemetry: crate::telemetry::Telemetry,
    started_at: SystemTime,
    started: Instant,
    next_request_id: u64,
    stopping: Option<Instant>,
    shutdown_deadline_passed: bool,
    watchdog: Option<Duration>,
    notify_socket: Option<std::ffi::OsString>,
    reaped: u64,
}

/// Default control socket: `/run/vsm-daemon/control.sock` as root, else under
/// `$XDG_RUNTIME_DIR`, else a per-uid directory in /tmp.
pub fn default_socket_path() -> PathBuf {
    if sys::euid() == 0 {
        return PathBuf::from("/run/vsm-daemon/control.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir.join("vsm-daemon/control.sock"),
        _ => PathBuf::from(format!("/tmp/vsm-daemon-{}/control.sock", sys::euid())),
    }
}

fn non_empty(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

fn level_of(config: &Config) -> log::LevelFilter {
    config
        .daemon
        .log_level
        .parse()
        .unwrap_or(log::LevelFilter::Info)
}

fn conn_policy(config: &Config) -> ConnPolicy {
    ConnPolicy {
        limits: http::Limits {
            max_head_bytes: config.http.max_head_bytes,
            max_body_bytes: config.http.max_body_bytes,
            max_pipeline: 32,
        },
        max_connections: config.http.max_connections as usize,
        max_connections_per_peer: config.http.max_connections_per_peer as usize,
        head_timeout: Duration::from_millis(config.http.head_timeout_ms),
        idle_timeout: Duration::from_millis(config.http.idle_timeout_ms),
    }
}

fn now_string() -> String {
    state::rfc3339_utc_millis(SystemTime::now())
}

/// Runs the daemon in the foreground until it is stopped.
///
/// # Errors
/// [`StartError`] when it cannot start; once running, it only returns on a failing `poll`.
pub fn run(options: StartOptions) -> Result<(), StartError> {
    let base = match &options.config {
        Some(path) => Config::from_file(path).map_err(StartError::Config)?,
        None => Config::default(),
    };
    let logging = Logging::init(level_of(&base), base.daemon.log_buffer_lines);
    let state_path = options
        .state_dir
        .clone()
        .or_else(|| non_empty(&base.daemon.state_dir))
        .unwrap_or_else(state::default_state_dir);
    let mut state = StateDir::open(&state_path).map_err(StartError::State)?;
    let (overrides, overrides_problem, effective) = load_overrides(&mut state, &base);
    logging.set_level(level_of(&effective));
    logging.ring.set_capacity(effective.daemon.log_buffer_lines);
    let socket_path = options
        .socket
        .clone()
        .or_else(|| non_empty(&effective.daemon.socket))
        .unwrap_or_else(default_socket_path);
    let pid_file = non_empty(&effective.daemon.pid_file).unwrap_or_else(|| {
        socket_path
            .parent()
            .unwrap_or(Path::new("/"))
            .join("vsm-daemon.pid")
    });

    let mut reactor: Reactor<Timer> =
        Reactor::new().map_err(|e| StartError::Io("event loop".into(), e))?;
    let waker = reactor.waker();
    let listeners = ListenerTokens::take(&mut reactor)?;
    let conn_tokens = reactor.tokens(net::TOKENS_NEEDED);
    let mcp_tokens = reactor.tokens(mcp::TOKENS_NEEDED);
    logging.set_waker(waker.clone());
    if let Err(e) = sys::set_child_subreaper() {
        log::warn!("cannot become a child subreaper: {e}");
    }
    let listen = match options.listen {
        Some(a) => a,
        None => effective.daemon.http_listen.parse().map_err(|_| {
            StartError::Io(
                "daemon.http_listen".into(),
                std::io::ErrorKind::InvalidInput.into(),
            )
        })?,
    };
    let token = api_token(&effective, state.path()).map_err(StartError::Token)?;
    token_fits_listener(&token, listen).map_err(StartError::Token)?;
    let control = ControlListener::bind(&socket_path).map_err(StartError::Bind)?;
    let mut tcp = match listener::bind_tcp(listen) {
        Ok(l) => l,
        Err(e) => {
            control.remove_file();
            return Err(StartError::Io(format!("cannot listen on {listen}"), e));
        }
    };
    let tcp_addr = tcp.local_addr().unwrap_or(listen);
    log::info!(
        "the TCP API needs a bearer token ({}); show it with `vsm-daemon token`",
        token.source
    );
    let access = listener::TcpAccess::new(
        Some(token),
        tcp_addr,
        &effective.http.allowed_hosts,
        &effective.http.allowed_origins,
    );
    reactor
        .cx()
        .registry
        .register(&mut tcp, listeners.tcp, mio::Interest::READABLE)
        .map_err(|e| StartError::Io("TCP listener".into(), e))?;
    if let Err(e) = write_pid_file(&pid_file) {
        control.remove_file();
        return Err(StartError::Io(
            format!("pid file {}", pid_file.display()),
            e,
        ));
    }
    let now = SystemTime::now();
    let components = COMPONENTS
        .iter()
        .map(|&name| {
            (
                name,
                ComponentState {
                    running: false,
                    since: now,
                    restarts: 0,
                    last_error: None,
                },
            )
        })
        .collect();
    let server = Server::new(conn_policy(&effective), conn_tokens);
    let mcp = Mcp::new(
        mcp::Settings {
            config: effective.mcp_servers.clone(),
            sandbox_enabled: effective.security.sandbox_enabled,
            state_dir: state.path().to_path_buf(),
        },
        mcp_tokens,
    );
    let registered = match state.read::<Vec<ServerSpec>>(REGISTRY_FILE) {
        Ok(specs) => specs.unwrap_or_default(),
        Err(e @ StateError::Corrupt { .. }) => {
            log::error!("registered MCP servers not loaded: {e}");
            Vec::new()
        }
        Err(e) => {
            log::error!(
                "registered MCP servers not loaded: {e}; the file is kept as it is and \
                 registering or unregistering servers is refused until it is fixed"
            );
            Vec::new()
        }
    };
    let mut daemon = Daemon {
        config: ConfigLayers {
            file: options.config.clone(),
            base,
            overrides,
            overrides_problem,
            effective,
        },
        state,
        logging,
        socket_path,
        pid_file,
        control: Some(control),
        tcp: Some(tcp),
        listeners,
        tcp_addr: Some(tcp_addr),
        access,
        refusal_log: access::refusal_throttle(),
        server,
        incoming: VecDeque::new(),
        worker: None,
        waker,
        components,
        health_timer: None,
        health: components::health::Health::default(),
        jobs: Waiting::default(),
        followers: Vec::new(),
        registry_writes: state::WriteQueue::new(registration::MAX_WAITING),
        registry_write: None,
        overrides_writes: state::WriteQueue::new(settings::MAX_WAITING_PATCHES),
        overrides_write: None,
        mcp,
        diagnostics: Diagnostics,
        events: EventLog::new(EVENT_HISTORY),
        outputs: Vec::new(),
        effects: Vec::new(),
        telemetry: crate::telemetry::Telemetry::new(),
        started_at: now,
        started: Instant::now(),
        next_request_id: 1,
        stopping: None,
        shutdown_deadline_passed: false,
        watchdog: None,
        notify_socket: std::env::var_os("NOTIFY_SOCKET"),
        reaped: 0,
    };
    // Children must not talk to our service manager.
    std::env::remove_var("NOTIFY_SOCKET");
    let mut cx = reactor.cx();
    daemon
        .start_control(&mut cx)
        .map_err(|e| StartError::Io("control socket".into(), e))?;
    if daemon.config.effective.daemon.auto_start_services {
        for name in ["worker", "monitor"] {
            if let Err(e) = daemon.start_component(&mut cx, name) {
                log::error!("cannot start {name}: {e}");
            }
        }
    }
    daemon.mcp.start_reaper();
    let autostart = daemon.config.effective.daemon.auto_start_services;
    let from_config = daemon.config.effective.servers.clone();
    for (spec, source) in registered
        .into_iter()
        .map(|s| (s, Source::Api))
        .chain(from_config.into_iter().map(|s| (s, Source::Config)))
    {
        let id = spec.id.clone();
        if let Err(e) = daemon.mcp.register(
            &mut cx.narrow(Timer::Mcp).cx(),
            spec,
            source,
            autostart,
            &mut daemon.outputs,
        ) {
            log::error!("MCP server {id} not registered: {e}");
        }
    }
    daemon.setup_watchdog(&mut cx);
    log::info!("REST API and WebSocket monitor listening on http://{tcp_addr}");
    log::info!(
        "vsm-daemon {} started (pid {}, config {}, state {}, socket {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        daemon.config_source(),
        daemon.state.path().display(),
        daemon.socket_path.display()
    );
    daemon.notify("READY=1\nSTATUS=running");
    if options.ready_json {
        println!(
            "{}",
            json!({"event": "ready", "pid": std::process::id(), "version": env!("CARGO_PKG_VERSION"),
                   "socket": daemon.socket_path, "state_dir": daemon.state.path(), "pid_file": daemon.pid_file,
                   "http": daemon.tcp_addr.map(|a| a.to_string())})
        );
    }
    let result = reactor.run(&mut daemon);
    let mut cx = reactor.cx();
    daemon.server.close_all(&mut cx.narrow(Timer::Net).cx());
    if let Some(control) = daemon.control.take() {
        control.remove_file();
    }
    let _ = std::fs::remove_file(&daemon.pid_file);
    log::info!("vsm-daemon stopped");
    result.map_err(|e| StartError::Io("event loop".into(), e))
}

fn load_overrides(state: &mut StateDir, base: &Config) -> (Value, Option<String>, Config) {
    let overrides = match state.read::<Value>(OVERRIDES_FILE) {
        Ok(Some(v)) => v,
        Ok(None) => return (json!({}), None, base.clone()),
        Err(e) => {
            let msg = format!("stored overrides not applied: {e}");
            log::error!("{msg}");
            return (json!({}), Some(msg), base.clone());
        }
    };
    let (effective, problem) = apply_stored_overrides(base, &overrides);
    if problem.is_none() {
        log::info!("applied stored configuration overrides from {OVERRIDES_FILE}");
    }
    (overrides, problem, effective)
}

/// `base` with the known part of the stored overrides applied, and the warning to show (and
/// log) when some keys are unknown (kept in the file, not applied) or the rest conflicts with
/// `base` (then none is applied; the file stays as it is so nothing is lost).
fn apply_stored_overrides(base: &Config, stored: &Value) -> (Config, Option<String>) {
    let split = config::StoredOverrides::split(stored);
    let unknown = split.warning();
    if let Some(w) = &unknown {
        log::warn!("{OVERRIDES_FILE}: {w}");
    }
    match base.with_overrides(&split.known) {
        Ok(effective) => (effective, unknown),
        Err(e) => {
            let msg =
                format!("stored overrides not applied (they conflict with the config file): {e}");
            log::error!("{msg}");
            let problem = unknown.map_or(msg.clone(), |w| format!("{msg}; {w}"));
            (base.clone(), Some(problem))
        }
    }
}

fn write_pid_file(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("pid.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{}", std::process::id())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Drops `{}` left behind by merge-patch deletions so the stored overrides stay minimal.
fn prune_empty(value: &mut Value) {
    if let Value::Object(map) = value {
        for v in map.values_mut() {
            prune_empty(v);
        }
        map.retain(|_, v| !matches!(v, Value::Object(m) if m.is_empty()) && !v.is_null());
    }
}

/// The answer to a change that could not be made durable: nothing was changed.
fn persist_error(e: &StateError) -> ApiError {
    let code = match e {
        StateError::ReadOnly { .. } | StateError::UnsupportedVersion { .. } => {
            ErrorCode::StateReadOnly
        }
        e if e.is_out_of_space() => ErrorCode::InsufficientStorage,
        _ => ErrorCode::PersistFailed,
    };
    ApiError::new(code, format!("not changed: cannot save it: {e}"))
}

fn config_error(e: &ConfigError) -> ApiError {
    match e {
        ConfigError::UnknownKey { key } => {
            ApiError::field(ErrorCode::ConfigKeyNotFound, key.clone(), e.to_string())
        }
        _ => ApiError {
            code: ErrorCode::ConfigInvalid,
            message: e.to_string(),
            field: e.key().map(str::to_string),
            data: None,
        },
    }
}

impl Daemon {
    fn config_source(&self) -> String {
        match &self.config.file {
            Some(p) => p.display().to_string(),
            None => "embedded defaults".to_string(),
        }
    }

    fn notify(&self, message: &str) {
        let Some(target) = &self.notify_socket else {
            return;
        };
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::ffi::OsStrExt;
        let sent = std::os::unix::net::UnixDatagram::unbound().and_then(|sock| {
            let bytes = target.as_bytes();
            let addr = if let Some(name) = bytes.strip_prefix(b"@") {
                std::os::unix::net::SocketAddr::from_abstract_name(name)?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(Path::new(target))?
            };
            sock.send_to_addr(message.as_bytes(), &addr)
        });
        if let Err(e) = sent {
            log::warn!("cannot notify the service manager: {e}");
        }
    }

    fn setup_watchdog(&mut self, cx: &mut Cx<'_, Timer>) {
        let usec = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok());
        let pid_ok = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        if let (Some(usec), true, true) = (usec, pid_ok, self.notify_socket.is_some()) {
            let period = Duration::from_micros(usec / 2).max(Duration::from_millis(10));
            self.watchdog = Some(period);
            cx.timers.insert(Instant::now() + period, Timer::Watchdog);
            log::info!("systemd watchdog every {} ms", period.as_millis());
        }
    }

    // ----- components -----

    fn start_control(&mut self, cx: &mut Cx<'_, Timer>) -> std::io::Result<()> {
        if self.control.is_none() {
            let bound = ControlListener::bind(&self.socket_path)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            self.control = Some(bound);
        }
        if let Some(control) = &mut self.control {
            cx.registry.register(
                &mut control.listener,
                self.listeners.control,
                mio::Interest::READABLE,
            )?;
        }
        self.mark(cx, "control", true);
        Ok(())
    }

    fn stop_control(&mut self, cx: &mut Cx<'_, Timer>) {
        if let Some(mut control) = self.control.take() {
            let _ = cx.registry.deregister(&mut control.listener);
            control.remove_file();
        }
        self.mark(cx, "control", false);
    }

    fn mark(&mut self, _cx: &mut Cx<'_, Timer>, name: &'static str, running: bool) {
        if let Some(c) = self.components.get_mut(name) {
            if c.running != running {
                c.since = SystemTime::now();
            }
            c.running = running;
            if running {
                c.last_error = None;
            }
        }
    }

    fn start_component(&mut self, cx: &mut Cx<'_, Timer>, name: &str) -> Result<(), ApiError> {
        match name {
            "control" => self
                .start_control(cx)
                .map_err(|e| ApiError::new(ErrorCode::Internal, format!("control socket: {e}"))),
            "worker" => {
                if self.worker.as_ref().is_some_and(Worker::is_alive) {
                    return Ok(());
                }
                let worker = Worker::spawn(self.waker.clone(), 16).map_err(|e| {
                    ApiError::new(ErrorCode::Internal, format!("worker thread: {e}"))
                })?;
                self.worker = Some(worker);
                self.mark(cx, "worker", true);
                Ok(())
            }
            "monitor" => {
                if self.health_timer.is_none() {
                    let every = Duration::from_millis(
                        self.config.effective.monitoring.health_check_interval_ms,
                    );
                    self.health_timer =
                        Some(cx.timers.insert(Instant::now() + every, Timer::HealthCheck));
                }
                self.mark(cx, "monitor", true);
                Ok(())
            }
            other => Err(unknown_component(other)),
        }
    }

    fn stop_component(&mut self, cx: &mut Cx<'_, Timer>, name: &str) -> Result<(), ApiError> {
        match name {
            "control" => {
                self.stop_control(cx);
                Ok(())
            }
            "worker" => {
                // Dropping the handle closes the job queue; the thread ends after its current job.
                self.worker = None;
                self.fail_pending_jobs(cx, "the worker was stopped");
                self.mark(cx, "worker", false);
                Ok(())
            }
            "monitor" => {
                if let Some(t) = self.health_timer.take() {
                    cx.timers.cancel(t);
                }
                self.mark(cx, "monitor", false);
                Ok(())
            }
            other => Err(unknown_component(other)),
        }
    }

    fn restart_component(&mut self, cx: &mut Cx<'_, Timer>, name: &str) -> Result<(), ApiError> {
        if !COMPONENTS.contains(&name) {
            return Err(unknown_component(name));
        }
        if name == "control" {
            // Rebind in place: the listener is replaced, open connections (this one too) stay.
            if let Some(mut old) = self.control.take() {
                let _ = cx.registry.deregister(&mut old.listener);
                old.remove_file();
            }
        } else {
            self.stop_component(cx, name)?;
        }
        self.start_component(cx, name)?;
        if let Some(c) = self.components.get_mut(name) {
            c.restarts += 1;
        }
        log::info!("component {name} restarted");
        Ok(())
    }

    fn fail_pending_jobs(&mut self, cx: &mut Cx<'_, Timer>, why: &str) {
        for (timer, result) in self.jobs.fail_all(why) {
            cx.timers.cancel(timer);
            self.on_job_done(cx, result);
        }
    }

    // ----- requests -----

    fn handle_incoming(&mut self, cx: &mut Cx<'_, Timer>, incoming: Incoming) {
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
            self.check_tcp_access(&request)
        } else {
            self.check_unix_media_type(&request)
        };
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
        if request.path == "/ws/monitor" {
            self.upgrade_ws(cx, conn, seq, &request, reply);
            return;
        }
        match routes::route_resolved(&request, resolved) {
            Ok(req) => self.handle(cx, req, reply),
            Err(e) => {
                let allow = e.allow.map(|a| ("Allow", a));
                self.answer_with(cx, reply, Err(e.error), allow, false);
            }
        }
    }

    /// Handles one API request; the answer goes to `reply` now or later.
    pub fn handle(&mut self, cx: &mut Cx<'_, Timer>, request: Request, reply: ReplyTo) {
        if self.stopping.is_some() {
            let err = ApiError::new(ErrorCode::ShuttingDown, "vsm-daemon is shutting down");
            self.answer(cx, reply, Err(err));
            return;
        }
        let answer = match request {
            Request::Status { detailed } => Ok(self.status(cx, detailed)),
            Request::Health { component } => {
                if let Some(c) = &component {
                    if !self.health_component_names().contains(&c.as_str()) {
                        self.answer(cx, reply, Err(unknown_health_component(c)));
                        return;
                    }
                }
                // A round younger than a second answers at once: a scraper hammering
                // /api/v1/health must not turn into a stream of fsyncs.
                let fresh = self.health.fresh();
                if fresh && component.is_none() {
                    self.answer_cached_health(cx, reply);
                } else if fresh {
                    let answer = self.health.answer(component.as_deref());
                    self.answer(cx, reply, answer);
                } else {
                    self.start_health_round(cx, Some((reply, component)));
                }
                return;
            }
            Request::ControlStart { service } => self.control_start(cx, service),
            Request::ControlStop {
                service,
                shutdown,
                graceful,
            } => self.control_stop(cx, service, shutdown, graceful),
            Request::ControlRestart { service } => self.control_restart(cx, service),
            Request::ConfigShow { section } => self.config_show(section.as_deref()),
            Request::ConfigUpdate { patch } => match self.config_update(cx, patch, reply) {
                Ok(()) => return,
                Err(e) => Err(e),
            },
            Request::ConfigReload => self.config_reload(cx),
            Request::ConfigSchema => Ok(config::schema()),
            Request::Logs { query, follow } => {
                if follow {
                    self.follow_logs(cx, reply, query);
                    return;
                }
                Ok(self.logs(&query))
            }
            Request::Diagnostics { full } => {
                self.diagnostics(cx, reply, full);
                return;
            }
            Request::Events { query, follow } => {
                if follow {
                    self.follow(cx, reply, Feed::Events(query));
                    return;
                }
                Ok(self.event_history(&query))
            }
            Request::Metrics { view } => Ok(self.metrics(cx, view)),
            Request::Prometheus => {
                let text = self.prometheus(cx);
                self.answer_raw(
                    cx,
                    reply,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text.into_bytes(),
                );
                return;
            }
            Request::OpenApi => {
                let doc = crate::openapi::document(env!("CARGO_PKG_VERSION"));
                let bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
                self.answer_raw(cx, reply, "application/json", bytes);
                return;
            }
            Request::AuthToken => self.auth_token(false),
            Request::AuthTokenRotate => self.auth_token(true),
            Request::McpList { status } => Ok(self.mcp.list(status)),
            Request::McpShow { id } => self.mcp.show(&id),
            Request::McpTools { id } => self.mcp.tools(&id),
            Request::McpRegister { spec } => match self.mcp_register(cx, spec, reply) {
                Ok(()) => return,
                Err(e) => Err(e),
            },
            Request::McpUnregister { id } => match self.mcp_unregister(cx, id, reply) {
                Ok(()) => return,
                Err(e) => Err(e),
            },
            Request::McpStart { id } => {
                self.mcp
                    .start(&mut cx.narrow(Timer::Mcp).cx(), &id, &mut self.outputs)
            }
            Request::McpStop { id } => {
                self.mcp
                    .stop(&mut cx.narrow(Timer::Mcp).cx(), &id, &mut self.outputs)
            }
            Request::McpRestart { id } => {
                self.mcp
                    .restart(&mut cx.narrow(Timer::Mcp).cx(), &id, &mut self.outputs)
            }
            Request::McpReset { id } => {
                self.mcp
                    .reset(&mut cx.narrow(Timer::Mcp).cx(), &id, &mut self.outputs)
            }
            Request::McpCall {
                id,
                name,
                arguments,
                timeout_ms,
            } => match self.mcp.call(
                &mut cx.narrow(Timer::Mcp).cx(),
                &id,
                &name,
                arguments,
                timeout_ms,
                reply,
            ) {
                Ok(()) => return,
                Err(e) => Err(e),
            },
        };
        self.answer(cx, reply, answer);
    }

    /// Delivers what the MCP layer produced: answers and events.
    fn deliver(&mut self, cx: &mut Cx<'_, Timer>) {
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
                    Output::Event(channel, kind, data) => {
                        self.telemetry.event(kind);
                        let seq = self.events.publish(channel, kind, data);
                        self.broadcast_event(cx, seq);
                    }
                }
            }
        }
    }

    fn answer(&mut self, cx: &mut Cx<'_, Timer>, reply: ReplyTo, answer: Answer) {
        self.answer_with(cx, reply, answer, None, false);
    }

    fn answer_with(
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
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                let mut bytes = Vec::with_capacity(512);
                api::write_envelope(
                    &mut bytes,
                    &answer,
                    request_id,
                    ms,
                    &now_string(),
                    Some(&id),
                );
                let text = String::from_utf8(bytes).unwrap_or_default();
                self.server
                    .ws_send(&mut cx.narrow(Timer::Net).cx(), conn, text.into());
            }
        }
    }

    fn status(&self, cx: &Cx<'_, Timer>, detailed: bool) -> Value {
        let mut components = Map::new();
        for (name, c) in &self.components {
            let health = self.health.result(name);
            components.insert(
                name.to_string(),
                json!({
                    "status": if c.running { "running" } else { "stopped" },
                    "since": state::rfc3339_utc(c.since),
                    "restarts": c.restarts,
                    "last_error": c.last_error,
                    "healthy": health.map(|h| h.healthy),
                    "health_message": health.map(|h| h.message.clone()),
                }),
            );
        }
        let mut data = json!({
            "daemon": {
                "status": if self.stopping.is_some() { "stopping" } else { "running" },
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "started_at": state::rfc3339_utc(self.started_at),
                "uptime_seconds": self.started.elapsed().as_secs(),
                "config_source": self.config_source(),
                "config_warning": self.config.overrides_problem,
                "state_dir": self.state.path().display().to_string(),
                "socket": self.socket_path.display().to_string(),
                "pid_file": self.pid_file.display().to_string(),
                "http_listen": self.tcp_addr.map(|a| a.to_string()),
                "auth": self.access.token.as_ref().map_or("none", |t| t.source.kind()),
            },
            "components": components,
            "mcp_servers": {
                "active_count": self.mcp.counts().0,
                "total_registered": self.mcp.counts().1,
            },
        });
        if detailed {
            data["loop"] = self.loop_stats(cx.stats, cx.timers.len());
        }
        data
    }

    /// A reply that is not wrapped in the envelope (Prometheus text, the OpenAPI document).
    fn answer_raw(
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

    fn control_start(&mut self, cx: &mut Cx<'_, Timer>, service: Option<String>) -> Answer {
        let names: Vec<&'static str> = match &service {
            Some(s) => vec![component_name(s)?],
            None => COMPONENTS.to_vec(),
        };
        let mut started = Vec::new();
        for name in names {
            if !self.components[name].running {
                self.start_component(cx, name)?;
                log::info!("component {name} started");
                started.push(name);
            }
        }
        Ok(json!({"started": started}))
    }

    fn control_stop(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        service: Option<String>,
        shutdown: bool,
        graceful: bool,
    ) -> Answer {
        if shutdown {
            log::info!(
                "shutdown requested over the API ({})",
                if graceful { "graceful" } else { "immediate" }
            );
            self.begin_shutdown(cx, graceful);
            return Ok(json!({"shutdown": true, "graceful": graceful, "pid": std::process::id()}));
        }
        let names: Vec<&'static str> = match &service {
            Some(s) => vec![component_name(s)?],
            None => COMPONENTS
                .iter()
                .copied()
                .filter(|c| *c != "control")
                .collect(),
        };
        if names.contains(&"control") {
            return Err(ApiError::field(
                ErrorCode::Conflict,
                "service",
                "refusing to stop the control socket: it is the only way to reach the daemon (use `restart --service control`)",
            ));
        }
        let mut stopped = Vec::new();
        for name in names {
            if self.components[name].running {
                self.stop_component(cx, name)?;
                log::info!("component {name} stopped");
                stopped.push(name);
            }
        }
        Ok(json!({"stopped": stopped}))
    }

    fn control_restart(&mut self, cx: &mut Cx<'_, Timer>, service: Option<String>) -> Answer {
        match service {
            Some(s) => {
                let name = component_name(&s)?;
                self.restart_component(cx, name)?;
                Ok(json!({"restarted": [name]}))
            }
            None => {
                let reload = self.config_reload(cx)?;
                for name in COMPONENTS {
                    self.restart_component(cx, name)?;
                }
                Ok(json!({"restarted": COMPONENTS, "config": reload}))
            }
        }
    }

    // ----- configuration -----

    // ----- logs -----

    // ----- health -----

    /// A worker job's result (or the failure that stands for it) reaches its owner.
    fn on_job_done(&mut self, cx: &mut Cx<'_, Timer>, result: WorkResult) {
        match result {
            WorkResult::Health(job) => self.health_job(cx, job),
            WorkResult::Diagnostics(job) => rooms::enter(
                &mut self.diagnostics,
                cx,
                &mut self.worker,
                &mut self.jobs,
                &mut self.effects,
                |room, rcx| room.on_job(rcx, job),
            ),
            // Writes report through their own ticket (see `persist`).
            WorkResult::Saved => {}
        }
    }

    // ----- diagnostics -----

    fn diagnostics(&mut self, cx: &mut Cx<'_, Timer>, reply: ReplyTo, full: bool) {
        let facts = components::diagnostics::Facts {
            config_source: self.config_source(),
            config_problem: self.config.overrides_problem.as_deref(),
            state: &self.state,
            documents: STATE_DOCUMENTS,
            socket: &self.socket_path,
            pid_file: &self.pid_file,
        };
        rooms::enter(
            &mut self.diagnostics,
            cx,
            &mut self.worker,
            &mut self.jobs,
            &mut self.effects,
            |room, rcx| room.run(rcx, reply, full, &facts),
        );
    }

    // ----- shutdown -----

    fn begin_shutdown(&mut self, cx: &mut Cx<'_, Timer>, graceful: bool) {
        if self.stopping.is_some() {
            return;
        }
        self.notify("STOPPING=1");
        // New connections are refused at once; open ones get their answers.
        self.stop_control(cx);
        self.mcp
            .stop_all(&mut cx.narrow(Timer::Mcp).cx(), graceful, &mut self.outputs);
        let _ = self.stop_component(cx, "monitor");
        let _ = self.stop_component(cx, "worker");
        let timeout = if graceful {
            Duration::from_millis(self.config.effective.daemon.shutdown_timeout_ms)
        } else {
            Duration::from_millis(500)
        };
        self.stopping = Some(Instant::now());
        cx.timers
            .insert(Instant::now() + timeout, Timer::ShutdownDeadline);
    }
}

fn component_name(name: &str) -> Result<&'static str, ApiError> {
    COMPONENTS
        .iter()
        .copied()
        .find(|c| *c == name)
        .ok_or_else(|| unknown_component(name))
}

fn unknown_component(name: &str) -> ApiError {
    ApiError::field(
        ErrorCode::ComponentNotFound,
        "service",
        format!(
            "no component '{name}' (components: {})",
            COMPONENTS.join(", ")
        ),
    )
}

fn unknown_health_component(name: &str) -> ApiError {
    ApiError::field(
        ErrorCode::ComponentNotFound,
        "component",
        format!(
            "no component '{name}' (components: {}, state)",
            COMPONENTS.join(", ")
        ),
    )
}

impl Handler for Daemon {
    type Timer = Timer;

    fn on_event(&mut self, cx: &mut Cx<'_, Timer>, event: &mio::event::Event) {
        let token = event.token();
        if token == self.listeners.control {
            self.accept_control(cx);
        } else if token == self.listeners.tcp {
            self.accept_tcp(cx);
        } else if self.mcp.owns(token) {
            self.mcp
                .on_ready(&mut cx.narrow(Timer::Mcp).cx(), token, &mut self.outputs);
        } else if self.server.owns(token) {
            self.server
                .on_ready(&mut cx.narrow(Timer::Net).cx(), token, &mut self.incoming);
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_, Timer>, timer: Timer) {
        match timer {
            Timer::Net(net::Timer::Conn(id)) => {
                self.server.on_deadline(&mut cx.narrow(Timer::Net).cx(), id)
            }
            Timer::HealthCheck => {
                let every = Duration::from_millis(
                    self.config.effective.monitoring.health_check_interval_ms,
                );
                self.health_timer =
                    Some(cx.timers.insert(Instant::now() + every, Timer::HealthCheck));
                self.start_health_round(cx, None);
                self.mcp.ping_all(&mut self.outputs);
                self.flush_refusal_log();
            }
            Timer::Mcp(t) => rooms::enter(
                &mut self.mcp,
                cx,
                &mut self.worker,
                &mut self.jobs,
                &mut self.outputs,
                |room, rcx| Room::on_timer(room, rcx, t),
            ),
            Timer::Watchdog => {
                self.notify("WATCHDOG=1");
                if let Some(period) = self.watchdog {
                    cx.timers.insert(Instant::now() + period, Timer::Watchdog);
                }
            }
            Timer::Job(id) => {
                if let Some(result) = self.jobs.missed(id, "the worker did not answer in time") {
                    log::warn!("worker job {id} missed its deadline");
                    self.on_job_done(cx, result);
                }
            }
            Timer::ShutdownDeadline => {
                if self.stopping.is_some() {
                    log::warn!("shutdown deadline reached; closing remaining connections");
                    self.mcp.kill_all();
                    self.shutdown_deadline_passed = true;
                }
            }
        }
    }

    fn on_signal(&mut self, cx: &mut Cx<'_, Timer>, signal: i32) {
        match signal {
            libc::SIGTERM | libc::SIGINT => {
                log::info!(
                    "received {}, stopping",
                    if signal == libc::SIGTERM {
                        "SIGTERM"
                    } else {
                        "SIGINT"
                    }
                );
                self.begin_shutdown(cx, true);
            }
            libc::SIGHUP => {
                log::info!("received SIGHUP, reloading configuration");
                if let Err(e) = self.config_reload(cx) {
                    log::error!("reload refused, keeping the running configuration: {e}");
                }
            }
            libc::SIGCHLD => {
                while let Some(reaped) = sys::reap_any() {
                    self.reaped += 1;
                    if !self.mcp.on_child_exit(
                        &mut cx.narrow(Timer::Mcp).cx(),
                        reaped.pid,
                        reaped.status,
                        &mut self.outputs,
                    ) {
                        log::debug!("reaped orphan {} (status {})", reaped.pid, reaped.status);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_wake(&mut self, cx: &mut Cx<'_, Timer>) {
        let mut results = Vec::new();
        if let Some(w) = &self.worker {
            while let Some(r) = w.try_result() {
                results.push(r);
            }
        }
        for (id, result) in results {
            // Nobody waits for a late result, nor for a write (its ticket reports it).
            if let Some(deadline) = self.jobs.finished(id) {
                cx.timers.cancel(deadline);
                self.on_job_done(cx, result);
            }
        }
        self.poll_registry_write(cx);
        self.poll_overrides_write(cx);
    }

    fn after_dispatch(&mut self, cx: &mut Cx<'_, Timer>) {
        loop {
            while let Some(incoming) = self.incoming.pop_front() {
                self.handle_incoming(cx, incoming);
            }
            self.deliver(cx);
            self.flush_followers(cx);
            if self.incoming.is_empty() && self.outputs.is_empty() && self.effects.is_empty() {
                break;
            }
        }
        let dropped = std::mem::take(&mut self.server.ws_dropped);
        if dropped > 0 {
            self.telemetry.ws_dropped(dropped);
        }
        for _ in 0..std::mem::take(&mut self.server.ws_closed_slow) {
            self.telemetry.ws_closed_slow();
        }
    }

    fn finished(&self) -> bool {
        self.stopping.is_some()
            && (self.shutdown_deadline_passed
                || (!self.server.has_pending_output() && self.mcp.all_exited()))
    }
}

impl Daemon {}
