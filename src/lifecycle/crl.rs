//! Issuing CRLs: numbering, the CRL state file, publishing, and the daemon's decision to
//! re-sign.
//!
//! [`issue`] signs a complete CRL v2 listing every revoked certificate the ledger records (with
//! its revocation time and reason), then, in this order: appends the ledger's `crl` event
//! (flushed), writes `published/ca.crl` (DER) and `published/ca.crl.pem` atomically, and saves
//! `<state>/crl.json`. The CRL number is the last number the ledger records plus one; the state
//! file is a convenience copy of the last CRL's facts, and when it is missing or disagrees with
//! the ledger it is rebuilt from the ledger with a warning (the ledger is the truth). A lock file
//! (`<state>/crl.lock`) keeps two processes (the daemon and an operator's `crl`) from signing
//! at once, so numbers never repeat.
//!
//! [`maybe_resign`] is the daemon's check, cheap enough for every batch: it looks at the
//! published CRL (what clients see) and signs a new one when there is none, when it lists other
//! serials than the ledger's revocations, or when less than a third of its validity is left.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use openssl::x509::{X509Crl, X509Ref};
use serde::{Deserialize, Serialize};

use super::inventory::{self, time_text, CrlRecord, IndexUse};
use super::LifecycleError;
use crate::fsx::{self, hex};
use crate::ledger::{Event, Ledger};
use crate::request::rfc3339;
use crate::signer::ca::{asn1_to_utc, Ca};
use crate::signer::crl::{build_crl, der_to_pem, CrlEntry, CrlParams, RevocationReason};
use crate::spool::layout::Sub;
use crate::spool::{Engine, Spool};

/// The largest published CRL read back (a million entries take about 40 MB).
const MAX_CRL_BYTES: u64 = 256 << 20;

/// How long a CRL is valid: at least ten seconds, at most [`MAX_DAYS`] days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrlValidity(Duration);

impl CrlValidity {
    /// `days` whole days (`crl --days N`): 1 to [`MAX_DAYS`].
    pub fn days(days: u64) -> Result<Self, LifecycleError> {
        if !(1..=u64::from(MAX_DAYS)).contains(&days) {
            return Err(LifecycleError::BadInput(format!(
                "a CRL validity of {days} days is out of range: use 1 to {MAX_DAYS} days"
            )));
        }
        Ok(Self(Duration::days(days as i64)))
    }

    /// Any validity from ten seconds to [`MAX_DAYS`] days (`crl --validity`, tests).
    pub fn new(d: Duration) -> Result<Self, LifecycleError> {
        if d < Duration::seconds(10) || d > Duration::days(i64::from(MAX_DAYS)) {
            return Err(LifecycleError::BadInput(format!(
                "a CRL validity of {}s is out of range: use 10s to {MAX_DAYS} days",
                d.num_seconds()
            )));
        }
        Ok(Self(d))
    }

    /// The duration.
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl Default for CrlValidity {
    fn default() -> Self {
        Self(Duration::days(i64::from(DEFAULT_DAYS)))
    }
}

/// `<state>/crl.json`: the facts of the last CRL signed (a cache of the ledger's `crl` event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlState {
    /// CRL number.
    pub number: u64,
    /// RFC 3339.
    pub this_update: String,
    /// RFC 3339.
    pub next_update: String,
    /// SHA-256 of the DER, hex.
    pub sha256: String,
    /// Number of revoked certificates listed.
    pub entries: usize,
}

/// A CRL signed and published by [`issue`].
#[derive(Clone, Debug)]
pub struct Signed {
    /// CRL number.
    pub number: u64,
    /// thisUpdate.
    pub this_update: DateTime<Utc>,
    /// nextUpdate.
    pub next_update: DateTime<Utc>,
    /// Revoked certificates listed.
    pub entries: usize,
    /// SHA-256 of the DER, hex.
    pub sha256: String,
    /// `published/ca.crl`.
    pub der_path: PathBuf,
    /// `published/ca.crl.pem`.
    pub pem_path: PathBuf,
    /// What was wrong with the state file, if anything (also logged).
    pub state_warning: Option<String>,
}

/// What the published CRL says, read back from `published/ca.crl`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds (None if absent).
    pub next_update: Option<i64>,
    /// Serials listed (16-byte serials only; others cannot be ours).
    pub serials: HashSet<[u8; 16]>,
}

