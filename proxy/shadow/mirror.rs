//! Dark launch: copies of live requests sent to a shadow version, off the data path, and the
//! comparison of its answers with the live ones.
//!
//! On the data path a mirrored request costs a header-map clone, a `try_send` into a bounded queue
//! and references to the body chunks as they stream (no copy, no wait): the live request never
//! waits for the shadow. A dispatcher per route takes jobs from the queue under a concurrency
//! limit; when the queue is full the copy is dropped and counted. Each job sends the copy to the
//! shadow (and the secondary, when configured), waits for the live answer captured as it streamed
//! to the client, compares, and adds the result to the route's report.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::uri::{PathAndQuery, Scheme};
use http::{header, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use tokio::sync::{mpsc, Semaphore};

use super::report::{Outcome, RouteReport};
use crate::config::Mirror;
use crate::data::snapshot::Snapshot;
use crate::data::tap::{Job, X_SWITCHYARD_SHADOW};
use crate::shadow::compare::{self, Answer, Ignore};

/// How long a job waits for the live answer to complete.
const LIVE_WAIT: Duration = Duration::from_secs(60);

/// Every route's dispatcher and report, kept for the life of the process.
#[derive(Default)]
pub struct Mirrors {
    queues: Mutex<HashMap<(String, usize, usize), mpsc::Sender<Job>>>,
    reports: Arc<Mutex<HashMap<String, RouteReport>>>,
}

impl Mirrors {
    /// The queue of `route`'s dispatcher, started on first use (a change of queue size or
    /// concurrency starts a new one; the old one ends with the last snapshot using it).
    pub fn queue(&self, route: &str, settings: &Mirror) -> mpsc::Sender<Job> {
        let key = (route.to_string(), settings.queue, settings.concurrency);
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.retain(|_, tx| !tx.is_closed());
        if let Some(tx) = queues.get(&key) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(settings.queue);
        tokio::spawn(dispatch(rx, settings.concurrency, self.reports.clone()));
        queues.insert(key, tx.clone());
        tx
    }

    /// The report of a route as JSON-ready views.
    pub fn report(&self, route: &str) -> super::report::ReportView {
        let reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        reports
            .get(route)
            .map(|r| r.view(route))
            .unwrap_or_else(|| RouteReport::default().view(route))
    }

    /// Forgets a route's report.
    pub fn reset(&self, route: &str) {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(route);
    }
}

/// Takes jobs off the queue with at most `concurrency` in flight.
async fn dispatch(
    mut rx: mpsc::Receiver<Job>,
    concurrency: usize,
    reports: Arc<Mutex<HashMap<String, RouteReport>>>,
) {
    let permits = Arc::new(Semaphore::new(concurrency));
    while let Some(job) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let reports = reports.clone();
        tokio::spawn(async move {
            run(job, reports).await;
            drop(permit);
        });
    }
}

