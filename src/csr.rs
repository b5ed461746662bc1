//! Parses a PKCS#10 CSR once, at the edge, into [`CsrFacts`]: the plain facts policy decides on
//! (key, signature, subject CN, requested names and extensions) plus the public key the signer
//! will certify.
//!
//! OpenSSL parses the request and checks its self-signature; `x509-parser` reads the requested
//! extensions, which the `openssl` crate cannot inspect. Nothing here decides anything: a CSR
//! that parses always yields facts, however bad they look. An extension whose value does not
//! parse is kept as such (`parsed = false`), so that policy can ignore it when it is not
//! critical (the upstream CLI's malformed extendedKeyUsage, DESIGN §3).
//!
//! The public key's own material ([`KeyMaterial`]: the EC point's encoding, the RSA modulus and
//! exponent) is read from the request's bytes before OpenSSL sees the key, so that a point at
//! infinity, an off-curve or a compressed point still yields facts for policy to deny (such a
//! key's self-signature is not checked: `signature_valid` is false).

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
    /// The key's own material, for the checks that it is a real key (DESIGN §3).
    pub key_material: KeyMaterial,
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

/// What a public key is made of, as the request encodes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyMaterial {
    /// An EC point on a named curve, and how it is encoded.
    Ec(PointForm),
    /// An RSA key: modulus and public exponent, big-endian without sign.
    Rsa {
        /// n.
        modulus: Vec<u8>,
        /// e.
        exponent: Vec<u8>,
    },
    /// Any other algorithm (or an EC key on a curve this CA does not know).
    Other,
}

/// How an EC public point is encoded (SEC 1 §2.3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PointForm {
    /// `04 || x || y`, on the curve: the only form this CA signs.
    Uncompressed,
    /// `02/03 || x`: a valid encoding this CA does not sign (its certificates would carry
    /// another encoding of the key than the request).
    Compressed,
    /// The single byte `00`: the point at infinity, which is nobody's key.
    Infinity,
    /// Uncompressed coordinates that are not a point of the curve.
    OffCurve,
    /// Anything else (hybrid form, wrong length), described.
    Malformed(String),
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
    let read = plain_der(bytes).and_then(|der| material_of(&der));
    let (der, key_kind, signature_valid) = match read {
        // A key nobody can hold (or one OpenSSL would re-encode): no signature to check.
        Some((der, kind, KeyMaterial::Ec(form))) if form != PointForm::Uncompressed => {
            (der, kind, false)
        }
        read => match direct(bytes) {
            Some((der, key, valid)) => {
                let kind = match read {
                    Some((_, kind, _)) => kind,
                    None => key_kind(&key, curve_of(&der).as_deref()),
                };
                (der, kind, valid)
            }
            // OpenSSL would not build the key: an uncompressed point off its curve.
            None if matches!(&read, Some((der, _, KeyMaterial::Ec(_))) if off_curve(der)) => {
                let (der, kind, _) = read.expect("matched above");
                (der, kind, false)
            }
            None => {
                let (der, key, valid) = through_openssl(bytes)?;
                let curve = curve_of(&der);
                (der, key_kind(&key, curve.as_deref()), valid)
            }
        },
    };
    let (_, parsed) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    // The SPKI as it stands in the request (re-encoding it through OpenSSL 3.0 is slow).
    let spki = &parsed.certification_request_info.subject_pki;
    let public_key_der = spki.raw.to_vec();
    let mut key_material = key_material(spki);
    if key_material == KeyMaterial::Ec(PointForm::Uncompressed)
        && !signature_valid
        && off_curve(&der)
    {
        key_material = KeyMaterial::Ec(PointForm::OffCurve);
    }

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
        key: key_kind,
        key_material,
        signature_valid,
        signature_digest: digest_of(&parsed.signature_algorithm.algorithm.to_id_string()),
        common_names,
        san_present,
        san,
        extensions,
    })
}

/// The request's DER when the bytes are plain DER or one plain PEM block.
fn plain_der(bytes: &[u8]) -> Option<Vec<u8>> {
    if looks_like_pem(bytes) {
        pem_body(bytes)
    } else {
        Some(bytes.to_vec())
    }
}

