//! Server specs: what an operator registers (over the API or `[[servers]]` in the config file)
//! and what survives a restart (`servers.json` in the state directory, written atomically).
//!
//! A ground-floor type: the command layer ([`crate::api`]) and the configuration carry it, the
//! MCP room runs it (`crate::mcp::registry` is this module under its old name), so it imports
//! nothing above the ground floor.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Name of the registry document in the state directory.
pub const REGISTRY_FILE: &str = "servers.json";

/// Sandbox limits for one server; `None` takes the `[mcp_servers]` default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxLimits {
    /// RLIMIT_NOFILE.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole"
    )]
    pub max_open_files: Option<u64>,
    /// RLIMIT_CPU in seconds (0 = unlimited).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole"
    )]
    pub max_cpu_seconds: Option<u64>,
    /// RLIMIT_DATA in MiB (0 = unlimited). Not RLIMIT_AS: V8 reserves gigabytes of address space.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole"
    )]
    pub max_memory_mb: Option<u64>,
    /// Run as this uid (only when the daemon is root).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole"
    )]
    pub uid: Option<u32>,
    /// Run as this gid (only when the daemon is root).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole"
    )]
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
    /// Capabilities in `security.blocked_capabilities` this server may have anyway (declared,
    /// or shown by its tools): the operator's explicit exception for this one server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_capabilities: Vec<String>,
    /// Start with the daemon and after registration.
    #[serde(default = "yes")]
    pub autostart: bool,
    /// Default deadline for a tool call, ms.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole"
    )]
    pub call_timeout_ms: Option<u64>,
    /// First restart delay, ms.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole"
    )]
    pub backoff_initial_ms: Option<u64>,
    /// Largest restart delay, ms.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole"
    )]
    pub backoff_max_ms: Option<u64>,
    /// Failed starts within the failure window that open the circuit breaker.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole"
    )]
    pub max_failures: Option<u32>,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: SandboxLimits,
}

/// The registry document after registering `spec`: `current` (what `servers.json` holds now)
/// plus `spec`, ordered by id like `Mcp::api_specs`. Pure, so the document can
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

/// An optional integer field that also takes an integral float (`62530.0`, as JavaScript and
/// many JSON tools write whole numbers) but refuses a fraction, a negative number or a value
/// out of the field's range. `null` is the same as leaving the field out.
fn whole<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::{Error, Unexpected, Visitor};
    struct Whole;
    impl Visitor<'_> for Whole {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a non-negative whole number")
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
            // 2^64 is exactly representable; every integral f64 below it fits in a u64.
            if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
                Ok(Some(v as u64))
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    match d.deserialize_any(Whole)? {
        None => Ok(None),
        Some(v) => T::try_from(v).map(Some).map_err(|_| {
            D::Error::invalid_value(Unexpected::Unsigned(v), &"a whole number within range")
        }),
    }
}

/// Longest `command`, `cwd` and single argument or environment value, in bytes: the
/// kernel refuses longer arguments (`MAX_ARG_STRLEN` is 128 KiB) and paths (`PATH_MAX`).
const MAX_PATH_BYTES: usize = 4096;
const MAX_ARG_BYTES: usize = 128 * 1024 - 1;
/// Most arguments, environment entries and capabilities in one spec.
const MAX_ARGS: usize = 1024;
const MAX_ENV: usize = 256;
const MAX_CAPABILITIES: usize = 1024;
/// Largest spec as JSON: specs are kept in memory, in `servers.json` and in every `mcp show`.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

/// Why a string cannot be handed to `execve`/`chdir`, if it cannot: a NUL byte ends a C
/// string early (the start would fail every time), and the kernel caps lengths.
fn c_string_problem(value: &str, max: usize) -> Option<String> {
    if let Some(at) = value.bytes().position(|b| b == 0) {
        return Some(format!("contains a NUL byte (at byte {at})"));
    }
    if value.len() > max {
        return Some(format!("is {} bytes long (at most {max})", value.len()));
    }
    None
}

