//! What injected sidecars may do through the API (`--bundle-source api`): one Role and
//! one RoleBinding [`NAME`] per namespace that holds bundles, written by the operator.
//!
//! The Role grants exactly what the sidecar calls:
//! - `get`, `list`, `watch` on Secrets and ConfigMaps by `resourceNames`: every target's
//!   bundle objects in the namespace (`turnpike-<target>`, and every possible key shard
//!   `turnpike-<target>.keys-<n>`, n = 1 to `MAX_KEY_SHARDS - 1`, as the injector
//!   projects them: a shard can appear before the Role would otherwise have caught up).
//!   RBAC authorises `list` and `watch` by name only for requests that carry the field
//!   selector `metadata.name=<name>`, which is what the sidecar's watch sends;
//! - `create` and `patch` on events.k8s.io Events (its aggregated audit Events; the names
//!   are made by the sidecar, so they cannot be listed in advance).
//!
//! Nothing else: no other Secret, no list of all Secrets, no pods, no core Events.
//!
//! Subjects ([`Mode::RoleAndBinding`], the default): the group
//! `system:serviceaccounts:<namespace>`, every ServiceAccount of the namespace. The injector gives the sidecar a token of its pod's ServiceAccount, which
//! the operator does not know when it writes bundles (and pods come and go with other
//! ServiceAccounts); binding the group keeps that working without the operator watching
//! pods. The trade-off, stated in docs/operations.md ("Sidecar RBAC"): any pod of the
//! namespace that mounts its token can read the namespace's bundle objects (key hashes,
//! never tokens, and the compiled policy) and write Events there. With
//! [`Mode::RoleOnly`] (`--sidecar-role-binding none`) the operator keeps the Role's names
//! current and the platform team binds it to exactly the injected pods'
//! ServiceAccounts.
//!
//! Lifecycle: written (server-side apply) whenever it differs from what the namespace's
//! targets need, before the bundles themselves, so a new target's sidecar is authorised
//! by the time its objects exist; deleted when the namespace holds no bundle any more,
//! or when the operator runs with `--sidecar-bundle-source files` (sidecars without a
//! token need no Role). Both carry the operator's `managed-by` label and
//! [`RBAC_LABEL`]; a Role of that name without the label (someone else's) is never
//! deleted. Drift (a hand edit, a deleted Role) is repaired at the next reconcile.

use std::collections::BTreeSet;

use k8s_openapi::{
    api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use turnpike_api::bundle::{MAX_KEY_SHARDS, object_name, shard_object_name};

use crate::{
    material::MANAGED_BY,
    reconcile::{Error, FIELD_MANAGER},
};

/// What the operator manages for the sidecars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing (sidecars get no API token: `--sidecar-bundle-source files`); ones written
    /// earlier are removed.
    Off,
    /// The Role only (`--sidecar-role-binding none`): the platform team binds it to the
    /// injected pods' ServiceAccounts itself; a RoleBinding written earlier is removed.
    RoleOnly,
    /// The Role and its RoleBinding to every ServiceAccount of the namespace (the
    /// default).
    RoleAndBinding,
}

/// Name of the Role and the RoleBinding in each namespace.
pub const NAME: &str = "turnpike-sidecar";
/// Label marking them (with [`MANAGED_BY`]), to find or clean them up.
pub const RBAC_LABEL: &str = "turnpike.dev/sidecar-rbac";

/// The group of every ServiceAccount of `ns`.
pub fn group(ns: &str) -> String {
    format!("system:serviceaccounts:{ns}")
}

fn meta(ns: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(NAME.to_owned()),
        namespace: Some(ns.to_owned()),
        labels: Some(
            [
                (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                (RBAC_LABEL.to_owned(), "true".to_owned()),
            ]
            .into(),
        ),
        ..ObjectMeta::default()
    }
}

fn rule(group: &str, resource: &str, names: Option<Vec<String>>, verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(vec![resource.to_owned()]),
        resource_names: names,
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        non_resource_urls: None,
    }
}

/// The Secret names the sidecars of `targets` read: each primary, then its possible
/// shards.
pub fn secret_names(targets: &BTreeSet<String>) -> Vec<String> {
    targets
        .iter()
        .flat_map(|t| {
            std::iter::once(object_name(t))
                .chain((1..MAX_KEY_SHARDS).map(|n| shard_object_name(t, n)))
        })
        .collect()
}

/// The Role for the sidecars of `targets` (not empty) in `ns`.
pub fn role(ns: &str, targets: &BTreeSet<String>) -> Role {
    let read = ["get", "list", "watch"];
    Role {
        metadata: meta(ns),
        rules: Some(vec![
            rule("", "secrets", Some(secret_names(targets)), &read),
            rule(
                "",
                "configmaps",
                Some(targets.iter().map(|t| object_name(t)).collect()),
                &read,
            ),
            rule("events.k8s.io", "events", None, &["create", "patch"]),
        ]),
    }
}

/// The RoleBinding of [`role`] to every ServiceAccount of `ns`.
pub fn role_binding(ns: &str) -> RoleBinding {
    RoleBinding {
        metadata: meta(ns),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: NAME.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Group".into(),
            name: group(ns),
            namespace: None,
        }]),
    }
}

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing needed and nothing there.
    NotNeeded,
    /// Role and RoleBinding already as needed.
    Current,
    /// Role and/or RoleBinding written (or, with [`Mode::RoleOnly`], our binding
    /// deleted).
    Written,
    /// Role and RoleBinding deleted.
    Removed,
}

fn kube_err(action: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { action, source }
}

