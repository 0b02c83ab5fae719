//! Every `unsafe` and `libc` call of the crate, each behind a small safe function.
//!
//! Invariant: nothing outside this module calls `libc` directly; each `unsafe` block here
//! carries a `// SAFETY:` line saying why the call is sound.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;

/// Credentials of the process on the other end of a Unix stream socket (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id of the peer at connect time.
    pub pid: i32,
    /// Effective user id of the peer.
    pub uid: u32,
    /// Effective group id of the peer.
    pub gid: u32,
}

/// Clock ticks per second, the unit of /proc's CPU times (`sysconf(_SC_CLK_TCK)`; 100 when
/// it cannot be read, the value on every Linux architecture).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant of the system.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(100)
}

/// The page size in bytes, the unit of /proc's memory counts (`sysconf(_SC_PAGESIZE)`; 4096
/// when it cannot be read).
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant of the system.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Reads SO_PEERCRED from a connected Unix stream socket.
///
/// # Errors
/// The OS error of `getsockopt`.
pub fn peer_cred(fd: RawFd) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes passed; fd is only read.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Sets a socket's kernel send buffer (`SO_SNDBUF`; this also turns off its autotuning).
///
/// # Errors
/// The OS error (not a socket, bad fd).
pub fn set_send_buffer(fd: RawFd, bytes: usize) -> io::Result<()> {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `size` is a valid c_int for reads of the size passed; fd is only configured.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Fills `buf` from the kernel CSPRNG (`getrandom(2)`, blocking only until the pool is
/// initialised at boot, never afterwards).
///
/// # Errors
/// The OS error of `getrandom` (ENOSYS on kernels older than 3.17).
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes for the whole call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += n as usize;
    }
    Ok(())
}

/// Sets the process umask and returns the previous one.
pub fn umask(mask: u32) -> u32 {
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// Sends `signal` to `pid`.
///
/// # Errors
/// The OS error of `kill` (ESRCH when the process is gone).
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a process with this pid exists (signal 0 probe; EPERM still means it exists).
pub fn process_exists(pid: i32) -> bool {
    match kill(pid, 0) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(libc::EPERM),
    }
}

/// Whether a process exists and is not a zombie (a zombie has exited; only its parent's
/// `wait` is missing).
pub fn process_running(pid: i32) -> bool {
    if !process_exists(pid) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// One reaped child: its pid and raw wait status.
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    /// The child's pid, no longer ours once returned.
    pub pid: i32,
    /// Raw status from waitpid.
    pub status: i32,
}

/// Reaps one exited child of any pid without blocking; `None` when none is waiting.
pub fn reap_any() -> Option<Reaped> {
    let mut status = 0;
    // SAFETY: status is a valid out-pointer; WNOHANG keeps the call non-blocking.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then_some(Reaped { pid, status })
}

/// Marks this process a child subreaper so orphaned grandchildren are re-parented to it.
///
/// # Errors
/// The OS error of `prctl`.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes a plain integer argument.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the kernel supports `pidfd_open` (Linux 5.3+).
pub fn pidfd_supported() -> bool {
    // SAFETY: pidfd_open on our own pid with flags 0; the returned fd is closed right away.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    if fd >= 0 {
        // SAFETY: fd was just returned to us by the kernel and is not used elsewhere.
        unsafe { libc::close(fd as RawFd) };
        true
    } else {
        false
    }
}

