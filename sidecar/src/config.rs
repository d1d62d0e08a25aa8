//! Command line and environment: every flag has a `TURNPIKE_*` variable. [`Args`] is
//! what clap parses; [`Config::from_args`] checks it once at start and yields the one
//! validated [`Config`] the rest of the binary reads. Secrets (the admin token, the
//! TLS key) come from files or the environment only, never from a flag's value.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use clap::{Parser, ValueEnum};
use http::uri::{Authority, Scheme};
use turnpike_api::duration::Duration;

use crate::engine::{HygieneLimits, TrustedProxies};
use crate::source::Source;

/// Environment variable holding the admin token (alternative to `--admin-token-file`).
pub const ADMIN_TOKEN_ENV: &str = "TURNPIKE_ADMIN_TOKEN";

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (pods).
    Json,
    /// Human-readable (local runs).
    Pretty,
}

/// Where the bundle comes from (`--bundle-source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BundleSource {
    /// `--bundle-dir`, as the kubelet projects the bundle objects (or local mode with
    /// `--manifests`).
    Files,
    /// Watch the bundle objects of `--target` in `--namespace` through the API server;
    /// `--bundle-dir`, when given, serves at start-up and as the fallback.
    Api,
}

/// Where sidecar Events go (`--events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EventsMode {
    /// The API server when a client configuration is found (in-cluster or
    /// `KUBECONFIG`) and not in local mode, else audit lines.
    Auto,
    /// The API server (start fails without a client configuration).
    Api,
    /// Audit lines only.
    Log,
    /// None.
    Off,
}

fn hygiene() -> HygieneLimits {
    HygieneLimits::default()
}

/// `turnpike-sidecar`: enforces a Turnpike bundle in front of one workload.
#[derive(Parser, Debug)]
#[command(name = "turnpike-sidecar", version, about, long_about = None)]
pub struct Args {
    /// Address the proxy listens on.
    #[arg(long, env = "TURNPIKE_LISTEN", default_value = "0.0.0.0:9080")]
    pub listen: SocketAddr,

