//! The PostgreSQL backend of [`super::Store`], for several `serve` instances behind a balancer
//! on one database (DESIGN §5, Storage).
//!
//! - A `deadpool-postgres` pool of `tokio-postgres` connections. Every write is one statement
//!   or one transaction in autocommit, so it is committed (and, with PostgreSQL's default
//!   `synchronous_commit`, on disk) before its future resolves: a `202` is sent only after.
//! - Migrations from `migrations/postgres/` run at open inside one transaction holding
//!   `pg_advisory_xact_lock`, so instances started together apply them once.
//! - A new request or revocation request is announced with `pg_notify` in the statement that
//!   inserts it; every instance keeps one dedicated `LISTEN` connection (reconnected with
//!   backoff) and wakes its long-polls ([`PgStore::wakeups`]).
//! - The POST rate limit is a token bucket per client row (`rate_limits`), updated in one
//!   statement, so N instances share one limit.
//!
//! The password comes from `--db-password-file`, else `PGPASSFILE`/`~/.pgpass` as libpq reads
//! them; a URL with a password in it is refused (it would be visible in argv).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::Notify;
use tokio_postgres::NoTls;

use super::{
    is_expired, Artifact, NewRequest, NewRevocation, Published, ResultOutcome, Retention,
    RevocationEnvelope, Stats, StoreError, StoredRequest, StoredRevocation,
};
use crate::lifecycle::revocation::RevocationRecord;
use crate::request::{Envelope, RequestId, StatusRecord};

