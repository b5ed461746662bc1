//! Revocation: finding a certificate by serial or request id, recording its revocation in the
//! ledger, and revocation requests that arrive through the spool as
//! `incoming/<id>.revoke.json` (format in `spool/README.md`, "Revocation requests").
//!
//! A spool request names the certificate (`serial` or `request_id`) and the RFC 5280 `reason`,
//! and may carry a `proof`: a signature by the certificate's own key over
//! `smsgate-ca revocation v1\n<serial>\n<reason>\n` ([`crate::proof`], DESIGN §9). Whoever
//! can write the spool can name any serial, so a name alone revokes nothing. The profile that
//! issued the certificate decides with its `revocation` key: `proof` (the default) carries out
//! a request whose proof verifies, holds one without a proof for an operator, and denies a
//! wrong proof `bad_proof`; `manual` holds every request. A held request waits in
//! `held/<id>.revoke.json` (record `pending`) until `approve --revocation ID` or
//! `deny --revocation ID` ([`decide_held`]), or its `held_ttl` runs out. An optional `type`
//! must name the certificate's own request type (else `wrong_type`).
//!
//! Every decision writes `status/<id>.revoke.json` — its own name, so that a revocation
//! request never collides with the status record of a certificate request of the same id —
//! then moves the file to `archive/` (or `held/`). Files that are not plain files go to
//! `rejected/` with a `.reason`, as any non-request does. Order: ledger `revoked` (flushed) →
//! CRL → status record (the commit point) → move; after a crash the file is decided again and
//! finds the certificate revoked, which completes it as `revoked` without a second ledger line.
//! All spool access goes through the spool's directory handles.
//!
//! Refused revocation requests are not written to the ledger: its `denied` event is keyed by
//! certificate request id, and a revocation id in it would read as a denied certificate request.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::inventory::{self, time_text, IndexUse};
use super::{crl, LifecycleError};
use crate::fsx::Untrusted;
use crate::ledger::{Entry, Event, Ledger};
use crate::policy::Revocation;
use crate::request::{rfc3339, RequestId, RequestType};
use crate::signer::crl::RevocationReason;
use crate::signer::serial::Serial;
use crate::spool::examine::{Item, Origin};
use crate::spool::layout::{classify, Name, Sub};
use crate::spool::{Engine, Spool};

/// What an operator names in `revoke`: a serial, a request id, or text that is both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// 32 hex digits (colons allowed).
    Serial(Serial),
    /// A request id.
    Request(RequestId),
    /// 32 hex digits that are also a valid request id: the serial is tried first.
    Either(Serial, RequestId),
}

impl Target {
    /// Parses `SERIAL|ID`; a malformed serial or id is bad input.
    pub fn parse(text: &str) -> Result<Self, LifecycleError> {
        let text = text.trim();
        let serial = Serial::parse(text);
        let id = RequestId::parse(text).ok();
        match (serial, id) {
            (Some(s), Some(id)) => Ok(Self::Either(s, id)),
            (Some(s), None) => Ok(Self::Serial(s)),
            (None, Some(id)) => Ok(Self::Request(id)),
            (None, None)
                if !text.is_empty() && text.chars().all(|c| c == ':' || c.is_ascii_hexdigit()) =>
            {
                let digits = text.chars().filter(char::is_ascii_hexdigit).count();
                Err(LifecycleError::BadInput(format!(
                    "{:?} is not a serial: a serial has 32 hex digits (colons allowed), this has {digits}",
                    shorten(text)
                )))
            }
            (None, None) => Err(LifecycleError::BadInput(format!(
                "{:?} is neither a serial (32 hex digits, colons allowed) nor a request id \
                 (letters, digits, '_' and '-', at most 64)",
                shorten(text)
            ))),
        }
    }
}

/// A certificate found in the ledger for a [`Target`].
#[derive(Clone, Debug)]
pub struct Found {
    /// 32 lowercase hex digits.
    pub serial: String,
    /// The request it was issued for.
    pub request_id: String,
    /// The request type.
    pub kind: String,
    /// The certified IP.
    pub ip: String,
    /// RFC 3339.
    pub not_after: String,
    /// The leaf certificate as issued (PEM).
    pub certificate: String,
}

