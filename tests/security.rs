//! Issue #7, who may call: the cross-site attack as a browser sends it, the token that TCP
//! always needs (generated when none is configured), JSON-only bodies, token validation, and
//! throttled refusal logs. Every test drives the real binary.

use crate::util::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHROME_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

fn addr(d: &Daemon) -> SocketAddr {
    d.http.expect("the daemon reports its TCP address")
}

/// One raw request on a fresh TCP connection (the daemon is asked to close it afterwards);
/// returns status, head and body.
fn exchange(a: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(a).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    split_response(&raw)
}

/// Reads exactly one response (head and Content-Length body) from a kept-alive connection.
fn read_one(s: &mut TcpStream) -> (u16, String, String) {
    let mut buf = [0u8; 16 * 1024];
    let mut got = Vec::new();
    loop {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let (status, head, body) = split_response(&got);
        let want = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse::<usize>().ok());
        if status != 0 && want.is_some_and(|w| body.len() >= w) {
            return (status, head, body);
        }
    }
}

/// A request as Chromium sends a cross-site `fetch(url, {method: "POST", mode: "no-cors",
/// body})`: a CORS "simple request" (text/plain), no preflight, no Authorization.
fn chromium_no_cors_post(a: SocketAddr, path: &str, origin: Option<&str>, body: &str) -> String {
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {len}\r\nsec-ch-ua-platform: \"Linux\"\r\nUser-Agent: {CHROME_UA}\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nAccept: */*\r\n{origin}\
         Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: empty\r\n\
         Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n\r\n{body}",
        port = a.port(),
        len = body.len(),
    )
}

