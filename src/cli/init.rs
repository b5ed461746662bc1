//! `smsgate-ca init`: create the CA (root + issuing intermediate with name constraints, keys
//! encrypted), or adopt an existing one with `--import-cert/--import-key`.

use std::path::PathBuf;

use super::operator::{load_policy, passphrase_source};
use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};
use crate::key_type::KeyType;
use crate::signer::ca::{self, InitOptions, StatePaths};
use crate::signer::key::PassphraseSource;

/// Flags of `init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Key type of the CA keys: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096
    #[arg(long, default_value = "ec-p256")]
    key_type: KeyType,
    /// One tier: the root signs leaves (some TLS stacks ignore constraints on a trust anchor)
    #[arg(long, conflicts_with = "intermediate")]
    root_only: bool,
    /// Root and issuing intermediate (the default)
    #[arg(long)]
    intermediate: bool,
    /// Adopt an existing CA certificate (PEM or DER) instead of creating one
    #[arg(long, value_name = "FILE", requires = "import_key")]
    import_cert: Option<PathBuf>,
    /// The existing CA's unencrypted private key (PKCS#8 or traditional PEM)
    #[arg(long, value_name = "FILE", requires = "import_cert")]
    import_key: Option<PathBuf>,
    /// Store the keys unencrypted (development only)
    #[arg(long)]
    no_passphrase: bool,
    /// Validity of the CA certificates in days
    #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
    days: u32,
    /// Subject of the root, e.g. "CN=Example Root CA,O=Example"
    #[arg(long, value_name = "DN")]
    subject: Option<String>,
}

/// Runs `init`.
pub fn run(settings: &Settings, args: Args) -> anyhow::Result<ExitStatus> {
    let state = StatePaths::new(&settings.state);
    if state.exists() {
        return Err(Fail::usage(format!(
            "a CA already exists in {}: refusing to overwrite it (choose another --state)",
            settings.state.display()
        )));
    }
    let policy = load_policy(settings)?;
    let source = if args.no_passphrase {
        tracing::warn!("--no-passphrase: the CA keys are stored UNENCRYPTED; anyone who can read them can issue certificates");
        PassphraseSource::None
    } else {
        passphrase_source(settings)
    };
    let pass = source
        .read_allowing(true, settings.allow_loose_permissions)
        .map_err(|e| Fail::usage(e.to_string()))?;
    let created = match (&args.import_cert, &args.import_key) {
        (Some(cert), Some(key)) => {
            ca::import(&state, cert, key, pass.as_ref()).map_err(|e| match e {
                crate::signer::SignerError::Import(_) | crate::signer::SignerError::Io { .. } => {
                    Fail::usage(e.to_string())
                }
                other => other.into(),
            })?
        }
        _ => {
            if policy.any_subject_cn() {
                println!("note: a profile sets subject_cn = true, so the CA cannot exclude DNS names in its name constraints (OpenSSL checks such a CN as a DNS name)");
            }
            let opts = InitOptions {
                key_type: args.key_type,
                root_only: args.root_only,
                days: args.days,
                subject: args.subject.clone(),
                permitted: policy.all_allow_ranges(),
                allow_cn_subjects: policy.any_subject_cn(),
            };
            ca::init(&state, &opts, pass.as_ref()).map_err(|e| match e {
                crate::signer::SignerError::Subject(_) => Fail::usage(e.to_string()),
                other => other.into(),
            })?
        }
    };
    println!("Created the CA in {}", settings.state.display());
    println!("Root SHA-256 fingerprint: {}", created.root_fingerprint);
    if args.import_cert.is_none() {
        let ranges: Vec<String> = policy
            .all_allow_ranges()
            .iter()
            .map(ToString::to_string)
            .collect();
        let names = if policy.any_subject_cn() {
            "DNS names are NOT constrained (a profile sets subject_cn = true); no e-mail addresses"
        } else {
            "no DNS names or e-mail addresses"
        };
        println!("Name constraints: IP {} only; {names}", ranges.join(", "));
    }
    for f in &created.files {
        println!("  {}", f.display());
    }
    println!(
        "Trust anchor to install on clients: {}",
        state.root_cert().display()
    );
    if !created.encrypted {
        println!("WARNING: the keys are not encrypted");
    }
    Ok(ExitStatus::Success)
}
