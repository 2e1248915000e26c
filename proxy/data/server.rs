//! The accept loop of one listener: HTTP/1.1, and h2c by preface on the same port (HTTP/2 by ALPN
//! with TLS), one task per connection, graceful drain on shutdown. Serves the proxy and the
//! admin API alike; what a request gets is the `service` passed in.
//!
//! Every connection is read through `conn::Guarded` (request framing checked as it arrives) and
//! supervised by `conn::supervise` (header-read timeout from accept, keep-alive timeout between
//! requests), and served by `http1::Served` (HTTP/1.1 requests without a body, or with one that came
//! whole with the head, by the fast path's loop, `fast`, unless the listener says `fast_path: false`; the rest by hyper's server), which
//! gives an idle HTTP/1.1 connection's buffers back; an idle one then leaves its task for the listener's `hall` (over TLS with its session),
//! which gives it a new one when its client sends again. Connections that end refused before
//! routing (a header-read timeout, a head hyper answered 400 or 431) are counted when the
//! listener has metrics.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use crate::config::Limits;
use crate::data::body::ResponseBody;
use crate::data::conn::{self, Conn, Ended, Expiry, Guarded, InFlight};
use crate::data::fast::{self, head::HeadLimits};
use crate::data::fault::Refusal;
use crate::data::hall::{self, Door, Resting, Socket};
use crate::data::http1::{BoxError, Builders, Served};
use crate::data::shared::{Downstream, Inbound};
use crate::metrics::Metrics;

