//! The components room: the daemon's own components (the control socket, the worker thread,
//! the health monitor), what state each is in, and every decision about starting, stopping
//! and restarting them: which ones an operator's request touches, refusing to stop the
//! control socket, what a health repair restarts, what boot and shutdown do, and what a
//! finished step means for the component's state and the answer.
//!
//! A decision leaves the room as a [`Plan`]: steps in order and what to do with their
//! outcome ([`Then`]). The wiring carries the steps out on the loop's sources, stopping at the
//! first failure, and reports every outcome back to [`Components::finished`]; only then does
//! the room change its states and answer. The steps themselves stay in the wiring because
//! they act on what the loop owns: the listener is registered with the loop's `mio` registry
//! under the wiring's token, the worker handle is what every room's jobs are submitted
//! through (stopping it must fail the jobs of every room still waiting on it), and the
//! monitor is the health room's schedule. A restart of everything reloads the configuration
//! first, asked of the settings room through the command layer.
//!
//! Invariant: a component's `running` changes only from a reported outcome; `since` changes
//! with it; `restarts` counts successful restarts.

use crate::api::{Answer, ApiError, ConfigRequest, ControlRequest, ErrorCode, ReplyTo, Request};
use crate::room::{Effect, Report, Room, RoomCx, Serve};
use crate::snapshot::{self, Facts};
use crate::telemetry::Exposition;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// A component of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The Unix control socket listener.
    Control,
    /// The blocking-work thread.
    Worker,
    /// The periodic health check.
    Monitor,
}

/// Component names, in display order.
pub const NAMES: [&str; 3] = ["control", "worker", "monitor"];

impl Component {
    /// Every component, in display order.
    pub const ALL: [Component; 3] = [Component::Control, Component::Worker, Component::Monitor];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Component::Control => "control",
            Component::Worker => "worker",
            Component::Monitor => "monitor",
        }
    }

    /// The component called `name`.
    pub fn parse(name: &str) -> Option<Component> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// What a component is doing, as status and metrics show it.
#[derive(Debug, Clone)]
pub struct ComponentState {
    /// It runs.
    pub running: bool,
    /// When `running` last changed.
    pub since: SystemTime,
    /// Successful restarts.
    pub restarts: u32,
    /// Why its last repair or restart was needed or failed.
    pub last_error: Option<String>,
}

/// One thing for the wiring to do to a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Start it (a running one is left alone).
    Start(Component),
    /// Stop it.
    Stop(Component),
    /// Stop and start it again (the control socket is rebound in place: open connections
    /// stay).
    Restart(Component),
}

impl Step {
    fn component(self) -> Component {
        match self {
            Step::Start(c) | Step::Stop(c) | Step::Restart(c) => c,
        }
    }
}

/// What to do once a plan's steps are carried out.
#[derive(Debug)]
pub enum Then {
    /// Answer `{"started": [...]}`.
    Started(ReplyTo),
    /// Answer `{"stopped": [...]}`.
    Stopped(ReplyTo),
    /// Answer `{"restarted": [...]}`, with the configuration reload's report when there was
    /// one.
    Restarted(ReplyTo, Option<Value>),
    /// Nobody waits: log failures (boot, repairs, shutdown).
    Log,
}

/// Steps for the wiring to carry out in order (it stops at the first failure), and what the
/// room does with their outcome.
#[derive(Debug)]
pub struct Plan {
    /// In order.
    pub steps: Vec<Step>,
    /// Then.
    pub then: Then,
}

/// What the components room hands to the wiring.
#[derive(Debug)]
pub enum Output {
    /// A common effect.
    Effect(Effect),
    /// Carry these steps out and report with [`Components::finished`].
    Carry(Plan),
    /// Stop the daemon.
    Shutdown {
        /// Stop children gracefully.
        graceful: bool,
    },
}

impl From<Effect> for Output {
    fn from(e: Effect) -> Self {
        Output::Effect(e)
    }
}

/// Restarts of everything waiting for their configuration reload, at most.
const RELOADS_WAITING: usize = 16;

/// The components room.
#[derive(Debug)]
pub struct Components {
    states: BTreeMap<&'static str, ComponentState>,
    /// Restarts of everything waiting for the settings room's reload, by tag.
    reloads: BTreeMap<u64, ReplyTo>,
    next_tag: u64,
}

