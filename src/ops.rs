//! The ops table: every operation of the API, once. Each row ([`Op`]) says the method and path,
//! the WebSocket command that sends it, how its input becomes an [`api::Request`], who may call
//! it, and what the OpenAPI document says about it. The router (`net::routes`), the WebSocket
//! named commands (`net::ws`), the CLI's targets (`cli`) and the document (`openapi`) are all
//! derived from [`all`]; there is no second list to keep in step.
//!
//! Rows are grouped per concern (`DAEMON`, `CONFIG`, ...) so that a room can take its group
//! with it; [`GROUPS`] is the one place they are put together.
//!
//! Invariants (tested below and in the modules that derive from the table):
//! - (method, path), `operationId` and WebSocket command names are unique.
//! - Every row with a parser is routable; every `{id}` path declares its path parameter.
//! - Every declared boolean, integer or enum query parameter is read by the row's parser.
//!
//! [`api::Request`]: crate::api::Request

use crate::api::{Access, ApiError, Args, BodySpec, ErrorCode, EventQuery, In, LogQuery, Op};
use crate::api::{
    AcquireRequest, AlertsRequest, ChecksRequest, ConfigRequest, ControlRequest, DaemonRequest,
};
use crate::api::{DiagnosticsRequest, DiscoveryRequest, HealthRequest, McpRequest};
use crate::api::{Param, Produces, ReflectRequest, Request, Ty, VarietyRequest, VsmRequest};
use crate::spec::ServerSpec;
use serde_json::{json, Value};

/// Every group of rows, in routing order (the hot `GET /api/v1/health` near the front).
pub const GROUPS: &[&[Op]] = &[
    DAEMON,
    CONFIG,
    LOGS,
    EVENTS,
    METRICS,
    ALERTS,
    MCP,
    CHECKS,
    VSM,
    CONSCIOUSNESS,
    AUTH,
    META,
    PAGE,
    GATEWAY,
    VARIETY,
    DISCOVERY,
    ACQUIRE,
];

/// Every operation, in routing order.
pub fn all() -> impl Iterator<Item = &'static Op> {
    GROUPS.iter().flat_map(|g| g.iter())
}

/// The operation a WebSocket named command sends.
pub fn by_command(command: &str) -> Option<&'static Op> {
    all().find(|o| o.ws == Some(command))
}

const ID: Param = Param {
    name: "id",
    loc: In::Path,
    ty: Ty::ServerId,
    description: "MCP server id",
};

const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

const FOLLOW: Param = Param::query(
    "follow",
    Ty::Bool,
    "Keep the connection open and stream new entries as Server-Sent Events (same as `Accept: text/event-stream`)",
);

const SINCE: Param = Param::query(
    "since",
    Ty::UInt,
    "Only entries with a sequence number greater than this",
);

const SERVER_NOT_FOUND: &[ErrorCode] = &[ErrorCode::ServerNotFound];
const SERVER_START: &[ErrorCode] = &[ErrorCode::ServerNotFound, ErrorCode::Conflict];

// ----- daemon and its components -----------------------------------------------------------

/// `GET /api/v1/status`.
pub const STATUS: Op = Op {
    ws: Some("status"),
    params: &[Param::query(
        "detailed",
        Ty::Bool,
        "Add event-loop statistics (wake-ups, timers, connections, RSS, fds, context switches)",
    )],
    ..Op::new(
        "GET",
        "/api/v1/status",
        "getStatus",
        "daemon",
        "Daemon status",
        |a| {
            Ok(Request::Daemon(DaemonRequest::Status {
                detailed: a.flag("detailed")?,
            }))
        },
    )
};

/// `GET /api/v1/health`.
pub const HEALTH: Op = Op {
    ws: Some("health"),
    params: &[Param::query(
        "component",
        Ty::Str,
        "Only check this component",
    )],
    errors: &[ErrorCode::ComponentNotFound, ErrorCode::Unhealthy],
    access: Access::Public,
    ..Op::new(
        "GET",
        "/api/v1/health",
        "getHealth",
        "daemon",
        "Run the health checks (503 `unhealthy` with the results, `failing` listing the failing components, in `data`)",
        |a| {
            Ok(Request::Health(HealthRequest {
                component: a.text("component"),
            }))
        },
    )
};

/// `POST /api/v1/control/start`.
pub const CONTROL_START: Op = Op {
    ws: Some("control_start"),
    body: Some(BodySpec {
        required: false,
        schema: service_body,
    }),
    errors: &[ErrorCode::ComponentNotFound],
    ..Op::new(
        "POST",
        "/api/v1/control/start",
        "controlStart",
        "control",
        "Start one stopped component, or every stopped one",
        |a| {
            Ok(Request::Control(ControlRequest::Start {
                service: a.field_text("service")?,
            }))
        },
    )
};

/// `POST /api/v1/control/stop`.
pub const CONTROL_STOP: Op = Op {
    ws: Some("control_stop"),
    body: Some(BodySpec {
        required: false,
        schema: stop_body,
    }),
    errors: &[ErrorCode::ComponentNotFound, ErrorCode::Conflict],
    ..Op::new(
        "POST",
        "/api/v1/control/stop",
        "controlStop",
        "control",
        "Stop components, or (with `shutdown`) the whole daemon",
        |a| {
            Ok(Request::Control(ControlRequest::Stop {
                service: a.field_text("service")?,
                shutdown: a.field_flag("shutdown")?.unwrap_or(false),
                graceful: a.field_flag("graceful")?.unwrap_or(true),
            }))
        },
    )
};

/// `POST /api/v1/control/restart`.
pub const CONTROL_RESTART: Op = Op {
    ws: Some("control_restart"),
    body: Some(BodySpec {
        required: false,
        schema: service_body,
    }),
    errors: &[ErrorCode::ConfigInvalid, ErrorCode::ComponentNotFound],
    ..Op::new(
        "POST",
        "/api/v1/control/restart",
        "controlRestart",
        "control",
        "Restart one component, or reload the config and restart every component",
        |a| {
            Ok(Request::Control(ControlRequest::Restart {
                service: a.field_text("service")?,
            }))
        },
    )
};

/// `POST /api/v1/diagnostics/run`.
pub const DIAGNOSTICS: Op = Op {
    ws: Some("run_diagnostics"),
    params: &[Param::query(
        "full",
        Ty::Bool,
        "Also run the slower checks (fsync timing in the state dir)",
    )],
    body: Some(BodySpec {
        required: false,
        schema: diagnostics_body,
    }),
    errors: &[ErrorCode::Unhealthy],
    ..Op::new(
        "POST",
        "/api/v1/diagnostics/run",
        "runDiagnostics",
        "daemon",
        "Self-diagnostics (503 `unhealthy` with the checks in `data` when one fails)",
        |a| {
            Ok(Request::Diagnostics(DiagnosticsRequest {
                full: a.flag("full")? || a.field_flag("full")?.unwrap_or(false),
            }))
        },
    )
};

/// The daemon itself and its components.
pub const DAEMON: &[Op] = &[
    STATUS,
    HEALTH,
    CONTROL_START,
    CONTROL_STOP,
    CONTROL_RESTART,
    DIAGNOSTICS,
];

