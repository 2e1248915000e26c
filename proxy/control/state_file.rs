//! The durable runtime state: overrides written atomically (temp file, fsync, rename, fsync of
//! the directory) and read back at start. A file that cannot be read is set aside, never trusted
//! and never fatal.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::Overrides;

const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: u32,
    overrides: Overrides,
}

/// What was found at start.
#[derive(Debug)]
pub enum Loaded {
    /// No state file yet: start from the configuration file.
    Missing,
    /// The saved overrides.
    Found(Overrides),
    /// The file exists but could not be read or parsed; it was renamed to `set_aside` when that
    /// was possible.
    Unreadable {
        /// What was wrong.
        error: String,
        /// Where the bad file now is.
        set_aside: Option<PathBuf>,
    },
}

/// The directory a state file lives in (`.` for a bare file name): where it is written, and what
/// start-up checks can be written.
pub fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Reads the state file.
pub fn load(path: &Path) -> Loaded {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => {
            return Loaded::Unreadable {
                error: format!("{}: cannot read: {e}", path.display()),
                set_aside: None,
            }
        }
    };
    let error = match serde_json::from_slice::<StateFile>(&text) {
        Ok(s) if s.format == FORMAT => return Loaded::Found(s.overrides),
        Ok(s) => format!(
            "{}: format {} is not supported (this build reads {FORMAT})",
            path.display(),
            s.format
        ),
        Err(e) => format!("{}: not valid state: {e}", path.display()),
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{stamp}"));
    let aside = PathBuf::from(aside);
    let set_aside = std::fs::rename(path, &aside).ok().map(|_| aside);
    Loaded::Unreadable { error, set_aside }
}

/// Writes the overrides atomically: readers see the old file or the new one, never a mix.
pub fn save(path: &Path, overrides: &Overrides) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(&StateFile {
        format: FORMAT,
        overrides: overrides.clone(),
    })
    .map_err(std::io::Error::other)?;
    let dir = directory_of(path);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename is durable once the directory entry is.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RouteOverride;

    #[test]
    fn saved_state_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(matches!(load(&path), Loaded::Missing));
        let mut o = Overrides::default();
        o.routes.insert(
            "shop".into(),
            RouteOverride {
                versions: vec!["a".into(), "b".into()],
                weights: Some(vec![1, 2]),
                aborted: None,
                rollout: None,
            },
        );
        save(&path, &o).unwrap();
        match load(&path) {
            Loaded::Found(back) => assert_eq!(back, o),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{ not json").unwrap();
        match load(&path) {
            Loaded::Unreadable { error, set_aside } => {
                assert!(error.contains("not valid state"), "{error}");
                let aside = set_aside.unwrap();
                assert!(aside.exists() && !path.exists());
            }
            other => panic!("{other:?}"),
        }
    }
}
