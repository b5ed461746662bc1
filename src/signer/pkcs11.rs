//! The CA key in a PKCS#11 token (an HSM, a smart card, a YubiKey; SoftHSM2 in the tests),
//! through the `cryptoki` wrapper, which loads the module the operator names at run time.
//!
//! - [`KeyUri`] reads an RFC 7512 `pkcs11:` URI (`token=`, `object=`, `id=`, …). A PIN in the
//!   URI (`pin-value`, `pin-source`) is refused: the PIN comes from a file only
//!   ([`PinSource`]: `--pin-file`, 0600, or systemd's `$CREDENTIALS_DIRECTORY/ca-pin`), never
//!   from argv or the environment, and is wiped from memory right after login.
//! - [`generate`] makes a key pair in the token that is sensitive and never extractable;
//!   [`adopt`] checks an existing one (sensitive, not extractable, and able to sign).
//! - [`TokenKey`] logs in once and keeps sessions, one per concurrent signer. When the token
//!   goes away it says so (an error that [`TokenError::is_unavailable`] marks as passing, and
//!   [`TokenKey::health`]), and at the next signature it finds the token again, logs in again
//!   (re-reading the PIN file) and signs. A PIN the token refused is never tried a second time
//!   (tokens lock after a few wrong PINs) until the PIN file changes.
//!
//! Tokens sign digests only: raw `CKM_ECDSA` (whose `r‖s` the caller converts to DER) and
//! `CKM_RSA_PKCS` over a DigestInfo, which every token offers (SoftHSM2 2.6 has no
//! ECDSA-with-SHA-256). Nothing here builds certificates or checks signatures.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Rsa;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::der;
use super::signing::{Digest, Pool, SignatureAlgorithm};
use crate::fsx;
use crate::key_type::KeyType;

/// Where the key is: the module to load and the key's URI (what the state directory records
/// in `pkcs11.json`; never the PIN).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenLocation {
    /// The PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The key, as an RFC 7512 URI.
    pub uri: String,
}

/// The parts of an RFC 7512 URI that name a token and a key in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyUri {
    /// `token=`: the token's label.
    pub token: Option<String>,
    /// `object=`: the key's label (CKA_LABEL).
    pub object: Option<String>,
    /// `id=`: the key's CKA_ID bytes.
    pub id: Option<Vec<u8>>,
    /// `serial=`: the token's serial number.
    pub serial: Option<String>,
    /// `manufacturer=`: the token's manufacturer.
    pub manufacturer: Option<String>,
    /// `model=`: the token's model.
    pub model: Option<String>,
}

impl KeyUri {
    /// Parses `pkcs11:token=T;object=O` (RFC 7512 §2.3; values percent-decoded). The token and
    /// one of `object`/`id` are required; `type=` may only say `private`.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let bad = |m: String| TokenError::Uri(format!("{text:?}: {m}"));
        let rest = text
            .strip_prefix("pkcs11:")
            .ok_or_else(|| bad("a PKCS#11 URI starts with \"pkcs11:\"".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Self::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| bad(format!("{attr:?} is not NAME=VALUE")))?;
            let bytes =
                percent_decode(v).ok_or_else(|| bad(format!("bad %-escape in {attr:?}")))?;
            let utf8 =
                || String::from_utf8(bytes.clone()).map_err(|_| bad(format!("{k} is not UTF-8")));
            match k {
                "token" => uri.token = Some(utf8()?),
                "object" => uri.object = Some(utf8()?),
                "id" => uri.id = Some(bytes.clone()),
                "serial" => uri.serial = Some(utf8()?),
                "manufacturer" => uri.manufacturer = Some(utf8()?),
                "model" => uri.model = Some(utf8()?),
                "type" => {
                    if bytes != b"private" {
                        return Err(bad("type= may only be \"private\" (the CA's private key)".into()));
                    }
                }
                other => {
                    return Err(bad(format!(
                        "the attribute {other:?} is not supported: use token=, object=, id=, serial=, manufacturer=, model=, type="
                    )))
                }
            }
        }
        if let Some(attr) = query.split('&').find(|a| !a.is_empty()) {
            let k = attr.split_once('=').map_or(attr, |(k, _)| k);
            if k == "pin-value" || k == "pin-source" {
                return Err(bad(
                    "a PIN never goes in the URI (it would show in the process list): put it in a file and give --pin-file FILE".into(),
                ));
            }
            return Err(bad(format!(
                "the query attribute {k:?} is not supported (name the module with --pkcs11-module)"
            )));
        }
        if uri.token.is_none() {
            return Err(bad("name the token with token=LABEL".into()));
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(bad("name the key with object=LABEL or id=%XX…".into()));
        }
        Ok(uri)
    }

    /// The token label, for messages.
    pub fn token_label(&self) -> &str {
        self.token.as_deref().unwrap_or("")
    }

    /// `object "O"` / `id 0102`, for messages.
    pub fn key_name(&self) -> String {
        match (&self.object, &self.id) {
            (Some(o), _) => format!("object {o:?}"),
            (None, Some(id)) => format!("id {}", fsx::hex::encode(id)),
            (None, None) => "the key".into(),
        }
    }

    fn key_template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut t = vec![Attribute::Class(class)];
        if let Some(o) = &self.object {
            t.push(Attribute::Label(o.as_bytes().to_vec()));
        }
        if let Some(id) = &self.id {
            t.push(Attribute::Id(id.clone()));
        }
        t
    }
}

