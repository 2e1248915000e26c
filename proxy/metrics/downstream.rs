//! What clients did wrong, counted apart from what versions did wrong.
//!
//! A request whose client failed (a malformed, truncated or stalled body, a body over the route's
//! limit, a client that left) is counted here under its route and version, and nowhere that a
//! release decision reads: not as a 5xx of the version, not as an upstream error, not in the
//! canary analysis, not toward passive ejection. Faults found before a request has a route (a
//! malformed head, an invalid Host, a connection that never completes a request head) are counted
//! in a second family, by kind only. Handles are resolved once: per version at snapshot build,
//! the refusal counters when the families are registered.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// What a client did wrong, as far as counting and the answer care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownstreamFault {
    /// The request was malformed (a chunk line, a chunk's CRLF, a trailer, a framing header).
    Malformed,
    /// The request body ended before its declared end.
    Truncated,
    /// The client paused its request body longer than the idle timeout.
    Stalled,
    /// The request body is larger than the route allows.
    TooLarge,
    /// The client went away before its answer was complete.
    Closed,
}

/// Every fault, in the order of the per-version handles.
pub const DOWNSTREAM_FAULTS: [DownstreamFault; 5] = [
    DownstreamFault::Malformed,
    DownstreamFault::Truncated,
    DownstreamFault::Stalled,
    DownstreamFault::TooLarge,
    DownstreamFault::Closed,
];

impl DownstreamFault {
    /// The `kind` label, and the access log's `fault` field.
    pub fn as_str(self) -> &'static str {
        match self {
            DownstreamFault::Malformed => "malformed",
            DownstreamFault::Truncated => "truncated",
            DownstreamFault::Stalled => "stalled",
            DownstreamFault::TooLarge => "too_large",
            DownstreamFault::Closed => "closed",
        }
    }

    fn index(self) -> usize {
        DOWNSTREAM_FAULTS
            .iter()
            .position(|f| *f == self)
            .unwrap_or(0)
    }
}

/// Why a request or connection was refused before it had a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A malformed request head, Host or framing header (400).
    Malformed,
    /// A request head over the size or header-count limit (431).
    TooLarge,
    /// A method or transfer coding the proxy does not implement (501).
    Unsupported,
    /// No complete request head (or HTTP/2 preface) within the header-read timeout.
    HeaderTimeout,
}

const REFUSALS: [Refusal; 4] = [
    Refusal::Malformed,
    Refusal::TooLarge,
    Refusal::Unsupported,
    Refusal::HeaderTimeout,
];

impl Refusal {
    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::TooLarge => "too_large",
            Refusal::Unsupported => "unsupported",
            Refusal::HeaderTimeout => "header_timeout",
        }
    }
}

/// The two families, registered once for the life of the process.
pub struct DownstreamFamilies {
    errors: IntCounterVec,
    refused: [IntCounter; 4],
    /// Idle HTTP/1.1 client connections parked: their buffers given back, only the socket kept.
    pub parked: IntGauge,
    /// HTTP/1.1 requests the fast path handed to hyper's server.
    pub handed_to_hyper: IntCounter,
}

/// The fault counters of one (route, version), resolved at snapshot build.
#[derive(Clone)]
pub struct VersionFaults([IntCounter; 5]);

impl VersionFaults {
    /// Counts one request whose client failed.
    pub fn count(&self, fault: DownstreamFault) {
        self.0[fault.index()].inc();
    }
}

impl DownstreamFamilies {
    /// Creates both families and registers them with `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let errors = IntCounterVec::new(
            Opts::new(
                "switchyard_downstream_errors_total",
                "Routed requests that failed by the client's fault (malformed, truncated, stalled, \
                 too_large, closed); never counted as the version's errors.",
            ),
            &["route", "version", "kind"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "switchyard_downstream_refused_total",
                "Requests and connections refused before routing, by kind (malformed, too_large, \
                 unsupported, header_timeout).",
            ),
            &["kind"],
        )?;
        let parked = IntGauge::new(
            "switchyard_downstream_connections_parked",
            "Idle HTTP/1.1 client connections holding only their socket: idle longer than \
             limits.idle_release_after, their buffers given back until their next request.",
        )?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        let handed_to_hyper = IntCounter::new(
            "switchyard_downstream_handed_to_hyper_total",
            "HTTP/1.1 requests the fast path did not take (a chunked body or one not all \
             read with the head, an upgrade, Expect, TE, HTTP/1.0, a head hyper refuses): hyper's server serves them, and their connection \
             until it idles.",
        )?;
        registry.register(Box::new(parked.clone()))?;
        registry.register(Box::new(handed_to_hyper.clone()))?;
        Ok(DownstreamFamilies {
            parked,
            handed_to_hyper,
            errors,
            refused: REFUSALS.map(|r| refused.with_label_values(&[r.as_str()])),
        })
    }

    /// Resolves the fault counters of one version.
    pub fn version(&self, route: &str, version: &str) -> VersionFaults {
        VersionFaults(
            DOWNSTREAM_FAULTS.map(|f| self.errors.with_label_values(&[route, version, f.as_str()])),
        )
    }

    /// Drops the series of a removed version.
    pub fn remove(&self, route: &str, version: &str) {
        for f in DOWNSTREAM_FAULTS {
            let _ = self
                .errors
                .remove_label_values(&[route, version, f.as_str()]);
        }
    }

    /// Counts one refusal before routing.
    pub fn refused(&self, refusal: Refusal) {
        let i = REFUSALS.iter().position(|r| *r == refusal).unwrap_or(0);
        self.refused[i].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fault_counts_under_its_own_kind() {
        let registry = Registry::new();
        let families = DownstreamFamilies::register(&registry).unwrap();
        let faults = families.version("shop", "canary");
        faults.count(DownstreamFault::Malformed);
        faults.count(DownstreamFault::Malformed);
        faults.count(DownstreamFault::Stalled);
        families.refused(Refusal::HeaderTimeout);
        let kinds: Vec<(String, u64)> = DOWNSTREAM_FAULTS
            .iter()
            .map(|f| (f.as_str().to_string(), faults.0[f.index()].get()))
            .collect();
        assert_eq!(kinds[0], ("malformed".to_string(), 2));
        assert_eq!(kinds[2], ("stalled".to_string(), 1));
        assert_eq!(families.refused[3].get(), 1);
        families.remove("shop", "canary");
        assert!(
            registry
                .gather()
                .iter()
                .all(|f| f.name() != "switchyard_downstream_errors_total"
                    || f.get_metric().is_empty())
        );
    }
}
