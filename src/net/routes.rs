//! REST routes: method + path + query + JSON body -> [`api::Request`]. The same router serves
//! the control socket and (later) the TCP listener.
//!
//! A path that exists with another method is a 405 naming the allowed methods; an unknown
//! path is a 404; a bad parameter or body is a 400 naming the field. `HEAD` is routed as
//! `GET` wherever GET exists (the connection leaves the body out, see [`http::Conn`]), so
//! the table and the OpenAPI document list GET only and `Allow` adds HEAD.

use crate::api::{ApiError, ErrorCode, EventQuery, LogQuery, Request};
use crate::mcp::registry::ServerSpec;
use crate::net::http;
use serde_json::Value;

/// Every route: path and the methods it answers. Also the source of the `Allow` header.
pub const ROUTES: &[(&str, &[&str])] = &[
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
    ("/api/v1/metrics", &["GET"]),
    ("/api/v1/metrics/performance", &["GET"]),
    ("/api/v1/metrics/health", &["GET"]),
    ("/metrics", &["GET"]),
    ("/api/v1/openapi.json", &["GET"]),
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

/// Routes that answer only on the control socket (403 over TCP and WebSocket, even with a
/// valid token): they hand out or replace the token itself.
pub fn control_socket_only(pattern: &str) -> bool {
    pattern.starts_with("/api/v1/auth/")
}

/// A path matched against the route table (cheap: no body is looked at yet).
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The route pattern (also the metrics label).
    pub pattern: &'static str,
    methods: &'static [&'static str],
    id: Option<String>,
}

/// Finds the route of a path; `None` for an unknown path.
pub fn resolve(path: &str) -> Option<Resolved> {
    let path = path.trim_end_matches('/');
    ROUTES.iter().find_map(|(p, m)| {
        matches(p, path).map(|id| Resolved {
            pattern: p,
            methods: m,
            id,
        })
    })
}

/// The metrics label of a resolved path: its pattern, or `"unmatched"`.
pub fn label(resolved: Option<&Resolved>) -> &'static str {
    resolved.map_or("unmatched", |r| r.pattern)
}

/// A method name for metrics labels (client-chosen strings are folded into `OTHER`).
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// Matches a path against a route pattern; returns the `{id}` segment (decoded) if any.
/// No allocation unless the pattern matches and has an `{id}`.
fn matches(pattern: &str, path: &str) -> Option<Option<String>> {
    let mut raw_id = None;
    let mut p = pattern.split('/');
    let mut q = path.split('/');
    loop {
        match (p.next(), q.next()) {
            (None, None) => break,
            (Some("{id}"), Some(seg)) if !seg.is_empty() => raw_id = Some(seg),
            (Some(a), Some(b)) if a == b => {}
            _ => return None,
        }
    }
    match raw_id {
        Some(seg) => percent_decode(seg).map(Some),
        None => Some(None),
    }
}

/// A routing failure: the error and, for 405, the methods to list in `Allow`.
#[derive(Debug)]
pub struct RouteError {
    /// The error answer.
    pub error: ApiError,
    /// Allowed methods (405 only).
    pub allow: Option<String>,
}

impl From<ApiError> for RouteError {
    fn from(error: ApiError) -> Self {
        RouteError { error, allow: None }
    }
}

/// The `Allow` value of a route: its methods, with `HEAD` after `GET` (every GET route
/// answers HEAD with the same head and no body).
pub fn allow_header(methods: &[&str]) -> String {
    let mut out = String::new();
    for m in methods {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(m);
        if *m == "GET" {
            out.push_str(", HEAD");
        }
    }
    out
}

/// Maps an HTTP request to an API request.
///
/// # Errors
/// 404 for unknown paths, 405 (with `allow`) for a wrong method, 400 for bad input.
pub fn route(req: &http::Request) -> Result<Request, RouteError> {
    route_resolved(req, resolve(&req.path))
}

