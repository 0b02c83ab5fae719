//! The one command layer: every way into the daemon (REST over TCP or the control socket,
//! WebSocket commands, the CLI) becomes a [`Request`] and is answered with a `Result` of JSON
//! data or an [`ApiError`]. Transports only translate; the daemon implements each request once.
//!
//! Each [`ErrorCode`] maps to exactly one HTTP status and one CLI exit code.

use serde_json::{json, Value};
use std::fmt;

/// What a client asks of the daemon: one variant per room that serves requests, plus the
/// wiring's own concerns. The request types live here, on the ground floor, so that the
/// transports build them and the rooms serve them without either importing the other.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// The wiring's own concerns: status, logs, events, metrics, documents and the token.
    Daemon(DaemonRequest),
    /// The health room.
    Health(HealthRequest),
    /// The diagnostics room.
    Diagnostics(DiagnosticsRequest),
    /// The settings room (configuration).
    Config(ConfigRequest),
    /// The components room (the daemon's own components and its shutdown).
    Control(ControlRequest),
    /// The MCP room.
    Mcp(McpRequest),
    /// The declared checks (and the actions they may run).
    Checks(ChecksRequest),
    /// The alerts room.
    Alerts(AlertsRequest),
    /// The acquisition room.
    Acquire(AcquireRequest),
    /// The discovery room.
    Discovery(DiscoveryRequest),
    /// The variety room.
    Variety(VarietyRequest),
    /// The VSM room (the five systems).
    Vsm(VsmRequest),
    /// The reflection room ("consciousness").
    Reflect(ReflectRequest),
    /// The `/mcp` gateway (internal: the MCP room's relayed server requests; no ops row).
    Gateway(GatewayRequest),
}

/// What the `/mcp` gateway serves (internal, asked by the MCP room only).
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayRequest {
    /// A server's request to its client (`sampling/createMessage`, `elicitation/create`),
    /// made while calls were in flight on it: relayed to the `/mcp` client whose call it is,
    /// answered with the client's result (`Ok`) or a JSON-RPC error (`Err`, its `data.code`).
    Ask {
        /// Server id.
        server: String,
        /// The request's method.
        method: String,
        /// Its params, as the server sent them.
        params: Value,
        /// The progress tokens of the server's tool calls in flight (one is `/mcp`'s).
        calls: Vec<String>,
        /// Whether other requests (`resources/read`, `prompts/get`) were in flight too.
        others: bool,
    },
    /// A server's notification about a request relayed before
    /// (`notifications/elicitation/complete`): to the client that was asked, if known.
    Notify {
        /// Server id.
        server: String,
        /// The notification's method.
        method: String,
        /// Its params.
        params: Value,
    },
}

/// What the variety room serves.
#[derive(Debug, Clone, PartialEq)]
pub enum VarietyRequest {
    /// The last analysis (`GET /api/v1/vsm/variety`).
    Analysis,
    /// Analyse now (`POST /api/v1/vsm/variety/recalculate`, `trigger_variety_analysis`).
    Recalculate {
        /// Analyse even when the last analysis is fresh.
        force: bool,
        /// Ask for an external scan too (discovery's; said to be not run when absent).
        external_scan: bool,
    },
    /// Ratio, counts and trend (`GET /api/v1/metrics/variety`).
    Metrics,
    /// Every capability, its providers and why (`GET /api/v1/capabilities`).
    Capabilities,
    /// The gaps (`GET /api/v1/capabilities/gaps`).
    Gaps,
    /// Record a required capability (`POST /api/v1/capabilities/acquire`).
    Acquire {
        /// `capability_type`.
        capability: String,
        /// `acquisition_method` (`mcp_server`).
        method: String,
        /// `priority`: low, medium, high or critical (the gap's severity).
        priority: String,
    },
    /// Remove a recorded request (`DELETE /api/v1/capabilities/{id}`).
    Remove {
        /// The capability.
        id: String,
    },
}

/// What the acquisition room serves.
#[derive(Debug, Clone, PartialEq)]
pub enum AcquireRequest {
    /// Run the pipeline for a package (`{"package": "npm:NAME@VERSION"}`) or a registry
    /// `server.json` entry; answered at once with the acquisition's id (202).
    Integrate {
        /// The request body as sent (the room parses it).
        body: Value,
    },
    /// One acquisition's state and steps.
    Show {
        /// Acquisition id (`acq-N`).
        id: String,
    },
    /// Every acquisition kept, newest first.
    List,
    /// Re-evaluate the open gaps against policy now (VSM S5 `decide`): with
    /// `variety.auto_acquire` on, every open gap not being worked on is taken up again (also
    /// those whose candidates are cooling down: they are skipped until their cooldown ends);
    /// off, the answer says that policy starts nothing.
    Decide,
    /// Decision records, oldest first.
    Decisions {
        /// Only ids above this.
        since: Option<u64>,
        /// Only `approved` or `refused` ones.
        verdict: Option<&'static str>,
    },
}

