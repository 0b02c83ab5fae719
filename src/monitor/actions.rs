//! `[actions.NAME]`: what an operator declares an alert may run besides the built-in `log` and
//! `restart_server:ID` — a `webhook` (a JSON POST of the alert's fields, from the worker) or an
//! `exec` (a sandboxed command with the alert's fields in its environment).
//!
//! The [`Actions`] room runs them when the alerts room asks ([`ActionRun`], through
//! `Daemon::act`) or an operator tests one (`POST /api/v1/actions/{name}/test`).
//!
//! Webhooks: a bounded queue ([`MAX_QUEUE`]; when full the oldest waiting delivery is dropped
//! and counted), delivered one at a time in order from the worker, each attempt with the
//! action's `timeout_ms`; a failed attempt is retried after a backoff (0.5 s doubling to 30 s)
//! up to [`MAX_ATTEMPTS`] attempts. Exec actions: at most [`EXEC_SLOTS`] at once, in the same
//! sandbox as exec checks ([`ChildRun`]), the alert's fields in `VSM_ALERT_<FIELD>` variables,
//! killed at `timeout_ms`, their output bounded and logged. Every delivery's outcome is kept
//! in a bounded list ([`MAX_RECORDS`]).
//!
//! Invariants: a spec that passes [`ActionSpec::validate`] can be run as it is (an http URL,
//! an argv without NUL bytes, bounded timeouts); a token file is read only when a delivery is
//! made, on the worker, with [`crate::state::read_small_file`], and its content never reaches
//! a log line or a record; every queue and list here is bounded.

use crate::api::{ApiError, ErrorCode, ReplyTo};
use crate::mcp::process::PipeTokens;
use crate::monitor::checks::spec::{c_string_problem, check_argv, check_http_url, valid_name};
use crate::monitor::child::ChildRun;
use crate::monitor::observation::ActionRun;
use crate::reactor::timer::TimerId;
use crate::reactor::TokenRange;
use crate::room::{Effect, Room, RoomCx};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

/// Webhook deliveries waiting (the one in flight included).
pub const MAX_QUEUE: usize = 64;
/// Attempts per webhook delivery.
pub const MAX_ATTEMPTS: u32 = 8;
/// Exec actions running at once.
pub const EXEC_SLOTS: usize = 4;
/// Tokens the room needs (three pipes per exec slot).
pub const TOKENS_NEEDED: usize = 3 * EXEC_SLOTS;
/// Outcomes kept.
pub const MAX_RECORDS: usize = 50;
/// First retry delay; doubles per failed attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Most `[actions.*]` tables in one configuration.
pub const MAX_ACTIONS: usize = 32;

/// Which kind of action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// JSON POST to `url`.
    Webhook,
    /// Run `argv`.
    Exec,
}

impl ActionKind {
    /// The config name (and the prefix of references to it: `webhook:NAME`, `exec:NAME`).
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Webhook => "webhook",
            ActionKind::Exec => "exec",
        }
    }
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// One `[actions.NAME]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// `webhook` or `exec`.
    pub kind: ActionKind,
    /// webhook: the `http://` or `https://` URL to POST to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// webhook: a file whose first line is sent as `Authorization: Bearer …`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_file: String,
    /// exec: the command and its arguments (no shell).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// Deadline of one delivery (webhook: one attempt) or run, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl ActionSpec {
    /// Checks the table on its own.
    ///
    /// # Errors
    /// (field, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: &str| Err((f.to_owned(), m.to_owned()));
        match self.kind {
            ActionKind::Webhook => {
                check_http_url(&self.url).map_err(|m| ("url".to_owned(), m))?;
                if let Some(p) = c_string_problem(&self.url, 2048) {
                    return Err(("url".into(), p));
                }
                if !self.argv.is_empty() {
                    return err("argv", "only applies to exec actions");
                }
                if !self.token_file.is_empty() && !self.token_file.starts_with('/') {
                    return err("token_file", "must be an absolute path");
                }
                if let Some(p) = c_string_problem(&self.token_file, 4096) {
                    return Err(("token_file".into(), p));
                }
            }
            ActionKind::Exec => {
                check_argv(&self.argv)?;
                if !self.url.is_empty() {
                    return err("url", "only applies to webhook actions");
                }
                if !self.token_file.is_empty() {
                    return err("token_file", "only applies to webhook actions");
                }
            }
        }
        if !(10..=600_000).contains(&self.timeout_ms) {
            return err("timeout_ms", "must be 10..=600000");
        }
        Ok(())
    }
}

