//! Watches the configuration file's directory (not the file: editors write a new file and rename
//! it, and Kubernetes swaps a `..data` symlink) and asks the control task to reload, debounced.
//! The control task compares the file's content with what it last loaded, so spurious events
//! cost one read.

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
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event {
            if !e.kind.is_access() {
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
