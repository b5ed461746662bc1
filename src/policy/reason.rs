//! Denial reason codes (DESIGN §2): stable snake_case strings that scripts may match on.

use std::fmt;

/// Why a request was denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not a PEM or DER CSR (or not a valid envelope).
    InvalidCsr,
    /// The CSR's self-signature does not verify.
    BadSignature,
    /// The key is too small (RSA below 2048 bits).
    WeakKey,
    /// The key type is not accepted (DSA, other curves, Ed25519, …).
    UnsupportedKey,
    /// The CSR is signed with a weak or unaccepted digest (SHA-1, MD5).
    WeakSignature,
    /// No IP address is requested.
    NoIpSan,
    /// More than one name is requested.
    TooManyNames,
    /// A DNS name is requested.
    DnsNameNotAllowed,
    /// The subject CN is not the requested IP.
    CnMismatch,
    /// The IP is outside the profile's allow ranges (or public).
    IpNotAllowed,
    /// The IP is in the profile's deny ranges.
    IpDenied,
    /// A requested extension asks for CA powers or is critical and unknown.
    ExtensionNotAllowed,
    /// The request type has no profile.
    UnknownType,
    /// The file or CSR is over the size limit.
    TooLarge,
    /// Another request with the same id and different content was decided before.
    DuplicateRequest,
    /// A held request was not decided in time.
    Expired,
    /// An operator denied it.
    DeniedByOperator,
}

impl Reason {
    /// Every code, for documentation and tests.
    pub const ALL: [Self; 17] = [
        Self::InvalidCsr,
        Self::BadSignature,
        Self::WeakKey,
        Self::UnsupportedKey,
        Self::WeakSignature,
        Self::NoIpSan,
        Self::TooManyNames,
        Self::DnsNameNotAllowed,
        Self::CnMismatch,
        Self::IpNotAllowed,
        Self::IpDenied,
        Self::ExtensionNotAllowed,
        Self::UnknownType,
        Self::TooLarge,
        Self::DuplicateRequest,
        Self::Expired,
        Self::DeniedByOperator,
    ];

    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidCsr => "invalid_csr",
            Self::BadSignature => "bad_signature",
            Self::WeakKey => "weak_key",
            Self::UnsupportedKey => "unsupported_key",
            Self::WeakSignature => "weak_signature",
            Self::NoIpSan => "no_ip_san",
            Self::TooManyNames => "too_many_names",
            Self::DnsNameNotAllowed => "dns_name_not_allowed",
            Self::CnMismatch => "cn_mismatch",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::IpDenied => "ip_denied",
            Self::ExtensionNotAllowed => "extension_not_allowed",
            Self::UnknownType => "unknown_type",
            Self::TooLarge => "too_large",
            Self::DuplicateRequest => "duplicate_request",
            Self::Expired => "expired",
            Self::DeniedByOperator => "denied_by_operator",
        }
    }

    /// Parses a code.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
