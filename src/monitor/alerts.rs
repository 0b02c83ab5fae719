//! The alert engine: the one place that decides whether readings are an alert, when it
//! clears, and which actions run. Pure (no I/O, no clock of its own: the caller passes the
//! time), so every policy here is tested from tables of readings.
//!
//! Policy, per rule (an [`Observation`]'s `rule`):
//! - **Raise** after `failures_before_alert` consecutive bad cycles.
//! - **Clear** a firing alert after `successes_before_clear` consecutive good cycles, or at
//!   once when the value is on the good side of the threshold by more than the hysteresis
//!   margin, [`MARGIN`] (5 %) of the threshold. A value oscillating around its threshold
//!   raises once and stays firing until it settles.
//! - **Trend** of a record: the least-squares slope of the rule's last [`VALUES_PER_RULE`]
//!   values (per cycle); `stable` when the slope moves less than 1 % of the values' scale per
//!   cycle, else `rising` or `falling`.
//! - **Rate limit**: the actions of at most [`NOTIFY_BURST`] raises per rule run within
//!   [`NOTIFY_WINDOW`]; a raise past that is recorded (and published) but its actions are
//!   suppressed (counted in the record), and so are the actions of its resolution.
//!
//! Bounds: at most [`MAX_RULES`] rules are tracked (a new rule beyond that evicts the least
//! recently observed rule that is not firing, or is dropped); at most [`MAX_ALERTS`] records
//! are kept, resolved ones dropped oldest-first (firing records never exceed the rule bound).

use super::observation::{Family, Observation, Severity};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

/// Hysteresis margin: a firing alert clears at once when the value is this fraction of the
/// threshold on the good side of it.
pub const MARGIN: f64 = 0.05;
/// Values kept per rule for the trend.
pub const VALUES_PER_RULE: usize = 16;
/// Rules tracked at once.
pub const MAX_RULES: usize = 512;
/// Alert records kept (firing and resolved).
pub const MAX_ALERTS: usize = 1024;
/// Raises per rule whose actions run within [`NOTIFY_WINDOW`].
pub const NOTIFY_BURST: usize = 3;
/// The rate limit's window.
pub const NOTIFY_WINDOW: Duration = Duration::from_secs(600);

/// An action named in configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `log`: a log record.
    Log,
    /// `restart_server:ID`: restart that MCP server (on a raise).
    RestartServer(String),
    /// `webhook:NAME`: the `[actions.NAME]` webhook.
    Webhook(String),
    /// `exec:NAME`: the `[actions.NAME]` command.
    Exec(String),
}

impl Action {
    /// Reads `log`, `restart_server:ID`, `webhook:NAME` or `exec:NAME`.
    ///
    /// # Errors
    /// Anything else, with why.
    pub fn parse(s: &str) -> Result<Action, String> {
        let name = |n: &str| {
            if !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            {
                Ok(n.to_string())
            } else {
                Err(format!(
                    "'{s}': the name after ':' must be 1-64 of A-Z a-z 0-9 _ - ."
                ))
            }
        };
        match s.split_once(':') {
            None if s == "log" => Ok(Action::Log),
            Some(("restart_server", id)) => name(id).map(Action::RestartServer),
            Some(("webhook", n)) => name(n).map(Action::Webhook),
            Some(("exec", n)) => name(n).map(Action::Exec),
            _ => Err(format!(
                "'{s}' is not log, restart_server:ID, webhook:NAME or exec:NAME"
            )),
        }
    }
}

/// Where a value is moving.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    /// `rising`, `falling` or `stable`.
    pub direction: &'static str,
    /// Least-squares slope, value units per cycle.
    pub slope: f64,
}

