//! `AccessPolicy.spec.securityHeaders` -> [`SecurityHeadersConfig`]: the defaults (OWASP
//! Secure Headers project, for APIs) merged with the policy, every name and value
//! checked. The one place these rules live: the operator, the sidecar's local mode and
//! the CLI reach it through [`crate::compiler`], and the sidecar applies
//! [`SecurityHeadersConfig::owasp`] when a bundle carries no header policy.

use std::collections::BTreeSet;

use crate::bundle::{HeaderSpec, SecurityHeadersConfig};
use crate::types::{FORBIDDEN_HEADERS, FORBIDDEN_PREFIXES, Hsts, SecurityHeaders};
use crate::validate;

/// HSTS `max-age` the preload list asks for at least, in seconds (a year).
const PRELOAD_MIN_SECS: u64 = 365 * 24 * 3600;

const STS: &str = "strict-transport-security";

impl SecurityHeadersConfig {
    /// The defaults, for APIs (OWASP Secure Headers project):
    /// - `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
    ///   `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'` (an API
    ///   answer is never a page to render or frame), `Referrer-Policy: no-referrer`,
    ///   `X-Permitted-Cross-Domain-Policies: none`, and `X-XSS-Protection: 0` (OWASP:
    ///   the browsers' XSS auditor is gone or was itself an attack vector; `1;
    ///   mode=block` is one `set` away) — each only where the workload set none;
    /// - `Server` and `X-Powered-By` removed (they tell attackers what to try);
    /// - HSTS `max-age=31536000; includeSubDomains` on HTTPS requests.
    ///
    /// `Cross-Origin-Resource-Policy` is not set: `same-origin` would stop browsers
    /// from reading cross-origin answers that CORS allows.
    pub fn owasp() -> Self {
        let h = |name: &str, value: &str| HeaderSpec {
            name: name.into(),
            value: value.into(),
        };
        Self {
            remove: vec!["server".into(), "x-powered-by".into()],
            set: Vec::new(),
            set_if_missing: vec![
                h("x-content-type-options", "nosniff"),
                h("x-frame-options", "DENY"),
                h(
                    "content-security-policy",
                    "default-src 'none'; frame-ancestors 'none'",
                ),
                h("referrer-policy", "no-referrer"),
                h("x-permitted-cross-domain-policies", "none"),
                h("x-xss-protection", "0"),
            ],
            hsts: Some(hsts_value(DEFAULT_HSTS)),
        }
    }
}

const DEFAULT_HSTS: Hsts = Hsts {
    max_age: crate::duration::Duration::from_millis(PRELOAD_MIN_SECS * 1000),
    include_sub_domains: true,
    preload: false,
};

/// True when a policy may not set or remove `name` (lower-case).
pub fn is_forbidden(name: &str) -> bool {
    FORBIDDEN_HEADERS.contains(&name) || FORBIDDEN_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn hsts_value(h: Hsts) -> String {
    let mut v = format!("max-age={}", h.max_age.as_millis() / 1000);
    if h.include_sub_domains {
        v.push_str("; includeSubDomains");
    }
    if h.preload {
        v.push_str("; preload");
    }
    v
}

fn name(field: &str, raw: &str, seen: &mut BTreeSet<String>) -> Result<String, String> {
    validate::header(raw).map_err(|e| format!("securityHeaders.{field}: {e}"))?;
    let lower = raw.to_ascii_lowercase();
    if is_forbidden(&lower) {
        return Err(format!(
            "securityHeaders.{field}: {raw} is owned by the HTTP layer or by Turnpike and cannot be changed"
        ));
    }
    if !seen.insert(lower.clone()) {
        return Err(format!(
            "securityHeaders.{field}: {raw} is named more than once (set, setIfMissing and remove together)"
        ));
    }
    Ok(lower)
}

fn value(field: &str, v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 1024
        && v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        && !v.starts_with([' ', '\t'])
        && !v.ends_with([' ', '\t']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "securityHeaders.{field}: a value must be 1-1024 visible ASCII characters, no leading or trailing space"
        ))
    }
}

/// Checks a policy's `securityHeaders` and merges it with the defaults; `None` when
/// the policy has none (the sidecar then applies [`SecurityHeadersConfig::owasp`]).
///
/// # Errors
/// A message naming the field at fault.
pub fn compile(spec: Option<&SecurityHeaders>) -> Result<Option<SecurityHeadersConfig>, String> {
    let Some(s) = spec else {
        return Ok(None);
    };
    let mut seen = BTreeSet::new();
    let mut own = SecurityHeadersConfig {
        remove: Vec::new(),
        set: Vec::new(),
        set_if_missing: Vec::new(),
        hsts: None,
    };
    for (list, out, field) in [
        (&s.set, &mut own.set, "set"),
        (&s.set_if_missing, &mut own.set_if_missing, "setIfMissing"),
    ] {
        for (i, h) in list.iter().enumerate() {
            let field = format!("{field}[{i}]");
            let n = name(&field, &h.name, &mut seen)?;
            if n == STS {
                return Err(format!(
                    "securityHeaders.{field}: Strict-Transport-Security is set with hsts, which sends it only over HTTPS"
                ));
            }
            value(&field, &h.value)?;
            out.push(HeaderSpec {
                name: n,
                value: h.value.clone(),
            });
        }
    }
    for (i, r) in s.remove.iter().enumerate() {
        let n = name(&format!("remove[{i}]"), r, &mut seen)?;
        own.remove.push(n);
    }
    if let Some(h) = s.hsts {
        if seen.contains(STS) {
            return Err(
                "securityHeaders: hsts and Strict-Transport-Security in remove contradict each other"
                    .into(),
            );
        }
        if h.preload && !(h.include_sub_domains && h.max_age.as_millis() / 1000 >= PRELOAD_MIN_SECS)
        {
            return Err(
                "securityHeaders.hsts.preload needs includeSubDomains and a maxAge of at least 8760h"
                    .into(),
            );
        }
        own.hsts = Some(hsts_value(h));
    }

    let mut out = if s.defaults {
        SecurityHeadersConfig::owasp()
    } else {
        SecurityHeadersConfig {
            remove: Vec::new(),
            set: Vec::new(),
            set_if_missing: Vec::new(),
            hsts: None,
        }
    };
    // A header the policy names replaces its default.
    out.remove.retain(|n| !seen.contains(n));
    out.set.retain(|h| !seen.contains(&h.name));
    out.set_if_missing.retain(|h| !seen.contains(&h.name));
    if seen.contains(STS) {
        out.hsts = None;
    }
    out.remove.extend(own.remove);
    out.set.extend(own.set);
    out.set_if_missing.extend(own.set_if_missing);
    if own.hsts.is_some() {
        out.hsts = own.hsts;
    }
    Ok(Some(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
