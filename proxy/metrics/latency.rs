//! The one latency and outcome record of each (route, version): lock-free cumulative counts that a
//! finished request increments once. `/metrics` exports them as the
//! `switchyard_request_duration_seconds` histogram and the analysis subtracts two copies to get a
//! window, so every request is measured once and both read the same numbers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto;

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
    sum_micros: AtomicU64,
}

impl Default for VersionStats {
    fn default() -> Self {
        VersionStats {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
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
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
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

/// Every `STRIDE`-th fine bucket is exported: bounds about 2.07× apart, 0.5 ms to 59 s.
const STRIDE: usize = 4;

/// The (route, version) records, kept across snapshots like the series.
pub type StatsByVersion = Arc<Mutex<HashMap<(String, String), Arc<VersionStats>>>>;

/// `switchyard_request_duration_seconds`, read from the same records the analysis reads.
pub struct DurationFamily {
    desc: Desc,
    stats: StatsByVersion,
}

impl DurationFamily {
    /// The family over `stats`.
    pub fn new(stats: StatsByVersion) -> Result<DurationFamily, prometheus::Error> {
        let desc = Desc::new(
            "switchyard_request_duration_seconds".into(),
            "Time from the request head to the last byte of the response, of the requests the \
             canary analysis counts (not those the client abandoned or got wrong)."
                .into(),
            vec!["route".into(), "version".into()],
            HashMap::new(),
        )?;
        Ok(DurationFamily { desc, stats })
    }
}

fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.into());
    pair.set_value(value.into());
    pair
}

fn histogram_of(counts: &Counts, sum_micros: u64) -> proto::Histogram {
    let mut buckets = Vec::with_capacity(LATENCY_BUCKETS / STRIDE + 1);
    let mut cumulative = 0;
    for (i, n) in counts.latency.iter().enumerate() {
        cumulative += n;
        if i % STRIDE == 0 && i + 1 < LATENCY_BUCKETS {
            let mut b = proto::Bucket::default();
            // The bound to the microsecond, so `le` reads 0.00215, not 0.0021499084799999997.
            b.set_upper_bound((bucket_upper_ms(i) * 1000.0).round() / 1e6);
            b.set_cumulative_count(cumulative);
            buckets.push(b);
        }
    }
    let mut h = proto::Histogram::default();
    h.set_sample_count(cumulative);
    h.set_sample_sum(sum_micros as f64 / 1e6);
    h.set_bucket(buckets);
    h
}

impl Collector for DurationFamily {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys: Vec<_> = stats.keys().collect();
        keys.sort();
        let metrics = keys
            .into_iter()
            .map(|key| {
                let s = &stats[key];
                let mut m = proto::Metric::default();
                m.set_label(vec![label("route", &key.0), label("version", &key.1)]);
                m.set_histogram(histogram_of(
                    &s.counts(),
                    s.sum_micros.load(Ordering::Relaxed),
                ));
                m
            })
            .collect();
        let mut family = proto::MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(proto::MetricType::HISTOGRAM);
        family.set_metric(metrics);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_duration_histogram_is_read_from_the_analysis_record() {
        let stats = StatsByVersion::default();
        let shop = Arc::new(VersionStats::default());
        stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(("shop".into(), "stable".into()), shop.clone());
        for ms in [1, 5, 100] {
            shop.record(false, Duration::from_millis(ms));
        }
        let family = DurationFamily::new(stats).expect("valid family").collect();
        let h = family[0].get_metric()[0].get_histogram();
        assert_eq!(h.get_sample_count(), 3);
        assert!((h.get_sample_sum() - 0.106).abs() < 1e-9);
        let bound = |le: f64| {
            h.get_bucket()
                .iter()
                .find(|b| b.upper_bound() == le)
                .map(|b| b.cumulative_count())
        };
        // Bounds are 0.5 ms × 1.2^(4k), to the microsecond.
        assert_eq!(bound(0.000_5), Some(0));
        assert_eq!(bound(0.001_037), Some(1));
        assert_eq!(bound(0.009_244), Some(2));
        assert_eq!(bound(0.170_911), Some(3));
        // The analysis reads the same record.
        assert_eq!(shop.counts().requests, 3);
    }
}
