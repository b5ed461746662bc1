//! What the operator commands share: resolving the passphrase and PIN sources, opening the
//! signer side (policy, CA, ledger, spool) with a development CA on `--dev`, and publishing the
//! CA chain and the ledger checkpoint.

use std::ffi::OsStr;
use std::path::Path;

use anyhow::Context;

use super::Settings;
use crate::error::Fail;
use crate::ledger::Ledger;
use crate::policy::Policy;
use crate::signer::ca::{self, Ca, InitOptions, KeyStore, StatePaths};
use crate::signer::key::PassphraseSource;
use crate::signer::pkcs11::PinSource;
use crate::signer::signing::Digest;
use crate::spool::layout::{SpoolError, Sub};
use crate::spool::lock::SpoolLock;
use crate::spool::{Engine, Spool};

/// Where the CA key's passphrase comes from: `--passphrase-file`, then
/// `$CREDENTIALS_DIRECTORY/ca-passphrase` (systemd `LoadCredential=`), then a terminal prompt.
pub fn passphrase_source(settings: &Settings) -> PassphraseSource {
    if let Some(f) = &settings.passphrase_file {
        return PassphraseSource::File(f.clone());
    }
    if let Some(dir) = std::env::var_os(crate::cli::settings::CREDENTIALS_DIRECTORY) {
        let f = Path::new(&dir).join("ca-passphrase");
        if f.exists() {
            return PassphraseSource::File(f);
        }
    }
    PassphraseSource::Prompt
}

/// Where a token's PIN comes from: `--pin-file`, then `$CREDENTIALS_DIRECTORY/ca-pin`
/// (systemd `LoadCredential=`); `None` when neither is there. Never argv or the environment.
pub fn pin_source(settings: &Settings) -> Option<PinSource> {
    let path = match &settings.pin_file {
        Some(f) => f.clone(),
        None => {
            let dir = std::env::var_os(crate::cli::settings::CREDENTIALS_DIRECTORY)?;
            let f = Path::new(&dir).join("ca-pin");
            if !f.exists() {
                return None;
            }
            f
        }
    };
    Some(PinSource {
        path,
        allow_loose: settings.allow_loose_permissions,
    })
}

/// Loads the policy, failing with exit 2 and the file:line message.
pub fn load_policy(settings: &Settings) -> anyhow::Result<Policy> {
    Policy::load(&settings.policy).map_err(|e| Fail::usage(e.to_string()))
}

/// Loads the CA for signing; with `dev`, creates an unencrypted development CA first when the
/// state directory has none.
pub fn load_ca(settings: &Settings, policy: &Policy, dev: bool) -> anyhow::Result<Ca> {
    let state = StatePaths::new(&settings.state);
    if !state.exists() {
        if !dev {
            return Err(Fail::runtime(format!(
                "no CA in {}: create one with `smsgate-ca init --state {}`, or pass --dev for a development CA",
                settings.state.display(),
                settings.state.display()
            )));
        }
        tracing::warn!(
            state = %settings.state.display(),
            "DEVELOPMENT CA: creating a CA whose key is NOT encrypted; never use it for real certificates"
        );
        let created = ca::init(
            &state,
            &InitOptions {
                key_type: crate::key_type::KeyType::EcP256,
                root_only: false,
                days: 3650,
                subject: Some("CN=smsgate-ca DEVELOPMENT Root CA".into()),
                permitted: policy.all_allow_ranges(),
                allow_cn_subjects: policy.any_subject_cn(),
            },
            None,
            &KeyStore::File,
        )?;
        eprintln!(
            "WARNING: created a DEVELOPMENT CA in {} with an UNENCRYPTED key (root SHA-256 {})",
            settings.state.display(),
            created.root_fingerprint
        );
    }
    let source = if dev && settings.passphrase_file.is_none() {
        PassphraseSource::None
    } else {
        passphrase_source(settings)
    };
    let ca = ca::load(
        &state,
        &source,
        pin_source(settings).as_ref(),
        settings.allow_loose_permissions,
    )?;
    tracing::info!(key = %ca.key.describe(), "CA key loaded");
    warn_ranges_outside_constraints(policy, &ca);
    Ok(ca)
}

/// The state directory of an existing CA, or a runtime error saying how to create one.
pub fn existing_state(settings: &Settings) -> anyhow::Result<StatePaths> {
    let state = StatePaths::new(&settings.state);
    if !state.exists() {
        return Err(Fail::runtime(format!(
            "no CA in {}: create one with `smsgate-ca init --state {}`",
            settings.state.display(),
            settings.state.display()
        )));
    }
    Ok(state)
}

/// Loads the CA with its key: the key file with the passphrase of [`passphrase_source`], or
/// the token with the PIN of [`pin_source`].
pub fn load_signing_ca(settings: &Settings, state: &StatePaths) -> anyhow::Result<Ca> {
    Ok(ca::load(
        state,
        &passphrase_source(settings),
        pin_source(settings).as_ref(),
        settings.allow_loose_permissions,
    )?)
}

