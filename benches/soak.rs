//! Soak benchmark: the daemon under steady load for a long time, with its servers killed and
//! its config reloaded on a schedule, sampled every window; fails if a resource grows without
//! bound.
//!
//! `cargo bench --bench soak` runs 30 minutes. Environment:
//! - `VSM_SOAK_MINUTES` (default 30; fractions allowed) and `VSM_SOAK_WINDOW_SECS` (60): how
//!   long, and how often a row is printed.
//! - `VSM_SOAK_SERVERS` (20) and `VSM_SOAK_KILL_SECS` (30): servers supervised, and how often
//!   one of them is killed with SIGKILL.
//! - `VSM_BENCH_BIN` / `VSM_BENCH_STATIC_BIN`: the binary under test (as the other benches).
//!
//! The servers: the real ones `.ci/install-test-peers` put in `.test-peers/` (mcp-server-time
//! from PyPI and server-everything from npm, when present) and the python fixture for the
//! rest. Load: one REST client (status, server list, a tool call, events; back to back with a
//! 20 ms pause), one WebSocket client subscribed to every channel sending a named command
//! every 100 ms and reading everything, a SIGKILL of the next server every `KILL_SECS`, and a
//! config reload (the file rewritten with another health-check interval) every minute. Work
//! that arrives with later issues plugs into [`workloads`] (a flapping check, the `/mcp`
//! gateway, an acquisition cycle): each probes its route and is listed as absent until then.
//!
//! Per window it prints: RSS, open fds, threads, zombie children, armed timers, event-history
//! size, REST requests, their p99 latency and errors, WebSocket messages, kills and reloads.
//! Verdict: the second half of the run may not exceed the first half by more than a slack
//! (RSS +10 % + 1 MiB, fds +8, threads +2, timers +20 % + 8), there may be no zombie at any
//! sample after the first, the event history stays within its capacity (1000), every killed
//! server is active again at the end, and no request may fail. Exit code 1 on a failed
//! verdict or an error.

mod common;

use common::{
    children_of, fmt_kb, on_path, open_fds, percentile, utc_now, vm_rss_kb, Binaries, DaemonGuard,
    DaemonSetup, Fixtures, Http, Result, MB,
};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EVENT_HISTORY: usize = 1000;

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v: &f64| v.is_finite() && *v > 0.0)
        .unwrap_or(default)
}

fn config(health_ms: u64) -> String {
    format!(
        "[daemon]\nhttp_listen = \"127.0.0.1:0\"\n[monitoring]\nhealth_check_interval_ms = {health_ms}\n\
         [mcp_servers]\nmax_concurrent_servers = 64\n"
    )
}

/// What the load threads count, shared with the sampler.
#[derive(Default)]
struct Counters {
    latencies: Mutex<Vec<Duration>>,
    rest_errors: AtomicU64,
    ws_messages: AtomicU64,
    ws_dropped: AtomicU64,
    ws_errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    fn error(&self, counter: &AtomicU64, e: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e);
        }
    }
}

/// One window's row.
struct Sample {
    minute: f64,
    rss_kb: u64,
    fds: usize,
    threads: u64,
    zombies: usize,
    timers: u64,
    history: usize,
    requests: usize,
    p99: Duration,
    rest_errors: u64,
    ws_messages: u64,
    kills: u64,
    reloads: u64,
}

/// Periodic work beyond the base load. Each probes whether the daemon has its route; absent
/// ones are reported, never faked.
struct Workload {
    name: &'static str,
    /// A GET that answers (not 404) once the feature exists.
    probe: &'static str,
    every: Duration,
    run: fn(&mut Http<TcpStream>) -> Result<()>,
}