/// The Landlock ABI version the kernel offers, or the reason it is unavailable.
///
/// # Errors
/// ENOSYS (not built in) or EOPNOTSUPP (disabled at boot).
pub fn landlock_abi() -> io::Result<i64> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attr, size 0 and the VERSION flag the call only returns a number.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v >= 0 {
        Ok(v)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The type of an rlimit resource number: glibc declares its own enum type, musl a plain int.
#[cfg(target_env = "gnu")]
pub type Resource = libc::__rlimit_resource_t;
/// The type of an rlimit resource number: glibc declares its own enum type, musl a plain int.
#[cfg(not(target_env = "gnu"))]
pub type Resource = libc::c_int;

/// Soft and hard limit of a resource (`libc::RLIMIT_*`).
///
/// # Errors
/// The OS error of `getrlimit`.
pub fn rlimit(resource: Resource) -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid out-pointer.
    if unsafe { libc::getrlimit(resource, &mut lim) } == 0 {
        // rlim_t is narrower than u64 on some 32-bit targets.
        #[allow(clippy::unnecessary_cast)]
        Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Kernel release string (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; zeroed is a valid value for it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uts is a valid out-pointer.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::from("unknown");
    }
    // SAFETY: uname NUL-terminates release within the array.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    release.to_string_lossy().into_owned()
}

/// What a child process does to itself between fork and exec. Everything here runs in the
/// forked child, so it uses raw system calls only (async-signal-safe, no allocation).
#[derive(Debug, Clone, Copy, Default)]
pub struct ChildSandbox {
    /// The daemon's pid, to detect that it died before PDEATHSIG was armed.
    pub parent: i32,
    /// RLIMIT_NOFILE (clamped to the hard limit).
    pub max_open_files: Option<u64>,
    /// RLIMIT_CPU in seconds.
    pub max_cpu_seconds: Option<u64>,
    /// RLIMIT_DATA in bytes.
    pub max_data_bytes: Option<u64>,
    /// setgid to this (root only).
    pub gid: Option<u32>,
    /// setuid to this (root only).
    pub uid: Option<u32>,
    /// A Landlock ruleset to enforce (made by [`landlock_write_ruleset`] in the parent).
    pub landlock_fd: Option<RawFd>,
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets soft and hard limits, never above the current hard limit (raising it needs privileges).
fn set_limit(resource: Resource, soft: u64, hard: u64) -> io::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid out-pointer.
    check(unsafe { libc::getrlimit(resource, &mut lim) })?;
    let cap = |v: u64| {
        let v = v as libc::rlim_t;
        if lim.rlim_max == libc::RLIM_INFINITY || v < lim.rlim_max {
            v
        } else {
            lim.rlim_max
        }
    };
    let new = libc::rlimit {
        rlim_cur: cap(soft),
        rlim_max: cap(hard),
    };
    // SAFETY: new is a valid, initialised rlimit.
    check(unsafe { libc::setrlimit(resource, &new) })
}

/// Applies the sandbox in a forked child (call between fork and exec only).
///
/// # Errors
/// The failing system call's error; the spawn then fails with it.
pub fn enter_child_sandbox(s: &ChildSandbox) -> io::Result<()> {
    // SAFETY: setsid has no preconditions; in a fresh child it cannot fail except EPERM
    // when already a group leader, which a forked child is not.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: PR_SET_PDEATHSIG takes a signal number.
    check(unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    })?;
    // The daemon may have died between fork and prctl: then nobody would ever kill us.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != s.parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) })?;
    set_limit(libc::RLIMIT_CORE, 0, 0)?;
    if let Some(n) = s.max_open_files {
        set_limit(libc::RLIMIT_NOFILE, n, n)?;
    }
    if let Some(n) = s.max_cpu_seconds.filter(|&n| n > 0) {
        // SIGXCPU at the soft limit, SIGKILL a little later at the hard one.
        set_limit(libc::RLIMIT_CPU, n, n + 5)?;
    }
    if let Some(n) = s.max_data_bytes.filter(|&n| n > 0) {
        set_limit(libc::RLIMIT_DATA, n, n)?;
    }
    if let Some(gid) = s.gid {
        // SAFETY: an empty group list is a valid argument.
        check(unsafe { libc::setgroups(0, std::ptr::null()) })?;
        // SAFETY: plain integer argument.
        check(unsafe { libc::setgid(gid) })?;
    }
    if let Some(uid) = s.uid {
        // SAFETY: plain integer argument.
        check(unsafe { libc::setuid(uid) })?;
    }
    if let Some(fd) = s.landlock_fd {
        // SAFETY: fd is a Landlock ruleset fd inherited from the parent; flags 0.
        if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the ruleset fd is ours in this child and no longer needed.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// A program to run, with everything a forked child needs already encoded: between `fork`
/// and `exec` the child may not allocate, so argv, envp and the working directory are built
/// here, in the parent.
#[derive(Debug)]
pub struct ExecPlan {
    program: std::ffi::CString,
    cwd: Option<std::ffi::CString>,
    // The pointer arrays below point into these; they are never modified after `new`.
    _argv: Vec<std::ffi::CString>,
    _envp: Vec<std::ffi::CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

impl ExecPlan {
    /// Encodes a program path (used as is: resolve `PATH` first), its argv (`argv[0]`
    /// included), its complete environment and its working directory.
    ///
    /// # Errors
    /// `InvalidInput` when a string holds a NUL byte.
    pub fn new<'a>(
        program: &std::path::Path,
        argv: impl IntoIterator<Item = &'a str>,
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
        cwd: Option<&std::path::Path>,
    ) -> io::Result<ExecPlan> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |b: &[u8]| {
            CString::new(b).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a spawn argument")
            })
        };
        let argv: Vec<CString> = argv
            .into_iter()
            .map(|a| c(a.as_bytes()))
            .collect::<io::Result<_>>()?;
        let envp: Vec<CString> = env
            .into_iter()
            .map(|(k, v)| c(format!("{k}={v}").as_bytes()))
            .collect::<io::Result<_>>()?;
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        Ok(ExecPlan {
            program: c(program.as_os_str().as_bytes())?,
            cwd: cwd.map(|d| c(d.as_os_str().as_bytes())).transpose()?,
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            _argv: argv,
            _envp: envp,
        })
    }
}

