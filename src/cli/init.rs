//! `smsgate-ca init` (not implemented yet).

use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};

/// Flags of `init`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `init`.
pub fn run(_settings: &Settings, _args: Args) -> anyhow::Result<ExitStatus> {
    Err(Fail::runtime("init is not implemented yet"))
}
