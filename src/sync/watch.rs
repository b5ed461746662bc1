//! `sync --watch`: rounds run continuously so that a request reaches the signer, and its
//! result the API, within a moment.
//!
//! Two loops share a [`Bridge`]:
//! - the **puller** thread long-polls `GET /sync/requests?wait=…` and delivers what comes;
//! - the **main** loop pushes results and published files whenever inotify reports a change
//!   in `status/` or `published/` (debounced), and rescans every `interval` anyway (events can
//!   be lost: a full inotify queue, a directory created after start, a network filesystem).
//!
//! Every failure (API down, garbage answers, a spool that is not writable, a full disk) is
//! logged and retried with exponential backoff and jitter; nothing is acknowledged or
//! recorded before it is durable, so nothing is lost. SIGTERM/SIGINT let the step in progress
//! finish (a delivery and its acknowledgement, a push), then the bridge exits 0. A long poll
//! in flight is abandoned: the API only forgets a request when it is acknowledged.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tracing::{debug, error, info, warn};

use super::backoff::Backoff;
use super::push::{self, Pusher};
use super::{Bridge, SyncError};

/// How the watching bridge runs.
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// Rescan the spool this often even without events.
    pub interval: Duration,
    /// How long one `GET /sync/requests` may wait for a new request (the API caps it at 60 s).
    pub long_poll: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            long_poll: Duration::from_secs(25),
        }
    }
}

enum Message {
    /// Something changed in `status/` or `published/`.
    Changed,
    /// SIGTERM or SIGINT.
    Shutdown,
}

