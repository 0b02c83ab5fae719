//! What `/mcp` offers, aggregated from every active server: its tools renamed
//! `SERVER<separator>TOOL`, plus the daemon's own tools under `vsm<separator>`; its prompts
//! renamed `SERVER<separator>PROMPT` the same way; its resources and resource templates under
//! their own URIs, routed back to their server by a URI table (see [`Catalog::route`]).
//!
//! Invariants: names are unique and the listing is in name order, so two builds from the
//! same servers give the same list (clients and their caches see no reshuffles); a tool is
//! passed on as the server described it (annotations, icons, `outputSchema`, `title`, any
//! field we do not know) with only its `name` changed; when two (server, tool) pairs would
//! get the same name the daemon's own tools win, then the pair that sorts first, and the
//! loser is left out and logged, never picked at random. Prompts follow the tools' rules.
//! Resources keep the server's URI (so a `resource_link` a tool returns can be read as it
//! is): a URI two servers list goes to the server whose id sorts first, a template two
//! servers list likewise; a URI in no list goes to the first server (by id) one of whose
//! templates matches it.

use serde_json::{json, Value};
use std::collections::BTreeMap;

/// What a gateway tool name stands for.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A tool of a supervised server.
    Server {
        /// The server id (shared with the calls in flight to it).
        server: std::rc::Rc<str>,
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

/// A resource or resource template and the server it came from.
#[derive(Debug, Clone, PartialEq)]
struct Resource {
    server: String,
    item: Value,
}

/// A resource template, its server and the URI pattern it stands for.
#[derive(Debug, Clone, PartialEq)]
struct Template {
    server: String,
    item: Value,
    pattern: Vec<Part>,
}

/// What one server offers besides tools (as its lists say), for [`Catalog::with_offers`].
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    /// The server id.
    pub server: &'a str,
    /// `resources/list` entries.
    pub resources: &'a [Value],
    /// `resources/templates/list` entries.
    pub resource_templates: &'a [Value],
    /// `prompts/list` entries.
    pub prompts: &'a [Value],
}

/// The aggregated tools, by gateway name, and prompts and resources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    tools: BTreeMap<String, Entry>,
    prompts: BTreeMap<String, Entry>,
    resources: BTreeMap<String, Resource>,
    /// In (server, uriTemplate) order, which is the order routing tries them.
    templates: Vec<Template>,
    /// Tools the capability policy keeps off the list, by the name they would have had
    /// (where no listed tool has it): (server, tool, blocked capabilities).
    blocked: BTreeMap<String, (String, String, Vec<String>)>,
}

/// The description of one of the daemon's own tools (`None` for a name we do not have):
/// title, description, input schema, annotations.
fn daemon_tool(name: &str) -> Option<(&'static str, &'static str, Value, Value)> {
    let no_input = || json!({"type": "object", "properties": {}, "additionalProperties": false});
    let read_only = || json!({"readOnlyHint": true, "openWorldHint": false});
    match name {
        "status" => Some((
            "Daemon status",
            "The vsm-daemon's status: version, uptime, components and MCP server counts.",
            no_input(),
            read_only(),
        )),
        "list_servers" => Some((
            "List MCP servers",
            "The MCP servers the daemon supervises, each with its status, restarts and tool count.",
            no_input(),
            read_only(),
        )),
        "variety" => Some((
            "Variety analysis",
            "The daemon's last variety analysis: the ratio of capabilities provided to those required, each capability with its providers, the gaps (most severe first, each saying what would close it), threats and opportunities.",
            no_input(),
            read_only(),
        )),
        "acquire" => Some((
            "Require a capability",
            "Records a capability the daemon must provide (kept across restarts), exactly as POST /api/v1/capabilities/acquire does: answers with the gap it opens, or that it is provided or required already. Acquiring a server for the gap is then the acquisition pipeline's, under the daemon's policy.",
            json!({
                "type": "object",
                "required": ["capability_type"],
                "properties": {
                    "capability_type": {"type": "string", "minLength": 1, "maxLength": 64,
                        "description": "The capability, e.g. `memory` or `web_search`"},
                    "priority": {"type": "string", "enum": ["low", "medium", "high", "critical"],
                        "default": "medium", "description": "The severity of the gap it opens"},
                },
                "additionalProperties": false,
            }),
            // It changes state (a recorded requirement), adds and never removes, and asking
            // twice changes nothing more.
            json!({"readOnlyHint": false, "destructiveHint": false, "idempotentHint": true,
                   "openWorldHint": false}),
        )),
        "discover" => Some((
            "Discover MCP servers",
            "Finds MCP servers that could be installed, exactly as GET /api/v1/mcp/discover does: the enabled discovery sources (mcp_servers.discovery_sources) asked at once, candidates deduplicated, filtered and ranked, each source's outcome reported. Installs nothing.",
            json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "maxLength": 200,
                        "description": "Words or capability names to look for; empty: everything the sources list"},
                    "source": {"type": "string", "enum": ["catalog", "registry", "npm", "github"],
                        "description": "Only this source (it must be enabled); default every enabled one"},
                },
                "additionalProperties": false,
            }),
            // It changes nothing but a cache; the sources may be registries outside the host.
            json!({"readOnlyHint": true, "openWorldHint": true}),
        )),
        _ => None,
    }
}

