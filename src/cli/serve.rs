//! `smsgate-ca serve`: the online API (DESIGN §5). Resolves its flags over the config file,
//! opens the database, binds, prints `listening on ADDR` on stdout (so that `--listen
//! 127.0.0.1:0` can be used by scripts and tests), and serves until SIGTERM/SIGINT, when it
//! finishes in-flight requests and exits 0. SIGHUP reloads the policy (an invalid file keeps
//! the old one).
//!
//! It reads the policy, the sync token, the pinned CA chain (`--ca-chain`, public
//! certificates), the database password file and its database, and nothing else: never a CA
//! key.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::api::auth::SyncToken;
use crate::api::pin::PinnedCa;
use crate::api::rate_limit::RateLimit;
use crate::api::{self, AppState, Config};
use crate::cli::settings::DEFAULT_POLICY;
use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};
use crate::policy::Policy;
use crate::store::{DbSecret, DbUrl, Retention, Store, StoreError};

/// Flags of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on [default: 127.0.0.1:3000]; port 0 picks a free port. The bound
    /// address is printed on stdout as `listening on ADDR`
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Database URL: sqlite:PATH, or postgres://user@host:port/db for several instances on
    /// one database (no password in it) [default: sqlite:<state>/serve.sqlite3]
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// File with the PostgreSQL password (mode 0600; a trailing newline is ignored); without
    /// it PGPASSFILE or ~/.pgpass is read, as libpq does
    #[arg(long, value_name = "FILE")]
    pub db_password_file: Option<PathBuf>,
    /// File with the bearer token of the /api/v1/sync/ endpoints (mode 0600; a trailing
    /// newline is ignored). Without it those endpoints answer 503
    #[arg(long, value_name = "FILE")]
    pub sync_token_file: Option<PathBuf>,
    /// The CA chain serve is pinned to (the signer's published/ca.crt: issuing CA first, root
    /// last). Pushed results and published files must be this CA's. Required with
    /// --sync-token-file
    #[arg(long, value_name = "FILE")]
    pub ca_chain: Option<PathBuf>,
    /// POSTs per client address: N/s, N/min or N/h; 0 disables [default: 1/min]
    #[arg(long, value_name = "N/PERIOD")]
    pub rate_limit: Option<String>,
    /// A reverse proxy whose X-Forwarded-For is believed (repeatable)
    #[arg(long, value_name = "IP")]
    pub trusted_proxy: Vec<String>,
    /// How long an undecided request is kept [default: 24h]
    #[arg(long, value_name = "DURATION")]
    pub pending_ttl: Option<String>,
    /// How long a decided request is kept [default: 30d]
    #[arg(long, value_name = "DURATION")]
    pub result_ttl: Option<String>,
    /// /health reports degraded when sync has not called for this long [default: 15m]
    #[arg(long, value_name = "DURATION")]
    pub sync_stale_after: Option<String>,
    /// Most connections open at once; more wait until one closes [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Time limit for one request [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub request_timeout: Option<String>,
}

