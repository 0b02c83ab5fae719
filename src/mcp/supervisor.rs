//! Restart policy as pure functions: what to do when a server's process ends, how long to
//! back off, when the circuit breaker opens. No I/O, no clocks of its own: time comes in.
//!
//! Rules (DESIGN.md §6): a start counts as good only after `min_uptime` AND a completed
//! `initialize`. A server whose run was good restarts at once (tool callers are waiting);
//! only consecutive failed starts back off, doubling from `initial` to `max` with ±20 %
//! jitter. A good run ends the sequence of failed starts, and `reset_after` of stable running
//! also clears the circuit breaker; `max_failures` failed starts within `window` open the
//! circuit (state `failed`, no automatic restarts) until an operator starts or resets it.
//! Immediate restarts cannot loop tightly: a good run lasts at least `min_uptime`, and never
//! less than [`MIN_RESTART_INTERVAL`] passes between two starts (`min_uptime` may be 0).
//! A run the daemon ended because the server broke its bounds (a tool list over the cap, a
//! flood of protocol errors, an over-long line) counts as a failed start however long it ran:
//! otherwise a server that misbehaves a second after every good start would loop forever.

//!
//! [`step`] is the whole lifecycle as one `(state, event) -> (state, actions)` function:
//! operator requests (start, stop, restart, reset, unregister, shutdown), the end of a run,
//! the backoff timer and what the session reports (handshake, tools listed, pings) come in
//! as [`Event`]s; status changes, spawns, stops and timers go out as [`Action`]s that the
//! loop carries out. Every status change it decides is a row of
//! [`server::TRANSITIONS`](super::server::TRANSITIONS), and its test finds every row.

use super::server::Status;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Numbers of the restart policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartPolicy {
    /// First backoff delay.
    pub initial: Duration,
    /// Largest backoff delay.
    pub max: Duration,
    /// Relative jitter (0.2 = ±20 %).
    pub jitter: f64,
    /// Stable running time after which the backoff resets.
    pub reset_after: Duration,
    /// Failed starts within `window` that open the circuit.
    pub max_failures: u32,
    /// Window for counting failed starts.
    pub window: Duration,
    /// Uptime a start needs to count as good.
    pub min_uptime: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            jitter: 0.2,
            reset_after: Duration::from_secs(600),
            max_failures: 5,
            window: Duration::from_secs(600),
            min_uptime: Duration::from_secs(1),
        }
    }
}

impl RestartPolicy {
    /// Delay before restart number `attempt` (0-based); `unit` in [0, 1) picks the jitter.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.initial.as_secs_f64() * 2f64.powi(attempt.min(30) as i32);
        let base = base.min(self.max.as_secs_f64());
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((base * factor).max(0.0))
    }
}

/// Failed starts remembered within the window.
#[derive(Debug, Clone, Default)]
pub struct CircuitBreaker {
    failures: VecDeque<Instant>,
    open: bool,
}

impl CircuitBreaker {
    /// Records a failed start; returns whether the circuit is now open.
    pub fn record_failure(&mut self, now: Instant, policy: &RestartPolicy) -> bool {
        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|&t| now.duration_since(t) > policy.window)
        {
            self.failures.pop_front();
        }
        while self.failures.len() > policy.max_failures as usize {
            self.failures.pop_front();
        }
        self.open = self.failures.len() >= policy.max_failures as usize;
        self.open
    }

    /// Closes the circuit and forgets the failures (operator `reset` or `start`).
    pub fn reset(&mut self) {
        self.failures.clear();
        self.open = false;
    }

    /// Whether the circuit is open.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Failed starts currently counted.
    pub fn recent_failures(&self) -> usize {
        self.failures.len()
    }
}

/// How a process run ended, as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunEnd {
    /// How long the process ran.
    pub uptime: Duration,
    /// Whether the MCP handshake completed.
    pub initialized: bool,
    /// Whether an operator asked for the stop.
    pub requested: bool,
    /// Whether the daemon ended it for breaking its bounds (counts as a failed start).
    pub misbehaved: bool,
}

