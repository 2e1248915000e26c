//! The accept loop of one listener: hyper-util's auto builder (HTTP/1.1, and h2c by preface on the
//! same port), one task per connection, graceful drain on shutdown. Serves the proxy and the
//! admin API alike; what a request gets is the `service` passed in.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Limits;
use crate::data::body::ResponseBody;
use crate::data::shared::Downstream;

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

fn builder(version: Option<bool>, limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_request_header_bytes);
    // hyper parses up to 100 headers on the stack; setting a count moves parsing to a heap
    // allocation per request, so only a non-default count is set.
    if limits.max_request_headers != HYPER_DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(limits.max_request_headers);
    }
    // HTTP/2: bounded concurrency per connection, windows large enough for gRPC's 4 MiB messages,
    // and pings so dead peers are noticed.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .initial_stream_window_size(limits.http2_initial_stream_window)
        .initial_connection_window_size(limits.http2_initial_connection_window)
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(limits.max_request_header_bytes as u32);
    match version {
        Some(true) => builder.http2_only(),
        Some(false) => builder.http1_only(),
        None => builder,
    }
}

/// Everything a listener's accept loop needs besides its service.
pub struct Serving {
    /// Listener name, for logs.
    pub name: String,
    /// The bound socket.
    pub listener: TcpListener,
    /// TLS termination, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// How long open connections may drain after shutdown.
    pub drain: Duration,
    /// Request limits.
    pub limits: Limits,
    /// Connection limits.
    pub connections: ConnectionLimits,
}

/// Serves `listener` until `shutdown` fires, then drains open connections for up to `drain`.
///
/// `service` is called once per request with the client's address and protocol. With `tls`, each
/// connection is a TLS handshake first, and ALPN decides the protocol (`h2` is HTTP/2 and nothing
/// else); in cleartext HTTP/1.1 and h2c (prior knowledge) share the port. Accept errors (such as
/// running out of file descriptors) are logged and retried with backoff; they never end the loop.
pub async fn serve<S, F>(serving: Serving, service: S, mut shutdown: watch::Receiver<bool>)
where
    S: Fn(Downstream, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let Serving {
        name,
        listener,
        tls,
        drain,
        limits,
        connections,
    } = serving;
    let sniffing = builder(None, &limits);
    let http1 = std::sync::Arc::new(builder(Some(false), &limits));
    let http2 = std::sync::Arc::new(builder(Some(true), &limits));
    let graceful = GracefulShutdown::new();
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
                    // Each chunk leaves as soon as it arrives (event streams, gRPC streaming).
                    let _ = stream.set_nodelay(true);
                    let proto = if tls.is_some() { "https" } else { "http" };
                    let downstream = Downstream { peer, proto };
                    let service = service.clone();
                    let per_request = service_fn(move |request| {
                        let response = service(downstream, request);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    let Some(acceptor) = tls.clone() else {
                        let connection = sniffing
                            .serve_connection_with_upgrades(TokioIo::new(stream), per_request)
                            .into_owned();
                        let connection = graceful.watch(connection);
                        tokio::spawn(async move {
                            if let Err(error) = connection.await {
                                tracing::debug!(%peer, %error, "connection ended with an error");
                            }
                            drop(permits);
                        });
                        continue;
                    };
                    let watcher = graceful.watcher();
                    let (http1, http2) = (http1.clone(), http2.clone());
                    tokio::spawn(async move {
                        let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        let io = TokioIo::new(stream);
                        let result = if h2 {
                            watcher.watch(http2.serve_connection(io, per_request).into_owned()).await
                        } else {
                            watcher
                                .watch(http1.serve_connection_with_upgrades(io, per_request).into_owned())
                                .await
                        };
                        if let Err(error) = result {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
                        drop(permits);
                    });
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
    tracing::info!(listener = %name, open = graceful.count(), "draining");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(listener = %name, ?drain, "drain deadline passed; closing open connections");
    }
}
