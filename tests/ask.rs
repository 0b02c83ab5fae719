//! Server-to-client requests through `/mcp` (`gateway.client_requests`), with the real binary:
//! the conformance fixture's tools ask their client for sampling and elicitation; the
//! official Python SDK client (with handlers) answers them through the gateway, refuses one,
//! never answers one (the call's deadline answers the server); a call from the REST API gets
//! a fast refusal; a raw client sees the gateway's own request id, another session's answer
//! is not taken, and the session's end answers the server; turned off, servers are offered
//! no client capabilities. A 2026-07-28 server's `input_required` reaches the same client as
//! requests of its own era, and its answers reach the server in the call asked again.

use crate::gateway::SdkClient;
use crate::util::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Registers the conformance fixture as `cf`, with calls ending after `timeout_ms`; waits
/// until it is active.
fn register_fixture(d: &Daemon, timeout_ms: u64) {
    let spec = json!({"id": "cf", "command": "python3",
                      "args": [fixture("conformance_server.py"), "test"],
                      "call_timeout_ms": timeout_ms});
    let (status, v) = d.http("POST", "/api/v1/mcp/servers", Some(&spec.to_string()));
    assert!(status < 300, "register: {status} {v}");
    wait_active(d);
}

fn wait_active(d: &Daemon) {
    wait_until(
        "cf active",
        || d.http("GET", "/api/v1/mcp/servers/cf", None),
        |(_, v)| v["data"]["status"] == "active",
        |v| format!("last seen: {v:?}\n{}", d.stderr()),
    );
}

/// A tool call through the REST API: the whole answer.
fn rest_call(d: &Daemon, tool: &str, arguments: Value) -> Value {
    let body = json!({"name": tool, "arguments": arguments}).to_string();
    d.http("POST", "/api/v1/mcp/servers/cf/tools/call", Some(&body))
        .1
}

