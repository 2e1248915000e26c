//! The fleet block: this replica's name, the etcd members, the key prefix, TLS and credentials.
//! Checked without contacting etcd: `check` validates the block on a machine that cannot reach it.

use std::path::Path;
use std::time::Duration;

use super::fields::{duration, name_ok};
use super::Problems;
use crate::config::model::*;
use crate::config::raw::*;

/// The lease TTL when none is configured.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

pub(super) fn fleet(p: &mut Problems, raw: &RawFleet, base: &Path) -> Option<Fleet> {
    let name = match &raw.name {
        Some(n) => n.clone(),
        None => host_name(),
    };
    let named = name_ok(p, "fleet.name", &name);
    let lease_ttl = match &raw.lease_ttl {
        Some(t) => match duration(p, "fleet.lease_ttl", t) {
            Some(d) if d < Duration::from_secs(2) || d > Duration::from_secs(60) => {
                p.add(
                    "fleet.lease_ttl",
                    format!("{t:?} is outside 2s..60s: shorter leases expire on a busy machine"),
                );
                None
            }
            d => d,
        },
        None => Some(DEFAULT_LEASE_TTL),
    };
    let etcd = etcd(p, &raw.etcd, base);
    match (named, lease_ttl, etcd) {
        (true, Some(lease_ttl), Some(etcd)) => Some(Fleet {
            name,
            etcd,
            lease_ttl,
        }),
        _ => None,
    }
}

/// The machine's host name, the default replica name (what Kubernetes sets to the pod name).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "switchyard".into())
}

fn etcd(p: &mut Problems, raw: &RawEtcd, base: &Path) -> Option<Etcd> {
    let ok_before = p.0.len();
    let tls = raw.tls.as_ref().and_then(|t| etcd_tls(p, t, base));
    if raw.endpoints.is_empty() {
        p.add(
            "fleet.etcd.endpoints",
            "at least one etcd member is required",
        );
    }
    let endpoints: Vec<String> = raw
        .endpoints
        .iter()
        .enumerate()
        .filter_map(|(i, e)| endpoint(p, &format!("fleet.etcd.endpoints[{i}]"), e, tls.is_some()))
        .collect();
    let prefix = &raw.prefix;
    if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
        p.add(
            "fleet.etcd.prefix",
            format!(
                "{prefix:?} must start with '/' and not end with one, e.g. \"/switchyard/prod\""
            ),
        );
    }
    let user = match (&raw.username, &raw.password_env) {
        (Some(u), Some(env)) if !u.is_empty() && !env.is_empty() => Some((u.clone(), env.clone())),
        (None, None) => None,
        _ => {
            p.add(
                "fleet.etcd",
                "set username and password_env together (the password is read from that variable)",
            );
            None
        }
    };
    (p.0.len() == ok_before).then(|| Etcd {
        endpoints,
        prefix: prefix.clone(),
        tls,
        user,
    })
}

/// `host:port` or `http(s)://host:port`, as a URL the client dials.
fn endpoint(p: &mut Problems, path: &str, text: &str, tls: bool) -> Option<String> {
    let (scheme, rest) = match text.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        Some(_) => {
            p.add(path, format!("{text:?}: the scheme must be http or https"));
            return None;
        }
        None => (if tls { "https" } else { "http" }, text),
    };
    let authority = match rest.parse::<http::uri::Authority>() {
        Ok(a) if a.port_u16().is_some() && !rest.contains('/') => a,
        _ => {
            p.add(
                path,
                format!("{text:?} is not host:port; write e.g. \"10.0.0.5:2379\""),
            );
            return None;
        }
    };
    if scheme == "https" && !tls {
        p.add(path, format!("{text:?} is https: set fleet.etcd.tls.ca"));
        return None;
    }
    if scheme == "http" && tls {
        p.add(
            path,
            format!("{text:?} is plain http while fleet.etcd.tls is set"),
        );
        return None;
    }
    Some(format!("{scheme}://{authority}"))
}

fn etcd_tls(p: &mut Problems, raw: &RawEtcdTls, base: &Path) -> Option<EtcdTls> {
    let identity = match (&raw.cert, &raw.key) {
        (Some(c), Some(k)) => Some((base.join(c), base.join(k))),
        (None, None) => None,
        _ => {
            p.add(
                "fleet.etcd.tls",
                "set cert and key together (a client certificate)",
            );
            return None;
        }
    };
    Some(EtcdTls {
        ca: base.join(&raw.ca),
        identity,
        server_name: raw.server_name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use std::path::Path;

    fn fleet(block: &str) -> Result<crate::config::Config, String> {
        let text = format!(
            "listeners: [{{ name: p, addr: \"127.0.0.1:0\" }}]\nroutes:\n  - name: shop\n    versions: [{{ name: a, endpoints: [\"127.0.0.1:1\"], weight: 1 }}]\n{block}"
        );
        parse(Path::new("t.yaml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_fleet_block_validates_into_urls_and_a_default_ttl() {
        let c = fleet(
            "fleet:\n  name: edge-1\n  etcd:\n    endpoints: [\"127.0.0.1:2379\", \"http://10.0.0.6:2379\"]\n    prefix: /switchyard/prod\n",
        )
        .unwrap();
        let f = c.fleet.unwrap();
        assert_eq!(f.name, "edge-1");
        assert_eq!(
            f.etcd.endpoints,
            ["http://127.0.0.1:2379", "http://10.0.0.6:2379"]
        );
        assert_eq!(f.lease_ttl, super::DEFAULT_LEASE_TTL);
    }

    #[test]
    fn the_name_defaults_to_the_host_name() {
        let c = fleet("fleet:\n  etcd: { endpoints: [\"127.0.0.1:2379\"], prefix: /s }\n").unwrap();
        assert!(!c.fleet.unwrap().name.is_empty());
    }

    #[test]
    fn every_fleet_problem_is_reported_with_its_path() {
        let e = fleet(
            "fleet:\n  name: \"edge 1\"\n  lease_ttl: 1s\n  etcd:\n    endpoints: [\"nohost\", \"https://127.0.0.1:2379\", \"ftp://x:1\"]\n    prefix: switchyard/\n    username: u\n",
        )
        .unwrap_err();
        for needle in [
            "fleet.name",
            "fleet.lease_ttl",
            "fleet.etcd.endpoints[0]",
            "fleet.etcd.endpoints[1]",
            "fleet.etcd.endpoints[2]",
            "fleet.etcd.prefix",
            "password_env",
        ] {
            assert!(e.contains(needle), "{needle} missing from:\n{e}");
        }
    }

    #[test]
    fn tls_makes_bare_endpoints_https_and_needs_cert_with_key() {
        let c = fleet("fleet:\n  name: a\n  etcd:\n    endpoints: [\"127.0.0.1:2379\"]\n    prefix: /s\n    tls: { ca: ca.pem, cert: c.pem, key: k.pem }\n").unwrap();
        assert_eq!(c.fleet.unwrap().etcd.endpoints, ["https://127.0.0.1:2379"]);
        let e = fleet("fleet:\n  name: a\n  etcd:\n    endpoints: [\"127.0.0.1:2379\"]\n    prefix: /s\n    tls: { ca: ca.pem, cert: c.pem }\n").unwrap_err();
        assert!(e.contains("fleet.etcd.tls"), "{e}");
    }
}