/// What the discovery room serves (to clients, and to rooms that ask: variety, acquisition).
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoveryRequest {
    /// Look for MCP servers; answered when every source asked has answered, failed or timed
    /// out.
    Discover {
        /// One source (`catalog`, `registry`, `npm`, `github`), or every enabled one.
        source: Option<&'static str>,
        /// What to look for (words, or capability names); empty = everything a source lists.
        query: String,
    },
}

/// What the VSM room serves.
#[derive(Debug, Clone, PartialEq)]
pub enum VsmRequest {
    /// Every system: status, counter, recent activity.
    List,
    /// One system (`system1`…`system5` or `operations`…`policy`).
    Show {
        /// The system's id or name.
        id: String,
    },
    /// Run a system's action.
    Action {
        /// The system's id or name.
        id: String,
        /// The action's name.
        action: String,
        /// Its parameters (an object, or null).
        parameters: Value,
    },
}

/// What the reflection room serves.
#[derive(Debug, Clone, PartialEq)]
pub enum ReflectRequest {
    /// The self-model.
    State,
    /// Run the analysers now.
    Reflect,
    /// Insights kept, filtered.
    Insights {
        /// Only insights with a larger id.
        since: Option<u64>,
        /// Only this insight type.
        kind: Option<String>,
        /// Only insights at least this significant (0–1).
        min_significance: Option<f64>,
    },
    /// A question about one subject, answered from the record.
    Query {
        /// `server`, `capability`, `alert` or `decision`.
        about: String,
        /// The subject's id.
        id: String,
    },
    /// Rank the options for a situation.
    Decision {
        /// The situation (`degraded_server`).
        situation: String,
        /// The subject (a server id).
        subject: String,
    },
}

/// What the alerts room serves.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertsRequest {
    /// Alert records, newest first: only `firing` or `resolved` ones, or every one (`None`).
    List {
        /// The state filter.
        state: Option<&'static str>,
    },
    /// Mark an alert acknowledged.
    Ack {
        /// Alert id.
        id: String,
    },
    /// Run the built-in performance and health cycles now (System 3's `audit`).
    RunCycles,
}

/// What the checks room serves.
#[derive(Debug, Clone, PartialEq)]
pub enum ChecksRequest {
    /// The declared checks and their last results, the actions' deliveries and the security
    /// signals.
    List,
    /// Run a declared check now; answered with its result when the run ends.
    Run {
        /// Check name.
        name: String,
    },
    /// Run an `[actions.NAME]` with a test alert; answered with the delivery's id.
    TestAction {
        /// Action name.
        name: String,
    },
}

/// What the wiring serves itself (the concerns not in a room of their own).
#[derive(Debug, Clone, PartialEq)]
pub enum DaemonRequest {
    /// Daemon status; `detailed` adds event-loop statistics.
    Status {
        /// Include loop statistics.
        detailed: bool,
    },
    /// Recent log records, or a live stream of new ones.
    Logs {
        /// Filter and size of the answer.
        query: LogQuery,
        /// Keep the stream open and send new records as they come.
        follow: bool,
    },
    /// Event history, or a live stream of new events.
    Events {
        /// Filter and size.
        query: EventQuery,
        /// Keep streaming.
        follow: bool,
    },
    /// Metrics as JSON: everything, `performance` or `health`.
    Metrics {
        /// Which view.
        view: &'static str,
    },
    /// Prometheus text exposition (not wrapped in the envelope).
    Prometheus,
    /// The OpenAPI document (not wrapped in the envelope).
    OpenApi,
    /// A file of the embedded status page (not wrapped in the envelope).
    Page {
        /// Which file.
        asset: crate::page::Asset,
    },
    /// The TCP API token in effect and where it comes from (control socket only).
    AuthToken,
    /// Replace the generated TCP API token (control socket only).
    AuthTokenRotate,
}

/// What the components room serves: the daemon's own components, and its shutdown.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlRequest {
    /// Start one stopped component, or every stopped one.
    Start {
        /// The component; all when `None`.
        service: Option<String>,
    },
    /// Stop components, or (with `shutdown`) the whole daemon.
    Stop {
        /// The component; all but the control socket when `None`.
        service: Option<String>,
        /// End the process.
        shutdown: bool,
        /// Stop children gracefully (the default) instead of killing them.
        graceful: bool,
    },
    /// Restart one component, or reload the config and restart every component.
    Restart {
        /// The component; everything when `None`.
        service: Option<String>,
    },
}

/// What the settings room serves: the configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigRequest {
    /// The effective configuration, or one section of it.
    Show {
        /// Section name such as `monitoring`.
        section: Option<String>,
    },
    /// Apply a JSON merge patch to the runtime overrides.
    Update {
        /// RFC 7386 merge patch in the shape of the config.
        patch: Value,
    },
    /// Re-read the config file.
    Reload,
    /// JSON Schema of the configuration.
    Schema,
}

/// Run the health checks (all, or one component).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthRequest {
    /// Only this component.
    pub component: Option<String>,
}

/// Self-diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagnosticsRequest {
    /// Also run the slower checks.
    pub full: bool,
}

