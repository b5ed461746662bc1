//! The few DER encodings (X.690 §8 and §10) the signer writes itself: the TBSCertificate of a
//! leaf, the TBSCertList of a CRL and the signed wrappers around both. Every function returns
//! one complete TLV; constructed values take their already-encoded children.
//!
//! Nothing here parses: what these functions write is read back by an independent parser
//! (`x509-parser` for the lint, OpenSSL for the signature check) before anything leaves the
//! signer.

use chrono::{DateTime, Datelike, Timelike, Utc};

const TAG_BOOLEAN: u8 = 0x01;
const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;
const TAG_ENUMERATED: u8 = 0x0a;
const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const CLASS_CONTEXT: u8 = 0x80;
const CONSTRUCTED: u8 = 0x20;

/// Tag, definite length (short form below 128, long form above), content.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    push_tlv(&mut out, tag, content);
    out
}

/// Appends one TLV to `out`.
pub(crate) fn push_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

/// SEQUENCE (or SEQUENCE OF) of already-encoded items, in the order given.
pub(crate) fn sequence(items: &[Vec<u8>]) -> Vec<u8> {
    tlv(TAG_SEQUENCE, &items.concat())
}

/// SEQUENCE around content that is already the concatenation of encoded items.
pub(crate) fn sequence_of_bytes(content: &[u8]) -> Vec<u8> {
    tlv(TAG_SEQUENCE, content)
}

/// SET of one already-encoded item (a RelativeDistinguishedName of one attribute).
pub(crate) fn set_of_one(item: &[u8]) -> Vec<u8> {
    tlv(TAG_SET, item)
}

/// BOOLEAN TRUE (DER: 0xff).
pub(crate) fn boolean_true() -> Vec<u8> {
    tlv(TAG_BOOLEAN, &[0xff])
}

/// A non-negative INTEGER from unsigned big-endian bytes: minimal (leading zero bytes
/// dropped), with one 0x00 added back when the high bit is set so it stays positive.
pub(crate) fn unsigned_integer(be: &[u8]) -> Vec<u8> {
    let skip = be.iter().take_while(|b| **b == 0).count();
    let digits = &be[skip..];
    let mut content = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(digits);
    tlv(TAG_INTEGER, &content)
}

/// An ENUMERATED below 128 (all CRLReason values are).
pub(crate) fn enumerated(value: u8) -> Vec<u8> {
    debug_assert!(value < 0x80, "single-octet ENUMERATED only");
    tlv(TAG_ENUMERATED, &[value])
}

/// An OBJECT IDENTIFIER from its arcs (X.690 §8.19: first two arcs as 40*a+b, then base-128
/// with the high bit on every octet but the last).
pub(crate) fn oid(arcs: &[u64]) -> Vec<u8> {
    debug_assert!(
        arcs.len() >= 2 && arcs[0] <= 2,
        "an OID has at least two arcs"
    );
    let mut content = Vec::new();
    let mut push_arc = |mut v: u64| {
        let mut groups = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            groups.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        content.extend(groups.iter().rev());
    };
    push_arc(arcs[0] * 40 + arcs[1]);
    for &arc in &arcs[2..] {
        push_arc(arc);
    }
    tlv(TAG_OID, &content)
}

/// OCTET STRING, e.g. an extension's extnValue wrapping the encoded value.
pub(crate) fn octet_string(content: &[u8]) -> Vec<u8> {
    tlv(TAG_OCTET_STRING, content)
}

/// A BIT STRING of whole octets (no unused bits), as signatures and public keys are.
pub(crate) fn bit_string(bits: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(bits.len() + 1);
    content.push(0);
    content.extend_from_slice(bits);
    tlv(TAG_BIT_STRING, &content)
}

/// A named-bit BIT STRING of one octet (keyUsage): X.690 §11.2.2, trailing zero bits are
/// dropped and counted as unused.
pub(crate) fn named_bits(byte: u8) -> Vec<u8> {
    if byte == 0 {
        return tlv(TAG_BIT_STRING, &[0]);
    }
    tlv(TAG_BIT_STRING, &[byte.trailing_zeros() as u8, byte])
}

/// UTF8String.
pub(crate) fn utf8_string(s: &str) -> Vec<u8> {
    tlv(TAG_UTF8_STRING, s.as_bytes())
}

/// NULL, the parameters of sha256WithRSAEncryption.
pub(crate) fn null() -> Vec<u8> {
    tlv(TAG_NULL, &[])
}

/// `[n]` IMPLICIT around a primitive value (the content octets only).
pub(crate) fn context_primitive(n: u8, content: &[u8]) -> Vec<u8> {
    tlv(CLASS_CONTEXT | n, content)
}