impl Default for Components {
    fn default() -> Self {
        let now = SystemTime::now();
        let states = NAMES
            .iter()
            .map(|&name| {
                let state = ComponentState {
                    running: false,
                    since: now,
                    restarts: 0,
                    last_error: None,
                };
                (name, state)
            })
            .collect();
        Components {
            states,
            reloads: BTreeMap::new(),
            next_tag: 1,
        }
    }
}

impl Components {
    /// Each component's state, by name.
    pub fn states(&self) -> impl Iterator<Item = (&'static str, &ComponentState)> {
        self.states.iter().map(|(name, s)| (*name, s))
    }

    fn running(&self, c: Component) -> bool {
        self.states.get(c.name()).is_some_and(|s| s.running)
    }

    fn mark(&mut self, c: Component, running: bool) {
        if let Some(s) = self.states.get_mut(c.name()) {
            if s.running != running {
                s.since = SystemTime::now();
            }
            s.running = running;
            if running {
                s.last_error = None;
            }
        }
    }

    /// The wiring has the control socket listening (it binds it before the room exists): the
    /// room records it and starts the rest when `auto_start` says so.
    pub fn boot(&mut self, cx: &mut RoomCx<'_, Self>, auto_start: bool) {
        self.mark(Component::Control, true);
        if auto_start {
            let steps = vec![
                Step::Start(Component::Worker),
                Step::Start(Component::Monitor),
            ];
            cx.emit(Output::Carry(Plan {
                steps,
                then: Then::Log,
            }));
        }
    }

    /// The health room found `name` broken: restart it.
    pub fn repair(&mut self, cx: &mut RoomCx<'_, Self>, name: &str, why: String) {
        let Some(c) = Component::parse(name) else {
            log::error!("a repair of {name}, which is not a component");
            return;
        };
        if let Some(s) = self.states.get_mut(c.name()) {
            s.last_error = Some(why);
        }
        log::warn!("restarting component {name} after a failed health check");
        cx.emit(Output::Carry(Plan {
            steps: vec![Step::Restart(c)],
            then: Then::Log,
        }));
    }

    /// The daemon is stopping: the control socket first (new connections are refused at
    /// once), then the monitor and the worker.
    pub fn shutdown(&mut self, cx: &mut RoomCx<'_, Self>) {
        let steps = [Component::Control, Component::Monitor, Component::Worker]
            .into_iter()
            .map(Step::Stop)
            .collect();
        cx.emit(Output::Carry(Plan {
            steps,
            then: Then::Log,
        }));
    }

    /// The wiring carried out a plan's steps (up to and including the first that failed):
    /// states change, and the answer (or the log line) says how it went.
    pub fn finished(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        then: Then,
        outcomes: Vec<(Step, Result<(), String>)>,
    ) {
        let answering = !matches!(then, Then::Log);
        let mut done = Vec::new();
        let mut failed = None;
        for (step, outcome) in outcomes {
            let c = step.component();
            let name = c.name();
            match (step, outcome) {
                (Step::Start(_), Ok(())) => {
                    self.mark(c, true);
                    if answering {
                        log::info!("component {name} started");
                    }
                }
                (Step::Stop(_), Ok(())) => {
                    self.mark(c, false);
                    if answering {
                        log::info!("component {name} stopped");
                    }
                }
                (Step::Restart(_), Ok(())) => {
                    self.mark(c, true);
                    if let Some(s) = self.states.get_mut(name) {
                        s.restarts += 1;
                    }
                    log::info!("component {name} restarted");
                }
                (step, Err(why)) => {
                    // A restart that failed has stopped what it restarts.
                    if matches!(step, Step::Restart(_)) {
                        self.mark(c, false);
                    }
                    if let Some(s) = self.states.get_mut(name) {
                        s.last_error = Some(why.clone());
                    }
                    let verb = match step {
                        Step::Start(_) => "start",
                        Step::Stop(_) => "stop",
                        Step::Restart(_) => "restart",
                    };
                    if !answering {
                        log::error!("cannot {verb} {name}: {why}");
                    }
                    failed = Some(ApiError::new(ErrorCode::Internal, why));
                    break;
                }
            }
            done.push(name);
        }
        let reply = match &then {
            Then::Log => return,
            Then::Started(r) | Then::Stopped(r) | Then::Restarted(r, _) => *r,
        };
        let answer = match (failed, then) {
            (Some(e), _) => Err(e),
            (None, Then::Started(_)) => Ok(json!({ "started": done })),
            (None, Then::Stopped(_)) => Ok(json!({ "stopped": done })),
            (None, Then::Restarted(_, None)) => Ok(json!({ "restarted": done })),
            (None, Then::Restarted(_, Some(config))) => {
                Ok(json!({ "restarted": done, "config": config }))
            }
            (None, Then::Log) => return,
        };
        cx.reply(reply, answer);
    }

