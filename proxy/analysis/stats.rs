//! Per-version request, error and latency counts, and the statistical judgement of a canary
//! against its baseline over a window.
//!
//! Counting is lock-free: a request increments a few atomics ([`VersionStats::record`]). The
//! analysis task copies the cumulative counts once per interval and subtracts two copies to get a
//! window, so the hot path never sees a window.
//!
//! The judgement uses one-sided exact binomial tests, so a handful of requests can never abort a
//! canary and a real regression is caught as soon as the evidence is strong:
//! - error rate: the canary's errors against `p0 = baseline rate + one standard error +
//!   max_error_rate_increase`, and against `max_error_rate` (absolute);
//! - latency: the number of canary requests slower than
//!   `T = baseline quantile × max_latency_ratio + max_latency_increase`, against the share a
//!   healthy canary may have above it (1% for p99, 50% for p50).
//!
//! Each test fails only when its p-value is below `alpha` (default 1e-3 per look). The margins
//! (`max_error_rate_increase`, the latency ratio and increase) mean that a canary exactly as good as
//! its baseline fails far less often than `alpha`: 0 of 5,000 looks in the unit tests, and 0 false
//! aborts in the scenario runner's healthy rollouts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Number of latency buckets: 0.5 ms × 1.2^i, so about 10% resolution from 0.5 ms to 60 s.
pub const LATENCY_BUCKETS: usize = 68;
const FIRST_BOUND_MS: f64 = 0.5;
const GROWTH: f64 = 1.2;

/// Upper bound (ms) of latency bucket `i`; the last bucket is unbounded.
pub fn bucket_upper_ms(i: usize) -> f64 {
    if i + 1 >= LATENCY_BUCKETS {
        f64::INFINITY
    } else {
        FIRST_BOUND_MS * GROWTH.powi(i as i32)
    }
}

/// Lower bound (ms) of latency bucket `i`.
pub fn bucket_lower_ms(i: usize) -> f64 {
    if i == 0 {
        0.0
    } else {
        bucket_upper_ms(i - 1)
    }
}

/// The latency bucket of a duration in milliseconds.
pub fn bucket_of(ms: f64) -> usize {
    if ms <= FIRST_BOUND_MS {
        return 0;
    }
    let i = ((ms / FIRST_BOUND_MS).ln() / GROWTH.ln()).ceil() as usize;
    i.min(LATENCY_BUCKETS - 1)
}

/// Cumulative counts of one (route, version), updated by every finished request.
pub struct VersionStats {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
}

impl Default for VersionStats {
    fn default() -> Self {
        VersionStats {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl VersionStats {
    /// Records one finished request. `error` is a 5xx, a proxy-made 502/504, or a gRPC failure.
    pub fn record(&self, error: bool, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let ms = elapsed.as_secs_f64() * 1000.0;
        self.latency[bucket_of(ms)].fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the cumulative counts.
    pub fn counts(&self) -> Counts {
        Counts {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
        }
    }
}

/// Counts over some span: cumulative, or a window (the difference of two cumulative copies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Requests finished.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
    /// Requests per latency bucket.
    pub latency: [u64; LATENCY_BUCKETS],
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            requests: 0,
            errors: 0,
            latency: [0; LATENCY_BUCKETS],
        }
    }
}

impl Counts {
    /// Adds one request (used where counts are kept behind a lock, off the data path).
    pub fn add(&mut self, error: bool, elapsed: Duration) {
        self.requests += 1;
        self.errors += u64::from(error);
        self.latency[bucket_of(elapsed.as_secs_f64() * 1000.0)] += 1;
    }

    /// `self - earlier`, saturating (a counter never goes backwards, but be safe).
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            latency: std::array::from_fn(|i| self.latency[i].saturating_sub(earlier.latency[i])),
        }
    }

    /// The error rate, 0 when there are no requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// Quantile `q` in ms, read as the upper bound of the bucket that holds it (a conservative
    /// overestimate); `None` without requests.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_upper_ms(i).min(60_000.0));
            }
        }
        None
    }

    /// Requests certainly slower than `ms`: those in buckets whose lower bound is at least `ms`.
    pub fn slower_than(&self, ms: f64) -> u64 {
        (0..LATENCY_BUCKETS)
            .filter(|i| bucket_lower_ms(*i) >= ms)
            .map(|i| self.latency[i])
            .sum()
    }
}

/// Thresholds and parameters of the analysis (validated configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Requests each side needs in the window before any verdict other than hold.
    pub min_requests: u64,
    /// Largest tolerated error-rate excess of the canary over the baseline (0.01 = one point).
    pub max_error_rate_increase: f64,
    /// Largest tolerated canary error rate, whatever the baseline does.
    pub max_error_rate: f64,
    /// Canary latency quantiles may reach baseline × this ...
    pub max_latency_ratio: f64,
    /// ... plus this many milliseconds.
    pub max_latency_increase_ms: f64,
    /// Significance level of each test at each look.
    pub alpha: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_requests: 20,
            max_error_rate_increase: 0.01,
            max_error_rate: 0.05,
            max_latency_ratio: 1.5,
            max_latency_increase_ms: 50.0,
            alpha: 1e-3,
        }
    }
}

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
    fn of(c: &Counts) -> Side {
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
}

