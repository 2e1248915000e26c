//! A route's dark launch: the shadow version, the share copied, methods, limits and what the
//! comparison ignores.

use std::time::Duration;

use super::fields::opt_duration;
use super::route::version_index;
use super::Problems;
use crate::config::model::*;
use crate::config::raw::*;

pub(super) fn mirror(p: &mut Problems, mpath: &str, r: &RawRoute, m: &RawMirror) -> Option<Mirror> {
    let version = version_index(p, r, format!("{mpath}.version"), &m.version)?;
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
        Some(name) => Some(version_index(p, r, format!("{mpath}.secondary"), name)?),
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
}