/// Whether `name` is one of the daemon's own tools (allowed by configuration or not).
pub fn is_daemon_tool(name: &str) -> bool {
    daemon_tool(name).is_some()
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
            let Some((title, description, input, annotations)) = daemon_tool(name) else {
                continue;
            };
            let full = format!("vsm{separator}{name}");
            let tool = json!({
                "name": full,
                "title": title,
                "description": description,
                "inputSchema": input,
                "annotations": annotations,
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
                        server: server.into(),
                        tool: name.to_string(),
                    },
                    tool: renamed,
                },
            );
        }
        Catalog {
            tools,
            ..Catalog::default()
        }
    }

    /// Adds the tools the capability policy blocks, as (server, tool, capabilities), so that a
    /// call of one is refused as blocked: each under the name it would have had, resolved as
    /// the listed tools' names are, unless a listed tool has that name (that one is called).
    pub fn with_blocked<'a>(
        mut self,
        blocked: impl IntoIterator<Item = (&'a str, &'a str, &'a [String])>,
        separator: &str,
    ) -> Catalog {
        let mut blocked: Vec<(&str, &str, &[String])> = blocked.into_iter().collect();
        blocked.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (server, tool, capabilities) in blocked {
            let full = format!("{server}{separator}{tool}");
            if self.tools.contains_key(&full) || self.blocked.contains_key(&full) {
                continue;
            }
            let entry = (server.to_string(), tool.to_string(), capabilities.to_vec());
            self.blocked.insert(full, entry);
        }
        self
    }

    /// The blocked tool of that gateway name: (server, tool, capabilities).
    pub fn blocked(&self, name: &str) -> Option<&(String, String, Vec<String>)> {
        self.blocked.get(name)
    }

    /// Adds the prompts, resources and resource templates of the active servers (any
    /// order: they are taken in server id order).
    pub fn with_offers<'a>(
        mut self,
        offers: impl IntoIterator<Item = Offer<'a>>,
        separator: &str,
    ) -> Catalog {
        let mut offers: Vec<Offer<'a>> = offers.into_iter().collect();
        offers.sort_by(|a, b| a.server.cmp(b.server));
        let mut prompts: Vec<(&str, &Value)> = offers
            .iter()
            .flat_map(|o| o.prompts.iter().map(move |p| (o.server, p)))
            .collect();
        prompts.sort_by(|a, b| (a.0, a.1["name"].as_str()).cmp(&(b.0, b.1["name"].as_str())));
        for (server, prompt) in prompts {
            let Some(name) = prompt["name"].as_str() else {
                continue;
            };
            let full = format!("{server}{separator}{name}");
            if self.prompts.contains_key(&full) {
                log::warn!(
                    "/mcp: prompt '{name}' of server '{server}' is left out: its name {full} is taken"
                );
                continue;
            }
            let mut renamed = prompt.clone();
            renamed["name"] = Value::String(full.clone());
            let target = Target::Server {
                server: server.into(),
                tool: name.to_string(),
            };
            let entry = Entry {
                target,
                tool: renamed,
            };
            self.prompts.insert(full, entry);
        }
        // Templates taken so far (a set: a linear scan per template would be quadratic).
        let mut taken = std::collections::BTreeSet::new();
        for o in &offers {
            for r in o.resources {
                let Some(uri) = r["uri"].as_str() else {
                    continue;
                };
                if let Some(first) = self.resources.get(uri) {
                    log::warn!(
                        "/mcp: resource {uri} of server '{}' is left out: server '{}' lists it too",
                        o.server,
                        first.server
                    );
                    continue;
                }
                let resource = Resource {
                    server: o.server.to_string(),
                    item: r.clone(),
                };
                self.resources.insert(uri.to_string(), resource);
            }
            let mut templates: Vec<&Value> = o.resource_templates.iter().collect();
            templates.sort_by(|a, b| a["uriTemplate"].as_str().cmp(&b["uriTemplate"].as_str()));
            for t in templates {
                let Some(template) = t["uriTemplate"].as_str() else {
                    continue;
                };
                if !taken.insert(template) {
                    log::warn!(
                        "/mcp: resource template {template} of server '{}' is left out: another server lists it too",
                        o.server
                    );
                    continue;
                }
                self.templates.push(Template {
                    server: o.server.to_string(),
                    item: t.clone(),
                    pattern: pattern(template),
                });
            }
        }
        self
    }

    /// The tools as `tools/list` answers them, in name order.
    pub fn listing(&self) -> Vec<Value> {
        self.tools.values().map(|e| e.tool.clone()).collect()
    }

    /// The tool of that gateway name.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.tools.get(name)
    }

    /// The prompts as `prompts/list` answers them, in name order.
    pub fn prompt_listing(&self) -> Vec<Value> {
        self.prompts.values().map(|e| e.tool.clone()).collect()
    }

    /// The prompt of that gateway name.
    pub fn prompt(&self, name: &str) -> Option<&Entry> {
        self.prompts.get(name)
    }

    /// The resources as `resources/list` answers them, in URI order.
    pub fn resource_listing(&self) -> Vec<Value> {
        self.resources.values().map(|r| r.item.clone()).collect()
    }

    /// The resource templates as `resources/templates/list` answers them, in (server,
    /// template) order.
    pub fn template_listing(&self) -> Vec<Value> {
        self.templates.iter().map(|t| t.item.clone()).collect()
    }

    /// The server a resource URI is read from: the one that lists it, else the first (by
    /// id) with a template that matches it. Work linear in the URI's length per template.
    pub fn route(&self, uri: &str) -> Option<&str> {
        if let Some(r) = self.resources.get(uri) {
            return Some(&r.server);
        }
        self.templates
            .iter()
            .find(|t| matches(&t.pattern, uri))
            .map(|t| t.server.as_str())
    }

    /// The server whose resource template this is (`uriTemplate` exactly as listed).
    pub fn template_server(&self, uri_template: &str) -> Option<&str> {
        self.templates
            .iter()
            .find(|t| t.item["uriTemplate"].as_str() == Some(uri_template))
            .map(|t| t.server.as_str())
    }

    /// Whether the tools of the two catalogs are the same.
    pub fn same_tools(&self, other: &Catalog) -> bool {
        self.tools == other.tools
    }

    /// Whether the resources and resource templates of the two catalogs are the same.
    pub fn same_resources(&self, other: &Catalog) -> bool {
        self.resources == other.resources && self.templates == other.templates
    }

    /// Whether the prompts of the two catalogs are the same.
    pub fn same_prompts(&self, other: &Catalog) -> bool {
        self.prompts == other.prompts
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

/// A piece of a URI template (RFC 6570): text to match as it is, or an expression.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    /// An expression; `any` when its expansion may hold `/`, `?`, `#`, `&`, `=`, `;`, `.`
    /// (the operators `+ # / ? & ; .`), otherwise (simple `{var}`, percent-encoded) not `/`,
    /// `?` or `#`.
    Expression {
        any: bool,
    },
}

