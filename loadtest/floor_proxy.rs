//! The floor: the least an HTTP/1.1 reverse proxy on tokio can do per request, as a yardstick for
//! issue 16's purpose-built path. One task per downstream connection on a single-threaded runtime
//! reads the request head into a reused buffer, parses it in place (httparse), writes the rewritten
//! head (hop-by-hop lines dropped, `X-Forwarded-For` appended) to an upstream connection taken from
//! a per-thread pool, reads the answer head the same way, and copies the head and a
//! `Content-Length` body back. Nothing else: no routing, metrics, limits, timeouts, request id,
//! request bodies (a request with one is answered 501) or chunked answers (502). It is what
//! an event-loop proxy's work per request looks like on tokio, so what Switchyard costs above it
//! is what hyper's server and Switchyard's own work cost, and what nginx costs below it is what
//! tokio costs. Not a product: never put it in front of anything.
//!
//! Run: `cargo build --release --example floor-proxy`, then
//! `target/release/examples/floor-proxy --listen 127.0.0.1:0 --upstream 127.0.0.1:8081`. It prints
//! `floor-proxy: listening on http://ADDR` once bound and exits after `--max-seconds` (default one
//! hour). `loadtest/compare/profile.sh --floor-bin PATH` measures it in Switchyard's place.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;

#[path = "floor_proxy/serve.rs"]
mod serve;

#[derive(Parser)]
#[command(about = "The floor: a minimal HTTP/1.1 proxy on tokio, a yardstick, not a product")]
struct Args {
    /// Address to listen on (loopback; port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The one upstream, ip:port.
    #[arg(long)]
    upstream: SocketAddr,
    /// Exit after this many seconds (a bound for a process a runner may fail to stop).
    #[arg(long, default_value_t = 3600)]
    max_seconds: u64,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(args.listen).await?;
        println!(
            "floor-proxy: listening on http://{}",
            listener.local_addr()?
        );
        serve::serve(
            listener,
            args.upstream,
            Duration::from_secs(args.max_seconds),
        )
        .await;
        Ok(())
    })
}