/// `[n]` EXPLICIT around one already-encoded value (or IMPLICIT around a constructed one's
/// content).
pub(crate) fn context_constructed(n: u8, inner: &[u8]) -> Vec<u8> {
    tlv(CLASS_CONTEXT | CONSTRUCTED | n, inner)
}

/// RFC 5280 §4.1.2.5/§5.1.2.4: UTCTime (`YYMMDDHHMMSSZ`) for 1950 through 2049,
/// GeneralizedTime (`YYYYMMDDHHMMSSZ`, no fraction) otherwise. Sub-seconds are dropped.
/// `None` for a year outside 0000–9999, which no X.509 time can hold.
pub(crate) fn time(t: DateTime<Utc>) -> Option<Vec<u8>> {
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return None;
    }
    let rest = format!(
        "{:02}{:02}{:02}{:02}{:02}Z",
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        // A leap second shows as second 59 with nanoseconds >= 1e9 in chrono: `second()`
        // never returns 60.
        t.second()
    );
    Some(if (1950..2050).contains(&year) {
        tlv(TAG_UTC_TIME, format!("{:02}{rest}", year % 100).as_bytes())
    } else {
        tlv(TAG_GENERALIZED_TIME, format!("{year:04}{rest}").as_bytes())
    })
}

/// An Extension: `SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }`
/// (a FALSE critical flag is omitted, as DER requires).
pub(crate) fn extension(oid_arcs: &[u64], critical: bool, value: &[u8]) -> Vec<u8> {
    let mut items = vec![oid(oid_arcs)];
    if critical {
        items.push(boolean_true());
    }
    items.push(octet_string(value));
    sequence(&items)
}

/// A signed structure (`Certificate`, `CertificateList`): `SEQUENCE { tbs, signatureAlgorithm,
/// signatureValue BIT STRING }`.
pub(crate) fn signed(tbs: &[u8], algorithm: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(tbs.len() + algorithm.len() + signature.len() + 8);
    content.extend_from_slice(tbs);
    content.extend_from_slice(algorithm);
    content.extend_from_slice(&bit_string(signature));
    tlv(TAG_SEQUENCE, &content)
}

/// Converts a raw ECDSA signature `r‖s` (PKCS#11 `CKM_ECDSA` output: two big-endian integers
/// of the curve's size each) to the DER `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`
/// (RFC 3279 §2.2.3). `None` when the length is odd or zero.
pub(crate) fn ecdsa_raw_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Some(sequence(&[unsigned_integer(r), unsigned_integer(s)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(unsigned_integer(&[]), [0x02, 0x01, 0x00]);
        assert_eq!(unsigned_integer(&[0, 0]), [0x02, 0x01, 0x00]);
        assert_eq!(unsigned_integer(&[0, 0, 1]), [0x02, 0x01, 0x01]);
        assert_eq!(unsigned_integer(&[0x7f]), [0x02, 0x01, 0x7f]);
        assert_eq!(unsigned_integer(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
    }

    #[test]
    fn named_bits_drop_trailing_zeros() {
        // digitalSignature alone: 1 bit used, 7 unused.
        assert_eq!(named_bits(0x80), [0x03, 0x02, 0x07, 0x80]);
        // digitalSignature + keyEncipherment: bits 0 and 2, 5 unused.
        assert_eq!(named_bits(0xa0), [0x03, 0x02, 0x05, 0xa0]);
        // keyCertSign + cRLSign: bits 5 and 6, 1 unused.
        assert_eq!(named_bits(0x06), [0x03, 0x02, 0x01, 0x06]);
    }

    #[test]
    fn raw_ecdsa_becomes_der_that_openssl_accepts() {
        use openssl::ecdsa::EcdsaSig;
        let key = crate::key_type::KeyType::EcP256.generate().unwrap();
        let ec = key.ec_key().unwrap();
        let digest = openssl::sha::sha256(b"message");
        let sig = EcdsaSig::sign(&digest, &ec).unwrap();
        let mut raw = vec![0u8; 64];
        let (r, s) = (sig.r().to_vec(), sig.s().to_vec());
        raw[32 - r.len()..32].copy_from_slice(&r);
        raw[64 - s.len()..].copy_from_slice(&s);
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(der, sig.to_der().unwrap());
        assert!(EcdsaSig::from_der(&der)
            .unwrap()
            .verify(&digest, &ec)
            .unwrap());
        assert!(ecdsa_raw_to_der(&raw[..63]).is_none());
        assert!(ecdsa_raw_to_der(&[]).is_none());
    }
}
