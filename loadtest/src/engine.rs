//! Running a plan: the optional warm-up phase, then the measured phase.
//!
//! A phase has three parts. A driver starts requests: in open loop one dispatcher sleeps until
//! each request's scheduled time and spawns it, so a slow answer never delays the next send; in
//! closed loop `concurrency` workers each send, await, and send again. Each request runs under the
//! plan's timeout and ends as one `Outcome`, sent over a bounded channel to the collector task,
//! which alone owns the tally. The phase ends when the driver stops (count or time) and every
//! request in flight has ended, which the collector sees as its channel closing.

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::HOST;
use http::uri::{Parts, Scheme};
use http::{Request, Uri};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::conn::{Body, Failure, Pool};
use crate::live::Live;
use crate::plan::{Mode, Prepared, Protocol};
use crate::report::{Outcome, Report, RunFacts, Tally};
use crate::schedule::{self, Stop};
use crate::LoadError;

/// Outcomes waiting for the collector; request tasks wait when it is full.
const OUTCOME_QUEUE: usize = 4096;

/// A checked plan with its connections, shared by every request task.
struct Engine {
    plan: Prepared,
    /// One pool per distinct target address: URLs on the same server share its connections.
    pools: Vec<Pool>,
    /// For each target, the index of its pool.
    pool_of: Vec<usize>,
    /// One request URI per target: origin form for HTTP/1.1, absolute for HTTP/2.
    uris: Vec<Uri>,
}

/// Runs the warm-up (if any) and the measured phase, and reports the measured one.
pub(crate) async fn run(plan: Prepared, live: Arc<Live>) -> Result<Report, LoadError> {
    let engine = Arc::new(Engine::new(plan));
    if let Some(warmup) = engine.plan.warmup {
        live.start_phase(true);
        let stop = Stop {
            duration: warmup,
            max_requests: None,
        };
        engine.phase(stop, &live).await?;
    }
    live.start_phase(false);
    let opened_before = engine.opened();
    let stop = Stop {
        duration: engine.plan.duration,
        max_requests: engine.plan.requests,
    };
    let (tally, sent, elapsed) = engine.phase(stop, &live).await?;
    let plan = &engine.plan;
    Ok(tally.into_report(RunFacts {
        targets: plan.targets.iter().map(|t| t.url.clone()).collect(),
        protocol: plan.protocol,
        mode: plan.mode,
        connections: plan.connections,
        connections_opened: engine.opened() - opened_before,
        sent,
        elapsed,
        count_header: plan.count_header.as_ref().map(|h| h.to_string()),
    }))
}

impl Engine {
    fn new(plan: Prepared) -> Engine {
        let mut addrs = Vec::new();
        let pool_of = plan
            .targets
            .iter()
            .map(|t| match addrs.iter().position(|a| *a == t.addr) {
                Some(i) => i,
                None => {
                    addrs.push(t.addr);
                    addrs.len() - 1
                }
            })
            .collect();
        let pools = addrs
            .into_iter()
            .map(|addr| Pool::new(addr, plan.protocol, plan.connections))
            .collect();
        let uris = plan
            .targets
            .iter()
            .map(|t| {
                let mut parts = Parts::default();
                parts.path_and_query = Some(t.path_and_query.clone());
                if plan.protocol == Protocol::Http2 {
                    // :authority is the host header's value when the plan sets one (checked to be
                    // a valid authority), so the proxy routes as it would a browser's request.
                    let host = plan
                        .host
                        .as_ref()
                        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
                    parts.scheme = Some(Scheme::HTTP);
                    parts.authority = Some(host.unwrap_or_else(|| t.authority.clone()));
                }
                // Both forms are built from already parsed pieces; the fallback is never taken.
                Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
            })
            .collect();
        Engine {
            plan,
            pools,
            pool_of,
            uris,
        }
    }

    fn opened(&self) -> u64 {
        self.pools.iter().map(Pool::opened).sum()
    }