// ----- configuration -----------------------------------------------------------------------

/// `GET /api/v1/config`.
pub const CONFIG_SHOW: Op = Op {
    ws: Some("get_config"),
    params: &[Param::query(
        "section",
        Ty::Str,
        "Only this section, such as `monitoring`",
    )],
    errors: &[ErrorCode::ConfigKeyNotFound],
    ..Op::new(
        "GET",
        "/api/v1/config",
        "getConfig",
        "config",
        "Effective configuration (secrets redacted) and runtime overrides",
        |a| {
            Ok(Request::Config(ConfigRequest::Show {
                section: a.text("section"),
            }))
        },
    )
};

/// `PUT /api/v1/config`.
pub const CONFIG_UPDATE: Op = Op {
    ws: Some("update_config"),
    body: Some(BodySpec {
        required: true,
        schema: config_patch_body,
    }),
    errors: &[
        ErrorCode::ConfigInvalid,
        ErrorCode::ConfigKeyNotFound,
        ErrorCode::StateReadOnly,
        ErrorCode::PersistFailed,
        ErrorCode::Busy,
        ErrorCode::InsufficientStorage,
    ],
    ..Op::new(
        "PUT",
        "/api/v1/config",
        "updateConfig",
        "config",
        "Apply a JSON merge patch to the runtime overrides (validated, applied live, persisted)",
        |mut a| match a.take_body() {
            Some(patch @ Value::Object(_)) => Ok(Request::Config(ConfigRequest::Update { patch })),
            _ => Err(ApiError::new(
                ErrorCode::BadRequest,
                "body must be a JSON object in the shape of the configuration (a merge patch)",
            )),
        },
    )
};

/// `POST /api/v1/config/reload`.
pub const CONFIG_RELOAD: Op = Op {
    ws: Some("reload_config"),
    errors: &[ErrorCode::ConfigInvalid],
    ..Op::new(
        "POST",
        "/api/v1/config/reload",
        "reloadConfig",
        "config",
        "Re-read the configuration file (an invalid file is refused and the old config stays)",
        |_| Ok(Request::Config(ConfigRequest::Reload)),
    )
};

/// `GET /api/v1/config/schema`.
pub const CONFIG_SCHEMA: Op = Op {
    ws: Some("get_config_schema"),
    ..Op::new(
        "GET",
        "/api/v1/config/schema",
        "getConfigSchema",
        "config",
        "JSON Schema (draft 2020-12) of the configuration",
        |_| Ok(Request::Config(ConfigRequest::Schema)),
    )
};

/// Configuration.
pub const CONFIG: &[Op] = &[CONFIG_SHOW, CONFIG_UPDATE, CONFIG_RELOAD, CONFIG_SCHEMA];

// ----- logs and events ---------------------------------------------------------------------

/// `GET /api/v1/logs`.
pub const LOGS_GET: Op = Op {
    ws: Some("get_logs"),
    params: &[
        Param::query(
            "level",
            Ty::Enum(LEVELS),
            "Least severe level to include (`warn` = warn and error); default trace",
        ),
        Param::query(
            "lines",
            Ty::UIntDefault(100),
            "At most this many of the newest records (values above 100000 are clamped)",
        ),
        Param::query("limit", Ty::UInt, "Alias of `lines`"),
        Param::query(
            "component",
            Ty::Str,
            "Only records whose target starts with this",
        ),
        SINCE,
        FOLLOW,
    ],
    produces: Produces::JsonOrSse,
    ..Op::new(
        "GET",
        "/api/v1/logs",
        "getLogs",
        "logs",
        "Recent log records, or a live stream of new ones (SSE `event: log`)",
        logs_request,
    )
};

fn logs_request(a: Args) -> Result<Request, ApiError> {
    Ok(Request::Daemon(DaemonRequest::Logs {
        query: LogQuery {
            level: match a.text("level") {
                Some(l) => parse_level(&l)?,
                None => log::LevelFilter::Trace,
            },
            lines: a
                .number("lines")?
                .or(a.number("limit")?)
                .unwrap_or(100)
                .min(100_000) as usize,
            component: a.text("component"),
            since: a.number("since")?,
        },
        follow: a.event_stream || a.flag("follow")?,
    }))
}

/// Parses a log level name.
///
/// # Errors
/// `invalid_parameter` naming `level`.
pub fn parse_level(text: &str) -> Result<log::LevelFilter, ApiError> {
    text.parse::<log::LevelFilter>().map_err(|_| {
        ApiError::field(
            ErrorCode::InvalidParameter,
            "level",
            format!("unknown level '{text}': use error, warn, info, debug or trace"),
        )
    })
}

/// Logs.
pub const LOGS: &[Op] = &[LOGS_GET];

/// `GET /api/v1/events`.
pub const EVENTS_GET: Op = Op {
    ws: Some("get_events"),
    params: &[
        Param::query(
            "type",
            Ty::Str,
            "Only events of this type, such as `mcp_server_status_change`",
        ),
        Param::query(
            "channel",
            Ty::Str,
            "Only events of this channel, such as `mcp_servers`",
        ),
        SINCE,
        Param::query(
            "limit",
            Ty::UIntDefault(100),
            "At most this many of the newest events (values above 10000 are clamped)",
        ),
        FOLLOW,
    ],
    produces: Produces::JsonOrSse,
    ..Op::new(
        "GET",
        "/api/v1/events",
        "getEvents",
        "events",
        "Event history, or a live stream of new events (SSE, `event:` = the event type)",
        |a| {
            Ok(Request::Daemon(DaemonRequest::Events {
                query: EventQuery {
                    kind: a.text("type"),
                    channel: a.text("channel"),
                    since: a.number("since")?,
                    limit: a.number("limit")?.unwrap_or(100).min(10_000) as usize,
                },
                follow: a.event_stream || a.flag("follow")?,
            }))
        },
    )
};

/// Events.
pub const EVENTS: &[Op] = &[EVENTS_GET];

// ----- metrics -----------------------------------------------------------------------------

/// `GET /api/v1/metrics`.
pub const METRICS_ALL: Op = Op {
    ws: Some("get_metrics"),
    ..Op::new(
        "GET",
        "/api/v1/metrics",
        "getMetrics",
        "metrics",
        "Daemon and host metrics",
        |_| Ok(Request::Daemon(DaemonRequest::Metrics { view: "all" })),
    )
};

/// `GET /api/v1/metrics/performance`.
pub const METRICS_PERFORMANCE: Op = Op {
    ws: Some("get_performance_metrics"),
    ..Op::new(
        "GET",
        "/api/v1/metrics/performance",
        "getPerformanceMetrics",
        "metrics",
        "Per-route request counts and latency, per-server tool-call counts and latency, error rates",
        |_| {
            Ok(Request::Daemon(DaemonRequest::Metrics {
                view: "performance",
            }))
        },
    )
};

