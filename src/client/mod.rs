//! The drop-in client of the upstream `smsgate-ca` CLI: key and CSR generation, submission over
//! HTTP or through a spool, waiting for the decision, and writing the files.
//!
//! Order of work, so that bad input costs nothing and a failure leaves nothing behind: the CLI
//! checks the IP and the target files first ([`keys::parse_private_ip`],
//! [`output::check_target`]), then a key is made locally (it never leaves this process but
//! into `--keyout`), the request is submitted and waited for ([`obtain`]), the certificate
//! checked ([`verify::check_chain`]: a chain to a root we trust, valid now, not a CA,
//! serverAuth, exactly our IP, our key), and only then are its certificates, and nothing else,
//! written as a pair ([`output::write_all`]). Text a server sent is shown escaped
//! ([`escape`]).
//!
//! `client` never reads flags or the environment (that is `cli`'s job) and never holds a CA
//! key. Its [`http`] module is also `sync`'s transport.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

pub mod api;
pub mod error;
pub mod http;
pub mod keys;
pub mod output;
pub mod progress;
pub mod spool;
pub mod verify;

pub use error::ClientError;

use crate::request::{RequestType, Status};
use api::{Answered, CaApi, Submitted};
use progress::Reporter;

/// Where a request goes.
#[derive(Clone, Debug)]
pub enum Channel {
    /// The CA API at this base URL.
    Http(CaApi),
    /// A spool directory shared with the signer.
    Spool(PathBuf),
}

/// How long to wait and how often to look.
#[derive(Clone, Copy, Debug)]
pub struct WaitOptions {
    /// Give up after this long (`--timeout`).
    pub timeout: Duration,
    /// Look this often (`--poll-interval`).
    pub poll_interval: Duration,
}

/// Submits a CSR and waits for its decision: `Ok` with the approved state (certificate
/// included), [`ClientError::Denied`] on a denial, [`ClientError::Timeout`] when undecided.
pub fn obtain(
    channel: &Channel,
    csr_pem: &str,
    kind: RequestType,
    wait: WaitOptions,
    reporter: &mut dyn Reporter,
) -> Result<Answered, ClientError> {
    let result = match channel {
        Channel::Http(api) => obtain_http(api, csr_pem, kind, wait, reporter),
        Channel::Spool(dir) => obtain_spool(dir, csr_pem, kind, wait, reporter),
    };
    reporter.finish();
    result
}