/// A revocation recorded by [`revoke`].
#[derive(Clone, Debug)]
pub struct Revoked {
    /// The certificate.
    pub certificate: Found,
    /// Why.
    pub reason: RevocationReason,
    /// When (as recorded in the ledger and the CRL).
    pub revoked_at: DateTime<Utc>,
}

/// Parses an RFC 5280 reason name for revoking (any ASCII case); `removeFromCRL` is refused
/// because it belongs to delta CRLs only.
pub fn parse_reason(text: &str) -> Result<RevocationReason, LifecycleError> {
    match RevocationReason::parse(text.trim()) {
        Some(RevocationReason::RemoveFromCrl) => Err(LifecycleError::BadInput(format!(
            "removeFromCRL cannot revoke a certificate (it only appears in delta CRLs): use one \
             of {}",
            reason_names()
        ))),
        Some(r) => Ok(r),
        None => Err(LifecycleError::BadInput(format!(
            "unknown revocation reason {:?}: use one of {}",
            shorten(text),
            reason_names()
        ))),
    }
}

/// The reason names `revoke --reason` accepts, comma-separated.
pub fn reason_names() -> String {
    RevocationReason::ALL
        .iter()
        .filter(|r| **r != RevocationReason::RemoveFromCrl)
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds the certificate `target` names (after catching up with other writers), checking that
/// a request of type `kind` owns it when one is given. An already revoked certificate is
/// [`LifecycleError::AlreadyRevoked`], with when and why.
pub fn find(
    ledger: &mut Ledger,
    target: &Target,
    kind: Option<&str>,
) -> Result<Found, LifecycleError> {
    ledger.refresh()?;
    let by_serial = |l: &Ledger, s: &Serial| -> Result<Option<Entry>, LifecycleError> {
        match l.index().issued.get(s.as_bytes()) {
            Some(off) => Ok(Some(l.read_at(*off)?)),
            None => Ok(None),
        }
    };
    let entry = match target {
        Target::Serial(s) => by_serial(ledger, s)?,
        Target::Request(id) => ledger.issued_for(id.as_str())?,
        Target::Either(s, id) => match by_serial(ledger, s)? {
            Some(e) => Some(e),
            None => ledger.issued_for(id.as_str())?,
        },
    };
    let Some(Entry {
        event:
            Event::Issued {
                request_id,
                serial,
                kind: owner,
                ip,
                not_after,
                certificate,
                ..
            },
        ..
    }) = entry
    else {
        return Err(LifecycleError::NotFound(not_found_message(target)));
    };
    if let Some(asked) = kind {
        if asked != owner {
            return Err(LifecycleError::WrongType {
                serial,
                owner,
                asked: asked.to_owned(),
            });
        }
    }
    let bytes = Serial::parse(&serial).map(|s| *s.as_bytes());
    if bytes.is_some_and(|b| ledger.index().revoked.contains(&b)) {
        let state = state_dir(ledger.path());
        let inv = inventory::load(&state, ledger.path(), IndexUse::ReadWrite)?.inventory;
        let r = bytes
            .and_then(|b| inv.by_serial(&b))
            .and_then(|c| c.revocation);
        return Err(LifecycleError::AlreadyRevoked {
            serial,
            request_id,
            revoked_at: r.map_or_else(|| "an unknown time".into(), |r| time_text(r.revoked_at)),
            reason: r.map_or("unknown", |r| r.reason.as_str()).to_owned(),
        });
    }
    Ok(Found {
        serial,
        request_id,
        kind: owner,
        ip,
        not_after,
        certificate,
    })
}

/// Revokes the certificate `target` names: checks it as [`find`] does and appends a `revoked`
/// event (flushed before returning). Signs no CRL: see [`crl::issue`].
pub fn revoke(
    ledger: &mut Ledger,
    target: &Target,
    reason: RevocationReason,
    kind: Option<&str>,
) -> Result<Revoked, LifecycleError> {
    if reason == RevocationReason::RemoveFromCrl {
        return Err(LifecycleError::BadInput(format!(
            "removeFromCRL cannot revoke a certificate (it only appears in delta CRLs): use one \
             of {}",
            reason_names()
        )));
    }
    let certificate = find(ledger, target, kind)?;
    let revoked_at = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_default();
    ledger.append(&[Event::Revoked {
        serial: certificate.serial.clone(),
        request_id: certificate.request_id.clone(),
        reason: reason.as_str().to_owned(),
        revoked_at: rfc3339(revoked_at),
    }])?;
    tracing::info!(serial = %certificate.serial, request_id = %certificate.request_id,
        reason = reason.as_str(), "certificate revoked");
    Ok(Revoked {
        certificate,
        reason,
        revoked_at,
    })
}

/// `incoming/<id>.revoke.json`: a request to revoke one certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRequest {
    /// The certificate's serial (32 hex digits, colons allowed); or give `request_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The id of the request the certificate was issued for; or give `serial`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// RFC 5280 reason name.
    pub reason: String,
    /// Base64 signature by the certificate's key over the revocation message
    /// ([`crate::proof::message`]); without it the request waits for an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// The type of the request that owns the certificate; when given it must be that type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Free-form key/value pairs (kept in the archived file, never acted on).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// When it was submitted (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<String>,
}

