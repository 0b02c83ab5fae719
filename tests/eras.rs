//! Both protocol eras through the real binary. On stdio: the `server/discover` probe, the
//! fallback to `initialize` for legacy servers (also one that never answers an unknown
//! method), a 2026-07-28 server (the fixture's `--modern` mode, and mcp-server-time, which
//! speaks it) served statelessly with `_meta` on every request, health without `ping`, list
//! changes over `subscriptions/listen`, `input_required` answered as a clear error to a REST
//! caller. On `/mcp`: the 2026-07-28 rules (stateless requests, headers against the body, each
//! error code, `server/discover`, `subscriptions/listen`, `input_required` passed through and
//! the retry's input responses back) with raw HTTP and with the official Python SDK
//! client in its 2026-07-28 mode, while a 2025-11-25 session keeps working beside them.

use crate::gateway::SdkClient;
use crate::util::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

const MODERN: &str = "2026-07-28";
const PV: &str = "io.modelcontextprotocol/protocolVersion";
const CAPS: &str = "io.modelcontextprotocol/clientCapabilities";

fn fixture() -> String {
    format!(
        "{}/tests/fixtures/mcp_fixture.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-peers")
}

/// Fast health rounds, quick stops.
fn setup() -> Setup {
    Setup {
        config: Some(
            "[monitoring]\nhealth_check_interval_ms = 200\n\n[mcp_servers]\nstop_grace_ms = 100\nterm_timeout_ms = 300\n"
                .into(),
        ),
        ..Setup::default()
    }
}

fn register(d: &Daemon, id: &str, command: &[&str]) {
    let mut args = vec!["--json", "mcp", "register", id, "--"];
    args.extend_from_slice(command);
    let out = d.cli(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "register {id}: {}",
        stderr(&out)
    );
}

fn register_fixture(d: &Daemon, id: &str, flags: &[&str]) {
    let script = fixture();
    let mut command = vec!["python3", script.as_str()];
    command.extend_from_slice(flags);
    register(d, id, &command);
}

fn details(d: &Daemon, id: &str) -> Value {
    let (code, v) = d.http("GET", &format!("/api/v1/mcp/servers/{id}"), None);
    assert_eq!(code, 200, "show {id}: {v}");
    v["data"].clone()
}

