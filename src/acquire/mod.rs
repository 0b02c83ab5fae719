//! The acquisition pipeline (DESIGN.md §9, §13; the seed's `integrate_server`): one package,
//! named exactly, installed where the daemon keeps it, tried in the sandbox, assessed,
//! registered, started and verified, or refused and cleaned away.
//!
//! Steps, each with a deadline and a `capability_acquisition_progress` event after it:
//! validate (the package is exact, its server id is free) → install (`npm install
//! --ignore-scripts …` or a venv and `pip install NAME==EXACT`, children spawned from the
//! loop without a shell, output captured and bounded, killed as a group at the deadline) →
//! entry point (the installed tree read on the worker: `bin`, console script, ownership claim,
//! install scripts) → sandbox trial (the MCP room's own [`crate::api::McpRequest::Trial`]:
//! one MCP client, not two) → assessment ([`assess`]) and its decision record
//! ([`decisions`], persisted) → register (the MCP room's register request, so its validation
//! and `servers.json` write apply) → start and verify (the server reaches `active` with its
//! tools) → `capability_acquired`. Any failure publishes `capability_acquisition_failed` with
//! the step and reason, unregisters what was registered and removes the install directory.
//!
//! Acquisitions are asked for by people (`capabilities/integrate`, `mcp register`) or, with
//! `[variety] auto_acquire`, by the autonomous cycle ([`auto`]: this room follows
//! `variety_gap_detected` and `variety_updated`, asks discovery, queues the best-ranked
//! candidate and the next one after a failure); each says who asked (`requested_by`).
//!
//! Invariants: one acquisition runs at a time; at most [`MAX_QUEUED`] wait; at most
//! [`MAX_KEPT`] finished ones are kept for `GET /api/v1/capabilities/acquisitions/{id}`
//! (oldest first out). Nothing of a failed or refused acquisition stays registered or
//! installed; the next one starts only once the install directory is gone. Nothing blocks the
//! loop: file system work goes to the worker, processes are watched through their pipes and
//! SIGCHLD.

pub mod assess;
pub mod auto;
pub mod decisions;
pub mod install;
pub mod ops;

use crate::api::{
    AcquireRequest, Answer, ApiError, DiscoveryRequest, ErrorCode, McpRequest, ReplyTo, Request,
};
use crate::config::Config;
use crate::events::{Channel, EventData};
use crate::mcp::process::PipeTokens;
use crate::monitor::child::ChildRun;
use crate::reactor::timer::TimerId;
use crate::reactor::TokenRange;
use crate::room::{Effect, Room, RoomCx, Serve};
use crate::spec::ServerSpec;
use crate::variety::package::{PackageRef, Registry};
use decisions::{Decision, Decisions, DECISIONS_FILE};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// Pipe tokens the room needs (one install child at a time).
pub const TOKENS_NEEDED: usize = 3;
/// Acquisitions waiting at most (one more is `busy`).
pub const MAX_QUEUED: usize = 8;
/// Finished acquisitions kept for their status at most.
pub const MAX_KEPT: usize = 64;
/// Deadline of one install command.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Deadline of a worker job (preparing, inspecting, removing a directory).
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// Least time a registered server gets to become active.
const VERIFY_MIN: Duration = Duration::from_secs(30);
/// Open files a trial may have.
const TRIAL_OPEN_FILES: u64 = 256;

/// The steps, in order (their index is the progress).
const STEPS: &[&str] = &[
    "validate",
    "install",
    "entry_point",
    "sandbox_trial",
    "assessment",
    "register",
    "verify",
];

/// The room's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The deadline of acquisition `n`'s current step.
    Step(u64),
    /// The autonomous cycle's next retry of a gap it could not close.
    Retry,
}

/// Worker results, each for acquisition `n`.
#[derive(Debug)]
pub enum Job {
    /// The install directory was made empty.
    Prepared(u64, Result<(), String>),
    /// The installed tree was read.
    Inspected(u64, Box<Result<install::Installed, String>>),
    /// The install directory of a failed acquisition was removed.
    Removed(u64, Result<(), String>),
}

/// What the registry entry said, when the request was one.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct RegistryFacts {
    name: Option<String>,
    status: Option<String>,
}

/// One acquisition, as `GET /api/v1/capabilities/acquisitions/{id}` shows it.
#[derive(Debug)]
struct Acquisition {
    n: u64,
    package: PackageRef,
    registry: RegistryFacts,
    declared: Vec<String>,
    /// Environment values for the server (never shown: only the names are).
    env: BTreeMap<String, String>,
    requested_by: String,
    created: SystemTime,
    /// `queued`, `running`, `acquired`, `refused`, `failed`, `cancelled` (by the cycle,
    /// before it started: see `Acquire::drop_unwanted`).
    state: &'static str,
    step: &'static str,
    /// (step, milliseconds, outcome) of each step done.
    steps: Vec<Value>,
    result: Value,
}

impl Acquisition {
    fn id(&self) -> String {
        format!("acq-{}", self.n)
    }

    fn spec_text(&self) -> String {
        match self.package.registry {
            Registry::Npm => format!("npm:{}", self.package.install_arg()),
            Registry::Pypi => format!("pypi:{}", self.package.install_arg()),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id(),
            "package": self.spec_text(),
            "server_id": self.package.slug(),
            "registry": self.registry,
            "requested_by": self.requested_by,
            "env": self.env.keys().collect::<Vec<_>>(),
            "created_at": crate::state::rfc3339_utc_millis(self.created),
            "state": self.state,
            "step": self.step,
            "steps": self.steps,
            "result": self.result,
        })
    }
}

/// The acquisition running now.
#[derive(Debug)]
struct Run {
    n: u64,
    step: &'static str,
    step_started: Instant,
    started: Instant,
    dir: PathBuf,
    commands: VecDeque<Vec<String>>,
    child: Option<ChildRun>,
    timer: Option<TimerId>,
    /// Tag of the answer awaited from another room.
    tag: u64,
    installed: Option<install::Installed>,
    registered: bool,
    /// Set when it ended: the outcome, waiting for the directory's removal.
    ending: bool,
}

/// What the policy says, from the configuration.
#[derive(Debug, Clone)]
struct Settings {
    state_dir: PathBuf,
    scan_enabled: bool,
    min_score: u8,
    allowed: Vec<String>,
    blocked: Vec<String>,
    sandbox_timeout_ms: u64,
    max_open_files: u64,
    /// The built-in keyword rules and `[[variety.rules]]`.
    rules: Vec<crate::variety::capability::Rule>,
}