/// Shortest time between two starts of a server whose runs are good: with `min_uptime_ms = 0`
/// a server that completes its handshake and dies at once is restarted at most ten times a
/// second (systemd's default `RestartSec` is the same 100 ms).
pub const MIN_RESTART_INTERVAL: Duration = Duration::from_millis(100);

/// What to do after a run ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// The operator stopped it: stay stopped.
    StayStopped,
    /// The run was good: start it again now.
    RestartNow,
    /// Restart after this delay.
    RestartAfter(Duration),
    /// The circuit opened: no more automatic restarts.
    Fail,
}

/// Decides what happens after a run ended. `attempt` is the number of consecutive failed
/// starts before this one; returns the decision and the new attempt count (0 after a good run:
/// the next failed start waits `initial` again).
pub fn after_run(
    end: RunEnd,
    attempt: u32,
    breaker: &mut CircuitBreaker,
    policy: &RestartPolicy,
    now: Instant,
    unit: f64,
) -> (Decision, u32) {
    if end.requested {
        return (Decision::StayStopped, attempt);
    }
    let good_start = end.initialized && end.uptime >= policy.min_uptime && !end.misbehaved;
    if good_start {
        if end.uptime >= policy.reset_after {
            // It ran stably: a crash now is a fresh incident.
            breaker.reset();
        }
        return match MIN_RESTART_INTERVAL.checked_sub(end.uptime) {
            Some(wait) if !wait.is_zero() => (Decision::RestartAfter(wait), 0),
            _ => (Decision::RestartNow, 0),
        };
    }
    if breaker.record_failure(now, policy) {
        return (Decision::Fail, attempt + 1);
    }
    (
        Decision::RestartAfter(policy.delay(attempt, unit)),
        attempt + 1,
    )
}

/// What the supervisor keeps of one server between events, beside its [`Status`].
#[derive(Debug, Clone, Default)]
pub struct Life {
    /// Consecutive failed starts (drives the backoff).
    pub attempt: u32,
    /// Failed starts within the window.
    pub breaker: CircuitBreaker,
    /// Start again once the current process has exited (operator restart).
    pub restart_requested: bool,
    /// Remove the server once its process has exited (unregistered while running).
    pub remove_when_stopped: bool,
}

/// Something that happened to a server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// Operator `start`; `at_limit` when `max_concurrent_servers` are running already.
    Start {
        /// Whether the concurrency limit is reached.
        at_limit: bool,
    },
    /// Operator `stop`.
    Stop,
    /// Operator `restart`.
    Restart {
        /// Whether the concurrency limit is reached.
        at_limit: bool,
    },
    /// Operator `reset` (close the circuit breaker; a failed server starts again).
    Reset {
        /// Whether the concurrency limit is reached.
        at_limit: bool,
    },
    /// The server was unregistered.
    Unregister,
    /// The daemon is stopping: gracefully, or at once (SIGKILL).
    Shutdown {
        /// Close stdin and escalate, or kill now.
        graceful: bool,
    },
    /// A [`Action::Spawn`] succeeded: the process runs.
    Spawned,
    /// The run ended: its process was reaped, or the spawn failed (a run of zero uptime).
    Ended(RunEnd),
    /// The backoff timer fired.
    BackoffElapsed,
    /// The server answered `initialize` with a protocol version we speak.
    Handshake,
    /// A tool listing completed.
    Listed,
    /// A health round found the last ping unanswered: `missed` in a row, `allowed` at most.
    PingMissed {
        /// Pings missed in a row.
        missed: u32,
        /// Misses that end the run.
        allowed: u32,
    },
    /// A health ping was answered.
    PingAnswered,
}

