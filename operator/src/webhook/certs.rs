//! The webhook's own CA and serving certificate: generation with rcgen, inspection of
//! stored ones, and the renewal decision, all with the clock as a parameter.
//!
//! The CA (ECDSA P-256, 10 years) signs the serving certificate (90 days, names of the
//! webhook Service and of `--webhook-url`'s host). The serving certificate is renewed
//! when it has less than 30 days left or no longer covers the names asked for; the CA
//! when it has less than a year left, keeping the old CA in the published bundle until
//! it expires, so replicas still serving a certificate of the old CA stay trusted.

use std::{
    fmt,
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use x509_parser::{extensions::GeneralName, prelude::X509Certificate};

/// Lifetime of the CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The CA is replaced when it has less than this left.
pub const CA_RENEW_BEFORE: Duration = Duration::from_secs(365 * 24 * 3600);
/// Lifetime of the serving certificate.
pub const SERVING_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// The serving certificate is replaced when it has less than this left.
pub const SERVING_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Certificates start this long before their issue time (clock skew between nodes).
const BACKDATE: Duration = Duration::from_secs(3600);
const CA_COMMON_NAME: &str = "turnpike-webhook-ca";
const SERVING_COMMON_NAME: &str = "turnpike-operator-webhook";

/// Certificate errors. None of them carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused to build a certificate.
    #[error("generating the webhook {what}: {source}")]
    Generate {
        /// "CA" or "serving certificate".
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// A stored PEM does not parse.
    #[error("the stored webhook {what} does not parse: {why}")]
    Parse {
        /// Which item.
        what: &'static str,
        /// Why (no key material).
        why: String,
    },
    /// rustls refused the key or chain.
    #[error("loading the webhook serving certificate into TLS: {0}")]
    Tls(String),
}

/// A private key in PEM form. `Debug` and `Display` print `***`, so it never reaches a
/// log line through formatting.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(String);

impl PrivateKeyPem {
    /// Wraps a PEM string.
    pub fn new(pem: String) -> Self {
        Self(pem)
    }

    /// The PEM text, for storing it in the Secret and loading it into TLS.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem(***)")
    }
}

impl fmt::Display for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The names the serving certificate must cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingNames {
    /// DNS names.
    pub dns: Vec<String>,
    /// IP addresses.
    pub ips: Vec<IpAddr>,
}

impl ServingNames {
    /// The Service names (`<service>.<ns>.svc` and `.svc.cluster.local`, plus the short
    /// forms), 127.0.0.1, and the host of `--webhook-url` if given.
    pub fn new(service: &str, namespace: &str, url_host: Option<&str>) -> Self {
        let mut dns = vec![
            service.to_owned(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
        ];
        let mut ips = vec![IpAddr::from([127, 0, 0, 1])];
        if let Some(host) = url_host {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            match host.parse::<IpAddr>() {
                Ok(ip) if !ips.contains(&ip) => ips.push(ip),
                Ok(_) => {}
                Err(_) => {
                    let host = host.to_ascii_lowercase();
                    if !dns.contains(&host) {
                        dns.push(host);
                    }
                }
            }
        }
        Self { dns, ips }
    }
}

/// The CA and serving certificate, as stored in the Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    /// The current CA certificate (PEM).
    pub ca_cert: String,
    /// The current CA key.
    pub ca_key: PrivateKeyPem,
    /// The CA replaced by the last CA rotation, published until it expires.
    pub previous_ca_cert: Option<String>,
    /// The serving certificate (PEM), signed by the current CA.
    pub cert: String,
    /// The serving key.
    pub key: PrivateKeyPem,
}

/// What the stored material needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assessment {
    /// Good as it is.
    Keep,
    /// A new serving certificate from the current CA; the reason is for the log.
    RenewServing(String),
    /// A new CA and serving certificate; the reason is for the log.
    RenewCa(String),
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn unix(t: SystemTime) -> i64 {
    to_offset(t).unix_timestamp()
}

fn gen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertError {
    move |source| CertError::Generate { what, source }
}

fn ca_params(now: SystemTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "turnpike");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = to_offset(now - BACKDATE);
    p.not_after = to_offset(now + CA_VALIDITY);
    p
}

/// A new CA, valid from `now` for [`CA_VALIDITY`]: (certificate PEM, key).
pub fn generate_ca(now: SystemTime) -> Result<(String, PrivateKeyPem), CertError> {
    let key = KeyPair::generate().map_err(gen_err("CA"))?;
    let cert = ca_params(now).self_signed(&key).map_err(gen_err("CA"))?;
    Ok((cert.pem(), PrivateKeyPem(key.serialize_pem())))
}

