//! The CA's signing key behind one interface, whichever holds it: an encrypted key file
//! decrypted into OpenSSL ([`SigningKey::file`]) or a private key in a PKCS#11 token
//! ([`SigningKey::token`], see [`super::pkcs11`]).
//!
//! Callers build the bytes to be signed themselves (a TBSCertificate, a TBSCertList, a ledger
//! checkpoint message), hand them to [`SigningKey::sign`], and get back exactly what goes in
//! the signature BIT STRING: a DER `Ecdsa-Sig-Value` for ECDSA (a token's raw `r‖s` is
//! converted), PKCS#1 v1.5 bytes for RSA. The message is hashed here, with OpenSSL's plain
//! SHA-2 functions, so a token only ever sees a digest (raw `CKM_ECDSA`, or `CKM_RSA_PKCS` over
//! a DigestInfo) and mechanisms every token offers suffice.
//!
//! [`SigningKey::verify`] checks a signature with OpenSSL against the CA *certificate's* public
//! key, never the key's own idea of itself: every signature is verified that way before it is
//! published. OpenSSL contexts (sign and verify) are made once and kept in small pools, one
//! per concurrent caller, because OpenSSL 3.0 pays a large fixed cost (algorithm fetches under
//! locks) each time a context is set up.

use std::fmt;
use std::sync::Mutex;

use openssl::md::{Md, MdRef};
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKey, PKeyRef, Private, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;

use super::der;
use super::pkcs11::{TokenError, TokenKey};

/// The signature algorithms DESIGN §4 allows, chosen by the CA key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// ecdsa-with-SHA256, for a P-256 CA.
    EcdsaSha256,
    /// ecdsa-with-SHA384, for a P-384 CA.
    EcdsaSha384,
    /// sha256WithRSAEncryption (PKCS #1 v1.5), for an RSA CA of any size.
    RsaSha256,
}

impl SignatureAlgorithm {
    /// Picks the algorithm for a key, or says why the CA cannot sign with it.
    pub fn for_key<T: HasPublic>(key: &PKeyRef<T>) -> Result<Self, SigningError> {
        match key.id() {
            Id::RSA => Ok(Self::RsaSha256),
            Id::EC => {
                let curve = key.ec_key()?.group().curve_name();
                match curve {
                    Some(Nid::X9_62_PRIME256V1) => Ok(Self::EcdsaSha256),
                    Some(Nid::SECP384R1) => Ok(Self::EcdsaSha384),
                    Some(other) => Err(SigningError::UnsupportedKey(format!(
                        "EC {}",
                        other.short_name().unwrap_or("unknown curve")
                    ))),
                    None => Err(SigningError::UnsupportedKey(
                        "EC (unnamed curve)".to_owned(),
                    )),
                }
            }
            other => Err(SigningError::UnsupportedKey(format!("{other:?}"))),
        }
    }

    /// The digest this algorithm signs.
    pub fn digest(self) -> Digest {
        match self {
            Self::EcdsaSha256 | Self::RsaSha256 => Digest::Sha256,
            Self::EcdsaSha384 => Digest::Sha384,
        }
    }

    /// Whether the key is RSA.
    pub fn is_rsa(self) -> bool {
        self == Self::RsaSha256
    }

    /// The DER AlgorithmIdentifier. RFC 5758 §3.2: ECDSA identifiers have no parameters at
    /// all; RFC 4055 §5: sha256WithRSAEncryption has NULL parameters.
    pub fn identifier(self) -> Vec<u8> {
        match self {
            Self::EcdsaSha256 => der::sequence(&[der::oid(OID_ECDSA_WITH_SHA256)]),
            Self::EcdsaSha384 => der::sequence(&[der::oid(OID_ECDSA_WITH_SHA384)]),
            Self::RsaSha256 => der::sequence(&[der::oid(OID_SHA256_WITH_RSA), der::null()]),
        }
    }
}

/// A message digest the signer hashes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Digest {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
}

impl Digest {
    /// Hashes `message` (OpenSSL's SHA-2 functions: no algorithm fetch per call).
    pub fn hash(self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => openssl::sha::sha256(message).to_vec(),
            Self::Sha384 => openssl::sha::sha384(message).to_vec(),
        }
    }

    /// The DER DigestInfo prefix of PKCS#1 v1.5 (RFC 8017 §9.2, note 1), for tokens that sign
    /// with raw `CKM_RSA_PKCS`.
    pub fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Self::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Self::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
        }
    }

    fn md(self) -> &'static MdRef {
        match self {
            Self::Sha256 => Md::sha256(),
            Self::Sha384 => Md::sha384(),
        }
    }
}

