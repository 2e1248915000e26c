//! Turns a `RawConfig` into a `Config`, collecting every problem with its field path.
//!
//! Validation is total: it never stops at the first problem, so a user fixes a file in one pass.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::header::HeaderName;
use http::uri::Authority;

use super::error::{Location, Problem};
use super::model::*;
use super::raw::*;

/// Collects problems while validating.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            location: Location::default(),
            message: message.into(),
        });
    }
}

/// Validates a parsed file into domain types, or returns every problem found. Relative file paths
/// (certificates, keys, CA bundles, the state file) are resolved against `base`, the directory of
/// the configuration file.
pub fn validate(raw: RawConfig, base: &Path) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::default();

    if raw.listeners.is_empty() {
        p.add("listeners", "at least one listener is required");
    }
    let mut listener_names = HashSet::new();
    let mut listeners = Vec::with_capacity(raw.listeners.len());
    for (i, l) in raw.listeners.iter().enumerate() {
        let path = format!("listeners[{i}]");
        if name_ok(&mut p, &format!("{path}.name"), &l.name)
            && !listener_names.insert(l.name.as_str())
        {
            p.add(
                format!("{path}.name"),
                format!("duplicate listener name {:?}", l.name),
            );
        }
        let tls = l
            .tls
            .as_ref()
            .and_then(|t| listener_tls(&mut p, &format!("{path}.tls"), t, base));
        if let Some(addr) = socket_addr(&mut p, &format!("{path}.addr"), &l.addr) {
            if l.max_connections == Some(0) {
                p.add(format!("{path}.max_connections"), "must be at least 1");
            }
            listeners.push(Listener {
                name: l.name.clone(),
                addr,
                tls,
                max_connections: l.max_connections,
            });
        }
    }

    let admin = raw.admin.as_ref().and_then(|a| admin(&mut p, a, base));

    let drain_timeout = match &raw.drain_timeout {
        Some(s) => duration(&mut p, "drain_timeout", s).unwrap_or(DEFAULT_DRAIN_TIMEOUT),
        None => DEFAULT_DRAIN_TIMEOUT,
    };

    if raw.routes.is_empty() {
        p.add("routes", "at least one route is required");
    }
    let mut route_names = HashSet::new();
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, r) in raw.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if name_ok(&mut p, &format!("{path}.name"), &r.name) && !route_names.insert(r.name.as_str())
        {
            p.add(
                format!("{path}.name"),
                format!("duplicate route name {:?}", r.name),
            );
        }
        if let Some(route) = route(&mut p, &path, r, base) {
            routes.push(route);
        }
    }

    let state_file = match raw.state_file.as_deref() {
        Some("") => {
            p.add(
                "state_file",
                "must not be empty; leave it out to keep no state",
            );
            None
        }
        other => other.map(|f| base.join(f)),
    };

    let mut access_log = AccessLog::default();
    if let Some(a) = &raw.access_log {
        access_log.enabled = a.enabled.unwrap_or(true);
        if let Some(sample) = a.sample {
            if (0.0..=1.0).contains(&sample) {
                access_log.sample = sample;
            } else {
                p.add(
                    "access_log.sample",
                    format!("{sample} is not a fraction from 0.0 to 1.0"),
                );
            }
        }
    }

    let mut limits = Limits::default();
    if let Some(l) = &raw.limits {
        if let Some(n) = l.max_connections {
            if n == 0 {
                p.add("limits.max_connections", "must be at least 1");
            }
            limits.max_connections = n.max(1);
        }
        if let Some(n) = l.max_request_header_bytes {
            if n < 8192 {
                p.add(
                    "limits.max_request_header_bytes",
                    format!("{n} is below the least hyper accepts (8192)"),
                );
            }
            limits.max_request_header_bytes = n.max(8192);
        }
        if let Some(n) = l.max_request_headers {
            if n == 0 {
                p.add("limits.max_request_headers", "must be at least 1");
            }
            limits.max_request_headers = n.max(1);
        }
        if let Some(n) = l.http2_max_concurrent_streams {
            limits.http2_max_concurrent_streams = n.max(1);
        }
        for (field, value, slot) in [
            (
                "http2_initial_stream_window",
                l.http2_initial_stream_window,
                &mut limits.http2_initial_stream_window,
            ),
            (
                "http2_initial_connection_window",
                l.http2_initial_connection_window,
                &mut limits.http2_initial_connection_window,
            ),
        ] {
            if let Some(n) = value {
                // RFC 9113 §6.9.2: windows from 65,535 to 2^31 - 1.
                if !(65_535..=0x7fff_ffff).contains(&n) {
                    p.add(
                        format!("limits.{field}"),
                        format!("{n} is outside 65535..2147483647 (RFC 9113)"),
                    );
                } else {
                    *slot = n;
                }
            }
        }
        if let Some(t) = &l.request_body_idle_timeout {
            limits.request_body_idle_timeout =
                duration(&mut p, "limits.request_body_idle_timeout", t)
                    .unwrap_or(limits.request_body_idle_timeout);
        }
        if let Some(t) = &l.http2_keepalive_interval {
            limits.http2_keepalive_interval =
                duration(&mut p, "limits.http2_keepalive_interval", t)
                    .unwrap_or(limits.http2_keepalive_interval);
        }
        if let Some(t) = &l.header_read_timeout {
            limits.header_read_timeout = duration(&mut p, "limits.header_read_timeout", t)
                .unwrap_or(limits.header_read_timeout);
        }
        if let Some(t) = &l.keep_alive_timeout {
            limits.keep_alive_timeout = duration(&mut p, "limits.keep_alive_timeout", t)
                .unwrap_or(limits.keep_alive_timeout);
        }
    }

    if p.0.is_empty() {
        Ok(Config {
            limits,
            listeners,
            admin,
            routes,
            drain_timeout,
            state_file,
            access_log,
        })
    } else {
        Err(p.0)
    }
}