fn workloads() -> Vec<Workload> {
    vec![
        // A flapping check (issue 9's [[checks]]): plug in a check that alternates here.
        Workload {
            name: "checks (flapping check)",
            probe: "/api/v1/checks",
            every: Duration::from_secs(10),
            run: |http| http.get("/api/v1/checks").map(drop),
        },
        // The daemon as an MCP server (DESIGN.md §14): a tools/list through the gateway.
        Workload {
            name: "/mcp gateway",
            probe: "/mcp",
            every: Duration::from_secs(1),
            run: |http| {
                let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
                http.call("POST", "/mcp", Some(&body)).map(drop)
            },
        },
        // An acquisition cycle (capabilities/acquire) once that pipeline lands.
        Workload {
            name: "acquisition cycle",
            probe: "/api/v1/capabilities",
            every: Duration::from_secs(60),
            run: |http| http.get("/api/v1/capabilities").map(drop),
        },
    ]
}

/// The server specs: real peers when installed, fixtures for the rest.
fn server_specs(fixtures: &Fixtures, n: usize, notes: &mut Vec<String>) -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-peers");
    let mut specs = Vec::new();
    let time = root.join("venv-time/bin/mcp-server-time");
    if time.is_file() && specs.len() < n {
        specs.push(json!({"id": "time", "command": time, "args": ["--local-timezone", "UTC"]}));
    }
    let everything = root.join("npm/node_modules/.bin/mcp-server-everything");
    if everything.is_file() && specs.len() < n {
        specs.push(json!({"id": "everything", "command": everything}));
    }
    if specs.is_empty() {
        notes.push(
            "no real servers in .test-peers/ (run .ci/install-test-peers): fixtures only".into(),
        );
    }
    let mut i = 0;
    while specs.len() < n {
        specs.push(fixtures.spec(&format!("fx{i:02}"), json!({})));
        i += 1;
    }
    specs
}

