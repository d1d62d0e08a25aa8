//! `kubectl turnpike completion SHELL` and `kubectl turnpike man`: shell completion
//! scripts (clap_complete) and man pages (clap_mangen), generated from the same clap
//! definition as the parser, so they cannot drift from the flags. Offline: no cluster.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, ValueEnum};
use clap_complete::Shell;

/// The name completions are registered for: the binary on `PATH`. kubectl runs the
/// plugin as `kubectl-turnpike`; the scripts complete that command (see
/// docs/plugin.md for `kubectl turnpike <TAB>`).
pub const BIN: &str = "kubectl-turnpike";

/// Shells with a completion script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    /// Bash (needs the bash-completion package).
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

impl From<CompletionShell> for Shell {
    fn from(shell: CompletionShell) -> Shell {
        match shell {
            CompletionShell::Bash => Shell::Bash,
            CompletionShell::Zsh => Shell::Zsh,
            CompletionShell::Fish => Shell::Fish,
        }
    }
}

/// Arguments of `completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to print a completion script for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// Arguments of `man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write one page per command (kubectl-turnpike.1, kubectl-turnpike-list.1, ...)
    /// into DIR instead of printing the main page to stdout. DIR must exist; pages of
    /// the same name in it are replaced.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Errors of `completion` and `man`.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Writing to stdout failed (the cause is the error's source).
    #[error("writing output")]
    Output(#[from] io::Error),
    /// Writing the pages into `--out-dir` failed (the cause is the error's source).
    #[error("writing man pages into {}", dir.display())]
    ManDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Writes the completion script for `shell` to `out`.
///
/// # Errors
/// [`GenerateError::Output`].
pub fn completion(shell: CompletionShell, out: &mut dyn Write) -> Result<(), GenerateError> {
    let mut script = Vec::new();
    clap_complete::generate(
        Shell::from(shell),
        &mut crate::Cli::command(),
        BIN,
        &mut script,
    );
    out.write_all(&script)?;
    Ok(())
}

/// The command the man pages are made from (named `kubectl-turnpike` after the
/// binary, as a section 1 page is). `help` is left out: it has no page of its own.
fn man_command() -> clap::Command {
    crate::Cli::command().disable_help_subcommand(true)
}

/// Writes the main man page (every command listed, with its flags on its own page)
/// to `out`.
///
/// # Errors
/// [`GenerateError::Output`].
pub fn man_page(out: &mut dyn Write) -> Result<(), GenerateError> {
    clap_mangen::Man::new(man_command()).render(out)?;
    Ok(())
}

/// Writes one page per command into `dir`; returns the files written, sorted.
///
/// # Errors
/// [`GenerateError::ManDir`].
pub fn man_pages(dir: &Path) -> Result<Vec<PathBuf>, GenerateError> {
    let failed = |source| GenerateError::ManDir {
        dir: dir.to_owned(),
        source,
    };
    if !dir.is_dir() {
        return Err(failed(io::Error::new(
            io::ErrorKind::NotFound,
            "not a directory (create it first)",
        )));
    }
    // As clap_mangen::generate_to does, but keeping the paths it writes.
    fn each(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            each(sub, dir, written)?;
        }
        written.push(clap_mangen::Man::new(cmd.clone()).generate_to(dir)?);
        Ok(())
    }
    let mut cmd = man_command();
    cmd.build();
    let mut written = Vec::new();
    each(&cmd, dir, &mut written).map_err(failed)?;
    written.sort();
    Ok(written)
}

/// Runs `completion`.
///
/// # Errors
/// See [`completion`].
pub fn run_completion(args: &CompletionArgs) -> Result<(), GenerateError> {
    let stdout = io::stdout();
    completion(args.shell, &mut stdout.lock())
}

