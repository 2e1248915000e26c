//! The one gate a configuration file passes, shared by `check`, start-up and every reload: read,
//! parse and validate it, then load the files it names (certificates, keys, CA bundles). What
//! `run` would refuse, `check` refuses, and a reload can never install what a start would not.

use std::path::Path;

use crate::config::{self, Config, ConfigError};

/// A configuration that passed the gate, with the text it came from.
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// The file's text, to tell a real change from a rewrite of the same bytes.
    pub text: String,
}

/// Reads, parses and validates `file`, and loads the TLS files it names.
pub fn load(file: &Path) -> Result<Loaded, ConfigError> {
    let (config, text) = config::read(file)?;
    crate::data::tls::check_files(&config).map_err(|e| ConfigError::Files {
        file: file.to_path_buf(),
        source: Box::new(e),
    })?;
    crate::fleet::check_files(&config).map_err(|e| ConfigError::Files {
        file: file.to_path_buf(),
        source: Box::new(e),
    })?;
    Ok(Loaded { config, text })
}
