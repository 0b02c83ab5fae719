//! Installing a package where the daemon keeps it, and reading what was installed: the argument
//! lists of the package clients (built here, spawned by the room without a shell), and the
//! inspection of the installed tree (run on the worker: it reads files of unknown number).
//!
//! Invariants: a package is installed only under `STATE/servers/SLUG`; no argument names a
//! registry (npm and pip use the operator's own configuration, which the children inherit
//! through [`client_environment`]); every version is exact (`PackageRef`), so what was vetted
//! is what runs. Inspection reads every file with [`crate::state::read_small_file`] and a cap,
//! and walks at most [`MAX_PACKAGES`] packages.

use crate::variety::package::{PackageRef, Registry};
use std::path::{Path, PathBuf};

/// Bytes of a `package.json`, an `entry_points.txt` or a `METADATA` read at most.
const FILE_CAP: u64 = 1 << 20;
/// Installed packages (npm) inspected for install scripts at most; beyond, the criterion says
/// how many were not looked at.
pub const MAX_PACKAGES: usize = 4000;
/// Packages named in a finding at most.
const MAX_NAMED: usize = 16;

/// Where package `slug` is installed.
pub fn install_dir(state_dir: &Path, slug: &str) -> PathBuf {
    state_dir.join("servers").join(slug)
}

/// The commands that install `package` into `dir`, in order (each must exit 0).
pub fn install_commands(package: &PackageRef, dir: &Path) -> Vec<Vec<String>> {
    let dir_s = dir.display().to_string();
    match package.registry {
        Registry::Npm => vec![vec![
            "npm".into(),
            "install".into(),
            "--ignore-scripts".into(),
            "--no-audit".into(),
            "--no-fund".into(),
            "--no-save".into(),
            "--prefix".into(),
            dir_s,
            package.install_arg(),
        ]],
        Registry::Pypi => {
            let venv = dir.join("venv");
            vec![
                vec![
                    "python3".into(),
                    "-m".into(),
                    "venv".into(),
                    venv.display().to_string(),
                ],
                vec![
                    venv.join("bin/pip").display().to_string(),
                    "install".into(),
                    "--no-input".into(),
                    package.install_arg(),
                ],
            ]
        }
    }
}

/// The parts of the daemon's environment a package client reads its configuration from (the
/// operator's registry, proxy and certificate settings), added to the sandbox's own.
pub fn client_environment() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| {
            let upper = k.to_ascii_uppercase();
            upper.starts_with("NPM_CONFIG_")
                || upper.starts_with("PIP_")
                || matches!(
                    upper.as_str(),
                    "NODE_EXTRA_CA_CERTS"
                        | "SSL_CERT_FILE"
                        | "SSL_CERT_DIR"
                        | "HTTP_PROXY"
                        | "HTTPS_PROXY"
                        | "NO_PROXY"
                        | "XDG_CONFIG_HOME"
                        | "XDG_CACHE_HOME"
                )
        })
        .collect()
}

/// What the installed tree says about the package.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Installed {
    /// The command that runs the server and its arguments.
    pub command: Vec<String>,
    /// The ownership name the package claims (`mcpName` in `package.json`, a `mcp-name:`
    /// line in PyPI metadata), when it claims one.
    pub mcp_name: Option<String>,
    /// Installed packages that declare install scripts (`install`, `preinstall`,
    /// `postinstall`, or a native build), by name (at most [`MAX_NAMED`]); `None` when the
    /// registry has no such scripts (wheels run nothing at install time).
    pub install_scripts: Option<Vec<String>>,
    /// Packages not inspected (beyond [`MAX_PACKAGES`]).
    pub not_inspected: usize,
}

