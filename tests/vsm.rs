//! The five VSM systems through the real binary: counters that follow real activity (tool
//! calls of the fixture server, backoffs, the built-in audit cycles), the seed's `vsm_systems`
//! block in the status, the actions (`call`, `reset_backoff`, `audit`, and the refusals of
//! `scan` and `decide`), the CLI and Prometheus.

use crate::util::*;
use serde_json::{json, Value};

fn fixture() -> String {
    format!(
        "{}/tests/fixtures/mcp_fixture.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Registers the fixture over REST with extra spec fields.
fn register(d: &Daemon, id: &str, args: &[&str], extra: Value) {
    let mut argv = vec![fixture()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut spec = json!({"id": id, "command": "python3", "args": argv});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let (code, v) = d.http("POST", "/api/v1/mcp/servers", Some(&spec.to_string()));
    assert_eq!(code, 200, "register {id}: {v}");
}

fn server(d: &Daemon, id: &str) -> Value {
    let (code, v) = d.http("GET", &format!("/api/v1/mcp/servers/{id}"), None);
    assert_eq!(code, 200, "{v}");
    v["data"].clone()
}

fn wait_status(d: &Daemon, id: &str, status: &str) -> Value {
    wait_until(
        &format!("{id} {status}"),
        || server(d, id),
        |v| v["status"] == status,
        |v| format!("{v:#}"),
    )
}

fn system(d: &Daemon, id: &str) -> Value {
    let (code, v) = d.http("GET", &format!("/api/v1/vsm/systems/{id}"), None);
    assert_eq!(code, 200, "{v}");
    v["data"].clone()
}

fn action(d: &Daemon, id: &str, body: Value) -> (u16, Value) {
    d.http(
        "POST",
        &format!("/api/v1/vsm/systems/{id}/action"),
        Some(&body.to_string()),
    )
}

fn call(d: &Daemon, id: &str, tool: &str, arguments: Value) -> (u16, Value) {
    let body = json!({"name": tool, "arguments": arguments});
    d.http(
        "POST",
        &format!("/api/v1/mcp/servers/{id}/tools/call"),
        Some(&body.to_string()),
    )
}

#[test]
fn tool_calls_count_in_system1_the_status_block_the_cli_and_prometheus() {
    let d = Daemon::start();
    register(&d, "fx", &[], json!({}));
    wait_status(&d, "fx", "active");
    let before = system(&d, "system1");
    assert_eq!(before["operations_count"], 0, "{before}");
    assert_eq!(before["name"], "operations");

    let (code, v) = call(&d, "fx", "echo", json!({"message": "hi"}));
    assert_eq!(code, 200, "{v}");
    let (code, v) = call(&d, "fx", "fail", json!({}));
    assert_eq!(code, 422, "{v}");
    let s1 = system(&d, "operations");
    assert_eq!(s1["operations_count"], 2, "{s1:#}");
    assert_eq!(s1["by_kind"], json!({"ok": 1, "tool_error": 1}), "{s1:#}");
    let recent = s1["recent_activity"].as_array().expect("recent");
    assert!(
        recent.iter().any(|a| a["detail"]
            .as_str()
            .is_some_and(|t| t.starts_with("fx/fail: tool_error"))),
        "{s1:#}"
    );

    // S1's action is a tool call through the command layer.
    let (code, v) = action(
        &d,
        "system1",
        json!({"action": "call", "parameters": {"server": "fx", "tool": "sum", "arguments": {"a": 2, "b": 3}}}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["result"]["structuredContent"]["sum"], 5, "{v}");
    assert_eq!(system(&d, "system1")["operations_count"], 3);

    // The seed's block in the status, exactly its shape.
    let (code, v) = d.http("GET", "/api/v1/status", None);
    assert_eq!(code, 200);
    let block = &v["data"]["vsm_systems"];
    assert_eq!(
        block["system1"],
        json!({"status": "active", "operations_count": 3}),
        "{block}"
    );
    for (id, counter) in [
        ("system2", "coordination_points"),
        ("system3", "audit_cycles"),
        ("system4", "scans_completed"),
        ("system5", "decisions_made"),
    ] {
        let keys: Vec<&String> = block[id].as_object().expect(id).keys().collect();
        assert_eq!(keys.len(), 2, "{block}");
        assert!(block[id][counter].is_u64(), "{block}");
        assert!(block[id]["status"].is_string(), "{block}");
    }

    // The CLI: the list, one system, and exit codes.
    let (code, list) = d.cli_json(&["systems", "list"]);
    assert_eq!(code, 0, "{list}");
    let ids: Vec<&str> = list["systems"]
        .as_array()
        .expect("systems")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, ["system1", "system2", "system3", "system4", "system5"]);
    assert_eq!(list["systems"][0]["operations_count"], 3);
    let out = d.cli(&["systems", "status", "system9"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no VSM system 'system9'"),
        "{}",
        stderr(&out)
    );
    let out = d.cli(&["systems", "trigger", "system1"]);
    assert_eq!(out.status.code(), Some(2));

    // Refusals: unknown system, wrong action, missing parameters, and no fake scan.
    let (code, v) = d.http("GET", "/api/v1/vsm/systems/system6", None);
    assert_eq!(
        (code, v["errors"][0]["code"].as_str()),
        (404, Some("system_not_found")),
        "{v}"
    );
    let (code, v) = action(&d, "system2", json!({"action": "audit"}));
    assert_eq!(
        (code, v["errors"][0]["field"].as_str()),
        (400, Some("action")),
        "{v}"
    );
    let (code, v) = action(
        &d,
        "system1",
        json!({"action": "call", "parameters": {"tool": "x"}}),
    );
    assert_eq!(
        (code, v["errors"][0]["field"].as_str()),
        (400, Some("parameters.server")),
        "{v}"
    );
    // S5's decide re-evaluates the open gaps against policy: a required capability nobody
    // provides is an open gap, and with auto_acquire off (the default) policy starts nothing.
    let out = d.cli(&["variety", "acquire", "weather"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = wait_until(
        "decide sees the open gap",
        || action(&d, "system5", json!({"action": "decide"})),
        |(code, v)| {
            *code == 200
                && v["data"]["results"]["acquisition"]["data"]["open_gaps"] == json!(["weather"])
        },
        |(code, v)| format!("{code} {v}"),
    )
    .1;
    let decided = &v["data"]["results"]["acquisition"]["data"];
    assert_eq!(decided["auto_acquire"], false, "{v}");
    assert_eq!(decided["taken_up"], json!([]), "{v}");
    assert!(
        decided["verdict"]
            .as_str()
            .is_some_and(|t| t.contains("auto_acquire is off")),
        "{v}"
    );

    // S4's scan is a variety analysis (here without a discovery run: no network), counted.
    let scans = system(&d, "system4")["scans_completed"]
        .as_u64()
        .unwrap_or(0);
    let (code, v) = action(
        &d,
        "intelligence",
        json!({"action": "scan", "parameters": {"discovery": false}}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["results"]["variety"]["ok"], true, "{v}");
    let s4 = wait_until(
        "the scan counted",
        || system(&d, "system4"),
        |s| s["scans_completed"].as_u64().unwrap_or(0) > scans,
        |s| format!("{s:#}"),
    );
    assert_eq!(s4["status"], "active", "{s4:#}");
    assert!(
        s4["by_kind"]["variety_analysis"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{s4:#}"
    );

    // Prometheus.
    let raw = raw_exchange(
        &d.socket,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let (code, _, text) = split_response(&raw);
    assert_eq!(code, 200);
    assert!(
        text.contains("vsm_system_events_total{system=\"system1\",name=\"operations\"} 3"),
        "{text}"
    );
}

#[test]
fn reset_backoff_starts_the_held_servers_and_audit_runs_every_check() {
    // A check that is due only in an hour: only the audit (and its first run) runs it.
    let config = "[[checks]]\nname = \"closed\"\nkind = \"tcp\"\nevery_ms = 3600000\ntimeout_ms = 2000\ntarget = \"127.0.0.1:1\"\n";
    let d = Daemon::start_with(Setup {
        config: Some(config.into()),
        ..Setup::default()
    });
    // Fails every start, and the backoff is an hour: it stays in backoff unless reset.
    register(
        &d,
        "held",
        &["--exit-at-start", "3"],
        json!({"backoff_initial_ms": 3_600_000, "backoff_max_ms": 3_600_000}),
    );
    wait_status(&d, "held", "backoff");
    let s2 = wait_until(
        "system2 counts the backoff",
        || system(&d, "system2"),
        |v| v["by_kind"]["backoff"] == 1,
        |v| format!("{v:#}"),
    );
    assert_eq!(s2["status"], "degraded", "{s2:#}");
    let starts = |d: &Daemon| {
        let (_, v) = d.http(
            "GET",
            "/api/v1/events?type=mcp_server_status_change&limit=1000",
            None,
        );
        v["data"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["data"]["server_id"] == "held" && e["data"]["new_status"] == "starting")
            .count()
    };
    let before = starts(&d);
    let (code, v) = action(&d, "coordination", json!({"action": "reset_backoff"}));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["results"]["held"]["ok"], true, "{v}");
    // It started again at once (and, failing, went back to backoff: counted once more).
    wait_until(
        "a new start",
        || starts(&d),
        |n| *n > before,
        |n| format!("{n}"),
    );
    wait_until(
        "the second backoff",
        || system(&d, "system2"),
        |v| v["by_kind"]["backoff"] == 2,
        |v| format!("{v:#}"),
    );

    // Audit: both built-in cycles, the health round and the declared check, now.
    let runs = |d: &Daemon| {
        let (_, v) = d.http("GET", "/api/v1/checks", None);
        v["data"]["checks"][0]["runs"].as_u64().unwrap_or(0)
    };
    wait_until(
        "the check's first run",
        || runs(&d),
        |n| *n >= 1,
        |n| format!("{n}"),
    );
    let checks_before = runs(&d);
    let cycles_before = system(&d, "system3")["audit_cycles"].as_u64().unwrap_or(0);
    let (code, v) = action(&d, "system3", json!({"action": "audit"}));
    assert_eq!(code, 200, "{v}");
    let results = &v["data"]["results"];
    assert_eq!(results["cycles"]["data"]["cycles_run"], 2, "{v}");
    assert!(results["health"].is_object(), "{v}");
    assert!(results["check:closed"].is_object(), "{v}");
    assert_eq!(runs(&d), checks_before + 1);
    let s3 = system(&d, "control");
    assert!(
        s3["audit_cycles"].as_u64().unwrap_or(0) >= cycles_before + 2,
        "{s3:#}"
    );
    assert_eq!(s3["status"], "active", "{s3:#}");
}
