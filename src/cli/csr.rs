//! `smsgate-ca csr` (not implemented yet).

use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};

/// Flags of `csr`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `csr`.
pub fn run(_settings: &Settings, _args: Args) -> anyhow::Result<ExitStatus> {
    Err(Fail::runtime("csr is not implemented yet"))
}
