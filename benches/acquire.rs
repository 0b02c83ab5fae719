//! Acquisition benchmark: how long acquiring a real package takes, per step, and what a
//! pipeline step costs the loop.
//!
//! Run with `cargo bench --bench acquire`. Environment: `VSM_BENCH_BIN` (binary under test,
//! default the one cargo built), `VSM_BENCH_MEMORY_VERSION` (default: the version
//! `.ci/install-test-peers` pins). Needs node, npm and the machine's npm configuration (the
//! package comes from the registry npm is configured with).
//!
//! Sections:
//! - **pipeline**: a daemon acquires `@modelcontextprotocol/server-memory` through
//!   `POST /api/v1/capabilities/integrate`; the table shows each step's time as the daemon
//!   measured it, the install apart from the rest (the install is npm's and the network's).
//! - **loop**: the work a step does on the loop thread, timed in this process with the
//!   library's own code: spawning the install child (`npm --version`, fork and exec with the
//!   sandbox) and the assessment of a 9-tool server (the mapping, the criteria, the score).
//!   The file reading of the entry-point step and the directory work run on the worker, not
//!   the loop, so they are not here.
//!
//! Prints one table; nothing here has a target, so every row is information.

mod common;

use common::{
    percentile, unix, utc_now, Binaries, DaemonGuard, DaemonSetup, Result, Row, Sections,
};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use vsm_daemon::acquire::assess;

fn pinned_memory() -> String {
    if let Ok(v) = std::env::var("VSM_BENCH_MEMORY_VERSION") {
        return v;
    }
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/install-test-peers"),
    )
    .unwrap_or_default();
    script
        .lines()
        .find_map(|l| l.strip_prefix("MEMORY_VERSION=\""))
        .and_then(|r| r.split('"').next())
        .unwrap_or("2026.8.31")
        .to_string()
}

fn pipeline(bin: &Path, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let setup = DaemonSetup {
        dir_name: "vsm-bench-acquire",
        label: "acquire",
        config: Some("# defaults\n"),
        args: &[],
        keep_log_as: None,
    };
    let mut d = DaemonGuard::start_ready(bin, &setup)?;
    let package = format!(
        "npm:@modelcontextprotocol/server-memory@{}",
        pinned_memory()
    );
    let started = Instant::now();
    let accepted = unix(&d.socket)?.post(
        "/api/v1/capabilities/integrate",
        &json!({"package": package}),
    )?;
    let id = accepted["acquisition_id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let path = format!("/api/v1/capabilities/acquisitions/{id}");
    let deadline = Instant::now() + Duration::from_secs(600);
    let acq: Value = loop {
        let a = unix(&d.socket)?.get(&path)?;
        if !matches!(a["state"].as_str(), Some("queued" | "running")) {
            break a;
        }
        if Instant::now() > deadline {
            return Err(format!("{id} still {} after 600 s", a["state"]));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = started.elapsed();
    d.stop()?;
    if acq["state"] != "acquired" {
        return Err(format!(
            "{id} ended {}: {}",
            acq["state"], acq["result"]["reason"]
        ));
    }
    let mut rows = Vec::new();
    let mut rest = 0u64;
    for s in acq["steps"].as_array().into_iter().flatten() {
        let step = s["step"].as_str().unwrap_or("?");
        let ms = s["ms"].as_u64().unwrap_or(0);
        if step != "install" {
            rest += ms;
        }
        rows.push(Row::info(format!("step {step}"), format!("{ms} ms")));
    }
    rows.push(Row::info("all steps but install", format!("{rest} ms")));
    rows.push(Row::info(
        "integrate → acquired (client's wall time)",
        format!("{} ms", wall.as_millis()),
    ));
    notes.push(format!("pipeline: {package}, one run, {}", utc_now()));
    Ok(rows)
}

fn loop_side(notes: &mut Vec<String>) -> Result<Vec<Row>> {
    use vsm_daemon::monitor::child::ChildRun;
    let poll = mio::Poll::new().map_err(|e| e.to_string())?;
    let mut tokens = vsm_daemon::reactor::TokenAllocator::default();
    let range = tokens.take(3);
    let pipe = vsm_daemon::mcp::process::PipeTokens {
        stdout: range.token(0).ok_or("token")?,
        stderr: range.token(1).ok_or("token")?,
        stdin: range.token(2).ok_or("token")?,
    };
    let mut spawns = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let mut child = ChildRun::spawn(
            &["npm".to_string(), "--version".to_string()],
            &[],
            poll.registry(),
            pipe,
        )?;
        spawns.push(t.elapsed());
        let mut status = 0;
        // SAFETY: waitpid on our own child, reaped once.
        unsafe { libc::waitpid(child.pid(), &mut status, 0) };
        child.finish(status, poll.registry());
    }
    spawns.sort();

    let tools: Vec<(String, String)> = [
        "create_entities",
        "create_relations",
        "add_observations",
        "delete_entities",
        "delete_observations",
        "delete_relations",
        "read_graph",
        "search_nodes",
        "open_nodes",
    ]
    .iter()
    .map(|n| (n.to_string(), format!("{n} in the knowledge graph memory")))
    .collect();
    let facts = assess::Facts {
        exact_version: Some("2026.8.31".into()),
        install_scripts: Some(Vec::new()),
        claimed_name: Some("io.github.modelcontextprotocol/server-memory".into()),
        trial: assess::Trial {
            outcome: "active".into(),
            reason: "ready".into(),
            tools,
            protocol_errors: 0,
            landlock: "enforced (ABI 7)".into(),
        },
        ..assess::Facts::default()
    };
    let policy = assess::Policy {
        scan_enabled: true,
        min_score: 70,
        allowed: vec![
            "document".into(),
            "analysis".into(),
            "web".into(),
            "api".into(),
        ],
        blocked: vec!["system".into(), "network".into(), "file_system".into()],
        rules: vsm_daemon::variety::capability::builtin(),
    };
    let mut runs = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let a = assess::assess(&facts, &policy);
        runs.push(t.elapsed());
        std::hint::black_box(a);
    }
    runs.sort();
    notes.push("loop: 20 spawns, 2000 assessments, in this process".into());
    Ok(vec![
        Row::info(
            "install child spawn (fork+exec, sandbox) p50",
            format!("{} µs", percentile(&spawns, 50.0).as_micros()),
        ),
        Row::info(
            "install child spawn p95",
            format!("{} µs", percentile(&spawns, 95.0).as_micros()),
        ),
        Row::info(
            "assessment of 9 tools p50",
            format!("{} µs", percentile(&runs, 50.0).as_micros()),
        ),
        Row::info(
            "assessment of 9 tools p99",
            format!("{} µs", percentile(&runs, 99.0).as_micros()),
        ),
    ])
}

fn main() -> std::process::ExitCode {
    let bins = Binaries::from_env();
    let bin = &bins.measured;
    println!("# vsm-daemon acquisition benchmark");
    bins.print("the pipeline uses this one");
    println!("date:              {}", utc_now());
    println!("cpus:              {}", common::cpus());
    println!();
    let mut sections = Sections::new("acquire", Sections::filters_from_args());
    sections.run("pipeline", |notes| pipeline(bin, notes));
    sections.run("loop", loop_side);
    sections.table.print();
    for n in &sections.notes {
        println!("{n}");
    }
    sections.exit_code()
}
