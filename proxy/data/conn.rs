//! One downstream connection: its request bytes checked as they arrive, the phase it is in, and
//! the deadline that phase sets.
//!
//! [`Guarded`] wraps the socket (or TLS stream) that hyper reads: every byte read goes through a
//! [`Scanner`] first, which finds request heads and bodies and refuses malformed chunked framing.
//! A refusal is handed to hyper as a read error after the valid bytes before it, so the request
//! head still reaches the handler, which answers 400 and blames the client (the request learns of
//! it through its [`RequestConn`]). The scanner also reports each chunk's declared size, which a
//! route's body limit checks before the chunk's data is forwarded.
//!
//! [`Conn`] holds the phase as atomics that the scanner and the request handles update, and
//! [`supervise`] runs the connection future against the deadline the phase sets: the header-read
//! timeout from accept until the first request head (or HTTP/2 preface) is complete, the
//! keep-alive timeout between requests, the header-read timeout again from the first byte of the
//! next head; none while a request is being served (the body idle and upstream timeouts apply).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Limits;
use crate::data::framing::{Event, FramingError, Scanner};

const FIRST: u8 = 0;
const IDLE: u8 = 1;
const HEAD: u8 = 2;
const BODY: u8 = 3;
const OPAQUE: u8 = 4;
const H2: u8 = 5;

/// No body is being scanned (the packed body progress).
const NO_BODY: u64 = u64::MAX;
const DECLARED_MASK: u64 = (1 << 48) - 1;

/// The shared state of one downstream connection.
pub struct Conn {
    /// When the connection was accepted (or, woken from its listener's hall, when it went idle):
    /// what `since_ms` counts from.
    accepted: Instant,
    header_read: Duration,
    keep_alive: Duration,
    phase: AtomicU8,
    /// Milliseconds from `accepted` to the event the current deadline counts from.
    since_ms: AtomicU64,
    in_flight: AtomicU32,
    /// Requests handed to the service so far: the next request's index.
    requests: AtomicU32,
    /// The body being scanned: request index (low 16 bits) in the top 16 bits, bytes declared by
    /// its chunks so far in the low 48.
    body: AtomicU64,
    /// 1 + the index of the request whose body framing was refused; 0 for none.
    refused_request: AtomicU32,
    refused_error: AtomicU8,
    /// How long an idle HTTP/1.1 connection keeps hyper's state before parking.
    release_after: Duration,
    /// Set while hyper's connection is being taken apart to park: the stream is kept, not shut.
    parking: AtomicBool,
    /// The last write to the client could not complete (a response is still leaving).
    write_blocked: AtomicBool,
}

/// What a deadline that passed means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No complete request head (or preface) in time: the client's fault.
    HeaderRead,
    /// Idle between requests for the keep-alive timeout: an ordinary close.
    KeepAlive,
}

impl Conn {
    /// The state of a connection accepted now.
    pub fn new(limits: &Limits) -> Arc<Conn> {
        Arc::new(Conn::at(limits, Instant::now(), FIRST))
    }

    /// In `phase` since `since`.
    fn at(limits: &Limits, since: Instant, phase: u8) -> Conn {
        Conn {
            accepted: since,
            header_read: limits.header_read_timeout,
            keep_alive: limits.keep_alive_timeout,
            phase: AtomicU8::new(phase),
            since_ms: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            body: AtomicU64::new(NO_BODY),
            refused_request: AtomicU32::new(0),
            refused_error: AtomicU8::new(0),
            release_after: limits.idle_release_after,
            parking: AtomicBool::new(false),
            write_blocked: AtomicBool::new(false),
        }
    }

    /// The state of a connection that has been idle since `since` (woken from its listener's
    /// [`Hall`](crate::data::hall::Hall)): its keep-alive deadline counts from then.
    pub fn resting_since(limits: &Limits, since: Instant) -> Arc<Conn> {
        Arc::new(Conn::at(limits, since, IDLE))
    }

    fn mark(&self, phase: u8) {
        self.mark_at(phase, &mut None);
    }

    /// Sets the phase as of `now_ms` (milliseconds since accept), read from the clock on first
    /// use: the events of one read share one clock read.
    fn mark_at(&self, phase: u8, now_ms: &mut Option<u64>) {
        let ms = *now_ms.get_or_insert_with(|| self.accepted.elapsed().as_millis() as u64);
        self.since_ms.store(ms, Ordering::SeqCst);
        self.phase.store(phase, Ordering::SeqCst);
    }

