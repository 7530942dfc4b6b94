//! One pipelined connection to a Redis node, shared by many clients.
//!
//! A single task owns the socket. Requests arrive on a bounded channel; the
//! task drains everything that is queued into one write buffer (so commands
//! of many clients leave in one syscall), remembers where each reply goes in
//! an in-flight queue, and matches reply frames to it in order. It connects
//! lazily on the first request and reconnects after a failure; requests that
//! could not be sent are failed at once (never left hanging) and marked
//! [`ReplyStatus::NotSent`] so the caller may retry them safely.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::{BackendRequest, ReplyStatus, ReplyTo};
use crate::protocol::reply::{self, Proto};
use crate::protocol::scan::{reply_kind, FrameScanner, ReplyKind};

/// `*1\r\n$6\r\nASKING\r\n`
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// Turns tracking on for a connection's reads that opt in (see
/// [`crate::tracking`]).
const TRACKING_ON: &[u8] = b"*4\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\nON\r\n$5\r\nOPTIN\r\n";
/// Tracks the keys of the command that follows.
const CACHING_YES: &[u8] = b"*3\r\n$6\r\nCLIENT\r\n$7\r\nCACHING\r\n$3\r\nYES\r\n";
/// Written first on a private connection for a blocking command: its id
/// on the node, for `CLIENT UNBLOCK`.
const CLIENT_ID: &[u8] = b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n";
/// Stop draining the queue into the write buffer beyond this many bytes.
const MAX_WRITE_BATCH: usize = 256 * 1024;
/// Initial read buffer size; grows for large replies.
const READ_CHUNK: usize = 16 * 1024;

/// Settings shared by all backend connections.
pub struct ConnOptions {
    /// Time allowed for TCP connect plus handshake.
    pub connect_timeout: Duration,
    /// Backend ACL user name (`AUTH user pass`), if any.
    pub username: Option<String>,
    /// Backend password, if any.
    pub password: Option<String>,
    /// Requests queued per connection before senders wait.
    pub queue_depth: usize,
    /// Called when a connection to a node fails (to trigger a topology refresh).
    pub on_failure: Box<dyn Fn(&str) + Send + Sync>,
    /// TLS settings; their backend side is read at every connect, so
    /// reloaded certificates apply to new connections.
    pub tls: Arc<crate::tls::TlsState>,
    /// A shared connection that answers nothing for this long while
    /// requests wait is dropped and reopened.
    pub request_timeout: Option<Duration>,
    /// Client commands proxy-wide whose replies are not written yet. A
    /// connection woken by the only one skips the yield that lets other
    /// clients' commands join its write: there is nobody to wait for.
    pub commands_in_flight: Arc<AtomicI64>,
    /// Who read which key, for `CLIENT TRACKING` clients: told about the
    /// servers' `invalidate` pushes and about lost tracking connections.
    pub tracker: Arc<crate::tracking::Tracker>,
    /// The nodes' invalidation inboxes, which RESP2 connections redirect
    /// their tracking to.
    pub inboxes: super::inbox::Inboxes,
}

/// A shared connection's tracking (see [`crate::tracking`]).
#[derive(Debug, Default)]
struct TrackState<'a> {
    /// Tracking is on, redirected to this inbox id (0: to itself).
    on: Option<u64>,
    /// For a RESP2 connection: the inboxes and its node's address.
    inbox: Option<(&'a super::inbox::Inboxes, &'a str)>,
}

impl std::fmt::Debug for ConnOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("queue_depth", &self.queue_depth)
            .finish()
    }
}

/// Handle to one backend connection task; cheap to share.
#[derive(Debug, Clone)]
pub struct BackendConn {
    tx: mpsc::Sender<BackendRequest>,
}

impl BackendConn {
    /// Starts the connection task for `addr` (`host:port`); it connects on
    /// the first request. `readonly` sends `READONLY` (for replicas).
    pub fn spawn(addr: Arc<str>, opts: Arc<ConnOptions>, proto: Proto, readonly: bool) -> Self {
        let (tx, rx) = mpsc::channel(opts.queue_depth.max(1));
        tokio::spawn(run(addr, opts, proto, readonly, rx, None, None));
        BackendConn { tx }
    }

