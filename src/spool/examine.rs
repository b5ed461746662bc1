//! Phase 1 of a batch: look at one claimed file and say what must become of it ([`Work`]).
//!
//! Reads the file through the spool's handles (never following links or blocking), honours
//! earlier outcomes (a status record, or the ledger after a crash) so that nothing is decided
//! twice, and asks policy about everything new. Writes nothing. What it finds in `held/`,
//! `status/` and `archive/` only ever makes it more careful: whether an id may be signed is
//! decided by the ledger, under its lock, right before signing (see the engine, phase 2).

use std::ffi::{OsStr, OsString};
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::layout::{classify, Kind, Name, Spool, Sub};
use crate::fsx::{self, Untrusted};
use crate::ledger::{Entry, Ledger};
use crate::policy::{self, Decision, Plan, Policy, Reason};
use crate::request::{Envelope, RequestId, RequestType, Status, StatusRecord};
use crate::signer::issue::Issued;
use crate::signer::serial::Serial;

/// Largest envelope file (DESIGN §2).
pub const MAX_ENVELOPE_BYTES: u64 = 64 * 1024;

/// An operator's (or the clock's) decision about a held request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// `approve ID`: sign if the current policy still allows it.
    Approve,
    /// `deny ID --reason TEXT`.
    Deny(String),
    /// `held_ttl` ran out.
    Expire,
}

/// Where a claimed file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `incoming/`: a new submission.
    Incoming,
    /// `held/`: claimed by an operator's command or by expiry.
    Held,
    /// Found in `processing/` at start: left there by a signer that stopped.
    Recovered,
}

/// One file claimed into `processing/`.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its name as it came (`<id>.csr`, `<id>.json`): the name it keeps in `archive/`, `held/`
    /// and `rejected/`.
    pub name: OsString,
    /// Its name in `processing/` (`<id>.request`: one claim per id, whatever its extension).
    pub claimed: OsString,
    /// Where it was claimed from.
    pub origin: Origin,
    /// When examination started.
    pub started: Instant,
}

/// What must become of one claimed file.
#[derive(Debug)]
pub enum Work {
    /// Sign this plan (serial chosen in phase 2).
    Approve {
        id: RequestId,
        kind: String,
        plan: Plan,
        serial: Option<Serial>,
        public_key_der: Vec<u8>,
        item: Item,
    },
    /// Signed; publish.
    Signed {
        id: RequestId,
        kind: String,
        plan: Plan,
        issued: Box<Issued>,
        item: Item,
    },
    /// Denied (recorded in the ledger in phase 2).
    Deny {
        id: RequestId,
        kind: String,
        reason: Reason,
        message: String,
        item: Item,
    },
    /// Held for an operator.
    Hold {
        id: RequestId,
        kind: String,
        message: String,
        item: Item,
    },
    /// Issued before a crash: publish from the ledger, never sign again.
    Republish {
        id: RequestId,
        entry: Box<Entry>,
        item: Item,
    },
    /// Denied before a crash: publish from the ledger.
    Restore {
        id: RequestId,
        entry: Box<Entry>,
        item: Item,
    },
    /// Already has its status record: only the move to `archive/` (or back to `held/`) is left.
    Finish {
        id: RequestId,
        pending: bool,
        item: Item,
    },
    /// The same content again: nothing to do.
    Unchanged { id: RequestId, item: Item },
    /// Same id, different content: rejected `duplicate_request`, the first record stays.
    Duplicate {
        id: RequestId,
        kind: String,
        item: Item,
    },
    /// Not a request: moved to `rejected/`.
    Reject { reason: String, item: Item },
}

impl Work {
    /// The claimed file.
    pub fn item(&self) -> &Item {
        match self {
            Self::Approve { item, .. }
            | Self::Signed { item, .. }
            | Self::Deny { item, .. }
            | Self::Hold { item, .. }
            | Self::Republish { item, .. }
            | Self::Restore { item, .. }
            | Self::Finish { item, .. }
            | Self::Unchanged { item, .. }
            | Self::Duplicate { item, .. }
            | Self::Reject { item, .. } => item,
        }
    }

    /// The request id, when the file is a request.
    pub fn id(&self) -> Option<&RequestId> {
        match self {
            Self::Approve { id, .. }
            | Self::Signed { id, .. }
            | Self::Deny { id, .. }
            | Self::Hold { id, .. }
            | Self::Republish { id, .. }
            | Self::Restore { id, .. }
            | Self::Finish { id, .. }
            | Self::Unchanged { id, .. }
            | Self::Duplicate { id, .. } => Some(id),
            Self::Reject { .. } => None,
        }
    }
}

