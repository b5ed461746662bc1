//! The client's error type: one variant per way a request can end badly, each printing as one
//! sentence that names what to fix, each mapped to its exit status (DESIGN §6).

use std::path::PathBuf;
use std::time::Duration;

use super::http::HttpError;
use crate::error::ExitStatus;

/// Why a client command did not produce its files.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad input found before any work: a public IP, an existing file, a missing directory.
    #[error("{0}")]
    BadInput(String),
    /// The CA refused the request.
    #[error("request {id} was denied{}: {message}", reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Denied {
        /// The request id ("-" when refused at submission without one).
        id: String,
        /// The stable reason code, when the CA sent one.
        reason: Option<String>,
        /// The CA's plain-words message.
        message: String,
    },
    /// No decision within `--timeout`; the id lets the user look later.
    #[error(
        "request {id} was not decided within {} ({}); no files were written and its key was \
         discarded: check it with `smsgate-ca status {id}{}`, or run again with a longer --timeout",
        crate::duration::format(*waited),
        if *held { "it is held for an operator's approval" } else { "still pending" },
        spool.as_ref().map(|s| format!(" --spool {}", s.display())).unwrap_or_default()
    )]
    Timeout {
        /// The request id.
        id: String,
        /// How long we waited.
        waited: Duration,
        /// Whether the signer said it is held for an operator.
        held: bool,
        /// The spool, in spool mode (for the hint).
        spool: Option<PathBuf>,
    },
    /// The transport failed (unreachable, TLS, garbage, an unexpected status).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The CA's answer made no sense (approved without a certificate, a certificate for
    /// another key).
    #[error("{0}")]
    BadAnswer(String),
    /// A file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What we were doing ("cannot write").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// OpenSSL failed to make a key or a CSR.
    #[error("{0}")]
    Crypto(String),
}

impl ClientError {
    /// The exit status this error asks for.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Self::BadInput(_) => ExitStatus::Usage,
            Self::Denied { .. } => ExitStatus::Denied,
            _ => ExitStatus::Failure,
        }
    }
}
