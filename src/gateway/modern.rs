//! The 2026-07-28 era of `/mcp`: stateless requests beside the 2025 sessions of `mod.rs`.
//!
//! A POST is of this era when its `params._meta` names a protocol version, or when it has no
//! `Mcp-Session-Id` and its `MCP-Protocol-Version` is not one of the session era's
//! ([`is_modern`]). Such a request needs no session: it is checked on its own ([`check`]), in
//! the order the specification's server validation gives, each refusal a 400 with its
//! JSON-RPC code: `_meta` without the version or the client capabilities (-32602), the
//! `MCP-Protocol-Version`, `Mcp-Method` or `Mcp-Name` header missing or not matching the body
//! (`HeaderMismatch`, -32020; `Mcp-Name` may be `=?base64?…?=`), a version we do not speak
//! (`UnsupportedProtocolVersion`, -32022, naming the ones we do). Then `server/discover`,
//! the lists of tools, prompts, resources and resource templates (with `ttlMs` and
//! `cacheScope`), `tools/call`, `prompts/get` and `resources/read` (the same forwarding as the
//! session era), `completion/complete` (likewise) and `subscriptions/listen` (an SSE stream:
//! the acknowledgement, then the `list_changed` notifications it asked for and the
//! `notifications/resources/updated` of its `resourceSubscriptions`, tagged with the
//! subscription id; the client closing it ends it) are served; another method is a 404 with
//! -32601, as the transport says. A `tools/call` whose `_meta` names a log level
//! (`io.modelcontextprotocol/logLevel`, this era's replacement of `logging/setLevel`) gets its
//! server's log messages at that level or above on its stream.
//!
//! Invariants: listen streams are at most `gateway.max_sessions` (one beyond is refused with
//! 503) and get the keep-alive comments of the other streams; a stream whose connection
//! closed is forgotten when the wiring prunes streams.

use super::*;
use serde_json::Map;
use std::borrow::Cow;

/// Protocol versions of the stateless era `/mcp` speaks, newest first.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];

/// The `ttlMs` of `server/discover` and `tools/list` answers: the catalogue changes when
/// servers come and go, and a `subscriptions/listen` stream says so at once, so a client
/// without one re-reads it after a few seconds.
pub const LIST_TTL_MS: u64 = 5_000;

/// JSON-RPC codes of the 2026-07-28 era.
mod era_code {
    /// Headers missing or not matching the body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// A protocol version the server does not speak.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

/// `_meta` keys.
pub(super) const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub(super) const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
const META_SUBSCRIPTION: &str = "io.modelcontextprotocol/subscriptionId";
pub(super) const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";

/// The list-change notifications a listen stream can ask for: the filter's field, the
/// notification it brings.
const LIST_FILTERS: [(&str, &str); 3] = [
    ("toolsListChanged", "notifications/tools/list_changed"),
    ("promptsListChanged", "notifications/prompts/list_changed"),
    (
        "resourcesListChanged",
        "notifications/resources/list_changed",
    ),
];

/// An open `subscriptions/listen` stream.
#[derive(Debug)]
pub(super) struct Listener {
    /// The stream's connection.
    pub conn: ConnId,
    /// The JSON-RPC id of the listen request (the subscription id).
    id: Value,
    /// The notifications it asked for (methods of [`LIST_FILTERS`]).
    wants: Vec<&'static str>,
    /// The resources it subscribed to (`resourceSubscriptions`): (server, URI), held in the
    /// gateway's subscriptions under [`Listener::holder`].
    pub resources: Vec<(String, String)>,
}

impl Listener {
    /// The name it holds resource subscriptions under (no session id looks like it).
    pub fn holder(&self) -> String {
        holder_of(self.conn)
    }

