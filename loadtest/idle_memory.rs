//! Resident memory per idle keep-alive client connection (issue 16), side by side: the Switchyard
//! release binary, the textbook hyper proxy (`--example textbook-proxy`) and nginx (when installed;
//! one worker, upstream keep-alive). One upstream runs in this process. For each contestant in
//! turn: start it, make one warm-up request, read its resident memory (`VmRSS` from /proc; nginx:
//! master and workers), open N keep-alive connections that each send one GET and read the whole
//! answer, let them idle, read the resident memory again, close the connections (RST, so no
//! TIME_WAIT is left behind) and stop the contestant. It prints one table of KB per connection,
//! (after - before) / N. The idle time (`--settle-seconds`, default 3) is longer than Switchyard's
//! `limits.idle_release_after` (1 s) plus jemalloc's purge delay (1 s): the figure is what an idle
//! connection costs once parked; a shorter settle measures connections still holding hyper's state.
//!
//! Run: `cargo build --release --bin switchyard --example textbook-proxy --example idle-memory`,
//! then `target/release/examples/idle-memory --connections 2000` (the order of contestants with
//! `--contestants switchyard,textbook,nginx`; alternate it over runs so drift cancels). `--tls`
//! measures connections over TLS (HTTP/1.1 by ALPN, the development certificate from `certs-dev/`)
//! on Switchyard and nginx, `--h2` HTTP/2 over TLS.
//!
//! It raises its own open-file limit (soft to hard, and the hard one too when it may, through
//! `prlimit`); the contestants inherit it. Past 20,000 connections the clients bind further loopback
//! source addresses (127.0.0.2, 127.0.0.3, ...), each with its own range of ephemeral ports. Where
//! the limit cannot be raised far enough (a container without CAP_SYS_RESOURCE), `--processes P`
//! runs each contestant as P processes on one port (Switchyard with `--reuse-port`, nginx with P
//! workers and `reuseport`), and the clients go to holder processes (`holders.rs`) when they do not
//! fit under the runner's own limit: `--connections 50000 --processes 4` under a limit of 20,000.
//! Every wait is bounded; children are killed at the end, on error too (a guard that kills by pid
//! on drop).

#![allow(clippy::unwrap_used)] // a measurement harness: a failure should stop it loudly

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

#[path = "idle_memory/client.rs"]
mod client;
#[path = "idle_memory/contestant.rs"]
mod contestant;
#[path = "idle_memory/holders.rs"]
mod holders;

use client::{count_open, open_deadline, reset_all, Dialer, Held};
use contestant::{rss_kb, Contestant, Kind, Running};
use holders::Holders;

#[derive(Parser)]
#[command(
    about = "Resident memory per idle keep-alive connection: Switchyard, textbook hyper proxy, nginx"
)]
struct Args {
    /// Idle keep-alive client connections to hold on each contestant.
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// Contestants, in the order measured: switchyard, textbook, textbook-auto, nginx (skipped when
    /// not installed).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "switchyard,textbook,nginx"
    )]
    contestants: Vec<Kind>,
    /// Connections opened at the same time (each sends its GET and reads the answer before the next).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of idling after the last connection is open, before the second reading.
    #[arg(long, default_value_t = 3)]
    settle_seconds: u64,
    /// The Switchyard binary (default: `switchyard` in the release directory this example is in).
    #[arg(long)]
    switchyard_bin: Option<PathBuf>,
    /// The textbook proxy binary (default: `textbook-proxy` beside this example).
    #[arg(long)]
    textbook_bin: Option<PathBuf>,
    /// Processes per contestant, sharing its port with SO_REUSEPORT: Switchyard processes started
    /// with `--reuse-port`, nginx workers with `listen ... reuseport`. For counts past one
    /// process's open-file limit where it cannot be raised. Not for the textbook proxies.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Serve and connect over TLS (HTTP/1.1 by ALPN): Switchyard and nginx with the development
    /// certificate for localhost from `--certs`, the clients trusting its CA. Not for the textbook
    /// proxies.
    #[arg(long)]
    tls: bool,
    /// HTTP/2 over TLS (ALPN `h2`; implies `--tls`): hyper's client connection on the runner's
    /// side. HTTP/2 connections never park in Switchyard (hyper's connection keeps its state).
    #[arg(long)]
    h2: bool,
    /// The directory of `localhost.crt`, `localhost.key` and `ca.crt` (default: this checkout's
    /// `certs-dev/`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/certs-dev"))]
    certs: PathBuf,
    /// Holder mode (started by the runner itself, see `holders.rs`): hold connections to ADDR.
    #[arg(long, hide = true)]
    hold: Option<SocketAddr>,
    #[arg(long, hide = true, default_value_t = 0)]
    hold_first: usize,
    #[arg(long, hide = true, default_value_t = 0)]
    hold_count: usize,
}

