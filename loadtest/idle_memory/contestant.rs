//! The contestants of the idle-memory runner: how each is started on loopback against the one
//! upstream, which processes make up its resident memory, and how it is stopped (by pid, on drop:
//! SIGTERM, a bounded wait, then SIGKILL).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A proxy measured by the runner.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Kind {
    /// The Switchyard release binary, one route to the upstream, access log off.
    Switchyard,
    /// `--example textbook-proxy`: hyper's HTTP/1 server and hyper-util's legacy client.
    Textbook,
    /// The textbook proxy served by hyper-util's auto builder (HTTP/1.1 and h2c), as Switchyard
    /// serves cleartext: prices that one choice.
    TextbookAuto,
    /// Debian's nginx, one worker, proxy_pass with upstream keep-alive.
    Nginx,
}

impl Kind {
    /// The name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Switchyard => "switchyard",
            Kind::Textbook => "textbook hyper proxy",
            Kind::TextbookAuto => "textbook, hyper-util auto server",
            Kind::Nginx => "nginx",
        }
    }
}

/// What a contestant needs to start.
pub struct Contestant {
    pub kind: Kind,
    pub upstream: SocketAddr,
    pub connections: usize,
    /// Processes sharing the port (SO_REUSEPORT): Switchyard processes, or nginx workers.
    pub processes: usize,
    pub nofile: u64,
    pub switchyard_bin: PathBuf,
    pub textbook_bin: PathBuf,
    /// Serve over TLS with `localhost.crt` and `localhost.key` from this directory.
    pub certs: Option<PathBuf>,
    /// Offer HTTP/2 by ALPN (nginx: `http2` on the listener; Switchyard always offers it).
    pub h2: bool,
}

/// A started contestant; dropping it stops its processes.
pub struct Running {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// The processes started: one, or one Switchyard per `--processes`.
    children: Vec<Child>,
    /// Processes serving connections: Switchyard's, or nginx's workers.
    processes: usize,
    _dir: tempfile::TempDir,
}

/// The in-process upstream: Switchyard's demo upstream (hyper, a small fixed answer, keep-alive).
pub async fn spawn_upstream() -> Result<SocketAddr> {
    Ok(switchyard::cli::demo::spawn_upstream("idle").await?)
}

impl Contestant {
    /// Starts the contestant and waits (bounded) until it listens; `None` when nginx is not installed.
    pub async fn start(&self) -> Result<Option<Running>> {
        let dir = tempfile::tempdir()?;
        if self.processes > 1 && matches!(self.kind, Kind::Textbook | Kind::TextbookAuto) {
            bail!("--processes above 1 is for switchyard and nginx: the textbook proxy has no SO_REUSEPORT");
        }
        if self.certs.is_some() && matches!(self.kind, Kind::Textbook | Kind::TextbookAuto) {
            bail!("--tls is for switchyard and nginx: the textbook proxy serves cleartext only");
        }
        let (children, addr) = match self.kind {
            Kind::Switchyard => self.start_switchyard(dir.path())?,
            Kind::Textbook | Kind::TextbookAuto => {
                let mut command = Command::new(&self.textbook_bin);
                command.args(["--listen", "127.0.0.1:0", "--max-seconds", "3600"]);
                if matches!(self.kind, Kind::TextbookAuto) {
                    command.args(["--server", "auto"]);
                }
                command.arg("--upstream").arg(self.upstream.to_string());
                let (child, addr) = spawn_announcing(command, &self.textbook_bin, "listening on ")?;
                (vec![child], addr)
            }
            Kind::Nginx => {
                let Some(nginx) = find_nginx() else {
                    return Ok(None);
                };
                let (child, addr) = self.start_nginx(&nginx, dir.path())?;
                (vec![child], addr)
            }
        };
        let running = Running {
            kind: self.kind,
            addr,
            children,
            processes: self.processes,
            _dir: dir,
        };
        running.wait_listening().await?;
        Ok(Some(running))
    }

