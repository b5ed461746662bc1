//! Certificate lints: the RFC 5280 rules that matter for our profile, and "the certificate is
//! exactly the plan" (DESIGN §4), run on the TBSCertificate bytes themselves before the one
//! real signature ([`check_tbs`]); then the signed certificate is checked to carry exactly
//! those bytes, and its signature is verified with OpenSSL against the CA certificate's public
//! key ([`check_issued`], Boulder's "sign what you linted" and `tbsCertIsDeterministic`).
//!
//! Checks are made on an independent parse (`x509-parser`), not on what the encoder was told.

use std::collections::HashSet;
use std::net::IpAddr;

use x509_parser::certificate::{TbsCertificate, X509Certificate};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::ca::Ca;
use super::issue::Prepared;
use super::SignerError;

/// Lints the TBSCertificate bytes of a plan, before the CA key signs them.
pub fn check_tbs(tbs: &[u8], ca: &Ca, prepared: &Prepared) -> Result<(), SignerError> {
    let (rest, x) = TbsCertificate::from_der(tbs)
        .map_err(|e| SignerError::Lint(format!("the certificate does not parse: {e}")))?;
    if !rest.is_empty() {
        return Err(SignerError::Lint(
            "trailing bytes after the certificate".into(),
        ));
    }
    let (_, algorithm) = x509_parser::x509::AlgorithmIdentifier::from_der(&ca.template.algorithm)
        .map_err(|e| {
        SignerError::Lint(format!("the CA's signature algorithm does not parse: {e}"))
    })?;
    if x.signature != algorithm {
        return Err(SignerError::Lint(
            "the signature algorithm differs from the CA key's".into(),
        ));
    }
    check(&x, ca, prepared)
}

/// Checks a signed certificate: it parses whole, its TBSCertificate is byte for byte the one
/// [`check_tbs`] linted, its outer signature algorithm equals the inner one, and OpenSSL
/// verifies its signature with the CA certificate's public key.
pub fn check_issued(cert: &[u8], linted_tbs: &[u8], ca: &Ca) -> Result<(), SignerError> {
    let fail = |m: &str| Err(SignerError::Lint(m.to_owned()));
    let (rest, x) = X509Certificate::from_der(cert)
        .map_err(|e| SignerError::Lint(format!("the signed certificate does not parse: {e}")))?;
    if !rest.is_empty() {
        return fail("trailing bytes after the signed certificate");
    }
    if x.tbs_certificate.as_ref() != linted_tbs {
        return fail("the signed certificate is not the one linted");
    }
    if x.signature_algorithm != x.tbs_certificate.signature {
        return fail("the outer signature algorithm differs from the inner one");
    }
    if x.signature_value.unused_bits != 0 {
        return fail("the signature BIT STRING has unused bits");
    }
    let ok = ca.key.verify(
        ca.key.algorithm().digest(),
        x.tbs_certificate.as_ref(),
        &x.signature_value.data,
    )?;
    if !ok {
        return fail("the signature does not verify with the CA certificate's key");
    }
    Ok(())
}

fn check(x: &TbsCertificate<'_>, ca: &Ca, p: &Prepared) -> Result<(), SignerError> {
    let fail = |m: String| Err(SignerError::Lint(m));
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
    if x.issuer_uid.is_some() || x.subject_uid.is_some() {
        return fail("unique identifiers are not allowed (RFC 5280 §4.1.2.8)".into());
    }
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
