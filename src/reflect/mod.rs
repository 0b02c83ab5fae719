//! Reflection ("consciousness", room `reflect`): a bounded record of what happened, built from
//! the events every room publishes ([`Room::on_event`]), the analysers of [`analysis`] run
//! over it every `consciousness.reflection_interval_ms` (while `auto_insight_generation` is on)
//! and on `POST /api/v1/consciousness/reflect`, the insights they find, the self-model,
//! structured queries and decision support answered from that record. Deterministic code: every
//! conclusion names the events (seqs) and values it rests on.
//!
//! Learned baselines: each server's tool-call latency and error rate are EWMAs weighted by
//! `consciousness.learning_rate` (a new value `x` moves the baseline `b` to `b + rate · (x −
//! b)`); the error-burst analyser and decision support compare against them.
//!
//! Invariants: the record holds at most `consciousness.memory_limit` entries and so do the
//! insights (oldest dropped first, both counted); the per-server models, firing alerts and RSS
//! samples are bounded by [`MAX_SUBJECTS`] and [`RSS_SAMPLES`]. A reflection is one pass over
//! the record, linear in its length (measured in `benches/reflection.rs`); it runs on the
//! loop. An insight is published (`consciousness_insight`) only when it is new: the same
//! analyser on the same subject with no newer evidence is not repeated.

pub mod analysis;
pub mod ops;

use crate::api::{ApiError, ErrorCode, ReflectRequest, ReplyTo};
use crate::config::ConsciousnessConfig;
use crate::events::{Channel, EventData};
use crate::reactor::timer::TimerId;
use crate::room::{Effect, Room, RoomCx, Serve};
use analysis::{Entry, Finding, Text, What};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Servers, alert rules and insight keys followed at most.
pub const MAX_SUBJECTS: usize = 4096;
/// Insights kept at most (fewer when `memory_limit` is lower): each holds its evidence.
pub const INSIGHTS_MAX: usize = 256;
/// Clients waiting for one reflection at most.
const WAITING_MAX: usize = 16;
/// How long the worker may take over one reflection.
const ANALYSIS_DEADLINE: Duration = Duration::from_secs(10);
/// The daemon's RSS samples kept (one per reflection).
pub const RSS_SAMPLES: usize = 64;
/// Entries a query answer lists at most.
const ANSWER_MAX: usize = 50;
/// Longest text kept from an event's field.
const TEXT_MAX: usize = 256;

/// What reflection knows of one server.
#[derive(Debug, Clone, Default)]
struct ServerModel {
    status: &'static str,
    capabilities: Option<Arc<[Text]>>,
    calls: u64,
    failures: u64,
    latency_baseline: Option<f64>,
    error_baseline: f64,
    last_latency: Option<f64>,
}

/// One insight as kept and answered.
#[derive(Debug, Clone)]
pub struct Insight {
    /// Increasing id.
    pub id: u64,
    /// When it was found (RFC 3339).
    pub created_at: String,
    /// What was found.
    pub finding: Finding,
}

impl Insight {
    fn to_json(&self) -> Value {
        let f = &self.finding;
        json!({
            "id": self.id,
            "created_at": self.created_at,
            "insight_type": f.kind,
            "analyser": f.analyser,
            "subject": f.subject,
            "significance": f.significance,
            "description": f.description,
            "evidence": {"event_seqs": f.seqs, "values": f.values},
            "recommendations": f.recommendations,
        })
    }
}

/// The last reflection.
#[derive(Debug, Clone)]
struct Last {
    at: SystemTime,
    seq: u64,
    /// Loop time: the snapshot and taking in the findings.
    loop_us: u64,
    /// The analysers' time (on the worker).
    analysis_us: u64,
    found: usize,
    new: usize,
}

/// What the analysers work on: a copy of the record (reference counts, not strings) and the
/// learned values, taken on the loop and handed to the worker.
#[derive(Debug)]
pub struct Snapshot {
    record: Vec<Entry>,
    at: SystemTime,
    seq: u64,
    baseline: BTreeMap<String, f64>,
    rss: Vec<(u64, u64)>,
    took: Duration,
}

impl Snapshot {
    /// Runs every analyser (the worker's part).
    pub fn analyse(self) -> Analysed {
        let started = Instant::now();
        let findings = analysis::analyse(&self.record, now_ms(self.at), &self.baseline, &self.rss);
        Analysed {
            findings,
            at: self.at,
            seq: self.seq,
            snapshot_took: self.took,
            analysis_took: started.elapsed(),
        }
    }
}

/// The analysers' findings, back from the worker.
#[derive(Debug)]
pub struct Analysed {
    findings: Vec<Finding>,
    at: SystemTime,
    seq: u64,
    snapshot_took: Duration,
    analysis_took: Duration,
}

/// A reflection's result from the worker.
#[derive(Debug)]
pub enum Job {
    /// It ran.
    Done(Analysed),
    /// It did not (the worker refused it or it ran past its deadline).
    Failed(String),
}

