//! The two public routes of the CA API as the client uses them (DESIGN §5, wire-compatible
//! with the upstream SMSGate CA): `POST {base}/csr` and `GET {base}/csr/{id}`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::http::{ErrorBody, HttpError, Transport};
use crate::request::{RequestType, Status};

/// A request's state as the API (or a spool status record) reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestState {
    /// The request id.
    pub request_id: String,
    /// `webhook` or `private_server`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// pending, approved or denied.
    pub status: Status,
    /// Plain words for a person.
    #[serde(default)]
    pub message: String,
    /// The reason code of a denial, when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Leaf then intermediates (PEM), when approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// A state together with the JSON object it came from (printed by `--json`).
#[derive(Clone, Debug)]
pub struct Answered {
    /// The decoded state.
    pub state: RequestState,
    /// The object as received.
    pub raw: serde_json::Value,
}

/// What `POST /csr` said.
#[derive(Clone, Debug)]
pub enum Submitted {
    /// `202` (or `200`): accepted under an id.
    Accepted(Answered),
    /// `400`: refused now, with the reason (a policy denial).
    Refused(ErrorBody),
    /// `429`: rate limited; try again after this many seconds.
    RateLimited(Option<u64>),
}

/// The CA API's public routes.
#[derive(Clone, Debug)]
pub struct CaApi {
    transport: Transport,
}

#[derive(Serialize)]
struct PostCsr<'a> {
    content: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    metadata: serde_json::Map<String, serde_json::Value>,
}

impl CaApi {
    /// The API at the transport's base URL.
    pub fn new(transport: Transport) -> Self {
        Self { transport }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        self.transport.base()
    }

    /// `POST /csr`.
    pub fn submit(
        &self,
        csr_pem: &str,
        kind: RequestType,
        timeout: Duration,
    ) -> Result<Submitted, HttpError> {
        let body = PostCsr {
            content: csr_pem,
            kind: kind.as_str(),
            metadata: serde_json::Map::new(),
        };
        let answer = self.transport.post_json("/csr", &body, timeout)?;
        match answer.status {
            200..=202 => Ok(Submitted::Accepted(decode(&answer)?)),
            400 | 403 | 422 => match answer.error_body() {
                Some(body) => Ok(Submitted::Refused(body)),
                None => Err(answer.garbage(None)),
            },
            429 => Ok(Submitted::RateLimited(answer.retry_after)),
            404 if answer.error_body().is_none() => Err(answer.garbage(None)),
            _ => Err(answer.unexpected()),
        }
    }

    /// `POST /revocations {certificate, reason, proof}`: `Ok(Ok(state))` when accepted,
    /// `Ok(Err(body))` when refused with a reason (a bad proof, an unknown certificate).
    pub fn submit_revocation(
        &self,
        certificate: &str,
        reason: &str,
        proof: &str,
        timeout: Duration,
    ) -> Result<Result<RevocationState, ErrorBody>, HttpError> {
        let body =
            serde_json::json!({"certificate": certificate, "reason": reason, "proof": proof});
        let answer = self.transport.post_json("/revocations", &body, timeout)?;
        match answer.status {
            200..=202 => Ok(Ok(decode_revocation(&answer)?)),
            400 | 403 | 422 => answer
                .error_body()
                .map(Err)
                .ok_or_else(|| answer.garbage(None)),
            _ => Err(answer.unexpected()),
        }
    }

    /// `GET /revocations/{id}`; `None` on 404.
    pub fn fetch_revocation(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<RevocationState>, HttpError> {
        let answer = self.transport.get(&format!("/revocations/{id}"), timeout)?;
        match answer.status {
            200 => decode_revocation(&answer).map(Some),
            404 if answer.error_body().is_some() => Ok(None),
            _ => Err(answer.unexpected()),
        }
    }

    /// `GET /ca.crt`: the CA chain the API publishes (PEM), for trust on first use.
    pub fn ca_chain(&self, timeout: Duration) -> Result<String, HttpError> {
        let answer = self.transport.get("/ca.crt", timeout)?;
        if answer.status != 200 {
            return Err(answer.unexpected());
        }
        String::from_utf8(answer.body.clone()).map_err(|_| answer.garbage(None))
    }

    /// `GET /csr/{id}`; `None` on 404 (unknown or expired).
    pub fn fetch(&self, id: &str, timeout: Duration) -> Result<Option<Answered>, HttpError> {
        let answer = self.transport.get(&format!("/csr/{id}"), timeout)?;
        match answer.status {
            200 => decode(&answer).map(Some),
            404 if answer.error_body().is_some() => Ok(None),
            _ => Err(answer.unexpected()),
        }
    }
}

fn decode(answer: &super::http::Answer) -> Result<Answered, HttpError> {
    let raw: serde_json::Value = answer.json()?;
    let state: RequestState =
        serde_json::from_value(raw.clone()).map_err(|e| answer.garbage(Some(&e)))?;
    Ok(Answered {
        state: state.escaped(),
        raw,
    })
}

/// A revocation request's state as the API (or a spool record) reports it; texts escaped.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RevocationState {
    /// The revocation request's id.
    pub request_id: String,
    /// `pending`, `revoked` or `denied`.
    pub status: String,
    /// Plain words.
    #[serde(default)]
    pub message: String,
    /// The code of a denial.
    #[serde(default)]
    pub reason: Option<String>,
}

impl RevocationState {
    /// The state with its texts escaped for a terminal.
    pub fn escaped(self) -> Self {
        Self {
            request_id: super::escape(&self.request_id),
            status: super::escape(&self.status),
            message: super::escape(&self.message),
            reason: self.reason.as_deref().map(super::escape),
        }
    }
}

fn decode_revocation(answer: &super::http::Answer) -> Result<RevocationState, HttpError> {
    let state: RevocationState = answer.json()?;
    Ok(state.escaped())
}

impl RequestState {
    /// The state with every text meant for a person escaped ([`super::escape`]): a server
    /// must not be able to write terminal escapes or forged log lines through it. The
    /// certificate is left as sent; it is parsed, never printed as is.
    pub fn escaped(self) -> Self {
        Self {
            message: super::escape(&self.message),
            reason: self.reason.as_deref().map(super::escape),
            kind: self.kind.as_deref().map(super::escape),
            ..self
        }
    }
}
