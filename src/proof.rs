//! Proof of possession for revocation requests (DESIGN §9): a signature by a certificate's own
//! private key over a fixed message naming its serial and the reason.
//!
//! The message is the exact bytes `smsgate-ca revocation v1\n<serial>\n<reason>\n`, with the
//! serial as 32 lowercase hex digits and the reason as its RFC 5280 name. The proof is the
//! base64 of a SHA-256 signature over it: ECDSA (DER `ECDSA-Sig-Value`) or RSA PKCS#1 v1.5,
//! which is what `openssl dgst -sha256 -sign server.key` writes. Used by the signer side
//! (spool revocation requests), by `serve` (`POST /api/v1/revocations`, checked at once) and by
//! the client (`revoke-request`, which makes one). Pure: no I/O, no CA key.

use openssl::base64;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKeyRef, Private, Public};
use openssl::sign::{Signer, Verifier};
use openssl::x509::X509Ref;

use crate::signer::crl::RevocationReason;
use crate::signer::serial::Serial;

/// Why a proof was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    /// The proof is not base64, is empty, or is longer than any signature we accept.
    #[error("the proof is not a base64 signature (at most {MAX_PROOF_CHARS} characters)")]
    Malformed,
    /// The certificate's serial is not one this CA issues (16 bytes).
    #[error("the certificate's serial is not a 16-byte serial of this CA")]
    ForeignSerial,
    /// The signature does not verify with the certificate's public key.
    #[error(
        "the proof is not a signature by the certificate's key over the revocation message \
         (make it with: printf 'smsgate-ca revocation v1\\n<serial>\\n<reason>\\n' | \
         openssl dgst -sha256 -sign server.key | base64 -w0)"
    )]
    Mismatch,
}

/// The exact bytes a proof signs.
pub fn message(serial: &Serial, reason: RevocationReason) -> String {
    format!("{PREFIX}{}\n{}\n", serial.to_hex(), reason.as_str())
}

/// Signs the revocation message with the certificate's private key; returns the base64 proof.
pub fn sign(
    key: &PKeyRef<Private>,
    serial: &Serial,
    reason: RevocationReason,
) -> Result<String, openssl::error::ErrorStack> {
    let mut signer = Signer::new(MessageDigest::sha256(), key)?;
    signer.update(message(serial, reason).as_bytes())?;
    Ok(base64::encode_block(&signer.sign_to_vec()?))
}

/// The serial of a certificate, when it is one of this CA's 16-byte serials.
pub fn serial_of(cert: &X509Ref) -> Option<Serial> {
    let bytes = cert.serial_number().to_bn().ok()?.to_vec();
    Serial::from_slice(&bytes)
}

/// Checks a proof against a certificate: its serial, its public key, the named reason.
pub fn verify_certificate(
    cert: &X509Ref,
    reason: RevocationReason,
    proof: &str,
) -> Result<(), ProofError> {
    let serial = serial_of(cert).ok_or(ProofError::ForeignSerial)?;
    let key = cert.public_key().map_err(|_| ProofError::Mismatch)?;
    verify(&key, &serial, reason, proof)
}

/// Checks a proof against a public key and the serial and reason it must name.
pub fn verify(
    key: &PKeyRef<Public>,
    serial: &Serial,
    reason: RevocationReason,
    proof: &str,
) -> Result<(), ProofError> {
    let proof = proof.trim();
    if proof.is_empty() || proof.len() > MAX_PROOF_CHARS {
        return Err(ProofError::Malformed);
    }
    let signature = base64::decode_block(proof).map_err(|_| ProofError::Malformed)?;
    let ok = Verifier::new(MessageDigest::sha256(), key)
        .and_then(|mut v| {
            v.update(message(serial, reason).as_bytes())?;
            v.verify(&signature)
        })
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// The first line of every message: names the scheme and its version.
pub const PREFIX: &str = "smsgate-ca revocation v1\n";

/// The longest proof accepted: a 4096-bit RSA signature is 684 base64 characters.
pub const MAX_PROOF_CHARS: usize = 1024;

#[cfg(test)]
mod tests {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;

    use super::*;

    fn ec_key() -> PKey<Private> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    fn public(key: &PKey<Private>) -> PKey<Public> {
        PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap()
    }

    #[test]
    fn message_is_the_documented_bytes() {
        let serial = Serial::parse("01f3a0000000000000000000000000ff").unwrap();
        assert_eq!(
            message(&serial, RevocationReason::KeyCompromise),
            "smsgate-ca revocation v1\n01f3a0000000000000000000000000ff\nkeyCompromise\n"
        );
    }

    #[test]
    fn ec_and_rsa_proofs_verify_and_bind_serial_reason_and_key() {
        let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        for key in [ec_key(), rsa] {
            let serial = Serial::random(1);
            let reason = RevocationReason::KeyCompromise;
            let proof = sign(&key, &serial, reason).unwrap();
            let public = public(&key);
            assert_eq!(verify(&public, &serial, reason, &proof), Ok(()));
            assert_eq!(
                verify(&public, &serial, RevocationReason::Superseded, &proof),
                Err(ProofError::Mismatch)
            );
            assert_eq!(
                verify(&public, &Serial::random(1), reason, &proof),
                Err(ProofError::Mismatch)
            );
            assert_eq!(
                verify(&super::tests::public(&ec_key()), &serial, reason, &proof),
                Err(ProofError::Mismatch)
            );
        }
    }

    #[test]
    fn malformed_proofs_are_refused_before_any_crypto() {
        let key = public(&ec_key());
        let serial = Serial::random(1);
        let reason = RevocationReason::Unspecified;
        for bad in ["", "   ", "not base64!", &"A".repeat(MAX_PROOF_CHARS + 4)] {
            assert_eq!(
                verify(&key, &serial, reason, bad),
                Err(ProofError::Malformed),
                "{bad:?}"
            );
        }
    }
}
