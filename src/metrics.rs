//! Metric names in one place, and the Prometheus recorder.
//!
//! Names follow Prometheus conventions (`_total` counters, `_seconds`
//! histograms, base units). They are documented in the README.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Commands completed, by `command` (lower-case name) and `outcome` (`ok`/`error`).
pub const COMMANDS: &str = "slotbridge_commands_total";
/// Time from reading a command to its reply being ready, by `class`
/// (`single`, `split`, `fanout`, `local`, `blocking`, `transaction`,
/// `pubsub`, `keyspace`, `error`).
pub const COMMAND_DURATION: &str = "slotbridge_command_duration_seconds";
/// Client connections open now.
pub const CLIENT_CONNECTIONS: &str = "slotbridge_client_connections";
/// Client connections accepted.
pub const CLIENT_CONNECTIONS_TOTAL: &str = "slotbridge_client_connections_total";
/// Client connections refused (`maxclients` reached).
pub const CLIENT_CONNECTIONS_REJECTED: &str = "slotbridge_client_connections_rejected_total";
/// Clients disconnected for exceeding the output buffer limit or not reading.
pub const SLOW_CLIENT_DISCONNECTS: &str = "slotbridge_slow_client_disconnects_total";
/// Bytes read from clients.
pub const CLIENT_BYTES_IN: &str = "slotbridge_client_received_bytes_total";
/// Bytes written to clients.
pub const CLIENT_BYTES_OUT: &str = "slotbridge_client_sent_bytes_total";
/// Commands in flight (read from clients, reply not yet written).
pub const INFLIGHT: &str = "slotbridge_inflight_requests";
/// Backend connections established, by `node`.
pub const BACKEND_CONNECTS: &str = "slotbridge_backend_connects_total";
/// Backend connection failures, by `node` and `kind` (`connect`, `lost`, `timeout`).
pub const BACKEND_ERRORS: &str = "slotbridge_backend_errors_total";
/// Whether a master answered the last health check, by `node` (1/0).
pub const BACKEND_UP: &str = "slotbridge_backend_up";
/// Redirections followed, by `kind` (`moved`, `ask`).
pub const REDIRECTIONS: &str = "slotbridge_redirections_total";
/// Retries of commands that were not executed, by `reason`.
pub const RETRIES: &str = "slotbridge_retries_total";
/// Topology refreshes completed.
pub const TOPOLOGY_REFRESHES: &str = "slotbridge_topology_refreshes_total";
/// Slots with a known owner.
pub const SLOTS_COVERED: &str = "slotbridge_slots_covered";
/// Masters in the slot map.
pub const MASTERS: &str = "slotbridge_masters";
/// Keys rewritten by co-location rules, by `rule`.
pub const COLOCATE_KEYS: &str = "slotbridge_colocate_rewritten_keys_total";
/// Scripts wrapped for co-location rules.
pub const COLOCATE_SCRIPTS: &str = "slotbridge_colocate_wrapped_scripts_total";
/// Writes whose trailing `WAIT` (the `[durability]` policy) reached fewer
/// replicas than asked for within its timeout.
pub const WRITE_WAIT_SHORT: &str = "slotbridge_write_wait_short_total";
/// Writes followed by a `WAIT` under the `[durability]` policy.
pub const WRITE_WAITS: &str = "slotbridge_write_waits_total";
/// TLS certificate reloads (file change or SIGHUP), by `outcome` (`ok`,
/// `error`: unusable files, the current certificates kept).
pub const TLS_RELOADS: &str = "slotbridge_tls_reloads_total";
/// Commands refused by a user's ACL rules (`NOPERM`).
pub const ACL_DENIED: &str = "slotbridge_acl_denied_total";
/// Client TLS handshakes that failed or timed out (a client certificate
/// refused under `tls.client_ca_file`, a plain-text client, a scanner).
pub const CLIENT_TLS_FAILURES: &str = "slotbridge_client_tls_handshake_failures_total";
/// Elements a cross-slot blocking pop's losing wait took and the proxy
/// pushed back (see `client::multipop`).
pub const MULTIPOP_PUSHBACKS: &str = "slotbridge_multipop_pushbacks_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency classes of [`COMMAND_DURATION`].
pub const CLASSES: [&str; 9] = [
    "single",
    "blocking",
    "split",
    "fanout",
    "local",
    "transaction",
    "pubsub",
    "keyspace",
    "error",
];

/// Per-command counters (registered on first use, so /metrics lists only
/// commands that ran) and per-class histograms, so counting a command is an
/// atomic add rather than a registry lookup.
struct CommandMetrics {
    commands: Vec<OnceLock<[metrics::Counter; 2]>>,
    classes: [Latency; CLASSES.len()],
    bytes_in: metrics::Counter,
    bytes_out: metrics::Counter,
}

