//! The composition root: build the first snapshot, bind every listener and the admin endpoint,
//! spawn the servers, the control task, the file watch and the SIGHUP handler, and shut them down
//! with a drain deadline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, Admin};
use crate::config::{self, Config, TokenSource};
use crate::control::{self, Control, ControlHandle, ReloadSource};
use crate::data::handler;
use crate::data::server;
use crate::data::shared::{Downstream, Shared};
use crate::data::snapshot::Snapshot;
use crate::metrics::Metrics;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration file was refused.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A listener's address could not be bound.
    #[error("{name}: cannot bind {addr}: {source}")]
    Bind {
        /// Listener name (`admin` for the admin endpoint).
        name: String,
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The admin token is missing or the admin endpoint would be exposed without one.
    #[error("admin: {0}")]
    AdminToken(String),
    /// The metrics registry refused a family (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A listener's certificate or key does not load.
    #[error(transparent)]
    Tls(#[from] crate::data::tls::TlsError),
    /// The configuration file's directory cannot be watched.
    #[error("cannot watch the configuration file: {0}")]
    Watch(#[from] notify::Error),
    /// The fleet block cannot be set up (TLS files, password).
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    /// A worker thread or its runtime could not be started (`--reuse-port`).
    #[error("cannot start a worker thread: {0}")]
    Workers(std::io::Error),
}

/// A running proxy.
pub struct Running {
    listeners: Listening,
    admin: Option<SocketAddr>,
    shared: Arc<Shared>,
    control: ControlHandle,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    /// The fleet's presence task, which gives up the lease on shutdown.
    presence: Option<JoinHandle<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

/// How the proxy listeners' connections are accepted and served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Accept {
    /// One accept loop per listener on the caller's runtime, whose scheduler spreads the
    /// connections over its workers.
    #[default]
    Shared,
    /// `run --reuse-port`: N sockets per listener bound with `SO_REUSEPORT`, and N worker
    /// threads, each a single-threaded runtime serving its own socket of every listener
    /// ([`crate::data::workers`]).
    PerWorker(usize),
}

/// Starts from a configuration file: reloads (file watch, SIGHUP, API) re-read it.
pub async fn start_from_file(file: &Path) -> Result<Running, StartError> {
    start_from_file_with(file, Accept::Shared).await
}

/// [`start_from_file`], accepting connections as `accept` says.
pub async fn start_from_file_with(file: &Path, accept: Accept) -> Result<Running, StartError> {
    let loaded = crate::control::load::load(file)?;
    for warning in &loaded.warnings {
        tracing::warn!("{}: {warning}", file.display());
    }
    let config = loaded.config;
    start_with(config, Some(file.to_path_buf()), accept).await
}

/// Starts from an already validated configuration (no file: reloads are refused).
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_with(config, None, Accept::Shared).await
}

/// [`start`], accepting connections as `accept` says.
pub async fn start_accepting(config: Config, accept: Accept) -> Result<Running, StartError> {
    start_with(config, None, accept).await
}

/// The error of binding `addr` for listener `name`.
fn bind_error(name: &str, addr: SocketAddr) -> impl Fn(std::io::Error) -> StartError + '_ {
    move |source| StartError::Bind {
        name: name.to_string(),
        addr,
        source,
    }
}

async fn bind(name: &str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let err = bind_error(name, addr);
    let listener = TcpListener::bind(addr).await.map_err(&err)?;
    let bound = listener.local_addr().map_err(&err)?;
    Ok((listener, bound))
}

/// Reads the admin token from where the configuration says.
fn admin_token(admin: &config::Admin) -> Result<Option<String>, StartError> {
    let token = match &admin.token {
        None => None,
        Some(TokenSource::Env(var)) => match std::env::var(var) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            _ => {
                return Err(StartError::AdminToken(format!(
                    "admin.token_env names {var}, which is not set or empty"
                )))
            }
        },
        Some(TokenSource::File(path)) => match std::fs::read_to_string(path) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            Ok(_) => {
                return Err(StartError::AdminToken(format!(
                    "admin.token_file {} is empty",
                    path.display()
                )))
            }
            Err(e) => {
                return Err(StartError::AdminToken(format!(
                    "admin.token_file {}: {e}",
                    path.display()
                )))
            }
        },
    };
    // An exposed admin endpoint without a token never gets here: validation refuses it.
    Ok(token)
}