/// What the MCP room serves.
#[derive(Debug, Clone, PartialEq)]
pub enum McpRequest {
    /// MCP servers, filtered by `active`, `inactive` or `all`.
    List {
        /// The filter.
        status: &'static str,
    },
    /// Register an MCP server.
    Register {
        /// Its spec.
        spec: Box<crate::spec::ServerSpec>,
    },
    /// One server in detail.
    Show {
        /// Server id.
        id: String,
    },
    /// Unregister a server.
    Unregister {
        /// Server id.
        id: String,
    },
    /// Start a server.
    Start {
        /// Server id.
        id: String,
    },
    /// Stop a server.
    Stop {
        /// Server id.
        id: String,
    },
    /// Restart a server.
    Restart {
        /// Server id.
        id: String,
    },
    /// Close a server's open circuit breaker.
    Reset {
        /// Server id.
        id: String,
    },
    /// A server's tools.
    Tools {
        /// Server id.
        id: String,
    },
    /// A sandboxed trial of a spec that is not registered: it is started, answered with what
    /// it showed (tools, stderr, how it ended) once it is active, failed or out of time, and
    /// then removed. Never persisted; the acquisition pipeline's test (no ops row).
    Trial {
        /// The spec to try (its id must be free).
        spec: Box<crate::spec::ServerSpec>,
        /// Deadline for the server to become active.
        timeout_ms: u64,
    },
    /// Call a tool.
    Call {
        /// Server id.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments object.
        arguments: crate::mcp::jsonrpc::Arguments,
        /// Deadline override.
        timeout_ms: Option<u64>,
        /// The progress token the server sees for this call (unique among the calls in
        /// flight; `None`: `SERVER:RPC`). Its progress events carry it, so a caller that set
        /// it can tell its call's progress apart (`/mcp` does).
        progress_token: Option<String>,
        /// A `/mcp` client's call: the `clientCapabilities` of that client (a 2026-07-28
        /// one's own, or what the gateway can relay to a session-era one) and, when it is a
        /// retry after `input_required`, its `inputResponses` and `requestState`, passed to a
        /// modern server. `None` for every other caller.
        input: Option<Value>,
    },
    /// Cancel a call in flight, named by its progress token: the server gets
    /// `notifications/cancelled` with the request id the daemon used, the call's caller an
    /// error. Internal (the `/mcp` gateway's; no ops row).
    Cancel {
        /// Server id.
        id: String,
        /// The call's progress token.
        progress_token: String,
        /// Why (passed to the server).
        reason: String,
    },
    /// A server's resources and resource templates, as last listed.
    Resources {
        /// Server id.
        id: String,
    },
    /// A server's prompts, as last listed.
    Prompts {
        /// Server id.
        id: String,
    },
    /// Read a resource (`resources/read` forwarded, under a tool call's deadline).
    ReadResource {
        /// Server id.
        id: String,
        /// The resource's URI, as the server gave it.
        uri: String,
        /// A progress token for it (`_meta.progressToken`), unique among the calls in flight:
        /// [`McpRequest::Cancel`] cancels it by this token as it cancels a call.
        progress_token: Option<String>,
        /// Deadline override (a `/mcp` request asked again after `input_required` gets what
        /// is left of its first deadline).
        timeout_ms: Option<u64>,
        /// A `/mcp` client's request: as [`McpRequest::Call`]'s `input`. `None` for every
        /// other caller. Boxed: every request moves through the rooms by value, at the size of
        /// the largest (a tool call's).
        input: Option<Box<Value>>,
    },
    /// Set a server's log level (`logging/setLevel` forwarded, under a tool call's deadline;
    /// refused when the server declared no `logging`). Internal (the `/mcp` gateway's; no
    /// ops row).
    SetLogLevel {
        /// Server id.
        id: String,
        /// One of the eight level names.
        level: &'static str,
    },
    /// Subscribe to a resource's updates, or end the subscription (`resources/subscribe` or
    /// `resources/unsubscribe` forwarded; refused when the server declared no
    /// `resources.subscribe`). Internal (the `/mcp` gateway's; no ops row).
    Subscribe {
        /// Server id.
        id: String,
        /// The resource's URI, as the server gave it.
        uri: String,
        /// `true`: subscribe; `false`: unsubscribe.
        subscribe: bool,
    },
    /// Ask for completions (`completion/complete` forwarded with these params, the server's
    /// own names in `ref`); a serving server that declared no `completions` gets the empty
    /// completion. Internal (the `/mcp` gateway's; no ops row).
    Complete {
        /// Server id.
        id: String,
        /// The request's params (a `_meta.progressToken` in them makes it cancellable by
        /// [`McpRequest::Cancel`], as for [`McpRequest::ReadResource`]).
        params: Value,
    },
    /// Get a prompt (`prompts/get` forwarded, under a tool call's deadline).
    GetPrompt {
        /// Server id.
        id: String,
        /// The prompt's name on that server.
        name: String,
        /// Its arguments (an object of strings).
        arguments: Value,
        /// A progress token, as for [`McpRequest::ReadResource`].
        progress_token: Option<String>,
        /// Deadline override, as for [`McpRequest::ReadResource`].
        timeout_ms: Option<u64>,
        /// A `/mcp` client's request: as [`McpRequest::ReadResource`]'s `input`.
        input: Option<Box<Value>>,
    },
}

