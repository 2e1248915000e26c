//! A route's validation, one concern per function: what it matches, its versions, rules, strategy,
//! rollout (with its analysis), health check and rate limit. The mirror is in `mirror`.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::fields::{
    cohort, condition, duration, endpoint, header_name, host_pattern, name_ok, opt_duration,
    timeouts,
};
use super::Problems;
use crate::config::model::*;
use crate::config::raw::*;

/// Validates one route; `None` when it has any problem (all of them reported).
pub(super) fn route(p: &mut Problems, path: &str, r: &RawRoute, base: &Path) -> Option<Route> {
    let before = p.0.len();
    let (hosts, path_prefix) = matcher(p, path, r);
    let versions = versions(p, path, r, base);
    let rules = rules(p, path, r);
    let cohort = r
        .cohort
        .as_ref()
        .and_then(|c| cohort(p, &format!("{path}.cohort"), c, &r.name));
    let timeouts = timeouts(p, &format!("{path}.timeouts"), &r.timeouts);
    let strategy = strategy(p, path, r);
    let rollout = r
        .rollout
        .as_ref()
        .and_then(|ro| rollout(p, &format!("{path}.rollout"), r, ro));
    let health_check = r
        .health_check
        .as_ref()
        .map(|h| health_check(p, &format!("{path}.health_check"), h));
    let rate_limit = r
        .rate_limit
        .as_ref()
        .and_then(|rl| rate_limit(p, &format!("{path}.rate_limit"), rl));
    if r.max_requests_per_version == Some(0) {
        p.add(
            format!("{path}.max_requests_per_version"),
            "must be at least 1",
        );
    }
    let mirror = r
        .mirror
        .as_ref()
        .and_then(|m| super::mirror::mirror(p, &format!("{path}.mirror"), r, m));

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

/// Host patterns and the path prefix.
fn matcher(p: &mut Problems, path: &str, r: &RawRoute) -> (Vec<HostPattern>, String) {
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

    (hosts, path_prefix)
}

fn versions(p: &mut Problems, path: &str, r: &RawRoute, base: &Path) -> Vec<Version> {
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

    versions
}

/// The index of version `name` in the route, or a problem naming the versions it has.
pub(super) fn version_index(
    p: &mut Problems,
    r: &RawRoute,
    field: String,
    name: &str,
) -> Option<usize> {
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
}

fn rules(p: &mut Problems, path: &str, r: &RawRoute) -> Vec<Rule> {
    let mut rules = Vec::with_capacity(r.rules.len());
    for (i, rule) in r.rules.iter().enumerate() {
        let rpath = format!("{path}.rules[{i}]");
        let condition = condition(p, &format!("{rpath}.match"), &rule.matcher);
        let version = version_index(p, r, format!("{rpath}.version"), &rule.version);
        if let (Some(condition), Some(version)) = (condition, version) {
            rules.push(Rule { condition, version });
        }
    }

    rules
}

fn strategy(p: &mut Problems, path: &str, r: &RawRoute) -> Strategy {
    match r.strategy.as_deref() {
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
    }
}

fn rollout(p: &mut Problems, rpath: &str, r: &RawRoute, ro: &RawRollout) -> Option<Rollout> {
    let baseline = version_index(p, r, format!("{rpath}.baseline"), &ro.baseline);
    let canary = version_index(p, r, format!("{rpath}.canary"), &ro.canary);
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
    let step_interval = opt_duration(
        p,
        &format!("{rpath}.step_interval"),
        &ro.step_interval,
        Duration::from_secs(60),
    );
    let analysis = analysis(p, &format!("{rpath}.analysis"), ro.analysis.as_ref());
    let webhook = ro
        .webhook
        .as_ref()
        .and_then(|w| match w.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => Some(u),
            _ => {
                p.add(
                    format!("{rpath}.webhook"),
                    format!("{w:?} is not an http:// URL"),
                );
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
}

fn health_check(p: &mut Problems, hpath: &str, h: &RawHealthCheck) -> HealthCheck {
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
}

fn rate_limit(p: &mut Problems, rpath: &str, rl: &RawRateLimit) -> Option<RateLimit> {
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
