//! The variety room: follows the server catalogue (`[follows servers]`), keeps what is
//! required (`[variety] required` and the recorded `capabilities/acquire` requests), and
//! analyses ([`super::analysis`]) at once when a server's status or tools change, when the
//! configuration changes, every `monitoring.variety_check_interval_ms`, and on demand.
//!
//! An analysis whose result changed (or that was asked for) publishes `variety_updated`; a gap
//! that opens (a required capability that had
//! an active provider, or was not required, and now has none) publishes `variety_gap_detected`
//! once, not every cycle; the ratio is a reading of rule `variety:ratio` for the alerts room
//! against `monitoring.alert_thresholds.variety_ratio_min`. Installing what closes a gap is the
//! acquisition pipeline's: this room publishes the gap and installs nothing.
//!
//! Invariants: requests are at most [`MAX_REQUESTS`], unique, and a change to them is applied
//! (and answered 2xx) only once `capability_requests.json` holds it; at most
//! [`MAX_PENDING`] changes wait for their write, each document written is the requests with
//! every pending change applied, so coalesced writes lose none. The trend keeps the last
//! [`TREND`] analyses.

use super::analysis::{self, Analysis, Opportunity, Requirement, ServerFacts, Source};
use super::capability::{self, ToolText};
use super::policy::{self, Policy};
use super::required::{self, Required, Severity};
use crate::api::{Answer, ApiError, ErrorCode, ReplyTo, VarietyRequest};
use crate::config::Config;
use crate::events::{Channel, EventData};
use crate::monitor::observation::{Family, Hysteresis, Observation};
use crate::reactor::timer::TimerId;
use crate::room::{Effect, Follows, Room, RoomCx, Serve};
use crate::snapshot::ServerView;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

/// The state document of the recorded requests.
pub const REQUESTS_FILE: &str = "capability_requests.json";
/// Recorded requests at most.
pub const MAX_REQUESTS: usize = 64;
/// Request changes waiting for their write at most.
pub const MAX_PENDING: usize = 16;
/// Analyses kept in the trend.
pub const TREND: usize = 32;
/// Without `force`, an analysis this young is answered as it is.
const FRESH: Duration = Duration::from_secs(1);

/// The room's timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The periodic analysis is due.
    Cycle,
}

/// A required capability recorded by `capabilities/acquire`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilityRequest {
    /// The capability (the request's id).
    pub capability: String,
    /// How it should be acquired (`mcp_server`).
    pub acquisition_method: String,
    /// The severity of its gap.
    pub priority: Severity,
    /// When it was recorded (RFC 3339).
    pub requested_at: String,
}

#[derive(Debug)]
enum Change {
    Add(CapabilityRequest),
    Remove(String),
}

impl Change {
    fn capability(&self) -> &str {
        match self {
            Change::Add(r) => &r.capability,
            Change::Remove(c) => c,
        }
    }
}

#[derive(Debug)]
struct Pending {
    tag: u64,
    change: Change,
    reply: ReplyTo,
}

/// One point of the trend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendPoint {
    /// When.
    pub timestamp: String,
    /// The ratio.
    pub variety_ratio: f64,
    /// Gaps.
    pub gap_count: usize,
}

/// The variety room.
#[derive(Debug)]
pub struct Variety {
    required: Vec<Required>,
    policy: Policy,
    interval: Duration,
    ratio_min: f64,
    alert_actions: Vec<String>,
    servers: Vec<ServerFacts>,
    /// Each server's facts with what they were made from: a hand-over maps only the servers
    /// whose tool list or spec changed (mapping every tool of 50 servers on every server event
    /// cost the loop milliseconds). Cleared when the configuration (the policy) changes.
    cache: BTreeMap<String, Cached>,
    requests: Vec<CapabilityRequest>,
    pending: Vec<Pending>,
    next_tag: u64,
    opportunities: Vec<Opportunity>,
    last: Option<Analysis>,
    last_at: Option<Instant>,
    open_gaps: BTreeSet<String>,
    trend: VecDeque<TrendPoint>,
    timer: Option<TimerId>,
    analyses: u64,
    /// Loop time of the last analyses and of the last catalogue hand-overs (mapping every
    /// server's tools), in microseconds: what `GET /api/v1/metrics/variety` reports.
    timings: Timings,
}