/// Where the PIN comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinSource {
    /// The file (a trailing newline is not part of the PIN).
    pub path: PathBuf,
    /// Accept a file looser than 0600 (`--allow-loose-permissions`).
    pub allow_loose: bool,
}

impl PinSource {
    /// Reads the PIN into a buffer wiped when dropped. The file must be 0600 or stricter.
    pub fn read(&self) -> Result<Zeroizing<String>, TokenError> {
        let bytes =
            fsx::read_secret_line(&self.path, self.allow_loose, MAX_PIN_BYTES).map_err(|e| {
                if crate::fsx::is_loose_mode(&e) {
                    TokenError::PinFile(format!("the PIN file {e}"))
                } else {
                    TokenError::PinFile(format!("{}: {e}", self.path.display()))
                }
            })?;
        let end = bytes.len();
        if end == 0 {
            return Err(TokenError::PinFile(format!(
                "{} is empty: put the token's user PIN in it",
                self.path.display()
            )));
        }
        let text = std::str::from_utf8(&bytes[..end]).map_err(|_| {
            TokenError::PinFile(format!("{} is not UTF-8 text", self.path.display()))
        })?;
        Ok(Zeroizing::new(text.to_owned()))
    }

    /// What identifies the file's current content without reading it (to know whether a
    /// refused PIN was replaced).
    fn stamp(&self) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&self.path).ok()?;
        Some((m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
    }
}

/// The largest PIN file read.
const MAX_PIN_BYTES: u64 = 4096;

