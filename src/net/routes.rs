//! REST routes: method + path + query + JSON body -> [`api::Request`], derived from the ops
//! table ([`ops::all`]). The same router serves the control socket and the TCP listener.
//!
//! A path that exists with another method is a 405 naming the allowed methods; an unknown
//! path is a 404; a bad parameter or body is a 400 naming the field. `HEAD` is routed as
//! `GET` wherever GET exists (the connection leaves the body out, see [`http::Conn`]), so
//! the table and the OpenAPI document list GET only and `Allow` adds HEAD. Rows without a
//! parser (the WebSocket upgrade, which the connection takes over) are not routed here.
//!
//! [`api::Request`]: crate::api::Request

use crate::api::{Access, ApiError, Args, ErrorCode, Op, Request};
use crate::net::http;
use crate::ops;
use serde_json::Value;

/// The routed rows: every op with a parser.
fn routed() -> impl Iterator<Item = &'static Op> {
    ops::all().filter(|o| o.parse.is_some())
}

/// Where a pattern's `{id}` is, found once (every request walks the `{id}` rows, and
/// finding the brace and checking what follows it in each row was most of that walk's cost).
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// No `{id}`.
    Literal,
    /// An `{id}` at `brace`; `suffix`: the rest of the pattern when the `{id}` is one whole
    /// segment and the only one (every row so far), which is then matched at once.
    Id {
        brace: usize,
        suffix: Option<&'static str>,
    },
}

impl Shape {
    fn of(pattern: &'static str) -> Shape {
        let Some(brace) = pattern.find('{') else {
            return Shape::Literal;
        };
        let suffix = pattern[brace..]
            .strip_prefix("{id}")
            .filter(|s| pattern[..brace].ends_with('/') && (s.is_empty() || s.starts_with('/')))
            .filter(|s| !s.contains('{'));
        Shape::Id { brace, suffix }
    }
}

/// A routed row and its pattern's [`Shape`].
struct Row {
    op: &'static Op,
    shape: Shape,
}

/// The routes, found once: the literal patterns (no `{id}`) sorted and deduplicated, for a
/// binary search, the rows with an `{id}`, in table order, what all of those start with
/// (a path without it, such as `/mcp`, is no `{id}` row's), and the public rows.
struct Table {
    literal: Vec<&'static str>,
    templated: Vec<Row>,
    templated_prefix: &'static str,
    public: Vec<Row>,
}

/// The routed rows split by [`Table`].
fn table() -> &'static Table {
    static TABLE: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut literal = Vec::new();
        let mut templated = Vec::new();
        let mut public = Vec::new();
        for op in routed() {
            let shape = Shape::of(op.path);
            if op.access == Access::Public {
                public.push(Row { op, shape });
            }
            match shape {
                Shape::Id { .. } => templated.push(Row { op, shape }),
                Shape::Literal => literal.push(op.path),
            }
        }
        literal.sort_unstable();
        literal.dedup();
        let mut templated_prefix = templated.first().map_or("", |r| r.op.path);
        for r in &templated {
            let common = templated_prefix
                .bytes()
                .zip(r.op.path.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            templated_prefix =
                &templated_prefix[..crate::text::floor_boundary(templated_prefix, common)];
        }
        Table {
            literal,
            templated,
            templated_prefix,
            public,
        }
    })
}

/// The literal pattern equal to `path`, by binary search.
fn literal(path: &str) -> Option<&'static str> {
    let t = &table().literal;
    t.binary_search(&path).ok().map(|i| t[i])
}

/// Every (method, path pattern) the router answers (HEAD aside), in table order.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    routed().map(|o| (o.method, o.path)).collect()
}

/// Routes that answer only on the control socket (403 over TCP and WebSocket, even with a
/// valid token): they hand out or replace the token itself.
pub fn control_socket_only(pattern: &str) -> bool {
    routed().any(|o| o.path == pattern && o.access == Access::ControlSocket)
}

