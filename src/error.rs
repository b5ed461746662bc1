//! The exit status of every command (DESIGN §6) and the error type that carries one.

use std::fmt;
use std::process::ExitCode;

/// Exit codes fixed by DESIGN §6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: done.
    Success,
    /// 1: a runtime failure (I/O, lock held, timeout, unverifiable ledger).
    Failure,
    /// 2: bad usage or bad input.
    Usage,
    /// 3: denied by policy.
    Denied,
}

impl ExitStatus {
    /// The numeric code.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failure => 1,
            Self::Usage => 2,
            Self::Denied => 3,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> Self {
        Self::from(s.code())
    }
}

/// An error that knows its exit status. Anything else that reaches `main` exits 1.
#[derive(Debug)]
pub struct Fail {
    /// The exit status to use.
    pub status: ExitStatus,
    /// The one sentence for stderr.
    pub message: String,
}

impl Fail {
    /// Bad usage or bad input (exit 2).
    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        Self {
            status: ExitStatus::Usage,
            message: message.into(),
        }
        .into()
    }

    /// Denied by policy (exit 3).
    pub fn denied(message: impl Into<String>) -> anyhow::Error {
        Self {
            status: ExitStatus::Denied,
            message: message.into(),
        }
        .into()
    }

    /// A runtime failure (exit 1).
    pub fn runtime(message: impl Into<String>) -> anyhow::Error {
        Self {
            status: ExitStatus::Failure,
            message: message.into(),
        }
        .into()
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fail {}

/// The exit status an error asks for: a [`Fail`] anywhere in its chain, else 1.
pub fn status_of(err: &anyhow::Error) -> ExitStatus {
    err.chain()
        .find_map(|e| e.downcast_ref::<Fail>())
        .map_or(ExitStatus::Failure, |f| f.status)
}
