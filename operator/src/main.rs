//! `turnpike-operator`: the controllers (default), and `crdgen`.
#![forbid(unsafe_code)]

use std::{io::Write, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use turnpike_api::types::ApiKey;
use turnpike_operator::{
    controller,
    http::{self, HealthState},
    leader::{DEFAULT_LEASE_NAME, Elector, HoldEnd, LeaseConfig},
    metrics::Metrics,
    webhook,
};

/// The Turnpike operator.
#[derive(Parser, Debug)]
#[command(name = "turnpike-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print every Turnpike CustomResourceDefinition as a multi-document YAML stream, or
    /// write one file per CRD into a directory (`crds/` is made this way).
    Crdgen {
        /// Write `<plural>.yaml` files into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The operator's own namespace (Lease, webhook certificate); created if missing.
    #[arg(long, env = "TURNPIKE_NAMESPACE")]
    namespace: Option<String>,
    /// Health (`/healthz`, `/readyz`) and metrics (`/metrics`) address.
    #[arg(long, env = "TURNPIKE_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    metrics_listen: SocketAddr,
    /// Identity in leader election (default: `$POD_NAME`, else host name and pid).
    #[arg(long, env = "TURNPIKE_IDENTITY")]
    identity: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, env = "TURNPIKE_LEASE_NAME", default_value = DEFAULT_LEASE_NAME)]
    lease_name: String,
    /// Lease duration in seconds: how long a standby waits for a leader that stopped
    /// renewing.
    #[arg(long, env = "TURNPIKE_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// Log format.
    #[arg(long, env = "TURNPIKE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    #[command(flatten)]
    webhook: WebhookArgs,
}

