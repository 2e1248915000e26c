//! Configuration errors: each names the file and, for validation, the field path
//! (`routes[0].rules[1].version`); parse errors also carry the line and column serde_yaml gives.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML did not parse into the expected shape (unknown field, wrong type...).
    #[error("{file}:{location}{message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// `line:column: ` when serde_yaml knows it, else empty.
        location: Location,
        /// serde_yaml's message, which starts with the field path.
        message: String,
    },
    /// A file the configuration names (certificate, key, CA bundle) does not load.
    #[error("{file}: {source}")]
    Files {
        /// The configuration file.
        file: PathBuf,
        /// What is wrong, naming the file that failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The YAML parsed but its content is invalid; every problem found is listed.
    #[error("{}", Listing { file, problems })]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Each problem with its field path.
        problems: Vec<Problem>,
    },
}

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path, such as `routes[0].rules[1].version`.
    pub path: String,
    /// Where the field (or its nearest parent) is written.
    pub location: Location,
    /// What is wrong, lowercase.
    pub message: String,
}

/// Line and column of a parse error, when known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Location(pub Option<(usize, usize)>);

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((line, column)) => write!(f, "{line}:{column}: "),
            None => f.write_str(" "),
        }
    }
}

struct Listing<'a> {
    file: &'a PathBuf,
    problems: &'a [Problem],
}

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(
                f,
                "{}:{}{}: {}",
                self.file.display(),
                p.location,
                p.path,
                p.message
            )?;
        }
        Ok(())
    }
}
