//! Phase 1 of a batch: look at one claimed file and say what must become of it ([`Work`]).
//!
//! Reads the file without following links or blocking, honours earlier outcomes (a status
//! record, or the ledger after a crash) so that nothing is decided or signed twice, and asks
//! policy about everything new. Writes nothing.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::layout::{classify, Kind, Name, Spool};
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
        claimed: PathBuf,
        name: OsString,
        started: Instant,
    },
    /// Signed; publish.
    Signed {
        id: RequestId,
        kind: String,
        plan: Plan,
        issued: Box<Issued>,
        claimed: PathBuf,
        name: OsString,
        started: Instant,
    },
    /// Denied (recorded in the ledger in phase 2).
    Deny {
        id: RequestId,
        kind: String,
        reason: Reason,
        message: String,
        claimed: PathBuf,
        name: OsString,
        started: Instant,
    },
    /// Held for an operator.
    Hold {
        id: RequestId,
        kind: String,
        message: String,
        claimed: PathBuf,
        name: OsString,
        started: Instant,
    },
    /// Issued before a crash: publish from the ledger, never sign again.
    Republish {
        id: RequestId,
        entry: Box<Entry>,
        claimed: PathBuf,
        name: OsString,
        started: Instant,
    },
    /// Denied before a crash: publish from the ledger.
    Restore {
        id: RequestId,
        entry: Box<Entry>,
        claimed: PathBuf,
        name: OsString,
        started: Instant,
    },
    /// Already has its status record: only the move to `archive/` (or back to `held/`) is left.
    Finish {
        id: RequestId,
        pending: bool,
        claimed: PathBuf,
        name: OsString,
        started: Instant,
    },
    /// The same content again: nothing to do.
    Unchanged {
        id: RequestId,
        claimed: PathBuf,
        name: OsString,
        started: Instant,
    },
    /// Same id, different content: rejected `duplicate_request`, the first record stays.
    Duplicate {
        id: RequestId,
        kind: String,
        claimed: PathBuf,
        name: OsString,
        started: Instant,
    },
    /// Not a request: moved to `rejected/`.
    Reject {
        reason: String,
        claimed: PathBuf,
        name: OsString,
        started: Instant,
    },
}

impl Work {
    /// The claimed file.
    pub fn claimed(&self) -> &Path {
        match self {
            Self::Approve { claimed, .. }
            | Self::Signed { claimed, .. }
            | Self::Deny { claimed, .. }
            | Self::Hold { claimed, .. }
            | Self::Republish { claimed, .. }
            | Self::Restore { claimed, .. }
            | Self::Finish { claimed, .. }
            | Self::Unchanged { claimed, .. }
            | Self::Duplicate { claimed, .. }
            | Self::Reject { claimed, .. } => claimed,
        }
    }

    /// The file's name.
    pub fn name(&self) -> &OsStr {
        match self {
            Self::Approve { name, .. }
            | Self::Signed { name, .. }
            | Self::Deny { name, .. }
            | Self::Hold { name, .. }
            | Self::Republish { name, .. }
            | Self::Restore { name, .. }
            | Self::Finish { name, .. }
            | Self::Unchanged { name, .. }
            | Self::Duplicate { name, .. }
            | Self::Reject { name, .. } => name,
        }
    }

