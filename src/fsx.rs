//! Durable, atomic file operations: every file the project publishes is written to a temp file
//! in the same directory, flushed, renamed into place and the directory flushed (DESIGN §2).
//!
//! Also the careful reader used on untrusted spool input: it never follows a symlink, never
//! blocks on a FIFO and never reads more than a limit; [`Dir`], a directory handle through
//! which every spool operation goes relative to a descriptor opened without following links
//! (DESIGN §9); and [`read_secret`], the one reader of passphrase, PIN and token files.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};

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
    loose_mode_error(path, meta.mode(), meta.is_dir(), allow_loose).map_or(Ok(()), Err)
}

/// Reads a secret file (a passphrase, PIN or token) after checking, on the opened file, that
/// neither group nor others may read or write it: the one check every secret file passes
/// (DESIGN §9), like key files. `allow_loose` is `--allow-loose-permissions`. At most `limit`
/// bytes are read; the buffer is wiped when dropped.
pub fn read_secret(
    path: &Path,
    allow_loose: bool,
    limit: u64,
) -> io::Result<zeroize::Zeroizing<Vec<u8>>> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    loose_mode_error(path, meta.mode(), false, allow_loose).map_or(Ok(()), Err)?;
    if meta.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is over {limit} bytes: it should hold one secret",
                path.display()
            ),
        ));
    }
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}

/// [`read_secret`] without the line ending: passphrase, PIN and token files may end in a
/// newline (CRLF too), which is not part of the secret (DESIGN §6).
pub fn read_secret_line(
    path: &Path,
    allow_loose: bool,
    limit: u64,
) -> io::Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut secret = read_secret(path, allow_loose, limit)?;
    while matches!(secret.last(), Some(b'\n' | b'\r')) {
        secret.pop();
    }
    Ok(secret)
}

/// Whether an error from [`read_secret`] or [`check_private_mode`] is the refusal of a mode
/// looser than 0600/0700 (not an OS error such as EACCES).
pub fn is_loose_mode(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied && e.raw_os_error().is_none()
}

/// The error for a secret file or directory whose mode lets group or others in, unless
/// `allow_loose`.
fn loose_mode_error(path: &Path, mode: u32, dir: bool, allow_loose: bool) -> Option<io::Error> {
    let mode = mode & 0o777;
    let limit = if dir { 0o700 } else { 0o600 };
    if mode & !limit == 0 || allow_loose {
        return None;
    }
    Some(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} has mode {mode:04o}, looser than {limit:04o}: run `chmod {limit:o} {}` \
             (or pass --allow-loose-permissions on a filesystem without modes)",
            path.display(),
            path.display()
        ),
    ))
}

/// A directory opened without following a symbolic link. Every operation is relative to the
/// descriptor (`openat`, `renameat2`, `unlinkat`, `fstatat`) with names of one component, so
/// nothing is ever reached through a link, and a directory renamed or swapped for a link
/// after it was opened is still the same directory here (see [`Dir::still_at`]).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    id: (u64, u64),
}

/// What `fstatat` (without following links) says about one name in a [`Dir`].
#[derive(Debug, Clone, Copy)]
pub struct EntryStat {
    /// Regular file.
    pub regular: bool,
    /// Directory.
    pub dir: bool,
    /// Hard links.
    pub links: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds within the second.
    pub mtime_nsec: i64,
    /// Device and inode.
    pub id: (u64, u64),
    /// Owner.
    pub uid: u32,
}

impl Dir {
    /// Opens `path` as a directory; its last component must not be a symbolic link (earlier
    /// components are the operator's choice and are followed).
    pub fn open(path: &Path) -> io::Result<Self> {
        let fd = nix::fcntl::open(path, dir_flags(), Mode::empty())
            .map_err(|e| open_error(path, e, "a directory"))?;
        Self::from_fd(fd, path.to_owned())
    }

    /// Opens the subdirectory `name` (one component, never a link: `openat2` with
    /// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where the kernel has it, else `O_NOFOLLOW`).
    pub fn open_dir(&self, name: &str) -> io::Result<Self> {
        let path = self.path.join(name);
        let fd =
            open_beneath(&self.fd, OsStr::new(name), dir_flags(), Mode::empty()).map_err(|e| {
                let errno = Errno::from_raw(e.raw_os_error().unwrap_or(0));
                open_error(&path, errno, "a directory")
            })?;
        Self::from_fd(fd, path)
    }