/// A serving certificate for `names`, signed by the CA, valid from `now` for
/// [`SERVING_VALIDITY`] but never past the CA's own expiry: (certificate PEM, key).
pub fn issue_serving(
    ca_cert: &str,
    ca_key: &PrivateKeyPem,
    names: &ServingNames,
    now: SystemTime,
) -> Result<(String, PrivateKeyPem), CertError> {
    let what = "serving certificate";
    let ca_key = KeyPair::from_pem(ca_key.expose()).map_err(|_| CertError::Parse {
        what: "CA key",
        why: "not a PEM private key rcgen can sign with".into(),
    })?;
    let ca_not_after = inspect(ca_cert, "CA certificate")?.not_after;
    let issuer = Issuer::from_ca_cert_pem(ca_cert, ca_key).map_err(gen_err(what))?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, SERVING_COMMON_NAME);
    p.distinguished_name = dn;
    p.subject_alt_names = names
        .dns
        .iter()
        .map(|d| {
            d.clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(gen_err(what))
        })
        .collect::<Result<_, _>>()?;
    p.subject_alt_names
        .extend(names.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    p.not_before = to_offset(now - BACKDATE);
    let not_after = unix(now + SERVING_VALIDITY).min(ca_not_after);
    p.not_after =
        time::OffsetDateTime::from_unix_timestamp(not_after).map_err(|e| CertError::Parse {
            what: "CA certificate",
            why: format!("expiry out of range: {e}"),
        })?;
    let key = KeyPair::generate().map_err(gen_err(what))?;
    let cert = p.signed_by(&key, &issuer).map_err(gen_err(what))?;
    Ok((cert.pem(), PrivateKeyPem(key.serialize_pem())))
}

/// A new CA and a serving certificate from it. `previous_ca` is kept in the published
/// bundle while it is still valid.
pub fn generate(
    names: &ServingNames,
    previous_ca: Option<String>,
    now: SystemTime,
) -> Result<Material, CertError> {
    let (ca_cert, ca_key) = generate_ca(now)?;
    let (cert, key) = issue_serving(&ca_cert, &ca_key, names, now)?;
    Ok(Material {
        ca_cert,
        ca_key,
        previous_ca_cert: previous_ca,
        cert,
        key,
    })
}

/// What a certificate says that matters here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Expiry, Unix seconds.
    pub not_after: i64,
    /// Start, Unix seconds.
    pub not_before: i64,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// The subject public key info (DER).
    pub spki: Vec<u8>,
}

fn parse_pem(pem: &[u8], what: &'static str) -> Result<x509_parser::pem::Pem, CertError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| CertError::Parse {
        what,
        why: e.to_string(),
    })?;
    Ok(pem)
}

fn with_cert<T>(
    pem: &str,
    what: &'static str,
    f: impl FnOnce(&X509Certificate<'_>) -> Result<T, CertError>,
) -> Result<T, CertError> {
    let pem = parse_pem(pem.as_bytes(), what)?;
    let cert = pem.parse_x509().map_err(|e| CertError::Parse {
        what,
        why: e.to_string(),
    })?;
    f(&cert)
}

/// Reads expiry, names and public key of the first certificate in `pem`.
pub fn inspect(pem: &str, what: &'static str) -> Result<CertInfo, CertError> {
    with_cert(pem, what, |cert| {
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| CertError::Parse {
                what,
                why: e.to_string(),
            })?;
        for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                    _ => {}
                },
                _ => {}
            }
        }
        Ok(CertInfo {
            not_after: cert.validity().not_after.timestamp(),
            not_before: cert.validity().not_before.timestamp(),
            dns,
            ips,
            spki: cert.public_key().raw.to_vec(),
        })
    })
}

fn key_spki(key: &PrivateKeyPem, what: &'static str) -> Result<Vec<u8>, CertError> {
    let kp = KeyPair::from_pem(key.expose()).map_err(|_| CertError::Parse {
        what,
        why: "not a PEM private key".into(),
    })?;
    Ok(kp.subject_public_key_info())
}

/// Whether `cert` is signed by the CA whose certificate is `ca`.
fn signed_by(cert: &str, ca: &str) -> Result<bool, CertError> {
    let ca_pem = parse_pem(ca.as_bytes(), "CA certificate")?;
    let ca = ca_pem.parse_x509().map_err(|e| CertError::Parse {
        what: "CA certificate",
        why: e.to_string(),
    })?;
    with_cert(cert, "serving certificate", |c| {
        Ok(c.issuer() == ca.subject() && c.verify_signature(Some(ca.public_key())).is_ok())
    })
}

