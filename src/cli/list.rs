//! `smsgate-ca list` and `smsgate-ca show ID|SERIAL`: the inventory of issued certificates,
//! read from the ledger through its index (`<state>/inventory.idx`), with no CA key. Both warn
//! on stderr when the CRL's nextUpdate is near or past or the issuing CA is within 90 days of
//! expiry.

use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::time::Duration;

use chrono::Utc;
use ipnet::IpNet;

use crate::cli::{parse_duration, Settings};
use crate::error::{ExitStatus, Fail};
use crate::ledger::Event;
use crate::lifecycle::inventory::{self, time_text, Certificate, Filter, IndexUse, Inventory};
use crate::lifecycle::revocation::Target;
use crate::lifecycle::warnings::{self, CrlTimes};
use crate::request::RequestType;
use crate::signer::ca::{self, StatePaths};

/// Flags of `list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only valid certificates that expire within this time (e.g. 30d, 12h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    expiring: Option<Duration>,
    /// Only revoked certificates
    #[arg(long)]
    revoked: bool,
    /// Only certificates of this request type (webhook, private_server)
    #[arg(long = "type", value_name = "T")]
    kind: Option<String>,
    /// Only certificates for addresses in this network (CIDR, or one address)
    #[arg(long, value_name = "CIDR", value_parser = parse_net)]
    ip: Option<IpNet>,
    /// Print a JSON array (DESIGN §7) instead of a table
    #[arg(long)]
    json: bool,
    /// Read the whole ledger, neither using nor updating the index file
    #[arg(long)]
    no_index: bool,
}

/// Flags of `show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The certificate: its serial (32 hex digits, colons allowed) or its request id (write
    /// `--` before an id that could be read as a flag)
    #[arg(value_name = "ID|SERIAL")]
    target: String,
    /// Print JSON (the `list --json` fields plus fingerprint_sha256 and certificate)
    #[arg(long)]
    json: bool,
}

/// Runs `list`.
pub fn run_list(settings: &Settings, args: ListArgs) -> anyhow::Result<ExitStatus> {
    let kind = args.kind.as_deref().map(parse_type).transpose()?;
    let expiring_within = args
        .expiring
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let use_index = if args.no_index {
        IndexUse::Ignore
    } else {
        IndexUse::ReadWrite
    };
    let (state, inv) = open(settings, use_index)?;
    let now = Utc::now().timestamp();
    warn(&state, &inv, now);
    let filter = Filter {
        expiring_within,
        revoked: args.revoked,
        kind,
        ip: args.ip,
    };
    let selected: Vec<&Certificate> = inv
        .certificates
        .iter()
        .filter(|c| filter.matches(c, now))
        .collect();
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let written = if args.json {
        json_array(&mut out, &selected, now)
    } else {
        table(&mut out, &selected, now)
    };
    finish(written.and_then(|()| out.flush()))
}

/// Runs `show`.
pub fn run_show(settings: &Settings, args: ShowArgs) -> anyhow::Result<ExitStatus> {
    let target = Target::parse(&args.target).map_err(|e| Fail::usage(e.to_string()))?;
    let (state, inv) = open(settings, IndexUse::ReadWrite)?;
    let now = Utc::now().timestamp();
    warn(&state, &inv, now);
    let found = match &target {
        Target::Serial(s) => inv.by_serial(s.as_bytes()),
        Target::Request(id) => inv.by_request(id.as_str()),
        Target::Either(s, id) => inv
            .by_serial(s.as_bytes())
            .or_else(|| inv.by_request(id.as_str())),
    };
    let Some(c) = found else {
        return Err(Fail::usage(match &target {
            Target::Serial(s) => format!("no certificate with serial {s} in the ledger"),
            Target::Request(id) => format!("no certificate was issued for request {id}"),
            Target::Either(s, _) => {
                format!("no certificate with serial {s}, nor one issued for a request of that id")
            }
        }));
    };
    let entry = inventory::read_entry(&state.ledger(), c.offset)?;
    let Event::Issued {
        fingerprint_sha256,
        certificate,
        ..
    } = entry.event
    else {
        return Err(Fail::runtime(format!(
            "the inventory index points at a ledger line that is not an issued certificate; \
             delete {} and try again",
            state.dir.join(crate::lifecycle::index::FILE_NAME).display()
        )));
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let shown = Shown {
            listing: c.listing(now),
            fingerprint_sha256: &fingerprint_sha256,
            certificate: &certificate,
        };
        let text = serde_json::to_string_pretty(&shown).expect("listings always serialise");
        writeln!(out, "{text}")
    } else {
        let state_text = match c.revocation {
            Some(r) => format!("revoked at {} ({})", time_text(r.revoked_at), r.reason),
            None => c.state(now).as_str().to_owned(),
        };
        write!(
            out,
            "request id:   {}\nserial:       {}\ntype:         {}\nip:           {}\n\
             not before:   {}\nnot after:    {}\nstate:        {state_text}\n\
             sha-256:      {fingerprint_sha256}\n{certificate}",
            c.request_id,
            c.serial_hex(),
            c.kind,
            c.ip,
            time_text(c.not_before),
            time_text(c.not_after),
        )
    };
    finish(written)
}