/// What the ledger already holds about a request (looked up before examining, so that the
/// expensive part of examining runs without the ledger's lock).
#[derive(Debug, Default)]
pub struct Prior {
    /// Its `issued` entry.
    pub issued: Option<Entry>,
    /// Its last `denied` entry.
    pub denied: Option<Entry>,
}

impl Prior {
    /// Looks a request up in the ledger.
    pub fn of(ledger: &Ledger, id: Option<&RequestId>) -> Self {
        let Some(id) = id else {
            return Self::default();
        };
        Self {
            issued: ledger.issued_for(id.as_str()).ok().flatten(),
            denied: ledger.denied_for(id.as_str()).ok().flatten(),
        }
    }
}

/// The request a claimed file holds: its id and kind, from its name as it came.
pub fn request_of(item: &Item) -> Option<(RequestId, Kind)> {
    match classify(&item.name) {
        Name::Request(id, kind) => Some((id, kind)),
        _ => None,
    }
}

/// Examines one claimed file (`processing/<item.claimed>`).
pub fn examine(
    spool: &Spool,
    item: Item,
    policy: &Policy,
    ctx: &policy::Context,
    prior: &Prior,
    op: Option<Operator>,
) -> Work {
    let reject = |reason: String, item: Item| Work::Reject { reason, item };
    let (id, file_kind) = match classify(&item.name) {
        Name::Request(id, kind) => (id, kind),
        Name::Revocation(_) => return reject("revocation requests are handled by `smsgate-ca revoke`; this file was not one the signer could read".into(), item),
        Name::Bad(reason) => return reject(reason, item),
        Name::InProgress => return reject("a temporary file was found in processing/".into(), item),
    };
    let limit = match file_kind {
        Kind::Csr => policy.max_csr_bytes(RequestType::Webhook.as_str()),
        Kind::Envelope => MAX_ENVELOPE_BYTES,
    };
    let (content, size) =
        match spool.read_untrusted(Sub::Processing, &item.claimed, limit) {
            Ok(Untrusted::NotRegular(fsx::HARD_LINK)) => return reject(
                "a hard link to another file: copy or rename the request into incoming/ instead"
                    .into(),
                item,
            ),
            Ok(Untrusted::NotRegular(what)) => {
                return reject(
                    format!(
                "{what}, not a regular file: requests must be plain files (never followed or read)"
            ),
                    item,
                )
            }
            Ok(Untrusted::Content(c)) => {
                let n = c.len() as u64;
                (Some(c), n)
            }
            Ok(Untrusted::TooLarge(n)) => (None, n),
            Err(e) => return reject(format!("cannot read the file: {e}"), item),
        };

    let existing = read_status(spool, &id);
    if op.is_none() {
        let pending = matches!(&existing, Some(r) if r.status == Status::Pending);
        if existing.is_none() || pending {
            // A crash between the ledger and the status record: publish what the ledger holds.
            if let Some(entry) = &prior.issued {
                return Work::Republish {
                    id,
                    entry: Box::new(entry.clone()),
                    item,
                };
            }
            if let Some(entry) = &prior.denied {
                return Work::Restore {
                    id,
                    entry: Box::new(entry.clone()),
                    item,
                };
            }
        }
        if let Some(record) = &existing {
            let kind = record.kind.clone();
            return match original(spool, &id) {
                // A stop between the status record and the move: only the move is left. A new
                // file under an id that already has a record and no original is not trusted
                // to be that original (an operator's `approve` may hold it right now).
                None if item.origin == Origin::Recovered => Work::Finish { id, pending, item },
                None => Work::Duplicate { id, kind, item },
                Some((sub, orig)) => {
                    let same = content.as_ref().is_some_and(|c| {
                        spool
                            .dir(sub)
                            .read_small(&orig, MAX_ENVELOPE_BYTES.max(limit))
                            .is_some_and(|o| &o == c)
                    });
                    if same {
                        Work::Unchanged { id, item }
                    } else {
                        Work::Duplicate { id, kind, item }
                    }
                }
            };
        }
    }

    let Some(content) = content else {
        let kind = existing
            .as_ref()
            .map_or("webhook".to_owned(), |r| r.kind.clone());
        return Work::Deny {
            id,
            kind,
            reason: Reason::TooLarge,
            message: format!(
                "the file is {size} bytes, over the limit of {limit} bytes: send one PEM CSR"
            ),
            item,
        };
    };
    let deny = |kind: &str, reason: Reason, message: String, item: Item| Work::Deny {
        id: id.clone(),
        kind: kind.to_owned(),
        reason,
        message,
        item,
    };
    let (kind, csr_bytes): (String, Vec<u8>) = match file_kind {
        Kind::Csr => (RequestType::Webhook.as_str().to_owned(), content),
        Kind::Envelope => match serde_json::from_slice::<Envelope>(&content) {
            Ok(env) if env.request_id == id.as_str() => (env.kind, env.content.into_bytes()),
            Ok(env) => {
                let shown: String = env.request_id.chars().take(64).collect();
                return deny(&env.kind, Reason::InvalidCsr, format!(
                    "the envelope's request_id {shown:?} differs from its file name {id}.json: they must be equal"
                ), item);
            }
            Err(e) => {
                return deny("webhook", Reason::InvalidCsr, format!(
                    "the envelope is not valid: {e}; write {{\"request_id\", \"type\", \"content\"}} as JSON"
                ), item)
            }
        },
    };
    let kind_shown: String = kind.chars().filter(|c| !c.is_control()).take(64).collect();
    let evaluation = policy::evaluate(&csr_bytes, &kind, policy, ctx);
    let decision = match (op, evaluation.decision) {
        (Some(Operator::Deny(text)), _) => {
            return deny(
                &kind_shown,
                Reason::DeniedByOperator,
                if text.is_empty() {
                    "denied by the CA operator".into()
                } else {
                    text
                },
                item,
            )
        }
        (Some(Operator::Expire), _) => {
            let ttl = policy
                .profile(&kind)
                .map_or(policy.defaults.held_ttl, |p| p.settings.held_ttl);
            return deny(
                &kind_shown,
                Reason::Expired,
                format!(
                    "no operator decided within {}; submit the request again",
                    crate::duration::format(ttl)
                ),
                item,
            );
        }
        (Some(Operator::Approve), Decision::Hold(plan)) => Decision::Approve(plan),
        (_, d) => d,
    };
    match decision {
        Decision::Deny(d) => deny(&kind_shown, d.reason, d.message, item),
        Decision::Hold(plan) => Work::Hold {
            id,
            kind,
            message: format!(
                "held for the CA operator's approval (profile {}, IP {})",
                plan.profile, plan.ip
            ),
            item,
        },
        Decision::Approve(plan) => Work::Approve {
            id,
            kind,
            plan,
            serial: None,
            public_key_der: evaluation.public_key_der.unwrap_or_default(),
            item,
        },
    }
}

