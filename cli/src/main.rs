//! `kubectl-turnpike`: the Turnpike kubectl plugin.
//!
//! Exit codes: 0 success, 2 usage errors (bad flags or values, reported by clap),
//! 1 any other failure. A reader that stops early (`| head`) is not a failure: the
//! plugin stops writing and exits 0 without a message, as other command-line tools do.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use kubectl_turnpike::Cli;

fn main() -> ExitCode {
    // Usage errors exit with code 2 from here.
    let cli = Cli::parse();
    match kubectl_turnpike::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if closed_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `err` comes from writing to a pipe whose reader has gone.
fn closed_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
