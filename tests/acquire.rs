//! The acquisition pipeline through the real binary: real packages installed from the package
//! registries the machine's npm and pip are configured with (the versions
//! `.ci/install-test-peers` pins), vetted in the sandbox, registered, started and called;
//! a package whose tools fall under a blocked capability refused with its reasons and
//! nothing left behind; an install that fails; a fixture that hangs in the trial (a wheel
//! built by `tests/fixtures/hang_wheel.py`, installed with pip's own offline configuration).
//!
//! Installs take 10–60 s each, so these tests are few and their deadlines generous; every
//! wait is on a condition.

use crate::util::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long an acquisition may take here (a cold pip install of the time server's
/// dependencies takes about a minute).
pub(crate) const INSTALL_PATIENCE: Duration = Duration::from_secs(600);
/// `@modelcontextprotocol/server-filesystem`, an exact version whose tools map to
/// `file_system` (blocked by default).
const FILESYSTEM: &str = "npm:@modelcontextprotocol/server-filesystem@2026.8.31";

/// A version pinned in `.ci/install-test-peers` (`NAME="x.y.z"`).
pub(crate) fn pinned(name: &str) -> String {
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/install-test-peers"),
    )
    .expect("read .ci/install-test-peers");
    script
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("{name} is not pinned in .ci/install-test-peers"))
        .to_string()
}

/// Starts an acquisition over REST; returns its id.
fn integrate(d: &Daemon, body: Value) -> String {
    let (status, reply) = d.http(
        "POST",
        "/api/v1/capabilities/integrate",
        Some(&body.to_string()),
    );
    assert_eq!(status, 202, "{reply}");
    reply["data"]["acquisition_id"]
        .as_str()
        .expect("acquisition_id")
        .to_string()
}