/// Makes a pipe whose both ends are close-on-exec and blocking: `(read, write)`.
///
/// # Errors
/// The OS error of `pipe2` (fd limit).
pub fn cloexec_pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid out-array of two ints.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: the kernel just returned both fds to us; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks a child that puts `stdio` on its fds 0–2, enters `sandbox`, and execs `plan`, and
/// returns its pid at once: the parent does not wait for the exec (that wait, the child's
/// first page faults and its scheduling on a busy machine, took milliseconds of loop time per
/// spawn). Whether the exec happened is told later by `report` (a close-on-exec pipe the child
/// writes its errno into before `_exit(127)`): see [`exec_outcome`].
///
/// The child resets the signal mask and SIGPIPE (the Rust runtime ignores it) as `std` does,
/// then `chdir`, then the sandbox, then `execve`. Every fd of the daemon is close-on-exec, so
/// the child inherits nothing but its three pipes.
///
/// # Errors
/// The OS error of `fork` (process limit, memory).
pub fn fork_exec(
    plan: &ExecPlan,
    stdio: [RawFd; 3],
    sandbox: &ChildSandbox,
    report: std::os::fd::OwnedFd,
) -> io::Result<i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: fork has no memory-safety preconditions; the child below only makes
    // async-signal-safe system calls on memory prepared before the fork, and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let errno = match exec_in_child(plan, stdio, sandbox) {
            Err(e) => e.raw_os_error().unwrap_or(libc::EINVAL),
            Ok(()) => libc::EINVAL,
        };
        let bytes = errno.to_ne_bytes();
        // SAFETY: write(2) and _exit(2) are async-signal-safe; bytes outlives the call.
        unsafe {
            libc::write(report.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127);
        }
    }
    drop(report);
    Ok(pid)
}

