//! The statistics against known values, and the judgement on synthetic windows.

use super::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn counts(requests: u64, errors: u64, latency_ms: &[(f64, u64)]) -> Counts {
    let mut c = Counts {
        requests,
        errors,
        ..Counts::default()
    };
    for (ms, n) in latency_ms {
        c.latency[bucket_of(*ms)] += n;
    }
    c
}

#[test]
fn binomial_tail_matches_known_values() {
    // P(X >= 3 | 10, 0.1) = 1 - P(0) - P(1) - P(2).
    assert!((binomial_upper_tail(10, 3, 0.1) - 0.070_190_826_4).abs() < 1e-9);
    // Below the mean the tail is reported as 1: never significant.
    assert_eq!(binomial_upper_tail(100_000, 10, 0.5), 1.0);
    // P(X >= 10 | 200, 0.01): mean 2; about 4.5e-5 (exact sum).
    let p = binomial_upper_tail(200, 10, 0.01);
    assert!(p > 3e-5 && p < 6e-5, "{p}");
    assert_eq!(binomial_upper_tail(100, 0, 0.5), 1.0);
    assert_eq!(binomial_upper_tail(100, 101, 0.5), 0.0);
    // P(X >= 8 | 8, 0.5) = 1/256.
    assert!((binomial_upper_tail(8, 8, 0.5) - 1.0 / 256.0).abs() < 1e-12);
}

#[test]
fn latency_buckets_are_ordered_and_cover_a_minute() {
    for i in 1..LATENCY_BUCKETS {
        assert!(bucket_upper_ms(i) > bucket_upper_ms(i - 1));
    }
    assert!(bucket_upper_ms(LATENCY_BUCKETS - 2) > 60_000.0);
    assert_eq!(bucket_of(0.1), 0);
    assert!(
        bucket_lower_ms(bucket_of(300.0)) < 300.0 && bucket_upper_ms(bucket_of(300.0)) >= 300.0
    );
}

#[test]
fn few_requests_hold_whatever_they_say() {
    let t = Thresholds::default();
    let (v, _) = judge(
        &t,
        &counts(1000, 0, &[(10.0, 1000)]),
        &counts(5, 5, &[(10.0, 5)]),
    );
    assert!(matches!(v, Verdict::Hold { .. }), "{v:?}");
}

#[test]
fn five_points_of_errors_over_200_requests_fail() {
    let t = Thresholds::default();
    let base = counts(4000, 4, &[(10.0, 4000)]);
    let (v, e) = judge(&t, &base, &counts(200, 12, &[(10.0, 200)]));
    assert_eq!(
        v,
        Verdict::Fail {
            reason: FailReason::ErrorRate
        },
        "{e:?}"
    );
    assert!(e.test.unwrap().contains("p = "));
}

#[test]
fn an_absolute_error_rate_fails_without_baseline_traffic() {
    let t = Thresholds::default();
    let (v, _) = judge(&t, &counts(0, 0, &[]), &counts(200, 40, &[(10.0, 200)]));
    assert_eq!(
        v,
        Verdict::Fail {
            reason: FailReason::ErrorRateAbsolute
        }
    );
}

#[test]
fn slow_tail_fails_p99() {
    let t = Thresholds::default();
    let base = counts(4000, 0, &[(10.0, 3960), (20.0, 40)]);
    // 5% of canary requests take 350 ms: far above 20 × 1.5 + 50 = 80 ms.
    let canary = counts(200, 0, &[(10.0, 190), (350.0, 10)]);
    let (v, e) = judge(&t, &base, &canary);
    assert_eq!(
        v,
        Verdict::Fail {
            reason: FailReason::LatencyP99
        },
        "{e:?}"
    );
}

#[test]
fn a_healthy_noisy_canary_passes_thousands_of_looks() {
    // Same error rate (0.5%) and latency distribution on both sides; 5000 independent looks at
    // the default alpha must not produce a single failure.
    let t = Thresholds::default();
    let mut rng = SmallRng::seed_from_u64(11);
    let mut sample = |n: u64| {
        let mut c = Counts::default();
        for _ in 0..n {
            c.requests += 1;
            if rng.random::<f64>() < 0.005 {
                c.errors += 1;
            }
            // Log-normal-ish latency around 20 ms with a long tail.
            let ms = 20.0
                * (rng.random::<f64>() * 1.5).exp()
                * if rng.random::<f64>() < 0.01 { 4.0 } else { 1.0 };
            c.latency[bucket_of(ms)] += 1;
        }
        c
    };
    let mut failures = 0;
    for _ in 0..5000 {
        let base = sample(400);
        let canary = sample(60);
        if let (Verdict::Fail { .. }, _) = judge(&t, &base, &canary) {
            failures += 1;
        }
    }
    assert_eq!(failures, 0);
}
