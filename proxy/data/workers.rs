//! One accept loop per worker thread (`switchyard run --reuse-port`), as nginx's `reuseport` and
//! Envoy's listener per worker do.
//!
//! Each proxy listener is N sockets bound to one address with `SO_REUSEPORT`, and each of N
//! threads runs a single-threaded runtime serving its own socket of every listener. The kernel
//! spreads new connections over the sockets by a hash of their addresses; a connection is then
//! accepted, served and closed by one thread, and its requests' tasks (a mirror copy, an HTTP/2
//! stream) stay on that thread too: no task moves between cores and no run queue is shared. The
//! control plane, the admin endpoint and the background tasks stay on the main runtime; the
//! snapshot, the connection limits, the upstream pools and the metrics are shared by all, as in
//! the default mode.
//!
//! What it costs: no work stealing, so a worker whose few connections are heavy is not helped
//! by an idle one (`switchyard_worker_connections_total{worker}` shows how the kernel spread
//! them), and any process of the same user can bind the port with `SO_REUSEPORT` too.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

/// Pending connections the kernel queues per socket (tokio's own `TcpListener::bind` uses 1024).
const BACKLOG: u32 = 1024;

/// What a worker runs: made inside the worker's runtime (where its socket is registered).
pub type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Binds `n` sockets to `addr`, each with `SO_REUSEPORT`; the first decides the port when
/// `addr` asks for port 0. The sockets are listening and non-blocking, registered with no
/// runtime yet (each worker registers its own).
pub fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut sockets = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n {
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
    Ok(sockets)
}

/// Starts worker `index` on a thread of its own (`switchyard-worker-<index>`) with a
/// single-threaded runtime that runs `jobs` to their end. The handle, awaited on the caller's
/// runtime, resolves when they have all ended (the runtime is gone by then, and with it any
/// task they left behind, as at the process's exit).
pub fn spawn(index: usize, jobs: Vec<Job>) -> io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(format!("switchyard-worker-{index}"))
        .spawn(move || {
            runtime.block_on(async move {
                let tasks: Vec<_> = jobs.into_iter().map(|job| tokio::spawn(job())).collect();
                for task in tasks {
                    if let Err(error) = task.await {
                        tracing::error!(worker = index, %error, "listener task failed");
                    }
                }
            });
            drop(runtime);
            let _ = done.send(());
        })?;
    Ok(tokio::spawn(async move {
        if ended.await.is_err() {
            tracing::error!(
                worker = index,
                "worker thread ended without finishing its listeners"
            );
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_socket_shares_the_port_the_first_one_got() {
        let sockets = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let ports: Vec<u16> = sockets
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        assert_eq!(ports.len(), 3);
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
        // A socket without SO_REUSEPORT cannot join them.
        let plain = std::net::TcpListener::bind(("127.0.0.1", ports[0]));
        assert!(plain.is_err(), "a plain bind on a reuse-port address");
    }
}