/// Inode, modification time (s, ns) and length of a file.
type FileStamp = (u64, i64, i64, u64);

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The URI is malformed or asks for something unsupported.
    #[error("bad --key-uri {0}")]
    Uri(String),
    /// The PIN file is missing, loose, empty or unreadable.
    #[error("cannot use the PIN file: {0}")]
    PinFile(String),
    /// No PIN file was given or found.
    #[error("the CA key is in PKCS#11 token {token:?}: give its user PIN with --pin-file FILE (mode 0600) or LoadCredential=ca-pin under systemd")]
    NoPin {
        /// The token label.
        token: String,
    },
    /// The module could not be loaded or initialised.
    #[error("cannot load the PKCS#11 module {module}: {message}")]
    Module {
        /// The module path.
        module: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// No token with that label.
    #[error("no token {token:?} in PKCS#11 module {module} ({present}): insert the token or fix token= in the key URI")]
    NoToken {
        /// The token label looked for.
        token: String,
        /// The module.
        module: PathBuf,
        /// The tokens that are there.
        present: String,
    },
    /// No key matches the URI.
    #[error("no private key {key} in token {token:?} (module {module}): fix the key URI, or create one with --generate-in-token")]
    NoKey {
        /// The key, as `object "O"` or `id …`.
        key: String,
        /// The token label.
        token: String,
        /// The module.
        module: PathBuf,
    },
    /// More than one key matches.
    #[error(
        "{count} private keys match {key} in token {token:?}: make the URI name one (add id=)"
    )]
    AmbiguousKey {
        /// The key, as in the URI.
        key: String,
        /// The token label.
        token: String,
        /// How many matched.
        count: usize,
    },
    /// `--generate-in-token` found the name taken.
    #[error("token {token:?} already holds a key {key}: adopt it (leave out --generate-in-token) or choose another object=")]
    KeyExists {
        /// The key, as in the URI.
        key: String,
        /// The token label.
        token: String,
    },
    /// The token refused the PIN.
    #[error("the token {token:?} refused the PIN from {pin_file} ({code}): put the right user PIN in the file; nothing was signed")]
    PinIncorrect {
        /// The token label.
        token: String,
        /// The PIN file.
        pin_file: PathBuf,
        /// CKR_PIN_INCORRECT, CKR_PIN_LOCKED, …
        code: String,
    },
    /// The key cannot serve as a CA key.
    #[error("the key {key} in token {token:?} cannot be the CA key: {reason}")]
    Unsuitable {
        /// The key.
        key: String,
        /// The token label.
        token: String,
        /// Why.
        reason: String,
    },
    /// The token is gone or its session broke; retried at the next signature.
    #[error("the PKCS#11 token {token:?} is unavailable ({code}); signing waits until it is back")]
    Unavailable {
        /// The token label.
        token: String,
        /// The PKCS#11 code.
        code: String,
    },
    /// Any other PKCS#11 failure.
    #[error("PKCS#11 {function} failed on token {token:?}: {code}")]
    Call {
        /// The token label.
        token: String,
        /// The function.
        function: String,
        /// The PKCS#11 code.
        code: String,
    },
}

impl TokenError {
    /// Whether the failure may pass without an operator changing anything in the state (the
    /// token was removed, the session broke, the PIN must be fixed): work waits rather than
    /// being held.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::NoToken { .. }
                | Self::PinIncorrect { .. }
                | Self::PinFile(_)
                | Self::NoPin { .. }
        )
    }
}

/// A logged-in private key in a token, with its sessions.
pub struct TokenKey {
    location: TokenLocation,
    uri: KeyUri,
    pin: PinSource,
    pkcs11: Pkcs11,
    live: RwLock<Live>,
    sessions: Pool<(u64, Session)>,
    /// The PIN file's stamp when the token refused its PIN: not tried again until it changes.
    refused: Mutex<Option<Option<FileStamp>>>,
    /// Why the key is unavailable, when it is.
    trouble: Mutex<Option<String>>,
}

#[derive(Clone, Copy)]
struct Live {
    slot: Slot,
    key: ObjectHandle,
    /// Bumped at each reconnection; sessions of an older generation are dropped.
    generation: u64,
    connected: bool,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// Loads the module, finds the token and the key, and logs in with the PIN (which is wiped
    /// as soon as the token has it).
    pub fn open(location: &TokenLocation, pin: &PinSource) -> Result<Self, TokenError> {
        let uri = KeyUri::parse(&location.uri)?;
        let pkcs11 = load_module(&location.module)?;
        let (slot, session) = open_session(&pkcs11, location, &uri, pin, false)?;
        let key = find_private_key(&session, location, &uri)?;
        let sessions = Pool::default();
        sessions.give((0, session));
        Ok(Self {
            location: location.clone(),
            uri,
            pin: pin.clone(),
            pkcs11,
            live: RwLock::new(Live {
                slot,
                key,
                generation: 0,
                connected: true,
            }),
            sessions,
            refused: Mutex::new(None),
            trouble: Mutex::new(None),
        })
    }

    /// `PKCS#11 token "T" object "O" (module M)`.
    pub fn describe(&self) -> String {
        format!(
            "PKCS#11 token {:?} {} (module {})",
            self.uri.token_label(),
            self.uri.key_name(),
            self.location.module.display()
        )
    }

    /// Where the key is.
    pub fn location(&self) -> &TokenLocation {
        &self.location
    }

    /// `None` when the key is usable, else why not (for logs and the daemon's status).
    pub fn health(&self) -> Option<String> {
        self.trouble.lock().expect("never poisoned").clone()
    }

