//! The leaf's TBSCertificate (RFC 5280 §4.1) in DER, written from a [`Prepared`] plan and the
//! CA's [`Template`]: everything of DESIGN §4's profile, nothing from the CSR but its public
//! key (copied byte for byte) and the planned IP.
//!
//! The parts that are the same for every leaf of a CA (signature algorithm, issuer name,
//! authorityKeyIdentifier, the fixed extensions) are encoded once, when the CA is loaded; a
//! request adds its serial, validity, subject, public key, subjectKeyIdentifier and SAN.
//! The bytes are written in exactly the form OpenSSL's `X509Builder` gives the same
//! certificate (a unit test compares them), and are then read back by the lint
//! ([`super::lint`]) before anything is signed.

use std::net::IpAddr;

use super::der;
use super::issue::Prepared;
use super::SignerError;

/// The per-CA constant parts of every leaf, encoded once.
#[derive(Clone, Debug)]
pub struct Template {
    /// The signature AlgorithmIdentifier (inside the TBS and outside it).
    pub algorithm: Vec<u8>,
    /// The issuer: the CA certificate's subject, byte for byte.
    issuer: Vec<u8>,
    /// basicConstraints critical CA:FALSE, keyUsage for EC keys, keyUsage for RSA keys,
    /// extendedKeyUsage serverAuth.
    basic_constraints: Vec<u8>,
    key_usage_ec: Vec<u8>,
    key_usage_rsa: Vec<u8>,
    extended_key_usage: Vec<u8>,
    /// authorityKeyIdentifier keyid = the CA's subjectKeyIdentifier (None: the CA has no
    /// SKI, and cannot issue).
    authority_key_id: Option<Vec<u8>>,
}

impl Template {
    /// The constant parts for a CA with this signature algorithm identifier, subject (DER) and
    /// subjectKeyIdentifier.
    pub fn new(algorithm: Vec<u8>, issuer: Vec<u8>, ca_ski: Option<&[u8]>) -> Self {
        // basicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, … }: CA:FALSE is empty.
        let basic_constraints = der::extension(OID_BASIC_CONSTRAINTS, true, &der::sequence(&[]));
        let key_usage = |bits: u8| der::extension(OID_KEY_USAGE, true, &der::named_bits(bits));
        // RFC 5280 §4.2.1.1: AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] … }
        let aki = ca_ski.map(|ski| der::sequence(&[der::context_primitive(0, ski)]));
        Self {
            algorithm,
            issuer,
            basic_constraints,
            key_usage_ec: key_usage(KU_DIGITAL_SIGNATURE),
            key_usage_rsa: key_usage(KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT),
            extended_key_usage: der::extension(
                OID_EXTENDED_KEY_USAGE,
                false,
                &der::sequence(&[der::oid(OID_SERVER_AUTH)]),
            ),
            authority_key_id: aki
                .map(|aki| der::extension(OID_AUTHORITY_KEY_IDENTIFIER, false, &aki)),
        }
    }
}

