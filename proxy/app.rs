//! The composition root: build the first snapshot, bind every listener, spawn the servers, and
//! shut them down with a drain deadline.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::handler::Shared;
use crate::server;
use crate::snapshot::Snapshot;
use crate::upstream::Clients;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener's address could not be bound.
    #[error("listener {name}: cannot bind {addr}: {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A running proxy.
pub struct Running {
    listeners: Vec<(String, SocketAddr)>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

/// Binds every listener of `config` and starts serving. Returns once all listeners are bound.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let clients = Clients::default();
    let snapshot = Snapshot::build(config.clone(), 1, &clients);
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(snapshot),
    });

    let mut bound = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        let listener = TcpListener::bind(l.addr)
            .await
            .map_err(|source| StartError::Bind {
                name: l.name.clone(),
                addr: l.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            name: l.name.clone(),
            addr: l.addr,
            source,
        })?;
        bound.push((l.name.clone(), addr, listener));
    }

    let (shutdown, _) = watch::channel(false);
    let mut listeners = Vec::with_capacity(bound.len());
    let mut servers = Vec::with_capacity(bound.len());
    for (name, addr, listener) in bound {
        tracing::info!(listener = %name, %addr, "listening");
        servers.push(tokio::spawn(server::serve(
            name.clone(),
            listener,
            shared.clone(),
            shutdown.subscribe(),
            config.drain_timeout,
        )));
        listeners.push((name, addr));
    }
    Ok(Running {
        listeners,
        shared,
        shutdown,
        servers,
    })
}

impl Running {
    /// Each listener's name and the address it is bound to (the real port when 0 was asked for).
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    /// The bound address of listener `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// Stops accepting, lets in-flight requests finish up to the drain deadline, and returns when
    /// every listener is done.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for server in self.servers {
            if let Err(error) = server.await {
                tracing::error!(%error, "listener task failed");
            }
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C), naming it.
pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            // Without signal handlers the process can only be killed; wait on Ctrl-C as a fallback.
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