async fn start_with(
    config: Config,
    file: Option<PathBuf>,
    accept: Accept,
) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new()?);
    let token = config
        .admin
        .as_ref()
        .map(admin_token)
        .transpose()?
        .flatten();

    // Bind everything before serving anything, so a bad address fails the start cleanly.
    let (bound, stores) = bind_listeners(&config, accept).await?;
    let admin_bound = match &config.admin {
        Some(a) => Some(bind("admin", a.addr).await?),
        None => None,
    };

    let drain = config.drain_timeout;
    let limits = config.limits;
    let global = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    // Each listener's own connection limit, and whether it serves through the fast path.
    let per_listener: Vec<(Option<usize>, bool)> = config
        .listeners
        .iter()
        .map(|l| (l.max_connections, l.fast_path))
        .collect();
    let fleet = config
        .fleet
        .clone()
        .map(|f| crate::fleet::Fleet::new(f, &metrics))
        .transpose()?;
    let (mut control, shared, status) = Control::new(config, file.clone(), metrics);
    let (remote_tx, remote_rx) = tokio::sync::mpsc::channel(64);
    if let Some(f) = &fleet {
        control.join_fleet(f.clone(), remote_rx);
    }
    let mirrors = control.mirrors();
    let control = control.spawn();
    let watcher = match &file {
        Some(f) => Some(control::watch::spawn(f, control.clone())?),
        None => None,
    };
    let (shutdown, _) = watch::channel(false);
    if file.is_some() {
        spawn_sighup(control.clone(), shutdown.subscribe());
    }
    let addresses = crate::fleet::presence::Addresses {
        listeners: bound
            .iter()
            .map(|(name, addr, ..)| (name.clone(), addr.to_string()))
            .collect(),
        admin: admin_bound.as_ref().map(|(_, a)| a.to_string()),
    };
    let presence = match &fleet {
        Some(f) => Some(join_fleet(f, &shared, remote_tx, addresses, &shutdown).await),
        None => None,
    };
    let exchange = fleet.as_ref().map(|f| {
        crate::fleet::windows::Windows::spawn(f.clone(), shutdown.subscribe())
            as Arc<dyn crate::release::analysis::Exchange>
    });
    let looks = spawn_analysis(
        shared.clone(),
        control.clone(),
        shutdown.subscribe(),
        exchange,
    );
    for store in &stores {
        store.spawn_reloader(shutdown.subscribe());
    }

    let connections = (global, per_listener);
    let (listeners, mut servers) =
        serve_listeners(bound, connections, &shared, drain, limits, &shutdown)?;
    let admin_state = Arc::new(Admin {
        shared: shared.clone(),
        control: control.clone(),
        status,
        token,
        listening: Default::default(),
        looks,
        mirrors,
        fleet,
    });
    let admin_addr = admin_bound.map(|(listener, addr)| {
        let serving = server::Serving {
            name: "admin".into(),
            tls: None,
            drain,
            limits,
            connections: server::ConnectionLimits::default(),
            refused: None,
            accepted: None,
            fast_path: true,
        };
        servers.push(serve_admin(
            listener,
            serving,
            admin_state.clone(),
            &shutdown,
        ));
        addr
    });
    admin_state.listening.store(true, Ordering::Release);

    Ok(Running {
        listeners,
        admin: admin_addr,
        shared,
        control,
        shutdown,
        servers,
        presence,
        _watcher: watcher,
    })
}

/// A bound listener: name, address, socket(s), TLS acceptor.
type Bound = (
    String,
    SocketAddr,
    Sockets,
    Option<tokio_rustls::TlsAcceptor>,
);

