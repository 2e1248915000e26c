//! Pure pacing arithmetic: when request `i` is due, whether it may still be sent, which user it
//! carries.
//!
//! The open loop computes every send time from the phase start (`start + i / rate`) rather than
//! from the previous send, so a late timer never shifts the rest of the schedule and latency can be
//! measured from the time a request *should* have left. Nothing here sleeps or reads a clock;
//! `engine.rs` does.

use std::time::Duration;

/// When a phase stops taking new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stop {
    /// No request is started at or after this offset from the phase start.
    pub(crate) duration: Duration,
    /// No more than this many requests are started.
    pub(crate) max_requests: Option<u64>,
}

impl Stop {
    /// Whether request number `i` (from 0), due at `at` from the phase start, may be started.
    pub(crate) fn admits(&self, i: u64, at: Duration) -> bool {
        self.max_requests.is_none_or(|max| i < max) && at < self.duration
    }
}

/// The offset from the phase start at which open-loop request `i` is due.
pub(crate) fn offset(i: u64, rate_per_sec: f64) -> Duration {
    // In nanoseconds, rounded: f64 is exact for integers up to 2^53 ns (104 days), far more than
    // the one-hour bound, and whole-nanosecond spacings (400/s: 2.5 ms) come out exact.
    Duration::from_nanos((i as f64 * 1e9 / rate_per_sec).round() as u64)
}

/// How many requests an open-loop phase schedules in all.
pub(crate) fn open_loop_total(stop: &Stop, rate_per_sec: f64) -> u64 {
    // The first i whose offset reaches the duration, found from the estimate and then corrected,
    // so it agrees exactly with `admits(i, offset(i))`.
    let mut n = (stop.duration.as_secs_f64() * rate_per_sec).ceil() as u64;
    while n > 0 && offset(n - 1, rate_per_sec) >= stop.duration {
        n -= 1;
    }
    while offset(n, rate_per_sec) < stop.duration {
        n += 1;
    }
    stop.max_requests.map_or(n, |max| n.min(max))
}

/// The synthetic user carried by request `i`, in `0..users`.
///
/// SplitMix64 of the request number: deterministic (the same run sends the same users in the same
/// order), spread evenly, and independent of which worker or connection sends the request.
pub(crate) fn user_index(i: u64, users: usize) -> usize {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % users.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_sends_are_evenly_spaced_from_the_start() {
        assert_eq!(offset(0, 400.0), Duration::ZERO);
        assert_eq!(offset(1, 400.0), Duration::from_micros(2500));
        assert_eq!(offset(199, 400.0), Duration::from_micros(497_500));
        assert_eq!(offset(3, 0.5), Duration::from_secs(6));
        // No drift after an hour's worth of requests at a high rate.
        assert_eq!(
            offset(3_600_000_000, 1_000_000.0),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn a_phase_schedules_rate_times_duration_requests_capped_by_the_count() {
        let stop = Stop {
            duration: Duration::from_secs(10),
            max_requests: None,
        };
        assert_eq!(open_loop_total(&stop, 100.0), 1000);
        assert_eq!(open_loop_total(&stop, 3.0), 30);
        assert_eq!(open_loop_total(&stop, 0.3), 3); // at 0 s, 3.33 s and 6.67 s
        let capped = Stop {
            max_requests: Some(200),
            ..stop
        };
        assert_eq!(open_loop_total(&capped, 100.0), 200);
        assert_eq!(open_loop_total(&capped, 10.0), 100);
        for (rate, stop) in [(100.0, stop), (10.0, capped), (7.0, stop)] {
            let n = open_loop_total(&stop, rate);
            assert!(stop.admits(n - 1, offset(n - 1, rate)));
            assert!(!stop.admits(n, offset(n, rate)));
        }
    }

    #[test]
    fn stop_refuses_past_the_count_or_the_duration() {
        let stop = Stop {
            duration: Duration::from_secs(1),
            max_requests: Some(5),
        };
        assert!(stop.admits(4, Duration::from_millis(999)));
        assert!(!stop.admits(5, Duration::ZERO));
        assert!(!stop.admits(0, Duration::from_secs(1)));
    }

    #[test]
    fn user_keys_are_deterministic_in_range_and_spread_evenly() {
        let users = 10;
        let mut seen = [0u32; 10];
        for i in 0..100_000 {
            let k = user_index(i, users);
            assert_eq!(k, user_index(i, users));
            seen[k] += 1;
        }
        for count in seen {
            assert!((9_500..10_500).contains(&count), "{seen:?}");
        }
        assert_eq!(user_index(7, 1), 0);
        assert_eq!(user_index(7, 0), 0);
    }
}
