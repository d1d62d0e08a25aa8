//! `--webhook-cert-secret NAME`: serve a certificate that someone else issues and renews
//! (cert-manager), instead of the operator's own CA.
//!
//! The Secret, in the operator's namespace, holds `tls.crt` (the serving certificate,
//! optionally followed by intermediates), `tls.key` and `ca.crt` (the CA the API server
//! must trust), as cert-manager writes them for CA and self-signed issuers. The operator
//! only reads it: every replica serves its pair and re-reads it on the reload interval
//! (a renewal is picked up without a restart), and the leader publishes its `ca.crt` as
//! the `caBundle` of `turnpike-injector`.
//!
//! Why the operator writes `caBundle` itself rather than leave it to cert-manager's
//! cainjector: the operator already applies the whole configuration (URL or Service,
//! selectors, failure policy) with server-side apply and force, so a second writer of
//! the same field would fight it; and this way the chart works without the cainjector
//! and with any issuer that publishes `ca.crt`.
//!
//! Everything here is checked before a pair is served, with errors that name the Secret
//! and the data key to fix and never quote key material.

use std::{collections::BTreeMap, net::IpAddr, time::SystemTime};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{
    certs::{PrivateKeyPem, inspect},
    tls::{certified_key, provider},
};

/// Data key of the serving certificate (and its intermediates).
pub const TLS_CERT: &str = "tls.crt";
/// Data key of the serving key.
pub const TLS_KEY: &str = "tls.key";
/// Data key of the CA certificate(s) published as `caBundle`.
pub const CA_CERT: &str = "ca.crt";

/// Why a certificate Secret cannot be served. None of these carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExternalCertError {
    /// The Secret does not exist (yet: cert-manager may not have issued it).
    #[error(
        "the webhook certificate Secret {namespace}/{name} (--webhook-cert-secret) does not exist yet; waiting for its issuer (for example cert-manager's Certificate) to write it"
    )]
    Absent {
        /// The operator's namespace.
        namespace: String,
        /// The Secret.
        name: String,
    },
    /// Data keys are missing or empty.
    #[error(
        "the webhook certificate Secret {namespace}/{name} has no {missing} (it needs tls.crt, tls.key and ca.crt; cert-manager writes all three for CA and self-signed issuers)"
    )]
    MissingKeys {
        /// The operator's namespace.
        namespace: String,
        /// The Secret.
        name: String,
        /// The missing keys, comma-separated.
        missing: String,
    },
    /// A data key is there but unusable.
    #[error("the webhook certificate Secret {namespace}/{name}: {key} {why}")]
    Invalid {
        /// The operator's namespace.
        namespace: String,
        /// The Secret.
        name: String,
        /// The data key.
        key: &'static str,
        /// Why (never key material).
        why: String,
    },
}

/// A serving pair and its CA, read from a Secret and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalCert {
    /// `tls.crt`: the serving certificate, then any intermediates (PEM).
    pub cert: String,
    /// `tls.key`.
    pub key: PrivateKeyPem,
    /// `ca.crt`: one or more CA certificates (PEM).
    pub ca: String,
}

impl ExternalCert {
    /// The PEM bundle to publish as `caBundle`.
    pub fn ca_bundle(&self) -> String {
        let mut out = self.ca.trim_end().to_owned();
        out.push('\n');
        out
    }
}

/// The name the API server checks the serving certificate against: a DNS name, or an
/// IP address for `--webhook-url https://<ip>:<port>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequiredName {
    /// A DNS name (`<service>.<namespace>.svc`, or the URL's host).
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl RequiredName {
    /// From a URL host (brackets of IPv6 literals removed) or a DNS name.
    pub fn from_host(host: &str) -> Self {
        let h = host.trim_start_matches('[').trim_end_matches(']');
        match h.parse::<IpAddr>() {
            Ok(ip) => RequiredName::Ip(ip),
            Err(_) => RequiredName::Dns(h.to_ascii_lowercase()),
        }
    }
}

impl std::fmt::Display for RequiredName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequiredName::Dns(d) => f.write_str(d),
            RequiredName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// The DER of every `CERTIFICATE` block in `pem`; an error names what does not parse.
fn certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| format!("is not PEM: {e}"))?;
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "holds a {:?} block where only certificates belong",
                block.label
            ));
        }
        X509Certificate::from_der(&block.contents)
            .map_err(|e| format!("holds a certificate that does not parse: {e}"))?;
        out.push(block.contents);
    }
    if out.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(out)
}

/// Whether some certificate of `chain` is one of `cas` or is signed by one of them.
fn anchored(chain: &[Vec<u8>], cas: &[Vec<u8>]) -> bool {
    fn parsed(der: &[u8]) -> Option<X509Certificate<'_>> {
        X509Certificate::from_der(der).ok().map(|(_, c)| c)
    }
    chain.iter().any(|c| {
        cas.contains(c)
            || parsed(c).is_some_and(|cert| {
                cas.iter().filter_map(|ca| parsed(ca)).any(|ca| {
                    cert.issuer() == ca.subject()
                        && cert.verify_signature(Some(ca.public_key())).is_ok()
                })
            })
    })
}

