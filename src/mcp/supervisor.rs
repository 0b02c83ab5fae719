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
