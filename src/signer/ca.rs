//! The CA on disk: creating it (`init`: a root and an issuing intermediate, or one tier, with
//! critical name constraints), adopting an existing one (`--import-cert/--import-key`), and
//! loading it for signing.
//!
//! State directory layout (mode 0700):
//! `root.crt` (trust anchor), `root.key` (two-tier only, encrypted), `ca.crt` (issuing CA),
//! `ca.key` (issuing key, encrypted) or `pkcs11.json` (the module and URI of the issuing key in a
//! PKCS#11 token; never the PIN), `chain.pem` (intermediates sent with each leaf, may be empty).
//!
//! With a token, `init` has the token generate the issuing key (`--generate-in-token`) or adopts
//! one there, and the CA certificate it signs itself (one tier) is built by OpenSSL with a
//! throwaway key of the same algorithm and then signed again by the token: OpenSSL builds the
//! structure, the token makes the one signature that counts, and OpenSSL checks it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, PKeyRef, Private, Public};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Extension, X509Name, X509NameBuilder, X509Ref, X509};

use super::key::{self, Passphrase, PassphraseSource};
use super::pkcs11::{self, PinSource, TokenKey, TokenLocation};
use super::signing::{SignatureAlgorithm, SigningKey};
use super::{der, tbs, SignerError};
use crate::fsx;
use crate::key_type::KeyType;

/// How to create a CA.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Key type of both tiers.
    pub key_type: KeyType,
    /// One tier only (the root signs leaves).
    pub root_only: bool,
    /// Validity of the root in days (the intermediate gets the same, capped by the root).
    pub days: u32,
    /// Subject of the root, e.g. `CN=smsgate-ca Root,O=Example`; the intermediate's CN gets
    /// " Issuing CA" instead of " Root".
    pub subject: Option<String>,
    /// Permitted iPAddress subtrees (the policy's allow ranges).
    pub permitted: Vec<IpNet>,
    /// Leave the dNSName constraint out (a profile puts CN=<ip> in subjects, DESIGN §4).
    pub allow_cn_subjects: bool,
}

/// Where `init` keeps the issuing key.
#[derive(Debug, Clone)]
pub enum KeyStore {
    /// A PKCS#8 file, encrypted with the passphrase (the default).
    File,
    /// A PKCS#11 token; `generate` makes the key there, else an existing one is adopted.
    Token {
        /// The module and the key's URI.
        location: TokenLocation,
        /// The PIN file.
        pin: PinSource,
        /// `--generate-in-token`.
        generate: bool,
    },
}

/// A loaded CA able to sign: the issuing certificate and key, the chain and the root.
pub struct Ca {
    /// The issuing CA certificate.
    pub cert: X509,
    /// The issuing CA key (a key file or a token).
    pub key: SigningKey,
    /// Certificates sent after each leaf (the intermediate in a two-tier CA; empty otherwise).
    pub chain: Vec<X509>,
    /// The trust anchor.
    pub root: X509,
    /// Facts of the issuing certificate, computed once (OpenSSL 3.0 makes them costly).
    pub facts: CaFacts,
    /// The constant parts of every leaf's TBSCertificate, encoded once.
    pub template: tbs::Template,
}

/// What issuance needs to know about the issuing certificate, computed once at load.
#[derive(Clone)]
pub struct CaFacts {
    /// The subject as DER (the issuer of every leaf).
    pub subject_der: Vec<u8>,
    /// The subjectKeyIdentifier (the leaves' authorityKeyIdentifier).
    pub ski: Option<Vec<u8>>,
    /// Permitted iPAddress subtrees (None: unconstrained).
    pub permitted: Option<Vec<IpNet>>,
    /// The issuing certificate's notAfter.
    pub not_after: DateTime<Utc>,
    /// The certificates sent after each leaf, as PEM (may be empty).
    pub chain_pem: String,
}

impl std::fmt::Debug for CaFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaFacts")
            .field("permitted", &self.permitted)
            .finish_non_exhaustive()
    }
}

