//! `smsgate-ca daemon`: watch the spool and sign what the policy approves, until SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::operator::{checkpoint, engine_on, lock_spool, publish_ca, upkeep};
use crate::cli::Settings;
use crate::daemon::{self, Hooks, Options};
use crate::error::ExitStatus;
use crate::spool::Engine;

/// Flags of `daemon`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Create a development CA (unencrypted key) in --state if there is none, and serve the
    /// repository's spool/ with policy/default.toml
    #[arg(long)]
    dev: bool,
    /// Signing threads [default: number of cores]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
    /// Full rescan of incoming/ this often (events can be lost; network filesystems send none)
    #[arg(long, default_value = "30s", value_parser = super::parse_duration, value_name = "DURATION")]
    rescan_interval: Duration,
    /// Write Prometheus metrics to this file (node_exporter textfile collector)
    #[arg(long, value_name = "PATH")]
    metrics_file: Option<PathBuf>,
}

/// Runs `daemon`.
pub fn run(settings: &Settings, args: Args) -> anyhow::Result<ExitStatus> {
    let signals = daemon::Signals::register()?;
    let (spool, _lock) = lock_spool(settings)?;
    let engine = Arc::new(engine_on(settings, spool, args.dev)?);
    publish_ca(&engine.spool, engine.ca())?;
    let workers = args
        .workers
        .map(usize::from)
        .or(settings.file.workers)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = Options {
        workers,
        rescan_interval: args.rescan_interval.max(Duration::from_secs(1)),
        policy_path: settings.policy.clone(),
    };
    let hooks = DaemonHooks {
        last_warning: std::sync::Mutex::new(None),
        metrics_file: args
            .metrics_file
            .or_else(|| settings.file.metrics_file.clone()),
    };
    daemon::run(engine, &opts, &hooks, &signals)?;
    Ok(ExitStatus::Success)
}

struct DaemonHooks {
    metrics_file: Option<PathBuf>,
    last_warning: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Hooks for DaemonHooks {
    fn idle_after_work(&self, engine: &Engine) {
        upkeep(engine);
        if let Err(e) = checkpoint(engine) {
            tracing::error!(error = %format!("{e:#}"), "cannot write the ledger checkpoint");
        }
    }

    fn tick(&self, engine: &Engine, _queue_len: usize) {
        upkeep(engine);
        if let Some(path) = &self.metrics_file {
            if let Err(e) = crate::lifecycle::metrics::write_textfile(path, engine) {
                tracing::error!(path = %path.display(), error = %e, "cannot write the metrics file");
            }
        }
        // CRL and CA expiry warnings: at start, then hourly.
        let mut last = self.last_warning.lock().expect("never poisoned");
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            for w in crate::lifecycle::warnings::current(engine) {
                tracing::warn!("{w}");
            }
            *last = Some(std::time::Instant::now());
        }
    }
}
