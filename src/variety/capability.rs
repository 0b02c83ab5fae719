//! Which capabilities a server provides: those its spec declares, plus those its tools show by
//! keyword rules (built-in ones, extended by `[[variety.rules]]`).
//!
//! A keyword is a sequence of words (`read_file`, `knowledge graph`, `timezone`); it matches a
//! tool when the same words appear in a row among the words of the tool's name (split at
//! `_`, `-`, `.`, `/`, spaces and lower-to-upper case changes) or of its description, compared
//! without case. Whole words only, so `time` does not match `timeout`. Deterministic: the same
//! tools and rules give the same capabilities in the same (sorted) order, each with the first
//! reason found, so an operator can see why a server counts as a provider (or as a threat).
//!
//! Cost: linear in the bytes of the names and descriptions times the number of rules; the MCP
//! room bounds the tools it keeps, and the configuration bounds the rules.

use std::collections::BTreeMap;

/// A keyword rule: tools matching any keyword provide `capability`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The capability, e.g. `time`.
    pub capability: String,
    /// Keywords, each one or more words.
    pub keywords: Vec<String>,
}

/// The built-in rules. Keywords are chosen to be specific: a false match would make a tool
/// count as a provider, or fall under a blocked capability and be refused.
pub fn builtin() -> Vec<Rule> {
    const RULES: &[(&str, &[&str])] = &[
        (
            "file_system",
            &[
                "read_file",
                "write_file",
                "edit_file",
                "move_file",
                "list_directory",
                "create_directory",
                "directory_tree",
                "filesystem",
                "file system",
            ],
        ),
        (
            "web",
            &["fetch", "http_get", "http request", "web page", "browse"],
        ),
        ("network", &["fetch", "http_get", "http request", "dns"]),
        (
            "system",
            &[
                "run_command",
                "start_process",
                "exec",
                "shell command",
                "execute command",
            ],
        ),
        ("time", &["current_time", "convert_time", "timezone"]),
        ("memory", &["knowledge graph", "create_entities", "memory"]),
        ("database", &["sql", "database"]),
    ];
    RULES
        .iter()
        .map(|(capability, keywords)| Rule {
            capability: (*capability).to_string(),
            keywords: keywords.iter().map(|k| (*k).to_string()).collect(),
        })
        .collect()
}

/// Why a server provides a capability.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Reason {
    /// Its spec declares it.
    Declared,
    /// One of its tools matched a keyword.
    Tool {
        /// The tool.
        tool: String,
        /// The keyword that matched.
        keyword: String,
    },
}

/// A tool as the mapping sees it.
#[derive(Debug, Clone, Copy)]
pub struct ToolText<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its description (may be empty).
    pub description: &'a str,
}

/// Rules with their keywords split into words once: mapping many tools (every server's, on
/// every change) then costs the tools' words only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Compiled {
    rules: Vec<(String, Vec<Keyword>)>,
}

/// A keyword as written and as words.
type Keyword = (String, Vec<String>);

impl Compiled {
    /// `rules` compiled.
    pub fn new(rules: &[Rule]) -> Compiled {
        Compiled {
            rules: rules
                .iter()
                .map(|r| {
                    let keywords = r.keywords.iter().map(|k| (k.clone(), words(k))).collect();
                    (r.capability.clone(), keywords)
                })
                .collect(),
        }
    }
}

/// The capabilities a server provides, sorted, each with its first reason: declared ones
/// first, then what its tools show under `rules` (in tool order, then rule order).
pub fn map<'a>(
    declared: &[String],
    tools: impl IntoIterator<Item = ToolText<'a>>,
    rules: &[Rule],
) -> BTreeMap<String, Reason> {
    map_compiled(declared, tools, &Compiled::new(rules))
}

/// [`map`] with the rules compiled once.
pub fn map_compiled<'a>(
    declared: &[String],
    tools: impl IntoIterator<Item = ToolText<'a>>,
    rules: &Compiled,
) -> BTreeMap<String, Reason> {
    let mut out = BTreeMap::new();
    for capability in declared {
        out.entry(capability.clone()).or_insert(Reason::Declared);
    }
    for tool in tools {
        let name = words(tool.name);
        let description = words(tool.description);
        for (capability, keywords) in &rules.rules {
            if out.contains_key(capability) {
                continue;
            }
            let hit = keywords.iter().find(|(_, kw)| {
                !kw.is_empty() && (contains_run(&name, kw) || contains_run(&description, kw))
            });
            if let Some((keyword, _)) = hit {
                out.insert(
                    capability.clone(),
                    Reason::Tool {
                        tool: tool.name.to_string(),
                        keyword: keyword.clone(),
                    },
                );
            }
        }
    }
    out
}

