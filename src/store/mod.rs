//! Storage for `serve`: requests accepted by the API, the status records `sync` pushes back,
//! the files the signer publishes (CRL, CA chain, ledger checkpoint) and a few facts (time of
//! the last sync).
//!
//! Handlers see only [`Store`], an enum over backends: embedded SQLite (one instance) and
//! PostgreSQL (several instances behind a balancer on one database). Every write is durable
//! before its future resolves: a request the API answered `202` for survives a crash.
//! Nothing here decides about a request (that is `policy`) and nothing here holds a key. Only
//! `serve` uses this module; the signer's truth is the spool and the ledger, never the
//! database.
//!
//! Times are Unix milliseconds passed in by the caller, so that retention is testable. The
//! lifetime rule ([`is_expired`]) and the result rules ([`result_outcome`],
//! [`revocation_outcome`]) are shared by both backends. What several instances must share
//! lives in PostgreSQL: the long-poll wake-up (`LISTEN`/`NOTIFY`, [`Store::wakeups`]) and the
//! rate limit ([`Store::rate_check`]).

mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::lifecycle::revocation::RevocationRecord;
use crate::request::{Envelope, RequestId, RequestType, StatusRecord};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Where the database is: the value of `serve --db`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbUrl {
    /// `sqlite:PATH` (also `sqlite://PATH`).
    Sqlite(PathBuf),
    /// `postgres://user@host:port/db` (or `postgresql://…`).
    Postgres(String),
}

impl DbUrl {
    /// Parses a database URL.
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        if let Some(rest) = s.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(StoreError::BadUrl(s.to_owned()));
            }
            Ok(Self::Sqlite(PathBuf::from(path)))
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(Self::Postgres(s.to_owned()))
        } else {
            Err(StoreError::BadUrl(s.to_owned()))
        }
    }
}

/// How long rows are kept (`--pending-ttl`, `--result-ttl`; DESIGN §5, Lifetimes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// How long a request may wait for `sync` to take it. Once acknowledged (or once a
    /// `pending` result arrived: held for an operator) it is kept until its result arrives.
    pub pending_ttl: Duration,
    /// A decided request is gone this long after its result was stored.
    pub result_ttl: Duration,
}

/// Whether a request row has expired at `now`: a request still waiting for `sync` (not
/// acknowledged, no record) after `pending_ttl`, a decided one after `result_ttl`; an
/// acknowledged or held request never expires. Both backends apply this rule (in SQL too).
pub(crate) fn is_expired(
    status: &str,
    waiting_for_sync: bool,
    updated_at: i64,
    now: i64,
    retention: Retention,
) -> bool {
    let ttl = if status != crate::request::Status::Pending.as_str() {
        retention.result_ttl
    } else if waiting_for_sync {
        retention.pending_ttl
    } else {
        return false;
    };
    updated_at.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)) <= now
}

/// A request accepted by `POST /api/v1/csr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRequest {
    /// Its fresh id.
    pub id: RequestId,
    /// Its type.
    pub kind: RequestType,
    /// The PEM CSR.
    pub content: String,
    /// Submitter's key/value pairs.
    pub metadata: BTreeMap<String, String>,
    /// Submission time, Unix ms.
    pub submitted_at: i64,
}

/// A stored request as `GET /api/v1/csr/{id}` needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRequest {
    /// The request type.
    pub kind: String,
    /// Submission time, Unix ms.
    pub submitted_at: i64,
    /// The latest status record pushed by sync, if any.
    pub record: Option<StatusRecord>,
}

/// A revocation request accepted by `POST /api/v1/revocations` (its proof verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRevocation {
    /// Its fresh id.
    pub id: RequestId,
    /// The certificate's serial, 32 lowercase hex digits.
    pub serial: String,
    /// RFC 5280 reason name.
    pub reason: String,
    /// The base64 proof (DESIGN §9).
    pub proof: String,
    /// Submission time, Unix ms.
    pub submitted_at: i64,
}

/// A revocation request as `sync` carries it to the spool (`incoming/<id>.revoke.json`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RevocationEnvelope {
    /// The revocation request's id.
    pub request_id: String,
    /// The certificate's serial.
    pub serial: String,
    /// RFC 5280 reason name.
    pub reason: String,
    /// The base64 proof.
    pub proof: String,
}

