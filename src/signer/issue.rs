//! Issuing a leaf: "persist the serial, build what you plan to sign, sign once, check the
//! result equals the plan" (Boulder's issuance cycle).
//!
//! [`prepare`] turns an approved [`Plan`] and the CSR's public key into a [`Prepared`]
//! certificate description (serial chosen, validity fixed, checked against the CA's name
//! constraints). [`issue`] consumes it, builds every extension from the profile — nothing from
//! the CSR but its public key and the planned IP — signs, and re-parses the result to check it
//! is exactly the plan.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509Builder, X509Extension, X509NameBuilder, X509};

use super::ca::{self, Ca};
use super::serial::Serial;
use super::SignerError;
use crate::policy::range::RangeSet;
use crate::policy::Plan;

/// A certificate fully described and checked, waiting for its one signature.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The plan policy approved.
    pub plan: Plan,
    /// The serial (already recorded as an `intent` by the caller before signing).
    pub serial: Serial,
    /// notBefore.
    pub not_before: DateTime<Utc>,
    /// notAfter (never past the issuing CA's).
    pub not_after: DateTime<Utc>,
    /// The subject public key (DER SPKI from the CSR).
    pub public_key_der: Vec<u8>,
    /// The same key, decoded once (decoding is slow in OpenSSL 3.0).
    pub public_key: PKey<Public>,
    /// The subjectKeyIdentifier: SHA-1 of the subjectPublicKey bits (RFC 5280 §4.2.1.2).
    pub ski: [u8; 20],
}

/// A signed certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf.
    pub cert: X509,
    /// The leaf as PEM (what the ledger records).
    pub leaf_pem: String,
    /// Leaf PEM followed by the chain PEM (what `issued/<id>.crt` holds).
    pub chain_pem: String,
    /// Colon-separated SHA-256 fingerprint.
    pub fingerprint: String,
    /// The serial.
    pub serial: Serial,
    /// notBefore (the lint checked the certificate holds exactly this).
    pub not_before: DateTime<Utc>,
    /// notAfter.
    pub not_after: DateTime<Utc>,
}

/// Fixes serial and validity for a plan and checks it against the CA's name constraints.
pub fn prepare(
    ca: &Ca,
    plan: &Plan,
    public_key_der: &[u8],
    serial: Serial,
    now: DateTime<Utc>,
) -> Result<Prepared, SignerError> {
    if let Some(permitted) = &ca.facts.permitted {
        if !RangeSet::new(permitted).contains(plan.ip) {
            return Err(SignerError::OutsideNameConstraints(plan.ip));
        }
    }
    let not_before = now - chrono::Duration::seconds(i64::from(plan.backdate_seconds));
    let planned_end = not_before + chrono::Duration::days(i64::from(plan.validity_days));
    let ca_end = ca::not_after(&ca.cert);
    let not_after = planned_end.min(ca_end);
    if not_after <= now {
        return Err(SignerError::CaExpired(ca_end));
    }
    let public_key = decode_public_key(public_key_der)?;
    let ski = key_identifier(public_key_der)?;
    Ok(Prepared {
        public_key,
        ski,
        plan: plan.clone(),
        serial,
        not_before,
        not_after,
        public_key_der: public_key_der.to_vec(),
    })
}

/// Signs a prepared certificate once and checks the result is exactly the plan.
pub fn issue(ca: &Ca, prepared: Prepared) -> Result<Issued, SignerError> {
    super::lint::precheck(ca, &prepared, &ca.lint_key)?;
    let cert = build(ca, &prepared)?;
    super::lint::check_issued(&cert, ca, &prepared)?;
    let leaf_pem = String::from_utf8(cert.to_pem()?).expect("PEM is ASCII");
    let chain_pem = format!("{leaf_pem}{}", ca.facts.chain_pem);
    let fingerprint = ca::fingerprint(&cert)?;
    Ok(Issued {
        cert,
        leaf_pem,
        chain_pem,
        fingerprint,
        serial: prepared.serial,
        not_before: prepared.not_before,
        not_after: prepared.not_after,
    })
}

/// Builds and signs the certificate of a prepared plan with the CA key.
fn build(ca: &Ca, p: &Prepared) -> Result<X509, SignerError> {
    build_signed_by(ca, p, &ca.key)
}

