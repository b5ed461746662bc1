//! The bridge endpoints `sync` talks to (DESIGN §5), under `/api/v1/sync/`: list pending
//! requests (with long-poll), acknowledge them, push status records back. All need
//! `Authorization: Bearer <token>`; without `--sync-token-file` they answer `503`.
//!
//! Every operation is idempotent, so that a `sync` that crashed or lost an answer can simply
//! repeat it: acknowledging twice is harmless, the same result twice changes nothing, and a
//! final result is never replaced by a different one (reported as a conflict instead).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::csr::{parse_json, require_json};
use super::error::{ApiError, ErrorKind, ErrorResponse};
use super::pin::Refusal;
use super::{now_ms, AppState};
use crate::request::{RequestId, StatusRecord};
use crate::store::{Artifact, ResultOutcome};

/// Query of `GET /api/v1/sync/requests`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Most requests to return (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Seconds to wait for a request when none is pending (long-poll; at most 60).
    pub wait: Option<u64>,
}

/// Answer of `GET /api/v1/sync/requests`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestsResponse {
    /// Pending requests not yet acknowledged, oldest first, as spool envelopes.
    #[schema(value_type = Vec<SyncEnvelope>)]
    pub requests: Vec<crate::request::Envelope>,
    /// Revocation requests not yet acknowledged, oldest first (their proofs verified here;
    /// sync writes each as `incoming/<id>.revoke.json`); acknowledged with the same
    /// `POST /api/v1/sync/ack`.
    #[schema(value_type = Vec<Object>)]
    pub revocations: Vec<crate::store::RevocationEnvelope>,
}

/// A request envelope, exactly as `incoming/<id>.json` of the spool (DESIGN §2).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // Only its schema is used; the wire type is `request::Envelope`.
pub struct SyncEnvelope {
    /// The request id (also the spool file stem).
    pub request_id: String,
    /// `webhook` or `private_server`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The PEM CSR.
    pub content: String,
    /// Submitter's key/value pairs (omitted when empty).
    #[schema(nullable = false)]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    /// Submission time, RFC 3339.
    pub submitted_at: String,
}

/// Body of `POST /api/v1/sync/ack`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AckRequest {
    /// Ids of requests now safely in the spool.
    pub ids: Vec<String>,
}

/// Answer of `POST /api/v1/sync/ack`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AckResponse {
    /// How many of the ids are known (acknowledged now or before).
    pub acknowledged: usize,
    /// Ids that are not known here (never submitted, purged, or not valid ids).
    pub unknown: Vec<String>,
}

/// Body of `POST /api/v1/sync/results`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ResultsRequest {
    /// Status records as in `status/<id>.json` (DESIGN §2).
    #[schema(value_type = Vec<Object>)]
    #[serde(default)]
    pub results: Vec<StatusRecord>,
    /// Revocation records as in `status/<id>.revoke.json` (DESIGN §9).
    #[schema(value_type = Vec<Object>)]
    #[serde(default)]
    pub revocations: Vec<crate::lifecycle::revocation::RevocationRecord>,
}

/// Answer of `POST /api/v1/sync/results`: every pushed id in exactly one list. The status is
/// `200` when every record was stored or already known, `422` when any record failed a check
/// (`rejected`), else `409` when any conflicts with a stored final result (`conflicts`); the
/// others of the batch are stored all the same, and a non-200 answer also carries the error
/// envelope.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ResultsResponse {
    /// Stored (first result, or a newer pending one).
    pub updated: Vec<String>,
    /// Already stored as such: nothing changed.
    pub unchanged: Vec<String>,
    /// No such request here (never submitted, or expired and purged).
    pub unknown: Vec<String>,
    /// The request already has a different final result, which was kept.
    pub conflicts: Vec<String>,
    /// Refused: an approved result whose certificate is not the pinned CA's, not valid now,
    /// or not for the stored CSR's key and IP (logged and counted in `/metrics`).
    pub rejected: Vec<String>,
    /// Set when the status is not 200.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<super::error::ErrorBody>,
}

