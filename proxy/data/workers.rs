//! One accept loop per worker thread (`switchyard run --reuse-port`), as nginx's `reuseport` and
//! Envoy's listener per worker do.
//!
//! Each proxy listener is N sockets bound to one address with `SO_REUSEPORT`, and each of N
//! threads runs a single-threaded runtime serving its own socket of every listener. The kernel
//! spreads new connections over the sockets by a hash of their addresses; a connection is then
//! accepted, served and closed by one thread, and so are its HTTP/2 streams and upgraded
//! (WebSocket) splices: no task moves between cores and no run queue is shared. HTTP/1.1 upstream
//! connections are pooled per worker (`upstream/direct/local.rs`). The control plane, the admin
//! endpoint and the background tasks (mirror dispatchers, health checks, analysis) stay on the
//! main runtime; the snapshot, the connection limits and the metrics are shared by all, as in the
//! default mode.
//!
//! What it costs: no work stealing, so a worker whose few connections are heavy is not helped
//! by an idle one (`switchyard_worker_connections_total{worker}` shows how the kernel spread
//! them), and any process of the same user can bind the port with `SO_REUSEPORT` too.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

use crate::data::body::ResponseBody;
use crate::data::server::{serve, Serving};
use crate::data::shared::{Downstream, Inbound};

/// How many task polls a single-threaded runtime makes between two looks for new I/O events
/// (tokio's default is 61). Under load the run queue is rarely empty, so a connection whose socket
/// became ready waits for the next look; every 16 polls, the slowest 1% of a saturating closed loop
/// waited about a quarter less, at the same requests/s (docs/performance.md, runtime tuning).
pub const EVENT_INTERVAL: u32 = 16;

/// Pending connections the kernel queues per socket (tokio's own `TcpListener::bind` uses 1024).
const BACKLOG: u32 = 1024;

/// What a worker runs: made inside the worker's runtime (where its socket is registered).
pub type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Binds `n` sockets (one at least) to `addr`, each with `SO_REUSEPORT`; the first decides the
/// port when `addr` asks for port 0. Returns them, listening and non-blocking, registered with no
/// runtime yet (each worker registers its own), and the address they are bound to.
pub fn bind(addr: SocketAddr, n: usize) -> io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let mut sockets = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n.max(1) {
        let socket = if at.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(at)?;
        let listener = socket.listen(BACKLOG)?;
        at = listener.local_addr()?;
        sockets.push(listener.into_std()?);
    }
    Ok((sockets, at))
}

/// One listener's accept loop on a worker: its socket registered with the worker's runtime.
pub fn job<S, F>(
    socket: std::net::TcpListener,
    serving: Serving,
    service: S,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Job
where
    S: Fn(Downstream, Request<Inbound>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    Box::new(move || {
        Box::pin(async move {
            match TcpListener::from_std(socket) {
                Ok(listener) => serve(listener, serving, service, shutdown).await,
                Err(error) => tracing::error!(%error, "a worker cannot register its socket"),
            }
        })
    })
}

thread_local! {
    /// Whether this thread is a worker.
    static ON_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is one of the workers (never in the default mode).
pub fn on_worker() -> bool {
    ON_WORKER.get()
}

/// Starts one worker per entry of `jobs`, each on a thread of its own (`switchyard-worker-<i>`)
/// with a single-threaded runtime that runs its jobs to their end. The handles, awaited on the
/// caller's runtime, resolve when every worker's jobs have ended.
///
/// A worker's runtime outlives its own jobs until every worker's have ended: an HTTP/2 upstream
/// connection (hyper-util's pooled client) made on one worker may serve a request on another,
/// and it lives only as long as the runtime that drives it. Each worker reaps its own pools of upstream
/// connections ([`crate::data::upstream::reap_worker_pools`]) and closes them last.
pub fn spawn(jobs: Vec<Vec<Job>>) -> io::Result<Vec<JoinHandle<()>>> {
    let all_done = Arc::new(tokio::sync::Barrier::new(jobs.len()));
    let mut handles = Vec::with_capacity(jobs.len());
    // Every runtime first: a failure then leaves no worker waiting for the others.
    let runtimes = (0..jobs.len())
        .map(|_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .event_interval(EVENT_INTERVAL)
                .build()
        })
        .collect::<io::Result<Vec<_>>>()?;
    for ((index, jobs), runtime) in jobs.into_iter().enumerate().zip(runtimes) {
        let all_done = all_done.clone();
        let (done, ended) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("switchyard-worker-{index}"))
            .spawn(move || {
                ON_WORKER.set(true);
                runtime.block_on(async move {
                    let reaper = tokio::spawn(crate::data::upstream::reap_worker_pools());
                    let tasks: Vec<_> = jobs.into_iter().map(|job| tokio::spawn(job())).collect();
                    for task in tasks {
                        if let Err(error) = task.await {
                            tracing::error!(worker = index, %error, "listener task failed");
                        }
                    }
                    all_done.wait().await;
                    reaper.abort();
                    crate::data::upstream::close_worker_pools();
                });
                drop(runtime);
                let _ = done.send(());
            })?;
        handles.push(tokio::spawn(async move {
            if ended.await.is_err() {
                tracing::error!(
                    worker = index,
                    "worker thread ended without finishing its listeners"
                );
            }
        }));
    }
    Ok(handles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_socket_shares_the_port_the_first_one_got() {
        let (sockets, addr) = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let ports: Vec<u16> = sockets
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        assert_eq!(ports.len(), 3);
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
        assert_eq!(addr.port(), ports[0]);
        // A socket without SO_REUSEPORT cannot join them.
        let plain = std::net::TcpListener::bind(("127.0.0.1", ports[0]));
        assert!(plain.is_err(), "a plain bind on a reuse-port address");
    }
}
