//! The variety analysis (DESIGN.md §9), pure: what is required against what the servers
//! provide, as one [`Analysis`].
//!
//! - **Ratio**: the weight of the required capabilities that have at least one *active*
//!   provider over the total required weight; 1.0 when nothing is required.
//! - **Gaps**: required capabilities without an active provider, each saying what would close
//!   it (start or reset a registered server that provides it, else acquire one).
//! - **Threats**: capabilities with a single active provider, providers whose circuit breaker is
//!   open, and tools under a blocked capability that their server's spec does not allow.
//! - **Opportunities**: what discovery offers (a typed hook: empty until discovery feeds it).
//! - **Allowed share**: of the capabilities active servers provide, the share listed in
//!   `security.allowed_capabilities` (how `allowed_capabilities` scores).
//!
//! Deterministic: capabilities by name, providers by server id, gaps by severity (critical
//! first) then name, threats by kind, capability, server and tool. Linear in servers ×
//! capabilities plus requirements.

use super::capability::Reason;
use super::required::Severity;
use serde::Serialize;
use std::collections::BTreeMap;

/// One server as the analysis sees it (its capabilities already mapped).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerFacts {
    /// Its id.
    pub id: String,
    /// Its status.
    pub status: &'static str,
    /// Whether it serves tool calls (active or degraded).
    pub active: bool,
    /// Whether its circuit breaker is open.
    pub breaker_open: bool,
    /// What it provides and why (declared, or which tool and keyword).
    pub capabilities: BTreeMap<String, Reason>,
    /// Its tools under a blocked capability its spec does not allow: (tool, capabilities).
    pub blocked_tools: Vec<(String, Vec<String>)>,
}

/// Where a requirement comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `[variety] required`.
    Config,
    /// A `capabilities/acquire` request.
    Request,
}

/// One required capability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Requirement {
    /// The capability.
    pub capability: String,
    /// Its weight.
    pub weight: f64,
    /// How much its gap matters.
    pub severity: Severity,
    /// Where it comes from.
    pub source: Source,
}

/// A server that provides a capability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provider {
    /// The server.
    pub server: String,
    /// Its status.
    pub status: &'static str,
    /// Whether it counts (serves calls now).
    pub active: bool,
    /// Why it provides the capability.
    pub reason: Reason,
}

/// One capability: required, provided, or both.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapabilityView {
    /// Its name.
    pub name: String,
    /// The requirement, when it is required.
    pub required: Option<Requirement>,
    /// Every registered server that provides it.
    pub providers: Vec<Provider>,
    /// How many of them are active.
    pub active_providers: usize,
    /// In `security.allowed_capabilities`.
    pub allowed: bool,
    /// In `security.blocked_capabilities`.
    pub blocked: bool,
}

/// A required capability without an active provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gap {
    /// Always `capability` (the seed's `gap_type`).
    pub gap_type: &'static str,
    /// The capability.
    pub capability: String,
    /// From the requirement.
    pub severity: Severity,
    /// From the requirement.
    pub weight: f64,
    /// Where the requirement comes from.
    pub source: Source,
    /// For people.
    pub description: String,
    /// `start_mcp_server`, `reset_mcp_server` or `acquire_mcp_server`.
    pub recommended_action: &'static str,
    /// What would close it, for people.
    pub closes_with: String,
    /// The registered servers that would close it once active.
    pub candidates: Vec<String>,
}

/// A weakness of the variety the daemon has.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Threat {
    /// `single_provider`, `open_circuit` or `blocked_tool`.
    pub kind: &'static str,
    /// The capability concerned (for `open_circuit`: empty).
    pub capability: String,
    /// The server concerned.
    pub server: String,
    /// The tool (for `blocked_tool`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// For people.
    pub description: String,
}

/// What discovery found that would add a capability or redundancy (the hook discovery
/// feeds; nothing is made up here).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Opportunity {
    /// The package or server, as discovery names it.
    pub candidate: String,
    /// The capabilities it would add.
    pub capabilities: Vec<String>,
    /// Why it is listed.
    pub reason: String,
}

