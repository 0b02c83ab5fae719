//! Declared checks (`[[checks]]`) through the real binary, against real targets on loopback:
//! a TCP listener that comes and goes, a Python HTTP server answering 200 then 500, commands
//! that succeed, fail and hang, a file that ages, pid files, filesystems; reload adding and
//! removing checks; the CLI and `/metrics`.
//!
//! Checks are declared with a long `every_ms`, so each result comes from the run the test asks
//! for (`checks run NAME` answers when that run ends): nothing depends on timing.

use crate::util::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, SystemTime};

/// A check table with a schedule that never comes due during a test.
fn check(name: &str, kind: &str, body: &str) -> String {
    format!(
        "[[checks]]\nname = \"{name}\"\nkind = \"{kind}\"\nevery_ms = 3600000\ntimeout_ms = 5000\n{body}\n"
    )
}

/// `checks run NAME --json`: exit code and the result.
fn run(d: &Daemon, name: &str) -> (i32, Value) {
    d.cli_json(&["checks", "run", name])
}

fn listed(d: &Daemon) -> Vec<Value> {
    let (code, data) = d.cli_json(&["checks"]);
    assert_eq!(code, 0, "{data}");
    data["checks"].as_array().cloned().unwrap_or_default()
}

struct HttpFixture(Child, u16);

impl HttpFixture {
    fn start(dir: &Path) -> HttpFixture {
        let port_file = dir.join("http-port");
        let child = Command::new("python3")
            .arg(format!(
                "{}/tests/fixtures/http_fixture.py",
                env!("CARGO_MANIFEST_DIR")
            ))
            .arg(&port_file)
            .spawn()
            .expect("python3 runs the HTTP fixture");
        let port = wait_until(
            "the HTTP fixture's port",
            || std::fs::read_to_string(&port_file).ok(),
            Option::is_some,
            |_| "no port file".into(),
        )
        .and_then(|p| p.trim().parse().ok())
        .expect("a port");
        HttpFixture(child, port)
    }

    fn set(&self, code: u16) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .get(format!("http://127.0.0.1:{}/set/{code}", self.1))
            .call()
            .expect("fixture answers");
    }
}

impl Drop for HttpFixture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Children of `pid` as (pid, state, cmdline).
fn children_of(pid: u32) -> Vec<(u32, String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            let cmd = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            out.push((child, fields[0].to_string(), cmd));
        }
    }
    out
}

