//! What a check reports: one reading of one rule, the only thing that crosses from the rooms
//! that measure (declared checks, performance, health, security) to the room that decides
//! (alerts). Checks report; one place decides whether that is an alert, when it clears and
//! which actions run.
//!
//! Invariants: `rule` is stable across cycles (it is the alert's identity, e.g.
//! `check:upstream`, `performance:memory_usage_percent`, `health:server:time`), and an
//! observation says whether the condition was bad in this cycle; counting cycles, hysteresis
//! and rate limits are the deciding room's business.

use serde::Serialize;

/// How bad a firing alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Info,
    /// Something degrades.
    Warning,
    /// Something is down or unsafe.
    Critical,
}

impl Severity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Which family a rule belongs to; it names the WS channel and the event types
/// (`performance_alert`, `health_alert`, `security_alert` and their `*_resolved`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Resource use, response times, error rates.
    Performance,
    /// Servers and declared checks.
    Health,
    /// Refused access, anomalies, sandbox violations.
    Security,
}

impl Family {
    /// The channel (and event prefix) of the family.
    pub fn channel(self) -> &'static str {
        match self {
            Family::Performance => "performance",
            Family::Health => "health",
            Family::Security => "security",
        }
    }
}

/// How many cycles a condition must hold before it raises, and how many good cycles clear it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Hysteresis {
    /// Consecutive bad cycles before the alert fires (at least 1).
    pub failures_before_alert: u32,
    /// Consecutive good cycles before a firing alert resolves (at least 1).
    pub successes_before_clear: u32,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Hysteresis {
            failures_before_alert: 2,
            successes_before_clear: 2,
        }
    }
}

/// One reading of one rule in one cycle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    /// The rule's stable identity (the alert's key).
    pub rule: String,
    /// Which family (channel) it belongs to.
    pub family: Family,
    /// What was measured, e.g. `memory_usage_percent`, `tcp_connect`, `http_status`.
    pub metric: String,
    /// The value read (a duration in ms, a percentage, 0/1 for up/down, ...).
    pub value: f64,
    /// The limit it was compared with, when there is one.
    pub threshold: Option<f64>,
    /// Whether the condition was bad in this cycle.
    pub bad: bool,
    /// Severity if it fires.
    pub severity: Severity,
    /// One line for people: what was seen (bounded by the reporter, at most 512 bytes).
    pub message: String,
    /// Actions to run when it fires or resolves (`log`, `restart_server:ID`, `webhook:NAME`,
    /// `exec:NAME`), as configured for the rule.
    pub actions: Vec<String>,
    /// The rule's raise/clear policy.
    pub hysteresis: Hysteresis,
}

/// An action the alerts room asks to be run because an alert fired or resolved: the second
/// seam, from the deciding room to the room that runs `webhook:NAME` and `exec:NAME` actions
/// (`log` and `restart_server:ID` are carried out by the alerts room's own wiring).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionRun {
    /// The action reference as configured, e.g. `webhook:ops` or `exec:notify`.
    pub action: String,
    /// `fired` or `resolved`.
    pub transition: &'static str,
    /// The alert's fields (`id`, `rule`, `severity`, `metric`, `current_value`, `threshold`,
    /// `trend`, `message`, ...), as strings: the webhook's JSON body and the exec's
    /// environment (`VSM_ALERT_<FIELD>`) are built from them.
    pub fields: Vec<(String, String)>,
}
