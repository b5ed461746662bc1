//! Files the signer publishes, carried out of the air gap by `sync`: uploaded with
//! `PUT /api/v1/sync/published/{name}` (token-protected) and handed out publicly as
//! `GET /api/v1/crl` (DER) and `GET /api/v1/ca.crt` (PEM chain).
//!
//! Uploads are checked against the pinned CA before they replace anything ([`super::pin`]: the
//! chain must be the pinned one or a new issuing CA under the pinned root, a CRL must be
//! signed by the issuing CA with a CRLNumber that does not go backwards, a checkpoint must be
//! signed and not go backwards) and stored in one transaction, so a reader sees the old file
//! or the new one. Served files carry `X-Content-Type-Options: nosniff`. The CRL's dates are kept in memory for `/health` and `/metrics`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::x509::X509Crl;

use super::error::{ApiError, ErrorKind, ErrorResponse};
use super::{now_ms, pin, AppState};
use crate::store::Artifact;

/// The dates of the published CRL, Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrlInfo {
    /// thisUpdate.
    pub this_update: i64,
    /// nextUpdate, when the CRL has one.
    pub next_update: Option<i64>,
}

impl CrlInfo {
    /// Reads the dates of a DER CRL; `None` if it does not parse.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let crl = X509Crl::from_der(der).ok()?;
        Some(Self {
            this_update: unix(crl.last_update())?,
            next_update: crl.next_update().and_then(unix),
        })
    }

    /// Whether the CRL is close to lapsing at `now` (Unix seconds): less than a third of its
    /// validity left, or past nextUpdate (the daemon re-signs at one third, DESIGN §5/issue 5).
    pub fn is_stale(&self, now: i64) -> bool {
        match self.next_update {
            Some(next) => {
                let validity = (next - self.this_update).max(0);
                next - now < validity / 3
            }
            None => false,
        }
    }
}

/// Upload a file of `published/`.
#[utoipa::path(
    put,
    path = "/api/v1/sync/published/{name}",
    tag = "sync",
    params(("name" = String, Path, description = "ca.crl (DER), ca.crt (PEM) or ledger-checkpoint.json")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    security(("sync_token" = [])),
    responses(
        (status = 204, description = "Stored"),
        (status = 400, description = "Not a valid file of that kind", body = ErrorResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
        (status = 404, description = "Unknown file name", body = ErrorResponse),
        (status = 413, description = "Too large", body = ErrorResponse),
        (status = 422, description = "Not the pinned CA's, or older than the stored one", body = ErrorResponse),
    )
)]
pub async fn put_published(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let artifact = Artifact::from_file_name(&name).ok_or_else(|| {
        ApiError::not_found("no such published file: use ca.crl, ca.crt or ledger-checkpoint.json")
    })?;
    let limit = match artifact {
        Artifact::Crl => MAX_CRL_BYTES,
        Artifact::CaCertificate | Artifact::LedgerCheckpoint => MAX_SMALL_BYTES,
    };
    if body.len() > limit {
        return Err(ApiError::new(
            ErrorKind::TooLarge,
            format!("{name} is {} bytes, over the limit of {limit}", body.len()),
        ));
    }
    let Some(ca) = &app.ca else {
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "published files cannot be checked: start serve with --ca-chain FILE",
        ));
    };
    let chain = app.store.published(Artifact::CaCertificate).await?;
    let issuer = ca.issuer(chain.as_ref().map(|p| &p.body[..]));
    let checked = match artifact {
        Artifact::Crl => {
            let previous = app.store.published(Artifact::Crl).await?;
            pin::check_crl(&body, &issuer, previous.as_ref().map(|p| &p.body[..]))
        }
        Artifact::CaCertificate => ca.check_chain_upload(&body),
        Artifact::LedgerCheckpoint => {
            let previous = app.store.published(Artifact::LedgerCheckpoint).await?;
            pin::check_checkpoint(&body, &issuer, previous.as_ref().map(|p| &p.body[..]))
        }
    };
    if let Err(refusal) = checked {
        tracing::warn!(
            file = artifact.file_name(),
            reason = refusal.code,
            "refused a published file: {}",
            refusal.message
        );
        app.metrics.refuse(artifact.file_name(), refusal.code);
        let kind = if matches!(refusal.code, "not_crl" | "not_pem" | "checkpoint_invalid") {
            ErrorKind::BadRequest
        } else {
            ErrorKind::Unprocessable
        };
        return Err(ApiError::new(kind, refusal.message));
    }
    let crl = match artifact {
        Artifact::Crl => CrlInfo::from_der(&body),
        _ => None,
    };
    app.store.publish(artifact, body.to_vec(), now_ms()).await?;
    if let Some(info) = crl {
        *app.crl.write().unwrap_or_else(|p| p.into_inner()) = Some(info);
    }
    tracing::info!(
        file = artifact.file_name(),
        bytes = body.len(),
        "published file updated"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// The latest CRL (DER), as published by the signer.
#[utoipa::path(
    get,
    path = "/api/v1/crl",
    tag = "CA",
    responses(
        (status = 200, description = "DER CRL", content_type = "application/pkix-crl", body = Vec<u8>),
        (status = 404, description = "Not published yet", body = ErrorResponse),
    )
)]
pub async fn get_crl(State(app): State<AppState>) -> Result<Response, ApiError> {
    serve_artifact(&app, Artifact::Crl, "application/pkix-crl").await
}

/// The CA chain (PEM), as published by the signer.
#[utoipa::path(
    get,
    path = "/api/v1/ca.crt",
    tag = "CA",
    responses(
        (status = 200, description = "PEM certificates", content_type = "application/x-pem-file", body = String),
        (status = 404, description = "Not published yet", body = ErrorResponse),
    )
)]
pub async fn get_ca_cert(State(app): State<AppState>) -> Result<Response, ApiError> {
    serve_artifact(&app, Artifact::CaCertificate, "application/x-pem-file").await
}

async fn serve_artifact(
    app: &AppState,
    artifact: Artifact,
    content_type: &'static str,
) -> Result<Response, ApiError> {
    let published = app.store.published(artifact).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "{} has not been published yet: it appears once sync uploads it",
            artifact.file_name()
        ))
    })?;
    let mut response = published.body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    // A browser must never guess another type (e.g. HTML) for these bytes.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

fn unix(t: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// Largest accepted CRL (about 25,000 revoked certificates).
const MAX_CRL_BYTES: usize = 1024 * 1024;
/// Largest accepted CA chain or checkpoint.
const MAX_SMALL_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_is_a_third_of_the_validity() {
        let c = CrlInfo {
            this_update: 0,
            next_update: Some(300),
        };
        assert!(!c.is_stale(0));
        assert!(!c.is_stale(200));
        assert!(c.is_stale(201));
        assert!(c.is_stale(400));
        let never = CrlInfo {
            this_update: 0,
            next_update: None,
        };
        assert!(!never.is_stale(1_000_000));
    }

    #[test]
    fn garbage_is_not_a_crl() {
        assert!(CrlInfo::from_der(b"not a crl").is_none());
    }
}
