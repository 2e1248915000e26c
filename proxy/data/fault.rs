//! Who caused a request to fail: the downstream (the client), the upstream (the version's
//! endpoint) or the proxy itself.
//!
//! The answer decides what a failure feeds. Only the upstream's failures count against a version
//! (its 5xx, its upstream errors, the canary analysis, passive ejection); a client's are counted
//! under `switchyard_downstream_errors_total` and answered 4xx; the proxy's own are answered and
//! counted by status only. The request body learns of a client's fault while it streams upstream,
//! where the upstream call sees only "the body failed": a [`FaultCell`] shared between the body and
//! the request's record carries the first fault across.

use std::sync::atomic::{AtomicU8, Ordering};

pub use crate::metrics::downstream::{DownstreamFault, Refusal, DOWNSTREAM_FAULTS};
use crate::metrics::FailureKind;

/// The side a failed request is blamed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Blame {
    /// Nothing failed, or nothing is known to have.
    #[default]
    None,
    /// The client: counted as a downstream error, never against the version.
    Downstream(DownstreamFault),
    /// The upstream: a failure before a response head (with its kind), or a 5xx it answered.
    Upstream(Option<FailureKind>),
    /// The proxy itself (no endpoint to send to, an internal limit).
    Proxy,
}

impl Blame {
    /// The access log's `blame` field.
    pub fn side(self) -> &'static str {
        match self {
            Blame::None => "-",
            Blame::Downstream(_) => "downstream",
            Blame::Upstream(_) => "upstream",
            Blame::Proxy => "proxy",
        }
    }

    /// The access log's `fault` field: what failed on that side.
    pub fn kind(self) -> &'static str {
        match self {
            Blame::Downstream(f) => f.as_str(),
            Blame::Upstream(Some(k)) => k.as_str(),
            Blame::Upstream(None) => "status",
            Blame::None | Blame::Proxy => "-",
        }
    }
}

/// The first client fault seen while a request body streamed; empty until one is.
#[derive(Debug, Default)]
pub struct FaultCell(AtomicU8);

impl FaultCell {
    /// Records `fault` unless one was recorded already (the first cause is the one reported).
    pub fn set(&self, fault: DownstreamFault) {
        let code = DOWNSTREAM_FAULTS
            .iter()
            .position(|f| *f == fault)
            .map_or(1, |i| i as u8 + 1);
        let _ = self
            .0
            .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The recorded fault, if any.
    pub fn get(&self) -> Option<DownstreamFault> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            code => DOWNSTREAM_FAULTS.get(usize::from(code) - 1).copied(),
        }
    }
}

/// What a failed downstream request body says about its client: a transport that closed early is
/// a truncated body, a reset is a client that left, anything else (a framing error from hyper's
/// decoder or from [`crate::data::framing`], an HTTP/2 stream error) is a malformed request.
pub fn classify_body_error(error: &(dyn std::error::Error + 'static)) -> DownstreamFault {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::UnexpectedEof => DownstreamFault::Truncated,
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::NotConnected => DownstreamFault::Closed,
                _ => DownstreamFault::Malformed,
            };
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            // A client that cancels its stream or whose connection dies has left; any other
            // stream error (a DATA length that contradicts content-length) is a malformed request.
            let cancelled = matches!(h2.reason(), Some(h2::Reason::CANCEL | h2::Reason::NO_ERROR));
            return if cancelled || h2.is_io() || h2.is_go_away() {
                DownstreamFault::Closed
            } else {
                DownstreamFault::Malformed
            };
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return DownstreamFault::Truncated;
            }
        }
        source = e.source();
    }
    DownstreamFault::Malformed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_fault_is_kept() {
        let cell = FaultCell::default();
        assert_eq!(cell.get(), None);
        cell.set(DownstreamFault::Stalled);
        cell.set(DownstreamFault::Malformed);
        assert_eq!(cell.get(), Some(DownstreamFault::Stalled));
    }

    #[test]
    fn transport_errors_name_the_fault() {
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof");
        assert_eq!(classify_body_error(&eof), DownstreamFault::Truncated);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(classify_body_error(&reset), DownstreamFault::Closed);
        let bad = std::io::Error::new(std::io::ErrorKind::InvalidData, "chunk");
        assert_eq!(classify_body_error(&bad), DownstreamFault::Malformed);
        let cancel = h2::Error::from(h2::Reason::CANCEL);
        assert_eq!(classify_body_error(&cancel), DownstreamFault::Closed);
        let protocol = h2::Error::from(h2::Reason::PROTOCOL_ERROR);
        assert_eq!(classify_body_error(&protocol), DownstreamFault::Malformed);
    }

    #[test]
    fn blame_names_the_side_and_the_kind() {
        assert_eq!(
            Blame::Downstream(DownstreamFault::TooLarge).side(),
            "downstream"
        );
        assert_eq!(
            Blame::Downstream(DownstreamFault::TooLarge).kind(),
            "too_large"
        );
        assert_eq!(Blame::Upstream(Some(FailureKind::Reset)).kind(), "reset");
        assert_eq!(Blame::Upstream(None).side(), "upstream");
        assert_eq!(Blame::None.side(), "-");
    }
}
