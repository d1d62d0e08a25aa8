//! The load generator of `scripts/bench-load` (docs/benchmarks.md says what it measures).
//!
//! Written here on purpose: `wrk` and `hey` (Debian) are closed-loop tools whose latency
//! at a fixed rate suffers from coordinated omission (wrk2 is not packaged), `hey` stops
//! at p99, and none of them can send from 10,000 distinct source addresses with 10,000
//! distinct keys, which the memory scenario needs. One small tool with one client (hyper,
//! HTTP/1.1 keep-alive) measures every configuration with the same code.
//!
//! Subcommands:
//! - `ports`: free TCP ports on 127.0.0.1 for the harness.
//! - `keys`: synthetic ApiKey manifests and their tokens.
//! - `closed`: fixed concurrency, as fast as the server answers (throughput).
//! - `rate`: a fixed request rate; latency counts from each request's intended send
//!   time, so a stall delays the schedule's later requests and they are measured as late
//!   (coordinated omission corrected, as wrk2 does).
//! - `ips`: one connection per client address `127.1.x.y` (Linux routes 127.0.0.0/8 to
//!   the loopback interface), each presenting its own key.
//!
//! Results are one `RESULT key=value ...` line on stdout, latencies in microseconds.
#![allow(
    clippy::disallowed_methods,
    reason = "a load generator reads the wall clock; the ban keeps the engine's clock injected"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use clap::{Args, Parser, Subcommand};
use data_encoding::BASE64_NOPAD;
use hdrhistogram::Histogram;
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri, header::HOST};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Mutex, mpsc};
use turnpike_api::hash::{self, PhcHash};
use turnpike_api::token::Token;

#[derive(Parser)]
#[command(name = "loadgen", about = "Load generator of scripts/bench-load")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prints `count` TCP ports free on 127.0.0.1, space-separated.
    Ports {
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
    /// Writes `count` ApiKey manifests (one YAML stream) and their tokens (one a line).
    Keys(KeysArgs),
    /// Closed loop: `connections` connections, each sends its next request when the
    /// previous answer has arrived.
    Closed(ClosedArgs),
    /// Open loop at a fixed rate, latency from the intended send time.
    Rate(RateArgs),
    /// One connection per client address, each with its own key.
    Ips(IpsArgs),
}

#[derive(Args)]
struct Target {
    /// `http://IP:PORT/path` (an IP literal: no name resolution).
    #[arg(long)]
    url: Uri,
    /// Extra request header `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Name printed in the result line.
    #[arg(long, default_value = "run")]
    label: String,
}

#[derive(Args)]
struct ClosedArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring (connections, caches, CPU frequency).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
}

#[derive(Args)]
struct RateArgs {
    #[command(flatten)]
    target: Target,
    /// Requests per second, spread evenly.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Connections that take the scheduled requests (a free one takes the next).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
}