fn listener_tls(
    p: &mut Problems,
    path: &str,
    t: &RawListenerTls,
    base: &Path,
) -> Option<ListenerTls> {
    let mut certificates = Vec::new();
    match (&t.cert, &t.key, &t.certificates) {
        (Some(cert), Some(key), None) => certificates.push(CertificateFiles {
            server_names: Vec::new(),
            cert: base.join(cert),
            key: base.join(key),
        }),
        (None, None, Some(list)) if !list.is_empty() => {
            for (i, c) in list.iter().enumerate() {
                let cpath = format!("{path}.certificates[{i}]");
                let server_names = c
                    .server_names
                    .iter()
                    .flatten()
                    .enumerate()
                    .filter_map(|(j, n)| host_pattern(p, &format!("{cpath}.server_names[{j}]"), n))
                    .collect();
                certificates.push(CertificateFiles {
                    server_names,
                    cert: base.join(&c.cert),
                    key: base.join(&c.key),
                });
            }
        }
        _ => {
            p.add(
                path,
                "set cert and key, or a non-empty certificates list (not both)",
            );
            return None;
        }
    }
    Some(ListenerTls { certificates })
}

fn admin(p: &mut Problems, a: &RawAdmin, base: &Path) -> Option<Admin> {
    let addr = socket_addr(p, "admin.addr", &a.addr)?;
    let token = match (&a.token_env, &a.token_file) {
        (Some(_), Some(_)) => {
            p.add("admin", "set token_env or token_file, not both");
            None
        }
        (Some(var), None) if var.is_empty() => {
            p.add("admin.token_env", "must not be empty");
            None
        }
        (Some(var), None) => Some(TokenSource::Env(var.clone())),
        (None, Some(file)) => Some(TokenSource::File(base.join(file))),
        (None, None) => None,
    };
    Some(Admin { addr, token })
}

