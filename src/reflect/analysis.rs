//! The analysers: pure functions from the reflection record (and the learned baselines) to
//! insights, each with the evidence it rests on and a significance computed from that
//! evidence. No I/O, no clock: the caller passes `now_ms`, so every analyser is unit-tested on
//! hand-made records with hand-computed expectations.
//!
//! Significance formulas (all in 0–1):
//! - flapping server (`pattern_recognition`): `n` exits from a serving state within
//!   [`FLAP_WINDOW_MS`], reported from [`FLAP_MIN`] on: `1 − 0.5^(n − 2)` (3 → 0.5, 4 → 0.75,
//!   5 → 0.875).
//! - latency trend (`trend`): least-squares slope of a tool's latencies over call order, from
//!   [`TREND_MIN`] ok calls; `confidence = r² · min(1, n / 20)`; `change` = the fitted rise over
//!   the samples ÷ their mean; reported when `confidence ≥ 0.5` and `|change| ≥ 0.2`;
//!   `significance = confidence · min(1, |change|)`.
//! - error burst (`anomaly`): at least [`BURST_MIN`] failed calls of one server within
//!   [`BURST_WINDOW_MS`]; `share` = failed ÷ calls in that window; `significance =
//!   max(0, share − baseline)` where `baseline` is the server's learned error rate (EWMA).
//! - alert storm (`anomaly`): at least [`STORM_MIN`] alert raises within [`STORM_WINDOW_MS`]:
//!   `min(1, n / 10)`.
//! - repeated auth failures (`anomaly`): raises of a peer's `security:auth_failures:` alert,
//!   at least 2, or failures counted in them at least 10: `min(1, raises / 4 + failures / 40)`.
//! - recurring gap (`pattern_recognition`): a capability's gap detected `n ≥ 2` times:
//!   `1 − 1 / n`.
//! - memory growth (`trend`): the daemon's RSS samples, least squares over time, from 6
//!   samples; reported when the fitted growth is at least 10 % of the mean and `confidence ≥
//!   0.6`: `significance = confidence · min(1, growth / mean)`.

use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Text the record keeps: shared, so that a snapshot of the record for the worker copies
/// pointers, not strings.
pub type Text = Arc<str>;

/// Exits counted for flapping, in this window.
pub const FLAP_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Exits that make a server flap.
pub const FLAP_MIN: usize = 3;
/// Calls a latency trend needs.
pub const TREND_MIN: usize = 8;
/// Latencies a trend looks at (the newest).
pub const TREND_MAX: usize = 200;
/// Failed calls that make a burst.
pub const BURST_MIN: usize = 5;
/// A burst's window.
pub const BURST_WINDOW_MS: u64 = 60 * 1000;
/// Alert raises that make a storm.
pub const STORM_MIN: usize = 5;
/// A storm's window.
pub const STORM_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Seqs an insight's evidence lists at most (the newest).
pub const EVIDENCE_MAX: usize = 20;

/// What the record keeps of one event: what the analysers need, nothing more (cloning it is
/// cheap: reference counts only).
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    /// A tool call ended.
    Call {
        /// Server.
        server: Text,
        /// Tool.
        tool: Text,
        /// Outcome (`ok`, ...).
        outcome: &'static str,
        /// Milliseconds.
        latency_ms: f64,
    },
    /// A server changed status.
    Status {
        /// Server.
        server: Text,
        /// Before.
        old: &'static str,
        /// After.
        new: &'static str,
        /// Its declared capabilities.
        capabilities: Arc<[Text]>,
    },
    /// An alert was raised or resolved.
    Alert {
        /// Alert id (`a-N`).
        id: Text,
        /// Its rule.
        rule: Text,
        /// `firing` or `resolved`.
        state: &'static str,
        /// The value that raised or resolved it.
        value: f64,
    },
    /// A variety gap was detected.
    Gap {
        /// The capability (or the description when the event names none).
        capability: Text,
    },
    /// An acquisition or policy decision.
    Decision {
        /// The event type.
        kind: &'static str,
        /// Its subject (capability, package or server).
        subject: Text,
        /// Its id, when the event gives one.
        id: Option<Text>,
    },
}

/// One entry of the record.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The event's sequence number.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub what: What,
}

/// A request the daemon would accept, offered as a recommendation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// HTTP method.
    pub method: &'static str,
    /// Path.
    pub path: String,
    /// JSON body, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Why.
    pub why: &'static str,
}

