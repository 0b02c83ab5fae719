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

/// The TypeScript SDK client, driven one JSON command per line (`gateway_client.cjs`).
struct SdkClient {
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
    fn python(url: &str, token: &str) -> SdkClient {
        let mut command = Command::new(peers().join("venv-time/bin/python"));
        command
            .arg(fixture("gateway_client.py"))
            .arg(url)
            .arg(token);
        SdkClient::spawn(command)
    }

    fn spawn(mut command: Command) -> SdkClient {
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

    fn next(&mut self, what: &str) -> Value {
        let line = self
            .lines
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("the SDK client said nothing about {what}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: {e}: {line}"))
    }

    fn send(&mut self, command: Value) -> Value {
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
        ["vsm__list_servers", "vsm__status"],
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
        ["vsm.list_servers", "vsm.status"],
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
}