/// Why signing (or checking a signature) failed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The key type cannot sign for this CA.
    #[error("unsupported CA key type {0} (expected ECDSA P-256, ECDSA P-384 or RSA)")]
    UnsupportedKey(String),
    /// The PKCS#11 token failed or is unavailable.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// OpenSSL failed.
    #[error("OpenSSL: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
}

impl SigningError {
    /// Whether the failure may pass by itself (a token removed, a session lost): the work
    /// should wait and be retried rather than be held for an operator.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Token(t) if t.is_unavailable())
    }
}

/// The CA's signing key.
pub struct SigningKey {
    backend: Backend,
    algorithm: SignatureAlgorithm,
    /// The CA certificate's public key: what every signature is checked against.
    public: PKey<Public>,
    verifiers: Pool<PkeyCtx<Public>>,
}

enum Backend {
    File {
        key: PKey<Private>,
        contexts: Pool<PkeyCtx<Private>>,
    },
    Token(Box<TokenKey>),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("key", &self.describe())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key decrypted from a file; `public` is the CA certificate's key.
    pub fn file(key: PKey<Private>, public: PKey<Public>) -> Result<Self, SigningError> {
        let algorithm = SignatureAlgorithm::for_key(&public)?;
        Ok(Self {
            backend: Backend::File {
                key,
                contexts: Pool::default(),
            },
            algorithm,
            public,
            verifiers: Pool::default(),
        })
    }

    /// A key in a PKCS#11 token; `public` is the CA certificate's key.
    pub fn token(key: TokenKey, public: PKey<Public>) -> Result<Self, SigningError> {
        let algorithm = SignatureAlgorithm::for_key(&public)?;
        Ok(Self {
            backend: Backend::Token(Box::new(key)),
            algorithm,
            public,
            verifiers: Pool::default(),
        })
    }

    /// The signature algorithm of certificates and CRLs.
    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    /// The public key signatures are checked against (the CA certificate's).
    pub fn public_key(&self) -> &PKeyRef<Public> {
        &self.public
    }

    /// The key file's private key, when the key is a file (init signs with it directly).
    pub fn file_key(&self) -> Option<&PKeyRef<Private>> {
        match &self.backend {
            Backend::File { key, .. } => Some(key),
            Backend::Token(_) => None,
        }
    }

    /// The token, when the key lives in one.
    pub fn token_key(&self) -> Option<&TokenKey> {
        match &self.backend {
            Backend::File { .. } => None,
            Backend::Token(t) => Some(t),
        }
    }

    /// Where the key is, for logs and messages (never anything secret).
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::File { .. } => "key file".to_owned(),
            Backend::Token(t) => t.describe(),
        }
    }

    /// Makes sure the key can sign now: a token that went away is looked for again (and
    /// logged in again). A key file always can.
    pub fn ensure_ready(&self) -> Result<(), SigningError> {
        match &self.backend {
            Backend::File { .. } => Ok(()),
            Backend::Token(t) => Ok(t.ensure_connected()?),
        }
    }

    /// `None` when the key can sign, else why not (for the daemon's status and logs).
    pub fn health(&self) -> Option<String> {
        match &self.backend {
            Backend::File { .. } => None,
            Backend::Token(t) => t.health(),
        }
    }

    /// Signs `message` with the algorithm's own digest (certificates, CRLs).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        self.sign_with(self.algorithm.digest(), message)
    }

    /// Signs `message` hashed with `digest` (ledger checkpoints are SHA-256 whatever the key).
    /// RSA keys sign SHA-256 only.
    pub fn sign_with(&self, digest: Digest, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        let hash = digest.hash(message);
        match &self.backend {
            Backend::File { key, contexts } => {
                let rsa = self.algorithm.is_rsa();
                if rsa && digest != Digest::Sha256 {
                    return Err(SigningError::UnsupportedKey(
                        "RSA with a digest other than SHA-256".into(),
                    ));
                }
                let mut ctx = contexts.take(|| {
                    let mut ctx = PkeyCtx::new(key)?;
                    ctx.sign_init()?;
                    if rsa {
                        ctx.set_rsa_padding(Padding::PKCS1)?;
                        ctx.set_signature_md(Digest::Sha256.md())?;
                    }
                    Ok::<_, openssl::error::ErrorStack>(ctx)
                })?;
                let mut sig = Vec::with_capacity(512);
                ctx.sign_to_vec(&hash, &mut sig)?;
                contexts.give(ctx);
                Ok(sig)
            }
            Backend::Token(token) => Ok(token.sign(self.algorithm, digest, &hash)?),
        }
    }

    /// Checks with OpenSSL that `signature` over `message` (hashed with `digest`) was made by
    /// the CA certificate's key.
    pub fn verify(
        &self,
        digest: Digest,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, SigningError> {
        let hash = digest.hash(message);
        let rsa = self.algorithm.is_rsa();
        let mut ctx = self.verifiers.take(|| {
            let mut ctx = PkeyCtx::new(&self.public)?;
            ctx.verify_init()?;
            if rsa {
                ctx.set_rsa_padding(Padding::PKCS1)?;
                ctx.set_signature_md(Digest::Sha256.md())?;
            }
            Ok::<_, openssl::error::ErrorStack>(ctx)
        })?;
        // A malformed signature is an error in OpenSSL and simply "not valid" here; the
        // context stays usable either way.
        let ok = ctx.verify(&hash, signature).unwrap_or(false);
        self.verifiers.give(ctx);
        Ok(ok)
    }
}

