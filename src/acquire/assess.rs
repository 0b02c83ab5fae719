//! The security assessment of an installed, trialled package: a score from explicit criteria,
//! each shown with its points and verdict, and the refusals no score can outweigh.
//!
//! There is no public security score to lean on (DESIGN.md §13), so the score is ours and
//! transparent: each [`Criterion`] has a fixed weight; one that cannot be judged (no registry
//! entry to compare with, no install scripts in the package format) is `not_applicable` and
//! leaves the total, so the score is the share of the judged points earned, 0–100.
//!
//! Refusals, whatever the score and even with `security_scan_enabled = false` (which skips only
//! the score): a declared or mapped capability under `security.blocked_capabilities`, and a
//! trial that did not reach `active` (its tools, and so its capabilities, are unknown).
//! Capabilities come from [`crate::variety::capability::map`] over the tools the trial listed,
//! with the rules the caller passes (the built-in ones and `[[variety.rules]]`, as the capability
//! policy and the variety analysis read them).
//!
//! Pure: the same facts and policy give the same assessment.

use crate::variety::capability::{self, Reason, Rule, ToolText};
use serde::Serialize;
use std::collections::BTreeMap;

/// One criterion's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Criterion {
    /// Stable name.
    pub name: &'static str,
    /// Points earned.
    pub points: u32,
    /// Points it is worth.
    pub max: u32,
    /// `pass`, `fail` or `not_applicable`.
    pub verdict: &'static str,
    /// Why, for people.
    pub detail: String,
}

/// What the trial showed, as the assessment needs it.
#[derive(Debug, Clone, Default)]
pub struct Trial {
    /// `active`, `failed` or `timeout`.
    pub outcome: String,
    /// Why it ended so.
    pub reason: String,
    /// (name, description) of each tool listed.
    pub tools: Vec<(String, String)>,
    /// JSON-RPC protocol errors counted.
    pub protocol_errors: u64,
    /// Landlock status of the run.
    pub landlock: String,
}

/// What is known of the package.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Whether the version is pinned exactly (always, for a parsed `PackageRef`).
    pub exact_version: Option<String>,
    /// Registry entry status (`active`, `deprecated`, ...), when it came from the registry.
    pub registry_status: Option<String>,
    /// Server name in the registry, when it came from the registry.
    pub registry_name: Option<String>,
    /// The ownership name the installed package claims.
    pub claimed_name: Option<String>,
    /// Installed packages with install scripts (`None`: the format has none).
    pub install_scripts: Option<Vec<String>>,
    /// Capabilities the request declares for the server.
    pub declared: Vec<String>,
    /// The trial.
    pub trial: Trial,
}

/// The policy assessed against (`[security]`).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Score at all (`security_scan_enabled`).
    pub scan_enabled: bool,
    /// Lowest score approved.
    pub min_score: u8,
    /// Capabilities tools may have.
    pub allowed: Vec<String>,
    /// Capabilities that refuse a server.
    pub blocked: Vec<String>,
    /// Keyword rules mapping tools to capabilities.
    pub rules: Vec<Rule>,
}

/// The verdict with everything behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    /// `approved` or `refused`.
    pub verdict: &'static str,
    /// 0–100, `None` when scanning is off.
    pub score: Option<u8>,
    /// The threshold applied.
    pub min_score: u8,
    /// Every criterion (also when scanning is off: shown, not counted).
    pub criteria: Vec<Criterion>,
    /// Capabilities the server provides, each with its reason.
    pub capabilities: BTreeMap<String, Reason>,
    /// Why it was refused (empty when approved).
    pub reasons: Vec<String>,
}

impl Assessment {
    /// Whether it was approved.
    pub fn approved(&self) -> bool {
        self.verdict == "approved"
    }
}

fn criterion(name: &'static str, max: u32, verdict: Option<bool>, detail: String) -> Criterion {
    Criterion {
        name,
        points: if verdict == Some(true) { max } else { 0 },
        max,
        verdict: match verdict {
            Some(true) => "pass",
            Some(false) => "fail",
            None => "not_applicable",
        },
        detail,
    }
}

