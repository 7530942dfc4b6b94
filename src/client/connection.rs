//! A client connection's task: waits cheaply while the client is quiet and
//! runs its session while it is not.
//!
//! Most connections of a pool are idle most of the time, so what an idle
//! connection costs is what the proxy costs at 10,000 clients. The task is
//! therefore a small hand-written state machine instead of an `async fn`
//! (whose state would keep every await point's locals, and copies of its
//! arguments): while resting it holds the socket, who the client is and an
//! optional idle timer, and waits for the socket to become readable. Only
//! then is the session built and its (large) serving future boxed; when the
//! client has been quiet for a while the future hands the socket and the
//! session back and is freed.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::local::ClientState;
use super::registry::ClientInfo;
use super::session::{Exit, Session};
use crate::metrics as m;
use crate::server::Context;

/// A client connection, plain or TLS.
pub enum ClientStream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl ClientStream {
    fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            ClientStream::Tcp(s) => s.local_addr().ok(),
            ClientStream::Tls(s) => s.get_ref().0.local_addr().ok(),
        }
    }
}

/// A quiet session, waiting for its client's next bytes.
pub(super) enum Resting {
    /// A plain client (no transaction, `WATCH` or subscription): only who
    /// it is (and its next reply number) is kept; the rest of the session
    /// is built again when it sends its next command. This is what most
    /// idle connections are, so it is what an idle connection costs.
    Compact(ClientState, u64),
    /// Any other: kept whole, minus its buffers.
    Whole(Box<Session>),
}

impl Resting {
    /// The session, ready for commands.
    fn wake(self, ctx: &Arc<Context>) -> Box<Session> {
        match self {
            Resting::Compact(client, base_seq) => {
                Box::new(Session::with_client(ctx.clone(), client, base_seq))
            }
            Resting::Whole(session) => session,
        }
    }

    fn info(&self) -> &ClientInfo {
        match self {
            Resting::Compact(client, _) => &client.info,
            Resting::Whole(session) => session.info(),
        }
    }

    /// Whether the client takes notices: invalidations (`CLIENT
    /// TRACKING`), or a change of its user's rules (a subscriber).
    fn takes_notices(&self) -> bool {
        match self {
            Resting::Compact(client, _) => client.tracking.on || client.info.receives(),
            Resting::Whole(session) => session.takes_notices(),
        }
    }
}

/// What the serving future hands back when it ends.
struct Served {
    exit: std::io::Result<Exit>,
    stream: ClientStream,
    session: Box<Session>,
    last_active: Instant,
}

/// The serving future: owns the socket and the session while it runs.
type Serving = Pin<Box<dyn Future<Output = Served> + Send>>;

/// Where a connection is.
enum State {
    /// Quiet: waiting for bytes, the idle timeout or the proxy's shutdown.
    Resting {
        stream: ClientStream,
        client: Resting,
        /// The idle timeout, boxed: it is larger than the rest of this
        /// state, and most deployments never set one.
        idle: Option<Pin<Box<Sleep>>>,
    },
    /// Serving commands.
    Active(Serving),
    /// Ended (or in between two states).
    Done,
}

/// Why a resting client woke up.
enum Woke {
    /// It sent bytes (those already read, for TLS).
    Input(BytesMut),
    /// The connection is over.
    Close(std::io::Result<()>),
}

/// One client connection, from accept to close: spawn it as the client's
/// task.
pub struct Connection {
    ctx: Arc<Context>,
    /// The client's id, for the registry.
    id: u64,
    state: State,
    /// The last read from or write to the client (Redis's "last
    /// interaction", which its idle timeout counts from).
    last_active: Instant,
}

