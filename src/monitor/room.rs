//! The alerts room: owns the alert engine, the built-in performance and health cycles'
//! schedule and their sampler, and publishes every raise and resolution on its family's
//! channel (`performance_alert`, `health_alert`, `security_alert` and their `*_resolved`).
//!
//! The performance cycle is one timer on the wheel, re-armed when it fires; the health cycle
//! has no timer of its own: it runs on the health room's tick (same interval,
//! `monitoring.health_check_interval_ms`), right after that tick's MCP pings went out, so one
//! wake-up serves both. Nothing wakes the loop between due cycles. When the performance cycle
//! is due the room says so ([`Output::Due`]); the wiring
//! gathers the samples it needs of other rooms (telemetry, MCP servers) and hands the
//! readings back through [`Alerts::observe`], which returns the transition so the wiring can
//! run its actions (`log`, `restart_server:ID` itself; `webhook:`/`exec:` to the actions
//! room).
//!
//! Invariants: at most one timer is armed (the performance cycle's); a transition is
//! published exactly once.

use super::alerts::{Engine, State, Transition};
use super::observation::Observation;
use super::performance::Sampler;
use crate::api::{ApiError, ErrorCode};
use crate::reactor::timer::TimerId;
use crate::room::{Effect, Room, RoomCx};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime};

/// The room's cycles (its timer keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cycle {
    /// `monitoring.performance_check_interval_ms`.
    Performance,
    /// `monitoring.health_check_interval_ms`: driven by the health room's tick, never armed
    /// here.
    Health,
}

/// What the room hands to the wiring.
#[derive(Debug)]
pub enum Output {
    /// A common effect (events).
    Effect(Effect),
    /// A cycle is due: sample and observe.
    Due(Cycle),
}

impl From<Effect> for Output {
    fn from(e: Effect) -> Self {
        Output::Effect(e)
    }
}

/// The alerts room.
#[derive(Debug, Default)]
pub struct Alerts {
    engine: Engine,
    /// The performance cycle's memory and its last figures.
    pub sampler: Sampler,
    performance: Option<(TimerId, Duration)>,
    /// The health cycle's interval (for the figures; the health room's tick drives it).
    health: Option<Duration>,
    /// Loop time of each cycle (sampling, deciding, publishing, actions): [performance, health].
    timing: [CycleTime; 2],
}

/// Loop time of one kind of cycle: wall time, and the loop thread's CPU time (which a loaded
/// machine does not inflate).
#[derive(Debug, Default, Clone, Copy)]
struct CycleTime {
    runs: u64,
    last: Duration,
    max: Duration,
    last_cpu: Duration,
}

impl CycleTime {
    fn to_json(self) -> Value {
        json!({"runs": self.runs, "last_us": self.last.as_micros() as u64,
               "max_us": self.max.as_micros() as u64,
               "last_cpu_us": self.last_cpu.as_micros() as u64})
    }
}

/// CPU time of the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec the call fills in.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

impl Room for Alerts {
    type Timer = Cycle;
    type Job = ();
    type Output = Output;
    const NAME: &'static str = "alerts";

    /// `last_cycle` and `alerts` in the performance view, `alerts` in the health view.
    fn view(&self, view: crate::room::View, out: &mut serde_json::Map<String, Value>) {
        if view == crate::room::View::Performance {
            out.insert("last_cycle".into(), json!(self.sampler.last));
        }
        out.insert("alerts".into(), self.summary());
    }

    /// A reload moves the built-in cycles to their new intervals (an unchanged one keeps its
    /// due time).
    fn apply_config(&mut self, cx: &mut RoomCx<'_, Self>, config: &crate::config::Config) {
        let m = &config.monitoring;
        self.schedule(
            cx,
            Cycle::Performance,
            Duration::from_millis(m.performance_check_interval_ms),
        );
        self.schedule(
            cx,
            Cycle::Health,
            Duration::from_millis(m.health_check_interval_ms),
        );
    }

