//! One signer per spool: an exclusive `flock` on `spool/.lock`, held for the life of the
//! process, with the holder's pid written inside for the message a second one prints.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A held spool lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
}

/// The lock is held by another process.
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
    /// Takes the lock without waiting.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
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
