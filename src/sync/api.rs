//! The bridge endpoints of the API (DESIGN §5, `/api/v1/sync/…`), bearer-token protected.
//!
//! Answers are decoded leniently (unknown fields ignored, one bad element skipped rather than
//! the whole batch), because the bridge must keep working across API versions; anything that
//! is not the API's JSON at all is an error that names what came instead. Every listed element
//! gets the API's own limits (id pattern, 16 KiB content, type, metadata; for revocations the
//! serial, reason and proof shapes) before it may reach the spool.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SyncError;
use crate::client::http::{Answer, Transport};
use crate::lifecycle::revocation::RevocationRecord;
use crate::request::{Envelope, RequestId, StatusRecord};
use crate::store::RevocationEnvelope;

/// The sync endpoints of one API.
#[derive(Clone, Debug)]
pub struct SyncApi {
    transport: Transport,
    timeout: Duration,
}

/// One pending request from `GET /sync/requests`, not yet checked.
#[derive(Clone, Debug)]
pub enum Pending {
    /// A usable envelope.
    Envelope(Envelope),
    /// A usable revocation request (for `incoming/<id>.revoke.json`).
    Revocation(RevocationEnvelope),
    /// An element we cannot use (its id if it had one, and why); never delivered, never
    /// acknowledged.
    Unusable(Option<String>, String),
}

/// What `POST /sync/results` reported.
#[derive(Clone, Debug, Default)]
pub struct ResultsReport {
    /// Ids whose record changed the API's state.
    pub updated: Vec<String>,
    /// Ids the API already had in that state.
    pub unchanged: Vec<String>,
    /// Ids the API does not know (e.g. requests dropped into the spool directly).
    pub unknown: Vec<String>,
    /// Ids whose record contradicts a final state the API already holds.
    pub conflicts: Vec<String>,
    /// Ids whose record the API refused as not its pinned CA's (or not for the request).
    pub rejected: Vec<String>,
}

impl ResultsReport {
    /// Whether the API answered for `id` in any list.
    pub fn mentions(&self, id: &str) -> bool {
        [
            &self.updated,
            &self.unchanged,
            &self.unknown,
            &self.conflicts,
            &self.rejected,
        ]
        .iter()
        .any(|list| list.iter().any(|x| x == id))
    }
}

impl SyncApi {
    /// The sync endpoints behind `transport` (which carries the token); `timeout` bounds each
    /// exchange (a long poll adds its wait).
    pub fn new(transport: Transport, timeout: Duration) -> Self {
        Self { transport, timeout }
    }

    /// The API base URL.
    pub fn base(&self) -> &str {
        self.transport.base()
    }

    /// `GET /sync/requests?limit=N[&wait=S]`: pending, unacknowledged requests.
    pub fn requests(
        &self,
        limit: usize,
        wait: Option<Duration>,
    ) -> Result<Vec<Pending>, SyncError> {
        let mut path = format!("/sync/requests?limit={limit}");
        let mut timeout = self.timeout;
        if let Some(wait) = wait {
            path.push_str(&format!("&wait={}", wait.as_secs()));
            timeout += wait;
        }
        let answer = self.transport.get(&path, timeout)?;
        check(&answer)?;
        #[derive(Deserialize)]
        struct List {
            requests: Vec<serde_json::Value>,
            #[serde(default)]
            revocations: Vec<serde_json::Value>,
        }
        let list: List = answer.json()?;
        let mut out: Vec<Pending> = list.requests.into_iter().map(pending).collect();
        out.extend(list.revocations.into_iter().map(pending_revocation));
        Ok(out)
    }

