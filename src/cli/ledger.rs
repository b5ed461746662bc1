//! `smsgate-ca ledger verify [--checkpoint FILE] [--no-signatures]`: check the hash chain, the
//! signed checkpoints and, given a published checkpoint, that the ledger still holds that
//! history. Exit 0 / 1; 1 too when the checkpoints' signatures cannot be checked (no CA
//! certificate) unless `--no-signatures` says the operator knows.

use std::path::PathBuf;

use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};
use crate::ledger::verify::verify;
use crate::signer::ca::{self, StatePaths};

/// Subcommands of `ledger`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify the ledger's hash chain and checkpoints; names the line where it breaks
    Verify(VerifyArgs),
}

/// Flags of `ledger verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// A published ledger-checkpoint.json the ledger must still contain
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// The ledger file [default: <state>/ledger.jsonl]
    #[arg(long, value_name = "FILE")]
    ledger: Option<PathBuf>,
    /// Check the hash chain (and --checkpoint's position) without the checkpoints'
    /// signatures, knowing that no CA certificate is at hand
    #[arg(long)]
    no_signatures: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// Runs a `ledger` subcommand.
pub fn run(settings: &Settings, cmd: Command) -> anyhow::Result<ExitStatus> {
    let Command::Verify(args) = cmd;
    let state = StatePaths::new(&settings.state);
    let path = args.ledger.clone().unwrap_or_else(|| state.ledger());
    if !path.exists() {
        return Err(Fail::runtime(format!("no ledger at {}", path.display())));
    }
    let checkpoint = match &args.checkpoint {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| Fail::usage(format!("cannot read {}: {e}", f.display())))?,
        ),
        None => None,
    };
    // Without the CA certificate the signed checkpoints prove nothing: say so and fail,
    // unless the operator asks for the chain alone (DESIGN §6).
    let ca_cert = if args.no_signatures {
        None
    } else {
        match ca::load_certs(&state) {
            Ok((c, _, _)) => Some(c),
            Err(e) => {
                return Err(Fail::runtime(format!(
                    "cannot check the ledger checkpoints' signatures: the CA certificate in {} \
                     cannot be loaded ({e}); give the CA's --state, or pass --no-signatures to \
                     check the hash chain only",
                    settings.state.display()
                )))
            }
        }
    };
    match verify(&path, ca_cert.as_deref(), checkpoint.as_deref()) {
        Ok(r) => {
            let signatures = ca_cert.is_some();
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "lines": r.lines, "checkpoints": r.checkpoints, "head": r.head, "signatures_checked": signatures})
                );
            } else if signatures {
                println!(
                    "ledger OK: {} lines, {} signed checkpoints, head {}",
                    r.lines, r.checkpoints, r.head
                );
            } else {
                println!(
                    "ledger hash chain OK: {} lines, {} checkpoints whose signatures were NOT \
                     checked (--no-signatures), head {}",
                    r.lines, r.checkpoints, r.head
                );
            }
            Ok(ExitStatus::Success)
        }
        Err(b) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "line": b.line, "message": b.message})
                );
            }
            Err(Fail::runtime(format!(
                "ledger {} is broken at line {}: {}",
                path.display(),
                b.line,
                b.message
            )))
        }
    }
}
