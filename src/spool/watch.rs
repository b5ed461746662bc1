//! Watching `incoming/` with inotify (the `notify` crate's raw watcher, no debouncer).
//!
//! A file renamed in (`IN_MOVED_TO`) is taken at once, a file written in place when it is
//! closed (`IN_CLOSE_WRITE`); dot and `*.tmp` names are ignored until renamed. Creations of
//! things that will never be closed for writing (symlinks, FIFOs, directories) are reported
//! too, so they are rejected at once. Overflows and watcher errors ask for a rescan, which the
//! daemon also does on a timer: events can be lost, and network filesystems send none.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};

use super::layout::{classify, Name};

/// What the watcher tells the daemon.
#[derive(Debug)]
pub enum Signal {
    /// These names in `incoming/` are ready.
    Ready(Vec<OsString>),
    /// Events may have been lost: read the directory again.
    Rescan,
    /// A file was created that may never send a close or rename event (e.g. a hard link):
    /// rescan once it has settled.
    Settle,
}

/// A live watch on a directory; dropping it stops watching.
pub struct DirWatch {
    _watcher: notify::RecommendedWatcher,
}

impl DirWatch {
    /// Starts watching `dir`, sending [`Signal`]s (wrapped by `wrap`) to `tx`.
    pub fn start<T: Send + 'static>(
        dir: &Path,
        tx: Sender<T>,
        wrap: fn(Signal) -> T,
    ) -> notify::Result<Self> {
        // Event paths are reported under the path that was watched; compare in one form.
        let dir_buf: PathBuf = std::fs::canonicalize(dir)?;
        let watched = dir_buf.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<Event>| {
            let signal = match res {
                Ok(event) => match translate(&dir_buf, &event) {
                    Some(s) => s,
                    None => return,
                },
                Err(e) => {
                    tracing::warn!(error = %e, "inotify watcher error; rescanning");
                    Signal::Rescan
                }
            };
            let _ = tx.send(wrap(signal));
        })?;
        watcher.watch(&watched, RecursiveMode::NonRecursive)?;
        Ok(Self { _watcher: watcher })
    }
}

fn translate(dir: &Path, event: &Event) -> Option<Signal> {
    if event.need_rescan() {
        return Some(Signal::Rescan);
    }
    let paths: Vec<&PathBuf> = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => event.paths.iter().collect(),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => event.paths.iter().collect(),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            event.paths.get(1).into_iter().collect()
        }
        // Things never closed for writing: reject them at once rather than at the next rescan.
        EventKind::Create(CreateKind::Folder | CreateKind::Other | CreateKind::Any) => {
            event.paths.iter().collect()
        }
        EventKind::Create(CreateKind::File) => {
            let odd: Vec<&PathBuf> = event
                .paths
                .iter()
                .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| !m.file_type().is_file()))
                .collect();
            if odd.is_empty() {
                return Some(Signal::Settle);
            }
            odd
        }
        EventKind::Other if event.paths.is_empty() => return Some(Signal::Rescan),
        _ => return None,
    };
    let names: Vec<OsString> = paths
        .into_iter()
        .filter(|p| p.parent() == Some(dir))
        .filter_map(|p| p.file_name().map(ToOwned::to_owned))
        .filter(|n| !matches!(classify(n), Name::InProgress))
        .collect();
    (!names.is_empty()).then_some(Signal::Ready(names))
}