/// Runs `serve`.
pub fn run(settings: &Settings, args: Args) -> anyhow::Result<ExitStatus> {
    let file = &settings.file;
    let listen = args
        .listen
        .or_else(|| file.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let db = match args.db.or_else(|| file.db.clone()) {
        Some(url) => DbUrl::parse(&url).map_err(|e| Fail::usage(e.to_string()))?,
        None => DbUrl::Sqlite(settings.state.join("serve.sqlite3")),
    };
    let rate_limit: RateLimit = match args.rate_limit.or_else(|| file.rate_limit.clone()) {
        Some(s) => s
            .parse()
            .map_err(|e: api::rate_limit::BadRateLimit| Fail::usage(e.to_string()))?,
        None => RateLimit::default(),
    };
    let proxies = if args.trusted_proxy.is_empty() {
        file.trusted_proxy.clone().unwrap_or_default()
    } else {
        args.trusted_proxy
    };
    let trusted_proxies = proxies
        .iter()
        .map(|p| {
            p.trim().parse::<IpAddr>().map_err(|_| {
                Fail::usage(format!(
                    "--trusted-proxy {p:?} is not an IP address: name the proxy's address, e.g. 127.0.0.1"
                ))
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pending_ttl = duration_flag("--pending-ttl", args.pending_ttl, &file.pending_ttl, "24h")?;
    let result_ttl = duration_flag("--result-ttl", args.result_ttl, &file.result_ttl, "30d")?;
    let sync_stale_after =
        duration_flag("--sync-stale-after", args.sync_stale_after, &None, "15m")?;
    let request_timeout = duration_flag("--request-timeout", args.request_timeout, &None, "30s")?;
    let max_connections = args
        .max_connections
        .or(file.max_connections)
        .unwrap_or(api::DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(Fail::usage("--max-connections must be at least 1"));
    }

    let token_file = args
        .sync_token_file
        .or_else(|| file.sync_token_file.clone());
    let sync_token = match &token_file {
        Some(path) => Some(
            SyncToken::load(path, settings.allow_loose_permissions)
                .map_err(|e| Fail::usage(e.to_string()))?,
        ),
        None => {
            tracing::warn!(
                "no --sync-token-file: the /api/v1/sync/ endpoints are disabled (503), so no \
                 request will reach the signer"
            );
            None
        }
    };
    let ca =
        match args.ca_chain.or_else(|| file.ca_chain.clone()) {
            Some(path) => Some(PinnedCa::load(&path).map_err(Fail::usage)?),
            None if sync_token.is_some() => return Err(Fail::usage(
                "--sync-token-file needs --ca-chain FILE (the signer's published/ca.crt): serve \
                 accepts pushed certificates and files only from the CA it is pinned to",
            )),
            None => None,
        };
    let policy = load_policy(settings)?;

    let secret = DbSecret {
        password_file: args
            .db_password_file
            .clone()
            .or_else(|| file.db_password_file.clone()),
        allow_loose: settings.allow_loose_permissions,
    };
    let retention = Retention {
        pending_ttl,
        result_ttl,
    };
    let listener = std::net::TcpListener::bind(&listen)
        .map_err(|e| Fail::runtime(format!("cannot listen on {listen}: {e}")))?;
    listener
        .set_nonblocking(true)
        .context("cannot make the listening socket non-blocking")?;
    let bound = listener
        .local_addr()
        .context("cannot read the bound address")?;

    let config = Config {
        policy,
        sync_token,
        rate_limit,
        trusted_proxies,
        pending_ttl,
        sync_stale_after,
        request_timeout,
        ca,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("serve")
        .build()
        .context("cannot start the async runtime")?;
    let policy_path = settings.policy.clone();
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Install the handlers before announcing the address, so that a SIGTERM right after
        // the announcement is a clean shutdown, not a kill.
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        let store = Store::open(&db, retention, &secret)
            .await
            .map_err(|e| match e {
                StoreError::BadUrl(_)
                | StoreError::PasswordInUrl
                | StoreError::Password { .. }
                | StoreError::SchemaTooNew { .. } => Fail::usage(e.to_string()),
                other => Fail::runtime(other.to_string()),
            })?;
        let state = AppState::new(store, config)
            .await
            .map_err(|e| Fail::runtime(e.to_string()))?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .context("cannot hand the socket to the runtime")?;

        let reload_state = state.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match Policy::load(&policy_path) {
                    Ok(p) => {
                        reload_state.set_policy(p);
                        tracing::info!(policy = %policy_path.display(), "policy reloaded");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "policy reload failed; keeping the old policy")
                    }
                }
            }
        });

        println!("listening on {bound}");
        let _ = std::io::stdout().flush();
        tracing::info!(
            addr = %bound,
            db = %state.store.backend(),
            rate_limit = %rate_limit,
            pending_ttl = %crate::duration::format(pending_ttl),
            result_ttl = %crate::duration::format(result_ttl),
            "serving"
        );
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        };
        api::serve(listener, state, max_connections, shutdown)
            .await
            .context("the HTTP server failed")?;
        tracing::info!("stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitStatus::Success)
}

/// The policy file; the built-in default policy when the default path does not exist (a
/// local first run), with a warning.
fn load_policy(settings: &Settings) -> anyhow::Result<Policy> {
    if settings.policy == std::path::Path::new(DEFAULT_POLICY) && !settings.policy.exists() {
        tracing::warn!(
            "no {DEFAULT_POLICY} here: checking requests against the built-in default policy"
        );
        return Ok(Policy::builtin_default());
    }
    Policy::load(&settings.policy).map_err(|e| Fail::usage(e.to_string()))
}

fn duration_flag(
    flag: &str,
    value: Option<String>,
    from_file: &Option<String>,
    default: &str,
) -> anyhow::Result<Duration> {
    let text = value
        .or_else(|| from_file.clone())
        .unwrap_or_else(|| default.to_owned());
    let d = crate::duration::parse(&text).map_err(|e| Fail::usage(format!("{flag}: {e}")))?;
    if d.is_zero() {
        return Err(Fail::usage(format!("{flag} must be at least 1s")));
    }
    Ok(d)
}

const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
