//! The five VSM systems (room `vsm`): each system's status, its counter, its recent activity
//! and its one action, all built from the events the other rooms publish
//! ([`Room::on_event`]) and carried out through the command layer ([`RoomCx::ask`]).
//!
//! What each system counts (the seed's counters in `GET /api/v1/status`):
//! - **S1 operations** (`operations_count`): tool calls that ended (`mcp_tool_call`), by
//!   outcome. Action `call`: one tool call.
//! - **S2 coordination** (`coordination_points`): damping acts: a server held back in
//!   `backoff`, a circuit breaker opened (`failed`), an alert whose actions the rate limit
//!   suppressed (the growth of an alert's `suppressed_notifications`), a start refused at
//!   `max_concurrent_servers` (`mcp_server_start_refused`). Action `reset_backoff`: start every
//!   server in backoff now.
//! - **S3 control** (`audit_cycles`): the built-in health and performance cycles
//!   (`monitoring_cycle_completed`). Action `audit`: both cycles, the health round and every
//!   declared check, now.
//! - **S4 intelligence** (`scans_completed`): variety analyses and discovery scans (the events
//!   in [`SCAN_EVENTS`]). Action `scan`: a forced variety analysis and a discovery run through
//!   the command layer, answered when both are back.
//! - **S5 policy** (`decisions_made`): acquisition verdicts and policy refusals (the events in
//!   [`DECISION_EVENTS`]). Action `decide`: the acquisition room re-evaluates the open gaps
//!   against policy (`variety.auto_acquire`, cooldowns) and takes them up when it may.
//!
//! Status (`active`, `degraded`, `failed`), from what the room has seen:
//! - S1: `failed` when servers are registered, some are in backoff or failed and none serves;
//!   `degraded` when some are in backoff or failed, or at least half of the last
//!   [`OUTCOME_WINDOW`] calls (four or more) did not end `ok`; else `active`.
//! - S2: `failed` when a circuit breaker is open (damping did not settle that server);
//!   `degraded` while a server is in backoff; else `active`.
//! - S3: `failed` when no cycle completed for three of the longest cycle intervals (the
//!   monitor is stopped or stuck); `degraded` past one and a half; else `active` (also before
//!   the first cycle is due).
//! - S4: `degraded` when no scan completed within three variety intervals (or ever); else
//!   `active`. Nothing it follows can fail it outright.
//! - S5: `degraded` when three or more of the last [`OUTCOME_WINDOW`] decisions failed and
//!   they are the majority; else `active`.
//!
//! Invariants: everything kept is bounded: [`RECENT`] activities per system, the server
//! statuses of registered servers (at most [`MAX_TRACKED`]), [`MAX_TRACKED`] alert rules'
//! suppression counts, [`MAX_PENDING`] actions waiting for answers.

pub mod ops;

use crate::api::{
    Answer, ApiError, ChecksRequest, DiscoveryRequest, ErrorCode, HealthRequest, McpRequest,
    ReplyTo, Request, VarietyRequest, VsmRequest,
};
use crate::config::Config;
use crate::events::{Channel, EventData};
use crate::room::{Effect, Report, Room, RoomCx, Serve};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

/// Activities kept per system.
pub const RECENT: usize = 32;
/// Recent outcomes a status looks at.
pub const OUTCOME_WINDOW: usize = 20;
/// Servers and alert rules followed at most.
pub const MAX_TRACKED: usize = 4096;
/// Actions waiting for other rooms' answers at most.
pub const MAX_PENDING: usize = 64;
/// Declared checks an `audit` runs at most.
const MAX_AUDIT_CHECKS: usize = 64;
/// Longest text an activity keeps.
const ACTIVITY_TEXT: usize = 200;

/// Event types that are System 4's scans: (type, what it counts as): the variety room's
/// analysis and the discovery room's completed run. Matched by type, typed or not.
pub const SCAN_EVENTS: &[(&str, &str)] = &[
    ("variety_updated", "variety_analysis"),
    ("discovery_completed", "discovery_scan"),
];

/// Event types that are System 5's decisions: (type, what it counts as, whether it is a
/// failure for the status). `tool_call_blocked` is the capability policy's refusal; the
/// acquisition events are the acquisition slice's names (not published in this build yet).
pub const DECISION_EVENTS: &[(&str, &str, bool)] = &[
    ("tool_call_blocked", "policy_refusal", false),
    ("capability_acquired", "acquisition_approved", false),
    ("capability_acquisition_failed", "acquisition_failed", true),
    ("acquisition_decision", "acquisition_verdict", false),
];

/// The five systems, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemId {
    /// S1.
    Operations = 0,
    /// S2.
    Coordination = 1,
    /// S3.
    Control = 2,
    /// S4.
    Intelligence = 3,
    /// S5.
    Policy = 4,
}

impl SystemId {
    /// All five.
    pub const ALL: [SystemId; 5] = [
        SystemId::Operations,
        SystemId::Coordination,
        SystemId::Control,
        SystemId::Intelligence,
        SystemId::Policy,
    ];