/// Reads the key of a request from its DER without OpenSSL: the kind, by curve OID or
/// modulus size, and the material. `None` when the bytes are not a request.
fn material_of(der: &[u8]) -> Option<(Vec<u8>, KeyKind, KeyMaterial)> {
    let (rest, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let spki = &req.certification_request_info.subject_pki;
    let material = key_material(spki);
    let kind = match &material {
        KeyMaterial::Ec(_) => match curve_oid(spki).as_deref() {
            Some("1.2.840.10045.3.1.7") => KeyKind::EcP256,
            Some("1.3.132.0.34") => KeyKind::EcP384,
            _ => return None,
        },
        KeyMaterial::Rsa { modulus, .. } => KeyKind::Rsa(bit_length(modulus)),
        KeyMaterial::Other => return None,
    };
    Some((der.to_vec(), kind, material))
}

/// The key material of a SubjectPublicKeyInfo (see [`KeyMaterial`]).
fn key_material(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> KeyMaterial {
    use x509_parser::public_key::PublicKey;
    let algorithm = spki.algorithm.algorithm.to_id_string();
    match algorithm.as_str() {
        "1.2.840.10045.2.1" => {
            let field = match curve_oid(spki).as_deref() {
                Some("1.2.840.10045.3.1.7") => 32,
                Some("1.3.132.0.34") => 48,
                _ => return KeyMaterial::Other,
            };
            KeyMaterial::Ec(point_form(&spki.subject_public_key.data, field))
        }
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => KeyMaterial::Rsa {
                modulus: strip_zeros(rsa.modulus).to_vec(),
                exponent: strip_zeros(rsa.exponent).to_vec(),
            },
            _ => KeyMaterial::Other,
        },
        _ => KeyMaterial::Other,
    }
}

/// How an EC point of a curve with `field`-byte coordinates is encoded (by its bytes alone:
/// whether an uncompressed point lies on the curve is [`off_curve`]'s question, asked only
/// when OpenSSL refuses to build the key).
fn point_form(point: &[u8], field: usize) -> PointForm {
    match point.first() {
        None => PointForm::Malformed("the point is empty".into()),
        Some(0x00) if point.len() == 1 => PointForm::Infinity,
        Some(0x02 | 0x03) if point.len() == 1 + field => PointForm::Compressed,
        Some(0x04) if point.len() == 1 + 2 * field => PointForm::Uncompressed,
        Some(0x06 | 0x07) => PointForm::Malformed("the point is in hybrid form".into()),
        Some(b) => PointForm::Malformed(format!(
            "a {}-byte point starting with {b:#04x}",
            point.len()
        )),
    }
}

/// Whether the request's key is an uncompressed EC point that is not on its named curve.
fn off_curve(der: &[u8]) -> bool {
    let Ok((_, req)) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
    else {
        return false;
    };
    let spki = &req.certification_request_info.subject_pki;
    let nid = match curve_oid(spki).as_deref() {
        Some("1.2.840.10045.3.1.7") => openssl::nid::Nid::X9_62_PRIME256V1,
        Some("1.3.132.0.34") => openssl::nid::Nid::SECP384R1,
        _ => return false,
    };
    let point = &spki.subject_public_key.data;
    point.first() == Some(&0x04)
        && openssl::ec::EcGroup::from_curve_name(nid)
            .and_then(|group| {
                let mut ctx = openssl::bn::BigNumContext::new()?;
                // Decoding checks that the point satisfies the curve's equation.
                openssl::ec::EcPoint::from_bytes(&group, point, &mut ctx)
            })
            .is_err()
}

fn curve_oid(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Option<String> {
    spki.algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string())
}

fn curve_of(der: &[u8]) -> Option<String> {
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der).ok()?;
    curve_oid(&req.certification_request_info.subject_pki)
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[start..]
}

fn bit_length(b: &[u8]) -> u32 {
    let b = strip_zeros(b);
    match b.first() {
        None => 0,
        Some(first) => (b.len() as u32 - 1) * 8 + (8 - first.leading_zeros()),
    }
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