const MAX_CONNECTIONS: usize = 200_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    args.tls |= args.h2;
    if let Some(addr) = args.hold {
        let dialer = dialer(&args, addr)?;
        return holders::hold(dialer, args.hold_first, args.hold_count, args.concurrency).await;
    }
    if args.connections == 0 || args.connections > MAX_CONNECTIONS {
        bail!("--connections must be between 1 and {MAX_CONNECTIONS}");
    }
    if args.concurrency == 0 || args.concurrency > 1024 {
        bail!("--concurrency must be between 1 and 1024");
    }
    if args.processes == 0 || args.processes > 16 {
        bail!("--processes must be between 1 and 16");
    }
    let settle = Duration::from_secs(args.settle_seconds.min(600));
    // Each side of a connection is a descriptor: ours here (or in holder processes), the
    // contestant's in its processes.
    let nofile = raise_nofile(args.connections as u64 + client_overhead(&args))?;
    // SO_REUSEPORT spreads connections by a hash of their addresses: room for a twentieth more.
    let per_process = args.connections.div_ceil(args.processes);
    let spread = if args.processes > 1 {
        per_process / 20
    } else {
        0
    };
    let each = (per_process + spread + 1024) as u64;
    if each > nofile {
        bail!(
            "{} connections over {} contestant process(es) need {each} descriptors each and the open-file limit is {nofile} (raising it needs CAP_SYS_RESOURCE): raise --processes",
            args.connections, args.processes
        );
    }
    let upstream = contestant::spawn_upstream().await?;
    let here = std::env::current_exe()?;
    let examples = here
        .parent()
        .context("the example's directory")?
        .to_path_buf();
    let switchyard_bin = args.switchyard_bin.clone().unwrap_or_else(|| {
        examples
            .parent()
            .map(|release| release.join("switchyard"))
            .unwrap_or_default()
    });
    let textbook_bin = args
        .textbook_bin
        .clone()
        .unwrap_or_else(|| examples.join("textbook-proxy"));

    println!(
        "Idle keep-alive connections{}: {} per contestant ({} process(es) each), one GET each, then {} s idle; open-file limit {nofile} per process; upstream {upstream}\n",
        match (args.h2, args.tls) {
            (true, _) => " (HTTP/2 over TLS)",
            (false, true) => " over TLS",
            (false, false) => "",
        },
        args.connections,
        args.processes,
        settle.as_secs()
    );
    let mut rows = Vec::new();
    for kind in &args.contestants {
        let contestant = Contestant {
            kind: *kind,
            upstream,
            connections: args.connections,
            processes: args.processes,
            nofile,
            switchyard_bin: switchyard_bin.clone(),
            textbook_bin: textbook_bin.clone(),
            certs: args.tls.then(|| args.certs.clone()),
            h2: args.h2,
        };
        let Some(running) = contestant.start().await? else {
            eprintln!("idle-memory: {} not installed; skipped", kind.name());
            continue;
        };
        let row = measure(&running, &args, settle, nofile).await;
        running.stop();
        let row = row.with_context(|| format!("measuring {}", kind.name()))?;
        eprintln!(
            "idle-memory: {}: {:.1} KB per connection",
            kind.name(),
            row.per_connection_kb()
        );
        rows.push(row);
    }
    println!("| Contestant | Processes | RSS before | RSS after | Connections held | KB per connection |");
    println!("|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {} | {:.1} MB | {:.1} MB | {} | {:.1} |",
            row.name,
            row.processes,
            row.before_kb as f64 / 1024.0,
            row.after_kb as f64 / 1024.0,
            row.held,
            row.per_connection_kb()
        );
    }
    Ok(())
}

struct Row {
    name: &'static str,
    processes: usize,
    before_kb: u64,
    after_kb: u64,
    held: usize,
    connections: usize,
}

impl Row {
    fn per_connection_kb(&self) -> f64 {
        (self.after_kb as f64 - self.before_kb as f64) / self.connections as f64
    }
}

