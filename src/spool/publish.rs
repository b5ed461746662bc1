//! Phase 5 of a batch: make the outcomes visible, durably and in the order of DESIGN §2 —
//! certificates, then status records (the commit point), then the requests' moves.
//!
//! All temp files of a batch are flushed by one `syncfs(2)`, then renamed, and each directory
//! is flushed once: a batch costs a handful of flushes however many files it holds. A failure
//! before the renames leaves only temp files, which [`remove_stale_temps`] clears at start.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use super::examine::Work;
use super::layout::Spool;
use crate::fsx;
use crate::ledger::Event;
use crate::request::{rfc3339, RequestId, Status, StatusRecord};
use crate::signer::ca::Ca;

/// What became of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A certificate was issued (or republished from the ledger).
    Approved,
    /// Denied.
    Denied,
    /// Held for an operator.
    Held,
    /// Moved to `rejected/`.
    Rejected,
    /// An identical resubmission, ignored.
    Unchanged,
}

/// One published outcome.
#[derive(Debug, Clone)]
pub struct Publication {
    /// The request, when the file was one.
    pub id: Option<RequestId>,
    /// What happened.
    pub decision: Decision,
    /// The status record written (or found).
    pub record: Option<StatusRecord>,
    /// The file name.
    pub name: OsString,
    /// The certified IP, when a certificate was published.
    pub ip: Option<String>,
    /// Why a file was rejected.
    pub note: Option<String>,
}

impl Publication {
    fn new(
        id: Option<RequestId>,
        decision: Decision,
        record: Option<StatusRecord>,
        name: OsString,
    ) -> Self {
        Self {
            id,
            decision,
            record,
            name,
            ip: None,
            note: None,
        }
    }

    fn with_ip(mut self, ip: String) -> Self {
        self.ip = Some(ip);
        self
    }

    fn with_note(mut self, note: String) -> Self {
        self.note = Some(note);
        self
    }
}

#[derive(Default)]
struct Plan {
    certs: Vec<(PathBuf, PathBuf)>,
    statuses: Vec<(PathBuf, PathBuf)>,
    to_archive: Vec<(PathBuf, PathBuf)>,
    to_held: Vec<(PathBuf, PathBuf)>,
    removes: Vec<PathBuf>,
    rejects: Vec<(PathBuf, OsString, String)>,
}