fn route(p: &mut Problems, path: &str, r: &RawRoute, base: &Path) -> Option<Route> {
    let before = p.0.len();

    let hosts = match &r.matcher.hosts {
        None => Vec::new(),
        Some(hosts) => {
            if hosts.is_empty() {
                p.add(
                    format!("{path}.match.hosts"),
                    "must not be empty; leave it out to match any host",
                );
            }
            hosts
                .iter()
                .enumerate()
                .filter_map(|(i, h)| host_pattern(p, &format!("{path}.match.hosts[{i}]"), h))
                .collect()
        }
    };
    let path_prefix = r.matcher.path_prefix.clone().unwrap_or_else(|| "/".into());
    if !path_prefix.starts_with('/') {
        p.add(
            format!("{path}.match.path_prefix"),
            format!("{path_prefix:?} must start with '/'"),
        );
    }

    if r.versions.is_empty() {
        p.add(
            format!("{path}.versions"),
            "at least one version is required",
        );
    }
    let mut names = HashSet::new();
    let mut versions = Vec::with_capacity(r.versions.len());
    for (i, v) in r.versions.iter().enumerate() {
        let vpath = format!("{path}.versions[{i}]");
        if name_ok(p, &format!("{vpath}.name"), &v.name) && !names.insert(v.name.as_str()) {
            p.add(
                format!("{vpath}.name"),
                format!("duplicate version name {:?}", v.name),
            );
        }
        if v.endpoints.is_empty() {
            p.add(
                format!("{vpath}.endpoints"),
                "at least one endpoint is required",
            );
        }
        let endpoints = v
            .endpoints
            .iter()
            .enumerate()
            .filter_map(|(j, e)| endpoint(p, &format!("{vpath}.endpoints[{j}]"), e))
            .collect();
        let protocol = match v.protocol.as_deref() {
            None | Some("http1") => UpstreamProtocol::Http1,
            Some("h2") => UpstreamProtocol::H2,
            Some(other) => {
                p.add(
                    format!("{vpath}.protocol"),
                    format!("{other:?} is not a protocol: use http1 or h2"),
                );
                UpstreamProtocol::Http1
            }
        };
        let tls = v.tls.as_ref().map(|t| UpstreamTls {
            ca: t.ca.as_ref().map(|c| base.join(c)),
            server_name: t.server_name.clone(),
        });
        if let Some(UpstreamTls {
            server_name: Some(name),
            ..
        }) = &tls
        {
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                p.add(
                    format!("{vpath}.tls.server_name"),
                    format!("{name:?} is not a DNS name or IP address"),
                );
            }
        }
        versions.push(Version {
            name: v.name.clone(),
            endpoints,
            weight: v.weight,
            protocol,
            tls,
        });
    }
    if !r.versions.is_empty() && r.versions.iter().all(|v| v.weight == 0) {
        p.add(
            format!("{path}.versions"),
            "all weights are 0: at least one version needs a positive weight",
        );
    }

    let version_index = |p: &mut Problems, field: String, name: &str| -> Option<usize> {
        let found = r.versions.iter().position(|v| v.name == name);
        if found.is_none() {
            let known: Vec<&str> = r.versions.iter().map(|v| v.name.as_str()).collect();
            p.add(
                field,
                format!(
                    "unknown version {name:?} (this route has: {})",
                    known.join(", ")
                ),
            );
        }
        found
    };

    let mut rules = Vec::with_capacity(r.rules.len());
    for (i, rule) in r.rules.iter().enumerate() {
        let rpath = format!("{path}.rules[{i}]");
        let condition = condition(p, &format!("{rpath}.match"), &rule.matcher);
        let version = version_index(p, format!("{rpath}.version"), &rule.version);
        if let (Some(condition), Some(version)) = (condition, version) {
            rules.push(Rule { condition, version });
        }
    }

    let cohort = r
        .cohort
        .as_ref()
        .and_then(|c| cohort(p, &format!("{path}.cohort"), c, &r.name));

    let timeouts = timeouts(p, &format!("{path}.timeouts"), &r.timeouts);

    let strategy = match r.strategy.as_deref() {
        None | Some("canary") => Strategy::Canary,
        Some("blue_green") => {
            let positive = r.versions.iter().filter(|v| v.weight > 0).count();
            if r.versions.len() != 2 || positive != 1 {
                p.add(
                    format!("{path}.strategy"),
                    "blue_green needs exactly two versions, the active one with a positive weight and the standby with 0",
                );
            }
            if r.rollout.is_some() {
                p.add(
                    format!("{path}.rollout"),
                    "a blue_green route switches; it has no rollout",
                );
            }
            Strategy::BlueGreen
        }
        Some(other) => {
            p.add(
                format!("{path}.strategy"),
                format!("{other:?} is not a strategy: use canary or blue_green"),
            );
            Strategy::Canary
        }
    };

    let rollout = r.rollout.as_ref().and_then(|ro| {
        let rpath = format!("{path}.rollout");
        let baseline = version_index(p, format!("{rpath}.baseline"), &ro.baseline);
        let canary = version_index(p, format!("{rpath}.canary"), &ro.canary);
        if baseline.is_some() && baseline == canary {
            p.add(format!("{rpath}.canary"), "must differ from the baseline");
        }
        if ro.steps.is_empty()
            || ro.steps.windows(2).any(|w| w[0] >= w[1])
            || ro.steps.last() != Some(&100)
            || ro.steps[0] == 0
        {
            p.add(
                format!("{rpath}.steps"),
                format!("{:?} must be increasing canary percentages from 1, ending at 100, e.g. [1, 5, 25, 50, 100]", ro.steps),
            );
        }
        let step_interval = opt_duration(p, &format!("{rpath}.step_interval"), &ro.step_interval, Duration::from_secs(60));
        let analysis = analysis(p, &format!("{rpath}.analysis"), ro.analysis.as_ref());
        let webhook = ro.webhook.as_ref().and_then(|w| match w.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => Some(u),
            _ => {
                p.add(format!("{rpath}.webhook"), format!("{w:?} is not an http:// URL"));
                None
            }
        });
        Some(Rollout {
            baseline: baseline?,
            canary: canary?,
            steps: ro.steps.clone(),
            step_interval,
            analysis,
            webhook,
        })
    });

    let health_check = r.health_check.as_ref().map(|h| {
        let hpath = format!("{path}.health_check");
        let check_path = h.path.clone().unwrap_or_else(|| "/healthz".into());
        if !check_path.starts_with('/') {
            p.add(
                format!("{hpath}.path"),
                format!("{check_path:?} must start with '/'"),
            );
        }
        let positive = |p: &mut Problems, field: &str, v: Option<u32>, default: u32| match v {
            Some(0) => {
                p.add(format!("{hpath}.{field}"), "must be at least 1");
                default
            }
            Some(v) => v,
            None => default,
        };
        HealthCheck {
            path: check_path,
            interval: opt_duration(
                p,
                &format!("{hpath}.interval"),
                &h.interval,
                Duration::from_secs(5),
            ),
            timeout: opt_duration(
                p,
                &format!("{hpath}.timeout"),
                &h.timeout,
                Duration::from_secs(1),
            ),
            healthy_threshold: positive(p, "healthy_threshold", h.healthy_threshold, 2),
            unhealthy_threshold: positive(p, "unhealthy_threshold", h.unhealthy_threshold, 3),
        }
    });

    let rate_limit = r.rate_limit.as_ref().and_then(|rl| {
        let rpath = format!("{path}.rate_limit");
        let Some(per_second) = std::num::NonZeroU32::new(rl.requests_per_second) else {
            p.add(format!("{rpath}.requests_per_second"), "must be at least 1");
            return None;
        };
        let burst = match rl.burst {
            None => per_second,
            Some(b) => match std::num::NonZeroU32::new(b) {
                Some(b) => b,
                None => {
                    p.add(format!("{rpath}.burst"), "must be at least 1");
                    return None;
                }
            },
        };
        let key_header = match &rl.key_header {
            Some(h) => Some(header_name(p, &format!("{rpath}.key_header"), h)?),
            None => None,
        };
        Some(RateLimit {
            per_second,
            burst,
            key_header,
        })
    });
    if r.max_requests_per_version == Some(0) {
        p.add(
            format!("{path}.max_requests_per_version"),
            "must be at least 1",
        );
    }
    let mirror = r.mirror.as_ref().and_then(|m| {
        let mpath = format!("{path}.mirror");
        let version = version_index(p, format!("{mpath}.version"), &m.version)?;
        if r.versions[version].weight != 0 {
            p.add(
                format!("{mpath}.version"),
                format!(
                    "{:?} has weight {}: a shadow version must have weight 0",
                    m.version, r.versions[version].weight
                ),
            );
        }
        let secondary = match &m.secondary {
            Some(name) => Some(version_index(p, format!("{mpath}.secondary"), name)?),
            None => None,
        };
        let percent = m.percent.unwrap_or(100.0);
        if !(0.0..=100.0).contains(&percent) {
            p.add(
                format!("{mpath}.percent"),
                format!("{percent} is not from 0 to 100"),
            );
        }
        let methods = match &m.methods {
            None => vec![http::Method::GET, http::Method::HEAD],
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, name)| {
                    match http::Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
                        Ok(method) => Some(method),
                        Err(_) => {
                            p.add(
                                format!("{mpath}.methods[{i}]"),
                                format!("{name:?} is not an HTTP method"),
                            );
                            None
                        }
                    }
                })
                .collect(),
        };
        let positive = |p: &mut Problems, field: &str, v: Option<usize>, default: usize| match v {
            Some(0) => {
                p.add(format!("{mpath}.{field}"), "must be at least 1");
                default
            }
            Some(v) => v,
            None => default,
        };
        let ignore_json_paths = m.ignore_json_paths.clone().unwrap_or_default();
        for (i, ptr) in ignore_json_paths.iter().enumerate() {
            if !ptr.is_empty() && !ptr.starts_with('/') {
                p.add(
                    format!("{mpath}.ignore_json_paths[{i}]"),
                    format!("{ptr:?} is not a JSON pointer (RFC 6901): write \"/field/sub\""),
                );
            }
        }
        let mut ignore_headers: Vec<String> = DEFAULT_IGNORED_HEADERS
            .iter()
            .map(|h| h.to_string())
            .collect();
        ignore_headers.extend(
            m.ignore_headers
                .iter()
                .flatten()
                .map(|h| h.to_ascii_lowercase()),
        );
        Some(Mirror {
            version,
            secondary,
            percent_buckets: (percent.clamp(0.0, 100.0) * 100.0).round() as u32,
            methods,
            max_body_bytes: m.max_body_bytes.unwrap_or(1024 * 1024),
            compare_body_bytes: m.compare_body_bytes.unwrap_or(256 * 1024) as usize,
            queue: positive(p, "queue", m.queue, 1024),
            concurrency: positive(p, "concurrency", m.concurrency, 32),
            timeout: opt_duration(
                p,
                &format!("{mpath}.timeout"),
                &m.timeout,
                Duration::from_secs(5),
            ),
            host_suffix: m.host_suffix.unwrap_or(true),
            ignore_headers,
            ignore_json_paths,
        })
    });

    (p.0.len() == before).then(|| Route {
        name: r.name.clone(),
        hosts,
        path_prefix,
        versions,
        rules,
        cohort,
        timeouts,
        expose_version_header: r.expose_version_header,
        strategy,
        rollout,
        health_check,
        mirror,
        max_body_bytes: r.max_body_bytes,
        max_requests_per_version: r.max_requests_per_version,
        rate_limit,
        retries: r.retries.as_ref().map(|rt| Retries {
            attempts: rt.attempts.unwrap_or(1).clamp(1, 5),
            budget_percent: rt.budget_percent.unwrap_or(20).min(100),
        }),
    })
}

