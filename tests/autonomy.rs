//! The seed's "full autonomous operation cycle" through the real binary: `[variety] required =
//! ["memory"]` with no provider and `auto_acquire = true`; the registry fixture lists two
//! candidates that bring memory, the best-ranked one at a version that does not exist (its
//! install fails) and `@modelcontextprotocol/server-memory` at the version
//! `.ci/install-test-peers` pins. Nobody asks for anything: the gap event leads to discovery,
//! the first candidate fails, the next is installed, vetted, registered and started, and the
//! ratio is back to 1.0. Installs come from the registry npm's own configuration names (tens
//! of seconds: deadlines are generous, every wait is on a condition).

use crate::acquire::{decisions, events, finished, pinned, INSTALL_PATIENCE};
use crate::discovery::Fixture;
use crate::util::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const MEMORY: &str = "@modelcontextprotocol/server-memory";
/// A real package at a version that was never published: its install fails.
const BROKEN: &str = "npm:@modelcontextprotocol/server-everything@9999.0.0";

fn official(updated: &str) -> Value {
    json!({"io.modelcontextprotocol.registry/official": {
        "status": "active", "publishedAt": "2025-01-01T00:00:00Z",
        "updatedAt": updated, "isLatest": true}})
}

fn npm(name: &str, version: &str) -> Value {
    json!({"registryType": "npm", "identifier": name, "version": version,
           "runtimeHint": "npx", "transport": {"type": "stdio"}})
}

/// The fixture's registry: the broken candidate updated lately (it ranks first), the memory
/// server updated less lately.
fn registry_data(memory_version: &str) -> Value {
    let days_ago = |days: u64| {
        let t = std::time::SystemTime::now() - Duration::from_secs(days * 86_400);
        vsm_daemon::state::rfc3339_utc(t)
    };
    let (updated_lately, updated_before) = (days_ago(5), days_ago(200));
    json!({"registry": [
        {"server": {"name": "io.example/everything-memory", "title": "Memory for everything",
                    "description": "Knowledge graph memory (a version that was never published)",
                    "version": "9999.0.0",
                    "packages": [npm("@modelcontextprotocol/server-everything", "9999.0.0")]},
         "_meta": official(&updated_lately)},
        {"server": {"name": "io.github.modelcontextprotocol/server-memory",
                    "title": "Knowledge Graph Memory",
                    "description": "Knowledge graph memory: entities, relations and observations",
                    "version": memory_version,
                    "packages": [npm(MEMORY, memory_version)]},
         "_meta": official(&updated_before)},
    ]})
}

fn start(dir: &TempDir, auto_acquire: bool) -> (Fixture, Daemon) {
    let data = dir.path().join("registry.json");
    let memory_version = pinned("MEMORY_VERSION");
    std::fs::write(&data, registry_data(&memory_version).to_string()).expect("data file");
    let fx = Fixture::start_with(dir.path(), &["--data", &data.display().to_string()]);
    let config = format!(
        "[variety]\nrequired = [\"memory\"]\nauto_acquire = {auto_acquire}\n\n\
         [mcp_servers]\ndiscovery_sources = [\"registry\"]\nregistry_url = \"{}\"\n\
         discovery_cache_ttl_ms = 0\nauto_discovery_interval_ms = 0\n",
        fx.url("ok")
    );
    let d = Daemon::start_with(Setup {
        config: Some(config),
        ..Setup::default()
    });
    (fx, d)
}

fn variety(d: &Daemon) -> Value {
    d.http("GET", "/api/v1/vsm/variety", None).1["data"].clone()
}

