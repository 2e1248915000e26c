//! A downstream connection that keeps only its socket while it idles.
//!
//! HTTP/1.1 is served first by the fast path's loop ([`fast`](crate::data::fast)), which takes
//! requests without a body or whose body came whole with the head; the first request it does not take goes to hyper's HTTP/1.1
//! connection, with the bytes the loop had read, and hyper serves the connection from then on
//! until it idles. What follows is about that hyper connection, and about idling either way: the
//! fast path's loop also ends once the connection has been idle for `limits.idle_release_after`,
//! giving its stream back to park or rest as below.
//!
//! hyper's HTTP/1.1 connection holds a read and a write buffer (8 KiB each), its dispatcher and
//! the service for as long as the connection lives, and the connection task is as large as the
//! largest state it may reach: about 30 KB per idle keep-alive client, where nginx, which frees a
//! client's buffers between requests, holds about 1 KB. [`Served`] does what nginx does at a
//! coarser grain: once an HTTP/1.1 connection has been idle for `limits.idle_release_after` (no
//! request in flight, its last response written, no byte of a next head read), hyper's connection
//! is shut down gracefully *without closing the socket* and dropped, and the connection parks with
//! its socket and framing scanner alone until the socket is readable again; the next request gets
//! a fresh hyper connection. A busy connection never parks, so the saturated path pays nothing.
//! With a hall the connection goes further ([`Served::resting_when_idle`]): instead of parking
//! in its task it finishes with its stream in `State::Resting`, and the server hands the stream
//! (over TLS with its session) to the listener's [`Hall`](crate::data::hall::Hall), which gives it
//! a new task, parked ([`Served::resting`]), once the client sends again.
//!
//! A cleartext connection starts parked: its first bytes are peeked, not read, to tell h2c's
//! preface (HTTP/2 with prior knowledge, served by hyper's HTTP/2 connection, which never parks)
//! from HTTP/1.1, so no hyper state exists before a client sends its first byte.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::data::body::ResponseBody;
use crate::data::conn::{Conn, Guarded};
use crate::data::fast;

mod lending;
use lending::Lending;

/// An error ending a connection.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long to wait before peeking again at a first segment of one byte, `P` (POST or h2c's
/// `PRI`?), doubled on each retry up to [`SNIFF_RETRY_MAX`]; the header-read timeout bounds it.
const SNIFF_RETRY: Duration = Duration::from_millis(5);
const SNIFF_RETRY_MAX: Duration = Duration::from_millis(640);

/// What the first bytes of a cleartext connection say.
pub enum Sniff {
    /// HTTP/1.1 (or anything that is not h2c's preface: hyper answers it).
    Http1,
    /// The HTTP/2 preface, or the start of it.
    H2,
    /// One byte, `P`: either.
    Undecided,
    /// The client closed before sending a byte.
    Closed,
}

/// A downstream stream that can wait for bytes without reading them.
pub trait Parkable: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready when the socket has bytes (or an end) to read.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Looks at the first bytes without consuming them.
    fn poll_sniff(&self, cx: &mut Context<'_>) -> Poll<io::Result<Sniff>>;
}

impl Parkable for TcpStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }

    fn poll_sniff(&self, cx: &mut Context<'_>) -> Poll<io::Result<Sniff>> {
        let mut bytes = [0u8; 24];
        let mut buf = ReadBuf::new(&mut bytes);
        let n = ready!(self.poll_peek(cx, &mut buf))?;
        let seen = &bytes[..n];
        Poll::Ready(Ok(if n == 0 {
            Sniff::Closed
        } else if !H2_PREFACE.starts_with(seen) {
            Sniff::Http1
        } else if n >= 2 {
            // `PR`: no HTTP/1.1 method starts so (`PRI` is HTTP/2's alone, RFC 9113 §3.4);
            // hyper's HTTP/2 connection reads the rest of the preface, or refuses it.
            Sniff::H2
        } else {
            Sniff::Undecided
        }))
    }
}

