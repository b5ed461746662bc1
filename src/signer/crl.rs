//! Certificate revocation lists: builds and signs an X.509 v2 CRL (RFC 5280 §5) for the issuing
//! CA, with a CRL Number, an Authority Key Identifier and a reasonCode extension on each entry.
//!
//! The `openssl` crate's `X509CrlBuilder` cannot set per-entry reason codes, so this module
//! hand-encodes the TBSCertList in DER (with [`super::der`]), signs those bytes once with the CA
//! key through [`SigningKey`] (a key file or a PKCS#11 token), and wraps them as a
//! CertificateList. Before
//! returning, the result is parsed back with OpenSSL and its signature checked against the CA
//! certificate (Boulder's "sign once, check the result").
//!
//! Invariants: the issuer is the CA certificate's subject, byte for byte; the inner and outer
//! signature algorithms are the same; `revokedCertificates` is absent when there are no entries
//! and `crlEntryExtensions` is absent when an entry has none (both are `SIZE (1..MAX)`);
//! `unspecified` is expressed by omitting the reasonCode (RFC 5280 §5.3.1 says it SHOULD be
//! absent rather than `unspecified`); `removeFromCRL` is refused, since it may only appear in
//! delta CRLs and this module builds complete CRLs only.
//!
//! This module decides nothing about *which* certificates are revoked (that is the ledger's
//! record) and writes nothing to disk.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use openssl::error::ErrorStack;
use openssl::x509::{X509Crl, X509Ref};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::der;
use super::signing::{SigningError, SigningKey};

/// Why a certificate was revoked: the CRLReason values of RFC 5280 §5.3.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RevocationReason {
    /// `unspecified` (0). Encoded by leaving the reasonCode extension out.
    Unspecified,
    /// `keyCompromise` (1).
    KeyCompromise,
    /// `cACompromise` (2).
    CaCompromise,
    /// `affiliationChanged` (3).
    AffiliationChanged,
    /// `superseded` (4).
    Superseded,
    /// `cessationOfOperation` (5).
    CessationOfOperation,
    /// `certificateHold` (6).
    CertificateHold,
    /// `removeFromCRL` (8). Only meaningful in delta CRLs; [`build_crl`] refuses it.
    RemoveFromCrl,
    /// `privilegeWithdrawn` (9).
    PrivilegeWithdrawn,
    /// `aACompromise` (10).
    AaCompromise,
}

impl RevocationReason {
    /// Every reason, in code order (7 is unused in RFC 5280).
    pub const ALL: [Self; 10] = [
        Self::Unspecified,
        Self::KeyCompromise,
        Self::CaCompromise,
        Self::AffiliationChanged,
        Self::Superseded,
        Self::CessationOfOperation,
        Self::CertificateHold,
        Self::RemoveFromCrl,
        Self::PrivilegeWithdrawn,
        Self::AaCompromise,
    ];

    /// The RFC 5280 name, as `revoke --reason` takes it and `list --json` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "keyCompromise",
            Self::CaCompromise => "cACompromise",
            Self::AffiliationChanged => "affiliationChanged",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessationOfOperation",
            Self::CertificateHold => "certificateHold",
            Self::RemoveFromCrl => "removeFromCRL",
            Self::PrivilegeWithdrawn => "privilegeWithdrawn",
            Self::AaCompromise => "aACompromise",
        }
    }

    /// The CRLReason ENUMERATED value.
    pub fn code(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::CaCompromise => 2,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
            Self::CertificateHold => 6,
            Self::RemoveFromCrl => 8,
            Self::PrivilegeWithdrawn => 9,
            Self::AaCompromise => 10,
        }
    }

    /// Parses an RFC 5280 name, ignoring ASCII case (`keyCompromise`, `KEYCOMPROMISE`, …).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A revocation reason name that is not one of RFC 5280's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown revocation reason {0:?}: use one of unspecified, keyCompromise, cACompromise, \
     affiliationChanged, superseded, cessationOfOperation, certificateHold, removeFromCRL, \
     privilegeWithdrawn, aACompromise"
)]
pub struct UnknownRevocationReason(pub String);

impl FromStr for RevocationReason {
    type Err = UnknownRevocationReason;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| UnknownRevocationReason(s.to_owned()))
    }
}

impl Serialize for RevocationReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RevocationReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One revoked certificate as it appears in the CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlEntry {
    /// The certificate's serial number, unsigned big-endian (leading zero bytes are allowed and
    /// dropped in the encoding). Must not be empty.
    pub serial: Vec<u8>,
    /// When it was revoked (revocationDate; sub-second precision is dropped).
    pub revoked_at: DateTime<Utc>,
    /// Why it was revoked.
    pub reason: RevocationReason,
}

