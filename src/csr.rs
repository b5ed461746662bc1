//! Parses a PKCS#10 CSR once, at the edge, into [`CsrFacts`]: the plain facts policy decides on
//! (key, signature, subject CN, requested names and extensions) plus the public key the signer
//! will certify.
//!
//! OpenSSL parses the request and checks its self-signature; `x509-parser` reads the requested
//! extensions, which the `openssl` crate cannot inspect. Nothing here decides anything: a CSR
//! that parses always yields facts, however bad they look. An extension whose value does not
//! parse is kept as such (`parsed = false`), so that policy can ignore it when it is not
//! critical (the upstream CLI's malformed extendedKeyUsage, DESIGN §3).

use std::net::IpAddr;

use openssl::pkey::{Id, PKey, Public};
use openssl::x509::X509Req;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// The facts of a parsed CSR.
#[derive(Clone, Debug)]
pub struct CsrFacts {
    /// The request's public key as DER SubjectPublicKeyInfo (the one thing the signer copies).
    pub public_key_der: Vec<u8>,
    /// What kind of key it is.
    pub key: KeyKind,
    /// Whether the CSR's self-signature verifies with its own key.
    pub signature_valid: bool,
    /// The digest of the CSR's signature.
    pub signature_digest: SignatureDigest,
    /// Every commonName in the subject, as text (usually none or one).
    pub common_names: Vec<String>,
    /// Whether a subjectAltName extension was requested at all.
    pub san_present: bool,
    /// The requested subjectAltName entries, in order.
    pub san: Vec<SanEntry>,
    /// Every requested extension other than subjectAltName.
    pub extensions: Vec<RequestedExtension>,
}

/// The kinds of public key a CSR may carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on NIST P-256.
    EcP256,
    /// ECDSA on NIST P-384.
    EcP384,
    /// RSA with the modulus size in bits.
    Rsa(u32),
    /// Anything else, named for a message (e.g. `DSA`, `EC secp256k1`, `Ed25519`).
    Other(String),
}

/// The digest of a CSR's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureDigest {
    /// MD5.
    Md5,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
    /// Anything else, by algorithm OID.
    Other(String),
}

impl SignatureDigest {
    /// The policy's name for the digest (`sha256`, …).
    pub fn name(&self) -> &str {
        match self {
            Self::Md5 => "md5",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
            Self::Other(oid) => oid,
        }
    }
}

/// One requested subjectAltName entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SanEntry {
    /// An iPAddress (4 or 16 octets).
    Ip(IpAddr),
    /// A dNSName.
    Dns(String),
    /// An rfc822Name.
    Email(String),
    /// A URI.
    Uri(String),
    /// Any other form, named for a message.
    Other(String),
}

/// One requested extension (subjectAltName excepted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedExtension {
    /// Dotted OID.
    pub oid: String,
    /// The critical flag as requested.
    pub critical: bool,
    /// Whether the value parsed (false for unknown OIDs too, see `known`).
    pub parsed: bool,
    /// Whether the OID is one `x509-parser` knows.
    pub known: bool,
    /// basicConstraints CA:TRUE or keyUsage keyCertSign/cRLSign: a request for CA powers.
    pub asks_ca_powers: bool,
}

/// Why bytes are not a CSR at all (reason `invalid_csr`).
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// Neither PEM nor DER PKCS#10.
    #[error("the content is not a PEM or DER certificate signing request (PKCS#10)")]
    NotCsr,
    /// OpenSSL parsed it but its structure could not be read further.
    #[error("the certificate signing request is malformed: {0}")]
    Malformed(String),
}

