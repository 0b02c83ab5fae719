//! MCP servers as supervised child processes speaking JSON-RPC over stdio.
//!
//! [`Mcp`] owns every [`Server`]: it spawns them in their sandbox and carries bytes and
//! timers between the loop and two pure parts: each server's [`session::Session`] (the
//! JSON-RPC protocol: lines and time in, effects out) and [`supervisor::step`] (the
//! lifecycle: every status change, restart, stop and backoff). It never blocks and never
//! answers a client directly: answers and events go out as [`Output`]s that the daemon
//! delivers.
//!
//! Invariants: a server owns its slot (and so its three pipe tokens) for its whole
//! registration; every timer carries the run it belongs to, so a timer of an earlier run
//! is ignored; a pid is signalled only until it is reaped. Everything kept from a child is
//! bounded (lines by `max_line_bytes`, the tool list by [`tools::Listing`], texts and
//! handshake data in [`server`]); breaking a bound ends the run as misbehaviour, which the
//! [`supervisor`] counts as a failed start. The session ends with the child's stdout.

mod asks;
pub mod jsonrpc;
mod lifecycle;
pub mod ops;
mod pipes;
pub mod process;
pub mod reaper;
mod registration;
pub mod secrets;
pub use crate::spec as registry;
pub mod server;
pub mod session;
pub mod supervisor;
pub mod tools;
mod trial;

use crate::api::{Answer, ApiError, ErrorCode};
use crate::api::{McpRequest, ReplyTo};
use crate::config::McpServersConfig;
use crate::events::{Channel, EventData};
use crate::reactor::timer::TimerId;
use crate::reactor::{Cx, TokenRange};
use crate::sys;
use jsonrpc::{Line, LineSplitter};
use process::{Chunk, Launch, Pipe, PipeTokens, Process};
use registry::{ServerSpec, REGISTRY_FILE};
use serde_json::{json, Value};
use server::truncate;
pub use server::{Server, Source, Status};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use supervisor::{Jitter, RestartPolicy, RunEnd};

/// Pipe tokens the MCP floor needs: server slot `n` owns tokens `3n .. 3n + 2` of its range.
pub const TOKENS_NEEDED: usize = 3 * MAX_REGISTERED;
/// Environment variables passed through from the daemon; everything else must be in the spec.
pub const ENV_ALLOW: [&str; 5] = ["PATH", "HOME", "LANG", "TERM", "USER"];
/// Registered servers at most (each costs its spec, history and tool list in memory).
pub const MAX_REGISTERED: usize = 1000;
/// Bytes read from children after which the end of a run hands freed memory back
/// ([`sys::release_free_memory`] walks the free lists: up to ~0.2 ms on a fragmented heap,
/// not worth it after a run that only said hello).
const TRIM_AFTER_BYTES: usize = 1 << 20;
/// Longest stderr line kept.
const STDERR_LINE_MAX: usize = 1024;

/// A timer of one server's run (the MCP floor's own timer key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    slot: usize,
    run: u64,
    kind: TimerKind,
}

/// How long a run whose stdout closed may take to become reapable before it is ended as a
/// server that closed its stdout but lives on (an exiting process closes its stdout a moment
/// before it is a zombie; without this every ordinary crash would be mistaken for it).
const STDOUT_EOF_GRACE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    Backoff,
    InitDeadline,
    StopTerm,
    StopKill,
    /// Stdout closed: the grace for the exit to arrive is over.
    StdoutClosed,
    Relist,
    /// Time to list resources, resource templates or prompts again.
    RelistExtra(tools::Kind),
    /// The `server/discover` probe's deadline.
    Probe,
    Call(u64),
    /// A sandbox trial's deadline (see `trial`; not tied to a run).
    Trial,
}

/// What the daemon must deliver.
#[derive(Debug)]
pub enum Output {
    /// An answer to a client.
    Reply(ReplyTo, Answer),
    /// A tool call's answer with the server's result bytes as they came.
    ReplyRaw(ReplyTo, crate::api::RawCall),
    /// An event for the event log and the channel's subscribers.
    Event(Channel, EventData),
    /// A tool call finished: for the metrics, then as an `mcp_tool_call` event on
    /// `mcp_servers` (made where it is published, so that the names are not copied for it).
    ToolCall {
        /// The server.
        server: String,
        /// The tool.
        tool: String,
        /// `ok`, `tool_error`, ...
        outcome: &'static str,
        /// From the request going out to its end.
        seconds: f64,
    },
    /// Another forwarded request finished: (server, method, outcome) for the metrics.
    Request(String, &'static str, &'static str),
    /// A server was restarted automatically.
    Restart(String),
    /// A server was unregistered: its per-server metric series go.
    Unregistered(String),
    /// Any other common effect, for the wiring to carry out.
    Effect(crate::room::Effect),
}

impl From<crate::room::Effect> for Output {
    fn from(effect: crate::room::Effect) -> Self {
        match effect {
            crate::room::Effect::Reply(to, answer) => Output::Reply(to, answer),
            crate::room::Effect::Event(channel, data) => Output::Event(channel, data),
            other => Output::Effect(other),
        }
    }
}