    /// Signs a digest: ECDSA returns the DER Ecdsa-Sig-Value, RSA the PKCS#1 v1.5 signature.
    /// When the token went away, finds it again, logs in again and retries once.
    pub fn sign(
        &self,
        algorithm: SignatureAlgorithm,
        digest: Digest,
        hash: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        let (mechanism, data) = if algorithm.is_rsa() {
            let mut data = digest.digest_info_prefix().to_vec();
            data.extend_from_slice(hash);
            (Mechanism::RsaPkcs, data)
        } else {
            (Mechanism::Ecdsa, hash.to_vec())
        };
        let first = self.try_sign(&mechanism, &data);
        let raw = match first {
            Err(e) if e.is_unavailable() => {
                self.reconnect()?;
                self.try_sign(&mechanism, &data)?
            }
            other => other?,
        };
        *self.trouble.lock().expect("never poisoned") = None;
        if algorithm.is_rsa() {
            Ok(raw)
        } else {
            der::ecdsa_raw_to_der(&raw).ok_or_else(|| TokenError::Call {
                token: self.uri.token_label().to_owned(),
                function: "C_Sign".into(),
                code: format!("an ECDSA signature of odd length {}", raw.len()),
            })
        }
    }

    /// Reconnects when the token went away; `Ok` when it can sign.
    pub fn ensure_connected(&self) -> Result<(), TokenError> {
        if self.live.read().expect("never poisoned").connected {
            return Ok(());
        }
        self.reconnect()
    }

    fn try_sign(&self, mechanism: &Mechanism, data: &[u8]) -> Result<Vec<u8>, TokenError> {
        // Held through the call: a reconnection (which re-initialises the module) waits for
        // signatures in flight.
        let guard = self.live.read().expect("never poisoned");
        let live = *guard;
        if !live.connected {
            return Err(self.unavailable("CKR_TOKEN_NOT_PRESENT"));
        }
        let (generation, session) = self.sessions.take(|| {
            self.pkcs11
                .open_ro_session(live.slot)
                .map(|s| (live.generation, s))
                .map_err(|e| self.classify("C_OpenSession", &e))
        })?;
        if generation != live.generation {
            // A session from before a reconnection: drop it and use a fresh one.
            drop(session);
            drop(guard);
            return self.try_sign(mechanism, data);
        }
        match session.sign(mechanism, live.key, data) {
            Ok(sig) => {
                self.sessions.give((generation, session));
                Ok(sig)
            }
            Err(e) => {
                let err = self.classify("C_Sign", &e);
                drop(session);
                drop(guard);
                if err.is_unavailable() {
                    let mut live = self.live.write().expect("never poisoned");
                    if live.generation == generation {
                        live.connected = false;
                    }
                }
                Err(err)
            }
        }
    }

    /// Finds the token again, logs in and looks the key up afresh.
    fn reconnect(&self) -> Result<(), TokenError> {
        let mut live = self.live.write().expect("never poisoned");
        if live.connected {
            // Another signer reconnected meanwhile.
            return Ok(());
        }
        let result = (|| {
            let stamp = self.pin.stamp();
            if let Some(refused) = *self.refused.lock().expect("never poisoned") {
                if refused == stamp {
                    return Err(TokenError::PinIncorrect {
                        token: self.uri.token_label().to_owned(),
                        pin_file: self.pin.path.clone(),
                        code: "not tried again until the PIN file changes".into(),
                    });
                }
            }
            // Start the module afresh (C_Finalize, C_Initialize): a module only sees a token
            // that came back after it was initialised again, and the old sessions and login
            // are gone with the token anyway.
            self.sessions.clear();
            let _ = self.pkcs11.clone().finalize();
            match self
                .pkcs11
                .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            {
                Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
                Err(e) => return Err(self.classify("C_Initialize", &e)),
            }
            let (slot, session) =
                match open_session(&self.pkcs11, &self.location, &self.uri, &self.pin, false) {
                    Err(e @ TokenError::PinIncorrect { .. }) => {
                        *self.refused.lock().expect("never poisoned") = Some(stamp);
                        return Err(e);
                    }
                    other => other?,
                };
            let key = find_private_key(&session, &self.location, &self.uri)?;
            *live = Live {
                slot,
                key,
                generation: live.generation + 1,
                connected: true,
            };
            self.sessions.give((live.generation, session));
            Ok(())
        })();
        // The key was there when the daemon started: whatever hides it now (no token, no
        // such object, a failing call) is a token away, and requests wait for it.
        let result = result.map_err(|e| {
            if e.is_unavailable() {
                e
            } else {
                TokenError::Unavailable {
                    token: self.uri.token_label().to_owned(),
                    code: e.to_string(),
                }
            }
        });
        match &result {
            Ok(()) => {
                tracing::info!(key = %self.describe(), "the PKCS#11 token is back; signing again");
                *self.trouble.lock().expect("never poisoned") = None;
            }
            Err(e) => {
                let mut trouble = self.trouble.lock().expect("never poisoned");
                if trouble.is_none() {
                    tracing::error!(key = %self.describe(), error = %e, "the CA key is unavailable; requests wait");
                }
                *trouble = Some(e.to_string());
            }
        }
        result
    }