/// The outcome of one look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Enough data, no regression.
    Pass,
    /// Not enough data to decide either way.
    Hold {
        /// What is missing.
        why: String,
    },
    /// A regression, shown with the given confidence.
    Fail {
        /// Which test failed.
        reason: FailReason,
    },
}

/// Judges a canary against its baseline over the same window.
pub fn judge(t: &Thresholds, baseline: &Counts, canary: &Counts) -> (Verdict, Evidence) {
    let mut evidence = Evidence {
        baseline: Side::of(baseline),
        canary: Side::of(canary),
        test: None,
    };
    let n = canary.requests;
    if n < t.min_requests {
        let why = format!("canary has {n} of {} requests needed", t.min_requests);
        return (Verdict::Hold { why }, evidence);
    }

    // Absolute guard: needs no baseline.
    let p = binomial_upper_tail(n, canary.errors, t.max_error_rate);
    if p < t.alpha {
        evidence.test = Some(format!(
            "{} errors in {n} requests against at most {:.2}%: p = {p:.2e}",
            canary.errors,
            t.max_error_rate * 100.0
        ));
        return (
            Verdict::Fail {
                reason: FailReason::ErrorRateAbsolute,
            },
            evidence,
        );
    }

    if baseline.requests < t.min_requests {
        let why = format!(
            "baseline has {} of {} requests needed",
            baseline.requests, t.min_requests
        );
        return (Verdict::Hold { why }, evidence);
    }

    // The baseline's rate is estimated too: allow it one standard error (and at least one error
    // in its window's worth of requests, so a clean baseline is not taken as exactly 0).
    let pb = baseline.error_rate();
    let nb = baseline.requests as f64;
    let baseline_upper = pb + (pb.max(1.0 / nb) * (1.0 - pb) / nb).sqrt();
    let p0 = (baseline_upper + t.max_error_rate_increase).min(1.0);
    let p = binomial_upper_tail(n, canary.errors, p0);
    if p < t.alpha {
        evidence.test = Some(format!(
            "{} errors in {n} canary requests against at most {:.2}% (baseline at most {:.2}% + {:.2} points): p = {p:.2e}",
            canary.errors,
            p0 * 100.0,
            baseline_upper * 100.0,
            t.max_error_rate_increase * 100.0
        ));
        return (
            Verdict::Fail {
                reason: FailReason::ErrorRate,
            },
            evidence,
        );
    }

    for (q, share, reason) in [
        (0.99, 0.01, FailReason::LatencyP99),
        (0.5, 0.5, FailReason::LatencyP50),
    ] {
        let Some(base_q) = baseline.quantile_ms(q) else {
            continue;
        };
        let limit = base_q * t.max_latency_ratio + t.max_latency_increase_ms;
        let slow = canary.slower_than(limit);
        let p = binomial_upper_tail(n, slow, share);
        if p < t.alpha {
            evidence.test = Some(format!(
                "{slow} of {n} canary requests slower than {limit:.1} ms (baseline p{} {base_q:.1} ms × {} + {} ms), where at most {}% may be: p = {p:.2e}",
                (q * 100.0) as u32,
                t.max_latency_ratio,
                t.max_latency_increase_ms,
                share * 100.0
            ));
            return (Verdict::Fail { reason }, evidence);
        }
    }
    (Verdict::Pass, evidence)
}

/// P(X ≥ x) for X ~ Binomial(n, p).
pub fn binomial_upper_tail(n: u64, x: u64, p: f64) -> f64 {
    if x == 0 {
        return 1.0;
    }
    if x > n || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    // At or below the mean the tail is about one half or more: never significant. Returning 1
    // also keeps the sum below from starting at an underflowed term far left of the mode.
    if (x as f64) <= n as f64 * p {
        return 1.0;
    }
    // log P(X = x) = log C(n, x) + x log p + (n - x) log(1 - p), C(n, x) summed as a product.
    let mut log_pmf = 0.0;
    for i in 0..x {
        log_pmf += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
    }
    log_pmf += x as f64 * p.ln() + (n - x) as f64 * (1.0 - p).ln();
    let ratio = p / (1.0 - p);
    let mut term = log_pmf.exp();
    let mut sum = term;
    let mut k = x;
    while k < n {
        term *= (n - k) as f64 / (k + 1) as f64 * ratio;
        sum += term;
        k += 1;
        if term < sum * 1e-15 {
            break;
        }
    }
    sum.min(1.0)
}

#[cfg(test)]
mod tests;