    fn on_timer(&mut self, cx: &mut RoomCx<'_, Self>, cycle: Cycle) {
        if cycle != Cycle::Performance {
            return;
        }
        if let Some((_, every)) = self.performance {
            let id = cx.timers().insert(Instant::now() + every, cycle);
            self.performance = Some((id, every));
            cx.emit(Output::Due(cycle));
        }
    }

    fn on_job(&mut self, _cx: &mut RoomCx<'_, Self>, _done: ()) {}
}

impl Alerts {
    /// Runs `cycle` every `every` from now on (re-armed only when the interval changed). The
    /// health cycle only records its interval: the health room's tick runs it.
    pub fn schedule(&mut self, cx: &mut RoomCx<'_, Self>, cycle: Cycle, every: Duration) {
        if cycle == Cycle::Health {
            self.health = Some(every);
            return;
        }
        let slot = &mut self.performance;
        match *slot {
            Some((_, e)) if e == every => {}
            Some((id, _)) => {
                cx.timers().cancel(id);
                *slot = Some((cx.timers().insert(Instant::now() + every, cycle), every));
            }
            None => *slot = Some((cx.timers().insert(Instant::now() + every, cycle), every)),
        }
    }

    /// Records how long a cycle held the loop (wall time) and the CPU time it used, and says
    /// that it ran (`monitoring_cycle_completed`: System 3's audit cycles are counted from it).
    pub fn record_cycle(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        cycle: Cycle,
        readings: usize,
        took: Duration,
        cpu: Duration,
    ) {
        let t = &mut self.timing[cycle as usize];
        t.runs += 1;
        t.last = took;
        t.max = t.max.max(took);
        t.last_cpu = cpu;
        let (channel, name) = match cycle {
            Cycle::Performance => (crate::events::Channel::Performance, "performance"),
            Cycle::Health => (crate::events::Channel::Health, "health"),
        };
        cx.event(
            channel,
            crate::events::EventData::MonitoringCycleCompleted {
                cycle: name,
                readings,
                took_ms: took.as_secs_f64() * 1000.0,
            },
        );
    }

    /// Takes a reading; a raise or resolution is published on its family's channel and
    /// returned for its actions.
    pub fn observe(&mut self, cx: &mut RoomCx<'_, Self>, obs: &Observation) -> Option<Transition> {
        let t = self
            .engine
            .observe(obs, Instant::now(), SystemTime::now())?;
        self.publish(cx, &t);
        Some(t)
    }

    /// Resolves the firing alerts of rules `keep` refuses among those starting with `prefix`
    /// (a server that went away); returns the resolutions.
    pub fn forget(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        prefix: &str,
        keep: impl Fn(&str) -> bool,
    ) -> Vec<Transition> {
        let gone = self
            .engine
            .retain_rules(|r| !r.starts_with(prefix) || keep(r), SystemTime::now());
        for t in &gone {
            self.publish(cx, t);
        }
        gone
    }

    fn publish(&self, cx: &mut RoomCx<'_, Self>, t: &Transition) {
        let a = &t.alert;
        cx.publish(a.family.channel(), a.event_type(), a.to_json());
    }

    /// Built-in cycles run so far (both kinds).
    pub fn runs(&self) -> u64 {
        self.timing.iter().map(|t| t.runs).sum()
    }

    /// Whether the engine tracks `rule`.
    pub fn tracks(&self, rule: &str) -> bool {
        self.engine.tracks(rule)
    }

    /// `GET /api/v1/alerts[?state=]`: records, newest first.
    pub fn list(&self, state: Option<&str>) -> Value {
        let state = match state {
            Some("firing") => Some(State::Firing),
            Some("resolved") => Some(State::Resolved),
            _ => None,
        };
        let alerts: Vec<Value> = self.engine.list(state).map(|a| a.to_json()).collect();
        json!({"alerts": alerts, "firing": self.engine.list(Some(State::Firing)).count()})
    }