    /// The subscription id (the listen request's JSON-RPC id).
    pub fn id_value(&self) -> &Value {
        &self.id
    }
}

/// The holder name of the listen stream on `conn`.
pub(super) fn holder_of(conn: ConnId) -> String {
    format!("listen/{}/{}", conn.slot, conn.generation)
}

/// Why a request is refused: HTTP status, JSON-RPC code, message, data.
type Refusal = (u16, i64, String, Option<Value>);

/// Whether a POST belongs to the stateless era (see the module's doc).
pub(super) fn is_modern(request: &http::Request, message: &Map<String, Value>) -> bool {
    let meta_version = message
        .get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_VERSION))
        .is_some();
    is_modern_by(request, meta_version)
}

/// Whether a POST belongs to the stateless era, given whether its `params._meta` names a
/// protocol version.
pub(super) fn is_modern_by(request: &http::Request, meta_version: bool) -> bool {
    meta_version
        || (request.header("mcp-session-id").is_none()
            && request
                .header("mcp-protocol-version")
                .is_some_and(|v| !VERSIONS.contains(&v)))
}

/// What [`check`] reads of a request's params.
pub(super) struct Seen<'a> {
    /// The protocol version, when `_meta` is an object that has one (`Some(None)`: it is not
    /// a string).
    pub version: Option<Option<&'a str>>,
    /// Whether `_meta` is an object with the client capabilities.
    pub capabilities: bool,
    /// The member the method names its target by (`name`, `uri`), when it is a string.
    pub named: Option<&'a str>,
}

/// The member a method names its target by, if it has one.
fn name_key(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// Checks a request of the stateless era against the specification's server validation.
/// Returns the protocol version it speaks.
fn check<'a>(request: &http::Request, method: &str, params: &'a Value) -> Result<&'a str, Refusal> {
    let meta = params.get("_meta").and_then(Value::as_object);
    let seen = Seen {
        version: meta.and_then(|m| m.get(META_VERSION)).map(Value::as_str),
        capabilities: meta.is_some_and(|m| m.contains_key(META_CAPABILITIES)),
        named: name_key(method)
            .and_then(|k| params.get(k))
            .and_then(Value::as_str),
    };
    check_seen(request, method, seen)
}

/// [`check`] on what it reads of the params.
pub(super) fn check_seen<'a>(
    request: &http::Request,
    method: &str,
    seen: Seen<'a>,
) -> Result<&'a str, Refusal> {
    let (Some(version), true) = (seen.version, seen.capabilities) else {
        let m = format!("params._meta must carry {META_VERSION:?} and {META_CAPABILITIES:?}");
        return Err((400, code::INVALID_PARAMS, m, None));
    };
    let Some(version) = version else {
        let m = format!("params._meta {META_VERSION:?} must be a string");
        return Err((400, code::INVALID_PARAMS, m, None));
    };
    let mismatch = |m: String| Err((400, era_code::HEADER_MISMATCH, m, None));
    match request.header("mcp-protocol-version") {
        None => return mismatch("the MCP-Protocol-Version header is required".into()),
        Some(h) if h != version => {
            return mismatch(format!(
                "MCP-Protocol-Version header {:?} does not match the body's {version:?}",
                shown(h)
            ))
        }
        Some(_) => {}
    }
    match request.header("mcp-method") {
        None => return mismatch("the Mcp-Method header is required".into()),
        Some(h) if h != method => {
            return mismatch(format!(
                "Mcp-Method header {:?} does not match the body's method {:?}",
                shown(h),
                shown(method)
            ))
        }
        Some(_) => {}
    }
    if let Some(body) = seen.named {
        let Some(header) = request.header("mcp-name") else {
            return mismatch(format!("the Mcp-Name header is required for {method}"));
        };
        match decode_header_value(header) {
            None => {
                return mismatch(format!(
                    "Mcp-Name header {:?} is not a valid value",
                    shown(header)
                ))
            }
            Some(h) if h != body => {
                return mismatch(format!(
                    "Mcp-Name header {:?} does not match the body's {:?}",
                    shown(&h),
                    shown(body)
                ))
            }
            Some(_) => {}
        }
    }
    if !MODERN_VERSIONS.contains(&version) {
        let supported: Vec<&str> = MODERN_VERSIONS.iter().chain(VERSIONS).copied().collect();
        let data = json!({"supported": supported, "requested": version});
        let m = format!("Unsupported protocol version {:?}", shown(version));
        return Err((400, era_code::UNSUPPORTED_PROTOCOL_VERSION, m, Some(data)));
    }
    Ok(version)
}

