//! `kubectl-turnpike`: the Turnpike kubectl plugin.
//!
//! Exit codes: 0 success, 2 usage errors (bad flags or values, reported by clap),
//! 1 any other failure.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use kubectl_turnpike::Cli;

fn main() -> ExitCode {
    // Usage errors exit with code 2 from here.
    let cli = Cli::parse();
    match kubectl_turnpike::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
