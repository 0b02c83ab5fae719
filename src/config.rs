//! Daemon configuration: TOML file layer, JSON merge-patch overrides, validation and metadata.
//!
//! The effective configuration is `defaults ⊕ file ⊕ overrides`. Every key is described once in
//! [`KEYS`]; that table drives validation, [`schema`], [`example_toml`] and [`requires_restart`].
//! To add a section: declare its struct with `section!`, add it as a field of [`Config`] and add
//! its rows to [`KEYS`]; the `table_matches_struct` test fails until struct and table agree.
//!
//! Lists of entries (`[[servers]]`, `[[checks]]`) and named tables (`[actions.NAME]`) are not
//! keys: they are file-only (an override patch naming them is an unknown key), empty by
//! default (so they never appear in [`KEYS`]' flattened defaults), typed by their own structs
//! with their own `validate`, and reported with an indexed path (`checks[2].target`,
//! `actions.ops.url`). [`Config::validate`] checks what spans entries: unique names and the
//! actions a check refers to. Their JSON Schema and commented example are written by hand
//! next to [`servers_schema`].

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Largest configuration file accepted, in bytes.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The dotted key of the API token, which is never printed.
const SECRET_KEY: &str = "security.api_token";
/// Longest accepted `http.allowed_origins` list.
pub const MAX_ALLOWED_ORIGINS: usize = 64;
/// Shortest accepted API token, in characters.
pub const MIN_TOKEN_CHARS: usize = 16;
/// Longest accepted API token, in characters (a header line must hold it).
pub const MAX_TOKEN_CHARS: usize = 1024;

/// Checks an API token (from the config or a token file): at least [`MIN_TOKEN_CHARS`]
/// visible ASCII characters, so it fits `Authorization: Bearer T` unchanged and a blank,
/// padded or pasted-with-a-newline value is refused instead of silently meaning "anyone".
///
/// # Errors
/// What is wrong with it (the token itself is never part of the message).
pub fn check_api_token(token: &str) -> Result<(), String> {
    if token.trim().is_empty() {
        return Err("is blank".into());
    }
    if token.trim() != token {
        return Err("has leading or trailing whitespace".into());
    }
    if token.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII characters without spaces".into());
    }
    if token.len() < MIN_TOKEN_CHARS {
        return Err(format!(
            "is too short ({} characters; at least {MIN_TOKEN_CHARS})",
            token.len()
        ));
    }
    if token.len() > MAX_TOKEN_CHARS {
        return Err(format!("is longer than {MAX_TOKEN_CHARS} characters"));
    }
    Ok(())
}

/// The canonical form of a browser origin, `scheme://host:port` in lowercase with the port
/// always written (80 for http, 443 for https), so two spellings of one origin compare equal.
/// Only `http` and `https` origins exist for the daemon; paths, user info, queries and
/// fragments are not part of an origin and are refused.
///
/// # Errors
/// Why the text is not such an origin.
pub fn normalize_origin(origin: &str) -> Result<String, String> {
    let lower = origin.trim().to_ascii_lowercase();
    let (scheme, rest) = lower
        .split_once("://")
        .ok_or_else(|| format!("{origin:?} is not scheme://host[:port]"))?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return Err(format!("{origin:?}: the scheme must be http or https")),
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "{origin:?} is not scheme://host[:port] (no path, user, query or spaces)"
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{origin:?}: unclosed [ in the host"))?;
        if !after.is_empty() && !after.starts_with(':') {
            return Err(format!("{origin:?} is not scheme://host[:port]"));
        }
        (format!("[{addr}]"), after.strip_prefix(':'))
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("{origin:?} has no host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{origin:?}: bad port"))?,
    };
    Ok(format!("{scheme}://{host}:{port}"))
}

/// The whole daemon configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[daemon]`: process-level settings.
    pub daemon: DaemonConfig,
    /// `[http]`: limits of the REST + WebSocket listener.
    pub http: HttpConfig,
    /// `[monitoring]`: check intervals and alert thresholds.
    pub monitoring: MonitoringConfig,
    /// `[mcp_servers]`: discovery and supervision of MCP servers.
    pub mcp_servers: McpServersConfig,
    /// `[security]`: sandboxing, capabilities and API authentication.
    pub security: SecurityConfig,
    /// `[consciousness]`: reflection and learning.
    pub consciousness: ConsciousnessConfig,
    /// `[gateway]`: the `/mcp` endpoint that offers every server's tools.
    pub gateway: GatewayConfig,
    /// `[variety]`: the capabilities the daemon must have and how tools map to them.
    pub variety: VarietyConfig,
    /// `[[servers]]`: MCP servers declared in the file (not settable by overrides).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<crate::spec::ServerSpec>,
    /// `[[checks]]`: operator-declared checks (not settable by overrides).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::monitor::checks::spec::CheckSpec>,
    /// `[actions.NAME]`: webhook and exec actions that checks' alerts may run (not settable
    /// by overrides).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub actions: BTreeMap<String, crate::monitor::actions::ActionSpec>,
}

/// Declares a section struct (`#[serde(default, deny_unknown_fields)]`) and its `Default` impl
/// from `field: Type = default` lines. Meanings and limits of the fields are in [`KEYS`].
macro_rules! section {
    ($(#[$meta:meta])* pub struct $name:ident {
        $($(#[doc = $doc:literal])* pub $field:ident: $ty:ty = $default:expr,)*
    }) => {
        $(#[$meta])*
        #[serde(default, deny_unknown_fields)]
        pub struct $name { $($(#[doc = $doc])* pub $field: $ty,)* }
        impl Default for $name {
            fn default() -> Self { Self { $($field: $default,)* } }
        }
    };
}

section! {
    /// `[daemon]` section.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct DaemonConfig {
        /// REST + WebSocket listener address (`IP:port`).
        pub http_listen: String = "127.0.0.1:4000".into(),
        /// Control socket path; empty means the built-in default.
        pub socket: String = String::new(),
        /// PID file path; empty means beside the control socket.
        pub pid_file: String = String::new(),
        /// State directory; empty means the built-in default.
        pub state_dir: String = String::new(),
        /// One of `error`, `warn`, `info`, `debug`, `trace`.
        pub log_level: String = "info".into(),
        /// Log records kept in memory.
        pub log_buffer_lines: usize = 1000,
        /// Start components when the daemon starts.
        pub auto_start_services: bool = true,
        /// Graceful stop deadline in milliseconds.
        pub shutdown_timeout_ms: u64 = 10_000,
    }
}

section! {
    /// `[http]` section.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct HttpConfig {
        /// Largest request line + headers in bytes.
        pub max_head_bytes: usize = 16_384,
        /// Largest request body in bytes.
        pub max_body_bytes: usize = 1_048_576,
        /// Open connections per listener.
        pub max_connections: u32 = 256,
        /// Open TCP connections per peer address (IPv6: per /64).
        pub max_connections_per_peer: u32 = 64,
        /// Time allowed to receive a request head, in milliseconds.
        pub head_timeout_ms: u64 = 10_000,
        /// Keep-alive idle close, in milliseconds.
        pub idle_timeout_ms: u64 = 30_000,
        /// A WebSocket client whose outgoing data has not drained for this long is closed.
        pub ws_stall_timeout_ms: u64 = 10_000,
        /// Extra Host/Origin names accepted.
        pub allowed_hosts: Vec<String> = Vec::new(),
        /// Extra browser origins (`scheme://host[:port]`) accepted besides our own.
        pub allowed_origins: Vec<String> = Vec::new(),
    }
}

section! {
    /// `[monitoring]` section.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct MonitoringConfig {
        /// Milliseconds between variety checks.
        pub variety_check_interval_ms: u64 = 60_000,
        /// Milliseconds between performance checks.
        pub performance_check_interval_ms: u64 = 30_000,
        /// Milliseconds between health checks.
        pub health_check_interval_ms: u64 = 15_000,
        /// Milliseconds between security checks.
        pub security_check_interval_ms: u64 = 30_000,
        /// Actions of the built-in performance and health alerts.
        pub alert_actions: Vec<String> = strings(&["log"]),
        /// `[monitoring.alert_thresholds]`.
        pub alert_thresholds: AlertThresholds = AlertThresholds::default(),
    }
}

section! {
    /// `[monitoring.alert_thresholds]` section.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct AlertThresholds {
        /// Alert below this variety ratio.
        pub variety_ratio_min: f64 = 0.7,
        /// Alert above this response time in milliseconds.
        pub response_time_max_ms: u64 = 2000,
        /// Alert above this error rate (percent).
        pub error_rate_max_percent: f64 = 5.0,
        /// Alert above this memory usage (percent).
        pub memory_usage_max_percent: f64 = 80.0,
    }
}

section! {
    /// `[mcp_servers]` section.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct McpServersConfig {
        /// Where to discover servers.
        pub discovery_sources: Vec<String> = strings(&["catalog"]),
        /// Milliseconds between discovery runs; 0 = off.
        pub auto_discovery_interval_ms: u64 = 300_000,
        /// Base URL of the official MCP registry (API v0.1); empty = unavailable.
        pub registry_url: String = String::new(),
        /// Base URL of the npm registry; empty = the `registry=` of the user's npm config.
        pub npm_registry_url: String = String::new(),
        /// Base URL of the GitHub REST API; empty = unavailable.
        pub github_api_url: String = String::new(),
        /// A file whose first line is the GitHub API token sent with the github source's
        /// requests; empty = unauthenticated.
        pub github_token_file: String = String::new(),
        /// The operator's curated catalog of servers (TOML); empty = unavailable.
        pub catalog_file: String = String::new(),
        /// How long a source's discovery answer is reused, ms; 0 = never.
        pub discovery_cache_ttl_ms: u64 = 3_600_000,
        /// Time limit of one discovery source, ms.
        pub discovery_timeout_ms: u64 = 10_000,
        /// Time limit of a sandboxed trial, in milliseconds.
        pub sandbox_timeout_ms: u64 = 30_000,
        /// Servers allowed to run at once.
        pub max_concurrent_servers: u32 = 10,
        /// Health-check running servers.
        pub health_check_enabled: bool = true,
        /// Default tool-call deadline, ms.
        pub call_timeout_ms: u64 = 60_000,
        /// Deadline for the initialize handshake and tool listing, ms.
        pub init_timeout_ms: u64 = 30_000,
        /// Wait after closing stdin before SIGTERM, ms.
        pub stop_grace_ms: u64 = 2_000,
        /// Wait after SIGTERM before SIGKILL, ms.
        pub term_timeout_ms: u64 = 5_000,
        /// First restart delay, ms.
        pub backoff_initial_ms: u64 = 1_000,
        /// Largest restart delay, ms.
        pub backoff_max_ms: u64 = 300_000,
        /// Stable running time that resets the backoff, ms.
        pub backoff_reset_after_ms: u64 = 600_000,
        /// Failed starts within the failure window that open the circuit breaker.
        pub max_failures: u32 = 5,
        /// Window for counting failed starts, ms.
        pub failure_window_ms: u64 = 600_000,
        /// Uptime a start needs (with a completed handshake) to count as good, ms.
        pub min_uptime_ms: u64 = 1_000,
        /// Missed health pings before a restart.
        pub ping_misses: u32 = 3,
        /// Longest stdout line accepted from a server, bytes.
        pub max_line_bytes: usize = 4_194_304,
        /// Largest tool list kept per server (sum of the tools' JSON sizes), bytes.
        pub max_tool_list_bytes: usize = 4_194_304,
        /// Most tools (and `tools/list` pages) per server.
        pub max_tools: usize = 1000,
        /// Tool calls in flight per server.
        pub max_in_flight_calls: u32 = 64,
        /// RLIMIT_NOFILE of servers.
        pub max_open_files: u64 = 1024,
        /// RLIMIT_CPU of servers in seconds; 0 = unlimited.
        pub max_cpu_seconds: u64 = 0,
        /// RLIMIT_DATA of servers in MiB; 0 = unlimited.
        pub max_memory_mb: u64 = 0,
        /// Confine servers' writes with Landlock where the kernel has it.
        pub landlock: bool = true,
        /// stderr lines per second per server passed to the log.
        pub stderr_lines_per_second: u32 = 20,
    }
}

section! {
    /// `[security]` section. Its `Debug` output redacts `api_token`.
    #[derive(Clone, PartialEq, Serialize, Deserialize)]
    pub struct SecurityConfig {
        /// Run untrusted servers in a sandbox.
        pub sandbox_enabled: bool = true,
        /// Scan servers before installing them.
        pub security_scan_enabled: bool = true,
        /// Lowest acceptable security score.
        pub min_security_score: u8 = 70,
        /// Capabilities servers may offer.
        pub allowed_capabilities: Vec<String> = strings(&["document", "analysis", "web", "api"]),
        /// Capabilities that disqualify a server.
        pub blocked_capabilities: Vec<String> = strings(&["system", "network", "file_system"]),
        /// Bearer token for the TCP API; empty means none.
        pub api_token: String = String::new(),
        /// File whose first line is the token; empty means none.
        pub api_token_file: String = String::new(),
        /// PEM file of CA certificates trusted for outbound TLS besides the bundled roots.
        pub ca_file: String = String::new(),
    }
}

impl fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityConfig")
            .field("sandbox_enabled", &self.sandbox_enabled)
            .field("security_scan_enabled", &self.security_scan_enabled)
            .field("min_security_score", &self.min_security_score)
            .field("allowed_capabilities", &self.allowed_capabilities)
            .field("blocked_capabilities", &self.blocked_capabilities)
            .field("api_token", &redact(&self.api_token))
            .field("api_token_file", &self.api_token_file)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

section! {
    /// `[consciousness]` section.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ConsciousnessConfig {
        /// Milliseconds between reflection runs.
        pub reflection_interval_ms: u64 = 300_000,
        /// Weight of new observations (0..=1).
        pub learning_rate: f64 = 0.1,
        /// Items kept in memory.
        pub memory_limit: usize = 1000,
        /// Generate insights automatically.
        pub auto_insight_generation: bool = true,
    }
}