    /// When examination started.
    pub fn started(&self) -> Instant {
        match self {
            Self::Approve { started, .. }
            | Self::Signed { started, .. }
            | Self::Deny { started, .. }
            | Self::Hold { started, .. }
            | Self::Republish { started, .. }
            | Self::Restore { started, .. }
            | Self::Finish { started, .. }
            | Self::Unchanged { started, .. }
            | Self::Duplicate { started, .. }
            | Self::Reject { started, .. } => *started,
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
    /// Looks a file name's request up in the ledger.
    pub fn of(ledger: &Ledger, name: &OsStr) -> Self {
        let Name::Request(id, _) = classify(name) else {
            return Self::default();
        };
        Self {
            issued: ledger.issued_for(id.as_str()).ok().flatten(),
            denied: ledger.denied_for(id.as_str()).ok().flatten(),
        }
    }
}

/// Examines one claimed file.
pub fn examine(
    spool: &Spool,
    name: &OsStr,
    claimed: &Path,
    policy: &Policy,
    ctx: &policy::Context,
    prior: &Prior,
    op: Option<Operator>,
) -> Work {
    let started = Instant::now();
    let claimed_buf = claimed.to_owned();
    let name_buf = name.to_owned();
    let reject = |reason: String| Work::Reject {
        reason,
        claimed: claimed_buf.clone(),
        name: name_buf.clone(),
        started,
    };
    let (id, file_kind) = match classify(name) {
        Name::Request(id, kind) => (id, kind),
        Name::Revocation(_) => return reject("revocation requests are handled by `smsgate-ca revoke`; this file was not one the signer could read".into()),
        Name::Bad(reason) => return reject(reason),
        Name::InProgress => return reject("a temporary file was found in processing/".into()),
    };
    let meta = match std::fs::symlink_metadata(claimed) {
        Ok(m) => m,
        Err(e) => return reject(format!("cannot inspect the file: {e}")),
    };
    if meta.file_type().is_file() && meta.nlink() > 1 {
        return reject(
            "a hard link to another file: copy or rename the request into incoming/ instead".into(),
        );
    }
    let limit = match file_kind {
        Kind::Csr => policy.max_csr_bytes(RequestType::Webhook.as_str()),
        Kind::Envelope => MAX_ENVELOPE_BYTES,
    };
    let content = match fsx::read_untrusted(claimed, limit) {
        Ok(Untrusted::NotRegular(what)) => {
            return reject(format!(
                "{what}, not a regular file: requests must be plain files (never followed or read)"
            ))
        }
        Ok(Untrusted::Content(c)) => Some(c),
        Ok(Untrusted::TooLarge(_)) => None,
        Err(e) => return reject(format!("cannot read the file: {e}")),
    };
    let w = |make: &dyn Fn(PathBuf, OsString) -> Work| make(claimed.to_owned(), name.to_owned());

    let existing = read_status(spool, &id);
    if op.is_none() {
        let pending = matches!(&existing, Some(r) if r.status == Status::Pending);
        if existing.is_none() || pending {
            // A crash between the ledger and the status record: publish what the ledger holds.
            if let Some(entry) = &prior.issued {
                return w(&|claimed, name| Work::Republish {
                    id: id.clone(),
                    entry: Box::new(entry.clone()),
                    claimed,
                    name,
                    started,
                });
            }
            if let Some(entry) = &prior.denied {
                return w(&|claimed, name| Work::Restore {
                    id: id.clone(),
                    entry: Box::new(entry.clone()),
                    claimed,
                    name,
                    started,
                });
            }
        }
        if let Some(record) = &existing {
            return match original(spool, &id, claimed) {
                None => w(&|claimed, name| Work::Finish {
                    id: id.clone(),
                    pending,
                    claimed,
                    name,
                    started,
                }),
                Some(orig) => {
                    let same = content
                        .as_ref()
                        .is_some_and(|c| std::fs::read(&orig).is_ok_and(|o| &o == c));
                    if same {
                        w(&|claimed, name| Work::Unchanged {
                            id: id.clone(),
                            claimed,
                            name,
                            started,
                        })
                    } else {
                        let kind = record.kind.clone();
                        w(&|claimed, name| Work::Duplicate {
                            id: id.clone(),
                            kind: kind.clone(),
                            claimed,
                            name,
                            started,
                        })
                    }
                }
            };
        }
    }

    let deny = |kind: &str, reason: Reason, message: String| Work::Deny {
        id: id.clone(),
        kind: kind.to_owned(),
        reason,
        message,
        claimed: claimed.to_owned(),
        name: name.to_owned(),
        started,
    };
    let Some(content) = content else {
        let kind = existing.as_ref().map_or("webhook", |r| r.kind.as_str());
        return deny(
            kind,
            Reason::TooLarge,
            format!(
                "the file is {} bytes, over the limit of {limit} bytes: send one PEM CSR",
                meta.len()
            ),
        );
    };
    let (kind, csr_bytes): (String, Vec<u8>) = match file_kind {
        Kind::Csr => (RequestType::Webhook.as_str().to_owned(), content),
        Kind::Envelope => match serde_json::from_slice::<Envelope>(&content) {
            Ok(env) if env.request_id == id.as_str() => (env.kind, env.content.into_bytes()),
            Ok(env) => {
                let shown: String = env.request_id.chars().take(64).collect();
                return deny(&env.kind, Reason::InvalidCsr, format!(
                    "the envelope's request_id {shown:?} differs from its file name {id}.json: they must be equal"
                ));
            }
            Err(e) => {
                return deny("webhook", Reason::InvalidCsr, format!(
                    "the envelope is not valid: {e}; write {{\"request_id\", \"type\", \"content\"}} as JSON"
                ))
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
            );
        }
        (Some(Operator::Approve), Decision::Hold(plan)) => Decision::Approve(plan),
        (_, d) => d,
    };
    match decision {
        Decision::Deny(d) => deny(&kind_shown, d.reason, d.message),
        Decision::Hold(plan) => Work::Hold {
            id,
            kind,
            message: format!(
                "held for the CA operator's approval (profile {}, IP {})",
                plan.profile, plan.ip
            ),
            claimed: claimed.to_owned(),
            name: name.to_owned(),
            started,
        },
        Decision::Approve(plan) => Work::Approve {
            id,
            kind,
            plan,
            serial: None,
            public_key_der: evaluation.public_key_der.unwrap_or_default(),
            claimed: claimed.to_owned(),
            name: name.to_owned(),
            started,
        },
    }
}

/// The status record of a request, if one exists and parses.
pub fn read_status(spool: &Spool, id: &RequestId) -> Option<StatusRecord> {
    let path = spool.status_file(id);
    match fsx::read_untrusted(&path, 1 << 20) {
        Ok(Untrusted::Content(c)) => serde_json::from_slice(&c).ok(),
        _ => None,
    }
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

/// The original file of an already-decided request (in `archive/` or `held/`), unless it is
/// the claimed file itself.
fn original(spool: &Spool, id: &RequestId, claimed: &Path) -> Option<PathBuf> {
    [spool.archive(), spool.held()]
        .iter()
        .flat_map(|d| ["csr", "json"].map(|e| d.join(format!("{id}.{e}"))))
        .find(|p| p != claimed && p.exists())
}