/// The least-squares slope of `values` against their index, and its direction.
pub fn trend(values: &[f64]) -> Trend {
    let n = values.len();
    if n < 2 {
        return Trend {
            direction: "stable",
            slope: 0.0,
        };
    }
    let nf = n as f64;
    let mean_x = (nf - 1.0) / 2.0;
    let mean_y = values.iter().sum::<f64>() / nf;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, y) in values.iter().enumerate() {
        let dx = i as f64 - mean_x;
        sxy += dx * (y - mean_y);
        sxx += dx * dx;
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let scale = values.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-9);
    let direction = if !slope.is_finite() || slope.abs() < 0.01 * scale {
        "stable"
    } else if slope > 0.0 {
        "rising"
    } else {
        "falling"
    };
    Trend { direction, slope }
}

/// `firing` or `resolved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The condition holds.
    Firing,
    /// It cleared.
    Resolved,
}

impl State {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }
}

/// One alert: a rule's episode from raise to clear.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `a-N`, unique for the daemon's run.
    pub id: String,
    /// The rule's identity.
    pub rule: String,
    /// How bad.
    pub severity: Severity,
    /// Its family (the channel).
    pub family: Family,
    /// What was measured.
    pub metric: String,
    /// The latest value.
    pub current_value: f64,
    /// The limit, when there is one.
    pub threshold: Option<f64>,
    /// The trend at the latest reading.
    pub trend: Trend,
    /// The latest message.
    pub message: String,
    /// When it was raised (the cycle that completed `failures_before_alert`).
    pub first_seen: SystemTime,
    /// The latest bad cycle.
    pub last_seen: SystemTime,
    /// When it resolved.
    pub resolved_at: Option<SystemTime>,
    /// Bad cycles in this episode.
    pub count: u64,
    /// Firing or resolved.
    pub state: State,
    /// Acknowledged by an operator.
    pub acked: bool,
    /// Whether this episode's actions ran (false: rate-limited).
    pub notified: bool,
    /// The rule's raises whose actions were suppressed by the rate limit so far.
    pub suppressed: u64,
    /// The actions configured for the rule.
    pub actions: Vec<String>,
}

impl Alert {
    /// The event `type` of this alert's raise or resolution.
    pub fn event_type(&self) -> &'static str {
        match (self.family, self.state) {
            (Family::Performance, State::Firing) => "performance_alert",
            (Family::Performance, State::Resolved) => "performance_alert_resolved",
            (Family::Health, State::Firing) => "health_alert",
            (Family::Health, State::Resolved) => "health_alert_resolved",
            (Family::Security, State::Firing) => "security_alert",
            (Family::Security, State::Resolved) => "security_alert_resolved",
        }
    }

    /// JSON form (the REST answer and the event's data).
    pub fn to_json(&self) -> Value {
        let ts = crate::state::rfc3339_utc_millis;
        json!({
            "id": self.id,
            "rule": self.rule,
            "severity": self.severity.as_str(),
            "family": self.family.channel(),
            "metric": self.metric,
            "current_value": finite(self.current_value),
            "threshold": self.threshold.map(finite),
            "trend": self.trend.direction,
            "trend_slope": finite(self.trend.slope),
            "message": self.message,
            "first_seen": ts(self.first_seen),
            "last_seen": ts(self.last_seen),
            "resolved_at": self.resolved_at.map(ts),
            "count": self.count,
            "state": self.state.as_str(),
            "acked": self.acked,
            "notified": self.notified,
            "suppressed_notifications": self.suppressed,
            "actions": self.actions,
        })
    }

    /// The fields handed to `webhook:`/`exec:` actions, as strings.
    pub fn fields(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        if let Value::Object(map) = self.to_json() {
            for (k, val) in map {
                if k == "actions" {
                    continue;
                }
                let s = match val {
                    Value::String(s) => s,
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                v.push((k, s));
            }
        }
        v
    }
}

