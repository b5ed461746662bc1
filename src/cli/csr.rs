//! `smsgate-ca csr IP`: write a key and a CSR for an IP without submitting anything (the
//! manual method: the CSR can be POSTed with curl or dropped into a spool's `incoming/`).
//!
//! The same refusals as `webhooks` come first (exit 2, nothing made), and the pair is written
//! like the client's certificate and key: both or neither, the key 0600.

use std::path::PathBuf;

use crate::cli::request::fail;
use crate::cli::Settings;
use crate::client::output::{check_distinct, check_target, write_all, OutFile};
use crate::client::{keys, ClientError};
use crate::error::ExitStatus;
use crate::fsx::{MODE_PUBLIC, MODE_SECRET};
use crate::key_type::KeyType;

/// Flags of `csr`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The private IP address the CSR asks for (IPv4 or IPv6)
    #[arg(value_name = "IP")]
    pub ip: String,
    /// Where to write the CSR (PEM)
    #[arg(long, value_name = "FILE", default_value = "server.csr")]
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
}

/// Runs `csr`.
pub fn run(_settings: &Settings, args: Args) -> anyhow::Result<ExitStatus> {
    write_csr(&args).map_err(fail)
}

fn write_csr(args: &Args) -> Result<ExitStatus, ClientError> {
    let ip = keys::parse_private_ip(&args.ip)?;
    check_target(&args.out, "--out", args.force)?;
    check_target(&args.keyout, "--keyout", args.force)?;
    check_distinct(&args.out, &args.keyout)?;
    let key = keys::generate_key(args.key_type)?;
    let csr = keys::csr_pem(&keys::build_csr(&key, ip)?)?;
    let key_pem = keys::key_pem(&key)?;
    write_all(
        &[
            OutFile {
                path: &args.out,
                bytes: csr.as_bytes(),
                mode: MODE_PUBLIC,
            },
            OutFile {
                path: &args.keyout,
                bytes: &key_pem,
                mode: MODE_SECRET,
            },
        ],
        &[args.force, args.force],
    )?;
    println!(
        "CSR for {ip} written to {}, {} key in {}",
        args.out.display(),
        args.key_type,
        args.keyout.display()
    );
    Ok(ExitStatus::Success)
}
