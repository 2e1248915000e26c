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
pub async fn serve(listener: TcpListener, upstream: Authority, lifetime: Duration, server: Server) {
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
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
        let (client, upstream) = (client.clone(), upstream.clone());
        let service =
            service_fn(move |request| forward(client.clone(), upstream.clone(), peer, request));
        let io = TokioIo::new(stream);
        // One task type per server: a task is as large as its future, and one future holding
        // both servers' states would price the larger one into every connection.
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
}

/// Sends the request to the upstream with the peer's address appended to `X-Forwarded-For` (as a
/// further field line: a list split over lines is the same list).
async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: Authority,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Result<Response<Incoming>, Error> {
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
    Ok(client.request(request).await?)
}
