//! `smsgate-ca approve ID` and `smsgate-ca deny ID --reason TEXT`: an operator's decision on a
//! certificate request held under a manual-approval profile; with `--revocation`, on a held
//! revocation request instead (DESIGN §9: a command names what it acts on, so an id held as
//! both is never ambiguous). They work while the daemon runs: the request is claimed from
//! `held/` by rename, read and checked again (policy, ledger), and the ledger's own lock orders
//! the writes.

use super::operator::{checkpoint, open_engine};
use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};
use crate::request::{RequestId, Status};
use crate::spool::examine::Operator;

/// Flags of `approve`.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The held request's id
    #[arg(value_name = "ID", allow_hyphen_values = false)]
    id: String,
    /// Act on the held revocation request ID (held/ID.revoke.json): revoke its certificate
    #[arg(long)]
    revocation: bool,
    /// Use the development CA of --dev runs
    #[arg(long)]
    dev: bool,
}

/// Flags of `deny`.
#[derive(Debug, clap::Args)]
pub struct DenyArgs {
    /// The held request's id
    #[arg(value_name = "ID")]
    id: String,
    /// Why, in words the requester will read
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// Act on the held revocation request ID (held/ID.revoke.json) instead
    #[arg(long)]
    revocation: bool,
    /// Use the development CA of --dev runs
    #[arg(long)]
    dev: bool,
}

/// Runs `approve`.
pub fn run_approve(settings: &Settings, args: ApproveArgs) -> anyhow::Result<ExitStatus> {
    decide(
        settings,
        &args.id,
        Operator::Approve,
        args.dev,
        args.revocation,
    )
}

/// Runs `deny`.
pub fn run_deny(settings: &Settings, args: DenyArgs) -> anyhow::Result<ExitStatus> {
    let text = args.reason.trim();
    if text.is_empty() || text.len() > 1000 {
        return Err(Fail::usage(
            "--reason must be 1 to 1000 characters of plain text",
        ));
    }
    decide(
        settings,
        &args.id,
        Operator::Deny(text.to_owned()),
        args.dev,
        args.revocation,
    )
}

fn decide(
    settings: &Settings,
    id: &str,
    op: Operator,
    dev: bool,
    revocation: bool,
) -> anyhow::Result<ExitStatus> {
    use crate::lifecycle::revocation as rv;
    let id = RequestId::parse(id).map_err(|e| Fail::usage(e.to_string()))?;
    let engine = open_engine(settings, dev)?;
    // Requests held too long are denied `expired` first (DESIGN §3).
    engine.expire_held();
    rv::expire_held(&engine);
    if revocation {
        return decide_revocation(&engine, &id, op);
    }
    let Some(p) = engine
        .decide_held(&id, op.clone())
        .map_err(|e| Fail::runtime(e.0))?
    else {
        let state = crate::spool::examine::read_status(&engine.spool, &id)
            .map(|r| format!("it is {}", r.status.as_str()))
            .unwrap_or_else(|| "there is no such request".into());
        let hint = if rv::is_held(&engine.spool, &id) {
            format!(
                "; a revocation request {id} is held: use `{} --revocation {id}`",
                if op == Operator::Approve {
                    "approve"
                } else {
                    "deny"
                }
            )
        } else {
            String::new()
        };
        return Err(Fail::usage(format!(
            "certificate request {id} is not held for approval: {state}{hint}"
        )));
    };
    checkpoint(&engine)?;
    if p.decision == crate::spool::publish::Decision::Rejected {
        // The ledger already decided this id (DESIGN §9): the held file was never signed.
        let state = crate::spool::examine::read_status(&engine.spool, &id)
            .map(|r| format!("it is {}", r.status.as_str()))
            .unwrap_or_else(|| "the ledger holds its decision".into());
        return Err(Fail::usage(format!(
            "request {id} was already decided ({state}) and is never signed again: the file in \
             held/ went to rejected/ as a duplicate_request"
        )));
    }
    let record = p
        .record
        .ok_or_else(|| Fail::runtime("no status record was written"))?;
    match record.status {
        Status::Approved => {
            println!("{id}: approved — {}", record.message);
            Ok(ExitStatus::Success)
        }
        Status::Denied if op == Operator::Approve => Err(Fail::denied(format!(
            "{id}: denied by the current policy ({}): {}",
            record.reason.unwrap_or_default(),
            record.message
        ))),
        Status::Denied => {
            println!("{id}: denied — {}", record.message);
            Ok(ExitStatus::Success)
        }
        Status::Pending => Err(Fail::runtime(format!(
            "{id}: still held: {}",
            record.message
        ))),
    }
}

/// `approve`/`deny` of a held revocation request (`held/<id>.revoke.json`).
fn decide_revocation(
    engine: &crate::spool::Engine,
    id: &RequestId,
    op: Operator,
) -> anyhow::Result<ExitStatus> {
    use crate::lifecycle::revocation::{self, Decision, Verdict};
    let verdict = match &op {
        Operator::Approve => Verdict::Approve,
        Operator::Deny(text) => Verdict::Deny(text.clone()),
        Operator::Expire => Verdict::Expire,
    };
    let handled = revocation::decide_held(engine, id, verdict)
        .map_err(|e| Fail::runtime(e.to_string()))?
        .ok_or_else(|| {
            let state = revocation::read_record(&engine.spool, id)
                .map(|r| {
                    format!(
                        "it is {}",
                        serde_json::to_value(r.status).unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| "there is no such revocation request".into());
            Fail::usage(format!("revocation request {id} is not held: {state}"))
        })?;
    checkpoint(engine)?;
    match (handled.decision, &op) {
        (Decision::Revoked, _) => {
            println!("{id}: revoked");
            Ok(ExitStatus::Success)
        }
        (Decision::Denied, Operator::Approve) => Err(Fail::denied(format!(
            "{id}: the revocation cannot be carried out: {}",
            handled.record.map(|r| r.message).unwrap_or_default()
        ))),
        (Decision::Denied, _) => {
            println!("{id}: revocation request denied");
            Ok(ExitStatus::Success)
        }
        (other, _) => Err(Fail::runtime(format!("{id}: unexpected outcome {other:?}"))),
    }
}