impl Recommendation {
    /// `METHOD PATH`, the seed's string form.
    pub fn short(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// What an analyser found (the room gives it an id and a time).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Which analyser.
    pub analyser: &'static str,
    /// `pattern_recognition`, `trend` or `anomaly`.
    pub kind: &'static str,
    /// What it is about (a server, a tool, a peer, a capability, `daemon`).
    pub subject: String,
    /// 0–1, from the evidence (see the module doc).
    pub significance: f64,
    /// For people.
    pub description: String,
    /// The events it rests on (seqs, newest last).
    pub seqs: Vec<u64>,
    /// The values it computed.
    pub values: Value,
    /// Requests that act on it.
    pub recommendations: Vec<Recommendation>,
}

/// Least-squares fit of `y` over `x`: (slope, intercept, r²). `None` with fewer than two
/// points or no spread in `x`. r² is 1 for a perfect fit and for flat `y` on a flat line.
pub fn least_squares(points: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in points {
        sxx += (x - mx) * (x - mx);
        sxy += (x - mx) * (y - my);
        syy += (y - my) * (y - my);
    }
    if sxx <= f64::EPSILON {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy <= f64::EPSILON {
        1.0
    } else {
        (sxy * sxy) / (sxx * syy)
    };
    Some((slope, my - slope * mx, r2))
}

/// A trend's confidence: the fit, discounted for few samples.
pub fn confidence(r2: f64, n: usize) -> f64 {
    (r2 * (n as f64 / 20.0).min(1.0)).clamp(0.0, 1.0)
}

/// Flapping's significance for `n` exits (see the module doc).
pub fn flap_significance(n: usize) -> f64 {
    if n < FLAP_MIN {
        return 0.0;
    }
    1.0 - 0.5f64.powi(n as i32 - 2)
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn newest(seqs: Vec<u64>) -> Vec<u64> {
    let skip = seqs.len().saturating_sub(EVIDENCE_MAX);
    seqs.into_iter().skip(skip).collect()
}

fn server_path(server: &str, action: &str) -> String {
    format!("/api/v1/mcp/servers/{server}/{action}")
}

/// Servers that left a serving state at least [`FLAP_MIN`] times in the window.
pub fn flapping(record: &[Entry], now_ms: u64) -> Vec<Finding> {
    let since = now_ms.saturating_sub(FLAP_WINDOW_MS);
    let mut exits: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for e in record.iter().filter(|e| e.at_ms >= since) {
        if let What::Status {
            server, old, new, ..
        } = &e.what
        {
            let serving = |s: &str| matches!(s, "active" | "degraded");
            if serving(old) && !serving(new) && *new != "stopping" {
                exits.entry(server).or_default().push(e.seq);
            }
        }
    }
    exits
        .into_iter()
        .filter(|(_, s)| s.len() >= FLAP_MIN)
        .map(|(server, seqs)| {
            let n = seqs.len();
            Finding {
                analyser: "flapping",
                kind: "pattern_recognition",
                subject: server.to_string(),
                significance: round(flap_significance(n)),
                description: format!(
                    "MCP server {server} stopped serving {n} times within {} min",
                    FLAP_WINDOW_MS / 60_000
                ),
                seqs: newest(seqs),
                values: json!({"exits": n, "window_ms": FLAP_WINDOW_MS}),
                recommendations: vec![
                    Recommendation {
                        method: "POST",
                        path: "/api/v1/consciousness/decision".into(),
                        body: Some(json!({"situation": "degraded_server", "subject": server})),
                        why: "rank restart, stop and wait for it",
                    },
                    Recommendation {
                        method: "POST",
                        path: server_path(server, "stop"),
                        body: None,
                        why: "stop the restarts until its cause is found (its stderr is in mcp show)",
                    },
                ],
            }
        })
        .collect()
}

/// Latency trends per server and tool, from their ok calls.
pub fn latency_trends(record: &[Entry]) -> Vec<Finding> {
    let mut series: BTreeMap<(&str, &str), Vec<(u64, f64)>> = BTreeMap::new();
    for e in record {
        if let What::Call {
            server,
            tool,
            outcome: "ok",
            latency_ms,
        } = &e.what
        {
            series
                .entry((server, tool))
                .or_default()
                .push((e.seq, *latency_ms));
        }
    }
    let mut out = Vec::new();
    for ((server, tool), mut calls) in series {
        if calls.len() < TREND_MIN {
            continue;
        }
        let skip = calls.len().saturating_sub(TREND_MAX);
        calls.drain(..skip);
        let points: Vec<(f64, f64)> = calls
            .iter()
            .enumerate()
            .map(|(i, (_, y))| (i as f64, *y))
            .collect();
        let Some((slope, _, r2)) = least_squares(&points) else {
            continue;
        };
        let n = points.len();
        let mean = points.iter().map(|p| p.1).sum::<f64>() / n as f64;
        let change = if mean > 0.0 {
            slope * (n - 1) as f64 / mean
        } else {
            0.0
        };
        let conf = confidence(r2, n);
        if conf < 0.5 || change.abs() < 0.2 {
            continue;
        }
        let direction = if slope > 0.0 {
            "increasing"
        } else {
            "decreasing"
        };
        let recommendations = if slope > 0.0 {
            vec![Recommendation {
                method: "POST",
                path: server_path(server, "restart"),
                body: None,
                why: "a fresh process, if the slowdown is the server's own state",
            }]
        } else {
            Vec::new()
        };
        out.push(Finding {
            analyser: "latency_trend",
            kind: "trend",
            subject: format!("{server}/{tool}"),
            significance: round(conf * change.abs().min(1.0)),
            description: format!(
                "tool {tool} on {server}: latency {direction}, {slope:+.2} ms per call over {n} calls (mean {mean:.1} ms)"
            ),
            seqs: newest(calls.iter().map(|c| c.0).collect()),
            values: json!({
                "server": server, "tool": tool, "direction": direction,
                "slope_ms_per_call": round(slope), "r2": round(r2), "confidence": round(conf),
                "samples": n, "mean_ms": round(mean), "relative_change": round(change),
                "last_latencies_ms": calls.iter().rev().take(10).rev().map(|c| round(c.1)).collect::<Vec<_>>(),
            }),
            recommendations,
        });
    }
    out
}

/// Bursts of failed calls per server; `baseline` is each server's learned error rate.
pub fn error_bursts(
    record: &[Entry],
    now_ms: u64,
    baseline: &BTreeMap<String, f64>,
) -> Vec<Finding> {
    let since = now_ms.saturating_sub(BURST_WINDOW_MS);
    let mut calls: BTreeMap<&str, (usize, Vec<u64>)> = BTreeMap::new();
    for e in record.iter().filter(|e| e.at_ms >= since) {
        if let What::Call {
            server, outcome, ..
        } = &e.what
        {
            let c = calls.entry(server).or_default();
            c.0 += 1;
            if *outcome != "ok" {
                c.1.push(e.seq);
            }
        }
    }
    calls
        .into_iter()
        .filter(|(_, (_, failed))| failed.len() >= BURST_MIN)
        .filter_map(|(server, (total, failed))| {
            let share = failed.len() as f64 / total as f64;
            let base = baseline.get(server).copied().unwrap_or(0.0);
            let significance = (share - base).max(0.0);
            (significance > 0.0).then(|| Finding {
                analyser: "error_burst",
                kind: "anomaly",
                subject: server.to_string(),
                significance: round(significance),
                description: format!(
                    "{} of {total} tool calls to {server} failed within {} s (learned error rate {:.0} %)",
                    failed.len(),
                    BURST_WINDOW_MS / 1000,
                    base * 100.0
                ),
                values: json!({"failed": failed.len(), "calls": total, "share": round(share), "baseline": round(base)}),
                seqs: newest(failed),
                recommendations: vec![Recommendation {
                    method: "GET",
                    path: format!("/api/v1/mcp/servers/{server}"),
                    body: None,
                    why: "its last errors and stderr",
                }],
            })
        })
        .collect()
}

/// Many alert raises in a short time.
pub fn alert_storm(record: &[Entry], now_ms: u64) -> Vec<Finding> {
    let since = now_ms.saturating_sub(STORM_WINDOW_MS);
    let raises: Vec<(u64, &str)> = record
        .iter()
        .filter(|e| e.at_ms >= since)
        .filter_map(|e| match &e.what {
            What::Alert { rule, state, .. } if *state == "firing" => Some((e.seq, &**rule)),
            _ => None,
        })
        .collect();
    if raises.len() < STORM_MIN {
        return Vec::new();
    }
    let n = raises.len();
    let mut rules: Vec<&str> = raises.iter().map(|r| r.1).collect();
    rules.sort_unstable();
    rules.dedup();
    vec![Finding {
        analyser: "alert_storm",
        kind: "anomaly",
        subject: "alerts".into(),
        significance: round((n as f64 / 10.0).min(1.0)),
        description: format!(
            "{n} alerts raised within {} min over {} rule(s)",
            STORM_WINDOW_MS / 60_000,
            rules.len()
        ),
        seqs: newest(raises.iter().map(|r| r.0).collect()),
        values: json!({"raises": n, "rules": rules.iter().take(EVIDENCE_MAX).collect::<Vec<_>>()}),
        recommendations: vec![Recommendation {
            method: "GET",
            path: "/api/v1/alerts?state=firing".into(),
            body: None,
            why: "the firing alerts",
        }],
    }]
}

/// A peer whose bad tokens keep raising the auth-failure alert.
pub fn auth_failures(record: &[Entry]) -> Vec<Finding> {
    let mut peers: BTreeMap<&str, (Vec<u64>, f64)> = BTreeMap::new();
    for e in record {
        if let What::Alert {
            rule, state, value, ..
        } = &e.what
        {
            if let Some(peer) = rule.strip_prefix("security:auth_failures:") {
                if *state == "firing" {
                    let p = peers.entry(peer).or_default();
                    p.0.push(e.seq);
                    p.1 += value.max(0.0);
                }
            }
        }
    }
    peers
        .into_iter()
        .filter(|(_, (raises, failures))| raises.len() >= 2 || *failures >= 10.0)
        .map(|(peer, (raises, failures))| {
            let s = (raises.len() as f64 / 4.0 + failures / 40.0).min(1.0);
            Finding {
                analyser: "auth_failures",
                kind: "anomaly",
                subject: peer.to_string(),
                significance: round(s),
                description: format!(
                    "peer {peer}: {} auth-failure alert(s), {failures:.0} bad token(s) counted",
                    raises.len()
                ),
                values: json!({"raises": raises.len(), "failures": failures}),
                seqs: newest(raises),
                recommendations: vec![Recommendation {
                    method: "GET",
                    path: "/api/v1/alerts?state=firing".into(),
                    body: None,
                    why: "the security alerts with the peer's address",
                }],
            }
        })
        .collect()
}

/// Capabilities whose gap keeps opening.
pub fn recurring_gaps(record: &[Entry]) -> Vec<Finding> {
    let mut gaps: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for e in record {
        if let What::Gap { capability } = &e.what {
            gaps.entry(capability).or_default().push(e.seq);
        }
    }
    gaps.into_iter()
        .filter(|(_, s)| s.len() >= 2)
        .map(|(cap, seqs)| {
            let n = seqs.len();
            Finding {
                analyser: "recurring_gap",
                kind: "pattern_recognition",
                subject: cap.to_string(),
                significance: round(1.0 - 1.0 / n as f64),
                description: format!("the variety gap for {cap} opened {n} times"),
                values: json!({"occurrences": n}),
                seqs: newest(seqs),
                recommendations: vec![Recommendation {
                    method: "POST",
                    path: "/api/v1/capabilities/acquire".into(),
                    body: Some(json!({"capability_type": cap, "acquisition_method": "mcp_server", "priority": "high"})),
                    why: "a provider of its own, so the gap stays closed",
                }],
            }
        })
        .collect()
}

/// The daemon's memory growing over its RSS samples `(at_ms, bytes)`.
pub fn memory_growth(samples: &[(u64, u64)]) -> Vec<Finding> {
    if samples.len() < 6 {
        return Vec::new();
    }
    let t0 = samples[0].0;
    let points: Vec<(f64, f64)> = samples
        .iter()
        .map(|(t, b)| ((t - t0) as f64 / 1000.0, *b as f64))
        .collect();
    let Some((slope, _, r2)) = least_squares(&points) else {
        return Vec::new();
    };
    let n = points.len();
    let mean = points.iter().map(|p| p.1).sum::<f64>() / n as f64;
    let span = points[n - 1].0 - points[0].0;
    let growth = slope * span;
    let conf = confidence(r2, n);
    if mean <= 0.0 || growth / mean < 0.1 || conf < 0.6 {
        return Vec::new();
    }
    vec![Finding {
        analyser: "memory_growth",
        kind: "trend",
        subject: "daemon".into(),
        significance: round(conf * (growth / mean).min(1.0)),
        description: format!(
            "the daemon's RSS grew {:.0} KiB over {:.0} s ({:+.1} bytes/s)",
            growth / 1024.0,
            span,
            slope
        ),
        seqs: Vec::new(),
        values: json!({"slope_bytes_per_s": round(slope), "r2": round(r2), "confidence": round(conf),
                       "samples": n, "mean_bytes": mean.round()}),
        recommendations: vec![Recommendation {
            method: "GET",
            path: "/api/v1/status?detailed=true".into(),
            body: None,
            why: "the loop's counters (connections, timers, events held)",
        }],
    }]
}

/// Every analyser over the record.
pub fn analyse(
    record: &[Entry],
    now_ms: u64,
    error_baseline: &BTreeMap<String, f64>,
    rss: &[(u64, u64)],
) -> Vec<Finding> {
    let mut out = flapping(record, now_ms);
    out.extend(latency_trends(record));
    out.extend(error_bursts(record, now_ms, error_baseline));
    out.extend(alert_storm(record, now_ms));
    out.extend(auth_failures(record));
    out.extend(recurring_gaps(record));
    out.extend(memory_growth(rss));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(seq: u64, at_ms: u64, outcome: &'static str, latency_ms: f64) -> Entry {
        Entry {
            seq,
            at_ms,
            what: What::Call {
                server: "s".into(),
                tool: "t".into(),
                outcome,
                latency_ms,
            },
        }
    }

    fn status(seq: u64, at_ms: u64, old: &'static str, new: &'static str) -> Entry {
        Entry {
            seq,
            at_ms,
            what: What::Status {
                server: "s".into(),
                old,
                new,
                capabilities: Arc::from(Vec::new()),
            },
        }
    }

    #[test]
    fn least_squares_by_hand() {
        // y = 2x + 1 exactly.
        let (m, b, r2) = least_squares(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]).expect("fit");
        assert!((m - 2.0).abs() < 1e-12 && (b - 1.0).abs() < 1e-12 && (r2 - 1.0).abs() < 1e-12);
        // (0,0) (1,2) (2,1): mx = 1, my = 1, sxx = 2, sxy = 1, syy = 2 -> slope 0.5, r2 = 1/4.
        let (m, b, r2) = least_squares(&[(0.0, 0.0), (1.0, 2.0), (2.0, 1.0)]).expect("fit");
        assert!((m - 0.5).abs() < 1e-12, "{m}");
        assert!((b - 0.5).abs() < 1e-12, "{b}");
        assert!((r2 - 0.25).abs() < 1e-12, "{r2}");
        assert_eq!(least_squares(&[(1.0, 1.0), (1.0, 2.0)]), None);
        assert_eq!(least_squares(&[(1.0, 1.0)]), None);
    }

    #[test]
    fn confidence_and_significance_by_hand() {
        assert!((confidence(0.9, 10) - 0.45).abs() < 1e-12);
        assert!((confidence(0.9, 40) - 0.9).abs() < 1e-12);
        assert_eq!(flap_significance(2), 0.0);
        assert_eq!(flap_significance(3), 0.5);
        assert_eq!(flap_significance(4), 0.75);
        assert_eq!(flap_significance(5), 0.875);
    }

    #[test]
    fn a_server_that_keeps_exiting_flaps_with_its_events_as_evidence() {
        let now = 1_000_000;
        let mut r = Vec::new();
        let mut seq = 0;
        for _ in 0..4 {
            for (old, new) in [
                ("starting", "active"),
                ("active", "backoff"),
                ("backoff", "starting"),
            ] {
                seq += 1;
                r.push(status(seq, now - 1000, old, new));
            }
        }
        // An exit outside the window does not count; a stop by the operator does not either.
        r.push(status(100, now - FLAP_WINDOW_MS - 1, "active", "backoff"));
        r.push(status(101, now, "active", "stopping"));
        let f = flapping(&r, now);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].seqs, vec![2, 5, 8, 11]);
        assert_eq!(f[0].significance, 0.75);
        assert_eq!(
            f[0].recommendations[1].short(),
            "POST /api/v1/mcp/servers/s/stop"
        );
        assert!(
            flapping(&r[..6], now).is_empty(),
            "two exits are not flapping"
        );
    }