/// `GET /api/v1/metrics/health`.
pub const METRICS_HEALTH: Op = Op {
    ws: Some("get_health_metrics"),
    ..Op::new(
        "GET",
        "/api/v1/metrics/health",
        "getHealthMetrics",
        "metrics",
        "Health metrics of the daemon and its MCP servers",
        |_| Ok(Request::Daemon(DaemonRequest::Metrics { view: "health" })),
    )
};

/// `GET /metrics`.
pub const PROMETHEUS: Op = Op {
    produces: Produces::Prometheus,
    ..Op::new(
        "GET",
        "/metrics",
        "getPrometheusMetrics",
        "metrics",
        "Metrics in the Prometheus text exposition format 0.0.4 (no envelope)",
        |_| Ok(Request::Daemon(DaemonRequest::Prometheus)),
    )
};

/// Metrics.
pub const METRICS: &[Op] = &[METRICS_ALL, METRICS_PERFORMANCE, METRICS_HEALTH, PROMETHEUS];

// ----- alerts ------------------------------------------------------------------------------

/// `GET /api/v1/alerts`.
pub const ALERTS_LIST: Op = Op {
    ws: Some("get_alerts"),
    params: &[Param::query(
        "state",
        Ty::Enum(&["firing", "resolved", "all"]),
        "Only firing or only resolved alerts; default all",
    )],
    ..Op::new(
        "GET",
        "/api/v1/alerts",
        "listAlerts",
        "alerts",
        "Alerts raised by the monitors (firing and recently resolved), newest first",
        |a| {
            let state = match a.text("state").as_deref() {
                None | Some("all") => None,
                Some("firing") => Some("firing"),
                Some("resolved") => Some("resolved"),
                Some(other) => {
                    return Err(ApiError::field(
                        ErrorCode::InvalidParameter,
                        "state",
                        format!("'{other}' is not one of firing, resolved, all"),
                    ))
                }
            };
            Ok(Request::Alerts(AlertsRequest::List { state }))
        },
    )
};

/// `POST /api/v1/alerts/{id}/ack`.
pub const ALERTS_ACK: Op = Op {
    ws: Some("ack_alert"),
    params: &[Param {
        name: "id",
        loc: In::Path,
        ty: Ty::Str,
        description: "Alert id (`a-N`)",
    }],
    errors: &[ErrorCode::AlertNotFound],
    ..Op::new(
        "POST",
        "/api/v1/alerts/{id}/ack",
        "ackAlert",
        "alerts",
        "Acknowledge an alert (it stays in the list, marked `acked`)",
        |a| Ok(Request::Alerts(AlertsRequest::Ack { id: a.id })),
    )
};

/// Alerts.
pub const ALERTS: &[Op] = &[ALERTS_LIST, ALERTS_ACK];

// ----- MCP servers -------------------------------------------------------------------------

/// `GET /api/v1/mcp/servers`.
pub const MCP_LIST: Op = Op {
    ws: Some("mcp_list_servers"),
    params: &[Param::query(
        "status",
        Ty::Enum(&["active", "inactive", "all"]),
        "Filter by state; default all",
    )],
    ..Op::new(
        "GET",
        "/api/v1/mcp/servers",
        "listMcpServers",
        "mcp",
        "List MCP servers",
        |a| {
            let status = match a.text("status").as_deref() {
                None | Some("all") => "all",
                Some("active") => "active",
                Some("inactive") => "inactive",
                Some(other) => {
                    return Err(ApiError::field(
                        ErrorCode::InvalidParameter,
                        "status",
                        format!("'{other}' is not one of active, inactive, all"),
                    ))
                }
            };
            Ok(Request::Mcp(McpRequest::List { status }))
        },
    )
};

/// `POST /api/v1/mcp/servers`.
pub const MCP_REGISTER: Op = Op {
    ws: Some("mcp_register_server"),
    body: Some(BodySpec {
        required: true,
        schema: server_spec_ref,
    }),
    errors: &[
        ErrorCode::AlreadyExists,
        ErrorCode::CapabilityNotAllowed,
        ErrorCode::StateReadOnly,
        ErrorCode::PersistFailed,
        ErrorCode::Busy,
        ErrorCode::InsufficientStorage,
    ],
    ..Op::new(
        "POST",
        "/api/v1/mcp/servers",
        "registerMcpServer",
        "mcp",
        "Register an MCP server (kept across restarts; started when `autostart`)",
        |mut a| {
            let Some(spec) = a.take_body() else {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "body must be a server spec object",
                ));
            };
            let spec: ServerSpec = serde_json::from_value(spec).map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("invalid server spec: {e}"),
                )
            })?;
            Ok(Request::Mcp(McpRequest::Register {
                spec: Box::new(spec),
            }))
        },
    )
};

/// `GET /api/v1/mcp/servers/{id}`.
pub const MCP_SHOW: Op = Op {
    ws: Some("mcp_get_server"),
    params: &[ID],
    errors: SERVER_NOT_FOUND,
    ..Op::new(
        "GET",
        "/api/v1/mcp/servers/{id}",
        "getMcpServer",
        "mcp",
        "One MCP server: spec, state history, tools, last errors, stderr tail",
        |a| Ok(Request::Mcp(McpRequest::Show { id: a.id })),
    )
};

/// `DELETE /api/v1/mcp/servers/{id}`.
pub const MCP_UNREGISTER: Op = Op {
    ws: Some("mcp_unregister_server"),
    params: &[ID],
    errors: &[
        ErrorCode::ServerNotFound,
        ErrorCode::Conflict,
        ErrorCode::StateReadOnly,
        ErrorCode::PersistFailed,
        ErrorCode::Busy,
        ErrorCode::InsufficientStorage,
    ],
    ..Op::new(
        "DELETE",
        "/api/v1/mcp/servers/{id}",
        "unregisterMcpServer",
        "mcp",
        "Unregister an MCP server, stopping it first (409 for servers declared in the config file)",
        |a| Ok(Request::Mcp(McpRequest::Unregister { id: a.id })),
    )
};

/// `POST /api/v1/mcp/servers/{id}/start`.
pub const MCP_START: Op = Op {
    ws: Some("mcp_start_server"),
    params: &[ID],
    errors: SERVER_START,
    ..Op::new(
        "POST",
        "/api/v1/mcp/servers/{id}/start",
        "startMcpServer",
        "mcp",
        "Start an MCP server (409 when `max_concurrent_servers` is reached)",
        |a| Ok(Request::Mcp(McpRequest::Start { id: a.id })),
    )
};

/// `POST /api/v1/mcp/servers/{id}/stop`.
pub const MCP_STOP: Op = Op {
    ws: Some("mcp_stop_server"),
    params: &[ID],
    errors: SERVER_NOT_FOUND,
    ..Op::new(
        "POST",
        "/api/v1/mcp/servers/{id}/stop",
        "stopMcpServer",
        "mcp",
        "Stop an MCP server",
        |a| Ok(Request::Mcp(McpRequest::Stop { id: a.id })),
    )
};

