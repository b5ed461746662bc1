//! The signer daemon: inotify on `incoming/`, a worker per core pulling batches from one
//! queue, rescans (at start, on overflow or watcher error, on a timer), SIGHUP policy reload,
//! clean SIGTERM/SIGINT, and sd_notify (READY, WATCHDOG, STATUS, RELOADING, STOPPING).
//!
//! The same [`Engine`] code serves the watcher, the rescans and `process`. A name is queued at
//! most once; a request is claimed by exactly one worker (rename into `processing/`). Failures
//! (disk full, spool removed) are logged with the reason, the requests stay queued, and the
//! daemon retries with backoff until the spool works again.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::policy::Policy;
use crate::spool::engine::BATCH;
use crate::spool::layout::Sub;
use crate::spool::watch::{DirWatch, Signal};
use crate::spool::Engine;
use crate::systemd;

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Signing threads.
    pub workers: usize,
    /// Full rescan of `incoming/` this often.
    pub rescan_interval: Duration,
    /// The policy file (re-read on SIGHUP).
    pub policy_path: PathBuf,
}

/// Hooks the daemon calls at its ticks (CRL re-signing, metrics, checkpoint publishing).
pub trait Hooks: Send + Sync {
    /// After work was done and the queue is empty (e.g. write a checkpoint).
    fn idle_after_work(&self, engine: &Engine);
    /// On every rescan tick and after each burst (CRL upkeep, metrics, warnings).
    fn tick(&self, engine: &Engine, queue_len: usize);
}

enum Msg {
    Watch(Signal),
    BatchDone,
}

/// SIGTERM/SIGINT and SIGHUP flags, registered before anything slow happens so that a signal
/// during start-up is honoured rather than killing the process.
pub struct Signals {
    term: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

impl Signals {
    /// Registers the handlers.
    pub fn register() -> std::io::Result<Self> {
        let term = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(sig, term.clone())?;
        }
        signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;
        Ok(Self { term, hup })
    }
}