section! {
    /// `[gateway]` section.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct GatewayConfig {
        /// Between a server's id and its tool's name in `/mcp` tool names.
        pub tool_separator: String = "__".into(),
        /// Open `/mcp` sessions at once.
        pub max_sessions: u32 = 64,
        /// An idle `/mcp` session ends after this many milliseconds.
        pub session_idle_ms: u64 = 1_800_000,
        /// The daemon's own tools offered on `/mcp` (`acquire` changes state: not by default).
        pub daemon_tools: Vec<String> = strings(GATEWAY_DAEMON_TOOLS_DEFAULT),
        /// Open `/mcp` event streams get a keep-alive comment this often (milliseconds).
        pub keepalive_ms: u64 = 15_000,
        /// Relay servers' sampling and elicitation requests to the `/mcp` client whose call
        /// caused them (servers are offered these client capabilities at their next start).
        pub client_requests: bool = true,
    }
}

section! {
    /// `[variety]` section.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct VarietyConfig {
        /// Required capabilities (names or `{capability, weight, severity}` tables).
        pub required: Vec<crate::variety::required::Required> = Vec::new(),
        /// Keyword rules added to the built-in ones (`[[variety.rules]]`).
        pub rules: Vec<crate::variety::required::RuleSpec> = Vec::new(),
        /// Acquire a provider for a new gap without being asked.
        pub auto_acquire: bool = false,
        /// A candidate that failed is not tried again by the autonomous cycle for this long.
        pub acquire_cooldown_ms: u64 = 3_600_000,
    }
}

/// Separators allowed between server id and tool name: tool names may only hold
/// `A-Z a-z 0-9 _ - .` (MCP 2025-11-25), so the separator is made of those.
pub const GATEWAY_SEPARATORS: &[&str] = &["__", "--", "..", "_", "-", "."];
/// The daemon's own tools on `/mcp` (named `vsm<separator><tool>`).
pub const GATEWAY_DAEMON_TOOLS: &[&str] =
    &["status", "list_servers", "variety", "acquire", "discover"];
/// The daemon's own tools offered unless configured otherwise: the read-only ones.
pub const GATEWAY_DAEMON_TOOLS_DEFAULT: &[&str] = &["status", "list_servers", "variety"];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn redact(token: &str) -> &'static str {
    if token.is_empty() {
        ""
    } else {
        "***"
    }
}

/// What values a key accepts. The value's JSON type comes from its default in [`Config::default`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Constraint {
    /// A number in `min..=max` (or `min < x <= max` when `min_exclusive`).
    Range {
        /// Lower bound.
        min: f64,
        /// Upper bound (inclusive).
        max: f64,
        /// Whether `min` itself is rejected.
        min_exclusive: bool,
    },
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A string that parses as [`SocketAddr`].
    Address,
    /// Empty, or an absolute path of at most `max_bytes` bytes.
    AbsolutePathOrEmpty {
        /// Longest accepted path in bytes.
        max_bytes: usize,
    },
    /// A list of at most `max_items` distinct non-empty strings of at most `max_item_bytes`
    /// bytes each, each in `allowed` when given.
    StringList {
        /// The accepted items, or `None` for any.
        allowed: Option<&'static [&'static str]>,
        /// Longest accepted list.
        max_items: usize,
        /// Longest accepted item, in bytes.
        max_item_bytes: usize,
    },
    /// `true` or `false`.
    Bool,
    /// `variety.required`: capability names or `{capability, weight, severity}` tables
    /// (see [`crate::variety::required`]).
    RequiredCapabilities,
    /// `variety.rules`: `{capability, keywords}` tables.
    KeywordRules,
    /// Any value of the key's type.
    Any,
}

impl Constraint {
    /// Whether the key is a list of tables rather than of strings.
    const fn entries(self) -> bool {
        matches!(
            self,
            Constraint::RequiredCapabilities | Constraint::KeywordRules
        )
    }
}

/// Metadata for one configuration key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyInfo {
    /// Dotted key, e.g. `monitoring.health_check_interval_ms`.
    pub key: &'static str,
    /// One-line meaning.
    pub description: &'static str,
    /// Accepted values.
    pub constraint: Constraint,
    /// Whether a change applies without restarting the daemon.
    pub live: bool,
    /// Whether any code reads the key yet. A key validated and documented ahead of the code
    /// that acts on it is marked [`NOT_ENFORCED`] everywhere it is shown (`config show`,
    /// `config schema` as `x-enforced: false`, `diagnostics run`, the example file), and
    /// setting it logs a warning: no silent promises. The issue that implements it flips it.
    pub enforced: bool,
}

/// How a key that nothing reads yet is described.
pub const NOT_ENFORCED: &str = "not enforced yet";

const fn live(key: &'static str, description: &'static str, constraint: Constraint) -> KeyInfo {
    KeyInfo {
        key,
        description,
        constraint,
        live: true,
        enforced: true,
    }
}

const fn restart(key: &'static str, description: &'static str, constraint: Constraint) -> KeyInfo {
    KeyInfo {
        key,
        description,
        constraint,
        live: false,
        enforced: true,
    }
}

/// Marks a key that is validated and documented but read by nothing yet (see
/// [`KeyInfo::enforced`]). No key is pending today; this stays for the next one, so that a key
/// can land before what reads it without promising what it does not do.
#[allow(dead_code)]
const fn pending(info: KeyInfo) -> KeyInfo {
    KeyInfo {
        enforced: false,
        ..info
    }
}

const fn range(min: f64, max: f64) -> Constraint {
    Constraint::Range {
        min,
        max,
        min_exclusive: false,
    }
}

const INTERVAL: Constraint = range(100.0, 86_400_000.0);
const PATH: Constraint = Constraint::AbsolutePathOrEmpty { max_bytes: 4096 };
/// Host names (and bracketed IPv6 addresses) accepted in `Host`/`Origin`.
const HOST_LIST: Constraint = Constraint::StringList {
    allowed: None,
    max_items: 256,
    max_item_bytes: 255,
};
/// Browser origins (`scheme://host[:port]`) accepted besides the allowed hosts' own.
const ORIGIN_LIST: Constraint = Constraint::StringList {
    allowed: None,
    max_items: MAX_ALLOWED_ORIGINS,
    max_item_bytes: 300,
};
/// Capability names (the `[[servers]]` spec allows 64 bytes each).
const CAPABILITY_LIST: Constraint = Constraint::StringList {
    allowed: None,
    max_items: 256,
    max_item_bytes: 64,
};
/// Longest string value of any key, in bytes (paths and lists have tighter limits).
pub const MAX_STRING_BYTES: usize = 4096;
const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];
/// Discovery sources (`crate::discovery`). `pypi` and `local` were accepted before discovery
/// was built; [`retired_source`] tells what replaced them.
pub const DISCOVERY_SOURCES: &[&str] = &["catalog", "registry", "npm", "github"];
/// The key whose retired items get a migration hint.
const DISCOVERY_SOURCES_KEY: &str = "mcp_servers.discovery_sources";
/// Shortest automatic discovery interval (0 turns it off): a bound on what the daemon asks of
/// registries.
pub const MIN_AUTO_DISCOVERY_MS: u64 = 1000;

