//! What the configuration says the daemon must be able to do: `[variety] required` (capability
//! names, or tables with a weight and a severity) and `[[variety.rules]]` (keyword rules that
//! extend [`super::capability::builtin`]). Pure types with their own validation, read by the
//! configuration (through its `KEYS` table) and by the variety room.
//!
//! Invariants of a valid configuration: at most [`MAX_REQUIRED`] required capabilities with
//! unique names, each weight finite and above zero; at most [`MAX_RULES`] rules of at most
//! [`MAX_KEYWORDS`] keywords each, names and keywords non-empty and at most
//! [`MAX_NAME_BYTES`] bytes. The analysis is linear in these counts.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;

/// Required capabilities at most (config and acquire requests counted apart).
pub const MAX_REQUIRED: usize = 256;
/// Keyword rules at most in `[[variety.rules]]`.
pub const MAX_RULES: usize = 128;
/// Keywords at most per rule.
pub const MAX_KEYWORDS: usize = 64;
/// Longest capability name or keyword, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// How much a gap matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Nice to have.
    Low,
    /// The default.
    Medium,
    /// Work suffers without it.
    High,
    /// The daemon is not doing its job without it.
    Critical,
}

impl Severity {
    /// The names accepted, in order.
    pub const NAMES: &'static [&'static str] = &["low", "medium", "high", "critical"];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The severity of that name.
    pub fn parse(name: &str) -> Option<Severity> {
        match name {
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// One required capability: `"time"` or `{capability = "memory", weight = 2, severity =
/// "high"}` in the file; always written back as the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Required {
    /// The capability.
    pub capability: String,
    /// Its share of the variety ratio (above 0; default 1).
    pub weight: f64,
    /// How much its gap matters (default medium).
    pub severity: Severity,
}

impl Required {
    /// A required capability with the default weight and severity.
    pub fn named(capability: impl Into<String>) -> Required {
        Required {
            capability: capability.into(),
            weight: 1.0,
            severity: Severity::Medium,
        }
    }
}

/// The table form, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequiredTable {
    capability: String,
    #[serde(default = "one")]
    weight: f64,
    #[serde(default = "medium")]
    severity: Severity,
}

fn one() -> f64 {
    1.0
}

fn medium() -> Severity {
    Severity::Medium
}

impl<'de> Deserialize<'de> for Required {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, MapAccess, Visitor};
        struct Either;
        impl<'de> Visitor<'de> for Either {
            type Value = Required;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a capability name or a table {capability = \"...\", weight = 1, severity = \"medium\"}",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Required, E> {
                Ok(Required::named(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Required, A::Error> {
                let t = RequiredTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Required {
                    capability: t.capability,
                    weight: t.weight,
                    severity: t.severity,
                })
            }
        }
        d.deserialize_any(Either)
    }
}

/// One `[[variety.rules]]` entry: tools matching any keyword provide `capability`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The capability.
    pub capability: String,
    /// Keywords (one or more words each).
    pub keywords: Vec<String>,
}

impl RuleSpec {
    /// As the mapping takes it.
    pub fn rule(&self) -> super::capability::Rule {
        super::capability::Rule {
            capability: self.capability.clone(),
            keywords: self.keywords.clone(),
        }
    }
}

/// The built-in rules followed by the configured ones (the mapping stops at a capability's
/// first hit, so the order only decides which reason is shown).
pub fn rules(configured: &[RuleSpec]) -> Vec<super::capability::Rule> {
    let mut rules = super::capability::builtin();
    rules.extend(configured.iter().map(RuleSpec::rule));
    rules
}

/// Checks a capability name: non-empty, at most [`MAX_NAME_BYTES`], no control characters.
///
/// # Errors
/// What is wrong with it.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("capability names must not be empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "capability names are at most {MAX_NAME_BYTES} bytes (got {})",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("capability names must not contain control characters".into());
    }
    Ok(())
}

/// Validates parsed required capabilities.
///
/// # Errors
/// The first problem, naming the entry (`[2]`).
pub fn check_required(list: &[Required]) -> Result<(), String> {
    if list.len() > MAX_REQUIRED {
        return Err(format!(
            "at most {MAX_REQUIRED} required capabilities (got {})",
            list.len()
        ));
    }
    let mut seen = HashSet::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        check_name(&r.capability).map_err(|m| format!("[{i}]: {m}"))?;
        if !(r.weight.is_finite() && r.weight > 0.0 && r.weight <= 1e6) {
            return Err(format!(
                "[{i}]: weight must be above 0 and at most 1000000 (got {})",
                r.weight
            ));
        }
        if !seen.insert(r.capability.as_str()) {
            return Err(format!("[{i}]: duplicate capability '{}'", r.capability));
        }
    }
    Ok(())
}