impl Connection {
    /// Registers a new client connection (counters, `CLIENT LIST`).
    pub fn new(stream: ClientStream, peer: SocketAddr, ctx: Arc<Context>) -> Self {
        ctx.stats.connected_clients.fetch_add(1, Ordering::Relaxed);
        ctx.stats.total_connections.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::CLIENT_CONNECTIONS_TOTAL).increment(1);
        let info = Arc::new(ClientInfo::new(
            ctx.next_client_id(),
            peer,
            stream.local_addr(),
        ));
        let id = info.id;
        ctx.clients.add(info.clone());
        tracing::debug!(client = %peer, "client connected");
        let client = Resting::Compact(ClientState::connected(info, &ctx), 0);
        let mut conn = Connection {
            ctx,
            id,
            state: State::Done,
            last_active: Instant::now(),
        };
        conn.rest(stream, client);
        conn
    }

    /// Enters the resting state.
    fn rest(&mut self, stream: ClientStream, client: Resting) {
        let idle = Duration::from_millis(self.ctx.config().limits.client_idle_timeout_ms);
        let idle =
            (!idle.is_zero()).then(|| Box::pin(tokio::time::sleep_until(self.last_active + idle)));
        self.state = State::Resting {
            stream,
            client,
            idle,
        };
    }

    /// Waits, resting, for the client's next bytes.
    fn poll_rest(&mut self, cx: &mut TaskContext<'_>) -> Poll<Woke> {
        let State::Resting {
            stream,
            client,
            idle,
        } = &mut self.state
        else {
            return Poll::Ready(Woke::Close(Ok(())));
        };
        // Registered before the check, so a drain that starts in between
        // still wakes this task.
        client.info().set_shutdown_waker(cx.waker());
        if client.info().is_killed() {
            return Poll::Ready(Woke::Close(Ok(())));
        }
        if client.info().has_notice() && !client.takes_notices() {
            // A notice that raced with CLIENT TRACKING OFF: nothing to do.
            client.info().take_notice();
        }
        if self.ctx.is_draining() || client.info().has_notice() {
            // Draining: nothing is in flight, so the client is done. The
            // session closes the connection properly (a TLS close_notify).
            // Or the tracker has invalidations for the session to write.
            return Poll::Ready(Woke::Input(BytesMut::new()));
        }
        if let Some(timer) = idle {
            if timer.as_mut().poll(cx).is_ready() {
                tracing::debug!(client = %client.info().peer, "idle client timeout");
                return Poll::Ready(Woke::Close(Ok(())));
            }
        }
        match stream {
            // Readiness only: the session reads with its own buffer. A
            // closed connection reads as zero bytes there.
            ClientStream::Tcp(tcp) => match tcp.poll_read_ready(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(())) => Poll::Ready(Woke::Input(BytesMut::new())),
                Poll::Ready(Err(e)) => Poll::Ready(Woke::Close(Err(e))),
            },
            // A read: the TLS layer may hold decrypted bytes already, which
            // no socket readiness would announce.
            ClientStream::Tls(tls) => {
                let mut first = [0u8; 64];
                let mut buf = ReadBuf::new(&mut first);
                match Pin::new(tls).poll_read(cx, &mut buf) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                        Poll::Ready(Woke::Close(Ok(())))
                    }
                    Poll::Ready(Ok(())) => {
                        m::count_bytes_in(buf.filled().len());
                        Poll::Ready(Woke::Input(BytesMut::from(buf.filled())))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Woke::Close(Err(e))),
                }
            }
        }
    }

    /// Leaves the resting state for serving, with `rbuf` already read.
    fn activate(&mut self, rbuf: BytesMut) {
        let State::Resting { stream, client, .. } = std::mem::replace(&mut self.state, State::Done)
        else {
            return;
        };
        self.last_active = Instant::now();
        let session = client.wake(&self.ctx);
        self.state = State::Active(Box::pin(serve(
            self.ctx.clone(),
            session,
            stream,
            rbuf,
            self.last_active,
        )));
    }

    /// Ends the connection.
    fn close(&mut self, result: std::io::Result<()>, peer: SocketAddr) -> Poll<()> {
        self.state = State::Done;
        match result {
            Ok(()) => tracing::debug!(client = %peer, "client disconnected"),
            Err(e) => tracing::debug!(client = %peer, error = %e, "client connection ended"),
        }
        Poll::Ready(())
    }
}

impl Future for Connection {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Resting { client, .. } => {
                    let peer = client.info().peer;
                    match this.poll_rest(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Woke::Input(rbuf)) => this.activate(rbuf),
                        Poll::Ready(Woke::Close(result)) => return this.close(result, peer),
                    }
                }
                State::Active(serving) => {
                    let Poll::Ready(served) = serving.as_mut().poll(cx) else {
                        return Poll::Pending;
                    };
                    this.last_active = served.last_active;
                    let peer = served.session.info().peer;
                    if !matches!(served.exit, Ok(Exit::Park)) {
                        this.ctx
                            .stats
                            .inflight
                            .fetch_sub(served.session.in_flight() as i64, Ordering::Relaxed);
                        return this.close(served.exit.map(|_| ()), peer);
                    }
                    // Parking (a close is counted once, on drop).
                    crate::server::SESSIONS_RELEASED.fetch_add(1, Ordering::Relaxed);
                    let client = served.session.rest();
                    this.rest(served.stream, client);
                }
                State::Done => return Poll::Ready(()),
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The session and the socket go first, then the client's entry.
        self.state = State::Done;
        // Out of the registry and marked closed first: a client naming it
        // in REDIRECT meanwhile finds it gone (see Tracker::enable).
        if let Some(info) = self.ctx.clients.remove(self.id) {
            info.set_closed();
        }
        self.ctx.tracker.gone(self.id);
        self.ctx
            .stats
            .connected_clients
            .fetch_sub(1, Ordering::Relaxed);
        crate::server::SESSIONS_RELEASED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves the client until it goes quiet ([`Exit::Park`]) or the
/// connection ends, then hands the socket and the session back.
async fn serve(
    ctx: Arc<Context>,
    mut session: Box<Session>,
    stream: ClientStream,
    mut rbuf: BytesMut,
    mut last_active: Instant,
) -> Served {
    // This task's waker, woken when draining starts (registered before
    // the check, as in `poll_rest`).
    std::future::poll_fn(|cx| {
        session.info().set_shutdown_waker(cx.waker());
        Poll::Ready(())
    })
    .await;
    if ctx.is_draining() {
        session.close_after_replies();
    }
    match stream {
        ClientStream::Tcp(mut tcp) => {
            let (mut rd, mut wr) = tcp.split();
            let exit = session
                .serve_active(&mut rd, &mut wr, &mut rbuf, &mut last_active)
                .await;
            Served {
                exit,
                stream: ClientStream::Tcp(tcp),
                session,
                last_active,
            }
        }
        ClientStream::Tls(tls) => {
            let (mut rd, mut wr) = tokio::io::split(tls);
            let exit = session
                .serve_active(&mut rd, &mut wr, &mut rbuf, &mut last_active)
                .await;
            Served {
                exit,
                stream: ClientStream::Tls(rd.unsplit(wr)),
                session,
                last_active,
            }
        }
    }
}
