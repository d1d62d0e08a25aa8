//! Component tests of the real binary: request hygiene (431, 413, slowloris),
//! upstream failures (502, 504), upgrades, HTTP/2 (h2c and TLS with ALPN), and
//! graceful shutdown.
#![allow(clippy::unwrap_used)]

mod proxy_common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_get_431() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &["--max-header-bytes", "4096"]);

    let big = "a".repeat(5000);
    let r = send(&sidecar.url("/healthz"), "GET", &[("x-big", &big)], "").await;
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["error"]["code"], "headers_too_large");

    // More fields than --max-header-count (100): refused by the HTTP layer.
    let mut req = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        req.push_str(&format!("x-h{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let (text, _) = raw(sidecar.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_get_413() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &["--max-body-bytes", "1000"]);
    let token = creds().billing.text();

    // Declared too large: refused before a byte of the body is read.
    let req = format!(
        "POST /orders/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {token}\r\nContent-Length: 5000\r\n\r\n"
    );
    let (text, _) = raw(sidecar.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);

    // Streamed (chunked) past the limit: cut off on the fly.
    let chunk = "x".repeat(600);
    let req = format!(
        "POST /orders/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {token}\r\nTransfer-Encoding: chunked\r\n\r\n\
         258\r\n{chunk}\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let (text, _) = raw(sidecar.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");

    // Within the limit: streamed through.
    let r = send(
        &sidecar.url("/orders/1"),
        "POST",
        &[("x-api-key", token)],
        &"y".repeat(900),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 900);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &["--header-timeout", "1s"]);
    // Headers never finished.
    let (text, closed) = raw(
        sidecar.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        Duration::from_secs(10),
    )
    .await;
    assert!(closed, "the connection was left open");
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // Nothing sent at all.
    let (_, closed) = raw(sidecar.addr, b"", Duration::from_secs(10)).await;
    assert!(closed, "a silent connection was left open");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_502() {
    let dir = bundle_dir(&Setup::default());
    let down = closed_port();
    let sidecar = Sidecar::start(&[
        "--bundle-dir",
        dir.path().to_str().unwrap(),
        "--upstream",
        &format!("http://{down}"),
    ]);
    let r = send(&sidecar.url("/healthz"), "GET", &[], "").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "bad_gateway");
    let m = sidecar.metrics().await;
    assert_eq!(
        metric(
            &m,
            "turnpike_sidecar_upstream_errors_total{kind=\"connect\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_slow_is_504() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &["--upstream-timeout", "1s"]);
    let r = get_with_key(&sidecar, "/orders/slow?ms=5000", creds().billing.text()).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"]["code"], "gateway_timeout");
    // Rate-limit headers of the allowed request are kept on the error.
    assert!(r.header("x-ratelimit-limit").is_some());
}

async fn upgrade(sidecar: &Sidecar, token: Option<&str>) -> (TcpStream, String) {
    let mut s = TcpStream::connect(sidecar.addr).await.unwrap();
    let key = token
        .map(|t| format!("X-API-Key: {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET /orders/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n{key}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    (s, String::from_utf8(head).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrades_pass_after_the_request_is_allowed() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);

    let (_, head) = upgrade(&sidecar, None).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);

    let (mut s, head) = upgrade(&sidecar, Some(creds().billing.text())).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    for msg in [&b"ping"[..], b"second message"] {
        s.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, msg);
    }
    // The tunnel holds an in-flight slot until it closes.
    let m = sidecar.metrics().await;
    assert_eq!(metric(&m, "turnpike_sidecar_in_flight_requests"), 1.0);
    drop(s);
    eventually_in_flight_zero(&sidecar).await;
}

async fn eventually_in_flight_zero(sidecar: &Sidecar) {
    for _ in 0..200 {
        if metric(
            &sidecar.metrics().await,
            "turnpike_sidecar_in_flight_requests",
        ) == 0.0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("in-flight slot never released");
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_requests_are_served() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = http::Request::get(sidecar.url("/orders//7"))
        .header("x-api-key", creds().billing.text())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["path"], "/orders/7");
    assert_eq!(
        echo["headers"]["x-turnpike-key-id"][0],
        creds().billing.id()
    );
    // HTTP/2 has no Host field; the workload gets one from the authority.
    assert_eq!(echo["headers"]["host"][0], sidecar.addr.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_alpn_h2_and_hsts() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tls_dir = tempfile::tempdir().unwrap();
    let (cert, key) = (
        tls_dir.path().join("tls.crt"),
        tls_dir.path().join("tls.key"),
    );
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let sidecar = Sidecar::with_bundle(
        dir.path(),
        &upstream,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(sidecar.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://localhost/orders/1")
        .header("x-api-key", creds().billing.text())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https");
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_drains_requests_in_flight() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let mut sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let url = sidecar.url("/orders/slow?ms=1500");
    let token = creds().billing.text().to_string();
    let slow =
        tokio::spawn(async move { send(&url, "GET", &[("x-api-key", token.as_str())], "").await });
    // Wait until the workload has the request, then ask the sidecar to stop.
    eventually(|| upstream.hits.load(Ordering::SeqCst) == 1).await;
    sidecar.terminate();
    sidecar.wait_for_output(&["shutting down"]).await;
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "the request in flight was drained");
    let status = sidecar.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    assert!(sidecar.output().contains("drained"));
    assert!(TcpStream::connect(sidecar.addr).await.is_err());
}
