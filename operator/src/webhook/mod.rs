//! The sidecar injector: a mutating admission webhook served by every operator replica
//! over TLS, with certificates the operator makes and renews itself (no cert-manager),
//! or, with `--webhook-cert-secret`, with a certificate someone else issues and renews
//! ([`external`]: cert-manager).
//!
//! - [`inject`]: the decision and the JSON patch (pure);
//! - [`review`]: AdmissionReview in, AdmissionReview out;
//! - [`server`]: the HTTPS server (`POST /mutate-pods`);
//! - [`certs`], [`tls`], [`secret`]: CA and serving certificate, hot reload, storage;
//! - [`external`]: a serving certificate read from a Secret the operator does not write;
//! - [`registration`]: the MutatingWebhookConfiguration `turnpike-injector`.
//!
//! With `--webhook-cert-secret` the duties below stay the same, except that nobody in
//! the operator writes certificates: every replica waits (not ready) until the Secret
//! holds a usable pair, serves it, re-reads it every minute; the leader publishes its
//! `ca.crt` as the `caBundle`.
//!
//! Who does what across replicas:
//! - every replica, at start: create the Secret `turnpike-webhook-certs` if absent (or
//!   repair it when nothing in it can serve), load it, serve; then re-read it every
//!   minute and swap in a changed certificate without a restart;
//! - the leader: renew ahead of expiry (at the start of its term and every 12 hours) and
//!   keep the configuration's `caBundle` (and URL or Service) current, re-applied every
//!   minute so that an edited or deleted configuration comes back.
//!
//! The leader being the one writer of the bundle and the one renewer means a new CA is
//! published by the same process, at once; the previous CA stays in the bundle until it
//! expires, so replicas that have not reloaded yet keep being trusted.

pub mod certs;
pub mod config;
pub mod external;
pub mod inject;
pub mod registration;
pub mod review;
pub mod secret;
pub mod server;
pub mod tls;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::{
    certs::{CertError, Material, PrivateKeyPem, ServingNames},
    config::InjectorConfig,
    external::{ExternalCert, ExternalCertError, RequiredName},
    registration::{Endpoint, FailurePolicy, WebhookUrl},
    review::{Admission, Namespaces},
    secret::Policy,
    server::{Limits, ServeError},
    tls::CertStore,
};

/// Default Service name in front of the webhook.
pub const DEFAULT_SERVICE: &str = "turnpike-operator-webhook";
/// How often every replica re-reads the certificate Secret.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(60);
/// How often the leader checks whether the certificates need renewal.
pub const RENEW_CHECK_INTERVAL: Duration = Duration::from_secs(12 * 3600);
/// How soon the leader retries a failed renewal check.
pub const RENEW_RETRY: Duration = Duration::from_secs(60);
/// How often the leader re-applies the configuration.
pub const REAPPLY_INTERVAL: Duration = Duration::from_secs(60);
/// How often a replica started with `--webhook-cert-secret` looks again for a usable
/// Secret before it serves for the first time.
pub const EXTERNAL_WAIT_RETRY: Duration = Duration::from_secs(5);

/// Webhook errors.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The server could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// Certificate generation or loading.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The `--webhook-cert-secret` Secret cannot be served.
    #[error(transparent)]
    External(#[from] ExternalCertError),
    /// Shutdown came before the webhook could serve.
    #[error("shut down before the webhook had a usable certificate")]
    Cancelled,
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// An API call got no answer in time.
    #[error("{what}: no answer from the API server in time")]
    Timeout {
        /// What was being done.
        what: &'static str,
    },
    /// Every attempt to write the certificate Secret lost a race.
    #[error(
        "Secret turnpike-webhook-certs kept changing under concurrent writers; giving up for now"
    )]
    Contended,
}

