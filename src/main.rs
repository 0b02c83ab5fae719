//! vsm-daemon binary: parse argv, then run the daemon or act as its client.

use std::process::ExitCode;

/// The static (musl) build keeps small freed blocks for reuse: musl's allocator costs several
/// times glibc's per call (see `musl`). glibc's has such a cache of its own (tcache).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: vsm_daemon::musl::SmallFront = vsm_daemon::musl::SmallFront::new();

fn main() -> ExitCode {
    // The static build's panics end in a trap (SIGILL) with no message: say where, on stderr.
    vsm_daemon::sys::report_fatal_sigill();
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(vsm_daemon::mcp::reaper::ARG))
    {
        return ExitCode::from(vsm_daemon::mcp::reaper::run());
    }
    ExitCode::from(vsm_daemon::cli::main_with(lexopt::Parser::from_env()) as u8)
}