/// What the loop must do, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Change the status (through `Server::set_status`, which checks the table).
    Become(Status),
    /// Spawn a new run; the outcome comes back as [`Event::Spawned`] or [`Event::Ended`].
    Spawn,
    /// Close stdin and arm the stop escalation (SIGTERM after the grace, then SIGKILL).
    BeginStop,
    /// SIGKILL the process group now.
    KillNow,
    /// End the run for missed pings (SIGKILL; the exit comes back as [`Event::Ended`]).
    EndRun,
    /// Cancel the phase timer (backoff, deadline, stop escalation).
    CancelTimer,
    /// Arm the backoff timer.
    ArmBackoff(Duration),
    /// Count a restart: `automatic` after a backoff, not after an operator's restart.
    CountRestart {
        /// Whether the supervisor (not an operator) restarted it.
        automatic: bool,
    },
    /// Forget the server (it was unregistered and has no process left).
    Remove,
    /// Refuse a start: `max_concurrent_servers` reached.
    RefuseAtLimit,
}

/// The lifecycle: given the status, what the supervisor keeps and an event, updates `life`
/// and says what to do. Time and the jitter draw (`unit` in [0, 1)) come in.
///
/// An [`Event::Ended`] outside `stopping` goes through [`after_run`] (its `requested` is
/// false: a requested stop is the `stopping` status).
pub fn step(
    status: Status,
    life: &mut Life,
    event: Event,
    policy: &RestartPolicy,
    now: Instant,
    unit: f64,
) -> Vec<Action> {
    use Action::*;
    let mut actions = Vec::new();
    match event {
        Event::Start { at_limit } => start(status, life, at_limit, &mut actions),
        Event::Restart { at_limit } => {
            if status.has_process() {
                life.restart_requested = true;
                if status != Status::Stopping {
                    actions.extend([BeginStop, Become(Status::Stopping)]);
                }
            } else {
                start(status, life, at_limit, &mut actions);
            }
        }
        Event::Stop => {
            life.restart_requested = false;
            match status {
                Status::Stopping | Status::Stopped => {}
                s if s.has_process() => actions.extend([BeginStop, Become(Status::Stopping)]),
                _ => actions.extend([CancelTimer, Become(Status::Stopped)]),
            }
        }
        Event::Reset { at_limit } => {
            life.breaker.reset();
            life.attempt = 0;
            if status == Status::Failed {
                actions.push(Become(Status::Stopped));
                start(Status::Stopped, life, at_limit, &mut actions);
            }
        }
        Event::Unregister => {
            life.remove_when_stopped = true;
            life.restart_requested = false;
            match status {
                // Already on its way out: the running escalation stands.
                Status::Stopping => {}
                s if s.has_process() => actions.extend([BeginStop, Become(Status::Stopping)]),
                _ => actions.push(Remove),
            }
        }
        Event::Shutdown { graceful } => {
            life.restart_requested = false;
            match (status, graceful) {
                (Status::Stopping, true) => {}
                (Status::Stopping, false) => actions.push(KillNow),
                (s, true) if s.has_process() => {
                    actions.extend([BeginStop, Become(Status::Stopping)])
                }
                (s, false) if s.has_process() => {
                    actions.extend([KillNow, Become(Status::Stopping)])
                }
                (Status::Backoff, _) => actions.extend([CancelTimer, Become(Status::Stopped)]),
                _ => actions.push(CancelTimer),
            }
        }
        Event::Spawned => actions.push(Become(Status::Starting)),
        Event::Ended(_) if status == Status::Stopping => {
            actions.push(Become(Status::Stopped));
            if life.remove_when_stopped {
                actions.push(Remove);
            } else if std::mem::take(&mut life.restart_requested) {
                actions.extend([CountRestart { automatic: false }, Spawn]);
            }
        }
        Event::Ended(end) => {
            let (decision, attempt) =
                after_run(end, life.attempt, &mut life.breaker, policy, now, unit);
            life.attempt = attempt;
            actions.extend(match decision {
                Decision::RestartAfter(delay) => vec![ArmBackoff(delay), Become(Status::Backoff)],
                // Through `backoff` (no timer armed), so the history shows the restart.
                Decision::RestartNow => vec![
                    Become(Status::Backoff),
                    CountRestart { automatic: true },
                    Spawn,
                ],
                Decision::Fail => vec![Become(Status::Failed)],
                Decision::StayStopped => vec![Become(Status::Stopped)],
            });
        }
        Event::BackoffElapsed => {
            if status == Status::Backoff {
                actions.extend([CountRestart { automatic: true }, Spawn]);
            }
        }
        // A server stopped during its handshake may still answer: it stays `stopping`.
        Event::Handshake if status == Status::Starting => {
            actions.push(Become(Status::Initializing))
        }
        Event::Listed if status == Status::Initializing => actions.push(Become(Status::Active)),
        Event::PingMissed { missed, allowed } if status.serves() => {
            actions.push(if missed >= allowed {
                EndRun
            } else {
                Become(Status::Degraded)
            });
        }
        Event::PingAnswered if status == Status::Degraded => actions.push(Become(Status::Active)),
        Event::Handshake | Event::Listed | Event::PingMissed { .. } | Event::PingAnswered => {}
    }
    actions
}

