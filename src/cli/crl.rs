//! `smsgate-ca crl` (not implemented yet).

use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};

/// Flags of `crl`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `crl`.
pub fn run(_settings: &Settings, _args: Args) -> anyhow::Result<ExitStatus> {
    Err(Fail::runtime("crl is not implemented yet"))
}