/// `POST /api/v1/mcp/servers/{id}/restart`.
pub const MCP_RESTART: Op = Op {
    ws: Some("mcp_restart_server"),
    params: &[ID],
    errors: SERVER_START,
    ..Op::new(
        "POST",
        "/api/v1/mcp/servers/{id}/restart",
        "restartMcpServer",
        "mcp",
        "Restart an MCP server",
        |a| Ok(Request::Mcp(McpRequest::Restart { id: a.id })),
    )
};

/// `POST /api/v1/mcp/servers/{id}/reset`.
pub const MCP_RESET: Op = Op {
    ws: Some("mcp_reset_server"),
    params: &[ID],
    errors: SERVER_START,
    ..Op::new(
        "POST",
        "/api/v1/mcp/servers/{id}/reset",
        "resetMcpServer",
        "mcp",
        "Close an MCP server's open circuit breaker (and start it)",
        |a| Ok(Request::Mcp(McpRequest::Reset { id: a.id })),
    )
};

/// `GET /api/v1/mcp/servers/{id}/tools`.
pub const MCP_TOOLS: Op = Op {
    ws: Some("mcp_list_tools"),
    params: &[ID],
    errors: SERVER_NOT_FOUND,
    ..Op::new(
        "GET",
        "/api/v1/mcp/servers/{id}/tools",
        "listMcpTools",
        "mcp",
        "An MCP server's tools with their input schemas",
        |a| Ok(Request::Mcp(McpRequest::Tools { id: a.id })),
    )
};

/// `POST /api/v1/mcp/servers/{id}/tools/call`.
pub const MCP_CALL: Op = Op {
    ws: Some("mcp_call_tool"),
    params: &[ID],
    body: Some(BodySpec {
        required: true,
        schema: tool_call_body,
    }),
    errors: &[
        ErrorCode::ServerNotFound,
        ErrorCode::ToolNotFound,
        ErrorCode::CapabilityBlocked,
        ErrorCode::Conflict,
        ErrorCode::ToolError,
        ErrorCode::McpError,
        ErrorCode::ServerExited,
        ErrorCode::Busy,
        ErrorCode::Timeout,
    ],
    ..Op::new(
        "POST",
        "/api/v1/mcp/servers/{id}/tools/call",
        "callMcpTool",
        "mcp",
        "Call a tool (the tool's result in `data`; `isError` answers 422 `tool_error`)",
        tool_call_request,
    )
};

fn tool_call_request(a: Args) -> Result<Request, ApiError> {
    let name = a.field_text("name")?.ok_or_else(|| {
        ApiError::field(
            ErrorCode::InvalidParameter,
            "name",
            "the tool name is required",
        )
    })?;
    let arguments = match a.field("arguments") {
        None => Value::Object(Default::default()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            return Err(ApiError::field(
                ErrorCode::InvalidParameter,
                "arguments",
                "must be an object",
            ))
        }
    };
    let timeout_ms = match a.field("timeout_ms") {
        None => None,
        // JSON Schema's integer includes 3056.0.
        Some(v) => match v.as_u64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }) {
            Some(n) if (1..=3_600_000).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::field(
                    ErrorCode::InvalidParameter,
                    "timeout_ms",
                    "must be an integer between 1 and 3600000",
                ))
            }
        },
    };
    Ok(Request::Mcp(McpRequest::Call {
        id: a.id,
        name,
        arguments,
        timeout_ms,
        progress_token: None,
    }))
}

/// MCP servers.
pub const MCP: &[Op] = &[
    MCP_LIST,
    MCP_REGISTER,
    MCP_SHOW,
    MCP_UNREGISTER,
    MCP_START,
    MCP_STOP,
    MCP_RESTART,
    MCP_RESET,
    MCP_TOOLS,
    MCP_CALL,
];

// ----- the API token -----------------------------------------------------------------------

/// `GET /api/v1/auth/token`.
pub const AUTH_TOKEN: Op = Op {
    access: Access::ControlSocket,
    ..Op::new(
        "GET",
        "/api/v1/auth/token",
        "getApiToken",
        "auth",
        "The TCP API token in effect and its source (`config`, `file`, `generated`); control socket only (403 over TCP)",
        |_| Ok(Request::Daemon(DaemonRequest::AuthToken)),
    )
};

/// `POST /api/v1/auth/token/rotate`.
pub const AUTH_TOKEN_ROTATE: Op = Op {
    access: Access::ControlSocket,
    errors: &[ErrorCode::Conflict],
    ..Op::new(
        "POST",
        "/api/v1/auth/token/rotate",
        "rotateApiToken",
        "auth",
        "Replace the generated TCP API token (409 when it comes from the config); control socket only (403 over TCP)",
        |_| Ok(Request::Daemon(DaemonRequest::AuthTokenRotate)),
    )
};

/// The TCP API token.
pub const AUTH: &[Op] = &[AUTH_TOKEN, AUTH_TOKEN_ROTATE];

// ----- declared checks ---------------------------------------------------------------------

const CHECK_NAME: Param = Param {
    name: "id",
    loc: In::Path,
    ty: Ty::Str,
    description: "check name (`[[checks]]` name)",
};

/// `GET /api/v1/checks`.
pub const CHECKS_LIST: Op = Op {
    ws: Some("checks_list"),
    ..Op::new(
        "GET",
        "/api/v1/checks",
        "listChecks",
        "checks",
        "Declared checks with their last result (up/down, message, duration, last change, consecutive failures)",
        |_| Ok(Request::Checks(ChecksRequest::List)),
    )
};

/// `POST /api/v1/checks/{id}/run`.
pub const CHECKS_RUN: Op = Op {
    ws: Some("checks_run"),
    params: &[CHECK_NAME],
    errors: &[ErrorCode::NotFound, ErrorCode::Busy],
    ..Op::new(
        "POST",
        "/api/v1/checks/{id}/run",
        "runCheck",
        "checks",
        "Run a declared check now (or join its run in flight) and answer with the result when it ends",
        |a| Ok(Request::Checks(ChecksRequest::Run { name: a.id })),
    )
};

// ----- the VSM systems ---------------------------------------------------------------------

const SYSTEM_ID: Param = Param {
    name: "id",
    loc: In::Path,
    ty: Ty::Str,
    description: "VSM system: `system1`…`system5` or `operations`, `coordination`, `control`, `intelligence`, `policy`",
};

/// `GET /api/v1/vsm/systems`.
pub const VSM_SYSTEMS: Op = Op {
    ws: Some("vsm_systems"),
    ..Op::new(
        "GET",
        "/api/v1/vsm/systems",
        "listVsmSystems",
        "vsm",
        "The five VSM systems: status (and why), counter by kind, recent activity, action",
        |_| Ok(Request::Vsm(VsmRequest::List)),
    )
};

/// `GET /api/v1/vsm/systems/{id}`.
pub const VSM_SYSTEM: Op = Op {
    ws: Some("vsm_system"),
    params: &[SYSTEM_ID],
    errors: &[ErrorCode::SystemNotFound],
    ..Op::new(
        "GET",
        "/api/v1/vsm/systems/{id}",
        "getVsmSystem",
        "vsm",
        "One VSM system",
        |a| Ok(Request::Vsm(VsmRequest::Show { id: a.id })),
    )
};

