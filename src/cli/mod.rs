//! The command line: one clap derive tree, global flags resolved once into [`Settings`], and
//! one module per subcommand. Nothing below `cli` parses flags or reads the environment.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::error::ExitStatus;

pub mod settings;

mod approve;
mod check;
mod crl;
mod csr;
mod daemon;
mod init;
mod ledger;
mod list;
pub mod operator;
mod policy;
mod process;
mod request;
mod revoke;
mod revoke_request;
mod serve;
mod status;
mod sync;

pub use settings::Settings;

/// A private certificate authority for TLS certificates on private IP addresses.
///
/// The signer (`daemon`, `process`) works offline from a spool directory; `serve` is the
/// online API (wire-compatible with the SMSGate CA), `sync` bridges the two, and `webhooks` /
/// `private` are the drop-in client of the upstream `smsgate-ca` CLI.
#[derive(Debug, Parser)]
#[command(name = "smsgate-ca", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// Options every command understands where they apply.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Global flags; each may stand before or after the subcommand.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// CA state directory: keys, certificates, ledger [default: ./.smsgate-ca]
    #[arg(long, global = true, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Spool directory [default: ./spool]
    #[arg(long, global = true, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Policy file [default: ./policy/default.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// File holding the CA key's passphrase (a trailing newline is ignored); under systemd
    /// `$CREDENTIALS_DIRECTORY/ca-passphrase` is used when this is not given
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// File holding the user PIN of the PKCS#11 token that keeps the CA key (mode 0600; a
    /// trailing newline is ignored); under systemd `$CREDENTIALS_DIRECTORY/ca-pin` is used when
    /// this is not given
    #[arg(long, global = true, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    /// TOML file with the same keys as these flags (flags win)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format: text (default) or json
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<crate::logging::LogFormat>,
    /// More log output (-v info, -vv debug, -vvv trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors in the log
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Accept key and state files whose permissions are looser than 0600/0700
    #[arg(long, global = true)]
    pub allow_loose_permissions: bool,
    /// How long client commands wait for a certificate (e.g. 30s, 5m)
    #[arg(long, global = true, env = "ASG_CA_TIMEOUT", value_name = "DURATION",
          value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Request a certificate for a webhook receiver on a private IP
    Webhooks(request::Args),
    /// Request a certificate for a private server on a private IP
    Private(request::Args),
    /// Write a key and a CSR for an IP, without submitting it (the manual method)
    Csr(csr::Args),
    /// Show the state of a submitted request
    Status(status::Args),
    /// Exit 1 when a certificate expires within a window (for cron and timers)
    Check(check::Args),
    /// Create the CA: a root and an issuing intermediate with name constraints
    Init(init::Args),
    /// Watch the spool and sign what the policy approves (runs under systemd)
    Daemon(daemon::Args),
    /// Drain the spool once and exit (the USB-stick workflow)
    Process(process::Args),
    /// Approve a request held for an operator
    Approve(approve::ApproveArgs),
    /// Deny a request held for an operator
    Deny(approve::DenyArgs),
    /// Policy tools
    #[command(subcommand)]
    Policy(policy::Command),
    /// List issued certificates
    List(list::ListArgs),
    /// Show one certificate by request id or serial
    Show(list::ShowArgs),
    /// Revoke a certificate by serial or request id
    Revoke(revoke::Args),
    /// Ask the CA to revoke your certificate, proving possession of its key
    RevokeRequest(revoke_request::Args),
    /// Sign a new CRL
    Crl(crl::Args),
    /// Ledger tools
    #[command(subcommand)]
    Ledger(ledger::Command),
    /// Run the online API (holds no CA key)
    Serve(serve::Args),
    /// Bridge a spool and the online API
    Sync(sync::Args),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let settings = Settings::resolve(&cli.global)?;
    match cli.command {
        Command::Webhooks(args) => {
            request::run(&settings, args, crate::request::RequestType::Webhook)
        }
        Command::Private(args) => {
            request::run(&settings, args, crate::request::RequestType::PrivateServer)
        }
        Command::Csr(args) => csr::run(&settings, args),
        Command::Status(args) => status::run(&settings, args),
        Command::Check(args) => check::run(&settings, args),
        Command::Init(args) => init::run(&settings, args),
        Command::Daemon(args) => daemon::run(&settings, args),
        Command::Process(args) => process::run(&settings, args),
        Command::Approve(args) => approve::run_approve(&settings, args),
        Command::Deny(args) => approve::run_deny(&settings, args),
        Command::Policy(cmd) => policy::run(&settings, cmd),
        Command::List(args) => list::run_list(&settings, args),
        Command::Show(args) => list::run_show(&settings, args),
        Command::Revoke(args) => revoke::run(&settings, args),
        Command::RevokeRequest(args) => revoke_request::run(&settings, args),
        Command::Crl(args) => crl::run(&settings, args),
        Command::Ledger(cmd) => ledger::run(&settings, cmd),
        Command::Serve(args) => serve::run(&settings, args),
        Command::Sync(args) => sync::run(&settings, args),
    }
}

/// Parses `30s`, `5m`, `24h`, `30d` (and plain seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

const EXIT_CODES: &str = "Exit codes: 0 ok; 1 runtime failure; 2 bad usage or bad input; \
3 denied by policy.";
