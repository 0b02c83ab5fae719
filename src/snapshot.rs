//! Typed snapshots of the daemon's state for the answers asked for most (`GET
//! /api/v1/status`): serialized straight into the answer's bytes, without building a
//! `serde_json::Value` tree first (that tree, its maps and its drop were most of the cost of a
//! status request).
//!
//! Invariant: the JSON is byte for byte what the `Value` builder produced, keys in the sorted
//! order of `serde_json`'s map; fields are therefore declared in alphabetical order (a unit
//! test holds the two forms together).

use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// `GET /api/v1/status`.
#[derive(Debug, Serialize)]
pub struct Status<'a> {
    /// Each daemon component, by name.
    pub components: BTreeMap<&'a str, Component<'a>>,
    /// The daemon itself.
    pub daemon: Daemon<'a>,
    /// Loop statistics (`?detailed=true` only).
    #[serde(rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_stats: Option<Value>,
    /// MCP server counts.
    pub mcp_servers: McpCounts,
}

/// The daemon part of [`Status`].
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

/// One component of [`Status`].
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

/// The MCP part of [`Status`] (from [`crate::mcp::Mcp::counts`]).
#[derive(Debug, Serialize)]
pub struct McpCounts {
    /// Servers that serve (active or degraded).
    pub active_count: usize,
    /// Servers registered.
    pub total_registered: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The builder this replaced, on the same facts: the bytes must not change.
    #[test]
    fn the_typed_status_is_byte_for_byte_the_value_builders() {
        for (detailed, warning, listen) in [
            (false, None, None),
            (
                true,
                Some("overrides.json: bad \"x\""),
                Some("127.0.0.1:8080"),
            ),
        ] {
            let mut components = BTreeMap::new();
            let mut old_components = serde_json::Map::new();
            for (name, running, error, health) in [
                ("worker", true, None, Some((true, "alive"))),
                (
                    "http",
                    false,
                    Some("bind: in use\n"),
                    Some((false, "stopped ✗")),
                ),
                ("control", true, None, None),
            ] {
                components.insert(
                    name,
                    Component {
                        health_message: health.map(|h| h.1),
                        healthy: health.map(|h| h.0),
                        last_error: error,
                        restarts: 3,
                        since: "2026-12-02T03:00:00Z".into(),
                        status: if running { "running" } else { "stopped" },
                    },
                );
                old_components.insert(
                    name.to_string(),
                    json!({
                        "status": if running { "running" } else { "stopped" },
                        "since": "2026-12-02T03:00:00Z",
                        "restarts": 3,
                        "last_error": error,
                        "healthy": health.map(|h| h.0),
                        "health_message": health.map(|h| h.1.to_string()),
                    }),
                );
            }
            let loop_stats = detailed.then(|| json!({"wakeups": 5, "rss_bytes": null}));
            let typed = Status {
                components,
                daemon: Daemon {
                    auth: "file",
                    config_source: "embedded defaults".into(),
                    config_warning: warning,
                    http_listen: listen.map(String::from),
                    pid: 42,
                    pid_file: "/run/x.pid".into(),
                    socket: "/run/s".into(),
                    started_at: "2026-12-02T03:00:00Z".into(),
                    state_dir: "/var/lib/vsm".into(),
                    status: "running",
                    uptime_seconds: 7,
                    version: "0.1.0",
                },
                loop_stats: loop_stats.clone(),
                mcp_servers: McpCounts {
                    active_count: 1,
                    total_registered: 2,
                },
            };
            let mut old = json!({
                "daemon": {
                    "status": "running",
                    "version": "0.1.0",
                    "pid": 42,
                    "started_at": "2026-12-02T03:00:00Z",
                    "uptime_seconds": 7,
                    "config_source": "embedded defaults",
                    "config_warning": warning.map(String::from),
                    "state_dir": "/var/lib/vsm",
                    "socket": "/run/s",
                    "pid_file": "/run/x.pid",
                    "http_listen": listen,
                    "auth": "file",
                },
                "components": old_components,
                "mcp_servers": {"active_count": 1, "total_registered": 2},
            });
            if let Some(l) = loop_stats {
                old["loop"] = l;
            }
            assert_eq!(
                String::from_utf8(serde_json::to_vec(&typed).expect("typed")).expect("utf-8"),
                old.to_string()
            );
            assert_eq!(serde_json::to_value(&typed).expect("value"), old);
        }
    }
}