/// A server's facts and what they were made from.
#[derive(Debug)]
struct Cached {
    version: (u64, u64),
    tool_count: usize,
    declared: Vec<String>,
    allow: Vec<String>,
    facts: ServerFacts,
}

/// The last [`TIMINGS`] durations of each kind of work the room does on the loop.
#[derive(Debug, Default)]
struct Timings {
    analysis: VecDeque<u64>,
    catalogue: VecDeque<u64>,
}

/// Durations kept per kind.
const TIMINGS: usize = 256;

fn record(ring: &mut VecDeque<u64>, started: Instant) {
    if ring.len() == TIMINGS {
        ring.pop_front();
    }
    ring.push_back(started.elapsed().as_micros() as u64);
}

/// p50, p99 and max of a ring, in microseconds.
fn summary(ring: &VecDeque<u64>) -> Value {
    let mut sorted: Vec<u64> = ring.iter().copied().collect();
    sorted.sort_unstable();
    let at = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    json!({"count": sorted.len(), "p50_us": at(0.5), "p99_us": at(0.99), "max_us": sorted.last()})
}

impl Variety {
    /// The room with `config` and the requests `capability_requests.json` held at start.
    pub fn new(config: &Config, mut requests: Vec<CapabilityRequest>) -> Variety {
        requests.truncate(MAX_REQUESTS);
        Variety {
            required: config.variety.required.clone(),
            policy: Policy::new(config),
            interval: Duration::from_millis(config.monitoring.variety_check_interval_ms),
            ratio_min: config.monitoring.alert_thresholds.variety_ratio_min,
            alert_actions: config.monitoring.alert_actions.clone(),
            servers: Vec::new(),
            cache: BTreeMap::new(),
            requests,
            pending: Vec::new(),
            next_tag: 1,
            opportunities: Vec::new(),
            last: None,
            last_at: None,
            open_gaps: BTreeSet::new(),
            trend: VecDeque::with_capacity(TREND),
            timer: None,
            analyses: 0,
            timings: Timings::default(),
        }
    }

    /// What discovery found (the hook it feeds; shown from the next analysis on).
    pub fn set_opportunities(&mut self, opportunities: Vec<Opportunity>) {
        self.opportunities = opportunities;
    }

    fn arm(&mut self, cx: &mut RoomCx<'_, Self>) {
        if let Some(t) = self.timer.take() {
            cx.timers().cancel(t);
        }
        self.timer = Some(
            cx.timers()
                .insert(Instant::now() + self.interval, Timer::Cycle),
        );
    }

    /// Config requirements, then the requests that config does not already name.
    fn requirements(&self) -> Vec<Requirement> {
        let mut out: Vec<Requirement> = self
            .required
            .iter()
            .map(|r| Requirement {
                capability: r.capability.clone(),
                weight: r.weight,
                severity: r.severity,
                source: Source::Config,
            })
            .collect();
        for r in &self.requests {
            if !out.iter().any(|o| o.capability == r.capability) {
                out.push(Requirement {
                    capability: r.capability.clone(),
                    weight: 1.0,
                    severity: r.priority,
                    source: Source::Request,
                });
            }
        }
        out
    }

