//! `smsgate-ca webhooks|private IP`: the drop-in client of the upstream CLI (DESIGN §6).
//!
//! Flags are resolved here (flag > env > config > default); the work is `client`'s. Bad input
//! (not an IP, a public IP, an existing file, a missing directory) exits 2 before a key is
//! made; a denial exits 3; an unreachable CA, a TLS failure, a garbled answer or a timeout
//! exit 1. Nothing is written unless a certificate for our key and IP came back.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openssl::pkey::{PKey, Private};

use crate::cli::Settings;
use crate::client::api::{Answered, CaApi};
use crate::client::http::{build_agent, check_plain_http, Transport, Trust};
use crate::client::output::{check_distinct, check_target, write_all, OutFile};
use crate::client::verify::{self, Anchors, Expect};
use crate::client::{keys, progress, spool, Channel, ClientError, WaitOptions};
use crate::error::{ExitStatus, Fail};
use crate::fsx::{MODE_PUBLIC, MODE_SECRET};
use crate::key_type::KeyType;
use crate::request::RequestType;

/// The public SMSGate CA, the upstream CLI's default.
pub const DEFAULT_CA_URL: &str = "https://ca.sms-gate.app/api/v1";

/// Where the CA API is (shared by `webhooks`, `private` and `status`).
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The CA API base URL, ending in /api/v1 [default: config `ca-url`, then
    /// https://ca.sms-gate.app/api/v1]
    #[arg(long, env = "ASG_CA_URL", value_name = "URL")]
    pub ca_url: Option<String>,
    /// The CA's root certificate (PEM): issued certificates must chain to it, and an https://
    /// CA URL must present a certificate from it. Without it the chain the CA publishes
    /// (/api/v1/ca.crt, or published/ca.crt of --spool) is trusted on first use, with a warning
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Allow a plain http:// CA URL on a host other than this machine (everything then
    /// travels in clear and can be forged on the way)
    #[arg(long)]
    pub insecure_http: bool,
}

impl ApiArgs {
    /// The API client these flags name.
    pub fn api(&self, settings: &Settings) -> Result<CaApi, ClientError> {
        let url = self
            .ca_url
            .clone()
            .or_else(|| settings.file.ca_url.clone())
            .unwrap_or_else(|| DEFAULT_CA_URL.to_owned());
        check_plain_http(&url, self.insecure_http)
            .map_err(|e| ClientError::BadInput(e.to_string()))?;
        let trust = Trust::from_option(self.ca_file(settings).as_deref())?;
        let transport = Transport::new(&url, build_agent(&trust, settings.timeout))?;
        Ok(CaApi::new(transport))
    }

    /// `--ca-file`, from the flag or the config file.
    pub fn ca_file(&self, settings: &Settings) -> Option<PathBuf> {
        self.ca_file
            .clone()
            .or_else(|| settings.file.ca_file.clone())
    }

    /// What an issued chain must lead to: `--ca-file`, else the chain the CA publishes over the
    /// channel in use, trusted on first use with a warning.
    pub fn anchors(&self, settings: &Settings, channel: &Channel) -> Result<Anchors, ClientError> {
        if let Some(path) = self.ca_file(settings) {
            let pem = std::fs::read(&path).map_err(|e| {
                ClientError::BadInput(format!("cannot read --ca-file {}: {e}", path.display()))
            })?;
            let certs = openssl::x509::X509::stack_from_pem(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    ClientError::BadInput(format!(
                        "--ca-file {} holds no PEM certificate",
                        path.display()
                    ))
                })?;
            return Ok(Anchors::pinned(certs));
        }
        let (pem, place) = match channel {
            Channel::Http(api) => (
                api.ca_chain(settings.timeout).map_err(|e| {
                    ClientError::BadAnswer(format!(
                        "cannot fetch the CA's chain to check the certificate ({e}): pass \
                         --ca-file ROOT"
                    ))
                })?,
                format!("{}/ca.crt", api.base()),
            ),
            Channel::Spool(dir) => (
                spool::published_chain(dir)?,
                format!("{}/published/ca.crt", dir.display()),
            ),
        };
        let certs = verify::parse_blocks(&pem).map_err(|e| {
            ClientError::BadAnswer(format!("the CA chain at {place} is unusable: {e}"))
        })?;
        let anchors = Anchors::from_bundle(&certs).ok_or_else(|| {
            ClientError::BadAnswer(format!(
                "the CA chain at {place} holds no root certificate: pass --ca-file ROOT"
            ))
        })?;
        tracing::warn!(
            "trusting the CA chain at {place} on first use (root SHA-256 {}): pin it with \
             --ca-file ROOT",
            fingerprint(&anchors.roots[0])
        );
        Ok(anchors)
    }
}