/// Opens the spool (creating what is missing) through directory handles, refusing a link or
/// a non-directory anywhere in it and a state directory inside it (DESIGN §9): exit 1 with the
/// path named, nothing created or written through it.
pub fn open_spool(settings: &Settings) -> anyhow::Result<Spool> {
    let spool = Spool::open(&settings.spool).map_err(|e| match e {
        SpoolError::Refused(m) => Fail::runtime(m),
        e => Fail::runtime(format!("cannot open the spool: {e}")),
    })?;
    spool
        .refuse_state_inside(&settings.state)
        .map_err(|e| Fail::runtime(e.to_string()))?;
    Ok(spool)
}

/// Opens the spool and takes its lock (`daemon`, `process`): one signer per spool.
pub fn lock_spool(settings: &Settings) -> anyhow::Result<(Spool, SpoolLock)> {
    let spool = open_spool(settings)?;
    let lock = spool.lock().map_err(|e| Fail::runtime(e.to_string()))?;
    Ok((spool, lock))
}

/// Opens the signer side: spool (created, see [`open_spool`]), policy, CA, ledger.
pub fn open_engine(settings: &Settings, dev: bool) -> anyhow::Result<Engine> {
    let spool = open_spool(settings)?;
    engine_on(settings, spool, dev)
}

/// Opens the signer side on a spool already opened (and locked) by the caller.
pub fn engine_on(settings: &Settings, spool: Spool, dev: bool) -> anyhow::Result<Engine> {
    let policy = load_policy(settings)?;
    let ca = load_ca(settings, &policy, dev)?;
    let ledger = Ledger::open(&StatePaths::new(&settings.state).ledger())?;
    Ok(
        Engine::new(spool, policy, ca, ledger).with_revocations(Box::new(|engine, item| {
            crate::lifecycle::revocation::handle_spool_file(engine, item)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })),
    )
}

/// Upkeep after a run or a burst: expire held revocation requests and re-sign the CRL when
/// something was revoked, none is published, or a third of its validity is left.
pub fn upkeep(engine: &Engine) {
    crate::lifecycle::revocation::expire_held(engine);
    match crate::lifecycle::crl::maybe_resign(engine, None) {
        Ok(Some(signed)) => tracing::info!(crl = ?signed, "CRL re-signed"),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "cannot re-sign the CRL"),
    }
}

/// Logs a warning for each policy range the CA's name constraints do not cover (DESIGN §3).
pub fn warn_ranges_outside_constraints(policy: &Policy, ca: &Ca) {
    let Some(permitted) = ca::permitted_ip_subtrees(&ca.cert) else {
        return;
    };
    let set = crate::policy::range::RangeSet::new(&permitted);
    for net in policy.all_allow_ranges() {
        if !set.covers(&net) {
            tracing::warn!(range = %net, constraints = %set.describe(),
                "a policy range exceeds the CA's name constraints; requests outside them are denied ip_not_allowed");
        }
    }
}

/// Writes `published/ca.crt` (issuing chain then root) when it differs from what is there.
pub fn publish_ca(spool: &Spool, ca: &Ca) -> anyhow::Result<()> {
    let mut pem = Vec::new();
    pem.extend(ca.cert.to_pem()?);
    let root_is_issuer = ca.root.to_der()? == ca.cert.to_der()?;
    for c in &ca.chain {
        if c.to_der()? != ca.cert.to_der()? {
            pem.extend(c.to_pem()?);
        }
    }
    if !root_is_issuer {
        pem.extend(ca.root.to_pem()?);
    }
    let name = OsStr::new("ca.crt");
    if spool
        .dir(Sub::Published)
        .read_small(name, 1 << 20)
        .as_deref()
        != Some(&pem[..])
    {
        spool.publish(Sub::Published, name, &pem).with_context(|| {
            format!(
                "cannot write {}",
                spool.path(Sub::Published).join(name).display()
            )
        })?;
    }
    Ok(())
}

/// Appends a signed checkpoint to the ledger and publishes it as
/// `published/ledger-checkpoint.json`. The signature (SHA-256, by the issuing key) is verified
/// with OpenSSL against the CA certificate before it is appended.
pub fn checkpoint(engine: &Engine) -> anyhow::Result<()> {
    let key = &engine.ca().key;
    let cp = engine.with_ledger(|l| {
        l.checkpoint(|message| {
            let signature = key
                .sign_with(Digest::Sha256, message)
                .map_err(|e| e.to_string())?;
            match key.verify(Digest::Sha256, message, &signature) {
                Ok(true) => Ok(signature),
                Ok(false) => {
                    Err("the checkpoint signature does not verify with the CA certificate".into())
                }
                Err(e) => Err(e.to_string()),
            }
        })
    })?;
    let name = OsStr::new("ledger-checkpoint.json");
    engine
        .spool
        .publish(Sub::Published, name, format!("{}\n", cp.line).as_bytes())
        .with_context(|| {
            format!(
                "cannot write {}",
                engine.spool.path(Sub::Published).join(name).display()
            )
        })?;
    Ok(())
}
