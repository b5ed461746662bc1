//! The bridge between a spool and the online API (`smsgate-ca sync`, DESIGN §2 and §5).
//!
//! One round has three steps, each idempotent:
//! 1. **pull**: pending requests listed by the API become envelopes in `incoming/` (written
//!    through a dot-named temp and `link(2)`, never replacing anything), and revocation
//!    requests become `incoming/<id>.revoke.json` (DESIGN §9), then are acknowledged, only
//!    once they are durable; what is pulled gets the API's own limits, at most `--max-pull`
//!    new files a round;
//! 2. **push**: status records in `status/` (pending, approved, denied; and the revocation
//!    records `<id>.revoke.json`) go to the API, each (id, status) once;
//! 3. **publish**: `published/ca.crt`, `ca.crl` and `ledger-checkpoint.json` are uploaded when
//!    their content changed.
//!
//! What was done is remembered under `<spool>/.sync/` ([`state`]) so that a restart neither
//! delivers twice nor forgets anything. The bridge writes only `incoming/` and `.sync/`; it
//! never touches what the daemon owns, never reads a CA key and never decides anything.
//! `--watch` runs rounds continuously ([`watch`]).

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

pub mod api;
pub mod backoff;
pub mod push;
pub mod state;
pub mod watch;

use crate::client::http::HttpError;
use crate::fsx;
use crate::request::{Envelope, RequestId};
use api::{Pending, SyncApi};
use state::SyncState;

/// Why a sync step failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The API could not be reached or answered something that is not the API's.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The API refused the token.
    #[error(
        "the API at {url} refused the sync token ({status}): check that --token-file holds the \
         token that serve reads from --sync-token-file"
    )]
    Unauthorized {
        /// The URL asked.
        url: String,
        /// 401 or 403.
        status: u16,
    },
    /// The spool could not be read or written (not writable, disk full).
    #[error("{what} {}: {source}", path.display())]
    Spool {
        /// What we were doing.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: io::Error,
    },
}

impl SyncError {
    /// Whether the API itself was out of reach (no point in trying the other steps).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Http(
                HttpError::Unreachable { .. }
                    | HttpError::Timeout { .. }
                    | HttpError::Tls { .. }
                    | HttpError::BadUrl { .. }
            ) | Self::Unauthorized { .. }
        )
    }
}

/// A spool and an API, bridged.
#[derive(Debug)]
pub struct Bridge {
    api: SyncApi,
    spool: PathBuf,
    state: SyncState,
    max_pull: usize,
    /// Listed items already found unusable (warned about once, not again).
    unusable: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// What a pull did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PullReport {
    /// Envelopes written into `incoming/`.
    pub delivered: usize,
    /// Requests already in the spool (or delivered before), acknowledged again.
    pub present: usize,
    /// Listed elements that were not usable envelopes (logged, not acknowledged).
    pub unusable: usize,
}

impl PullReport {
    fn add(&mut self, other: Self) {
        self.delivered += other.delivered;
        self.present += other.present;
        self.unusable += other.unusable;
    }
}

/// What one round did, and what failed.
#[derive(Debug, Default)]
pub struct Round {
    /// The pull step.
    pub pulled: PullReport,
    /// The push step.
    pub pushed: push::PushReport,
    /// The published files uploaded.
    pub published: Vec<&'static str>,
    /// The steps that failed.
    pub errors: Vec<SyncError>,
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sync: {} new request(s) delivered",
            self.pulled.delivered
        )?;
        if self.pulled.present > 0 {
            write!(f, " ({} already in the spool)", self.pulled.present)?;
        }
        write!(f, ", {} result(s) pushed", self.pushed.pushed)?;
        if self.pushed.conflicts > 0 {
            write!(f, " ({} conflicting)", self.pushed.conflicts)?;
        }
        if self.pushed.rejected > 0 {
            write!(f, " ({} refused by the API)", self.pushed.rejected)?;
        }
        if self.published.is_empty() {
            write!(f, ", published files unchanged")?;
        } else {
            write!(f, ", uploaded {}", self.published.join(", "))?;
        }
        if !self.errors.is_empty() {
            write!(f, ", {} step(s) failed", self.errors.len())?;
        }
        Ok(())
    }
}