/// Checks a whole `[actions]` table: names and each entry.
///
/// # Errors
/// (dotted key, message).
pub fn validate_all(actions: &BTreeMap<String, ActionSpec>) -> Result<(), (String, String)> {
    if actions.len() > MAX_ACTIONS {
        return Err((
            "actions".into(),
            format!("{} actions (at most {MAX_ACTIONS})", actions.len()),
        ));
    }
    for (name, spec) in actions {
        if !valid_name(name) {
            return Err((
                "actions".into(),
                format!(
                    "'{}' is not a valid action name: use lowercase letters, digits, '_', '.', '-' (at most 64)",
                    name.chars().take(80).collect::<String>().escape_default()
                ),
            ));
        }
        spec.validate()
            .map_err(|(f, m)| (format!("actions.{name}.{f}"), m))?;
    }
    Ok(())
}

/// The room's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Time to retry the webhook delivery at the head of the queue.
    Retry {
        /// The delivery.
        id: u64,
    },
    /// An exec action's deadline.
    ExecDeadline {
        /// Slot.
        slot: usize,
        /// The delivery.
        id: u64,
    },
}

/// A webhook attempt's result, from the worker.
#[derive(Debug)]
pub struct Attempted {
    id: u64,
    result: Result<u16, String>,
}

#[derive(Debug, Clone)]
struct Webhook {
    id: u64,
    action: String,
    url: String,
    token_file: String,
    timeout: Duration,
    body: Vec<u8>,
    attempts: u32,
    queued_at: SystemTime,
    /// Waiting for its result (on the worker) or for its retry timer.
    busy: bool,
}

#[derive(Debug)]
struct ExecRun {
    id: u64,
    action: String,
    child: ChildRun,
    deadline: Option<TimerId>,
    timeout_ms: u64,
}

/// The actions room.
#[derive(Debug)]
pub struct Actions {
    specs: BTreeMap<String, ActionSpec>,
    queue: VecDeque<Webhook>,
    exec: Vec<Option<ExecRun>>,
    tokens: TokenRange,
    records: VecDeque<Value>,
    next_id: u64,
    dropped: u64,
    delivered: u64,
    failed: u64,
    /// `security.ca_file`, as of each delivery attempt (read on the worker).
    ca_file: String,
}

impl Room for Actions {
    type Timer = Timer;
    type Job = Attempted;
    type Output = Effect;
    const NAME: &'static str = "actions";

    /// A reload replaces the action definitions (deliveries already queued keep theirs).
    fn apply_config(&mut self, _cx: &mut RoomCx<'_, Self>, config: &crate::config::Config) {
        if self.specs != config.actions {
            self.set_specs(config.actions.clone());
        }
        self.ca_file.clone_from(&config.security.ca_file);
    }

    fn on_timer(&mut self, cx: &mut RoomCx<'_, Self>, timer: Timer) {
        match timer {
            Timer::Retry { id } => {
                if let Some(w) = self.queue.front_mut().filter(|w| w.id == id) {
                    w.busy = false;
                }
                self.pump(cx);
            }
            Timer::ExecDeadline { slot, id } => {
                if let Some(run) = self.exec.get_mut(slot).and_then(Option::as_mut) {
                    if run.id == id {
                        run.deadline = None;
                        run.child.kill();
                    }
                }
            }
        }
    }

    fn on_job(&mut self, cx: &mut RoomCx<'_, Self>, done: Attempted) {
        let Some(head) = self.queue.front_mut().filter(|w| w.id == done.id) else {
            return;
        };
        match done.result {
            Ok(status) => {
                let w = self.queue.pop_front();
                self.delivered += 1;
                if let Some(w) = w {
                    log::info!(
                        "action {} delivered (HTTP {status}, attempt {})",
                        w.action,
                        w.attempts
                    );
                    self.record(
                        w.id,
                        &w.action,
                        "delivered",
                        w.attempts,
                        format!("HTTP {status}"),
                    );
                }
            }
            Err(why) if head.attempts >= MAX_ATTEMPTS => {
                let w = self.queue.pop_front();
                self.failed += 1;
                if let Some(w) = w {
                    log::warn!(
                        "action {} failed after {} attempts: {why}",
                        w.action,
                        w.attempts
                    );
                    self.record(w.id, &w.action, "failed", w.attempts, why);
                }
            }
            Err(why) => {
                let backoff = backoff(head.attempts);
                log::info!(
                    "action {} attempt {} failed ({why}); retrying in {} ms",
                    head.action,
                    head.attempts,
                    backoff.as_millis()
                );
                let id = head.id;
                cx.timers()
                    .insert(Instant::now() + backoff, Timer::Retry { id });
                return;
            }
        }
        self.pump(cx);
    }
}

