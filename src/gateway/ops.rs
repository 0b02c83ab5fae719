//! The gateway's rows: `/mcp`, documented and never routed, for the ops table ([`crate::ops`]): the router, the WebSocket named commands, the
//! CLI and the OpenAPI document are derived from them.

use crate::api::{Access, Op, Produces};

/// A `/mcp` row: documented here, never routed (the gateway room takes `/mcp` after the
/// access checks, since its answers are JSON-RPC, not the envelope).
const fn mcp_endpoint(method: &'static str, id: &'static str, summary: &'static str) -> Op {
    Op {
        method,
        path: "/mcp",
        ws: None,
        id,
        tag: "gateway",
        summary,
        params: &[],
        body: None,
        errors: &[],
        produces: Produces::McpStream,
        access: Access::Token,
        parse: None,
    }
}

/// `/mcp`: the daemon as one MCP server (Streamable HTTP) with every active server's tools.
pub const OPS: &[Op] = &[
    mcp_endpoint(
        "POST",
        "mcpPost",
        "MCP Streamable HTTP: one JSON-RPC message (initialize, ping, tools, prompts, resources and their subscriptions, completions, logging/setLevel, notifications, a response to a server's request relayed on a call's stream)",
    ),
    mcp_endpoint(
        "GET",
        "mcpStream",
        "MCP Streamable HTTP: the session's Server-Sent Events stream (list_changed, log messages, resource updates)",
    ),
    mcp_endpoint("DELETE", "mcpEndSession", "MCP Streamable HTTP: end the session"),
];