/// One operation of the API: a row of the ops table (`crate::ops`), the one source from
/// which the router, the WebSocket named commands, the CLI's targets and the OpenAPI
/// document are derived.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// HTTP method (`GET` rows also answer `HEAD`).
    pub method: &'static str,
    /// Path pattern; `{id}` stands for one non-empty segment (an MCP server id).
    pub path: &'static str,
    /// The WebSocket named command that sends this operation, if any.
    pub ws: Option<&'static str>,
    /// OpenAPI `operationId` (unique).
    pub id: &'static str,
    /// OpenAPI tag (the concern it belongs to).
    pub tag: &'static str,
    /// One line for people.
    pub summary: &'static str,
    /// Query and path parameters.
    pub params: &'static [Param],
    /// The JSON request body, if the operation reads one.
    pub body: Option<BodySpec>,
    /// Error codes beyond the ones every route can answer.
    pub errors: &'static [ErrorCode],
    /// What a successful answer is.
    pub produces: Produces,
    /// Who may call it.
    pub access: Access,
    /// Builds the request from the decoded input; `None` for an operation the router does not
    /// serve (the WebSocket upgrade is taken over by the connection before routing).
    pub parse: Option<fn(Args) -> Result<Request, ApiError>>,
}

impl Op {
    /// A plain JSON operation with a token, no parameters, no body and no WebSocket command.
    pub const fn new(
        method: &'static str,
        path: &'static str,
        id: &'static str,
        tag: &'static str,
        summary: &'static str,
        parse: fn(Args) -> Result<Request, ApiError>,
    ) -> Op {
        Op {
            method,
            path,
            ws: None,
            id,
            tag,
            summary,
            params: &[],
            body: None,
            errors: &[],
            produces: Produces::Json,
            access: Access::Token,
            parse: Some(parse),
        }
    }

    /// The path with `{id}` replaced by `encoded_id` (already percent-encoded).
    pub fn target(&self, encoded_id: &str) -> String {
        self.path.replace("{id}", encoded_id)
    }
}

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    /// The query string.
    Query,
    /// A `{name}` segment of the path.
    Path,
}

/// A parameter's type, as the router reads it and the document states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, and empty = true).
    Bool,
    /// Free text.
    Str,
    /// Non-negative integer.
    UInt,
    /// Non-negative integer with a default.
    UIntDefault(u64),
    /// One of these strings.
    Enum(&'static [&'static str]),
    /// An MCP server id (the shared `ServerId` parameter).
    ServerId,
}

/// One parameter of an operation.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Its name.
    pub name: &'static str,
    /// Query or path.
    pub loc: In,
    /// Its type.
    pub ty: Ty,
    /// What it does, for people.
    pub description: &'static str,
}

impl Param {
    /// A query parameter.
    pub const fn query(name: &'static str, ty: Ty, description: &'static str) -> Param {
        Param {
            name,
            loc: In::Query,
            ty,
            description,
        }
    }
}

/// A JSON request body: whether it is required, and its JSON Schema.
#[derive(Debug, Clone, Copy)]
pub struct BodySpec {
    /// A request without a body is refused.
    pub required: bool,
    /// The schema (a function: `serde_json::Value` cannot be built in a const).
    pub schema: fn() -> Value,
}

/// What a successful answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produces {
    /// The JSON envelope.
    Json,
    /// The JSON envelope, or a Server-Sent Events stream with `Accept: text/event-stream` or
    /// `follow`.
    JsonOrSse,
    /// Prometheus text exposition (no envelope).
    Prometheus,
    /// A bare JSON document (no envelope).
    Document,
    /// A file of the status page, of this media type (no envelope).
    Page(&'static str),
    /// A WebSocket upgrade (101).
    WebSocket,
    /// The MCP Streamable HTTP endpoint: JSON-RPC messages as `application/json` or an SSE
    /// stream, no envelope (the access layer's refusals keep the envelope).
    McpStream,
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Over TCP with the bearer token; on the control socket by uid.
    Token,
    /// Also over TCP without a token (the health check probes use).
    Public,
    /// Only on the control socket (403 over TCP and WebSocket, even with a valid token): it
    /// hands out or replaces the token itself.
    ControlSocket,
}

/// The decoded input of one operation: query pairs, the JSON object body (if any), the
/// `{id}` path segment and whether the client asked for an event stream. Readers name the
/// parameter at fault in their errors.
#[derive(Debug, Clone, Default)]
pub struct Args {
    query: Vec<(String, String)>,
    body: Option<Value>,
    /// The `{id}` segment, decoded (empty when the path has none).
    pub id: String,
    /// `Accept: text/event-stream` was sent.
    pub event_stream: bool,
}

