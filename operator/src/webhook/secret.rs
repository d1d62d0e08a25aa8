//! The Secret `turnpike-webhook-certs` in the operator's namespace: the one copy of the
//! CA and serving certificate that every replica serves with.
//!
//! Writes are create-if-absent (two replicas starting together: one create wins, the
//! other gets AlreadyExists and reads the winner's) and replace-with-resourceVersion
//! (two renewals at once: one wins, the other gets Conflict and reads the winner's).

use std::{collections::BTreeMap, time::Duration, time::SystemTime};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tracing::info;

use super::{
    WebhookError,
    certs::{Assessment, Material, PrivateKeyPem, ServingNames, inspect},
    tls::certified_key,
};
use crate::material::MANAGED_BY;

/// The Secret's name.
pub const SECRET_NAME: &str = "turnpike-webhook-certs";
const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const PREVIOUS_CA_CERT: &str = "ca-previous.crt";
const TLS_CERT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const API_TIMEOUT: Duration = Duration::from_secs(10);
const ATTEMPTS: usize = 5;

/// When a replica may write new certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Only when nothing usable is stored (absent, unparseable, expired): any replica at
    /// start and on reload, since nothing works until someone writes.
    Repair,
    /// Whenever the assessment says so (ahead of expiry, new names): the leader only, so
    /// that the one writer of the CA bundle is also the one that rotates the CA.
    Renew,
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> String {
    data.get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .unwrap_or_default()
}

/// The material in a Secret; missing items are empty (and so assessed as unusable).
pub fn material_of(secret: &Secret) -> Material {
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let previous = text(data, PREVIOUS_CA_CERT);
    Material {
        ca_cert: text(data, CA_CERT),
        ca_key: PrivateKeyPem::new(text(data, CA_KEY)),
        previous_ca_cert: (!previous.is_empty()).then_some(previous),
        cert: text(data, TLS_CERT),
        key: PrivateKeyPem::new(text(data, TLS_KEY)),
    }
}

fn secret_of(m: &Material, namespace: &str, resource_version: Option<String>) -> Secret {
    let mut data = BTreeMap::from([
        (
            CA_CERT.to_owned(),
            ByteString(m.ca_cert.clone().into_bytes()),
        ),
        (
            CA_KEY.to_owned(),
            ByteString(m.ca_key.expose().as_bytes().to_vec()),
        ),
        (TLS_CERT.to_owned(), ByteString(m.cert.clone().into_bytes())),
        (
            TLS_KEY.to_owned(),
            ByteString(m.key.expose().as_bytes().to_vec()),
        ),
    ]);
    if let Some(prev) = &m.previous_ca_cert {
        data.insert(
            PREVIOUS_CA_CERT.to_owned(),
            ByteString(prev.clone().into_bytes()),
        );
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            resource_version,
            labels: Some(BTreeMap::from([
                (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                (
                    "app.kubernetes.io/part-of".to_owned(),
                    "turnpike".to_owned(),
                ),
                (
                    "app.kubernetes.io/component".to_owned(),
                    "webhook".to_owned(),
                ),
            ])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Default::default()
    }
}

/// Whether the material can serve at all at `now`: the pair loads into TLS and the
/// serving certificate has not expired.
pub fn usable(m: &Material, now: SystemTime) -> bool {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    certified_key(&m.cert, &m.key).is_ok()
        && inspect(&m.cert, "serving certificate").is_ok_and(|c| c.not_after > now)
        && inspect(&m.ca_cert, "CA certificate").is_ok_and(|c| c.not_after > now)
}

/// `fut` with the API deadline, its error labelled with `what`.
pub(super) async fn timed<T>(
    what: &'static str,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, WebhookError> {
    match tokio::time::timeout(API_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(WebhookError::Api { what, source }),
        Err(_) => Err(WebhookError::Timeout { what }),
    }
}

fn is_status(e: &WebhookError, code: u16) -> bool {
    matches!(e, WebhookError::Api { source: kube::Error::Api(s), .. } if s.code == code)
}

/// Reads the Secret, writing new material when `policy` calls for it; returns what is
/// stored afterwards. `now` is read per attempt.
pub async fn ensure(
    api: &Api<Secret>,
    namespace: &str,
    names: &ServingNames,
    policy: Policy,
    now: impl Fn() -> SystemTime,
) -> Result<Material, WebhookError> {
    for _ in 0..ATTEMPTS {
        let t = now();
        let existing = timed(
            "reading Secret turnpike-webhook-certs",
            api.get_opt(SECRET_NAME),
        )
        .await?;
        let Some(secret) = existing else {
            let m = super::certs::generate(names, None, t)?;
            match timed(
                "creating Secret turnpike-webhook-certs",
                api.create(&PostParams::default(), &secret_of(&m, namespace, None)),
            )
            .await
            {
                Ok(_) => {
                    info!(
                        namespace,
                        secret = SECRET_NAME,
                        "created the webhook CA and serving certificate"
                    );
                    return Ok(m);
                }
                // Another replica created it first: use theirs.
                Err(e) if is_status(&e, 409) => continue,
                Err(e) => return Err(e),
            }
        };
        let current = material_of(&secret);
        let assessment = match policy {
            Policy::Renew => current.assess(names, t),
            Policy::Repair if usable(&current, t) => Assessment::Keep,
            Policy::Repair => match current.assess(names, t) {
                Assessment::Keep => Assessment::RenewServing("not usable for TLS".into()),
                other => other,
            },
        };
        let Some(next) = current.renewed(&assessment, names, t)? else {
            return Ok(current);
        };
        match timed(
            "updating Secret turnpike-webhook-certs",
            api.replace(
                SECRET_NAME,
                &PostParams::default(),
                &secret_of(&next, namespace, secret.metadata.resource_version.clone()),
            ),
        )
        .await
        {
            Ok(_) => {
                let (what, why) = match &assessment {
                    Assessment::RenewCa(why) => ("a new CA and serving certificate", why),
                    Assessment::RenewServing(why) => ("a new serving certificate", why),
                    Assessment::Keep => ("nothing", &String::new()),
                };
                info!(namespace, secret = SECRET_NAME, reason = %why, "wrote {what}");
                return Ok(next);
            }
            // Someone else wrote in between: read theirs.
            Err(e) if is_status(&e, 409) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(WebhookError::Contended)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secret_round_trip_and_usability() {
        let names = ServingNames::new("svc", "ns", None);
        let now = SystemTime::now();
        let m = super::super::certs::generate(&names, Some("PREV".into()), now).unwrap();
        let s = secret_of(&m, "ns", Some("7".into()));
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(s.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(material_of(&s), m);
        assert!(usable(&m, now));
        assert!(!usable(&m, now + super::super::certs::SERVING_VALIDITY));
        let empty = material_of(&Secret::default());
        assert!(!usable(&empty, now));
        assert_eq!(empty.previous_ca_cert, None);
    }
}