fn wait_active(d: &Daemon, id: &str) -> Value {
    wait_until(
        &format!("{id} active"),
        || details(d, id),
        |v| v["status"] == "active",
        |v| format!("{v:#}\n{}", d.stderr()),
    )
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn call(d: &Daemon, id: &str, tool: &str, arguments: Value) -> (i32, Value) {
    d.cli_json(&["mcp", "call", id, tool, &arguments.to_string()])
}

fn tool_names(d: &Daemon, id: &str) -> Vec<String> {
    details(d, id)["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_modern_server_is_probed_and_served_statelessly_without_ping() {
    let d = Daemon::start_with(setup());
    let dir = TempDir::new("modern-rec");
    let rec = dir.path().join("rec");
    let rec_s = rec.display().to_string();
    register_fixture(&d, "modern", &["--modern", "--record", &rec_s]);
    let v = wait_active(&d, "modern");
    assert_eq!(v["era"], "modern", "{v:#}");
    assert_eq!(v["protocol_version"], MODERN);
    assert_eq!(v["server_info"]["name"], "vsm-fixture");
    assert_eq!(v["instructions"], "fixture for tests (2026-07-28)");
    // `mcp list` and `mcp show` say it too.
    let (code, list) = d.cli_json(&["mcp", "list"]);
    assert_eq!(
        (code, &list["servers"][0]["era"]),
        (0, &json!("modern")),
        "{list:#}"
    );
    let out = d.cli(&["mcp", "show", "modern"]);
    assert!(
        stdout(&out).contains("protocol   2026-07-28 (modern era)"),
        "{}",
        stdout(&out)
    );

    // Calls through REST work and carry _meta.
    let (code, r) = call(&d, "modern", "echo", json!({"message": "stateless"}));
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["result"]["content"][0]["text"], "stateless");
    assert_eq!(r["result"]["resultType"], "complete");

    // input_required: a clear error naming what the server asked, at once.
    let (code, r) = call(&d, "modern", "ask", json!({}));
    assert_eq!(code, 1, "{r:#}");
    let e = &r["errors"][0];
    assert_eq!(e["code"], "tool_error", "{r:#}");
    let message = e["message"].as_str().unwrap_or("");
    assert!(
        message.contains("input_required") && message.contains("What is your name?"),
        "{r:#}"
    );

    // A list change arrives over the listen stream the daemon opened.
    let (code, _) = call(&d, "modern", "change_tools", json!({}));
    assert_eq!(code, 0);
    wait_until(
        "'extra' listed after list_changed on the listen stream",
        || tool_names(&d, "modern"),
        |names| names.iter().any(|n| n == "extra"),
        |names| format!("{names:?}"),
    );

    // Health rounds are server/discover requests: several go by, the server stays active.
    wait_until(
        "three health rounds (server/discover after the probe)",
        || records(&rec),
        |r| {
            r.iter()
                .filter(|e| e["event"] == "request" && e["method"] == "server/discover")
                .count()
                >= 4
        },
        |r| format!("{r:#?}"),
    );
    assert_eq!(details(&d, "modern")["status"], "active");
    let recs = records(&rec);
    let bad: Vec<&Value> = recs
        .iter()
        .filter(|e| {
            matches!(e["event"].as_str(), Some("no_meta" | "initialize" | "ping"))
                || (e["event"] == "request" && e["version"] != MODERN)
        })
        .collect();
    assert!(
        bad.is_empty(),
        "every request carries _meta 2026-07-28; no initialize, no ping: {bad:#?}"
    );
    let first = recs
        .iter()
        .find(|e| e["event"] == "request")
        .expect("a request");
    assert_eq!(first["method"], "server/discover", "the probe comes first");
    assert_eq!(first["client"]["name"], "vsm-daemon");
    assert!(
        recs.iter()
            .any(|e| e["event"] == "listen" && e["notifications"]["toolsListChanged"] == true),
        "{recs:#?}"
    );
}

#[test]
fn legacy_servers_fall_back_to_initialize_even_when_the_probe_is_ignored() {
    let d = Daemon::start_with(setup());
    let dir = TempDir::new("legacy-rec");
    let (loud, silent) = (dir.path().join("loud"), dir.path().join("silent"));
    let (loud_s, silent_s) = (loud.display().to_string(), silent.display().to_string());
    register_fixture(&d, "loud", &["--record", &loud_s]);
    register_fixture(&d, "silent", &["--silent-unknown", "--record", &silent_s]);
    for (id, rec) in [("loud", &loud), ("silent", &silent)] {
        let v = wait_active(&d, id);
        assert_eq!(v["era"], "legacy", "{v:#}");
        assert_eq!(v["protocol_version"], "2025-11-25", "{v:#}");
        let (code, r) = call(&d, id, "echo", json!({"message": id}));
        assert_eq!((code, &r["result"]["content"][0]["text"]), (0, &json!(id)));
        let recs = records(rec);
        assert!(
            recs.iter().any(|e| e["event"] == "initialize"),
            "{id}: {recs:#?}"
        );
    }
    // The silent one was probed and did not answer; the handshake followed anyway.
    assert!(
        records(&silent)
            .iter()
            .any(|e| e["event"] == "ignored" && e["method"] == "server/discover"),
        "{:#?}",
        records(&silent)
    );
    // Legacy health is still ping.
    wait_until(
        "a ping answered by the legacy server",
        || details(&d, "loud"),
        |v| v["ping"]["samples"].as_u64().is_some_and(|n| n >= 1),
        |v| format!("{v:#}"),
    );
}

/// One POST to `/mcp` on its own connection: status, head, body.
fn post(d: &Daemon, headers: &[(&str, &str)], body: &str) -> (u16, String, Value) {
    let addr = d.http.expect("TCP listener");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let (status, head, body) = split_response(&out);
    (
        status,
        head,
        serde_json::from_str(&body).unwrap_or(Value::Null),
    )
}

/// A 2026-07-28 request body: `_meta` with `version` (and the client capabilities unless
/// `caps` is false) merged into `params`.
fn modern_body(id: u64, method: &str, mut params: Value, version: &str, caps: bool) -> String {
    let mut meta =
        json!({PV: version, "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"}});
    if caps {
        meta[CAPS] = json!({});
    }
    params["_meta"] = meta;
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// The headers a 2026-07-28 client sends for `method` (and `name`).
pub(crate) fn modern_headers<'a>(
    bearer: &'a str,
    version: &'a str,
    method: &'a str,
    name: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
        ("Authorization", bearer),
        ("MCP-Protocol-Version", version),
        ("Mcp-Method", method),
    ];
    if let Some(n) = name {
        h.push(("Mcp-Name", n));
    }
    h
}

/// A refusal case: what, the request's headers and body, the status and code it gets.
type Refusal<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, u16, i64);

fn error_of(v: &Value) -> (i64, String) {
    (
        v["error"]["code"].as_i64().unwrap_or(0),
        v["error"]["message"].as_str().unwrap_or("").to_string(),
    )
}

/// Reads SSE `data:` lines from `reader` until one holds a message that `want` accepts.
fn next_event(
    reader: &mut BufReader<TcpStream>,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
        assert!(n > 0, "the stream ended before {what}");
        if let Some(data) = line.strip_prefix("data:") {
            let v: Value = serde_json::from_str(data.trim()).expect("SSE data is JSON");
            if want(&v) {
                return v;
            }
        }
    }
}

/// Opens a `subscriptions/listen` stream (request `id`, `filters` as its `notifications`) with
/// the token `bearer`; the connection and a reader of its events.
fn listen(d: &Daemon, bearer: &str, id: u64, filters: Value) -> (TcpStream, BufReader<TcpStream>) {
    let addr = d.http.expect("TCP listener");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let body = modern_body(
        id,
        "subscriptions/listen",
        json!({"notifications": filters}),
        MODERN,
        true,
    );
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in modern_headers(bearer, MODERN, "subscriptions/listen", None) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).expect("write");
    let reader = BufReader::new(s.try_clone().expect("clone"));
    (s, reader)
}

