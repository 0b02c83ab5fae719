//! Wiring of the health-rounds room ([`components::health`]): the facts a round needs of the
//! other components, the repairs it decides (carried out here, where the components live),
//! and the cached answer's encoding.

use super::*;
use crate::components::health::{self, Facts, Health, HealthResult, WorkerState};

impl Daemon {
    pub(super) fn health_component_names(&self) -> Vec<&'static str> {
        let mut names = COMPONENTS.to_vec();
        names.push("state");
        names
    }

    /// What a round needs to know of the other components, taken now.
    fn health_facts(&self) -> Facts {
        let control = match &self.control {
            Some(c) if c.still_ours() => HealthResult::now(
                true,
                "running",
                format!("listening on {}", c.path.display()),
            ),
            Some(c) => HealthResult::now(
                false,
                "running",
                format!("socket file {} was removed or replaced", c.path.display()),
            ),
            None => HealthResult::now(false, "stopped", "control socket is not listening"),
        };
        let worker = match &self.worker {
            None => WorkerState::Stopped,
            Some(w) if !w.is_alive() => WorkerState::Dead,
            Some(_) => WorkerState::Alive,
        };
        let read_only = self
            .state
            .read_only()
            .map(|(name, why)| {
                let path = self.state.path().join(name);
                format!("state file {} is read-only: {why}", path.display())
            })
            .collect();
        Facts {
            control,
            worker,
            read_only,
            state_dir: self.state.path().to_path_buf(),
            documents: STATE_DOCUMENTS,
        }
    }

    /// Starts a health round (or joins the running one); `waiter` is answered when it ends.
    pub(super) fn start_health_round(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        waiter: Option<(ReplyTo, Option<String>)>,
    ) {
        let facts = self.health_facts();
        self.with::<Health, _>(cx, |room, rcx| room.start_round(rcx, facts, waiter));
    }

    /// Answers go on the effect bus; repairs are carried out here, unless shutting down.
    pub(super) fn health_outputs(&mut self, cx: &mut Cx<'_, Timer>, out: Vec<health::Output>) {
        for output in out {
            match output {
                health::Output::Effect(e) => self.effects.push(e),
                health::Output::Tick => {
                    self.start_health_round(cx, None);
                    self.rooms.mcp.ping_all(
                        &mut cx.narrow(<Mcp as Wired>::timer).cx(),
                        &mut self.outputs,
                    );
                    // The alerts room's health cycle runs at this same interval: on this
                    // wake-up, after the pings (a ping missed since the last tick is counted).
                    self.alert_cycle(cx, crate::monitor::room::Cycle::Health);
                    self.flush_refusal_log();
                }
                health::Output::Repair(name, why) => {
                    if self.stopping.is_some() {
                        continue;
                    }
                    self.with::<Components, _>(cx, |room, rcx| room.repair(rcx, name, why));
                }
            }
        }
    }

    /// `GET /api/v1/health`: a round younger than a second answers at once (a scraper
    /// hammering it must not turn into a stream of fsyncs); otherwise a round starts.
    pub(super) fn serve_health(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        HealthRequest { component }: HealthRequest,
        reply: ReplyTo,
    ) {
        if let Some(c) = &component {
            if !self.health_component_names().contains(&c.as_str()) {
                self.answer(cx, reply, Err(unknown_health_component(c)));
                return;
            }
        }
        let fresh = self.rooms.health.fresh();
        if fresh && component.is_none() {
            self.answer_cached_health(cx, reply);
        } else if fresh {
            let answer = self.rooms.health.answer(component.as_deref());
            self.answer(cx, reply, answer);
        } else {
            self.start_health_round(cx, Some((reply, component)));
        }
    }

    /// Answers `GET /api/v1/health` from the serialized answer of the last round (a monitor
    /// polling health costs an envelope, not a rebuilt report).
    pub(super) fn answer_cached_health(&mut self, cx: &mut Cx<'_, Timer>, reply: ReplyTo) {
        let (error, data) = self.rooms.health.cached();
        let sent = reply::respond_serialized(
            &mut self.server,
            &mut self.telemetry,
            &mut self.incoming,
            cx,
            reply,
            error.as_ref(),
            data,
        );
        if let Err(reply) = sent {
            let answer = self.rooms.health.answer(None);
            self.answer(cx, reply, answer);
        }
    }
}
