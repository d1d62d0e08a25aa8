//! `turnpike-sidecar`: the proxy around [`turnpike_sidecar::engine`]. See
//! `docs/sidecar.md` for flags, endpoints and the request path.

use anyhow::Context as _;
use clap::Parser as _;
use turnpike_sidecar::config::{ADMIN_TOKEN_ENV, Args, Config};

/// mimalloc instead of the C library's allocator. Each argon2id verification borrows
/// `m` KiB (19 MiB with production parameters, 8 MiB in the run below) for a few
/// milliseconds; glibc's malloc raises its mmap threshold after the first such free and
/// from then on serves these blocks from per-thread arenas it does not give back: a
/// sidecar that had verified 3,000 distinct keys held 489 MiB. With mimalloc the same
/// run ended at 78-98 MiB, and at 26 MiB with the settings the image sets
/// (`MIMALLOC_ARENA_EAGER_COMMIT=0`, `MIMALLOC_PURGE_DELAY=0`, see
/// images/sidecar.Dockerfile and docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
