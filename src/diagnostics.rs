//! Self-diagnostics: facts about the host and the daemon's own set-up that decide whether it
//! can do its job (kernel features for the sandbox, tools to run MCP servers, limits).
//!
//! Each check reports `ok`, `warn` or `fail` with a detail line; nothing here changes state.
//! The checks are cheap reads of /proc, /sys and PATH, safe to run on the loop; the slow one
//! (repeated fsync timing) is [`fsync_latency`], which the daemon runs on the worker thread.

use crate::sys;
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Works, but something is degraded or missing.
    Warn,
    /// Broken.
    Fail,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct Check {
    /// Short name (`kernel.pidfd`).
    pub name: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
}

impl Check {
    fn new(name: &str, verdict: Verdict, detail: impl Into<String>) -> Self {
        Check {
            name: name.to_string(),
            verdict,
            detail: detail.into(),
        }
    }

    /// JSON form.
    pub fn to_json(&self) -> Value {
        json!({"name": self.name, "status": self.verdict.as_str(), "detail": self.detail})
    }
}

/// `config.not_enforced`: keys the configuration validates and documents but nothing reads yet
/// (`pending`, in table order), and which of them the effective config sets to a non-default
/// value (`set`): those are promises the daemon does not keep, so the check warns.
pub fn not_enforced_check(pending: &[&str], set: &[String]) -> Check {
    const NAME: &str = "config.not_enforced";
    let all = pending.join(", ");
    if set.is_empty() {
        Check::new(
            NAME,
            Verdict::Ok,
            format!(
                "none set; {} keys are {}: {all}",
                pending.len(),
                crate::config::NOT_ENFORCED
            ),
        )
    } else {
        Check::new(
            NAME,
            Verdict::Warn,
            format!(
                "set but {} (no effect): {}; all such keys: {all}",
                crate::config::NOT_ENFORCED,
                set.join(", ")
            ),
        )
    }
}

/// Where the daemon's files are, for the file checks.
pub struct Paths<'a> {
    /// Control socket.
    pub socket: &'a Path,
    /// Pid file.
    pub pid_file: &'a Path,
}

/// Checks of the control socket and pid file.
pub fn file_checks(paths: &Paths<'_>) -> Vec<Check> {
    let mut out = Vec::new();
    match std::fs::symlink_metadata(paths.socket) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            let verdict = if mode & 0o077 == 0 {
                Verdict::Ok
            } else {
                Verdict::Warn
            };
            out.push(Check::new(
                "socket.permissions",
                verdict,
                format!(
                    "{} mode {:04o} owner uid {}",
                    paths.socket.display(),
                    mode,
                    meta.uid()
                ),
            ));
        }
        Err(e) => out.push(Check::new(
            "socket.permissions",
            Verdict::Fail,
            format!("{}: {e}", paths.socket.display()),
        )),
    }
    if let Some(dir) = paths.socket.parent() {
        if let Ok(meta) = std::fs::metadata(dir) {
            let mode = meta.permissions().mode() & 0o7777;
            let verdict = if mode & 0o022 == 0 || mode & 0o1000 != 0 {
                Verdict::Ok
            } else {
                Verdict::Warn
            };
            out.push(Check::new(
                "socket.directory",
                verdict,
                format!("{} mode {:04o}", dir.display(), mode),
            ));
        }
    }
    let pid = std::process::id().to_string();
    match std::fs::read_to_string(paths.pid_file) {
        Ok(text) if text.trim() == pid => out.push(Check::new(
            "pid_file",
            Verdict::Ok,
            format!("{} holds {pid}", paths.pid_file.display()),
        )),
        Ok(text) => out.push(Check::new(
            "pid_file",
            Verdict::Fail,
            format!(
                "{} holds '{}', not {pid}",
                paths.pid_file.display(),
                text.trim()
            ),
        )),
        Err(e) => out.push(Check::new(
            "pid_file",
            Verdict::Fail,
            format!("{}: {e}", paths.pid_file.display()),
        )),
    }
    out
}

/// Kernel features the supervisor relies on.
pub fn kernel_checks() -> Vec<Check> {
    let mut out = vec![Check::new(
        "kernel.release",
        Verdict::Ok,
        sys::kernel_release(),
    )];
    out.push(if sys::pidfd_supported() {
        Check::new("kernel.pidfd", Verdict::Ok, "pidfd_open available")
    } else {
        Check::new(
            "kernel.pidfd",
            Verdict::Warn,
            "pidfd_open unavailable (Linux < 5.3): children are tracked by SIGCHLD only",
        )
    });
    out.push(match sys::landlock_abi() {
        Ok(abi) => Check::new(
            "kernel.landlock",
            Verdict::Ok,
            format!("Landlock ABI {abi}"),
        ),
        Err(e) => Check::new(
            "kernel.landlock",
            Verdict::Warn,
            format!("Landlock unavailable ({e}): servers run without filesystem sandboxing"),
        ),
    });
    out.push(if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let controllers =
            std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
        Check::new(
            "kernel.cgroup_v2",
            Verdict::Ok,
            format!("unified hierarchy; controllers: {}", controllers.trim()),
        )
    } else {
        Check::new(
            "kernel.cgroup_v2",
            Verdict::Warn,
            "no cgroup v2 unified hierarchy at /sys/fs/cgroup",
        )
    });
    out
}

