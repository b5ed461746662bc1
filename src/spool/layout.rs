//! The spool directories of DESIGN §2 behind one door, [`Spool`], and the classification of
//! names found in `incoming/`.
//!
//! The spool is written by parties the signer does not trust (DESIGN §9). [`Spool::open`]
//! opens the root and each subdirectory once, without following a link, and refuses a link or
//! a non-directory by name; from then on every read, write, rename and removal is relative to
//! those handles with one-component names, so nothing is ever reached through a link, and a
//! directory swapped for a link while running is still the directory opened at start here.
//! [`Spool::check`], run before every batch, looks at each name again: a subdirectory that is
//! now a link or not a directory is refused — every batch fails before claiming anything —
//! with an error log and a metric, until it is put back; one that was removed is created
//! again, and one replaced by another real directory is opened afresh (both stay inside the
//! spool). Other modules never build a spool path to open: they ask the spool to scan, claim,
//! read, publish, move, reject.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::fsx::{self, Dir, EntryStat, Untrusted};
use crate::request::RequestId;

/// The subdirectories of a spool (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sub {
    /// `incoming/`: new requests, from anyone.
    Incoming,
    /// `processing/`: requests claimed by a signer.
    Processing,
    /// `held/`: requests waiting for an operator.
    Held,
    /// `issued/`: certificates.
    Issued,
    /// `status/`: result records.
    Status,
    /// `archive/`: decided requests as they came.
    Archive,
    /// `rejected/`: files that are not requests, with their `.reason`.
    Rejected,
    /// `published/`: the CA chain, the CRL, the ledger checkpoint.
    Published,
}

impl Sub {
    /// Every subdirectory.
    pub const ALL: [Self; 8] = [
        Self::Incoming,
        Self::Processing,
        Self::Held,
        Self::Issued,
        Self::Status,
        Self::Archive,
        Self::Rejected,
        Self::Published,
    ];

    /// The directory's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Incoming => "incoming",
            Self::Processing => "processing",
            Self::Held => "held",
            Self::Issued => "issued",
            Self::Status => "status",
            Self::Archive => "archive",
            Self::Rejected => "rejected",
            Self::Published => "published",
        }
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|s| *s == self)
            .expect("every Sub is in ALL")
    }
}