async fn measure(running: &Running, args: &Args, settle: Duration, nofile: u64) -> Result<Row> {
    // One warm-up request on its own connection, so lazy set-up is in "before".
    let dialer = dialer(args, running.addr)?;
    let warm = dialer.open_one(0).await.context("warm-up request")?;
    reset_all(&[warm]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_kb = rss_kb(&running.pids());
    let started = Instant::now();
    let n = args.connections;
    // The clients' sockets in this process when they fit under its limit, else in holders.
    let room = nofile.saturating_sub(client_overhead(args)).max(1) as usize;
    let mut clients = if n <= room {
        Clients::Here(dialer.open_range(0, n, args.concurrency).await?)
    } else {
        let deadline = open_deadline(n);
        let holders = tokio::task::block_in_place(|| {
            Holders::open(
                running.addr,
                holder_args(args),
                n,
                n.div_ceil(room),
                args.concurrency,
                deadline,
            )
        })?;
        Clients::Holders(holders)
    };
    eprintln!(
        "idle-memory: {}: {n} connections open in {:.1} s ({}); idling {} s",
        running.kind.name(),
        started.elapsed().as_secs_f64(),
        clients.describe(),
        settle.as_secs()
    );
    tokio::time::sleep(settle).await;
    let after_kb = rss_kb(&running.pids());
    if running.processes() > 1 {
        // How SO_REUSEPORT spread the connections: descriptors open in each process.
        let spread: Vec<String> = running
            .pids()
            .iter()
            .map(|pid| {
                let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
                format!("{pid}: {fds}")
            })
            .collect();
        eprintln!(
            "idle-memory: {}: open descriptors per process: {}",
            running.kind.name(),
            spread.join(", ")
        );
    }
    let held = match &mut clients {
        Clients::Here(streams) => count_open(streams),
        Clients::Holders(holders) => tokio::task::block_in_place(|| holders.count_open())?,
    };
    if let Clients::Here(held) = &clients {
        reset_all(held);
    }
    drop(clients);
    Ok(Row {
        name: running.kind.name(),
        processes: running.processes(),
        before_kb,
        after_kb,
        held,
        connections: n,
    })
}

/// Where the client side of the connections lives.
enum Clients {
    Here(Vec<Held>),
    Holders(Holders),
}

impl Clients {
    fn describe(&self) -> String {
        match self {
            Clients::Here(_) => "clients in this process".into(),
            Clients::Holders(h) => format!("clients in {} holder processes", h.len()),
        }
    }
}

/// How the clients connect to `addr`: cleartext, TLS or HTTP/2 over TLS, as the arguments say.
fn dialer(args: &Args, addr: SocketAddr) -> Result<Dialer> {
    let ca = args.tls.then(|| args.certs.join("ca.crt"));
    Dialer::new(addr, ca.as_deref(), args.h2)
}

/// What a holder process is told besides its share: how to connect.
fn holder_args(args: &Args) -> Vec<std::ffi::OsString> {
    let mut dial: Vec<std::ffi::OsString> = Vec::new();
    if args.tls {
        dial.extend(["--tls".into(), "--certs".into(), args.certs.clone().into()]);
    }
    if args.h2 {
        dial.push("--h2".into());
    }
    dial
}

/// Descriptors the runner needs besides its clients' sockets.
fn client_overhead(args: &Args) -> u64 {
    4 * args.concurrency as u64 + 1024
}

/// Raises the soft open-file limit to the hard one, and both to `needed` when the hard one is
/// lower and this process may raise it (root with CAP_SYS_RESOURCE); returns the limit now in
/// force, which may be below `needed`.
fn raise_nofile(needed: u64) -> Result<u64> {
    let (soft, hard) = nofile()?;
    let target_hard = hard.max(needed);
    if soft < target_hard {
        let pid = std::process::id().to_string();
        let value = format!("--nofile={target_hard}:{target_hard}");
        let raised = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &value])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !raised && soft < hard {
            let value = format!("--nofile={hard}:{hard}");
            let _ = std::process::Command::new("prlimit")
                .args(["--pid", &pid, &value])
                .status();
        }
    }
    let (soft, _) = nofile()?;
    if soft < needed {
        eprintln!("idle-memory: {needed} open files wanted, the limit stays {soft} (raising the hard limit needs CAP_SYS_RESOURCE): clients go to holder processes");
    }
    Ok(soft)
}

/// This process's (soft, hard) open-file limits, from /proc/self/limits.
fn nofile() -> Result<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open-file limit in /proc/self/limits")?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    let mut next = || -> Result<u64> {
        let field = fields.next().context("a limit")?;
        Ok(if field == "unlimited" {
            u64::MAX
        } else {
            field.parse()?
        })
    };
    Ok((next()?, next()?))
}