    /// Like [`Dir::open_dir`], creating the subdirectory with `mode` first when it is missing.
    pub fn ensure_dir(&self, name: &str, mode: u32) -> io::Result<Self> {
        match nix::sys::stat::mkdirat(&self.fd, name, Mode::from_bits_truncate(mode)) {
            Ok(()) => {
                let d = self.open_dir(name)?;
                nix::sys::stat::fchmod(&d.fd, Mode::from_bits_truncate(mode))
                    .map_err(io::Error::from)?;
                self.sync()?;
                Ok(d)
            }
            Err(Errno::EEXIST) => self.open_dir(name),
            Err(e) => Err(io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot create {}: {e}", self.path.join(name).display()),
            )),
        }
    }

    fn from_fd(fd: OwnedFd, path: PathBuf) -> io::Result<Self> {
        let st = nix::sys::stat::fstat(&fd).map_err(io::Error::from)?;
        Ok(Self {
            fd,
            path,
            id: (st.st_dev, st.st_ino),
        })
    }

    /// The path it was opened by (for messages; never used to reach it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Device and inode.
    pub fn id(&self) -> (u64, u64) {
        self.id
    }

    /// Whether `path` (its last component not followed) is still this directory.
    pub fn still_at_path(&self, path: &Path) -> bool {
        fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() && (m.dev(), m.ino()) == self.id)
    }

    /// `fstatat` of a name, not following a link.
    pub fn stat(&self, name: &OsStr) -> io::Result<EntryStat> {
        check_name(name)?;
        let st = nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(io::Error::from)?;
        Ok(entry_stat(&st))
    }

    /// Whether a name exists (of any type).
    pub fn exists(&self, name: &OsStr) -> bool {
        self.stat(name).is_ok()
    }

    /// Every name in the directory but `.` and `..`, each with its `fstatat` (`None` when the
    /// entry vanished meanwhile).
    pub fn entries(&self) -> io::Result<Vec<(OsString, Option<EntryStat>)>> {
        // A fresh open of "." has its own read position, so scans never share one.
        let mut d = nix::dir::Dir::openat(&self.fd, ".", dir_flags(), Mode::empty())
            .map_err(io::Error::from)?;
        let mut out = Vec::new();
        for e in d.iter() {
            let e = e.map_err(io::Error::from)?;
            let name = OsStr::from_bytes(e.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            out.push((name.to_owned(), self.stat(name).ok()));
        }
        Ok(out)
    }

    /// Opens a file for reading without following a link and without blocking on a FIFO.
    pub fn open_read(&self, name: &OsStr) -> io::Result<File> {
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        Ok(File::from(open_beneath(
            &self.fd,
            name,
            flags,
            Mode::empty(),
        )?))
    }

    /// Reads an untrusted file: never through a link, never blocking on a FIFO, never past
    /// `limit` bytes, and checked on the opened file (a regular file with one link).
    pub fn read_untrusted(&self, name: &OsStr, limit: u64) -> io::Result<Untrusted> {
        let st = self.stat(name)?;
        if !st.regular {
            return Ok(Untrusted::NotRegular(self.kind_of(name)));
        }
        let file = match self.open_read(name) {
            Ok(f) => f,
            // ELOOP: it became a link between the stat and the open.
            Err(e) if e.raw_os_error() == Some(Errno::ELOOP as i32) => {
                return Ok(Untrusted::NotRegular("a symbolic link"))
            }
            Err(e) => return Err(e),
        };
        read_opened(file, limit)
    }

    /// Reads a small file the daemon wrote (a status record): `None` when it is missing, not
    /// a regular file, or over `limit`.
    pub fn read_small(&self, name: &OsStr, limit: u64) -> Option<Vec<u8>> {
        match self.read_untrusted(name, limit) {
            Ok(Untrusted::Content(c)) => Some(c),
            _ => None,
        }
    }

    fn kind_of(&self, name: &OsStr) -> &'static str {
        let Ok(st) = nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            return "gone";
        };
        describe_mode(st.st_mode)
    }

    /// Writes a temp file for `name` (a dot name ending in `.tmp`, ignored by every reader),
    /// optionally flushed, and returns its name. The caller renames it into place.
    pub fn write_temp(
        &self,
        name: &OsStr,
        bytes: &[u8],
        mode: u32,
        sync: bool,
    ) -> io::Result<OsString> {
        check_name(name)?;
        let mut suffix = [0u8; 6];
        openssl::rand::rand_bytes(&mut suffix).map_err(io::Error::other)?;
        let tmp = OsString::from(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            hex::encode(suffix)
        ));
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
        let fd = open_beneath(&self.fd, &tmp, flags, Mode::from_bits_truncate(mode))?;
        let mut file = File::from(fd);
        let result = (|| {
            file.set_permissions(fs::Permissions::from_mode(mode))?;
            file.write_all(bytes)?;
            if sync {
                file.sync_all()?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = self.remove(&tmp);
            return Err(e);
        }
        Ok(tmp)
    }

    /// Renames `from` over `to` within this directory (replacing a file there; a link there is
    /// replaced, never followed).
    pub fn replace(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        nix::fcntl::renameat(&self.fd, from, &self.fd, to).map_err(io::Error::from)
    }

    /// Writes `name` atomically and durably: temp file, flush, rename, directory flush.
    pub fn write_atomic(&self, name: &OsStr, bytes: &[u8], mode: u32) -> io::Result<()> {
        let tmp = self.write_temp(name, bytes, mode, true)?;
        if let Err(e) = self.replace(&tmp, name) {
            let _ = self.remove(&tmp);
            return Err(e);
        }
        self.sync()
    }

    /// Atomically moves `name` to `to`/`to_name` unless that name is taken. `Ok(false)` when
    /// `name` is gone (someone else moved it) or `to_name` exists.
    pub fn move_to(&self, name: &OsStr, to: &Self, to_name: &OsStr) -> io::Result<bool> {
        use nix::fcntl::{renameat2, RenameFlags};
        check_name(name)?;
        check_name(to_name)?;
        match renameat2(
            &self.fd,
            name,
            &to.fd,
            to_name,
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT | Errno::EEXIST) => Ok(false),
            // Filesystems without RENAME_NOREPLACE: check, then rename (a narrow race that only
            // another signer of the same spool could lose, and the spool lock rules that out).
            Err(Errno::EINVAL) => {
                if to.exists(to_name) {
                    return Ok(false);
                }
                match nix::fcntl::renameat(&self.fd, name, &to.fd, to_name) {
                    Ok(()) => Ok(true),
                    Err(Errno::ENOENT) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Moves `name` to `to`/`to_name`, replacing a file there (a link there is replaced,
    /// never followed).
    pub fn move_replacing(&self, name: &OsStr, to: &Self, to_name: &OsStr) -> io::Result<()> {
        check_name(name)?;
        check_name(to_name)?;
        nix::fcntl::renameat(&self.fd, name, &to.fd, to_name).map_err(io::Error::from)
    }

    /// Removes a file (never a directory).
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        check_name(name)?;
        nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(io::Error::from)
    }

    /// Flushes the directory so that renames and creations in it survive a crash.
    pub fn sync(&self) -> io::Result<()> {
        nix::unistd::fsync(&self.fd).map_err(io::Error::from)
    }

    /// Flushes the whole filesystem holding the directory (`syncfs(2)`).
    pub fn sync_filesystem(&self) -> io::Result<()> {
        nix::unistd::syncfs(&self.fd).map_err(io::Error::from)
    }

    /// Opens (creating with mode 0600 when missing) a file for reading and writing, never
    /// through a link and never blocking; the caller checks what it opened.
    pub fn open_lock_file(&self, name: &OsStr) -> io::Result<File> {
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        Ok(File::from(open_beneath(
            &self.fd,
            name,
            flags,
            Mode::from_bits_truncate(0o600),
        )?))
    }
}

/// What [`Dir::read_untrusted`] calls a regular file with more than one name.
pub const HARD_LINK: &str = "a hard link to another file";

/// Reads an opened untrusted file: a regular file with one link, at most `limit` bytes.
fn read_opened(file: File, limit: u64) -> io::Result<Untrusted> {
    let st = nix::sys::stat::fstat(&file).map_err(io::Error::from)?;
    let kind = describe_mode(st.st_mode);
    if kind != "a regular file" {
        return Ok(Untrusted::NotRegular(kind));
    }
    if st.st_nlink > 1 {
        return Ok(Untrusted::NotRegular(HARD_LINK));
    }
    let len = st.st_size as u64;
    if len > limit {
        return Ok(Untrusted::TooLarge(len));
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Ok(Untrusted::TooLarge(buf.len() as u64));
    }
    Ok(Untrusted::Content(buf))
}

fn entry_stat(st: &nix::sys::stat::FileStat) -> EntryStat {
    let fmt = st.st_mode & SFlag::S_IFMT.bits();
    EntryStat {
        regular: fmt == SFlag::S_IFREG.bits(),
        dir: fmt == SFlag::S_IFDIR.bits(),
        links: st.st_nlink,
        size: st.st_size as u64,
        mtime: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec,
        id: (st.st_dev, st.st_ino),
        uid: st.st_uid,
    }
}

fn describe_mode(mode: u32) -> &'static str {
    let fmt = mode & SFlag::S_IFMT.bits();
    if fmt == SFlag::S_IFREG.bits() {
        "a regular file"
    } else if fmt == SFlag::S_IFLNK.bits() {
        "a symbolic link"
    } else if fmt == SFlag::S_IFDIR.bits() {
        "a directory"
    } else if fmt == SFlag::S_IFIFO.bits() {
        "a FIFO"
    } else if fmt == SFlag::S_IFSOCK.bits() {
        "a socket"
    } else {
        "a device file"
    }
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// `openat2(dir, name, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, or
/// `openat` with `O_NOFOLLOW` on kernels without `openat2` (before 5.6) or where a sandbox
/// refuses it. `name` is one component, so the two are equivalent; `openat2` states it.
fn open_beneath(dir: &OwnedFd, name: &OsStr, flags: OFlag, mode: Mode) -> io::Result<OwnedFd> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static NO_OPENAT2: AtomicBool = AtomicBool::new(false);
    check_name(name)?;
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        use nix::fcntl::{OpenHow, ResolveFlag};
        let mut how = OpenHow::new().flags(flags).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
        if flags.contains(OFlag::O_CREAT) {
            how = how.mode(mode);
        }
        match nix::fcntl::openat2(dir, name, how) {
            Err(Errno::ENOSYS | Errno::EPERM) => NO_OPENAT2.store(true, Ordering::Relaxed),
            other => return other.map_err(io::Error::from),
        }
    }
    nix::fcntl::openat(dir, name, flags, mode).map_err(io::Error::from)
}

/// Refuses names that are not exactly one component.
fn check_name(name: &OsStr) -> io::Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{:?} is not a single file name", name.to_string_lossy()),
        ));
    }
    Ok(())
}