/// A revocation request's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationStatus {
    /// Held for an operator.
    Pending,
    /// The certificate is revoked (now or before).
    Revoked,
    /// Refused; `reason` says why.
    Denied,
}

/// `status/<id>.revoke.json`: what became of a revocation request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// The revocation request's id (the file stem).
    pub request_id: RequestId,
    /// The type named in the request, else the certificate's own type once known.
    #[serde(rename = "type")]
    pub kind: String,
    /// pending, revoked or denied.
    pub status: RevocationStatus,
    /// Plain words for a person.
    pub message: String,
    /// A stable code when denied (see [`Refusal`]).
    pub reason: Option<String>,
    /// The certificate's serial, once known.
    pub serial: Option<String>,
    /// The id of the request the certificate was issued for, once known.
    pub certificate_request_id: Option<String>,
    /// The RFC 5280 reason, when revoked or pending.
    pub revocation_reason: Option<String>,
    /// When the certificate was revoked (RFC 3339), when revoked.
    pub revoked_at: Option<String>,
    /// When this record was written (RFC 3339).
    pub decided_at: String,
}

/// Why a revocation request was refused: the `reason` codes of its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `bad_proof`: the proof is not the certificate key's signature over the message.
    BadProof,
    /// `bad_reason`: not an RFC 5280 reason name (or `removeFromCRL`).
    BadReason,
    /// `denied_by_operator`.
    DeniedByOperator,
    /// `expired`: held longer than the profile's `held_ttl`.
    Expired,
    /// `invalid_request`: not the JSON described in `spool/README.md`.
    InvalidRequest,
    /// `malformed_serial`: `serial` is not 32 hex digits.
    MalformedSerial,
    /// `too_large`: over 64 KiB.
    TooLarge,
    /// `unknown_certificate`: the ledger has no such certificate.
    UnknownCertificate,
    /// `unknown_type`: `type` names no policy profile.
    UnknownType,
    /// `wrong_type`: the certificate belongs to a request of another type.
    WrongType,
}

impl Refusal {
    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadProof => "bad_proof",
            Self::BadReason => "bad_reason",
            Self::DeniedByOperator => "denied_by_operator",
            Self::Expired => "expired",
            Self::InvalidRequest => "invalid_request",
            Self::MalformedSerial => "malformed_serial",
            Self::TooLarge => "too_large",
            Self::UnknownCertificate => "unknown_certificate",
            Self::UnknownType => "unknown_type",
            Self::WrongType => "wrong_type",
        }
    }
}