/// At most 80 characters of something a client sent, for a message.
fn shown(text: &str) -> String {
    text.chars().take(80).collect()
}

/// A header value as the specification encodes it: plain visible ASCII (and spaces, tabs),
/// or `=?base64?…?=` around the Base64 of UTF-8. `None` when it is neither.
fn decode_header_value(value: &str) -> Option<Cow<'_, str>> {
    if let Some(inner) = value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        return String::from_utf8(base64_decode(inner)?)
            .ok()
            .map(Cow::Owned);
    }
    let plain = value
        .bytes()
        .all(|b| b == b'\t' || (0x20..=0x7e).contains(&b));
    plain.then_some(Cow::Borrowed(value))
}

/// Standard Base64 (with or without padding); `None` on any other character.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0u8);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

impl Gateway {
    /// One POST of the stateless era (see the module's doc).
    pub(super) fn modern(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        request: &http::Request,
        reply: ReplyTo,
        message: &Map<String, Value>,
    ) {
        let Some(method) = message.get("method").and_then(Value::as_str) else {
            let m = "a JSON-RPC request needs a string method";
            return refuse_with(
                cx,
                reply,
                &Value::Null,
                (400, code::INVALID_REQUEST, m.into(), None),
            );
        };
        let Some(id) = message.get("id").cloned() else {
            // This era defines no client notifications over HTTP; one is taken and dropped.
            return accepted(cx, reply);
        };
        let params = message.get("params").unwrap_or(&Value::Null);
        if let Err(r) = check(request, method, params) {
            return refuse_with(cx, reply, &id, r);
        }
        match method {
            "server/discover" => {
                let mut result = self.modern_result(json!({
                    "supportedVersions": MODERN_VERSIONS.iter().chain(VERSIONS).collect::<Vec<_>>(),
                    "capabilities": {
                        "tools": {"listChanged": true},
                        "prompts": {"listChanged": true},
                        "resources": {"listChanged": true, "subscribe": true},
                        "completions": {},
                    },
                    "instructions": self.instructions(),
                }));
                cacheable(&mut result);
                respond(cx, reply, &id, result);
            }
            "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" => {
                let listing = match method {
                    "tools/list" => json!({"tools": self.catalog.listing()}),
                    "prompts/list" => json!({"prompts": self.catalog.prompt_listing()}),
                    "resources/list" => json!({"resources": self.catalog.resource_listing()}),
                    _ => json!({"resourceTemplates": self.catalog.template_listing()}),
                };
                let mut result = self.modern_result(listing);
                cacheable(&mut result);
                respond(cx, reply, &id, result);
            }
            "prompts/get" | "resources/read" | "completion/complete" => {
                // Forwarded as in the session era, under the bound of the calls in flight in
                // all; the answer is marked as this era's.
                let tag = self.next_tag;
                let call = Call {
                    session: Rc::clone(&self.unsessioned),
                    sse: request.accepts_event_stream(),
                    log_level: None,
                };
                if method == "prompts/get" {
                    self.get_prompt(cx, reply, id, params, call);
                } else if method == "completion/complete" {
                    self.complete(cx, reply, id, params, call.session);
                } else {
                    self.read_resource(cx, reply, id, params, call);
                }
                if let Some(p) = self.pending.get_mut(&tag) {
                    p.modern = true;
                }
            }
            "subscriptions/listen" => self.listen(cx, request, reply, id, params),
            _ => {
                let m = format!("method {:?} is not offered here", shown(method));
                refuse_with(cx, reply, &id, (404, code::METHOD_NOT_FOUND, m, None));
            }
        }
    }