    /// Starts a private connection for blocking commands. It closes once
    /// the handle is dropped and the reply is delivered, or as soon as the
    /// client that waits for the reply goes away; `permit` (from the
    /// bounded pool of blocking connections) is held until then. Without
    /// a permit (a `SCRIPT KILL`, which must get through when the pool is
    /// full), the request timeout applies.
    ///
    /// With `server_id`, the connection asks the node for its id first and
    /// stores it there (0 until then, -1 once the connection is closed or
    /// if the node refused), so that `CLIENT UNBLOCK` can name it.
    pub fn spawn_dedicated(
        addr: Arc<str>,
        opts: Arc<ConnOptions>,
        proto: Proto,
        permit: Option<OwnedSemaphorePermit>,
        server_id: Option<Arc<AtomicI64>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            run(addr, opts, proto, false, rx, permit, server_id.as_deref()).await;
            if let Some(id) = server_id {
                id.store(-1, Ordering::Release);
            }
        });
        BackendConn { tx }
    }

    /// Whether its task is gone (a private connection whose client left).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Queues a request if the queue has room, else gives it back. If the
    /// task is gone the request is answered with an error at once.
    pub fn try_send(&self, req: BackendRequest) -> Result<(), BackendRequest> {
        match self.tx.try_send(req) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(req)) => Err(req),
            Err(mpsc::error::TrySendError::Closed(req)) => {
                answer_closed(req);
                Ok(())
            }
        }
    }

    /// Queues a request, waiting while the queue is full. If the task is
    /// gone the request is answered with an error at once.
    pub async fn send(&self, req: BackendRequest) {
        let Err(req) = self.try_send(req) else {
            return;
        };
        if let Err(mpsc::error::SendError(req)) = self.tx.send(req).await {
            answer_closed(req);
        }
    }
}

/// Fails a request whose connection task is gone (it was never sent).
fn answer_closed(req: BackendRequest) {
    req.reply_to.send(
        reply::error("ERR slotbridge: backend connection closed"),
        ReplyStatus::NotSent,
    );
}

async fn run(
    addr: Arc<str>,
    opts: Arc<ConnOptions>,
    proto: Proto,
    readonly: bool,
    mut rx: mpsc::Receiver<BackendRequest>,
    _permit: Option<OwnedSemaphorePermit>,
    server_id: Option<&AtomicI64>,
) {
    let mut failures: u32 = 0;
    while let Some(first) = rx.recv().await {
        let connected =
            tokio::time::timeout(opts.connect_timeout, connect(&addr, &opts, proto, readonly))
                .await
                .unwrap_or_else(|_| Err("connect timed out".to_string()));
        let stream = match connected {
            Ok(stream) => stream,
            Err(why) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(node = %addr, error = %why, failures, "backend connect failed");
                }
                (opts.on_failure)(&addr);
                metrics::counter!(crate::metrics::BACKEND_ERRORS, "node" => addr.to_string(), "kind" => "connect").increment(1);
                let msg = reply::error(&format!("ERR slotbridge: node {addr} unreachable: {why}"));
                first.reply_to.send(msg.clone(), ReplyStatus::NotSent);
                while let Ok(req) = rx.try_recv() {
                    req.reply_to.send(msg.clone(), ReplyStatus::NotSent);
                }
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(node = %addr, "backend reconnected");
        }
        failures = 0;
        metrics::counter!(crate::metrics::BACKEND_CONNECTS, "node" => addr.to_string())
            .increment(1);
        tracing::debug!(node = %addr, ?proto, "backend connected");
        let mut inflight = VecDeque::new();
        // Private connections wait as long as their blocking command does.
        let timeout = if _permit.is_some() {
            None
        } else {
            opts.request_timeout
        };
        let mut tracking = TrackState {
            on: None,
            inbox: (proto == Proto::Resp2).then(|| (&opts.inboxes, &*addr)),
        };
        let link = Link {
            rx: &mut rx,
            inflight: &mut inflight,
            timeout,
            commands_in_flight: &opts.commands_in_flight,
            tracker: &opts.tracker,
            tracking: &mut tracking,
            server_id,
        };
        let result = match stream {
            BackendStream::Tcp(mut tcp) => {
                let (rd, wr) = tcp.split();
                serve(rd, wr, first, link).await
            }
            BackendStream::Tls(tls) => {
                let (rd, wr) = tokio::io::split(*tls);
                serve(rd, wr, first, link).await
            }
        };
        if tracking.on.is_some() {
            // The server forgets what this connection tracked, and will
            // not say when those keys change: the tracking clients flush.
            opts.tracker.invalidate_all();
        }
        match result {
            Ok(()) => return,
            Err(why) => {
                tracing::warn!(node = %addr, error = %why, inflight = inflight.len(), "backend connection lost");
                (opts.on_failure)(&addr);
                let kind = if why.starts_with("no reply within") {
                    "timeout"
                } else {
                    "lost"
                };
                metrics::counter!(crate::metrics::BACKEND_ERRORS, "node" => addr.to_string(), "kind" => kind).increment(1);
                let msg = reply::error(&format!(
                    "ERR slotbridge: connection to node {addr} lost before the reply: {why}"
                ));
                fail_inflight(&mut inflight, &msg);
            }
        }
    }
}