/// Sends one copy to a version and collects its answer (body up to `cap`).
async fn call(
    snapshot: &Snapshot,
    route: usize,
    version: usize,
    job: &Job,
) -> Result<(Answer, Duration), Duration> {
    let started = Instant::now();
    let r = &snapshot.routes[route];
    let Some(m) = r.mirror.as_ref() else {
        return Err(started.elapsed());
    };
    let v = &r.versions[version];
    let Some((endpoint, health)) = v.next_endpoint() else {
        return Err(started.elapsed());
    };
    let mut headers = job.headers.clone();
    headers.insert(X_SWITCHYARD_SHADOW.clone(), HeaderValue::from_static("1"));
    if m.settings.host_suffix {
        if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
            let shadow_host = match host.rsplit_once(':') {
                Some((name, port)) if !name.ends_with(']') || host.starts_with('[') => {
                    format!("{name}-shadow:{port}")
                }
                _ => format!("{host}-shadow"),
            };
            if let Ok(value) = HeaderValue::from_str(&shadow_host) {
                headers.insert(header::HOST, value);
            }
        }
    }
    let uri = Uri::builder()
        .scheme(if v.scheme == Scheme::HTTPS {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        })
        .authority(endpoint.0.clone())
        .path_and_query(
            job.path
                .clone()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        )
        .build();
    let Ok(uri) = uri else {
        return Err(started.elapsed());
    };
    let mut request = Request::new(Full::new(job.body.clone()));
    *request.method_mut() = job.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    *request.version_mut() = v.http_version;
    let cap = m.settings.compare_body_bytes;
    let exchange = async {
        let response = v.mirror_client.request(request).await.map_err(|_| ())?;
        let (parts, body) = response.into_parts();
        let mut kept = BytesMut::new();
        let mut truncated = false;
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return Err(()) };
            if let Some(data) = frame.data_ref() {
                let room = cap.saturating_sub(kept.len());
                truncated |= data.len() > room;
                kept.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: kept.freeze(),
            truncated,
        })
    };
    // The shadow's endpoints are ejected on consecutive failures like live ones.
    match tokio::time::timeout(m.settings.timeout, exchange).await {
        Ok(Ok(answer)) => {
            health.observe(answer.status >= 500);
            Ok((answer, started.elapsed()))
        }
        _ => {
            health.observe(true);
            Err(started.elapsed())
        }
    }
}

async fn run(job: Job, reports: Arc<Mutex<HashMap<String, RouteReport>>>) {
    let snapshot = job.snapshot.clone();
    let route = &snapshot.routes[job.route];
    let Some(mirror) = route.mirror.as_ref() else {
        return;
    };
    let m = &mirror.settings;
    mirror.metrics.sent.inc();

    let shadow = call(&snapshot, job.route, m.version, &job);
    let secondary = async {
        match m.secondary {
            Some(s) => Some(call(&snapshot, job.route, s, &job).await),
            None => None,
        }
    };
    let (shadow, secondary) = tokio::join!(shadow, secondary);
    let path = compare::normalize_path(job.path.as_ref().map_or("/", |p| p.path()));
    let shadow_seen = match &shadow {
        Ok((a, d)) => Some((a.status, *d)),
        Err(d) => Some((502, *d)),
    };
    match &shadow {
        Ok((_, d)) => mirror.metrics.duration.observe(d.as_secs_f64()),
        Err(_) => mirror.metrics.failed.inc(),
    }
    let live = tokio::time::timeout(LIVE_WAIT, job.live)
        .await
        .ok()
        .and_then(Result::ok);

    let ignore = Ignore {
        headers: &m.ignore_headers,
        json_paths: &m.ignore_json_paths,
    };
    let (outcome, live_seen) = match (live, shadow) {
        (None, _) => (Outcome::LiveIncomplete, None),
        (Some((l, d)), Err(_)) => (Outcome::ShadowFailed, Some((l.status, d))),
        (Some((l, d)), Ok((s, _))) => {
            let differences = compare::diff(&l, &s, &ignore);
            let noisy: Vec<String> = match &secondary {
                Some(Ok((sec, _))) => compare::diff(&l, sec, &ignore)
                    .into_iter()
                    .map(|d| d.path)
                    .collect(),
                _ => Vec::new(),
            };
            let (noise, regressions): (Vec<_>, Vec<_>) = differences
                .into_iter()
                .partition(|d| noisy.contains(&d.path));
            (
                Outcome::Compared {
                    regressions,
                    noise: noise.len(),
                },
                Some((l.status, d)),
            )
        }
    };
    let result = match &outcome {
        Outcome::Compared { regressions, .. } if regressions.is_empty() => 0,
        Outcome::Compared { .. } => 1,
        _ => 2,
    };
    mirror.metrics.compared[result].inc();
    reports
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(route.name.clone())
        .or_default()
        .add(path, outcome, live_seen, shadow_seen);
}
