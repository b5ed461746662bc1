//! `smsgate-ca approve ID` and `smsgate-ca deny ID --reason TEXT` (not implemented yet).

use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};

/// Flags of `approve`.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {}

/// Flags of `deny`.
#[derive(Debug, clap::Args)]
pub struct DenyArgs {}

/// Runs `approve`.
pub fn run_approve(_settings: &Settings, _args: ApproveArgs) -> anyhow::Result<ExitStatus> {
    Err(Fail::runtime("approve is not implemented yet"))
}

/// Runs `deny`.
pub fn run_deny(_settings: &Settings, _args: DenyArgs) -> anyhow::Result<ExitStatus> {
    Err(Fail::runtime("deny is not implemented yet"))
}
