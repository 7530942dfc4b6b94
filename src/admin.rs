//! The admin endpoint: `/metrics`, `/healthz`, `/readyz`, `/topology`, and
//! the health checker that makes readiness mean something.
//!
//! Readiness is true only when every one of the 16384 slots has an owner
//! and every master answered the last health check (a `PING` sent on the
//! shared connection every second). A failing master also triggers a
//! topology refresh, so a dead node is noticed even without traffic.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::backend::ReplyStatus;
use crate::cluster::slot::SLOTS;
use crate::metrics as m;
use crate::protocol::Proto;
use crate::server::Context;

/// How often masters are checked.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// How long a health `PING` may take.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// The most node `run_id`s remembered to see restarts.
const MAX_RUN_IDS: usize = 4096;
/// Largest HTTP request head accepted.
const MAX_REQUEST: usize = 8 * 1024;

/// The last health check result of each master.
#[derive(Debug, Default)]
pub struct Health {
    nodes: Mutex<HashMap<Arc<str>, Result<(), String>>>,
}

impl Health {
    /// The last result for `addr` (`None` before the first check).
    pub fn get(&self, addr: &str) -> Option<Result<(), String>> {
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .cloned()
    }

    fn set(&self, addr: Arc<str>, result: Result<(), String>) {
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, result);
    }

    fn retain(&self, live: &[Arc<str>]) {
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|a, _| live.contains(a));
    }
}

/// Checks every master forever.
pub async fn health_checker(ctx: Arc<Context>) {
    let mut run_ids = HashMap::new();
    loop {
        let masters: Vec<_> = ctx
            .topology
            .load()
            .shards()
            .iter()
            .map(|s| s.master.clone())
            .collect();
        let addrs: Vec<Arc<str>> = masters.iter().map(|p| p.addr().clone()).collect();
        let mut checks = tokio::task::JoinSet::new();
        for pool in masters.clone() {
            checks.spawn(async move {
                let ping = Bytes::from_static(b"*1\r\n$4\r\nPING\r\n");
                let reply =
                    crate::client::nodecall::request(pool.conn(Proto::Resp2), ping, 0, false);
                let result = match tokio::time::timeout(HEALTH_TIMEOUT, reply).await {
                    Ok(r) if r.status == ReplyStatus::Answered && &r.data[..] == b"+PONG\r\n" => {
                        Ok(())
                    }
                    Ok(r) => Err(String::from_utf8_lossy(
                        r.data
                            .get(1..r.data.len().saturating_sub(2))
                            .unwrap_or_default(),
                    )
                    .into_owned()),
                    Err(_) => Err(format!("no reply within {HEALTH_TIMEOUT:?}")),
                };
                (pool.addr().clone(), result)
            });
        }
        while let Some(done) = checks.join_next().await {
            let Ok((addr, result)) = done else { continue };
            metrics::gauge!(m::BACKEND_UP, "node" => addr.to_string()).set(if result.is_ok() {
                1.0
            } else {
                0.0
            });
            if result.is_err() {
                ctx.topology.request_refresh();
            }
            ctx.health.set(addr, result);
        }
        ctx.health.retain(&addrs);
        keep_listeners(&ctx);
        carry_settings(&ctx, masters, &mut run_ids).await;
        tokio::time::sleep(HEALTH_INTERVAL).await;
    }
}

/// Closes the invalidation inboxes and broadcast listeners of nodes that
/// are no longer masters, and opens broadcast listeners on new masters
/// while a client tracks in `BCAST` mode (see [`crate::backend::inbox`]).
fn keep_listeners(ctx: &Context) {
    let opts = ctx.topology.conn_options();
    let map = ctx.topology.load();
    let masters: Vec<Arc<str>> = map
        .shards()
        .iter()
        .map(|s| s.master.addr().clone())
        .collect();
    let broadcasting = ctx.tracker.broadcasting();
    opts.inboxes.retain(&masters, broadcasting);
    if broadcasting {
        for addr in &masters {
            opts.inboxes.ensure_broadcast(addr, opts);
        }
    }
}

/// Sets the `CONFIG SET` parameters made through the proxy on masters that
/// were not masters then (see [`crate::node_settings`]), healthy ones only.
///
/// `run_ids` holds each node's last seen `run_id`: a node that restarted
/// (a crashed master back at its address, later promoted again) lost every
/// setting made at run time, so it gets them again.
async fn carry_settings(
    ctx: &Context,
    masters: Vec<Arc<crate::backend::NodePool>>,
    run_ids: &mut HashMap<Arc<str>, Bytes>,
) {
    if ctx.node_settings.is_empty() {
        run_ids.clear();
        return;
    }
    // Kept while a node is away (dead nodes leave the slot map), bounded
    // for clusters whose nodes keep getting new addresses.
    if run_ids.len() > MAX_RUN_IDS {
        run_ids.clear();
    }
    for pool in masters {
        let addr = pool.addr();
        if ctx.health.get(addr).is_none_or(|r| r.is_err()) {
            continue;
        }
        let Some(run_id) = run_id(&pool).await else {
            continue;
        };
        let before = run_ids.insert(addr.clone(), run_id.clone());
        if before.is_some_and(|old| old != run_id) {
            tracing::info!(node = %addr, "a master restarted: setting the CONFIG SET parameters made through the proxy again");
            ctx.node_settings.restarted(addr);
        }
        for carry in ctx.node_settings.missing_on(addr) {
            let cmd = carry.command.clone();
            let reply = crate::client::nodecall::request(pool.conn(Proto::Resp2), cmd, 0, false);
            let Ok(r) = tokio::time::timeout(HEALTH_TIMEOUT, reply).await else {
                // Tried again at the next health check.
                break;
            };
            let param = String::from_utf8_lossy(&carry.name);
            let said = String::from_utf8_lossy(r.data.trim_ascii_end());
            if r.status != ReplyStatus::Answered {
                break;
            } else if &r.data[..] == b"+OK\r\n" {
                tracing::info!(node = %addr, parameter = %param, "set a CONFIG SET parameter made through the proxy on a new master");
            } else if r.data.starts_with(b"-ERR ") {
                // Refused for good (an unknown parameter, a bad value).
                tracing::warn!(node = %addr, parameter = %param, reply = %said, "a new master refused a CONFIG SET parameter made through the proxy");
            } else {
                // LOADING, BUSY, ...: tried again at the next health check.
                tracing::debug!(node = %addr, parameter = %param, reply = %said, "CONFIG SET on a new master to be tried again");
                continue;
            }
            ctx.node_settings.sent(addr, &carry);
        }
    }
}

