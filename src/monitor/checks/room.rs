//! The checks room: every declared check on its own timer, one run at a time, each run's
//! result kept and reported as an [`Observation`] (rule `check:NAME`, family health).
//!
//! Where each kind runs: `tcp` is a non-blocking connect on the loop (writable = up; an error
//! or the deadline = down), with host names resolved on the worker first; `exec` is a
//! sandboxed child ([`ChildRun`]) read on the loop, killed as a group at the deadline and
//! finished when the daemon reaps it ([`crate::room::Parent::on_child_exit`]); `http`,
//! `file`, `process` and `filesystem` run on the worker ([`probe`]), which blocks or walks
//! directories.
//!
//! Invariants: a check has at most one run (a due time that finds it running is skipped and
//! counted); every run ends exactly once — its result, its deadline, or the daemon reaping its
//! child — and every client waiting on it (`checks run NAME`) is answered then; timers and
//! job results of a replaced or removed check are recognised by the run id and ignored; a
//! removed check reports a last good observation so that its alert resolves; slots, tokens
//! and captures are bounded (see [`SLOTS`]).

use super::probe::{self, metric_of, Outcome};
use super::spec::{host_port, CheckKind, CheckSpec, MAX_CHECKS};
use crate::api::{ApiError, ErrorCode, ReplyTo};
use crate::mcp::process::PipeTokens;
use crate::monitor::child::ChildRun;
use crate::monitor::observation::{Family, Hysteresis, Observation, Severity};
use crate::reactor::timer::TimerId;
use crate::reactor::TokenRange;
use crate::room::{Effect, Room, RoomCx};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

/// Check slots: the configured checks plus as many removed ones still finishing a run.
pub const SLOTS: usize = 2 * MAX_CHECKS;
/// Tokens the room needs: three pipes per slot (a tcp run uses the first).
pub const TOKENS_NEEDED: usize = 3 * SLOTS;
/// Extra time a worker job gets beyond the check's own timeout (ureq enforces that one).
const WORKER_GRACE: Duration = Duration::from_millis(1000);
/// Delay between the first runs of checks added together.
const STAGGER: Duration = Duration::from_millis(20);
/// Clients waiting on one check's run.
const MAX_WAITERS: usize = 64;

/// The room's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// A check is due (`gen` names the spec it was armed for).
    Due {
        /// Slot.
        slot: usize,
        /// Generation of the entry.
        gen: u64,
    },
    /// A run's deadline.
    Deadline {
        /// Slot.
        slot: usize,
        /// The run.
        run: u64,
    },
}

/// What comes back from the worker.
#[derive(Debug)]
pub enum Job {
    /// A worker check finished (or its failure stands for it).
    Done {
        /// Slot.
        slot: usize,
        /// The run.
        run: u64,
        /// What it found.
        outcome: Outcome,
    },
    /// A tcp target's host was resolved.
    Resolved {
        /// Slot.
        slot: usize,
        /// The run.
        run: u64,
        /// The address, or why not.
        addr: Result<SocketAddr, String>,
    },
}

/// What the room hands to the wiring.
#[derive(Debug)]
pub enum Output {
    /// A common effect (answers).
    Effect(Effect),
    /// A run's reading, for the room that decides.
    Observe(Observation),
}

impl From<Effect> for Output {
    fn from(e: Effect) -> Self {
        Output::Effect(e)
    }
}

/// How a run is being carried out.
#[derive(Debug)]
enum How {
    /// On the worker.
    Worker,
    /// Resolving the tcp host on the worker.
    Resolving,
    /// Connecting.
    Tcp(mio::net::TcpStream),
    /// A child.
    Exec(Box<ChildRun>),
}

#[derive(Debug)]
struct Running {
    id: u64,
    started: Instant,
    deadline: Option<TimerId>,
    how: How,
    waiters: Vec<ReplyTo>,
}

/// The last result of a check.
#[derive(Debug, Clone)]
struct Last {
    outcome: Outcome,
    at: SystemTime,
    duration: Duration,
}

