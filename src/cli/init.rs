//! `smsgate-ca init`: create the CA (root + issuing intermediate with name constraints, keys
//! encrypted), or adopt an existing one with `--import-cert/--import-key`. With
//! `--pkcs11-module` and `--key-uri` the issuing key (with `--root-only`, the CA key) lives in a
//! PKCS#11 token instead of a file: generated there (`--generate-in-token`) or adopted.

use std::path::PathBuf;

use super::operator::{load_policy, passphrase_source, pin_source};
use crate::cli::Settings;
use crate::error::{ExitStatus, Fail};
use crate::key_type::KeyType;
use crate::signer::ca::{self, InitOptions, KeyStore, StatePaths};
use crate::signer::key::PassphraseSource;
use crate::signer::pkcs11::{KeyUri, TokenError, TokenLocation};
use crate::signer::SignerError;

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
    /// Keep the issuing key (with --root-only, the CA key) in a PKCS#11 token: the module to
    /// load, e.g. /usr/lib/softhsm/libsofthsm2.so; the PIN comes from --pin-file
    #[arg(
        long,
        value_name = "PATH",
        requires = "key_uri",
        conflicts_with = "import_cert"
    )]
    pkcs11_module: Option<PathBuf>,
    /// The key in the token, as an RFC 7512 URI: 'pkcs11:token=LABEL;object=LABEL' (or id=)
    #[arg(long, value_name = "URI", requires = "pkcs11_module")]
    key_uri: Option<String>,
    /// Generate the key pair in the token (--key-type; sensitive, never extractable) instead
    /// of adopting an existing key
    #[arg(long, requires = "pkcs11_module")]
    generate_in_token: bool,
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
    let store = key_store(settings, &args)?;
    // With the CA key in a token and one tier, no key file is written: no passphrase to ask.
    let file_keys = !(matches!(store, KeyStore::Token { .. }) && args.root_only);
    let source = if !file_keys {
        PassphraseSource::None
    } else if args.no_passphrase {
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
            ca::init(&state, &opts, pass.as_ref(), &store).map_err(|e| match e {
                SignerError::Subject(_) => Fail::usage(e.to_string()),
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
    if let KeyStore::Token { location, .. } = &store {
        println!(
            "The {} key is in the PKCS#11 token ({} via {}); the PIN is not stored",
            if args.root_only { "CA" } else { "issuing" },
            location.uri,
            location.module.display()
        );
    }
    if !created.encrypted && file_keys {
        println!("WARNING: the keys are not encrypted");
    }
    Ok(ExitStatus::Success)
}

/// Where the issuing key goes: a file, or the token `--pkcs11-module`/`--key-uri` name (the
/// URI is checked and the module path made absolute here, so that a bad flag is exit 2).
fn key_store(settings: &Settings, args: &Args) -> anyhow::Result<KeyStore> {
    let (Some(module), Some(uri)) = (&args.pkcs11_module, &args.key_uri) else {
        return Ok(KeyStore::File);
    };
    let parsed = KeyUri::parse(uri).map_err(|e| Fail::usage(e.to_string()))?;
    let module = std::path::absolute(module)
        .map_err(|e| Fail::usage(format!("--pkcs11-module {}: {e}", module.display())))?;
    let pin = pin_source(settings).ok_or_else(|| {
        Fail::usage(
            TokenError::NoPin {
                token: parsed.token_label().to_owned(),
            }
            .to_string(),
        )
    })?;
    // The PIN file is checked (exists, 0600, not empty) before the token is touched.
    pin.read().map_err(|e| Fail::usage(e.to_string()))?;
    Ok(KeyStore::Token {
        location: TokenLocation {
            module,
            uri: uri.clone(),
        },
        pin,
        generate: args.generate_in_token,
    })
}