#[test]
fn mcp_speaks_2026_07_28_statelessly_and_refuses_with_each_code() {
    let mut fast = setup();
    if let Some(c) = fast.config.as_mut() {
        c.push_str("\n[gateway]\nkeepalive_ms = 1000\n");
    }
    let d = Daemon::start_with(fast);
    register_fixture(&d, "fx", &["--modern"]);
    wait_active(&d, "fx");
    let bearer = d.bearer();
    let b = bearer.as_str();

    // server/discover: no session, our versions, cache hints, our identity.
    let body = modern_body(1, "server/discover", json!({}), MODERN, true);
    let (status, head, v) = post(
        &d,
        &modern_headers(b, MODERN, "server/discover", None),
        &body,
    );
    assert_eq!(status, 200, "{head}{v}");
    assert!(
        !head.to_ascii_lowercase().contains("mcp-session-id"),
        "{head}"
    );
    let r = &v["result"];
    assert_eq!(r["resultType"], "complete", "{v}");
    assert_eq!(r["supportedVersions"][0], MODERN, "{v}");
    assert!(r["supportedVersions"]
        .as_array()
        .is_some_and(|a| a.contains(&json!("2025-11-25"))));
    assert_eq!(r["capabilities"]["tools"]["listChanged"], true);
    assert_eq!(
        r["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "vsm-daemon"
    );
    assert_eq!(
        (r["ttlMs"].as_u64(), r["cacheScope"].as_str()),
        (Some(5000), Some("private"))
    );

    // tools/list with ttlMs.
    let body = modern_body(2, "tools/list", json!({}), MODERN, true);
    let (status, _, v) = post(&d, &modern_headers(b, MODERN, "tools/list", None), &body);
    assert_eq!(status, 200, "{v}");
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"fx__echo") && names.contains(&"fx__ask"),
        "{names:?}"
    );
    assert_eq!(v["result"]["ttlMs"], 5000);
    assert_eq!(v["result"]["resultType"], "complete");

    // tools/call, with Mcp-Name plain and base64-encoded.
    let call = |id: u64, name: &str, args: Value| {
        modern_body(
            id,
            "tools/call",
            json!({"name": name, "arguments": args}),
            MODERN,
            true,
        )
    };
    for mcp_name in ["fx__echo", "=?base64?ZnhfX2VjaG8=?="] {
        let body = call(3, "fx__echo", json!({"message": "no session"}));
        let (status, _, v) = post(
            &d,
            &modern_headers(b, MODERN, "tools/call", Some(mcp_name)),
            &body,
        );
        assert_eq!(status, 200, "{mcp_name}: {v}");
        assert_eq!(v["result"]["content"][0]["text"], "no session", "{v}");
        assert_eq!(v["result"]["resultType"], "complete", "{v}");
        assert_eq!(v["id"], 3);
    }
    // input_required from the server is this client's to answer: it gets the server's
    // input requests and request state, and its retry with the responses reaches the server.
    let body = call(4, "fx__ask", json!({}));
    let (status, _, v) = post(
        &d,
        &modern_headers(b, MODERN, "tools/call", Some("fx__ask")),
        &body,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["resultType"], "input_required", "{v}");
    let asked = &v["result"]["inputRequests"]["name"];
    assert_eq!(asked["method"], "elicitation/create", "{v}");
    assert_eq!(asked["params"]["message"], "What is your name?", "{v}");
    assert_eq!(v["result"]["requestState"], "ask-1", "{v}");
    let mut retry: Value = serde_json::from_str(&call(5, "fx__ask", json!({}))).expect("JSON");
    retry["params"]["requestState"] = json!("ask-1");
    retry["params"]["inputResponses"] =
        json!({"name": {"action": "accept", "content": {"name": "Ada"}}});
    let (status, _, v) = post(
        &d,
        &modern_headers(b, MODERN, "tools/call", Some("fx__ask")),
        &retry.to_string(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["content"][0]["text"], "hello Ada", "{v}");
    assert_eq!(v["result"]["resultType"], "complete", "{v}");

    // The refusals, each with its status and code.
    let echo = call(5, "fx__echo", json!({"message": "x"}));
    let cases: Vec<Refusal> = vec![
        (
            "header version differs from _meta",
            modern_headers(b, "2025-11-25", "tools/call", Some("fx__echo")),
            echo.clone(),
            400,
            -32020,
        ),
        (
            "Mcp-Method differs from the body",
            modern_headers(b, MODERN, "tools/list", Some("fx__echo")),
            echo.clone(),
            400,
            -32020,
        ),
        (
            "Mcp-Name differs from the body",
            modern_headers(b, MODERN, "tools/call", Some("fx__sum")),
            echo.clone(),
            400,
            -32020,
        ),
        (
            "Mcp-Name missing",
            modern_headers(b, MODERN, "tools/call", None),
            echo.clone(),
            400,
            -32020,
        ),
        (
            "MCP-Protocol-Version missing",
            modern_headers(b, MODERN, "tools/call", Some("fx__echo"))
                .into_iter()
                .filter(|(k, _)| *k != "MCP-Protocol-Version")
                .collect(),
            echo.clone(),
            400,
            -32020,
        ),
        (
            "a version we do not speak",
            modern_headers(b, "2099-01-01", "tools/list", None),
            modern_body(6, "tools/list", json!({}), "2099-01-01", true),
            400,
            -32022,
        ),
        (
            "_meta without client capabilities",
            modern_headers(b, MODERN, "tools/list", None),
            modern_body(7, "tools/list", json!({}), MODERN, false),
            400,
            -32602,
        ),
        (
            "a method not offered",
            modern_headers(b, MODERN, "ping", None),
            modern_body(8, "ping", json!({}), MODERN, true),
            404,
            -32601,
        ),
    ];
    for (what, headers, body, want_status, want_code) in cases {
        let (status, head, v) = post(&d, &headers, &body);
        assert_eq!(
            (status, error_of(&v).0),
            (want_status, want_code),
            "{what}: {head}{v}"
        );
        if want_code == -32022 {
            assert_eq!(v["error"]["data"]["requested"], "2099-01-01", "{v}");
            assert!(
                v["error"]["data"]["supported"]
                    .as_array()
                    .is_some_and(|s| s.contains(&json!(MODERN))),
                "{v}"
            );
        }
    }
    // The access layer still applies: no token, a foreign Origin.
    let body = modern_body(9, "tools/list", json!({}), MODERN, true);
    let mut no_token = modern_headers(b, MODERN, "tools/list", None);
    no_token.retain(|(k, _)| *k != "Authorization");
    assert_eq!(post(&d, &no_token, &body).0, 401);
    let mut evil = modern_headers(b, MODERN, "tools/list", None);
    evil.push(("Origin", "http://evil.example"));
    assert_eq!(post(&d, &evil, &body).0, 403);

    // subscriptions/listen: acknowledged, then list_changed with the subscription id.
    let (s, mut reader) = listen(
        &d,
        b,
        42,
        json!({"toolsListChanged": true, "promptsListChanged": true}),
    );
    let ack = next_event(&mut reader, "the acknowledgement", |m| {
        m["method"] == "notifications/subscriptions/acknowledged"
    });
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 42,
        "{ack}"
    );
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true, "promptsListChanged": true}),
        "what it asked for and is honoured: {ack}"
    );
    // It gets the keep-alive comments of the other streams.
    let mut line = String::new();
    while !line.starts_with(": keep-alive") {
        line.clear();
        let n = reader.read_line(&mut line).expect("a keep-alive comment");
        assert!(n > 0, "the listen stream ended");
    }
    // A new server's tools change the list.
    register_fixture(&d, "more", &[]);
    let changed = next_event(&mut reader, "list_changed", |m| {
        m["method"] == "notifications/tools/list_changed"
    });
    assert_eq!(
        changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 42,
        "{changed}"
    );
    drop(reader);
    drop(s);

    // A 2025-11-25 session works beside it, as before.
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"old","version":"0"}}}"#;
    let legacy = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
        ("Authorization", b),
    ];
    let (status, head, v) = post(&d, &legacy, init);
    assert_eq!(
        (status, &v["result"]["protocolVersion"]),
        (200, &json!("2025-11-25")),
        "{v}"
    );
    let session = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("mcp-session-id")
                .then(|| v.trim().to_string())
        })
        .expect("a session id");
    let mut with_session = legacy.to_vec();
    with_session.push(("Mcp-Session-Id", &session));
    with_session.push(("MCP-Protocol-Version", "2025-11-25"));
    let (status, _, v) = post(
        &d,
        &with_session,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    );
    assert_eq!(status, 200, "{v}");
    assert!(
        v["result"].get("ttlMs").is_none(),
        "no cache hints in the session era: {v}"
    );
    assert!(
        v["result"]["tools"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "{v}"
    );
}