/// A stored revocation request as `GET /api/v1/revocations/{id}` needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRevocation {
    /// The certificate's serial.
    pub serial: String,
    /// RFC 5280 reason name.
    pub reason: String,
    /// The latest record pushed by sync, if any.
    pub record: Option<RevocationRecord>,
}

/// What became of one pushed status record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultOutcome {
    /// Stored: the request had no result or a pending one.
    Updated,
    /// The same result was already stored (idempotent re-push).
    Unchanged,
    /// No such request (never submitted here, or purged).
    Unknown,
    /// The request already has a different final result, which is kept.
    Conflict,
}

/// A file the signer publishes and `serve` hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Artifact {
    /// `ca.crl`: the latest CRL, DER.
    Crl,
    /// `ca.crt`: the CA chain, PEM.
    CaCertificate,
    /// `ledger-checkpoint.json`: the latest signed ledger checkpoint.
    LedgerCheckpoint,
}

impl Artifact {
    /// The file name, as in `published/` and in the sync URL.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Crl => "ca.crl",
            Self::CaCertificate => "ca.crt",
            Self::LedgerCheckpoint => "ledger-checkpoint.json",
        }
    }

    /// The artifact of a file name.
    pub fn from_file_name(name: &str) -> Option<Self> {
        [Self::Crl, Self::CaCertificate, Self::LedgerCheckpoint]
            .into_iter()
            .find(|a| a.file_name() == name)
    }
}

/// A published file and when it was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The bytes as uploaded.
    pub body: Vec<u8>,
    /// When it was stored, Unix ms.
    pub updated_at: i64,
}

