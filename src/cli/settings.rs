//! Settings resolved once from flags, the `--config` file and defaults (flag > file > default),
//! then passed down as `&Settings`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use super::GlobalArgs;
use crate::error::Fail;
use crate::logging::LogFormat;

/// The effective global settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// CA state directory.
    pub state: PathBuf,
    /// Spool directory.
    pub spool: PathBuf,
    /// Whether a spool was named explicitly (flag or config): client commands then go through
    /// the spool instead of HTTP.
    pub spool_given: bool,
    /// Policy file.
    pub policy: PathBuf,
    /// Passphrase file, if one was named (flag or config); `$CREDENTIALS_DIRECTORY` is
    /// consulted by the key loader when this is `None`.
    pub passphrase_file: Option<PathBuf>,
    /// PIN file of a PKCS#11 token holding the CA key, if one was named (flag or config);
    /// `$CREDENTIALS_DIRECTORY/ca-pin` is consulted when this is `None`.
    pub pin_file: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// Accept loose permissions on secret files.
    pub allow_loose_permissions: bool,
    /// Client wait limit.
    pub timeout: Duration,
    /// Keys of the config file that only some subcommands read (e.g. `listen`, `api`).
    pub file: ConfigFile,
}

/// The `--config` TOML file: the global flags' names plus subcommand options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    /// `--state`.
    pub state: Option<PathBuf>,
    /// `--spool`.
    pub spool: Option<PathBuf>,
    /// `--policy`.
    pub policy: Option<PathBuf>,
    /// `--passphrase-file`.
    pub passphrase_file: Option<PathBuf>,
    /// `--pin-file`.
    pub pin_file: Option<PathBuf>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--timeout`.
    pub timeout: Option<String>,
    /// `serve --listen`.
    pub listen: Option<String>,
    /// `serve --db`.
    pub db: Option<String>,
    /// `serve --sync-token-file`.
    pub sync_token_file: Option<PathBuf>,
    /// `serve --rate-limit`.
    pub rate_limit: Option<String>,
    /// `serve --trusted-proxy`.
    pub trusted_proxy: Option<Vec<String>>,
    /// `serve --pending-ttl`.
    pub pending_ttl: Option<String>,
    /// `serve --result-ttl`.
    pub result_ttl: Option<String>,
    /// `sync --api`.
    pub api: Option<String>,
    /// `sync --token-file`.
    pub token_file: Option<PathBuf>,
    /// `sync --interval`.
    pub interval: Option<String>,
    /// client `--ca-url`.
    pub ca_url: Option<String>,
    /// `serve --ca-chain`.
    pub ca_chain: Option<PathBuf>,
    /// `serve --max-connections`.
    pub max_connections: Option<usize>,
    /// `serve --db-password-file`.
    pub db_password_file: Option<PathBuf>,
    /// `sync --max-pull`.
    pub max_pull: Option<usize>,
    /// client and `sync` `--ca-file`.
    pub ca_file: Option<PathBuf>,
    /// `daemon --workers`.
    pub workers: Option<usize>,
    /// `daemon --metrics-file`.
    pub metrics_file: Option<PathBuf>,
}

impl Settings {
    /// Resolves flags over the config file over defaults.
    pub fn resolve(args: &GlobalArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => load_config(path)?,
            None => ConfigFile::default(),
        };
        let base = args
            .config
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let from_file = |p: &Option<PathBuf>| p.as_ref().map(|p| base.join(p));
        let timeout = match (&args.timeout, &file.timeout) {
            (Some(t), _) => *t,
            (None, Some(t)) => crate::duration::parse(t).map_err(|e| Fail::usage(e.to_string()))?,
            (None, None) => Duration::from_secs(30),
        };
        Ok(Self {
            state: args
                .state
                .clone()
                .or_else(|| from_file(&file.state))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE)),
            spool: args
                .spool
                .clone()
                .or_else(|| from_file(&file.spool))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL)),
            spool_given: args.spool.is_some() || file.spool.is_some(),
            policy: args
                .policy
                .clone()
                .or_else(|| from_file(&file.policy))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_POLICY)),
            passphrase_file: args
                .passphrase_file
                .clone()
                .or_else(|| from_file(&file.passphrase_file)),
            pin_file: args.pin_file.clone().or_else(|| from_file(&file.pin_file)),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            allow_loose_permissions: args.allow_loose_permissions,
            timeout,
            file,
        })
    }
}

fn load_config(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e: toml::de::Error| {
        let line = e.span().map_or(0, |r| {
            text[..r.start.min(text.len())].matches('\n').count() + 1
        });
        Fail::usage(format!("{}:{line}: {}", path.display(), e.message().trim()))
    })
}

/// Set by systemd for `LoadCredential=`; `ca-passphrase` inside it is the CA key's passphrase,
/// `ca-pin` the PIN of the token holding it.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// Default state directory (relative to the working directory).
pub const DEFAULT_STATE: &str = ".smsgate-ca";
/// Default spool directory.
pub const DEFAULT_SPOOL: &str = "spool";
/// Default policy file.
pub const DEFAULT_POLICY: &str = "policy/default.toml";