/// The reflection room.
#[derive(Debug)]
pub struct Reflect {
    record: VecDeque<Entry>,
    limit: usize,
    dropped: u64,
    insights: VecDeque<Insight>,
    insights_dropped: u64,
    next_insight: u64,
    /// (analyser, subject) → the newest evidence seq it was published with.
    published: HashMap<(&'static str, String), u64>,
    servers: BTreeMap<String, ServerModel>,
    firing: BTreeMap<String, String>,
    variety: Option<Value>,
    rss: VecDeque<(u64, u64)>,
    last: Option<Last>,
    reflections: u64,
    last_seq: u64,
    /// A reflection is on the worker.
    running: bool,
    /// Clients waiting for it.
    waiting: Vec<ReplyTo>,
    interval: Duration,
    learning_rate: f64,
    auto: bool,
    timer: Option<TimerId>,
    recent: Recent,
}

/// The room's one timer: the periodic reflection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due;

fn now_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `s` cut to at most [`TEXT_MAX`] bytes, on a character boundary.
fn cut(s: &str) -> &str {
    &s[..crate::text::floor_boundary(s, TEXT_MAX)]
}

fn bounded(s: &str) -> String {
    cut(s).to_string()
}

/// [`bounded`] as shared text, made in one allocation.
fn bounded_text(s: &str) -> Text {
    Text::from(cut(s))
}

/// How many texts [`Recent`] keeps.
const RECENT_TEXTS: usize = 8;

/// The last few texts the record was given (a tool call's server and tool names repeat from
/// call to call): one that comes again is shared, not allocated again. Holds at most
/// [`RECENT_TEXTS`] texts, replaced oldest first.
#[derive(Debug, Default)]
struct Recent {
    texts: [Option<Text>; RECENT_TEXTS],
    next: usize,
}

impl Recent {
    /// `s` as shared text.
    fn text(&mut self, s: &str) -> Text {
        if let Some(t) = self.texts.iter().flatten().find(|t| ***t == *s) {
            return t.clone();
        }
        let t = Text::from(s);
        self.texts[self.next] = Some(t.clone());
        self.next = (self.next + 1) % RECENT_TEXTS;
        t
    }
}

/// Event types that are decisions: the capability policy's refusals, and the acquisition
/// slice's verdicts (not published in this build yet).
const DECISIONS: &[&str] = &[
    "tool_call_blocked",
    "capability_acquired",
    "capability_acquisition_failed",
    "acquisition_decision",
];

impl Reflect {
    /// A room under `config`.
    pub fn new(config: &ConsciousnessConfig) -> Reflect {
        Reflect {
            record: VecDeque::new(),
            limit: config.memory_limit.max(1),
            dropped: 0,
            insights: VecDeque::new(),
            insights_dropped: 0,
            next_insight: 1,
            published: HashMap::new(),
            servers: BTreeMap::new(),
            firing: BTreeMap::new(),
            variety: None,
            rss: VecDeque::new(),
            last: None,
            reflections: 0,
            last_seq: 0,
            running: false,
            waiting: Vec::new(),
            interval: Duration::from_millis(config.reflection_interval_ms),
            learning_rate: config.learning_rate,
            auto: config.auto_insight_generation,
            timer: None,
            recent: Recent::default(),
        }
    }

    /// Entries held, and dropped so far.
    pub fn record_len(&self) -> (usize, u64) {
        (self.record.len(), self.dropped)
    }

    fn push(&mut self, seq: u64, what: What) {
        while self.record.len() >= self.limit {
            self.record.pop_front();
            self.dropped += 1;
        }
        self.record.push_back(Entry {
            seq,
            at_ms: now_ms(SystemTime::now()),
            what,
        });
    }

    fn model(&mut self, server: &str) -> Option<&mut ServerModel> {
        // A known server's model is found without making its name a String (every tool
        // call comes here).
        if !self.servers.contains_key(server) {
            if self.servers.len() >= MAX_SUBJECTS {
                return None;
            }
            self.servers
                .insert(server.to_string(), ServerModel::default());
        }
        self.servers.get_mut(server)
    }

