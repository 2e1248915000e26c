//! `GET /api/v1/stats`: the cumulative counts of every (route, version), as the data path records
//! them ([`VersionStats`](crate::metrics::latency::VersionStats)), for a reader that wants rates and
//! windowed quantiles: it takes two copies and subtracts, as the canary analysis does. The release
//! page (`/ui/`) polls it about once a second.
//!
//! Read-only and cheap: one snapshot load, a relaxed atomic read per counter. Each route also says
//! how it is released (its strategy and its shadow version), which the page needs to offer the
//! right actions and reports.

use http::{Response, StatusCode};
use serde::Serialize;

use super::api;
use super::Admin;
use crate::config::Strategy;
use crate::data::body::ResponseBody;
use crate::metrics::latency::{bucket_upper_ms, LATENCY_BUCKETS};
use crate::state::now_unix_ms;

/// Every route's cumulative counts.
#[derive(Debug, Serialize)]
pub struct StatsView {
    /// Snapshot generation the routes and versions come from.
    pub generation: u64,
    /// When the counts were read (ms since the Unix epoch): the clock to compute rates with.
    pub at_unix_ms: u64,
    /// Upper bound (ms) of each latency bucket (0.5 ms × 1.2^i, to 4 decimals); the last one is
    /// unbounded (`null`).
    pub latency_bucket_upper_ms: Vec<Option<f64>>,
    /// Routes in match order.
    pub routes: Vec<RouteStats>,
}

/// One route's counts.
#[derive(Debug, Serialize)]
pub struct RouteStats {
    /// Route name.
    pub name: String,
    /// `canary` or `blue_green`.
    pub strategy: &'static str,
    /// The version that receives copies, when the route has a dark launch.
    pub shadow: Option<String>,
    /// Versions in declared order.
    pub versions: Vec<VersionCounts>,
}

/// One version's cumulative counts since the process started.
#[derive(Debug, Serialize)]
pub struct VersionCounts {
    /// Version name.
    pub name: String,
    /// Requests finished.
    pub requests: u64,
    /// Of which errors (5xx, proxy-made 502/504, gRPC failures), as the analysis counts them.
    pub errors: u64,
    /// Requests being served now.
    pub in_flight: i64,
    /// Requests per latency bucket, trailing empty buckets left out.
    pub latency: Vec<u64>,
}

/// Answers `GET /api/v1/stats`.
pub fn answer(admin: &Admin) -> Response<ResponseBody> {
    api::json(StatusCode::OK, &view(admin))
}

/// Reads every version's counts from the snapshot in service.
pub fn view(admin: &Admin) -> StatsView {
    let snapshot = admin.shared.snapshot.load();
    let routes = snapshot
        .routes
        .iter()
        .zip(&snapshot.config.routes)
        .map(|(route, file)| RouteStats {
            name: route.name.clone(),
            strategy: match file.strategy {
                Strategy::Canary => "canary",
                Strategy::BlueGreen => "blue_green",
            },
            shadow: file
                .mirror
                .as_ref()
                .and_then(|m| file.versions.get(m.version))
                .map(|v| v.name.clone()),
            versions: route
                .versions
                .iter()
                .map(|v| {
                    let counts = v.metrics.stats.counts();
                    let used = counts
                        .latency
                        .iter()
                        .rposition(|n| *n > 0)
                        .map_or(0, |i| i + 1);
                    VersionCounts {
                        name: v.name.clone(),
                        requests: counts.requests,
                        errors: counts.errors,
                        in_flight: v.metrics.in_flight.get(),
                        latency: counts.latency[..used].to_vec(),
                    }
                })
                .collect(),
        })
        .collect();
    StatsView {
        generation: snapshot.generation,
        at_unix_ms: now_unix_ms(),
        latency_bucket_upper_ms: (0..LATENCY_BUCKETS)
            .map(|i| Some(bucket_upper_ms(i)).filter(|b| b.is_finite()))
            .map(|b| b.map(|ms| (ms * 10_000.0).round() / 10_000.0))
            .collect(),
        routes,
    }
}