    /// The supervisor's tick: no deadline an event sets is nearer than this to the event.
    fn tick(&self) -> Duration {
        self.header_read.min(self.keep_alive)
    }

    /// When the connection must be given up if nothing changes, and why.
    pub fn deadline(&self) -> Option<(Instant, Expiry)> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = self.accepted + Duration::from_millis(self.since_ms.load(Ordering::SeqCst));
        match self.phase.load(Ordering::SeqCst) {
            FIRST => Some((self.accepted + self.header_read, Expiry::HeaderRead)),
            HEAD => Some((since + self.header_read, Expiry::HeaderRead)),
            IDLE | H2 => Some((since + self.keep_alive, Expiry::KeepAlive)),
            _ => None,
        }
    }

    /// How long an idle HTTP/1.1 connection keeps its buffers (`limits.idle_release_after`).
    pub fn release_after(&self) -> Duration {
        self.release_after
    }

    /// Since when the connection has been idle between requests: no request in flight, its last
    /// response written, no byte of a next head read. `None` while it is not idle.
    pub fn idle_since(&self) -> Option<Instant> {
        let idle = self.in_flight.load(Ordering::SeqCst) == 0
            && self.phase.load(Ordering::SeqCst) == IDLE
            && !self.write_blocked.load(Ordering::Relaxed);
        idle.then(|| self.accepted + Duration::from_millis(self.since_ms.load(Ordering::SeqCst)))
    }

    /// True when the connection has been idle for `release_after` and should give its buffers
    /// back now; otherwise `release` is set for when it may (and holds the task's waker). A busy
    /// connection does not look at the timer (one poll less per wake-up): a wake-up it causes
    /// meanwhile finds it busy, and a connection turning idle is polled after its last write,
    /// when it looks. Shared by hyper's HTTP/1.1 connection and the fast path's loop.
    pub fn poll_release(
        &self,
        release: &mut Pin<Box<tokio::time::Sleep>>,
        cx: &mut Context<'_>,
    ) -> bool {
        let Some(mut since) = self.idle_since() else {
            return false;
        };
        // Bounded: each pass either returns or moves the deadline to a later instant.
        for _ in 0..3 {
            if release.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now = Instant::now();
            if since + self.release_after <= now {
                // Armed again, should the connection turn out not to be idle.
                release.as_mut().reset(now + self.release_after);
                return true;
            }
            release.as_mut().reset(since + self.release_after);
            match self.idle_since() {
                Some(s) => since = s,
                None => return false,
            }
        }
        false
    }

    /// Requests handed to the service so far on this connection.
    pub fn requests_begun(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Marks the connection as being parked (or no longer).
    pub fn set_parking(&self, parking: bool) {
        self.parking.store(parking, Ordering::SeqCst);
    }

    /// True while the connection is being parked.
    pub fn is_parking(&self) -> bool {
        self.parking.load(Ordering::SeqCst)
    }

    fn wrote(&self, blocked: bool) {
        if self.write_blocked.load(Ordering::Relaxed) != blocked {
            self.write_blocked.store(blocked, Ordering::Relaxed);
        }
    }

    /// A request reaches the service: its handle, and the guard that keeps it in flight until
    /// its response body is dropped.
    pub fn begin(self: &Arc<Self>) -> (RequestConn, InFlight) {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        (
            RequestConn {
                conn: self.clone(),
                index,
            },
            InFlight(self.clone()),
        )
    }

    /// Follows the scanner.
    fn on_event(&self, event: Event, index: &mut u32, now_ms: &mut Option<u64>) {
        match event {
            Event::Started => {
                // The first head's deadline counts from accept, not from its first byte.
                if self.phase.load(Ordering::Relaxed) != FIRST {
                    self.mark_at(HEAD, now_ms);
                }
            }
            Event::Head => {
                self.body
                    .store(u64::from(*index & 0xffff) << 48, Ordering::Relaxed);
                self.mark_at(BODY, now_ms);
            }
            Event::Chunk(n) => {
                let body = self.body.load(Ordering::Relaxed);
                let declared = (body & DECLARED_MASK).saturating_add(n).min(DECLARED_MASK);
                self.body
                    .store((body & !DECLARED_MASK) | declared, Ordering::Relaxed);
            }
            Event::Ended => {
                *index = index.wrapping_add(1);
                self.mark_at(IDLE, now_ms);
            }
            Event::Preface => self.mark_at(H2, now_ms),
            Event::Opaque => {
                if self.phase.load(Ordering::Relaxed) != H2 {
                    self.phase.store(OPAQUE, Ordering::SeqCst);
                }
            }
        }
    }

    fn refuse(&self, index: u32, error: FramingError) {
        let code = FramingError::ALL
            .iter()
            .position(|e| *e == error)
            .unwrap_or(0);
        self.refused_error.store(code as u8, Ordering::Relaxed);
        self.refused_request
            .store(index.wrapping_add(1), Ordering::Relaxed);
    }
}