/// Publishes a batch's outcomes.
pub fn publish(spool: &Spool, ca: &Ca, works: Vec<Work>) -> io::Result<Vec<Publication>> {
    let mut plan = Plan::default();
    let mut out = Vec::with_capacity(works.len());
    let chain_pem = &ca.facts.chain_pem;
    let result = (|| {
        for w in works {
            let started = w.started();
            let p = stage(spool, w, chain_pem, &mut plan)?;
            log(&p, started);
            out.push(p);
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (tmp, _) in plan.certs.iter().chain(&plan.statuses) {
            let _ = std::fs::remove_file(tmp);
        }
        return Err(e);
    }
    commit(spool, plan)?;
    Ok(out)
}

fn stage(spool: &Spool, w: Work, chain_pem: &str, plan: &mut Plan) -> io::Result<Publication> {
    let archive = |claimed: &Path, name: &OsStr, plan: &mut Plan| {
        plan.to_archive
            .push((claimed.to_owned(), spool.archive().join(name)));
    };
    Ok(match w {
        Work::Signed {
            id,
            kind,
            plan: p,
            issued,
            claimed,
            name,
            ..
        } => {
            let (nb, na) = (issued.not_before, issued.not_after);
            let serial = issued.serial.to_hex();
            let record = StatusRecord {
                request_id: id.clone(),
                kind,
                status: Status::Approved,
                message: format!(
                    "certificate issued for {}, valid until {}",
                    p.ip,
                    na.format("%Y-%m-%d")
                ),
                reason: None,
                certificate: Some(issued.chain_pem.clone()),
                serial: Some(serial),
                not_before: Some(rfc3339(nb)),
                not_after: Some(rfc3339(na)),
                fingerprint_sha256: Some(issued.fingerprint.clone()),
                decided_at: rfc3339(chrono::Utc::now()),
            };
            stage_cert(spool, &id, issued.chain_pem.as_bytes(), plan)?;
            stage_status(spool, &record, plan)?;
            archive(&claimed, &name, plan);
            Publication::new(Some(id), Decision::Approved, Some(record), name)
                .with_ip(p.ip.to_string())
        }
        Work::Republish {
            id,
            entry,
            claimed,
            name,
            ..
        } => {
            let Event::Issued {
                kind,
                ip,
                serial,
                not_before,
                not_after,
                fingerprint_sha256,
                certificate,
                ..
            } = entry.event
            else {
                return Err(io::Error::other("a republish entry is not an issued event"));
            };
            let chain = format!("{certificate}{chain_pem}");
            let ip_text = ip.clone();
            let until = not_after.get(..10).unwrap_or(&not_after).to_owned();
            let record = StatusRecord {
                request_id: id.clone(),
                kind,
                status: Status::Approved,
                message: format!("certificate issued for {ip}, valid until {until}"),
                reason: None,
                certificate: Some(chain.clone()),
                serial: Some(serial),
                not_before: Some(not_before),
                not_after: Some(not_after),
                fingerprint_sha256: Some(fingerprint_sha256),
                decided_at: entry.ts.clone(),
            };
            stage_cert(spool, &id, chain.as_bytes(), plan)?;
            stage_status(spool, &record, plan)?;
            archive(&claimed, &name, plan);
            Publication::new(Some(id), Decision::Approved, Some(record), name).with_ip(ip_text)
        }
        Work::Deny {
            id,
            kind,
            reason,
            message,
            claimed,
            name,
            ..
        } => {
            let record = StatusRecord::denied(id.clone(), &kind, reason.as_str(), message);
            stage_status(spool, &record, plan)?;
            archive(&claimed, &name, plan);
            Publication::new(Some(id), Decision::Denied, Some(record), name)
        }
        Work::Restore {
            id,
            entry,
            claimed,
            name,
            ..
        } => {
            let Event::Denied {
                kind,
                reason,
                message,
                ..
            } = entry.event
            else {
                return Err(io::Error::other("a restore entry is not a denied event"));
            };
            let mut record = StatusRecord::denied(id.clone(), &kind, &reason, message);
            record.decided_at = entry.ts.clone();
            stage_status(spool, &record, plan)?;
            archive(&claimed, &name, plan);
            Publication::new(Some(id), Decision::Denied, Some(record), name)
        }
        Work::Hold {
            id,
            kind,
            message,
            claimed,
            name,
            ..
        } => {
            let record = StatusRecord::pending(id.clone(), &kind, message);
            stage_status(spool, &record, plan)?;
            plan.to_held.push((claimed, spool.held().join(&name)));
            Publication::new(Some(id), Decision::Held, Some(record), name)
        }
        Work::Finish {
            id,
            pending,
            claimed,
            name,
            ..
        } => {
            if pending {
                plan.to_held.push((claimed, spool.held().join(&name)));
            } else {
                archive(&claimed, &name, plan);
            }
            let record = super::examine::read_status(spool, &id);
            let decision = match record.as_ref().map(|r| r.status) {
                Some(Status::Approved) => Decision::Approved,
                Some(Status::Pending) => Decision::Held,
                _ => Decision::Denied,
            };
            Publication::new(Some(id), decision, record, name)
        }
        Work::Unchanged {
            id, claimed, name, ..
        } => {
            plan.removes.push(claimed);
            Publication::new(Some(id), Decision::Unchanged, None, name)
        }
        Work::Duplicate {
            id, claimed, name, ..
        } => {
            let reason = format!(
                "duplicate_request: request {id} was already decided with different content; its record stays as it was (use a new id)"
            );
            plan.rejects.push((claimed, name.clone(), reason.clone()));
            Publication::new(Some(id), Decision::Rejected, None, name).with_note(reason)
        }
        Work::Reject {
            reason,
            claimed,
            name,
            ..
        } => {
            plan.rejects.push((claimed, name.clone(), reason.clone()));
            Publication::new(None, Decision::Rejected, None, name).with_note(reason)
        }
        Work::Approve { id, .. } => {
            return Err(io::Error::other(format!(
                "request {id} reached publishing unsigned"
            )));
        }
    })
}

fn stage_cert(spool: &Spool, id: &RequestId, pem: &[u8], plan: &mut Plan) -> io::Result<()> {
    let path = spool.cert_file(id);
    let tmp = fsx::write_temp(&path, pem, fsx::MODE_PUBLIC, false)?;
    plan.certs.push((tmp, path));
    Ok(())
}

fn stage_status(spool: &Spool, record: &StatusRecord, plan: &mut Plan) -> io::Result<()> {
    let path = spool.status_file(&record.request_id);
    let mut json = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    json.push(b'\n');
    let tmp = fsx::write_temp(&path, &json, fsx::MODE_PUBLIC, false)?;
    plan.statuses.push((tmp, path));
    Ok(())
}

fn commit(spool: &Spool, plan: Plan) -> io::Result<()> {
    if !plan.certs.is_empty() || !plan.statuses.is_empty() {
        // One flush for every temp file of the batch.
        fsx::sync_filesystem(&spool.root)?;
    }
    for (tmp, path) in &plan.certs {
        fsx::rename_into_place(tmp, path)?;
    }
    if !plan.certs.is_empty() {
        fsx::sync_dir(&spool.issued())?;
    }
    for (tmp, path) in &plan.statuses {
        fsx::rename_into_place(tmp, path)?;
    }
    if !plan.statuses.is_empty() {
        fsx::sync_dir(&spool.status())?;
    }
    for (from, to) in plan.to_archive.iter().chain(&plan.to_held) {
        std::fs::rename(from, to)?;
    }
    if !plan.to_archive.is_empty() {
        fsx::sync_dir(&spool.archive())?;
    }
    if !plan.to_held.is_empty() {
        fsx::sync_dir(&spool.held())?;
    }
    for path in &plan.removes {
        let _ = std::fs::remove_file(path);
    }
    for (from, name, reason) in &plan.rejects {
        reject(spool, from, name, reason)?;
    }
    fsx::sync_dir(&spool.processing())?;
    Ok(())
}

/// Moves a file (any type; never followed) to `rejected/` under a free name and writes
/// `<name>.reason` beside it.
pub fn reject(spool: &Spool, from: &Path, name: &OsStr, reason: &str) -> io::Result<()> {
    let dir = spool.rejected();
    let base = safe_name(name);
    let mut target = base.clone();
    let mut n = 1;
    while std::fs::symlink_metadata(dir.join(&target)).is_ok()
        || std::fs::symlink_metadata(dir.join(format!("{target}.reason"))).is_ok()
    {
        target = format!("{base}.{n}");
        n += 1;
    }
    if !claim(from, &dir.join(&target))? {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the file disappeared",
        ));
    }
    fsx::write_atomic(
        &dir.join(format!("{target}.reason")),
        format!("{reason}\n").as_bytes(),
        fsx::MODE_PUBLIC,
    )
}

