//! TLS settings for both sides, with rustls (ring provider).
//!
//! Client side: the proxy presents `tls.cert_file`/`tls.key_file`. Backend
//! side: nodes are verified against `tls.backend_ca_file` (or the system
//! bundle), optionally with a client certificate, and verified by the name
//! in `tls.backend_server_name` or else the host the node announces (which
//! is also sent as SNI) — the ElastiCache in-transit encryption setup.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::TlsConfig;

/// The system CA bundle on Debian-like systems.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {path}: {e}"))?
        .collect();
    let certs = certs.map_err(|e| format!("invalid certificate in {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {path}"));
    }
    Ok(certs)
}

fn key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read private key from {path}: {e}"))
}

/// The acceptor for client TLS, when `tls.cert_file` is set.
pub fn acceptor(cfg: &TlsConfig) -> Result<Option<TlsAcceptor>, String> {
    let (Some(cert), Some(key_file)) = (&cfg.cert_file, &cfg.key_file) else {
        return Ok(None);
    };
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs(cert)?, key(key_file)?)
        .map_err(|e| format!("tls.cert_file/tls.key_file: {e}"))?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// How backend connections do TLS.
#[derive(Clone)]
pub struct BackendTls {
    /// The connector.
    pub connector: TlsConnector,
    /// Name to verify instead of the node's host.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl BackendTls {
    /// The name to verify for a node at `host`.
    pub fn name_for(&self, host: &str) -> Result<ServerName<'static>, String> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(name.to_string())
            .map_err(|e| format!("invalid TLS server name '{name}': {e}"))
    }
}

/// Backend TLS settings, when `tls.backend` is on.
pub fn backend(cfg: &TlsConfig) -> Result<Option<BackendTls>, String> {
    if !cfg.backend {
        return Ok(None);
    }
    let ca = cfg.backend_ca_file.as_deref().unwrap_or(SYSTEM_CA_BUNDLE);
    let mut roots = RootCertStore::empty();
    for cert in certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| format!("tls.backend_ca_file: invalid CA certificate in {ca}: {e}"))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (&cfg.backend_cert_file, &cfg.backend_key_file) {
        (Some(cert), Some(key_file)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_file)?)
            .map_err(|e| format!("tls.backend_cert_file/tls.backend_key_file: {e}"))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(BackendTls {
        connector: TlsConnector::from(Arc::new(config)),
        server_name: cfg.backend_server_name.clone(),
    }))
}