    /// `POST /api/v1/alerts/{id}/ack`.
    ///
    /// # Errors
    /// No such alert.
    pub fn ack(&mut self, id: &str) -> Result<Value, ApiError> {
        self.engine
            .ack(id)
            .map(|a| json!({"alert": a.to_json()}))
            .ok_or_else(|| {
                ApiError::field(
                    ErrorCode::AlertNotFound,
                    "id",
                    format!("no alert '{id}' (resolved alerts are kept up to a bound)"),
                )
            })
    }

    /// Firing alerts per severity (for `/metrics`).
    pub fn firing_by_severity(&self) -> [(&'static str, usize); 3] {
        self.engine
            .firing_by_severity()
            .map(|(s, n)| (s.as_str(), n))
    }

    /// Counts for the metrics views.
    pub fn summary(&self) -> Value {
        let mut by = serde_json::Map::new();
        for (s, n) in self.firing_by_severity() {
            by.insert(s.to_string(), json!(n));
        }
        json!({
            "firing": self.engine.list(Some(State::Firing)).count(),
            "firing_by_severity": by,
            "kept": self.engine.list(None).count(),
            "rules_tracked": self.engine.rules(),
            "readings_dropped": self.engine.dropped_rules,
            "cycle_time": {
                "performance": self.timing[Cycle::Performance as usize].to_json(),
                "health": self.timing[Cycle::Health as usize].to_json(),
            },
            "intervals_ms": {
                "performance": self.performance.map(|(_, e)| e.as_millis() as u64),
                "health": self.health.map(|e| e.as_millis() as u64),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::observation::{Family, Hysteresis, Severity};
    use crate::room::testing::{enter, Inline};

    #[test]
    fn cycles_rearm_once_and_transitions_are_published() {
        let mut room = Alerts::default();
        let mut wiring: Inline<Cycle, ()> = Inline::new();
        let mut out = Vec::new();
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.schedule(cx, Cycle::Performance, Duration::from_millis(100));
            r.schedule(cx, Cycle::Health, Duration::from_millis(100));
            // Same interval: nothing re-armed; a new one replaces the timer.
            r.schedule(cx, Cycle::Health, Duration::from_millis(100));
            r.schedule(cx, Cycle::Health, Duration::from_millis(200));
            r.schedule(cx, Cycle::Performance, Duration::from_millis(300));
        });
        assert_eq!(
            wiring.wheel.len(),
            1,
            "the performance timer (moved once); the health cycle has none"
        );
        assert_eq!(room.summary()["intervals_ms"]["health"], 200);
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.on_timer(cx, Cycle::Performance)
        });
        assert_eq!(
            wiring.wheel.len(),
            2,
            "the fired one was re-armed (the test did not expire it)"
        );
        assert!(matches!(out.pop(), Some(Output::Due(Cycle::Performance))));
        let obs = Observation {
            rule: "health:server:x".into(),
            family: Family::Health,
            metric: "server_up".into(),
            value: 0.0,
            threshold: None,
            bad: true,
            severity: Severity::Critical,
            message: "down".into(),
            actions: vec![],
            hysteresis: Hysteresis {
                failures_before_alert: 1,
                successes_before_clear: 1,
            },
        };
        let t = enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.observe(cx, &obs)
        });
        assert!(t.is_some());
        assert!(matches!(
            out.pop(),
            Some(Output::Effect(Effect::Publish("health", "health_alert", _)))
        ));
        let gone = enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.forget(cx, "health:server:", |_| false)
        });
        assert_eq!(gone.len(), 1);
        assert!(matches!(
            out.pop(),
            Some(Output::Effect(Effect::Publish(
                "health",
                "health_alert_resolved",
                _
            )))
        ));
        assert_eq!(
            room.list(Some("resolved"))["alerts"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        assert!(room.ack("a-1").is_ok());
        assert!(room.ack("nope").is_err());
    }
}
