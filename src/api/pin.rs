//! The CA that `serve` is pinned to (`--ca-chain FILE`, DESIGN §5): the chain it publishes,
//! issuing CA first and root last, read once at start. Neither the sync token nor the spool
//! is trusted with the CA's name: every certificate, CA chain, CRL and ledger checkpoint
//! pushed through the sync routes is checked against this pin before it is stored.
//!
//! - a pushed `approved` result must chain to the pinned root, be valid now and carry exactly
//!   the stored CSR's public key and IP ([`PinnedCa::check_result`]);
//! - a pushed `ca.crt` must be the pinned chain, or a new issuing CA signed by the pinned root
//!   ending in that same root ([`PinnedCa::check_chain_upload`]);
//! - a pushed CRL must be signed by the current issuing CA and its CRLNumber must not go
//!   backwards ([`check_crl`]); a checkpoint must be a ledger checkpoint line signed by the
//!   current issuing CA whose line number does not go backwards ([`check_checkpoint`]).
//!
//! Only public certificates are read here; `serve` never holds a CA key.

use std::path::Path;

use openssl::bn::BigNum;
use openssl::x509::{CrlNumber, X509Crl, X509Ref, X509};

use crate::client::verify::{self, Anchors, Checked, Expect, LeafError};
use crate::request::StatusRecord;

/// The pinned CA.
#[derive(Clone, Debug)]
pub struct PinnedCa {
    /// The chain as pinned: issuing CA first, root last.
    pub chain: Vec<X509>,
    anchors: Anchors,
}

