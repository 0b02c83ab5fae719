//! The OpenAPI 3.1 document of the REST API (`GET /api/v1/openapi.json`), built from [`OPS`]:
//! one row per path + method with its parameters, request body, extra error statuses and kind
//! of answer.
//!
//! Invariants:
//! - [`operations`] and the document's `paths` describe exactly the rows of [`OPS`]; a test
//!   compares them with the router's `ROUTES` table plus the routes served outside it (metrics,
//!   this document, `/ws/monitor`).
//! - Every JSON answer, success or error, is the `Envelope` schema; the transport-level errors
//!   every route can produce ([`COMMON_ERRORS`]) are listed on every operation, merged with the
//!   row's own statuses and error codes. `GET /metrics` (Prometheus text), this document and the
//!   WebSocket upgrade answer successfully without the envelope.
//! - Over TCP a bearer token is always required (`security: [{bearerAuth: []}]`; the control
//!   socket checks the peer's uid instead); `GET /api/v1/health` is exempt (`security: []`)
//!   and lists no 401. Every operation lists 403 (Host, Origin, Sec-Fetch-Site) and 415 (a body,
//!   or over TCP a POST/PUT/PATCH/DELETE, without `Content-Type: application/json`).
//! - Every `$ref` points into `components`; every `{id}` path has its path parameter.

use serde_json::{json, Map, Value};

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    Query,
    Path,
}

/// A parameter's type.
#[derive(Debug, Clone, Copy)]
enum Ty {
    /// `true`/`false` (also `1`/`0`, `yes`/`no`; an empty value is refused).
    Bool,
    /// Free text.
    Str,
    /// Non-negative integer (at most [`UINT_MAX`]).
    UInt,
    /// Non-negative integer with a default (at most [`UINT_MAX`]).
    UIntDefault(u64),
    /// One of these strings.
    Enum(&'static [&'static str]),
    /// An MCP server id (the shared `ServerId` parameter).
    ServerId,
}

/// Largest value of an integer query parameter: the router parses them as `u64` and refuses
/// anything larger with 400 `invalid_parameter`, so the document states it as `maximum`.
const UINT_MAX: u64 = u64::MAX;

/// One parameter.
#[derive(Debug, Clone, Copy)]
struct Param {
    name: &'static str,
    loc: In,
    ty: Ty,
    description: &'static str,
}

/// What a successful answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The JSON envelope.
    Json,
    /// The JSON envelope, or a Server-Sent Events stream with `Accept: text/event-stream` or
    /// `follow`.
    JsonOrSse,
    /// Prometheus text exposition (no envelope).
    Prometheus,
    /// A bare JSON document (no envelope).
    Document,
    /// A WebSocket upgrade (101).
    WebSocket,
}

/// One operation (path + method).
#[derive(Debug, Clone, Copy)]
struct Op {
    method: &'static str,
    path: &'static str,
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
    params: &'static [Param],
    /// JSON request body: whether it is required, and its schema.
    body: Option<(bool, fn() -> Value)>,
    /// Error statuses and codes beyond [`COMMON_ERRORS`].
    errors: &'static [(u16, &'static str)],
    kind: Kind,
    /// No authentication even when a token is configured.
    public: bool,
}

/// Errors every route can answer (transport, routing, authentication, shutdown).
const COMMON_ERRORS: &[(u16, &str)] = &[
    (400, "bad_request"),
    (400, "invalid_parameter"),
    (401, "unauthorized"),
    (403, "forbidden"),
    (405, "method_not_allowed"),
    (411, "length_required"),
    (413, "payload_too_large"),
    (415, "unsupported_media_type"),
    (431, "header_too_large"),
    (500, "internal_error"),
    (503, "shutting_down"),
];