/// Signs a CRL of every revocation in the ledger, valid for `validity` from now, and publishes
/// it under `spool/published/`. `ledger` is the open ledger of the CA's state directory.
pub fn issue(
    ca: &Ca,
    ledger: &mut Ledger,
    spool: &Spool,
    validity: CrlValidity,
) -> Result<Signed, LifecycleError> {
    let state = state_dir(ledger.path());
    let _lock = lock(&state)?;
    let inv = inventory::load(&state, ledger.path(), IndexUse::ReadWrite)?.inventory;
    let state_warning = check_state(&state, inv.last_crl.as_ref());
    if let Some(w) = &state_warning {
        tracing::warn!(state = %state.join(STATE_FILE).display(), "{w}");
    }
    let number = inv.last_crl.as_ref().map_or(1, |c| c.number + 1);
    let this_update = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_default();
    let next_update = this_update + validity.duration();
    let entries: Vec<CrlEntry> = inv
        .revoked()
        // removeFromCRL belongs to delta CRLs only; `revoke` never records it.
        .filter(|(_, r)| r.reason != RevocationReason::RemoveFromCrl)
        .map(|(c, r)| CrlEntry {
            serial: c.serial.to_vec(),
            revoked_at: DateTime::from_timestamp(r.revoked_at, 0).unwrap_or_default(),
            reason: r.reason,
        })
        .collect();
    let der = build_crl(&CrlParams {
        issuer_cert: &ca.cert,
        issuer_key: &ca.key,
        number,
        this_update,
        next_update,
        entries: &entries,
    })?;
    let sha256 = hex::encode(openssl::sha::sha256(&der));
    // The ledger first (flushed), then what clients see, then the cache.
    ledger.append(&[Event::Crl {
        number,
        this_update: rfc3339(this_update),
        next_update: rfc3339(next_update),
        sha256: sha256.clone(),
    }])?;
    let published = spool.path(Sub::Published);
    let der_path = published.join(DER_NAME);
    let pem_path = published.join(PEM_NAME);
    spool
        .publish(Sub::Published, OsStr::new(DER_NAME), &der)
        .map_err(|e| LifecycleError::io(&der_path, e))?;
    spool
        .publish(
            Sub::Published,
            OsStr::new(PEM_NAME),
            der_to_pem(&der).as_bytes(),
        )
        .map_err(|e| LifecycleError::io(&pem_path, e))?;
    let record = CrlState {
        number,
        this_update: rfc3339(this_update),
        next_update: rfc3339(next_update),
        sha256: sha256.clone(),
        entries: entries.len(),
    };
    let state_path = state.join(STATE_FILE);
    let mut json = serde_json::to_vec_pretty(&record).expect("the CRL state always serialises");
    json.push(b'\n');
    fsx::write_atomic(&state_path, &json, fsx::MODE_SECRET)
        .map_err(|e| LifecycleError::io(&state_path, e))?;
    tracing::info!(number, entries = entries.len(), next_update = %rfc3339(next_update), "CRL signed");
    Ok(Signed {
        number,
        this_update,
        next_update,
        entries: entries.len(),
        sha256,
        der_path,
        pem_path,
        state_warning,
    })
}

/// The daemon's hook: signs and publishes a new CRL when revocations are on no published CRL
/// yet, when the published
/// one does not list exactly the ledger's revocations, or when less than a third of its
/// validity is left. `validity` defaults to the published CRL's own validity (so that a
/// long-lived CRL made with `crl --days N` stays long-lived), else [`DEFAULT_DAYS`].
///
/// Call it after each batch and on the daemon's timer, never while holding the engine's ledger
/// (it takes it). Returns what was signed, or `None` when the published CRL is still good.
pub fn maybe_resign(
    engine: &Engine,
    validity: Option<CrlValidity>,
) -> Result<Option<Signed>, LifecycleError> {
    let now = Utc::now().timestamp();
    let published = read_published(&engine.spool, &engine.ca().cert);
    let why = engine.with_ledger(|l| -> Result<_, LifecycleError> {
        l.refresh()?;
        let index = l.index();
        // Orphan revocations (a serial never issued) cannot be listed: ignore them here too.
        let revoked: HashSet<[u8; 16]> = index
            .revoked
            .iter()
            .filter(|s| index.issued.contains_key(*s))
            .copied()
            .collect();
        Ok(resign_reason(published.as_ref(), &revoked, now))
    })?;
    let Some(why) = why else {
        return Ok(None);
    };
    let validity = validity
        .or_else(|| published.as_ref().and_then(Published::validity))
        .unwrap_or_default();
    let signed = engine.with_ledger(|l| issue(engine.ca(), l, &engine.spool, validity))?;
    tracing::info!(number = signed.number, reason = why, "re-signed the CRL");
    Ok(Some(signed))
}

