//! Durable, atomic file operations: every file the project publishes is written to a temp file
//! in the same directory, flushed, renamed into place and the directory flushed (DESIGN §2).
//!
//! Also the careful reader used on untrusted spool input: it never follows a symlink, never
//! blocks on a FIFO and never reads more than a limit.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of private keys, passphrase and token files.
pub const MODE_SECRET: u32 = 0o600;
/// Mode of certificates, status records and other published files.
pub const MODE_PUBLIC: u32 = 0o644;
/// Mode of the state directory.
pub const MODE_PRIVATE_DIR: u32 = 0o700;

/// Writes `bytes` to `dir/name` atomically and durably with the given mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = write_temp(path, bytes, mode, true)?;
    rename_into_place(&tmp, path)?;
    sync_dir(parent(path))
}

/// Like [`write_atomic`] but refuses to replace an existing file (`AlreadyExists`).
///
/// The temp file is renamed with `RENAME_NOREPLACE`, so a watcher of the directory sees one
/// rename (`IN_MOVED_TO`) of a complete file with a single link.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    let tmp = write_temp(path, bytes, mode, true)?;
    let placed = match renameat2(
        AT_FDCWD,
        &tmp,
        AT_FDCWD,
        path,
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        // Filesystems without RENAME_NOREPLACE: link(2) also fails with EEXIST.
        Err(nix::errno::Errno::EINVAL) => fs::hard_link(&tmp, path),
        Err(e) => Err(io::Error::from(e)),
    };
    let _ = fs::remove_file(&tmp);
    placed?;
    sync_dir(parent(path))
}

/// Writes a temp file beside `path` (a dot name ending in `.tmp`, ignored by every reader),
/// optionally fsynced, and returns its path. The caller renames it and syncs the directory;
/// batch writers use this to share one directory flush between many files.
pub fn write_temp(path: &Path, bytes: &[u8], mode: u32, sync: bool) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut suffix = [0u8; 6];
    openssl::rand::rand_bytes(&mut suffix).map_err(io::Error::other)?;
    let tmp = parent(path).join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        hex::encode(suffix)
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc_flags::O_NOFOLLOW)
        .open(&tmp)?;
    let result = (|| {
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        if sync {
            file.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Renames a temp file into place (replacing any file there).
pub fn rename_into_place(tmp: &Path, path: &Path) -> io::Result<()> {
    fs::rename(tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(tmp);
    })
}

/// Flushes a directory so that renames and creations in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes the whole filesystem holding `path` (`syncfs(2)`): one flush for a batch of files.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = File::open(path)?;
    nix::unistd::syncfs(&dir).map_err(io::Error::from)
}

/// Creates a directory (and parents) if missing, with `mode` on the last component when it
/// is created.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
}

/// What a careful read of an untrusted file found.
#[derive(Debug)]
pub enum Untrusted {
    /// The whole content, at most the limit.
    Content(Vec<u8>),
    /// The file is larger than the limit; nothing was kept.
    TooLarge(u64),
    /// Not a regular file (symlink, FIFO, directory, device, socket): described for a message.
    NotRegular(&'static str),
}

/// Reads a spool file without following a symlink, without blocking on a FIFO and without
/// reading past `limit` bytes.
pub fn read_untrusted(path: &Path, limit: u64) -> io::Result<Untrusted> {
    let meta = fs::symlink_metadata(path)?;
    if let Some(kind) = not_regular(&meta) {
        return Ok(Untrusted::NotRegular(kind));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags::O_NOFOLLOW | libc_flags::O_NONBLOCK)
        .open(path);
    let file = match file {
        Ok(f) => f,
        // ELOOP: it became a symlink between the lstat and the open.
        Err(e) if e.raw_os_error() == Some(libc_flags::ELOOP) => {
            return Ok(Untrusted::NotRegular("a symbolic link"))
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if let Some(kind) = not_regular(&meta) {
        return Ok(Untrusted::NotRegular(kind));
    }
    if meta.len() > limit {
        return Ok(Untrusted::TooLarge(meta.len()));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Ok(Untrusted::TooLarge(buf.len() as u64));
    }
    Ok(Untrusted::Content(buf))
}

/// Refuses a secret file (key, passphrase, token) readable or writable by group or others.
pub fn check_private_mode(path: &Path, allow_loose: bool) -> io::Result<()> {
    let meta = fs::metadata(path)?;
    let mode = meta.mode() & 0o777;
    let limit = if meta.is_dir() { 0o700 } else { 0o600 };
    if mode & !limit != 0 && !allow_loose {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} has mode {mode:04o}, looser than {limit:04o}: run `chmod {limit:o} {}` \
                 (or pass --allow-loose-permissions on a filesystem without modes)",
                path.display(),
                path.display()
            ),
        ));
    }
    Ok(())
}

fn not_regular(meta: &fs::Metadata) -> Option<&'static str> {
    let ft = meta.file_type();
    if ft.is_file() {
        None
    } else if ft.is_symlink() {
        Some("a symbolic link")
    } else if ft.is_dir() {
        Some("a directory")
    } else {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            Some("a FIFO")
        } else if ft.is_socket() {
            Some("a socket")
        } else {
            Some("a device file")
        }
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The few libc constants used with `OpenOptionsExt::custom_flags`.
mod libc_flags {
    pub(super) const O_NOFOLLOW: i32 = nix::fcntl::OFlag::O_NOFOLLOW.bits();
    pub(super) const O_NONBLOCK: i32 = nix::fcntl::OFlag::O_NONBLOCK.bits();
    pub(super) const ELOOP: i32 = nix::errno::Errno::ELOOP as i32;
}

/// Lower-case hex, the one encoding of hashes and serials in files.
pub mod hex {
    /// Encodes bytes as lower-case hex.
    pub fn encode(bytes: impl AsRef<[u8]>) -> String {
        use std::fmt::Write;
        let bytes = bytes.as_ref();
        let mut s = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// Decodes hex (either case); `None` on odd length or a non-hex digit.
    pub fn decode(s: &str) -> Option<Vec<u8>> {
        if !s.len().is_multiple_of(2) {
            return None;
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one", MODE_PUBLIC).unwrap();
        write_atomic(&p, b"two", MODE_SECRET).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn write_new_refuses_to_replace() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        write_new(&p, b"one", MODE_PUBLIC).unwrap();
        let e = write_new(&p, b"two", MODE_PUBLIC).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn untrusted_reads_refuse_links_fifos_and_big_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        fs::write(&target, b"12345").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            read_untrusted(&link, 100).unwrap(),
            Untrusted::NotRegular(_)
        ));
        let fifo = dir.path().join("f");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(
            read_untrusted(&fifo, 100).unwrap(),
            Untrusted::NotRegular(_)
        ));
        assert!(matches!(
            read_untrusted(&target, 4).unwrap(),
            Untrusted::TooLarge(5)
        ));
        assert!(
            matches!(read_untrusted(&target, 5).unwrap(), Untrusted::Content(c) if c == b"12345")
        );
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex::encode([0x01, 0xab]), "01ab");
        assert_eq!(hex::decode("01AB").unwrap(), vec![0x01, 0xab]);
        assert!(hex::decode("0").is_none());
        assert!(hex::decode("zz").is_none());
    }
}
