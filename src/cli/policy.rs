//! `smsgate-ca policy check FILE.csr [--type T]`: a dry run of the policy on one CSR, printing
//! the decision and each rule's verdict. Exit 0 approve (or hold), 3 deny, 2 unreadable input.

use std::path::PathBuf;

use super::operator::load_policy;
use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};
use crate::policy::{self, Decision, Outcome};
use crate::signer::ca::{self, StatePaths};

/// Subcommands of `policy`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Decide about a CSR without signing: prints the decision and each rule's verdict
    Check(CheckArgs),
}

/// Flags of `policy check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The CSR (PEM or DER)
    file: PathBuf,
    /// Request type: webhook or private_server
    #[arg(long = "type", default_value = "webhook", value_name = "T")]
    kind: String,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// Runs a `policy` subcommand.
pub fn run(settings: &Settings, cmd: Command) -> anyhow::Result<ExitStatus> {
    let Command::Check(args) = cmd;
    let policy = load_policy(settings)?;
    let bytes = read_limited(&args.file)?;
    // The CA's name constraints count when a CA exists; no key is read.
    let ctx = policy::Context {
        name_constraints: ca::load_certs(&StatePaths::new(&settings.state))
            .ok()
            .and_then(|(cert, _, _)| ca::permitted_ip_subtrees(&cert)),
    };
    let e = policy::evaluate(&bytes, &args.kind, &policy, &ctx);
    let (word, status, reason, message) = match &e.decision {
        Decision::Approve(p) => (
            "approve",
            ExitStatus::Success,
            None,
            format!("would issue for {} (profile {})", p.ip, p.profile),
        ),
        Decision::Hold(p) => (
            "hold",
            ExitStatus::Success,
            None,
            format!(
                "would be held for an operator (profile {}, IP {})",
                p.profile, p.ip
            ),
        ),
        Decision::Deny(d) => (
            "deny",
            ExitStatus::Denied,
            Some(d.reason.as_str()),
            d.message.clone(),
        ),
    };
    if args.json {
        let rules: Vec<_> = e
            .verdicts
            .iter()
            .map(|v| match &v.outcome {
                Outcome::Pass(t) => serde_json::json!({"rule": v.rule, "verdict": "pass", "detail": t}),
                Outcome::Fail(r, t) => serde_json::json!({"rule": v.rule, "verdict": "fail", "reason": r.as_str(), "detail": t}),
                Outcome::Skip => serde_json::json!({"rule": v.rule, "verdict": "skip"}),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "decision": word, "reason": reason, "message": message, "rules": rules
            }))?
        );
    } else {
        println!(
            "decision: {word}{}",
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        );
        println!("  {message}");
        for v in &e.verdicts {
            match &v.outcome {
                Outcome::Pass(t) => println!("  pass  {:<12} {t}", v.rule),
                Outcome::Fail(r, t) => println!("  FAIL  {:<12} {r}: {t}", v.rule),
                Outcome::Skip => println!("  skip  {}", v.rule),
            }
        }
    }
    Ok(status)
}

fn read_limited(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .map_err(|e| Fail::usage(format!("cannot read {}: {e}", path.display())))?;
    let mut buf = Vec::new();
    // More than any policy accepts, so that `too_large` is still reported.
    f.take(1 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| Fail::usage(format!("cannot read {}: {e}", path.display())))?;
    Ok(buf)
}