/// The child's half of [`fork_exec`]: returns only on failure.
fn exec_in_child(plan: &ExecPlan, stdio: [RawFd; 3], sandbox: &ChildSandbox) -> io::Result<()> {
    // A pipe end that landed on 0–2 (the daemon's own stdio was closed) would be clobbered by
    // the dup2 of another: move such ends out of the way first.
    let mut fds = stdio;
    for fd in &mut fds {
        if *fd < 3 {
            // SAFETY: F_DUPFD_CLOEXEC on an fd open in this process.
            let moved = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3) };
            if moved < 0 {
                return Err(io::Error::last_os_error());
            }
            *fd = moved;
        }
    }
    for (target, fd) in fds.into_iter().enumerate() {
        // SAFETY: dup2 onto 0–2 of open fds; the copy is not close-on-exec.
        if unsafe { libc::dup2(fd, target as libc::c_int) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: an empty set is a valid mask; SIG_DFL is always a valid disposition.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Some(dir) = &plan.cwd {
        // SAFETY: dir is a NUL-terminated path built before the fork.
        check(unsafe { libc::chdir(dir.as_ptr()) })?;
    }
    enter_child_sandbox(sandbox)?;
    // SAFETY: program, argv and envp are NUL-terminated strings and NULL-terminated arrays
    // built before the fork and alive for the whole call.
    unsafe {
        libc::execve(
            plan.program.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        )
    };
    Err(io::Error::last_os_error())
}

/// What the report pipe of [`fork_exec`] says, read without blocking.
#[derive(Debug, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The exec happened (the pipe closed empty).
    Executed,
    /// The child failed before or at its exec with this errno, and exited with 127.
    Failed(i32),
    /// Not known yet: the child has neither exec'd nor failed.
    Pending,
}

/// Reads the outcome from the read end of a [`fork_exec`] report pipe (set non-blocking).
pub fn exec_outcome(report: &std::os::fd::OwnedFd) -> ExecOutcome {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 4];
    loop {
        // SAFETY: buf is a valid 4-byte buffer; the fd is ours.
        let n = unsafe { libc::read(report.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => return ExecOutcome::Executed,
            // Writes of at most PIPE_BUF bytes are atomic: 4 bytes come whole.
            4 => return ExecOutcome::Failed(i32::from_ne_bytes(buf)),
            n if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => return ExecOutcome::Pending,
        }
    }
}

/// Builds a Landlock ruleset that lets a process read and execute anything but write, create
/// or remove files only beneath `writable` directories. Returns the ruleset fd and the ABI.
///
/// # Errors
/// Landlock unavailable, or a path that cannot be opened.
pub fn landlock_write_ruleset(
    writable: &[&std::path::Path],
) -> io::Result<(std::os::fd::OwnedFd, i64)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let abi = landlock_abi()?;
    // WRITE_FILE, REMOVE_DIR, REMOVE_FILE, MAKE_{CHAR,DIR,REG,SOCK,FIFO,BLOCK,SYM}
    let mut handled: u64 = (1 << 1) | (0x1ff << 4);
    if abi >= 2 {
        handled |= 1 << 13; // REFER
    }
    if abi >= 3 {
        handled |= 1 << 14; // TRUNCATE
    }
    let attr: u64 = handled;
    // SAFETY: attr is a valid landlock_ruleset_attr prefix of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const u64,
            std::mem::size_of::<u64>(),
            0u32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    #[repr(C, packed)]
    struct PathBeneath {
        allowed_access: u64,
        parent_fd: i32,
    }
    for dir in writable {
        let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            continue;
        };
        // SAFETY: c is a valid NUL-terminated path.
        let pfd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY,
            )
        };
        if pfd < 0 {
            continue; // a missing directory simply gets no rule
        }
        let rule = PathBeneath {
            allowed_access: handled,
            parent_fd: pfd,
        };
        // SAFETY: rule is a valid landlock_path_beneath_attr; both fds are open.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                std::os::fd::AsRawFd::as_raw_fd(&ruleset),
                1u32, // LANDLOCK_RULE_PATH_BENEATH
                &rule as *const PathBeneath,
                0u32,
            )
        };
        let err = io::Error::last_os_error();
        // SAFETY: pfd was opened above and is not used after this.
        unsafe { libc::close(pfd) };
        if rc != 0 {
            return Err(err);
        }
    }
    Ok((ruleset, abi))
}

