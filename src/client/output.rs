//! Writing the client's files (certificate + key, or CSR + key) as a pair that is never
//! half-written: every file goes to a fsynced temp beside its target first, and only when
//! all temps exist are they moved into place, one after the other; on any failure whatever
//! was created is removed again.
//!
//! Without `--force` nothing is replaced: targets are checked before any work and placed with
//! `link(2)`, which fails instead of replacing a file that appeared in the meantime.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::ClientError;

/// One file to write.
#[derive(Clone, Copy, Debug)]
pub struct OutFile<'a> {
    /// Where it goes.
    pub path: &'a Path,
    /// Its content.
    pub bytes: &'a [u8],
    /// Its mode (`fsx::MODE_SECRET` for keys).
    pub mode: u32,
}

/// Refuses, before any work, a target that exists (unless `replace`), that is a directory, or
/// whose directory is missing. `flag` names the option for the message (`--out`).
pub fn check_target(path: &Path, flag: &str, replace: bool) -> Result<(), ClientError> {
    let dir = parent(path);
    if !dir.is_dir() {
        return Err(ClientError::BadInput(format!(
            "the directory {} for {flag} {} does not exist: create it or choose another {flag}",
            dir.display(),
            path.display()
        )));
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(ClientError::BadInput(format!(
            "{flag} {} is a directory: name a file",
            path.display()
        ))),
        Ok(_) if !replace => Err(ClientError::BadInput(format!(
            "{} already exists: pass --force to replace it, or choose another {flag}",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// Refuses two flags naming the same file.
pub fn check_distinct(a: &Path, b: &Path) -> Result<(), ClientError> {
    if a == b || (a.exists() && same_file(a, b)) {
        return Err(ClientError::BadInput(format!(
            "the certificate and the key cannot both be written to {}",
            a.display()
        )));
    }
    Ok(())
}

/// Writes all files or none (see the module doc). `replace[i]` allows replacing file `i`.
pub fn write_all(files: &[OutFile<'_>], replace: &[bool]) -> Result<(), ClientError> {
    let mut temps: Vec<PathBuf> = Vec::with_capacity(files.len());
    for file in files {
        match crate::fsx::write_temp(file.path, file.bytes, file.mode, true) {
            Ok(tmp) => temps.push(tmp),
            Err(source) => {
                remove_all(&temps);
                return Err(ClientError::Io {
                    what: "cannot write",
                    path: file.path.to_path_buf(),
                    source,
                });
            }
        }
    }
    let mut placed: Vec<&Path> = Vec::with_capacity(files.len());
    for (i, (file, tmp)) in files.iter().zip(&temps).enumerate() {
        let result = if replace.get(i).copied().unwrap_or(false) {
            fs::rename(tmp, file.path)
        } else {
            // link(2) refuses to replace a file that appeared since the check.
            fs::hard_link(tmp, file.path).and_then(|()| fs::remove_file(tmp))
        };
        if let Err(source) = result {
            for p in &placed {
                let _ = fs::remove_file(p);
            }
            remove_all(&temps[i..]);
            let what = if source.kind() == io::ErrorKind::AlreadyExists {
                "refusing to replace, it appeared meanwhile:"
            } else {
                "cannot move into place"
            };
            return Err(ClientError::Io {
                what,
                path: file.path.to_path_buf(),
                source,
            });
        }
        placed.push(file.path);
    }
    let mut dirs: Vec<&Path> = files.iter().map(|f| parent(f.path)).collect();
    dirs.dedup();
    for dir in dirs {
        crate::fsx::sync_dir(dir).map_err(|source| ClientError::Io {
            what: "cannot flush the directory",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

fn remove_all(paths: &[PathBuf]) {
    for p in paths {
        let _ = fs::remove_file(p);
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (STYLE §17).
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn writes_the_pair_with_modes_and_no_temps() {
        let dir = tempfile::tempdir().unwrap();
        let crt = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        let files = [
            OutFile {
                path: &crt,
                bytes: b"cert",
                mode: 0o644,
            },
            OutFile {
                path: &key,
                bytes: b"key",
                mode: 0o600,
            },
        ];
        write_all(&files, &[false, false]).unwrap();
        assert_eq!(fs::read(&crt).unwrap(), b"cert");
        assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_file_that_appears_meanwhile_undoes_the_pair() {
        let dir = tempfile::tempdir().unwrap();
        let crt = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        fs::write(&key, b"someone else's").unwrap();
        let files = [
            OutFile {
                path: &crt,
                bytes: b"cert",
                mode: 0o644,
            },
            OutFile {
                path: &key,
                bytes: b"key",
                mode: 0o600,
            },
        ];
        assert!(write_all(&files, &[false, false]).is_err());
        assert!(
            !crt.exists(),
            "the certificate placed first is removed again"
        );
        assert_eq!(fs::read(&key).unwrap(), b"someone else's");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temps left"
        );
    }

    #[test]
    fn targets_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        assert!(check_target(&f, "--out", false).is_ok());
        fs::write(&f, b"").unwrap();
        assert!(check_target(&f, "--out", false).is_err());
        assert!(check_target(&f, "--out", true).is_ok());
        assert!(check_target(&dir.path().join("missing/x"), "--out", true).is_err());
        assert!(check_target(dir.path(), "--out", true).is_err());
        assert!(check_distinct(&f, &f).is_err());
    }
}
