//! The signer: the only code that holds the CA key. It creates the CA (`init`), issues exactly
//! the plan policy approved, and signs CRLs and ledger checkpoints. It never decides policy,
//! and never touches HTTP, TOML or a database.

pub mod ca;
pub mod crl;
pub mod issue;
pub mod key;
pub mod lint;
pub mod serial;

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

#[cfg(test)]
mod proptests;
