//! Issue #13, proof under arbitrary input: property tests (proptest) of the parsers that take
//! bytes from outside the process, through the library's public API. Arbitrary input never
//! panics and never grows a buffer past its limit; well-formed input round-trips.
//!
//! Time-boxed: 64 cases per property by default (a few seconds in all); set `PROPTEST_CASES`
//! for a longer run (e.g. `PROPTEST_CASES=20000 cargo test --test tests properties::`).

use proptest::prelude::*;
use serde_json::{json, Value};
use vsm_daemon::api::{McpRequest, Request};
use vsm_daemon::config::Config;
use vsm_daemon::mcp::jsonrpc::{self, Line, LineSplitter, Message};
use vsm_daemon::net::http::{self, Conn, Limits, Parsed, MAX_BUFFERED_OUTPUT};
use vsm_daemon::net::{routes, ws};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        // Shrinking a failure may take long; a failing case is reported either way.
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

const LIMITS: Limits = Limits {
    max_head_bytes: 1024,
    max_body_bytes: 2048,
    max_pipeline: 4,
};

/// Bytes that look like HTTP often enough to reach deep into the parser.
fn http_ish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"GET / HTTP/1.1\r\n".to_vec()),
        Just(b"POST /api/v1/config/reload HTTP/1.1\r\n".to_vec()),
        Just(b"HEAD /api/v1/health HTTP/1.0\r\n".to_vec()),
        Just(b"Host: localhost\r\n".to_vec()),
        Just(b"Content-Length: 5\r\n".to_vec()),
        Just(b"Content-Length: 99999999999999999999\r\n".to_vec()),
        Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        Just(b"Expect: 100-continue\r\n".to_vec()),
        Just(b"Connection: close\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"hello".to_vec()),
        prop::collection::vec(any::<u8>(), 0..64),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

/// Feeds `input` in chunks of the given sizes as the transport does (only while the
/// connection wants to read), answers every request, drains the output, and checks the
/// bounds after each step. Returns the parsed items.
fn drive(input: &[u8], chunks: &[usize]) -> Vec<Parsed> {
    let mut conn = Conn::new();
    let mut parsed = Vec::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().cycle();
    let max_chunk = chunks.iter().copied().max().unwrap_or(1).max(1);
    let mut rounds = 0;
    while fed < input.len() && rounds < 10_000 {
        rounds += 1;
        if conn.wants_read(&LIMITS) {
            let n = (*sizes.next().unwrap_or(&1)).clamp(1, input.len() - fed);
            conn.feed(&input[fed..fed + n]);
            fed += n;
        } else if conn.input_closed() {
            break;
        }
        while let Some(p) = conn.next_request(&LIMITS) {
            match &p {
                Parsed::Request(seq, r) => {
                    assert!(r.body.len() <= LIMITS.max_body_bytes);
                    assert!(r.path.starts_with('/'), "{r:?}");
                    let body = vec![b'x'; 100];
                    conn.respond(*seq, &http::Response::json(200, body), false);
                }
                Parsed::Error(seq, e) => {
                    assert!(
                        [400, 411, 413, 431, 501].contains(&e.status),
                        "unexpected status {e:?}"
                    );
                    conn.respond(*seq, &http::Response::json(e.status, Vec::new()), true);
                }
            }
            parsed.push(p);
            assert!(conn.in_flight() <= LIMITS.max_pipeline as u64);
        }
        // Bounded answers: at most the buffer limit plus the last answer.
        assert!(conn.pending_output().len() <= MAX_BUFFERED_OUTPUT + 4096);
        let n = conn.pending_output().len();
        conn.consume_output(n);
    }
    // Unparsed input never exceeds what one request may be, plus one read.
    let rest = conn.take_input();
    assert!(
        rest.len() <= LIMITS.max_head_bytes + LIMITS.max_body_bytes + max_chunk,
        "{} bytes held",
        rest.len()
    );
    parsed
}

/// A request the parser must accept, and its wire form.
#[derive(Debug, Clone)]
struct Wire {
    method: &'static str,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn wire() -> impl Strategy<Value = Wire> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]),
        prop::collection::vec("[a-zA-Z0-9._~-]{1,12}", 0..5),
        "[a-z0-9=&%]{0,30}",
        prop::collection::btree_map("x-[a-z]{1,10}", "[ -~]{0,40}", 0..6),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(method, segs, query, headers, body)| Wire {
            method,
            path: format!("/{}", segs.join("/")),
            query,
            // Header values are sent and parsed without surrounding whitespace.
            headers: headers
                .into_iter()
                .map(|(k, v)| (k, v.trim().to_string()))
                .collect(),
            body,
        })
}

