//! The webhook server over real TLS on 127.0.0.1: a client trusting only the generated
//! CA posts the recorded AdmissionReviews and checks patches and refusals against the
//! same snapshots as the handler tests; malformed bodies, wrong routes, slow clients,
//! certificate hot reload and shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod webhook_support;

use std::{net::SocketAddr, sync::Arc, time::Duration, time::SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, body::Bytes};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_rustls::{TlsConnector, client::TlsStream};
use tokio_util::sync::CancellationToken;
use turnpike_operator::webhook::{
    certs::{self, Material, ServingNames},
    config::SidecarMode,
    review::Admission,
    server::{self, Limits},
    tls::{self, CertStore},
};
use webhook_support::{CASES, check, config, namespaces, outcome, review_bytes};

struct Server {
    addr: SocketAddr,
    material: Material,
    store: Arc<CertStore>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

fn names() -> ServingNames {
    ServingNames::new("turnpike-operator-webhook", "turnpike-system", None)
}

fn limits() -> Limits {
    Limits {
        drain_delay: Duration::ZERO,
        ..Limits::default()
    }
}

async fn start(mode: SidecarMode, namespace_enabled: bool, limits: Limits) -> Server {
    let material = certs::generate(&names(), None, SystemTime::now()).unwrap();
    let store = CertStore::new(&material.cert, &material.key).unwrap();
    let tls = tls::server_config(Arc::clone(&store)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admission = Arc::new(Admission::new(config(mode), namespaces(namespace_enabled)));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server::serve_on(
        listener,
        tls,
        admission,
        limits,
        shutdown.clone(),
    ));
    Server {
        addr,
        material,
        store,
        shutdown,
        task,
    }
}

fn connector(ca_pem: &str) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}

async fn tls_connect(addr: SocketAddr, ca_pem: &str, name: &str) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector(ca_pem)
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap()
}

/// One request on a fresh verified connection: (status, body).
async fn post(server: &Server, path: &str, method: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let stream = tls_connect(server.addr, &server.material.ca_cert, "127.0.0.1").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "turnpike-operator-webhook.turnpike-system.svc")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("an answer in time")
        .unwrap();
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

#[tokio::test]
async fn recorded_reviews_over_tls_match_the_snapshots() {
    for mode in [SidecarMode::Native, SidecarMode::Plain] {
        for enabled in [false, true] {
            let s = start(mode, enabled, limits()).await;
            for case in CASES
                .iter()
                .filter(|c| c.mode == mode && c.namespace_enabled == enabled)
            {
                let review = review_bytes(case.review);
                let (status, body) = post(&s, "/mutate-pods", "POST", review.clone()).await;
                assert_eq!(status, StatusCode::OK, "{}", case.name);
                check(case, &outcome(&review, &body));
            }
            s.shutdown.cancel();
            s.task.await.unwrap();
        }
    }
}