/// How `security.allowed_capabilities` scores what is provided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AllowedShare {
    /// Allowed capabilities among those active servers provide, over all of those (1.0 when
    /// nothing is provided).
    pub score: f64,
    /// The provided capabilities that are allowed.
    pub allowed: Vec<String>,
    /// The provided capabilities that are not.
    pub not_allowed: Vec<String>,
    /// How the score is made.
    pub rule: &'static str,
}

/// One analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    /// When (RFC 3339).
    pub timestamp: String,
    /// Weight provided over weight required (1.0 when nothing is required).
    pub variety_ratio: f64,
    /// Total required weight.
    pub required_weight: f64,
    /// Weight of the required capabilities with an active provider.
    pub provided_weight: f64,
    /// Required capabilities.
    pub required_count: usize,
    /// Required capabilities with an active provider.
    pub provided_count: usize,
    /// Every capability known.
    pub capabilities: Vec<CapabilityView>,
    /// The gaps.
    pub gaps: Vec<Gap>,
    /// The threats.
    pub threats: Vec<Threat>,
    /// The opportunities (empty until discovery feeds them).
    pub opportunities: Vec<Opportunity>,
    /// How `allowed_capabilities` scores.
    pub allowed_capabilities: AllowedShare,
}

/// Analyses `servers` against `required` (unique names). `allowed` and `blocked` are the
/// security lists; `timestamp` is when.
pub fn analyze(
    required: &[Requirement],
    servers: &[ServerFacts],
    allowed: &[String],
    blocked: &[String],
    opportunities: &[Opportunity],
    timestamp: String,
) -> Analysis {
    let mut caps: BTreeMap<&str, CapabilityView> = BTreeMap::new();
    let view = |name: &str| CapabilityView {
        name: name.to_string(),
        required: None,
        providers: Vec::new(),
        active_providers: 0,
        allowed: allowed.iter().any(|a| a == name),
        blocked: blocked.iter().any(|b| b == name),
    };
    for s in servers {
        for (name, reason) in &s.capabilities {
            let c = caps.entry(name).or_insert_with(|| view(name));
            c.providers.push(Provider {
                server: s.id.clone(),
                status: s.status,
                active: s.active,
                reason: reason.clone(),
            });
            c.active_providers += usize::from(s.active);
        }
    }
    for r in required {
        caps.entry(&r.capability)
            .or_insert_with(|| view(&r.capability))
            .required = Some(r.clone());
    }
    for c in caps.values_mut() {
        c.providers.sort_by(|a, b| a.server.cmp(&b.server));
    }

    let (mut required_weight, mut provided_weight, mut provided_count) = (0.0, 0.0, 0);
    let mut gaps = Vec::new();
    for r in required {
        required_weight += r.weight;
        let c = &caps[r.capability.as_str()];
        if c.active_providers > 0 {
            provided_weight += r.weight;
            provided_count += 1;
        } else {
            gaps.push(gap(r, c, servers));
        }
    }
    gaps.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.capability.cmp(&b.capability))
    });

    let mut threats = Vec::new();
    for c in caps.values() {
        if c.active_providers == 1 {
            if let Some(p) = c.providers.iter().find(|p| p.active) {
                threats.push(Threat {
                    kind: "single_provider",
                    capability: c.name.clone(),
                    server: p.server.clone(),
                    tool: None,
                    description: format!(
                        "only MCP server '{}' provides '{}': if it stops, the capability is gone",
                        p.server, c.name
                    ),
                });
            }
        }
    }
    for s in servers {
        if s.breaker_open {
            threats.push(Threat {
                kind: "open_circuit",
                capability: String::new(),
                server: s.id.clone(),
                tool: None,
                description: format!(
                    "MCP server '{}' has an open circuit breaker: it is not restarted until reset",
                    s.id
                ),
            });
        }
        for (tool, blocked) in &s.blocked_tools {
            for capability in blocked {
                threats.push(Threat {
                    kind: "blocked_tool",
                    capability: capability.clone(),
                    server: s.id.clone(),
                    tool: Some(tool.clone()),
                    description: format!(
                        "tool '{tool}' of MCP server '{}' falls under blocked capability '{capability}' and cannot be called",
                        s.id
                    ),
                });
            }
        }
    }
    threats.sort();

    let provided: Vec<&CapabilityView> = caps.values().filter(|c| c.active_providers > 0).collect();
    let (yes, no): (Vec<&&CapabilityView>, Vec<&&CapabilityView>) =
        provided.iter().partition(|c| c.allowed);
    let allowed_capabilities = AllowedShare {
        score: if provided.is_empty() {
            1.0
        } else {
            round(yes.len() as f64 / provided.len() as f64)
        },
        allowed: yes.iter().map(|c| c.name.clone()).collect(),
        not_allowed: no.iter().map(|c| c.name.clone()).collect(),
        rule: "share of the capabilities active servers provide that security.allowed_capabilities lists",
    };

    Analysis {
        timestamp,
        variety_ratio: if required_weight > 0.0 {
            round(provided_weight / required_weight)
        } else {
            1.0
        },
        required_weight,
        provided_weight,
        required_count: required.len(),
        provided_count,
        capabilities: caps.into_values().collect(),
        gaps,
        threats,
        opportunities: opportunities.to_vec(),
        allowed_capabilities,
    }
}

