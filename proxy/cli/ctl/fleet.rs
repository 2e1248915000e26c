//! `switchyard ctl fleet`: the live replicas as a table, the store's health and the rollout
//! leaders, from `GET /api/v1/fleet`.

use std::fmt::Write as _;

use crate::fleet::FleetView;
use crate::state::now_unix_ms;

/// The fleet as an operator reads it.
pub fn table(view: &FleetView) -> String {
    let mut out = String::new();
    if !view.enabled {
        out.push_str("this replica is not part of a fleet (no fleet block in its configuration)\n");
        return out;
    }
    if let Some(store) = &view.store {
        let _ = write!(
            out,
            "fleet {} as seen by {}: store {} ({})",
            view.prefix.as_deref().unwrap_or("?"),
            view.name.as_deref().unwrap_or("?"),
            store.state,
            store.endpoints.join(", ")
        );
        match &store.last_error {
            Some(e) if store.state != "up" => {
                let _ = writeln!(out, ": {e}");
            }
            _ => out.push('\n'),
        }
    }
    let mut rows = vec![[
        "REPLICA".to_string(),
        "LISTENERS".into(),
        "ADMIN".into(),
        "CONFIG".into(),
        "GENERATION".into(),
        "HEARTBEAT".into(),
    ]];
    let now = now_unix_ms();
    for r in &view.replicas {
        rows.push([
            r.name.clone(),
            r.listeners.values().cloned().collect::<Vec<_>>().join(","),
            r.admin.clone().unwrap_or_else(|| "-".into()),
            r.config_digest.chars().take(12).collect(),
            r.generation.to_string(),
            format!(
                "{:.1}s ago",
                now.saturating_sub(r.heartbeat_unix_ms) as f64 / 1000.0
            ),
        ]);
    }
    super::write_columns(&mut out, &rows);
    let digests: std::collections::BTreeSet<&str> = view
        .replicas
        .iter()
        .map(|r| r.config_digest.as_str())
        .collect();
    if digests.len() > 1 {
        let _ = writeln!(
            out,
            "replicas run {} different configurations: rollouts and weight changes on routes defined differently are refused",
            digests.len()
        );
    }
    for (route, leader) in &view.leaders {
        let _ = writeln!(out, "{route}: rollout led by {leader}");
    }
    out
}