/// Validates parsed keyword rules.
///
/// # Errors
/// The first problem, naming the entry (`[2].keywords[0]`).
pub fn check_rules(list: &[RuleSpec]) -> Result<(), String> {
    if list.len() > MAX_RULES {
        return Err(format!("at most {MAX_RULES} rules (got {})", list.len()));
    }
    for (i, r) in list.iter().enumerate() {
        check_name(&r.capability).map_err(|m| format!("[{i}].capability: {m}"))?;
        if r.keywords.is_empty() || r.keywords.len() > MAX_KEYWORDS {
            return Err(format!(
                "[{i}].keywords: between 1 and {MAX_KEYWORDS} keywords (got {})",
                r.keywords.len()
            ));
        }
        for (j, k) in r.keywords.iter().enumerate() {
            if k.trim().is_empty() || k.len() > MAX_NAME_BYTES || k.chars().any(char::is_control) {
                return Err(format!(
                    "[{i}].keywords[{j}]: a keyword is 1 to {MAX_NAME_BYTES} bytes of words, without control characters"
                ));
            }
        }
    }
    Ok(())
}

/// Checks `variety.required` given as JSON (an override patch): its count first, so a huge
/// list costs one length check, then each entry's form and the rules above.
///
/// # Errors
/// What is wrong, naming the entry.
pub fn check_required_json(value: &Value) -> Result<(), String> {
    let items = value.as_array().ok_or("must be a list")?;
    if items.len() > MAX_REQUIRED {
        return Err(format!(
            "at most {MAX_REQUIRED} required capabilities (got {})",
            items.len()
        ));
    }
    let mut list = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        list.push(Required::deserialize(item).map_err(|e| format!("[{i}]: {e}"))?);
    }
    check_required(&list)
}

/// Checks `variety.rules` given as JSON, like [`check_required_json`].
///
/// # Errors
/// What is wrong, naming the entry.
pub fn check_rules_json(value: &Value) -> Result<(), String> {
    let items = value.as_array().ok_or("must be a list")?;
    if items.len() > MAX_RULES {
        return Err(format!("at most {MAX_RULES} rules (got {})", items.len()));
    }
    let mut list = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        list.push(RuleSpec::deserialize(item).map_err(|e| format!("[{i}]: {e}"))?);
    }
    check_rules(&list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_and_tables_both_name_a_requirement() {
        let v = json!(["time", {"capability": "memory", "weight": 2, "severity": "high"}]);
        let list: Vec<Required> = serde_json::from_value(v.clone()).expect("parses");
        assert_eq!(list[0], Required::named("time"));
        assert_eq!(list[1].weight, 2.0);
        assert_eq!(list[1].severity, Severity::High);
        assert_eq!(check_required_json(&v), Ok(()));
    }

    #[test]
    fn bad_requirements_are_named() {
        let cases = [
            (json!([{"capability": "x", "weight": 0}]), "[0]: weight"),
            (json!(["a", "a"]), "[1]: duplicate capability 'a'"),
            (json!([""]), "[0]: capability names must not be empty"),
            (
                json!([{"capability": "x", "severity": "urgent"}]),
                "[0]: unknown variant",
            ),
            (
                json!([{"capability": "x", "wieght": 1}]),
                "[0]: unknown field",
            ),
            (json!([3]), "[0]: invalid type"),
        ];
        for (v, start) in cases {
            let e = check_required_json(&v).expect_err("refused");
            assert!(e.starts_with(start), "{v}: {e}");
        }
        let many = Value::Array(vec![json!("x"); MAX_REQUIRED + 1]);
        assert!(check_required_json(&many)
            .expect_err("too many")
            .starts_with("at most"));
    }

    #[test]
    fn rules_are_checked_and_extend_the_builtin_ones() {
        let v = json!([{"capability": "weather", "keywords": ["forecast"]}]);
        assert_eq!(check_rules_json(&v), Ok(()));
        let list: Vec<RuleSpec> = serde_json::from_value(v).expect("parses");
        let all = rules(&list);
        assert_eq!(all.len(), super::super::capability::builtin().len() + 1);
        assert_eq!(all.last().map(|r| r.capability.as_str()), Some("weather"));
        for (bad, start) in [
            (json!([{"capability": "w", "keywords": []}]), "[0].keywords"),
            (
                json!([{"capability": "w", "keywords": [" "]}]),
                "[0].keywords[0]",
            ),
            (
                json!([{"capability": "", "keywords": ["a"]}]),
                "[0].capability",
            ),
            (json!([{"keywords": ["a"]}]), "[0]: missing field"),
        ] {
            let e = check_rules_json(&bad).expect_err("refused");
            assert!(e.starts_with(start), "{bad}: {e}");
        }
    }
}
