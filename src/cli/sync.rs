//! `smsgate-ca sync` (not implemented yet).

use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};

/// Flags of `sync`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `sync`.
pub fn run(_settings: &Settings, _args: Args) -> anyhow::Result<ExitStatus> {
    Err(Fail::runtime("sync is not implemented yet"))
}
