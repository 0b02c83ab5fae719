//! The diagnostics room: `diagnostics run [--full]`.
//!
//! The cheap checks (config, state directory, files, kernel, tools, limits) run on the loop
//! from a [`Facts`] snapshot the wiring hands over; `--full` adds the fsync timing of the
//! state directory, which runs on the worker (an fsync can stall for seconds on slow
//! storage). The wiring makes the cheap checks ([`Checked`]) before it enters the room.
//! Invariant: every request is answered exactly once, by [`Diagnostics::run`] or
//! by the job's result, which carries the reply and the checks made so far (or, when the
//! worker did not take the job or did not answer in time, the failure that stands for it).

use crate::api::{Answer, ApiError, ErrorCode, ReplyTo};
use crate::diagnostics::{self, Check, Verdict};
use crate::room::{Effect, Room, RoomCx};
use crate::state::{self, StateDir};
use crate::sys;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `diagnostics run --full` may take on the worker.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// What the checks need to know of the rest of the daemon, handed over by the wiring.
pub struct Facts<'a> {
    /// Where the configuration came from (a path or "embedded defaults").
    pub config_source: String,
    /// Why stored overrides were not (fully) applied, if they were not.
    pub config_problem: Option<&'a str>,
    /// The keys nothing reads yet that the effective configuration sets anyway
    /// ([`crate::config::Config::not_enforced_set`]).
    pub not_enforced_set: Vec<String>,
    /// The state directory.
    pub state: &'a StateDir,
    /// The documents the daemon keeps in it.
    pub documents: &'a [&'a str],
    /// The control socket.
    pub socket: &'a Path,
    /// The pid file.
    pub pid_file: &'a Path,
}

/// The `--full` job's result: who asked, the checks so far, and the fsync timings (or why
/// there are none).
#[derive(Debug)]
pub struct Job {
    reply: ReplyTo,
    checks: Vec<Value>,
    fsync: Result<Vec<Duration>, String>,
}

/// The diagnostics room (it keeps no state between runs).
#[derive(Debug, Default)]
pub struct Diagnostics;

/// A run's cheap checks, made from the [`Facts`] before the room is entered (the facts borrow
/// the wiring's state, the room is entered through it), and the directory `--full` times.
#[derive(Debug)]
pub struct Checked {
    checks: Vec<Value>,
    dir: PathBuf,
}

impl Checked {
    /// Runs the cheap checks on `facts`.
    pub fn new(facts: &Facts) -> Checked {
        Checked {
            checks: loop_checks(facts).iter().map(Check::to_json).collect(),
            dir: facts.state.path().to_path_buf(),
        }
    }
}

impl Diagnostics {
    /// Answers `reply` with the checks, now or (with `full`) once the worker timed fsync.
    pub fn run(&mut self, cx: &mut RoomCx<'_, Self>, reply: ReplyTo, full: bool, checked: Checked) {
        let Checked { checks, dir } = checked;
        if !full {
            cx.reply(reply, answer(checks));
            return;
        }
        let kept = checks.clone();
        let submitted = cx.submit(
            TIMEOUT,
            move || Job {
                reply,
                checks,
                fsync: diagnostics::fsync_latency(&dir, 5),
            },
            move |why| Job {
                reply,
                checks: kept,
                fsync: Err(why.to_string()),
            },
        );
        if let Err(failed) = submitted {
            self.on_job(cx, failed);
        }
    }
}

impl Room for Diagnostics {
    type Timer = Infallible;
    type Job = Job;
    type Output = Effect;
    const NAME: &'static str = "diagnostics";

    fn on_timer(&mut self, _cx: &mut RoomCx<'_, Self>, timer: Infallible) {
        match timer {}
    }

    fn on_job(&mut self, cx: &mut RoomCx<'_, Self>, done: Job) {
        let Job {
            reply,
            mut checks,
            fsync,
        } = done;
        checks.push(fsync_check(fsync));
        cx.reply(reply, answer(checks));
    }
}