    /// `system1`…`system5`.
    pub fn id(self) -> &'static str {
        ["system1", "system2", "system3", "system4", "system5"][self as usize]
    }

    /// `operations`…`policy`.
    pub fn name(self) -> &'static str {
        [
            "operations",
            "coordination",
            "control",
            "intelligence",
            "policy",
        ][self as usize]
    }

    /// The seed's counter name.
    pub fn counter(self) -> &'static str {
        [
            "operations_count",
            "coordination_points",
            "audit_cycles",
            "scans_completed",
            "decisions_made",
        ][self as usize]
    }

    /// Its one action.
    pub fn action(self) -> &'static str {
        ["call", "reset_backoff", "audit", "scan", "decide"][self as usize]
    }

    /// By id or name.
    pub fn parse(s: &str) -> Option<SystemId> {
        SystemId::ALL
            .into_iter()
            .find(|x| x.id() == s || x.name() == s)
    }
}

/// One thing a system did or saw.
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    /// The event's sequence number (0 for the room's own actions).
    pub seq: u64,
    /// When (RFC 3339 in its JSON form; formatted when shown, not on every call).
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
    /// What kind (an outcome, a damping act, a cycle, ...).
    pub kind: &'static str,
    /// For people (at most [`ACTIVITY_TEXT`] bytes and an ellipsis in its JSON form).
    pub detail: Detail,
}

/// An [`Activity`]'s text, kept as given or, for a tool call (one per call: the common
/// case), as its parts, formatted only when the activity is shown.
#[derive(Debug, Clone)]
pub enum Detail {
    /// The text, bounded.
    Text(String),
    /// `{server}/{tool}: {outcome} in {latency_ms:.1} ms`. `server` and `tool` keep only as
    /// much as the bounded text can show ([`keep`]).
    Call {
        /// The server.
        server: String,
        /// The tool.
        tool: String,
        /// How it ended.
        outcome: &'static str,
        /// How long it took.
        latency_ms: f64,
    },
}

impl Serialize for Detail {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Detail::Text(text) => s.serialize_str(text),
            Detail::Call {
                server,
                tool,
                outcome,
                latency_ms,
            } => {
                let mut text = format!("{server}/{tool}: {outcome} in {latency_ms:.1} ms");
                bound(&mut text);
                s.serialize_str(&text)
            }
        }
    }
}

/// Cuts `text` to [`ACTIVITY_TEXT`] bytes (at a character boundary) and marks the cut.
fn bound(text: &mut String) {
    if text.len() > ACTIVITY_TEXT {
        text.truncate(crate::text::floor_boundary(text, ACTIVITY_TEXT));
        text.push('…');
    }
}

/// Copies into `to` (reusing its buffer) the start of `from` that decides what [`bound`]
/// keeps of a text beginning with it: all of it up to [`ACTIVITY_TEXT`] bytes, else up to
/// the first character boundary past that (so the text is still too long, and cut at the
/// same place).
fn keep(to: &mut String, from: &str) {
    let mut end = from.len();
    if end > ACTIVITY_TEXT {
        end = ACTIVITY_TEXT + 1;
        while !from.is_char_boundary(end) {
            end += 1;
        }
    }
    to.clear();
    to.push_str(&from[..end]);
}

/// An [`Activity`]'s time as RFC 3339 UTC with milliseconds.
fn rfc3339<S: serde::Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::state::rfc3339_utc_millis(*at))
}

/// One system's record.
#[derive(Debug, Default)]
struct System {
    total: u64,
    by_kind: BTreeMap<&'static str, u64>,
    recent: VecDeque<Activity>,
    last_at: Option<Instant>,
    /// Recent outcomes, true = good (S1 calls, S5 decisions).
    outcomes: VecDeque<bool>,
}

impl System {
    fn count(&mut self, seq: u64, kind: &'static str, detail: String, n: u64) {
        self.total += n;
        *self.by_kind.entry(kind).or_default() += n;
        self.last_at = Some(Instant::now());
        self.note(seq, kind, detail);
    }

    fn note(&mut self, seq: u64, kind: &'static str, mut detail: String) {
        bound(&mut detail);
        self.evict();
        self.recent.push_back(Activity {
            seq,
            at: SystemTime::now(),
            kind,
            detail: Detail::Text(detail),
        });
    }

    /// Counts a tool call that ended. Its text is formatted when shown; the buffers of the
    /// call the ring lets go are reused, so a call allocates nothing once the ring is full.
    fn call(&mut self, seq: u64, server_id: &str, tool_name: &str, outcome: &'static str, ms: f64) {
        self.total += 1;
        *self.by_kind.entry(outcome).or_default() += 1;
        self.last_at = Some(Instant::now());
        let (mut server, mut tool) = match self.evict().map(|a| a.detail) {
            Some(Detail::Call { server, tool, .. }) => (server, tool),
            _ => (String::new(), String::new()),
        };
        keep(&mut server, server_id);
        keep(&mut tool, tool_name);
        self.recent.push_back(Activity {
            seq,
            at: SystemTime::now(),
            kind: outcome,
            detail: Detail::Call {
                server,
                tool,
                outcome,
                latency_ms: ms,
            },
        });
        self.outcome(outcome == "ok");
    }

