//! `smsgate-ca check CERT [--within 30d]`: for cron jobs and systemd timers that renew
//! certificates.
//!
//! Exit 0 when CERT is valid for longer than the window, 1 when it expires within it (or has
//! expired), 2 when CERT cannot be read. One line on stdout either way.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::Settings;
use crate::client::keys;
use crate::error::{ExitStatus, Fail};

/// Flags of `check`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when CERT is valid beyond the window; 1 when it expires within the window or has expired; 2 when CERT cannot be read."
)]
pub struct Args {
    /// The certificate to check (PEM or DER; the first certificate of a chain)
    #[arg(value_name = "CERT")]
    pub cert: PathBuf,
    /// Exit 1 when the certificate expires within this window (e.g. 30d, 12h)
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = super::parse_duration)]
    pub within: Duration,
}

/// Runs `check`.
pub fn run(_settings: &Settings, args: Args) -> anyhow::Result<ExitStatus> {
    let cert = keys::read_certificate(&args.cert).map_err(|e| Fail::usage(e.to_string()))?;
    let left = keys::seconds_left(&cert).ok_or_else(|| {
        Fail::usage(format!(
            "{}: the notAfter date cannot be read",
            args.cert.display()
        ))
    })?;
    let not_after = keys::not_after_text(&cert);
    let window = i64::try_from(args.within.as_secs()).unwrap_or(i64::MAX);
    let name = args.cert.display();
    let days = left.div_euclid(86_400);
    if left <= 0 {
        println!(
            "{name}: EXPIRED at {not_after} ({} ago)",
            days_text((-left).div_euclid(86_400))
        );
        Ok(ExitStatus::Failure)
    } else if left <= window {
        println!(
            "{name}: expires {not_after}, {} left: within {}, renew it",
            days_text(days),
            crate::duration::format(args.within)
        );
        Ok(ExitStatus::Failure)
    } else {
        println!("{name}: valid until {not_after}, {} left", days_text(days));
        Ok(ExitStatus::Success)
    }
}

fn days_text(days: i64) -> String {
    if days == 1 {
        "1 day".to_owned()
    } else {
        format!("{days} days")
    }
}