    /// Follows one event: the record, the server models, the firing alerts.
    pub fn follow(&mut self, seq: u64, data: &EventData) {
        self.last_seq = self.last_seq.max(seq);
        let rate = self.learning_rate;
        match data {
            EventData::McpToolCall {
                server_id,
                tool,
                outcome,
                latency_ms,
            } => {
                if let Some(m) = self.model(server_id) {
                    m.calls += 1;
                    let failed = *outcome != "ok";
                    m.failures += u64::from(failed);
                    let x = if failed { 1.0 } else { 0.0 };
                    m.error_baseline += rate * (x - m.error_baseline);
                    if !failed {
                        m.last_latency = Some(*latency_ms);
                        let b = m.latency_baseline.get_or_insert(*latency_ms);
                        *b += rate * (latency_ms - *b);
                    }
                }
                let (server, tool) = (self.recent.text(server_id), self.recent.text(cut(tool)));
                self.push(
                    seq,
                    What::Call {
                        server,
                        tool,
                        outcome,
                        latency_ms: *latency_ms,
                    },
                );
            }
            EventData::McpServerStatusChange {
                server_id,
                old_status,
                new_status,
                capabilities,
                ..
            } => {
                let caps: Arc<[Text]> = capabilities
                    .iter()
                    .take(64)
                    .map(|c| bounded_text(c))
                    .collect();
                if let Some(m) = self.model(server_id) {
                    m.status = new_status;
                    m.capabilities = Some(caps.clone());
                }
                self.push(
                    seq,
                    What::Status {
                        server: server_id.as_str().into(),
                        old: old_status,
                        new: new_status,
                        capabilities: caps,
                    },
                );
            }
            EventData::McpServerRegistered { server_id, .. } => {
                if let Some(m) = self.model(server_id) {
                    m.status = "registered";
                }
            }
            EventData::McpServerUnregistered { server_id } => {
                self.servers.remove(server_id);
            }
            EventData::VarietyGapDetected { capability, .. } => self.push(
                seq,
                What::Gap {
                    capability: bounded_text(capability),
                },
            ),
            EventData::VarietyUpdated {
                variety_ratio,
                gap_count,
                required_count,
                provided_count,
                threat_count,
                ..
            } => {
                self.variety = Some(json!({
                    "current_ratio": variety_ratio, "gap_count": gap_count,
                    "required_count": required_count, "provided_count": provided_count,
                    "threat_count": threat_count, "event_seq": seq,
                }));
            }
            EventData::Other { kind, data } => self.follow_other(seq, kind, data),
            other if DECISIONS.contains(&other.kind()) => {
                // Rare events: their fields are read from the wire form.
                let data = serde_json::to_value(other).unwrap_or(Value::Null);
                self.follow_other(seq, other.kind(), &data);
            }
            _ => {}
        }
    }

    fn follow_other(&mut self, seq: u64, kind: &'static str, data: &Value) {
        let text = |k: &str| data[k].as_str().map(bounded);
        if kind.ends_with("_alert") || kind.ends_with("_alert_resolved") {
            let (Some(id), Some(rule)) = (text("id"), text("rule")) else {
                return;
            };
            let state = if text("state").as_deref() == Some("firing") {
                "firing"
            } else {
                "resolved"
            };
            if state == "firing" {
                if self.firing.len() < MAX_SUBJECTS || self.firing.contains_key(&rule) {
                    self.firing.insert(rule.clone(), id.clone());
                }
            } else {
                self.firing.remove(&rule);
            }
            let value = data["current_value"].as_f64().unwrap_or(0.0);
            self.push(
                seq,
                What::Alert {
                    id: id.into(),
                    rule: rule.into(),
                    state,
                    value,
                },
            );
        } else if kind == "variety_gap_detected" {
            let capability = text("capability")
                .or_else(|| text("capability_type"))
                .or_else(|| text("description"))
                .unwrap_or_default();
            self.push(
                seq,
                What::Gap {
                    capability: capability.into(),
                },
            );
        } else if kind == "variety_updated" {
            let keep = ["current_ratio", "gap_count", "threshold", "last_assessed"];
            let small: serde_json::Map<String, Value> = keep
                .iter()
                .filter_map(|k| data.get(*k).map(|v| (k.to_string(), v.clone())))
                .collect();
            self.variety = Some(Value::Object(small));
        } else if let Some(kind) = DECISIONS.iter().find(|k| **k == kind) {
            let subject = ["capability", "capability_type", "package", "server_id"]
                .iter()
                .find_map(|k| text(k))
                .unwrap_or_default();
            // The acquisition's decision records are numbered (`decision_id`: 7), other
            // decisions may carry a textual id.
            let id = text("decision_id")
                .or_else(|| data["decision_id"].as_u64().map(|n| n.to_string()))
                .or_else(|| text("id"))
                .map(Text::from);
            self.push(
                seq,
                What::Decision {
                    kind,
                    subject: subject.into(),
                    id,
                },
            );
        }
    }

    /// The record and learned values for the analysers (the loop's part of a reflection:
    /// reference counts are copied, not strings). `rss_bytes` is the daemon's RSS now.
    pub fn snapshot(&mut self, rss_bytes: u64) -> Snapshot {
        let started = Instant::now();
        let at = SystemTime::now();
        if rss_bytes > 0 {
            if self.rss.len() >= RSS_SAMPLES {
                self.rss.pop_front();
            }
            self.rss.push_back((now_ms(at), rss_bytes));
        }
        let record: Vec<Entry> = self.record.iter().cloned().collect();
        let baseline = self
            .servers
            .iter()
            .map(|(k, m)| (k.clone(), m.error_baseline))
            .collect();
        Snapshot {
            record,
            at,
            seq: self.last_seq,
            baseline,
            rss: self.rss.iter().copied().collect(),
            took: started.elapsed(),
        }
    }

    /// Takes in what the analysers found: the new insights are kept and returned (a finding
    /// is new when its analyser and subject have newer evidence than last published).
    pub fn absorb(&mut self, done: Analysed) -> Vec<Insight> {
        let started = Instant::now();
        let found = done.findings.len();
        let mut new = Vec::new();
        let keep = self.limit.min(INSIGHTS_MAX);
        for f in done.findings {
            let newest = f.seqs.last().copied().unwrap_or(0);
            let key = (f.analyser, f.subject.clone());
            if self.published.get(&key).is_some_and(|&seen| newest <= seen) {
                continue;
            }
            if self.published.len() >= MAX_SUBJECTS {
                self.published.clear();
            }
            self.published.insert(key, newest);
            let insight = Insight {
                id: self.next_insight,
                created_at: crate::state::rfc3339_utc_millis(done.at),
                finding: f,
            };
            self.next_insight += 1;
            while self.insights.len() >= keep {
                self.insights.pop_front();
                self.insights_dropped += 1;
            }
            self.insights.push_back(insight.clone());
            new.push(insight);
        }
        self.reflections += 1;
        self.last = Some(Last {
            at: done.at,
            seq: done.seq,
            loop_us: (done.snapshot_took + started.elapsed()).as_micros() as u64,
            analysis_us: done.analysis_took.as_micros() as u64,
            found,
            new: new.len(),
        });
        new
    }