fn ours(meta: &ObjectMeta) -> bool {
    let labels = meta.labels.as_ref();
    labels.and_then(|l| l.get(MANAGED_BY.0)).map(String::as_str) == Some(MANAGED_BY.1)
        && labels.and_then(|l| l.get(RBAC_LABEL)).map(String::as_str) == Some("true")
}

/// Makes the Role and RoleBinding of `ns` what `mode` and the sidecars of `targets`
/// need: reads both (one `get` each), writes only what differs; with no target (or
/// [`Mode::Off`]), deletes ours.
///
/// # Errors
/// A failed API call, named.
pub async fn ensure(
    client: &Client,
    ns: &str,
    targets: &BTreeSet<String>,
    mode: Mode,
) -> Result<Outcome, Error> {
    let roles: Api<Role> = Api::namespaced(client.clone(), ns);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    let existing_role = roles
        .get_opt(NAME)
        .await
        .map_err(kube_err(format!("reading Role {ns}/{NAME}")))?;
    if targets.is_empty() || mode == Mode::Off {
        return remove(&roles, &bindings, ns, existing_role.as_ref()).await;
    }
    let existing_binding = bindings
        .get_opt(NAME)
        .await
        .map_err(kube_err(format!("reading RoleBinding {ns}/{NAME}")))?;
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let mut outcome = Outcome::Current;
    let want_role = role(ns, targets);
    if existing_role
        .as_ref()
        .is_none_or(|r| !ours(&r.metadata) || r.rules != want_role.rules)
    {
        roles
            .patch(NAME, &pp, &Patch::Apply(&want_role))
            .await
            .map_err(kube_err(format!("writing Role {ns}/{NAME}")))?;
        outcome = Outcome::Written;
    }
    if mode == Mode::RoleOnly {
        // The binding is the platform team's; one of ours from before goes.
        if existing_binding.as_ref().is_some_and(|b| ours(&b.metadata)) {
            delete(&bindings, ns, "RoleBinding").await?;
            outcome = Outcome::Written;
        }
        return Ok(outcome);
    }
    let want_binding = role_binding(ns);
    if existing_binding.as_ref().is_none_or(|b| {
        !ours(&b.metadata)
            || b.role_ref != want_binding.role_ref
            || b.subjects != want_binding.subjects
    }) {
        // roleRef cannot change in place: a binding of ours to another role is replaced.
        if existing_binding
            .as_ref()
            .is_some_and(|b| b.role_ref != want_binding.role_ref)
        {
            delete(&bindings, ns, "RoleBinding").await?;
        }
        bindings
            .patch(NAME, &pp, &Patch::Apply(&want_binding))
            .await
            .map_err(kube_err(format!("writing RoleBinding {ns}/{NAME}")))?;
        outcome = Outcome::Written;
    }
    Ok(outcome)
}

async fn remove(
    roles: &Api<Role>,
    bindings: &Api<RoleBinding>,
    ns: &str,
    existing_role: Option<&Role>,
) -> Result<Outcome, Error> {
    let Some(r) = existing_role else {
        return Ok(Outcome::NotNeeded);
    };
    if !ours(&r.metadata) {
        tracing::debug!(namespace = ns, role = %r.name_any(), "Role not made by the operator; left as it is");
        return Ok(Outcome::NotNeeded);
    }
    // The binding first: a binding to a missing Role grants nothing, but is clutter.
    if bindings
        .get_opt(NAME)
        .await
        .map_err(kube_err(format!("reading RoleBinding {ns}/{NAME}")))?
        .is_some_and(|b| ours(&b.metadata))
    {
        delete(bindings, ns, "RoleBinding").await?;
    }
    delete(roles, ns, "Role").await?;
    Ok(Outcome::Removed)
}

async fn delete<K>(api: &Api<K>, ns: &str, kind: &str) -> Result<(), Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(NAME, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(kube_err(format!("deleting {kind} {ns}/{NAME}"))(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_role_names_every_bundle_object_and_nothing_more() {
        let targets = BTreeSet::from(["catalog".to_owned(), "orders".to_owned()]);
        let r = role("shop", &targets);
        let rules = r.rules.unwrap();
        assert_eq!(rules.len(), 3);
        let secrets = rules[0].resource_names.as_ref().unwrap();
        assert_eq!(secrets.len(), 2 * MAX_KEY_SHARDS);
        assert_eq!(secrets[0], "turnpike-catalog");
        assert_eq!(secrets[1], "turnpike-catalog.keys-1");
        assert_eq!(
            secrets[MAX_KEY_SHARDS - 1],
            format!("turnpike-catalog.keys-{}", MAX_KEY_SHARDS - 1)
        );
        assert_eq!(secrets[MAX_KEY_SHARDS], "turnpike-orders");
        assert!(
            !secrets
                .iter()
                .any(|s| s.contains("admin") || s.contains("-key-"))
        );
        assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["secrets".to_owned()][..])
        );
        assert_eq!(
            rules[1].resource_names.as_deref(),
            Some(&["turnpike-catalog".to_owned(), "turnpike-orders".to_owned()][..])
        );
        assert_eq!(rules[1].verbs, ["get", "list", "watch"]);
        assert_eq!(
            rules[2].api_groups.as_deref(),
            Some(&["events.k8s.io".to_owned()][..])
        );
        assert_eq!(rules[2].verbs, ["create", "patch"]);
        assert!(rules[2].resource_names.is_none());
        assert!(ours(&r.metadata));

        let b = role_binding("shop");
        assert_eq!(b.role_ref.name, NAME);
        assert_eq!(b.role_ref.kind, "Role");
        let subjects = b.subjects.unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "Group");
        assert_eq!(subjects[0].name, "system:serviceaccounts:shop");
    }
}