/// Why a spool cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A path of the spool is a link or not a directory, or the state lies inside the spool.
    #[error("{0}")]
    Refused(String),
    /// The spool could not be read or created.
    #[error("{path}: {source}")]
    Io {
        /// What could not be used.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// An open spool: the root and its subdirectories as handles opened without following links.
#[derive(Debug)]
pub struct Spool {
    /// The spool root as the operator named it (for messages).
    pub root: PathBuf,
    root_dir: Dir,
    dirs: RwLock<Vec<Arc<Dir>>>,
    swapped: [AtomicBool; 8],
    refusals: AtomicU64,
    reopened: AtomicU64,
}

impl Spool {
    /// Opens the spool at `root`, creating the root (when missing) and the subdirectories it
    /// lacks. A root, subdirectory or `.lock` that is a link, or not a directory (a file), is
    /// refused by name and nothing is created, truncated or written through it.
    pub fn open(root: &Path) -> Result<Self, SpoolError> {
        if std::fs::symlink_metadata(root).is_err() {
            std::fs::create_dir_all(root).map_err(|source| SpoolError::Io {
                path: root.to_owned(),
                source,
            })?;
        }
        let refused = |e: io::Error| match e.kind() {
            io::ErrorKind::NotADirectory => SpoolError::Refused(e.to_string()),
            _ => SpoolError::Io {
                path: root.to_owned(),
                source: e,
            },
        };
        let root_dir = Dir::open(root).map_err(refused)?;
        if let Ok(st) = root_dir.stat(OsStr::new(LOCK)) {
            if !st.regular {
                return Err(SpoolError::Refused(format!(
                    "{} is not a regular file: the spool lock must be a plain file (DESIGN §9); \
                     remove it",
                    root.join(LOCK).display()
                )));
            }
        }
        let mut dirs = Vec::with_capacity(Sub::ALL.len());
        for sub in Sub::ALL {
            dirs.push(Arc::new(
                root_dir.ensure_dir(sub.name(), 0o755).map_err(refused)?,
            ));
        }
        Ok(Self {
            root: root.to_owned(),
            root_dir,
            dirs: RwLock::new(dirs),
            swapped: Default::default(),
            refusals: AtomicU64::new(0),
            reopened: AtomicU64::new(0),
        })
    }

    /// Refuses a state directory (CA keys, ledger) inside the spool (DESIGN §9): whoever writes
    /// the spool must never reach it.
    pub fn refuse_state_inside(&self, state: &Path) -> Result<(), SpoolError> {
        let spool = std::fs::canonicalize(&self.root).map_err(|source| SpoolError::Io {
            path: self.root.clone(),
            source,
        })?;
        let state_real = canonical_or_nearest(state);
        if state_real.starts_with(&spool) {
            return Err(SpoolError::Refused(format!(
                "the state directory {} lies inside the spool {}: keep the CA's keys and ledger \
                 outside the spool (DESIGN §9)",
                state.display(),
                self.root.display()
            )));
        }
        Ok(())
    }

    /// Looks at every subdirectory's name again (before each batch). A name that is now a
    /// link or not a directory is refused — logged once and counted — until it is put back; a
    /// missing directory is created again and one replaced by another real directory is opened
    /// afresh (logged). Also refuses a spool root that was swapped. Returns the first refusal.
    pub fn check(&self) -> Result<(), SpoolError> {
        if !self.root_dir.still_at_path(&self.root) {
            return Err(self.refuse_root());
        }
        let mut first = None;
        for sub in Sub::ALL {
            let current = self.dir(sub);
            let problem = match self.root_dir.stat(OsStr::new(sub.name())) {
                Ok(st) if st.dir && st.id == current.id() => None,
                Ok(st) if st.dir => self.reopen(sub, "was replaced by another directory"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.reopen(sub, "was removed: created again")
                }
                Ok(_) | Err(_) => Some(self.describe_entry(sub.name())),
            };
            let was = self.swapped[sub.index()].swap(problem.is_some(), Ordering::Relaxed);
            let Some(now) = problem else {
                if was {
                    tracing::warn!(dir = %self.path(sub).display(), "the spool directory is sound again; processing resumes");
                }
                continue;
            };
            let message = format!(
                "{} is {now}, not the spool's own directory: nothing is read from or written \
                 through it; put the directory back (DESIGN §9)",
                self.path(sub).display(),
            );
            if !was {
                self.refusals.fetch_add(1, Ordering::Relaxed);
                tracing::error!(dir = %self.path(sub).display(), "{message}");
            }
            first.get_or_insert(SpoolError::Refused(message));
        }
        first.map_or(Ok(()), Err)
    }

    /// Opens a subdirectory afresh (creating it when missing); `Some(problem)` when that fails.
    fn reopen(&self, sub: Sub, what: &str) -> Option<&'static str> {
        match self.root_dir.ensure_dir(sub.name(), 0o755) {
            Ok(d) => {
                tracing::warn!(dir = %self.path(sub).display(), "the spool directory {what}; using it from now on");
                self.dirs.write().expect("never poisoned")[sub.index()] = Arc::new(d);
                self.reopened.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(_) => Some(self.describe_entry(sub.name())),
        }
    }

    fn refuse_root(&self) -> SpoolError {
        let message = format!(
            "the spool {} was replaced after it was opened (it is now {}): nothing is read \
             from or written through it; restart once the spool is sound (DESIGN §9)",
            self.root.display(),
            describe_path(&self.root)
        );
        if !self.swapped.iter().any(|s| s.swap(true, Ordering::Relaxed)) {
            self.refusals.fetch_add(1, Ordering::Relaxed);
            tracing::error!(spool = %self.root.display(), "{message}");
        }
        SpoolError::Refused(message)
    }

    /// How many times a subdirectory was opened afresh (the daemon then watches `incoming/`
    /// again).
    pub fn reopened(&self) -> u64 {
        self.reopened.load(Ordering::Relaxed)
    }

    /// How many times a swapped spool directory was found (the metric).
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    fn describe_entry(&self, name: &str) -> &'static str {
        describe_path(&self.root.join(name))
    }

    /// The handle of a subdirectory.
    pub fn dir(&self, sub: Sub) -> Arc<Dir> {
        self.dirs.read().expect("never poisoned")[sub.index()].clone()
    }

    /// The handle of the spool root.
    pub fn root_dir(&self) -> &Dir {
        &self.root_dir
    }

    /// A subdirectory's path, for messages only.
    pub fn path(&self, sub: Sub) -> PathBuf {
        self.root.join(sub.name())
    }

    /// The names in a subdirectory with their `fstatat`.
    pub fn entries(&self, sub: Sub) -> io::Result<Vec<(OsString, Option<EntryStat>)>> {
        self.dir(sub).entries()
    }

    /// Whether `sub/name` exists (any type, never followed).
    pub fn exists(&self, sub: Sub, name: &OsStr) -> bool {
        self.dir(sub).exists(name)
    }

    /// Reads an untrusted file (see [`Dir::read_untrusted`]).
    pub fn read_untrusted(&self, sub: Sub, name: &OsStr, limit: u64) -> io::Result<Untrusted> {
        self.dir(sub).read_untrusted(name, limit)
    }

    /// Moves `from/name` to `to/to_name` unless that is taken; `Ok(false)` when `name` is gone
    /// or `to_name` is taken. Refused while either directory is swapped.
    pub fn move_file(&self, from: Sub, name: &OsStr, to: Sub, to_name: &OsStr) -> io::Result<bool> {
        self.usable(from)?;
        self.usable(to)?;
        self.dir(from).move_to(name, &self.dir(to), to_name)
    }

    /// Moves `from/name` to `to/to_name`, replacing what is there.
    pub fn move_replacing(
        &self,
        from: Sub,
        name: &OsStr,
        to: Sub,
        to_name: &OsStr,
    ) -> io::Result<()> {
        self.usable(from)?;
        self.usable(to)?;
        self.dir(from).move_replacing(name, &self.dir(to), to_name)
    }

    /// Writes `sub/name` atomically and durably (mode 0644).
    pub fn publish(&self, sub: Sub, name: &OsStr, bytes: &[u8]) -> io::Result<()> {
        self.usable(sub)?;
        self.dir(sub).write_atomic(name, bytes, fsx::MODE_PUBLIC)
    }

    /// Writes a temp file for `sub/name` (not flushed); rename it with [`Spool::replace`].
    pub fn write_temp(&self, sub: Sub, name: &OsStr, bytes: &[u8]) -> io::Result<OsString> {
        self.usable(sub)?;
        self.dir(sub)
            .write_temp(name, bytes, fsx::MODE_PUBLIC, false)
    }

    /// Renames `sub/from` over `sub/to`.
    pub fn replace(&self, sub: Sub, from: &OsStr, to: &OsStr) -> io::Result<()> {
        self.usable(sub)?;
        self.dir(sub).replace(from, to)
    }

    /// Removes `sub/name`.
    pub fn remove(&self, sub: Sub, name: &OsStr) -> io::Result<()> {
        self.dir(sub).remove(name)
    }

    /// Flushes a subdirectory.
    pub fn sync(&self, sub: Sub) -> io::Result<()> {
        self.dir(sub).sync()
    }

    /// Flushes the filesystem holding the spool.
    pub fn sync_filesystem(&self) -> io::Result<()> {
        self.root_dir.sync_filesystem()
    }

    /// Moves `from/name` (any type; never followed) to `rejected/` under a free name made from
    /// `shown` (the name it came with) and writes `<that name>.reason` beside it.
    pub fn reject(&self, from: Sub, name: &OsStr, shown: &OsStr, reason: &str) -> io::Result<()> {
        let rejected = self.dir(Sub::Rejected);
        let base = safe_name(shown);
        let mut target = base.clone();
        let mut n = 1;
        while rejected.exists(OsStr::new(&target))
            || rejected.exists(OsStr::new(&format!("{target}.reason")))
        {
            target = format!("{base}.{n}");
            n += 1;
        }
        if !self.move_file(from, name, Sub::Rejected, OsStr::new(&target))? {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the file disappeared",
            ));
        }
        rejected.write_atomic(
            OsStr::new(&format!("{target}.reason")),
            format!("{reason}\n").as_bytes(),
            fsx::MODE_PUBLIC,
        )
    }

    /// `status/<id>.json`
    pub fn status_name(id: &RequestId) -> OsString {
        OsString::from(format!("{id}.json"))
    }

    /// `issued/<id>.crt`
    pub fn cert_name(id: &RequestId) -> OsString {
        OsString::from(format!("{id}.crt"))
    }

    /// Takes the spool lock (`.lock`, see [`super::lock`]).
    pub fn lock(&self) -> Result<super::lock::SpoolLock, super::lock::LockError> {
        super::lock::SpoolLock::acquire(&self.root_dir, &self.root.join(LOCK))
    }

    fn usable(&self, sub: Sub) -> io::Result<()> {
        if self.swapped[sub.index()].load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} was replaced while running: refusing to use it (DESIGN §9)",
                    self.path(sub).display()
                ),
            ));
        }
        Ok(())
    }
}