fn obtain_http(
    api: &CaApi,
    csr_pem: &str,
    kind: RequestType,
    wait: WaitOptions,
    reporter: &mut dyn Reporter,
) -> Result<Answered, ClientError> {
    let clock = Clock::start(wait.timeout);
    let mut answered = loop {
        match api.submit(csr_pem, kind, clock.remaining_or_min())? {
            Submitted::Accepted(a) => break a,
            Submitted::Refused(body) => {
                return Err(ClientError::Denied {
                    id: "-".to_owned(),
                    reason: body.reason,
                    message: body.message,
                })
            }
            Submitted::RateLimited(after) => {
                let after = Duration::from_secs(after.unwrap_or(60).max(1));
                if after >= clock.remaining() {
                    return Err(ClientError::BadAnswer(format!(
                        "the CA at {} is rate-limiting requests from this address: try again in \
                         {} seconds",
                        api.base(),
                        after.as_secs()
                    )));
                }
                reporter.retrying(&format!(
                    "rate limited by the CA, waiting {} s",
                    after.as_secs()
                ));
                thread::sleep(after);
            }
        }
    };
    let id = answered.state.request_id.clone();
    if crate::request::RequestId::parse(&id).is_err() {
        return Err(ClientError::BadAnswer(format!(
            "the CA answered with an unusable request id {:?}",
            escape(&id)
        )));
    }
    reporter.submitted(&id, api.base());
    loop {
        match answered.state.status {
            Status::Approved => return Ok(answered),
            Status::Denied => return Err(denied(&answered)),
            Status::Pending => reporter.waiting("pending", &answered.state.message),
        }
        if clock.expired() {
            return Err(timeout(id, wait.timeout, false, None));
        }
        thread::sleep(wait.poll_interval.min(clock.remaining()));
        loop {
            match api.fetch(&id, clock.remaining_or_min()) {
                Ok(Some(a)) if a.state.request_id != id => {
                    return Err(ClientError::BadAnswer(format!(
                        "the CA at {} answered for request {:?} when asked about {id}; nothing \
                         was written",
                        api.base(),
                        escape(&a.state.request_id)
                    )))
                }
                Ok(Some(a)) => {
                    answered = a;
                    break;
                }
                Ok(None) => {
                    return Err(ClientError::BadAnswer(format!(
                        "the CA at {} no longer knows request {id} (404): it may have expired; \
                         run the command again",
                        api.base()
                    )))
                }
                Err(e) if e.is_transient() && !clock.expired() => {
                    reporter.retrying(&e.to_string());
                    thread::sleep(wait.poll_interval.min(clock.remaining()));
                }
                Err(e) if e.is_transient() => return Err(timeout(id, wait.timeout, false, None)),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn obtain_spool(
    dir: &std::path::Path,
    csr_pem: &str,
    kind: RequestType,
    wait: WaitOptions,
    reporter: &mut dyn Reporter,
) -> Result<Answered, ClientError> {
    let clock = Clock::start(wait.timeout);
    let id = spool::submit(dir, csr_pem, kind)?;
    reporter.submitted(id.as_str(), &format!("spool {}", dir.display()));
    let mut held = false;
    let mut unreadable = 0;
    loop {
        match spool::find(dir, &id) {
            Ok(spool::Found::Decided(a)) => match a.state.status {
                Status::Approved => return Ok(*a),
                Status::Denied => return Err(denied(&a)),
                Status::Pending => {
                    held = true;
                    reporter.waiting(
                        "held",
                        &format!(
                            "held for an operator's approval (`smsgate-ca approve {id}`): {}",
                            a.state.message
                        ),
                    );
                }
            },
            Ok(spool::Found::Rejected(reason)) => {
                return Err(ClientError::BadAnswer(format!(
                    "the signer rejected request {id} as unreadable: {reason}"
                )))
            }
            Ok(spool::Found::Queued(where_)) => {
                reporter.waiting("queued", &format!("waiting for the signer ({where_}/)"));
            }
            Ok(spool::Found::Missing) => {
                reporter.waiting("queued", "waiting for the signer");
            }
            // The daemon writes status records atomically; an unreadable one is only retried
            // once, in case it was copied in place by hand.
            Err(e @ ClientError::BadAnswer(_)) if unreadable == 0 => {
                unreadable += 1;
                reporter.retrying(&e.to_string());
            }
            Err(e) => return Err(e),
        }
        if clock.expired() {
            return Err(timeout(
                id.to_string(),
                wait.timeout,
                held,
                Some(dir.to_path_buf()),
            ));
        }
        thread::sleep(wait.poll_interval.min(clock.remaining()));
    }
}

fn denied(a: &Answered) -> ClientError {
    ClientError::Denied {
        id: a.state.request_id.clone(),
        reason: a.state.reason.clone(),
        message: a.state.message.clone(),
    }
}

fn timeout(id: String, waited: Duration, held: bool, spool: Option<PathBuf>) -> ClientError {
    ClientError::Timeout {
        id,
        waited,
        held,
        spool,
    }
}

/// Text a server (or a spool file) supplied, made safe for a terminal or a log line: control
/// characters (escape sequences, newlines that would forge log lines, carriage returns) and
/// bidirectional overrides are written as escapes (`\u{1b}`, `\n`).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Like [`escape`], but keeps newlines (for multi-line text such as PEM shown as is).
pub fn escape_lines(text: &str) -> String {
    text.split('\n').map(escape).collect::<Vec<_>>().join("\n")
}

/// The wait's deadline.
struct Clock {
    deadline: Instant,
}

impl Clock {
    fn start(timeout: Duration) -> Self {
        Self {
            deadline: Instant::now() + timeout,
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// What is left, but at least one second for a single HTTP exchange.
    fn remaining_or_min(&self) -> Duration {
        self.remaining().max(Duration::from_secs(1))
    }

    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }
}
