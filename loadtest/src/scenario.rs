//! Scenario files: a small YAML form of a [`Plan`], and the settings the command line shares.
//!
//! Every key is optional (`deny_unknown_fields`, so a typo is an error, with its line); the
//! command line builds the same [`Scenario`] from its flags and lays it over the file's with
//! [`Scenario::overlay`], so a flag always wins. [`Scenario::into_plan`] fills what is still
//! missing with defaults. The keys are documented in `loadtest/README.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use serde::{Deserialize, Deserializer};

use crate::plan::{Mode, Plan, Protocol, UserKeys};

/// Closed-loop workers when neither a rate nor a concurrency is given.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Measured duration when neither a duration nor a request count is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Per-request timeout when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Synthetic users in a scenario: `users: { header: x-user-id, count: 1000 }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioUsers {
    /// Header carrying the user key.
    pub header: String,
    /// Number of distinct users.
    pub count: u32,
}

/// Settings from a scenario file or from the command line; all optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario shows, one line.
    pub description: Option<String>,
    /// The proxy configuration the scenario expects, by name (documentation only).
    pub proxy_config: Option<String>,
    /// Target URLs, used round robin; repeat one to weight it.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Request method (default GET).
    pub method: Option<String>,
    /// Extra headers as `"name: value"` lines.
    #[serde(default)]
    pub headers: Vec<String>,
    /// A per-request user key header.
    pub users: Option<ScenarioUsers>,
    /// A response header whose values are counted.
    pub count_header: Option<String>,
    /// `http1` (default) or `http2` (h2c with prior knowledge).
    pub protocol: Option<Protocol>,
    /// Open loop at this many requests per second.
    pub rate: Option<f64>,
    /// Closed loop with this many workers.
    pub concurrency: Option<usize>,
    /// Measured duration, like `30s` or `2m`.
    #[serde(default, deserialize_with = "duration")]
    pub duration: Option<Duration>,
    /// Measured request count.
    pub requests: Option<u64>,
    /// Connections per target address.
    pub connections: Option<usize>,
    /// Per-request timeout, like `2s`.
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// Warm-up before the measured phase, like `5s`.
    #[serde(default, deserialize_with = "duration")]
    pub warmup: Option<Duration>,
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
}

/// Why a scenario could not become a plan.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("scenario {}: cannot read", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or has an unknown key (the cause gives the line).
    #[error("scenario {}", path.display())]
    Yaml {
        /// The file.
        path: PathBuf,
        /// What serde_yaml said, with line and column.
        #[source]
        source: serde_yaml::Error,
    },
    /// A header line without a colon or name.
    #[error("header {0:?}: expected \"name: value\"")]
    Header(String),
    /// A method that is not an HTTP token.
    #[error("method {0:?}: not a valid HTTP method")]
    Method(String),
    /// Both a rate and a concurrency.
    #[error("rate (open loop) and concurrency (closed loop) exclude each other")]
    BothModes,
}

/// Splits `"name: value"` at the first colon.
pub fn parse_header_line(line: &str) -> Result<(String, String), ScenarioError> {
    match line.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(ScenarioError::Header(line.to_string())),
    }
}

impl Scenario {
    /// Parses scenario YAML; `path` only names the file in errors.
    pub fn from_yaml(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
        serde_yaml::from_str(text).map_err(|source| ScenarioError::Yaml {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Scenario::from_yaml(path, &text)
    }

    /// `self` with every setting that `over` has replaced by `over`'s. Headers are merged by
    /// name (case-insensitive); a rate or a concurrency in `over` replaces the mode as a whole.
    pub fn overlay(self, over: Scenario) -> Scenario {
        let mut headers: Vec<String> = self
            .headers
            .into_iter()
            .filter(|line| {
                let name = line.split(':').next().unwrap_or_default().trim();
                !over.headers.iter().any(|o| {
                    let other = o.split(':').next().unwrap_or_default().trim();
                    other.eq_ignore_ascii_case(name)
                })
            })
            .collect();
        headers.extend(over.headers);
        let mode_given = over.rate.is_some() || over.concurrency.is_some();
        Scenario {
            description: over.description.or(self.description),
            proxy_config: over.proxy_config.or(self.proxy_config),
            urls: if over.urls.is_empty() {
                self.urls
            } else {
                over.urls
            },
            method: over.method.or(self.method),
            headers,
            users: over.users.or(self.users),
            count_header: over.count_header.or(self.count_header),
            protocol: over.protocol.or(self.protocol),
            rate: if mode_given { over.rate } else { self.rate },
            concurrency: if mode_given {
                over.concurrency
            } else {
                self.concurrency
            },
            duration: over.duration.or(self.duration),
            requests: over.requests.or(self.requests),
            connections: over.connections.or(self.connections),
            timeout: over.timeout.or(self.timeout),
            warmup: over.warmup.or(self.warmup),
        }
    }

    /// The plan these settings describe, defaults filled in. Ranges and URLs are checked later,
    /// by [`Plan::validate`] or `run`.
    pub fn into_plan(self) -> Result<Plan, ScenarioError> {
        let mode = match (self.rate, self.concurrency) {
            (Some(_), Some(_)) => return Err(ScenarioError::BothModes),
            (Some(rate_per_sec), None) => Mode::OpenLoop { rate_per_sec },
            (None, Some(concurrency)) => Mode::ClosedLoop { concurrency },
            (None, None) => Mode::ClosedLoop {
                concurrency: DEFAULT_CONCURRENCY,
            },
        };
        let method = match &self.method {
            None => Method::GET,
            Some(m) => Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                .map_err(|_| ScenarioError::Method(m.clone()))?,
        };
        let headers = self
            .headers
            .iter()
            .map(|line| parse_header_line(line))
            .collect::<Result<Vec<_>, _>>()?;
        let duration = match (self.duration, self.requests) {
            (None, None) => Some(DEFAULT_DURATION),
            (duration, _) => duration,
        };
        Ok(Plan {
            targets: self.urls,
            method,
            headers,
            user_keys: self.users.map(|u| UserKeys {
                header: u.header,
                users: u.count,
            }),
            protocol: self.protocol.unwrap_or_default(),
            mode,
            duration,
            requests: self.requests,
            connections: self.connections,
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
            warmup: self.warmup,
            count_header: self.count_header,
        })
    }
}

#[cfg(test)]
mod tests;
