//! Where readings meet the alerts room: the rooms that measure hand their [`Observation`]s to
//! [`Daemon::observe`]; the alerts room's own cycles come due here (the health cycle on the
//! health room's tick, see `daemon/health.rs`) and are sampled from the other rooms
//! (telemetry, MCP servers); a raise or resolution runs its actions (`log` and
//! `restart_server:ID` here, `webhook:`/`exec:` through [`Daemon::act`]).
//!
//! Thin glue: what a reading means and when it is an alert is decided in `monitor/`.

use super::*;
use crate::monitor::alerts::{Action, Transition};
use crate::monitor::observation::{ActionRun, Observation};
use crate::monitor::performance::{self, Cycle as PerfCycle, ServerHealth, Thresholds};
use crate::monitor::room::{self as alerts_room, Alerts, Cycle};

impl Daemon {
    /// A reading of a check: to the alerts room, and its transition's actions run.
    pub(super) fn observe(&mut self, cx: &mut Cx<'_, Timer>, obs: Observation) {
        let t = self.with::<Alerts, _>(cx, |room, rcx| room.observe(rcx, &obs));
        if let Some(t) = t {
            self.run_actions(cx, &t);
        }
    }

    /// Events go on the effect bus; a due cycle is sampled now.
    pub(super) fn alerts_outputs(&mut self, cx: &mut Cx<'_, Timer>, out: Vec<alerts_room::Output>) {
        for output in out {
            match output {
                alerts_room::Output::Effect(e) => self.effects.push(e),
                alerts_room::Output::Due(cycle) => self.alert_cycle(cx, cycle),
            }
        }
    }

    /// Samples and observes one built-in cycle now (the performance cycle when its timer
    /// fires, the health cycle on the health room's tick), unless shutting down.
    pub(super) fn alert_cycle(&mut self, cx: &mut Cx<'_, Timer>, cycle: Cycle) {
        if self.stopping.is_some() {
            return;
        }
        let started = Instant::now();
        let cpu = alerts_room::thread_cpu_time();
        let readings = match cycle {
            Cycle::Performance => self.performance_readings(cx),
            Cycle::Health => self.health_readings(cx),
        };
        let count = readings.len();
        for obs in readings {
            self.observe(cx, obs);
        }
        let used = alerts_room::thread_cpu_time().saturating_sub(cpu);
        let took = started.elapsed();
        self.with::<Alerts, _>(cx, |room, rcx| {
            room.record_cycle(rcx, cycle, count, took, used)
        });
    }

    fn performance_readings(&mut self, cx: &mut Cx<'_, Timer>) -> Vec<Observation> {
        let t = &self.rooms.settings.config().monitoring.alert_thresholds;
        let thresholds = Thresholds {
            response_time_max_ms: t.response_time_max_ms as f64,
            error_rate_max_percent: t.error_rate_max_percent,
            memory_usage_max_percent: t.memory_usage_max_percent,
        };
        let process = performance::own_process_brief();
        let host = performance::host_full();
        let servers = self.telemetry.server_totals();
        // A server that went away (its telemetry was dropped) resolves its alerts.
        let known: std::collections::BTreeSet<String> =
            servers.iter().map(|t| t.name.clone()).collect();
        for prefix in [
            "performance:response_time:server:",
            "performance:error_rate:server:",
        ] {
            let gone = self.with::<Alerts, _>(cx, |room, rcx| {
                room.forget(rcx, prefix, |r| {
                    r.strip_prefix(prefix).is_some_and(|id| known.contains(id))
                })
            });
            for t in gone {
                self.run_actions(cx, &t);
            }
        }
        let cycle = PerfCycle {
            now: Instant::now(),
            process: &process,
            host: &host,
            routes: self.telemetry.route_totals(),
            servers,
            thresholds,
            actions: &self.rooms.settings.config().monitoring.alert_actions,
        };
        // The sampler asks which rules the engine tracks (idle routes report only then).
        let mut sampler = std::mem::take(&mut self.rooms.alerts.sampler);
        let alerts = &self.rooms.alerts;
        let readings = sampler.performance(cycle, &|rule| alerts.tracks(rule));
        self.rooms.alerts.sampler = sampler;
        readings
    }