/// The official Python SDK client in its 2026-07-28 mode (`gateway_modern_client.py`): one
/// JSON command per stdin line, one JSON answer per stdout line.
struct ModernClient(SdkClient);

impl ModernClient {
    /// Over Streamable HTTP to the daemon's TCP listener.
    fn http(d: &Daemon) -> ModernClient {
        let url = format!("http://{}/mcp", d.http.expect("TCP listener"));
        ModernClient::spawn(&[&url, &d.token])
    }

    /// Over stdio to `vsm-daemon mcp serve-stdio`, which it spawns.
    fn stdio(d: &Daemon) -> ModernClient {
        let socket = d.socket.display().to_string();
        ModernClient::spawn(&["stdio", bin(), "mcp", "serve-stdio", "--socket", &socket])
    }

    fn spawn(args: &[&str]) -> ModernClient {
        let mut command = std::process::Command::new(peers().join("venv-time/bin/python"));
        command
            .arg(format!(
                "{}/tests/fixtures/gateway_modern_client.py",
                env!("CARGO_MANIFEST_DIR")
            ))
            .args(args);
        ModernClient(SdkClient::spawn(command))
    }

    fn next(&mut self, what: &str) -> Value {
        self.0.next(what)
    }

    fn send(&mut self, command: Value) -> Value {
        self.0.send(command)
    }

    /// `listen` until it is acknowledged (a retry covers the moment it takes the daemon to
    /// see that an earlier stream closed), then `then` (which changes the tool list), and the
    /// change the stream brought.
    fn listen_for_a_change(&mut self, then: impl FnOnce()) -> Value {
        let r = wait_until(
            "a listen stream acknowledged",
            || self.send(json!({"op": "listen"})),
            |r| r["listening"] == true,
            |r| format!("{r}"),
        );
        assert_eq!(r["honored"]["toolsListChanged"], true, "{r}");
        then();
        self.next("a tool list change on the listen stream")
    }
}

