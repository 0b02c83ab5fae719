//! Alerts from real conditions, through the real binary: the host's memory use against a
//! threshold moved with `config set`, a fixture server that cannot start, a slow tool; the
//! events over WebSocket and SSE, `GET /api/v1/alerts`, ack, the `restart_server` action, and
//! the `alerts` and `metrics` commands.

use crate::util::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Fast cycles so conditions are seen within the tests' patience.
const FAST: &str =
    "[monitoring]\nperformance_check_interval_ms = 200\nhealth_check_interval_ms = 200\n";

fn fixture() -> String {
    format!(
        "{}/tests/fixtures/mcp_fixture.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn log_tail(d: &Daemon) -> String {
    let log = d.stderr();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn set(d: &Daemon, key: &str, value: &str) {
    let out = d.cli(&["config", "set", key, value]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "config set {key}: {}",
        stderr(&out)
    );
}

fn alerts(d: &Daemon, query: &str) -> Vec<Value> {
    let (code, v) = d.http("GET", &format!("/api/v1/alerts{query}"), None);
    assert_eq!(code, 200, "{v}");
    v["data"]["alerts"].as_array().cloned().unwrap_or_default()
}

/// Events of `kind` in the history.
fn events(d: &Daemon, kind: &str) -> Vec<Value> {
    let (code, v) = d.http(
        "GET",
        &format!("/api/v1/events?type={kind}&limit=1000"),
        None,
    );
    assert_eq!(code, 200, "{v}");
    v["data"]["events"].as_array().cloned().unwrap_or_default()
}

fn wait_event(d: &Daemon, kind: &str, rule: &str) -> Value {
    wait_until(
        &format!("a {kind} event for {rule}"),
        || events(d, kind),
        |evs| evs.iter().any(|e| e["data"]["rule"] == rule),
        |evs| format!("seen: {evs:#?}\n--- daemon log ---\n{}", log_tail(d)),
    )
    .into_iter()
    .find(|e| e["data"]["rule"] == rule)
    .unwrap_or(Value::Null)
}

/// An SSE stream of the event history over TCP; lines come through a channel.
fn sse(d: &Daemon, query: &str) -> std::sync::mpsc::Receiver<String> {
    let addr = d.http.expect("tcp");
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET /api/v1/events?{query} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nAccept: text/event-stream\r\n\r\n",
        d.bearer()
    )
    .expect("send");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads SSE lines until an `event: KIND` whose data names `rule`; returns the data.
fn sse_until(rx: &std::sync::mpsc::Receiver<String>, kind: &str, rule: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    let mut current = String::new();
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            panic!("no SSE {kind} for {rule}; seen {seen:#?}");
        };
        if let Some(e) = line.strip_prefix("event: ") {
            current = e.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            // The SSE data is the event (type, data, ...), or its data alone.
            let body = if v["data"].is_object() {
                v["data"].clone()
            } else {
                v
            };
            if current == kind && body["rule"] == rule {
                return body;
            }
            seen.push(format!("{current}: {}", body["rule"]));
        }
    }
}

type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

fn ws(d: &Daemon, channels: &[&str]) -> Ws {
    let addr = d.http.expect("tcp");
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/ws/monitor?token={}", d.token))
        .expect("ws connect");
    let _hello = ws.read().expect("hello");
    let cmd = serde_json::json!({"id": 1, "command": "subscribe", "channels": channels});
    ws.send(tungstenite::Message::text(cmd.to_string()))
        .expect("subscribe");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    }
    ws
}

/// Reads WS messages until one of `kind` whose data names `rule`.
fn ws_until(ws: &mut Ws, kind: &str, rule: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let Ok(msg) = ws.read() else { break };
        let Ok(text) = msg.to_text() else { continue };
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        if v["type"] == kind && v["data"]["rule"] == rule {
            return v;
        }
        seen.push(v["type"].clone());
    }
    panic!("no WS {kind} for {rule}; seen {seen:?}");
}

const MEMORY: &str = "performance:memory_usage_percent";

