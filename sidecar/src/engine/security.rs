//! Security headers of a target's answers (step 14), compiled once per bundle from
//! the policy's [`SecurityHeadersConfig`] (checked and merged with the defaults by
//! `turnpike-api`'s compiler; this module only turns it into header types, so the
//! proxy adds them without parsing or allocating per answer).

use std::sync::LazyLock;

use http::header::{HeaderMap, HeaderName, HeaderValue, STRICT_TRANSPORT_SECURITY};
use turnpike_api::bundle::{HeaderSpec, SecurityHeadersConfig};

use super::bundle::CompileError;

/// The security header plan of a target.
#[derive(Clone, Debug)]
pub struct SecurityHeaders {
    remove: Box<[HeaderName]>,
    set: Box<[(HeaderName, HeaderValue)]>,
    set_if_missing: Box<[(HeaderName, HeaderValue)]>,
    hsts: Option<HeaderValue>,
}

fn header_name(field: &str, n: &str) -> Result<HeaderName, CompileError> {
    HeaderName::from_bytes(n.as_bytes()).map_err(|_| CompileError::Header {
        field: field.to_string(),
    })
}

fn pairs(
    field: &str,
    list: &[HeaderSpec],
) -> Result<Box<[(HeaderName, HeaderValue)]>, CompileError> {
    list.iter()
        .enumerate()
        .map(|(i, h)| {
            let field = format!("{field}[{i}]");
            let value = HeaderValue::from_str(&h.value).map_err(|_| CompileError::Header {
                field: field.clone(),
            })?;
            Ok((header_name(&field, &h.name)?, value))
        })
        .collect()
}

impl SecurityHeaders {
    /// Compiles a bundle's header policy.
    ///
    /// # Errors
    /// A name or value that is not a valid header (hand-made bundles only: the
    /// compiler checks both).
    pub fn compile(c: &SecurityHeadersConfig) -> Result<Self, CompileError> {
        let field = "access.securityHeaders";
        Ok(Self {
            remove: c
                .remove
                .iter()
                .enumerate()
                .map(|(i, n)| header_name(&format!("{field}.remove[{i}]"), n))
                .collect::<Result<_, _>>()?,
            set: pairs(&format!("{field}.set"), &c.set)?,
            set_if_missing: pairs(&format!("{field}.setIfMissing"), &c.set_if_missing)?,
            hsts: c
                .hsts
                .as_deref()
                .map(|v| {
                    HeaderValue::from_str(v).map_err(|_| CompileError::Header {
                        field: format!("{field}.hsts"),
                    })
                })
                .transpose()?,
        })
    }

    /// The defaults ([`SecurityHeadersConfig::owasp`]), for bundles without a header
    /// policy and for answers given before a bundle is known.
    pub fn defaults() -> &'static SecurityHeaders {
        static DEFAULTS: LazyLock<SecurityHeaders> = LazyLock::new(|| {
            // The defaults are constants of turnpike-api; a failure is a bug there,
            // caught by this module's tests. Nothing is sent rather than a panic.
            SecurityHeaders::compile(&SecurityHeadersConfig::owasp()).unwrap_or(SecurityHeaders {
                remove: Box::new([]),
                set: Box::new([]),
                set_if_missing: Box::new([]),
                hsts: None,
            })
        });
        &DEFAULTS
    }

    /// Applies the plan to an answer's headers; HSTS only when the request arrived
    /// over HTTPS.
    pub fn apply(&self, h: &mut HeaderMap, https: bool) {
        for name in &self.remove {
            h.remove(name);
        }
        for (name, value) in &self.set {
            h.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.set_if_missing {
            if !h.contains_key(name) {
                h.insert(name.clone(), value.clone());
            }
        }
        if https && let Some(v) = &self.hsts {
            h.insert(STRICT_TRANSPORT_SECURITY, v.clone());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_compile_and_apply() {
        let d = SecurityHeaders::defaults();
        assert_eq!(
            d.set_if_missing.len(),
            SecurityHeadersConfig::owasp().set_if_missing.len()
        );
        let mut h = HeaderMap::new();
        h.insert("server", HeaderValue::from_static("nginx/1.2"));
        h.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
        d.apply(&mut h, false);
        assert!(!h.contains_key("server"));
        assert_eq!(
            h["x-frame-options"], "SAMEORIGIN",
            "the workload's choice stays"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-xss-protection"], "0");
        assert!(!h.contains_key("strict-transport-security"));
        d.apply(&mut h, true);
        assert_eq!(
            h["strict-transport-security"],
            "max-age=31536000; includeSubDomains"
        );
    }

    #[test]
    fn set_replaces_the_workloads_value() {
        let c = SecurityHeadersConfig {
            remove: vec![],
            set: vec![HeaderSpec {
                name: "x-frame-options".into(),
                value: "DENY".into(),
            }],
            set_if_missing: vec![],
            hsts: None,
        };
        let mut h = HeaderMap::new();
        h.insert("x-frame-options", HeaderValue::from_static("ALLOWALL"));
        SecurityHeaders::compile(&c).unwrap().apply(&mut h, true);
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(!h.contains_key("strict-transport-security"));
    }
}
