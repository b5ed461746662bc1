//! The embedded SQLite backend of [`super::Store`].
//!
//! Durability and speed come from the same design: every write goes to one writer thread,
//! which takes whatever writes are queued (up to [`MAX_BATCH`]), applies each in its own
//! savepoint inside one transaction and commits once. With `journal_mode=WAL` and
//! `synchronous=FULL` each commit fsyncs the WAL, so a request is on disk before its `202`
//! while many concurrent requests share one fsync (group commit). Reads use a small pool of
//! separate connections, which WAL lets run beside the writer.
//!
//! The schema is created and migrated on open from `migrations/sqlite/`, its version kept in
//! `schema_version`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use tokio::sync::oneshot;

use super::{
    Artifact, NewRequest, NewRevocation, Published, ResultOutcome, Retention, RevocationEnvelope,
    Stats, StoreError, StoredRequest, StoredRevocation,
};
use crate::lifecycle::revocation::RevocationRecord;
use crate::request::{Envelope, RequestId, StatusRecord};

/// A SQLite database: a writer thread fed through a channel, and a reader pool.
#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::Sender<Op>,
    readers: Arc<Readers>,
    retention: Retention,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.readers.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens or creates the database at `path`, migrating its schema, and starts the writer.
    pub fn open(path: &Path, retention: Retention) -> Result<Self, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: path.to_owned(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| open_err(format!("cannot create {}: {e}", dir.display())))?;
        }
        if !path.exists() {
            // The file holds submitters' metadata: keep it to the service's user.
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| open_err(e.to_string()))?;
        }
        let mut conn = connect(path).map_err(|e| open_err(e.to_string()))?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
            .map_err(|e| open_err(e.to_string()))?;
        migrate(&mut conn).map_err(|e| match e {
            StoreError::SchemaTooNew { .. } => e,
            other => open_err(other.to_string()),
        })?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, retention))
            .map_err(|e| open_err(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            writer: tx,
            readers: Arc::new(Readers {
                path: path.to_owned(),
                pool: Mutex::new(Vec::new()),
            }),
            retention,
        })
    }

    pub(super) async fn insert(&self, request: NewRequest) -> Result<(), StoreError> {
        self.call(|reply| Op::Insert(request, reply)).await
    }

    /// A point lookup by primary key: short enough to run on the calling (async) thread.
    pub(super) fn request(
        &self,
        id: &RequestId,
        now: i64,
    ) -> Result<Option<StoredRequest>, StoreError> {
        let retention = self.retention;
        self.readers.with(|c| {
            let row = c
                .prepare_cached(
                    "SELECT type, submitted_at, status, record, updated_at, acked_at \
                     FROM requests WHERE request_id = ?1",
                )?
                .query_row([id.as_str()], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                })
                .optional()?;
            let Some((kind, submitted_at, status, record, updated_at, acked_at)) = row else {
                return Ok(None);
            };
            let waiting = acked_at.is_none() && record.is_none();
            if super::is_expired(&status, waiting, updated_at, now, retention) {
                return Ok(None);
            }
            let record = record
                .map(|json| parse_record(id.as_str(), &json))
                .transpose()?;
            Ok(Some(StoredRequest {
                kind,
                submitted_at,
                record,
            }))
        })
    }

    pub(super) async fn insert_revocation(&self, r: NewRevocation) -> Result<(), StoreError> {
        self.call(|reply| Op::InsertRevocation(r, reply)).await
    }

    pub(super) async fn revocation(
        &self,
        id: &RequestId,
        now: i64,
    ) -> Result<Option<StoredRevocation>, StoreError> {
        let id = id.clone();
        let retention = self.retention;
        self.read(move |c| {
            let row = c
                .prepare_cached(
                    "SELECT serial, reason, status, record, updated_at, acked_at \
                     FROM revocations WHERE request_id = ?1",
                )?
                .query_row([id.as_str()], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                })
                .optional()?;
            let Some((serial, reason, status, record, updated_at, acked_at)) = row else {
                return Ok(None);
            };
            let waiting = acked_at.is_none() && record.is_none();
            if super::is_expired(&status, waiting, updated_at, now, retention) {
                return Ok(None);
            }
            let record = record
                .map(|json| parse_revocation_record(id.as_str(), &json))
                .transpose()?;
            Ok(Some(StoredRevocation {
                serial,
                reason,
                record,
            }))
        })
        .await
    }

    pub(super) async fn unacknowledged_revocations(
        &self,
        limit: u32,
        now: i64,
    ) -> Result<Vec<RevocationEnvelope>, StoreError> {
        let cutoff = now.saturating_sub(millis(self.retention.pending_ttl));
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT request_id, serial, reason, proof FROM revocations \
                 WHERE acked_at IS NULL AND record IS NULL AND status = 'pending' \
                 AND updated_at > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![cutoff, limit], |r| {
                Ok(RevocationEnvelope {
                    request_id: r.get(0)?,
                    serial: r.get(1)?,
                    reason: r.get(2)?,
                    proof: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub(super) async fn record_revocation_results(
        &self,
        records: Vec<RevocationRecord>,
        now: i64,
    ) -> Result<Vec<ResultOutcome>, StoreError> {
        self.call(|reply| Op::RevocationResults(records, now, reply))
            .await
    }

    pub(super) async fn content(&self, id: &RequestId) -> Result<Option<String>, StoreError> {
        let id = id.clone();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT content FROM requests WHERE request_id = ?1")?
                    .query_row([id.as_str()], |r| r.get(0))
                    .optional()?,
            )
        })
        .await
    }

    pub(super) fn ping(&self) -> Result<(), StoreError> {
        self.readers.with(|c| {
            c.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?;
            Ok(())
        })
    }

    pub(super) async fn unacknowledged(
        &self,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Envelope>, StoreError> {
        let cutoff = now.saturating_sub(millis(self.retention.pending_ttl));
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT request_id, type, content, metadata, submitted_at FROM requests \
                 WHERE acked_at IS NULL AND record IS NULL AND status = 'pending' \
                 AND updated_at > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![cutoff, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (request_id, kind, content, metadata, submitted_at) = row?;
                let metadata: BTreeMap<String, String> =
                    serde_json::from_str(&metadata).map_err(|e| StoreError::Corrupt {
                        what: format!("request {request_id}"),
                        message: format!("metadata: {e}"),
                    })?;
                out.push(Envelope {
                    request_id,
                    kind,
                    content,
                    metadata,
                    submitted_at: Some(rfc3339_ms(submitted_at)),
                });
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn acknowledge(
        &self,
        ids: Vec<RequestId>,
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        self.call(|reply| Op::Ack(ids, now, reply)).await
    }

    pub(super) async fn record_results(
        &self,
        records: Vec<StatusRecord>,
        now: i64,
    ) -> Result<Vec<ResultOutcome>, StoreError> {
        self.call(|reply| Op::Results(records, now, reply)).await
    }

    pub(super) async fn publish(
        &self,
        artifact: Artifact,
        body: Vec<u8>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.call(|reply| Op::Publish(artifact, body, now, reply))
            .await
    }

    pub(super) async fn published(
        &self,
        artifact: Artifact,
    ) -> Result<Option<Published>, StoreError> {
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT body, updated_at FROM published WHERE name = ?1")?
                    .query_row([artifact.file_name()], |r| {
                        Ok(Published {
                            body: r.get(0)?,
                            updated_at: r.get(1)?,
                        })
                    })
                    .optional()?,
            )
        })
        .await
    }

    pub(super) async fn touch_sync(&self, now: i64) -> Result<(), StoreError> {
        self.call(|reply| Op::TouchSync(now, reply)).await
    }

    pub(super) async fn last_sync(&self) -> Result<Option<i64>, StoreError> {
        self.read(|c| {
            let v: Option<String> = c
                .prepare_cached("SELECT value FROM meta WHERE key = 'last_sync_at'")?
                .query_row([], |r| r.get(0))
                .optional()?;
            Ok(v.and_then(|v| v.parse().ok()))
        })
        .await
    }

    pub(super) async fn stats(&self, now: i64) -> Result<Stats, StoreError> {
        let cutoff = now.saturating_sub(millis(self.retention.pending_ttl));
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT COUNT(*), MIN(submitted_at) FROM requests WHERE status = 'pending' \
                 AND (acked_at IS NOT NULL OR record IS NOT NULL OR updated_at > ?1)",
            )?
            .query_row([cutoff], |r| {
                Ok(Stats {
                    pending: r.get::<_, i64>(0)?.max(0) as u64,
                    oldest_pending_submitted_at: r.get(1)?,
                })
            })?)
        })
        .await
    }

    pub(super) async fn purge(&self, now: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n = self.call(|reply| Op::Purge(now, reply)).await?;
            total += n;
            if n < PURGE_CHUNK {
                return Ok(total);
            }
        }
    }

    pub(super) async fn shutdown(&self) {
        let _ = self.call(Op::Shutdown).await;
    }

    /// Sends one write to the writer thread and waits until it is committed.
    async fn call<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(op(tx))
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Runs a read on a blocking thread with a pooled connection.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?
    }
}

