//! `smsgate-ca crl [--days N]`: sign a CRL v2 of every revocation in the ledger with the
//! issuing CA key and publish it as `published/ca.crl` (DER) and `published/ca.crl.pem`.
//! Works while the daemon runs (the ledger's lock and the CRL lock order the writes).

use std::io::Write;

use crate::cli::operator::{existing_state, load_signing_ca};
use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};
use crate::ledger::Ledger;
use crate::lifecycle::crl::{self, CrlValidity, Signed, DEFAULT_DAYS, MAX_DAYS};
use crate::request::rfc3339;

/// Flags of `crl`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Days until the CRL's nextUpdate, 1 to 3650; sign again before then (the daemon does so
    /// when a third is left). Long values suit a key kept offline for weeks [default: 7]
    #[arg(long, value_name = "N", value_parser = parse_days, allow_negative_numbers = true)]
    days: Option<u64>,
    /// The validity as a duration instead (10s to 3650d, e.g. 12h): for labs and tests
    #[arg(long, value_name = "DURATION", conflicts_with = "days", value_parser = super::parse_duration)]
    validity: Option<std::time::Duration>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

/// Runs `crl`.
pub fn run(settings: &Settings, args: Args) -> anyhow::Result<ExitStatus> {
    let validity = match args.validity {
        Some(d) => chrono::Duration::from_std(d)
            .map_err(|e| Fail::usage(e.to_string()))
            .and_then(|d| CrlValidity::new(d).map_err(|e| Fail::usage(e.to_string())))?,
        None => CrlValidity::days(args.days.unwrap_or(u64::from(DEFAULT_DAYS)))
            .map_err(|e| Fail::usage(e.to_string()))?,
    };
    let state = existing_state(settings)?;
    let ca = load_signing_ca(settings, &state)?;
    let mut ledger = Ledger::open(&state.ledger())?;
    let spool = crate::cli::operator::open_spool(settings)?;
    let signed =
        crl::issue(&ca, &mut ledger, &spool, validity).map_err(super::revoke::lifecycle)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", summary_json(&signed))?;
    } else {
        print_summary(&mut out, &signed)?;
    }
    Ok(ExitStatus::Success)
}

/// The JSON summary of a signed CRL (also used by `revoke --json`).
pub(crate) fn summary_json(s: &Signed) -> serde_json::Value {
    serde_json::json!({
        "number": s.number,
        "this_update": rfc3339(s.this_update),
        "next_update": rfc3339(s.next_update),
        "entries": s.entries,
        "sha256": s.sha256,
        "der": s.der_path,
        "pem": s.pem_path,
    })
}

/// The human summary of a signed CRL (also used by `revoke`).
pub(crate) fn print_summary(out: &mut impl Write, s: &Signed) -> std::io::Result<()> {
    writeln!(
        out,
        "CRL number {} signed: thisUpdate {}, nextUpdate {}, {} revoked certificate(s)\n\
         written to {} and {}",
        s.number,
        rfc3339(s.this_update),
        rfc3339(s.next_update),
        s.entries,
        s.der_path.display(),
        s.pem_path.display()
    )
}

/// Parses `--days`: a whole number from 1 to [`MAX_DAYS`].
pub(crate) fn parse_days(s: &str) -> Result<u64, String> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of days from 1 to {MAX_DAYS}"))?;
    if !(1..=u64::from(MAX_DAYS)).contains(&n) {
        return Err(format!(
            "{n} days is out of range: a CRL is valid for 1 to {MAX_DAYS} days"
        ));
    }
    Ok(n)
}
