//! Counting outcomes during a phase ([`Tally`]) and what a run reports ([`Report`]).
//!
//! Outcomes enter one at a time from the engine's collector task, which owns the tally, so no lock
//! is taken per request. Latencies go into an HDR histogram at microsecond resolution (1 µs to
//! 1 h, 3 significant digits); the report gives them in milliseconds. The report serializes to
//! JSON for tooling and prints as a two-column table for people.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::{CreationError, Histogram};
use http::HeaderValue;
use serde::Serialize;

use crate::conn::Failure;
use crate::plan::{Mode, Protocol};

/// The highest latency the histogram tells apart, in microseconds (one hour).
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;
/// The key under which responses without the counted header are counted.
pub const ABSENT: &str = "(absent)";

/// How one request ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// A whole response arrived.
    Response {
        status: u16,
        latency: Duration,
        counted: Option<HeaderValue>,
    },
    /// No (whole) response.
    Failed(Failure),
    /// The per-request timeout elapsed first.
    TimedOut,
}

/// Requests that did not end in a 2xx or 3xx response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Errors {
    /// TCP connect or handshake failures.
    pub connect: u64,
    /// Requests cut off by the per-request timeout.
    pub timeout: u64,
    /// Any other failure before the end of the response (reset, protocol error).
    pub other: u64,
    /// Responses with a status outside 2xx and 3xx, per status code.
    pub status: BTreeMap<u16, u64>,
    /// The first failure's message (connect or other), to tell why without a debugger.
    pub first: Option<String>,
}

impl Errors {
    /// Every error of every kind.
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.other + self.status.values().sum::<u64>()
    }
}

/// Latency percentiles of the responses, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Highest.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// Responses per value of one response header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderCounts {
    /// The header name.
    pub header: String,
    /// Responses per value; those without the header are under [`ABSENT`].
    pub counts: BTreeMap<String, u64>,
}

/// What a run measured (the warm-up left out).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Target URLs, as given.
    pub targets: Vec<String>,
    /// HTTP version.
    pub protocol: Protocol,
    /// Pacing.
    pub mode: Mode,
    /// Connections allowed per target address (URLs on one address share them).
    pub connections: usize,
    /// Connections actually opened over the measured phase, reconnects included.
    pub connections_opened: u64,
    /// Requests started.
    pub sent: u64,
    /// Requests that got a whole response, whatever its status.
    pub completed: u64,
    /// Failures and error statuses.
    pub errors: Errors,
    /// Responses per status code, every status.
    pub statuses: BTreeMap<u16, u64>,
    /// From the start of the measured phase to the last answer, in seconds.
    pub elapsed_secs: f64,
    /// Completed requests per second over `elapsed_secs`.
    pub requests_per_sec: f64,
    /// Latency of completed requests; in open loop, from the scheduled send time.
    pub latency_ms: Latency,
    /// Responses per value of the counted header.
    pub header_counts: Option<HeaderCounts>,
}

/// Outcomes counted so far in one phase.
pub(crate) struct Tally {
    pub(crate) completed: u64,
    pub(crate) errors: Errors,
    statuses: BTreeMap<u16, u64>,
    latency: Histogram<u64>,
    counted: BTreeMap<String, u64>,
}

