//! A package named exactly: `npm:NAME@VERSION` or `pypi:NAME==VERSION` (the seed's
//! `<server_spec>` for `mcp register`), the unit that discovery finds and acquisition installs.
//!
//! Only exact versions: a range or tag would let what is installed change between the vetting
//! and a reinstall. Names are checked against each registry's own rules before anything is
//! spawned, so a name can never carry an option (`--…`), a path or a URL into `npm` or `pip`.

use std::fmt;

/// Where a package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Registry {
    /// An npm package, run with node.
    Npm,
    /// A PyPI package, run with python3 from its own venv.
    Pypi,
}

/// A package at an exact version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct PackageRef {
    /// Its registry.
    pub registry: Registry,
    /// Its name as the registry spells it (`@scope/name` for scoped npm packages).
    pub name: String,
    /// Its exact version.
    pub version: String,
}

/// Longest npm package name (npm's own limit).
const MAX_NPM_NAME: usize = 214;
/// Longest PyPI name and longest version accepted.
const MAX_NAME: usize = 128;

impl PackageRef {
    /// Parses `npm:NAME@VERSION` or `pypi:NAME==VERSION`.
    ///
    /// # Errors
    /// What is wrong, in a sentence fit for the operator.
    pub fn parse(text: &str) -> Result<PackageRef, String> {
        if let Some(rest) = text.strip_prefix("npm:") {
            // The version follows the last '@' that is not the scope's.
            let at = rest
                .rfind('@')
                .filter(|&i| i > 0)
                .ok_or_else(|| format!("{text:?}: expected npm:NAME@VERSION"))?;
            PackageRef::new(Registry::Npm, &rest[..at], &rest[at + 1..])
        } else if let Some(rest) = text.strip_prefix("pypi:") {
            let (name, version) = rest
                .split_once("==")
                .ok_or_else(|| format!("{text:?}: expected pypi:NAME==VERSION"))?;
            PackageRef::new(Registry::Pypi, name, version)
        } else {
            Err(format!(
                "{text:?}: expected npm:NAME@VERSION or pypi:NAME==VERSION"
            ))
        }
    }

    /// A package from its parts, checked.
    ///
    /// # Errors
    /// The name or version breaks the registry's rules, or the version is not exact.
    pub fn new(registry: Registry, name: &str, version: &str) -> Result<PackageRef, String> {
        let name_ok = match registry {
            Registry::Npm => npm_name_ok(name),
            Registry::Pypi => pypi_name_ok(name),
        };
        if !name_ok {
            return Err(format!("{name:?} is not a valid {registry} package name"));
        }
        let version_ok = match registry {
            Registry::Npm => semver_exact(version),
            Registry::Pypi => pep440_exact(version),
        };
        if !version_ok {
            return Err(format!(
                "{version:?} is not an exact {registry} version (ranges, tags and wildcards are refused)"
            ));
        }
        Ok(PackageRef {
            registry,
            name: name.to_string(),
            version: version.to_string(),
        })
    }

    /// The argument the package client installs: `NAME@VERSION` (npm) or `NAME==VERSION`.
    pub fn install_arg(&self) -> String {
        match self.registry {
            Registry::Npm => format!("{}@{}", self.name, self.version),
            Registry::Pypi => format!("{}=={}", self.name, self.version),
        }
    }

    /// The name in a form fit for a directory and a server id: lower case, `[a-z0-9-]`, at
    /// most 48 bytes (`@scope/name` → `scope-name`; `mcp_server.time` → `mcp-server-time`).
    pub fn slug(&self) -> String {
        let mut out = String::new();
        for c in self.name.chars() {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        while out.ends_with('-') {
            out.pop();
        }
        out.truncate(48);
        while out.ends_with('-') {
            out.pop();
        }
        if out.is_empty() {
            out.push_str("package");
        }
        out
    }
}

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Registry::Npm => "npm",
            Registry::Pypi => "pypi",
        })
    }
}

impl fmt::Display for PackageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.registry, self.install_arg())
    }
}

/// npm's rules for new packages: at most 214 bytes, lower case, URL-safe characters, not
/// starting with `.` or `_`; a scope is `@scope/` with the same rules.
fn npm_name_ok(name: &str) -> bool {
    fn part(p: &str) -> bool {
        !p.is_empty()
            && !p.starts_with(['.', '_', '-'])
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._~".contains(&b))
    }
    if name.len() > MAX_NPM_NAME {
        return false;
    }
    match name.strip_prefix('@') {
        Some(scoped) => scoped
            .split_once('/')
            .is_some_and(|(scope, n)| part(scope) && part(n)),
        None => part(name),
    }
}

