//! One MCP server process: spawn inside its sandbox, non-blocking pipes registered on the
//! loop from the moment of spawn, bounded writes, signals to its process group.
//!
//! Invariants: all three pipes are non-blocking and registered at spawn (a child that fills
//! stderr before answering never deadlocks); the pid is only signalled while it has not been
//! reaped; the stdin queue is bounded by [`MAX_STDIN_QUEUE`].

use crate::sys::{self, ChildSandbox};
use mio::unix::pipe::{Receiver, Sender};
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Bytes queued for a child's stdin before it counts as stuck.
pub const MAX_STDIN_QUEUE: usize = 16 * 1024 * 1024;

/// Checks a working directory before a spawn (one `stat`), so that a missing one is
/// reported as such and not as the `chdir` error the exec leaves behind.
///
/// # Errors
/// What is wrong with it, naming it.
pub fn check_cwd(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "working directory {} is not a directory",
            dir.display()
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(format!(
            "working directory {} does not exist",
            dir.display()
        )),
        Err(e) => Err(format!(
            "cannot use working directory {}: {e}",
            dir.display()
        )),
    }
}

/// Where a command without a `/` is found on `path` (the child's `PATH`), if anywhere.
pub fn find_in_path(command: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(command))
        .find(|p| p.is_file())
}

/// Says why a spawn failed. "No such file or directory" from exec means a missing program,
/// or a program whose interpreter or loader is missing: the first is told apart by looking
/// (only after the failure, so a start costs nothing more).
pub fn describe_spawn_error(launch: &Launch, err: &io::Error) -> String {
    let command = &launch.command;
    if err.kind() != io::ErrorKind::NotFound {
        return format!("cannot start '{command}': {err}");
    }
    if command.contains('/') {
        let path = match &launch.cwd {
            Some(cwd) => cwd.join(command),
            None => PathBuf::from(command),
        };
        if !path.exists() {
            return format!("command '{command}' does not exist");
        }
    } else {
        let path = launch
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or("", |(_, v)| v.as_str());
        if find_in_path(command, path).is_none() {
            return format!("command '{command}' not found in PATH ({path})");
        }
    }
    format!("cannot start '{command}': {err} (is its interpreter or loader missing?)")
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Program.
    pub command: String,
    /// Arguments.
    pub args: Vec<String>,
    /// The complete environment of the child.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Sandbox applied between fork and exec.
    pub sandbox: ChildSandbox,
}

/// Tokens of the three pipes.
#[derive(Debug, Clone, Copy)]
pub struct PipeTokens {
    /// The child's stdin (we write).
    pub stdin: Token,
    /// The child's stdout (we read).
    pub stdout: Token,
    /// The child's stderr (we read).
    pub stderr: Token,
}

/// A running (or exited but not yet fully drained) child.
#[derive(Debug)]
pub struct Process {
    /// Its pid (also its process group and session id: it called setsid).
    pub pid: i32,
    /// When it was spawned.
    pub started: Instant,
    /// Set once `waitpid` returned it: from then on it is never signalled by pid.
    pub exit_status: Option<i32>,
    stdin: Option<Sender>,
    stdout: Option<Receiver>,
    stderr: Option<Receiver>,
    queue: Vec<u8>,
    queued_from: usize,
}

/// Result of one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// This many bytes were read.
    Data(usize),
    /// Nothing more for now.
    Empty,
    /// The pipe is closed.
    Eof,
}

/// Which pipe a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    /// stdin.
    Stdin,
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