/// Why an upload was refused: a stable code (for logs and metrics) and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Short code, e.g. `untrusted`, `crl_number_rollback`.
    pub code: &'static str,
    /// What is wrong, in plain words.
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<LeafError> for Refusal {
    fn from(e: LeafError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl PinnedCa {
    /// Reads `--ca-chain`: PEM certificates, issuing CA first, ending in a self-signed root
    /// that every other certificate chains to.
    pub fn load(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read --ca-chain {shown}: {e}"))?;
        let text =
            String::from_utf8(pem).map_err(|_| format!("--ca-chain {shown} is not PEM text"))?;
        let chain = verify::parse_blocks(&text)
            .map_err(|e| format!("--ca-chain {shown}: {e} (use the signer's published/ca.crt)"))?;
        Self::from_chain(chain).map_err(|e| format!("--ca-chain {shown}: {e}"))
    }

    /// The pin of a parsed chain (issuing CA first, root last).
    pub fn from_chain(chain: Vec<X509>) -> Result<Self, String> {
        let root = chain.last().ok_or("it holds no certificate")?;
        if !verify::is_self_signed(root) {
            return Err(
                "its last certificate is not a self-signed root: give the whole chain \
                        up to the root (the signer's published/ca.crt)"
                    .to_owned(),
            );
        }
        let anchors = Anchors {
            roots: vec![root.clone()],
            intermediates: chain[..chain.len() - 1].to_vec(),
            partial: false,
        };
        for c in &chain[..chain.len() - 1] {
            verify::verify_path(c, &[], &anchors)
                .map_err(|e| format!("its certificates do not chain to its root: {e}"))?;
        }
        Ok(Self { chain, anchors })
    }

    /// The pinned root.
    pub fn root(&self) -> &X509Ref {
        self.chain.last().expect("a pinned chain has a root")
    }

    /// The issuing CA of `published` (the last accepted `ca.crt`), else the pinned one.
    pub fn issuer(&self, published: Option<&[u8]>) -> X509 {
        published
            .and_then(|p| X509::stack_from_pem(p).ok())
            .and_then(|c| c.into_iter().next())
            .unwrap_or_else(|| self.chain[0].clone())
    }

    /// Checks an `approved` record against the stored CSR (PEM); returns the record with its
    /// certificate re-encoded (PEM blocks only). Other records pass unchanged.
    pub fn check_result(
        &self,
        record: StatusRecord,
        csr_pem: &str,
        published_chain: Option<&[u8]>,
    ) -> Result<StatusRecord, Refusal> {
        use crate::request::Status;
        if record.status != Status::Approved {
            if record.certificate.is_some() {
                return Err(Refusal::new(
                    "certificate_not_approved",
                    "a result that is not approved carries a certificate",
                ));
            }
            return Ok(record);
        }
        let Some(certificate) = record.certificate.as_deref() else {
            return Err(Refusal::new(
                "no_certificate",
                "an approved result carries no certificate",
            ));
        };
        let facts = crate::csr::parse(csr_pem.as_bytes()).map_err(|e| {
            Refusal::new("stored_csr", format!("the stored CSR is unreadable: {e}"))
        })?;
        let ip = verify::requested_ip(&facts).ok_or_else(|| {
            Refusal::new(
                "stored_csr",
                "the stored CSR does not ask for one IP address",
            )
        })?;
        let mut anchors = self.anchors.clone();
        if let Some(extra) = published_chain.and_then(|p| X509::stack_from_pem(p).ok()) {
            anchors.intermediates.extend(extra);
        }
        let Checked { leaf, chain_pem } = verify::check_chain(
            certificate,
            &anchors,
            Expect {
                public_key_der: &facts.public_key_der,
                ip,
            },
        )?;
        if let Some(serial) = &record.serial {
            let actual = crate::proof::serial_of(&leaf).map(|s| s.to_hex());
            if actual.as_deref() != Some(serial.as_str()) {
                return Err(Refusal::new(
                    "serial_mismatch",
                    "the record's serial is not the certificate's",
                ));
            }
        }
        Ok(StatusRecord {
            certificate: Some(chain_pem),
            ..record
        })
    }

    /// Whether `cert` was issued by this CA: it chains to the pinned root through the pinned
    /// or published intermediates (and is valid now).
    pub fn check_issued(
        &self,
        cert: &X509Ref,
        published_chain: Option<&[u8]>,
    ) -> Result<(), LeafError> {
        let mut anchors = self.anchors.clone();
        if let Some(extra) = published_chain.and_then(|p| X509::stack_from_pem(p).ok()) {
            anchors.intermediates.extend(extra);
        }
        verify::verify_path(cert, &[], &anchors)
    }

    /// Checks a pushed `ca.crt`: the pinned chain, or a new issuing CA (and intermediates)
    /// signed by the pinned root and ending in it.
    pub fn check_chain_upload(&self, body: &[u8]) -> Result<(), Refusal> {
        let text = std::str::from_utf8(body)
            .map_err(|_| Refusal::new("not_pem", "ca.crt is not PEM text"))?;
        let chain =
            verify::parse_blocks(text).map_err(|e| Refusal::new("not_pem", e.to_string()))?;
        if !text.trim_start().starts_with("-----BEGIN CERTIFICATE-----") {
            return Err(Refusal::new(
                "not_pem",
                "ca.crt has text before its first certificate",
            ));
        }
        let der = |c: &X509| c.to_der().unwrap_or_default();
        let root_der = der(&self.chain[self.chain.len() - 1]);
        if chain.last().map(der) != Some(root_der) {
            return Err(Refusal::new(
                "foreign_root",
                "ca.crt does not end in the pinned root (--ca-chain)",
            ));
        }
        let anchors = Anchors {
            roots: vec![self.root().to_owned()],
            intermediates: chain[..chain.len() - 1].to_vec(),
            partial: false,
        };
        for c in &chain[..chain.len() - 1] {
            verify::verify_path(c, &[], &anchors).map_err(|e| {
                Refusal::new(
                    "untrusted",
                    format!("ca.crt holds a certificate the pinned root did not sign: {e}"),
                )
            })?;
        }
        Ok(())
    }
}

/// Checks a pushed CRL (DER) against the issuing CA and the CRL stored before; returns its
/// CRLNumber.
pub fn check_crl(der: &[u8], issuer: &X509Ref, previous: Option<&[u8]>) -> Result<(), Refusal> {
    let crl = X509Crl::from_der(der).map_err(|_| {
        Refusal::new(
            "not_crl",
            "ca.crl must be a DER CRL (the signer's published/ca.crl)",
        )
    })?;
    if !signed_by(&crl, issuer) {
        return Err(Refusal::new(
            "crl_untrusted",
            "ca.crl is not signed by the issuing CA",
        ));
    }
    let number =
        crl_number(&crl).ok_or_else(|| Refusal::new("crl_number", "ca.crl has no CRLNumber"))?;
    // CRL numbers count per issuer: after the issuing CA is rotated, the new CA starts again,
    // so only a stored CRL of this same issuer can make a lower number a rollback.
    if let Some(old) = previous
        .and_then(|p| X509Crl::from_der(p).ok())
        .filter(|c| signed_by(c, issuer))
        .and_then(|c| crl_number(&c))
    {
        if number < old {
            return Err(Refusal::new(
                "crl_number_rollback",
                format!("ca.crl has CRLNumber {number}, lower than the current {old}"),
            ));
        }
    }
    Ok(())
}

/// Checks a pushed ledger checkpoint: one ledger line of kind `checkpoint` (its own hash
/// intact), signed by the issuing CA, at a line not before the stored one.
pub fn check_checkpoint(
    body: &[u8],
    issuer: &X509Ref,
    previous: Option<&[u8]>,
) -> Result<(), Refusal> {
    let line = checkpoint_line(body).map_err(|m| Refusal::new("checkpoint_invalid", m))?;
    let (seq, head, signature) = match &line.event {
        crate::ledger::Event::Checkpoint {
            line,
            head,
            signature,
        } => (*line, head, signature),
        _ => unreachable!("checkpoint_line returns checkpoints only"),
    };
    crate::ledger::verify::check_signature(issuer, seq, head, signature)
        .map_err(|m| Refusal::new("checkpoint_untrusted", m))?;
    // Line numbers count per ledger, and a rotated issuing CA starts a new one: only a stored
    // checkpoint signed by this same issuer can make a lower line a rollback.
    let same_ledger = |old: &crate::ledger::Entry| match &old.event {
        crate::ledger::Event::Checkpoint {
            line,
            head,
            signature,
        } => crate::ledger::verify::check_signature(issuer, *line, head, signature).is_ok(),
        _ => false,
    };
    if let Some(old) = previous
        .and_then(|p| checkpoint_line(p).ok())
        .filter(same_ledger)
    {
        if line.seq < old.seq {
            return Err(Refusal::new(
                "checkpoint_rollback",
                format!(
                    "the checkpoint is for ledger line {}, before the current {}",
                    line.seq, old.seq
                ),
            ));
        }
    }
    Ok(())
}

fn checkpoint_line(body: &[u8]) -> Result<crate::ledger::Entry, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the checkpoint is not text".to_owned())?;
    let entry = crate::ledger::entry::parse(text.trim_end())
        .map_err(|e| format!("the checkpoint is not a ledger line: {e}"))?;
    match &entry.event {
        crate::ledger::Event::Checkpoint { line, .. } if *line == entry.seq => Ok(entry),
        _ => Err("the ledger line is not a checkpoint of its own position".to_owned()),
    }
}

/// Whether `crl` names `issuer` as its issuer and verifies with its key.
fn signed_by(crl: &X509Crl, issuer: &X509Ref) -> bool {
    let same_name = match (crl.issuer_name().to_der(), issuer.subject_name().to_der()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    same_name
        && issuer
            .public_key()
            .and_then(|k| crl.verify(&k))
            .unwrap_or(false)
}

fn crl_number(crl: &X509Crl) -> Option<BigNum> {
    crl.extension::<CrlNumber>()
        .ok()
        .flatten()
        .and_then(|(_, n)| n.to_bn().ok())
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private, Public};
    use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectKeyIdentifier};
    use openssl::x509::{X509Builder, X509NameBuilder, X509};

    use super::*;
    use crate::signer::crl::{build_crl, CrlParams};
    use crate::signer::signing::SigningKey;

    /// A self-signed CA named `cn` (every issuing CA after a rotation keeps its name).
    fn ca(cn: &str) -> (X509, SigningKey) {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .crl_sign()
                .key_cert_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(ski).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        (
            b.build(),
            SigningKey::file(key.clone(), public(&key)).unwrap(),
        )
    }

    fn public(key: &PKey<Private>) -> PKey<Public> {
        PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap()
    }

    fn crl((cert, key): &(X509, SigningKey), number: u64) -> Vec<u8> {
        let now = Utc::now();
        build_crl(&CrlParams {
            issuer_cert: cert,
            issuer_key: key,
            number,
            this_update: now,
            next_update: now + Duration::days(7),
            entries: &[],
        })
        .unwrap()
    }

    #[test]
    fn crl_numbers_may_not_go_back_for_one_issuer() {
        let issuer = ca("Issuing CA");
        let current = crl(&issuer, 100);
        assert_eq!(
            check_crl(&crl(&issuer, 100), &issuer.0, Some(&current)),
            Ok(())
        );
        assert_eq!(
            check_crl(&crl(&issuer, 101), &issuer.0, Some(&current)),
            Ok(())
        );
        let refused = check_crl(&crl(&issuer, 1), &issuer.0, Some(&current)).unwrap_err();
        assert_eq!(refused.code, "crl_number_rollback");
    }

    #[test]
    fn a_rotated_issuing_ca_starts_its_crl_numbers_again() {
        let old = ca("Issuing CA");
        let new = ca("Issuing CA");
        let stored = crl(&old, 100);
        assert_eq!(check_crl(&crl(&new, 1), &new.0, Some(&stored)), Ok(()));
        let foreign = check_crl(&crl(&old, 101), &new.0, Some(&stored)).unwrap_err();
        assert_eq!(foreign.code, "crl_untrusted");
    }

    /// A checkpoint at ledger line `lines + 1` of a fresh ledger, signed by `issuer`.
    fn checkpoint((_, key): &(X509, SigningKey), lines: usize) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = crate::ledger::Ledger::open(&dir.path().join("ledger.jsonl")).unwrap();
        for i in 0..lines {
            ledger
                .append(&[crate::ledger::Event::Denied {
                    request_id: format!("r{i}"),
                    kind: "webhook".into(),
                    reason: "ip_not_allowed".into(),
                    message: "test".into(),
                }])
                .unwrap();
        }
        let cp = ledger.checkpoint(|m| key.sign(m).map_err(|e| e.to_string()));
        cp.unwrap().line.into_bytes()
    }

    #[test]
    fn checkpoints_may_not_go_back_for_one_ledger_but_a_rotated_ca_starts_anew() {
        let old = ca("Issuing CA");
        let stored = checkpoint(&old, 5);
        assert_eq!(
            check_checkpoint(&checkpoint(&old, 6), &old.0, Some(&stored)),
            Ok(())
        );
        let refused = check_checkpoint(&checkpoint(&old, 1), &old.0, Some(&stored)).unwrap_err();
        assert_eq!(refused.code, "checkpoint_rollback");
        let new = ca("Issuing CA");
        assert_eq!(
            check_checkpoint(&checkpoint(&new, 0), &new.0, Some(&stored)),
            Ok(())
        );
    }
}