fn opt_duration(
    p: &mut Problems,
    path: &str,
    text: &Option<String>,
    default: Duration,
) -> Duration {
    match text {
        Some(s) => duration(p, path, s).unwrap_or(default),
        None => default,
    }
}

fn analysis(p: &mut Problems, path: &str, a: Option<&RawAnalysis>) -> Analysis {
    let defaults = crate::config::Thresholds::default();
    let empty = RawAnalysis::default();
    let a = a.unwrap_or(&empty);
    let mut fraction = |field: &str, v: Option<f64>, default: f64| match v {
        Some(v) if (0.0..=1.0).contains(&v) => v,
        Some(v) => {
            p.add(
                format!("{path}.{field}"),
                format!("{v} is not a fraction from 0 to 1 (0.01 is one percentage point)"),
            );
            default
        }
        None => default,
    };
    let max_error_rate_increase = fraction(
        "max_error_rate_increase",
        a.max_error_rate_increase,
        defaults.max_error_rate_increase,
    );
    let max_error_rate = fraction("max_error_rate", a.max_error_rate, defaults.max_error_rate);
    let alpha = match a.alpha {
        Some(v) if v > 0.0 && v < 0.5 => v,
        Some(v) => {
            p.add(
                format!("{path}.alpha"),
                format!("{v} must be above 0 and below 0.5"),
            );
            defaults.alpha
        }
        None => defaults.alpha,
    };
    let max_latency_ratio = match a.max_latency_ratio {
        Some(v) if v >= 1.0 => v,
        Some(v) => {
            p.add(
                format!("{path}.max_latency_ratio"),
                format!("{v} must be at least 1.0"),
            );
            defaults.max_latency_ratio
        }
        None => defaults.max_latency_ratio,
    };
    let max_latency_increase_ms = match &a.max_latency_increase {
        Some(s) => duration(p, &format!("{path}.max_latency_increase"), s)
            .map_or(defaults.max_latency_increase_ms, |d| {
                d.as_secs_f64() * 1000.0
            }),
        None => defaults.max_latency_increase_ms,
    };
    let interval = opt_duration(
        p,
        &format!("{path}.interval"),
        &a.interval,
        Duration::from_secs(1),
    );
    let window = opt_duration(
        p,
        &format!("{path}.window"),
        &a.window,
        Duration::from_secs(10),
    );
    if window < interval {
        p.add(format!("{path}.window"), "must be at least the interval");
    }
    Analysis {
        interval,
        window,
        thresholds: crate::config::Thresholds {
            min_requests: a.min_requests.unwrap_or(defaults.min_requests).max(1),
            max_error_rate_increase,
            max_error_rate,
            max_latency_ratio,
            max_latency_increase_ms,
            alpha,
        },
    }
}