/// Assesses `facts` under `policy`.
pub fn assess(facts: &Facts, policy: &Policy) -> Assessment {
    let t = &facts.trial;
    let capabilities = capability::map(
        &facts.declared,
        t.tools
            .iter()
            .map(|(name, description)| ToolText { name, description }),
        &policy.rules,
    );
    let mut criteria = Vec::new();
    criteria.push(criterion(
        "exact_version",
        15,
        Some(facts.exact_version.is_some()),
        match &facts.exact_version {
            Some(v) => format!("pinned to {v}"),
            None => "not pinned to an exact version".into(),
        },
    ));
    criteria.push(match &facts.registry_status {
        Some(s) => criterion(
            "registry_status",
            10,
            Some(s == "active"),
            format!("registry status {s:?}"),
        ),
        None => criterion("registry_status", 10, None, "not from the registry".into()),
    });
    criteria.push(match (&facts.registry_name, &facts.claimed_name) {
        (Some(r), Some(c)) => criterion(
            "ownership_proof",
            15,
            Some(r == c),
            format!("registry name {r:?}, package claims {c:?}"),
        ),
        (Some(r), None) => criterion(
            "ownership_proof",
            15,
            Some(false),
            format!("registry name {r:?}, the package claims no name (mcpName / mcp-name:)"),
        ),
        (None, c) => criterion(
            "ownership_proof",
            15,
            None,
            match c {
                Some(c) => format!("no registry name to check the claimed {c:?} against"),
                None => "no registry name to check against".into(),
            },
        ),
    });
    criteria.push(match &facts.install_scripts {
        Some(found) if found.is_empty() => criterion(
            "no_install_scripts",
            15,
            Some(true),
            "no installed package declares install scripts (they were not run either)".into(),
        ),
        Some(found) => criterion(
            "no_install_scripts",
            15,
            Some(false),
            format!(
                "install scripts declared by {} (not run: installed with --ignore-scripts)",
                found.join(", ")
            ),
        ),
        None => criterion(
            "no_install_scripts",
            15,
            None,
            "the package format runs no install scripts".into(),
        ),
    });
    let outside: Vec<&String> = capabilities
        .keys()
        .filter(|c| !policy.allowed.contains(c))
        .collect();
    criteria.push(if t.outcome != "active" {
        criterion(
            "capabilities_allowed",
            15,
            Some(false),
            "its tools are unknown (the trial did not complete)".into(),
        )
    } else {
        criterion(
            "capabilities_allowed",
            15,
            Some(outside.is_empty()),
            if outside.is_empty() {
                format!(
                    "every capability inside security.allowed_capabilities ({})",
                    policy.allowed.join(", ")
                )
            } else {
                format!(
                    "outside security.allowed_capabilities: {}",
                    outside
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        )
    });
    let landlock = t.landlock.starts_with("enforced");
    criteria.push(criterion(
        "sandbox_features",
        10,
        Some(landlock),
        format!(
            "rlimits, own session, no_new_privs; Landlock {}; network isolation is not available",
            if t.landlock.is_empty() {
                "unknown"
            } else {
                &t.landlock
            }
        ),
    ));
    let clean = t.outcome == "active" && !t.tools.is_empty() && t.protocol_errors == 0;
    criteria.push(criterion(
        "sandbox_trial_clean",
        20,
        Some(clean),
        if clean {
            format!(
                "handshake done, {} tools listed, no protocol errors",
                t.tools.len()
            )
        } else if t.outcome == "active" && t.tools.is_empty() {
            "handshake done but no tools listed".into()
        } else if t.outcome == "active" {
            format!("{} protocol errors", t.protocol_errors)
        } else {
            format!("{}: {}", t.outcome, t.reason)
        },
    ));

    let (earned, possible) = criteria
        .iter()
        .filter(|c| c.verdict != "not_applicable")
        .fold((0u32, 0u32), |(e, p), c| (e + c.points, p + c.max));
    let score = policy.scan_enabled.then(|| {
        (earned * 100 + possible / 2)
            .checked_div(possible)
            .map_or(0, |s| s.min(100) as u8)
    });

    let mut reasons = Vec::new();
    for (cap, why) in &capabilities {
        if policy.blocked.contains(cap) {
            reasons.push(match why {
                Reason::Declared => {
                    format!("capability {cap} is declared and blocked by security.blocked_capabilities")
                }
                Reason::Tool { tool, keyword } => format!(
                    "tool {tool} maps to capability {cap} (keyword {keyword:?}), blocked by security.blocked_capabilities"
                ),
            });
        }
    }
    if t.outcome != "active" {
        reasons.push(format!(
            "the sandbox trial did not complete ({}: {}), so its tools cannot be checked",
            t.outcome, t.reason
        ));
    }
    if let Some(s) = score {
        if s < policy.min_score {
            reasons.push(format!(
                "security score {s} is below security.min_security_score ({})",
                policy.min_score
            ));
        }
    }
    Assessment {
        verdict: if reasons.is_empty() {
            "approved"
        } else {
            "refused"
        },
        score,
        min_score: policy.min_score,
        criteria,
        capabilities,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            scan_enabled: true,
            min_score: 70,
            allowed: vec!["document".into(), "web".into()],
            blocked: vec!["system".into(), "network".into(), "file_system".into()],
            rules: capability::builtin(),
        }
    }

    fn facts(tools: &[&str]) -> Facts {
        Facts {
            exact_version: Some("1.0.0".into()),
            install_scripts: Some(Vec::new()),
            trial: Trial {
                outcome: "active".into(),
                reason: "ok".into(),
                tools: tools
                    .iter()
                    .map(|t| (t.to_string(), String::new()))
                    .collect(),
                protocol_errors: 0,
                landlock: "enforced (ABI 7)".into(),
            },
            ..Facts::default()
        }
    }

    #[test]
    fn the_score_is_the_share_of_judged_points() {
        // Judged: version 15, scripts 15, capabilities 15 (time is not allowed: 0),
        // sandbox 10, trial 20 = 60 of 75 -> 80.
        let a = assess(&facts(&["get_current_time"]), &policy());
        assert_eq!(a.score, Some(80), "{:#?}", a.criteria);
        assert!(a.approved(), "{:?}", a.reasons);
        assert_eq!(a.criteria.len(), 7);
        let na: Vec<&str> = a
            .criteria
            .iter()
            .filter(|c| c.verdict == "not_applicable")
            .map(|c| c.name)
            .collect();
        assert_eq!(na, ["registry_status", "ownership_proof"]);
        assert!(a.capabilities.contains_key("time"));

        // From the registry with a matching owner and an active entry: 85 of 100.
        let mut f = facts(&["get_current_time"]);
        f.registry_status = Some("active".into());
        f.registry_name = Some("io.github.x/time".into());
        f.claimed_name = Some("io.github.x/time".into());
        assert_eq!(assess(&f, &policy()).score, Some(85));
        // A name mismatch and a deprecated entry cost their points: 60 of 100, refused.
        f.claimed_name = Some("io.github.y/time".into());
        f.registry_status = Some("deprecated".into());
        let a = assess(&f, &policy());
        assert_eq!(a.score, Some(60));
        assert!(!a.approved());
        assert!(
            a.reasons[0].contains("below security.min_security_score (70)"),
            "{:?}",
            a.reasons
        );
    }

    #[test]
    fn blocked_capabilities_refuse_whatever_the_score_and_with_scanning_off() {
        let mut p = policy();
        p.scan_enabled = false;
        let a = assess(&facts(&["read_file", "list_directory"]), &p);
        assert_eq!(a.score, None);
        assert_eq!(a.verdict, "refused");
        assert_eq!(a.reasons.len(), 1, "{:?}", a.reasons);
        assert!(
            a.reasons[0].contains("tool read_file maps to capability file_system"),
            "{:?}",
            a.reasons
        );
        // Declared ones too.
        let mut f = facts(&[]);
        f.declared = vec!["system".into()];
        let a = assess(&f, &policy());
        assert!(a
            .reasons
            .iter()
            .any(|r| r.contains("capability system is declared")));
        // Scanning off and nothing blocked: approved without a score.
        assert!(assess(&facts(&["get_current_time"]), &p).approved());
    }

    #[test]
    fn a_trial_that_did_not_complete_is_refused_even_without_scanning() {
        let mut f = facts(&[]);
        f.trial.outcome = "timeout".into();
        f.trial.reason = "did not become active".into();
        let mut p = policy();
        p.scan_enabled = false;
        let a = assess(&f, &p);
        assert!(!a.approved());
        assert!(
            a.reasons[0].contains("did not complete (timeout"),
            "{:?}",
            a.reasons
        );
        let trial = a
            .criteria
            .iter()
            .find(|c| c.name == "sandbox_trial_clean")
            .unwrap();
        assert_eq!((trial.points, trial.verdict), (0, "fail"));
        // Install scripts, no Landlock and no tools listed cost their points: version 15 and
        // capabilities 15 (none) of 75 -> 40.
        let mut f = facts(&["x"]);
        f.install_scripts = Some(vec!["esbuild".into()]);
        f.trial.landlock = "not enforced: kernel too old".into();
        f.trial.tools.clear();
        assert_eq!(assess(&f, &policy()).score, Some(40));
    }
}