/// Figures for `/metrics` and `/health`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Pending (unexpired) requests.
    pub pending: u64,
    /// Submission time of the oldest pending request, Unix ms.
    pub oldest_pending_submitted_at: Option<i64>,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `--db` is not a URL this build understands.
    #[error("{0:?} is not a database URL: use sqlite:PATH or postgres://user@host:port/db")]
    BadUrl(String),
    /// A password in the database URL (it would show in argv and process lists).
    #[error(
        "the database URL holds a password: remove it and put it in --db-password-file (mode \
         0600) or ~/.pgpass"
    )]
    PasswordInUrl,
    /// `--db-password-file` cannot be used.
    #[error("cannot use the database password file {}: {message}", path.display())]
    Password {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The database could not be opened or its schema created.
    #[error("cannot open database {path}: {message}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The database was made by a newer build.
    #[error("database schema version {found} is newer than this build's ({supported}): upgrade smsgate-ca")]
    SchemaTooNew {
        /// Version in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A query failed.
    #[error("database error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored row could not be read back.
    #[error("stored data for {what} is corrupt: {message}")]
    Corrupt {
        /// Which row.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The writer has shut down (the server is stopping).
    #[error("the database writer has stopped")]
    WriterGone,
}

/// The storage interface the API uses, one variant per backend.
#[derive(Clone, Debug)]
pub enum Store {
    /// Embedded SQLite: one writer thread with group commit, a pool of readers.
    Sqlite(SqliteStore),
    /// PostgreSQL, shared by several instances.
    Postgres(PgStore),
}

/// How to reach the database's secret (`serve --db-password-file`).
#[derive(Clone, Debug, Default)]
pub struct DbSecret {
    /// `--db-password-file`.
    pub password_file: Option<PathBuf>,
    /// `--allow-loose-permissions`.
    pub allow_loose: bool,
}

impl Store {
    /// Opens (creating and migrating as needed) the database at `url`.
    pub async fn open(
        url: &DbUrl,
        retention: Retention,
        secret: &DbSecret,
    ) -> Result<Self, StoreError> {
        match url {
            DbUrl::Sqlite(path) => Ok(Self::Sqlite(SqliteStore::open(path, retention)?)),
            DbUrl::Postgres(url) => Ok(Self::Postgres(
                PgStore::open(
                    url,
                    secret.password_file.as_deref(),
                    secret.allow_loose,
                    retention,
                )
                .await?,
            )),
        }
    }

    /// `sqlite` or `postgresql` (for `/health` and logs).
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgresql",
        }
    }

    /// Woken when another instance stores a request (PostgreSQL); `None` for SQLite, where
    /// this process is the only writer.
    pub fn wakeups(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(s) => Some(s.wakeups()),
        }
    }

    /// Takes one token of the shared rate limit of `client` (PostgreSQL); `None` for SQLite,
    /// whose single instance counts in memory.
    pub async fn rate_check(
        &self,
        client: &str,
        count: u32,
        period: Duration,
        now: i64,
    ) -> Option<Result<Result<(), u64>, StoreError>> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(s) => Some(s.rate_check(client, count, period, now).await),
        }
    }

    /// Stores a new pending request durably.
    pub async fn insert(&self, request: NewRequest) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.insert(request).await,
            Self::Postgres(s) => s.insert(request).await,
        }
    }

    /// A request by id; `None` when unknown or expired at `now`.
    pub async fn request(
        &self,
        id: &RequestId,
        now: i64,
    ) -> Result<Option<StoredRequest>, StoreError> {
        match self {
            // A point lookup by primary key: short enough to run on the calling thread.
            Self::Sqlite(s) => s.request(id, now),
            Self::Postgres(s) => s.request(id, now).await,
        }
    }

    /// The stored CSR (PEM) of a request, whatever its state; `None` when unknown.
    pub async fn content(&self, id: &RequestId) -> Result<Option<String>, StoreError> {
        match self {
            Self::Sqlite(s) => s.content(id).await,
            Self::Postgres(s) => s.content(id).await,
        }
    }

    /// Up to `limit` unexpired pending requests not yet acknowledged, oldest first.
    pub async fn unacknowledged(&self, limit: u32, now: i64) -> Result<Vec<Envelope>, StoreError> {
        match self {
            Self::Sqlite(s) => s.unacknowledged(limit, now).await,
            Self::Postgres(s) => s.unacknowledged(limit, now).await,
        }
    }

    /// Marks requests (certificate or revocation requests) acknowledged; for each id, whether
    /// it is known.
    pub async fn acknowledge(
        &self,
        ids: Vec<RequestId>,
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        match self {
            Self::Sqlite(s) => s.acknowledge(ids, now).await,
            Self::Postgres(s) => s.acknowledge(ids, now).await,
        }
    }

    /// Stores a new revocation request durably.
    pub async fn insert_revocation(&self, revocation: NewRevocation) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.insert_revocation(revocation).await,
            Self::Postgres(s) => s.insert_revocation(revocation).await,
        }
    }

    /// A revocation request by id; `None` when unknown or expired at `now`.
    pub async fn revocation(
        &self,
        id: &RequestId,
        now: i64,
    ) -> Result<Option<StoredRevocation>, StoreError> {
        match self {
            Self::Sqlite(s) => s.revocation(id, now).await,
            Self::Postgres(s) => s.revocation(id, now).await,
        }
    }

    /// Up to `limit` unexpired revocation requests not yet acknowledged, oldest first.
    pub async fn unacknowledged_revocations(
        &self,
        limit: u32,
        now: i64,
    ) -> Result<Vec<RevocationEnvelope>, StoreError> {
        match self {
            Self::Sqlite(s) => s.unacknowledged_revocations(limit, now).await,
            Self::Postgres(s) => s.unacknowledged_revocations(limit, now).await,
        }
    }

    /// Stores revocation records (`status/<id>.revoke.json`); one outcome per record.
    pub async fn record_revocation_results(
        &self,
        records: Vec<RevocationRecord>,
        now: i64,
    ) -> Result<Vec<ResultOutcome>, StoreError> {
        match self {
            Self::Sqlite(s) => s.record_revocation_results(records, now).await,
            Self::Postgres(s) => s.record_revocation_results(records, now).await,
        }
    }

    /// Stores status records; one outcome per record, in order.
    pub async fn record_results(
        &self,
        records: Vec<StatusRecord>,
        now: i64,
    ) -> Result<Vec<ResultOutcome>, StoreError> {
        match self {
            Self::Sqlite(s) => s.record_results(records, now).await,
            Self::Postgres(s) => s.record_results(records, now).await,
        }
    }

    /// Replaces a published file.
    pub async fn publish(
        &self,
        artifact: Artifact,
        body: Vec<u8>,
        now: i64,
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.publish(artifact, body, now).await,
            Self::Postgres(s) => s.publish(artifact, body, now).await,
        }
    }

    /// A published file, if one was uploaded.
    pub async fn published(&self, artifact: Artifact) -> Result<Option<Published>, StoreError> {
        match self {
            Self::Sqlite(s) => s.published(artifact).await,
            Self::Postgres(s) => s.published(artifact).await,
        }
    }

    /// Records that sync was seen at `now`.
    pub async fn touch_sync(&self, now: i64) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.touch_sync(now).await,
            Self::Postgres(s) => s.touch_sync(now).await,
        }
    }

    /// When sync was last seen (as recorded by [`Self::touch_sync`]).
    pub async fn last_sync(&self) -> Result<Option<i64>, StoreError> {
        match self {
            Self::Sqlite(s) => s.last_sync().await,
            Self::Postgres(s) => s.last_sync().await,
        }
    }

    /// Checks that the database answers (a trivial read; cheap enough for every probe).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.ping(),
            Self::Postgres(s) => s.ping().await,
        }
    }

    /// Pending count and oldest pending request.
    pub async fn stats(&self, now: i64) -> Result<Stats, StoreError> {
        match self {
            Self::Sqlite(s) => s.stats(now).await,
            Self::Postgres(s) => s.stats(now).await,
        }
    }

    /// Deletes expired rows; returns how many were deleted.
    pub async fn purge(&self, now: i64) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(s) => s.purge(now).await,
            Self::Postgres(s) => s.purge(now).await,
        }
    }

    /// Finishes queued writes and stops the writer; later writes fail with `WriterGone`.
    pub async fn shutdown(&self) {
        match self {
            Self::Sqlite(s) => s.shutdown().await,
            Self::Postgres(s) => s.shutdown().await,
        }
    }
}

