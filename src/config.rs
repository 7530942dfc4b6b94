//! Typed configuration: what users write (TOML, `deny_unknown_fields`), its
//! defaults, and validation with errors that name the field.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Default client listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6380";
/// Largest bulk string a client may send: Redis's own `proto-max-bulk-len`.
pub const DEFAULT_MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// Most arguments in one command (Redis accepts up to 1024*1024*1024; a
/// million is far beyond what any real client sends and bounds the
/// per-command index memory).
pub const DEFAULT_MAX_ARGS: usize = 1024 * 1024;
/// Commands one client may have in flight before the proxy stops reading
/// from it (back-pressure, not an error).
pub const DEFAULT_MAX_PIPELINE: usize = 4096;
/// MOVED/ASK redirections followed for one command before giving up.
pub const DEFAULT_MAX_REDIRECTS: u8 = 5;
/// Backend connect + handshake timeout.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2000;
/// Shared connections per node and client protocol; one keeps batching
/// tight (more commands per syscall).
pub const DEFAULT_CONNECTIONS_PER_NODE: usize = 1;
/// Requests queued per backend connection before senders wait.
pub const DEFAULT_QUEUE_DEPTH: usize = 16 * 1024;
/// Periodic topology refresh.
pub const DEFAULT_REFRESH_INTERVAL_MS: u64 = 5000;
/// Minimum gap between two refreshes (a MOVED storm causes one refresh).
pub const DEFAULT_MIN_REFRESH_INTERVAL_MS: u64 = 100;
/// How long a command waits for a slot with no known owner to be healed.
pub const DEFAULT_SLOT_WAIT_MS: u64 = 2000;
/// How long a command that was not executed (node unreachable, failover in
/// progress) is retried before its error is returned: long enough to ride
/// out a typical failover with a short `cluster-node-timeout`, short enough
/// that clients never hang.
pub const DEFAULT_RETRY_DEADLINE_MS: u64 = 3000;
/// Default cap on keys per sub-command (0: no cap).
pub const DEFAULT_MAX_KEYS_PER_SUBCOMMAND: usize = 0;
/// Most private backend connections at once (blocking commands and WATCH;
/// subscription connections are bounded by one per client and node).
pub const DEFAULT_MAX_PRIVATE_CONNECTIONS: usize = 1024;
/// Most client connections (Redis's own `maxclients` default).
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Replies waiting for a client that does not read, before it is
/// disconnected (a single larger reply is still delivered... until this).
pub const DEFAULT_CLIENT_OUTPUT_BUFFER_LIMIT: usize = 256 * 1024 * 1024;
/// A client that accepts no bytes of its pending replies for this long is
/// disconnected.
pub const DEFAULT_CLIENT_WRITE_TIMEOUT_MS: u64 = 60_000;
/// Keys remembered for tracking clients: about 100 bytes each, so 10 MB
/// at most by default.
pub const DEFAULT_TRACKING_TABLE_MAX_KEYS: usize = 100_000;
/// A backend that answers nothing for this long while requests wait is
/// considered dead: its connection is dropped and reopened (blocking
/// commands are exempt).
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;