impl Tally {
    pub(crate) fn new() -> Result<Tally, CreationError> {
        Ok(Tally {
            completed: 0,
            errors: Errors::default(),
            statuses: BTreeMap::new(),
            latency: Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3)?,
            counted: BTreeMap::new(),
        })
    }

    /// Counts one outcome; returns whether it was an error of any kind.
    pub(crate) fn record(&mut self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Response {
                status,
                latency,
                counted,
            } => {
                self.completed += 1;
                *self.statuses.entry(status).or_default() += 1;
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.latency
                    .saturating_record(micros.clamp(1, HISTOGRAM_MAX_US));
                let key = match &counted {
                    Some(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    None => ABSENT.to_string(),
                };
                *self.counted.entry(key).or_default() += 1;
                let ok = (200..400).contains(&status);
                if !ok {
                    *self.errors.status.entry(status).or_default() += 1;
                }
                !ok
            }
            Outcome::TimedOut => {
                self.errors.timeout += 1;
                true
            }
            Outcome::Failed(failure) => {
                let message = match failure {
                    Failure::Connect(m) => {
                        self.errors.connect += 1;
                        m
                    }
                    Failure::Other(m) => {
                        self.errors.other += 1;
                        m
                    }
                };
                self.errors.first.get_or_insert(message);
                true
            }
        }
    }

    /// The report of a phase that started `sent` requests in `elapsed`.
    pub(crate) fn into_report(self, run: RunFacts) -> Report {
        let h = &self.latency;
        let ms = |us: u64| us as f64 / 1000.0;
        let latency_ms = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                p50: ms(h.value_at_quantile(0.50)),
                p90: ms(h.value_at_quantile(0.90)),
                p99: ms(h.value_at_quantile(0.99)),
                p999: ms(h.value_at_quantile(0.999)),
                max: ms(h.max()),
                mean: h.mean() / 1000.0,
            }
        };
        let secs = run.elapsed.as_secs_f64();
        Report {
            targets: run.targets,
            protocol: run.protocol,
            mode: run.mode,
            connections: run.connections,
            connections_opened: run.connections_opened,
            sent: run.sent,
            completed: self.completed,
            errors: self.errors,
            statuses: self.statuses,
            elapsed_secs: secs,
            requests_per_sec: if secs > 0.0 {
                self.completed as f64 / secs
            } else {
                0.0
            },
            latency_ms,
            header_counts: run.count_header.map(|header| HeaderCounts {
                header,
                counts: self.counted,
            }),
        }
    }
}

/// What the engine knows of a phase besides its outcomes.
pub(crate) struct RunFacts {
    pub(crate) targets: Vec<String>,
    pub(crate) protocol: Protocol,
    pub(crate) mode: Mode,
    pub(crate) connections: usize,
    pub(crate) connections_opened: u64,
    pub(crate) sent: u64,
    pub(crate) elapsed: Duration,
    pub(crate) count_header: Option<String>,
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const W: usize = 12;
        writeln!(f, "{:W$}{}", "targets", self.targets.join(" "))?;
        let mode = match self.mode {
            Mode::OpenLoop { rate_per_sec } => {
                format!("open loop, {rate_per_sec} req/s scheduled (latency from scheduled send)")
            }
            Mode::ClosedLoop { concurrency } => format!("closed loop, concurrency {concurrency}"),
        };
        writeln!(f, "{:W$}{mode}", "mode")?;
        let protocol = match self.protocol {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2 (h2c)",
        };
        writeln!(
            f,
            "{:W$}{protocol}, connections {} per address ({} opened)",
            "protocol", self.connections, self.connections_opened
        )?;
        let e = &self.errors;
        writeln!(
            f,
            "{:W$}sent {}, completed {}, errors {}",
            "requests",
            self.sent,
            self.completed,
            e.total()
        )?;
        let status_errors: u64 = e.status.values().sum();
        writeln!(
            f,
            "{:W$}connect {}, timeout {}, other {}, status {status_errors}",
            "errors", e.connect, e.timeout, e.other
        )?;
        if let Some(first) = &e.first {
            writeln!(f, "{:W$}{first}", "first error")?;
        }
        writeln!(
            f,
            "{:W$}{:.3} s, {:.1} req/s",
            "elapsed", self.elapsed_secs, self.requests_per_sec
        )?;
        let l = &self.latency_ms;
        writeln!(
            f,
            "{:W$}p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
            "latency ms", l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        )?;
        // One width for status codes and header values, so both lists line up.
        let values = self.header_counts.iter().flat_map(|c| c.counts.keys());
        let v = values.map(String::len).max().unwrap_or(0).max(16);
        let mut label = "status";
        for (status, n) in &self.statuses {
            let pct = share(*n, self.completed);
            writeln!(f, "{label:W$}{status:<v$} {n:>10} {pct:>6.1}%")?;
            label = "";
        }
        if let Some(counts) = &self.header_counts {
            let mut label = counts.header.as_str();
            let total: u64 = counts.counts.values().sum();
            // A long header name gets its own line so the values stay aligned.
            if label.len() >= W {
                writeln!(f, "{label}")?;
                label = "";
            }
            for (value, n) in &counts.counts {
                let pct = share(*n, total);
                writeln!(f, "{label:W$}{value:<v$} {n:>10} {pct:>6.1}%")?;
                label = "";
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
