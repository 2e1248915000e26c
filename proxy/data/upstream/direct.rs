//! HTTP/1.1 upstream connections driven by the request's own task (issue 16), with the codec of
//! [`super::h1`] in place of hyper-util's pooled client for the common case: the request's task
//! writes the request and reads the response head, then the response body reads the rest as
//! hyper's server streams it to the client, and the connection goes back to its endpoint's pool
//! when that body ends. No connection task and no hand-off between tasks: the pooled client
//! spends a channel send and a task wake-up each way on every request, about a sixth of a
//! textbook proxy's user time, and hyper's low-level client (the step before this one) still a
//! request channel, a dispatcher and a response oneshot.
//!
//! One pool per slot, a slot being one (connection settings, endpoint) pair, kept by the
//! [`Registry`] across snapshots. It is shared by the worker threads: a task moves between
//! workers, and pools of their own would each grow to hold what the others could have reused. Its
//! lock is held for one push or pop (never across a poll or a close). A connection goes in only
//! after a clean exchange (see [`Conn::reusable`]) and comes out only if the upstream has neither
//! closed it nor sent anything since (a read that does not wait); a request refused by a
//! pooled connection before a byte of it went out (the upstream closed it meanwhile) goes to the
//! next one, then to a new connection. The most recently used comes out first, so the others age:
//! one idle for the route's `timeouts.idle` is never used again (it and those older than it are
//! closed when its slot is next used), and a reaper task closes the expired connections of every
//! slot once a second, traffic or not, and drops the slots no snapshot uses any more (an endpoint
//! taken out of the configuration) with their connections. At most [`MAX_IDLE`] are kept per slot.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tower_service::Service;

mod local;

pub use local::{close_all as close_worker_pools, reap as reap_worker_pools};

use super::h1::{self, Conn, Refused};
use super::CallError;
use crate::config::Endpoint;
use crate::data::body::RequestBody;
use crate::data::forwarding::Added;

/// Idle connections kept at most per slot.
pub const MAX_IDLE: usize = 256;
/// How often the reaper closes connections past their idle timeout.
const REAP_EVERY: Duration = Duration::from_secs(1);
/// Pooled connections tried, at most, before a new one is made for a request.
const MAX_STALE_TRIES: usize = 4;

/// Where one (connection settings, endpoint) pair keeps its idle connections.
pub type Slot = Arc<Pool>;

type Slots = Mutex<HashMap<(super::ClientKey, Endpoint), Slot>>;

/// Gives each (settings, endpoint) pair its pool. Only snapshot builds and the reaper touch it.
#[derive(Default)]
pub struct Registry {
    slots: Arc<Slots>,
    /// Whether the reaper task runs (it starts with the first slot made inside a runtime).
    reaping: AtomicBool,
}

fn lock_slots(
    slots: &Slots,
) -> std::sync::MutexGuard<'_, HashMap<(super::ClientKey, Endpoint), Slot>> {
    // A poisoned lock only means another builder panicked mid-insert; the map is still usable.
    slots.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    /// The pool of `endpoint` reached with these settings: the same for every snapshot that keeps
    /// them, so a reload keeps the warm connections.
    pub fn slot(&self, key: &super::ClientKey, endpoint: &Endpoint) -> Slot {
        if !self.reaping.load(Ordering::Relaxed) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                if !self.reaping.swap(true, Ordering::Relaxed) {
                    runtime.spawn(reap(Arc::downgrade(&self.slots)));
                }
            }
        }
        lock_slots(&self.slots)
            .entry((key.clone(), endpoint.clone()))
            .or_insert_with(|| {
                Arc::new(Pool {
                    idle_timeout: key.idle_timeout,
                    idle: Mutex::default(),
                })
            })
            .clone()
    }
}

/// Closes what no request would: once a second, every slot's connections past their idle
/// timeout, and the slots only the registry still holds (no snapshot routes to them) with all
/// their connections. Ends when the registry does. Connections are closed after the locks are
/// let go.
async fn reap(slots: Weak<Slots>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(slots) = slots.upgrade() else { return };
        let (live, orphans): (Vec<Slot>, Vec<Slot>) = {
            let mut map = lock_slots(&slots);
            let orphans = map
                .extract_if(|_, slot| Arc::strong_count(slot) == 1)
                .map(|(_, slot)| slot)
                .collect();
            (map.values().cloned().collect(), orphans)
        };
        drop(orphans);
        let now = Instant::now();
        for slot in live {
            let expired = slot.take_expired(now);
            drop(expired);
        }
    }
}

