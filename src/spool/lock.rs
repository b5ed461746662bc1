//! One signer per spool: an exclusive `flock` on `spool/.lock`, held for the life of the
//! process, with the holder's pid written inside for the message a second one prints.
//!
//! The lock file is opened relative to the spool root's handle, never through a link, and is
//! written only once it is known to be a regular file with a single name: a `.lock` planted as
//! a link (or a hard link) to the CA's key must never be truncated (DESIGN §9).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::fsx::Dir;

/// A held spool lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
}

/// The lock is held by another process, or its file is not one to lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("the spool is locked by another smsgate-ca {holder} ({path}): stop it first, or use another --spool")]
    Held {
        /// The lock file.
        path: PathBuf,
        /// "process 1234" or "process".
        holder: String,
    },
    /// The lock file is a link, a hard link or not a regular file.
    #[error(
        "{path} is {what}: the spool lock must be a plain file of its own (DESIGN §9); remove it"
    )]
    NotPlain {
        /// The lock file.
        path: PathBuf,
        /// What it is.
        what: String,
    },
    /// The lock file could not be opened.
    #[error("cannot open the spool lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl SpoolLock {
    /// Takes the lock without waiting: `.lock` in `root` (named `path` in messages).
    pub fn acquire(root: &Dir, path: &Path) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        let not_plain = |what: &str| LockError::NotPlain {
            path: path.to_owned(),
            what: what.to_owned(),
        };
        let mut file = match root.open_lock_file(std::ffi::OsStr::new(super::layout::LOCK)) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
                return Err(not_plain("a symbolic link"))
            }
            Err(e) => return Err(io(e)),
        };
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(not_plain("not a regular file"));
        }
        {
            use std::os::unix::fs::MetadataExt;
            if meta.nlink() > 1 {
                return Err(not_plain("a hard link to another file"));
            }
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = (&file).take(32).read_to_string(&mut pid);
                let pid = pid.trim();
                let holder = if pid.is_empty() {
                    "process".to_owned()
                } else {
                    format!("process {pid}")
                };
                return Err(LockError::Held {
                    path: path.to_owned(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}
