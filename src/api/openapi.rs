//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document, generated from the handler and wire
//! types with `utoipa` (no hand-written copy to drift).
//!
//! The two public routes use the upstream schema names (`ca.PostCSRRequest`,
//! `ca.GetCSRStatusResponse`, `http.JSONErrorResponse`, …) and the same fields, types, enums
//! and status codes as `shared/upstream/ca-api-swagger.json`; the extras (the `reason` code,
//! 413/415/429) are additions a client of the upstream API can ignore.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{csr, error, health, metrics, published, revocations, sync};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "SMS Gate Certificate Authority API",
        description = "Provides methods to manage certificates. Wire-compatible with the SMSGate \
                       CA API; the sync endpoints connect an offline signer.",
        license(name = "Apache 2.0", url = "http://www.apache.org/licenses/LICENSE-2.0.html"),
    ),
    paths(
        csr::post_csr,
        csr::get_csr,
        revocations::post_revocation,
        revocations::get_revocation,
        published::get_crl,
        published::get_ca_cert,
        sync::list_requests,
        sync::ack,
        sync::results,
        published::put_published,
        health::health,
        metrics::metrics,
        openapi_json,
    ),
    components(schemas(
        csr::CsrType,
        csr::CsrStatus,
        csr::PostCsrRequest,
        csr::PostCsrResponse,
        csr::GetCsrStatusResponse,
        error::ErrorResponse,
        error::ErrorBody,
        sync::SyncEnvelope,
        revocations::PostRevocationRequest,
        revocations::RevocationResponse,
    )),
    modifiers(&SyncTokenScheme),
    tags(
        (name = "CSR", description = "Submit certificate requests and read their state"),
        (name = "revocation", description = "Revocation by the certificate's holder, with proof of possession"),
        (name = "CA", description = "The published CA chain and CRL"),
        (name = "sync", description = "Bridge to the offline signer (bearer token)"),
        (name = "operations", description = "Health, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 JSON", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the generated OpenAPI document serializes")
    });
    let mut response = doc.clone().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

struct SyncTokenScheme;

impl Modify for SyncTokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "sync_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