fn describe_path(path: &Path) -> &'static str {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => "a symbolic link",
        Ok(m) if m.is_dir() => "another directory",
        Ok(_) => "not a directory",
        Err(_) => "missing",
    }
}

/// A path's canonical form, or that of its nearest existing ancestor joined with the rest.
fn canonical_or_nearest(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if let Ok(c) = std::fs::canonicalize(&cur) {
            return rest.iter().rev().fold(c, |acc: PathBuf, n| acc.join(n));
        }
        match (cur.file_name().map(ToOwned::to_owned), cur.parent()) {
            (Some(n), Some(p)) => {
                rest.push(n);
                cur = if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_owned()
                };
            }
            _ => return path.to_owned(),
        }
    }
}

/// A printable, slash-free, non-dot file name for `rejected/` (at most 200 bytes).
pub fn safe_name(name: &OsStr) -> String {
    let s: String = name
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c == '/' || c.is_control() || c == char::REPLACEMENT_CHARACTER {
                '_'
            } else {
                c
            }
        })
        .collect();
    let mut s = s.trim_start_matches('.').to_owned();
    while s.len() > 200 {
        s.pop();
    }
    if s.is_empty() || s == ".." {
        s = "unnamed".into();
    }
    s
}

/// The spool lock's name in the root.
pub const LOCK: &str = ".lock";

