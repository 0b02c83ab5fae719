//! What an operator declares: `[[checks]]` entries of the configuration file, and how each
//! is checked on its own. References from a check to `[actions.NAME]` tables need the whole
//! configuration and are checked by [`crate::config::Config::validate`] with
//! [`check_action_refs`].
//!
//! Invariants: a spec that passes [`CheckSpec::validate`] can be run as it is: its target
//! parses for its kind, its argv holds no NUL byte, every bound is inside its limit.

use serde::{Deserialize, Serialize};

/// Most `[[checks]]` entries in one configuration (each may hold a connection or a child).
pub const MAX_CHECKS: usize = 64;
/// Most actions per check.
pub const MAX_ACTIONS_PER_CHECK: usize = 16;
/// Longest target (URL, address, path, process name), in bytes.
pub const MAX_TARGET_BYTES: usize = 2048;
/// Most argv items of an exec check or action.
pub const MAX_ARGV: usize = 64;
/// Longest argv item, in bytes.
pub const MAX_ARG_BYTES: usize = 4096;
/// Longest `expect_body`, in bytes.
pub const MAX_EXPECT_BODY_BYTES: usize = 1024;
/// Shortest `every_ms`.
pub const MIN_EVERY_MS: u64 = 100;
/// Longest `every_ms` and `timeout_ms` (a day).
pub const MAX_INTERVAL_MS: u64 = 86_400_000;

/// Which kind of check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// A TCP connect to `host:port`.
    Tcp,
    /// An HTTP GET of a URL: status (and optionally a body substring).
    Http,
    /// A command (`argv`) and its exit code.
    Exec,
    /// A file's age and size.
    File,
    /// A process, by pid file (absolute path) or by name (`/proc/*/comm`).
    Process,
    /// A mounted filesystem's used space.
    Filesystem,
}

impl CheckKind {
    /// The config and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
            CheckKind::Exec => "exec",
            CheckKind::File => "file",
            CheckKind::Process => "process",
            CheckKind::Filesystem => "filesystem",
        }
    }
}

fn default_every_ms() -> u64 {
    30_000
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_two() -> u32 {
    2
}
fn default_max_used_percent() -> f64 {
    90.0
}
fn default_severity() -> String {
    "critical".into()
}
fn is_default_severity(s: &String) -> bool {
    s == "critical"
}

/// One `[[checks]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// Unique name (`[a-z0-9][a-z0-9_.-]*`, at most 64 bytes): the rule is `check:NAME`.
    pub name: String,
    /// Which kind.
    pub kind: CheckKind,
    /// tcp: `host:port`; http: `http://` or `https://` URL; file: absolute path; process: absolute pid
    /// file path or a process name; filesystem: absolute mount point. Empty for exec.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// exec: the command and its arguments (no shell).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// http: the status that counts as up (default: any 2xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
    /// http: a substring the body must contain (the first 64 KiB are read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<String>,
    /// exec: the exit code that counts as up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_exit: Option<i32>,
    /// file: down when the last modification is older than this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u64>,
    /// file: down when smaller than this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u64>,
    /// file: down when larger than this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// filesystem: down when more than this percentage is used.
    #[serde(default = "default_max_used_percent")]
    pub max_used_percent: f64,
    /// Milliseconds between runs.
    #[serde(default = "default_every_ms")]
    pub every_ms: u64,
    /// A run that takes longer is down.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive down runs before the alert fires.
    #[serde(default = "default_two")]
    pub failures_before_alert: u32,
    /// Consecutive up runs before a firing alert resolves.
    #[serde(default = "default_two")]
    pub successes_before_clear: u32,
    /// Actions when its alert fires or resolves: `log`, `restart_server:ID`, `webhook:NAME`,
    /// `exec:NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// `info`, `warning` or `critical` (default).
    #[serde(
        default = "default_severity",
        skip_serializing_if = "is_default_severity"
    )]
    pub severity: String,
}

/// Whether `name` is a valid check or action name: `[a-z0-9][a-z0-9_.-]*`, at most 64 bytes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// Why a string cannot be handed to the kernel (NUL byte, too long), if it cannot.
pub fn c_string_problem(s: &str, max: usize) -> Option<String> {
    if s.contains('\0') {
        Some("contains a NUL byte".into())
    } else if s.len() > max {
        Some(format!("is longer than {max} bytes"))
    } else {
        None
    }
}

/// Checks an argv list (exec checks and exec actions).
///
/// # Errors
/// (field, message).
pub fn check_argv(argv: &[String]) -> Result<(), (String, String)> {
    if argv.is_empty() || argv[0].trim().is_empty() {
        return Err(("argv".into(), "must name a program".into()));
    }
    if argv.len() > MAX_ARGV {
        return Err((
            "argv".into(),
            format!("{} items (at most {MAX_ARGV})", argv.len()),
        ));
    }
    for (i, a) in argv.iter().enumerate() {
        if let Some(p) = c_string_problem(a, MAX_ARG_BYTES) {
            return Err((format!("argv[{i}]"), p));
        }
    }
    Ok(())
}

