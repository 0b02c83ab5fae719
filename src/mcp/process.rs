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
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
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

/// Where the program of a spawn is, found the way `execvp` finds it: a command with a `/` is
/// used as is (relative to `cwd`, where the child will be) and must exist; one without is the
/// first executable regular file named so in a `PATH` directory. Done before the fork, so that
/// a missing program is a synchronous error (a few `stat`s).
///
/// # Errors
/// `NotFound`, or `PermissionDenied` when the only files of that name cannot be executed.
pub fn resolve_program(command: &str, path: &str, cwd: Option<&Path>) -> io::Result<PathBuf> {
    let beside_cwd = |p: &Path| match cwd {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    };
    if command.is_empty() {
        return Err(io::ErrorKind::NotFound.into());
    }
    if command.contains('/') {
        return if beside_cwd(Path::new(command)).exists() {
            Ok(PathBuf::from(command))
        } else {
            Err(io::ErrorKind::NotFound.into())
        };
    }
    let mut denied = false;
    for dir in path.split(':') {
        let candidate = Path::new(if dir.is_empty() { "." } else { dir }).join(command);
        let Ok(meta) = std::fs::metadata(beside_cwd(&candidate)) else {
            continue;
        };
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            // Relative to the child's cwd, which the child enters before its exec.
            return Ok(candidate);
        }
        denied = true;
    }
    Err(if denied {
        io::ErrorKind::PermissionDenied
    } else {
        io::ErrorKind::NotFound
    }
    .into())
}

/// Says why a spawn failed. "No such file or directory" from exec means a missing program,
/// or a program whose interpreter or loader is missing: the first is told apart by looking
/// (only after the failure).
pub fn describe_spawn_error(launch: &Launch, err: &io::Error) -> String {
    let path = launch
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("", |(_, v)| v.as_str());
    describe_exec_error(&launch.command, launch.cwd.as_deref(), path, err)
}