/// What became of one revocation file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Refused, with a record.
    Denied,
    /// Held for an operator.
    Held,
    /// Not a request (moved to `rejected/`).
    Rejected,
    /// The certificate is revoked.
    Revoked,
    /// The same file again: removed, nothing changed.
    Unchanged,
}

impl Decision {
    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::Held => "held",
            Self::Rejected => "rejected",
            Self::Revoked => "revoked",
            Self::Unchanged => "unchanged",
        }
    }
}

/// The outcome of [`handle_spool_file`] or [`decide_held`].
#[derive(Clone, Debug)]
pub struct Handled {
    /// What happened.
    pub decision: Decision,
    /// The record written (or found), when the file was a revocation request.
    pub record: Option<RevocationRecord>,
    /// The CRL signed because of it, if any.
    pub crl: Option<crl::Signed>,
}

/// An operator's decision on a held revocation request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `approve --revocation ID`: revoke now (the certificate is looked up again).
    Approve,
    /// `deny --revocation ID --reason TEXT`.
    Deny(String),
    /// The profile's `held_ttl` ran out ([`expire_held`]).
    Expire,
}

/// The engine's hook for a claimed `processing/<id>.revoke.json`: decides it and publishes
/// the outcome; the file ends in `archive/`, `held/` or `rejected/`, or — when the ledger
/// cannot be written — back where it came from with the error returned. Must not be called
/// while holding the engine's ledger.
pub fn handle_spool_file(engine: &Engine, item: &Item) -> Result<Handled, LifecycleError> {
    let spool = &engine.spool;
    let id = match classify(&item.name) {
        Name::Revocation(id) => id,
        Name::Bad(reason) => return reject(spool, item, &reason),
        _ => {
            return reject(
                spool,
                item,
                "not a revocation request name (<id>.revoke.json)",
            )
        }
    };
    let content = match spool.read_untrusted(Sub::Processing, &item.claimed, MAX_BYTES) {
        Ok(Untrusted::Content(c)) => Some(c),
        Ok(Untrusted::TooLarge(_)) => None,
        Ok(Untrusted::NotRegular(what)) => {
            return reject(
                spool,
                item,
                &format!(
                "{what}, not a regular file: requests must be plain files (never followed or read)"
            ),
            )
        }
        Err(e) => return Err(LifecycleError::io(&spool.path(Sub::Processing), e)),
    };
    // An earlier outcome: never decide twice.
    if let Some(record) = read_record(spool, &id) {
        let sub = if record.status == RevocationStatus::Pending {
            Sub::Held
        } else {
            Sub::Archive
        };
        if spool.exists(sub, &item.name) {
            let same = content.as_ref().is_some_and(|c| {
                spool
                    .dir(sub)
                    .read_small(&item.name, MAX_BYTES)
                    .is_some_and(|o| &o == c)
            });
            if same {
                let _ = spool.remove(Sub::Processing, &item.claimed);
                return Ok(Handled {
                    decision: Decision::Unchanged,
                    record: Some(record),
                    crl: None,
                });
            }
            return reject(
                spool,
                item,
                &format!("duplicate_request: revocation request {id} was already decided with different content; its record stays as it was (use a new id)"),
            );
        }
        // A crash between the record and the move: finish the move.
        move_into(spool, item, sub)?;
        let decision = match record.status {
            RevocationStatus::Pending => Decision::Held,
            RevocationStatus::Revoked => Decision::Revoked,
            RevocationStatus::Denied => Decision::Denied,
        };
        return Ok(Handled {
            decision,
            record: Some(record),
            crl: None,
        });
    }
    let result = decide(engine, &id, item, content.as_deref(), None);
    if result.is_err() {
        // Nothing was published: queue the file again.
        put_back(spool, item);
    }
    result
}