/// PyPI's rules: ASCII letters, digits, `.`, `_`, `-`, starting and ending with a letter or
/// digit.
fn pypi_name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// `MAJOR.MINOR.PATCH` with an optional `-pre` and `+build` of `[0-9A-Za-z.-]`.
fn semver_exact(v: &str) -> bool {
    if v.is_empty() || v.len() > MAX_NAME {
        return false;
    }
    let (core, rest) = match v.find(['-', '+']) {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, ""),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && (v.len() == core.len()
            || (!rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.+".contains(&b))))
}

/// A PEP 440 release pinned exactly: `N(.N)*` then optionally `aN`/`bN`/`rcN`, `.postN`,
/// `.devN` (no epochs, local versions or wildcards).
fn pep440_exact(v: &str) -> bool {
    fn digits(s: &str) -> Option<&str> {
        let end = s.bytes().take_while(u8::is_ascii_digit).count();
        (end > 0).then(|| &s[end..])
    }
    if v.len() > MAX_NAME {
        return false;
    }
    let Some(mut rest) = digits(v) else {
        return false;
    };
    while let Some(r) = rest.strip_prefix('.').and_then(digits) {
        rest = r;
    }
    for pre in ["a", "b", "rc"] {
        if let Some(r) = rest.strip_prefix(pre).and_then(digits) {
            rest = r;
            break;
        }
    }
    for suffix in [".post", ".dev"] {
        if let Some(r) = rest.strip_prefix(suffix).and_then(digits) {
            rest = r;
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        let p = PackageRef::parse("npm:@modelcontextprotocol/server-memory@0.6.3").expect("npm");
        assert_eq!(p.registry, Registry::Npm);
        assert_eq!(p.name, "@modelcontextprotocol/server-memory");
        assert_eq!(p.install_arg(), "@modelcontextprotocol/server-memory@0.6.3");
        assert_eq!(p.slug(), "modelcontextprotocol-server-memory");
        assert_eq!(
            p.to_string(),
            "npm:@modelcontextprotocol/server-memory@0.6.3"
        );
        let q = PackageRef::parse("pypi:mcp-server-time==2025.9.25").expect("pypi");
        assert_eq!(q.registry, Registry::Pypi);
        assert_eq!(q.install_arg(), "mcp-server-time==2025.9.25");
        assert_eq!(q.slug(), "mcp-server-time");
        assert_eq!(PackageRef::parse(&q.to_string()), Ok(q));
    }

    #[test]
    fn refuses_ranges_tags_and_injection() {
        for bad in [
            "npm:left-pad",
            "npm:left-pad@latest",
            "npm:left-pad@^1.2.3",
            "npm:left-pad@1.2",
            "npm:left-pad@1.2.x",
            "npm:@scope@1.0.0",
            "npm:--registry=x@1.0.0",
            "npm:../x@1.0.0",
            "npm:Left-Pad@1.0.0",
            "npm:a b@1.0.0",
            "npm:git+https://x/y@1.0.0",
            "npm:@1.0.0",
            "pypi:mcp-server-time",
            "pypi:mcp-server-time>=1.0",
            "pypi:mcp-server-time==1.*",
            "pypi:-e==1.0",
            "pypi:x==1.0 ; os_name",
            "pypi:x==1.0+local",
            "pip:x==1.0",
            "",
        ] {
            assert!(PackageRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn exact_versions() {
        for ok in ["1.2.3", "0.0.1-rc.1", "1.2.3+build.5", "2025.4.25"] {
            assert!(semver_exact(ok), "{ok}");
        }
        for ok in ["1.0", "2025.9.25", "1.0rc1", "1.0.post2", "1.0a1.dev3", "3"] {
            assert!(pep440_exact(ok), "{ok}");
        }
        for bad in ["", "1.2.3-", "1..2", "v1.2.3", "1.2.3.4"] {
            assert!(!semver_exact(bad), "{bad}");
        }
        for bad in ["", "1.", "1.0rc", "==1", "1.0.post", "1!2.0"] {
            assert!(!pep440_exact(bad), "{bad}");
        }
    }

    #[test]
    fn slug_is_bounded_and_safe() {
        let long = format!("npm:{}@1.0.0", "a".repeat(200));
        let p = PackageRef::parse(&long).expect("long");
        assert_eq!(p.slug().len(), 48);
        let p = PackageRef::parse("pypi:Mcp_Server.Time==1.0").expect("pypi");
        assert_eq!(p.slug(), "mcp-server-time");
    }
}
