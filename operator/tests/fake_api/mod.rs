//! An in-process fake API server for the operator's tests: a tower-test mock service
//! behind a real `kube::Client`, holding objects in memory and recording every request.
//! Shared by `reconcile_fake.rs` and `admin_secret.rs`; it lives in the tests, never in
//! the product.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Client,
    client::Body,
    runtime::events::{Recorder, Reporter},
};
use serde_json::{Value, json};
use turnpike_operator::reconcile::{Context, NoObserver};

/// The namespace every test works in.
pub const NS: &str = "shop";

/// The collection path of `plural` in [`NS`].
pub fn coll(group_version: &str, plural: &str) -> String {
    if group_version == "v1" {
        format!("/api/v1/namespaces/{NS}/{plural}")
    } else {
        format!("/apis/{group_version}/namespaces/{NS}/{plural}")
    }
}

/// The reconciler's context around `client`, observing nothing.
pub fn ctx(client: Client) -> Arc<Context> {
    let reporter = Reporter {
        controller: "turnpike-operator".into(),
        instance: Some("test".into()),
    };
    Arc::new(Context::new(
        client.clone(),
        Recorder::new(client, reporter),
        Arc::new(NoObserver),
    ))
}

/// Namespace [`NS`].
pub fn namespace() -> Arc<Namespace> {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(NS.into());
    Arc::new(ns)
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub accept: String,
    pub body: String,
}

#[derive(Default)]
pub struct State {
    /// (collection path, name) -> object
    pub objects: BTreeMap<(String, String), Value>,
    /// Every request, in order.
    pub requests: Vec<Seen>,
    /// (method, path) -> status code to fail with
    pub failures: BTreeMap<(Method, String), u16>,
    /// query string of every PATCH, by path (the last one)
    pub patch_queries: BTreeMap<String, String>,
    /// bodies of the Events posted
    pub event_bodies: Vec<Value>,
    next_uid: u64,
}

#[derive(Clone, Default)]
pub struct Fake(pub Arc<Mutex<State>>);

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

fn selector_matches(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let labels = &obj["metadata"]["labels"];
        match term.split_once('=') {
            Some((k, v)) => labels[k] == v,
            None => !labels[term].is_null(),
        }
    })
}

fn label_selector(query: &str) -> String {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "labelSelector")
        .map(|(_, v)| {
            v.replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/")
        })
        .unwrap_or_default()
}

impl Fake {
    /// Stores `obj` in `collection` as the API server would have created it.
    pub fn put_in(&self, collection: &str, mut obj: Value) {
        let mut s = self.0.lock().unwrap();
        s.next_uid += 1;
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        obj["metadata"]["uid"] = json!(format!("uid-{}", s.next_uid));
        obj["metadata"]["namespace"] = json!(NS);
        obj["metadata"]["generation"] = json!(1);
        obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        s.objects.insert((collection.to_string(), name), obj);
    }

    /// [`Fake::put_in`] the collection of `plural` in `gv`.
    pub fn put(&self, gv: &str, plural: &str, obj: Value) {
        self.put_in(&coll(gv, plural), obj);
    }

    pub fn object_in(&self, collection: &str, name: &str) -> Option<Value> {
        let s = self.0.lock().unwrap();
        s.objects
            .get(&(collection.to_string(), name.to_string()))
            .cloned()
    }

    pub fn object(&self, gv: &str, plural: &str, name: &str) -> Option<Value> {
        self.object_in(&coll(gv, plural), name)
    }

    /// Answers `method` on `path` with `code` until [`Fake::clear_failures`].
    pub fn fail(&self, method: Method, path: &str, code: u16) {
        let mut s = self.0.lock().unwrap();
        s.failures.insert((method, path.to_string()), code);
    }

    pub fn clear_failures(&self) {
        self.0.lock().unwrap().failures.clear();
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.0.lock().unwrap().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.0.lock().unwrap().requests.clear();
    }

    /// The writes since the last call, as `METHOD path` with the namespace prefix cut
    /// (Events left out), and forgets every request so far.
    pub fn take_writes(&self) -> Vec<String> {
        let mut s = self.0.lock().unwrap();
        let reqs = std::mem::take(&mut s.requests);
        reqs.into_iter()
            .filter(|r| r.method != Method::GET && !r.path.contains("/events"))
            .map(|r| {
                format!(
                    "{} {}",
                    r.method,
                    r.path
                        .trim_start_matches(&format!("/api/v1/namespaces/{NS}/"))
                        .trim_start_matches(&format!(
                            "/apis/turnpike.dev/v1alpha1/namespaces/{NS}/"
                        ))
                        .trim_start_matches(&format!(
                            "/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/"
                        ))
                )
            })
            .collect()
    }

