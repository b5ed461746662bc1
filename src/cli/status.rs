//! `smsgate-ca status ID`: a request's state, from the CA API (`--ca-url`) or, with `--spool`,
//! from the spool's status record and queues.
//!
//! Exit 0 when the request was found, whatever its state (the state is printed, and is the
//! `status` field with `--json`); exit 1 when no request has that id (a runtime "not found":
//! it may have expired); exit 2 for an id that cannot be one.

use crate::cli::request::{fail, ApiArgs};
use crate::cli::Settings;
use crate::client::api::Answered;
use crate::client::spool::{self, Found};
use crate::client::ClientError;
use crate::error::ExitStatus;
use crate::request::RequestId;

/// Flags of `status`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when the request was found (whatever its state); 1 when no request has that id (unknown or expired); 2 for something that cannot be an id."
)]
pub struct Args {
    /// The request id printed when the request was submitted
    #[arg(value_name = "ID")]
    pub id: String,
    /// Print the status as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Where the CA is.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Runs `status`.
pub fn run(settings: &Settings, args: Args) -> anyhow::Result<ExitStatus> {
    status(settings, &args).map_err(fail)
}

fn status(settings: &Settings, args: &Args) -> Result<ExitStatus, ClientError> {
    let id = RequestId::parse(args.id.trim_start_matches("--"))
        .map_err(|e| ClientError::BadInput(e.to_string()))?;
    if settings.spool_given {
        spool::check_spool(&settings.spool)?;
        let (state, message) = match spool::find(&settings.spool, &id)? {
            Found::Decided(answered) => return Ok(print(args, &answered)),
            Found::Queued(dir) => ("pending", format!("queued in {dir}/, not decided yet")),
            Found::Rejected(reason) => ("rejected", format!("rejected by the signer: {reason}")),
            Found::Missing => return Err(not_found(&id, &settings.spool.display().to_string())),
        };
        if args.json {
            let v = serde_json::json!({"request_id": id, "status": state, "message": message});
            println!(
                "{}",
                serde_json::to_string_pretty(&v).expect("JSON serialises")
            );
        } else {
            println!("{id}: {state}: {message}");
        }
        return Ok(ExitStatus::Success);
    }
    let api = args.api.api(settings)?;
    match api.fetch(id.as_str(), settings.timeout)? {
        Some(answered) => Ok(print(args, &answered)),
        None => Err(not_found(&id, api.base())),
    }
}

fn print(args: &Args, answered: &Answered) -> ExitStatus {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answered.raw).expect("JSON values serialise")
        );
        return ExitStatus::Success;
    }
    let s = &answered.state;
    let reason = s
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    println!(
        "{}: {}{reason}: {}",
        crate::client::escape(&s.request_id),
        s.status.as_str(),
        s.message
    );
    if let Some(cert) = &s.certificate {
        // Shown, not trusted: its certificates re-encoded, or the text with escapes.
        let shown = crate::client::verify::parse_blocks(cert)
            .ok()
            .and_then(|certs| {
                certs
                    .iter()
                    .map(|c| c.to_pem().ok().and_then(|p| String::from_utf8(p).ok()))
                    .collect::<Option<String>>()
            })
            .unwrap_or_else(|| crate::client::escape_lines(cert));
        print!("{shown}");
        if !shown.ends_with('\n') {
            println!();
        }
    }
    ExitStatus::Success
}

fn not_found(id: &RequestId, place: &str) -> ClientError {
    ClientError::BadAnswer(format!(
        "no request {id} at {place}: check the id (requests the API has not seen decided \
         expire after a while)"
    ))
}
