//! Start-up: reading the configuration and stored overrides, binding the listeners, writing
//! the pid file, building the daemon and running the loop until it stops; and the service
//! manager's notifications (readiness, watchdog).

use super::*;

impl Daemon {
    pub(super) fn notify(&self, message: &str) {
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

    pub(super) fn setup_watchdog(&mut self, cx: &mut Cx<'_, Timer>) {
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
}

/// The TCP API token a configuration asks for: `security.api_token`, the first line of
/// `security.api_token_file`, or the one generated into `<state dir>/api_token`.
pub(super) fn api_token(config: &Config, state_dir: &Path) -> Result<net::token::ApiToken, String> {
    net::token::resolve(config, state_dir)
}

/// A remote client needs a token someone set on purpose: a generated token (which only the
/// local uid can read) does not open a non-loopback listener.
pub(super) fn token_fits_listener(
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
    /// Another daemon holds the state dir and answers on its socket.
    AlreadyRunning {
        /// Its pid.
        pid: i32,
        /// Its control socket.
        socket: PathBuf,
        /// The state dir both would use.
        state_dir: PathBuf,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "invalid configuration: {e}"),
            StartError::State(e) => write!(f, "state directory: {e}"),
            StartError::Bind(e) => write!(f, "{e}"),
            StartError::Io(what, e) => write!(f, "{what}: {e}"),
            StartError::Token(m) => f.write_str(m),
            StartError::AlreadyRunning {
                pid,
                socket,
                state_dir,
            } => write!(
                f,
                "vsm-daemon is already running (pid {pid}, socket {}) with state dir {}",
                socket.display(),
                state_dir.display()
            ),
        }
    }
}

impl std::error::Error for StartError {}

