//! The signer: the only code that holds the CA key. It creates the CA (`init`), issues exactly
//! the plan policy approved, and signs CRLs and ledger checkpoints. It never decides policy,
//! and never touches HTTP, TOML or a database.
//!
//! Every signature goes through [`signing::SigningKey`] (a key file, or a PKCS#11 token through
//! [`pkcs11`]): the signer builds the bytes to be signed itself ([`tbs`], [`crl`], [`der`]),
//! lints them, has the key sign them once, and checks the result with OpenSSL against the CA
//! certificate's public key before anything is published.

pub mod ca;
pub mod crl;
pub(crate) mod der;
pub mod issue;
pub mod key;
pub mod lint;
pub mod pkcs11;
pub mod serial;
pub mod signing;
pub mod tbs;

use std::net::IpAddr;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

/// Why the signer refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// `init` found a CA already.
    #[error("a CA already exists in {0}: refusing to overwrite it (choose another --state)")]
    CaExists(PathBuf),
    /// No CA in the state directory.
    #[error("no CA in {0}: create one with `smsgate-ca init --state {0}` (or run with --dev for a development CA)")]
    NoCa(PathBuf),
    /// Import refused.
    #[error("cannot import the CA: {0}")]
    Import(String),
    /// `--subject` could not be read.
    #[error("bad --subject: {0}")]
    Subject(String),
    /// State permissions too loose.
    #[error("{0}")]
    Permissions(String),
    /// The planned IP is outside the CA's name constraints.
    #[error("{0} is outside the issuing CA's name constraints; refusing to sign")]
    OutsideNameConstraints(IpAddr),
    /// The issuing CA has expired.
    #[error("the issuing CA expired at {0}; renew the CA before issuing")]
    CaExpired(DateTime<Utc>),
    /// The certificate failed a lint before or after signing.
    #[error("certificate lint failed, nothing issued: {0}")]
    Lint(String),
    /// Key handling failed.
    #[error(transparent)]
    Key(#[from] key::KeyError),
    /// Signing failed (the key file's OpenSSL context, or the token).
    #[error(transparent)]
    Signing(#[from] signing::SigningError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// OpenSSL failed.
    #[error("OpenSSL: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
}

impl SignerError {
    /// Whether the failure may pass by itself (the token is away): the request should wait
    /// and be retried, not be held for an operator.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Signing(e) if e.is_unavailable())
    }
}

impl From<pkcs11::TokenError> for SignerError {
    fn from(e: pkcs11::TokenError) -> Self {
        Self::Signing(e.into())
    }
}

#[cfg(test)]
mod proptests;