/// Whether the ops table lets anyone call `method path` over TCP without a token (the health
/// check probes use). Cheap: only the public rows are matched.
pub fn is_public(method: &str, path: &str) -> bool {
    let method = if method == "HEAD" { "GET" } else { method };
    let path = trimmed(path);
    table()
        .public
        .iter()
        .any(|r| r.op.method == method && matches_at(r.op.path, r.shape, path).is_some())
}

/// A path without its trailing slashes; the root stays `/` (the status page's route).
fn trimmed(path: &str) -> &str {
    match path.trim_end_matches('/') {
        "" if path.starts_with('/') => "/",
        p => p,
    }
}

/// A path matched against the route table (cheap: no body is looked at yet).
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The route pattern (also the metrics label).
    pub pattern: &'static str,
    id: Option<String>,
}

/// Finds the route of a path; `None` for an unknown path.
///
/// A literal pattern wins over an `{id}` one that also matches, wherever the rows sit in the
/// table: `/api/v1/capabilities/integrate` is not the capability `integrate` of
/// `/api/v1/capabilities/{id}`.
pub fn resolve(path: &str) -> Option<Resolved> {
    let path = trimmed(path);
    if let Some(pattern) = literal(path) {
        return Some(Resolved { pattern, id: None });
    }
    let table = table();
    if !path.starts_with(table.templated_prefix) {
        return None;
    }
    table.templated.iter().find_map(|r| {
        let id = matches_at(r.op.path, r.shape, path)?;
        Some(Resolved {
            pattern: r.op.path,
            id,
        })
    })
}

/// The methods a route pattern answers, in table order.
fn methods_of(pattern: &str) -> Vec<&'static str> {
    routed()
        .filter(|o| o.path == pattern)
        .map(|o| o.method)
        .collect()
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

/// Matches a path against a route pattern of this [`Shape`]; returns the `{id}` segment
/// (decoded) if any. No allocation unless the pattern matches and has an `{id}`.
fn matches_at(pattern: &str, shape: Shape, path: &str) -> Option<Option<String>> {
    match shape {
        Shape::Literal => (pattern == path).then_some(None),
        Shape::Id { brace, .. } if !path.starts_with(&pattern[..brace]) => None,
        Shape::Id {
            brace,
            suffix: Some(suffix),
        } => {
            // The segment after the prefix is the id and the rest must be the pattern's
            // rest, compared at once instead of segment by segment.
            let rest = &path[brace..];
            let end = rest.find('/').unwrap_or(rest.len());
            let seg = &rest[..end];
            if seg.is_empty() || &rest[end..] != suffix {
                return None;
            }
            percent_decode(seg).map(Some)
        }
        Shape::Id { suffix: None, .. } => walk(pattern, path),
    }
}

/// [`matches_at`] segment by segment, for any pattern.
fn walk(pattern: &str, path: &str) -> Option<Option<String>> {
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
    let Some(Resolved { pattern, id }) = resolved else {
        return Err(
            ApiError::new(ErrorCode::NotFound, format!("no route for {}", req.path)).into(),
        );
    };
    let method = if req.method == "HEAD" {
        "GET"
    } else {
        req.method.as_str()
    };
    let row = routed().find(|o| o.path == pattern && o.method == method);
    let Some(parse) = row.and_then(|o| o.parse) else {
        return Err(RouteError {
            error: ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("{} does not accept {}", req.path, req.method),
            ),
            allow: Some(allow_header(&methods_of(pattern))),
        });
    };
    let query = parse_query(&req.query)?;
    let body = parse_body(&req.body)?;
    let args = Args::new(
        query,
        body,
        id.unwrap_or_default(),
        req.accepts_event_stream(),
    );
    Ok(parse(args)?)
}

/// Decodes a query string into (name, value) pairs.
fn parse_query(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
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
    Ok(pairs)
}