    /// Makes room for one more activity: the oldest goes when the ring is full.
    fn evict(&mut self) -> Option<Activity> {
        if self.recent.len() >= RECENT {
            self.recent.pop_front()
        } else {
            None
        }
    }

    fn outcome(&mut self, good: bool) {
        if self.outcomes.len() >= OUTCOME_WINDOW {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back(good);
    }

    fn bad_share(&self) -> (usize, usize) {
        let bad = self.outcomes.iter().filter(|g| !**g).count();
        (bad, self.outcomes.len())
    }
}

/// What a tag asked for.
#[derive(Debug)]
enum Asked {
    /// An S1 call: its answer is the action's.
    Call(ReplyTo),
    /// A part of a gathered action.
    Part { group: u64, label: String },
    /// The checks list of an audit: each check is then run.
    ChecksList { group: u64 },
}

/// An action made of several requests, answered when all are back.
#[derive(Debug)]
struct Gather {
    reply: ReplyTo,
    system: SystemId,
    waiting: usize,
    parts: serde_json::Map<String, Value>,
}

/// The VSM room.
#[derive(Debug)]
pub struct Vsm {
    systems: [System; 5],
    /// Registered servers' last status.
    servers: BTreeMap<String, &'static str>,
    /// Alert rule → the suppressed count last seen.
    suppressed: HashMap<String, u64>,
    asked: HashMap<u64, Asked>,
    gathers: HashMap<u64, Gather>,
    next_tag: u64,
    started: Instant,
    /// Longest built-in cycle interval.
    audit_every: Duration,
    /// Variety analysis interval.
    scan_every: Duration,
}

impl Default for Vsm {
    fn default() -> Self {
        Vsm::new(Instant::now())
    }
}

/// The `vsm_systems` block of `GET /api/v1/status`: the seed's shape, one key per system.
#[derive(Debug, Serialize)]
pub struct SystemsStatus {
    system1: Brief<'static>,
    system2: Brief<'static>,
    system3: Brief<'static>,
    system4: Brief<'static>,
    system5: Brief<'static>,
}

/// One system in the status block: `{"status", "<counter>": n}`.
#[derive(Debug)]
struct Brief<'a> {
    status: &'a str,
    counter: &'a str,
    value: u64,
}

impl Serialize for Brief<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        // Keys in sorted order, as the whole status answer has them (every counter's name
        // sorts before `status`).
        map.serialize_entry(self.counter, &self.value)?;
        map.serialize_entry("status", self.status)?;
        map.end()
    }
}

impl Vsm {
    /// A room that started at `started`, with the default intervals.
    pub fn new(started: Instant) -> Vsm {
        Vsm {
            systems: Default::default(),
            servers: BTreeMap::new(),
            suppressed: HashMap::new(),
            asked: HashMap::new(),
            gathers: HashMap::new(),
            next_tag: 1,
            started,
            audit_every: Duration::from_secs(30),
            scan_every: Duration::from_secs(60),
        }
    }

    /// A room starting now under `config`'s intervals.
    pub fn configured(config: &Config) -> Vsm {
        let mut v = Vsm::new(Instant::now());
        v.intervals(config);
        v
    }

    fn intervals(&mut self, config: &Config) {
        let m = &config.monitoring;
        let audit = m
            .health_check_interval_ms
            .max(m.performance_check_interval_ms);
        self.audit_every = Duration::from_millis(audit);
        self.scan_every = Duration::from_millis(m.variety_check_interval_ms);
    }

    fn sys(&mut self, id: SystemId) -> &mut System {
        &mut self.systems[id as usize]
    }

    /// A system's counter.
    pub fn count(&self, id: SystemId) -> u64 {
        self.systems[id as usize].total
    }

