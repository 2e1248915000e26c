//! The key layout under the fleet's prefix. Everything the fleet shares lives under it, so one
//! prefix is one fleet, and `etcdctl get --prefix` shows all of it:
//!
//! ```text
//! PREFIX/routes/ROUTE            the route's release state (JSON): weights, abort, rollout progress
//! PREFIX/replicas/NAME           leased: a replica's presence (addresses, digests, generation)
//! PREFIX/leaders/ROUTE           leased: the replica leading the route's rollout
//! PREFIX/windows/ROUTE/NAME      leased: a replica's analysis window of the route's rollout
//! PREFIX/audit/MS-NAME-N         one record per committed change
//! ```

/// The keys of one fleet.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The layout under `prefix` (validated: starts with `/`, no trailing `/`).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where every route's state lives (a prefix).
    pub fn routes(&self) -> String {
        format!("{}/routes/", self.prefix)
    }

    /// One route's state.
    pub fn route(&self, route: &str) -> String {
        format!("{}/routes/{route}", self.prefix)
    }

    /// Where the presence records live (a prefix).
    pub fn replicas(&self) -> String {
        format!("{}/replicas/", self.prefix)
    }

    /// One replica's presence record.
    pub fn replica(&self, name: &str) -> String {
        format!("{}/replicas/{name}", self.prefix)
    }

    /// Where the rollout leaders live (a prefix).
    pub fn leaders(&self) -> String {
        format!("{}/leaders/", self.prefix)
    }

    /// The leader of one route's rollout.
    pub fn leader(&self, route: &str) -> String {
        format!("{}/leaders/{route}", self.prefix)
    }

    /// Every replica's window of one route (a prefix).
    pub fn windows(&self, route: &str) -> String {
        format!("{}/windows/{route}/", self.prefix)
    }

    /// One replica's window of one route.
    pub fn window(&self, route: &str, name: &str) -> String {
        format!("{}/windows/{route}/{name}", self.prefix)
    }

    /// The audit trail (a prefix).
    pub fn audit(&self) -> String {
        format!("{}/audit/", self.prefix)
    }

    /// One audit record: sortable by time, unique per replica.
    pub fn audit_record(&self, at_unix_ms: u64, name: &str, seq: u64) -> String {
        format!("{}/audit/{at_unix_ms:013}-{name}-{seq}", self.prefix)
    }

    /// The last segment of `key` when it is directly under `dir` (a prefix from above).
    pub fn name_under<'k>(dir: &str, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(dir)
            .filter(|n| !n.is_empty() && !n.contains('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_nest_under_the_prefix_and_names_come_back() {
        let k = Keys::new("/switchyard/prod");
        assert_eq!(k.route("shop"), "/switchyard/prod/routes/shop");
        assert_eq!(
            k.window("shop", "edge-1"),
            "/switchyard/prod/windows/shop/edge-1"
        );
        assert_eq!(
            Keys::name_under(&k.routes(), &k.route("shop")),
            Some("shop")
        );
        assert_eq!(
            Keys::name_under(&k.routes(), "/switchyard/prod/routes/a/b"),
            None
        );
        assert!(k.audit_record(5, "edge-1", 2) > k.audit_record(4, "edge-1", 9));
    }
}
