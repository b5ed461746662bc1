//! The outbound half of a round: status records from `status/` and the files in `published/`
//! go to the API, each only once (per (id, status), per content hash).
//!
//! `status/` is read with the care of any spool reader: dot names and `*.tmp` are skipped,
//! only regular files are read, never more than a limit. A [`Pusher`] remembers which files it
//! has seen unchanged so that a watching bridge does not re-read thousands of records on every
//! event; the durable markers in `.sync/` decide what was already pushed.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;

use tracing::{debug, info, warn};

use super::{Bridge, SyncError};
use crate::fsx::{self, Untrusted};
use crate::lifecycle::revocation::RevocationRecord;
use crate::request::{RequestId, StatusRecord};

/// What a push did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Records the API answered for.
    pub pushed: usize,
    /// Of those, records the API reported as conflicting with its own final state.
    pub conflicts: usize,
    /// Of those, records for ids the API does not know (requests dropped into the spool).
    pub unknown: usize,
    /// Records the API refused as not its pinned CA's: not marked pushed, tried again after
    /// a restart or when the file changes.
    pub rejected: usize,
}

/// Pushes status records, remembering the files it has already dealt with.
#[derive(Debug, Default)]
pub struct Pusher {
    seen: HashMap<RequestId, Stamp>,
    seen_revocations: HashMap<RequestId, Stamp>,
}

/// Identity of one version of a file: inode, size, mtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Pusher {
    /// Pushes every status record not yet pushed with its current status.
    pub fn push(&mut self, bridge: &Bridge) -> Result<PushReport, SyncError> {
        let dir = bridge.spool().join("status");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PushReport::default()),
            Err(source) => {
                return Err(SyncError::Spool {
                    what: "cannot read",
                    path: dir,
                    source,
                })
            }
        };
        let mut todo: Vec<(StatusRecord, Stamp)> = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || name.ends_with(".tmp") {
                continue;
            }
            // `<id>.revoke.json` does not parse as an id plus `.json`: revocation records are
            // pushed by `push_revocations`.
            let Some(id) = name
                .strip_suffix(".json")
                .and_then(|s| RequestId::parse(s).ok())
            else {
                continue;
            };
            // DirEntry::metadata does not follow symlinks.
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let stamp = Stamp {
                ino: meta.ino(),
                len: meta.len(),
                mtime: meta.mtime(),
                mtime_nsec: meta.mtime_nsec(),
            };
            if self.seen.get(&id) == Some(&stamp) {
                continue;
            }
            let path = entry.path();
            let record = match fsx::read_untrusted(&path, MAX_STATUS_BYTES) {
                Ok(Untrusted::Content(bytes)) => serde_json::from_slice::<StatusRecord>(&bytes)
                    .map_err(|e| format!("not a status record: {e}")),
                Ok(Untrusted::TooLarge(n)) => Err(format!("{n} bytes, too large")),
                Ok(Untrusted::NotRegular(kind)) => Err(kind.to_string()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(SyncError::Spool {
                        what: "cannot read",
                        path,
                        source,
                    })
                }
            };
            let record = match record {
                Ok(r) if r.request_id == id => r,
                Ok(r) => {
                    warn!(file = %path.display(), "skipping a status record for another id ({})", r.request_id);
                    self.seen.insert(id, stamp);
                    continue;
                }
                Err(why) => {
                    warn!(file = %path.display(), "skipping an unreadable status record: {why}");
                    self.seen.insert(id, stamp);
                    continue;
                }
            };
            if bridge.state().is_pushed(&id, record.status) {
                self.seen.insert(id, stamp);
                continue;
            }
            todo.push((record, stamp));
        }
        todo.sort_by(|a, b| a.0.request_id.cmp(&b.0.request_id));

        let mut report = PushReport::default();
        for chunk in todo.chunks(BATCH) {
            let records: Vec<StatusRecord> = chunk.iter().map(|(r, _)| r.clone()).collect();
            let answer = bridge.api().results(&records, &[])?;
            let mut accepted = Vec::new();
            for (record, stamp) in chunk {
                let id = record.request_id.as_str();
                if !answer.mentions(id) {
                    warn!(request_id = %id, "the API did not answer for this result; it will be pushed again");
                    continue;
                }
                if answer.rejected.iter().any(|x| x == id) {
                    tracing::error!(
                        request_id = %id,
                        "the API refused this result as not its pinned CA's: check that serve's \
                         --ca-chain is this signer's published/ca.crt"
                    );
                    report.rejected += 1;
                    self.seen.insert(record.request_id.clone(), *stamp);
                    continue;
                }
                if answer.conflicts.iter().any(|x| x == id) {
                    warn!(
                        request_id = %id,
                        status = record.status.as_str(),
                        "the API holds a different final result for this request; the spool's \
                         record is not pushed again"
                    );
                    report.conflicts += 1;
                } else if answer.unknown.iter().any(|x| x == id) {
                    debug!(request_id = %id, "the API does not know this request");
                    report.unknown += 1;
                } else {
                    info!(request_id = %id, status = record.status.as_str(), "result pushed");
                }
                accepted.push((record, *stamp));
            }
            bridge
                .state()
                .mark_pushed(accepted.iter().map(|(r, _)| (&r.request_id, r.status)))
                .map_err(|source| SyncError::Spool {
                    what: "cannot record pushed results in",
                    path: bridge.state().root().to_path_buf(),
                    source,
                })?;
            report.pushed += accepted.len();
            for (record, stamp) in accepted {
                self.seen.insert(record.request_id.clone(), stamp);
            }
        }
        let revocations = self.push_revocations(bridge)?;
        report.pushed += revocations.pushed;
        report.conflicts += revocations.conflicts;
        report.unknown += revocations.unknown;
        Ok(report)
    }

    /// Pushes the revocation records `status/<id>.revoke.json` not yet pushed with their
    /// current status (DESIGN §9; the record's shape is the signer's `RevocationRecord`).
    fn push_revocations(&mut self, bridge: &Bridge) -> Result<PushReport, SyncError> {
        let dir = bridge.spool().join("status");
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(PushReport::default());
        };
        let mut todo: Vec<(RevocationRecord, Stamp)> = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".revoke.json"))
                .and_then(|s| RequestId::parse(s).ok())
            else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let stamp = Stamp {
                ino: meta.ino(),
                len: meta.len(),
                mtime: meta.mtime(),
                mtime_nsec: meta.mtime_nsec(),
            };
            if self.seen_revocations.get(&id) == Some(&stamp) {
                continue;
            }
            let path = entry.path();
            let record = match fsx::read_untrusted(&path, MAX_STATUS_BYTES) {
                Ok(Untrusted::Content(bytes)) => {
                    serde_json::from_slice::<RevocationRecord>(&bytes).ok()
                }
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(SyncError::Spool {
                        what: "cannot read",
                        path,
                        source,
                    })
                }
            };
            let Some(record) = record.filter(|r| r.request_id == id) else {
                warn!(file = %path.display(), "skipping an unreadable revocation record");
                self.seen_revocations.insert(id, stamp);
                continue;
            };
            let status = crate::store::revocation_status(record.status);
            if bridge.state().is_revocation_pushed(&id, status) {
                self.seen_revocations.insert(id, stamp);
                continue;
            }
            todo.push((record, stamp));
        }
        todo.sort_by(|a, b| a.0.request_id.cmp(&b.0.request_id));
        let mut report = PushReport::default();
        for chunk in todo.chunks(BATCH) {
            let records: Vec<RevocationRecord> = chunk.iter().map(|(r, _)| r.clone()).collect();
            let answer = bridge.api().results(&[], &records)?;
            let accepted: Vec<&(RevocationRecord, Stamp)> = chunk
                .iter()
                .filter(|(r, _)| answer.mentions(r.request_id.as_str()))
                .collect();
            for (record, _) in &accepted {
                let id = record.request_id.as_str();
                if answer.conflicts.iter().any(|x| x == id) {
                    report.conflicts += 1;
                } else if answer.unknown.iter().any(|x| x == id) {
                    report.unknown += 1;
                } else {
                    info!(request_id = %id, "revocation result pushed");
                }
            }
            bridge
                .state()
                .mark_revocations_pushed(
                    accepted
                        .iter()
                        .map(|(r, _)| (&r.request_id, crate::store::revocation_status(r.status))),
                )
                .map_err(|source| SyncError::Spool {
                    what: "cannot record pushed results in",
                    path: bridge.state().root().to_path_buf(),
                    source,
                })?;
            report.pushed += accepted.len();
            for (record, stamp) in accepted {
                self.seen_revocations
                    .insert(record.request_id.clone(), *stamp);
            }
        }
        Ok(report)
    }
}

