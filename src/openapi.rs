//! The OpenAPI 3.1 document of the REST API (`GET /api/v1/openapi.json`), derived from the
//! ops table ([`ops::all`]): one operation per row, with its parameters, request body, extra
//! error codes and kind of answer.
//!
//! Invariants:
//! - The document's `paths` describe exactly the rows of the ops table, each once (the router
//!   and the WebSocket commands are derived from the same rows).
//! - Every JSON answer, success or error, is the `Envelope` schema; the transport-level errors
//!   every route can produce ([`COMMON_ERRORS`]) are listed on every operation, merged with the
//!   row's own error codes (each listed under its [`ErrorCode::http_status`]). `GET /metrics`
//!   (Prometheus text), this document and the WebSocket upgrade answer successfully without
//!   the envelope.
//! - Over TCP a bearer token is always required (`security: [{bearerAuth: []}]`; the control
//!   socket checks the peer's uid instead); public rows (`GET /api/v1/health` and the status
//!   page's files, `GET /` and `/ui/...`) are exempt
//!   (`security: []`) and list no 401. Every operation lists 403 (Host, Origin,
//!   Sec-Fetch-Site, control-socket-only rows over TCP) and 415 (a body, or over TCP a
//!   POST/PUT/PATCH/DELETE, without `Content-Type: application/json`).
//! - Every `$ref` points into `components`; every `{id}` path has its path parameter.

use crate::api::{Access, ErrorCode, In, Op, Param, Produces, Ty};
use crate::ops;
use serde_json::{json, Map, Value};

/// Errors every route can answer (transport, routing, authentication, shutdown).
const COMMON_ERRORS: &[ErrorCode] = &[
    ErrorCode::BadRequest,
    ErrorCode::InvalidParameter,
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::MethodNotAllowed,
    ErrorCode::LengthRequired,
    ErrorCode::PayloadTooLarge,
    ErrorCode::UnsupportedMediaType,
    ErrorCode::HeaderTooLarge,
    ErrorCode::Internal,
    ErrorCode::ShuttingDown,
];