/// List pending requests for the signer.
#[utoipa::path(
    get,
    path = "/api/v1/sync/requests",
    tag = "sync",
    params(ListParams),
    security(("sync_token" = [])),
    responses(
        (status = 200, description = "Pending requests", body = RequestsResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
        (status = 503, description = "Sync disabled (no --sync-token-file)", body = ErrorResponse),
    )
)]
pub async fn list_requests(
    State(app): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<RequestsResponse>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let wait = Duration::from_secs(params.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let deadline = tokio::time::Instant::now() + wait;
    let mut shutdown = app.shutdown.subscribe();
    loop {
        // Register for the wake-up before looking, so that a POST in between is not missed.
        let notified = app.new_requests.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let requests = app.store.unacknowledged(limit, now_ms()).await?;
        let revocations = app
            .store
            .unacknowledged_revocations(limit, now_ms())
            .await?;
        if !requests.is_empty()
            || !revocations.is_empty()
            || tokio::time::Instant::now() >= deadline
            || *shutdown.borrow_and_update()
        {
            return Ok(Json(RequestsResponse {
                requests,
                revocations,
            }));
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Acknowledge requests: they are never listed again.
#[utoipa::path(
    post,
    path = "/api/v1/sync/ack",
    tag = "sync",
    request_body = AckRequest,
    security(("sync_token" = [])),
    responses(
        (status = 200, description = "Acknowledged", body = AckResponse),
        (status = 400, description = "Malformed body", body = ErrorResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
    )
)]
pub async fn ack(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<AckResponse>, ApiError> {
    require_json(&headers)?;
    let request: AckRequest = parse_json(&body)?;
    if request.ids.len() > MAX_BATCH {
        return Err(too_many(request.ids.len()));
    }
    let parsed: Vec<(String, Option<RequestId>)> = request
        .ids
        .into_iter()
        .map(|raw| {
            let id = RequestId::parse(&raw).ok();
            (raw, id)
        })
        .collect();
    let valid: Vec<RequestId> = parsed.iter().filter_map(|(_, id)| id.clone()).collect();
    let mut known = app.store.acknowledge(valid, now_ms()).await?.into_iter();
    let mut acknowledged = 0;
    let mut unknown = Vec::new();
    for (raw, id) in parsed {
        // `known` has one entry per valid id, in order.
        if id.is_some() && known.next() == Some(true) {
            acknowledged += 1;
        } else {
            unknown.push(raw);
        }
    }
    Ok(Json(AckResponse {
        acknowledged,
        unknown,
    }))
}

/// Push status records from the signer.
#[utoipa::path(
    post,
    path = "/api/v1/sync/results",
    tag = "sync",
    request_body = ResultsRequest,
    security(("sync_token" = [])),
    responses(
        (status = 200, description = "What became of each record", body = ResultsResponse),
        (status = 409, description = "A record conflicts with a stored final result", body = ResultsResponse),
        (status = 422, description = "A record failed a check", body = ResultsResponse),
        (status = 400, description = "Malformed body", body = ErrorResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
    )
)]
pub async fn results(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<ResultsResponse>), ApiError> {
    require_json(&headers)?;
    let request: ResultsRequest = parse_json(&body)?;
    if request.results.len() + request.revocations.len() > MAX_BATCH {
        return Err(too_many(request.results.len() + request.revocations.len()));
    }
    let revocation_ids: Vec<String> = request
        .revocations
        .iter()
        .map(|r| r.request_id.to_string())
        .collect();
    let revocation_outcomes = if request.revocations.is_empty() {
        Vec::new()
    } else {
        app.store
            .record_revocation_results(request.revocations, now_ms())
            .await?
    };
    let mut answer = ResultsResponse::default();
    let mut checked = Vec::with_capacity(request.results.len());
    for record in request.results {
        match check_result(&app, record).await? {
            Ok(record) => checked.push(record),
            Err((id, refusal)) => {
                tracing::warn!(
                    request_id = %id,
                    reason = refusal.code,
                    "refused a pushed result: {}",
                    refusal.message
                );
                app.metrics.refuse("result", refusal.code);
                answer.rejected.push(id);
            }
        }
    }
    let mut ids: Vec<String> = checked.iter().map(|r| r.request_id.to_string()).collect();
    let mut outcomes = app.store.record_results(checked, now_ms()).await?;
    ids.extend(revocation_ids);
    outcomes.extend(revocation_outcomes);
    for (id, outcome) in ids.into_iter().zip(outcomes) {
        match outcome {
            ResultOutcome::Updated => answer.updated.push(id),
            ResultOutcome::Unchanged => answer.unchanged.push(id),
            ResultOutcome::Unknown => answer.unknown.push(id),
            ResultOutcome::Conflict => {
                tracing::warn!(request_id = %id, "a different final result was pushed; kept the first");
                app.metrics.refuse("result", "conflict");
                answer.conflicts.push(id);
            }
        }
    }
    let (status, message) = if !answer.rejected.is_empty() {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{} result(s) refused: their certificate is not the pinned CA's, not valid now, \
                 or not for the request's key and IP: {}",
                answer.rejected.len(),
                answer.rejected.join(", ")
            ),
        )
    } else if !answer.conflicts.is_empty() {
        (
            StatusCode::CONFLICT,
            format!(
                "{} result(s) conflict with a stored final result, which was kept: {}",
                answer.conflicts.len(),
                answer.conflicts.join(", ")
            ),
        )
    } else {
        return Ok((StatusCode::OK, Json(answer)));
    };
    answer.error = Some(super::error::ErrorBody {
        code: status.as_u16(),
        message,
        reason: None,
    });
    Ok((status, Json(answer)))
}

/// Checks one pushed record against the pinned CA and the stored CSR: `Err` with the id and
/// why when refused. A record for an unknown id passes (the store reports it unknown).
async fn check_result(
    app: &AppState,
    record: StatusRecord,
) -> Result<Result<StatusRecord, (String, Refusal)>, ApiError> {
    let Some(ca) = &app.ca else {
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "results cannot be checked: start serve with --ca-chain FILE",
        ));
    };
    let id = record.request_id.clone();
    let Some(csr) = app.store.content(&id).await? else {
        return Ok(Ok(record));
    };
    let published = app.store.published(Artifact::CaCertificate).await?;
    Ok(ca
        .check_result(record, &csr, published.as_ref().map(|p| &p.body[..]))
        .map_err(|r| (id.to_string(), r)))
}

/// Middleware in front of every sync route: checks the bearer token from the headers alone
/// and answers `401` (or `503` when sync is off) before a byte of the body is read, then notes
/// that sync was seen.
pub async fn require_token(
    State(app): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(token) = &app.sync_token else {
        return ApiError::new(
            ErrorKind::Unavailable,
            "the sync endpoints are disabled: start serve with --sync-token-file FILE",
        )
        .into_response();
    };
    if !token.verify(request.headers()) {
        return ApiError::new(
            ErrorKind::Unauthorized,
            "missing or wrong token: send Authorization: Bearer <the token of --sync-token-file>",
        )
        .into_response();
    }
    app.saw_sync().await;
    next.run(request).await
}

fn too_many(n: usize) -> ApiError {
    ApiError::bad_request(format!(
        "{n} items in one call, over the limit of {MAX_BATCH}: send them in smaller batches"
    ))
}

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
const MAX_WAIT_SECS: u64 = 60;
const MAX_BATCH: usize = 1000;
