//! Counters a caller can read while a run is going, for a progress line.
//!
//! The engine writes them (the dispatcher counts sends, the collector counts answers and errors);
//! a caller shares the same [`Live`] through an `Arc` and reads [`Live::snapshot`] whenever it
//! likes. They are reset when the warm-up ends, so they count the measured phase. Relaxed atomics:
//! a progress line does not need a consistent cut, and the final [`crate::Report`] is exact.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Running counts of the current phase.
#[derive(Debug, Default)]
pub struct Live {
    sent: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
    warming: AtomicBool,
}

/// One reading of [`Live`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveSnapshot {
    /// Requests started.
    pub sent: u64,
    /// Whole responses received, any status.
    pub completed: u64,
    /// Failures, timeouts and error statuses.
    pub errors: u64,
    /// Whether the warm-up phase is running.
    pub warming: bool,
}

impl Live {
    /// Reads the counters.
    pub fn snapshot(&self) -> LiveSnapshot {
        LiveSnapshot {
            sent: self.sent.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            warming: self.warming.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn start_phase(&self, warming: bool) {
        self.sent.store(0, Ordering::Relaxed);
        self.completed.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        self.warming.store(warming, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn answered(&self, response: bool, error: bool) {
        if response {
            self.completed.fetch_add(1, Ordering::Relaxed);
        }
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}