/// Builds the certificate and signs it with `key` (the CA key, or a throwaway key for the
/// pre-issuance lint).
pub(super) fn build_signed_by(
    ca: &Ca,
    p: &Prepared,
    key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
) -> Result<X509, SignerError> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial: Asn1Integer = BigNum::from_slice(p.serial.as_bytes())?.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    let mut subject = X509NameBuilder::new()?;
    if p.plan.subject_cn {
        subject.append_entry_by_nid(Nid::COMMONNAME, &p.plan.ip.to_string())?;
    }
    b.set_subject_name(&subject.build())?;
    b.set_issuer_name(ca.cert.subject_name())?;
    b.set_pubkey(&p.public_key)?;
    let not_before = Asn1Time::from_unix(p.not_before.timestamp())?;
    let not_after = Asn1Time::from_unix(p.not_after.timestamp())?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    let mut ku = KeyUsage::new();
    ku.critical().digital_signature();
    if p.plan.key_type.is_rsa() {
        ku.key_encipherment();
    }
    b.append_extension(ku.build()?)?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    // SKI and AKI from DER: OpenSSL's builders re-encode the public key on every call.
    b.append_extension(der_extension("2.5.29.14", &octet_string(&p.ski))?)?;
    let ca_ski =
        ca.facts.ski.as_deref().ok_or_else(|| {
            SignerError::Lint("the issuing CA has no subjectKeyIdentifier".into())
        })?;
    if ca_ski.len() > 120 {
        return Err(SignerError::Lint(
            "the issuing CA's subjectKeyIdentifier is too long".into(),
        ));
    }
    b.append_extension(der_extension("2.5.29.35", &authority_key_id(ca_ski))?)?;
    let mut san = SubjectAlternativeName::new();
    // RFC 5280 §4.2.1.6: the SAN is critical when the subject is empty.
    if !p.plan.subject_cn {
        san.critical();
    }
    san.ip(&ip_text(p.plan.ip));
    b.append_extension(san.build(&b.x509v3_context(Some(&ca.cert), None))?)?;
    if let Some(url) = &p.plan.crl_url {
        b.append_extension(url_extension(
            &b,
            Nid::CRL_DISTRIBUTION_POINTS,
            &format!("URI:{url}"),
        )?)?;
    }
    if let Some(url) = &p.plan.ca_issuers_url {
        b.append_extension(url_extension(
            &b,
            Nid::INFO_ACCESS,
            &format!("caIssuers;URI:{url}"),
        )?)?;
    }
    // The throwaway lint key has the CA key's type, hence its digest.
    b.sign(key, ca.facts.digest)?;
    Ok(b.build())
}

/// Decodes a SubjectPublicKeyInfo: directly for EC and RSA (see
/// [`crate::key_type::public_key_from_spki`]), through OpenSSL's decoders otherwise.
fn decode_public_key(spki_der: &[u8]) -> Result<PKey<Public>, SignerError> {
    match crate::key_type::public_key_from_spki(spki_der) {
        Some(key) => Ok(key),
        None => Ok(PKey::public_key_from_der(spki_der)?),
    }
}

/// SHA-1 of the subjectPublicKey BIT STRING's bits (RFC 5280 §4.2.1.2, method 1).
fn key_identifier(spki_der: &[u8]) -> Result<[u8; 20], SignerError> {
    use x509_parser::prelude::FromDer;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| SignerError::Lint(format!("the public key does not parse: {e}")))?;
    let mut h = openssl::sha::Sha1::new();
    h.update(&spki.subject_public_key.data);
    Ok(h.finish())
}

/// A non-critical extension from its DER value.
fn der_extension(oid: &str, value: &[u8]) -> Result<X509Extension, SignerError> {
    let oid = openssl::asn1::Asn1Object::from_str(oid)?;
    let value = openssl::asn1::Asn1OctetString::new_from_bytes(value)?;
    Ok(X509Extension::new_from_der(&oid, false, &value)?)
}

/// DER `OCTET STRING` of a short value.
fn octet_string(bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![0x04, bytes.len() as u8];
    v.extend_from_slice(bytes);
    v
}

/// DER `AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING }`.
fn authority_key_id(key_id: &[u8]) -> Vec<u8> {
    let mut v = vec![0x30, (key_id.len() + 2) as u8, 0x80, key_id.len() as u8];
    v.extend_from_slice(key_id);
    v
}

/// CRL distribution point and AIA: no builder type exists; the URL was validated by policy
/// loading (http(s), printable ASCII, no commas) before it reaches OpenSSL's config language.
#[allow(deprecated)]
fn url_extension(b: &X509Builder, nid: Nid, value: &str) -> Result<X509Extension, SignerError> {
    Ok(X509Extension::new_nid(
        None,
        Some(&b.x509v3_context(None, None)),
        nid,
        value,
    )?)
}

fn ip_text(ip: IpAddr) -> String {
    ip.to_string()
}