/// An operator start: closes the breaker and spawns, unless a process runs or the
/// concurrency limit is reached (a server in backoff is running already, in a sense).
fn start(status: Status, life: &mut Life, at_limit: bool, actions: &mut Vec<Action>) {
    match status {
        Status::Stopping => {
            life.restart_requested = true;
            return;
        }
        s if s.has_process() => return,
        Status::Backoff => actions.push(Action::CancelTimer),
        _ if at_limit => {
            actions.push(Action::RefuseAtLimit);
            return;
        }
        _ => {}
    }
    life.breaker.reset();
    life.attempt = 0;
    actions.push(Action::Spawn);
}

/// A small xorshift generator for jitter (no need for a crate).
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from the clock and pid so daemons on many hosts do not restart in lockstep.
    pub fn new() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Jitter((t ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    /// Next value in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RestartPolicy = RestartPolicy {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(300),
        jitter: 0.2,
        reset_after: Duration::from_secs(600),
        max_failures: 5,
        window: Duration::from_secs(600),
        min_uptime: Duration::from_secs(1),
    };

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        assert_eq!(P.delay(0, 0.5), Duration::from_secs(1));
        assert_eq!(P.delay(3, 0.5), Duration::from_secs(8));
        assert_eq!(P.delay(20, 0.5), Duration::from_secs(300));
        assert_eq!(P.delay(0, 0.0), Duration::from_millis(800));
        assert!(P.delay(0, 0.999_999) < Duration::from_millis(1201));
        let mut j = Jitter::new();
        for _ in 0..1000 {
            let u = j.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    /// (uptime s, initialized, requested, misbehaved, attempt) -> expected decision.
    #[test]
    fn decision_table() {
        let now = Instant::now();
        let table: &[(u64, bool, bool, bool, u32, Decision, u32)] = &[
            (0, false, true, false, 2, Decision::StayStopped, 2),
            (0, false, true, true, 2, Decision::StayStopped, 2),
            (
                0,
                false,
                false,
                false,
                0,
                Decision::RestartAfter(Duration::from_secs(1)),
                1,
            ),
            (
                0,
                false,
                false,
                false,
                2,
                Decision::RestartAfter(Duration::from_secs(4)),
                3,
            ),
            // A good run restarts at once and ends the run of failed starts.
            (5, true, false, false, 2, Decision::RestartNow, 0),
            (1, true, false, false, 4, Decision::RestartNow, 0),
            // Stable for `reset_after`: the same, and the breaker forgets (checked below).
            (700, true, false, false, 6, Decision::RestartNow, 0),
            // Handshake done but not `min_uptime`: a failed start, backed off.
            (
                0,
                true,
                false,
                false,
                1,
                Decision::RestartAfter(Duration::from_secs(2)),
                2,
            ),
            // A good run ended for misbehaviour is a failed start (the breaker counts it).
            (
                5,
                true,
                false,
                true,
                2,
                Decision::RestartAfter(Duration::from_secs(4)),
                3,
            ),
        ];
        for &(up, init, req, bad, attempt, want, want_attempt) in table {
            let mut b = CircuitBreaker::default();
            let end = RunEnd {
                uptime: Duration::from_secs(up),
                initialized: init,
                requested: req,
                misbehaved: bad,
            };
            assert_eq!(
                after_run(end, attempt, &mut b, &P, now, 0.5),
                (want, want_attempt),
                "{up} {init} {req} {bad} {attempt}"
            );
            let failed = !req && (bad || !init || up < 1);
            assert_eq!(
                b.recent_failures(),
                usize::from(failed),
                "{up} {init} {req} {bad}"
            );
        }
    }

    #[test]
    fn circuit_opens_after_max_failures_in_window_and_resets() {
        let mut b = CircuitBreaker::default();
        let t0 = Instant::now();
        let crash = RunEnd {
            uptime: Duration::ZERO,
            initialized: false,
            requested: false,
            misbehaved: false,
        };
        let mut attempt = 0;
        let mut decisions = Vec::new();
        for i in 0..5 {
            let (d, a) = after_run(crash, attempt, &mut b, &P, t0 + Duration::from_secs(i), 0.5);
            attempt = a;
            decisions.push(d);
        }
        assert_eq!(decisions[3], Decision::RestartAfter(Duration::from_secs(8)));
        assert_eq!(decisions[4], Decision::Fail);
        assert!(b.is_open());
        b.reset();
        assert!(!b.is_open());
        // Failures spread beyond the window never open it.
        let mut b = CircuitBreaker::default();
        for i in 0..20 {
            assert!(!b.record_failure(t0 + Duration::from_secs(i * 200), &P));
        }
        // Misbehaving after a complete handshake, five times in a row, opens it too.
        let mut b = CircuitBreaker::default();
        let bad = RunEnd {
            uptime: Duration::from_secs(30),
            initialized: true,
            requested: false,
            misbehaved: true,
        };
        let mut attempt = 0;
        let mut last = Decision::StayStopped;
        for i in 0..5 {
            (last, attempt) = after_run(bad, attempt, &mut b, &P, t0 + Duration::from_secs(i), 0.5);
        }
        assert_eq!(last, Decision::Fail);
    }

    fn crash() -> RunEnd {
        RunEnd {
            uptime: Duration::ZERO,
            initialized: false,
            requested: false,
            misbehaved: false,
        }
    }

    /// Operator requests, one row each: (status, event) -> actions and what `life` keeps.
    #[test]
    fn operator_requests_table() {
        use Action::*;
        use Status::*;
        let now = Instant::now();
        let start = Event::Start { at_limit: false };
        let full = Event::Start { at_limit: true };
        let restart = Event::Restart { at_limit: false };
        let reset = Event::Reset { at_limit: false };
        let stop_now = Event::Shutdown { graceful: false };
        let shutdown = Event::Shutdown { graceful: true };
        // (status, event, actions, restart_requested after, remove after, breaker open after)
        type Row = (Status, Event, &'static [Action], bool, bool, bool);
        let table: &[Row] = &[
            (Registered, start, &[Spawn], false, false, false),
            (Stopped, start, &[Spawn], false, false, false),
            (Failed, start, &[Spawn], false, false, false),
            (Backoff, start, &[CancelTimer, Spawn], false, false, false),
            (Backoff, full, &[CancelTimer, Spawn], false, false, false),
            (Stopped, full, &[RefuseAtLimit], false, false, true),
            (Failed, full, &[RefuseAtLimit], false, false, true),
            (Active, start, &[], false, false, true),
            (Starting, start, &[], false, false, true),
            (Stopping, start, &[], true, false, true),
            (
                Active,
                Event::Stop,
                &[BeginStop, Become(Stopping)],
                false,
                false,
                true,
            ),
            (
                Degraded,
                Event::Stop,
                &[BeginStop, Become(Stopping)],
                false,
                false,
                true,
            ),
            (
                Backoff,
                Event::Stop,
                &[CancelTimer, Become(Stopped)],
                false,
                false,
                true,
            ),
            (
                Failed,
                Event::Stop,
                &[CancelTimer, Become(Stopped)],
                false,
                false,
                true,
            ),
            (
                Registered,
                Event::Stop,
                &[CancelTimer, Become(Stopped)],
                false,
                false,
                true,
            ),
            (Stopping, Event::Stop, &[], false, false, true),
            (Stopped, Event::Stop, &[], false, false, true),
            (
                Active,
                restart,
                &[BeginStop, Become(Stopping)],
                true,
                false,
                true,
            ),
            (Stopping, restart, &[], true, false, true),
            (Stopped, restart, &[Spawn], false, false, false),
            (
                Failed,
                reset,
                &[Become(Stopped), Spawn],
                false,
                false,
                false,
            ),
            (
                Failed,
                Event::Reset { at_limit: true },
                &[Become(Stopped), RefuseAtLimit],
                false,
                false,
                false,
            ),
            (Active, reset, &[], false, false, false),
            (
                Active,
                Event::Unregister,
                &[BeginStop, Become(Stopping)],
                false,
                true,
                true,
            ),
            (Stopping, Event::Unregister, &[], false, true, true),
            (Backoff, Event::Unregister, &[Remove], false, true, true),
            (
                Active,
                shutdown,
                &[BeginStop, Become(Stopping)],
                false,
                false,
                true,
            ),
            (Stopping, shutdown, &[], false, false, true),
            (
                Backoff,
                shutdown,
                &[CancelTimer, Become(Stopped)],
                false,
                false,
                true,
            ),
            (Stopped, shutdown, &[CancelTimer], false, false, true),
            (
                Active,
                stop_now,
                &[KillNow, Become(Stopping)],
                false,
                false,
                true,
            ),
            (Stopping, stop_now, &[KillNow], false, false, true),
        ];
        for &(status, event, want, restart_after, remove_after, open_after) in table {
            // Every row starts with an open circuit, and with a restart pending where one
            // can be (a stop in progress): a start closes the one, a stop forgets the other.
            let mut life = Life::default();
            let policy = RestartPolicy {
                max_failures: 1,
                ..P
            };
            life.breaker.record_failure(now, &policy);
            life.attempt = 3;
            life.restart_requested = status == Stopping
                && !matches!(
                    event,
                    Event::Stop | Event::Unregister | Event::Shutdown { .. }
                );
            let got = step(status, &mut life, event, &P, now, 0.5);
            assert_eq!(got, want, "{status:?} {event:?}");
            assert_eq!(
                life.restart_requested, restart_after,
                "{status:?} {event:?}"
            );
            assert_eq!(
                life.remove_when_stopped, remove_after,
                "{status:?} {event:?}"
            );
            assert_eq!(life.breaker.is_open(), open_after, "{status:?} {event:?}");
            if want.contains(&Spawn) {
                assert_eq!(life.attempt, 0, "a start forgets the failed starts");
            }
        }
        // The end of a stopping run: stays stopped, or starts again, or is removed.
        let mut life = Life {
            restart_requested: true,
            ..Life::default()
        };
        let got = step(Stopping, &mut life, Event::Ended(crash()), &P, now, 0.5);
        assert_eq!(
            got,
            [Become(Stopped), CountRestart { automatic: false }, Spawn]
        );
        assert!(!life.restart_requested);
        let got = step(Stopping, &mut life, Event::Ended(crash()), &P, now, 0.5);
        assert_eq!(got, [Become(Stopped)]);
        assert_eq!(
            life.breaker.recent_failures(),
            0,
            "a requested stop is no failure"
        );
        life.remove_when_stopped = true;
        let got = step(Stopping, &mut life, Event::Ended(crash()), &P, now, 0.5);
        assert_eq!(got, [Become(Stopped), Remove]);
        // A crash backs off; the backoff timer restarts it, counted as automatic.
        let mut life = Life::default();
        let got = step(Active, &mut life, Event::Ended(crash()), &P, now, 0.5);
        assert_eq!(got, [ArmBackoff(Duration::from_secs(1)), Become(Backoff)]);
        let got = step(Backoff, &mut life, Event::BackoffElapsed, &P, now, 0.5);
        assert_eq!(got, [CountRestart { automatic: true }, Spawn]);
        assert_eq!(
            step(Stopped, &mut life, Event::BackoffElapsed, &P, now, 0.5),
            []
        );
        // A server stopped during its handshake that still answers stays stopping.
        assert_eq!(
            step(Stopping, &mut life, Event::Handshake, &P, now, 0.5),
            []
        );
        assert_eq!(step(Stopping, &mut life, Event::Listed, &P, now, 0.5), []);
        let missed = |missed| Event::PingMissed { missed, allowed: 3 };
        assert_eq!(
            step(Active, &mut life, missed(1), &P, now, 0.5),
            [Become(Degraded)]
        );
        assert_eq!(
            step(Degraded, &mut life, missed(2), &P, now, 0.5),
            [Become(Degraded)]
        );
        assert_eq!(step(Degraded, &mut life, missed(3), &P, now, 0.5), [EndRun]);
        let answered = Event::PingAnswered;
        assert_eq!(
            step(Degraded, &mut life, answered, &P, now, 0.5),
            [Become(Active)]
        );
        assert_eq!(step(Active, &mut life, answered, &P, now, 0.5), []);
    }

    /// Walks every feasible sequence of events from `registered` (what the loop can really
    /// deliver: a spawn's outcome only after a spawn, session reports only while a process
    /// runs, pings only while serving, the backoff timer only in backoff) and checks that
    /// the status changes it produces are exactly the rows of [`TRANSITIONS`]: every pair of
    /// statuses is either produced by some real sequence or refused by the table.
    ///
    /// [`TRANSITIONS`]: crate::mcp::server::TRANSITIONS
    #[test]
    fn the_transition_table_is_exactly_what_the_events_reach() {
        use crate::mcp::server::TRANSITIONS;
        use std::collections::BTreeSet;

        #[derive(Clone)]
        struct Walk {
            status: Status,
            life: Life,
            process: bool,
            spawning: bool,
        }
        let key = |w: &Walk| {
            (
                w.status as u8,
                w.life.attempt.min(3),
                w.life.breaker.recent_failures(),
                w.life.breaker.is_open(),
                w.life.restart_requested,
                w.life.remove_when_stopped,
                w.process,
                w.spawning,
            )
        };
        let good = RunEnd {
            uptime: Duration::from_secs(5),
            initialized: true,
            requested: false,
            misbehaved: false,
        };
        let bad = RunEnd {
            misbehaved: true,
            ..good
        };
        let mut reached: BTreeSet<(u8, u8)> = BTreeSet::new();
        let now = Instant::now();
        for policy in [
            P,
            RestartPolicy {
                max_failures: 1,
                ..P
            },
        ] {
            let mut seen = BTreeSet::new();
            let start = Walk {
                status: Status::Registered,
                life: Life::default(),
                process: false,
                spawning: false,
            };
            let mut queue = VecDeque::from([start]);
            while let Some(w) = queue.pop_front() {
                if !seen.insert(key(&w)) {
                    continue;
                }
                let mut events = Vec::new();
                if w.spawning {
                    events.extend([Event::Spawned, Event::Ended(crash())]);
                } else {
                    for at_limit in [false, true] {
                        events.extend([
                            Event::Start { at_limit },
                            Event::Restart { at_limit },
                            Event::Reset { at_limit },
                        ]);
                    }
                    events.extend([
                        Event::Stop,
                        Event::Unregister,
                        Event::Shutdown { graceful: true },
                        Event::Shutdown { graceful: false },
                    ]);
                    if w.process {
                        events.extend([
                            Event::Ended(crash()),
                            Event::Ended(good),
                            Event::Ended(bad),
                            Event::Handshake,
                            Event::Listed,
                        ]);
                    }
                    if w.process && w.status.serves() {
                        for missed in 1..=3 {
                            events.push(Event::PingMissed { missed, allowed: 3 });
                        }
                        events.push(Event::PingAnswered);
                    }
                    if w.status == Status::Backoff {
                        events.push(Event::BackoffElapsed);
                    }
                }
                for event in events {
                    let mut next = w.clone();
                    next.spawning = false;
                    match event {
                        Event::Spawned => next.process = true,
                        Event::Ended(_) => next.process = false,
                        _ => {}
                    }
                    let actions = step(w.status, &mut next.life, event, &policy, now, 0.5);
                    let mut removed = false;
                    for action in actions {
                        match action {
                            Action::Become(to) => {
                                assert!(
                                    next.status.may_become(to),
                                    "{:?} -> {to:?} on {event:?} is not in the table",
                                    next.status
                                );
                                reached.insert((next.status as u8, to as u8));
                                next.status = to;
                            }
                            Action::Spawn => next.spawning = true,
                            Action::Remove => removed = true,
                            _ => {}
                        }
                    }
                    assert_eq!(
                        next.status.has_process(),
                        next.process,
                        "{:?} after {event:?}: status and process disagree",
                        next.status
                    );
                    if !removed {
                        queue.push_back(next);
                    }
                }
            }
        }
        for from in Status::ALL {
            for to in Status::ALL {
                let found = reached.contains(&(from as u8, to as u8));
                assert_eq!(
                    found,
                    from.may_become(to),
                    "{from:?} -> {to:?}: in the table: {}, reached by events: {found}",
                    from.may_become(to),
                );
            }
        }
        assert_eq!(reached.len(), TRANSITIONS.len());
    }

    #[test]
    fn good_runs_restart_at_once_but_never_in_a_tight_loop() {
        let t0 = Instant::now();
        let good = |ms| RunEnd {
            uptime: Duration::from_millis(ms),
            initialized: true,
            requested: false,
            misbehaved: false,
        };
        let failed = RunEnd {
            initialized: false,
            ..good(0)
        };
        // After a good run the next failed start waits `initial` again, not 2^n.
        let mut b = CircuitBreaker::default();
        let (d, a) = after_run(good(5_000), 3, &mut b, &P, t0, 0.5);
        assert_eq!((d, a), (Decision::RestartNow, 0));
        let (d, _) = after_run(failed, a, &mut b, &P, t0, 0.5);
        assert_eq!(d, Decision::RestartAfter(Duration::from_secs(1)));

        // Good runs shorter than `reset_after` keep the failures counted; a stable one clears them.
        let mut b = CircuitBreaker::default();
        for i in 0..4 {
            after_run(failed, i, &mut b, &P, t0, 0.5);
        }
        after_run(good(2_000), 4, &mut b, &P, t0, 0.5);
        assert_eq!(b.recent_failures(), 4);
        assert_eq!(
            after_run(failed, 0, &mut b, &P, t0, 0.5).0,
            Decision::Fail,
            "failed starts between short good runs still open the circuit"
        );
        let mut b = CircuitBreaker::default();
        for i in 0..4 {
            after_run(failed, i, &mut b, &P, t0, 0.5);
        }
        after_run(good(600_000), 4, &mut b, &P, t0, 0.5);
        assert_eq!(b.recent_failures(), 0);

        // A server dying right after each good run: one immediate restart per `min_uptime`.
        // With `min_uptime` = 0 the floor holds the rate at one start per 100 ms.
        let zero = RestartPolicy {
            min_uptime: Duration::ZERO,
            ..P
        };
        let mut b = CircuitBreaker::default();
        assert_eq!(
            after_run(good(0), 0, &mut b, &zero, t0, 0.5),
            (Decision::RestartAfter(MIN_RESTART_INTERVAL), 0)
        );
        assert_eq!(
            after_run(good(30), 0, &mut b, &zero, t0, 0.5),
            (Decision::RestartAfter(Duration::from_millis(70)), 0)
        );
        assert_eq!(
            after_run(good(100), 0, &mut b, &zero, t0, 0.5),
            (Decision::RestartNow, 0)
        );
        // Below `min_uptime` it is not a good run: backed off, counted.
        assert_eq!(
            after_run(good(999), 0, &mut b, &P, t0, 0.5).0,
            Decision::RestartAfter(Duration::from_secs(1))
        );
        assert_eq!(b.recent_failures(), 1);
    }
}