/// Every configuration key, in file order. Sections are the key prefixes.
#[rustfmt::skip]
pub const KEYS: &[KeyInfo] = &[
    restart("daemon.http_listen", "REST + WebSocket listener address; port 0 picks a free port", Constraint::Address),
    restart("daemon.socket", "control socket path; empty = /run/vsm-daemon/control.sock as root, else $XDG_RUNTIME_DIR/vsm-daemon/control.sock, else /tmp/vsm-daemon-<uid>/control.sock", Constraint::AbsolutePathOrEmpty { max_bytes: 107 }),
    restart("daemon.pid_file", "PID file; empty = vsm-daemon.pid beside the control socket", PATH),
    restart("daemon.state_dir", "state directory; empty = /var/lib/vsm-daemon as root, else $XDG_STATE_HOME/vsm-daemon", PATH),
    live("daemon.log_level", "lowest level of log records kept", Constraint::OneOf(LOG_LEVELS)),
    live("daemon.log_buffer_lines", "log records kept in memory for `vsm-daemon logs`", range(10.0, 100_000.0)),
    live("daemon.auto_start_services", "start components and autostart MCP servers when the daemon starts", Constraint::Bool),
    live("daemon.shutdown_timeout_ms", "graceful stop deadline in milliseconds", range(100.0, 300_000.0)),
    live("http.max_head_bytes", "largest request line + headers, in bytes", range(1024.0, 1_048_576.0)),
    live("http.max_body_bytes", "largest request body, in bytes", range(0.0, 67_108_864.0)),
    live("http.max_connections", "open connections allowed per listener", range(1.0, 65_536.0)),
    live("http.max_connections_per_peer", "open TCP connections allowed per client address (IPv6: per /64); at the limit a client's own waiting connections are evicted first", range(1.0, 65_536.0)),
    live("http.head_timeout_ms", "time allowed to receive a request head, in milliseconds", range(100.0, 600_000.0)),
    live("http.idle_timeout_ms", "idle keep-alive connections close after this many milliseconds", range(100.0, 3_600_000.0)),
    live("http.ws_stall_timeout_ms", "a WebSocket client that has not taken its queued events for this many milliseconds is closed (1008); applies to clients that connect after a change", range(1000.0, 3_600_000.0)),
    live("http.allowed_hosts", "extra Host names accepted besides loopback names and the bound address; with the bound port they are also allowed origins", HOST_LIST),
    live("http.allowed_origins", "extra browser origins (scheme://host[:port], at most 64) allowed to call the TCP API besides http(s)://<allowed host>:<bound port>", ORIGIN_LIST),
    live("monitoring.variety_check_interval_ms", "milliseconds between variety analyses (an analysis also runs at once when a server's status or tools change, and on demand)", INTERVAL),
    live("monitoring.performance_check_interval_ms", "milliseconds between performance checks", INTERVAL),
    live("monitoring.health_check_interval_ms", "milliseconds between health checks", INTERVAL),
    live("monitoring.security_check_interval_ms", "milliseconds between security checks (failed authentication and refused Host/Origin per peer, request-rate anomalies, CPU-limit kills, listening MCP servers)", INTERVAL),
    live("monitoring.alert_actions", "actions of the built-in performance and health alerts: log, restart_server:ID, webhook:NAME, exec:NAME", Constraint::StringList { allowed: None, max_items: 16, max_item_bytes: 80 }),
    live("monitoring.alert_thresholds.variety_ratio_min", "alert (rule variety:ratio) when the variety ratio (weight of required capabilities with an active provider over the total required weight) falls below this", range(0.0, 1.0)),
    live("monitoring.alert_thresholds.response_time_max_ms", "alert when the p95 response time of an API route or of an MCP server's tool calls over a performance interval, or an MCP server's health ping round trip, exceeds this many milliseconds", range(1.0, 3_600_000.0)),
    live("monitoring.alert_thresholds.error_rate_max_percent", "alert when the error rate (5xx answers of a route, failed tool calls of a server) over a performance interval exceeds this percentage", range(0.0, 100.0)),
    live("monitoring.alert_thresholds.memory_usage_max_percent", "alert when the host's memory in use exceeds this percentage", Constraint::Range { min: 0.0, max: 100.0, min_exclusive: true }),
    live(DISCOVERY_SOURCES_KEY, "where `mcp discover` and the automatic discovery look for MCP servers: catalog (catalog_file), registry (registry_url), npm (npm_registry_url), github (github_api_url)", Constraint::StringList { allowed: Some(DISCOVERY_SOURCES), max_items: DISCOVERY_SOURCES.len(), max_item_bytes: 16 }),
    live("mcp_servers.auto_discovery_interval_ms", "milliseconds between automatic discovery runs over every source (refreshing the cache and publishing discovery_completed); 0 = off, else at least 1000", range(0.0, 86_400_000.0)),
    live("mcp_servers.registry_url", "base URL of the official MCP registry (API v0.1, GET {url}/v0.1/servers); empty = the registry source is unavailable", Constraint::Any),
    live("mcp_servers.npm_registry_url", "base URL of the npm registry searched with GET {url}/-/v1/search; empty = the registry= line of the npm config files npm reads ($NPM_CONFIG_REGISTRY, ./.npmrc, ~/.npmrc, the global npmrc)", Constraint::Any),
    live("mcp_servers.github_api_url", "base URL of the GitHub REST API (repository search by topic mcp-server); empty = the github source is unavailable", Constraint::Any),
    live("mcp_servers.github_token_file", "a file whose first line is a GitHub token, sent as Authorization: Bearer with the github source's requests only (read at each discovery run; unauthenticated search allows 10 requests a minute); empty = no token", PATH),
    live("mcp_servers.catalog_file", "the operator's curated list of MCP servers (TOML, at most 1 MiB, [[servers]] entries with package = \"npm:NAME@VERSION\" or \"pypi:NAME==VERSION\"); empty = the catalog source is unavailable", PATH),
    live("mcp_servers.discovery_cache_ttl_ms", "how long a source's discovery answer (per query) is reused from the cache in the state dir, in milliseconds; 0 = always ask", range(0.0, 604_800_000.0)),
    live("mcp_servers.discovery_timeout_ms", "time limit of one discovery source (all its requests together), in milliseconds", range(100.0, 120_000.0)),
    live("mcp_servers.sandbox_timeout_ms", "time limit of the sandboxed trial of a package being acquired (handshake and tool listing), in milliseconds", range(100.0, 3_600_000.0)),
    live("mcp_servers.max_concurrent_servers", "MCP servers allowed to run at once", range(1.0, 1000.0)),
    live("mcp_servers.health_check_enabled", "health-check running MCP servers", Constraint::Bool),
    live("mcp_servers.call_timeout_ms", "default tool-call deadline in milliseconds (per server: call_timeout_ms)", range(10.0, 3_600_000.0)),
    live("mcp_servers.init_timeout_ms", "deadline for a server's initialize handshake and tool listing, in milliseconds", range(100.0, 600_000.0)),
    live("mcp_servers.stop_grace_ms", "graceful stop: wait after closing stdin before SIGTERM, in milliseconds", range(0.0, 600_000.0)),
    live("mcp_servers.term_timeout_ms", "graceful stop: wait after SIGTERM before SIGKILL, in milliseconds", range(0.0, 600_000.0)),
    live("mcp_servers.backoff_initial_ms", "first restart delay in milliseconds; doubles per failed start", range(10.0, 3_600_000.0)),
    live("mcp_servers.backoff_max_ms", "largest restart delay in milliseconds", range(10.0, 86_400_000.0)),
    live("mcp_servers.backoff_reset_after_ms", "stable running time after which the failed starts counted by the circuit breaker are forgotten, in milliseconds (a good run already resets the backoff)", INTERVAL),
    live("mcp_servers.max_failures", "failed starts within failure_window_ms that open the circuit breaker", range(1.0, 1000.0)),
    live("mcp_servers.failure_window_ms", "window for counting failed starts, in milliseconds", INTERVAL),
    live("mcp_servers.min_uptime_ms", "uptime (after a completed handshake) for a start to count as good, in milliseconds", range(0.0, 3_600_000.0)),
    live("mcp_servers.ping_misses", "missed health pings before a server is restarted", range(1.0, 100.0)),
    live("mcp_servers.max_line_bytes", "longest stdout line accepted from a server; longer kills and restarts it", range(1024.0, 268_435_456.0)),
    live("mcp_servers.max_tool_list_bytes", "largest tool list kept per server (sum of the tools' JSON sizes over all tools/list pages, and at most one JSON value per 8 bytes of it), in bytes; a larger one ends the run, counted as a failed start", range(65_536.0, 268_435_456.0)),
    live("mcp_servers.max_tools", "most tools, and most tools/list pages, per server; more ends the run, counted as a failed start", range(1.0, 100_000.0)),
    live("mcp_servers.max_in_flight_calls", "tool calls in flight per server", range(1.0, 10_000.0)),
    live("mcp_servers.max_open_files", "RLIMIT_NOFILE of servers", range(16.0, 1_048_576.0)),
    live("mcp_servers.max_cpu_seconds", "RLIMIT_CPU of servers in seconds; 0 = unlimited", range(0.0, 31_536_000.0)),
    live("mcp_servers.max_memory_mb", "RLIMIT_DATA of servers in MiB; 0 = unlimited", range(0.0, 1_048_576.0)),
    live("mcp_servers.landlock", "confine servers' file writes (state dir, /tmp, their cwd and HOME) with Landlock when the kernel has it", Constraint::Bool),
    live("mcp_servers.stderr_lines_per_second", "stderr lines per second per server passed to the log; the rest are counted", range(1.0, 10_000.0)),
    live("security.sandbox_enabled", "run untrusted MCP servers in a sandbox", Constraint::Bool),
    live("security.security_scan_enabled", "score packages being acquired (off skips only the score: blocked capabilities still refuse)", Constraint::Bool),
    live("security.min_security_score", "lowest security score (0-100) a package being acquired may have", range(0.0, 100.0)),
    live("security.allowed_capabilities", "capabilities servers may offer: the variety analysis scores the share of provided capabilities this lists (allowed_capabilities.score), and a package being acquired loses that criterion's points for a tool outside it", CAPABILITY_LIST),
    live("security.blocked_capabilities", "capabilities that disqualify a server: a spec declaring one is refused and a tool whose name or description maps to one (built-in and [[variety.rules]] keyword rules) cannot be called nor is listed on /mcp, unless the server's allow_capabilities names it; must not overlap allowed_capabilities", CAPABILITY_LIST),
    live(SECRET_KEY, "bearer token required on the TCP API (at least 16 visible ASCII characters); empty = api_token_file, else a token generated into <state dir>/api_token; never printed", Constraint::Any),
    live("security.api_token_file", "file (at most 4 KiB) whose first line is the API token; not together with api_token", PATH),
    live("security.ca_file", "PEM file (at most 1 MiB) of CA certificates trusted for outbound https:// (http checks, webhook actions, discovery's registries) besides the Mozilla roots built into the binary; read at each request; empty = the built-in roots only", PATH),
    live("consciousness.reflection_interval_ms", "milliseconds between reflection runs", INTERVAL),
    live("consciousness.learning_rate", "weight of new observations when updating learned values (e.g. each peer's request-rate baseline)", range(0.0, 1.0)),
    live("consciousness.memory_limit", "reflection record entries (and insights) kept in memory; the oldest are dropped and counted", range(10.0, 100_000.0)),
    live("consciousness.auto_insight_generation", "reflect every reflection_interval_ms and publish consciousness_insight events", Constraint::Bool),
    live("gateway.tool_separator", "between the server id and the tool name in the tool names /mcp offers (SERVER__TOOL)", Constraint::OneOf(GATEWAY_SEPARATORS)),
    live("gateway.max_sessions", "open /mcp sessions at once; an initialize beyond it is refused until one ends or expires", range(1.0, 10_000.0)),
    live("gateway.session_idle_ms", "a /mcp session without requests (and without an open GET stream) for this many milliseconds ends", range(1000.0, 86_400_000.0)),
    live("gateway.daemon_tools", "the daemon's own tools offered on /mcp as vsm__TOOL (acquire records a required capability, a change of state: add it only for clients you trust; discover asks the discovery sources, which may be registries outside the host)", Constraint::StringList { allowed: Some(GATEWAY_DAEMON_TOOLS), max_items: GATEWAY_DAEMON_TOOLS.len(), max_item_bytes: 32 }),
    live("gateway.keepalive_ms", "open /mcp event streams (the GET stream, a POST answered as a stream) get a ': keep-alive' comment this often, in milliseconds, so that proxies do not cut them while idle", range(1000.0, 3_600_000.0)),
    live("gateway.client_requests", "relay an MCP server's sampling/createMessage and elicitation/create to the /mcp client whose tools/call is in flight on that server (on that call's event stream; the client's answer goes back to the server); servers started while it is on are offered the sampling and elicitation (form, url) client capabilities, and a server started while it is off is offered none; off, or when no single /mcp session has a call in flight on the server (a REST, CLI or WebSocket call; calls of several sessions), the server gets a JSON-RPC error at once", Constraint::Bool),
    live("variety.required", "capabilities the daemon must have: names (\"time\") or tables {capability = \"memory\", weight = 2, severity = \"high\"}; weight above 0 (default 1), severity low, medium (default), high or critical; at most 256, unique", Constraint::RequiredCapabilities),
    live("variety.rules", "keyword rules added to the built-in ones ([[variety.rules]] capability = \"time\", keywords = [\"timezone\"]): a tool whose name or description holds a keyword's words provides the capability; at most 128 rules of 1 to 64 keywords", Constraint::KeywordRules),
    live("variety.auto_acquire", "when a required capability has no provider (a variety_gap_detected event), discover candidates for it and acquire the best-ranked one by itself, one at a time, trying the next-ranked when one fails; decisions record requested_by = auto", Constraint::Bool),
    live("variety.acquire_cooldown_ms", "a package whose acquisition failed or was refused is not tried again by the autonomous cycle for this long, in milliseconds", range(1000.0, 604_800_000.0)),
];

/// The table entry of a dotted key.
pub fn key_info(key: &str) -> Option<&'static KeyInfo> {
    KEYS.iter().find(|info| info.key == key)
}

/// Whether something reads `key` (unknown keys count as enforced: they are refused anyway).
pub fn is_enforced(key: &str) -> bool {
    key_info(key).is_none_or(|info| info.enforced)
}

/// Keys nothing reads yet, in table order.
pub fn not_enforced_keys() -> impl Iterator<Item = &'static str> {
    KEYS.iter().filter(|i| !i.enforced).map(|i| i.key)
}