#[test]
fn tcp_and_http_checks_follow_their_targets() {
    let dir = TempDir::new("checks-net");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let http = HttpFixture::start(dir.path());
    let config = [
        check("db", "tcp", &format!("target = \"127.0.0.1:{port}\"")),
        check(
            "local-name",
            "tcp",
            &format!("target = \"localhost:{port}\""),
        ),
        check(
            "web",
            "http",
            &format!(
                "target = \"http://127.0.0.1:{}/health\"\nexpect_body = \"ok\"",
                http.1
            ),
        ),
    ]
    .concat();
    let d = Daemon::start_in(
        dir,
        Setup {
            config: Some(config),
            ..Setup::default()
        },
    )
    .expect("daemon starts");
    // Each check's first scheduled run comes soon after start (staggered 20 ms apart); wait for
    // all of them, so that no scheduled run lands between the manual runs below.
    wait_for("the first scheduled run of every check", || {
        let checks = listed(&d);
        checks.len() == 3
            && checks
                .iter()
                .all(|c| c["runs"].as_u64().unwrap_or(0) >= 1 && c["running"] == false)
    });

    let (code, up) = run(&d, "db");
    assert_eq!((code, up["status"].as_str()), (0, Some("up")), "{up}");
    assert_eq!(up["consecutive_failures"], 0);
    let (code, named) = run(&d, "local-name");
    assert_eq!(
        (code, named["status"].as_str()),
        (0, Some("up")),
        "resolved on the worker: {named}"
    );
    drop(listener);
    let (code, down) = run(&d, "db");
    assert_eq!((code, down["status"].as_str()), (1, Some("down")), "{down}");
    assert!(
        down["message"].as_str().unwrap_or("").contains("connect"),
        "{down}"
    );
    assert!(down["last_change"].is_string());
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind again");
    let (code, back) = run(&d, "db");
    assert_eq!((code, back["status"].as_str()), (0, Some("up")), "{back}");
    drop(listener);

    let (code, web) = run(&d, "web");
    assert_eq!((code, web["value"].as_f64()), (0, Some(200.0)), "{web}");
    http.set(500);
    let (code, web) = run(&d, "web");
    assert_eq!(code, 1, "{web}");
    assert_eq!(web["value"].as_f64(), Some(500.0));
    assert!(
        web["message"].as_str().unwrap_or("").contains("500"),
        "{web}"
    );
    let (_, again) = run(&d, "web");
    assert_eq!(again["consecutive_failures"], 2, "{again}");

    // Prometheus: one series per check.
    let (status, _, text) = split_response(&raw_exchange(
        &d.socket,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(status, 200);
    assert!(text.contains("vsm_check_up{check=\"web\"} 0"), "{text}");
    assert!(
        text.contains("vsm_check_up{check=\"local-name\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("vsm_check_duration_seconds{check=\"db\"}"),
        "{text}"
    );
    // The rule its readings are reported under (to Daemon::observe, one arm in the wiring).
    assert_eq!(again["rule"], "check:web");
}

#[test]
fn exec_checks_capture_output_and_kill_what_hangs() {
    let config = [
        check("ok", "exec", "argv = [\"/bin/sh\", \"-c\", \"echo fine\"]"),
        check("fails", "exec", "argv = [\"/bin/sh\", \"-c\", \"echo broken >&2; exit 3\"]"),
        check("three", "exec", "argv = [\"/bin/sh\", \"-c\", \"exit 3\"]\nexpect_exit = 3"),
        check("missing", "exec", "argv = [\"/nonexistent/vsm-tool\"]"),
        check("leaves-one", "exec", "argv = [\"/bin/sh\", \"-c\", \"sleep 32.75 & echo started\"]"),
        "[[checks]]\nname = \"hangs\"\nkind = \"exec\"\nevery_ms = 3600000\ntimeout_ms = 300\nargv = [\"/bin/sh\", \"-c\", \"sleep 31.25 & sleep 31.5\"]\n".to_string(),
    ]
    .concat();
    let d = Daemon::start_with(Setup {
        config: Some(config),
        ..Setup::default()
    });
    let (code, ok) = run(&d, "ok");
    assert_eq!(code, 0, "{ok}");
    assert_eq!(ok["message"], "exit code 0: fine");
    let (code, fails) = run(&d, "fails");
    assert_eq!(code, 1, "{fails}");
    assert_eq!(fails["message"], "exit code 3: broken");
    assert_eq!(run(&d, "three").0, 0, "expect_exit = 3");
    let (code, missing) = run(&d, "missing");
    assert_eq!(code, 1);
    assert!(
        missing["message"]
            .as_str()
            .unwrap_or("")
            .contains("does not exist"),
        "{missing}"
    );

    // A command that exits leaving a background child behind: the child goes with it.
    let (code, left) = run(&d, "leaves-one");
    assert_eq!(code, 0, "{left}");
    wait_until(
        "the left-behind child to be killed",
        || children_of(d.pid),
        |kids| kids.iter().all(|(_, _, cmd)| !cmd.contains("32.75")),
        |kids| format!("{kids:?}"),
    );

    let (code, hung) = run(&d, "hangs");
    assert_eq!(code, 1, "{hung}");
    assert!(
        hung["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("timed out after 300 ms"),
        "{hung}"
    );
    // The whole group is gone, the leader and its background child, and nothing is a zombie.
    let left = wait_until(
        "the hung command's processes to go",
        || children_of(d.pid),
        |kids| kids.iter().all(|(_, _, cmd)| !cmd.contains("sleep 31")),
        |kids| format!("{kids:?}"),
    );
    assert!(left.iter().all(|(_, state, _)| state != "Z"), "{left:?}");
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmd).contains("31.25"),
            "a grandchild survived"
        );
    }
    // The run asked for joined the one started at start, or came after it: never two at once.
    let hangs = listed(&d)
        .into_iter()
        .find(|c| c["name"] == "hangs")
        .expect("listed");
    assert_eq!(hangs["running"], false, "{hangs}");
    assert!(matches!(hangs["runs"].as_u64(), Some(1 | 2)), "{hangs}");
}

#[test]
fn file_process_and_filesystem_checks() {
    let dir = TempDir::new("checks-fs");
    let file = dir.path().join("heartbeat");
    std::fs::write(&file, b"alive").expect("write");
    let live = dir.path().join("live.pid");
    std::fs::write(&live, format!("{}\n", std::process::id())).expect("pid file");
    let mut gone = Command::new("true").spawn().expect("spawn");
    let dead_pid = gone.id();
    gone.wait().expect("reaped");
    let dead = dir.path().join("dead.pid");
    std::fs::write(&dead, format!("{dead_pid}\n")).expect("pid file");
    let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
    let config = [
        check(
            "heartbeat",
            "file",
            &format!(
                "target = \"{}\"\nmax_age_s = 60\nmin_size = 5",
                file.display()
            ),
        ),
        check(
            "live",
            "process",
            &format!("target = \"{}\"", live.display()),
        ),
        check(
            "dead",
            "process",
            &format!("target = \"{}\"", dead.display()),
        ),
        check(
            "by-name",
            "process",
            &format!("target = \"{}\"", comm.trim()),
        ),
        check(
            "root-full",
            "filesystem",
            "target = \"/\"\nmax_used_percent = 0.0",
        ),
        check(
            "root-any",
            "filesystem",
            "target = \"/\"\nmax_used_percent = 100.0",
        ),
    ]
    .concat();
    let d = Daemon::start_in(
        dir,
        Setup {
            config: Some(config),
            ..Setup::default()
        },
    )
    .expect("daemon starts");
    assert_eq!(run(&d, "heartbeat").0, 0);
    let old = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(old))
        .expect("set mtime");
    let (code, aged) = run(&d, "heartbeat");
    assert_eq!(code, 1, "{aged}");
    assert!(
        aged["message"].as_str().unwrap_or("").contains("over 60 s"),
        "{aged}"
    );
    assert_eq!(run(&d, "live").0, 0);
    let (code, dead) = run(&d, "dead");
    assert_eq!(code, 1, "{dead}");
    assert!(
        dead["message"]
            .as_str()
            .unwrap_or("")
            .contains("not running"),
        "{dead}"
    );
    assert_eq!(run(&d, "by-name").0, 0);
    let (code, full) = run(&d, "root-full");
    assert_eq!(code, 1, "some of / is used: {full}");
    assert!(full["value"].as_f64().unwrap_or(0.0) > 0.0);
    assert_eq!(run(&d, "root-any").0, 0);
}