#[derive(Args)]
struct IpsArgs {
    #[command(flatten)]
    target: Target,
    /// Tokens file written by `keys`.
    #[arg(long)]
    tokens: PathBuf,
    /// Distinct client addresses (127.1.x.y).
    #[arg(long, default_value_t = 10_000)]
    ips: usize,
    /// Distinct keys used (client i presents key i mod keys).
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    #[arg(long, default_value_t = 2)]
    requests_per_ip: usize,
    /// Clients connected at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

#[derive(Args)]
struct KeysArgs {
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// The first this many keys are hashed with the production parameters
    /// (`turnpike_api::hash::hash_token`); the rest with the lowest parameters the
    /// bundle accepts, so that 10,000 hashes take seconds, not minutes.
    #[arg(long, default_value_t = 16)]
    production_params: usize,
    #[arg(long)]
    namespace: String,
    #[arg(long)]
    target: String,
    #[arg(long)]
    scope: String,
    /// Directory for the YAML streams, `apikeys-NNN.yaml` of at most
    /// [`KEYS_PER_FILE`] documents each (the manifest reader's per-stream budget is
    /// 1,024 documents).
    #[arg(long)]
    manifest_dir: PathBuf,
    /// Where the tokens go, one a line, key 0 first.
    #[arg(long)]
    tokens: PathBuf,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Ports { count } => ports(count),
        Command::Keys(a) => keys(&a),
        Command::Closed(a) => runtime()?.block_on(closed(a)),
        Command::Rate(a) => runtime()?.block_on(rate(a)),
        Command::Ips(a) => runtime()?.block_on(ips(a)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn ports(count: usize) -> Result<()> {
    // Hold every listener until all are chosen so the ports differ.
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0"))
        .collect::<Result<Vec<_>>>()?;
    let ports = listeners
        .iter()
        .map(|l| Ok(l.local_addr().context("local address")?.port().to_string()))
        .collect::<Result<Vec<_>>>()?;
    println!("{}", ports.join(" "));
    Ok(())
}

// ---------------------------------------------------------------------------------
// Synthetic keys

/// argon2id at the lowest cost `PhcHash::parse` accepts (m = 8 MiB, t = 1, p = 1): the
/// same algorithm and the same PHC string length as the production parameters, a
/// fraction of the work. One per thread: the 8 MiB of argon2 memory is reused.
struct CheapHasher {
    argon2: Argon2<'static>,
    blocks: Vec<Block>,
}

impl CheapHasher {
    const M: u32 = hash::M_COST_RANGE.0;
    const T: u32 = hash::T_COST_RANGE.0;
    const P: u32 = hash::P_COST_RANGE.0;

    fn new() -> Result<Self> {
        let params = Params::new(Self::M, Self::T, Self::P, Some(hash::OUTPUT_LEN))
            .map_err(|e| anyhow!("argon2 parameters: {e}"))?;
        let blocks = vec![Block::new(); params.block_count()];
        Ok(Self {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            blocks,
        })
    }

    fn hash(&mut self, token: &Token) -> Result<PhcHash> {
        let mut salt = [0u8; hash::SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| anyhow!("drawing a salt: {e}"))?;
        let mut out = [0u8; hash::OUTPUT_LEN];
        self.argon2
            .hash_password_into_with_memory(
                token.expose_token().as_bytes(),
                &salt,
                &mut out,
                &mut self.blocks,
            )
            .map_err(|e| anyhow!("argon2: {e}"))?;
        let b64 = |b: &[u8]| BASE64_NOPAD.encode(b);
        let phc = format!(
            "$argon2id$v=19$m={},t={},p={}${}${}",
            Self::M,
            Self::T,
            Self::P,
            b64(&salt),
            b64(&out)
        );
        PhcHash::parse(&phc).context("the bundle refuses the cheap hash")
    }
}

/// ApiKey documents per manifest file.
const KEYS_PER_FILE: usize = 1000;

fn keys(a: &KeysArgs) -> Result<()> {
    let tokens = (0..a.count)
        .map(|_| Token::mint().context("minting a token"))
        .collect::<Result<Vec<_>>>()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = a.count.div_ceil(threads).max(1);
    let hashes: Vec<PhcHash> = std::thread::scope(|s| {
        let workers: Vec<_> = tokens
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                s.spawn(move || {
                    let mut cheap = CheapHasher::new()?;
                    part.iter()
                        .enumerate()
                        .map(|(i, t)| {
                            if c * chunk + i < a.production_params {
                                hash::hash_token(t).context("argon2 with production parameters")
                            } else {
                                cheap.hash(t)
                            }
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(a.count);
        for w in workers {
            all.extend(
                w.join()
                    .map_err(|_| anyhow!("a hashing thread panicked"))??,
            );
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    let mut lines = String::with_capacity(a.count * 80);
    for (n, batch) in tokens.chunks(KEYS_PER_FILE).enumerate() {
        let mut yaml = String::with_capacity(batch.len() * 400);
        for (j, token) in batch.iter().enumerate() {
            let i = n * KEYS_PER_FILE + j;
            // `write!` into a String cannot fail.
            let _ = write!(
                yaml,
                "---\napiVersion: turnpike.dev/v1alpha1\nkind: ApiKey\n\
                 metadata: {{name: bench-{i:05}, namespace: {ns}}}\n\
                 spec:\n  targets: [{target}]\n  scopes: [\"{scope}\"]\n  owner: bench-load\n  \
                 keyId: {id}\n  hash: \"{hash}\"\n",
                ns = a.namespace,
                target = a.target,
                scope = a.scope,
                id = token.id(),
                hash = hashes[i].as_str(),
            );
            lines.push_str(token.expose_token());
            lines.push('\n');
        }
        let file = a.manifest_dir.join(format!("apikeys-{n:03}.yaml"));
        std::fs::write(&file, yaml).with_context(|| format!("writing {}", file.display()))?;
    }
    std::fs::write(&a.tokens, lines).with_context(|| format!("writing {}", a.tokens.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// The client

/// What every request of a run carries.
struct Plan {
    addr: SocketAddr,
    host: HeaderValue,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Plan {
    fn new(t: &Target) -> Result<Self> {
        if t.url.scheme_str() != Some("http") {
            bail!("--url: only http:// URLs");
        }
        let authority = t.url.authority().context("--url needs IP:PORT")?;
        let addr: SocketAddr = authority
            .as_str()
            .parse()
            .context("--url: the host must be an IP literal with a port")?;
        let path = t
            .url
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let headers = t
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            addr,
            host: HeaderValue::from_str(authority.as_str()).context("--url host")?,
            path,
            headers,
        })
    }

    fn request(&self, extra: Option<&(HeaderName, HeaderValue)>) -> Result<Request<Empty<Bytes>>> {
        let mut b = Request::get(self.path.as_str()).header(HOST, self.host.clone());
        for (n, v) in self.headers.iter().chain(extra) {
            b = b.header(n, v);
        }
        b.body(Empty::new()).context("building the request")
    }
}

fn parse_header(h: &str) -> Result<(HeaderName, HeaderValue)> {
    let (n, v) = h
        .split_once(':')
        .with_context(|| format!("--header {h:?}: expected `name: value`"))?;
    Ok((
        HeaderName::from_bytes(n.trim().as_bytes()).context("--header name")?,
        HeaderValue::from_str(v.trim()).context("--header value")?,
    ))
}

type Conn = SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<Conn> {
    let stream = match source {
        None => TcpStream::connect(addr).await,
        Some(ip) => {
            let socket = TcpSocket::new_v4().context("creating a socket")?;
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("binding source address {ip}"))?;
            socket.connect(addr).await
        }
    }
    .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes; errors show up on
        // the sender.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole answer.
async fn exchange(conn: &mut Conn, req: Request<Empty<Bytes>>) -> Result<StatusCode> {
    conn.ready().await.context("connection closed")?;
    let resp = conn.send_request(req).await.context("sending")?;
    let status = resp.status();
    resp.into_body()
        .collect()
        .await
        .context("reading the body")?;
    Ok(status)
}

/// One worker's tally.
struct Tally {
    latency: Histogram<u64>,
    ok: u64,
    errors: u64,
    statuses: BTreeMap<u16, u64>,
}

impl Tally {
    fn new() -> Result<Self> {
        Ok(Self {
            // 1 ns .. 60 s, 3 significant digits.
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .context("creating a histogram")?,
            ok: 0,
            errors: 0,
            statuses: BTreeMap::new(),
        })
    }

    fn record(&mut self, outcome: &Result<StatusCode>, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency.saturating_record(ns.max(1));
        match outcome {
            Ok(s) => {
                *self.statuses.entry(s.as_u16()).or_default() += 1;
                if s.is_success() {
                    self.ok += 1;
                } else {
                    self.errors += 1;
                }
            }
            Err(_) => self.errors += 1,
        }
    }

    fn merge(&mut self, other: Tally) -> Result<()> {
        self.latency
            .add(&other.latency)
            .context("merging histograms")?;
        self.ok += other.ok;
        self.errors += other.errors;
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        Ok(())
    }

    fn line(&self, mode: &str, label: &str, seconds: f64) -> String {
        let us = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        let n = self.latency.len();
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect();
        format!(
            "RESULT mode={mode} label={label} requests={n} ok={} errors={} seconds={seconds:.1} \
             rps={:.0} p50_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} statuses={}",
            self.ok,
            self.errors,
            n as f64 / seconds,
            us(0.5),
            us(0.99),
            us(0.999),
            self.latency.max() as f64 / 1000.0,
            if statuses.is_empty() {
                "-".to_string()
            } else {
                statuses.join(",")
            },
        )
    }
}

async fn join_all(workers: Vec<tokio::task::JoinHandle<Result<Tally>>>) -> Result<Tally> {
    let mut total = Tally::new()?;
    for w in workers {
        total.merge(w.await.context("a worker panicked")??)?;
    }
    Ok(total)
}

fn secs(s: f64, flag: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| anyhow!("--{flag}: not a duration in seconds"))
}

async fn closed(a: ClosedArgs) -> Result<()> {
    let plan = Arc::new(Plan::new(&a.target)?);
    let start = Instant::now();
    let measure_from = start + secs(a.warmup, "warmup")?;
    let end = measure_from + secs(a.duration, "duration")?;
    let mut workers = Vec::new();
    for _ in 0..a.connections {
        let plan = plan.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::new()?;
            let mut conn = connect(plan.addr, None).await?;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let outcome = exchange(&mut conn, plan.request(None)?).await;
                if sent >= measure_from {
                    tally.record(&outcome, sent.elapsed());
                }
                if outcome.is_err() {
                    conn = connect(plan.addr, None).await?;
                }
            }
            Ok(tally)
        }));
    }
    let total = join_all(workers).await?;
    println!("{}", total.line("closed", &a.target.label, a.duration));
    Ok(())
}

async fn rate(a: RateArgs) -> Result<()> {
    if a.rate == 0 {
        bail!("--rate must be at least 1");
    }
    let plan = Arc::new(Plan::new(&a.target)?);
    let warmup = secs(a.warmup, "warmup")?;
    let total_time = warmup + secs(a.duration, "duration")?;
    let conns = {
        let mut v = Vec::with_capacity(a.connections);
        for _ in 0..a.connections {
            v.push(connect(plan.addr, None).await?);
        }
        v
    };
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + warmup;
    // The schedule runs on its own thread: tokio's timer has a 1 ms resolution, a
    // thread sleep (nanosleep) wakes within tens of microseconds. Wake-up lateness is
    // counted as latency, equally for every configuration.
    let per_second = a.rate;
    let ticker = std::thread::spawn(move || {
        for i in 0u64.. {
            let offset = Duration::from_nanos(i.saturating_mul(1_000_000_000) / per_second);
            if offset >= total_time {
                break;
            }
            let intended = start + offset;
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            if tx.send(intended).is_err() {
                break;
            }
        }
    });
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::new();
    for mut conn in conns {
        let (plan, rx) = (plan.clone(), rx.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::new()?;
            loop {
                let next = rx.lock().await.recv().await;
                let Some(intended) = next else { break };
                let outcome = exchange(&mut conn, plan.request(None)?).await;
                if intended >= measure_from {
                    // From the intended send time, not the actual one.
                    tally.record(&outcome, intended.elapsed());
                }
                if outcome.is_err() {
                    conn = connect(plan.addr, None).await?;
                }
            }
            Ok(tally)
        }));
    }
    let total = join_all(workers).await?;
    ticker
        .join()
        .map_err(|_| anyhow!("the schedule thread panicked"))?;
    println!(
        "{} target_rps={}",
        total.line("rate", &a.target.label, a.duration),
        a.rate
    );
    Ok(())
}

/// Client `i`'s address: 127.1.a.b with b in 1..=254.
fn client_ip(i: usize) -> Result<IpAddr> {
    let a = u8::try_from(i / 254).context("too many client addresses (at most 65,024)")?;
    let b = u8::try_from(i % 254 + 1).context("address arithmetic")?;
    Ok(IpAddr::V4(Ipv4Addr::new(127, 1, a, b)))
}

async fn ips(a: IpsArgs) -> Result<()> {
    let plan = Arc::new(Plan::new(&a.target)?);
    let text = std::fs::read_to_string(&a.tokens)
        .with_context(|| format!("reading {}", a.tokens.display()))?;
    let tokens: Vec<HeaderValue> = text
        .lines()
        .take(a.keys)
        .map(|t| HeaderValue::from_str(t).context("a token is not a header value"))
        .collect::<Result<_>>()?;
    if tokens.is_empty() {
        bail!("{}: no tokens", a.tokens.display());
    }
    client_ip(a.ips.saturating_sub(1))?;
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..a.concurrency {
        let (plan, tokens, next) = (plan.clone(), tokens.clone(), next.clone());
        let (count, per_ip) = (a.ips, a.requests_per_ip);
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::new()?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let key = (
                    HeaderName::from_static("x-api-key"),
                    tokens[i % tokens.len()].clone(),
                );
                let mut conn = connect(plan.addr, Some(client_ip(i)?)).await?;
                for _ in 0..per_ip {
                    let sent = Instant::now();
                    let outcome = exchange(&mut conn, plan.request(Some(&key))?).await;
                    tally.record(&outcome, sent.elapsed());
                    if outcome.is_err() {
                        break;
                    }
                }
            }
            Ok(tally)
        }));
    }
    let total = join_all(workers).await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} ips={} keys={}",
        total.line("ips", &a.target.label, seconds),
        a.ips,
        tokens.len()
    );
    Ok(())
}
