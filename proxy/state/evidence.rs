//! What a rollout decision rests on: the failing test and both sides' figures over one window.
//! Plain data, persisted with the abort it explains.

use serde::{Deserialize, Serialize};

use crate::metrics::latency::Counts;

/// Why a canary failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// Error rate above the baseline's by more than allowed.
    ErrorRate,
    /// Error rate above the absolute limit.
    ErrorRateAbsolute,
    /// p99 latency above the allowed bound.
    LatencyP99,
    /// p50 latency above the allowed bound.
    LatencyP50,
    /// No endpoint of the canary is healthy.
    NoHealthyEndpoint,
    /// An operator aborted.
    Manual,
}

impl FailReason {
    /// Label value for `switchyard_rollout_aborts_total{reason}`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::ErrorRate => "error_rate",
            FailReason::ErrorRateAbsolute => "error_rate_absolute",
            FailReason::LatencyP99 => "latency_p99",
            FailReason::LatencyP50 => "latency_p50",
            FailReason::NoHealthyEndpoint => "no_healthy_endpoint",
            FailReason::Manual => "manual",
        }
    }
}

/// One side's figures in a verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Side {
    /// Requests in the window.
    pub requests: u64,
    /// Errors in the window.
    pub errors: u64,
    /// Error rate.
    pub error_rate: f64,
    /// p50 latency (ms), bucket upper bound.
    pub p50_ms: Option<f64>,
    /// p99 latency (ms), bucket upper bound.
    pub p99_ms: Option<f64>,
}

impl Side {
    pub fn of(c: &Counts) -> Side {
        Side {
            requests: c.requests,
            errors: c.errors,
            error_rate: c.error_rate(),
            p50_ms: c.quantile_ms(0.5),
            p99_ms: c.quantile_ms(0.99),
        }
    }
}

/// The figures behind a verdict: both sides over the same window, and the failing test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The baseline.
    pub baseline: Side,
    /// The canary.
    pub canary: Side,
    /// What was tested and its p-value, for a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// In a fleet: each live replica's part of the window that was judged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Share>,
}

/// One replica's part of a fleet-wide window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// The replica.
    pub replica: String,
    /// Its baseline requests in the window.
    pub baseline_requests: u64,
    /// Its canary requests in the window.
    pub canary_requests: u64,
}
