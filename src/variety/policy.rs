//! The capability policy: `security.blocked_capabilities` refuses, `allowed_capabilities` scores,
//! and a server's own `allow_capabilities` lifts a block for that server only. Pure, so the
//! MCP room (registration and tool calls), the gateway (which tools `/mcp` lists) and the
//! variety room (threats) all judge a server and a tool the same way.
//!
//! A declared capability in the blocked list refuses the registration; a tool whose mapped
//! capabilities ([`super::capability::of_tool`] under the built-in and configured rules) hit the
//! blocked list cannot be called and is not offered. Cost per tool: linear in its name and
//! description times the rules.

use super::capability::{self, Rule, ToolText};
use serde_json::Value;

/// What the policy needs of the configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    /// `security.blocked_capabilities`.
    pub blocked: Vec<String>,
    /// `security.allowed_capabilities`.
    pub allowed: Vec<String>,
    /// The built-in keyword rules and `[[variety.rules]]`.
    pub rules: Vec<Rule>,
}

impl Policy {
    /// The policy `config` sets.
    pub fn new(config: &crate::config::Config) -> Policy {
        Policy {
            blocked: config.security.blocked_capabilities.clone(),
            allowed: config.security.allowed_capabilities.clone(),
            rules: super::required::rules(&config.variety.rules),
        }
    }

    /// The capabilities among `capabilities` that are blocked and not in `allow`, in order.
    pub fn refused<'a>(
        &self,
        capabilities: impl IntoIterator<Item = &'a str>,
        allow: &[String],
    ) -> Vec<&'a str> {
        capabilities
            .into_iter()
            .filter(|c| self.blocked.iter().any(|b| b == c) && !allow.iter().any(|a| a == c))
            .collect()
    }

    /// The blocked capabilities (not lifted by `allow`) that `tool` maps to, sorted.
    pub fn tool_refused(&self, tool: ToolText<'_>, allow: &[String]) -> Vec<String> {
        if self.blocked.is_empty() {
            return Vec::new();
        }
        capability::of_tool(tool, &self.rules)
            .into_iter()
            .filter(|c| self.blocked.contains(c) && !allow.contains(c))
            .collect()
    }

    /// Whether `capability` is in `security.allowed_capabilities`.
    pub fn is_allowed(&self, capability: &str) -> bool {
        self.allowed.iter().any(|a| a == capability)
    }
}

/// A tool's name and description as the MCP room keeps it (its `tools/list` entry); a tool
/// without a string name has an empty one.
pub fn tool_text(tool: &Value) -> ToolText<'_> {
    ToolText {
        name: tool["name"].as_str().unwrap_or_default(),
        description: tool["description"].as_str().unwrap_or_default(),
    }
}

/// The refusal of a registration whose declared capabilities are blocked, for people.
pub fn declared_refusal(id: &str, refused: &[&str]) -> String {
    format!(
        "MCP server '{id}' declares {} in security.blocked_capabilities; add it to the spec's allow_capabilities to run it anyway",
        quoted(refused)
    )
}

/// `'a', 'b'` (at most eight named).
pub fn quoted(names: &[&str]) -> String {
    const NAMED: usize = 8;
    let mut text: Vec<String> = names.iter().take(NAMED).map(|n| format!("'{n}'")).collect();
    if names.len() > NAMED {
        text.push(format!("{} more", names.len() - NAMED));
    }
    text.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Policy {
        Policy::new(&crate::config::Config::default())
    }

    #[test]
    fn declared_capabilities_are_refused_unless_the_spec_allows_them() {
        let p = policy();
        let declared = ["time".to_string(), "system".into(), "file_system".into()];
        let refused = p.refused(declared.iter().map(String::as_str), &[]);
        assert_eq!(refused, ["system", "file_system"]);
        let allow = ["system".to_string()];
        assert_eq!(
            p.refused(declared.iter().map(String::as_str), &allow),
            ["file_system"]
        );
        assert!(declared_refusal("x", &refused).contains("'system', 'file_system'"));
    }

    #[test]
    fn tools_under_a_blocked_capability_are_named() {
        let p = policy();
        let run = json!({"name": "run_command", "description": "Run a shell command"});
        assert_eq!(p.tool_refused(tool_text(&run), &[]), ["system"]);
        assert!(p
            .tool_refused(tool_text(&run), &["system".to_string()])
            .is_empty());
        let time = json!({"name": "get_current_time", "description": "Current time"});
        assert!(p.tool_refused(tool_text(&time), &[]).is_empty());
        // No blocked list, nothing refused (and nothing mapped).
        let open = Policy {
            blocked: Vec::new(),
            ..policy()
        };
        assert!(open.tool_refused(tool_text(&run), &[]).is_empty());
        assert!(p.is_allowed("web") && !p.is_allowed("system"));
    }
}
