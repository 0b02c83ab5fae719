//! Discovery benchmark: what a discovery costs, on the worker and on the loop.
//!
//! Run with `cargo bench --bench discovery`. Library-level (the same functions the room
//! calls), single-threaded, on generated data shaped like the official registry's answers
//! (each entry one npm package with a runtime hint, two arguments and an environment
//! variable, a 100-character description):
//! - **worker: parse + rank, 100-entry registry page**: `source::registry` over the page's
//!   bytes (the source's job), then `candidate::merge` of its findings and the answer's JSON
//!   tree (the ranking job).
//! - **worker: rank a run of 4 sources**: the ranking job alone for four sources' findings
//!   (registry 100, npm 100 of which 50 are the registry's packages, GitHub 10, catalog 10).
//! - **loop: discover answer**: what is left on the loop when that ranking comes back:
//!   serializing the answer (100 candidates) into the reply's bytes, and the
//!   `discovery_completed` event (20 opportunities) into its wire form.
//! - **worker: cache file, full budget**: `cache::save`'s document and serialization with the
//!   cache at its byte budget (the write itself excluded).
//!
//! Prints p50 and p99 of each (wall time) and the p50 of the thread's CPU time over
//! `VSM_BENCH_ITERS` iterations (default 200; the cache file at most 50).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use vsm_daemon::discovery::cache::Cache;
use vsm_daemon::discovery::candidate::{merge, Found, Query, Runtimes, Source};
use vsm_daemon::discovery::source;
use vsm_daemon::variety::capability;

fn entry(i: usize) -> serde_json::Value {
    serde_json::json!({
        "server": {
            "name": format!("io.github.example{i}/server-{i}"),
            "title": format!("Example server {i}"),
            "description": format!("An example MCP server number {i} for knowledge graph memory and timezone conversions."),
            "version": format!("1.{i}.0"),
            "repository": {"url": format!("https://github.com/example{i}/server"), "source": "github"},
            "packages": [{
                "registryType": "npm", "identifier": format!("@example{i}/server-{i}"),
                "version": format!("1.{i}.0"), "runtimeHint": "npx", "transport": {"type": "stdio"},
                "packageArguments": [{"type": "positional", "valueHint": "/data", "isRequired": true},
                                     {"type": "named", "name": "--port", "default": "8080"}],
                "environmentVariables": [{"name": "API_KEY", "description": "the service's key", "isRequired": true, "isSecret": true}]
            }]
        },
        "_meta": {"io.modelcontextprotocol.registry/official": {
            "status": "active", "publishedAt": "2026-10-01T00:00:00Z",
            "updatedAt": "2026-11-01T00:00:00Z", "isLatest": true}}
    })
}

fn page(n: usize) -> Vec<u8> {
    let servers: Vec<_> = (0..n).map(entry).collect();
    serde_json::to_vec(&serde_json::json!({"servers": servers, "metadata": {"count": n}}))
        .expect("page")
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// This thread's CPU time in µs (a loaded machine stretches the wall time; this much less).
fn cpu_us() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u128 * 1_000_000 + ts.tv_nsec as u128 / 1000
}

/// p50 and p99 of wall time, and p50 of this thread's CPU time, in µs.
fn time(iters: usize, mut f: impl FnMut()) -> (u128, u128, u128) {
    for _ in 0..5 {
        f();
    }
    let mut us = Vec::with_capacity(iters);
    let mut cpu = Vec::with_capacity(iters);
    for _ in 0..iters {
        let (t, c) = (Instant::now(), cpu_us());
        f();
        cpu.push(cpu_us() - c);
        us.push(t.elapsed().as_micros());
    }
    us.sort_unstable();
    cpu.sort_unstable();
    (
        percentile(&us, 0.5),
        percentile(&us, 0.99),
        percentile(&cpu, 0.5),
    )
}

