//! The health-rounds room: checks of the daemon's own components, one round at a time,
//! results kept for a second, and the one place that decides on repairs. It also owns the
//! `monitor` component's schedule: while the monitor runs, every interval comes out as an
//! [`Output::Tick`], on which the wiring starts a round (and does its other periodic work).
//!
//! A round starts from a [`Facts`] snapshot the wiring takes of the other components (is the
//! control socket still ours, is the monitor on, is the worker alive, which state documents
//! are read-only); the state directory is probed (write, fsync, rename) on the worker, since
//! an fsync on a slow SD card must never stall the loop. When the round ends, every waiting
//! client is answered and each broken component that can be repaired comes out as a
//! [`Output::Repair`] for the wiring to carry out.
//!
//! Invariants: at most one round runs; every waiter is answered exactly once, when its round
//! ends; a round ends exactly once (the probe's result, or the failure standing for it).

use crate::api::{Answer, ApiError, ErrorCode, ReplyTo};
use crate::diagnostics;
use crate::reactor::timer::TimerId;
use crate::room::{Effect, Room, RoomCx};
use crate::state;
use crate::sys;
use serde_json::{json, Map};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How long a round waits for the worker's answer.
pub const WORKER_PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Results younger than this answer `GET /api/v1/health` without a new round.
pub const CACHE: Duration = Duration::from_secs(1);
/// Components a failed check restarts.
const REPAIRABLE: [&str; 2] = ["control", "worker"];

/// One component's last check.
#[derive(Debug, Clone)]
pub struct HealthResult {
    /// Whether it passed.
    pub healthy: bool,
    /// `running`, `stopped`, `failing`, `ok`, `unchecked`.
    pub status: &'static str,
    /// What was found, for people.
    pub message: String,
    /// When.
    pub checked_at: SystemTime,
}

impl HealthResult {
    /// A result checked now.
    pub fn now(healthy: bool, status: &'static str, message: impl Into<String>) -> Self {
        HealthResult {
            healthy,
            status,
            message: message.into(),
            checked_at: SystemTime::now(),
        }
    }
}

/// The worker as the wiring sees it when a round starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Stopped by the operator.
    Stopped,
    /// Its thread ended.
    Dead,
    /// Running: the round probes the state directory on it.
    Alive,
}

/// What a round needs to know of the other components, handed over by the wiring.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The control socket's check.
    pub control: HealthResult,
    /// The worker.
    pub worker: WorkerState,
    /// State documents the daemon refuses to overwrite, each with why.
    pub read_only: Vec<String>,
    /// The state directory and the documents kept in it (probed on the worker).
    pub state_dir: PathBuf,
    /// The documents kept in the state directory.
    pub documents: &'static [&'static str],
}

/// The probe's outcome: `Ok` with what it found when the worker ran it, `Err(why)` when it
/// did not.
#[derive(Debug)]
pub struct Job(Result<Result<Vec<Duration>, String>, String>);

/// What the room hands to the wiring.
#[derive(Debug)]
pub enum Output {
    /// A common effect (answers to waiting clients).
    Effect(Effect),
    /// Restart this component: its check failed (the message says why).
    Repair(&'static str, String),
    /// The monitor's interval passed: time for a round.
    Tick,
}

/// The room's timer: the monitor's next tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick;

/// The monitor's schedule while it runs.
struct Monitor {
    timer: TimerId,
    every: Duration,
}

impl From<Effect> for Output {
    fn from(e: Effect) -> Self {
        Output::Effect(e)
    }
}

struct Round {
    results: BTreeMap<String, HealthResult>,
    /// When the probe was submitted, while it is out.
    probe_since: Option<Instant>,
    waiting: Vec<(ReplyTo, Option<String>)>,
    read_only: Vec<String>,
}

/// The health-rounds room.
#[derive(Default)]
pub struct Health {
    results: BTreeMap<String, HealthResult>,
    at: Option<Instant>,
    /// The last round's unfiltered answer, serialized: (error without its data, data JSON).
    cache: Option<(Option<ApiError>, Vec<u8>)>,
    round: Option<Round>,
    monitor: Option<Monitor>,
}

impl Health {
    /// Starts the monitor (ticks every `every`); no-op when it runs.
    pub fn start_monitor(&mut self, cx: &mut RoomCx<'_, Self>, every: Duration) {
        if self.monitor.is_none() {
            let timer = cx.timers().insert(Instant::now() + every, Tick);
            self.monitor = Some(Monitor { timer, every });
        }
    }