/// The tokens of the two listeners, allocated by the reactor like every other floor's.
#[derive(Debug, Clone, Copy)]
pub(super) struct ListenerTokens {
    pub(super) control: mio::Token,
    pub(super) tcp: mio::Token,
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

pub(super) fn non_empty(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

pub(super) fn level_of(config: &Config) -> log::LevelFilter {
    config
        .daemon
        .log_level
        .parse()
        .unwrap_or(log::LevelFilter::Info)
}

pub(super) fn conn_policy(config: &Config) -> ConnPolicy {
    ConnPolicy {
        limits: http::Limits {
            max_head_bytes: config.http.max_head_bytes,
            max_body_bytes: config.http.max_body_bytes,
            // One request at a time per connection: the next is parsed once the previous is
            // answered, so a client that pipelines requests it does not read holds at most one
            // answer beyond the output bound (32 in flight held 32 answers: 11 MB of 314 KB
            // OpenAPI documents). HTTP/1.1 answers leave in order anyway; a client that wants
            // requests worked on side by side opens more connections.
            max_pipeline: 1,
        },
        max_connections: config.http.max_connections as usize,
        max_connections_per_peer: config.http.max_connections_per_peer as usize,
        head_timeout: Duration::from_millis(config.http.head_timeout_ms),
        idle_timeout: Duration::from_millis(config.http.idle_timeout_ms),
        ws_stall_limit: Duration::from_millis(config.http.ws_stall_timeout_ms),
    }
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
    let mut state = StateDir::open(&state_path).map_err(|e| already_running(&state_path, e))?;
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
    let checks_tokens = reactor.tokens(crate::monitor::checks::room::TOKENS_NEEDED);
    let actions_tokens = reactor.tokens(crate::monitor::actions::TOKENS_NEEDED);
    let acquire_tokens = reactor.tokens(crate::acquire::TOKENS_NEEDED);
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
    let owner = state::LockOwner {
        pid: std::process::id() as i32,
        socket: socket_path.clone(),
    };
    if let Err(e) = state.record_owner(&owner) {
        log::warn!("cannot record pid and socket in the state dir's lock file: {e}");
    }
    let now = SystemTime::now();
    let server = Server::new(conn_policy(&effective), conn_tokens);
    let mcp = Mcp::new(
        mcp::Settings {
            config: effective.mcp_servers.clone(),
            sandbox_enabled: effective.security.sandbox_enabled,
            state_dir: state.path().to_path_buf(),
            policy: crate::variety::policy::Policy::new(&effective),
            servers: effective.servers.clone(),
        },
        mcp_tokens,
    );
    let acquire = crate::acquire::Acquire::new(
        &effective,
        state.path().to_path_buf(),
        acquire_tokens,
        crate::acquire::load_decisions(&mut state),
    );
    let registered = match state.read::<Vec<ServerSpec>>(REGISTRY_FILE) {
        Ok(specs) => mcp::secrets::load(&mut state, specs.unwrap_or_default()),
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
    let gateway = crate::gateway::Gateway::new(&effective);
    let variety = crate::variety::room::Variety::new(&effective, read_requests(&mut state));
    let discovery = crate::discovery::Discovery::new(&effective, state.path().to_path_buf());
    let vsm = crate::vsm::Vsm::configured(&effective);
    let reflect = crate::reflect::Reflect::new(&effective.consciousness);
    let security_room = crate::monitor::security::Security::new(
        Duration::from_millis(effective.monitoring.security_check_interval_ms),
        effective.consciousness.learning_rate,
    );
    let settings = Settings::new(
        crate::components::settings::Layers {
            file: options.config.clone(),
            base,
            overrides,
            problem: overrides_problem,
            effective,
        },
        {
            let state_dir = state.path().to_path_buf();
            Box::new(move |config: &Config| {
                settings::access_for(Some(tcp_addr), &state_dir, config)
            })
        },
    );
    let mut daemon = Daemon {
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
        jobs: Waiting::default(),
        followers: Vec::new(),
        rooms: rooms::Rooms {
            mcp,
            diagnostics: Diagnostics,
            health: components::health::Health::default(),
            settings,
            components: Components::default(),
            checks: crate::monitor::checks::room::Checks::new(checks_tokens),
            actions: crate::monitor::actions::Actions::new(actions_tokens),
            security: security_room,
            alerts: crate::monitor::room::Alerts::default(),
            variety,
            gateway,
            acquire,
            discovery,
            vsm,
            reflect,
        },
        documents: persist::Documents::default(),
        events: EventLog::new(EVENT_HISTORY),
        outputs: Vec::new(),
        effects: Vec::new(),
        gateway_out: Vec::new(),
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
    let auto_start = daemon.rooms.settings.config().daemon.auto_start_services;
    daemon.with::<Components, _>(&mut cx, |room, rcx| room.boot(rcx, auto_start));
    daemon.rooms.mcp.start_reaper();
    let autostart = daemon.rooms.settings.config().daemon.auto_start_services;
    let from_config = daemon.rooms.settings.config().servers.clone();
    for (spec, source) in registered
        .into_iter()
        .map(|s| (s, Source::Api))
        .chain(from_config.into_iter().map(|s| (s, Source::Config)))
    {
        let id = spec.id.clone();
        match daemon.rooms.mcp.register(
            &mut cx.narrow(<Mcp as Wired>::timer).cx(),
            spec,
            source,
            autostart,
            &mut daemon.outputs,
        ) {
            Ok(_) => {}
            Err(e) => log::error!("MCP server {id} not registered: {e}"),
        }
    }
    // Every room arms its timers and begins its cycles from the effective configuration.
    let config = daemon.rooms.settings.config().clone();
    daemon.rooms_start(&mut cx, &config);
    for key in config.not_enforced_set() {
        log::warn!(
            "{key} is set but {}: it has no effect",
            config::NOT_ENFORCED
        );
    }
    daemon.setup_watchdog(&mut cx);
    log::info!("REST API and WebSocket monitor listening on http://{tcp_addr}");
    log::info!(
        "vsm-daemon {} started (pid {}, config {}, state {}, socket {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        daemon.rooms.settings.source(),
        daemon.state.path().display(),
        daemon.socket_path.display()
    );
    daemon.notify("READY=1\nSTATUS=running");
    if options.ready_json {
        let ready = json!({"event": "ready", "pid": std::process::id(), "version": env!("CARGO_PKG_VERSION"),
                   "socket": daemon.socket_path, "state_dir": daemon.state.path(), "pid_file": daemon.pid_file,
                   "http": daemon.tcp_addr.map(|a| a.to_string())});
        // `println!` would abort the daemon when nobody reads its stdout any more.
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, "{ready}").and_then(|()| out.flush()) {
            log::warn!("could not print the ready line on stdout: {e}");
        }
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

pub(super) fn load_overrides(
    state: &mut StateDir,
    base: &Config,
) -> (Value, Option<String>, Config) {
    let overrides = match state.read::<Value>(OVERRIDES_FILE) {
        Ok(Some(v)) => v,
        Ok(None) => return (json!({}), None, base.clone()),
        Err(e) => {
            let msg = format!("stored overrides not applied: {e}");
            log::error!("{msg}");
            return (json!({}), Some(msg), base.clone());
        }
    };
    let (effective, problem) =
        crate::components::settings::apply_stored_overrides(base, &overrides);
    if problem.is_none() {
        log::info!("applied stored configuration overrides from {OVERRIDES_FILE}");
    }
    (overrides, problem, effective)
}

/// A locked state dir whose holder recorded itself, is alive and answers on its socket is a
/// daemon already running: say so with its pid and socket. Anything else stays the state error.
fn already_running(state_dir: &Path, e: state::StateError) -> StartError {
    if matches!(e, state::StateError::Locked { .. }) {
        if let Some(owner) = state::lock_owner(state_dir) {
            if sys::process_running(owner.pid)
                && crate::client::Client::new(&owner.socket).is_reachable()
            {
                return StartError::AlreadyRunning {
                    pid: owner.pid,
                    socket: owner.socket,
                    state_dir: state_dir.to_path_buf(),
                };
            }
        }
    }
    StartError::State(e)
}

pub(super) fn write_pid_file(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("pid.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{}", std::process::id())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The capability requests recorded in the state dir (none when the file is missing; logged
/// and none when it cannot be read, which also makes it read-only: changes are refused).
fn read_requests(state: &mut StateDir) -> Vec<crate::variety::room::CapabilityRequest> {
    use crate::variety::room::REQUESTS_FILE;
    match state.read(REQUESTS_FILE) {
        Ok(requests) => requests.unwrap_or_default(),
        Err(e) => {
            log::error!("capability requests not loaded from {REQUESTS_FILE}: {e}");
            Vec::new()
        }
    }
}