fn host_pattern(p: &mut Problems, path: &str, host: &str) -> Option<HostPattern> {
    let host = host.to_ascii_lowercase();
    let bad = |h: &str| {
        h.is_empty()
            || h.contains(['*', ':', '/', ' '])
            || h.starts_with('.')
            || h.ends_with('.')
            || !h.is_ascii()
    };
    if let Some(rest) = host.strip_prefix("*.") {
        if bad(rest) {
            p.add(
                path,
                format!("{host:?} is not a valid wildcard; write \"*.example.com\""),
            );
            return None;
        }
        return Some(HostPattern::Suffix(format!(".{rest}")));
    }
    if bad(&host) {
        p.add(
            path,
            format!(
                "{host:?} is not a host name (no port, scheme or path; \"*.\" only as a prefix)"
            ),
        );
        return None;
    }
    Some(HostPattern::Exact(host))
}

fn endpoint(p: &mut Problems, path: &str, text: &str) -> Option<Endpoint> {
    let problem = match text.parse::<Authority>() {
        Ok(a) if a.port_u16().is_none() => "has no port".to_string(),
        Ok(a) if a.as_str().contains('@') => "must not carry user information".to_string(),
        Ok(a) if a.host().is_empty() => "has no host".to_string(),
        Ok(a) => return Some(Endpoint(a)),
        Err(e) => e.to_string(),
    };
    p.add(
        path,
        format!("{text:?} is not host:port ({problem}); write e.g. \"127.0.0.1:9001\""),
    );
    None
}

