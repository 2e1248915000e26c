//! Turns a `RawConfig` into a `Config`, collecting every problem with its field path.
//!
//! Validation is total: it never stops at the first problem, so a user fixes a file in one pass.

mod fields;
mod fleet;
mod limits;
mod mirror;
mod route;

use std::collections::HashSet;
use std::path::Path;

use super::error::{Location, Problem};
use super::model::*;
use super::raw::*;

/// Collects problems while validating.
#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
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

    let listeners = listeners(&mut p, &raw.listeners, base);
    let admin = raw
        .admin
        .as_ref()
        .and_then(|a| fields::admin(&mut p, a, base));

    let drain_timeout = match &raw.drain_timeout {
        Some(s) => fields::duration(&mut p, "drain_timeout", s).unwrap_or(DEFAULT_DRAIN_TIMEOUT),
        None => DEFAULT_DRAIN_TIMEOUT,
    };

    let routes = routes(&mut p, &raw.routes, base);

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

    let access_log = access_log(&mut p, raw.access_log.as_ref());
    let limits = limits::limits(&mut p, raw.limits.as_ref());
    let fleet = raw
        .fleet
        .as_ref()
        .and_then(|f| fleet::fleet(&mut p, f, base));

    if p.0.is_empty() {
        Ok(Config {
            limits,
            listeners,
            admin,
            routes,
            drain_timeout,
            state_file,
            access_log,
            fleet,
        })
    } else {
        Err(p.0)
    }
}

fn listeners(p: &mut Problems, raw: &[RawListener], base: &Path) -> Vec<Listener> {
    if raw.is_empty() {
        p.add("listeners", "at least one listener is required");
    }
    let mut listener_names = HashSet::new();
    let mut listeners = Vec::with_capacity(raw.len());
    for (i, l) in raw.iter().enumerate() {
        let path = format!("listeners[{i}]");
        if fields::name_ok(p, &format!("{path}.name"), &l.name)
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
            .and_then(|t| fields::listener_tls(p, &format!("{path}.tls"), t, base));
        if let Some(addr) = fields::socket_addr(p, &format!("{path}.addr"), &l.addr) {
            if l.max_connections == Some(0) {
                p.add(format!("{path}.max_connections"), "must be at least 1");
            }
            listeners.push(Listener {
                name: l.name.clone(),
                addr,
                tls,
                max_connections: l.max_connections,
                fast_path: l.fast_path.unwrap_or(true),
            });
        }
    }

    listeners
}

fn routes(p: &mut Problems, raw: &[RawRoute], base: &Path) -> Vec<Route> {
    if raw.is_empty() {
        p.add("routes", "at least one route is required");
    }
    let mut route_names = HashSet::new();
    let mut routes = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let path = format!("routes[{i}]");
        if fields::name_ok(p, &format!("{path}.name"), &r.name)
            && !route_names.insert(r.name.as_str())
        {
            p.add(
                format!("{path}.name"),
                format!("duplicate route name {:?}", r.name),
            );
        }
        if let Some(route) = route::route(p, &path, r, base) {
            routes.push(route);
        }
    }

    routes
}

fn access_log(p: &mut Problems, raw: Option<&RawAccessLog>) -> AccessLog {
    let mut access_log = AccessLog::default();
    if let Some(a) = raw {
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

    access_log
}