impl Settings {
    fn from_config(config: &Config, state_dir: PathBuf) -> Settings {
        Settings {
            state_dir,
            scan_enabled: config.security.security_scan_enabled,
            min_score: config.security.min_security_score,
            allowed: config.security.allowed_capabilities.clone(),
            blocked: config.security.blocked_capabilities.clone(),
            sandbox_timeout_ms: config.mcp_servers.sandbox_timeout_ms,
            max_open_files: config.mcp_servers.max_open_files,
            rules: crate::variety::required::rules(&config.variety.rules),
        }
    }
}

/// The acquisition room.
pub struct Acquire {
    tokens: TokenRange,
    settings: Settings,
    queue: VecDeque<u64>,
    all: BTreeMap<u64, Acquisition>,
    run: Option<Run>,
    next: u64,
    next_tag: u64,
    decisions: Decisions,
    /// Why decisions are not persisted (a state file this daemon does not understand).
    decisions_read_only: Option<String>,
    /// The autonomous cycle (`[variety] auto_acquire`).
    auto: auto::Auto,
    /// The retry timer armed for the cycle, and when it fires.
    retry: Option<(TimerId, Instant)>,
}

impl Acquire {
    /// A room with no acquisitions; `decisions` is what the state file held (`Err`: a file
    /// it did not understand, left alone and not written).
    pub fn new(
        config: &Config,
        state_dir: PathBuf,
        tokens: TokenRange,
        decisions: Result<Decisions, String>,
    ) -> Acquire {
        let (decisions, decisions_read_only) = match decisions {
            Ok(d) => (d, None),
            Err(e) => {
                log::error!(
                    "{DECISIONS_FILE}: {e}; left alone, new decisions are kept in memory only"
                );
                (Decisions::default(), Some(e))
            }
        };
        Acquire {
            tokens,
            settings: Settings::from_config(config, state_dir),
            queue: VecDeque::new(),
            all: BTreeMap::new(),
            run: None,
            next: 1,
            next_tag: 1,
            decisions,
            decisions_read_only,
            auto: auto::Auto::new(
                config.variety.auto_acquire,
                Duration::from_millis(config.variety.acquire_cooldown_ms),
            ),
            retry: None,
        }
    }