/// What each error status means.
const STATUS_TEXT: &[(u16, &str)] = &[
    (
        400,
        "Malformed request, or a parameter or body field with a wrong value (`field` names it)",
    ),
    (
        401,
        "Missing or wrong bearer token (every TCP route but `GET /api/v1/health` needs one)",
    ),
    (
        403,
        "Host, Origin or Sec-Fetch-Site not allowed, a control-socket peer that may not use the \
         daemon, or a control-socket-only route called over TCP",
    ),
    (404, "Not found"),
    (
        405,
        "The path does not accept this method; the `Allow` header lists the methods it does",
    ),
    (409, "Not possible in the current state"),
    (
        411,
        "A request body without Content-Length (chunked uploads are not accepted)",
    ),
    (413, "Request body too large"),
    (
        415,
        "A request body, or over TCP any POST, PUT, PATCH or DELETE, without \
         `Content-Type: application/json`",
    ),
    (
        422,
        "The tool ran and reported an error (`isError`); its content is in `data`",
    ),
    (
        426,
        "Not a WebSocket upgrade request (send `Upgrade: websocket`)",
    ),
    (431, "Request head too large"),
    (500, "Internal error of the daemon"),
    (502, "The MCP server failed the call"),
    (503, "Unavailable: unhealthy, busy or shutting down"),
    (504, "The work did not finish before its deadline"),
    (507, "The state directory is full; the change was not made"),
];

const fn query(name: &'static str, ty: Ty, description: &'static str) -> Param {
    Param {
        name,
        loc: In::Query,
        ty,
        description,
    }
}

const ID: Param = Param {
    name: "id",
    loc: In::Path,
    ty: Ty::ServerId,
    description: "MCP server id",
};

const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];
const FOLLOW: Param = query(
    "follow",
    Ty::Bool,
    "Keep the connection open and stream new entries as Server-Sent Events (same as `Accept: text/event-stream`)",
);
const SINCE: Param = query(
    "since",
    Ty::UInt,
    "Only entries with a sequence number greater than this",
);

/// A row of [`OPS`] with the defaults of a plain JSON operation.
const fn op(
    method: &'static str,
    path: &'static str,
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
) -> Op {
    Op {
        method,
        path,
        id,
        tag,
        summary,
        params: &[],
        body: None,
        errors: &[],
        kind: Kind::Json,
        public: false,
    }
}

const SERVER_NOT_FOUND: &[(u16, &str)] = &[(404, "server_not_found")];
const SERVER_START: &[(u16, &str)] = &[(404, "server_not_found"), (409, "conflict")];