/// `POST /api/v1/vsm/systems/{id}/action`.
pub const VSM_ACTION: Op = Op {
    ws: Some("vsm_action"),
    params: &[SYSTEM_ID],
    body: Some(BodySpec {
        required: true,
        schema: vsm_action_body,
    }),
    errors: &[
        ErrorCode::SystemNotFound,
        ErrorCode::Busy,
        ErrorCode::ServerNotFound,
        ErrorCode::ToolError,
        ErrorCode::Timeout,
    ],
    ..Op::new(
        "POST",
        "/api/v1/vsm/systems/{id}/action",
        "runVsmAction",
        "vsm",
        "Run a system's action: S1 `call` ({server, tool, arguments, timeout_ms}), S2 `reset_backoff`, S3 `audit`; S4 `scan` and S5 `decide` answer 501 until their rooms exist",
        |a| {
            let Some(action) = a.field_text("action")? else {
                return Err(ApiError::field(
                    ErrorCode::InvalidParameter,
                    "action",
                    "required: the action's name",
                ));
            };
            let parameters = a.field("parameters").cloned().unwrap_or(Value::Null);
            if !(parameters.is_object() || parameters.is_null()) {
                return Err(ApiError::field(
                    ErrorCode::InvalidParameter,
                    "parameters",
                    "must be an object",
                ));
            }
            Ok(Request::Vsm(VsmRequest::Action {
                id: a.id,
                action,
                parameters,
            }))
        },
    )
};

/// The VSM systems.
pub const VSM: &[Op] = &[VSM_SYSTEMS, VSM_SYSTEM, VSM_ACTION];

// ----- reflection ("consciousness") --------------------------------------------------------

/// `GET /api/v1/consciousness`.
pub const CONSCIOUSNESS_STATE: Op = Op {
    ws: Some("consciousness_state"),
    ..Op::new(
        "GET",
        "/api/v1/consciousness",
        "getConsciousness",
        "consciousness",
        "The self-model: what the daemon is doing, health, variety, firing alerts, resource use and its trend, the last reflection and what changed since",
        |_| Ok(Request::Reflect(ReflectRequest::State)),
    )
};

/// `POST /api/v1/consciousness/reflect`.
pub const CONSCIOUSNESS_REFLECT: Op = Op {
    ws: Some("consciousness_reflect"),
    ..Op::new(
        "POST",
        "/api/v1/consciousness/reflect",
        "reflect",
        "consciousness",
        "Run the analysers over the record now; answers with the new insights",
        |_| Ok(Request::Reflect(ReflectRequest::Reflect)),
    )
};

/// `GET /api/v1/consciousness/insights`.
pub const CONSCIOUSNESS_INSIGHTS: Op = Op {
    ws: Some("consciousness_insights"),
    params: &[
        Param::query("since", Ty::UInt, "Only insights with a larger id"),
        Param::query(
            "type",
            Ty::Str,
            "Only this insight type (`pattern_recognition`, `trend`, `anomaly`) or analyser",
        ),
        Param::query(
            "min_significance",
            Ty::Str,
            "Only insights at least this significant (0 to 1)",
        ),
    ],
    ..Op::new(
        "GET",
        "/api/v1/consciousness/insights",
        "listInsights",
        "consciousness",
        "Insights kept (bounded by consciousness.memory_limit), oldest first, with evidence and recommendations",
        |a| {
            let min_significance = match a.text("min_significance") {
                None => None,
                Some(t) => match t.parse::<f64>() {
                    Ok(v) if (0.0..=1.0).contains(&v) => Some(v),
                    _ => {
                        return Err(ApiError::field(
                            ErrorCode::InvalidParameter,
                            "min_significance",
                            format!("'{t}' is not a number from 0 to 1"),
                        ))
                    }
                },
            };
            Ok(Request::Reflect(ReflectRequest::Insights {
                since: a.number("since")?,
                kind: a.text("type"),
                min_significance,
            }))
        },
    )
};

/// `POST /api/v1/consciousness/query`.
pub const CONSCIOUSNESS_QUERY: Op = Op {
    ws: Some("consciousness_query"),
    body: Some(BodySpec {
        required: true,
        schema: query_body,
    }),
    errors: &[ErrorCode::SubjectNotFound],
    ..Op::new(
        "POST",
        "/api/v1/consciousness/query",
        "queryConsciousness",
        "consciousness",
        "A structured question answered from the record: {\"about\": \"server\"|\"capability\"|\"alert\"|\"decision\", \"id\"}",
        |a| {
            let need = |k: &str| -> Result<String, ApiError> {
                a.field_text(k)?.ok_or_else(|| {
                    ApiError::field(ErrorCode::InvalidParameter, k, "required: a string")
                })
            };
            Ok(Request::Reflect(ReflectRequest::Query {
                about: need("about")?,
                id: need("id")?,
            }))
        },
    )
};

/// `POST /api/v1/consciousness/decision`.
pub const CONSCIOUSNESS_DECISION: Op = Op {
    ws: Some("consciousness_decision"),
    body: Some(BodySpec {
        required: true,
        schema: decision_body,
    }),
    errors: &[ErrorCode::SubjectNotFound],
    ..Op::new(
        "POST",
        "/api/v1/consciousness/decision",
        "decisionSupport",
        "consciousness",
        "Rank the options for a situation (`degraded_server`: restart, stop or wait) with each criterion's score and the weights",
        |a| {
            let need = |k: &str| -> Result<String, ApiError> {
                a.field_text(k)?.ok_or_else(|| {
                    ApiError::field(ErrorCode::InvalidParameter, k, "required: a string")
                })
            };
            Ok(Request::Reflect(ReflectRequest::Decision {
                situation: need("situation")?,
                subject: need("subject")?,
            }))
        },
    )
};

/// Reflection.
pub const CONSCIOUSNESS: &[Op] = &[
    CONSCIOUSNESS_STATE,
    CONSCIOUSNESS_REFLECT,
    CONSCIOUSNESS_INSIGHTS,
    CONSCIOUSNESS_QUERY,
    CONSCIOUSNESS_DECISION,
];

const ACTION_NAME: Param = Param {
    name: "id",
    loc: In::Path,
    ty: Ty::Str,
    description: "action name (`[actions.NAME]`)",
};

/// `POST /api/v1/actions/{id}/test`.
pub const ACTIONS_TEST: Op = Op {
    ws: Some("actions_test"),
    params: &[ACTION_NAME],
    errors: &[ErrorCode::NotFound, ErrorCode::Busy],
    ..Op::new(
        "POST",
        "/api/v1/actions/{id}/test",
        "testAction",
        "checks",
        "Run a webhook or exec action with a test alert (answers with the delivery id; its outcome is listed under `actions.deliveries` of GET /api/v1/checks)",
        |a| Ok(Request::Checks(ChecksRequest::TestAction { name: a.id })),
    )
};

/// The declared checks' and actions' rows.
pub const CHECKS: &[Op] = &[CHECKS_LIST, CHECKS_RUN, ACTIONS_TEST];

// ----- acquisition -------------------------------------------------------------------------

