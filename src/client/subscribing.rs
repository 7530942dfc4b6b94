//! Subscription commands on their way to the nodes, which a `PUBLISH`
//! waits for, briefly. One server runs a client's `SUBSCRIBE` before
//! another client's `PUBLISH` that came after it; the proxy may still be
//! opening the subscriber's connection to the node (or holding its next
//! subscription command for the first one's confirmation), and a
//! `PUBLISH` sent meanwhile would miss the subscriber and not count it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Longest a `PUBLISH` waits for other clients' subscriptions: a node
/// that cannot be reached does not hold publishers for longer.
pub const PUBLISH_WAIT: Duration = Duration::from_millis(100);

/// How many sessions have subscription commands not yet confirmed by
/// their node.
#[derive(Debug, Default)]
pub struct Subscribing {
    count: AtomicUsize,
    done: Notify,
}

impl Subscribing {
    /// Whether any session is subscribing (one load: the check every
    /// `PUBLISH` makes).
    pub fn active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// A session starts subscribing (see [`Counted`]).
    fn start(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    /// A session's subscription commands are all confirmed (or it left).
    fn end(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.done.notify_waiters();
    }

    /// Waits, at most [`PUBLISH_WAIT`], until no session but the caller
    /// (`own`: the caller itself is subscribing, which it cannot finish
    /// while it waits) has subscription commands on their way.
    pub async fn wait_for_others(&self, own: bool) {
        let own = usize::from(own);
        if self.count.load(Ordering::Acquire) <= own {
            return;
        }
        let _ = tokio::time::timeout(PUBLISH_WAIT, async {
            loop {
                let notified = self.done.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.count.load(Ordering::Acquire) <= own {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

/// A session counted as subscribing, until this is dropped (its
/// commands confirmed, or the session gone).
#[derive(Debug)]
pub struct Counted(Arc<Subscribing>);

impl Counted {
    /// Counts a session in `subscribing`.
    pub fn new(subscribing: &Arc<Subscribing>) -> Counted {
        subscribing.start();
        Counted(Arc::clone(subscribing))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_other_subscribers_only() {
        let s = Arc::new(Subscribing::default());
        // Nobody subscribing, or only the caller: no wait.
        let t = tokio::time::Instant::now();
        s.wait_for_others(false).await;
        assert!(!s.active());
        let counted = Counted::new(&s);
        assert!(s.active());
        s.wait_for_others(true).await;
        assert!(t.elapsed() < Duration::from_millis(50));
        // Another session: the wait ends when it is confirmed.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(counted);
        });
        let t = tokio::time::Instant::now();
        s.wait_for_others(false).await;
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(15) && waited < PUBLISH_WAIT,
            "{waited:?}"
        );
        assert!(!s.active());
        // One that never ends: bounded.
        let _stuck = Counted::new(&s);
        let t = tokio::time::Instant::now();
        s.wait_for_others(false).await;
        assert!(t.elapsed() >= PUBLISH_WAIT);
    }
}