/// Parses PEM or DER bytes into facts. Does not judge them.
pub fn parse(bytes: &[u8]) -> Result<CsrFacts, CsrError> {
    let (der, key, signature_valid) = match direct(bytes) {
        Some(found) => found,
        None => through_openssl(bytes)?,
    };
    let (_, parsed) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    // The SPKI as it stands in the request (re-encoding it through OpenSSL 3.0 is slow).
    let spki = &parsed.certification_request_info.subject_pki;
    let public_key_der = spki.raw.to_vec();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string());

    let common_names = parsed
        .certification_request_info
        .subject
        .iter_common_name()
        .map(|cn| {
            cn.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|_| String::from_utf8_lossy(cn.as_slice()).into_owned())
        })
        .collect();

    let mut san_present = false;
    let mut san = Vec::new();
    let mut extensions = Vec::new();
    for attribute in parsed.certification_request_info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(request) = attribute.parsed_attribute() else {
            continue;
        };
        for ext in &request.extensions {
            let parsed_ext = ext.parsed_extension();
            if let ParsedExtension::SubjectAlternativeName(names) = parsed_ext {
                san_present = true;
                san.extend(names.general_names.iter().map(san_entry));
                continue;
            }
            if ext.oid == x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME {
                // A SAN that does not parse: present, but with nothing usable in it.
                san_present = true;
                san.push(SanEntry::Other("an unparseable subjectAltName".into()));
                continue;
            }
            extensions.push(RequestedExtension {
                oid: ext.oid.to_id_string(),
                critical: ext.critical,
                // x509-parser ignores bytes after the value's first TLV; such a value (the
                // upstream CLI's cut-short EKU) did not really parse.
                parsed: !parsed_ext.unsupported()
                    && parsed_ext.error().is_none()
                    && is_single_tlv(ext.value),
                known: !parsed_ext.unsupported(),
                asks_ca_powers: asks_ca_powers(parsed_ext),
            });
        }
    }

    Ok(CsrFacts {
        public_key_der,
        key: key_kind(&key, curve.as_deref()),
        signature_valid,
        signature_digest: digest_of(&parsed.signature_algorithm.algorithm.to_id_string()),
        common_names,
        san_present,
        san,
        extensions,
    })
}

/// The common case without OpenSSL's slow key decoders: a plain PEM or DER request with an
/// EC or RSA key and a PKCS#1 / ECDSA signature, verified over the exact request-info bytes.
/// `None` hands anything else to [`through_openssl`].
fn direct(bytes: &[u8]) -> Option<(Vec<u8>, PKey<Public>, bool)> {
    use openssl::hash::MessageDigest;
    let der = if looks_like_pem(bytes) {
        pem_body(bytes)?
    } else {
        bytes.to_vec()
    };
    let (rest, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&der).ok()?;
    if !rest.is_empty() || req.certification_request_info.version.0 != 0 {
        return None;
    }
    let md = match req.signature_algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.10045.4.3.2" | "1.2.840.113549.1.1.11" => MessageDigest::sha256(),
        "1.2.840.10045.4.3.3" | "1.2.840.113549.1.1.12" => MessageDigest::sha384(),
        "1.2.840.10045.4.3.4" | "1.2.840.113549.1.1.13" => MessageDigest::sha512(),
        "1.2.840.10045.4.1" | "1.2.840.113549.1.1.5" => MessageDigest::sha1(),
        _ => return None,
    };
    // The signature algorithm must fit the key (ECDSA OIDs for EC keys, RSA ones for RSA).
    let ecdsa = req
        .signature_algorithm
        .algorithm
        .to_id_string()
        .starts_with("1.2.840.10045.4");
    let key =
        crate::key_type::public_key_from_spki(req.certification_request_info.subject_pki.raw)?;
    if ecdsa != (key.id() == Id::EC) {
        return None;
    }
    let valid = {
        let mut verifier = openssl::sign::Verifier::new(md, &key).ok()?;
        verifier
            .verify_oneshot(
                &req.signature_value.data,
                req.certification_request_info.raw,
            )
            .unwrap_or(false)
    };
    drop(req);
    Some((der, key, valid))
}