impl Parkable for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper reads until the TLS stream has no plaintext left, so whatever comes next
        // arrives on the socket.
        self.get_ref().0.poll_read_ready(cx)
    }

    fn poll_sniff(&self, _: &mut Context<'_>) -> Poll<io::Result<Sniff>> {
        // ALPN chose the protocol during the handshake; a TLS connection is served at once.
        Poll::Ready(Ok(Sniff::Http1))
    }
}

/// The hyper connection builders of a listener.
pub struct Builders {
    /// HTTP/1.1.
    pub http1: http1::Builder,
    /// HTTP/2 (ALPN `h2`, or h2c by prior knowledge).
    pub http2: http2::Builder<TokioExecutor>,
}

type Http1Conn<T, S> = http1::UpgradeableConnection<TokioIo<Lending<T>>, S>;
type Http2Conn<T, S> = http2::Connection<TokioIo<Guarded<T>>, S, TokioExecutor>;

enum State<T, S: HttpService<Incoming>> {
    /// A cleartext connection before its first byte: HTTP/1.1 or h2c?
    Sniffing {
        io: Guarded<T>,
        retry: Option<(Pin<Box<Sleep>>, Duration)>,
    },
    /// Idle HTTP/1.1: the socket and its scanner, nothing else.
    Parked(Guarded<T>),
    /// HTTP/1.1 served by the fast path's loop.
    Fast(Pin<Box<dyn Future<Output = fast::Ended<T>> + Send>>),
    /// HTTP/1.1 served by hyper; `release` wakes the parker to look at the idle time;
    /// `begun` is how many requests the connection had begun when this hyper connection was made.
    Http1 {
        connection: Pin<Box<Http1Conn<T, S>>>,
        back: oneshot::Receiver<Guarded<T>>,
        release: Pin<Box<Sleep>>,
        begun: u32,
    },
    /// Idle HTTP/1.1 (since the instant) whose stream leaves this task for its listener's hall
    /// ([`Served::take_resting`]); the connection future has finished.
    Resting(Guarded<T>, Instant),
    /// A parked connection asked to close: its stream shut down (TLS: `close_notify`).
    Closing(Guarded<T>),
    /// HTTP/2, served by hyper until the connection ends.
    Http2(Pin<Box<Http2Conn<T, S>>>),
    Done,
}

/// One downstream connection: HTTP/1.1 that parks while idle, or HTTP/2.
pub struct Served<T, S: HttpService<Incoming>> {
    state: State<T, S>,
    conn: Arc<Conn>,
    builders: Arc<Builders>,
    service: S,
    /// A graceful shutdown was asked for: end instead of parking or unparking.
    closing: bool,
    /// Parks by leaving the task ([`State::Resting`]) rather than in it.
    rests: bool,
    /// Counts the connections parked now.
    parked: Option<IntGauge>,
    /// The fast path's handler and head limits (`None`: hyper serves every HTTP/1.1 request).
    fast: Option<fast::Setup>,
    /// Tells the fast path's loop that a graceful shutdown began.
    fast_closing: Arc<AtomicBool>,
}

impl<T, S: HttpService<Incoming>> Drop for Served<T, S> {
    fn drop(&mut self) {
        if let (State::Parked(_), Some(parked)) = (&self.state, &self.parked) {
            parked.dec();
        }
    }
}

// Nothing of a `Served` is ever pinned in place: hyper's connections and the timers are boxed,
// the stream and the service are only reached through `&mut`.
impl<T, S: HttpService<Incoming>> Unpin for Served<T, S> {}