/// One request's view of its connection.
#[derive(Clone)]
pub struct RequestConn {
    conn: Arc<Conn>,
    index: u32,
}

impl RequestConn {
    /// The framing error found in this request's body, if one was.
    pub fn framing_error(&self) -> Option<FramingError> {
        let refused = self.conn.refused_request.load(Ordering::Relaxed);
        (refused == self.index.wrapping_add(1)).then(|| {
            let code = self.conn.refused_error.load(Ordering::Relaxed);
            FramingError::ALL[usize::from(code).min(FramingError::ALL.len() - 1)]
        })
    }

    /// Bytes this request's chunks have declared so far, while the scanner is in its body.
    pub fn declared(&self) -> Option<u64> {
        let body = self.conn.body.load(Ordering::Relaxed);
        (body != NO_BODY && body >> 48 == u64::from(self.index & 0xffff))
            .then_some(body & DECLARED_MASK)
    }
}

/// Keeps a request counted in flight on its connection; dropped with the response body.
pub struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The keep-alive timeout counts from the end of the last response, and so does the
            // header-read timeout of a head that arrived while it was being served.
            let phase = self.0.phase.load(Ordering::SeqCst);
            if phase == IDLE || phase == H2 || phase == HEAD {
                self.0.mark(phase);
            }
        }
    }
}

/// The downstream stream, read through the connection's framing scanner.
pub struct Guarded<T> {
    inner: T,
    conn: Arc<Conn>,
    scanner: Scanner,
    /// The index of the request whose bytes the scanner is reading.
    index: u32,
    refused: Option<FramingError>,
}

impl<T> Guarded<T> {
    /// Wraps a freshly accepted stream.
    pub fn new(inner: T, conn: Arc<Conn>, limits: &Limits) -> Self {
        Guarded {
            inner,
            conn,
            // hyper refuses longer heads itself (431).
            scanner: Scanner::new(limits.max_request_header_bytes),
            index: 0,
            refused: None,
        }
    }
}

impl<T> Guarded<T> {
    /// The stream underneath.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The stream, its scanner dropped: only at a request boundary, where a new scanner starts
    /// in the same state.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Frees what the scanner keeps between requests.
    pub fn release(&mut self) {
        self.scanner.release();
    }
}

/// Notes whether a write to the client completed.
fn track<R>(conn: &Conn, poll: Poll<R>) -> Poll<R> {
    conn.wrote(poll.is_pending());
    poll
}

