//! Heap allocations per proxied request (issue 16): Switchyard's data path against the textbook
//! hyper proxy, both in this process on one thread (a current-thread runtime), with a counting
//! global allocator. A keep-alive client sends GETs over one connection: first straight to the
//! upstream (what the client and the upstream allocate), then through each proxy; a proxy's own
//! figure is its row minus the direct row, from the same run. Then the heap each holds per idle
//! keep-alive connection (bytes allocated and not freed, over `--idle` connections opened by a
//! plain client thread): what part of the resident memory per connection is heap.
//!
//! Run: `cargo run --release --example alloc-count [-- --requests 20000]`. Loopback only.

#![allow(clippy::unwrap_used)] // a measurement harness: a failure should stop it loudly
#![allow(unsafe_code)] // a counting global allocator is unsafe by definition; it only forwards to System

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "textbook_proxy/serve.rs"]
mod textbook;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated and not yet freed.
static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Parser)]
#[command(about = "Heap allocations per proxied request: Switchyard and the textbook hyper proxy")]
struct Args {
    /// Requests counted per target (after the warm-up).
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Requests sent first on the same connection, not counted (pools, lazy state).
    #[arg(long, default_value_t = 1_000)]
    warmup: u64,
    /// Idle keep-alive connections (one request each) for the live-heap figure.
    #[arg(long, default_value_t = 1_000)]
    idle: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(1..=1_000_000).contains(&args.requests) || args.warmup > 1_000_000 {
        bail!("--requests must be 1 to 1,000,000 and --warmup at most 1,000,000");
    }
    if !(1..=10_000).contains(&args.idle) {
        bail!("--idle must be 1 to 10,000 (open files)");
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let upstream = switchyard::cli::demo::spawn_upstream("alloc").await?;
    let textbook_listener = TcpListener::bind("127.0.0.1:0").await?;
    let textbook_addr = textbook_listener.local_addr()?;
    tokio::spawn(textbook::serve(
        textbook_listener,
        upstream.to_string().parse()?,
        Duration::from_secs(3600),
        textbook::Server::Http1,
        textbook::ClientKind::Legacy,
    ));
    let auto_listener = TcpListener::bind("127.0.0.1:0").await?;
    let auto_addr = auto_listener.local_addr()?;
    tokio::spawn(textbook::serve(
        auto_listener,
        upstream.to_string().parse()?,
        Duration::from_secs(3600),
        textbook::Server::Auto,
        textbook::ClientKind::Legacy,
    ));
    let inline_listener = TcpListener::bind("127.0.0.1:0").await?;
    let inline_addr = inline_listener.local_addr()?;
    tokio::spawn(textbook::serve(
        inline_listener,
        upstream.to_string().parse()?,
        Duration::from_secs(3600),
        textbook::Server::Http1,
        textbook::ClientKind::Inline,
    ));
    let switchyard = start_switchyard(upstream, "").await?;
    let switchyard_addr = switchyard.addr("public").context("the listener")?;
    // The same, parking its connection whenever it has idled 1 ms: what a request on a parked
    // connection costs in allocations (hyper's connection built again).
    let parking = start_switchyard(upstream, "limits: { idle_release_after: 1ms }").await?;
    let parking_addr = parking.addr("public").context("the listener")?;

    println!(
        "Heap allocations per request: {} requests after {} of warm-up, one keep-alive connection, one thread\n",
        args.requests, args.warmup
    );
    println!("| Target | Allocations per request | Bytes allocated per request | The proxy's own allocations |");
    println!("|---|---|---|---|");
    let direct = count(upstream, &args).await.context("direct")?;
    println!(
        "| upstream, direct | {:.1} | {:.0} | - |",
        direct.0, direct.1
    );
    for (name, addr) in [
        ("textbook hyper proxy", textbook_addr),
        ("textbook, hyper-util auto server", auto_addr),
        (
            "textbook, hyper's client::conn in the request's task",
            inline_addr,
        ),
        ("switchyard", switchyard_addr),
    ] {
        let (n, bytes) = count(addr, &args).await.context(name)?;
        println!("| {name} | {n:.1} | {bytes:.0} | {:.1} |", n - direct.0);
    }
    // 5 ms between requests: on the second instance each request finds its connection parked;
    // the first, paced alike, is the baseline for what the pause itself costs.
    let paced = Args {
        requests: 500,
        warmup: 10,
        idle: args.idle,
    };
    for (name, addr) in [
        ("switchyard, 5 ms between requests", switchyard_addr),
        (
            "switchyard, 5 ms between requests, each on a parked connection (`idle_release_after: 1ms`)",
            parking_addr,
        ),
    ] {
        let (n, bytes) = count_paced(addr, &paced, Duration::from_millis(5))
            .await
            .context(name)?;
        println!("| {name} | {n:.1} | {bytes:.0} | {:.1} |", n - direct.0);
    }
    println!(
        "\nHeap bytes held per idle keep-alive connection: {} connections, one request each, from a client thread that allocates nothing per connection\n",
        args.idle
    );
    println!("| Target | Live heap bytes per idle connection |");
    println!("|---|---|");
    for (name, addr) in [
        ("upstream, direct (hyper's HTTP/1 server alone)", upstream),
        ("textbook hyper proxy", textbook_addr),
        ("textbook, hyper-util auto server", auto_addr),
        ("switchyard", switchyard_addr),
    ] {
        let bytes = idle_heap(addr, args.idle).await.context(name)?;
        println!("| {name} | {bytes:.0} |");
    }
    switchyard.shutdown().await;
    Ok(())
}

/// Switchyard in this process: one route to `upstream`, access log off, `extra` YAML appended.
async fn start_switchyard(upstream: SocketAddr, extra: &str) -> Result<switchyard::app::Running> {
    let config = switchyard::config::parse(
        Path::new("alloc-count.yaml"),
        &format!(
            r#"listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
access_log: {{ enabled: false }}
{extra}
routes:
  - name: alloc
    versions:
      - {{ name: stable, endpoints: ["{upstream}"], weight: 100 }}
"#
        ),
    )?;
    Ok(switchyard::app::start(config).await?)
}

/// Live heap bytes per idle connection: `n` connections opened by a plain thread with blocking
/// std sockets (no heap per connection on the client side), each making one request, then held
/// while the count is read.
async fn idle_heap(addr: SocketAddr, n: usize) -> Result<f64> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let mut streams = Vec::with_capacity(n);
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = LIVE.load(Ordering::Relaxed);
    let client = std::thread::spawn(move || {
        let opened = (|| -> Result<()> {
            for _ in 0..n {
                let mut stream = std::net::TcpStream::connect(addr)?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                blocking_exchange(&mut stream, &mut buf)?;
                streams.push(stream);
            }
            Ok(())
        })();
        let _ = tx.send(opened);
        // Hold the connections until the count is read (bounded).
        let _ = release_rx.recv_timeout(Duration::from_secs(60));
        for stream in &streams {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    });
    tokio::time::timeout(Duration::from_secs(120), rx)
        .await
        .context("connections not open within 120 s")??
        .context("opening connections")?;
    // Past Switchyard's default `limits.idle_release_after` (1 s): what an idle connection keeps.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = LIVE.load(Ordering::Relaxed);
    let _ = release_tx.send(());
    let _ = tokio::task::spawn_blocking(move || client.join()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok((after - before) as f64 / n as f64)
}

/// One GET and its whole answer on a blocking socket.
fn blocking_exchange(stream: &mut std::net::TcpStream, buf: &mut [u8]) -> Result<()> {
    use std::io::{Read, Write};
    stream.write_all(b"GET /alloc HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")?;
    let mut filled = 0;
    for _ in 0..64 {
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            bail!("closed before a whole answer");
        }
        filled += n;
        if complete(&buf[..filled])? {
            return Ok(());
        }
    }
    bail!("no whole answer in 64 reads")
}

/// Whether `buf` holds a whole 200 answer with a Content-Length.
fn complete(buf: &[u8]) -> Result<bool> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = response.parse(buf)? else {
        return Ok(false);
    };
    if response.code != Some(200) {
        bail!("answered {:?}", response.code);
    }
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .context("no Content-Length")?;
    let length: usize = std::str::from_utf8(length.value)?.trim().parse()?;
    Ok(buf.len() - head >= length)
}