/// Programs MCP servers are commonly run with.
pub fn tool_checks() -> Vec<Check> {
    ["node", "npm", "npx", "python3"]
        .iter()
        .map(|tool| match find_in_path(tool) {
            Some(p) => Check::new(
                &format!("tool.{tool}"),
                Verdict::Ok,
                p.display().to_string(),
            ),
            None => Check::new(
                &format!("tool.{tool}"),
                Verdict::Warn,
                format!("{tool} not found on PATH: servers that need it cannot start"),
            ),
        })
        .collect()
}

/// Resource limits and memory.
pub fn limit_checks() -> Vec<Check> {
    let mut out = Vec::new();
    match sys::rlimit(libc::RLIMIT_NOFILE) {
        Ok((soft, hard)) => out.push(Check::new(
            "limits.nofile",
            if soft >= 1024 {
                Verdict::Ok
            } else {
                Verdict::Warn
            },
            format!("soft {soft}, hard {hard}"),
        )),
        Err(e) => out.push(Check::new("limits.nofile", Verdict::Warn, e.to_string())),
    }
    match std::fs::read_to_string("/proc/meminfo") {
        Ok(text) => {
            let (mem_total, avail, _, _) = crate::monitor::performance::parse_meminfo(&text);
            let verdict = if avail < 32 * 1024 * 1024 {
                Verdict::Warn
            } else {
                Verdict::Ok
            };
            out.push(Check::new(
                "host.memory",
                verdict,
                format!(
                    "{} MiB available of {} MiB",
                    avail / (1024 * 1024),
                    mem_total / (1024 * 1024)
                ),
            ));
        }
        Err(e) => out.push(Check::new(
            "host.memory",
            Verdict::Warn,
            format!("/proc/meminfo: {e}"),
        )),
    }
    out
}

/// Finds an executable on PATH.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Times `rounds` write+fsync+rename cycles in `dir` (blocking: run on the worker).
///
/// # Errors
/// The first I/O error, as text.
pub fn fsync_latency(dir: &Path, rounds: usize) -> Result<Vec<Duration>, String> {
    use std::io::Write;
    let tmp = dir.join(".fsync-probe.tmp");
    let dst = dir.join(".fsync-probe");
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all(&[0u8; 4096]).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &dst).map_err(|e| e.to_string())?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| e.to_string())?;
        times.push(start.elapsed());
    }
    let _ = std::fs::remove_file(&dst);
    Ok(times)
}

/// Summarises checks: the worst verdict and counts.
pub fn summary(checks: &[Check]) -> Value {
    let count = |v| checks.iter().filter(|c| c.verdict == v).count();
    json!({"ok": count(Verdict::Ok), "warn": count(Verdict::Warn), "fail": count(Verdict::Fail)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_enforced_check_warns_only_when_one_is_set() {
        let pending = [
            "security.blocked_capabilities",
            "consciousness.learning_rate",
        ];
        let c = not_enforced_check(&pending, &[]);
        assert_eq!(c.verdict, Verdict::Ok);
        assert!(
            c.detail.contains("2 keys are not enforced yet"),
            "{}",
            c.detail
        );
        let c = not_enforced_check(&pending, &["consciousness.learning_rate".to_string()]);
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(
            c.detail
                .starts_with("set but not enforced yet (no effect): consciousness.learning_rate;"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn finds_sh_on_path() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("definitely-not-a-program-vsm").is_none());
    }

    #[test]
    fn kernel_and_limit_checks_report() {
        let checks: Vec<Check> = kernel_checks().into_iter().chain(limit_checks()).collect();
        assert!(checks.iter().any(|c| c.name == "kernel.pidfd"));
        assert!(checks.iter().any(|c| c.name == "limits.nofile"));
        assert!(checks.iter().all(|c| !c.detail.is_empty()));
    }

    #[test]
    fn fsync_latency_measures_rounds() {
        let dir = std::env::temp_dir().join(format!("vsm-diag-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let t = fsync_latency(&dir, 3).expect("probe");
        assert_eq!(t.len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
