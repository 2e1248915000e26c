//! Field-level validation shared by the sections: names, addresses, durations, endpoints, host
//! patterns, header names, rule conditions, cohorts, timeouts; and the listener TLS and admin
//! sections.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::header::HeaderName;
use http::uri::Authority;

use super::Problems;
use crate::config::model::*;
use crate::config::raw::*;

pub(super) fn listener_tls(
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

pub(super) fn admin(p: &mut Problems, a: &RawAdmin, base: &Path) -> Option<Admin> {
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
    if token.is_none()
        && !addr.ip().is_loopback()
        && a.token_env.is_none()
        && a.token_file.is_none()
    {
        p.add(
            "admin.addr",
            format!(
                "{addr} is not loopback and no token is configured: set admin.token_env or \
                 admin.token_file, or bind the admin endpoint to 127.0.0.1"
            ),
        );
    }
    Some(Admin { addr, token })
}

pub(super) fn opt_duration(
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

pub(super) fn host_pattern(p: &mut Problems, path: &str, host: &str) -> Option<HostPattern> {
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

pub(super) fn endpoint(p: &mut Problems, path: &str, text: &str) -> Option<Endpoint> {
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

pub(super) fn condition(p: &mut Problems, path: &str, m: &RawRuleMatch) -> Option<Condition> {
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

pub(super) fn cohort(
    p: &mut Problems,
    path: &str,
    c: &RawCohort,
    route_name: &str,
) -> Option<Cohort> {
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

pub(super) fn timeouts(p: &mut Problems, path: &str, t: &RawTimeouts) -> Timeouts {
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

pub(super) fn duration(p: &mut Problems, path: &str, text: &str) -> Option<Duration> {
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

pub(super) fn socket_addr(p: &mut Problems, path: &str, text: &str) -> Option<SocketAddr> {
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

pub(super) fn header_name(p: &mut Problems, path: &str, text: &str) -> Option<HeaderName> {
    match HeaderName::from_bytes(text.as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            p.add(path, format!("{text:?} is not a valid header name"));
            None
        }
    }
}

/// Names become metric labels, log fields and admin API path segments: keep them plain.
pub(super) fn name_ok(p: &mut Problems, path: &str, name: &str) -> bool {
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