/// `POST /api/v1/capabilities/integrate`.
pub const CAPABILITIES_INTEGRATE: Op = Op {
    ws: Some("integrate_capability"),
    body: Some(BodySpec {
        required: true,
        schema: integrate_body,
    }),
    errors: &[ErrorCode::Busy, ErrorCode::Conflict],
    ..Op::new(
        "POST",
        "/api/v1/capabilities/integrate",
        "integrateCapability",
        "acquisition",
        "Install, sandbox-test, assess, register and start a package (202 with the acquisition id; follow it at its status_url or through capability_acquisition_* events)",
        |mut a| {
            let Some(body) = a.take_body() else {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "body must be {\"package\": \"npm:NAME@VERSION\"} or a registry server entry",
                ));
            };
            Ok(Request::Acquire(AcquireRequest::Integrate { body }))
        },
    )
};

const ACQUISITION_ID: Param = Param {
    name: "id",
    loc: In::Path,
    ty: Ty::Str,
    description: "Acquisition id (`acq-N`)",
};

/// `GET /api/v1/capabilities/acquisitions/{id}`.
pub const ACQUISITION_SHOW: Op = Op {
    ws: Some("get_acquisition"),
    params: &[ACQUISITION_ID],
    errors: &[ErrorCode::NotFound],
    ..Op::new(
        "GET",
        "/api/v1/capabilities/acquisitions/{id}",
        "getAcquisition",
        "acquisition",
        "One acquisition: its state, the step it is at, each step's time and outcome, and the assessment",
        |a| Ok(Request::Acquire(AcquireRequest::Show { id: a.id })),
    )
};

/// `GET /api/v1/capabilities/acquisitions`.
pub const ACQUISITIONS: Op = Op {
    ws: Some("list_acquisitions"),
    ..Op::new(
        "GET",
        "/api/v1/capabilities/acquisitions",
        "listAcquisitions",
        "acquisition",
        "Every acquisition kept (queued, running and the last finished ones), newest first, each with who asked for it",
        |_| Ok(Request::Acquire(AcquireRequest::List)),
    )
};

/// `GET /api/v1/decisions`.
pub const DECISIONS: Op = Op {
    ws: Some("get_decisions"),
    params: &[
        Param::query("since", Ty::UInt, "Only decisions with an id greater than this"),
        Param::query(
            "verdict",
            Ty::Enum(&["approved", "refused"]),
            "Only approved or only refused decisions",
        ),
    ],
    ..Op::new(
        "GET",
        "/api/v1/decisions",
        "listDecisions",
        "acquisition",
        "Decision records of the acquisition pipeline (every criterion, reason, package, time and who asked), oldest first; bounded, persisted",
        |a| {
            let verdict = match a.text("verdict").as_deref() {
                None => None,
                Some("approved") => Some("approved"),
                Some("refused") => Some("refused"),
                Some(other) => {
                    return Err(ApiError::field(
                        ErrorCode::InvalidParameter,
                        "verdict",
                        format!("'{other}' is not one of approved, refused"),
                    ))
                }
            };
            Ok(Request::Acquire(AcquireRequest::Decisions {
                since: a.number("since")?,
                verdict,
            }))
        },
    )
};

/// The acquisition pipeline's rows.
pub const ACQUIRE: &[Op] = &[
    CAPABILITIES_INTEGRATE,
    ACQUISITIONS,
    ACQUISITION_SHOW,
    DECISIONS,
];

/// Routes whose success is `202 Accepted` (the work goes on after the answer).
pub const ACCEPTED: &[&str] = &[CAPABILITIES_INTEGRATE.path];

// ----- the API itself ----------------------------------------------------------------------

/// `GET /api/v1/openapi.json`.
pub const OPENAPI: Op = Op {
    produces: Produces::Document,
    ..Op::new(
        "GET",
        "/api/v1/openapi.json",
        "getOpenApi",
        "meta",
        "This OpenAPI 3.1 document (no envelope)",
        |_| Ok(Request::Daemon(DaemonRequest::OpenApi)),
    )
};

/// `GET /ws/monitor`: documented here, never routed (the connection takes the upgrade over
/// before routing, so it has no parser).
pub const WS_MONITOR: Op = Op {
    method: "GET",
    path: "/ws/monitor",
    ws: None,
    id: "monitorWebSocket",
    tag: "events",
    summary: "WebSocket upgrade for the live monitor stream of events",
    params: &[],
    body: None,
    errors: &[],
    produces: Produces::WebSocket,
    access: Access::Token,
    parse: None,
};

/// This document and the monitor stream.
pub const META: &[Op] = &[OPENAPI, WS_MONITOR];

// ----- the MCP gateway ---------------------------------------------------------------------

/// A `/mcp` row: documented here, never routed (the gateway room takes `/mcp` after the
/// access checks, since its answers are JSON-RPC, not the envelope).
const fn mcp_endpoint(method: &'static str, id: &'static str, summary: &'static str) -> Op {
    Op {
        method,
        path: "/mcp",
        ws: None,
        id,
        tag: "gateway",
        summary,
        params: &[],
        body: None,
        errors: &[],
        produces: Produces::McpStream,
        access: Access::Token,
        parse: None,
    }
}

/// `/mcp`: the daemon as one MCP server (Streamable HTTP) with every active server's tools.
pub const GATEWAY: &[Op] = &[
    mcp_endpoint(
        "POST",
        "mcpPost",
        "MCP Streamable HTTP: one JSON-RPC message (initialize, ping, tools/list, tools/call, notifications)",
    ),
    mcp_endpoint(
        "GET",
        "mcpStream",
        "MCP Streamable HTTP: the session's Server-Sent Events stream (notifications/tools/list_changed)",
    ),
    mcp_endpoint("DELETE", "mcpEndSession", "MCP Streamable HTTP: end the session"),
];

// ----- the status page ---------------------------------------------------------------------

/// `GET /`: the status page (public: it holds no data; the data needs the token).
pub const PAGE_HTML: Op = Op {
    produces: Produces::Page("text/html"),
    access: Access::Public,
    ..Op::new(
        "GET",
        "/",
        "getStatusPage",
        "page",
        "The status page (HTML; no token needed: it asks for one and reads everything over /ws/monitor)",
        |_| {
            Ok(Request::Daemon(DaemonRequest::Page {
                asset: crate::page::Asset::Html,
            }))
        },
    )
};

/// `GET /ui/app.js`.
pub const PAGE_JS: Op = Op {
    produces: Produces::Page("text/javascript"),
    access: Access::Public,
    ..Op::new(
        "GET",
        "/ui/app.js",
        "getStatusPageScript",
        "page",
        "The status page's script",
        |_| {
            Ok(Request::Daemon(DaemonRequest::Page {
                asset: crate::page::Asset::Js,
            }))
        },
    )
};

/// `GET /ui/app.css`.
pub const PAGE_CSS: Op = Op {
    produces: Produces::Page("text/css"),
    access: Access::Public,
    ..Op::new(
        "GET",
        "/ui/app.css",
        "getStatusPageStyle",
        "page",
        "The status page's style sheet",
        |_| {
            Ok(Request::Daemon(DaemonRequest::Page {
                asset: crate::page::Asset::Css,
            }))
        },
    )
};