impl CaFacts {
    /// Computes the facts of a CA certificate and its chain.
    pub fn of(cert: &X509Ref, chain: &[X509]) -> Result<Self, SignerError> {
        let mut chain_pem = String::new();
        for c in chain {
            chain_pem.push_str(std::str::from_utf8(&c.to_pem()?).expect("PEM is ASCII"));
        }
        Ok(Self {
            chain_pem,
            subject_der: cert.subject_name().to_der()?,
            ski: cert.subject_key_id().map(|s| s.as_slice().to_vec()),
            permitted: permitted_ip_subtrees(cert),
            not_after: not_after(cert),
        })
    }
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &name_text(self.cert.subject_name()))
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Paths of the state directory.
#[derive(Debug, Clone)]
pub struct StatePaths {
    /// The directory.
    pub dir: PathBuf,
}

impl StatePaths {
    /// Paths under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }
    /// `root.crt`
    pub fn root_cert(&self) -> PathBuf {
        self.dir.join("root.crt")
    }
    /// `root.key`
    pub fn root_key(&self) -> PathBuf {
        self.dir.join("root.key")
    }
    /// `ca.crt`
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// `ca.key`
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// `chain.pem`
    pub fn chain(&self) -> PathBuf {
        self.dir.join("chain.pem")
    }
    /// `pkcs11.json`: where the issuing key is when a token holds it.
    pub fn pkcs11(&self) -> PathBuf {
        self.dir.join("pkcs11.json")
    }
    /// `ledger.jsonl`
    pub fn ledger(&self) -> PathBuf {
        self.dir.join("ledger.jsonl")
    }
    /// Whether a CA exists here.
    pub fn exists(&self) -> bool {
        self.ca_cert().exists() || self.ca_key().exists()
    }
}

/// What `init` made, for the summary it prints.
#[derive(Debug)]
pub struct Created {
    /// SHA-256 fingerprint of the root, colon-separated upper-case hex.
    pub root_fingerprint: String,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Whether the keys are encrypted.
    pub encrypted: bool,
}