impl Wire {
    fn bytes(&self) -> Vec<u8> {
        let target = if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        };
        let mut out = format!("{} {target} HTTP/1.1\r\nHost: localhost\r\n", self.method);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        // Any finite f64 must come back exact (serde_json's float_roundtrip feature; without
        // it -932085.8154296875 read back as ...876).
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    /// HTTP head parser and connection machine: arbitrary bytes in arbitrary chunks.
    #[test]
    fn http_connection_survives_any_bytes(
        input in prop_oneof![http_ish(), prop::collection::vec(any::<u8>(), 0..4096)],
        chunks in prop::collection::vec(1usize..700, 1..8),
    ) {
        drive(&input, &chunks);
    }

    /// Well-formed pipelined requests come out as they went in, however the bytes are split.
    #[test]
    fn http_requests_round_trip(
        reqs in prop::collection::vec(wire(), 1..4),
        chunks in prop::collection::vec(1usize..200, 1..6),
    ) {
        let bytes: Vec<u8> = reqs.iter().flat_map(Wire::bytes).collect();
        let parsed = drive(&bytes, &chunks);
        prop_assert_eq!(parsed.len(), reqs.len(), "{:?}", parsed);
        for (p, w) in parsed.iter().zip(&reqs) {
            let Parsed::Request(_, r) = p else {
                return Err(TestCaseError::fail(format!("{p:?} for {w:?}")));
            };
            prop_assert_eq!(r.method.as_str(), w.method);
            prop_assert_eq!(&r.path, &w.path);
            prop_assert_eq!(&r.query, &w.query);
            prop_assert_eq!(&r.body, &w.body);
            for (k, v) in &w.headers {
                prop_assert_eq!(r.header(k), Some(v.as_str()), "{}", k);
            }
        }
    }