/// Rounds to 3 decimals, NaN/infinities as 0 (JSON has no such numbers).
fn finite(v: f64) -> f64 {
    if v.is_finite() {
        (v * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// A raise or a resolution, for the wiring to publish and act on.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The record as it is after the change.
    pub alert: Alert,
    /// Whether its actions run (false: the rule is rate-limited).
    pub notify: bool,
}

/// What the engine remembers of one rule.
#[derive(Debug, Default)]
struct RuleState {
    bad: u32,
    good: u32,
    values: VecDeque<f64>,
    /// The firing record's id.
    firing: Option<String>,
    /// Which side is bad: `Some(true)` when bad readings are above the threshold.
    bad_above: Option<bool>,
    /// When raises' actions ran, within the window.
    notified: VecDeque<Instant>,
    suppressed: u64,
    last_seen: Option<Instant>,
}

/// The alert engine.
#[derive(Debug, Default)]
pub struct Engine {
    rules: BTreeMap<String, RuleState>,
    /// Records, oldest first.
    alerts: VecDeque<Alert>,
    next_id: u64,
    /// Observations dropped because the rule bound was reached with every rule firing.
    pub dropped_rules: u64,
}

impl Engine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one reading at `now` (monotonic, for the rate limit) and `wall` (for the
    /// records); returns the raise or resolution it caused, if any.
    pub fn observe(
        &mut self,
        obs: &Observation,
        now: Instant,
        wall: SystemTime,
    ) -> Option<Transition> {
        if !self.rules.contains_key(&obs.rule) && !self.make_room(now) {
            self.dropped_rules += 1;
            return None;
        }
        let rule = self.rules.entry(obs.rule.clone()).or_default();
        rule.last_seen = Some(now);
        if rule.values.len() == VALUES_PER_RULE {
            rule.values.pop_front();
        }
        rule.values.push_back(obs.value);
        let values: Vec<f64> = rule.values.iter().copied().collect();
        let trend = trend(&values);
        if obs.bad {
            rule.bad = rule.bad.saturating_add(1);
            rule.good = 0;
            if let Some(t) = obs.threshold {
                if obs.value != t {
                    rule.bad_above = Some(obs.value > t);
                }
            }
        } else {
            rule.good = rule.good.saturating_add(1);
            rule.bad = 0;
        }
        match rule.firing.clone() {
            Some(id) => {
                let alert = self.alerts.iter_mut().find(|a| a.id == id)?;
                alert.current_value = obs.value;
                alert.trend = trend;
                alert.message.clone_from(&obs.message);
                if obs.bad {
                    alert.count += 1;
                    alert.last_seen = wall;
                    return None;
                }
                let far = match (obs.threshold, rule.bad_above) {
                    (Some(t), Some(above)) => {
                        let margin = MARGIN * t.abs();
                        if above {
                            obs.value < t - margin
                        } else {
                            obs.value > t + margin
                        }
                    }
                    _ => false,
                };
                if rule.good < obs.hysteresis.successes_before_clear.max(1) && !far {
                    return None;
                }
                rule.firing = None;
                alert.state = State::Resolved;
                alert.resolved_at = Some(wall);
                Some(Transition {
                    alert: alert.clone(),
                    notify: alert.notified,
                })
            }
            None => {
                if rule.bad < obs.hysteresis.failures_before_alert.max(1) {
                    return None;
                }
                while rule
                    .notified
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) >= NOTIFY_WINDOW)
                {
                    rule.notified.pop_front();
                }
                let notify = rule.notified.len() < NOTIFY_BURST;
                if notify {
                    rule.notified.push_back(now);
                } else {
                    rule.suppressed += 1;
                }
                self.next_id += 1;
                let id = format!("a-{}", self.next_id);
                rule.firing = Some(id.clone());
                let alert = Alert {
                    id,
                    rule: obs.rule.clone(),
                    severity: obs.severity,
                    family: obs.family,
                    metric: obs.metric.clone(),
                    current_value: obs.value,
                    threshold: obs.threshold,
                    trend,
                    message: obs.message.clone(),
                    first_seen: wall,
                    last_seen: wall,
                    resolved_at: None,
                    count: u64::from(rule.bad),
                    state: State::Firing,
                    acked: false,
                    notified: notify,
                    suppressed: rule.suppressed,
                    actions: obs.actions.clone(),
                };
                self.alerts.push_back(alert.clone());
                self.trim();
                Some(Transition { alert, notify })
            }
        }
    }

    /// Frees a rule slot if the bound is reached: the least recently observed rule that is not
    /// firing goes. False when every tracked rule fires.
    fn make_room(&mut self, _now: Instant) -> bool {
        if self.rules.len() < MAX_RULES {
            return true;
        }
        let victim = self
            .rules
            .iter()
            .filter(|(_, r)| r.firing.is_none())
            .min_by_key(|(_, r)| r.last_seen)
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                self.rules.remove(&k);
                true
            }
            None => false,
        }
    }

    /// Drops resolved records oldest-first beyond [`MAX_ALERTS`].
    fn trim(&mut self) {
        while self.alerts.len() > MAX_ALERTS {
            match self.alerts.iter().position(|a| a.state == State::Resolved) {
                Some(i) => {
                    self.alerts.remove(i);
                }
                None => break,
            }
        }
    }

    /// Resolves every firing alert whose rule is not in `keep` (a rule that went away: its
    /// server was unregistered, its route is no longer measured), and forgets those rules.
    pub fn retain_rules(
        &mut self,
        keep: impl Fn(&str) -> bool,
        wall: SystemTime,
    ) -> Vec<Transition> {
        let gone: Vec<String> = self.rules.keys().filter(|k| !keep(k)).cloned().collect();
        let mut out = Vec::new();
        for k in gone {
            let Some(rule) = self.rules.remove(&k) else {
                continue;
            };
            let Some(id) = rule.firing else { continue };
            if let Some(a) = self.alerts.iter_mut().find(|a| a.id == id) {
                a.state = State::Resolved;
                a.resolved_at = Some(wall);
                a.message = format!("{} (rule no longer measured)", a.message);
                out.push(Transition {
                    alert: a.clone(),
                    notify: a.notified,
                });
            }
        }
        out
    }

    /// Records, newest first, optionally only those in `state`.
    pub fn list(&self, state: Option<State>) -> impl Iterator<Item = &Alert> {
        self.alerts
            .iter()
            .rev()
            .filter(move |a| state.is_none_or(|s| a.state == s))
    }

    /// Acknowledges a record; `None` when there is no such id.
    pub fn ack(&mut self, id: &str) -> Option<&Alert> {
        let a = self.alerts.iter_mut().find(|a| a.id == id)?;
        a.acked = true;
        Some(a)
    }

    /// Firing alerts per severity.
    pub fn firing_by_severity(&self) -> [(Severity, usize); 3] {
        let n = |s| {
            self.alerts
                .iter()
                .filter(|a| a.state == State::Firing && a.severity == s)
                .count()
        };
        [
            (Severity::Info, n(Severity::Info)),
            (Severity::Warning, n(Severity::Warning)),
            (Severity::Critical, n(Severity::Critical)),
        ]
    }

    /// Whether `rule` is tracked.
    pub fn tracks(&self, rule: &str) -> bool {
        self.rules.contains_key(rule)
    }

    /// Rules tracked.
    pub fn rules(&self) -> usize {
        self.rules.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::observation::Hysteresis;

    fn obs(rule: &str, value: f64, threshold: f64, fail: u32, clear: u32) -> Observation {
        Observation {
            rule: rule.into(),
            family: Family::Performance,
            metric: "memory_usage_percent".into(),
            value,
            threshold: Some(threshold),
            bad: value > threshold,
            severity: Severity::Warning,
            message: format!("{value}"),
            actions: vec!["log".into()],
            hysteresis: Hysteresis {
                failures_before_alert: fail,
                successes_before_clear: clear,
            },
        }
    }

    /// Feeds values one per second; returns per value "R" (raised), "C" (cleared) or ".".
    fn run(values: &[f64], threshold: f64, fail: u32, clear: u32) -> String {
        let mut e = Engine::new();
        let t0 = Instant::now();
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let at = t0 + Duration::from_secs(i as u64);
                match e.observe(&obs("r", *v, threshold, fail, clear), at, SystemTime::now()) {
                    Some(t) if t.alert.state == State::Firing => 'R',
                    Some(_) => 'C',
                    None => '.',
                }
            })
            .collect()
    }

    #[test]
    fn hysteresis_from_a_table_of_values() {
        // (values, threshold 80, failures_before_alert, successes_before_clear, expected)
        let table: &[(&[f64], u32, u32, &str)] = &[
            // Two bad cycles raise; two good ones (inside the margin: 76..80) clear.
            (&[70.0, 85.0, 85.0, 79.0, 79.0], 2, 2, "..R.C"),
            // One bad cycle is not enough.
            (&[85.0, 70.0, 85.0, 70.0], 2, 2, "...."),
            // Far below the threshold (beyond 5 %: < 76) clears at once.
            (&[85.0, 85.0, 50.0], 2, 2, ".RC"),
            // Just inside the margin does not clear at once.
            (&[85.0, 85.0, 77.0, 85.0, 77.0, 77.0], 2, 2, ".R...C"),
            // Raise on the first bad cycle when configured so.
            (&[81.0, 79.0, 79.0, 79.0], 1, 3, "R..C"),
            // Oscillating around the threshold raises once and stays firing.
            (
                &[81.0, 81.0, 79.0, 81.0, 79.0, 81.0, 79.0, 81.0, 79.0, 81.0],
                2,
                2,
                ".R........",
            ),
            // Raise, clear, raise again: two episodes.
            (&[90.0, 90.0, 10.0, 90.0, 90.0], 2, 2, ".RC.R"),
        ];
        for (values, fail, clear, expected) in table {
            assert_eq!(
                run(values, 80.0, *fail, *clear),
                *expected,
                "values {values:?} fail {fail} clear {clear}"
            );
        }
    }

    #[test]
    fn a_rule_where_low_is_bad_clears_above_the_margin() {
        let mut e = Engine::new();
        let now = Instant::now();
        let mut o = obs("v", 0.5, 0.7, 1, 5);
        o.bad = true;
        assert!(e.observe(&o, now, SystemTime::now()).is_some());
        o.value = 0.72; // good, inside the margin (0.7 + 0.035)
        o.bad = false;
        assert!(e.observe(&o, now, SystemTime::now()).is_none());
        o.value = 0.8; // beyond it
        let t = e.observe(&o, now, SystemTime::now()).expect("cleared");
        assert_eq!(t.alert.state, State::Resolved);
    }

    #[test]
    fn a_flapping_rule_is_rate_limited() {
        let mut e = Engine::new();
        let t0 = Instant::now();
        let mut notified = Vec::new();
        // 8 episodes (bad, good) one second apart: only the first NOTIFY_BURST notify.
        for i in 0..16u64 {
            let v = if i % 2 == 0 { 95.0 } else { 10.0 };
            let at = t0 + Duration::from_secs(i);
            if let Some(t) = e.observe(&obs("f", v, 80.0, 1, 1), at, SystemTime::now()) {
                notified.push((t.alert.state, t.notify));
            }
        }
        let raises: Vec<bool> = notified
            .iter()
            .filter(|(s, _)| *s == State::Firing)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(
            raises,
            vec![true, true, true, false, false, false, false, false]
        );
        // A resolution notifies exactly when its raise did.
        let resolves: Vec<bool> = notified
            .iter()
            .filter(|(s, _)| *s == State::Resolved)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(resolves, raises);
        // After the window, raises notify again.
        let later = t0 + NOTIFY_WINDOW + Duration::from_secs(20);
        let t = e
            .observe(&obs("f", 95.0, 80.0, 1, 1), later, SystemTime::now())
            .expect("raised");
        assert!(t.notify);
        assert_eq!(t.alert.suppressed, 5);
    }

    #[test]
    fn actions_parse() {
        assert_eq!(Action::parse("log"), Ok(Action::Log));
        assert_eq!(
            Action::parse("restart_server:time"),
            Ok(Action::RestartServer("time".into()))
        );
        assert_eq!(
            Action::parse("webhook:ops"),
            Ok(Action::Webhook("ops".into()))
        );
        assert_eq!(
            Action::parse("exec:notify"),
            Ok(Action::Exec("notify".into()))
        );
        for bad in [
            "",
            "log:x",
            "restart_server:",
            "webhook:a b",
            "mail:x",
            "exec:../x/y",
        ] {
            assert!(Action::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn trend_sign() {
        let table: &[(&[f64], &str)] = &[
            (&[1.0, 2.0, 3.0, 4.0], "rising"),
            (&[4.0, 3.0, 2.0, 1.0], "falling"),
            (&[80.0, 80.1, 79.9, 80.0], "stable"),
            (&[5.0], "stable"),
            (&[], "stable"),
            (&[0.0, 0.0, 0.0], "stable"),
        ];
        for (values, expected) in table {
            assert_eq!(trend(values).direction, *expected, "{values:?}");
        }
        let t = trend(&[0.0, 2.0, 4.0, 6.0]);
        assert!((t.slope - 2.0).abs() < 1e-9);
    }

    #[test]
    fn bounds_hold() {
        let mut e = Engine::new();
        let now = Instant::now();
        // Values per rule.
        for i in 0..100 {
            e.observe(
                &obs("one", f64::from(i), 1000.0, 1, 1),
                now,
                SystemTime::now(),
            );
        }
        assert_eq!(e.rules["one"].values.len(), VALUES_PER_RULE);
        // Rules: beyond the bound, quiet rules are evicted.
        for i in 0..MAX_RULES + 50 {
            e.observe(
                &obs(&format!("q{i}"), 1.0, 80.0, 1, 1),
                now,
                SystemTime::now(),
            );
        }
        assert_eq!(e.rules(), MAX_RULES);
        // Alerts: resolved records go oldest-first.
        let mut e = Engine::new();
        for i in 0..(MAX_ALERTS as u64 + 100) {
            let at = now + NOTIFY_WINDOW * (i as u32);
            e.observe(&obs("x", 95.0, 80.0, 1, 1), at, SystemTime::now());
            e.observe(&obs("x", 10.0, 80.0, 1, 1), at, SystemTime::now());
        }
        assert_eq!(e.list(None).count(), MAX_ALERTS);
        assert_eq!(e.list(None).last().map(|a| a.id.as_str()), Some("a-101"));
        // Firing rules are never evicted: with every slot firing, a new rule is dropped.
        let mut e = Engine::new();
        for i in 0..MAX_RULES {
            e.observe(
                &obs(&format!("f{i}"), 95.0, 80.0, 1, 1),
                now,
                SystemTime::now(),
            );
        }
        assert!(e
            .observe(&obs("new", 95.0, 80.0, 1, 1), now, SystemTime::now())
            .is_none());
        assert_eq!(e.dropped_rules, 1);
        assert_eq!(e.list(Some(State::Firing)).count(), MAX_RULES);
    }

    #[test]
    fn records_carry_the_seed_fields_and_ack() {
        let mut e = Engine::new();
        let now = Instant::now();
        e.observe(&obs("m", 85.0, 80.0, 2, 2), now, SystemTime::now());
        let t = e
            .observe(&obs("m", 90.0, 80.0, 2, 2), now, SystemTime::now())
            .expect("raised");
        let j = t.alert.to_json();
        assert_eq!(j["metric"], "memory_usage_percent");
        assert_eq!(j["current_value"], 90.0);
        assert_eq!(j["threshold"], 80.0);
        assert_eq!(j["trend"], "rising");
        assert_eq!(j["count"], 2);
        assert_eq!(t.alert.event_type(), "performance_alert");
        assert!(e.ack(&t.alert.id).is_some_and(|a| a.acked));
        assert!(e.ack("a-999").is_none());
        assert!(t
            .alert
            .fields()
            .iter()
            .any(|(k, v)| k == "rule" && v == "m"));
        let gone = e.retain_rules(|r| r != "m", SystemTime::now());
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].alert.event_type(), "performance_alert_resolved");
    }
}