/// Errors of the WebSocket upgrade (it is never routed, so no 404/405 or body errors).
const UPGRADE_ERRORS: &[ErrorCode] = &[
    ErrorCode::BadRequest,
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::UnsupportedMediaType,
    ErrorCode::UpgradeRequired,
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

/// The (method, path template) pairs the document describes, in table order.
pub fn operations() -> Vec<(&'static str, &'static str)> {
    ops::all().map(|o| (o.method, o.path)).collect()
}

/// The OpenAPI 3.1.0 document of the API; `version` becomes `info.version`.
pub fn document(version: &str) -> Value {
    let mut paths = Map::new();
    for o in ops::all() {
        let item = paths
            .entry(o.path)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(o.method.to_ascii_lowercase(), operation(o));
        }
    }
    let mut tags: Vec<&str> = ops::all().map(|o| o.tag).collect();
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

/// Largest value of an integer query parameter: the router parses them as `u64` and refuses
/// anything larger with 400 `invalid_parameter`, so the document states it as `maximum`.
const UINT_MAX: u64 = u64::MAX;

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
    if let Some(body) = o.body {
        op["requestBody"] = json!({
            "required": body.required,
            "content": {"application/json": {"schema": (body.schema)()}},
        });
    }
    if o.access == Access::Public {
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
    let (status, success) = match o.produces {
        // Work that goes on after the answer (an acquisition) is accepted, not done.
        Produces::Json if o.method == "POST" && crate::ops::ACCEPTED.contains(&o.path) => (
            "202",
            json!({"description": "Accepted: the work goes on; follow it at the answer's status_url", "content": envelope(None)}),
        ),
        Produces::Json => (
            "200",
            json!({"description": "Success", "content": envelope(None)}),
        ),
        Produces::JsonOrSse => {
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
        Produces::Prometheus => (
            "200",
            json!({
                "description": "Prometheus text exposition format 0.0.4",
                "content": {"text/plain; version=0.0.4": {"schema": {"type": "string"}}},
            }),
        ),
        Produces::Document => (
            "200",
            json!({
                "description": "This OpenAPI document",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }),
        ),
        Produces::Page(media) => (
            "200",
            json!({
                "description": "A file of the embedded status page, with a strict \
                    Content-Security-Policy",
                "content": {media: {"schema": {"type": "string"}}},
            }),
        ),
        Produces::McpStream => (
            "200",
            json!({
                "description": "MCP Streamable HTTP (protocol 2025-11-25; 2025-06-18 and \
                    2025-03-26 accepted): POST carries one JSON-RPC message and is answered with \
                    a JSON-RPC message (202 with no body for notifications and responses); GET \
                    opens the session's Server-Sent Events stream of notifications; DELETE ends \
                    the session. Transport refusals (no or unknown `Mcp-Session-Id`, a wrong \
                    `MCP-Protocol-Version`, too many sessions) are JSON-RPC errors with 400, 404 \
                    or 503; token, Origin and media-type refusals keep the envelope.",
                "headers": {"Mcp-Session-Id": {"schema": {"type": "string"},
                    "description": "Set by the answer to initialize; sent by the client on every later request"}},
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            }),
        ),
        Produces::WebSocket => (
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
    let common = match o.produces {
        Produces::WebSocket => UPGRADE_ERRORS,
        _ => COMMON_ERRORS,
    };
    let mut out: Vec<(u16, Vec<&'static str>)> = Vec::new();
    for code in common.iter().chain(o.errors) {
        let status = code.http_status();
        if o.access == Access::Public && status == 401 {
            continue;
        }
        let i = match out.iter().position(|(s, _)| *s == status) {
            Some(i) => i,
            None => {
                out.push((status, Vec::new()));
                out.len() - 1
            }
        };
        if !out[i].1.contains(&code.as_str()) {
            out[i].1.push(code.as_str());
        }
    }
    out.sort_by_key(|(s, _)| *s);
    out
}

/// `components`: the envelope, error, server and limit schemas the operations refer to, and
/// the security scheme. JSON text parsed when the document is built: as `json!` code it was
/// 13 kB of the binary, as text under 5 kB.
fn components() -> Value {
    serde_json::from_str(COMPONENTS).unwrap_or_default()
}

/// [`components`] (keys in the order the document prints them).
const COMPONENTS: &str = r##"{
  "parameters": {
    "ServerId": {
      "description": "MCP server id",
      "in": "path",
      "name": "id",
      "required": true,
      "schema": {"$ref": "#/components/schemas/ServerId"}
    }
  },
  "schemas": {
    "Envelope": {
      "properties": {
        "data": {"description": "The answer; on an error, data that goes with it, or null"},
        "errors": {"items": {"$ref": "#/components/schemas/Error"}, "type": "array"},
        "metadata": {
          "properties": {
            "processing_time_ms": {"type": "number"},
            "request_id": {"examples": ["req_42"], "type": "string"},
            "version": {"examples": ["v1"], "type": "string"}
          },
          "required": ["request_id", "processing_time_ms", "version"],
          "type": "object"
        },
        "status": {"enum": ["success", "error", "partial"], "type": "string"},
        "timestamp": {"format": "date-time", "type": "string"}
      },
      "required": ["status", "timestamp", "data", "metadata", "errors"],
      "type": "object"
    },
    "Error": {
      "properties": {
        "code": {"description": "Stable snake_case code", "type": "string"},
        "field": {
          "description": "Parameter, body field or config key at fault",
          "type": ["string", "null"]
        },
        "message": {"type": "string"}
      },
      "required": ["code", "message", "field"],
      "type": "object"
    },
    "HealthReport": {
      "properties": {
        "components": {"type": "object"},
        "failing": {"items": {"type": "string"}, "type": "array"},
        "status": {"enum": ["healthy", "unhealthy"], "type": "string"}
      },
      "type": "object"
    },
    "SandboxLimits": {
      "additionalProperties": false,
      "description": "Absent fields take the `[mcp_servers]` defaults",
      "properties": {
        "gid": {
          "description": "Run as this gid (daemon as root only)",
          "maximum": 4294967295,
          "minimum": 0,
          "type": "integer"
        },
        "max_cpu_seconds": {
          "description": "RLIMIT_CPU in seconds (0 = unlimited)",
          "minimum": 0,
          "type": "integer"
        },
        "max_memory_mb": {
          "description": "RLIMIT_DATA in MiB (0 = unlimited)",
          "minimum": 0,
          "type": "integer"
        },
        "max_open_files": {"description": "RLIMIT_NOFILE", "minimum": 0, "type": "integer"},
        "uid": {
          "description": "Run as this uid (daemon as root only)",
          "maximum": 4294967295,
          "minimum": 0,
          "type": "integer"
        }
      },
      "type": "object"
    },
    "ServerId": {"pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$", "type": "string"},
    "ServerSpec": {
      "additionalProperties": false,
      "properties": {
        "args": {"default": [], "items": {"type": "string"}, "type": "array"},
        "autostart": {"default": true, "type": "boolean"},
        "backoff_initial_ms": {
          "description": "First restart delay",
          "maximum": 3600000,
          "minimum": 10,
          "type": "integer"
        },
        "backoff_max_ms": {
          "description": "Largest restart delay",
          "maximum": 86400000,
          "minimum": 10,
          "type": "integer"
        },
        "call_timeout_ms": {
          "description": "Default deadline of a tool call",
          "maximum": 3600000,
          "minimum": 10,
          "type": "integer"
        },
        "capabilities": {
          "default": [],
          "items": {"maxLength": 64, "minLength": 1, "pattern": "^\\S+$", "type": "string"},
          "type": "array"
        },
        "command": {
          "description": "Program to run (looked up on PATH when not a path)",
          "minLength": 1,
          "type": "string"
        },
        "cwd": {"description": "Working directory (absolute path)", "type": "string"},
        "env": {
          "additionalProperties": {"type": "string"},
          "default": {},
          "description": "Environment on top of PATH, HOME, LANG, TERM, USER",
          "type": "object"
        },
        "id": {"$ref": "#/components/schemas/ServerId"},
        "limits": {"$ref": "#/components/schemas/SandboxLimits"},
        "max_failures": {
          "description": "Failed starts within the failure window that open the circuit breaker",
          "maximum": 1000,
          "minimum": 1,
          "type": "integer"
        }
      },
      "required": ["id", "command"],
      "type": "object"
    }
  },
  "securitySchemes": {
    "bearerAuth": {
      "description": "`security.api_token`, the first line of `security.api_token_file`, or the token generated into `<state dir>/api_token` (`vsm-daemon token` shows it); required on every TCP route but `GET /api/v1/health`",
      "scheme": "bearer",
      "type": "http"
    }
  }
}"##;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

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
                let page = path == "/" || path.starts_with("/ui/");
                assert_eq!(public, path == "/api/v1/health" || page, "{id}: security");
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
    fn every_op_is_described_exactly_once() {
        let doc = document("0");
        let mut count = 0;
        for item in doc["paths"].as_object().expect("paths").values() {
            count += item.as_object().expect("path item").len();
        }
        assert_eq!(count, ops::all().count(), "one operation per row");
        for o in ops::all() {
            let op = &doc["paths"][o.path][o.method.to_ascii_lowercase()];
            assert_eq!(op["operationId"], o.id, "{} {}", o.method, o.path);
            assert_eq!(op["summary"], o.summary, "{}", o.id);
            let declared = op["parameters"].as_array().map_or(0, Vec::len);
            assert_eq!(declared, o.params.len(), "{}: parameters", o.id);
            assert_eq!(
                op.get("requestBody").is_some(),
                o.body.is_some(),
                "{}",
                o.id
            );
            for code in o.errors {
                let status = code.http_status().to_string();
                let text = op["responses"][&status]["description"]
                    .as_str()
                    .unwrap_or_default();
                assert!(
                    text.contains(&format!("`{}`", code.as_str())),
                    "{}: {status} lists {}",
                    o.id,
                    code.as_str()
                );
            }
        }
    }

    #[test]
    fn every_routed_operation_is_documented_and_only_the_upgrade_and_mcp_are_not_routed() {
        let described: BTreeSet<(&str, &str)> = operations().into_iter().collect();
        let routed: BTreeSet<(&str, &str)> = crate::net::routes::routes().into_iter().collect();
        assert!(routed.len() > 20);
        let unrouted: Vec<_> = described.difference(&routed).collect();
        assert_eq!(
            unrouted,
            [
                &("DELETE", "/mcp"),
                &("GET", "/mcp"),
                &("GET", "/ws/monitor"),
                &("POST", "/mcp")
            ]
        );
        assert!(routed.is_subset(&described));
    }

    #[test]
    fn control_socket_only_operations_say_so() {
        let doc = document("0");
        for o in ops::all().filter(|o| o.access == Access::ControlSocket) {
            let op = &doc["paths"][o.path][o.method.to_ascii_lowercase()];
            let summary = op["summary"].as_str().unwrap_or_default();
            assert!(summary.contains("control socket only"), "{}", o.id);
            assert!(op["responses"]["403"].is_object(), "{}", o.id);
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