/// Whether `key` is a usable private key for `cert`. The reasons are fixed texts: a
/// parser's message could quote the bytes of the key.
fn check_key(cert: &str, key: &PrivateKeyPem) -> Result<(), &'static str> {
    let der = PrivateKeyDer::from_pem_slice(key.expose().as_bytes())
        .map_err(|_| "is not a PEM private key")?;
    provider()
        .key_provider
        .load_private_key(der)
        .map_err(|_| "is not a private key the server can use (ECDSA, RSA or Ed25519)")?;
    // Loads the pair as the server will; rustls checks that the key matches.
    certified_key(cert, key)
        .map_err(|_| "does not fit tls.crt (it is the key of another certificate)")?;
    Ok(())
}

/// Reads and checks the pair and CA in `secret` (named `name` in `namespace`): all three
/// data keys present, PEM that parses, a key that matches the certificate, a serving
/// certificate valid at `now` that covers `required`, and issued by (a CA in) `ca.crt`.
pub fn load(
    namespace: &str,
    name: &str,
    secret: &Secret,
    required: &RequiredName,
    now: SystemTime,
) -> Result<ExternalCert, ExternalCertError> {
    let empty = BTreeMap::new();
    let data: &BTreeMap<String, ByteString> = secret.data.as_ref().unwrap_or(&empty);
    let missing: Vec<&str> = [TLS_CERT, TLS_KEY, CA_CERT]
        .into_iter()
        .filter(|k| data.get(*k).is_none_or(|v| v.0.is_empty()))
        .collect();
    if !missing.is_empty() {
        return Err(ExternalCertError::MissingKeys {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            missing: missing.join(", "),
        });
    }
    let invalid = |key: &'static str, why: String| ExternalCertError::Invalid {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        key,
        why,
    };
    let text = |key: &'static str| -> Result<String, ExternalCertError> {
        let bytes = data.get(key).map(|b| b.0.clone()).unwrap_or_default();
        // The error never shows the bytes: for tls.key they are the key.
        String::from_utf8(bytes).map_err(|_| invalid(key, "is not PEM text".into()))
    };
    let cert = text(TLS_CERT)?;
    let key = PrivateKeyPem::new(text(TLS_KEY)?);
    let ca = text(CA_CERT)?;

    let chain = certificates(&cert).map_err(|why| invalid(TLS_CERT, why))?;
    let cas = certificates(&ca).map_err(|why| invalid(CA_CERT, why))?;
    check_key(&cert, &key).map_err(|why| invalid(TLS_KEY, why.into()))?;
    let leaf = inspect(&cert, "serving certificate")
        .map_err(|e| invalid(TLS_CERT, format!("cannot be read: {e}")))?;
    if leaf.not_after <= unix(now) {
        return Err(invalid(
            TLS_CERT,
            "has expired; its issuer has not renewed it".into(),
        ));
    }
    let covered = match required {
        RequiredName::Dns(d) => leaf.dns.iter().any(|n| n == d),
        RequiredName::Ip(ip) => leaf.ips.contains(ip),
    };
    if !covered {
        return Err(invalid(
            TLS_CERT,
            format!(
                "does not name {required}, the name the API server calls the webhook by (add it to the Certificate's dnsNames or ipAddresses)"
            ),
        ));
    }
    if !anchored(&chain, &cas) {
        return Err(invalid(
            CA_CERT,
            "is not the CA that issued tls.crt, so the API server would not trust the webhook"
                .into(),
        ));
    }
    Ok(ExternalCert { cert, key, ca })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::webhook::certs::{ServingNames, generate};
    use k8s_openapi::api::core::v1::Secret;

    const NS: &str = "turnpike-system";
    const NAME: &str = "tp-webhook-tls";

    fn svc() -> RequiredName {
        RequiredName::Dns("turnpike-operator-webhook.turnpike-system.svc".into())
    }

    fn secret(entries: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    /// A cert-manager-like Secret: a serving pair and the CA that signed it.
    fn issued() -> (String, String, String) {
        let names = ServingNames::new("turnpike-operator-webhook", NS, None);
        let m = generate(&names, None, SystemTime::now()).unwrap();
        (m.cert, m.key.expose().to_owned(), m.ca_cert)
    }

    fn err(s: &Secret) -> String {
        load(NS, NAME, s, &svc(), SystemTime::now())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_complete_secret_loads_and_publishes_its_ca() {
        let (cert, key, ca) = issued();
        let s = secret(&[(TLS_CERT, &cert), (TLS_KEY, &key), (CA_CERT, &ca)]);
        let loaded = load(NS, NAME, &s, &svc(), SystemTime::now()).unwrap();
        assert_eq!(loaded.cert, cert);
        assert_eq!(loaded.ca_bundle(), format!("{}\n", ca.trim_end()));
        // By IP too (--webhook-url https://127.0.0.1:...).
        let ip = RequiredName::from_host("127.0.0.1");
        assert!(load(NS, NAME, &s, &ip, SystemTime::now()).is_ok());
        // A self-signed serving certificate is its own CA.
        let s = secret(&[(TLS_CERT, &ca), (TLS_KEY, &key), (CA_CERT, &ca)]);
        assert!(
            err(&s).contains("tls.key does not fit tls.crt"),
            "{}",
            err(&s)
        );
    }

    #[test]
    fn missing_keys_are_named_all_at_once() {
        let (cert, _, _) = issued();
        assert_eq!(
            err(&secret(&[(TLS_CERT, &cert), (TLS_KEY, "")])),
            "the webhook certificate Secret turnpike-system/tp-webhook-tls has no tls.key, ca.crt (it needs tls.crt, tls.key and ca.crt; cert-manager writes all three for CA and self-signed issuers)"
        );
        assert!(err(&Secret::default()).contains("has no tls.crt, tls.key, ca.crt"));
    }

    #[test]
    fn bad_pem_is_a_clear_error_without_key_material() {
        let (cert, key, ca) = issued();
        let garbage_key =
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
        let e = err(&secret(&[
            (TLS_CERT, &cert),
            (TLS_KEY, garbage_key),
            (CA_CERT, &ca),
        ]));
        assert_eq!(
            e,
            "the webhook certificate Secret turnpike-system/tp-webhook-tls: tls.key is not a private key the server can use (ECDSA, RSA or Ed25519)"
        );
        assert!(!e.contains("c2VjcmV0"), "{e}");
        let e = err(&secret(&[
            (TLS_CERT, &cert),
            (TLS_KEY, "not pem at all"),
            (CA_CERT, &ca),
        ]));
        assert!(e.ends_with("tls.key is not a PEM private key"), "{e}");
        let e = err(&Secret {
            data: Some(BTreeMap::from([
                (TLS_CERT.into(), ByteString(cert.clone().into_bytes())),
                (TLS_KEY.into(), ByteString(vec![0xff, 0xfe, 0x00, 0x41])),
                (CA_CERT.into(), ByteString(ca.clone().into_bytes())),
            ])),
            ..Default::default()
        });
        assert!(e.ends_with("tls.key is not PEM text"), "{e}");
        let e = err(&secret(&[
            (TLS_CERT, "garbage"),
            (TLS_KEY, &key),
            (CA_CERT, &ca),
        ]));
        assert!(e.contains(": tls.crt holds no PEM certificate"), "{e}");
        let e = err(&secret(&[
            (TLS_CERT, &cert),
            (TLS_KEY, &key),
            (CA_CERT, &key),
        ]));
        assert!(
            e.contains("ca.crt holds a \"PRIVATE KEY\" block where only certificates belong"),
            "{e}"
        );
        assert!(!e.contains(key.lines().nth(1).unwrap()), "{e}");
        let broken = cert.replace("MII", "MIX");
        let e = err(&secret(&[
            (TLS_CERT, &broken),
            (TLS_KEY, &key),
            (CA_CERT, &ca),
        ]));
        assert!(e.contains("tls.crt"), "{e}");
        assert!(!e.contains("BEGIN PRIVATE KEY"), "{e}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _, ca) = issued();
        let (_, other_key, _) = issued();
        let e = err(&secret(&[
            (TLS_CERT, &cert),
            (TLS_KEY, &other_key),
            (CA_CERT, &ca),
        ]));
        assert!(
            e == "the webhook certificate Secret turnpike-system/tp-webhook-tls: tls.key does not fit tls.crt (it is the key of another certificate)",
            "{e}"
        );
        assert!(!e.contains("PRIVATE KEY"), "{e}");
    }

    #[test]
    fn the_ca_must_have_issued_the_certificate_and_the_names_must_match() {
        let (cert, key, _) = issued();
        let (_, _, other_ca) = issued();
        let e = err(&secret(&[
            (TLS_CERT, &cert),
            (TLS_KEY, &key),
            (CA_CERT, &other_ca),
        ]));
        assert!(e.ends_with("ca.crt is not the CA that issued tls.crt, so the API server would not trust the webhook"), "{e}");
        let (cert, key, ca) = issued();
        let s = secret(&[(TLS_CERT, &cert), (TLS_KEY, &key), (CA_CERT, &ca)]);
        let e = load(
            NS,
            NAME,
            &s,
            &RequiredName::from_host("hooks.example.com"),
            SystemTime::now(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tls.crt does not name hooks.example.com"), "{e}");
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let (cert, key, ca) = issued();
        let s = secret(&[(TLS_CERT, &cert), (TLS_KEY, &key), (CA_CERT, &ca)]);
        let later = SystemTime::now() + crate::webhook::certs::SERVING_VALIDITY;
        let e = load(NS, NAME, &s, &svc(), later).unwrap_err().to_string();
        assert!(
            e.ends_with("tls.crt has expired; its issuer has not renewed it"),
            "{e}"
        );
    }

    #[test]
    fn errors_and_debug_never_print_the_key() {
        let (cert, key, ca) = issued();
        let s = secret(&[(TLS_CERT, &cert), (TLS_KEY, &key), (CA_CERT, &ca)]);
        let loaded = load(NS, NAME, &s, &svc(), SystemTime::now()).unwrap();
        let debug = format!("{loaded:?}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }
}