/// `mcp_servers` in `GET /api/v1/status`: how many are registered and how many serve.
impl crate::room::Report for Mcp {
    type Status<'a> = crate::snapshot::McpCounts<'a>;

    fn status<'a>(&'a self, _facts: &crate::snapshot::Facts<'a>) -> Self::Status<'a> {
        let (active_count, total_registered) = self.counts();
        crate::snapshot::McpCounts {
            active_count,
            total_registered,
            last_discovery: self.last_discovery.as_deref(),
        }
    }
}

/// MCP as a room: its timers are its own keys, it has no worker jobs (children are spawned
/// from the loop), and its outputs are [`Output`]s.
impl crate::room::Room for Mcp {
    type Timer = Timer;
    type Job = std::convert::Infallible;
    type Output = Output;
    const NAME: &'static str = "mcp";

    /// `mcp_servers` in the health view: the servers, their count by status and their
    /// health facts.
    fn view(&self, view: crate::room::View, out: &mut serde_json::Map<String, Value>) {
        if view != crate::room::View::Health {
            return;
        }
        let mut listed = self.list("all");
        let servers = listed["servers"].take();
        let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
        for s in servers.as_array().into_iter().flatten() {
            *by_status
                .entry(s["status"].as_str().unwrap_or("unknown").to_string())
                .or_default() += 1;
        }
        let health: Vec<Value> = self
            .health_facts()
            .into_iter()
            .map(|s| {
                json!({"id": s.id, "status": s.status, "missed_pings": s.missed_pings,
                       "ping": s.ping, "circuit_breaker_open": s.breaker_open})
            })
            .collect();
        out.insert(
            "mcp_servers".into(),
            json!({"by_status": by_status, "servers": servers, "health": health}),
        );
    }

    fn on_timer(&mut self, cx: &mut crate::room::RoomCx<'_, Self>, timer: Timer) {
        let (mut lcx, out) = cx.split();
        Mcp::on_timer(self, &mut lcx, timer, out);
    }

    fn on_job(&mut self, _cx: &mut crate::room::RoomCx<'_, Self>, done: Self::Job) {
        match done {}
    }

    /// A discovery run ended: its time is the seed's `mcp_servers.last_discovery`. The
    /// room's own status events settle sandbox trials (see `trial`).
    fn on_event(
        &mut self,
        cx: &mut crate::room::RoomCx<'_, Self>,
        _seq: u64,
        _channel: crate::events::Channel,
        data: &crate::events::EventData,
    ) {
        if let crate::events::EventData::DiscoveryCompleted { .. } = data {
            self.last_discovery = Some(crate::state::rfc3339_utc(std::time::SystemTime::now()));
        }
        if self.trials.is_empty() {
            return;
        }
        let (mut lcx, out) = cx.split();
        self.trial_event(&mut lcx, data, out);
    }

    /// `vsm_mcp_server_up{server,status}`, `vsm_mcp_servers_registered`,
    /// `vsm_mcp_servers_active`.
    fn metrics(&self, e: &mut crate::telemetry::Exposition) {
        let none: &[(&str, &str)] = &[];
        let servers = self.list("all");
        let rows: Vec<(String, String, f64)> = servers["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let status = s["status"].as_str().unwrap_or("unknown").to_string();
                let up = if status == "active" || status == "degraded" {
                    1.0
                } else {
                    0.0
                };
                (s["id"].as_str().unwrap_or("").to_string(), status, up)
            })
            .collect();
        let labels: Vec<[(&str, &str); 2]> = rows
            .iter()
            .map(|(id, st, _)| [("server", id.as_str()), ("status", st.as_str())])
            .collect();
        let samples: Vec<(&[(&str, &str)], f64)> = labels
            .iter()
            .zip(&rows)
            .map(|(l, (_, _, up))| (&l[..], *up))
            .collect();
        e.gauge(
            "vsm_mcp_server_up",
            "1 when an MCP server serves tool calls (active or degraded), by server and status.",
            &samples,
        );
        let (active, total) = self.counts();
        e.gauge(
            "vsm_mcp_servers_registered",
            "MCP servers registered.",
            &[(none, total as f64)],
        );
        e.gauge(
            "vsm_mcp_servers_active",
            "MCP servers serving tool calls.",
            &[(none, active as f64)],
        );
    }

    /// The room asks for its `servers.json` writes and relays servers' requests to `/mcp`.
    fn on_answer(&mut self, cx: &mut crate::room::RoomCx<'_, Self>, tag: u64, answer: Answer) {
        if tag >= asks::Relays::FIRST_TAG {
            return self.relay_answered(cx, tag, answer);
        }
        self.registry_written(cx, tag, answer);
    }

    fn apply_config(
        &mut self,
        cx: &mut crate::room::RoomCx<'_, Self>,
        config: &crate::config::Config,
    ) {
        self.settings.config = config.mcp_servers.clone();
        self.settings.sandbox_enabled = config.security.sandbox_enabled;
        self.settings.policy = crate::variety::policy::Policy::new(config);
        self.relays.enabled = config.gateway.client_requests;
        for server in self.servers.values_mut() {
            server.session.client_requests = config.gateway.client_requests;
            // The capability policy may have changed: verdicts are made again.
            server.refusals.clear();
        }
        if self.settings.servers != config.servers {
            let (mut lcx, out) = cx.split();
            self.sync_config_servers(&mut lcx, &config.servers, out);
            self.settings.servers = config.servers.clone();
        }
    }
}

