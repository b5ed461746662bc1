//! The issuance policy: the operator's TOML file (DESIGN §3) loaded into a [`Policy`], and the
//! pure decision `(CSR facts, request type, policy) -> Approve | Deny | Hold`.
//!
//! This module owns every rule about what may be signed. It does no I/O beyond reading the
//! policy file in [`Policy::load`], never touches a key, and never looks at the spool or the
//! ledger. The signer receives an approved [`Plan`] and nothing else from here.

mod decide;
mod file;
mod key;
pub mod range;
mod reason;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use decide::{decide, evaluate, Context, Evaluation, Outcome, Verdict};
pub use reason::Reason;

use crate::key_type::KeyType;
use range::RangeSet;

/// A loaded, validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Where it was loaded from (for messages).
    pub source: PathBuf,
    /// The `[defaults]` as written (profiles already include them).
    pub defaults: Settings,
    /// Profiles by request type name, sorted.
    pub profiles: Vec<Profile>,
}

/// One profile: what may be signed for one request type.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// The request type name (`webhook`, `private_server`).
    pub name: String,
    /// First serial byte (1..=127).
    pub serial_prefix: u8,
    /// Addresses that may be certified.
    pub allow: RangeSet,
    /// Addresses that may not, even inside `allow`.
    pub deny: RangeSet,
    /// Everything else, defaults applied.
    pub settings: Settings,
}

/// The keys a profile shares with `[defaults]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Certificate lifetime in days.
    pub validity_days: u32,
    /// notBefore is this much before now (clock skew).
    pub backdate_seconds: u32,
    /// Sign at once, or hold for an operator.
    pub approval: Approval,
    /// Accepted CSR key types.
    pub key_types: Vec<KeyType>,
    /// Accepted CSR signature digests (`sha256`, `sha384`, `sha512`).
    pub csr_signature_digests: Vec<String>,
    /// Largest accepted CSR in bytes.
    pub max_csr_bytes: u64,
    /// How long a held request waits for an operator before it is denied `expired`.
    pub held_ttl: Duration,
    /// Put `CN=<ip>` in the subject (legacy clients).
    pub subject_cn: bool,
    /// What a revocation request from the spool needs (DESIGN §9).
    pub revocation: Revocation,
    /// CRL distribution point URL for issued certificates.
    pub crl_url: Option<String>,
    /// AIA caIssuers URL for issued certificates.
    pub ca_issuers_url: Option<String>,
}

/// Automatic or manual decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    /// Decide at once.
    Auto,
    /// Hold for an operator.
    Manual,
}

/// What a revocation request from the spool needs to be carried out (DESIGN §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// Held for an operator, whatever it carries.
    Manual,
    /// Carried out when its proof (a signature by the certificate's key) verifies; held
    /// without a proof; denied `bad_proof` with a wrong one.
    Proof,
}

impl Revocation {
    /// The policy file's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Proof => "proof",
        }
    }
}

/// What policy decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Sign this plan now.
    Approve(Plan),
    /// Refuse, with a stable code and plain words.
    Deny(Denial),
    /// Wait for an operator; the plan is what would be signed (re-checked on `approve`).
    Hold(Plan),
}

/// A refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The stable reason code.
    pub reason: Reason,
    /// What to fix, for a person.
    pub message: String,
}

/// Everything the signer needs to issue, decided by policy (DESIGN §4).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The one IP the certificate is for.
    pub ip: IpAddr,
    /// The profile (request type) name.
    pub profile: String,
    /// First serial byte.
    pub serial_prefix: u8,
    /// Lifetime in days (capped at the CA's notAfter by the signer).
    pub validity_days: u32,
    /// notBefore backdating.
    pub backdate_seconds: u32,
    /// Add `CN=<ip>` to the subject.
    pub subject_cn: bool,
    /// The CSR key's type (keyEncipherment for RSA).
    pub key_type: KeyType,
    /// CRL distribution point.
    pub crl_url: Option<String>,
    /// AIA caIssuers.
    pub ca_issuers_url: Option<String>,
}

/// Why a policy file cannot be used. Messages name the file and, where known, the line.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid policy TOML.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line, 0 when unknown.
        line: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl Policy {
    /// Loads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates policy text; `origin` names it in messages.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, PolicyError> {
        file::parse(text, origin)
    }

    /// The built-in default policy (DESIGN §3), identical to `policy/default.toml`.
    pub fn builtin_default() -> Self {
        Self::from_toml(DEFAULT_POLICY, Path::new("<built-in default policy>"))
            .expect("the built-in default policy is valid")
    }

    /// The profile for a request type, if the policy has one.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// The largest CSR accepted for a type (the defaults' limit for an unknown type).
    pub fn max_csr_bytes(&self, kind: &str) -> u64 {
        self.profile(kind)
            .map_or(self.defaults.max_csr_bytes, |p| p.settings.max_csr_bytes)
    }

    /// The union of all profiles' allow ranges: what the CA's name constraints permit.
    pub fn all_allow_ranges(&self) -> Vec<IpNet> {
        let mut nets: Vec<IpNet> = Vec::new();
        for p in &self.profiles {
            for n in p.allow.nets() {
                if !nets.contains(n) {
                    nets.push(*n);
                }
            }
        }
        nets.sort();
        // Drop blocks nested in others: name constraints want the outer ones only.
        let all = nets.clone();
        nets.retain(|n| !all.iter().any(|o| o != n && o.contains(n)));
        nets
    }

    /// Whether any profile puts `CN=<ip>` in the subject (the CA then cannot exclude DNS names,
    /// DESIGN §4).
    pub fn any_subject_cn(&self) -> bool {
        self.profiles.iter().any(|p| p.settings.subject_cn)
    }

    /// Writes the policy back as TOML that [`Policy::from_toml`] reads to the same policy.
    pub fn to_toml(&self) -> String {
        file::render(self)
    }
}

/// The text of `policy/default.toml`, compiled in for `--dev` and for tests.
pub const DEFAULT_POLICY: &str = include_str!("../../policy/default.toml");

#[cfg(test)]
mod tests;
