//! `smsgate-ca list` and `smsgate-ca show` (not implemented yet).

use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};

/// Flags of `list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {}

/// Flags of `show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {}

/// Runs `list`.
pub fn run_list(_settings: &Settings, _args: ListArgs) -> anyhow::Result<ExitStatus> {
    Err(Fail::runtime("list is not implemented yet"))
}

/// Runs `show`.
pub fn run_show(_settings: &Settings, _args: ShowArgs) -> anyhow::Result<ExitStatus> {
    Err(Fail::runtime("show is not implemented yet"))
}