/// Waits until acquisition `id` is no longer queued or running; returns it.
pub(crate) fn finished(d: &Daemon, id: &str) -> Value {
    let deadline = Instant::now() + INSTALL_PATIENCE;
    loop {
        let (status, reply) = d.http(
            "GET",
            &format!("/api/v1/capabilities/acquisitions/{id}"),
            None,
        );
        assert_eq!(status, 200, "{reply}");
        let data = reply["data"].clone();
        if !matches!(data["state"].as_str(), Some("queued" | "running")) {
            return data;
        }
        assert!(
            Instant::now() < deadline,
            "acquisition {id} still {} at {}: {data}\n{}",
            data["state"],
            data["step"],
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn servers(d: &Daemon) -> Vec<String> {
    let (_, list) = d.http("GET", "/api/v1/mcp/servers", None);
    list["data"]["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_str().map(String::from))
        .collect()
}

pub(crate) fn events(d: &Daemon, kind: &str) -> Vec<Value> {
    let (_, reply) = d.http("GET", &format!("/api/v1/events?type={kind}"), None);
    reply["data"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn decisions(d: &Daemon, query: &str) -> Value {
    let (status, reply) = d.http("GET", &format!("/api/v1/decisions{query}"), None);
    assert_eq!(status, 200, "{reply}");
    reply["data"].clone()
}

/// `mcp register pypi:mcp-server-time==PIN` (CLI) and the memory server (REST) install, pass,
/// register, start and answer a tool call; each step is reported; the decisions are persisted
/// and, like the servers, come back after a restart.
#[test]
fn real_packages_are_installed_vetted_registered_and_answer_tool_calls() {
    let dir = TempDir::new("acquire");
    let state = dir.path().join("state");
    let d = Daemon::start_in(
        TempDir::new("acquire-run"),
        Setup {
            state_dir: Some(state.clone()),
            ..Setup::default()
        },
    )
    .expect("daemon");
    let time = format!("pypi:mcp-server-time=={}", pinned("TIME_VERSION"));
    let out = d.cli(&["mcp", "register", &time]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    for step in [
        "validate",
        "install",
        "entry_point",
        "sandbox_trial",
        "assessment",
        "register",
        "verify",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(step)),
            "{step} not reported:\n{text}"
        );
    }
    assert!(
        text.contains("acquired: server 'mcp-server-time'"),
        "{text}"
    );
    let (code, called) = d.cli_json(&[
        "mcp",
        "call",
        "mcp-server-time",
        "get_current_time",
        r#"{"timezone": "UTC"}"#,
    ]);
    assert_eq!(code, 0, "{called}");
    assert!(called.to_string().contains("UTC"), "{called}");

    let memory = format!(
        "npm:@modelcontextprotocol/server-memory@{}",
        pinned("MEMORY_VERSION")
    );
    let id = integrate(&d, json!({"package": memory}));
    let acq = finished(&d, &id);
    assert_eq!(acq["state"], "acquired", "{acq}");
    let server = "modelcontextprotocol-server-memory";
    assert_eq!(acq["result"]["server_id"], server);
    let criteria = acq["result"]["assessment"]["criteria"]
        .as_array()
        .expect("criteria");
    let install_scripts = criteria
        .iter()
        .find(|c| c["name"] == "no_install_scripts")
        .expect("no_install_scripts");
    assert_eq!(install_scripts["verdict"], "pass", "{install_scripts}");
    let (code, graph) = d.cli_json(&["mcp", "call", server, "read_graph", "{}"]);
    assert_eq!(code, 0, "{graph}");
    assert!(graph.to_string().contains("entities"), "{graph}");

    let acquired = events(&d, "capability_acquired");
    assert_eq!(acquired.len(), 2, "{acquired:?}");
    assert_eq!(acquired[1]["data"]["server_id"], server);
    assert!(acquired[1]["data"]["capabilities"]
        .as_array()
        .is_some_and(|c| c.contains(&json!("memory"))));
    let progress = events(&d, "capability_acquisition_progress");
    assert!(progress.len() >= 14, "{progress:?}");
    let kept = decisions(&d, "?verdict=approved");
    assert_eq!(
        kept["decisions"].as_array().map(Vec::len),
        Some(2),
        "{kept}"
    );
    assert_eq!(kept["decisions"][0]["requested_by"], "api");
    assert!(kept["decisions"][0]["score"]
        .as_u64()
        .is_some_and(|s| s >= 70));

    // A restart: the servers come back (servers.json) and so do the decisions.
    drop(d);
    let d = Daemon::start_in(
        TempDir::new("acquire-run"),
        Setup {
            state_dir: Some(state.clone()),
            ..Setup::default()
        },
    )
    .expect("daemon after restart");
    let again = decisions(&d, "");
    assert_eq!(again["decisions"], kept["decisions"], "{again}");
    assert_eq!(decisions(&d, "?since=1")["decisions"][0]["id"], 2);
    wait_until(
        "both servers active again",
        || d.http("GET", "/api/v1/mcp/servers?status=active", None).1,
        |v| v["data"]["servers"].as_array().map(Vec::len) == Some(2),
        |v| format!("{v}"),
    );
}

/// The filesystem server is refused with its reasons (its tools map to `file_system`,
/// blocked by default) and leaves nothing installed or registered; a version that does not
/// exist fails at the install with the package manager's reason; both leave decision or
/// failure records and events.
#[test]
fn a_blocked_package_is_refused_and_a_missing_version_fails_leaving_nothing() {
    let d = Daemon::start();
    let out = d.cli(&["mcp", "register", FILESYSTEM]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}\n{err}", stdout(&out));
    assert!(err.contains("refused at assessment"), "{err}");
    assert!(
        err.contains("maps to capability file_system")
            && err.contains("security.blocked_capabilities"),
        "{err}"
    );
    let slug = "modelcontextprotocol-server-filesystem";
    // The trial server stops gracefully (stdin closed, then signals) and is removed.
    wait_until(
        "nothing registered",
        || servers(&d),
        Vec::is_empty,
        |s| format!("{s:?}"),
    );
    let dir = d.state_dir.join("servers").join(slug);
    wait_for("the install directory removed", || !dir.exists());
    let refused = decisions(&d, "?verdict=refused");
    let record = &refused["decisions"][0];
    assert_eq!(record["package"], FILESYSTEM, "{refused}");
    assert!(record["reasons"][0]
        .as_str()
        .is_some_and(|r| r.contains("file_system")));
    assert_eq!(record["criteria"].as_array().map(Vec::len), Some(7));
    let failed = events(&d, "capability_acquisition_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["data"]["step"], "assessment");
    // S5 (policy) counts the verdict, and reflection answers for it by its number.
    let (code, s5) = d.cli_json(&["systems", "status", "system5"]);
    assert_eq!(code, 0, "{s5}");
    assert!(
        s5["by_kind"]["acquisition_verdict"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{s5}"
    );
    assert!(
        s5["decisions_made"].as_u64().is_some_and(|n| n >= 1),
        "{s5}"
    );
    let number = record["id"]
        .as_u64()
        .expect("the decision's number")
        .to_string();
    let (code, answer) = d.cli_json(&["query", "decision", &number]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["events"][0]["subject"], FILESYSTEM, "{answer}");

    let id = integrate(
        &d,
        json!({"package": "npm:@modelcontextprotocol/server-memory@9999.0.0"}),
    );
    let acq = finished(&d, &id);
    assert_eq!(acq["state"], "failed", "{acq}");
    assert_eq!(acq["result"]["failed_step"], "install", "{acq}");
    let reason = acq["result"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("install command failed") && reason.contains("9999.0.0"),
        "{reason}"
    );
    let dir = d
        .state_dir
        .join("servers/modelcontextprotocol-server-memory");
    wait_for("the failed install's directory removed", || !dir.exists());
    assert!(servers(&d).is_empty());
    // A failure before the assessment is no decision.
    assert_eq!(
        decisions(&d, "")["decisions"].as_array().map(Vec::len),
        Some(1)
    );

    // Bad requests are refused before anything runs.
    for (body, field) in [
        (json!({"package": "npm:x@^1.0.0"}), "package"),
        (json!({"package": "npm:--registry=evil@1.0.0"}), "package"),
        (json!({"nothing": 1}), "package"),
    ] {
        let (status, reply) = d.http(
            "POST",
            "/api/v1/capabilities/integrate",
            Some(&body.to_string()),
        );
        assert_eq!(status, 400, "{body}: {reply}");
        assert_eq!(reply["errors"][0]["field"], field, "{reply}");
    }
    let (status, reply) = d.http("GET", "/api/v1/capabilities/acquisitions/acq-99", None);
    assert_eq!(status, 404, "{reply}");
    let (status, _) = d.http("GET", "/api/v1/decisions?verdict=maybe", None);
    assert_eq!(status, 400);
}

/// A server that never answers the handshake hits `mcp_servers.sandbox_timeout_ms` in the
/// trial: refused (its tools are unknown), the trial server gone, nothing installed.
#[test]
fn a_package_that_hangs_in_the_trial_hits_the_sandbox_timeout() {
    let wheels = TempDir::new("wheels");
    let built = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hang_wheel.py"))
        .arg(wheels.path())
        .output()
        .expect("run hang_wheel.py");
    assert!(built.status.success(), "{}", stderr(&built));
    let d = Daemon::start_with(Setup {
        config: Some("[mcp_servers]\nsandbox_timeout_ms = 2000\ninit_timeout_ms = 60000\n".into()),
        env: vec![
            ("PIP_NO_INDEX".into(), "1".into()),
            ("PIP_FIND_LINKS".into(), wheels.path().display().to_string()),
        ],
        ..Setup::default()
    });
    let id = integrate(&d, json!({"package": "pypi:vsm-hang-fixture==1.0.0"}));
    let acq = finished(&d, &id);
    assert_eq!(acq["state"], "refused", "{acq}");
    let trial = &acq["result"]["trial"];
    assert_eq!(trial["outcome"], "timeout", "{acq}");
    assert!(
        trial["stderr_tail"].to_string().contains("never answering"),
        "the trial watched stderr: {trial}"
    );
    let reasons = acq["result"]["assessment"]["reasons"].to_string();
    assert!(
        reasons.contains("sandbox_timeout_ms (2000 ms)"),
        "{reasons}"
    );
    wait_until(
        "the trial server gone",
        || servers(&d),
        Vec::is_empty,
        |s| format!("{s:?}"),
    );
    let dir = d.state_dir.join("servers/vsm-hang-fixture");
    wait_for("the install directory removed", || !dir.exists());
}

/// The data of a state file (its envelope's `data`).
fn state_data(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("state file");
    serde_json::from_str::<Value>(&text).expect("json")["data"].clone()
}

fn env_tool(d: &Daemon, id: &str) -> String {
    let (code, v) = d.cli_json(&["mcp", "call", id, "env", r#"{"name": "VSM_TEST_SECRET"}"#]);
    assert_eq!(code, 0, "{v}");
    v.to_string()
}

/// Environment values of registered servers live in the 0600 secrets file: `servers.json`
/// (and its backup), answers, events and logs show `***`, the server gets the value; a
/// `servers.json` of an earlier version holding a value is migrated at start without losing it.
#[test]
fn secrets_never_reach_servers_json_answers_events_or_logs() {
    use std::os::unix::fs::PermissionsExt;
    let state = TempDir::new("secrets-state");
    let setup = || Setup {
        state_dir: Some(state.path().to_path_buf()),
        ..Setup::default()
    };
    let d = Daemon::start_in(TempDir::new("secrets"), setup()).expect("daemon");
    let secret = "s3cret-v4lue-0f-the-test";
    let fixture = format!(
        "{}/tests/fixtures/mcp_fixture.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let spec = json!({"id": "withenv", "command": "python3", "args": [fixture],
                      "env": {"VSM_TEST_SECRET": secret}});
    let (status, reply) = d.http("POST", "/api/v1/mcp/servers", Some(&spec.to_string()));
    assert_eq!(status, 200, "{reply}");
    assert!(!reply.to_string().contains(secret), "{reply}");
    assert_eq!(
        reply["data"]["spec"]["env"]["VSM_TEST_SECRET"], "***",
        "{reply}"
    );
    wait_until(
        "withenv active",
        || d.http("GET", "/api/v1/mcp/servers/withenv", None).1,
        |v| v["data"]["status"] == "active",
        |v| format!("{v}"),
    );
    assert!(
        env_tool(&d, "withenv").contains(secret),
        "the server gets the value"
    );

    let registry = std::fs::read_to_string(state.path().join("servers.json")).unwrap();
    assert!(!registry.contains(secret), "{registry}");
    assert_eq!(
        state_data(&state.path().join("servers.json"))[0]["env"]["VSM_TEST_SECRET"],
        "***"
    );
    let secrets_path = state.path().join("secrets.json");
    assert_eq!(
        state_data(&secrets_path)["withenv"]["VSM_TEST_SECRET"],
        secret
    );
    let mode = std::fs::metadata(&secrets_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let (_, shown) = d.http("GET", "/api/v1/mcp/servers/withenv", None);
    let out = d.cli(&["mcp", "show", "withenv"]);
    let (_, events) = d.http("GET", "/api/v1/events", None);
    for (what, text) in [
        ("show", shown.to_string()),
        ("cli", stdout(&out)),
        ("events", events.to_string()),
        ("log", d.stderr()),
    ] {
        assert!(!text.contains(secret), "{what} shows the value: {text}");
    }
    drop(d);

    // An earlier version's servers.json, with the value in the clear and no secrets file.
    let path = state.path().join("servers.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let old = "migr4ted-v4lue";
    doc["data"][0]["env"]["VSM_TEST_SECRET"] = json!(old);
    std::fs::write(&path, doc.to_string()).unwrap();
    std::fs::remove_file(&secrets_path).unwrap();
    let d = Daemon::start_in(TempDir::new("secrets"), setup()).expect("daemon again");
    wait_until(
        "withenv active again",
        || d.http("GET", "/api/v1/mcp/servers/withenv", None).1,
        |v| v["data"]["status"] == "active",
        |v| format!("{v}"),
    );
    assert!(
        env_tool(&d, "withenv").contains(old),
        "the value survived the migration"
    );
    for file in ["servers.json", "servers.json.bak"] {
        let text = std::fs::read_to_string(state.path().join(file)).unwrap();
        assert!(!text.contains(old), "{file}: {text}");
    }
    assert_eq!(state_data(&secrets_path)["withenv"]["VSM_TEST_SECRET"], old);

    // Unregistered: the value leaves the secrets file after the registry stops naming it.
    let (status, reply) = d.http("DELETE", "/api/v1/mcp/servers/withenv", None);
    assert_eq!(status, 200, "{reply}");
    wait_until(
        "the value removed from the secrets file",
        || state_data(&secrets_path),
        |v| v.get("withenv").is_none(),
        |v| format!("{v}"),
    );
}

/// An acquisition carries the server's environment (`env`): the trial and the registered
/// server get the values; the acquisition, its events, the decisions, `servers.json` and the
/// log show only the names. A registry entry whose required variable is not given is refused
/// before anything is installed, naming it.
#[test]
fn an_acquisition_carries_environment_values_that_are_never_shown() {
    let wheels = TempDir::new("fixture-wheel");
    let built = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fixture_wheel.py"))
        .arg(wheels.path())
        .output()
        .expect("run fixture_wheel.py");
    assert!(built.status.success(), "{}", stderr(&built));
    let d = Daemon::start_with(Setup {
        env: vec![
            ("PIP_NO_INDEX".into(), "1".into()),
            ("PIP_FIND_LINKS".into(), wheels.path().display().to_string()),
        ],
        ..Setup::default()
    });
    let entry = |env: Value| {
        json!({"server": {"name": "io.example/fixture", "version": "1.0.0", "packages": [
                  {"registryType": "pypi", "identifier": "vsm-mcp-fixture", "version": "1.0.0",
                   "transport": {"type": "stdio"},
                   "environmentVariables": [
                      {"name": "VSM_TEST_SECRET", "isRequired": true, "isSecret": true},
                      {"name": "VSM_TEST_MODE", "default": "quiet"}]}]},
               "env": env})
    };
    let (status, reply) = d.http(
        "POST",
        "/api/v1/capabilities/integrate",
        Some(&entry(json!({})).to_string()),
    );
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["errors"][0]["field"], "env", "{reply}");
    assert!(reply.to_string().contains("VSM_TEST_SECRET"), "{reply}");
    assert!(servers(&d).is_empty());

    let secret = "acqu1red-s3cret-v4lue";
    let id = integrate(&d, entry(json!({"VSM_TEST_SECRET": secret})));
    let acq = finished(&d, &id);
    assert_eq!(acq["state"], "acquired", "{acq}\n{}", d.stderr());
    assert_eq!(
        acq["env"],
        json!(["VSM_TEST_MODE", "VSM_TEST_SECRET"]),
        "{acq}"
    );
    let server = acq["server_id"].as_str().expect("server_id").to_string();
    assert!(
        env_tool(&d, &server).contains(secret),
        "the server gets the value"
    );

    let (_, shown) = d.http("GET", &format!("/api/v1/mcp/servers/{server}"), None);
    assert_eq!(
        shown["data"]["spec"]["env"]["VSM_TEST_MODE"], "***",
        "{shown}"
    );
    let (_, all_events) = d.http("GET", "/api/v1/events?limit=1000", None);
    let registry = std::fs::read_to_string(d.state_dir.join("servers.json")).expect("servers.json");
    for (what, text) in [
        ("acquisition", acq.to_string()),
        (
            "list",
            d.http("GET", "/api/v1/capabilities/acquisitions", None)
                .1
                .to_string(),
        ),
        ("decisions", decisions(&d, "").to_string()),
        ("server", shown.to_string()),
        ("events", all_events.to_string()),
        ("servers.json", registry),
        ("log", d.stderr()),
    ] {
        assert!(!text.contains(secret), "{what} shows the value: {text}");
    }
}
