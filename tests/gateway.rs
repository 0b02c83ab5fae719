//! `/mcp`, the daemon as one MCP server, through the real binary: the official TypeScript
//! SDK client (installed in `.test-peers` by `.ci/install-test-peers`) lists and calls the
//! tools of two real servers (the fixture and mcp-server-time), hears `list_changed`, and
//! gets a fast error from a stopped server; raw requests check the transport's refusals
//! (token, Origin, session, protocol version) and its bounds.

use crate::util::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

const QUICK_STOP: &str = "[mcp_servers]\nstop_grace_ms = 100\nterm_timeout_ms = 300\n";

fn peers() -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-peers");
    assert!(
        p.exists(),
        "{} is missing: run .ci/install-test-peers",
        p.display()
    );
    p
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `mcp register ID -- COMMAND...` through the CLI.
fn register(d: &Daemon, id: &str, command: &[&str]) {
    let mut args = vec!["--json", "mcp", "register", id, "--"];
    args.extend_from_slice(command);
    let out = d.cli(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "register {id}: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

fn wait_status(d: &Daemon, id: &str, status: &str) {
    wait_until(
        &format!("{id} {status}"),
        || d.http("GET", &format!("/api/v1/mcp/servers/{id}"), None),
        |(_, v)| v["data"]["status"] == status,
        |v| format!("last seen: {v:?}\n{}", d.stderr()),
    );
}

/// An SDK client driven one JSON command per line (`gateway_client.cjs`, `gateway_client.py`,
/// `ask_client.py`).
pub(crate) struct SdkClient {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl SdkClient {
    fn typescript(url: &str, token: &str) -> SdkClient {
        let modules = peers().join("npm/node_modules");
        let mut command = Command::new("node");
        command
            .arg(fixture("gateway_client.cjs"))
            .arg(&modules)
            .arg(url)
            .arg(token);
        SdkClient::spawn(command)
    }

    /// The Python SDK client, from the venv of mcp-server-time (which depends on it).
    pub(crate) fn python(url: &str, token: &str) -> SdkClient {
        let mut command = Command::new(peers().join("venv-time/bin/python"));
        command
            .arg(fixture("gateway_client.py"))
            .arg(url)
            .arg(token);
        SdkClient::spawn(command)
    }

    pub(crate) fn spawn(mut command: Command) -> SdkClient {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the SDK client's interpreter (node, the venv's python)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        SdkClient {
            child,
            stdin,
            lines,
        }
    }

    pub(crate) fn next(&mut self, what: &str) -> Value {
        let line = self
            .lines
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("the SDK client said nothing about {what}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: {e}: {line}"))
    }

    /// Writes `command` without waiting for an answer (a last `close`).
    pub(crate) fn say(&mut self, command: Value) {
        let _ = writeln!(self.stdin, "{command}");
    }

    pub(crate) fn send(&mut self, command: Value) -> Value {
        writeln!(self.stdin, "{command}").expect("write to the SDK client");
        self.next(&command.to_string())
    }
}

impl Drop for SdkClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn names(tools: &Value) -> Vec<String> {
    tools
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn typescript_sdk_client_uses_the_tools_of_two_real_servers() {
    two_real_servers_through(|d| SdkClient::typescript(&url(d), &d.token), "2025-11-25");
}

#[test]
fn python_sdk_client_uses_the_tools_of_two_real_servers() {
    two_real_servers_through(|d| SdkClient::python(&url(d), &d.token), "2025-11-25");
}

/// The Python SDK's stdio client spawns `vsm-daemon mcp serve-stdio`, which bridges to `/mcp`
/// over the control socket: the same scenario, no token, no TCP.
#[test]
fn python_sdk_stdio_client_goes_through_serve_stdio() {
    two_real_servers_through(
        |d| {
            let mut command = Command::new(peers().join("venv-time/bin/python"));
            command
                .arg(fixture("gateway_client.py"))
                .arg("stdio")
                .arg(bin())
                .args(["mcp", "serve-stdio", "--socket"])
                .arg(&d.socket);
            SdkClient::spawn(command)
        },
        "2025-11-25",
    );
}

#[test]
fn serve_stdio_without_a_daemon_exits_3() {
    let dir = TempDir::new("no-daemon");
    let out = Command::new(bin())
        .args(["mcp", "serve-stdio", "--socket"])
        .arg(dir.path().join("none.sock"))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("not reachable"), "{}", stderr(&out));
}

fn url(d: &Daemon) -> String {
    format!("http://{}/mcp", d.http.expect("TCP listener"))
}

/// The scenario both SDK clients go through.
fn two_real_servers_through(client: fn(&Daemon) -> SdkClient, version: &str) {
    let time = peers().join("venv-time/bin/mcp-server-time");
    let time = time.display().to_string();
    let script = fixture("mcp_fixture.py");
    let d = Daemon::start_with(Setup {
        config: Some(QUICK_STOP.into()),
        ..Setup::default()
    });
    register(&d, "fx", &["python3", &script]);
    register(&d, "time", &[&time, "--local-timezone", "UTC"]);
    wait_status(&d, "fx", "active");
    wait_status(&d, "time", "active");
    let mut client = client(&d);
    let hello = client.next("connect");
    assert_eq!(hello["connected"], true, "{hello}");
    assert_eq!(hello["version"], version, "{hello}");

    let listed = client.send(json!({"op": "list"}));
    let all = names(&listed["tools"]);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "the list is in name order");
    for name in [
        "fx__echo",
        "fx__sum",
        "time__get_current_time",
        "vsm__status",
        "vsm__list_servers",
    ] {
        assert!(
            all.contains(&name.to_string()),
            "{name} missing from {all:?}"
        );
    }
    let sum = listed["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "fx__sum"))
        .expect("fx__sum");
    assert_eq!(sum["outputSchema"]["required"], json!(["sum"]), "{sum}");

    let echo = client.send(
        json!({"op": "call", "name": "fx__echo", "arguments": {"message": "through the gateway"}}),
    );
    assert_eq!(text(&echo["result"]), "through the gateway", "{echo}");
    let added =
        client.send(json!({"op": "call", "name": "fx__sum", "arguments": {"a": 2, "b": 3}}));
    assert_eq!(added["result"]["structuredContent"]["sum"], 5, "{added}");
    let now = client.send(
        json!({"op": "call", "name": "time__get_current_time", "arguments": {"timezone": "UTC"}}),
    );
    assert_ne!(now["result"]["isError"], true, "{now}");
    assert!(text(&now["result"]).contains("UTC"), "{now}");
    let servers = client.send(json!({"op": "call", "name": "vsm__list_servers", "arguments": {}}));
    let ids: Vec<&str> = servers["result"]["structuredContent"]["servers"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["fx", "time"], "{servers}");

    // A server that comes: the client hears list_changed on its GET stream.
    register(&d, "fx2", &["python3", &script]);
    wait_status(&d, "fx2", "active");
    let heard = client.send(json!({"op": "changes", "at_least": 1}));
    assert!(heard["changes"].as_u64() >= Some(1), "{heard}");
    let listed = client.send(json!({"op": "list"}));
    assert!(
        names(&listed["tools"]).contains(&"fx2__echo".to_string()),
        "{listed}"
    );

    // A server that stops: its tools go, and a call with the old name fails at once with
    // the reason, instead of waiting for a deadline.
    let out = d.cli(&["mcp", "stop", "fx"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    wait_status(&d, "fx", "stopped");
    let failed =
        client.send(json!({"op": "call", "name": "fx__echo", "arguments": {"message": "x"}}));
    assert_eq!(failed["result"]["isError"], true, "{failed}");
    assert!(
        text(&failed["result"]).contains("'fx' is not active (status stopped)"),
        "{failed}"
    );
    let listed = client.send(json!({"op": "list"}));
    assert!(
        !names(&listed["tools"])
            .iter()
            .any(|n| n.starts_with("fx__")),
        "{listed}"
    );

    let closed = client.send(json!({"op": "close"}));
    assert_eq!(closed["closed"], true, "{closed}");
}

/// One HTTP/1.1 request over TCP (`Connection: close`): status, head and body.
fn tcp(
    addr: std::net::SocketAddr,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut req = format!(
        "{method} /mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
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
    split_response(&out)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;

#[test]
fn mcp_endpoint_refuses_what_it_must() {
    let d = Daemon::start_with(Setup {
        config: Some("[gateway]\nmax_sessions = 2\nsession_idle_ms = 1000\n".into()),
        ..Setup::default()
    });
    let addr = d.http.expect("TCP listener");
    let bearer = d.bearer();
    let json_ct = ("Content-Type", "application/json");
    let accept = ("Accept", "application/json, text/event-stream");
    let auth = ("Authorization", bearer.as_str());

    let (status, head, _) = tcp(addr, "POST", &[json_ct, accept], INIT);
    assert_eq!(status, 401, "no token: {head}");
    let evil = ("Origin", "http://evil.example");
    let (status, head, _) = tcp(addr, "POST", &[json_ct, accept, auth, evil], INIT);
    assert_eq!(status, 403, "foreign Origin: {head}");

    let (status, head, body) = tcp(addr, "POST", &[json_ct, accept, auth], INIT);
    assert_eq!(status, 200, "{head}{body}");
    let init: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
    assert_eq!(
        init["result"]["capabilities"]["tools"]["listChanged"], true,
        "{init}"
    );
    let session = header(&head, "mcp-session-id")
        .expect("Mcp-Session-Id")
        .to_string();
    let sid = ("Mcp-Session-Id", session.as_str());

    let (status, _, body) = tcp(addr, "POST", &[json_ct, accept, auth], LIST);
    assert_eq!(status, 400, "no session: {body}");
    let (status, _, body) = tcp(
        addr,
        "POST",
        &[json_ct, accept, auth, ("Mcp-Session-Id", "nope")],
        LIST,
    );
    assert_eq!(status, 404, "unknown session: {body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["error"]["code"],
        -32001
    );
    // Another version we speak is accepted (the session keeps its own); the spec refuses
    // only invalid or unsupported ones, and so does the conformance suite.
    let other = ("MCP-Protocol-Version", "2025-11-25");
    let (status, _, body) = tcp(addr, "POST", &[json_ct, accept, auth, sid, other], LIST);
    assert_eq!(status, 200, "another supported version: {body}");
    let odd = ("MCP-Protocol-Version", "1999-01-01");
    let (status, _, body) = tcp(addr, "POST", &[json_ct, accept, auth, sid, odd], LIST);
    assert_eq!(status, 400, "unsupported version: {body}");
    let right = ("MCP-Protocol-Version", "2025-06-18");
    let (status, _, body) = tcp(addr, "POST", &[json_ct, accept, auth, sid, right], LIST);
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        names(&listed["result"]["tools"]),
        ["vsm__list_servers", "vsm__status", "vsm__variety"],
        "{listed}"
    );
    // The separator is live configuration, and validated.
    let out = d.cli(&["config", "set", "gateway.tool_separator", "/"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let out = d.cli(&["config", "set", "gateway.tool_separator", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (_, _, body) = tcp(addr, "POST", &[json_ct, accept, auth, sid, right], LIST);
    let listed: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        names(&listed["result"]["tools"]),
        ["vsm.list_servers", "vsm.status", "vsm.variety"],
        "{listed}"
    );
    let (status, _, body) = tcp(addr, "POST", &[json_ct, accept, auth, sid, right], "{oops");
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["error"]["code"],
        -32700
    );
    let unknown = r#"{"jsonrpc":"2.0","id":3,"method":"resources/templates/nope"}"#;
    let (_, _, body) = tcp(addr, "POST", &[json_ct, accept, auth, sid, right], unknown);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["error"]["code"],
        -32601
    );
    // resources/read: a URI is bounded, and one nobody offers is -32002.
    let long = json!({"jsonrpc": "2.0", "id": 4, "method": "resources/read",
                      "params": {"uri": format!("x://{}", "y".repeat(9000))}})
    .to_string();
    let (_, _, body) = tcp(addr, "POST", &[json_ct, accept, auth, sid, right], &long);
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    let nobody = r#"{"jsonrpc":"2.0","id":5,"method":"resources/read","params":{"uri":"x://y"}}"#;
    let (_, _, body) = tcp(addr, "POST", &[json_ct, accept, auth, sid, right], nobody);
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["error"]["code"], -32002, "{answer}");
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let (status, _, _) = tcp(addr, "POST", &[json_ct, accept, auth, sid, right], note);
    assert_eq!(status, 202);

    // The control socket needs no token (its peers are checked by uid).
    let raw = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{INIT}",
        INIT.len()
    );
    let (status, head, _) = split_response(&raw_exchange(&d.socket, raw.as_bytes()));
    assert_eq!(status, 200, "{head}");

    // Two sessions are open: a third is refused, not squeezed in.
    let (status, _, body) = tcp(addr, "POST", &[json_ct, accept, auth], INIT);
    assert_eq!(status, 503, "{body}");

    // DELETE ends the session; idle ones expire (1 s here) and make room.
    let (status, _, _) = tcp(addr, "DELETE", &[auth, sid], "");
    assert_eq!(status, 200);
    let (status, _, _) = tcp(addr, "POST", &[json_ct, accept, auth, sid], LIST);
    assert_eq!(status, 404, "a deleted session is gone");
    let (status, _, _) = tcp(addr, "POST", &[json_ct, accept, auth], INIT);
    assert_eq!(status, 200, "the deleted session's place is free");
    let (status, _, _) = tcp(addr, "POST", &[json_ct, accept, auth], INIT);
    assert_eq!(status, 503, "full again");
    wait_until(
        "an idle session expires and a new one fits",
        || tcp(addr, "POST", &[json_ct, accept, auth], INIT).0,
        |s| *s == 200,
        |s| format!("last status {s}"),
    );
}

/// The capability policy per tool: the fixture's `run_command` maps to `system`, blocked by
/// default. It is refused on REST (403 `capability_blocked`), on the CLI (exit 1) and on
/// `/mcp` (a JSON-RPC error), left out of `/mcp`'s `tools/list`, and each refusal raises a
/// security alert naming the server, the tool and the capability; the server's other tools
/// work. A spec that allows `system` gets it back.
#[test]
fn a_tool_under_a_blocked_capability_is_refused_everywhere_and_alerts() {
    let d = Daemon::start_with(Setup {
        config: Some(QUICK_STOP.into()),
        ..Setup::default()
    });
    let script = fixture("mcp_fixture.py");
    register(&d, "shell", &["python3", &script, "--run-command-tool"]);
    wait_status(&d, "shell", "active");

    let call = r#"{"name": "run_command", "arguments": {"command": "id"}}"#;
    let (status, v) = d.http("POST", "/api/v1/mcp/servers/shell/tools/call", Some(call));
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["errors"][0]["code"], "capability_blocked", "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("'system'")),
        "{v}"
    );
    let out = d.cli(&[
        "mcp",
        "call",
        "shell",
        "run_command",
        r#"{"command": "id"}"#,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("blocked_capabilities"),
        "{}",
        stderr(&out)
    );
    let echo = r#"{"name": "echo", "arguments": {"message": "fine"}}"#;
    let (status, v) = d.http("POST", "/api/v1/mcp/servers/shell/tools/call", Some(echo));
    assert_eq!(status, 200, "other tools still work: {v}");

    wait_until(
        "a security alert naming server, tool and capability",
        || d.http("GET", "/api/v1/alerts?state=firing", None).1,
        |v| {
            v["data"]["alerts"].as_array().is_some_and(|a| {
                a.iter().any(|a| {
                    a["rule"] == "security:capability_blocked:shell:run_command"
                        && a["message"].as_str().is_some_and(|m| m.contains("system"))
                })
            })
        },
        |v| format!("alerts: {v}"),
    );

    let addr = d.http.expect("TCP listener");
    let bearer = d.bearer();
    let json_ct = ("Content-Type", "application/json");
    let accept = ("Accept", "application/json, text/event-stream");
    let auth = ("Authorization", bearer.as_str());
    let (status, head, _) = tcp(addr, "POST", &[json_ct, accept, auth], INIT);
    assert_eq!(status, 200, "{head}");
    let session = header(&head, "mcp-session-id")
        .expect("session")
        .to_string();
    let sid = ("Mcp-Session-Id", session.as_str());
    let (_, _, body) = tcp(addr, "POST", &[json_ct, accept, auth, sid], LIST);
    let listed: Value = serde_json::from_str(&body).expect("JSON");
    let tools = names(&listed["result"]["tools"]);
    assert!(tools.iter().any(|t| t == "shell__echo"), "{tools:?}");
    assert!(
        !tools.iter().any(|t| t == "shell__run_command"),
        "{tools:?}"
    );
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"shell__run_command","arguments":{"command":"id"}}}"#;
    let (_, _, body) = tcp(addr, "POST", &[json_ct, accept, auth, sid], call);
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("system")),
        "{answer}"
    );

    // Allowed by its spec: listed and callable.
    let spec = json!({"id": "trusted", "command": "python3",
                      "args": [script, "--run-command-tool"],
                      "allow_capabilities": ["system"]});
    let (status, v) = d.http("POST", "/api/v1/mcp/servers", Some(&spec.to_string()));
    assert!(status < 300, "{v}");
    wait_status(&d, "trusted", "active");
    let (status, v) = d.http(
        "POST",
        "/api/v1/mcp/servers/trusted/tools/call",
        Some(r#"{"name": "run_command", "arguments": {"command": "id"}}"#),
    );
    assert_eq!(status, 200, "{v}");
    let (_, _, body) = tcp(addr, "POST", &[json_ct, accept, auth, sid], LIST);
    let listed: Value = serde_json::from_str(&body).expect("JSON");
    let tools = names(&listed["result"]["tools"]);
    assert!(
        tools.iter().any(|t| t == "trusted__run_command"),
        "{tools:?}"
    );

    // The policy changed live: the verdict the daemon kept for the refused tool goes with it.
    let out = d.cli(&[
        "config",
        "set",
        "security.blocked_capabilities",
        r#"["network", "file_system"]"#,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let call = r#"{"name": "run_command", "arguments": {"command": "id"}}"#;
    let (status, v) = d.http("POST", "/api/v1/mcp/servers/shell/tools/call", Some(call));
    assert_eq!(status, 200, "no longer blocked: {v}");
}

/// JSON lines of a fixture's `--record` file.
fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The request id the fixture was called with for the `nth` call (0-based) of `tool`.
fn call_id(path: &Path, tool: &str, nth: usize) -> Option<Value> {
    records(path)
        .into_iter()
        .filter(|e| e["event"] == "call" && e["name"] == tool)
        .nth(nth)
        .map(|e| e["id"].clone())
}

/// Waits until the fixture received `notifications/cancelled` naming `id`, the request id
/// it was called with; returns the reason it was given.
fn wait_cancelled(d: &Daemon, rec: &Path, id: &Value) -> String {
    let asked = std::time::Instant::now();
    let seen = wait_until(
        &format!("notifications/cancelled for request {id} at the server"),
        || {
            records(rec)
                .into_iter()
                .find(|e| e["event"] == "cancelled" && e["requestId"] == *id)
        },
        Option::is_some,
        |_| format!("record: {:?}\n{}", records(rec), d.stderr()),
    );
    // A reading, not a bound: from the client's step to the server's record (10 ms polls).
    eprintln!("cancelled at the server {:?} later", asked.elapsed());
    seen.and_then(|e| e["reason"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Progress that comes faster than the gateway passes it on (at most one every 50 ms per
/// call) is held, not lost: a burst of 40 notes ends with the 40th, before the answer.
#[test]
fn a_burst_of_progress_ends_with_the_latest_before_the_answer() {
    let d = Daemon::start_with(Setup {
        config: Some(QUICK_STOP.into()),
        ..Setup::default()
    });
    let script = fixture("mcp_fixture.py");
    register(&d, "fx", &["python3", &script]);
    wait_status(&d, "fx", "active");
    let mut python = SdkClient::python(&url(&d), &d.token);
    let hello = python.next("connect");
    assert_eq!(hello["connected"], true, "{hello}");
    for _ in 0..2 {
        let done = python.send(json!({"op": "call", "name": "fx__sleep", "progress": true,
                                      "arguments": {"ms": 100, "steps": 40}}));
        assert_eq!(text(&done["result"]), "slept", "{done}");
        let progress: Vec<f64> = done["progress"]
            .as_array()
            .expect("progress")
            .iter()
            .filter_map(|p| p["progress"].as_f64())
            .collect();
        assert_eq!(progress.first(), Some(&1.0), "{done}");
        assert_eq!(
            progress.last(),
            Some(&40.0),
            "the latest is not lost: {done}"
        );
        assert!(progress.windows(2).all(|w| w[0] < w[1]), "{done}");
    }
}

/// Progress and cancellation through the official SDK clients: the TypeScript client's
/// `onprogress` sees a slow tool's progress (forwarded with the client's own token, while
/// the server was given the daemon's), and a call it aborts (AbortSignal) is cancelled at the
/// server with the request id the server knows, after which the server still serves. The
/// Python client sees progress too.
#[test]
fn sdk_clients_see_progress_and_cancel_a_slow_call_at_the_server() {
    let dir = TempDir::new("gateway-progress");
    let rec = dir.path().join("record.jsonl");
    let d = Daemon::start_with(Setup {
        config: Some(QUICK_STOP.into()),
        ..Setup::default()
    });
    let script = fixture("mcp_fixture.py");
    let rec_s = rec.display().to_string();
    register(&d, "fx", &["python3", &script, "--record", &rec_s]);
    wait_status(&d, "fx", "active");
    let mut client = SdkClient::typescript(&url(&d), &d.token);
    let hello = client.next("connect");
    assert_eq!(hello["connected"], true, "{hello}");

    let slow = json!({"op": "call", "name": "fx__sleep", "progress": true,
                      "arguments": {"ms": 900, "steps": 3}});
    let done = client.send(slow);
    assert_eq!(text(&done["result"]), "slept", "{done}");
    let progress = done["progress"].as_array().expect("progress").clone();
    // Steps 1 and 2 come 300 ms before the answer; step 3 comes with it and may be overtaken.
    assert!(progress.len() >= 2, "{done}");
    assert_eq!(progress[0]["progress"], 1, "{done}");
    assert_eq!(progress[0]["total"], 3, "{done}");
    assert_eq!(progress[0]["message"], "step 1", "{done}");
    assert_eq!(progress[1]["progress"], 2, "{done}");
    let given = records(&rec)
        .into_iter()
        .find(|e| e["event"] == "call" && e["name"] == "sleep")
        .expect("the fixture recorded the call");
    let token = given["progressToken"].as_str().unwrap_or_default();
    assert!(
        token.starts_with("vsm/gateway/"),
        "the server gets the daemon's own token, not the client's: {given}"
    );

    let cancel = json!({"op": "cancel", "name": "fx__sleep", "after": 1,
                        "arguments": {"ms": 60000, "steps": 600}});
    let aborted = client.send(cancel);
    assert_eq!(aborted["cancelled"], true, "{aborted}");
    assert!(!aborted["progress"].as_array().expect("progress").is_empty());
    let id = call_id(&rec, "sleep", 1).expect("the second sleep call was recorded");
    let reason = wait_cancelled(&d, &rec, &id);
    assert!(reason.contains("cancelled"), "{reason}");
    let echo = client
        .send(json!({"op": "call", "name": "fx__echo", "arguments": {"message": "still here"}}));
    assert_eq!(text(&echo["result"]), "still here", "{echo}");
    let closed = client.send(json!({"op": "close"}));
    assert_eq!(closed["closed"], true, "{closed}");

    let mut python = SdkClient::python(&url(&d), &d.token);
    let hello = python.next("connect");
    assert_eq!(hello["connected"], true, "{hello}");
    let done = python.send(json!({"op": "call", "name": "fx__sleep", "progress": true,
                                  "arguments": {"ms": 900, "steps": 3}}));
    assert_eq!(text(&done["result"]), "slept", "{done}");
    let progress = done["progress"].as_array().expect("progress");
    assert!(progress.len() >= 2, "{done}");
    assert_eq!(progress[0]["progress"].as_f64(), Some(1.0), "{done}");
    assert_eq!(progress[0]["message"], "step 1", "{done}");
    let cancel = json!({"op": "cancel", "name": "fx__sleep", "after": 1,
                        "arguments": {"ms": 60000, "steps": 600}});
    let aborted = python.send(cancel);
    assert_eq!(aborted["cancelled"], true, "{aborted}");
    let id = call_id(&rec, "sleep", 3).expect("the Python client's second sleep was recorded");
    let reason = wait_cancelled(&d, &rec, &id);
    assert!(reason.contains("cancelled"), "{reason}");

    // Through `mcp serve-stdio`, which relays the stream of a call's answer line by line.
    let mut command = Command::new(peers().join("venv-time/bin/python"));
    command
        .arg(fixture("gateway_client.py"))
        .arg("stdio")
        .arg(bin())
        .args(["mcp", "serve-stdio", "--socket"])
        .arg(&d.socket);
    let mut stdio = SdkClient::spawn(command);
    let hello = stdio.next("connect");
    assert_eq!(hello["connected"], true, "{hello}");
    let done = stdio.send(json!({"op": "call", "name": "fx__sleep", "progress": true,
                                 "arguments": {"ms": 900, "steps": 3}}));
    assert_eq!(text(&done["result"]), "slept", "{done}");
    let progress = done["progress"].as_array().expect("progress");
    assert!(progress.len() >= 2, "{done}");
    assert_eq!(progress[1]["progress"].as_f64(), Some(2.0), "{done}");
    // A call the stdio client gives up on is cancelled at the server too: the bridge passes
    // the session's notifications/cancelled on (and owes the client no answer for it).
    let cancel = json!({"op": "cancel", "name": "fx__sleep", "after": 1,
                        "arguments": {"ms": 60000, "steps": 600}});
    let aborted = stdio.send(cancel);
    assert_eq!(aborted["cancelled"], true, "{aborted}");
    let id = call_id(&rec, "sleep", 5).expect("the stdio client's second sleep was recorded");
    let reason = wait_cancelled(&d, &rec, &id);
    assert!(reason.contains("cancelled"), "{reason}");
    let echo = stdio
        .send(json!({"op": "call", "name": "fx__echo", "arguments": {"message": "still here"}}));
    assert_eq!(text(&echo["result"]), "still here", "{echo}");
}

/// A raw HTTP client of `/mcp` whose response is read as it comes.
struct Raw {
    stream: std::net::TcpStream,
    got: String,
}

impl Raw {
    fn open(d: &Daemon, method: &str, headers: &[(&str, &str)], body: &str) -> Raw {
        let addr = d.http.expect("TCP listener");
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let bearer = d.bearer();
        let mut req = format!(
            "{method} /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {bearer}\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        stream.write_all(req.as_bytes()).expect("write");
        Raw {
            stream,
            got: String::new(),
        }
    }

    /// Reads until `done` holds for what came so far (or the peer closes, or patience ends).
    fn until(&mut self, what: &str, done: impl Fn(&str) -> bool) -> &str {
        let mut buf = [0u8; 4096];
        while !done(&self.got) {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.got.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) => panic!("{what}: {e}; got so far: {}", self.got),
            }
        }
        assert!(done(&self.got), "{what}: got {}", self.got);
        &self.got
    }
}

/// Opens the session's GET stream (once the daemon has seen the previous one close: until
/// then it answers 409).
fn get_stream(d: &Daemon, headers: &[(&str, &str)]) -> Raw {
    let mut opened = wait_until(
        "the GET stream to open",
        || {
            let mut r = Raw::open(d, "GET", headers, "");
            r.until("a head", |t| t.contains("\r\n\r\n"));
            r
        },
        |r| r.got.starts_with("HTTP/1.1 200"),
        |r| r.got.clone(),
    );
    let head_end = opened.got.find("\r\n\r\n").map_or(0, |i| i + 4);
    // What came after the head stays for the caller's reading.
    opened.got = opened.got.split_off(head_end);
    opened
}

/// Opens a session with a raw `initialize`; its id.
fn raw_session(d: &Daemon) -> String {
    let addr = d.http.expect("TCP listener");
    let bearer = d.bearer();
    let (status, head, body) = tcp(
        addr,
        "POST",
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
            ("Authorization", &bearer),
        ],
        INIT,
    );
    assert_eq!(status, 200, "{head}{body}");
    header(&head, "mcp-session-id")
        .expect("Mcp-Session-Id")
        .to_string()
}

/// A client that goes away cancels its calls: the server receives `notifications/cancelled`
/// with its own request id when the POST's SSE stream closes, when a POST waiting for a JSON
/// answer closes, and when the session is deleted (the waiting POST then gets an error).
#[test]
fn a_client_that_goes_away_cancels_its_calls_at_the_server() {
    let dir = TempDir::new("gateway-disconnect");
    let rec = dir.path().join("record.jsonl");
    let d = Daemon::start_with(Setup {
        config: Some(format!("{QUICK_STOP}[gateway]\nkeepalive_ms = 1000\n")),
        ..Setup::default()
    });
    let script = fixture("mcp_fixture.py");
    let rec_s = rec.display().to_string();
    register(&d, "fx", &["python3", &script, "--record", &rec_s]);
    wait_status(&d, "fx", "active");
    let session = raw_session(&d);
    let json_ct = ("Content-Type", "application/json");
    let sid = ("Mcp-Session-Id", session.as_str());
    let slow = |id: u32, token: Option<&str>| {
        let meta = token.map_or(json!({}), |t| json!({"progressToken": t}));
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "fx__sleep", "arguments": {"ms": 60000, "steps": 600},
                          "_meta": meta}})
        .to_string()
    };

    // 1. Answered as SSE (progress asked for): the stream carries the client's token and
    //    keep-alive comments; the client hangs up.
    let sse = ("Accept", "application/json, text/event-stream");
    let mut post = Raw::open(&d, "POST", &[json_ct, sse, sid], &slow(10, Some("mine")));
    let got = post
        .until("progress and a keep-alive on the POST's stream", |t| {
            t.contains("notifications/progress") && t.contains(": keep-alive\n\n")
        })
        .to_string();
    let (head, events) = got.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        header(head, "content-type"),
        Some("text/event-stream"),
        "{head}"
    );
    assert_eq!(header(head, "x-accel-buffering"), Some("no"), "{head}");
    let data = events
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let note: Value = serde_json::from_str(data).expect("JSON");
    assert_eq!(note["params"]["progressToken"], "mine", "{note}");
    assert_eq!(note["params"]["progress"], 1, "{note}");
    drop(post);
    let id = call_id(&rec, "sleep", 0).expect("recorded");
    let reason = wait_cancelled(&d, &rec, &id);
    assert!(reason.contains("disconnected"), "{reason}");

    // 2. Waiting for a JSON answer (no progress asked for): the client hangs up.
    let only_json = ("Accept", "application/json");
    let post = Raw::open(&d, "POST", &[json_ct, only_json, sid], &slow(11, None));
    let id = wait_until(
        "the second call to reach the server",
        || call_id(&rec, "sleep", 1),
        Option::is_some,
        |_| format!("{:?}", records(&rec)),
    )
    .expect("id");
    drop(post);
    let reason = wait_cancelled(&d, &rec, &id);
    assert!(reason.contains("disconnected"), "{reason}");

    // 3. The session ends while a call waits: the call is cancelled and its POST answered
    //    with an error naming the session.
    let mut post = Raw::open(&d, "POST", &[json_ct, only_json, sid], &slow(12, None));
    let id = wait_until(
        "the third call to reach the server",
        || call_id(&rec, "sleep", 2),
        Option::is_some,
        |_| format!("{:?}", records(&rec)),
    )
    .expect("id");
    let addr = d.http.expect("TCP listener");
    let bearer = d.bearer();
    let (status, _, _) = tcp(addr, "DELETE", &[("Authorization", &bearer), sid], "");
    assert_eq!(status, 200);
    let reason = wait_cancelled(&d, &rec, &id);
    assert!(reason.contains("session"), "{reason}");
    let got = post
        .until("the POST's answer", |t| {
            t.split_once("\r\n\r\n")
                .is_some_and(|(_, b)| b.contains('}'))
        })
        .to_string();
    let body = got
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let answer: Value = serde_json::from_str(body.trim()).expect("JSON");
    assert_eq!(answer["id"], 12, "{answer}");
    assert_eq!(answer["error"]["code"], -32001, "{answer}");

    // The three count as cancelled calls of the server.
    let raw = raw_exchange(
        &d.socket,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let (_, _, metrics) = split_response(&raw);
    assert!(
        metrics.contains("vsm_mcp_tool_calls_total{server=\"fx\",outcome=\"cancelled\"} 3"),
        "{metrics}"
    );
}

/// The GET stream: its events carry ids, it gets keep-alive comments, and a client that comes
/// back with `Last-Event-ID` first gets the events it missed; one naming an id the session
/// does not have starts afresh.
#[test]
fn the_get_stream_keeps_alive_and_replays_what_a_client_missed() {
    let d = Daemon::start_with(Setup {
        config: Some(format!("{QUICK_STOP}[gateway]\nkeepalive_ms = 1000\n")),
        ..Setup::default()
    });
    let script = fixture("mcp_fixture.py");
    let session = raw_session(&d);
    let sid = ("Mcp-Session-Id", session.as_str());
    let sse = ("Accept", "text/event-stream");
    let last_id = |text: &str| -> Option<u64> {
        text.lines()
            .rev()
            .filter_map(|l| l.strip_prefix("id: "))
            .find_map(|v| v.trim().parse().ok())
    };

    let mut stream = get_stream(&d, &[sse, sid]);
    register(&d, "one", &["python3", &script]);
    let got = stream
        .until("list_changed with an id, and a keep-alive", |t| {
            t.contains("notifications/tools/list_changed")
                && t.contains("id: ")
                && t.contains(": keep-alive\n\n")
        })
        .to_string();
    let seen = last_id(&got).expect("an event id");
    drop(stream);

    // Missed while away: the server that comes next.
    register(&d, "two", &["python3", &script]);
    wait_status(&d, "two", "active");
    let last = seen.to_string();
    let mut back = get_stream(&d, &[sse, sid, ("Last-Event-ID", &last)]);
    let events = back
        .until("the missed list_changed, replayed", |t| {
            t.contains("notifications/tools/list_changed")
        })
        .to_string();
    let first_id = events
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(first_id, Some(seen + 1), "{events}");
    drop(back);

    // An id this session never gave: nothing is replayed; the first thing is a keep-alive.
    let mut fresh = get_stream(&d, &[sse, sid, ("Last-Event-ID", "99999")]);
    let got = fresh
        .until("a keep-alive", |t| t.contains(": keep-alive\n\n"))
        .to_string();
    assert!(!got.contains("list_changed"), "{got}");
}

#[test]
fn typescript_sdk_client_reads_resources_and_gets_prompts_of_server_everything() {
    resources_and_prompts_through(|d| SdkClient::typescript(&url(d), &d.token));
}

#[test]
fn python_sdk_client_reads_resources_and_gets_prompts_of_server_everything() {
    resources_and_prompts_through(|d| SdkClient::python(&url(d), &d.token));
}

/// The same through `vsm-daemon mcp serve-stdio` (the Python SDK's stdio client).
#[test]
fn python_sdk_stdio_client_reads_resources_and_gets_prompts_through_serve_stdio() {
    resources_and_prompts_through(|d| {
        let mut command = Command::new(peers().join("venv-time/bin/python"));
        command
            .arg(fixture("gateway_client.py"))
            .arg("stdio")
            .arg(bin())
            .args(["mcp", "serve-stdio", "--socket"])
            .arg(&d.socket);
        SdkClient::spawn(command)
    });
}

fn field_of(items: &Value, field: &str) -> Vec<String> {
    items
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| t[field].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The scenario both SDK clients go through: server-everything offers resources, resource
/// templates and prompts; they are aggregated on `/mcp` when it comes (with `list_changed`),
/// read and got through the gateway (a templated URI routed to its server, prompts by
/// `SERVER__PROMPT`), refused clearly when unknown, and gone when it stops.
fn resources_and_prompts_through(client: fn(&Daemon) -> SdkClient) {
    let everything = peers().join("npm/node_modules/.bin/mcp-server-everything");
    let everything = everything.display().to_string();
    let d = Daemon::start_with(Setup {
        config: Some(QUICK_STOP.into()),
        ..Setup::default()
    });
    let mut client = client(&d);
    let hello = client.next("connect");
    assert_eq!(hello["connected"], true, "{hello}");
    let caps = &hello["capabilities"];
    assert_eq!(caps["resources"]["listChanged"], true, "{hello}");
    assert_eq!(caps["prompts"]["listChanged"], true, "{hello}");
    let none = client.send(json!({"op": "resources"}));
    assert_eq!(none["resources"], json!([]), "{none}");
    let none = client.send(json!({"op": "prompts"}));
    assert_eq!(none["prompts"], json!([]), "{none}");

    register(&d, "every", &[&everything]);
    wait_status(&d, "every", "active");
    // The client hears that resources and prompts came.
    let heard = client.send(json!({"op": "changes", "kind": "resources", "at_least": 1}));
    assert!(heard["changes"].as_u64() >= Some(1), "{heard}");
    let heard = client.send(json!({"op": "changes", "kind": "prompts", "at_least": 1}));
    assert!(heard["changes"].as_u64() >= Some(1), "{heard}");

    let architecture = "demo://resource/static/document/architecture.md";
    let listed = client.send(json!({"op": "resources"}));
    let uris = field_of(&listed["resources"], "uri");
    assert!(uris.contains(&architecture.to_string()), "{listed}");
    let mut sorted = uris.clone();
    sorted.sort();
    assert_eq!(uris, sorted, "in URI order");
    let templates = client.send(json!({"op": "templates"}));
    assert!(
        field_of(&templates["resourceTemplates"], "uriTemplate")
            .contains(&"demo://resource/dynamic/text/{resourceId}".to_string()),
        "{templates}"
    );
    let read = client.send(json!({"op": "read", "uri": architecture}));
    let contents = &read["result"]["contents"][0];
    assert_eq!(contents["uri"], architecture, "{read}");
    assert!(
        contents["text"]
            .as_str()
            .is_some_and(|t| t.contains("Architecture")),
        "{read}"
    );
    // A URI no server lists, routed by the template that matches it.
    let dynamic = "demo://resource/dynamic/text/3";
    let read = client.send(json!({"op": "read", "uri": dynamic}));
    assert_eq!(read["result"]["contents"][0]["uri"], dynamic, "{read}");
    let unknown = client.send(json!({"op": "read", "uri": "demo://nowhere"}));
    assert_eq!(unknown["code"], -32002, "{unknown}");

    let prompts = client.send(json!({"op": "prompts"}));
    let names = field_of(&prompts["prompts"], "name");
    for want in ["every__simple-prompt", "every__args-prompt"] {
        assert!(names.contains(&want.to_string()), "{want}: {prompts}");
    }
    let args = prompts["prompts"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "every__args-prompt"))
        .expect("args-prompt");
    assert_eq!(args["arguments"][0]["name"], "city", "{args}");
    let got = client.send(
        json!({"op": "prompt", "name": "every__args-prompt", "arguments": {"city": "Lisbon"}}),
    );
    let said = got["result"]["messages"][0]["content"]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(said.contains("Lisbon"), "{got}");
    let nope = client.send(json!({"op": "prompt", "name": "every__nope"}));
    assert_eq!(nope["code"], -32602, "{nope}");

    // The same lists and calls over REST.
    let (status, v) = d.http("GET", "/api/v1/mcp/servers/every/resources", None);
    assert_eq!(status, 200, "{v}");
    assert!(
        field_of(&v["data"]["resources"], "uri").contains(&architecture.to_string()),
        "{v}"
    );
    assert!(
        v["data"]["resource_templates"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "{v}"
    );
    let (status, v) = d.http("GET", "/api/v1/mcp/servers/every/prompts", None);
    assert_eq!(status, 200, "{v}");
    assert!(
        field_of(&v["data"]["prompts"], "name").contains(&"args-prompt".to_string()),
        "{v}"
    );
    let (status, v) = d.http(
        "POST",
        "/api/v1/mcp/servers/every/resources/read",
        Some(&json!({"uri": dynamic}).to_string()),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["result"]["contents"][0]["uri"], dynamic, "{v}");
    let (status, v) = d.http(
        "POST",
        "/api/v1/mcp/servers/every/prompts/get",
        Some(r#"{"name": "args-prompt", "arguments": {"city": 7}}"#),
    );
    assert_eq!(status, 400, "arguments are strings: {v}");

    // And on the CLI.
    let out = d.cli(&["mcp", "resources", "every"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(architecture), "{}", stdout(&out));
    assert!(stdout(&out).contains("(template)"), "{}", stdout(&out));
    let (code, v) = d.cli_json(&["mcp", "prompts", "every"]);
    assert_eq!(code, 0, "{v}");
    assert!(
        field_of(&v["prompts"], "name").contains(&"args-prompt".to_string()),
        "{v}"
    );
    let out = d.cli(&["mcp", "prompts", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = d.cli(&["mcp", "prompts", "nobody"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));

    // A tool that adds a resource: the server says resources/list_changed, the daemon lists
    // again, the client hears it, and the link the tool returned reads as it is. (Resources
    // and templates arrived in two listings: the client may have heard one or two changes.)
    let before = client.send(json!({"op": "changes", "kind": "resources", "at_least": 0}));
    let before = before["changes"].as_u64().expect("a count");
    let made = client.send(json!({"op": "call", "name": "every__gzip-file-as-resource",
        "arguments": {"name": "hello.txt.gz", "data": "data:text/plain;base64,aGVsbG8=",
                      "outputType": "resourceLink"}}));
    let link = made["result"]["content"][0]["uri"]
        .as_str()
        .unwrap_or_else(|| panic!("a resource link: {made}"))
        .to_string();
    let heard = client.send(json!({"op": "changes", "kind": "resources", "at_least": before + 1}));
    assert!(heard["changes"].as_u64() > Some(before), "{heard}");
    wait_until(
        "the new resource is listed",
        || client.send(json!({"op": "resources"})),
        |listed| field_of(&listed["resources"], "uri").contains(&link),
        |listed| format!("{link} not in {listed}"),
    );
    let read = client.send(json!({"op": "read", "uri": link}));
    assert_eq!(
        read["result"]["contents"][0]["mimeType"], "application/gzip",
        "{read}"
    );
    assert!(read["result"]["contents"][0]["blob"].is_string(), "{read}");

    // It stops: its resources and prompts go (the client hears it), and its prompt is
    // refused at once with the reason.
    let out = d.cli(&["mcp", "stop", "every"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    wait_status(&d, "every", "stopped");
    let heard = client.send(json!({"op": "changes", "kind": "prompts", "at_least": 2}));
    assert!(heard["changes"].as_u64() >= Some(2), "{heard}");
    let listed = client.send(json!({"op": "resources"}));
    assert_eq!(listed["resources"], json!([]), "{listed}");
    let refused = client.send(json!({"op": "prompt", "name": "every__simple-prompt"}));
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("'every' is not active")),
        "{refused}"
    );
    let unknown = client.send(json!({"op": "read", "uri": architecture}));
    assert_eq!(unknown["code"], -32002, "{unknown}");
    let closed = client.send(json!({"op": "close"}));
    assert_eq!(closed["closed"], true, "{closed}");
}

/// The daemon's own tools through a real client: `vsm__variety` (read-only, on by
/// default) answers the analysis; `vsm__acquire` changes state, so it is off by default and
/// refused with the key to change; allowed by configuration, it records a required
/// capability exactly as the REST operation does.
#[test]
fn the_daemons_own_variety_and_acquire_tools_through_a_client() {
    let d = Daemon::start_with(Setup::default());
    let mut client = SdkClient::typescript(&url(&d), &d.token);
    let hello = client.next("connect");
    assert_eq!(hello["connected"], true, "{hello}");
    let listed = client.send(json!({"op": "list"}));
    let all = names(&listed["tools"]);
    assert_eq!(
        all,
        ["vsm__list_servers", "vsm__status", "vsm__variety"],
        "{listed}"
    );
    let variety = &listed["tools"][2];
    assert_eq!(variety["annotations"]["readOnlyHint"], true, "{variety}");
    let analysis = wait_until(
        "an analysis through vsm__variety",
        || client.send(json!({"op": "call", "name": "vsm__variety", "arguments": {}})),
        |v| v["result"]["structuredContent"]["variety_ratio"].is_number(),
        |v| format!("last answer: {v}"),
    );
    assert!(
        text(&analysis["result"]).contains("variety_ratio"),
        "the text carries the document: {analysis}"
    );

    let refused = client.send(
        json!({"op": "call", "name": "vsm__acquire", "arguments": {"capability_type": "memory"}}),
    );
    assert_eq!(refused["code"], -32602, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("gateway.daemon_tools")),
        "{refused}"
    );
    let (_, caps) = d.http("GET", "/api/v1/capabilities", None);
    assert_eq!(
        caps["data"]["requests"],
        json!([]),
        "nothing recorded: {caps}"
    );

    let out = d.cli(&[
        "config",
        "set",
        "gateway.daemon_tools",
        r#"["status", "acquire"]"#,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let heard = client.send(json!({"op": "changes", "at_least": 1}));
    assert!(heard["changes"].as_u64() >= Some(1), "{heard}");
    let listed = client.send(json!({"op": "list"}));
    assert_eq!(
        names(&listed["tools"]),
        ["vsm__acquire", "vsm__status"],
        "{listed}"
    );
    let acquire = &listed["tools"][0];
    assert_eq!(acquire["annotations"]["readOnlyHint"], false, "{acquire}");
    assert_eq!(
        acquire["inputSchema"]["required"],
        json!(["capability_type"]),
        "{acquire}"
    );

    let missing = client.send(json!({"op": "call", "name": "vsm__acquire", "arguments": {}}));
    assert_eq!(missing["result"]["isError"], true, "{missing}");
    assert!(
        text(&missing["result"]).contains("capability_type"),
        "{missing}"
    );
    let bad = client.send(json!({"op": "call", "name": "vsm__acquire",
        "arguments": {"capability_type": "memory", "priority": "urgent"}}));
    assert_eq!(
        bad["result"]["isError"], true,
        "the room's own check: {bad}"
    );
    let done = client.send(json!({"op": "call", "name": "vsm__acquire",
        "arguments": {"capability_type": "memory", "priority": "high"}}));
    assert_eq!(
        done["result"]["structuredContent"]["recorded"], true,
        "{done}"
    );
    let again = client.send(json!({"op": "call", "name": "vsm__acquire",
        "arguments": {"capability_type": "memory"}}));
    assert_eq!(
        again["result"]["structuredContent"]["recorded"], false,
        "{again}"
    );
    let (status, caps) = d.http("GET", "/api/v1/capabilities", None);
    assert_eq!(status, 200, "{caps}");
    assert_eq!(
        caps["data"]["requests"][0]["capability"], "memory",
        "recorded: {caps}"
    );
    assert_eq!(caps["data"]["requests"][0]["priority"], "high", "{caps}");
    let variety = client.send(json!({"op": "call", "name": "vsm__variety", "arguments": {}}));
    assert!(
        variety["error"]
            .as_str()
            .is_some_and(|e| e.contains("gateway.daemon_tools")),
        "no longer allowed: {variety}"
    );
}

/// `vsm__discover`, allowed by configuration: the operator's catalog answers through a real
/// client exactly as `GET /api/v1/mcp/discover` does; a bad source is a tool error.
#[test]
fn vsm_discover_finds_the_servers_of_the_operators_catalog() {
    let dir = TempDir::new("gateway-discover");
    let catalog = dir.path().join("catalog.toml");
    std::fs::write(
        &catalog,
        "[[servers]]\npackage = \"pypi:mcp-server-time==2026.10.19\"\ntitle = \"Time\"\n\
         description = \"Current time and timezone conversions\"\ncapabilities = [\"time\"]\n",
    )
    .expect("catalog");
    let config = format!(
        "[gateway]\ndaemon_tools = [\"discover\"]\n\n[mcp_servers]\ncatalog_file = \"{}\"\n\
         discovery_cache_ttl_ms = 0\nauto_discovery_interval_ms = 0\n",
        catalog.display()
    );
    let d = Daemon::start_with(Setup {
        config: Some(config),
        ..Setup::default()
    });
    let mut client = SdkClient::python(&url(&d), &d.token);
    let hello = client.next("connect");
    assert_eq!(hello["connected"], true, "{hello}");
    let listed = client.send(json!({"op": "list"}));
    assert_eq!(names(&listed["tools"]), ["vsm__discover"], "{listed}");
    assert_eq!(
        listed["tools"][0]["annotations"]["openWorldHint"], true,
        "{listed}"
    );
    let found = client.send(json!({"op": "call", "name": "vsm__discover",
        "arguments": {"query": "time", "source": "catalog"}}));
    let ids: Vec<&str> = found["result"]["structuredContent"]["candidates"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["pypi:mcp-server-time"], "{found}");
    let (_, rest) = d.http(
        "GET",
        "/api/v1/mcp/discover?query=time&source=catalog",
        None,
    );
    assert_eq!(
        rest["data"]["candidates"][0]["id"], "pypi:mcp-server-time",
        "the same as REST: {rest}"
    );
    let bad = client
        .send(json!({"op": "call", "name": "vsm__discover", "arguments": {"source": "elsewhere"}}));
    assert_eq!(bad["result"]["isError"], true, "{bad}");
    assert!(text(&bad["result"]).contains("not one of"), "{bad}");
}

/// The levels of the log messages in a `logs` answer, in order.
fn levels(logs: &Value) -> Vec<String> {
    field_of(&logs["logs"], "level")
}

/// Logging, completions and resource subscriptions relayed to the official Python SDK
/// client, across two servers (the conformance fixture registered as `a` and `b`):
/// `logging/setLevel` sets each session's level and the servers get the most verbose one
/// wanted (the fixture filters by it and says which it has); log messages come with the
/// logger prefixed by the server's id, filtered per session, on the call's stream or the
/// session's GET stream; `completion/complete` goes to the server of the prompt or template
/// named; a subscription brings `notifications/resources/updated`, is held once upstream for
/// two sessions, and ends at the server when the last session holding it ends.
#[test]
fn python_sdk_client_gets_logs_completions_and_resource_updates_across_two_servers() {
    let d = Daemon::start_with(Setup {
        config: Some(QUICK_STOP.into()),
        ..Setup::default()
    });
    let script = fixture("conformance_server.py");
    register(&d, "a", &["python3", &script, "test", "alpha"]);
    register(&d, "b", &["python3", &script, "test", "beta"]);
    wait_status(&d, "a", "active");
    wait_status(&d, "b", "active");
    let mut one = SdkClient::python(&url(&d), &d.token);
    let hello = one.next("connect");
    assert_eq!(hello["connected"], true, "{hello}");
    let caps = &hello["capabilities"];
    assert!(caps["logging"].is_object(), "{hello}");
    assert!(caps["completions"].is_object(), "{hello}");
    assert_eq!(caps["resources"]["subscribe"], true, "{hello}");

    // Logging: session one wants warning and above; the server is asked for warning.
    let ok = one.send(json!({"op": "set_level", "level": "warning"}));
    assert_eq!(ok["ok"], true, "{ok}");
    let r = one.send(json!({"op": "call", "name": "a__log_each_level"}));
    assert_eq!(text(&r["result"]), "level warning", "{r}");
    let logs = one.send(json!({"op": "logs", "at_least": 5}));
    assert_eq!(
        levels(&logs),
        ["warning", "error", "critical", "alert", "emergency"],
        "{logs}"
    );
    assert_eq!(field_of(&logs["logs"], "logger")[0], "a__levels", "{logs}");
    assert_eq!(logs["logs"][0]["data"], "a warning message", "{logs}");

    // Session two wants debug: the server is asked for debug and sends all eight; two gets
    // them on its call, one gets the five it admits on its GET stream.
    let mut two = SdkClient::python(&url(&d), &d.token);
    assert_eq!(two.next("connect")["connected"], true);
    two.send(json!({"op": "set_level", "level": "debug"}));
    let r = two.send(json!({"op": "call", "name": "b__log_each_level"}));
    assert_eq!(text(&r["result"]), "level debug", "{r}");
    let logs = two.send(json!({"op": "logs", "at_least": 8}));
    assert_eq!(levels(&logs).len(), 8, "{logs}");
    assert_eq!(levels(&logs)[0], "debug", "{logs}");
    assert_eq!(field_of(&logs["logs"], "logger")[0], "b__levels", "{logs}");
    let logs = one.send(json!({"op": "logs", "at_least": 10}));
    let seen = levels(&logs);
    assert!(
        seen.iter()
            .all(|l| !["debug", "info", "notice"].contains(&l.as_str())),
        "session one wants warning and above only: {logs}"
    );
    assert_eq!(field_of(&logs["logs"], "logger")[5], "b__levels", "{logs}");

    // Completions: each server's prompt and template, with its own values.
    let arg = json!({"name": "arg1", "value": "te"});
    let c =
        one.send(json!({"op": "complete", "prompt": "a__prompt_with_arguments", "argument": arg}));
    let values = &c["result"]["completion"]["values"];
    assert_eq!(
        values,
        &json!(["test-alpha", "testing-alpha", "tested-alpha"]),
        "{c}"
    );
    let c =
        one.send(json!({"op": "complete", "prompt": "b__prompt_with_arguments", "argument": arg}));
    assert_eq!(c["result"]["completion"]["values"][0], "test-beta", "{c}");
    let c = one.send(json!({"op": "complete", "uri": "test://template/{id}/data",
                            "argument": {"name": "id", "value": "12"}}));
    assert_eq!(
        c["result"]["completion"]["values"],
        json!(["123-alpha", "124-alpha"]),
        "{c}"
    );
    let c = one.send(json!({"op": "complete", "prompt": "a__nope", "argument": arg}));
    assert_eq!(c["code"], -32602, "{c}");

    // Subscriptions: the URI both servers list routes to `a` (its id sorts first).
    let watched = "test://watched-resource";
    let subscribed_at_a = |c: &mut SdkClient| {
        let r = c.send(json!({"op": "call", "name": "a__subscriptions"}));
        text(&r["result"])
    };
    assert_eq!(subscribed_at_a(&mut one), "[]");
    assert_eq!(
        one.send(json!({"op": "subscribe", "uri": watched}))["ok"],
        true
    );
    assert_eq!(subscribed_at_a(&mut one), format!("[\"{watched}\"]"));
    one.send(json!({"op": "call", "name": "a__update_watched"}));
    let u = one.send(json!({"op": "updates", "uri": watched, "at_least": 1}));
    assert_eq!(u["updates"], 1, "{u}");
    assert_eq!(
        two.send(json!({"op": "subscribe", "uri": watched}))["ok"],
        true
    );
    // One leaves: the other still holds it, so the server's subscription stays.
    assert_eq!(
        one.send(json!({"op": "unsubscribe", "uri": watched}))["ok"],
        true
    );
    assert_eq!(subscribed_at_a(&mut one), format!("[\"{watched}\"]"));
    two.send(json!({"op": "call", "name": "a__update_watched"}));
    let u = two.send(json!({"op": "updates", "uri": watched, "at_least": 1}));
    assert_eq!(u["updates"], 1, "{u}");
    // A round trip later, session one (unsubscribed) has heard of the first change only.
    subscribed_at_a(&mut one);
    let u = one.send(json!({"op": "updates", "uri": watched, "at_least": 0}));
    assert_eq!(u["updates"], 1, "{u}");
    // The last session holding it ends: the server's subscription ends.
    let closed = two.send(json!({"op": "close"}));
    assert_eq!(closed["closed"], true, "{closed}");
    wait_until(
        "the server's subscription ended with the last session holding it",
        || subscribed_at_a(&mut one),
        |t| t == "[]",
        |t| format!("a__subscriptions: {t}\n{}", d.stderr()),
    );
    // The session wanting debug ended: the server is asked for warning again.
    let r = one.send(json!({"op": "call", "name": "a__log_each_level"}));
    assert_eq!(text(&r["result"]), "level warning", "{r}");
}

/// A `prompts/get` the client gives up on (the Python SDK client's cancel scope ends, and it
/// sends `notifications/cancelled`) is cancelled at the server as a call is: the server
/// receives `notifications/cancelled` for the request id the daemon used, and still serves.
#[test]
fn a_prompt_the_client_gives_up_on_is_cancelled_at_the_server() {
    let d = Daemon::start_with(Setup {
        config: Some(QUICK_STOP.into()),
        ..Setup::default()
    });
    let script = fixture("conformance_server.py");
    register(&d, "a", &["python3", &script, "test"]);
    wait_status(&d, "a", "active");
    let mut client = SdkClient::python(&url(&d), &d.token);
    assert_eq!(client.next("connect")["connected"], true);
    let cancelled = |c: &mut SdkClient| {
        let r = c.send(json!({"op": "call", "name": "a__cancelled"}));
        text(&r["result"])
    };
    assert_eq!(cancelled(&mut client), "[]");
    let gave_up = client.send(json!({"op": "give_up", "name": "a__slow_prompt",
                                     "arguments": {"ms": "30000"}, "after_ms": 300}));
    assert_eq!(gave_up["cancelled"], true, "{gave_up}");
    let ids = wait_until(
        "notifications/cancelled for the prompt at the server",
        || cancelled(&mut client),
        |t| t != "[]",
        |t| format!("{t}\n{}", d.stderr()),
    );
    let ids: Value = serde_json::from_str(&ids).expect("a JSON list");
    assert_eq!(ids.as_array().map(Vec::len), Some(1), "{ids}");
    let done = client.send(json!({"op": "prompt", "name": "a__slow_prompt",
                                  "arguments": {"ms": "10"}}));
    let said = &done["result"]["messages"][0]["content"]["text"];
    assert_eq!(said, "slow prompt done", "{done}");
}

/// A chatty server cannot flood the loop or a client: of 2,000 log messages sent at once, the
/// client gets the relay budget's share (a burst of 200 and 50 a second after it), every one
/// dropped is counted in the server's `notifications_dropped`, and the call is answered.
#[test]
fn a_flood_of_log_messages_is_cut_to_the_budget_and_counted() {
    let d = Daemon::start_with(Setup {
        config: Some(QUICK_STOP.into()),
        ..Setup::default()
    });
    let script = fixture("conformance_server.py");
    register(&d, "a", &["python3", &script, "test"]);
    wait_status(&d, "a", "active");
    let mut client = SdkClient::python(&url(&d), &d.token);
    assert_eq!(client.next("connect")["connected"], true);
    client.send(json!({"op": "set_level", "level": "info"}));
    let sent = 2000;
    let r = client.send(json!({"op": "call", "name": "a__log_flood", "arguments": {"n": sent}}));
    assert_eq!(text(&r["result"]), format!("sent {sent}"), "{r}");
    let (code, v) = d.http("GET", "/api/v1/mcp/servers/a", None);
    assert_eq!(code, 200, "{v}");
    let dropped = v["data"]["notifications_dropped"]
        .as_u64()
        .expect("a count");
    assert!(dropped > 0, "2,000 at once are beyond the budget: {v}");
    let relayed = sent - dropped;
    assert!(relayed >= 200, "at least the burst passes: {relayed}");
    // Everything relayed came on the call's stream before its answer.
    let logs = client.send(json!({"op": "logs", "at_least": relayed}));
    let got = logs["logs"].as_array().map_or(0, Vec::len) as u64;
    assert_eq!(got, relayed, "{dropped} dropped");
    assert_eq!(logs["logs"][0]["data"], "message 0");
    assert_eq!(logs["logs"][0]["logger"], "a__flood");
}

/// Log messages reach a client of `mcp serve-stdio` too (on the call's answer stream, which
/// the bridge relays message by message), filtered by the level it set.
#[test]
fn python_sdk_stdio_client_gets_log_messages_through_serve_stdio() {
    let d = Daemon::start_with(Setup {
        config: Some(QUICK_STOP.into()),
        ..Setup::default()
    });
    let script = fixture("conformance_server.py");
    register(&d, "a", &["python3", &script, "test"]);
    wait_status(&d, "a", "active");
    let mut command = Command::new(peers().join("venv-time/bin/python"));
    command
        .arg(fixture("gateway_client.py"))
        .arg("stdio")
        .arg(bin())
        .args(["mcp", "serve-stdio", "--socket"])
        .arg(&d.socket);
    let mut stdio = SdkClient::spawn(command);
    let hello = stdio.next("connect");
    assert!(hello["capabilities"]["logging"].is_object(), "{hello}");
    assert_eq!(
        stdio.send(json!({"op": "set_level", "level": "error"}))["ok"],
        true
    );
    let r = stdio.send(json!({"op": "call", "name": "a__log_each_level"}));
    assert_eq!(text(&r["result"]), "level error", "{r}");
    let logs = stdio.send(json!({"op": "logs", "at_least": 4}));
    assert_eq!(
        levels(&logs),
        ["error", "critical", "alert", "emergency"],
        "{logs}"
    );
}

/// A server's result reaches a `/mcp` client (both eras) and a REST client as the server wrote
/// it: unicode escapes, numbers no double holds (1e400, 12345678901234567890123), its key
/// order and spacing; a result over `mcp_servers.max_line_bytes` is still refused, bounded.
#[test]
fn a_result_reaches_clients_as_the_server_wrote_it_and_is_still_bounded() {
    const RESULT: &str = r#"{"structuredContent":{"z":1e400,"big":12345678901234567890123,"a":[-0.0,1E-7]},"content":[{"type":"text","text":"caf\u00e9 \ud83d\ude00 \"q\""}] , "isError" : false}"#;
    let script = fixture("mcp_fixture.py");
    let d = Daemon::start_with(Setup {
        config: Some(format!("{QUICK_STOP}max_line_bytes = 65536\n")),
        ..Setup::default()
    });
    register(&d, "fx", &["python3", &script, "--raw-tool"]);
    wait_status(&d, "fx", "active");
    let addr = d.http.expect("TCP listener");
    let bearer = d.bearer();
    let session = raw_session(&d);
    let in_session = session_headers(&bearer, &session);
    wait_until(
        "fx__raw on /mcp",
        || tcp(addr, "POST", &in_session, LIST),
        |(_, _, body)| body.contains("\"fx__raw\""),
        |r| format!("{r:?}"),
    );
    let call = |id: u64, result: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "fx__raw", "arguments": {"result": result}}})
    };

    // The 2025-11-25 era: the answer is written around the server's bytes.
    let (status, head, body) = tcp(addr, "POST", &in_session, &call(5, RESULT).to_string());
    assert_eq!(status, 200, "{head}{body}");
    assert_eq!(
        body,
        format!(r#"{{"id":5,"jsonrpc":"2.0","result":{RESULT}}}"#)
    );

    // The 2026-07-28 era: the server's members as they came, then resultType and our _meta.
    let mut modern = call(6, RESULT);
    modern["params"]["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                       "io.modelcontextprotocol/clientCapabilities": {}});
    let headers = crate::eras::modern_headers(&bearer, "2026-07-28", "tools/call", Some("fx__raw"));
    let (status, head, body) = tcp(addr, "POST", &headers, &modern.to_string());
    assert_eq!(status, 200, "{head}{body}");
    let members = RESULT.strip_suffix('}').expect("an object");
    let start = format!(
        r#"{{"id":6,"jsonrpc":"2.0","result":{members},"resultType":"complete","_meta":{{"io.modelcontextprotocol/serverInfo":{{"#
    );
    assert!(body.starts_with(&start), "{body}");
    // What follows the server's members is ours, and reads as JSON.
    let theirs = format!(r#"{{"id":6,"jsonrpc":"2.0","result":{members},"#).len();
    let ours = format!("{{{}", &body[theirs..body.len() - 1]);
    let ours: Value = serde_json::from_str(&ours).unwrap_or_else(|e| panic!("{e}: {ours}"));
    assert_eq!(ours.as_object().map(|o| o.len()), Some(2), "{ours}");
    assert_eq!(
        ours["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "vsm-daemon"
    );

    // REST: the envelope's data carries the server's result as it came.
    let rest = json!({"name": "raw", "arguments": {"result": RESULT}}).to_string();
    let raw = raw_exchange(
        &d.socket,
        format!(
            "POST /api/v1/mcp/servers/fx/tools/call HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{rest}",
            rest.len()
        )
        .as_bytes(),
    );
    let (status, head, body) = split_response(&raw);
    assert_eq!(status, 200, "{head}{body}");
    assert!(body.starts_with(r#"{"status":"success""#), "{body}");
    assert!(
        body.contains(&format!(
            r#","result":{RESULT},"server":"fx","tool":"raw"}}"#
        )),
        "{body}"
    );

    // A result whose line is over the limit: the call fails (the server is restarted, as for
    // any over-long line), and nothing of it reaches the client.
    let padding = "x".repeat(70_000);
    let big = format!(r#"{{"content":[{{"type":"text","text":"{padding}"}}]}}"#);
    let (status, head, body) = tcp(addr, "POST", &in_session, &call(7, &big).to_string());
    assert_eq!(status, 200, "{head}{body}");
    assert!(body.len() < 4096, "{} bytes", body.len());
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["id"], 7, "{v}");
    assert_eq!(v["result"]["isError"], true, "{v}");
}

/// The JSON-RPC message of a `/mcp` answer, whether plain JSON or an SSE `data:` line.
fn answer_of(body: &str) -> Value {
    serde_json::from_str(body)
        .ok()
        .or_else(|| {
            body.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v.get("result").is_some() || v.get("error").is_some())
        })
        .unwrap_or_else(|| panic!("no answer in {body:?}"))
}

/// The headers of a POST in a raw 2025-06-18 session: JSON, both answer types, the token.
fn session_headers<'a>(bearer: &'a str, session: &'a str) -> [(&'static str, &'a str); 5] {
    [
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
        ("Authorization", bearer),
        ("Mcp-Session-Id", session),
        ("MCP-Protocol-Version", "2025-06-18"),
    ]
}

/// A call's `arguments` go to the server as the client wrote them, as one line: pretty-
/// printed, multi-line arguments work in both eras (the fixture reads one JSON message per
/// line, so a line break left in would lose the call); what is not an object is refused with
/// the same message as before; a duplicated key keeps the last; what a JSON tree would refuse
/// (a number out of range, nesting too deep) is still refused as a parse error; the daemon's
/// own tools still read their arguments.
#[test]
fn arguments_reach_servers_as_one_line_and_are_checked_as_before() {
    let d = Daemon::start_with(Setup {
        config: Some("[gateway]\ndaemon_tools = [\"status\", \"acquire\"]\n".into()),
        ..Setup::default()
    });
    register(&d, "fx", &["python3", &fixture("mcp_fixture.py")]);
    wait_status(&d, "fx", "active");
    let addr = d.http.expect("TCP listener");
    let bearer = d.bearer();
    let session = raw_session(&d);
    let base = session_headers(&bearer, &session);
    let post = |body: &str| {
        let (status, head, body) = tcp(addr, "POST", &base, body);
        assert_eq!(status, 200, "{head}{body}");
        answer_of(&body)
    };
    wait_until(
        "fx__echo on /mcp",
        || post(LIST),
        |v| names(&v["result"]["tools"]).contains(&"fx__echo".to_string()),
        |v| format!("last list: {v}"),
    );
    let message = "two\nlines, \"quoted\",  and \\ spaces";
    let call = |arguments: Value| {
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
               "params": {"name": "fx__echo", "arguments": arguments}})
    };
    let pretty = serde_json::to_string_pretty(&call(json!({"message": message}))).expect("json");
    assert!(pretty.lines().count() > 5, "{pretty}");
    let echoed = post(&pretty);
    assert_eq!(text(&echoed["result"]), message, "{echoed}");
    // With CR LF line breaks and tabs, too.
    let crlf = pretty.replace('\n', "\r\n\t");
    let echoed = post(&crlf);
    assert_eq!(text(&echoed["result"]), message, "{echoed}");

    for not_object in [json!([1]), json!("s"), json!(3), json!(true)] {
        let refused = post(&call(not_object).to_string());
        assert_eq!(refused["error"]["code"], -32602, "{refused}");
        assert_eq!(
            refused["error"]["message"], "tools/call params.arguments must be an object",
            "{refused}"
        );
    }
    let twice = r#"{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"arguments":{"message":"first"},"name":"fx__echo","arguments":{"message":"last"}}}"#;
    assert_eq!(text(&post(twice)["result"]), "last");
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    for odd in [
        r#"{"message":"x","n":1e400}"#.to_string(),
        format!(r#"{{"message":"x","n":{deep}}}"#),
    ] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{{"name":"fx__echo","arguments":{odd}}}}}"#
        );
        let expected = serde_json::from_str::<Value>(&body).expect_err("not a Value");
        let (status, _, answer) = tcp(addr, "POST", &base, &body);
        assert_eq!(status, 400, "{answer}");
        let refused = answer_of(&answer);
        assert_eq!(refused["error"]["code"], -32700, "{refused}");
        assert_eq!(
            refused["error"]["message"],
            format!("the body is not JSON: {expected}"),
            "{refused}"
        );
    }
    // An exponent a tree takes is taken.
    let fine = r#"{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"fx__echo","arguments":{"message":"e","n":1.5e3}}}"#;
    assert_eq!(text(&post(fine)["result"]), "e");

    // The daemon's own tool reads its (multi-line) arguments.
    let own = serde_json::to_string_pretty(&json!({"jsonrpc": "2.0", "id": 13,
        "method": "tools/call", "params": {"name": "vsm__acquire",
        "arguments": {"capability_type": 5}}}))
    .expect("json");
    let said = post(&own);
    assert_eq!(said["result"]["isError"], true, "{said}");
    assert_eq!(
        text(&said["result"]),
        "capability_type must be a string",
        "{said}"
    );

    // The 2026-07-28 era takes the same raw arguments.
    let modern = serde_json::to_string_pretty(&json!({"jsonrpc": "2.0", "id": 14,
        "method": "tools/call", "params": {"name": "fx__echo",
        "arguments": {"message": message},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}}}))
    .expect("json");
    let headers =
        crate::eras::modern_headers(&bearer, "2026-07-28", "tools/call", Some("fx__echo"));
    let (status, head, body) = tcp(addr, "POST", &headers, &modern);
    assert_eq!(status, 200, "{head}{body}");
    let echoed = answer_of(&body);
    assert_eq!(text(&echoed["result"]), message, "{echoed}");
}
