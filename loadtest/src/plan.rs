//! What a run does: the [`Plan`] a caller fills in, and its checked form.
//!
//! A `Plan` is plain data (targets, method, headers, protocol, mode, bounds). [`Plan::validate`]
//! checks it once and turns it into a `Prepared` plan with parsed targets, header names and values
//! and the synthetic user keys, so the engine only indexes and clones per request. Every run is
//! bounded: at most [`MAX_DURATION`] of measured traffic plus at most [`MAX_WARMUP`] of warm-up,
//! and at most [`MAX_REQUESTS`] requests. The engine lives in `engine.rs`; this module does no I/O.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};

use crate::target::{Target, TargetError};

/// The longest measured phase a plan may ask for.
pub const MAX_DURATION: Duration = Duration::from_secs(60 * 60);
/// The longest warm-up a plan may ask for.
pub const MAX_WARMUP: Duration = Duration::from_secs(5 * 60);
/// The longest per-request timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The most requests one run may send.
pub const MAX_REQUESTS: u64 = 100_000_000;
/// The most connections per target address, and the most closed-loop workers.
pub const MAX_CONNECTIONS: usize = 10_000;
/// The highest open-loop rate, in requests per second.
pub const MAX_RATE: f64 = 1_000_000.0;
/// The most synthetic users.
pub const MAX_USERS: u32 = 100_000;
/// Connections per target address in open-loop mode when the plan does not say.
pub const DEFAULT_OPEN_LOOP_CONNECTIONS: usize = 32;

/// The HTTP version spoken to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive: one request at a time per connection.
    #[default]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c): requests multiplexed on each connection.
    Http2,
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Requests are scheduled at fixed intervals whatever the answers; latency is measured from the
    /// scheduled send time, so a stalled target shows up in the latency (no coordinated omission).
    OpenLoop {
        /// Scheduled requests per second.
        rate_per_sec: f64,
    },
    /// `concurrency` workers each send a request, wait for the answer, and send the next;
    /// latency is measured from the actual send.
    ClosedLoop {
        /// Number of workers.
        concurrency: usize,
    },
}

/// A header whose value is a synthetic user key, for cohort tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserKeys {
    /// Header name, for example `x-user-id`.
    pub header: String,
    /// How many distinct users: request `i` carries `user-K` with K drawn deterministically
    /// from `0..users`.
    pub users: u32,
}

/// Everything a run needs. Build one with [`Plan::new`] and set the fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Target URLs (`http://`, loopback only), used round robin.
    pub targets: Vec<String>,
    /// Request method.
    pub method: Method,
    /// Extra request headers. A `host` header replaces the URL's authority on the wire.
    pub headers: Vec<(String, String)>,
    /// A per-request user key header.
    pub user_keys: Option<UserKeys>,
    /// HTTP/1.1 or h2c.
    pub protocol: Protocol,
    /// Open or closed loop.
    pub mode: Mode,
    /// How long the measured phase lasts (at most [`MAX_DURATION`]).
    pub duration: Option<Duration>,
    /// How many requests the measured phase sends; the run stops at whichever bound comes first.
    pub requests: Option<u64>,
    /// Connections per target address (URLs on one address share them). `None`: the concurrency
    /// in closed loop, [`DEFAULT_OPEN_LOOP_CONNECTIONS`] in open loop. With HTTP/1.1 this caps
    /// requests in flight.
    pub connections: Option<usize>,
    /// Per-request timeout, from dispatch to the end of the response body.
    pub timeout: Duration,
    /// A phase run first with the same settings and left out of the report.
    pub warmup: Option<Duration>,
    /// A response header whose values are counted (`x-served-by`, `x-switchyard-version`).
    pub count_header: Option<String>,
}

impl Plan {
    /// A plan for one target: GET, HTTP/1.1, closed loop with 8 workers, 10 seconds, 5 s timeout.
    pub fn new(url: impl Into<String>) -> Plan {
        Plan {
            targets: vec![url.into()],
            method: Method::GET,
            headers: Vec::new(),
            user_keys: None,
            protocol: Protocol::Http1,
            mode: Mode::ClosedLoop { concurrency: 8 },
            duration: Some(Duration::from_secs(10)),
            requests: None,
            connections: None,
            timeout: Duration::from_secs(5),
            warmup: None,
            count_header: None,
        }
    }

    /// Checks every field; the same check `run` makes before sending anything.
    pub fn validate(&self) -> Result<(), PlanError> {
        Prepared::new(self).map(drop)
    }
}

/// Why a plan was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// No target URL.
    #[error("no target URL")]
    NoTarget,
    /// A target URL was refused.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Neither a duration nor a request count.
    #[error("a duration or a request count is required")]
    Unbounded,
    /// A number out of its range.
    #[error("{field}: {value} is out of range ({range})")]
    OutOfRange {
        /// Which field.
        field: &'static str,
        /// The value given.
        value: String,
        /// The allowed range.
        range: String,
    },
    /// A header name or value that HTTP does not allow.
    #[error("header {name:?}: invalid name or value")]
    Header {
        /// The name as given.
        name: String,
    },
    /// A `host` header that is not a valid authority (needed for HTTP/2's `:authority`).
    #[error("host header {value:?}: not a valid host[:port]")]
    HostHeader {
        /// The value as given.
        value: String,
    },
}