/// The configuration file, as written by users.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Client-facing `host:port`.
    pub listen: String,
    /// Cluster seed nodes, `host:port` (host names allowed).
    pub seeds: Vec<String>,
    /// Admin HTTP endpoint (metrics/health); off when absent.
    pub admin: Option<String>,
    /// Log filter (`info`, `slotbridge=debug`, ...); `RUST_LOG` wins.
    pub log_level: String,
    /// Where read-only commands go.
    pub read_from: ReadFrom,
    /// How MULTI/EXEC over several slots behaves.
    pub transactions: TxMode,
    /// Runtime worker threads. 0 (auto): one thread on machines with two
    /// cores or fewer (no cross-thread wake-ups when the proxy shares a
    /// small machine with its clients and servers), else one per core.
    pub worker_threads: usize,
    /// Backend connection settings.
    pub backend: BackendConfig,
    /// Client-side limits.
    pub limits: LimitsConfig,
    /// Topology refresh settings.
    pub topology: TopologyConfig,
    /// Client authentication (the proxy's own password).
    pub auth: AuthConfig,
    /// Shutdown behaviour.
    pub lifecycle: LifecycleConfig,
    /// TLS for clients and backends.
    pub tls: TlsConfig,
    /// Opt-in write durability (`WAIT` after writes).
    pub durability: DurabilityConfig,
    /// Key co-location rules (`[[colocate]]`).
    pub colocate: Vec<crate::colocate::RuleConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.into(),
            seeds: Vec::new(),
            admin: None,
            log_level: "info".into(),
            read_from: ReadFrom::Master,
            transactions: TxMode::Strict,
            worker_threads: 0,
            backend: BackendConfig::default(),
            limits: LimitsConfig::default(),
            topology: TopologyConfig::default(),
            auth: AuthConfig::default(),
            lifecycle: LifecycleConfig::default(),
            tls: TlsConfig::default(),
            durability: DurabilityConfig::default(),
            colocate: Vec::new(),
        }
    }
}

/// How transactions whose commands span slots are handled.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TxMode {
    /// Like a cluster: every command of a transaction must be in one slot
    /// (`-CROSSSLOT` at queue time, `-EXECABORT` at `EXEC`).
    #[default]
    Strict,
    /// Queued in the proxy and run at `EXEC` as one `MULTI/EXEC` per slot:
    /// atomic within each slot, not across slots.
    PerSlot,
}

/// Where read-only commands are sent.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// Always the master (reads see every acknowledged write).
    #[default]
    Master,
    /// A replica (round-robin, with `READONLY`); the master when the shard
    /// has no replica or the replica cannot be reached.
    ReplicaPreferred,
    /// A replica; the master only when the shard has no replica listed.
    Replica,
}

/// `[backend]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// Redis ACL user for backend connections.
    pub username: Option<String>,
    /// Password for backend connections (or env `SLOTBRIDGE_BACKEND_PASSWORD`).
    pub password: Option<String>,
    /// Connect + handshake timeout in milliseconds.
    pub connect_timeout_ms: u64,
    /// Shared connections per node and protocol.
    pub connections_per_node: usize,
    /// Requests queued per backend connection.
    pub queue_depth: usize,
    /// Drop a backend connection that answers nothing for this long while
    /// requests wait, in milliseconds (0: never).
    pub request_timeout_ms: u64,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            username: None,
            password: None,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            connections_per_node: DEFAULT_CONNECTIONS_PER_NODE,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest bulk string accepted from a client.
    pub max_bulk_len: usize,
    /// Most arguments in one command.
    pub max_args: usize,
    /// Commands in flight per client before reading pauses.
    pub max_pipeline: usize,
    /// Redirections followed per command.
    pub max_redirects: u8,
    /// Most keys in one sub-command of a split command (0: no limit); set
    /// it below a managed service's argument limit (ElastiCache Serverless
    /// refuses more than 3,999 arguments).
    pub max_keys_per_subcommand: usize,
    /// How long a command waits for an unknown slot owner, in milliseconds.
    pub slot_wait_ms: u64,
    /// How long a not-executed command is retried, in milliseconds.
    pub retry_deadline_ms: u64,
    /// Most private backend connections (blocking commands, WATCH).
    pub max_private_connections: usize,
    /// Most client connections; more are refused with Redis's error.
    pub max_clients: usize,
    /// Close clients idle this long, in milliseconds (0: never, as Redis).
    pub client_idle_timeout_ms: u64,
    /// Unwritten reply bytes per client before it is disconnected.
    pub client_output_buffer_limit: usize,
    /// Disconnect a client that reads none of its replies for this long.
    pub client_write_timeout_ms: u64,
    /// Keys read by `CLIENT TRACKING` clients that the proxy remembers
    /// (0: no limit); past it, a key is invalidated to make room, as
    /// Redis's `tracking-table-max-keys`.
    pub tracking_table_max_keys: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_bulk_len: DEFAULT_MAX_BULK_LEN,
            max_args: DEFAULT_MAX_ARGS,
            max_pipeline: DEFAULT_MAX_PIPELINE,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            max_keys_per_subcommand: DEFAULT_MAX_KEYS_PER_SUBCOMMAND,
            slot_wait_ms: DEFAULT_SLOT_WAIT_MS,
            retry_deadline_ms: DEFAULT_RETRY_DEADLINE_MS,
            max_private_connections: DEFAULT_MAX_PRIVATE_CONNECTIONS,
            max_clients: DEFAULT_MAX_CLIENTS,
            client_idle_timeout_ms: 0,
            client_output_buffer_limit: DEFAULT_CLIENT_OUTPUT_BUFFER_LIMIT,
            client_write_timeout_ms: DEFAULT_CLIENT_WRITE_TIMEOUT_MS,
            tracking_table_max_keys: DEFAULT_TRACKING_TABLE_MAX_KEYS,
        }
    }
}