    /// Analyses now: stores it, publishes it, reports the ratio.
    fn analyse(&mut self, cx: &mut RoomCx<'_, Self>, trigger: &'static str) {
        let started = Instant::now();
        let now = SystemTime::now();
        let a = analysis::analyze(
            &self.requirements(),
            &self.servers,
            &self.policy.allowed,
            &self.policy.blocked,
            &self.opportunities,
            crate::state::rfc3339_utc_millis(now),
        );
        self.analyses += 1;
        let gaps: BTreeSet<String> = a.gaps.iter().map(|g| g.capability.clone()).collect();
        for g in a
            .gaps
            .iter()
            .filter(|g| !self.open_gaps.contains(&g.capability))
        {
            log::warn!("variety gap: {} ({})", g.description, g.closes_with);
            cx.event(
                Channel::VarietyMonitoring,
                EventData::VarietyGapDetected {
                    gap_type: g.gap_type,
                    severity: g.severity.as_str(),
                    description: g.description.clone(),
                    recommended_action: g.recommended_action,
                    capability: g.capability.clone(),
                    closes_with: g.closes_with.clone(),
                },
            );
        }
        self.open_gaps = gaps;
        if self.trend.len() == TREND {
            self.trend.pop_front();
        }
        self.trend.push_back(TrendPoint {
            timestamp: a.timestamp.clone(),
            variety_ratio: a.variety_ratio,
            gap_count: a.gaps.len(),
        });
        // Said when the result changed (or when asked for): a server event that changes
        // nothing here must not add an event to every subscriber's stream.
        let changed = self.last.as_ref().is_none_or(|l| {
            l.variety_ratio != a.variety_ratio
                || l.gaps != a.gaps
                || l.threats != a.threats
                || l.required_count != a.required_count
                || l.provided_count != a.provided_count
        });
        if changed || trigger == "request" {
            cx.event(
                Channel::VarietyMonitoring,
                EventData::VarietyUpdated {
                    variety_ratio: a.variety_ratio,
                    gap_count: a.gaps.len(),
                    gaps: a.gaps.iter().map(|g| g.capability.clone()).collect(),
                    acquirable: a
                        .gaps
                        .iter()
                        .filter(|g| g.recommended_action == "acquire_mcp_server")
                        .map(|g| g.capability.clone())
                        .collect(),
                    required_count: a.required_count,
                    provided_count: a.provided_count,
                    threat_count: a.threats.len(),
                    trigger,
                },
            );
        }
        let bad = a.variety_ratio < self.ratio_min;
        cx.observe(Observation {
            rule: "variety:ratio".into(),
            family: Family::Health,
            metric: "variety_ratio".into(),
            value: a.variety_ratio,
            threshold: Some(self.ratio_min),
            bad,
            severity: crate::monitor::observation::Severity::Warning,
            message: format!(
                "variety ratio {} ({} of {} required capabilities provided{})",
                a.variety_ratio,
                a.provided_count,
                a.required_count,
                if a.gaps.is_empty() {
                    String::new()
                } else {
                    let names: Vec<&str> = a
                        .gaps
                        .iter()
                        .take(8)
                        .map(|g| g.capability.as_str())
                        .collect();
                    format!("; missing {}", names.join(", "))
                }
            ),
            actions: self.alert_actions.clone(),
            hysteresis: Hysteresis::default(),
        });
        self.last = Some(a);
        self.last_at = Some(Instant::now());
        record(&mut self.timings.analysis, started);
    }

