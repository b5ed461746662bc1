//! `smsgate-ca revoke-request CERT --key KEY --reason R [--ca-url URL | --spool DIR]`: the
//! certificate's holder asks for its revocation, proving possession of its key (DESIGN §5,
//! §9). The proof is made here with [`crate::proof::sign`]; the key never leaves this process.
//!
//! Over HTTP the request goes to `POST /api/v1/revocations` and its state is polled at
//! `GET /api/v1/revocations/{id}`; with `--spool` it is written as `incoming/<id>.revoke.json`
//! and the answer read from `status/<id>.revoke.json`. Exit status: 0 revoked, 3 denied,
//! 1 not decided within `--timeout` (or held for an operator) or a transport failure, 2 bad
//! input (unreadable files, a key that is not the certificate's, a bad reason).

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::request::{fail, parse_interval, ApiArgs};
use crate::cli::Settings;
use crate::client::api::RevocationState;
use crate::client::{keys, spool, ClientError};
use crate::error::ExitStatus;
use crate::request::RequestId;

/// Flags of `revoke-request`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The proof is the base64 of `openssl dgst -sha256 -sign KEY` over \
'smsgate-ca revocation v1\\n<serial>\\n<reason>\\n'; the signer revokes at once when it \
verifies (policy `revocation = \"proof\"`), or holds the request for an operator.\n\n\
Exit status: 0 revoked; 1 not decided within --timeout (e.g. held for an operator) or the CA \
unreachable; 2 bad input; 3 denied."
)]
pub struct Args {
    /// The certificate to revoke (PEM or DER)
    #[arg(value_name = "CERT")]
    pub certificate: PathBuf,
    /// Its private key (PEM), to prove possession
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// RFC 5280 reason: keyCompromise, superseded, cessationOfOperation, affiliationChanged,
    /// unspecified, …
    #[arg(long, value_name = "REASON")]
    pub reason: String,
    /// How often to ask for the decision
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_interval)]
    pub poll_interval: Duration,
    /// Where the CA is.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Runs `revoke-request`.
pub fn run(settings: &Settings, args: Args) -> anyhow::Result<ExitStatus> {
    revoke_request(settings, &args).map_err(fail)
}

fn revoke_request(settings: &Settings, args: &Args) -> Result<ExitStatus, ClientError> {
    let bad = |e: String| ClientError::BadInput(e);
    let cert = keys::read_certificate(&args.certificate)?;
    let key = keys::read_key(&args.key).map_err(|_| {
        bad(format!(
            "{} is not an unencrypted PEM private key",
            args.key.display()
        ))
    })?;
    if !keys::key_matches(&cert, &key) {
        return Err(bad(format!(
            "{} is not the key of {}: the proof must be made with the certificate's own key",
            args.key.display(),
            args.certificate.display()
        )));
    }
    let reason =
        crate::lifecycle::revocation::parse_reason(&args.reason).map_err(|e| bad(e.to_string()))?;
    let serial = crate::proof::serial_of(&cert).ok_or_else(|| {
        bad(format!(
            "{} does not have a serial of this CA (16 bytes)",
            args.certificate.display()
        ))
    })?;
    let proof = crate::proof::sign(&key, &serial, reason)
        .map_err(|e| ClientError::Crypto(format!("cannot sign the proof: {e}")))?;
    let leaf_pem = String::from_utf8(
        cert.to_pem()
            .map_err(|e| ClientError::Crypto(e.to_string()))?,
    )
    .expect("PEM is ASCII");

    let deadline = Instant::now() + settings.timeout;
    let wait = |now: Instant| {
        args.poll_interval
            .min(deadline.saturating_duration_since(now))
    };
    let state = if settings.spool_given {
        spool::check_spool(&settings.spool)?;
        let id =
            spool::submit_revocation(&settings.spool, &serial.to_hex(), reason.as_str(), &proof)?;
        eprintln!(
            "revocation request {id} written to {}/incoming/",
            settings.spool.display()
        );
        loop {
            let state = spool::read_revocation_status(&settings.spool, &id)?;
            match state {
                Some(s) if s.status != "pending" => break s,
                other => {
                    if Instant::now() >= deadline {
                        return Err(undecided(&id, other.is_some(), settings.timeout));
                    }
                }
            }
            thread::sleep(wait(Instant::now()));
        }
    } else {
        let api = args.api.api(settings)?;
        let accepted =
            match api.submit_revocation(&leaf_pem, reason.as_str(), &proof, settings.timeout)? {
                Ok(state) => state,
                Err(body) => {
                    return Err(ClientError::Denied {
                        id: "-".to_owned(),
                        reason: body.reason,
                        message: body.message,
                    })
                }
            };
        let id = RequestId::parse(&accepted.request_id).map_err(|_| {
            ClientError::BadAnswer(format!(
                "the CA answered with an unusable request id {:?}",
                accepted.request_id
            ))
        })?;
        eprintln!("revocation request {id} submitted to {}", api.base());
        let mut state = accepted;
        loop {
            if state.request_id != id.as_str() {
                return Err(ClientError::BadAnswer(format!(
                    "the CA answered for request {:?} when asked about {id}",
                    state.request_id
                )));
            }
            if state.status != "pending" {
                break state;
            }
            if Instant::now() >= deadline {
                return Err(undecided(&id, false, settings.timeout));
            }
            thread::sleep(wait(Instant::now()));
            state = api
                .fetch_revocation(id.as_str(), settings.timeout)?
                .ok_or_else(|| {
                    ClientError::BadAnswer(format!(
                        "the CA no longer knows revocation request {id} (404)"
                    ))
                })?;
        }
    };
    report(&state, &serial.to_hex())
}

fn report(state: &RevocationState, serial: &str) -> Result<ExitStatus, ClientError> {
    match state.status.as_str() {
        "revoked" => {
            println!(
                "certificate {serial} revoked (request {}): {}",
                state.request_id, state.message
            );
            Ok(ExitStatus::Success)
        }
        "denied" => Err(ClientError::Denied {
            id: state.request_id.clone(),
            reason: state.reason.clone(),
            message: state.message.clone(),
        }),
        other => Err(ClientError::BadAnswer(format!(
            "revocation request {} has an unknown status {other:?}",
            state.request_id
        ))),
    }
}

fn undecided(id: &RequestId, held: bool, waited: Duration) -> ClientError {
    ClientError::BadAnswer(format!(
        "revocation request {id} was not decided within {}{}: look again later (the CRL will \
         list the certificate once it is revoked)",
        crate::duration::format(waited),
        if held {
            "; it is held for an operator's approval"
        } else {
            ""
        }
    ))
}