impl Args {
    /// Input from decoded query pairs and a body that is a JSON object or absent.
    pub fn new(
        query: Vec<(String, String)>,
        body: Option<Value>,
        id: String,
        event_stream: bool,
    ) -> Args {
        Args {
            query,
            body,
            id,
            event_stream,
        }
    }

    /// A query parameter's text (the first one of that name).
    pub fn text(&self, key: &str) -> Option<String> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// A boolean query parameter; absent is false.
    ///
    /// # Errors
    /// `invalid_parameter` naming `key` for a value that is not a boolean.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.text(key).as_deref() {
            None => Ok(false),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            // An empty value (`?detailed=` or a bare `?detailed`) is not a boolean: the
            // OpenAPI document says `boolean`, and guessing `true` hid typos.
            Some(other) => Err(ApiError::field(
                ErrorCode::InvalidParameter,
                key,
                format!("'{other}' is not a boolean (true, false, 1, 0, yes, no)"),
            )),
        }
    }

    /// A non-negative integer query parameter.
    ///
    /// # Errors
    /// `invalid_parameter` naming `key` for anything else.
    pub fn number(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.text(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::field(
                        ErrorCode::InvalidParameter,
                        key,
                        format!("'{v}' is not a non-negative integer"),
                    )
                })
            })
            .transpose()
    }

    /// The whole body, taken out (`None` when there was none).
    pub fn take_body(&mut self) -> Option<Value> {
        self.body.take()
    }

    /// A body field; JSON `null` counts as absent.
    pub fn field(&self, key: &str) -> Option<&Value> {
        self.body
            .as_ref()
            .and_then(|v| v.get(key))
            .filter(|v| !v.is_null())
    }

    /// A string body field.
    ///
    /// # Errors
    /// `invalid_parameter` naming `key` when it is not a string.
    pub fn field_text(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.field(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::field(
                ErrorCode::InvalidParameter,
                key,
                "must be a string",
            )),
        }
    }

    /// A string body field moved out of the body (what [`Args::field_text`] gives, without
    /// a copy: for a field a request reads once).
    ///
    /// # Errors
    /// `invalid_parameter` naming `key` when it is not a string.
    pub fn take_text(&mut self, key: &str) -> Result<Option<String>, ApiError> {
        match self.body.as_mut().and_then(|v| v.get_mut(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(std::mem::take(s))),
            Some(_) => Err(ApiError::field(
                ErrorCode::InvalidParameter,
                key,
                "must be a string",
            )),
        }
    }

    /// A boolean body field.
    ///
    /// # Errors
    /// `invalid_parameter` naming `key` when it is not a boolean.
    pub fn field_flag(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.field(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::field(
                ErrorCode::InvalidParameter,
                key,
                "must be a boolean",
            )),
        }
    }
}

/// Filter for events.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventQuery {
    /// Only this event type.
    pub kind: Option<String>,
    /// Only this channel.
    pub channel: Option<String>,
    /// Only events with a larger sequence number.
    pub since: Option<u64>,
    /// At most this many of the newest.
    pub limit: usize,
}

/// Filter for log records.
#[derive(Debug, Clone, PartialEq)]
pub struct LogQuery {
    /// Most severe level to include down to this one (`warn` = warn and error).
    pub level: log::LevelFilter,
    /// At most this many of the newest records.
    pub lines: usize,
    /// Only records whose target starts with this.
    pub component: Option<String>,
    /// Only records with a sequence number greater than this.
    pub since: Option<u64>,
}

impl Default for LogQuery {
    fn default() -> Self {
        LogQuery {
            level: log::LevelFilter::Trace,
            lines: 100,
            component: None,
            since: None,
        }
    }
}