impl Material {
    /// What this material needs at `now` to serve `names`.
    pub fn assess(&self, names: &ServingNames, now: SystemTime) -> Assessment {
        let now_s = unix(now);
        let ca = match inspect(&self.ca_cert, "CA certificate") {
            Ok(ca) => ca,
            Err(e) => return Assessment::RenewCa(e.to_string()),
        };
        match key_spki(&self.ca_key, "CA key") {
            Ok(spki) if spki == ca.spki => {}
            Ok(_) => return Assessment::RenewCa("the CA key does not match the CA".into()),
            Err(e) => return Assessment::RenewCa(e.to_string()),
        }
        if ca.not_after - now_s < secs(CA_RENEW_BEFORE) {
            return Assessment::RenewCa(format!(
                "the CA expires in less than {} days",
                CA_RENEW_BEFORE.as_secs() / 86400
            ));
        }
        let leaf = match inspect(&self.cert, "serving certificate") {
            Ok(l) => l,
            Err(e) => return Assessment::RenewServing(e.to_string()),
        };
        match key_spki(&self.key, "serving key") {
            Ok(spki) if spki == leaf.spki => {}
            Ok(_) => {
                return Assessment::RenewServing(
                    "the serving key does not match the certificate".into(),
                );
            }
            Err(e) => return Assessment::RenewServing(e.to_string()),
        }
        if !matches!(signed_by(&self.cert, &self.ca_cert), Ok(true)) {
            return Assessment::RenewServing(
                "the serving certificate is not signed by the current CA".into(),
            );
        }
        if leaf.not_after - now_s < secs(SERVING_RENEW_BEFORE) {
            return Assessment::RenewServing(format!(
                "the serving certificate expires in less than {} days",
                SERVING_RENEW_BEFORE.as_secs() / 86400
            ));
        }
        if leaf.not_before > now_s {
            return Assessment::RenewServing("the serving certificate is not valid yet".into());
        }
        let missing: Vec<String> = names
            .dns
            .iter()
            .filter(|d| !leaf.dns.contains(&d.to_ascii_lowercase()))
            .cloned()
            .chain(
                names
                    .ips
                    .iter()
                    .filter(|ip| !leaf.ips.contains(ip))
                    .map(ToString::to_string),
            )
            .collect();
        if !missing.is_empty() {
            return Assessment::RenewServing(format!(
                "the serving certificate does not cover {}",
                missing.join(", ")
            ));
        }
        Assessment::Keep
    }

    /// Applies an assessment: the material to store, or `None` for [`Assessment::Keep`].
    pub fn renewed(
        &self,
        assessment: &Assessment,
        names: &ServingNames,
        now: SystemTime,
    ) -> Result<Option<Material>, CertError> {
        match assessment {
            Assessment::Keep => Ok(None),
            Assessment::RenewServing(_) => {
                let (cert, key) = issue_serving(&self.ca_cert, &self.ca_key, names, now)?;
                Ok(Some(Material {
                    cert,
                    key,
                    ..self.clone()
                }))
            }
            Assessment::RenewCa(_) => {
                // Keep the outgoing CA trusted while it is valid: replicas that have not
                // reloaded yet still serve certificates it signed.
                let previous = inspect(&self.ca_cert, "CA certificate")
                    .ok()
                    .filter(|ca| ca.not_after > unix(now))
                    .map(|_| self.ca_cert.clone());
                generate(names, previous, now).map(Some)
            }
        }
    }

    /// The PEM bundle to publish as `caBundle`: the current CA, and the previous one
    /// while it is still valid at `now`.
    pub fn ca_bundle(&self, now: SystemTime) -> String {
        let mut out = self.ca_cert.trim_end().to_owned();
        out.push('\n');
        if let Some(prev) = &self.previous_ca_cert
            && inspect(prev, "previous CA certificate").is_ok_and(|ca| ca.not_after > unix(now))
        {
            out.push_str(prev.trim_end());
            out.push('\n');
        }
        out
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86400);

    fn names() -> ServingNames {
        ServingNames::new("turnpike-operator-webhook", "turnpike-system", None)
    }

    #[test]
    fn serving_names_cover_the_service_and_the_url_host() {
        let n = ServingNames::new("hook", "ns", Some("Webhook.Example.com"));
        assert_eq!(
            n.dns,
            [
                "hook",
                "hook.ns",
                "hook.ns.svc",
                "hook.ns.svc.cluster.local",
                "webhook.example.com"
            ]
        );
        assert_eq!(n.ips, [IpAddr::from([127, 0, 0, 1])]);
        let n = ServingNames::new("hook", "ns", Some("[::1]"));
        assert_eq!(n.ips.len(), 2);
        let n = ServingNames::new("hook", "ns", Some("127.0.0.1"));
        assert_eq!(n.ips.len(), 1);
    }

