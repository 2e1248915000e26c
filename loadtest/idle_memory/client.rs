//! The runner's client side: connections that each make one keep-alive request and then idle, in
//! cleartext or over TLS (`--tls`: a rustls client trusting the development CA, ALPN `http/1.1`,
//! as a browser on an HTTP/1.1 site), or HTTP/2 over TLS (`--h2`: ALPN `h2`, hyper's client
//! connection, as a browser on most sites).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Connections per loopback source address: under the 28,232 ports of Linux's default ephemeral range.
pub const PER_SOURCE: usize = 20_000;

/// Where and how the clients connect.
#[derive(Clone)]
pub struct Dialer {
    pub addr: SocketAddr,
    tls: Option<TlsConnector>,
    h2: bool,
}

/// One idle client connection.
pub enum Held {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// HTTP/2 over TLS: hyper's client connection runs in its task (answering the server's
    /// pings); `socket` is a duplicate of its descriptor, for the reset at the end.
    H2 {
        _sender: http2::SendRequest<Empty<Bytes>>,
        task: JoinHandle<()>,
        socket: socket2::Socket,
    },
}

impl Held {
    /// The contestant has not closed it: a non-blocking read of the socket finds neither EOF nor
    /// an error, nor bytes (an idle server sends none; over TLS, a closing one sends its alert);
    /// over HTTP/2, hyper's connection has not ended.
    fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        let tcp = match self {
            Held::Plain(stream) => stream,
            Held::Tls(stream) => stream.get_ref().0,
            Held::H2 { task, .. } => return !task.is_finished(),
        };
        matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Sets the socket to close with a reset (no TIME_WAIT left behind) when it is dropped.
    fn reset(&self) {
        let _ = match self {
            Held::Plain(stream) => stream.set_zero_linger(),
            Held::Tls(stream) => stream.get_ref().0.set_zero_linger(),
            Held::H2 { task, socket, .. } => {
                let set = socket.set_linger(Some(Duration::ZERO));
                task.abort();
                set
            }
        };
    }
}

impl Dialer {
    /// Cleartext to `addr`, or TLS when `ca` (a PEM file) is given: the server's certificate must
    /// be for `localhost` (or 127.0.0.1) and signed by that CA; HTTP/2 over it with `h2`.
    pub fn new(addr: SocketAddr, ca: Option<&Path>, h2: bool) -> Result<Dialer> {
        if h2 && ca.is_none() {
            bail!("HTTP/2 is measured over TLS only");
        }
        let tls = match ca {
            None => None,
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca)
                    .with_context(|| format!("reading {}", ca.display()))?
                {
                    roots
                        .add(cert.with_context(|| format!("a certificate in {}", ca.display()))?)?;
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
                config.alpn_protocols = vec![alpn.to_vec()];
                Some(TlsConnector::from(Arc::new(config)))
            }
        };
        Ok(Dialer { addr, tls, h2 })
    }

    /// Opens connections `first..first + n`, `concurrency` at a time, each having made one request.
    pub async fn open_range(
        &self,
        first: usize,
        n: usize,
        concurrency: usize,
    ) -> Result<Vec<Held>> {
        let deadline = open_deadline(n);
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..concurrency.min(n) {
            let dialer = self.clone();
            tasks.spawn(async move {
                let mut mine = Vec::new();
                for i in (first + worker..first + n).step_by(concurrency) {
                    mine.push(dialer.open_one(i).await?);
                }
                anyhow::Ok(mine)
            });
        }
        let mut all = Vec::with_capacity(n);
        let collected = tokio::time::timeout(deadline, async {
            while let Some(result) = tasks.join_next().await {
                all.extend(result??);
            }
            anyhow::Ok(())
        })
        .await;
        match collected {
            Ok(result) => result?,
            Err(_) => bail!("opening {n} connections took over {} s", deadline.as_secs()),
        }
        Ok(all)
    }

    /// Connects from loopback source address `127.0.0.(2 + i / PER_SOURCE)`, completes the TLS
    /// handshake when there is one, sends one GET and reads the whole answer (bounded by 10 s),
    /// leaving the connection open and idle.
    pub async fn open_one(&self, i: usize) -> Result<Held> {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i / PER_SOURCE) as u8);
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        tokio::time::timeout(Duration::from_secs(10), async {
            let stream = socket.connect(self.addr).await?;
            stream.set_nodelay(true)?;
            let mut held = match &self.tls {
                None => Held::Plain(stream),
                Some(connector) => {
                    let name = ServerName::try_from("localhost")?;
                    let tls = connector.connect(name, stream).await?;
                    if self.h2 {
                        return get_h2(tls).await;
                    }
                    Held::Tls(Box::new(tls))
                }
            };
            match &mut held {
                Held::Plain(stream) => get(stream).await?,
                Held::Tls(stream) => get(stream.as_mut()).await?,
                Held::H2 { .. } => {}
            }
            anyhow::Ok(held)
        })
        .await
        .with_context(|| format!("connection {i}: no whole answer within 10 s"))?
        .with_context(|| format!("connection {i} from {source}"))
    }
}

/// How long opening `n` connections may take.
pub fn open_deadline(n: usize) -> Duration {
    Duration::from_secs(60 + n as u64 / 50)
}

/// Opens HTTP/2 on `tls` (ALPN must have chosen it), sends one GET and reads its whole answer.
async fn get_h2(tls: TlsStream<TcpStream>) -> Result<Held> {
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        bail!("the server did not choose HTTP/2 (ALPN h2)");
    }
    let socket = socket2::Socket::from(tls.get_ref().0.as_fd().try_clone_to_owned()?);
    let (mut sender, connection) =
        http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::get("https://localhost/idle").body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if response.status() != http::StatusCode::OK {
        bail!("answered {}", response.status());
    }
    response.into_body().collect().await?;
    Ok(Held::H2 {
        _sender: sender,
        task,
        socket,
    })
}

/// Sends one GET and reads its answer.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> Result<()> {
    stream
        .write_all(b"GET /idle HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await?;
    stream.flush().await?;
    read_response(stream).await
}

/// Reads one response (Content-Length or chunked) and checks that it is a keep-alive 200.
async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    for _ in 0..64 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed before a whole answer");
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head) = response.parse(&buf)? else {
            continue;
        };
        if response.code != Some(200) {
            bail!("answered {:?}", response.code);
        }
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
        };
        if header("connection").is_some_and(|v| v.contains("close")) {
            bail!("answered Connection: close");
        }
        let body = &buf[head..];
        if let Some(length) = header("content-length") {
            let length: usize = length.trim().parse()?;
            if body.len() >= length {
                return Ok(());
            }
        } else if body.ends_with(b"0\r\n\r\n") {
            return Ok(());
        }
    }
    bail!("no whole answer in 64 reads")
}

/// Connections the contestant has not closed.
pub fn count_open(held: &[Held]) -> usize {
    held.iter().filter(|h| h.is_open()).count()
}

/// Sets every connection to close with a reset when dropped, so no TIME_WAIT is left behind.
pub fn reset_all(held: &[Held]) {
    for h in held {
        h.reset();
    }
}