    fn pipe_tokens(&self) -> Option<PipeTokens> {
        Some(PipeTokens {
            stdout: self.tokens.token(0)?,
            stderr: self.tokens.token(1)?,
            stdin: self.tokens.token(2)?,
        })
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    fn current(&mut self) -> Option<(&mut Run, &mut Acquisition)> {
        let run = self.run.as_mut()?;
        let acq = self.all.get_mut(&run.n)?;
        Some((run, acq))
    }

    /// Marks the end of the current step and the start of `next`, with a progress event.
    fn advance(&mut self, cx: &mut RoomCx<'_, Self>, next: &'static str, message: String) {
        let Some((run, acq)) = self.current() else {
            return;
        };
        let took = run.step_started.elapsed().as_millis() as u64;
        let done = run.step;
        acq.steps
            .push(json!({"step": done, "ms": took, "outcome": message}));
        run.step = next;
        run.step_started = Instant::now();
        acq.step = next;
        let index = STEPS.iter().position(|s| *s == done).unwrap_or(0) + 1;
        let data = EventData::CapabilityAcquisitionProgress {
            acquisition_id: acq.id(),
            package: acq.spec_text(),
            step: done,
            next_step: next,
            progress: index as f64 / STEPS.len() as f64,
            message,
        };
        cx.event(Channel::VarietyMonitoring, data);
    }

    /// Starts the next queued acquisition when none runs.
    fn pump(&mut self, cx: &mut RoomCx<'_, Self>) {
        if self.run.is_some() {
            return;
        }
        let Some(n) = self.queue.pop_front() else {
            return;
        };
        let Some(acq) = self.all.get_mut(&n) else {
            return;
        };
        acq.state = "running";
        acq.step = "validate";
        let slug = acq.package.slug();
        let dir = install::install_dir(&self.settings.state_dir, &slug);
        let tag = self.next_tag + 1;
        self.next_tag = tag;
        self.run = Some(Run {
            n,
            step: "validate",
            step_started: Instant::now(),
            started: Instant::now(),
            dir,
            commands: VecDeque::new(),
            child: None,
            timer: None,
            tag,
            installed: None,
            registered: false,
            ending: false,
        });
        log::info!("acquisition acq-{n}: {} starts", slug);
        // Validate: the server id must be free (a registered server is never replaced).
        cx.ask(tag, Request::Mcp(McpRequest::Show { id: slug }));
    }

    fn validated(&mut self, cx: &mut RoomCx<'_, Self>, answer: Answer) {
        let slug = match self.current() {
            Some((_, acq)) => acq.package.slug(),
            None => return,
        };
        match answer {
            Ok(_) => {
                return self.fail(
                    cx,
                    "validate",
                    format!("an MCP server '{slug}' is registered already"),
                    Vec::new(),
                )
            }
            Err(e) if e.code == ErrorCode::ServerNotFound => {}
            Err(e) => return self.fail(cx, "validate", e.message, Vec::new()),
        }
        self.advance(
            cx,
            "install",
            format!("exact package, server id '{slug}' free"),
        );
        let Some(run) = self.run.as_mut() else {
            return;
        };
        let n = run.n;
        let dir = run.dir.clone();
        let submitted = cx.submit(
            JOB_TIMEOUT,
            move || Job::Prepared(n, prepare_dir(&dir)),
            move |why| Job::Prepared(n, Err(why.to_string())),
        );
        if let Err(job) = submitted {
            self.on_job(cx, job);
        }
    }

    /// Spawns the next install command, or reads the installed tree when none is left.
    fn next_command(&mut self, cx: &mut RoomCx<'_, Self>) {
        let Some(tokens) = self.pipe_tokens() else {
            return self.fail(
                cx,
                "install",
                "no pipe tokens for the install child".into(),
                Vec::new(),
            );
        };
        let Some(run) = self.run.as_mut() else {
            return;
        };
        let n = run.n;
        if let Some(argv) = run.commands.pop_front() {
            match ChildRun::spawn(&argv, &install::client_environment(), cx.registry, tokens) {
                Ok(child) => {
                    log::info!("acquisition acq-{n}: running {}", argv.join(" "));
                    run.child = Some(child);
                    run.timer = Some(
                        cx.timers()
                            .insert(Instant::now() + INSTALL_TIMEOUT, Timer::Step(n)),
                    );
                }
                Err(e) => self.fail(
                    cx,
                    "install",
                    format!("cannot run {}: {e}", argv[0]),
                    Vec::new(),
                ),
            }
            return;
        }
        let package = self.all.get(&n).map(|a| a.package.clone());
        let Some(package) = package else {
            return;
        };
        let dir = run.dir.clone();
        self.advance(cx, "entry_point", "installed".into());
        let submitted = cx.submit(
            JOB_TIMEOUT,
            move || Job::Inspected(n, Box::new(install::inspect(&package, &dir))),
            move |why| Job::Inspected(n, Box::new(Err(why.to_string()))),
        );
        if let Err(job) = submitted {
            self.on_job(cx, job);
        }
    }

    fn inspected(&mut self, cx: &mut RoomCx<'_, Self>, installed: install::Installed) {
        let secs = self.settings.sandbox_timeout_ms.div_ceil(1000);
        let open_files = self.settings.max_open_files.min(TRIAL_OPEN_FILES);
        let Some((run, acq)) = self.current() else {
            return;
        };
        let slug = acq.package.slug();
        let mut id = format!("trial-{slug}");
        id.truncate(64);
        let Some((command, args)) = installed.command.split_first() else {
            return self.fail(cx, "entry_point", "no command to run".into(), Vec::new());
        };
        let spec = trial_spec(
            &id,
            command,
            args,
            &run.dir,
            &acq.declared,
            &acq.env,
            (open_files, secs.max(10)),
        );
        let message = format!("entry point: {}", installed.command.join(" "));
        run.installed = Some(installed);
        let tag = self.tag();
        if let Some(run) = self.run.as_mut() {
            run.tag = tag;
        }
        self.advance(cx, "sandbox_trial", message);
        let Some(spec) = spec else {
            return self.fail(
                cx,
                "sandbox_trial",
                "the trial spec is invalid".into(),
                Vec::new(),
            );
        };
        cx.ask(
            tag,
            Request::Mcp(McpRequest::Trial {
                spec: Box::new(spec),
                timeout_ms: self.settings.sandbox_timeout_ms,
            }),
        );
    }

    fn trialled(&mut self, cx: &mut RoomCx<'_, Self>, answer: Answer) {
        let trial = match answer {
            Ok(v) => v,
            Err(e) => return self.fail(cx, "sandbox_trial", e.message, Vec::new()),
        };
        let policy = assess::Policy {
            scan_enabled: self.settings.scan_enabled,
            min_score: self.settings.min_score,
            allowed: self.settings.allowed.clone(),
            blocked: self.settings.blocked.clone(),
            rules: self.settings.rules.clone(),
        };
        let Some((run, acq)) = self.current() else {
            return;
        };
        let installed = run.installed.clone().unwrap_or_default();
        let tools: Vec<(String, String)> = trial["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["name"].as_str().unwrap_or("").to_string(),
                    t["description"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let facts = assess::Facts {
            exact_version: Some(acq.package.version.clone()),
            registry_status: acq.registry.status.clone(),
            registry_name: acq.registry.name.clone(),
            claimed_name: installed.mcp_name.clone(),
            install_scripts: installed.install_scripts.clone(),
            declared: acq.declared.clone(),
            trial: assess::Trial {
                outcome: trial["outcome"].as_str().unwrap_or("failed").to_string(),
                reason: trial["reason"].as_str().unwrap_or("").to_string(),
                tools,
                protocol_errors: trial["protocol_errors"].as_u64().unwrap_or(0),
                landlock: trial["landlock"].as_str().unwrap_or("").to_string(),
            },
        };
        let trial_message = format!(
            "{} in {} ms: {}; {} tools",
            facts.trial.outcome,
            trial["elapsed_ms"],
            facts.trial.reason,
            facts.trial.tools.len()
        );
        let assessment = assess::assess(&facts, &policy);
        let (id, package, requested_by) = (acq.id(), acq.spec_text(), acq.requested_by.clone());
        acq.result = json!({
            "assessment": assessment,
            "trial": {
                "outcome": facts.trial.outcome, "reason": facts.trial.reason,
                "tools": trial["tools"].as_array().map_or(0, Vec::len),
                "stderr_tail": trial["stderr_tail"], "landlock": trial["landlock"],
                "elapsed_ms": trial["elapsed_ms"],
            },
            "installed": installed,
        });
        self.advance(cx, "assessment", trial_message);
        self.record_decision(cx, &id, &package, &requested_by, &assessment);
        if !assessment.approved() {
            let reasons = assessment.reasons.clone();
            let summary = reasons.join("; ");
            return self.fail(cx, "assessment", summary, reasons);
        }
        let Some((run, acq)) = self.current() else {
            return;
        };
        let Some((command, args)) = installed.command.split_first() else {
            return;
        };
        let capabilities: Vec<String> = assessment.capabilities.keys().cloned().collect();
        let spec = server_spec(
            &acq.package.slug(),
            command,
            args,
            &run.dir,
            &capabilities,
            &acq.env,
        );
        let message = match assessment.score {
            Some(s) => format!("approved with score {s} (min {})", assessment.min_score),
            None => "approved (scoring off)".into(),
        };
        let tag = self.tag();
        if let Some(run) = self.run.as_mut() {
            run.tag = tag;
        }
        self.advance(cx, "register", message);
        match spec {
            Some(spec) => cx.ask(
                tag,
                Request::Mcp(McpRequest::Register {
                    spec: Box::new(spec),
                }),
            ),
            None => self.fail(
                cx,
                "register",
                "the server spec is invalid".into(),
                Vec::new(),
            ),
        }
    }

    fn record_decision(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        acquisition_id: &str,
        package: &str,
        requested_by: &str,
        a: &assess::Assessment,
    ) {
        let decision = Decision {
            id: 0,
            at: crate::state::rfc3339_utc_millis(SystemTime::now()),
            verdict: a.verdict.to_string(),
            package: package.to_string(),
            acquisition_id: acquisition_id.to_string(),
            requested_by: requested_by.to_string(),
            score: a.score,
            min_score: a.min_score,
            criteria: serde_json::to_value(&a.criteria).unwrap_or(Value::Null),
            capabilities: serde_json::to_value(&a.capabilities).unwrap_or(Value::Null),
            reasons: a.reasons.clone(),
        };
        let id = self.decisions.push(decision);
        if self.decisions_read_only.is_none() {
            cx.persist(DECISIONS_FILE, self.decisions.document(), None);
        }
        cx.event(
            Channel::VarietyMonitoring,
            EventData::AcquisitionDecision {
                decision_id: id,
                acquisition_id: acquisition_id.to_string(),
                package: package.to_string(),
                verdict: a.verdict,
                score: a.score,
                reasons: a.reasons.clone(),
            },
        );
    }

    fn registered(&mut self, cx: &mut RoomCx<'_, Self>, answer: Answer) {
        let details = match answer {
            Ok(v) => v,
            Err(e) => return self.fail(cx, "register", e.message, Vec::new()),
        };
        let verify = Duration::from_millis(self.settings.sandbox_timeout_ms).max(VERIFY_MIN);
        let Some(run) = self.run.as_mut() else {
            return;
        };
        run.registered = true;
        let n = run.n;
        run.timer = Some(cx.timers().insert(Instant::now() + verify, Timer::Step(n)));
        self.advance(cx, "verify", "registered".into());
        if details["status"] == "active" {
            self.ask_tools(cx);
        }
    }

    fn ask_tools(&mut self, cx: &mut RoomCx<'_, Self>) {
        let tag = self.tag();
        let Some((run, acq)) = self.current() else {
            return;
        };
        run.tag = tag;
        let id = acq.package.slug();
        cx.ask(tag, Request::Mcp(McpRequest::Tools { id }));
    }

    fn verified(&mut self, cx: &mut RoomCx<'_, Self>, answer: Answer) {
        let tools = match answer {
            Ok(v) => v,
            Err(e) => return self.fail(cx, "verify", e.message, Vec::new()),
        };
        let count = tools["tools"].as_array().map_or(0, Vec::len);
        if tools["status"] != "active" || count == 0 {
            return self.fail(
                cx,
                "verify",
                format!("the server is {} with {count} tools", tools["status"]),
                Vec::new(),
            );
        }
        let Some((run, acq)) = self.current() else {
            return;
        };
        if let Some(t) = run.timer.take() {
            cx.timers().cancel(t);
        }
        let total = run.started.elapsed().as_millis() as u64;
        let capabilities: Vec<String> = acq.result["assessment"]["capabilities"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        acq.state = "acquired";
        acq.result["server_id"] = json!(acq.package.slug());
        acq.result["total_ms"] = json!(total);
        let data = EventData::CapabilityAcquired {
            acquisition_id: acq.id(),
            package: acq.spec_text(),
            server_id: acq.package.slug(),
            capability: capabilities.first().cloned(),
            capabilities,
            tools: count,
            security_score: acq.result["assessment"]["score"].as_u64(),
        };
        log::info!(
            "acquisition {}: acquired {} in {total} ms",
            acq.id(),
            acq.spec_text()
        );
        let (n, package) = (acq.n, acq.spec_text());
        self.advance(cx, "done", format!("active with {count} tools"));
        cx.event(Channel::VarietyMonitoring, data);
        self.run = None;
        if self.auto.finished(n, &package, true, Instant::now()) {
            self.auto_next(cx);
        }
        self.pump(cx);
    }

    /// Ends the running acquisition as failed (or refused) at `step`: event, unregistering what
    /// was registered, killing the install child; the next one starts once the install
    /// directory is removed.
    fn fail(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        step: &'static str,
        reason: String,
        reasons: Vec<String>,
    ) {
        let reason = truncate(reason, 4096);
        let Some((run, acq)) = self.current() else {
            return;
        };
        if run.ending {
            return;
        }
        run.ending = true;
        if let Some(t) = run.timer.take() {
            cx.timers().cancel(t);
        }
        if let Some(child) = run.child.as_mut() {
            child.kill();
        }
        let refused = !reasons.is_empty();
        acq.state = if refused { "refused" } else { "failed" };
        acq.result["failed_step"] = json!(step);
        acq.result["reason"] = json!(reason);
        let took = run.step_started.elapsed().as_millis() as u64;
        acq.steps
            .push(json!({"step": step, "ms": took, "outcome": format!("failed: {reason}")}));
        log::warn!(
            "acquisition {} of {} failed at {step}: {reason}",
            acq.id(),
            acq.spec_text()
        );
        let data = EventData::CapabilityAcquisitionFailed {
            acquisition_id: acq.id(),
            package: acq.spec_text(),
            step,
            reason,
            reasons,
        };
        let slug = acq.package.slug();
        let package = acq.spec_text();
        let (n, dir, registered) = (run.n, run.dir.clone(), run.registered);
        cx.event(Channel::VarietyMonitoring, data);
        if self.auto.finished(n, &package, false, Instant::now()) {
            // The next-ranked candidate is queued now; it starts once this one's directory
            // is gone.
            self.auto_next(cx);
        }
        if registered {
            let tag = self.tag();
            cx.ask(tag, Request::Mcp(McpRequest::Unregister { id: slug }));
        }
        if self.run.as_ref().is_some_and(|r| r.child.is_some()) {
            // The directory goes once the killed child is reaped (see `on_child_exit`, which
            // lands here again and finds `ending`): removing it under a live npm would race.
            return;
        }
        self.remove_dir(cx, n, dir);
    }

    fn remove_dir(&mut self, cx: &mut RoomCx<'_, Self>, n: u64, dir: PathBuf) {
        let submitted = cx.submit(
            JOB_TIMEOUT,
            move || Job::Removed(n, remove_dir(&dir)),
            move |why| Job::Removed(n, Err(why.to_string())),
        );
        if let Err(job) = submitted {
            self.on_job(cx, job);
        }
    }

    /// Drops the oldest finished acquisitions beyond [`MAX_KEPT`].
    fn trim(&mut self) {
        while self.all.len() > MAX_KEPT + MAX_QUEUED + 1 {
            let oldest = self
                .all
                .values()
                .find(|a| !matches!(a.state, "queued" | "running"))
                .map(|a| a.n);
            match oldest {
                Some(n) => {
                    self.all.remove(&n);
                }
                None => break,
            }
        }
    }

    fn integrate(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        body: Value,
        requested_by: String,
    ) -> Answer {
        let target = parse_target(&body)
            .map_err(|(field, e)| ApiError::field(ErrorCode::InvalidParameter, field, e))?;
        self.enqueue(cx, target, requested_by)
            .map(|(_, answer)| answer)
    }

    /// Queues an acquisition of `target`; its number and the answer to the asker.
    fn enqueue(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        target: Target,
        requested_by: String,
    ) -> Result<(u64, Value), ApiError> {
        let waiting = self.queue.len() + usize::from(self.run.is_some());
        if waiting > MAX_QUEUED {
            return Err(ApiError::new(
                ErrorCode::Busy,
                format!("{waiting} acquisitions are queued or running already"),
            ));
        }
        let slug = target.package.slug();
        if let Some(other) = self
            .all
            .values()
            .find(|a| matches!(a.state, "queued" | "running") && a.package.slug() == slug)
        {
            return Err(ApiError::field(
                ErrorCode::Conflict,
                "package",
                format!(
                    "acquisition {} of server '{slug}' is {} already",
                    other.id(),
                    other.state
                ),
            ));
        }
        let n = self.next;
        self.next += 1;
        let acq = Acquisition {
            n,
            package: target.package,
            registry: target.registry,
            declared: target.capabilities,
            env: target.env,
            requested_by,
            created: SystemTime::now(),
            state: "queued",
            step: "validate",
            steps: Vec::new(),
            result: json!({}),
        };
        let answer = json!({
            "acquisition_id": acq.id(),
            "package": acq.spec_text(),
            "server_id": slug,
            "state": "queued",
            "position": self.queue.len() + usize::from(self.run.is_some()),
            "status_url": format!("/api/v1/capabilities/acquisitions/{}", acq.id()),
        });
        self.all.insert(n, acq);
        self.queue.push_back(n);
        self.trim();
        self.pump(cx);
        Ok((n, answer))
    }

    /// A gap was detected: with `auto_acquire` on and no chain in progress, discovery is
    /// asked for providers of it.
    fn auto_gap(&mut self, cx: &mut RoomCx<'_, Self>, capability: &str) {
        if let Some(capability) = self.auto.gap(capability) {
            self.auto_discover(cx, capability);
        }
    }

    fn auto_discover(&mut self, cx: &mut RoomCx<'_, Self>, capability: String) {
        let tag = self.tag();
        log::info!("auto-acquire: looking for a provider of '{capability}'");
        self.auto.start(capability.clone(), tag);
        cx.ask(
            tag,
            Request::Discovery(DiscoveryRequest::Discover {
                source: None,
                query: capability,
            }),
        );
    }

    /// Queues the chain's next candidate; when there is none, the chain ends and the next
    /// waiting gap's starts.
    fn auto_next(&mut self, cx: &mut RoomCx<'_, Self>) {
        while let Some(pick) = self.auto.next(Instant::now()) {
            let package = pick.package.to_string();
            let target = Target {
                package: pick.package,
                registry: RegistryFacts {
                    name: pick.server_name,
                    status: pick.status,
                },
                capabilities: pick.capabilities,
                env: pick.env,
            };
            match self.enqueue(cx, target, "auto".into()) {
                Ok((n, _)) => {
                    log::info!("auto-acquire: acq-{n} queued for {package}");
                    self.auto.running(n);
                    return;
                }
                Err(e) => log::warn!("auto-acquire: {package} not queued: {}", e.message),
            }
        }
        if self.auto.idle() {
            if let Some(capability) = self.auto.end(Instant::now()) {
                self.auto_discover(cx, capability);
            }
            self.arm_retry(cx);
        }
    }

    /// The cycle's acquisition still in line when its gap closed (a provider came, or the
    /// capability is no longer required) is taken out of the line: it ends as `cancelled`,
    /// with a `capability_acquisition_failed` event at step `queued` saying why, so that a
    /// caller following it sees it end. One that already runs goes on (its verify step looks
    /// at the gap again).
    fn drop_unwanted(&mut self, cx: &mut RoomCx<'_, Self>) {
        let Some(n) = self.auto.unwanted() else {
            return;
        };
        if !self.queue.contains(&n) {
            return;
        }
        self.queue.retain(|q| *q != n);
        self.auto.dropped(n);
        let Some(acq) = self.all.get_mut(&n) else {
            return;
        };
        let reason =
            "not needed any more: the gap it was queued for closed while it waited".to_string();
        acq.state = "cancelled";
        acq.result["failed_step"] = json!("queued");
        acq.result["reason"] = json!(reason);
        log::info!(
            "auto-acquire: {} of {} dropped: {reason}",
            acq.id(),
            acq.spec_text()
        );
        let data = EventData::CapabilityAcquisitionFailed {
            acquisition_id: acq.id(),
            package: acq.spec_text(),
            step: "queued",
            reason,
            reasons: Vec::new(),
        };
        cx.event(Channel::VarietyMonitoring, data);
    }

    /// Keeps the retry timer at the cycle's next retry time (none when nothing waits).
    fn arm_retry(&mut self, cx: &mut RoomCx<'_, Self>) {
        let want = self.auto.retry_at();
        if self.retry.map(|(_, at)| at) == want {
            return;
        }
        if let Some((id, _)) = self.retry.take() {
            cx.timers().cancel(id);
        }
        if let Some(at) = want {
            self.retry = Some((cx.timers().insert(at, Timer::Retry), at));
        }
    }
}

impl Room for Acquire {
    type Timer = Timer;
    type Job = Job;
    type Output = Effect;
    const NAME: &'static str = "acquire";

    fn on_timer(&mut self, cx: &mut RoomCx<'_, Self>, timer: Timer) {
        let n = match timer {
            Timer::Step(n) => n,
            Timer::Retry => {
                self.retry = None;
                if let Some(capability) = self.auto.retry(Instant::now()) {
                    self.auto_discover(cx, capability);
                }
                return self.arm_retry(cx);
            }
        };
        let Some(run) = self.run.as_mut().filter(|r| r.n == n) else {
            return;
        };
        run.timer = None;
        match run.step {
            "install" => {
                if let Some(child) = run.child.as_mut() {
                    // The run ends when the killed group's leader is reaped.
                    child.kill();
                }
            }
            "verify" => {
                let ms = self.settings.sandbox_timeout_ms;
                self.fail(
                    cx,
                    "verify",
                    format!("the registered server did not become active with its tools in time ({ms} ms or 30 s)"),
                    Vec::new(),
                );
            }
            _ => {}
        }
    }

    fn on_job(&mut self, cx: &mut RoomCx<'_, Self>, done: Job) {
        match done {
            Job::Prepared(n, result)
                if self.run.as_ref().is_some_and(|r| r.n == n && !r.ending) =>
            {
                match result {
                    Ok(()) => {
                        let package = self.all.get(&n).map(|a| a.package.clone());
                        if let (Some(run), Some(package)) = (self.run.as_mut(), package) {
                            run.commands = install::install_commands(&package, &run.dir).into();
                        }
                        self.next_command(cx);
                    }
                    Err(e) => {
                        self.fail(cx, "install", format!("install directory: {e}"), Vec::new())
                    }
                }
            }
            Job::Inspected(n, result)
                if self.run.as_ref().is_some_and(|r| r.n == n && !r.ending) =>
            {
                match *result {
                    Ok(installed) => self.inspected(cx, installed),
                    Err(e) => self.fail(cx, "entry_point", e, Vec::new()),
                }
            }
            Job::Removed(n, result) => {
                if let Err(e) = result {
                    log::error!("acquisition acq-{n}: install directory not removed: {e}");
                }
                if self.run.as_ref().is_some_and(|r| r.n == n) {
                    self.run = None;
                    self.pump(cx);
                }
            }
            Job::Prepared(..) | Job::Inspected(..) => {}
        }
    }

    fn apply_config(&mut self, cx: &mut RoomCx<'_, Self>, config: &Config) {
        self.settings = Settings::from_config(config, self.settings.state_dir.clone());
        let start = self.auto.configure(
            config.variety.auto_acquire,
            Duration::from_millis(config.variety.acquire_cooldown_ms),
            Instant::now(),
        );
        if let Some(capability) = start {
            self.auto_discover(cx, capability);
        }
        self.arm_retry(cx);
    }

    fn on_event(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        _seq: u64,
        _channel: Channel,
        data: &EventData,
    ) {
        // A gap is acted on once the analysis says only an acquisition closes it (the gap
        // event of the same analysis comes first and says less: a provider still starting is
        // not a reason to install another).
        if let EventData::VarietyUpdated { acquirable, .. } = data {
            for capability in self.auto.gaps_now(acquirable) {
                self.auto_gap(cx, &capability);
            }
            self.drop_unwanted(cx);
            self.auto_next(cx);
            return self.arm_retry(cx);
        }
        let EventData::McpServerStatusChange {
            server_id,
            new_status,
            reason,
            ..
        } = data
        else {
            return;
        };
        let Some((run, acq)) = self.current() else {
            return;
        };
        if run.step != "verify" || run.ending || *server_id != acq.package.slug() {
            return;
        }
        match *new_status {
            "active" => self.ask_tools(cx),
            "backoff" | "failed" | "stopped" => {
                let why = format!("the registered server went {new_status}: {reason}");
                self.fail(cx, "verify", why, Vec::new());
            }
            _ => {}
        }
    }

    fn on_answer(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64, answer: Answer) {
        if let Some(capability) = self.auto.awaits(tag) {
            let kept = match &answer {
                Ok(data) => self.auto.discovered(Some(data)),
                Err(e) => {
                    log::warn!(
                        "auto-acquire: discovery for '{capability}' failed: {}",
                        e.message
                    );
                    self.auto.discovered(None)
                }
            };
            log::info!("auto-acquire: {kept} candidates to try");
            return self.auto_next(cx);
        }
        let Some(run) = self.run.as_ref().filter(|r| r.tag == tag && !r.ending) else {
            return;
        };
        match run.step {
            "validate" => self.validated(cx, answer),
            "sandbox_trial" => self.trialled(cx, answer),
            "register" => self.registered(cx, answer),
            "verify" => self.verified(cx, answer),
            _ => {}
        }
    }

    fn metrics(&self, e: &mut crate::telemetry::Exposition) {
        let none: &[(&str, &str)] = &[];
        let approved = self.decisions.count("approved") as f64;
        let refused = self.decisions.count("refused") as f64;
        e.gauge(
            "vsm_acquisition_decisions",
            "Acquisition decisions kept, by verdict.",
            &[
                (&[("verdict", "approved")][..], approved),
                (&[("verdict", "refused")][..], refused),
            ],
        );
        e.gauge(
            "vsm_acquisitions_queued",
            "Acquisitions waiting or running.",
            &[(
                none,
                (self.queue.len() + usize::from(self.run.is_some())) as f64,
            )],
        );
    }
}

impl crate::room::Parent for Acquire {
    /// Whether `token` is one of the install child's pipes.
    fn owns(&self, token: mio::Token) -> bool {
        self.tokens.owns(token)
    }

    /// The install child's pid, if one runs (spared by the MCP room's orphan sweep).
    fn child_pids(&self) -> Vec<i32> {
        self.run
            .as_ref()
            .and_then(|r| r.child.as_ref())
            .map(|c| vec![c.pid()])
            .unwrap_or_default()
    }

    /// Output on the install child's pipes.
    fn on_ready(&mut self, cx: &mut RoomCx<'_, Self>, token: mio::Token) {
        if let Some(child) = self.run.as_mut().and_then(|r| r.child.as_mut()) {
            child.on_ready(token, cx.registry);
        }
    }

    /// A child was reaped: `true` when it was the install child.
    fn on_child_exit(&mut self, cx: &mut RoomCx<'_, Self>, pid: i32, status: i32) -> bool {
        let Some(run) = self.run.as_mut() else {
            return false;
        };
        if run.child.as_ref().map(ChildRun::pid) != Some(pid) {
            return false;
        }
        let Some(mut child) = run.child.take() else {
            return false;
        };
        let (exit, took) = child.finish(status, cx.registry);
        if let Some(t) = run.timer.take() {
            cx.timers().cancel(t);
        }
        let n = run.n;
        if run.ending {
            // Killed by a failure: now that it is gone, its directory goes.
            let dir = run.dir.clone();
            self.remove_dir(cx, n, dir);
            return true;
        }
        let ok = !child.timed_out && exit == crate::monitor::child::Exit::Code(0);
        if ok {
            log::info!(
                "acquisition acq-{n}: install command done in {} ms",
                took.as_millis()
            );
            self.next_command(cx);
        } else {
            let why = if child.timed_out {
                format!("timed out after {} s", INSTALL_TIMEOUT.as_secs())
            } else {
                exit.describe()
            };
            let err = tail(&child.stderr.text(), 1500);
            let out = tail(&child.stdout.text(), 300);
            let detail = [err, out]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" | ");
            self.fail(
                cx,
                "install",
                format!("install command failed ({why}): {detail}"),
                Vec::new(),
            );
        }
        true
    }
}

impl Serve for Acquire {
    type Request = AcquireRequest;

    fn handle(&mut self, cx: &mut RoomCx<'_, Self>, request: AcquireRequest, reply: ReplyTo) {
        let answer = match request {
            AcquireRequest::Integrate { body } => {
                let by = match reply {
                    ReplyTo::Http { .. } => "api".to_string(),
                    ReplyTo::Ws { .. } => "ws".to_string(),
                    ReplyTo::Room { room, .. } => room.to_string(),
                };
                self.integrate(cx, body, by)
            }
            AcquireRequest::Show { id } => {
                let n = id.strip_prefix("acq-").and_then(|n| n.parse::<u64>().ok());
                n.and_then(|n| self.all.get(&n))
                    .map(Acquisition::to_json)
                    .ok_or_else(|| {
                        ApiError::field(
                            ErrorCode::NotFound,
                            "id",
                            format!("no acquisition '{id}' (finished ones are kept: the last {MAX_KEPT})"),
                        )
                    })
            }
            AcquireRequest::Decide => {
                let (open, queued, start) = self.auto.decide(Instant::now());
                let enabled = self.auto.enabled();
                let started = start.clone();
                if let Some(capability) = start {
                    self.auto_discover(cx, capability);
                }
                self.arm_retry(cx);
                let verdict = if !enabled {
                    "variety.auto_acquire is off: policy starts no acquisition by itself"
                } else if open.is_empty() {
                    "no gap is open"
                } else if queued.is_empty() {
                    "every open gap is being worked on already"
                } else {
                    "the open gaps are taken up"
                };
                Ok(json!({
                    "auto_acquire": enabled,
                    "open_gaps": open,
                    "taken_up": queued,
                    "started": started,
                    "verdict": verdict,
                }))
            }
            AcquireRequest::List => Ok(json!({
                "acquisitions": self.all.values().rev().map(Acquisition::to_json).collect::<Vec<_>>(),
            })),
            AcquireRequest::Decisions { since, verdict } => {
                let mut v = self.decisions.list(since, verdict);
                if let Some(why) = &self.decisions_read_only {
                    v["not_persisted"] = json!(why);
                }
                Ok(v)
            }
        };
        cx.reply(reply, answer);
    }
}

/// The decision records the state directory holds (none when the file is missing; `Err` for
/// one this daemon does not understand, which is then left alone).
pub fn load_decisions(state: &mut crate::state::StateDir) -> Result<Decisions, String> {
    match state.read::<Value>(DECISIONS_FILE) {
        Ok(None) => Ok(Decisions::default()),
        Ok(Some(v)) => Decisions::from_document(v),
        Err(e) => Err(e.to_string()),
    }
}

/// What to acquire: a package, and what a registry entry said of it.
#[derive(Debug)]
struct Target {
    package: PackageRef,
    registry: RegistryFacts,
    capabilities: Vec<String>,
    env: BTreeMap<String, String>,
}

/// `{"package": "npm:NAME@VERSION"}` (with optional `capabilities` and `env`), or a registry
/// entry (`{"server": {...}, "_meta": {...}}` or the bare `server` object, with optional `env`
/// beside it): its first npm or PyPI package with stdio transport, whose required environment
/// variables must be given (those with a default get it). Errors name the field.
fn parse_target(body: &Value) -> Result<Target, (&'static str, String)> {
    let package_err = |e: String| ("package", e);
    let capabilities: Vec<String> = match body.get("capabilities") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.len() <= 64 => a
            .iter()
            .map(|c| {
                c.as_str()
                    .map(str::to_string)
                    .ok_or(("capabilities", "capabilities must be strings".to_string()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err((
                "capabilities",
                "capabilities must be a list of at most 64 strings".into(),
            ))
        }
    };
    let mut env = parse_env(body.get("env"))?;
    if let Some(p) = body.get("package") {
        let text = p.as_str().ok_or_else(|| {
            package_err("package must be a string: npm:NAME@VERSION or pypi:NAME==VERSION".into())
        })?;
        return Ok(Target {
            package: PackageRef::parse(text).map_err(package_err)?,
            registry: RegistryFacts::default(),
            capabilities,
            env,
        });
    }
    let server = body.get("server").unwrap_or(body);
    let Some(packages) = server.get("packages").and_then(Value::as_array) else {
        return Err(package_err(
            "expected {\"package\": \"npm:NAME@VERSION\"} or a registry server entry with packages"
                .into(),
        ));
    };
    let name = server
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let status = body
        .pointer("/_meta/io.modelcontextprotocol.registry~1official/status")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut why = Vec::new();
    for p in packages.iter().take(32) {
        let kind = p.get("registryType").and_then(Value::as_str).unwrap_or("");
        let transport = p
            .pointer("/transport/type")
            .and_then(Value::as_str)
            .unwrap_or("stdio");
        let registry = match kind {
            "npm" => Registry::Npm,
            "pypi" => Registry::Pypi,
            other => {
                why.push(format!("{other:?} packages are not supported"));
                continue;
            }
        };
        if transport != "stdio" {
            why.push(format!("transport {transport:?} is not stdio"));
            continue;
        }
        let identifier = p.get("identifier").and_then(Value::as_str).unwrap_or("");
        let version = p
            .get("version")
            .or_else(|| server.get("version"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let package = PackageRef::new(registry, identifier, version).map_err(package_err)?;
        let declared = p.get("environmentVariables").and_then(Value::as_array);
        let mut missing = Vec::new();
        for var in declared.into_iter().flatten().take(MAX_ENV) {
            let Some(name) = var.get("name").and_then(Value::as_str) else {
                continue;
            };
            if env.contains_key(name) {
                continue;
            }
            match var.get("default").and_then(Value::as_str) {
                Some(default) => {
                    env.insert(name.to_string(), default.to_string());
                }
                None if var.get("isRequired").and_then(Value::as_bool) == Some(true) => {
                    missing.push(name.to_string());
                }
                None => {}
            }
        }
        if !missing.is_empty() {
            return Err((
                "env",
                format!(
                    "{package} needs {} (give the values in \"env\")",
                    missing.join(", ")
                ),
            ));
        }
        check_env(&env)?;
        return Ok(Target {
            package,
            registry: RegistryFacts { name, status },
            capabilities,
            env,
        });
    }
    Err(package_err(format!(
        "no npm or PyPI package with stdio transport ({})",
        why.join("; ")
    )))
}

/// Environment variables one acquisition may carry at most (a spec's own bound).
const MAX_ENV: usize = 64;

/// `"env": {"NAME": "value", ...}`, checked as a server spec's environment is.
fn parse_env(v: Option<&Value>) -> Result<BTreeMap<String, String>, (&'static str, String)> {
    let mut env = BTreeMap::new();
    match v {
        None | Some(Value::Null) => return Ok(env),
        Some(Value::Object(m)) if m.len() <= MAX_ENV => {
            for (k, v) in m {
                let Some(v) = v.as_str() else {
                    return Err(("env", format!("the value of {k} must be a string")));
                };
                env.insert(k.clone(), v.to_string());
            }
        }
        Some(_) => {
            return Err((
                "env",
                format!("env must be an object of at most {MAX_ENV} NAME: value strings"),
            ))
        }
    }
    check_env(&env)?;
    Ok(env)
}

/// The rules a registered server's environment follows (names, sizes, no NUL), so that a
/// request that would fail at registration is refused before anything is installed.
fn check_env(env: &BTreeMap<String, String>) -> Result<(), (&'static str, String)> {
    let probe: Result<ServerSpec, _> =
        serde_json::from_value(json!({"id": "env-check", "command": "true", "env": env}));
    match probe {
        Ok(spec) => spec.validate().map_err(|(_, why)| ("env", why)),
        Err(e) => Err(("env", e.to_string())),
    }
}

/// The spec of the sandbox trial: the tightest limits the MCP room applies (`limits`: open
/// files and CPU seconds).
fn trial_spec(
    id: &str,
    command: &str,
    args: &[String],
    dir: &std::path::Path,
    declared: &[String],
    env: &BTreeMap<String, String>,
    (open_files, cpu_seconds): (u64, u64),
) -> Option<ServerSpec> {
    let spec: ServerSpec = serde_json::from_value(json!({
        "id": id,
        "command": command,
        "args": args,
        "cwd": dir.display().to_string(),
        "capabilities": declared,
        "env": env,
        "autostart": true,
        "max_failures": 1,
        "limits": {"max_open_files": open_files, "max_cpu_seconds": cpu_seconds},
    }))
    .ok()?;
    spec.validate().ok()?;
    Some(spec)
}

/// The spec registered for an approved package.
fn server_spec(
    id: &str,
    command: &str,
    args: &[String],
    dir: &std::path::Path,
    capabilities: &[String],
    env: &BTreeMap<String, String>,
) -> Option<ServerSpec> {
    let spec: ServerSpec = serde_json::from_value(json!({
        "id": id,
        "command": command,
        "args": args,
        "cwd": dir.display().to_string(),
        "capabilities": capabilities,
        "env": env,
        "autostart": true,
    }))
    .ok()?;
    spec.validate().ok()?;
    Some(spec)
}

/// Makes `dir` exist and be empty (a leftover of an earlier attempt is removed).
fn prepare_dir(dir: &std::path::Path) -> Result<(), String> {
    remove_dir(dir)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

fn remove_dir(dir: &std::path::Path) -> Result<(), String> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// The last `max` bytes of `text` (at a character boundary).
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut at = text.len() - max;
    while !text.is_char_boundary(at) {
        at += 1;
    }
    format!("...{}", &text[at..])
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        text.truncate(crate::text::floor_boundary(&text, max));
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_a_package_or_a_registry_entry() {
        let t =
            parse_target(&json!({"package": "npm:@modelcontextprotocol/server-memory@2026.8.31"}))
                .unwrap();
        assert_eq!(t.package.slug(), "modelcontextprotocol-server-memory");
        assert!(t.registry.name.is_none());
        let entry = json!({
            "server": {"name": "io.github.x/time", "version": "1.2.0", "packages": [
                {"registryType": "oci", "identifier": "x"},
                {"registryType": "pypi", "identifier": "mcp-server-time", "version": "2026.10.19",
                 "transport": {"type": "stdio"}}]},
            "_meta": {"io.modelcontextprotocol.registry/official": {"status": "active"}}
        });
        let t = parse_target(&entry).unwrap();
        assert_eq!(t.package.install_arg(), "mcp-server-time==2026.10.19");
        assert_eq!(t.registry.name.as_deref(), Some("io.github.x/time"));
        assert_eq!(t.registry.status.as_deref(), Some("active"));
        for bad in [
            json!({"package": "npm:x@^1.0.0"}),
            json!({"package": "npm:--registry=x@1.0.0"}),
            json!({"package": 3}),
            json!({"server": {"packages": [{"registryType": "npm", "identifier": "x", "version": "1.0.0", "transport": {"type": "sse"}}]}}),
            json!({}),
        ] {
            assert!(parse_target(&bad).is_err(), "{bad}");
        }
    }

    /// Environment values come with the request; a registry entry's required variables must
    /// be among them (defaults fill the others), and bad names or values are refused naming
    /// `env` before anything is installed.
    #[test]
    fn environment_values_are_given_with_the_request() {
        let t = parse_target(&json!({"package": "npm:x@1.0.0", "env": {"API_KEY": "k"}})).unwrap();
        assert_eq!(t.env["API_KEY"], "k");
        let entry = |env: Value| {
            json!({"server": {"name": "io.x/y", "packages": [
                {"registryType": "npm", "identifier": "y", "version": "2.0.0",
                 "transport": {"type": "stdio"},
                 "environmentVariables": [
                    {"name": "API_KEY", "isRequired": true, "isSecret": true},
                    {"name": "REGION", "isRequired": true},
                    {"name": "MODE", "default": "fast"},
                    {"name": "OPTIONAL"}]}]},
                   "env": env})
        };
        let (field, why) = parse_target(&entry(json!({"API_KEY": "k"}))).unwrap_err();
        assert_eq!(field, "env");
        assert!(why.contains("REGION") && !why.contains("API_KEY"), "{why}");
        let t = parse_target(&entry(json!({"API_KEY": "k", "REGION": "eu"}))).unwrap();
        assert_eq!(
            t.env.keys().collect::<Vec<_>>(),
            ["API_KEY", "MODE", "REGION"],
            "the default fills MODE; OPTIONAL stays unset"
        );
        assert_eq!(t.env["MODE"], "fast");
        for bad in [
            json!({"package": "npm:x@1.0.0", "env": {"BAD=NAME": "v"}}),
            json!({"package": "npm:x@1.0.0", "env": {"K": "v\0"}}),
            json!({"package": "npm:x@1.0.0", "env": {"K": 3}}),
            json!({"package": "npm:x@1.0.0", "env": ["K"]}),
        ] {
            assert_eq!(
                parse_target(&bad).map(|_| ()).unwrap_err().0,
                "env",
                "{bad}"
            );
        }
    }

    #[test]
    fn specs_are_valid_and_tight() {
        let dir = std::path::Path::new("/s/servers/x");
        let spec = trial_spec(
            "trial-x",
            "node",
            &["/s/servers/x/i.js".into()],
            dir,
            &[],
            &BTreeMap::from([("TOKEN".to_string(), "v".to_string())]),
            (256, 30),
        )
        .unwrap();
        assert_eq!(spec.env["TOKEN"], "v");
        assert_eq!(spec.limits.max_open_files, Some(256));
        assert_eq!(spec.limits.max_cpu_seconds, Some(30));
        assert_eq!(spec.max_failures, Some(1));
        assert_eq!(spec.cwd.as_deref(), Some("/s/servers/x"));
        let none = BTreeMap::new();
        assert!(server_spec("x", "node", &[], dir, &["memory".into()], &none).is_some());
        assert!(server_spec("-bad", "node", &[], dir, &[], &none).is_none());
        assert_eq!(tail("abcdef", 3), "...def");
    }
}