impl crate::room::Parent for Actions {
    /// Whether a readiness token is one of the room's.
    fn owns(&self, token: mio::Token) -> bool {
        self.tokens.owns(token)
    }

    /// Pids of running exec actions.
    fn child_pids(&self) -> Vec<i32> {
        self.exec.iter().flatten().map(|r| r.child.pid()).collect()
    }

    /// A readiness event on an exec action's pipe.
    fn on_ready(&mut self, cx: &mut RoomCx<'_, Self>, token: mio::Token) {
        let Some(slot) = self.tokens.index(token).map(|i| i / 3) else {
            return;
        };
        if let Some(run) = self.exec.get_mut(slot).and_then(Option::as_mut) {
            run.child.on_ready(token, cx.registry);
        }
    }

    /// The daemon reaped `pid`: if it is an exec action, its run ends (logged and recorded).
    fn on_child_exit(&mut self, cx: &mut RoomCx<'_, Self>, pid: i32, status: i32) -> bool {
        let Some(slot) = self
            .exec
            .iter()
            .position(|r| r.as_ref().is_some_and(|r| r.child.pid() == pid))
        else {
            return false;
        };
        let Some(mut run) = self.exec[slot].take() else {
            return false;
        };
        if let Some(t) = run.deadline.take() {
            cx.timers().cancel(t);
        }
        let (exit, took) = run.child.finish(status, cx.registry);
        let (out, err) = (run.child.stdout.text(), run.child.stderr.text());
        let ok = exit == crate::monitor::child::Exit::Code(0) && !run.child.timed_out;
        let detail = if run.child.timed_out {
            format!("timed out after {} ms, killed", run.timeout_ms)
        } else {
            exit.describe()
        };
        log::info!(
            "action {} ended: {detail} after {} ms; stdout: {:?}; stderr: {:?}",
            run.action,
            took.as_millis(),
            out,
            err
        );
        if ok {
            self.delivered += 1;
        } else {
            self.failed += 1;
        }
        self.record(
            run.id,
            &run.action,
            if ok { "delivered" } else { "failed" },
            1,
            format!("{detail}; stdout: {out}; stderr: {err}"),
        );
        true
    }
}

/// The delay after failed attempt `attempts` (1-based).
fn backoff(attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    (FIRST_BACKOFF * factor).min(MAX_BACKOFF)
}

/// One webhook attempt (on the worker): POST `body` as JSON with the bearer token from
/// `token_file`, if any; `https://` trusts the bundled roots plus `ca_file`. `Ok`: a 2xx status.
fn post(
    url: &str,
    token_file: &str,
    ca_file: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<u16, String> {
    let token = if token_file.is_empty() {
        None
    } else {
        Some(crate::outbound::bearer_from_file(token_file)?)
    };
    let agent = crate::outbound::agent(ca_file, timeout).map_err(|e| format!("POST {url}: {e}"))?;
    let mut request = agent.post(url).header("Content-Type", "application/json");
    if let Some(t) = &token {
        request = request.header("Authorization", format!("Bearer {t}"));
    }
    let response = request
        .send(body)
        .map_err(|e| format!("POST {url}: {}", crate::outbound::describe(&e)))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(format!("POST {url}: HTTP {status}"))
    }
}

/// `VSM_ALERT_<FIELD>` for each field (names upper-cased, anything but letters and digits as
/// `_`), plus `VSM_ACTION` and `VSM_ALERT_TRANSITION`.
pub fn alert_environment(run: &ActionRun) -> Vec<(String, String)> {
    let mut env = vec![
        ("VSM_ACTION".to_string(), run.action.clone()),
        (
            "VSM_ALERT_TRANSITION".to_string(),
            run.transition.to_string(),
        ),
    ];
    for (k, v) in run.fields.iter().take(64) {
        let name: String = k
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let value: String = v.replace('\0', "").chars().take(4096).collect();
        env.push((format!("VSM_ALERT_{name}"), value));
    }
    env
}

