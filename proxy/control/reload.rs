//! Reloading the configuration file: through the same gate as start-up ([`super::load`]), keeping
//! the configuration in service when the new one is refused, and recording the outcome for
//! `GET /api/v1/config`.

use std::sync::Arc;

use super::{load, now_unix_ms, Control, ReloadSource, ReloadStatus};
use crate::config::ConfigError;

/// Why a reload did not install a new configuration.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The proxy runs from a configuration built in memory (tests, demo).
    #[error("this proxy was not started from a configuration file")]
    NoFile,
    /// The file was refused; the configuration in service stays.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The control task is gone (shutting down).
    #[error("the proxy is shutting down")]
    Unavailable,
}

impl Control {
    /// Reloads the configuration file. A refused file leaves the configuration in service and is
    /// recorded in the reload status until a reload succeeds.
    pub(super) fn reload(&mut self, source: ReloadSource) -> Result<u64, ReloadError> {
        let Some(file) = self.file.clone() else {
            return Err(ReloadError::NoFile);
        };
        if source == ReloadSource::FileWatch && self.unchanged(&file) {
            return Ok(self.generation);
        }
        let loaded = match load::load(&file) {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::error!(source = source.as_str(), %error, "reload rejected: the running configuration stays");
                self.record_reload(Err(error.to_string()));
                return Err(error.into());
            }
        };
        let config = loaded.config;
        if config.listeners != self.config.listeners || config.admin != self.config.admin {
            tracing::warn!("listener and admin changes take effect at the next restart");
        }
        for route in self.overrides.prune(&config.routes) {
            tracing::warn!(
                route,
                "override dropped: the route or its versions changed in the file"
            );
        }
        if config.state_file != self.config.state_file {
            self.store = super::store::for_config(config.state_file.as_deref());
        }
        self.config = Arc::new(config);
        if let Err(error) = self.store.save(&self.overrides) {
            // The file is the source of truth for what it changed; the pruned state is pruned
            // again at the next start.
            tracing::error!(%error, "release state not saved after a reload");
        }
        self.loaded_text = Some(loaded.text);
        self.install();
        self.record_reload(Ok(()));
        tracing::info!(
            source = source.as_str(),
            generation = self.generation,
            "configuration reloaded"
        );
        Ok(self.generation)
    }

    /// True when the file holds the text in service (say, a bad edit undone): nothing to build,
    /// and an earlier failure no longer stands.
    fn unchanged(&self, file: &std::path::Path) -> bool {
        let Ok(text) = std::fs::read_to_string(file) else {
            return false;
        };
        if self.loaded_text.as_deref() != Some(text.as_str()) {
            return false;
        }
        let status = self.status.load();
        if status.last_error.is_some() {
            let mut cleared = ReloadStatus::clone(&status);
            cleared.last_error = None;
            cleared.last_error_at_unix_ms = None;
            self.status.store(Arc::new(cleared));
        }
        true
    }

    /// Counts the reload and records its outcome for `GET /api/v1/config`.
    fn record_reload(&self, outcome: Result<(), String>) {
        let label = if outcome.is_ok() { "ok" } else { "error" };
        self.shared
            .metrics
            .config_reloads
            .with_label_values(&[label])
            .inc();
        let mut status = ReloadStatus::clone(&self.status.load());
        match outcome {
            Ok(()) => {
                status.generation = self.generation;
                status.loaded_at_unix_ms = now_unix_ms();
                status.last_error = None;
                status.last_error_at_unix_ms = None;
            }
            Err(error) => {
                status.last_error = Some(error);
                status.last_error_at_unix_ms = Some(now_unix_ms());
            }
        }
        self.status.store(Arc::new(status));
    }
}