/// Runs `man`: the main page to stdout, or every page into `--out-dir` (their paths
/// listed on stderr).
///
/// # Errors
/// See [`man_page`] and [`man_pages`].
pub fn run_man(args: &ManArgs) -> Result<(), GenerateError> {
    match &args.out_dir {
        None => man_page(&mut io::stdout().lock()),
        Some(dir) => {
            let mut err = io::stderr().lock();
            for page in man_pages(dir)? {
                writeln!(err, "wrote {}", page.display())?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every visible command of the plugin, nested ones as `key new`.
    fn commands() -> Vec<String> {
        let cli = crate::Cli::command();
        let mut names = Vec::new();
        for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
            names.push(sub.get_name().to_owned());
            for nested in sub.get_subcommands().filter(|s| !s.is_hide_set()) {
                names.push(format!("{} {}", sub.get_name(), nested.get_name()));
            }
        }
        names
    }

    #[test]
    fn the_commands_are_the_ones_documented() {
        // A new command needs a line in docs/plugin.md and here.
        assert_eq!(
            commands(),
            [
                "key",
                "key new",
                "key hash",
                "issue",
                "list",
                "revoke",
                "rotate",
                "describe",
                "usage",
                "completion",
                "man"
            ]
        );
    }

    fn script(shell: CompletionShell) -> String {
        let mut out = Vec::new();
        completion(shell, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn completion_scripts_name_every_command_and_flag() {
        let top: Vec<String> = commands()
            .into_iter()
            .filter(|c| !c.contains(' '))
            .collect();
        for shell in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let text = script(shell);
            for name in top.iter().chain(&["new".to_owned(), "hash".to_owned()]) {
                assert!(text.contains(name.as_str()), "{shell:?}: no {name}");
            }
            for flag in ["output", "all-namespaces", "sidecar-url", "out-dir"] {
                // Fish names long flags `-l NAME`, the others `--NAME`.
                let spelled = match shell {
                    CompletionShell::Fish => format!("-l {flag}"),
                    _ => format!("--{flag}"),
                };
                assert!(text.contains(&spelled), "{shell:?}: no {spelled}");
            }
            // The machine formats are offered as values of -o.
            assert!(text.contains("yaml"), "{shell:?}: no yaml");
        }
        let bash = script(CompletionShell::Bash);
        assert!(
            bash.contains("complete -F _kubectl__turnpike -o nosort -o bashdefault -o default kubectl-turnpike\n"),
            "bash registers for the binary name"
        );
        assert!(script(CompletionShell::Zsh).starts_with("#compdef kubectl-turnpike"));
        assert!(script(CompletionShell::Fish).contains("complete -c kubectl-turnpike"));
    }

    #[test]
    fn the_man_page_renders_and_lists_every_command() {
        let mut out = Vec::new();
        man_page(&mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "roff preamble");
        assert!(page.contains(".TH kubectl-turnpike 1"), "{page}");
        assert!(page.contains(".SH NAME") && page.contains(".SH SYNOPSIS"));
        assert!(
            !page.contains("turnpike\\-help"),
            "help has no page: {page}"
        );
        for name in commands().iter().filter(|c| !c.contains(' ')) {
            assert!(
                page.contains(&format!("kubectl\\-turnpike\\-{name}(1)")),
                "no {name} in\n{page}"
            );
        }
    }

    #[test]
    fn man_pages_one_per_command() {
        let dir = tempfile::tempdir().unwrap();
        let pages = man_pages(dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for expected in [
            "kubectl-turnpike.1",
            "kubectl-turnpike-list.1",
            "kubectl-turnpike-key-new.1",
            "kubectl-turnpike-usage.1",
        ] {
            assert!(names.iter().any(|n| n == expected), "{names:?}");
        }
        let list = std::fs::read_to_string(dir.path().join("kubectl-turnpike-list.1")).unwrap();
        assert!(
            list.contains("\\-\\-output") && list.contains("yaml"),
            "{list}"
        );
        // Written again, the same pages are reported (replaced, not skipped).
        assert_eq!(man_pages(dir.path()).unwrap(), pages);

        let missing = dir.path().join("nope");
        let err = format!(
            "{:#}",
            anyhow::Error::from(man_pages(&missing).unwrap_err())
        );
        assert!(
            err.ends_with("nope: not a directory (create it first)"),
            "{err}"
        );
    }
}