    /// A whole reflection at once, on the caller's thread (tests and the bench): the new
    /// insights, and how many findings there were.
    pub fn reflect(&mut self, rss_bytes: u64) -> (Vec<Insight>, usize) {
        let done = self.snapshot(rss_bytes).analyse();
        let found = done.findings.len();
        (self.absorb(done), found)
    }

    /// Loop time and analysis time of the last reflection, in microseconds.
    pub fn last_times_us(&self) -> Option<(u64, u64)> {
        self.last.as_ref().map(|l| (l.loop_us, l.analysis_us))
    }

    /// Starts a reflection on the worker (unless one runs); `reply` waits for it.
    fn begin(&mut self, cx: &mut RoomCx<'_, Self>, reply: Option<ReplyTo>) {
        if let Some(r) = reply {
            if self.waiting.len() >= WAITING_MAX {
                let busy = ApiError::new(ErrorCode::Busy, "reflections are waiting; try again");
                cx.reply(r, Err(busy));
                return;
            }
            self.waiting.push(r);
        }
        if self.running {
            return;
        }
        let rss = crate::monitor::performance::own_process_brief().rss_bytes;
        let snapshot = self.snapshot(rss);
        self.running = true;
        let submitted = cx.submit(
            ANALYSIS_DEADLINE,
            move || Job::Done(snapshot.analyse()),
            |why| Job::Failed(format!("reflection did not run: {why}")),
        );
        if let Err(failed) = submitted {
            self.on_job(cx, failed);
        }
    }

    fn answer(&self, new: &[Insight]) -> Value {
        let l = self.last.as_ref();
        json!({
            "reflection": self.reflections,
            "loop_us": l.map(|l| l.loop_us),
            "analysis_us": l.map(|l| l.analysis_us),
            "record": {"entries": self.record.len(), "dropped": self.dropped},
            "findings": l.map_or(0, |l| l.found),
            "new_insights": new.iter().map(Insight::to_json).collect::<Vec<_>>(),
        })
    }

    fn publish(&self, cx: &mut RoomCx<'_, Self>, new: &[Insight]) {
        if !self.auto {
            return;
        }
        for i in new {
            let f = &i.finding;
            let recommendations: Vec<String> =
                f.recommendations.iter().map(|r| r.short()).collect();
            cx.publish(
                "consciousness",
                "consciousness_insight",
                json!({
                    "insight_id": i.id,
                    "insight_type": f.kind,
                    "significance": f.significance,
                    "description": f.description,
                    "recommendations": recommendations,
                    "subject": f.subject,
                    "event_seqs": f.seqs,
                }),
            );
        }
    }

    fn arm(&mut self, cx: &mut RoomCx<'_, Self>) {
        if let Some(t) = self.timer.take() {
            cx.timers().cancel(t);
        }
        if self.auto {
            self.timer = Some(cx.timers().insert(Instant::now() + self.interval, Due));
        }
    }

    /// The self-model.
    pub fn state(&self) -> Value {
        let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.servers.values() {
            *by_status.entry(m.status).or_default() += 1;
        }
        let failing: Vec<&String> = self
            .servers
            .iter()
            .filter(|(_, m)| matches!(m.status, "failed" | "backoff"))
            .map(|(k, _)| k)
            .collect();
        let health = if failing.is_empty() && self.firing.is_empty() {
            "healthy"
        } else {
            "degraded"
        };
        let calls: u64 = self.servers.values().map(|m| m.calls).sum();
        let rss_trend = {
            let t0 = self.rss.front().map_or(0, |s| s.0);
            let points: Vec<(f64, f64)> = self
                .rss
                .iter()
                .map(|(t, b)| ((t - t0) as f64 / 1000.0, *b as f64))
                .collect();
            analysis::least_squares(&points).map(|(slope, _, r2)| {
                json!({"slope_bytes_per_s": slope, "r2": r2, "samples": points.len(),
                       "direction": if slope > 0.0 { "increasing" } else if slope < 0.0 { "decreasing" } else { "flat" }})
            })
        };
        let last = self.last.as_ref().map(|l| {
            let since: Vec<&Entry> = self.record.iter().filter(|e| e.seq > l.seq).collect();
            let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
            let mut changed: Vec<&str> = Vec::new();
            for e in &since {
                let kind = match &e.what {
                    What::Call { .. } => "tool_calls",
                    What::Status { server, .. } => {
                        if !changed.contains(&&**server) && changed.len() < ANSWER_MAX {
                            changed.push(server);
                        }
                        "status_changes"
                    }
                    What::Alert { .. } => "alerts",
                    What::Gap { .. } => "gaps",
                    What::Decision { .. } => "decisions",
                };
                *kinds.entry(kind).or_default() += 1;
            }
            json!({
                "at": crate::state::rfc3339_utc_millis(l.at),
                "loop_us": l.loop_us,
                "analysis_us": l.analysis_us,
                "findings": l.found,
                "new_insights": l.new,
                "since": {"events_recorded": since.len(), "by_kind": kinds, "servers_changed": changed},
            })
        });
        json!({
            "doing": {
                "servers": by_status,
                "tool_calls_seen": calls,
                "reflections": self.reflections,
                "auto_insight_generation": self.auto,
                "reflection_interval_ms": self.interval.as_millis() as u64,
            },
            "health": {"status": health, "servers_in_trouble": failing, "firing_alerts": self.firing},
            "variety": self.variety.clone().unwrap_or_else(|| json!({"measured": false, "note": "no variety analysis has been published"})),
            "resources": {
                "rss_bytes": self.rss.back().map(|s| s.1),
                "rss_trend": rss_trend,
                "record": {"entries": self.record.len(), "limit": self.limit, "dropped": self.dropped},
                "insights": {"kept": self.insights.len(), "limit": self.limit.min(INSIGHTS_MAX), "dropped": self.insights_dropped},
            },
            "last_reflection": last,
        })
    }