/// Whether dotted `key` lies inside section `section`.
fn under(key: &str, section: &str) -> bool {
    key.strip_prefix(section)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// A configuration error.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    /// TOML syntax or type error, or unknown key, in a file (or in a string when `path` is None).
    /// `line` and `column` are 1-based (0 when the parser gave no position).
    Parse {
        /// The file, if any.
        path: Option<PathBuf>,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A value outside its constraint; `key` is the dotted path (empty for the whole document).
    Invalid {
        /// Dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A dotted key that does not exist.
    UnknownKey {
        /// The full dotted key.
        key: String,
    },
    /// The file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
}

impl ConfigError {
    /// The dotted key this error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } | Self::UnknownKey { key } if !key.is_empty() => Some(key),
            _ => None,
        }
    }

    fn invalid(key: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse {
                path,
                line,
                column,
                message,
            } => {
                let name = path
                    .as_ref()
                    .map_or("<config>".into(), |p| p.display().to_string());
                if *line == 0 {
                    write!(f, "{name}: {message}")
                } else {
                    write!(f, "{name}:{line}:{column}: {message}")
                }
            }
            Self::Invalid { key, message } if key.is_empty() => f.write_str(message),
            Self::Invalid { key, message } => write!(f, "{key}: {message}"),
            Self::UnknownKey { key } => write!(f, "unknown configuration key '{key}'"),
            Self::Io { path, message } => write!(f, "{}: {message}", path.display()),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where the fields of `[[checks]]` entries and `[actions.NAME]` tables are in the file.
#[derive(Deserialize)]
struct EntrySpans {
    #[serde(default)]
    checks: Vec<BTreeMap<String, toml::Spanned<toml::Value>>>,
    #[serde(default)]
    actions: BTreeMap<String, BTreeMap<String, toml::Spanned<toml::Value>>>,
}

/// An entry's error (`checks[2].target`, `checks[0].actions[1]`, `actions.ops.url`) found in
/// the file it came from becomes a [`ConfigError::Parse`] with that field's line and column,
/// the dotted key kept at the head of the message. Other errors, and fields the entry does
/// not spell out (a missing `argv`), stay as they were. Parses the text a second time, only
/// when the file is refused anyway.
fn locate_entry_error(e: ConfigError, text: &str, path: Option<&Path>) -> ConfigError {
    let ConfigError::Invalid { key, message } = &e else {
        return e;
    };
    let field_span = |fields: &BTreeMap<String, toml::Spanned<toml::Value>>, field: &str| {
        let name = field.split('[').next().unwrap_or(field);
        fields.get(name).map(|v| v.span().start)
    };
    let Ok(spans) = toml::from_str::<EntrySpans>(text) else {
        return e;
    };
    let start = if let Some(rest) = key.strip_prefix("checks[") {
        rest.split_once("].").and_then(|(i, field)| {
            let fields = spans.checks.get(i.parse::<usize>().ok()?)?;
            field_span(fields, field)
        })
    } else if let Some(rest) = key.strip_prefix("actions.") {
        rest.split_once('.')
            .and_then(|(name, field)| field_span(spans.actions.get(name)?, field))
    } else {
        None
    };
    let Some(start) = start else {
        return e;
    };
    let (line, column) = line_col(text, start);
    ConfigError::Parse {
        path: path.map(Path::to_path_buf),
        line,
        column,
        message: format!("{key}: {message}"),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    for (_, c) in text.char_indices().take_while(|(i, _)| *i < offset) {
        if c == '\n' {
            (line, column) = (line + 1, 1);
        } else {
            column += 1;
        }
    }
    (line, column)
}

impl Config {
    /// Parse TOML text (defaults fill what is missing), then validate.
    pub fn from_toml_str(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            let message = e.message().trim_end().to_owned();
            ConfigError::Parse {
                path: path.map(Path::to_path_buf),
                line,
                column,
                message,
            }
        })?;
        config
            .validate()
            .map_err(|e| locate_entry_error(e, text, path))?;
        Ok(config)
    }

    /// Read and parse a file. The file must be a regular file of at most [`MAX_FILE_BYTES`]:
    /// a FIFO, a device or a huge file named by `--config` is refused at once instead of
    /// hanging or bloating the daemon (see [`crate::state::read_small_file`]).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let io = |message: String| ConfigError::Io {
            path: path.to_path_buf(),
            message,
        };
        let bytes =
            crate::state::read_small_file(path, MAX_FILE_BYTES).map_err(|e| io(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|e| io(format!("not UTF-8: {e}")))?;
        let config = Self::from_toml_str(&text, Some(path))?;
        log::debug!("loaded configuration from {}", path.display());
        Ok(config)
    }

    /// Apply a merge-patch of overrides on top of `self` (the file+defaults layer) and validate.
    ///
    /// `null` members mean "no override" (the value of `self` stays). Unknown keys give
    /// [`ConfigError::UnknownKey`] with the full dotted key; wrong JSON types give
    /// [`ConfigError::Invalid`] naming the key.
    pub fn with_overrides(&self, overrides: &Value) -> Result<Config, ConfigError> {
        let defaults = flatten(&Config::default().json());
        let mut merged = self.json();
        apply_overrides(&mut merged, overrides, "", &defaults)?;
        // Through TOML, the file's own deserializer: a second one (serde_json's) for the whole
        // configuration cost about 50 kB of the binary.
        let mut text = String::new();
        for (section, value) in merged.as_object().into_iter().flatten() {
            if !value.is_null() {
                write_toml_string(section, &mut text);
                text.push_str(" = ");
                write_toml(value, &mut text);
                text.push('\n');
            }
        }
        let config: Config =
            toml::from_str(&text).map_err(|e| ConfigError::invalid("", e.message().trim_end()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks a merge patch on its own, before anything is merged or cloned: known keys must
    /// have their type and satisfy their constraint, unknown keys are refused unless `null`
    /// (removing a key is always allowed). Cross-field rules need the merged result and are
    /// left to [`Config::with_overrides`]. Linear in the size of the patch, and a list over
    /// its limit is refused by its length, so a megabyte of hosts costs one pass over it.
    pub fn check_patch(patch: &Value) -> Result<(), ConfigError> {
        let defaults = flatten(&Config::default().json());
        apply_overrides(&mut Value::Object(Map::new()), patch, "", &defaults)
    }

    /// Check every key against its [`KEYS`] constraint, then the cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let flat = flatten(&self.json());
        for info in KEYS {
            let value = flat.get(info.key).unwrap_or(&Value::Null);
            check_constraint(info, value).map_err(|m| ConfigError::invalid(info.key, m))?;
        }
        self.validate_discovery()?;
        for a in &self.monitoring.alert_actions {
            crate::monitor::alerts::Action::parse(a)
                .map_err(|m| ConfigError::invalid("monitoring.alert_actions", m))?;
        }
        let s = &self.security;
        let allowed: std::collections::HashSet<&String> = s.allowed_capabilities.iter().collect();
        if let Some(both) = s.blocked_capabilities.iter().find(|c| allowed.contains(c)) {
            return Err(ConfigError::invalid(
                "security.blocked_capabilities",
                format!("must not overlap security.allowed_capabilities (both contain \"{both}\")"),
            ));
        }
        if !s.api_token.is_empty() && !s.api_token_file.is_empty() {
            return Err(ConfigError::invalid(
                "security.api_token_file",
                "cannot be set together with security.api_token",
            ));
        }
        if !s.api_token.is_empty() {
            check_api_token(&s.api_token).map_err(|m| ConfigError::invalid(SECRET_KEY, m))?;
        }
        // A remote client needs a token someone chose on purpose: the generated one does not count.
        let listen = self.daemon.http_listen.parse::<SocketAddr>();
        if listen.is_ok_and(|a| !a.ip().is_loopback())
            && s.api_token.is_empty()
            && s.api_token_file.is_empty()
        {
            return Err(ConfigError::invalid(
                "daemon.http_listen",
                format!(
                    "{} is not a loopback address: set security.api_token or security.api_token_file first",
                    self.daemon.http_listen
                ),
            ));
        }
        let origins = &self.http.allowed_origins;
        if origins.len() > MAX_ALLOWED_ORIGINS {
            return Err(ConfigError::invalid(
                "http.allowed_origins",
                format!(
                    "at most {MAX_ALLOWED_ORIGINS} origins (got {})",
                    origins.len()
                ),
            ));
        }
        for origin in origins {
            normalize_origin(origin)
                .map_err(|m| ConfigError::invalid("http.allowed_origins", m))?;
        }
        let mut ids = std::collections::BTreeSet::new();
        for (i, spec) in self.servers.iter().enumerate() {
            spec.validate()
                .map_err(|(field, m)| ConfigError::invalid(&format!("servers[{i}].{field}"), m))?;
            let declared = spec.capabilities.iter().map(String::as_str);
            let refused = crate::variety::policy::Policy {
                blocked: self.security.blocked_capabilities.clone(),
                ..Default::default()
            }
            .refused(declared, &spec.allow_capabilities);
            if !refused.is_empty() {
                return Err(ConfigError::invalid(
                    &format!("servers[{i}].capabilities"),
                    crate::variety::policy::declared_refusal(&spec.id, &refused),
                ));
            }
            if !ids.insert(spec.id.as_str()) {
                return Err(ConfigError::invalid(
                    &format!("servers[{i}].id"),
                    format!("duplicate server id '{}'", spec.id),
                ));
            }
        }
        self.validate_checks()
    }

    /// `[mcp_servers]`' discovery keys beyond their constraints: the automatic interval is 0
    /// or at least [`MIN_AUTO_DISCOVERY_MS`], and each source URL is empty or a plain URL.
    fn validate_discovery(&self) -> Result<(), ConfigError> {
        let m = &self.mcp_servers;
        let every = m.auto_discovery_interval_ms;
        if every != 0 && every < MIN_AUTO_DISCOVERY_MS {
            return Err(ConfigError::invalid(
                "mcp_servers.auto_discovery_interval_ms",
                format!("must be 0 (off) or at least {MIN_AUTO_DISCOVERY_MS} (got {every})"),
            ));
        }
        for (key, url) in [
            ("mcp_servers.registry_url", &m.registry_url),
            ("mcp_servers.npm_registry_url", &m.npm_registry_url),
            ("mcp_servers.github_api_url", &m.github_api_url),
        ] {
            if url.is_empty() {
                continue;
            }
            if url.len() > 2048 {
                return Err(ConfigError::invalid(key, "must be at most 2048 bytes long"));
            }
            crate::monitor::checks::spec::check_http_url(url)
                .map_err(|m| ConfigError::invalid(key, m))?;
            if url.contains(['?', '#']) {
                return Err(ConfigError::invalid(
                    key,
                    "must be a base URL without query or fragment",
                ));
            }
        }
        Ok(())
    }

    /// `[actions.*]` and `[[checks]]`: each entry, unique names, bounded counts, and every
    /// action a check names defined with that kind.
    fn validate_checks(&self) -> Result<(), ConfigError> {
        use crate::monitor::checks::spec::{check_action_ref, MAX_CHECKS};
        crate::monitor::actions::validate_all(&self.actions)
            .map_err(|(key, m)| ConfigError::invalid(&key, m))?;
        if self.checks.len() > MAX_CHECKS {
            return Err(ConfigError::invalid(
                "checks",
                format!("{} checks (at most {MAX_CHECKS})", self.checks.len()),
            ));
        }
        let kind_of = |name: &str| self.actions.get(name).map(|a| a.kind.as_str());
        let mut names = std::collections::BTreeSet::new();
        for (i, check) in self.checks.iter().enumerate() {
            check
                .validate()
                .map_err(|(field, m)| ConfigError::invalid(&format!("checks[{i}].{field}"), m))?;
            if !names.insert(check.name.as_str()) {
                return Err(ConfigError::invalid(
                    &format!("checks[{i}].name"),
                    format!("duplicate check name '{}'", check.name),
                ));
            }
            for (j, action) in check.actions.iter().enumerate() {
                check_action_ref(action, kind_of)
                    .map_err(|m| ConfigError::invalid(&format!("checks[{i}].actions[{j}]"), m))?;
            }
        }
        Ok(())
    }

    /// The configuration as JSON with `security.api_token` shown as `"***"` when set.
    pub fn to_json_redacted(&self) -> Value {
        let mut value = self.json();
        if let Some(token) = value.pointer_mut("/security/api_token") {
            *token = Value::from(redact(&self.security.api_token));
        }
        value
    }

    /// One section (dotted, e.g. `monitoring.alert_thresholds`) of [`Self::to_json_redacted`].
    pub fn section_json(&self, section: &str) -> Option<Value> {
        let pointer = format!("/{}", section.replace('.', "/"));
        self.to_json_redacted()
            .pointer(&pointer)
            .filter(|v| v.is_object())
            .cloned()
    }

    /// Keys nothing reads yet that this config sets to something other than the default:
    /// promises the daemon does not keep (each deserves a warning).
    pub fn not_enforced_set(&self) -> Vec<String> {
        Config::default()
            .changed_keys(self)
            .into_iter()
            .filter(|k| !is_enforced(k))
            .collect()
    }

    /// Dotted keys whose value differs between two configs (sorted).
    pub fn changed_keys(&self, other: &Config) -> Vec<String> {
        let (a, b) = (flatten(&self.json()), flatten(&other.json()));
        let mut keys: Vec<String> = KEYS
            .iter()
            .filter(|i| a.get(i.key) != b.get(i.key))
            .map(|i| i.key.to_owned())
            .collect();
        keys.sort();
        keys
    }

    fn json(&self) -> Value {
        // Serializing plain structs of strings, numbers and lists cannot fail.
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// Dotted key → leaf value (arrays are leaves).
fn flatten(value: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    walk(&join(prefix, k), v, out);
                }
            }
            leaf => {
                out.insert(prefix.to_owned(), leaf.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn apply_overrides(
    target: &mut Value,
    patch: &Value,
    prefix: &str,
    defaults: &BTreeMap<String, Value>,
) -> Result<(), ConfigError> {
    let map = match patch {
        Value::Null => return Ok(()),
        Value::Object(map) => map,
        _ if prefix.is_empty() => {
            return Err(ConfigError::invalid(
                "",
                "configuration overrides must be a JSON object",
            ))
        }
        _ => {
            return Err(ConfigError::invalid(
                prefix,
                "must be an object of settings",
            ))
        }
    };
    for (name, value) in map {
        let key = join(prefix, name);
        let Some(target) = target.as_object_mut() else {
            continue;
        };
        // `null` means "no override", for keys this build does not know too.
        if value.is_null() {
            continue;
        }
        if let Some(info) = key_info(&key) {
            let default = defaults.get(&key).unwrap_or(&Value::Null);
            let typed = if info.constraint.entries() {
                // A list of tables: the constraint checks each entry's form.
                if value.is_array() {
                    Ok(())
                } else {
                    Err(format!("expected a list (got {})", kind(value)))
                }
            } else {
                check_type(default, value)
            };
            typed
                .and_then(|()| check_constraint(info, value))
                .map_err(|m| ConfigError::invalid(&key, m))?;
            target.insert(name.clone(), value.clone());
        } else if KEYS.iter().any(|i| under(i.key, &key)) {
            let section = target.entry(name.clone()).or_insert_with(|| json!({}));
            apply_overrides(section, value, &key, defaults)?;
        } else {
            return Err(ConfigError::UnknownKey {
                key: first_leaf(key, value),
            });
        }
    }
    Ok(())
}

/// Stored overrides (`overrides.json`) split into the part this build knows and the keys it
/// does not. Unknown keys may come from a newer daemon: they stay in the stored document (it
/// is written back whole) but are neither applied nor allowed to block changes to other keys.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOverrides {
    /// The overrides without unknown keys: what [`Config::with_overrides`] is given.
    pub known: Value,
    /// Dotted unknown keys (the first leaf of each unknown member), in document order.
    pub unknown: Vec<String>,
}

impl StoredOverrides {
    /// Splits an overrides document (or a merge patch). Members set to `null` are not counted
    /// as unknown: in a patch they remove a key, which is allowed for unknown keys too.
    /// Linear in the size of the document; recursion only follows sections of [`KEYS`].
    pub fn split(doc: &Value) -> StoredOverrides {
        fn walk(prefix: &str, map: &Map<String, Value>, unknown: &mut Vec<String>) -> Value {
            let mut known = Map::new();
            for (name, value) in map {
                let key = join(prefix, name);
                if key_info(&key).is_some() {
                    known.insert(name.clone(), value.clone());
                } else if KEYS.iter().any(|i| under(i.key, &key)) {
                    let inner = match value {
                        Value::Object(inner) => walk(&key, inner, unknown),
                        other => other.clone(), // a type error, reported by with_overrides
                    };
                    known.insert(name.clone(), inner);
                } else if !value.is_null() {
                    unknown.push(first_leaf(key, value));
                }
            }
            Value::Object(known)
        }
        let mut unknown = Vec::new();
        let known = match doc {
            Value::Object(map) => walk("", map, &mut unknown),
            other => other.clone(),
        };
        StoredOverrides { known, unknown }
    }

    /// The operator-facing warning when there are unknown keys (at most 10 named).
    pub fn warning(&self) -> Option<String> {
        const SHOWN: usize = 10;
        let (count, shown) = (self.unknown.len(), self.unknown.len().min(SHOWN));
        (count > 0).then(|| {
            let more = if count > shown {
                format!(" and {} more", count - shown)
            } else {
                String::new()
            };
            format!(
                "stored overrides have {count} key(s) this daemon does not know (written by a newer version?): {}{more}; they are kept in the file but not applied",
                self.unknown[..shown].join(", ")
            )
        })
    }
}

/// The full dotted key of the first leaf of `value` under `key` (`{"no": {"such": 1}}` names
/// `no.such`), so an unknown key is reported as the operator typed it.
fn first_leaf(key: String, value: &Value) -> String {
    match value.as_object().and_then(|m| m.iter().next()) {
        Some((name, inner)) => first_leaf(join(&key, name), inner),
        None => key,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list of strings",
        Value::Object(_) => "an object",
    }
}

/// Whether `value` has the JSON type of `default`. The message never echoes the value.
fn check_type(default: &Value, value: &Value) -> Result<(), String> {
    let ok = match default {
        Value::Number(n) if n.is_f64() => value.is_number(),
        Value::Number(_) => value.is_i64() || value.is_u64(),
        Value::Array(_) => value
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string)),
        d => std::mem::discriminant(d) == std::mem::discriminant(value),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("expected {} (got {})", kind(default), kind(value)))
    }
}

/// `value` as JSON text for an error message, cut to a few dozen bytes: a rejected value may
/// be a megabyte long, and the message is logged and sent back. Serializes at most that much.
fn shown(value: &Value) -> String {
    const MAX: usize = 64;
    /// Keeps the first `MAX` bytes, then makes the serializer stop.
    struct Prefix(Vec<u8>);
    impl std::io::Write for Prefix {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let room = MAX + 1 - self.0.len();
            self.0.extend_from_slice(&buf[..buf.len().min(room)]);
            if self.0.len() > MAX {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut prefix = Prefix(Vec::with_capacity(MAX + 1));
    let cut = serde_json::to_writer(&mut prefix, value).is_err();
    let mut bytes = prefix.0;
    bytes.truncate(MAX);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if cut {
        format!("{text}…")
    } else {
        text
    }
}

/// Displays a value through [`shown`]; serialized only if an error message is built.
struct Shown<'a>(&'a Value);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shown(self.0))
    }
}

