//! The aggregated tool list `/mcp` offers: every active server's tools renamed
//! `SERVER<separator>TOOL`, plus the daemon's own tools under `vsm<separator>`.
//!
//! Invariants: names are unique and the listing is in name order, so two builds from the
//! same servers give the same list (clients and their caches see no reshuffles); a tool is
//! passed on as the server described it (annotations, icons, `outputSchema`, `title`, any
//! field we do not know) with only its `name` changed; when two (server, tool) pairs would
//! get the same name the daemon's own tools win, then the pair that sorts first, and the
//! loser is left out and logged, never picked at random.

use serde_json::{json, Value};
use std::collections::BTreeMap;

/// What a gateway tool name stands for.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A tool of a supervised server.
    Server {
        /// The server id.
        server: String,
        /// The tool's own name on that server.
        tool: String,
    },
    /// One of the daemon's own tools (a name from `config::GATEWAY_DAEMON_TOOLS`).
    Daemon(String),
}

/// One tool as `/mcp` offers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Where a call goes.
    pub target: Target,
    /// The tool description with the gateway name.
    pub tool: Value,
}

/// The aggregated tools, by gateway name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    tools: BTreeMap<String, Entry>,
}

/// The description of one of the daemon's own tools (`None` for a name we do not have).
fn daemon_tool(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "status" => Some((
            "Daemon status",
            "The vsm-daemon's status: version, uptime, components and MCP server counts.",
        )),
        "list_servers" => Some((
            "List MCP servers",
            "The MCP servers the daemon supervises, each with its status, restarts and tool count.",
        )),
        _ => None,
    }
}

impl Catalog {
    /// Builds the catalog from the active servers' tool lists (`(server id, tools)`), the
    /// separator and the daemon tools allowed by configuration.
    pub fn build<'a>(
        servers: impl IntoIterator<Item = (&'a str, &'a [Value])>,
        separator: &str,
        daemon_tools: &[String],
    ) -> Catalog {
        let mut tools = BTreeMap::new();
        for name in daemon_tools {
            let Some((title, description)) = daemon_tool(name) else {
                continue;
            };
            let full = format!("vsm{separator}{name}");
            let tool = json!({
                "name": full,
                "title": title,
                "description": description,
                "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false},
                "annotations": {"readOnlyHint": true, "openWorldHint": false},
            });
            tools.insert(
                full,
                Entry {
                    target: Target::Daemon(name.clone()),
                    tool,
                },
            );
        }
        let mut pairs: Vec<(&str, &Value)> = servers
            .into_iter()
            .flat_map(|(id, list)| list.iter().map(move |t| (id, t)))
            .collect();
        pairs.sort_by(|a, b| (a.0, a.1["name"].as_str()).cmp(&(b.0, b.1["name"].as_str())));
        for (server, tool) in pairs {
            // The MCP room keeps only tools with a string name; one without is skipped.
            let Some(name) = tool["name"].as_str() else {
                continue;
            };
            let full = format!("{server}{separator}{name}");
            if let Some(winner) = tools.get(&full) {
                log::warn!(
                    "/mcp: tool '{name}' of server '{server}' is left out: its name {full} is taken by {:?}",
                    winner.target
                );
                continue;
            }
            let mut renamed = tool.clone();
            renamed["name"] = Value::String(full.clone());
            tools.insert(
                full,
                Entry {
                    target: Target::Server {
                        server: server.to_string(),
                        tool: name.to_string(),
                    },
                    tool: renamed,
                },
            );
        }
        Catalog { tools }
    }

    /// The tools as `tools/list` answers them, in name order.
    pub fn listing(&self) -> Vec<Value> {
        self.tools.values().map(|e| e.tool.clone()).collect()
    }

    /// The tool of that gateway name.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.tools.get(name)
    }

    /// How many tools.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(c: &Catalog) -> Vec<String> {
        c.listing()
            .iter()
            .map(|t| t["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn names_are_prefixed_sorted_and_fields_pass_through() {
        let b = vec![
            json!({"name": "zeta", "inputSchema": {"type": "object"}}),
            json!({"name": "echo", "annotations": {"readOnlyHint": true},
                   "icons": [{"src": "data:x"}], "outputSchema": {"type": "object"}, "x-more": 1}),
        ];
        let a = vec![json!({"name": "echo"})];
        let c = Catalog::build(
            [("b", b.as_slice()), ("a", a.as_slice())],
            "__",
            &["status".to_string()],
        );
        assert_eq!(names(&c), ["a__echo", "b__echo", "b__zeta", "vsm__status"]);
        let echo = &c.get("b__echo").expect("listed").tool;
        assert_eq!(echo["annotations"]["readOnlyHint"], true);
        assert_eq!(echo["icons"][0]["src"], "data:x");
        assert_eq!(echo["outputSchema"]["type"], "object");
        assert_eq!(echo["x-more"], 1);
        assert_eq!(
            c.get("b__echo").map(|e| &e.target),
            Some(&Target::Server {
                server: "b".into(),
                tool: "echo".into()
            })
        );
    }

    #[test]
    fn collisions_have_one_deterministic_winner() {
        // "a-b" + "-" + "c" and "a" + "-" + "b-c" are both "a-b-c".
        let one = vec![json!({"name": "c"})];
        let two = vec![json!({"name": "b-c"})];
        let vsm = vec![json!({"name": "status"})];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let all = [
                ("a-b", one.as_slice()),
                ("a", two.as_slice()),
                ("vsm", vsm.as_slice()),
            ];
            let c = Catalog::build(order.iter().map(|&i| all[i]), "-", &["status".to_string()]);
            assert_eq!(names(&c), ["a-b-c", "vsm-status"]);
            assert_eq!(
                c.get("a-b-c").map(|e| &e.target),
                Some(&Target::Server {
                    server: "a".into(),
                    tool: "b-c".into()
                })
            );
            assert_eq!(
                c.get("vsm-status").map(|e| &e.target),
                Some(&Target::Daemon("status".into()))
            );
        }
    }

    #[test]
    fn daemon_tools_follow_the_allowed_list() {
        let c = Catalog::build([], ".", &["list_servers".to_string(), "nope".to_string()]);
        assert_eq!(names(&c), ["vsm.list_servers"]);
    }
}
