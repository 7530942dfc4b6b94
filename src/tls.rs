//! TLS settings for both sides, with rustls (ring provider).
//!
//! Client side: the proxy presents `tls.cert_file`/`tls.key_file`. Backend
//! side: nodes are verified against `tls.backend_ca_file` (or the system
//! bundle), optionally with a client certificate, and verified by the name
//! in `tls.backend_server_name` or else the host the node announces (which
//! is also sent as SNI) — the ElastiCache in-transit encryption setup.
//! With `tls.client_ca_file`, clients must present a certificate it signs.
//!
//! [`TlsState`] holds what is in force and replaces it when the files
//! change or on SIGHUP, so rotated certificates need no restart.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
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

/// The CA certificates in `path`, for the setting `field`.
fn roots(path: &str, field: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{field}: invalid CA certificate in {path}: {e}"))?;
    }
    Ok(roots)
}

/// The acceptor for client TLS, when `tls.cert_file` is set; it asks for
/// and verifies client certificates when `tls.client_ca_file` is set.
pub fn acceptor(cfg: &TlsConfig) -> Result<Option<TlsAcceptor>, String> {
    let (Some(cert), Some(key_file)) = (&cfg.cert_file, &cfg.key_file) else {
        return Ok(None);
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &cfg.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = Arc::new(roots(ca, "tls.client_ca_file")?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| format!("tls.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
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
    let roots = roots(ca, "tls.backend_ca_file")?;
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

/// When a file was last changed, and its size: a rotated file differs in
/// one of them (a Kubernetes secret volume swaps a symlink, which
/// `metadata` follows). `None` when it cannot be read.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &str) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The files the TLS settings are read from.
fn files(cfg: &TlsConfig) -> Vec<&str> {
    let mut files: Vec<&str> = [&cfg.cert_file, &cfg.key_file, &cfg.client_ca_file]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if cfg.backend {
        files.push(cfg.backend_ca_file.as_deref().unwrap_or(SYSTEM_CA_BUNDLE));
        files.extend(
            [&cfg.backend_cert_file, &cfg.backend_key_file]
                .into_iter()
                .flatten()
                .map(String::as_str),
        );
    }
    files
}

/// The TLS settings in force on both sides. [`TlsState::reload`] replaces
/// them; connections open by then keep what they were made with.
pub struct TlsState {
    client: ArcSwapOption<TlsAcceptor>,
    backend: ArcSwapOption<BackendTls>,
    /// The files as they were when last read (see [`TlsState::changed`]).
    stamps: Mutex<Vec<(String, Stamp)>>,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("client", &self.client.load().is_some())
            .field("backend", &self.backend.load())
            .finish()
    }
}

impl TlsState {
    /// Reads the settings' files; an error names the setting and the file.
    pub fn new(cfg: &TlsConfig) -> Result<TlsState, String> {
        let state = TlsState {
            client: ArcSwapOption::empty(),
            backend: ArcSwapOption::empty(),
            stamps: Mutex::new(Vec::new()),
        };
        state.reload(cfg)?;
        Ok(state)
    }

    /// The acceptor for new client connections, when client TLS is on.
    pub fn acceptor(&self) -> Option<Arc<TlsAcceptor>> {
        self.client.load_full()
    }

    /// How new backend connections do TLS, when backend TLS is on.
    pub fn backend(&self) -> Option<Arc<BackendTls>> {
        self.backend.load_full()
    }

    /// Reads the files again and puts both sides' new settings in force at
    /// once. On an error (a file missing, half written or not matching its
    /// key) nothing changes and the error names the setting.
    pub fn reload(&self, cfg: &TlsConfig) -> Result<(), String> {
        // Stamped before reading: a file replaced while it is read differs
        // from its stamp at the next check and is read again.
        let stamps: Vec<(String, Stamp)> = files(cfg)
            .into_iter()
            .map(|f| (f.to_string(), stamp(f)))
            .collect();
        let result = acceptor(cfg).and_then(|client| Ok((client, backend(cfg)?)));
        // Recorded even when reading failed, so that a bad file is
        // reported once, not at every check, and read again once it changes.
        if let Ok(mut old) = self.stamps.lock() {
            *old = stamps;
        }
        let (client, backend) = result?;
        self.client.store(client.map(Arc::new));
        self.backend.store(backend.map(Arc::new));
        Ok(())
    }

    /// Whether a file changed since it was last read, or the settings name
    /// other files.
    pub fn changed(&self, cfg: &TlsConfig) -> bool {
        let Ok(old) = self.stamps.lock() else {
            return true;
        };
        let now = files(cfg);
        now.len() != old.len()
            || now
                .iter()
                .zip(old.iter())
                .any(|(file, (was, stamped))| file != was || stamp(file) != *stamped)
    }
}
