//! Ledger lines (DESIGN §7): one JSON object per line, `seq`, `ts`, `kind` and the event's
//! fields, then `prev` (the previous line's hash) and `hash`, the SHA-256 of the line's exact
//! bytes up to the `,"hash":` that ends it.
//!
//! Hashes are computed over the bytes written, never over a re-serialised struct, so any change
//! of a byte in a line changes its hash or breaks its parse.

use serde::{Deserialize, Serialize};

use crate::fsx::hex;

/// Every event the ledger records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A serial reserved for a request, written (and flushed) before signing.
    Intent {
        /// The request.
        request_id: String,
        /// 32 hex digits.
        serial: String,
        /// The request type.
        #[serde(rename = "type")]
        kind: String,
        /// The IP to be certified.
        ip: String,
    },
    /// A certificate issued.
    Issued {
        /// The request.
        request_id: String,
        /// 32 hex digits.
        serial: String,
        /// The request type.
        #[serde(rename = "type")]
        kind: String,
        /// The certified IP.
        ip: String,
        /// RFC 3339.
        not_before: String,
        /// RFC 3339.
        not_after: String,
        /// SHA-256 fingerprint of the leaf.
        fingerprint_sha256: String,
        /// The leaf PEM.
        certificate: String,
    },
    /// A request denied (by policy, an operator or expiry).
    Denied {
        /// The request.
        request_id: String,
        /// The request type as submitted.
        #[serde(rename = "type")]
        kind: String,
        /// Reason code.
        reason: String,
        /// Plain words.
        message: String,
    },
    /// A certificate revoked.
    Revoked {
        /// 32 hex digits.
        serial: String,
        /// The request it was issued for.
        request_id: String,
        /// RFC 5280 reason name.
        reason: String,
        /// RFC 3339.
        revoked_at: String,
    },
    /// A CRL signed.
    Crl {
        /// CRL number.
        number: u64,
        /// RFC 3339.
        this_update: String,
        /// RFC 3339.
        next_update: String,
        /// SHA-256 of the DER.
        sha256: String,
    },
    /// A signed statement of the ledger's history up to this line.
    Checkpoint {
        /// This line's own 1-based number.
        line: u64,
        /// Hash of the previous line (it chains everything before).
        head: String,
        /// Hex DER signature by the issuing CA key over [`checkpoint_message`].
        signature: String,
    },
}

impl Event {
    /// The request id the event is about, if any.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Intent { request_id, .. }
            | Self::Issued { request_id, .. }
            | Self::Denied { request_id, .. }
            | Self::Revoked { request_id, .. } => Some(request_id),
            _ => None,
        }
    }
}

/// A parsed ledger line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// 1-based line number.
    pub seq: u64,
    /// When it was written (RFC 3339).
    pub ts: String,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// The previous line's hash (64 zeros for the first line).
    pub prev: String,
    /// This line's hash.
    #[serde(default)]
    pub hash: String,
}

/// Why a line is not a valid ledger line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LineError {
    /// The hash field is missing or malformed.
    #[error("the line does not end with a \"hash\" field")]
    NoHash,
    /// The hash does not match the bytes.
    #[error("the line's content does not match its hash (the line was edited)")]
    HashMismatch,
    /// The JSON does not parse.
    #[error("the line is not a ledger entry: {0}")]
    Json(String),
}

/// The hash of the line before the first one.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Renders a line (without the newline) for `seq`, `ts`, `event` after `prev`.
pub fn render(seq: u64, ts: &str, event: &Event, prev: &str) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        seq: u64,
        ts: &'a str,
        #[serde(flatten)]
        event: &'a Event,
        prev: &'a str,
    }
    let body = serde_json::to_string(&Body {
        seq,
        ts,
        event,
        prev,
    })
    .expect("ledger events always serialise");
    let open = &body[..body.len() - 1]; // drop the closing brace
    let hash = hex::encode(openssl::sha::sha256(open.as_bytes()));
    format!("{open},\"hash\":\"{hash}\"}}")
}

/// Parses one line and checks its own hash.
pub fn parse(line: &str) -> Result<Entry, LineError> {
    let split = line
        .len()
        .checked_sub(HASH_SUFFIX_LEN)
        .ok_or(LineError::NoHash)?;
    if !line.is_char_boundary(split)
        || !line[split..].starts_with(",\"hash\":\"")
        || !line.ends_with("\"}")
    {
        return Err(LineError::NoHash);
    }
    let claimed = &line[split + 9..line.len() - 2];
    let actual = hex::encode(openssl::sha::sha256(&line.as_bytes()[..split]));
    if claimed != actual {
        return Err(LineError::HashMismatch);
    }
    serde_json::from_str(line).map_err(|e| LineError::Json(e.to_string()))
}

/// The bytes a checkpoint signature covers.
pub fn checkpoint_message(line: u64, head: &str) -> Vec<u8> {
    format!("smsgate-ca ledger checkpoint v1\n{line}\n{head}\n").into_bytes()
}

/// `,"hash":"` + 64 hex digits + `"}`.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> Event {
        Event::Denied {
            request_id: "a".into(),
            kind: "webhook".into(),
            reason: "ip_not_allowed".into(),
            message: "8.8.8.8 is public".into(),
        }
    }

    #[test]
    fn lines_round_trip_and_detect_edits() {
        let line = render(1, "2026-01-01T00:00:00Z", &ev(), GENESIS);
        let e = parse(&line).unwrap();
        assert_eq!(e.seq, 1);
        assert_eq!(e.event, ev());
        assert_eq!(e.prev, GENESIS);
        assert_eq!(e.hash.len(), 64);
        let edited = line.replace("8.8.8.8", "8.8.4.4");
        assert_eq!(parse(&edited), Err(LineError::HashMismatch));
        assert_eq!(parse("{}"), Err(LineError::NoHash));
    }
}
