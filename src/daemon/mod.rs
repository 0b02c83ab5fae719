//! The daemon: the top floor, the wiring. It owns the rooms and the loop's sources, dispatches
//! every [`api::Request`], encodes answers for their transport and delivers the rooms'
//! effects; the reactor drives it, the transports feed it. Rooms (see [`crate::room`]) meet
//! only here, and only through requests, effects and snapshots.
//!
//! Layout: `mod.rs` (state, the wiring's own requests, the loop's callbacks), `startup.rs`
//! (run), `reply.rs` (answers to bytes, the effect bus), `rooms.rs` (the room list: how each
//! room's timers, jobs, requests, start, configuration and answers are routed, and the
//! readiness, exits and spare pids of the children of rooms that run some), `persist.rs` (state
//! documents written on the worker, rooms' `Effect::Persist`), and the glue of rooms whose
//! outputs act on what only the wiring holds: `control.rs` (the components room's plans
//! carried out on the listener, the worker and the monitor; shutdown), `settings.rs` (a new
//! configuration applied to the access policy, logging and connection limits), `health.rs`
//! (round facts, cached answer), `checks.rs`, `observe.rs`, `act.rs` (readings handed to the
//! alerts room and what its transitions ask for), `gateway.rs`. Not yet rooms: `access.rs` (intake and access checks),
//! `metrics.rs` (status and metrics), `streams.rs`.
//!
//! Components (each can be stopped, started and restarted in-process; the decisions and
//! states are the components room's, [`crate::components::lifecycle`]):
//! - `control`: the Unix control socket listener;
//! - `worker`: the blocking-work thread;
//! - `monitor`: the periodic health check on `monitoring.health_check_interval_ms`.
//!
//! Health checks report per component; the health room ([`crate::components::health`])
//! decides that a failed one needs a repair, the components room plans it, and the wiring
//! carries it out (restart the control socket or the worker).

mod access;
mod act;
mod checks;
mod control;
mod gateway;
mod health;
mod metrics;
mod observe;
mod persist;
mod reply;
mod rooms;
mod settings;
mod startup;
mod streams;

use control::*;
use reply::*;
use rooms::Wired;
use startup::*;
pub use startup::{default_socket_path, run, StartError, StartOptions};

use crate::api::{self, Answer, ApiError, DaemonRequest, DiagnosticsRequest, ErrorCode};
use crate::api::{EventQuery, HealthRequest, LogQuery, ReplyTo, Request};
use crate::components::lifecycle::Components;
use crate::components::settings::{Settings, OVERRIDES_FILE};
use crate::components::{self, diagnostics::Diagnostics};
use crate::config::{self, Config, ConfigError};
use crate::events::{Channel, Event, EventData, EventLog};
use crate::logs::{LogRecord, Logging};
use crate::mcp::registry::{ServerSpec, REGISTRY_FILE};
use crate::mcp::{self, Mcp, Output, Source};
use crate::monitor;
use crate::net::listener::{self, ControlListener};
use crate::net::{self, http, routes, ConnId, ConnPolicy, Incoming, Peer, Server};
use crate::reactor::worker::{SubmitError, Waiting, Worker};
use crate::reactor::{Cx, Handler, LoopStats, Reactor};
use crate::room::{Effect, Room};
use crate::state::{self, StateDir, StateError};
use crate::sys;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Every document the daemon keeps in the state directory.
const STATE_DOCUMENTS: &[&str] = &[
    REGISTRY_FILE,
    OVERRIDES_FILE,
    crate::variety::room::REQUESTS_FILE,
    crate::acquire::decisions::DECISIONS_FILE,
    crate::mcp::secrets::SECRETS_FILE,
];

/// Events kept in the history ring.
const EVENT_HISTORY: usize = 1000;
/// Component names, in display order.
pub use crate::components::lifecycle::NAMES as COMPONENTS;

/// Timers of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// A timer of the network floor (connection deadlines).
    Net(net::Timer),
    /// Time to tell systemd we are alive.
    Watchdog,
    /// A worker job's deadline.
    Job(u64),
    /// Graceful shutdown took too long.
    ShutdownDeadline,
    /// A timer of a room.
    Room(rooms::RoomTimer),
}

/// Results of blocking jobs. Each carries everything its owner needs (what the job was for
/// moved into it), and a job that does not come back yields the same variant built by its
/// failure ([`Waiting`]): no result is ever paired with a waiting entry at run time.
#[derive(Debug)]
pub enum WorkResult {
    /// A job of a room.
    Room(rooms::RoomJob),
    /// A state document was written; the outcome went through the write's own ticket.
    Saved,
}

/// What a stream follows.
enum Feed {
    Logs(LogQuery),
    Events(EventQuery),
}

struct Follower {
    conn: ConnId,
    feed: Feed,
    cursor: u64,
}

