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

/// Refuses two flags naming the same file, however they are spelled (`./y.pem` and `y.pem`,
/// a path through `..`, a hard link): the same name in the same directory (by device and
/// inode), or the same existing file.
pub fn check_distinct(a: &Path, b: &Path) -> Result<(), ClientError> {
    let same_name_same_dir = a.file_name() == b.file_name() && same_file(parent(a), parent(b));
    if a == b || same_name_same_dir || same_file(a, b) {
        return Err(ClientError::BadInput(format!(
            "the certificate and the key cannot both be written to {}",
            a.display()
        )));
    }
    Ok(())
}

/// Writes all files or none (see the module doc). `replace[i]` allows replacing file `i`; a
/// replaced file is kept aside (hard-linked under a dot name) until every file is in place,
/// so that a failure puts back exactly what was there.
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
    // (target, the old file kept aside if it replaced one)
    let mut placed: Vec<(&Path, Option<PathBuf>)> = Vec::with_capacity(files.len());
    for (i, (file, tmp)) in files.iter().zip(&temps).enumerate() {
        let result = if replace.get(i).copied().unwrap_or(false) {
            keep_aside(file.path).and_then(|backup| match fs::rename(tmp, file.path) {
                Ok(()) => Ok(backup),
                Err(e) => {
                    if let Some(b) = &backup {
                        let _ = fs::remove_file(b);
                    }
                    Err(e)
                }
            })
        } else {
            // link(2) refuses to replace a file that appeared since the check.
            fs::hard_link(tmp, file.path)
                .and_then(|()| fs::remove_file(tmp))
                .map(|()| None)
        };
        match result {
            Ok(backup) => placed.push((file.path, backup)),
            Err(source) => {
                roll_back(&placed);
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
        }
    }
    let backups: Vec<PathBuf> = placed.into_iter().filter_map(|(_, b)| b).collect();
    remove_all(&backups);
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

/// Hard-links an existing regular file at `path` to a dot name beside it; `None` when there
/// is nothing there.
fn keep_aside(path: &Path) -> io::Result<Option<PathBuf>> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let mut suffix = [0u8; 6];
            openssl::rand::rand_bytes(&mut suffix).map_err(io::Error::other)?;
            let backup =
                parent(path).join(format!(".{name}.{}.old", crate::fsx::hex::encode(suffix)));
            fs::hard_link(path, &backup)?;
            Ok(Some(backup))
        }
        Ok(_) | Err(_) => Ok(None),
    }
}

/// Undoes placed files: each replaced file comes back, each new one goes.
fn roll_back(placed: &[(&Path, Option<PathBuf>)]) {
    for (path, backup) in placed.iter().rev() {
        match backup {
            Some(b) => {
                let _ = fs::rename(b, path);
            }
            None => {
                let _ = fs::remove_file(path);
            }
        }
    }
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

    /// Issue 16: `--out ./y.pem --keyout y.pem` named one file in two spellings.
    #[test]
    fn issue_16_the_same_file_is_found_however_it_is_spelled() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let plain = dir.path().join("y.pem");
        let dotted = dir.path().join(".").join("y.pem");
        let around = dir.path().join("sub").join("..").join("y.pem");
        assert!(check_distinct(&dotted, &plain).is_err());
        assert!(check_distinct(&around, &plain).is_err());
        fs::write(&plain, b"x").unwrap();
        let linked = dir.path().join("sub").join("z.pem");
        fs::hard_link(&plain, &linked).unwrap();
        assert!(check_distinct(&linked, &plain).is_err());
        assert!(check_distinct(&dir.path().join("a.pem"), &plain).is_ok());
    }

    /// Issue 16: with --force, a failed second move must put the first file back as it was.
    #[test]
    fn issue_16_a_failed_replacement_restores_what_it_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let crt = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        fs::write(&crt, b"old cert").unwrap();
        // A non-empty directory where the key goes: rename(2) onto it fails.
        fs::create_dir(&key).unwrap();
        fs::write(key.join("x"), b"").unwrap();
        let files = [
            OutFile {
                path: &crt,
                bytes: b"new cert",
                mode: 0o644,
            },
            OutFile {
                path: &key,
                bytes: b"new key",
                mode: 0o600,
            },
        ];
        assert!(write_all(&files, &[true, true]).is_err());
        assert_eq!(
            fs::read(&crt).unwrap(),
            b"old cert",
            "the old certificate is back"
        );
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["server.crt", "server.key"],
            "no temps or backups left"
        );

        // And a successful replacement leaves no backup behind.
        fs::remove_dir_all(&key).unwrap();
        fs::write(&key, b"old key").unwrap();
        write_all(&files, &[true, true]).unwrap();
        assert_eq!(fs::read(&crt).unwrap(), b"new cert");
        assert_eq!(fs::read(&key).unwrap(), b"new key");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