/// The MCP room's requests. Registering and unregistering change `servers.json` and are
/// answered once it is written (see `registration`); the rest are answered at once.
impl crate::room::Serve for Mcp {
    type Request = McpRequest;

    fn handle(
        &mut self,
        cx: &mut crate::room::RoomCx<'_, Self>,
        request: McpRequest,
        reply: ReplyTo,
    ) {
        // What the request causes (events, other clients' answers) goes out after its answer.
        let mut caused = Vec::new();
        let answer = match request {
            McpRequest::List { status } => Ok(self.list(status)),
            McpRequest::Show { id } => self.show(&id),
            McpRequest::Tools { id } => self.tools(&id),
            McpRequest::Resources { id } => self.extras(
                &id,
                &[tools::Kind::Resources, tools::Kind::ResourceTemplates],
            ),
            McpRequest::Prompts { id } => self.extras(&id, &[tools::Kind::Prompts]),
            McpRequest::ReadResource {
                id,
                uri,
                progress_token,
                timeout_ms,
                input,
            } => {
                let (mut lcx, _) = cx.split();
                let params = with_token(json!({ "uri": uri }), progress_token);
                let method = "resources/read";
                let again = (timeout_ms, input.map(|i| *i));
                match self.forward_again(&mut lcx, &id, method, "resources", params, again, reply) {
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
            McpRequest::GetPrompt {
                id,
                name,
                arguments,
                progress_token,
                timeout_ms,
                input,
            } => {
                let (mut lcx, _) = cx.split();
                let params = with_token(
                    json!({ "name": name, "arguments": arguments }),
                    progress_token,
                );
                let again = (timeout_ms, input.map(|i| *i));
                match self.forward_again(
                    &mut lcx,
                    &id,
                    "prompts/get",
                    "prompts",
                    params,
                    again,
                    reply,
                ) {
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
            McpRequest::SetLogLevel { id, level } => {
                // A 2026-07-28 server has no logging/setLevel: its requests for clients carry
                // the level in their `_meta` instead.
                let modern = self
                    .servers
                    .get_mut(&id)
                    .filter(|s| s.status.serves() && s.session.era == Some(session::Era::Modern));
                if let Some(server) = modern {
                    server.session.log_level = Some(level);
                    cx.reply(reply, Ok(json!({"server": id, "log_level": level})));
                    return;
                }
                let (mut lcx, _) = cx.split();
                let params = json!({ "level": level });
                match self.forward(&mut lcx, &id, "logging/setLevel", "logging", params, reply) {
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
            McpRequest::Subscribe { id, uri, subscribe } => {
                let (mut lcx, _) = cx.split();
                if let Some(answer) = self.listen_to(&mut lcx, &id, &uri, subscribe) {
                    cx.reply(reply, answer);
                    return;
                }
                let method = if subscribe {
                    "resources/subscribe"
                } else {
                    "resources/unsubscribe"
                };
                let params = json!({ "uri": uri });
                let needs = "resources.subscribe";
                match self.forward(&mut lcx, &id, method, needs, params, reply) {
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
            McpRequest::Complete { id, params } => {
                // A server that serves but declared no completions has none to give: the
                // empty completion, as the specification's clients expect, not an error.
                let serving_without = self
                    .servers
                    .get(&id)
                    .is_some_and(|s| s.status.serves() && !s.session.declares("completions"));
                if serving_without {
                    Ok(json!({"server": id, "method": "completion/complete",
                              "result": {"completion": {"values": [], "hasMore": false}}}))
                } else {
                    let (mut lcx, _) = cx.split();
                    let method = "completion/complete";
                    match self.forward(&mut lcx, &id, method, "completions", params, reply) {
                        Ok(()) => return,
                        Err(e) => Err(e),
                    }
                }
            }
            McpRequest::Start { id } => self.start(&mut cx.split().0, &id, &mut caused),
            McpRequest::Stop { id } => self.stop(&mut cx.split().0, &id, &mut caused),
            McpRequest::Restart { id } => self.restart(&mut cx.split().0, &id, &mut caused),
            McpRequest::Reset { id } => self.reset(&mut cx.split().0, &id, &mut caused),
            McpRequest::Call {
                id,
                name,
                arguments,
                timeout_ms,
                progress_token,
                input,
            } => {
                let refused = self.refused_tool(&id, &name);
                if refused.is_empty() {
                    let (mut lcx, _) = cx.split();
                    let call = self.call(
                        &mut lcx,
                        &id,
                        &name,
                        arguments,
                        input,
                        timeout_ms,
                        progress_token,
                        reply,
                    );
                    match call {
                        Ok(()) => return,
                        Err(e) => Err(e),
                    }
                } else {
                    let message = format!(
                        "tool '{name}' of MCP server '{id}' falls under {} in security.blocked_capabilities; add it to the server's allow_capabilities to call it",
                        crate::variety::policy::quoted(
                            &refused.iter().map(String::as_str).collect::<Vec<_>>()
                        )
                    );
                    log::warn!("{message}");
                    caused.push(Output::Event(
                        Channel::Security,
                        EventData::ToolCallBlocked {
                            server_id: id,
                            tool: truncate(name, server::TEXT_MAX),
                            capabilities: refused,
                        },
                    ));
                    Err(ApiError::field(
                        ErrorCode::CapabilityBlocked,
                        "name",
                        message,
                    ))
                }
            }
            McpRequest::Cancel {
                id,
                progress_token,
                reason,
            } => {
                let (mut lcx, _) = cx.split();
                self.cancel(&mut lcx, &id, &progress_token, &reason, &mut caused)
                    .map(|()| json!({"cancelled": true}))
            }
            McpRequest::Trial { spec, timeout_ms } => {
                let (mut lcx, out) = cx.split();
                match self.begin_trial(&mut lcx, *spec, timeout_ms, reply, out) {
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
            request @ (McpRequest::Register { .. } | McpRequest::Unregister { .. }) => {
                match self.queue_registry_change(cx, request, reply) {
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
        };
        cx.reply(reply, answer);
        for output in caused {
            cx.emit(output);
        }
    }
}

/// `params` with `_meta.progressToken` set when a token is given (a forwarded request named
/// by it can be cancelled as a call).
fn with_token(mut params: Value, token: Option<String>) -> Value {
    if let (Some(t), Some(map)) = (token, params.as_object_mut()) {
        map.insert("_meta".into(), json!({ "progressToken": t }));
    }
    params
}

/// Defaults and limits from `[mcp_servers]` plus where the daemon keeps its state.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config section.
    pub config: McpServersConfig,
    /// Whether sandboxing (Landlock) is on (`security.sandbox_enabled`).
    pub sandbox_enabled: bool,
    /// The state directory (writable for servers under Landlock).
    pub state_dir: PathBuf,
    /// The capability policy (`security.*_capabilities` and the keyword rules): a
    /// registration declaring a blocked capability is refused, a tool mapping to one cannot
    /// be called, unless the spec's `allow_capabilities` names it.
    pub policy: crate::variety::policy::Policy,
    /// The `[[servers]]` of the configuration last applied (a change is synced, see
    /// [`Mcp::sync_config_servers`]).
    pub servers: Vec<ServerSpec>,
}

/// All managed servers.
pub struct Mcp {
    servers: BTreeMap<String, Server>,
    /// Server ids by slot (shared, so that a pipe's or timer's event finds its server's id
    /// without copying it).
    slots: Vec<Option<std::rc::Rc<str>>>,
    pids: HashMap<i32, String>,
    /// Children of the daemon that other rooms own (exec checks and actions): the orphan
    /// sweep leaves them alone. Kept current by the wiring through [`Mcp::spare`].
    spare_pids: Vec<i32>,
    /// Settings, updated on config changes.
    pub settings: Settings,
    jitter: Jitter,
    reaper: Option<reaper::Reaper>,
    /// Bytes read from children since freed memory was last handed back to the system.
    read_since_trim: usize,
    /// The read buffer every pipe drain uses (empty until the first read; see `pipes`).
    read_buf: Box<[u8]>,
    /// The effects of a session's answer line or call, kept between them (emptied, and only
    /// while small: see [`pipes::KEPT_EFFECTS`]) so that a tool call's do not allocate a list.
    effects: Vec<session::Effect<ReplyTo, TimerId>>,
    /// The pipe tokens the reactor gave this floor.
    tokens: TokenRange,
    /// Registry changes waiting for their `servers.json` write (see `registration`).
    registrations: registration::Registrations,
    /// Sandbox trials waiting to settle (see `trial`).
    trials: trial::Trials,
    /// When the last discovery run ended (for the status' `last_discovery`).
    last_discovery: Option<String>,
    /// Servers' requests relayed to `/mcp` clients, waiting for the gateway's answer.
    relays: asks::Relays,
}

/// The pipe tokens of server slot `slot` (a slot is below [`MAX_REGISTERED`], so its three
/// tokens are in a range of [`TOKENS_NEEDED`]; past a short range they fall outside it, and
/// their events are ignored rather than misrouted).
fn tokens(range: TokenRange, slot: usize) -> PipeTokens {
    let at = |i: usize| range.token(3 * slot + i).unwrap_or(mio::Token(usize::MAX));
    PipeTokens {
        stdin: at(0),
        stdout: at(1),
        stderr: at(2),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::field(
        ErrorCode::ServerNotFound,
        "id",
        format!("no MCP server '{id}'"),
    )
}

fn describe_exit(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("ended (wait status {status})")
    }
}

impl Mcp {
    /// No servers yet; pipes are registered with tokens from `tokens` (see [`TOKENS_NEEDED`]).
    pub fn new(settings: Settings, tokens: TokenRange) -> Self {
        Mcp {
            servers: BTreeMap::new(),
            slots: Vec::new(),
            pids: HashMap::new(),
            spare_pids: Vec::new(),
            settings,
            jitter: Jitter::new(),
            reaper: None,
            read_since_trim: 0,
            read_buf: Box::default(),
            effects: Vec::new(),
            tokens,
            registrations: registration::Registrations::default(),
            trials: trial::Trials::new(),
            last_discovery: None,
            relays: asks::Relays::default(),
        }
    }

    /// Starts the companion that kills server process groups if the daemon dies.
    pub fn start_reaper(&mut self) {
        match reaper::Reaper::spawn() {
            Ok(r) => self.reaper = Some(r),
            Err(e) => log::warn!(
                "no reaper process ({e}): grandchildren of MCP servers may outlive a killed daemon"
            ),
        }
    }

    /// Sets the children other rooms own (exec checks and actions, each its own process
    /// group): the orphan sweep spares them, and the reaper learns their groups, so a daemon
    /// that is killed takes their grandchildren along as it does the servers'.
    pub fn spare(&mut self, pids: Vec<i32>) {
        if let Some(r) = self.reaper.as_mut() {
            for gone in self.spare_pids.iter().filter(|p| !pids.contains(p)) {
                r.track(*gone, false);
            }
            for new in pids.iter().filter(|p| !self.spare_pids.contains(p)) {
                r.track(*new, true);
            }
        }
        self.spare_pids = pids;
    }

    /// Whether a token is one of ours.
    pub fn owns(&self, token: mio::Token) -> bool {
        self.tokens.owns(token)
    }

    fn policy(&self, spec: &ServerSpec) -> RestartPolicy {
        let c = &self.settings.config;
        let ms = Duration::from_millis;
        RestartPolicy {
            initial: ms(spec.backoff_initial_ms.unwrap_or(c.backoff_initial_ms)),
            max: ms(spec.backoff_max_ms.unwrap_or(c.backoff_max_ms)),
            jitter: 0.2,
            reset_after: ms(c.backoff_reset_after_ms),
            max_failures: spec.max_failures.unwrap_or(c.max_failures),
            window: ms(c.failure_window_ms),
            min_uptime: ms(c.min_uptime_ms),
        }
    }

    /// Specs registered over the API (what `servers.json` holds).
    pub fn api_specs(&self) -> Vec<ServerSpec> {
        self.servers
            .values()
            .filter(|s| s.source == Source::Api && !s.life.remove_when_stopped)
            .map(|s| s.spec.clone())
            .collect()
    }

    /// Counts for `status`: (active, registered).
    pub fn counts(&self) -> (usize, usize) {
        let active = self.servers.values().filter(|s| s.status.serves()).count();
        (active, self.servers.len())
    }

    /// Servers whose process runs or will run again soon.
    fn running(&self) -> usize {
        self.servers
            .values()
            .filter(|s| s.status.has_process() || s.status == Status::Backoff)
            .count()
    }

    /// Whether no server process is left.
    pub fn all_exited(&self) -> bool {
        self.servers.values().all(|s| s.process.is_none())
    }

    // ----- registration -----

    /// Whether `spec` can be registered now (valid spec, room left, id free); changes nothing,
    /// so a caller can make the registration durable before [`Mcp::register`] applies it.
    ///
    /// # Errors
    /// Invalid spec, too many servers, duplicate id.
    pub fn check_register(&self, spec: &ServerSpec) -> Result<(), ApiError> {
        spec.validate()
            .map_err(|(field, m)| ApiError::field(ErrorCode::InvalidParameter, field, m))?;
        if self.servers.len() >= MAX_REGISTERED {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{MAX_REGISTERED} MCP servers are registered already: unregister one first"
                ),
            ));
        }
        if self.servers.contains_key(&spec.id) {
            return Err(ApiError::field(
                ErrorCode::AlreadyExists,
                "id",
                format!("an MCP server '{}' is already registered", spec.id),
            ));
        }
        let declared = spec.capabilities.iter().map(String::as_str);
        let refused = self
            .settings
            .policy
            .refused(declared, &spec.allow_capabilities);
        if !refused.is_empty() {
            return Err(ApiError::field(
                ErrorCode::CapabilityNotAllowed,
                "capabilities",
                crate::variety::policy::declared_refusal(&spec.id, &refused),
            )
            .with_data(json!({"blocked": refused})));
        }
        Ok(())
    }

    /// Registers a server and starts it when it autostarts.
    ///
    /// # Errors
    /// As [`Mcp::check_register`].
    pub fn register(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        spec: ServerSpec,
        source: Source,
        start: bool,
        out: &mut Vec<Output>,
    ) -> Result<Value, ApiError> {
        self.check_register(&spec)?;
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let id = spec.id.clone();
        let autostart = start && spec.autostart;
        self.slots[slot] = Some(id.as_str().into());
        self.servers
            .insert(id.clone(), Server::new(spec, source, slot));
        log::info!("MCP server {id} registered");
        out.push(Output::Event(
            Channel::McpServers,
            EventData::McpServerRegistered {
                server_id: id.clone(),
                source: source.as_str(),
            },
        ));
        if autostart {
            if let Err(e) = self.start(cx, &id, out) {
                log::warn!("MCP server {id} not started: {e}");
                if let Some(s) = self.servers.get_mut(&id) {
                    s.note_error(e.message.clone());
                }
            }
        }
        self.show(&id)
    }

    /// Whether server `id` can be unregistered now; changes nothing (see [`Mcp::check_register`]).
    ///
    /// # Errors
    /// Unknown id, or a server declared in the config file.
    pub fn check_unregister(&self, id: &str) -> Result<(), ApiError> {
        let server = self.servers.get(id).ok_or_else(|| not_found(id))?;
        if server.source == Source::Config {
            return Err(ApiError::field(
                ErrorCode::Conflict,
                "id",
                format!(
                    "MCP server '{id}' is declared in the config file; remove it there and reload"
                ),
            ));
        }
        Ok(())
    }

    /// Unregisters a server (stopping it first when it runs).
    ///
    /// # Errors
    /// As [`Mcp::check_unregister`].
    pub fn unregister(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        out: &mut Vec<Output>,
    ) -> Result<Value, ApiError> {
        self.check_unregister(id)?;
        self.supervise(cx, id, supervisor::Event::Unregister, "unregistered", out);
        Ok(json!({"unregistered": id}))
    }

    fn remove(&mut self, cx: &mut Cx<'_, Timer>, id: &str, out: &mut Vec<Output>) {
        if let Some(server) = self.servers.remove(id) {
            if let Some(t) = server.timer {
                cx.timers.cancel(t);
            }
            self.slots[server.slot] = None;
            drop(server);
            // Its tool list, buffers and history are freed: hand the pages back to the system
            // (unregistering is rare; the walk is not worth skipping here).
            self.read_since_trim = 0;
            sys::release_free_memory();
            log::info!("MCP server {id} unregistered");
            out.push(Output::Event(
                Channel::McpServers,
                EventData::McpServerUnregistered {
                    server_id: id.to_string(),
                },
            ));
            out.push(Output::Unregistered(id.to_string()));
        }
    }

    /// Brings config-declared servers in line with the config file: new ones registered,
    /// removed ones stopped and dropped, changed ones updated and restarted.
    pub fn sync_config_servers(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        specs: &[ServerSpec],
        out: &mut Vec<Output>,
    ) {
        let wanted: BTreeMap<&str, &ServerSpec> =
            specs.iter().map(|s| (s.id.as_str(), s)).collect();
        let gone: Vec<String> = self
            .servers
            .values()
            .filter(|s| s.source == Source::Config && !wanted.contains_key(s.spec.id.as_str()))
            .map(|s| s.spec.id.clone())
            .collect();
        for id in gone {
            if let Some(s) = self.servers.get_mut(&id) {
                s.source = Source::Api;
            }
            let _ = self.unregister(cx, &id, out);
        }
        for spec in specs {
            match self.servers.get_mut(&spec.id) {
                None => {
                    if let Err(e) = self.register(cx, spec.clone(), Source::Config, true, out) {
                        log::error!("server {} from the config file: {e}", spec.id);
                    }
                }
                Some(s) if s.source == Source::Api => {
                    log::warn!("server {} is declared in the config file and registered over the API; the API registration wins", spec.id);
                }
                Some(s) if s.spec != *spec => {
                    s.spec = spec.clone();
                    log::info!(
                        "MCP server {} changed in the config file; restarting it",
                        spec.id
                    );
                    let _ = self.restart(cx, &spec.id, out);
                }
                Some(_) => {}
            }
        }
    }

    // ----- queries -----

    /// `mcp list`.
    pub fn list(&self, filter: &str) -> Value {
        let servers: Vec<Value> = self
            .servers
            .values()
            .filter(|s| match filter {
                "active" => s.status.serves(),
                "inactive" => !s.status.serves(),
                _ => true,
            })
            .map(Server::summary)
            .collect();
        json!({"servers": servers})
    }

    /// The server catalogue the rooms that follow it get (`[follows servers]` in the room
    /// list): every server, in id order, borrowed.
    pub fn catalogue(&self) -> Vec<crate::snapshot::ServerView<'_>> {
        self.servers
            .iter()
            // A sandbox trial is no provider: not offered on /mcp, not counted by variety.
            .filter(|(_, s)| s.source != Source::Trial)
            .map(|(id, s)| crate::snapshot::ServerView {
                id,
                status: s.status.as_str(),
                serves: s.status.serves(),
                breaker_open: s.life.breaker.is_open(),
                capabilities: &s.spec.capabilities,
                allow_capabilities: &s.spec.allow_capabilities,
                tools: &s.session.tools,
                tools_version: (s.run, s.session.listings),
                resources: &s.session.resources,
                resource_templates: &s.session.resource_templates,
                prompts: &s.session.prompts,
            })
            .collect()
    }

    /// The blocked capabilities (not allowed by its spec) that tool `name` of server `id`
    /// maps to; empty when the server or the tool is unknown (the call fails on that). The
    /// verdict is kept for the next call of the tool ([`server::Refusals`]).
    pub fn refused_tool(&mut self, id: &str, name: &str) -> Vec<String> {
        let Some(s) = self.servers.get_mut(id) else {
            return Vec::new();
        };
        let (run, listing) = (s.run, s.session.listings);
        if let Some(known) = s
            .refusals
            .get(run, listing, &s.spec.allow_capabilities, name)
        {
            return known.to_vec();
        }
        let Some(tool) = s
            .session
            .tools
            .iter()
            .find(|t| t["name"].as_str() == Some(name))
        else {
            return Vec::new();
        };
        let refused = self.settings.policy.tool_refused(
            crate::variety::policy::tool_text(tool),
            &s.spec.allow_capabilities,
        );
        s.refusals.insert(name, refused.clone());
        refused
    }

    /// What the alerts room's health cycle reads of each server.
    pub fn health_facts(&self) -> Vec<crate::monitor::performance::ServerHealth> {
        self.servers
            .values()
            .map(|s| crate::monitor::performance::ServerHealth {
                id: s.spec.id.clone(),
                status: s.status.as_str(),
                missed_pings: s.session.missed_pings,
                ping_last_ms: s.session.ping.last_ms(),
                ping: s.session.ping.to_json(),
                breaker_open: s.life.breaker.is_open(),
            })
            .collect()
    }

    /// `mcp show`.
    ///
    /// # Errors
    /// Unknown id.
    pub fn show(&self, id: &str) -> Result<Value, ApiError> {
        self.servers
            .get(id)
            .map(Server::details)
            .ok_or_else(|| not_found(id))
    }

    /// `mcp tools`.
    ///
    /// # Errors
    /// Unknown id.
    pub fn tools(&self, id: &str) -> Result<Value, ApiError> {
        let s = self.servers.get(id).ok_or_else(|| not_found(id))?;
        Ok(json!({"server": id, "status": s.status.as_str(), "tools": s.session.tools}))
    }

    /// `GET .../resources` and `.../prompts`: the lists of `kinds` as last listed.
    ///
    /// # Errors
    /// Unknown id.
    pub fn extras(&self, id: &str, kinds: &[tools::Kind]) -> Result<Value, ApiError> {
        let s = self.servers.get(id).ok_or_else(|| not_found(id))?;
        let mut answer = json!({"server": id, "status": s.status.as_str()});
        for &kind in kinds {
            answer[kind.name()] = Value::from(s.session.list(kind).to_vec());
        }
        Ok(answer)
    }

    // ----- lifecycle -----

    fn transition(&mut self, id: &str, status: Status, reason: &str, out: &mut Vec<Output>) {
        let Some(s) = self.servers.get_mut(id) else {
            return;
        };
        // Reasons may quote the server: the event and the log get the bounded text.
        let reason = truncate(reason.to_string(), server::TEXT_MAX);
        let reason = reason.as_str();
        let Ok(old) = s.set_status(status, reason) else {
            return;
        };
        if old == status {
            return;
        }
        log::info!(
            "MCP server {id}: {} -> {} ({reason})",
            old.as_str(),
            status.as_str()
        );
        out.push(Output::Event(
            Channel::McpServers,
            EventData::McpServerStatusChange {
                server_id: id.to_string(),
                old_status: old.as_str(),
                new_status: status.as_str(),
                reason: reason.to_string(),
                capabilities: s.spec.capabilities.clone(),
            },
        ));
    }
}

#[cfg(test)]
mod room_tests {
    use super::*;
    use crate::room::testing::{enter, Inline};
    use crate::room::{Room, Serve};

    fn answers(out: &mut Vec<Output>) -> Vec<Answer> {
        std::mem::take(out)
            .into_iter()
            .filter_map(|o| match o {
                Output::Reply(ReplyTo::Room { room: "test", .. }, answer) => Some(answer),
                _ => None,
            })
            .collect()
    }

    fn reply(tag: u64) -> ReplyTo {
        ReplyTo::Room { room: "test", tag }
    }

    /// Sends `request` to the room and returns the answers it gave at once.
    fn ask(
        room: &mut Mcp,
        wiring: &mut Inline<Timer, std::convert::Infallible>,
        out: &mut Vec<Output>,
        request: McpRequest,
        tag: u64,
    ) -> Vec<Answer> {
        enter(room, wiring, out, |room, cx| {
            room.handle(cx, request, reply(tag))
        });
        answers(out)
    }

    #[test]
    fn the_mcp_room_answers_its_requests_through_handle() {
        let settings = Settings {
            config: crate::config::Config::default().mcp_servers,
            sandbox_enabled: false,
            state_dir: std::env::temp_dir(),
            policy: crate::variety::policy::Policy::default(),
            servers: Vec::new(),
        };
        let mut room = Mcp::new(settings, crate::reactor::TokenAllocator::default().take(30));
        let mut wiring = Inline::new();
        let mut out = Vec::new();
        let spec: ServerSpec =
            serde_json::from_value(json!({"id": "t", "command": "python3", "autostart": false}))
                .expect("spec");
        enter(&mut room, &mut wiring, &mut out, |room, cx| {
            let (mut lcx, out) = cx.split();
            room.register(&mut lcx, spec, Source::Api, false, out)
        })
        .expect("registered");
        out.clear();

        let listed = ask(
            &mut room,
            &mut wiring,
            &mut out,
            McpRequest::List { status: "all" },
            1,
        );
        assert_eq!(listed.len(), 1, "one answer per request");
        let servers = listed[0].as_ref().expect("list")["servers"].clone();
        assert_eq!(servers.as_array().map(Vec::len), Some(1), "{servers}");
        assert_eq!(servers[0]["id"], "t");

        let active = ask(
            &mut room,
            &mut wiring,
            &mut out,
            McpRequest::List { status: "active" },
            2,
        );
        assert_eq!(active[0].as_ref().expect("list")["servers"], json!([]));

        let shown = ask(
            &mut room,
            &mut wiring,
            &mut out,
            McpRequest::Show { id: "t".into() },
            3,
        );
        assert!(shown[0].is_ok(), "{shown:?}");

        for request in [
            McpRequest::Show { id: "nope".into() },
            McpRequest::Tools { id: "nope".into() },
            McpRequest::Stop { id: "nope".into() },
        ] {
            let answer = ask(&mut room, &mut wiring, &mut out, request.clone(), 4);
            assert_eq!(
                answer[0].as_ref().err().map(|e| e.code),
                Some(ErrorCode::ServerNotFound),
                "{request:?}"
            );
        }
        // Registration waits for servers.json: the room asks for the write, answers nobody
        // and changes nothing until the write is acknowledged.
        let persisted = |out: &mut Vec<Output>| -> Vec<crate::room::Persist> {
            std::mem::take(out)
                .into_iter()
                .filter_map(|o| match o {
                    Output::Effect(crate::room::Effect::Persist(p)) => Some(p),
                    _ => None,
                })
                .collect()
        };
        let register = |id: &str| McpRequest::Register {
            spec: Box::new(
                serde_json::from_value(json!({"id": id, "command": "python3", "autostart": false}))
                    .expect("spec"),
            ),
        };
        enter(&mut room, &mut wiring, &mut out, |room, cx| {
            room.handle(cx, register("u"), reply(5));
            room.handle(cx, register("v"), reply(6)); // waits behind the write in flight
            room.handle(cx, register("u"), reply(7)); // a change to "u" is pending
        });
        let refused: Vec<Answer> = out
            .iter()
            .filter_map(|o| match o {
                Output::Reply(_, a) => Some(a.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            refused.len(),
            1,
            "only the conflicting change is answered at once"
        );
        assert_eq!(
            refused[0].as_ref().err().map(|e| e.code),
            Some(ErrorCode::Conflict)
        );
        let writes = persisted(&mut out);
        assert_eq!(writes.len(), 1, "one write in flight");
        assert_eq!(writes[0].file, REGISTRY_FILE);
        let ids: Vec<&str> = writes[0]
            .document
            .as_array()
            .expect("specs")
            .iter()
            .filter_map(|s| s["id"].as_str())
            .collect();
        assert_eq!(ids, ["t", "u"], "memory plus the change in flight");
        let Some((ReplyTo::Room { room: "mcp", tag }, _)) = writes[0].ack else {
            panic!("the write is acknowledged to the room");
        };
        assert_eq!(
            ask(
                &mut room,
                &mut wiring,
                &mut out,
                McpRequest::List { status: "all" },
                8
            )[0]
            .as_ref()
            .expect("list")["servers"]
                .as_array()
                .map(Vec::len),
            Some(1),
            "nothing applied before the write"
        );

        // The write fails: its caller gets the failure, nothing changes, and the waiting
        // change goes out in the next write.
        let full = ApiError::new(ErrorCode::InsufficientStorage, "disk full");
        enter(&mut room, &mut wiring, &mut out, |room, cx| {
            room.on_answer(cx, tag, Err(full))
        });
        let failed: Vec<Answer> = out
            .iter()
            .filter_map(|o| match o {
                Output::Reply(ReplyTo::Room { tag: 5, .. }, a) => Some(a.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(
            failed[0].as_ref().err().map(|e| e.code),
            Some(ErrorCode::InsufficientStorage)
        );
        let writes = persisted(&mut out);
        assert_eq!(writes.len(), 1);
        let ids: Vec<&str> = writes[0]
            .document
            .as_array()
            .expect("specs")
            .iter()
            .filter_map(|s| s["id"].as_str())
            .collect();
        assert_eq!(ids, ["t", "v"]);
        let Some((ReplyTo::Room { tag, .. }, _)) = writes[0].ack else {
            panic!("acknowledged to the room");
        };

        // This one lands: "v" is registered and its caller answered, ahead of its events.
        enter(&mut room, &mut wiring, &mut out, |room, cx| {
            room.on_answer(cx, tag, Ok(Value::Null))
        });
        assert!(
            matches!(
                out.first(),
                Some(Output::Reply(ReplyTo::Room { tag: 6, .. }, Ok(_)))
            ),
            "{out:?}"
        );
        assert!(out.iter().any(|o| matches!(o, Output::Event(_, crate::events::EventData::McpServerRegistered { server_id, .. }) if server_id == "v")));
        out.clear();
        let listed = ask(
            &mut room,
            &mut wiring,
            &mut out,
            McpRequest::List { status: "all" },
            9,
        );
        assert_eq!(
            listed[0].as_ref().expect("list")["servers"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        enter(&mut room, &mut wiring, &mut out, |room, cx| {
            room.on_answer(cx, tag, Ok(Value::Null))
        });
        assert!(out.is_empty(), "an acknowledgement counts once");
    }
}
