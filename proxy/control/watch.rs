//! Watches the configuration file's directory (not the file: editors write a new file and rename
//! it, and Kubernetes swaps a `..data` symlink) and asks the control task to reload, debounced.
//! Events for other files of the directory (logs, the state file, anything written beside the
//! configuration) are dropped in the watcher's own thread: they never wake the proxy's runtime.
//! The control task compares the file's content with what it last loaded, so the events left
//! that change nothing cost one read.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{ControlHandle, ReloadSource};

/// How long events are gathered before one reload.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Starts watching; the returned watcher must be kept alive for as long as watching should go on.
pub fn spawn(file: &Path, control: ControlHandle) -> notify::Result<notify::RecommendedWatcher> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file.file_name().map(OsStr::to_os_string);
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event {
            if !e.kind.is_access() && concerns(&e, name.as_deref()) {
                // A full queue already holds a wake-up: dropping this one loses nothing.
                let _ = tx.try_send(());
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;

    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            // A rejected file is logged and reported by the control task; watching goes on.
            let _ = control.reload(ReloadSource::FileWatch).await;
            if control.is_closed() {
                break;
            }
        }
    });
    Ok(watcher)
}

/// Whether an event of the watched directory may have changed the configuration: it names the
/// file (written in place, or renamed onto it by an editor), or an entry of Kubernetes' atomic
/// writer (`..data` and the `..<timestamp>` directories it points to, through which a ConfigMap's
/// `config.yaml` symlink resolves), or no file at all (the kernel's queue overflowed: anything may
/// have changed).
fn concerns(event: &notify::Event, name: Option<&OsStr>) -> bool {
    let Some(name) = name else {
        return true;
    };
    event.need_rescan()
        || event.paths.is_empty()
        || event.paths.iter().any(|path| {
            path.file_name()
                .is_none_or(|n| n == name || n.as_encoded_bytes().starts_with(b".."))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, Flag, ModifyKind, RenameMode};
    use notify::{Event, EventKind};

    fn event(kind: EventKind, paths: &[&str]) -> Event {
        paths
            .iter()
            .fold(Event::new(kind), |e, p| e.add_path(PathBuf::from(p)))
    }

    #[test]
    fn only_events_that_can_change_the_file_concern_it() {
        let name = Some(OsStr::new("switchyard.yaml"));
        let write = EventKind::Modify(ModifyKind::Any);
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        let created = EventKind::Create(CreateKind::Any);
        // Beside the file: a log, the state file, an editor's swap file.
        assert!(!concerns(&event(write, &["/etc/sy/access.log"]), name));
        assert!(!concerns(&event(write, &["/etc/sy/state.json"]), name));
        assert!(!concerns(
            &event(created, &["/etc/sy/.switchyard.yaml.swp"]),
            name
        ));
        // The file itself, an editor's rename onto it, Kubernetes' swap of ..data.
        assert!(concerns(&event(write, &["/etc/sy/switchyard.yaml"]), name));
        let onto = event(renamed, &["/etc/sy/sedX1b2c3", "/etc/sy/switchyard.yaml"]);
        assert!(concerns(&onto, name));
        assert!(concerns(
            &event(renamed, &["/etc/sy/..data_tmp", "/etc/sy/..data"]),
            name
        ));
        assert!(concerns(
            &event(created, &["/etc/sy/..2026_11_30_12_00_00.1"]),
            name
        ));
        // Nothing named, or the queue overflowed: the file may have changed.
        assert!(concerns(&event(EventKind::Other, &[]), name));
        let rescan = event(EventKind::Other, &["/etc/sy/x"]).set_flag(Flag::Rescan);
        assert!(concerns(&rescan, name));
        // A configuration path without a file name: every event.
        assert!(concerns(&event(write, &["/etc/sy/access.log"]), None));
    }
}
