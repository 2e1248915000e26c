//! Idle HTTP/1.1 connections at rest outside any task.
//!
//! A parked connection ([`http1::Served`](crate::data::http1::Served)) keeps no hyper state, but
//! it still has its task: the supervisor's timer and drain watch, the stream and its framing
//! scanner, the per-request service, and tokio's registration of the socket, about 1.3 KB of heap
//! per idle client where nginx holds about 0.6 KB. So a connection idle for
//! `limits.idle_release_after` ends its task instead, and its socket rests in its listener's
//! [`Hall`]: an epoll set of the hall's own (mio), and a slot with the socket, the peer's address,
//! the connection-limit permits and the instant it went idle, about 150 bytes. When the socket
//! becomes readable (a request, or the client's close) the hall hands it back to the listener,
//! which gives it a new task, parked, and the request is served as after any park. The keep-alive
//! timeout closes a resting connection in the hall (a FIN, as the task would send; over TLS a
//! `close_notify` first), and a drain closes every one at once.
//!
//! A cleartext socket rests deregistered from tokio's reactor. A TLS one rests with its session
//! (rustls's state, keys and a 4 KB read buffer: the larger part of an idle TLS connection, which
//! only the TLS stream can rebuild) and stays registered there too: tokio's reactor notes its
//! readiness and wakes no one, and the connection's next task finds it.
//!
//! The hall is one task per listener (per worker with `--reuse-port`); connections enter through
//! an unbounded channel, which holds at most one entry per open connection.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::mem::MaybeUninit;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use prometheus::IntGauge;
use slab::Slab;
use socket2::SockRef;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::time::Instant;

/// How many readiness events the hall takes from its epoll set per system call.
const EVENTS: usize = 256;

/// Slots (about 100 bytes each) past which a hall four times roomier than what rests in it gives
/// the room back ([`Hall::compact`]).
const COMPACT_ABOVE: usize = 1024;

/// An idle connection out of its task.
pub struct Resting {
    /// The client's socket.
    pub stream: Socket,
    /// The client's address.
    pub peer: SocketAddr,
    /// The connection-limit permits the connection holds while it is open.
    pub permits: Vec<OwnedSemaphorePermit>,
    /// Since when the connection is idle: its keep-alive deadline counts from then.
    pub idle_since: Instant,
}

/// A resting connection's socket.
pub enum Socket {
    /// Cleartext: non-blocking, registered with no reactor.
    Plain(std::net::TcpStream),
    /// TLS, with its session; the socket is still registered with tokio's reactor.
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

impl Socket {
    fn fd(&self) -> RawFd {
        self.sock().as_raw_fd()
    }

    fn sock(&self) -> SockRef<'_> {
        match self {
            Socket::Plain(stream) => SockRef::from(stream),
            Socket::Tls(tls) => SockRef::from(tls.get_ref().0),
        }
    }

    /// True when the client has closed or reset the connection with no byte before it, so the
    /// connection ends here rather than in a task of its own. (A TLS client's `close_notify` is a
    /// byte: that connection gets a task, which reads the alert and ends.)
    fn closed_by_peer(&self) -> bool {
        match self.sock().peek(&mut [MaybeUninit::uninit(); 1]) {
            Ok(n) => n == 0,
            Err(error) => !matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ),
        }
    }

    /// Closes an idle connection as its task would: over TLS a `close_notify` (written when the
    /// socket takes it at once, as an idle socket's empty send buffer does), then a FIN, then the
    /// socket.
    fn close(mut self) {
        if let Socket::Tls(tls) = &mut self {
            let (tcp, session) = tls.get_mut();
            session.send_close_notify();
            // Bounded: the alert is one record, written in one or two calls.
            for _ in 0..4 {
                if !session.wants_write() || session.write_tls(&mut TryWrite(tcp)).is_err() {
                    break;
                }
            }
        }
        let _ = self.sock().shutdown(Shutdown::Write);
    }
}

/// Writes to a tokio socket without waiting: what it does not take at once is an error.
struct TryWrite<'a>(&'a tokio::net::TcpStream);

impl io::Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where connections enter their listener's hall.
#[derive(Clone)]
pub struct Door(mpsc::UnboundedSender<Resting>);