fn framing_io_error(error: FramingError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Guarded {
            inner,
            conn,
            scanner,
            index,
            refused,
        } = self.get_mut();
        if let Some(error) = refused {
            return Poll::Ready(Err(framing_io_error(*error)));
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(inner).poll_read(cx, buf))?;
        if scanner.is_opaque() {
            return Poll::Ready(Ok(()));
        }
        let mut now_ms = None;
        let fed = scanner.feed(&buf.filled()[before..], |e| {
            conn.on_event(e, index, &mut now_ms)
        });
        if let Err(r) = fed {
            conn.refuse(*index, r.error);
            *refused = Some(r.error);
            // The valid bytes go to hyper now (the head among them); the error comes next read.
            buf.set_filled(before + r.at);
            if r.at == 0 {
                return Poll::Ready(Err(framing_io_error(r.error)));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        track(&this.conn, Pin::new(&mut this.inner).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        track(
            &this.conn,
            Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        )
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        track(&this.conn, Pin::new(&mut this.inner).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// How a supervised connection ended.
pub enum Ended<E> {
    /// The connection future finished (the client closed, an error, a graceful shutdown).
    Finished(Result<(), E>),
    /// A deadline passed and the connection was dropped.
    Expired(Expiry),
}

/// Runs `connection` until it finishes, a deadline of `conn` passes, or `drain` fires (then it is
/// shut down gracefully and given until it finishes). `graceful` starts a graceful shutdown.
/// `connection` is borrowed: what it leaves (a stream handed to the hall) is the caller's after.
///
/// Nothing wakes the supervisor when a request starts or ends: its timer is never set further
/// than one tick (the shorter of the two timeouts) ahead, and every deadline an event sets is at
/// least a tick after the event, so no event can bring a deadline before the timer. When the
/// timer fires, the deadline is read again and the timer set to it, or a tick ahead. A request
/// costs no timer update and no extra poll; a connection costs a wake-up per tick.
///
/// A plain function returning an `async move` block rather than an `async fn`, and `connection`
/// polled where it lies rather than pinned into a new local: an `async fn` keeps its arguments
/// twice in its state (as captured and as moved into the body), and this state lives in every
/// connection's task for as long as the connection is open, idle ones included.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn supervise<'c, C, E>(
    connection: &'c mut C,
    conn: Arc<Conn>,
    mut drain: watch::Receiver<()>,
    graceful: impl Fn(Pin<&mut C>) + 'c,
) -> impl Future<Output = Ended<E>> + 'c
where
    C: Future<Output = Result<(), E>> + Unpin,
{
    async move {
        let mut connection = Pin::new(connection);
        // `drained` is polled until it is registered (it then holds this task's waker, as the
        // timer below), and after that only when the watch's version moved: polling a registered
        // `Notified` again takes the lock of a waiter list the watch shares among all connections
        // (eight lists, for every worker), twice per request.
        let watch = drain.clone();
        let mut drained = std::pin::pin!(drain.changed());
        let mut drain_registered = false;
        let mut draining = false;
        let mut closing_idle = false;
        let mut timer = std::pin::pin!(tokio::time::sleep_until(next_check(&conn, Instant::now())));
        // Whether the timer has been polled since it was last set: from then on it holds this task's
        // waker, and looking at its state is enough (a poll per wake-up less).
        let mut registered = false;
        std::future::poll_fn(|cx| {
            // Bounded: a pass that does not return starts a graceful shutdown (at most one for the
            // drain and one for the keep-alive) or moves the timer to a later instant.
            for _ in 0..8 {
                if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                    return Poll::Ready(Ended::Finished(result));
                }
                let drain_due = !drain_registered || watch.has_changed().unwrap_or(true);
                drain_registered = true;
                if !draining && drain_due && drained.as_mut().poll(cx).is_ready() {
                    draining = true;
                    graceful(connection.as_mut());
                    continue;
                }
                let fired = if registered {
                    timer.is_elapsed()
                } else {
                    registered = true;
                    timer.as_mut().poll(cx).is_ready()
                };
                if !fired {
                    return Poll::Pending;
                }
                let now = Instant::now();
                match conn.deadline() {
                    Some((at, Expiry::KeepAlive)) if at <= now => {
                        // Idle: a graceful close ends an HTTP/1.1 connection at once and sends
                        // HTTP/2's GOAWAY; if it lingers past another timeout, it is dropped.
                        if closing_idle {
                            return Poll::Ready(Ended::Expired(Expiry::KeepAlive));
                        }
                        closing_idle = true;
                        conn.mark(conn.phase.load(Ordering::Relaxed));
                        graceful(connection.as_mut());
                    }
                    Some((at, Expiry::HeaderRead)) if at <= now => {
                        return Poll::Ready(Ended::Expired(Expiry::HeaderRead));
                    }
                    _ => {}
                }
                timer.as_mut().reset(next_check(&conn, now));
                registered = false;
            }
            // Eight passes in one poll: yield, and come back at once.
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await
    }
}

/// hyper's timer for the HTTP/1.1 header-read backstop (see `server::builders`): a deadline
/// compared with the clock whenever hyper polls it, never entered in tokio's timer wheel. hyper
/// starts this timer while it waits for every request head and drops it when the head is parsed,
/// so a wheel entry would cost an insert and a removal per request for a deadline that almost
/// never passes.
///
/// Its sleep returns `Pending` without keeping the waker, which is sound only under [`supervise`]:
/// the supervisor polls the connection at least once a tick, so a passed deadline is seen at
/// most one tick late. Every HTTP/1.1 connection the server builds is supervised.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoarseTimer;

/// A [`CoarseTimer`] deadline.
struct CoarseSleep(std::time::Instant);

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if std::time::Instant::now() >= self.0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(std::time::Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoarseSleep(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(coarse) => coarse.get_mut().0 = deadline,
            None => *sleep = self.sleep_until(deadline),
        }
    }
}

/// When the supervisor looks next: the connection's deadline, or one tick from `now` if that is
/// sooner (or there is none).
fn next_check(conn: &Conn, now: Instant) -> Instant {
    let tick = now + conn.tick();
    conn.deadline().map_or(tick, |(at, _)| at.min(tick))
}

#[cfg(test)]
mod tests;