    /// Insights kept, filtered, oldest first.
    pub fn insights(&self, since: Option<u64>, kind: Option<&str>, min: Option<f64>) -> Value {
        let list: Vec<Value> = self
            .insights
            .iter()
            .filter(|i| since.is_none_or(|s| i.id > s))
            .filter(|i| kind.is_none_or(|k| i.finding.kind == k || i.finding.analyser == k))
            .filter(|i| min.is_none_or(|m| i.finding.significance >= m))
            .map(Insight::to_json)
            .collect();
        json!({"insights": list, "kept": self.insights.len(), "dropped": self.insights_dropped})
    }

    fn about_server(&self, id: &str) -> Result<Value, ApiError> {
        let model = self.servers.get(id);
        let mut history = Vec::new();
        let mut failures = Vec::new();
        let mut latencies = Vec::new();
        let mut decisions = Vec::new();
        for e in &self.record {
            match &e.what {
                What::Status {
                    server, old, new, ..
                } if &**server == id => {
                    history.push(json!({"seq": e.seq, "old_status": old, "new_status": new}));
                }
                What::Call {
                    server,
                    tool,
                    outcome,
                    latency_ms,
                } if &**server == id => {
                    if *outcome != "ok" {
                        failures.push(json!({"seq": e.seq, "tool": &**tool, "outcome": outcome}));
                    } else {
                        latencies.push(*latency_ms);
                    }
                }
                What::Decision { subject, kind, .. } if &**subject == id => {
                    decisions.push(json!({"seq": e.seq, "kind": kind}));
                }
                _ => {}
            }
        }
        if model.is_none() && history.is_empty() && failures.is_empty() && latencies.is_empty() {
            return Err(not_known("server", id));
        }
        let tail = |v: Vec<Value>| -> Vec<Value> {
            let skip = v.len().saturating_sub(ANSWER_MAX);
            v.into_iter().skip(skip).collect()
        };
        let mean =
            (!latencies.is_empty()).then(|| latencies.iter().sum::<f64>() / latencies.len() as f64);
        let insights: Vec<Value> = self
            .insights
            .iter()
            .filter(|i| i.finding.subject == id || i.finding.subject.starts_with(&format!("{id}/")))
            .map(Insight::to_json)
            .collect();
        Ok(json!({
            "about": "server",
            "id": id,
            "status": model.map(|m| m.status),
            "capabilities": model.and_then(|m| m.capabilities.as_deref()).map(|c| c.iter().map(|x| &**x).collect::<Vec<&str>>()),
            "calls": model.map_or(0, |m| m.calls),
            "failures": model.map_or(0, |m| m.failures),
            "latency_ms": {
                "last": model.and_then(|m| m.last_latency),
                "mean_in_record": mean,
                "baseline": model.and_then(|m| m.latency_baseline),
            },
            "error_rate_baseline": model.map(|m| m.error_baseline),
            "history": tail(history),
            "recent_failures": tail(failures),
            "decisions": tail(decisions),
            "insights": insights,
        }))
    }

    fn about_capability(&self, id: &str) -> Result<Value, ApiError> {
        let providers: Vec<Value> = self
            .servers
            .iter()
            .filter(|(_, m)| {
                m.capabilities
                    .iter()
                    .flat_map(|c| c.iter())
                    .any(|c| &**c == id)
            })
            .map(|(k, m)| json!({"server": k, "status": m.status}))
            .collect();
        let gaps: Vec<u64> = self
            .record
            .iter()
            .filter_map(|e| match &e.what {
                What::Gap { capability } if &**capability == id => Some(e.seq),
                _ => None,
            })
            .collect();
        if providers.is_empty() && gaps.is_empty() {
            return Err(not_known("capability", id));
        }
        Ok(json!({"about": "capability", "id": id, "providers": providers, "gap_events": gaps}))
    }