/// Checks an `http://` or `https://` `host[:port]/path` URL (https trusts the bundled roots
/// plus `security.ca_file`: see [`crate::outbound`]).
///
/// # Errors
/// What is wrong with it.
pub fn check_http_url(url: &str) -> Result<(), String> {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err("must be an http:// or https:// URL".into());
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains(['@', ' ']) {
        return Err("must be http(s)://host[:port][/path] (no user info, no spaces)".into());
    }
    if url.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    Ok(())
}

fn absolute(target: &str) -> Result<(), String> {
    if !target.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    Ok(())
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals).
///
/// # Errors
/// What is wrong with it.
pub fn host_port(target: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(v6) = target.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unclosed [ in the address")?;
        (h, after.strip_prefix(':').ok_or("missing :port")?)
    } else {
        target.rsplit_once(':').ok_or("must be host:port")?
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or("bad port")?;
    if host.is_empty() || host.contains([' ', '/']) {
        return Err("bad host".into());
    }
    Ok((host, port))
}

impl CheckSpec {
    /// The alert rule of the check.
    pub fn rule(&self) -> String {
        format!("check:{}", self.name)
    }

    /// Checks the entry on its own (action references are checked with the whole config).
    ///
    /// # Errors
    /// (field, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_owned(), m));
        if !valid_name(&self.name) {
            let shown: String = self.name.chars().take(80).collect();
            return err(
                "name",
                format!(
                    "'{}' is not a valid name: use lowercase letters, digits, '_', '.', '-' (at most 64)",
                    shown.escape_default()
                ),
            );
        }
        if let Some(p) = c_string_problem(&self.target, MAX_TARGET_BYTES) {
            return err("target", p);
        }
        let kind_only = |field: &str, set: bool, kinds: &str| -> Result<(), (String, String)> {
            if set {
                Err((field.to_owned(), format!("only applies to {kinds} checks")))
            } else {
                Ok(())
            }
        };
        let k = self.kind;
        kind_only(
            "argv",
            !self.argv.is_empty() && k != CheckKind::Exec,
            "exec",
        )?;
        kind_only(
            "expect_exit",
            self.expect_exit.is_some() && k != CheckKind::Exec,
            "exec",
        )?;
        kind_only(
            "expect_status",
            self.expect_status.is_some() && k != CheckKind::Http,
            "http",
        )?;
        kind_only(
            "expect_body",
            self.expect_body.is_some() && k != CheckKind::Http,
            "http",
        )?;
        let file_keys =
            self.max_age_s.is_some() || self.min_size.is_some() || self.max_size.is_some();
        kind_only("max_age_s", file_keys && k != CheckKind::File, "file")?;
        kind_only(
            "max_used_percent",
            self.max_used_percent != default_max_used_percent() && k != CheckKind::Filesystem,
            "filesystem",
        )?;
        match k {
            CheckKind::Tcp => host_port(&self.target)
                .map(|_| ())
                .or_else(|m| err("target", m))?,
            CheckKind::Http => check_http_url(&self.target).or_else(|m| err("target", m))?,
            CheckKind::Exec => {
                if !self.target.is_empty() {
                    return err("target", "exec checks take argv, not target".into());
                }
                check_argv(&self.argv)?;
            }
            CheckKind::File | CheckKind::Filesystem => {
                absolute(&self.target).or_else(|m| err("target", m))?
            }
            CheckKind::Process => {
                if self.target.is_empty() {
                    return err(
                        "target",
                        "must be a pid file (absolute path) or a process name".into(),
                    );
                }
                if !self.target.starts_with('/') && self.target.len() > 15 {
                    return err(
                        "target",
                        "a process name is matched against /proc/PID/comm, which holds at most 15 bytes".into(),
                    );
                }
            }
        }
        if let Some(s) = self.expect_status {
            if !(100..=599).contains(&s) {
                return err("expect_status", "must be 100..=599".into());
            }
        }
        if let Some(b) = &self.expect_body {
            if b.is_empty() || b.len() > MAX_EXPECT_BODY_BYTES {
                return err(
                    "expect_body",
                    format!("must be 1..={MAX_EXPECT_BODY_BYTES} bytes"),
                );
            }
        }
        if let (Some(min), Some(max)) = (self.min_size, self.max_size) {
            if min > max {
                return err("min_size", "must not exceed max_size".into());
            }
        }
        if !(0.0..=100.0).contains(&self.max_used_percent) {
            return err("max_used_percent", "must be 0..=100".into());
        }
        if !(MIN_EVERY_MS..=MAX_INTERVAL_MS).contains(&self.every_ms) {
            return err(
                "every_ms",
                format!("must be {MIN_EVERY_MS}..={MAX_INTERVAL_MS}"),
            );
        }
        if !(10..=MAX_INTERVAL_MS).contains(&self.timeout_ms) {
            return err("timeout_ms", format!("must be 10..={MAX_INTERVAL_MS}"));
        }
        for (f, n) in [
            ("failures_before_alert", self.failures_before_alert),
            ("successes_before_clear", self.successes_before_clear),
        ] {
            if !(1..=1000).contains(&n) {
                return err(f, "must be 1..=1000".into());
            }
        }
        if self.actions.len() > MAX_ACTIONS_PER_CHECK {
            return err(
                "actions",
                format!(
                    "{} actions (at most {MAX_ACTIONS_PER_CHECK})",
                    self.actions.len()
                ),
            );
        }
        if !["info", "warning", "critical"].contains(&self.severity.as_str()) {
            return err("severity", "must be one of info, warning, critical".into());
        }
        Ok(())
    }
}

