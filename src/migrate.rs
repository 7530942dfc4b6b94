//! `slotbridge migrate-keys --rule NAME`: moves keys that existed before a
//! co-location rule to their stored names (`{group}key`).
//!
//! For every master it scans the keyspace, and for each key the rule
//! matches that is still under its old name: `DUMP` + `PTTL` on the source,
//! `RESTORE` (keeping the TTL) on the owner of the new name, then `DEL` of
//! the old name. It is idempotent and resumable: a key already moved is no
//! longer under its old name, and if the new name already exists (written
//! through the proxy since the rule was introduced) the newer value is kept
//! and the old one deleted. `--limit` stops after N keys, `--rate` caps keys
//! per second. Safe order of steps: see the README.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::backend::conn::{connect, read_frame, BackendStream, ConnOptions};
use crate::cluster::refresh::fetch_slots;
use crate::cluster::slot::slot;
use crate::colocate::Rules;
use crate::config::Config;
use crate::merge::integer;
use crate::protocol::reply;
use crate::protocol::scan::{bulk_body, children};
use crate::protocol::Proto;

/// What a migration did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Keys moved to their stored names.
    pub moved: u64,
    /// Keys whose new name already existed (old copy deleted).
    pub superseded: u64,
    /// Keys the rule matches that were already in stored form.
    pub already: u64,
}

struct Node {
    stream: BackendStream,
}

impl Node {
    async fn call(&mut self, args: &[&[u8]]) -> Result<Bytes, String> {
        let cmd = reply::command(args.iter().copied());
        self.stream
            .write_all(&cmd)
            .await
            .map_err(|e| e.to_string())?;
        self.stream.flush().await.map_err(|e| e.to_string())?;
        read_frame(&mut self.stream).await
    }
}

/// Runs the migration of rule `rule` against the cluster behind `config`.
pub async fn run(
    config: &Config,
    rule: &str,
    limit: Option<u64>,
    rate: u64,
) -> Result<Summary, String> {
    let rules = Rules::new(&config.colocate)?;
    if !rules.rules().iter().any(|r| r.name == rule) {
        return Err(format!("no [[colocate]] rule named '{rule}'"));
    }
    let opts = ConnOptions {
        connect_timeout: config.connect_timeout(),
        username: config.backend.username.clone(),
        password: config.backend.password.clone().or_else(|| {
            std::env::var("SLOTBRIDGE_BACKEND_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty())
        }),
        queue_depth: 1,
        on_failure: Box::new(|_| {}),
        // The client side's files are not needed here.
        tls: std::sync::Arc::new(crate::tls::TlsState::new(&crate::config::TlsConfig {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            ..config.tls.clone()
        })?),
        request_timeout: None,
        commands_in_flight: Default::default(),
        tracker: std::sync::Arc::new(crate::tracking::Tracker::new(0)),
        inboxes: Default::default(),
    };
    let mut ranges = Vec::new();
    let mut last = String::from("no seeds");
    for seed in &config.seeds {
        match fetch_slots(seed, &opts).await {
            Ok(r) if !r.is_empty() => {
                ranges = r;
                break;
            }
            Ok(_) => last = format!("{seed}: empty slot map"),
            Err(e) => last = format!("{seed}: {e}"),
        }
    }
    if ranges.is_empty() {
        return Err(format!("cannot read the slot map: {last}"));
    }
    let owner = |key: &[u8]| -> Option<String> {
        let s = slot(key);
        ranges
            .iter()
            .find(|r| (r.start..=r.end).contains(&s))
            .map(|r| r.master.clone())
    };
    let mut masters: Vec<String> = ranges.iter().map(|r| r.master.clone()).collect();
    masters.sort();
    masters.dedup();
    let mut nodes: HashMap<String, Node> = HashMap::new();
    for addr in &masters {
        let stream = connect(addr, &opts, Proto::Resp2, false).await?;
        nodes.insert(addr.clone(), Node { stream });
    }
    let mut summary = Summary::default();
    let started = Instant::now();
    let mut done: u64 = 0;
    'nodes: for source in &masters {
        let mut cursor = b"0".to_vec();
        loop {
            let node = nodes.get_mut(source).ok_or("lost a node")?;
            let page = node.call(&[b"SCAN", &cursor, b"COUNT", b"500"]).await?;
            let parts =
                children(&page).ok_or_else(|| format!("{source}: unexpected SCAN reply"))?;
            let (&(cs, ce), &(ks, ke)) = (
                parts.first().ok_or("bad SCAN")?,
                parts.get(1).ok_or("bad SCAN")?,
            );
            cursor = bulk_body(&page[cs..ce]).ok_or("bad SCAN cursor")?.to_vec();
            let keys_frame = &page[ks..ke];
            let keys: Vec<Vec<u8>> = children(keys_frame)
                .unwrap_or_default()
                .iter()
                .filter_map(|&(s, e)| bulk_body(&keys_frame[s..e]).map(|k| k.to_vec()))
                .collect();
            for key in keys {
                let Some((r, _)) = rules.classify(&key) else {
                    continue;
                };
                if r.name != rule {
                    continue;
                }
                if rules.decode(&key) != key.as_slice() {
                    summary.already += 1;
                    continue;
                }
                let target = rules.encode(&key).into_owned();
                let node = nodes.get_mut(source).ok_or("lost a node")?;
                let dump = node.call(&[b"DUMP", &key]).await?;
                let Some(payload) = bulk_body(&dump).map(|p| p.to_vec()) else {
                    continue;
                };
                let pttl = integer(&node.call(&[b"PTTL", &key]).await?).unwrap_or(-1);
                if pttl == -2 {
                    continue;
                }
                let ttl = pttl.max(0).to_string();
                let dest = owner(&target).ok_or("no owner for a target slot")?;
                let restored = nodes
                    .get_mut(&dest)
                    .ok_or("target node missing")?
                    .call(&[b"RESTORE", &target, ttl.as_bytes(), &payload])
                    .await?;
                if restored.starts_with(b"-BUSYKEY") {
                    summary.superseded += 1;
                } else if restored.first() == Some(&b'-') {
                    return Err(format!(
                        "RESTORE of {} failed: {}",
                        String::from_utf8_lossy(&target),
                        String::from_utf8_lossy(&restored).trim_end()
                    ));
                } else {
                    summary.moved += 1;
                }
                let node = nodes.get_mut(source).ok_or("lost a node")?;
                node.call(&[b"DEL", &key]).await?;
                done += 1;
                if done.is_multiple_of(1000) {
                    eprintln!(
                        "migrate-keys: {} moved, {} superseded, {} already in place ({:.1}s)",
                        summary.moved,
                        summary.superseded,
                        summary.already,
                        started.elapsed().as_secs_f64()
                    );
                }
                if limit.is_some_and(|l| done >= l) {
                    break 'nodes;
                }
                if rate > 0 {
                    let due = Duration::from_secs_f64(done as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            if cursor == b"0" {
                break;
            }
        }
    }
    Ok(summary)
}