/// `[durability]`: an opt-in write policy. Redis replicates asynchronously,
/// so a write acknowledged by a master that dies before its replica copied
/// it is lost on failover. With `wait_replicas` > 0 the proxy sends
/// `WAIT wait_replicas wait_timeout_ms` right after every write on the same
/// backend connection and answers the client only once WAIT returns, which
/// narrows that window to writes whose WAIT timed out (counted in
/// `slotbridge_write_wait_short_total`). The count is capped at the number
/// of replicas the master has, so a master without replicas is not slowed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DurabilityConfig {
    /// Replicas each write must reach before it is acknowledged (0: off).
    pub wait_replicas: u32,
    /// How long WAIT may block, in milliseconds (1..=60000).
    pub wait_timeout_ms: u64,
}

impl Default for DurabilityConfig {
    fn default() -> Self {
        DurabilityConfig {
            wait_replicas: 0,
            wait_timeout_ms: 100,
        }
    }
}

/// `[topology]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    /// Periodic refresh interval in milliseconds.
    pub refresh_interval_ms: u64,
    /// Minimum gap between refreshes in milliseconds.
    pub min_refresh_interval_ms: u64,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            refresh_interval_ms: DEFAULT_REFRESH_INTERVAL_MS,
            min_refresh_interval_ms: DEFAULT_MIN_REFRESH_INTERVAL_MS,
        }
    }
}

/// `[auth]`: what clients must send with `AUTH`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Password of the `default` user (or env `SLOTBRIDGE_CLIENT_PASSWORD`).
    /// With neither a password nor users, clients need no AUTH (as Redis).
    pub password: Option<String>,
    /// Further users (`AUTH name password`), `[[auth.users]]` entries.
    pub users: Vec<UserConfig>,
}

impl AuthConfig {
    /// Whether clients must authenticate.
    pub fn required(&self) -> bool {
        self.password.is_some() || !self.users.is_empty()
    }
}

/// One `[[auth.users]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User name.
    pub name: String,
    /// Its password.
    pub password: String,
    /// What it may do: Redis ACL rules as `ACL SETUSER` takes them (an
    /// ElastiCache access string), e.g. `"on ~app:* &* +@all -@dangerous"`.
    /// Absent: everything.
    #[serde(default)]
    pub acl: Option<String>,
}

/// Default drain time on SIGTERM: shorter than Kubernetes' default 30 s
/// grace period, long enough for in-flight commands.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 10_000;

/// `[lifecycle]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// After SIGTERM/SIGINT, how long clients may finish, in milliseconds.
    pub drain_timeout_ms: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            drain_timeout_ms: DEFAULT_DRAIN_TIMEOUT_MS,
        }
    }
}

/// How often the TLS files are checked for changes: often enough that a
/// rotated certificate (cert-manager renews days before expiry) is served
/// within seconds, rarely enough to cost nothing (three `stat`s).
pub const DEFAULT_TLS_WATCH_INTERVAL_MS: u64 = 10_000;
/// Shortest TLS file check interval: each check is a few `stat`s on a
/// blocking thread; more often than 10 times a second buys nothing.
pub const MIN_TLS_WATCH_INTERVAL_MS: u64 = 100;