impl Door {
    /// Hands an idle connection to the hall; once the hall has closed (a drain), the connection
    /// is closed here, as the hall would have.
    pub fn enter(&self, resting: Resting) {
        if let Err(mpsc::error::SendError(resting)) = self.0.send(resting) {
            resting.stream.close();
        }
    }
}

/// The resting connections of one listener.
pub struct Hall {
    poll: AsyncFd<Poll>,
    events: Events,
    /// The slots an epoll read found ready, and whether the client's side has ended (kept for
    /// its room).
    woken: Vec<(usize, bool)>,
    /// The connections resting here, each registered in the epoll set under its key.
    slots: Slab<Resting>,
    /// Keep-alive deadlines, earliest first; an entry whose slot has gone or holds a connection
    /// with another deadline is stale and skipped, and the heap is rebuilt from the slots when
    /// stale entries outnumber them (a connection that rests and wakes every few seconds would
    /// otherwise leave one per rest until its deadline).
    deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
    arrivals: mpsc::UnboundedReceiver<Resting>,
    keep_alive: Duration,
    /// Counts the connections resting here (with the parked ones of the listener).
    parked: Option<IntGauge>,
    /// [`COMPACT_ABOVE`], lower in tests.
    compact_above: usize,
}

impl Drop for Hall {
    fn drop(&mut self) {
        if let Some(parked) = &self.parked {
            parked.sub(self.slots.len() as i64);
        }
    }
}

/// What woke the hall.
enum Step {
    Drain,
    Arrival(Resting),
    Readable,
    Expiry,
}