/// Creates a new CA in `state` (refuses to overwrite an existing one). With a token, the
/// token's part comes first (generate or adopt the key, log in), so that a wrong PIN or a
/// missing token leaves no CA files behind.
pub fn init(
    state: &StatePaths,
    opts: &InitOptions,
    pass: Option<&Passphrase>,
    store: &KeyStore,
) -> Result<Created, SignerError> {
    if state.exists() {
        return Err(SignerError::CaExists(state.dir.clone()));
    }
    let token = match store {
        KeyStore::File => None,
        KeyStore::Token {
            location,
            pin,
            generate,
        } => {
            let public = if *generate {
                pkcs11::generate(location, pin, opts.key_type)?
            } else {
                pkcs11::adopt(location, pin)?
            };
            Some((location, public, TokenKey::open(location, pin)?))
        }
    };
    fsx::ensure_dir(&state.dir, fsx::MODE_PRIVATE_DIR).map_err(|e| io(&state.dir, e))?;
    let now = Utc::now();
    let root_subject = subject(opts.subject.as_deref(), "smsgate-ca Root CA")?;
    let mut files = Vec::new();
    let write_cert = |path: PathBuf, cert: &X509, files: &mut Vec<PathBuf>| {
        let pem = cert.to_pem()?;
        fsx::write_new(&path, &pem, fsx::MODE_PUBLIC).map_err(|e| io(&path, e))?;
        files.push(path);
        Ok::<(), SignerError>(())
    };
    // The issuing key: in the token, or a new key file.
    let (issuing_public, issuing_signer) = match token {
        Some((location, public, key)) => {
            write_location(state, location)?;
            files.push(state.pkcs11());
            (public, CertSigner::Token(Box::new(key)))
        }
        None => {
            let key = opts.key_type.generate()?;
            (public_of(&key)?, CertSigner::File(key))
        }
    };
    let root = if opts.root_only {
        let root = build_ca_cert(&CaCertPlan {
            subject: &root_subject,
            issuer: None,
            key: &issuing_public,
            signer: &issuing_signer,
            not_before: now,
            days: opts.days,
            pathlen: 0,
            permitted: &opts.permitted,
            allow_cn_subjects: opts.allow_cn_subjects,
        })?;
        if let CertSigner::File(key) = &issuing_signer {
            key::store(&state.ca_key(), key, pass)?;
            files.push(state.ca_key());
        }
        write_cert(state.ca_cert(), &root, &mut files)?;
        write_cert(state.root_cert(), &root, &mut files)?;
        write_chain(state, &[])?;
        root
    } else {
        let root_key = opts.key_type.generate()?;
        let root_public = public_of(&root_key)?;
        let root_signer = CertSigner::File(root_key);
        let root = build_ca_cert(&CaCertPlan {
            subject: &root_subject,
            issuer: None,
            key: &root_public,
            signer: &root_signer,
            not_before: now,
            days: opts.days,
            pathlen: 1,
            permitted: &opts.permitted,
            allow_cn_subjects: opts.allow_cn_subjects,
        })?;
        let ca_subject = issuing_subject(opts.subject.as_deref())?;
        let ca = build_ca_cert(&CaCertPlan {
            subject: &ca_subject,
            issuer: Some(&root),
            key: &issuing_public,
            signer: &root_signer,
            not_before: now,
            days: opts.days,
            pathlen: 0,
            permitted: &opts.permitted,
            allow_cn_subjects: opts.allow_cn_subjects,
        })?;
        key::store(
            &state.root_key(),
            root_signer.file_key().expect("the root key is a file"),
            pass,
        )?;
        files.push(state.root_key());
        if let CertSigner::File(key) = &issuing_signer {
            key::store(&state.ca_key(), key, pass)?;
            files.push(state.ca_key());
        }
        write_cert(state.root_cert(), &root, &mut files)?;
        write_cert(state.ca_cert(), &ca, &mut files)?;
        write_chain(state, &[ca])?;
        root
    };
    files.push(state.chain());
    Ok(Created {
        root_fingerprint: fingerprint(&root)?,
        files,
        encrypted: pass.is_some(),
    })
}

/// Adopts an existing CA certificate and key (e.g. the upstream ca-backend's `ca.crt` and
/// plaintext PKCS#8 `ca.key`); the key is stored encrypted. The imported CA signs leaves
/// directly.
pub fn import(
    state: &StatePaths,
    cert_path: &Path,
    key_path: &Path,
    pass: Option<&Passphrase>,
) -> Result<Created, SignerError> {
    if state.exists() {
        return Err(SignerError::CaExists(state.dir.clone()));
    }
    let cert_pem = std::fs::read(cert_path).map_err(|e| io(cert_path, e))?;
    let cert = X509::from_pem(&cert_pem)
        .or_else(|_| X509::from_der(&cert_pem))
        .map_err(|_| {
            SignerError::Import(format!(
                "{} is not a PEM or DER certificate",
                cert_path.display()
            ))
        })?;
    let key_pem = zeroize::Zeroizing::new(std::fs::read(key_path).map_err(|e| io(key_path, e))?);
    let ca_key = PKey::private_key_from_pem(&key_pem)
        .or_else(|_| PKey::private_key_from_der(&key_pem))
        .map_err(|_| {
            SignerError::Import(format!(
                "{} is not an unencrypted PEM or DER private key",
                key_path.display()
            ))
        })?;
    if !is_ca(&cert) {
        return Err(SignerError::Import(format!(
            "{} is not a CA certificate (basicConstraints CA:TRUE is missing)",
            cert_path.display()
        )));
    }
    if cert.subject_key_id().is_none() {
        return Err(SignerError::Import(format!(
            "{} has no Subject Key Identifier extension, which the authorityKeyIdentifier of every \
             leaf and CRL must name: re-issue the CA certificate with one (openssl x509 … \
             -extfile with subjectKeyIdentifier=hash)",
            cert_path.display()
        )));
    }
    let public = cert.public_key()?;
    if !public.public_eq(&ca_key) {
        return Err(SignerError::Import(format!(
            "the key {} does not match the certificate {}",
            key_path.display(),
            cert_path.display()
        )));
    }
    if KeyType::of(&ca_key).is_none() {
        return Err(SignerError::Import(
            "the imported key is neither ECDSA P-256/P-384 nor RSA 2048/3072/4096".into(),
        ));
    }
    fsx::ensure_dir(&state.dir, fsx::MODE_PRIVATE_DIR).map_err(|e| io(&state.dir, e))?;
    key::store(&state.ca_key(), &ca_key, pass)?;
    let pem = cert.to_pem()?;
    fsx::write_new(&state.ca_cert(), &pem, fsx::MODE_PUBLIC)
        .map_err(|e| io(&state.ca_cert(), e))?;
    fsx::write_new(&state.root_cert(), &pem, fsx::MODE_PUBLIC)
        .map_err(|e| io(&state.root_cert(), e))?;
    write_chain(state, &[])?;
    Ok(Created {
        root_fingerprint: fingerprint(&cert)?,
        files: vec![
            state.ca_key(),
            state.ca_cert(),
            state.root_cert(),
            state.chain(),
        ],
        encrypted: pass.is_some(),
    })
}