/// Stable error codes of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed request (bad JSON, bad HTTP).
    BadRequest,
    /// A parameter or body field has a wrong value.
    InvalidParameter,
    /// No such route.
    NotFound,
    /// Route exists, method does not.
    MethodNotAllowed,
    /// Caller may not use the daemon.
    Forbidden,
    /// A bearer token is required and was missing or wrong.
    Unauthorized,
    /// A WebSocket endpoint was called without an upgrade.
    UpgradeRequired,
    /// Request head too large.
    HeaderTooLarge,
    /// Request body too large.
    PayloadTooLarge,
    /// Body without Content-Length (chunked uploads are not accepted).
    LengthRequired,
    /// A body (or, over TCP, a state-changing request) not declared `application/json`.
    UnsupportedMediaType,
    /// Unknown component name.
    ComponentNotFound,
    /// A configuration change or file was refused.
    ConfigInvalid,
    /// Unknown configuration key or section.
    ConfigKeyNotFound,
    /// The request is valid but not possible in the current state.
    Conflict,
    /// One or more components are unhealthy.
    Unhealthy,
    /// A bounded queue is full; try again.
    Busy,
    /// No MCP server with that id.
    ServerNotFound,
    /// No alert with that id (or it was dropped: resolved alerts are kept up to a bound).
    AlertNotFound,
    /// No VSM system with that id or name.
    SystemNotFound,
    /// The record knows nothing of the subject asked about.
    SubjectNotFound,
    /// The operation needs a part of the daemon that is not built yet (named in the message).
    NotImplemented,
    /// The server has no tool with that name.
    ToolNotFound,
    /// Something with that id already exists.
    AlreadyExists,
    /// The tool ran and reported an error (`isError`); its content is in `data`.
    ToolError,
    /// The MCP server answered with a JSON-RPC error.
    McpError,
    /// The MCP server exited while the request was in flight.
    ServerExited,
    /// The daemon is shutting down.
    ShuttingDown,
    /// The work did not finish before its deadline.
    Timeout,
    /// A bug or an OS error on the daemon's side.
    Internal,
    /// The change could not be saved in the state directory (an I/O error other than a full
    /// disk); nothing was changed.
    PersistFailed,
    /// The state directory's filesystem is full (ENOSPC) or over quota (EDQUOT); nothing was
    /// changed.
    InsufficientStorage,
    /// A state document this daemon cannot read or understand (a newer format version, not a
    /// regular file) would have to be overwritten; nothing was changed.
    StateReadOnly,
    /// None of the outside services asked (discovery sources) answered; each one's error is
    /// in the message and `data`.
    UpstreamUnavailable,
    /// The tool falls under a capability in `security.blocked_capabilities` that its server's
    /// spec does not allow: it cannot be called.
    CapabilityBlocked,
    /// A server spec declares a capability in `security.blocked_capabilities` without
    /// allowing it in `allow_capabilities`: not registered.
    CapabilityNotAllowed,
    /// No capability request with that id.
    CapabilityNotFound,
}

impl ErrorCode {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidParameter => "invalid_parameter",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UpgradeRequired => "upgrade_required",
            ErrorCode::HeaderTooLarge => "header_too_large",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::LengthRequired => "length_required",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::ComponentNotFound => "component_not_found",
            ErrorCode::ConfigInvalid => "config_invalid",
            ErrorCode::ConfigKeyNotFound => "config_key_not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Unhealthy => "unhealthy",
            ErrorCode::Busy => "busy",
            ErrorCode::ServerNotFound => "server_not_found",
            ErrorCode::AlertNotFound => "alert_not_found",
            ErrorCode::SystemNotFound => "system_not_found",
            ErrorCode::SubjectNotFound => "subject_not_found",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::ToolNotFound => "tool_not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::ToolError => "tool_error",
            ErrorCode::McpError => "mcp_error",
            ErrorCode::ServerExited => "server_exited",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal_error",
            ErrorCode::PersistFailed => "persist_failed",
            ErrorCode::InsufficientStorage => "insufficient_storage",
            ErrorCode::StateReadOnly => "state_read_only",
            ErrorCode::UpstreamUnavailable => "upstream_unavailable",
            ErrorCode::CapabilityBlocked => "capability_blocked",
            ErrorCode::CapabilityNotAllowed => "capability_not_allowed",
            ErrorCode::CapabilityNotFound => "capability_not_found",
        }
    }

    /// The HTTP status this code is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidParameter | ErrorCode::ConfigInvalid => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::UpgradeRequired => 426,
            ErrorCode::NotFound
            | ErrorCode::ComponentNotFound
            | ErrorCode::ConfigKeyNotFound
            | ErrorCode::ServerNotFound
            | ErrorCode::AlertNotFound
            | ErrorCode::SystemNotFound
            | ErrorCode::SubjectNotFound
            | ErrorCode::ToolNotFound => 404,
            ErrorCode::NotImplemented => 501,
            ErrorCode::AlreadyExists => 409,
            ErrorCode::ToolError => 422,
            ErrorCode::McpError | ErrorCode::ServerExited | ErrorCode::UpstreamUnavailable => 502,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::LengthRequired => 411,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::HeaderTooLarge => 431,
            ErrorCode::Internal | ErrorCode::PersistFailed => 500,
            ErrorCode::InsufficientStorage => 507,
            ErrorCode::StateReadOnly => 409,
            ErrorCode::Unhealthy | ErrorCode::Busy | ErrorCode::ShuttingDown => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::CapabilityBlocked => 403,
            ErrorCode::CapabilityNotAllowed => 422,
            ErrorCode::CapabilityNotFound => 404,
        }
    }
}

/// An error answer: a stable code, a message for people, and the offending field if any.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// Stable code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// The parameter, body field or config key at fault.
    pub field: Option<String>,
    /// Data that still goes with the error (e.g. the health results behind `unhealthy`).
    pub data: Option<Value>,
}

impl ApiError {
    /// An error without a field.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
            data: None,
        }
    }

    /// An error naming the field at fault.
    pub fn field(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: Some(field.into()),
            data: None,
        }
    }

    /// Attaches data to the error reply.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// What a request handler produced: an answer now, or a promise to answer through its
/// reply slot later (tool calls, worker jobs), or a stream.
pub type Answer = Result<Value, ApiError>;

