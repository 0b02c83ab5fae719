//! vsm-daemon binary: parse argv, then run the daemon or act as its client.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(vsm_daemon::mcp::reaper::ARG))
    {
        return ExitCode::from(vsm_daemon::mcp::reaper::run());
    }
    ExitCode::from(vsm_daemon::cli::main_with(lexopt::Parser::from_env()) as u8)
}