#[derive(Debug)]
struct Entry {
    spec: CheckSpec,
    gen: u64,
    /// No longer configured: freed when its run ends.
    removed: bool,
    due: Option<TimerId>,
    running: Option<Running>,
    last: Option<Last>,
    /// When up/down last changed.
    changed: Option<SystemTime>,
    consecutive_failures: u32,
    consecutive_successes: u32,
    runs: u64,
    skipped: u64,
}

/// The checks room.
#[derive(Debug)]
pub struct Checks {
    slots: Vec<Option<Entry>>,
    tokens: TokenRange,
    next_run: u64,
    next_gen: u64,
    /// `security.ca_file`, handed to each http run (read there, on the worker).
    ca_file: String,
}

impl Room for Checks {
    type Timer = Timer;
    type Job = Job;
    type Output = Output;
    const NAME: &'static str = "checks";

    fn metrics(&self, out: &mut crate::telemetry::Exposition) {
        self.write_prometheus(out);
    }

    /// A reload adds, changes and removes checks (a removed one reports a last good reading).
    fn apply_config(&mut self, cx: &mut RoomCx<'_, Self>, config: &crate::config::Config) {
        self.ca_file.clone_from(&config.security.ca_file);
        self.sync(cx, &config.checks);
    }

    fn on_timer(&mut self, cx: &mut RoomCx<'_, Self>, timer: Timer) {
        match timer {
            Timer::Due { slot, gen } => {
                let Some(e) = self.entry_mut(slot).filter(|e| e.gen == gen && !e.removed) else {
                    return;
                };
                e.due = None;
                let every = Duration::from_millis(e.spec.every_ms);
                e.due = Some(
                    cx.timers()
                        .insert(Instant::now() + every, Timer::Due { slot, gen }),
                );
                if e.running.is_some() {
                    e.skipped += 1;
                    return;
                }
                self.start(cx, slot, None);
            }
            Timer::Deadline { slot, run } => {
                let timeout = match self.entry_mut(slot) {
                    Some(e) => e.spec.timeout_ms,
                    None => return,
                };
                let Some(r) = self.running_mut(slot, run) else {
                    return;
                };
                r.deadline = None;
                if let How::Exec(child) = &mut r.how {
                    // The run ends when the killed child is reaped.
                    child.kill();
                    return;
                }
                let metric = self.entry_mut(slot).map_or("", |e| metric_of(e.spec.kind));
                self.finish(
                    cx,
                    slot,
                    run,
                    Outcome::down(metric, format!("timed out after {timeout} ms")),
                );
            }
        }
    }

    fn on_job(&mut self, cx: &mut RoomCx<'_, Self>, done: Job) {
        match done {
            Job::Done { slot, run, outcome } => self.finish(cx, slot, run, outcome),
            Job::Resolved { slot, run, addr } => match addr {
                Ok(addr) => self.connect(cx, slot, run, addr),
                Err(why) => self.finish(cx, slot, run, Outcome::down("tcp_connect", why)),
            },
        }
    }
}

impl crate::room::Parent for Checks {
    /// Whether a readiness token is one of the room's.
    fn owns(&self, token: mio::Token) -> bool {
        self.tokens.owns(token)
    }

