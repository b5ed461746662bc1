//! `smsgate-ca process`: drain the spool once and exit (the USB-stick workflow).

use std::sync::atomic::Ordering;

use super::operator::{checkpoint, engine_on, lock_spool, publish_ca, upkeep};
use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};
use crate::spool::engine::drain;

/// Flags of `process`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Create a development CA (unencrypted key) in --state if there is none
    #[arg(long)]
    dev: bool,
    /// Signing threads [default: number of cores]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
}

/// Runs `process`.
pub fn run(settings: &Settings, args: Args) -> anyhow::Result<ExitStatus> {
    let (spool, _lock) = lock_spool(settings)?;
    let engine = engine_on(settings, spool, args.dev)?;
    let workers = args
        .workers
        .map(usize::from)
        .or(settings.file.workers)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    engine.recover().map_err(|e| Fail::runtime(e.0))?;
    drain(&engine, workers).map_err(|e| Fail::runtime(e.0))?;
    engine.expire_held();
    upkeep(&engine);
    publish_ca(&engine.spool, engine.ca())?;
    checkpoint(&engine)?;
    let c = &engine.counters;
    let (a, d, r, h, u) = (
        c.approved.load(Ordering::Relaxed),
        c.denied.load(Ordering::Relaxed),
        c.rejected.load(Ordering::Relaxed),
        c.held.load(Ordering::Relaxed),
        c.unchanged.load(Ordering::Relaxed),
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({"approved": a, "denied": d, "rejected": r, "held": h, "unchanged": u})
        );
    } else {
        println!("{a} approved, {d} denied, {r} rejected, {h} held");
    }
    Ok(ExitStatus::Success)
}
