//! One AdmissionReview in, one out: parses the request with kube's admission types,
//! runs the pure decision of [`super::inject`], looks up the namespace's labels only
//! when the pod leaves the decision to its namespace, and encodes the answer.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client,
    core::{
        DynamicObject,
        admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
    },
};
use tracing::{debug, info, warn};

use super::{
    config::InjectorConfig,
    inject::{self, Refusal, Screen, Skip},
};

/// How long a namespace lookup may take (the API server gives the whole webhook call
/// `timeoutSeconds: 5`).
pub const NAMESPACE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// A request body that is not an AdmissionReview: answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
pub enum BadReview {
    /// Not JSON, or not the AdmissionReview shape.
    #[error("the body is not an admission.k8s.io/v1 AdmissionReview: {0}")]
    Json(#[source] serde_json::Error),
    /// An AdmissionReview without `request`.
    #[error("the AdmissionReview has no request")]
    NoRequest,
    /// A CREATE without `request.object`.
    #[error("the AdmissionReview request has no object")]
    NoObject,
    /// The answer could not be encoded (not expected).
    #[error("encoding the AdmissionReview response: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Where namespace labels come from.
#[derive(Clone)]
pub enum Namespaces {
    /// A live GET per lookup (fresh: a namespace labelled a moment ago counts).
    Api(Client),
    /// A fixed table (tests); an absent namespace has no labels.
    Fixed(BTreeMap<String, BTreeMap<String, String>>),
}

impl Namespaces {
    async fn labels(&self, name: &str) -> Result<BTreeMap<String, String>, String> {
        match self {
            Namespaces::Fixed(t) => Ok(t.get(name).cloned().unwrap_or_default()),
            Namespaces::Api(client) => {
                let api: Api<Namespace> = Api::all(client.clone());
                match tokio::time::timeout(NAMESPACE_LOOKUP_TIMEOUT, api.get_metadata_opt(name))
                    .await
                {
                    Ok(Ok(Some(ns))) => Ok(ns.metadata.labels.unwrap_or_default()),
                    Ok(Ok(None)) => Ok(BTreeMap::new()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "no answer from the API server within {NAMESPACE_LOOKUP_TIMEOUT:?}"
                    )),
                }
            }
        }
    }
}

/// The admission handler: configuration plus the namespace label source.
#[derive(Clone)]
pub struct Admission {
    cfg: InjectorConfig,
    namespaces: Namespaces,
}

/// What became of one review (for logs and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted unchanged.
    Skipped(Skip),
    /// Admitted with the sidecar for this target.
    Injected(String),
    /// Refused with this message.
    Refused(String),
    /// Not a pod CREATE: admitted unchanged.
    NotApplicable,
}

impl Admission {
    /// A handler injecting per `cfg`.
    pub fn new(cfg: InjectorConfig, namespaces: Namespaces) -> Self {
        Self { cfg, namespaces }
    }

    /// Answers one AdmissionReview body with the response body.
    pub async fn review(&self, body: &[u8]) -> Result<Vec<u8>, BadReview> {
        self.review_verdict(body).await.map(|(b, _)| b)
    }

    /// [`Self::review`], also returning the verdict.
    pub async fn review_verdict(&self, body: &[u8]) -> Result<(Vec<u8>, Verdict), BadReview> {
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_slice(body).map_err(BadReview::Json)?;
        let req: AdmissionRequest<DynamicObject> =
            review.try_into().map_err(|_| BadReview::NoRequest)?;
        let (response, verdict) = self.decide(&req).await?;
        let span_pod = req
            .object
            .as_ref()
            .and_then(|o| o.metadata.name.clone().or(o.metadata.generate_name.clone()))
            .unwrap_or_default();
        let ns = req.namespace.as_deref().unwrap_or_default();
        match &verdict {
            Verdict::Injected(target) => {
                info!(uid = %req.uid, namespace = ns, pod = %span_pod, %target, decision = "injected", "sidecar injected")
            }
            Verdict::Refused(reason) => {
                info!(uid = %req.uid, namespace = ns, pod = %span_pod, decision = "refused", %reason, "pod refused")
            }
            Verdict::Skipped(why) => {
                debug!(uid = %req.uid, namespace = ns, pod = %span_pod, decision = "skipped", reason = why.as_str(), "pod admitted unchanged")
            }
            Verdict::NotApplicable => {
                debug!(uid = %req.uid, operation = ?req.operation, kind = %req.kind.kind, "not a pod CREATE")
            }
        }
        Ok((encode(response)?, verdict))
    }

