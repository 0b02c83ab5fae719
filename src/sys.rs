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

/// Effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
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

/// Soft and hard limit of a resource (`libc::RLIMIT_*`).
///
/// # Errors
/// The OS error of `getrlimit`.
pub fn rlimit(resource: libc::__rlimit_resource_t) -> io::Result<(u64, u64)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

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
    fn nofile_limit_is_readable() {
        let (soft, hard) = rlimit(libc::RLIMIT_NOFILE).expect("getrlimit");
        assert!(soft <= hard);
    }
}