impl ServerSpec {
    /// Checks the spec: everything a start needs is well-formed, so a spec that passes can
    /// only fail to start for reasons of the host (a missing program or directory).
    ///
    /// # Errors
    /// `(field, message)` for the first problem; `field` names the element (`args[2]`,
    /// `env.KEY`) where it can.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self.id.as_bytes()[0].is_ascii_alphanumeric()
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if !id_ok {
            let shown: String = self.id.chars().take(80).collect();
            return Err((
                "id".into(),
                format!("'{}' is not a valid id: use lowercase letters, digits, '_', '.', '-' (at most 64)", shown.escape_default()),
            ));
        }
        if self.command.trim().is_empty() {
            return Err(("command".into(), "must not be empty".into()));
        }
        if let Some(p) = c_string_problem(&self.command, MAX_PATH_BYTES) {
            return Err(("command".into(), p));
        }
        if self.args.len() > MAX_ARGS {
            return Err((
                "args".into(),
                format!("{} arguments (at most {MAX_ARGS})", self.args.len()),
            ));
        }
        for (i, arg) in self.args.iter().enumerate() {
            if let Some(p) = c_string_problem(arg, MAX_ARG_BYTES) {
                return Err((format!("args[{i}]"), p));
            }
        }
        if self.env.len() > MAX_ENV {
            return Err((
                "env".into(),
                format!("{} variables (at most {MAX_ENV})", self.env.len()),
            ));
        }
        for (key, value) in &self.env {
            if key.is_empty() {
                return Err(("env".into(), "a variable name is empty".into()));
            }
            let shown: String = key.chars().take(80).collect();
            let shown = shown.escape_default();
            if key.contains('=') {
                return Err((
                    "env".into(),
                    format!("'{shown}' is not a valid variable name: it contains '='"),
                ));
            }
            if let Some(p) = c_string_problem(key, 256) {
                return Err(("env".into(), format!("variable name '{shown}' {p}")));
            }
            if let Some(p) = c_string_problem(value, MAX_ARG_BYTES) {
                return Err((format!("env.{shown}"), p));
            }
        }
        if let Some(cwd) = &self.cwd {
            if let Some(p) = c_string_problem(cwd, MAX_PATH_BYTES) {
                return Err(("cwd".into(), p));
            }
            if !std::path::Path::new(cwd).is_absolute() {
                return Err(("cwd".into(), format!("'{cwd}' must be an absolute path")));
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
                    return Err((
                        field.into(),
                        format!("must be between {min} and {max} (got {v})"),
                    ));
                }
            }
        }
        if let (Some(a), Some(b)) = (self.backoff_initial_ms, self.backoff_max_ms) {
            if a > b {
                return Err((
                    "backoff_initial_ms".into(),
                    "must not exceed backoff_max_ms".into(),
                ));
            }
        }
        for (field, list) in [
            ("capabilities", &self.capabilities),
            ("allow_capabilities", &self.allow_capabilities),
        ] {
            if list.len() > MAX_CAPABILITIES {
                return Err((
                    field.into(),
                    format!("{} capabilities (at most {MAX_CAPABILITIES})", list.len()),
                ));
            }
            for (i, cap) in list.iter().enumerate() {
                if cap.is_empty()
                    || cap.len() > 64
                    || cap.contains(|c: char| c.is_whitespace() || c.is_control())
                {
                    let shown: String = cap.chars().take(80).collect();
                    return Err((
                        format!("{field}[{i}]"),
                        format!(
                            "'{}' is not a valid capability name",
                            shown.escape_default()
                        ),
                    ));
                }
            }
        }
        // Each part is bounded above; this bounds their sum (what every `mcp show` copies).
        let size = serde_json::to_vec(self).map_or(usize::MAX, |v| v.len());
        if size > MAX_SPEC_BYTES {
            return Err((
                "spec".into(),
                format!("is {size} bytes as JSON (at most {MAX_SPEC_BYTES})"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_fields_take_integral_floats_and_refuse_fractions() {
        let spec = |extra: serde_json::Value| {
            let mut v = serde_json::json!({"id": "t", "command": "x"});
            if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
                o.extend(e);
            }
            serde_json::from_value::<ServerSpec>(v)
        };
        let s = spec(serde_json::json!({
            "backoff_initial_ms": 62530.0, "backoff_max_ms": 70000, "max_failures": 3.0,
            "call_timeout_ms": null, "limits": {"uid": 1000.0, "max_memory_mb": 64}
        }))
        .expect("integral floats");
        assert_eq!(s.backoff_initial_ms, Some(62530));
        assert_eq!(s.backoff_max_ms, Some(70000));
        assert_eq!(s.max_failures, Some(3));
        assert_eq!(s.call_timeout_ms, None);
        assert_eq!(s.limits.uid, Some(1000));
        assert_eq!(s.limits.max_memory_mb, Some(64));
        for bad in [
            serde_json::json!({"backoff_initial_ms": 62530.5}),
            serde_json::json!({"backoff_initial_ms": -1}),
            serde_json::json!({"backoff_initial_ms": -0.5}),
            serde_json::json!({"backoff_initial_ms": 1e30}),
            serde_json::json!({"backoff_initial_ms": "100"}),
            serde_json::json!({"max_failures": 4294967296.0}),
            serde_json::json!({"limits": {"gid": 5_000_000_000u64}}),
        ] {
            assert!(spec(bad.clone()).is_err(), "{bad}");
        }
        // What is written back stays an integer.
        let text = serde_json::to_string(&s).expect("serialize");
        assert!(text.contains("\"backoff_initial_ms\":62530,"), "{text}");
    }

    fn spec(id: &str) -> ServerSpec {
        serde_json::from_value(serde_json::json!({"id": id, "command": "python3"})).expect("spec")
    }

    fn field(s: &ServerSpec) -> Option<String> {
        s.validate().err().map(|e| e.0)
    }

    #[test]
    fn nul_bytes_and_bad_env_names_are_refused_naming_the_field() {
        let with = |f: &dyn Fn(&mut ServerSpec)| {
            let mut s = spec("t");
            f(&mut s);
            field(&s)
        };
        let args = |s: &mut ServerSpec| s.args = vec!["a".into(), "b".into(), "c\0d".into()];
        assert_eq!(with(&args).as_deref(), Some("args[2]"));
        assert_eq!(
            with(&|s| s.command = "py\0thon".into()).as_deref(),
            Some("command")
        );
        assert_eq!(
            with(&|s| s.cwd = Some("/tmp\0/x".into())).as_deref(),
            Some("cwd")
        );
        let env = |k: &str, v: &str| {
            let (k, v) = (k.to_string(), v.to_string());
            with(&move |s: &mut ServerSpec| {
                s.env.insert(k.clone(), v.clone());
            })
        };
        assert_eq!(env("K", "v\0").as_deref(), Some("env.K"));
        for bad_key in ["", "A=B", "A\0"] {
            assert_eq!(env(bad_key, "v").as_deref(), Some("env"), "{bad_key:?}");
        }
        assert_eq!(env("GOOD_1", "any value = fine").as_deref(), None);
        assert_eq!(
            with(&|s| s.capabilities = vec!["ok".into(), "a\u{7}".into()]).as_deref(),
            Some("capabilities[1]")
        );
        assert_eq!(
            with(&|s| s.allow_capabilities = vec!["a b".into()]).as_deref(),
            Some("allow_capabilities[0]")
        );
        assert_eq!(
            with(&|s| s.args = vec!["x".repeat(128 * 1024)]).as_deref(),
            Some("args[0]")
        );
        assert_eq!(
            with(&|s| s.args = vec!["x".repeat(100_000); 3]).as_deref(),
            Some("spec")
        );
        let msg = {
            let mut s = spec("t");
            s.args = vec!["a\0".into()];
            s.validate().err().map(|e| e.1).unwrap_or_default()
        };
        assert!(msg.contains("NUL"), "{msg}");
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
        for bad in ["", "Time", "-x", "a b", &"x".repeat(65), "a\0"] {
            assert_eq!(field(&spec(bad)).as_deref(), Some("id"), "{bad}");
        }
        let mut s = spec("t");
        s.cwd = Some("relative".into());
        assert_eq!(field(&s).as_deref(), Some("cwd"));
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
