//! Keeping the slot map true: discovery from every known node and the seeds.
//!
//! One task owns refreshing. It asks the known masters and then the seeds
//! (whose host names are resolved again on every attempt, so a managed
//! endpoint that moved is followed) for `CLUSTER SLOTS`, and installs the
//! answer. Refreshes happen periodically and whenever someone calls
//! [`Topology::request_refresh`] (MOVED, connection failures, unknown slots);
//! a burst of requests coalesces into one refresh, at most one per
//! `min_interval`.

use std::sync::Arc;
use std::time::Duration;

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

use super::topology::{SlotRange, Topology};
use crate::backend::conn::{oneshot, ConnOptions};

/// `*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n`
const CLUSTER_SLOTS: &[u8] = b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n";

/// When and where to refresh from.
#[derive(Debug, Clone)]
pub struct RefreshOptions {
    /// Seed nodes (`host:port`), resolved on every use.
    pub seeds: Vec<String>,
    /// Refresh at least this often.
    pub period: Duration,
    /// Never refresh more often than this.
    pub min_interval: Duration,
}

/// Runs the refresher until `opts` returns `None` (the proxy is gone);
/// `opts` is read before every refresh, so reloaded seeds take effect.
pub async fn run<F>(topology: Arc<Topology>, conn: Arc<ConnOptions>, opts: F)
where
    F: Fn() -> Option<RefreshOptions> + Send + 'static,
{
    while let Some(opts) = opts() {
        let ok = refresh_once(&topology, &conn, &opts.seeds).await;
        let wait = if ok {
            opts.period
        } else {
            opts.min_interval.max(Duration::from_millis(200))
        };
        tokio::select! {
            _ = topology.refresh_requested() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        tokio::time::sleep(opts.min_interval).await;
    }
}

/// How many nodes are asked for their view in one refresh.
const VIEWS_PER_REFRESH: usize = 3;

/// Fetches the map from several nodes at once (known masters first, then
/// the seeds) and installs the view most of them agree on. When the views
/// differ (a failover or migration in progress), another refresh follows
/// soon. Returns whether a map was installed.
pub async fn refresh_once(
    topology: &Arc<Topology>,
    conn: &Arc<ConnOptions>,
    seeds: &[String],
) -> bool {
    let mut candidates: Vec<String> = topology
        .load()
        .shards()
        .iter()
        .map(|s| s.master.addr().to_string())
        .collect();
    for seed in seeds {
        if !candidates.contains(seed) {
            candidates.push(seed.clone());
        }
    }
    let mut views: Vec<(Vec<SlotRange>, usize)> = Vec::new();
    let mut last_error = String::new();
    let mut next = 0;
    while views.is_empty() && next < candidates.len() {
        let batch: Vec<String> = candidates[next..]
            .iter()
            .take(VIEWS_PER_REFRESH)
            .cloned()
            .collect();
        next += batch.len();
        let mut tasks = tokio::task::JoinSet::new();
        for addr in batch {
            let conn = conn.clone();
            tasks.spawn(async move {
                let result = fetch_slots(&addr, &conn).await;
                (addr, result)
            });
        }
        // Once one view is in, the others get a short grace period, so a
        // black-holed node cannot delay the refresh by its connect timeout.
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let done = match deadline {
                Some(d) => match tokio::time::timeout_at(d, tasks.join_next()).await {
                    Ok(done) => done,
                    Err(_) => break,
                },
                None => tasks.join_next().await,
            };
            let Some(done) = done else {
                break;
            };
            let Ok((addr, result)) = done else {
                continue;
            };
            if deadline.is_none() && result.is_ok() {
                deadline = Some(tokio::time::Instant::now() + Duration::from_millis(100));
            }
            match result {
                Ok(mut ranges) if !ranges.is_empty() => {
                    ranges.sort_by_key(|r| r.start);
                    match views.iter_mut().find(|(v, _)| *v == ranges) {
                        Some(view) => view.1 += 1,
                        None => views.push((ranges, 1)),
                    }
                }
                Ok(_) => last_error = format!("{addr}: CLUSTER SLOTS is empty"),
                Err(e) => last_error = format!("{addr}: {e}"),
            }
        }
    }
    // Most votes first; among equals, the view covering more slots.
    views.sort_by_key(|(v, votes)| {
        let covered: usize = v.iter().map(|r| (r.end - r.start) as usize + 1).sum();
        std::cmp::Reverse((*votes, covered))
    });
    let disagree = views.len() > 1;
    let Some((best, _)) = views.into_iter().next() else {
        tracing::warn!(error = %last_error, "topology refresh failed on every known node and seed");
        topology.set_last_error(Some(last_error));
        return false;
    };
    topology.install(&best);
    topology.set_last_error(None);
    topology
        .stats
        .refreshes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics::counter!(crate::metrics::TOPOLOGY_REFRESHES).increment(1);
    if disagree {
        tracing::debug!("nodes disagree about the slot map; refreshing again soon");
        topology.request_refresh();
    }
    true
}