/// Every operation the API serves.
const OPS: &[Op] = &[
    Op {
        params: &[query(
            "detailed",
            Ty::Bool,
            "Add event-loop statistics (wake-ups, timers, connections, RSS, fds, context switches)",
        )],
        ..op("GET", "/api/v1/status", "getStatus", "daemon", "Daemon status")
    },
    Op {
        params: &[query("component", Ty::Str, "Only check this component")],
        errors: &[(404, "component_not_found"), (503, "unhealthy")],
        public: true,
        ..op(
            "GET",
            "/api/v1/health",
            "getHealth",
            "daemon",
            "Run the health checks (503 `unhealthy` with the results, `failing` listing the failing components, in `data`)",
        )
    },
    Op {
        body: Some((false, service_body)),
        errors: &[(404, "component_not_found")],
        ..op(
            "POST",
            "/api/v1/control/start",
            "controlStart",
            "control",
            "Start one stopped component, or every stopped one",
        )
    },
    Op {
        body: Some((false, stop_body)),
        errors: &[(404, "component_not_found"), (409, "conflict")],
        ..op(
            "POST",
            "/api/v1/control/stop",
            "controlStop",
            "control",
            "Stop components, or (with `shutdown`) the whole daemon",
        )
    },
    Op {
        body: Some((false, service_body)),
        errors: &[(400, "config_invalid"), (404, "component_not_found")],
        ..op(
            "POST",
            "/api/v1/control/restart",
            "controlRestart",
            "control",
            "Restart one component, or reload the config and restart every component",
        )
    },
    Op {
        params: &[query("section", Ty::Str, "Only this section, such as `monitoring`")],
        errors: &[(404, "config_key_not_found")],
        ..op(
            "GET",
            "/api/v1/config",
            "getConfig",
            "config",
            "Effective configuration (secrets redacted) and runtime overrides",
        )
    },
    Op {
        body: Some((true, config_patch_body)),
        errors: &[
            (400, "config_invalid"),
            (404, "config_key_not_found"),
            (409, "state_read_only"),
            (500, "persist_failed"),
            (503, "busy"),
            (507, "insufficient_storage"),
        ],
        ..op(
            "PUT",
            "/api/v1/config",
            "updateConfig",
            "config",
            "Apply a JSON merge patch to the runtime overrides (validated, applied live, persisted)",
        )
    },
    Op {
        errors: &[(400, "config_invalid")],
        ..op(
            "POST",
            "/api/v1/config/reload",
            "reloadConfig",
            "config",
            "Re-read the configuration file (an invalid file is refused and the old config stays)",
        )
    },
    op(
        "GET",
        "/api/v1/config/schema",
        "getConfigSchema",
        "config",
        "JSON Schema (draft 2020-12) of the configuration",
    ),
    Op {
        params: &[
            query(
                "level",
                Ty::Enum(LEVELS),
                "Least severe level to include (`warn` = warn and error); default trace",
            ),
            query(
                "lines",
                Ty::UIntDefault(100),
                "At most this many of the newest records (values above 100000 are clamped)",
            ),
            query("limit", Ty::UInt, "Alias of `lines`"),
            query(
                "component",
                Ty::Str,
                "Only records whose target starts with this",
            ),
            SINCE,
            FOLLOW,
        ],
        kind: Kind::JsonOrSse,
        ..op(
            "GET",
            "/api/v1/logs",
            "getLogs",
            "logs",
            "Recent log records, or a live stream of new ones (SSE `event: log`)",
        )
    },
    Op {
        params: &[query(
            "full",
            Ty::Bool,
            "Also run the slower checks (fsync timing in the state dir)",
        )],
        body: Some((false, diagnostics_body)),
        errors: &[(503, "unhealthy")],
        ..op(
            "POST",
            "/api/v1/diagnostics/run",
            "runDiagnostics",
            "daemon",
            "Self-diagnostics (503 `unhealthy` with the checks in `data` when one fails)",
        )
    },
    Op {
        params: &[
            query("type", Ty::Str, "Only events of this type, such as `mcp_server_status_change`"),
            query("channel", Ty::Str, "Only events of this channel, such as `mcp_servers`"),
            SINCE,
            query(
                "limit",
                Ty::UIntDefault(100),
                "At most this many of the newest events (values above 10000 are clamped)",
            ),
            FOLLOW,
        ],
        kind: Kind::JsonOrSse,
        ..op(
            "GET",
            "/api/v1/events",
            "getEvents",
            "events",
            "Event history, or a live stream of new events (SSE, `event:` = the event type)",
        )
    },
    Op {
        params: &[query(
            "status",
            Ty::Enum(&["active", "inactive", "all"]),
            "Filter by state; default all",
        )],
        ..op("GET", "/api/v1/mcp/servers", "listMcpServers", "mcp", "List MCP servers")
    },
    Op {
        body: Some((true, server_spec_ref)),
        errors: &[
            (409, "already_exists"),
            (409, "state_read_only"),
            (500, "persist_failed"),
            (503, "busy"),
            (507, "insufficient_storage"),
        ],
        ..op(
            "POST",
            "/api/v1/mcp/servers",
            "registerMcpServer",
            "mcp",
            "Register an MCP server (kept across restarts; started when `autostart`)",
        )
    },
    Op {
        params: &[ID],
        errors: SERVER_NOT_FOUND,
        ..op(
            "GET",
            "/api/v1/mcp/servers/{id}",
            "getMcpServer",
            "mcp",
            "One MCP server: spec, state history, tools, last errors, stderr tail",
        )
    },
    Op {
        params: &[ID],
        errors: &[
            (404, "server_not_found"),
            (409, "conflict"),
            (409, "state_read_only"),
            (500, "persist_failed"),
            (503, "busy"),
            (507, "insufficient_storage"),
        ],
        ..op(
            "DELETE",
            "/api/v1/mcp/servers/{id}",
            "unregisterMcpServer",
            "mcp",
            "Unregister an MCP server, stopping it first (409 for servers declared in the config file)",
        )
    },
    Op {
        params: &[ID],
        errors: SERVER_START,
        ..op(
            "POST",
            "/api/v1/mcp/servers/{id}/start",
            "startMcpServer",
            "mcp",
            "Start an MCP server (409 when `max_concurrent_servers` is reached)",
        )
    },
    Op {
        params: &[ID],
        errors: SERVER_NOT_FOUND,
        ..op(
            "POST",
            "/api/v1/mcp/servers/{id}/stop",
            "stopMcpServer",
            "mcp",
            "Stop an MCP server",
        )
    },
    Op {
        params: &[ID],
        errors: SERVER_START,
        ..op(
            "POST",
            "/api/v1/mcp/servers/{id}/restart",
            "restartMcpServer",
            "mcp",
            "Restart an MCP server",
        )
    },
    Op {
        params: &[ID],
        errors: SERVER_START,
        ..op(
            "POST",
            "/api/v1/mcp/servers/{id}/reset",
            "resetMcpServer",
            "mcp",
            "Close an MCP server's open circuit breaker (and start it)",
        )
    },
    Op {
        params: &[ID],
        errors: SERVER_NOT_FOUND,
        ..op(
            "GET",
            "/api/v1/mcp/servers/{id}/tools",
            "listMcpTools",
            "mcp",
            "An MCP server's tools with their input schemas",
        )
    },
    Op {
        params: &[ID],
        body: Some((true, tool_call_body)),
        errors: &[
            (404, "server_not_found"),
            (404, "tool_not_found"),
            (409, "conflict"),
            (422, "tool_error"),
            (502, "mcp_error"),
            (502, "server_exited"),
            (503, "busy"),
            (504, "timeout"),
        ],
        ..op(
            "POST",
            "/api/v1/mcp/servers/{id}/tools/call",
            "callMcpTool",
            "mcp",
            "Call a tool (the tool's result in `data`; `isError` answers 422 `tool_error`)",
        )
    },
    op(
        "GET",
        "/api/v1/metrics",
        "getMetrics",
        "metrics",
        "Daemon and host metrics",
    ),
    op(
        "GET",
        "/api/v1/metrics/performance",
        "getPerformanceMetrics",
        "metrics",
        "Per-route request counts and latency, per-server tool-call counts and latency, error rates",
    ),
    op(
        "GET",
        "/api/v1/metrics/health",
        "getHealthMetrics",
        "metrics",
        "Health metrics of the daemon and its MCP servers",
    ),
    Op {
        kind: Kind::Prometheus,
        ..op(
            "GET",
            "/metrics",
            "getPrometheusMetrics",
            "metrics",
            "Metrics in the Prometheus text exposition format 0.0.4 (no envelope)",
        )
    },
    Op {
        kind: Kind::Document,
        ..op(
            "GET",
            "/api/v1/openapi.json",
            "getOpenApi",
            "meta",
            "This OpenAPI 3.1 document (no envelope)",
        )
    },
    op(
        "GET",
        "/api/v1/auth/token",
        "getApiToken",
        "auth",
        "The TCP API token in effect and its source (`config`, `file`, `generated`); control socket only (403 over TCP)",
    ),
    Op {
        errors: &[(409, "conflict")],
        ..op(
            "POST",
            "/api/v1/auth/token/rotate",
            "rotateApiToken",
            "auth",
            "Replace the generated TCP API token (409 when it comes from the config); control socket only (403 over TCP)",
        )
    },
    Op {
        kind: Kind::WebSocket,
        ..op(
            "GET",
            "/ws/monitor",
            "monitorWebSocket",
            "events",
            "WebSocket upgrade for the live monitor stream of events",
        )
    },
];