/// A tool call's success carrying the server's `result` as the bytes it sent, not parsed
/// into a [`Value`]: the common answer (no `isError`, no `resultType` other than
/// `complete`) is spliced into the REST envelope and the `/mcp` answer as it came, which
/// saves parsing the result, dropping it and serializing it again on every call. Where an
/// answer must be rewritten, [`RawCall::into_answer`] gives the ordinary [`Answer`].
///
/// Invariant: `line[start..end]` is one valid JSON object (checked when it was split out of
/// the server's line).
#[derive(Debug)]
pub struct RawCall {
    /// The server.
    pub server: String,
    /// The tool (the server's name for it).
    pub tool: String,
    /// From the call's sending to its answer.
    pub duration_ms: f64,
    /// Whether the result has a `resultType` member (a 2026-07-28 answer adds one when not).
    pub has_result_type: bool,
    /// Whether the result has a `_meta` member (a 2026-07-28 answer then merges ours into
    /// it, from the parsed result).
    pub has_meta: bool,
    line: Vec<u8>,
    start: usize,
    end: usize,
}

impl RawCall {
    /// `line[range]` must be one valid JSON object (see the type's invariant).
    pub(crate) fn new(
        server: String,
        tool: String,
        duration_ms: f64,
        line: Vec<u8>,
        range: std::ops::Range<usize>,
        has_result_type: bool,
        has_meta: bool,
    ) -> Self {
        RawCall {
            server,
            tool,
            duration_ms,
            has_result_type,
            has_meta,
            line,
            start: range.start,
            end: range.end,
        }
    }

    /// The result object's bytes, as the server sent them.
    pub fn result(&self) -> &[u8] {
        &self.line[self.start..self.end]
    }

    /// The answer's `data` (the REST tool call's), serialized: the members in the order a
    /// [`Value`] map would give them, so the bytes are those of [`Self::into_answer`] apart
    /// from the result, which is the server's own.
    pub fn data(&self) -> Vec<u8> {
        let result = self.result();
        let mut out = Vec::with_capacity(result.len() + self.server.len() + self.tool.len() + 64);
        out.extend_from_slice(b"{\"duration_ms\":");
        // Writes into a Vec cannot fail; a non-finite duration is null, as `json!` makes it.
        let _ = serde_json::to_writer(&mut out, &json!(self.duration_ms));
        out.extend_from_slice(b",\"result\":");
        out.extend_from_slice(result);
        out.extend_from_slice(b",\"server\":");
        let _ = serde_json::to_writer(&mut out, &self.server);
        out.extend_from_slice(b",\"tool\":");
        let _ = serde_json::to_writer(&mut out, &self.tool);
        out.push(b'}');
        out
    }

    /// The ordinary answer, with the result parsed: the same as a call answered without
    /// splicing (`{server, tool, result, duration_ms}`).
    pub fn into_answer(self) -> Answer {
        let result: Value = serde_json::from_slice(self.result()).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!(
                    "the result of {} on {} could not be read: {e}",
                    self.tool, self.server
                ),
            )
        })?;
        let mut map = serde_json::Map::with_capacity(4);
        map.insert("server".into(), Value::String(self.server));
        map.insert("tool".into(), Value::String(self.tool));
        map.insert("result".into(), result);
        map.insert("duration_ms".into(), json!(self.duration_ms));
        Ok(Value::Object(map))
    }
}

/// Names one connection for its whole life (assigned by `net`; a slot and its generation, so
/// an answer for a closed connection whose slot was reused is dropped, never misdelivered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

/// Where an answer goes. Handlers keep it and answer later (tool calls, worker jobs); the
/// wiring encodes the answer for the transport it names.
#[derive(Debug, Clone, Copy)]
pub enum ReplyTo {
    /// An HTTP request on a connection.
    Http {
        /// Connection.
        conn: ConnId,
        /// Request slot on it.
        seq: u64,
        /// When handling began.
        started: std::time::Instant,
        /// Request id for the envelope.
        request_id: u64,
        /// Route pattern (metrics label).
        route: &'static str,
        /// Method (metrics label).
        method: &'static str,
    },
    /// A command from a WebSocket client.
    Ws {
        /// Connection.
        conn: ConnId,
        /// Local id standing for the client's own id.
        local: u64,
        /// When handling began.
        started: std::time::Instant,
        /// Request id for the envelope.
        request_id: u64,
    },
    /// A room that asked through the command layer (see `room::Effect::Request`): the
    /// answer goes back to it with its tag.
    Room {
        /// The asking room's name.
        room: &'static str,
        /// Its tag.
        tag: u64,
    },
}

/// Writes the JSON envelope every reply is wrapped in, straight into `out` (the data is
/// serialized in place, never copied into a second tree). `ws_id` adds the WebSocket
/// reply fields `"type": "response"` and the client's `"id"`.
pub fn write_envelope(
    out: &mut Vec<u8>,
    answer: &Answer,
    request_id: u64,
    processing_ms: f64,
    timestamp: &str,
    ws_id: Option<&Value>,
) {
    let null = Value::Null;
    let (data, error) = match answer {
        Ok(d) => (d, None),
        Err(e) => (e.data.as_ref().unwrap_or(&null), Some(e)),
    };
    // Serializing a Value into a Vec cannot fail.
    let raw = serde_json::to_vec(data).unwrap_or_default();
    write_envelope_raw(
        out,
        error,
        &raw,
        request_id,
        processing_ms,
        timestamp,
        ws_id,
    );
}

