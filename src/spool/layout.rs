//! The spool directories of DESIGN §2 and the classification of names found in `incoming/`.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use crate::fsx;
use crate::request::RequestId;

/// A spool directory and its subdirectories.
#[derive(Debug, Clone)]
pub struct Spool {
    /// The spool root.
    pub root: PathBuf,
}

impl Spool {
    /// A spool rooted at `root` (nothing is created yet).
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    /// Creates the subdirectories that are missing.
    pub fn ensure(&self) -> io::Result<()> {
        fsx::ensure_dir(&self.root, 0o755)?;
        for d in [
            self.incoming(),
            self.processing(),
            self.held(),
            self.issued(),
            self.status(),
            self.archive(),
            self.rejected(),
            self.published(),
        ] {
            fsx::ensure_dir(&d, 0o755)?;
        }
        Ok(())
    }

    /// `incoming/`
    pub fn incoming(&self) -> PathBuf {
        self.root.join("incoming")
    }
    /// `processing/`
    pub fn processing(&self) -> PathBuf {
        self.root.join("processing")
    }
    /// `held/`
    pub fn held(&self) -> PathBuf {
        self.root.join("held")
    }
    /// `issued/`
    pub fn issued(&self) -> PathBuf {
        self.root.join("issued")
    }
    /// `status/`
    pub fn status(&self) -> PathBuf {
        self.root.join("status")
    }
    /// `archive/`
    pub fn archive(&self) -> PathBuf {
        self.root.join("archive")
    }
    /// `rejected/`
    pub fn rejected(&self) -> PathBuf {
        self.root.join("rejected")
    }
    /// `published/`
    pub fn published(&self) -> PathBuf {
        self.root.join("published")
    }
    /// `status/<id>.json`
    pub fn status_file(&self, id: &RequestId) -> PathBuf {
        self.status().join(format!("{id}.json"))
    }
    /// `issued/<id>.crt`
    pub fn cert_file(&self, id: &RequestId) -> PathBuf {
        self.issued().join(format!("{id}.crt"))
    }
    /// `.lock`
    pub fn lock_file(&self) -> PathBuf {
        self.root.join(".lock")
    }
}

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