/// Reader connections, opened on demand and kept for reuse.
struct Readers {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
}

impl Readers {
    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = connect(&self.path)?;
                c.execute_batch("PRAGMA query_only = ON")?;
                c
            }
        };
        let out = f(&conn);
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < MAX_READERS {
            pool.push(conn);
        }
        out
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// One write for the writer thread, with where to send its outcome.
enum Op {
    Insert(NewRequest, Reply<()>),
    InsertRevocation(NewRevocation, Reply<()>),
    RevocationResults(Vec<RevocationRecord>, i64, Reply<Vec<ResultOutcome>>),
    Ack(Vec<RequestId>, i64, Reply<Vec<bool>>),
    Results(Vec<StatusRecord>, i64, Reply<Vec<ResultOutcome>>),
    Publish(Artifact, Vec<u8>, i64, Reply<()>),
    TouchSync(i64, Reply<()>),
    Purge(i64, Reply<u64>),
    Shutdown(Reply<()>),
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Sends an op's outcome once the batch's commit outcome is known.
type Finish = Box<dyn FnOnce(&Result<(), String>) + Send>;

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Op>, retention: Retention) {
    let mut stop = false;
    while !stop {
        let Ok(first) = rx.recv() else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut finishes: Vec<Finish> = Vec::with_capacity(batch.len());
        let commit = match conn.transaction() {
            Ok(mut tx) => {
                for op in batch {
                    if matches!(op, Op::Shutdown(_)) {
                        stop = true;
                    }
                    finishes.push(apply(&mut tx, op, retention));
                }
                tx.commit().map_err(|e| e.to_string())
            }
            Err(e) => {
                for op in batch {
                    stop |= matches!(op, Op::Shutdown(_));
                    finishes.push(fail_op(op));
                }
                Err(e.to_string())
            }
        };
        if let Err(e) = &commit {
            tracing::error!(error = %e, "database commit failed");
        }
        for finish in finishes {
            finish(&commit);
        }
    }
    // Everything queued before the shutdown request was in its batch; later sends fail.
    drop(conn);
}