/// The daemon.
pub struct Daemon {
    state: StateDir,
    logging: Logging,
    socket_path: PathBuf,
    pid_file: PathBuf,
    control: Option<ControlListener>,
    tcp: Option<mio::net::TcpListener>,
    listeners: ListenerTokens,
    tcp_addr: Option<std::net::SocketAddr>,
    access: listener::TcpAccess,
    /// Refusal log lines per reason per window (see `access.rs`).
    refusal_log: crate::logs::LogThrottle,
    server: Server,
    incoming: VecDeque<Incoming>,
    worker: Option<Worker<WorkResult>>,
    waker: Arc<mio::Waker>,
    jobs: Waiting<WorkResult>,
    followers: Vec<Follower>,
    rooms: rooms::Rooms,
    /// The documents rooms write (`Effect::Persist`).
    documents: persist::Documents,
    events: EventLog,
    outputs: Vec<Output>,
    /// What rooms other than MCP said (delivered with MCP's outputs).
    effects: Vec<crate::room::Effect>,
    /// The gateway's emptied output vector, kept for its next entry (see [`rooms::Kept`]).
    gateway_out: Vec<crate::gateway::Output>,
    telemetry: crate::telemetry::Telemetry,
    started_at: SystemTime,
    started: Instant,
    next_request_id: u64,
    stopping: Option<Instant>,
    shutdown_deadline_passed: bool,
    watchdog: Option<Duration>,
    notify_socket: Option<std::ffi::OsString>,
    reaped: u64,
}

/// The answer to a change that could not be made durable: nothing was changed.
fn persist_error(e: &StateError) -> ApiError {
    let code = match e {
        StateError::ReadOnly { .. } | StateError::UnsupportedVersion { .. } => {
            ErrorCode::StateReadOnly
        }
        e if e.is_out_of_space() => ErrorCode::InsufficientStorage,
        _ => ErrorCode::PersistFailed,
    };
    ApiError::new(code, format!("not changed: cannot save it: {e}"))
}

impl Daemon {
    /// Handles one API request; the answer goes to `reply` now or later.
    pub fn handle(&mut self, cx: &mut Cx<'_, Timer>, request: Request, reply: ReplyTo) {
        if self.stopping.is_some() {
            let err = ApiError::new(ErrorCode::ShuttingDown, "vsm-daemon is shutting down");
            self.answer(cx, reply, Err(err));
            return;
        }
        self.route(cx, request, reply);
    }

    /// The requests the wiring serves itself (the concerns not yet in a room).
    fn handle_daemon(&mut self, cx: &mut Cx<'_, Timer>, request: DaemonRequest, reply: ReplyTo) {
        let answer = match request {
            DaemonRequest::Status { detailed } => {
                self.answer_status(cx, reply, detailed);
                return;
            }
            DaemonRequest::Logs { query, follow } => {
                if follow {
                    self.follow_logs(cx, reply, query);
                    return;
                }
                Ok(self.logs(&query))
            }
            DaemonRequest::Events { query, follow } => {
                if follow {
                    self.follow(cx, reply, Feed::Events(query));
                    return;
                }
                Ok(self.event_history(&query))
            }
            DaemonRequest::Metrics { view } => Ok(self.metrics(cx, view)),
            DaemonRequest::Prometheus => {
                let text = self.prometheus(cx);
                self.answer_raw(
                    cx,
                    reply,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text.into_bytes().into(),
                );
                return;
            }
            DaemonRequest::Page { asset } => {
                self.answer_page(cx, reply, asset);
                return;
            }
            DaemonRequest::OpenApi => {
                // The document depends only on the binary (the ops table and the version):
                // built and serialized once, on first request. Building its `Value` tree for
                // every request cost about a megabyte of short-lived heap each, which a client
                // pipelining requests it does not read turned into resident memory.
                static DOCUMENT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
                let bytes = DOCUMENT.get_or_init(|| {
                    let doc = crate::openapi::document(env!("CARGO_PKG_VERSION"));
                    serde_json::to_vec_pretty(&doc).unwrap_or_default()
                });
                self.answer_raw(cx, reply, "application/json", bytes.as_slice().into());
                return;
            }
            DaemonRequest::AuthToken => self.auth_token(false),
            DaemonRequest::AuthTokenRotate => self.auth_token(true),
        };
        self.answer(cx, reply, answer);
    }

    /// A worker job's result (or the failure that stands for it) reaches its owner.
    fn on_job_done(&mut self, cx: &mut Cx<'_, Timer>, result: WorkResult) {
        match result {
            WorkResult::Room(job) => self.room_job(cx, job),
            // Writes report through their own ticket (see `persist`).
            WorkResult::Saved => {}
        }
    }

    fn serve_diagnostics(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        DiagnosticsRequest { full }: DiagnosticsRequest,
        reply: ReplyTo,
    ) {
        let facts = components::diagnostics::Facts {
            config_source: self.rooms.settings.source(),
            config_problem: self.rooms.settings.problem(),
            not_enforced_set: self.rooms.settings.config().not_enforced_set(),
            state: &self.state,
            documents: STATE_DOCUMENTS,
            socket: &self.socket_path,
            pid_file: &self.pid_file,
        };
        let checked = components::diagnostics::Checked::new(&facts);
        self.with::<Diagnostics, _>(cx, |room, rcx| room.run(rcx, reply, full, checked));
    }
}

