//! `GET /health`: whether this server (this instance, when several share a PostgreSQL
//! database) is fit to serve, which database it uses, and what an operator should look at.
//!
//! Always `200` while the database answers, with `"status": "ok"` or `"degraded"` plus the
//! problems in plain words: a degraded server still serves submissions and results, so a load
//! balancer must not take it out of rotation; monitoring should alert on `degraded`. `503`
//! with `"status": "unavailable"` when the database cannot be read.
//!
//! Degraded means: the published CRL has less than a third of its validity left or has
//! lapsed (the signer must re-sign it, `smsgate-ca crl`), or sync is configured but has not
//! been seen for `--sync-stale-after`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::{now_ms, AppState};

/// The health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`, `degraded` or `unavailable`.
    pub status: &'static str,
    /// The server's version.
    pub version: &'static str,
    /// What is wrong, in plain words (empty when ok).
    pub problems: Vec<String>,
    /// Whether the database answers: `ok` or `unavailable`.
    pub database: &'static str,
    /// Which database: `sqlite` or `postgresql`.
    pub database_backend: &'static str,
    /// Seconds since sync last called (null: never, or sync disabled).
    pub seconds_since_last_sync: Option<i64>,
    /// nextUpdate of the published CRL, RFC 3339 (null: none published).
    pub crl_next_update: Option<String>,
}

/// Health of the server.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "ok or degraded", body = HealthResponse),
        (status = 503, description = "database unavailable", body = HealthResponse),
    )
)]
pub async fn health(State(app): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let now = now_ms();
    let mut problems = Vec::new();
    // A trivial read, not a count: probes may come often (queue figures are in /metrics).
    let database_ok = match app.store.ping().await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "health: database unreadable");
            problems.push("the database cannot be read".to_owned());
            false
        }
    };
    let crl = app.crl_info();
    if let Some(next) = crl.and_then(|c| c.next_update) {
        let now_s = now / 1000;
        if next <= now_s {
            problems.push(format!(
                "the published CRL lapsed at {}: run `smsgate-ca crl` on the signer and sync",
                rfc3339_secs(next)
            ));
        } else if crl.is_some_and(|c| c.is_stale(now_s)) {
            problems.push(format!(
                "the published CRL expires at {}, less than a third of its validity away: \
                 run `smsgate-ca crl` on the signer and sync",
                rfc3339_secs(next)
            ));
        }
    }
    let last_sync = app.last_sync_ms();
    if app.sync_token.is_some() {
        let since = last_sync.unwrap_or(app.started_at);
        let stale = app.sync_stale_after.as_millis() as i64;
        if now - since > stale {
            problems.push(format!(
                "sync has not called for {} seconds: check `smsgate-ca sync`",
                (now - since) / 1000
            ));
        }
    }
    let (code, status) = if !database_ok {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    } else if problems.is_empty() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::OK, "degraded")
    };
    (
        code,
        Json(HealthResponse {
            status,
            version: env!("CARGO_PKG_VERSION"),
            problems,
            database: if database_ok { "ok" } else { "unavailable" },
            database_backend: app.store.backend(),
            seconds_since_last_sync: last_sync.map(|t| (now - t).max(0) / 1000),
            crl_next_update: crl.and_then(|c| c.next_update).map(rfc3339_secs),
        }),
    )
}

fn rfc3339_secs(t: i64) -> String {
    crate::request::rfc3339(chrono::DateTime::from_timestamp(t, 0).unwrap_or_default())
}