/// Asks one node for `CLUSTER SLOTS`.
pub async fn fetch_slots(addr: &str, conn: &ConnOptions) -> Result<Vec<SlotRange>, String> {
    let frame = oneshot(addr, conn, CLUSTER_SLOTS).await?;
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    parse_cluster_slots(&frame, host)
}

/// Parses a `CLUSTER SLOTS` reply; `default_host` replaces empty or `?` hosts.
pub fn parse_cluster_slots(frame: &[u8], default_host: &str) -> Result<Vec<SlotRange>, String> {
    let parsed = decode(frame).map_err(|e| e.to_string())?;
    let Some((OwnedFrame::Array(entries), _)) = parsed else {
        return match parsed {
            Some((OwnedFrame::Error(e), _)) => Err(e),
            _ => Err("unexpected CLUSTER SLOTS reply".into()),
        };
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let OwnedFrame::Array(items) = entry else {
            return Err("CLUSTER SLOTS entry is not an array".into());
        };
        let (Some(OwnedFrame::Integer(start)), Some(OwnedFrame::Integer(end))) =
            (items.first(), items.get(1))
        else {
            return Err("CLUSTER SLOTS entry without a slot range".into());
        };
        let mut nodes = items[2..].iter().filter_map(|n| node_addr(n, default_host));
        let Some(master) = nodes.next() else {
            return Err("CLUSTER SLOTS entry without a master".into());
        };
        let (start, end) = (*start, *end);
        if !(0..16384).contains(&start) || !(start..16384).contains(&end) {
            return Err(format!("CLUSTER SLOTS range {start}-{end} out of bounds"));
        }
        out.push(SlotRange {
            start: start as u16,
            end: end as u16,
            master,
            replicas: nodes.collect(),
        });
    }
    Ok(out)
}

fn node_addr(node: &OwnedFrame, default_host: &str) -> Option<String> {
    let OwnedFrame::Array(fields) = node else {
        return None;
    };
    let host = match fields.first()? {
        OwnedFrame::BulkString(h) | OwnedFrame::SimpleString(h) => {
            String::from_utf8_lossy(h).into_owned()
        }
        _ => return None,
    };
    let OwnedFrame::Integer(port) = fields.get(1)? else {
        return None;
    };
    let host = if host.is_empty() || host == "?" {
        default_host.to_string()
    } else {
        host
    };
    if host.contains(':') && !host.starts_with('[') {
        return Some(format!("[{host}]:{port}"));
    }
    Some(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_slots() {
        let reply = b"*2\r\n*4\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n*3\r\n$0\r\n\r\n:7003\r\n$2\r\nid\r\n*3\r\n:5461\r\n:16383\r\n*2\r\n$11\r\nredis.local\r\n:7001\r\n";
        let ranges = parse_cluster_slots(reply, "10.0.0.1").unwrap();
        assert_eq!(
            ranges,
            vec![
                SlotRange {
                    start: 0,
                    end: 5460,
                    master: "127.0.0.1:7000".into(),
                    replicas: vec!["10.0.0.1:7003".into()]
                },
                SlotRange {
                    start: 5461,
                    end: 16383,
                    master: "redis.local:7001".into(),
                    replicas: vec![]
                },
            ]
        );
    }

    #[test]
    fn rejects_errors_and_bad_ranges() {
        assert_eq!(
            parse_cluster_slots(b"-ERR This instance has cluster support disabled\r\n", "h")
                .unwrap_err(),
            "ERR This instance has cluster support disabled"
        );
        assert!(
            parse_cluster_slots(b"*1\r\n*3\r\n:5\r\n:99999\r\n*2\r\n$1\r\nh\r\n:1\r\n", "h")
                .is_err()
        );
    }
}