    fn unavailable(&self, code: &str) -> TokenError {
        TokenError::Unavailable {
            token: self.uri.token_label().to_owned(),
            code: code.to_owned(),
        }
    }

    fn classify(&self, function: &str, e: &CkError) -> TokenError {
        classify(self.uri.token_label(), function, e)
    }
}

/// Generates a key pair of `key_type` in the token, private half sensitive and never
/// extractable; returns its public key.
pub fn generate(
    location: &TokenLocation,
    pin: &PinSource,
    key_type: KeyType,
) -> Result<PKey<Public>, TokenError> {
    let uri = KeyUri::parse(&location.uri)?;
    let pkcs11 = load_module(&location.module)?;
    let (_, session) = open_session(&pkcs11, location, &uri, pin, true)?;
    let token = uri.token_label().to_owned();
    let call = |function: &str, e: CkError| classify(&token, function, &e);
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        let found = session
            .find_objects(&uri.key_template(class))
            .map_err(|e| call("C_FindObjects", e))?;
        if !found.is_empty() {
            return Err(TokenError::KeyExists {
                key: uri.key_name(),
                token,
            });
        }
    }
    let id = match &uri.id {
        Some(id) => id.clone(),
        None => {
            let mut id = vec![0u8; 16];
            openssl::rand::rand_bytes(&mut id).expect("the OpenSSL CSPRNG is available");
            id
        }
    };
    let label = uri
        .object
        .clone()
        .unwrap_or_else(|| "smsgate-ca".to_owned())
        .into_bytes();
    // The key signs and does nothing else (no decryption, wrapping or derivation).
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Label(label.clone()),
        Attribute::Id(id.clone()),
    ];
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label),
        Attribute::Id(id),
    ];
    let mechanism = match key_type {
        KeyType::EcP256 | KeyType::EcP384 => {
            let nid = if key_type == KeyType::EcP384 {
                Nid::SECP384R1
            } else {
                Nid::X9_62_PRIME256V1
            };
            public.push(Attribute::EcParams(curve_oid_der(nid)));
            Mechanism::EccKeyPairGen
        }
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
            let bits: u64 = match key_type {
                KeyType::Rsa2048 => 2048,
                KeyType::Rsa3072 => 3072,
                _ => 4096,
            };
            public.push(Attribute::ModulusBits(bits.into()));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        }
    };
    let (public_handle, _) = session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(|e| call("C_GenerateKeyPair", e))?;
    public_key(&session, public_handle, &token)
}

