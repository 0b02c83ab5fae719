//! `/mcp` in front of 2026-07-28 (modern) servers, through the real binary with the official
//! Python SDK client in its session era: a resource subscription rides the server's
//! `subscriptions/listen` (it has no `resources/subscribe`), also after the server's restart;
//! its log messages come with the logger prefixed; a server's `-32042` (URL elicitation
//! required) reaches the client as that JSON-RPC error; and forwarded requests other than
//! tool calls are counted in `vsm_mcp_requests_total`.

use crate::gateway::SdkClient;
use crate::util::*;
use serde_json::{json, Value};
use std::path::Path;

const WATCHED: &str = "fixture://watched";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Fast health rounds (they also send a listen held back too long), quick stops.
fn daemon() -> Daemon {
    Daemon::start_with(Setup {
        config: Some(
            "[monitoring]\nhealth_check_interval_ms = 300\n\n[mcp_servers]\nstop_grace_ms = 100\nterm_timeout_ms = 300\n"
                .into(),
        ),
        ..Setup::default()
    })
}

/// `mcp register ID -- python3 FIXTURE FLAGS...` through the CLI.
fn register(d: &Daemon, id: &str, script: &str, flags: &[&str]) {
    let script = fixture(script);
    let mut args = vec!["--json", "mcp", "register", id, "--", "python3", &script];
    args.extend_from_slice(flags);
    let out = d.cli(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "register {id}: {}",
        stderr(&out)
    );
}

/// Waits until server `id` is active (with a process other than `not_pid`, when given); its
/// details.
fn wait_active(d: &Daemon, id: &str, not_pid: Option<&Value>) -> Value {
    wait_until(
        &format!("{id} active"),
        || d.http("GET", &format!("/api/v1/mcp/servers/{id}"), None).1["data"].clone(),
        |v| v["status"] == "active" && not_pid.is_none_or(|p| v["pid"] != *p),
        |v| format!("{v:#}\n{}", d.stderr()),
    )
}

fn client(d: &Daemon) -> SdkClient {
    let url = format!("http://{}/mcp", d.http.expect("TCP listener"));
    let mut c = SdkClient::python(&url, &d.token);
    let hello = c.next("connect");
    assert_eq!(hello["connected"], true, "{hello}");
    c
}