/// A JSON object body, or `None` for an empty (or blank) one.
fn parse_body(raw: &[u8]) -> Result<Option<Value>, ApiError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice(raw) {
        Ok(v @ Value::Object(_)) => Ok(Some(v)),
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
    use crate::api::{ConfigRequest, ControlRequest, DaemonRequest};
    use crate::ops;

    fn req(method: &str, target: &str, body: &str) -> http::Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        http::Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: Default::default(),
            body: body.as_bytes().to_vec(),
            keep_alive: true,
        }
    }

    #[test]
    fn routes_map_to_requests() {
        assert_eq!(
            route(&req("GET", "/api/v1/status?detailed=true", "")).ok(),
            Some(Request::Daemon(DaemonRequest::Status { detailed: true }))
        );
        assert_eq!(
            route(&req(
                "POST",
                "/api/v1/control/stop",
                r#"{"shutdown": true}"#
            ))
            .ok(),
            Some(Request::Control(ControlRequest::Stop {
                service: None,
                shutdown: true,
                graceful: true
            }))
        );
        assert_eq!(
            route(&req("GET", "/api/v1/config?section=mon%69toring", "")).ok(),
            Some(Request::Config(ConfigRequest::Show {
                section: Some("monitoring".into())
            }))
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

    /// A body the row accepts (the rows that require one), so that routing succeeds.
    fn sample_body(o: &Op) -> &'static str {
        match (o.method, o.path) {
            ("PUT", "/api/v1/config") => r#"{"daemon":{"log_level":"info"}}"#,
            ("POST", "/api/v1/mcp/servers") => r#"{"id":"x","command":"true"}"#,
            ("POST", "/api/v1/mcp/servers/{id}/tools/call") => r#"{"name":"t"}"#,
            ("POST", "/api/v1/mcp/servers/{id}/resources/read") => r#"{"uri":"x://y"}"#,
            ("POST", "/api/v1/mcp/servers/{id}/prompts/get") => r#"{"name":"p"}"#,
            ("POST", "/api/v1/capabilities/acquire") => r#"{"capability_type":"time"}"#,
            ("POST", "/api/v1/vsm/systems/{id}/action") => r#"{"action":"audit"}"#,
            ("POST", "/api/v1/consciousness/query") => r#"{"about":"server","id":"x"}"#,
            ("POST", "/api/v1/consciousness/decision") => {
                r#"{"situation":"degraded_server","subject":"x"}"#
            }
            ("POST", "/api/v1/capabilities/integrate") => r#"{"package":"npm:x@1.0.0"}"#,
            _ => {
                assert!(
                    !o.body.is_some_and(|b| b.required),
                    "{}: give the test a sample body",
                    o.id
                );
                ""
            }
        }
    }

    #[test]
    fn every_row_with_a_parser_is_routed_to_itself() {
        let mut count = 0;
        for o in ops::all().filter(|o| o.parse.is_some()) {
            let path = o.path.replace("{id}", "x");
            let mut methods = vec![o.method];
            if o.method == "GET" {
                methods.push("HEAD");
            }
            for m in methods {
                let r = route(&req(m, &path, sample_body(o)));
                assert!(r.is_ok(), "{m} {path}: {:?}", r.err());
                assert_eq!(resolve(&path).map(|r| r.pattern), Some(o.path));
                count += 1;
            }
        }
        assert_eq!(
            count,
            routes().len() + routes().iter().filter(|r| r.0 == "GET").count()
        );
        assert_eq!(resolve("/ws/monitor").map(|r| r.pattern), None);
    }

    #[test]
    fn the_router_accepts_exactly_the_methods_of_the_table() {
        const ANY: &[&str] = &[
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
        ];
        for o in ops::all().filter(|o| o.parse.is_some()) {
            let in_table: Vec<&str> = ops::all()
                .filter(|r| r.path == o.path && r.parse.is_some())
                .map(|r| r.method)
                .collect();
            let path = o.path.replace("{id}", "x");
            for m in ANY {
                let as_get = if *m == "HEAD" { "GET" } else { m };
                let body = if *m == o.method { sample_body(o) } else { "" };
                match route(&req(m, &path, body)) {
                    Err(e) if e.error.code == ErrorCode::MethodNotAllowed => {
                        assert!(!in_table.contains(&as_get), "{m} {path}");
                        assert_eq!(e.allow, Some(allow_header(&in_table)), "{m} {path}");
                    }
                    Err(e) => assert!(
                        in_table.contains(&as_get) && e.error.code != ErrorCode::NotFound,
                        "{m} {path}: {:?}",
                        e.error
                    ),
                    Ok(_) => assert!(in_table.contains(&as_get), "{m} {path} routed"),
                }
            }
        }
    }

    /// Whether any routed row's pattern matches `path`, by a matcher written apart from the
    /// router's.
    fn in_table(path: &str) -> bool {
        // Trailing slashes do not count, but the root is the status page's route.
        let path = match path.trim_end_matches('/') {
            "" => "/",
            p => p,
        };
        ops::all().filter(|o| o.parse.is_some()).any(|o| {
            let p: Vec<&str> = o.path.split('/').collect();
            let q: Vec<&str> = path.split('/').collect();
            p.len() == q.len()
                && p.iter()
                    .zip(&q)
                    .all(|(a, b)| a == b || (*a == "{id}" && !b.is_empty()))
        })
    }

    #[test]
    fn random_paths_route_only_when_the_table_has_them() {
        const SEGMENTS: &[&str] = &[
            "api", "v1", "mcp", "servers", "x", "status", "metrics", "tools", "call", "config", "",
            "ws", "monitor", "auth", "token", "health", "events", "%41", "schema", "start",
        ];
        // A fixed linear congruential sequence: the same paths on every run.
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % n
        };
        let (mut hits, mut misses) = (0, 0);
        for _ in 0..20_000 {
            // Half start like the API so that many paths come close to real routes.
            let mut path = String::from(if next(2) == 0 { "/api/v1" } else { "" });
            for _ in 0..1 + next(5) {
                path.push('/');
                path.push_str(SEGMENTS[next(SEGMENTS.len())]);
            }
            let r = route(&req("GET", &path, ""));
            let not_found = matches!(&r, Err(e) if e.error.code == ErrorCode::NotFound);
            assert_eq!(!not_found, in_table(&path), "{path}: {:?}", r.err());
            if not_found {
                misses += 1;
            } else {
                hits += 1;
            }
        }
        assert!(hits > 100 && misses > 100, "{hits} {misses}");
    }

    #[test]
    fn only_the_public_rows_need_no_token() {
        for o in ops::all().filter(|o| o.parse.is_some()) {
            let path = o.path.replace("{id}", "x");
            let public = o.access == Access::Public;
            assert_eq!(is_public(o.method, &path), public, "{} {path}", o.method);
            if o.method == "GET" {
                assert_eq!(
                    is_public("HEAD", &format!("{path}/")),
                    public,
                    "HEAD {path}/"
                );
            }
            assert!(!is_public("DELETE", &path), "DELETE {path}");
        }
        assert!(is_public("GET", "/api/v1/health"));
        assert!(!is_public("GET", "/api/v1/health/x"));
    }

    #[test]
    fn a_row_with_an_id_matches_as_the_segment_walk_does() {
        let ids = ["fx", "a%20b", "%zz", "", "x.y", "fx/more"];
        let mut checked = 0;
        for r in &table().templated {
            let Shape::Id { brace: i, .. } = r.shape else {
                unreachable!("a templated row has an id")
            };
            let mut paths: Vec<String> =
                ids.iter().map(|id| r.op.path.replace("{id}", id)).collect();
            paths.extend(paths.clone().iter().map(|p| format!("{p}/")));
            paths.extend(paths.clone().iter().map(|p| format!("{p}x")));
            paths.push(r.op.path[..i].to_string());
            paths.push(r.op.path[..i - 1].to_string());
            for path in paths {
                assert_eq!(
                    matches_at(r.op.path, r.shape, &path),
                    walk(r.op.path, &path),
                    "{} {path}",
                    r.op.path
                );
                checked += 1;
            }
        }
        assert!(checked > 100, "{checked}");
    }

    #[test]
    fn the_id_rows_share_a_prefix_that_each_of_them_starts_with() {
        let t = table();
        assert!(t.templated.len() > 1);
        assert!(
            t.templated_prefix.starts_with('/'),
            "{}",
            t.templated_prefix
        );
        for r in &t.templated {
            assert!(r.op.path.starts_with(t.templated_prefix), "{}", r.op.path);
        }
        assert!(resolve("/mcp").is_none());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