/// Reads what was installed for `package` in `dir` (on the worker).
///
/// # Errors
/// The entry point cannot be found, in a sentence for the operator.
pub fn inspect(package: &PackageRef, dir: &Path) -> Result<Installed, String> {
    match package.registry {
        Registry::Npm => inspect_npm(package, dir),
        Registry::Pypi => inspect_pypi(package, dir),
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let bytes = crate::state::read_small_file(path, FILE_CAP)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn inspect_npm(package: &PackageRef, dir: &Path) -> Result<Installed, String> {
    let modules = dir.join("node_modules");
    let root = modules.join(&package.name);
    let manifest = read_json(&root.join("package.json"))?;
    let bin = npm_bin(&package.name, &manifest["bin"]).ok_or_else(|| {
        format!(
            "{} declares no `bin` entry point: it cannot be run as a stdio server",
            package.name
        )
    })?;
    let script = root.join(&bin);
    // The entry must stay inside the package (a `bin` of `../../x` would run something else).
    let inside = std::fs::canonicalize(&script)
        .ok()
        .zip(std::fs::canonicalize(&root).ok())
        .is_some_and(|(s, r)| s.starts_with(r));
    if !inside {
        return Err(format!(
            "entry point {bin:?} of {} is missing or outside the package",
            package.name
        ));
    }
    let mcp_name = manifest["mcpName"].as_str().map(str::to_string);
    let (scripts, not_inspected) = npm_install_scripts(&modules);
    Ok(Installed {
        command: vec!["node".into(), script.display().to_string()],
        mcp_name,
        install_scripts: Some(scripts),
        not_inspected,
    })
}

/// The `bin` entry that runs package `name`: a string, or the map's entry named like the
/// package (without its scope), or its only entry, or the first in name order.
pub fn npm_bin(name: &str, bin: &serde_json::Value) -> Option<String> {
    if let Some(s) = bin.as_str() {
        return Some(s.to_string());
    }
    let map = bin.as_object()?;
    let short = name.rsplit('/').next().unwrap_or(name);
    map.get(short)
        .or_else(|| map.iter().min_by(|a, b| a.0.cmp(b.0)).map(|(_, v)| v))
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// Whether a `package.json` asks for code to run at install time.
pub fn has_install_scripts(manifest: &serde_json::Value) -> bool {
    let scripts = &manifest["scripts"];
    ["preinstall", "install", "postinstall"]
        .iter()
        .any(|k| scripts.get(*k).is_some())
        || manifest["gypfile"].as_bool() == Some(true)
}

/// Installed packages that declare install scripts (first [`MAX_NAMED`], sorted), and how
/// many packages were not inspected.
fn npm_install_scripts(modules: &Path) -> (Vec<String>, usize) {
    let mut found = Vec::new();
    let mut seen = 0usize;
    let mut skipped = 0usize;
    let mut dirs = vec![modules.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if name.starts_with('@') && dir == *modules {
                dirs.push(path);
                continue;
            }
            if seen >= MAX_PACKAGES {
                skipped += 1;
                continue;
            }
            seen += 1;
            if let Ok(manifest) = read_json(&path.join("package.json")) {
                if has_install_scripts(&manifest) {
                    found.push(
                        manifest["name"]
                            .as_str()
                            .map_or_else(|| name.clone(), str::to_string),
                    );
                }
            }
            let nested = path.join("node_modules");
            if nested.is_dir() {
                dirs.push(nested);
            }
        }
    }
    found.sort();
    found.dedup();
    found.truncate(MAX_NAMED);
    (found, skipped)
}

fn inspect_pypi(package: &PackageRef, dir: &Path) -> Result<Installed, String> {
    let venv = dir.join("venv");
    let lib = venv.join("lib");
    let normal = normalize_pypi(&package.name);
    // venv/lib/pythonX.Y/site-packages/NAME-VERSION.dist-info
    let mut dist_info = None;
    for py in std::fs::read_dir(&lib)
        .map_err(|e| format!("{}: {e}", lib.display()))?
        .flatten()
    {
        let site = py.path().join("site-packages");
        let Ok(entries) = std::fs::read_dir(&site) else {
            continue;
        };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if let Some(stem) = n.strip_suffix(".dist-info") {
                let dist = stem.rsplit_once('-').map_or(stem, |(d, _)| d);
                if normalize_pypi(dist) == normal {
                    dist_info = Some(e.path());
                }
            }
        }
    }
    let dist_info = dist_info
        .ok_or_else(|| format!("{} is not in the venv after pip install", package.name))?;
    let entry_points = crate::state::read_small_file(&dist_info.join("entry_points.txt"), FILE_CAP)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let script = console_script(&package.name, &entry_points).ok_or_else(|| {
        format!(
            "{} declares no console script: it cannot be run as a stdio server",
            package.name
        )
    })?;
    let path = venv.join("bin").join(&script);
    if !path.is_file() {
        return Err(format!("console script {} is missing", path.display()));
    }
    let metadata = crate::state::read_small_file(&dist_info.join("METADATA"), FILE_CAP)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Ok(Installed {
        command: vec![path.display().to_string()],
        mcp_name: mcp_name_line(&metadata),
        install_scripts: None,
        not_inspected: 0,
    })
}

/// PyPI's name normalization (PEP 503): lower case, runs of `-`, `_`, `.` become `-`.
pub fn normalize_pypi(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The console script that runs package `name`: the one named like the package (normalized),
/// else the first in name order.
pub fn console_script(name: &str, entry_points: &str) -> Option<String> {
    let mut in_section = false;
    let mut scripts = Vec::new();
    for line in entry_points.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[console_scripts]";
            continue;
        }
        if in_section {
            if let Some((script, _)) = line.split_once('=') {
                let script = script.trim();
                if !script.is_empty() && !script.contains('/') {
                    scripts.push(script.to_string());
                }
            }
        }
    }
    scripts.sort();
    let wanted = normalize_pypi(name);
    scripts
        .iter()
        .find(|s| normalize_pypi(s) == wanted)
        .or_else(|| scripts.first())
        .cloned()
}