/// How long a client may take to finish a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// hyper's own header-count limit (parsed on the stack).
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// Connection limits of one listener: the process-wide one and the listener's own.
#[derive(Clone, Default)]
pub struct ConnectionLimits {
    /// Shared by every proxy listener.
    pub global: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    /// This listener's.
    pub listener: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

impl ConnectionLimits {
    /// Waits for room for one more connection; the permits are held until it closes.
    async fn admit(&self) -> Vec<tokio::sync::OwnedSemaphorePermit> {
        let mut permits = Vec::with_capacity(2);
        for s in [&self.global, &self.listener].into_iter().flatten() {
            if let Ok(p) = s.clone().acquire_owned().await {
                permits.push(p);
            }
        }
        permits
    }
}

fn builders(limits: &Limits) -> Builders {
    let mut http1 = http1::Builder::new();
    // `conn::supervise` enforces the header-read and keep-alive timeouts; hyper's own timer
    // (which starts only at the first byte and then also bounds idle time) is a backstop set
    // past both, for a connection whose heads the framing scanner stepped aside from. It is
    // checked on the supervisor's ticks rather than kept in tokio's timer wheel (`CoarseTimer`).
    http1
        .timer(conn::CoarseTimer)
        // One buffer per write (the head and small bodies copied together) rather than an
        // iovec per piece: fewer instructions for the common small answer, and no dearer for
        // 256 KB bodies (docs/performance.md).
        .writev(false)
        .header_read_timeout(limits.header_read_timeout + limits.keep_alive_timeout)
        .max_buf_size(limits.max_request_header_bytes);
    // hyper parses up to 100 headers on the stack; setting a count moves parsing to a heap
    // allocation per request, so only a non-default count is set.
    if limits.max_request_headers != HYPER_DEFAULT_MAX_HEADERS {
        http1.max_headers(limits.max_request_headers);
    }
    // HTTP/2: bounded concurrency per connection, windows large enough for gRPC's 4 MiB messages,
    // and pings so dead peers are noticed.
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .initial_stream_window_size(limits.http2_initial_stream_window)
        .initial_connection_window_size(limits.http2_initial_connection_window)
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(limits.max_request_header_bytes as u32);
    Builders { http1, http2 }
}

/// Everything a listener's accept loop needs besides its socket and its service.
#[derive(Clone)]
pub struct Serving {
    /// Listener name, for logs.
    pub name: String,
    /// TLS termination, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// How long open connections may drain after shutdown.
    pub drain: Duration,
    /// Request limits.
    pub limits: Limits,
    /// Connection limits.
    pub connections: ConnectionLimits,
    /// Where connections and requests refused before routing are counted (`None`: not counted,
    /// as on the admin endpoint).
    pub refused: Option<Arc<Metrics>>,
    /// Counts the connections this accept loop takes (one per worker with `--reuse-port`).
    pub accepted: Option<prometheus::IntCounter>,
    /// HTTP/1.1 requests without a body (or with a whole one) go through the fast path
    /// (`data::fast`).
    pub fast_path: bool,
}

/// What every connection of a listener shares.
struct Listener<S> {
    service: S,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Where idle HTTP/1.1 connections leave their tasks to rest (`None`: they park in them).
    hall: Option<Door>,
    limits: Limits,
    builders: Arc<Builders>,
    refused: Option<Arc<Metrics>>,
    /// HTTP/1.1 requests without a body (or with a whole one) go through the fast path.
    fast: bool,
}

/// Serves `listener` until `shutdown` fires, then drains open connections for up to `drain`.
///
/// `service` is called once per request with the client's address and protocol. With `tls`, each
/// connection is a TLS handshake first, and ALPN decides the protocol (`h2` is HTTP/2 and nothing
/// else); in cleartext HTTP/1.1 and h2c (prior knowledge) share the port. Accept errors (such as
/// running out of file descriptors) are logged and retried with backoff; they never end the loop.
pub async fn serve<S, F>(
    listener: TcpListener,
    serving: Serving,
    service: S,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Fn(Downstream, Request<Inbound>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let Serving {
        name,
        tls,
        drain,
        limits,
        connections,
        refused,
        accepted: counted,
        fast_path,
    } = serving;
    // Each connection holds a receiver: a send asks them to finish, and the sender sees when
    // the last one has gone.
    let (drain_tx, drain_rx) = watch::channel(());
    let parked = refused.as_ref().map(|m| m.downstream.parked.clone());
    let hall = match hall::open(limits.keep_alive_timeout, parked) {
        Ok(opened) => Some(opened),
        Err(error) => {
            tracing::warn!(listener = %name, %error, "no hall for idle connections; they park in their tasks");
            None
        }
    };
    let (door, hall) = hall.unzip();
    let shared = Arc::new(Listener {
        service,
        tls,
        hall: door,
        builders: Arc::new(builders(&limits)),
        limits,
        refused,
        fast: fast_path,
    });
    if let Some(hall) = hall {
        tokio::spawn(hall.run(drain_rx.clone(), wake(shared.clone(), drain_rx.clone())));
    }
    let mut backoff = Duration::from_millis(5);

    loop {
        // At the connection limit, stop accepting: new connections wait in the kernel's backlog.
        let permits = tokio::select! {
            p = connections.admit() => p,
            _ = shutdown.changed() => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    if let Some(counted) = &counted {
                        counted.inc();
                    }
                    let shared = shared.clone();
                    let drain = drain_rx.clone();
                    let conn = Conn::new(&shared.limits);
                    tokio::spawn(connection(shared, Arrived::Tcp(stream), peer, drain, permits, conn));
                }
                Err(error) => {
                    tracing::warn!(listener = %name, %error, ?backoff, "accept failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
            // A dropped sender means the app is going away: shut down as well.
            _ = shutdown.changed() => break,
        }
    }

    drop(listener);
    drop(drain_rx);
    tracing::info!(listener = %name, open = drain_tx.receiver_count(), "draining");
    let _ = drain_tx.send(());
    if tokio::time::timeout(drain, drain_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(listener = %name, ?drain, "drain deadline passed; closing open connections");
    }
}

/// What the hall does with a resting connection whose socket turned readable: gives it a task
/// again, parked, with its keep-alive deadline counting from when it went idle.
fn wake<S, F>(listener: Arc<Listener<S>>, drain: watch::Receiver<()>) -> impl FnMut(Resting)
where
    S: Fn(Downstream, Request<Inbound>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    move |resting: Resting| {
        let Resting {
            stream,
            peer,
            permits,
            idle_since,
        } = resting;
        let arrived = match stream {
            Socket::Plain(stream) => match TcpStream::from_std(stream) {
                Ok(stream) => Arrived::Tcp(stream),
                Err(error) => {
                    tracing::debug!(%peer, %error, "a resting connection could not be woken");
                    return;
                }
            },
            Socket::Tls(tls) => Arrived::Tls(tls),
        };
        let conn = Conn::resting_since(&listener.limits, idle_since);
        let (shared, drain) = (listener.clone(), drain.clone());
        tokio::spawn(connection(shared, arrived, peer, drain, permits, conn));
    }
}

/// A connection's stream as its task gets it: accepted, or woken from the hall (cleartext, or
/// TLS with its session).
enum Arrived {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A served stream that can rest in the hall.
trait Rests: Sized {
    fn into_socket(self) -> io::Result<Socket>;
}

impl Rests for TcpStream {
    fn into_socket(self) -> io::Result<Socket> {
        // Deregistered from tokio's reactor: the hall's epoll set watches it alone.
        self.into_std().map(Socket::Plain)
    }
}

impl Rests for TlsStream<TcpStream> {
    fn into_socket(self) -> io::Result<Socket> {
        Ok(Socket::Tls(Box::new(self)))
    }
}

/// Serves one connection: TLS handshake when configured (not for one woken from the hall, which
/// has its session), then HTTP/1.1 or HTTP/2 under the connection's supervisor; an HTTP/1.1 one
/// leaves for the listener's hall when it idles, and comes back parked (`conn` idle since then).
/// `permits` (the listener's connection limit) are held until it ends.
///
/// The returned future is the connection's task for as long as it is open, idle ones included,
/// so it is kept small: an `async move` block rather than an `async fn` (which keeps its arguments
/// twice), spawned as it is (a block around it would keep them a third time).
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn connection<S, F>(
    listener: Arc<Listener<S>>,
    arrived: Arrived,
    peer: SocketAddr,
    drain: watch::Receiver<()>,
    permits: Vec<tokio::sync::OwnedSemaphorePermit>,
    conn: Arc<Conn>,
) -> impl Future<Output = ()> + Send
where
    S: Fn(Downstream, Request<Inbound>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    async move {
        let proto = if listener.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let calls = Arc::new(PerRequest {
            conn: conn.clone(),
            service: listener.service.clone(),
            peer,
            peer_ip: crate::data::forwarding::peer_value(peer.ip()),
            proto,
        });
        let per_request = {
            let calls = calls.clone();
            service_fn(move |request: Request<Incoming>| {
                // Boxed once: the handler's future is large, and hyper moves the future it is given;
                // a pointer moves instead of the whole state.
                let response = calls.call(request.map(Inbound::Streamed));
                async move { Ok::<_, Infallible>(response.await) }
            })
        };
        let fast = listener.fast.then(|| fast::Setup {
            service: Arc::new(move |request| calls.call(request)),
            limits: head_limits(&listener.limits),
            handed: listener
                .refused
                .as_ref()
                .map(|m| m.downstream.handed_to_hyper.clone()),
        });
        let builders = listener.builders.clone();
        // One woken from the hall is idle; a fresh connection is first phase.
        let woken = conn.idle_since().is_some();
        let rests = listener.hall.is_some();
        let (stream, acceptor) = match (arrived, listener.tls.clone()) {
            (Arrived::Tcp(stream), None) => {
                // Each chunk leaves as soon as it arrives (event streams, gRPC streaming).
                let _ = stream.set_nodelay(true);
                let io = Guarded::new(stream, conn.clone(), &listener.limits);
                let served = if woken {
                    Served::resting(io, conn.clone(), builders, per_request)
                } else {
                    Served::sniffing(io, conn.clone(), builders, per_request)
                };
                let mut served = served
                    .counting_parked(listener.parked())
                    .resting_when_idle(rests)
                    .with_fast(fast);
                let ended =
                    conn::supervise(&mut served, conn, drain, Served::graceful_shutdown).await;
                listener.rest_or_end(served.take_resting(), peer, permits, ended);
                return;
            }
            (Arrived::Tcp(stream), Some(acceptor)) => (Err(stream), acceptor),
            (Arrived::Tls(tls), Some(acceptor)) => (Ok(tls), acceptor),
            // Only a TLS listener's hall holds TLS connections.
            (Arrived::Tls(_), None) => return,
        };
        // Boxed: the handshake's and the TLS session's state are large, and a cleartext
        // connection's task should not carry room for them.
        let shared = listener.clone();
        let served = Box::pin(async move {
            let listener = shared;
            let stream = match stream {
                Ok(woken) => *woken,
                Err(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    match handshake.await {
                        Ok(Ok(s)) => s,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return None;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return None;
                        }
                    }
                }
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = Guarded::new(stream, conn.clone(), &listener.limits);
            let served = if woken {
                Served::resting(io, conn.clone(), builders, per_request)
            } else {
                Served::serving(io, h2, conn.clone(), builders, per_request)
            };
            let mut served = served
                .counting_parked(listener.parked())
                .resting_when_idle(rests)
                .with_fast(fast);
            let ended = conn::supervise(&mut served, conn, drain, Served::graceful_shutdown).await;
            Some((served.take_resting(), ended))
        })
        .await;
        if let Some((resting, ended)) = served {
            listener.rest_or_end(resting, peer, permits, ended);
        }
    }
}

/// What a connection's requests are handed to, by hyper's server or the fast path alike.
struct PerRequest<S> {
    conn: Arc<Conn>,
    service: S,
    peer: SocketAddr,
    peer_ip: http::HeaderValue,
    proto: &'static str,
}

impl<S, F> PerRequest<S>
where
    S: Fn(Downstream, Request<Inbound>) -> F,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    /// Begins a request on the connection and calls the service; the response body keeps the
    /// request in flight until it is dropped.
    fn call(
        &self,
        request: Request<Inbound>,
    ) -> Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>> {
        let (handle, in_flight) = self.conn.begin();
        let downstream = Downstream {
            peer: self.peer,
            peer_ip: self.peer_ip.clone(),
            proto: self.proto,
            conn: Some(handle),
        };
        // Boxed once, the handler's future built in its place in the call: the future is large,
        // and each move of it is a copy.
        Box::pin(Call {
            handler: (self.service)(downstream, request),
            in_flight: Some(in_flight),
        })
    }
}

pin_project_lite::pin_project! {
    /// A request's call: the handler's future, and the guard that keeps the request in flight
    /// on its connection, handed to the response body when the handler answers.
    struct Call<F> {
        #[pin]
        handler: F,
        in_flight: Option<InFlight>,
    }
}

impl<F: Future<Output = Response<ResponseBody>>> Future for Call<F> {
    type Output = Response<ResponseBody>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.handler.poll(cx));
        Poll::Ready(match this.in_flight.take() {
            Some(in_flight) => response.map(|body| body.with_in_flight(in_flight)),
            None => response,
        })
    }
}

/// The fast path's head limits: the ones hyper's server has.
fn head_limits(limits: &Limits) -> HeadLimits {
    HeadLimits {
        max_bytes: limits.max_request_header_bytes,
        max_headers: limits.max_request_headers,
    }
}

impl<S> Listener<S> {
    /// After a connection's supervisor returned: the stream of one that finished to rest goes to
    /// the hall with its permits; otherwise the connection has ended.
    fn rest_or_end<T: Rests>(
        &self,
        resting: Option<(Guarded<T>, Instant)>,
        peer: SocketAddr,
        permits: Vec<tokio::sync::OwnedSemaphorePermit>,
        ended: Ended<BoxError>,
    ) {
        match (resting, &self.hall) {
            (Some((io, idle_since)), Some(hall)) => match io.into_inner().into_socket() {
                Ok(stream) => hall.enter(Resting {
                    stream,
                    peer,
                    permits,
                    idle_since,
                }),
                Err(error) => tracing::debug!(%peer, %error, "an idle connection could not rest"),
            },
            _ => self.ended(peer, ended),
        }
    }

    /// The gauge of parked connections, when this listener counts.
    fn parked(&self) -> Option<prometheus::IntGauge> {
        self.refused.as_ref().map(|m| m.downstream.parked.clone())
    }

    /// Logs how a connection ended and counts it when it was refused before routing.
    fn ended(&self, peer: SocketAddr, ended: Ended<BoxError>) {
        let refusal = match &ended {
            Ended::Expired(Expiry::HeaderRead) => {
                tracing::debug!(%peer, "no complete request head within the header-read timeout");
                Some(Refusal::HeaderTimeout)
            }
            Ended::Expired(Expiry::KeepAlive) | Ended::Finished(Ok(())) => None,
            Ended::Finished(Err(error)) => {
                tracing::debug!(%peer, %error, "connection ended with an error");
                match error.downcast_ref::<hyper::Error>() {
                    Some(e) if e.is_parse_too_large() => Some(Refusal::TooLarge),
                    Some(e) if e.is_parse() => Some(Refusal::Malformed),
                    Some(e) if e.is_timeout() => Some(Refusal::HeaderTimeout),
                    _ => None,
                }
            }
        };
        if let (Some(refusal), Some(metrics)) = (refusal, &self.refused) {
            metrics.downstream.refused(refusal);
        }
    }
}