/// A few reusable objects, one per concurrent user; made on demand, never more than were
/// ever in use at once.
pub(crate) struct Pool<T> {
    items: Mutex<Vec<T>>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Self {
            items: Mutex::new(Vec::new()),
        }
    }
}

impl<T> Pool<T> {
    /// An object from the pool, or a new one from `make`.
    pub(crate) fn take<E>(&self, make: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let item = self
            .items
            .lock()
            .expect("pool lock is never poisoned")
            .pop();
        match item {
            Some(item) => Ok(item),
            None => make(),
        }
    }

    /// Returns an object for the next user (only ones that worked come back).
    pub(crate) fn give(&self, item: T) {
        self.items
            .lock()
            .expect("pool lock is never poisoned")
            .push(item);
    }

    /// Drops every pooled object (e.g. the sessions of a token that went away).
    pub(crate) fn clear(&self) {
        self.items
            .lock()
            .expect("pool lock is never poisoned")
            .clear();
    }
}

/// 1.2.840.10045.4.3.2 (RFC 5758 §3.2)
const OID_ECDSA_WITH_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
/// 1.2.840.10045.4.3.3 (RFC 5758 §3.2)
const OID_ECDSA_WITH_SHA384: &[u64] = &[1, 2, 840, 10045, 4, 3, 3];
/// 1.2.840.113549.1.1.11 (RFC 4055 §5)
const OID_SHA256_WITH_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 11];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_type::KeyType;

    fn public_of(key: &PKey<Private>) -> PKey<Public> {
        PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap()
    }

    /// Signatures from pooled contexts verify with plain OpenSSL, for every CA key type, and
    /// a context is reused (OpenSSL allows repeated signing after one init).
    #[test]
    fn file_keys_sign_what_openssl_verifies() {
        for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            let key = kt.generate().unwrap();
            let sk = SigningKey::file(key.clone(), public_of(&key)).unwrap();
            for i in 0..3 {
                let msg = format!("message {i}");
                let sig = sk.sign(msg.as_bytes()).unwrap();
                let md = match sk.algorithm().digest() {
                    Digest::Sha256 => openssl::hash::MessageDigest::sha256(),
                    Digest::Sha384 => openssl::hash::MessageDigest::sha384(),
                };
                let mut v = openssl::sign::Verifier::new(md, &key).unwrap();
                v.update(msg.as_bytes()).unwrap();
                assert!(v.verify(&sig).unwrap(), "{kt} signature {i}");
                assert!(sk
                    .verify(sk.algorithm().digest(), msg.as_bytes(), &sig)
                    .unwrap());
                assert!(!sk.verify(sk.algorithm().digest(), b"other", &sig).unwrap());
                assert!(!sk
                    .verify(sk.algorithm().digest(), msg.as_bytes(), b"junk")
                    .unwrap());
            }
            // SHA-256 whatever the key (ledger checkpoints).
            let sig = sk.sign_with(Digest::Sha256, b"cp").unwrap();
            let mut v =
                openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
            v.update(b"cp").unwrap();
            assert!(v.verify(&sig).unwrap(), "{kt} checkpoint signature");
        }
    }

    #[test]
    fn algorithm_identifiers_match_openssl() {
        // What `openssl asn1parse` shows for certificates OpenSSL signs.
        assert_eq!(
            SignatureAlgorithm::EcdsaSha256.identifier(),
            [0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]
        );
        assert_eq!(
            SignatureAlgorithm::RsaSha256.identifier(),
            [
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05,
                0x00
            ]
        );
    }
}
