//! The sidecars' admin token: one Secret [`ADMIN_SECRET`] per namespace, data key
//! [`ADMIN_TOKEN_KEY`], holding a random token that guards the sidecars'
//! `/internal/...` endpoints. The injector mounts it (optional) into every sidecar;
//! `kubectl turnpike usage` reads it and presents it in [`ADMIN_TOKEN_HEADER`].
//!
//! Lifecycle, decided here and documented in `docs/plugin.md`:
//! - **Created** in a namespace as soon as the operator has written a bundle there (a
//!   ConfigMap `turnpike-<target>`): a namespace without a bundle has no sidecar to
//!   guard, and the operator writes nothing into the cluster's other namespaces.
//! - **Created once, never rotated, never read back.** When the Secret exists, whoever
//!   made it, it is left as it is: the operator asks only for its metadata, so the
//!   token never passes through the operator after creation, and never reaches a log,
//!   an Event or an error. To rotate, delete the Secret: the operator creates a new one
//!   (the deletion triggers a reconcile) and the kubelet refreshes the sidecars' file.
//! - **Not deleted** when the namespace's last Turnpike resource goes. Sidecars still
//!   running there keep their token, a GitOps prune-and-reapply does not churn it, and
//!   it dies with the namespace. After uninstalling Turnpike, remove the leftovers with
//!   `kubectl delete secret -A -l turnpike.dev/admin-token=true`.
//!
//! [`reconcile`] wraps the namespace reconciler ([`crate::reconcile::reconcile`]) with
//! this step, so the controller wires one function.
//!
//! [`ADMIN_TOKEN_HEADER`]: turnpike_api::bundle::ADMIN_TOKEN_HEADER

use std::{collections::BTreeMap, fmt, sync::Arc};

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Namespace, Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, PostParams},
    runtime::controller::Action,
};
use rand::distr::{Alphanumeric, SampleString};
use tracing::{debug, info, warn};
use turnpike_api::bundle::{ADMIN_SECRET, ADMIN_TOKEN_KEY};

use crate::{
    material::{MANAGED_BY, TARGET_LABEL},
    reconcile::{Context, Error, FIELD_MANAGER},
};

/// Label marking the admin-token Secret (with [`MANAGED_BY`]), to find or clean it up.
pub const ADMIN_TOKEN_LABEL: &str = "turnpike.dev/admin-token";
/// Length of a generated token: 43 base62 characters carry 256 random bits (62^43 >
/// 2^256), as much as 32 random bytes.
pub const TOKEN_CHARS: usize = 43;

/// A freshly generated admin token. `Debug` and `Display` print `***`.
pub struct AdminToken(String);

impl AdminToken {
    /// A new token: [`TOKEN_CHARS`] characters `0-9A-Za-z` from the thread-local
    /// CSPRNG (ChaCha, seeded and reseeded from the operating system).
    pub fn generate() -> Self {
        Self(Alphanumeric.sample_string(&mut rand::rng(), TOKEN_CHARS))
    }

    /// The token; only to write it into the Secret.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

impl fmt::Display for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No bundle in the namespace: nothing to guard, nothing written.
    NotNeeded,
    /// The Secret exists; left as it is.
    Exists,
    /// The Secret was created with a new token.
    Created,
}

/// The Secret as the operator creates it.
pub fn secret(ns: &str, token: &AdminToken) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(ADMIN_SECRET.to_owned()),
            namespace: Some(ns.to_owned()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                (ADMIN_TOKEN_LABEL.to_owned(), "true".to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            ADMIN_TOKEN_KEY.to_owned(),
            ByteString(token.expose().as_bytes().to_vec()),
        )])),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

fn kube_err(action: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { action, source }
}

/// Makes sure namespace `ns` has its admin-token Secret if it has a bundle: one list
/// (at most one item, metadata only) and one metadata read per call, a create when
/// missing. Never reads the Secret's data.
///
/// # Errors
/// A failed API call (the message names the call; it never holds the token).
pub async fn ensure(client: &Client, ns: &str) -> Result<Outcome, Error> {
    let bundles = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let selector = format!("{}={},{TARGET_LABEL}", MANAGED_BY.0, MANAGED_BY.1);
    let found = bundles
        .list_metadata(&ListParams::default().labels(&selector).limit(1))
        .await
        .map_err(kube_err(format!("listing bundle ConfigMaps in {ns}")))?;
    if found.items.is_empty() {
        return Ok(Outcome::NotNeeded);
    }

    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    match secrets.get_metadata(ADMIN_SECRET).await {
        Ok(existing) => {
            if existing.labels().get(MANAGED_BY.0).map(String::as_str) != Some(MANAGED_BY.1) {
                debug!(
                    namespace = ns,
                    secret = ADMIN_SECRET,
                    "admin-token Secret not made by the operator; left as it is"
                );
            }
            return Ok(Outcome::Exists);
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            return Err(kube_err(format!(
                "reading the metadata of Secret {ns}/{ADMIN_SECRET}"
            ))(e));
        }
    }

    let token = AdminToken::generate();
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match secrets.create(&pp, &secret(ns, &token)).await {
        Ok(_) => {
            info!(
                namespace = ns,
                secret = ADMIN_SECRET,
                "created the sidecars' admin-token Secret"
            );
            Ok(Outcome::Created)
        }
        // Created meanwhile (another replica, a person): theirs stands.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Outcome::Exists),
        Err(e) => Err(kube_err(format!("creating Secret {ns}/{ADMIN_SECRET}"))(e)),
    }
}

/// The namespace reconcile ([`crate::reconcile::reconcile`]) followed by [`ensure`]:
/// after it, so the first pass that writes a bundle also creates the Secret. A failure
/// of either is returned (the reconciler's first), so the controller retries.
pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = crate::reconcile::reconcile(Arc::clone(&ns), Arc::clone(&ctx)).await;
    if ns.meta().deletion_timestamp.is_some() {
        return result;
    }
    let name = ns.name_any();
    match (result, ensure(&ctx.client, &name).await) {
        (Ok(action), Ok(_)) => Ok(action),
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => Err(e),
        (Err(e), Err(admin)) => {
            warn!(namespace = %name, error = %admin, "admin-token Secret step failed");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_base62_and_never_shown() {
        let a = AdminToken::generate();
        let b = AdminToken::generate();
        assert_eq!(a.expose().len(), TOKEN_CHARS);
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.expose(), b.expose());
        assert_eq!(format!("{a:?} {a}"), "AdminToken(***) ***");
        let s = secret("shop", &a);
        assert_eq!(s.metadata.name.as_deref(), Some("turnpike.admin"));
        assert_eq!(
            s.labels().get(MANAGED_BY.0).map(String::as_str),
            Some(MANAGED_BY.1)
        );
        let data = s.data.unwrap_or_default();
        assert_eq!(
            data.get(ADMIN_TOKEN_KEY).map(|b| b.0.as_slice()),
            Some(a.expose().as_bytes())
        );
    }
}
