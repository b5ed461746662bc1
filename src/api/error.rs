//! HTTP errors: a public part (status, plain message, optional reason code) sent as the
//! SMSGate error envelope `{"error": {"code": <status>, "message": "…"}}`, and an internal
//! cause that is logged, never sent.
//!
//! Also the middleware that turns every error response made outside our handlers (axum's
//! extractor rejections, 404 of unknown routes, 405, 408 of the timeout layer, 413 of the
//! body limit) into the same envelope, so that no client ever sees a text or empty error.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

/// What kind of failure, coarse: it picks the status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the request is malformed.
    BadRequest,
    /// 400: policy refuses the CSR (with a reason code).
    PolicyDenied,
    /// 401: missing or wrong bearer token.
    Unauthorized,
    /// 404: no such request, route or published file.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 408: the request took too long.
    Timeout,
    /// 409: conflicts with what is stored (a different final result).
    Conflict,
    /// 413: the body or the CSR is too large.
    TooLarge,
    /// 415: not `application/json`.
    UnsupportedMediaType,
    /// 422: well-formed but fails a check (a pushed certificate or file that is not the
    /// pinned CA's).
    Unprocessable,
    /// 429: rate limited; carries `Retry-After`.
    RateLimited,
    /// 500: our fault; the cause is logged.
    Internal,
    /// 503: a feature is off or the server is stopping.
    Unavailable,
}

impl ErrorKind {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest | Self::PolicyDenied => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict => StatusCode::CONFLICT,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// Picks the status.
    pub kind: ErrorKind,
    /// Plain words for the client.
    pub message: String,
    /// A stable reason code (DESIGN §2), for policy denials and size limits.
    pub reason: Option<String>,
    /// Whole seconds for `Retry-After` (429).
    pub retry_after: Option<u64>,
    /// The internal cause, logged and never sent.
    pub cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ApiError {
    /// An error of a kind with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            reason: None,
            retry_after: None,
            cause: None,
        }
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Adds a reason code.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// A 500 whose cause is logged; the client sees only that something failed on our side.
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            cause: Some(cause.into()),
            ..Self::new(
                ErrorKind::Internal,
                "internal error: the server could not complete the request, try again later",
            )
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::WriterGone => Self::new(
                ErrorKind::Unavailable,
                "the server is shutting down: try again",
            ),
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            tracing::error!(error = %cause, "request failed");
        }
        let mut response = envelope(self.kind.status(), self.message, self.reason);
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.kind == ErrorKind::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The error envelope of the SMSGate API (`http.JSONErrorResponse`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = http::JSONErrorResponse)]
pub struct ErrorResponse {
    // The error (a plain comment: a doc comment would wrap the inlined schema in `allOf`).
    #[schema(inline)]
    #[allow(missing_docs)]
    pub error: ErrorBody,
}

/// The inside of the error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status code.
    pub code: u16,
    /// What went wrong and what to do, in plain words.
    pub message: String,
    /// A stable reason code when policy refused the CSR (e.g. `ip_not_allowed`); an
    /// extension of the upstream envelope.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
}

/// Middleware: replaces any non-JSON error response with the JSON envelope.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let allow = response.headers().get(header::ALLOW).cloned();
    // The bodies made by axum and tower-http here are short text; read at most a little.
    let text = match axum::body::to_bytes(response.into_body(), 2048).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = match status {
        StatusCode::NOT_FOUND => format!("no such route: {method} {}", shorten(&path)),
        StatusCode::METHOD_NOT_ALLOWED => {
            format!("method {method} is not allowed on {}", shorten(&path))
        }
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large".to_owned(),
        StatusCode::REQUEST_TIMEOUT => "the request took too long: try again".to_owned(),
        _ if !text.is_empty() => text,
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_owned(),
    };
    let mut out = envelope(status, message, None);
    if let Some(v) = retry_after {
        out.headers_mut().insert(header::RETRY_AFTER, v);
    }
    if let Some(v) = allow {
        out.headers_mut().insert(header::ALLOW, v);
    }
    if method == Method::HEAD {
        *out.body_mut() = Body::empty();
    }
    out
}

/// The JSON error envelope with a status (kept exactly, e.g. 422 from an extractor).
fn envelope(status: StatusCode, message: String, reason: Option<String>) -> Response {
    let body = ErrorResponse {
        error: ErrorBody {
            code: status.as_u16(),
            message,
            reason,
        },
    };
    (status, axum::Json(body)).into_response()
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn shorten(path: &str) -> String {
    if path.len() > 100 {
        let mut end = 100;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &path[..end])
    } else {
        path.to_owned()
    }
}
