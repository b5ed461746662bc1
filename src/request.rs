//! The request vocabulary shared by the spool, the API, sync and the client: request ids,
//! request types, envelopes and status records (DESIGN §2 and §5).
//!
//! Everything here is plain data with serde shapes fixed by the contract. Parsing an id or a
//! type is the only validation done here; deciding about a request is `policy`'s job.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A request id: `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$` (DESIGN §2). Safe to use as a file stem.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(String);

/// Why a string is not a request id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a valid request id: use 1-64 characters A-Z a-z 0-9 _ -, starting with a letter or digit")]
pub struct BadRequestId(pub String);

impl RequestId {
    /// Parses an id, refusing anything that could not be a safe file stem.
    pub fn parse(s: &str) -> Result<Self, BadRequestId> {
        let bytes = s.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= 64
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadRequestId(truncate_for_message(s)))
        }
    }

    /// A fresh random id of 21 characters, like the upstream API's (nanoid alphabet).
    pub fn generate() -> Self {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut raw = [0u8; 21];
        openssl::rand::rand_bytes(&mut raw).expect("the OpenSSL CSPRNG is available");
        let id: String = raw
            .iter()
            .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
            .collect();
        Self(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RequestId {
    type Err = BadRequestId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The kind of certificate asked for; each maps to a policy profile of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestType {
    /// A webhook receiver (`webhook`, the default).
    Webhook,
    /// A private server (`private_server`).
    PrivateServer,
}

impl RequestType {
    /// The wire and profile name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::PrivateServer => "private_server",
        }
    }

    /// Parses a wire name; `None` for anything unknown (reason `unknown_type`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "webhook" => Some(Self::Webhook),
            "private_server" => Some(Self::PrivateServer),
            _ => None,
        }
    }
}

impl fmt::Display for RequestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request envelope: the API's POST body plus id and time (`incoming/<id>.json`).
///
/// `type` is kept as text so that an unknown type can be decided (`unknown_type`) with a
/// status record instead of failing to parse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Must equal the file stem.
    pub request_id: String,
    /// `webhook` or `private_server`.
    #[serde(rename = "type", default = "default_type")]
    pub kind: String,
    /// The PEM CSR.
    pub content: String,
    /// Free-form key/value pairs from the submitter; never copied into a certificate.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
    /// When the request was submitted (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<String>,
}

fn default_type() -> String {
    RequestType::Webhook.as_str().to_owned()
}

/// The state of a request as the API and status records name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Held for an operator (or, on the API, not yet decided).
    Pending,
    /// Certificate issued.
    Approved,
    /// Refused; `reason` says why.
    Denied,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
        }
    }
}

/// `status/<id>.json`: the result record, field names as the API's (DESIGN §2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// The request's id.
    pub request_id: RequestId,
    /// The request type as submitted (may be unknown when denied `unknown_type`).
    #[serde(rename = "type")]
    pub kind: String,
    /// pending, approved or denied.
    pub status: Status,
    /// Plain words for a person.
    pub message: String,
    /// A stable reason code when denied.
    pub reason: Option<String>,
    /// Leaf then intermediates, PEM, when approved.
    pub certificate: Option<String>,
    /// 32 lowercase hex digits when approved.
    pub serial: Option<String>,
    /// Validity start (RFC 3339) when approved.
    pub not_before: Option<String>,
    /// Validity end (RFC 3339) when approved.
    pub not_after: Option<String>,
    /// Colon-separated upper-case SHA-256 of the leaf's DER when approved.
    pub fingerprint_sha256: Option<String>,
    /// When the decision was taken (RFC 3339).
    pub decided_at: String,
}

impl StatusRecord {
    /// A denial record.
    pub fn denied(id: RequestId, kind: &str, reason: &str, message: String) -> Self {
        Self {
            request_id: id,
            kind: kind.to_owned(),
            status: Status::Denied,
            message,
            reason: Some(reason.to_owned()),
            certificate: None,
            serial: None,
            not_before: None,
            not_after: None,
            fingerprint_sha256: None,
            decided_at: rfc3339(Utc::now()),
        }
    }

    /// A record for a request held for an operator.
    pub fn pending(id: RequestId, kind: &str, message: String) -> Self {
        Self {
            status: Status::Pending,
            reason: None,
            ..Self::denied(id, kind, "", message)
        }
    }
}

/// RFC 3339 with whole seconds and `Z`, the one time format of every file and response.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn truncate_for_message(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_spool_rule() {
        for good in ["a", "V1StGXR8_Z5jdHi6B-myT", "0", &"x".repeat(64)] {
            assert!(RequestId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            ".a",
            "a/b",
            "..",
            "a b",
            "é",
            &"x".repeat(65),
            "a.csr",
        ] {
            assert!(RequestId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_ids_are_valid_and_differ() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_eq!(a.as_str().len(), 21);
        assert_ne!(a, b);
        assert!(RequestId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn envelope_defaults_type_to_webhook() {
        let e: Envelope = serde_json::from_str(r#"{"request_id":"a","content":"x"}"#).unwrap();
        assert_eq!(e.kind, "webhook");
    }
}