#[test]
fn a_memory_alert_is_raised_acked_and_resolved_with_its_events() {
    let d = Daemon::start_with(Setup {
        config: Some(FAST.into()),
        ..Setup::default()
    });
    let mut socket = ws(&d, &["performance"]);
    let stream = sse(&d, "channel=performance&follow=true");
    assert!(alerts(&d, "").is_empty());

    // The host surely uses more than 1 % of its memory: a real condition.
    set(
        &d,
        "monitoring.alert_thresholds.memory_usage_max_percent",
        "1",
    );
    let raised = ws_until(&mut socket, "performance_alert", MEMORY);
    let data = &raised["data"];
    assert_eq!(data["metric"], "memory_usage_percent");
    assert_eq!(data["threshold"], 1.0);
    assert!(
        data["current_value"].as_f64().is_some_and(|v| v > 1.0),
        "{data}"
    );
    assert!(["rising", "falling", "stable"].contains(&data["trend"].as_str().unwrap_or("")));
    assert_eq!(
        (data["state"].as_str(), data["severity"].as_str()),
        (Some("firing"), Some("warning"))
    );
    assert!(
        data["count"].as_u64().is_some_and(|c| c >= 2),
        "two bad cycles raise: {data}"
    );
    let id = data["id"].as_str().expect("id").to_string();
    let over_sse = sse_until(&stream, "performance_alert", MEMORY);
    assert_eq!(over_sse["id"], id.as_str());

    // Listed as firing; by the CLI too.
    let firing = alerts(&d, "?state=firing");
    assert_eq!(firing.len(), 1, "{firing:#?}");
    assert_eq!(firing[0]["id"], id.as_str());
    let (code, listed) = d.cli_json(&["alerts"]);
    assert_eq!(code, 0);
    assert_eq!(listed["alerts"][0]["rule"], MEMORY);
    let out = d.cli(&["alerts"]);
    assert!(stdout(&out).contains(MEMORY), "{}", stdout(&out));
    let metrics = {
        let raw = raw_exchange(
            &d.socket,
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        split_response(&raw).2
    };
    assert!(
        metrics.contains("vsm_alerts_firing{severity=\"warning\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vsm_host_network_receive_bytes_total{interface=\"lo\"}"),
        "{metrics}"
    );

    // Ack over TCP needs the token, JSON and an allowed origin like every change.
    let addr = d.http.expect("tcp");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://{addr}/api/v1/alerts/{id}/ack");
    let resp = agent
        .post(&url)
        .header("Content-Type", "application/json")
        .send("");
    assert_eq!(resp.expect("exchange").status().as_u16(), 401);
    let mut resp = agent
        .post(&url)
        .header("Authorization", d.bearer())
        .header("Content-Type", "application/json")
        .send("")
        .expect("exchange");
    assert_eq!(resp.status().as_u16(), 200);
    let acked: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap_or_default())
        .unwrap_or(Value::Null);
    assert_eq!(acked["data"]["alert"]["acked"], true, "{acked}");
    let (code, v) = d.http("POST", "/api/v1/alerts/a-999/ack", None);
    assert_eq!(code, 404);
    assert_eq!(v["errors"][0]["code"], "alert_not_found");
    let out = d.cli(&["alerts", "ack", "a-999"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // Back to a limit the host is under: resolved, with its events.
    set(
        &d,
        "monitoring.alert_thresholds.memory_usage_max_percent",
        "100",
    );
    let resolved = ws_until(&mut socket, "performance_alert_resolved", MEMORY);
    assert_eq!(resolved["data"]["id"], id.as_str());
    assert_eq!(resolved["data"]["state"], "resolved");
    assert_eq!(resolved["data"]["acked"], true);
    sse_until(&stream, "performance_alert_resolved", MEMORY);
    assert!(alerts(&d, "?state=firing").is_empty());
    assert_eq!(alerts(&d, "?state=resolved").len(), 1);
    let (code, listed) = d.cli_json(&["alerts", "--all"]);
    assert_eq!(code, 0);
    assert_eq!(listed["alerts"][0]["state"], "resolved");
    let (code, v) = d.http("GET", "/api/v1/alerts?state=maybe", None);
    assert_eq!(
        (code, v["errors"][0]["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
}

#[test]
fn a_server_that_cannot_start_raises_a_health_alert_until_stopped() {
    let d = Daemon::start_with(Setup {
        config: Some(FAST.into()),
        ..Setup::default()
    });
    let script = fixture();
    let out = d.cli(&[
        "mcp",
        "register",
        "broken",
        "--backoff-initial-ms",
        "60000",
        "--",
        "python3",
        &script,
        "--exit-at-start",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let raised = wait_event(&d, "health_alert", "health:server:broken");
    assert_eq!(raised["channel"], "health", "{raised}");
    assert_eq!(raised["data"]["metric"], "server_up");
    assert_eq!(raised["data"]["current_value"], 0.0);
    let (code, health) = d.cli_json(&["metrics", "--type", "health"]);
    assert_eq!(code, 0);
    assert!(
        health["alerts"]["firing"].as_u64().is_some_and(|n| n >= 1),
        "{health}"
    );
    // Stopped by the operator: not bad; two good cycles resolve it.
    let out = d.cli(&["mcp", "stop", "broken"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let resolved = wait_event(&d, "health_alert_resolved", "health:server:broken");
    assert_eq!(resolved["data"]["id"], raised["data"]["id"]);
}

#[test]
fn a_restart_server_action_restarts_a_real_server() {
    let config = format!("{FAST}alert_actions = [\"log\", \"restart_server:victim\"]\n");
    let d = Daemon::start_with(Setup {
        config: Some(config),
        ..Setup::default()
    });
    let script = fixture();
    let out = d.cli(&["mcp", "register", "victim", "--", "python3", &script]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let pid_of = |d: &Daemon| {
        let (_, v) = d.http("GET", "/api/v1/mcp/servers/victim", None);
        (
            v["data"]["status"].as_str().map(String::from),
            v["data"]["pid"].as_u64(),
        )
    };
    let first = wait_until(
        "victim active",
        || pid_of(&d),
        |(s, p)| s.as_deref() == Some("active") && p.is_some(),
        |v| format!("{v:?}\n{}", log_tail(&d)),
    )
    .1;
    set(
        &d,
        "monitoring.alert_thresholds.memory_usage_max_percent",
        "1",
    );
    wait_event(&d, "performance_alert", MEMORY);
    wait_until(
        "victim restarted by the alert's action",
        || pid_of(&d),
        |(s, p)| s.as_deref() == Some("active") && p.is_some() && *p != first,
        |v| format!("{v:?}\n{}", log_tail(&d)),
    );
    assert!(
        d.stderr().contains("restarting MCP server victim"),
        "{}",
        log_tail(&d)
    );
}

const SLOW_RULE: &str = "performance:response_time:server:slow";

/// Calls of the slow tool, back to back, until dropped.
struct Caller(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl Drop for Caller {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(h) = self.1.take() {
            let _ = h.join();
        }
    }
}

/// A daemon with a 50 ms response-time limit and the fixture `slow`, called with 150 ms
/// sleeps back to back until the response-time alert is raised; returns the daemon, the
/// alert and the caller (the calls go on until it is dropped).
fn slow_alert() -> (Arc<Daemon>, Value, Caller) {
    let config = format!("{FAST}\n[monitoring.alert_thresholds]\nresponse_time_max_ms = 50\n");
    let d = Arc::new(Daemon::start_with(Setup {
        config: Some(config),
        ..Setup::default()
    }));
    let script = fixture();
    let out = d.cli(&["mcp", "register", "slow", "--", "python3", &script]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    wait_until(
        "slow active",
        || d.http("GET", "/api/v1/mcp/servers/slow", None).1["data"]["status"].clone(),
        |s| s == "active",
        |s| format!("{s}"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let caller = {
        let (d, stop) = (Arc::clone(&d), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = d.cli(&["mcp", "call", "slow", "sleep", r#"{"ms": 150, "steps": 1}"#]);
            }
        })
    };
    let caller = Caller(stop, Some(caller));
    let raised = wait_event(&d, "performance_alert", SLOW_RULE);
    assert_eq!(raised["data"]["metric"], "response_time_ms");
    assert_eq!(raised["data"]["threshold"], 50.0);
    assert!(
        raised["data"]["current_value"]
            .as_f64()
            .is_some_and(|v| v > 50.0),
        "{raised}"
    );
    (d, raised, caller)
}

#[test]
fn a_slow_tool_raises_a_response_time_alert_that_clears_when_calls_stop() {
    let (d, _, caller) = slow_alert();
    drop(caller);
    let (code, perf) = d.cli_json(&["metrics", "--type", "performance"]);
    assert_eq!(code, 0);
    assert!(
        perf["last_cycle"]["windows"]["servers"]["slow"].is_object(),
        "{perf}"
    );
    assert!(perf["last_cycle"]["host"]["network"].is_array(), "{perf}");
    // No calls: the windows are idle, the alert clears.
    wait_event(&d, "performance_alert_resolved", SLOW_RULE);
}

#[test]
fn an_unregistered_servers_alerts_resolve() {
    // The calls go on (they keep the windows slow while the server exists): only the
    // server's going away can resolve the alert. Unregistering drops its telemetry, and its
    // rules with it.
    let (d, raised, caller) = slow_alert();
    let out = d.cli(&["mcp", "unregister", "slow"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let resolved = wait_event(&d, "performance_alert_resolved", SLOW_RULE);
    drop(caller);
    assert_eq!(resolved["data"]["id"], raised["data"]["id"]);
    assert!(
        resolved["data"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no longer measured")),
        "{resolved}"
    );
}

#[test]
fn metrics_and_alerts_commands_answer_with_their_exit_codes() {
    let d = Daemon::start_with(Setup {
        config: Some(FAST.into()),
        ..Setup::default()
    });
    let (code, all) = d.cli_json(&["metrics"]);
    assert_eq!(code, 0);
    assert!(
        all["performance"]["process"]["rss_bytes"]
            .as_u64()
            .is_some(),
        "{all}"
    );
    wait_until(
        "a performance cycle",
        || d.cli_json(&["metrics", "--type", "performance"]).1,
        |p| p["last_cycle"]["host"]["memory_used_percent"].is_number(),
        |p| format!("{p}"),
    );
    let out = d.cli(&["metrics", "--type", "health"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("alerts.firing = 0"),
        "{}",
        stdout(&out)
    );
    let out = d.cli(&["metrics", "--type", "variety"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("variety_ratio"), "{}", stdout(&out));
    let out = d.cli(&["metrics", "--type", "cpu"]);
    assert_eq!(out.status.code(), Some(2));
    let out = d.cli(&["alerts", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("alerts [--all]"));
    let out = d.cli(&["alerts"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("no firing alerts"),
        "{}",
        stdout(&out)
    );
    let gone = TempDir::new("nodaemon");
    let out = std::process::Command::new(bin())
        .args(["--socket"])
        .arg(gone.path().join("none.sock"))
        .args(["alerts"])
        .output()
        .expect("cli");
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn cycle_intervals_reload_live() {
    // Default intervals: the first performance cycle would come after 30 s, and an alert
    // needs two: only the reloaded 200 ms interval raises it within the patience.
    let d = Daemon::start();
    set(
        &d,
        "monitoring.alert_thresholds.memory_usage_max_percent",
        "1",
    );
    set(&d, "monitoring.performance_check_interval_ms", "200");
    wait_event(&d, "performance_alert", MEMORY);
    let (_, health) = d.cli_json(&["metrics", "--type", "health"]);
    assert_eq!(
        health["alerts"]["intervals_ms"]["performance"], 200,
        "{health}"
    );
    assert_eq!(
        health["alerts"]["intervals_ms"]["health"], 15000,
        "{health}"
    );
}

/// `checks run NAME`: the run's exit code (0 up, 1 down).
fn run_check(d: &Daemon, name: &str) -> i32 {
    let (code, v) = d.cli_json(&["checks", "run", name]);
    assert!(code == 0 || code == 1, "checks run {name}: {code} {v}");
    code
}

/// The JSON body of a webhook delivery (head and body as the receiver hands them over).
fn hook_body(raw: &str) -> Value {
    let at = raw.find("\r\n\r\n").expect("a head") + 4;
    serde_json::from_str(&raw[at..]).expect("a JSON body")
}

#[test]
fn a_declared_check_goes_down_alerts_runs_its_actions_and_resolves() {
    // The whole chain through the binary: a `[[checks]]` check with its own severity,
    // hysteresis and actions → the health alert over WS → the webhook and the exec action with
    // the alert's fields → the resolution, delivered too. Runs are asked for one by one
    // (`checks run`), so the counting of cycles is exact: nothing depends on timing.
    let dir = TempDir::new("alerts-chain");
    let target = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = target.local_addr().expect("addr").port();
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hook_port = free.local_addr().expect("addr").port();
    drop(free);
    let got = crate::checks::receiver(hook_port);
    let env_dir = dir.path().join("env");
    std::fs::create_dir_all(&env_dir).expect("env dir");
    let config = format!(
        "[monitoring]\nsecurity_check_interval_ms = 500\n\n\
         [[checks]]\nname = \"db\"\nkind = \"tcp\"\ntarget = \"127.0.0.1:{port}\"\n\
         every_ms = 3600000\ntimeout_ms = 5000\nseverity = \"warning\"\n\
         failures_before_alert = 3\nsuccesses_before_clear = 2\n\
         actions = [\"log\", \"webhook:ops\", \"exec:notify\"]\n\n\
         [actions.ops]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/alert\"\ntimeout_ms = 2000\n\n\
         [actions.notify]\nkind = \"exec\"\n\
         argv = [\"/bin/sh\", \"-c\", \"env | grep ^VSM_ > \\\"$0/$VSM_ALERT_TRANSITION\\\"\", \"{}\"]\n\
         timeout_ms = 5000\n",
        env_dir.display()
    );
    let d = Daemon::start_in(
        dir,
        Setup {
            config: Some(config),
            ..Setup::default()
        },
    )
    .expect("daemon starts");
    let mut socket = ws(&d, &["health", "security"]);
    // The first scheduled run (soon after start) reads up; wait for it so it does not land
    // between the counted runs below.
    wait_until(
        "the first scheduled run",
        || d.cli_json(&["checks"]).1,
        |v| v["checks"][0]["runs"].as_u64() >= Some(1) && v["checks"][0]["running"] == false,
        |v| v.to_string(),
    );
    assert_eq!(run_check(&d, "db"), 0);
    drop(target);
    // Two bad cycles: below `failures_before_alert = 3`, nothing fires.
    for _ in 0..2 {
        assert_eq!(run_check(&d, "db"), 1);
    }
    assert!(
        alerts(&d, "?state=firing").is_empty(),
        "{:?}",
        alerts(&d, "")
    );
    assert_eq!(run_check(&d, "db"), 1);
    let fired = ws_until(&mut socket, "health_alert", "check:db");
    let a = &fired["data"];
    assert_eq!(a["severity"], "warning", "the check's severity: {a}");
    assert_eq!(a["count"], 3, "raised on the third bad cycle: {a}");
    assert_eq!(a["metric"], "tcp_connect", "{a}");
    assert_eq!(
        a["actions"],
        serde_json::json!(["log", "webhook:ops", "exec:notify"])
    );
    let id = a["id"].as_str().expect("an id").to_string();
    let hook = hook_body(&got.recv_timeout(PATIENCE).expect("the raise is delivered"));
    assert_eq!(hook["transition"], "fired", "{hook}");
    assert_eq!(hook["alert"]["id"], id.as_str(), "{hook}");
    assert_eq!(hook["alert"]["rule"], "check:db", "{hook}");
    assert_eq!(hook["alert"]["severity"], "warning", "{hook}");
    let seen = wait_until(
        "the exec action's environment for the raise",
        || std::fs::read_to_string(env_dir.join("fired")).unwrap_or_default(),
        |s| s.contains("VSM_ALERT_RULE="),
        |s| s.clone(),
    );
    assert!(seen.contains(&format!("VSM_ALERT_ID={id}\n")), "{seen}");
    assert!(seen.contains("VSM_ALERT_RULE=check:db\n"), "{seen}");
    assert!(seen.contains("VSM_ALERT_SEVERITY=warning\n"), "{seen}");
    assert!(seen.contains("VSM_ACTION=exec:notify\n"), "{seen}");

    // Back up: one good cycle is below `successes_before_clear = 2`.
    let target = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind again");
    assert_eq!(run_check(&d, "db"), 0);
    let firing = alerts(&d, "?state=firing");
    assert_eq!(
        firing.len(),
        1,
        "still firing after one good cycle: {firing:?}"
    );
    assert_eq!(run_check(&d, "db"), 0);
    let resolved = ws_until(&mut socket, "health_alert_resolved", "check:db");
    assert_eq!(resolved["data"]["id"], id.as_str());
    assert_eq!(resolved["data"]["state"], "resolved");
    let hook = hook_body(
        &got.recv_timeout(PATIENCE)
            .expect("the resolution is delivered"),
    );
    assert_eq!(hook["transition"], "resolved", "{hook}");
    assert_eq!(hook["alert"]["id"], id.as_str(), "{hook}");
    let seen = wait_until(
        "the exec action's environment for the resolution",
        || std::fs::read_to_string(env_dir.join("resolved")).unwrap_or_default(),
        |s| s.contains("VSM_ALERT_STATE="),
        |s| s.clone(),
    );
    assert!(seen.contains("VSM_ALERT_STATE=resolved\n"), "{seen}");
    drop(target);

    // A security signal: repeated bad tokens from one peer raise a security alert.
    let addr = d.http.expect("tcp address");
    for _ in 0..12 {
        let mut s = TcpStream::connect(addr).expect("connect");
        write!(
            s,
            "GET /api/v1/status HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer not-the-token-0123456789\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut answer);
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    let raised = ws_until(
        &mut socket,
        "security_alert",
        "security:auth_failures:127.0.0.1",
    );
    assert_eq!(raised["data"]["family"], "security", "{raised}");
    assert!(
        raised["data"]["current_value"].as_f64() >= Some(6.0),
        "{raised}"
    );
}

#[test]
fn a_slow_ping_is_measured_shown_and_raises_a_health_alert() {
    let d = Daemon::start_with(Setup {
        config: Some(
            "[monitoring]\nhealth_check_interval_ms = 500\n\n[monitoring.alert_thresholds]\nresponse_time_max_ms = 50\n"
                .into(),
        ),
        ..Setup::default()
    });
    let script = fixture();
    let out = d.cli(&[
        "mcp",
        "register",
        "slowping",
        "--",
        "python3",
        &script,
        "--ping-delay-ms",
        "150",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // `mcp show` has the round trips: the fixture waits 150 ms before each answer.
    let shown = wait_until(
        "two measured pings in mcp show",
        || d.cli_json(&["mcp", "show", "slowping"]).1,
        |v| v["ping"]["samples"].as_u64() >= Some(2),
        |v| format!("{v:#}"),
    );
    for q in ["last_ms", "p50_ms", "p95_ms"] {
        assert!(shown["ping"][q].as_f64() >= Some(150.0), "{q}: {shown:#}");
    }
    let (code, health) = d.http("GET", "/api/v1/metrics/health", None);
    assert_eq!(code, 200, "{health}");
    let servers = &health["data"]["mcp_servers"]["health"];
    let ping = &servers[0]["ping"];
    assert!(ping["p95_ms"].as_f64() >= Some(150.0), "{servers:#}");
    // Above `response_time_max_ms` (50 ms): a health alert on the ping rule.
    let raised = wait_event(&d, "health_alert", "health:ping:slowping");
    assert_eq!(raised["data"]["metric"], "ping_ms", "{raised}");
    assert_eq!(raised["data"]["threshold"], 50.0, "{raised}");
    assert!(
        raised["data"]["current_value"].as_f64() >= Some(150.0),
        "{raised}"
    );
    // A limit the pings stay under resolves it.
    set(
        &d,
        "monitoring.alert_thresholds.response_time_max_ms",
        "5000",
    );
    let resolved = wait_event(&d, "health_alert_resolved", "health:ping:slowping");
    assert!(
        resolved["data"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("limit 5000 ms")),
        "{resolved}"
    );
}
