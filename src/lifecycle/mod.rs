//! The certificate lifecycle after issuance: revocation (the operator's `revoke` and
//! `incoming/<id>.revoke.json` requests from the spool), CRL issuing and its state, the
//! inventory behind `list`/`show`, expiry warnings and the offline metrics textfile.
//!
//! The ledger stays the truth. The two files this module keeps in the state directory,
//! `inventory.idx` ([`index`]) and `crl.json` ([`crl`]), are caches: each is checked against
//! the ledger before use and rebuilt from it when stale, damaged or missing. Only [`crl`] signs
//! (CRLs, with the issuing CA key through `signer::crl::build_crl`); nothing here decides
//! issuance, and nothing here touches certificate requests in the spool.

pub mod crl;
pub mod index;
pub mod inventory;
pub mod metrics;
pub mod revocation;
pub mod warnings;

use std::path::PathBuf;

use crate::ledger::LedgerError;
use crate::signer::crl::CrlError;

/// Why a lifecycle operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The ledger could not be read or written.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A file of the state directory or the spool could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The CRL could not be built or signed.
    #[error("cannot sign the CRL: {0}")]
    Crl(#[from] CrlError),
    /// Neither a serial nor a request id the ledger knows.
    #[error("{0}")]
    NotFound(String),
    /// The certificate was revoked before.
    #[error(
        "certificate {serial} (request {request_id}) was already revoked at {revoked_at} \
         ({reason}); nothing changed"
    )]
    AlreadyRevoked {
        /// 32 hex digits.
        serial: String,
        /// The certificate's request.
        request_id: String,
        /// RFC 3339.
        revoked_at: String,
        /// RFC 5280 name.
        reason: String,
    },
    /// The input is not usable (malformed serial, bad reason, out-of-range validity…).
    #[error("{0}")]
    BadInput(String),
    /// The certificate belongs to a request of another type.
    #[error(
        "certificate {serial} was issued for a {owner} request; a {asked} revocation request \
         cannot revoke it"
    )]
    WrongType {
        /// 32 hex digits.
        serial: String,
        /// The type of the request that owns the certificate.
        owner: String,
        /// The type the revocation request named.
        asked: String,
    },
}

impl LifecycleError {
    /// Whether the error is the caller's input (exit 2) rather than a runtime failure (exit 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::NotFound(_)
                | Self::AlreadyRevoked { .. }
                | Self::BadInput(_)
                | Self::WrongType { .. }
        )
    }

    /// An I/O error on `path`.
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}