/// What the fixture last heard back from a request of its own (`last_answer`).
fn last_answer(d: &Daemon) -> Value {
    let r = rest_call(d, "last_answer", json!({}));
    let text = r["data"]["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("last_answer: {r}"));
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// The Python SDK client with sampling and elicitation handlers (`ask_client.py`), driven
/// like the gateway tests' SDK clients, one JSON command a line.
struct AskClient;

impl AskClient {
    /// Over HTTP, with the token.
    fn start(d: &Daemon) -> SdkClient {
        AskClient::declaring(d, "sampling,elicitation")
    }

    /// Over HTTP, with handlers (so capabilities) for `declares` only.
    fn declaring(d: &Daemon, declares: &str) -> SdkClient {
        let url = format!("http://{}/mcp", d.http.expect("TCP listener"));
        AskClient::spawn(&[url.as_str(), d.token.as_str()], declares)
    }

    /// Through `vsm-daemon mcp serve-stdio` (the control socket).
    fn stdio(d: &Daemon) -> SdkClient {
        let socket = d.socket.display().to_string();
        let args = ["stdio", bin(), "mcp", "serve-stdio", "--socket", &socket];
        AskClient::spawn(&args, "sampling,elicitation")
    }

    fn spawn(args: &[&str], declares: &str) -> SdkClient {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-peers/venv-time/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run .ci/install-test-peers",
            python.display()
        );
        let mut command = Command::new(python);
        command
            .arg(fixture("ask_client.py"))
            .args(args)
            .env("ASK_CLIENT_DECLARES", declares);
        let mut c = SdkClient::spawn(command);
        let hello = c.next("connect");
        assert_eq!(hello["connected"], true, "{hello}");
        c
    }
}

fn text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_servers_sampling_and_elicitation_reach_the_mcp_client_whose_call_asked() {
    let d = Daemon::start();
    register_fixture(&d, 3000);
    let mut client = AskClient::start(&d);

    // Sampling: the client's handler sees the server's request and its answer comes back.
    let r = client
        .send(json!({"op": "call", "name": "cf__sampling", "arguments": {"prompt": "hi there"}}));
    assert_eq!(text(&r["result"]), "LLM response: echo: hi there", "{r}");
    assert_eq!(r["asked"][0]["method"], "sampling/createMessage", "{r}");
    let params = &r["asked"][0]["params"];
    assert_eq!(params["maxTokens"], 100, "{r}");
    assert_eq!(params["messages"][0]["content"]["text"], "hi there", "{r}");
    // The server got the client's result under its own request id.
    let last = last_answer(&d);
    assert!(
        last["id"].as_str().is_some_and(|id| id.starts_with('s')),
        "{last}"
    );
    assert_eq!(last["result"]["model"], "test-model", "{last}");

    // Elicitation (form mode).
    let r = client.send(
        json!({"op": "call", "name": "cf__elicitation", "arguments": {"message": "who are you?"}}),
    );
    let said = text(&r["result"]);
    assert!(said.starts_with("User response: action=accept"), "{r}");
    assert!(said.contains("ada@example.org"), "{r}");
    assert_eq!(r["asked"][0]["params"]["message"], "who are you?", "{r}");
    assert_eq!(
        r["asked"][0]["params"]["requestedSchema"]["required"],
        json!(["username", "email"]),
        "{r}"
    );

    // URL mode: the client (which declared it) is asked, and the server's completion
    // notification for that elicitation reaches it too.
    let r = client.send(json!({"op": "call", "name": "cf__elicitation_url"}));
    let said = text(&r["result"]);
    assert!(said.ends_with("action=accept"), "{r}");
    let asked = &r["asked"][0]["params"];
    assert_eq!(asked["mode"], "url", "{r}");
    assert_eq!(asked["url"], "https://example.org/sign-in", "{r}");
    let eid = asked["elicitationId"].clone();
    let note = client.send(json!({"op": "note", "method": "notifications/elicitation/complete"}));
    assert_eq!(note["note"]["elicitationId"], eid, "{note}");

    // The client's JSON-RPC error reaches the server with its code.
    client.send(json!({"op": "mode", "sampling": "error"}));
    let r =
        client.send(json!({"op": "call", "name": "cf__sampling", "arguments": {"prompt": "x"}}));
    assert_eq!(r["result"]["isError"], true, "{r}");
    let said = text(&r["result"]);
    assert!(
        said.contains("the user refused to sample") && said.contains("-32001"),
        "{r}"
    );

    // A call from the REST API cannot be asked: the server hears so at once (not at the
    // call's deadline: the tool's error says why, not "did not answer within").
    let r = rest_call(&d, "sampling", json!({"prompt": "from rest"}));
    let shown = r.to_string();
    assert!(shown.contains("sampling failed"), "{r}");
    assert!(shown.contains("REST API, CLI or WebSocket"), "{r}");
    assert!(shown.contains("-32600"), "{r}");

    // A client that never answers: the call's deadline ends the call and answers the
    // server's request with an error.
    client.send(json!({"op": "mode", "sampling": "never"}));
    let r =
        client.send(json!({"op": "call", "name": "cf__sampling", "arguments": {"prompt": "y"}}));
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(text(&r["result"]).contains("did not answer within"), "{r}");
    assert_eq!(r["asked"][0]["method"], "sampling/createMessage", "{r}");
    let last = last_answer(&d);
    assert_eq!(last["error"]["code"], -32600, "{last}");
    let why = last["error"]["message"].as_str().unwrap_or_default();
    assert!(why.contains("ended before its client answered"), "{last}");

    // Turned off: a server started then is offered no client capabilities, and its request
    // is refused as one it should not have made.
    let out = d.cli(&["config", "set", "gateway.client_requests", "false"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (status, v) = d.http("POST", "/api/v1/mcp/servers/cf/restart", None);
    assert!(status < 300, "restart: {status} {v}");
    wait_active(&d);
    client.send(json!({"op": "mode", "sampling": "answer"}));
    let r =
        client.send(json!({"op": "call", "name": "cf__sampling", "arguments": {"prompt": "z"}}));
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(text(&r["result"]).contains("-32601"), "{r}");
    assert_eq!(r["asked"], json!([]), "{r}");
}

/// A raw HTTP connection to `/mcp`.
struct Raw {
    stream: TcpStream,
    got: String,
}

impl Raw {
    fn open(d: &Daemon, method: &str, headers: &[(&str, &str)], body: &str) -> Raw {
        let addr = d.http.expect("TCP listener");
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut head = format!(
            "{method} /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\nContent-Length: {}\r\n",
            d.bearer(),
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).expect("write");
        stream.write_all(body.as_bytes()).expect("write");
        Raw {
            stream,
            got: String::new(),
        }
    }

    /// Reads until `done` says so (panics after PATIENCE).
    fn until(&mut self, what: &str, done: impl Fn(&str) -> bool) -> &str {
        let start = std::time::Instant::now();
        let mut buf = [0u8; 4096];
        while !done(&self.got) {
            assert!(start.elapsed() < PATIENCE, "{what}: got {:?}", self.got);
            match self.stream.read(&mut buf) {
                Ok(0) => assert!(done(&self.got), "{what}: closed with {:?}", self.got),
                Ok(n) => self.got.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(_) => {}
            }
        }
        &self.got
    }

    /// Whether the peer closed the connection (reads until it does).
    fn closed(&mut self) -> bool {
        let start = std::time::Instant::now();
        let mut buf = [0u8; 4096];
        while start.elapsed() < PATIENCE {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => self.got.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => {}
            }
        }
        false
    }
}

const JSON: (&str, &str) = ("Content-Type", "application/json");
const ACCEPT: (&str, &str) = ("Accept", "application/json, text/event-stream");

/// A raw session whose client declared sampling and elicitation; its id.
fn raw_session(d: &Daemon) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                      "params": {"protocolVersion": "2025-11-25",
                                 "capabilities": {"sampling": {}, "elicitation": {}},
                                 "clientInfo": {"name": "raw", "version": "0"}}});
    let mut r = Raw::open(d, "POST", &[JSON, ACCEPT], &init.to_string());
    let got = r.until("initialize", |t| t.contains("\"result\""));
    let id = got
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("mcp-session-id")
                .then(|| v.trim().to_string())
        })
        .expect("Mcp-Session-Id");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    let sid = ("Mcp-Session-Id", id.as_str());
    Raw::open(d, "POST", &[JSON, ACCEPT, sid], &note).until("202", |t| t.contains("202"));
    id
}