/// Loads the issuing CA with its key: the key file (decrypted with the passphrase from
/// `pass`), or the token `pkcs11.json` names (logged in with the PIN from `pin`). Either way
/// the key must be the CA certificate's: a file key is compared with it, a token key makes a
/// probe signature that OpenSSL verifies with the certificate's public key.
pub fn load(
    state: &StatePaths,
    pass: &PassphraseSource,
    pin: Option<&PinSource>,
    allow_loose: bool,
) -> Result<Ca, SignerError> {
    let (cert, chain, root) = load_certs(state)?;
    if !allow_loose {
        fsx::check_private_mode(&state.dir, false)
            .map_err(|e| SignerError::Permissions(e.to_string()))?;
    }
    // A process that holds the CA key leaves no core dump (and no ptrace by other users).
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot disable core dumps");
    }
    let public = cert.public_key()?;
    let mismatch = |what: String| {
        SignerError::Import(format!(
            "{what} does not match {}: the state directory is inconsistent",
            state.ca_cert().display()
        ))
    };
    let key = match read_location(state)? {
        Some(location) => {
            let uri = pkcs11::KeyUri::parse(&location.uri)?;
            let pin = pin.ok_or_else(|| pkcs11::TokenError::NoPin {
                token: uri.token_label().to_owned(),
            })?;
            let token = TokenKey::open(&location, pin)?;
            let describe = token.describe();
            let key = SigningKey::token(token, public)?;
            let probe = b"smsgate-ca: is this the CA certificate's key?";
            let signature = key.sign(probe)?;
            if !key.verify(key.algorithm().digest(), probe, &signature)? {
                return Err(mismatch(format!("the key in {describe}")));
            }
            key
        }
        None => {
            let file_key = key::load(&state.ca_key(), pass, allow_loose)?;
            if !public.public_eq(&file_key) {
                return Err(mismatch(state.ca_key().display().to_string()));
            }
            SigningKey::file(file_key, public)?
        }
    };
    let facts = CaFacts::of(&cert, &chain)?;
    let template = tbs::Template::new(
        key.algorithm().identifier(),
        facts.subject_der.clone(),
        facts.ski.as_deref(),
    );
    Ok(Ca {
        cert,
        key,
        chain,
        root,
        facts,
        template,
    })
}

