//! Issue #13, the fleet through Prometheus: the files in `packaging/prometheus/` pass
//! `promtool check config`, `check rules` and the rules' own unit tests (`promtool test
//! rules`), every metric the rules name exists in a live `/metrics` of the real binary, and
//! that exposition passes `promtool check metrics`. promtool comes from Debian's `prometheus`
//! package (`.ci/run` installs it).

use crate::util::*;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/prometheus")
}

fn promtool(args: &[&str], cwd: &Path, input: Option<&[u8]>) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus; .ci/run installs it)");
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(bytes).expect("write to promtool");
    }
    child.wait_with_output().expect("promtool output")
}

fn ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {:?}\n{}{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
}

#[test]
fn the_prometheus_files_pass_promtool() {
    let tmp = TempDir::new("prom");
    // The scrape config names the token file of a real deployment; check it with one that
    // exists (promtool checks that the file is there).
    let token = tmp.path().join("vsm-daemon.token");
    std::fs::write(&token, "a-token-of-at-least-16-chars\n").expect("token file");
    let config = std::fs::read_to_string(dir().join("prometheus.yml")).expect("prometheus.yml");
    assert!(config.contains("credentials_file: /etc/prometheus/vsm-daemon.token"));
    let config = config.replace(
        "/etc/prometheus/vsm-daemon.token",
        token.to_str().expect("utf-8 path"),
    );
    std::fs::write(tmp.path().join("prometheus.yml"), config).expect("write config");
    std::fs::copy(
        dir().join("vsm-daemon.rules.yml"),
        tmp.path().join("vsm-daemon.rules.yml"),
    )
    .expect("copy rules");
    let out = promtool(&["check", "config", "prometheus.yml"], tmp.path(), None);
    ok("promtool check config", &out);
    assert!(
        stdout(&out).contains("SUCCESS: 8 rules found"),
        "{}",
        stdout(&out)
    );
    ok(
        "promtool check rules",
        &promtool(&["check", "rules", "vsm-daemon.rules.yml"], &dir(), None),
    );
    ok(
        "promtool test rules",
        &promtool(&["test", "rules", "tests.yml"], &dir(), None),
    );
}

/// `GET /metrics` over TCP with the token.
pub(crate) fn scrape(d: &Daemon) -> String {
    let a = d.http.expect("TCP address");
    let mut s = TcpStream::connect(a).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        a.port(),
        d.bearer()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let (status, head, body) = split_response(&raw);
    assert_eq!(status, 200, "{head}{body}");
    body
}

#[test]
fn live_metrics_pass_promtool_and_hold_every_metric_the_rules_use() {
    let d = Daemon::start();
    let fixture = format!(
        "{}/tests/fixtures/mcp_fixture.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = d.cli(&["mcp", "register", "fx", "--", "python3", &fixture]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let active = || {
        wait_until(
            "fx active",
            || d.http("GET", "/api/v1/mcp/servers/fx", None).1,
            |v| v["data"]["status"] == "active",
            |v| format!("{v:#}"),
        )
    };
    let first = active();
    // Some traffic, so that histograms, tool calls and a restart have samples.
    let (code, v) = d.http(
        "POST",
        "/api/v1/mcp/servers/fx/tools/call",
        Some(r#"{"name":"echo","arguments":{"message":"m"}}"#),
    );
    assert_eq!(code, 200, "{v}");
    let pid = first["data"]["pid"].as_i64().expect("pid");
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    wait_until(
        "fx restarted",
        || d.http("GET", "/api/v1/mcp/servers/fx", None).1,
        |v| v["data"]["status"] == "active" && v["data"]["pid"].as_i64() != Some(pid),
        |v| format!("{v:#}"),
    );
    let text = scrape(&d);
    let out = promtool(&["check", "metrics"], &dir(), Some(text.as_bytes()));
    ok(&format!("promtool check metrics\n{text}"), &out);

    // Every vsm_ metric a rule names is exported (histograms by their base name).
    let exported: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for name in ["vsm_mcp_server_restarts_total", "vsm_mcp_server_up"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains("server=\"fx\"")),
            "{name} has no sample for fx:\n{text}"
        );
    }
    // The "alerts firing" rule reads one series per severity, present at zero too.
    for severity in ["info", "warning", "critical"] {
        let series = format!("vsm_alerts_firing{{severity=\"{severity}\"}} ");
        assert!(
            text.lines().any(|l| l.starts_with(&series)),
            "no {series}sample:\n{text}"
        );
    }
    let rules = std::fs::read_to_string(dir().join("vsm-daemon.rules.yml")).expect("rules");
    let mut used = BTreeSet::new();
    for line in rules.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(i) = rest.find("vsm_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            used.insert(name);
        }
    }
    assert!(used.len() >= 5, "{used:?}");
    for name in &used {
        assert!(
            exported.contains(name.as_str()),
            "the rules use {name}, which /metrics does not export"
        );
    }
}
