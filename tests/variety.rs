//! The variety room through the real binary, with real servers from `.test-peers`
//! (mcp-server-time and server-memory, whose tools map to `time` and `memory` by the built-in
//! rules): the ratio and the gaps follow a provider that stops and starts, a gap event fires
//! once per opening, the interfaces (REST, CLI, status, Prometheus) agree, requests are kept
//! across a restart, and a ratio under the threshold alerts.

use crate::util::*;
use serde_json::Value;
use std::path::Path;

fn peer(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".test-peers")
        .join(rel);
    assert!(
        p.exists(),
        "{} is missing: run .ci/install-test-peers",
        p.display()
    );
    p.display().to_string()
}

fn register(d: &Daemon, id: &str, options: &[&str], command: &[&str]) {
    let mut args = vec!["--json", "mcp", "register", id];
    args.extend_from_slice(options);
    args.push("--");
    args.extend_from_slice(command);
    let out = d.cli(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "register {id}: {}",
        stderr(&out)
    );
}

fn get(d: &Daemon, path: &str) -> Value {
    let (status, v) = d.http("GET", path, None);
    assert_eq!(status, 200, "{path}: {v}");
    v["data"].clone()
}

fn variety(d: &Daemon) -> Value {
    get(d, "/api/v1/vsm/variety")
}

fn wait_ratio(d: &Daemon, ratio: f64) -> Value {
    wait_until(
        &format!("variety ratio {ratio}"),
        || variety(d),
        |v| v["variety_ratio"].as_f64() == Some(ratio),
        |v| format!("last analysis: {v:#}\n{}", d.stderr()),
    )
}

fn gap_events(d: &Daemon, capability: &str) -> Vec<Value> {
    let v = get(d, "/api/v1/events?type=variety_gap_detected&limit=1000");
    v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["data"]["capability"] == capability)
        .cloned()
        .collect()
}

fn mcp(d: &Daemon, action: &str, id: &str) {
    let out = d.cli(&["mcp", action, id]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{action} {id}: {}",
        stderr(&out)
    );
}

fn wait_status(d: &Daemon, id: &str, status: &str) {
    wait_until(
        &format!("{id} {status}"),
        || get(d, &format!("/api/v1/mcp/servers/{id}")),
        |v| v["status"] == status,
        |v| format!("{v}"),
    );
}