    /// Stops the monitor.
    pub fn stop_monitor(&mut self, cx: &mut RoomCx<'_, Self>) {
        if let Some(m) = self.monitor.take() {
            cx.timers().cancel(m.timer);
        }
    }

    /// A new interval: a running monitor ticks next `every` from now.
    pub fn set_interval(&mut self, cx: &mut RoomCx<'_, Self>, every: Duration) {
        if self.monitor.is_some() {
            self.stop_monitor(cx);
            self.start_monitor(cx, every);
        }
    }

    /// The monitor's interval while it runs.
    pub fn monitoring(&self) -> Option<Duration> {
        self.monitor.as_ref().map(|m| m.every)
    }

    /// The last check of `name`.
    pub fn result(&self, name: &str) -> Option<&HealthResult> {
        self.results.get(name)
    }

    /// Whether the last round is recent enough to answer from (and none is running).
    pub fn fresh(&self) -> bool {
        self.round.is_none() && self.at.is_some_and(|t| t.elapsed() < CACHE)
    }

    /// Starts a round (or joins the running one) and answers `waiter` when it ends.
    pub fn start_round(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        facts: Facts,
        waiter: Option<(ReplyTo, Option<String>)>,
    ) {
        if let Some(round) = &mut self.round {
            round.waiting.extend(waiter);
            return;
        }
        let mut results = BTreeMap::new();
        results.insert("control".to_string(), facts.control);
        // Until the worker answers, the state directory is unchecked; read-only documents are
        // known without I/O and are reported at once.
        let state = state_result(&facts.read_only, None, SystemTime::now());
        let state = if state.healthy {
            HealthResult::now(true, "unchecked", "not checked: the worker is not running")
        } else {
            state
        };
        results.insert("state".to_string(), state);
        let monitor = match self.monitoring() {
            Some(every) => {
                HealthResult::now(true, "running", format!("every {} ms", every.as_millis()))
            }
            None => HealthResult::now(true, "stopped", "stopped by the operator"),
        };
        results.insert("monitor".to_string(), monitor);
        match facts.worker {
            WorkerState::Stopped => {
                let stopped = HealthResult::now(true, "stopped", "stopped by the operator");
                results.insert("worker".to_string(), stopped);
            }
            WorkerState::Dead => {
                let dead = HealthResult::now(false, "failing", "worker thread has died");
                results.insert("worker".to_string(), dead);
            }
            WorkerState::Alive => {}
        }
        self.round = Some(Round {
            results,
            probe_since: None,
            waiting: waiter.into_iter().collect(),
            read_only: facts.read_only,
        });
        if facts.worker != WorkerState::Alive {
            self.finish(cx);
            return;
        }
        let (dir, documents) = (facts.state_dir, facts.documents);
        let submitted = cx.submit(
            WORKER_PING_TIMEOUT,
            move || Job(Ok(probe_state(&dir, documents))),
            |why| Job(Err(why.to_string())),
        );
        match submitted {
            Ok(()) => {
                if let Some(round) = &mut self.round {
                    round.probe_since = Some(Instant::now());
                }
            }
            // Recorded as the worker's result; that ends the round.
            Err(failed) => self.on_job(cx, failed),
        }
    }

    /// Records the round's results, answers whoever asked, and decides on repairs.
    fn finish(&mut self, cx: &mut RoomCx<'_, Self>) {
        let Some(round) = self.round.take() else {
            return;
        };
        for (name, result) in &round.results {
            let was = self.results.get(name).map(|h| h.healthy);
            if was != Some(result.healthy) && (was.is_some() || !result.healthy) {
                if result.healthy {
                    log::info!("component {name} is healthy again: {}", result.message);
                } else {
                    log::warn!("component {name} is unhealthy: {}", result.message);
                }
            }
        }
        self.results = round.results;
        self.at = Some(Instant::now());
        self.cache = None;
        for (reply, filter) in round.waiting {
            let answer = self.answer(filter.as_deref());
            cx.reply(reply, answer);
        }
        // Repairs: the one place that turns check results into actions.
        for name in REPAIRABLE {
            if let Some(h) = self.results.get(name).filter(|h| !h.healthy) {
                cx.emit(Output::Repair(name, h.message.clone()));
            }
        }
    }