/// A connection to a node, plain or TLS.
pub enum BackendStream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            BackendStream::Tls(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            BackendStream::Tls(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            BackendStream::Tls(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Connects to `addr` (TLS when configured) and runs the handshake:
/// `HELLO 3` for RESP3 connections, `AUTH` with the backend credentials,
/// `READONLY` for replica connections.
pub(crate) async fn connect(
    addr: &str,
    opts: &ConnOptions,
    proto: Proto,
    readonly: bool,
) -> Result<BackendStream, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut stream = match opts.tls.backend() {
        None => BackendStream::Tcp(tcp),
        Some(tls) => {
            let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
            let name = tls.name_for(host)?;
            let stream = tls
                .connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            BackendStream::Tls(Box::new(stream))
        }
    };
    let mut hello: Vec<Bytes> = Vec::new();
    match (proto, &opts.password) {
        (Proto::Resp3, Some(pass)) => {
            let user = opts.username.as_deref().unwrap_or("default");
            hello.push(reply::command(["HELLO", "3", "AUTH", user, pass]));
        }
        (Proto::Resp3, None) => hello.push(reply::command(["HELLO", "3"])),
        (Proto::Resp2, Some(pass)) => match &opts.username {
            Some(user) => hello.push(reply::command(["AUTH", user.as_str(), pass])),
            None => hello.push(reply::command(["AUTH", pass.as_str()])),
        },
        (Proto::Resp2, None) => {}
    }
    if readonly {
        hello.push(reply::command(["READONLY"]));
    }
    if hello.is_empty() {
        return Ok(stream);
    }
    for cmd in &hello {
        stream.write_all(cmd).await.map_err(|e| e.to_string())?;
    }
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut scanner = FrameScanner::new();
    for _ in 0..hello.len() {
        loop {
            if let Some(n) = scanner.scan(&buf).map_err(|e| e.to_string())? {
                let frame = buf.split_to(n);
                if reply_kind(frame[0]) == ReplyKind::Error {
                    let text = String::from_utf8_lossy(&frame[1..frame.len() - 2]).into_owned();
                    return Err(format!("handshake refused: {text}"));
                }
                break;
            }
            if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("connection closed during handshake".into());
            }
        }
    }
    Ok(stream)
}

/// A request written to the server and not yet fully answered.
#[derive(Debug)]
struct Inflight {
    target: ReplyTo,
    /// Replies still to discard before the one delivered.
    skip: u32,
    /// The first redirection seen among the discarded replies.
    redirect: Option<Bytes>,
    /// Replicas a trailing `WAIT` asks for (0: no WAIT follows).
    wait_for: u32,
    /// The reply held back until the trailing `WAIT` has answered.
    held: Option<Bytes>,
    /// When it was queued for writing (for the request timeout).
    queued_at: tokio::time::Instant,
    /// Reply frames it is answered with, delivered together.
    replies: u32,
    /// When the connection failed partway through its replies: those
    /// that arrived (delivered ahead of the error).
    answered: Option<Bytes>,
    /// How many of the replies to discard, first, answer the proxy's own
    /// `CLIENT TRACKING ON` / `CLIENT CACHING YES` of a tracked read.
    own: u8,
    /// One of those failed: its error is delivered instead of the reply,
    /// which the client would otherwise cache untracked.
    own_failed: bool,
}

/// The complete reply frames of the oldest request that are still in the
/// read buffer, waiting for the rest of its replies.
#[derive(Debug, Default)]
struct Partial {
    /// Their length in bytes, from the start of the buffer.
    len: usize,
    /// How many.
    frames: u32,
    /// Where each ends.
    ends: Vec<usize>,
}

/// What a connection's serving loop works with besides its socket.
struct Link<'a, 'b> {
    /// Requests to write.
    rx: &'a mut mpsc::Receiver<BackendRequest>,
    /// Requests written and not yet answered.
    inflight: &'a mut VecDeque<Inflight>,
    /// How long the oldest request may wait for its reply (None: forever).
    timeout: Option<Duration>,
    /// Client commands in flight proxy-wide (see [`ConnOptions`]).
    commands_in_flight: &'a AtomicI64,
    /// Told about `invalidate` pushes.
    tracker: &'a crate::tracking::Tracker,
    /// Whether the connection has turned tracking on, and where to.
    tracking: &'a mut TrackState<'b>,
    /// Where to store the connection's id on the node (asked first).
    server_id: Option<&'a AtomicI64>,
}

/// Runs one established connection until the request channel closes (Ok)
/// or the socket fails (Err). `link.inflight` holds the requests that were
/// written but not yet answered.
async fn serve<R, W>(
    mut rd: R,
    mut wr: W,
    first: BackendRequest,
    link: Link<'_, '_>,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Link {
        rx,
        inflight,
        timeout,
        commands_in_flight,
        tracker,
        tracking,
        server_id,
    } = link;
    let mut wbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut scanner = FrameScanner::new();
    let mut partial = Partial::default();
    let mut open = true;
    let mut now = tokio::time::Instant::now();
    let mut id_due = server_id;
    if id_due.is_some() {
        wbuf.extend_from_slice(CLIENT_ID);
    }
    enqueue(first, &mut wbuf, inflight, now, tracking);
    let mut woke = true;
    let result: Result<(), String> = async {
        loop {
            if woke && commands_in_flight.load(Ordering::Relaxed) > 1 {
                // Let the other clients that are ready in this tick queue their
                // commands too, so they leave in the same write.
                tokio::task::yield_now().await;
            }
            woke = false;
            now = tokio::time::Instant::now();
            while open && wbuf.len() < MAX_WRITE_BATCH {
                match rx.try_recv() {
                    Ok(req) => enqueue(req, &mut wbuf, inflight, now, tracking),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => open = false,
                }
            }
            if !open && inflight.is_empty() && wbuf.is_empty() {
                return Ok(());
            }
            if rbuf.capacity() - rbuf.len() < READ_CHUNK {
                // Room for a whole batch of replies: a read that fills the
                // buffer costs a second read.
                rbuf.reserve(2 * READ_CHUNK);
            }
            tokio::select! {
                biased;
                n = wr.write_buf(&mut wbuf), if !wbuf.is_empty() => {
                    if n.map_err(|e| e.to_string())? == 0 {
                        return Err("write returned 0".into());
                    }
                    if wbuf.is_empty() {
                        // TLS buffers records until flushed; TCP flush is free.
                        wr.flush().await.map_err(|e| e.to_string())?;
                    }
                }
                n = rd.read_buf(&mut rbuf) => {
                    if n.map_err(|e| e.to_string())? == 0 {
                        return Err("closed by server".into());
                    }
                    if let Some(slot) = id_due {
                        // The first reply, one line: `:id` (or an error).
                        let Some(end) = memchr::memmem::find(&rbuf, b"\r\n") else {
                            continue;
                        };
                        let line = rbuf.split_to(end + 2);
                        let id = std::str::from_utf8(&line[..end])
                            .ok()
                            .and_then(|l| l.strip_prefix(':'))
                            .and_then(|l| l.parse::<i64>().ok())
                            .unwrap_or(-1);
                        slot.store(id, Ordering::Release);
                        id_due = None;
                    }
                    dispatch_replies(&mut rbuf, &mut scanner, &mut partial, inflight, tracker, tracking)?;
                }
                req = rx.recv(), if open && wbuf.is_empty() => match req {
                    Some(req) => {
                        enqueue(req, &mut wbuf, inflight, tokio::time::Instant::now(), tracking);
                        woke = true;
                    }
                    None => open = false,
                },
                _ = request_timer(inflight, timeout) => {
                    return Err(format!("no reply within {:?}", timeout.unwrap_or_default()));
                }
                _ = waiting_client_gone(inflight), if !open => {
                    // A private connection whose client disconnected: closing it
                    // ends the blocking command on the server.
                    return Ok(());
                }
            }
        }
    }
    .await;
    if result.is_err() && partial.frames > 0 {
        // The replies the server sent before failing belong to the
        // commands they answer; only the rest are lost.
        if let Some(head) = inflight.front_mut() {
            head.answered = Some(rbuf.split_to(partial.len).freeze());
        }
    }
    result
}

/// Answers every request written to a connection that failed with `msg`
/// (status [`ReplyStatus::Lost`]). A request of several commands whose
/// first replies had arrived gets those, then `msg` for the rest.
fn fail_inflight(inflight: &mut VecDeque<Inflight>, msg: &Bytes) {
    for entry in inflight.drain(..) {
        let data = match entry.answered {
            Some(answered) => {
                let mut data = BytesMut::with_capacity(answered.len() + msg.len());
                data.extend_from_slice(&answered);
                data.extend_from_slice(msg);
                data.freeze()
            }
            None => msg.clone(),
        };
        entry.target.send(data, ReplyStatus::Lost);
    }
}

/// Resolves when the client waiting for the oldest in-flight reply is gone.
async fn waiting_client_gone(inflight: &VecDeque<Inflight>) {
    match inflight.front() {
        Some(entry) => entry.target.tx.closed().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the oldest request has waited longer than `timeout`.
async fn request_timer(inflight: &VecDeque<Inflight>, timeout: Option<Duration>) {
    match (inflight.front(), timeout) {
        (Some(entry), Some(t)) => tokio::time::sleep_until(entry.queued_at + t).await,
        _ => std::future::pending().await,
    }
}

fn enqueue(
    req: BackendRequest,
    wbuf: &mut BytesMut,
    inflight: &mut VecDeque<Inflight>,
    now: tokio::time::Instant,
    tracking: &mut TrackState<'_>,
) {
    let mut skip = req.skip;
    if req.asking {
        wbuf.extend_from_slice(ASKING);
        skip += 1;
    }
    // ASKING and CACHING each hold for the next command only: a command
    // cannot have both (the session never asks for it).
    let mut own = 0;
    if req.caching && !req.asking {
        // A RESP2 connection redirects to its node's inbox. Without one (the
        // session saw it connected, and it was lost since) the read could
        // not be tracked: it fails rather than be cached untracked.
        let to = match tracking.inbox.map(|(inboxes, addr)| inboxes.id(addr)) {
            Some(0) => {
                req.reply_to.send(
                    reply::error("ERR slotbridge: the node's invalidation connection for client-side caching is reconnecting; retry"),
                    ReplyStatus::NotSent,
                );
                return;
            }
            Some(id) => id,
            None => 0,
        };
        if tracking.on != Some(to) {
            if to == 0 {
                wbuf.extend_from_slice(TRACKING_ON);
            } else {
                let id = to.to_string();
                let on = ["CLIENT", "TRACKING", "ON", "OPTIN", "REDIRECT", &id];
                wbuf.extend_from_slice(&reply::command(on));
            }
            own += 1;
            tracking.on = Some(to);
        }
        wbuf.extend_from_slice(CACHING_YES);
        own += 1;
    }
    skip += u32::from(own);
    wbuf.extend_from_slice(&req.payload);
    let mut wait_for = 0;
    if let Some(wait) = &req.then_wait {
        wbuf.extend_from_slice(&wait.command);
        wait_for = wait.replicas.max(1);
    }
    inflight.push_back(Inflight {
        target: req.reply_to,
        skip,
        redirect: None,
        wait_for,
        held: None,
        queued_at: now,
        replies: req.replies.max(1),
        answered: None,
        own,
        own_failed: false,
    });
}

fn is_redirect(frame: &[u8]) -> bool {
    frame.starts_with(b"-MOVED ") || frame.starts_with(b"-ASK ") || frame.starts_with(b"-TRYAGAIN")
}

/// Counts a trailing `WAIT` that reached fewer replicas than asked for
/// (or failed): the write is acknowledged anyway, as Redis would (it ran),
/// but may be lost if its master fails before replicating it.
fn note_wait_reply(frame: &[u8], wanted: u32) {
    let reached = frame
        .strip_prefix(b":")
        .and_then(|rest| rest.strip_suffix(b"\r\n"))
        .and_then(|digits| std::str::from_utf8(digits).ok())
        .and_then(|digits| digits.parse::<u32>().ok());
    if reached.is_none_or(|n| n < wanted) {
        metrics::counter!(crate::metrics::WRITE_WAIT_SHORT).increment(1);
    }
}

fn dispatch_replies(
    rbuf: &mut BytesMut,
    scanner: &mut FrameScanner,
    partial: &mut Partial,
    inflight: &mut VecDeque<Inflight>,
    tracker: &crate::tracking::Tracker,
    tracking: &mut TrackState<'_>,
) -> Result<(), String> {
    while let Some(n) = scanner
        .scan(rbuf.get(partial.len..).unwrap_or_default())
        .map_err(|e| e.to_string())?
    {
        if rbuf.get(partial.len).copied().map(reply_kind) == Some(ReplyKind::Push) {
            // Out-of-band RESP3 push, even between the frames of one
            // request: an invalidation goes to the tracker, anything else
            // is unexpected on a shared connection. Cut out either way.
            let push = rbuf.get(partial.len..partial.len + n).unwrap_or_default();
            match crate::tracking::parse_push(push) {
                Some(crate::tracking::Invalidation::Keys(keys)) => tracker.invalidate(&keys),
                Some(crate::tracking::Invalidation::All) => tracker.invalidate_all(),
                None => tracing::debug!("dropping unexpected push frame from backend"),
            }
            let mut rest = rbuf.split_off(partial.len);
            rest.advance(n);
            rbuf.unsplit(rest);
            continue;
        }
        let Some(head) = inflight.front_mut() else {
            return Err("reply without a request".into());
        };
        if head.replies > 1 {
            // Several commands answered together, once all have answered.
            if partial.ends.capacity() == 0 {
                partial.ends.reserve_exact(head.replies as usize);
            }
            partial.len += n;
            partial.frames += 1;
            partial.ends.push(partial.len);
            if partial.frames < head.replies {
                continue;
            }
            let data = rbuf.split_to(partial.len).freeze();
            let ends = std::mem::take(&mut partial.ends);
            *partial = Partial::default();
            if let Some(entry) = inflight.pop_front() {
                entry.target.send_frames(data, ReplyStatus::Answered, ends);
            }
            continue;
        }
        let frame = rbuf.split_to(n).freeze();
        if head.skip > 0 {
            head.skip -= 1;
            if head.own > 0 {
                head.own -= 1;
                if reply_kind(frame[0]) == ReplyKind::Error && !head.own_failed {
                    // Tracking is not on for this connection after all:
                    // the next tracked read asks again.
                    tracking.on = None;
                    head.own_failed = true;
                    head.redirect = Some(frame);
                }
                continue;
            }
            if head.redirect.is_none() && is_redirect(&frame) {
                head.redirect = Some(frame);
            }
            continue;
        }
        if head.wait_for > 0 {
            if head.held.is_none() {
                // The command's own reply: hold it until WAIT answers.
                head.held = Some(frame);
                continue;
            }
            note_wait_reply(&frame, head.wait_for);
        }
        let Some(entry) = inflight.pop_front() else {
            return Err("reply without a request".into());
        };
        let frame = entry.held.unwrap_or(frame);
        let frame = match entry.redirect {
            Some(redirect) if entry.own_failed || reply_kind(frame[0]) == ReplyKind::Error => {
                redirect
            }
            _ => frame,
        };
        entry.target.send(frame, ReplyStatus::Answered);
    }
    if rbuf.capacity() > 4 * 1024 * 1024 && rbuf.is_empty() {
        *rbuf = BytesMut::with_capacity(READ_CHUNK);
    }
    Ok(())
}

/// Sends one command on a fresh connection and returns the reply frame (used
/// for topology discovery, where a shared connection is not wanted).
pub async fn oneshot(addr: &str, opts: &ConnOptions, cmd: &[u8]) -> Result<Bytes, String> {
    let work = async {
        let mut stream = connect(addr, opts, Proto::Resp2, false).await?;
        stream.write_all(cmd).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        read_frame(&mut stream).await
    };
    tokio::time::timeout(opts.connect_timeout * 2, work)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Bytes, String> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut scanner = FrameScanner::new();
    loop {
        if let Some(n) = scanner.scan(&buf).map_err(|e| e.to_string())? {
            return Ok(buf.split_to(n).freeze());
        }
        if r.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tx: &super::super::ReplySender, part: u32, replies: u32) -> Inflight {
        Inflight {
            target: ReplyTo {
                tx: tx.clone(),
                seq: 7,
                part,
            },
            skip: 0,
            redirect: None,
            wait_for: 0,
            held: None,
            queued_at: tokio::time::Instant::now(),
            replies,
            answered: None,
            own: 0,
            own_failed: false,
        }
    }

    #[tokio::test]
    async fn a_failure_keeps_the_replies_that_arrived() {
        let (client, mut server) = tokio::io::duplex(4096);
        let (rd, wr) = tokio::io::split(client);
        let (tx, mut replies) = super::super::reply_channel();
        let (_requests, mut rx) = mpsc::channel(8);
        let first = BackendRequest {
            payload: Bytes::from_static(
                b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n",
            ),
            asking: false,
            skip: 0,
            then_wait: None,
            caching: false,
            replies: 3,
            reply_to: ReplyTo {
                tx,
                seq: 1,
                part: 0,
            },
        };
        let mut inflight = VecDeque::new();
        let counter = AtomicI64::new(0);
        let tracker = crate::tracking::Tracker::new(0);
        let mut tracking = TrackState::default();
        let link = Link {
            rx: &mut rx,
            inflight: &mut inflight,
            timeout: None,
            commands_in_flight: &counter,
            tracker: &tracker,
            tracking: &mut tracking,
            server_id: None,
        };
        let serving = serve(rd, wr, first, link);
        let server_side = async {
            let mut request = [0u8; 64];
            let _ = tokio::io::AsyncReadExt::read(&mut server, &mut request).await;
            // Two of the three replies, then the connection drops.
            server.write_all(b"+PONG\r\n+PONG\r\n").await.unwrap();
            drop(server);
        };
        let (result, ()) = tokio::join!(serving, server_side);
        assert_eq!(result, Err("closed by server".to_string()));
        fail_inflight(&mut inflight, &reply::error("ERR lost"));
        let r = replies.try_recv().unwrap();
        assert_eq!(&r.data[..], b"+PONG\r\n+PONG\r\n-ERR lost\r\n");
        assert_eq!(r.status, ReplyStatus::Lost);
        assert!(replies.try_recv().is_none());
    }

    #[test]
    fn replies_of_one_request_are_delivered_together() {
        let (tx, mut rx) = super::super::reply_channel();
        let mut inflight = VecDeque::from([entry(&tx, 0, 3), entry(&tx, 3, 1)]);
        let mut scanner = FrameScanner::new();
        let mut partial = Partial::default();
        let mut rbuf = BytesMut::new();
        // The three frames of the first request arrive over three reads,
        // with an out-of-band push between two of them.
        let reads: [&[u8]; 4] = [
            b"*1\r\n$1\r\na\r\n$-",
            b"1\r\n>2\r\n$4\r\npush\r\n$1\r\nx\r\n",
            b":5\r\n+OK",
            b"\r\n",
        ];
        for (i, read) in reads.iter().enumerate() {
            rbuf.extend_from_slice(read);
            let tracker = crate::tracking::Tracker::new(0);
            dispatch_replies(
                &mut rbuf,
                &mut scanner,
                &mut partial,
                &mut inflight,
                &tracker,
                &mut TrackState::default(),
            )
            .unwrap();
            if i < 2 {
                assert!(rx.try_recv().is_none(), "nothing before the third frame");
            }
            if i == 2 {
                let r = rx.try_recv().unwrap();
                assert_eq!(r.part, 0);
                assert_eq!(&r.data[..], b"*1\r\n$1\r\na\r\n$-1\r\n:5\r\n");
                assert!(rx.try_recv().is_none(), "+OK is not complete yet");
            }
        }
        let r = rx.try_recv().unwrap();
        assert_eq!((r.part, &r.data[..]), (3, &b"+OK\r\n"[..]));
        assert!(inflight.is_empty() && rbuf.is_empty());
    }
}