fn rest_load(
    addr: std::net::SocketAddr,
    token: String,
    fixture: String,
    c: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let mut http: Option<Http<TcpStream>> = None;
    let call = json!({"name": "echo", "arguments": {"message": "soak"}});
    let paths = [
        "/api/v1/status",
        "/api/v1/mcp/servers",
        "",
        "/api/v1/events?limit=10",
    ];
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        if http.as_ref().is_none_or(|h| h.closed) {
            match common::tcp_as(addr, &token) {
                Ok(h) => http = Some(h),
                Err(e) => {
                    c.error(&c.rest_errors, e);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        }
        let Some(h) = http.as_mut() else { continue };
        let path = paths[i % paths.len()];
        i += 1;
        let t0 = Instant::now();
        let r = if path.is_empty() {
            h.call(
                "POST",
                &format!("/api/v1/mcp/servers/{fixture}/tools/call"),
                Some(&call),
            )
        } else {
            h.call("GET", path, None)
        };
        let took = t0.elapsed();
        match r {
            // A tool call may meet its server just killed: that answer is the daemon's
            // correct refusal, not a failure of the daemon.
            Err(e)
                if path.is_empty()
                    && (e.contains("server_exited")
                        || e.contains("not_active")
                        || e.contains("409")) => {}
            Err(e) => {
                c.error(&c.rest_errors, format!("{path}: {e}"));
                http = None;
            }
            Ok(_) => {
                if let Ok(mut l) = c.latencies.lock() {
                    l.push(took);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ws_load(addr: std::net::SocketAddr, token: String, c: Arc<Counters>, stop: Arc<AtomicBool>) {
    use tungstenite::Message;
    while !stop.load(Ordering::Relaxed) {
        let url = format!("ws://{addr}/ws/monitor?token={token}");
        let stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                c.error(&c.ws_errors, format!("ws connect: {e}"));
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
        let mut ws = match tungstenite::client(url.as_str(), stream) {
            Ok((ws, _)) => ws,
            Err(e) => {
                c.error(&c.ws_errors, format!("ws handshake: {e}"));
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let channels = [
            "mcp_servers",
            "performance",
            "health",
            "security",
            "variety_monitoring",
            "logs",
            "consciousness",
        ];
        let sub = json!({"command": "subscribe", "channels": channels}).to_string();
        if ws.send(Message::text(sub)).is_err() {
            continue;
        }
        let mut next = Instant::now();
        let mut id = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next {
                id += 1;
                let cmd = json!({"id": id, "command": if id % 2 == 0 { "status" } else { "mcp_list_servers" }});
                if let Err(e) = ws.send(Message::text(cmd.to_string())) {
                    c.error(&c.ws_errors, format!("ws send: {e}"));
                    break;
                }
                next += Duration::from_millis(100);
            }
            match ws.read() {
                Ok(Message::Text(t)) => {
                    c.ws_messages.fetch_add(1, Ordering::Relaxed);
                    if t.contains("\"events_dropped\"") {
                        c.ws_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    c.error(&c.ws_errors, format!("ws read: {e}"));
                    break;
                }
            }
        }
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        })
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Zombie children of `pid` that are still zombies half a second later (a server killed just
/// now is a zombie until the daemon's SIGCHLD handling reaps it, within milliseconds).
fn lasting_zombies(pid: u32) -> usize {
    let zombies = |p| -> Vec<u32> {
        children_of(p)
            .into_iter()
            .filter(|(_, st)| *st == 'Z')
            .map(|(c, _)| c)
            .collect()
    };
    let first = zombies(pid);
    if first.is_empty() {
        return 0;
    }
    std::thread::sleep(Duration::from_millis(500));
    let later = zombies(pid);
    first.iter().filter(|z| later.contains(z)).count()
}

fn run() -> Result<(Vec<Sample>, Vec<String>, bool)> {
    let minutes = env_f64("VSM_SOAK_MINUTES", 30.0);
    let window = Duration::from_secs_f64(env_f64("VSM_SOAK_WINDOW_SECS", 60.0));
    let servers = env_f64("VSM_SOAK_SERVERS", 20.0) as usize;
    let kill_every = Duration::from_secs_f64(env_f64("VSM_SOAK_KILL_SECS", 30.0));
    let total = Duration::from_secs_f64(minutes * 60.0);
    let mut notes = Vec::new();

    let bins = Binaries::from_env();
    bins.print("measured");
    let bin = bins.measured.clone();
    let python = on_path("python3").ok_or("python3 is not on PATH")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_fixture.py");
    let fixtures = Fixtures { python, script };

    let cfg_text = config(5000);
    let mut daemon = DaemonGuard::start_ready(
        &bin,
        &DaemonSetup {
            dir_name: "vsm-soak",
            label: "soak",
            config: Some(&cfg_text),
            args: &[],
            keep_log_as: Some("soak.log".into()),
        },
    )?;
    let pid = daemon.pid();
    let addr = daemon.http_addr()?;
    let config_path = daemon.socket.with_file_name("config.toml");
    // A fresh control connection per use: a kept-alive one idles out between kills (30 s).
    let socket = daemon.socket.clone();
    let ctl = || common::unix(&socket);
    let specs = server_specs(&fixtures, servers, &mut notes);
    for spec in &specs {
        ctl()?.post("/api/v1/mcp/servers", spec)?;
    }
    let ids: Vec<String> = specs
        .iter()
        .filter_map(|s| s["id"].as_str().map(String::from))
        .collect();
    let all_active = || -> Result<bool> {
        let list = ctl()?.get("/api/v1/mcp/servers?status=all")?;
        Ok(list["servers"]
            .as_array()
            .is_some_and(|a| a.len() == ids.len() && a.iter().all(|s| s["status"] == "active")))
    };
    let t0 = Instant::now();
    while !all_active()? {
        if t0.elapsed() > Duration::from_secs(120) {
            let list = ctl()?.get("/api/v1/mcp/servers?status=all")?;
            return Err(daemon.failure(&format!(
                "the servers did not all become active within 120 s: {list}"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "{} servers active after {:.1} s: {}",
        ids.len(),
        t0.elapsed().as_secs_f64(),
        ids.join(" ")
    );

    // Which later workloads exist.
    let mut probe = common::tcp_as(addr, &daemon.token)?;
    let mut extra: Vec<(Workload, Instant)> = Vec::new();
    for w in workloads() {
        let r = probe.request("GET", w.probe, None)?;
        if r.status == 404 {
            notes.push(format!("workload {}: absent ({} is 404)", w.name, w.probe));
        } else {
            notes.push(format!("workload {}: running every {:?}", w.name, w.every));
            extra.push((w, Instant::now()));
        }
    }

    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let fixture = ids
        .iter()
        .find(|i| i.starts_with("fx"))
        .cloned()
        .unwrap_or_default();
    let threads = vec![
        {
            let (c, s, t) = (counters.clone(), stop.clone(), daemon.token.clone());
            std::thread::spawn(move || rest_load(addr, t, fixture, c, s))
        },
        {
            let (c, s, t) = (counters.clone(), stop.clone(), daemon.token.clone());
            std::thread::spawn(move || ws_load(addr, t, c, s))
        },
    ];

    println!(
        "\nsoak: {minutes} min, a row every {} s, {} servers, a SIGKILL every {} s, a reload every 60 s ({})",
        window.as_secs_f64(),
        ids.len(),
        kill_every.as_secs_f64(),
        utc_now()
    );
    println!("| min | RSS | fds | threads | zombies | timers | events held | REST req | REST p99 | errors | WS msgs | kills | reloads |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let start = Instant::now();
    let mut next_kill = start + kill_every;
    let mut next_reload = start + Duration::from_secs(60);
    let mut next_row = start + window;
    let (mut kills, mut reloads, mut health_ms) = (0u64, 0u64, 5000u64);
    let mut victim = 0usize;
    let mut samples = Vec::new();
    let mut failure = None;
    while start.elapsed() < total {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        if let Err(e) = daemon.check_alive() {
            failure = Some(e);
            break;
        }
        if now >= next_kill {
            next_kill += kill_every;
            let id = &ids[victim % ids.len()];
            victim += 1;
            let show = ctl()?.get(&format!("/api/v1/mcp/servers/{id}"))?;
            if let Some(p) = show["pid"].as_i64() {
                // SAFETY: kill(2) of a server the daemon reports running; at worst the pid
                // was just reaped and reused, which the daemon's own accounting would show.
                unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
                kills += 1;
            }
        }
        if now >= next_reload {
            next_reload += Duration::from_secs(60);
            health_ms = if health_ms == 5000 { 6000 } else { 5000 };
            std::fs::write(&config_path, config(health_ms))
                .map_err(|e| format!("rewrite config: {e}"))?;
            ctl()?.call("POST", "/api/v1/config/reload", None)?;
            reloads += 1;
        }
        for (w, at) in &mut extra {
            if now >= *at {
                *at += w.every;
                if let Err(e) = (w.run)(&mut probe) {
                    counters.error(&counters.rest_errors, format!("{}: {e}", w.name));
                    probe = common::tcp_as(addr, &daemon.token)?;
                }
            }
        }
        if now >= next_row {
            next_row += window;
            let status = ctl()?.get("/api/v1/status?detailed=true")?;
            let history = ctl()?.get("/api/v1/events?limit=10000")?["events"]
                .as_array()
                .map_or(0, Vec::len);
            let mut lat = std::mem::take(&mut *counters.latencies.lock().map_err(|_| "poisoned")?);
            lat.sort();
            let s = Sample {
                minute: start.elapsed().as_secs_f64() / 60.0,
                rss_kb: vm_rss_kb(pid)?,
                fds: open_fds(pid)?,
                threads: status_field(pid, "Threads:"),
                zombies: lasting_zombies(pid),
                timers: status["loop"]["timers_armed"].as_u64().unwrap_or(0),
                history,
                requests: lat.len(),
                p99: if lat.is_empty() {
                    Duration::ZERO
                } else {
                    percentile(&lat, 0.99)
                },
                rest_errors: counters.rest_errors.load(Ordering::Relaxed),
                ws_messages: counters.ws_messages.load(Ordering::Relaxed),
                kills,
                reloads,
            };
            println!(
                "| {:.1} | {} | {} | {} | {} | {} | {} | {} | {:.2} ms | {} | {} | {} | {} |",
                s.minute,
                fmt_kb(s.rss_kb),
                s.fds,
                s.threads,
                s.zombies,
                s.timers,
                s.history,
                s.requests,
                s.p99.as_secs_f64() * 1000.0,
                s.rest_errors,
                s.ws_messages,
                s.kills,
                s.reloads
            );
            samples.push(s);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    // Every killed server came back.
    let t1 = Instant::now();
    while !all_active()? {
        if t1.elapsed() > Duration::from_secs(60) {
            notes.push("not every server was active again within 60 s of the end".into());
            return Ok((samples, notes, false));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let ws_errors = counters.ws_errors.load(Ordering::Relaxed);
    let dropped = counters.ws_dropped.load(Ordering::Relaxed);
    notes.push(format!(
        "WebSocket: {ws_errors} errors, {dropped} events_dropped notices"
    ));
    if let Ok(Some(e)) = counters.last_error.lock().map(|l| l.clone()) {
        notes.push(format!("last error: {e}"));
    }
    let ok = verdict(&samples, &mut notes) && ws_errors == 0;
    daemon.stop()?;
    notes.extend(daemon.log_summary());
    Ok((samples, notes, ok))
}

/// Bounded growth: the second half of the rows against the first.
fn verdict(samples: &[Sample], notes: &mut Vec<String>) -> bool {
    if samples.len() < 2 {
        notes.push("fewer than 2 rows: nothing to compare (run longer)".into());
        return false;
    }
    let half = samples.len() / 2;
    let (first, second) = samples.split_at(half);
    let max = |s: &[Sample], f: fn(&Sample) -> u64| s.iter().map(f).max().unwrap_or(0);
    let mut ok = true;
    let mut check = |name: &str, f: fn(&Sample) -> u64, slack: fn(u64) -> u64| {
        let (a, b) = (max(first, f), max(second, f));
        let pass = b <= a + slack(a);
        notes.push(format!(
            "{name}: first half max {a}, second half max {b}: {}",
            if pass { "bounded" } else { "GREW" }
        ));
        ok &= pass;
    };
    check("RSS kB", |s| s.rss_kb, |a| a / 10 + MB / 1024);
    check("fds", |s| s.fds as u64, |_| 8);
    check("threads", |s| s.threads, |_| 2);
    check("timers", |s| s.timers, |a| a / 5 + 8);
    let zombies = samples.iter().skip(1).map(|s| s.zombies).max().unwrap_or(0);
    notes.push(format!("zombies after the first row: at most {zombies}"));
    ok &= zombies == 0;
    let history = samples.iter().map(|s| s.history).max().unwrap_or(0);
    notes.push(format!(
        "event history: at most {history} held (capacity {EVENT_HISTORY})"
    ));
    ok &= history <= EVENT_HISTORY;
    let errors = samples.last().map_or(0, |s| s.rest_errors);
    notes.push(format!("REST errors: {errors}"));
    ok &= errors == 0;
    ok
}

fn main() -> ExitCode {
    match run() {
        Ok((_, notes, ok)) => {
            println!();
            for n in &notes {
                println!("note: {n}");
            }
            println!(
                "\nsoak verdict: {}",
                if ok {
                    "ok (nothing grew without bound)"
                } else {
                    "FAILED"
                }
            );
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("soak: ERROR: {e}");
            ExitCode::FAILURE
        }
    }
}