    #[test]
    fn a_slowing_tool_is_an_increasing_trend_and_a_speeding_one_decreasing() {
        // Latencies 10, 20, ..., 100 ms: slope 10 ms per call, r2 = 1, n = 10 -> confidence
        // 0.5; mean 55, change = 10 * 9 / 55 = 1.636 -> significance 0.5 * 1 = 0.5.
        let up: Vec<Entry> = (0..10)
            .map(|i| call(i, i, "ok", 10.0 * (i + 1) as f64))
            .collect();
        let f = latency_trends(&up);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].values["direction"], "increasing");
        assert_eq!(f[0].values["slope_ms_per_call"], 10.0);
        assert_eq!(f[0].values["confidence"], 0.5);
        assert_eq!(f[0].significance, 0.5);
        let down: Vec<Entry> = (0..20)
            .map(|i| call(i, i, "ok", 200.0 - 5.0 * i as f64))
            .collect();
        let f = latency_trends(&down);
        assert_eq!(f[0].values["direction"], "decreasing");
        assert_eq!(f[0].values["slope_ms_per_call"], -5.0);
        // Flat latencies, failed calls and too few calls make no trend.
        let flat: Vec<Entry> = (0..20).map(|i| call(i, i, "ok", 7.0)).collect();
        assert!(latency_trends(&flat).is_empty());
        let failed: Vec<Entry> = (0..20).map(|i| call(i, i, "timeout", i as f64)).collect();
        assert!(latency_trends(&failed).is_empty());
        assert!(latency_trends(&up[..7]).is_empty());
    }

    #[test]
    fn an_error_burst_is_measured_against_the_learned_rate() {
        let now = 100_000;
        // 10 calls in the window, 6 failed: share 0.6; baseline 0.1 -> 0.5.
        let r: Vec<Entry> = (0..10)
            .map(|i| call(i, now - 1000, if i < 6 { "tool_error" } else { "ok" }, 1.0))
            .collect();
        let base = BTreeMap::from([("s".to_string(), 0.1)]);
        let f = error_bursts(&r, now, &base);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].significance, 0.5);
        assert_eq!(f[0].seqs, vec![0, 1, 2, 3, 4, 5]);
        // Four failures are no burst; a server that always fails this much is no anomaly.
        assert!(error_bursts(&r[2..], now, &BTreeMap::new()).is_empty());
        let always = BTreeMap::from([("s".to_string(), 0.6)]);
        assert!(error_bursts(&r, now, &always).is_empty());
    }

    #[test]
    fn storms_auth_failures_gaps_and_memory() {
        let alert = |seq, rule: &str, value| Entry {
            seq,
            at_ms: 10,
            what: What::Alert {
                id: format!("a-{seq}").into(),
                rule: rule.into(),
                state: "firing",
                value,
            },
        };
        let r: Vec<Entry> = (0..6).map(|i| alert(i, "performance:x", 1.0)).collect();
        let f = alert_storm(&r, 20);
        assert_eq!(f[0].significance, 0.6);
        assert!(alert_storm(&r[..4], 20).is_empty());
        let r = vec![
            alert(1, "security:auth_failures:127.0.0.1", 3.0),
            alert(2, "security:auth_failures:127.0.0.1", 5.0),
        ];
        // 2 / 4 + 8 / 40 = 0.7.
        let f = auth_failures(&r);
        assert_eq!(
            (f[0].subject.as_str(), f[0].significance),
            ("127.0.0.1", 0.7)
        );
        let gap = |seq| Entry {
            seq,
            at_ms: 1,
            what: What::Gap {
                capability: "time".into(),
            },
        };
        let f = recurring_gaps(&[gap(1), gap(2), gap(3), gap(4)]);
        assert_eq!(f[0].significance, 0.75);
        assert!(recurring_gaps(&[gap(1)]).is_empty());
        // 1 MB growing by 100 KB a second for 10 samples: r2 = 1, confidence 0.5 < 0.6.
        let grow: Vec<(u64, u64)> = (0..10)
            .map(|i| (i * 1000, 1_000_000 + i * 100_000))
            .collect();
        assert!(memory_growth(&grow).is_empty());
        let grow: Vec<(u64, u64)> = (0..20)
            .map(|i| (i * 1000, 1_000_000 + i * 100_000))
            .collect();
        let f = memory_growth(&grow);
        assert_eq!(f[0].values["slope_bytes_per_s"], 100_000.0);
        // growth 1.9 MB over a mean of 1.95 MB: 0.974.
        assert_eq!(f[0].significance, 0.974);
        let flat: Vec<(u64, u64)> = (0..20).map(|i| (i * 1000, 1_000_000)).collect();
        assert!(memory_growth(&flat).is_empty());
    }
}