/// Checks one value against its key's constraint. Linear in the size of the value.
fn check_constraint(info: &KeyInfo, value: &Value) -> Result<(), String> {
    let text = value.as_str().unwrap_or_default();
    if text.len() > MAX_STRING_BYTES {
        return Err(format!(
            "must be at most {MAX_STRING_BYTES} bytes long (got {})",
            text.len()
        ));
    }
    let raw = value;
    // Only formatted when an error message needs it (a valid list is never serialized).
    let value = Shown(raw);
    match info.constraint {
        Constraint::Range {
            min,
            max,
            min_exclusive,
        } => {
            let x = raw
                .as_f64()
                .ok_or_else(|| format!("must be a finite number (got {value})"))?;
            if min_exclusive && !(x > min && x <= max) {
                return Err(format!(
                    "must be greater than {min} and at most {max} (got {value})"
                ));
            }
            if !(min..=max).contains(&x) {
                return Err(format!("must be between {min} and {max} (got {value})"));
            }
        }
        Constraint::OneOf(allowed) if !allowed.contains(&text) => {
            return Err(format!(
                "must be one of {} (got {value})",
                allowed.join(", ")
            ));
        }
        Constraint::Address if text.parse::<SocketAddr>().is_err() => {
            return Err(format!(
                "must be an IP address and port such as 127.0.0.1:4000 (got {value})"
            ));
        }
        Constraint::AbsolutePathOrEmpty { max_bytes } if !text.is_empty() => {
            if !Path::new(text).is_absolute() || text.contains('\0') {
                return Err(format!("must be an absolute path or empty (got {value})"));
            }
            if text.len() > max_bytes {
                return Err(format!(
                    "must be at most {max_bytes} bytes long (got {})",
                    text.len()
                ));
            }
        }
        Constraint::StringList {
            allowed,
            max_items,
            max_item_bytes,
        } => {
            if info.key == DISCOVERY_SOURCES_KEY {
                let retired = list_items(raw).iter().filter_map(Value::as_str);
                if let Some(hint) = retired.filter_map(retired_source).next() {
                    return Err(hint.into());
                }
            }
            check_list(list_items(raw), allowed, max_items, max_item_bytes)?
        }
        Constraint::RequiredCapabilities => crate::variety::required::check_required_json(raw)?,
        Constraint::KeywordRules => crate::variety::required::check_rules_json(raw)?,
        _ => {}
    }
    Ok(())
}

/// What replaced a discovery source name accepted before discovery was built (a config
/// written then names what to write now, instead of a bare "not allowed").
fn retired_source(name: &str) -> Option<&'static str> {
    match name {
        "pypi" => Some(
            "'pypi' is no longer a discovery source: PyPI has no search API; PyPI servers are found through 'registry' (the official MCP registry lists them) and 'catalog'",
        ),
        "local" => Some(
            "'local' is now 'catalog': list the servers in the TOML file named by mcp_servers.catalog_file",
        ),
        _ => None,
    }
}

