//! sd_notify wrappers for the daemon: READY, RELOADING, STOPPING, WATCHDOG and STATUS.
//! Every call is a no-op when `NOTIFY_SOCKET` is unset, so nothing here needs systemd to run.

use std::time::Duration;

use sd_notify::NotifyState;

/// Startup is finished (lock held, key decrypted, policy loaded, first rescan done).
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// A reload begins (followed by [`ready`] when done).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown begins.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Keep-alive for `WatchdogSec=`.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// A one-line status for `systemctl status`.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// How often to ping the watchdog: half its interval, if systemd enabled one.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}