/// [`route`] for a path already resolved (the daemon resolves once, for its metrics label too).
///
/// # Errors
/// As [`route`].
pub fn route_resolved(
    req: &http::Request,
    resolved: Option<Resolved>,
) -> Result<Request, RouteError> {
    let Some(Resolved {
        pattern,
        methods,
        id,
    }) = resolved
    else {
        return Err(
            ApiError::new(ErrorCode::NotFound, format!("no route for {}", req.path)).into(),
        );
    };
    let id = id.unwrap_or_default();
    let method = if req.method == "HEAD" {
        "GET"
    } else {
        req.method.as_str()
    };
    if !methods.contains(&method) {
        return Err(RouteError {
            error: ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("{} does not accept {}", req.path, req.method),
            ),
            allow: Some(allow_header(methods)),
        });
    }
    let q = Query::parse(&req.query)?;
    let body = Body::parse(&req.body)?;
    let request = match (method, pattern) {
        ("GET", "/api/v1/status") => Request::Status {
            detailed: q.flag("detailed")?,
        },
        ("GET", "/api/v1/health") => Request::Health {
            component: q.text("component"),
        },
        ("POST", "/api/v1/control/start") => Request::ControlStart {
            service: body.text("service")?,
        },
        ("POST", "/api/v1/control/stop") => Request::ControlStop {
            service: body.text("service")?,
            shutdown: body.flag("shutdown")?.unwrap_or(false),
            graceful: body.flag("graceful")?.unwrap_or(true),
        },
        ("POST", "/api/v1/control/restart") => Request::ControlRestart {
            service: body.text("service")?,
        },
        ("GET", "/api/v1/config") => Request::ConfigShow {
            section: q.text("section"),
        },
        ("PUT", "/api/v1/config") => {
            match body.0 {
                Some(patch @ Value::Object(_)) => Request::ConfigUpdate { patch },
                _ => return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "body must be a JSON object in the shape of the configuration (a merge patch)",
                )
                .into()),
            }
        }
        ("POST", "/api/v1/config/reload") => Request::ConfigReload,
        ("GET", "/api/v1/auth/token") => Request::AuthToken,
        ("POST", "/api/v1/auth/token/rotate") => Request::AuthTokenRotate,
        ("GET", "/api/v1/config/schema") => Request::ConfigSchema,
        ("GET", "/api/v1/logs") => Request::Logs {
            query: LogQuery {
                level: match q.text("level") {
                    Some(l) => parse_level(&l)?,
                    None => log::LevelFilter::Trace,
                },
                lines: q
                    .number("lines")?
                    .or(q.number("limit")?)
                    .unwrap_or(100)
                    .min(100_000) as usize,
                component: q.text("component"),
                since: q.number("since")?,
            },
            follow: req.accepts_event_stream() || q.flag("follow")?,
        },
        ("POST", "/api/v1/diagnostics/run") => Request::Diagnostics {
            full: q.flag("full")? || body.flag("full")?.unwrap_or(false),
        },
        ("GET", "/api/v1/metrics") => Request::Metrics { view: "all" },
        ("GET", "/api/v1/metrics/performance") => Request::Metrics {
            view: "performance",
        },
        ("GET", "/api/v1/metrics/health") => Request::Metrics { view: "health" },
        ("GET", "/metrics") => Request::Prometheus,
        ("GET", "/api/v1/openapi.json") => Request::OpenApi,
        ("GET", "/api/v1/events") => Request::Events {
            query: EventQuery {
                kind: q.text("type"),
                channel: q.text("channel"),
                since: q.number("since")?,
                limit: q.number("limit")?.unwrap_or(100).min(10_000) as usize,
            },
            follow: req.accepts_event_stream() || q.flag("follow")?,
        },
        ("GET", "/api/v1/mcp/servers") => Request::McpList {
            status: match q.text("status").as_deref() {
                None | Some("all") => "all",
                Some("active") => "active",
                Some("inactive") => "inactive",
                Some(other) => {
                    return Err(ApiError::field(
                        ErrorCode::InvalidParameter,
                        "status",
                        format!("'{other}' is not one of active, inactive, all"),
                    )
                    .into())
                }
            },
        },
        ("POST", "/api/v1/mcp/servers") => {
            let Some(spec) = body.0 else {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "body must be a server spec object",
                )
                .into());
            };
            let spec: ServerSpec = serde_json::from_value(spec).map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("invalid server spec: {e}"),
                )
            })?;
            Request::McpRegister { spec }
        }
        ("GET", "/api/v1/mcp/servers/{id}") => Request::McpShow { id },
        ("DELETE", "/api/v1/mcp/servers/{id}") => Request::McpUnregister { id },
        ("POST", "/api/v1/mcp/servers/{id}/start") => Request::McpStart { id },
        ("POST", "/api/v1/mcp/servers/{id}/stop") => Request::McpStop { id },
        ("POST", "/api/v1/mcp/servers/{id}/restart") => Request::McpRestart { id },
        ("POST", "/api/v1/mcp/servers/{id}/reset") => Request::McpReset { id },
        ("GET", "/api/v1/mcp/servers/{id}/tools") => Request::McpTools { id },
        ("POST", "/api/v1/mcp/servers/{id}/tools/call") => {
            let name = body.text("name")?.ok_or_else(|| {
                ApiError::field(
                    ErrorCode::InvalidParameter,
                    "name",
                    "the tool name is required",
                )
            })?;
            let arguments = match body.get("arguments") {
                None => Value::Object(Default::default()),
                Some(v @ Value::Object(_)) => v.clone(),
                Some(_) => {
                    return Err(ApiError::field(
                        ErrorCode::InvalidParameter,
                        "arguments",
                        "must be an object",
                    )
                    .into())
                }
            };
            let timeout_ms = match body.get("timeout_ms") {
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
                        )
                        .into())
                    }
                },
            };
            Request::McpCall {
                id,
                name,
                arguments,
                timeout_ms,
            }
        }
        _ => {
            return Err(
                ApiError::new(ErrorCode::NotFound, format!("no route for {}", req.path)).into(),
            )
        }
    };
    Ok(request)
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