/// Applies one op in its own savepoint, so that its failure does not undo the others.
fn apply(tx: &mut Transaction<'_>, op: Op, retention: Retention) -> Finish {
    match op {
        Op::Insert(req, reply) => finish(reply, savepoint(tx, |c| insert(c, &req))),
        Op::InsertRevocation(r, reply) => {
            finish(reply, savepoint(tx, |c| insert_revocation(c, &r)))
        }
        Op::RevocationResults(records, now, reply) => finish(
            reply,
            savepoint(tx, |c| revocation_results(c, &records, now)),
        ),
        Op::Ack(ids, now, reply) => finish(reply, savepoint(tx, |c| ack(c, &ids, now))),
        Op::Results(records, now, reply) => {
            finish(reply, savepoint(tx, |c| results(c, &records, now)))
        }
        Op::Publish(artifact, body, now, reply) => finish(
            reply,
            savepoint(tx, |c| {
                c.prepare_cached(
                    "INSERT INTO published (name, body, updated_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name) DO UPDATE SET body = excluded.body, \
                     updated_at = excluded.updated_at",
                )?
                .execute(params![artifact.file_name(), body, now])?;
                Ok(())
            }),
        ),
        Op::TouchSync(now, reply) => finish(
            reply,
            savepoint(tx, |c| {
                c.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES ('last_sync_at', ?1) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?
                .execute([now.to_string()])?;
                Ok(())
            }),
        ),
        Op::Purge(now, reply) => finish(reply, savepoint(tx, |c| purge(c, now, retention))),
        Op::Shutdown(reply) => finish(reply, Ok(())),
    }
}