/// Checks an existing key for use as the CA key: one private key matches the URI, it is
/// sensitive and not extractable, and a signature it makes verifies with its public key.
/// Returns the public key.
pub fn adopt(location: &TokenLocation, pin: &PinSource) -> Result<PKey<Public>, TokenError> {
    let uri = KeyUri::parse(&location.uri)?;
    let pkcs11 = load_module(&location.module)?;
    let (_, session) = open_session(&pkcs11, location, &uri, pin, false)?;
    let token = uri.token_label().to_owned();
    let private = find_private_key(&session, location, &uri)?;
    let unsuitable = |reason: String| TokenError::Unsuitable {
        key: uri.key_name(),
        token: token.clone(),
        reason,
    };
    let attrs = session
        .get_attributes(
            private,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Id,
                AttributeType::Label,
            ],
        )
        .map_err(|e| classify(&token, "C_GetAttributeValue", &e))?;
    let (mut id, mut label) = (None, None);
    for a in attrs {
        match a {
            Attribute::Sensitive(false) => {
                return Err(unsuitable(
                    "it is not sensitive (CKA_SENSITIVE is false): its value can be read out"
                        .into(),
                ))
            }
            Attribute::Extractable(true) => return Err(unsuitable(
                "it is extractable (CKA_EXTRACTABLE is true): it could be copied out of the token"
                    .into(),
            )),
            Attribute::Id(v) => id = Some(v),
            Attribute::Label(v) => label = Some(v),
            _ => {}
        }
    }
    // The public half: the public key object with the same id (or label).
    let mut template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
    match (id, label) {
        (Some(id), _) if !id.is_empty() => template.push(Attribute::Id(id)),
        (_, Some(label)) => template.push(Attribute::Label(label)),
        _ => template = uri.key_template(ObjectClass::PUBLIC_KEY),
    }
    let found = session
        .find_objects(&template)
        .map_err(|e| classify(&token, "C_FindObjects", &e))?;
    let [handle] = found[..] else {
        return Err(unsuitable(format!(
            "{} public key objects share its id: the token must hold exactly one, to tell which certificate key it is",
            found.len()
        )));
    };
    let public = public_key(&session, handle, &token)?;
    let algorithm = super::signing::SignatureAlgorithm::for_key(&public)
        .map_err(|e| unsuitable(e.to_string()))?;
    // It can sign, and the signature is the public key's.
    let probe = openssl::sha::sha256(b"smsgate-ca adopting a PKCS#11 key").to_vec();
    let (mechanism, data) = if algorithm.is_rsa() {
        let mut d = Digest::Sha256.digest_info_prefix().to_vec();
        d.extend_from_slice(&probe);
        (Mechanism::RsaPkcs, d)
    } else {
        (Mechanism::Ecdsa, probe.clone())
    };
    let raw = session
        .sign(&mechanism, private, &data)
        .map_err(|e| classify(&token, "C_Sign", &e))?;
    let sig = if algorithm.is_rsa() {
        raw
    } else {
        der::ecdsa_raw_to_der(&raw)
            .ok_or_else(|| unsuitable("its signature is malformed".into()))?
    };
    let ok = (|| {
        let mut ctx = openssl::pkey_ctx::PkeyCtx::new(&public)?;
        ctx.verify_init()?;
        if algorithm.is_rsa() {
            ctx.set_rsa_padding(openssl::rsa::Padding::PKCS1)?;
            ctx.set_signature_md(openssl::md::Md::sha256())?;
        }
        ctx.verify(&probe, &sig)
    })()
    .unwrap_or(false);
    if !ok {
        return Err(unsuitable(
            "a signature it made does not verify with its public key".into(),
        ));
    }
    Ok(public)
}

fn load_module(module: &Path) -> Result<Pkcs11, TokenError> {
    let err = |message: String| TokenError::Module {
        module: module.to_owned(),
        message,
    };
    if !module.is_file() {
        return Err(err("no such file".into()));
    }
    let pkcs11 = Pkcs11::new(module).map_err(|e| err(e.to_string()))?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| err(format!("C_Initialize: {}", ck_code(&e))))?;
    Ok(pkcs11)
}

