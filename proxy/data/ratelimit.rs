//! Per-route rate limiting: a token bucket per client (address, or a header such as an API key),
//! with governor's keyed GCRA limiter. Limiters are kept per (route, settings) for the life of the
//! process, so a reload that keeps a route's limit keeps its buckets; idle keys are forgotten once
//! a minute.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use http::{HeaderMap, HeaderValue};

use crate::config::RateLimit;

/// What a bucket is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// The client's address.
    Client(IpAddr),
    /// The value of the key header.
    Header(HeaderValue),
}

/// One route's limiter.
pub struct RouteLimiter {
    settings: RateLimit,
    limiter: DefaultKeyedRateLimiter<RateKey>,
}

impl RouteLimiter {
    /// Takes a token for this request, or says how long until one is available.
    pub fn check(&self, headers: &HeaderMap, client: IpAddr) -> Result<(), Duration> {
        let key = match &self.settings.key_header {
            Some(name) => match headers.get(name) {
                Some(v) => RateKey::Header(v.clone()),
                None => RateKey::Client(client),
            },
            None => RateKey::Client(client),
        };
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Every route's limiter.
#[derive(Default)]
pub struct Limiters {
    by_route: Mutex<HashMap<(String, RateLimit), Arc<RouteLimiter>>>,
}

impl Limiters {
    /// The limiter of a route with these settings, created on first use.
    pub fn get(self: &Arc<Self>, route: &str, settings: &RateLimit) -> Arc<RouteLimiter> {
        let mut map = self.by_route.lock().unwrap_or_else(|e| e.into_inner());
        let first = map.is_empty();
        let limiter = map
            .entry((route.to_string(), settings.clone()))
            .or_insert_with(|| {
                let quota = Quota::per_second(settings.per_second).allow_burst(settings.burst);
                Arc::new(RouteLimiter {
                    settings: settings.clone(),
                    limiter: DefaultKeyedRateLimiter::keyed(quota),
                })
            })
            .clone();
        if first {
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(Duration::from_secs(60));
                loop {
                    ticker.tick().await;
                    let Some(all) = weak.upgrade() else { break };
                    let map = all.by_route.lock().unwrap_or_else(|e| e.into_inner());
                    for l in map.values() {
                        l.limiter.retain_recent();
                    }
                }
            });
        }
        limiter
    }
}
