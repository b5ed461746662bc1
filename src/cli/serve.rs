//! `smsgate-ca serve` (not implemented yet).

use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};

/// Flags of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `serve`.
pub fn run(_settings: &Settings, _args: Args) -> anyhow::Result<ExitStatus> {
    Err(Fail::runtime("serve is not implemented yet"))
}
