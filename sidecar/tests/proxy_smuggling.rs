//! HTTP/1.1 request-smuggling corpus against the real binary: every vector is a request
//! the sidecar would forward (a valid key with the right scope) but for its framing;
//! each must be answered 400 with the connection closed, and none may reach the
//! workload. nginx and Envoy refuse all of these.
#![allow(clippy::unwrap_used)]

mod proxy_common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use proxy_common::*;

/// `(name, head lines after the request line, body)`: `{key}` is replaced by the token.
const CORPUS: &[(&str, &str, &str)] = &[
    (
        "two Host lines",
        "Host: a\r\nHost: b\r\nX-API-Key: {key}\r\n",
        "",
    ),
    (
        "two equal Host lines",
        "Host: a\r\nHost: a\r\nX-API-Key: {key}\r\n",
        "",
    ),
    ("no Host", "X-API-Key: {key}\r\n", ""),
    (
        "Content-Length then Transfer-Encoding",
        "Host: a\r\nX-API-Key: {key}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        "0\r\n\r\n",
    ),
    (
        "Transfer-Encoding then Content-Length",
        "Host: a\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        "0\r\n\r\n",
    ),
    (
        "two equal Content-Length lines",
        "Host: a\r\nX-API-Key: {key}\r\nContent-Length: 5\r\nContent-Length: 5\r\n",
        "hello",
    ),
    (
        "conflicting Content-Length lines",
        "Host: a\r\nX-API-Key: {key}\r\nContent-Length: 5\r\nContent-Length: 6\r\n",
        "hello!",
    ),
    (
        "Content-Length list",
        "Host: a\r\nX-API-Key: {key}\r\nContent-Length: 5, 5\r\n",
        "hello",
    ),
    (
        "signed Content-Length",
        "Host: a\r\nX-API-Key: {key}\r\nContent-Length: +5\r\n",
        "hello",
    ),
    (
        "obs-fold",
        "Host: a\r\nX-API-Key: {key}\r\nX-Folded: a\r\n b\r\n",
        "",
    ),
    (
        "bare LF in a field line",
        "Host: a\nX-API-Key: {key}\r\n",
        "",
    ),
    (
        "bare LF ending the head",
        "Host: a\r\nX-API-Key: {key}\n",
        "",
    ),
    (
        "bare CR in a field line",
        "Host: a\rX: b\r\nX-API-Key: {key}\r\n",
        "",
    ),
    (
        "hex prefix in a chunk size",
        "Host: a\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "negative chunk size",
        "Host: a\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked\r\n",
        "-1\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "space before a chunk size",
        "Host: a\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked\r\n",
        " 5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "overflowing chunk size",
        "Host: a\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked\r\n",
        "10000000000000005\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "bare LF after a chunk size",
        "Host: a\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked\r\n",
        "5\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunk longer than its size",
        "Host: a\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked\r\n",
        "5\r\nhello!\r\n0\r\n\r\n",
    ),
    (
        "Transfer-Encoding: chunked, identity",
        "Host: a\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked, identity\r\n",
        "0\r\n\r\n",
    ),
    (
        "Transfer-Encoding: gzip, chunked",
        "Host: a\r\nX-API-Key: {key}\r\nTransfer-Encoding: gzip, chunked\r\n",
        "0\r\n\r\n",
    ),
    (
        "two Transfer-Encoding lines",
        "Host: a\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "0\r\n\r\n",
    ),
    (
        "Transfer-Encoding: identity",
        "Host: a\r\nX-API-Key: {key}\r\nTransfer-Encoding: identity\r\n",
        "",
    ),
    (
        "bare LF in a trailer",
        "Host: a\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked\r\n",
        "0\r\nX-T: 1\n\r\n",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_vectors_are_refused_and_never_forwarded() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let token = creds().billing.text();

    for (name, head, body) in CORPUS {
        let req = format!(
            "POST /orders/1 HTTP/1.1\r\n{}\r\n{body}",
            head.replace("{key}", token)
        );
        let (text, closed) = raw(sidecar.addr, req.as_bytes(), Duration::from_secs(10)).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{name}: {text}");
        assert!(closed, "{name}: the connection stayed open");
        assert_eq!(
            upstream.hits.load(Ordering::SeqCst),
            0,
            "{name}: reached the workload"
        );
    }

    // A vector pipelined behind a good request: the good one is answered, the bad
    // one refused, and only the good one reaches the workload.
    let req = format!(
        "GET /orders/1 HTTP/1.1\r\nHost: a\r\nX-API-Key: {token}\r\n\r\n\
         POST /orders/1 HTTP/1.1\r\nHost: a\r\nX-API-Key: {token}\r\nContent-Length: 4\r\n\
         Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    let (text, closed) = raw(sidecar.addr, req.as_bytes(), Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("HTTP/1.1 400"), "{text}");
    assert!(closed);
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 1);

    // The same requests, framed correctly, are forwarded (the corpus would notice a
    // sidecar that forwards nothing).
    let req = format!(
        "POST /orders/1 HTTP/1.1\r\nHost: a\r\nX-API-Key: {token}\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
         POST /orders/1 HTTP/1.1\r\nHost: a\r\nX-API-Key: {token}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    );
    let (text, _) = raw(sidecar.addr, req.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_upgrade_ends_the_connection() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);

    // Refused (no key): after it the connection closes, so bytes after an Upgrade
    // request are never parsed as more requests.
    let req = "GET /orders/ws HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n\
               GET /orders/1 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
    let (text, closed) = raw(sidecar.addr, req.as_bytes(), Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
    assert!(closed);
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_http2_preface_is_closed_without_an_answer() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let (text, closed) = raw(
        sidecar.addr,
        b"INVALID CONNECTION PREFACE\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(text, "");
    assert!(closed);
}
