//! The online API of `serve` (DESIGN §5): the two SMSGate-compatible public routes, the
//! bridge endpoints for `sync`, the published CRL and CA chain, health, metrics and the
//! OpenAPI document.
//!
//! This module owns HTTP: routing, limits, errors, authentication of sync, rate limiting. It
//! decides nothing about certificates beyond asking `policy` whether a CSR could ever be
//! approved, stores through [`crate::store::Store`] only, and never holds or reads a CA key.
//! Flags and files are resolved by `cli::serve`, which hands a [`Config`] in.

pub mod auth;
pub mod csr;
pub mod error;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod pin;
pub mod published;
pub mod rate_limit;
pub mod router;
pub mod sync;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::policy::Policy;
use crate::store::{Artifact, Store};
use auth::SyncToken;
use metrics::Metrics;
use pin::PinnedCa;
use published::CrlInfo;
use rate_limit::{RateLimit, RateLimiter};

/// Everything `serve` resolved from its flags.
#[derive(Debug)]
pub struct Config {
    /// The issuance policy, checked on submission.
    pub policy: Policy,
    /// The sync token; `None` disables the sync endpoints (`503`).
    pub sync_token: Option<SyncToken>,
    /// POST rate limit per client.
    pub rate_limit: RateLimit,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// How long a pending request lives (used for the purge interval; the store applies it).
    pub pending_ttl: Duration,
    /// `/health` is degraded when sync has not called for this long.
    pub sync_stale_after: Duration,
    /// Time limit for one request (the sync long-poll gets 60 s more).
    pub request_timeout: Duration,
    /// The CA pinned with `--ca-chain` (required with a sync token).
    pub ca: Option<PinnedCa>,
}

/// Shared state of all handlers.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

/// The inside of [`AppState`].
#[derive(Debug)]
pub struct Inner {
    /// The database.
    pub store: Store,
    policy: RwLock<Arc<Policy>>,
    /// See [`Config::sync_token`].
    pub sync_token: Option<SyncToken>,
    /// `None` when rate limiting is off.
    pub limiter: Option<RateLimiter>,
    /// See [`Config::trusted_proxies`].
    pub trusted_proxies: Vec<IpAddr>,
    /// Woken whenever a request is stored (sync long-polls wait on it).
    pub new_requests: Notify,
    /// Becomes `true` when the server starts shutting down (ends long-polls).
    pub shutdown: watch::Sender<bool>,
    /// Request counters.
    pub metrics: Metrics,
    /// See [`Config::sync_stale_after`].
    pub sync_stale_after: Duration,
    /// See [`Config::request_timeout`].
    pub request_timeout: Duration,
    /// When this server started, Unix ms.
    pub started_at: i64,
    /// See [`Config::ca`].
    pub ca: Option<PinnedCa>,
    crl: RwLock<Option<CrlInfo>>,
    last_sync: AtomicI64,
    last_sync_stored: AtomicI64,
    pending_ttl: Duration,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state, reading what the store already knows (CRL dates, last sync).
    pub async fn new(store: Store, config: Config) -> Result<Self, crate::store::StoreError> {
        let crl = store
            .published(Artifact::Crl)
            .await?
            .and_then(|p| CrlInfo::from_der(&p.body));
        let last_sync = store.last_sync().await?.unwrap_or(0);
        let limiter = config
            .rate_limit
            .is_enabled()
            .then(|| RateLimiter::new(config.rate_limit));
        Ok(Self(Arc::new(Inner {
            store,
            policy: RwLock::new(Arc::new(config.policy)),
            sync_token: config.sync_token,
            limiter,
            trusted_proxies: config
                .trusted_proxies
                .into_iter()
                .map(rate_limit::canonical)
                .collect(),
            new_requests: Notify::new(),
            shutdown: watch::Sender::new(false),
            metrics: Metrics::default(),
            sync_stale_after: config.sync_stale_after,
            request_timeout: config.request_timeout,
            started_at: now_ms(),
            ca: config.ca,
            crl: RwLock::new(crl),
            last_sync: AtomicI64::new(last_sync),
            last_sync_stored: AtomicI64::new(last_sync),
            pending_ttl: config.pending_ttl,
        })))
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the policy (SIGHUP reload).
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }

    /// Dates of the published CRL.
    pub fn crl_info(&self) -> Option<CrlInfo> {
        *self.crl.read().unwrap_or_else(|p| p.into_inner())
    }

    /// When sync last called, Unix ms.
    pub fn last_sync_ms(&self) -> Option<i64> {
        Some(self.last_sync.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }

    /// Notes a sync call; persisted at most every [`SYNC_PERSIST_INTERVAL_MS`] so that a
    /// restart remembers it without a write per poll.
    pub async fn saw_sync(&self) {
        let now = now_ms();
        self.last_sync.store(now, Ordering::Relaxed);
        let stored = self.last_sync_stored.load(Ordering::Relaxed);
        if now - stored >= SYNC_PERSIST_INTERVAL_MS
            && self
                .last_sync_stored
                .compare_exchange(stored, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            if let Err(e) = self.store.touch_sync(now).await {
                tracing::warn!(error = %e, "cannot record the time of the last sync");
            }
        }
    }
}

/// Serves on `listener` until `shutdown` resolves, then finishes in-flight requests (ending
/// long-polls early), flushes the store and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router::router(state.clone());
    let housekeeping = tokio::spawn(housekeeping(state.clone()));
    let signal_state = state.clone();
    let result = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        signal_state.shutdown.send_replace(true);
    })
    .await;
    housekeeping.abort();
    state.store.shutdown().await;
    result
}

/// Purges expired rows and prunes the rate limiter, periodically.
async fn housekeeping(state: AppState) {
    let every = state
        .pending_ttl
        .clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match state.store.purge(now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "purged expired requests"),
            Err(e) => tracing::warn!(error = %e, "purge failed"),
        }
        if let Some(limiter) = &state.limiter {
            limiter.prune(std::time::Instant::now());
        }
    }
}

/// Now as Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How often the time of the last sync call is written to the database.
const SYNC_PERSIST_INTERVAL_MS: i64 = 30_000;
