use super::*;
use crate::duration::Duration;
use crate::types::HeaderField;

fn field(name: &str, value: &str) -> HeaderField {
    HeaderField {
        name: name.into(),
        value: value.into(),
    }
}

fn names(list: &[HeaderSpec]) -> Vec<&str> {
    list.iter().map(|h| h.name.as_str()).collect()
}

#[test]
fn no_policy_means_the_sidecar_defaults() {
    assert_eq!(compile(None).unwrap(), None);
    let d = SecurityHeadersConfig::owasp();
    assert!(names(&d.set_if_missing).contains(&"x-content-type-options"));
    assert!(names(&d.set_if_missing).contains(&"content-security-policy"));
    assert!(!names(&d.set_if_missing).contains(&"cross-origin-resource-policy"));
    let xss = d
        .set_if_missing
        .iter()
        .find(|h| h.name == "x-xss-protection");
    assert_eq!(xss.unwrap().value, "0");
    assert_eq!(d.remove, ["server", "x-powered-by"]);
    assert_eq!(
        d.hsts.as_deref(),
        Some("max-age=31536000; includeSubDomains")
    );
}

#[test]
fn an_empty_policy_is_the_defaults() {
    let c = compile(Some(&SecurityHeaders::default())).unwrap().unwrap();
    assert_eq!(c, SecurityHeadersConfig::owasp());
}

#[test]
fn named_headers_replace_their_defaults() {
    let s = SecurityHeaders {
        set: vec![field("X-XSS-Protection", "1; mode=block")],
        set_if_missing: vec![field("Cross-Origin-Resource-Policy", "same-site")],
        remove: vec!["X-Frame-Options".into(), "X-Served-By".into()],
        hsts: Some(Hsts {
            max_age: Duration::from_secs(600),
            include_sub_domains: false,
            preload: false,
        }),
        ..SecurityHeaders::default()
    };
    let c = compile(Some(&s)).unwrap().unwrap();
    assert_eq!(names(&c.set), ["x-xss-protection"]);
    assert_eq!(c.set[0].value, "1; mode=block");
    let missing = names(&c.set_if_missing);
    assert!(!missing.contains(&"x-xss-protection"));
    assert!(!missing.contains(&"x-frame-options"));
    assert!(missing.contains(&"cross-origin-resource-policy"));
    assert!(missing.contains(&"x-content-type-options"));
    assert_eq!(
        c.remove,
        ["server", "x-powered-by", "x-frame-options", "x-served-by"]
    );
    assert_eq!(c.hsts.as_deref(), Some("max-age=600"));
}

#[test]
fn without_defaults_only_the_policy_applies() {
    let s = SecurityHeaders {
        defaults: false,
        set: vec![field("X-Frame-Options", "SAMEORIGIN")],
        ..SecurityHeaders::default()
    };
    let c = compile(Some(&s)).unwrap().unwrap();
    assert_eq!(names(&c.set), ["x-frame-options"]);
    assert!(c.set_if_missing.is_empty() && c.remove.is_empty() && c.hsts.is_none());
}

#[test]
fn removing_hsts_sends_none() {
    let s = SecurityHeaders {
        remove: vec!["Strict-Transport-Security".into()],
        ..SecurityHeaders::default()
    };
    let c = compile(Some(&s)).unwrap().unwrap();
    assert_eq!(c.hsts, None);
    assert!(c.remove.contains(&"strict-transport-security".to_string()));
}

#[test]
fn refuses_what_cannot_be_set() {
    let bad = |s: SecurityHeaders, needle: &str| {
        let e = compile(Some(&s)).unwrap_err();
        assert!(e.contains(needle), "{e}");
    };
    for name in [
        "Connection",
        "transfer-encoding",
        "X-Turnpike-Key-Id",
        "X-RateLimit-Limit",
        "Access-Control-Allow-Origin",
        "Retry-After",
        "WWW-Authenticate",
        "Content-Length",
    ] {
        bad(
            SecurityHeaders {
                set: vec![field(name, "x")],
                ..SecurityHeaders::default()
            },
            "cannot be changed",
        );
        bad(
            SecurityHeaders {
                remove: vec![name.into()],
                ..SecurityHeaders::default()
            },
            "cannot be changed",
        );
    }
    bad(
        SecurityHeaders {
            set: vec![field("Strict-Transport-Security", "max-age=1")],
            ..SecurityHeaders::default()
        },
        "hsts",
    );
    bad(
        SecurityHeaders {
            set: vec![field("Bad Name", "x")],
            ..SecurityHeaders::default()
        },
        "not a valid header name",
    );
    for v in ["", " lead", "trail ", "a\r\nInjected: 1", "caf\u{e9}"] {
        bad(
            SecurityHeaders {
                set: vec![field("X-A", v)],
                ..SecurityHeaders::default()
            },
            "visible ASCII",
        );
    }
    bad(
        SecurityHeaders {
            set: vec![field("X-A", "1")],
            remove: vec!["x-a".into()],
            ..SecurityHeaders::default()
        },
        "more than once",
    );
    bad(
        SecurityHeaders {
            hsts: Some(Hsts {
                max_age: Duration::from_secs(3600),
                include_sub_domains: true,
                preload: true,
            }),
            ..SecurityHeaders::default()
        },
        "preload",
    );
}

/// The CEL rule of the CRD and [`is_forbidden`] refuse the same names.
#[test]
fn cel_regex_names_every_forbidden_header() {
    let re = regex::Regex::new(crate::types::FORBIDDEN_RE).unwrap();
    for n in FORBIDDEN_HEADERS {
        assert!(
            re.is_match(n) && re.is_match(&n.to_ascii_uppercase()),
            "{n}"
        );
    }
    for p in FORBIDDEN_PREFIXES {
        assert!(re.is_match(&format!("{p}x")), "{p}");
    }
    for ok in ["x-frame-options", "server", "x-powered-by", "tee", "hosts"] {
        assert!(!re.is_match(ok) && !is_forbidden(ok), "{ok}");
    }
}