/// Why a new CRL is needed, or `None` while the published one is current.
pub fn resign_reason(
    published: Option<&Published>,
    revoked: &HashSet<[u8; 16]>,
    now: i64,
) -> Option<&'static str> {
    // No CRL yet: one is needed once something is revoked (`crl` makes one on demand).
    let Some(p) = published else {
        return (!revoked.is_empty()).then_some("revocations are on no published CRL yet");
    };
    let Some(next) = p.next_update else {
        return Some("the published CRL has no nextUpdate");
    };
    if next - now < (next - p.this_update) / 3 {
        return Some("less than a third of the CRL's validity is left");
    }
    if &p.serials != revoked {
        return Some("the revocations in the ledger differ from the published CRL");
    }
    None
}

/// Reads `published/ca.crl` if it is a CRL signed by `ca_cert` (else `None`).
pub fn read_published(spool: &Spool, ca_cert: &X509Ref) -> Option<Published> {
    let der = spool
        .dir(Sub::Published)
        .read_small(OsStr::new(DER_NAME), MAX_CRL_BYTES)?;
    let crl = X509Crl::from_der(&der).ok()?;
    let key = ca_cert.public_key().ok()?;
    if !crl.verify(&key).ok()? {
        return None;
    }
    let serials = crl
        .get_revoked()
        .map(|stack| {
            stack
                .iter()
                .filter_map(|r| {
                    let bytes = r.serial_number().to_bn().ok()?.to_vec_padded(16).ok()?;
                    <[u8; 16]>::try_from(bytes).ok()
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Published {
        this_update: asn1_to_utc(crl.last_update()).timestamp(),
        next_update: crl.next_update().map(|t| asn1_to_utc(t).timestamp()),
        serials,
    })
}

impl Published {
    /// nextUpdate − thisUpdate, when that is a usable validity.
    pub fn validity(&self) -> Option<CrlValidity> {
        CrlValidity::new(Duration::seconds(self.next_update? - self.this_update)).ok()
    }
}

/// Compares `<state>/crl.json` with the ledger's last `crl` event; says what is wrong, if
/// anything. The ledger wins: the caller rewrites the state after signing.
pub fn check_state(state: &Path, last: Option<&CrlRecord>) -> Option<String> {
    let path = state.join(STATE_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return last.map(|l| {
                format!(
                    "the CRL state file {} is missing; rebuilt from the ledger (last CRL number {})",
                    path.display(),
                    l.number
                )
            });
        }
        Err(e) => {
            return Some(format!(
                "cannot read the CRL state file {}: {e}; using the ledger",
                path.display()
            ))
        }
    };
    let parsed: CrlState = match serde_json::from_slice(&text) {
        Ok(s) => s,
        Err(e) => {
            return Some(format!(
                "the CRL state file {} is damaged ({e}); rebuilt from the ledger{}",
                path.display(),
                last.map(|l| format!(" (last CRL number {})", l.number))
                    .unwrap_or_default()
            ))
        }
    };
    let Some(last) = last else {
        return Some(format!(
            "the CRL state file {} names CRL number {} but the ledger records no CRL; ignored",
            path.display(),
            parsed.number
        ));
    };
    let agrees = parsed.number == last.number
        && parsed.sha256 == last.sha256
        && parsed.this_update == time_text(last.this_update)
        && parsed.next_update == time_text(last.next_update);
    (!agrees).then(|| {
        format!(
            "the CRL state file {} does not match the ledger (it says CRL number {}, the ledger {}): \
             it was edited or restored from elsewhere; rebuilt from the ledger",
            path.display(),
            parsed.number,
            last.number
        )
    })
}

fn state_dir(ledger: &Path) -> PathBuf {
    match ledger.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Holds `<state>/crl.lock` exclusively until dropped. The (empty) lock file is readable by
/// all and opened read-only when it exists (enough for `flock`), so that one created by another
/// user (root running `crl` in the daemon's state directory) does not lock the daemon out.
fn lock(state: &Path) -> Result<std::fs::File, LifecycleError> {
    let path = state.join(LOCK_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(fsx::MODE_PUBLIC)
            .open(&path)
            .map_err(|e| LifecycleError::io(&path, e))?,
        Err(e) => return Err(LifecycleError::io(&path, e)),
    };
    file.lock().map_err(|e| LifecycleError::io(&path, e))?;
    Ok(file)
}

/// `crl` without `--days`: a week, short enough that a lost key is noticed, long enough for
/// a daemon that re-signs at two thirds.
pub const DEFAULT_DAYS: u32 = 7;
/// The longest CRL `crl --days` signs (ten years); anything longer is a typo.
pub const MAX_DAYS: u32 = 3650;
/// The CRL state file in the state directory.
pub const STATE_FILE: &str = "crl.json";
/// The published DER CRL (DESIGN §2).
pub const DER_NAME: &str = "ca.crl";
/// The published PEM CRL.
pub const PEM_NAME: &str = "ca.crl.pem";
const LOCK_FILE: &str = "crl.lock";

#[cfg(test)]
mod tests {
    use super::*;

    fn published(this: i64, next: i64, serials: &[u8]) -> Published {
        Published {
            this_update: this,
            next_update: Some(next),
            serials: serials.iter().map(|s| [*s; 16]).collect(),
        }
    }

    #[test]
    fn resign_when_missing_changed_or_two_thirds_gone() {
        let revoked: HashSet<[u8; 16]> = [[1u8; 16]].into();
        assert!(resign_reason(None, &revoked, 0).is_some());
        assert!(
            resign_reason(None, &HashSet::new(), 0).is_none(),
            "nothing revoked, no CRL needed"
        );
        // Fresh and complete: nothing to do.
        assert_eq!(
            resign_reason(Some(&published(0, 300, &[1])), &revoked, 10),
            None
        );
        // Exactly a third left is still fine; less is not.
        assert_eq!(
            resign_reason(Some(&published(0, 300, &[1])), &revoked, 200),
            None
        );
        assert!(resign_reason(Some(&published(0, 300, &[1])), &revoked, 201).is_some());
        // A revocation since: re-sign.
        assert!(resign_reason(Some(&published(0, 300, &[])), &revoked, 10).is_some());
        assert!(resign_reason(Some(&published(0, 300, &[1, 2])), &revoked, 10).is_some());
    }

    #[test]
    fn validity_bounds() {
        assert!(CrlValidity::days(0).is_err());
        assert!(CrlValidity::days(3651).is_err());
        assert_eq!(CrlValidity::days(7).unwrap(), CrlValidity::default());
        assert!(CrlValidity::new(Duration::seconds(9)).is_err());
        assert!(CrlValidity::new(Duration::seconds(10)).is_ok());
    }

    #[test]
    fn state_file_checks_against_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let last = CrlRecord {
            number: 3,
            this_update: 1_700_000_000,
            next_update: 1_700_600_000,
            sha256: "ab".repeat(32),
        };
        assert_eq!(check_state(dir.path(), None), None);
        assert!(check_state(dir.path(), Some(&last))
            .unwrap()
            .contains("missing"));
        let good = CrlState {
            number: 3,
            this_update: time_text(last.this_update),
            next_update: time_text(last.next_update),
            sha256: last.sha256.clone(),
            entries: 0,
        };
        let write = |s: &CrlState| {
            std::fs::write(dir.path().join(STATE_FILE), serde_json::to_vec(s).unwrap()).unwrap();
        };
        write(&good);
        assert_eq!(check_state(dir.path(), Some(&last)), None);
        write(&CrlState {
            number: 99,
            ..good.clone()
        });
        assert!(check_state(dir.path(), Some(&last))
            .unwrap()
            .contains("does not match"));
        std::fs::write(dir.path().join(STATE_FILE), b"{").unwrap();
        assert!(check_state(dir.path(), Some(&last))
            .unwrap()
            .contains("damaged"));
    }
}