/// Runs the daemon until SIGTERM/SIGINT. The caller holds the spool lock and made the engine.
pub fn run(
    engine: Arc<Engine>,
    opts: &Options,
    hooks: &dyn Hooks,
    signals: &Signals,
) -> anyhow::Result<()> {
    let (term, hup) = (&signals.term, &signals.hup);

    let (tx, rx) = mpsc::channel::<Msg>();
    let queue = Arc::new(Queue::default());
    let mut watch = start_watch(&engine, &tx);
    let mut watched_generation = engine.spool.reopened();

    engine.recover().map_err(|e| anyhow::anyhow!(e.0))?;
    // Files present at start are taken once no process holds them open for writing.
    let mut rescan_soon = false;
    rescan(&engine, &queue, &mut rescan_soon);
    let busy = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..opts.workers.max(1))
        .map(|i| {
            let (engine, queue, tx, busy, failed) = (
                engine.clone(),
                queue.clone(),
                tx.clone(),
                busy.clone(),
                failed.clone(),
            );
            std::thread::Builder::new()
                .name(format!("signer-{i}"))
                .spawn(move || worker(&engine, &queue, &tx, &busy, &failed))
                .expect("a signer thread can be started")
        })
        .collect();
    systemd::ready();
    hooks.tick(&engine, queue.len());
    tracing::info!(spool = %engine.spool.root.display(), workers = opts.workers, "daemon ready");

    let watchdog = systemd::watchdog_interval();
    let tick = watchdog.map_or(Duration::from_secs(1), |w| w.min(Duration::from_secs(1)));
    let mut last_watchdog = Instant::now();
    let mut last_rescan = Instant::now();
    let mut last_status = String::new();
    let mut worked_since_idle = false;
    let mut backoff = Duration::from_secs(1);
    let mut next_retry = Instant::now();
    loop {
        match rx.recv_timeout(tick) {
            Ok(Msg::Watch(Signal::Ready(names))) => queue.push(names),
            Ok(Msg::Watch(Signal::Settle)) => rescan_soon = true,
            Ok(Msg::Watch(Signal::Rescan)) => {
                rescan(&engine, &queue, &mut rescan_soon);
            }
            Ok(Msg::BatchDone) => worked_since_idle = true,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if term.load(Ordering::Relaxed) {
            break;
        }
        if hup.swap(false, Ordering::Relaxed) {
            reload(&engine, &opts.policy_path);
        }
        if watchdog.is_some_and(|w| last_watchdog.elapsed() >= w) {
            systemd::watchdog();
            last_watchdog = Instant::now();
        }
        if failed.swap(false, Ordering::Relaxed) {
            next_retry = Instant::now() + backoff;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        let due = last_rescan.elapsed() >= opts.rescan_interval
            || (rescan_soon && last_rescan.elapsed() >= SETTLE);
        if due || (watch.is_none() && Instant::now() >= next_retry) {
            last_rescan = Instant::now();
            if watch.is_none() || engine.spool.reopened() != watched_generation {
                watched_generation = engine.spool.reopened();
                watch = start_watch(&engine, &tx);
            }
            rescan_soon = false;
            if engine.retry_stranded().is_ok() && rescan(&engine, &queue, &mut rescan_soon) {
                backoff = Duration::from_secs(1);
            } else {
                // The spool is gone or unreadable: watch it afresh once it is back.
                watch = None;
                next_retry = Instant::now() + backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            engine.expire_held();
            hooks.tick(&engine, queue.len());
        }
        if worked_since_idle && queue.len() == 0 && busy.load(Ordering::SeqCst) == 0 {
            worked_since_idle = false;
            hooks.idle_after_work(&engine);
            hooks.tick(&engine, 0);
        }
        let status = status_line(&engine, queue.len());
        if status != last_status {
            systemd::status(&status);
            last_status = status;
        }
    }
    systemd::stopping();
    tracing::info!("stopping: finishing the requests in hand");
    queue.close();
    for w in workers {
        let _ = w.join();
    }
    hooks.idle_after_work(&engine);
    drop(watch);
    tracing::info!("stopped");
    Ok(())
}

fn worker(
    engine: &Engine,
    queue: &Queue,
    tx: &Sender<Msg>,
    busy: &AtomicUsize,
    failed: &AtomicBool,
) {
    while let Some(batch) = queue.pop_batch(busy) {
        let result = engine.process_names(&batch);
        queue.done(&batch);
        busy.fetch_sub(1, Ordering::SeqCst);
        match result {
            Ok(o) if o.deferred > 0 => {
                // An id was in flight in another worker: look again shortly.
                std::thread::sleep(Duration::from_millis(20));
                let still: Vec<OsString> = batch
                    .into_iter()
                    .filter(|n| engine.spool.exists(Sub::Incoming, n))
                    .collect();
                queue.push(still);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e.0, "batch failed; the requests stay queued and will be retried");
                failed.store(true, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        let _ = tx.send(Msg::BatchDone);
    }
}

/// Watches `incoming/` once the spool is sound (a refused spool is logged by its check).
fn start_watch(engine: &Engine, tx: &Sender<Msg>) -> Option<DirWatch> {
    engine.spool.check().ok()?;
    let incoming = engine.spool.path(Sub::Incoming);
    match DirWatch::start(&incoming, tx.clone(), Msg::Watch) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(dir = %incoming.display(), error = %e, "cannot watch incoming/; relying on rescans and retrying");
            None
        }
    }
}

/// Queues every candidate in `incoming/`; false when the spool is refused or `incoming/`
/// cannot be read. Files still open for writing are left for later and `soon` is set.
fn rescan(engine: &Engine, queue: &Queue, soon: &mut bool) -> bool {
    if engine.spool.check().is_err() {
        return false;
    }
    match engine.scan_incoming() {
        Ok((names, open)) => {
            queue.push(names);
            *soon |= open > 0;
            true
        }
        Err(e) => {
            tracing::error!(dir = %engine.spool.path(Sub::Incoming).display(), error = %e, "cannot read incoming/; retrying");
            false
        }
    }
}

fn reload(engine: &Engine, path: &std::path::Path) {
    systemd::reloading();
    match Policy::load(path) {
        Ok(p) => {
            engine.set_policy(p);
            crate::cli::operator::warn_ranges_outside_constraints(&engine.policy(), engine.ca());
            tracing::info!(policy = %path.display(), "policy reloaded");
        }
        Err(e) => tracing::error!(error = %e, "policy reload failed; keeping the old policy"),
    }
    systemd::ready();
}

fn status_line(engine: &Engine, queue: usize) -> String {
    let c = &engine.counters;
    let key = engine
        .ca()
        .key
        .health()
        .map_or_else(String::new, |t| format!("; CA KEY UNAVAILABLE: {t}"));
    format!(
        "{} approved, {} denied, {} held, {} rejected; queue {}{key}",
        c.approved.load(Ordering::Relaxed),
        c.denied.load(Ordering::Relaxed),
        c.held.load(Ordering::Relaxed),
        c.rejected.load(Ordering::Relaxed),
        queue
    )
}

/// How soon a rescan looks again at files it left because they were still open for writing
/// (or that were created without a close event yet).
const SETTLE: Duration = Duration::from_secs(2);

/// The work queue: names in arrival order, each at most once (queued or in a batch).
#[derive(Default)]
struct Queue {
    inner: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    names: VecDeque<OsString>,
    known: HashSet<OsString>,
    closed: bool,
}

impl Queue {
    fn push(&self, names: Vec<OsString>) {
        if names.is_empty() {
            return;
        }
        let mut s = self.inner.lock().expect("queue lock is never poisoned");
        for n in names {
            if s.known.insert(n.clone()) {
                s.names.push_back(n);
            }
        }
        self.ready.notify_all();
    }

    fn pop_batch(&self, busy: &AtomicUsize) -> Option<Vec<OsString>> {
        let mut s = self.inner.lock().expect("queue lock is never poisoned");
        loop {
            if s.closed {
                return None;
            }
            if !s.names.is_empty() {
                let n = s.names.len().min(BATCH);
                busy.fetch_add(1, Ordering::SeqCst);
                return Some(s.names.drain(..n).collect());
            }
            s = self.ready.wait(s).expect("queue lock is never poisoned");
        }
    }

    fn done(&self, batch: &[OsString]) {
        let mut s = self.inner.lock().expect("queue lock is never poisoned");
        for n in batch {
            s.known.remove(n);
        }
    }

    fn len(&self) -> usize {
        self.inner
            .lock()
            .expect("queue lock is never poisoned")
            .names
            .len()
    }

    fn close(&self) {
        self.inner
            .lock()
            .expect("queue lock is never poisoned")
            .closed = true;
        self.ready.notify_all();
    }
}