fn code_of(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap_or(Value::Null)["errors"][0]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn the_cross_site_attack_as_chromium_sends_it_is_refused() {
    let d = Daemon::start();
    let a = addr(&d);
    let marker = d.dir.path().join("pwned");
    let body = json!({"id": "x", "command": "/bin/sh",
                      "args": ["-c", format!("id > {}", marker.display())]})
    .to_string();
    let other_port = format!("http://127.0.0.1:{}", a.port().wrapping_add(1).max(1));
    for origin in [Some("http://evil.example"), Some(other_port.as_str()), None] {
        let req = chromium_no_cors_post(a, "/api/v1/mcp/servers", origin, &body);
        let (status, head, answer) = exchange(a, &req);
        assert_eq!(status, 403, "Origin {origin:?}: {head}\n{answer}");
        assert_eq!(code_of(&answer), "forbidden", "{answer}");
        let req = chromium_no_cors_post(a, "/api/v1/control/stop", origin, r#"{"shutdown":true}"#);
        let (status, _, answer) = exchange(a, &req);
        assert_eq!(status, 403, "stop from Origin {origin:?}: {answer}");
    }
    // The token alone does not make a text/plain body acceptable either.
    let req = format!(
        "POST /api/v1/mcp/servers HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: {}\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        a.port(),
        d.bearer(),
        body.len()
    );
    let (status, _, answer) = exchange(a, &req);
    assert_eq!(status, 415, "{answer}");
    assert_eq!(code_of(&answer), "unsupported_media_type", "{answer}");

    // Nothing was registered, nothing ran, the daemon still runs.
    let (code, v) = d.http("GET", "/api/v1/mcp/servers?status=all", None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["servers"], json!([]), "{v}");
    let (code, v) = d.http("GET", "/api/v1/status", None);
    assert_eq!(code, 200, "the daemon must still run: {v}");
    assert!(!marker.exists(), "the command ran");
    let (_, metrics) = metrics_text(&d);
    assert!(
        metrics.contains("vsm_auth_failures_total{reason=\"origin\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vsm_auth_failures_total{reason=\"cross_site\"} 2"),
        "{metrics}"
    );
}

/// `GET /metrics` over the control socket.
fn metrics_text(d: &Daemon) -> (u16, String) {
    let raw = raw_exchange(
        &d.socket,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let (status, _, body) = split_response(&raw);
    (status, body)
}

#[test]
fn only_json_bodies_are_accepted() {
    let d = Daemon::start();
    let a = addr(&d);
    let post = |path: &str, content_type: Option<&str>, body: &str| {
        let ct = content_type.map_or(String::new(), |c| format!("Content-Type: {c}\r\n"));
        exchange(
            a,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\n{ct}\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                d.bearer(),
                body.len()
            ),
        )
    };
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let (status, _, body) = post("/api/v1/control/start", ct, r#"{"service":"worker"}"#);
        assert_eq!(status, 415, "{ct:?}: {body}");
        assert_eq!(code_of(&body), "unsupported_media_type", "{body}");
    }
    // A body-less POST over TCP must declare JSON too (a no-cors fetch sends none).
    let (status, _, body) = post("/api/v1/config/reload", None, "");
    assert_eq!(status, 415, "{body}");
    let (status, _, body) = post(
        "/api/v1/config/reload",
        Some("Application/JSON; charset=utf-8"),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = post(
        "/api/v1/control/start",
        Some("application/json"),
        r#"{"service":"worker"}"#,
    );
    assert!(status == 200 || status == 409, "{body}");

    // The control socket: a body must be JSON; a body-less POST is fine.
    let raw = raw_exchange(
        &d.socket,
        b"POST /api/v1/control/start HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n\
          Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    let (status, _, body) = split_response(&raw);
    assert_eq!(status, 415, "{body}");
    let raw = raw_exchange(
        &d.socket,
        b"POST /api/v1/config/reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let (status, _, body) = split_response(&raw);
    assert_eq!(status, 200, "{body}");
    // The CLI sends the header: its commands with bodies work.
    let (code, v) = d.cli_json(&["config", "set", "daemon.log_level", "debug"]);
    assert_eq!(code, 0, "{v}");
}

fn get_status(d: &Daemon, auth: Option<&str>) -> (u16, String) {
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let (status, _, body) = exchange(
        addr(d),
        &format!(
            "GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
        ),
    );
    (status, body)
}

#[test]
fn a_token_is_generated_reused_and_shown_on_the_control_socket_only() {
    let keep = TempDir::new("token-state");
    let state = keep.path().join("state");
    let setup = || Setup {
        state_dir: Some(state.clone()),
        ..Setup::default()
    };
    let mut d = Daemon::start_with(setup());
    let file = state.join("api_token");
    let mode = std::fs::metadata(&file)
        .expect("api_token")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let stored = std::fs::read_to_string(&file).expect("read");
    let token = stored.lines().next().expect("a line").to_string();
    assert!(token.len() >= 43, "32 random bytes, URL-safe: {token:?}");
    assert!(token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    // The log says where, never what.
    let log = d.stderr();
    assert!(log.contains(&file.display().to_string()), "{log}");
    assert!(!log.contains(&token), "the token is in the log");

    assert_eq!(get_status(&d, None).0, 401);
    assert_eq!(get_status(&d, Some("wrong-token-wrong-token")).0, 401);
    let (status, body) = get_status(&d, Some(&token));
    assert_eq!(status, 200, "{body}");

    let (code, v) = d.cli_json(&["token"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["token"], token.as_str());
    assert_eq!(v["source"], "generated");
    assert_eq!(v["path"], file.display().to_string());
    let out = d.cli(&["token"]);
    assert!(stdout(&out).starts_with(&token), "{}", stdout(&out));
    assert!(stdout(&out).contains("generated"), "{}", stdout(&out));

    // Never over TCP, not even with the token, and not through the WebSocket.
    let (status, _, body) = exchange(
        addr(&d),
        &format!(
            "GET /api/v1/auth/token HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains(&token), "{body}");
    let (mut ws, _) = tungstenite::connect(format!("ws://{}/ws/monitor?token={token}", addr(&d)))
        .expect("ws connect");
    ws.send(tungstenite::Message::text(
        json!({"id": 9, "command": "request",
               "parameters": {"method": "GET", "path": "/api/v1/auth/token"}})
        .to_string(),
    ))
    .expect("send");
    let deadline = Instant::now() + PATIENCE;
    let answer = loop {
        assert!(Instant::now() < deadline, "no answer over the WebSocket");
        let m = ws.read().expect("read");
        let Ok(text) = m.to_text() else { continue };
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        if v["id"] == 9 {
            break v;
        }
    };
    assert_eq!(answer["errors"][0]["code"], "forbidden", "{answer}");
    assert!(!answer.to_string().contains(&token));
    drop(ws);

    // Reused after a restart.
    assert_eq!(d.cli(&["stop"]).status.code(), Some(0));
    d.wait_exit();
    let mut d = Daemon::start_with(setup());
    assert_eq!(d.token, token, "the generated token is reused");
    assert_eq!(get_status(&d, Some(&token)).0, 200);

    // Rotated: the old one stops working at once.
    let (code, v) = d.cli_json(&["token", "rotate"]);
    assert_eq!(code, 0, "{v}");
    let rotated = v["token"].as_str().expect("token").to_string();
    assert_ne!(rotated, token);
    assert_eq!(get_status(&d, Some(&token)).0, 401);
    assert_eq!(get_status(&d, Some(&rotated)).0, 200);
    assert_eq!(
        std::fs::read_to_string(&file).expect("read").trim_end(),
        rotated
    );

    // A damaged file is moved aside and replaced.
    assert_eq!(d.cli(&["stop"]).status.code(), Some(0));
    d.wait_exit();
    std::fs::write(&file, " \n").expect("damage");
    let d = Daemon::start_with(setup());
    assert_ne!(d.token, rotated);
    assert!(d.token.len() >= 43);
    let aside = std::fs::read_dir(&state)
        .expect("list")
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("api_token.corrupt-")
        });
    assert!(aside, "the damaged token file is kept aside");
    assert!(d.stderr().contains("is damaged"), "{}", d.stderr());
    assert_eq!(get_status(&d, Some(&d.token)).0, 200);
}

#[test]
fn a_configured_token_is_shown_but_not_rotated() {
    let d = Daemon::start_with(Setup {
        config: Some("[security]\napi_token = \"configured-token-0123\"\n".into()),
        ..Setup::default()
    });
    let (code, v) = d.cli_json(&["token"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["token"], "configured-token-0123");
    assert_eq!(v["source"], "config");
    let (code, v) = d.cli_json(&["token", "rotate"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["errors"][0]["code"], "conflict", "{v}");
    assert!(!d.state_dir.join("api_token").exists());
}

/// Starts a daemon that must refuse to start; returns its stderr. Kills it (and fails) if it
/// neither starts nor exits within the deadline, as a daemon blocked on a FIFO would.
fn start_refused(dir: &Path, config: &str) -> String {
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config).expect("config");
    let mut child = Command::new(bin())
        .args(["start", "--listen", "127.0.0.1:0", "--socket"])
        .arg(dir.join("run/control.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--config")
        .arg(&config_path)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("VSM_DAEMON_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            assert_eq!(status.code(), Some(1), "{err}");
            return err;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon neither started nor exited with config:\n{config}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn bad_token_values_and_files_are_refused() {
    let dir = TempDir::new("bad-tokens");
    for (value, why) in [
        (r#"" ""#, "blank"),
        (r#""\t""#, "blank"),
        (r#""0123456789abcdef\u0001""#, "control"),
        (r#"" 0123456789abcdef ""#, "whitespace"),
        (r#""0123456789abcdef\n""#, "whitespace"),
        (r#""short""#, "too short"),
    ] {
        let err = start_refused(dir.path(), &format!("[security]\napi_token = {value}\n"));
        assert!(err.contains("security.api_token"), "{value}: {err}");
        assert!(err.contains(why), "{value}: {err}");
    }
    // A blank token never opens a non-loopback listener.
    let err = start_refused(
        dir.path(),
        "[daemon]\nhttp_listen = \"0.0.0.0:0\"\n[security]\napi_token = \" \"\n",
    );
    assert!(err.contains("security.api_token"), "{err}");

    let fifo = dir.path().join("token.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let padded = dir.path().join("padded");
    std::fs::write(&padded, " 0123456789abcdef\n").expect("write");
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'a'; 64 * 1024]).expect("write");
    for file in [Path::new("/dev/zero"), &fifo, &padded, &big] {
        let err = start_refused(
            dir.path(),
            &format!("[security]\napi_token_file = \"{}\"\n", file.display()),
        );
        assert!(
            err.contains("security.api_token_file") && err.contains(&file.display().to_string()),
            "{}: {err}",
            file.display()
        );
    }

    // The same at run time: `config set` refuses, the daemon keeps answering.
    let d = Daemon::start();
    for (key, value) in [
        ("security.api_token", " "),
        ("security.api_token", "short"),
        ("security.api_token_file", "/dev/zero"),
        ("security.api_token_file", &fifo.display().to_string()),
        ("daemon.http_listen", "0.0.0.0:0"),
    ] {
        let (code, v) = d.cli_json(&["config", "set", key, value]);
        assert_eq!(code, 1, "{key} = {value:?}: {v}");
        assert_eq!(v["errors"][0]["code"], "config_invalid", "{key}: {v}");
        assert_eq!(v["errors"][0]["field"], key, "{key}: {v}");
    }
    assert_eq!(get_status(&d, Some(&d.token)).0, 200);
    let (code, v) = d.cli_json(&["config", "show", "--section", "daemon"]);
    assert_eq!(code, 0);
    assert_eq!(v["config"]["http_listen"], "127.0.0.1:4000", "{v}");
}

#[test]
fn websocket_origin_must_carry_our_port() {
    let d = Daemon::start();
    let a = addr(&d);
    let handshake = |origin: &str| {
        let mut s = TcpStream::connect(a).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        s.write_all(
            format!(
                "GET /ws/monitor?token={} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nOrigin: {origin}\r\n\
                 Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                d.token,
                a.port()
            )
            .as_bytes(),
        )
        .expect("write");
        // The status line only: a 101 has no body length to wait for.
        let mut line = [0u8; 12];
        s.read_exact(&mut line).expect("a status line");
        String::from_utf8_lossy(&line[9..])
            .parse::<u16>()
            .unwrap_or(0)
    };
    let wrong = a.port().checked_add(1).unwrap_or(1);
    assert_eq!(handshake(&format!("http://127.0.0.1:{wrong}")), 403);
    assert_eq!(handshake(&format!("http://localhost:{wrong}")), 403);
    assert_eq!(handshake("http://127.0.0.1"), 403);
    assert_eq!(handshake("null"), 403);
    let mut s = TcpStream::connect(a).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.write_all(
        format!(
            "GET /ws/monitor?token={} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            d.token,
            port = a.port()
        )
        .as_bytes(),
    )
    .expect("write");
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("read");
    assert_eq!(&head, b"HTTP/1.1 101");
}

#[test]
fn refused_requests_are_logged_rate_limited() {
    // A health tick every second reports floods that stopped.
    let d = Daemon::start_with(Setup {
        config: Some("[monitoring]\nhealth_check_interval_ms = 1000\n".into()),
        ..Setup::default()
    });
    let mut s = TcpStream::connect(addr(&d)).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let ask = b"GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer wrong-wrong-wrong-wrong\r\n\r\n";
    for _ in 0..2000 {
        s.write_all(ask).expect("write");
        let (status, head, _) = read_one(&mut s);
        assert_eq!(status, 401, "{head}");
    }
    let (_, metrics) = metrics_text(&d);
    assert!(
        metrics.contains("vsm_auth_failures_total{reason=\"token\"} 2000"),
        "every refusal is counted: {metrics}"
    );
    let log = d.stderr();
    let lines = log
        .lines()
        .filter(|l| l.contains("refused an unauthenticated request"))
        .count();
    // 5 lines per 10 s window; the loop above may span a few windows on a slow machine.
    assert!(lines >= 1, "{log}");
    assert!(lines <= 60, "{lines} refusal lines for 2000 requests");
    assert!(log.len() < 200 * 1024, "{} bytes of log", log.len());
    // Every refusal is either logged or counted in a "suppressed K" line, once the window ends.
    let accounted = |log: &str| {
        let summarised: u64 = log
            .lines()
            .filter(|l| l.contains("(refused: token)"))
            .filter_map(|l| {
                l.split("suppressed ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        let logged = log
            .lines()
            .filter(|l| l.contains("refused an unauthenticated request"))
            .count() as u64;
        logged + summarised
    };
    wait_until(
        "the suppressed refusals to be summarised",
        || d.stderr(),
        |log| accounted(log) == 2000,
        |log| format!("accounted for {} of 2000:\n{log}", accounted(log)),
    );
}
