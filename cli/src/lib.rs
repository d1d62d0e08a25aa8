//! `kubectl-turnpike`: the Turnpike kubectl plugin, as a library so that tests can
//! drive every command against a mocked API server.
//!
//! Offline commands (`key new`, `key hash`) need no cluster. The others talk to the
//! cluster of the current kubeconfig (or in-cluster config) through [`cluster`] and
//! map every API failure to a message a person can act on ([`error`]).
#![forbid(unsafe_code)]

pub mod apikeys;
pub mod cluster;
pub mod commands;
pub mod error;
pub mod generate;
pub mod key;
pub mod machine;
pub mod manifest;
pub mod output;
pub mod sidecars;
pub mod validate;
pub mod wait;

use clap::{Parser, Subcommand};

pub use error::Error;

/// Turnpike: API keys for Kubernetes workloads.
#[derive(Debug, Parser)]
#[command(name = "kubectl-turnpike", bin_name = "kubectl turnpike", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The plugin's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with API keys offline (no cluster needed).
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Create an ApiKey, wait for the operator to issue it and print its token once.
    Issue(commands::issue::IssueArgs),
    /// List ApiKeys.
    List(commands::list::ListArgs),
    /// Revoke an ApiKey: every sidecar refuses it from its next bundle update.
    Revoke(commands::revoke::RevokeArgs),
    /// Rotate an operator-issued ApiKey: print the new token once; the previous one
    /// keeps working for the grace period.
    Rotate(commands::rotate::RotateArgs),
    /// Show an ApiKey's status, conditions and recent Events.
    Describe(commands::describe::DescribeArgs),
    /// Show an ApiKey's live usage as each sidecar counts it: bucket level, quota used
    /// today, lockout. Needs `get` on Secret turnpike.admin, `list` pods and `get`
    /// pods/proxy in the namespace (see docs/plugin.md).
    Usage(commands::usage::UsageArgs),
    /// Print a shell completion script (bash, zsh, fish); see docs/plugin.md to install it.
    Completion(generate::CompletionArgs),
    /// Print the man page (roff), or write one page per command with --out-dir.
    Man(generate::ManArgs),
}

/// Runs a parsed command line. Offline commands (`key`, `completion`, `man`) never
/// touch the network; the others build a client and a Tokio runtime first.
///
/// # Errors
/// Whatever the command reports; the caller prints it and exits with code 1.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    use anyhow::Context;

    let command = match cli.command {
        Command::Key(command) => return key::run(command),
        Command::Completion(args) => return Ok(generate::run_completion(&args)?),
        Command::Man(args) => return Ok(generate::run_man(&args)?),
        other => other,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
        let (mut stdout, mut stderr) = (stdout.lock(), stderr.lock());
        let mut out = output::Out {
            out: &mut stdout,
            err: &mut stderr,
        };
        match command {
            Command::Key(command) => key::run(command),
            Command::Completion(args) => Ok(generate::run_completion(&args)?),
            Command::Man(args) => Ok(generate::run_man(&args)?),
            Command::Issue(args) => {
                let (client, ns) = cluster::connect(&args.cluster).await?;
                let what = format!("issue ApiKey {ns}/{}", args.name);
                commands::issue::run(&client, &ns, &args, &mut out)
                    .await
                    .context(what)
            }
            Command::List(args) => {
                let (client, ns) = cluster::connect(&args.cluster).await?;
                let scope = (!args.all_namespaces).then_some(ns.as_str());
                commands::list::run(&client, scope, args.output, &mut out)
                    .await
                    .context("list ApiKeys")
            }
            Command::Revoke(args) => {
                let (client, ns) = cluster::connect(&args.cluster).await?;
                let what = format!("revoke ApiKey {ns}/{}", args.name);
                commands::revoke::run(&client, &ns, &args, &mut out)
                    .await
                    .context(what)
            }
            Command::Rotate(args) => {
                let (client, ns) = cluster::connect(&args.cluster).await?;
                let what = format!("rotate ApiKey {ns}/{}", args.name);
                commands::rotate::run(&client, &ns, &args, &mut out)
                    .await
                    .context(what)
            }
            Command::Usage(args) => {
                let what = match (&args.name, &args.key_id) {
                    (Some(name), _) => format!("usage of ApiKey {name}"),
                    (None, Some(id)) => format!("usage of key {id}"),
                    (None, None) => "usage".to_owned(),
                };
                let env_token = std::env::var(sidecars::ADMIN_TOKEN_ENV).ok();
                commands::usage::run(&args, env_token, &mut out)
                    .await
                    .context(what)
            }
            Command::Describe(args) => {
                let (client, ns) = cluster::connect(&args.cluster).await?;
                let what = format!("describe ApiKey {ns}/{}", args.name);
                let now = jiff::Timestamp::now();
                commands::describe::run(&client, &ns, &args.name, args.output, now, &mut out)
                    .await
                    .context(what)
            }
        }
    })
}