/// Registers the modern fixture (`fx`) and mcp-server-time (itself modern on stdio), and
/// waits until both are active on the 2026-07-28 era.
fn two_modern_servers(d: &Daemon) {
    let time = peers().join("venv-time/bin/mcp-server-time");
    register_fixture(d, "fx", &["--modern"]);
    register(
        d,
        "time",
        &[&time.display().to_string(), "--local-timezone", "UTC"],
    );
    for id in ["fx", "time"] {
        let v = wait_active(d, id);
        assert_eq!(v["era"], "modern", "{id}: {v:#}");
    }
}

/// What the SDK client does against either transport: it probed and stays on 2026-07-28,
/// lists the tools of both servers and calls one of each.
fn discovers_lists_and_calls(client: &mut ModernClient) {
    let hello = client.next("connecting");
    assert_eq!(hello["version"], MODERN, "{hello}");
    assert_eq!(hello["server"], "vsm-daemon", "{hello}");
    assert_eq!(hello["tools_list_changed"], true, "{hello}");
    let tools = client.send(json!({"op": "list"}));
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{tools}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"fx__echo") && names.contains(&"time__get_current_time"),
        "{names:?}"
    );
    let r = client.send(
        json!({"op": "call", "name": "time__get_current_time", "arguments": {"timezone": "UTC"}}),
    );
    assert_eq!(r["result"]["structuredContent"]["timezone"], "UTC", "{r}");
    let r = client
        .send(json!({"op": "call", "name": "fx__echo", "arguments": {"message": "from the SDK"}}));
    assert_eq!(r["result"]["content"][0]["text"], "from the SDK", "{r}");
}

/// The official Python SDK client in its 2026-07-28 mode: probes, stays stateless, lists and
/// calls tools of a modern fixture and of mcp-server-time (itself modern on stdio), and hears
/// a list change on `subscriptions/listen`.
#[test]
fn the_python_sdk_client_speaks_2026_07_28_to_mcp() {
    let d = Daemon::start_with(setup());
    two_modern_servers(&d);
    let mut client = ModernClient::http(&d);
    discovers_lists_and_calls(&mut client);
    let r = client.listen_for_a_change(|| register_fixture(&d, "later", &[]));
    assert!(r.get("changed").is_some(), "{r}");
    client.0.say(json!({"op": "close"}));
}