/// Decoded query parameters.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Result<Query, ApiError> {
        let mut pairs = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let key = percent_decode(k)
                .ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "malformed query string"))?;
            let value = percent_decode(v).ok_or_else(|| {
                ApiError::field(
                    ErrorCode::InvalidParameter,
                    key.clone(),
                    "malformed percent-encoding",
                )
            })?;
            pairs.push((key, value));
        }
        Ok(Query(pairs))
    }

    fn text(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.text(key).as_deref() {
            None => Ok(false),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            // An empty value (`?detailed=` or a bare `?detailed`) is not a boolean: the
            // OpenAPI document says `boolean`, and guessing `true` hid typos.
            Some(other) => Err(ApiError::field(
                ErrorCode::InvalidParameter,
                key,
                format!("'{other}' is not a boolean (true, false, 1, 0, yes, no)"),
            )),
        }
    }

    fn number(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.text(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::field(
                        ErrorCode::InvalidParameter,
                        key,
                        format!("'{v}' is not a non-negative integer"),
                    )
                })
            })
            .transpose()
    }
}

/// A JSON object body (or none).
struct Body(Option<Value>);

impl Body {
    fn parse(raw: &[u8]) -> Result<Body, ApiError> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(None));
        }
        match serde_json::from_slice(raw) {
            Ok(v @ Value::Object(_)) => Ok(Body(Some(v))),
            Ok(_) => Err(ApiError::new(
                ErrorCode::BadRequest,
                "the body must be a JSON object",
            )),
            Err(e) => Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("invalid JSON body: {e}"),
            )),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.0
            .as_ref()
            .and_then(|v| v.get(key))
            .filter(|v| !v.is_null())
    }

    fn text(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::field(
                ErrorCode::InvalidParameter,
                key,
                "must be a string",
            )),
        }
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::field(
                ErrorCode::InvalidParameter,
                key,
                "must be a boolean",
            )),
        }
    }
}

/// Decodes `%XX` escapes and `+` (as space); `None` for a broken escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, body: &str) -> http::Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        http::Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: vec![],
            body: body.as_bytes().to_vec(),
            keep_alive: true,
        }
    }

    #[test]
    fn routes_map_to_requests() {
        assert_eq!(
            route(&req("GET", "/api/v1/status?detailed=true", "")).ok(),
            Some(Request::Status { detailed: true })
        );
        assert_eq!(
            route(&req(
                "POST",
                "/api/v1/control/stop",
                r#"{"shutdown": true}"#
            ))
            .ok(),
            Some(Request::ControlStop {
                service: None,
                shutdown: true,
                graceful: true
            })
        );
        assert_eq!(
            route(&req("GET", "/api/v1/config?section=mon%69toring", "")).ok(),
            Some(Request::ConfigShow {
                section: Some("monitoring".into())
            })
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let e = route(&req("DELETE", "/api/v1/status", "")).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::MethodNotAllowed);
        assert_eq!(e.allow.as_deref(), Some("GET, HEAD"));
        let e = route(&req("HEAD", "/api/v1/control/restart", "")).unwrap_err();
        assert_eq!(e.allow.as_deref(), Some("POST"));
        let e = route(&req("DELETE", "/api/v1/mcp/servers", "")).unwrap_err();
        assert_eq!(e.allow.as_deref(), Some("GET, HEAD, POST"));
        assert!(route(&req("HEAD", "/api/v1/status", "")).is_ok());
        let e = route(&req("GET", "/nope", "")).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::NotFound);
        let e = route(&req("GET", "/api/v1/logs?lines=ten", "")).unwrap_err();
        assert_eq!(e.error.field.as_deref(), Some("lines"));
        for empty in ["detailed=", "detailed", "detailed=&x=1"] {
            let e = route(&req("GET", &format!("/api/v1/status?{empty}"), "")).unwrap_err();
            assert_eq!(e.error.code, ErrorCode::InvalidParameter, "{empty}");
            assert_eq!(e.error.field.as_deref(), Some("detailed"), "{empty}");
        }
        let e = route(&req("GET", "/api/v1/logs?level=loud", "")).unwrap_err();
        assert_eq!(e.error.field.as_deref(), Some("level"));
        let e = route(&req("POST", "/api/v1/control/restart", "{")).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::BadRequest);
        let e = route(&req("PUT", "/api/v1/config", "[1]")).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::BadRequest);
        let e = route(&req("POST", "/api/v1/control/restart", r#"{"service": 3}"#)).unwrap_err();
        assert_eq!(e.error.field.as_deref(), Some("service"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