    /// Pids of the room's running children (the MCP room's orphan sweep must spare them).
    fn child_pids(&self) -> Vec<i32> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|e| match &e.running.as_ref()?.how {
                How::Exec(c) => Some(c.pid()),
                _ => None,
            })
            .collect()
    }

    /// A readiness event on one of the room's tokens.
    fn on_ready(&mut self, cx: &mut RoomCx<'_, Self>, token: mio::Token) {
        let Some(index) = self.tokens.index(token) else {
            return;
        };
        let slot = index / 3;
        let registry = cx.registry;
        let Some(r) = self.entry_mut(slot).and_then(|e| e.running.as_mut()) else {
            return;
        };
        let run = r.id;
        let outcome = match &mut r.how {
            How::Exec(child) => {
                child.on_ready(token, registry);
                return;
            }
            How::Tcp(stream) => match stream.take_error() {
                Ok(Some(e)) | Err(e) => Outcome::down("tcp_connect", format!("connect: {e}")),
                Ok(None) => match stream.peer_addr() {
                    Ok(peer) => Outcome::up("tcp_connect", 1.0, format!("connected to {peer}")),
                    Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {
                        // Spurious wake-up: still connecting.
                        return;
                    }
                    Err(e) => Outcome::down("tcp_connect", format!("connect: {e}")),
                },
            },
            _ => return,
        };
        self.finish(cx, slot, run, outcome);
    }

    /// The daemon reaped `pid`: if it is one of the room's children, its run ends.
    /// Returns whether it was.
    fn on_child_exit(&mut self, cx: &mut RoomCx<'_, Self>, pid: i32, status: i32) -> bool {
        let registry = cx.registry;
        let mut found = None;
        for (slot, s) in self.slots.iter_mut().enumerate() {
            let Some(r) = s.as_mut().and_then(|e| e.running.as_mut()) else {
                continue;
            };
            if let How::Exec(child) = &mut r.how {
                if child.pid() == pid {
                    let expect = s.as_ref().and_then(|e| e.spec.expect_exit).unwrap_or(0);
                    found = Some((slot, r_id(s), expect));
                    break;
                }
            }
        }
        let Some((slot, run, expect)) = found else {
            return false;
        };
        let timeout = self.entry_mut(slot).map_or(0, |e| e.spec.timeout_ms);
        let Some(r) = self.running_mut(slot, run) else {
            return true;
        };
        let How::Exec(child) = &mut r.how else {
            return true;
        };
        let (exit, _) = child.finish(status, registry);
        let output = {
            let out = child.stdout.text();
            let err = child.stderr.text();
            match (out.is_empty(), err.is_empty()) {
                (true, true) => String::new(),
                (false, true) => format!(": {out}"),
                (true, false) => format!(": {err}"),
                (false, false) => format!(": {out} / {err}"),
            }
        };
        let outcome = if child.timed_out {
            Outcome::down(
                "exit_code",
                format!("timed out after {timeout} ms, killed{output}"),
            )
        } else {
            match exit {
                crate::monitor::child::Exit::Code(c) => Outcome {
                    up: c == expect,
                    metric: "exit_code",
                    value: f64::from(c),
                    threshold: Some(f64::from(expect)),
                    message: probe::bounded(format!("{}{output}", exit.describe())),
                },
                other => Outcome::down("exit_code", format!("{}{output}", other.describe())),
            }
        };
        self.finish(cx, slot, run, outcome);
        true
    }
}

impl Checks {
    /// A room without checks; connections and pipes use `tokens` ([`TOKENS_NEEDED`] of them).
    pub fn new(tokens: TokenRange) -> Checks {
        Checks {
            slots: (0..SLOTS).map(|_| None).collect(),
            tokens,
            next_run: 1,
            next_gen: 1,
            ca_file: String::new(),
        }
    }

