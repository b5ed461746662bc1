//! The routes, their body limits and timeouts, and the middleware every request passes:
//! request accounting (one log line and one counter per request) and the JSON error envelope.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put, MethodRouter};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use super::error::{json_errors, ApiError};
use super::{csr, health, metrics, openapi, page, published, revocations, sync, AppState};

/// Builds the application.
pub fn router(state: AppState) -> Router {
    let timeout = state.request_timeout;
    // Long-polls may wait 60 s; give them that plus room to answer.
    let long_poll = Duration::from_secs(60) + timeout;
    let public = |route, timeout| limited(route, timeout, PUBLIC_BODY_LIMIT);
    // The token is checked outermost, from the headers alone: a caller without it gets its
    // 401 before a byte of the body is read.
    let token = middleware::from_fn_with_state(state.clone(), sync::require_token);
    let bridge = |route, timeout| limited(route, timeout, SYNC_BODY_LIMIT).layer(token.clone());
    Router::new()
        .route("/api/v1/csr", public(post(csr::post_csr), timeout))
        .route("/api/v1/csr/{id}", public(get(csr::get_csr), timeout))
        .route(
            "/api/v1/revocations",
            public(post(revocations::post_revocation), timeout),
        )
        .route(
            "/api/v1/revocations/{id}",
            public(get(revocations::get_revocation), timeout),
        )
        .route("/api/v1/crl", public(get(published::get_crl), timeout))
        .route(
            "/api/v1/ca.crt",
            public(get(published::get_ca_cert), timeout),
        )
        .route(
            "/api/v1/openapi.json",
            public(get(openapi::openapi_json), timeout),
        )
        .route("/", public(get(page::index), timeout))
        .route("/web/{file}", public(get(page::file), timeout))
        .route("/health", public(get(health::health), timeout))
        .route("/metrics", public(get(metrics::metrics), timeout))
        .route(
            "/api/v1/sync/requests",
            bridge(get(sync::list_requests), long_poll),
        )
        .route("/api/v1/sync/ack", bridge(post(sync::ack), timeout))
        .route("/api/v1/sync/results", bridge(post(sync::results), timeout))
        .route(
            "/api/v1/sync/published/{name}",
            bridge(put(published::put_published), timeout),
        )
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(state.clone(), account))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// A route with its time limit and body limit. The body limit is enforced twice on purpose:
/// `RequestBodyLimitLayer` refuses a too-large `Content-Length` before reading anything, and
/// `DefaultBodyLimit` caps what axum's body extractors will buffer (chunked bodies).
fn limited(
    route: MethodRouter<AppState>,
    timeout: Duration,
    body_limit: usize,
) -> MethodRouter<AppState> {
    route
        .layer::<_, Infallible>(DefaultBodyLimit::max(body_limit))
        .layer::<_, Infallible>(RequestBodyLimitLayer::new(body_limit))
        .layer::<_, Infallible>(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
}

async fn fallback(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such route: {method} {}",
        csr::shorten(uri.path())
    ))
}

/// One log line and one counter per request: route template, status, duration. Never the
/// body (a CSR) or headers (the token).
async fn account(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = route.as_deref().unwrap_or("unmatched");
    let status = response.status().as_u16();
    app.metrics.record(route, status);
    tracing::info!(
        method = %method,
        route,
        status,
        duration_ms = start.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// Largest body on the public routes (the CSR itself is capped at 16 KiB by the handler; the
/// rest is room for JSON escaping and metadata).
const PUBLIC_BODY_LIMIT: usize = 64 * 1024;
/// Largest body on the sync routes (batches of status records, the CRL).
const SYNC_BODY_LIMIT: usize = 8 * 1024 * 1024;
