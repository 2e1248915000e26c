//! The routing decision: a pure function of (request head, routing table, random source).
//!
//! No I/O, no await, no allocation, no metrics. The order is fixed and documented in the README:
//! 1. route: the first whose host pattern and path prefix match;
//! 2. rules, in order: the first whose header, cookie or query value matches pins the version;
//! 3. cohort: when the route has one and the request carries the key, the hashed bucket decides;
//! 4. otherwise a weighted random split.
//!
//! The table is built from a validated configuration (plus runtime weights) when a snapshot is
//! built; `decide` only reads it.

mod cohort;
mod host;
mod rules;
mod split;

use http::HeaderMap;
use rand::Rng;

use crate::config::{self, Cohort, HostPattern, Rule};

pub use cohort::{bucket_of, BUCKETS};
pub use host::matches_any as host_matches;
pub use split::Split;

/// What `decide` reads of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// Host from the URI authority (HTTP/2, absolute form) or the Host header, port included.
    pub host: Option<&'a str>,
    /// The path, starting with `/`.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// All request headers.
    pub headers: &'a HeaderMap,
}

/// Why a version was chosen; logged with every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Rule number `n` (0-based) of the route matched.
    Rule(usize),
    /// The user key hashed into this version's bucket range.
    Cohort,
    /// The weighted random split.
    Weight,
}

impl Reason {
    /// A short label: `rule`, `cohort` or `weight`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rule(_) => "rule",
            Reason::Cohort => "cohort",
            Reason::Weight => "weight",
        }
    }
}

/// The outcome of routing one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index of the route in the table.
    pub route: usize,
    /// Index of the version within the route.
    pub version: usize,
    /// Why that version.
    pub reason: Reason,
}

/// Why no version could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoDecision {
    /// No route matched host and path.
    NoRoute,
    /// Route `n` matched but every version has weight 0 (for example after an abort).
    NoVersion(usize),
}

/// One route as the decision sees it.
#[derive(Debug, Clone)]
pub struct RouteTable {
    hosts: Vec<HostPattern>,
    path_prefix: String,
    rules: Vec<Rule>,
    cohort: Option<Cohort>,
    split: Split,
}

impl RouteTable {
    /// Builds the table of one route with the given effective weights (one per version).
    pub fn new(route: &config::Route, weights: &[u32]) -> Self {
        Self::with_stopped(route, weights, &[])
    }

    /// Like [`RouteTable::new`], and rules that pin a stopped (aborted) version are left out.
    pub fn with_stopped(route: &config::Route, weights: &[u32], stopped: &[bool]) -> Self {
        RouteTable {
            hosts: route.hosts.clone(),
            path_prefix: route.path_prefix.clone(),
            rules: route
                .rules
                .iter()
                .filter(|r| !stopped.get(r.version).copied().unwrap_or(false))
                .cloned()
                .collect(),
            cohort: route.cohort.clone(),
            split: Split::new(weights),
        }
    }

    /// The split over this route's versions.
    pub fn split(&self) -> &Split {
        &self.split
    }

    fn matches(&self, head: &RequestHead<'_>) -> bool {
        head.path.starts_with(self.path_prefix.as_str())
            && (self.hosts.is_empty()
                || head.host.is_some_and(|h| host::matches_any(&self.hosts, h)))
    }
}

/// Chooses route and version for a request.
pub fn decide<R: Rng + ?Sized>(
    head: &RequestHead<'_>,
    routes: &[RouteTable],
    rng: &mut R,
) -> Result<Decision, NoDecision> {
    let (index, route) = routes
        .iter()
        .enumerate()
        .find(|(_, r)| r.matches(head))
        .ok_or(NoDecision::NoRoute)?;
    let decision = |version, reason| Decision {
        route: index,
        version,
        reason,
    };

    if let Some((n, rule)) = route
        .rules
        .iter()
        .enumerate()
        .find(|(_, rule)| rules::matches(&rule.condition, head))
    {
        return Ok(decision(rule.version, Reason::Rule(n)));
    }

    if route.split.is_empty() {
        return Err(NoDecision::NoVersion(index));
    }

    if let Some(cohort) = &route.cohort {
        if let Some(key) = rules::cohort_key(&cohort.key, head.headers) {
            let bucket = bucket_of(&cohort.salt, key);
            if let Some(v) = route.split.by_bucket(bucket) {
                return Ok(decision(v, Reason::Cohort));
            }
        }
    }

    route
        .split
        .by_random(rng)
        .map(|v| decision(v, Reason::Weight))
        .ok_or(NoDecision::NoVersion(index))
}

#[cfg(test)]
mod tests;
