//! Server specs: what an operator registers (over the API or `[[servers]]` in the config file)
//! and what survives a restart (`servers.json` in the state directory, written atomically).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Name of the registry document in the state directory.
pub const REGISTRY_FILE: &str = "servers.json";

/// Sandbox limits for one server; `None` takes the `[mcp_servers]` default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxLimits {
    /// RLIMIT_NOFILE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_files: Option<u64>,
    /// RLIMIT_CPU in seconds (0 = unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu_seconds: Option<u64>,
    /// RLIMIT_DATA in MiB (0 = unlimited). Not RLIMIT_AS: V8 reserves gigabytes of address space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<u64>,
    /// Run as this uid (only when the daemon is root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Run as this gid (only when the daemon is root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// Everything needed to run one MCP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// Stable id (`time`, `everything`): `[a-z0-9][a-z0-9_.-]*`, at most 64 bytes.
    pub id: String,
    /// Program to run (looked up on PATH when not a path).
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment given to the server on top of the allow-list (PATH, HOME, LANG, TERM, USER).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Capabilities this server provides.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Start with the daemon and after registration.
    #[serde(default = "yes")]
    pub autostart: bool,
    /// Default deadline for a tool call, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout_ms: Option<u64>,
    /// First restart delay, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_initial_ms: Option<u64>,
    /// Largest restart delay, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max_ms: Option<u64>,
    /// Failed starts within the failure window that open the circuit breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<u32>,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: SandboxLimits,
}

/// The registry document after registering `spec`: `current` (what `servers.json` holds now)
/// plus `spec`, ordered by id like [`crate::mcp::Mcp::api_specs`]. Pure, so the document can
/// be written before the registration is applied.
pub fn with_added(mut current: Vec<ServerSpec>, spec: &ServerSpec) -> Vec<ServerSpec> {
    current.retain(|s| s.id != spec.id);
    current.push(spec.clone());
    current.sort_by(|a, b| a.id.cmp(&b.id));
    current
}

/// The registry document after unregistering `id`.
pub fn without(mut current: Vec<ServerSpec>, id: &str) -> Vec<ServerSpec> {
    current.retain(|s| s.id != id);
    current
}

fn yes() -> bool {
    true
}

impl ServerSpec {
    /// Checks the spec.
    ///
    /// # Errors
    /// `(field, message)` for the first problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self.id.as_bytes()[0].is_ascii_alphanumeric()
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if !id_ok {
            return Err((
                "id",
                format!("'{}' is not a valid id: use lowercase letters, digits, '_', '.', '-' (at most 64)", self.id),
            ));
        }
        if self.command.trim().is_empty() {
            return Err(("command", "must not be empty".into()));
        }
        if let Some(cwd) = &self.cwd {
            if !std::path::Path::new(cwd).is_absolute() {
                return Err(("cwd", format!("'{cwd}' must be an absolute path")));
            }
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(("env", format!("'{key}' is not a valid variable name")));
            }
        }
        for (field, value, min, max) in [
            ("call_timeout_ms", self.call_timeout_ms, 10, 3_600_000),
            ("backoff_initial_ms", self.backoff_initial_ms, 10, 3_600_000),
            ("backoff_max_ms", self.backoff_max_ms, 10, 86_400_000),
            ("max_failures", self.max_failures.map(u64::from), 1, 1000),
        ] {
            if let Some(v) = value {
                if !(min..=max).contains(&v) {
                    return Err((field, format!("must be between {min} and {max} (got {v})")));
                }
            }
        }
        if let (Some(a), Some(b)) = (self.backoff_initial_ms, self.backoff_max_ms) {
            if a > b {
                return Err((
                    "backoff_initial_ms",
                    "must not exceed backoff_max_ms".into(),
                ));
            }
        }
        for cap in &self.capabilities {
            if cap.is_empty() || cap.len() > 64 || cap.contains(char::is_whitespace) {
                return Err((
                    "capabilities",
                    format!("'{cap}' is not a valid capability name"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> ServerSpec {
        serde_json::from_value(serde_json::json!({"id": id, "command": "python3"})).expect("spec")
    }

    #[test]
    fn documents_before_and_after() {
        let doc = with_added(vec![spec("b"), spec("c")], &spec("a"));
        let ids: Vec<&str> = doc.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(
            with_added(doc.clone(), &spec("a")).len(),
            3,
            "no duplicate id"
        );
        let doc = without(doc, "b");
        let ids: Vec<&str> = doc.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(without(doc, "zz").len(), 2);
    }

    #[test]
    fn defaults_and_validation() {
        let s = spec("time");
        assert!(s.autostart);
        assert!(s.validate().is_ok());
        for bad in ["", "Time", "-x", "a b", &"x".repeat(65)] {
            assert_eq!(spec(bad).validate().map_err(|e| e.0), Err("id"), "{bad}");
        }
        let mut s = spec("t");
        s.cwd = Some("relative".into());
        assert_eq!(s.validate().map_err(|e| e.0), Err("cwd"));
        let mut s = spec("t");
        s.backoff_initial_ms = Some(5000);
        s.backoff_max_ms = Some(1000);
        assert!(s.validate().is_err());
        assert!(serde_json::from_value::<ServerSpec>(
            serde_json::json!({"id": "a", "command": "x", "bogus": 1})
        )
        .is_err());
    }
}