/// How the webhook is run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Address of the HTTPS server.
    pub listen: SocketAddr,
    /// `--webhook-url`; without it the configuration names the Service.
    pub url: Option<WebhookUrl>,
    /// The Service name (in `namespace`, port 443).
    pub service: String,
    /// The operator's namespace (Secret, Service, excluded from injection).
    pub namespace: String,
    /// What is injected.
    pub injector: InjectorConfig,
    /// Server deadlines and caps.
    pub limits: Limits,
    /// Where the serving certificate comes from.
    pub certs: CertSource,
    /// `failurePolicy` of the registered webhooks.
    pub failure_policy: FailurePolicy,
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// The operator's own CA, in Secret `turnpike-webhook-certs` (default).
    Own,
    /// `--webhook-cert-secret NAME`: a Secret in the operator's namespace that someone
    /// else writes (cert-manager), read only.
    Secret(String),
}

/// What a replica serves and the leader publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Served {
    /// The operator's own CA and serving certificate.
    Own(Material),
    /// A pair from `--webhook-cert-secret`.
    External(ExternalCert),
}

impl Served {
    fn cert(&self) -> &str {
        match self {
            Served::Own(m) => &m.cert,
            Served::External(e) => &e.cert,
        }
    }

    fn key(&self) -> &PrivateKeyPem {
        match self {
            Served::Own(m) => &m.key,
            Served::External(e) => &e.key,
        }
    }

    /// The PEM bundle to publish as `caBundle` at `now`.
    pub fn ca_bundle(&self, now: SystemTime) -> String {
        match self {
            Served::Own(m) => m.ca_bundle(now),
            Served::External(e) => e.ca_bundle(),
        }
    }
}

impl Settings {
    /// The names the serving certificate covers.
    pub fn names(&self) -> ServingNames {
        ServingNames::new(
            &self.service,
            &self.namespace,
            self.url.as_ref().map(WebhookUrl::host),
        )
    }

    /// The one name the API server checks the certificate against: the URL's host, or
    /// `<service>.<namespace>.svc`.
    pub fn required_name(&self) -> RequiredName {
        match &self.url {
            Some(u) => RequiredName::from_host(u.host()),
            None => RequiredName::Dns(format!("{}.{}.svc", self.service, self.namespace)),
        }
    }

    /// How the configuration reaches the server.
    pub fn endpoint(&self) -> Endpoint {
        match &self.url {
            Some(u) => Endpoint::Url(u.clone()),
            None => Endpoint::Service {
                namespace: self.namespace.clone(),
                name: self.service.clone(),
            },
        }
    }
}

struct Shared {
    client: Client,
    settings: Settings,
    names: ServingNames,
    store: Arc<CertStore>,
    material: watch::Sender<Arc<Served>>,
}

impl Shared {
    /// Serves `m` from now on and tells the leader's loop.
    fn publish(&self, m: Served) {
        match self.store.replace(m.cert(), m.key()) {
            Ok(true) => info!("webhook serving certificate reloaded"),
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "stored webhook certificate cannot be served; keeping the current one")
            }
        }
        self.material.send_if_modified(|cur| {
            if **cur == m {
                false
            } else {
                *cur = Arc::new(m);
                true
            }
        });
    }

    /// What to serve now: the own material (written when `policy` calls for it), or
    /// the external Secret as it is.
    async fn load(&self, policy: Policy) -> Result<Served, WebhookError> {
        load(&self.client, &self.settings, &self.names, policy).await
    }
}

async fn load(
    client: &Client,
    settings: &Settings,
    names: &ServingNames,
    policy: Policy,
) -> Result<Served, WebhookError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    match &settings.certs {
        CertSource::Own => secret::ensure(
            &secrets,
            &settings.namespace,
            names,
            policy,
            SystemTime::now,
        )
        .await
        .map(Served::Own),
        CertSource::Secret(name) => {
            let found = secret::timed(
                "reading the webhook certificate Secret",
                secrets.get_opt(name),
            )
            .await?;
            let Some(found) = found else {
                return Err(ExternalCertError::Absent {
                    namespace: settings.namespace.clone(),
                    name: name.clone(),
                }
                .into());
            };
            let cert = external::load(
                &settings.namespace,
                name,
                &found,
                &settings.required_name(),
                SystemTime::now(),
            )?;
            Ok(Served::External(cert))
        }
    }
}