fn fingerprint(cert: &openssl::x509::X509) -> String {
    cert.digest(openssl::hash::MessageDigest::sha256())
        .map(|d| {
            d.iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":")
        })
        .unwrap_or_default()
}

/// Flags of `webhooks|private`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "With --spool DIR (flag or config), the request is written into DIR/incoming/ \
and the answer read from DIR/status/ instead of going over HTTP.\n\n\
Exit status: 0 certificate and key written; 1 CA unreachable, TLS failure, unusable answer or \
--timeout reached; 2 bad input (not a private IP, a file in the way, a missing directory); \
3 denied."
)]
pub struct Args {
    /// The private IP address the certificate is for (IPv4 or IPv6)
    #[arg(value_name = "IP", required_unless_present = "renew")]
    pub ip: Option<String>,
    /// Where to write the certificate (leaf then intermediates, PEM)
    #[arg(long, value_name = "FILE", default_value = "server.crt")]
    pub out: PathBuf,
    /// Where to write the private key (PEM, mode 0600)
    #[arg(long, value_name = "FILE", default_value = "server.key")]
    pub keyout: PathBuf,
    /// Type of the key to generate
    #[arg(long, value_name = "TYPE", default_value = "ec-p256")]
    pub key_type: KeyType,
    /// Replace existing --out / --keyout files
    #[arg(long)]
    pub force: bool,
    /// Renew CERT: request a certificate for the IP in its SAN, reusing the key at --keyout
    /// (CERT itself, when it is --out, is replaced without --force)
    #[arg(long, value_name = "CERT")]
    pub renew: Option<PathBuf>,
    /// With --renew: make a new key instead of reusing the one at --keyout
    #[arg(long, requires = "renew")]
    pub new_key: bool,
    /// Print the final status record as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// How often to ask for the decision (e.g. 500ms, 2s)
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_interval)]
    pub poll_interval: Duration,
    /// Where the CA is.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Runs `webhooks|private`.
pub fn run(settings: &Settings, args: Args, kind: RequestType) -> anyhow::Result<ExitStatus> {
    request(settings, &args, kind).map_err(fail)
}

/// A client error as the CLI's error, with its exit status.
pub fn fail(e: ClientError) -> anyhow::Error {
    Fail {
        status: e.exit_status(),
        message: e.to_string(),
    }
    .into()
}

/// Parses `--poll-interval`: `500ms` or any duration `--timeout` takes.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = match s.trim().strip_suffix("ms") {
        Some(ms) => ms
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("{s:?} is not a duration: write e.g. 500ms, 2s or 1m"))?,
        None => crate::duration::parse(s).map_err(|e| e.to_string())?,
    };
    if d < Duration::from_millis(50) {
        return Err("the poll interval must be at least 50ms".to_owned());
    }
    Ok(d)
}

/// What `--renew` found.
struct Renewal {
    ip: IpAddr,
    key: Option<PKey<Private>>,
    replace_out: bool,
    replace_key: bool,
}