    /// The stopped components `service` names (all when `None`), to start.
    fn start_steps(&self, service: Option<String>) -> Result<Vec<Step>, ApiError> {
        let chosen = match &service {
            Some(s) => vec![component(s)?],
            None => Component::ALL.to_vec(),
        };
        let steps = chosen
            .into_iter()
            .filter(|c| !self.running(*c))
            .map(Step::Start)
            .collect();
        Ok(steps)
    }

    /// The running components `service` names (all but the control socket when `None`), to
    /// stop; the control socket is never stopped.
    fn stop(&self, service: Option<String>) -> Result<Vec<Step>, ApiError> {
        let chosen = match &service {
            Some(s) => vec![component(s)?],
            None => vec![Component::Worker, Component::Monitor],
        };
        if chosen.contains(&Component::Control) {
            return Err(ApiError::field(
                ErrorCode::Conflict,
                "service",
                "refusing to stop the control socket: it is the only way to reach the daemon (use `restart --service control`)",
            ));
        }
        let steps = chosen
            .into_iter()
            .filter(|c| self.running(*c))
            .map(Step::Stop)
            .collect();
        Ok(steps)
    }
}

impl Room for Components {
    type Timer = ();
    type Job = ();
    type Output = Output;
    const NAME: &'static str = "components";

