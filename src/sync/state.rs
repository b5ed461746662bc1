//! Sync's own durable memory, under `<spool>/.sync/` (a dot name: the daemon and every spool
//! reader ignore it), so that a restarted bridge neither delivers a request twice nor forgets
//! to push a result:
//!
//! ```text
//! .sync/delivered/<id>              envelope of <id> is durable in incoming/ (empty file)
//! .sync/delivered/<id>.revoke       incoming/<id>.revoke.json is durable
//! .sync/pushed/<id>.revoke.<status> revocation record of <id> accepted by the API
//! .sync/pushed/<id>.<status>        status record of <id> with this status was accepted by
//!                                   the API (empty file; pending, approved, denied)
//! .sync/published/<name>.sha256     SHA-256 (hex) of the published/<name> last uploaded
//! ```
//!
//! Markers are written only after what they record is durable (the envelope fsynced, the
//! API's answer received), so a crash loses at most a marker, and the step it records is then
//! repeated; every step is idempotent, so repeating it is harmless. A marker is an empty file
//! created in place: its existence is the whole record, so there is nothing to half-write.
//! One directory flush covers a batch of markers.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::fsx;
use crate::request::{RequestId, Status};

/// The `.sync/` directory of a spool.
#[derive(Clone, Debug)]
pub struct SyncState {
    root: PathBuf,
}

impl SyncState {
    /// Opens (creating when missing) `<spool>/.sync/` and its subdirectories, mode 0700.
    pub fn open(spool: &Path) -> io::Result<Self> {
        let root = spool.join(STATE_DIR);
        for dir in [DELIVERED, PUSHED, PUBLISHED] {
            fsx::ensure_dir(&root.join(dir), fsx::MODE_PRIVATE_DIR)?;
        }
        Ok(Self { root })
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the envelope of `id` was already delivered into `incoming/`.
    pub fn is_delivered(&self, id: &RequestId) -> bool {
        self.root.join(DELIVERED).join(id.as_str()).exists()
    }

    /// Records that these envelopes are durable in `incoming/`.
    pub fn mark_delivered<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a RequestId>,
    ) -> io::Result<()> {
        let dir = self.root.join(DELIVERED);
        touch_all(&dir, ids.into_iter().map(|id| id.as_str().to_owned()))
    }

    /// Whether the revocation request `id` was already delivered as `<id>.revoke.json`.
    pub fn is_revocation_delivered(&self, id: &RequestId) -> bool {
        self.root
            .join(DELIVERED)
            .join(format!("{id}.revoke"))
            .exists()
    }

    /// Records that these revocation requests are durable in `incoming/`.
    pub fn mark_revocations_delivered<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a RequestId>,
    ) -> io::Result<()> {
        let dir = self.root.join(DELIVERED);
        touch_all(&dir, ids.into_iter().map(|id| format!("{id}.revoke")))
    }

    /// Whether the revocation record of `id` with `status` (`pending`, `revoked`, `denied`)
    /// was already accepted by the API.
    pub fn is_revocation_pushed(&self, id: &RequestId, status: &str) -> bool {
        self.root
            .join(PUSHED)
            .join(format!("{id}.revoke.{status}"))
            .exists()
    }

    /// Records that the API accepted these revocation records.
    pub fn mark_revocations_pushed<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a RequestId, &'a str)>,
    ) -> io::Result<()> {
        let dir = self.root.join(PUSHED);
        touch_all(
            &dir,
            records
                .into_iter()
                .map(|(id, s)| format!("{id}.revoke.{s}")),
        )
    }

    /// Whether the status record of `id` with `status` was already accepted by the API.
    pub fn is_pushed(&self, id: &RequestId, status: Status) -> bool {
        self.root
            .join(PUSHED)
            .join(pushed_name(id, status))
            .exists()
    }

    /// Records that the API accepted these (id, status) records.
    pub fn mark_pushed<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a RequestId, Status)>,
    ) -> io::Result<()> {
        let dir = self.root.join(PUSHED);
        touch_all(&dir, records.into_iter().map(|(id, s)| pushed_name(id, s)))
    }

    /// The hash of `published/<name>` as last uploaded.
    pub fn published_hash(&self, name: &str) -> Option<String> {
        let text = fs::read_to_string(self.hash_path(name)).ok()?;
        Some(text.trim().to_owned())
    }

    /// Records the hash of `published/<name>` just uploaded.
    pub fn set_published_hash(&self, name: &str, hash: &str) -> io::Result<()> {
        fsx::write_atomic(
            &self.hash_path(name),
            format!("{hash}\n").as_bytes(),
            fsx::MODE_PUBLIC,
        )
    }

    fn hash_path(&self, name: &str) -> PathBuf {
        self.root.join(PUBLISHED).join(format!("{name}.sha256"))
    }
}

fn pushed_name(id: &RequestId, status: Status) -> String {
    // Ids never contain a dot, so `<id>.<status>` cannot collide.
    format!("{id}.{}", status.as_str())
}

fn touch_all(dir: &Path, names: impl Iterator<Item = String>) -> io::Result<()> {
    let mut any = false;
    for name in names {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(name))?;
        any = true;
    }
    if any {
        fsx::sync_dir(dir)?;
    }
    Ok(())
}

const STATE_DIR: &str = ".sync";
const DELIVERED: &str = "delivered";
const PUSHED: &str = "pushed";
const PUBLISHED: &str = "published";

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (STYLE §17).
mod tests {
    use super::*;

    fn id(s: &str) -> RequestId {
        RequestId::parse(s).unwrap()
    }

    #[test]
    fn markers_survive_a_reopen() {
        let spool = tempfile::tempdir().unwrap();
        let state = SyncState::open(spool.path()).unwrap();
        assert!(!state.is_delivered(&id("a1")));
        state.mark_delivered([&id("a1"), &id("b2")]).unwrap();
        state.mark_pushed([(&id("a1"), Status::Pending)]).unwrap();
        state.set_published_hash("ca.crl", "abcd").unwrap();

        let state = SyncState::open(spool.path()).unwrap();
        assert!(state.is_delivered(&id("a1")) && state.is_delivered(&id("b2")));
        assert!(!state.is_delivered(&id("c3")));
        assert!(state.is_pushed(&id("a1"), Status::Pending));
        // A pending record that later becomes approved is pushed again.
        assert!(!state.is_pushed(&id("a1"), Status::Approved));
        assert_eq!(state.published_hash("ca.crl").as_deref(), Some("abcd"));
        assert_eq!(state.published_hash("ca.crt"), None);
        // Marking twice is harmless.
        state.mark_delivered([&id("a1")]).unwrap();
    }

    #[test]
    fn the_state_dir_is_private_and_hidden() {
        use std::os::unix::fs::MetadataExt;
        let spool = tempfile::tempdir().unwrap();
        let state = SyncState::open(spool.path()).unwrap();
        let name = state
            .root()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with('.'), "spool readers ignore dot names");
        let mode = fs::metadata(state.root().join(DELIVERED)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