/// Waits (up to the install patience) for a `capability_acquired` event.
fn wait_acquired(d: &Daemon) -> Vec<Value> {
    let deadline = Instant::now() + INSTALL_PATIENCE;
    loop {
        let acquired = events(d, "capability_acquired");
        if !acquired.is_empty() {
            return acquired;
        }
        assert!(
            Instant::now() < deadline,
            "no capability_acquired; acquisitions: {:?}; failures: {:?}\n{}",
            d.http("GET", "/api/v1/capabilities/acquisitions/acq-1", None)
                .1,
            events(d, "capability_acquisition_failed"),
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_gap_is_closed_by_itself_the_failing_candidate_giving_way_to_the_next() {
    let dir = TempDir::new("autonomy");
    let (_fx, d) = start(&dir, true);
    the_full_cycle(&d);
}

/// Off, an open gap is left alone; switched on live (`config set`), the open gap is taken up.
#[test]
fn switching_auto_acquire_on_takes_up_the_open_gap() {
    let dir = TempDir::new("autonomy-live");
    let (_fx, d) = start(&dir, false);
    let v = wait_until(
        "the memory gap",
        || variety(&d),
        |v| v["variety_ratio"].as_f64() == Some(0.0),
        |v| format!("{v:#}\n{}", d.stderr()),
    );
    assert_eq!(v["gaps"][0]["capability"], "memory", "{v}");
    // A discovery run would be the first thing the cycle does: none was asked for.
    assert!(events(&d, "discovery_completed").is_empty());
    let (status, none) = d.http("GET", "/api/v1/capabilities/acquisitions/acq-1", None);
    assert_eq!(status, 404, "{none}");

    let out = d.cli(&["config", "set", "variety.auto_acquire", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    the_full_cycle(&d);
}

/// The failing candidate, then the memory server acquired, the gap closed, nothing more.
fn the_full_cycle(d: &Daemon) {
    let asked = Instant::now();
    let acquired = wait_acquired(d);
    let waited = asked.elapsed();
    let server = "modelcontextprotocol-server-memory";
    assert_eq!(acquired.len(), 1, "{acquired:?}");
    assert_eq!(acquired[0]["data"]["server_id"], server, "{acquired:?}");
    assert!(acquired[0]["data"]["capabilities"]
        .as_array()
        .is_some_and(|c| c.contains(&json!("memory"))));

    // In order: the gap, the broken candidate failing at its install, then the memory server.
    let gap = events(d, "variety_gap_detected");
    let gap = gap
        .iter()
        .find(|e| e["data"]["capability"] == "memory")
        .unwrap_or_else(|| panic!("no memory gap event: {gap:?}"));
    let failed = events(d, "capability_acquisition_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["data"]["package"], BROKEN, "{failed:?}");
    assert_eq!(failed[0]["data"]["step"], "install", "{failed:?}");
    let seq = |e: &Value| e["seq"].as_u64().unwrap_or(0);
    assert!(seq(gap) < seq(&failed[0]) && seq(&failed[0]) < seq(&acquired[0]));

    let first = finished(d, "acq-1");
    assert_eq!(first["package"], BROKEN, "{first}");
    assert_eq!(first["state"], "failed", "{first}");
    assert_eq!(first["requested_by"], "auto", "{first}");
    let second = finished(d, "acq-2");
    assert_eq!(
        second["package"],
        format!("npm:{MEMORY}@{}", pinned("MEMORY_VERSION"))
    );
    assert_eq!(second["state"], "acquired", "{second}");
    assert_eq!(second["requested_by"], "auto", "{second}");
    assert_eq!(second["registry"]["status"], "active", "{second}");
    // Numbers for the README (not asserted): how long the gap stayed open, installs apart.
    let install_ms = |a: &Value| {
        a["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["step"] == "install")
            .filter_map(|s| s["ms"].as_u64())
            .sum::<u64>()
    };
    eprintln!(
        "autonomy: capability_acquired {} ms after the cycle could start; failed install {} ms; \
         memory server: install {} ms, whole acquisition {} ms",
        waited.as_millis(),
        install_ms(&first),
        install_ms(&second),
        second["result"]["total_ms"]
    );

    // The decision records who asked.
    let recorded = decisions(d, "");
    let list = recorded["decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(list.len(), 1, "{recorded}");
    assert_eq!(list[0]["verdict"], "approved", "{recorded}");
    assert_eq!(list[0]["requested_by"], "auto", "{recorded}");

    // The gap is closed: ratio 1.0, the server active, the discovery's candidates shown.
    let v = wait_until(
        "variety ratio 1.0",
        || variety(d),
        |v| v["variety_ratio"].as_f64() == Some(1.0),
        |v| format!("{v:#}\n{}", d.stderr()),
    );
    assert_eq!(v["gaps"].as_array().map(Vec::len), Some(0), "{v}");
    assert!(
        v["opportunities"].as_array().is_some_and(|o| o
            .iter()
            .any(|o| o["candidate"].as_str().is_some_and(|c| c.contains(MEMORY)))),
        "{v}"
    );
    let (_, shown) = d.http("GET", &format!("/api/v1/mcp/servers/{server}"), None);
    assert_eq!(shown["data"]["status"], "active", "{shown}");

    // No flapping: nothing more is tried once the gap is closed.
    let (status, third) = d.http("GET", "/api/v1/capabilities/acquisitions/acq-3", None);
    assert_eq!(status, 404, "{third}");
}

/// The acquisitions kept, newest first (`GET /api/v1/capabilities/acquisitions`).
fn acquisitions(d: &Daemon) -> Vec<Value> {
    let (status, v) = d.http("GET", "/api/v1/capabilities/acquisitions", None);
    assert_eq!(status, 200, "{v}");
    v["data"]["acquisitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A capability whose only candidate failed is tried again once that candidate has cooled
/// down (`acquire_cooldown_ms`), with a fresh discovery, and without a new gap event.
#[test]
fn a_gap_left_open_is_tried_again_when_the_cooldown_ends() {
    let dir = TempDir::new("autonomy-retry");
    let data = dir.path().join("registry.json");
    let mut only_broken = registry_data(&pinned("MEMORY_VERSION"));
    if let Some(list) = only_broken["registry"].as_array_mut() {
        list.truncate(1);
    }
    std::fs::write(&data, only_broken.to_string()).expect("data file");
    let fx = Fixture::start_with(dir.path(), &["--data", &data.display().to_string()]);
    let config = format!(
        "[variety]\nrequired = [\"memory\"]\nauto_acquire = true\nacquire_cooldown_ms = 1000\n\n\
         [mcp_servers]\ndiscovery_sources = [\"registry\"]\nregistry_url = \"{}\"\n\
         discovery_cache_ttl_ms = 0\nauto_discovery_interval_ms = 0\n",
        fx.url("ok")
    );
    let d = Daemon::start_with(Setup {
        config: Some(config),
        ..Setup::default()
    });
    let deadline = Instant::now() + INSTALL_PATIENCE;
    let tried = loop {
        let list = acquisitions(&d);
        let failed: Vec<&Value> = list.iter().filter(|a| a["state"] == "failed").collect();
        if failed.len() >= 2 {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "no second attempt: {list:?}\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for a in tried.iter().filter(|a| a["state"] == "failed") {
        assert_eq!(a["package"], BROKEN, "{a}");
        assert_eq!(a["requested_by"], "auto", "{a}");
    }
    let gaps = events(&d, "variety_gap_detected");
    assert_eq!(gaps.len(), 1, "the retry needs no new gap event: {gaps:?}");
    assert!(
        events(&d, "discovery_completed").len() >= 2,
        "each attempt asks discovery afresh"
    );
    assert!(d.stderr().contains("tried again"), "{}", d.stderr());
}

/// A gap that a registered provider would close once it is up (here one that never answers
/// its handshake) is the supervisor's to close: the cycle installs nothing for it. Once that
/// provider is unregistered, only an acquisition can close the gap, and the cycle takes it up.
#[test]
fn a_registered_provider_that_is_not_up_is_not_replaced() {
    let dir = TempDir::new("autonomy-provider");
    let (_fx, d) = start(&dir, false);
    let fixture = format!(
        "{}/tests/fixtures/mcp_fixture.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let spec = json!({"id": "slowmem", "command": "python3", "args": [fixture, "--no-initialize"],
                      "capabilities": ["memory"]});
    let (status, reply) = d.http("POST", "/api/v1/mcp/servers", Some(&spec.to_string()));
    assert_eq!(status, 200, "{reply}");
    let v = wait_until(
        "the memory gap naming slowmem",
        || variety(&d),
        |v| v["gaps"][0]["candidates"] == json!(["slowmem"]),
        |v| format!("{v:#}"),
    );
    assert_eq!(
        v["gaps"][0]["recommended_action"], "start_mcp_server",
        "{v}"
    );
    let out = d.cli(&["config", "set", "variety.auto_acquire", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Switching on takes up what is open at that moment, synchronously: had the gap counted,
    // the cycle would have asked discovery already.
    let (_, decided) = d.http(
        "POST",
        "/api/v1/vsm/systems/system5/action",
        Some(r#"{"action": "decide"}"#),
    );
    assert!(
        decided.to_string().contains("no gap is open"),
        "S5 sees no gap an acquisition should close: {decided}"
    );
    assert!(
        !d.stderr().contains("auto-acquire: looking"),
        "{}",
        d.stderr()
    );
    assert!(acquisitions(&d).is_empty());

    let (status, reply) = d.http("DELETE", "/api/v1/mcp/servers/slowmem", None);
    assert_eq!(status, 200, "{reply}");
    wait_for("the cycle to take the gap up", || {
        d.stderr()
            .contains("auto-acquire: looking for a provider of 'memory'")
    });
}

/// A candidate the cycle queued behind an operator's acquisition (here one whose trial hangs
/// until `sandbox_timeout_ms`) is taken out of the line once its gap closes while it waits:
/// it ends as `cancelled` with an event saying why, and the operator's acquisition goes on.
#[test]
fn a_queued_candidate_whose_gap_closed_is_taken_out_of_the_line() {
    let dir = TempDir::new("autonomy-unwanted");
    let built = std::process::Command::new("python3")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hang_wheel.py"))
        .arg(dir.path())
        .output()
        .expect("run hang_wheel.py");
    assert!(built.status.success(), "{}", stderr(&built));
    let data = dir.path().join("registry.json");
    std::fs::write(&data, registry_data(&pinned("MEMORY_VERSION")).to_string()).expect("data");
    let fx = Fixture::start_with(dir.path(), &["--data", &data.display().to_string()]);
    let config = format!(
        "[variety]\nauto_acquire = true\n\n\
         [mcp_servers]\ndiscovery_sources = [\"registry\"]\nregistry_url = \"{}\"\n\
         discovery_cache_ttl_ms = 0\nauto_discovery_interval_ms = 0\n\
         sandbox_timeout_ms = 300000\ninit_timeout_ms = 300000\n",
        fx.url("ok")
    );
    let d = Daemon::start_with(Setup {
        config: Some(config),
        env: vec![
            ("PIP_NO_INDEX".into(), "1".into()),
            ("PIP_FIND_LINKS".into(), dir.path().display().to_string()),
        ],
        ..Setup::default()
    });
    let (status, reply) = d.http(
        "POST",
        "/api/v1/capabilities/integrate",
        Some(r#"{"package": "pypi:vsm-hang-fixture==1.0.0"}"#),
    );
    assert_eq!(status, 202, "{reply}");
    let first = reply["data"]["acquisition_id"].clone();
    let (status, reply) = d.http(
        "POST",
        "/api/v1/capabilities/acquire",
        Some(r#"{"capability_type": "memory"}"#),
    );
    assert!(status < 300, "{reply}");
    let queued = wait_until(
        "the cycle's candidate in line",
        || acquisitions(&d),
        |list| list.iter().any(|a| a["requested_by"] == "auto"),
        |list| format!("{list:#?}\n{}", d.stderr()),
    );
    let auto = queued
        .iter()
        .find(|a| a["requested_by"] == "auto")
        .cloned()
        .expect("auto");
    assert_eq!(auto["state"], "queued", "{queued:#?}");
    let (status, reply) = d.http("DELETE", "/api/v1/capabilities/memory", None);
    assert_eq!(status, 200, "{reply}");
    let list = wait_until(
        "the candidate taken out of the line",
        || acquisitions(&d),
        |list| {
            list.iter()
                .any(|a| a["id"] == auto["id"] && a["state"] == "cancelled")
        },
        |list| format!("{list:#?}\n{}", d.stderr()),
    );
    let operator = list.iter().find(|a| a["id"] == first).expect("first");
    assert_eq!(operator["state"], "running", "{operator}");
    let failed = events(&d, "capability_acquisition_failed");
    let dropped = failed
        .iter()
        .find(|e| e["data"]["acquisition_id"] == auto["id"])
        .unwrap_or_else(|| panic!("no event for {}: {failed:?}", auto["id"]));
    assert_eq!(dropped["data"]["step"], "queued", "{dropped}");
    assert!(
        dropped["data"]["reason"]
            .to_string()
            .contains("gap it was queued for closed"),
        "{dropped}"
    );
    assert_eq!(acquisitions(&d).len(), 2, "nothing else was queued");
}