    /// Paths of the Events posted (since the last [`Fake::take_writes`]).
    pub fn events(&self) -> Vec<String> {
        let s = self.0.lock().unwrap();
        s.requests
            .iter()
            .filter(|r| r.method == Method::POST && r.path.contains("/events"))
            .map(|r| r.path.clone())
            .collect()
    }

    /// What the API server would answer to `seen`.
    pub fn handle(&self, seen: Seen) -> (u16, Value) {
        let mut s = self.0.lock().unwrap();
        s.requests.push(seen.clone());
        let Seen {
            method,
            path,
            query,
            body,
            ..
        } = seen;
        if let Some(code) = s.failures.get(&(method.clone(), path.clone())) {
            return status(*code, "InternalError", "injected failure");
        }
        if path.ends_with("/events") && method == Method::POST {
            let v: Value = serde_json::from_str(&body).unwrap_or(json!({}));
            s.event_bodies.push(v.clone());
            return (201, v);
        }
        if method == Method::PATCH {
            s.patch_queries.insert(path.clone(), query.clone());
        }
        let parts: Vec<&str> = path.split('/').collect();
        // .../namespaces/NS/PLURAL[/NAME[/status]]
        let ns_at = parts.iter().position(|p| *p == "namespaces").unwrap();
        let collection = parts[..ns_at + 3].join("/");
        let name = parts.get(ns_at + 3).map(|s| s.to_string());
        let is_status = parts.get(ns_at + 4) == Some(&"status");
        let not_found = |n: &str| status(404, "NotFound", &format!("{n} not found"));
        match (method, name) {
            (Method::GET, None) => {
                let sel = label_selector(&query);
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|((c, _), o)| *c == collection && selector_matches(o, &sel))
                    .map(|(_, o)| o.clone())
                    .collect();
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            (Method::GET, Some(n)) => match s.objects.get(&(collection, n.clone())) {
                Some(o) => (200, o.clone()),
                None => not_found(&n),
            },
            (Method::POST, None) => {
                let mut obj: Value = serde_json::from_str(&body).unwrap();
                let n = obj["metadata"]["name"].as_str().unwrap().to_string();
                if s.objects.contains_key(&(collection.clone(), n.clone())) {
                    return status(409, "AlreadyExists", &format!("{n} already exists"));
                }
                s.next_uid += 1;
                obj["metadata"]["uid"] = json!(format!("uid-{}", s.next_uid));
                s.objects.insert((collection, n), obj.clone());
                (201, obj)
            }
            (Method::PATCH, Some(n)) if is_status => {
                let patch: Value = serde_json::from_str(&body).unwrap();
                match s.objects.get_mut(&(collection, n.clone())) {
                    Some(o) => {
                        o["status"] = patch["status"].clone();
                        (200, o.clone())
                    }
                    None => not_found(&n),
                }
            }
            (Method::PATCH, Some(n)) => {
                // Server-side apply: the fake stores the applied object as it is and
                // keeps the uid of an object that already exists.
                let mut obj: Value = serde_json::from_str(&body).unwrap();
                s.next_uid += 1;
                let uid = s
                    .objects
                    .get(&(collection.clone(), n.clone()))
                    .and_then(|o| o["metadata"]["uid"].as_str().map(String::from))
                    .unwrap_or_else(|| format!("uid-{}", s.next_uid));
                obj["metadata"]["uid"] = json!(uid);
                s.objects.insert((collection, n), obj.clone());
                (200, obj)
            }
            (Method::DELETE, Some(n)) => match s.objects.remove(&(collection, n.clone())) {
                Some(o) => (200, o),
                None => not_found(&n),
            },
            (m, _) => status(
                405,
                "MethodNotAllowed",
                &format!("{m} not supported by the fake"),
            ),
        }
    }

    async fn answer(&self, req: Request<Body>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let accept = req
            .headers()
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = req.into_body().collect_bytes().await.unwrap_or_default();
        let (code, value) = self.handle(Seen {
            method,
            path,
            query,
            accept,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&value).unwrap()))
            .unwrap()
    }

    /// A kube Client whose requests this fake answers, one at a time.
    pub fn client(&self) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                send.send_response(fake.answer(req).await);
            }
        });
        Client::new(service, NS)
    }

    /// A kube Client whose requests this fake answers, each on its own task after a
    /// short pause, recording the most requests ever outstanding at once in `peak`.
    pub fn overlapping_client(&self, peak: Arc<AtomicUsize>) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        let open = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now_open, Ordering::SeqCst);
                let (fake, open) = (fake.clone(), open.clone());
                tokio::spawn(async move {
                    // Gives a concurrent caller the chance to send its next request.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    let response = fake.answer(req).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                    send.send_response(response);
                });
            }
        });
        Client::new(service, NS)
    }
}