/// Everything one CRL is made from.
#[derive(Clone, Copy)]
pub struct CrlParams<'a> {
    /// The issuing CA's certificate: its subject becomes the CRL issuer, its subject key id the
    /// CRL's authority key id.
    pub issuer_cert: &'a X509Ref,
    /// The issuing CA's key (ECDSA P-256, ECDSA P-384 or RSA; a key file or a token).
    pub issuer_key: &'a SigningKey,
    /// The CRL Number (RFC 5280 §5.2.3); the caller keeps it increasing.
    pub number: u64,
    /// thisUpdate.
    pub this_update: DateTime<Utc>,
    /// nextUpdate; must be after `this_update`.
    pub next_update: DateTime<Utc>,
    /// The revoked certificates, listed in this order.
    pub entries: &'a [CrlEntry],
}

/// Why a CRL could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// Two entries name the same serial number.
    #[error("serial {serial} is listed twice in the CRL")]
    DuplicateSerial {
        /// The serial, lowercase hex.
        serial: String,
    },
    /// An entry has an empty serial number.
    #[error("a CRL entry has an empty serial number")]
    EmptySerial,
    /// The private key is not the key of the CA certificate.
    #[error("the CA private key does not match the CA certificate's public key")]
    KeyMismatch,
    /// The CA certificate has no subjectKeyIdentifier, so the CRL cannot carry an AKI.
    #[error("the CA certificate has no subject key identifier; the CRL needs one for its AKI")]
    MissingSubjectKeyId,
    /// nextUpdate is not after thisUpdate.
    #[error("CRL nextUpdate {next_update} is not after thisUpdate {this_update}")]
    NextUpdateNotAfterThisUpdate {
        /// thisUpdate.
        this_update: DateTime<Utc>,
        /// nextUpdate.
        next_update: DateTime<Utc>,
    },
    /// OpenSSL failed while reading the CA or signing.
    #[error("OpenSSL error while building the CRL: {0}")]
    Openssl(#[from] ErrorStack),
    /// An entry uses `removeFromCRL`, which RFC 5280 §5.3.1 reserves for delta CRLs.
    #[error(
        "serial {serial} has reason removeFromCRL, which may only appear in delta CRLs; \
         leave the certificate out of the CRL instead"
    )]
    RemoveFromCrlInFullCrl {
        /// The serial, lowercase hex.
        serial: String,
    },
    /// The signed CRL did not verify against the CA certificate (should never happen).
    #[error("the signed CRL does not verify with the CA certificate's public key")]
    SelfCheckFailed,
    /// A time cannot be written as an X.509 time (year outside 0000–9999).
    #[error("time {0} cannot be encoded in a CRL (year outside 0000-9999)")]
    TimeOutOfRange(DateTime<Utc>),
    /// The CA key could not sign (a token away, an unsupported key type).
    #[error(transparent)]
    Signing(#[from] SigningError),
}

/// Builds and signs a complete CRL v2; returns it as DER.
pub fn build_crl(p: &CrlParams<'_>) -> Result<Vec<u8>, CrlError> {
    if p.next_update <= p.this_update {
        return Err(CrlError::NextUpdateNotAfterThisUpdate {
            this_update: p.this_update,
            next_update: p.next_update,
        });
    }
    let ca_public = p.issuer_cert.public_key()?;
    if !ca_public.public_eq(p.issuer_key.public_key()) {
        return Err(CrlError::KeyMismatch);
    }
    let algorithm = p.issuer_key.algorithm();
    let key_id = p
        .issuer_cert
        .subject_key_id()
        .ok_or(CrlError::MissingSubjectKeyId)?
        .as_slice()
        .to_vec();

    let tbs = tbs_cert_list(p, &algorithm.identifier(), &key_id)?;
    let signature = p.issuer_key.sign(&tbs)?;
    // CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue }
    let der = der::signed(&tbs, &algorithm.identifier(), &signature);

    // Check what we are about to hand out: OpenSSL must parse it and the CA must have signed it.
    let parsed = X509Crl::from_der(&der)?;
    if !parsed.verify(&ca_public)? {
        return Err(CrlError::SelfCheckFailed);
    }
    Ok(der)
}

/// Wraps DER CRL bytes as PEM (`-----BEGIN X509 CRL-----`, base64 in lines of 64).
pub fn der_to_pem(der: &[u8]) -> String {
    super::issue::pem("X509 CRL", der)
}

