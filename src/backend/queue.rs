//! The channels between client sessions and backend connections: requests
//! to a connection (bounded) and replies to a session (unbounded).
//!
//! Every command crosses both, so they are kept small: one mutex around a
//! queue and the wakers (uncontended on a single-threaded runtime; held
//! for a push or a pop only), instead of tokio's lock-free list channels,
//! whose block bookkeeping, semaphore and atomic waker cost several times
//! more per message when messages come one at a time. A receiver can also
//! take everything queued under one lock ([`Receiver::drain_into`]).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::{BackendRequest, Reply};

/// The sending end of a session's reply channel.
pub type ReplySender = Sender<Reply>;
/// A session's end of its reply channel.
pub type ReplyReceiver = Receiver<Reply>;

/// A new reply channel (unbounded: a session bounds what it has in
/// flight itself).
pub fn reply_channel() -> (ReplySender, ReplyReceiver) {
    channel(usize::MAX)
}

/// A new request channel holding at most `capacity` requests.
pub fn request_channel(capacity: usize) -> (Sender<BackendRequest>, Receiver<BackendRequest>) {
    channel(capacity.max(1))
}

fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            receiver: None,
            closed_waiters: Vec::new(),
            send_waiters: Vec::new(),
            receiver_gone: false,
            senders_gone: false,
        }),
        senders: AtomicUsize::new(1),
        capacity,
    });
    (Sender(shared.clone()), Receiver(shared))
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Live [`Sender`]s; the receiver sees the end of the channel when the
    /// last one goes.
    senders: AtomicUsize,
    /// At most this many messages wait.
    capacity: usize,
}

struct State<T> {
    queue: VecDeque<T>,
    /// The receiver, waiting for a message.
    receiver: Option<Waker>,
    /// Senders waiting in [`Sender::closed`] (several private
    /// connections may wait for the same client to leave).
    closed_waiters: Vec<Waker>,
    /// Senders waiting for room in a full queue.
    send_waiters: Vec<Waker>,
    /// The receiver was dropped: messages are refused.
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

/// Why a message was not queued; it is given back.
#[derive(Debug)]
pub enum TrySendError<T> {
    /// The queue is at its capacity.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// Sends messages to one receiver; cloned for each user.
pub struct Sender<T>(Arc<Shared<T>>);

impl<T> Sender<T> {
    /// Queues `msg` if there is room and the receiver is there.
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut state = self.0.lock();
            if state.receiver_gone {
                return Err(TrySendError::Closed(msg));
            }
            if state.queue.len() >= self.0.capacity {
                return Err(TrySendError::Full(msg));
            }
            state.queue.push_back(msg);
            state.receiver.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Queues `msg`, waiting while the queue is full; gives it back if the
    /// receiver is gone.
    pub async fn send(&self, msg: T) -> Result<(), T> {
        let mut msg = Some(msg);
        std::future::poll_fn(|cx| {
            let Some(m) = msg.take() else {
                return Poll::Ready(Ok(()));
            };
            let waker = {
                let mut state = self.0.lock();
                if state.receiver_gone {
                    return Poll::Ready(Err(m));
                }
                if state.queue.len() >= self.0.capacity {
                    if !state.send_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                        state.send_waiters.push(cx.waker().clone());
                    }
                    msg = Some(m);
                    return Poll::Pending;
                }
                state.queue.push_back(m);
                state.receiver.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Resolves once the receiver is gone (for replies: the client
    /// disconnected).
    pub fn closed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut state = self.0.lock();
            if state.receiver_gone {
                return Poll::Ready(());
            }
            if !state.closed_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                state.closed_waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

impl Sender<Reply> {
    /// Delivers a reply; a session that is gone is ignored.
    pub fn send_reply(&self, reply: Reply) {
        let _ = self.try_send(reply);
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
        let (msg, waiters) = {
            let mut state = self.0.lock();
            match state.queue.pop_front() {
                Some(msg) => (msg, std::mem::take(&mut state.send_waiters)),
                None if state.senders_gone => return Poll::Ready(None),
                None => {
                    set_waker(&mut state.receiver, cx);
                    return Poll::Pending;
                }
            }
        };
        wake_all(waiters);
        Poll::Ready(Some(msg))
    }

    /// Waits for the next message (see [`Receiver::poll_recv`]).
    pub fn recv(&mut self) -> impl Future<Output = Option<T>> + '_ {
        std::future::poll_fn(move |cx| self.poll_recv(cx))
    }

    /// A message already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        let (msg, waiters) = {
            let mut state = self.0.lock();
            let msg = state.queue.pop_front()?;
            (msg, std::mem::take(&mut state.send_waiters))
        };
        wake_all(waiters);
        Some(msg)
    }

    /// Moves every queued message to the end of `out` (one lock for all).
    pub fn drain_into(&mut self, out: &mut VecDeque<T>) {
        let waiters = {
            let mut state = self.0.lock();
            if state.queue.is_empty() {
                return;
            }
            if out.is_empty() {
                // Swapped, not copied: `out` keeps the queue's buffer and
                // the queue gets `out`'s.
                std::mem::swap(&mut state.queue, out);
            } else {
                out.append(&mut state.queue);
            }
            std::mem::take(&mut state.send_waiters)
        };
        wake_all(waiters);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let (closed_waiters, send_waiters, queued, own) = {
            let mut state = self.0.lock();
            state.receiver_gone = true;
            (
                std::mem::take(&mut state.closed_waiters),
                std::mem::take(&mut state.send_waiters),
                std::mem::take(&mut state.queue),
                state.receiver.take(),
            )
        };
        // Dropped outside the lock: a reply's bytes may be the last
        // reference to a large buffer.
        drop((queued, own));
        wake_all(send_waiters);
        wake_all(closed_waiters);
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receiver")
    }
}

/// Keeps `cx`'s waker in `slot` (cloned only when it changed).
fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

fn wake_all(waiters: Vec<Waker>) {
    for waker in waiters {
        waker.wake();
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
        tx.clone().send_reply(reply(1));
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        // Not waiting any more: a second send wakes nobody.
        tx.send_reply(reply(2));
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
        tx.send_reply(reply(1));
    }

    #[test]
    fn a_full_queue_refuses_then_makes_room_for_a_waiting_sender() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = channel::<u32>(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        let mut send = Box::pin(tx.send(3));
        assert!(send.as_mut().poll(&mut cx).is_pending());
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "room wakes the sender");
        assert!(matches!(send.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        let mut all = VecDeque::new();
        rx.drain_into(&mut all);
        assert_eq!(all, VecDeque::from([2, 3]));
        drop(rx);
        assert!(matches!(tx.try_send(4), Err(TrySendError::Closed(4))));
    }
}