fn list_items(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// The list rules of [`Constraint::StringList`], checked in one pass (the length first, so a
/// 100,000-item list costs nothing more than its count).
fn check_list(
    items: &[Value],
    allowed: Option<&[&str]>,
    max_items: usize,
    max_item_bytes: usize,
) -> Result<(), String> {
    if items.len() > max_items {
        return Err(format!(
            "must have at most {max_items} items (got {})",
            items.len()
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    for item in items {
        let s = item.as_str().unwrap_or_default();
        if s.is_empty() {
            return Err("items must be non-empty strings".into());
        }
        if s.len() > max_item_bytes {
            return Err(format!(
                "items must be at most {max_item_bytes} bytes long (got one of {})",
                s.len()
            ));
        }
        if allowed.is_some_and(|a| !a.contains(&s)) {
            let list = allowed.unwrap_or_default().join(", ");
            return Err(format!("items must be among {list} (got {})", shown(item)));
        }
        if !seen.insert(s) {
            return Err(format!("duplicate item {}", shown(item)));
        }
    }
    Ok(())
}

/// RFC 7386 merge patch: objects merge recursively, `null` removes a member, anything else replaces.
///
/// The recursion follows the patch's nesting, which is bounded where every patch comes from:
/// request bodies, WebSocket commands and `overrides.json` are parsed by `serde_json`, whose
/// recursion limit (128) refuses deeper documents before they get here.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (k, v) in patch {
            if v.is_null() {
                target.remove(k);
            } else {
                merge_patch(target.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// `{"a": {"b": value}}` for key `a.b`.
fn nest(key: &str, value: Value) -> Value {
    key.rsplit('.').fold(value, |inner, part| {
        let mut map = Map::new();
        map.insert(part.to_owned(), inner);
        Value::Object(map)
    })
}

/// A JSON string literal (`"..."`) decoded, else the text as is.
fn unquote(text: &str) -> String {
    serde_json::from_str::<String>(text).unwrap_or_else(|_| text.to_owned())
}

/// Turn `config set KEY VALUE` text into a merge-patch object, typed by the key's default:
/// numbers and booleans are parsed (error naming the key if the text is not one), strings stay
/// strings even when they look numeric (a JSON string literal is decoded), lists accept a JSON
/// array or a comma-separated list, and `null`/`default` give `null` (remove the override).
/// Constraints are checked later by [`Config::with_overrides`].
pub fn patch_for_set(key: &str, value: &str) -> Result<Value, ConfigError> {
    if key_info(key).is_none() {
        return Err(ConfigError::UnknownKey {
            key: key.to_owned(),
        });
    }
    let defaults = flatten(&Config::default().json());
    let t = value.trim();
    let bad = |what: &str| ConfigError::invalid(key, format!("expected {what} (got '{t}')"));
    let typed = match defaults.get(key).unwrap_or(&Value::Null) {
        _ if t == "null" || t == "default" => Value::Null,
        Value::Bool(_) => Value::Bool(t.parse().map_err(|_| bad("true or false"))?),
        Value::Number(n) if n.is_f64() => t
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| bad("a number"))?,
        Value::Number(_) => match (t.parse::<u64>(), t.parse::<i64>()) {
            (Ok(u), _) => Value::from(u),
            (_, Ok(i)) => Value::from(i),
            _ => return Err(bad("an integer")),
        },
        Value::Array(_)
            if t.starts_with('[') && key_info(key).is_some_and(|i| i.constraint.entries()) =>
        {
            serde_json::from_str::<Vec<Value>>(t)
                .map(Value::from)
                .map_err(|_| bad("a JSON array"))?
        }
        Value::Array(_) if t.starts_with('[') => serde_json::from_str::<Vec<String>>(t)
            .map(Value::from)
            .map_err(|_| bad("a JSON array of strings or a comma-separated list"))?,
        Value::Array(_) => {
            let items = unquote(t);
            Value::from(
                items
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>(),
            )
        }
        _ => Value::String(unquote(value)),
    };
    Ok(nest(key, typed))
}

/// Whether changing this key (or, for a section, any key in it) takes effect only after restart.
/// Unknown keys give `false`.
pub fn requires_restart(key: &str) -> bool {
    KEYS.iter()
        .any(|i| !i.live && (i.key == key || under(i.key, key)))
}

fn bound(x: f64, integer: bool) -> Value {
    if integer {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
}

fn leaf_schema(info: &KeyInfo, default: &Value) -> Value {
    let ty = match default {
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::Array(_) => "array",
        _ => "string",
    };
    let mut s = json!({ "description": info.description, "type": ty, "default": default });
    match info.constraint {
        Constraint::Range {
            min,
            max,
            min_exclusive,
        } => {
            let bound_key = if min_exclusive {
                "exclusiveMinimum"
            } else {
                "minimum"
            };
            s[bound_key] = bound(min, ty == "integer");
            s["maximum"] = bound(max, ty == "integer");
        }
        Constraint::OneOf(values) => s["enum"] = json!(values),
        Constraint::AbsolutePathOrEmpty { max_bytes } => {
            s["pattern"] = json!("^(/.*)?$");
            s["maxLength"] = json!(max_bytes);
        }
        Constraint::StringList {
            allowed,
            max_items,
            max_item_bytes,
        } => {
            s["items"] = json!({ "type": "string", "minLength": 1, "maxLength": max_item_bytes });
            if let Some(values) = allowed {
                s["items"]["enum"] = json!(values);
            }
            s["uniqueItems"] = json!(true);
            s["maxItems"] = json!(max_items);
        }
        Constraint::RequiredCapabilities => {
            use crate::variety::required::{MAX_NAME_BYTES, MAX_REQUIRED};
            let name = json!({"type": "string", "minLength": 1, "maxLength": MAX_NAME_BYTES});
            s["items"] = json!({"oneOf": [name, {
                "type": "object",
                "additionalProperties": false,
                "required": ["capability"],
                "properties": {
                    "capability": name,
                    "weight": {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000, "default": 1},
                    "severity": {"enum": crate::variety::required::Severity::NAMES, "default": "medium"},
                },
            }]});
            s["maxItems"] = json!(MAX_REQUIRED);
        }
        Constraint::KeywordRules => {
            use crate::variety::required::{MAX_KEYWORDS, MAX_NAME_BYTES, MAX_RULES};
            let name = json!({"type": "string", "minLength": 1, "maxLength": MAX_NAME_BYTES});
            s["items"] = json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["capability", "keywords"],
                "properties": {
                    "capability": name,
                    "keywords": {"type": "array", "items": name, "minItems": 1, "maxItems": MAX_KEYWORDS},
                },
            });
            s["maxItems"] = json!(MAX_RULES);
        }
        Constraint::Address | Constraint::Bool | Constraint::Any => {}
    }
    if ty == "string" && s.get("maxLength").is_none() {
        s["maxLength"] = json!(MAX_STRING_BYTES);
    }
    if !info.live {
        s["x-requires-restart"] = json!(true);
    }
    if !info.enforced {
        s["x-enforced"] = json!(false);
        s["description"] = json!(format!("{} ({NOT_ENFORCED})", info.description));
    }
    s
}

/// JSON Schema (draft 2020-12) of the whole configuration, generated from [`KEYS`] with defaults
/// from [`Config::default`]. `x-requires-restart` marks keys that are not applied live,
/// `x-enforced: false` keys that nothing reads yet.
pub fn schema() -> Value {
    fn node(prefix: &str, default: &Value) -> Value {
        match (default, key_info(prefix)) {
            (Value::Object(map), _) => {
                let properties: Map<String, Value> = map
                    .iter()
                    .map(|(k, v)| (k.clone(), node(&join(prefix, k), v)))
                    .collect();
                json!({ "type": "object", "additionalProperties": false, "properties": properties })
            }
            (_, Some(info)) => leaf_schema(info, default),
            _ => json!({}),
        }
    }
    let mut root = node("", &Config::default().json());
    root["properties"]["servers"] = servers_schema();
    root["properties"]["checks"] = checks_schema();
    root["properties"]["actions"] = actions_schema();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["title"] = json!("vsm-daemon configuration");
    root
}

/// Schema of `[[servers]]` entries (see `crate::spec::ServerSpec`).
fn servers_schema() -> Value {
    serde_json::from_str(SERVERS_SCHEMA).unwrap_or_default()
}

/// Schema of `[[checks]]` entries (see `monitor::checks::spec::CheckSpec`); the limits come
/// from the checks' constants.
fn checks_schema() -> Value {
    use crate::monitor::checks::spec as c;
    let mut schema: Value = serde_json::from_str(CHECKS_SCHEMA).unwrap_or_default();
    schema["maxItems"] = c::MAX_CHECKS.into();
    let p = &mut schema["items"]["properties"];
    p["target"]["maxLength"] = c::MAX_TARGET_BYTES.into();
    p["argv"]["maxItems"] = c::MAX_ARGV.into();
    p["expect_body"]["maxLength"] = c::MAX_EXPECT_BODY_BYTES.into();
    p["every_ms"]["minimum"] = c::MIN_EVERY_MS.into();
    p["every_ms"]["maximum"] = c::MAX_INTERVAL_MS.into();
    p["timeout_ms"]["maximum"] = c::MAX_INTERVAL_MS.into();
    p["actions"]["maxItems"] = c::MAX_ACTIONS_PER_CHECK.into();
    schema
}

/// Schema of `[actions.NAME]` tables (see `monitor::actions::ActionSpec`).
fn actions_schema() -> Value {
    let mut schema: Value = serde_json::from_str(ACTIONS_SCHEMA).unwrap_or_default();
    schema["maxProperties"] = crate::monitor::actions::MAX_ACTIONS.into();
    schema
}

// The three schemas above as JSON text, parsed when the schema is asked for: as `json!` code
// they were about 12 kB of the binary, as text 5 kB. Keys in the order the schema prints them.

/// [`servers_schema`].
const SERVERS_SCHEMA: &str = r##"{
  "description": "MCP servers declared in the file; servers registered over the API live in the state directory",
  "items": {
    "additionalProperties": false,
    "properties": {
      "allow_capabilities": {
        "default": [],
        "description": "capabilities in security.blocked_capabilities this server may have anyway",
        "items": {"type": "string"},
        "type": "array"
      },
      "args": {"default": [], "items": {"type": "string"}, "type": "array"},
      "autostart": {"default": true, "type": "boolean"},
      "backoff_initial_ms": {
        "description": "first restart delay",
        "minimum": 10,
        "type": "integer"
      },
      "backoff_max_ms": {
        "description": "largest restart delay",
        "minimum": 10,
        "type": "integer"
      },
      "call_timeout_ms": {"description": "tool-call deadline", "minimum": 10, "type": "integer"},
      "capabilities": {"default": [], "items": {"type": "string"}, "type": "array"},
      "command": {"description": "program, looked up on PATH", "minLength": 1, "type": "string"},
      "cwd": {"description": "absolute working directory", "type": "string"},
      "env": {"additionalProperties": {"type": "string"}, "default": {}, "type": "object"},
      "id": {"pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$", "type": "string"},
      "limits": {
        "additionalProperties": false,
        "properties": {
          "gid": {"minimum": 0, "type": "integer"},
          "max_cpu_seconds": {"minimum": 0, "type": "integer"},
          "max_memory_mb": {"minimum": 0, "type": "integer"},
          "max_open_files": {"minimum": 0, "type": "integer"},
          "uid": {"minimum": 0, "type": "integer"}
        },
        "type": "object"
      },
      "max_failures": {"maximum": 1000, "minimum": 1, "type": "integer"}
    },
    "required": ["id", "command"],
    "type": "object"
  },
  "type": "array"
}"##;

/// [`checks_schema`] without the limits it takes from constants.
const CHECKS_SCHEMA: &str = r##"{
  "description": "operator-declared checks; each reports an observation of rule check:NAME (family health) per run",
  "items": {
    "additionalProperties": false,
    "properties": {
      "actions": {
        "items": {"pattern": "^(log|restart_server:.+|webhook:.+|exec:.+)$", "type": "string"},
        "type": "array"
      },
      "argv": {
        "description": "exec: program and arguments, no shell",
        "items": {"type": "string"},
        "minItems": 1,
        "type": "array"
      },
      "every_ms": {"default": 30000, "type": "integer"},
      "expect_body": {
        "description": "http: substring of the first 64 KiB of the body",
        "minLength": 1,
        "type": "string"
      },
      "expect_exit": {
        "default": 0,
        "description": "exec: exit code that counts as up",
        "type": "integer"
      },
      "expect_status": {
        "description": "http: the status that counts as up (default any 2xx)",
        "maximum": 599,
        "minimum": 100,
        "type": "integer"
      },
      "failures_before_alert": {"default": 2, "maximum": 1000, "minimum": 1, "type": "integer"},
      "kind": {"enum": ["tcp", "http", "exec", "file", "process", "filesystem"]},
      "max_age_s": {"description": "file: down when older", "minimum": 0, "type": "integer"},
      "max_size": {
        "description": "file: down when larger (bytes)",
        "minimum": 0,
        "type": "integer"
      },
      "max_used_percent": {
        "default": 90.0,
        "description": "filesystem: down when more is used",
        "maximum": 100,
        "minimum": 0,
        "type": "number"
      },
      "min_size": {
        "description": "file: down when smaller (bytes)",
        "minimum": 0,
        "type": "integer"
      },
      "name": {"pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$", "type": "string"},
      "severity": {"default": "critical", "enum": ["info", "warning", "critical"]},
      "successes_before_clear": {"default": 2, "maximum": 1000, "minimum": 1, "type": "integer"},
      "target": {
        "description": "tcp: host:port; http: http:// or https:// URL (https trusts the built-in roots plus security.ca_file); file: absolute path; process: absolute pid file or process name (at most 15 bytes); filesystem: absolute mount point; not for exec",
        "type": "string"
      },
      "timeout_ms": {"default": 5000, "minimum": 10, "type": "integer"}
    },
    "required": ["name", "kind"],
    "type": "object"
  },
  "type": "array"
}"##;

/// [`actions_schema`] without `maxProperties`.
const ACTIONS_SCHEMA: &str = r##"{
  "additionalProperties": {
    "additionalProperties": false,
    "properties": {
      "argv": {
        "description": "exec: program and arguments; the alert's fields are in VSM_ALERT_* variables",
        "items": {"type": "string"},
        "minItems": 1,
        "type": "array"
      },
      "kind": {"enum": ["webhook", "exec"]},
      "timeout_ms": {"default": 10000, "maximum": 600000, "minimum": 10, "type": "integer"},
      "token_file": {
        "description": "webhook: absolute path of a file whose first line is sent as a bearer token",
        "type": "string"
      },
      "url": {
        "description": "webhook: http:// or https:// URL the alert is POSTed to as JSON",
        "type": "string"
      }
    },
    "required": ["kind"],
    "type": "object"
  },
  "description": "actions that checks' alerts may run as webhook:NAME or exec:NAME",
  "propertyNames": {"pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$"},
  "type": "object"
}"##;

fn constraint_text(info: &KeyInfo, default: &Value) -> String {
    let float = default.as_number().is_some_and(serde_json::Number::is_f64);
    let num = |x: f64| {
        if float {
            format!("{x:?}")
        } else {
            format!("{x}")
        }
    };
    let text = match info.constraint {
        Constraint::Range {
            min,
            max,
            min_exclusive: false,
        } => format!("{}..={}", num(min), num(max)),
        Constraint::Range { min, max, .. } => {
            format!("greater than {}, at most {}", num(min), num(max))
        }
        Constraint::OneOf(values) => format!("one of {}", values.join(", ")),
        Constraint::Address => "IP:port".into(),
        Constraint::AbsolutePathOrEmpty { max_bytes } => {
            format!("absolute path or empty, at most {max_bytes} bytes")
        }
        Constraint::StringList {
            allowed: Some(values),
            ..
        } => format!("list of distinct {}", values.join(", ")),
        Constraint::StringList {
            allowed: None,
            max_items,
            max_item_bytes,
        } => format!(
            "list of at most {max_items} distinct strings of at most {max_item_bytes} bytes"
        ),
        Constraint::Bool => "true or false".into(),
        Constraint::RequiredCapabilities => {
            "list of names or {capability, weight, severity} tables".into()
        }
        Constraint::KeywordRules => "list of {capability, keywords} tables".into(),
        Constraint::Any if default.is_string() => {
            format!("string of at most {MAX_STRING_BYTES} bytes")
        }
        Constraint::Any => kind(default).trim_start_matches("a ").into(),
    };
    let text = if info.live {
        text
    } else {
        text + "; restart required"
    };
    if info.enforced {
        text
    } else {
        format!("{text}; {NOT_ENFORCED}")
    }
}

fn toml_value(value: &Value) -> String {
    let mut out = String::new();
    write_toml(value, &mut out);
    out
}

/// `value` written as an inline TOML value (tables as `{"key" = value, ...}`, keys always
/// quoted). Null members of tables are left out, as a `None` is; JSON has no other null in a
/// configuration, and one inside an array would be written as nothing, which the parser
/// refuses.
fn write_toml(value: &Value, out: &mut String) {
    match value {
        Value::Null => {}
        Value::String(s) => write_toml_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_toml(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            let mut first = true;
            for (key, item) in map.iter().filter(|(_, v)| !v.is_null()) {
                if !first {
                    out.push_str(", ");
                }
                first = false;
                write_toml_string(key, out);
                out.push_str(" = ");
                write_toml(item, out);
            }
            out.push('}');
        }
        // Booleans, integers and floats are written alike (serde_json keeps a float's `.0`).
        other => out.push_str(&other.to_string()),
    }
}

/// A TOML basic string: quotation mark, backslash and control characters escaped.
fn write_toml_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() && c < '\u{80}' => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The example configuration: every key with its default value, each preceded by a
/// `# description (constraint)` comment, sections in [`KEYS`] order.
/// `packaging/config.example.toml` is this text.
pub fn example_toml() -> String {
    let defaults = flatten(&Config::default().json());
    let mut out = String::from(
        "# vsm-daemon configuration. Every key is shown with its default value.\n\
         # Generated by vsm_daemon::config::example_toml(); do not edit by hand.\n",
    );
    let mut section = "";
    for info in KEYS {
        let (sec, name) = info.key.rsplit_once('.').unwrap_or(("", info.key));
        if sec != section {
            out.push_str(&format!("\n[{sec}]\n"));
            section = sec;
        }
        let default = defaults.get(info.key).unwrap_or(&Value::Null);
        out.push_str(&format!(
            "# {} ({})\n",
            info.description,
            constraint_text(info, default)
        ));
        out.push_str(&format!("{name} = {}\n", toml_value(default)));
    }
    out.push_str(SERVERS_EXAMPLE);
    out.push_str(CHECKS_EXAMPLE);
    out
}

/// The commented `[[checks]]` and `[actions.*]` example at the end of the example file.
const CHECKS_EXAMPLE: &str = r#"
# Checks (at most 64): each runs every `every_ms` (never two runs of one check at once), is
# down when it fails or takes longer than `timeout_ms`, and reports rule `check:NAME`.
# Kinds and their keys: tcp (target = "host:port"), http (target = "http://..." URL,
# expect_status = 200, expect_body = "ok"), exec (argv = [...], expect_exit = 0), file
# (target = absolute path, max_age_s, min_size, max_size), process (target = a pid file or a
# process name as in /proc/PID/comm), filesystem (target = mount point, max_used_percent = 90).
# Common keys: every_ms = 30000, timeout_ms = 5000, failures_before_alert = 2,
# successes_before_clear = 2, severity = "critical", actions = ["log",
# "restart_server:ID", "webhook:NAME", "exec:NAME"] (NAME: an [actions.NAME] of that kind).
#
# [[checks]]
# name = "upstream"
# kind = "tcp"
# target = "127.0.0.1:5432"
# every_ms = 30000
# timeout_ms = 5000
# actions = ["log", "webhook:ops"]
#
# [[checks]]
# name = "backup-script"
# kind = "exec"
# argv = ["/usr/local/bin/check-backup", "--quiet"]
# expect_exit = 0
#
# [actions.ops]
# kind = "webhook"
# url = "http://127.0.0.1:9000/alert"
# token_file = "/etc/vsm-daemon/ops.token"
# timeout_ms = 10000
#
# [actions.notify]
# kind = "exec"
# argv = ["/usr/local/bin/notify", "--urgent"]
# timeout_ms = 10000
"#;

/// The commented `[[servers]]` example at the end of the example file.
const SERVERS_EXAMPLE: &str = r#"
# MCP servers declared here are started by the daemon (autostart) and cannot be unregistered
# over the API; servers registered with `vsm-daemon mcp register` are kept in the state dir.
# Per server: args, env (table), cwd (absolute), capabilities, allow_capabilities (blocked
# capabilities it may have anyway), autostart, call_timeout_ms, backoff_initial_ms,
# backoff_max_ms, max_failures, and [servers.limits] max_open_files, max_cpu_seconds,
# max_memory_mb, uid, gid. Unset values take the [mcp_servers] defaults.
#
# [[servers]]
# id = "time"
# command = "python3"
# args = ["-m", "mcp_server_time", "--local-timezone", "UTC"]
# capabilities = ["time"]
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn parse_err(text: &str) -> ConfigError {
        Config::from_toml_str(text, Some(Path::new("config.toml"))).expect_err(text)
    }

    /// The key named by the error of a failed call.
    fn err_key<T: fmt::Debug>(result: Result<T, ConfigError>) -> String {
        result
            .expect_err("should fail")
            .key()
            .unwrap_or("-")
            .to_owned()
    }

    #[test]
    fn table_matches_struct() {
        let flat: BTreeSet<String> = flatten(&Config::default().json()).into_keys().collect();
        let table: BTreeSet<String> = KEYS.iter().map(|i| i.key.to_owned()).collect();
        assert_eq!(flat, table);
        assert_eq!(table.len(), KEYS.len(), "duplicate key in KEYS");
    }

    #[test]
    fn checks_and_actions_are_validated_with_their_references() {
        let good = r#"
[[checks]]
name = "db"
kind = "tcp"
target = "127.0.0.1:5432"
actions = ["log", "webhook:ops", "exec:notify", "restart_server:time"]

[actions.ops]
kind = "webhook"
url = "http://127.0.0.1:9000/alert"

[actions.notify]
kind = "exec"
argv = ["/bin/true"]
"#;
        let config = Config::from_toml_str(good, None).expect("valid");
        assert_eq!(config.checks.len(), 1);
        assert_eq!(config.checks[0].every_ms, 30_000);
        assert_eq!(config.actions.len(), 2);
        // It survives the JSON round trip that overrides go through.
        assert_eq!(config.with_overrides(&json!({})), Ok(config.clone()));
        // Each error names the entry's field and where it is in the file.
        let bad = |from: &str, to: &str| match parse_err(&good.replace(from, to)) {
            ConfigError::Parse {
                line,
                column,
                message,
                ..
            } => (
                line,
                column,
                message.split(':').next().unwrap_or("").to_string(),
            ),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            bad("webhook:ops", "webhook:nope"),
            (6, 11, "checks[0].actions[1]".into())
        );
        assert_eq!(
            bad("exec:notify", "webhook:notify"),
            (6, 11, "checks[0].actions[2]".into())
        );
        assert_eq!(
            bad("127.0.0.1:5432", "nowhere"),
            (5, 10, "checks[0].target".into())
        );
        assert_eq!(
            bad("http://127.0.0.1:9000/alert", "ftp://x"),
            (10, 7, "actions.ops.url".into())
        );
        let twice =
            format!("{good}\n[[checks]]\nname = \"db\"\nkind = \"file\"\ntarget = \"/x\"\n");
        let dup = parse_err(&twice).to_string();
        assert!(
            dup.starts_with("config.toml:17:8: checks[1].name: duplicate"),
            "{dup}"
        );
        // Without a file (overrides) the key is still named.
        let mut config = config;
        config.checks[0].every_ms = 1;
        assert_eq!(err_key(config.validate()), "checks[0].every_ms");
        // Unknown fields and kinds are parse errors with a line and column.
        match parse_err(&good.replace("kind = \"tcp\"", "kind = \"smtp\"")) {
            ConfigError::Parse { line, column, .. } => assert!(line > 1 && column > 0),
            other => panic!("{other:?}"),
        }
        // Neither is settable by an override.
        assert!(Config::check_patch(&json!({"checks": []})).is_err());
        assert!(Config::check_patch(&json!({"actions": {"x": {}}})).is_err());
    }

    #[test]
    fn overrides_keep_every_character_through_toml() {
        // Overrides are merged as JSON and read back through TOML: strings with quotes,
        // backslashes, control characters and non-ASCII, keys that are not bare, absent
        // options and nested tables must all come back as they were.
        let text = r#"
[[servers]]
id = "odd"
command = "/bin/echo"
args = ["q \" b \\ t \t n \n", "c \u0001 del \u007F", "ünï€ode 🙂", ""]
env = { "A.B" = "x=y", "with space" = "\\", "é" = "\"\"" }
call_timeout_ms = 5000
limits = { max_open_files = 64 }

[[servers]]
id = "plain"
command = "/bin/true"
"#;
        let config = Config::from_toml_str(text, None).expect("valid");
        assert_eq!(config.servers[0].args[1], "c \u{1} del \u{7f}");
        assert_eq!(config.servers[1].cwd, None);
        assert_eq!(config.with_overrides(&json!({})), Ok(config.clone()));
        let odd = "a\"b\\c é";
        let set = config.with_overrides(&json!({"security": {"allowed_capabilities": [odd]}}));
        assert_eq!(
            set.map(|c| c.security.allowed_capabilities),
            Ok(vec![odd.to_string()])
        );
    }

    #[test]
    fn defaults_validate() {
        assert_eq!(Config::default().validate(), Ok(()));
        assert_eq!(Config::from_toml_str("", None), Ok(Config::default()));
    }

    #[test]
    fn unknown_key_reports_position() {
        let err = parse_err("[daemon]\nfoo = 1\n");
        assert!(
            matches!(
                err,
                ConfigError::Parse {
                    line: 2,
                    column: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with("config.toml:2:1: unknown field `foo`, expected one of"),
            "{text}"
        );
    }

    #[test]
    fn type_error_reports_line() {
        let err = parse_err("# c\n[daemon]\nlog_buffer_lines = \"x\"\n");
        assert!(matches!(err, ConfigError::Parse { line: 3, .. }), "{err:?}");
        let err = parse_err("[daemon]\nhttp_listen = \n");
        assert!(matches!(err, ConfigError::Parse { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn unknown_section_reported() {
        let err = parse_err("[daemon]\nlog_level = \"debug\"\n[nope]\nx = 1\n");
        let ConfigError::Parse { line, message, .. } = err else {
            panic!("{err:?}")
        };
        assert!(line == 3 && message.contains("nope"), "{line}: {message}");
    }

    #[test]
    fn out_of_range_in_file_names_key() {
        let err = parse_err("[monitoring]\nhealth_check_interval_ms = 5\n");
        let text = "monitoring.health_check_interval_ms: must be between 100 and 86400000 (got 5)";
        assert_eq!(err.to_string(), text);
        assert_eq!(err.key(), Some("monitoring.health_check_interval_ms"));
        assert_eq!(
            parse_err("[daemon]\nlog_level = \"loud\"\n").key(),
            Some("daemon.log_level")
        );
        let err = parse_err("[monitoring.alert_thresholds]\nerror_rate_max_percent = nan\n");
        assert_eq!(
            err.key(),
            Some("monitoring.alert_thresholds.error_rate_max_percent")
        );
    }

    #[test]
    fn every_range_violation_found() {
        let (base, defaults) = (Config::default(), flatten(&Config::default().json()));
        for info in KEYS {
            let Constraint::Range {
                min,
                max,
                min_exclusive,
            } = info.constraint
            else {
                continue;
            };
            let float = defaults[info.key].is_f64();
            let set = |x: f64| {
                base.with_overrides(&nest(
                    info.key,
                    if float { json!(x) } else { json!(x as i64) },
                ))
            };
            for bad in [min - 1.0, max + 1.0]
                .into_iter()
                .chain(min_exclusive.then_some(min))
            {
                assert_eq!(err_key(set(bad)), info.key, "{bad}");
            }
            for good in [max].into_iter().chain((!min_exclusive).then_some(min)) {
                assert!(set(good).is_ok(), "{}: {good}", info.key);
            }
        }
    }

    #[test]
    fn discovery_keys() {
        let base = Config::default();
        let refused = |patch: Value| {
            base.with_overrides(&patch)
                .expect_err("refused")
                .to_string()
        };
        let e = refused(json!({"mcp_servers": {"discovery_sources": ["registry", "pypi"]}}));
        assert!(e.contains("PyPI has no search API"), "{e}");
        let e = refused(json!({"mcp_servers": {"discovery_sources": ["local"]}}));
        assert!(e.contains("now 'catalog'"), "{e}");
        let e = refused(json!({"mcp_servers": {"auto_discovery_interval_ms": 500}}));
        assert!(e.contains("0 (off) or at least 1000"), "{e}");
        for url in [
            "ftp://x",
            "http://",
            "http://a b/",
            "http://h/x?q=1",
            "registry",
        ] {
            let e = refused(json!({"mcp_servers": {"registry_url": url}}));
            assert!(e.starts_with("mcp_servers.registry_url"), "{url}: {e}");
        }
        let ok = base.with_overrides(&json!({"mcp_servers": {
            "discovery_sources": ["catalog", "registry", "npm", "github"],
            "auto_discovery_interval_ms": 0,
            "registry_url": "http://127.0.0.1:9/base/",
            "npm_registry_url": "",
        }}));
        assert!(ok.is_ok(), "{ok:?}");
        assert_eq!(base.mcp_servers.discovery_sources, ["catalog"]);
    }

    #[test]
    fn other_constraints() {
        let cases = [
            ("daemon.http_listen", json!("localhost:80")),
            ("daemon.socket", json!("relative.sock")),
            ("daemon.socket", json!(format!("/{}", "s".repeat(107)))),
            ("daemon.pid_file", json!("pid")),
            ("mcp_servers.discovery_sources", json!(["npm", "cpan"])),
            ("mcp_servers.discovery_sources", json!(["npm", "npm"])),
            ("http.allowed_hosts", json!([""])),
            ("security.blocked_capabilities", json!(["web"])),
            ("security.api_token_file", json!("/etc/token")),
        ];
        let base = Config::default()
            .with_overrides(&json!({"security": {"api_token": "0123456789abcdef"}}));
        let base = base.expect("token");
        for (key, value) in cases {
            assert_eq!(err_key(base.with_overrides(&nest(key, value))), key);
        }
        assert!(base
            .with_overrides(&nest("daemon.http_listen", json!("[::1]:0")))
            .is_ok());
    }

    #[test]
    fn lists_and_strings_are_bounded_with_short_messages() {
        let base = Config::default();
        let hosts = |n: usize, len: usize| {
            let items: Vec<String> = (0..n).map(|i| format!("{i:0len$}")).collect();
            nest("http.allowed_hosts", json!(items))
        };
        let max = base
            .with_overrides(&hosts(256, 255))
            .expect("256 hosts of 255 bytes");
        assert_eq!(max.http.allowed_hosts.len(), 256);
        for patch in [hosts(257, 10), hosts(100_000, 10), hosts(2, 256)] {
            let err = base
                .with_overrides(&patch)
                .expect_err("too many or too long");
            assert_eq!(err.key(), Some("http.allowed_hosts"));
            assert!(err.to_string().len() < 200, "{err}");
        }
        let caps = nest("security.allowed_capabilities", json!(["x".repeat(65)]));
        assert_eq!(
            err_key(base.with_overrides(&caps)),
            "security.allowed_capabilities"
        );
        let long = nest("daemon.http_listen", json!("1".repeat(100_000)));
        let err = base.with_overrides(&long).expect_err("long");
        assert!(err.to_string().len() < 200, "{err}");
        let cut = shown(&json!(vec!["host"; 100_000]));
        assert!(cut.starts_with("[\"host\",") && cut.ends_with('…') && cut.len() < 80);
        assert_eq!(shown(&json!(["a"])), "[\"a\"]");
        let token = nest(SECRET_KEY, json!("t".repeat(MAX_STRING_BYTES + 1)));
        assert_eq!(err_key(base.with_overrides(&token)), SECRET_KEY);
        let schema = schema();
        let node = &schema["properties"]["http"]["properties"]["allowed_hosts"];
        assert_eq!(
            (
                node["maxItems"].as_u64(),
                node["items"]["maxLength"].as_u64()
            ),
            (Some(256), Some(255))
        );
        let token = &schema["properties"]["security"]["properties"]["api_token"];
        assert_eq!(token["maxLength"], json!(MAX_STRING_BYTES));
    }

    /// The list check is one pass: duplicates are found with a set (the old `items[..i]`
    /// scan made 100,000 hosts cost ~5e9 comparisons), and an over-long list is refused by
    /// its count before any item is looked at.
    #[test]
    fn list_check_is_one_pass() {
        let items: Vec<Value> = (0..256).map(|i| json!(format!("h{i}"))).collect();
        assert!(check_list(&items, None, 256, 255).is_ok());
        let mut dup = items.clone();
        dup[255] = json!("h0");
        assert_eq!(
            check_list(&dup, None, 256, 255),
            Err("duplicate item \"h0\"".into())
        );
        // Over the limit, the items are not even looked at.
        let huge = vec![Value::Null; 100_000];
        assert!(check_list(&huge, None, 256, 255)
            .expect_err("count")
            .contains("at most 256 items (got 100000)"));
    }

    #[test]
    fn overrides_reject_unknown_keys_and_types() {
        let base = Config::default();
        let err = base
            .with_overrides(&json!({"daemon": {"nope": 1}}))
            .expect_err("unknown");
        assert_eq!(
            err,
            ConfigError::UnknownKey {
                key: "daemon.nope".into()
            }
        );
        assert_eq!(err.to_string(), "unknown configuration key 'daemon.nope'");
        let cases = [
            (
                json!({"monitoring": {"alert_thresholds": {"x": 1}}}),
                "monitoring.alert_thresholds.x",
            ),
            (json!({"nope": {}}), "nope"),
            (
                json!({"http": {"max_connections": "many"}}),
                "http.max_connections",
            ),
            (
                json!({"http": {"max_connections": 1.5}}),
                "http.max_connections",
            ),
            (
                json!({"http": {"allowed_hosts": "a"}}),
                "http.allowed_hosts",
            ),
            (json!({"daemon": 3}), "daemon"),
        ];
        for (patch, key) in cases {
            assert_eq!(err_key(base.with_overrides(&patch)), key);
        }
        let err = base
            .with_overrides(&json!({"security": {"api_token": 12345}}))
            .expect_err("t");
        assert!(!err.to_string().contains("12345"), "{err}");
        assert_eq!(base.with_overrides(&Value::Null), Ok(base.clone()));
        let ok = base.with_overrides(&json!({"consciousness": {"learning_rate": 1}}));
        assert_eq!(ok.expect("int for float").consciousness.learning_rate, 1.0);
    }

    #[test]
    fn api_tokens_are_checked() {
        for bad in [
            " ",
            "",
            "\t\t",
            " 0123456789abcdef",
            "0123456789abcdef ",
            "0123456789abcdef\n",
            "0123456789\u{7}abcdef",
            "0123456789 abcdef",
            "short",
            "0123456789abcdeé",
        ] {
            assert!(check_api_token(bad).is_err(), "{bad:?}");
        }
        assert!(check_api_token("0123456789abcdef").is_ok());
        assert!(check_api_token(&"x".repeat(MAX_TOKEN_CHARS + 1)).is_err());
        for (value, key) in [
            (json!(" "), "security.api_token"),
            (json!("0123456789abcdef\u{1}"), "security.api_token"),
            (json!(" 0123456789abcdef "), "security.api_token"),
        ] {
            let err = Config::default()
                .with_overrides(&json!({"security": {"api_token": value}}))
                .expect_err("bad token");
            assert_eq!(err.key(), Some(key), "{err}");
            assert!(!err.to_string().contains("0123456789"), "{err}");
        }
    }

    #[test]
    fn non_loopback_listen_needs_a_configured_token() {
        let base = Config::default();
        let err = base
            .with_overrides(&json!({"daemon": {"http_listen": "0.0.0.0:0"}}))
            .expect_err("no token");
        assert_eq!(err.key(), Some("daemon.http_listen"));
        let with_token = json!({"daemon": {"http_listen": "0.0.0.0:0"},
                                "security": {"api_token": "0123456789abcdef"}});
        assert!(base.with_overrides(&with_token).is_ok());
        let with_file = json!({"daemon": {"http_listen": "[::]:4000"},
                               "security": {"api_token_file": "/etc/vsm/token"}});
        assert!(base.with_overrides(&with_file).is_ok());
        assert!(base
            .with_overrides(&json!({"daemon": {"http_listen": "[::1]:0"}}))
            .is_ok());
        let err = parse_err("[daemon]\nhttp_listen = \"192.0.2.1:80\"\n");
        assert_eq!(err.key(), Some("daemon.http_listen"));
    }

    #[test]
    fn origins_are_normalized_and_checked() {
        for (given, canonical) in [
            ("http://localhost:4000", "http://localhost:4000"),
            ("HTTPS://Edge.Example", "https://edge.example:443"),
            ("http://edge.example", "http://edge.example:80"),
            ("http://[::1]:8080", "http://[::1]:8080"),
        ] {
            assert_eq!(normalize_origin(given).as_deref(), Ok(canonical), "{given}");
        }
        for bad in [
            "localhost:4000",
            "ftp://x",
            "http://",
            "http://x/path",
            "http://u@x",
            "http://x:0",
            "http://x:99999",
            "http://[::1",
            "http://[::1]x",
            "null",
        ] {
            assert!(normalize_origin(bad).is_err(), "{bad}");
        }
        let base = Config::default();
        let err = base
            .with_overrides(&json!({"http": {"allowed_origins": ["app.example"]}}))
            .expect_err("no scheme");
        assert_eq!(err.key(), Some("http.allowed_origins"));
        let many: Vec<String> = (0..=MAX_ALLOWED_ORIGINS)
            .map(|i| format!("http://h{i}.example"))
            .collect();
        let err = base
            .with_overrides(&json!({"http": {"allowed_origins": many}}))
            .expect_err("too many");
        assert_eq!(err.key(), Some("http.allowed_origins"));
    }

    #[test]
    fn stored_overrides_keep_unknown_keys_apart() {
        let doc = json!({
            "daemon": {"log_level": "debug", "future": {"deep": 1}},
            "from_2030": {"x": 1},
            "http": {"max_connections": 9, "gone": null},
            "security": 3,
        });
        let split = StoredOverrides::split(&doc);
        assert_eq!(split.unknown, ["daemon.future.deep", "from_2030.x"]);
        assert_eq!(
            split.known,
            json!({"daemon": {"log_level": "debug"}, "http": {"max_connections": 9}, "security": 3})
        );
        let warning = split.warning().expect("warning");
        assert!(
            warning.contains("daemon.future.deep, from_2030.x;"),
            "{warning}"
        );
        let clean = StoredOverrides::split(&json!({"daemon": {"log_level": "debug"}}));
        assert_eq!((clean.unknown.len(), clean.warning()), (0, None));
        let many: Map<String, Value> = (0..15).map(|i| (format!("k{i}"), json!(1))).collect();
        let warning = StoredOverrides::split(&Value::Object(many)).warning();
        assert!(warning
            .expect("w")
            .ends_with(" and 5 more; they are kept in the file but not applied"));
        assert_eq!(StoredOverrides::split(&json!([1])).known, json!([1]));
    }

    #[test]
    fn patches_deeper_than_the_parser_allows_never_reach_merge_patch() {
        let deep = format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200));
        assert!(serde_json::from_str::<Value>(&deep).is_err());
        let ok = format!("{}1{}", "{\"a\":".repeat(100), "}".repeat(100));
        let patch: Value = serde_json::from_str(&ok).expect("100 levels parse");
        assert_eq!(
            err_key(Config::check_patch(&patch)).matches('.').count(),
            99
        );
        let mut doc = json!({});
        merge_patch(&mut doc, &patch);
        assert_eq!(doc, patch);
    }

    #[test]
    fn merge_patch_null_removes() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "d": [1], "e": "x"});
        merge_patch(
            &mut doc,
            &json!({"a": {"b": null, "z": {"y": 1}}, "d": {"k": 1}, "e": null}),
        );
        assert_eq!(doc, json!({"a": {"c": 2, "z": {"y": 1}}, "d": {"k": 1}}));
        merge_patch(&mut doc, &json!(["whole"]));
        assert_eq!(doc, json!(["whole"]));
    }

    #[test]
    fn override_layers_and_reset() {
        let file = Config::from_toml_str("[daemon]\nlog_level = \"debug\"\n", None).expect("file");
        let level =
            |overrides: &Value| file.with_overrides(overrides).expect("ok").daemon.log_level;
        let mut stored = json!({});
        merge_patch(
            &mut stored,
            &patch_for_set("daemon.log_level", "trace").expect("set"),
        );
        assert_eq!(level(&stored), "trace");
        merge_patch(
            &mut stored,
            &patch_for_set("daemon.log_level", "default").expect("reset"),
        );
        assert_eq!(level(&stored), "debug");
        // A null left inside the overrides document also means "no override".
        assert_eq!(level(&json!({"daemon": {"log_level": null}})), "debug");
    }

    #[test]
    fn patch_for_set_typing() {
        let cases = [
            ("monitoring.health_check_interval_ms", "5000", json!(5000)),
            ("daemon.log_level", "debug", json!("debug")),
            (
                "security.allowed_capabilities",
                "\"a,b\"",
                json!(["a", "b"]),
            ),
            ("security.allowed_capabilities", "a, b", json!(["a", "b"])),
            ("http.allowed_hosts", r#"["x.lan"]"#, json!(["x.lan"])),
            ("http.allowed_hosts", "", json!([])),
            (
                "security.api_token",
                "0123456789abcdef",
                json!("0123456789abcdef"),
            ),
            ("consciousness.learning_rate", "0.5", json!(0.5)),
            ("daemon.auto_start_services", "false", json!(false)),
            (
                "monitoring.alert_thresholds.variety_ratio_min",
                "null",
                Value::Null,
            ),
            ("daemon.log_level", "default", Value::Null),
        ];
        for (key, text, leaf) in cases {
            assert_eq!(
                patch_for_set(key, text),
                Ok(nest(key, leaf)),
                "{key} {text}"
            );
        }
        assert_eq!(
            patch_for_set("monitoring.health_check_interval_ms", "5000"),
            Ok(json!({"monitoring": {"health_check_interval_ms": 5000}}))
        );
        for (key, text) in [
            ("http.max_connections", "lots"),
            ("daemon.auto_start_services", "yes"),
            ("consciousness.learning_rate", "inf"),
            ("http.allowed_hosts", "[1]"),
        ] {
            assert_eq!(err_key(patch_for_set(key, text)), key);
        }
        assert_eq!(
            patch_for_set("x.y", "1"),
            Err(ConfigError::UnknownKey { key: "x.y".into() })
        );
        assert_eq!(err_key(patch_for_set("daemon", "1")), "daemon");
    }

    #[test]
    fn schema_has_every_key_with_default() {
        let schema = schema();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        for (key, default) in flatten(&Config::default().json()) {
            let mut node = &schema;
            for part in key.split('.') {
                assert_eq!(node["additionalProperties"], false, "{key}");
                node = &node["properties"][part];
            }
            assert_eq!(node["default"], default, "{key}");
            assert!(
                node["description"].is_string() && node["type"].is_string(),
                "{key}"
            );
        }
        let daemon = &schema["properties"]["daemon"]["properties"];
        assert_eq!(daemon["shutdown_timeout_ms"]["minimum"], json!(100));
        assert_eq!(daemon["shutdown_timeout_ms"]["maximum"], json!(300_000));
        assert_eq!(daemon["log_level"]["enum"], json!(LOG_LEVELS));
        // The entries' schemas (JSON text) parse, with the limits of their constants.
        use crate::monitor::checks::spec as c;
        let entries = |name: &str| schema["properties"][name].clone();
        let (servers, checks, actions) =
            (entries("servers"), entries("checks"), entries("actions"));
        assert_eq!(servers["items"]["required"], json!(["id", "command"]));
        assert_eq!(checks["maxItems"], json!(c::MAX_CHECKS));
        let check = &checks["items"]["properties"];
        assert_eq!(check["every_ms"]["minimum"], json!(c::MIN_EVERY_MS));
        assert_eq!(check["timeout_ms"]["maximum"], json!(c::MAX_INTERVAL_MS));
        assert_eq!(
            check["actions"]["maxItems"],
            json!(c::MAX_ACTIONS_PER_CHECK)
        );
        assert_eq!(check["name"]["type"], "string");
        let max_actions = crate::monitor::actions::MAX_ACTIONS;
        assert_eq!(actions["maxProperties"], json!(max_actions));
        assert_eq!(actions["additionalProperties"]["required"], json!(["kind"]));
    }

    /// The keys nothing reads yet (checked with grep over `src/` when they were marked): the
    /// monitors' intervals and thresholds, discovery, the security policy, reflection.
    #[test]
    fn variety_requirements_and_rules_from_the_file_and_from_overrides() {
        let text = r#"
[variety]
required = ["time", {capability = "memory", weight = 2, severity = "high"}]

[[variety.rules]]
capability = "weather"
keywords = ["forecast", "weather report"]
"#;
        let config = Config::from_toml_str(text, None).expect("valid");
        let r = &config.variety.required;
        assert_eq!(r[0], crate::variety::required::Required::named("time"));
        assert_eq!((r[1].weight, r[1].severity.as_str()), (2.0, "high"));
        assert_eq!(config.variety.rules[0].keywords.len(), 2);
        // Refused in the file with where, and in an override with the entry named.
        let bad = "[variety]\nrequired = [\"a\", {capability = \"b\", weight = 0}]\n";
        let e = Config::from_toml_str(bad, None).expect_err("weight 0");
        assert!(
            e.to_string().contains("variety.required: [1]: weight"),
            "{e}"
        );
        let bad = "[variety]\nrequired = [{capability = \"b\", severity = \"urgent\"}]\n";
        let e = Config::from_toml_str(bad, None).expect_err("severity");
        assert!(e.to_string().contains(":2:"), "{e}");
        let patch = patch_for_set("variety.required", r#"["time", {"capability": "time"}]"#)
            .expect("a JSON array");
        let e = Config::default()
            .with_overrides(&patch)
            .expect_err("duplicate");
        assert!(
            e.to_string().contains("[1]: duplicate capability 'time'"),
            "{e}"
        );
        let patch = patch_for_set("variety.required", "time, memory").expect("names");
        let c = Config::default()
            .with_overrides(&patch)
            .expect("names are fine");
        assert_eq!(c.variety.required.len(), 2);
        let patch = json!({"variety": {"rules": "forecast"}});
        assert!(Config::check_patch(&patch).is_err());
        // The capability policy holds for servers declared in the file too.
        let servers = "[[servers]]\nid = \"sh\"\ncommand = \"sh\"\ncapabilities = [\"system\"]\n";
        let e = Config::from_toml_str(servers, None).expect_err("blocked");
        assert!(
            e.to_string()
                .contains("servers[0].capabilities: MCP server 'sh' declares 'system'"),
            "{e}"
        );
        let allowed = format!("{servers}allow_capabilities = [\"system\"]\n");
        assert!(Config::from_toml_str(&allowed, None).is_ok());
        let schema = schema();
        let node = &schema["properties"]["variety"]["properties"]["required"];
        assert_eq!(node["maxItems"], 256);
        assert_eq!(
            node["items"]["oneOf"][1]["properties"]["severity"]["enum"][3],
            "critical"
        );
    }

    /// Every key is read by something today: none is marked anywhere. (`pending` stays, for
    /// the next key that is validated before anything reads it; its marking is tested below.)
    #[test]
    fn every_key_is_enforced_and_nothing_is_marked() {
        assert_eq!(
            not_enforced_keys().count(),
            0,
            "{:?}",
            not_enforced_keys().collect::<Vec<_>>()
        );
        for key in [
            "mcp_servers.discovery_sources",
            "mcp_servers.auto_discovery_interval_ms",
            "mcp_servers.sandbox_timeout_ms",
            "monitoring.variety_check_interval_ms",
            "monitoring.alert_thresholds.variety_ratio_min",
            "security.blocked_capabilities",
            "security.allowed_capabilities",
            "security.security_scan_enabled",
            "security.min_security_score",
            "consciousness.reflection_interval_ms",
            "consciousness.memory_limit",
            "consciousness.auto_insight_generation",
        ] {
            assert!(is_enforced(key), "{key}");
        }
        assert!(!schema().to_string().contains("\"x-enforced\":false"));
        assert_eq!(example_toml().matches(NOT_ENFORCED).count(), 0);
        let c = Config::default()
            .with_overrides(&json!({"consciousness": {"memory_limit": 900}}))
            .expect("valid");
        assert!(c.not_enforced_set().is_empty());
        let marked = pending(live("x.y", "a key", Constraint::Bool));
        assert!(!marked.enforced && marked.key == "x.y");
    }

    #[test]
    fn redaction() {
        let mut c = Config::default();
        assert_eq!(c.to_json_redacted()["security"]["api_token"], "");
        c.security.api_token = "s3cret".into();
        assert_eq!(c.to_json_redacted()["security"]["api_token"], "***");
        assert_eq!(
            c.section_json("security").expect("section")["api_token"],
            "***"
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(c.section_json("monitoring.alert_thresholds").is_some());
        assert_eq!(c.section_json("nope"), None);
        assert_eq!(c.section_json("daemon.log_level"), None);
    }

    #[test]
    fn changed_keys_and_restart() {
        let a = Config::default();
        let b = a.with_overrides(
            &json!({"daemon": {"socket": "/x.sock"}, "http": {"max_connections": 9}}),
        );
        assert_eq!(
            a.changed_keys(&b.expect("b")),
            ["daemon.socket", "http.max_connections"]
        );
        assert!(a.changed_keys(&a).is_empty());
        assert!(requires_restart("daemon.socket") && requires_restart("daemon"));
        assert!(!requires_restart("http.max_connections") && !requires_restart("http"));
        assert!(!requires_restart("x.y"));
    }

    #[test]
    fn example_parses_to_defaults() {
        let text = example_toml();
        assert_eq!(Config::from_toml_str(&text, None), Ok(Config::default()));
        for info in KEYS {
            assert!(text.contains(info.description), "{}", info.key);
        }
    }

    /// `packaging/config.example.toml` is `example_toml()`; `VSM_BLESS=1 cargo test` rewrites it.
    #[test]
    fn committed_example_is_current() {
        let committed = include_str!("../packaging/config.example.toml");
        let current = example_toml();
        if committed != current && std::env::var_os("VSM_BLESS").is_some() {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/config.example.toml");
            std::fs::write(path, &current).expect("write packaging/config.example.toml");
            return;
        }
        assert_eq!(
            committed, current,
            "stale example: run `VSM_BLESS=1 cargo test`"
        );
    }

    #[test]
    fn io_error() {
        let err = Config::from_file(Path::new("/nonexistent/vsm.toml")).expect_err("missing");
        assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
    }
}
