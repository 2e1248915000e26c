//! The textbook hyper reverse proxy: the yardstick for what Switchyard's own data path costs
//! (issue 16). hyper's HTTP/1 server per connection, hyper-util's legacy pooled client to one
//! upstream, `X-Forwarded-For` appended, nothing else: no routing, no metrics, no limits, no
//! timeouts, no request id. An upstream failure is returned as the service's error, so hyper closes
//! the connection (as hyper's own gateway example does). The data path is in
//! `textbook_proxy/serve.rs`, which `--example alloc-count` runs in its own process too.
//!
//! Run: `cargo build --release --example textbook-proxy`, then
//! `target/release/examples/textbook-proxy --listen 127.0.0.1:0 --upstream 127.0.0.1:8081`.
//! It prints `textbook-proxy: listening on http://ADDR` on stdout once bound (as `switchyard run`
//! prints its listeners) and exits by itself after `--max-seconds` (default one hour).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use http::uri::Authority;
use tokio::net::TcpListener;

#[path = "textbook_proxy/serve.rs"]
mod serve;

#[derive(Parser)]
#[command(about = "The textbook hyper reverse proxy: one upstream, X-Forwarded-For, nothing else")]
struct Args {
    /// Address to listen on (loopback; port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The one upstream, host:port.
    #[arg(long)]
    upstream: Authority,
    /// Exit after this many seconds (a bound for a process a runner may fail to stop).
    #[arg(long, default_value_t = 3600)]
    max_seconds: u64,
    /// The downstream server: http1 (the textbook proxy) or auto (hyper-util's HTTP/1 + h2c
    /// builder, as Switchyard serves cleartext: a variant to price that choice).
    #[arg(long, value_enum, default_value_t = serve::Server::Http1)]
    server: serve::Server,
    /// The upstream client: legacy (hyper-util's pooled client, the textbook proxy) or inline
    /// (hyper's `client::conn::http1` driven in the request's task, from a per-thread pool).
    #[arg(long, value_enum, default_value_t = serve::ClientKind::Legacy)]
    client: serve::ClientKind,
}

#[tokio::main]
async fn main() -> Result<(), serve::Error> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    println!(
        "textbook-proxy: listening on http://{}",
        listener.local_addr()?
    );
    serve::serve(
        listener,
        args.upstream,
        Duration::from_secs(args.max_seconds),
        args.server,
        args.client,
    )
    .await;
    Ok(())
}