impl Bridge {
    /// Bridges `spool` (which must exist) with `api`; creates `incoming/` and `.sync/` when
    /// missing.
    pub fn open(api: SyncApi, spool: &Path) -> Result<Self, SyncError> {
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| SyncError::Spool { what, path, source }
        };
        if !spool.is_dir() {
            return Err(SyncError::Spool {
                what: "the spool directory is missing:",
                path: spool.to_path_buf(),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        }
        let incoming = spool.join(INCOMING);
        if !incoming.is_dir() {
            fs::create_dir(&incoming)
                .or_else(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .map_err(io("cannot create", &incoming))?;
        }
        let state = SyncState::open(spool).map_err(io("cannot create", &spool.join(".sync")))?;
        Ok(Self {
            api,
            spool: spool.to_path_buf(),
            state,
            max_pull: DEFAULT_MAX_PULL,
            unusable: Default::default(),
        })
    }

    /// At most `n` envelopes are written into `incoming/` a round (`--max-pull`), and `--watch`
    /// pulls only while fewer than `n` wait there.
    pub fn with_max_pull(mut self, n: usize) -> Self {
        self.max_pull = n.max(1);
        self
    }

    /// `--max-pull`.
    pub fn max_pull(&self) -> usize {
        self.max_pull
    }

    /// How many request files wait in `incoming/` (dot names and temps excluded).
    pub fn waiting_in_incoming(&self) -> usize {
        fs::read_dir(self.spool.join(INCOMING))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        !name.starts_with('.') && !name.ends_with(".tmp")
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// The API side.
    pub fn api(&self) -> &SyncApi {
        &self.api
    }

    /// The spool directory.
    pub fn spool(&self) -> &Path {
        &self.spool
    }

    /// The durable state.
    pub fn state(&self) -> &SyncState {
        &self.state
    }

    /// One round: pull, push, publish. Stops early when the API is out of reach.
    pub fn round(&self, pusher: &mut push::Pusher) -> Round {
        let _span = tracing::info_span!("sync_round").entered();
        let mut round = Round::default();
        match self.pull() {
            Ok(r) => round.pulled = r,
            Err(e) => {
                let stop = e.is_unreachable();
                round.errors.push(e);
                if stop {
                    return round;
                }
            }
        }
        match pusher.push(self) {
            Ok(r) => round.pushed = r,
            Err(e) => {
                let stop = e.is_unreachable();
                round.errors.push(e);
                if stop {
                    return round;
                }
            }
        }
        match push::publish(self) {
            Ok(p) => round.published = p,
            Err(e) => round.errors.push(e),
        }
        round
    }

    /// Pulls listed requests, batch after batch without waiting, up to `--max-pull` new ones.
    pub fn pull(&self) -> Result<PullReport, SyncError> {
        let mut total = PullReport::default();
        while total.delivered < self.max_pull {
            let batch = self.api.requests(BATCH, None)?;
            let full = batch.len() >= BATCH;
            let report = self.deliver(batch, self.max_pull - total.delivered)?;
            total.add(report);
            // A full batch of nothing new (only items we cannot use) would list the same again.
            if !full || report.delivered + report.present == 0 {
                break;
            }
        }
        Ok(total)
    }

    /// Lists pending requests, long-polling up to `wait` when given.
    pub fn fetch(&self, wait: Option<std::time::Duration>) -> Result<Vec<Pending>, SyncError> {
        self.api.requests(BATCH.min(self.max_pull), wait)
    }

    /// Writes new envelopes into `incoming/` (at most `quota`), records them, then
    /// acknowledges every request that is now durable in the spool. On a write failure the
    /// requests delivered so far are still recorded and acknowledged; the rest (and those over
    /// the quota) stay listed by the API for the next round.
    pub fn deliver(&self, batch: Vec<Pending>, quota: usize) -> Result<PullReport, SyncError> {
        let mut report = PullReport::default();
        let mut fresh: Vec<RequestId> = Vec::new();
        let mut fresh_revocations: Vec<RequestId> = Vec::new();
        let mut ack: Vec<RequestId> = Vec::new();
        let mut failure = None;
        for item in batch {
            let envelope = match item {
                Pending::Envelope(e) => e,
                Pending::Revocation(r) => {
                    let Ok(id) = RequestId::parse(&r.request_id) else {
                        continue; // checked when listed
                    };
                    if self.state.is_revocation_delivered(&id) || self.revocation_in_spool(&id) {
                        report.present += 1;
                        ack.push(id);
                        continue;
                    }
                    if failure.is_some() || report.delivered >= quota {
                        continue;
                    }
                    match self.write_revocation(&id, &r) {
                        Ok(fresh_file) => {
                            if fresh_file {
                                tracing::info!(request_id = %id, serial = %r.serial, "revocation request delivered to incoming/");
                                report.delivered += 1;
                                fresh_revocations.push(id.clone());
                            } else {
                                report.present += 1;
                            }
                            ack.push(id);
                        }
                        Err(e) => failure = Some(e),
                    }
                    continue;
                }
                Pending::Unusable(id, why) => {
                    self.skip(id.as_deref().unwrap_or("<no id>"), &why);
                    report.unusable += 1;
                    continue;
                }
            };
            let id = match RequestId::parse(&envelope.request_id) {
                Ok(id) => id,
                Err(e) => {
                    self.skip(&envelope.request_id, &e.to_string());
                    report.unusable += 1;
                    continue;
                }
            };
            if self.state.is_delivered(&id) || self.in_spool(&id) {
                debug!(request_id = %id, "already in the spool");
                report.present += 1;
                ack.push(id);
                continue;
            }
            if failure.is_some() || report.delivered >= quota {
                continue;
            }
            match self.write_envelope(&id, &envelope) {
                Ok(true) => {
                    tracing::info!(request_id = %id, "request delivered to incoming/");
                    report.delivered += 1;
                    fresh.push(id.clone());
                    ack.push(id);
                }
                Ok(false) => {
                    report.present += 1;
                    ack.push(id);
                }
                Err(e) => failure = Some(e),
            }
        }
        if !fresh_revocations.is_empty() {
            self.state
                .mark_revocations_delivered(&fresh_revocations)
                .map_err(|source| SyncError::Spool {
                    what: "cannot record delivered revocation requests in",
                    path: self.state.root().to_path_buf(),
                    source,
                })?;
        }
        if !fresh.is_empty() {
            self.state
                .mark_delivered(&fresh)
                .map_err(|source| SyncError::Spool {
                    what: "cannot record delivered requests in",
                    path: self.state.root().to_path_buf(),
                    source,
                })?;
        }
        if !ack.is_empty() {
            self.api.ack(&ack)?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Notes an unusable listed item: warned about the first time only (the API lists it
    /// again until someone deals with it; its text is escaped).
    fn skip(&self, id: &str, why: &str) {
        let id: String = crate::client::escape(id).chars().take(80).collect();
        let mut seen = self.unusable.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() < MAX_REMEMBERED_UNUSABLE && seen.insert(id.clone()) {
            warn!(request_id = %id, "skipping a request the API listed: {}", crate::client::escape(why));
        } else {
            debug!(request_id = %id, "skipping an unusable request again");
        }
    }

    /// Whether any spool directory already holds a request or record with this id.
    fn in_spool(&self, id: &RequestId) -> bool {
        SPOOL_DIRS.iter().any(|dir| {
            ["json", "csr"]
                .iter()
                .any(|ext| self.spool.join(dir).join(format!("{id}.{ext}")).exists())
        })
    }

    /// Whether any spool directory already holds `<id>.revoke.json`.
    fn revocation_in_spool(&self, id: &RequestId) -> bool {
        SPOOL_DIRS.iter().any(|dir| {
            fs::symlink_metadata(self.spool.join(dir).join(format!("{id}.revoke.json"))).is_ok()
        })
    }

    /// Writes `incoming/<id>.revoke.json` in exactly DESIGN §9's form; `Ok(false)` when a file
    /// of that name appeared meanwhile.
    fn write_revocation(
        &self,
        id: &RequestId,
        r: &crate::store::RevocationEnvelope,
    ) -> Result<bool, SyncError> {
        let path = self.spool.join(INCOMING).join(format!("{id}.revoke.json"));
        let body = serde_json::json!({"serial": r.serial, "reason": r.reason, "proof": r.proof});
        let bytes = serde_json::to_vec_pretty(&body).expect("JSON values serialise");
        match fsx::write_new(&path, &bytes, fsx::MODE_PUBLIC) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(SyncError::Spool {
                what: "cannot write",
                path,
                source,
            }),
        }
    }

    /// `Ok(false)` when a file of that name appeared meanwhile (someone else delivered it).
    fn write_envelope(&self, id: &RequestId, envelope: &Envelope) -> Result<bool, SyncError> {
        let path = self.spool.join(INCOMING).join(format!("{id}.json"));
        let bytes = serde_json::to_vec_pretty(envelope).expect("an envelope serialises");
        match fsx::write_new(&path, &bytes, fsx::MODE_PUBLIC) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(SyncError::Spool {
                what: "cannot write",
                path,
                source,
            }),
        }
    }
}

/// Requests asked for per listing.
const BATCH: usize = 100;
/// `--max-pull` by default: new envelopes written a round.
pub const DEFAULT_MAX_PULL: usize = 100;
/// Unusable ids remembered (so that each is warned about once).
const MAX_REMEMBERED_UNUSABLE: usize = 10_000;
/// Where new requests go.
const INCOMING: &str = "incoming";
/// Every place a request (or its record) can be in a spool (DESIGN §2).
const SPOOL_DIRS: [&str; 6] = [
    "incoming",
    "processing",
    "held",
    "archive",
    "status",
    "rejected",
];
