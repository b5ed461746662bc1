//! The client's offline channel (`--spool DIR`): drop an envelope into `incoming/` and read
//! the signer's answer from `status/<id>.json` (DESIGN §2).
//!
//! The client only ever creates `incoming/<id>.json` (through a dot-named temp and `link(2)`,
//! never replacing anything) and reads `status/`, `held/` and `rejected/`; it never touches
//! what the daemon owns.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::api::{Answered, RequestState};
use super::ClientError;
use crate::fsx::{self, Untrusted};
use crate::request::{rfc3339, Envelope, RequestId, RequestType, StatusRecord};

/// Largest status record we read (a chain of a few certificates fits many times over).
const MAX_STATUS_BYTES: u64 = 1024 * 1024;
/// Largest `rejected/*.reason` we read.
const MAX_REASON_BYTES: u64 = 4096;

/// Refuses a spool directory that does not exist, before any work.
pub fn check_spool(spool: &Path) -> Result<(), ClientError> {
    if spool.is_dir() {
        Ok(())
    } else {
        Err(ClientError::BadInput(format!(
            "the spool directory {} does not exist: check --spool",
            spool.display()
        )))
    }
}

/// Writes the envelope for a new request into `incoming/` and returns its id.
pub fn submit(spool: &Path, csr_pem: &str, kind: RequestType) -> Result<RequestId, ClientError> {
    let incoming = ensure_incoming(spool)?;
    let id = RequestId::generate();
    let envelope = Envelope {
        request_id: id.to_string(),
        kind: kind.as_str().to_owned(),
        content: csr_pem.to_owned(),
        metadata: Default::default(),
        submitted_at: Some(rfc3339(chrono::Utc::now())),
    };
    let bytes = serde_json::to_vec_pretty(&envelope).expect("an envelope serialises");
    let path = incoming.join(format!("{id}.json"));
    fsx::write_new(&path, &bytes, fsx::MODE_PUBLIC).map_err(|source| ClientError::Io {
        what: "cannot write the request",
        path,
        source,
    })?;
    Ok(id)
}

/// `published/ca.crt` of the spool (the chain the signer publishes), read no-follow and
/// bounded.
pub fn published_chain(spool: &Path) -> Result<String, ClientError> {
    let path = spool.join("published").join("ca.crt");
    match fsx::read_untrusted(&path, MAX_STATUS_BYTES) {
        Ok(Untrusted::Content(bytes)) => String::from_utf8(bytes)
            .map_err(|_| ClientError::BadAnswer(format!("{} is not PEM text", path.display()))),
        Ok(_) => Err(ClientError::BadAnswer(format!(
            "{} is not a regular file of a sane size: pass --ca-file ROOT",
            path.display()
        ))),
        Err(e) => Err(ClientError::BadAnswer(format!(
            "cannot read {} to check the certificate ({e}): pass --ca-file ROOT",
            path.display()
        ))),
    }
}

/// Writes `incoming/<id>.revoke.json` (DESIGN §9: serial, reason, proof) and returns its id.
pub fn submit_revocation(
    spool: &Path,
    serial: &str,
    reason: &str,
    proof: &str,
) -> Result<RequestId, ClientError> {
    let incoming = ensure_incoming(spool)?;
    let id = RequestId::generate();
    let body = serde_json::json!({"serial": serial, "reason": reason, "proof": proof});
    let bytes = serde_json::to_vec_pretty(&body).expect("JSON values serialise");
    let path = incoming.join(format!("{id}.revoke.json"));
    fsx::write_new(&path, &bytes, fsx::MODE_PUBLIC).map_err(|source| ClientError::Io {
        what: "cannot write the revocation request",
        path,
        source,
    })?;
    Ok(id)
}