/// The parts of a URI template; an unclosed `{` is text.
fn pattern(template: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(len) = rest[open..].find('}') else {
            break;
        };
        if open > 0 {
            parts.push(Part::Literal(rest[..open].to_string()));
        }
        let any = rest[open + 1..]
            .chars()
            .next()
            .is_some_and(|c| "+#/?&;.".contains(c));
        parts.push(Part::Expression { any });
        rest = &rest[open + len + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest.to_string()));
    }
    parts
}

/// Whether `uri` is an expansion of the template `parts`: the positions reachable after
/// each part, one sweep per part (O(parts × length), no backtracking).
fn matches(parts: &[Part], uri: &str) -> bool {
    // Most templates start with a scheme and a path and many end with text: a URI without
    // them is refused before the sweep, so routing among many templates stays cheap.
    if let Some(Part::Literal(first)) = parts.first() {
        if !uri.starts_with(first.as_str()) {
            return false;
        }
    }
    if let Some(Part::Literal(last)) = parts.last() {
        if !uri.ends_with(last.as_str()) {
            return false;
        }
    }
    let bytes = uri.as_bytes();
    let mut at = vec![false; bytes.len() + 1];
    at[0] = true;
    for part in parts {
        let mut next = vec![false; bytes.len() + 1];
        match part {
            Part::Literal(text) => {
                for (i, reached) in at.iter().enumerate() {
                    if *reached && bytes[i..].starts_with(text.as_bytes()) {
                        next[i + text.len()] = true;
                    }
                }
            }
            Part::Expression { any } => {
                let mut open = false;
                for i in 0..=bytes.len() {
                    open |= at[i];
                    next[i] = open;
                    if i < bytes.len() && !any && matches!(bytes[i], b'/' | b'?' | b'#') {
                        open = false;
                    }
                }
            }
        }
        at = next;
    }
    at[bytes.len()]
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

    #[test]
    fn prompts_are_prefixed_and_resources_keep_their_uris_with_one_owner() {
        let a_prompts = [json!({"name": "greet", "arguments": [{"name": "who"}]})];
        let b_prompts = [json!({"name": "greet"}), json!({"name": "b-c"})];
        let a_res = [
            json!({"uri": "file:///shared", "name": "a's"}),
            json!({"uri": "demo://a/1", "name": "one"}),
        ];
        let b_res = [json!({"uri": "file:///shared", "name": "b's"})];
        let a_tpl = [json!({"uriTemplate": "demo://item/{id}", "name": "items"})];
        let b_tpl = [
            json!({"uriTemplate": "demo://item/{id}", "name": "b items"}),
            json!({"uriTemplate": "docs://{+path}", "name": "docs"}),
        ];
        let offer = |server, resources, resource_templates, prompts| Offer {
            server,
            resources,
            resource_templates,
            prompts,
        };
        let offers = [
            offer("b", &b_res[..], &b_tpl[..], &b_prompts[..]),
            offer("a", &a_res[..], &a_tpl[..], &a_prompts[..]),
        ];
        for order in [[0, 1], [1, 0]] {
            let c = Catalog::build([], "__", &[]).with_offers(order.map(|i| offers[i]), "__");
            let prompts: Vec<Value> = c
                .prompt_listing()
                .iter()
                .map(|p| p["name"].clone())
                .collect();
            assert_eq!(
                prompts,
                [json!("a__greet"), json!("b__b-c"), json!("b__greet")]
            );
            assert_eq!(c.prompt_listing()[0]["arguments"][0]["name"], "who");
            assert_eq!(
                c.prompt("b__greet").map(|e| &e.target),
                Some(&Target::Server {
                    server: "b".into(),
                    tool: "greet".into()
                })
            );
            let uris: Vec<Value> = c
                .resource_listing()
                .iter()
                .map(|r| r["uri"].clone())
                .collect();
            assert_eq!(uris, [json!("demo://a/1"), json!("file:///shared")]);
            assert_eq!(
                c.resource_listing()[1]["name"],
                "a's",
                "the first server by id wins"
            );
            let templates: Vec<Value> = c
                .template_listing()
                .iter()
                .map(|t| t["name"].clone())
                .collect();
            assert_eq!(templates, [json!("items"), json!("docs")]);
            assert_eq!(c.route("file:///shared"), Some("a"));
            assert_eq!(c.route("demo://item/42"), Some("a"));
            assert_eq!(c.route("docs://guide/intro.md"), Some("b"));
            assert_eq!(c.route("demo://item/4/2"), None, "{{id}} holds no slash");
            assert_eq!(c.route("demo://other"), None);
        }
    }

    #[test]
    fn uri_templates_match_their_expansions_only() {
        let m = |t: &str, uri: &str| matches(&pattern(t), uri);
        assert!(m(
            "demo://resource/dynamic/text/{resourceId}",
            "demo://resource/dynamic/text/7"
        ));
        assert!(!m(
            "demo://resource/dynamic/text/{resourceId}",
            "demo://resource/dynamic/blob/7"
        ));
        assert!(m("x://{a}/{b}", "x://1/2"));
        assert!(!m("x://{a}/{b}", "x://1/2/3"));
        assert!(m("x://{+rest}", "x://1/2/3"));
        assert!(m("x://{a}{?q,r}", "x://1?q=2&r=3"));
        assert!(m("plain://text", "plain://text"));
        assert!(!m("plain://text", "plain://text2"));
        assert!(m("odd://{unclosed", "odd://{unclosed"));
        // Long inputs stay linear: no backtracking blow-up.
        let t = "x://{a}{b}{c}{d}{e}{f}{g}{h}!";
        let uri = format!("x://{}", "y".repeat(10_000));
        assert!(!m(t, &uri));
    }

    #[test]
    fn a_blocked_tool_never_shadows_a_listed_one() {
        // "a-b" + "-" + "c" (blocked) and "a" + "-" + "b-c" (listed) are both "a-b-c".
        let listed = [json!({"name": "b-c"})];
        let system = ["system".to_string()];
        let c = Catalog::build([("a", &listed[..])], "-", &[])
            .with_blocked([("a-b", "c", &system[..]), ("z", "run", &system[..])], "-");
        assert_eq!(names(&c), ["a-b-c"], "blocked tools are not listed");
        assert!(
            c.blocked("a-b-c").is_none(),
            "the listed tool keeps its name"
        );
        assert_eq!(
            c.blocked("z-run"),
            Some(&("z".to_string(), "run".to_string(), system.to_vec()))
        );
    }
}