/// Each listener, as bound.
type Listening = Vec<BoundListener>;

/// A listener as bound: its name, address (the real port when 0 was asked for) and scheme.
#[derive(Clone, Debug)]
pub struct BoundListener {
    pub name: String,
    pub addr: SocketAddr,
    /// TLS is terminated on it.
    pub tls: bool,
}

impl BoundListener {
    /// `https` or `http`: what a client's URL for it starts with.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

/// A listener's socket, or one per worker ([`Accept::PerWorker`]).
enum Sockets {
    One(TcpListener),
    PerWorker(Vec<std::net::TcpListener>),
}

/// Loads each listener's certificates and binds its address (once per worker with
/// [`Accept::PerWorker`]).
async fn bind_listeners(
    config: &Config,
    accept: Accept,
) -> Result<(Vec<Bound>, Vec<Arc<crate::data::tls::CertStore>>), StartError> {
    let mut bound = Vec::with_capacity(config.listeners.len());
    let mut stores = Vec::new();
    for l in &config.listeners {
        let tls = match &l.tls {
            Some(t) => {
                let store = crate::data::tls::CertStore::load(t)?;
                let acceptor = tokio_rustls::TlsAcceptor::from(crate::data::tls::server_config(
                    store.clone(),
                )?);
                stores.push(store);
                Some(acceptor)
            }
            None => None,
        };
        let (sockets, addr) = match accept {
            Accept::Shared => {
                let (listener, addr) = bind(&l.name, l.addr).await?;
                (Sockets::One(listener), addr)
            }
            Accept::PerWorker(n) => {
                let (sockets, addr) =
                    crate::data::workers::bind(l.addr, n).map_err(bind_error(&l.name, l.addr))?;
                (Sockets::PerWorker(sockets), addr)
            }
        };
        bound.push((l.name.clone(), addr, sockets, tls));
    }
    Ok((bound, stores))
}

/// Starts a server per bound listener (per listener and worker with [`Accept::PerWorker`]);
/// returns the names and addresses, and the server tasks.
fn serve_listeners(
    bound: Vec<Bound>,
    (global, per_listener): (Arc<tokio::sync::Semaphore>, Vec<(Option<usize>, bool)>),
    shared: &Arc<Shared>,
    drain: std::time::Duration,
    limits: crate::config::Limits,
    shutdown: &watch::Sender<bool>,
) -> Result<(Listening, Vec<JoinHandle<()>>), StartError> {
    let mut listeners = Vec::with_capacity(bound.len());
    let mut servers = Vec::with_capacity(bound.len() + 1);
    let mut per_worker: Vec<Vec<crate::data::workers::Job>> = Vec::new();
    for ((name, addr, sockets, tls), (own, fast_path)) in bound.into_iter().zip(per_listener) {
        let listening = BoundListener {
            name: name.clone(),
            addr,
            tls: tls.is_some(),
        };
        tracing::info!(listener = %name, %addr, tls = listening.tls, "listening");
        let handler = shared.clone();
        let service = move |downstream: Downstream, request| {
            handler::handle(handler.clone(), downstream, request)
        };
        let serving = server::Serving {
            name: name.clone(),
            tls,
            drain,
            limits,
            connections: server::ConnectionLimits {
                global: Some(global.clone()),
                listener: own.map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
            },
            refused: Some(shared.metrics.clone()),
            accepted: None,
            fast_path,
        };
        match sockets {
            Sockets::One(listener) => servers.push(tokio::spawn(server::serve(
                listener,
                serving,
                service,
                shutdown.subscribe(),
            ))),
            Sockets::PerWorker(sockets) => {
                per_worker.resize_with(sockets.len(), Vec::new);
                for (worker, (socket, jobs)) in sockets.into_iter().zip(&mut per_worker).enumerate()
                {
                    let counted = shared
                        .metrics
                        .worker_connections
                        .with_label_values(&[&worker.to_string()]);
                    let serving = server::Serving {
                        accepted: Some(counted),
                        ..serving.clone()
                    };
                    jobs.push(crate::data::workers::job(
                        socket,
                        serving,
                        service.clone(),
                        shutdown.subscribe(),
                    ));
                }
            }
        }
        listeners.push(listening);
    }
    if !per_worker.is_empty() {
        tracing::info!(
            workers = per_worker.len(),
            "one accept loop per worker (SO_REUSEPORT)"
        );
        let spawned = crate::data::workers::spawn(per_worker).map_err(StartError::Workers)?;
        servers.extend(spawned);
    }
    Ok((listeners, servers))
}

/// Serves the admin listener.
fn serve_admin(
    listener: TcpListener,
    serving: server::Serving,
    admin: Arc<Admin>,
    shutdown: &watch::Sender<bool>,
) -> JoinHandle<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "admin listening");
    let service = move |downstream: Downstream, request| {
        admin::handle(admin.clone(), downstream.peer, request)
    };
    tokio::spawn(server::serve(
        listener,
        serving,
        service,
        shutdown.subscribe(),
    ))
}