/// Decides a revocation request held in `held/<id>.revoke.json` by an operator's verdict (the
/// hook for `approve --revocation` / `deny --revocation`): the file is claimed and read again,
/// and the certificate looked up in the ledger again. `Ok(None)` when no such request is held.
pub fn decide_held(
    engine: &Engine,
    id: &RequestId,
    verdict: Verdict,
) -> Result<Option<Handled>, LifecycleError> {
    let spool = &engine.spool;
    spool
        .check()
        .map_err(|e| LifecycleError::io(&spool.root, io::Error::other(e.to_string())))?;
    let name = OsString::from(format!("{id}.revoke.json"));
    if !spool
        .move_file(Sub::Held, &name, Sub::Processing, &name)
        .map_err(|e| LifecycleError::io(&spool.path(Sub::Held), e))?
    {
        return Ok(None);
    }
    let item = Item {
        name: name.clone(),
        claimed: name,
        origin: Origin::Held,
        started: std::time::Instant::now(),
    };
    let content = match spool.read_untrusted(Sub::Processing, &item.claimed, MAX_BYTES) {
        Ok(Untrusted::Content(c)) => Some(c),
        _ => None,
    };
    let result = decide(engine, id, &item, content.as_deref(), Some(verdict));
    if result.is_err() {
        put_back(spool, &item);
    }
    result.map(Some)
}

/// Denies the held revocation requests that waited longer than their profile's `held_ttl`
/// (reason `expired`), as the engine does for held certificate requests; returns how many.
/// The hook for the daemon's rescan and for `approve`/`deny`, next to `Engine::expire_held`.
pub fn expire_held(engine: &Engine) -> usize {
    let Ok(entries) = engine.spool.entries(Sub::Held) else {
        return 0;
    };
    let policy = engine.policy();
    let now = Utc::now();
    let mut expired = 0;
    for (name, _) in entries {
        let Name::Revocation(id) = classify(&name) else {
            continue;
        };
        let Some(record) = read_record(&engine.spool, &id) else {
            continue;
        };
        let Ok(held_at) = DateTime::parse_from_rfc3339(&record.decided_at) else {
            continue;
        };
        let ttl = policy
            .profile(&record.kind)
            .map_or(policy.defaults.held_ttl, |p| p.settings.held_ttl);
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        if record.status == RevocationStatus::Pending
            && held_at.with_timezone(&Utc) + ttl < now
            && matches!(decide_held(engine, &id, Verdict::Expire), Ok(Some(_)))
        {
            expired += 1;
        }
    }
    expired
}

/// Whether `held/<id>.revoke.json` exists (so that `approve`/`deny` can say where to look).
pub fn is_held(spool: &Spool, id: &RequestId) -> bool {
    spool.exists(Sub::Held, OsStr::new(&format!("{id}.revoke.json")))
}

/// The record of a revocation request, if one exists and parses.
pub fn read_record(spool: &Spool, id: &RequestId) -> Option<RevocationRecord> {
    let bytes = spool
        .dir(Sub::Status)
        .read_small(&record_name(id), 1 << 20)?;
    serde_json::from_slice(&bytes).ok()
}

/// `<id>.revoke.json`, the record's name in `status/`.
pub fn record_name(id: &RequestId) -> OsString {
    OsString::from(format!("{id}.revoke.json"))
}

