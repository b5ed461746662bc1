//! Phase 5 of a batch: make the outcomes visible, durably and in the order of DESIGN §2 —
//! certificates, then status records (the commit point), then the requests' moves.
//!
//! All temp files of a batch are flushed by one `syncfs(2)`, then renamed, and each directory
//! is flushed once: a batch costs a handful of flushes however many files it holds. A failure
//! before the renames leaves only temp files, which [`remove_stale_temps`] clears at start.

use std::ffi::{OsStr, OsString};
use std::io;

use super::examine::{Item, Work};
use super::layout::{Spool, Sub};
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

/// Names staged by a batch: temp files to rename into place (temp, final name) and claimed
/// files to move out of `processing/` (claimed name, name as it came).
#[derive(Default)]
struct Plan {
    certs: Vec<(OsString, OsString)>,
    statuses: Vec<(OsString, OsString)>,
    to_archive: Vec<(OsString, OsString)>,
    to_held: Vec<(OsString, OsString)>,
    removes: Vec<OsString>,
    rejects: Vec<(OsString, OsString, String)>,
}

/// Publishes a batch's outcomes.
pub fn publish(spool: &Spool, ca: &Ca, works: Vec<Work>) -> io::Result<Vec<Publication>> {
    let mut plan = Plan::default();
    let mut out = Vec::with_capacity(works.len());
    let chain_pem = &ca.facts.chain_pem;
    let result = (|| {
        for w in works {
            let started = w.item().started;
            let p = stage(spool, w, chain_pem, &mut plan)?;
            log(&p, started);
            out.push(p);
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (tmp, _) in &plan.certs {
            let _ = spool.remove(Sub::Issued, tmp);
        }
        for (tmp, _) in &plan.statuses {
            let _ = spool.remove(Sub::Status, tmp);
        }
        return Err(e);
    }
    commit(spool, plan)?;
    Ok(out)
}

fn stage(spool: &Spool, w: Work, chain_pem: &str, plan: &mut Plan) -> io::Result<Publication> {
    let archive = |item: &Item, plan: &mut Plan| {
        plan.to_archive
            .push((item.claimed.clone(), item.name.clone()));
    };
    Ok(match w {
        Work::Signed {
            id,
            kind,
            plan: p,
            issued,
            item,
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
            archive(&item, plan);
            Publication::new(Some(id), Decision::Approved, Some(record), item.name)
                .with_ip(p.ip.to_string())
        }
        Work::Republish { id, entry, item } => {
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
            archive(&item, plan);
            Publication::new(Some(id), Decision::Approved, Some(record), item.name).with_ip(ip_text)
        }
        Work::Deny {
            id,
            kind,
            reason,
            message,
            item,
        } => {
            let record = StatusRecord::denied(id.clone(), &kind, reason.as_str(), message);
            stage_status(spool, &record, plan)?;
            archive(&item, plan);
            Publication::new(Some(id), Decision::Denied, Some(record), item.name)
        }
        Work::Restore { id, entry, item } => {
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
            archive(&item, plan);
            Publication::new(Some(id), Decision::Denied, Some(record), item.name)
        }
        Work::Hold {
            id,
            kind,
            message,
            item,
        } => {
            let record = StatusRecord::pending(id.clone(), &kind, message);
            stage_status(spool, &record, plan)?;
            plan.to_held.push((item.claimed, item.name.clone()));
            Publication::new(Some(id), Decision::Held, Some(record), item.name)
        }
        Work::Finish { id, pending, item } => {
            if pending {
                plan.to_held.push((item.claimed.clone(), item.name.clone()));
            } else {
                archive(&item, plan);
            }
            let record = super::examine::read_status(spool, &id);
            let decision = match record.as_ref().map(|r| r.status) {
                Some(Status::Approved) => Decision::Approved,
                Some(Status::Pending) => Decision::Held,
                _ => Decision::Denied,
            };
            Publication::new(Some(id), decision, record, item.name)
        }
        Work::Unchanged { id, item } => {
            plan.removes.push(item.claimed);
            Publication::new(Some(id), Decision::Unchanged, None, item.name)
        }
        Work::Duplicate { id, item, .. } => {
            let reason = format!(
                "duplicate_request: request {id} was already decided with different content; its record stays as it was (use a new id)"
            );
            plan.rejects
                .push((item.claimed, item.name.clone(), reason.clone()));
            Publication::new(Some(id), Decision::Rejected, None, item.name).with_note(reason)
        }
        Work::Reject { reason, item } => {
            plan.rejects
                .push((item.claimed, item.name.clone(), reason.clone()));
            Publication::new(None, Decision::Rejected, None, item.name).with_note(reason)
        }
        Work::Approve { id, .. } => {
            return Err(io::Error::other(format!(
                "request {id} reached publishing unsigned"
            )));
        }
    })
}

fn stage_cert(spool: &Spool, id: &RequestId, pem: &[u8], plan: &mut Plan) -> io::Result<()> {
    let name = Spool::cert_name(id);
    let tmp = spool.write_temp(Sub::Issued, &name, pem)?;
    plan.certs.push((tmp, name));
    Ok(())
}

fn stage_status(spool: &Spool, record: &StatusRecord, plan: &mut Plan) -> io::Result<()> {
    let name = Spool::status_name(&record.request_id);
    let mut json = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    json.push(b'\n');
    let tmp = spool.write_temp(Sub::Status, &name, &json)?;
    plan.statuses.push((tmp, name));
    Ok(())
}

fn commit(spool: &Spool, plan: Plan) -> io::Result<()> {
    if !plan.certs.is_empty() || !plan.statuses.is_empty() {
        // One flush for every temp file of the batch.
        spool.sync_filesystem()?;
    }
    for (sub, staged) in [(Sub::Issued, &plan.certs), (Sub::Status, &plan.statuses)] {
        for (tmp, name) in staged {
            spool.replace(sub, tmp, name).inspect_err(|_| {
                let _ = spool.remove(sub, tmp);
            })?;
        }
        if !staged.is_empty() {
            spool.sync(sub)?;
        }
    }
    // archive/ keeps the first file of an id: another one there (planted, or a duplicate that
    // reached it) is never replaced, and the newcomer goes to rejected/.
    for (claimed, name) in &plan.to_archive {
        if !spool.move_file(Sub::Processing, claimed, Sub::Archive, name)? {
            let shown = name.to_string_lossy();
            reject_claimed(
                spool,
                claimed,
                name,
                &format!("duplicate_request: archive/ already holds a file named {shown}; the request's record stays as it is"),
            )?;
        }
    }
    if !plan.to_archive.is_empty() {
        spool.sync(Sub::Archive)?;
    }
    // held/ holds what the signer decided to hold: it replaces whatever was put there.
    for (claimed, name) in &plan.to_held {
        spool.move_replacing(Sub::Processing, claimed, Sub::Held, name)?;
    }
    if !plan.to_held.is_empty() {
        spool.sync(Sub::Held)?;
    }
    for claimed in &plan.removes {
        let _ = spool.remove(Sub::Processing, claimed);
    }
    for (claimed, name, reason) in &plan.rejects {
        reject_claimed(spool, claimed, name, reason)?;
    }
    spool.sync(Sub::Processing)?;
    Ok(())
}

/// Moves a claimed file to `rejected/` under the name it came with (made safe) and writes its
/// `.reason`.
pub fn reject_claimed(
    spool: &Spool,
    claimed: &OsStr,
    name: &OsStr,
    reason: &str,
) -> io::Result<()> {
    spool.reject(Sub::Processing, claimed, name, reason)
}

/// Removes temp files (`.*.tmp`) left by an interrupted write in a spool directory.
pub fn remove_stale_temps(spool: &Spool, sub: Sub) {
    let Ok(entries) = spool.entries(sub) else {
        return;
    };
    for (name, st) in entries {
        let s = name.to_string_lossy();
        if s.starts_with('.') && s.ends_with(".tmp") && st.is_some_and(|st| st.regular) {
            // Only our own temp names: `.<name>.<12 hex>.tmp`.
            if is_our_temp(&s) {
                let _ = spool.remove(sub, &name);
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
            let s = crate::spool::layout::safe_name(OsStr::from_bytes(&bytes));
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