/// The status record of a request, if one exists and parses.
pub fn read_status(spool: &Spool, id: &RequestId) -> Option<StatusRecord> {
    let bytes = spool
        .dir(Sub::Status)
        .read_small(&Spool::status_name(id), 1 << 20)?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether a held request has waited longer than its profile's `held_ttl`.
pub fn held_expired(spool: &Spool, id: &RequestId, policy: &Policy, now: DateTime<Utc>) -> bool {
    let Some(record) = read_status(spool, id) else {
        return false;
    };
    if record.status != Status::Pending {
        return false;
    }
    let Ok(held_at) = DateTime::parse_from_rfc3339(&record.decided_at) else {
        return false;
    };
    let ttl = policy
        .profile(&record.kind)
        .map_or(policy.defaults.held_ttl, |p| p.settings.held_ttl);
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    held_at.with_timezone(&Utc) + ttl < now
}

/// The original file of an already-decided request (in `archive/` or `held/`).
fn original(spool: &Spool, id: &RequestId) -> Option<(Sub, OsString)> {
    [Sub::Archive, Sub::Held]
        .into_iter()
        .flat_map(|d| ["csr", "json"].map(|e| (d, OsString::from(format!("{id}.{e}")))))
        .find(|(d, name)| spool.exists(*d, name))
}

/// The name a claimed request has in `processing/`: one per id, so that two signers (the
/// daemon and an operator's `approve`) can never hold the same id at once.
pub fn claim_name(id: &RequestId) -> OsString {
    OsString::from(format!("{id}.request"))
}

/// Reads a name found in `processing/` at start: `<id>.request` (its kind told by its first
/// byte: `{` for an envelope), or the `<id>.csr` / `<id>.json` of earlier versions.
pub fn recovered_name(spool: &Spool, claimed: &OsStr) -> OsString {
    let Some(text) = claimed.to_str() else {
        return claimed.to_owned();
    };
    let Some(stem) = text.strip_suffix(".request") else {
        return claimed.to_owned();
    };
    let envelope = spool
        .dir(Sub::Processing)
        .open_read(claimed)
        .ok()
        .and_then(|f| {
            use std::io::Read;
            let mut head = [0u8; 64];
            let n = f.take(64).read(&mut head).ok()?;
            head[..n]
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .map(|b| *b == b'{')
        })
        .unwrap_or(false);
    OsString::from(format!("{stem}.{}", if envelope { "json" } else { "csr" }))
}