    fn about_alert(&self, id: &str) -> Result<Value, ApiError> {
        let events: Vec<Value> = self
            .record
            .iter()
            .filter_map(|e| match &e.what {
                What::Alert {
                    id: a,
                    rule,
                    state,
                    value,
                } if &**a == id || &**rule == id => Some(
                    json!({"seq": e.seq, "id": &**a, "rule": &**rule, "state": state, "value": value}),
                ),
                _ => None,
            })
            .collect();
        if events.is_empty() {
            return Err(not_known("alert", id));
        }
        Ok(json!({"about": "alert", "id": id, "events": events}))
    }

    fn about_decision(&self, id: &str) -> Result<Value, ApiError> {
        let events: Vec<Value> = self
            .record
            .iter()
            .filter_map(|e| match &e.what {
                What::Decision {
                    kind,
                    subject,
                    id: d,
                } if d.as_deref() == Some(id) || &**subject == id => Some(
                    json!({"seq": e.seq, "kind": kind, "subject": &**subject, "id": d.as_deref()}),
                ),
                _ => None,
            })
            .collect();
        if events.is_empty() {
            return Err(not_known("decision", id));
        }
        Ok(json!({"about": "decision", "id": id, "events": events}))
    }

    /// A structured question answered from the record.
    ///
    /// # Errors
    /// An unknown subject kind (400) or a subject the record does not know (404).
    pub fn query(&self, about: &str, id: &str) -> Result<Value, ApiError> {
        match about {
            "server" => self.about_server(id),
            "capability" => self.about_capability(id),
            "alert" => self.about_alert(id),
            "decision" => self.about_decision(id),
            other => Err(ApiError::field(
                ErrorCode::InvalidParameter,
                "about",
                format!("'{other}' is not one of server, capability, alert, decision"),
            )),
        }
    }

