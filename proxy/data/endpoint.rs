//! The health of one endpoint, as the data path reads it: one atomic load per request to skip an
//! endpoint that an active check marked down or that passive ejection holds out, and one update
//! when a request ends. The release module's checker tasks write the active state.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use crate::config::HealthCheck;

const UNKNOWN: u8 = 0;
const HEALTHY: u8 = 1;
const UNHEALTHY: u8 = 2;

/// Consecutive failures (5xx or connect) that eject an endpoint.
pub const EJECT_AFTER_FAILURES: u32 = 5;
/// First ejection time; doubles with each ejection up to [`MAX_EJECTION`].
pub const BASE_EJECTION: Duration = Duration::from_secs(10);
/// Longest ejection.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

use crate::state::now_unix_ms as now_ms;

/// The health of one endpoint.
#[derive(Default)]
pub struct EndpointHealth {
    active: AtomicU8,
    successes: AtomicU32,
    failures: AtomicU32,
    consecutive_errors: AtomicU32,
    ejections: AtomicU32,
    ejected_until_ms: AtomicU64,
}

impl EndpointHealth {
    /// False when an active check marked it unhealthy or passive ejection holds it out.
    pub fn usable(&self) -> bool {
        self.active.load(Ordering::Relaxed) != UNHEALTHY
            && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms()
    }

    /// True when an active check has marked it unhealthy.
    pub fn down_on_checks(&self) -> bool {
        self.active.load(Ordering::Relaxed) == UNHEALTHY
    }

    /// True when an active check has passed its healthy threshold.
    pub fn checked_healthy(&self) -> bool {
        self.active.load(Ordering::Relaxed) == HEALTHY
    }

    /// Passive: a request to this endpoint ended. Connect failures and 5xx count against it.
    pub fn observe(&self, failed: bool) {
        if !failed {
            if self.consecutive_errors.load(Ordering::Relaxed) != 0 {
                self.consecutive_errors.store(0, Ordering::Relaxed);
            }
            return;
        }
        let n = self.consecutive_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= EJECT_AFTER_FAILURES {
            self.consecutive_errors.store(0, Ordering::Relaxed);
            let k = self.ejections.fetch_add(1, Ordering::Relaxed).min(5);
            let time = (BASE_EJECTION * 2u32.pow(k)).min(MAX_EJECTION);
            self.ejected_until_ms
                .store(now_ms() + time.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Active: one probe result; returns true when the state changed.
    pub fn probe(&self, ok: bool, check: &HealthCheck) -> bool {
        let state = self.active.load(Ordering::Relaxed);
        if ok {
            self.failures.store(0, Ordering::Relaxed);
            let n = self.successes.fetch_add(1, Ordering::Relaxed) + 1;
            // An endpoint never checked becomes healthy at its first success.
            if state != HEALTHY && (state == UNKNOWN || n >= check.healthy_threshold) {
                self.active.store(HEALTHY, Ordering::Relaxed);
                self.ejections.store(0, Ordering::Relaxed);
                return true;
            }
        } else {
            self.successes.store(0, Ordering::Relaxed);
            let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if state != UNHEALTHY && n >= check.unhealthy_threshold {
                self.active.store(UNHEALTHY, Ordering::Relaxed);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Passive ejection on paused time: five failures eject for 10 s, the next ejection lasts
    /// twice as long, a success in between resets the count.
    #[tokio::test(start_paused = true)]
    async fn ejection_lasts_its_time_and_doubles_on_paused_time() {
        let e = EndpointHealth::default();
        for _ in 0..EJECT_AFTER_FAILURES - 1 {
            e.observe(true);
        }
        e.observe(false);
        e.observe(true);
        assert!(e.usable(), "a success resets the consecutive count");
        for _ in 0..EJECT_AFTER_FAILURES {
            e.observe(true);
        }
        assert!(!e.usable(), "ejected after {EJECT_AFTER_FAILURES} failures");
        tokio::time::advance(BASE_EJECTION - Duration::from_millis(5)).await;
        assert!(!e.usable(), "still ejected just before the ejection time");
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(e.usable(), "back after the ejection time");

        for _ in 0..EJECT_AFTER_FAILURES {
            e.observe(true);
        }
        tokio::time::advance(BASE_EJECTION + Duration::from_millis(10)).await;
        assert!(!e.usable(), "the second ejection lasts twice as long");
        tokio::time::advance(BASE_EJECTION).await;
        assert!(e.usable());
    }
}
