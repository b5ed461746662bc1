//! `smsgate-ca sync`: bridge a spool and the online API (DESIGN §5, §6).
//!
//! Without `--watch`: one round, a one-line summary on stdout, exit 0, or exit 1 when a step
//! failed (the API out of reach, the spool not writable). With `--watch`: run until SIGTERM or
//! SIGINT, retrying every failure with backoff, and exit 0. Bad configuration (no `--api`, no
//! token, a token file readable by others, a missing spool) exits 2.

use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::cli::Settings;
use crate::client::http::{build_agent, check_plain_http, Transport, Trust};
use crate::error::{ExitStatus, Fail};
use crate::sync::api::SyncApi;
use crate::sync::push::Pusher;
use crate::sync::watch::{self, WatchOptions};
use crate::sync::Bridge;

/// Flags of `sync`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "What was delivered, pushed and uploaded is remembered under \
<spool>/.sync/, so that a restart neither delivers a request twice nor forgets a result.\n\n\
Exit status: 0 round done (or --watch stopped by SIGTERM/SIGINT); 1 a step failed (API out of \
reach, garbage answers, spool not writable); 2 bad configuration."
)]
pub struct Args {
    /// The API base URL, ending in /api/v1 [default: config `api`]
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// File holding the bearer token that `serve` reads from --sync-token-file (mode 0600; a
    /// trailing newline is ignored) [default: config `token-file`]
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Keep running: long-poll the API and watch the spool with inotify
    #[arg(long)]
    pub watch: bool,
    /// With --watch: rescan the spool this often even without inotify events [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    pub interval: Option<Duration>,
    /// Trust only this CA certificate (PEM) for an https:// API, instead of the system's
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Write at most N new requests into incoming/ a round; with --watch, pull only while
    /// fewer than N wait there [default: 100]
    #[arg(long, value_name = "N")]
    pub max_pull: Option<usize>,
    /// Allow a plain http:// API on a host other than this machine (the token then travels
    /// in clear)
    #[arg(long)]
    pub insecure_http: bool,
}

/// Runs `sync`.
pub fn run(settings: &Settings, args: Args) -> anyhow::Result<ExitStatus> {
    let url = args
        .api
        .clone()
        .or_else(|| settings.file.api.clone())
        .ok_or_else(|| Fail::usage("sync needs the API's base URL: pass --api URL (…/api/v1)"))?;
    let token_file = args
        .token_file
        .clone()
        .or_else(|| settings.file.token_file.clone())
        .ok_or_else(|| Fail::usage("sync needs the API token: pass --token-file FILE"))?;
    let token = read_token(&token_file, settings.allow_loose_permissions)?;
    let interval = match (args.interval, &settings.file.interval) {
        (Some(d), _) => d,
        (None, Some(text)) => {
            crate::duration::parse(text).map_err(|e| Fail::usage(format!("interval: {e}")))?
        }
        (None, None) => Duration::from_secs(30),
    };
    if interval.is_zero() {
        return Err(Fail::usage("--interval must be at least 1s"));
    }
    check_plain_http(&url, args.insecure_http).map_err(|e| Fail::usage(e.to_string()))?;
    let max_pull = args
        .max_pull
        .or(settings.file.max_pull)
        .unwrap_or(crate::sync::DEFAULT_MAX_PULL);
    if max_pull == 0 {
        return Err(Fail::usage("--max-pull must be at least 1"));
    }
    let ca_file = args
        .ca_file
        .clone()
        .or_else(|| settings.file.ca_file.clone());
    let trust = Trust::from_option(ca_file.as_deref()).map_err(|e| Fail::usage(e.to_string()))?;
    let transport = Transport::new(&url, build_agent(&trust, settings.timeout))
        .map_err(|e| Fail::usage(e.to_string()))?
        .with_token(token);
    let api = SyncApi::new(transport, settings.timeout);
    if !settings.spool.is_dir() {
        return Err(Fail::usage(format!(
            "the spool directory {} does not exist: check --spool",
            settings.spool.display()
        )));
    }
    let bridge = Bridge::open(api, &settings.spool)
        .map_err(|e| Fail::runtime(e.to_string()))?
        .with_max_pull(max_pull);

    if args.watch {
        let options = WatchOptions {
            interval,
            ..WatchOptions::default()
        };
        watch::run(bridge, options).map_err(|e| Fail::runtime(e.to_string()))?;
        return Ok(ExitStatus::Success);
    }
    let round = bridge.round(&mut Pusher::default());
    println!("{round}");
    match round.errors.as_slice() {
        [] => Ok(ExitStatus::Success),
        [only] => Err(Fail::runtime(only.to_string())),
        [first, rest @ ..] => {
            for e in rest {
                tracing::error!("{e}");
            }
            Err(Fail::runtime(first.to_string()))
        }
    }
}

/// Reads the token: a private file, one line, a trailing newline ignored.
fn read_token(path: &Path, allow_loose: bool) -> anyhow::Result<Zeroizing<String>> {
    let text = crate::fsx::read_secret_line(path, allow_loose, 4096).map_err(|e| {
        Fail::usage(if crate::fsx::is_loose_mode(&e) {
            e.to_string()
        } else {
            format!("cannot read the token file {}: {e}", path.display())
        })
    })?;
    let token = std::str::from_utf8(&text).unwrap_or_default();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Fail::usage(format!(
            "the token file {} must hold one line of printable characters",
            path.display()
        )));
    }
    Ok(Zeroizing::new(token.to_owned()))
}
