//! The accept loop of one listener: hyper-util's auto builder (HTTP/1.1, and h2c by preface on the
//! same port), one task per connection, graceful drain on shutdown. Serves the proxy and the
//! admin API alike; what a request gets is the `service` passed in.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::ResponseBody;

/// How long a client may take to send a request head before the connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `listener` until `shutdown` fires, then drains open connections for up to `drain`.
///
/// `service` is called once per request with the client's address. Accept errors (such as
/// running out of file descriptors) are logged and retried with backoff; they never end the loop.
pub async fn serve<S, F>(
    name: String,
    listener: TcpListener,
    service: S,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) where
    S: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut backoff = Duration::from_millis(5);

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    // Each chunk leaves as soon as it arrives (event streams, gRPC streaming).
                    let _ = stream.set_nodelay(true);
                    let service = service.clone();
                    let per_request = service_fn(move |request| {
                        let response = service(peer, request);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), per_request)
                        .into_owned();
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
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
