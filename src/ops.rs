//! The ops table: every operation of the API, once. Each row ([`Op`]) says the method and path,
//! the WebSocket command that sends it, how its input becomes an [`api::Request`], who may call
//! it, and what the OpenAPI document says about it. The router (`net::routes`), the WebSocket
//! named commands (`net::ws`), the CLI's targets (`cli`) and the document (`openapi`) are all
//! derived from [`all`]; there is no second list to keep in step.
//!
//! Each room declares its own rows next to its code (`<room>/ops.rs`, a `pub const OPS`); this
//! module holds the wiring's own rows (status, logs, events, metrics, the token, the API document,
//! the status page) and [`GROUPS`], the one place they are all put together. A room's rows import
//! only the ground floor (`api`, `spec`), so the transports that read the table reach no room's
//! state through it. Adding a room's rows is its `ops.rs` and one line in [`GROUPS`].
//!
//! Invariants (tested below and in the modules that derive from the table):
//! - (method, path), `operationId` and WebSocket command names are unique.
//! - Every row with a parser is routable; every `{id}` path declares its path parameter.
//! - Every declared boolean, integer or enum query parameter is read by the row's parser.
//!
//! [`api::Request`]: crate::api::Request

use crate::api::{
    Access, ApiError, Args, DaemonRequest, ErrorCode, EventQuery, LogQuery, Op, Param, Produces,
    Request, Ty,
};

/// Every group of rows, in routing order (the hot `GET /api/v1/health` at the front).
pub const GROUPS: &[&[Op]] = &[
    crate::components::ops::OPS,
    DAEMON,
    LOGS,
    EVENTS,
    METRICS,
    crate::monitor::ops::OPS,
    crate::mcp::ops::OPS,
    crate::vsm::ops::OPS,
    crate::reflect::ops::OPS,
    AUTH,
    META,
    PAGE,
    crate::gateway::ops::OPS,
    crate::variety::ops::OPS,
    crate::discovery::ops::OPS,
    crate::acquire::ops::OPS,
];

/// Every operation, in routing order.
pub fn all() -> impl Iterator<Item = &'static Op> {
    GROUPS.iter().flat_map(|g| g.iter())
}

/// The operation a WebSocket named command sends.
pub fn by_command(command: &str) -> Option<&'static Op> {
    all().find(|o| o.ws == Some(command))
}

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

/// POST paths answered `202 Accepted` (the work goes on after the answer).
pub const ACCEPTED: &[&str] = &[crate::acquire::ops::CAPABILITIES_INTEGRATE.path];

/// The WebSocket command of the tool call, whose parameters name the tool `tool` (the body's
/// `name`) and the server `server` or `id` (the path's).
pub const TOOL_CALL_COMMAND: Option<&str> = crate::mcp::ops::MCP_CALL.ws;

/// The daemon itself.
pub const DAEMON: &[Op] = &[STATUS];

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::In;
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
