//! The stream as hyper's HTTP/1.1 connection holds it: lent, and handed back when the
//! connection parks, with the bytes the fast path read before it handed the connection over.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::data::conn::{Conn, Guarded};

/// The stream as hyper holds it. When hyper's connection is dropped for parking, the stream
/// (with its scanner) goes back through `back` instead of being shut down and closed.
pub(super) struct Lending<T> {
    pub(super) io: Option<Guarded<T>>,
    /// Bytes the fast path read before it handed the connection to hyper, read first.
    pub(super) prefix: Bytes,
    pub(super) back: Option<oneshot::Sender<Guarded<T>>>,
    pub(super) conn: Arc<Conn>,
}

impl<T> Drop for Lending<T> {
    fn drop(&mut self) {
        if self.conn.is_parking() {
            if let (Some(io), Some(back)) = (self.io.take(), self.back.take()) {
                // The receiver is waiting: the parker drops hyper's connection, then receives.
                let _ = back.send(io);
            }
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the stream was parked")
}

impl<T: AsyncRead + Unpin> AsyncRead for Lending<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        match this.io.as_mut() {
            Some(io) => Pin::new(io).poll_read(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Lending<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().io.as_mut() {
            Some(io) => Pin::new(io).poll_write(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().io.as_mut() {
            Some(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.conn.is_parking() {
            // Parking ends hyper's connection, not the client's.
            return Poll::Ready(Ok(()));
        }
        match this.io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}