fn spawn_sighup(control: ControlHandle, mut shutdown: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install a SIGHUP handler: reload with the file watch or the API");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    // The outcome is logged by the control task.
                    let _ = control.reload(ReloadSource::Signal).await;
                }
                _ = shutdown.changed() => break,
            }
        }
    });
}

impl Running {
    /// Each listener as bound.
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// The bound address of listener `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.addr)
    }

    /// The bound admin address, when an admin endpoint is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// The control task, for operator actions from inside the process.
    pub fn control(&self) -> &ControlHandle {
        &self.control
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.shared.metrics
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
        if let Some(presence) = self.presence {
            // Gives up the lease, so leadership moves without waiting for the TTL.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), presence).await;
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now, and returns what resolves on the first of
/// them, naming it. Call it before announcing that the proxy listens: a signal sent before the
/// handlers exist would end the process without a drain.
pub fn shutdown_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (mut term, mut int) = match handlers {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                // Without signal handlers the process can only be killed; wait on Ctrl-C as a
                // fallback.
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}

/// Starts the fleet's watch and presence, and waits (briefly) for the fleet's state to be
/// installed before traffic is served; returns the presence task.
async fn join_fleet(
    fleet: &Arc<crate::fleet::Fleet>,
    shared: &Arc<Shared>,
    remote: tokio::sync::mpsc::Sender<crate::fleet::Remote>,
    addresses: crate::fleet::presence::Addresses,
    shutdown: &watch::Sender<bool>,
) -> JoinHandle<()> {
    crate::fleet::sync::spawn(fleet.clone(), remote, shutdown.subscribe());
    let presence = crate::fleet::presence::spawn(
        fleet.clone(),
        shared.clone(),
        addresses,
        shutdown.subscribe(),
    );
    if !fleet
        .wait_installed(crate::fleet::REQUEST_TIMEOUT * 2)
        .await
    {
        tracing::warn!(
            error = fleet.status().last_error.as_deref().unwrap_or(""),
            "fleet store unreachable at start: serving the cached fleet state (state_file) if any, \
             else the configuration file, until etcd answers"
        );
    }
    presence
}

/// Starts the rollout analysis and hands its findings to the control task, which applies them.
fn spawn_analysis(
    shared: Arc<Shared>,
    control: ControlHandle,
    shutdown: watch::Receiver<bool>,
    exchange: Option<Arc<dyn crate::release::analysis::Exchange>>,
) -> crate::release::analysis::Looks {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let looks = crate::release::analysis::spawn_with(shared, tx, shutdown, exchange);
    tokio::spawn(async move {
        while let Some((route, finding)) = rx.recv().await {
            let action = control::Action::from(finding);
            if let Err(error) = control.act(&route, action, "analysis").await {
                tracing::warn!(route, %error, "analysis finding refused");
            }
        }
    });
    looks
}