/// The sidecar injection webhook (docs/operations.md, "Sidecar injection").
#[derive(clap::Args, Debug)]
struct WebhookArgs {
    /// Address of the webhook's HTTPS server (`POST /mutate-pods`).
    #[arg(long, env = "TURNPIKE_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    webhook_listen: SocketAddr,
    /// Base URL the API server calls (scheme https, host, port; the operator appends
    /// `/mutate-pods`), instead of the Service: local control planes, development.
    #[arg(long, env = "TURNPIKE_WEBHOOK_URL", value_name = "BASE")]
    webhook_url: Option<String>,
    /// The Service in front of the webhook, in the operator's namespace, port 443.
    #[arg(long, env = "TURNPIKE_WEBHOOK_SERVICE", default_value = webhook::DEFAULT_SERVICE)]
    webhook_service: String,
    /// Run without the webhook (no server, no certificates, no registration).
    #[arg(long, env = "TURNPIKE_DISABLE_WEBHOOK")]
    disable_webhook: bool,
    /// What the API server does with an opted-in pod when no replica answers: `Fail`
    /// refuses it (it never starts unprotected; its controller retries), `Ignore`
    /// creates it without the sidecar, that is without API-key enforcement.
    #[arg(
        long,
        env = "TURNPIKE_WEBHOOK_FAILURE_POLICY",
        value_enum,
        ignore_case = true,
        default_value_t = FailurePolicyArg::Fail
    )]
    webhook_failure_policy: FailurePolicyArg,
    /// Serve the webhook with the `tls.crt`/`tls.key` of this Secret in the operator's
    /// namespace (written and renewed by cert-manager, re-read every minute) and publish
    /// its `ca.crt` as the caBundle, instead of the operator's own CA.
    #[arg(long, env = "TURNPIKE_WEBHOOK_CERT_SECRET", value_name = "NAME")]
    webhook_cert_secret: Option<String>,
    /// The sidecar image (default: this release's `ghcr.io/turnpike/turnpike-sidecar`).
    #[arg(long, env = "TURNPIKE_SIDECAR_IMAGE")]
    sidecar_image: Option<String>,
    /// Inject the sidecar as a regular container instead of a native sidecar (an init
    /// container with `restartPolicy: Always`), for clusters older than 1.29.
    #[arg(long, env = "TURNPIKE_PLAIN_SIDECAR")]
    plain_sidecar: bool,
    /// Where injected sidecars read their bundle: `api` (watch the bundle objects; a
    /// revocation arrives in about a second; the mounted volume is the fallback) or
    /// `files` (the mounted volume only, no API access for the sidecar).
    #[arg(
        long,
        env = "TURNPIKE_SIDECAR_BUNDLE_SOURCE",
        value_enum,
        default_value = "api"
    )]
    sidecar_bundle_source: SidecarBundleSourceArg,
    /// With the API source, whom the operator binds the Role `turnpike-sidecar` of each
    /// namespace with bundles to: `service-accounts` (every ServiceAccount of the
    /// namespace) or `none` (the operator keeps the Role current; bind it to your
    /// injected pods' ServiceAccounts yourself).
    #[arg(
        long,
        env = "TURNPIKE_SIDECAR_ROLE_BINDING",
        value_enum,
        default_value = "service-accounts"
    )]
    sidecar_role_binding: SidecarRoleBindingArg,
    /// The sidecar's CPU request.
    #[arg(long, env = "TURNPIKE_SIDECAR_CPU_REQUEST", default_value = "50m")]
    sidecar_cpu_request: String,
    /// The sidecar's memory request.
    #[arg(long, env = "TURNPIKE_SIDECAR_MEMORY_REQUEST", default_value = "32Mi")]
    sidecar_memory_request: String,
    /// The sidecar's CPU limit.
    #[arg(long, env = "TURNPIKE_SIDECAR_CPU_LIMIT", default_value = "500m")]
    sidecar_cpu_limit: String,
    /// The sidecar's memory limit.
    #[arg(long, env = "TURNPIKE_SIDECAR_MEMORY_LIMIT", default_value = "128Mi")]
    sidecar_memory_limit: String,
    /// The sidecar's proxy port (named `turnpike`) when the pod has no annotation
    /// `turnpike.dev/listen-port`.
    #[arg(long, env = "TURNPIKE_SIDECAR_LISTEN_PORT", default_value_t = webhook::inject::DEFAULT_LISTEN_PORT)]
    sidecar_listen_port: u16,
    /// The workload's port the sidecar forwards to when the pod has no annotation
    /// `turnpike.dev/upstream-port`.
    #[arg(long, env = "TURNPIKE_SIDECAR_UPSTREAM_PORT", default_value_t = webhook::inject::DEFAULT_UPSTREAM_PORT)]
    sidecar_upstream_port: u16,
    /// The sidecar's admin port (named `turnpike-admin`: probes, `/metrics`), the same in
    /// every injected pod.
    #[arg(long, env = "TURNPIKE_SIDECAR_ADMIN_PORT", default_value_t = webhook::inject::DEFAULT_ADMIN_PORT)]
    sidecar_admin_port: u16,
}

/// `--sidecar-bundle-source`.
#[derive(Copy, Clone, Debug, ValueEnum)]
enum SidecarBundleSourceArg {
    Api,
    Files,
}

/// `--sidecar-role-binding`.
#[derive(Copy, Clone, Debug, ValueEnum)]
enum SidecarRoleBindingArg {
    ServiceAccounts,
    None,
}

/// `--webhook-failure-policy`.
#[derive(Copy, Clone, Debug, ValueEnum)]
enum FailurePolicyArg {
    #[value(name = "Fail")]
    Fail,
    #[value(name = "Ignore")]
    Ignore,
}