fn decide(
    engine: &Engine,
    id: &RequestId,
    item: &Item,
    content: Option<&[u8]>,
    verdict: Option<Verdict>,
) -> Result<Handled, LifecycleError> {
    let spool = &engine.spool;
    let mut record = RevocationRecord {
        request_id: id.clone(),
        kind: RequestType::Webhook.as_str().to_owned(),
        status: RevocationStatus::Denied,
        message: String::new(),
        reason: None,
        serial: None,
        certificate_request_id: None,
        revocation_reason: None,
        revoked_at: None,
        decided_at: rfc3339(Utc::now()),
    };
    let deny = |mut record: RevocationRecord, code: Refusal, message: String| {
        record.status = RevocationStatus::Denied;
        record.reason = Some(code.as_str().to_owned());
        record.message = message;
        publish_record(spool, item, record, Decision::Denied, None)
    };
    let Some(content) = content else {
        return deny(
            record,
            Refusal::TooLarge,
            format!(
                "the file is over {MAX_BYTES} bytes: a revocation request is a small JSON object"
            ),
        );
    };
    let request: RevocationRequest = match serde_json::from_slice(content) {
        Ok(r) => r,
        Err(e) => {
            return deny(
                record,
                Refusal::InvalidRequest,
                format!("the revocation request is not valid: {e}; write {{\"serial\" or \"request_id\", \"reason\", \"proof\"}} as JSON"),
            )
        }
    };
    if let Some(kind) = &request.kind {
        record.kind = shorten(kind).chars().take(64).collect();
    }
    let target = match (&request.serial, &request.request_id) {
        (Some(s), None) => match Serial::parse(s) {
            Some(s) => Target::Serial(s),
            None => {
                return deny(
                    record,
                    Refusal::MalformedSerial,
                    format!(
                        "{:?} is not a serial: give 32 hex digits (colons allowed)",
                        shorten(s)
                    ),
                )
            }
        },
        (None, Some(r)) => match RequestId::parse(r) {
            Ok(r) => Target::Request(r),
            Err(e) => return deny(record, Refusal::InvalidRequest, format!("request_id: {e}")),
        },
        _ => {
            return deny(
                record,
                Refusal::InvalidRequest,
                "give exactly one of \"serial\" and \"request_id\"".into(),
            )
        }
    };
    let reason = match parse_reason(&request.reason) {
        Ok(r) => r,
        Err(e) => return deny(record, Refusal::BadReason, e.to_string()),
    };
    record.revocation_reason = Some(reason.as_str().to_owned());
    let policy = engine.policy();
    if let Some(kind) = &request.kind {
        if policy.profile(kind).is_none() {
            let known: Vec<&str> = policy.profiles.iter().map(|p| p.name.as_str()).collect();
            return deny(
                record,
                Refusal::UnknownType,
                format!(
                    "type {:?} is not one this CA issues for: use one of {}, or leave it out",
                    shorten(kind),
                    known.join(", ")
                ),
            );
        }
    }
    let found = match engine.with_ledger(|l| find(l, &target, request.kind.as_deref())) {
        Ok(found) => found,
        Err(LifecycleError::AlreadyRevoked {
            serial,
            request_id,
            revoked_at,
            reason: earlier,
        }) => {
            record.status = RevocationStatus::Revoked;
            record.message = format!(
                "certificate {serial} (request {request_id}) was already revoked at {revoked_at} ({earlier}); nothing changed"
            );
            record.serial = Some(serial);
            record.certificate_request_id = Some(request_id);
            record.revocation_reason = Some(earlier);
            record.revoked_at = Some(revoked_at);
            return publish_record(spool, item, record, Decision::Revoked, None);
        }
        Err(LifecycleError::NotFound(message)) => {
            return deny(record, Refusal::UnknownCertificate, message)
        }
        Err(e @ LifecycleError::WrongType { .. }) => {
            return deny(record, Refusal::WrongType, e.to_string())
        }
        Err(e) => return Err(e),
    };
    record.serial = Some(found.serial.clone());
    record.certificate_request_id = Some(found.request_id.clone());
    if request.kind.is_none() {
        record.kind = found.kind.clone();
    }
    let profile = policy.profile(&found.kind);
    let mode = profile.map_or(policy.defaults.revocation, |p| p.settings.revocation);
    let proof = request
        .proof
        .as_deref()
        .map(|p| check_proof(&found, reason, p));
    let what = format!(
        "certificate {} (request {}, {})",
        found.serial, found.request_id, found.ip
    );
    match &verdict {
        Some(Verdict::Deny(text)) => {
            let text = if text.is_empty() {
                "denied by the CA operator".to_owned()
            } else {
                text.clone()
            };
            return deny(record, Refusal::DeniedByOperator, text);
        }
        Some(Verdict::Expire) => {
            let ttl = crate::duration::format(
                profile.map_or(policy.defaults.held_ttl, |p| p.settings.held_ttl),
            );
            return deny(
                record,
                Refusal::Expired,
                format!("no operator decided within {ttl}; submit the revocation request again"),
            );
        }
        Some(Verdict::Approve) => {}
        None => {
            let hold = |mut record: RevocationRecord, why: String| {
                record.status = RevocationStatus::Pending;
                record.message = format!(
                    "held for the CA operator: revoke {what}? {why}; the operator decides with \
                     `smsgate-ca approve --revocation {id}` or `deny --revocation {id}`"
                );
                publish_record(spool, item, record, Decision::Held, None)
            };
            match (mode, proof) {
                (Revocation::Proof, Some(Ok(()))) => {}
                (Revocation::Proof, Some(Err(e))) => {
                    return deny(record, Refusal::BadProof, e.to_string())
                }
                (Revocation::Proof, None) => {
                    return hold(
                        record,
                        "the request carries no proof of possession of the certificate's key"
                            .into(),
                    )
                }
                (Revocation::Manual, proof) => {
                    let about = match proof {
                        Some(Ok(())) => "its proof verifies with the certificate's key",
                        Some(Err(_)) => "its proof does NOT verify with the certificate's key",
                        None => "it carries no proof",
                    };
                    return hold(
                        record,
                        format!(
                            "the policy holds every revocation (revocation = \"manual\"); {about}"
                        ),
                    );
                }
            }
        }
    }
    let outcome = engine.with_ledger(|l| revoke(l, &target, reason, request.kind.as_deref()));
    match outcome {
        Ok(revoked) => {
            record.status = RevocationStatus::Revoked;
            record.revoked_at = Some(rfc3339(revoked.revoked_at));
            let crl = match crl::maybe_resign(engine, None) {
                Ok(signed) => signed,
                Err(e) => {
                    tracing::error!(error = %e, "the certificate is revoked but the CRL could not be signed; the daemon will retry");
                    None
                }
            };
            record.message = format!(
                "{what} revoked: {reason}{}",
                match &crl {
                    Some(c) => format!("; CRL number {} published", c.number),
                    None => String::new(),
                }
            );
            publish_record(spool, item, record, Decision::Revoked, crl)
        }
        Err(LifecycleError::AlreadyRevoked {
            revoked_at,
            reason: earlier,
            ..
        }) => {
            record.status = RevocationStatus::Revoked;
            record.message =
                format!("{what} was already revoked at {revoked_at} ({earlier}); nothing changed");
            record.revocation_reason = Some(earlier);
            record.revoked_at = Some(revoked_at);
            publish_record(spool, item, record, Decision::Revoked, None)
        }
        Err(LifecycleError::NotFound(message)) => {
            deny(record, Refusal::UnknownCertificate, message)
        }
        Err(e @ LifecycleError::WrongType { .. }) => {
            deny(record, Refusal::WrongType, e.to_string())
        }
        Err(e) => Err(e),
    }
}