    fn on_timer(&mut self, _cx: &mut RoomCx<'_, Self>, (): ()) {}
    fn on_job(&mut self, _cx: &mut RoomCx<'_, Self>, (): ()) {}

    /// `vsm_component_up{component}`.
    fn metrics(&self, out: &mut Exposition) {
        let labels: Vec<[(&str, &str); 1]> =
            self.states.keys().map(|n| [("component", *n)]).collect();
        let samples: Vec<(&[(&str, &str)], f64)> = labels
            .iter()
            .zip(self.states.values())
            .map(|(l, s)| (&l[..], if s.running { 1.0 } else { 0.0 }))
            .collect();
        out.gauge(
            "vsm_component_up",
            "1 when a daemon component runs.",
            &samples,
        );
    }

    /// The settings room's answer to the reload a restart of everything asked for.
    fn on_answer(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64, answer: Answer) {
        let Some(reply) = self.reloads.remove(&tag) else {
            log::error!("components: a reload answer (tag {tag}) nobody waits for");
            return;
        };
        match answer {
            Ok(report) => cx.emit(Output::Carry(Plan {
                steps: Component::ALL.into_iter().map(Step::Restart).collect(),
                then: Then::Restarted(reply, Some(report)),
            })),
            Err(e) => cx.reply(reply, Err(e)),
        }
    }
}

/// `components` in `GET /api/v1/status`: each component's state, with the last health
/// round's verdict on it (from the health room's results, handed over in the facts).
impl Report for Components {
    type Status<'a> = BTreeMap<&'a str, snapshot::Component<'a>>;

    fn status<'a>(&'a self, facts: &Facts<'a>) -> Self::Status<'a> {
        self.states()
            .map(|(name, c)| {
                let health = facts.health.result(name);
                let component = snapshot::Component {
                    health_message: health.map(|h| h.message.as_str()),
                    healthy: health.map(|h| h.healthy),
                    last_error: c.last_error.as_deref(),
                    restarts: c.restarts,
                    since: crate::state::rfc3339_utc(c.since),
                    status: if c.running { "running" } else { "stopped" },
                };
                (name, component)
            })
            .collect()
    }
}

impl Serve for Components {
    type Request = ControlRequest;

    fn handle(&mut self, cx: &mut RoomCx<'_, Self>, request: ControlRequest, reply: ReplyTo) {
        let plan = match request {
            ControlRequest::Start { service } => self.start_steps(service).map(|steps| Plan {
                steps,
                then: Then::Started(reply),
            }),
            ControlRequest::Stop {
                shutdown: true,
                graceful,
                ..
            } => {
                log::info!(
                    "shutdown requested over the API ({})",
                    if graceful { "graceful" } else { "immediate" }
                );
                cx.emit(Output::Shutdown { graceful });
                let data =
                    json!({"shutdown": true, "graceful": graceful, "pid": std::process::id()});
                cx.reply(reply, Ok(data));
                return;
            }
            ControlRequest::Stop { service, .. } => self.stop(service).map(|steps| Plan {
                steps,
                then: Then::Stopped(reply),
            }),
            ControlRequest::Restart { service: Some(s) } => component(&s).map(|c| Plan {
                steps: vec![Step::Restart(c)],
                then: Then::Restarted(reply, None),
            }),
            ControlRequest::Restart { service: None } => {
                if self.reloads.len() >= RELOADS_WAITING {
                    let busy = ApiError::new(ErrorCode::Busy, "restarts are waiting; try again");
                    cx.reply(reply, Err(busy));
                    return;
                }
                let tag = self.next_tag;
                self.next_tag += 1;
                self.reloads.insert(tag, reply);
                cx.ask(tag, Request::Config(ConfigRequest::Reload));
                return;
            }
        };
        match plan {
            Ok(plan) => cx.emit(Output::Carry(plan)),
            Err(e) => cx.reply(reply, Err(e)),
        }
    }
}

fn component(name: &str) -> Result<Component, ApiError> {
    Component::parse(name).ok_or_else(|| unknown_component(name))
}

/// No component called `name`.
pub fn unknown_component(name: &str) -> ApiError {
    ApiError::field(
        ErrorCode::ComponentNotFound,
        "service",
        format!("no component '{name}' (components: {})", NAMES.join(", ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::testing::{enter, Inline};

    fn client(tag: u64) -> ReplyTo {
        ReplyTo::Room {
            room: "client",
            tag,
        }
    }

    fn run(
        room: &mut Components,
        f: impl FnOnce(&mut Components, &mut RoomCx<'_, Components>),
    ) -> Vec<Output> {
        let (mut wiring, mut out) = (Inline::new(), Vec::new());
        enter(room, &mut wiring, &mut out, f);
        out
    }

    fn plan(out: Vec<Output>) -> Plan {
        match <[Output; 1]>::try_from(out) {
            Ok([Output::Carry(plan)]) => plan,
            Ok([other]) => panic!("not a plan: {other:?}"),
            Err(out) => panic!("not one output: {out:?}"),
        }
    }

    fn answer(out: Vec<Output>) -> (u64, Answer) {
        match <[Output; 1]>::try_from(out) {
            Ok([Output::Effect(Effect::Reply(ReplyTo::Room { tag, .. }, a))]) => (tag, a),
            other => panic!("not one answer: {other:?}"),
        }
    }

    /// Carries `plan` out as a wiring would, failing the step `fail` names.
    fn carry(room: &mut Components, plan: Plan, fail: Option<Step>) -> Vec<Output> {
        let mut outcomes = Vec::new();
        for step in plan.steps {
            let failed = Some(step) == fail;
            outcomes.push((step, if failed { Err("no".into()) } else { Ok(()) }));
            if failed {
                break;
            }
        }
        run(room, |r, cx| r.finished(cx, plan.then, outcomes))
    }

    fn running(room: &Components) -> Vec<&'static str> {
        room.states()
            .filter(|(_, s)| s.running)
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn requests_become_plans_and_states_change_only_with_their_outcomes() {
        let mut room = Components::default();
        let boot = plan(run(&mut room, |r, cx| r.boot(cx, true)));
        assert_eq!(
            boot.steps,
            [
                Step::Start(Component::Worker),
                Step::Start(Component::Monitor)
            ]
        );
        assert_eq!(
            running(&room),
            ["control"],
            "nothing else until carried out"
        );
        assert!(
            carry(&mut room, boot, None).is_empty(),
            "boot answers nobody"
        );
        assert_eq!(running(&room), ["control", "monitor", "worker"]);
        let mut exposition = Exposition::new();
        room.metrics(&mut exposition);
        let text = exposition.finish();
        for name in NAMES {
            let line = format!("vsm_component_up{{component=\"{name}\"}} 1");
            assert!(text.contains(&line), "{text}");
        }

        // The control socket is never stopped; stopping everything means the other two.
        let (tag, refused) = answer(run(&mut room, |r, cx| {
            let stop = ControlRequest::Stop {
                service: Some("control".into()),
                shutdown: false,
                graceful: true,
            };
            r.handle(cx, stop, client(1))
        }));
        assert_eq!(tag, 1);
        assert_eq!(refused.err().map(|e| e.code), Some(ErrorCode::Conflict));
        let stop = ControlRequest::Stop {
            service: None,
            shutdown: false,
            graceful: true,
        };
        let stop = plan(run(&mut room, |r, cx| r.handle(cx, stop, client(2))));
        assert_eq!(
            stop.steps,
            [
                Step::Stop(Component::Worker),
                Step::Stop(Component::Monitor)
            ]
        );
        let (_, stopped) = answer(carry(&mut room, stop, None));
        assert_eq!(
            stopped.ok(),
            Some(json!({"stopped": ["worker", "monitor"]}))
        );
        assert_eq!(running(&room), ["control"]);

        // Starting everything starts only what is stopped; a failed step stops the plan,
        // and its error is the answer.
        let start = ControlRequest::Start { service: None };
        let start = plan(run(&mut room, |r, cx| r.handle(cx, start, client(3))));
        assert_eq!(
            start.steps,
            [
                Step::Start(Component::Worker),
                Step::Start(Component::Monitor)
            ]
        );
        let fail = Some(Step::Start(Component::Worker));
        let (_, failed) = answer(carry(&mut room, start, fail));
        assert_eq!(failed.err().map(|e| e.code), Some(ErrorCode::Internal));
        assert_eq!(running(&room), ["control"]);
        let worker = room.states().find(|(n, _)| *n == "worker").map(|(_, s)| s);
        assert_eq!(
            worker.and_then(|s| s.last_error.clone()).as_deref(),
            Some("no")
        );
    }

    #[test]
    fn restarting_everything_reloads_the_configuration_first() {
        let mut room = Components::default();
        let restart = ControlRequest::Restart { service: None };
        let out = run(&mut room, |r, cx| r.handle(cx, restart.clone(), client(1)));
        let [Output::Effect(Effect::Request { from, tag, request })] = &out[..] else {
            panic!("one request: {out:?}");
        };
        assert_eq!(
            (*from, &**request),
            ("components", &Request::Config(ConfigRequest::Reload))
        );
        // The reload is refused: so is the restart, and nothing is restarted.
        let refused = ApiError::new(ErrorCode::ConfigInvalid, "bad file");
        let tag = *tag;
        let (to, answered) = answer(run(&mut room, |r, cx| r.on_answer(cx, tag, Err(refused))));
        assert_eq!(to, 1);
        assert_eq!(
            answered.err().map(|e| e.code),
            Some(ErrorCode::ConfigInvalid)
        );

        // Accepted: every component restarts, and the answer carries the reload's report.
        let out = run(&mut room, |r, cx| r.handle(cx, restart, client(2)));
        let [Output::Effect(Effect::Request { tag, .. })] = &out[..] else {
            panic!("one request: {out:?}");
        };
        let tag = *tag;
        let report = json!({"changed": []});
        let all = plan(run(&mut room, |r, cx| r.on_answer(cx, tag, Ok(report))));
        assert_eq!(all.steps.len(), 3);
        let (_, done) = answer(carry(&mut room, all, None));
        assert_eq!(
            done.ok(),
            Some(json!({"restarted": NAMES, "config": {"changed": []}}))
        );
        assert!(room.states().all(|(_, s)| s.running && s.restarts == 1));
    }
}