impl<T, S> Served<T, S>
where
    T: Parkable,
    S: HttpService<Incoming, ResBody = ResponseBody> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, ResponseBody>,
{
    fn new(state: State<T, S>, conn: Arc<Conn>, builders: Arc<Builders>, service: S) -> Self {
        Served {
            state,
            conn,
            builders,
            service,
            closing: false,
            rests: false,
            parked: None,
            fast: None,
            fast_closing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Serves HTTP/1.1 requests without a body (or with a whole one) through the fast path ([`fast`]) with `service`.
    pub fn with_fast(mut self, fast: Option<fast::Setup>) -> Self {
        self.fast = fast;
        self
    }

    /// A cleartext connection, from before its first byte.
    pub fn sniffing(io: Guarded<T>, conn: Arc<Conn>, builders: Arc<Builders>, service: S) -> Self {
        Served::new(State::Sniffing { io, retry: None }, conn, builders, service)
    }

    /// A connection woken from its listener's hall: parked, served once readable.
    pub fn resting(io: Guarded<T>, conn: Arc<Conn>, builders: Arc<Builders>, service: S) -> Self {
        Served::new(State::Parked(io), conn, builders, service)
    }

    /// Counts this connection in `parked` while it is parked.
    pub fn counting_parked(mut self, parked: Option<IntGauge>) -> Self {
        if let (State::Parked(_), Some(parked)) = (&self.state, &parked) {
            parked.inc();
        }
        self.parked = parked;
        self
    }

    /// With `rests`, parks by finishing with the stream left in [`State::Resting`], for the
    /// caller to hand to its listener's hall, rather than by waiting in this task.
    pub fn resting_when_idle(mut self, rests: bool) -> Self {
        self.rests = rests;
        self
    }

    /// The stream of a connection that finished to rest, and since when it is idle.
    pub fn take_resting(&mut self) -> Option<(Guarded<T>, Instant)> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Resting(io, since) => Some((io, since)),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// A connection whose protocol is known (TLS, by ALPN): served at once.
    pub fn serving(
        io: Guarded<T>,
        h2: bool,
        conn: Arc<Conn>,
        builders: Arc<Builders>,
        service: S,
    ) -> Self {
        let mut served = Served::new(State::Done, conn, builders, service);
        served.state = if h2 {
            served.http2(io)
        } else {
            served.http1(io)
        };
        served
    }

    /// Starts a graceful shutdown: a parked or sniffing connection ends at once, hyper's
    /// connections finish what they serve.
    pub fn graceful_shutdown(self: Pin<&mut Self>) {
        let this = self.get_mut();
        this.closing = true;
        match &mut this.state {
            State::Http1 { connection, .. } => connection.as_mut().graceful_shutdown(),
            State::Http2(connection) => connection.as_mut().graceful_shutdown(),
            State::Fast(_) => this.fast_closing.store(true, Ordering::Relaxed),
            _ => {}
        }
    }

    /// HTTP/1.1: the fast path's loop when it is on, else hyper's connection.
    fn http1(&self, io: Guarded<T>) -> State<T, S> {
        let Some(setup) = &self.fast else {
            return self.hyper1(io, Bytes::new());
        };
        State::Fast(Box::pin(fast::serve(
            io,
            fast::Loop {
                service: setup.service.clone(),
                limits: setup.limits,
                conn: self.conn.clone(),
                closing: self.fast_closing.clone(),
            },
        )))
    }

    /// hyper's HTTP/1.1 connection, reading `prefix` (bytes the fast path read) first.
    fn hyper1(&self, io: Guarded<T>, prefix: Bytes) -> State<T, S> {
        let (tx, back) = oneshot::channel();
        let lending = Lending {
            io: Some(io),
            prefix,
            back: Some(tx),
            conn: self.conn.clone(),
        };
        let connection = self
            .builders
            .http1
            .serve_connection(TokioIo::new(lending), self.service.clone())
            .with_upgrades();
        State::Http1 {
            connection: Box::pin(connection),
            back,
            release: Box::pin(tokio::time::sleep(self.conn.release_after())),
            begun: self.conn.requests_begun(),
        }
    }

    fn http2(&self, io: Guarded<T>) -> State<T, S> {
        let connection = self
            .builders
            .http2
            .serve_connection(TokioIo::new(io), self.service.clone());
        State::Http2(Box::pin(connection))
    }

    /// True when hyper's HTTP/1.1 connection should be taken apart now (see
    /// [`Conn::poll_release`]); never while the connection is closing.
    fn poll_release(&self, release: &mut Pin<Box<Sleep>>, cx: &mut Context<'_>) -> bool {
        !self.closing && self.conn.poll_release(release, cx)
    }

    /// A cleartext connection's first bytes: h2c's preface or HTTP/1.1. Each method below sets
    /// the next state and returns `None` to go on, or what the connection's poll returns.
    fn poll_sniffing(
        &mut self,
        io: Guarded<T>,
        mut retry: Option<(Pin<Box<Sleep>>, Duration)>,
        cx: &mut Context<'_>,
    ) -> Option<Poll<Result<(), BoxError>>> {
        if self.closing {
            return Some(Poll::Ready(Ok(())));
        }
        if let Some((sleep, _)) = retry.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                self.state = State::Sniffing { io, retry };
                return Some(Poll::Pending);
            }
        }
        match io.get_ref().poll_sniff(cx) {
            Poll::Pending => {
                self.state = State::Sniffing { io, retry };
                return Some(Poll::Pending);
            }
            Poll::Ready(Err(error)) => return Some(Poll::Ready(Err(error.into()))),
            Poll::Ready(Ok(Sniff::Closed)) => return Some(Poll::Ready(Ok(()))),
            Poll::Ready(Ok(Sniff::Http1)) => self.state = self.http1(io),
            Poll::Ready(Ok(Sniff::H2)) => self.state = self.http2(io),
            Poll::Ready(Ok(Sniff::Undecided)) => {
                // Peeking sees the same byte until more come (or forever after a FIN): back off.
                let delay = retry.map_or(SNIFF_RETRY, |(_, d)| (d * 2).min(SNIFF_RETRY_MAX));
                let sleep = Box::pin(tokio::time::sleep(delay));
                self.state = State::Sniffing {
                    io,
                    retry: Some((sleep, delay)),
                };
            }
        }
        None
    }

    /// A parked connection: a fresh hyper connection once the socket is readable.
    fn poll_parked(
        &mut self,
        io: Guarded<T>,
        cx: &mut Context<'_>,
    ) -> Option<Poll<Result<(), BoxError>>> {
        let readable = if self.closing {
            Poll::Ready(Ok(()))
        } else {
            io.get_ref().poll_readable(cx)
        };
        let Poll::Ready(readable) = readable else {
            self.state = State::Parked(io);
            return Some(Poll::Pending);
        };
        if let Some(parked) = &self.parked {
            parked.dec();
        }
        match readable {
            _ if self.closing => {
                self.state = State::Closing(io);
                None
            }
            Err(error) => Some(Poll::Ready(Err(error.into()))),
            Ok(()) => {
                self.state = self.http1(io);
                None
            }
        }
    }

    /// Keeps the stream alone, its scanner's buffer freed (or hands it out to rest).
    fn park(&mut self, mut io: Guarded<T>) {
        io.release();
        if let (true, Some(since)) = (self.rests, self.conn.idle_since()) {
            self.state = State::Resting(io, since);
            return;
        }
        if let Some(parked) = &self.parked {
            parked.inc();
        }
        self.state = State::Parked(io);
    }

    /// HTTP/1.1 served by the fast path: what its loop ended with decides what comes next.
    fn poll_fast(
        &mut self,
        mut run: Pin<Box<dyn Future<Output = fast::Ended<T>> + Send>>,
        cx: &mut Context<'_>,
    ) -> Option<Poll<Result<(), BoxError>>> {
        let Poll::Ready(ended) = run.as_mut().poll(cx) else {
            self.state = State::Fast(run);
            return Some(Poll::Pending);
        };
        match ended {
            fast::Ended::Finished(result) => return Some(Poll::Ready(result.map_err(Into::into))),
            fast::Ended::Idle(io) if !self.closing => self.park(io),
            fast::Ended::Idle(io) | fast::Ended::Close(io) => self.state = State::Closing(io),
            fast::Ended::Hyper(io, read) => {
                if let Some(handed) = self.fast.as_ref().and_then(|f| f.handed.as_ref()) {
                    handed.inc();
                }
                self.state = self.hyper1(io, read);
            }
        }
        None
    }

    /// HTTP/1.1 served by hyper: parks it once idle long enough.
    fn poll_http1(
        &mut self,
        mut connection: Pin<Box<Http1Conn<T, S>>>,
        mut back: oneshot::Receiver<Guarded<T>>,
        mut release: Pin<Box<Sleep>>,
        begun: u32,
        cx: &mut Context<'_>,
    ) -> Option<Poll<Result<(), BoxError>>> {
        if let Poll::Ready(result) = connection.as_mut().poll(cx) {
            let parking = self.conn.is_parking();
            // Dropping hyper's connection hands the stream back when parking.
            drop(connection);
            self.conn.set_parking(false);
            return match (parking && result.is_ok(), back.try_recv().ok()) {
                (true, Some(io)) => {
                    self.park(io);
                    None
                }
                _ => Some(Poll::Ready(result.map_err(Into::into))),
            };
        }
        let mut stop = Some(Poll::Pending);
        if self.conn.is_parking() {
            // Asked to park just now, and hyper still serves: it had a request under way after
            // all. It finishes it and closes, for real.
            self.conn.set_parking(false);
        } else if self.poll_release(&mut release, cx) {
            self.conn.set_parking(true);
            if self.conn.requests_begun() == begun {
                // No request on this hyper connection (woken by TLS records without data, say):
                // it has read no byte of HTTP, so it is dropped as it is, stream handed back.
                drop(connection);
                self.conn.set_parking(false);
                let Ok(io) = back.try_recv() else {
                    return Some(Poll::Ready(Ok(())));
                };
                self.park(io);
                return None;
            }
            // Idle for long enough after a request: hyper ends an idle connection at once on a
            // graceful shutdown, and the stream comes back instead of closing.
            connection.as_mut().graceful_shutdown();
            stop = None;
        }
        self.state = State::Http1 {
            connection,
            back,
            release,
            begun,
        };
        stop
    }
}