/// Sends `signal` to every process of the group `pgid`.
///
/// # Errors
/// ESRCH when the group is empty.
pub fn kill_group(pgid: i32, signal: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    kill(-pgid, signal)
}

/// Whether this process may write into `path` (effective ids, like the kernel will check).
pub fn writable(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid NUL-terminated path; faccessat only reads it.
    unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        ) == 0
    }
}

/// Starts a new session (call from `pre_exec`).
///
/// # Errors
/// EPERM when already a group leader.
pub fn new_session() -> io::Result<()> {
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Ignores a signal (SIG_IGN).
pub fn ignore_signal(signal: i32) {
    // SAFETY: installing SIG_IGN is always sound.
    unsafe { libc::signal(signal, libc::SIG_IGN) };
}

/// Puts a file descriptor in non-blocking mode.
///
/// # Errors
/// The fcntl error.
pub fn set_nonblocking(fd: &impl std::os::fd::AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on an fd we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pids whose parent is this process (orphans re-parented to us as subreaper included).
///
/// Reads `/proc/self/task/*/children` (a few short files); falls back to scanning every
/// `/proc/*/stat` only on kernels built without CONFIG_PROC_CHILDREN.
pub fn own_children() -> Vec<i32> {
    let mut out = Vec::new();
    let mut found = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                found = true;
                out.extend(
                    list.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    if found {
        return out;
    }
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')').and_then(|(_, rest)| {
                        rest.split_whitespace()
                            .nth(1)
                            .and_then(|p| p.parse::<i32>().ok())
                    })
                })
                == Some(me)
        })
        .collect()
}

/// Whether our child `pid` has exited (a zombie not yet reaped, or already gone), without
/// reaping it: the reaping stays with the SIGCHLD handler.
pub fn child_has_exited(pid: i32) -> bool {
    // SAFETY: `info` is a zeroed siginfo_t owned by this frame; WNOWAIT leaves the child
    // waitable, WNOHANG never blocks; si_pid is read only after waitid filled `info`.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r != 0 || info.si_pid() != 0
    }
}

/// Returns freed heap memory to the system. glibc keeps freed chunks in its arenas (and
/// raises its mmap threshold after large frees, so the next large buffers land on the heap
/// too): after a server's megabytes of tools or results are dropped, RSS would stay at its
/// peak. Cost: one walk over the free lists (4 µs after freeing 30 MB in large blocks, 0.2 ms
/// on a heap fragmented into 10,000 free chunks), so callers do it only after large frees.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only touches the allocator's own free lists; 0 = keep no padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Space of the filesystem holding `path` (`statvfs`), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    /// Size of the filesystem.
    pub total_bytes: u64,
    /// Free, including what only root may use.
    pub free_bytes: u64,
    /// Free for unprivileged users.
    pub avail_bytes: u64,
}

impl FsUsage {
    /// Used space as a percentage of what users can have (used + available), as `df` shows it.
    pub fn used_percent(&self) -> f64 {
        let used = self.total_bytes.saturating_sub(self.free_bytes);
        let usable = used + self.avail_bytes;
        if usable > 0 {
            100.0 * used as f64 / usable as f64
        } else {
            0.0
        }
    }
}

/// `statvfs` of `path`. It can block on a network or hung mount: call it on the worker unless
/// the mount is known to be local.
///
/// # Errors
/// The path has a NUL byte or `statvfs` failed.
pub fn filesystem_usage(path: &std::path::Path) -> io::Result<FsUsage> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero statvfs is a valid value of the plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path and st a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok(FsUsage {
        total_bytes: st.f_blocks as u64 * frsize,
        free_bytes: st.f_bfree as u64 * frsize,
        avail_bytes: st.f_bavail as u64 * frsize,
    })
}