/// A PostgreSQL database shared by every instance.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    retention: Retention,
    wakeups: Arc<Notify>,
    shown: String,
    listener: Arc<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("db", &self.shown)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url`, migrates the schema under an advisory lock, and starts listening
    /// for new requests.
    pub async fn open(
        url: &str,
        password_file: Option<&Path>,
        allow_loose: bool,
        retention: Retention,
    ) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::BadUrl(format!("{url}: {e}")))?;
        let shown = describe(&config);
        if config.get_password().is_some() {
            return Err(StoreError::PasswordInUrl);
        }
        if let Some(password) = password(&config, password_file, allow_loose)? {
            config.password(password);
        }
        config.application_name("smsgate-ca serve");
        config.connect_timeout(Duration::from_secs(10));
        let open_err = |message: String| StoreError::Open {
            path: PathBuf::from(&shown),
            message,
        };
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| open_err(e.to_string()))?;
        {
            let mut client = pool.get().await.map_err(|e| open_err(e.to_string()))?;
            migrate(&mut client).await.map_err(|e| match e {
                StoreError::SchemaTooNew { .. } => e,
                other => open_err(other.to_string()),
            })?;
        }
        let wakeups = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(config, Arc::clone(&wakeups)));
        Ok(Self {
            pool,
            retention,
            wakeups,
            shown,
            listener: Arc::new(listener),
        })
    }

    /// Woken whenever any instance stores a new request (PostgreSQL `NOTIFY`).
    pub fn wakeups(&self) -> Arc<Notify> {
        Arc::clone(&self.wakeups)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))
    }

    pub(super) async fn insert(&self, r: NewRequest) -> Result<(), StoreError> {
        let metadata =
            serde_json::to_string(&r.metadata).map_err(|e| StoreError::Backend(Box::new(e)))?;
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "WITH ins AS (INSERT INTO requests (request_id, type, content, metadata, \
                 submitted_at, status, updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', $5) \
                 RETURNING 1) SELECT pg_notify('smsgate_ca_new', '') FROM ins",
            )
            .await?;
        c.execute(
            &stmt,
            &[
                &r.id.as_str(),
                &r.kind.as_str(),
                &r.content,
                &metadata,
                &r.submitted_at,
            ],
        )
        .await?;
        Ok(())
    }

    pub(super) async fn request(
        &self,
        id: &RequestId,
        now: i64,
    ) -> Result<Option<StoredRequest>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT type, submitted_at, status, record, updated_at, acked_at \
                 FROM requests WHERE request_id = $1",
            )
            .await?;
        let Some(row) = c.query_opt(&stmt, &[&id.as_str()]).await? else {
            return Ok(None);
        };
        let status: String = row.get(2);
        let record: Option<String> = row.get(3);
        let acked_at: Option<i64> = row.get(5);
        let waiting = acked_at.is_none() && record.is_none();
        if is_expired(&status, waiting, row.get(4), now, self.retention) {
            return Ok(None);
        }
        Ok(Some(StoredRequest {
            kind: row.get(0),
            submitted_at: row.get(1),
            record: record
                .map(|json| parse::<StatusRecord>(id.as_str(), &json))
                .transpose()?,
        }))
    }

    pub(super) async fn content(&self, id: &RequestId) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT content FROM requests WHERE request_id = $1")
            .await?;
        Ok(c.query_opt(&stmt, &[&id.as_str()]).await?.map(|r| r.get(0)))
    }

    pub(super) async fn unacknowledged(
        &self,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Envelope>, StoreError> {
        let cutoff = now.saturating_sub(millis(self.retention.pending_ttl));
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT request_id, type, content, metadata, submitted_at FROM requests \
                 WHERE acked_at IS NULL AND record IS NULL AND status = 'pending' \
                 AND updated_at > $1 ORDER BY seq LIMIT $2",
            )
            .await?;
        let rows = c.query(&stmt, &[&cutoff, &i64::from(limit)]).await?;
        rows.into_iter()
            .map(|row| {
                let request_id: String = row.get(0);
                let metadata: String = row.get(3);
                let metadata: BTreeMap<String, String> = parse(&request_id, &metadata)?;
                Ok(Envelope {
                    kind: row.get(1),
                    content: row.get(2),
                    metadata,
                    submitted_at: Some(rfc3339_ms(row.get(4))),
                    request_id,
                })
            })
            .collect()
    }

    pub(super) async fn acknowledge(
        &self,
        ids: Vec<RequestId>,
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let requests = tx
            .prepare_cached(
                "UPDATE requests SET acked_at = COALESCE(acked_at, $1) WHERE request_id = $2",
            )
            .await?;
        let revocations = tx
            .prepare_cached(
                "UPDATE revocations SET acked_at = COALESCE(acked_at, $1) WHERE request_id = $2",
            )
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            let a = tx.execute(&requests, &[&now, &id.as_str()]).await?;
            let b = tx.execute(&revocations, &[&now, &id.as_str()]).await?;
            out.push(a + b > 0);
        }
        tx.commit().await?;
        Ok(out)
    }

    pub(super) async fn record_results(
        &self,
        records: Vec<StatusRecord>,
        now: i64,
    ) -> Result<Vec<ResultOutcome>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // FOR UPDATE: two instances taking results for one id at once decide one after the
        // other, so a final result is never replaced.
        let select = tx
            .prepare_cached("SELECT status, record FROM requests WHERE request_id = $1 FOR UPDATE")
            .await?;
        let update = tx
            .prepare_cached(
                "UPDATE requests SET status = $1, record = $2, updated_at = $3, \
                 acked_at = COALESCE(acked_at, $3) WHERE request_id = $4",
            )
            .await?;
        let mut out = Vec::with_capacity(records.len());
        for rec in &records {
            let id = rec.request_id.as_str();
            let Some(row) = tx.query_opt(&select, &[&id]).await? else {
                out.push(ResultOutcome::Unknown);
                continue;
            };
            let status: String = row.get(0);
            let stored: Option<String> = row.get(1);
            let stored = stored
                .map(|json| parse::<StatusRecord>(id, &json))
                .transpose()?;
            let outcome = super::result_outcome(&status, stored.as_ref(), rec);
            if outcome == ResultOutcome::Updated {
                let json =
                    serde_json::to_string(rec).map_err(|e| StoreError::Backend(Box::new(e)))?;
                tx.execute(&update, &[&rec.status.as_str(), &json, &now, &id])
                    .await?;
            }
            out.push(outcome);
        }
        tx.commit().await?;
        Ok(out)
    }

    pub(super) async fn insert_revocation(&self, r: NewRevocation) -> Result<(), StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "WITH ins AS (INSERT INTO revocations (request_id, serial, reason, proof, \
                 submitted_at, status, updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', $5) \
                 RETURNING 1) SELECT pg_notify('smsgate_ca_new', '') FROM ins",
            )
            .await?;
        c.execute(
            &stmt,
            &[
                &r.id.as_str(),
                &r.serial,
                &r.reason,
                &r.proof,
                &r.submitted_at,
            ],
        )
        .await?;
        Ok(())
    }

    pub(super) async fn revocation(
        &self,
        id: &RequestId,
        now: i64,
    ) -> Result<Option<StoredRevocation>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT serial, reason, status, record, updated_at, acked_at \
                 FROM revocations WHERE request_id = $1",
            )
            .await?;
        let Some(row) = c.query_opt(&stmt, &[&id.as_str()]).await? else {
            return Ok(None);
        };
        let status: String = row.get(2);
        let record: Option<String> = row.get(3);
        let acked_at: Option<i64> = row.get(5);
        let waiting = acked_at.is_none() && record.is_none();
        if is_expired(&status, waiting, row.get(4), now, self.retention) {
            return Ok(None);
        }
        Ok(Some(StoredRevocation {
            serial: row.get(0),
            reason: row.get(1),
            record: record
                .map(|json| parse::<RevocationRecord>(id.as_str(), &json))
                .transpose()?,
        }))
    }

    pub(super) async fn unacknowledged_revocations(
        &self,
        limit: u32,
        now: i64,
    ) -> Result<Vec<RevocationEnvelope>, StoreError> {
        let cutoff = now.saturating_sub(millis(self.retention.pending_ttl));
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT request_id, serial, reason, proof FROM revocations \
                 WHERE acked_at IS NULL AND record IS NULL AND status = 'pending' \
                 AND updated_at > $1 ORDER BY seq LIMIT $2",
            )
            .await?;
        Ok(c.query(&stmt, &[&cutoff, &i64::from(limit)])
            .await?
            .into_iter()
            .map(|row| RevocationEnvelope {
                request_id: row.get(0),
                serial: row.get(1),
                reason: row.get(2),
                proof: row.get(3),
            })
            .collect())
    }

    pub(super) async fn record_revocation_results(
        &self,
        records: Vec<RevocationRecord>,
        now: i64,
    ) -> Result<Vec<ResultOutcome>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let select = tx
            .prepare_cached(
                "SELECT status, record FROM revocations WHERE request_id = $1 FOR UPDATE",
            )
            .await?;
        let update = tx
            .prepare_cached(
                "UPDATE revocations SET status = $1, record = $2, updated_at = $3, \
                 acked_at = COALESCE(acked_at, $3) WHERE request_id = $4",
            )
            .await?;
        let mut out = Vec::with_capacity(records.len());
        for rec in &records {
            let id = rec.request_id.as_str();
            let Some(row) = tx.query_opt(&select, &[&id]).await? else {
                out.push(ResultOutcome::Unknown);
                continue;
            };
            let status: String = row.get(0);
            let stored: Option<String> = row.get(1);
            let stored = stored
                .map(|json| parse::<RevocationRecord>(id, &json))
                .transpose()?;
            let outcome = super::revocation_outcome(&status, stored.as_ref(), rec);
            if outcome == ResultOutcome::Updated {
                let json =
                    serde_json::to_string(rec).map_err(|e| StoreError::Backend(Box::new(e)))?;
                let status = super::revocation_status(rec.status);
                tx.execute(&update, &[&status, &json, &now, &id]).await?;
            }
            out.push(outcome);
        }
        tx.commit().await?;
        Ok(out)
    }

    pub(super) async fn publish(
        &self,
        artifact: Artifact,
        body: Vec<u8>,
        now: i64,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "INSERT INTO published (name, body, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET body = excluded.body, \
                 updated_at = excluded.updated_at",
            )
            .await?;
        c.execute(&stmt, &[&artifact.file_name(), &body, &now])
            .await?;
        Ok(())
    }

    pub(super) async fn published(
        &self,
        artifact: Artifact,
    ) -> Result<Option<Published>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT body, updated_at FROM published WHERE name = $1")
            .await?;
        Ok(c.query_opt(&stmt, &[&artifact.file_name()])
            .await?
            .map(|r| Published {
                body: r.get(0),
                updated_at: r.get(1),
            }))
    }

    pub(super) async fn touch_sync(&self, now: i64) -> Result<(), StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('last_sync_at', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .await?;
        c.execute(&stmt, &[&now.to_string()]).await?;
        Ok(())
    }

    pub(super) async fn last_sync(&self) -> Result<Option<i64>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT value FROM meta WHERE key = 'last_sync_at'")
            .await?;
        Ok(c.query_opt(&stmt, &[])
            .await?
            .and_then(|r| r.get::<_, String>(0).parse().ok()))
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.simple_query("SELECT 1").await?;
        Ok(())
    }

    pub(super) async fn stats(&self, now: i64) -> Result<Stats, StoreError> {
        let cutoff = now.saturating_sub(millis(self.retention.pending_ttl));
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT COUNT(*), MIN(submitted_at) FROM requests WHERE status = 'pending' \
                 AND (acked_at IS NOT NULL OR record IS NOT NULL OR updated_at > $1)",
            )
            .await?;
        let row = c.query_one(&stmt, &[&cutoff]).await?;
        Ok(Stats {
            pending: row.get::<_, i64>(0).max(0) as u64,
            oldest_pending_submitted_at: row.get(1),
        })
    }

    pub(super) async fn purge(&self, now: i64) -> Result<u64, StoreError> {
        let pending_cutoff = now.saturating_sub(millis(self.retention.pending_ttl));
        let result_cutoff = now.saturating_sub(millis(self.retention.result_ttl));
        let c = self.client().await?;
        let mut n = 0;
        for table in ["requests", "revocations"] {
            let stmt = c
                .prepare_cached(&format!(
                    "DELETE FROM {table} WHERE seq IN (SELECT seq FROM {table} WHERE \
                     (status = 'pending' AND acked_at IS NULL AND record IS NULL \
                     AND updated_at <= $1) OR (status <> 'pending' AND updated_at <= $2) \
                     LIMIT 5000)"
                ))
                .await?;
            n += c.execute(&stmt, &[&pending_cutoff, &result_cutoff]).await?;
        }
        // Buckets idle for a day have long filled up again.
        let stmt = c
            .prepare_cached("DELETE FROM rate_limits WHERE at_ms < $1")
            .await?;
        c.execute(&stmt, &[&now.saturating_sub(86_400_000)]).await?;
        Ok(n)
    }

    /// Takes one token from `client`'s bucket (capacity `count`, refilled at `count` per
    /// `period`), shared by every instance; `Err(seconds)` to wait when none is left.
    pub(super) async fn rate_check(
        &self,
        client: &str,
        count: u32,
        period: Duration,
        now: i64,
    ) -> Result<Result<(), u64>, StoreError> {
        let capacity = f64::from(count);
        let per_ms = capacity / (period.as_secs_f64() * 1000.0);
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "INSERT INTO rate_limits AS r (client, tokens, at_ms, last_ok) \
                 VALUES ($1::text, $2::float8 - 1, $3::int8, TRUE) \
                 ON CONFLICT (client) DO UPDATE SET \
                 tokens = LEAST($2::float8, r.tokens + GREATEST(0, $3::int8 - r.at_ms) * $4::float8) \
                   - CASE WHEN LEAST($2::float8, r.tokens + GREATEST(0, $3::int8 - r.at_ms) \
                     * $4::float8) >= 1 THEN 1 ELSE 0 END, \
                 at_ms = GREATEST(r.at_ms, $3::int8), \
                 last_ok = LEAST($2::float8, r.tokens + GREATEST(0, $3::int8 - r.at_ms) \
                   * $4::float8) >= 1 \
                 RETURNING tokens, last_ok",
            )
            .await?;
        let row = c
            .query_one(&stmt, &[&client, &capacity, &now, &per_ms])
            .await?;
        let tokens: f64 = row.get(0);
        let ok: bool = row.get(1);
        if ok {
            Ok(Ok(()))
        } else {
            let wait_ms = (1.0 - tokens) / per_ms;
            Ok(Err(((wait_ms / 1000.0).ceil() as u64).max(1)))
        }
    }

    pub(super) async fn shutdown(&self) {
        self.listener.abort();
        self.pool.close();
    }

    /// `postgres://user@host:port/db`, for logs and `/health`.
    pub fn describe(&self) -> &str {
        &self.shown
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// Keeps one `LISTEN smsgate_ca_new` connection open (reconnecting with backoff) and wakes
/// the long-polls of this instance on every notification, and after every reconnect (a
/// notification may have been missed meanwhile).
async fn listen(config: tokio_postgres::Config, wakeups: Arc<Notify>) {
    use futures_util::StreamExt as _;
    let mut delay = Duration::from_millis(200);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let driver = tokio::spawn(async move {
                    let mut stream = std::pin::pin!(stream);
                    while let Some(message) = stream.next().await {
                        match message {
                            Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                                let _ = tx.send(());
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "the LISTEN connection failed");
                                break;
                            }
                        }
                    }
                });
                if let Err(e) = client.batch_execute("LISTEN smsgate_ca_new").await {
                    tracing::warn!(error = %e, "cannot LISTEN for new requests");
                } else {
                    delay = Duration::from_millis(200);
                    wakeups.notify_waiters();
                    while rx.recv().await.is_some() {
                        wakeups.notify_waiters();
                    }
                }
                driver.abort();
            }
            Err(e) => tracing::warn!(error = %e, "cannot open the LISTEN connection"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    // Instances started together queue here; the first applies, the others find it done.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .await?;
    let current: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await?
        .get(0);
    let supported = MIGRATIONS.len() as i64;
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).await?;
        tx.execute("DELETE FROM schema_version", &[]).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(i as i64 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The password: `--db-password-file` (private, one line), else the first matching line of
/// `PGPASSFILE` or `~/.pgpass` (which libpq, too, ignores when group or others can read it).
fn password(
    config: &tokio_postgres::Config,
    file: Option<&Path>,
    allow_loose: bool,
) -> Result<Option<String>, StoreError> {
    if let Some(path) = file {
        crate::fsx::check_private_mode(path, allow_loose).map_err(|e| StoreError::Password {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let text = std::fs::read_to_string(path).map_err(|e| StoreError::Password {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let line = text.strip_suffix('\n').unwrap_or(&text);
        let line = line.strip_suffix('\r').unwrap_or(line);
        return Ok(Some(line.to_owned()));
    }
    let pgpass = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")));
    let Some(pgpass) = pgpass else {
        return Ok(None);
    };
    if crate::fsx::check_private_mode(&pgpass, false).is_err() {
        return Ok(None);
    }
    let Ok(text) = std::fs::read_to_string(&pgpass) else {
        return Ok(None);
    };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(_)) | None => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let db = config.get_dbname().unwrap_or_default().to_owned();
    let user = config.get_user().unwrap_or_default().to_owned();
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = pgpass_fields(line);
            let [h, p, d, u, pw] = <[String; 5]>::try_from(fields).ok()?;
            let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
            (matches(&h, &host) && matches(&p, &port) && matches(&d, &db) && matches(&u, &user))
                .then_some(pw)
        }))
}

/// Splits a `.pgpass` line on unescaped `:` (`\:` and `\\` are escapes).
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field at least").push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("one field at least").push(c),
        }
    }
    fields
}

