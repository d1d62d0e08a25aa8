//! Wires the namespace reconciler to the API: one work item per namespace, triggered by
//! any change to a Turnpike resource or to an object the operator manages there.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller,
        events::{Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use turnpike_api::types::{AccessPolicy, ApiKey, CorsPolicy, RateLimitPolicy};

use crate::{
    material::MANAGED_BY,
    reconcile::{Context, Observer, error_policy},
};

fn to_namespace<K: ResourceExt>(obj: K) -> Option<ObjectRef<Namespace>> {
    obj.namespace().map(|ns| ObjectRef::new(&ns))
}

/// Runs the controller until `shutdown` fires; in-flight reconciles finish first.
pub async fn run(
    client: Client,
    identity: String,
    observer: Arc<dyn Observer>,
    sidecar_rbac: crate::sidecar_rbac::Mode,
    signer: Arc<turnpike_api::signing::BundleSigner>,
    shutdown: CancellationToken,
) {
    let reporter = Reporter {
        controller: "turnpike-operator".into(),
        instance: Some(identity),
    };
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            Recorder::new(client.clone(), reporter),
            observer,
        )
        .with_sidecar_rbac(sidecar_rbac)
        .with_signer(signer),
    );
    let managed = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    let all = watcher::Config::default();
    Controller::new(Api::<Namespace>::all(client.clone()), all.clone())
        .watches(
            Api::<ApiKey>::all(client.clone()),
            all.clone(),
            to_namespace,
        )
        .watches(
            Api::<AccessPolicy>::all(client.clone()),
            all.clone(),
            to_namespace,
        )
        .watches(
            Api::<RateLimitPolicy>::all(client.clone()),
            all.clone(),
            to_namespace,
        )
        .watches(
            Api::<CorsPolicy>::all(client.clone()),
            all.clone(),
            to_namespace,
        )
        .watches(
            Api::<Secret>::all(client.clone()),
            managed.clone(),
            to_namespace,
        )
        .watches(Api::<ConfigMap>::all(client), managed, to_namespace)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(crate::admin_secret::reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((ns, _)) => debug!(namespace = %ns.name, "reconciled"),
                Err(e) => warn!(error = %e, "reconcile error"),
            }
        })
        .await;
}