/// Whether an event also reports the end of the input (the peer's close, a hang-up, an error):
/// then a short read does not show that everything was read, and readers go on to the end.
fn ended(event: &mio::event::Event) -> bool {
    event.is_read_closed() || event.is_error()
}

impl Handler for Daemon {
    type Timer = Timer;

    fn on_event(&mut self, cx: &mut Cx<'_, Timer>, event: &mio::event::Event) {
        let token = event.token();
        if token == self.listeners.control {
            self.accept_control(cx);
        } else if token == self.listeners.tcp {
            self.accept_tcp(cx);
        } else if self.rooms.mcp.owns(token) {
            self.rooms.mcp.on_ready(
                &mut cx.narrow(<Mcp as Wired>::timer).cx(),
                token,
                ended(event),
                &mut self.outputs,
            );
        } else if self.rooms_ready(cx, token) {
            // A child's pipe or a check's socket: the room that owns it took it.
        } else if self.server.owns(token) {
            self.server.on_ready(
                &mut cx.narrow(Timer::Net).cx(),
                token,
                ended(event),
                &mut self.incoming,
            );
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_, Timer>, timer: Timer) {
        match timer {
            Timer::Net(net::Timer::Conn(id)) => {
                self.server.on_deadline(&mut cx.narrow(Timer::Net).cx(), id)
            }
            Timer::Room(t) => self.room_timer(cx, t),
            Timer::Watchdog => {
                self.notify("WATCHDOG=1");
                if let Some(period) = self.watchdog {
                    cx.timers.insert(Instant::now() + period, Timer::Watchdog);
                }
            }
            Timer::Job(id) => {
                if let Some(result) = self.jobs.missed(id, "the worker did not answer in time") {
                    log::warn!("worker job {id} missed its deadline");
                    self.on_job_done(cx, result);
                }
            }
            Timer::ShutdownDeadline => {
                if self.stopping.is_some() {
                    log::warn!("shutdown deadline reached; closing remaining connections");
                    self.rooms.mcp.kill_all();
                    self.shutdown_deadline_passed = true;
                }
            }
        }
    }

    fn on_signal(&mut self, cx: &mut Cx<'_, Timer>, signal: i32) {
        match signal {
            libc::SIGTERM | libc::SIGINT => {
                log::info!(
                    "received {}, stopping",
                    if signal == libc::SIGTERM {
                        "SIGTERM"
                    } else {
                        "SIGINT"
                    }
                );
                self.begin_shutdown(cx, true);
            }
            libc::SIGHUP => {
                log::info!("received SIGHUP, reloading configuration");
                if let Err(e) = self.config_reload(cx) {
                    log::error!("reload refused, keeping the running configuration: {e}");
                }
            }
            libc::SIGCHLD => {
                while let Some(reaped) = sys::reap_any() {
                    self.reaped += 1;
                    let who = format!("pid {}", reaped.pid);
                    self.rooms.security.child_exit(who, reaped.status);
                    if !self.rooms.mcp.on_child_exit(
                        &mut cx.narrow(<Mcp as Wired>::timer).cx(),
                        reaped.pid,
                        reaped.status,
                        &mut self.outputs,
                    ) && !self.rooms_child_exit(cx, reaped.pid, reaped.status)
                    {
                        log::debug!("reaped orphan {} (status {})", reaped.pid, reaped.status);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_wake(&mut self, cx: &mut Cx<'_, Timer>) {
        let mut results = Vec::new();
        if let Some(w) = &self.worker {
            while let Some(r) = w.try_result() {
                results.push(r);
            }
        }
        for (id, result) in results {
            // Nobody waits for a late result, nor for a write (its ticket reports it).
            if let Some(deadline) = self.jobs.finished(id) {
                cx.timers.cancel(deadline);
                self.on_job_done(cx, result);
            }
        }
        self.poll_document_writes(cx);
    }

    fn after_dispatch(&mut self, cx: &mut Cx<'_, Timer>) {
        loop {
            while let Some(incoming) = self.incoming.pop_front() {
                self.handle_incoming(cx, incoming);
            }
            self.gateway_hangups(cx);
            self.deliver(cx);
            self.flush_followers(cx);
            if self.incoming.is_empty() && self.outputs.is_empty() && self.effects.is_empty() {
                break;
            }
        }
        let dropped = std::mem::take(&mut self.server.ws_dropped);
        if dropped > 0 {
            self.telemetry.ws_dropped(dropped);
        }
        for _ in 0..std::mem::take(&mut self.server.ws_closed_slow) {
            self.telemetry.ws_closed_slow();
        }
    }

    fn finished(&self) -> bool {
        self.stopping.is_some()
            && (self.shutdown_deadline_passed
                || (!self.server.has_pending_output() && self.rooms.mcp.all_exited()))
    }
}
