//! The discovery room's row, for the ops table ([`crate::ops`]): the router, the WebSocket named commands, the
//! CLI and the OpenAPI document are derived from them.

use crate::api::{ApiError, DiscoveryRequest, ErrorCode, Op, Param, Request, Ty};

/// The discovery sources a query may name (`mcp_servers.discovery_sources` says which run).
const DISCOVERY_SOURCES: &[&str] = &["catalog", "registry", "npm", "github"];

/// `GET /api/v1/mcp/discover`.
pub const MCP_DISCOVER: Op = Op {
    ws: Some("mcp_discover"),
    params: &[
        Param::query(
            "source",
            Ty::Enum(DISCOVERY_SOURCES),
            "Only this source (it must be enabled in mcp_servers.discovery_sources); default every enabled one",
        ),
        Param::query(
            "query",
            Ty::Str,
            "Words or capability names to look for (at most 200 bytes); empty: everything the sources list",
        ),
    ],
    errors: &[ErrorCode::Conflict, ErrorCode::Busy, ErrorCode::UpstreamUnavailable],
    ..Op::new(
        "GET",
        "/api/v1/mcp/discover",
        "discoverMcpServers",
        "mcp",
        "Find MCP servers to install: every enabled source asked at once (each answer cached for mcp_servers.discovery_cache_ttl_ms), candidates deduplicated, filtered (stdio, npm or PyPI, runtime present) and ranked with the parts of their score; answered when every source has answered or failed, each source's outcome in `sources` (502 `upstream_unavailable` when none answered)",
        |a| {
            let source = match a.text("source").as_deref() {
                None | Some("") => None,
                Some(s) => match DISCOVERY_SOURCES.iter().find(|k| **k == s) {
                    Some(k) => Some(*k),
                    None => {
                        return Err(ApiError::field(
                            ErrorCode::InvalidParameter,
                            "source",
                            format!("'{s}' is not one of {}", DISCOVERY_SOURCES.join(", ")),
                        ))
                    }
                },
            };
            Ok(Request::Discovery(DiscoveryRequest::Discover {
                source,
                query: a.text("query").unwrap_or_default(),
            }))
        },
    )
};

/// Discovery.
pub const OPS: &[Op] = &[MCP_DISCOVER];