/// The first usable certificate: own material is made at once; an external Secret is
/// waited for (cert-manager issues it after the chart is installed), with the reason
/// logged, until `shutdown`.
async fn first_load(
    client: &Client,
    settings: &Settings,
    names: &ServingNames,
    shutdown: &CancellationToken,
) -> Result<Served, WebhookError> {
    if settings.certs == CertSource::Own {
        return load(client, settings, names, Policy::Repair).await;
    }
    loop {
        match load(client, settings, names, Policy::Repair).await {
            Ok(s) => return Ok(s),
            Err(e) => warn!(error = %e, "the webhook cannot serve yet; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Err(WebhookError::Cancelled),
            () = tokio::time::sleep(EXTERNAL_WAIT_RETRY) => {}
        }
    }
}

/// The running webhook; clones share it.
#[derive(Clone)]
pub struct Webhook {
    shared: Arc<Shared>,
    tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

/// Binds the server, makes sure usable certificates exist, and starts serving and the
/// reload loop; both stop when `shutdown` fires.
pub async fn start(
    client: Client,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<Webhook, WebhookError> {
    let listener = server::bind(settings.listen).await?;
    let names = settings.names();
    let material = first_load(&client, &settings, &names, &shutdown).await?;
    if let CertSource::Secret(name) = &settings.certs {
        info!(secret = %name, "serving the webhook with the certificate from Secret {name}");
    }
    let store = CertStore::new(material.cert(), material.key())?;
    let tls = tls::server_config(Arc::clone(&store))?;
    let admission = Arc::new(Admission::new(
        settings.injector.clone(),
        Namespaces::Api(client.clone()),
    ));
    let (material_tx, _) = watch::channel(Arc::new(material));
    let limits = settings.limits;
    let shared = Arc::new(Shared {
        client,
        settings,
        names,
        store,
        material: material_tx,
    });
    let server = tokio::spawn(server::serve_on(
        listener,
        tls,
        admission,
        limits,
        shutdown.clone(),
    ));
    let reload = tokio::spawn(reload_loop(Arc::clone(&shared), shutdown));
    Ok(Webhook {
        shared,
        tasks: Arc::new(std::sync::Mutex::new(vec![server, reload])),
    })
}

async fn reload_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RELOAD_INTERVAL) => {}
        }
        match shared.load(Policy::Repair).await {
            Ok(m) => shared.publish(m),
            Err(e) => {
                warn!(error = %e, "re-reading the webhook certificates failed; serving the current ones")
            }
        }
    }
}

impl Webhook {
    /// The leader's duties until `stop` fires: renew the certificates when due and keep
    /// the MutatingWebhookConfiguration current.
    pub async fn lead(self, stop: CancellationToken) {
        let shared = self.shared;
        let mut changes = shared.material.subscribe();
        let mut next_renew_check = Instant::now();
        let mut next_apply = Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(next_renew_check) => {
                    // With an external Secret this is one more read: its issuer renews.
                    next_renew_check = match shared.load(Policy::Renew).await {
                        Ok(m) => {
                            shared.publish(m);
                            Instant::now() + RENEW_CHECK_INTERVAL
                        }
                        Err(e) => {
                            warn!(error = %e, "webhook certificate renewal check failed; retrying");
                            Instant::now() + RENEW_RETRY
                        }
                    };
                    // Publish the result (maybe a new CA) now, not at the next tick.
                    next_apply = Instant::now();
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    next_apply = Instant::now();
                }
                () = tokio::time::sleep_until(next_apply) => {
                    let material = Arc::clone(&changes.borrow_and_update());
                    let cfg = registration::configuration(
                        &shared.settings.endpoint(),
                        &shared.settings.namespace,
                        &material.ca_bundle(SystemTime::now()),
                        shared.settings.failure_policy,
                    );
                    match registration::apply(&shared.client, &cfg).await {
                        Ok(()) => {}
                        Err(e) => warn!(error = %e, "registering the webhook failed; retrying"),
                    }
                    next_apply = Instant::now() + REAPPLY_INTERVAL;
                }
            }
        }
    }

    /// Waits for the server and the reload loop to stop (after `shutdown` fired).
    pub async fn join(self) {
        let tasks = std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for t in tasks {
            if let Err(e) = t.await {
                warn!(error = %e, "webhook task failed");
            }
        }
    }
}