/// Encodes the TBSCertificate of a prepared plan:
///
/// ```text
/// TBSCertificate ::= SEQUENCE {
///   version [0] EXPLICIT Version (v3), serialNumber, signature AlgorithmIdentifier,
///   issuer Name, validity Validity, subject Name, subjectPublicKeyInfo,
///   extensions [3] EXPLICIT Extensions }
/// ```
///
/// Extensions, in this order: basicConstraints, keyUsage, extendedKeyUsage,
/// subjectKeyIdentifier, authorityKeyIdentifier, subjectAltName (critical exactly when the
/// subject is empty, RFC 5280 §4.2.1.6), then cRLDistributionPoints and authorityInfoAccess
/// when the plan has their URLs.
pub fn encode(t: &Template, p: &Prepared) -> Result<Vec<u8>, SignerError> {
    let authority_key_id = t
        .authority_key_id
        .as_deref()
        .ok_or_else(|| SignerError::Lint("the issuing CA has no subjectKeyIdentifier".into()))?;
    let time = |at: chrono::DateTime<chrono::Utc>| {
        der::time(at)
            .ok_or_else(|| SignerError::Lint(format!("{at} cannot be written as an X.509 time")))
    };
    let validity = der::sequence(&[time(p.not_before)?, time(p.not_after)?]);
    let subject = if p.plan.subject_cn {
        // Name ::= SEQUENCE OF SET OF AttributeTypeAndValue; CN as UTF8String.
        let atv = der::sequence(&[
            der::oid(OID_COMMON_NAME),
            der::utf8_string(&p.plan.ip.to_string()),
        ]);
        der::sequence(&[der::set_of_one(&atv)])
    } else {
        der::sequence(&[])
    };
    let mut extensions = Vec::with_capacity(512);
    extensions.extend_from_slice(&t.basic_constraints);
    extensions.extend_from_slice(if p.plan.key_type.is_rsa() {
        &t.key_usage_rsa
    } else {
        &t.key_usage_ec
    });
    extensions.extend_from_slice(&t.extended_key_usage);
    extensions.extend(der::extension(
        OID_SUBJECT_KEY_IDENTIFIER,
        false,
        &der::octet_string(&p.ski),
    ));
    extensions.extend_from_slice(authority_key_id);
    // GeneralName iPAddress [7] IMPLICIT OCTET STRING: 4 or 16 bytes.
    let ip: Vec<u8> = match p.plan.ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let san = der::sequence(&[der::context_primitive(7, &ip)]);
    extensions.extend(der::extension(
        OID_SUBJECT_ALT_NAME,
        !p.plan.subject_cn,
        &san,
    ));
    if let Some(url) = &p.plan.crl_url {
        // DistributionPoint { distributionPoint [0] { fullName [0] GeneralNames } }
        let uri = der::context_primitive(6, url.as_bytes());
        let point = der::sequence(&[der::context_constructed(
            0,
            &der::context_constructed(0, &uri),
        )]);
        extensions.extend(der::extension(
            OID_CRL_DISTRIBUTION_POINTS,
            false,
            &der::sequence(&[point]),
        ));
    }
    if let Some(url) = &p.plan.ca_issuers_url {
        // AccessDescription { accessMethod id-ad-caIssuers, accessLocation URI }
        let access = der::sequence(&[
            der::oid(OID_CA_ISSUERS),
            der::context_primitive(6, url.as_bytes()),
        ]);
        extensions.extend(der::extension(
            OID_AUTHORITY_INFO_ACCESS,
            false,
            &der::sequence(&[access]),
        ));
    }
    let mut out = Vec::with_capacity(768 + p.public_key_der.len());
    out.extend(der::context_constructed(0, &der::unsigned_integer(&[2])));
    out.extend(der::unsigned_integer(p.serial.as_bytes()));
    out.extend_from_slice(&t.algorithm);
    out.extend_from_slice(&t.issuer);
    out.extend(validity);
    out.extend(subject);
    out.extend_from_slice(&p.public_key_der);
    out.extend(der::context_constructed(
        3,
        &der::sequence_of_bytes(&extensions),
    ));
    Ok(der::sequence_of_bytes(&out))
}

/// keyUsage bits (RFC 5280 §4.2.1.3), as the first octet of the BIT STRING.
const KU_DIGITAL_SIGNATURE: u8 = 0x80;
const KU_KEY_ENCIPHERMENT: u8 = 0x20;

