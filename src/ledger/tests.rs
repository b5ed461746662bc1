use proptest::prelude::*;

use super::verify::verify;
use super::*;
use crate::key_type::KeyType;

fn denied(id: &str) -> Event {
    Event::Denied {
        request_id: id.into(),
        kind: "webhook".into(),
        reason: "ip_not_allowed".into(),
        message: "8.8.8.8 is a public address".into(),
    }
}

fn intent(id: &str, serial: &str) -> Event {
    Event::Intent {
        request_id: id.into(),
        serial: serial.into(),
        kind: "webhook".into(),
        ip: "10.0.0.1".into(),
    }
}

#[test]
fn append_reopen_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let mut l = Ledger::open(&path).unwrap();
    let serial = "01".repeat(16);
    l.append(&[intent("a", &serial), denied("b")]).unwrap();
    assert_eq!(l.line_count(), 2);
    let l2 = Ledger::open(&path).unwrap();
    assert_eq!(l2.line_count(), 2);
    assert!(l2.index().serials.contains(&[1u8; 16]));
    assert!(l2.denied_for("b").unwrap().is_some());
    assert!(l2.issued_for("a").unwrap().is_none());
    assert_eq!(verify(&path, None, None).unwrap().lines, 2);
}

#[test]
fn two_writers_interleave_and_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let mut a = Ledger::open(&path).unwrap();
    let mut b = Ledger::open(&path).unwrap();
    a.append(&[denied("x")]).unwrap();
    b.append(&[denied("y")]).unwrap();
    a.append(&[denied("z")]).unwrap();
    assert_eq!(a.line_count(), 3);
    assert!(a.index().requests.contains_key("y"));
    assert_eq!(verify(&path, None, None).unwrap().lines, 3);
}

#[test]
fn torn_tail_is_cut_on_open_but_reported_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    Ledger::open(&path).unwrap().append(&[denied("a")]).unwrap();
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"{\"seq\":2,\"ts\":").unwrap();
    assert_eq!(verify(&path, None, None).unwrap_err().line, 2);
    let l = Ledger::open(&path).unwrap();
    assert_eq!(l.line_count(), 1);
    assert!(verify(&path, None, None).is_ok());
}

/// A signer that fails leaves the ledger as it was and says why.
#[test]
fn a_failed_checkpoint_signature_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let mut l = Ledger::open(&path).unwrap();
    l.append(&[denied("a")]).unwrap();
    let err = l.checkpoint(|_| Err("token away".into())).unwrap_err();
    assert!(err.to_string().contains("token away"), "{err}");
    assert_eq!(l.line_count(), 1);
    assert_eq!(Ledger::open(&path).unwrap().line_count(), 1);
}

#[test]
fn checkpoints_sign_and_catch_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let key = KeyType::EcP256.generate().unwrap();
    let cert = self_signed(&key);
    let mut l = Ledger::open(&path).unwrap();
    l.append(&[denied("a"), denied("b")]).unwrap();
    let cp = l
        .checkpoint(|m| {
            let mut s =
                openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
            s.update(m).unwrap();
            Ok(s.sign_to_vec().unwrap())
        })
        .unwrap();
    assert_eq!(cp.seq, 3);
    l.append(&[denied("c")]).unwrap();
    let report = verify(&path, Some(&cert), Some(&cp.line)).unwrap();
    assert_eq!((report.lines, report.checkpoints), (4, 1));
    // Cut the ledger back to before the checkpoint: the published checkpoint catches it.
    let text = std::fs::read_to_string(&path).unwrap();
    let first_two: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, first_two).unwrap();
    assert!(
        verify(&path, None, None).is_ok(),
        "a cut chain alone still verifies"
    );
    let err = verify(&path, Some(&cert), Some(&cp.line)).unwrap_err();
    assert!(err.message.contains("cut off"), "{err}");
    // A checkpoint signed by another key fails.
    let other = self_signed(&KeyType::EcP256.generate().unwrap());
    std::fs::write(&path, &text).unwrap();
    assert!(verify(&path, Some(&other), None)
        .unwrap_err()
        .message
        .contains("signature"));
}

#[test]
fn edits_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let mut l = Ledger::open(&path).unwrap();
    l.append(&[denied("a"), denied("b"), denied("c")]).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Remove line 2: line 3 (now 2) breaks.
    std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
    assert_eq!(verify(&path, None, None).unwrap_err().line, 2);
    // Swap lines 2 and 3.
    std::fs::write(&path, format!("{}\n{}\n{}\n", lines[0], lines[2], lines[1])).unwrap();
    assert_eq!(verify(&path, None, None).unwrap_err().line, 2);
    assert!(Ledger::open(&path).is_err());
}

fn self_signed(key: &openssl::pkey::PKey<openssl::pkey::Private>) -> openssl::x509::X509 {
    let mut b = openssl::x509::X509Builder::new().unwrap();
    b.set_pubkey(key).unwrap();
    let t = openssl::asn1::Asn1Time::days_from_now(1).unwrap();
    b.set_not_before(&t).unwrap();
    b.set_not_after(&t).unwrap();
    b.sign(key, openssl::hash::MessageDigest::sha256()).unwrap();
    b.build()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Any single-byte change anywhere in the ledger is detected (issue 6).
    #[test]
    fn any_single_byte_change_is_detected(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut l = Ledger::open(&path).unwrap();
        l.append(&[intent("a", &"02".repeat(16)), denied("b"), denied("c")]).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let i = pos.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        std::fs::write(&path, &bytes).unwrap();
        prop_assert!(verify(&path, None, None).is_err());
    }
}