    /// A system's status and why.
    pub fn status(&self, id: SystemId, now: Instant) -> (&'static str, String) {
        let s = &self.systems[id as usize];
        let in_state = |st: &str| -> Vec<&str> {
            self.servers
                .iter()
                .filter(|(_, v)| **v == st)
                .map(|(k, _)| k.as_str())
                .collect()
        };
        match id {
            SystemId::Operations => {
                let serving = self
                    .servers
                    .values()
                    .filter(|v| matches!(**v, "active" | "degraded"))
                    .count();
                let mut troubled = in_state("backoff");
                troubled.extend(in_state("failed"));
                let (bad, n) = s.bad_share();
                if !troubled.is_empty() && serving == 0 {
                    (
                        "failed",
                        format!("no server serves; in backoff or failed: {troubled:?}"),
                    )
                } else if !troubled.is_empty() {
                    ("degraded", format!("in backoff or failed: {troubled:?}"))
                } else if n >= 4 && bad * 2 >= n {
                    (
                        "degraded",
                        format!("{bad} of the last {n} tool calls did not end ok"),
                    )
                } else {
                    ("active", format!("{serving} server(s) serving"))
                }
            }
            SystemId::Coordination => {
                let failed = in_state("failed");
                let backoff = in_state("backoff");
                if !failed.is_empty() {
                    ("failed", format!("circuit breaker open: {failed:?}"))
                } else if !backoff.is_empty() {
                    ("degraded", format!("in backoff: {backoff:?}"))
                } else {
                    ("active", "no server held back".into())
                }
            }
            SystemId::Control => {
                let every = self.audit_every;
                let since = s.last_at.unwrap_or(self.started);
                let age = now.saturating_duration_since(since);
                if age > every * 3 {
                    let what = if s.last_at.is_some() { "last" } else { "no" };
                    (
                        "failed",
                        format!(
                            "{what} audit cycle {} s ago, every {} s expected",
                            age.as_secs(),
                            every.as_secs()
                        ),
                    )
                } else if age > every * 3 / 2 {
                    (
                        "degraded",
                        format!("last audit cycle {} s ago", age.as_secs()),
                    )
                } else {
                    (
                        "active",
                        format!("audit cycles every {} s", every.as_secs()),
                    )
                }
            }
            SystemId::Intelligence => match s.last_at {
                None => (
                    "degraded",
                    "no variety analysis or discovery scan has completed yet".into(),
                ),
                Some(t) if now.saturating_duration_since(t) > self.scan_every * 3 => (
                    "degraded",
                    format!(
                        "last scan {} s ago",
                        now.saturating_duration_since(t).as_secs()
                    ),
                ),
                Some(_) => ("active", "scans are current".into()),
            },
            SystemId::Policy => {
                let (bad, n) = s.bad_share();
                if bad >= 3 && bad * 2 > n {
                    (
                        "degraded",
                        format!("{bad} of the last {n} decisions failed"),
                    )
                } else {
                    ("active", format!("{} decision(s) recorded", s.total))
                }
            }
        }
    }

    /// One system in full.
    pub fn show(&self, id: SystemId, now: Instant) -> Value {
        let s = &self.systems[id as usize];
        let (status, reason) = self.status(id, now);
        json!({
            "id": id.id(),
            "name": id.name(),
            "status": status,
            "reason": reason,
            id.counter(): s.total,
            "by_kind": s.by_kind,
            "action": id.action(),
            "recent_activity": s.recent,
        })
    }

    /// Every system.
    pub fn list(&self, now: Instant) -> Value {
        let systems: Vec<Value> = SystemId::ALL.iter().map(|&i| self.show(i, now)).collect();
        json!({ "systems": systems })
    }

    /// The `vsm_systems` block of `GET /api/v1/status`.
    pub fn status_block(&self) -> SystemsStatus {
        let now = Instant::now();
        let brief = |id: SystemId| Brief {
            status: self.status(id, now).0,
            counter: id.counter(),
            value: self.count(id),
        };
        SystemsStatus {
            system1: brief(SystemId::Operations),
            system2: brief(SystemId::Coordination),
            system3: brief(SystemId::Control),
            system4: brief(SystemId::Intelligence),
            system5: brief(SystemId::Policy),
        }
    }

    /// Follows one event (the room's whole input besides its requests).
    pub fn follow(&mut self, seq: u64, data: &EventData) {
        match data {
            EventData::McpToolCall {
                server_id,
                tool,
                outcome,
                latency_ms,
            } => {
                self.sys(SystemId::Operations)
                    .call(seq, server_id, tool, outcome, *latency_ms);
            }
            EventData::McpServerRegistered { server_id, .. }
                if self.servers.len() < MAX_TRACKED =>
            {
                self.servers.insert(server_id.clone(), "registered");
            }
            EventData::McpServerUnregistered { server_id } => {
                self.servers.remove(server_id);
            }
            EventData::McpServerStatusChange {
                server_id,
                old_status,
                new_status,
                reason,
                ..
            } => {
                if let Some(s) = self.servers.get_mut(server_id) {
                    *s = new_status;
                } else if self.servers.len() < MAX_TRACKED {
                    self.servers.insert(server_id.clone(), new_status);
                }
                let kind = match *new_status {
                    "backoff" if *old_status != "backoff" => "backoff",
                    "failed" if *old_status != "failed" => "circuit_open",
                    _ => return,
                };
                let detail = format!("{server_id}: {reason}");
                self.sys(SystemId::Coordination).count(seq, kind, detail, 1);
            }
            EventData::McpServerStartRefused { server_id, reason } => {
                let detail = format!("{server_id}: {reason}");
                self.sys(SystemId::Coordination)
                    .count(seq, "start_refused", detail, 1);
            }
            EventData::MonitoringCycleCompleted {
                cycle,
                readings,
                took_ms,
            } => {
                let detail = format!("{cycle} cycle: {readings} readings in {took_ms:.2} ms");
                self.sys(SystemId::Control).count(seq, cycle, detail, 1);
            }
            EventData::Other { kind, data }
                if kind.ends_with("_alert") || kind.ends_with("_alert_resolved") =>
            {
                self.follow_alert(seq, data)
            }
            other => self.follow_kind(seq, other),
        }
    }