    async fn decide(
        &self,
        req: &AdmissionRequest<DynamicObject>,
    ) -> Result<(AdmissionResponse, Verdict), BadReview> {
        let allow = AdmissionResponse::from(req);
        if req.operation != Operation::Create
            || req.kind.kind != "Pod"
            || !req.kind.group.is_empty()
            || req.sub_resource.is_some()
        {
            return Ok((allow, Verdict::NotApplicable));
        }
        let object = req.object.as_ref().ok_or(BadReview::NoObject)?;
        let pod: Pod = match serde_json::to_value(object).and_then(serde_json::from_value) {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("the object is not a valid Pod: {e}");
                return Ok((deny(allow, &msg), Verdict::Refused(msg)));
            }
        };
        let namespace = req
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_default();

        let refuse = |allow: AdmissionResponse, r: Refusal| {
            let msg = r.to_string();
            (deny(allow, &msg), Verdict::Refused(msg))
        };
        let go = match inject::screen(&pod, &namespace, &self.cfg) {
            Err(r) => return Ok(refuse(allow, r)),
            Ok(Screen::Skip(why)) => return Ok((allow, Verdict::Skipped(why))),
            Ok(Screen::Inject) => true,
            Ok(Screen::AskNamespace) => match self.namespaces.labels(&namespace).await {
                Ok(labels) => inject::namespace_opted_in(&labels),
                Err(e) => {
                    warn!(namespace, error = %e, "cannot read the namespace's labels");
                    let msg = format!(
                        "cannot read the labels of namespace {namespace} to decide on Turnpike sidecar injection: {e}"
                    );
                    return Ok((deny(allow, &msg), Verdict::Refused(msg)));
                }
            },
        };
        if !go {
            return Ok((allow, Verdict::Skipped(Skip::NotOptedIn)));
        }
        match inject::injection(&pod, &self.cfg) {
            Err(r) => Ok(refuse(allow, r)),
            Ok(injection) => match allow.clone().with_patch(injection.patch) {
                Ok(resp) => Ok((resp, Verdict::Injected(injection.target))),
                Err(e) => {
                    let msg = format!("building the injection patch: {e}");
                    Ok((deny(allow, &msg), Verdict::Refused(msg)))
                }
            },
        }
    }
}

fn deny(allow: AdmissionResponse, message: &str) -> AdmissionResponse {
    let mut r = allow.deny(message);
    r.result.code = 400;
    r.result.reason = "BadRequest".into();
    r
}

/// Serialises the review. kube's `AdmissionResponse` keeps the patch as `Vec<u8>`, which
/// serde writes as an array of numbers; the wire format (Go `[]byte`) is a base64
/// string, so the patch is re-encoded here.
fn encode(resp: AdmissionResponse) -> Result<Vec<u8>, BadReview> {
    let mut v = serde_json::to_value(resp.into_review()).map_err(BadReview::Encode)?;
    if let Some(patch) = v.pointer_mut("/response/patch")
        && let Some(bytes) = patch.as_array()
    {
        let raw: Vec<u8> = bytes
            .iter()
            .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect();
        *patch = serde_json::Value::String(data_encoding::BASE64.encode(&raw));
    }
    serde_json::to_vec(&v).map_err(BadReview::Encode)
}
