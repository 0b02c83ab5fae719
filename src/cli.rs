//! The command line: lexopt turns argv into [`RawArgs`], which [`parse`] validates into an
//! [`Invocation`]; [`run`] executes it (start the daemon, or call it over the control socket)
//! and prints for people or, with `--json`, for programs.
//!
//! Exit codes: 0 ok, 1 refused by the daemon, 2 usage, 3 daemon unreachable.
//!
//! Output goes through [`emit`], never `print!`: those panic when stdout or stderr is a closed
//! pipe (`vsm-daemon logs | head`), and with `panic = "abort"` the CLI died with SIGABRT and
//! lost its message. A closed pipe drops the rest of the output, as with other Unix tools, and
//! the exit code stays the command's. SIGPIPE stays ignored: the CLI's own socket writes must
//! fail with an error it can report, not kill it.

use crate::acquire;
use crate::api::Op;
use crate::client::{self, Client, ClientError};
use crate::daemon::{self, StartOptions};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Writes to stdout or stderr, ignoring failures (a reader that went away must not kill us).
fn emit(stream: Stream, args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = match stream {
        Stream::Out => {
            let mut out = std::io::stdout().lock();
            out.write_fmt(args).and_then(|()| out.flush())
        }
        Stream::Err => std::io::stderr().lock().write_fmt(args),
    };
}

/// Which of the two standard streams [`emit`] writes to.
#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

macro_rules! out {
    ($($arg:tt)*) => { emit(Stream::Out, format_args!($($arg)*)) };
}
macro_rules! outln {
    ($($arg:tt)*) => { emit(Stream::Out, format_args!("{}\n", format_args!($($arg)*))) };
}
macro_rules! errln {
    ($($arg:tt)*) => { emit(Stream::Err, format_args!("{}\n", format_args!($($arg)*))) };
}

/// Process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// The daemon refused the request (or a check failed).
    Refused = 1,
    /// Bad command line.
    Usage = 2,
    /// The daemon is not reachable.
    Unreachable = 3,
}

/// Options every command accepts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Global {
    /// `--socket PATH` (falls back to `VSM_DAEMON_SOCKET`, then the default).
    pub socket: Option<PathBuf>,
    /// `--json`: machine-readable output.
    pub json: bool,
}

/// A validated command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the daemon in the foreground.
    Start {
        /// `--config PATH`.
        config: Option<PathBuf>,
        /// `--state-dir DIR`.
        state_dir: Option<PathBuf>,
        /// `--listen ADDR`.
        listen: Option<std::net::SocketAddr>,
    },
    /// Show status.
    Status {
        /// Include loop statistics.
        detailed: bool,
    },
    /// Show the configuration.
    ConfigShow {
        /// One section.
        section: Option<String>,
    },
    /// Change one key at run time.
    ConfigSet {
        /// Dotted key.
        key: String,
        /// Value text.
        value: String,
    },
    /// Re-read the config file.
    ConfigReload,
    /// Print the JSON Schema.
    ConfigSchema,
    /// Show or follow logs.
    Logs {
        /// Minimum level.
        level: Option<String>,
        /// How many recent records.
        lines: Option<u64>,
        /// Only this component/target.
        component: Option<String>,
        /// Keep streaming.
        follow: bool,
    },
    /// Run health checks.
    HealthCheck {
        /// One component.
        component: Option<String>,
    },
    /// Run diagnostics.
    DiagnosticsRun {
        /// Include the slow checks.
        full: bool,
    },
    /// Restart components in-process.
    Restart {
        /// One component.
        service: Option<String>,
    },
    /// Stop the daemon.
    Stop {
        /// Graceful (default) or immediate.
        graceful: bool,
    },
    /// Show the TCP API token (`token`), or replace the generated one (`token rotate`).
    Token {
        /// `token rotate`.
        rotate: bool,
    },
    /// The declared checks and their last results.
    Checks,
    /// Run a declared check now and wait for its result (a down check exits 1).
    ChecksRun {
        /// Check name.
        name: String,
    },
    /// Acquire a package (`mcp register npm:NAME@VERSION | pypi:NAME==VERSION`): install,
    /// vet and register it, printing each step; refused or failed exits 1.
    McpAcquire {
        /// The package, as typed.
        package: String,
        /// Capabilities declared for it (`--capability`).
        capabilities: Vec<String>,
    },
    /// Register an MCP server (the spec as sent to the API).
    McpRegister {
        /// Server spec.
        spec: Value,
    },
    /// List MCP servers.
    McpList {
        /// active, inactive or all.
        status: String,
    },
    /// Bridge stdio to the daemon's `/mcp` (for clients that spawn stdio servers).
    McpServeStdio,
    /// Look for MCP servers to install.
    McpDiscover {
        /// One source, or every enabled one.
        source: Option<String>,
        /// What to look for (may be empty).
        query: String,
    },
    /// Call a tool.
    McpCall {
        /// Server id.
        id: String,
        /// Tool name.
        tool: String,
        /// Arguments object.
        arguments: Value,
        /// Deadline override.
        timeout_ms: Option<u64>,
    },
    /// Alerts: firing ones, or all kept (`--all`).
    Alerts {
        /// Resolved ones too.
        all: bool,
    },
    /// Acknowledge an alert.
    AlertAck {
        /// Alert id.
        id: String,
    },
    /// `variety status`: the last analysis.
    VarietyStatus,
    /// `variety analyze [--force]`: analyse now.
    VarietyAnalyze {
        /// Even when the last analysis is fresh.
        force: bool,
    },
    /// `variety gaps list`.
    VarietyGaps,
    /// `variety acquire CAP [--priority P]`: require a capability.
    VarietyAcquire {
        /// The capability.
        capability: String,
        /// low, medium, high or critical.
        priority: Option<String>,
    },
    /// Metrics: all, or `performance`, `health`, `variety`.
    Metrics {
        /// `--type`.
        kind: Option<String>,
    },
    /// Run the reflection analysers now.
    Reflect,
    /// Insights kept.
    Insights {
        /// `--type`.
        kind: Option<String>,
        /// `--since ID`.
        since: Option<u64>,
        /// `--min-significance X`.
        min_significance: Option<String>,
    },
    /// A question to reflection's record.
    Query {
        /// `server`, `capability`, `alert` or `decision`.
        about: String,
        /// The subject.
        id: String,
    },
    /// The five VSM systems.
    Systems,
    /// One VSM system.
    SystemStatus {
        /// `system1`… or a name.
        id: String,
    },
    /// Run a VSM system's action.
    SystemTrigger {
        /// `system1`… or a name.
        id: String,
        /// The action.
        action: String,
        /// `--parameters JSON` (an object).
        parameters: Option<Value>,
    },
    /// show, tools, start, stop, restart, reset or unregister one server.
    Mcp {
        /// The action.
        action: String,
        /// Server id.
        id: String,
    },
}

/// What argv asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// Run a command.
    Run(Global, Command),
    /// Print help text.
    Help(String),
    /// Print the version.
    Version,
}

/// A command-line mistake, printed with a usage hint; exit code 2.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageError(pub String);

/// Step one: argv as lexopt sees it, before deciding what it means.
#[derive(Debug, Default)]
pub struct RawArgs {
    positionals: Vec<String>,
    options: Vec<(&'static str, Option<String>)>,
    help: bool,
    version: bool,
}

const MCP_REGISTER_OPTIONS: &[&str] = &[
    "capability",
    "allow-capability",
    "env",
    "cwd",
    "call-timeout-ms",
    "no-autostart",
    "backoff-initial-ms",
    "backoff-max-ms",
    "max-failures",
    "max-open-files",
    "max-cpu-seconds",
    "max-memory-mb",
    "uid",
    "gid",
];

fn mcp_command_name(sub: &str) -> &'static str {
    match sub {
        "show" => "mcp show",
        "tools" => "mcp tools",
        "resources" => "mcp resources",
        "prompts" => "mcp prompts",
        "start" => "mcp start",
        "stop" => "mcp stop",
        "restart" => "mcp restart",
        "reset" => "mcp reset",
        _ => "mcp unregister",
    }
}

/// Options that take a value, and those that do not.
const VALUE_OPTIONS: &[&str] = &[
    "status",
    "source",
    "capability",
    "allow-capability",
    "env",
    "cwd",
    "call-timeout-ms",
    "backoff-initial-ms",
    "backoff-max-ms",
    "max-failures",
    "max-open-files",
    "max-cpu-seconds",
    "max-memory-mb",
    "uid",
    "gid",
    "timeout-ms",
    "socket",
    "config",
    "state-dir",
    "listen",
    "section",
    "level",
    "lines",
    "component",
    "service",
    "type",
    "priority",
    "parameters",
    "since",
    "min-significance",
];
const FLAG_OPTIONS: &[&str] = &[
    "force",
    "json",
    "detailed",
    "follow",
    "full",
    "graceful",
    "now",
    "no-autostart",
    "all",
];

/// Reads argv with lexopt.
///
/// # Errors
/// Unknown options, missing values, non-UTF-8 arguments.
pub fn read_args(mut parser: lexopt::Parser) -> Result<RawArgs, UsageError> {
    use lexopt::prelude::*;
    let mut raw = RawArgs::default();
    let text = |v: OsString| {
        v.into_string().map_err(|v| {
            UsageError(format!(
                "argument is not valid UTF-8: {}",
                v.to_string_lossy()
            ))
        })
    };
    while let Some(arg) = parser.next().map_err(|e| UsageError(e.to_string()))? {
        match arg {
            Short('h') | Long("help") => raw.help = true,
            Short('V') | Long("version") => raw.version = true,
            Short('f') => raw.options.push(("follow", None)),
            Short('n') => {
                let v = parser.value().map_err(|e| UsageError(e.to_string()))?;
                raw.options.push(("lines", Some(text(v)?)));
            }
            Long(name) => {
                if let Some(known) = VALUE_OPTIONS.iter().find(|o| **o == name) {
                    let v = parser.value().map_err(|e| UsageError(e.to_string()))?;
                    raw.options.push((known, Some(text(v)?)));
                } else if let Some(known) = FLAG_OPTIONS.iter().find(|o| **o == name) {
                    raw.options.push((known, None));
                } else {
                    return Err(UsageError(format!("unknown option '--{name}'")));
                }
            }
            Value(v) => raw.positionals.push(text(v)?),
            Short(c) => return Err(UsageError(format!("unknown option '-{c}'"))),
        }
    }
    Ok(raw)
}