#[test]
fn ratio_and_gaps_follow_a_provider_that_stops_and_starts() {
    let time = peer("venv-time/bin/mcp-server-time");
    let memory = peer("npm/node_modules/.bin/mcp-server-memory");
    let d = Daemon::start_with(Setup {
        config: Some(
            "[variety]\nrequired = [\"time\", {capability = \"memory\", weight = 2, severity = \"high\"}]\n\
             [monitoring]\nvariety_check_interval_ms = 600000\n\
             [mcp_servers]\nstop_grace_ms = 100\nterm_timeout_ms = 500\n"
                .into(),
        ),
        ..Setup::default()
    });
    // Nothing provides either yet.
    let v = wait_ratio(&d, 0.0);
    let gaps: Vec<&str> = v["gaps"]
        .as_array()
        .expect("gaps")
        .iter()
        .filter_map(|g| g["capability"].as_str())
        .collect();
    assert_eq!(gaps, ["memory", "time"], "high severity first: {v}");
    assert_eq!(v["gaps"][0]["recommended_action"], "acquire_mcp_server");

    let data = TempDir::new("memory-data");
    let memory_env = format!(
        "MEMORY_FILE_PATH={}",
        data.path().join("memory.jsonl").display()
    );
    register(&d, "clock", &[], &[&time, "--local-timezone", "UTC"]);
    register(&d, "mem", &["--env", &memory_env], &[&memory]);
    wait_status(&d, "clock", "active");
    wait_status(&d, "mem", "active");
    let v = wait_ratio(&d, 1.0);
    assert_eq!(v["gaps"], serde_json::json!([]), "{v}");
    let caps = get(&d, "/api/v1/capabilities");
    let time_cap = caps["capabilities"]
        .as_array()
        .expect("capabilities")
        .iter()
        .find(|c| c["name"] == "time")
        .expect("time")
        .clone();
    assert_eq!(time_cap["providers"][0]["server"], "clock", "{time_cap}");
    assert_eq!(
        time_cap["providers"][0]["reason"]["source"], "tool",
        "why: {time_cap}"
    );
    // Single providers are threats.
    assert!(
        v["threats"].as_array().is_some_and(|t| t
            .iter()
            .any(|t| t["kind"] == "single_provider" && t["capability"] == "memory")),
        "{v}"
    );
    let before = gap_events(&d, "memory").len();
    assert_eq!(before, 1, "the gap opened once at start");

    // The memory provider stops: the weighted ratio drops to 1/3 and the gap says what closes it.
    mcp(&d, "stop", "mem");
    // The ratio drops as soon as mem leaves `active` (while it is still stopping); wait for
    // the stop to finish so the gap names the state it is left in.
    wait_status(&d, "mem", "stopped");
    let v = wait_until(
        "the gap names mem stopped",
        || variety(&d),
        |v| v["gaps"][0]["closes_with"] == "start mem (stopped)",
        |v| format!("last analysis: {v:#}\n{}", d.stderr()),
    );
    assert_eq!(v["variety_ratio"].as_f64(), Some(0.3333), "{v}");
    assert_eq!(v["gaps"][0]["capability"], "memory", "{v}");
    assert_eq!(
        v["gaps"][0]["recommended_action"], "start_mcp_server",
        "{v}"
    );
    assert_eq!(v["gaps"][0]["closes_with"], "start mem (stopped)", "{v}");
    // Analyses that find it still open say nothing new.
    for _ in 0..3 {
        let (code, _) = d.cli_json(&["variety", "analyze", "--force"]);
        assert_eq!(code, 0);
    }
    let events = gap_events(&d, "memory");
    assert_eq!(events.len(), before + 1, "{events:?}");
    let e = &events[events.len() - 1]["data"];
    assert_eq!(e["gap_type"], "capability", "{e}");
    assert_eq!(e["severity"], "high", "{e}");
    assert_eq!(e["description"], "missing memory capability", "{e}");
    assert_eq!(e["recommended_action"], "start_mcp_server", "{e}");

    // The interfaces agree.
    let (code, status) = d.cli_json(&["variety", "status"]);
    assert_eq!(code, 0);
    assert_eq!(status["variety_ratio"], 0.3333, "{status}");
    let (code, gaps) = d.cli_json(&["variety", "gaps", "list"]);
    assert_eq!(code, 0);
    assert_eq!(gaps["gaps"][0]["capability"], "memory", "{gaps}");
    let human = stdout(&d.cli(&["variety", "gaps", "list"]));
    assert!(
        human.contains("memory") && human.contains("start mem"),
        "{human}"
    );
    let block = get(&d, "/api/v1/status")["variety"].clone();
    assert_eq!(block["current_ratio"], 0.3333, "{block}");
    assert_eq!(block["gap_count"], 1, "{block}");
    assert_eq!(block["threshold"], 0.7, "{block}");
    assert!(block["last_assessed"].is_string(), "{block}");
    let (code, metrics) = d.cli_json(&["metrics", "--type", "variety"]);
    assert_eq!(code, 0);
    assert_eq!(metrics["required_count"], 2, "{metrics}");
    assert_eq!(metrics["provided_count"], 1, "{metrics}");
    let addr = d.http.expect("tcp");
    let prometheus = http_get_text(addr, "/metrics", &d.bearer());
    assert!(
        prometheus.contains("vsm_variety_ratio 0.3333")
            && prometheus.contains("vsm_variety_gaps 1"),
        "{prometheus}"
    );

    // It starts again: the gap closes; a second stop opens it again, and says so once more.
    mcp(&d, "start", "mem");
    wait_ratio(&d, 1.0);
    mcp(&d, "stop", "mem");
    wait_ratio(&d, 0.3333);
    assert_eq!(gap_events(&d, "memory").len(), before + 2);
}