/// Checks a proof against the certificate the ledger holds for the serial.
fn check_proof(
    found: &Found,
    reason: RevocationReason,
    proof: &str,
) -> Result<(), crate::proof::ProofError> {
    let cert = openssl::x509::X509::from_pem(found.certificate.as_bytes())
        .map_err(|_| crate::proof::ProofError::Mismatch)?;
    crate::proof::verify_certificate(&cert, reason, proof)
}

/// Writes the record (the commit point), then moves the file to `held/` or `archive/`.
fn publish_record(
    spool: &Spool,
    item: &Item,
    record: RevocationRecord,
    decision: Decision,
    crl: Option<crl::Signed>,
) -> Result<Handled, LifecycleError> {
    let mut json = serde_json::to_vec_pretty(&record).expect("records always serialise");
    json.push(b'\n');
    spool
        .publish(Sub::Status, &record_name(&record.request_id), &json)
        .map_err(|e| LifecycleError::io(&spool.path(Sub::Status), e))?;
    let sub = if decision == Decision::Held {
        Sub::Held
    } else {
        Sub::Archive
    };
    move_into(spool, item, sub)?;
    tracing::info!(
        request_id = %record.request_id,
        file = %item.name.to_string_lossy(),
        r#type = %record.kind,
        decision = decision.as_str(),
        reason = record.reason.as_deref().unwrap_or(""),
        serial = record.serial.as_deref().unwrap_or(""),
        "revocation request"
    );
    Ok(Handled {
        decision,
        record: Some(record),
        crl,
    })
}