/// The (method, path template) pairs the document describes, in table order.
pub fn operations() -> Vec<(&'static str, &'static str)> {
    OPS.iter().map(|o| (o.method, o.path)).collect()
}

/// The OpenAPI 3.1.0 document of the API; `version` becomes `info.version`.
pub fn document(version: &str) -> Value {
    let mut paths = Map::new();
    for o in OPS {
        let item = paths
            .entry(o.path)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(o.method.to_ascii_lowercase(), operation(o));
        }
    }
    let mut tags: Vec<&str> = OPS.iter().map(|o| o.tag).collect();
    tags.sort_unstable();
    tags.dedup();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "vsm-daemon API",
            "version": version,
            "description": "REST API of vsm-daemon, an edge agent that supervises MCP servers. \
                Every JSON answer, success or error, is wrapped in the `Envelope`; errors carry a \
                stable `code` and, for a bad parameter or body field, the `field`. Every GET \
                operation also answers HEAD with the same status and headers (including \
                `Content-Length`) and no body; `Allow` lists HEAD beside GET.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": tags.iter().map(|t| json!({"name": t})).collect::<Vec<_>>(),
        "paths": paths,
        "components": components(),
    })
}

/// One operation object.
fn operation(o: &Op) -> Value {
    let mut op = json!({
        "operationId": o.id,
        "summary": o.summary,
        "tags": [o.tag],
        "responses": responses(o),
    });
    let params: Vec<Value> = o.params.iter().map(parameter).collect();
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some((required, schema)) = o.body {
        op["requestBody"] = json!({
            "required": required,
            "content": {"application/json": {"schema": schema()}},
        });
    }
    if o.public {
        op["security"] = json!([]);
    }
    op
}

