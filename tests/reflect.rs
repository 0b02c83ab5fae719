//! Reflection through the real binary: a fixture server made to crash again and again is
//! found flapping, with the status-change events that show it as evidence; a tool that gets
//! slower call after call is an increasing latency trend; `consciousness.memory_limit` bounds
//! the record; queries and decision support answer from the record; the CLI.

use crate::util::*;
use serde_json::{json, Value};

fn fixture() -> String {
    format!(
        "{}/tests/fixtures/mcp_fixture.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn register(d: &Daemon, id: &str, extra: Value) {
    let mut spec = json!({"id": id, "command": "python3", "args": [fixture()]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let (code, v) = d.http("POST", "/api/v1/mcp/servers", Some(&spec.to_string()));
    assert_eq!(code, 200, "register {id}: {v}");
}

fn wait_active(d: &Daemon, id: &str) {
    wait_until(
        &format!("{id} active"),
        || d.http("GET", &format!("/api/v1/mcp/servers/{id}"), None).1,
        |v| v["data"]["status"] == "active",
        |v| format!("{v:#}"),
    );
}

fn call(d: &Daemon, id: &str, tool: &str, arguments: Value) -> (u16, Value) {
    let body = json!({"name": tool, "arguments": arguments});
    d.http(
        "POST",
        &format!("/api/v1/mcp/servers/{id}/tools/call"),
        Some(&body.to_string()),
    )
}

fn reflect(d: &Daemon) -> Value {
    let (code, v) = d.http("POST", "/api/v1/consciousness/reflect", Some("{}"));
    assert_eq!(code, 200, "{v}");
    v["data"].clone()
}

fn events(d: &Daemon, kind: &str) -> Vec<Value> {
    let (code, v) = d.http(
        "GET",
        &format!("/api/v1/events?type={kind}&limit=1000"),
        None,
    );
    assert_eq!(code, 200, "{v}");
    v["data"]["events"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_flapping_server_is_found_with_its_events_and_queries_answer_for_it() {
    let d = Daemon::start();
    register(
        &d,
        "flappy",
        json!({"backoff_initial_ms": 50, "backoff_max_ms": 100, "max_failures": 100}),
    );
    for _ in 0..4 {
        wait_active(&d, "flappy");
        let (code, v) = call(&d, "flappy", "crash", json!({}));
        assert_eq!(code, 502, "{v}");
    }
    wait_active(&d, "flappy");
    let found = reflect(&d);
    let insight = found["new_insights"]
        .as_array()
        .expect("insights")
        .iter()
        .find(|i| i["analyser"] == "flapping" && i["subject"] == "flappy")
        .cloned()
        .unwrap_or_else(|| panic!("no flapping insight: {found:#}"));
    assert_eq!(insight["insight_type"], "pattern_recognition");
    // Four exits: 1 − 0.5² = 0.75.
    assert_eq!(insight["significance"], 0.75, "{insight:#}");
    // The evidence is the status changes that took it out of service.
    let seqs: Vec<u64> = insight["evidence"]["event_seqs"]
        .as_array()
        .expect("seqs")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(seqs.len(), 4, "{insight:#}");
    let changes = events(&d, "mcp_server_status_change");
    for seq in &seqs {
        let e = changes
            .iter()
            .find(|e| e["seq"] == *seq)
            .unwrap_or_else(|| panic!("evidence {seq} is no status change"));
        assert_eq!(e["data"]["server_id"], "flappy");
        assert!(
            matches!(
                e["data"]["old_status"].as_str(),
                Some("active" | "degraded")
            ),
            "{e}"
        );
    }
    // Its recommendations are requests the daemon accepts.
    let rec = &insight["recommendations"][0];
    assert_eq!(rec["path"], "/api/v1/consciousness/decision");
    let (code, decision) = d.http(
        "POST",
        "/api/v1/consciousness/decision",
        Some(&rec["body"].to_string()),
    );
    assert_eq!(code, 200, "{decision}");
    assert_eq!(
        decision["data"]["evidence"]["exits_in_window"], 4,
        "{decision}"
    );
    assert_eq!(decision["data"]["recommended"], "stop", "{decision:#}");
    assert_eq!(decision["data"]["weights"]["flapping"], 0.3);
    // Published once on the consciousness channel, with the seed's fields.
    let published = events(&d, "consciousness_insight");
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0]["channel"], "consciousness");
    for field in [
        "insight_type",
        "significance",
        "description",
        "recommendations",
    ] {
        assert!(
            !published[0]["data"][field].is_null(),
            "{field}: {}",
            published[0]
        );
    }
    // Nothing new since: a second reflection finds it again but publishes nothing.
    assert_eq!(reflect(&d)["new_insights"], json!([]));
    assert_eq!(events(&d, "consciousness_insight").len(), 1);

    // Queries answer from the record.
    let (code, q) = d.cli_json(&["query", "server", "flappy"]);
    assert_eq!(code, 0, "{q}");
    assert_eq!(q["failures"], 4, "{q:#}");
    assert!(
        q["history"].as_array().is_some_and(|h| h.len() >= 8),
        "{q:#}"
    );
    assert_eq!(q["insights"][0]["analyser"], "flapping");
    let (code, v) = d.http(
        "POST",
        "/api/v1/consciousness/query",
        Some(r#"{"about":"server","id":"ghost"}"#),
    );
    assert_eq!(
        (code, v["errors"][0]["code"].as_str()),
        (404, Some("subject_not_found")),
        "{v}"
    );
    let (code, v) = d.http(
        "POST",
        "/api/v1/consciousness/query",
        Some(r#"{"about":"weather","id":"x"}"#),
    );
    assert_eq!(
        (code, v["errors"][0]["field"].as_str()),
        (400, Some("about")),
        "{v}"
    );
    let out = d.cli(&["query", "decision", "nothing"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // The self-model says what changed and what is firing; the CLI lists the insight.
    let (code, state) = d.http("GET", "/api/v1/consciousness", None);
    assert_eq!(code, 200);
    assert_eq!(state["data"]["doing"]["reflections"], 2, "{state:#}");
    assert!(
        state["data"]["last_reflection"]["at"].is_string(),
        "{state:#}"
    );
    assert!(state["data"]["resources"]["rss_bytes"]
        .as_u64()
        .is_some_and(|r| r > 0));
    let (code, list) = d.cli_json(&["insights", "--type", "pattern_recognition"]);
    assert_eq!(code, 0, "{list}");
    assert_eq!(list["insights"].as_array().map(Vec::len), Some(1), "{list}");
    let (code, none) = d.cli_json(&["insights", "--min-significance", "0.9"]);
    assert_eq!(code, 0);
    assert_eq!(none["insights"], json!([]));
}

#[test]
fn a_tool_that_slows_down_is_an_increasing_latency_trend() {
    let d = Daemon::start();
    register(&d, "slow", json!({}));
    wait_active(&d, "slow");
    // 10, 20, ..., 200 ms: the fixture takes longer with each call.
    for i in 1..=20 {
        let (code, v) = call(&d, "slow", "sleep", json!({"ms": 10 * i, "steps": 1}));
        assert_eq!(code, 200, "{v}");
    }
    let out = d.cli(&["--json", "reflect"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let found: Value = serde_json::from_slice(&out.stdout).expect("json");
    let trend = found["new_insights"]
        .as_array()
        .expect("insights")
        .iter()
        .find(|i| i["analyser"] == "latency_trend" && i["subject"] == "slow/sleep")
        .cloned()
        .unwrap_or_else(|| panic!("no trend: {found:#}"));
    let values = &trend["evidence"]["values"];
    assert_eq!(values["direction"], "increasing", "{trend:#}");
    let slope = values["slope_ms_per_call"].as_f64().expect("slope");
    // Each call sleeps 10 ms longer than the one before.
    assert!((7.0..13.0).contains(&slope), "{trend:#}");
    assert_eq!(values["samples"], 20);
    assert_eq!(
        trend["evidence"]["event_seqs"].as_array().map(Vec::len),
        Some(20)
    );
    assert_eq!(
        trend["recommendations"][0]["path"],
        "/api/v1/mcp/servers/slow/restart"
    );
}

#[test]
fn memory_limit_bounds_the_record_and_counts_what_it_dropped() {
    let d = Daemon::start_with(Setup {
        config: Some("[consciousness]\nmemory_limit = 10\n".into()),
        ..Setup::default()
    });
    register(&d, "fx", json!({}));
    wait_active(&d, "fx");
    for i in 0..25 {
        let (code, v) = call(&d, "fx", "echo", json!({"message": format!("m{i}")}));
        assert_eq!(code, 200, "{v}");
    }
    let (code, state) = d.http("GET", "/api/v1/consciousness", None);
    assert_eq!(code, 200);
    let record = &state["data"]["resources"]["record"];
    assert_eq!(record["entries"], 10, "{state:#}");
    assert_eq!(record["limit"], 10);
    // 25 calls and the status changes of the start: at least 15 + 3 dropped.
    assert!(
        record["dropped"].as_u64().is_some_and(|n| n >= 18),
        "{state:#}"
    );
    // Raised live: the record grows again.
    let (code, v) = d.http(
        "PUT",
        "/api/v1/config",
        Some(r#"{"consciousness":{"memory_limit":100}}"#),
    );
    assert_eq!(code, 200, "{v}");
    for _ in 0..5 {
        call(&d, "fx", "echo", json!({"message": "more"}));
    }
    let (_, state) = d.http("GET", "/api/v1/consciousness", None);
    assert_eq!(
        state["data"]["resources"]["record"]["entries"], 15,
        "{state:#}"
    );
}