    /// The workload, as `http://host:port` (plain HTTP; it runs in the same pod).
    #[arg(
        long,
        env = "TURNPIKE_UPSTREAM",
        default_value = "http://127.0.0.1:8080"
    )]
    pub upstream: String,

    /// Address of the admin server (`/healthz`, `/readyz`, `/metrics`, `/internal/...`).
    #[arg(long, env = "TURNPIKE_ADMIN_LISTEN", default_value = "127.0.0.1:9901")]
    pub admin_listen: SocketAddr,

    /// Directory holding `keys.json` and `policy.json`, as the kubelet projects the
    /// Secret and ConfigMap `turnpike-<target>`. Polled for changes.
    #[arg(long, env = "TURNPIKE_BUNDLE_DIR", value_name = "DIR")]
    pub bundle_dir: Option<PathBuf>,

    /// Local mode: a directory of Turnpike manifests (`*.yaml`), compiled in process.
    #[arg(long, env = "TURNPIKE_MANIFESTS", value_name = "DIR")]
    pub manifests: Option<PathBuf>,

    /// Where the bundle comes from: `files` (`--bundle-dir`, or `--manifests` in local
    /// mode) or `api` (watch Secret(s) and ConfigMap `turnpike-<target>` of
    /// `--target` in `--namespace`; `--bundle-dir`, when given, is read at start-up
    /// and followed until the API has delivered a bundle).
    #[arg(
        long,
        env = "TURNPIKE_BUNDLE_SOURCE",
        value_enum,
        default_value = "files"
    )]
    pub bundle_source: BundleSource,

    /// The target whose bundle is enforced (local mode and `--bundle-source api`).
    #[arg(long, env = "TURNPIKE_TARGET", value_name = "NAME")]
    pub target: Option<String>,

    /// With `--bundle-source api`: the namespace of the bundle objects (default
    /// `$POD_NAMESPACE`). Local mode: the namespace of the manifests; resources of
    /// other namespaces are ignored, resources without one count as in it (default:
    /// the one namespace the manifests name, or `default` when they name none).
    #[arg(long, env = "TURNPIKE_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,

    /// The pod's name: `reportingInstance` of the sidecar's Events (default
    /// `$POD_NAME`, else `$HOSTNAME`).
    #[arg(long, env = "TURNPIKE_POD_NAME", value_name = "NAME")]
    pub pod_name: Option<String>,

    /// The pod's UID, so Events regarding the pod show in `kubectl describe pod`.
    #[arg(long, env = "TURNPIKE_POD_UID", value_name = "UID")]
    pub pod_uid: Option<String>,

    /// Where sidecar Events (LockoutTriggered, QuotaExhausted, RevokedKeyUsed,
    /// ExpiredKeyUsed, ScopeDenied, AbuseCooldown) go.
    #[arg(long, env = "TURNPIKE_EVENTS", value_enum, default_value = "auto")]
    pub events: EventsMode,

    /// Least time between two writes of one Event's series count.
    #[arg(long, env = "TURNPIKE_EVENT_SERIES_INTERVAL", default_value = "30s")]
    pub event_series_interval: Duration,

    /// Public keys (base64 Ed25519, comma-separated) one of which must have signed every
    /// mounted or API bundle file; the webhook injects the operator's. Bundles not
    /// signed by one of them are refused (the last good one stays in force).
    #[arg(long, env = "TURNPIKE_BUNDLE_TRUST", value_name = "KEY,...")]
    pub bundle_trust: Option<String>,

    /// Development only: accept mounted or API bundles without a signature. Anyone
    /// who may write Secrets in the namespace can then add keys.
    #[arg(long, env = "TURNPIKE_INSECURE_UNSIGNED_BUNDLES")]
    pub insecure_unsigned_bundles: bool,

    /// How often the bundle source is checked for changes.
    #[arg(long, env = "TURNPIKE_RELOAD_INTERVAL", default_value = "1s")]
    pub reload_interval: Duration,

    /// Proxies (CIDRs or addresses, comma-separated) whose `X-Forwarded-For` is
    /// believed. Empty: the peer address is always the client.
    #[arg(
        long,
        env = "TURNPIKE_TRUSTED_PROXIES",
        value_name = "CIDR,...",
        default_value = ""
    )]
    pub trusted_proxies: String,

    /// File holding the token for `/internal/...` (else the `TURNPIKE_ADMIN_TOKEN`
    /// environment variable; without either, those endpoints answer 503). The file may
    /// not exist yet (an optional Secret volume): it is re-read when it appears or
    /// changes, and until then those endpoints answer 503.
    #[arg(long, env = "TURNPIKE_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Serve TLS with this certificate chain (PEM); needs `--tls-key`.
    #[arg(
        long,
        env = "TURNPIKE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of `--tls-cert`.
    #[arg(
        long,
        env = "TURNPIKE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Time a client has to send a request's headers (slowloris; also the TLS
    /// handshake and the idle keep-alive limit).
    #[arg(long, env = "TURNPIKE_HEADER_TIMEOUT", default_value = "10s")]
    pub header_timeout: Duration,

    /// Longest pause between two chunks of a request body.
    #[arg(long, env = "TURNPIKE_BODY_IDLE_TIMEOUT", default_value = "30s")]
    pub body_idle_timeout: Duration,

    /// Time to connect to the workload (over: 502).
    #[arg(long, env = "TURNPIKE_UPSTREAM_CONNECT_TIMEOUT", default_value = "2s")]
    pub upstream_connect_timeout: Duration,

    /// Time the workload has to answer with response headers (over: 504).
    #[arg(long, env = "TURNPIKE_UPSTREAM_TIMEOUT", default_value = "30s")]
    pub upstream_timeout: Duration,

    /// On SIGTERM/SIGINT, how long requests in flight may take to finish.
    #[arg(long, env = "TURNPIKE_SHUTDOWN_GRACE", default_value = "20s")]
    pub shutdown_grace: Duration,

    /// Most header fields in a request (more: 431).
    #[arg(long, env = "TURNPIKE_MAX_HEADER_COUNT", default_value_t = hygiene().max_header_count)]
    pub max_header_count: usize,

    /// Most bytes of all request header names and values together (more: 431).
    #[arg(long, env = "TURNPIKE_MAX_HEADER_BYTES", default_value_t = hygiene().max_header_bytes)]
    pub max_header_bytes: usize,

    /// Longest request target, path and query (longer: 414).
    #[arg(long, env = "TURNPIKE_MAX_URI_BYTES", default_value_t = hygiene().max_uri_bytes)]
    pub max_uri_bytes: usize,

    /// Largest request body in bytes (larger: 413).
    #[arg(long, env = "TURNPIKE_MAX_BODY_BYTES", default_value_t = hygiene().max_body_bytes)]
    pub max_body_bytes: u64,

    /// Most client connections served at once; more wait in the accept queue.
    #[arg(long, env = "TURNPIKE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// argon2id verifications run at once (threads of the blocking pool they use).
    #[arg(long, env = "TURNPIKE_VERIFY_THREADS", default_value_t = 2)]
    pub verify_threads: usize,

    /// Verifications that may wait for a thread; when full, 503.
    #[arg(long, env = "TURNPIKE_VERIFY_QUEUE", default_value_t = 64)]
    pub verify_queue: usize,

    /// How long a verified key is reused without argon2 (invalidated at once when the
    /// key changes in the bundle).
    #[arg(long, env = "TURNPIKE_KEY_CACHE_TTL", default_value = "5m")]
    pub key_cache_ttl: Duration,

    /// Do not touch security headers at all, whatever the AccessPolicy's
    /// `securityHeaders` says (no defaults, no removals, no HSTS).
    #[arg(long, env = "TURNPIKE_DISABLE_SECURITY_HEADERS")]
    pub disable_security_headers: bool,

    /// Log format.
    #[arg(long, env = "TURNPIKE_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// Log filter (`tracing` env-filter syntax). Audit lines are always written.
    #[arg(long, env = "TURNPIKE_LOG", default_value = "info")]
    pub log_level: String,
}