/// `show --json`: the `list --json` fields, then the fingerprint and the PEM.
#[derive(serde::Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    listing: inventory::Listing<'a>,
    fingerprint_sha256: &'a str,
    certificate: &'a str,
}

/// A reader that closed the pipe early (`| head`) is not an error.
fn finish(written: std::io::Result<()>) -> anyhow::Result<ExitStatus> {
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitStatus::Success),
        other => other.map(|()| ExitStatus::Success).map_err(Into::into),
    }
}

fn json_array(out: &mut impl Write, certs: &[&Certificate], now: i64) -> std::io::Result<()> {
    out.write_all(b"[")?;
    for (i, c) in certs.iter().enumerate() {
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut *out, &c.listing(now))?;
    }
    out.write_all(if certs.is_empty() { b"]\n" } else { b"\n]\n" })
}

/// Loads the inventory of the state directory (no key needed).
fn open(settings: &Settings, use_index: IndexUse) -> anyhow::Result<(StatePaths, Inventory)> {
    let state = StatePaths::new(&settings.state);
    if !state.exists() && !state.ledger().exists() {
        return Err(Fail::runtime(format!(
            "no CA in {}: create one with `smsgate-ca init --state {}` (or name the state \
             directory with --state)",
            settings.state.display(),
            settings.state.display()
        )));
    }
    let loaded = inventory::load(&state.dir, &state.ledger(), use_index)?;
    tracing::debug!(source = ?loaded.source, certificates = loaded.inventory.certificates.len(), "inventory loaded");
    Ok((state, loaded.inventory))
}

/// Prints the CRL and CA expiry warnings on stderr.
fn warn(state: &StatePaths, inv: &Inventory, now: i64) {
    let Ok((cert, _, _)) = ca::load_certs(state) else {
        return;
    };
    let crl = inv.last_crl.as_ref().map(|c| CrlTimes {
        this_update: c.this_update,
        next_update: Some(c.next_update),
    });
    let revoked = inv.revoked().count();
    for w in warnings::check(ca::not_after(&cert).timestamp(), crl, revoked, now) {
        eprintln!("warning: {w}");
    }
}

fn table(out: &mut impl Write, certs: &[&Certificate], now: i64) -> std::io::Result<()> {
    let ip_width = certs
        .iter()
        .map(|c| c.ip.to_string().len())
        .max()
        .unwrap_or(0)
        .max(2);
    let kind_width = certs.iter().map(|c| c.kind.len()).max().unwrap_or(0).max(4);
    writeln!(
        out,
        "{:<8} {:<20} {:<kind_width$} {:<ip_width$} {:<32} REQUEST_ID",
        "STATE", "NOT_AFTER", "TYPE", "IP", "SERIAL"
    )?;
    let (mut valid, mut revoked, mut expired) = (0usize, 0usize, 0usize);
    for c in certs {
        let state = c.state(now);
        match state {
            inventory::State::Valid => valid += 1,
            inventory::State::Revoked => revoked += 1,
            inventory::State::Expired => expired += 1,
        }
        writeln!(
            out,
            "{:<8} {:<20} {:<kind_width$} {:<ip_width$} {} {}",
            state.as_str(),
            time_text(c.not_after),
            c.kind,
            c.ip,
            c.serial_hex(),
            c.request_id
        )?;
    }
    writeln!(
        out,
        "{} certificate(s): {valid} valid, {revoked} revoked, {expired} expired",
        certs.len()
    )
}

fn parse_type(s: &str) -> anyhow::Result<String> {
    RequestType::parse(s)
        .map(|t| t.as_str().to_owned())
        .ok_or_else(|| {
            Fail::usage(format!(
                "--type {s:?} is not a request type: use webhook or private_server"
            ))
        })
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!("{s:?} is neither a network (CIDR, e.g. 192.168.1.0/24) nor an IP address")
    })
}
