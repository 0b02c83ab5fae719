//! Issue #13, the status page: served without a token and with a strict policy, nothing else
//! reachable without one, a ready link from `vsm-daemon token`, and the page itself in a real
//! browser (Debian's chromium driven by playwright-core through `tests/browser/status_page.cjs`;
//! `.ci/install-browser-test` installs both).

use crate::util::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn addr(d: &Daemon) -> SocketAddr {
    d.http.expect("the daemon reports its TCP address")
}

/// `METHOD path` over TCP with the given extra header lines (and `Host: 127.0.0.1:PORT`
/// unless they name a Host); returns status, head and body.
fn tcp(a: SocketAddr, method: &str, path: &str, extra: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(a).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let host = if extra.starts_with("Host:") {
        String::new()
    } else {
        format!("Host: 127.0.0.1:{}\r\n", a.port())
    };
    let req = format!("{method} {path} HTTP/1.1\r\n{host}{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    split_response(&raw)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn the_status_page_is_public_strict_and_alone() {
    let d = Daemon::start();
    let a = addr(&d);
    for (path, media) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let (status, head, body) = tcp(a, "GET", path, "");
        assert_eq!(status, 200, "{path}: {head}");
        let ct = header(&head, "content-type").unwrap_or_default();
        assert!(ct.starts_with(media), "{path}: {ct}");
        let csp = header(&head, "content-security-policy").unwrap_or_default();
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{path}: CSP {csp:?} lacks {part}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&head, "referrer-policy"), Some("no-referrer"));
        assert!(!body.is_empty(), "{path}");
        // HEAD: the same head, no body.
        let (status, head_only, body) = tcp(a, "HEAD", path, "");
        assert_eq!((status, body.as_str()), (200, ""), "HEAD {path}");
        assert_eq!(header(&head_only, "content-security-policy"), Some(csp));
    }
    let (_, _, html) = tcp(a, "GET", "/", "");
    assert!(html.contains("src=\"/ui/app.js\"") && html.contains("href=\"/ui/app.css\""));
    assert!(!html.contains(&d.token), "the page holds no secret");

    // Nothing else is public: neighbours of the page's paths and the data it shows.
    for path in [
        "/ui",
        "/ui/",
        "/ui/other.js",
        "/index.html",
        "/api/v1/status",
        "/api/v1/mcp/servers",
        "/metrics",
        "/ws/monitor",
    ] {
        let (status, _, body) = tcp(a, "GET", path, "");
        assert_eq!(status, 401, "{path} without a token: {body}");
    }
    // The page is not a way around the site rules: another origin is refused.
    let (status, _, _) = tcp(a, "GET", "/", "Origin: http://evil.example\r\n");
    assert_eq!(status, 403);
    // Nor a way around the Host allow-list (DNS rebinding).
    let (status, _, body) = tcp(a, "GET", "/", "Host: evil.example\r\n");
    assert_eq!(status, 403, "{body}");
    // Only GET and HEAD are public; another method needs the token and then is a 405.
    let json = "Content-Type: application/json\r\nContent-Length: 0\r\n";
    let (status, head, _) = tcp(a, "POST", "/", json);
    assert_eq!(status, 401, "{head}");
    let with_token = format!("Authorization: {}\r\n{json}", d.bearer());
    let (status, head, _) = tcp(a, "POST", "/", &with_token);
    assert_eq!(status, 405, "{head}");

    // `vsm-daemon token` prints a ready link with the token in the fragment.
    let out = d.cli(&["token"]);
    let text = stdout(&out);
    let link = format!("http://{a}/#token={}", d.token);
    assert!(
        text.lines().any(|l| l == format!("status page: {link}")),
        "{text}"
    );
    let (code, v) = d.cli_json(&["token"]);
    assert_eq!((code, v["page"].as_str()), (0, Some(link.as_str())), "{v}");
}

/// Where `.ci/install-browser-test` put playwright-core.
fn browser_peers() -> PathBuf {
    std::env::var_os("VSM_BROWSER_PEERS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".test-peers/browser"),
        PathBuf::from,
    )
}