/// `GET /ui/icon.svg`.
pub const PAGE_ICON: Op = Op {
    produces: Produces::Page("image/svg+xml"),
    access: Access::Public,
    ..Op::new(
        "GET",
        "/ui/icon.svg",
        "getStatusPageIcon",
        "page",
        "The status page's icon",
        |_| {
            Ok(Request::Daemon(DaemonRequest::Page {
                asset: crate::page::Asset::Icon,
            }))
        },
    )
};

/// The embedded status page (`src/page/`).
pub const PAGE: &[Op] = &[PAGE_HTML, PAGE_JS, PAGE_CSS, PAGE_ICON];

// ----- request body schemas ----------------------------------------------------------------

fn service_body() -> Value {
    json!({
        "type": "object",
        "properties": {
            "service": {
                "type": ["string", "null"],
                "description": "Component (`control`, `worker`, `monitor`); all when absent",
            },
        },
    })
}

fn stop_body() -> Value {
    let mut body = service_body();
    body["properties"]["shutdown"] = json!({
        "type": ["boolean", "null"],
        "default": false,
        "description": "End the daemon process",
    });
    body["properties"]["graceful"] = json!({
        "type": ["boolean", "null"],
        "default": true,
        "description": "Stop children gracefully instead of killing them",
    });
    body
}

fn vsm_action_body() -> Value {
    json!({
        "type": "object",
        "required": ["action"],
        "properties": {
            "action": {"type": "string", "enum": ["call", "reset_backoff", "audit", "scan", "decide"]},
            "parameters": {"type": ["object", "null"]},
        },
    })
}

fn query_body() -> Value {
    json!({
        "type": "object",
        "required": ["about", "id"],
        "properties": {
            "about": {"type": "string", "enum": ["server", "capability", "alert", "decision"]},
            "id": {"type": "string"},
        },
    })
}

fn decision_body() -> Value {
    json!({
        "type": "object",
        "required": ["situation", "subject"],
        "properties": {
            "situation": {"type": "string", "enum": ["degraded_server"]},
            "subject": {"type": "string", "description": "MCP server id"},
        },
    })
}

fn diagnostics_body() -> Value {
    json!({
        "type": "object",
        "properties": {"full": {"type": ["boolean", "null"], "default": false}},
    })
}

fn config_patch_body() -> Value {
    json!({
        "type": "object",
        "description": "RFC 7386 JSON merge patch in the shape of the configuration (see \
            `GET /api/v1/config/schema`); `null` removes an override",
    })
}

fn integrate_body() -> Value {
    json!({
        "type": "object",
        "description": "A package named exactly, or an MCP registry server entry (its first npm or PyPI package with stdio transport)",
        "properties": {
            "package": {"type": "string", "description": "npm:NAME@VERSION or pypi:NAME==VERSION"},
            "capabilities": {"type": "array", "items": {"type": "string"}, "maxItems": 64},
            "server": {"type": "object", "description": "registry server.json (name, version, packages)"},
            "_meta": {"type": "object"}
        }
    })
}

fn server_spec_ref() -> Value {
    json!({"$ref": "#/components/schemas/ServerSpec"})
}

fn tool_call_body() -> Value {
    json!({
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "description": "Tool name"},
            "arguments": {"type": "object", "default": {}, "description": "Tool arguments"},
            "timeout_ms": {
                "type": "integer",
                "minimum": 1,
                "maximum": 3_600_000,
                "description": "Deadline; default the server's `call_timeout_ms`",
            },
        },
    })
}

// ----- discovery ---------------------------------------------------------------------------

/// The discovery sources a query may name (`mcp_servers.discovery_sources` says which run).
const DISCOVERY_SOURCES: &[&str] = &["catalog", "registry", "npm", "github"];

/// `GET /api/v1/mcp/discover`.
pub const MCP_DISCOVER: Op = Op {
    ws: Some("mcp_discover"),
    params: &[
        Param::query(
            "source",
            Ty::Enum(DISCOVERY_SOURCES),
            "Only this source (it must be enabled in mcp_servers.discovery_sources); default every enabled one",
        ),
        Param::query(
            "query",
            Ty::Str,
            "Words or capability names to look for (at most 200 bytes); empty: everything the sources list",
        ),
    ],
    errors: &[ErrorCode::Conflict, ErrorCode::Busy, ErrorCode::UpstreamUnavailable],
    ..Op::new(
        "GET",
        "/api/v1/mcp/discover",
        "discoverMcpServers",
        "mcp",
        "Find MCP servers to install: every enabled source asked at once (each answer cached for mcp_servers.discovery_cache_ttl_ms), candidates deduplicated, filtered (stdio, npm or PyPI, runtime present) and ranked with the parts of their score; answered when every source has answered or failed, each source's outcome in `sources` (502 `upstream_unavailable` when none answered)",
        |a| {
            let source = match a.text("source").as_deref() {
                None | Some("") => None,
                Some(s) => match DISCOVERY_SOURCES.iter().find(|k| **k == s) {
                    Some(k) => Some(*k),
                    None => {
                        return Err(ApiError::field(
                            ErrorCode::InvalidParameter,
                            "source",
                            format!("'{s}' is not one of {}", DISCOVERY_SOURCES.join(", ")),
                        ))
                    }
                },
            };
            Ok(Request::Discovery(DiscoveryRequest::Discover {
                source,
                query: a.text("query").unwrap_or_default(),
            }))
        },
    )
};

/// Discovery.
pub const DISCOVERY: &[Op] = &[MCP_DISCOVER];

// ----- variety ------------------------------------------------------------------------------

/// `GET /api/v1/vsm/variety`.
pub const VARIETY_GET: Op = Op {
    ws: Some("get_variety"),
    ..Op::new(
        "GET",
        "/api/v1/vsm/variety",
        "getVariety",
        "variety",
        "The last variety analysis: ratio, capabilities with their providers, gaps (each saying what would close it), threats, opportunities, how allowed_capabilities scores, trend",
        |_| Ok(Request::Variety(VarietyRequest::Analysis)),
    )
};

/// `POST /api/v1/vsm/variety/recalculate`.
pub const VARIETY_RECALCULATE: Op = Op {
    ws: Some("trigger_variety_analysis"),
    body: Some(BodySpec {
        required: false,
        schema: variety_analysis_body,
    }),
    ..Op::new(
        "POST",
        "/api/v1/vsm/variety/recalculate",
        "recalculateVariety",
        "variety",
        "Analyse now and answer with the analysis (without `force`, an analysis younger than a second is answered as it is)",
        |a| {
            Ok(Request::Variety(VarietyRequest::Recalculate {
                force: a.field_flag("force")?.unwrap_or(false),
                external_scan: a.field_flag("include_external_scan")?.unwrap_or(false),
            }))
        },
    )
};

