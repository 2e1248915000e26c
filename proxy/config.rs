//! Configuration: read a YAML file, parse it into raw serde structs, validate them into domain
//! types. Files the configuration names (certificates, keys, CA bundles) are loaded by
//! `control::load`, the one gate that `check`, start-up and reload share.

mod error;
mod locate;
mod model;
mod raw;
mod validate;

use std::path::Path;

pub use error::{ConfigError, Location, Problem};
pub use model::*;

/// Reads, parses and validates a configuration file; returns the text with the configuration.
pub fn read(file: &Path) -> Result<(Config, String), ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let config = parse(file, &text)?;
    Ok((config, text))
}

/// A refusal of `file` for `problems` (field path, message), each located in `text`: for rules
/// judged outside validation (files the configuration names).
pub fn invalid(file: &Path, text: &str, problems: Vec<(String, String)>) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_path_buf(),
        problems: problems
            .into_iter()
            .map(|(path, message)| Problem {
                location: Location(locate::locate(text, &path)),
                path,
                message,
            })
            .collect(),
    }
}

/// Parses and validates configuration text; `file` names it in errors.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig = serde_yaml::from_str(text).map_err(|e| {
        let location = Location(e.location().map(|l| (l.line(), l.column())));
        let mut message = e.to_string();
        // serde_yaml appends " at line L column C"; the location is already in front.
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        ConfigError::Parse {
            file: file.to_path_buf(),
            location,
            message,
        }
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    validate::validate(raw, base).map_err(|mut problems| {
        for p in &mut problems {
            p.location = Location(locate::locate(text, &p.path));
        }
        ConfigError::Invalid {
            file: file.to_path_buf(),
            problems,
        }
    })
}