/// `GET path` over TCP with the token; the body as text.
fn http_get_text(addr: std::net::SocketAddr, path: &str, bearer: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {bearer}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn capability_requests_are_kept_across_a_restart_and_a_low_ratio_alerts() {
    let config = "[variety]\nrequired = [\"time\"]\n\
                  [monitoring]\nvariety_check_interval_ms = 200\n"
        .to_string();
    let d = Daemon::start_with(Setup {
        config: Some(config.clone()),
        ..Setup::default()
    });
    let (code, v) = d.cli_json(&["variety", "acquire", "weather", "--priority", "critical"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["recorded"], true, "{v}");
    assert_eq!(v["gap"]["capability"], "weather", "{v}");
    assert_eq!(v["gap"]["severity"], "critical", "{v}");
    assert_eq!(v["gap"]["recommended_action"], "acquire_mcp_server", "{v}");
    // Asking again records nothing new; a config-required one is said to be required already.
    let (_, again) = d.cli_json(&["variety", "acquire", "weather"]);
    assert_eq!(again["recorded"], false, "{again}");
    let (_, config_one) = d.cli_json(&["variety", "acquire", "time"]);
    assert_eq!(config_one["required_by"], "config", "{config_one}");
    // Bad requests are refused with the field named.
    let (status, v) = d.http(
        "POST",
        "/api/v1/capabilities/acquire",
        Some(r#"{"capability_type": "x", "priority": "urgent"}"#),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["errors"][0]["field"], "priority", "{v}");
    let (status, v) = d.http("DELETE", "/api/v1/capabilities/nothing", None);
    assert_eq!(
        (status, &v["errors"][0]["code"]),
        (404, &Value::from("capability_not_found"))
    );
    let (status, v) = d.http("DELETE", "/api/v1/capabilities/time", None);
    assert_eq!(status, 409, "config-required: {v}");

    // The ratio (0 of 2) is under variety_ratio_min: an alert fires.
    wait_until(
        "the variety:ratio alert",
        || get(&d, "/api/v1/alerts?state=firing"),
        |v| {
            v["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["rule"] == "variety:ratio"))
        },
        |v| format!("{v}"),
    );

    // Across a restart the request is still there.
    let dir = d.kill9();
    let d = Daemon::start_in(
        dir,
        Setup {
            config: Some(config),
            ..Setup::default()
        },
    )
    .expect("restart");
    let caps = get(&d, "/api/v1/capabilities");
    assert_eq!(caps["requests"][0]["capability"], "weather", "{caps}");
    assert_eq!(caps["requests"][0]["priority"], "critical", "{caps}");
    let gaps = get(&d, "/api/v1/capabilities/gaps");
    assert_eq!(gaps["gaps"][0]["capability"], "weather", "{gaps}");
    assert_eq!(gaps["gaps"][0]["source"], "request", "{gaps}");
    let (status, v) = d.http("DELETE", "/api/v1/capabilities/weather", None);
    assert_eq!(status, 200, "{v}");
    let gaps = get(&d, "/api/v1/capabilities/gaps");
    assert_eq!(gaps["gaps"].as_array().map(Vec::len), Some(1), "{gaps}");
    let dir = d.kill9();
    let d = Daemon::start_in(
        dir,
        Setup {
            config: Some("[variety]\nrequired = [\"time\"]\n".into()),
            ..Setup::default()
        },
    )
    .expect("restart");
    let caps = get(&d, "/api/v1/capabilities");
    assert_eq!(
        caps["requests"],
        serde_json::json!([]),
        "removed for good: {caps}"
    );
}