fn text(r: &Value) -> String {
    r["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A session-era client subscribes to a modern server's resource: the daemon's listen to the
/// server carries the URI (the fixture records what it acknowledged), and the server's
/// update on it reaches the client as `notifications/resources/updated`. After the server's
/// restart the new run's listen carries it again; unsubscribing takes it out.
#[test]
fn a_modern_servers_resource_updates_reach_a_session_client_over_its_listen() {
    let d = daemon();
    let dir = TempDir::new("upstream-listen");
    let rec = dir.path().join("rec");
    let rec_s = rec.display().to_string();
    register(
        &d,
        "fx",
        "mcp_fixture.py",
        &["--modern", "--record", &rec_s],
    );
    let v = wait_active(&d, "fx", None);
    assert_eq!(v["era"], "modern", "{v:#}");
    let mut c = client(&d);
    let touch =
        |c: &mut SdkClient| text(&c.send(json!({"op": "call", "name": "fx__touch_resource"})));
    assert_eq!(touch(&mut c), "touched 0");

    let ok = c.send(json!({"op": "subscribe", "uri": WATCHED}));
    assert_eq!(ok["ok"], true, "{ok}");
    // The listen carrying the URI was acknowledged by the server before the next call.
    wait_until(
        "a listen with the resource acknowledged",
        || records(&rec),
        |r| {
            r.iter().any(|e| {
                e["event"] == "listen"
                    && e["notifications"]["resourceSubscriptions"] == json!([WATCHED])
            })
        },
        |r| format!("{r:#?}\n{}", d.stderr()),
    );
    assert_eq!(touch(&mut c), "touched 1");
    let u = c.send(json!({"op": "updates", "uri": WATCHED, "at_least": 1}));
    assert_eq!(u["updates"], 1, "{u}");
    // The listen it replaced (tool list changes only) was cancelled at the server.
    assert!(
        records(&rec).iter().any(|e| e["event"] == "cancelled"),
        "{:#?}",
        records(&rec)
    );

    // A new run: its first listen carries the subscription again.
    let pid = wait_active(&d, "fx", None)["pid"].clone();
    let out = d.cli(&["mcp", "restart", "fx"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    wait_active(&d, "fx", Some(&pid));
    wait_until(
        "the new run's listen carries the subscription",
        || touch(&mut c),
        |t| t == "touched 1",
        |t| format!("{t}\n{}", d.stderr()),
    );
    let u = c.send(json!({"op": "updates", "uri": WATCHED, "at_least": 2}));
    assert_eq!(u["updates"], 2, "{u}");

    // Unsubscribed: the server's listen no longer carries it.
    let ok = c.send(json!({"op": "unsubscribe", "uri": WATCHED}));
    assert_eq!(ok["ok"], true, "{ok}");
    wait_until(
        "the listen without the resource",
        || touch(&mut c),
        |t| t == "touched 0",
        |t| format!("{t}\n{}", d.stderr()),
    );
}

/// A session-era client that set `logging/setLevel` gets a modern server's log messages (the
/// level goes in the `_meta` of the call, the era's way) on its call, with the logger
/// prefixed by the server's id; without a level the server sends none.
#[test]
fn a_modern_servers_log_messages_reach_a_session_client_at_its_level() {
    let d = daemon();
    register(&d, "fx", "mcp_fixture.py", &["--modern"]);
    wait_active(&d, "fx", None);
    let mut c = client(&d);
    let r = c.send(json!({"op": "call", "name": "fx__log_levels"}));
    assert_eq!(text(&r), "logged 0", "no level asked: {r}");
    let ok = c.send(json!({"op": "set_level", "level": "error"}));
    assert_eq!(ok["ok"], true, "{ok}");
    let r = c.send(json!({"op": "call", "name": "fx__log_levels"}));
    assert_eq!(text(&r), "logged 4", "{r}");
    let logs = c.send(json!({"op": "logs", "at_least": 4}));
    let seen: Vec<(&str, &str)> = logs["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .map(|l| {
            (
                l["level"].as_str().unwrap_or_default(),
                l["logger"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("error", "fx__levels"),
            ("critical", "fx__levels"),
            ("alert", "fx__levels"),
            ("emergency", "fx__levels")
        ],
        "{logs}"
    );
    assert_eq!(logs["logs"][0]["data"], "a error message", "{logs}");
}

/// A server's `-32042` refusing a tool call reaches the client as that JSON-RPC error with
/// its elicitations, which the SDK reads as the URLs to open (not as a tool error's text).
#[test]
fn url_elicitation_required_reaches_the_client_as_its_json_rpc_error() {
    let d = daemon();
    register(&d, "fx", "mcp_fixture.py", &["--url-tool"]);
    wait_active(&d, "fx", None);
    let mut c = client(&d);
    let r = c.send(json!({"op": "call", "name": "fx__open_url"}));
    assert_eq!(r["code"], -32042, "{r}");
    assert_eq!(
        r["urls"],
        json!(["https://example.com/connect?elicitation=url-1"]),
        "{r}"
    );
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|m| m.contains("requires more information")),
        "{r}"
    );
}

/// `prompts/get`, `resources/read` and `completion/complete` forwarded for a client are
/// counted per server, method and outcome in `vsm_mcp_requests_total`, not as tool calls.
#[test]
fn forwarded_requests_are_counted_by_method_in_the_metrics() {
    let d = daemon();
    register(&d, "fx", "mcp_fixture.py", &["--modern"]);
    register(&d, "a", "conformance_server.py", &["test"]);
    wait_active(&d, "fx", None);
    wait_active(&d, "a", None);
    let mut c = client(&d);
    let r = c.send(json!({"op": "read", "uri": WATCHED}));
    assert_eq!(r["result"]["contents"][0]["text"], "watched", "{r}");
    let r = c.send(json!({"op": "prompt", "name": "a__simple_prompt"}));
    assert!(r["result"]["messages"].is_array(), "{r}");
    let r = c.send(
        json!({"op": "complete", "prompt": "a__prompt_with_arguments",
                          "argument": {"name": "arg1", "value": "te"}}),
    );
    assert!(r["result"]["completion"]["values"].is_array(), "{r}");
    let text = crate::prometheus::scrape(&d);
    for (server, method) in [
        ("fx", "resources/read"),
        ("a", "prompts/get"),
        ("a", "completion/complete"),
    ] {
        let sample = format!(
            "vsm_mcp_requests_total{{server=\"{server}\",method=\"{method}\",outcome=\"ok\"}} 1\n"
        );
        assert!(text.contains(&sample), "{sample}in\n{text}");
    }
    assert!(
        !text.contains("vsm_mcp_tool_calls_total{server=\"a\""),
        "no tool call was made: {text}"
    );
}
