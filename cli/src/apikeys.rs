//! The API calls the commands make, each mapped to an [`Error`] that names the call:
//! ApiKeys, their token delivery Secret `<name>-token`, and Events regarding them.

use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions},
};
use subtle::ConstantTimeEq;
use turnpike_api::{token::Token, types::ApiKey};

use crate::error::{Error, Kind, Op, from_kube, is_object_not_found};

/// Name of the Secret the operator delivers a generated token in (DESIGN.md).
pub fn token_secret_name(api_key: &str) -> String {
    format!("{api_key}-token")
}

/// Annotation that asks the operator for a rotation when set to a new value.
pub const ROTATE_ANNOTATION: &str = "turnpike.dev/rotate";

/// Field manager of the plugin's writes.
pub const FIELD_MANAGER: &str = "kubectl-turnpike";

/// A token read from the delivery Secret. `Debug` shows only the key id.
#[derive(Debug)]
pub struct Delivered {
    /// The token.
    pub token: Token,
    /// Secret name.
    pub secret: String,
    uid: Option<String>,
    resource_version: Option<String>,
}

impl Delivered {
    /// Whether both hold the same token (constant time: these are secrets).
    pub fn same_token(&self, other: &Delivered) -> bool {
        self.token
            .expose_token()
            .as_bytes()
            .ct_eq(other.token.expose_token().as_bytes())
            .into()
    }
}

/// ApiKeys of one namespace and what belongs to them.
pub struct ApiKeys {
    namespace: String,
    keys: Api<ApiKey>,
    secrets: Api<Secret>,
    events: Api<Event>,
}