    /// Request number `i`: its target index and the request itself.
    fn request(&self, i: u64) -> (usize, Request<Body>) {
        let plan = &self.plan;
        let t = (i % plan.targets.len().max(1) as u64) as usize;
        let mut request = Request::new(Body::new());
        *request.method_mut() = plan.method.clone();
        if let Some(uri) = self.uris.get(t) {
            *request.uri_mut() = uri.clone();
        }
        *request.headers_mut() = plan.headers.clone();
        if plan.protocol == Protocol::Http1 {
            let host = match (&plan.host, plan.targets.get(t)) {
                (Some(host), _) => Some(host.clone()),
                (None, Some(target)) => http::HeaderValue::from_str(target.authority.as_str()).ok(),
                (None, None) => None,
            };
            if let Some(host) = host {
                request.headers_mut().insert(HOST, host);
            }
        }
        if let Some((name, values)) = &plan.users {
            if let Some(value) = values.get(schedule::user_index(i, values.len())) {
                request.headers_mut().insert(name.clone(), value.clone());
            }
        }
        (t, request)
    }

    /// Sends request `i`; in open loop `scheduled` is when it was due, else when it was sent.
    async fn attempt(&self, i: u64, scheduled: Instant) -> Outcome {
        let (t, request) = self.request(i);
        let Some(pool) = self.pool_of.get(t).and_then(|&p| self.pools.get(p)) else {
            return Outcome::Failed(Failure::Other(format!("no connections for target {t}")));
        };
        let send = pool.send(request, self.plan.count_header.as_ref());
        match tokio::time::timeout(self.plan.timeout, send).await {
            Err(_) => Outcome::TimedOut,
            Ok(Err(failure)) => Outcome::Failed(failure),
            Ok(Ok(answer)) => Outcome::Response {
                status: answer.status.as_u16(),
                latency: scheduled.elapsed(),
                counted: answer.counted,
            },
        }
    }

    /// One phase: drive requests until `stop`, wait for the last answer, count.
    async fn phase(
        self: &Arc<Self>,
        stop: Stop,
        live: &Arc<Live>,
    ) -> Result<(Tally, u64, Duration), LoadError> {
        let (tx, rx) = mpsc::channel(OUTCOME_QUEUE);
        let collector = tokio::spawn(collect(rx, Tally::new()?, live.clone()));
        let start = Instant::now();
        let sent = match self.plan.mode {
            Mode::OpenLoop { rate_per_sec } => {
                self.open_loop(rate_per_sec, stop, start, tx, live).await
            }
            Mode::ClosedLoop { concurrency } => {
                self.closed_loop(concurrency, stop, start, tx, live).await?
            }
        };
        // Every request task holds a sender: the collector ends after the last answer.
        let tally = collector.await?;
        Ok((tally, sent, start.elapsed()))
    }

    async fn open_loop(
        self: &Arc<Self>,
        rate_per_sec: f64,
        stop: Stop,
        start: Instant,
        tx: mpsc::Sender<Outcome>,
        live: &Arc<Live>,
    ) -> u64 {
        // Bounded by the count and by the duration (at most an hour).
        let total = schedule::open_loop_total(&stop, rate_per_sec);
        for i in 0..total {
            let at = start + schedule::offset(i, rate_per_sec);
            // A late wake-up sends at once; the latency still counts from `at`.
            tokio::time::sleep_until(at).await;
            live.sent();
            let engine = self.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let outcome = engine.attempt(i, at).await;
                let _ = tx.send(outcome).await;
            });
        }
        total
    }

    async fn closed_loop(
        self: &Arc<Self>,
        concurrency: usize,
        stop: Stop,
        start: Instant,
        tx: mpsc::Sender<Outcome>,
        live: &Arc<Live>,
    ) -> Result<u64, LoadError> {
        let next = Arc::new(AtomicU64::new(0));
        let mut workers = JoinSet::new();
        for _ in 0..concurrency {
            let (engine, next, tx, live) = (self.clone(), next.clone(), tx.clone(), live.clone());
            workers.spawn(async move {
                let mut sent = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let now = Instant::now();
                    if !stop.admits(i, now - start) {
                        break;
                    }
                    live.sent();
                    sent += 1;
                    let outcome = engine.attempt(i, now).await;
                    if tx.send(outcome).await.is_err() {
                        break;
                    }
                }
                sent
            });
        }
        drop(tx);
        let mut sent = 0;
        while let Some(worker) = workers.join_next().await {
            sent += worker?;
        }
        Ok(sent)
    }
}

async fn collect(mut rx: mpsc::Receiver<Outcome>, mut tally: Tally, live: Arc<Live>) -> Tally {
    while let Some(outcome) = rx.recv().await {
        let response = matches!(outcome, Outcome::Response { .. });
        let error = tally.record(outcome);
        live.answered(response, error);
    }
    tally
}
