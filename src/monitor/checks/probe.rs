//! The checks that run on the worker thread: they block (an HTTP exchange, a DNS look-up; a
//! `stat` or `statvfs` of a path on a network or hung mount can block for minutes, so file
//! and filesystem checks go there too, although a local `stat` costs microseconds) or read
//! directories of unknown size (`/proc`), so they never run on the loop. Each returns an
//! [`Outcome`]; deciding what it means over time is not their business.
//!
//! Invariants: every read is bounded (an HTTP body to [`HTTP_BODY_BYTES`], a pid file to
//! [`PID_FILE_BYTES`]); every network operation carries the check's timeout; HTTP goes through
//! [`crate::outbound`], which owns TLS trust and says why a handshake failed.

use super::spec::{CheckKind, CheckSpec};
use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Bytes of an HTTP body searched for `expect_body`.
pub const HTTP_BODY_BYTES: u64 = 64 * 1024;
/// Largest pid file read.
pub const PID_FILE_BYTES: u64 = 64;
/// Longest message kept for a run.
pub const MESSAGE_BYTES: usize = 512;

/// What one run found.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Up (the check passed) or down.
    pub up: bool,
    /// What was measured (`tcp_connect`, `http_status`, `exit_code`, `file_age_s`,
    /// `process_running`, `used_percent`).
    pub metric: &'static str,
    /// The value read (1/0 when there is nothing better).
    pub value: f64,
    /// The limit it was compared with, if any.
    pub threshold: Option<f64>,
    /// For people, at most [`MESSAGE_BYTES`].
    pub message: String,
}

impl Outcome {
    /// A down outcome with `message`.
    pub fn down(metric: &'static str, message: impl Into<String>) -> Outcome {
        Outcome {
            up: false,
            metric,
            value: 0.0,
            threshold: None,
            message: bounded(message.into()),
        }
    }

    /// An up outcome with `message`.
    pub fn up(metric: &'static str, value: f64, message: impl Into<String>) -> Outcome {
        Outcome {
            up: true,
            metric,
            value,
            threshold: None,
            message: bounded(message.into()),
        }
    }
}

/// Cuts `text` to [`MESSAGE_BYTES`] on a character boundary.
pub fn bounded(mut text: String) -> String {
    if text.len() > MESSAGE_BYTES {
        text.truncate(crate::text::floor_boundary(&text, MESSAGE_BYTES));
    }
    text
}

/// The metric a kind reports.
pub fn metric_of(kind: CheckKind) -> &'static str {
    match kind {
        CheckKind::Tcp => "tcp_connect",
        CheckKind::Http => "http_status",
        CheckKind::Exec => "exit_code",
        CheckKind::File => "file_age_s",
        CheckKind::Process => "process_running",
        CheckKind::Filesystem => "used_percent",
    }
}

/// Runs a worker-side check (http, file, process, filesystem); an `https://` check trusts the
/// bundled roots plus `ca_file` (`security.ca_file`, empty: none).
pub fn run(spec: &CheckSpec, ca_file: &str) -> Outcome {
    match spec.kind {
        CheckKind::Http => http(spec, ca_file),
        CheckKind::File => file(spec, SystemTime::now()),
        CheckKind::Process => process(spec),
        CheckKind::Filesystem => filesystem(spec),
        // tcp and exec run on the loop.
        CheckKind::Tcp | CheckKind::Exec => {
            Outcome::down(metric_of(spec.kind), "not a worker check")
        }
    }
}

/// Resolves `host:port` to its first address (on the worker: DNS blocks).
///
/// # Errors
/// The resolver's error, or no address.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

fn http(spec: &CheckSpec, ca_file: &str) -> Outcome {
    let metric = "http_status";
    let agent = match crate::outbound::agent(ca_file, Duration::from_millis(spec.timeout_ms)) {
        Ok(a) => a,
        Err(e) => return Outcome::down(metric, format!("GET {}: {e}", spec.target)),
    };
    let mut response = match agent.get(&spec.target).call() {
        Ok(r) => r,
        Err(e) => {
            let why = crate::outbound::describe(&e);
            return Outcome::down(metric, format!("GET {}: {why}", spec.target));
        }
    };
    let status = response.status().as_u16();
    let status_ok = match spec.expect_status {
        Some(want) => status == want,
        None => (200..300).contains(&status),
    };
    let mut outcome = Outcome {
        up: status_ok,
        metric,
        value: f64::from(status),
        threshold: spec.expect_status.map(f64::from),
        message: String::new(),
    };
    if !status_ok {
        let want = spec
            .expect_status
            .map_or("2xx".to_string(), |s| s.to_string());
        outcome.message = format!("status {status} (expected {want})");
        return outcome;
    }
    if let Some(needle) = &spec.expect_body {
        let mut body = Vec::new();
        let read = response
            .body_mut()
            .as_reader()
            .take(HTTP_BODY_BYTES)
            .read_to_end(&mut body);
        if let Err(e) = read {
            outcome.up = false;
            outcome.message = bounded(format!("status {status}, reading the body: {e}"));
            return outcome;
        }
        let text = String::from_utf8_lossy(&body);
        if !text.contains(needle.as_str()) {
            outcome.up = false;
            outcome.message = bounded(format!(
                "status {status}, body does not contain {:?}",
                needle
            ));
            return outcome;
        }
    }
    outcome.message = format!("status {status}");
    outcome
}