/// How one version reaches its HTTP/1.1 endpoints: the connector (TCP connect timeout, TLS,
/// server name) shared with the pooled client, and each endpoint's slot, in endpoint order.
#[derive(Clone)]
pub struct Direct {
    connector: HttpsConnector<HttpConnector>,
    slots: Vec<Slot>,
}

impl Direct {
    /// A direct path with this connector, for endpoints numbered `slots` (in endpoint order).
    pub fn new(connector: HttpsConnector<HttpConnector>, slots: Vec<Slot>) -> Self {
        Direct { connector, slots }
    }

    /// Sends `request` (its target in absolute form) to the endpoint at `index`, on a pooled
    /// connection when one is usable, else a new one.
    ///
    /// A plain function returning an `async move` block: an `async fn` would keep the request
    /// twice in its state.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub fn send<'a>(
        &'a self,
        index: usize,
        mut request: Request<RequestBody>,
        added: &'a Added,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, CallError>> + Send + 'a {
        async move {
            let slot = &self.slots[index];
            set_host(&mut request);
            for _ in 0..MAX_STALE_TRIES {
                let Some(mut conn) = checkout(slot) else {
                    break;
                };
                match conn.send(request, added).await {
                    Ok(head) => return Ok(lend(head, conn, slot.clone())),
                    // Refused before a byte went out: the upstream closed it while it idled.
                    Err(Refused::Unsent(_, back)) => request = *back,
                    Err(Refused::Sent(error)) => return Err(CallError::Exchange(error)),
                }
            }
            // Boxed: a connect's state (TCP, TLS) is large and rarely needed; every request's future
            // would otherwise carry room for it.
            let mut conn = Box::pin(self.connect(request.uri().clone())).await?;
            match conn.send(request, added).await {
                Ok(head) => Ok(lend(head, conn, slot.clone())),
                Err(Refused::Unsent(error, _) | Refused::Sent(error)) => {
                    Err(CallError::Exchange(error))
                }
            }
        }
    }

    /// A new connection, boxed once for its life: it moves between pool, request and body.
    async fn connect(&self, uri: Uri) -> Result<Box<Conn>, CallError> {
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(CallError::Connect)?;
        let io = connector.call(uri).await.map_err(CallError::Connect)?;
        Ok(Box::new(Conn::new(TokioIo::new(io))))
    }
}

/// The response, its body reading the rest from the connection until it ends.
fn lend(head: Response<()>, conn: Box<Conn>, slot: Slot) -> Response<UpstreamBody> {
    let mut lent = Some(Lent { conn, slot });
    // No body to stream (HEAD, 204, 304, an empty body): nothing would give it back later.
    if lent.as_ref().is_some_and(|l| l.conn.is_end_stream()) {
        if let Some(lent) = lent.take() {
            lent.give_back();
        }
    }
    head.map(|()| UpstreamBody {
        source: match lent {
            Some(lent) => Source::Direct(lent),
            None => Source::Empty,
        },
        failed: None,
    })
}

/// The request goes out in origin form (path and query) with `Host` from the target's authority
/// when the client sent none (HTTP/2 clients send `:authority`), as the pooled client does.
fn set_host(request: &mut Request<RequestBody>) {
    if request.headers().contains_key(HOST) {
        return;
    }
    if let Some(host) = request
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        request.headers_mut().insert(HOST, host);
    }
}

/// A connection lent to a response body, and where it goes back.
struct Lent {
    conn: Box<Conn>,
    slot: Slot,
}

impl Lent {
    /// Puts the connection in its pool if the exchange ended cleanly; one still busy (a request
    /// body the upstream answered before reading), closing or closed is dropped.
    fn give_back(mut self) {
        if self.conn.reusable() {
            self.conn.trim();
            checkin(self);
        }
    }
}