/// Finds the token's slot, opens a session and logs the user in (the PIN is wiped right after).
fn open_session(
    pkcs11: &Pkcs11,
    location: &TokenLocation,
    uri: &KeyUri,
    pin: &PinSource,
    read_write: bool,
) -> Result<(Slot, Session), TokenError> {
    let token = uri.token_label().to_owned();
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(|e| classify(&token, "C_GetSlotList", &e))?;
    let mut present = Vec::new();
    let mut chosen = None;
    for slot in slots {
        let Ok(info) = pkcs11.get_token_info(slot) else {
            continue;
        };
        let matches = info.label().trim_end() == token
            && uri
                .serial
                .as_deref()
                .is_none_or(|s| info.serial_number().trim_end() == s)
            && uri
                .manufacturer
                .as_deref()
                .is_none_or(|m| info.manufacturer_id().trim_end() == m)
            && uri
                .model
                .as_deref()
                .is_none_or(|m| info.model().trim_end() == m);
        present.push(format!("{:?}", info.label().trim_end()));
        if matches && chosen.is_none() {
            chosen = Some(slot);
        }
    }
    let Some(slot) = chosen else {
        return Err(TokenError::NoToken {
            token,
            module: location.module.clone(),
            present: if present.is_empty() {
                "it has no token at all".into()
            } else {
                format!("tokens there: {}", present.join(", "))
            },
        });
    };
    let session = if read_write {
        pkcs11.open_rw_session(slot)
    } else {
        pkcs11.open_ro_session(slot)
    }
    .map_err(|e| classify(&token, "C_OpenSession", &e))?;
    let secret = pin.read()?;
    let auth = AuthPin::from(secret.as_str());
    drop(secret);
    match session.login(UserType::User, Some(&auth)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(CkError::Pkcs11(
            rv @ (RvError::PinIncorrect
            | RvError::PinLocked
            | RvError::PinInvalid
            | RvError::PinLenRange),
            _,
        )) => {
            return Err(TokenError::PinIncorrect {
                token,
                pin_file: pin.path.clone(),
                code: rv_code(rv),
            })
        }
        Err(e) => return Err(classify(&token, "C_Login", &e)),
    }
    // `auth` (a zeroising SecretString) is dropped here: the PIN leaves memory.
    drop(auth);
    Ok((slot, session))
}

fn find_private_key(
    session: &Session,
    location: &TokenLocation,
    uri: &KeyUri,
) -> Result<ObjectHandle, TokenError> {
    let token = uri.token_label().to_owned();
    let found = session
        .find_objects(&uri.key_template(ObjectClass::PRIVATE_KEY))
        .map_err(|e| classify(&token, "C_FindObjects", &e))?;
    match found[..] {
        [one] => Ok(one),
        [] => Err(TokenError::NoKey {
            key: uri.key_name(),
            token,
            module: location.module.clone(),
        }),
        _ => Err(TokenError::AmbiguousKey {
            key: uri.key_name(),
            token,
            count: found.len(),
        }),
    }
}

