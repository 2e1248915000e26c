//! Connections to one target, with an exact connection count.
//!
//! Built on hyper's connection-level client rather than the pooled legacy client, so a plan's
//! `connections` is the number of TCP connections the target sees, never more:
//! - HTTP/1.1: a semaphore with one permit per connection; a request takes a permit, an idle
//!   connection (or opens one), sends, reads the whole body, and puts the connection back if it is
//!   still open. A connection the server closed while idle is replaced without counting an error.
//! - HTTP/2 (h2c, prior knowledge): a fixed set of slots used round robin, each holding one
//!   multiplexed connection that is (re)opened by the first request to find it missing or closed.
//!
//! Requests enter as `http::Request`s already built by the engine; what leaves is an [`Answer`]
//! (status and the counted header's value) or a [`Failure`]. Timeouts are the engine's job: it
//! drops the future, which closes an HTTP/1.1 connection and resets an HTTP/2 stream.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::plan::Protocol;

/// Request body type: load requests carry no body.
pub(crate) type Body = Empty<Bytes>;

/// What went wrong with one request, short of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// TCP connect or protocol handshake failed.
    Connect(String),
    /// The request was sent (or sending began) and failed before the body ended.
    Other(String),
}

/// What the engine keeps of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    /// The counted header's value, when the plan counts one and the response has it.
    pub(crate) counted: Option<HeaderValue>,
}

/// Connections to one target address.
pub(crate) struct Pool {
    addr: SocketAddr,
    lanes: Lanes,
    opened: AtomicU64,
}

enum Lanes {
    Http1 {
        permits: Semaphore,
        idle: Mutex<Vec<http1::SendRequest<Body>>>,
    },
    Http2 {
        // An async lock so that concurrent requests to an empty slot wait for one connect
        // instead of each opening a connection.
        slots: Vec<tokio::sync::Mutex<Option<http2::SendRequest<Body>>>>,
        next: AtomicUsize,
    },
}

/// An error and its causes on one line.
pub(crate) fn describe(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl Pool {
    /// A pool of at most `connections` connections to `addr`; none is opened yet.
    pub(crate) fn new(addr: SocketAddr, protocol: Protocol, connections: usize) -> Pool {
        let connections = connections.max(1);
        let lanes = match protocol {
            Protocol::Http1 => Lanes::Http1 {
                permits: Semaphore::new(connections),
                idle: Mutex::new(Vec::with_capacity(connections)),
            },
            Protocol::Http2 => Lanes::Http2 {
                slots: (0..connections)
                    .map(|_| tokio::sync::Mutex::new(None))
                    .collect(),
                next: AtomicUsize::new(0),
            },
        };
        Pool {
            addr,
            lanes,
            opened: AtomicU64::new(0),
        }
    }

    /// How many connections were opened so far (reconnects included).
    pub(crate) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Sends one request and reads its whole response.
    pub(crate) async fn send(
        &self,
        request: Request<Body>,
        count: Option<&HeaderName>,
    ) -> Result<Answer, Failure> {
        match &self.lanes {
            Lanes::Http1 { permits, idle } => {
                let _permit = permits
                    .acquire()
                    .await
                    .map_err(|e| Failure::Other(describe(&e)))?;
                let mut sender = self.http1_sender(idle).await?;
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| Failure::Other(describe(&e)))?;
                let answer = read(response, count).await?;
                if !sender.is_closed() {
                    idle.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(sender);
                }
                Ok(answer)
            }
            Lanes::Http2 { slots, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % slots.len().max(1);
                let Some(slot) = slots.get(i) else {
                    return Err(Failure::Other("no connection slot".into()));
                };
                let mut sender = {
                    let mut slot = slot.lock().await;
                    match &*slot {
                        Some(sender) if !sender.is_closed() => sender.clone(),
                        _ => {
                            let sender = self.connect_http2().await?;
                            *slot = Some(sender.clone());
                            sender
                        }
                    }
                };
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| Failure::Other(describe(&e)))?;
                read(response, count).await
            }
        }
    }

    async fn http1_sender(
        &self,
        idle: &Mutex<Vec<http1::SendRequest<Body>>>,
    ) -> Result<http1::SendRequest<Body>, Failure> {
        let pooled = idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        if let Some(mut sender) = pooled {
            // An idle connection the server has closed is not this request's failure.
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        self.connect_http1().await
    }

    async fn tcp(&self) -> Result<TokioIo<TcpStream>, Failure> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| Failure::Connect(format!("connect {}: {}", self.addr, describe(&e))))?;
        // Small requests must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(TokioIo::new(stream))
    }

    async fn connect_http1(&self) -> Result<http1::SendRequest<Body>, Failure> {
        let io = self.tcp().await?;
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(|e| Failure::Connect(describe(&e)))?;
        // Ends when the server closes or every sender is dropped (the end of the run).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    async fn connect_http2(&self) -> Result<http2::SendRequest<Body>, Failure> {
        let io = self.tcp().await?;
        let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| Failure::Connect(describe(&e)))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// Keeps the status and the counted header, then drains the body so the connection can be reused
/// and the latency covers the whole response.
async fn read(response: Response<Incoming>, count: Option<&HeaderName>) -> Result<Answer, Failure> {
    let status = response.status();
    let counted = count.and_then(|name| response.headers().get(name).cloned());
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|e| Failure::Other(describe(&e)))?;
    }
    Ok(Answer { status, counted })
}
