//! Certificate lints: the RFC 5280 rules that matter for our profile, and "the certificate is
//! exactly the plan" (DESIGN §4). Run on a throwaway-key copy before the real signature and on
//! the real certificate after it (Boulder's "sign what you linted").
//!
//! Checks are made on an independent parse (`x509-parser`), not on what OpenSSL was told.

use std::collections::HashSet;
use std::net::IpAddr;

use openssl::x509::X509Ref;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::ca::Ca;
use super::issue::{build_signed_by, Prepared};
use super::SignerError;

/// Builds the planned certificate with a throwaway key of the CA's type and lints it, before
/// the CA key signs anything.
pub fn precheck(
    ca: &Ca,
    prepared: &Prepared,
    throwaway: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
) -> Result<(), SignerError> {
    let cert = build_signed_by(ca, prepared, throwaway)?;
    check(&cert, ca, prepared, false)
}

/// Checks a signed certificate against the plan, including the CA's signature.
pub fn check_issued(cert: &X509Ref, ca: &Ca, prepared: &Prepared) -> Result<(), SignerError> {
    check(cert, ca, prepared, true)
}

fn check(cert: &X509Ref, ca: &Ca, p: &Prepared, verify_signature: bool) -> Result<(), SignerError> {
    let fail = |m: String| Err(SignerError::Lint(m));
    let ca_public = ca.cert.public_key()?;
    if verify_signature && !cert.verify(&ca_public)? {
        return fail("the signature does not verify with the CA key".into());
    }
    let der = cert.to_der()?;
    let (rest, x) = x509_parser::certificate::X509Certificate::from_der(&der)
        .map_err(|e| SignerError::Lint(format!("the certificate does not parse: {e}")))?;
    if !rest.is_empty() {
        return fail("trailing bytes after the certificate".into());
    }
    if x.version() != x509_parser::x509::X509Version::V3 {
        return fail("not an X.509 v3 certificate".into());
    }
    let serial = x.raw_serial();
    // RFC 5280 §4.1.2.2: positive, at most 20 octets.
    if serial.len() > 20 || serial.first().is_some_and(|b| b & 0x80 != 0) {
        return fail(format!(
            "serial {} is not a positive integer of at most 20 octets",
            x.raw_serial_as_string()
        ));
    }
    if serial != p.serial.as_bytes() {
        return fail("the serial differs from the planned one".into());
    }
    if x.issuer().as_raw() != ca.facts.subject_der.as_slice() {
        return fail("the issuer differs from the CA's subject".into());
    }
    let nb = x.validity().not_before.timestamp();
    let na = x.validity().not_after.timestamp();
    if nb != p.not_before.timestamp() || na != p.not_after.timestamp() || nb >= na {
        return fail("the validity differs from the plan or is out of order".into());
    }
    if x.public_key().raw != p.public_key_der.as_slice() {
        return fail("the public key differs from the CSR's".into());
    }
    let cns: Vec<_> = x.subject().iter_common_name().collect();
    let subject_empty = x.subject().iter().next().is_none();
    if p.plan.subject_cn {
        let ok = cns.len() == 1
            && cns[0].as_str().ok() == Some(p.plan.ip.to_string().as_str())
            && x.subject().iter_attributes().count() == 1;
        if !ok {
            return fail("the subject is not exactly CN=<ip>".into());
        }
    } else if !subject_empty {
        return fail("the subject is not empty".into());
    }

    let mut seen = HashSet::new();
    let mut expected: HashSet<&str> = [OID_BC, OID_KU, OID_EKU, OID_SKI, OID_AKI, OID_SAN]
        .into_iter()
        .collect();
    if p.plan.crl_url.is_some() {
        expected.insert(OID_CRLDP);
    }
    if p.plan.ca_issuers_url.is_some() {
        expected.insert(OID_AIA);
    }
    let rsa = p.plan.key_type.is_rsa();
    let ca_ski = ca.facts.ski.clone();
    for ext in x.extensions() {
        let oid = ext.oid.to_id_string();
        if !seen.insert(oid.clone()) {
            return fail(format!("extension {oid} appears twice"));
        }
        if !expected.contains(oid.as_str()) {
            return fail(format!("unexpected extension {oid}"));
        }
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => {
                if !ext.critical || bc.ca || bc.path_len_constraint.is_some() {
                    return fail("basicConstraints must be critical CA:FALSE".into());
                }
            }
            ParsedExtension::KeyUsage(ku) => {
                let ok = ext.critical
                    && ku.digital_signature()
                    && ku.key_encipherment() == rsa
                    && !ku.key_cert_sign()
                    && !ku.crl_sign()
                    && !ku.non_repudiation()
                    && !ku.data_encipherment()
                    && !ku.key_agreement();
                if !ok {
                    return fail(
                        "keyUsage must be critical digitalSignature (+keyEncipherment for RSA)"
                            .into(),
                    );
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                let only_server = eku.server_auth
                    && !eku.any
                    && !eku.client_auth
                    && !eku.code_signing
                    && !eku.email_protection
                    && !eku.time_stamping
                    && !eku.ocsp_signing
                    && eku.other.is_empty();
                if ext.critical || !only_server {
                    return fail("extendedKeyUsage must be serverAuth only".into());
                }
            }
            ParsedExtension::SubjectKeyIdentifier(_) => {}
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                if aki.key_identifier.as_ref().map(|k| k.0.to_vec()) != ca_ski {
                    return fail(
                        "authorityKeyIdentifier does not match the CA's subjectKeyIdentifier"
                            .into(),
                    );
                }
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                // RFC 5280 §4.2.1.6: critical exactly when the subject is empty.
                if ext.critical != subject_empty {
                    return fail(
                        "subjectAltName must be critical exactly when the subject is empty".into(),
                    );
                }
                let names: Vec<Option<IpAddr>> = san
                    .general_names
                    .iter()
                    .map(|g| match g {
                        GeneralName::IPAddress(b) if b.len() == 4 => {
                            Some(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?))
                        }
                        GeneralName::IPAddress(b) if b.len() == 16 => {
                            Some(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?))
                        }
                        _ => None,
                    })
                    .collect();
                if names != [Some(p.plan.ip)] {
                    return fail(format!("subjectAltName is not exactly IP:{}", p.plan.ip));
                }
            }
            ParsedExtension::CRLDistributionPoints(_) | ParsedExtension::AuthorityInfoAccess(_) => {
            }
            other => {
                return fail(format!(
                    "extension {oid} did not parse as expected: {other:?}"
                ))
            }
        }
    }
    if seen.len() != expected.len() {
        let missing: Vec<_> = expected.iter().filter(|o| !seen.contains(**o)).collect();
        return fail(format!("missing extensions {missing:?}"));
    }
    Ok(())
}

const OID_BC: &str = "2.5.29.19";
const OID_KU: &str = "2.5.29.15";
const OID_EKU: &str = "2.5.29.37";
const OID_SKI: &str = "2.5.29.14";
const OID_AKI: &str = "2.5.29.35";
const OID_SAN: &str = "2.5.29.17";
const OID_CRLDP: &str = "2.5.29.31";
const OID_AIA: &str = "1.3.6.1.5.5.7.1.1";
