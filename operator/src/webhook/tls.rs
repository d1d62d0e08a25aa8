//! TLS for the webhook server: rustls with the aws-lc-rs provider, and a certificate
//! resolver whose certificate is swapped atomically on renewal, so new handshakes use
//! the new certificate without a restart and without blocking handshakes in flight.

use std::{fmt, sync::Arc};

use arc_swap::ArcSwap;
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::certs::{CertError, PrivateKeyPem};

/// The one crypto provider of the workspace.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds a rustls certificate from a PEM chain and key.
pub fn certified_key(cert_pem: &str, key: &PrivateKeyPem) -> Result<CertifiedKey, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Tls(format!("certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(CertError::Tls("no certificate in the PEM".into()));
    }
    // The parse error of a key is not shown: it could quote key bytes.
    let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes())
        .map_err(|_| CertError::Tls("the private key PEM does not parse".into()))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| CertError::Tls(format!("key and certificate: {e}")))
}

/// The serving certificate, replaceable while the server runs.
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    /// PEM of the loaded certificate, to skip reloading an unchanged one.
    loaded_pem: ArcSwap<String>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

impl CertStore {
    /// A store serving `cert_pem` with `key`.
    pub fn new(cert_pem: &str, key: &PrivateKeyPem) -> Result<Arc<Self>, CertError> {
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(certified_key(cert_pem, key)?),
            loaded_pem: ArcSwap::from_pointee(cert_pem.to_owned()),
        }))
    }

    /// Replaces the certificate for new handshakes; returns whether it changed. An
    /// invalid pair leaves the current certificate in place.
    pub fn replace(&self, cert_pem: &str, key: &PrivateKeyPem) -> Result<bool, CertError> {
        if self.loaded_pem.load().as_str() == cert_pem {
            return Ok(false);
        }
        let ck = certified_key(cert_pem, key)?;
        self.current.store(Arc::new(ck));
        self.loaded_pem.store(Arc::new(cert_pem.to_owned()));
        Ok(true)
    }

    /// The PEM of the certificate in use.
    pub fn cert_pem(&self) -> Arc<String> {
        self.loaded_pem.load_full()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A server configuration (TLS 1.2 and 1.3, HTTP/1.1 by ALPN) using `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, CertError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
