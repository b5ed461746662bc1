//! `smsgate-ca daemon` (not implemented yet).

use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};

/// Flags of `daemon`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `daemon`.
pub fn run(_settings: &Settings, _args: Args) -> anyhow::Result<ExitStatus> {
    Err(Fail::runtime("daemon is not implemented yet"))
}