impl ApiKeys {
    /// The ApiKeys of `namespace`.
    pub fn new(client: &Client, namespace: &str) -> ApiKeys {
        ApiKeys {
            namespace: namespace.to_owned(),
            keys: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client.clone(), namespace),
            events: Api::namespaced(client.clone(), namespace),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn op(&self, verb: &'static str, kind: Kind, name: &str) -> Op {
        Op::object(verb, kind, &self.namespace, name)
    }

    /// Reads an ApiKey.
    ///
    /// # Errors
    /// [`Error::NotFound`] and the other API errors.
    pub async fn get(&self, name: &str) -> Result<ApiKey, Error> {
        self.keys
            .get(name)
            .await
            .map_err(|e| from_kube(&self.op("get", Kind::ApiKey, name), e))
    }

    /// Creates an ApiKey.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::Rejected`] and the other API errors.
    pub async fn create(&self, key: &ApiKey) -> Result<ApiKey, Error> {
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        self.keys
            .create(&pp, key)
            .await
            .map_err(|e| from_kube(&self.op("create", Kind::ApiKey, &key.name_any()), e))
    }

    /// Applies a JSON merge patch to an ApiKey.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Rejected`] and the other API errors.
    pub async fn merge_patch(
        &self,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<ApiKey, Error> {
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.keys
            .patch(name, &pp, &Patch::Merge(patch))
            .await
            .map_err(|e| from_kube(&self.op("patch", Kind::ApiKey, name), e))
    }

    /// Deletes an ApiKey, but only the object with `uid` (never a namesake created
    /// meanwhile). Already gone is fine.
    ///
    /// # Errors
    /// API errors other than 404.
    pub async fn delete(&self, name: &str, uid: Option<&str>) -> Result<(), Error> {
        let dp = DeleteParams {
            preconditions: uid.map(|uid| Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.keys.delete(name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if is_object_not_found(&e) => Ok(()),
            Err(e) => Err(from_kube(&self.op("delete", Kind::ApiKey, name), e)),
        }
    }

    /// Reads the token from Secret `<api_key>-token`; `None` when there is no such
    /// Secret.
    ///
    /// # Errors
    /// API errors, and [`Error::State`] when the Secret does not hold a well-formed
    /// token (the message never quotes its content).
    pub async fn token(&self, api_key: &str) -> Result<Option<Delivered>, Error> {
        let name = token_secret_name(api_key);
        let secret = match self.secrets.get(&name).await {
            Ok(secret) => secret,
            Err(e) if is_object_not_found(&e) => return Ok(None),
            Err(e) => return Err(from_kube(&self.op("get", Kind::Secret, &name), e)),
        };
        let bad = |why: &str| {
            Error::State(format!(
                "Secret {}/{name} {why}; it was not written by the Turnpike operator for ApiKey {api_key}",
                self.namespace
            ))
        };
        let data = secret.data.as_ref();
        let text = data
            .and_then(|d| d.get("token"))
            .ok_or_else(|| bad("has no `token` key"))?;
        let text =
            std::str::from_utf8(&text.0).map_err(|_| bad("does not hold a well-formed token"))?;
        let token = Token::parse(text.trim())
            .map_err(|_| bad("does not hold a well-formed token"))?
            .to_token();
        if let Some(id) = data.and_then(|d| d.get("keyId"))
            && id.0 != token.id().as_bytes()
        {
            return Err(bad("holds a token whose key id differs from its `keyId`"));
        }
        Ok(Some(Delivered {
            token,
            secret: name,
            uid: secret.metadata.uid.clone(),
            resource_version: secret.metadata.resource_version.clone(),
        }))
    }

    /// Deletes the delivery Secret, but only the version the token was read from: a
    /// token written meanwhile (another rotation) has not been shown to anyone.
    /// Returns false when the Secret changed and was left in place.
    ///
    /// # Errors
    /// API errors other than 404 and a failed precondition.
    pub async fn delete_token(&self, delivered: &Delivered) -> Result<bool, Error> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: delivered.uid.clone(),
                resource_version: delivered.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        match self.secrets.delete(&delivered.secret, &dp).await {
            Ok(_) => Ok(true),
            Err(e) if is_object_not_found(&e) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(from_kube(
                &self.op("delete", Kind::Secret, &delivered.secret),
                e,
            )),
        }
    }

    /// Events regarding `key`, oldest first. Uses the API server's field selector on
    /// `regarding`; if the server refuses it, filters a full list instead.
    ///
    /// # Errors
    /// API errors.
    pub async fn events(&self, key: &ApiKey) -> Result<Vec<Event>, Error> {
        let name = key.name_any();
        let op = Op::list(Kind::Event, Some(&self.namespace));
        let selected =
            ListParams::default().fields(&format!("regarding.kind=ApiKey,regarding.name={name}"));
        let items = match self.events.list(&selected).await {
            Ok(list) => list.items,
            Err(kube::Error::Api(s)) if s.code == 400 => {
                self.events
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| from_kube(&op, e))?
                    .items
            }
            Err(e) => return Err(from_kube(&op, e)),
        };
        let uid = key.uid();
        let mut events: Vec<Event> = items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("ApiKey")
                        && r.name.as_deref() == Some(name.as_str())
                        && r.api_version
                            .as_deref()
                            .is_none_or(|v| v.starts_with("turnpike.dev/"))
                        // Events of an earlier ApiKey with the same name are not its history.
                        && (r.uid.is_none() || uid.is_none() || r.uid == uid)
                })
            })
            .collect();
        events.sort_by_key(event_time);
        Ok(events)
    }
}

/// When an Event last happened: its series' last observation, else its time, else
/// the deprecated timestamps, else its creation.
pub fn event_time(e: &Event) -> Option<jiff::Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// ApiKeys of one namespace, or of all namespaces, sorted by namespace and name.
///
/// # Errors
/// API errors ([`Error::CrdsMissing`] when the CRDs are not installed).
pub async fn list(client: &Client, namespace: Option<&str>) -> Result<Vec<ApiKey>, Error> {
    let api: Api<ApiKey> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut items = api
        .list(&ListParams::default())
        .await
        .map_err(|e| from_kube(&Op::list(Kind::ApiKey, namespace), e))?
        .items;
    items.sort_by_key(|k| (k.namespace(), k.name_any()));
    Ok(items)
}
