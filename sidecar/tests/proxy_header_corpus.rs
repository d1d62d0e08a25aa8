//! Header-confusion corpus against the real binary (issue 16): a client holding only
//! the `reader` key (`orders:read`) tries to get `POST /orders/1` (`orders:write`)
//! through, by putting the `billing` key (read and write) where a parser might read
//! it: a second `X-API-Key`, a case or `_` spelling, a comma list, obs-fold, a space
//! before the colon, a spoofed `X-Turnpike-*` identity, or framing tricks. None of
//! them may be forwarded. Then the same spellings on an allowed GET: what reaches the
//! workload carries the sidecar's identity only, and no Turnpike token at all.
#![allow(clippy::unwrap_used)]

mod proxy_common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use proxy_common::*;

/// `(name, header lines)`: `{r}` is the reader token, `{b}` the billing token, `{bid}`
/// the billing key id.
const CORPUS: &[(&str, &str)] = &[
    ("no credential at all", ""),
    (
        "two X-API-Key lines",
        "X-API-Key: {r}\r\nX-API-Key: {b}\r\n",
    ),
    (
        "two X-API-Key lines, billing first",
        "X-API-Key: {b}\r\nX-API-Key: {r}\r\n",
    ),
    (
        "X-API-Key and another Bearer",
        "X-API-Key: {r}\r\nAuthorization: Bearer {b}\r\n",
    ),
    (
        "two Authorization lines",
        "Authorization: Bearer {r}\r\nAuthorization: Bearer {b}\r\n",
    ),
    ("a comma list in X-API-Key", "X-API-Key: {r}, {b}\r\n"),
    (
        "a comma list in Authorization",
        "Authorization: Bearer {r}, Bearer {b}\r\n",
    ),
    (
        "case spellings are one field",
        "x-api-key: {r}\r\nX-Api-Key: {b}\r\n",
    ),
    ("X_API_Key is not a credential", "X_API_Key: {b}\r\n"),
    (
        "X_API_Key beside the reader key",
        "X-API-Key: {r}\r\nX_API_Key: {b}\r\n",
    ),
    (
        "X-API_Key beside the reader key",
        "X-API-Key: {r}\r\nX-API_Key: {b}\r\n",
    ),
    ("Api-Key is not a credential", "Api-Key: {b}\r\n"),
    (
        "a token in a query-like header",
        "X-API-Key: {r}\r\nX-Api-Token: {b}\r\n",
    ),
    (
        "Bearer without the space",
        "X-API-Key: {r}\r\nAuthorization: Bearer{b}\r\n",
    ),
    (
        "Basic is not a Turnpike credential",
        "Authorization: Basic {b}\r\n",
    ),
    (
        "a space before the colon",
        "X-API-Key: {r}\r\nX-API-Key : {b}\r\n",
    ),
    ("obs-fold continues the key", "X-API-Key: {r}\r\n {b}\r\n"),
    ("obs-fold with a tab", "X-API-Key: {r}\r\n\t{b}\r\n"),
    (
        "a bare LF between fields",
        "X-API-Key: {r}\nX-API-Key: {b}\r\n",
    ),
    ("a NUL in the key", "X-API-Key: {r}\0{b}\r\n"),
    (
        "spoofed key id",
        "X-API-Key: {r}\r\nX-Turnpike-Key-Id: {bid}\r\n",
    ),
    (
        "spoofed scopes",
        "X-API-Key: {r}\r\nX-Turnpike-Scopes: orders:read orders:write\r\n",
    ),
    (
        "spoofed scopes, underscores",
        "X-API-Key: {r}\r\nX_Turnpike_Scopes: orders:write\r\n",
    ),
    (
        "Content-Length: +5",
        "X-API-Key: {r}\r\nContent-Length: +5\r\n",
    ),
    (
        "Content-Length and Transfer-Encoding",
        "X-API-Key: {r}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    ),
    (
        "two Content-Length values",
        "X-API-Key: {r}\r\nContent-Length: 5\r\nContent-Length: 0\r\n",
    ),
];

fn fill(template: &str) -> String {
    let c = creds();
    template
        .replace("{r}", c.reader.text())
        .replace("{b}", c.billing.text())
        .replace("{bid}", &c.billing.id())
}

fn status(text: &str) -> u16 {
    text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn no_header_spelling_lets_a_read_key_write() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);

    let mut outcomes = std::collections::BTreeMap::<u16, usize>::new();
    for (name, lines) in CORPUS {
        let req = format!(
            "POST /orders/1 HTTP/1.1\r\nHost: a\r\n{}Connection: close\r\n\r\n",
            fill(lines)
        );
        let (text, _) = raw(sidecar.addr, req.as_bytes(), Duration::from_secs(10)).await;
        let code = status(&text);
        assert!(
            matches!(code, 400 | 401 | 403),
            "{name}: answered {code}, not refused: {text}"
        );
        assert_eq!(
            upstream.hits.load(Ordering::SeqCst),
            0,
            "{name}: reached the workload"
        );
        let c = creds();
        assert!(
            !text.contains(c.billing.text()) && !text.contains(c.reader.text()),
            "{name}: the answer quotes a token"
        );
        *outcomes.entry(code).or_default() += 1;
    }
    eprintln!(
        "{} header vectors, outcomes by status: {outcomes:?}",
        CORPUS.len()
    );
    // The corpus is not vacuous: each kind of refusal occurs, and the billing key in
    // its proper place does write.
    for code in [400, 401, 403] {
        assert!(
            outcomes.contains_key(&code),
            "no vector got {code}: {outcomes:?}"
        );
    }
    let req = format!(
        "POST /orders/1 HTTP/1.1\r\nHost: a\r\nX-API-Key: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        creds().billing.text()
    );
    let (text, _) = raw(sidecar.addr, req.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(status(&text), 200, "{text}");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_workload_sees_only_the_sidecars_identity() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let c = creds();

    let spoofs = [
        ("X-Turnpike-Key-Id", c.billing.id()),
        ("X_Turnpike_Key_Id", c.billing.id()),
        ("x-turnpike_key-id", c.billing.id()),
        ("X_TURNPIKE_SCOPES", "orders:write".into()),
        ("X_API_Key", c.billing.text().to_string()),
        ("X-API_KEY", c.billing.text().to_string()),
        ("X_Forwarded_For", "203.0.113.9".into()),
        ("X_Real_IP", "203.0.113.9".into()),
        (
            "Proxy_Authorization",
            format!("Bearer {}", c.billing.text()),
        ),
        ("X_Request_Id", "abc-123".into()),
    ];
    let mut headers: Vec<(&str, &str)> = vec![("x-api-key", c.reader.text())];
    headers.extend(spoofs.iter().map(|(n, v)| (*n, v.as_str())));
    let resp = send(&sidecar.url("/orders/1"), "GET", &headers, "").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = resp.json()["headers"].clone();
    let seen = seen.as_object().unwrap();

    assert_eq!(resp.echoed_header("x-turnpike-key-id"), vec![c.reader.id()]);
    assert_eq!(resp.echoed_header("x-turnpike-scopes"), vec!["orders:read"]);
    assert_eq!(resp.echoed_header("x-forwarded-for"), vec!["127.0.0.1"]);
    for (name, values) in seen {
        let as_cgi = name.replace('_', "-");
        if name.contains('_') {
            assert!(
                !as_cgi.starts_with("x-turnpike-")
                    && !matches!(
                        as_cgi.as_str(),
                        "x-api-key" | "x-forwarded-for" | "x-real-ip" | "proxy-authorization"
                    ),
                "{name} reached the workload"
            );
        }
        for v in values.as_array().unwrap() {
            assert!(
                !v.as_str().unwrap().contains("tpk_"),
                "{name} carries a token"
            );
        }
    }
    // Other names with `_` pass: the filter is not "drop every underscore".
    assert_eq!(resp.echoed_header("x_request_id"), vec!["abc-123"]);
}
