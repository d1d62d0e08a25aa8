//! `kubectl turnpike key ...`: mint keys offline and hash tokens.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use jiff::Timestamp;
use turnpike_api::hash::hash_token;
use turnpike_api::token::Token;

use crate::manifest::{self, ApiKeyInput};
use crate::validate;

/// Longest stdin accepted by `key hash` (a token is 66 bytes).
const MAX_STDIN: u64 = 4096;

/// Key commands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Mint a new API key offline: print the token once and an ApiKey manifest that
    /// holds only the key id and an argon2id hash (safe to commit to Git).
    New(NewArgs),
    /// Read a token from stdin, check its format and print its argon2id PHC hash.
    Hash,
}

/// Arguments of `key new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// ApiKey name (DNS-1123 subdomain).
    #[arg(long, value_parser = validate::resource_name)]
    pub name: String,
    /// Scopes granted to the key, comma-separated (e.g. orders:read,orders:write).
    #[arg(long, required = true, value_delimiter = ',', value_parser = validate::scope)]
    pub scopes: Vec<String>,
    /// Namespace of the ApiKey; omitted from the manifest when not given.
    #[arg(long, short = 'n', value_parser = validate::dns_label)]
    pub namespace: Option<String>,
    /// Targets the key is valid for, comma-separated; default: every target of the
    /// namespace.
    #[arg(long, value_delimiter = ',', value_parser = validate::dns_label)]
    pub targets: Vec<String>,
    /// Owner recorded for audit (free text, e.g. a team or an email address).
    #[arg(long, value_parser = validate::owner)]
    pub owner: Option<String>,
    /// Expiry: RFC 3339 (e.g. 2027-06-30T00:00:00Z) or a duration from now (e.g. 720h).
    #[arg(long, value_parser = validate::expires)]
    pub expires: Option<Timestamp>,
    /// Write the manifest to DIR/NAME.apikey.yaml instead of stdout (the directory is
    /// created if missing; an existing file is never overwritten).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

/// Runs a key command.
pub fn run(command: KeyCommand) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match command {
        KeyCommand::New(args) => new(args, &mut out),
        KeyCommand::Hash => hash(&mut io::stdin().lock(), &mut out),
    }
}

/// Drops repeated values, keeping the first occurrence's position.
pub fn dedup(values: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    values
        .into_iter()
        .filter(|v| seen.insert(v.clone()))
        .collect()
}

/// `key new`: mint, hash, print the token once and the manifest (or write it).
pub fn new(args: NewArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let token = Token::mint().context("minting a token")?;
    let hash = hash_token(&token).context("hashing the token")?;
    let input = ApiKeyInput {
        name: args.name,
        namespace: args.namespace,
        targets: dedup(args.targets),
        scopes: dedup(args.scopes),
        owner: args.owner,
        expires_at: args.expires.map(|at| at.to_string()),
        key_id: token.id().to_owned(),
        hash: hash.as_str().to_owned(),
    };
    let yaml = manifest::to_yaml(&input).context("rendering the ApiKey manifest")?;

    match args.output_dir {
        Some(dir) => {
            // Write the file first: if that fails, no token is shown that nothing
            // could ever accept.
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating directory {}", dir.display()))?;
            let path = dir.join(format!("{}.apikey.yaml", input.name));
            let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => bail!(
                    "{} already exists; not overwriting it (remove it or choose another --name or --output-dir)",
                    path.display()
                ),
                Err(err) => {
                    return Err(err).with_context(|| format!("creating {}", path.display()));
                }
            };
            file.write_all(yaml.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            print_token(out, &token)?;
            writeln!(
                out,
                "# ApiKey manifest (key id and hash only) written to {}",
                path.display()
            )?;
        }
        None => {
            print_token(out, &token)?;
            writeln!(
                out,
                "# The manifest below holds only the key id and an argon2id hash; the token\n\
                 # cannot be recovered from it. Keep the token line out of Git."
            )?;
            out.write_all(yaml.as_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Marks the one line that carries a token, in every command that prints one.
pub const TOKEN_MARK: &str = "# TOKEN (shown once, store it now): ";

/// Prints the token: the only place the plugin ever writes one.
pub fn print_token(out: &mut dyn Write, token: &Token) -> io::Result<()> {
    writeln!(out, "{TOKEN_MARK}{}", token.expose_token())
}

/// `key hash`: token on stdin -> PHC string on stdout.
pub fn hash(input: &mut dyn Read, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut text = String::new();
    input
        .take(MAX_STDIN)
        .read_to_string(&mut text)
        .context("reading the token from stdin")?;
    let parsed = Token::parse(text.trim()).context("stdin does not hold a valid token")?;
    let hash = hash_token(&parsed.to_token()).context("hashing the token")?;
    writeln!(out, "{}", hash.as_str())?;
    out.flush()?;
    Ok(())
}