fn describe_exec_error(command: &str, cwd: Option<&Path>, path: &str, err: &io::Error) -> String {
    if err.kind() != io::ErrorKind::NotFound {
        return format!("cannot start '{command}': {err}");
    }
    if command.contains('/') {
        let path = match cwd {
            Some(cwd) => cwd.join(command),
            None => PathBuf::from(command),
        };
        if !path.exists() {
            return format!("command '{command}' does not exist");
        }
    } else if find_in_path(command, path).is_none() {
        return format!("command '{command}' not found in PATH ({path})");
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
    /// Until the exec is known to have happened: the pipe that tells, and what to name.
    exec: Option<ExecReport>,
}

/// The read end of [`sys::fork_exec`]'s report pipe, and what an exec failure names.
#[derive(Debug)]
struct ExecReport {
    pipe: OwnedFd,
    command: String,
    cwd: Option<PathBuf>,
    path: String,
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
    /// Spawns and registers the pipes. Returns as soon as the child exists, before its exec
    /// (see [`sys::fork_exec`]): what can be told beforehand (a program missing from `PATH`,
    /// a path that does not exist) fails here; an exec that fails later shows in
    /// [`Process::exec_failure`] once the child is reaped.
    ///
    /// # Errors
    /// The program cannot be found, an argument holds a NUL byte, or a pipe, fork or
    /// registration error.
    pub fn spawn(launch: &Launch, registry: &Registry, tokens: PipeTokens) -> io::Result<Process> {
        let path = launch
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or("", |(_, v)| v.as_str());
        let program = resolve_program(&launch.command, path, launch.cwd.as_deref())?;
        let plan = sys::ExecPlan::new(
            &program,
            std::iter::once(launch.command.as_str()).chain(launch.args.iter().map(String::as_str)),
            launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            launch.cwd.as_deref(),
        )?;
        let (stdin_child, stdin) = sys::cloexec_pipe()?;
        let (stdout, stdout_child) = sys::cloexec_pipe()?;
        let (stderr, stderr_child) = sys::cloexec_pipe()?;
        let (report, report_child) = sys::cloexec_pipe()?;
        // Our ends are open file descriptions of their own: non-blocking here, blocking in
        // the child.
        for fd in [&stdin, &stdout, &stderr, &report] {
            sys::set_nonblocking(fd)?;
        }
        let pid = sys::fork_exec(
            &plan,
            [
                stdin_child.as_raw_fd(),
                stdout_child.as_raw_fd(),
                stderr_child.as_raw_fd(),
            ],
            &launch.sandbox,
            report_child,
        )?;
        let started = Instant::now();
        // The child has its copies; ours close here so that its exit is seen as EOF.
        drop((stdin_child, stdout_child, stderr_child));
        let mut process = Process {
            pid,
            started,
            exit_status: None,
            stdin: Some(Sender::from(stdin)),
            stdout: Some(Receiver::from(stdout)),
            stderr: Some(Receiver::from(stderr)),
            queue: Vec::new(),
            queued_from: 0,
            exec: Some(ExecReport {
                pipe: report,
                command: launch.command.clone(),
                cwd: launch.cwd.clone(),
                path: path.to_string(),
            }),
        };
        if let Err(e) = process.register(registry, tokens) {
            // A child we cannot talk to is of no use: kill it (SIGCHLD reaps it).
            process.close_all(registry);
            let _ = sys::kill(pid, libc::SIGKILL);
            return Err(e);
        }
        Ok(process)
    }

    fn register(&mut self, registry: &Registry, tokens: PipeTokens) -> io::Result<()> {
        let missing = || io::Error::other("child pipe missing");
        let stdin = self.stdin.as_mut().ok_or_else(missing)?;
        registry.register(stdin, tokens.stdin, Interest::WRITABLE)?;
        let stdout = self.stdout.as_mut().ok_or_else(missing)?;
        registry.register(stdout, tokens.stdout, Interest::READABLE)?;
        let stderr = self.stderr.as_mut().ok_or_else(missing)?;
        registry.register(stderr, tokens.stderr, Interest::READABLE)
    }

    /// Why the exec never happened, if that is how the run ended (read once the child is
    /// reaped: it wrote its errno before exiting, so the answer is there by then). `None`
    /// when it exec'd, or when that is not known yet.
    pub fn exec_failure(&mut self) -> Option<String> {
        let report = self.exec.as_ref()?;
        match sys::exec_outcome(&report.pipe) {
            sys::ExecOutcome::Pending => None,
            sys::ExecOutcome::Executed => {
                self.exec = None;
                None
            }
            sys::ExecOutcome::Failed(errno) => {
                let e = io::Error::from_raw_os_error(errno);
                let message =
                    describe_exec_error(&report.command, report.cwd.as_deref(), &report.path, &e);
                self.exec = None;
                Some(message)
            }
        }
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

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vsm-process-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn programs_are_resolved_like_execvp_before_the_fork() {
        let dir = scratch("resolve");
        let file = |name: &str, mode: u32| {
            let p = dir.join(name);
            std::fs::write(&p, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        file("tool", 0o755);
        file("plain", 0o644);
        std::fs::create_dir_all(dir.join("sub/tool")).expect("a directory named tool");
        let d = dir.display().to_string();
        // The first executable file wins; a directory of that name is skipped.
        let path = format!("/nonexistent:{d}/sub:{d}");
        assert_eq!(
            resolve_program("tool", &path, None).expect("found"),
            dir.join("tool")
        );
        let kind = |r: io::Result<PathBuf>| r.expect_err("refused").kind();
        assert_eq!(
            kind(resolve_program("plain", &d, None)),
            io::ErrorKind::PermissionDenied
        );
        assert_eq!(
            kind(resolve_program("nope", &d, None)),
            io::ErrorKind::NotFound
        );
        assert_eq!(kind(resolve_program("", &d, None)), io::ErrorKind::NotFound);
        // Relative entries and paths are where the child will be: its cwd.
        assert_eq!(
            resolve_program("tool", ".", Some(&dir)).expect("found in cwd"),
            PathBuf::from("./tool")
        );
        assert!(resolve_program("./tool", "", Some(&dir)).is_ok());
        assert_eq!(
            kind(resolve_program("./tool", "", Some(Path::new("/")))),
            io::ErrorKind::NotFound
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn wait_exit(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid out-pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    #[test]
    fn an_exec_failure_is_told_after_the_spawn_returned() {
        let poll = mio::Poll::new().expect("poll");
        let dir = scratch("exec");
        let script = dir.join("s");
        std::fs::write(&script, "#!/nonexistent-vsm-interp\n").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let tokens = PipeTokens {
            stdin: Token(1),
            stdout: Token(2),
            stderr: Token(3),
        };
        let mut l = launch(&script.display().to_string(), "/usr/bin:/bin", None);
        l.sandbox.parent = std::process::id() as i32;
        let mut p = Process::spawn(&l, poll.registry(), tokens).expect("spawned before the exec");
        let status = wait_exit(p.pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 127);
        let e = p.exec_failure().expect("the exec failure");
        assert!(e.contains("interpreter"), "{e}");
        assert_eq!(p.exec_failure(), None, "told once");
        p.close_all(poll.registry());

        // An exec that happens: the report pipe closes empty; the sandbox's session is on.
        let mut l = launch("sh", "/usr/bin:/bin", Some("/"));
        l.sandbox.parent = std::process::id() as i32;
        l.args = vec![
            "-c".into(),
            "[ \"$(pwd)\" = / ] && [ \"$(ps -o sid= $$ | tr -d ' ')\" = $$ ]".into(),
        ];
        let mut p = Process::spawn(&l, poll.registry(), tokens).expect("spawned");
        let status = wait_exit(p.pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status}: not in / or not its own session"
        );
        assert_eq!(p.exec_failure(), None);
        assert!(
            p.exec.is_none(),
            "the report pipe is dropped once the exec is known"
        );
        p.close_all(poll.registry());
        let _ = std::fs::remove_dir_all(&dir);
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