fn main() {
    let iters: usize = std::env::var("VSM_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rules = capability::builtin();
    let all = Runtimes {
        node: true,
        python: true,
    };
    let query = Query::new("memory", &rules);
    let today = 20_789;
    let bytes = page(100);

    let worker = time(iters, || {
        let parsed = source::registry(&bytes).expect("parse");
        let mut skipped = BTreeMap::new();
        let out = merge(parsed.found, &query, &rules, all, today, &mut skipped);
        let answer = serde_json::json!({"candidates": out});
        assert_eq!(answer["candidates"].as_array().map(Vec::len), Some(100));
    });

    let registry = source::registry(&bytes).expect("parse").found;
    let retag = |f: &Found, s: Source| {
        let mut f = f.clone();
        f.source = s;
        f
    };
    let mut npm: Vec<Found> = registry[..50]
        .iter()
        .map(|f| retag(f, Source::Npm))
        .collect();
    let other = source::registry(&page(150)).expect("parse").found;
    npm.extend(other[100..].iter().map(|f| retag(f, Source::Npm)));
    let github: Vec<Found> = registry[..10]
        .iter()
        .map(|f| retag(f, Source::Github))
        .collect();
    let catalog: Vec<Found> = registry[10..20]
        .iter()
        .map(|f| retag(f, Source::Catalog))
        .collect();
    let findings: Vec<Found> = registry
        .iter()
        .chain(&npm)
        .chain(&github)
        .chain(&catalog)
        .cloned()
        .collect();
    let mut answer = serde_json::Value::Null;
    let mut opportunities = serde_json::Value::Null;
    let rank = time(iters, || {
        let mut skipped = BTreeMap::new();
        let out = merge(findings.clone(), &query, &rules, all, today, &mut skipped);
        opportunities = serde_json::json!(out
            .iter()
            .take(20)
            .map(|c| serde_json::json!({
                "id": c.id, "package": c.package.reference, "score": c.score,
                "capabilities": c.capabilities.iter().map(|b| b.capability.clone()).collect::<Vec<_>>(),
                "sources": c.sources,
            }))
            .collect::<Vec<_>>());
        answer = serde_json::json!({"candidates": out, "count": 100});
    });
    let mut answer_bytes = 0;
    let lp = time(iters, || {
        answer_bytes = serde_json::to_vec(&answer).expect("json").len();
        let event = serde_json::to_string(&serde_json::json!({"type": "discovery_completed",
            "data": {"opportunities": opportunities}}))
        .expect("event");
        assert!(!event.is_empty());
    });

    let mut cache = Cache::default();
    let mut q = 0u64;
    while cache.len() < vsm_daemon::discovery::cache::MAX_ENTRIES {
        let before = cache.len();
        cache.put(
            Source::Registry,
            &format!("q{q}"),
            q,
            Arc::new(source::registry(&bytes).expect("parse")),
        );
        q += 1;
        if cache.len() == before {
            break;
        }
    }
    let mut doc_bytes = 0;
    let doc = time(iters.min(50), || {
        let d = cache.document();
        doc_bytes = serde_json::to_vec(&d).expect("json").len();
    });

    println!(
        "{:<52} {:>8} {:>8} {:>8}  note",
        "discovery", "p50 µs", "p99 µs", "CPU p50"
    );
    println!(
        "{:<52} {:>8} {:>8} {:>8}  {} bytes in",
        "worker: parse + rank, 100-entry registry page",
        worker.0,
        worker.1,
        worker.2,
        bytes.len()
    );
    println!(
        "{:<52} {:>8} {:>8} {:>8}  {} findings -> 100 candidates",
        "worker: rank a run of 4 sources",
        rank.0,
        rank.1,
        rank.2,
        findings.len()
    );
    println!(
        "{:<52} {:>8} {:>8} {:>8}  {answer_bytes} bytes of answer + the event",
        "loop: discover answer (reply and event encoding)", lp.0, lp.1, lp.2
    );
    println!(
        "{:<52} {:>8} {:>8} {:>8}  {} answers cached, {doc_bytes} bytes written",
        "worker: cache file, full budget",
        doc.0,
        doc.1,
        doc.2,
        cache.len()
    );
}