/// `GET /api/v1/metrics/variety`.
pub const VARIETY_METRICS: Op = Op {
    ws: Some("get_variety_metrics"),
    ..Op::new(
        "GET",
        "/api/v1/metrics/variety",
        "getVarietyMetrics",
        "metrics",
        "Variety ratio, required and provided counts, gaps, threats and the trend of the last analyses",
        |_| Ok(Request::Variety(VarietyRequest::Metrics)),
    )
};

/// `GET /api/v1/capabilities`.
pub const CAPABILITIES_LIST: Op = Op {
    ws: Some("list_capabilities"),
    ..Op::new(
        "GET",
        "/api/v1/capabilities",
        "listCapabilities",
        "variety",
        "Every capability (required or provided), its providers and why each provides it, and the recorded requests",
        |_| Ok(Request::Variety(VarietyRequest::Capabilities)),
    )
};

/// `GET /api/v1/capabilities/gaps`.
pub const CAPABILITIES_GAPS: Op = Op {
    ws: Some("list_capability_gaps"),
    ..Op::new(
        "GET",
        "/api/v1/capabilities/gaps",
        "listCapabilityGaps",
        "variety",
        "Required capabilities without an active provider, most severe first",
        |_| Ok(Request::Variety(VarietyRequest::Gaps)),
    )
};

/// `POST /api/v1/capabilities/acquire`.
pub const CAPABILITIES_ACQUIRE: Op = Op {
    ws: Some("acquire_capability"),
    body: Some(BodySpec {
        required: true,
        schema: acquire_body,
    }),
    errors: &[
        ErrorCode::Conflict,
        ErrorCode::Busy,
        ErrorCode::StateReadOnly,
        ErrorCode::PersistFailed,
        ErrorCode::InsufficientStorage,
    ],
    ..Op::new(
        "POST",
        "/api/v1/capabilities/acquire",
        "acquireCapability",
        "variety",
        "Require a capability (kept across restarts): answers with the gap it opens, or that it is provided already. Installing a server for it is the acquisition pipeline's",
        |a| {
            let capability = a.field_text("capability_type")?.ok_or_else(|| {
                ApiError::field(
                    ErrorCode::InvalidParameter,
                    "capability_type",
                    "the capability is required",
                )
            })?;
            Ok(Request::Variety(VarietyRequest::Acquire {
                capability,
                method: a
                    .field_text("acquisition_method")?
                    .unwrap_or_else(|| "mcp_server".into()),
                priority: a
                    .field_text("priority")?
                    .unwrap_or_else(|| "medium".into()),
            }))
        },
    )
};

/// `DELETE /api/v1/capabilities/{id}`.
pub const CAPABILITIES_REMOVE: Op = Op {
    ws: Some("remove_capability"),
    params: &[Param {
        name: "id",
        loc: In::Path,
        ty: Ty::Str,
        description: "The capability a request recorded",
    }],
    errors: &[
        ErrorCode::CapabilityNotFound,
        ErrorCode::Conflict,
        ErrorCode::Busy,
        ErrorCode::StateReadOnly,
        ErrorCode::PersistFailed,
        ErrorCode::InsufficientStorage,
    ],
    ..Op::new(
        "DELETE",
        "/api/v1/capabilities/{id}",
        "removeCapability",
        "variety",
        "Remove a recorded capability request (409 for a capability [variety] required names)",
        |a| Ok(Request::Variety(VarietyRequest::Remove { id: a.id })),
    )
};

/// Variety: analysis and required capabilities.
pub const VARIETY: &[Op] = &[
    VARIETY_GET,
    VARIETY_RECALCULATE,
    VARIETY_METRICS,
    CAPABILITIES_LIST,
    CAPABILITIES_GAPS,
    CAPABILITIES_ACQUIRE,
    CAPABILITIES_REMOVE,
];

fn variety_analysis_body() -> Value {
    json!({
        "type": "object",
        "properties": {
            "force": {"type": "boolean", "default": false, "description": "Analyse even when the last analysis is younger than a second"},
            "include_external_scan": {"type": "boolean", "default": false, "description": "Also scan external sources for candidates (discovery's; the answer says when it is not run)"},
        },
    })
}

fn acquire_body() -> Value {
    json!({
        "type": "object",
        "required": ["capability_type"],
        "properties": {
            "capability_type": {"type": "string", "minLength": 1, "maxLength": 64, "description": "The capability, e.g. `memory`"},
            "acquisition_method": {"type": "string", "enum": ["mcp_server"], "default": "mcp_server"},
            "priority": {"type": "string", "enum": ["low", "medium", "high", "critical"], "default": "medium", "description": "The severity of the gap it opens"},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn rows_are_unique_and_well_formed() {
        let (mut routes, mut ids, mut commands) =
            (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for o in all() {
            assert!(
                ["GET", "POST", "PUT", "DELETE"].contains(&o.method),
                "{}",
                o.id
            );
            assert!(
                o.path.starts_with('/') && (o.path == "/" || !o.path.ends_with('/')),
                "{}",
                o.id
            );
            assert!(
                routes.insert((o.method, o.path)),
                "{} {} twice",
                o.method,
                o.path
            );
            assert!(ids.insert(o.id), "operationId {} twice", o.id);
            if let Some(c) = o.ws {
                assert!(commands.insert(c), "command {c} twice");
            }
            let path_params: Vec<&str> = o
                .params
                .iter()
                .filter(|p| p.loc == In::Path)
                .map(|p| p.name)
                .collect();
            let in_path: Vec<&str> = o
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert_eq!(path_params, in_path, "{}: path parameters", o.id);
            let mut names = BTreeSet::new();
            assert!(o.params.iter().all(|p| names.insert(p.name)), "{}", o.id);
        }
        assert!(routes.len() > 25);
    }

    /// A value the parameter's type refuses; `None` when every text is valid.
    fn invalid(ty: Ty) -> Option<&'static str> {
        match ty {
            Ty::Bool => Some("maybe"),
            Ty::UInt | Ty::UIntDefault(_) => Some("-1"),
            Ty::Enum(_) => Some("no-such-value"),
            Ty::Str | Ty::ServerId => None,
        }
    }

    #[test]
    fn every_typed_query_parameter_is_read_by_its_parser() {
        let mut checked = 0;
        for o in all() {
            let Some(parse) = o.parse else { continue };
            for p in o.params.iter().filter(|p| p.loc == In::Query) {
                let Some(bad) = invalid(p.ty) else { continue };
                let args = Args::new(vec![(p.name.into(), bad.into())], None, "x".into(), false);
                let e = parse(args).expect_err(p.name);
                assert_eq!(
                    (e.code, e.field.as_deref()),
                    (ErrorCode::InvalidParameter, Some(p.name)),
                    "{} ?{}={bad}",
                    o.id,
                    p.name
                );
                checked += 1;
            }
        }
        assert!(checked >= 10, "{checked}");
    }

    #[test]
    fn error_codes_are_errors_of_the_row_not_duplicates() {
        for o in all() {
            let mut seen = BTreeSet::new();
            for c in o.errors {
                assert!(seen.insert(c.as_str()), "{}: {} twice", o.id, c.as_str());
                assert!(c.http_status() >= 400, "{}", o.id);
            }
        }
    }
}
