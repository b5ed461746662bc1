//! Revocation by the certificate's holder (DESIGN §5 and §9): `POST /api/v1/revocations` and
//! `GET /api/v1/revocations/{id}`.
//!
//! A request is checked at once and refused with `400` when it can never succeed: the reason
//! must be an RFC 5280 name, the certificate one this CA issued (it chains to the pinned CA,
//! [`super::pin`]), and the proof a signature by the certificate's own key over the §9
//! message ([`crate::proof`]). What passes is stored durably as pending before the `202`;
//! `sync` carries it to the spool as `incoming/<id>.revoke.json`, where the signer decides,
//! and pushes the signer's `status/<id>.revoke.json` back. Nothing here revokes anything.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::csr::{parse_json, require_json, shorten};
use super::error::{ApiError, ErrorKind, ErrorResponse};
use super::rate_limit::client_addr;
use super::{now_ms, AppState};
use crate::lifecycle::revocation::RevocationStatus;
use crate::request::RequestId;
use crate::store::{Artifact, NewRevocation};

/// The body of `POST /api/v1/revocations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostRevocationRequest {
    /// The certificate to revoke (PEM; the leaf first if a chain is sent).
    pub certificate: String,
    /// RFC 5280 reason name, e.g. `keyCompromise`, `superseded`, `cessationOfOperation`.
    pub reason: String,
    /// base64 signature by the certificate's key (SHA-256; ECDSA or RSA PKCS#1 v1.5) over
    /// `smsgate-ca revocation v1\n<serial: 32 lowercase hex>\n<reason>\n`.
    pub proof: String,
}

/// The state of a revocation request.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevocationResponse {
    /// The revocation request's id.
    pub request_id: String,
    /// `pending`, `revoked` or `denied`.
    #[schema(value_type = String)]
    pub status: RevocationStatus,
    /// Plain words for a person.
    pub message: String,
    /// The certificate's serial (32 lowercase hex digits).
    pub serial: String,
    /// The RFC 5280 reason asked for.
    pub revocation_reason: String,
    /// A stable code when denied (e.g. `bad_proof`, `denied_by_operator`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
    /// When the certificate was revoked (RFC 3339), once revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub revoked_at: Option<String>,
}

/// Ask for a certificate to be revoked, with proof of possession of its key.
#[utoipa::path(
    post,
    path = "/api/v1/revocations",
    tag = "revocation",
    request_body(content = PostRevocationRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted; the signer decides", body = RevocationResponse),
        (status = 400, description = "Bad proof, a certificate this CA did not issue, or a bad reason", body = ErrorResponse),
        (status = 415, description = "Not JSON", body = ErrorResponse),
        (status = 429, description = "Too Many Requests (see Retry-After)", body = ErrorResponse),
        (status = 503, description = "serve has no --ca-chain", body = ErrorResponse),
    )
)]
pub async fn post_revocation(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<RevocationResponse>), ApiError> {
    app.check_rate(client_addr(peer, &headers, &app.trusted_proxies))
        .await?;
    require_json(&headers)?;
    let request: PostRevocationRequest = parse_json(&body)?;
    let Some(ca) = &app.ca else {
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "revocation requests are off: start serve with --ca-chain FILE",
        ));
    };
    let reason = crate::lifecycle::revocation::parse_reason(&request.reason)
        .map_err(|e| ApiError::bad_request(e.to_string()).with_reason("bad_reason"))?;
    let leaf = crate::client::verify::parse_blocks(&request.certificate)
        .map_err(|e| ApiError::bad_request(e.to_string()).with_reason("invalid_certificate"))?
        .swap_remove(0);
    let published = app.store.published(Artifact::CaCertificate).await?;
    ca.check_issued(&leaf, published.as_ref().map(|p| &p.body[..]))
        .map_err(|e| {
            ApiError::bad_request(format!("this CA did not issue the certificate: {e}"))
                .with_reason("unknown_certificate")
        })?;
    crate::proof::verify_certificate(&leaf, reason, &request.proof)
        .map_err(|e| ApiError::bad_request(e.to_string()).with_reason("bad_proof"))?;
    let serial = crate::proof::serial_of(&leaf)
        .expect("verify_certificate checked the serial")
        .to_hex();

    let id = RequestId::generate();
    app.store
        .insert_revocation(NewRevocation {
            id: id.clone(),
            serial: serial.clone(),
            reason: reason.as_str().to_owned(),
            proof: request.proof.trim().to_owned(),
            submitted_at: now_ms(),
        })
        .await?;
    app.new_requests.notify_waiters();
    tracing::info!(request_id = %id, serial, reason = reason.as_str(), "revocation request accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(RevocationResponse {
            request_id: id.to_string(),
            status: RevocationStatus::Pending,
            message: "revocation request accepted; the signer decides shortly".to_owned(),
            serial,
            revocation_reason: reason.as_str().to_owned(),
            reason: None,
            revoked_at: None,
        }),
    ))
}

/// The state of a revocation request.
#[utoipa::path(
    get,
    path = "/api/v1/revocations/{id}",
    tag = "revocation",
    params(("id" = String, Path, description = "Revocation request ID")),
    responses(
        (status = 200, description = "OK", body = RevocationResponse),
        (status = 400, description = "Not an id", body = ErrorResponse),
        (status = 404, description = "Unknown or expired", body = ErrorResponse),
    )
)]
pub async fn get_revocation(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RevocationResponse>, ApiError> {
    let id = RequestId::parse(&id).map_err(|_| {
        ApiError::bad_request(format!(
            "{:?} is not a request id: use the request_id returned by POST /api/v1/revocations",
            shorten(&id)
        ))
    })?;
    let stored = app.store.revocation(&id, now_ms()).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "no revocation request {id}: it never existed here or has expired"
        ))
    })?;
    let response = match stored.record {
        None => RevocationResponse {
            request_id: id.to_string(),
            status: RevocationStatus::Pending,
            message: "revocation request received; waiting for the signer".to_owned(),
            serial: stored.serial,
            revocation_reason: stored.reason,
            reason: None,
            revoked_at: None,
        },
        Some(record) => RevocationResponse {
            request_id: id.to_string(),
            status: record.status,
            message: record.message,
            serial: record.serial.unwrap_or(stored.serial),
            revocation_reason: record.revocation_reason.unwrap_or(stored.reason),
            reason: record
                .reason
                .filter(|_| record.status == RevocationStatus::Denied),
            revoked_at: record.revoked_at,
        },
    };
    Ok(Json(response))
}