/// A parameter object.
fn parameter(p: &Param) -> Value {
    let schema = match p.ty {
        Ty::ServerId => return json!({"$ref": "#/components/parameters/ServerId"}),
        Ty::Bool => json!({"type": "boolean"}),
        Ty::Str => json!({"type": "string"}),
        Ty::UInt => json!({"type": "integer", "minimum": 0, "maximum": UINT_MAX}),
        Ty::UIntDefault(d) => {
            json!({"type": "integer", "minimum": 0, "maximum": UINT_MAX, "default": d})
        }
        Ty::Enum(values) => json!({"type": "string", "enum": values}),
    };
    let description = match p.ty {
        Ty::Bool => format!(
            "{} (`true`, `1`, `yes`; `false`, `0`, `no`; anything else, also an empty value, is refused)",
            p.description
        ),
        _ => p.description.to_owned(),
    };
    json!({
        "name": p.name,
        "in": if p.loc == In::Path { "path" } else { "query" },
        "required": p.loc == In::Path,
        "description": description,
        "schema": schema,
    })
}

/// The envelope as a media type object, with `data` described by `data` when given.
fn envelope(data: Option<Value>) -> Value {
    let schema = match data {
        None => json!({"$ref": "#/components/schemas/Envelope"}),
        Some(d) => json!({
            "allOf": [
                {"$ref": "#/components/schemas/Envelope"},
                {"properties": {"data": d}},
            ],
        }),
    };
    json!({"application/json": {"schema": schema}})
}

/// Success and error responses of an operation.
fn responses(o: &Op) -> Value {
    let mut out = Map::new();
    let (status, success) = match o.kind {
        Kind::Json => (
            "200",
            json!({"description": "Success", "content": envelope(None)}),
        ),
        Kind::JsonOrSse => {
            let mut content = envelope(None);
            // The schema of one event (what OpenAPI 3.2 calls itemSchema; schemathesis reads
            // a 3.1 stream schema the same way).
            content["text/event-stream"] = json!({"schema": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "event": {"type": "string"},
                    "data": {"type": "string"},
                    "retry": {"type": "integer"}
                }
            }});
            (
                "200",
                json!({
                    "description": "The history in the envelope; with `Accept: text/event-stream` \
                        or `follow`, a Server-Sent Events stream instead: `id:` (sequence number), \
                        `event:` and `data:` (one JSON entry) per entry, and `event: dropped` with \
                        `{\"count\": n}` when entries were lost to a slow reader",
                    "content": content,
                }),
            )
        }
        Kind::Prometheus => (
            "200",
            json!({
                "description": "Prometheus text exposition format 0.0.4",
                "content": {"text/plain; version=0.0.4": {"schema": {"type": "string"}}},
            }),
        ),
        Kind::Document => (
            "200",
            json!({
                "description": "This OpenAPI document",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }),
        ),
        Kind::WebSocket => (
            "101",
            json!({
                "description": "Switching Protocols: the connection is a WebSocket (RFC 6455) \
                    carrying the monitor stream as JSON text messages",
                "headers": {
                    "Upgrade": {"schema": {"type": "string", "const": "websocket"}},
                    "Connection": {"schema": {"type": "string"}},
                    "Sec-WebSocket-Accept": {"schema": {"type": "string"}},
                },
            }),
        ),
    };
    out.insert(status.to_owned(), success);
    for (status, codes) in error_statuses(o) {
        let text = STATUS_TEXT
            .iter()
            .find(|(s, _)| *s == status)
            .map_or("Error", |(_, t)| t);
        let description = if codes.is_empty() {
            text.to_owned()
        } else {
            let codes: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
            format!("{text}. Error codes: {}", codes.join(", "))
        };
        let data = match (o.path, status) {
            ("/api/v1/health", 503) => Some(json!({"$ref": "#/components/schemas/HealthReport"})),
            _ => None,
        };
        let mut response = json!({"description": description, "content": envelope(data)});
        if status == 405 {
            response["headers"] = json!({"Allow": {
                "description": "The methods the path accepts (HEAD wherever GET is)",
                "schema": {"type": "string"},
            }});
        }
        out.insert(status.to_string(), response);
    }
    Value::Object(out)
}