impl<T, S> Future for Served<T, S>
where
    T: Parkable,
    S: HttpService<Incoming, ResBody = ResponseBody> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, ResponseBody>,
{
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // Bounded: every pass that does not return moves the state forward (sniff → serve,
        // serve → park, park → serve), and a parked connection is left only on readiness.
        for _ in 0..8 {
            let stop = match std::mem::replace(&mut this.state, State::Done) {
                State::Done => return Poll::Ready(Ok(())),
                State::Resting(io, since) => {
                    this.state = State::Resting(io, since);
                    return Poll::Ready(Ok(()));
                }
                State::Sniffing { io, retry } => this.poll_sniffing(io, retry, cx),
                State::Parked(io) => this.poll_parked(io, cx),
                State::Fast(run) => this.poll_fast(run, cx),
                State::Http1 {
                    connection,
                    back,
                    release,
                    begun,
                } => this.poll_http1(connection, back, release, begun, cx),
                State::Closing(mut io) => match Pin::new(&mut io).poll_shutdown(cx) {
                    Poll::Ready(_) => Some(Poll::Ready(Ok(()))),
                    Poll::Pending => {
                        this.state = State::Closing(io);
                        Some(Poll::Pending)
                    }
                },
                State::Http2(mut connection) => match connection.as_mut().poll(cx) {
                    Poll::Ready(result) => Some(Poll::Ready(result.map_err(Into::into))),
                    Poll::Pending => {
                        this.state = State::Http2(connection);
                        Some(Poll::Pending)
                    }
                },
            };
            if let Some(poll) = stop {
                return poll;
            }
        }
        // Eight state changes in one poll: yield, and come back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