/// The error of an open refused because the path is a link or of the wrong type
/// (`ErrorKind::NotADirectory`, the message naming the path and what it is), else the OS error.
fn open_error(path: &Path, e: Errno, wanted: &str) -> io::Error {
    let link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    match e {
        Errno::ELOOP | Errno::ENOTDIR if link => io::Error::new(
            io::ErrorKind::NotADirectory,
            format!(
                "{} is a symbolic link: it must be {wanted}, never a link (DESIGN §9)",
                path.display()
            ),
        ),
        Errno::ELOOP | Errno::ENOTDIR => io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not {wanted}", path.display()),
        ),
        e => io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot open {}: {e}", path.display()),
        ),
    }
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
    fn dir_handles_never_follow_links() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = Dir::open(&link).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotADirectory);
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let root = Dir::open(tmp.path()).unwrap();
        assert!(root.open_dir("link").is_err());
        assert!(root.ensure_dir("link", 0o755).is_err());
        assert!(
            fs::read_dir(&real).unwrap().next().is_none(),
            "created through the link"
        );
        // Files: no write through a link, no read through one, no names with a slash.
        let secret = tmp.path().join("secret");
        fs::write(&secret, b"key").unwrap();
        std::os::unix::fs::symlink(&secret, real.join("f")).unwrap();
        let d = root.open_dir("real").unwrap();
        assert!(d.open_lock_file(OsStr::new("f")).is_err());
        assert!(matches!(
            d.read_untrusted(OsStr::new("f"), 100).unwrap(),
            Untrusted::NotRegular("a symbolic link")
        ));
        d.write_atomic(OsStr::new("f"), b"new", MODE_PUBLIC)
            .unwrap();
        assert_eq!(
            fs::read(&secret).unwrap(),
            b"key",
            "written through the link"
        );
        assert_eq!(fs::read(real.join("f")).unwrap(), b"new");
        assert!(d.stat(OsStr::new("../secret")).is_err());
        // A hard link is not read; moves never replace.
        fs::hard_link(&secret, real.join("h")).unwrap();
        assert!(matches!(
            d.read_untrusted(OsStr::new("h"), 100).unwrap(),
            Untrusted::NotRegular(HARD_LINK)
        ));
        assert!(!d.move_to(OsStr::new("h"), &d, OsStr::new("f")).unwrap());
        assert!(d.move_to(OsStr::new("h"), &d, OsStr::new("g")).unwrap());
        // The handle stays on the directory it opened when the name is swapped for a link.
        fs::rename(&real, tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), &real).unwrap();
        assert!(!d.still_at_path(&real));
        d.write_atomic(OsStr::new("after"), b"x", MODE_PUBLIC)
            .unwrap();
        assert!(tmp.path().join("moved/after").exists());
        assert!(!tmp.path().join("after").exists());
    }

    #[test]
    fn secrets_looser_than_0600_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("pass");
        fs::write(&p, b"secret\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_secret(&p, false, 100).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        assert_eq!(&read_secret(&p, true, 100).unwrap()[..], b"secret\n");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(&read_secret(&p, false, 100).unwrap()[..], b"secret\n");
        assert!(read_secret(&p, false, 3).is_err());
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex::encode([0x01, 0xab]), "01ab");
        assert_eq!(hex::decode("01AB").unwrap(), vec![0x01, 0xab]);
        assert!(hex::decode("0").is_none());
        assert!(hex::decode("zz").is_none());
    }
}