/// The JSON-RPC messages of the SSE `data:` lines read so far.
fn events(got: &str) -> Vec<Value> {
    got.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

#[test]
fn a_relayed_request_has_the_gateways_id_takes_only_its_sessions_answer_and_ends_with_the_session()
{
    let d = Daemon::start();
    register_fixture(&d, 60_000);
    let session = raw_session(&d);
    let other = raw_session(&d);
    let sid = ("Mcp-Session-Id", session.as_str());
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                      "params": {"name": "cf__elicitation", "arguments": {"message": "m"}}});
    let mut post = Raw::open(&d, "POST", &[JSON, ACCEPT, sid], &call.to_string());
    // The call's answer became a stream, and the request came on it with the gateway's id.
    let got = post.until("the elicitation request on the call's stream", |t| {
        t.contains("elicitation/create")
    });
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        got.to_ascii_lowercase().contains("text/event-stream"),
        "{got}"
    );
    let asked = events(got)
        .into_iter()
        .find(|m| m["method"] == "elicitation/create")
        .expect("the request");
    assert!(
        asked["id"].is_u64(),
        "minted by the gateway, not the server's \"s1\": {asked}"
    );
    assert_eq!(asked["params"]["message"], "m", "{asked}");

    // Another session's answer with that id is accepted as a message but not taken.
    let answer = json!({"jsonrpc": "2.0", "id": asked["id"],
                        "result": {"action": "accept", "content": {"username": "intruder"}}});
    let osid = ("Mcp-Session-Id", other.as_str());
    let mut r = Raw::open(&d, "POST", &[JSON, ACCEPT, osid], &answer.to_string());
    assert!(r
        .until("202", |t| t.contains("\r\n\r\n"))
        .starts_with("HTTP/1.1 202"));
    let (_, listed) = d.http("GET", "/api/v1/mcp/servers/cf", None);
    assert_eq!(listed["data"]["status"], "active");
    assert!(
        !post.got.contains("\"id\":5"),
        "the call is still waiting: {}",
        post.got
    );

    // The session ends: the call's stream closes, and the server's request is answered
    // with an error (the intruder's answer never reached it).
    let mut del = Raw::open(&d, "DELETE", &[sid], "");
    assert!(del
        .until("DELETE", |t| t.contains("\r\n\r\n"))
        .starts_with("HTTP/1.1 200"));
    assert!(post.closed(), "the call's stream closes: {}", post.got);
    let last = wait_until(
        "the server's request answered",
        || last_answer(&d),
        |v| !v.is_null(),
        |v| format!("{v}"),
    );
    assert_eq!(last["error"]["code"], -32600, "{last}");
    assert!(!last.to_string().contains("intruder"), "{last}");
}