    /// Scans and decisions, by event type (typed or not).
    fn follow_kind(&mut self, seq: u64, data: &EventData) {
        let kind = data.kind();
        if let Some((_, what)) = SCAN_EVENTS.iter().find(|(k, _)| *k == kind) {
            self.sys(SystemId::Intelligence)
                .count(seq, what, kind.to_string(), 1);
            return;
        }
        if let Some((_, what, failure)) = DECISION_EVENTS.iter().find(|(k, ..)| *k == kind) {
            // Rare events: their fields are read from the wire form.
            let data = serde_json::to_value(data).unwrap_or(Value::Null);
            let subject = ["capability", "capability_type", "package", "server_id"]
                .iter()
                .find_map(|k| data[*k].as_str())
                .unwrap_or("");
            let s = self.sys(SystemId::Policy);
            s.count(seq, what, format!("{kind} {subject}"), 1);
            s.outcome(!failure);
        }
    }

    fn follow_alert(&mut self, seq: u64, data: &Value) {
        {
            let (Some(rule), Some(now)) = (
                data["rule"].as_str(),
                data["suppressed_notifications"].as_u64(),
            ) else {
                return;
            };
            let before = match self.suppressed.get_mut(rule) {
                Some(b) => std::mem::replace(b, now),
                None => {
                    if self.suppressed.len() >= MAX_TRACKED {
                        self.suppressed.clear();
                    }
                    self.suppressed.insert(rule.to_string(), now);
                    0
                }
            };
            if now > before {
                let detail = format!("{rule}: {} alert action(s) rate-limited", now - before);
                self.sys(SystemId::Coordination).count(
                    seq,
                    "alert_suppressed",
                    detail,
                    now - before,
                );
            }
        }
    }

    fn tag(&mut self) -> u64 {
        let t = self.next_tag;
        self.next_tag += 1;
        t
    }

    fn ask(&mut self, cx: &mut RoomCx<'_, Self>, asked: Asked, request: Request) {
        let tag = self.tag();
        self.asked.insert(tag, asked);
        cx.ask(tag, request);
    }

    fn gather(&mut self, reply: ReplyTo, system: SystemId) -> u64 {
        let group = self.tag();
        self.gathers.insert(
            group,
            Gather {
                reply,
                system,
                waiting: 0,
                parts: serde_json::Map::new(),
            },
        );
        group
    }

    fn ask_part(&mut self, cx: &mut RoomCx<'_, Self>, group: u64, label: String, request: Request) {
        if let Some(g) = self.gathers.get_mut(&group) {
            g.waiting += 1;
        }
        self.ask(cx, Asked::Part { group, label }, request);
    }

    /// A part came back: kept; the whole is answered once nothing is waiting.
    fn part_done(&mut self, cx: &mut RoomCx<'_, Self>, group: u64, label: String, part: Value) {
        let Some(g) = self.gathers.get_mut(&group) else {
            return;
        };
        g.parts.insert(label, part);
        g.waiting = g.waiting.saturating_sub(1);
        if g.waiting == 0 {
            self.finish(cx, group);
        }
    }

    fn finish(&mut self, cx: &mut RoomCx<'_, Self>, group: u64) {
        let Some(g) = self.gathers.remove(&group) else {
            return;
        };
        let action = g.system.action();
        let detail = format!("{action}: {} part(s)", g.parts.len());
        self.sys(g.system).note(0, "action", detail);
        cx.reply(
            g.reply,
            Ok(json!({"system": g.system.id(), "action": action, "results": g.parts})),
        );
    }