    fn entry_mut(&mut self, slot: usize) -> Option<&mut Entry> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    fn running_mut(&mut self, slot: usize, run: u64) -> Option<&mut Running> {
        self.entry_mut(slot)
            .and_then(|e| e.running.as_mut())
            .filter(|r| r.id == run)
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| {
            s.as_ref()
                .is_some_and(|e| !e.removed && e.spec.name == name)
        })
    }

    fn pipe_tokens(&self, slot: usize) -> Option<PipeTokens> {
        Some(PipeTokens {
            stdout: self.tokens.token(3 * slot)?,
            stderr: self.tokens.token(3 * slot + 1)?,
            stdin: self.tokens.token(3 * slot + 2)?,
        })
    }

    /// Makes the running set of checks `specs`: new ones start now (staggered), removed ones stop (a last
    /// good observation resolves their alerts; a run in flight is ended and answered), changed
    /// ones restart their schedule with the new spec.
    pub fn sync(&mut self, cx: &mut RoomCx<'_, Self>, specs: &[CheckSpec]) {
        for slot in 0..self.slots.len() {
            let Some(e) = self.slots[slot].as_ref().filter(|e| !e.removed) else {
                continue;
            };
            match specs.iter().find(|s| s.name == e.spec.name) {
                None => self.remove(cx, slot),
                Some(s) if *s != e.spec => {
                    let spec = s.clone();
                    self.reschedule(cx, slot, spec);
                }
                Some(_) => {}
            }
        }
        // New checks start one after another, STAGGER apart (within their own period), so
        // that a config with many checks does not spawn them all in one loop turn.
        let mut added = 0u32;
        for spec in specs {
            if self.find(&spec.name).is_some() {
                continue;
            }
            let first =
                Instant::now() + (STAGGER * added).min(Duration::from_millis(spec.every_ms) / 2);
            added += 1;
            let Some(slot) = self.slots.iter().position(Option::is_none) else {
                log::warn!("check {} not started: every check slot is busy", spec.name);
                continue;
            };
            let gen = self.next_gen;
            self.next_gen += 1;
            self.slots[slot] = Some(Entry {
                spec: spec.clone(),
                gen,
                removed: false,
                due: Some(cx.timers().insert(first, Timer::Due { slot, gen })),
                running: None,
                last: None,
                changed: None,
                consecutive_failures: 0,
                consecutive_successes: 0,
                runs: 0,
                skipped: 0,
            });
        }
    }

    fn reschedule(&mut self, cx: &mut RoomCx<'_, Self>, slot: usize, spec: CheckSpec) {
        let gen = self.next_gen;
        self.next_gen += 1;
        let Some(e) = self.entry_mut(slot) else {
            return;
        };
        if let Some(t) = e.due.take() {
            cx.timers().cancel(t);
        }
        e.spec = spec;
        e.gen = gen;
        e.due = Some(cx.timers().insert(Instant::now(), Timer::Due { slot, gen }));
    }

    fn remove(&mut self, cx: &mut RoomCx<'_, Self>, slot: usize) {
        let Some(e) = self.entry_mut(slot) else {
            return;
        };
        e.removed = true;
        if let Some(t) = e.due.take() {
            cx.timers().cancel(t);
        }
        let obs = Observation {
            bad: false,
            message: "check removed from the configuration".into(),
            ..observation(&e.spec, &Outcome::up(metric_of(e.spec.kind), 1.0, ""))
        };
        cx.emit(Output::Observe(obs));
        let run = e.running.as_ref().map(|r| r.id);
        match run {
            // A child is killed; its slot is freed when it is reaped.
            Some(run) if matches!(e.running.as_ref().map(|r| &r.how), Some(How::Exec(_))) => {
                if let Some(r) = self.running_mut(slot, run) {
                    if let How::Exec(child) = &mut r.how {
                        child.kill();
                    }
                }
            }
            Some(run) => {
                let outcome = Outcome::down("removed", "check removed from the configuration");
                self.finish(cx, slot, run, outcome);
            }
            None => self.slots[slot] = None,
        }
    }

    /// `checks run NAME`: runs the check now (or joins the run in flight) and answers `reply`
    /// with the result when it ends.
    ///
    /// # Errors
    /// No such check (`not_found`), or too many clients waiting (`busy`).
    pub fn run_now(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        name: &str,
        reply: ReplyTo,
    ) -> Result<(), ApiError> {
        let slot = self.find(name).ok_or_else(|| not_found(name))?;
        if let Some(r) = self.entry_mut(slot).and_then(|e| e.running.as_mut()) {
            if r.waiters.len() >= MAX_WAITERS {
                return Err(ApiError::new(
                    ErrorCode::Busy,
                    format!("{MAX_WAITERS} clients already wait for check '{name}'"),
                ));
            }
            r.waiters.push(reply);
            return Ok(());
        }
        self.start(cx, slot, Some(reply));
        Ok(())
    }

    fn start(&mut self, cx: &mut RoomCx<'_, Self>, slot: usize, waiter: Option<ReplyTo>) {
        let run = self.next_run;
        self.next_run += 1;
        let tokens = self.pipe_tokens(slot);
        let Some(e) = self.entry_mut(slot) else {
            return;
        };
        let spec = e.spec.clone();
        let timeout = Duration::from_millis(spec.timeout_ms);
        e.running = Some(Running {
            id: run,
            started: Instant::now(),
            deadline: None,
            how: How::Worker,
            waiters: waiter.into_iter().collect(),
        });
        match spec.kind {
            CheckKind::Tcp => {
                let arm = cx
                    .timers()
                    .insert(Instant::now() + timeout, Timer::Deadline { slot, run });
                if let Some(r) = self.running_mut(slot, run) {
                    r.deadline = Some(arm);
                }
                let Ok((host, port)) = host_port(&spec.target) else {
                    return self.finish(cx, slot, run, Outcome::down("tcp_connect", "bad target"));
                };
                let literal = host.parse::<std::net::IpAddr>().ok();
                match literal {
                    Some(ip) => self.connect(cx, slot, run, SocketAddr::new(ip, port)),
                    None => {
                        if let Some(r) = self.running_mut(slot, run) {
                            r.how = How::Resolving;
                        }
                        let host = host.to_string();
                        let submitted = cx.submit(
                            timeout,
                            move || Job::Resolved {
                                slot,
                                run,
                                addr: probe::resolve(&host, port),
                            },
                            move |why| Job::Resolved {
                                slot,
                                run,
                                addr: Err(why.to_string()),
                            },
                        );
                        if let Err(failed) = submitted {
                            self.on_job(cx, failed);
                        }
                    }
                }
            }
            CheckKind::Exec => {
                let spawned = match tokens {
                    Some(t) => ChildRun::spawn(&spec.argv, &[], cx.registry, t),
                    None => Err("no pipe tokens for this slot".into()),
                };
                match spawned {
                    Ok(child) => {
                        let arm = cx
                            .timers()
                            .insert(Instant::now() + timeout, Timer::Deadline { slot, run });
                        if let Some(r) = self.running_mut(slot, run) {
                            r.deadline = Some(arm);
                            r.how = How::Exec(Box::new(child));
                        }
                    }
                    Err(why) => self.finish(cx, slot, run, Outcome::down("exit_code", why)),
                }
            }
            _ => {
                let metric = metric_of(spec.kind);
                let ca_file = self.ca_file.clone();
                let submitted = cx.submit(
                    timeout + WORKER_GRACE,
                    move || Job::Done {
                        slot,
                        run,
                        outcome: probe::run(&spec, &ca_file),
                    },
                    move |why| Job::Done {
                        slot,
                        run,
                        outcome: Outcome::down(metric, format!("not run: {why}")),
                    },
                );
                if let Err(failed) = submitted {
                    self.on_job(cx, failed);
                }
            }
        }
    }

    fn connect(&mut self, cx: &mut RoomCx<'_, Self>, slot: usize, run: u64, addr: SocketAddr) {
        let Some(token) = self.tokens.token(3 * slot) else {
            return;
        };
        let registry = cx.registry;
        let Some(r) = self.running_mut(slot, run) else {
            return;
        };
        let connected = mio::net::TcpStream::connect(addr).and_then(|mut s| {
            registry.register(&mut s, token, mio::Interest::WRITABLE)?;
            Ok(s)
        });
        match connected {
            Ok(stream) => r.how = How::Tcp(stream),
            Err(e) => self.finish(
                cx,
                slot,
                run,
                Outcome::down("tcp_connect", format!("connect to {addr}: {e}")),
            ),
        }
    }

    /// Ends run `run` of `slot` with `outcome`: kept, reported, answered; the slot of a
    /// removed check is freed.
    fn finish(&mut self, cx: &mut RoomCx<'_, Self>, slot: usize, run: u64, outcome: Outcome) {
        let registry = cx.registry;
        let Some(e) = self.entry_mut(slot) else {
            return;
        };
        if e.running.as_ref().is_none_or(|r| r.id != run) {
            return;
        }
        let Some(r) = e.running.take() else {
            return;
        };
        if let Some(t) = r.deadline {
            cx.timers().cancel(t);
        }
        if let How::Tcp(mut stream) = r.how {
            let _ = registry.deregister(&mut stream);
        }
        let duration = r.started.elapsed();
        let was_up = e.last.as_ref().map(|l| l.outcome.up);
        if was_up != Some(outcome.up) {
            e.changed = Some(SystemTime::now());
        }
        if outcome.up {
            e.consecutive_failures = 0;
            e.consecutive_successes = e.consecutive_successes.saturating_add(1);
        } else {
            e.consecutive_successes = 0;
            e.consecutive_failures = e.consecutive_failures.saturating_add(1);
        }
        e.runs += 1;
        e.last = Some(Last {
            outcome: outcome.clone(),
            at: SystemTime::now(),
            duration,
        });
        if !e.removed {
            cx.emit(Output::Observe(observation(&e.spec, &outcome)));
        }
        let answer = entry_json(e);
        let removed = e.removed;
        for waiter in r.waiters {
            cx.reply(waiter, Ok(answer.clone()));
        }
        if removed {
            self.slots[slot] = None;
        }
    }

    /// `GET /api/v1/checks`: every check with its last result.
    pub fn list(&self) -> Value {
        let checks: Vec<Value> = self
            .slots
            .iter()
            .flatten()
            .filter(|e| !e.removed)
            .map(entry_json)
            .collect();
        json!({ "checks": checks })
    }

    /// `vsm_check_up{check}` and `vsm_check_duration_seconds{check}` for checks that ran.
    pub fn write_prometheus(&self, e: &mut crate::telemetry::Exposition) {
        let ran: Vec<(&str, &Last)> = self
            .slots
            .iter()
            .flatten()
            .filter(|e| !e.removed)
            .filter_map(|e| Some((e.spec.name.as_str(), e.last.as_ref()?)))
            .collect();
        let labels: Vec<[(&str, &str); 1]> = ran.iter().map(|(n, _)| [("check", *n)]).collect();
        let up: Vec<(&[(&str, &str)], f64)> = labels
            .iter()
            .zip(&ran)
            .map(|(l, (_, last))| (&l[..], f64::from(u8::from(last.outcome.up))))
            .collect();
        e.gauge(
            "vsm_check_up",
            "1 when the declared check passed its last run, else 0.",
            &up,
        );
        let took: Vec<(&[(&str, &str)], f64)> = labels
            .iter()
            .zip(&ran)
            .map(|(l, (_, last))| (&l[..], last.duration.as_secs_f64()))
            .collect();
        e.gauge(
            "vsm_check_duration_seconds",
            "How long the declared check's last run took.",
            &took,
        );
    }
}