#[test]
fn reload_adds_and_removes_checks_and_the_cli_says_what_is_wrong() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let first = check("old", "tcp", &format!("target = \"127.0.0.1:{port}\""));
    let d = Daemon::start_with(Setup {
        config: Some(first),
        ..Setup::default()
    });
    let names = |d: &Daemon| -> Vec<String> {
        listed(d)
            .iter()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(names(&d), ["old"]);
    // The first run starts on its own at start.
    wait_until(
        "the first scheduled run",
        || listed(&d),
        |l| l.first().is_some_and(|c| c["status"] == "up"),
        |l| format!("{l:?}"),
    );
    let path = d.config_path.clone().expect("config file");
    std::fs::write(
        &path,
        check("new", "tcp", &format!("target = \"127.0.0.1:{port}\"")),
    )
    .expect("rewrite");
    let out = d.cli(&["config", "reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(names(&d), ["new"]);
    assert_eq!(run(&d, "new").0, 0);
    let out = d.cli(&["checks", "run", "old"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no check named 'old'"),
        "{}",
        stderr(&out)
    );
    // A bad reference is refused with the entry's path; the running checks stay.
    std::fs::write(
        &path,
        check(
            "new",
            "tcp",
            &format!("target = \"127.0.0.1:{port}\"\nactions = [\"webhook:nope\"]"),
        ),
    )
    .expect("rewrite");
    let out = d.cli(&["config", "reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("checks[0].actions[0]"),
        "{}",
        stderr(&out)
    );
    assert_eq!(names(&d), ["new"]);
    // Usage errors are exit 2; a human table lists the check.
    assert_eq!(d.cli(&["checks", "run"]).status.code(), Some(2));
    let table = stdout(&d.cli(&["checks"]));
    assert!(
        table.starts_with("NAME") && table.contains("new") && table.contains("tcp"),
        "{table}"
    );
    assert!(stdout(&d.cli(&["checks", "--help"])).contains("checks run NAME"));
    drop(listener);
}

/// A webhook receiver on `port`: answers 200 to every request and hands over each request
/// (head and body) as text.
pub(crate) fn receiver(port: u16) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if tx.send(head + &String::from_utf8_lossy(&body)).is_err() {
                return;
            }
        }
    });
    rx
}

fn deliveries(d: &Daemon) -> Value {
    let (status, body) = d.http("GET", "/api/v1/checks", None);
    assert_eq!(status, 200, "{body}");
    body["data"]["actions"].clone()
}