/// Allocations and bytes allocated per request, over `args.requests` requests on one connection.
async fn count(addr: SocketAddr, args: &Args) -> Result<(f64, f64)> {
    count_paced(addr, args, Duration::ZERO).await
}

/// Allocations and bytes per request, with `pause` before each request.
async fn count_paced(addr: SocketAddr, args: &Args, pause: Duration) -> Result<(f64, f64)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..args.warmup {
        exchange(&mut stream, &mut buf).await?;
    }
    let (a0, b0) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    for _ in 0..args.requests {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        exchange(&mut stream, &mut buf).await?;
    }
    let (a1, b1) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let n = args.requests as f64;
    Ok(((a1 - a0) as f64 / n, (b1 - b0) as f64 / n))
}

/// One GET and its whole answer (Content-Length), bounded by 5 s; `buf` is reused.
async fn exchange(stream: &mut TcpStream, buf: &mut [u8]) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(5), async {
        stream
            .write_all(b"GET /alloc HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut filled = 0;
        for _ in 0..64 {
            let n = stream.read(&mut buf[filled..]).await?;
            if n == 0 {
                bail!("closed before a whole answer");
            }
            filled += n;
            if complete(&buf[..filled])? {
                return Ok(());
            }
        }
        bail!("no whole answer in 64 reads")
    })
    .await
    .context("no answer within 5 s")?
}