/// A secret string: `Debug` prints `***`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// The value; use only to compare.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where the admin token comes from (checked once at start; see
/// [`crate::admin::AdminToken`] for how a file is followed).
#[derive(Clone, Debug, Default)]
pub enum AdminTokenConfig {
    /// None: `/internal/...` answers 503.
    #[default]
    Unset,
    /// `TURNPIKE_ADMIN_TOKEN`.
    Env(Secret),
    /// `--admin-token-file` (it may not exist yet).
    File(PathBuf),
}

/// Where requests are forwarded.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `http`.
    pub scheme: Scheme,
    /// `host:port`.
    pub authority: Authority,
}

/// Timeouts of the proxy.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Request headers (and TLS handshake, first byte).
    pub header: StdDuration,
    /// Pause between request body chunks.
    pub body_idle: StdDuration,
    /// Connecting to the workload.
    pub upstream_connect: StdDuration,
    /// Workload's response headers.
    pub upstream: StdDuration,
    /// Draining on shutdown.
    pub shutdown_grace: StdDuration,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Proxy address.
    pub listen: SocketAddr,
    /// The workload.
    pub upstream: Upstream,
    /// Admin address.
    pub admin_listen: SocketAddr,
    /// Bundle source.
    pub source: Source,
    /// What a bundle must satisfy (signature, target).
    pub admission: crate::source::Admission,
    /// Where Events go.
    pub events: EventsMode,
    /// Least time between two writes of one Event's series.
    pub event_series_interval: StdDuration,
    /// The pod (Events).
    pub pod: crate::events::kube::PodRef,
    /// Reload poll period.
    pub reload_interval: StdDuration,
    /// Trusted proxies.
    pub trusted_proxies: TrustedProxies,
    /// Admin token source.
    pub admin_token: AdminTokenConfig,
    /// TLS server configuration, if serving TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Request hygiene limits.
    pub hygiene: HygieneLimits,
    /// Connection cap.
    pub max_connections: usize,
    /// argon2 threads.
    pub verify_threads: usize,
    /// argon2 queue length.
    pub verify_queue: usize,
    /// Verified-key cache lifetime.
    pub key_cache_ttl: StdDuration,
    /// Add security headers.
    pub security_headers: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither or both bundle sources.
    #[error(
        "choose one bundle source: --bundle-dir DIR (mounted bundle) or --manifests DIR --target NAME (local mode)"
    )]
    Source,
    /// `--target` without `--manifests`, or the reverse.
    #[error("{0}")]
    LocalMode(&'static str),
    /// Signature settings that do not fit the source.
    #[error("{0}")]
    Signing(&'static str),
    /// A bad `--bundle-trust`.
    #[error("--bundle-trust: {0}")]
    Trust(#[from] turnpike_api::signing::SignatureError),
    /// A bad target or namespace name.
    #[error("--{flag}: {message}")]
    Name {
        /// Which flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A bad `--upstream`.
    #[error("--upstream {value:?}: {message}")]
    Upstream {
        /// The value (a URL, not a secret).
        value: String,
        /// What is wrong.
        message: &'static str,
    },
    /// A bad `--trusted-proxies`.
    #[error("--trusted-proxies: {0}")]
    TrustedProxies(#[from] crate::engine::ip::TrustedProxyError),
    /// The admin token file cannot be read or is empty.
    #[error("--admin-token-file {path}: {message}")]
    AdminToken {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the content).
        message: String,
    },
    /// The admin token variable is empty.
    #[error("{ADMIN_TOKEN_ENV} is set but empty")]
    EmptyAdminTokenEnv,
    /// A zero or too small value.
    #[error("--{flag} must be {requirement}")]
    Range {
        /// Which flag.
        flag: &'static str,
        /// What it must be.
        requirement: &'static str,
    },
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

fn parse_upstream(value: &str) -> Result<Upstream, ConfigError> {
    let err = |message| ConfigError::Upstream {
        value: value.chars().take(200).collect(),
        message,
    };
    let uri: http::Uri = value.parse().map_err(|_| err("not a URL"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| err("needs a scheme, e.g. http://127.0.0.1:8080"))?;
    if scheme != Scheme::HTTP {
        return Err(err(
            "only http:// is supported (the workload runs in the same pod)",
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| err("needs a host and port"))?;
    if authority.as_str().contains('@') {
        return Err(err("user info is not allowed"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(err(
            "must not have a path or query: requests are forwarded with their own path",
        ));
    }
    Ok(Upstream { scheme, authority })
}

/// Checks `--admin-token-file` at start: a file that does not exist yet is fine (the
/// kubelet adds it when the Secret appears); one that exists must hold a token.
fn check_token_file(path: &Path) -> Result<AdminTokenConfig, ConfigError> {
    // `metadata` follows symlinks: a kubelet `..data` link to nothing is "not yet".
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        _ => {
            crate::admin::read_token(path).map_err(|message| ConfigError::AdminToken {
                path: path.to_path_buf(),
                message,
            })?;
        }
    }
    Ok(AdminTokenConfig::File(path.to_path_buf()))
}

fn positive(flag: &'static str, d: Duration) -> Result<StdDuration, ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::Range {
            flag,
            requirement: "longer than 0",
        });
    }
    Ok(d.to_std())
}

impl Config {
    /// Checks `args`. `env_admin_token` is the value of [`ADMIN_TOKEN_ENV`], if set
    /// (read by the caller, so tests need not touch the process environment).
    ///
    /// # Errors
    /// The first problem found, naming the flag.
    pub fn from_args(args: Args, env_admin_token: Option<String>) -> Result<Config, ConfigError> {
        if let Some(ns) = &args.namespace {
            turnpike_api::validate::target(ns).map_err(|message| ConfigError::Name {
                flag: "namespace",
                message: message.replacen("target", "namespace", 1),
            })?;
        }
        let source = if args.bundle_source == BundleSource::Api {
            if args.manifests.is_some() {
                return Err(ConfigError::LocalMode(
                    "--manifests is local mode; it cannot be combined with --bundle-source api",
                ));
            }
            let target = args.target.clone().ok_or(ConfigError::LocalMode(
                "--bundle-source api needs --target NAME: the target whose bundle objects to watch",
            ))?;
            turnpike_api::validate::target(&target).map_err(|message| ConfigError::Name {
                flag: "target",
                message,
            })?;
            let namespace = args
                .namespace
                .clone()
                .or_else(|| {
                    std::env::var("POD_NAMESPACE")
                        .ok()
                        .filter(|n| !n.is_empty())
                })
                .ok_or(ConfigError::LocalMode(
                    "--bundle-source api needs --namespace NS (or $POD_NAMESPACE)",
                ))?;
            turnpike_api::validate::target(&namespace).map_err(|message| ConfigError::Name {
                flag: "namespace",
                message: message.replacen("target", "namespace", 1),
            })?;
            Source::Api {
                namespace,
                target,
                fallback_dir: args.bundle_dir.clone(),
            }
        } else {
            Self::files_source(&args)?
        };
        let pod_name = args
            .pod_name
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "turnpike-sidecar".into());
        let pod = crate::events::kube::PodRef {
            name: pod_name,
            uid: args.pod_uid.clone().filter(|u| !u.is_empty()),
        };
        let event_series_interval = positive("event-series-interval", args.event_series_interval)?;
        let events = args.events;
        let admission = Self::admission(&args, &source)?;
        let mut config = Self::rest(args, source, env_admin_token)?;
        config.admission = admission;
        config.events = events;
        config.event_series_interval = event_series_interval;
        config.pod = pod;
        Ok(config)
    }

    /// Signature and target checks for `source`: a mounted or API bundle needs a trust
    /// list, or the explicit development flag; local mode compiles in process and
    /// needs neither.
    fn admission(args: &Args, source: &Source) -> Result<crate::source::Admission, ConfigError> {
        let trust = args
            .bundle_trust
            .as_deref()
            .filter(|t| !t.trim().is_empty());
        if let Source::Manifests { .. } = source {
            if trust.is_some() {
                return Err(ConfigError::Signing(
                    "--bundle-trust applies to mounted or API bundles; local mode (--manifests) compiles the manifests in process",
                ));
            }
            return Ok(crate::source::Admission::default());
        }
        let trust = match (trust, args.insecure_unsigned_bundles) {
            (Some(_), true) => {
                return Err(ConfigError::Signing(
                    "choose one: --bundle-trust KEYS or --insecure-unsigned-bundles",
                ));
            }
            (Some(t), false) => Some(turnpike_api::signing::TrustedKeys::parse(t)?),
            (None, true) => None,
            (None, false) => {
                return Err(ConfigError::Signing(
                    "a mounted or API bundle must be signed: give --bundle-trust KEYS ($TURNPIKE_BUNDLE_TRUST; the Turnpike webhook injects it), or --insecure-unsigned-bundles for development",
                ));
            }
        };
        let expect =
            match source {
                Source::Api {
                    namespace, target, ..
                } => Some((namespace.clone(), target.clone())),
                Source::Dir(_) => match &args.target {
                    None => None,
                    Some(target) => {
                        let namespace = args
                        .namespace
                        .clone()
                        .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|n| !n.is_empty()))
                        .ok_or(ConfigError::LocalMode(
                            "--bundle-dir with --target needs --namespace NS (or $POD_NAMESPACE)",
                        ))?;
                        Some((namespace, target.clone()))
                    }
                },
                Source::Manifests { .. } => None,
            };
        Ok(crate::source::Admission { trust, expect })
    }

    fn files_source(args: &Args) -> Result<Source, ConfigError> {
        let source = match (
            args.bundle_dir.clone(),
            args.manifests.clone(),
            args.target.clone(),
        ) {
            (Some(dir), None, None) => Source::Dir(dir),
            // With a mounted bundle, --target is the target it must name.
            (Some(dir), None, Some(target)) => {
                turnpike_api::validate::target(&target).map_err(|message| ConfigError::Name {
                    flag: "target",
                    message,
                })?;
                Source::Dir(dir)
            }
            (None, Some(dir), Some(target)) => {
                turnpike_api::validate::target(&target).map_err(|message| ConfigError::Name {
                    flag: "target",
                    message,
                })?;
                if let Some(ns) = &args.namespace {
                    turnpike_api::validate::target(ns).map_err(|message| ConfigError::Name {
                        flag: "namespace",
                        message: message.replacen("target", "namespace", 1),
                    })?;
                }
                Source::Manifests {
                    dir,
                    target,
                    namespace: args.namespace.clone(),
                }
            }
            (None, Some(_), None) => {
                return Err(ConfigError::LocalMode(
                    "--manifests needs --target NAME: the target whose bundle to enforce",
                ));
            }
            _ => return Err(ConfigError::Source),
        };
        Ok(source)
    }

    /// Everything but the bundle source and the Events settings.
    fn rest(
        args: Args,
        source: Source,
        env_admin_token: Option<String>,
    ) -> Result<Config, ConfigError> {
        let admin_token = match (&args.admin_token_file, env_admin_token) {
            (Some(path), _) => check_token_file(path)?,
            (None, Some(t)) if t.trim().is_empty() => return Err(ConfigError::EmptyAdminTokenEnv),
            (None, Some(t)) => AdminTokenConfig::Env(Secret::new(t.trim().to_string())),
            (None, None) => AdminTokenConfig::Unset,
        };

        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
            _ => None,
        };

        if args.verify_threads == 0 {
            return Err(ConfigError::Range {
                flag: "verify-threads",
                requirement: "at least 1",
            });
        }
        if args.max_connections == 0 {
            return Err(ConfigError::Range {
                flag: "max-connections",
                requirement: "at least 1",
            });
        }
        if args.max_header_count == 0 || args.max_header_bytes < 1024 || args.max_uri_bytes < 64 {
            return Err(ConfigError::Range {
                flag: "max-header-count/--max-header-bytes/--max-uri-bytes",
                requirement: "at least 1 header, 1024 header bytes and 64 URI bytes",
            });
        }

        let timeouts = Timeouts {
            header: positive("header-timeout", args.header_timeout)?,
            body_idle: positive("body-idle-timeout", args.body_idle_timeout)?,
            upstream_connect: positive("upstream-connect-timeout", args.upstream_connect_timeout)?,
            upstream: positive("upstream-timeout", args.upstream_timeout)?,
            shutdown_grace: args.shutdown_grace.to_std(),
        };
        let hygiene = HygieneLimits {
            max_header_count: args.max_header_count,
            max_header_bytes: args.max_header_bytes,
            max_uri_bytes: args.max_uri_bytes,
            max_body_bytes: args.max_body_bytes,
            header_read_timeout_ms: args.header_timeout.as_millis(),
            body_idle_timeout_ms: args.body_idle_timeout.as_millis(),
        };

        Ok(Config {
            listen: args.listen,
            upstream: parse_upstream(&args.upstream)?,
            admin_listen: args.admin_listen,
            source,
            admission: crate::source::Admission::default(),
            events: EventsMode::Auto,
            event_series_interval: StdDuration::from_secs(30),
            pod: crate::events::kube::PodRef {
                name: "turnpike-sidecar".into(),
                uid: None,
            },
            reload_interval: positive("reload-interval", args.reload_interval)?,
            trusted_proxies: TrustedProxies::parse_list(&args.trusted_proxies)?,
            admin_token,
            tls,
            timeouts,
            hygiene,
            max_connections: args.max_connections,
            verify_threads: args.verify_threads,
            verify_queue: args.verify_queue,
            key_cache_ttl: positive("key-cache-ttl", args.key_cache_ttl)?,
            security_headers: !args.disable_security_headers,
            log_format: args.log_format,
            log_level: args.log_level,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Parses `args`; a mounted or API bundle without signature flags gets
    /// `--insecure-unsigned-bundles` (see [`parse_exact`] for the signature rules).
    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv: Vec<&str> = args.to_vec();
        let mounted = args.iter().any(|a| *a == "--bundle-dir" || *a == "api");
        let signing = args
            .iter()
            .any(|a| *a == "--bundle-trust" || *a == "--insecure-unsigned-bundles");
        if mounted && !signing {
            argv.push("--insecure-unsigned-bundles");
        }
        parse_exact(&argv)
    }

    fn parse_exact(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["turnpike-sidecar"];
        argv.extend_from_slice(args);
        let args = Args::try_parse_from(argv).map_err(|e| e.to_string())?;
        Config::from_args(args, None).map_err(|e| e.to_string())
    }

    fn trust_of(seed: u8) -> String {
        turnpike_api::signing::BundleSigner::from_seeds([[seed; 32].as_slice()])
            .unwrap()
            .public()
            .to_env()
    }

    #[test]
    fn a_mounted_bundle_needs_a_trust_list_or_the_explicit_insecure_flag() {
        let e = parse_exact(&["--bundle-dir", "/b"]).unwrap_err();
        assert!(
            e.contains("--bundle-trust") && e.contains("--insecure-unsigned-bundles"),
            "{e}"
        );
        let e = parse_exact(&[
            "--bundle-source",
            "api",
            "--target",
            "orders",
            "--namespace",
            "shop",
        ])
        .unwrap_err();
        assert!(e.contains("must be signed"), "{e}");
        let keys = format!("{},{}", trust_of(1), trust_of(2));
        let c = parse_exact(&["--bundle-dir", "/b", "--bundle-trust", &keys]).unwrap();
        assert_eq!(c.admission.trust.as_ref().map(|t| t.ids().len()), Some(2));
        assert_eq!(c.admission.expect, None);
        let c = parse_exact(&["--bundle-dir", "/b", "--insecure-unsigned-bundles"]).unwrap();
        assert_eq!(c.admission.trust, None);
        let e = parse_exact(&[
            "--bundle-dir",
            "/b",
            "--bundle-trust",
            &keys,
            "--insecure-unsigned-bundles",
        ])
        .unwrap_err();
        assert!(e.contains("choose one"), "{e}");
        let e = parse_exact(&["--bundle-dir", "/b", "--bundle-trust", "bm90LWEta2V5"]).unwrap_err();
        assert!(e.starts_with("--bundle-trust: trusted key 1"), "{e}");
        // Local mode needs neither and refuses a trust list that would do nothing.
        let c = parse_exact(&["--manifests", "/m", "--target", "orders"]).unwrap();
        assert_eq!(c.admission, crate::source::Admission::default());
        let e = parse_exact(&[
            "--manifests",
            "/m",
            "--target",
            "orders",
            "--bundle-trust",
            &keys,
        ])
        .unwrap_err();
        assert!(e.contains("local mode"), "{e}");
    }

    #[test]
    fn the_expected_target_comes_from_the_api_source_or_target_with_a_mounted_bundle() {
        let keys = trust_of(1);
        let c = parse_exact(&[
            "--bundle-dir",
            "/b",
            "--target",
            "orders",
            "--namespace",
            "shop",
            "--bundle-trust",
            &keys,
        ])
        .unwrap();
        assert_eq!(c.admission.expect, Some(("shop".into(), "orders".into())));
        assert!(matches!(c.source, Source::Dir(_)));
        let c = parse_exact(&[
            "--bundle-source",
            "api",
            "--target",
            "orders",
            "--namespace",
            "shop",
            "--bundle-trust",
            &keys,
        ])
        .unwrap();
        assert_eq!(c.admission.expect, Some(("shop".into(), "orders".into())));
        let e = parse(&[
            "--bundle-dir",
            "/b",
            "--target",
            "Bad_Name",
            "--namespace",
            "shop",
        ])
        .unwrap_err();
        assert!(e.starts_with("--target"), "{e}");
    }

    #[test]
    fn api_source_needs_a_target_and_a_namespace() {
        let c = parse(&[
            "--bundle-source",
            "api",
            "--target",
            "orders",
            "--namespace",
            "shop",
            "--bundle-dir",
            "/b",
            "--pod-name",
            "orders-1",
        ])
        .unwrap();
        assert_eq!(
            c.source,
            Source::Api {
                namespace: "shop".into(),
                target: "orders".into(),
                fallback_dir: Some("/b".into()),
            }
        );
        assert_eq!(c.pod.name, "orders-1");
        assert_eq!(c.events, EventsMode::Auto);
        let e = parse(&["--bundle-source", "api", "--namespace", "shop"]).unwrap_err();
        assert!(e.contains("--target"), "{e}");
        let e = parse(&[
            "--bundle-source",
            "api",
            "--target",
            "orders",
            "--manifests",
            "/m",
            "--namespace",
            "shop",
        ])
        .unwrap_err();
        assert!(e.contains("local mode"), "{e}");
    }

    #[test]
    fn defaults() {
        let c = parse(&["--bundle-dir", "/b"]).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9080");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9901");
        assert_eq!(c.upstream.authority.as_str(), "127.0.0.1:8080");
        assert_eq!(c.timeouts.header, StdDuration::from_secs(10));
        assert_eq!(c.timeouts.upstream_connect, StdDuration::from_secs(2));
        assert_eq!(c.timeouts.upstream, StdDuration::from_secs(30));
        assert_eq!(c.timeouts.shutdown_grace, StdDuration::from_secs(20));
        assert_eq!((c.verify_threads, c.verify_queue), (2, 64));
        assert_eq!(c.hygiene, HygieneLimits::default());
        assert!(c.security_headers && c.tls.is_none());
        assert!(matches!(c.admin_token, AdminTokenConfig::Unset));
        assert!(matches!(c.source, Source::Dir(_)));
    }

    #[test]
    fn exactly_one_source() {
        assert!(parse(&[]).unwrap_err().contains("choose one bundle source"));
        let both = parse(&["--bundle-dir", "/b", "--manifests", "/m", "--target", "t"]);
        assert!(both.unwrap_err().contains("choose one bundle source"));
        assert!(
            parse(&["--manifests", "/m"])
                .unwrap_err()
                .contains("needs --target")
        );
        assert!(
            parse(&["--bundle-dir", "/b", "--target", "t"])
                .unwrap_err()
                .contains("needs --namespace")
        );
        let c = parse(&[
            "--manifests",
            "/m",
            "--target",
            "orders",
            "--namespace",
            "shop",
        ])
        .unwrap();
        assert!(
            matches!(c.source, Source::Manifests { ref target, ref namespace, .. } if target == "orders" && namespace.as_deref() == Some("shop"))
        );
        assert!(
            parse(&["--manifests", "/m", "--target", "Bad_Name"])
                .unwrap_err()
                .contains("--target")
        );
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, want) in [
            (&["--upstream", "https://x:1"][..], "only http://"),
            (
                &["--upstream", "http://x:1/base"][..],
                "must not have a path",
            ),
            (&["--upstream", "127.0.0.1:8080"][..], "needs a scheme"),
            (
                &["--trusted-proxies", "10.0.0.0/33"][..],
                "--trusted-proxies",
            ),
            (&["--verify-threads", "0"][..], "--verify-threads"),
            (&["--header-timeout", "0s"][..], "--header-timeout"),
        ] {
            let mut all = vec!["--bundle-dir", "/b"];
            all.extend_from_slice(args);
            let err = parse(&all).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
        assert!(
            parse(&["--bundle-dir", "/b", "--tls-cert", "/c"])
                .unwrap_err()
                .contains("--tls-key")
        );
    }

    #[test]
    fn admin_token_from_file_or_env_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret-admin\n").unwrap();
        let args = Args::try_parse_from([
            "x",
            "--bundle-dir",
            "/b",
            "--insecure-unsigned-bundles",
            "--admin-token-file",
            file.to_str().unwrap(),
        ])
        .unwrap();
        let c = Config::from_args(args, Some("ignored-env".into())).unwrap();
        assert!(matches!(c.admin_token, AdminTokenConfig::File(ref p) if *p == file));
        assert!(!format!("{c:?}").contains("s3cret"));

        let args = Args::try_parse_from(["x", "--bundle-dir", "/b", "--insecure-unsigned-bundles"])
            .unwrap();
        let c = Config::from_args(args, Some("from-env".into())).unwrap();
        assert!(matches!(c.admin_token, AdminTokenConfig::Env(ref s) if s.expose() == "from-env"));
        assert!(!format!("{c:?}").contains("from-env"));
        let args = Args::try_parse_from(["x", "--bundle-dir", "/b", "--insecure-unsigned-bundles"])
            .unwrap();
        assert!(Config::from_args(args, Some(" ".into())).is_err());
    }

    #[test]
    fn admin_token_file_may_not_exist_yet_but_must_hold_a_token_when_it_does() {
        let dir = tempfile::tempdir().unwrap();
        let parse_with = |file: &Path| {
            let args = Args::try_parse_from([
                "x",
                "--bundle-dir",
                "/b",
                "--insecure-unsigned-bundles",
                "--admin-token-file",
                file.to_str().unwrap(),
            ])
            .unwrap();
            Config::from_args(args, None).map_err(|e| e.to_string())
        };
        let missing = dir.path().join("not-yet");
        assert!(matches!(
            parse_with(&missing).unwrap().admin_token,
            AdminTokenConfig::File(_)
        ));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let err = parse_with(&empty).unwrap_err();
        assert!(err.contains("the file is empty"), "{err}");
        let err = parse_with(dir.path()).unwrap_err();
        assert!(err.contains("--admin-token-file"), "{err}");
    }
}
