//! Persistence and configuration under attack (issue #7): a change is acknowledged only once
//! it is on disk, state documents this daemon does not understand are never overwritten,
//! stored overrides with unknown keys do not block `config set`, config lists are bounded, and
//! the config file is read without blocking on what is not a regular file.

use crate::util::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A spec that never spawns anything (`autostart: false`), padded so that the registry grows
/// by a few hundred bytes per server.
fn idle_spec(id: &str) -> String {
    json!({"id": id, "command": "true", "autostart": false, "args": ["x".repeat(200)]}).to_string()
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]["servers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn listed(d: &Daemon) -> Vec<String> {
    let (status, list) = d.http("GET", "/api/v1/mcp/servers", None);
    assert_eq!(status, 200, "{list}");
    ids(&list)
}

/// The ids in `servers.json` as it is on disk.
fn ids_on_disk(state: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(state.join("servers.json")).unwrap_or_default();
    let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let mut ids: Vec<String> = doc["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

fn code(answer: &Value) -> &str {
    answer["errors"][0]["code"].as_str().unwrap_or("")
}

fn message(answer: &Value) -> &str {
    answer["errors"][0]["message"].as_str().unwrap_or("")
}

/// Polls the health route until the state component reports unhealthy; returns its message.
fn state_unhealthy(d: &Daemon) -> String {
    let (_, health) = wait_until(
        "the state health check to fail",
        || d.http("GET", "/api/v1/health?component=state", None),
        |(status, h)| *status == 503 && h["data"]["components"]["state"]["healthy"] == false,
        |(status, h)| format!("{status} {h}"),
    );
    health["data"]["components"]["state"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Starts a daemon on an existing state dir, in a fresh temp dir.
fn start_on(state: &Path, config: Option<&str>) -> Daemon {
    Daemon::start_with(Setup {
        state_dir: Some(state.to_path_buf()),
        config: config.map(String::from),
        ..Setup::default()
    })
}

#[test]
fn registry_write_failure_changes_nothing_and_fails_health() {
    let d = Daemon::start();
    let (status, r) = d.http("POST", "/api/v1/mcp/servers", Some(&idle_spec("a")));
    assert_eq!(status, 200, "{r}");
    let registry = d.state_dir.join("servers.json");
    std::fs::remove_file(&registry).expect("remove servers.json");
    std::fs::create_dir(&registry).expect("servers.json as a directory");

    let (status, r) = d.http("POST", "/api/v1/mcp/servers", Some(&idle_spec("b")));
    assert_eq!(status, 500, "{r}");
    assert_eq!(code(&r), "persist_failed", "{r}");
    assert!(
        message(&r).contains("servers.json") && message(&r).contains("not a regular file"),
        "{r}"
    );
    let (status, r) = d.http("DELETE", "/api/v1/mcp/servers/a", None);
    assert_eq!((status, code(&r)), (500, "persist_failed"), "{r}");
    assert_eq!(
        listed(&d),
        ["a"],
        "nothing registered, nothing unregistered"
    );

    let why = state_unhealthy(&d);
    assert!(why.contains("servers.json is not a regular file"), "{why}");
    let (exit, diag) = d.cli_json(&["diagnostics", "run"]);
    assert_eq!(exit, 1, "{diag}");
    let check = diag["data"]["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "state.documents").cloned())
        .unwrap_or(Value::Null);
    assert_eq!(check["status"], "fail", "{diag}");

    // Once the path is a file again, changes go through and survive a restart.
    std::fs::remove_dir(&registry).expect("rmdir");
    let (status, r) = d.http("POST", "/api/v1/mcp/servers", Some(&idle_spec("b")));
    assert_eq!(status, 200, "{r}");
    assert_eq!(ids_on_disk(&d.state_dir), ["a", "b"]);
    let dir = d.kill9();
    let d = start_on(&dir.path().join("state"), None);
    assert_eq!(listed(&d), ["a", "b"]);
}

/// Unmounts on drop (after the daemons using it are gone: declare it first).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        // SAFETY: geteuid has no arguments and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "this test mounts a tmpfs and must run as root (CI does); it does not skip"
        );
        std::fs::create_dir_all(path).expect("mkdir mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        Tmpfs(path.to_path_buf())
    }

    /// Gives the filesystem a new size (tmpfs can grow in place).
    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(status.success(), "remounting the tmpfs failed: {status}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.0).status();
        if !ok.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Fills the filesystem of `dir` with `dir/filler` until writes fail.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let chunk = [0u8; 1024];
    while f.write_all(&chunk).and_then(|()| f.sync_all()).is_ok() {}
    path
}

#[test]
fn full_state_dir_acknowledges_only_what_is_on_disk() {
    let dir = TempDir::new("full");
    let state = dir.path().join("state");
    let mount = Tmpfs::mount(&state, "64k");
    let d = start_on(&state, None);

    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    for n in 0..1000 {
        let id = format!("s{n:03}");
        let (status, r) = d.http("POST", "/api/v1/mcp/servers", Some(&idle_spec(&id)));
        match status {
            200 => accepted.push(id),
            507 => {
                assert_eq!(code(&r), "insufficient_storage", "{r}");
                assert!(message(&r).contains("servers.json"), "{r}");
                refused.push(id);
            }
            _ => panic!("register {id}: {status} {r}"),
        }
        if refused.len() >= 5 {
            break;
        }
    }
    assert!(
        accepted.len() >= 10 && refused.len() == 5,
        "{} accepted, refused {refused:?}: a 64 KiB state dir must fill up",
        accepted.len()
    );
    eprintln!("tmpfs: {} accepted, refused {refused:?}", accepted.len());
    let mut in_memory = listed(&d);
    in_memory.sort();
    assert_eq!(
        in_memory, accepted,
        "refused registrations are not in memory"
    );
    assert_eq!(ids_on_disk(&state), accepted);

    // Unregister on a disk with no room at all: refused, nothing changed.
    let filler = fill(&state);
    let victim = accepted[0].clone();
    let (status, r) = d.http("DELETE", &format!("/api/v1/mcp/servers/{victim}"), None);
    assert_eq!((status, code(&r)), (507, "insufficient_storage"), "{r}");
    assert!(listed(&d).contains(&victim));
    let why = state_unhealthy(&d);
    assert!(why.contains("No space left"), "{why}");
    // Room again (more than the filler held: the registry was already full before it).
    std::fs::remove_file(&filler).expect("rm filler");
    mount.resize("1m");
    let (status, r) = d.http("DELETE", &format!("/api/v1/mcp/servers/{victim}"), None);
    assert_eq!(status, 200, "{r}");
    accepted.remove(0);

    let kept = d.kill9();
    let d = start_on(&state, None);
    let mut after = listed(&d);
    after.sort();
    assert_eq!(
        after, accepted,
        "a restart loads exactly what was acknowledged"
    );
    assert_eq!(ids_on_disk(&state), accepted);
    drop(d);
    drop(kept);
}

#[test]
fn state_documents_from_a_newer_daemon_are_never_overwritten() {
    let dir = TempDir::new("newer");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    let newer = |data: Value| {
        let doc = json!({"version": 99, "written_at": "2030-01-01T00:00:00.000Z", "data": data});
        serde_json::to_vec(&doc).expect("json")
    };
    let servers = newer(json!([{"id": "future", "command": "true", "shiny": true}]));
    let overrides = newer(json!({"daemon": {"log_level": "debug"}}));
    std::fs::write(state.join("servers.json"), &servers).expect("write");
    std::fs::write(state.join("overrides.json"), &overrides).expect("write");
    let config = "[[servers]]\nid = \"cfg\"\ncommand = \"true\"\nautostart = false\n";
    let d = start_on(&state, Some(config));

    assert_eq!(
        listed(&d),
        ["cfg"],
        "servers from the config file still come up"
    );
    let (status, r) = d.http("POST", "/api/v1/mcp/servers", Some(&idle_spec("new")));
    assert_eq!((status, code(&r)), (409, "state_read_only"), "{r}");
    assert!(
        message(&r).contains("servers.json") && message(&r).contains("version 99"),
        "{r}"
    );
    let out = d.cli(&["config", "set", "daemon.log_level", "trace"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stderr(&out) + &stdout(&out);
    assert!(
        text.contains("overrides.json") && text.contains("version 99"),
        "{text}"
    );
    assert_eq!(listed(&d), ["cfg"]);
    assert_eq!(
        std::fs::read(state.join("servers.json")).expect("read"),
        servers
    );
    assert_eq!(
        std::fs::read(state.join("overrides.json")).expect("read"),
        overrides
    );

    let why = state_unhealthy(&d);
    assert!(
        why.contains("servers.json") && why.contains("overrides.json") && why.contains("99"),
        "{why}"
    );
    let (exit, diag) = d.cli_json(&["diagnostics", "run"]);
    assert_eq!(exit, 1, "{diag}");
    let check = diag["data"]["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "state.documents").cloned())
        .unwrap_or(Value::Null);
    assert_eq!(check["status"], "fail", "{diag}");
    assert!(
        check["detail"]
            .as_str()
            .unwrap_or("")
            .contains("servers.json"),
        "{check}"
    );
}

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success());
}

#[test]
fn config_file_that_is_not_a_small_regular_file_is_refused_without_blocking() {
    let d = Daemon::start_with(Setup {
        config: Some("[daemon]\nlog_level = \"debug\"\n".into()),
        ..Setup::default()
    });
    let path = d.config_path.clone().expect("config path");
    mkfifo(&path);
    d.signal(libc::SIGHUP);
    wait_for("the refused reload in the log", || {
        d.stderr().contains("reload refused")
    });
    assert!(d.stderr().contains("not a regular file"), "{}", d.stderr());
    // The loop answers (a FIFO read would have hung it until someone wrote to the FIFO).
    let (status, r) = d.http("POST", "/api/v1/config/reload", None);
    assert_eq!((status, code(&r)), (400, "config_invalid"), "{r}");
    assert!(message(&r).contains("not a regular file"), "{r}");
    let (status, r) = d.http("GET", "/api/v1/config?section=daemon", None);
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r["data"]["config"]["log_level"], "debug",
        "old config in effect"
    );

    // A huge file is refused by its size, not read.
    std::fs::remove_file(&path).expect("rm fifo");
    let mut big = String::from("[daemon]\nlog_level = \"info\"\n");
    big.push_str(&"# padding\n".repeat(110_000));
    std::fs::write(&path, big).expect("write big config");
    let (status, r) = d.http("POST", "/api/v1/config/reload", None);
    assert_eq!((status, code(&r)), (400, "config_invalid"), "{r}");
    assert!(message(&r).contains("allowed"), "{r}");
    let (_, r) = d.http("GET", "/api/v1/config?section=daemon", None);
    assert_eq!(r["data"]["config"]["log_level"], "debug");

    // At start too: a FIFO named by --config makes `start` fail at once with the reason.
    let dir = TempDir::new("fifo-start");
    let fifo = dir.path().join("config.toml");
    mkfifo(&fifo);
    let mut child = Command::new(bin())
        .arg("start")
        .arg("--config")
        .arg(&fifo)
        .arg("--socket")
        .arg(dir.path().join("control.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("start --config FIFO hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut err = String::new();
    use std::io::Read;
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    assert!(!status.success(), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
}

/// `GET /api/v1/config`: the envelope, so `data` holds config, overrides and the warning.
fn config_show(d: &Daemon) -> Value {
    let (status, show) = d.http("GET", "/api/v1/config", None);
    assert_eq!(status, 200, "{show}");
    show
}

#[test]
fn unknown_stored_override_keys_are_kept_reported_and_do_not_block_config_set() {
    let dir = TempDir::new("unknown-overrides");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    let stored = json!({"version": 1, "written_at": "2026-01-01T00:00:00.000Z", "data": {
        "daemon": {"log_level": "debug", "future_key": 5},
        "future_section": {"x": 1},
    }});
    std::fs::write(state.join("overrides.json"), stored.to_string()).expect("write");
    let d = start_on(&state, None);
    assert!(
        d.stderr().contains("daemon.future_key, future_section.x"),
        "a log line at load: {}",
        d.stderr()
    );
    let show = config_show(&d);
    let warning = show["data"]["overrides_warning"].as_str().unwrap_or("");
    assert!(warning.contains("daemon.future_key"), "{show}");
    assert_eq!(
        show["data"]["config"]["daemon"]["log_level"], "debug",
        "known keys apply"
    );

    for (key, value) in [
        ("http.max_connections", "9"),
        ("daemon.log_level", "default"),
        ("daemon.log_level", "warn"),
    ] {
        let out = d.cli(&["config", "set", key, value]);
        assert!(
            out.status.success(),
            "config set {key} {value}: {}",
            stderr(&out)
        );
    }
    let show = config_show(&d);
    assert_eq!(show["data"]["config"]["daemon"]["log_level"], "warn");
    assert_eq!(show["data"]["config"]["http"]["max_connections"], 9);
    assert!(show["data"]["overrides_warning"].is_string(), "{show}");
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(state.join("overrides.json")).expect("read"))
            .expect("json");
    assert_eq!(
        on_disk["data"],
        json!({"daemon": {"log_level": "warn", "future_key": 5}, "future_section": {"x": 1},
               "http": {"max_connections": 9}}),
        "unknown keys are kept for the daemon that wrote them"
    );
    // New unknown keys are still refused; removing a stored one is allowed.
    let (status, r) = d.http("PUT", "/api/v1/config", Some(r#"{"daemon": {"nope": 1}}"#));
    assert_eq!((status, code(&r)), (404, "config_key_not_found"), "{r}");
    let patch = r#"{"future_section": null, "daemon": {"future_key": null}}"#;
    let (status, r) = d.http("PUT", "/api/v1/config", Some(patch));
    assert_eq!(status, 200, "{r}");
    let show = config_show(&d);
    assert!(show["data"]["overrides_warning"].is_null(), "{show}");
}

#[test]
fn a_huge_config_list_is_refused_at_once_and_the_loop_stays_responsive() {
    let d = Daemon::start();
    let hosts: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
    let body = json!({"http": {"allowed_hosts": hosts}}).to_string();
    assert!(
        body.len() < 1024 * 1024,
        "{} bytes: under the body limit",
        body.len()
    );
    let started = std::time::Instant::now();
    let (status, r) = d.http("PUT", "/api/v1/config", Some(&body));
    eprintln!("PUT of 100,000 hosts answered in {:?}", started.elapsed());
    assert_eq!((status, code(&r)), (400, "config_invalid"), "{r}");
    assert_eq!(r["errors"][0]["field"], "http.allowed_hosts", "{r}");
    assert!(message(&r).contains("at most 256 items"), "{r}");
    let (status, r) = d.http("GET", "/api/v1/status", None);
    assert_eq!(status, 200, "{r}");
    // The largest list that is accepted is accepted whole.
    let hosts: Vec<String> = (0..256).map(|i| format!("host-{i}.lan")).collect();
    let body = json!({"http": {"allowed_hosts": hosts}}).to_string();
    let (status, r) = d.http("PUT", "/api/v1/config", Some(&body));
    assert_eq!(status, 200, "{r}");
    let (_, show) = d.http("GET", "/api/v1/config?section=http", None);
    assert_eq!(
        show["data"]["config"]["allowed_hosts"]
            .as_array()
            .map(Vec::len),
        Some(256)
    );
}

fn fixture() -> String {
    format!(
        "{}/tests/fixtures/mcp_fixture.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Polls `GET /api/v1/mcp/servers/ID` until it is active; returns its pid.
fn active_pid(d: &Daemon, id: &str) -> i32 {
    let (_, show) = wait_until(
        &format!("{id} to be active"),
        || d.http("GET", &format!("/api/v1/mcp/servers/{id}"), None),
        |(_, s)| s["data"]["status"] == "active" && s["data"]["pid"].is_i64(),
        |(status, s)| format!("{status} {s}"),
    );
    show["data"]["pid"].as_i64().unwrap_or(0) as i32
}

#[test]
fn unregister_stops_the_server_only_once_its_removal_is_saved() {
    let d = Daemon::start();
    let spec = json!({"id": "fx", "command": "python3", "args": [fixture()]}).to_string();
    let (status, r) = d.http("POST", "/api/v1/mcp/servers", Some(&spec));
    assert_eq!(status, 200, "{r}");
    let pid = active_pid(&d, "fx");
    let registry = d.state_dir.join("servers.json");
    std::fs::remove_file(&registry).expect("rm");
    std::fs::create_dir(&registry).expect("mkdir");

    let (status, r) = d.http("DELETE", "/api/v1/mcp/servers/fx", None);
    assert_eq!((status, code(&r)), (500, "persist_failed"), "{r}");
    assert_eq!(active_pid(&d, "fx"), pid, "still running, same process");
    // SAFETY: kill with signal 0 only checks that the process exists.
    assert_eq!(
        unsafe { libc::kill(pid, 0) },
        0,
        "the server was not stopped"
    );

    std::fs::remove_dir(&registry).expect("rmdir");
    let (status, r) = d.http("DELETE", "/api/v1/mcp/servers/fx", None);
    assert_eq!(status, 200, "{r}");
    wait_for("fx to be gone", || listed(&d).is_empty());
    assert!(ids_on_disk(&d.state_dir).is_empty());
}

/// `chattr -i` on drop, so a failing test leaves a removable directory.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        let status = Command::new("chattr").arg("+i").arg(path).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "chattr +i {} failed: this test needs root and a filesystem with the immutable flag",
            path.display()
        );
        Immutable(path.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn immutable_state_dir_refuses_changes_and_fails_health() {
    let d = Daemon::start();
    let (status, r) = d.http("POST", "/api/v1/mcp/servers", Some(&idle_spec("a")));
    assert_eq!(status, 200, "{r}");
    let _guard = Immutable::set(&d.state_dir);

    let (status, r) = d.http("POST", "/api/v1/mcp/servers", Some(&idle_spec("b")));
    assert_eq!((status, code(&r)), (500, "persist_failed"), "{r}");
    let (status, r) = d.http("DELETE", "/api/v1/mcp/servers/a", None);
    assert_eq!((status, code(&r)), (500, "persist_failed"), "{r}");
    let out = d.cli(&["config", "set", "http.max_connections", "9"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(listed(&d), ["a"]);
    let (_, show) = d.http("GET", "/api/v1/config?section=http", None);
    assert_eq!(show["data"]["config"]["max_connections"], 256);
    let why = state_unhealthy(&d);
    assert!(
        why.contains("not writable") && why.contains(&d.state_dir.display().to_string()),
        "{why}"
    );
}

#[test]
fn registry_writes_run_off_the_loop_and_coalesce() {
    let d = Daemon::start_with(Setup {
        config: Some("[daemon]\nlog_level = \"debug\"\n".into()),
        ..Setup::default()
    });
    // A FIFO where the temp file goes holds the write (on the worker) until it is read.
    let tmp = d.state_dir.join("servers.json.tmp");
    mkfifo(&tmp);
    let post = |id: &str| d.http("POST", "/api/v1/mcp/servers", Some(&idle_spec(id)));
    std::thread::scope(|s| {
        let a = s.spawn(|| post("a"));
        // The loop answers while the write hangs: it is not on the loop.
        wait_until(
            "the loop to answer while the write of a hangs",
            || (d.http("GET", "/api/v1/status", None).0, d.stderr()),
            |(status, log)| *status == 200 && log.contains("saving servers.json (1 change(s))"),
            |(status, _)| format!("status {status}"),
        );
        // Validated against the registry as it will be: a is pending.
        let (status, r) = post("a");
        assert_eq!((status, code(&r)), (409, "conflict"), "{r}");
        let b = s.spawn(|| post("b"));
        let c = s.spawn(|| post("c"));
        wait_for("b and c to wait behind the write in flight", || {
            let log = d.stderr();
            log.contains("change to b waits") && log.contains("change to c waits")
        });
        assert!(listed(&d).is_empty(), "nothing applied before it is saved");
        // Let the write go on: fsync of a FIFO fails, so a is refused; b and c then go out
        // together in one write and are acknowledged.
        let mut drained = Vec::new();
        use std::io::Read;
        std::fs::File::open(&tmp)
            .and_then(|mut f| f.read_to_end(&mut drained))
            .expect("drain the FIFO");
        let (status, r) = a.join().expect("a");
        assert_eq!((status, code(&r)), (500, "persist_failed"), "{r}");
        for t in [b, c] {
            let (status, r) = t.join().expect("b, c");
            assert_eq!(status, 200, "{r}");
        }
    });
    assert!(
        d.stderr().contains("saving servers.json (2 change(s))"),
        "coalesced"
    );
    assert_eq!(ids_on_disk(&d.state_dir), ["b", "c"]);
    let mut now = listed(&d);
    now.sort();
    assert_eq!(now, ["b", "c"]);
}

#[test]
fn without_a_worker_registry_writes_still_happen_before_the_answer() {
    let d = Daemon::start();
    let (status, r) = d.http(
        "POST",
        "/api/v1/control/stop",
        Some(r#"{"service": "worker"}"#),
    );
    assert_eq!(status, 200, "{r}");
    let (status, r) = d.http("POST", "/api/v1/mcp/servers", Some(&idle_spec("a")));
    assert_eq!(status, 200, "{r}");
    assert_eq!(ids_on_disk(&d.state_dir), ["a"]);
    let (status, r) = d.http("DELETE", "/api/v1/mcp/servers/a", None);
    assert_eq!(status, 200, "{r}");
    assert!(ids_on_disk(&d.state_dir).is_empty());
}

#[test]
fn config_writes_run_off_the_loop_and_queue_behind_each_other() {
    let d = Daemon::start_with(Setup {
        config: Some("[daemon]\nlog_level = \"debug\"\n".into()),
        ..Setup::default()
    });
    let tmp = d.state_dir.join("overrides.json.tmp");
    mkfifo(&tmp);
    let put = |patch: &str| d.http("PUT", "/api/v1/config", Some(patch));
    std::thread::scope(|s| {
        let first = s.spawn(|| put(r#"{"http": {"max_connections": 7}}"#));
        wait_until(
            "the loop to answer while the overrides write hangs",
            || (d.http("GET", "/api/v1/status", None).0, d.stderr()),
            |(status, log)| *status == 200 && log.contains("saving overrides.json (1 change(s))"),
            |(status, _)| format!("status {status}"),
        );
        let second = s.spawn(|| put(r#"{"http": {"idle_timeout_ms": 5000}}"#));
        wait_for("the second patch to wait", || {
            d.stderr()
                .contains("patch waits for the overrides.json write")
        });
        let (_, show) = d.http("GET", "/api/v1/config?section=http", None);
        assert_eq!(
            show["data"]["config"]["max_connections"], 256,
            "not applied yet"
        );
        let mut drained = Vec::new();
        use std::io::Read;
        std::fs::File::open(&tmp)
            .and_then(|mut f| f.read_to_end(&mut drained))
            .expect("drain the FIFO");
        let (status, r) = first.join().expect("first");
        assert_eq!((status, code(&r)), (500, "persist_failed"), "{r}");
        let (status, r) = second.join().expect("second");
        assert_eq!(status, 200, "{r}");
    });
    let (_, show) = d.http("GET", "/api/v1/config?section=http", None);
    assert_eq!(
        show["data"]["config"]["max_connections"], 256,
        "the failed one never applied"
    );
    assert_eq!(show["data"]["config"]["idle_timeout_ms"], 5000);
    let stored: Value =
        serde_json::from_slice(&std::fs::read(d.state_dir.join("overrides.json")).expect("read"))
            .expect("json");
    assert_eq!(stored["data"], json!({"http": {"idle_timeout_ms": 5000}}));
}