/// A hall for a listener whose idle connections close after `keep_alive`, and its door. Must be
/// called within a tokio runtime (the hall's epoll set registers with its reactor).
pub fn open(keep_alive: Duration, parked: Option<IntGauge>) -> io::Result<(Door, Hall)> {
    #[allow(unsafe_code)]
    // SAFETY: a mio `Poll` owns its epoll descriptor, returns that one from `as_raw_fd` and
    // closes it only when dropped, which the `AsyncFd` owning it does first.
    let poll =
        unsafe { AsyncFd::register_with_interest(Poll::new()?, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
    let (tx, arrivals) = mpsc::unbounded_channel();
    let hall = Hall {
        poll,
        events: Events::with_capacity(EVENTS),
        woken: Vec::with_capacity(EVENTS),
        slots: Slab::new(),
        deadlines: BinaryHeap::new(),
        arrivals,
        keep_alive,
        parked,
        compact_above: COMPACT_ABOVE,
    };
    Ok((Door(tx), hall))
}

impl Hall {
    /// Keeps the connections that enter until `drain` fires (or its sender goes), handing each
    /// one whose socket turns readable to `wake`, closing each one idle for the keep-alive
    /// timeout; then closes the rest. Holding `drain` until then, the hall is waited for as an
    /// open connection is.
    pub async fn run(mut self, mut drain: watch::Receiver<()>, mut wake: impl FnMut(Resting)) {
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        loop {
            let next = self.deadlines.peek().map(|Reverse((at, _))| *at);
            if let Some(at) = next {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
            }
            let step = tokio::select! {
                biased;
                _ = drain.changed() => Step::Drain,
                arrival = self.arrivals.recv() => match arrival {
                    Some(resting) => Step::Arrival(resting),
                    None => Step::Drain,
                },
                ready = self.poll.readable() => match ready {
                    Ok(mut guard) => {
                        // Cleared before the set is read: an event after this wakes us again.
                        guard.clear_ready();
                        Step::Readable
                    }
                    Err(error) => {
                        // Only when the reactor has gone: the runtime is shutting down.
                        tracing::debug!(%error, "the hall's reactor has gone; closing its connections");
                        Step::Drain
                    }
                },
                () = &mut timer, if next.is_some() => Step::Expiry,
            };
            match step {
                Step::Drain => break,
                Step::Arrival(resting) => self.admit(resting),
                Step::Readable => self.wake_ready(&mut wake),
                Step::Expiry => self.expire(Instant::now()),
            }
            // Between steps: no key read from an event or a deadline is held across it.
            self.compact();
        }
        if let Some(parked) = &self.parked {
            parked.sub(self.slots.len() as i64);
        }
        for slot in self.slots.drain() {
            slot.stream.close();
        }
    }

    fn admit(&mut self, resting: Resting) {
        let entry = self.slots.vacant_entry();
        let key = entry.key();
        let fd = resting.stream.fd();
        let registry = self.poll.get_ref().registry();
        if let Err(error) = registry.register(&mut SourceFd(&fd), Token(key), Interest::READABLE) {
            tracing::debug!(peer = %resting.peer, %error, "an idle connection could not rest; closing it");
            resting.stream.close();
            return;
        }
        let deadline = resting.idle_since + self.keep_alive;
        entry.insert(resting);
        self.deadlines.push(Reverse((deadline, key)));
        if let Some(parked) = &self.parked {
            parked.inc();
        }
    }

    /// Takes the connection at `key` out of the hall.
    fn remove(&mut self, key: usize) -> Resting {
        let slot = self.slots.remove(key);
        // A socket closes on drop whether or not it was deregistered; one handed back must not
        // stay in this set, where it would wake the hall for the connection's new task's bytes.
        let fd = slot.stream.fd();
        let _ = self
            .poll
            .get_ref()
            .registry()
            .deregister(&mut SourceFd(&fd));
        if let Some(parked) = &self.parked {
            parked.dec();
        }
        if self.deadlines.len() > 2 * self.slots.len() + EVENTS {
            let keep_alive = self.keep_alive;
            self.deadlines = (self.slots.iter())
                .map(|(key, slot)| Reverse((slot.idle_since + keep_alive, key)))
                .collect();
        }
        slot
    }

    /// After a spike the slots keep their room (about 100 bytes per connection at the peak): once
    /// they are more than four times what rests here, and many, the resting connections move to
    /// the front, each registered again under its new key, and the room is given back; the
    /// deadlines, which name slots by key, are rebuilt. Amortized over the removals that made
    /// the room, it costs a constant per connection.
    fn compact(&mut self) {
        if self.slots.capacity() <= 4 * self.slots.len() + self.compact_above {
            return;
        }
        let registry = self.poll.get_ref().registry();
        self.slots.compact(|resting, _, to| {
            let fd = resting.stream.fd();
            // A connection that cannot move stays where it is (so do those not yet moved).
            registry
                .reregister(&mut SourceFd(&fd), Token(to), Interest::READABLE)
                .is_ok()
        });
        let keep_alive = self.keep_alive;
        self.deadlines = (self.slots.iter())
            .map(|(key, slot)| Reverse((slot.idle_since + keep_alive, key)))
            .collect();
    }

    /// Hands every connection whose socket is readable to `wake`.
    fn wake_ready(&mut self, wake: &mut impl FnMut(Resting)) {
        // Bounded: each round takes up to EVENTS events and removes their slots; a full round
        // means more may wait, and there are at most as many as there are slots.
        for _ in 0..=self.slots.len() / EVENTS {
            if let Err(error) = self
                .poll
                .get_mut()
                .poll(&mut self.events, Some(Duration::ZERO))
            {
                if error.kind() != io::ErrorKind::Interrupted {
                    tracing::warn!(%error, "reading the idle connections' epoll set failed");
                }
                return;
            }
            let mut keys = std::mem::take(&mut self.woken);
            keys.extend(
                self.events
                    .iter()
                    .map(|e| (e.token().0, e.is_read_closed() || e.is_error())),
            );
            for &(key, ended) in &keys {
                if self.slots.contains(key) {
                    let resting = self.remove(key);
                    if ended && resting.stream.closed_by_peer() {
                        // Nothing to serve: the client closed (or reset) an idle connection.
                        continue;
                    }
                    wake(resting);
                }
            }
            let full = keys.len() == EVENTS;
            keys.clear();
            self.woken = keys;
            if !full {
                return;
            }
        }
    }

    /// Closes the connections idle for the keep-alive timeout by `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((at, key))) = self.deadlines.peek() {
            if at > now {
                return;
            }
            self.deadlines.pop();
            let current = self
                .slots
                .get(key)
                .is_some_and(|slot| slot.idle_since + self.keep_alive == at);
            if current {
                self.remove(key).stream.close();
            }
        }
    }
}

#[cfg(test)]
mod tests;
