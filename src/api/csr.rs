//! The two public routes of the SMSGate CA API: `POST /api/v1/csr` and
//! `GET /api/v1/csr/{id}`, with their wire types (which the OpenAPI document is generated
//! from and which match `shared/upstream/ca-api-swagger.json`).
//!
//! A submission is checked by the same policy code the signer runs, so that a request that
//! can never be approved is refused at once with its reason; one that passes is stored
//! durably as pending before the `202`. Deciding for real is the signer's job, far from here.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorKind, ErrorResponse};
use super::rate_limit::client_addr;
use super::{now_ms, AppState};
use crate::policy::{self, Decision};
use crate::request::{RequestId, RequestType, Status};
use crate::store::NewRequest;

/// The body of `POST /api/v1/csr` (`ca.PostCSRRequest`).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ca::PostCSRRequest)]
pub struct PostCsrRequest {
    /// Content contains the CSR content and is required.
    #[schema(max_length = 16384)]
    pub content: String,
    /// Type is the type of the CSR. By default, it is set to "webhook".
    #[serde(rename = "type", default)]
    #[schema(value_type = Option<CsrType>, default = "webhook", nullable = false)]
    pub kind: Option<String>,
    /// Metadata includes additional metadata related to the CSR.
    #[serde(default)]
    #[schema(nullable = false)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// The answer to a submission (`ca.PostCSRResponse`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ca::PostCSRResponse)]
pub struct PostCsrResponse {
    /// RequestID is the ID of the request. Can be used to request status.
    pub request_id: String,
    /// Type is the type of the requested certificate.
    #[serde(rename = "type")]
    #[schema(value_type = CsrType)]
    pub kind: String,
    /// Status is the status of the requested certificate.
    #[schema(value_type = CsrStatus)]
    pub status: Status,
    /// Message is a human-readable description of the status.
    pub message: String,
    /// Certificate is the certificate issued by the CA. This field is only present
    /// if the status is `approved`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub certificate: Option<String>,
}

/// The state of a request (`ca.GetCSRStatusResponse`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ca::GetCSRStatusResponse)]
pub struct GetCsrStatusResponse {
    /// RequestID is the ID of the request. Can be used to request status.
    pub request_id: String,
    /// Type is the type of the requested certificate.
    #[serde(rename = "type")]
    #[schema(value_type = CsrType)]
    pub kind: String,
    /// Status is the status of the requested certificate.
    #[schema(value_type = CsrStatus)]
    pub status: Status,
    /// Message is a human-readable description of the status.
    pub message: String,
    /// Certificate is the certificate issued by the CA. This field is only present
    /// if the status is `approved`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub certificate: Option<String>,
    /// The stable reason code when the status is `denied` (an extension of the upstream
    /// schema; see DESIGN §2 for the codes).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
}

/// `ca.CSRType`: the certificate types (documentation only; the wire value is a string).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ca::CSRType)]
#[allow(dead_code)] // Only its schema is used.
#[serde(rename_all = "snake_case")]
pub enum CsrType {
    /// A webhook receiver.
    Webhook,
    /// A private server.
    PrivateServer,
}

/// `ca.CSRStatus`: the states of a request (documentation only).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ca::CSRStatus)]
#[allow(dead_code)] // Only its schema is used.
#[serde(rename_all = "snake_case")]
pub enum CsrStatus {
    /// Not decided yet, or held for an operator.
    Pending,
    /// Issued: `certificate` is set.
    Approved,
    /// Refused: `message` says why.
    Denied,
}

/// Submit CSR
///
/// Checks the CSR against the issuance policy and stores it for the signer. Poll
/// `GET /api/v1/csr/{id}` for the result.
#[utoipa::path(
    post,
    path = "/api/v1/csr",
    tag = "CSR",
    request_body(content = PostCsrRequest, content_type = "application/json", description = "Request"),
    responses(
        (status = 202, description = "Accepted", body = PostCsrResponse),
        (status = 400, description = "Bad Request", body = ErrorResponse),
        (status = 413, description = "Content Too Large", body = ErrorResponse),
        (status = 415, description = "Unsupported Media Type", body = ErrorResponse),
        (status = 429, description = "Too Many Requests (see Retry-After)", body = ErrorResponse),
        (status = 500, description = "Internal Server Error", body = ErrorResponse),
    )
)]
pub async fn post_csr(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<PostCsrResponse>), ApiError> {
    app.check_rate(client_addr(peer, &headers, &app.trusted_proxies))
        .await?;
    require_json(&headers)?;
    let request = parse_body(&body)?;
    let kind = match request.kind.as_deref() {
        None | Some("") => RequestType::Webhook,
        Some(other) => RequestType::parse(other).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown type {:?}: use \"webhook\" or \"private_server\"",
                shorten(other)
            ))
            .with_reason("unknown_type")
        })?,
    };
    if request.content.trim().is_empty() {
        return Err(ApiError::bad_request(
            "content is required: send the PEM CSR (the output of `openssl req -new`) in \"content\"",
        ));
    }
    if request.content.len() > MAX_CONTENT_BYTES {
        return Err(ApiError::new(
            ErrorKind::TooLarge,
            format!(
                "content is {} bytes, over the limit of {MAX_CONTENT_BYTES}: send one PEM CSR",
                request.content.len()
            ),
        )
        .with_reason("too_large"));
    }
    if !request.content.trim_start().starts_with("-----BEGIN ") {
        return Err(ApiError::bad_request(
            "content is not a PEM CSR: send the text of the .csr file, from \
             -----BEGIN CERTIFICATE REQUEST----- to its END line",
        )
        .with_reason("invalid_csr"));
    }
    let metadata = request.metadata.unwrap_or_default();
    check_metadata(&metadata)?;

    let policy = app.policy();
    let evaluation = policy::evaluate(
        request.content.as_bytes(),
        kind.as_str(),
        &policy,
        &policy::Context::default(),
    );
    let held = match evaluation.decision {
        Decision::Deny(denial) => {
            return Err(ApiError::new(ErrorKind::PolicyDenied, denial.message)
                .with_reason(denial.reason.as_str()));
        }
        Decision::Approve(_) => false,
        Decision::Hold(_) => true,
    };

    let id = RequestId::generate();
    app.store
        .insert(NewRequest {
            id: id.clone(),
            kind,
            content: request.content,
            metadata,
            submitted_at: now_ms(),
        })
        .await?;
    app.new_requests.notify_waiters();
    tracing::info!(request_id = %id, kind = kind.as_str(), held, "request accepted");
    let message = if held {
        "CSR accepted; it waits for an operator's approval"
    } else {
        "CSR accepted; the certificate will be issued shortly"
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(PostCsrResponse {
            request_id: id.to_string(),
            kind: kind.as_str().to_owned(),
            status: Status::Pending,
            message: message.to_owned(),
            certificate: None,
        }),
    ))
}