    /// `subscriptions/listen`: an SSE stream that acknowledges the filter it honours (list
    /// changes of tools, prompts and resources; updates of the resources an active server
    /// offers) and then carries them until the client closes it.
    fn listen(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        request: &http::Request,
        reply: ReplyTo,
        id: Value,
        params: &Value,
    ) {
        if !request.accepts_event_stream() {
            let m =
                "subscriptions/listen answers with an event stream: send Accept: text/event-stream";
            return refuse_with(cx, reply, &id, (406, code::INVALID_REQUEST, m.into(), None));
        }
        if self.listeners.len() >= self.settings.max_sessions as usize {
            let m = format!(
                "{} listen streams are open (gateway.max_sessions): close one first",
                self.listeners.len()
            );
            return refuse_with(cx, reply, &id, (503, code::SERVER_ERROR, m, None));
        }
        let ReplyTo::Http { conn, .. } = reply else {
            return;
        };
        let mut agreed = Map::new();
        let mut wants = Vec::new();
        for (field, notification) in LIST_FILTERS {
            if params["notifications"][field] == true {
                agreed.insert(field.to_string(), Value::Bool(true));
                wants.push(notification);
            }
        }
        // Resource subscriptions: the URIs an active server offers are honoured (at most
        // the bound of a session's), each held upstream once as `resources/subscribe` is.
        let holder = holder_of(conn);
        let mut resources: Vec<(String, String)> = Vec::new();
        let asked = params["notifications"]["resourceSubscriptions"].as_array();
        for uri in asked.into_iter().flatten().filter_map(Value::as_str) {
            if resources.len() >= MAX_SUBSCRIPTIONS_PER_SESSION || uri.len() > MAX_URI_BYTES {
                continue;
            }
            let Some(server) = self.catalog.route(uri) else {
                continue;
            };
            let key = (server.to_string(), uri.to_string());
            let shared = self.subscribed.contains_key(&key);
            if resources.contains(&key) || (!shared && self.subscribed.len() >= MAX_SUBSCRIPTIONS) {
                continue;
            }
            self.subscribed
                .entry(key.clone())
                .or_default()
                .insert(holder.clone());
            if !shared {
                let (id, uri) = key.clone();
                let request = McpRequest::Subscribe {
                    id,
                    uri,
                    subscribe: true,
                };
                self.ask_quietly(cx, Request::Mcp(request));
            }
            resources.push(key);
        }
        if !resources.is_empty() {
            let uris: Vec<&str> = resources.iter().map(|(_, u)| u.as_str()).collect();
            agreed.insert("resourceSubscriptions".into(), json!(uris));
        }
        cx.emit(Output::Stream { reply });
        let ack = json!({
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": {"_meta": {META_SUBSCRIPTION: id}, "notifications": agreed},
        });
        cx.emit(Output::Push {
            conn,
            bytes: sse_message(&ack),
        });
        // A stream that asked for nothing we send stays open (the client closes it) but is
        // not kept: nothing will be pushed to it.
        if !wants.is_empty() || !resources.is_empty() {
            self.listeners.push(Listener {
                conn,
                id,
                wants,
                resources,
            });
            self.keep_alive(cx, std::time::Instant::now());
        }
    }

    /// Tells every listen stream which of the lists it follows changed (`changed`: the
    /// notification methods).
    pub(super) fn notify_listeners(&self, cx: &mut RoomCx<'_, Self>, changed: &[&str]) {
        for l in &self.listeners {
            let mut bytes = Vec::new();
            for method in changed.iter().filter(|m| l.wants.contains(m)) {
                let message = json!({
                    "jsonrpc": "2.0",
                    "method": method,
                    "params": {"_meta": {META_SUBSCRIPTION: l.id}},
                });
                bytes.extend(sse_message(&message));
            }
            if !bytes.is_empty() {
                cx.emit(Output::Push {
                    conn: l.conn,
                    bytes,
                });
            }
        }
    }

    /// A result of this era: `resultType` and our identity in `_meta`.
    pub(super) fn modern_result(&self, mut result: Value) -> Value {
        if let Some(map) = result.as_object_mut() {
            map.entry("resultType")
                .or_insert_with(|| Value::String("complete".into()));
            let meta = map
                .entry("_meta")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert(META_SERVER_INFO.into(), server_info());
            }
        }
        result
    }
}

