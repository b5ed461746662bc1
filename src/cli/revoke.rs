//! `smsgate-ca revoke` (not implemented yet).

use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};

/// Flags of `revoke`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `revoke`.
pub fn run(_settings: &Settings, _args: Args) -> anyhow::Result<ExitStatus> {
    Err(Fail::runtime("revoke is not implemented yet"))
}