    /// One process, or `processes` processes with `--reuse-port` on one port chosen here.
    fn start_switchyard(&self, dir: &Path) -> Result<(Vec<Child>, SocketAddr)> {
        let listen = if self.processes > 1 {
            free_port()?.to_string()
        } else {
            "127.0.0.1:0".to_string()
        };
        let tls = match &self.certs {
            Some(certs) => format!(
                ", tls: {{ certificates: [{{ cert: {:?}, key: {:?} }}] }}",
                certs.join("localhost.crt"),
                certs.join("localhost.key")
            ),
            None => String::new(),
        };
        let file = dir.join("switchyard.yaml");
        std::fs::write(
            &file,
            format!(
                r#"listeners: [{{ name: public, addr: "{listen}"{tls} }}]
access_log: {{ enabled: false }}
limits: {{ max_connections: {max}, keep_alive_timeout: 300s }}
routes:
  - name: idle
    versions:
      - {{ name: stable, endpoints: ["{upstream}"], weight: 100 }}
"#,
                max = self.connections + 1024,
                upstream = self.upstream
            ),
        )?;
        let mut children = Vec::with_capacity(self.processes);
        let mut addr = None;
        for _ in 0..self.processes {
            let mut command = Command::new(&self.switchyard_bin);
            command.arg("run").arg("--config").arg(&file);
            if self.processes > 1 {
                command.arg("--reuse-port");
            }
            command.env("RUST_LOG", "warn");
            let started = spawn_announcing(command, &self.switchyard_bin, "listener public on ");
            match started {
                Ok((child, a)) => {
                    children.push(child);
                    addr = Some(a);
                }
                Err(error) => {
                    stop_all(&mut children);
                    return Err(error);
                }
            }
        }
        Ok((children, addr.context("no process started")?))
    }

    fn start_nginx(&self, nginx: &Path, dir: &Path) -> Result<(Child, SocketAddr)> {
        let addr = free_port()?;
        let (workers, reuseport) = (
            self.processes,
            if self.processes > 1 { " reuseport" } else { "" },
        );
        // Per worker: with reuseport each worker has its own socket and share of the clients.
        let per_worker = self.connections.div_ceil(self.processes);
        let d = dir.display();
        let ssl = match &self.certs {
            Some(certs) => format!(
                " ssl{};\n        ssl_certificate {};\n        ssl_certificate_key {}",
                if self.h2 { " http2" } else { "" },
                certs.join("localhost.crt").display(),
                certs.join("localhost.key").display()
            ),
            None => String::new(),
        };
        // Root's nginx would run its worker as nobody, who may not write the temporary paths.
        let user = if is_root() { "user root root;" } else { "" };
        let conf = format!(
            r#"worker_processes {workers};
{user}
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {wc}; }}
http {{
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    upstream idle {{
        server {upstream};
        keepalive 256;
    }}
    server {{
        listen {addr} backlog=4096{reuseport}{ssl};
        location / {{
            proxy_pass http://idle;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"#,
            nofile = self.nofile,
            // nginx closes idle keep-alive connections once fewer than 1/16 of its connection
            // slots are free: an eighth more slots than clients keeps it from doing so.
            wc = per_worker + per_worker / 8 + 1024,
            upstream = self.upstream,
        );
        let file = dir.join("nginx.conf");
        std::fs::write(&file, conf)?;
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&file)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("{}", nginx.display()))?;
        Ok((child, addr))
    }
}

impl Running {
    /// The contestant's processes: the one started and its children (nginx's workers).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for child in &self.children {
            pids.push(child.id());
            pids.extend(children_of(child.id()));
        }
        pids
    }

    /// Processes serving connections: Switchyard's, or nginx's workers.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// Stops the contestant (the same as dropping it).
    pub fn stop(self) {}

    async fn wait_listening(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "{} did not listen on {} within 10 s",
            self.kind.name(),
            self.addr
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let started: Vec<u32> = self.children.iter().map(Child::id).collect();
        let workers: Vec<u32> = self
            .pids()
            .into_iter()
            .filter(|p| !started.contains(p))
            .collect();
        stop_all(&mut self.children);
        // nginx's workers leave with their master; one that did not is killed by its pid.
        for pid in workers {
            if Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// SIGTERM to each, a bounded wait (5 s in all), then SIGKILL.
fn stop_all(children: &mut [Child]) {
    for child in children.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    reap(children.iter_mut(), Instant::now() + Duration::from_secs(5));
}

/// Waits for each child to exit until `deadline` (for all of them), then kills what is left.
pub fn reap<'a>(children: impl Iterator<Item = &'a mut Child>, deadline: Instant) {
    for child in children {
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A loopback address with a port free now (bound and released).
fn free_port() -> Result<SocketAddr> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Spawns `command` and reads its stdout (bounded: 10 s) until a line carries `marker` followed by
/// the bound address as a URL (`http://` or `https://`); the rest of its output is drained by a
/// thread until it exits.
fn spawn_announcing(
    mut command: Command,
    binary: &Path,
    marker: &'static str,
) -> Result<(Child, SocketAddr)> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("{} (build it first)", binary.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.split(marker).nth(1) {
                let url = url.trim();
                let addr = url.split_once("://").map_or(url, |(_, addr)| addr);
                let _ = tx.send(addr.to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(addr) => Ok((child, addr.parse()?)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} announced no address within 10 s", binary.display())
        }
    }
}

/// Resident memory of the processes, KB, summed (`VmRSS` from /proc/PID/status).
pub fn rss_kb(pids: &[u32]) -> u64 {
    pids.iter()
        .map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// Processes whose parent is `parent` (a scan of /proc/*/stat).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(") ")?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}