    /// The last analysis as JSON, with the trend and the room's counters.
    fn analysis_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.last).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("trend".into(), self.trend_json());
            m.insert("threshold".into(), json!(self.ratio_min));
            m.insert("analyses".into(), json!(self.analyses));
        }
        v
    }

    fn trend_json(&self) -> Value {
        let direction = match (self.trend.front(), self.trend.back()) {
            (Some(first), Some(last)) if last.variety_ratio > first.variety_ratio => "increasing",
            (Some(first), Some(last)) if last.variety_ratio < first.variety_ratio => "decreasing",
            _ => "stable",
        };
        json!({"direction": direction, "points": self.trend})
    }

    fn fresh(&self) -> bool {
        self.last_at.is_some_and(|t| t.elapsed() < FRESH)
    }

    fn gap_of(&self, capability: &str) -> Option<&analysis::Gap> {
        self.last
            .as_ref()
            .and_then(|a| a.gaps.iter().find(|g| g.capability == capability))
    }

    fn provided(&self, capability: &str) -> bool {
        self.servers
            .iter()
            .any(|s| s.active && s.capabilities.contains_key(capability))
    }

    fn acquire(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        capability: String,
        method: &str,
        priority: &str,
        reply: ReplyTo,
    ) -> Result<(), ApiError> {
        let bad = |field: &str, m: String| ApiError::field(ErrorCode::InvalidParameter, field, m);
        required::check_name(&capability).map_err(|m| bad("capability_type", m))?;
        if method != "mcp_server" {
            return Err(bad(
                "acquisition_method",
                format!("'{method}' is not an acquisition method (mcp_server)"),
            ));
        }
        let priority = Severity::parse(priority).ok_or_else(|| {
            bad(
                "priority",
                format!("'{priority}' is not one of low, medium, high, critical"),
            )
        })?;
        let already = if self.required.iter().any(|r| r.capability == capability) {
            Some("config")
        } else if self.requests.iter().any(|r| r.capability == capability) {
            Some("request")
        } else {
            None
        };
        if let Some(by) = already {
            let answer = json!({
                "capability": capability,
                "recorded": false,
                "required_by": by,
                "provided": self.provided(&capability),
                "gap": self.gap_of(&capability),
            });
            cx.reply(reply, Ok(answer));
            return Ok(());
        }
        self.check_pending(&capability)?;
        let adds = self.requests.len()
            + self
                .pending
                .iter()
                .filter(|p| matches!(p.change, Change::Add(_)))
                .count();
        if adds >= MAX_REQUESTS {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("{MAX_REQUESTS} capability requests are recorded: remove one first"),
            ));
        }
        let request = CapabilityRequest {
            capability,
            acquisition_method: method.to_string(),
            priority,
            requested_at: crate::state::rfc3339_utc(SystemTime::now()),
        };
        self.write(cx, Change::Add(request), reply);
        Ok(())
    }

    fn remove(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        id: String,
        reply: ReplyTo,
    ) -> Result<(), ApiError> {
        self.check_pending(&id)?;
        if self.requests.iter().any(|r| r.capability == id) {
            self.write(cx, Change::Remove(id), reply);
            return Ok(());
        }
        if self.required.iter().any(|r| r.capability == id) {
            return Err(ApiError::field(
                ErrorCode::Conflict,
                "id",
                format!("'{id}' is required by [variety] required in the configuration: change the configuration to remove it"),
            ));
        }
        Err(ApiError::field(
            ErrorCode::CapabilityNotFound,
            "id",
            format!("no capability request '{id}'"),
        ))
    }

    fn check_pending(&self, capability: &str) -> Result<(), ApiError> {
        if self
            .pending
            .iter()
            .any(|p| p.change.capability() == capability)
        {
            return Err(ApiError::field(
                ErrorCode::Conflict,
                "capability_type",
                format!("a change to '{capability}' is being saved; try again"),
            ));
        }
        if self.pending.len() >= MAX_PENDING {
            return Err(ApiError::new(
                ErrorCode::Busy,
                format!("{MAX_PENDING} capability request changes are being saved; try again"),
            ));
        }
        Ok(())
    }

    /// The requests with every pending change applied: what the next write holds.
    fn document(&self) -> Value {
        let mut doc = self.requests.clone();
        for p in &self.pending {
            match &p.change {
                Change::Add(r) => doc.push(r.clone()),
                Change::Remove(c) => doc.retain(|r| &r.capability != c),
            }
        }
        serde_json::to_value(doc).unwrap_or(Value::Null)
    }

    fn write(&mut self, cx: &mut RoomCx<'_, Self>, change: Change, reply: ReplyTo) {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.pending.push(Pending { tag, change, reply });
        let me = ReplyTo::Room {
            room: Self::NAME,
            tag,
        };
        cx.persist(REQUESTS_FILE, self.document(), Some((me, Value::Null)));
    }
}

impl Room for Variety {
    type Timer = Timer;
    type Job = std::convert::Infallible;
    type Output = Effect;
    const NAME: &'static str = "variety";

    /// Takes the configuration (which arms the periodic analysis) and runs the first one.
    fn start(&mut self, cx: &mut RoomCx<'_, Self>, config: &Config) {
        self.apply_config(cx, config);
        self.analyse(cx, "start");
    }

