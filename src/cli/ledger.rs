//! `smsgate-ca ledger …` (not implemented yet).

use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};

/// Subcommands of `ledger`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Placeholder.
    Todo,
}

/// Runs a `ledger` subcommand.
pub fn run(_settings: &Settings, _cmd: Command) -> anyhow::Result<ExitStatus> {
    Err(Fail::runtime("ledger is not implemented yet"))
}
