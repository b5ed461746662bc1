//! `smsgate-ca webhooks|private` (not implemented yet).

use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};

/// Flags of `webhooks|private`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `webhooks|private`.
pub fn run(
    _settings: &Settings,
    _args: Args,
    _kind: crate::request::RequestType,
) -> anyhow::Result<ExitStatus> {
    Err(Fail::runtime("webhooks|private is not implemented yet"))
}