/// Used space of the filesystem holding `path`, percent (see [`FsUsage::used_percent`]).
///
/// # Errors
/// As [`filesystem_usage`].
pub fn filesystem_used_percent(path: &std::path::Path) -> io::Result<f64> {
    filesystem_usage(path).map(|u| u.used_percent())
}

// ---------------------------------------------------------------------------------------
// A fatal SIGILL, reported on stderr.
//
// The shipped static build aborts a panic with `panic = "immediate-abort"`: no message, no
// hook, just a trap instruction at the panic site, which the kernel delivers as SIGILL. This
// handler writes one line naming where the trap is in the image (an address that the symbols
// build-static.sh keeps beside the binary resolve: `gdb -batch -ex 'info symbol ADDR'
// vsm-daemon.sym`), then lets SIGILL kill the process
// as before (same exit status, a core dump where enabled).

/// Where the image is loaded (subtracted from a trapping address); 0 until installed.
static IMAGE_BASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Installs the SIGILL reporter. Harmless to call more than once.
pub fn report_fatal_sigill() {
    // SAFETY: the callback only reads the first entry (the program itself) and returns 1 to
    // stop; dl_iterate_phdr has no other preconditions.
    unsafe { libc::dl_iterate_phdr(Some(first_object_base), std::ptr::null_mut()) };
    // SAFETY: a zeroed sigaction is a valid starting value; the handler is a plain extern fn
    // that only calls async-signal-safe functions (write, raise).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigill as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGILL, &sa, std::ptr::null_mut());
    }
}

