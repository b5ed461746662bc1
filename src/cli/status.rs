//! `smsgate-ca status` (not implemented yet).

use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};

/// Flags of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `status`.
pub fn run(_settings: &Settings, _args: Args) -> anyhow::Result<ExitStatus> {
    Err(Fail::runtime("status is not implemented yet"))
}