    fn act(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        id: SystemId,
        action: &str,
        parameters: Value,
        reply: ReplyTo,
    ) -> Result<(), ApiError> {
        if action != id.action() {
            return Err(ApiError::field(
                ErrorCode::InvalidParameter,
                "action",
                format!(
                    "{} ({}) has one action, '{}', not '{action}'",
                    id.id(),
                    id.name(),
                    id.action()
                ),
            ));
        }
        if self.asked.len() + self.gathers.len() >= MAX_PENDING {
            return Err(ApiError::new(
                ErrorCode::Busy,
                "too many VSM actions waiting; try again",
            ));
        }
        match id {
            SystemId::Operations => {
                let text = |k: &str| -> Result<String, ApiError> {
                    parameters[k].as_str().map(String::from).ok_or_else(|| {
                        ApiError::field(
                            ErrorCode::InvalidParameter,
                            format!("parameters.{k}"),
                            "required: a string",
                        )
                    })
                };
                let (server, tool) = (text("server")?, text("tool")?);
                use crate::mcp::jsonrpc::Arguments;
                let arguments = match &parameters["arguments"] {
                    Value::Null => Some(Arguments::empty()),
                    a => Arguments::from_value(a),
                };
                let Some(arguments) = arguments else {
                    return Err(ApiError::field(
                        ErrorCode::InvalidParameter,
                        "parameters.arguments",
                        "must be an object",
                    ));
                };
                let timeout_ms = match &parameters["timeout_ms"] {
                    Value::Null => None,
                    v => Some(v.as_u64().ok_or_else(|| {
                        ApiError::field(
                            ErrorCode::InvalidParameter,
                            "parameters.timeout_ms",
                            "must be a non-negative integer",
                        )
                    })?),
                };
                let request = Request::Mcp(McpRequest::Call {
                    id: server,
                    name: tool,
                    arguments,
                    timeout_ms,
                    progress_token: None,
                    input: None,
                });
                self.ask(cx, Asked::Call(reply), request);
            }
            SystemId::Coordination => {
                let held: Vec<String> = self
                    .servers
                    .iter()
                    .filter(|(_, s)| **s == "backoff")
                    .map(|(k, _)| k.clone())
                    .collect();
                let group = self.gather(reply, id);
                for server in held {
                    let request = Request::Mcp(McpRequest::Start { id: server.clone() });
                    self.ask_part(cx, group, server, request);
                }
                if self.gathers.get(&group).is_some_and(|g| g.waiting == 0) {
                    self.finish(cx, group);
                }
            }
            SystemId::Control => {
                let group = self.gather(reply, id);
                let cycles = Request::Alerts(crate::api::AlertsRequest::RunCycles);
                self.ask_part(cx, group, "cycles".into(), cycles);
                let health = Request::Health(HealthRequest { component: None });
                self.ask_part(cx, group, "health".into(), health);
                if let Some(g) = self.gathers.get_mut(&group) {
                    g.waiting += 1;
                }
                self.ask(
                    cx,
                    Asked::ChecksList { group },
                    Request::Checks(ChecksRequest::List),
                );
            }
            SystemId::Intelligence => {
                let query = match &parameters["query"] {
                    Value::Null => String::new(),
                    Value::String(q) => q.clone(),
                    _ => {
                        return Err(ApiError::field(
                            ErrorCode::InvalidParameter,
                            "parameters.query",
                            "must be a string",
                        ))
                    }
                };
                let discovery = parameters["discovery"].as_bool().unwrap_or(true);
                let group = self.gather(reply, id);
                let variety = Request::Variety(VarietyRequest::Recalculate {
                    force: true,
                    external_scan: false,
                });
                self.ask_part(cx, group, "variety".into(), variety);
                if discovery {
                    let discover = Request::Discovery(DiscoveryRequest::Discover {
                        source: None,
                        query,
                    });
                    self.ask_part(cx, group, "discovery".into(), discover);
                }
            }
            SystemId::Policy => {
                // Re-evaluate the open gaps against policy (auto_acquire, cooldowns) now.
                let group = self.gather(reply, id);
                let decide = Request::Acquire(crate::api::AcquireRequest::Decide);
                self.ask_part(cx, group, "acquisition".into(), decide);
            }
        }
        Ok(())
    }
}

/// An answer as a part of a gathered action: its data, or its error's code and message.
fn part(answer: Answer) -> Value {
    match answer {
        Ok(v) => json!({"ok": true, "data": v}),
        Err(e) => {
            json!({"ok": false, "code": e.code.as_str(), "message": e.message, "data": e.data})
        }
    }
}

impl Room for Vsm {
    type Timer = ();
    type Job = ();
    type Output = Effect;
    const NAME: &'static str = "vsm";

