//! One short-lived sandboxed command, as exec checks and exec actions run it: spawned from the
//! loop thread in the same sandbox as MCP servers ([`crate::mcp::process::Process`]: own
//! session and process group, PDEATHSIG, no_new_privs, RLIMIT_CORE=0 and a bounded
//! RLIMIT_NOFILE, a cleared environment), stdin closed at once, stdout and stderr read
//! non-blocking into bounded captures, killed as a process group at its deadline, and reaped
//! by the daemon's SIGCHLD handler, which offers the pid to the room that spawned it.
//!
//! Invariants: at most [`CAPTURE_BYTES`] of each stream are kept (the rest is read and
//! counted, so the child never blocks on a full pipe); the group is signalled only before the
//! leader is reaped; a run ends exactly once, when its leader is reaped.

use crate::mcp::process::{Chunk, Launch, Pipe, PipeTokens, Process};
use crate::sys::ChildSandbox;
use mio::{Registry, Token};
use std::time::{Duration, Instant};

/// Bytes of stdout and of stderr kept per run.
pub const CAPTURE_BYTES: usize = 4096;
/// Open files a command may have.
const MAX_OPEN_FILES: u64 = 256;

/// The first [`CAPTURE_BYTES`] of a stream, and how many more were read.
#[derive(Debug, Default, Clone)]
pub struct Capture {
    kept: Vec<u8>,
    /// Bytes read beyond what was kept.
    pub dropped: u64,
}

impl Capture {
    fn push(&mut self, bytes: &[u8]) {
        let room = CAPTURE_BYTES.saturating_sub(self.kept.len());
        let take = room.min(bytes.len());
        self.kept.extend_from_slice(&bytes[..take]);
        self.dropped += (bytes.len() - take) as u64;
    }

    /// The kept text (lossy UTF-8), trimmed.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept).trim().to_string()
    }
}

/// How a child ended, from its raw wait status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl Exit {
    /// Decodes a raw `waitpid` status.
    pub fn from_status(status: i32) -> Exit {
        if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        }
    }

    /// For people: `exit code 3`, `killed by signal 9`.
    pub fn describe(self) -> String {
        match self {
            Exit::Code(c) => format!("exit code {c}"),
            Exit::Signal(s) => format!("killed by signal {s}"),
        }
    }
}

/// A running command.
#[derive(Debug)]
pub struct ChildRun {
    process: Process,
    tokens: PipeTokens,
    /// What it wrote to stdout.
    pub stdout: Capture,
    /// What it wrote to stderr.
    pub stderr: Capture,
    /// Set when the deadline killed it.
    pub timed_out: bool,
    /// When it was spawned.
    pub started: Instant,
}

/// The environment a command gets: PATH, HOME, LANG, then `extra`.
fn environment(extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("LANG".to_string(), "C.UTF-8".to_string()),
    ];
    if let Ok(home) = std::env::var("HOME") {
        env.push(("HOME".into(), home));
    }
    env.extend(extra.iter().cloned());
    env
}

impl ChildRun {
    /// Spawns `argv` (no shell) with the sandbox and `extra` environment, its pipes on `tokens`.
    ///
    /// # Errors
    /// Why it could not be started, for people.
    pub fn spawn(
        argv: &[String],
        extra: &[(String, String)],
        registry: &Registry,
        tokens: PipeTokens,
    ) -> Result<ChildRun, String> {
        let Some((command, args)) = argv.split_first() else {
            return Err("empty argv".into());
        };
        let launch = Launch {
            command: command.clone(),
            args: args.to_vec(),
            env: environment(extra),
            cwd: None,
            sandbox: ChildSandbox {
                parent: std::process::id() as i32,
                max_open_files: Some(MAX_OPEN_FILES),
                ..ChildSandbox::default()
            },
        };
        let mut process = Process::spawn(&launch, registry, tokens)
            .map_err(|e| crate::mcp::process::describe_spawn_error(&launch, &e))?;
        process.close_stdin(registry);
        Ok(ChildRun {
            process,
            tokens,
            stdout: Capture::default(),
            stderr: Capture::default(),
            timed_out: false,
            started: Instant::now(),
        })
    }

    /// Its pid (and process group).
    pub fn pid(&self) -> i32 {
        self.process.pid
    }

    /// Whether `token` is one of its pipes.
    pub fn owns(&self, token: Token) -> bool {
        token == self.tokens.stdout || token == self.tokens.stderr || token == self.tokens.stdin
    }

    /// Reads what is there on the pipe behind `token` (until it would block or closes).
    pub fn on_ready(&mut self, token: Token, registry: &Registry) {
        let (pipe, capture) = if token == self.tokens.stdout {
            (Pipe::Stdout, &mut self.stdout)
        } else if token == self.tokens.stderr {
            (Pipe::Stderr, &mut self.stderr)
        } else {
            return;
        };
        let mut buf = [0u8; 4096];
        // Bounded per wake-up: a chatty child cannot hold the loop.
        for _ in 0..64 {
            match self.process.read_chunk(pipe, registry, &mut buf) {
                Chunk::Data(n) => capture.push(&buf[..n]),
                Chunk::Empty | Chunk::Eof => return,
            }
        }
    }

    /// The deadline passed: kill the whole group. The run ends when the leader is reaped.
    pub fn kill(&mut self) {
        if self.process.exit_status.is_none() {
            self.timed_out = true;
            self.process.signal_group(libc::SIGKILL);
        }
    }

    /// Its leader was reaped: read what is left, kill what stayed in its group (a
    /// background grandchild holding the pipes), close the pipes. Returns how it ended and
    /// how long it ran.
    pub fn finish(&mut self, status: i32, registry: &Registry) -> (Exit, Duration) {
        self.process.exit_status = Some(status);
        self.on_ready(self.tokens.stdout, registry);
        self.on_ready(self.tokens.stderr, registry);
        // The group outlives its leader only through leftovers: they go with it.
        self.process.signal_group(libc::SIGKILL);
        self.process.close_all(registry);
        (Exit::from_status(status), self.started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_are_bounded_and_count_the_rest() {
        let mut c = Capture::default();
        c.push(&[b'a'; 3000]);
        c.push(&[b'b'; 3000]);
        assert_eq!(c.text().len(), CAPTURE_BYTES);
        assert_eq!(c.dropped, 6000 - CAPTURE_BYTES as u64);
    }

    #[test]
    fn exit_statuses_are_decoded() {
        assert_eq!(Exit::from_status(3 << 8), Exit::Code(3));
        assert_eq!(Exit::from_status(9), Exit::Signal(9));
        assert_eq!(Exit::Signal(9).describe(), "killed by signal 9");
    }
}