/// Four decimals: ratios are compared and shown, not computed with further.
fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The gap of `r`, saying what would close it.
fn gap(r: &Requirement, c: &CapabilityView, servers: &[ServerFacts]) -> Gap {
    let candidates: Vec<String> = c.providers.iter().map(|p| p.server.clone()).collect();
    let broken: Vec<&str> = c
        .providers
        .iter()
        .filter(|p| servers.iter().any(|s| s.id == p.server && s.breaker_open))
        .map(|p| p.server.as_str())
        .collect();
    let (recommended_action, closes_with) = if candidates.is_empty() {
        (
            "acquire_mcp_server",
            format!(
                "an MCP server providing '{}': register one that declares it or whose tools map to it, or ask for it (variety acquire {})",
                r.capability, r.capability
            ),
        )
    } else if broken.len() == candidates.len() {
        (
            "reset_mcp_server",
            format!("reset {} (circuit breaker open)", broken.join(", ")),
        )
    } else {
        let shown: Vec<String> = c
            .providers
            .iter()
            .map(|p| format!("{} ({})", p.server, p.status))
            .collect();
        ("start_mcp_server", format!("start {}", shown.join(" or ")))
    };
    Gap {
        gap_type: "capability",
        capability: r.capability.clone(),
        severity: r.severity,
        weight: r.weight,
        source: r.source,
        description: format!("missing {} capability", r.capability),
        recommended_action,
        closes_with,
        candidates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, weight: f64, severity: Severity) -> Requirement {
        Requirement {
            capability: name.into(),
            weight,
            severity,
            source: Source::Config,
        }
    }

    fn server(id: &str, active: bool, caps: &[&str]) -> ServerFacts {
        ServerFacts {
            id: id.into(),
            status: if active { "active" } else { "stopped" },
            active,
            breaker_open: false,
            capabilities: caps
                .iter()
                .map(|c| ((*c).to_string(), Reason::Declared))
                .collect(),
            blocked_tools: Vec::new(),
        }
    }

    fn run(required: &[Requirement], servers: &[ServerFacts]) -> Analysis {
        analyze(
            required,
            servers,
            &["web".to_string()],
            &["system".to_string()],
            &[],
            "t".into(),
        )
    }

    #[test]
    fn nothing_required_is_full_variety() {
        let a = run(&[], &[server("a", true, &["time"])]);
        assert_eq!(a.variety_ratio, 1.0);
        assert!(a.gaps.is_empty());
        assert_eq!(a.required_count, 0);
        assert_eq!(a.capabilities.len(), 1);
    }

    #[test]
    fn the_ratio_is_weighted_and_counts_active_providers_only() {
        let required = [
            req("time", 1.0, Severity::Medium),
            req("memory", 3.0, Severity::High),
        ];
        let a = run(
            &required,
            &[
                server("clock", true, &["time"]),
                server("mem", false, &["memory"]),
            ],
        );
        assert_eq!(a.variety_ratio, 0.25);
        assert_eq!((a.required_weight, a.provided_weight), (4.0, 1.0));
        assert_eq!(a.provided_count, 1);
        assert_eq!(a.gaps.len(), 1);
        let g = &a.gaps[0];
        assert_eq!(g.capability, "memory");
        assert_eq!(g.recommended_action, "start_mcp_server");
        assert_eq!(g.closes_with, "start mem (stopped)");
        assert_eq!(g.candidates, ["mem"]);
        // The provider starts: no gap, full ratio.
        let a = run(
            &required,
            &[
                server("clock", true, &["time"]),
                server("mem", true, &["memory"]),
            ],
        );
        assert_eq!(a.variety_ratio, 1.0);
        assert!(a.gaps.is_empty());
        let third = run(
            &[req("a", 1.0, Severity::Low), req("b", 2.0, Severity::Low)],
            &[server("x", true, &["a"])],
        );
        assert_eq!(third.variety_ratio, 0.3333);
    }

    #[test]
    fn gaps_say_what_closes_them_in_a_fixed_order() {
        let required = [
            req("b", 1.0, Severity::Low),
            req("a", 1.0, Severity::Low),
            req("z", 1.0, Severity::Critical),
            req("r", 1.0, Severity::Medium),
        ];
        let mut broken = server("rr", false, &["r"]);
        broken.breaker_open = true;
        let a = run(&required, &[broken]);
        let order: Vec<&str> = a.gaps.iter().map(|g| g.capability.as_str()).collect();
        assert_eq!(order, ["z", "r", "a", "b"]);
        assert_eq!(a.gaps[0].recommended_action, "acquire_mcp_server");
        assert!(a.gaps[0].closes_with.contains("variety acquire z"));
        assert_eq!(a.gaps[1].recommended_action, "reset_mcp_server");
        assert_eq!(a.variety_ratio, 0.0);
        assert_eq!(a.gaps[0].description, "missing z capability");
    }

    #[test]
    fn threats_single_providers_open_circuits_and_blocked_tools() {
        let mut shell = server("shell", true, &["echo"]);
        shell.blocked_tools = vec![("run_command".into(), vec!["system".into()])];
        let mut down = server("down", false, &["echo"]);
        down.breaker_open = true;
        let a = run(
            &[],
            &[
                shell,
                down,
                server("w1", true, &["web"]),
                server("w2", true, &["web"]),
            ],
        );
        let kinds: Vec<(&str, &str, &str)> = a
            .threats
            .iter()
            .map(|t| (t.kind, t.capability.as_str(), t.server.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("blocked_tool", "system", "shell"),
                ("open_circuit", "", "down"),
                ("single_provider", "echo", "shell"),
            ]
        );
        // Two active providers of web: no threat. Allowed share: web of {echo, web}.
        assert_eq!(a.allowed_capabilities.score, 0.5);
        assert_eq!(a.allowed_capabilities.allowed, ["web"]);
        assert_eq!(a.allowed_capabilities.not_allowed, ["echo"]);
    }

    #[test]
    fn the_same_input_gives_the_same_output() {
        let servers = [server("b", true, &["x", "y"]), server("a", true, &["y"])];
        let required = [req("y", 1.0, Severity::High), req("q", 2.0, Severity::High)];
        let one = run(&required, &servers);
        let mut reversed = servers.to_vec();
        reversed.reverse();
        let two = run(&required, &reversed);
        assert_eq!(one, two);
        let y = one.capabilities.iter().find(|c| c.name == "y").expect("y");
        let ids: Vec<&str> = y.providers.iter().map(|p| p.server.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
    }
}
