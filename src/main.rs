//! vsm-daemon binary: parse argv, then run the daemon or act as its client.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(vsm_daemon::cli::main_with(lexopt::Parser::from_env()) as u8)
}
