//! The foundation through the real binary: start, control socket, CLI, signals, config,
//! state, logs, health, diagnostics, systemd notification.

use crate::util::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::Duration;

#[test]
fn starts_on_embedded_defaults_and_reports_status() {
    let d = Daemon::start();
    let (code, status) = d.cli_json(&["status"]);
    assert_eq!(code, 0);
    assert_eq!(status["daemon"]["status"], "running");
    assert_eq!(status["daemon"]["pid"], d.pid);
    assert_eq!(status["daemon"]["config_source"], "embedded defaults");
    assert_eq!(status["daemon"]["version"], env!("CARGO_PKG_VERSION"));
    for c in ["control", "worker", "monitor"] {
        assert_eq!(status["components"][c]["status"], "running", "{c}");
    }
    assert!(status.get("loop").is_none());

    let out = d.cli(&["status"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("embedded defaults") && text.contains("COMPONENT"),
        "{text}"
    );

    let (_, detailed) = d.cli_json(&["status", "--detailed"]);
    let lp = &detailed["loop"];
    assert!(lp["wakeups"].as_u64().is_some_and(|w| w > 0));
    assert!(lp["timers_armed"].as_u64().is_some_and(|t| t >= 1), "{lp}");
    assert!(lp["rss_bytes"].as_u64().is_some_and(|r| r > 0));
    // A loop that has slept in epoll has switched voluntarily.
    assert!(
        lp["voluntary_ctxt_switches"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{lp}"
    );
    assert!(lp["nonvoluntary_ctxt_switches"].is_u64(), "{lp}");
    assert_eq!(lp["connections"], 1, "the status request's own connection");
}

#[test]
fn curl_speaks_to_the_control_socket() {
    let d = Daemon::start();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&d.socket)
        .arg("http://localhost/api/v1/status")
        .output()
        .expect("curl must be installed (.ci/run installs it)");
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["status"], "success");
    assert!(v["metadata"]["request_id"]
        .as_str()
        .is_some_and(|r| r.starts_with("req_")));
    assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));

    // A body that curl sends with Expect: 100-continue is still accepted.
    // (Host names are at most 255 bytes: 20 of 100 make the body big enough.)
    let hosts: Vec<String> = (0..20).map(|i| format!("{i:0>100}")).collect();
    let big =
        serde_json::json!({"daemon": {"log_level": "info"}, "http": {"allowed_hosts": hosts}})
            .to_string();
    assert!(big.len() > 2000);
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &big,
            "--unix-socket",
        ])
        .arg(&d.socket)
        .arg("http://localhost/api/v1/config")
        .output()
        .expect("curl");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["status"], "success", "{v}");
}

