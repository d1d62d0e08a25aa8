//! Semantic checks the compiler applies to every resource. The CRD schema checks the same
//! things at `kubectl apply`, but the sidecar's local mode reads manifests that never
//! passed an API server, so the compiler cannot rely on the schema.

use crate::{duration::Duration, route::PathPattern, types::Bucket};

/// A DNS-1123 label (target names).
pub fn target(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "target {name:?} must be a DNS label (lower-case letters, digits and '-', at most 63 characters)"
        ))
    }
}

/// A scope such as `orders:read`.
pub fn scope(s: &str) -> Result<(), String> {
    let mut bytes = s.bytes();
    let ok = s.len() <= 128
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "scope {s:?} must start with a letter or digit and contain only letters, digits and . _ : / - (at most 128 characters)"
        ))
    }
}

/// A token bucket.
pub fn bucket(field: &str, b: &Bucket) -> Result<(), String> {
    if b.rate < 1 {
        return Err(format!("{field}.rate must be >= 1"));
    }
    if b.burst < 1 {
        return Err(format!("{field}.burst must be >= 1"));
    }
    if b.per.is_zero() {
        return Err(format!("{field}.per must be longer than 0"));
    }
    Ok(())
}

/// A duration that must be at least one second (windows, lockouts, cooldowns).
pub fn window(field: &str, d: Duration) -> Result<(), String> {
    if d.as_millis() < 1000 {
        return Err(format!("{field} must be at least 1s"));
    }
    Ok(())
}

/// A route path pattern.
pub fn path(p: &str) -> Result<(), String> {
    PathPattern::parse(p).map(|_| ()).map_err(|e| e.to_string())
}

/// An allowed CORS origin: `*`, `scheme://host[:port]`, or `scheme://*.host[:port]`.
pub fn origin(o: &str) -> Result<(), String> {
    if o == "*" {
        return Ok(());
    }
    let bad = || {
        format!(
            "origin {o:?} must be \"*\", an origin such as https://shop.example.com, or https://*.example.com"
        )
    };
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let rest = rest.strip_prefix("*.").unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || !host.split('.').all(label_ok) {
        return Err(bad());
    }
    Ok(())
}

/// An HTTP header name (RFC 9110 token).
pub fn header(h: &str) -> Result<(), String> {
    let ok = !h.is_empty()
        && h.len() <= 128
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{h:?} is not a valid header name"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::types::{ORIGIN_PATTERN, PATH_PATTERN, SCOPE_PATTERN, TARGET_PATTERN};
    use proptest::prelude::*;

    fn re(p: &str) -> regex::Regex {
        regex::Regex::new(p).unwrap()
    }

    proptest! {
        // The Rust checks and the CRD schema patterns agree, so local mode and the API
        // server accept the same manifests.
        #[test]
        fn scope_agrees_with_schema(s in "[A-Za-z0-9 ._:/@-]{0,12}") {
            prop_assert_eq!(scope(&s).is_ok(), re(SCOPE_PATTERN).is_match(&s));
        }

        #[test]
        fn target_agrees_with_schema(s in "[a-zA-Z0-9_-]{0,70}") {
            prop_assert_eq!(target(&s).is_ok(), re(TARGET_PATTERN).is_match(&s));
        }

        #[test]
        fn path_agrees_with_schema(s in "(/(\\*\\*|\\*|[a-z.]{0,3}|x\\*))*") {
            prop_assert_eq!(path(&s).is_ok(), re(PATH_PATTERN).is_match(&s) && !s.is_empty()
                && !s.split('/').any(|seg| seg == "." || seg == ".."), "{}", s);
        }

        #[test]
        fn origin_agrees_with_schema(s in "(\\*|(https?|ftp)://(\\*\\.)?[a-z0-9.-]{0,8}(:[0-9]{0,6})?)") {
            prop_assert_eq!(origin(&s).is_ok(), re(ORIGIN_PATTERN).is_match(&s), "{}", s);
        }
    }
}