#[test]
fn webhook_deliveries_wait_for_a_receiver_that_is_down_and_lose_nothing() {
    let dir = TempDir::new("checks-hook");
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free); // down: nothing listens there yet
    let token_file = dir.path().join("hook.token");
    std::fs::write(&token_file, "hook-secret-123\n").expect("token file");
    let config = format!(
        "[actions.hook]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/alert\"\ntoken_file = \"{}\"\ntimeout_ms = 2000\n",
        token_file.display()
    );
    let d = Daemon::start_in(
        dir,
        Setup {
            config: Some(config),
            ..Setup::default()
        },
    )
    .expect("daemon starts");
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (status, body) = d.http("POST", "/api/v1/actions/hook/test", None);
        assert_eq!(status, 200, "{body}");
        ids.push(body["data"]["delivery"].as_u64().expect("delivery id"));
    }
    // The first attempt fails (nothing listens); the delivery waits for its retry.
    wait_until(
        "a failed first attempt",
        || d.stderr(),
        |log| log.contains("action webhook:hook attempt 1 failed"),
        |log| log.clone(),
    );
    assert_eq!(deliveries(&d)["delivered"], 0);
    let got = receiver(port);
    let mut bodies = Vec::new();
    for _ in &ids {
        bodies.push(got.recv_timeout(PATIENCE).expect("every delivery arrives"));
    }
    for (body, id) in bodies.iter().zip(&ids) {
        assert!(body.starts_with("POST /alert HTTP/1.1"), "{body}");
        assert!(body.contains("Bearer hook-secret-123"), "{body}");
        let json: Value = serde_json::from_str(&body[body.find("\r\n\r\n").expect("head") + 4..])
            .expect("a JSON body");
        assert_eq!(json["alert"]["rule"], "action_test");
        assert_eq!(json["alert"]["id"], format!("test-{id}"), "in order");
        assert_eq!(json["transition"], "fired");
    }
    let a = wait_until(
        "all five recorded as delivered",
        || deliveries(&d),
        |a| a["delivered"] == 5,
        |a| a.to_string(),
    );
    assert_eq!(
        (a["dropped"].as_u64(), a["queued"].as_u64()),
        (Some(0), Some(0)),
        "{a}"
    );
    let first = &a["deliveries"][0];
    assert!(first["attempts"].as_u64().unwrap_or(0) >= 2, "retried: {a}");
    // The token never reaches the log.
    assert!(!d.stderr().contains("hook-secret-123"));
    let (status, body) = d.http("POST", "/api/v1/actions/nope/test", None);
    assert_eq!(
        (status, body["errors"][0]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[test]
fn exec_actions_see_the_alert_in_their_environment() {
    let dir = TempDir::new("checks-exec-action");
    let out = dir.path().join("seen.env");
    let config = format!(
        "[actions.notify]\nkind = \"exec\"\nargv = [\"/bin/sh\", \"-c\", \"env | grep ^VSM_ > \\\"$0\\\"\", \"{}\"]\ntimeout_ms = 5000\n",
        out.display()
    );
    let d = Daemon::start_in(
        dir,
        Setup {
            config: Some(config),
            ..Setup::default()
        },
    )
    .expect("daemon starts");
    let (status, body) = d.http("POST", "/api/v1/actions/notify/test", None);
    assert_eq!(status, 200, "{body}");
    let id = body["data"]["delivery"].as_u64().expect("id");
    let a = wait_until(
        "the exec action to end",
        || deliveries(&d),
        |a| a["delivered"] == 1 || a["failed"] != 0,
        |a| a.to_string(),
    );
    assert_eq!(a["delivered"], 1, "{a}");
    let seen = std::fs::read_to_string(&out).expect("the action wrote its environment");
    assert!(
        seen.contains(&format!("VSM_ALERT_ID=test-{id}\n")),
        "{seen}"
    );
    assert!(seen.contains("VSM_ALERT_RULE=action_test\n"), "{seen}");
    assert!(seen.contains("VSM_ALERT_TRANSITION=fired\n"), "{seen}");
    assert!(seen.contains("VSM_ACTION=exec:notify\n"), "{seen}");
}

/// One raw request over TCP; returns the status.
fn tcp_status(addr: std::net::SocketAddr, head: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(head.as_bytes()).expect("write");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn security_signals_see_failed_tokens_refused_hosts_and_listening_servers() {
    let listen = "import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\nprint(s.getsockname()[1], flush=True)\ntime.sleep(120)";
    let config = format!(
        "[monitoring]\nsecurity_check_interval_ms = 1000\n\n[[servers]]\nid = \"lsn\"\ncommand = \"python3\"\nargs = [\"-c\", {}]\n",
        serde_json::to_string(listen).expect("json string is a TOML string")
    );
    let d = Daemon::start_with(Setup {
        config: Some(config),
        ..Setup::default()
    });
    let addr = d.http.expect("tcp address");
    // Twice the limits: however the requests fall across at most two cycles, one cycle holds
    // at least the limit.
    for _ in 0..12 {
        let head = format!(
            "GET /api/v1/status HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer not-the-token-0123456789\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(tcp_status(addr, &head), 401);
    }
    for _ in 0..6 {
        let head = format!(
            "GET /api/v1/status HTTP/1.1\r\nHost: evil.example\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            d.bearer()
        );
        assert_eq!(tcp_status(addr, &head), 403);
    }
    let readings = wait_until(
        "security readings for the peer and the listening server",
        || deliveries_and_security(&d),
        |r| {
            r["security:auth_failures:127.0.0.1"]["bad_cycles"].as_u64() >= Some(1)
                && r["security:refused_origin:127.0.0.1"]["bad_cycles"].as_u64() >= Some(1)
                && r["security:listening:lsn"]["bad"] == true
        },
        |r| r.to_string(),
    );
    let value = |rule: &str| readings[rule]["last_bad"]["value"].as_f64().unwrap_or(0.0);
    assert!(
        value("security:auth_failures:127.0.0.1") >= 6.0,
        "{readings}"
    );
    assert!(
        value("security:refused_origin:127.0.0.1") >= 3.0,
        "{readings}"
    );
    assert!(readings["security:listening:lsn"]["last"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("listens on TCP port"));
    // A quiet cycle later the peer's rules read good again (their alerts can resolve).
    wait_until(
        "the peer's rules to read good",
        || deliveries_and_security(&d),
        |r| {
            r["security:auth_failures:127.0.0.1"]["bad"] == false
                && r["security:refused_origin:127.0.0.1"]["bad"] == false
        },
        |r| r.to_string(),
    );
}

/// A server whose Landlock sandbox refuses it a write outside its writable paths (the
/// fixture, started by a shell that first tries to create files under /var/tmp, five times)
/// raises one `sandbox_denied` event with the evidence line (the others are held back by the
/// per-server rate limit) and a security reading and alert `security:sandbox_denied:deny`.
/// On a kernel without Landlock the write succeeds, nothing refuses it, and the test checks
/// instead that no denial is reported (the same words without an enforced sandbox are no
/// evidence), and says so.
#[test]
fn a_landlock_denial_on_a_servers_stderr_is_a_security_signal() {
    let probe = format!("/var/tmp/vsm-landlock-probe-{}", std::process::id());
    let fixture = format!(
        "{}/tests/fixtures/mcp_fixture.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let script =
        format!("for i in 1 2 3 4 5; do echo x > {probe}-$i; done; exec python3 {fixture}");
    let config = format!(
        "[monitoring]\nsecurity_check_interval_ms = 1000\n\n[[servers]]\nid = \"deny\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", {}]\n",
        serde_json::to_string(&script).expect("json string is a TOML string")
    );
    let d = Daemon::start_with(Setup {
        config: Some(config),
        ..Setup::default()
    });
    let server = wait_until(
        "the server active",
        || d.http("GET", "/api/v1/mcp/servers/deny", None).1,
        |v| v["data"]["status"] == "active",
        |v| v.to_string(),
    );
    let landlock = server["data"]["landlock"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let events = |d: &Daemon| {
        let (status, v) = d.http("GET", "/api/v1/events?type=sandbox_denied&limit=100", None);
        assert_eq!(status, 200, "{v}");
        v["data"]["events"].as_array().cloned().unwrap_or_default()
    };
    if !landlock.starts_with("enforced") {
        eprintln!("Landlock is not enforced here ({landlock}): checking that nothing is reported");
        for i in 1..=5 {
            let _ = std::fs::remove_file(format!("{probe}-{i}"));
        }
        // The security cycle runs every second: two of them have passed by now.
        std::thread::sleep(Duration::from_secs(2));
        assert!(events(&d).is_empty(), "{:?}", events(&d));
        assert!(deliveries_and_security(&d)
            .get("security:sandbox_denied:deny")
            .is_none());
        return;
    }
    for i in 1..=5 {
        assert!(
            !Path::new(&format!("{probe}-{i}")).exists(),
            "the sandbox ({landlock}) let the write through"
        );
    }
    let readings = wait_until(
        "a security reading for the denial",
        || deliveries_and_security(&d),
        |r| r["security:sandbox_denied:deny"]["bad"] == true,
        |r| r.to_string(),
    );
    let message = readings["security:sandbox_denied:deny"]["last"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        message.contains("Landlock")
            && message.contains(&probe)
            && message.contains("Permission denied"),
        "{message}"
    );
    let seen = events(&d);
    assert_eq!(seen.len(), 1, "one event for the burst: {seen:?}");
    let e = &seen[0];
    assert_eq!(e["channel"], "security", "{e}");
    assert_eq!(e["data"]["server_id"], "deny", "{e}");
    assert_eq!(e["data"]["suppressed"], 0, "{e}");
    assert!(
        e["data"]["line"]
            .as_str()
            .is_some_and(|l| l.contains(&probe)),
        "{e}"
    );
    wait_until(
        "a firing security alert for the denial",
        || d.http("GET", "/api/v1/alerts?state=firing", None).1,
        |v| {
            v["data"]["alerts"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|a| a["rule"] == "security:sandbox_denied:deny")
            })
        },
        |v| v.to_string(),
    );
}

fn deliveries_and_security(d: &Daemon) -> Value {
    let (status, body) = d.http("GET", "/api/v1/checks", None);
    assert_eq!(status, 200, "{body}");
    body["data"]["security"]["readings"].clone()
}

#[test]
fn an_exec_check_outlives_the_orphan_sweep_of_a_crashing_mcp_server() {
    // Each exit of the flapping server sweeps the daemon's children for orphans of MCP
    // servers; the check's child is the daemon's child too and must be spared.
    let config = [
        check("slow", "exec", "argv = [\"/bin/sh\", \"-c\", \"sleep 1.5; echo done\"]"),
        "[[servers]]\nid = \"flap\"\ncommand = \"false\"\nbackoff_initial_ms = 10\nbackoff_max_ms = 10\nmax_failures = 1000\n".to_string(),
    ]
    .concat();
    let d = Daemon::start_with(Setup {
        config: Some(config),
        ..Setup::default()
    });
    let (code, slow) = run(&d, "slow");
    assert_eq!(code, 0, "{slow}");
    assert_eq!(slow["message"], "exit code 0: done");
    assert!(
        d.stderr().matches("MCP server flap exited").count() >= 3,
        "the server flapped during the run: {}",
        d.stderr()
    );
}

/// Live (not zombie) processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie
            && String::from_utf8_lossy(&cmd)
                .replace('\0', " ")
                .contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

/// A daemon whose exec check backgrounds a `sleep` with a unique duration and waits for it;
/// returns the daemon once the `sleep` runs, and the `sleep` command line.
fn daemon_with_a_backgrounded_sleep(tag: u32) -> (Daemon, String) {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let sleep = format!("sleep 9{tag}{:06}", nanos % 1_000_000);
    let config = format!(
        "[[checks]]\nname = \"bg\"\nkind = \"exec\"\nevery_ms = 3600000\ntimeout_ms = 600000\n\
         argv = [\"/bin/sh\", \"-c\", \"{sleep} & wait\"]\n"
    );
    let d = Daemon::start_with(Setup {
        config: Some(config),
        ..Setup::default()
    });
    // The first scheduled run starts soon after start, and runs until its sleep ends.
    wait_until(
        "the check's backgrounded sleep",
        || processes_with(&sleep),
        |p| !p.is_empty(),
        |_| d.stderr(),
    );
    (d, sleep)
}

#[test]
fn exec_check_grandchildren_do_not_outlive_the_daemon() {
    // Stopped: the daemon kills the check's process group at shutdown.
    let (mut d, sleep) = daemon_with_a_backgrounded_sleep(1);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0), "{}", d.stderr());
    wait_until(
        "the backgrounded sleep to be gone after a stop",
        || processes_with(&sleep),
        Vec::is_empty,
        |p| format!("still running: {p:?}"),
    );
    // Killed: the reaper knows the check's process group as it knows the servers'.
    let (d, sleep) = daemon_with_a_backgrounded_sleep(2);
    let _dir = d.kill9();
    wait_until(
        "the backgrounded sleep to be gone after a SIGKILL",
        || processes_with(&sleep),
        Vec::is_empty,
        |p| format!("still running: {p:?}"),
    );
}