fn move_into(spool: &Spool, item: &Item, sub: Sub) -> Result<(), LifecycleError> {
    spool
        .move_replacing(Sub::Processing, &item.claimed, sub, &item.name)
        .and_then(|()| spool.sync(sub))
        .map_err(|e| LifecycleError::io(&spool.path(sub), e))
}

/// Puts a claimed file back where it came from after a failure before anything was published.
fn put_back(spool: &Spool, item: &Item) {
    let back = if item.origin == Origin::Held {
        Sub::Held
    } else {
        Sub::Incoming
    };
    let _ = spool.move_file(Sub::Processing, &item.claimed, back, &item.name);
}

fn reject(spool: &Spool, item: &Item, reason: &str) -> Result<Handled, LifecycleError> {
    match spool.reject(Sub::Processing, &item.claimed, &item.name, reason) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(LifecycleError::io(&spool.path(Sub::Processing), e)),
    }
    tracing::warn!(file = %item.name.to_string_lossy(), reason, decision = "rejected", "rejected a file that is not a revocation request");
    Ok(Handled {
        decision: Decision::Rejected,
        record: None,
        crl: None,
    })
}

fn not_found_message(target: &Target) -> String {
    match target {
        Target::Serial(s) => format!("no certificate with serial {s} in the ledger"),
        Target::Request(id) => {
            let hint = if id.as_str().chars().all(|c| c.is_ascii_hexdigit()) {
                " (and it is not a serial: serials have 32 hex digits)"
            } else {
                ""
            };
            format!("no certificate was issued for request {id}{hint}")
        }
        Target::Either(s, _) => {
            format!("no certificate with serial {s}, nor one issued for a request of that id")
        }
    }
}

fn state_dir(ledger: &std::path::Path) -> std::path::PathBuf {
    match ledger.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => std::path::PathBuf::from("."),
    }
}

fn shorten(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(80).collect()
}

/// Largest revocation request file.
const MAX_BYTES: u64 = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let hex = "01".repeat(16);
        assert!(matches!(Target::parse(&hex), Ok(Target::Either(..))));
        let colons = vec!["0A"; 16].join(":");
        assert!(matches!(Target::parse(&colons), Ok(Target::Serial(_))));
        assert!(matches!(Target::parse("r1"), Ok(Target::Request(_))));
        let e = Target::parse("01:02:03").unwrap_err();
        assert!(
            e.is_bad_input() && e.to_string().contains("32 hex digits"),
            "{e}"
        );
        assert!(Target::parse("a b").unwrap_err().is_bad_input());
    }

    #[test]
    fn reasons_parse_and_remove_from_crl_is_refused() {
        assert_eq!(
            parse_reason("keycompromise").unwrap(),
            RevocationReason::KeyCompromise
        );
        let e = parse_reason("stolen").unwrap_err().to_string();
        assert!(
            e.contains("keyCompromise") && !e.contains("removeFromCRL"),
            "{e}"
        );
        assert!(parse_reason("removeFromCRL").is_err());
    }

    #[test]
    fn requests_parse() {
        let r: RevocationRequest =
            serde_json::from_str(r#"{"serial":"01","reason":"superseded"}"#).unwrap();
        assert_eq!(r.kind, None);
        assert_eq!(r.proof, None);
        let r: RevocationRequest = serde_json::from_str(
            r#"{"request_id":"r1","reason":"keyCompromise","proof":"AAAA","type":"webhook"}"#,
        )
        .unwrap();
        assert_eq!(r.kind.as_deref(), Some("webhook"));
        assert_eq!(r.proof.as_deref(), Some("AAAA"));
        assert!(serde_json::from_str::<RevocationRequest>(r#"{"reason":"x","extra":1}"#).is_err());
    }

    #[test]
    fn time_text_is_used_for_records() {
        assert_eq!(time_text(0), "1970-01-01T00:00:00Z");
    }
}