/// The upstream's response body.
pub struct UpstreamBody {
    source: Source,
    /// The body's error, held back one turn.
    failed: Option<BoxError>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

enum Source {
    /// From the pooled client, whose connection drives itself.
    Pooled(Incoming),
    /// Read from a direct connection, given back when the body ends.
    Direct(Lent),
    /// Nothing (more) to read.
    Empty,
}

impl UpstreamBody {
    /// A body from the pooled client.
    pub fn pooled(body: Incoming) -> Self {
        UpstreamBody {
            source: Source::Pooled(body),
            failed: None,
        }
    }
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("direct", &matches!(self.source, Source::Direct(_)))
            .finish()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Every field is Unpin, so projecting through get_mut is sound.
        let this = self.get_mut();
        if let Some(error) = this.failed.take() {
            return Poll::Ready(Some(Err(error)));
        }
        let frame = match &mut this.source {
            Source::Pooled(body) => {
                return Pin::new(body).poll_frame(cx).map_err(Into::into);
            }
            Source::Empty => return Poll::Ready(None),
            Source::Direct(lent) => std::task::ready!(lent.conn.poll_body(cx)),
        };
        match frame {
            Some(Err(error)) => {
                // A connection that fails right after the last bytes it read hands over both
                // in turn, and hyper's server would give up before writing what it holds: the
                // error waits one turn, so what came before it is flushed (the client sees the
                // status, then a broken body).
                this.source = Source::Empty;
                this.failed = Some(Box::new(error));
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            frame => {
                if this.is_end_stream() {
                    if let Source::Direct(lent) = std::mem::replace(&mut this.source, Source::Empty)
                    {
                        lent.give_back();
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(|e: h1::Error| -> BoxError { Box::new(e) })))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Pooled(body) => body.is_end_stream(),
            Source::Direct(lent) => lent.conn.is_end_stream(),
            Source::Empty => self.failed.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Pooled(body) => body.size_hint(),
            Source::Direct(lent) => lent
                .conn
                .body_size()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
            Source::Empty => SizeHint::with_exact(0),
        }
    }
}

/// One slot's idle connections, oldest first.
pub struct Pool {
    /// The route's `timeouts.idle`: part of the slot's settings, so the same for every connection.
    idle_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic while the lock was held left at worst a connection too many or too few.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes out the connections idle for the timeout or longer (the oldest, so a prefix), to be
    /// closed by the caller once the lock is let go.
    fn take_expired(&self, now: Instant) -> Vec<Idle> {
        let mut idle = self.lock();
        let expired = expired(&idle, now, self.idle_timeout);
        idle.drain(..expired).collect()
    }
}

/// How many of `stack` (kept oldest first) have idled for `timeout` or longer at `now`: a prefix.
fn expired(stack: &[Idle], now: Instant, timeout: Duration) -> usize {
    stack.partition_point(|c| now.duration_since(c.since) >= timeout)
}

/// Puts `idle` on top of `stack`; when the stack is full, takes out its oldest, for the caller to
/// close.
fn push(stack: &mut Vec<Idle>, idle: Idle) -> Option<Idle> {
    let oldest = (stack.len() >= MAX_IDLE).then(|| stack.remove(0));
    stack.push(idle);
    oldest
}

/// The first connection `pop` gives (the most recently used first) that is within `timeout` and
/// still open, the closed ones dropped on the way; at the first expired one, `clear` drops the
/// rest of the stack (older still) and there is none. Bounded by [`MAX_IDLE`] pops.
fn pick(
    timeout: Duration,
    mut pop: impl FnMut() -> Option<Idle>,
    clear: impl FnOnce(),
) -> Option<Box<Conn>> {
    let now = Instant::now();
    for _ in 0..MAX_IDLE {
        let mut idle = pop()?;
        if now.duration_since(idle.since) >= timeout {
            clear();
            return None;
        }
        // One read without waiting sees an end of stream the upstream sent while it idled.
        if idle.conn.still_open() {
            return Some(idle.conn);
        }
    }
    None
}

/// The most recently used idle connection of `slot` that is within its idle timeout, still open
/// and ready (from this worker's own pool on a `--reuse-port` worker). Connections found expired
/// or closed are closed after the lock is let go.
fn checkout(slot: &Slot) -> Option<Box<Conn>> {
    if crate::data::workers::on_worker() {
        return local::checkout(slot);
    }
    // The lock is held for one pop at a time, never across the read that checks a connection.
    let clear = || {
        let expired = std::mem::take(&mut *slot.lock());
        drop(expired);
    };
    pick(slot.idle_timeout, || slot.lock().pop(), clear)
}

/// Keeps a connection for the next request to its endpoint (the reaper closes it if none comes
/// within the idle timeout), in this worker's own pool on a `--reuse-port` worker.
fn checkin(lent: Lent) {
    let idle = Idle {
        conn: lent.conn,
        since: Instant::now(),
    };
    if crate::data::workers::on_worker() {
        return local::checkin(&lent.slot, idle);
    }
    let oldest = push(&mut lent.slot.lock(), idle);
    // Closed here, after the lock is let go.
    drop(oldest);
}