/// Atomically renames `from` to `to` unless `to` exists. `Ok(false)` when `from` is gone (someone
/// else claimed it) or `to` is taken.
pub fn claim(from: &Path, to: &Path) -> io::Result<bool> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EEXIST) => Ok(false),
        // Filesystems without RENAME_NOREPLACE: fall back to a link-free check.
        Err(nix::errno::Errno::EINVAL) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Ok(false);
            }
            match std::fs::rename(from, to) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes temp files (`.*.tmp`) left by an interrupted write.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let s = name.to_string_lossy();
        if s.starts_with('.') && s.ends_with(".tmp") && e.file_type().is_ok_and(|t| t.is_file()) {
            // Only our own temp names: `.<name>.<12 hex>.tmp`.
            if is_our_temp(&s) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn is_our_temp(s: &str) -> bool {
    let Some(body) = s.strip_suffix(".tmp") else {
        return false;
    };
    body.rsplit_once('.').is_some_and(|(_, suffix)| {
        suffix.len() == 12 && suffix.bytes().all(|b| b.is_ascii_hexdigit())
    })
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

fn log(p: &Publication, started: std::time::Instant) {
    let id = p.id.as_ref().map(ToString::to_string).unwrap_or_default();
    let r = p.record.as_ref();
    let decision = match p.decision {
        Decision::Approved => "approved",
        Decision::Denied => "denied",
        Decision::Held => "held",
        Decision::Rejected => "rejected",
        Decision::Unchanged => "unchanged",
    };
    tracing::info!(
        request_id = %id,
        file = %p.name.to_string_lossy(),
        r#type = r.map_or("", |r| r.kind.as_str()),
        ip = p.ip.as_deref().unwrap_or(""),
        decision,
        reason = r.and_then(|r| r.reason.as_deref()).or(p.note.as_deref()).unwrap_or(""),
        serial = r.and_then(|r| r.serial.as_deref()).unwrap_or(""),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "decision"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The file-name sanitiser never yields `/`, `..`, a leading dot or an empty name
        /// (issue 6).
        #[test]
        fn safe_names_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            use std::os::unix::ffi::OsStrExt;
            let s = safe_name(OsStr::from_bytes(&bytes));
            prop_assert!(!s.is_empty());
            prop_assert!(!s.contains('/'));
            prop_assert!(!s.starts_with('.'));
            prop_assert!(s != "..");
            prop_assert!(s.len() <= 200);
        }
    }

    #[test]
    fn our_temp_names_are_recognised() {
        assert!(is_our_temp(".a.csr.0123456789ab.tmp"));
        assert!(!is_our_temp(".a.csr.tmp"));
        assert!(!is_our_temp(".producer.tmp"));
    }
}
