//! The channel that carries backend replies to a client session.
//!
//! Every reply crosses it, so it is kept small: one mutex around a queue
//! and the receiver's waker (uncontended on a single-threaded runtime; held
//! for a push or a pop only), instead of tokio's lock-free list channel,
//! whose block bookkeeping and atomic waker cost several times more per
//! message when messages come one at a time. Requests to backend
//! connections keep tokio's bounded channel, whose semaphore hands freed
//! room to waiting senders in order.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use super::Reply;

/// The sending end of a session's reply channel.
pub type ReplySender = Sender<Reply>;
/// A session's end of its reply channel.
pub type ReplyReceiver = Receiver<Reply>;

/// A new reply channel (unbounded: a session bounds what it has in flight
/// itself).
pub fn reply_channel() -> (ReplySender, ReplyReceiver) {
    channel()
}

fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            receiver: None,
            receiver_gone: false,
            senders_gone: false,
        }),
        senders: AtomicUsize::new(1),
        closed: Notify::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Live [`Sender`]s; the receiver sees the end of the channel when the
    /// last one goes.
    senders: AtomicUsize,
    /// Wakes the senders waiting in [`Sender::closed`] when the receiver
    /// goes (a waiter that gives up leaves no trace).
    closed: Notify,
}

struct State<T> {
    queue: VecDeque<T>,
    /// The receiver, waiting for a message.
    receiver: Option<Waker>,
    /// The receiver was dropped: messages are discarded.
    receiver_gone: bool,
    /// Every sender was dropped.
    senders_gone: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock leaves the queue consistent
        // (every critical section is a push, a pop or a flag).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Sends messages to one receiver; cloned for each user.
pub struct Sender<T>(Arc<Shared<T>>);

impl<T> Sender<T> {
    /// Queues `msg`; a receiver that is gone is ignored.
    pub fn send(&self, msg: T) {
        let waker = {
            let mut state = self.0.lock();
            if state.receiver_gone {
                return;
            }
            state.queue.push_back(msg);
            state.receiver.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Resolves once the receiver is gone (the client disconnected).
    pub async fn closed(&self) {
        loop {
            let notified = self.0.closed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a receiver dropped in between
            // still wakes this waiter.
            notified.as_mut().enable();
            if self.0.lock().receiver_gone {
                return;
            }
            notified.await;
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
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

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sender")
    }
}

/// The receiving end.
pub struct Receiver<T>(Arc<Shared<T>>);

impl<T> Receiver<T> {
    /// The next message; `None` once it is empty and every sender is gone.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.0.lock();
        if let Some(msg) = state.queue.pop_front() {
            return Poll::Ready(Some(msg));
        }
        if state.senders_gone {
            return Poll::Ready(None);
        }
        match &state.receiver {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.receiver = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Waits for the next message (see [`Receiver::poll_recv`]).
    pub fn recv(&mut self) -> impl Future<Output = Option<T>> + '_ {
        std::future::poll_fn(move |cx| self.poll_recv(cx))
    }

    /// A message already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        self.0.lock().queue.pop_front()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let (queued, own) = {
            let mut state = self.0.lock();
            state.receiver_gone = true;
            (std::mem::take(&mut state.queue), state.receiver.take())
        };
        // Dropped outside the lock: a reply's bytes may be the last
        // reference to a large buffer.
        drop((queued, own));
        self.0.closed.notify_waiters();
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receiver")
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
    fn every_sender_waiting_sees_the_receiver_go() {
        // Two private connections of one client, each its own task.
        let counts: Vec<Arc<Count>> = (0..2)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        let wakers: Vec<Waker> = counts.iter().map(|c| Waker::from(c.clone())).collect();
        let (tx, rx) = reply_channel();
        let other = tx.clone();
        let mut closed = Box::pin(tx.closed());
        let mut other_closed = Box::pin(other.closed());
        assert!(closed
            .as_mut()
            .poll(&mut Context::from_waker(&wakers[0]))
            .is_pending());
        assert!(other_closed
            .as_mut()
            .poll(&mut Context::from_waker(&wakers[1]))
            .is_pending());
        drop(rx);
        for c in &counts {
            assert_eq!(c.0.load(Ordering::Relaxed), 1);
        }
        assert!(closed
            .as_mut()
            .poll(&mut Context::from_waker(&wakers[0]))
            .is_ready());
        assert!(other_closed
            .as_mut()
            .poll(&mut Context::from_waker(&wakers[1]))
            .is_ready());
        // Sending to a receiver that is gone is a no-op.
        tx.send(reply(1));
    }
}
