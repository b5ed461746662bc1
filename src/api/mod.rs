//! The online API of `serve` (DESIGN §5): the two SMSGate-compatible public routes,
//! revocation by the certificate's holder, the bridge endpoints for `sync`, the published CRL
//! and CA chain, health, metrics, the OpenAPI document and the web page at `/`.
//!
//! This module owns HTTP: the accept loop (header timeout, connection cap), routing, limits,
//! errors, authentication of sync (before any body is read), rate limiting, and the checks of
//! everything the sync side pushes against the pinned CA ([`pin`]). It decides nothing about
//! certificates beyond asking `policy` whether a CSR could ever be approved, stores through
//! [`crate::store::Store`] only, and never holds or reads a CA key. Flags and files are
//! resolved by `cli::serve`, which hands a [`Config`] in.

pub mod auth;
pub mod csr;
pub mod error;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod pin;
pub mod published;
pub mod rate_limit;
pub mod revocations;
pub mod router;
pub mod sync;

use std::future::Future;
use std::net::IpAddr;
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
    /// Woken whenever a request is stored, here or (PostgreSQL `NOTIFY`) on another instance;
    /// sync long-polls wait on it.
    pub new_requests: Arc<Notify>,
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
        let new_requests = store.wakeups().unwrap_or_default();
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
            new_requests,
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

    /// Takes one POST from `client`'s rate limit: counted in the database when it is shared
    /// by several instances (PostgreSQL), else in memory. `Err` is the `429` to answer.
    pub async fn check_rate(&self, client: IpAddr) -> Result<(), error::ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let key = rate_limit::bucket_key(client).to_string();
        let limit = limiter.limit();
        let verdict = match self
            .store
            .rate_check(&key, limit.count, limit.period, now_ms())
            .await
        {
            Some(shared) => shared?,
            None => limiter.check(client, std::time::Instant::now()),
        };
        verdict.map_err(|wait| {
            let mut e = error::ApiError::new(
                error::ErrorKind::RateLimited,
                format!("too many requests from {client}: try again in {wait} seconds"),
            );
            e.retry_after = Some(wait);
            e
        })
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
///
/// The accept loop is ours rather than `axum::serve`'s, for the front door DESIGN §5 asks for:
/// request headers must arrive within [`HEADER_READ_TIMEOUT`] (hyper's timer also closes a
/// keep-alive connection that sends nothing for that long), and at most `max_connections`
/// connections are open at once; past that, new connections wait in the kernel's backlog
/// (logged once per episode) until an idle one is cut, so an honest client is still served.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let app = router::router(state.clone());
    let housekeeping = tokio::spawn(housekeeping(state.clone()));
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    tokio::pin!(shutdown);
    let mut at_limit = false;
    loop {
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !at_limit {
                    tracing::warn!(
                        max_connections,
                        "connection limit reached: new connections wait until one closes \
                         (idle ones are cut after 10 s); raise --max-connections if this is load"
                    );
                    at_limit = true;
                }
                tokio::select! {
                    p = Arc::clone(&slots).acquire_owned() => p.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: wait a moment rather than spin.
                    tracing::error!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if at_limit && slots.available_permits() > 0 {
            tracing::info!("connections are below the limit again");
            at_limit = false;
        }
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(request.map(axum::body::Body::new))
            },
        );
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    tracing::info!("shutting down: finishing in-flight requests");
    state.shutdown.send_replace(true);
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing them");
    }
    housekeeping.abort();
    state.store.shutdown().await;
    Ok(())
}

/// Purges expired rows and prunes the rate limiter, periodically.
async fn housekeeping(state: AppState) {
    let every = state
        .pending_ttl
        .clamp(Duration::from_secs(1), Duration::from_secs(15));
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
        // Other instances may have taken an upload or a sync call: re-read what /health and
        // /metrics report.
        if let Ok(Some(p)) = state.store.published(Artifact::Crl).await {
            if let Some(info) = CrlInfo::from_der(&p.body) {
                *state.crl.write().unwrap_or_else(|p| p.into_inner()) = Some(info);
            }
        }
        if let Ok(Some(t)) = state.store.last_sync().await {
            state.last_sync.fetch_max(t, Ordering::Relaxed);
        }
    }
}

/// Now as Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Request headers must arrive within this (DESIGN §5, Robustness).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `--max-connections` by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// How long in-flight requests may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How often the time of the last sync call is written to the database.
const SYNC_PERSIST_INTERVAL_MS: i64 = 30_000;
