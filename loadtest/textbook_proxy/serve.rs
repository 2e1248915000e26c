//! The textbook proxy's whole data path, shared by `--example textbook-proxy` (its own process)
//! and `--example alloc-count` (in-process): accept, hyper's HTTP/1 server per connection,
//! hyper-util's legacy pooled client, `X-Forwarded-For` appended.

use std::net::SocketAddr;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::HeaderValue;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Any failure, handed to hyper (which closes the connection on a service error).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Which hyper server drives each downstream connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Server {
    /// hyper's HTTP/1 server: the textbook proxy.
    #[default]
    Http1,
    /// hyper-util's auto builder (HTTP/1.1, and h2c by preface), with upgrades, as Switchyard
    /// serves a cleartext listener: a variant that shows what that choice costs.
    Auto,
}

/// Serves `listener`, forwarding every request to `upstream`, until `lifetime` has passed.
pub async fn serve(
    listener: TcpListener,
    upstream: Authority,
    lifetime: Duration,
    server: Server,
    client_kind: ClientKind,
) {
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    // The inline client connects to an address; the legacy one resolves the authority itself.
    let upstream_addr: Option<SocketAddr> = upstream.as_str().parse().ok();
    let deadline = tokio::time::sleep(lifetime);
    tokio::pin!(deadline);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut deadline => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of descriptors or a reset before accept: back off, keep serving.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        match (client_kind, upstream_addr) {
            (ClientKind::Inline, Some(addr)) => {
                let upstream = upstream.clone();
                let service = service_fn(move |mut request| {
                    let rewritten = rewrite(&mut request, upstream.clone(), peer);
                    async move {
                        rewritten?;
                        inline::request(addr, request).await
                    }
                });
                spawn_connection(server, io, service);
            }
            _ => {
                let (client, upstream) = (client.clone(), upstream.clone());
                let service = service_fn(move |request| {
                    forward(client.clone(), upstream.clone(), peer, request)
                });
                spawn_connection(server, io, service);
            }
        }
    }
}

/// Serves one connection in a task of its own. One task type per server: a task is as large as
/// its future, and one future holding both servers' states would price the larger one into every
/// connection.
fn spawn_connection<S, B>(server: Server, io: TokioIo<tokio::net::TcpStream>, service: S)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Error>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Error>,
{
    match server {
        Server::Http1 => {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
        Server::Auto => {
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(io, service)
                    .await;
            });
        }
    }
}

/// Points the request at `upstream` and appends the peer's address to `X-Forwarded-For` (as a
/// further field line: a list split over lines is the same list).
fn rewrite(
    request: &mut Request<Incoming>,
    upstream: Authority,
    peer: SocketAddr,
) -> Result<(), Error> {
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *request.uri_mut() = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(upstream)
        .path_and_query(path)
        .build()?;
    request.headers_mut().append(
        "x-forwarded-for",
        HeaderValue::from_str(&peer.ip().to_string())?,
    );
    Ok(())
}

/// Sends the request to the upstream through the legacy pooled client.
async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: Authority,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Result<Response<Incoming>, Error> {
    rewrite(&mut request, upstream, peer)?;
    Ok(client.request(request).await?)
}

/// The upstream client: hyper-util's legacy pool, or hyper's `client::conn::http1` connections
/// from a per-thread pool, driven inside the request's own task (no connection task, no hand-off
/// between tasks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKind {
    /// hyper-util's legacy pooled client: the textbook proxy.
    #[default]
    Legacy,
    /// `hyper::client::conn::http1`, driven in the request's task, from a per-thread pool.
    Inline,
}

pub mod inline {
    //! hyper's low-level HTTP/1 client, driven by the task that asks: the connection future is
    //! polled together with the response, then by the response body, and put back in a
    //! per-thread pool when the body ends.

    use std::cell::RefCell;
    use std::future::{poll_fn, Future};
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use hyper::body::{Body, Frame, Incoming, SizeHint};
    use hyper::client::conn::http1::{Connection, SendRequest};
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpStream;

    use super::Error;

    /// One upstream connection: the handle that sends and the future that drives it.
    pub struct Upstream {
        sender: SendRequest<Incoming>,
        conn: Connection<TokioIo<TcpStream>, Incoming>,
    }

    thread_local! {
        static POOL: RefCell<Vec<Upstream>> = const { RefCell::new(Vec::new()) };
    }

    impl Upstream {
        /// Drives the connection until it can take a request; false when it has closed.
        async fn ready(&mut self) -> bool {
            poll_fn(|cx| {
                if Pin::new(&mut self.conn).poll(cx).is_ready() {
                    return Poll::Ready(false);
                }
                self.sender.poll_ready(cx).map(|r| r.is_ok())
            })
            .await
        }
    }

    async fn checkout(addr: SocketAddr) -> Result<Upstream, Error> {
        for _ in 0..64 {
            let Some(mut idle) = POOL.with(|p| p.borrow_mut().pop()) else {
                break;
            };
            if idle.ready().await {
                return Ok(idle);
            }
        }
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let mut fresh = Upstream { sender, conn };
        if fresh.ready().await {
            Ok(fresh)
        } else {
            Err("the upstream closed the connection at once".into())
        }
    }

    /// Sends `request` to `addr` on a pooled connection, driving it in this task.
    pub async fn request(
        addr: SocketAddr,
        request: Request<Incoming>,
    ) -> Result<Response<Streamed>, Error> {
        let mut upstream = checkout(addr).await?;
        let mut response = Box::pin(upstream.sender.send_request(request));
        let response = poll_fn(|cx| {
            // The connection ended before the response: its error, if any, else the response
            // future's (hyper resolves it with the reason).
            if let Poll::Ready(Err(e)) = Pin::new(&mut upstream.conn).poll(cx) {
                return Poll::Ready(Err(Error::from(e)));
            }
            response.as_mut().poll(cx).map_err(Error::from)
        })
        .await?;
        Ok(response.map(|body| Streamed {
            body,
            upstream: Some(upstream),
        }))
    }

    /// A response body that drives its connection, and gives it back when the body ends.
    pub struct Streamed {
        body: Incoming,
        upstream: Option<Upstream>,
    }

    impl Body for Streamed {
        type Data = Bytes;
        type Error = hyper::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
            let this = &mut *self;
            if let Some(up) = &mut this.upstream {
                if Pin::new(&mut up.conn).poll(cx).is_ready() {
                    this.upstream = None;
                }
            }
            let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
            if frame.is_none() || this.body.is_end_stream() {
                if let Some(up) = this.upstream.take() {
                    POOL.with(|p| p.borrow_mut().push(up));
                }
            }
            Poll::Ready(frame)
        }

        fn is_end_stream(&self) -> bool {
            self.body.is_end_stream()
        }

        fn size_hint(&self) -> SizeHint {
            self.body.size_hint()
        }
    }
}
