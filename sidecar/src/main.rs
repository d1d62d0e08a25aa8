//! `turnpike-sidecar`: the proxy around [`turnpike_sidecar::engine`]. See
//! `docs/sidecar.md` for flags, endpoints and the request path.

use anyhow::Context as _;
use clap::Parser as _;
use turnpike_sidecar::config::{ADMIN_TOKEN_ENV, Args, Config};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let env_token = std::env::var(ADMIN_TOKEN_ENV).ok();
    let config = Config::from_args(args, env_token).context("invalid configuration")?;
    turnpike_sidecar::telemetry::init(config.log_format, &config.log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("turnpike-sidecar")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(turnpike_sidecar::server::run(config))
}
