//! `smsgate-ca check CERT [--within 30d]`: for cron jobs and systemd timers that renew
//! certificates.
//!
//! Exit 0 when CERT is valid for longer than the window, 1 when it expires within it (or has
//! expired), 2 when CERT cannot be read. One line on stdout either way.

use std::path::PathBuf;
use std::time::Duration;

use openssl::asn1::Asn1Time;

use crate::cli::Settings;
use crate::client::keys;
use crate::error::{ExitStatus, Fail};

/// Flags of `check`.
#[derive(Debug, clap::Args)]
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
    let now_unix = chrono::Utc::now().timestamp();
    let now = Asn1Time::from_unix(now_unix).map_err(|e| Fail::runtime(e.to_string()))?;
    // Seconds from now to notAfter (negative when expired).
    let diff = now
        .diff(cert.not_after())
        .map_err(|e| Fail::usage(format!("{}: unreadable notAfter: {e}", args.cert.display())))?;
    let left = i64::from(diff.days) * 86_400 + i64::from(diff.secs);
    let not_after = chrono::DateTime::from_timestamp(now_unix + left, 0)
        .map(crate::request::rfc3339)
        .unwrap_or_else(|| cert.not_after().to_string());
    let window = i64::try_from(args.within.as_secs()).unwrap_or(i64::MAX);
    let name = args.cert.display();
    let days = left.div_euclid(86_400);
    if left <= 0 {
        println!(
            "{name}: EXPIRED at {not_after} ({} days ago)",
            (-left).div_euclid(86_400)
        );
        Ok(ExitStatus::Failure)
    } else if left <= window {
        println!(
            "{name}: expires {not_after}, {days} days left: within {}, renew it",
            crate::duration::format(args.within)
        );
        Ok(ExitStatus::Failure)
    } else {
        println!("{name}: valid until {not_after}, {days} days left");
        Ok(ExitStatus::Success)
    }
}