#[test]
fn status_page_in_a_real_browser() {
    let peers = browser_peers();
    assert!(
        peers.join("node_modules/playwright-core/package.json").is_file()
            && std::path::Path::new("/usr/bin/chromium").is_file(),
        "the browser test needs /usr/bin/chromium and playwright-core in {}: run .ci/install-browser-test",
        peers.display()
    );
    // A declared tcp check to a port nothing listens on (bound, then released), scheduled too
    // rarely to run again by itself; fast monitoring cycles so the alert comes quickly.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = format!(
        "[monitoring]\nperformance_check_interval_ms = 200\nhealth_check_interval_ms = 200\n\n\
         [[checks]]\nname = \"closed\"\nkind = \"tcp\"\ntarget = \"127.0.0.1:{closed}\"\n\
         every_ms = 3600000\ntimeout_ms = 5000\n"
    );
    let d = Daemon::start_with(Setup {
        config: Some(config.clone()),
        ..Setup::default()
    });
    let a = addr(&d);
    let fixture = format!(
        "{}/tests/fixtures/mcp_fixture.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = d.cli(&["mcp", "register", "fx", "--", "python3", &fixture]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    wait_until(
        "fx active",
        || d.http("GET", "/api/v1/mcp/servers/fx", None).1,
        |v| v["data"]["status"] == "active",
        |v| format!("{v:#}"),
    );
    let (_, token) = d.cli_json(&["token"]);
    let link = token["page"].as_str().expect("a page link").to_string();
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let shot = target.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let script = format!(
        "{}/tests/browser/status_page.cjs",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut node = Command::new("node")
        .arg(&script)
        .arg(&peers)
        .arg(&link)
        .arg("fx")
        .arg("closed")
        .arg(&shot)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let (tx, rx) = mpsc::channel();
    let out = node.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Phase one ends when the page asks for the daemon to go away; phase two: the same
    // daemon (port, state dir, token) comes back and the page must reconnect by itself.
    let mut said = String::new();
    let mut d = Some(d);
    let deadline = Instant::now() + Duration::from_secs(300);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains("\"phase\":\"raise-alert\"") {
            // The host surely uses more than 1 % of its memory: a real alert.
            let out = d.as_ref().expect("the daemon").cli(&[
                "config",
                "set",
                "monitoring.alert_thresholds.memory_usage_max_percent",
                "1",
            ]);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            continue;
        }
        if line.contains("\"phase\":\"restart-daemon\"") {
            let old = d.take().expect("the daemon");
            // The ack button reached the daemon.
            let (_, v) = old.http("GET", "/api/v1/alerts?state=firing", None);
            let memory = v["data"]["alerts"]
                .as_array()
                .and_then(|l| {
                    l.iter()
                        .find(|a| a["rule"] == "performance:memory_usage_percent")
                })
                .cloned()
                .unwrap_or_default();
            assert_eq!(memory["acked"], true, "{v:#}");
            // So did "run now": the check ran once at start and once more from the page.
            let (_, v) = old.http("GET", "/api/v1/checks", None);
            let check = v["data"]["checks"]
                .as_array()
                .and_then(|l| l.iter().find(|c| c["name"] == "closed"))
                .cloned()
                .unwrap_or_default();
            assert_eq!(check["status"], "down", "{v:#}");
            assert!(check["runs"].as_u64().is_some_and(|n| n >= 2), "{v:#}");
            // The click reached the daemon: the server is stopped there, not only on the page.
            let (_, v) = old.http("GET", "/api/v1/mcp/servers/fx", None);
            assert_eq!(v["data"]["status"], "stopped", "{v:#}");
            let history = v["data"]["history"].to_string();
            assert!(history.contains("stop requested"), "{history}");
            // The token travelled in the WebSocket's query string; it must not reach the log.
            assert!(
                !old.stderr().contains(&old.token),
                "the token is in the log"
            );
            let dir = old.kill9();
            let again = Daemon::start_in(
                dir,
                Setup {
                    listen: Some(a.to_string()),
                    config: Some(config.clone()),
                    ..Setup::default()
                },
            )
            .expect("the daemon starts again on the same port");
            d = Some(again);
            continue;
        }
        said.push_str(&line);
        said.push('\n');
    }
    if Instant::now() >= deadline {
        let _ = node.kill();
    }
    let status = node.wait().expect("node exits");
    let mut err = String::new();
    if let Some(mut e) = node.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let d = d.expect("the restarted daemon");
    let seen: Value = serde_json::from_str(said.lines().last().unwrap_or("")).unwrap_or_default();
    assert_eq!(
        status.code(),
        Some(0),
        "browser run failed: {said}\n{err}\n--- daemon log ---\n{}",
        d.stderr()
    );
    assert_eq!(seen["console_errors"], serde_json::json!([]), "{said}");
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{said}");
    // The fragment was taken into sessionStorage and removed from the address bar.
    assert_eq!(seen["hash_after_load"], "", "{said}");
    assert_eq!(seen["token_kept"], true, "{said}");
    println!("browser: {said}");
    let steps = seen["steps"].to_string();
    assert!(steps.contains("reconnected by itself"), "{said}");
    assert!(steps.contains("alert shown after the restart"), "{said}");
    assert!(
        seen["check_runs_after"].as_u64() > seen["check_runs_before"].as_u64(),
        "{said}"
    );
    assert!(shot.is_file(), "screenshot at {}", shot.display());
    assert!(!d.stderr().contains(&d.token), "the token is in the log");
}