    fn on_timer(&mut self, cx: &mut RoomCx<'_, Self>, _t: Timer) {
        self.timer = None;
        self.arm(cx);
        self.analyse(cx, "timer");
    }

    fn on_job(&mut self, _cx: &mut RoomCx<'_, Self>, done: Self::Job) {
        match done {}
    }

    /// The requirements, policy, interval and threshold; the analysis follows when the wiring
    /// hands over the catalogue after every configuration change.
    fn apply_config(&mut self, cx: &mut RoomCx<'_, Self>, config: &Config) {
        self.required = config.variety.required.clone();
        self.policy = Policy::new(config);
        self.cache.clear();
        self.ratio_min = config.monitoring.alert_thresholds.variety_ratio_min;
        self.alert_actions = config.monitoring.alert_actions.clone();
        let interval = Duration::from_millis(config.monitoring.variety_check_interval_ms);
        if interval != self.interval || self.timer.is_none() {
            self.interval = interval;
            self.arm(cx);
        }
    }

    /// Discovery's opportunities (the best candidates of its last run) are shown from the
    /// next analysis on.
    fn on_event(
        &mut self,
        _cx: &mut RoomCx<'_, Self>,
        _seq: u64,
        _channel: Channel,
        data: &EventData,
    ) {
        if let EventData::DiscoveryCompleted { opportunities, .. } = data {
            let found = opportunities.iter().map(|o| Opportunity {
                candidate: o.package.clone(),
                capabilities: o.capabilities.clone(),
                reason: format!("discovered (score {}, {})", o.score, o.sources.join(", ")),
            });
            self.set_opportunities(found.collect());
        }
    }

    /// The write of a request change came back.
    fn on_answer(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64, answer: Answer) {
        let Some(at) = self.pending.iter().position(|p| p.tag == tag) else {
            log::error!("variety: an acknowledgement of write {tag}, which is not waiting");
            return;
        };
        let Pending { change, reply, .. } = self.pending.remove(at);
        if let Err(e) = answer {
            cx.reply(reply, Err(e));
            // A later write may have carried the refused change: the disk follows memory.
            cx.persist(REQUESTS_FILE, self.document(), None);
            return;
        }
        match change {
            Change::Add(r) => {
                let capability = r.capability.clone();
                self.requests.push(r);
                self.analyse(cx, "request");
                let gap = self.gap_of(&capability);
                let answer = json!({
                    "capability": capability,
                    "recorded": true,
                    "provided": gap.is_none(),
                    "gap": gap,
                    "message": if gap.is_none() {
                        format!("'{capability}' is required now and already provided")
                    } else {
                        format!("'{capability}' is required now: a gap is open until a server provides it")
                    },
                });
                cx.reply(reply, Ok(answer));
            }
            Change::Remove(c) => {
                self.requests.retain(|r| r.capability != c);
                self.analyse(cx, "request");
                cx.reply(reply, Ok(json!({"capability": c, "removed": true})));
            }
        }
    }

    /// `vsm_variety_ratio`, `vsm_variety_gaps`, `vsm_variety_required_capabilities`,
    /// `vsm_variety_provided_capabilities`.
    fn metrics(&self, e: &mut crate::telemetry::Exposition) {
        let none: &[(&str, &str)] = &[];
        let Some(a) = &self.last else {
            return;
        };
        e.gauge(
            "vsm_variety_ratio",
            "Weight of the required capabilities with an active provider over the required weight (1 when nothing is required).",
            &[(none, a.variety_ratio)],
        );
        e.gauge(
            "vsm_variety_gaps",
            "Required capabilities without an active provider.",
            &[(none, a.gaps.len() as f64)],
        );
        e.gauge(
            "vsm_variety_required_capabilities",
            "Required capabilities ([variety] required and recorded requests).",
            &[(none, a.required_count as f64)],
        );
        e.gauge(
            "vsm_variety_provided_capabilities",
            "Required capabilities with an active provider.",
            &[(none, a.provided_count as f64)],
        );
    }
}

