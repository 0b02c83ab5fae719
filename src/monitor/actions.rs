//! `[actions.NAME]`: what an operator declares an alert may run besides the built-in `log` and
//! `restart_server:ID` — a `webhook` (a JSON POST of the alert's fields, from the worker) or an
//! `exec` (a sandboxed command with the alert's fields in its environment).
//!
//! Invariants: a spec that passes [`ActionSpec::validate`] can be run as it is (an http URL,
//! an argv without NUL bytes, bounded timeouts); a token file is read only when a delivery is
//! made, with [`crate::state::read_small_file`], and its content never reaches a log line.

use crate::monitor::checks::spec::{c_string_problem, check_argv, check_http_url, valid_name};
use serde::{Deserialize, Serialize};

/// Most `[actions.*]` tables in one configuration.
pub const MAX_ACTIONS: usize = 32;

/// Which kind of action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// JSON POST to `url`.
    Webhook,
    /// Run `argv`.
    Exec,
}

impl ActionKind {
    /// The config name (and the prefix of references to it: `webhook:NAME`, `exec:NAME`).
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Webhook => "webhook",
            ActionKind::Exec => "exec",
        }
    }
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// One `[actions.NAME]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// `webhook` or `exec`.
    pub kind: ActionKind,
    /// webhook: the `http://` URL to POST to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// webhook: a file whose first line is sent as `Authorization: Bearer …`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_file: String,
    /// exec: the command and its arguments (no shell).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// Deadline of one delivery (webhook: one attempt) or run, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl ActionSpec {
    /// Checks the table on its own.
    ///
    /// # Errors
    /// (field, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: &str| Err((f.to_owned(), m.to_owned()));
        match self.kind {
            ActionKind::Webhook => {
                check_http_url(&self.url).map_err(|m| ("url".to_owned(), m))?;
                if let Some(p) = c_string_problem(&self.url, 2048) {
                    return Err(("url".into(), p));
                }
                if !self.argv.is_empty() {
                    return err("argv", "only applies to exec actions");
                }
                if !self.token_file.is_empty() && !self.token_file.starts_with('/') {
                    return err("token_file", "must be an absolute path");
                }
                if let Some(p) = c_string_problem(&self.token_file, 4096) {
                    return Err(("token_file".into(), p));
                }
            }
            ActionKind::Exec => {
                check_argv(&self.argv)?;
                if !self.url.is_empty() {
                    return err("url", "only applies to webhook actions");
                }
                if !self.token_file.is_empty() {
                    return err("token_file", "only applies to webhook actions");
                }
            }
        }
        if !(10..=600_000).contains(&self.timeout_ms) {
            return err("timeout_ms", "must be 10..=600000");
        }
        Ok(())
    }
}

/// Checks a whole `[actions]` table: names and each entry.
///
/// # Errors
/// (dotted key, message).
pub fn validate_all(
    actions: &std::collections::BTreeMap<String, ActionSpec>,
) -> Result<(), (String, String)> {
    if actions.len() > MAX_ACTIONS {
        return Err((
            "actions".into(),
            format!("{} actions (at most {MAX_ACTIONS})", actions.len()),
        ));
    }
    for (name, spec) in actions {
        if !valid_name(name) {
            return Err((
                "actions".into(),
                format!(
                    "'{}' is not a valid action name: use lowercase letters, digits, '_', '.', '-' (at most 64)",
                    name.chars().take(80).collect::<String>().escape_default()
                ),
            ));
        }
        spec.validate()
            .map_err(|(f, m)| (format!("actions.{name}.{f}"), m))?;
    }
    Ok(())
}