const OID_COMMON_NAME: &[u64] = &[2, 5, 4, 3];
const OID_SUBJECT_KEY_IDENTIFIER: &[u64] = &[2, 5, 29, 14];
const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const OID_CRL_DISTRIBUTION_POINTS: &[u64] = &[2, 5, 29, 31];
const OID_AUTHORITY_KEY_IDENTIFIER: &[u64] = &[2, 5, 29, 35];
const OID_EXTENDED_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
const OID_SERVER_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 1];
const OID_AUTHORITY_INFO_ACCESS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
const OID_CA_ISSUERS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 2];

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use chrono::{TimeZone, Utc};
    use openssl::asn1::{Asn1Integer, Asn1Time};
    use openssl::bn::BigNum;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::{
        BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    };
    use openssl::x509::{X509Builder, X509Extension, X509NameBuilder};
    use x509_parser::prelude::FromDer;

    use super::*;
    use crate::key_type::KeyType;
    use crate::policy::Plan;
    use crate::signer::ca::Ca;
    use crate::signer::serial::Serial;

    /// What OpenSSL's `X509Builder` makes of the same plan (the signer's encoder before issue
    /// 13): its TBSCertificate bytes.
    #[allow(deprecated)] // X509Extension::new_nid: the only way to build CRLDP and AIA here.
    fn openssl_tbs(ca: &Ca, p: &Prepared) -> Vec<u8> {
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let serial: Asn1Integer = BigNum::from_slice(p.serial.as_bytes())
            .unwrap()
            .to_asn1_integer()
            .unwrap();
        b.set_serial_number(&serial).unwrap();
        let mut subject = X509NameBuilder::new().unwrap();
        if p.plan.subject_cn {
            subject
                .append_entry_by_nid(Nid::COMMONNAME, &p.plan.ip.to_string())
                .unwrap();
        }
        b.set_subject_name(&subject.build()).unwrap();
        b.set_issuer_name(ca.cert.subject_name()).unwrap();
        b.set_pubkey(&PKey::public_key_from_der(&p.public_key_der).unwrap())
            .unwrap();
        b.set_not_before(&Asn1Time::from_unix(p.not_before.timestamp()).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(p.not_after.timestamp()).unwrap())
            .unwrap();
        b.append_extension(BasicConstraints::new().critical().build().unwrap())
            .unwrap();
        let mut ku = KeyUsage::new();
        ku.critical().digital_signature();
        if p.plan.key_type.is_rsa() {
            ku.key_encipherment();
        }
        b.append_extension(ku.build().unwrap()).unwrap();
        b.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
            .unwrap();
        let raw = |oid: &str, value: &[u8]| {
            X509Extension::new_from_der(
                &openssl::asn1::Asn1Object::from_str(oid).unwrap(),
                false,
                &openssl::asn1::Asn1OctetString::new_from_bytes(value).unwrap(),
            )
            .unwrap()
        };
        b.append_extension(raw("2.5.29.14", &der::octet_string(&p.ski)))
            .unwrap();
        let aki = der::sequence(&[der::context_primitive(0, ca.facts.ski.as_deref().unwrap())]);
        b.append_extension(raw("2.5.29.35", &aki)).unwrap();
        let mut san = SubjectAlternativeName::new();
        if !p.plan.subject_cn {
            san.critical();
        }
        san.ip(&p.plan.ip.to_string());
        let san = san.build(&b.x509v3_context(Some(&ca.cert), None)).unwrap();
        b.append_extension(san).unwrap();
        let ctx_ext = |b: &X509Builder, nid, value: &str| {
            X509Extension::new_nid(None, Some(&b.x509v3_context(None, None)), nid, value).unwrap()
        };
        if let Some(url) = &p.plan.crl_url {
            let e = ctx_ext(&b, Nid::CRL_DISTRIBUTION_POINTS, &format!("URI:{url}"));
            b.append_extension(e).unwrap();
        }
        if let Some(url) = &p.plan.ca_issuers_url {
            let e = ctx_ext(&b, Nid::INFO_ACCESS, &format!("caIssuers;URI:{url}"));
            b.append_extension(e).unwrap();
        }
        b.sign(
            ca.key.file_key().unwrap(),
            openssl::hash::MessageDigest::sha256(),
        )
        .unwrap();
        let der = b.build().to_der().unwrap();
        let (_, x) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
        x.tbs_certificate.as_ref().to_vec()
    }

    /// Our encoder writes byte for byte what OpenSSL's builder writes, for every variation of
    /// the profile: IPv4 and IPv6, empty subject or CN, EC and RSA keys, with and without the
    /// URL extensions, UTCTime and GeneralizedTime validity.
    #[test]
    fn tbs_is_what_openssl_builds() {
        let (_dir, ca) = crate::testkit::test_ca(&["10.0.0.0/8", "fd00::/8"]);
        let ec = KeyType::EcP256.generate().unwrap();
        let rsa = KeyType::Rsa2048.generate().unwrap();
        let times = [
            (
                Utc.with_ymd_and_hms(2026, 11, 28, 21, 59, 0).unwrap(),
                Utc.with_ymd_and_hms(2027, 11, 28, 21, 59, 0).unwrap(),
            ),
            (
                Utc.with_ymd_and_hms(2049, 6, 1, 0, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2050, 6, 1, 0, 0, 0).unwrap(),
            ),
        ];
        let mut n = 0;
        for ip in ["10.1.2.3", "fd00::1234"] {
            for subject_cn in [false, true] {
                for (key_type, key) in [(KeyType::EcP256, &ec), (KeyType::Rsa2048, &rsa)] {
                    for urls in [false, true] {
                        for (not_before, not_after) in times {
                            let plan = Plan {
                                ip: ip.parse::<IpAddr>().unwrap(),
                                profile: "webhook".into(),
                                serial_prefix: 1,
                                validity_days: 365,
                                backdate_seconds: 60,
                                subject_cn,
                                key_type,
                                crl_url: urls.then(|| "http://ca.example/ca.crl".into()),
                                ca_issuers_url: urls.then(|| "http://ca.example/ca.crt".into()),
                            };
                            let spki = key.public_key_to_der().unwrap();
                            let mut p = crate::signer::issue::prepare(
                                &ca,
                                &plan,
                                &spki,
                                Serial::random(1),
                                Utc::now(),
                            )
                            .unwrap();
                            p.not_before = not_before;
                            p.not_after = not_after;
                            let ours = encode(&ca.template, &p).unwrap();
                            assert_eq!(
                                ours,
                                openssl_tbs(&ca, &p),
                                "{ip} cn={subject_cn} {key_type} urls={urls} {not_after}"
                            );
                            n += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(n, 32);
    }
}