/// `[tls]`: client-facing TLS and backend TLS.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain clients see; client TLS is on when set.
    pub cert_file: Option<String>,
    /// PEM private key for `cert_file`.
    pub key_file: Option<String>,
    /// PEM CA bundle that signs client certificates: when set, every client
    /// must present a certificate it signs (mutual TLS).
    pub client_ca_file: Option<String>,
    /// Every this many milliseconds the certificate, key and CA files are
    /// checked, and read again when one changed (0: only on SIGHUP).
    pub watch_interval_ms: u64,
    /// Connect to the backends with TLS.
    pub backend: bool,
    /// PEM CA bundle that signs the backends' certificates (default: the
    /// system bundle `/etc/ssl/certs/ca-certificates.crt`).
    pub backend_ca_file: Option<String>,
    /// PEM client certificate for backends that require one.
    pub backend_cert_file: Option<String>,
    /// PEM key for `backend_cert_file`.
    pub backend_key_file: Option<String>,
    /// Server name to verify (and send as SNI) instead of the node's host.
    pub backend_server_name: Option<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            watch_interval_ms: DEFAULT_TLS_WATCH_INTERVAL_MS,
            backend: false,
            backend_ca_file: None,
            backend_cert_file: None,
            backend_key_file: None,
            backend_server_name: None,
        }
    }
}