/// Runs until SIGTERM or SIGINT.
pub fn run(bridge: Bridge, options: WatchOptions) -> Result<(), SyncError> {
    let (tx, rx) = mpsc::channel::<Message>();
    let stop = Arc::new(AtomicBool::new(false));
    // Held while a step that must not be cut short runs (deliver + ack, push).
    let busy = Arc::new(Mutex::new(()));

    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|source| SyncError::Spool {
        what: "cannot install signal handlers for",
        path: bridge.spool().to_path_buf(),
        source,
    })?;
    spawn_signal_thread(signals, tx.clone());

    let mut watcher = FsWatcher::new(tx.clone());
    watcher.refresh(bridge.spool());

    let bridge = Arc::new(bridge);
    spawn_puller(
        Arc::clone(&bridge),
        options,
        Arc::clone(&stop),
        Arc::clone(&busy),
    );

    info!(
        api = bridge.api().base(),
        spool = %bridge.spool().display(),
        "sync is watching"
    );
    let mut pusher = Pusher::default();
    let mut backoff = Backoff::standard();
    let mut next_round = Some(Instant::now());
    let mut next_rescan = Instant::now() + options.interval;
    loop {
        let now = Instant::now();
        let until = next_round.map_or(next_rescan, |r| r.min(next_rescan));
        match rx.recv_timeout(until.saturating_duration_since(now)) {
            Ok(Message::Shutdown) => break,
            Ok(Message::Changed) => {
                let soon = Instant::now() + DEBOUNCE;
                next_round = Some(next_round.map_or(soon, |r| r.min(soon)));
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if now >= next_rescan {
            next_rescan = now + options.interval;
            next_round = Some(now);
            watcher.refresh(bridge.spool());
        }
        if next_round.is_some_and(|r| now >= r) {
            let _guard = busy.lock().unwrap_or_else(|p| p.into_inner());
            match outbound(&bridge, &mut pusher) {
                Ok(()) => {
                    backoff.reset();
                    next_round = None;
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    error!("{e}; retrying in {} ms", wait.as_millis());
                    next_round = Some(Instant::now() + wait);
                }
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    // Let a delivery in progress finish; a long poll in flight is simply abandoned.
    let _guard = busy.lock().unwrap_or_else(|p| p.into_inner());
    info!("sync stopped");
    Ok(())
}

/// Pushes results and published files.
fn outbound(bridge: &Bridge, pusher: &mut Pusher) -> Result<(), SyncError> {
    let pushed = pusher.push(bridge)?;
    if pushed.pushed > 0 {
        debug!(pushed = pushed.pushed, "results pushed");
    }
    push::publish(bridge)?;
    Ok(())
}

fn spawn_signal_thread(mut signals: signal_hook::iterator::Signals, tx: Sender<Message>) {
    thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            info!(signal, "stopping after the current step");
            let _ = tx.send(Message::Shutdown);
        }
    });
}

fn spawn_puller(
    bridge: Arc<Bridge>,
    options: WatchOptions,
    stop: Arc<AtomicBool>,
    busy: Arc<Mutex<()>>,
) {
    thread::spawn(move || {
        let mut backoff = Backoff::standard();
        // For listings that hold nothing we can use: without it the same items come back at
        // once, forever (issue 16).
        let mut idle = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut full_warned = false;
        while !stop.load(Ordering::SeqCst) {
            // Backpressure: never more than --max-pull envelopes waiting for the signer.
            let waiting = bridge.waiting_in_incoming();
            if waiting >= bridge.max_pull() {
                if !full_warned {
                    warn!(
                        waiting,
                        max_pull = bridge.max_pull(),
                        "incoming/ is full; pulling again when the signer has taken some"
                    );
                    full_warned = true;
                }
                sleep_unless(&stop, Duration::from_secs(1));
                continue;
            }
            full_warned = false;
            let started = Instant::now();
            let result = bridge.fetch(Some(options.long_poll)).and_then(|batch| {
                let _guard = busy.lock().unwrap_or_else(|p| p.into_inner());
                let n = batch.len();
                let quota = bridge.max_pull().saturating_sub(waiting).max(1);
                bridge.deliver(batch, quota).map(|r| (n, r))
            });
            match result {
                Ok((n, report)) => {
                    if backoff.failures() > 0 {
                        info!("the API is reachable again");
                    }
                    backoff.reset();
                    if report.delivered > 0 {
                        info!(delivered = report.delivered, "requests delivered");
                    }
                    if n > 0 && report.delivered + report.present == 0 {
                        // Only items we cannot use: they will be listed again; back off.
                        let wait = idle.next_delay();
                        debug!(
                            unusable = report.unusable,
                            "nothing usable listed; waiting {} ms",
                            wait.as_millis()
                        );
                        sleep_unless(&stop, wait);
                    } else {
                        idle.reset();
                        // An API that does not long-poll answers at once: do not spin.
                        if n == 0 && started.elapsed() < Duration::from_secs(1) {
                            sleep_unless(&stop, Duration::from_secs(1));
                        }
                    }
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    error!("{e}; retrying in {} ms", wait.as_millis());
                    sleep_unless(&stop, wait);
                }
            }
        }
    });
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let end = Instant::now() + total;
    while !stop.load(Ordering::SeqCst) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        thread::sleep(left.min(Duration::from_millis(200)));
    }
}

/// inotify on `status/` and `published/`, added as they appear.
struct FsWatcher {
    watcher: Option<RecommendedWatcher>,
    watched: Vec<std::path::PathBuf>,
}

impl FsWatcher {
    fn new(tx: Sender<Message>) -> Self {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                // Temp files are renamed into place; their own events are noise.
                Ok(ev) => ev.paths.iter().any(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| !n.starts_with('.') && !n.ends_with(".tmp"))
                }),
                // A lost event (queue overflow): rescan.
                Err(_) => true,
            };
            if relevant {
                let _ = tx.send(Message::Changed);
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                warn!("inotify is unavailable ({e}); relying on the periodic rescan");
                None
            }
        };
        Self {
            watcher,
            watched: Vec::new(),
        }
    }

    fn refresh(&mut self, spool: &Path) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        for dir in ["status", "published"] {
            let path = spool.join(dir);
            if self.watched.contains(&path) || !path.is_dir() {
                continue;
            }
            match watcher.watch(&path, RecursiveMode::NonRecursive) {
                Ok(()) => self.watched.push(path),
                Err(e) => warn!(dir = %path.display(), "cannot watch ({e}); relying on the rescan"),
            }
        }
    }
}

/// Wait after an event before pushing, so that a burst of files goes out in one request.
const DEBOUNCE: Duration = Duration::from_millis(50);
