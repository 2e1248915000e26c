//! Heap allocations per proxied request (issue 16): Switchyard's data path against the textbook
//! hyper proxy, both in this process on one thread (a current-thread runtime), with a counting
//! global allocator. A keep-alive client sends GETs over one connection: first straight to the
//! upstream (what the client and the upstream allocate), then through each proxy; a proxy's own
//! figure is its row minus the direct row, from the same run.
//!
//! Run: `cargo run --release --example alloc-count [-- --requests 20000]`. Loopback only.

#![allow(clippy::unwrap_used)] // a measurement harness: a failure should stop it loudly
#![allow(unsafe_code)] // a counting global allocator is unsafe by definition; it only forwards to System

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
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

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
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
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(1..=1_000_000).contains(&args.requests) || args.warmup > 1_000_000 {
        bail!("--requests must be 1 to 1,000,000 and --warmup at most 1,000,000");
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
    ));
    let config = switchyard::config::parse(
        Path::new("alloc-count.yaml"),
        &format!(
            r#"listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
access_log: {{ enabled: false }}
routes:
  - name: alloc
    versions:
      - {{ name: stable, endpoints: ["{upstream}"], weight: 100 }}
"#
        ),
    )?;
    let switchyard = switchyard::app::start(config).await?;
    let switchyard_addr = switchyard.addr("public").context("the listener")?;

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
        ("switchyard", switchyard_addr),
    ] {
        let (n, bytes) = count(addr, &args).await.context(name)?;
        println!("| {name} | {n:.1} | {bytes:.0} | {:.1} |", n - direct.0);
    }
    switchyard.shutdown().await;
    Ok(())
}

/// Allocations and bytes allocated per request, over `args.requests` requests on one connection.
async fn count(addr: SocketAddr, args: &Args) -> Result<(f64, f64)> {
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
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(head) = response.parse(&buf[..filled])? else {
                continue;
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
            if filled - head >= length {
                return Ok(());
            }
        }
        bail!("no whole answer in 64 reads")
    })
    .await
    .context("no answer within 5 s")?
}