#[tokio::test]
async fn malformed_bodies_and_wrong_routes_are_http_errors() {
    let s = start(SidecarMode::Native, false, limits()).await;
    let (status, body) = post(&s, "/mutate-pods", "POST", b"{not json".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&body).contains("not an admission.k8s.io/v1 AdmissionReview"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _) = post(&s, "/mutate-pods", "POST", b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(&s, "/mutate-pods", "GET", Vec::new()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = post(&s, "/validate", "POST", b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.shutdown.cancel();
    s.task.await.unwrap();
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let limits = Limits {
        max_body_bytes: 1024,
        ..limits()
    };
    let s = start(SidecarMode::Native, false, limits).await;
    let (status, _) = post(&s, "/mutate-pods", "POST", review_bytes("orders-annotated")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    s.shutdown.cancel();
    s.task.await.unwrap();
}

/// Reads until the server closes the connection; panics if it stays open past `within`.
async fn closed_within<S: AsyncReadExt + Unpin>(stream: &mut S, within: Duration) -> Vec<u8> {
    let mut buf = Vec::new();
    tokio::time::timeout(within, async {
        let mut chunk = [0u8; 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the server kept a stalled connection open");
    buf
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let limits = Limits {
        handshake_timeout: Duration::from_millis(300),
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        ..limits()
    };
    let s = start(SidecarMode::Native, false, limits).await;

    // Headers trickling in (slowloris): cut at the header read timeout.
    let mut stream = tls_connect(s.addr, &s.material.ca_cert, "127.0.0.1").await;
    stream
        .write_all(b"POST /mutate-pods HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    stream.flush().await.unwrap();
    closed_within(&mut stream, Duration::from_secs(5)).await;

    // Headers complete, body never finishes: 408.
    let mut stream = tls_connect(s.addr, &s.material.ca_cert, "127.0.0.1").await;
    stream
        .write_all(b"POST /mutate-pods HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        .await
        .unwrap();
    stream.flush().await.unwrap();
    let answer = closed_within(&mut stream, Duration::from_secs(5)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A TCP connection that never starts TLS: cut at the handshake timeout.
    let mut raw = TcpStream::connect(s.addr).await.unwrap();
    closed_within(&mut raw, Duration::from_secs(5)).await;

    // The server still answers.
    let (status, _) = post(&s, "/mutate-pods", "POST", review_bytes("orders-annotated")).await;
    assert_eq!(status, StatusCode::OK);
    s.shutdown.cancel();
    s.task.await.unwrap();
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_restart() {
    let s = start(SidecarMode::Native, false, limits()).await;
    let first = tls_connect(s.addr, &s.material.ca_cert, "127.0.0.1").await;
    let served = |c: &TlsStream<TcpStream>| {
        c.get_ref().1.peer_certificates().unwrap()[0]
            .as_ref()
            .to_vec()
    };
    let before = served(&first);

    // Renew from the same CA: new handshakes get the new certificate, the old
    // connection is not disturbed.
    let (cert, key) = certs::issue_serving(
        &s.material.ca_cert,
        &s.material.ca_key,
        &names(),
        SystemTime::now(),
    )
    .unwrap();
    assert!(s.store.replace(&cert, &key).unwrap());
    assert!(
        !s.store.replace(&cert, &key).unwrap(),
        "unchanged: no reload"
    );
    let second = tls_connect(s.addr, &s.material.ca_cert, "127.0.0.1").await;
    let after = served(&second);
    assert_ne!(before, after);
    let expected = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    assert_eq!(after, expected.as_ref());

    // A mismatched pair is refused and the current certificate stays.
    let other = certs::generate(&names(), None, SystemTime::now()).unwrap();
    assert!(s.store.replace(&other.cert, &key).is_err());
    let third = tls_connect(s.addr, &s.material.ca_cert, "127.0.0.1").await;
    assert_eq!(served(&third), after);

    // Names: the Service DNS name verifies, a foreign name does not.
    let ok = TcpStream::connect(s.addr).await.unwrap();
    connector(&s.material.ca_cert)
        .connect(
            ServerName::try_from("turnpike-operator-webhook.turnpike-system.svc").unwrap(),
            ok,
        )
        .await
        .expect("the Service name is in the certificate");
    let bad = TcpStream::connect(s.addr).await.unwrap();
    assert!(
        connector(&s.material.ca_cert)
            .connect(ServerName::try_from("example.com").unwrap(), bad)
            .await
            .is_err()
    );
    s.shutdown.cancel();
    s.task.await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_idle_connections() {
    let s = start(SidecarMode::Native, false, limits()).await;
    let mut idle = tls_connect(s.addr, &s.material.ca_cert, "127.0.0.1").await;
    s.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), s.task)
        .await
        .expect("shutdown waited too long")
        .unwrap();
    closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(TcpStream::connect(s.addr).await.is_err(), "still listening");
}

#[tokio::test]
async fn the_server_keeps_answering_while_the_service_drains() {
    let drain = Limits {
        drain_delay: Duration::from_secs(2),
        ..limits()
    };
    let s = start(SidecarMode::Native, false, drain).await;
    s.shutdown.cancel();
    // The API server may still route a call here until it sees the endpoint go.
    let (status, _) = post(&s, "/mutate-pods", "POST", review_bytes("orders-annotated")).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(15), s.task)
        .await
        .expect("the server stops after the drain delay")
        .unwrap();
    assert!(TcpStream::connect(s.addr).await.is_err(), "still listening");
}
