//! The `StateStore` port: where the control task makes the release state durable before it
//! installs it. A change the store refuses is not acknowledged: the caller gets the error and the
//! state in service stays as it was. The state file is one store; without one the state lives
//! in memory only (and says so at start).

use std::path::{Path, PathBuf};

use crate::control::state_file;
use crate::state::Overrides;

/// Why the release state could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Writing the state file failed.
    #[error("cannot save the state file {}: {source}", .path.display())]
    File {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The fleet's etcd did not answer or has no quorum.
    #[error("the fleet store (etcd) is unreachable: {reason}; nothing changed")]
    FleetUnreachable {
        /// What the client said.
        reason: String,
    },
}

/// Where the release state is kept.
pub trait StateStore: Send {
    /// Makes `overrides` durable. `Err` means nothing was saved and nothing may be acknowledged.
    fn save(&mut self, overrides: &Overrides) -> Result<(), StoreError>;

    /// What this store is, for logs (`state file /var/lib/...`, `memory`).
    fn describe(&self) -> String;
}

/// No durability: the state lives as long as the process.
pub struct MemoryStore;

impl StateStore for MemoryStore {
    fn save(&mut self, _overrides: &Overrides) -> Result<(), StoreError> {
        Ok(())
    }

    fn describe(&self) -> String {
        "memory (no state_file configured)".into()
    }
}

/// The state file: written atomically (temp file, fsync, rename, fsync of the directory).
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store writing `path`.
    pub fn new(path: &Path) -> FileStore {
        FileStore {
            path: path.to_path_buf(),
        }
    }
}

impl StateStore for FileStore {
    fn save(&mut self, overrides: &Overrides) -> Result<(), StoreError> {
        state_file::save(&self.path, overrides).map_err(|source| StoreError::File {
            path: self.path.clone(),
            source,
        })
    }

    fn describe(&self) -> String {
        format!("state file {}", self.path.display())
    }
}

/// The store a configuration asks for.
pub fn for_config(state_file: Option<&Path>) -> Box<dyn StateStore> {
    match state_file {
        Some(path) => Box::new(FileStore::new(path)),
        None => Box::new(MemoryStore),
    }
}