    /// `POST /sync/ack {"ids": […]}`: the API stops listing these.
    pub fn ack(&self, ids: &[RequestId]) -> Result<(), SyncError> {
        #[derive(Serialize)]
        struct Ack<'a> {
            ids: &'a [RequestId],
        }
        let answer = self
            .transport
            .post_json("/sync/ack", &Ack { ids }, self.timeout)?;
        check(&answer)?;
        // The body ({"acknowledged", "unknown"}) is informational; it must still be JSON.
        answer.json::<serde_json::Value>()?;
        Ok(())
    }

    /// `POST /sync/results {"results": […], "revocations": […]}`.
    pub fn results(
        &self,
        records: &[StatusRecord],
        revocations: &[RevocationRecord],
    ) -> Result<ResultsReport, SyncError> {
        #[derive(Serialize)]
        struct Results<'a> {
            results: &'a [StatusRecord],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            revocations: &'a [RevocationRecord],
        }
        let answer = self.transport.post_json(
            "/sync/results",
            &Results {
                results: records,
                revocations,
            },
            self.timeout,
        )?;
        // 409 and 422 carry the per-id report too (a conflicting or refused record does not
        // keep the others of the batch from being stored).
        if !matches!(answer.status, 409 | 422) {
            check(&answer)?;
        }
        #[derive(Deserialize)]
        struct Report {
            #[serde(default)]
            updated: Vec<serde_json::Value>,
            #[serde(default)]
            unchanged: Vec<serde_json::Value>,
            #[serde(default)]
            unknown: Vec<serde_json::Value>,
            #[serde(default)]
            conflicts: Vec<serde_json::Value>,
            #[serde(default)]
            rejected: Vec<serde_json::Value>,
        }
        let r: Report = match answer.json() {
            Ok(r) => r,
            Err(_) if answer.status != 200 => return Err(answer.unexpected().into()),
            Err(e) => return Err(e.into()),
        };
        let ids = |v: Vec<serde_json::Value>| v.iter().filter_map(id_of).collect();
        Ok(ResultsReport {
            updated: ids(r.updated),
            unchanged: ids(r.unchanged),
            unknown: ids(r.unknown),
            conflicts: ids(r.conflicts),
            rejected: ids(r.rejected),
        })
    }

    /// `PUT /sync/published/<name>`.
    pub fn publish(
        &self,
        name: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> Result<(), SyncError> {
        let answer = self.transport.put(
            &format!("/sync/published/{name}"),
            bytes,
            content_type,
            self.timeout,
        )?;
        check(&answer)
    }
}

/// 2xx passes; 401/403 is the token's fault; anything else is the API's message or a
/// description of what came instead.
fn check(answer: &Answer) -> Result<(), SyncError> {
    match answer.status {
        200..=299 => Ok(()),
        401 | 403 => Err(SyncError::Unauthorized {
            url: answer.url.clone(),
            status: answer.status,
        }),
        _ => Err(answer.unexpected().into()),
    }
}

/// Reads one listed request: a JSON object with the envelope's fields (others ignored).
fn pending(value: serde_json::Value) -> Pending {
    #[derive(Deserialize)]
    struct Wire {
        request_id: String,
        #[serde(rename = "type", default)]
        kind: Option<String>,
        content: String,
        #[serde(default)]
        metadata: Option<BTreeMap<String, serde_json::Value>>,
        #[serde(default)]
        submitted_at: Option<String>,
    }
    let id = value
        .get("request_id")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let wire: Wire = match serde_json::from_value(value) {
        Ok(w) => w,
        Err(e) => return Pending::Unusable(id, format!("not an envelope: {e}")),
    };
    if let Err(e) = RequestId::parse(&wire.request_id) {
        return Pending::Unusable(id, e.to_string());
    }
    // The API's own limits (DESIGN §5): nothing bigger reaches the spool through us.
    if wire.content.len() > MAX_CONTENT_BYTES {
        return Pending::Unusable(
            id,
            format!(
                "its content is {} bytes, over the API's limit of {MAX_CONTENT_BYTES}",
                wire.content.len()
            ),
        );
    }
    if let Some(kind) = wire.kind.as_deref() {
        if crate::request::RequestType::parse(kind).is_none() {
            return Pending::Unusable(id, "its type is neither webhook nor private_server".into());
        }
    }
    if let Some(m) = &wire.metadata {
        let too_long = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.len() > MAX_METADATA_VALUE,
            other => other.to_string().len() > MAX_METADATA_VALUE,
        };
        if m.len() > MAX_METADATA_ENTRIES
            || m.iter()
                .any(|(k, v)| k.len() > MAX_METADATA_KEY || too_long(v))
        {
            return Pending::Unusable(id, "its metadata is over the API's limits".into());
        }
    }
    // Metadata is a string map on the wire; anything else is kept as its JSON text.
    let metadata = wire
        .metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    Pending::Envelope(Envelope {
        request_id: wire.request_id,
        kind: wire.kind.unwrap_or_else(|| "webhook".to_owned()),
        content: wire.content,
        metadata,
        submitted_at: wire.submitted_at,
    })
}