impl Actions {
    /// No actions; exec pipes use `tokens` ([`TOKENS_NEEDED`] of them).
    pub fn new(tokens: TokenRange) -> Actions {
        Actions {
            specs: BTreeMap::new(),
            queue: VecDeque::new(),
            exec: (0..EXEC_SLOTS).map(|_| None).collect(),
            tokens,
            records: VecDeque::new(),
            next_id: 1,
            dropped: 0,
            delivered: 0,
            failed: 0,
            ca_file: String::new(),
        }
    }

    /// The configured `[actions.*]` (deliveries already queued keep the spec they had).
    pub fn set_specs(&mut self, specs: BTreeMap<String, ActionSpec>) {
        self.specs = specs;
    }

    fn record(&mut self, id: u64, action: &str, outcome: &str, attempts: u32, detail: String) {
        if self.records.len() >= MAX_RECORDS {
            self.records.pop_front();
        }
        self.records.push_back(json!({
            "id": id,
            "action": action,
            "outcome": outcome,
            "attempts": attempts,
            "detail": crate::monitor::checks::probe::bounded(detail),
            "at": crate::state::rfc3339_utc_millis(SystemTime::now()),
        }));
    }

    /// Runs `run` (from an alert). Unknown or mismatched actions are recorded as failed.
    /// Returns the delivery id.
    ///
    /// # Errors
    /// The action does not name a defined `webhook:NAME` or `exec:NAME` action.
    pub fn run(&mut self, cx: &mut RoomCx<'_, Self>, run: &ActionRun) -> Result<u64, ApiError> {
        let id = self.next_id;
        self.next_id += 1;
        let (kind, name) = run.action.split_once(':').unwrap_or(("", ""));
        let spec = match self.specs.get(name) {
            Some(s) if s.kind.as_str() == kind => s.clone(),
            _ => {
                let why = format!("no [actions.{name}] of kind {kind} is configured");
                self.failed += 1;
                self.record(id, &run.action, "failed", 0, why.clone());
                return Err(ApiError::field(ErrorCode::NotFound, "name", why));
            }
        };
        match spec.kind {
            ActionKind::Webhook => {
                let mut alert = Map::new();
                for (k, v) in &run.fields {
                    alert.insert(k.clone(), Value::String(v.clone()));
                }
                let body = json!({
                    "action": run.action,
                    "transition": run.transition,
                    "alert": alert,
                });
                if self.queue.len() >= MAX_QUEUE {
                    // The oldest waiting one goes; the head may be in flight, so it stays.
                    let at = usize::from(self.queue.front().is_some_and(|w| w.busy));
                    if let Some(old) = self.queue.remove(at) {
                        self.dropped += 1;
                        log::warn!("action {} dropped: the webhook queue is full", old.action);
                        self.record(
                            old.id,
                            &old.action,
                            "dropped",
                            old.attempts,
                            "queue full".into(),
                        );
                    }
                }
                self.queue.push_back(Webhook {
                    id,
                    action: run.action.clone(),
                    url: spec.url.clone(),
                    token_file: spec.token_file.clone(),
                    timeout: Duration::from_millis(spec.timeout_ms),
                    body: body.to_string().into_bytes(),
                    attempts: 0,
                    queued_at: SystemTime::now(),
                    busy: false,
                });
                self.pump(cx);
            }
            ActionKind::Exec => {
                let Some(slot) = self.exec.iter().position(Option::is_none) else {
                    self.failed += 1;
                    let why = format!("{EXEC_SLOTS} exec actions are already running");
                    self.record(id, &run.action, "skipped", 0, why.clone());
                    return Err(ApiError::new(ErrorCode::Busy, why));
                };
                let tokens = PipeTokens {
                    stdout: self
                        .tokens
                        .token(3 * slot)
                        .unwrap_or(mio::Token(usize::MAX)),
                    stderr: self
                        .tokens
                        .token(3 * slot + 1)
                        .unwrap_or(mio::Token(usize::MAX)),
                    stdin: self
                        .tokens
                        .token(3 * slot + 2)
                        .unwrap_or(mio::Token(usize::MAX)),
                };
                match ChildRun::spawn(&spec.argv, &alert_environment(run), cx.registry, tokens) {
                    Ok(child) => {
                        let deadline = cx.timers().insert(
                            Instant::now() + Duration::from_millis(spec.timeout_ms),
                            Timer::ExecDeadline { slot, id },
                        );
                        self.exec[slot] = Some(ExecRun {
                            id,
                            action: run.action.clone(),
                            child,
                            deadline: Some(deadline),
                            timeout_ms: spec.timeout_ms,
                        });
                    }
                    Err(why) => {
                        self.failed += 1;
                        log::warn!("action {} not started: {why}", run.action);
                        self.record(id, &run.action, "failed", 1, why);
                    }
                }
            }
        }
        Ok(id)
    }