/// A server's facts: its capabilities under the rules, and its tools the policy blocks.
pub fn facts(view: &ServerView<'_>, policy: &Policy) -> ServerFacts {
    let tools = view.tools.iter().map(policy::tool_text);
    let capabilities = capability::map_compiled(view.capabilities, tools.clone(), &policy.compiled);
    let blocked_tools = tools
        .filter_map(|t: ToolText<'_>| {
            let refused = policy.tool_refused(t, view.allow_capabilities);
            (!refused.is_empty()).then(|| (t.name.to_string(), refused))
        })
        .collect();
    ServerFacts {
        id: view.id.to_string(),
        status: view.status,
        active: view.serves,
        breaker_open: view.breaker_open,
        capabilities,
        blocked_tools,
    }
}

/// A server's status or tools changed (or the configuration): analyse at once.
impl Follows for Variety {
    fn servers(&mut self, cx: &mut RoomCx<'_, Self>, servers: &[ServerView<'_>]) {
        let started = Instant::now();
        let mut cache = BTreeMap::new();
        let mut list = Vec::with_capacity(servers.len());
        for v in servers {
            let kept = self.cache.remove(v.id).filter(|c| {
                c.version == v.tools_version
                    && c.tool_count == v.tools.len()
                    && c.declared == v.capabilities
                    && c.allow == v.allow_capabilities
            });
            let mut facts = match kept {
                Some(c) => c.facts,
                None => facts(v, &self.policy),
            };
            facts.status = v.status;
            facts.active = v.serves;
            facts.breaker_open = v.breaker_open;
            list.push(facts.clone());
            cache.insert(
                v.id.to_string(),
                Cached {
                    version: v.tools_version,
                    tool_count: v.tools.len(),
                    declared: v.capabilities.to_vec(),
                    allow: v.allow_capabilities.to_vec(),
                    facts,
                },
            );
        }
        self.cache = cache;
        self.servers = list;
        record(&mut self.timings.catalogue, started);
        self.analyse(cx, "servers");
    }
}

impl Serve for Variety {
    type Request = VarietyRequest;

    fn handle(&mut self, cx: &mut RoomCx<'_, Self>, request: VarietyRequest, reply: ReplyTo) {
        let answer = match request {
            VarietyRequest::Analysis => Ok(self.analysis_json()),
            VarietyRequest::Recalculate {
                force,
                external_scan,
            } => {
                if force || !self.fresh() {
                    self.analyse(cx, "request");
                }
                let mut v = self.analysis_json();
                v["external_scan"] = if external_scan {
                    json!("not run: discovery is not available in this daemon yet")
                } else {
                    json!("not asked")
                };
                Ok(v)
            }
            VarietyRequest::Metrics => Ok(match &self.last {
                Some(a) => json!({
                    "variety_ratio": a.variety_ratio,
                    "threshold": self.ratio_min,
                    "required_weight": a.required_weight,
                    "provided_weight": a.provided_weight,
                    "required_count": a.required_count,
                    "provided_count": a.provided_count,
                    "gap_count": a.gaps.len(),
                    "threat_count": a.threats.len(),
                    "allowed_capabilities_score": a.allowed_capabilities.score,
                    "last_assessed": a.timestamp,
                    "analyses": self.analyses,
                    "trend": self.trend_json(),
                    "loop_time": {
                        "analysis": summary(&self.timings.analysis),
                        "catalogue": summary(&self.timings.catalogue),
                        "servers": self.servers.len(),
                        "server_capabilities": self.servers.iter().map(|s| s.capabilities.len()).sum::<usize>(),
                    },
                }),
                None => json!({"analyses": 0}),
            }),
            VarietyRequest::Capabilities => Ok(json!({
                "capabilities": self.last.as_ref().map(|a| &a.capabilities),
                "requests": self.requests,
                "rules": self.policy.rules.iter().map(|r| json!({"capability": r.capability, "keywords": r.keywords})).collect::<Vec<_>>(),
            })),
            VarietyRequest::Gaps => Ok(json!({
                "gaps": self.last.as_ref().map(|a| &a.gaps),
                "variety_ratio": self.last.as_ref().map(|a| a.variety_ratio),
            })),
            VarietyRequest::Acquire {
                capability,
                method,
                priority,
            } => match self.acquire(cx, capability, &method, &priority, reply) {
                Ok(()) => return,
                Err(e) => Err(e),
            },
            VarietyRequest::Remove { id } => match self.remove(cx, id, reply) {
                Ok(()) => return,
                Err(e) => Err(e),
            },
        };
        cx.reply(reply, answer);
    }
}