/// Reads a public key object (EC: CKA_EC_PARAMS and CKA_EC_POINT; RSA: modulus and exponent).
fn public_key(
    session: &Session,
    handle: ObjectHandle,
    token: &str,
) -> Result<PKey<Public>, TokenError> {
    let call = |e: CkError| classify(token, "C_GetAttributeValue", &e);
    let bad = |m: &str| TokenError::Call {
        token: token.to_owned(),
        function: "C_GetAttributeValue".into(),
        code: m.to_owned(),
    };
    let kind = session
        .get_attributes(handle, &[AttributeType::KeyType])
        .map_err(call)?;
    let is_rsa = kind
        .iter()
        .any(|a| matches!(a, Attribute::KeyType(k) if *k == CkKeyType::RSA));
    if is_rsa {
        let attrs = session
            .get_attributes(
                handle,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )
            .map_err(call)?;
        let (mut n, mut e) = (None, None);
        for a in attrs {
            match a {
                Attribute::Modulus(v) => n = Some(v),
                Attribute::PublicExponent(v) => e = Some(v),
                _ => {}
            }
        }
        let (Some(n), Some(e)) = (n, e) else {
            return Err(bad("the RSA public key has no modulus or exponent"));
        };
        let rsa = Rsa::from_public_components(
            BigNum::from_slice(&n).map_err(|_| bad("bad modulus"))?,
            BigNum::from_slice(&e).map_err(|_| bad("bad exponent"))?,
        )
        .map_err(|_| bad("bad RSA key"))?;
        return PKey::from_rsa(rsa).map_err(|_| bad("bad RSA key"));
    }
    let attrs = session
        .get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(call)?;
    let (mut params, mut point) = (None, None);
    for a in attrs {
        match a {
            Attribute::EcParams(v) => params = Some(v),
            Attribute::EcPoint(v) => point = Some(v),
            _ => {}
        }
    }
    let (Some(params), Some(point)) = (params, point) else {
        return Err(bad("the public key is neither RSA nor EC"));
    };
    let nid = if params == curve_oid_der(Nid::X9_62_PRIME256V1) {
        Nid::X9_62_PRIME256V1
    } else if params == curve_oid_der(Nid::SECP384R1) {
        Nid::SECP384R1
    } else {
        return Err(TokenError::Unsuitable {
            key: "public key".into(),
            token: token.to_owned(),
            reason: "its curve is neither P-256 nor P-384".into(),
        });
    };
    // CKA_EC_POINT is a DER OCTET STRING around the point (PKCS#11 §2.3.3); some tokens give
    // the bare point.
    let bare = match point.as_slice() {
        [0x04, len, rest @ ..]
            if usize::from(*len) == rest.len() && rest.first() == Some(&0x04) =>
        {
            rest.to_vec()
        }
        [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest.to_vec(),
        _ => point,
    };
    let group = EcGroup::from_curve_name(nid).map_err(|_| bad("bad curve"))?;
    let mut ctx = BigNumContext::new().map_err(|_| bad("OpenSSL"))?;
    let p = EcPoint::from_bytes(&group, &bare, &mut ctx).map_err(|_| bad("bad EC point"))?;
    let ec = EcKey::from_public_key(&group, &p).map_err(|_| bad("bad EC key"))?;
    PKey::from_ec_key(ec).map_err(|_| bad("bad EC key"))
}

/// DER OBJECT IDENTIFIER of a named curve (CKA_EC_PARAMS, RFC 5480 §2.1.1.1).
fn curve_oid_der(nid: Nid) -> Vec<u8> {
    if nid == Nid::SECP384R1 {
        der::oid(&[1, 3, 132, 0, 34])
    } else {
        der::oid(&[1, 2, 840, 10045, 3, 1, 7])
    }
}

fn classify(token: &str, function: &str, e: &CkError) -> TokenError {
    match e {
        CkError::Pkcs11(
            rv @ (RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::SlotIdInvalid
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized
            | RvError::DeviceMemory
            // The token was taken out and put back (or its objects re-read): the key's
            // handle is stale and must be looked up again.
            | RvError::ObjectHandleInvalid
            | RvError::KeyHandleInvalid),
            _,
        ) => TokenError::Unavailable {
            token: token.to_owned(),
            code: rv_code(*rv),
        },
        other => TokenError::Call {
            token: token.to_owned(),
            function: function.to_owned(),
            code: ck_code(other),
        },
    }
}

fn ck_code(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, _) => rv_code(*rv),
        other => other.to_string(),
    }
}

/// `CKR_PIN_INCORRECT` from `PinIncorrect`: the names operators find in token documentation.
fn rv_code(rv: RvError) -> String {
    let name = format!("{rv:?}");
    let mut out = String::from("CKR");
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_and_refuse_pins() {
        let u = KeyUri::parse("pkcs11:token=My%20CA;object=issuing;type=private").unwrap();
        assert_eq!(u.token.as_deref(), Some("My CA"));
        assert_eq!(u.object.as_deref(), Some("issuing"));
        let u = KeyUri::parse("pkcs11:token=T;id=%01%a2").unwrap();
        assert_eq!(u.id, Some(vec![0x01, 0xa2]));
        assert_eq!(u.key_name(), "id 01a2");
        for (bad, says) in [
            ("token=T;object=O", "starts with"),
            ("pkcs11:object=O", "token="),
            ("pkcs11:token=T", "object="),
            (
                "pkcs11:token=T;object=O?pin-value=1234",
                "never goes in the URI",
            ),
            (
                "pkcs11:token=T;object=O;slot-description=x",
                "not supported",
            ),
            ("pkcs11:token=T;object=O;type=public", "private"),
            ("pkcs11:token=T;id=%zz", "escape"),
        ] {
            let e = KeyUri::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn pkcs11_codes_read_like_the_standard() {
        assert_eq!(rv_code(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(rv_code(RvError::TokenNotPresent), "CKR_TOKEN_NOT_PRESENT");
    }
}