/// The `run_id` a node's `INFO server` shows (new at every start).
async fn run_id(pool: &crate::backend::NodePool) -> Option<Bytes> {
    let info = Bytes::from_static(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n");
    let reply = crate::client::nodecall::request(pool.conn(Proto::Resp2), info, 0, false);
    let r = tokio::time::timeout(HEALTH_TIMEOUT, reply).await.ok()?;
    if r.status != ReplyStatus::Answered {
        return None;
    }
    let text = crate::protocol::scan::bulk_body(&r.data)?;
    let line = text
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"run_id:"))?;
    Some(Bytes::copy_from_slice(line.trim_ascii()))
}

/// Why the proxy is not ready, or `None` when it is.
pub fn not_ready_reason(ctx: &Context) -> Option<String> {
    let map = ctx.topology.load();
    let covered = map.covered();
    if covered < SLOTS {
        return Some(format!("slot map covers {covered} of {SLOTS} slots"));
    }
    for shard in map.shards() {
        let addr = shard.master.addr();
        match ctx.health.get(addr) {
            Some(Ok(())) => {}
            Some(Err(e)) => return Some(format!("master {addr} is not reachable: {e}")),
            None => return Some(format!("master {addr} not checked yet")),
        }
    }
    None
}

/// The `/topology` document.
pub fn topology_json(ctx: &Context) -> String {
    let map = ctx.topology.load();
    let masters: Vec<serde_json::Value> = map
        .shards()
        .iter()
        .enumerate()
        .map(|(i, shard)| {
            let addr = shard.master.addr();
            let health = ctx.health.get(addr);
            serde_json::json!({
                "address": &**addr,
                "role": "master",
                "slots": map.ranges_of(i),
                "connection": match &health {
                    Some(Ok(())) => "up".to_string(),
                    Some(Err(_)) => "down".to_string(),
                    None => "unknown".to_string(),
                },
                "error": health.and_then(|h| h.err()),
                "replicas": shard.replicas.iter().map(|r| serde_json::json!({
                    "address": &**r.addr(),
                    "role": "replica",
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "version": map.version,
        "slots_covered": map.covered(),
        "ready": not_ready_reason(ctx).is_none(),
        "nodes": masters,
    })
    .to_string()
}

/// Serves the admin endpoint on `listener` forever.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>, handle: PrometheusHandle) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (ctx, handle) = (ctx.clone(), handle.clone());
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(10), answer(stream, &ctx, &handle)).await;
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    ctx: &Context,
    handle: &PrometheusHandle,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if buf.len() > MAX_REQUEST {
            return respond(&mut stream, 431, "text/plain", "request too large\n").await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", "only GET is supported\n").await;
    }
    let path = path.split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            update_gauges(ctx);
            let body = crate::metrics::render(handle);
            respond(&mut stream, 200, "text/plain; version=0.0.4", &body).await
        }
        "/healthz" => respond(&mut stream, 200, "text/plain", "ok\n").await,
        "/readyz" => match not_ready_reason(ctx) {
            None => respond(&mut stream, 200, "text/plain", "ready\n").await,
            Some(why) => {
                respond(
                    &mut stream,
                    503,
                    "text/plain",
                    &format!("not ready: {why}\n"),
                )
                .await
            }
        },
        "/topology" => respond(&mut stream, 200, "application/json", &topology_json(ctx)).await,
        _ => {
            respond(
                &mut stream,
                404,
                "text/plain",
                "not found: try /metrics, /healthz, /readyz, /topology\n",
            )
            .await
        }
    }
}

fn update_gauges(ctx: &Context) {
    let map = ctx.topology.load();
    metrics::gauge!(m::SLOTS_COVERED).set(map.covered() as f64);
    metrics::gauge!(m::MASTERS).set(map.shards().len() as f64);
    metrics::gauge!(m::INFLIGHT).set(ctx.stats.inflight.load(Ordering::Relaxed).max(0) as f64);
    metrics::gauge!(m::CLIENT_CONNECTIONS)
        .set(ctx.stats.connected_clients.load(Ordering::Relaxed) as f64);
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