impl Process {
    /// Spawns and registers the pipes.
    ///
    /// # Errors
    /// The exec error (e.g. program not found) or a registration error.
    pub fn spawn(launch: &Launch, registry: &Registry, tokens: PipeTokens) -> io::Result<Process> {
        let mut cmd = Command::new(&launch.command);
        cmd.args(&launch.args)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(cwd) = &launch.cwd {
            cmd.current_dir(cwd);
        }
        let sandbox = launch.sandbox;
        // SAFETY: the closure only makes raw system calls (see sys::enter_child_sandbox).
        unsafe {
            cmd.pre_exec(move || sys::enter_child_sandbox(&sandbox));
        }
        let mut child = cmd.spawn()?;
        let pid = child.id() as i32;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(io::Error::other("child pipes missing"));
        };
        // `child` is dropped without waiting: the loop reaps it on SIGCHLD.
        let mut stdin = Sender::from(stdin);
        let mut stdout = Receiver::from(stdout);
        let mut stderr = Receiver::from(stderr);
        stdin.set_nonblocking(true)?;
        stdout.set_nonblocking(true)?;
        stderr.set_nonblocking(true)?;
        registry.register(&mut stdin, tokens.stdin, Interest::WRITABLE)?;
        registry.register(&mut stdout, tokens.stdout, Interest::READABLE)?;
        registry.register(&mut stderr, tokens.stderr, Interest::READABLE)?;
        Ok(Process {
            pid,
            started: Instant::now(),
            exit_status: None,
            stdin: Some(stdin),
            stdout: Some(stdout),
            stderr: Some(stderr),
            queue: Vec::new(),
            queued_from: 0,
        })
    }

    /// Queues bytes for stdin and writes what the pipe takes now.
    ///
    /// # Errors
    /// The pipe broke, or the queue would exceed [`MAX_STDIN_QUEUE`] (the child is not reading).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.stdin.is_none() {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        if self.queue.len() - self.queued_from + bytes.len() > MAX_STDIN_QUEUE {
            return Err(io::Error::other("the server does not read its stdin"));
        }
        self.queue.extend_from_slice(bytes);
        self.flush()
    }

    /// Writes queued bytes until the pipe is full.
    ///
    /// # Errors
    /// The pipe broke (the child closed stdin or exited).
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Ok(());
        };
        while self.queued_from < self.queue.len() {
            match stdin.write(&self.queue[self.queued_from..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.queued_from += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.queued_from == self.queue.len() {
            // Drop the capacity of a large burst (a big tool call): it is not needed again.
            if self.queue.capacity() > 64 * 1024 {
                self.queue = Vec::new();
            } else {
                self.queue.clear();
            }
            self.queued_from = 0;
        } else if self.queued_from > 1024 * 1024 {
            self.queue.drain(..self.queued_from);
            self.queued_from = 0;
        }
        Ok(())
    }

    /// Reads one chunk from stdout or stderr. On end-of-file the pipe is deregistered and
    /// closed.
    pub fn read_chunk(&mut self, pipe: Pipe, registry: &Registry, buf: &mut [u8]) -> Chunk {
        let slot = match pipe {
            Pipe::Stdout => &mut self.stdout,
            Pipe::Stderr => &mut self.stderr,
            Pipe::Stdin => return Chunk::Eof,
        };
        let Some(rx) = slot.as_mut() else {
            return Chunk::Eof;
        };
        loop {
            match rx.read(buf) {
                Ok(0) => break,
                Ok(n) => return Chunk::Data(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Chunk::Empty,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if let Some(mut rx) = slot.take() {
            let _ = registry.deregister(&mut rx);
        }
        Chunk::Eof
    }

    /// Whether a pipe is still open.
    pub fn is_open(&self, pipe: Pipe) -> bool {
        match pipe {
            Pipe::Stdin => self.stdin.is_some(),
            Pipe::Stdout => self.stdout.is_some(),
            Pipe::Stderr => self.stderr.is_some(),
        }
    }

    /// Closes stdin (the first step of a graceful stop: MCP servers exit on EOF).
    pub fn close_stdin(&mut self, registry: &Registry) {
        if let Some(mut tx) = self.stdin.take() {
            let _ = registry.deregister(&mut tx);
        }
        self.queue = Vec::new();
        self.queued_from = 0;
    }

    /// Closes every pipe.
    pub fn close_all(&mut self, registry: &Registry) {
        self.close_stdin(registry);
        for rx in [self.stdout.take(), self.stderr.take()]
            .into_iter()
            .flatten()
        {
            let mut rx = rx;
            let _ = registry.deregister(&mut rx);
        }
    }

    /// Signals the whole process group (grandchildren included). The group id is the pid
    /// (setsid); once the leader is reaped the group is only signalled while members remain.
    pub fn signal_group(&self, signal: i32) {
        if let Err(e) = sys::kill_group(self.pid, signal) {
            if e.raw_os_error() != Some(libc::ESRCH) {
                log::warn!("cannot signal process group {}: {e}", self.pid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(command: &str, path: &str, cwd: Option<&str>) -> Launch {
        Launch {
            command: command.into(),
            args: Vec::new(),
            env: vec![("PATH".into(), path.into())],
            cwd: cwd.map(PathBuf::from),
            sandbox: ChildSandbox {
                parent: 1,
                max_open_files: None,
                max_cpu_seconds: None,
                max_data_bytes: None,
                uid: None,
                gid: None,
                landlock_fd: None,
            },
        }
    }

    #[test]
    fn a_missing_or_wrong_cwd_is_named() {
        assert_eq!(check_cwd(Path::new("/")), Ok(()));
        let e = check_cwd(Path::new("/nonexistent-vsm-dir/x")).expect_err("missing");
        assert_eq!(e, "working directory /nonexistent-vsm-dir/x does not exist");
        let e = check_cwd(Path::new("/proc/self/status")).expect_err("file");
        assert!(e.contains("is not a directory"), "{e}");
    }

    #[test]
    fn spawn_errors_say_what_is_missing() {
        let enoent = io::Error::from(io::ErrorKind::NotFound);
        let e = describe_spawn_error(&launch("vsm-no-such-cmd", "/usr/bin:/bin", None), &enoent);
        assert_eq!(
            e,
            "command 'vsm-no-such-cmd' not found in PATH (/usr/bin:/bin)"
        );
        let e = describe_spawn_error(&launch("/nonexistent/tool", "/bin", None), &enoent);
        assert_eq!(e, "command '/nonexistent/tool' does not exist");
        // Found, yet ENOENT: its interpreter is missing.
        let e = describe_spawn_error(&launch("sh", "/usr/bin:/bin", None), &enoent);
        assert!(e.contains("interpreter"), "{e}");
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let e = describe_spawn_error(&launch("sh", "/bin", None), &denied);
        assert!(e.starts_with("cannot start 'sh': "), "{e}");
        assert!(find_in_path("sh", "/nonexistent::/bin").is_some());
    }
}
