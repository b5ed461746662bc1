//! Issuing a leaf: "persist the serial, build what you plan to sign, lint it, sign once, check
//! the result equals the plan" (Boulder's issuance cycle, `issuance/cert.go`).
//!
//! [`prepare`] turns an approved [`Plan`] and the CSR's public key into a [`Prepared`]
//! certificate description (serial chosen, validity fixed, checked against the CA's name
//! constraints). [`issue`] consumes it:
//! 1. build: the TBSCertificate bytes ([`super::tbs`]), every extension from the profile —
//!    nothing from the CSR but its public key and the planned IP;
//! 2. lint: an independent parse of exactly those bytes ([`super::lint::check_tbs`]);
//! 3. sign them once with the CA key ([`super::signing::SigningKey`]: a key file or a token);
//! 4. assemble the signed certificate;
//! 5. check it: its TBS bytes are the linted ones (Boulder's `tbsCertIsDeterministic`) and the
//!    one real signature verifies with OpenSSL against the CA certificate's public key
//!    ([`super::lint::check_issued`]).
//!
//! A throwaway signature adds nothing the lint reads, so there is none.

use chrono::{DateTime, Utc};

use super::ca::{self, Ca};
use super::serial::Serial;
use super::{der, tbs, SignerError};
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
    /// The subject public key (DER SPKI from the CSR, copied into the certificate as is).
    pub public_key_der: Vec<u8>,
    /// The subjectKeyIdentifier: SHA-1 of the subjectPublicKey bits (RFC 5280 §4.2.1.2).
    pub ski: [u8; 20],
}

/// A signed certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf, DER.
    pub der: Vec<u8>,
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
    let ca_end = ca.facts.not_after;
    let not_after = planned_end.min(ca_end);
    if not_after <= now {
        return Err(SignerError::CaExpired(ca_end));
    }
    let ski = key_identifier(public_key_der)?;
    Ok(Prepared {
        ski,
        plan: plan.clone(),
        serial,
        not_before,
        not_after,
        public_key_der: public_key_der.to_vec(),
    })
}

/// Builds, lints, signs once and checks a prepared certificate (the phases of the module
/// header).
pub fn issue(ca: &Ca, prepared: Prepared) -> Result<Issued, SignerError> {
    let tbs = tbs::encode(&ca.template, &prepared)?;
    super::lint::check_tbs(&tbs, ca, &prepared)?;
    let signature = ca.key.sign(&tbs)?;
    let der = der::signed(&tbs, &ca.template.algorithm, &signature);
    super::lint::check_issued(&der, &tbs, ca)?;
    let leaf_pem = pem("CERTIFICATE", &der);
    let chain_pem = format!("{leaf_pem}{}", ca.facts.chain_pem);
    let fingerprint = ca::fingerprint_der(&der);
    Ok(Issued {
        der,
        leaf_pem,
        chain_pem,
        fingerprint,
        serial: prepared.serial,
        not_before: prepared.not_before,
        not_after: prepared.not_after,
    })
}

/// PEM of DER bytes: `-----BEGIN <label>-----`, base64 in lines of 64, `-----END <label>-----`.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = openssl::base64::encode_block(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 32);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // Base64 output is ASCII, so splitting the bytes keeps valid UTF-8.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 output is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// SHA-1 of the subjectPublicKey BIT STRING's bits (RFC 5280 §4.2.1.2, method 1).
fn key_identifier(spki_der: &[u8]) -> Result<[u8; 20], SignerError> {
    use x509_parser::prelude::FromDer;
    let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| SignerError::Lint(format!("the public key does not parse: {e}")))?;
    if !rest.is_empty() {
        return Err(SignerError::Lint(
            "trailing bytes after the public key".into(),
        ));
    }
    let mut h = openssl::sha::Sha1::new();
    h.update(&spki.subject_public_key.data);
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_type::KeyType;
    use crate::signer::lint;

    fn plan(ip: &str) -> Plan {
        Plan {
            ip: ip.parse().unwrap(),
            profile: "webhook".into(),
            serial_prefix: 1,
            validity_days: 30,
            backdate_seconds: 60,
            subject_cn: false,
            key_type: KeyType::EcP256,
            crl_url: None,
            ca_issuers_url: None,
        }
    }

    /// The post-issuance check catches a certificate that is not exactly the linted TBS with
    /// the CA's own signature over it (issue 13: the checks stay as strict as before).
    #[test]
    fn the_issued_check_refuses_anything_but_the_linted_bytes_signed_by_the_ca() {
        let (_dir, ca) = crate::testkit::test_ca(&["10.0.0.0/8"]);
        let spki = KeyType::EcP256
            .generate()
            .unwrap()
            .public_key_to_der()
            .unwrap();
        let p = prepare(&ca, &plan("10.0.0.7"), &spki, Serial::random(1), Utc::now()).unwrap();
        let tbs = tbs::encode(&ca.template, &p).unwrap();
        lint::check_tbs(&tbs, &ca, &p).unwrap();
        let sig = ca.key.sign(&tbs).unwrap();
        let good = der::signed(&tbs, &ca.template.algorithm, &sig);
        lint::check_issued(&good, &tbs, &ca).unwrap();

        // Another TBS (another serial) under a valid signature: not the linted one.
        let q = Prepared {
            serial: Serial::random(1),
            ..p.clone()
        };
        let other_tbs = tbs::encode(&ca.template, &q).unwrap();
        let other = der::signed(
            &other_tbs,
            &ca.template.algorithm,
            &ca.key.sign(&other_tbs).unwrap(),
        );
        let e = lint::check_issued(&other, &tbs, &ca).unwrap_err();
        assert!(e.to_string().contains("not the one linted"), "{e}");

        // A signature by another key.
        let stranger = KeyType::EcP256.generate().unwrap();
        let mut s =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &stranger).unwrap();
        s.update(&tbs).unwrap();
        let forged = der::signed(&tbs, &ca.template.algorithm, &s.sign_to_vec().unwrap());
        let e = lint::check_issued(&forged, &tbs, &ca).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");

        // A signature damaged in one byte.
        let mut bad = sig.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let damaged = der::signed(&tbs, &ca.template.algorithm, &bad);
        assert!(lint::check_issued(&damaged, &tbs, &ca).is_err());

        // The lint reads the TBS itself: an IP other than the plan's is refused before signing.
        let wrong = Prepared {
            plan: plan("10.0.0.8"),
            ..p.clone()
        };
        let e = lint::check_tbs(&tbs::encode(&ca.template, &wrong).unwrap(), &ca, &p).unwrap_err();
        assert!(e.to_string().contains("subjectAltName"), "{e}");
    }
}
