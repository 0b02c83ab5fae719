//! Typed snapshots of the daemon's state for the answers asked for most (`GET
//! /api/v1/status`): the parts the rooms and the wiring contribute, serialized straight into
//! the answer's bytes, without building a `serde_json::Value` tree first (that tree, its maps
//! and its drop were most of the cost of a status request). The whole is composed in
//! `daemon/rooms.rs` from the room list.
//!
//! Invariant: the JSON is byte for byte what the `Value` builder produced, keys in the sorted
//! order of `serde_json`'s map; fields are therefore declared in alphabetical order (a unit
//! test in `daemon/rooms.rs` holds the two forms together).

use serde::Serialize;
use std::borrow::Cow;

/// What other rooms know that a room shows in its status part ([`crate::room::Report`]):
/// handed over by the wiring, borrowed for the time of one answer.
pub struct Facts<'a> {
    /// The health room: the last round's verdict on each component.
    pub health: &'a crate::components::health::Health,
}

/// The wiring's `daemon` part of `GET /api/v1/status`.
#[derive(Debug, Serialize)]
pub struct Daemon<'a> {
    /// How TCP callers authenticate (`none`, or the token's source).
    pub auth: &'a str,
    /// The configuration file, or `embedded defaults`.
    pub config_source: Cow<'a, str>,
    /// Why the overrides file was not applied, if it was not.
    pub config_warning: Option<&'a str>,
    /// The TCP address listened on.
    pub http_listen: Option<String>,
    /// Process id.
    pub pid: u32,
    /// Where the pid file is.
    pub pid_file: Cow<'a, str>,
    /// The control socket.
    pub socket: Cow<'a, str>,
    /// RFC 3339.
    pub started_at: String,
    /// The state directory.
    pub state_dir: Cow<'a, str>,
    /// `running` or `stopping`.
    pub status: &'a str,
    /// Whole seconds since start.
    pub uptime_seconds: u64,
    /// The daemon's version.
    pub version: &'a str,
}

/// One component in the components room's status part.
#[derive(Debug, Serialize)]
pub struct Component<'a> {
    /// The last health round's message for it.
    pub health_message: Option<&'a str>,
    /// Whether the last health round passed it.
    pub healthy: Option<bool>,
    /// Its last error.
    pub last_error: Option<&'a str>,
    /// Restarts after failed health checks.
    pub restarts: u32,
    /// RFC 3339: since when it is in its state.
    pub since: String,
    /// `running` or `stopped`.
    pub status: &'a str,
}

/// The MCP room's status part (from [`crate::mcp::Mcp::counts`]).
#[derive(Debug, Serialize)]
pub struct McpCounts<'a> {
    /// Servers that serve (active or degraded).
    pub active_count: usize,
    /// When the last discovery run ended (RFC 3339; the MCP room follows
    /// `discovery_completed`), `null` before the first. (Fields in key order: the status
    /// body is the sorted object it always was.)
    pub last_discovery: Option<&'a str>,
    /// Servers registered.
    pub total_registered: usize,
}

/// One MCP server as the rooms that follow the server catalogue see it
/// ([`crate::room::Follows::servers`]): borrowed from the MCP room for the time of one
/// hand-over, in id order.
#[derive(Debug, Clone, Copy)]
pub struct ServerView<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its status (`active`, `stopped`, ...).
    pub status: &'static str,
    /// Whether it serves tool calls now (active or degraded).
    pub serves: bool,
    /// Whether its circuit breaker is open.
    pub breaker_open: bool,
    /// The capabilities its spec declares.
    pub capabilities: &'a [String],
    /// The blocked capabilities its spec allows anyway.
    pub allow_capabilities: &'a [String],
    /// Its tools as last listed (`tools/list` entries; empty before its first listing).
    pub tools: &'a [serde_json::Value],
    /// Names this tool list: (the server's run, listings that changed it in that run). Equal
    /// versions of one server are equal lists.
    pub tools_version: (u64, u64),
    /// Its resources as last listed (`resources/list` entries; empty when it offers none).
    pub resources: &'a [serde_json::Value],
    /// Its resource templates as last listed.
    pub resource_templates: &'a [serde_json::Value],
    /// Its prompts as last listed.
    pub prompts: &'a [serde_json::Value],
}