/// The token location recorded in the state directory, if the key lives in a token.
pub fn read_location(state: &StatePaths) -> Result<Option<TokenLocation>, SignerError> {
    let path = state.pkcs11();
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            SignerError::Import(format!(
                "{} is not a PKCS#11 key record: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path, e)),
    }
}

fn write_location(state: &StatePaths, location: &TokenLocation) -> Result<(), SignerError> {
    let mut json = serde_json::to_vec_pretty(location).expect("a token location serialises");
    json.push(b'\n');
    fsx::write_new(&state.pkcs11(), &json, fsx::MODE_SECRET).map_err(|e| io(&state.pkcs11(), e))
}

/// Loads the certificates only (issuing, chain, root): no key, no passphrase.
pub fn load_certs(state: &StatePaths) -> Result<(X509, Vec<X509>, X509), SignerError> {
    if !state.ca_cert().exists() {
        return Err(SignerError::NoCa(state.dir.clone()));
    }
    let read = |p: PathBuf| std::fs::read(&p).map_err(|e| io(&p, e));
    let cert = X509::from_pem(&read(state.ca_cert())?)?;
    let chain = X509::stack_from_pem(&read(state.chain())?).unwrap_or_default();
    let root = X509::from_pem(&read(state.root_cert())?)?;
    Ok((cert, chain, root))
}

/// The permitted iPAddress subtrees of a CA certificate's name constraints (None: no
/// constraints, everything permitted).
pub fn permitted_ip_subtrees(cert: &X509Ref) -> Option<Vec<IpNet>> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;
    let der = cert.to_der().ok()?;
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(&der).ok()?;
    let mut out = Vec::new();
    let mut any = false;
    for ext in parsed.extensions() {
        if let ParsedExtension::NameConstraints(nc) = ext.parsed_extension() {
            for sub in nc.permitted_subtrees.iter().flatten() {
                if let GeneralName::IPAddress(bytes) = &sub.base {
                    any = true;
                    if let Some(net) = ip_mask_to_net(bytes) {
                        out.push(net);
                    }
                }
            }
        }
    }
    any.then_some(out)
}