/// Encodes the TBSCertList (RFC 5280 §5.1):
///
/// ```text
/// TBSCertList ::= SEQUENCE {
///   version                 Version OPTIONAL, -- v2(1)
///   signature               AlgorithmIdentifier,
///   issuer                  Name,
///   thisUpdate              Time,
///   nextUpdate              Time OPTIONAL,
///   revokedCertificates     SEQUENCE OF SEQUENCE {
///        userCertificate         CertificateSerialNumber,
///        revocationDate          Time,
///        crlEntryExtensions      Extensions OPTIONAL } OPTIONAL,
///   crlExtensions           [0] EXPLICIT Extensions OPTIONAL }
/// ```
fn tbs_cert_list(p: &CrlParams<'_>, algorithm: &[u8], key_id: &[u8]) -> Result<Vec<u8>, CrlError> {
    let mut fields = vec![
        der::unsigned_integer(&[1]),
        algorithm.to_vec(),
        p.issuer_cert.subject_name().to_der()?,
        time(p.this_update)?,
        time(p.next_update)?,
    ];

    if !p.entries.is_empty() {
        let mut seen = HashSet::new();
        let mut revoked = Vec::with_capacity(p.entries.len());
        for entry in p.entries {
            revoked.push(revoked_certificate(entry, &mut seen)?);
        }
        fields.push(der::sequence(&revoked));
    }

    // RFC 5280 §5.2.1: AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT ... }
    let aki = der::sequence(&[der::context_primitive(0, key_id)]);
    let extensions = der::sequence(&[
        extension(OID_AUTHORITY_KEY_IDENTIFIER, &aki),
        // RFC 5280 §5.2.3: CRLNumber ::= INTEGER (0..MAX)
        extension(
            OID_CRL_NUMBER,
            &der::unsigned_integer(&p.number.to_be_bytes()),
        ),
    ]);
    fields.push(der::context_constructed(0, &extensions));
    Ok(der::sequence(&fields))
}

/// One element of revokedCertificates. `seen` holds the serials already listed, minimally
/// encoded, to refuse duplicates.
fn revoked_certificate(entry: &CrlEntry, seen: &mut HashSet<Vec<u8>>) -> Result<Vec<u8>, CrlError> {
    if entry.serial.is_empty() {
        return Err(CrlError::EmptySerial);
    }
    let serial = der::unsigned_integer(&entry.serial);
    if entry.reason == RevocationReason::RemoveFromCrl {
        return Err(CrlError::RemoveFromCrlInFullCrl {
            serial: hex(&entry.serial),
        });
    }
    if !seen.insert(serial.clone()) {
        return Err(CrlError::DuplicateSerial {
            serial: hex(&entry.serial),
        });
    }
    let mut fields = vec![serial, time(entry.revoked_at)?];
    // RFC 5280 §5.3.1: "the reason code CRL entry extension SHOULD be absent instead of using
    // the unspecified (0) reasonCode value". Extensions is SIZE (1..MAX), so with no reason
    // code the entry has no crlEntryExtensions at all.
    if entry.reason != RevocationReason::Unspecified {
        let reason = der::enumerated(entry.reason.code());
        fields.push(der::sequence(&[extension(OID_REASON_CODE, &reason)]));
    }
    Ok(der::sequence(&fields))
}

/// A non-critical Extension: `SEQUENCE { extnID, extnValue OCTET STRING }` (critical DEFAULT
/// FALSE is omitted, as DER requires).
fn extension(oid: &[u64], value: &[u8]) -> Vec<u8> {
    der::extension(oid, false, value)
}

/// An X.509 time, or why it cannot be one.
fn time(t: DateTime<Utc>) -> Result<Vec<u8>, CrlError> {
    der::time(t).ok_or(CrlError::TimeOutOfRange(t))
}