/// Error statuses of an operation, ascending, each with its error codes.
fn error_statuses(o: &Op) -> Vec<(u16, Vec<&'static str>)> {
    let common: &[(u16, &str)] = match o.kind {
        Kind::WebSocket => &[
            (400, "bad_request"),
            (401, "unauthorized"),
            (403, "forbidden"),
            (415, "unsupported_media_type"),
            (426, ""),
        ],
        _ => COMMON_ERRORS,
    };
    let mut out: Vec<(u16, Vec<&'static str>)> = Vec::new();
    for &(status, code) in common.iter().chain(o.errors) {
        if o.public && status == 401 {
            continue;
        }
        let i = match out.iter().position(|(s, _)| *s == status) {
            Some(i) => i,
            None => {
                out.push((status, Vec::new()));
                out.len() - 1
            }
        };
        if !code.is_empty() && !out[i].1.contains(&code) {
            out[i].1.push(code);
        }
    }
    out.sort_by_key(|(s, _)| *s);
    out
}

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

/// Shared schemas, parameters and the security scheme.
fn components() -> Value {
    let ms = |min: u64, max: u64, description: &str| json!({"type": "integer", "minimum": min, "maximum": max, "description": description});
    let uint =
        |description: &str| json!({"type": "integer", "minimum": 0, "description": description});
    json!({
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "`security.api_token`, the first line of `security.api_token_file`, \
                    or the token generated into `<state dir>/api_token` (`vsm-daemon token` \
                    shows it); required on every TCP route but `GET /api/v1/health`",
            },
        },
        "parameters": {
            "ServerId": {
                "name": "id",
                "in": "path",
                "required": true,
                "description": "MCP server id",
                "schema": {"$ref": "#/components/schemas/ServerId"},
            },
        },
        "schemas": {
            "Envelope": {
                "type": "object",
                "required": ["status", "timestamp", "data", "metadata", "errors"],
                "properties": {
                    "status": {"type": "string", "enum": ["success", "error", "partial"]},
                    "timestamp": {"type": "string", "format": "date-time"},
                    "data": {"description": "The answer; on an error, data that goes with it, or null"},
                    "metadata": {
                        "type": "object",
                        "required": ["request_id", "processing_time_ms", "version"],
                        "properties": {
                            "request_id": {"type": "string", "examples": ["req_42"]},
                            "processing_time_ms": {"type": "number"},
                            "version": {"type": "string", "examples": ["v1"]},
                        },
                    },
                    "errors": {"type": "array", "items": {"$ref": "#/components/schemas/Error"}},
                },
            },
            "Error": {
                "type": "object",
                "required": ["code", "message", "field"],
                "properties": {
                    "code": {"type": "string", "description": "Stable snake_case code"},
                    "message": {"type": "string"},
                    "field": {
                        "type": ["string", "null"],
                        "description": "Parameter, body field or config key at fault",
                    },
                },
            },
            "HealthReport": {
                "type": "object",
                "properties": {
                    "status": {"type": "string", "enum": ["healthy", "unhealthy"]},
                    "components": {"type": "object"},
                    "failing": {"type": "array", "items": {"type": "string"}},
                },
            },
            "ServerId": {
                "type": "string",
                "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$",
            },
            "ServerSpec": {
                "type": "object",
                "additionalProperties": false,
                "required": ["id", "command"],
                "properties": {
                    "id": {"$ref": "#/components/schemas/ServerId"},
                    "command": {
                        "type": "string",
                        "minLength": 1,
                        "description": "Program to run (looked up on PATH when not a path)",
                    },
                    "args": {"type": "array", "items": {"type": "string"}, "default": []},
                    "env": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "default": {},
                        "description": "Environment on top of PATH, HOME, LANG, TERM, USER",
                    },
                    "cwd": {"type": "string", "description": "Working directory (absolute path)"},
                    "capabilities": {
                        "type": "array",
                        "items": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^\\S+$"},
                        "default": [],
                    },
                    "autostart": {"type": "boolean", "default": true},
                    "call_timeout_ms": ms(10, 3_600_000, "Default deadline of a tool call"),
                    "backoff_initial_ms": ms(10, 3_600_000, "First restart delay"),
                    "backoff_max_ms": ms(10, 86_400_000, "Largest restart delay"),
                    "max_failures": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 1000,
                        "description": "Failed starts within the failure window that open the circuit breaker",
                    },
                    "limits": {"$ref": "#/components/schemas/SandboxLimits"},
                },
            },
            "SandboxLimits": {
                "type": "object",
                "additionalProperties": false,
                "description": "Absent fields take the `[mcp_servers]` defaults",
                "properties": {
                    "max_open_files": uint("RLIMIT_NOFILE"),
                    "max_cpu_seconds": uint("RLIMIT_CPU in seconds (0 = unlimited)"),
                    "max_memory_mb": uint("RLIMIT_DATA in MiB (0 = unlimited)"),
                    "uid": {"type": "integer", "minimum": 0, "maximum": 4_294_967_295u64, "description": "Run as this uid (daemon as root only)"},
                    "gid": {"type": "integer", "minimum": 0, "maximum": 4_294_967_295u64, "description": "Run as this gid (daemon as root only)"},
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Copy of `ROUTES` in src/net/routes.rs.
    const ROUTES: &[(&str, &[&str])] = &[
        ("/api/v1/status", &["GET"]),
        ("/api/v1/health", &["GET"]),
        ("/api/v1/control/start", &["POST"]),
        ("/api/v1/control/stop", &["POST"]),
        ("/api/v1/control/restart", &["POST"]),
        ("/api/v1/config", &["GET", "PUT"]),
        ("/api/v1/config/reload", &["POST"]),
        ("/api/v1/config/schema", &["GET"]),
        ("/api/v1/logs", &["GET"]),
        ("/api/v1/diagnostics/run", &["POST"]),
        ("/api/v1/events", &["GET"]),
        ("/api/v1/mcp/servers", &["GET", "POST"]),
        ("/api/v1/mcp/servers/{id}", &["GET", "DELETE"]),
        ("/api/v1/mcp/servers/{id}/start", &["POST"]),
        ("/api/v1/mcp/servers/{id}/stop", &["POST"]),
        ("/api/v1/mcp/servers/{id}/restart", &["POST"]),
        ("/api/v1/mcp/servers/{id}/reset", &["POST"]),
        ("/api/v1/mcp/servers/{id}/tools", &["GET"]),
        ("/api/v1/mcp/servers/{id}/tools/call", &["POST"]),
        ("/api/v1/auth/token", &["GET"]),
        ("/api/v1/auth/token/rotate", &["POST"]),
    ];

    /// Routes served outside the router's table.
    const EXTRA: &[(&str, &str)] = &[
        ("GET", "/api/v1/metrics"),
        ("GET", "/api/v1/metrics/performance"),
        ("GET", "/api/v1/metrics/health"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/ws/monitor"),
    ];

    const METHODS: &[&str] = &[
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    /// Follows a local `$ref` (`#/...`), or returns the value itself.
    fn resolve<'a>(doc: &'a Value, v: &'a Value) -> Option<&'a Value> {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => doc.pointer(r.strip_prefix('#')?),
            None => Some(v),
        }
    }

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn document_is_well_formed_openapi_3_1() {
        let doc = document("1.2.3");
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], "1.2.3");
        assert_eq!(doc["info"]["title"], "vsm-daemon API");
        assert_eq!(doc["servers"], json!([{"url": "/"}]));
        assert_eq!(doc["security"], json!([{"bearerAuth": []}]));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
            "bearer"
        );
        let mut ids = BTreeSet::new();
        let paths = doc["paths"].as_object().expect("paths object");
        for (path, item) in paths {
            let item = item.as_object().expect("path item object");
            let wanted: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            for (method, op) in item {
                assert!(METHODS.contains(&method.as_str()), "{path} {method}");
                let id = op["operationId"].as_str().expect("operationId");
                assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
                let responses = op["responses"].as_object().expect("responses");
                assert!(!responses.is_empty(), "{id}");
                for (status, r) in responses {
                    assert!(
                        status.len() == 3 && status.parse::<u16>().is_ok(),
                        "{id} {status}"
                    );
                    assert!(r["description"].is_string(), "{id} {status}");
                }
                let declared: BTreeSet<&str> = op["parameters"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|p| resolve(&doc, p))
                    .filter(|p| p["in"] == "path")
                    .map(|p| {
                        assert_eq!(p["required"], true, "{id}");
                        p["name"].as_str().expect("name")
                    })
                    .collect();
                assert_eq!(declared, wanted, "{id}: path parameters");
                let public = op["security"] == json!([]);
                assert_eq!(public, path == "/api/v1/health", "{id}: security");
                assert_eq!(responses.contains_key("401"), !public, "{id}: 401");
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20);
        for r in all {
            let target = r.strip_prefix("#/components/").map(|_| &r[1..]);
            assert!(
                target.and_then(|p| doc.pointer(p)).is_some(),
                "dangling $ref {r}"
            );
        }
    }

    #[test]
    fn every_route_is_described() {
        let doc = document("0");
        let mut expected: BTreeSet<(&str, &str)> = ROUTES
            .iter()
            .flat_map(|(p, ms)| ms.iter().map(move |m| (*m, *p)))
            .collect();
        expected.extend(EXTRA.iter().copied());
        let described: BTreeSet<(&str, &str)> = operations().into_iter().collect();
        assert_eq!(described, expected);
        assert_eq!(operations().len(), expected.len(), "no duplicate rows");
        for (method, path) in expected {
            let op = &doc["paths"][path][method.to_ascii_lowercase()];
            assert!(op["operationId"].is_string(), "{method} {path}");
        }
    }

    #[test]
    fn responses_follow_the_envelope_and_error_codes() {
        let doc = document("0");
        let op = |p: &str, m: &str| doc["paths"][p][m].clone();
        let call = op("/api/v1/mcp/servers/{id}/tools/call", "post");
        for status in [
            "200", "400", "401", "403", "404", "405", "409", "411", "413", "415", "422", "431",
            "502", "503", "504",
        ] {
            let schema = &call["responses"][status]["content"]["application/json"]["schema"];
            assert_eq!(schema["$ref"], "#/components/schemas/Envelope", "{status}");
        }
        let described = call["responses"]["502"]["description"]
            .as_str()
            .unwrap_or("");
        assert!(described.contains("`mcp_error`") && described.contains("`server_exited`"));
        assert_eq!(
            call["requestBody"]["content"]["application/json"]["schema"]["required"],
            json!(["name"])
        );
        let health = op("/api/v1/health", "get");
        assert!(health["responses"]["503"]["description"]
            .as_str()
            .unwrap_or("")
            .contains("`unhealthy`"));
        assert!(health["responses"].get("401").is_none());
        let logs = op("/api/v1/logs", "get");
        assert!(logs["responses"]["200"]["content"]["text/event-stream"].is_object());
        let level = &logs["parameters"][0]["schema"]["enum"];
        assert_eq!(level, &json!(["error", "warn", "info", "debug", "trace"]));
        let prom = op("/metrics", "get");
        assert!(prom["responses"]["200"]["content"]["text/plain; version=0.0.4"].is_object());
        let ws = op("/ws/monitor", "get");
        let statuses: Vec<&String> = ws["responses"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(statuses, ["101", "400", "401", "403", "415", "426"]);
        assert!(op("/api/v1/status", "get")["responses"]
            .get("404")
            .is_none());
        let spec = &doc["components"]["schemas"]["ServerSpec"];
        assert_eq!(spec["additionalProperties"], false);
        assert_eq!(spec["required"], json!(["id", "command"]));
        assert_eq!(
            op("/api/v1/mcp/servers", "post")["responses"]["409"]["description"]
                .as_str()
                .map(|d| d.contains("already_exists")),
            Some(true)
        );
    }
}