/// Get CSR Status
///
/// The state of a submitted request; `certificate` once it is approved.
#[utoipa::path(
    get,
    path = "/api/v1/csr/{id}",
    tag = "CSR",
    params(("id" = String, Path, description = "Request ID")),
    responses(
        (status = 200, description = "OK", body = GetCsrStatusResponse),
        (status = 400, description = "Bad Request", body = ErrorResponse),
        (status = 404, description = "Not Found", body = ErrorResponse),
        (status = 500, description = "Internal Server Error", body = ErrorResponse),
    )
)]
pub async fn get_csr(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<GetCsrStatusResponse>, ApiError> {
    let id = RequestId::parse(&id).map_err(|_| {
        ApiError::bad_request(format!(
            "{:?} is not a request id: use the request_id returned by POST /api/v1/csr",
            shorten(&id)
        ))
    })?;
    let not_found = || {
        ApiError::not_found(format!(
            "no request {id}: it never existed here or has expired"
        ))
    };
    let stored = app
        .store
        .request(&id, now_ms())
        .await?
        .ok_or_else(not_found)?;
    let response = match stored.record {
        None => GetCsrStatusResponse {
            request_id: id.to_string(),
            kind: stored.kind,
            status: Status::Pending,
            message: "CSR received; waiting for the signer".to_owned(),
            certificate: None,
            reason: None,
        },
        Some(record) => GetCsrStatusResponse {
            request_id: id.to_string(),
            kind: stored.kind,
            status: record.status,
            message: record.message,
            certificate: record
                .certificate
                .filter(|_| record.status == Status::Approved),
            reason: record.reason.filter(|_| record.status == Status::Denied),
        },
    };
    Ok(Json(response))
}

/// Refuses a body that is not declared as JSON.
pub(super) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|essence| essence == "application/json" || essence.ends_with("+json"));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            "send the body as JSON with the header Content-Type: application/json",
        ))
    }
}

/// Parses a JSON body into `T`, with messages that say what to fix.
pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the body is not valid JSON for this route: {e}"))
    })
}

fn parse_body(body: &[u8]) -> Result<PostCsrRequest, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object: {\"content\": \"<PEM CSR>\", \"type\": \"webhook\"}",
        ));
    };
    match object.get("content") {
        None | Some(serde_json::Value::Null) => {
            return Err(ApiError::bad_request(
                "content is required: send the PEM CSR (the output of `openssl req -new`) in \"content\"",
            ))
        }
        Some(serde_json::Value::String(_)) => {}
        Some(_) => return Err(ApiError::bad_request("content must be a string: the PEM CSR")),
    }
    if let Some(t) = object.get("type") {
        if !(t.is_string() || t.is_null()) {
            return Err(ApiError::bad_request(
                "type must be a string: \"webhook\" or \"private_server\"",
            )
            .with_reason("unknown_type"));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("the body does not fit the schema: {e}")))
}

fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(ApiError::bad_request(format!(
            "metadata has {} entries, over the limit of {MAX_METADATA_ENTRIES}",
            metadata.len()
        )));
    }
    if let Some((k, _)) = metadata
        .iter()
        .find(|(k, v)| k.len() > MAX_METADATA_KEY || v.len() > MAX_METADATA_VALUE)
    {
        return Err(ApiError::bad_request(format!(
            "metadata entry {:?} is too long: keys up to {MAX_METADATA_KEY} bytes, values up to \
             {MAX_METADATA_VALUE}",
            shorten(k)
        )));
    }
    Ok(())
}

/// Cuts client-supplied text for an error message.
pub(super) fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Largest accepted `content`, as in the upstream schema (maxLength 16384).
pub const MAX_CONTENT_BYTES: usize = 16384;
/// Most metadata entries accepted.
pub const MAX_METADATA_ENTRIES: usize = 32;
/// Longest metadata key.
pub const MAX_METADATA_KEY: usize = 128;
/// Longest metadata value.
pub const MAX_METADATA_VALUE: usize = 1024;
