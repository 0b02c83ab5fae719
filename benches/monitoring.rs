//! Monitoring benchmark: what the built-in monitoring costs the loop.
//!
//! Run with `cargo bench --bench monitoring`. Environment:
//! - `VSM_BENCH_BIN`: binary under test (default: the one cargo built for this bench).
//! - `VSM_BENCH_IDLE_S`: the idle window in seconds (default 600, the ten minutes: it is
//!   wall time, not CPU, so run `cargo bench --bench monitoring -- idle` in the background; a
//!   shorter window such as 65 — two performance cycles, four health cycles — for a quick look).
//!
//! Sections:
//! - **cycle**: a daemon with 20 fixture MCP servers (and 20 `[[checks]]` when the binary's
//!   config schema has them: tcp checks of a listener this bench holds) and 250 ms cycles.
//!   The daemon times each cycle on the loop itself (sampling, deciding, publishing, actions)
//!   and reports it in `/api/v1/metrics/health` (`alerts.cycle_time`); the bench collects
//!   every new figure for 15 s. Target: p50 ≤ 1 ms of wall time; the loop thread's CPU time
//!   over the cycle is shown beside it (a loaded machine inflates the wall time only).
//! - **idle**: a daemon at the default intervals with nothing registered: its CPU over the
//!   window (target ≤ 0.1 % of a core) and its loop wake-ups that no due timer explains
//!   (target 0). Wake-ups of the `status` calls that read the counters are subtracted as the
//!   foundation bench does (a third call right after the second measures one call's cost).
//!
//! - **variety**: a daemon with 50 fixture MCP servers (16 tools each, two declared
//!   capabilities each) and 12 required capabilities; `POST /api/v1/vsm/variety/recalculate`
//!   with `force` 200 times. The daemon times each analysis on the loop (requirements,
//!   analysis, events, the ratio reading) and each catalogue hand-over (mapping every server's
//!   tools under the keyword rules) and reports both in `/api/v1/metrics/variety`
//!   (`loop_time`). Target: analysis p50 ≤ 1 ms. The request's round trip (with the answer's
//!   JSON) is shown beside it.
//!
//! Prints one table; a missed target is `MISSED`, never a panic.

mod common;

use common::{
    cpu_ticks, percentile, ticks_per_sec, unix, utc_now, wait_for, Binaries, DaemonGuard,
    DaemonSetup, Result, Row, Sections,
};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const SERVERS: usize = 20;
const CHECKS: usize = 20;
const CYCLE_WINDOW: Duration = Duration::from_secs(15);
const CYCLE_TARGET_US: u64 = 1000;

fn setup(config: &str) -> DaemonSetup<'_> {
    DaemonSetup {
        dir_name: "vsm-bench-mon",
        label: "monitoring",
        config: Some(config),
        args: &[],
        keep_log_as: None,
    }
}

