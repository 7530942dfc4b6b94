//! The channel that carries backend replies to a client session.
//!
//! Every command's reply crosses it, so it is kept small: one mutex around
//! a queue and the receiver's waker (uncontended on a single-threaded
//! runtime; held for a push or a pop only), instead of tokio's lock-free
//! list channel, whose block bookkeeping and atomic waker cost several
//! times more per message when messages come one at a time.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::Reply;

/// A new channel: the sending end (cloned for each request) and the
/// session's receiving end.
pub fn reply_channel() -> (ReplySender, ReplyReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        senders: AtomicUsize::new(1),
    });
    (ReplySender(shared.clone()), ReplyReceiver(shared))
}

struct Shared {
    state: Mutex<State>,
    /// Live [`ReplySender`]s; the receiver sees the end of the channel
    /// when the last one goes.
    senders: AtomicUsize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Reply>,
    /// The receiver, waiting for a reply.
    receiver: Option<Waker>,
    /// A sender waiting in [`ReplySender::closed`].
    closed_waiter: Option<Waker>,
    /// The receiver was dropped: replies are discarded.
    receiver_gone: bool,
    /// Every sender was dropped.
    senders_gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue consistent
        // (every critical section is a push, a pop or a flag).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Sends replies to one session.
pub struct ReplySender(Arc<Shared>);

impl ReplySender {
    /// Queues `reply`; a receiver that is gone is ignored.
    pub fn send(&self, reply: Reply) {
        let waker = {
            let mut state = self.0.lock();
            if state.receiver_gone {
                return;
            }
            state.queue.push_back(reply);
            state.receiver.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Resolves once the receiver is gone (the client disconnected).
    pub fn closed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut state = self.0.lock();
            if state.receiver_gone {
                return Poll::Ready(());
            }
            set_waker(&mut state.closed_waiter, cx);
            Poll::Pending
        })
    }
}

impl Clone for ReplySender {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        ReplySender(self.0.clone())
    }
}

impl Drop for ReplySender {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let waker = {
            let mut state = self.0.lock();
            state.senders_gone = true;
            state.receiver.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl std::fmt::Debug for ReplySender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplySender")
    }
}

/// A session's end of its reply channel.
pub struct ReplyReceiver(Arc<Shared>);

impl ReplyReceiver {
    /// The next reply; `None` once it is empty and every sender is gone.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Reply>> {
        let mut state = self.0.lock();
        if let Some(reply) = state.queue.pop_front() {
            return Poll::Ready(Some(reply));
        }
        if state.senders_gone {
            return Poll::Ready(None);
        }
        set_waker(&mut state.receiver, cx);
        Poll::Pending
    }

    /// Waits for the next reply (see [`ReplyReceiver::poll_recv`]).
    pub fn recv(&mut self) -> impl Future<Output = Option<Reply>> + '_ {
        std::future::poll_fn(move |cx| self.poll_recv(cx))
    }

    /// A reply already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Reply> {
        self.0.lock().queue.pop_front()
    }
}

impl Drop for ReplyReceiver {
    fn drop(&mut self) {
        let (waker, queued) = {
            let mut state = self.0.lock();
            state.receiver_gone = true;
            (state.closed_waiter.take(), std::mem::take(&mut state.queue))
        };
        // Dropped outside the lock: a reply's bytes may be the last
        // reference to a large buffer.
        drop(queued);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl std::fmt::Debug for ReplyReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyReceiver")
    }
}

/// Keeps `cx`'s waker in `slot` (cloned only when it changed).
fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ReplyStatus;
    use bytes::Bytes;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn reply(seq: u64) -> Reply {
        Reply {
            seq,
            part: 0,
            data: Bytes::from_static(b"+OK\r\n"),
            status: ReplyStatus::Answered,
            ends: Vec::new(),
        }
    }

    #[test]
    fn replies_arrive_in_order_and_wake_the_waiting_receiver() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = reply_channel();
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.clone().send(reply(1));
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        // Not waiting any more: a second send wakes nobody.
        tx.send(reply(2));
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        let got: Vec<u64> = std::iter::from_fn(|| rx.try_recv())
            .map(|r| r.seq)
            .collect();
        assert_eq!(got, vec![1, 2]);
        assert!(rx.poll_recv(&mut cx).is_pending());
        drop(tx);
        assert_eq!(count.0.load(Ordering::Relaxed), 2, "the last sender wakes");
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn a_sender_sees_the_receiver_go() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let (tx, rx) = reply_channel();
        let mut closed = Box::pin(tx.closed());
        assert!(closed.as_mut().poll(&mut cx).is_pending());
        drop(rx);
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(closed.as_mut().poll(&mut cx).is_ready());
        // Sending to a receiver that is gone is a no-op.
        tx.send(reply(1));
    }
}