/// Colon-separated upper-case SHA-256 of a certificate's DER.
pub fn fingerprint(cert: &X509Ref) -> Result<String, SignerError> {
    let d = cert.digest(MessageDigest::sha256())?;
    Ok(d.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// Colon-separated upper-case SHA-256 of DER bytes.
pub fn fingerprint_der(der: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let d = openssl::sha::sha256(der);
    let mut out = String::with_capacity(95);
    for (i, b) in d.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// A certificate's notAfter as a UTC time.
pub fn not_after(cert: &X509Ref) -> DateTime<Utc> {
    asn1_to_utc(cert.not_after())
}

/// Converts an ASN.1 time to UTC.
pub fn asn1_to_utc(t: &openssl::asn1::Asn1TimeRef) -> DateTime<Utc> {
    let epoch = Asn1Time::from_unix(0).expect("the epoch is a valid time");
    let diff = epoch
        .diff(t)
        .expect("two valid ASN.1 times can be compared");
    DateTime::from_timestamp(i64::from(diff.days) * 86_400 + i64::from(diff.secs), 0)
        .unwrap_or_default()
}

/// One-line text of a name, e.g. `CN=smsgate-ca Root CA`.
pub fn name_text(name: &openssl::x509::X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let val = e.data().to_string().unwrap_or_default();
            format!("{key}={val}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What signs a CA certificate at `init`.
enum CertSigner {
    /// A key file's key: OpenSSL signs directly.
    File(PKey<Private>),
    /// A token's key: OpenSSL builds the certificate with a throwaway key of the same
    /// algorithm, the token signs its TBS bytes, and the result is checked.
    Token(Box<TokenKey>),
}

impl CertSigner {
    fn file_key(&self) -> Option<&PKey<Private>> {
        match self {
            Self::File(k) => Some(k),
            Self::Token(_) => None,
        }
    }
}

struct CaCertPlan<'a> {
    subject: &'a X509Name,
    issuer: Option<&'a X509>,
    /// The certified public key.
    key: &'a PKeyRef<Public>,
    signer: &'a CertSigner,
    not_before: DateTime<Utc>,
    days: u32,
    pathlen: u32,
    permitted: &'a [IpNet],
    allow_cn_subjects: bool,
}

fn build_ca_cert(p: &CaCertPlan<'_>) -> Result<X509, SignerError> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(p.subject)?;
    b.set_issuer_name(p.issuer.map_or(p.subject.as_ref(), |i| i.subject_name()))?;
    b.set_pubkey(p.key)?;
    let nb = p.not_before.timestamp() - 60;
    let mut na = nb + i64::from(p.days) * 86_400;
    if let Some(issuer) = p.issuer {
        na = na.min(not_after(issuer).timestamp());
    }
    let (nb, na) = (Asn1Time::from_unix(nb)?, Asn1Time::from_unix(na)?);
    b.set_not_before(&nb)?;
    b.set_not_after(&na)?;
    b.append_extension(
        BasicConstraints::new()
            .critical()
            .ca()
            .pathlen(p.pathlen)
            .build()?,
    )?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    let ski =
        SubjectKeyIdentifier::new().build(&b.x509v3_context(p.issuer.map(|i| i.as_ref()), None))?;
    b.append_extension(ski)?;
    if let Some(issuer) = p.issuer {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(issuer), None))?;
        b.append_extension(aki)?;
    }
    b.append_extension(name_constraints(&b, p.permitted, p.allow_cn_subjects)?)?;
    match p.signer {
        CertSigner::File(key) => {
            b.sign(key, digest_for(key))?;
            Ok(b.build())
        }
        CertSigner::Token(token) => {
            // The issuer's public key: the subject's own for a self-signed certificate.
            let issuer_public = match p.issuer {
                Some(i) => i.public_key()?,
                None => PKey::public_key_from_der(&p.key.public_key_to_der()?)?,
            };
            let algorithm = SignatureAlgorithm::for_key(&issuer_public)?;
            let throwaway = match algorithm {
                SignatureAlgorithm::EcdsaSha256 => KeyType::EcP256.generate()?,
                SignatureAlgorithm::EcdsaSha384 => KeyType::EcP384.generate()?,
                SignatureAlgorithm::RsaSha256 => KeyType::Rsa2048.generate()?,
            };
            b.sign(&throwaway, digest_for(&throwaway))?;
            let draft = b.build().to_der()?;
            sign_again(&draft, algorithm, token, &issuer_public)
        }
    }
}

/// Replaces the throwaway signature of an OpenSSL-built certificate with the token's: the TBS
/// bytes are kept as they are, signed by the token, reassembled and checked with OpenSSL.
fn sign_again(
    draft: &[u8],
    algorithm: SignatureAlgorithm,
    token: &TokenKey,
    issuer_public: &PKeyRef<Public>,
) -> Result<X509, SignerError> {
    use x509_parser::prelude::FromDer;
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(draft)
        .map_err(|e| SignerError::Lint(format!("OpenSSL's CA certificate does not parse: {e}")))?;
    let tbs = parsed.tbs_certificate.as_ref();
    let signature = token.sign(algorithm, algorithm.digest(), &algorithm.digest().hash(tbs))?;
    let cert = X509::from_der(&der::signed(tbs, &algorithm.identifier(), &signature))?;
    if !cert.verify(issuer_public)? {
        return Err(SignerError::Lint(
            "the token's signature on the CA certificate does not verify".into(),
        ));
    }
    Ok(cert)
}

fn public_of(key: &PKeyRef<Private>) -> Result<PKey<Public>, SignerError> {
    Ok(PKey::public_key_from_der(&key.public_key_to_der()?)?)
}

/// The critical name constraints of DESIGN §4: permitted IP subtrees = the policy's ranges,
/// and dNSName / rfc822Name subtrees under the reserved `.invalid` TLD, which no real name
/// satisfies.
#[allow(deprecated)] // X509Extension::new_nid: the only way to build nameConstraints here.
fn name_constraints(
    b: &X509Builder,
    permitted: &[IpNet],
    allow_cn_subjects: bool,
) -> Result<X509Extension, SignerError> {
    // Only text built from parsed `IpNet`s and constants reaches OpenSSL's config language.
    let mut parts = vec!["critical".to_owned()];
    for net in permitted {
        parts.push(format!("permitted;IP:{}/{}", net.network(), net.netmask()));
    }
    if !allow_cn_subjects {
        parts.push("permitted;DNS:nc.invalid".to_owned());
    }
    parts.push("permitted;email:nc.invalid".to_owned());
    let value = parts.join(",");
    Ok(X509Extension::new_nid(
        None,
        Some(&b.x509v3_context(None, None)),
        Nid::NAME_CONSTRAINTS,
        &value,
    )?)
}

/// The signature digest for a CA key (DESIGN §4): SHA-384 for P-384, SHA-256 otherwise.
pub fn digest_for<T: openssl::pkey::HasPublic>(key: &PKeyRef<T>) -> MessageDigest {
    match KeyType::of(key) {
        Some(KeyType::EcP384) => MessageDigest::sha384(),
        _ => MessageDigest::sha256(),
    }
}

fn subject(text: Option<&str>, default_cn: &str) -> Result<X509Name, SignerError> {
    let text = text.unwrap_or("");
    let mut b = X509NameBuilder::new()?;
    let mut any = false;
    for part in text
        .split([',', '/'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            SignerError::Subject(format!(
                "{part:?} is not KEY=VALUE: write e.g. \"CN=Example CA,O=Example\""
            ))
        })?;
        b.append_entry_by_text(k.trim(), v.trim()).map_err(|_| {
            SignerError::Subject(format!(
                "{k:?} is not a name attribute: use CN, O, OU, C, ST, L"
            ))
        })?;
        any = true;
    }
    if !any {
        b.append_entry_by_text("CN", default_cn)?;
    }
    Ok(b.build())
}

fn issuing_subject(text: Option<&str>) -> Result<X509Name, SignerError> {
    let root = subject(text, "smsgate-ca Root CA")?;
    let mut b = X509NameBuilder::new()?;
    for e in root.entries() {
        let val = e.data().to_string()?;
        if e.object().nid() == Nid::COMMONNAME {
            let base = val
                .strip_suffix(" Root CA")
                .or_else(|| val.strip_suffix(" Root"))
                .unwrap_or(&val);
            b.append_entry_by_nid(Nid::COMMONNAME, &format!("{base} Issuing CA"))?;
        } else {
            b.append_entry_by_nid(e.object().nid(), &val)?;
        }
    }
    Ok(b.build())
}

fn write_chain(state: &StatePaths, chain: &[X509]) -> Result<(), SignerError> {
    let mut pem = Vec::new();
    for c in chain {
        pem.extend(c.to_pem()?);
    }
    fsx::write_new(&state.chain(), &pem, fsx::MODE_PUBLIC).map_err(|e| io(&state.chain(), e))
}

fn is_ca(cert: &X509Ref) -> bool {
    use x509_parser::prelude::FromDer;
    let Ok(der) = cert.to_der() else { return false };
    let Ok((_, parsed)) = x509_parser::certificate::X509Certificate::from_der(&der) else {
        return false;
    };
    matches!(parsed.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

fn ip_mask_to_net(bytes: &[u8]) -> Option<IpNet> {
    match bytes.len() {
        8 => {
            let addr = IpAddr::from(<[u8; 4]>::try_from(&bytes[..4]).ok()?);
            let mask = u32::from_be_bytes(bytes[4..].try_into().ok()?);
            IpNet::new(addr, mask.leading_ones() as u8).ok()
        }
        32 => {
            let addr = IpAddr::from(<[u8; 16]>::try_from(&bytes[..16]).ok()?);
            let mask = u128::from_be_bytes(bytes[16..].try_into().ok()?);
            IpNet::new(addr, mask.leading_ones() as u8).ok()
        }
        _ => None,
    }
}

fn io(path: &Path, source: std::io::Error) -> SignerError {
    SignerError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    /// Loading the CA key makes the process undumpable (issue 6: no key in a core dump).
    #[test]
    fn loading_the_key_disables_core_dumps() {
        let (_dir, _ca) = crate::testkit::test_ca(&["10.0.0.0/8"]);
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
    }
}