/// The capabilities one tool shows under `rules`, sorted and without repeats (for the
/// per-tool policy check: a tool under a blocked capability cannot be called).
pub fn of_tool(tool: ToolText<'_>, rules: &[Rule]) -> Vec<String> {
    of_tool_compiled(tool, &Compiled::new(rules))
}

/// [`of_tool`] with the rules compiled once.
pub fn of_tool_compiled(tool: ToolText<'_>, rules: &Compiled) -> Vec<String> {
    map_compiled(&[], [tool], rules).into_keys().collect()
}

/// Lower-case words of `text`: split at anything not alphanumeric and where a lower-case
/// letter or digit is followed by an upper-case one (`readFile` → `read`, `file`).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in text.chars() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        prev_lower = c.is_lowercase() || c.is_numeric();
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Whether `run` appears as consecutive items of `hay`.
fn contains_run(hay: &[String], run: &[String]) -> bool {
    run.len() <= hay.len() && hay.windows(run.len()).any(|w| w == run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool<'a>(name: &'a str, description: &'a str) -> ToolText<'a> {
        ToolText { name, description }
    }

    #[test]
    fn words_split_names_and_prose() {
        assert_eq!(words("read_file"), ["read", "file"]);
        assert_eq!(words("readFile"), ["read", "file"]);
        assert_eq!(words("HTTPGet"), ["httpget"]);
        assert_eq!(
            words("get-current.time/now"),
            ["get", "current", "time", "now"]
        );
        assert_eq!(
            words("Get the current time, in a Timezone."),
            ["get", "the", "current", "time", "in", "a", "timezone"]
        );
        assert!(words("").is_empty());
        assert!(words("__--").is_empty());
    }

    #[test]
    fn builtin_rules_map_the_reference_servers() {
        let rules = builtin();
        let fs = map(
            &[],
            [
                tool("read_text_file", "Read a file as text"),
                tool("write_file", "Create or overwrite a file"),
                tool("list_directory", "List a directory"),
            ],
            &rules,
        );
        assert_eq!(fs.keys().collect::<Vec<_>>(), ["file_system"]);
        assert_eq!(
            fs["file_system"],
            Reason::Tool {
                tool: "write_file".into(),
                keyword: "write_file".into()
            }
        );

        let time = map(
            &[],
            [tool(
                "get_current_time",
                "Get current time in a specific timezones",
            )],
            &rules,
        );
        assert_eq!(time.keys().collect::<Vec<_>>(), ["time"]);

        let memory = map(
            &[],
            [tool(
                "create_entities",
                "Create multiple new entities in the knowledge graph",
            )],
            &rules,
        );
        assert_eq!(memory.keys().collect::<Vec<_>>(), ["memory"]);

        let fetch = map(&[], [tool("fetch", "Fetches a URL")], &rules);
        assert_eq!(fetch.keys().collect::<Vec<_>>(), ["network", "web"]);

        let exec = map(&[], [tool("run_command", "")], &rules);
        assert_eq!(exec.keys().collect::<Vec<_>>(), ["system"]);
    }

    #[test]
    fn whole_words_only() {
        let rules = builtin();
        // `exec` is not `execution_time`'s first word run; `time` rules need `current time`.
        let none = map(
            &[],
            [tool("timeout_settings", "Set the execution timeout")],
            &rules,
        );
        assert!(none.is_empty(), "{none:?}");
        assert!(of_tool(tool("prefetch", "prefetches"), &rules).is_empty());
    }

    #[test]
    fn declared_first_then_config_rules() {
        let mut rules = builtin();
        rules.push(Rule {
            capability: "weather".into(),
            keywords: vec!["forecast".into(), "".into()],
        });
        let m = map(
            &["memory".to_string()],
            [
                tool("get_forecast", "Weather forecast"),
                tool("create_entities", ""),
            ],
            &rules,
        );
        assert_eq!(m.keys().collect::<Vec<_>>(), ["memory", "weather"]);
        assert_eq!(m["memory"], Reason::Declared);
        // An empty keyword matches nothing.
        assert!(map(&[], [tool("x", "y")], &rules[rules.len() - 1..]).is_empty());
    }

    #[test]
    fn of_tool_is_sorted_and_deterministic() {
        let rules = builtin();
        let t = tool("http_get", "Fetch a web page over HTTP");
        assert_eq!(of_tool(t, &rules), ["network", "web"]);
        assert_eq!(of_tool(t, &rules), of_tool(t, &rules));
    }
}