fn condition(p: &mut Problems, path: &str, m: &RawRuleMatch) -> Option<Condition> {
    let set = [m.header.is_some(), m.cookie.is_some(), m.query.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set != 1 {
        p.add(path, "set exactly one of header, cookie or query");
        return None;
    }
    if let Some(h) = &m.header {
        let name = header_name(p, &format!("{path}.header.name"), &h.name)?;
        return Some(Condition::Header {
            name,
            value: h.value.clone(),
        });
    }
    let (kind, nv) = match (&m.cookie, &m.query) {
        (Some(c), _) => ("cookie", c),
        (None, Some(q)) => ("query", q),
        // Unreachable: exactly one of the three is set and header was handled above.
        (None, None) => return None,
    };
    if nv.name.is_empty() {
        p.add(format!("{path}.{kind}.name"), "must not be empty");
        return None;
    }
    let (name, value) = (nv.name.clone(), nv.value.clone());
    Some(if kind == "cookie" {
        Condition::Cookie { name, value }
    } else {
        Condition::Query { name, value }
    })
}

fn cohort(p: &mut Problems, path: &str, c: &RawCohort, route_name: &str) -> Option<Cohort> {
    let key = match (&c.key.header, &c.key.cookie) {
        (Some(h), None) => CohortKey::Header(header_name(p, &format!("{path}.key.header"), h)?),
        (None, Some(name)) if !name.is_empty() => CohortKey::Cookie(name.clone()),
        (None, Some(_)) => {
            p.add(format!("{path}.key.cookie"), "must not be empty");
            return None;
        }
        _ => {
            p.add(format!("{path}.key"), "set exactly one of header or cookie");
            return None;
        }
    };
    // The route name is the default salt, like Unleash's groupId: independent cohorts per route.
    let salt = if c.salt.is_empty() {
        route_name.to_string()
    } else {
        c.salt.clone()
    };
    Some(Cohort { key, salt })
}

fn timeouts(p: &mut Problems, path: &str, t: &RawTimeouts) -> Timeouts {
    let d = Timeouts::default();
    let mut field = |name: &str, text: &Option<String>, default: Duration| match text {
        Some(s) => duration(p, &format!("{path}.{name}"), s)
            .filter(|d| !d.is_zero())
            .unwrap_or(default),
        None => default,
    };
    Timeouts {
        connect: field("connect", &t.connect, d.connect),
        response_header: field("response_header", &t.response_header, d.response_header),
        idle: field("idle", &t.idle, d.idle),
    }
}

fn duration(p: &mut Problems, path: &str, text: &str) -> Option<Duration> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => {
            p.add(path, format!("{text:?} must be greater than zero"));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            p.add(
                path,
                format!("{text:?} is not a duration ({e}); write e.g. \"1s\" or \"250ms\""),
            );
            None
        }
    }
}

fn socket_addr(p: &mut Problems, path: &str, text: &str) -> Option<SocketAddr> {
    match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                path,
                format!("{text:?} is not ip:port; write e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""),
            );
            None
        }
    }
}

fn header_name(p: &mut Problems, path: &str, text: &str) -> Option<HeaderName> {
    match HeaderName::from_bytes(text.as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            p.add(path, format!("{text:?} is not a valid header name"));
            None
        }
    }
}

/// Names become metric labels, log fields and admin API path segments: keep them plain.
fn name_ok(p: &mut Problems, path: &str, name: &str) -> bool {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        p.add(
            path,
            format!("{name:?} is not a valid name: use 1 to 64 letters, digits, '-', '_' or '.'"),
        );
    }
    ok
}