    fn on_timer(&mut self, _cx: &mut RoomCx<'_, Self>, _timer: ()) {}
    fn on_job(&mut self, _cx: &mut RoomCx<'_, Self>, _done: ()) {}

    fn apply_config(&mut self, _cx: &mut RoomCx<'_, Self>, config: &Config) {
        let m = &config.monitoring;
        let audit = m
            .health_check_interval_ms
            .max(m.performance_check_interval_ms);
        self.audit_every = Duration::from_millis(audit);
        self.scan_every = Duration::from_millis(m.variety_check_interval_ms);
    }

    fn on_event(
        &mut self,
        _cx: &mut RoomCx<'_, Self>,
        seq: u64,
        _channel: Channel,
        data: &EventData,
    ) {
        self.follow(seq, data);
    }

    fn on_answer(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64, answer: Answer) {
        match self.asked.remove(&tag) {
            Some(Asked::Call(reply)) => {
                self.sys(SystemId::Operations)
                    .note(0, "action", "call".into());
                cx.reply(reply, answer);
            }
            Some(Asked::Part { group, label }) => self.part_done(cx, group, label, part(answer)),
            Some(Asked::ChecksList { group }) => {
                let names: Vec<String> = answer
                    .as_ref()
                    .ok()
                    .and_then(|v| v["checks"].as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["name"].as_str().map(String::from))
                    .take(MAX_AUDIT_CHECKS)
                    .collect();
                for name in names {
                    let request = Request::Checks(ChecksRequest::Run { name: name.clone() });
                    self.ask_part(cx, group, format!("check:{name}"), request);
                }
                let listed = match answer {
                    Ok(_) => json!({"ok": true}),
                    e => part(e),
                };
                self.part_done(cx, group, "checks".into(), listed);
            }
            None => log::warn!("vsm: an answer for tag {tag}, which it did not ask"),
        }
    }

    fn metrics(&self, out: &mut crate::telemetry::Exposition) {
        let now = Instant::now();
        let mut totals = Vec::new();
        let mut up = Vec::new();
        let labels: Vec<[(&str, &str); 2]> = SystemId::ALL
            .iter()
            .map(|i| [("system", i.id()), ("name", i.name())])
            .collect();
        for (i, id) in SystemId::ALL.iter().enumerate() {
            totals.push((&labels[i][..], self.count(*id) as f64));
            let status = self.status(*id, now).0;
            let v = match status {
                "active" => 2.0,
                "degraded" => 1.0,
                _ => 0.0,
            };
            up.push((&labels[i][..], v));
        }
        out.counter(
            "vsm_system_events_total",
            "What each VSM system counted (S1 tool calls, S2 damping acts, S3 audit cycles, S4 scans, S5 decisions)",
            &totals,
        );
        out.gauge(
            "vsm_system_status",
            "Each VSM system's status: 2 active, 1 degraded, 0 failed",
            &up,
        );
    }
}

impl Report for Vsm {
    type Status<'a> = SystemsStatus;

    fn status<'a>(&'a self, _facts: &crate::snapshot::Facts<'a>) -> SystemsStatus {
        self.status_block()
    }
}

impl Serve for Vsm {
    type Request = VsmRequest;