/// A configuration problem, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or type error (the message names the field).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, one line.
        message: String,
    },
    /// A co-location rule is invalid (the message names rule and field).
    #[error("invalid config: {0}")]
    Rules(String),
    /// A value is out of range.
    #[error("invalid config: {field}: {message}")]
    Invalid {
        /// Dotted field name.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses TOML text; the error is one line naming the field.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| {
            let msg = e.message().replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: {msg}")
                }
                None => msg,
            }
        })
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |field: &'static str, message: String| Err(ConfigError::Invalid { field, message });
        if self.listen.parse::<SocketAddr>().is_err() {
            return invalid(
                "listen",
                format!("'{}' is not an IP:port address", self.listen),
            );
        }
        if self.seeds.is_empty() {
            return invalid(
                "seeds",
                "at least one seed node (host:port) is required".into(),
            );
        }
        for s in &self.seeds {
            let ok = s
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return invalid("seeds", format!("'{s}' is not host:port"));
            }
        }
        if let Some(admin) = &self.admin {
            if admin.parse::<SocketAddr>().is_err() {
                return invalid("admin", format!("'{admin}' is not an IP:port address"));
            }
        }
        if self.backend.connections_per_node == 0 || self.backend.connections_per_node > 64 {
            return invalid(
                "backend.connections_per_node",
                "must be between 1 and 64".into(),
            );
        }
        if self.backend.queue_depth == 0 {
            return invalid("backend.queue_depth", "must be at least 1".into());
        }
        if self.backend.connect_timeout_ms == 0 {
            return invalid("backend.connect_timeout_ms", "must be at least 1".into());
        }
        if self.durability.wait_replicas > 0 {
            let t = self.durability.wait_timeout_ms;
            if !(1..=60_000).contains(&t) {
                return invalid(
                    "durability.wait_timeout_ms",
                    "must be between 1 and 60000 (WAIT with 0 would block forever)".into(),
                );
            }
            let request_timeout = self.backend.request_timeout_ms;
            if request_timeout != 0 && t >= request_timeout {
                return invalid(
                    "durability.wait_timeout_ms",
                    format!("must be below backend.request_timeout_ms ({request_timeout})"),
                );
            }
        }
        if self.limits.max_pipeline == 0 {
            return invalid("limits.max_pipeline", "must be at least 1".into());
        }
        if self.limits.max_args < 2 {
            return invalid("limits.max_args", "must be at least 2".into());
        }
        if self.limits.max_bulk_len == 0 {
            return invalid("limits.max_bulk_len", "must be at least 1".into());
        }
        if self.limits.client_write_timeout_ms == 0 {
            // 0 would disconnect every client whose socket is not
            // writable at once; a slow client must have a bound.
            return invalid(
                "limits.client_write_timeout_ms",
                "must be at least 1".into(),
            );
        }
        if self.limits.max_redirects == 0 {
            return invalid("limits.max_redirects", "must be at least 1".into());
        }
        if self.limits.max_private_connections == 0 {
            return invalid(
                "limits.max_private_connections",
                "must be at least 1".into(),
            );
        }
        if let Err(message) = crate::colocate::Rules::new(&self.colocate) {
            return Err(ConfigError::Rules(message));
        }
        if self
            .auth
            .users
            .iter()
            .any(|u| u.name.is_empty() || u.name == "default")
        {
            return invalid(
                "auth.users",
                "user names must be non-empty and not 'default' (use auth.password)".into(),
            );
        }
        if self.limits.max_clients == 0 {
            return invalid("limits.max_clients", "must be at least 1".into());
        }
        if self.limits.client_output_buffer_limit < 1024 {
            return invalid(
                "limits.client_output_buffer_limit",
                "must be at least 1024 bytes".into(),
            );
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return invalid(
                "tls.cert_file",
                "tls.cert_file and tls.key_file must be set together".into(),
            );
        }
        if let Err(e) = crate::acl::users::Users::validate(&self.auth) {
            return invalid("auth.users.acl", e);
        }
        if (1..MIN_TLS_WATCH_INTERVAL_MS).contains(&self.tls.watch_interval_ms) {
            return invalid(
                "tls.watch_interval_ms",
                format!("must be 0 (off) or at least {MIN_TLS_WATCH_INTERVAL_MS}"),
            );
        }
        if self.tls.client_ca_file.is_some() && self.tls.cert_file.is_none() {
            return invalid(
                "tls.client_ca_file",
                "client certificates need client TLS: set tls.cert_file and tls.key_file too"
                    .into(),
            );
        }
        if self.tls.backend_cert_file.is_some() != self.tls.backend_key_file.is_some() {
            return invalid(
                "tls.backend_cert_file",
                "tls.backend_cert_file and tls.backend_key_file must be set together".into(),
            );
        }
        if self.topology.refresh_interval_ms == 0 {
            return invalid("topology.refresh_interval_ms", "must be at least 1".into());
        }
        Ok(())
    }

    /// Backend connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.backend.connect_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::from_toml("seeds = [\"h:1\"]\n[limits]\nmax_pipeline = 10\n").unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.limits.max_pipeline, 10);
        assert_eq!(c.limits.max_bulk_len, DEFAULT_MAX_BULK_LEN);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named() {
        let e = Config::from_toml("seeds = [\"h:1\"]\n[limits]\nmax_pipline = 10\n").unwrap_err();
        assert!(e.contains("max_pipline") && e.starts_with("line 3"), "{e}");
        let e = Config::from_toml("listen = 5\n").unwrap_err();
        assert!(e.contains("line 1") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = Config {
            seeds: vec!["h:1".into()],
            ..Default::default()
        };
        c.listen = "nope".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("invalid config: listen:"));
        c.listen = DEFAULT_LISTEN.into();
        c.seeds = vec!["nohost".into()];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("invalid config: seeds:"));
        c.seeds = vec!["h:1".into()];
        c.limits.client_write_timeout_ms = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("invalid config: limits.client_write_timeout_ms:"));
        c.limits.client_write_timeout_ms = 1;
        c.tls.client_ca_file = Some("ca.crt".into());
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid config: tls.client_ca_file: client certificates need client TLS: \
             set tls.cert_file and tls.key_file too"
        );
        c.tls.client_ca_file = None;
        c.tls.watch_interval_ms = 50;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid config: tls.watch_interval_ms: must be 0 (off) or at least 100"
        );
        c.tls.watch_interval_ms = 0;
        assert!(c.validate().is_ok());
        c.seeds = vec![];
        assert!(c.validate().unwrap_err().to_string().contains("seeds"));
    }
}