    /// The last round's unfiltered answer, serialized once per round: (the error without its
    /// data, the data as JSON). A monitor polling health costs an envelope, not a report.
    pub fn cached(&mut self) -> &(Option<ApiError>, Vec<u8>) {
        let answer = &self.results;
        self.cache
            .get_or_insert_with(|| match answer_of(answer, None) {
                Ok(v) => (None, serde_json::to_vec(&v).unwrap_or_default()),
                Err(mut e) => {
                    let data = e
                        .data
                        .take()
                        .map(|d| serde_json::to_vec(&d).unwrap_or_default());
                    (Some(e), data.unwrap_or_else(|| b"null".to_vec()))
                }
            })
    }

    /// The last round's results, of one component when `filter` names it.
    pub fn answer(&self, filter: Option<&str>) -> Answer {
        answer_of(&self.results, filter)
    }
}

impl Room for Health {
    type Timer = Tick;
    type Job = Job;
    type Output = Output;
    const NAME: &'static str = "health";

    /// `components` in the health view: the last round's verdicts (the error's data when
    /// the round found a failure, as `GET /api/v1/health` carries them).
    fn view(&self, view: crate::room::View, out: &mut Map<String, serde_json::Value>) {
        if view == crate::room::View::Health {
            let components = self
                .answer(None)
                .unwrap_or_else(|e| e.data.unwrap_or(serde_json::Value::Null));
            out.insert("components".into(), components);
        }
    }

    fn on_timer(&mut self, cx: &mut RoomCx<'_, Self>, Tick: Tick) {
        let Some(every) = self.monitoring() else {
            return; // stopped: its timer was cancelled, this is a stale one
        };
        let timer = cx.timers().insert(Instant::now() + every, Tick);
        self.monitor = Some(Monitor { timer, every });
        cx.emit(Output::Tick);
    }

    fn apply_config(&mut self, cx: &mut RoomCx<'_, Self>, config: &crate::config::Config) {
        let every = Duration::from_millis(config.monitoring.health_check_interval_ms);
        if self.monitoring().is_some_and(|running| running != every) {
            self.set_interval(cx, every);
        }
    }