/// A Secret name: a DNS subdomain (lower-case letters, digits, '-' and '.', at most
/// 253 characters, starting and ending with a letter or digit).
fn is_dns_subdomain(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !name.is_empty()
        && name.len() <= 253
        && edge(name.chars().next())
        && edge(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

impl WebhookArgs {
    /// What the operator writes of the sidecars' RBAC: sidecars get an API token, and so
    /// need their Role, only with the API source.
    fn sidecar_rbac(&self) -> turnpike_operator::sidecar_rbac::Mode {
        use turnpike_operator::sidecar_rbac::Mode;
        match (self.sidecar_bundle_source, self.sidecar_role_binding) {
            (SidecarBundleSourceArg::Files, _) => Mode::Off,
            (SidecarBundleSourceArg::Api, SidecarRoleBindingArg::None) => Mode::RoleOnly,
            (SidecarBundleSourceArg::Api, SidecarRoleBindingArg::ServiceAccounts) => {
                Mode::RoleAndBinding
            }
        }
    }

    /// The validated settings, or `None` when the webhook is disabled.
    fn settings(&self, namespace: &str) -> anyhow::Result<Option<webhook::Settings>> {
        if self.disable_webhook {
            return Ok(None);
        }
        let url = self
            .webhook_url
            .as_deref()
            .map(webhook::registration::WebhookUrl::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let mut injector = webhook::config::InjectorConfig::new(namespace);
        if let Some(image) = &self.sidecar_image {
            if image.is_empty() || image.contains(char::is_whitespace) {
                anyhow::bail!("--sidecar-image {image:?} is not an image reference");
            }
            injector.image = image.clone();
        }
        if self.plain_sidecar {
            injector.mode = webhook::config::SidecarMode::Plain;
        }
        injector.bundle_source = match self.sidecar_bundle_source {
            SidecarBundleSourceArg::Api => webhook::config::SidecarBundleSource::Api,
            SidecarBundleSourceArg::Files => webhook::config::SidecarBundleSource::Files,
        };
        injector.resources = webhook::config::SidecarResources::parse(
            &self.sidecar_cpu_request,
            &self.sidecar_memory_request,
            &self.sidecar_cpu_limit,
            &self.sidecar_memory_limit,
        )
        .map_err(anyhow::Error::msg)?;
        injector
            .set_ports(
                self.sidecar_listen_port,
                self.sidecar_upstream_port,
                self.sidecar_admin_port,
            )
            .map_err(anyhow::Error::msg)?;
        let certs = match &self.webhook_cert_secret {
            None => webhook::CertSource::Own,
            Some(name) if is_dns_subdomain(name) => webhook::CertSource::Secret(name.clone()),
            Some(name) => {
                anyhow::bail!(
                    "--webhook-cert-secret {name:?} is not a Secret name (a DNS subdomain)"
                )
            }
        };
        Ok(Some(webhook::Settings {
            listen: self.webhook_listen,
            url,
            service: self.webhook_service.clone(),
            namespace: namespace.to_owned(),
            injector,
            limits: Default::default(),
            certs,
            failure_policy: match self.webhook_failure_policy {
                FailurePolicyArg::Fail => webhook::registration::FailurePolicy::Fail,
                FailurePolicyArg::Ignore => webhook::registration::FailurePolicy::Ignore,
            },
        }))
    }
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Pretty,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crdgen { out_dir }) => crdgen(out_dir),
        None => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(run(cli.run))
        }
    }
}

fn crdgen(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let crds = turnpike_api::crd::crds();
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in &crds {
                let path = dir.join(turnpike_api::crd::file_name(crd));
                let yaml = turnpike_api::crd::to_yaml(crd).context("rendering CRD")?;
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            for crd in &crds {
                let yaml = turnpike_api::crd::to_yaml(crd).context("rendering CRD")?;
                writeln!(out, "---\n{yaml}").context("writing to stdout")?;
            }
        }
    }
    Ok(())
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

fn identity(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("POD_NAME").ok())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "turnpike-operator".into());
            format!("{host}-{}", std::process::id())
        })
}

async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    info!("shutdown requested");
    token.cancel();
}