/// Lowercase hex without separators, as `list --json` prints serials.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// id-ce-authorityKeyIdentifier, 2.5.29.35 (RFC 5280 §4.2.1.1)
const OID_AUTHORITY_KEY_IDENTIFIER: &[u64] = &[2, 5, 29, 35];
/// id-ce-cRLNumber, 2.5.29.20 (RFC 5280 §5.2.3)
const OID_CRL_NUMBER: &[u64] = &[2, 5, 29, 20];
/// id-ce-cRLReasons, 2.5.29.21 (RFC 5280 §5.3.1)
const OID_REASON_CODE: &[u64] = &[2, 5, 29, 21];

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;
    use std::sync::OnceLock;

    use chrono::{Duration, TimeZone};
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::rsa::Rsa;
    use openssl::x509::extension::{
        AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier,
    };
    use openssl::x509::{CrlNumber, ReasonCode, X509Name, X509};
    use proptest::prelude::*;

    use super::*;

    /// A throwaway CA or leaf with its key.
    struct Pair {
        cert: X509,
        key: PKey<Private>,
        signing: SigningKey,
    }

    fn signing_key(cert: &X509, key: &PKey<Private>) -> SigningKey {
        SigningKey::file(key.clone(), cert.public_key().unwrap()).unwrap()
    }

    #[derive(Clone, Copy, Debug)]
    enum Kind {
        P256,
        P384,
        Rsa2048,
    }

    fn key(kind: Kind) -> PKey<Private> {
        let ec = |nid| {
            let group = EcGroup::from_curve_name(nid).unwrap();
            PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
        };
        match kind {
            Kind::P256 => ec(Nid::X9_62_PRIME256V1),
            Kind::P384 => ec(Nid::SECP384R1),
            Kind::Rsa2048 => PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
        }
    }

    fn name(cn: &str) -> X509Name {
        let mut n = X509Name::builder().unwrap();
        n.append_entry_by_text("CN", cn).unwrap();
        n.build()
    }

    /// A self-signed CA: basicConstraints CA, keyUsage keyCertSign+cRLSign, SKI (unless
    /// `with_ski` is false), AKI.
    fn make_ca(kind: Kind, with_ski: bool) -> Pair {
        let key = key(kind);
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let serial = BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
        b.set_serial_number(&serial).unwrap();
        let subject = name("smsgate-ca CRL test CA");
        b.set_subject_name(&subject).unwrap();
        b.set_issuer_name(&subject).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
        if with_ski {
            let ski = SubjectKeyIdentifier::new()
                .build(&b.x509v3_context(None, None))
                .unwrap();
            b.append_extension(ski).unwrap();
        }
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        Pair {
            signing: signing_key(&cert, &key),
            cert,
            key,
        }
    }

    /// A leaf with the given serial, signed by `ca`.
    fn make_leaf(ca: &Pair, serial: &[u8]) -> X509 {
        let key = key(Kind::P256);
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let serial = BigNum::from_slice(serial)
            .unwrap()
            .to_asn1_integer()
            .unwrap();
        b.set_serial_number(&serial).unwrap();
        b.set_subject_name(&name("10.1.2.3")).unwrap();
        b.set_issuer_name(ca.cert.subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(10).unwrap())
            .unwrap();
        b.append_extension(BasicConstraints::new().critical().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .build()
                .unwrap(),
        )
        .unwrap();
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&ca.cert), None))
            .unwrap();
        b.append_extension(aki).unwrap();
        b.sign(&ca.key, MessageDigest::sha256()).unwrap();
        b.build()
    }

    fn p256_ca() -> &'static Pair {
        static CA: OnceLock<Pair> = OnceLock::new();
        CA.get_or_init(|| make_ca(Kind::P256, true))
    }

    fn rsa_ca() -> &'static Pair {
        static CA: OnceLock<Pair> = OnceLock::new();
        CA.get_or_init(|| make_ca(Kind::Rsa2048, true))
    }

    fn params<'a>(ca: &'a Pair, number: u64, entries: &'a [CrlEntry]) -> CrlParams<'a> {
        let now = Utc::now();
        CrlParams {
            issuer_cert: &ca.cert,
            issuer_key: &ca.signing,
            number,
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(7),
            entries,
        }
    }

    fn entry(serial: &[u8], reason: RevocationReason) -> CrlEntry {
        CrlEntry {
            serial: serial.to_vec(),
            revoked_at: Utc.with_ymd_and_hms(2026, 11, 28, 22, 0, 0).unwrap(),
            reason,
        }
    }

    /// Parses with the openssl crate, checks the signature, CRL number and AKI, and returns
    /// (serial hex, reason code or None) per entry.
    fn check_with_crate(ca: &Pair, der: &[u8], number: u64) -> Vec<(String, Option<i64>)> {
        let crl = X509Crl::from_der(der).unwrap();
        assert!(crl.verify(&ca.cert.public_key().unwrap()).unwrap());
        assert_eq!(
            crl.issuer_name().to_der().unwrap(),
            ca.cert.subject_name().to_der().unwrap()
        );
        let (critical, n) = crl.extension::<CrlNumber>().unwrap().unwrap();
        assert!(!critical);
        assert_eq!(
            n.to_bn().unwrap(),
            BigNum::from_dec_str(&number.to_string()).unwrap()
        );
        assert!(crl.next_update().is_some());
        // Round trip: OpenSSL re-encodes exactly what we wrote (i.e. it was DER).
        assert_eq!(crl.to_der().unwrap(), der);
        crl.get_revoked()
            .map(|stack| {
                stack
                    .iter()
                    .map(|r| {
                        let serial = r.serial_number().to_bn().unwrap().to_hex_str().unwrap();
                        let reason = r
                            .extension::<ReasonCode>()
                            .unwrap()
                            .map(|(_, e)| e.get_i64().unwrap());
                        (serial.to_lowercase(), reason)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The independent second reader (x509-parser): checks the CRL number and the AKI, and
    /// returns (raw serial content octets, reason code) per entry.
    fn check_with_x509_parser(ca: &Pair, der: &[u8], number: u64) -> Vec<(Vec<u8>, Option<u8>)> {
        use x509_parser::extensions::ParsedExtension;
        let (rest, crl) = x509_parser::parse_x509_crl(der).unwrap();
        assert!(rest.is_empty());
        assert_eq!(crl.version().map(|v| v.0), Some(1));
        assert_eq!(
            crl.crl_number().map(|n| n.to_string()),
            Some(number.to_string())
        );
        let aki = crl
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.clone(),
                _ => None,
            })
            .unwrap();
        assert_eq!(aki.0, ca.cert.subject_key_id().unwrap().as_slice());
        crl.iter_revoked_certificates()
            .map(|r| (r.raw_serial().to_vec(), r.reason_code().map(|(_, c)| c.0)))
            .collect()
    }

    fn write(dir: &Path, file: &str, bytes: &[u8]) -> String {
        let path = dir.join(file);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// `openssl crl -inform DER -text -noout`, which must succeed.
    fn openssl_crl_text(der: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let crl = write(dir.path(), "crl.der", der);
        let out = Command::new("openssl")
            .args(["crl", "-inform", "DER", "-text", "-noout", "-in", &crl])
            .output()
            .expect("the openssl CLI is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `openssl verify -crl_check`; returns (success, stdout+stderr).
    fn openssl_verify(ca: &Pair, crl_der: &[u8], leaf: &X509) -> (bool, String) {
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = write(dir.path(), "ca.pem", &ca.cert.to_pem().unwrap());
        let crl_pem = write(dir.path(), "crl.pem", der_to_pem(crl_der).as_bytes());
        let leaf_pem = write(dir.path(), "leaf.pem", &leaf.to_pem().unwrap());
        let out = Command::new("openssl")
            .args([
                "verify",
                "-crl_check",
                "-CAfile",
                &ca_pem,
                "-CRLfile",
                &crl_pem,
            ])
            .arg(&leaf_pem)
            .output()
            .expect("the openssl CLI is installed");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    #[test]
    fn reason_names_codes_and_serde_round_trip() {
        let codes: Vec<u8> = RevocationReason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]);
        for r in RevocationReason::ALL {
            assert_eq!(RevocationReason::parse(r.as_str()), Some(r));
            assert_eq!(RevocationReason::parse(&r.as_str().to_uppercase()), Some(r));
            assert_eq!(r.to_string().parse::<RevocationReason>().unwrap(), r);
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(serde_json::from_str::<RevocationReason>(&json).unwrap(), r);
        }
        assert_eq!(RevocationReason::CaCompromise.as_str(), "cACompromise");
        assert_eq!(RevocationReason::RemoveFromCrl.as_str(), "removeFromCRL");
        assert_eq!(
            "keycompromise".parse::<RevocationReason>(),
            Ok(RevocationReason::KeyCompromise)
        );
        assert!(RevocationReason::parse("key-compromise").is_none());
        assert!(RevocationReason::parse("").is_none());
        assert!(serde_json::from_str::<RevocationReason>("\"stolen\"").is_err());
        let err = "stolen".parse::<RevocationReason>().unwrap_err();
        assert!(err.to_string().contains("keyCompromise"), "{err}");
    }

    #[test]
    fn der_integer_is_minimal_and_positive() {
        assert_eq!(der::unsigned_integer(&[]), [0x02, 0x01, 0x00]);
        assert_eq!(der::unsigned_integer(&[0, 0]), [0x02, 0x01, 0x00]);
        assert_eq!(der::unsigned_integer(&[0, 0, 1]), [0x02, 0x01, 0x01]);
        assert_eq!(der::unsigned_integer(&[0x7f]), [0x02, 0x01, 0x7f]);
        assert_eq!(der::unsigned_integer(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(
            der::unsigned_integer(&[0x00, 0xff, 0x01]),
            [0x02, 0x03, 0x00, 0xff, 0x01]
        );
        assert_eq!(
            der::unsigned_integer(&1u64.to_be_bytes()),
            [0x02, 0x01, 0x01]
        );
    }

    #[test]
    fn der_oids_and_lengths() {
        assert_eq!(
            der::oid(&[1, 2, 840, 10045, 4, 3, 2]),
            [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]
        );
        assert_eq!(
            der::oid(&[1, 2, 840, 113549, 1, 1, 11]),
            [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]
        );
        assert_eq!(der::oid(OID_REASON_CODE), [0x06, 0x03, 0x55, 0x1d, 0x15]);
        assert_eq!(der::tlv(0x04, &[0; 127])[..2], [0x04, 0x7f]);
        assert_eq!(der::tlv(0x04, &[0; 128])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(der::tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(der::tlv(0x04, &[0; 300]).len(), 304);
        assert_eq!(der::bit_string(&[0xab]), [0x03, 0x02, 0x00, 0xab]);
        assert_eq!(der::null(), [0x05, 0x00]);
        assert_eq!(der::enumerated(10), [0x0a, 0x01, 0x0a]);
    }

    #[test]
    fn der_time_is_utc_time_from_1950_to_2049_else_generalized() {
        let t = |y, mo, d, h, mi, s| Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap();
        assert_eq!(
            der::time(t(2049, 12, 31, 23, 59, 59)).unwrap()[2..],
            *b"491231235959Z"
        );
        assert_eq!(der::time(t(2049, 12, 31, 23, 59, 59)).unwrap()[0], 0x17);
        assert_eq!(
            der::time(t(1950, 1, 1, 0, 0, 0)).unwrap()[2..],
            *b"500101000000Z"
        );
        assert_eq!(
            der::time(t(2005, 3, 4, 5, 6, 7)).unwrap()[2..],
            *b"050304050607Z"
        );
        let g = der::time(t(2050, 1, 1, 0, 0, 0)).unwrap();
        assert_eq!((g[0], &g[2..]), (0x18, &b"20500101000000Z"[..]));
        let g = der::time(t(1949, 12, 31, 23, 59, 59)).unwrap();
        assert_eq!((g[0], &g[2..]), (0x18, &b"19491231235959Z"[..]));
        // Sub-seconds are dropped, not rounded.
        let frac = t(2030, 6, 1, 12, 0, 0) + Duration::milliseconds(999);
        assert_eq!(der::time(frac).unwrap()[2..], *b"300601120000Z");
        assert!(matches!(
            time(t(10000, 1, 1, 0, 0, 0)),
            Err(CrlError::TimeOutOfRange(_))
        ));
    }

    #[test]
    fn empty_crl_omits_revoked_certificates() {
        for ca in [p256_ca(), rsa_ca()] {
            let der = build_crl(&params(ca, 1, &[])).unwrap();
            assert!(check_with_crate(ca, &der, 1).is_empty());
            assert!(X509Crl::from_der(&der).unwrap().get_revoked().is_none());
            let text = openssl_crl_text(&der);
            assert!(text.contains("No Revoked Certificates."), "{text}");
            assert!(text.contains("X509v3 CRL Number"), "{text}");
            assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
        }
    }

    #[test]
    fn one_entry_crl_p256_and_rsa() {
        let entries = [entry(&[0x01, 0xf3, 0x80], RevocationReason::KeyCompromise)];
        for (ca, alg) in [
            (p256_ca(), "ecdsa-with-SHA256"),
            (rsa_ca(), "sha256WithRSAEncryption"),
        ] {
            let der = build_crl(&params(ca, 42, &entries)).unwrap();
            assert_eq!(
                check_with_crate(ca, &der, 42),
                [("01f380".to_owned(), Some(1))]
            );
            let text = openssl_crl_text(&der);
            assert!(text.contains("Version 2"), "{text}");
            assert!(text.contains(alg), "{text}");
            assert!(text.contains("X509v3 CRL Number"), "{text}");
            assert!(text.contains("42"), "{text}");
            assert!(text.contains("Serial Number: 01F380"), "{text}");
            assert!(text.contains("X509v3 CRL Reason Code"), "{text}");
            assert!(text.contains("Key Compromise"), "{text}");
            assert!(text.contains("Nov 28 22:00:00 2026 GMT"), "{text}");
        }
    }

    #[test]
    fn p384_ca_signs_with_ecdsa_sha384() {
        let ca = make_ca(Kind::P384, true);
        let entries = [entry(&[7], RevocationReason::Superseded)];
        let der = build_crl(&params(&ca, 3, &entries)).unwrap();
        assert_eq!(check_with_crate(&ca, &der, 3), [("07".to_owned(), Some(4))]);
        let text = openssl_crl_text(&der);
        assert!(text.contains("ecdsa-with-SHA384"), "{text}");
        assert!(text.contains("Superseded"), "{text}");
    }

    #[test]
    fn several_entries_keep_order_and_reasons() {
        let ca = p256_ca();
        let reasons: Vec<RevocationReason> = RevocationReason::ALL
            .into_iter()
            .filter(|r| *r != RevocationReason::RemoveFromCrl)
            .collect();
        let entries: Vec<CrlEntry> = reasons
            .iter()
            .enumerate()
            .map(|(i, r)| entry(&[0x80 | i as u8, 0xaa, i as u8], *r))
            .collect();
        let der = build_crl(&params(ca, u64::MAX, &entries)).unwrap();
        let got = check_with_crate(ca, &der, u64::MAX);
        let second = check_with_x509_parser(ca, &der, u64::MAX);
        assert_eq!(second.len(), entries.len());
        for ((raw, code), e) in second.iter().zip(&entries) {
            // The high bit is set, so DER needs one leading zero octet.
            assert_eq!(raw[0], 0);
            assert_eq!(raw[1..], e.serial[..]);
            let expected = (e.reason != RevocationReason::Unspecified).then_some(e.reason.code());
            assert_eq!(*code, expected);
        }
        assert_eq!(got.len(), entries.len());
        for ((serial, code), (i, r)) in got.iter().zip(reasons.iter().enumerate()) {
            assert_eq!(*serial, format!("{:02x}aa{:02x}", 0x80 | i, i));
            // unspecified is expressed by omitting the extension (RFC 5280 §5.3.1).
            let expected = (*r != RevocationReason::Unspecified).then_some(i64::from(r.code()));
            assert_eq!(*code, expected, "{r}");
        }
        let text = openssl_crl_text(&der);
        for e in &entries {
            let serial = hex(&e.serial).to_uppercase();
            assert!(text.contains(&format!("Serial Number: {serial}")), "{text}");
        }
        for shown in [
            "Key Compromise",
            "CA Compromise",
            "Affiliation Changed",
            "Superseded",
            "Cessation Of Operation",
            "Certificate Hold",
            "Privilege Withdrawn",
            "AA Compromise",
        ] {
            assert!(text.contains(shown), "{shown} missing from\n{text}");
        }
        assert!(!text.contains("Unspecified"), "{text}");
        assert_eq!(
            text.matches("X509v3 CRL Reason Code").count(),
            reasons.len() - 1
        );
        assert!(text.contains("18446744073709551615"), "{text}");
    }

    #[test]
    fn openssl_verify_rejects_revoked_leaf_and_accepts_others() {
        for ca in [p256_ca(), rsa_ca()] {
            let revoked_serial = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
            let revoked = make_leaf(ca, &revoked_serial);
            let fine = make_leaf(ca, &[0x02, 0x99]);
            let entries = [
                entry(&[0x05], RevocationReason::Unspecified),
                entry(&revoked_serial, RevocationReason::KeyCompromise),
            ];
            let der = build_crl(&params(ca, 7, &entries)).unwrap();

            let (ok, out) = openssl_verify(ca, &der, &revoked);
            assert!(!ok, "{out}");
            assert!(out.contains("certificate revoked"), "{out}");

            let (ok, out) = openssl_verify(ca, &der, &fine);
            assert!(ok, "{out}");
            assert!(out.contains(": OK"), "{out}");

            // An empty CRL revokes nothing.
            let empty = build_crl(&params(ca, 8, &[])).unwrap();
            let (ok, out) = openssl_verify(ca, &empty, &revoked);
            assert!(ok, "{out}");
        }
    }

    #[test]
    fn pem_wraps_base64_at_64_columns() {
        let ca = p256_ca();
        let entries: Vec<CrlEntry> = (1..=5u8)
            .map(|i| entry(&[i; 16], RevocationReason::CessationOfOperation))
            .collect();
        let der = build_crl(&params(ca, 9, &entries)).unwrap();
        let pem = der_to_pem(&der);
        assert!(pem.starts_with("-----BEGIN X509 CRL-----\n"));
        assert!(pem.ends_with("\n-----END X509 CRL-----\n"));
        let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(body.len() > 1);
        assert!(body[..body.len() - 1].iter().all(|l| l.len() == 64));
        assert!(body.last().is_some_and(|l| !l.is_empty() && l.len() <= 64));
        let parsed = X509Crl::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(parsed.to_der().unwrap(), der);
    }

    #[test]
    fn refuses_bad_params() {
        let ca = p256_ca();
        let mut p = params(ca, 1, &[]);
        p.next_update = p.this_update;
        assert!(matches!(
            build_crl(&p),
            Err(CrlError::NextUpdateNotAfterThisUpdate { .. })
        ));

        let no_ski = make_ca(Kind::P256, false);
        assert!(matches!(
            build_crl(&params(&no_ski, 1, &[])),
            Err(CrlError::MissingSubjectKeyId)
        ));

        let mut p = params(ca, 1, &[]);
        p.issuer_key = &rsa_ca().signing;
        assert!(matches!(build_crl(&p), Err(CrlError::KeyMismatch)));

        let dup = [
            entry(&[0x01, 0x02], RevocationReason::KeyCompromise),
            entry(&[0x00, 0x01, 0x02], RevocationReason::Superseded),
        ];
        match build_crl(&params(ca, 1, &dup)) {
            Err(CrlError::DuplicateSerial { serial }) => assert_eq!(serial, "000102"),
            other => panic!("expected DuplicateSerial, got {other:?}"),
        }

        let empty = [entry(&[], RevocationReason::KeyCompromise)];
        assert!(matches!(
            build_crl(&params(ca, 1, &empty)),
            Err(CrlError::EmptySerial)
        ));

        let remove = [entry(&[9], RevocationReason::RemoveFromCrl)];
        assert!(matches!(
            build_crl(&params(ca, 1, &remove)),
            Err(CrlError::RemoveFromCrlInFullCrl { .. })
        ));
    }

    #[test]
    fn refuses_unsupported_ca_key() {
        let key = PKey::generate_ed25519().unwrap();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name("ed25519 CA")).unwrap();
        b.set_issuer_name(&name("ed25519 CA")).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(ski).unwrap();
        b.sign(&key, MessageDigest::null()).unwrap();
        let cert = b.build();
        // The signing key refuses it before any CRL is built.
        assert!(matches!(
            SigningKey::file(key, cert.public_key().unwrap()),
            Err(SigningError::UnsupportedKey(_))
        ));
    }

    /// Reasons allowed in a complete CRL.
    fn full_crl_reason() -> impl Strategy<Value = RevocationReason> {
        prop::sample::select(
            RevocationReason::ALL
                .into_iter()
                .filter(|r| *r != RevocationReason::RemoveFromCrl)
                .collect::<Vec<_>>(),
        )
    }

    fn any_entry() -> impl Strategy<Value = CrlEntry> {
        (
            prop::collection::vec(any::<u8>(), 1..=24),
            // 0000-01-01 through 9999-12-31: both UTCTime and GeneralizedTime.
            -62_167_219_200i64..=253_402_300_799,
            0u32..1_000_000_000,
            full_crl_reason(),
        )
            .prop_map(|(serial, secs, nanos, reason)| CrlEntry {
                serial,
                revoked_at: DateTime::from_timestamp(secs, nanos).unwrap(),
                reason,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn random_entry_lists_parse_and_verify(
            entries in prop::collection::vec(any_entry(), 0..24),
            number in any::<u64>(),
            rsa in any::<bool>(),
        ) {
            // Serials equal up to leading zeros are duplicates: keep the first.
            let mut seen = HashSet::new();
            let entries: Vec<CrlEntry> = entries
                .into_iter()
                .filter(|e| seen.insert(der::unsigned_integer(&e.serial)))
                .collect();
            let ca = if rsa { rsa_ca() } else { p256_ca() };
            let der = build_crl(&params(ca, number, &entries)).unwrap();
            let got = check_with_crate(ca, &der, number);
            prop_assert_eq!(got.len(), entries.len());
            let second = check_with_x509_parser(ca, &der, number);
            prop_assert_eq!(second.len(), entries.len());
            for ((_, code), e) in second.iter().zip(&entries) {
                let want = (e.reason != RevocationReason::Unspecified).then_some(e.reason.code());
                prop_assert_eq!(*code, want);
            }
            for ((serial, code), e) in got.iter().zip(&entries) {
                let expected = BigNum::from_slice(&e.serial).unwrap().to_hex_str().unwrap();
                prop_assert_eq!(serial, &expected.to_lowercase());
                let want = (e.reason != RevocationReason::Unspecified)
                    .then_some(i64::from(e.reason.code()));
                prop_assert_eq!(*code, want);
            }
            let crl = X509Crl::from_der(&der).unwrap();
            if let Some(revoked) = crl.get_revoked() {
                for (r, e) in revoked.iter().zip(&entries) {
                    let want = Asn1Time::from_unix(e.revoked_at.timestamp()).unwrap();
                    prop_assert!(
                        r.revocation_date() == want,
                        "{} != {}",
                        r.revocation_date(),
                        e.revoked_at
                    );
                }
            }
        }
    }
}
