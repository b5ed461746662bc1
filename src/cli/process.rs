//! `smsgate-ca process` (not implemented yet).

use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};

/// Flags of `process`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `process`.
pub fn run(_settings: &Settings, _args: Args) -> anyhow::Result<ExitStatus> {
    Err(Fail::runtime("process is not implemented yet"))
}