    /// Ranks what to do about a situation, with each criterion's score and the weights.
    ///
    /// # Errors
    /// An unknown situation (400) or server (404).
    pub fn decide(&self, situation: &str, subject: &str) -> Result<Value, ApiError> {
        if situation != "degraded_server" {
            return Err(ApiError::field(
                ErrorCode::InvalidParameter,
                "situation",
                format!(
                    "'{situation}' is not a situation decision support knows (degraded_server)"
                ),
            ));
        }
        let Some(model) = self.servers.get(subject) else {
            return Err(not_known("server", subject));
        };
        let now = now_ms(SystemTime::now());
        let since = now.saturating_sub(analysis::FLAP_WINDOW_MS);
        let mut recent: Vec<(bool, f64)> = Vec::new();
        let mut exits = 0usize;
        for e in self.record.iter().filter(|e| e.at_ms >= since) {
            match &e.what {
                What::Call {
                    server,
                    outcome,
                    latency_ms,
                    ..
                } if &**server == subject => recent.push((*outcome == "ok", *latency_ms)),
                What::Status {
                    server, old, new, ..
                } if &**server == subject
                    && matches!(*old, "active" | "degraded")
                    && !matches!(*new, "active" | "degraded" | "stopping") =>
                {
                    exits += 1
                }
                _ => {}
            }
        }
        let last: Vec<&(bool, f64)> = recent.iter().rev().take(20).collect();
        let error = if last.is_empty() {
            0.0
        } else {
            last.iter().filter(|c| !c.0).count() as f64 / last.len() as f64
        };
        let ok: Vec<f64> = last.iter().filter(|c| c.0).map(|c| c.1).collect();
        let latency = match (model.latency_baseline, ok.is_empty()) {
            (Some(b), false) if b > 0.0 => {
                let mean = ok.iter().sum::<f64>() / ok.len() as f64;
                (mean / b - 1.0).clamp(0.0, 1.0)
            }
            _ => 0.0,
        };
        let flapping = (exits as f64 / 5.0).min(1.0);
        let weights = json!({"error_rate": 0.4, "latency": 0.3, "flapping": 0.3});
        let (we, wl, wf) = (0.4, 0.3, 0.3);
        let option = |name: &str, e: f64, l: f64, f: f64, request: Value| {
            let score = we * e + wl * l + wf * f;
            json!({"option": name, "score": (score * 1000.0).round() / 1000.0,
                   "criteria": {"error_rate": e, "latency": l, "flapping": f}, "request": request})
        };
        let path = |a: &str| json!({"method": "POST", "path": format!("/api/v1/mcp/servers/{subject}/{a}")});
        // restart helps errors and slowness, not a server that keeps dying; stop is for one
        // that keeps dying; waiting is right when nothing is wrong.
        let mut options = vec![
            option("restart", error, latency, 1.0 - flapping, path("restart")),
            option("stop", error, latency, flapping, path("stop")),
            option(
                "wait",
                1.0 - error,
                1.0 - latency,
                1.0 - flapping,
                Value::Null,
            ),
        ];
        options.sort_by(|a, b| {
            b["score"]
                .as_f64()
                .partial_cmp(&a["score"].as_f64())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        Ok(json!({
            "situation": situation,
            "subject": subject,
            "status": model.status,
            "evidence": {"recent_calls": last.len(), "error_share": error,
                         "latency_over_baseline": latency, "exits_in_window": exits},
            "weights": weights,
            "options": options,
            "recommended": options[0]["option"],
        }))
    }
}

fn not_known(about: &str, id: &str) -> ApiError {
    ApiError::field(
        ErrorCode::SubjectNotFound,
        "id",
        format!("the record knows no {about} '{id}'"),
    )
}

impl Room for Reflect {
    type Timer = Due;
    type Job = Job;
    type Output = Effect;
    const NAME: &'static str = "reflect";

    /// Takes the configuration and arms the reflection cycle (when automatic insights are on).
    fn start(&mut self, cx: &mut RoomCx<'_, Self>, config: &crate::config::Config) {
        self.apply_config(cx, config);
        if self.timer.is_none() {
            self.arm(cx);
        }
    }

    fn on_timer(&mut self, cx: &mut RoomCx<'_, Self>, _due: Due) {
        self.timer = None;
        self.begin(cx, None);
        self.arm(cx);
    }

    fn on_job(&mut self, cx: &mut RoomCx<'_, Self>, done: Job) {
        self.running = false;
        // The snapshot (tens of bytes per entry) was freed on the worker: hand a large one's
        // memory back rather than keep the peak.
        if self.record.len() >= 1000 {
            crate::sys::release_free_memory();
        }
        let answer = match done {
            Job::Done(analysed) => {
                let new = self.absorb(analysed);
                self.publish(cx, &new);
                Ok(self.answer(&new))
            }
            Job::Failed(why) => {
                log::warn!("{why}");
                Err(ApiError::new(ErrorCode::Busy, why))
            }
        };
        for reply in std::mem::take(&mut self.waiting) {
            cx.reply(reply, answer.clone());
        }
    }

    fn apply_config(&mut self, cx: &mut RoomCx<'_, Self>, config: &crate::config::Config) {
        let c = &config.consciousness;
        self.learning_rate = c.learning_rate;
        self.limit = c.memory_limit.max(1);
        while self.record.len() > self.limit {
            self.record.pop_front();
            self.dropped += 1;
        }
        while self.insights.len() > self.limit {
            self.insights.pop_front();
            self.insights_dropped += 1;
        }
        let interval = Duration::from_millis(c.reflection_interval_ms);
        if interval != self.interval || c.auto_insight_generation != self.auto {
            self.interval = interval;
            self.auto = c.auto_insight_generation;
            self.arm(cx);
        }
    }

    fn on_event(
        &mut self,
        _cx: &mut RoomCx<'_, Self>,
        seq: u64,
        _channel: Channel,
        data: &EventData,
    ) {
        if data.kind() == "consciousness_insight" {
            return;
        }
        self.follow(seq, data);
    }

    fn metrics(&self, out: &mut crate::telemetry::Exposition) {
        out.gauge(
            "vsm_reflection_record_entries",
            "Entries in the reflection record (bounded by consciousness.memory_limit)",
            &[(&[], self.record.len() as f64)],
        );
        out.counter(
            "vsm_reflection_record_dropped_total",
            "Record entries dropped (oldest first) to keep within consciousness.memory_limit",
            &[(&[], self.dropped as f64)],
        );
        out.counter(
            "vsm_reflection_insights_total",
            "Insights found",
            &[(&[], (self.next_insight - 1) as f64)],
        );
        out.counter(
            "vsm_reflections_total",
            "Reflections run",
            &[(&[], self.reflections as f64)],
        );
    }
}

impl Serve for Reflect {
    type Request = ReflectRequest;

    fn handle(&mut self, cx: &mut RoomCx<'_, Self>, request: ReflectRequest, reply: ReplyTo) {
        let answer = match request {
            ReflectRequest::State => Ok(self.state()),
            ReflectRequest::Reflect => return self.begin(cx, Some(reply)),
            ReflectRequest::Insights {
                since,
                kind,
                min_significance,
            } => Ok(self.insights(since, kind.as_deref(), min_significance)),
            ReflectRequest::Query { about, id } => self.query(&about, &id),
            ReflectRequest::Decision { situation, subject } => self.decide(&situation, &subject),
        };
        cx.reply(reply, answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(limit: usize) -> ConsciousnessConfig {
        ConsciousnessConfig {
            memory_limit: limit,
            ..ConsciousnessConfig::default()
        }
    }

    fn call(ms: f64, outcome: &'static str) -> EventData {
        EventData::McpToolCall {
            server_id: "s".into(),
            tool: "t".into(),
            outcome,
            latency_ms: ms,
        }
    }

    /// A call's server and tool names are shared with the entries before it, and the texts
    /// kept stay few.
    #[test]
    fn repeated_names_are_shared_not_made_again() {
        let mut r = Reflect::new(&config(100));
        r.follow(1, &call(1.0, "ok"));
        r.follow(2, &call(2.0, "ok"));
        let names = |e: &Entry| match &e.what {
            What::Call { server, tool, .. } => (server.clone(), tool.clone()),
            other => panic!("not a call: {other:?}"),
        };
        let (a, b) = (names(&r.record[0]), names(&r.record[1]));
        assert!(Arc::ptr_eq(&a.0, &b.0) && Arc::ptr_eq(&a.1, &b.1));
        assert_eq!((&*b.0, &*b.1), ("s", "t"));
        let long = "x".repeat(TEXT_MAX + 10);
        for n in 0..2 * RECENT_TEXTS {
            let t = r.recent.text(&format!("other {n}"));
            assert_eq!(*t, *format!("other {n}"));
        }
        assert_eq!(r.recent.texts.iter().flatten().count(), RECENT_TEXTS);
        assert!(!r
            .recent
            .texts
            .iter()
            .flatten()
            .any(|t| Arc::ptr_eq(t, &a.0)));
        let entry = EventData::McpToolCall {
            server_id: "s".into(),
            tool: long,
            outcome: "ok",
            latency_ms: 1.0,
        };
        r.follow(3, &entry);
        assert_eq!(names(&r.record[2]).1.len(), TEXT_MAX);
    }

    /// An acquisition's verdict is a decision in the record, found by its number or its
    /// package.
    #[test]
    fn acquisition_verdicts_are_decisions_found_by_number_and_package() {
        let mut r = Reflect::new(&config(100));
        r.follow(
            4,
            &EventData::AcquisitionDecision {
                decision_id: 7,
                acquisition_id: "acq-2".into(),
                package: "npm:x@1.0.0".into(),
                verdict: "refused",
                score: Some(40),
                reasons: vec!["blocked".into()],
            },
        );
        let by_number = r.query("decision", "7").expect("by number");
        assert_eq!(by_number["events"][0]["seq"], 4, "{by_number}");
        assert_eq!(by_number["events"][0]["subject"], "npm:x@1.0.0");
        assert!(r.query("decision", "npm:x@1.0.0").is_ok());
        assert!(r.query("decision", "8").is_err());
    }

    /// The reflection cycle is armed when the daemon starts (no event needed), only when
    /// automatic insights are on.
    #[test]
    fn start_arms_the_cycle_when_automatic_insights_are_on() {
        use crate::room::testing::{enter, Inline};
        for auto in [true, false] {
            let mut full = crate::config::Config::default();
            full.consciousness.auto_insight_generation = auto;
            let mut r = Reflect::new(&full.consciousness);
            let (mut wiring, mut out) = (Inline::new(), Vec::new());
            enter(&mut r, &mut wiring, &mut out, |r, cx| r.start(cx, &full));
            assert_eq!(wiring.wheel.len(), usize::from(auto), "auto {auto}");
            assert_eq!(r.timer.is_some(), auto);
        }
    }

    #[test]
    fn the_record_holds_memory_limit_entries_and_counts_the_dropped() {
        let mut r = Reflect::new(&config(10));
        for i in 0..25 {
            r.follow(i, &call(1.0, "ok"));
        }
        assert_eq!(r.record_len(), (10, 15));
        assert_eq!(r.record.front().map(|e| e.seq), Some(15));
    }

    #[test]
    fn baselines_are_ewmas_at_the_learning_rate() {
        let mut r = Reflect::new(&ConsciousnessConfig {
            learning_rate: 0.5,
            ..ConsciousnessConfig::default()
        });
        r.follow(1, &call(10.0, "ok"));
        r.follow(2, &call(20.0, "ok"));
        r.follow(3, &call(0.0, "timeout"));
        let m = &r.servers["s"];
        // latency: 10, then 10 + 0.5 * (20 - 10) = 15; errors: 0, 0, 0 + 0.5 * (1 - 0) = 0.5.
        assert_eq!(m.latency_baseline, Some(15.0));
        assert_eq!(m.error_baseline, 0.5);
    }

    #[test]
    fn an_insight_is_new_only_with_new_evidence() {
        let mut r = Reflect::new(&config(1000));
        for i in 0..10 {
            r.follow(i, &call(10.0 * (i + 1) as f64, "ok"));
        }
        let (new, _) = r.reflect(0);
        assert_eq!(new.len(), 1);
        assert_eq!(r.reflect(0).0.len(), 0, "the same evidence again");
        r.follow(10, &call(110.0, "ok"));
        assert_eq!(r.reflect(0).0.len(), 1);
        assert_eq!(
            r.insights(None, Some("trend"), Some(0.1))["insights"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        assert_eq!(
            r.insights(Some(1), None, None)["insights"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn decision_support_ranks_with_its_weights() {
        let mut r = Reflect::new(&config(1000));
        for i in 0..10 {
            r.follow(i, &call(5.0, if i % 2 == 0 { "ok" } else { "tool_error" }));
        }
        let d = r.decide("degraded_server", "s").expect("known");
        // error 0.5, latency 0 (ok calls at the baseline), no exits:
        // restart 0.4·0.5 + 0.3·0 + 0.3·1 = 0.5; stop 0.2; wait 0.4·0.5 + 0.3 + 0.3 = 0.8.
        assert_eq!(d["recommended"], "wait");
        assert_eq!(d["options"][0]["score"], 0.8);
        assert_eq!(d["options"][1]["option"], "restart");
        assert_eq!(d["options"][1]["score"], 0.5);
        assert_eq!(d["options"][2]["score"], 0.2);
        assert_eq!(
            r.decide("degraded_server", "nope").unwrap_err().code,
            ErrorCode::SubjectNotFound
        );
        assert_eq!(
            r.decide("other", "s").unwrap_err().code,
            ErrorCode::InvalidParameter
        );
    }
}
