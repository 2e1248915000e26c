//! The release clock: milliseconds since the Unix epoch, read as the wall clock at the first call
//! plus the runtime's monotonic time since. Rollout steps, aborts and ejections are stamped with
//! it, so they never jump with the wall clock, and a test on paused tokio time moves them by
//! `tokio::time::advance` instead of sleeping.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

static BASE: OnceLock<(u64, Instant)> = OnceLock::new();

/// Milliseconds since the Unix epoch on the release clock.
pub fn now_unix_ms() -> u64 {
    let (wall, at) = *BASE.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        (wall, Instant::now())
    });
    wall + Instant::now().saturating_duration_since(at).as_millis() as u64
}