extern "C" fn first_object_base(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    _data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info pointer for the duration of the call.
    if let Some(info) = unsafe { info.as_ref() } {
        IMAGE_BASE.store(
            info.dlpi_addr as usize,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    1
}

/// Appends `v` in hex (with 0x) to `buf` at `*at`; async-signal-safe.
fn put_hex(buf: &mut [u8], at: &mut usize, v: usize) {
    let digits = b"0123456789abcdef";
    let mut tmp = [0u8; 2 + 2 * std::mem::size_of::<usize>()];
    let mut n = tmp.len();
    let mut v = v;
    loop {
        n -= 1;
        tmp[n] = digits[v & 0xf];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    n -= 1;
    tmp[n] = b'x';
    n -= 1;
    tmp[n] = b'0';
    put(buf, at, &tmp[n..]);
}

/// `v` in decimal ASCII digits, written into the end of `tmp`; no allocation, no formatting
/// machinery (async-signal-safe, and cheap on the hot paths that write numbers).
pub fn decimal(v: u64, tmp: &mut [u8; 20]) -> &[u8] {
    let mut n = tmp.len();
    let mut v = v;
    loop {
        n -= 1;
        tmp[n] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &tmp[n..]
}

/// Appends `v` in decimal to `buf` at `*at`; async-signal-safe.
fn put_dec(buf: &mut [u8], at: &mut usize, v: usize) {
    put(buf, at, decimal(v as u64, &mut [0u8; 20]));
}

/// Appends bytes to `buf` at `*at`, as many as fit; async-signal-safe.
fn put(buf: &mut [u8], at: &mut usize, bytes: &[u8]) {
    for &b in bytes {
        if let Some(slot) = buf.get_mut(*at) {
            *slot = b;
            *at += 1;
        }
    }
}

/// The line for one SIGILL: a trap at `pc` (`None` when another process sent the signal).
fn sigill_line(buf: &mut [u8], pc: Option<usize>, sender: i32, base: usize) -> usize {
    let mut at = 0;
    put(buf, &mut at, b"vsm-daemon ");
    put(buf, &mut at, env!("CARGO_PKG_VERSION").as_bytes());
    match pc {
        Some(pc) => {
            put(
                buf,
                &mut at,
                b": fatal: illegal instruction at image address ",
            );
            put_hex(buf, &mut at, pc.wrapping_sub(base));
            put(
                buf,
                &mut at,
                b" (the static build stops a panic this way: a bug; report this line)\n",
            );
        }
        None => {
            put(buf, &mut at, b": fatal: SIGILL sent by pid ");
            put_dec(buf, &mut at, sender.unsigned_abs() as usize);
            put(buf, &mut at, b"\n");
        }
    }
    at
}

extern "C" fn on_sigill(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let mut buf = [0u8; 192];
    // SAFETY: the kernel passes valid siginfo and ucontext pointers to an SA_SIGINFO handler;
    // si_pid is only read for signals sent by a process (si_code <= 0).
    let (pc, sender) = unsafe {
        match info.as_ref() {
            Some(i) if i.si_code <= 0 => (None, i.si_pid()),
            _ => {
                let uc = ctx as *const libc::ucontext_t;
                (uc.as_ref().map(context_pc), 0)
            }
        }
    };
    let base = IMAGE_BASE.load(std::sync::atomic::Ordering::Relaxed);
    let n = sigill_line(&mut buf, pc.flatten(), sender, base);
    // SAFETY: write and raise are async-signal-safe; SA_RESETHAND restored the default action,
    // so the raised SIGILL (pending until this handler returns) ends the process; a trap would
    // also trap again on return.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), n);
        libc::raise(libc::SIGILL);
    }
}

/// The trapping instruction's address from a signal context.
#[allow(clippy::unnecessary_wraps)]
fn context_pc(uc: &libc::ucontext_t) -> Option<usize> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        Some(uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize)
    }
    #[cfg(all(target_os = "linux", target_arch = "aarch64"))]
    {
        Some(uc.uc_mcontext.pc as usize)
    }
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    {
        let _ = uc;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn decimal_writes_what_display_writes() {
        for v in [0, 7, 10, 99, 1_000_000_007, u64::MAX] {
            assert_eq!(decimal(v, &mut [0u8; 20]), v.to_string().as_bytes());
        }
    }

    #[test]
    fn peer_cred_of_socketpair_is_ourselves() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let cred = peer_cred(a.as_raw_fd()).expect("SO_PEERCRED");
        assert_eq!(cred.uid, euid());
        assert_eq!(cred.pid, std::process::id() as i32);
    }

    #[test]
    fn process_exists_for_self_not_for_unused_pid() {
        assert!(process_exists(std::process::id() as i32));
        assert!(!process_exists(i32::MAX));
    }

    #[test]
    fn own_children_lists_a_spawned_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .expect("spawn");
        let pid = child.id() as i32;
        assert!(own_children().contains(&pid));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn child_has_exited_peeks_without_reaping() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .expect("spawn");
        let pid = child.id() as i32;
        assert!(!child_has_exited(pid));
        let _ = child.kill();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !child_has_exited(pid) {
            assert!(std::time::Instant::now() < deadline, "never seen exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Still waitable: the peek left the reaping to us.
        assert!(child.try_wait().expect("wait").is_some());
    }

    #[test]
    fn sigill_line_names_the_image_address_or_the_sender() {
        let mut buf = [0u8; 192];
        let n = sigill_line(&mut buf, Some(0x5555_0000_1234), 0, 0x5555_0000_0000);
        let line = std::str::from_utf8(&buf[..n]).expect("ascii");
        assert!(line.starts_with("vsm-daemon "), "{line}");
        assert!(
            line.contains(": fatal: illegal instruction at image address 0x1234 ("),
            "{line}"
        );
        assert!(line.ends_with(")\n"), "{line}");
        let n = sigill_line(&mut buf, None, 4071, 0);
        let line = std::str::from_utf8(&buf[..n]).expect("ascii");
        assert!(
            line.ends_with(": fatal: SIGILL sent by pid 4071\n"),
            "{line}"
        );
        // A buffer too small truncates instead of writing past its end.
        let mut small = [0u8; 8];
        assert_eq!(sigill_line(&mut small, Some(1), 0, 0), 8);
    }

    #[test]
    fn nofile_limit_is_readable() {
        let (soft, hard) = rlimit(libc::RLIMIT_NOFILE).expect("getrlimit");
        assert!(soft <= hard);
    }
}