/// Uploads the files of `published/` whose content changed since their last upload; returns
/// the names uploaded. A file the API refuses does not keep the others from going out; the
/// first failure is returned after all were tried.
pub fn publish(bridge: &Bridge) -> Result<Vec<&'static str>, SyncError> {
    let mut uploaded = Vec::new();
    let mut failure = None;
    for (name, content_type) in PUBLISHED {
        match publish_one(bridge, name, content_type) {
            Ok(true) => uploaded.push(name),
            Ok(false) => {}
            Err(e) if e.is_unreachable() => return Err(e),
            Err(e) => {
                warn!(file = name, "{e}");
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(uploaded),
    }
}

/// Uploads one published file if it changed; `Ok(false)` when there was nothing to do.
fn publish_one(
    bridge: &Bridge,
    name: &'static str,
    content_type: &'static str,
) -> Result<bool, SyncError> {
    let path = bridge.spool().join("published").join(name);
    let bytes = match fsx::read_untrusted(&path, MAX_PUBLISHED_BYTES) {
        Ok(Untrusted::Content(bytes)) => bytes,
        Ok(Untrusted::TooLarge(n)) => {
            warn!(file = %path.display(), "not uploaded: {n} bytes is too large");
            return Ok(false);
        }
        Ok(Untrusted::NotRegular(kind)) => {
            warn!(file = %path.display(), "not uploaded: it is {kind}");
            return Ok(false);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(SyncError::Spool {
                what: "cannot read",
                path,
                source,
            })
        }
    };
    let hash = fsx::hex::encode(openssl::sha::sha256(&bytes));
    if bridge.state().published_hash(name).as_deref() == Some(hash.as_str()) {
        return Ok(false);
    }
    bridge.api().publish(name, bytes, content_type)?;
    bridge
        .state()
        .set_published_hash(name, &hash)
        .map_err(|source| SyncError::Spool {
            what: "cannot record the upload in",
            path: bridge.state().root().to_path_buf(),
            source,
        })?;
    info!(file = name, "published file uploaded");
    Ok(true)
}

/// Records per `POST /sync/results`.
const BATCH: usize = 100;
/// Largest status record read.
const MAX_STATUS_BYTES: u64 = 1024 * 1024;
/// Largest published file uploaded (a CRL of many revocations).
const MAX_PUBLISHED_BYTES: u64 = 64 * 1024 * 1024;
/// The published files and their media types (DESIGN §2, §5).
const PUBLISHED: [(&str, &str); 3] = [
    ("ca.crt", "application/x-pem-file"),
    ("ca.crl", "application/pkix-crl"),
    ("ledger-checkpoint.json", "application/json"),
];