/// `postgres://user@host:port/db`, without any secret.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    format!(
        "postgres://{}@{host}:{}/{}",
        config.get_user().unwrap_or(""),
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_dbname().unwrap_or("")
    )
}

fn parse<T: serde::de::DeserializeOwned>(id: &str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        what: format!("request {id}"),
        message: e.to_string(),
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn rfc3339_ms(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    crate::request::rfc3339(t)
}

/// The schema migrations, in order; `schema_version` holds how many were applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_requests.sql"),
    include_str!("../../migrations/postgres/0002_revocations.sql"),
];

/// The advisory lock key of migrations ("smsgate" in ASCII).
const MIGRATION_LOCK: i64 = 0x0073_6d73_6761_7465;

/// Connections per instance.
const POOL_SIZE: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_lines_split_on_unescaped_colons() {
        assert_eq!(
            pgpass_fields(r"db.example:5432:ca:serve:pa\:ss\\w"),
            ["db.example", "5432", "ca", "serve", r"pa:ss\w"]
        );
    }

    #[test]
    fn urls_are_described_without_secrets() {
        let c: tokio_postgres::Config = "postgres://serve@127.0.0.1:5433/ca".parse().unwrap();
        assert_eq!(describe(&c), "postgres://serve@127.0.0.1:5433/ca");
    }
}