/// Step two: decides what the raw arguments mean.
///
/// # Errors
/// A command that does not exist, an option it does not take, a missing or extra argument.
pub fn parse(raw: RawArgs) -> Result<Invocation, UsageError> {
    let words: Vec<&str> = raw.positionals.iter().map(String::as_str).collect();
    let (name, allowed, args): (&str, &[&str], &[&str]) = match words.as_slice() {
        [] if raw.version => return Ok(Invocation::Version),
        [] if raw.help => return Ok(Invocation::Help(help(None))),
        [] => return Err(UsageError("missing command".into())),
        ["start", rest @ ..] => ("start", &["config", "state-dir", "listen"], rest),
        ["status", rest @ ..] => ("status", &["detailed"], rest),
        ["config", "show", rest @ ..] => ("config show", &["section"], rest),
        ["config", "set", rest @ ..] => ("config set", &[], rest),
        ["config", "reload", rest @ ..] => ("config reload", &[], rest),
        ["config", "schema", rest @ ..] => ("config schema", &[], rest),
        ["config", ..] if raw.help => return Ok(Invocation::Help(help(Some("config")))),
        ["config", ..] => return Err(UsageError("use: config show|set|reload|schema".into())),
        ["logs", rest @ ..] => ("logs", &["level", "lines", "component", "follow"], rest),
        ["health", "check", rest @ ..] => ("health check", &["component"], rest),
        ["health", ..] if raw.help => return Ok(Invocation::Help(help(Some("health check")))),
        ["health", ..] => return Err(UsageError("use: health check [--component NAME]".into())),
        ["diagnostics", "run", rest @ ..] => ("diagnostics run", &["full"], rest),
        ["diagnostics", ..] if raw.help => {
            return Ok(Invocation::Help(help(Some("diagnostics run"))))
        }
        ["diagnostics", ..] => return Err(UsageError("use: diagnostics run [--full]".into())),
        ["restart", rest @ ..] => ("restart", &["service"], rest),
        ["stop", rest @ ..] => ("stop", &["graceful", "now"], rest),
        ["token", "rotate", rest @ ..] => ("token rotate", &[], rest),
        ["token", rest @ ..] => ("token", &[], rest),
        ["checks", "run", rest @ ..] => ("checks run", &[], rest),
        ["checks", rest @ ..] => ("checks", &[], rest),
        ["mcp", "register", rest @ ..] => ("mcp register", MCP_REGISTER_OPTIONS, rest),
        ["mcp", "list", rest @ ..] => ("mcp list", &["status"], rest),
        ["mcp", "call", rest @ ..] => ("mcp call", &["timeout-ms"], rest),
        ["mcp", "serve-stdio", rest @ ..] => ("mcp serve-stdio", &[], rest),
        ["mcp", "discover", rest @ ..] => ("mcp discover", &["source"], rest),
        ["mcp", sub @ ("show" | "tools" | "resources" | "prompts" | "start" | "stop" | "restart" | "reset" | "unregister"), rest @ ..] => {
            (mcp_command_name(sub), &[], rest)
        }
        ["mcp", ..] if raw.help => return Ok(Invocation::Help(help(Some("mcp")))),
        ["mcp", ..] => {
            return Err(UsageError(
                "use: mcp register|list|show|tools|resources|prompts|call|start|stop|restart|reset|unregister|serve-stdio|discover".into(),
            ))
        }
        ["alerts", "ack", rest @ ..] => ("alerts ack", &[], rest),
        ["alerts", rest @ ..] => ("alerts", &["all"], rest),
        ["metrics", rest @ ..] => ("metrics", &["type"], rest),
        ["variety", "status", rest @ ..] => ("variety status", &[], rest),
        ["variety", "analyze", rest @ ..] => ("variety analyze", &["force"], rest),
        ["variety", "gaps", "list", rest @ ..] => ("variety gaps list", &[], rest),
        ["variety", "acquire", rest @ ..] => ("variety acquire", &["priority"], rest),
        ["variety", ..] if raw.help => return Ok(Invocation::Help(help(Some("variety")))),
        ["variety", ..] => {
            return Err(UsageError(
                "use: variety status | analyze [--force] | gaps list | acquire CAPABILITY".into(),
            ))
        }
        ["reflect", rest @ ..] => ("reflect", &[], rest),
        ["insights", rest @ ..] => ("insights", &["type", "since", "min-significance"], rest),
        ["query", rest @ ..] => ("query", &[], rest),
        ["systems", "list", rest @ ..] => ("systems list", &[], rest),
        ["systems", "status", rest @ ..] => ("systems status", &[], rest),
        ["systems", "trigger", rest @ ..] => ("systems trigger", &["parameters"], rest),
        ["systems", ..] if raw.help => return Ok(Invocation::Help(help(Some("systems")))),
        ["systems", ..] => {
            return Err(UsageError(
                "use: systems list | status ID | trigger ID ACTION".into(),
            ))
        }
        ["help", rest @ ..] => return Ok(Invocation::Help(help(Some(&rest.join(" "))))),
        [other, ..] => return Err(UsageError(format!("unknown command '{other}'"))),
    };
    if raw.help {
        return Ok(Invocation::Help(help(Some(name))));
    }
    let mut global = Global::default();
    let mut get = std::collections::HashMap::new();
    let mut envs = Vec::new();
    for (opt, value) in raw.options {
        match opt {
            "socket" => global.socket = value.map(PathBuf::from),
            "json" => global.json = true,
            "env" if allowed.contains(&"env") => envs.extend(value),
            o if allowed.contains(&o) => {
                get.insert(o, value);
            }
            o => return Err(UsageError(format!("'{name}' does not take --{o}"))),
        }
    }
    let value = |k: &str| get.get(k).cloned().flatten();
    let flag = |k: &str| get.contains_key(k);
    let no_args = |args: &[&str]| match args {
        [] => Ok(()),
        [extra, ..] => Err(UsageError(format!(
            "unexpected argument '{extra}' for '{name}'"
        ))),
    };
    let command = match name {
        "start" => {
            no_args(args)?;
            Command::Start {
                config: value("config").map(PathBuf::from),
                state_dir: value("state-dir").map(PathBuf::from),
                listen: value("listen")
                    .map(|a| {
                        a.parse()
                            .map_err(|_| UsageError(format!("--listen takes IP:PORT, not '{a}'")))
                    })
                    .transpose()?,
            }
        }
        "status" => {
            no_args(args)?;
            Command::Status {
                detailed: flag("detailed"),
            }
        }
        "config show" => match args {
            [] => Command::ConfigShow {
                section: value("section"),
            },
            [section] if value("section").is_none() => Command::ConfigShow {
                section: Some(section.to_string()),
            },
            _ => return Err(UsageError("use: config show [--section NAME]".into())),
        },
        "config set" => match args {
            [key, value] => Command::ConfigSet {
                key: key.to_string(),
                value: value.to_string(),
            },
            _ => return Err(UsageError("use: config set KEY VALUE".into())),
        },
        "config reload" => {
            no_args(args)?;
            Command::ConfigReload
        }
        "config schema" => {
            no_args(args)?;
            Command::ConfigSchema
        }
        "logs" => {
            no_args(args)?;
            let lines = value("lines")
                .map(|l| {
                    l.parse::<u64>()
                        .map_err(|_| UsageError(format!("--lines needs a number, not '{l}'")))
                })
                .transpose()?;
            if let Some(level) = value("level") {
                if level.parse::<log::LevelFilter>().is_err() {
                    return Err(UsageError(format!(
                        "unknown level '{level}': use error, warn, info, debug or trace"
                    )));
                }
            }
            Command::Logs {
                level: value("level"),
                lines,
                component: value("component"),
                follow: flag("follow"),
            }
        }
        "health check" => {
            no_args(args)?;
            Command::HealthCheck {
                component: value("component"),
            }
        }
        "diagnostics run" => {
            no_args(args)?;
            Command::DiagnosticsRun { full: flag("full") }
        }
        "restart" => {
            no_args(args)?;
            Command::Restart {
                service: value("service"),
            }
        }
        "token" | "token rotate" => {
            no_args(args)?;
            Command::Token {
                rotate: name == "token rotate",
            }
        }
        "checks" => {
            no_args(args)?;
            Command::Checks
        }
        "checks run" => match args {
            [name] => Command::ChecksRun {
                name: name.to_string(),
            },
            _ => return Err(UsageError("use: checks run NAME".into())),
        },
        "stop" => {
            no_args(args)?;
            if flag("graceful") && flag("now") {
                return Err(UsageError("--graceful and --now exclude each other".into()));
            }
            Command::Stop {
                graceful: !flag("now"),
            }
        }
        "mcp register" if matches!(args, [p] if p.starts_with("npm:") || p.starts_with("pypi:")) => {
            let capabilities: Vec<String> = value("capability")
                .map(|c| {
                    c.split(',')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            Command::McpAcquire {
                package: args[0].to_string(),
                capabilities,
            }
        }
        "mcp register" => {
            let [id, command, rest @ ..] = args else {
                return Err(UsageError(
                    "use: mcp register ID [OPTIONS] -- COMMAND [ARGS...]".into(),
                ));
            };
            let number = |k: &str| -> Result<Option<u64>, UsageError> {
                value(k)
                    .map(|v| {
                        v.parse::<u64>()
                            .map_err(|_| UsageError(format!("--{k} needs a number, not '{v}'")))
                    })
                    .transpose()
            };
            let mut env = serde_json::Map::new();
            for pair in &envs {
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(UsageError(format!("--env takes KEY=VALUE, not '{pair}'")));
                };
                env.insert(k.to_string(), Value::String(v.to_string()));
            }
            let list = |key: &str| -> Vec<String> {
                value(key)
                    .map(|c| {
                        c.split(',')
                            .map(str::trim)
                            .filter(|c| !c.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let capabilities = list("capability");
            let allow_capabilities = list("allow-capability");
            let mut spec = json!({
                "id": id,
                "command": command,
                "args": rest,
                "env": env,
                "capabilities": capabilities,
                "autostart": !flag("no-autostart"),
            });
            if !allow_capabilities.is_empty() {
                spec["allow_capabilities"] = json!(allow_capabilities);
            }
            for key in [
                "call-timeout-ms",
                "backoff-initial-ms",
                "backoff-max-ms",
                "max-failures",
            ] {
                if let Some(n) = number(key)? {
                    spec[key.replace('-', "_")] = json!(n);
                }
            }
            let mut limits = serde_json::Map::new();
            for key in [
                "max-open-files",
                "max-cpu-seconds",
                "max-memory-mb",
                "uid",
                "gid",
            ] {
                if let Some(n) = number(key)? {
                    limits.insert(key.replace('-', "_"), json!(n));
                }
            }
            spec["limits"] = Value::Object(limits);
            if let Some(cwd) = value("cwd") {
                spec["cwd"] = json!(cwd);
            }
            Command::McpRegister { spec }
        }
        "mcp list" => {
            no_args(args)?;
            let status = value("status").unwrap_or_else(|| "all".into());
            if !["active", "inactive", "all"].contains(&status.as_str()) {
                return Err(UsageError(format!(
                    "--status takes active, inactive or all, not '{status}'"
                )));
            }
            Command::McpList { status }
        }
        "mcp serve-stdio" => {
            no_args(args)?;
            Command::McpServeStdio
        }
        "mcp discover" => {
            let source = value("source");
            if let Some(s) = &source {
                if !["catalog", "registry", "npm", "github"].contains(&s.as_str()) {
                    return Err(UsageError(format!(
                        "--source takes catalog, registry, npm or github, not '{s}'"
                    )));
                }
            }
            Command::McpDiscover {
                source,
                query: args.join(" "),
            }
        }
        "mcp call" => {
            let (id, tool, arguments) = match args {
                [id, tool] => (id, tool, json!({})),
                [id, tool, json] => match serde_json::from_str::<Value>(json) {
                    Ok(v @ Value::Object(_)) => (id, tool, v),
                    _ => {
                        return Err(UsageError(format!(
                            "the arguments must be a JSON object, not '{json}'"
                        )))
                    }
                },
                _ => {
                    return Err(UsageError(
                        "use: mcp call ID TOOL ['{\"arg\": value}'] [--timeout-ms N]".into(),
                    ))
                }
            };
            let timeout_ms = value("timeout-ms")
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| UsageError(format!("--timeout-ms needs a number, not '{v}'")))
                })
                .transpose()?;
            Command::McpCall {
                id: id.to_string(),
                tool: tool.to_string(),
                arguments,
                timeout_ms,
            }
        }
        "alerts" => {
            no_args(args)?;
            Command::Alerts { all: flag("all") }
        }
        "alerts ack" => {
            let [id] = args else {
                return Err(UsageError("use: alerts ack ID".into()));
            };
            Command::AlertAck { id: id.to_string() }
        }
        "metrics" => {
            no_args(args)?;
            let kind = value("type");
            if let Some(k) = &kind {
                if !["variety", "performance", "health"].contains(&k.as_str()) {
                    return Err(UsageError(format!(
                        "--type takes variety, performance or health, not '{k}'"
                    )));
                }
            }
            Command::Metrics { kind }
        }
        "variety status" => {
            no_args(args)?;
            Command::VarietyStatus
        }
        "variety analyze" => {
            no_args(args)?;
            Command::VarietyAnalyze {
                force: flag("force"),
            }
        }
        "variety gaps list" => {
            no_args(args)?;
            Command::VarietyGaps
        }
        "variety acquire" => {
            let [capability] = args else {
                return Err(UsageError(
                    "use: variety acquire CAPABILITY [--priority low|medium|high|critical]".into(),
                ));
            };
            let priority = value("priority");
            if let Some(p) = &priority {
                if !["low", "medium", "high", "critical"].contains(&p.as_str()) {
                    return Err(UsageError(format!(
                        "--priority takes low, medium, high or critical, not '{p}'"
                    )));
                }
            }
            Command::VarietyAcquire {
                capability: capability.to_string(),
                priority,
            }
        }
        "reflect" => {
            no_args(args)?;
            Command::Reflect
        }
        "insights" => {
            no_args(args)?;
            let since = value("since")
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| UsageError(format!("--since needs an insight id, not '{v}'")))
                })
                .transpose()?;
            let min_significance = value("min-significance");
            if let Some(m) = &min_significance {
                if !m.parse::<f64>().is_ok_and(|v| (0.0..=1.0).contains(&v)) {
                    return Err(UsageError(format!(
                        "--min-significance takes a number from 0 to 1, not '{m}'"
                    )));
                }
            }
            Command::Insights {
                kind: value("type"),
                since,
                min_significance,
            }
        }
        "query" => {
            let [about, id] = args else {
                return Err(UsageError(
                    "use: query server|capability|alert|decision ID".into(),
                ));
            };
            Command::Query {
                about: about.to_string(),
                id: id.to_string(),
            }
        }
        "systems list" => {
            no_args(args)?;
            Command::Systems
        }
        "systems status" => {
            let [id] = args else {
                return Err(UsageError("use: systems status ID".into()));
            };
            Command::SystemStatus { id: id.to_string() }
        }
        "systems trigger" => {
            let [id, action] = args else {
                return Err(UsageError(
                    "use: systems trigger ID ACTION [--parameters '{JSON}']".into(),
                ));
            };
            let parameters = value("parameters")
                .map(|p| match serde_json::from_str::<Value>(&p) {
                    Ok(v @ Value::Object(_)) => Ok(v),
                    _ => Err(UsageError(format!(
                        "--parameters takes a JSON object, not '{p}'"
                    ))),
                })
                .transpose()?;
            Command::SystemTrigger {
                id: id.to_string(),
                action: action.to_string(),
                parameters,
            }
        }
        n if n.starts_with("mcp ") => {
            let [id] = args else {
                return Err(UsageError(format!("use: {n} ID")));
            };
            Command::Mcp {
                action: n.trim_start_matches("mcp ").to_string(),
                id: id.to_string(),
            }
        }
        _ => return Err(UsageError(format!("unknown command '{name}'"))),
    };
    Ok(Invocation::Run(global, command))
}