#[test]
fn sigterm_stops_gracefully_and_cleans_up() {
    let mut d = Daemon::start();
    let pid_file = d.socket.with_file_name("vsm-daemon.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("pid file").trim(),
        d.pid.to_string()
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
    assert!(!d.socket.exists(), "socket removed");
    assert!(!pid_file.exists(), "pid file removed");
    assert!(d.stderr().contains("received SIGTERM"));
}

#[test]
fn sigill_is_reported_on_stderr_and_still_kills() {
    // The static release build turns a panic into a trap (SIGILL) without a message; the
    // daemon then writes one line saying so. A SIGILL sent from outside takes the same
    // handler (it names the sender instead of an address) and must still end the process
    // by that signal, as it did without the handler.
    use std::os::unix::process::ExitStatusExt;
    let mut d = Daemon::start();
    d.signal(libc::SIGILL);
    let mut status = None;
    wait_for("the daemon to die of SIGILL", || {
        status = d.child.try_wait().ok().flatten();
        status.is_some()
    });
    let status = status.expect("exited");
    assert_eq!(status.signal(), Some(libc::SIGILL), "{status:?}");
    let err = d.stderr();
    let want = format!(": fatal: SIGILL sent by pid {}\n", std::process::id());
    assert!(err.contains(&want), "no {want:?} in stderr:\n{err}");
    assert!(err.contains(&format!("vsm-daemon {}", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn cli_stop_waits_until_the_daemon_is_gone() {
    let mut d = Daemon::start();
    let out = d.cli(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("stopped"));
    assert_eq!(d.wait_exit(), Some(0));
    assert!(!d.socket.exists());
    // Now nothing answers: exit code 3 and a clear message.
    let out = d.cli(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("vsm-daemon is not running (socket"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn socket_is_0600_in_a_0700_directory() {
    let d = Daemon::start();
    let mode = std::fs::metadata(&d.socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let dir = std::fs::metadata(d.socket.parent().expect("dir"))
        .expect("dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir, 0o700);
}

#[test]
fn second_instance_is_refused_and_stale_socket_replaced() {
    let d = Daemon::start();
    let other = TempDir::new("second");
    let err = Daemon::start_in(
        other,
        Setup {
            socket: Some(d.socket.clone()),
            ..Setup::default()
        },
    )
    .err()
    .expect("second daemon must not start");
    assert!(err.contains("already running"), "{err}");
    assert!(err.contains("exit code Some(1)"), "{err}");

    // A crash leaves the socket file behind; the next start replaces it.
    let socket = d.socket.clone();
    let state = d.state_dir.clone();
    let dir = d.kill9();
    assert!(socket.exists(), "a SIGKILLed daemon leaves its socket");
    let again = Daemon::start_in(
        dir,
        Setup {
            socket: Some(socket),
            state_dir: Some(state),
            ..Setup::default()
        },
    )
    .expect("restart over a stale socket");
    assert!(again.stderr().contains("removing stale control socket"));
    assert_eq!(again.cli(&["status"]).status.code(), Some(0));
}

#[test]
fn state_dir_is_locked_against_a_second_daemon() {
    let d = Daemon::start();
    let err = Daemon::start_in(
        TempDir::new("lock"),
        Setup {
            state_dir: Some(d.state_dir.clone()),
            ..Setup::default()
        },
    )
    .err()
    .expect("must refuse a locked state dir");
    let want = format!(
        "vsm-daemon is already running (pid {}, socket {})",
        d.pid,
        d.socket.display()
    );
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("exit code Some(1)"), "{err}");

    // Held by something that is not a running daemon (the text left by a stopped one names a
    // dead pid): the plain lock error, no false "already running".
    let state = d.state_dir.clone();
    let mut d = d;
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
    let mut holder = std::process::Command::new("flock")
        .arg(state.join("lock"))
        .args(["sleep", "60"])
        .spawn()
        .expect("flock(1)");
    wait_for("flock holds the lock", || {
        std::process::Command::new("flock")
            .args(["-n"])
            .arg(state.join("lock"))
            .arg("true")
            .status()
            .is_ok_and(|s| !s.success())
    });
    let err = Daemon::start_in(
        TempDir::new("lock2"),
        Setup {
            state_dir: Some(state),
            ..Setup::default()
        },
    )
    .err()
    .expect("must refuse a locked state dir");
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(err.contains("is locked elsewhere"), "{err}");
    assert!(!err.contains("already running"), "{err}");
}

#[test]
fn another_uid_is_refused() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run a client as another uid");
        return;
    }
    let d = Daemon::start();
    // Open the file-system path so that only SO_PEERCRED stands in the way.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(
        d.socket.parent().expect("dir"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let copy = d.dir.path().join("vsm-daemon-client");
    std::fs::copy(bin(), &copy).expect("copy binary");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // Another test thread may fork while our copy's write fd is still open; its child holds
    // that fd until it execs, and exec of the copy meanwhile fails with ETXTBSY. Retry that.
    let mut tries = 0;
    let out = loop {
        use std::os::unix::process::CommandExt;
        let run = std::process::Command::new(&copy)
            .args(["--socket"])
            .arg(&d.socket)
            .arg("status")
            .uid(65534)
            .gid(65534)
            .current_dir("/")
            .output();
        match run {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => break other.expect("run as nobody"),
        }
    };
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("may not use the control socket"),
        "{}",
        stderr(&out)
    );
    wait_for("the refusal in the daemon's log", || {
        d.stderr()
            .contains("refused control connection from uid 65534")
    });
    // The owner still gets in.
    assert_eq!(d.cli(&["status"]).status.code(), Some(0));
}

#[test]
fn invalid_cli_input_is_a_usage_error() {
    let d = Daemon::start();
    for args in [
        vec!["frobnicate"],
        vec!["status", "--no-such-flag"],
        vec!["config", "set", "only-a-key"],
        vec!["logs", "--lines", "lots"],
        vec!["restart", "extra-arg"],
        vec![],
    ] {
        let out = d.cli(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains("error:"), "{args:?}");
    }
    for args in [
        vec!["--help"],
        vec!["status", "--help"],
        vec!["config", "set", "--help"],
        vec!["--version"],
    ] {
        let out = d.cli(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(stdout(&out).contains("vsm-daemon"), "{args:?}");
    }
    // Refused by the daemon: exit 1 with its message.
    let out = d.cli(&["config", "set", "no.such_key", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no.such_key"), "{}", stderr(&out));
    let out = d.cli(&["config", "set", "monitoring.health_check_interval_ms", "5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("monitoring.health_check_interval_ms"),
        "{}",
        stderr(&out)
    );
    let out = d.cli(&["restart", "--service", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let (code, v) = d.cli_json(&["health", "check", "--component", "nope"]);
    assert_eq!(code, 1);
    assert_eq!(v["errors"][0]["code"], "component_not_found");
}

#[test]
fn config_set_is_live_validated_and_survives_restart() {
    let mut d = Daemon::start();
    let (code, v) = d.cli_json(&[
        "config",
        "set",
        "monitoring.health_check_interval_ms",
        "5000",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["changed"][0], "monitoring.health_check_interval_ms");
    assert_eq!(v["restart_required"].as_array().map(Vec::len), Some(0));
    let (_, show) = d.cli_json(&["config", "show", "--section", "monitoring"]);
    assert_eq!(show["config"]["health_check_interval_ms"], 5000);
    // The live monitor reports the new period.
    let (_, h) = d.cli_json(&["health", "check", "--component", "monitor"]);
    assert_eq!(h["components"]["monitor"]["message"], "every 5000 ms");
    // A key that needs a restart is saved and flagged.
    let (code, v) = d.cli_json(&["config", "set", "daemon.http_listen", "127.0.0.1:4999"]);
    assert_eq!(code, 0);
    assert_eq!(v["restart_required"][0], "daemon.http_listen");

    assert_eq!(d.cli(&["stop"]).status.code(), Some(0));
    d.wait_exit();
    let state = d.state_dir.clone();
    let again = Daemon::start_with(Setup {
        state_dir: Some(state),
        ..Setup::default()
    });
    let (_, show) = again.cli_json(&["config", "show"]);
    assert_eq!(
        show["config"]["monitoring"]["health_check_interval_ms"],
        5000
    );
    assert_eq!(show["config"]["daemon"]["http_listen"], "127.0.0.1:4999");
    // 'default' removes the override again.
    let (code, _) = again.cli_json(&[
        "config",
        "set",
        "monitoring.health_check_interval_ms",
        "default",
    ]);
    assert_eq!(code, 0);
    let (_, show) = again.cli_json(&["config", "show"]);
    assert_eq!(
        show["config"]["monitoring"]["health_check_interval_ms"],
        15000
    );
}

#[test]
fn sighup_and_reload_accept_a_valid_file_and_refuse_an_invalid_one() {
    let d = Daemon::start_with(Setup {
        config: Some("[monitoring]\nhealth_check_interval_ms = 15000\n".into()),
        ..Setup::default()
    });
    let path = d.config_path.clone().expect("config path");
    std::fs::write(&path, "[monitoring]\nhealth_check_interval_ms = 20000\n").expect("write");
    d.signal(libc::SIGHUP);
    wait_for("the reloaded value", || {
        d.cli_json(&["config", "show"]).1["config"]["monitoring"]["health_check_interval_ms"]
            == 20000
    });

    std::fs::write(
        &path,
        "[monitoring]\nhealth_check_interval_ms = 30000\nbogus_key = 1\n",
    )
    .expect("write");
    d.signal(libc::SIGHUP);
    wait_for("the refusal in the log", || {
        d.stderr().contains("reload refused")
    });
    assert!(
        d.stderr().contains(":3:1"),
        "line and column of the bad key:\n{}",
        d.stderr()
    );
    let (_, show) = d.cli_json(&["config", "show"]);
    assert_eq!(
        show["config"]["monitoring"]["health_check_interval_ms"], 20000,
        "old config kept"
    );

    let out = d.cli(&["config", "reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("config.toml:3:1"), "{}", stderr(&out));

    std::fs::write(&path, "[monitoring]\nhealth_check_interval_ms = 25000\n").expect("write");
    let (code, v) = d.cli_json(&["config", "reload"]);
    assert_eq!(code, 0);
    assert_eq!(v["changed"][0], "monitoring.health_check_interval_ms");
}

#[test]
fn an_invalid_config_file_refuses_to_start_with_its_position() {
    let dir = TempDir::new("badconf");
    let err = Daemon::start_in(
        dir,
        Setup {
            config: Some("[daemon]\nlog_level = \"loud\"\n".into()),
            ..Setup::default()
        },
    )
    .err()
    .expect("must refuse");
    assert!(err.contains("daemon.log_level"), "{err}");
    let err = Daemon::start_in(
        TempDir::new("badconf2"),
        Setup {
            config: Some("[daemon]\nnope = 1\n".into()),
            ..Setup::default()
        },
    )
    .err()
    .expect("must refuse");
    assert!(err.contains("config.toml:2:1"), "{err}");
}

#[test]
fn config_schema_describes_every_section() {
    let d = Daemon::start();
    let (code, schema) = d.cli_json(&["config", "schema"]);
    assert_eq!(code, 0);
    for section in [
        "daemon",
        "http",
        "monitoring",
        "mcp_servers",
        "security",
        "consciousness",
    ] {
        assert!(
            schema["properties"][section]["properties"].is_object(),
            "{section}"
        );
    }
    assert_eq!(
        schema["properties"]["daemon"]["properties"]["http_listen"]["default"],
        "127.0.0.1:4000"
    );
}

#[test]
fn logs_filter_and_follow() {
    let d = Daemon::start();
    let (code, v) = d.cli_json(&["logs", "--lines", "5"]);
    assert_eq!(code, 0);
    let records = v["records"].as_array().expect("records");
    assert!(!records.is_empty() && records.len() <= 5);
    assert!(
        records
            .iter()
            .any(|r| r["message"].as_str().is_some_and(|m| m.contains("started")))
            || records.len() == 5
    );

    // A follower sees a record logged after it attached.
    let mut follow = std::process::Command::new(bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(["logs", "--follow", "--lines", "0", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("follow");
    let mut out = follow.stdout.take().expect("stdout");
    wait_for("the follower to attach", || {
        d.cli_json(&["status", "--detailed"]).1["loop"]["log_followers"] == 1
    });
    let (code, _) = d.cli_json(&["config", "set", "daemon.log_buffer_lines", "500"]);
    assert_eq!(code, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut seen = String::new();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains("configuration updated") {
                let _ = tx.send(seen.clone());
                break;
            }
        }
    });
    let seen = rx
        .recv_timeout(PATIENCE)
        .expect("the follower got the new record");
    let first: Value = serde_json::from_str(seen.lines().next().unwrap_or("")).expect("json line");
    assert!(first["seq"].as_u64().is_some());
    let _ = follow.kill();
    let _ = follow.wait();
    wait_for("the follower to be dropped", || {
        d.cli_json(&["status", "--detailed"]).1["loop"]["log_followers"] == 0
    });

    // Level filter: only warnings and errors.
    let _ = d.cli(&["config", "set", "monitoring.health_check_interval_ms", "1"]);
    let (_, v) = d.cli_json(&["logs", "--level", "info"]);
    assert!(v["records"]
        .as_array()
        .is_some_and(|r| r.iter().all(|r| r["level"] != "debug")));
    let (_, v) = d.cli_json(&["logs", "--level", "error"]);
    assert!(v["records"]
        .as_array()
        .is_some_and(|r| r.iter().all(|r| r["level"] == "error")));
}

#[test]
fn health_restart_and_component_control() {
    let d = Daemon::start();
    let (code, h) = d.cli_json(&["health", "check"]);
    assert_eq!(code, 0, "{h}");
    assert_eq!(h["status"], "healthy");
    for c in ["control", "worker", "monitor", "state"] {
        assert_eq!(h["components"][c]["healthy"], true, "{c}");
    }
    let (code, v) = d.cli_json(&["restart", "--service", "control"]);
    assert_eq!(code, 0, "{v}");
    let (code, v) = d.cli_json(&["restart"]);
    assert_eq!(code, 0, "{v}");
    let (_, st) = d.cli_json(&["status"]);
    assert_eq!(st["components"]["control"]["restarts"], 2);
    assert_eq!(st["components"]["worker"]["restarts"], 1);
    assert_eq!(
        st["daemon"]["pid"], d.pid,
        "in-process restart keeps the pid"
    );

    // Services off and on without killing the API.
    let (status, v) = d.http(
        "POST",
        "/api/v1/control/stop",
        Some(r#"{"service":"worker"}"#),
    );
    assert_eq!(status, 200, "{v}");
    let (_, st) = d.cli_json(&["status"]);
    assert_eq!(st["components"]["worker"]["status"], "stopped");
    let (status, v) = d.http(
        "POST",
        "/api/v1/control/stop",
        Some(r#"{"service":"control"}"#),
    );
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["errors"][0]["code"], "conflict");
    let (status, _) = d.http("POST", "/api/v1/control/start", None);
    assert_eq!(status, 200);
    let (_, st) = d.cli_json(&["status"]);
    assert_eq!(st["components"]["worker"]["status"], "running");
}

#[test]
fn a_removed_socket_is_healed_by_the_health_monitor() {
    let d = Daemon::start_with(Setup {
        config: Some("[monitoring]\nhealth_check_interval_ms = 200\n".into()),
        ..Setup::default()
    });
    std::fs::remove_file(&d.socket).expect("remove socket");
    wait_for("the socket to come back", || {
        UnixStream::connect(&d.socket).is_ok()
    });
    let (code, st) = d.cli_json(&["status"]);
    assert_eq!(code, 0);
    assert_eq!(st["components"]["control"]["restarts"], 1);
    assert!(d.stderr().contains("component control is unhealthy"));
}

#[test]
fn diagnostics_report_kernel_tools_and_files() {
    let d = Daemon::start();
    let (code, v) = d.cli_json(&["diagnostics", "run", "--full"]);
    let checks = v["checks"]
        .as_array()
        .or_else(|| v["data"]["checks"].as_array())
        .expect("checks");
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    for want in [
        "config",
        "state.writable",
        "socket.permissions",
        "pid_file",
        "kernel.pidfd",
        "kernel.landlock",
        "kernel.cgroup_v2",
        "tool.node",
        "tool.python3",
        "limits.nofile",
        "state.fsync_latency",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let failed = checks.iter().filter(|c| c["status"] == "fail").count();
    assert_eq!(code, if failed == 0 { 0 } else { 1 });
    let out = d.cli(&["diagnostics", "run"]);
    assert!(stdout(&out).contains("kernel.pidfd"));
}

#[test]
fn a_stopped_monitor_stays_stopped_across_an_interval_change() {
    let d = Daemon::start();
    let (status, v) = d.http(
        "POST",
        "/api/v1/control/stop",
        Some(r#"{"service":"monitor"}"#),
    );
    assert_eq!(status, 200, "{v}");
    let (code, v) = d.cli_json(&[
        "config",
        "set",
        "monitoring.health_check_interval_ms",
        "5000",
    ]);
    assert_eq!(code, 0, "{v}");
    let (_, h) = d.cli_json(&["health", "check", "--component", "monitor"]);
    assert_eq!(h["components"]["monitor"]["status"], "stopped", "{h}");
    let (status, v) = d.http(
        "POST",
        "/api/v1/control/start",
        Some(r#"{"service":"monitor"}"#),
    );
    assert_eq!(status, 200, "{v}");
    // Results are kept for a second: wait for a round that saw the monitor started.
    wait_for("the monitor running at the new interval", || {
        let (_, h) = d.cli_json(&["health", "check", "--component", "monitor"]);
        h["components"]["monitor"]["message"] == "every 5000 ms"
    });
}

#[test]
fn full_diagnostics_without_a_worker_answer_once_with_the_reason() {
    let d = Daemon::start();
    let (status, v) = d.http(
        "POST",
        "/api/v1/control/stop",
        Some(r#"{"service":"worker"}"#),
    );
    assert_eq!(status, 200, "{v}");
    // The job is refused by the worker-less wiring: the diagnostics room gets the failure
    // as its job's result and answers with the checks so far plus a failed timing.
    let (status, v) = d.http("POST", "/api/v1/diagnostics/run?full=true", None);
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["errors"][0]["code"], "unhealthy", "{v}");
    let checks = v["data"]["checks"].as_array().expect("checks");
    let fsync: Vec<&serde_json::Value> = checks
        .iter()
        .filter(|c| c["name"] == "state.fsync_latency")
        .collect();
    assert_eq!(fsync.len(), 1, "{v}");
    assert_eq!(fsync[0]["status"], "fail", "{v}");
    assert_eq!(fsync[0]["detail"], "worker is not running", "{v}");
    assert!(checks.iter().any(|c| c["name"] == "kernel.pidfd"), "{v}");
    // With the worker back, the timing is taken again.
    let (status, _) = d.http("POST", "/api/v1/control/start", None);
    assert_eq!(status, 200);
    let (_, v) = d.cli_json(&["diagnostics", "run", "--full"]);
    let checks = v["checks"]
        .as_array()
        .or_else(|| v["data"]["checks"].as_array())
        .expect("checks");
    let fsync = checks
        .iter()
        .find(|c| c["name"] == "state.fsync_latency")
        .expect("timing");
    assert!(fsync["samples_ms"].is_array(), "{fsync}");
}

#[test]
fn http_errors_pipelining_and_limits() {
    let d = Daemon::start_with(Setup {
        config: Some("[http]\nmax_body_bytes = 1024\nhead_timeout_ms = 300\n".into()),
        ..Setup::default()
    });
    let (status, v) = d.http("GET", "/api/v1/nope", None);
    assert_eq!(status, 404);
    assert_eq!(v["status"], "error");
    assert_eq!(v["errors"][0]["code"], "not_found");

    let raw = raw_exchange(
        &d.socket,
        b"DELETE /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let (status, head, _) = split_response(&raw);
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET"), "{head}");

    let (status, v) = d.http("PUT", "/api/v1/config", Some("{not json"));
    assert_eq!(status, 400);
    assert_eq!(v["errors"][0]["code"], "bad_request");

    let body = "x".repeat(2048);
    let (status, v) = d.http("PUT", "/api/v1/config", Some(&body));
    assert_eq!(status, 413, "{v}");

    // Two requests in one write: two answers, in order.
    let raw = raw_exchange(
        &d.socket,
        b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\nGET /api/v1/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&raw);
    let first = text.find("HTTP/1.1 200").expect("first answer");
    let second = text.find("HTTP/1.1 404").expect("second answer");
    assert!(first < second);

    // A head that never completes is cut off after head_timeout_ms.
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut buf = Vec::new();
    let n = s
        .read_to_end(&mut buf)
        .expect("closed by the daemon, not timed out here");
    assert_eq!(n, 0);

    // Garbage gets a 400 and the connection closes.
    let raw = raw_exchange(&d.socket, b"\x16\x03\x01 not http\r\n\r\n");
    assert_eq!(split_response(&raw).0, 400);
    assert_eq!(d.cli(&["status"]).status.code(), Some(0), "still serving");
}

#[test]
fn systemd_notify_ready_watchdog_and_stopping() {
    let dir = TempDir::new("notify");
    let notify_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    sock.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut d = Daemon::start_with(Setup {
        env: vec![
            ("NOTIFY_SOCKET".into(), notify_path.display().to_string()),
            ("WATCHDOG_USEC".into(), "200000".into()),
        ],
        ..Setup::default()
    });
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while got
        .iter()
        .filter(|m: &&String| m.contains("WATCHDOG=1"))
        .count()
        < 2
    {
        let n = sock.recv(&mut buf).expect("notification");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(got[0].contains("READY=1"), "READY first: {got:?}");
    d.signal(libc::SIGTERM);
    loop {
        let n = sock.recv(&mut buf).expect("STOPPING=1");
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            break;
        }
    }
    assert_eq!(d.wait_exit(), Some(0));
}

/// kill -9 of the daemon while it persists config changes: the overrides file is always
/// the old or the new document, never torn.
#[test]
fn kill9_during_config_writes_never_corrupts_overrides() {
    let mut socket_dir = None;
    let state = TempDir::new("kill9-state");
    let mut last_seen = 0u64;
    for round in 0..6u64 {
        let dir = socket_dir.take().unwrap_or_else(|| TempDir::new("kill9"));
        let d = Daemon::start_in(
            dir,
            Setup {
                state_dir: Some(state.path().to_path_buf()),
                ..Setup::default()
            },
        )
        .expect("start");
        let client = vsm_daemon::client::Client::new(&d.socket);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let hammer = {
            let stop = stop.clone();
            let acked = acked.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let value = 1000 + round * 100_000 + n + 1;
                    let patch =
                        serde_json::json!({"monitoring": {"performance_check_interval_ms": value}});
                    match client.call("PUT", "/api/v1/config", Some(&patch)) {
                        Ok(r) if r.status == 200 => {
                            n += 1;
                            acked.store(n, std::sync::atomic::Ordering::Relaxed);
                        }
                        _ => break,
                    }
                }
                n
            })
        };
        // The kill lands at a different point of the write stream each round, but always
        // after the first acknowledged write (on a loaded machine the first PUT can take
        // longer than the delay alone).
        wait_for("a first acknowledged config write", || {
            acked.load(std::sync::atomic::Ordering::Relaxed) > 0 || hammer.is_finished()
        });
        std::thread::sleep(Duration::from_millis(40 + round * 17));
        let dir = d.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let writes = hammer.join().unwrap_or(0);
        let mut sd = vsm_daemon::state::StateDir::open(state.path()).expect("open state");
        let v: Value = sd
            .read("overrides.json")
            .expect("overrides parse after kill -9")
            .expect("overrides exist");
        let seen = v["monitoring"]["performance_check_interval_ms"]
            .as_u64()
            .expect("value");
        assert!(seen >= last_seen, "went backwards: {seen} < {last_seen}");
        assert!(
            writes == 0 || seen > 1000 + round * 100_000,
            "round {round}: {seen} after {writes} writes"
        );
        last_seen = seen;
        let corrupt = std::fs::read_dir(state.path())
            .expect("ls")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
        assert!(!corrupt, "no file was ever moved aside as corrupt");
        drop(sd);
        socket_dir = Some(dir);
    }
}

/// `vsm-daemon … | head`: stdout and stderr are pipes nobody reads any more. The CLI must
/// end with its own exit code, never die of SIGABRT (a panic in `print!`) losing its message.
#[test]
fn the_cli_survives_a_closed_stdout_and_stderr() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let d = Daemon::start();
    d.cli(&["logs", "--lines", "50"]); // the ring holds the startup records by now
    let cases: &[(&[&str], i32)] = &[
        (&["status", "--json"], 0),
        (&["status"], 0),
        (&["logs"], 0),
        (&["logs", "--json"], 0),
        (&["config", "show"], 0),
        (&["--help"], 0),
        (&["mcp", "show", "nope"], 1),
        (&["no-such-command"], 2),
    ];
    for round in 0..25 {
        for &(args, want) in cases {
            // The reading end is closed before the CLI starts: every write gets EPIPE.
            let (reader, writer) = std::io::pipe().expect("pipe");
            drop(reader);
            let status = Command::new(bin())
                .arg("--socket")
                .arg(&d.socket)
                .args(args)
                .env_remove("VSM_DAEMON_SOCKET")
                .stdin(Stdio::null())
                .stdout(writer.try_clone().expect("dup pipe"))
                .stderr(writer)
                .status()
                .expect("run cli");
            assert_eq!(
                (status.code(), status.signal()),
                (Some(want), None),
                "round {round}: {args:?} ended with {status}"
            );
        }
    }
}

/// `vsm-daemon start --json | true`: the ready line finds no reader. The daemon logs that and
/// keeps running instead of aborting.
#[test]
fn the_daemon_survives_a_closed_stdout_for_its_ready_line() {
    use std::process::{Command, Stdio};
    let dir = TempDir::new("closed-stdout");
    let socket = dir.path().join("run/control.sock");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut child = Command::new(bin())
        .args(["start", "--json", "--listen", "127.0.0.1:0", "--socket"])
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("VSM_DAEMON_SOCKET")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vsm-daemon");
    let answered = || {
        Command::new(bin())
            .arg("--socket")
            .arg(&socket)
            .args(["status", "--json"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut ok = false;
    while std::time::Instant::now() < deadline {
        if answered() {
            ok = true;
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the daemon ended with {status} after printing its ready line");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child, not yet reaped (wait() below).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait for the daemon");
    assert!(ok, "the daemon never answered status");
    assert_eq!(status.code(), Some(0), "graceful stop: {status}");
}

/// Every configuration key is read by something now: nothing says "not enforced yet" (not
/// `config show`, `config schema`, `diagnostics run`, `config set` nor the start-up log), even
/// for the keys that were the last to be marked (acquisition, reflection). The capability
/// policy is enforced: a server declaring a blocked capability is refused (422
/// `capability_not_allowed`) unless its spec allows it.
#[test]
fn every_promise_is_kept() {
    let d = Daemon::start_with(Setup {
        config: Some(
            "[consciousness]\nmemory_limit = 900\n[security]\nmin_security_score = 90\n".into(),
        ),
        ..Setup::default()
    });

    let out = d.cli(&["config", "show"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(!shown.contains("not enforced"), "{shown}");
    for key in [
        "consciousness.memory_limit = 900",
        "security.min_security_score = 90",
        "mcp_servers.sandbox_timeout_ms = ",
    ] {
        assert!(
            shown.lines().any(|l| l.starts_with(key)),
            "{key} missing:\n{shown}"
        );
    }

    let (code, schema) = d.cli_json(&["config", "schema"]);
    assert_eq!(code, 0);
    assert!(
        !schema.to_string().contains("\"x-enforced\":false"),
        "a key is still marked: {schema}"
    );

    let (_, diag) = d.cli_json(&["diagnostics", "run"]);
    let check = diag["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "config.not_enforced")
        .unwrap_or_else(|| panic!("no config.not_enforced in {diag}"))
        .clone();
    assert_eq!(check["status"], "ok", "{check}");

    let out = d.cli(&["config", "set", "mcp_servers.sandbox_timeout_ms", "5000"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stdout(&out).contains("not enforced"), "{}", stdout(&out));
    assert!(!d.stderr().contains("not enforced"), "{}", d.stderr());

    // The default blocked_capabilities lists file_system: refused, with the reason.
    let out = d.cli(&[
        "mcp",
        "register",
        "files",
        "--capability",
        "file_system",
        "--no-autostart",
        "--",
        "/bin/true",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("declares 'file_system' in security.blocked_capabilities"),
        "{}",
        stderr(&out)
    );
    let (status, body) = d.http(
        "POST",
        "/api/v1/mcp/servers",
        Some(r#"{"id": "sys", "command": "/bin/true", "capabilities": ["system", "time"], "autostart": false}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["errors"][0]["code"], "capability_not_allowed",
        "{body}"
    );
    assert_eq!(body["errors"][0]["field"], "capabilities", "{body}");
    let (status, _) = d.http("GET", "/api/v1/mcp/servers/sys", None);
    assert_eq!(status, 404, "nothing half-registered");
    // Allowed by the spec: registered, and `mcp show` says so.
    let out = d.cli(&[
        "--json",
        "mcp",
        "register",
        "files",
        "--capability",
        "file_system,time",
        "--allow-capability",
        "file_system",
        "--no-autostart",
        "--",
        "/bin/true",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (code, shown) = d.cli_json(&["mcp", "show", "files"]);
    assert_eq!(code, 0);
    assert_eq!(
        shown["spec"]["allow_capabilities"],
        serde_json::json!(["file_system"]),
        "{shown}"
    );
    let human = stdout(&d.cli(&["mcp", "show", "files"]));
    assert!(human.contains("allowed    file_system"), "{human}");
}
