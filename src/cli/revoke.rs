//! `smsgate-ca revoke SERIAL|ID --reason R`: record a revocation in the ledger and sign a new
//! CRL at once. Works while the daemon runs: the ledger's own lock orders the writes, and the
//! CRL lock keeps CRL numbers unique.

use std::io::Write;

use crate::cli::operator::{existing_state, load_signing_ca};
use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};
use crate::ledger::Ledger;
use crate::lifecycle::crl::{self, CrlValidity};
use crate::lifecycle::revocation::{self, Target};
use crate::lifecycle::LifecycleError;

/// Flags of `revoke`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The certificate: its serial (32 hex digits, colons allowed) or the id of the request it
    /// was issued for (write `--` before an id that could be read as a flag)
    #[arg(value_name = "SERIAL|ID")]
    target: String,
    /// Why, as an RFC 5280 reason: unspecified, keyCompromise, cACompromise,
    /// affiliationChanged, superseded, cessationOfOperation, certificateHold,
    /// privilegeWithdrawn, aACompromise
    #[arg(long, value_name = "REASON")]
    reason: String,
    /// Validity of the CRL signed afterwards, in days [default: that of the published CRL, or
    /// 7]
    #[arg(long, value_name = "N", value_parser = super::crl::parse_days, allow_negative_numbers = true)]
    crl_days: Option<u64>,
    /// Only record the revocation (no CA key needed); the daemon or `smsgate-ca crl` signs the
    /// CRL later
    #[arg(long)]
    no_crl: bool,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

/// Runs `revoke`.
pub fn run(settings: &Settings, args: Args) -> anyhow::Result<ExitStatus> {
    let reason = revocation::parse_reason(&args.reason).map_err(usage)?;
    let target = Target::parse(&args.target).map_err(usage)?;
    let validity = args
        .crl_days
        .map(CrlValidity::days)
        .transpose()
        .map_err(usage)?;
    let state = existing_state(settings)?;
    // The key first: a wrong passphrase must not leave a revocation without its CRL.
    let ca = if args.no_crl {
        None
    } else {
        Some(load_signing_ca(settings, &state)?)
    };
    let mut ledger = Ledger::open(&state.ledger())?;
    let revoked = revocation::revoke(&mut ledger, &target, reason, None).map_err(lifecycle)?;
    let spool = crate::cli::operator::open_spool(settings)?;
    let signed = match &ca {
        Some(ca) => {
            let validity = validity
                .or_else(|| crl::read_published(&spool, &ca.cert).and_then(|p| p.validity()))
                .unwrap_or_default();
            match crl::issue(ca, &mut ledger, &spool, validity) {
                Ok(s) => Some(s),
                Err(e) => {
                    return Err(Fail::runtime(format!(
                        "certificate {} is revoked (recorded in the ledger) but the CRL could not \
                         be signed: {e}; run `smsgate-ca crl` once the problem is fixed",
                        revoked.certificate.serial
                    )))
                }
            }
        }
        None => None,
    };
    let c = &revoked.certificate;
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut v = serde_json::json!({
            "serial": c.serial,
            "request_id": c.request_id,
            "type": c.kind,
            "ip": c.ip,
            "revoked_at": crate::request::rfc3339(revoked.revoked_at),
            "revocation_reason": revoked.reason.as_str(),
        });
        if let Some(s) = &signed {
            v["crl"] = super::crl::summary_json(s);
        }
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "revoked certificate {} (request {}, {} {}) at {}: {}",
            c.serial,
            c.request_id,
            c.kind,
            c.ip,
            crate::request::rfc3339(revoked.revoked_at),
            revoked.reason
        )?;
        match &signed {
            Some(s) => super::crl::print_summary(&mut out, s)?,
            None => writeln!(
                out,
                "no CRL signed (--no-crl): run `smsgate-ca crl` or let the daemon re-sign it"
            )?,
        }
    }
    Ok(ExitStatus::Success)
}

fn usage(e: LifecycleError) -> anyhow::Error {
    Fail::usage(e.to_string())
}

/// Maps a lifecycle error to the exit status it deserves: 2 for the operator's input, else 1.
pub(crate) fn lifecycle(e: LifecycleError) -> anyhow::Error {
    if e.is_bad_input() {
        Fail::usage(e.to_string())
    } else {
        anyhow::Error::new(e)
    }
}