async fn preflight(client: &Client, namespace: &str) -> anyhow::Result<()> {
    // CRDs installed?
    let keys: Api<ApiKey> = Api::all(client.clone());
    match keys.list(&ListParams::default().limit(1)).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {
            bail!(
                "the Turnpike CRDs are not installed: kubectl apply -f crds/ (or install the Helm chart)"
            )
        }
        Err(kube::Error::Api(s)) if s.code == 403 => {
            bail!("RBAC forbids listing apikeys.turnpike.dev: {}", s.message)
        }
        Err(e) => return Err(e).context("cannot reach the API server"),
    }
    // Own namespace.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces
        .get_opt(namespace)
        .await
        .context("reading own namespace")?
        .is_none()
    {
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(namespace.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => info!(namespace, "created own namespace"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e).with_context(|| format!("creating namespace {namespace}")),
        }
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logs(args.log_format);
    let namespace = args
        .namespace
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "turnpike-system".into());
    let identity = identity(args.identity);
    let mut webhook_settings = args.webhook.settings(&namespace)?;
    let sidecar_rbac = args.webhook.sidecar_rbac();
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_signal(shutdown.clone()));

    let metrics = Metrics::new();
    let health = HealthState::new();
    health.set_not_ready("connecting to the API server");
    let server = tokio::spawn(http::serve(
        args.metrics_listen,
        health.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));

    let client = Client::try_default()
        .await
        .context("no Kubernetes API server found (in-cluster config or KUBECONFIG)")?;
    preflight(&client, &namespace).await?;
    let signer = std::sync::Arc::new(
        turnpike_operator::bundle_signing::load_or_create(&client, &namespace)
            .await
            .context("loading the bundle signing key")?,
    );
    if let Some(settings) = webhook_settings.as_mut() {
        settings.injector.bundle_trust = Some(signer.public().to_env());
    }
    // Every replica serves the webhook (the Service spreads calls over them); only the
    // leader renews certificates and registers the configuration (below).
    let injector = match webhook_settings {
        Some(settings) => match webhook::start(client.clone(), settings, shutdown.clone()).await {
            Ok(w) => Some(w),
            // SIGTERM while waiting for a --webhook-cert-secret Secret: a clean exit.
            Err(webhook::WebhookError::Cancelled) => {
                info!("shut down before the webhook could serve");
                let _ = server.await;
                return Ok(());
            }
            Err(e) => return Err(e).context("starting the sidecar injection webhook"),
        },
        None => None,
    };
    health.set_ready();
    info!(%namespace, %identity, "operator started; waiting for leadership");

    let mut cfg = LeaseConfig::new(namespace.clone(), args.lease_name, identity.clone());
    cfg.lease_duration = Duration::from_secs(args.lease_seconds.max(2));
    cfg.renew_deadline = cfg.lease_duration.mul_f64(2.0 / 3.0);
    cfg.retry_period = (cfg.lease_duration / 7).max(Duration::from_millis(200));
    let elector = Elector::new(client.clone(), cfg)
        .context("leader election config")?
        .with_metrics(metrics.clone());

    let mut exit = Ok(());
    if elector
        .acquire(&shutdown)
        .await
        .context("leader election")?
    {
        info!(%identity, "leading: starting controllers");
        let stop_controller = shutdown.child_token();
        let observer: Arc<dyn turnpike_operator::reconcile::Observer> = metrics.clone();
        let ctrl = tokio::spawn(controller::run(
            client.clone(),
            identity.clone(),
            observer,
            sidecar_rbac,
            std::sync::Arc::clone(&signer),
            stop_controller.clone(),
        ));
        let registrar = injector
            .clone()
            .map(|w| tokio::spawn(w.lead(stop_controller.clone())));
        let end = elector.hold(&shutdown).await;
        stop_controller.cancel();
        if let Err(e) = ctrl.await {
            error!(error = %e, "controller task failed");
        }
        if let Some(r) = registrar
            && let Err(e) = r.await
        {
            error!(error = %e, "webhook registration task failed");
        }
        match end {
            HoldEnd::Shutdown => {
                if let Err(e) = elector.release().await {
                    warn!(error = %e, "could not release the Lease; the standby takes over when it expires");
                }
            }
            HoldEnd::Lost(why) => {
                error!(
                    ?why,
                    "leadership lost; exiting so a fresh process can stand by"
                );
                exit = Err(anyhow::anyhow!("leadership lost: {why:?}"));
            }
        }
    }
    shutdown.cancel();
    if let Some(w) = injector {
        w.join().await;
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "health server"),
        Err(e) => warn!(error = %e, "health server task"),
    }
    exit
}