    fn health_readings(&mut self, cx: &mut Cx<'_, Timer>) -> Vec<Observation> {
        let servers: Vec<ServerHealth> = self.rooms.mcp.health_facts();
        // A server that went away resolves its alerts; a server that stopped serving resolves
        // its ping alert (it is pinged no more).
        for (prefix, serving) in [("health:server:", false), ("health:ping:", true)] {
            let ids: Vec<String> = servers
                .iter()
                .filter(|s| !serving || s.status == "active")
                .map(|s| format!("{prefix}{}", s.id))
                .collect();
            let gone = self.with::<Alerts, _>(cx, |room, rcx| {
                room.forget(rcx, prefix, |r| ids.iter().any(|i| i == r))
            });
            for t in gone {
                self.run_actions(cx, &t);
            }
        }
        let m = &self.rooms.settings.config().monitoring;
        performance::health_observations(
            &servers,
            m.alert_thresholds.response_time_max_ms as f64,
            &m.alert_actions,
        )
    }

    /// Runs a raise's or resolution's actions, unless the rule is rate-limited.
    fn run_actions(&mut self, cx: &mut Cx<'_, Timer>, t: &Transition) {
        let a = &t.alert;
        let transition = if a.state == crate::monitor::alerts::State::Firing {
            "fired"
        } else {
            "resolved"
        };
        if !t.notify {
            log::debug!(
                "alert {} ({}) {transition}: actions rate-limited",
                a.id,
                a.rule
            );
            return;
        }
        for action in &a.actions {
            match Action::parse(action) {
                Ok(Action::Log) => {
                    if transition == "fired" {
                        log::warn!(
                            "alert {} {} [{}] {}: {}",
                            a.id,
                            transition,
                            a.severity.as_str(),
                            a.rule,
                            a.message
                        );
                    } else {
                        log::info!("alert {} {} {}: {}", a.id, transition, a.rule, a.message);
                    }
                }
                Ok(Action::RestartServer(id)) => {
                    // Only a raise restarts: a resolution means it works again.
                    if transition != "fired" {
                        continue;
                    }
                    log::warn!("alert {} ({}): restarting MCP server {id}", a.id, a.rule);
                    if let Err(e) = self.rooms.mcp.restart(
                        &mut cx.narrow(<Mcp as rooms::Wired>::timer).cx(),
                        &id,
                        &mut self.outputs,
                    ) {
                        log::warn!(
                            "alert {}: restart of MCP server {id} refused: {}",
                            a.id,
                            e.message
                        );
                    }
                }
                Ok(Action::Webhook(_) | Action::Exec(_)) => {
                    let run = ActionRun {
                        action: action.clone(),
                        transition,
                        fields: a.fields(),
                    };
                    self.act(cx, run);
                }
                Err(e) => log::warn!("alert {}: action '{action}' ignored: {e}", a.id),
            }
        }
    }
}

impl Daemon {
    /// The alerts room's requests: the list and an acknowledgement.
    pub(super) fn serve_alerts(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        request: crate::api::AlertsRequest,
        reply: ReplyTo,
    ) {
        use crate::api::AlertsRequest as R;
        let answer = match request {
            R::List { state } => Ok(self.rooms.alerts.list(state)),
            R::Ack { id } => self.rooms.alerts.ack(&id),
            R::RunCycles => {
                let before = self.rooms.alerts.runs();
                self.alert_cycle(cx, Cycle::Health);
                self.alert_cycle(cx, Cycle::Performance);
                let after = self.rooms.alerts.runs();
                Ok(json!({"cycles_run": after - before}))
            }
        };
        self.answer(cx, reply, answer);
    }
}