    #[test]
    fn fresh_material_is_kept_and_covers_the_names() {
        let now = SystemTime::now();
        let m = generate(&names(), None, now).unwrap();
        assert_eq!(m.assess(&names(), now), Assessment::Keep);
        let leaf = inspect(&m.cert, "serving").unwrap();
        assert!(
            leaf.dns
                .contains(&"turnpike-operator-webhook.turnpike-system.svc".to_owned())
        );
        assert!(leaf.ips.contains(&IpAddr::from([127, 0, 0, 1])));
        let days = (leaf.not_after - unix(now)) / 86400;
        assert_eq!(days, 90);
        let ca = inspect(&m.ca_cert, "ca").unwrap();
        assert!((ca.not_after - unix(now)) / 86400 >= 3649);
        assert!(signed_by(&m.cert, &m.ca_cert).unwrap());
        assert_eq!(m.ca_bundle(now).matches("BEGIN CERTIFICATE").count(), 1);
    }

    #[test]
    fn renewal_follows_the_clock_and_the_names() {
        let t0 = SystemTime::now();
        let m = generate(&names(), None, t0).unwrap();
        assert_eq!(m.assess(&names(), t0 + 59 * DAY), Assessment::Keep);
        let a = m.assess(&names(), t0 + 61 * DAY);
        assert!(
            matches!(a, Assessment::RenewServing(ref why) if why.contains("30 days")),
            "{a:?}"
        );
        let renewed = m.renewed(&a, &names(), t0 + 61 * DAY).unwrap().unwrap();
        assert_eq!(renewed.ca_cert, m.ca_cert, "same CA");
        assert_ne!(renewed.cert, m.cert);
        assert_eq!(renewed.assess(&names(), t0 + 61 * DAY), Assessment::Keep);

        // A new --webhook-url host is not covered: renew the serving certificate.
        let more = ServingNames::new(
            "turnpike-operator-webhook",
            "turnpike-system",
            Some("10.1.2.3"),
        );
        let a = m.assess(&more, t0);
        assert!(
            matches!(a, Assessment::RenewServing(ref why) if why.contains("10.1.2.3")),
            "{a:?}"
        );

        // The CA near its end: a new CA, the old one stays in the bundle.
        let late = t0 + CA_VALIDITY - CA_RENEW_BEFORE + DAY;
        let a = m.assess(&names(), late);
        assert!(matches!(a, Assessment::RenewCa(_)), "{a:?}");
        let rotated = m.renewed(&a, &names(), late).unwrap().unwrap();
        assert_ne!(rotated.ca_cert, m.ca_cert);
        assert_eq!(
            rotated.previous_ca_cert.as_deref(),
            Some(m.ca_cert.as_str())
        );
        assert_eq!(
            rotated.ca_bundle(late).matches("BEGIN CERTIFICATE").count(),
            2
        );
        assert_eq!(
            rotated
                .ca_bundle(t0 + CA_VALIDITY + DAY)
                .matches("BEGIN CERTIFICATE")
                .count(),
            1,
            "an expired previous CA is dropped"
        );
        assert!(signed_by(&rotated.cert, &rotated.ca_cert).unwrap());
    }

    #[test]
    fn broken_material_is_replaced() {
        let now = SystemTime::now();
        let m = generate(&names(), None, now).unwrap();
        let other = generate(&names(), None, now).unwrap();

        let bad_ca = Material {
            ca_cert: "garbage".into(),
            ..m.clone()
        };
        assert!(matches!(
            bad_ca.assess(&names(), now),
            Assessment::RenewCa(_)
        ));
        let wrong_ca_key = Material {
            ca_key: other.ca_key.clone(),
            ..m.clone()
        };
        assert!(matches!(
            wrong_ca_key.assess(&names(), now),
            Assessment::RenewCa(_)
        ));
        let wrong_key = Material {
            key: other.key.clone(),
            ..m.clone()
        };
        assert!(matches!(
            wrong_key.assess(&names(), now),
            Assessment::RenewServing(_)
        ));
        let foreign = Material {
            cert: other.cert.clone(),
            key: other.key.clone(),
            ..m.clone()
        };
        assert_eq!(
            foreign.assess(&names(), now),
            Assessment::RenewServing(
                "the serving certificate is not signed by the current CA".into()
            )
        );
    }

    #[test]
    fn keys_never_print() {
        let m = generate(&names(), None, SystemTime::now()).unwrap();
        let debug = format!("{m:?}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        assert!(debug.contains("PrivateKeyPem(***)"));
        assert_eq!(m.key.to_string(), "***");
    }
}