fn request(settings: &Settings, args: &Args, kind: RequestType) -> Result<ExitStatus, ClientError> {
    // 1. Everything that can be refused is refused before any work.
    let renewal = match &args.renew {
        Some(cert) => Some(renewal(cert, args)?),
        None => None,
    };
    let ip = match (&args.ip, &renewal) {
        (Some(text), Some(r)) => {
            let ip = keys::parse_private_ip(text)?;
            if ip != r.ip {
                return Err(ClientError::BadInput(format!(
                    "the certificate to renew is for {}, not {ip}: drop the IP or --renew",
                    r.ip
                )));
            }
            ip
        }
        (Some(text), None) => keys::parse_private_ip(text)?,
        (None, Some(r)) => keys::parse_private_ip(&r.ip.to_string())?,
        (None, None) => {
            return Err(ClientError::BadInput(
                "give the IP address to request a certificate for".to_owned(),
            ))
        }
    };
    let reuse_key = renewal.as_ref().and_then(|r| r.key.clone());
    let write_key = reuse_key.is_none();
    let replace_out = args.force || renewal.as_ref().is_some_and(|r| r.replace_out);
    let replace_key = args.force || renewal.as_ref().is_some_and(|r| r.replace_key);
    check_target(&args.out, "--out", replace_out)?;
    if write_key {
        check_target(&args.keyout, "--keyout", replace_key)?;
        check_distinct(&args.out, &args.keyout)?;
    }
    let channel = if settings.spool_given {
        spool::check_spool(&settings.spool)?;
        Channel::Spool(settings.spool.clone())
    } else {
        Channel::Http(args.api.api(settings)?)
    };

    // 2. The key is made here and never leaves this process but into --keyout.
    let key = match reuse_key {
        Some(key) => key,
        None => keys::generate_key(args.key_type)?,
    };
    let csr = keys::csr_pem(&keys::build_csr(&key, ip)?)?;

    // 3. Submit and wait.
    let wait = WaitOptions {
        timeout: settings.timeout,
        poll_interval: args.poll_interval,
    };
    let mut reporter = progress::for_stderr();
    let answered = crate::client::obtain(&channel, &csr, kind, wait, reporter.as_mut())?;

    // 4. Check what came back (DESIGN §5: the chain to a trusted root, valid now, not a CA,
    //    serverAuth, exactly our IP, our key), then write only its certificates, as a pair.
    let sent = answered.state.certificate.clone().ok_or_else(|| {
        ClientError::BadAnswer("the CA approved the request but sent no certificate".to_owned())
    })?;
    let anchors = args.api.anchors(settings, &channel)?;
    let public_key_der = key
        .public_key_to_der()
        .map_err(|e| ClientError::Crypto(format!("cannot encode our public key: {e}")))?;
    let checked = verify::check_chain(
        &sent,
        &anchors,
        Expect {
            public_key_der: &public_key_der,
            ip,
        },
    )
    .map_err(|e| {
        ClientError::BadAnswer(format!(
            "refusing the certificate the CA sent: {e}; nothing was written"
        ))
    })?;
    let leaf = checked.leaf;
    let chain = checked.chain_pem;
    let key_pem = keys::key_pem(&key)?;
    let mut files = vec![OutFile {
        path: &args.out,
        bytes: chain.as_bytes(),
        mode: MODE_PUBLIC,
    }];
    let mut replace = vec![replace_out];
    if write_key {
        files.push(OutFile {
            path: &args.keyout,
            bytes: &key_pem,
            mode: MODE_SECRET,
        });
        replace.push(replace_key);
    }
    write_all(&files, &replace)?;
    report(args, &answered, &leaf, ip, write_key);
    Ok(ExitStatus::Success)
}

fn renewal(cert_path: &Path, args: &Args) -> Result<Renewal, ClientError> {
    let cert = keys::read_certificate(cert_path)?;
    let ip = keys::certificate_ip(&cert).ok_or_else(|| {
        ClientError::BadInput(format!(
            "{} does not name exactly one IP address: renew it by giving the IP instead",
            cert_path.display()
        ))
    })?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    };
    let replace_out = same(cert_path, &args.out);
    if args.new_key {
        // Replacing the old key is what --new-key asks for, but only when it is the key of the
        // certificate being renewed; any other file there needs --force.
        let replace_key = keys::read_key(&args.keyout)
            .map(|k| keys::key_matches(&cert, &k))
            .unwrap_or(false);
        return Ok(Renewal {
            ip,
            key: None,
            replace_out,
            replace_key,
        });
    }
    let key = keys::read_key(&args.keyout)?;
    if !keys::key_matches(&cert, &key) {
        return Err(ClientError::BadInput(format!(
            "{} is not the key of {}: point --keyout at its key, or pass --new-key",
            args.keyout.display(),
            cert_path.display()
        )));
    }
    Ok(Renewal {
        ip,
        key: Some(key),
        replace_out,
        replace_key: false,
    })
}

fn report(
    args: &Args,
    answered: &Answered,
    leaf: &openssl::x509::X509,
    ip: IpAddr,
    wrote_key: bool,
) {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answered.raw).expect("JSON values serialise")
        );
        return;
    }
    let key_note = if wrote_key {
        format!(", key in {}", args.keyout.display())
    } else {
        format!(", key {} reused", args.keyout.display())
    };
    println!(
        "certificate for {ip} written to {}{key_note} (request {}, valid until {})",
        args.out.display(),
        answered.state.request_id,
        keys::not_after_text(leaf)
    );
}
