//! Expiry warnings shared by `list`, the daemon's log and the metrics: the CRL's nextUpdate
//! drawing near or passed (the classic outage of an offline CA: clients that check the CRL
//! reject every certificate once it lapses), and the issuing CA within
//! [`CA_EXPIRY_WARNING_DAYS`] days of its notAfter (new certificates are capped at it, so
//! their lifetimes shrink until the CA is replaced).
//!
//! [`check`] is pure; [`current`] gathers the facts for a running engine.

use chrono::Utc;

use super::crl::read_published;
use super::inventory::time_text;
use crate::signer::ca::not_after;
use crate::spool::Engine;

/// When a CRL was signed and when it runs out, Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrlTimes {
    /// thisUpdate.
    pub this_update: i64,
    /// nextUpdate (a CRL without one never lapses).
    pub next_update: Option<i64>,
}

/// The warnings at `now` (Unix seconds) for an issuing CA valid until `ca_not_after`, the last
/// CRL (`None`: none yet) and the number of revoked certificates.
pub fn check(ca_not_after: i64, crl: Option<CrlTimes>, revoked: usize, now: i64) -> Vec<String> {
    let mut out = Vec::new();
    let left = ca_not_after - now;
    if left <= 0 {
        out.push(format!(
            "the issuing CA certificate expired at {}: nothing can be issued; create a new CA",
            time_text(ca_not_after)
        ));
    } else if left < CA_EXPIRY_WARNING_DAYS * 86_400 {
        out.push(format!(
            "the issuing CA certificate expires at {} (in {} days): new certificates end then at \
             the latest; prepare a new CA and distribute its root",
            time_text(ca_not_after),
            left / 86_400
        ));
    }
    match crl {
        None if revoked > 0 => out.push(format!(
            "{revoked} certificate(s) are revoked but no CRL has been signed: run `smsgate-ca crl`"
        )),
        None => {}
        Some(CrlTimes {
            next_update: None, ..
        }) => {}
        Some(CrlTimes {
            this_update,
            next_update: Some(next),
        }) => {
            if next <= now {
                out.push(format!(
                    "the CRL lapsed at {}: clients that check it reject every certificate; run \
                     `smsgate-ca crl` (with the CA key) and publish it",
                    time_text(next)
                ));
            } else if next - now < (next - this_update) / 3 {
                out.push(format!(
                    "the CRL's nextUpdate is {} (in {}): sign a new one with `smsgate-ca crl` \
                     (or keep the daemon running) before then",
                    time_text(next),
                    human_span(next - now)
                ));
            }
        }
    }
    out
}

/// The daemon's hook: the warnings to log now, from the published CRL and the issuing CA.
/// Log each at `warn`; calling it at start and then every hour or so is plenty.
pub fn current(engine: &Engine) -> Vec<String> {
    let published = read_published(&engine.spool, &engine.ca().cert);
    let revoked = engine.with_ledger(|l| l.index().revoked.len());
    check(
        not_after(&engine.ca().cert).timestamp(),
        published.map(|p| CrlTimes {
            this_update: p.this_update,
            next_update: p.next_update,
        }),
        revoked,
        Utc::now().timestamp(),
    )
}

fn human_span(secs: i64) -> String {
    if secs >= 2 * 86_400 {
        format!("{} days", secs / 86_400)
    } else if secs >= 3600 {
        format!("{} hours", secs / 3600)
    } else {
        format!("{} minutes", (secs / 60).max(1))
    }
}

/// Days before the issuing CA's notAfter from which `list`, the daemon and the metrics warn.
pub const CA_EXPIRY_WARNING_DAYS: i64 = 90;

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn ca_expiry_is_warned_within_ninety_days() {
        assert!(check(100 * DAY, None, 0, 0).is_empty());
        let w = check(89 * DAY, None, 0, 0);
        assert!(w.len() == 1 && w[0].contains("in 89 days"), "{w:?}");
        assert!(check(0, None, 0, 1)[0].contains("expired"));
    }

    #[test]
    fn crl_lapse_is_warned_before_and_after() {
        let ca = 1000 * DAY;
        let crl = |next| {
            Some(CrlTimes {
                this_update: 0,
                next_update: Some(next),
            })
        };
        assert!(check(ca, crl(3 * DAY), 1, DAY).is_empty());
        assert!(check(ca, crl(3 * DAY), 1, 2 * DAY + 1)[0].contains("nextUpdate"));
        assert!(check(ca, crl(3 * DAY), 1, 3 * DAY)[0].contains("lapsed"));
        assert!(check(ca, None, 2, 0)[0].contains("no CRL"));
        assert!(check(ca, None, 0, 0).is_empty());
    }
}
