//! Both protocol eras through the real binary. On stdio: the `server/discover` probe, the
//! fallback to `initialize` for legacy servers (also one that never answers an unknown
//! method), a 2026-07-28 server (the fixture's `--modern` mode, and mcp-server-time, which
//! speaks it) served statelessly with `_meta` on every request, health without `ping`, list
//! changes over `subscriptions/listen`, `input_required` answered as a clear error. On `/mcp`:
//! the 2026-07-28 rules (stateless requests, headers against the body, each error code,
//! `server/discover`, `subscriptions/listen`) with raw HTTP and with the official Python SDK
//! client in its 2026-07-28 mode, while a 2025-11-25 session keeps working beside them.

use crate::util::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    // `mcp show` says it too.
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