    fn on_job(&mut self, cx: &mut RoomCx<'_, Self>, Job(outcome): Job) {
        let Some(round) = &mut self.round else {
            return;
        };
        let now = SystemTime::now();
        let took = round.probe_since.map_or(Duration::ZERO, |t| t.elapsed());
        let worker = match &outcome {
            Ok(_) => HealthResult {
                healthy: true,
                status: "running",
                message: format!("answered in {:.2} ms", took.as_secs_f64() * 1000.0),
                checked_at: now,
            },
            Err(why) => HealthResult {
                healthy: false,
                status: "failing",
                message: why.clone(),
                checked_at: now,
            },
        };
        round.results.insert("worker".into(), worker);
        if let Ok(probe) = outcome {
            let state = state_result(&round.read_only, Some(probe), now);
            round.results.insert("state".into(), state);
        }
        self.finish(cx);
    }
}

/// The state component's result from the worker's probe (if it ran) and the documents the
/// daemon refuses to overwrite.
fn state_result(
    read_only: &[String],
    probe: Option<Result<Vec<Duration>, String>>,
    checked_at: SystemTime,
) -> HealthResult {
    let mut problems = read_only.to_vec();
    let took = match probe {
        Some(Ok(t)) => t.first().copied(),
        Some(Err(e)) => {
            problems.push(e);
            None
        }
        None => None,
    };
    if problems.is_empty() {
        HealthResult {
            healthy: true,
            status: "ok",
            message: format!(
                "writable, write+fsync took {:.1} ms",
                took.map_or(0.0, |d| d.as_secs_f64() * 1000.0)
            ),
            checked_at,
        }
    } else {
        HealthResult {
            healthy: false,
            status: "failing",
            message: problems.join("; "),
            checked_at,
        }
    }
}

fn answer_of(results: &BTreeMap<String, HealthResult>, filter: Option<&str>) -> Answer {
    let mut components = Map::new();
    let mut failing = Vec::new();
    for (name, h) in results {
        if filter.is_some_and(|f| f != name) {
            continue;
        }
        if !h.healthy {
            failing.push(name.clone());
        }
        components.insert(
            name.clone(),
            json!({
                "healthy": h.healthy,
                "status": h.status,
                "message": h.message,
                "checked_at": state::rfc3339_utc_millis(h.checked_at),
            }),
        );
    }
    let data = json!({
        "status": if failing.is_empty() { "healthy" } else { "unhealthy" },
        "components": components,
        "failing": failing,
    });
    if failing.is_empty() {
        Ok(data)
    } else {
        Err(ApiError::new(
            ErrorCode::Unhealthy,
            format!("unhealthy: {}", failing.join(", ")),
        )
        .with_data(data))
    }
}

/// The worker's probe of the state directory: the documents' paths first (a directory where
/// `servers.json` belongs makes every registration fail), then one write+fsync+rename cycle.
fn probe_state(dir: &Path, documents: &[&str]) -> Result<Vec<Duration>, String> {
    let mut problems = state::check_documents(dir, documents);
    if !sys::writable(dir) {
        problems.insert(0, format!("state dir {} is not writable", dir.display()));
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    diagnostics::fsync_latency(dir, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConnId;
    use crate::room::testing::{enter, Inline};

    fn facts(dir: &Path, worker: WorkerState, control_ok: bool) -> Facts {
        Facts {
            control: HealthResult::now(control_ok, "running", "listening"),
            worker,
            read_only: Vec::new(),
            state_dir: dir.to_path_buf(),
            documents: &["servers.json"],
        }
    }

    fn reply(n: u64) -> ReplyTo {
        ReplyTo::Ws {
            conn: ConnId {
                slot: 0,
                generation: 1,
            },
            local: n,
            started: Instant::now(),
            request_id: n,
        }
    }

    fn answers(out: &[Output]) -> Vec<(u64, bool)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Effect(Effect::Reply(ReplyTo::Ws { local, .. }, a)) => {
                    Some((*local, a.is_ok()))
                }
                _ => None,
            })
            .collect()
    }