fn fail_op(op: Op) -> Finish {
    fn gone<T: Send + 'static>(reply: Reply<T>) -> Finish {
        finish(reply, Err(StoreError::WriterGone))
    }
    match op {
        Op::Insert(_, r)
        | Op::InsertRevocation(_, r)
        | Op::Publish(_, _, _, r)
        | Op::TouchSync(_, r)
        | Op::Shutdown(r) => gone(r),
        Op::RevocationResults(_, _, r) => gone(r),
        Op::Ack(_, _, r) => gone(r),
        Op::Results(_, _, r) => gone(r),
        Op::Purge(_, r) => gone(r),
    }
}

fn finish<T: Send + 'static>(reply: Reply<T>, outcome: Result<T, StoreError>) -> Finish {
    Box::new(move |commit: &Result<(), String>| {
        let result = match (outcome, commit) {
            (Ok(v), Ok(())) => Ok(v),
            (Err(e), _) => Err(e),
            (Ok(_), Err(m)) => Err(StoreError::Backend(m.clone().into())),
        };
        // The caller may have gone away (client disconnected): nothing to tell it then.
        let _ = reply.send(result);
    })
}

fn savepoint<T>(
    tx: &mut Transaction<'_>,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let sp = tx.savepoint()?;
    let out = f(&sp)?;
    sp.commit()?;
    Ok(out)
}

fn insert(c: &Connection, req: &NewRequest) -> Result<(), StoreError> {
    let metadata =
        serde_json::to_string(&req.metadata).map_err(|e| StoreError::Backend(Box::new(e)))?;
    c.prepare_cached(
        "INSERT INTO requests (request_id, type, content, metadata, submitted_at, status, \
         updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?5)",
    )?
    .execute(params![
        req.id.as_str(),
        req.kind.as_str(),
        req.content,
        metadata,
        req.submitted_at
    ])?;
    Ok(())
}

fn ack(c: &Connection, ids: &[RequestId], now: i64) -> Result<Vec<bool>, StoreError> {
    let mut requests = c.prepare_cached(
        "UPDATE requests SET acked_at = COALESCE(acked_at, ?1) WHERE request_id = ?2",
    )?;
    let mut revocations = c.prepare_cached(
        "UPDATE revocations SET acked_at = COALESCE(acked_at, ?1) WHERE request_id = ?2",
    )?;
    ids.iter()
        .map(|id| {
            let a = requests.execute(params![now, id.as_str()])?;
            let b = revocations.execute(params![now, id.as_str()])?;
            Ok(a + b > 0)
        })
        .collect()
}

fn insert_revocation(c: &Connection, r: &NewRevocation) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO revocations (request_id, serial, reason, proof, submitted_at, status, \
         updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?5)",
    )?
    .execute(params![
        r.id.as_str(),
        r.serial,
        r.reason,
        r.proof,
        r.submitted_at
    ])?;
    Ok(())
}

fn revocation_results(
    c: &Connection,
    records: &[RevocationRecord],
    now: i64,
) -> Result<Vec<ResultOutcome>, StoreError> {
    let mut select =
        c.prepare_cached("SELECT status, record FROM revocations WHERE request_id = ?1")?;
    let mut update = c.prepare_cached(
        "UPDATE revocations SET status = ?1, record = ?2, updated_at = ?3, \
         acked_at = COALESCE(acked_at, ?3) WHERE request_id = ?4",
    )?;
    let mut out = Vec::with_capacity(records.len());
    for rec in records {
        let id = rec.request_id.as_str();
        let row: Option<(String, Option<String>)> = select
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((status, stored)) = row else {
            out.push(ResultOutcome::Unknown);
            continue;
        };
        let stored = stored
            .map(|json| parse_revocation_record(id, &json))
            .transpose()?;
        let outcome = super::revocation_outcome(&status, stored.as_ref(), rec);
        if outcome == ResultOutcome::Updated {
            let json = serde_json::to_string(rec).map_err(|e| StoreError::Backend(Box::new(e)))?;
            update.execute(params![super::revocation_status(rec.status), json, now, id])?;
        }
        out.push(outcome);
    }
    Ok(out)
}