fn fixture() -> String {
    format!(
        "{}/tests/fixtures/mcp_fixture.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Whether the binary's configuration has `[[checks]]` (the measuring half of the issue):
/// asked of a short-lived daemon's config schema.
fn has_checks(bin: &Path) -> Result<bool> {
    let mut d = DaemonGuard::start_ready(bin, &setup("# defaults\n"))?;
    let schema = unix(&d.socket)?.get("/api/v1/config/schema")?;
    d.stop()?;
    Ok(schema["properties"]["checks"].is_object())
}

fn cycle_config(checks: Option<u16>) -> String {
    let mut c = String::from(
        "[monitoring]\nperformance_check_interval_ms = 250\nhealth_check_interval_ms = 250\n\
         [mcp_servers]\nmax_concurrent_servers = 20\n",
    );
    let script = fixture();
    for i in 0..SERVERS {
        c.push_str(&format!(
            "\n[[servers]]\nid = \"s{i}\"\ncommand = \"python3\"\nargs = [\"{script}\"]\n"
        ));
    }
    if let Some(port) = checks {
        for i in 0..CHECKS {
            c.push_str(&format!(
                "\n[[checks]]\nname = \"c{i}\"\nkind = \"tcp\"\ntarget = \"127.0.0.1:{port}\"\nevery_ms = 250\ntimeout_ms = 1000\n"
            ));
        }
    }
    c
}

fn summary(p: &[u64]) -> String {
    format!(
        "p50 {} µs, p99 {} µs, max {} µs ({} cycles)",
        percentile(p, 50.0),
        percentile(p, 99.0),
        p.last().copied().unwrap_or(0),
        p.len()
    )
}

fn measure_cycle(bin: &Path, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    // A listener the tcp checks connect to, accepting and dropping on its own thread.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let checks = has_checks(bin)?.then_some(port);
    let config = cycle_config(checks);
    let mut daemon = DaemonGuard::start_ready(bin, &setup(&config))?;
    let socket = daemon.socket.clone();
    let api = || unix(&socket);
    wait_for(
        "20 servers active",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let list = api()?.get("/api/v1/mcp/servers")?;
            let active = list["servers"]
                .as_array()
                .map_or(0, |s| s.iter().filter(|s| s["status"] == "active").count());
            Ok((active == SERVERS).then_some(()))
        },
    )?;
    let mut perf = Vec::new();
    let mut health = Vec::new();
    let mut perf_cpu = Vec::new();
    let mut health_cpu = Vec::new();
    let (mut perf_runs, mut health_runs) = (u64::MAX, u64::MAX);
    let t0 = Instant::now();
    while t0.elapsed() < CYCLE_WINDOW {
        let m: Value = api()?.get("/api/v1/metrics/health")?;
        let t = &m["alerts"]["cycle_time"];
        for (runs, seen, out, cpu) in [
            (&t["performance"], &mut perf_runs, &mut perf, &mut perf_cpu),
            (&t["health"], &mut health_runs, &mut health, &mut health_cpu),
        ] {
            let n = runs["runs"].as_u64().unwrap_or(0);
            if *seen != u64::MAX && n > *seen {
                out.push(runs["last_us"].as_u64().unwrap_or(0));
                cpu.push(runs["last_cpu_us"].as_u64().unwrap_or(0));
            }
            *seen = n;
        }
        std::thread::sleep(Duration::from_millis(60));
    }
    daemon.check_alive()?;
    daemon.stop()?;
    if perf.is_empty() || health.is_empty() {
        return Err("no cycle figures were seen".into());
    }
    perf.sort_unstable();
    health.sort_unstable();
    perf_cpu.sort_unstable();
    health_cpu.sort_unstable();
    notes.push(format!(
        "[cycle] {SERVERS} servers, {} checks",
        if checks.is_some() { CHECKS } else { 0 }
    ));
    let label = if checks.is_some() {
        format!("{SERVERS} servers, {CHECKS} checks")
    } else {
        format!("{SERVERS} servers, no checks (binary without [[checks]])")
    };
    Ok(vec![
        Row::new(
            format!("performance cycle loop time ({label})"),
            summary(&perf),
            "p50 ≤ 1 ms",
            percentile(&perf, 50.0) <= CYCLE_TARGET_US,
        ),
        Row::new(
            format!("health cycle loop time ({label})"),
            summary(&health),
            "p50 ≤ 1 ms",
            percentile(&health, 50.0) <= CYCLE_TARGET_US,
        ),
        Row::info(
            "performance cycle CPU time (loop thread)",
            summary(&perf_cpu),
        ),
        Row::info("health cycle CPU time (loop thread)", summary(&health_cpu)),
    ])
}

const VARIETY_SERVERS: usize = 50;
const VARIETY_RUNS: usize = 200;

fn variety_config() -> String {
    let mut c = String::from(
        "[monitoring]\nvariety_check_interval_ms = 600000\n\
         [mcp_servers]\nmax_concurrent_servers = 50\n\
         [variety]\nrequired = [",
    );
    let required: Vec<String> = (0..12)
        .map(|i| format!("{{capability = \"cap{i}\", weight = {}}}", 1 + i % 3))
        .collect();
    c.push_str(&required.join(", "));
    c.push_str("]\n");
    let script = fixture();
    for i in 0..VARIETY_SERVERS {
        c.push_str(&format!(
            "\n[[servers]]\nid = \"v{i}\"\ncommand = \"python3\"\nargs = [\"{script}\"]\ncapabilities = [\"cap{}\", \"cap{}\"]\n",
            i % 10,
            (i + 3) % 10
        ));
    }
    c
}

fn measure_variety(bin: &Path, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let config = variety_config();
    let mut daemon = DaemonGuard::start_ready(bin, &setup(&config))?;
    let socket = daemon.socket.clone();
    let api = || unix(&socket);
    wait_for(
        "50 servers active",
        Duration::from_secs(120),
        Duration::from_millis(300),
        || {
            let list = api()?.get("/api/v1/mcp/servers")?;
            let active = list["servers"]
                .as_array()
                .map_or(0, |s| s.iter().filter(|s| s["status"] == "active").count());
            Ok((active == VARIETY_SERVERS).then_some(()))
        },
    )?;
    let mut client = api()?;
    let mut round_trips = Vec::with_capacity(VARIETY_RUNS);
    let body = serde_json::json!({"force": true});
    let mut ratio = Value::Null;
    for _ in 0..VARIETY_RUNS {
        let t = Instant::now();
        let a = client.post("/api/v1/vsm/variety/recalculate", &body)?;
        round_trips.push(t.elapsed().as_micros() as u64);
        ratio = a["variety_ratio"].clone();
    }
    let m = api()?.get("/api/v1/metrics/variety")?;
    daemon.check_alive()?;
    daemon.stop()?;
    round_trips.sort_unstable();
    let lt = &m["loop_time"];
    let us = |v: &Value, k: &str| v[k].as_u64().unwrap_or(u64::MAX);
    let fmt = |v: &Value| {
        format!(
            "p50 {} µs, p99 {} µs, max {} µs ({} runs)",
            us(v, "p50_us"),
            us(v, "p99_us"),
            us(v, "max_us"),
            v["count"]
        )
    };
    notes.push(format!(
        "[variety] {VARIETY_SERVERS} servers ({} capabilities mapped), 12 required, ratio {ratio}",
        lt["server_capabilities"]
    ));
    Ok(vec![
        Row::new(
            format!("variety analysis loop time ({VARIETY_SERVERS} servers)"),
            fmt(&lt["analysis"]),
            "p50 ≤ 1 ms",
            us(&lt["analysis"], "p50_us") <= CYCLE_TARGET_US,
        ),
        Row::info(
            format!("catalogue hand-over loop time ({VARIETY_SERVERS} servers' tools mapped)"),
            fmt(&lt["catalogue"]),
        ),
        Row::info(
            "variety analyze --force round trip (control socket, whole answer)",
            summary(&round_trips),
        ),
    ])
}

/// (wake-ups, timers fired, worker wakes) of the loop.
fn loop_counters(socket: &Path) -> Result<(u64, u64, u64)> {
    let s = unix(socket)?.get("/api/v1/status?detailed=true")?;
    let l = &s["loop"];
    let n = |k: &str| l[k].as_u64().ok_or(format!("no loop.{k}"));
    Ok((n("wakeups")?, n("timers_fired")?, n("wakes")?))
}

fn measure_idle(bin: &Path, window: Duration) -> Result<Vec<Row>> {
    // Default intervals: nothing but the daemon's own cycles is due.
    let mut daemon = DaemonGuard::start_ready(bin, &setup("# defaults\n"))?;
    let pid = daemon.pid();
    std::thread::sleep(Duration::from_secs(1));
    let (w0, f0, k0) = loop_counters(&daemon.socket)?;
    let c0 = cpu_ticks(pid).ok_or("no cpu ticks")?;
    let t0 = Instant::now();
    std::thread::sleep(window);
    let c1 = cpu_ticks(pid).ok_or("no cpu ticks")?;
    let elapsed = t0.elapsed().as_secs_f64();
    let (w1, f1, k1) = loop_counters(&daemon.socket)?;
    let (w2, f2, k2) = loop_counters(&daemon.socket)?;
    daemon.check_alive()?;
    daemon.stop()?;
    let cpu_percent = 100.0 * (c1.saturating_sub(c0)) as f64 / ticks_per_sec() / elapsed;
    let wakeups = w1.saturating_sub(w0).saturating_sub(w2.saturating_sub(w1));
    let fired = f1.saturating_sub(f0).saturating_sub(f2.saturating_sub(f1));
    // The worker's answers (the health round's state-dir probe) wake the loop through its
    // waker: part of a due cycle, not a wake-up between cycles.
    let woken = k1.saturating_sub(k0).saturating_sub(k2.saturating_sub(k1));
    let unexplained = wakeups.saturating_sub(fired).saturating_sub(woken);
    Ok(vec![
        Row::new(
            format!("daemon CPU over {:.0} s idle at default intervals", elapsed),
            format!(
                "{cpu_percent:.3} % of a core ({} ticks)",
                c1.saturating_sub(c0)
            ),
            "≤ 0.1 %",
            cpu_percent <= 0.1,
        ),
        Row::new(
            "loop wake-ups not caused by a due timer",
            format!(
                "{unexplained} ({wakeups} wake-ups, {fired} timers fired, {woken} worker wakes)"
            ),
            "0",
            unexplained == 0,
        ),
    ])
}

fn main() -> std::process::ExitCode {
    let bins = Binaries::from_env();
    let bin = &bins.measured;
    let window = Duration::from_secs(
        std::env::var("VSM_BENCH_IDLE_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600),
    );
    println!("# vsm-daemon monitoring benchmark");
    bins.print("run-time metrics use this one");
    println!("date:              {}", utc_now());
    println!("cpus:              {}", common::cpus());
    println!();
    let mut sections = Sections::new("monitoring", Sections::filters_from_args());
    sections.run("cycle", |notes| measure_cycle(bin, notes));
    sections.run("variety", |notes| measure_variety(bin, notes));
    sections.run("idle", |_| measure_idle(bin, window));
    sections.table.print();
    for n in &sections.notes {
        println!("{n}");
    }
    sections.exit_code()
}