/// A result object's bytes as a 2026-07-28 answer's `result` (what [`Gateway::modern_result`]
/// makes of it, for a result without `_meta`): the server's members as they came, then
/// `resultType` (unless it has one) and `_meta` with our `serverInfo`. `result` must be one
/// valid JSON object without `_meta`.
pub(super) fn write_modern_result(out: &mut Vec<u8>, result: &[u8], has_result_type: bool) {
    static TAIL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let tail = TAIL.get_or_init(|| {
        let mut tail = format!("\"_meta\":{{\"{META_SERVER_INFO}\":").into_bytes();
        // Writes into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut tail, &server_info());
        tail.extend_from_slice(b"}}");
        tail
    });
    // Everything before the closing brace (an object's text ends with it).
    let body = result.strip_suffix(b"}").unwrap_or(result);
    out.extend_from_slice(body);
    // `{` and blanks only: the object was empty.
    if body.iter().skip(1).any(|b| !b.is_ascii_whitespace()) {
        out.push(b',');
    }
    if !has_result_type {
        out.extend_from_slice(b"\"resultType\":\"complete\",");
    }
    out.extend_from_slice(tail);
}

/// Our identity, as `serverInfo` says it.
pub(super) fn server_info() -> Value {
    json!({
        "name": "vsm-daemon",
        "title": "vsm-daemon MCP gateway",
        "version": env!("CARGO_PKG_VERSION"),
    })
}

impl Gateway {
    /// What the endpoint offers, for a model.
    fn instructions(&self) -> String {
        format!(
            "Tools of the MCP servers this daemon supervises, named SERVER{sep}TOOL, and the daemon's own under vsm{sep}.",
            sep = self.settings.tool_separator
        )
    }
}

/// `ttlMs` and `cacheScope` of a cacheable answer. The list is the same for every holder of
/// the token, but a shared cache has no business keeping it: `private`.
fn cacheable(result: &mut Value) {
    result["ttlMs"] = json!(LIST_TTL_MS);
    result["cacheScope"] = json!("private");
}

