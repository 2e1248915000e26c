//! Switchyard's load generator: open- and closed-loop HTTP load against loopback targets.
//!
//! A caller describes a run as a [`Plan`] (targets, headers, protocol, pacing, bounds) and calls
//! [`run`], which checks the plan, runs an optional warm-up and the measured phase, and returns a
//! [`Report`] (counts, error breakdown, latency percentiles, responses per value of a chosen
//! header). [`run_observed`] does the same while updating a shared [`Live`] for progress lines.
//! Scenario files ([`Scenario`]) are a YAML form of a plan, used by the `switchyard-load` binary.
//!
//! Modules: `target` (URL and loopback rule), `plan` (checking), `schedule` (pure pacing),
//! `conn` (connections with an exact count), `engine` (phases), `report`, `live`, `scenario`.
//! Only loopback targets are accepted, and every run is bounded in time and count.

mod conn;
mod engine;
pub mod etcd;
mod live;
mod plan;
mod report;
mod scenario;
mod schedule;
mod target;

use std::sync::Arc;

pub use live::{Live, LiveSnapshot};
pub use plan::{
    Mode, Plan, PlanError, Protocol, UserKeys, DEFAULT_OPEN_LOOP_CONNECTIONS, MAX_CONNECTIONS,
    MAX_DURATION, MAX_RATE, MAX_REQUESTS, MAX_TIMEOUT, MAX_USERS, MAX_WARMUP,
};
pub use report::{Errors, HeaderCounts, Latency, Report, ABSENT};
pub use scenario::{
    parse_header_line, Scenario, ScenarioError, ScenarioUsers, DEFAULT_CONCURRENCY,
    DEFAULT_DURATION, DEFAULT_TIMEOUT,
};
pub use target::{Target, TargetError};

/// Why a run could not take place. Failed requests are not errors: they are counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The plan was refused before anything was sent.
    #[error("plan refused")]
    Plan(#[from] PlanError),
    /// The latency histogram could not be created.
    #[error("cannot create the latency histogram")]
    Histogram(#[from] hdrhistogram::CreationError),
    /// A load task panicked or was cancelled.
    #[error("a load task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// What a `switchyard` binary announces on its first lines of output (`switchyard: listener public
/// on http://127.0.0.1:8080`, `switchyard: admin on http://…`): for each of `after`, the rest of
/// the first line holding it, trimmed (empty when none of the first `within` lines holds it).
/// Stops reading once each has been found, so the caller can go on reading the same lines.
pub fn announced(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    after: &[&str],
    within: usize,
) -> Vec<String> {
    let mut found = vec![String::new(); after.len()];
    for line in lines.take(within).map_while(Result::ok) {
        for (marker, value) in after.iter().zip(found.iter_mut()) {
            if let Some(rest) = line.split(marker).nth(1) {
                *value = rest.trim().to_string();
            }
        }
        if found.iter().all(|v| !v.is_empty()) {
            break;
        }
    }
    found
}

/// Runs `plan` and reports its measured phase. Must be called inside a Tokio runtime.
pub async fn run(plan: &Plan) -> Result<Report, LoadError> {
    run_observed(plan, Arc::new(Live::default())).await
}

/// Like [`run`], updating `live` as requests are sent and answered.
pub async fn run_observed(plan: &Plan, live: Arc<Live>) -> Result<Report, LoadError> {
    let prepared = plan::Prepared::new(plan)?;
    engine::run(prepared, live).await
}
