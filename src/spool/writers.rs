//! Whether a file in `incoming/` is still open for writing (DESIGN §2: a file written in place
//! is taken once it is closed, however long its writer pauses).
//!
//! Files announced by inotify's close-after-write or rename events are complete. A file found
//! by a rescan instead (at start, after an overflow, on a network filesystem) may still be
//! being written: before it is claimed, [`Writers::scan`] looks through `/proc/<pid>/fd` for a
//! descriptor on the same inode opened for writing (`/proc/<pid>/fdinfo`'s `flags`), as
//! `fuser` does. A file with such a writer is left for later.
//!
//! DESIGN §2 names `F_SETLEASE` as the way to tell; neither `nix` nor `rustix` wraps it and the
//! crate forbids `unsafe`, so `/proc` is used. Both see the same: a read lease is granted only
//! to the file's owner (or with `CAP_LEASE`), and `/proc/<pid>/fd` shows only the processes of
//! the daemon's own user (all of them to root). Where the writers cannot be seen — `/proc` is
//! missing, or the file's owner runs processes whose descriptors the daemon may not read (for
//! a daemon that is not root: another user's files) — the fallback is documented and plain: the
//! file is taken once it has not been modified for [`FALLBACK_QUIET`].

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use crate::fsx::EntryStat;

/// Without a view of the writers, how long a file must be unmodified before it is taken.
pub const FALLBACK_QUIET: Duration = Duration::from_secs(30);

/// What is known about the writers of a set of files.
#[derive(Debug, Default)]
pub struct Writers {
    /// Inodes (device, inode) some process holds open for writing.
    busy: HashSet<(u64, u64)>,
    /// Users some of whose processes' descriptors could not be read.
    hidden: HashSet<u32>,
    /// Whether `/proc` could be read at all.
    seen: bool,
}

/// Whether a file may be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No process holds it open for writing.
    Closed,
    /// A process holds it open for writing: leave it.
    Open,
    /// Its writers cannot be seen and it changed within [`FALLBACK_QUIET`]: leave it.
    Unknown,
}

impl Writers {
    /// Looks for descriptors open for writing on any of `files` (device, inode).
    pub fn scan(files: &HashSet<(u64, u64)>) -> Self {
        let mut w = Self::default();
        if files.is_empty() {
            w.seen = true;
            return w;
        }
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return w;
        };
        w.seen = true;
        let me = std::process::id().to_string();
        for p in procs.flatten() {
            let pid = p.file_name();
            let Some(pid) = pid.to_str() else { continue };
            if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
                continue;
            }
            let base = p.path();
            let fds = match std::fs::read_dir(base.join("fd")) {
                Ok(fds) => fds,
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    if let Ok(m) = std::fs::metadata(&base) {
                        w.hidden.insert(m.uid());
                    }
                    continue;
                }
                // The process ended meanwhile.
                Err(_) => continue,
            };
            for fd in fds.flatten() {
                // The magic link leads to the open file itself.
                let Ok(m) = std::fs::metadata(fd.path()) else {
                    continue;
                };
                let id = (m.dev(), m.ino());
                if files.contains(&id) && opened_for_writing(&base, &fd.file_name()) {
                    w.busy.insert(id);
                }
            }
        }
        w
    }

    /// The verdict for one file, `now` in Unix seconds.
    pub fn verdict(&self, st: &EntryStat, now: i64) -> Verdict {
        if self.busy.contains(&st.id) {
            return Verdict::Open;
        }
        let visible = self.seen && !self.hidden.contains(&st.uid);
        if visible || now.saturating_sub(st.mtime) >= FALLBACK_QUIET.as_secs() as i64 {
            Verdict::Closed
        } else {
            Verdict::Unknown
        }
    }
}

/// Whether `/proc/<pid>/fdinfo/<fd>` says the descriptor was opened for writing. Unreadable
/// counts as writing: the file is left for later rather than taken early.
fn opened_for_writing(proc_dir: &std::path::Path, fd: &std::ffi::OsStr) -> bool {
    let Ok(info) = std::fs::read_to_string(proc_dir.join("fdinfo").join(fd)) else {
        return true;
    };
    info.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        // O_ACCMODE: O_RDONLY 0, O_WRONLY 1, O_RDWR 2.
        .is_none_or(|flags| flags & 0o3 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn stat_of(path: &std::path::Path) -> EntryStat {
        let m = std::fs::metadata(path).unwrap();
        EntryStat {
            regular: true,
            dir: false,
            links: m.nlink(),
            size: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            id: (m.dev(), m.ino()),
            uid: m.uid(),
        }
    }

    #[test]
    fn a_file_open_for_writing_in_another_process_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.csr");
        std::fs::write(&path, b"half").unwrap();
        // A child holds it open for appending; this process is skipped by the scan.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("exec 3>>\"$1\"; read x")
            .arg("sh")
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let st = stat_of(&path);
        let files: HashSet<_> = [st.id].into();
        let now = st.mtime;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while Writers::scan(&files).verdict(&st, now) != Verdict::Open {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer was never seen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child.stdin.take().unwrap().write_all(b"\n").unwrap();
        child.wait().unwrap();
        assert_eq!(Writers::scan(&files).verdict(&st, now), Verdict::Closed);
    }

    #[test]
    fn without_a_view_of_the_writers_a_quiet_period_decides() {
        let st = EntryStat {
            regular: true,
            dir: false,
            links: 1,
            size: 10,
            mtime: 1_000,
            mtime_nsec: 0,
            id: (1, 2),
            uid: 4242,
        };
        let blind = Writers {
            hidden: [4242].into(),
            seen: true,
            ..Writers::default()
        };
        assert_eq!(blind.verdict(&st, 1_010), Verdict::Unknown);
        assert_eq!(blind.verdict(&st, 1_030), Verdict::Closed);
        assert_eq!(Writers::default().verdict(&st, 1_010), Verdict::Unknown);
    }
}