/// What a name in `incoming/` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// Being written by a producer (`.name`, `name.tmp`): not touched.
    InProgress,
    /// A certificate request: `<id>.csr` or `<id>.json`.
    Request(RequestId, Kind),
    /// A revocation request: `<id>.revoke.json`.
    Revocation(RequestId),
    /// Anything else: rejected with this reason.
    Bad(String),
}

/// The two request file kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A bare PEM or DER CSR (type webhook).
    Csr,
    /// A JSON envelope.
    Envelope,
}

impl Kind {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Csr => "csr",
            Self::Envelope => "json",
        }
    }
}

/// Classifies a file name found in `incoming/`.
pub fn classify(name: &OsStr) -> Name {
    let Some(text) = name.to_str() else {
        return Name::Bad(
            "the file name is not valid UTF-8: name requests <id>.csr or <id>.json".into(),
        );
    };
    if text.starts_with('.') || text.ends_with(".tmp") {
        return Name::InProgress;
    }
    let (stem, kind) = if let Some(s) = text.strip_suffix(".revoke.json") {
        return match RequestId::parse(s) {
            Ok(id) => Name::Revocation(id),
            Err(e) => Name::Bad(format!("{e} (revocation files are named <id>.revoke.json)")),
        };
    } else if let Some(s) = text.strip_suffix(".csr") {
        (s, Kind::Csr)
    } else if let Some(s) = text.strip_suffix(".json") {
        (s, Kind::Envelope)
    } else {
        return Name::Bad(format!(
            "{:?} is not a request name: name requests <id>.csr (a CSR) or <id>.json (an envelope)",
            shorten(text)
        ));
    };
    match RequestId::parse(stem) {
        Ok(id) => Name::Request(id, kind),
        Err(e) => Name::Bad(format!(
            "{e}; the file name must be <id>.{}",
            kind.extension()
        )),
    }
}

fn shorten(s: &str) -> String {
    let t: String = s.chars().take(80).collect();
    if t.len() < s.len() {
        format!("{t}…")
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn names_are_classified() {
        let c = |s: &str| classify(OsStr::new(s));
        assert_eq!(c(".x.csr"), Name::InProgress);
        assert_eq!(c("x.csr.tmp"), Name::InProgress);
        assert!(matches!(c("abc.csr"), Name::Request(_, Kind::Csr)));
        assert!(matches!(c("abc.json"), Name::Request(_, Kind::Envelope)));
        assert!(matches!(c("abc.revoke.json"), Name::Revocation(_)));
        assert!(matches!(c("a b.csr"), Name::Bad(_)));
        assert!(matches!(c("é.csr"), Name::Bad(_)));
        assert!(matches!(c("abc.pem"), Name::Bad(_)));
        assert!(matches!(
            c(&format!("{}.csr", "a".repeat(251))),
            Name::Bad(_)
        ));
        let raw = OsString::from_vec(vec![0xff, b'.', b'c', b's', b'r']);
        assert!(matches!(classify(&raw), Name::Bad(_)));
    }
}