fn parse_revocation_record(id: &str, json: &str) -> Result<RevocationRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        what: format!("revocation {id}"),
        message: format!("record: {e}"),
    })
}

fn results(
    c: &Connection,
    records: &[StatusRecord],
    now: i64,
) -> Result<Vec<ResultOutcome>, StoreError> {
    let mut select =
        c.prepare_cached("SELECT status, record FROM requests WHERE request_id = ?1")?;
    let mut update = c.prepare_cached(
        "UPDATE requests SET status = ?1, record = ?2, updated_at = ?3, \
         acked_at = COALESCE(acked_at, ?3) WHERE request_id = ?4",
    )?;
    let mut out = Vec::with_capacity(records.len());
    for rec in records {
        let id = rec.request_id.as_str();
        let row: Option<(String, Option<String>)> = select
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((status, stored)) = row else {
            out.push(ResultOutcome::Unknown);
            continue;
        };
        let stored = stored.map(|json| parse_record(id, &json)).transpose()?;
        let outcome = super::result_outcome(&status, stored.as_ref(), rec);
        if outcome == ResultOutcome::Updated {
            let json = serde_json::to_string(rec).map_err(|e| StoreError::Backend(Box::new(e)))?;
            update.execute(params![rec.status.as_str(), json, now, id])?;
        }
        out.push(outcome);
    }
    Ok(out)
}

fn purge(c: &Connection, now: i64, retention: Retention) -> Result<u64, StoreError> {
    let pending_cutoff = now.saturating_sub(millis(retention.pending_ttl));
    let result_cutoff = now.saturating_sub(millis(retention.result_ttl));
    let mut n = 0;
    for table in ["requests", "revocations"] {
        n += c
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE seq IN (SELECT seq FROM {table} WHERE \
                 (status = 'pending' AND acked_at IS NULL AND record IS NULL \
                 AND updated_at <= ?1) OR (status <> 'pending' AND updated_at <= ?2) LIMIT ?3)"
            ))?
            .execute(params![pending_cutoff, result_cutoff, PURGE_CHUNK as i64])?;
    }
    Ok(n as u64)
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // FULL: in WAL mode every commit fsyncs the WAL, so an answered write survives power loss.
    // Group commit in the writer keeps this to one fsync per batch.
    conn.execute_batch("PRAGMA synchronous = FULL")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let current: i64 = tx
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| {
            r.get::<_, Option<i64>>(0)
        })?
        .unwrap_or(0);
    let supported = MIGRATIONS.len() as i64;
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [i as i64 + 1],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn parse_record(id: &str, json: &str) -> Result<StatusRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        what: format!("request {id}"),
        message: format!("status record: {e}"),
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
    include_str!("../../migrations/sqlite/0001_requests.sql"),
    include_str!("../../migrations/sqlite/0002_revocations.sql"),
];