/// The stdio bridge carries the request to a client that only spawns stdio servers, and its
/// answer back.
#[test]
fn sampling_and_elicitation_reach_a_client_through_serve_stdio() {
    let d = Daemon::start();
    register_fixture(&d, 60_000);
    let mut client = AskClient::stdio(&d);
    let r = client
        .send(json!({"op": "call", "name": "cf__sampling", "arguments": {"prompt": "via stdio"}}));
    assert_eq!(text(&r["result"]), "LLM response: echo: via stdio", "{r}");
    let r = client.send(json!({"op": "call", "name": "cf__elicitation_sep1034_defaults"}));
    let said = text(&r["result"]);
    assert!(
        said.starts_with("Elicitation completed: action=accept"),
        "{r}"
    );
    let schema = &r["asked"][0]["params"]["requestedSchema"]["properties"];
    assert_eq!(schema["age"]["default"], 30, "{r}");
    assert_eq!(schema["status"]["default"], "active", "{r}");
}

/// Registers the fixture in its 2026-07-28 mode as `m`, recording to `rec`; waits until it
/// is active.
fn register_modern(d: &Daemon, rec: &Path) {
    let spec = json!({"id": "m", "command": "python3",
                      "args": [fixture("mcp_fixture.py"), "--modern", "--record", rec]});
    let (status, v) = d.http("POST", "/api/v1/mcp/servers", Some(&spec.to_string()));
    assert!(status < 300, "register: {status} {v}");
    wait_until(
        "m active",
        || d.http("GET", "/api/v1/mcp/servers/m", None),
        |(_, v)| v["data"]["status"] == "active",
        |v| format!("last seen: {v:?}\n{}", d.stderr()),
    );
}

/// The fixture's records of `event`.
fn recorded(rec: &Path, event: &str) -> Vec<Value> {
    std::fs::read_to_string(rec)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == event)
        .collect()
}