    /// Sends the head of the queue to the worker unless it is already there or waiting.
    fn pump(&mut self, cx: &mut RoomCx<'_, Self>) {
        let Some(head) = self.queue.front_mut().filter(|w| !w.busy) else {
            return;
        };
        head.busy = true;
        head.attempts += 1;
        let (id, url, token_file, body, timeout) = (
            head.id,
            head.url.clone(),
            head.token_file.clone(),
            head.body.clone(),
            head.timeout,
        );
        let ca_file = self.ca_file.clone();
        let submitted = cx.submit(
            timeout + Duration::from_secs(1),
            move || Attempted {
                id,
                result: post(&url, &token_file, &ca_file, &body, timeout),
            },
            move |why| Attempted {
                id,
                result: Err(why.to_string()),
            },
        );
        if let Err(failed) = submitted {
            self.on_job(cx, failed);
        }
    }

    /// `POST /api/v1/actions/{name}/test`: runs the action with a test alert and answers with
    /// the delivery id (its outcome appears in [`Actions::status`]).
    pub fn test(&mut self, cx: &mut RoomCx<'_, Self>, name: &str, reply: ReplyTo) {
        let Some(spec) = self.specs.get(name) else {
            let err = ApiError::field(
                ErrorCode::NotFound,
                "name",
                format!(
                    "no [actions.{}] is configured",
                    name.chars().take(80).collect::<String>().escape_default()
                ),
            );
            cx.reply(reply, Err(err));
            return;
        };
        let now = crate::state::rfc3339_utc_millis(SystemTime::now());
        let run = ActionRun {
            action: format!("{}:{name}", spec.kind.as_str()),
            transition: "fired",
            fields: [
                ("id", format!("test-{}", self.next_id)),
                ("rule", "action_test".to_string()),
                ("severity", "info".to_string()),
                ("metric", "test".to_string()),
                ("current_value", "0".to_string()),
                ("threshold", "0".to_string()),
                ("trend", "0".to_string()),
                ("message", format!("test of action {name} from vsm-daemon")),
                ("first_seen", now.clone()),
                ("last_seen", now),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        };
        let answer = self.run(cx, &run).map(|id| {
            json!({"delivery": id, "action": run.action, "fields": run.fields.iter().cloned().collect::<BTreeMap<_, _>>()})
        });
        cx.reply(reply, answer);
    }

    /// Queue and outcome counters, and the latest outcomes (newest last).
    pub fn status(&self) -> Value {
        json!({
            "queued": self.queue.len(),
            "queue_limit": MAX_QUEUE,
            "dropped": self.dropped,
            "delivered": self.delivered,
            "failed": self.failed,
            "exec_running": self.exec.iter().flatten().count(),
            "oldest_queued": self.queue.front().map(|w| crate::state::rfc3339_utc_millis(w.queued_at)),
            "deliveries": self.records,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_millis(1000));
        assert_eq!(backoff(7), Duration::from_secs(30));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }

    #[test]
    fn alert_fields_become_environment_variables() {
        let run = ActionRun {
            action: "exec:notify".into(),
            transition: "resolved",
            fields: vec![
                ("current-value".into(), "9\0x".into()),
                ("rule".into(), "check:db".into()),
            ],
        };
        let env = alert_environment(&run);
        assert!(env.contains(&("VSM_ALERT_CURRENT_VALUE".into(), "9x".into())));
        assert!(env.contains(&("VSM_ALERT_RULE".into(), "check:db".into())));
        assert!(env.contains(&("VSM_ALERT_TRANSITION".into(), "resolved".into())));
    }
}