    fn repairs(out: &[Output]) -> Vec<&'static str> {
        out.iter()
            .filter_map(|o| match o {
                Output::Repair(name, _) => Some(*name),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_round_answers_every_waiter_once_when_its_probe_comes_back() {
        let dir = std::env::temp_dir().join(format!("vsm-health-room-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut room = Health::default();
        let mut wiring = Inline::new();
        let mut out = Vec::new();
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.start_round(
                cx,
                facts(&dir, WorkerState::Alive, true),
                Some((reply(1), None)),
            );
            // A second request joins the running round instead of starting one.
            r.start_round(
                cx,
                facts(&dir, WorkerState::Alive, true),
                Some((reply(2), None)),
            );
        });
        assert!(
            out.is_empty(),
            "nobody is answered before the probe is back"
        );
        assert!(!room.fresh());
        let done: Vec<Job> = std::mem::take(&mut wiring.done);
        assert_eq!(done.len(), 1, "one probe per round");
        for job in done {
            enter(&mut room, &mut wiring, &mut out, |r, cx| r.on_job(cx, job));
        }
        assert_eq!(answers(&out), vec![(1, true), (2, true)]);
        assert!(repairs(&out).is_empty());
        assert!(room.fresh());
        assert_eq!(room.result("worker").map(|h| h.status), Some("running"));
        assert_eq!(room.result("state").map(|h| h.status), Some("ok"));
        let (error, data) = room.cached();
        assert!(error.is_none());
        assert!(String::from_utf8_lossy(data).contains("\"healthy\""));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_refused_probe_fails_the_worker_and_broken_components_come_out_as_repairs() {
        let dir = std::env::temp_dir();
        let mut room = Health::default();
        let mut wiring = Inline::new();
        wiring.refuse = Some("worker queue is full");
        let mut out = Vec::new();
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.start_round(
                cx,
                facts(&dir, WorkerState::Alive, false),
                Some((reply(7), None)),
            );
        });
        assert_eq!(answers(&out), vec![(7, false)]);
        assert_eq!(repairs(&out), vec!["control", "worker"]);
        let worker = room.result("worker").expect("worker checked");
        assert_eq!(
            (worker.healthy, worker.message.as_str()),
            (false, "worker queue is full")
        );
        assert_eq!(room.result("state").map(|h| h.status), Some("unchecked"));
        // A stopped worker is not a failure: nothing to repair, no probe.
        out.clear();
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.start_round(cx, facts(&dir, WorkerState::Stopped, true), None);
        });
        assert!(repairs(&out).is_empty());
        assert!(wiring.done.is_empty());
    }

    #[test]
    fn the_monitor_ticks_on_its_interval_until_stopped() {
        let mut room = Health::default();
        let mut wiring = Inline::new();
        let mut out = Vec::new();
        let every = Duration::from_millis(50);
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.start_monitor(cx, every);
            r.start_monitor(cx, Duration::from_secs(9)); // already running: no second timer
        });
        assert_eq!(room.monitoring(), Some(every));
        assert_eq!(wiring.wheel.len(), 1);
        let mut fired = Vec::new();
        wiring
            .wheel
            .expire(Instant::now() + Duration::from_secs(1), &mut fired);
        assert_eq!(fired.len(), 1);
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.on_timer(cx, Tick)
        });
        assert!(matches!(out.as_slice(), [Output::Tick]));
        assert_eq!(wiring.wheel.len(), 1, "re-armed");
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.set_interval(cx, Duration::from_secs(2));
        });
        assert_eq!(room.monitoring(), Some(Duration::from_secs(2)));
        assert_eq!(wiring.wheel.len(), 1);
        enter(&mut room, &mut wiring, &mut out, |r, cx| r.stop_monitor(cx));
        assert_eq!((room.monitoring(), wiring.wheel.len()), (None, 0));
        out.clear();
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.on_timer(cx, Tick); // a stale tick
            r.set_interval(cx, every); // a stopped monitor stays stopped
        });
        assert!(out.is_empty());
        assert_eq!((room.monitoring(), wiring.wheel.len()), (None, 0));
    }

    #[test]
    fn live_configuration_moves_a_running_monitor_and_leaves_a_stopped_one() {
        let mut room = Health::default();
        let mut wiring = Inline::new();
        let mut out = Vec::new();
        let mut config = crate::config::Config::default();
        config.monitoring.health_check_interval_ms = 5000;
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.start_monitor(cx, Duration::from_secs(1));
            r.apply_config(cx, &config);
        });
        assert_eq!(room.monitoring(), Some(Duration::from_secs(5)));
        assert_eq!(wiring.wheel.len(), 1, "one timer, re-armed");
        let armed = room.monitor.as_ref().map(|m| m.timer);
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.apply_config(cx, &config)
        });
        assert_eq!(
            room.monitor.as_ref().map(|m| m.timer),
            armed,
            "an unchanged interval keeps its timer"
        );
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.stop_monitor(cx);
            r.apply_config(cx, &config);
        });
        assert_eq!((room.monitoring(), wiring.wheel.len()), (None, 0));
        assert!(out.is_empty());
    }

    #[test]
    fn the_state_result_names_every_problem() {
        let now = SystemTime::now();
        let ok = state_result(&[], Some(Ok(vec![Duration::from_millis(2)])), now);
        assert!(ok.healthy);
        assert_eq!(ok.message, "writable, write+fsync took 2.0 ms");
        let ro = vec!["state file x is read-only: newer version".to_string()];
        let bad = state_result(&ro, Some(Err("state dir d is not writable".into())), now);
        assert!(!bad.healthy);
        assert_eq!(
            bad.message,
            "state file x is read-only: newer version; state dir d is not writable"
        );
    }

    #[test]
    fn the_answer_is_unhealthy_when_one_component_fails_and_filters_by_name() {
        let mut results = BTreeMap::new();
        results.insert("a".to_string(), HealthResult::now(true, "ok", "fine"));
        results.insert(
            "b".to_string(),
            HealthResult::now(false, "failing", "broken"),
        );
        let err = answer_of(&results, None).expect_err("b fails");
        assert_eq!(err.code, ErrorCode::Unhealthy);
        assert_eq!(err.message, "unhealthy: b");
        let only_a = answer_of(&results, Some("a")).expect("a is fine");
        assert_eq!(only_a["components"].as_object().map(Map::len), Some(1));
        assert_eq!(only_a["status"], "healthy");
    }
}
