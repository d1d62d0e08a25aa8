//! `kubectl-turnpike`: the Turnpike kubectl plugin.
//!
//! Exit codes: 0 success, 2 usage errors (bad flags or values, reported by clap),
//! 1 any other failure.
#![forbid(unsafe_code)]

mod key;
mod manifest;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Turnpike: API keys for Kubernetes workloads.
#[derive(Debug, Parser)]
#[command(name = "kubectl-turnpike", bin_name = "kubectl turnpike", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with API keys.
    #[command(subcommand)]
    Key(key::KeyCommand),
}

fn main() -> ExitCode {
    // Usage errors exit with code 2 from here.
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Key(command) => key::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
