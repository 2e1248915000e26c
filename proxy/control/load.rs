//! The one gate a configuration file passes, shared by `check`, start-up and every reload: read,
//! parse and validate it, then judge what the file names on disk: certificates, keys and CA
//! bundles load, the admin token file is readable, the state file's directory exists and can be
//! written. What `run` would refuse, `check` refuses, and a reload never installs what a start
//! would not.

use std::path::Path;

use crate::config::{self, Config, ConfigError, TokenSource};

/// A configuration that passed the gate, with the text it came from.
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// The file's text, to tell a real change from a rewrite of the same bytes.
    pub text: String,
    /// What is not wrong in the file but may be at start (an unset token variable).
    pub warnings: Vec<String>,
}

/// Reads, parses and validates `file`, and checks the files it names.
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
    let mut problems = Vec::new();
    if let Some(path) = &config.state_file {
        if let Err(why) = writable_dir_of(path) {
            problems.push(("state_file".to_string(), why));
        }
    }
    let mut warnings = Vec::new();
    match config.admin.as_ref().and_then(|a| a.token.as_ref()) {
        Some(TokenSource::File(path)) => match std::fs::read_to_string(path) {
            Ok(t) if !t.trim().is_empty() => {}
            Ok(_) => problems.push((
                "admin.token_file".into(),
                format!("{} is empty", path.display()),
            )),
            Err(e) => problems.push((
                "admin.token_file".into(),
                format!("{}: {e}", path.display()),
            )),
        },
        Some(TokenSource::Env(var)) if std::env::var(var).map_or(true, |v| v.trim().is_empty()) => {
            warnings.push(format!(
                "admin.token_env names {var}, which is not set here: `run` refuses to start without it"
            ));
        }
        _ => {}
    }
    if !problems.is_empty() {
        return Err(config::invalid(file, &text, problems));
    }
    Ok(Loaded {
        config,
        text,
        warnings,
    })
}

/// Checks that the state file can be written where it is configured: its directory exists and a
/// file can be created in it (a probe, removed at once).
fn writable_dir_of(path: &Path) -> Result<(), String> {
    let dir = super::state_file::directory_of(path);
    if !dir.is_dir() {
        return Err(format!(
            "the directory {} of {} does not exist",
            dir.display(),
            path.display()
        ));
    }
    let probe = dir.join(format!(".switchyard-write-check-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "cannot write in {} (for {}): {e}",
            dir.display(),
            path.display()
        )),
    }
}
