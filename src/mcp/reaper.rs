//! The reaper: a tiny companion process that outlives a killed daemon just long enough to
//! kill its MCP servers' process groups.
//!
//! PR_SET_PDEATHSIG kills a server when the daemon dies, but not the server's own children
//! (it is not inherited). So the daemon starts this process (its own binary, `__reaper`)
//! in a session of its own and tells it over a pipe which process groups exist (`+PGID`,
//! `-PGID` lines). When the pipe reaches end-of-file — the daemon exited, however it died,
//! even by SIGKILL — the reaper SIGKILLs every group it still knows and exits.

use crate::sys;
use std::collections::BTreeSet;
use std::io::{self, BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};

/// The argv[1] that turns the binary into the reaper.
pub const ARG: &str = "__reaper";

/// Runs the reaper until its stdin closes; returns the process exit code.
pub fn run() -> u8 {
    // Only the end of the pipe may end us: not a terminal's Ctrl-C, not a stray SIGTERM.
    sys::ignore_signal(libc::SIGINT);
    sys::ignore_signal(libc::SIGTERM);
    sys::ignore_signal(libc::SIGHUP);
    let mut groups = BTreeSet::new();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (op, pgid) = line.split_at(line.len().min(1));
        match (op, pgid.trim().parse::<i32>()) {
            ("+", Ok(p)) if p > 1 => {
                groups.insert(p);
            }
            ("-", Ok(p)) => {
                groups.remove(&p);
            }
            _ => {}
        }
    }
    for pgid in groups {
        let _ = sys::kill_group(pgid, libc::SIGKILL);
    }
    0
}

/// The daemon's handle on its reaper.
#[derive(Debug)]
pub struct Reaper {
    child: Child,
    stdin: ChildStdin,
}

impl Reaper {
    /// Starts the reaper from the daemon's own executable.
    ///
    /// # Errors
    /// The spawn error.
    pub fn spawn() -> io::Result<Reaper> {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("vsm-daemon")
            .arg(ARG)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/");
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(sys::new_session);
        }
        let mut child = cmd.spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("reaper stdin missing"))?;
        sys::set_nonblocking(&stdin)?;
        Ok(Reaper { child, stdin })
    }

    /// The reaper's pid (it is our child; it must not be mistaken for an orphan).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Tells the reaper a group exists (`true`) or is gone (`false`).
    pub fn track(&mut self, pgid: i32, alive: bool) {
        let line = format!("{}{pgid}\n", if alive { '+' } else { '-' });
        // A short line into a nearly empty pipe; if the reaper is gone, the daemon carries on
        // and only loses this safety net.
        if let Err(e) = self.stdin.write_all(line.as_bytes()) {
            log::warn!("the reaper did not take process group {pgid}: {e}");
        }
    }
}