/// The methods a call's client was asked, in order.
fn asked(r: &Value) -> Vec<String> {
    r["asked"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["method"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_modern_servers_input_required_reaches_a_session_era_client_as_its_own_requests() {
    let d = Daemon::start();
    let rec = d.dir.path().join("modern.rec");
    register_modern(&d, &rec);
    let mut client = AskClient::start(&d);

    // One round, an elicitation and a sampling request: the client's handlers answer both,
    // and the tool's real result comes back, built from those answers.
    let r =
        client.send(json!({"op": "call", "name": "m__interview", "arguments": {"sample": true}}));
    assert_eq!(
        text(&r["result"]),
        "hello ada; the model said: echo: a poem, please (after 1 round(s))",
        "{r}"
    );
    let mut methods = asked(&r);
    methods.sort();
    assert_eq!(
        methods,
        ["elicitation/create", "sampling/createMessage"],
        "{r}"
    );
    let question = r["asked"]
        .as_array()
        .and_then(|a| a.iter().find(|q| q["method"] == "elicitation/create"))
        .expect("the elicitation");
    assert_eq!(
        question["params"]["message"], "Who are you? (round 1)",
        "{r}"
    );
    // The server was told what the client can answer from the first request, and got its
    // answers in inputResponses with its requestState echoed.
    let calls: Vec<Value> = recorded(&rec, "request")
        .into_iter()
        .filter(|e| e["method"] == "tools/call")
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for c in &calls {
        let caps = &c["capabilities"];
        assert!(
            caps["sampling"].is_object() && caps["elicitation"]["form"].is_object(),
            "{c}"
        );
        assert!(caps.get("roots").is_none(), "roots cannot be relayed: {c}");
    }
    let rounds = recorded(&rec, "interview");
    assert_eq!(rounds.len(), 2, "{rounds:?}");
    assert_eq!(rounds[1]["state"], "interview-1");
    assert_eq!(rounds[1]["responses"]["who"]["action"], "accept");
    assert_eq!(rounds[1]["responses"]["who"]["content"]["username"], "ada");
    assert_eq!(
        rounds[1]["responses"]["poem"]["content"]["text"],
        "echo: a poem, please"
    );
    assert_eq!(rounds[1]["responses"]["poem"]["model"], "test-model");

    // Several rounds: each is asked in turn.
    let r = client.send(json!({"op": "call", "name": "m__interview", "arguments": {"rounds": 3}}));
    assert_eq!(text(&r["result"]), "hello ada (after 3 round(s))", "{r}");
    let messages: Vec<&Value> = r["asked"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| &a["params"]["message"])
        .collect();
    assert_eq!(
        messages,
        [
            &json!("Who are you? (round 1)"),
            &json!("Who are you? (round 2)"),
            &json!("Who are you? (round 3)")
        ],
        "{r}"
    );

    // A server that keeps asking is stopped after the bound of rounds.
    let r =
        client.send(json!({"op": "call", "name": "m__interview", "arguments": {"rounds": 100}}));
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(text(&r["result"]).contains("after 8 rounds"), "{r}");
    assert_eq!(asked(&r).len(), 8, "{r}");

    // roots/list cannot be relayed: the call ends saying so, and nothing of the round is asked.
    let r =
        client.send(json!({"op": "call", "name": "m__interview", "arguments": {"roots": true}}));
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(
        text(&r["result"]).contains("roots: roots/list cannot be answered"),
        "{r}"
    );
    assert_eq!(r["asked"], json!([]), "{r}");

    // The stdio bridge carries the requests and answers too.
    let mut stdio = AskClient::stdio(&d);
    let r =
        stdio.send(json!({"op": "call", "name": "m__interview", "arguments": {"sample": true}}));
    assert_eq!(
        text(&r["result"]),
        "hello ada; the model said: echo: a poem, please (after 1 round(s))",
        "{r}"
    );
}

#[test]
fn a_session_era_client_without_the_capability_is_told_what_was_missing() {
    let d = Daemon::start();
    let rec = d.dir.path().join("modern.rec");
    register_modern(&d, &rec);
    // Sampling only: the server is told so, asks for an elicitation anyway (the fixture
    // does), and the client gets a tool error naming the capability, not the request.
    let mut client = AskClient::declaring(&d, "sampling");
    let r = client.send(json!({"op": "call", "name": "m__interview"}));
    assert_eq!(r["result"]["isError"], true, "{r}");
    let said = text(&r["result"]);
    assert!(
        said.contains(
            "who: the /mcp client did not declare the elicitation (form mode) capability"
        ),
        "{r}"
    );
    assert_eq!(r["asked"], json!([]), "{r}");
    let call = recorded(&rec, "request")
        .into_iter()
        .find(|e| e["method"] == "tools/call")
        .expect("the call");
    assert_eq!(call["capabilities"], json!({"sampling": {}}), "{call}");
    // A client that declared nothing is offered nothing.
    let mut bare = AskClient::declaring(&d, "");
    let r = bare.send(json!({"op": "call", "name": "m__interview"}));
    assert!(
        text(&r["result"]).contains("did not declare the elicitation (form mode) capability"),
        "{r}"
    );
    let last = recorded(&rec, "request")
        .into_iter()
        .rfind(|e| e["method"] == "tools/call")
        .expect("the call");
    assert_eq!(last["capabilities"], json!({}), "{last}");
}

/// A call collecting its client's input (a 2026-07-28 server answered `input_required`) that
/// the client cancels or walks away from holds nothing: more such calls of each kind than a
/// session may have in flight (64) each reach the server and get their question, so none of
/// them is still counted; a cancelled one is ended on its stream with `notifications/cancelled` for the
/// question; and the server is never asked again (no retry with `inputResponses`).
#[test]
fn calls_collecting_input_that_their_client_cancels_or_leaves_hold_nothing() {
    let d = Daemon::start();
    let rec = d.dir.path().join("modern.rec");
    register_modern(&d, &rec);
    let session = raw_session(&d);
    let sid = ("Mcp-Session-Id", session.as_str());
    // 65 calls walked away from, then 65 cancelled: either kind left behind would make the
    // 65th of its kind refused ("64 calls of this session are in flight").
    let calls = 130u64;
    for id in 1..=calls {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                          "params": {"name": "m__interview", "arguments": {}}});
        let mut post = Raw::open(&d, "POST", &[JSON, ACCEPT, sid], &call.to_string());
        let got = post.until("the question on the call's stream", |t| {
            t.contains("elicitation/create") || t.contains("\"error\"")
        });
        let question = events(got)
            .into_iter()
            .find(|m| m["method"] == "elicitation/create")
            .unwrap_or_else(|| panic!("call {id} was not asked: {got}"));
        if id <= calls / 2 {
            // Walks away: the connection of the call's POST closes.
            drop(post);
            continue;
        }
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                            "params": {"requestId": id, "reason": "changed my mind"}});
        let mut note = Raw::open(&d, "POST", &[JSON, ACCEPT, sid], &cancel.to_string());
        assert!(note
            .until("202", |t| t.contains("\r\n\r\n"))
            .starts_with("HTTP/1.1 202"));
        assert!(post.closed(), "call {id}'s stream ends: {}", post.got);
        let told = events(&post.got).into_iter().any(|m| {
            m["method"] == "notifications/cancelled" && m["params"]["requestId"] == question["id"]
        });
        assert!(told, "call {id}: the question is withdrawn: {}", post.got);
        let answered = events(&post.got)
            .into_iter()
            .any(|m| m["id"] == id && (m.get("result").is_some() || m.get("error").is_some()));
        assert!(!answered, "a cancelled call gets no response: {}", post.got);
    }
    let asked: Vec<Value> = recorded(&rec, "request")
        .into_iter()
        .filter(|e| e["method"] == "tools/call")
        .collect();
    assert_eq!(asked.len() as u64, calls, "one request per call, no retry");
    let rounds = recorded(&rec, "interview");
    assert!(
        rounds
            .iter()
            .all(|r| r["state"].is_null() && r["responses"] == json!({})),
        "only first rounds: {rounds:?}"
    );
}