const GLOBAL_HELP: &str = "\
Global options (every command):
  --socket PATH   control socket (env VSM_DAEMON_SOCKET; default /run/vsm-daemon/control.sock
                  as root, else $XDG_RUNTIME_DIR/vsm-daemon/control.sock)
  --json          machine-readable output (the reply's data as JSON)
  -h, --help      this help
Exit codes: 0 ok, 1 refused by the daemon or a check failed, 2 usage, 3 daemon unreachable.";

/// Help text for a command (or the overview).
pub fn help(command: Option<&str>) -> String {
    let body = match command.unwrap_or("") {
        "start" => "vsm-daemon start [--config PATH] [--state-dir DIR] [--listen ADDR] [--socket PATH] [--json]\n\n\
            Runs the daemon in the foreground (it never forks; run it under systemd or OpenRC).\n\
            Without --config it uses the embedded defaults.\n\
            \x20\x20--config PATH     TOML configuration file\n\
            \x20\x20--state-dir DIR   state directory (env VSM_DAEMON_STATE_DIR)\n\
            \x20\x20--listen ADDR     REST/WebSocket address, overrides daemon.http_listen (port 0: any free port)\n\
            \x20\x20--json            print one JSON line on stdout when ready",
        "status" => "vsm-daemon status [--detailed] [--json]\n\n\
            Uptime, version, pid, config source, state dir, socket and components.\n\
            \x20\x20--detailed        add event-loop statistics (wake-ups, timers, connections, RSS)",
        "config" => "vsm-daemon config show [--section NAME] | set KEY VALUE | reload | schema\n\n\
            \x20\x20show     the effective configuration (or one section)\n\
            \x20\x20set      change one key now; validated, applied live, persisted in the state dir\n\
            \x20\x20reload   re-read the config file; an invalid file is refused, the old config stays\n\
            \x20\x20schema   JSON Schema of the whole configuration",
        "config show" => "vsm-daemon config show [--section NAME]\n\nThe effective configuration as dotted keys (JSON values).",
        "config set" => "vsm-daemon config set KEY VALUE\n\n\
            Changes KEY (e.g. monitoring.health_check_interval_ms) at run time. The value is typed\n\
            by the key; lists take a JSON array or a comma-separated list; 'default' removes the\n\
            override. The change is validated, applied live and persisted in the state directory.",
        "config reload" => "vsm-daemon config reload\n\nRe-reads the config file (also on SIGHUP). An invalid file is refused with line and column.",
        "config schema" => "vsm-daemon config schema\n\nPrints the JSON Schema of the configuration.",
        "logs" => "vsm-daemon logs [--level LEVEL] [-n|--lines N] [--component NAME] [-f|--follow]\n\n\
            Recent log records kept in memory; --follow streams new ones until interrupted.\n\
            \x20\x20--level LEVEL     error, warn, info, debug or trace (that level and more severe)\n\
            \x20\x20--lines N         how many recent records (default 100)",
        "health check" => "vsm-daemon health check [--component NAME]\n\nRuns the health checks now. Exit code 1 when a component is unhealthy.",
        "diagnostics run" => "vsm-daemon diagnostics run [--full]\n\n\
            Checks config, state dir, socket permissions, kernel features (pidfd, Landlock,\n\
            cgroup v2), node/npm/python3 and limits. --full also times fsync in the state dir.\n\
            Exit code 1 when a check fails.",
        "restart" => "vsm-daemon restart [--service NAME]\n\n\
            In-process restart: reloads the config and restarts every component, or only NAME\n\
            (control, worker, monitor). The process and its pid stay.",
        "stop" => "vsm-daemon stop [--graceful | --now]\n\n\
            Stops the daemon and waits until it has exited. Graceful (default): children are\n\
            stopped and state flushed within daemon.shutdown_timeout_ms.",
        "token" | "token rotate" => "vsm-daemon token [rotate] [--json]\n\n\
            Prints the bearer token the TCP API needs (every route but GET /api/v1/health) and\n\
            where it comes from: config (security.api_token), file PATH (security.api_token_file)\n\
            or generated PATH (<state dir>/api_token, created at first start). Over the control\n\
            socket only: the TCP API never hands the token out.\n\
            \x20\x20rotate   replace the generated token (refused when it comes from the config)",
        "checks" | "checks run" => "vsm-daemon checks [--json] | checks run NAME [--json]\n\n\
            \x20\x20checks            the declared checks ([[checks]] in the config): status, last\n\
            \x20\x20                  message, duration, consecutive failures\n\
            \x20\x20checks run NAME   run one now and wait for its result; exit 1 when it is down",
        "mcp" => "vsm-daemon mcp COMMAND\n\n\
            \x20\x20register ID [OPTIONS] -- COMMAND [ARGS...]   add a server (started at once unless --no-autostart)\n\
            \x20\x20register npm:NAME@VERSION | pypi:NAME==VERSION   install, vet in the sandbox and register a package\n\
            \x20\x20list [--status active|inactive|all]          id, state, pid, uptime, restarts, tools, capabilities\n\
            \x20\x20show ID                                      spec, state history, tools, last errors, stderr tail\n\
            \x20\x20tools ID                                     the server's tools\n\
            \x20\x20resources ID                                 its resources and resource templates (when it offers them)\n\
            \x20\x20prompts ID                                   its prompts (when it offers them)\n\
            \x20\x20call ID TOOL ['{\"arg\": 1}'] [--timeout-ms N]  call a tool; a tool error exits 1\n\
            \x20\x20start|stop|restart ID                        lifecycle (stop is graceful: stdin closed, SIGTERM, SIGKILL)\n\
            \x20\x20reset ID                                     close an open circuit breaker and start again\n\
            \x20\x20unregister ID                                stop and forget a server\n\
            \x20\x20discover [--source S] [QUERY]                find servers to install (catalog, registry, npm, github)",
        "mcp register" => "vsm-daemon mcp register ID [OPTIONS] -- COMMAND [ARGS...]\n\
            vsm-daemon mcp register npm:NAME@VERSION | pypi:NAME==VERSION [--capability a,b]\n\n\
            The second form acquires a package: installs it (npm --ignore-scripts, or a venv and pip)\n\
            under the state dir, tries it in the sandbox, scores it, and registers it only when it\n\
            passes; each step is printed; exit 1 with the reasons when it is refused or fails.\n\n\
            Registers an MCP server that speaks JSON-RPC over stdio; it is persisted and restarted\n\
            with the daemon. Options (unset ones take the [mcp_servers] defaults):\n\
            \x20\x20--capability a,b          capabilities it provides\n\
            \x20\x20--allow-capability a,b    blocked capabilities (security.blocked_capabilities) it may have anyway\n\
            \x20\x20--env K=V                 environment (repeatable; PATH, HOME, LANG, TERM, USER pass through)\n\
            \x20\x20--cwd DIR                 working directory (absolute)\n\
            \x20\x20--no-autostart            register only\n\
            \x20\x20--call-timeout-ms N       default tool-call deadline\n\
            \x20\x20--backoff-initial-ms N    first restart delay (doubles up to --backoff-max-ms N)\n\
            \x20\x20--max-failures N          failed starts within the window that open the circuit breaker\n\
            \x20\x20--max-open-files N, --max-cpu-seconds N, --max-memory-mb N, --uid N, --gid N   sandbox limits",
        "mcp list" => "vsm-daemon mcp list [--status active|inactive|all]",
        "mcp discover" => "vsm-daemon mcp discover [--source catalog|registry|npm|github] [QUERY...] [--json]\n\n\
            Looks for MCP servers to install in the enabled sources (mcp_servers.discovery_sources;\n\
            --source: only that one) and prints the candidates, best first: the exact package, the\n\
            capabilities it would bring, the sources that found it, and each source's outcome. QUERY\n\
            is words or capability names (e.g. memory, timezone); none lists everything. Answers are\n\
            cached for mcp_servers.discovery_cache_ttl_ms. --json prints the whole answer (each\n\
            candidate's score parts, package arguments and environment variables).\n\
            Exit 1 when no source answered (each one's error is printed).",
        "alerts" | "alerts ack" => "vsm-daemon alerts [--all] [--json] | alerts ack ID\n\n\
            Alerts raised by the monitors: the firing ones (--all: the resolved ones kept too), newest\n\
            first, with rule, severity, value, threshold, trend and when they were first and last seen.\n\
            \x20\x20ack ID   acknowledge an alert (it stays listed, marked acked); exit 1 when there is none",
        "metrics" => "vsm-daemon metrics [--type variety|performance|health] [--json]\n\n\
            Daemon, host and MCP metrics. performance: process and host resources, the last\n\
            performance cycle (CPU %, network, disks, filesystems, per-route and per-server p50/p95/p99\n\
            and error rates over the cycle's window); health: components and MCP servers; variety:\n\
            the variety ratio, required and provided capabilities, gaps, threats and the trend.",
        "variety" | "variety status" | "variety analyze" | "variety gaps list" | "variety acquire" => "vsm-daemon variety status | analyze [--force] | gaps list | acquire CAPABILITY [--priority P]\n\n\
            \x20\x20status               the last analysis: ratio (weight of required capabilities with an\n\
            \x20\x20                     active provider over the required weight), gaps, threats, providers\n\
            \x20\x20analyze [--force]    analyse now (without --force an analysis younger than 1 s is shown)\n\
            \x20\x20gaps list            required capabilities without an active provider and what closes each\n\
            \x20\x20acquire CAPABILITY   require it (kept across restarts); prints the gap it opens or that it\n\
            \x20\x20                     is provided already. --priority low|medium|high|critical (default medium)\n\
            Required capabilities also come from [variety] required in the config. Exit 1 when refused.",
        "reflect" => "vsm-daemon reflect [--json]\n\n\
            Runs the reflection analysers now (flapping servers, latency trends, error bursts, alert\n\
            storms, repeated auth failures, recurring gaps, memory growth) and prints the new insights.",
        "insights" => "vsm-daemon insights [--type T] [--since ID] [--min-significance X] [--json]\n\n\
            Insights kept, oldest first: type, significance, description, evidence (event seqs and\n\
            values) and recommended requests.",
        "query" => "vsm-daemon query server|capability|alert|decision ID [--json]\n\n\
            Answers from reflection's record: a server's history, failures, latency and insights; a\n\
            capability's providers and gaps; an alert's events; a decision. Exit 1 when the record\n\
            knows nothing of it.",
        "systems" | "systems list" | "systems status" | "systems trigger" => "vsm-daemon systems list | status ID | trigger ID ACTION [--parameters '{JSON}']\n\n\
            The five VSM systems (system1 operations, system2 coordination, system3 control,\n\
            system4 intelligence, system5 policy): status and why, counter, recent activity.\n\
            \x20\x20trigger system1 call --parameters '{\"server\": \"time\", \"tool\": \"get_current_time\", \"arguments\": {}}'\n\
            \x20\x20trigger system2 reset_backoff   start every server in backoff now\n\
            \x20\x20trigger system3 audit           run the health and performance cycles and every check now\n\
            \x20\x20trigger system4 scan            a variety analysis and a discovery run now\n\
            \x20\x20trigger system5 decide          re-evaluate the open gaps against policy (auto_acquire) now",
        "mcp call" => "vsm-daemon mcp call ID TOOL ['{JSON arguments}'] [--timeout-ms N]\n\n\
            Prints the tool's text content (--json: the whole result). Exit 1 when the tool reports an\n\
            error (isError), the call times out or the server is not active.",
        "mcp serve-stdio" => "vsm-daemon mcp serve-stdio\n\n\
            An MCP server on stdin/stdout for clients that spawn stdio servers: every message goes to\n\
            the running daemon's /mcp over the control socket, so the client gets every supervised\n\
            server's tools (SERVER__TOOL). Both protocol eras: `initialize` opens a session\n\
            (2025-11-25); a message with a `_meta` protocol version is sent statelessly\n\
            (2026-07-28), `subscriptions/listen` streams included. Exit 3 when the daemon is not\n\
            running.",
        "mcp show" | "mcp tools" | "mcp start" | "mcp stop" | "mcp restart" | "mcp reset" | "mcp unregister" => {
            "vsm-daemon mcp show|tools|start|stop|restart|reset|unregister ID"
        }
        "mcp resources" | "mcp prompts" => "vsm-daemon mcp resources|prompts ID\n\n\
            The server's resources and resource templates (URI, name, MIME type), or its prompts\n\
            (name, arguments, description), as it last listed them; empty when its capabilities\n\
            offer none. --json prints the lists as the API answers them.",
        _ => "vsm-daemon: keeps MCP servers alive and useful on small Linux hosts.\n\n\
            Usage: vsm-daemon COMMAND [OPTIONS]\n\n\
            Commands:\n\
            \x20\x20start                 run the daemon in the foreground\n\
            \x20\x20status                daemon status\n\
            \x20\x20config show|set|reload|schema\n\
            \x20\x20logs                  recent or live log records\n\
            \x20\x20health check          run health checks\n\
            \x20\x20diagnostics run       self-diagnostics\n\
            \x20\x20restart               restart components in-process\n\
            \x20\x20stop                  stop the daemon\n\
            \x20\x20token [rotate]        the TCP API's bearer token and where it comes from\n\
            \x20\x20checks [run NAME]     declared checks, or run one now\n\
            \x20\x20alerts [--all]        firing (or all kept) alerts; alerts ack ID\n\
            \x20\x20metrics [--type T]    metrics (performance, health, variety)\n\
            \x20\x20variety status|analyze|gaps list|acquire CAP   capabilities required against provided\n\
            \x20\x20systems list|status ID|trigger ID ACTION   the five VSM systems\n\
            \x20\x20reflect               run reflection now; insights [--type T]; query ABOUT ID\n\
            \x20\x20mcp register|list|show|tools|call|start|stop|restart|reset|unregister|serve-stdio|discover\n\n\
            `vsm-daemon COMMAND --help` tells more; --version prints the version.",
    };
    format!("{body}\n\n{GLOBAL_HELP}")
}

/// Parses argv and runs; returns the exit code.
pub fn main_with(parser: lexopt::Parser) -> Exit {
    let invocation = read_args(parser).and_then(parse);
    match invocation {
        Ok(Invocation::Help(text)) => {
            outln!("{text}");
            Exit::Ok
        }
        Ok(Invocation::Version) => {
            outln!("vsm-daemon {}", env!("CARGO_PKG_VERSION"));
            Exit::Ok
        }
        Ok(Invocation::Run(global, command)) => run(&global, command),
        Err(UsageError(msg)) => {
            errln!("error: {msg}\nUsage: vsm-daemon COMMAND [OPTIONS]   (try 'vsm-daemon --help')");
            Exit::Usage
        }
    }
}

fn socket_path(global: &Global) -> PathBuf {
    global
        .socket
        .clone()
        .or_else(|| std::env::var_os("VSM_DAEMON_SOCKET").map(PathBuf::from))
        .unwrap_or_else(daemon::default_socket_path)
}

/// Executes a command.
pub fn run(global: &Global, command: Command) -> Exit {
    if let Command::Start {
        config,
        state_dir,
        listen,
    } = command
    {
        let options = StartOptions {
            config,
            state_dir: state_dir
                .or_else(|| std::env::var_os("VSM_DAEMON_STATE_DIR").map(PathBuf::from)),
            socket: global
                .socket
                .clone()
                .or_else(|| std::env::var_os("VSM_DAEMON_SOCKET").map(PathBuf::from)),
            ready_json: global.json,
            listen,
        };
        return match daemon::run(options) {
            Ok(()) => Exit::Ok,
            Err(e) => {
                errln!("error: {e}");
                Exit::Refused
            }
        };
    }
    if let Command::McpServeStdio = command {
        return match crate::gateway::stdio::serve(&socket_path(global)) {
            Ok(()) => Exit::Ok,
            Err(e @ crate::gateway::stdio::BridgeError::Unreachable(..)) => {
                errln!("error: {e}");
                Exit::Unreachable
            }
            Err(e) => {
                errln!("error: {e}");
                Exit::Refused
            }
        };
    }
    let client = Client::new(&socket_path(global));
    let result = match command {
        Command::Logs {
            follow: true,
            level,
            component,
            lines,
        } => {
            return follow_logs(&client, global, level, component, lines);
        }
        Command::Stop { graceful } => return stop(&client, global, graceful),
        Command::McpAcquire {
            package,
            capabilities,
        } => return acquire(&client, global, &package, &capabilities),
        other => {
            let (method, path, body) = request_for(&other);
            client
                .call(method, &path, body.as_ref())
                .map(|r| (other, r))
        }
    };
    let (command, reply) = match result {
        Ok(ok) => ok,
        Err(e) => return client_failure(&e),
    };
    let envelope = &reply.body;
    let ok = envelope["status"] == "success";
    if global.json {
        let shown = if ok { &envelope["data"] } else { envelope };
        outln!(
            "{}",
            serde_json::to_string_pretty(shown).unwrap_or_default()
        );
    } else {
        let data = &envelope["data"];
        if ok || !data.is_null() {
            out!("{}", human(&command, data));
        }
    }
    if ok && matches!(command, Command::ChecksRun { .. }) && envelope["data"]["up"] != true {
        // The daemon ran it; the check itself failed.
        Exit::Refused
    } else if ok {
        Exit::Ok
    } else {
        errln!("error: {}", client::error_message(envelope));
        Exit::Refused
    }
}

/// `mcp register npm:…|pypi:…`: starts the acquisition, then follows it, printing each step
/// as it ends, until it is acquired (0), refused or failed (1, with the reasons).
fn acquire(client: &Client, global: &Global, package: &str, capabilities: &[String]) -> Exit {
    let (method, path, body) = request_for(&Command::McpAcquire {
        package: package.to_string(),
        capabilities: capabilities.to_vec(),
    });
    let reply = match client.call(method, &path, body.as_ref()) {
        Ok(r) => r,
        Err(e) => return client_failure(&e),
    };
    if reply.body["status"] != "success" {
        errln!("error: {}", client::error_message(&reply.body));
        return Exit::Refused;
    }
    let id = reply.body["data"]["acquisition_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !global.json {
        outln!(
            "acquisition {id}: {} as server '{}'",
            package,
            reply.body["data"]["server_id"].as_str().unwrap_or("")
        );
    }
    let show = acquire::ops::ACQUISITION_SHOW.target(&encode(&id));
    let mut printed = 0;
    // Installs take minutes at worst; the daemon's own deadlines end every step before this.
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let reply = match client.call("GET", &show, None) {
            Ok(r) => r,
            Err(e) => return client_failure(&e),
        };
        if reply.body["status"] != "success" {
            errln!("error: {}", client::error_message(&reply.body));
            return Exit::Refused;
        }
        let data = &reply.body["data"];
        let steps = data["steps"].as_array().cloned().unwrap_or_default();
        if !global.json {
            for s in steps.iter().skip(printed) {
                outln!(
                    "  {:<14} {:>7} ms  {}",
                    s["step"].as_str().unwrap_or(""),
                    s["ms"],
                    s["outcome"].as_str().unwrap_or("")
                );
            }
        }
        printed = steps.len();
        let state = data["state"].as_str().unwrap_or("");
        if !matches!(state, "queued" | "running") {
            if global.json {
                outln!("{}", serde_json::to_string_pretty(data).unwrap_or_default());
            }
            if state == "acquired" {
                if !global.json {
                    outln!(
                        "acquired: server '{}' is active (security score {})",
                        data["result"]["server_id"].as_str().unwrap_or(""),
                        data["result"]["assessment"]["score"]
                    );
                }
                return Exit::Ok;
            }
            errln!(
                "error: {state} at {}: {}",
                data["result"]["failed_step"].as_str().unwrap_or("?"),
                data["result"]["reason"].as_str().unwrap_or("")
            );
            for r in data["result"]["assessment"]["reasons"]
                .as_array()
                .into_iter()
                .flatten()
            {
                errln!("  reason: {}", r.as_str().unwrap_or(""));
            }
            return Exit::Refused;
        }
        if Instant::now() > deadline {
            errln!("error: acquisition {id} still {state} after an hour");
            return Exit::Refused;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn client_failure(e: &ClientError) -> Exit {
    errln!("error: {e}");
    match e {
        ClientError::Unreachable { .. } => Exit::Unreachable,
        _ => Exit::Refused,
    }
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The HTTP request a command sends: method and path come from the ops table, so a renamed
/// route cannot leave the CLI behind.
fn request_for(command: &Command) -> (&'static str, String, Option<Value>) {
    use crate::{components, discovery, mcp, monitor, ops, reflect, variety, vsm};
    let plain = |op: &Op| (op.method, op.path.to_string(), None);
    let with_query = |op: &Op, pairs: &[(&str, Option<String>)]| {
        (op.method, format!("{}{}", op.path, query(pairs)), None)
    };
    match command {
        Command::Status { detailed } => with_query(
            &ops::STATUS,
            &[("detailed", detailed.then(|| "true".into()))],
        ),
        Command::ConfigShow { section } => with_query(
            &components::ops::CONFIG_SHOW,
            &[("section", section.clone())],
        ),
        Command::ConfigSet { key, value } => {
            // Typed by the key's schema; an unknown key is still sent so the daemon names it.
            let patch = crate::config::patch_for_set(key, value).unwrap_or_else(|_| {
                let mut v = json!(value);
                for part in key.rsplit('.') {
                    v = json!({ part: v });
                }
                v
            });
            let op = &components::ops::CONFIG_UPDATE;
            (op.method, op.path.into(), Some(patch))
        }
        Command::ConfigReload => plain(&components::ops::CONFIG_RELOAD),
        Command::ConfigSchema => plain(&components::ops::CONFIG_SCHEMA),
        Command::Logs {
            level,
            lines,
            component,
            ..
        } => with_query(
            &ops::LOGS_GET,
            &[
                ("level", level.clone()),
                ("lines", lines.map(|l| l.to_string())),
                ("component", component.clone()),
            ],
        ),
        Command::HealthCheck { component } => with_query(
            &components::ops::HEALTH,
            &[("component", component.clone())],
        ),
        Command::DiagnosticsRun { full } => {
            let op = &components::ops::DIAGNOSTICS;
            (op.method, op.path.into(), Some(json!({"full": full})))
        }
        Command::Restart { service } => {
            let op = &components::ops::CONTROL_RESTART;
            (op.method, op.path.into(), Some(json!({"service": service})))
        }
        Command::Stop { graceful } => {
            let op = &components::ops::CONTROL_STOP;
            let body = json!({"shutdown": true, "graceful": graceful});
            (op.method, op.path.into(), Some(body))
        }
        // Neither is one request: `start` runs the daemon, `serve-stdio` bridges to /mcp.
        Command::Start { .. } | Command::McpServeStdio => plain(&ops::STATUS),
        Command::Checks => plain(&monitor::ops::CHECKS_LIST),
        Command::ChecksRun { name } => {
            let op = &monitor::ops::CHECKS_RUN;
            (op.method, op.target(&encode(name)), None)
        }
        Command::Token { rotate: false } => plain(&ops::AUTH_TOKEN),
        Command::Token { rotate: true } => plain(&ops::AUTH_TOKEN_ROTATE),
        Command::McpAcquire {
            package,
            capabilities,
        } => {
            let op = &acquire::ops::CAPABILITIES_INTEGRATE;
            let body = json!({"package": package, "capabilities": capabilities});
            (op.method, op.path.into(), Some(body))
        }
        Command::McpRegister { spec } => {
            let op = &mcp::ops::MCP_REGISTER;
            (op.method, op.path.into(), Some(spec.clone()))
        }
        Command::McpList { status } => {
            with_query(&mcp::ops::MCP_LIST, &[("status", Some(status.clone()))])
        }
        Command::McpDiscover { source, query } => with_query(
            &discovery::ops::MCP_DISCOVER,
            &[
                ("source", source.clone()),
                ("query", (!query.is_empty()).then(|| query.clone())),
            ],
        ),
        Command::McpCall {
            id,
            tool,
            arguments,
            timeout_ms,
        } => {
            let mut body = json!({"name": tool, "arguments": arguments});
            if let Some(t) = timeout_ms {
                body["timeout_ms"] = json!(t);
            }
            let op = &mcp::ops::MCP_CALL;
            (op.method, op.target(&encode(id)), Some(body))
        }
        Command::Alerts { all } => with_query(
            &monitor::ops::ALERTS_LIST,
            &[("state", (!all).then(|| "firing".into()))],
        ),
        Command::AlertAck { id } => {
            let op = &monitor::ops::ALERTS_ACK;
            (op.method, op.target(&encode(id)), None)
        }
        Command::VarietyStatus => plain(&variety::ops::VARIETY_GET),
        Command::VarietyAnalyze { force } => {
            let op = &variety::ops::VARIETY_RECALCULATE;
            (op.method, op.path.into(), Some(json!({"force": force})))
        }
        Command::VarietyGaps => plain(&variety::ops::CAPABILITIES_GAPS),
        Command::VarietyAcquire {
            capability,
            priority,
        } => {
            let op = &variety::ops::CAPABILITIES_ACQUIRE;
            let mut body =
                json!({"capability_type": capability, "acquisition_method": "mcp_server"});
            if let Some(p) = priority {
                body["priority"] = json!(p);
            }
            (op.method, op.path.into(), Some(body))
        }
        Command::Metrics { kind } => match kind.as_deref() {
            Some("variety") => plain(&variety::ops::VARIETY_METRICS),
            Some("performance") => plain(&ops::METRICS_PERFORMANCE),
            Some("health") => plain(&ops::METRICS_HEALTH),
            _ => plain(&ops::METRICS_ALL),
        },
        Command::Reflect => plain(&reflect::ops::CONSCIOUSNESS_REFLECT),
        Command::Insights {
            kind,
            since,
            min_significance,
        } => with_query(
            &reflect::ops::CONSCIOUSNESS_INSIGHTS,
            &[
                ("type", kind.clone()),
                ("since", since.map(|s| s.to_string())),
                ("min_significance", min_significance.clone()),
            ],
        ),
        Command::Query { about, id } => {
            let op = &reflect::ops::CONSCIOUSNESS_QUERY;
            (
                op.method,
                op.path.into(),
                Some(json!({"about": about, "id": id})),
            )
        }
        Command::Systems => plain(&vsm::ops::VSM_SYSTEMS),
        Command::SystemStatus { id } => {
            let op = &vsm::ops::VSM_SYSTEM;
            (op.method, op.target(&encode(id)), None)
        }
        Command::SystemTrigger {
            id,
            action,
            parameters,
        } => {
            let op = &vsm::ops::VSM_ACTION;
            let body = json!({"action": action, "parameters": parameters});
            (op.method, op.target(&encode(id)), Some(body))
        }
        Command::Mcp { action, id } => {
            let op = match action.as_str() {
                "show" => &mcp::ops::MCP_SHOW,
                "tools" => &mcp::ops::MCP_TOOLS,
                "resources" => &mcp::ops::MCP_RESOURCES,
                "prompts" => &mcp::ops::MCP_PROMPTS,
                "unregister" => &mcp::ops::MCP_UNREGISTER,
                "start" => &mcp::ops::MCP_START,
                "stop" => &mcp::ops::MCP_STOP,
                "restart" => &mcp::ops::MCP_RESTART,
                // "reset": the parser admits only these nine actions.
                _ => &mcp::ops::MCP_RESET,
            };
            (op.method, op.target(&encode(id)), None)
        }
    }
}

fn stop(client: &Client, global: &Global, graceful: bool) -> Exit {
    let (method, path, body) = request_for(&Command::Stop { graceful });
    let reply = match client.call(method, &path, body.as_ref()) {
        Ok(r) => r,
        Err(e) => return client_failure(&e),
    };
    if reply.body["status"] != "success" {
        errln!("error: {}", client::error_message(&reply.body));
        return Exit::Refused;
    }
    let pid = reply.body["data"]["pid"].as_u64();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The daemon removes its socket when it stops listening and its pid is gone once it exits.
    while Instant::now() < deadline {
        let gone =
            pid.is_none_or(|p| !crate::sys::process_running(p as i32)) && !client.is_reachable();
        if gone {
            if global.json {
                outln!("{}", json!({"stopped": true, "pid": pid}));
            } else {
                outln!(
                    "vsm-daemon stopped{}",
                    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                );
            }
            return Exit::Ok;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    errln!("error: vsm-daemon accepted the stop request but is still running after 60 s");
    Exit::Refused
}

fn follow_logs(
    client: &Client,
    global: &Global,
    level: Option<String>,
    component: Option<String>,
    lines: Option<u64>,
) -> Exit {
    let path = format!(
        "{}{}",
        crate::ops::LOGS_GET.path,
        query(&[
            ("level", level),
            ("lines", lines.map(|l| l.to_string())),
            ("component", component),
        ])
    );
    let result = client.stream(&path, |event, data| {
        let Ok(value) = serde_json::from_str::<Value>(data) else {
            return true;
        };
        let line = match event {
            "log" if global.json => value.to_string(),
            "log" => format_log_record(&value),
            "dropped" => format!(
                "-- {} record(s) dropped: the reader fell behind --",
                value["count"]
            ),
            _ => return true,
        };
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // A closed stdout (e.g. `| head`) ends the stream.
        writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
    });
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => client_failure(&e),
    }
}

fn format_log_record(r: &Value) -> String {
    format!(
        "{} {:<5} {}: {}",
        r["timestamp"].as_str().unwrap_or(""),
        r["level"].as_str().unwrap_or("").to_ascii_uppercase(),
        r["target"].as_str().unwrap_or(""),
        r["message"].as_str().unwrap_or("")
    )
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `mcp discover`: one line per candidate (rank, score, package, what it brings, who found
/// it), then each source's outcome.
fn discover_table(out: &mut String, data: &Value) {
    let candidates = data["candidates"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if candidates.is_empty() {
        let _ = writeln!(out, "no candidates");
    } else {
        let _ = writeln!(
            out,
            "{:>4} {:>5}  {:<56} {:<24} SOURCES",
            "RANK", "SCORE", "PACKAGE", "CAPABILITIES"
        );
    }
    let list = |v: &Value, key: &str| -> String {
        let items: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                if key.is_empty() {
                    text(x)
                } else {
                    text(&x[key])
                }
            })
            .collect();
        if items.is_empty() {
            "-".into()
        } else {
            items.join(",")
        }
    };
    for c in candidates {
        let _ = writeln!(
            out,
            "{:>4} {:>5}  {:<56} {:<24} {}",
            text(&c["rank"]),
            text(&c["score"]),
            text(&c["package"]["ref"]),
            list(&c["capabilities"], "capability"),
            list(&c["sources"], ""),
        );
    }
    for s in data["sources"].as_array().into_iter().flatten() {
        let outcome = match s["error"].as_str() {
            Some(e) => format!("error: {e}"),
            None => format!("{} found", text(&s["found"])),
        };
        let _ = writeln!(
            out,
            "source {:<9} {:<7} {} ({} ms)",
            text(&s["source"]),
            text(&s["status"]),
            outcome,
            text(&s["elapsed_ms"])
        );
    }
}

fn show_server(d: &Value) -> String {
    let mut out = String::new();
    let spec = &d["spec"];
    let mut command = vec![text(&spec["command"])];
    command.extend(spec["args"].as_array().into_iter().flatten().map(text));
    let _ = writeln!(
        out,
        "{}  {}  pid {}  restarts {}",
        text(&d["id"]),
        text(&d["status"]),
        text(&d["pid"]),
        text(&d["restarts"])
    );
    let _ = writeln!(out, "command    {}", command.join(" "));
    let _ = writeln!(
        out,
        "protocol   {} ({} era)  server {}",
        text(&d["protocol_version"]),
        text(&d["era"]),
        text(&d["server_info"])
    );
    let _ = writeln!(out, "landlock   {}", text(&d["landlock"]));
    let names = |v: &Value| -> String {
        let list: Vec<String> = v.as_array().into_iter().flatten().map(text).collect();
        if list.is_empty() {
            "-".into()
        } else {
            list.join(", ")
        }
    };
    let _ = writeln!(out, "declared   {}", names(&spec["capabilities"]));
    let _ = writeln!(out, "allowed    {}", names(&spec["allow_capabilities"]));
    let _ = writeln!(out, "calls      {}", d["calls"]);
    let _ = writeln!(out, "breaker    {}", d["circuit_breaker"]);
    let _ = writeln!(out, "\nhistory:");
    for h in d["history"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {} {:<12} {}",
            text(&h["at"]),
            text(&h["status"]),
            text(&h["reason"])
        );
    }
    let _ = writeln!(out, "\ntools:");
    for t in d["tools"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  {:<28} {}", text(&t["name"]), t["inputSchema"]);
    }
    if let Some(errors) = d["last_errors"].as_array().filter(|e| !e.is_empty()) {
        let _ = writeln!(out, "\nlast errors:");
        for e in errors {
            let _ = writeln!(out, "  {} {}", text(&e["at"]), text(&e["error"]));
        }
    }
    if let Some(tail) = d["stderr_tail"].as_array().filter(|e| !e.is_empty()) {
        let _ = writeln!(out, "\nstderr (last lines):");
        for l in tail {
            let _ = writeln!(out, "  {}", text(l));
        }
    }
    out
}

/// One VSM system on one line: id, name, status, counter, why.
fn system_line(out: &mut String, sys: &Value) {
    let id = text(&sys["id"]);
    let counter = [
        "operations_count",
        "coordination_points",
        "audit_cycles",
        "scans_completed",
        "decisions_made",
    ]
    .into_iter()
    .find(|k| sys.get(*k).is_some())
    .unwrap_or("count");
    let _ = writeln!(
        out,
        "{id:<8} {:<13} {:<9} {counter} {:<6} {}",
        text(&sys["name"]),
        text(&sys["status"]),
        text(&sys[counter]),
        text(&sys["reason"])
    );
}

/// Human rendering of a reply's data.
/// Longest tool description `mcp tools` prints on a tool's line, in characters.
const SUMMARY_CHARS: usize = 120;

/// A tool description as one table cell: its first non-empty line, trimmed, control characters
/// (a server's text reaching a terminal) replaced, cut at [`SUMMARY_CHARS`] with `…`.
/// Descriptions often start with a newline (`"\n    Get the current time..."`).
fn tool_summary(description: &str) -> String {
    let line = description
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut chars = line.chars().map(|c| if c.is_control() { ' ' } else { c });
    let mut summary: String = chars.by_ref().take(SUMMARY_CHARS).collect();
    if chars.next().is_some() {
        summary.push('…');
    }
    summary
}

/// `variety status` / `analyze` for people.
fn show_variety(out: &mut String, d: &Value) {
    let _ = writeln!(
        out,
        "variety ratio {} (threshold {}), {} of {} required capabilities provided, assessed {}",
        text(&d["variety_ratio"]),
        text(&d["threshold"]),
        text(&d["provided_count"]),
        text(&d["required_count"]),
        text(&d["timestamp"]),
    );
    let _ = writeln!(out, "\ncapabilities:");
    for c in d["capabilities"].as_array().into_iter().flatten() {
        let providers: Vec<String> = c["providers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{} ({})", text(&p["server"]), text(&p["status"])))
            .collect();
        let mark = match (c["required"].is_object(), c["active_providers"].as_u64()) {
            (true, Some(0)) => "GAP ",
            (true, _) => "req ",
            _ => "    ",
        };
        let providers = if providers.is_empty() {
            "-".to_string()
        } else {
            providers.join(", ")
        };
        let _ = writeln!(out, "  {mark}{:<24} {providers}", text(&c["name"]));
    }
    if let Some(gaps) = d["gaps"].as_array().filter(|g| !g.is_empty()) {
        let _ = writeln!(out, "\ngaps:");
        show_gaps(out, &Value::Array(gaps.clone()));
    }
    if let Some(threats) = d["threats"].as_array().filter(|t| !t.is_empty()) {
        let _ = writeln!(out, "\nthreats:");
        for t in threats {
            let _ = writeln!(
                out,
                "  {:<16} {}",
                text(&t["kind"]),
                text(&t["description"])
            );
        }
    }
    let share = &d["allowed_capabilities"];
    let _ = writeln!(
        out,
        "\nallowed_capabilities score {} ({})",
        text(&share["score"]),
        text(&share["rule"])
    );
    let _ = writeln!(
        out,
        "trend {} over {} analyses",
        text(&d["trend"]["direction"]),
        d["trend"]["points"].as_array().map_or(0, Vec::len)
    );
    if let Some(scan) = d["external_scan"].as_str() {
        let _ = writeln!(out, "external scan: {scan}");
    }
}

/// Gaps, one per line with what closes each.
fn show_gaps(out: &mut String, gaps: &Value) {
    let gaps = gaps.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if gaps.is_empty() {
        let _ = writeln!(out, "no gaps");
    }
    for g in gaps {
        let _ = writeln!(
            out,
            "  {:<9} {:<20} {}: {}",
            text(&g["severity"]),
            text(&g["capability"]),
            text(&g["recommended_action"]),
            text(&g["closes_with"])
        );
    }
}

fn human(command: &Command, data: &Value) -> String {
    let mut out = String::new();
    match command {
        Command::Alerts { all } => {
            let alerts = data["alerts"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            if alerts.is_empty() {
                let _ = writeln!(out, "no {}alerts", if *all { "" } else { "firing " });
            }
            for a in alerts {
                let threshold = match &a["threshold"] {
                    Value::Null => String::new(),
                    t => format!(" (threshold {})", text(t)),
                };
                let _ = writeln!(
                    out,
                    "{:<8} {:<8} {:<8} {}{} {} = {}{threshold}, {}",
                    text(&a["id"]),
                    text(&a["state"]),
                    text(&a["severity"]),
                    text(&a["rule"]),
                    if a["acked"] == true { " [acked]" } else { "" },
                    text(&a["metric"]),
                    text(&a["current_value"]),
                    text(&a["trend"]),
                );
                let _ = writeln!(
                    out,
                    "         since {}, last {}, {} bad cycles: {}",
                    text(&a["first_seen"]),
                    text(&a["last_seen"]),
                    text(&a["count"]),
                    text(&a["message"])
                );
            }
        }
        Command::AlertAck { .. } => {
            let _ = writeln!(out, "acknowledged {}", text(&data["alert"]["id"]));
        }
        Command::VarietyStatus | Command::VarietyAnalyze { .. } => show_variety(&mut out, data),
        Command::VarietyGaps => show_gaps(&mut out, &data["gaps"]),
        Command::VarietyAcquire { .. } => {
            let cap = text(&data["capability"]);
            if data["recorded"] == true {
                let _ = writeln!(out, "recorded: '{cap}' is required now");
            } else {
                let _ = writeln!(
                    out,
                    "'{cap}' is required already (by {})",
                    text(&data["required_by"])
                );
            }
            if data["gap"].is_object() {
                show_gaps(&mut out, &Value::Array(vec![data["gap"].clone()]));
            } else {
                let _ = writeln!(out, "provided: an active server offers it");
            }
        }
        Command::Systems => {
            for sys in data["systems"].as_array().into_iter().flatten() {
                system_line(&mut out, sys);
            }
        }
        Command::SystemStatus { .. } => {
            system_line(&mut out, data);
            let _ = writeln!(out, "action: {}", text(&data["action"]));
            for (k, v) in data["by_kind"].as_object().into_iter().flatten() {
                let _ = writeln!(out, "  {k:<20} {v}");
            }
            let _ = writeln!(out, "recent:");
            for a in data["recent_activity"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "  {} #{} {:<16} {}",
                    text(&a["at"]),
                    text(&a["seq"]),
                    text(&a["kind"]),
                    text(&a["detail"])
                );
            }
        }
        Command::SystemTrigger { .. } | Command::Query { .. } => {
            let _ = writeln!(out, "{data:#}");
        }
        Command::Reflect | Command::Insights { .. } => {
            let list = data["new_insights"]
                .as_array()
                .or_else(|| data["insights"].as_array());
            if let Some(took) = data["analysis_us"].as_u64() {
                let _ = writeln!(
                    out,
                    "reflection {} over {} record entries: {} finding(s); analysers {took} µs on the worker, {} µs of loop time",
                    text(&data["reflection"]),
                    text(&data["record"]["entries"]),
                    text(&data["findings"]),
                    text(&data["loop_us"])
                );
            }
            let list = list.map(Vec::as_slice).unwrap_or(&[]);
            if list.is_empty() {
                let _ = writeln!(out, "no new insights");
            }
            for i in list {
                let _ = writeln!(
                    out,
                    "#{:<4} {:<20} {:.2}  {}",
                    text(&i["id"]),
                    text(&i["insight_type"]),
                    i["significance"].as_f64().unwrap_or(0.0),
                    text(&i["description"])
                );
                let seqs = &i["evidence"]["event_seqs"];
                let _ = writeln!(out, "      evidence: events {seqs}");
                for r in i["recommendations"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "      → {} {}  ({})",
                        text(&r["method"]),
                        text(&r["path"]),
                        text(&r["why"])
                    );
                }
            }
        }
        Command::Metrics { .. } => {
            let mut rows = Vec::new();
            flatten("", data, &mut rows);
            for (k, v) in rows {
                let _ = writeln!(out, "{k} = {v}");
            }
        }
        Command::Status { .. } => {
            let d = &data["daemon"];
            let _ = writeln!(
                out,
                "vsm-daemon {}  {}  pid {}  up {}",
                text(&d["version"]),
                text(&d["status"]),
                text(&d["pid"]),
                duration(d["uptime_seconds"].as_u64().unwrap_or(0))
            );
            for (label, key) in [
                ("config", "config_source"),
                ("state dir", "state_dir"),
                ("socket", "socket"),
                ("pid file", "pid_file"),
            ] {
                let _ = writeln!(out, "{label:<10} {}", text(&d[key]));
            }
            let _ = writeln!(
                out,
                "{:<10} http://{} (bearer token: {}; `vsm-daemon token` shows it)",
                "api",
                text(&d["http_listen"]),
                text(&d["auth"])
            );
            let m = &data["mcp_servers"];
            let _ = writeln!(
                out,
                "{:<10} {} active of {} registered",
                "mcp",
                text(&m["active_count"]),
                text(&m["total_registered"])
            );
            if let Some(w) = d["config_warning"].as_str() {
                let _ = writeln!(out, "warning    {w}");
            }
            let _ = writeln!(
                out,
                "\n{:<10} {:<8} {:<10} {:<8} SINCE",
                "COMPONENT", "STATUS", "HEALTH", "RESTARTS"
            );
            if let Some(components) = data["components"].as_object() {
                for (name, c) in components {
                    let health = match c["healthy"].as_bool() {
                        Some(true) => "healthy",
                        Some(false) => "unhealthy",
                        None => "unchecked",
                    };
                    let _ = writeln!(
                        out,
                        "{name:<10} {:<8} {health:<10} {:<8} {}",
                        text(&c["status"]),
                        text(&c["restarts"]),
                        text(&c["since"])
                    );
                }
            }
            if let Some(stats) = data["loop"].as_object() {
                let _ = writeln!(out, "\nevent loop:");
                for (k, v) in stats {
                    let _ = writeln!(out, "  {k:<28} {}", text(v));
                }
            }
        }
        Command::ConfigShow { .. } => {
            let mut rows = Vec::new();
            flatten(
                data["section"].as_str().unwrap_or(""),
                &data["config"],
                &mut rows,
            );
            let _ = writeln!(out, "# source: {}", text(&data["source"]));
            if let Some(w) = data["overrides_warning"].as_str() {
                let _ = writeln!(out, "# warning: {w}");
            }
            let pending: Vec<&str> = data["not_enforced"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for (k, v) in rows {
                if pending.contains(&k.as_str()) {
                    let _ = writeln!(out, "{k} = {v}   # {}", crate::config::NOT_ENFORCED);
                } else {
                    let _ = writeln!(out, "{k} = {v}");
                }
            }
        }
        Command::ConfigSet { key, .. } => {
            let pending = data["restart_required"]
                .as_array()
                .is_some_and(|a| !a.is_empty());
            let changed = data["changed"].as_array().map_or(0, Vec::len);
            let _ = writeln!(
                out,
                "{key}: {}",
                match (changed, pending) {
                    (0, _) => "unchanged (already that value)",
                    (_, true) => "saved; takes effect after the daemon restarts",
                    _ => "applied and saved",
                }
            );
            for k in data["not_enforced"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "warning: {} is {}: saved, but nothing acts on it",
                    text(k),
                    crate::config::NOT_ENFORCED
                );
            }
        }
        Command::ConfigReload | Command::Restart { .. } => {
            let report = if data["config"].is_object() {
                &data["config"]
            } else {
                data
            };
            if let Some(r) = data["restarted"].as_array() {
                let names: Vec<String> = r.iter().map(text).collect();
                let _ = writeln!(out, "restarted: {}", names.join(", "));
            }
            if let Some(changed) = report["changed"].as_array() {
                let names: Vec<String> = changed.iter().map(text).collect();
                let _ = writeln!(
                    out,
                    "configuration: {}",
                    if names.is_empty() {
                        "no changes".to_string()
                    } else {
                        format!("changed {}", names.join(", "))
                    }
                );
            }
            if let Some(w) = report["warning"].as_str() {
                let _ = writeln!(out, "warning: {w}");
            }
        }
        Command::ConfigSchema => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(data).unwrap_or_default()
            );
        }
        Command::Logs { .. } => {
            for r in data["records"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "{}", format_log_record(r));
            }
        }
        Command::HealthCheck { .. } => {
            let _ = writeln!(
                out,
                "{:<10} {:<10} {:<8} MESSAGE",
                "COMPONENT", "HEALTH", "STATUS"
            );
            for (name, c) in data["components"].as_object().into_iter().flatten() {
                let health = if c["healthy"] == true {
                    "healthy"
                } else {
                    "UNHEALTHY"
                };
                let _ = writeln!(
                    out,
                    "{name:<10} {health:<10} {:<8} {}",
                    text(&c["status"]),
                    text(&c["message"])
                );
            }
        }
        Command::DiagnosticsRun { .. } => {
            for c in data["checks"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "{:<5} {:<22} {}",
                    text(&c["status"]).to_ascii_uppercase(),
                    text(&c["name"]),
                    text(&c["detail"])
                );
            }
            let s = &data["summary"];
            let _ = writeln!(
                out,
                "\n{} ok, {} warn, {} fail",
                s["ok"], s["warn"], s["fail"]
            );
        }
        Command::Start { .. }
        | Command::Stop { .. }
        | Command::McpServeStdio
        | Command::McpAcquire { .. } => {}
        Command::Checks => {
            let _ = writeln!(
                out,
                "{:<20} {:<10} {:<8} {:>10} {:>5}  MESSAGE",
                "NAME", "KIND", "STATUS", "TOOK(ms)", "FAILS"
            );
            for c in data["checks"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "{:<20} {:<10} {:<8} {:>10} {:>5}  {}",
                    text(&c["name"]),
                    text(&c["kind"]),
                    text(&c["status"]),
                    text(&c["duration_ms"]),
                    text(&c["consecutive_failures"]),
                    text(&c["message"])
                );
            }
        }
        Command::ChecksRun { .. } => {
            let _ = writeln!(
                out,
                "{} {} ({} ms): {}",
                text(&data["name"]),
                text(&data["status"]),
                text(&data["duration_ms"]),
                text(&data["message"])
            );
        }
        Command::Token { rotate } => {
            let source = match data["path"].as_str() {
                Some(p) => format!("{} {p}", text(&data["source"])),
                None => text(&data["source"]),
            };
            let _ = writeln!(out, "{}", text(&data["token"]));
            let verb = if *rotate { "new token, " } else { "" };
            let _ = writeln!(
                out,
                "({verb}from {source}; send it as 'Authorization: Bearer TOKEN' on TCP)"
            );
            if let Some(page) = data["page"].as_str() {
                let _ = writeln!(out, "status page: {page}");
            }
        }
        Command::McpRegister { .. } => {
            let _ = writeln!(
                out,
                "registered {} ({})",
                text(&data["id"]),
                text(&data["status"])
            );
            for w in data["warnings"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "warning: {}", text(w));
            }
        }
        Command::McpDiscover { .. } => discover_table(&mut out, data),
        Command::McpList { .. } => {
            let _ = writeln!(
                out,
                "{:<16} {:<12} {:>7} {:>9} {:>8} {:>5}  CAPABILITIES",
                "ID", "STATUS", "PID", "UPTIME", "RESTARTS", "TOOLS"
            );
            for s in data["servers"].as_array().into_iter().flatten() {
                let caps: Vec<String> = s["capabilities"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect();
                let up = s["uptime_seconds"]
                    .as_u64()
                    .map(duration)
                    .unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    out,
                    "{:<16} {:<12} {:>7} {:>9} {:>8} {:>5}  {}",
                    text(&s["id"]),
                    text(&s["status"]),
                    text(&s["pid"]),
                    up,
                    text(&s["restarts"]),
                    text(&s["tools"]),
                    caps.join(",")
                );
            }
        }
        Command::McpCall { .. } => {
            let result = &data["result"];
            let mut printed = false;
            for item in result["content"].as_array().into_iter().flatten() {
                printed = true;
                match item["text"].as_str() {
                    Some(t) if item["type"] == "text" => {
                        let _ = writeln!(out, "{t}");
                    }
                    _ => {
                        let _ = writeln!(out, "{item}");
                    }
                }
            }
            if !printed {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(result).unwrap_or_default()
                );
            }
        }
        Command::Mcp { action, .. } => match action.as_str() {
            "show" => out.push_str(&show_server(data)),
            "tools" => {
                for t in data["tools"].as_array().into_iter().flatten() {
                    let required: Vec<String> = t["inputSchema"]["required"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(text)
                        .collect();
                    let desc = tool_summary(t["description"].as_str().unwrap_or(""));
                    let _ = writeln!(
                        out,
                        "{:<28} ({}) {desc}",
                        text(&t["name"]),
                        required.join(", ")
                    );
                }
            }
            "resources" => {
                for r in data["resources"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "{:<48} {:<24} {}",
                        text(&r["uri"]),
                        text(&r["name"]),
                        text(&r["mimeType"])
                    );
                }
                for t in data["resource_templates"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "{:<48} {:<24} {} (template)",
                        text(&t["uriTemplate"]),
                        text(&t["name"]),
                        text(&t["mimeType"])
                    );
                }
            }
            "prompts" => {
                for p in data["prompts"].as_array().into_iter().flatten() {
                    let arguments: Vec<String> = p["arguments"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| text(&a["name"]))
                        .collect();
                    let desc = tool_summary(p["description"].as_str().unwrap_or(""));
                    let _ = writeln!(
                        out,
                        "{:<28} ({}) {desc}",
                        text(&p["name"]),
                        arguments.join(", ")
                    );
                }
            }
            "unregister" => {
                let _ = writeln!(out, "unregistered {}", text(&data["unregistered"]));
            }
            _ => {
                let _ = writeln!(out, "{}: {}", text(&data["server"]), text(&data["status"]));
            }
        },
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_summary_is_the_first_non_empty_line_bounded() {
        assert_eq!(
            tool_summary("\n\n   Get the time.  \n more"),
            "Get the time."
        );
        assert_eq!(tool_summary("One line"), "One line");
        assert_eq!(tool_summary(""), "");
        assert_eq!(tool_summary(" \n\t\n"), "");
        assert_eq!(tool_summary("a\u{1b}[31mb"), "a [31mb");
        let long = "é".repeat(200);
        let s = tool_summary(&long);
        assert_eq!(s.chars().count(), SUMMARY_CHARS + 1);
        assert!(s.ends_with('…'));
        assert_eq!(
            tool_summary(&"x".repeat(SUMMARY_CHARS)).len(),
            SUMMARY_CHARS
        );
    }

    fn parse_argv(args: &[&str]) -> Result<Invocation, UsageError> {
        read_args(lexopt::Parser::from_args(args.iter().copied())).and_then(parse)
    }

    /// Routes what `argv` sends through the daemon's router.
    fn routed(argv: &[&str]) -> crate::api::Request {
        let Ok(Invocation::Run(_, command)) = parse_argv(argv) else {
            panic!("{argv:?} does not parse");
        };
        let (method, target, body) = request_for(&command);
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let req = crate::net::http::Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: Default::default(),
            body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
            keep_alive: true,
        };
        match crate::net::routes::route(&req) {
            Ok(r) => r,
            Err(e) => panic!("{argv:?} -> {method} {target}: {:?}", e.error),
        }
    }

    #[test]
    fn every_command_reaches_the_operation_it_means() {
        use crate::api::{
            AlertsRequest, ChecksRequest, ConfigRequest, ControlRequest, DaemonRequest,
            DiagnosticsRequest, HealthRequest, McpRequest, Request as R,
        };
        assert_eq!(
            routed(&["status", "--detailed"]),
            R::Daemon(DaemonRequest::Status { detailed: true })
        );
        assert_eq!(routed(&["checks"]), R::Checks(ChecksRequest::List));
        assert_eq!(
            routed(&["mcp", "discover", "--source", "npm", "knowledge", "graph&x"]),
            R::Discovery(crate::api::DiscoveryRequest::Discover {
                source: Some("npm"),
                query: "knowledge graph&x".into()
            })
        );
        assert_eq!(
            routed(&["mcp", "discover"]),
            R::Discovery(crate::api::DiscoveryRequest::Discover {
                source: None,
                query: String::new()
            })
        );
        assert!(parse_argv(&["mcp", "discover", "--source", "pypi"]).is_err());
        assert_eq!(
            routed(&["checks", "run", "db.main"]),
            R::Checks(ChecksRequest::Run {
                name: "db.main".into()
            })
        );
        assert_eq!(
            routed(&["config", "show", "--section", "http"]),
            R::Config(ConfigRequest::Show {
                section: Some("http".into())
            })
        );
        assert!(matches!(
            routed(&["config", "set", "daemon.log_level", "debug"]),
            R::Config(ConfigRequest::Update { .. })
        ));
        assert_eq!(
            routed(&["config", "reload"]),
            R::Config(ConfigRequest::Reload)
        );
        assert_eq!(
            routed(&["systems", "list"]),
            R::Vsm(crate::api::VsmRequest::List)
        );
        assert_eq!(
            routed(&["systems", "status", "system3"]),
            R::Vsm(crate::api::VsmRequest::Show {
                id: "system3".into()
            })
        );
        assert_eq!(
            routed(&[
                "systems",
                "trigger",
                "operations",
                "call",
                "--parameters",
                r#"{"server":"t"}"#
            ]),
            R::Vsm(crate::api::VsmRequest::Action {
                id: "operations".into(),
                action: "call".into(),
                parameters: json!({"server": "t"}),
            })
        );
        assert!(parse_argv(&["systems", "trigger", "system1"]).is_err());
        assert!(parse_argv(&[
            "systems",
            "trigger",
            "system1",
            "call",
            "--parameters",
            "[1]"
        ])
        .is_err());
        assert_eq!(
            routed(&["config", "schema"]),
            R::Config(ConfigRequest::Schema)
        );
        let R::Daemon(DaemonRequest::Logs { query, follow }) =
            routed(&["logs", "--level", "warn", "--lines", "5"])
        else {
            panic!("logs");
        };
        assert_eq!(
            (query.level, query.lines, follow),
            (log::LevelFilter::Warn, 5, false)
        );
        assert_eq!(
            routed(&["health", "check", "--component", "worker"]),
            R::Health(HealthRequest {
                component: Some("worker".into())
            })
        );
        assert_eq!(
            routed(&["diagnostics", "run", "--full"]),
            R::Diagnostics(DiagnosticsRequest { full: true })
        );
        assert_eq!(
            routed(&["restart", "--service", "worker"]),
            R::Control(ControlRequest::Restart {
                service: Some("worker".into())
            })
        );
        assert_eq!(
            routed(&["stop", "--now"]),
            R::Control(ControlRequest::Stop {
                service: None,
                shutdown: true,
                graceful: false
            })
        );
        assert_eq!(routed(&["token"]), R::Daemon(DaemonRequest::AuthToken));
        assert_eq!(
            routed(&["token", "rotate"]),
            R::Daemon(DaemonRequest::AuthTokenRotate)
        );
        assert!(matches!(
            routed(&["mcp", "register", "time", "--", "python3", "-m", "x"]),
            R::Mcp(McpRequest::Register { .. })
        ));
        // A package instead of an id and a command: the acquisition pipeline.
        assert_eq!(
            routed(&[
                "mcp",
                "register",
                "pypi:mcp-server-time==1.0.0",
                "--capability",
                "time"
            ]),
            R::Acquire(crate::api::AcquireRequest::Integrate {
                body: serde_json::json!({"package": "pypi:mcp-server-time==1.0.0",
                                         "capabilities": ["time"]}),
            })
        );
        assert_eq!(
            routed(&["mcp", "list", "--status", "active"]),
            R::Mcp(McpRequest::List { status: "active" })
        );
        let R::Mcp(McpRequest::Call { id, name, .. }) =
            routed(&["mcp", "call", "a b", "echo", "{}"])
        else {
            panic!("call");
        };
        assert_eq!((id.as_str(), name.as_str()), ("a b", "echo"));
        assert_eq!(
            routed(&["alerts"]),
            R::Alerts(AlertsRequest::List {
                state: Some("firing")
            })
        );
        assert_eq!(
            routed(&["alerts", "--all"]),
            R::Alerts(AlertsRequest::List { state: None })
        );
        assert_eq!(
            routed(&["alerts", "ack", "a-1"]),
            R::Alerts(AlertsRequest::Ack { id: "a-1".into() })
        );
        assert_eq!(
            routed(&["metrics"]),
            R::Daemon(DaemonRequest::Metrics { view: "all" })
        );
        assert_eq!(
            routed(&["metrics", "--type", "performance"]),
            R::Daemon(DaemonRequest::Metrics {
                view: "performance"
            })
        );
        assert_eq!(
            routed(&["metrics", "--type=health"]),
            R::Daemon(DaemonRequest::Metrics { view: "health" })
        );
        let id = || "a/b%".to_string();
        for (action, want) in [
            ("show", R::Mcp(McpRequest::Show { id: id() })),
            ("tools", R::Mcp(McpRequest::Tools { id: id() })),
            ("start", R::Mcp(McpRequest::Start { id: id() })),
            ("stop", R::Mcp(McpRequest::Stop { id: id() })),
            ("restart", R::Mcp(McpRequest::Restart { id: id() })),
            ("reset", R::Mcp(McpRequest::Reset { id: id() })),
            ("unregister", R::Mcp(McpRequest::Unregister { id: id() })),
        ] {
            assert_eq!(routed(&["mcp", action, "a/b%"]), want, "{action}");
        }
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse_argv(&["status", "--json", "--detailed"]),
            Ok(Invocation::Run(
                Global {
                    socket: None,
                    json: true
                },
                Command::Status { detailed: true }
            ))
        );
        assert_eq!(
            parse_argv(&["--socket", "/s", "config", "set", "a.b", "5"]),
            Ok(Invocation::Run(
                Global {
                    socket: Some("/s".into()),
                    json: false
                },
                Command::ConfigSet {
                    key: "a.b".into(),
                    value: "5".into()
                }
            ))
        );
        assert!(matches!(
            parse_argv(&["logs", "-f", "-n", "5", "--level=warn"]),
            Ok(Invocation::Run(
                _,
                Command::Logs {
                    follow: true,
                    lines: Some(5),
                    ..
                }
            ))
        ));
        assert!(matches!(
            parse_argv(&["stop"]),
            Ok(Invocation::Run(_, Command::Stop { graceful: true }))
        ));
        assert!(matches!(
            parse_argv(&["stop", "--now"]),
            Ok(Invocation::Run(_, Command::Stop { graceful: false }))
        ));
        assert!(parse_argv(&["frobnicate", "--help"]).is_err());
        assert!(matches!(
            parse_argv(&["config", "show", "--help"]),
            Ok(Invocation::Help(_))
        ));
        assert_eq!(parse_argv(&["--version"]), Ok(Invocation::Version));
    }

    #[test]
    fn mistakes_are_usage_errors() {
        for argv in [
            vec![],
            vec!["frobnicate"],
            vec!["status", "--bogus"],
            vec!["status", "extra"],
            vec!["status", "--full"],
            vec!["config", "set", "only-key"],
            vec!["logs", "--lines", "many"],
            vec!["logs", "--level", "loud"],
            vec!["stop", "--now", "--graceful"],
            vec!["status", "--socket"],
            vec!["alerts", "--type", "x"],
            vec!["alerts", "ack"],
            vec!["metrics", "--type", "cpu"],
            vec!["metrics", "extra"],
        ] {
            assert!(parse_argv(&argv).is_err(), "{argv:?} should be refused");
        }
    }

    #[test]
    fn token_commands_parse() {
        assert!(matches!(
            parse_argv(&["token", "--json"]),
            Ok(Invocation::Run(g, Command::Token { rotate: false })) if g.json
        ));
        assert!(matches!(
            parse_argv(&["token", "rotate"]),
            Ok(Invocation::Run(_, Command::Token { rotate: true }))
        ));
        assert!(parse_argv(&["token", "show"]).is_err());
        assert!(parse_argv(&["token", "--now"]).is_err());
    }

    #[test]
    fn every_command_has_help() {
        for cmd in [
            "start",
            "status",
            "config",
            "logs",
            "health",
            "diagnostics",
            "restart",
            "stop",
            "token",
            "alerts",
            "metrics",
            "systems",
            "reflect",
            "insights",
            "query",
        ] {
            match parse_argv(&[cmd, "--help"]) {
                Ok(Invocation::Help(text)) => assert!(text.contains("vsm-daemon"), "{cmd}"),
                other => panic!("{cmd}: {other:?}"),
            }
        }
    }
}