    fn handle(&mut self, cx: &mut RoomCx<'_, Self>, request: VsmRequest, reply: ReplyTo) {
        let now = Instant::now();
        let find = |id: &str| {
            SystemId::parse(id).ok_or_else(|| {
                ApiError::field(
                    ErrorCode::SystemNotFound,
                    "id",
                    format!("no VSM system '{id}': use system1…system5 or operations, coordination, control, intelligence, policy"),
                )
            })
        };
        let answer = match request {
            VsmRequest::List => Ok(self.list(now)),
            VsmRequest::Show { id } => find(&id).map(|i| self.show(i, now)),
            VsmRequest::Action {
                id,
                action,
                parameters,
            } => match find(&id).and_then(|i| self.act(cx, i, &action, parameters, reply)) {
                Ok(()) => return,
                Err(e) => Err(e),
            },
        };
        cx.reply(reply, answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_change(id: &str, old: &'static str, new: &'static str) -> EventData {
        EventData::McpServerStatusChange {
            server_id: id.into(),
            old_status: old,
            new_status: new,
            reason: "r".into(),
            capabilities: vec![],
        }
    }

    fn call(outcome: &'static str) -> EventData {
        EventData::McpToolCall {
            server_id: "s".into(),
            tool: "t".into(),
            outcome,
            latency_ms: 1.0,
        }
    }

    #[test]
    fn counters_follow_their_events() {
        let mut v = Vsm::default();
        v.follow(1, &call("ok"));
        v.follow(2, &call("timeout"));
        v.follow(3, &status_change("a", "active", "backoff"));
        v.follow(4, &status_change("a", "backoff", "backoff"));
        v.follow(5, &status_change("a", "backoff", "failed"));
        let alert = |n: u64| EventData::Other {
            kind: "performance_alert",
            data: json!({"rule": "r1", "suppressed_notifications": n}),
        };
        v.follow(6, &alert(0));
        v.follow(7, &alert(3));
        v.follow(8, &alert(3));
        v.follow(
            9,
            &EventData::MonitoringCycleCompleted {
                cycle: "health",
                readings: 2,
                took_ms: 0.1,
            },
        );
        v.follow(
            10,
            &EventData::Other {
                kind: "variety_updated",
                data: json!({}),
            },
        );
        v.follow(
            11,
            &EventData::Other {
                kind: "capability_acquisition_failed",
                data: json!({"capability": "x"}),
            },
        );
        v.follow(
            12,
            &EventData::Other {
                kind: "unrelated",
                data: json!({}),
            },
        );
        assert_eq!(v.count(SystemId::Operations), 2);
        // backoff once, circuit open once, 3 suppressed actions.
        assert_eq!(v.count(SystemId::Coordination), 5);
        assert_eq!(v.count(SystemId::Control), 1);
        assert_eq!(v.count(SystemId::Intelligence), 1);
        assert_eq!(v.count(SystemId::Policy), 1);
        let now = Instant::now();
        assert_eq!(v.status(SystemId::Coordination, now).0, "failed");
        assert_eq!(v.status(SystemId::Operations, now).0, "failed");
        v.follow(13, &status_change("a", "failed", "active"));
        assert_eq!(v.status(SystemId::Coordination, now).0, "active");
        assert_eq!(v.status(SystemId::Operations, now).0, "active");
        let shown = v.show(SystemId::Coordination, now);
        assert_eq!(shown["coordination_points"], 5);
        assert_eq!(shown["by_kind"]["alert_suppressed"], 3);
        assert_eq!(shown["recent_activity"].as_array().map(Vec::len), Some(3));
        // The time is kept as a SystemTime and shown as RFC 3339 UTC with milliseconds.
        let at = shown["recent_activity"][0]["at"].as_str().unwrap_or("");
        assert!(
            at.len() == 24 && at.as_bytes()[10] == b'T' && at.ends_with('Z'),
            "{at}"
        );
    }

    #[test]
    fn the_status_block_has_the_seeds_shape() {
        let v = Vsm::default();
        let block = serde_json::to_value(v.status_block()).expect("json");
        assert_eq!(
            block["system1"],
            json!({"status": "active", "operations_count": 0})
        );
        assert_eq!(
            block["system5"],
            json!({"status": "active", "decisions_made": 0})
        );
        assert_eq!(block["system4"]["status"], "degraded");
        assert_eq!(block.as_object().map(|m| m.len()), Some(5));
    }

    #[test]
    fn control_fails_when_no_cycle_comes() {
        let start = Instant::now();
        let mut v = Vsm::new(start);
        v.audit_every = Duration::from_secs(10);
        assert_eq!(
            v.status(SystemId::Control, start + Duration::from_secs(5))
                .0,
            "active"
        );
        assert_eq!(
            v.status(SystemId::Control, start + Duration::from_secs(20))
                .0,
            "degraded"
        );
        assert_eq!(
            v.status(SystemId::Control, start + Duration::from_secs(31))
                .0,
            "failed"
        );
    }

    #[test]
    fn recent_activity_is_bounded() {
        let mut v = Vsm::default();
        for i in 0..(RECENT as u64 * 3) {
            v.follow(i, &call("ok"));
        }
        assert_eq!(v.systems[0].recent.len(), RECENT);
        assert_eq!(
            v.systems[0].recent.back().map(|a| a.seq),
            Some(RECENT as u64 * 3 - 1)
        );
    }

    /// A call's activity, formatted when shown from the parts it keeps (in buffers reused
    /// around the ring), reads as the text formatted and cut at once did.
    #[test]
    fn a_calls_activity_reads_as_the_text_it_replaced() {
        let old = |server: &str, tool: &str, outcome: &str, ms: f64| {
            let mut detail = format!("{server}/{tool}: {outcome} in {ms:.1} ms");
            if detail.len() > ACTIVITY_TEXT {
                let mut cut = ACTIVITY_TEXT;
                while !detail.is_char_boundary(cut) {
                    cut -= 1;
                }
                detail.truncate(cut);
                detail.push('…');
            }
            detail
        };
        let mut names: Vec<String> = vec!["s".into(), String::new(), "é".repeat(150)];
        for n in [
            ACTIVITY_TEXT - 20,
            ACTIVITY_TEXT - 2,
            ACTIVITY_TEXT,
            ACTIVITY_TEXT + 3,
        ] {
            for pad in ["", "é", "€", "😀"] {
                names.push(format!("{}{pad}{}", "a".repeat(n), "😀".repeat(3)));
            }
        }
        let mut v = Vsm::default();
        let mut seq = 0;
        for server in &names {
            for tool in &names {
                for (outcome, ms) in [("ok", 0.04), ("timeout", 12345.678)] {
                    seq += 1;
                    let call = EventData::McpToolCall {
                        server_id: server.clone(),
                        tool: tool.clone(),
                        outcome,
                        latency_ms: ms,
                    };
                    v.follow(seq, &call);
                    let a = v.systems[0].recent.back().expect("noted");
                    let shown = serde_json::to_value(a).expect("json");
                    assert_eq!(shown["detail"], old(server, tool, outcome, ms));
                    assert_eq!(shown["kind"], outcome);
                    assert_eq!(shown["seq"], seq);
                    if let Detail::Call { server, tool, .. } = &a.detail {
                        assert!(
                            server.len() <= ACTIVITY_TEXT + 4 && tool.len() <= ACTIVITY_TEXT + 4
                        );
                    }
                }
            }
        }
        assert_eq!(v.count(SystemId::Operations), seq);
        assert_eq!(v.systems[0].recent.len(), RECENT);
    }

    #[test]
    fn ids_and_names_parse() {
        for id in SystemId::ALL {
            assert_eq!(SystemId::parse(id.id()), Some(id));
            assert_eq!(SystemId::parse(id.name()), Some(id));
        }
        assert_eq!(SystemId::parse("system6"), None);
    }
}
