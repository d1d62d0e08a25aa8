//! Logging: one subscriber, two outputs on stdout.
//!
//! - Audit lines (target `audit`) are always JSON, one object per line, with their
//!   fields at the top level, whatever `--log-format` says and whatever the filter:
//!   they are a record, not diagnostics.
//! - Everything else follows `--log-format` (`json` in pods, `pretty` locally) and
//!   `--log-level` (env-filter syntax). Libraries' chatter (hyper, h2, rustls) is
//!   held at `warn` unless the filter names them.

use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::config::LogFormat;

/// Installs the global subscriber.
///
/// # Errors
/// An invalid `--log-level` filter, or a subscriber already installed.
pub fn init(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let mut directives = String::from("h2=warn,hyper=warn,hyper_util=warn,rustls=warn,");
    directives.push_str(level);
    let env = EnvFilter::try_new(&directives)
        .map_err(|e| anyhow::anyhow!("--log-level {level:?}: {e}"))?;
    let not_audit = filter_fn(|m| m.target() != "audit");

    let audit = fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stdout)
        .with_filter(Targets::new().with_target("audit", Level::INFO));

    let logs = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stdout)
            .with_filter(env.and(not_audit))
            .boxed(),
        LogFormat::Pretty => fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_writer(std::io::stdout)
            .with_filter(env.and(not_audit))
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(audit)
        .with(logs)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}