/// The seed's `variety` block of `GET /api/v1/status`.
#[derive(Debug, Serialize)]
pub struct Status<'a> {
    /// The last ratio.
    pub current_ratio: f64,
    /// Open gaps.
    pub gap_count: usize,
    /// When the last analysis ran.
    pub last_assessed: Option<&'a str>,
    /// `monitoring.alert_thresholds.variety_ratio_min`.
    pub threshold: f64,
}

impl crate::room::Report for Variety {
    type Status<'a> = Status<'a>;

    fn status<'a>(&'a self, _facts: &crate::snapshot::Facts<'a>) -> Status<'a> {
        Status {
            current_ratio: self.last.as_ref().map_or(1.0, |a| a.variety_ratio),
            gap_count: self.last.as_ref().map_or(0, |a| a.gaps.len()),
            last_assessed: self.last.as_ref().map(|a| a.timestamp.as_str()),
            threshold: self.ratio_min,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::testing::{enter, Inline};
    use serde_json::json;

    fn view<'a>(tools: &'a [Value], version: (u64, u64), serves: bool) -> ServerView<'a> {
        ServerView {
            id: "s",
            status: if serves { "active" } else { "stopped" },
            serves,
            breaker_open: false,
            capabilities: &[],
            allow_capabilities: &[],
            tools,
            tools_version: version,
            resources: &[],
            resource_templates: &[],
            prompts: &[],
        }
    }

    /// A hand-over maps a server again only when its tool list (version) changed; a status
    /// change alone reuses its mapping but shows the new status.
    #[test]
    fn hand_overs_map_a_server_again_only_when_its_tools_changed() {
        let mut config = Config::default();
        config.variety.required = vec![Required::named("time")];
        let mut room = Variety::new(&config, Vec::new());
        let mut wiring = Inline::new();
        let mut out = Vec::new();
        let time = [json!({"name": "get_current_time", "description": ""})];
        let memory = [json!({"name": "create_entities", "description": ""})];
        let ratio = |r: &Variety| r.last.as_ref().map(|a| a.variety_ratio);
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.servers(cx, &[view(&time, (1, 1), true)])
        });
        assert_eq!(ratio(&room), Some(1.0));
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.servers(cx, &[view(&time, (1, 1), false)])
        });
        assert_eq!(ratio(&room), Some(0.0), "the status is followed");
        assert_eq!(room.servers[0].status, "stopped");
        // Same version, other tools: the mapping is kept (the version names the list)...
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.servers(cx, &[view(&memory, (1, 1), true)])
        });
        assert!(room.servers[0].capabilities.contains_key("time"));
        // ...a new listing is mapped again.
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.servers(cx, &[view(&memory, (1, 2), true)])
        });
        assert!(room.servers[0].capabilities.contains_key("memory"));
        assert!(!room.servers[0].capabilities.contains_key("time"));
        assert_eq!(ratio(&room), Some(0.0));
        // Gone from the catalogue: forgotten.
        enter(&mut room, &mut wiring, &mut out, |r, cx| r.servers(cx, &[]));
        assert!(room.cache.is_empty() && room.servers.is_empty());
        // The gap on `time` opened twice (at the stop, and when the new listing dropped the
        // tool); the analyses in between and after said nothing more.
        let opened = out
            .iter()
            .filter(|e| matches!(e, Effect::Event(_, EventData::VarietyGapDetected { .. })))
            .count();
        assert_eq!(opened, 2, "{out:?}");
    }
}