fn r_id(s: &Option<Entry>) -> u64 {
    s.as_ref()
        .and_then(|e| e.running.as_ref())
        .map_or(0, |r| r.id)
}

fn not_found(name: &str) -> ApiError {
    ApiError::field(
        ErrorCode::NotFound,
        "name",
        format!(
            "no check named '{}'",
            name.chars().take(80).collect::<String>().escape_default()
        ),
    )
}

fn severity(s: &str) -> Severity {
    match s {
        "info" => Severity::Info,
        "warning" => Severity::Warning,
        _ => Severity::Critical,
    }
}

/// The observation a run of `spec` reports.
pub fn observation(spec: &CheckSpec, outcome: &Outcome) -> Observation {
    Observation {
        rule: spec.rule(),
        family: Family::Health,
        metric: outcome.metric.to_string(),
        value: outcome.value,
        threshold: outcome.threshold,
        bad: !outcome.up,
        severity: severity(&spec.severity),
        message: probe::bounded(format!("check {}: {}", spec.name, outcome.message)),
        actions: spec.actions.clone(),
        hysteresis: Hysteresis {
            failures_before_alert: spec.failures_before_alert,
            successes_before_clear: spec.successes_before_clear,
        },
    }
}

fn entry_json(e: &Entry) -> Value {
    let time = |t: Option<SystemTime>| t.map(crate::state::rfc3339_utc_millis);
    let status = match &e.last {
        None => "pending",
        Some(l) if l.outcome.up => "up",
        Some(_) => "down",
    };
    json!({
        "name": e.spec.name,
        "rule": e.spec.rule(),
        "kind": e.spec.kind.as_str(),
        "target": if e.spec.kind == CheckKind::Exec { e.spec.argv.join(" ") } else { e.spec.target.clone() },
        "status": status,
        "up": e.last.as_ref().map(|l| l.outcome.up),
        "message": e.last.as_ref().map(|l| l.outcome.message.clone()),
        "metric": e.last.as_ref().map(|l| l.outcome.metric),
        "value": e.last.as_ref().map(|l| l.outcome.value),
        "duration_ms": e.last.as_ref().map(|l| (l.duration.as_secs_f64() * 1e6).round() / 1e3),
        "last_run": time(e.last.as_ref().map(|l| l.at)),
        "last_change": time(e.changed),
        "consecutive_failures": e.consecutive_failures,
        "consecutive_successes": e.consecutive_successes,
        "runs": e.runs,
        "skipped": e.skipped,
        "running": e.running.is_some(),
        "every_ms": e.spec.every_ms,
        "timeout_ms": e.spec.timeout_ms,
        "actions": e.spec.actions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::TokenAllocator;
    use crate::room::testing::{enter, Inline};

    fn file_check(name: &str, target: &str) -> CheckSpec {
        toml::from_str(&format!(
            "name = \"{name}\"\nkind = \"file\"\ntarget = \"{target}\"\nevery_ms = 1000"
        ))
        .expect("spec")
    }

    /// Fires the timers due now and hands back finished worker jobs.
    fn settle(room: &mut Checks, wiring: &mut Inline<Timer, Job>, out: &mut Vec<Output>) {
        let mut fired = Vec::new();
        wiring
            .wheel
            .expire(Instant::now() + Duration::from_millis(5), &mut fired);
        for (_, t) in fired {
            enter(room, wiring, out, |r, cx| r.on_timer(cx, t));
        }
        for done in std::mem::take(&mut wiring.done) {
            enter(room, wiring, out, |r, cx| r.on_job(cx, done));
        }
    }

    fn observed(out: &[Output]) -> Vec<(String, bool, String)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Observe(o) => Some((o.rule.clone(), o.bad, o.message.clone())),
                Output::Effect(_) => None,
            })
            .collect()
    }

    #[test]
    fn added_checks_run_and_removed_ones_report_a_last_good_reading() {
        let mut room = Checks::new(TokenAllocator::default().take(TOKENS_NEEDED));
        let mut wiring = Inline::new();
        let mut out = Vec::new();
        let missing = file_check("gone", "/nonexistent/vsm-file");
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.sync(cx, std::slice::from_ref(&missing))
        });
        settle(&mut room, &mut wiring, &mut out);
        let first = observed(&out);
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!((first[0].0.as_str(), first[0].1), ("check:gone", true));
        out.clear();
        // Changed: its schedule restarts with the new spec (a new run, now good).
        let present = file_check("gone", "/proc/self/status");
        enter(&mut room, &mut wiring, &mut out, |r, cx| {
            r.sync(cx, std::slice::from_ref(&present))
        });
        settle(&mut room, &mut wiring, &mut out);
        let second = observed(&out);
        assert_eq!(second.len(), 1, "{second:?}");
        assert_eq!((second[0].0.as_str(), second[0].1), ("check:gone", false));
        assert_eq!(room.list()["checks"][0]["runs"], 2);
        out.clear();
        // Removed: one last good reading, so that its alert resolves; then it is gone.
        enter(&mut room, &mut wiring, &mut out, |r, cx| r.sync(cx, &[]));
        let last = observed(&out);
        assert_eq!(last.len(), 1, "{last:?}");
        assert!(!last[0].1 && last[0].2.contains("removed"), "{last:?}");
        assert_eq!(room.list()["checks"], json!([]));
        assert!(room.slots.iter().all(Option::is_none));
    }
}