/// Checks one action reference of a check against the declared `[actions.*]`:
/// `log`, `restart_server:ID`, or `webhook:NAME` / `exec:NAME` naming an action of that kind.
///
/// # Errors
/// What is wrong with it.
pub fn check_action_ref(
    reference: &str,
    kind_of: impl Fn(&str) -> Option<&'static str>,
) -> Result<(), String> {
    if reference == "log" {
        return Ok(());
    }
    let Some((prefix, name)) = reference.split_once(':') else {
        return Err(format!(
            "'{}' is not log, restart_server:ID, webhook:NAME or exec:NAME",
            reference.escape_default()
        ));
    };
    match prefix {
        "restart_server" if valid_name(name) => Ok(()),
        "restart_server" => Err(format!("'{}' is not a server id", name.escape_default())),
        "webhook" | "exec" => match kind_of(name) {
            Some(k) if k == prefix => Ok(()),
            Some(k) => Err(format!("action '{name}' is a {k} action, not {prefix}")),
            None => Err(format!("no [actions.{}] is defined", name.escape_default())),
        },
        _ => Err(format!(
            "'{}' is not log, restart_server:ID, webhook:NAME or exec:NAME",
            reference.escape_default()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: CheckKind, target: &str) -> CheckSpec {
        toml::from_str::<CheckSpec>(&format!(
            "name = \"c\"\nkind = \"{}\"\ntarget = \"{target}\"",
            kind.as_str()
        ))
        .expect("parses")
    }

    #[test]
    fn targets_are_checked_per_kind() {
        assert!(spec(CheckKind::Tcp, "127.0.0.1:80").validate().is_ok());
        assert!(spec(CheckKind::Tcp, "[::1]:80").validate().is_ok());
        assert!(spec(CheckKind::Tcp, "db.local:5432").validate().is_ok());
        assert_eq!(
            spec(CheckKind::Tcp, "nope").validate().unwrap_err().0,
            "target"
        );
        assert_eq!(
            spec(CheckKind::Tcp, "h:0").validate().unwrap_err().0,
            "target"
        );
        assert!(spec(CheckKind::Http, "http://127.0.0.1:8/x")
            .validate()
            .is_ok());
        assert!(spec(CheckKind::Http, "https://x/").validate().is_ok());
        assert!(spec(CheckKind::Http, "https://[::1]:8443/health")
            .validate()
            .is_ok());
        assert!(spec(CheckKind::Http, "ftp://x/").validate().is_err());
        assert!(spec(CheckKind::Http, "https://user@x/").validate().is_err());
        assert!(spec(CheckKind::Http, "https:///x").validate().is_err());
        assert!(spec(CheckKind::File, "relative").validate().is_err());
        assert!(spec(CheckKind::Process, "sshd").validate().is_ok());
        assert!(spec(CheckKind::Process, "a-very-long-process-name")
            .validate()
            .is_err());
        assert!(
            spec(CheckKind::Exec, "").validate().is_err(),
            "exec needs argv"
        );
        let mut e = spec(CheckKind::Exec, "");
        e.argv = vec!["true".into()];
        assert!(e.validate().is_ok());
        e.expect_status = Some(200);
        assert_eq!(e.validate().unwrap_err().0, "expect_status");
    }

    #[test]
    fn bounds_are_checked() {
        let mut s = spec(CheckKind::Tcp, "127.0.0.1:80");
        s.every_ms = 5;
        assert_eq!(s.validate().unwrap_err().0, "every_ms");
        s.every_ms = 1000;
        s.failures_before_alert = 0;
        assert_eq!(s.validate().unwrap_err().0, "failures_before_alert");
        s.failures_before_alert = 1;
        s.severity = "fatal".into();
        assert_eq!(s.validate().unwrap_err().0, "severity");
    }

    #[test]
    fn action_references_name_defined_actions_of_their_kind() {
        let kinds = |n: &str| match n {
            "ops" => Some("webhook"),
            "notify" => Some("exec"),
            _ => None,
        };
        for ok in ["log", "restart_server:time", "webhook:ops", "exec:notify"] {
            assert_eq!(check_action_ref(ok, kinds), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "mail",
            "webhook:notify",
            "exec:ops",
            "webhook:nope",
            "restart_server:",
            "x:y",
        ] {
            assert!(check_action_ref(bad, kinds).is_err(), "{bad}");
        }
    }
}