/// The checks cheap enough for the loop: no write (an fsync can stall on slow storage), a few
/// `faccessat`/`lstat` calls and reads of /proc, /sys and PATH.
fn loop_checks(facts: &Facts) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.push(match facts.config_problem {
        None => Check {
            name: "config".into(),
            verdict: Verdict::Ok,
            detail: format!("valid ({})", facts.config_source),
        },
        Some(p) => Check {
            name: "config".into(),
            verdict: Verdict::Warn,
            detail: p.to_string(),
        },
    });
    let pending: Vec<&str> = crate::config::not_enforced_keys().collect();
    checks.push(diagnostics::not_enforced_check(
        &pending,
        &facts.not_enforced_set,
    ));
    let dir = facts.state.path();
    let writable = sys::writable(dir);
    checks.push(Check {
        name: "state.writable".into(),
        verdict: if writable { Verdict::Ok } else { Verdict::Fail },
        detail: format!(
            "{} ({})",
            dir.display(),
            if writable { "writable" } else { "not writable" }
        ),
    });
    let mut problems = state::check_documents(dir, facts.documents);
    problems.extend(facts.state.read_only().map(|(name, why)| {
        format!(
            "state file {} is read-only: {why}",
            dir.join(name).display()
        )
    }));
    checks.push(Check {
        name: "state.documents".into(),
        verdict: if problems.is_empty() {
            Verdict::Ok
        } else {
            Verdict::Fail
        },
        detail: if problems.is_empty() {
            format!("{} readable and writable", facts.documents.join(", "))
        } else {
            problems.join("; ")
        },
    });
    checks.extend(diagnostics::file_checks(&diagnostics::Paths {
        socket: facts.socket,
        pid_file: facts.pid_file,
    }));
    checks.extend(diagnostics::kernel_checks());
    checks.extend(diagnostics::tool_checks());
    checks.extend(diagnostics::limit_checks());
    checks
}

/// The fsync timing as a check: slow (worst cycle over 500 ms) warns, no timing fails.
fn fsync_check(fsync: Result<Vec<Duration>, String>) -> Value {
    match fsync {
        Ok(times) => {
            let ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
            let worst = ms.iter().copied().fold(0.0, f64::max);
            let verdict = if worst > 500.0 { "warn" } else { "ok" };
            json!({"name": "state.fsync_latency", "status": verdict,
                   "detail": format!("{} write+fsync+rename cycles, worst {:.1} ms", ms.len(), worst),
                   "samples_ms": ms})
        }
        Err(e) => json!({"name": "state.fsync_latency", "status": "fail", "detail": e}),
    }
}

/// The answer: the checks with a summary; `unhealthy` (with the same data) when one failed.
fn answer(checks: Vec<Value>) -> Answer {
    let failed = checks.iter().filter(|c| c["status"] == "fail").count();
    let warned = checks.iter().filter(|c| c["status"] == "warn").count();
    let data = json!({
        "checks": checks,
        "summary": {"ok": checks.len() - failed - warned, "warn": warned, "fail": failed},
    });
    if failed == 0 {
        Ok(data)
    } else {
        Err(ApiError::new(
            ErrorCode::Unhealthy,
            format!("{failed} diagnostic check(s) failed"),
        )
        .with_data(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_timings_decide_the_verdict() {
        let ok = fsync_check(Ok(vec![Duration::from_millis(3), Duration::from_millis(7)]));
        assert_eq!(ok["status"], "ok");
        assert_eq!(ok["samples_ms"].as_array().map(Vec::len), Some(2));
        let slow = fsync_check(Ok(vec![Duration::from_millis(501)]));
        assert_eq!(slow["status"], "warn");
        let none = fsync_check(Err("the worker did not answer in time".into()));
        assert_eq!(none["status"], "fail");
        assert_eq!(none["detail"], "the worker did not answer in time");
    }

    #[test]
    fn one_failed_check_makes_the_answer_unhealthy_with_the_data() {
        let checks = vec![
            json!({"name": "a", "status": "ok"}),
            json!({"name": "b", "status": "warn"}),
        ];
        let data = answer(checks.clone()).expect("no failure");
        assert_eq!(data["summary"], json!({"ok": 1, "warn": 1, "fail": 0}));
        let mut failing = checks;
        failing.push(json!({"name": "c", "status": "fail"}));
        let err = answer(failing).expect_err("a failure");
        assert_eq!(err.code, ErrorCode::Unhealthy);
        assert_eq!(
            err.data.map(|d| d["summary"].clone()),
            Some(json!({"ok": 1, "warn": 1, "fail": 1}))
        );
    }
}