    /// The JSON-RPC line framer: never holds more than its limit; short lines round-trip.
    #[test]
    fn line_splitter_is_bounded_and_exact(
        lines in prop::collection::vec(prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n' && *b != b'\r'), 0..200), 0..20),
        noise in prop::collection::vec(any::<u8>(), 0..2000),
        chunks in prop::collection::vec(1usize..300, 1..6),
        max_line in 1usize..256,
    ) {
        // Arbitrary bytes: bounded.
        let mut s = LineSplitter::new(max_line);
        let mut out = Vec::new();
        for (i, piece) in noise.chunks(chunks[0]).enumerate() {
            s.push(piece, &mut out);
            prop_assert!(s.buffered() <= max_line, "round {}: {} > {}", i, s.buffered(), max_line);
        }
        for l in &out {
            if let Line::Complete(l) = l { prop_assert!(l.len() <= max_line); }
        }
        // Lines: each either comes back whole or is reported too long, in order.
        let mut stream = Vec::new();
        for l in &lines { stream.extend_from_slice(l); stream.push(b'\n'); }
        let mut s = LineSplitter::new(max_line);
        let mut out = Vec::new();
        let mut at = 0;
        let mut sizes = chunks.iter().cycle();
        while at < stream.len() {
            let n = (*sizes.next().unwrap_or(&1)).min(stream.len() - at);
            s.push(&stream[at..at + n], &mut out);
            prop_assert!(s.buffered() <= max_line);
            at += n;
        }
        prop_assert_eq!(s.buffered(), 0);
        let mut got = out.into_iter();
        for l in &lines {
            let item = got.next();
            if l.len() <= max_line {
                prop_assert_eq!(item, Some(Line::Complete(l.clone())));
            } else {
                prop_assert!(matches!(item, Some(Line::TooLong { .. })), "{:?}", item);
            }
        }
    }

    /// JSON-RPC messages: arbitrary lines never panic; ours parse back as what they are.
    #[test]
    fn jsonrpc_parse_round_trips(
        junk in prop::collection::vec(any::<u8>(), 0..512),
        id in any::<u32>(),
        method in "[a-z/_]{1,30}",
        params in json_value(),
    ) {
        let _ = jsonrpc::parse(&junk);
        let params = if params.is_object() { params } else { json!({"v": params}) };
        let line = jsonrpc::request(u64::from(id), &method, params.clone());
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let msgs = jsonrpc::parse(line).map_err(TestCaseError::fail)?;
        prop_assert_eq!(msgs, vec![Message::Request { id: json!(id), method: method.clone(), params: params.clone() }]);
        let line = jsonrpc::notification(&method, params.clone());
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let msgs = jsonrpc::parse(line).map_err(TestCaseError::fail)?;
        prop_assert_eq!(msgs, vec![Message::Notification { method, params }]);
    }

    /// The WebSocket command decoder: any text or JSON never panics; a named command with a
    /// server id reaches its path with the id encoded and decoded back.
    #[test]
    fn ws_commands_decode_or_refuse(
        text in ".{0,300}",
        value in json_value(),
        server in "[ -~]{1,40}",
    ) {
        let _ = ws::parse_command(&text);
        let _ = ws::parse_command(&value.to_string());
        let _ = ws::parse_command(&json!({"command": "request", "parameters": value}).to_string());
        let msg = json!({"id": 1, "command": "mcp_get_server", "parameters": {"id": server}});
        match ws::parse_command(&msg.to_string()) {
            Ok(ws::Command::Api(_, req)) => {
                let routed = routes::route(&req).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert_eq!(routed, Request::Mcp(McpRequest::Show { id: server.clone() }));
            }
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }

    /// The config loader: any text is a config or an error, never a panic; a known key set to
    /// any integer is accepted or refused naming the key.
    #[test]
    fn config_loader_refuses_cleanly(
        text in ".{0,400}",
        tomlish in prop::collection::vec(prop_oneof![
            Just("[daemon]\n".to_string()), Just("[http]\n".to_string()),
            Just("[[servers]]\n".to_string()), Just("[security]\n".to_string()),
            "[a-z_]{1,20} = [0-9\"a-z\\[\\]{}., ]{0,20}\n",
        ], 0..12),
        n in any::<i64>(),
    ) {
        let _ = Config::from_toml_str(&text, None);
        let _ = Config::from_toml_str(&tomlish.concat(), None);
        let t = format!("[http]\nmax_connections = {n}\n");
        if let Err(e) = Config::from_toml_str(&t, None) {
            // Out of range names the key; out of the type's range points at its line.
            let e = e.to_string();
            prop_assert!(e.contains("max_connections") || e.contains(":2:"), "{}", e);
        }
    }

    /// The API routes: any method, path, query and body route or answer a 4xx error, never a
    /// panic; a server id in a path comes back decoded.
    #[test]
    fn routes_answer_anything(
        method in prop_oneof![Just("GET".to_string()), Just("POST".to_string()), Just("DELETE".to_string()), "[A-Z]{1,8}"],
        segs in prop::collection::vec(prop_oneof![
            Just("api".to_string()), Just("v1".to_string()), Just("mcp".to_string()),
            Just("servers".to_string()), Just("tools".to_string()), Just("call".to_string()),
            Just("config".to_string()), Just("events".to_string()), "[ -~]{0,12}",
        ], 0..7),
        query in "[ -~]{0,60}",
        body in prop_oneof![json_value().prop_map(|v| v.to_string().into_bytes()), prop::collection::vec(any::<u8>(), 0..200)],
        id in "[a-zA-Z0-9_.~-]{1,30}",
    ) {
        let req = |method: &str, path: String, query: String, body: Vec<u8>| http::Request {
            method: method.to_string(),
            path,
            query,
            headers: [("content-type".into(), "application/json".into())].into_iter().collect(),
            body,
            keep_alive: true,
        };
        let path = format!("/{}", segs.join("/"));
        if let Err(e) = routes::route(&req(&method, path, query.clone(), body.clone())) {
            let status = e.error.code.http_status();
            prop_assert!((400..500).contains(&status), "{:?}", e);
        }
        let r = routes::route(&req("GET", format!("/api/v1/mcp/servers/{id}"), String::new(), Vec::new()));
        prop_assert_eq!(r.map_err(|e| format!("{e:?}")), Ok(Request::Mcp(McpRequest::Show { id })));
    }
}
