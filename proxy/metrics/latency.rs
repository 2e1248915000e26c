//! The one latency and outcome record of each (route, version): lock-free cumulative counts that a
//! finished request increments once. `/metrics` exports them as the
//! `switchyard_request_duration_seconds` histogram and the analysis subtracts two copies to get a
//! window, so every request is measured once and both read the same numbers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