/// The `mcp-name: NAME` line of a README or package metadata (the registry's ownership proof
/// for PyPI packages), anywhere in the text.
pub fn mcp_name_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let at = line.find("mcp-name:")?;
        let rest = line[at + "mcp-name:".len()..].trim();
        let name = rest.split_whitespace().next()?;
        let name = name.trim_end_matches(|c: char| !c.is_alphanumeric());
        (!name.is_empty()).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn install_commands_pin_the_version_and_name_no_registry() {
        let npm = PackageRef::parse("npm:@modelcontextprotocol/server-memory@2026.8.31").unwrap();
        let cmds = install_commands(&npm, Path::new("/s/servers/x"));
        assert_eq!(cmds.len(), 1);
        assert_eq!(
            cmds[0],
            [
                "npm",
                "install",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--prefix",
                "/s/servers/x",
                "@modelcontextprotocol/server-memory@2026.8.31"
            ]
        );
        let py = PackageRef::parse("pypi:mcp-server-time==2026.10.19").unwrap();
        let cmds = install_commands(&py, Path::new("/s/servers/t"));
        assert_eq!(cmds[0], ["python3", "-m", "venv", "/s/servers/t/venv"]);
        assert_eq!(
            cmds[1],
            [
                "/s/servers/t/venv/bin/pip",
                "install",
                "--no-input",
                "mcp-server-time==2026.10.19"
            ]
        );
        for arg in cmds
            .iter()
            .chain(install_commands(&npm, Path::new("/d")).iter())
            .flatten()
        {
            assert!(
                !arg.contains("registry") && !arg.contains("index-url"),
                "{arg}"
            );
        }
    }

    #[test]
    fn the_entry_point_is_found_in_each_form() {
        assert_eq!(
            npm_bin("x", &json!("dist/x.js")).as_deref(),
            Some("dist/x.js")
        );
        let map = json!({"other": "o.js", "server-memory": "m.js"});
        assert_eq!(
            npm_bin("@scope/server-memory", &map).as_deref(),
            Some("m.js")
        );
        assert_eq!(
            npm_bin("y", &json!({"b": "b.js", "a": "a.js"})).as_deref(),
            Some("a.js")
        );
        assert_eq!(npm_bin("y", &json!(null)), None);
        let eps = "[console_scripts]\nzeta = z:main\nmcp-server-time = mcp_server_time:main\n\n[gui_scripts]\ng = g:m\n";
        assert_eq!(
            console_script("mcp_server_time", eps).as_deref(),
            Some("mcp-server-time")
        );
        assert_eq!(
            console_script("other", eps).as_deref(),
            Some("mcp-server-time")
        );
        assert_eq!(console_script("x", "[gui_scripts]\ng = g:m\n"), None);
    }

    #[test]
    fn ownership_and_install_scripts_are_read() {
        assert_eq!(
            mcp_name_line("Name: x\n\n<!-- mcp-name: io.github.user/server -->\n").as_deref(),
            Some("io.github.user/server")
        );
        assert_eq!(mcp_name_line("mcp-name:   \n"), None);
        assert!(has_install_scripts(
            &json!({"scripts": {"postinstall": "node x"}})
        ));
        assert!(has_install_scripts(&json!({"gypfile": true})));
        assert!(!has_install_scripts(
            &json!({"scripts": {"build": "tsc", "prepare": "x"}})
        ));
        assert_eq!(normalize_pypi("Mcp_Server..Time"), "mcp-server-time");
    }
}