/// The same SDK client over stdio, through `vsm-daemon mcp serve-stdio`: the bridge learns
/// the era from the client's `_meta`, sends each message with the headers `/mcp` requires of
/// it, and relays the listen stream. With one listen stream allowed (`gateway.max_sessions`
/// = 1), a second listen after the first succeeds only if the client's cancellation (the SDK
/// sends `notifications/cancelled` when it leaves `listen`) closed the first one; the same
/// for the end of a bridge's input, which also ends the bridge.
#[test]
fn the_python_sdk_client_speaks_2026_07_28_through_serve_stdio() {
    let d = Daemon::start_with(Setup {
        config: Some(format!(
            "{}\n[gateway]\nmax_sessions = 1\n",
            setup().config.unwrap_or_default()
        )),
        ..Setup::default()
    });
    two_modern_servers(&d);
    let mut client = ModernClient::stdio(&d);
    discovers_lists_and_calls(&mut client);
    let r = client.listen_for_a_change(|| register_fixture(&d, "later", &[]));
    assert_eq!(r["changed"], "ToolsListChanged", "{r}");
    // The only listen stream the daemon allows is free again: a second one is served.
    let again = client.listen_for_a_change(|| {
        let out = d.cli(&["mcp", "stop", "later"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    });
    assert_eq!(again["changed"], "ToolsListChanged", "{again}");
    let closed = client.send(json!({"op": "close"}));
    assert_eq!(closed["closed"], true, "{closed}");

    // A scripted client: a listen stream through the bridge, then the end of its input.
    let mut bridge = std::process::Command::new(bin())
        .args(["mcp", "serve-stdio", "--socket"])
        .arg(&d.socket)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("serve-stdio");
    let mut input = bridge.stdin.take().expect("stdin");
    let mut output = BufReader::new(bridge.stdout.take().expect("stdout"));
    let listen = wait_until(
        "the listen stream's acknowledgement through the bridge",
        || {
            let body = modern_body(
                1,
                "subscriptions/listen",
                json!({"notifications": {"toolsListChanged": true}}),
                MODERN,
                true,
            );
            writeln!(input, "{body}").expect("write to the bridge");
            let mut line = String::new();
            output.read_line(&mut line).expect("read from the bridge");
            serde_json::from_str::<Value>(&line).unwrap_or(Value::Null)
        },
        |m| m["method"] == "notifications/subscriptions/acknowledged",
        |m| format!("{m}"),
    );
    assert_eq!(
        listen["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        1
    );
    drop(input);
    let status = wait_until(
        "the bridge to exit at the end of its input",
        || bridge.try_wait().expect("wait"),
        Option::is_some,
        |s| format!("{s:?}"),
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let mut rest = String::new();
    output.read_to_string(&mut rest).expect("read the rest");
    assert_eq!(rest, "", "nothing is owed to a client that went away");
    // Input that ends right behind a listen request (before its stream may even be open)
    // ends the bridge too.
    let mut bridge = std::process::Command::new(bin())
        .args(["mcp", "serve-stdio", "--socket"])
        .arg(&d.socket)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("serve-stdio");
    let mut input = bridge.stdin.take().expect("stdin");
    let body = modern_body(
        2,
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true}}),
        MODERN,
        true,
    );
    writeln!(input, "{body}").expect("write to the bridge");
    drop(input);
    let status = wait_until(
        "the bridge to exit at once",
        || bridge.try_wait().expect("wait"),
        Option::is_some,
        |s| format!("{s:?}"),
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    // And the daemon's one listen stream is free again.
    let mut client = ModernClient::stdio(&d);
    let hello = client.next("connecting again");
    assert_eq!(hello["version"], MODERN, "{hello}");
    let r = client.listen_for_a_change(|| {
        let out = d.cli(&["mcp", "start", "later"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    });
    assert_eq!(r["changed"], "ToolsListChanged", "{r}");
}

/// A legacy server that exits on an unknown request dies on the probe once; its next run
/// starts with `initialize` and serves (the era remembered across restarts, as the
/// specification allows), instead of a crash loop.
#[test]
fn a_server_that_dies_on_the_probe_is_restarted_with_initialize_first() {
    let d = Daemon::start_with(setup());
    let dir = TempDir::new("fragile-rec");
    let rec = dir.path().join("rec");
    let rec_s = rec.display().to_string();
    let script = fixture();
    let out = d.cli(&[
        "--json",
        "mcp",
        "register",
        "fragile",
        "--backoff-initial-ms",
        "100",
        "--",
        "python3",
        &script,
        "--exit-on-unknown",
        "4",
        "--record",
        &rec_s,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = wait_active(&d, "fragile");
    assert_eq!(v["era"], "legacy", "{v:#}");
    assert_eq!(v["restarts"], 1, "one failed start: {v:#}");
    let recs = records(&rec);
    let events: Vec<&str> = recs.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        events,
        ["exit_on_unknown", "initialize", "initialized", "tools_list"],
        "{recs:#?}"
    );
    assert_eq!(recs[0]["method"], "server/discover");
    let (code, r) = call(&d, "fragile", "echo", json!({"message": "up"}));
    assert_eq!(
        (code, &r["result"]["content"][0]["text"]),
        (0, &json!("up"))
    );
}

/// The 2026-07-28 era has the resources and prompts of the servers too: server-everything's
/// lists (with the cache hints), one prompt got and one resource read by their `Mcp-Name`, and
/// a listen stream that asked for resource list changes hears one when the server goes.
#[test]
fn mcp_2026_07_28_lists_reads_and_gets_resources_and_prompts() {
    let d = Daemon::start_with(setup());
    let everything = peers().join("npm/node_modules/.bin/mcp-server-everything");
    register(&d, "ev", &[&everything.display().to_string()]);
    wait_active(&d, "ev");
    let bearer = d.bearer();
    let b = bearer.as_str();
    let list = |id: u64, method: &str| {
        let body = modern_body(id, method, json!({}), MODERN, true);
        let (status, head, v) = post(&d, &modern_headers(b, MODERN, method, None), &body);
        assert_eq!(status, 200, "{method}: {head}{v}");
        assert_eq!(v["result"]["resultType"], "complete", "{v}");
        assert_eq!(v["result"]["ttlMs"], 5000, "{v}");
        v["result"].clone()
    };
    let discover = list(1, "server/discover");
    assert!(
        discover["capabilities"]["resources"].is_object(),
        "{discover}"
    );
    assert!(
        discover["capabilities"]["prompts"].is_object(),
        "{discover}"
    );
    let prompts = wait_until(
        "server-everything's prompts",
        || list(2, "prompts/list"),
        |r| r["prompts"].as_array().is_some_and(|p| !p.is_empty()),
        |r| format!("{r}"),
    );
    let resources = wait_until(
        "server-everything's resources",
        || list(3, "resources/list"),
        |r| r["resources"].as_array().is_some_and(|p| !p.is_empty()),
        |r| format!("{r}"),
    );
    assert!(list(4, "resources/templates/list")["resourceTemplates"].is_array());

    // A prompt without required arguments, got by its prefixed name.
    let prompt = prompts["prompts"]
        .as_array()
        .and_then(|ps| {
            ps.iter().find(|p| {
                p["arguments"]
                    .as_array()
                    .is_none_or(|a| a.iter().all(|x| x["required"] != true))
            })
        })
        .and_then(|p| p["name"].as_str())
        .expect("a prompt without required arguments")
        .to_string();
    assert!(prompt.starts_with("ev__"), "{prompt}");
    let body = modern_body(5, "prompts/get", json!({"name": prompt}), MODERN, true);
    let (status, head, v) = post(
        &d,
        &modern_headers(b, MODERN, "prompts/get", Some(&prompt)),
        &body,
    );
    assert_eq!(status, 200, "{head}{v}");
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    assert!(
        v["result"]["messages"]
            .as_array()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );

    // A resource read by its own URI.
    let uri = resources["resources"][0]["uri"]
        .as_str()
        .expect("a resource URI")
        .to_string();
    let body = modern_body(6, "resources/read", json!({"uri": uri}), MODERN, true);
    let (status, head, v) = post(
        &d,
        &modern_headers(b, MODERN, "resources/read", Some(&uri)),
        &body,
    );
    assert_eq!(status, 200, "{head}{v}");
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    assert_eq!(v["result"]["contents"][0]["uri"], json!(uri), "{v}");
    // Mcp-Name must be the URI.
    let (status, _, v) = post(
        &d,
        &modern_headers(b, MODERN, "resources/read", Some("other://x")),
        &body,
    );
    assert_eq!((status, error_of(&v).0), (400, -32020), "{v}");

    // A listen stream for resource list changes hears the server go.
    let (_s, mut reader) = listen(&d, b, 7, json!({"resourcesListChanged": true}));
    let ack = next_event(&mut reader, "the acknowledgement", |m| {
        m["method"] == "notifications/subscriptions/acknowledged"
    });
    assert_eq!(
        ack["params"]["notifications"],
        json!({"resourcesListChanged": true}),
        "{ack}"
    );
    let out = d.cli(&["mcp", "stop", "ev"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let changed = next_event(&mut reader, "resources list_changed", |m| {
        m["method"]
            .as_str()
            .is_some_and(|x| x.ends_with("list_changed"))
    });
    assert_eq!(
        changed["method"], "notifications/resources/list_changed",
        "only what it asked for: {changed}"
    );
}

/// 2026-07-28 resource subscriptions on `/mcp`: `resourceSubscriptions` of a
/// `subscriptions/listen` stream are acknowledged for the URIs an active server offers (held
/// upstream with `resources/subscribe`), the server's `notifications/resources/updated`
/// comes on the stream tagged with the subscription id, and closing the stream ends the
/// server's subscription. `completion/complete` is forwarded as in the session era.
#[test]
fn mcp_2026_07_28_listen_carries_resource_updates_and_completions_are_forwarded() {
    let d = Daemon::start_with(setup());
    let script = format!(
        "{}/tests/fixtures/conformance_server.py",
        env!("CARGO_MANIFEST_DIR")
    );
    register(&d, "a", &["python3", &script, "test", "alpha"]);
    wait_active(&d, "a");
    let bearer = d.bearer();
    let b = bearer.as_str();
    let watched = "test://watched-resource";
    let subscribed = |d: &Daemon| {
        let (code, v) = call(d, "a", "subscriptions", json!({}));
        assert_eq!(code, 0, "{v}");
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(subscribed(&d), "[]");
    let filters = json!({"resourceSubscriptions": [watched, "nothing://here"]});
    let (s, mut reader) = listen(&d, b, 9, filters);
    let ack = next_event(&mut reader, "the acknowledgement", |m| {
        m["method"] == "notifications/subscriptions/acknowledged"
    });
    assert_eq!(
        ack["params"]["notifications"],
        json!({"resourceSubscriptions": [watched]}),
        "the URI no server offers is not honoured: {ack}"
    );
    wait_until(
        "the server's subscription",
        || subscribed(&d),
        |t| t.contains(watched),
        |t| format!("{t}\n{}", d.stderr()),
    );
    let (code, v) = call(&d, "a", "update_watched", json!({}));
    assert_eq!(code, 0, "{v}");
    let updated = next_event(&mut reader, "the update", |m| {
        m["method"] == "notifications/resources/updated"
    });
    assert_eq!(updated["params"]["uri"], watched, "{updated}");
    assert_eq!(
        updated["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 9,
        "{updated}"
    );
    drop(reader);
    drop(s);
    // The stream closed: the server's subscription ends (seen at the next step of /mcp).
    let body = modern_body(
        3,
        "completion/complete",
        json!({"ref": {"type": "ref/prompt", "name": "a__prompt_with_arguments"},
               "argument": {"name": "arg1", "value": "test"}}),
        MODERN,
        true,
    );
    let headers = modern_headers(b, MODERN, "completion/complete", None);
    let (status, _, v) = post(&d, &headers, &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["result"]["completion"]["values"],
        json!(["test-alpha", "testing-alpha", "tested-alpha"]),
        "{v}"
    );
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    wait_until(
        "the server's subscription ended with the stream",
        || {
            post(&d, &headers, &body);
            subscribed(&d)
        },
        |t| t == "[]",
        |t| format!("{t}\n{}", d.stderr()),
    );
}

/// A 2026-07-28 `tools/call` whose `_meta` names a log level gets its server's log messages
/// at that level or above on its stream (the server is asked for that level), then its
/// result; one that names none gets a plain JSON answer.
#[test]
fn mcp_2026_07_28_call_with_a_log_level_gets_the_servers_log_messages_on_its_stream() {
    let d = Daemon::start_with(setup());
    let script = format!(
        "{}/tests/fixtures/conformance_server.py",
        env!("CARGO_MANIFEST_DIR")
    );
    register(&d, "a", &["python3", &script, "test"]);
    wait_active(&d, "a");
    let bearer = d.bearer();
    let name = "a__log_each_level";
    let headers = modern_headers(&bearer, MODERN, "tools/call", Some(name));
    let mut body: Value = serde_json::from_str(&modern_body(
        5,
        "tools/call",
        json!({"name": name, "arguments": {}}),
        MODERN,
        true,
    ))
    .expect("JSON");
    body["params"]["_meta"]["io.modelcontextprotocol/logLevel"] = json!("error");
    let addr = d.http.expect("TCP listener");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let text = body.to_string();
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        text.len()
    );
    for (k, v) in &headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&text);
    s.write_all(req.as_bytes()).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let (status, head, body) = split_response(&out);
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase().contains("text/event-stream"),
        "{head}"
    );
    let messages: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).expect("SSE data is JSON"))
        .collect();
    let levels: Vec<&str> = messages
        .iter()
        .filter(|m| m["method"] == "notifications/message")
        .filter_map(|m| m["params"]["level"].as_str())
        .collect();
    assert_eq!(
        levels,
        ["error", "critical", "alert", "emergency"],
        "{body}"
    );
    let last = messages.last().expect("the result");
    assert_eq!(last["id"], 5, "{body}");
    assert_eq!(
        last["result"]["content"][0]["text"], "level error",
        "{body}"
    );
    assert_eq!(last["result"]["resultType"], "complete", "{body}");
    // Without a level: no log messages, a JSON answer.
    let plain = modern_body(
        6,
        "tools/call",
        json!({"name": name, "arguments": {}}),
        MODERN,
        true,
    );
    let (status, head, v) = post(&d, &headers, &plain);
    assert_eq!(status, 200, "{head}");
    assert_eq!(v["result"]["content"][0]["text"], "level error", "{v}");
}

/// A 2026-07-28 server's `input_required` on `prompts/get` and `resources/read` reaches a
/// 2026-07-28 client as that era's result (`resultType`, `inputRequests`, `requestState`),
/// and the client's request sent again carries its `inputResponses`, `requestState` and
/// capabilities to the server, which gives the final result.
#[test]
fn mcp_2026_07_28_prompts_and_resources_that_ask_are_asked_again_by_the_client() {
    let d = Daemon::start_with(setup());
    let dir = TempDir::new("mrtr-rec");
    let rec = dir.path().join("rec");
    register_fixture(
        &d,
        "m",
        &["--modern", "--record", &rec.display().to_string()],
    );
    wait_active(&d, "m");
    let bearer = d.bearer();
    let b = bearer.as_str();
    let caps = json!({"elicitation": {"form": {}}});
    let ask = |id: u64, method: &str, name: &str, params: Value, again: Option<&str>| {
        let mut body: Value =
            serde_json::from_str(&modern_body(id, method, params, MODERN, true)).expect("body");
        body["params"]["_meta"][CAPS] = caps.clone();
        if let Some(state) = again {
            body["params"]["requestState"] = json!(state);
            body["params"]["inputResponses"] =
                json!({"name": {"action": "accept", "content": {"username": "ada"}}});
        }
        let headers = modern_headers(b, MODERN, method, Some(name));
        let (status, head, v) = post(&d, &headers, &body.to_string());
        assert_eq!(status, 200, "{method}: {head}{v}");
        v
    };
    let cases = [
        (
            "prompts/get",
            "m__greeting",
            json!({"name": "m__greeting", "arguments": {"style": "kindly"}}),
            "greeting-1",
        ),
        (
            "resources/read",
            "fixture://secret",
            json!({"uri": "fixture://secret"}),
            "secret-1",
        ),
    ];
    for (method, name, params, state) in cases {
        // Once the catalog offers it, the server's question is the client's result.
        let first = wait_until(
            &format!("{name} offered on /mcp"),
            || ask(1, method, name, params.clone(), None),
            |v| v.get("result").is_some(),
            |v| format!("{v}"),
        );
        let r = &first["result"];
        assert_eq!(r["resultType"], "input_required", "{first}");
        assert_eq!(r["requestState"], state, "{first}");
        assert_eq!(
            r["inputRequests"]["name"]["method"], "elicitation/create",
            "{first}"
        );
        // Asked again with the answer: the final result.
        let v = ask(2, method, name, params, Some(state));
        assert_eq!(v["result"]["resultType"], "complete", "{v}");
        let said = if method == "prompts/get" {
            &v["result"]["messages"][0]["content"]["text"]
        } else {
            &v["result"]["contents"][0]["text"]
        };
        let want = if method == "prompts/get" {
            "Greet ada kindly."
        } else {
            "the secret, for ada"
        };
        assert_eq!(said, want, "{v}");
    }
    // The server had the client's capabilities, and the answer with its state echoed.
    let recs = records(&rec);
    for (event, state) in [("prompt", "greeting-1"), ("secret", "secret-1")] {
        let seen: Vec<&Value> = recs.iter().filter(|e| e["event"] == event).collect();
        assert_eq!(seen.len(), 2, "{event}: {seen:?}");
        assert_eq!(seen[1]["state"], state, "{event}: {seen:?}");
        assert_eq!(
            seen[1]["responses"]["name"]["content"]["username"], "ada",
            "{event}: {seen:?}"
        );
        assert!(seen.iter().all(|e| e["capabilities"] == caps), "{seen:?}");
    }
}
