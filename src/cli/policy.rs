//! `smsgate-ca policy …` (not implemented yet).

use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};

/// Subcommands of `policy`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Placeholder.
    Todo,
}

/// Runs a `policy` subcommand.
pub fn run(_settings: &Settings, _cmd: Command) -> anyhow::Result<ExitStatus> {
    Err(Fail::runtime("policy is not implemented yet"))
}