/// Reads `status/<id>.revoke.json` (no-follow, bounded), if it exists.
pub fn read_revocation_status(
    spool: &Path,
    id: &RequestId,
) -> Result<Option<super::api::RevocationState>, ClientError> {
    let path = spool.join("status").join(format!("{id}.revoke.json"));
    let bytes = match fsx::read_untrusted(&path, MAX_STATUS_BYTES) {
        Ok(Untrusted::Content(bytes)) => bytes,
        Ok(_) => {
            return Err(ClientError::BadAnswer(format!(
                "{} is not a regular file of a sane size",
                path.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ClientError::Io {
                what: "cannot read",
                path,
                source,
            })
        }
    };
    let state: super::api::RevocationState = serde_json::from_slice(&bytes).map_err(|e| {
        ClientError::BadAnswer(format!(
            "{} is not a revocation record: {e}",
            path.display()
        ))
    })?;
    if state.request_id != id.as_str() {
        return Err(ClientError::BadAnswer(format!(
            "{} is for another request",
            path.display()
        )));
    }
    Ok(Some(state.escaped()))
}

/// `incoming/` of the spool, created when missing.
fn ensure_incoming(spool: &Path) -> Result<PathBuf, ClientError> {
    let incoming = spool.join("incoming");
    match fs::create_dir(&incoming) {
        Ok(()) => Ok(incoming),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(incoming),
        Err(source) => Err(ClientError::Io {
            what: "cannot create",
            path: incoming,
            source,
        }),
    }
}

/// Where a request stands in a spool.
#[derive(Debug)]
pub enum Found {
    /// A status record exists (pending = held, approved, denied).
    Decided(Box<Answered>),
    /// The envelope is waiting in `incoming/` or `processing/` (or `held/` before its record).
    Queued(&'static str),
    /// The daemon moved it to `rejected/`; the `.reason` file's text.
    Rejected(String),
    /// Nothing with this id.
    Missing,
}

/// Looks a request up: its status record first (the commit point), then the queues.
pub fn find(spool: &Path, id: &RequestId) -> Result<Found, ClientError> {
    if let Some(answered) = read_status(spool, id)? {
        return Ok(Found::Decided(Box::new(answered)));
    }
    for dir in ["incoming", "processing", "held"] {
        for ext in ["json", "csr"] {
            if spool.join(dir).join(format!("{id}.{ext}")).exists() {
                return Ok(Found::Queued(dir));
            }
        }
    }
    for ext in ["json", "csr"] {
        let reason: PathBuf = spool.join("rejected").join(format!("{id}.{ext}.reason"));
        let present = |p: &Path| fs::symlink_metadata(p).is_ok();
        if present(&spool.join("rejected").join(format!("{id}.{ext}"))) || present(&reason) {
            // Whoever holds the spool may have put a FIFO or a symlink here: read no-follow,
            // non-blocking and bounded, and show the text escaped.
            let text = match fsx::read_untrusted(&reason, MAX_REASON_BYTES) {
                Ok(Untrusted::Content(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
                Ok(Untrusted::TooLarge(n)) => format!("(a {n}-byte reason file, not shown)"),
                Ok(Untrusted::NotRegular(kind)) => format!("(the reason file is {kind})"),
                Err(_) => String::new(),
            };
            return Ok(Found::Rejected(crate::client::escape(text.trim())));
        }
    }
    Ok(Found::Missing)
}

/// Reads `status/<id>.json`, if it exists.
pub fn read_status(spool: &Path, id: &RequestId) -> Result<Option<Answered>, ClientError> {
    let path = spool.join("status").join(format!("{id}.json"));
    let bytes = match fsx::read_untrusted(&path, MAX_STATUS_BYTES) {
        Ok(Untrusted::Content(bytes)) => bytes,
        Ok(Untrusted::TooLarge(n)) => {
            return Err(ClientError::BadAnswer(format!(
                "{} is {n} bytes, too large for a status record",
                path.display()
            )))
        }
        Ok(Untrusted::NotRegular(kind)) => {
            return Err(ClientError::BadAnswer(format!(
                "{} is {kind}, not a status record",
                path.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ClientError::Io {
                what: "cannot read",
                path,
                source,
            })
        }
    };
    let bad = |e: String| {
        ClientError::BadAnswer(format!(
            "{} is not a valid status record: {e}",
            path.display()
        ))
    };
    let raw: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let record: StatusRecord =
        serde_json::from_value(raw.clone()).map_err(|e| bad(e.to_string()))?;
    if record.request_id != *id {
        return Err(bad(format!("it is for request {}", record.request_id)));
    }
    let state = RequestState {
        request_id: record.request_id.to_string(),
        kind: Some(record.kind),
        status: record.status,
        message: record.message,
        reason: record.reason,
        certificate: record.certificate,
    };
    Ok(Some(Answered {
        state: state.escaped(),
        raw,
    }))
}
