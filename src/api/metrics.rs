//! `GET /metrics`: Prometheus text exposition, written by hand (a handful of series does not
//! need a metrics registry).
//!
//! Counters live here ([`Metrics`]); gauges are computed at scrape time from the store and
//! the server state. Route labels are the matched route templates (`/api/v1/csr/{id}`),
//! never raw paths, so that the series count stays bounded.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::{now_ms, AppState};

/// Request counters by route and status, and refusals of pushed data by what and why.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<HashMap<String, HashMap<u16, u64>>>,
    refused: Mutex<HashMap<(&'static str, &'static str), u64>>,
}

impl Metrics {
    /// Counts one refused upload from the sync side (`what`: `result`, `ca.crt`, `ca.crl`,
    /// `ledger-checkpoint.json`; `reason`: a stable code).
    pub fn refuse(&self, what: &'static str, reason: &'static str) {
        let mut map = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((what, reason)).or_default() += 1;
    }

    fn refused(&self) -> Vec<(&'static str, &'static str, u64)> {
        let map = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = map.iter().map(|((w, r), n)| (*w, *r, *n)).collect();
        out.sort();
        out
    }

    /// Counts one answered request.
    pub fn record(&self, route: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(by_status) = map.get_mut(route) {
            *by_status.entry(status).or_default() += 1;
        } else {
            map.insert(route.to_owned(), HashMap::from([(status, 1)]));
        }
    }

    fn snapshot(&self) -> Vec<(String, u16, u64)> {
        let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = map
            .iter()
            .flat_map(|(r, s)| s.iter().map(move |(code, n)| (r.clone(), *code, *n)))
            .collect();
        out.sort();
        out
    }
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(app): State<AppState>) -> Response {
    let now = now_ms();
    let mut out = String::new();
    out.push_str(
        "# HELP smsgate_ca_http_requests_total HTTP requests answered, by route and status.\n\
         # TYPE smsgate_ca_http_requests_total counter\n",
    );
    for (route, status, n) in app.metrics.snapshot() {
        let _ = writeln!(
            out,
            "smsgate_ca_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
            escape(&route)
        );
    }
    out.push_str(
        "# HELP smsgate_ca_refused_total Data pushed with the sync token and refused, by what and why.\n\
         # TYPE smsgate_ca_refused_total counter\n",
    );
    for (what, reason, n) in app.metrics.refused() {
        let _ = writeln!(
            out,
            "smsgate_ca_refused_total{{what=\"{what}\",reason=\"{reason}\"}} {n}"
        );
    }
    match app.store.stats(now).await {
        Ok(stats) => {
            gauge(
                &mut out,
                "smsgate_ca_pending_requests",
                "Requests waiting for a decision.",
                stats.pending as f64,
            );
            let age = stats
                .oldest_pending_submitted_at
                .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            gauge(
                &mut out,
                "smsgate_ca_oldest_pending_age_seconds",
                "Age of the oldest pending request (0 when none).",
                age,
            );
        }
        Err(e) => tracing::error!(error = %e, "metrics: database unreadable"),
    }
    if let Some(last) = app.last_sync_ms() {
        gauge(
            &mut out,
            "smsgate_ca_seconds_since_last_sync",
            "Seconds since sync last called the API.",
            (now - last).max(0) as f64 / 1000.0,
        );
    }
    if let Some(next) = app.crl_info().and_then(|c| c.next_update) {
        gauge(
            &mut out,
            "smsgate_ca_crl_next_update_seconds",
            "Seconds until the published CRL's nextUpdate (negative once lapsed).",
            (next * 1000 - now) as f64 / 1000.0,
        );
        // The bare name issue 5 gives, for dashboards written against it.
        gauge(
            &mut out,
            "crl_next_update_seconds",
            "Same as smsgate_ca_crl_next_update_seconds.",
            (next * 1000 - now) as f64 / 1000.0,
        );
    }
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_and_status() {
        let m = Metrics::default();
        m.record("/health", 200);
        m.record("/health", 200);
        m.record("/api/v1/csr", 429);
        assert_eq!(
            m.snapshot(),
            vec![
                ("/api/v1/csr".to_owned(), 429, 1),
                ("/health".to_owned(), 200, 2)
            ]
        );
    }
}