fn file(spec: &CheckSpec, now: SystemTime) -> Outcome {
    let metric = "file_age_s";
    let meta = match std::fs::metadata(&spec.target) {
        Ok(m) => m,
        Err(e) => return Outcome::down(metric, format!("{}: {e}", spec.target)),
    };
    let age = meta
        .modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .map_or(0, |d| d.as_secs());
    let size = meta.len();
    let mut outcome = Outcome::up(metric, age as f64, format!("age {age} s, {size} bytes"));
    outcome.threshold = spec.max_age_s.map(|s| s as f64);
    if let Some(max) = spec.max_age_s.filter(|max| age > *max) {
        outcome.up = false;
        outcome.message = format!("age {age} s is over {max} s");
    } else if let Some(min) = spec.min_size.filter(|min| size < *min) {
        outcome.up = false;
        outcome.message = format!("size {size} bytes is under {min}");
    } else if let Some(max) = spec.max_size.filter(|max| size > *max) {
        outcome.up = false;
        outcome.message = format!("size {size} bytes is over {max}");
    }
    outcome
}

fn process(spec: &CheckSpec) -> Outcome {
    let metric = "process_running";
    if spec.target.starts_with('/') {
        let text = match crate::state::read_small_file(Path::new(&spec.target), PID_FILE_BYTES) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => return Outcome::down(metric, format!("pid file {}: {e}", spec.target)),
        };
        let Some(pid) = text.trim().parse::<i32>().ok().filter(|p| *p > 0) else {
            return Outcome::down(metric, format!("pid file {} holds no pid", spec.target));
        };
        if crate::sys::process_running(pid) {
            Outcome::up(metric, 1.0, format!("pid {pid} is running"))
        } else {
            Outcome::down(
                metric,
                format!("pid {pid} from {} is not running", spec.target),
            )
        }
    } else {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Outcome::down(metric, "cannot read /proc");
        };
        let mut found = 0u32;
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim_end_matches('\n') == spec.target && crate::sys::process_running(pid) {
                found += 1;
            }
        }
        if found > 0 {
            Outcome::up(
                metric,
                f64::from(found),
                format!("{found} process(es) named {}", spec.target),
            )
        } else {
            Outcome::down(metric, format!("no running process named {}", spec.target))
        }
    }
}

fn filesystem(spec: &CheckSpec) -> Outcome {
    let metric = "used_percent";
    match crate::sys::filesystem_used_percent(Path::new(&spec.target)) {
        Ok(used) => {
            let used = (used * 100.0).round() / 100.0;
            let up = used <= spec.max_used_percent;
            Outcome {
                up,
                metric,
                value: used,
                threshold: Some(spec.max_used_percent),
                message: format!(
                    "{used}% used of {} (limit {}%)",
                    spec.target, spec.max_used_percent
                ),
            }
        }
        Err(e) => Outcome::down(metric, format!("{}: {e}", spec.target)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, target: &str, extra: &str) -> CheckSpec {
        toml::from_str(&format!(
            "name = \"t\"\nkind = \"{kind}\"\ntarget = \"{target}\"\n{extra}"
        ))
        .expect("spec")
    }

    #[test]
    fn files_are_judged_by_age_and_size() {
        let dir = std::env::temp_dir().join(format!("vsm-probe-{}", std::process::id()));
        std::fs::write(&dir, b"12345").expect("write");
        let path = dir.display().to_string();
        let now = SystemTime::now();
        assert!(file(&spec("file", &path, "max_age_s = 60"), now).up);
        let later = now + Duration::from_secs(120);
        let old = file(&spec("file", &path, "max_age_s = 60"), later);
        assert!(!old.up && old.message.contains("over 60"), "{old:?}");
        assert!(!file(&spec("file", &path, "min_size = 6"), now).up);
        assert!(!file(&spec("file", &path, "max_size = 4"), now).up);
        let _ = std::fs::remove_file(&dir);
        assert!(
            !file(&spec("file", &path, ""), now).up,
            "a missing file is down"
        );
    }

    #[test]
    fn filesystems_compare_used_space_with_the_limit() {
        assert!(
            !filesystem(&spec("filesystem", "/", "max_used_percent = 0.0")).up || {
                // A filesystem with nothing used at all is at 0 %: not over a 0 % limit.
                crate::sys::filesystem_used_percent(Path::new("/")).unwrap_or(1.0) == 0.0
            }
        );
        assert!(filesystem(&spec("filesystem", "/", "max_used_percent = 100.0")).up);
        assert!(!filesystem(&spec("filesystem", "/no/such/mount", "")).up);
    }

    #[test]
    fn processes_are_found_by_name_and_pid_file() {
        let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
        assert!(process(&spec("process", comm.trim(), "")).up);
        assert!(!process(&spec("process", "vsm-no-such", "")).up);
        let pidfile = std::env::temp_dir().join(format!("vsm-probe-pid-{}", std::process::id()));
        std::fs::write(&pidfile, format!("{}\n", std::process::id())).expect("write");
        assert!(process(&spec("process", &pidfile.display().to_string(), "")).up);
        std::fs::write(&pidfile, "junk").expect("write");
        assert!(!process(&spec("process", &pidfile.display().to_string(), "")).up);
        let _ = std::fs::remove_file(&pidfile);
    }
}