/// Reads one listed revocation request: `{request_id, serial, reason, proof}`, each checked as
/// the API and the signer check them.
fn pending_revocation(value: serde_json::Value) -> Pending {
    let id = value
        .get("request_id")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let wire: RevocationEnvelope = match serde_json::from_value(value) {
        Ok(w) => w,
        Err(e) => return Pending::Unusable(id, format!("not a revocation request: {e}")),
    };
    if let Err(e) = RequestId::parse(&wire.request_id) {
        return Pending::Unusable(id, e.to_string());
    }
    let serial_ok = crate::signer::serial::Serial::parse(&wire.serial)
        .is_some_and(|s| s.to_hex() == wire.serial);
    if !serial_ok {
        return Pending::Unusable(id, "its serial is not 32 lowercase hex digits".into());
    }
    if crate::lifecycle::revocation::parse_reason(&wire.reason).is_err() {
        return Pending::Unusable(id, "its reason is not an RFC 5280 reason name".into());
    }
    let proof_ok = !wire.proof.is_empty()
        && wire.proof.len() <= crate::proof::MAX_PROOF_CHARS
        && wire
            .proof
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
    if !proof_ok {
        return Pending::Unusable(id, "its proof is not base64 of a sane size".into());
    }
    Pending::Revocation(wire)
}

/// The API's limits on a request (`api::csr`), applied again to what is pulled.
use crate::api::csr::{
    MAX_CONTENT_BYTES, MAX_METADATA_ENTRIES, MAX_METADATA_KEY, MAX_METADATA_VALUE,
};

/// An id in a report list: a string, or an object with `request_id` (or `id`).
fn id_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o
            .get("request_id")
            .or_else(|| o.get("id"))
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (STYLE §17).
mod tests {
    use super::*;

    #[test]
    fn listed_requests_are_read_leniently() {
        let ok = serde_json::json!({"request_id": "abc", "content": "PEM", "extra": 1,
                                    "metadata": {"k": "v", "n": 2}});
        match pending(ok) {
            Pending::Envelope(e) => {
                assert_eq!(e.kind, "webhook");
                assert_eq!(e.metadata["n"], "2");
            }
            other => panic!("{other:?}"),
        }
        let bad_id = serde_json::json!({"request_id": "../x", "content": "PEM"});
        assert!(matches!(pending(bad_id), Pending::Unusable(Some(_), _)));
        let no_content = serde_json::json!({"request_id": "abc"});
        assert!(matches!(pending(no_content), Pending::Unusable(Some(_), _)));
    }

    #[test]
    fn report_ids_may_be_strings_or_objects() {
        assert_eq!(id_of(&serde_json::json!("a")).as_deref(), Some("a"));
        assert_eq!(
            id_of(&serde_json::json!({"request_id": "b", "status": "approved"})).as_deref(),
            Some("b")
        );
        assert_eq!(id_of(&serde_json::json!(3)), None);
    }
}
