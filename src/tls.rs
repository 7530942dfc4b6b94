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
fn acceptor(cfg: &TlsConfig) -> Result<Option<TlsAcceptor>, String> {
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
fn backend(cfg: &TlsConfig) -> Result<Option<BackendTls>, String> {
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

/// What identifies a file's content without reading it: inode, size and
/// modification and change times. A rotation changes one of them: an
/// in-place write the size or mtime, a rename or a Kubernetes secret
/// volume's symlink swap (which `metadata` follows) the inode, a `chmod`
/// that makes it readable the ctime. `None` when it cannot be read.
type Stamp = Option<(u64, u64, (i64, i64), (i64, i64))>;

fn stamp(path: &str) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.ino(),
        m.size(),
        (m.mtime(), m.mtime_nsec()),
        (m.ctime(), m.ctime_nsec()),
    ))
}

/// One side of TLS: the client side (the listener) or the backend side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Certificates clients see, and the CA of client certificates.
    Client,
    /// The nodes' CA and the proxy's certificate for the nodes.
    Backend,
}

impl Side {
    /// How the side is named in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Backend => "backend",
        }
    }

    /// The files this side reads.
    fn files(self, cfg: &TlsConfig) -> Vec<String> {
        let set = |files: [&Option<String>; 3]| files.into_iter().flatten().cloned().collect();
        match self {
            Side::Client => set([&cfg.cert_file, &cfg.key_file, &cfg.client_ca_file]),
            Side::Backend if !cfg.backend => Vec::new(),
            Side::Backend => {
                let ca = Some(
                    cfg.backend_ca_file
                        .as_deref()
                        .unwrap_or(SYSTEM_CA_BUNDLE)
                        .to_string(),
                );
                set([&ca, &cfg.backend_cert_file, &cfg.backend_key_file])
            }
        }
    }
}

/// What a reload of one side did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// New settings were read and are in force.
    Done(Side),
    /// Reading failed, for the first time or with another error than the
    /// last time: the current settings stay (it is tried again at every
    /// check until it works).
    Failed(Side, String),
}

/// The settings in force, for new connections.
#[derive(Default)]
struct InForce {
    client: Option<Arc<TlsAcceptor>>,
    backend: Option<Arc<BackendTls>>,
}

/// What the last reload of one side read, and how it ended.
#[derive(Default)]
struct SideState {
    stamps: Vec<(String, Stamp)>,
    /// The last error, while reading fails: the side is tried again at
    /// every check (a failure need not change any file's stamp: too many
    /// open files, a permission fixed by a parent directory).
    error: Option<String>,
}

/// The wanted settings and what each side last read.
struct Watched {
    cfg: TlsConfig,
    client: SideState,
    backend: SideState,
}

/// The TLS settings in force on both sides, and how they are kept current.
///
/// [`TlsState::apply`] (start, SIGHUP) sets the wanted settings and reads
/// them; [`TlsState::check`] (the periodic file watch) reads a side again
/// when one of its files changed or its last read failed. Both run with
/// one lock held, so a SIGHUP and a check never interleave, and each side
/// is read on its own, so a bad backend file does not hold back a rotated
/// client certificate. Connections open before a reload keep what they
/// were made with. Both read files: call them off the async runtime.
pub struct TlsState {
    in_force: arc_swap::ArcSwap<InForce>,
    watched: Mutex<Watched>,
    /// Woken by [`TlsState::apply`], so the file watch takes a new interval
    /// at once.
    pub changed_settings: tokio::sync::Notify,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let now = self.in_force.load();
        f.debug_struct("TlsState")
            .field("client", &now.client.is_some())
            .field("backend", &now.backend)
            .finish()
    }
}

impl TlsState {
    /// Reads the settings' files; an error names the setting and the file.
    pub fn new(cfg: &TlsConfig) -> Result<TlsState, String> {
        let state = TlsState {
            in_force: Default::default(),
            watched: Mutex::new(Watched {
                cfg: cfg.clone(),
                client: SideState::default(),
                backend: SideState::default(),
            }),
            changed_settings: tokio::sync::Notify::new(),
        };
        match state.apply(cfg).into_iter().find_map(|r| match r {
            Reloaded::Failed(_, e) => Some(e),
            Reloaded::Done(_) => None,
        }) {
            Some(e) => Err(e),
            None => Ok(state),
        }
    }

    /// The acceptor for new client connections, when client TLS is on.
    pub fn acceptor(&self) -> Option<Arc<TlsAcceptor>> {
        self.in_force.load().client.clone()
    }

    /// How new backend connections do TLS, when backend TLS is on.
    pub fn backend(&self) -> Option<Arc<BackendTls>> {
        self.in_force.load().backend.clone()
    }

    /// Makes `cfg` the wanted settings and reads both sides' files (a
    /// side without files reports nothing). A side that fails keeps its
    /// current settings and is tried again by [`TlsState::check`].
    pub fn apply(&self, cfg: &TlsConfig) -> Vec<Reloaded> {
        let Ok(mut watched) = self.watched.lock() else {
            return Vec::new();
        };
        watched.cfg = cfg.clone();
        let mut done = Vec::new();
        for side in [Side::Client, Side::Backend] {
            done.extend(self.reload(&mut watched, side, true));
        }
        drop(watched);
        self.changed_settings.notify_one();
        done
    }

    /// Reads again each side whose files changed since they were read, or
    /// whose last read failed. Reports what changed, and each error once.
    pub fn check(&self) -> Vec<Reloaded> {
        let Ok(mut watched) = self.watched.lock() else {
            return Vec::new();
        };
        let mut done = Vec::new();
        for side in [Side::Client, Side::Backend] {
            let state = match side {
                Side::Client => &watched.client,
                Side::Backend => &watched.backend,
            };
            let changed =
                state.error.is_some() || state.stamps.iter().any(|(file, was)| stamp(file) != *was);
            if changed {
                done.extend(self.reload(&mut watched, side, false));
            }
        }
        done
    }

    /// Reads one side's files (stamped first: a file replaced while it is
    /// read differs from its stamp at the next check) and puts the result
    /// in force. `always`: report even an error seen before.
    fn reload(&self, watched: &mut Watched, side: Side, always: bool) -> Option<Reloaded> {
        let files = side.files(&watched.cfg);
        let stamps: Vec<(String, Stamp)> = files.iter().map(|f| (f.clone(), stamp(f))).collect();
        let result = match side {
            Side::Client => acceptor(&watched.cfg).map(|a| {
                let now = self.in_force.load();
                InForce {
                    client: a.map(Arc::new),
                    backend: now.backend.clone(),
                }
            }),
            Side::Backend => backend(&watched.cfg).map(|b| {
                let now = self.in_force.load();
                InForce {
                    client: now.client.clone(),
                    backend: b.map(Arc::new),
                }
            }),
        };
        let state = match side {
            Side::Client => &mut watched.client,
            Side::Backend => &mut watched.backend,
        };
        state.stamps = stamps;
        match result {
            Ok(in_force) => {
                self.in_force.store(Arc::new(in_force));
                state.error = None;
                (!files.is_empty()).then_some(Reloaded::Done(side))
            }
            Err(e) => {
                let new = always || state.error.as_deref() != Some(e.as_str());
                state.error = Some(e.clone());
                new.then_some(Reloaded::Failed(side, e))
            }
        }
    }
}