/// [`write_envelope`] with the data already serialized (a cached answer).
pub fn write_envelope_raw(
    out: &mut Vec<u8>,
    error: Option<&ApiError>,
    data: &[u8],
    request_id: u64,
    processing_ms: f64,
    timestamp: &str,
    ws_id: Option<&Value>,
) {
    use std::io::Write;
    let ms = (processing_ms * 1000.0).round() / 1000.0;
    let status = if error.is_none() { "success" } else { "error" };
    // Writes into a Vec cannot fail.
    let _ = write!(
        out,
        "{{\"status\":\"{status}\",\"timestamp\":\"{timestamp}\",\"data\":"
    );
    out.extend_from_slice(data);
    let _ = write!(
        out,
        ",\"metadata\":{{\"request_id\":\"req_{request_id}\",\"processing_time_ms\":{ms},\"version\":\"v1\"}},\"errors\":"
    );
    match error {
        None => out.extend_from_slice(b"[]"),
        Some(e) => {
            let errors = json!([{"code": e.code.as_str(), "message": e.message, "field": e.field}]);
            let _ = serde_json::to_writer(&mut *out, &errors);
        }
    }
    if let Some(id) = ws_id {
        out.extend_from_slice(b",\"type\":\"response\",\"id\":");
        let _ = serde_json::to_writer(&mut *out, id);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(answer: &Answer, id: u64, ms: f64, ts: &str) -> Value {
        let mut out = Vec::new();
        write_envelope(&mut out, answer, id, ms, ts, None);
        serde_json::from_slice(&out).expect("the envelope is JSON")
    }

    #[test]
    fn envelope_shapes() {
        let ok = envelope(&Ok(json!({"a": 1})), 7, 0.1234, "2026-01-01T00:00:00Z");
        assert_eq!(ok["metadata"]["processing_time_ms"], 0.123);
        let mut ws = Vec::new();
        write_envelope(&mut ws, &Ok(json!(1)), 1, 0.0, "t", Some(&json!("x")));
        let ws: Value = serde_json::from_slice(&ws).expect("json");
        assert_eq!(
            (ws["type"].as_str(), ws["id"].as_str()),
            (Some("response"), Some("x"))
        );
        assert_eq!(ok["status"], "success");
        assert_eq!(ok["metadata"]["request_id"], "req_7");
        assert_eq!(ok["data"]["a"], 1);
        let err = envelope(
            &Err(ApiError::field(
                ErrorCode::InvalidParameter,
                "lines",
                "must be a number",
            )),
            8,
            0.0,
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(err["status"], "error");
        assert_eq!(err["errors"][0]["code"], "invalid_parameter");
        assert_eq!(err["errors"][0]["field"], "lines");
    }

    #[test]
    fn every_code_has_a_4xx_or_5xx_status() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::NotFound,
            ErrorCode::Unhealthy,
            ErrorCode::Internal,
            ErrorCode::Timeout,
            ErrorCode::PersistFailed,
            ErrorCode::InsufficientStorage,
            ErrorCode::StateReadOnly,
        ] {
            assert!(
                (400..600).contains(&code.http_status()),
                "{}",
                code.as_str()
            );
        }
    }

    #[test]
    fn a_raw_call_is_the_parsed_answer_with_the_servers_result_bytes() {
        let line = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"text":"\u00e9","type":"text"}],"n":2.50}}"#;
        let start = br#"{"jsonrpc":"2.0","id":1,"result":"#.len();
        let range = start..line.len() - 1;
        let raw = RawCall::new(
            "fx".into(),
            "t\"1".into(),
            1.25,
            line.to_vec(),
            range,
            false,
            false,
        );
        assert_eq!(
            raw.result(),
            br#"{"content":[{"text":"\u00e9","type":"text"}],"n":2.50}"#
        );
        let data = raw.data();
        let answer = raw.into_answer().expect("reads");
        // The same members and values; only the result's own text is the server's.
        assert_eq!(
            serde_json::from_slice::<Value>(&data).expect("JSON"),
            answer
        );
        let text = String::from_utf8(data).expect("utf-8");
        assert_eq!(
            text,
            r#"{"duration_ms":1.25,"result":{"content":[{"text":"\u00e9","type":"text"}],"n":2.50},"server":"fx","tool":"t\"1"}"#
        );
        let bad = RawCall::new(
            "fx".into(),
            "t".into(),
            1.0,
            b"{\"n\":1e400}".to_vec(),
            0..11,
            false,
            false,
        );
        assert_eq!(
            bad.into_answer().map_err(|e| e.code),
            Err(ErrorCode::Internal)
        );
    }
}