/// Most writes committed together.
const MAX_BATCH: usize = 1024;
/// Rows deleted per purge transaction, so that a big purge does not stall inserts.
const PURGE_CHUNK: u64 = 5000;
/// Reader connections kept open.
const MAX_READERS: usize = 8;
/// How long a connection waits for a lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{RequestType, Status};

    fn retention() -> Retention {
        Retention {
            pending_ttl: Duration::from_secs(10),
            result_ttl: Duration::from_secs(100),
        }
    }

    fn new_request(id: &str, at: i64) -> NewRequest {
        NewRequest {
            id: RequestId::parse(id).unwrap(),
            kind: RequestType::Webhook,
            content: "-----BEGIN CERTIFICATE REQUEST-----".into(),
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            submitted_at: at,
        }
    }

    fn approved(id: &str, cert: &str) -> StatusRecord {
        let mut r = StatusRecord::pending(RequestId::parse(id).unwrap(), "webhook", "ok".into());
        r.status = Status::Approved;
        r.certificate = Some(cert.into());
        r
    }

    #[tokio::test]
    async fn stores_lists_acknowledges_and_records_results() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let store = SqliteStore::open(&path, retention()).unwrap();
        store.insert(new_request("a", 1_000)).await.unwrap();
        store.insert(new_request("b", 2_000)).await.unwrap();
        let listed = store.unacknowledged(10, 3_000).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].request_id, "a");
        assert_eq!(listed[0].metadata["k"], "v");
        let a = RequestId::parse("a").unwrap();
        let x = RequestId::parse("x").unwrap();
        assert_eq!(
            store.acknowledge(vec![a.clone(), x], 3_000).await.unwrap(),
            vec![true, false]
        );
        let listed = store.unacknowledged(10, 3_000).await.unwrap();
        assert_eq!(listed.len(), 1);

        let rec = approved("a", "PEM");
        let outcomes = store
            .record_results(
                vec![
                    rec.clone(),
                    rec.clone(),
                    approved("a", "OTHER"),
                    approved("zz", "P"),
                ],
                4_000,
            )
            .await
            .unwrap();
        assert_eq!(
            outcomes,
            vec![
                ResultOutcome::Updated,
                ResultOutcome::Unchanged,
                ResultOutcome::Conflict,
                ResultOutcome::Unknown
            ]
        );
        let got = store.request(&a, 5_000).unwrap().unwrap();
        assert_eq!(got.record.unwrap().certificate.as_deref(), Some("PEM"));
        store.shutdown().await;
        assert!(matches!(
            store.insert(new_request("c", 1)).await,
            Err(StoreError::WriterGone)
        ));
    }

    #[tokio::test]
    async fn expired_rows_are_hidden_then_purged_and_data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let store = SqliteStore::open(&path, retention()).unwrap();
        store.insert(new_request("old", 0)).await.unwrap();
        store.insert(new_request("new", 9_000)).await.unwrap();
        let old = RequestId::parse("old").unwrap();
        assert!(store.request(&old, 9_999).unwrap().is_some());
        assert!(store.request(&old, 10_000).unwrap().is_none());
        assert_eq!(store.stats(10_000).await.unwrap().pending, 1);
        assert_eq!(store.purge(10_000).await.unwrap(), 1);
        store.shutdown().await;

        let store = SqliteStore::open(&path, retention()).unwrap();
        let new = RequestId::parse("new").unwrap();
        assert!(store.request(&new, 10_000).unwrap().is_some());
        store.shutdown().await;
    }

    /// Issue 10: once sync has taken a request, `--pending-ttl` no longer applies; a pending
    /// (held) result keeps it too; its final result then lives for `--result-ttl`.
    #[tokio::test]
    async fn issue_10_acknowledged_requests_live_until_their_result() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), retention()).unwrap();
        for id in ["acked", "held", "waiting"] {
            store.insert(new_request(id, 0)).await.unwrap();
        }
        let id = |s: &str| RequestId::parse(s).unwrap();
        store.acknowledge(vec![id("acked")], 1_000).await.unwrap();
        let held = StatusRecord::pending(id("held"), "webhook", "held".into());
        store.record_results(vec![held], 2_000).await.unwrap();
        let late = 1_000_000;
        assert!(store.request(&id("waiting"), late).unwrap().is_none());
        assert!(store.request(&id("acked"), late).unwrap().is_some());
        assert!(store.request(&id("held"), late).unwrap().is_some());
        assert_eq!(store.stats(late).await.unwrap().pending, 2);
        assert_eq!(
            store.purge(late).await.unwrap(),
            1,
            "only the one sync never took"
        );
        let outcome = store
            .record_results(vec![approved("acked", "PEM")], late)
            .await
            .unwrap();
        assert_eq!(
            outcome,
            vec![ResultOutcome::Updated],
            "not reported unknown"
        );
        assert!(store
            .request(&id("acked"), late + 99_999)
            .unwrap()
            .is_some());
        assert!(store
            .request(&id("acked"), late + 100_000)
            .unwrap()
            .is_none());
        assert_eq!(store.purge(late + 100_000).await.unwrap(), 1);
        store.shutdown().await;
    }

    #[tokio::test]
    async fn concurrent_inserts_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), retention()).unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move { s.insert(new_request(&format!("r{i}"), 5)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(store.stats(6).await.unwrap().pending, 200);
    }
}