/// Until the fixture's prompt and secret resource are offered on `/mcp`, `op` (a `prompt` or
/// `read` of `client`) is retried: its answer.
fn once_offered(client: &mut SdkClient, op: Value) -> Value {
    wait_until(
        "offered on /mcp",
        || client.send(op.clone()),
        |r| r.get("result").is_some() || !r["asked"].as_array().is_none_or(Vec::is_empty),
        |r| format!("last: {r}"),
    )
}

/// A 2026-07-28 server's `input_required` on `prompts/get` and `resources/read` reaches a
/// session-era client as a tool call's does: its elicitation on the request's stream, the
/// answer back to the server in the request asked again (`inputResponses`, `requestState`
/// echoed, the capabilities each time), one result for the client, also through
/// `mcp serve-stdio`. A client that declared no elicitation gets an error naming it, and is
/// asked nothing.
#[test]
fn a_modern_servers_prompt_and_resource_ask_a_session_era_client_as_a_call_does() {
    let d = Daemon::start();
    let rec = d.dir.path().join("modern.rec");
    register_modern(&d, &rec);
    let mut client = AskClient::start(&d);

    let r = once_offered(
        &mut client,
        json!({"op": "prompt", "name": "m__greeting", "arguments": {"style": "kindly"}}),
    );
    assert_eq!(
        r["result"]["messages"][0]["content"]["text"], "Greet ada kindly.",
        "{r}"
    );
    assert_eq!(asked(&r), ["elicitation/create"], "{r}");
    assert_eq!(
        r["asked"][0]["params"]["message"], "Whom shall I greet?",
        "{r}"
    );
    let r = once_offered(
        &mut client,
        json!({"op": "read", "uri": "fixture://secret"}),
    );
    assert_eq!(
        r["result"]["contents"][0]["text"], "the secret, for ada",
        "{r}"
    );
    assert_eq!(asked(&r), ["elicitation/create"], "{r}");
    assert_eq!(
        r["asked"][0]["params"]["message"], "Who is reading the secret?",
        "{r}"
    );
    // The server got the client's capabilities both times, and its answer in the second
    // request with its requestState echoed.
    for (event, state) in [("prompt", "greeting-1"), ("secret", "secret-1")] {
        let seen = recorded(&rec, event);
        assert_eq!(seen.len(), 2, "{event}: {seen:?}");
        assert_eq!(seen[0]["state"], Value::Null, "{event}: {seen:?}");
        assert_eq!(seen[1]["state"], state, "{event}: {seen:?}");
        let answer = &seen[1]["responses"]["name"];
        assert_eq!(answer["action"], "accept", "{event}: {seen:?}");
        assert_eq!(answer["content"]["username"], "ada", "{event}: {seen:?}");
        for s in &seen {
            let caps = &s["capabilities"];
            assert!(
                caps["sampling"].is_object() && caps["elicitation"]["form"].is_object(),
                "{event}: {s}"
            );
        }
    }

    // The stdio bridge carries them too.
    let mut stdio = AskClient::stdio(&d);
    let r = stdio.send(json!({"op": "prompt", "name": "m__greeting"}));
    assert_eq!(
        r["result"]["messages"][0]["content"]["text"], "Greet ada warmly.",
        "{r}"
    );
    assert_eq!(asked(&r), ["elicitation/create"], "{r}");

    // Sampling only: an error naming the capability, nothing asked; the server was told.
    let mut sampler = AskClient::declaring(&d, "sampling");
    for op in [
        json!({"op": "prompt", "name": "m__greeting"}),
        json!({"op": "read", "uri": "fixture://secret"}),
    ] {
        let r = sampler.send(op);
        let error = r["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(
                "name: the /mcp client did not declare the elicitation (form mode) capability"
            ),
            "{r}"
        );
        assert_eq!(r["asked"], json!([]), "{r}");
    }
    let last = recorded(&rec, "secret").pop().expect("recorded");
    assert_eq!(last["capabilities"], json!({"sampling": {}}), "{last}");
}