/// A checked plan: everything parsed, ready to be indexed per request.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) targets: Vec<Target>,
    pub(crate) method: Method,
    /// Extra headers, without `host`.
    pub(crate) headers: HeaderMap,
    /// The `host` header value, when the plan sets one.
    pub(crate) host: Option<HeaderValue>,
    /// The user key header and one value per user.
    pub(crate) users: Option<(HeaderName, Vec<HeaderValue>)>,
    pub(crate) protocol: Protocol,
    pub(crate) mode: Mode,
    pub(crate) duration: Duration,
    pub(crate) requests: Option<u64>,
    pub(crate) connections: usize,
    pub(crate) timeout: Duration,
    pub(crate) warmup: Option<Duration>,
    pub(crate) count_header: Option<HeaderName>,
}

fn out_of_range(field: &'static str, value: impl ToString, range: impl ToString) -> PlanError {
    PlanError::OutOfRange {
        field,
        value: value.to_string(),
        range: range.to_string(),
    }
}

fn check_duration(field: &'static str, d: Duration, max: Duration) -> Result<Duration, PlanError> {
    if d.is_zero() || d > max {
        let range = format!("above 0, at most {}", humantime::format_duration(max));
        return Err(out_of_range(field, humantime::format_duration(d), range));
    }
    Ok(d)
}

fn header_name(name: &str) -> Result<HeaderName, PlanError> {
    HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| PlanError::Header {
        name: name.to_string(),
    })
}

impl Prepared {
    pub(crate) fn new(plan: &Plan) -> Result<Prepared, PlanError> {
        if plan.targets.is_empty() {
            return Err(PlanError::NoTarget);
        }
        let targets = plan
            .targets
            .iter()
            .map(|url| Target::parse(url))
            .collect::<Result<Vec<_>, _>>()?;

        let mut headers = HeaderMap::new();
        let mut host = None;
        for (name, value) in &plan.headers {
            let name = header_name(name)?;
            let value = HeaderValue::from_str(value.trim()).map_err(|_| PlanError::Header {
                name: name.to_string(),
            })?;
            if name == http::header::HOST {
                // HTTP/2 sends it as :authority, so it has to be one.
                if http::uri::Authority::try_from(value.as_bytes()).is_err() {
                    return Err(PlanError::HostHeader {
                        value: value.to_str().unwrap_or_default().to_string(),
                    });
                }
                host = Some(value);
            } else {
                headers.append(name, value);
            }
        }

        let users = match &plan.user_keys {
            None => None,
            Some(keys) => {
                if keys.users == 0 || keys.users > MAX_USERS {
                    return Err(out_of_range(
                        "users",
                        keys.users,
                        format!("1..={MAX_USERS}"),
                    ));
                }
                let values = (0..keys.users)
                    .map(|k| HeaderValue::from_str(&format!("user-{k}")))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| PlanError::Header {
                        name: keys.header.clone(),
                    })?;
                Some((header_name(&keys.header)?, values))
            }
        };

        let default_connections = match plan.mode {
            Mode::OpenLoop { rate_per_sec } => {
                if !(rate_per_sec.is_finite() && rate_per_sec > 0.0 && rate_per_sec <= MAX_RATE) {
                    return Err(out_of_range(
                        "rate",
                        rate_per_sec,
                        format!("above 0, at most {MAX_RATE}"),
                    ));
                }
                DEFAULT_OPEN_LOOP_CONNECTIONS
            }
            Mode::ClosedLoop { concurrency } => {
                if concurrency == 0 || concurrency > MAX_CONNECTIONS {
                    let range = format!("1..={MAX_CONNECTIONS}");
                    return Err(out_of_range("concurrency", concurrency, range));
                }
                concurrency
            }
        };
        let connections = plan.connections.unwrap_or(default_connections);
        if connections == 0 || connections > MAX_CONNECTIONS {
            let range = format!("1..={MAX_CONNECTIONS}");
            return Err(out_of_range("connections", connections, range));
        }

        let duration = match (plan.duration, plan.requests) {
            (None, None) => return Err(PlanError::Unbounded),
            (Some(d), _) => check_duration("duration", d, MAX_DURATION)?,
            // A count alone is still cut off at the longest allowed duration.
            (None, Some(_)) => MAX_DURATION,
        };
        if let Some(n) = plan.requests {
            if n == 0 || n > MAX_REQUESTS {
                return Err(out_of_range("requests", n, format!("1..={MAX_REQUESTS}")));
            }
            if let Mode::OpenLoop { rate_per_sec } = plan.mode {
                // Refuse a count that the schedule could not send within the time bound.
                let needed = crate::schedule::offset(n - 1, rate_per_sec);
                if plan.duration.is_none() && needed >= MAX_DURATION {
                    let range = format!("sent within {}", humantime::format_duration(MAX_DURATION));
                    return Err(out_of_range("requests", n, range));
                }
            }
        }

        Ok(Prepared {
            targets,
            method: plan.method.clone(),
            headers,
            host,
            users,
            protocol: plan.protocol,
            mode: plan.mode,
            duration,
            requests: plan.requests,
            connections,
            timeout: check_duration("timeout", plan.timeout, MAX_TIMEOUT)?,
            warmup: match plan.warmup {
                Some(w) => Some(check_duration("warmup", w, MAX_WARMUP)?),
                None => None,
            },
            count_header: match &plan.count_header {
                Some(name) => Some(header_name(name)?),
                None => None,
            },
        })
    }
}

#[cfg(test)]
mod tests;