/// What a pushed status record does to a stored one (`status` is the stored status): a final
/// result is never replaced by a different one; the same again changes nothing.
pub(crate) fn result_outcome(
    status: &str,
    stored: Option<&StatusRecord>,
    pushed: &StatusRecord,
) -> ResultOutcome {
    match stored {
        Some(old) if status != crate::request::Status::Pending.as_str() => {
            // Wording and times may differ; what was decided may not.
            let same = old.status == pushed.status
                && old.reason == pushed.reason
                && old.certificate == pushed.certificate
                && old.serial == pushed.serial;
            if same {
                ResultOutcome::Unchanged
            } else {
                ResultOutcome::Conflict
            }
        }
        Some(old) if old == pushed => ResultOutcome::Unchanged,
        _ => ResultOutcome::Updated,
    }
}

/// The stored status text of a revocation record.
pub(crate) fn revocation_status(s: crate::lifecycle::revocation::RevocationStatus) -> &'static str {
    use crate::lifecycle::revocation::RevocationStatus;
    match s {
        RevocationStatus::Pending => "pending",
        RevocationStatus::Revoked => "revoked",
        RevocationStatus::Denied => "denied",
    }
}

/// What a pushed revocation record does to a stored one: a final state is never replaced by
/// a different one; the same again changes nothing.
pub(crate) fn revocation_outcome(
    stored_status: &str,
    stored: Option<&RevocationRecord>,
    pushed: &RevocationRecord,
) -> ResultOutcome {
    match stored {
        Some(old) if stored_status != "pending" => {
            if old.status == pushed.status && old.serial == pushed.serial {
                ResultOutcome::Unchanged
            } else {
                ResultOutcome::Conflict
            }
        }
        Some(old) if old == pushed => ResultOutcome::Unchanged,
        _ => ResultOutcome::Updated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_database_urls() {
        assert_eq!(
            DbUrl::parse("sqlite:/var/lib/x.db").unwrap(),
            DbUrl::Sqlite("/var/lib/x.db".into())
        );
        assert_eq!(
            DbUrl::parse("sqlite://rel.db").unwrap(),
            DbUrl::Sqlite("rel.db".into())
        );
        assert!(matches!(
            DbUrl::parse("postgresql://u@h:5432/db").unwrap(),
            DbUrl::Postgres(_)
        ));
        assert!(matches!(
            DbUrl::parse("postgres://u@h/db").unwrap(),
            DbUrl::Postgres(_)
        ));
        for bad in ["", "sqlite:", "mysql://x", "/tmp/x.db"] {
            assert!(DbUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