pub(super) fn refuse_with(
    cx: &mut RoomCx<'_, Gateway>,
    reply: ReplyTo,
    id: &Value,
    refusal: Refusal,
) {
    let (status, code, message, data) = refusal;
    let mut error = json!({"code": code, "message": message});
    if let Some(data) = data {
        error["data"] = data;
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "error": error});
    let response = http::Response::json(status, body.to_string().into_bytes());
    cx.emit(Output::Http { reply, response });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> http::Request {
        http::Request {
            method: "POST".into(),
            path: "/mcp".into(),
            query: String::new(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase().into(), v.to_string()))
                .collect(),
            body: Vec::new(),
            keep_alive: true,
        }
    }

    fn params(version: &str, name: Option<&str>) -> Value {
        let mut p = json!({"_meta": {META_VERSION: version, META_CAPABILITIES: {}}});
        if let Some(n) = name {
            p["name"] = json!(n);
        }
        p
    }

    fn code_of(r: Result<&str, Refusal>) -> Option<(u16, i64)> {
        r.err().map(|(s, c, _, _)| (s, c))
    }

    #[test]
    fn header_values_decode_plain_or_base64() {
        assert_eq!(decode_header_value("us-west1").as_deref(), Some("us-west1"));
        assert_eq!(
            decode_header_value("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(
            decode_header_value("=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=").as_deref(),
            Some("=?base64?literal?=")
        );
        assert_eq!(decode_header_value("=?base64?!!?="), None);
        assert_eq!(decode_header_value("a\u{1}b"), None);
    }

    #[test]
    fn the_server_validation_rules_each_give_their_code() {
        let v = MODERN_VERSIONS[0];
        let good = [
            ("MCP-Protocol-Version", v),
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", "fx__echo"),
        ];
        let p = params(v, Some("fx__echo"));
        assert_eq!(check(&request(&good), "tools/call", &p), Ok(v));
        // The name base64-encoded is the same name.
        let b64 = [good[0], good[1], ("Mcp-Name", "=?base64?ZnhfX2VjaG8=?=")];
        assert_eq!(check(&request(&b64), "tools/call", &p), Ok(v));
        // _meta incomplete: invalid params.
        let no_caps = json!({"_meta": {META_VERSION: v}, "name": "fx__echo"});
        assert_eq!(
            code_of(check(&request(&good), "tools/call", &no_caps)),
            Some((400, -32602))
        );
        // Each header missing or different: HeaderMismatch.
        for (i, other) in [
            ("MCP-Protocol-Version", "2025-11-25"),
            ("Mcp-Method", "tools/list"),
            ("Mcp-Name", "fx__sum"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut wrong = good.to_vec();
            wrong[i] = other;
            assert_eq!(
                code_of(check(&request(&wrong), "tools/call", &p)),
                Some((400, -32020)),
                "{other:?}"
            );
            let mut missing = good.to_vec();
            missing.remove(i);
            assert_eq!(
                code_of(check(&request(&missing), "tools/call", &p)),
                Some((400, -32020)),
                "without {}",
                other.0
            );
        }
        // Mcp-Name is not expected for a method without a name.
        let list = [("MCP-Protocol-Version", v), ("Mcp-Method", "tools/list")];
        assert_eq!(
            check(&request(&list), "tools/list", &params(v, None)),
            Ok(v)
        );
        // A version we do not speak, consistently in header and body.
        let future = [
            ("MCP-Protocol-Version", "2099-01-01"),
            ("Mcp-Method", "tools/list"),
        ];
        let p = params("2099-01-01", None);
        let r = check(&request(&future), "tools/list", &p);
        let (status, code, _, data) = r.expect_err("unsupported");
        assert_eq!((status, code), (400, -32022));
        let data = data.expect("data");
        assert_eq!(data["requested"], "2099-01-01");
        assert_eq!(data["supported"][0], v);
    }

    #[test]
    fn the_era_of_a_post_is_told_by_meta_or_by_a_sessionless_version_header() {
        let meta = json!({"method": "tools/list", "params": params("2026-07-28", None)});
        let meta = meta.as_object().expect("object");
        let bare = json!({"method": "tools/list"});
        let bare = bare.as_object().expect("object");
        assert!(is_modern(&request(&[]), meta));
        assert!(!is_modern(&request(&[]), bare));
        assert!(!is_modern(
            &request(&[("MCP-Protocol-Version", "2025-11-25")]),
            bare
        ));
        assert!(is_modern(
            &request(&[("MCP-Protocol-Version", "2026-07-28")]),
            bare
        ));
        let with_session = [
            ("MCP-Protocol-Version", "2099-01-01"),
            ("Mcp-Session-Id", "abc"),
        ];
        assert!(!is_modern(&request(&with_session), bare));
    }

    #[test]
    fn a_result_as_bytes_gets_result_type_and_our_server_info_after_its_members() {
        for (result, has_type) in [
            (r#"{}"#, false),
            ("{ \n }", false),
            (
                r#"{"content":[{"type":"text","text":"\u00e9"}],"n":1.5e300}"#,
                false,
            ),
            (
                r#"{ "resultType" : "complete", "x": 12345678901234567890123 }"#,
                true,
            ),
        ] {
            let mut out = Vec::new();
            write_modern_result(&mut out, result.as_bytes(), has_type);
            let text = String::from_utf8(out).expect("utf-8");
            // The server's members come first, as they were written.
            let body = result.trim_end().strip_suffix('}').expect("an object");
            assert!(text.starts_with(body), "{text}");
            let v: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(v["resultType"], "complete", "{text}");
            assert_eq!(v["_meta"][META_SERVER_INFO], server_info(), "{text}");
            let members = v.as_object().map_or(0, Map::len);
            let theirs = serde_json::from_str::<Map<String, Value>>(result).map_or(0, |m| m.len());
            assert_eq!(members, theirs + 1 + usize::from(!has_type), "{text}");
        }
    }
}