/// The DER inside the first `CERTIFICATE REQUEST` PEM block; `None` when anything is unusual
/// (OpenSSL's PEM reader then decides).
fn pem_body(bytes: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (label, start) = ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"]
        .iter()
        .find_map(|l| {
            text.find(&format!("-----BEGIN {l}-----\n"))
                .map(|i| (*l, i))
        })?;
    let body_start = start + format!("-----BEGIN {label}-----\n").len();
    let end = text[body_start..].find(&format!("-----END {label}-----"))? + body_start;
    let body: String = text[body_start..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if body.contains(':') {
        return None; // PEM headers (encryption): not a plain request
    }
    openssl::base64::decode_block(&body).ok()
}

/// OpenSSL's own parser and verifier, for whatever [`direct`] does not handle.
fn through_openssl(bytes: &[u8]) -> Result<(Vec<u8>, PKey<Public>, bool), CsrError> {
    let req = if looks_like_pem(bytes) {
        X509Req::from_pem(bytes).map_err(|_| CsrError::NotCsr)?
    } else {
        X509Req::from_der(bytes).map_err(|_| CsrError::NotCsr)?
    };
    let der = req
        .to_der()
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    let key = req
        .public_key()
        .map_err(|e| CsrError::Malformed(format!("unreadable public key: {e}")))?;
    let valid = req.verify(&key).unwrap_or(false);
    Ok((der, key, valid))
}

/// Whether `value` is exactly one DER TLV (definite length, nothing after it).
fn is_single_tlv(value: &[u8]) -> bool {
    let Some(&first_len) = value.get(1) else {
        return false;
    };
    let (len, header) = if first_len < 0x80 {
        (usize::from(first_len), 2)
    } else {
        let n = usize::from(first_len & 0x7f);
        if n == 0 || n > 4 || value.len() < 2 + n {
            return false;
        }
        let len = value[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    header.checked_add(len) == Some(value.len())
}

/// Whether the bytes look like PEM text rather than DER.
fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

fn key_kind(key: &PKey<Public>, curve_oid: Option<&str>) -> KeyKind {
    match key.id() {
        Id::RSA => KeyKind::Rsa(key.bits()),
        // The curve from the SPKI's parameters: cheaper than exporting an EC_KEY.
        Id::EC => match curve_oid {
            Some("1.2.840.10045.3.1.7") => KeyKind::EcP256,
            Some("1.3.132.0.34") => KeyKind::EcP384,
            Some("1.3.132.0.10") => KeyKind::Other("EC secp256k1".into()),
            Some(oid) => KeyKind::Other(format!("EC curve {oid}")),
            None => KeyKind::Other("EC with explicit curve parameters".into()),
        },
        Id::DSA => KeyKind::Other("DSA".into()),
        Id::ED25519 => KeyKind::Other("Ed25519".into()),
        Id::ED448 => KeyKind::Other("Ed448".into()),
        Id::RSA_PSS => KeyKind::Other("RSA-PSS".into()),
        other => KeyKind::Other(format!("key type {}", other.as_raw())),
    }
}

fn digest_of(oid: &str) -> SignatureDigest {
    match oid {
        "1.2.840.113549.1.1.4" => SignatureDigest::Md5,
        "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" | "1.3.14.3.2.29" => SignatureDigest::Sha1,
        "1.2.840.113549.1.1.11" | "1.2.840.10045.4.3.2" => SignatureDigest::Sha256,
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => SignatureDigest::Sha384,
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => SignatureDigest::Sha512,
        other => SignatureDigest::Other(other.to_owned()),
    }
}

fn san_entry(name: &GeneralName<'_>) -> SanEntry {
    match name {
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => SanEntry::Ip(IpAddr::from(
                <[u8; 4]>::try_from(*bytes).expect("length checked"),
            )),
            16 => SanEntry::Ip(IpAddr::from(
                <[u8; 16]>::try_from(*bytes).expect("length checked"),
            )),
            n => SanEntry::Other(format!("an iPAddress of {n} bytes")),
        },
        GeneralName::DNSName(d) => SanEntry::Dns((*d).to_owned()),
        GeneralName::RFC822Name(e) => SanEntry::Email((*e).to_owned()),
        GeneralName::URI(u) => SanEntry::Uri((*u).to_owned()),
        other => SanEntry::Other(format!("{other:?}").chars().take(60).collect()),
    }
}

fn asks_ca_powers(ext: &ParsedExtension<'_>) -> bool {
    match ext {
        ParsedExtension::BasicConstraints(bc) => bc.ca,
        ParsedExtension::KeyUsage(ku) => ku.key_cert_sign() || ku.crl_sign(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The upstream CLI's extendedKeyUsage value: an OID cut short (DESIGN §3).
    pub(crate) const UPSTREAM_BAD_EKU: &[u8] = &[
        0x30, 0x06, 0x06, 0x04, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01,
    ];

    #[test]
    fn garbage_is_not_a_csr() {
        assert!(matches!(parse(b"hello"), Err(CsrError::NotCsr)));
        assert!(matches!(parse(b""), Err(CsrError::NotCsr)));
        assert!(matches!(
            parse(
                b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            ),
            Err(CsrError::NotCsr)
        ));
    }

    #[test]
    fn digests_are_named() {
        assert_eq!(digest_of("1.2.840.10045.4.3.2"), SignatureDigest::Sha256);
        assert_eq!(digest_of("1.2.840.113549.1.1.5"), SignatureDigest::Sha1);
        assert_eq!(digest_of("1.2.3").name(), "1.2.3");
    }

    #[test]
    fn the_upstream_eku_is_not_a_single_tlv() {
        assert_eq!(UPSTREAM_BAD_EKU.len(), 12);
        assert!(!is_single_tlv(UPSTREAM_BAD_EKU));
        assert!(is_single_tlv(&[0x30, 0x03, 0x01, 0x01, 0xff]));
        assert!(is_single_tlv(&[0x05, 0x00]));
        assert!(!is_single_tlv(&[0x05]));
        assert!(!is_single_tlv(&[0x30, 0x81]));
        let long: Vec<u8> = [0x04, 0x81, 0x80].into_iter().chain([0u8; 128]).collect();
        assert!(is_single_tlv(&long));
    }
}
