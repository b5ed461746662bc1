//! The offline metrics textfile (`daemon --metrics-file PATH`): the signer has no network, so
//! it writes Prometheus text for node_exporter's textfile collector, atomically (a temp file in
//! the same directory, whose dot name and `.tmp` suffix the collector ignores, then a rename).
//!
//! Series: requests decided since the daemon started, by decision; files waiting in
//! `incoming/` and `held/`; the time of the last decision (the modification time of `status/`,
//! which changes exactly when a status record is renamed into it, by the daemon or by an
//! operator's `approve`/`deny`); certificates issued and revoked (ledger); seconds until the
//! published CRL's nextUpdate; seconds until the issuing CA's notAfter and whether that is
//! within the warning window; how many times a spool directory was found swapped while
//! running (DESIGN §9); and when the file was written, so that a stale file shows.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use super::crl::read_published;
use super::warnings::CA_EXPIRY_WARNING_DAYS;
use crate::fsx;
use crate::signer::ca::not_after;
use crate::spool::layout::{classify, Name, Sub};
use crate::spool::Engine;

/// The daemon's hook for `--metrics-file PATH`: renders the metrics and replaces `path`
/// atomically. Call it after each batch and on the daemon's timer.
pub fn write_textfile(path: &Path, engine: &Engine) -> std::io::Result<()> {
    fsx::write_atomic(path, render(engine, SystemTime::now()).as_bytes(), 0o644)
}

/// The metrics text at `now`.
pub fn render(engine: &Engine, now: SystemTime) -> String {
    let now = unix(now);
    let mut out = String::new();
    let c = &engine.counters;
    header(
        &mut out,
        "smsgate_ca_requests_total",
        "Requests decided since the daemon started, by decision.",
        "counter",
    );
    for (decision, n) in [
        ("approved", &c.approved),
        ("denied", &c.denied),
        ("held", &c.held),
        ("rejected", &c.rejected),
        ("unchanged", &c.unchanged),
    ] {
        let _ = writeln!(
            out,
            "smsgate_ca_requests_total{{decision=\"{decision}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    gauge(
        &mut out,
        "smsgate_ca_queue_length",
        "Files waiting in incoming/.",
        count_requests(engine, Sub::Incoming) as f64,
    );
    gauge(
        &mut out,
        "smsgate_ca_held_requests",
        "Requests held in held/ for an operator.",
        count_requests(engine, Sub::Held) as f64,
    );
    header(
        &mut out,
        "smsgate_ca_spool_refusals_total",
        "Times a spool directory was found replaced (e.g. by a symbolic link) while running; \
         the spool is refused until it is put back.",
        "counter",
    );
    let _ = writeln!(
        out,
        "smsgate_ca_spool_refusals_total {}",
        engine.spool.refusals()
    );
    if let Ok(st) = engine.spool.root_dir().stat(OsStr::new(Sub::Status.name())) {
        gauge(
            &mut out,
            "smsgate_ca_last_decision_timestamp_seconds",
            "When the last status record was written (Unix time).",
            st.mtime as f64,
        );
    }
    let (issued, revoked) =
        engine.with_ledger(|l| (l.index().issued.len(), l.index().revoked.len()));
    gauge(
        &mut out,
        "smsgate_ca_certificates_issued",
        "Certificates the ledger records as issued.",
        issued as f64,
    );
    gauge(
        &mut out,
        "smsgate_ca_certificates_revoked",
        "Certificates the ledger records as revoked.",
        revoked as f64,
    );
    if let Some(next) = read_published(&engine.spool, &engine.ca().cert).and_then(|p| p.next_update)
    {
        gauge(
            &mut out,
            "smsgate_ca_crl_next_update_seconds",
            "Seconds until the published CRL's nextUpdate (negative once lapsed).",
            (next - now) as f64,
        );
        // The bare name issue 5 gives, for dashboards written against it.
        gauge(
            &mut out,
            "crl_next_update_seconds",
            "Same as smsgate_ca_crl_next_update_seconds.",
            (next - now) as f64,
        );
    }
    let ca_left = not_after(&engine.ca().cert).timestamp() - now;
    gauge(
        &mut out,
        "smsgate_ca_ca_expiry_seconds",
        "Seconds until the issuing CA certificate's notAfter.",
        ca_left as f64,
    );
    gauge(
        &mut out,
        "smsgate_ca_ca_expiring",
        "1 when the issuing CA expires within 90 days.",
        f64::from(u8::from(ca_left < CA_EXPIRY_WARNING_DAYS * 86_400)),
    );
    gauge(
        &mut out,
        "smsgate_ca_textfile_timestamp_seconds",
        "When this file was written (Unix time).",
        now as f64,
    );
    out
}

fn count_requests(engine: &Engine, sub: Sub) -> usize {
    engine.spool.entries(sub).map_or(0, |entries| {
        entries
            .iter()
            .filter(|(name, _)| !matches!(classify(name), Name::InProgress))
            .count()
    })
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