static COMMAND_METRICS: OnceLock<CommandMetrics> = OnceLock::new();

fn command_metrics() -> &'static CommandMetrics {
    COMMAND_METRICS.get_or_init(|| CommandMetrics {
        commands: (0..crate::command::table_gen::COMMANDS.len())
            .map(|_| OnceLock::new())
            .collect(),
        classes: std::array::from_fn(|_| Latency::default()),
        bytes_in: metrics::counter!(CLIENT_BYTES_IN),
        bytes_out: metrics::counter!(CLIENT_BYTES_OUT),
    })
}

/// Counts bytes read from clients (once per read).
pub fn count_bytes_in(n: usize) {
    command_metrics().bytes_in.increment(n as u64);
}

/// Counts bytes written to clients (once per write).
pub fn count_bytes_out(n: usize) {
    command_metrics().bytes_out.increment(n as u64);
}

/// Counts one completed command and its latency; `index` is the
/// command's position in the built-in table, `class` one of [`CLASSES`].
pub fn record_command(
    index: Option<u16>,
    name: &'static str,
    class: usize,
    error: bool,
    elapsed: Duration,
) {
    let m = command_metrics();
    match index.and_then(|i| m.commands.get(i as usize)) {
        Some(cell) => {
            let c = cell.get_or_init(|| {
                [
                    metrics::counter!(COMMANDS, "command" => name, "outcome" => "ok"),
                    metrics::counter!(COMMANDS, "command" => name, "outcome" => "error"),
                ]
            });
            c[error as usize].increment(1)
        }
        None => {
            let outcome = if error { "error" } else { "ok" };
            metrics::counter!(COMMANDS, "command" => name, "outcome" => outcome).increment(1);
        }
    }
    if let Some(h) = m.classes.get(class) {
        h.record(elapsed);
    }
}

/// Upper bounds of the [`COMMAND_DURATION`] buckets, in nanoseconds.
const BUCKETS_NS: [u64; 16] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];

/// One latency class of [`COMMAND_DURATION`]. Recording is two relaxed
/// atomic adds: the exporter's own histograms keep every sample, with a
/// timestamp, until their next upkeep, which cost about 3% of the proxy's
/// CPU per pipelined command.
#[derive(Default)]
struct Latency {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: [AtomicU64; BUCKETS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Latency {
    fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_NS.partition_point(|&bound| bound < ns);
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Appends this class's series in the Prometheus text format.
    fn render(&self, class: &str, out: &mut String) {
        let mut cumulative = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = match BUCKETS_NS.get(i) {
                Some(&ns) => (ns as f64 / 1e9).to_string(),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(
                out,
                "{COMMAND_DURATION}_bucket{{class=\"{class}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{COMMAND_DURATION}_sum{{class=\"{class}\"}} {sum}");
        let _ = writeln!(
            out,
            "{COMMAND_DURATION}_count{{class=\"{class}\"}} {cumulative}"
        );
    }
}

/// The `/metrics` page: the recorder's metrics and the command latency
/// histograms.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut out = handle.render();
    let _ = writeln!(out, "# TYPE {COMMAND_DURATION} histogram");
    for (class, latency) in CLASSES.iter().zip(&command_metrics().classes) {
        latency.render(class, &mut out);
    }
    out
}

/// Installs the Prometheus recorder (once per process) and starts its upkeep.
/// Returns the handle that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            let upkeep = handle.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_cumulative_with_exact_bounds() {
        let h = Latency::default();
        h.record(Duration::from_micros(30));
        h.record(Duration::from_micros(50)); // on a bound: counted in it
        h.record(Duration::from_millis(2));
        h.record(Duration::from_secs(10)); // past the last bound
        let mut out = String::new();
        h.render("single", &mut out);
        let line = |le: &str| {
            let prefix = format!("{COMMAND_DURATION}_bucket{{class=\"single\",le=\"{le}\"}} ");
            out.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no bucket {le} in\n{out}"))
                .to_string()
        };
        assert_eq!(line("0.00005"), "2");
        assert_eq!(line("0.001"), "2");
        assert_eq!(line("0.0025"), "3");
        assert_eq!(line("5"), "3");
        assert_eq!(line("+Inf"), "4");
        assert!(out.contains(&format!("{COMMAND_DURATION}_count{{class=\"single\"}} 4\n")));
        assert!(out.contains(&format!(
            "{COMMAND_DURATION}_sum{{class=\"single\"}} 10.00208\n"
        )));
    }
}
