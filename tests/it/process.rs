//! `smsgate-ca process` (issue 2 item 7, DESIGN §2–§4): CSRs made with the `openssl` CLI go
//! through a spool and come out as certificates that independent verifiers accept and that
//! are exactly the profile; every reason code a request can earn is recorded in its status
//! record; files that are not requests go to `rejected/`; held requests wait for `approve` or
//! `deny`; and processing always goes on with the next file.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;

use crate::util::*;

// ---------------------------------------------------------------------------------------
// Real clients' CSRs are approved and issued exactly per the profile
// ---------------------------------------------------------------------------------------

/// The SMSGate documentation's manual recipe, exactly: `openssl genrsa -out server.key 2048`,
/// its `server.cnf` (`x509_extensions = v3_req`), and `openssl req -new -key server.key -out
/// server.csr -extensions v3_req -config ./server.cnf`.
///
/// With OpenSSL 3, `-extensions` (like `x509_extensions`) applies to `-x509` only, so the
/// CSR carries no extensions at all, only `CN=<ip>` (DESIGN §3): that CN is the requested IP.
#[test]
fn smsgate_docs_recipe_rsa2048_is_cn_only_and_approved_with_exactly_the_profile() {
    let env = TestEnv::new();
    let key = env.work.join("server.key");
    openssl_ok(&[
        "genrsa".as_ref(),
        "-out".as_ref(),
        key.as_os_str(),
        "2048".as_ref(),
    ]);
    let spec = CsrSpec::new(Key::File(key))
        .config(&smsgate_docs_config("192.168.1.10"))
        .extensions("v3_req");
    let csr = env.drop_csr("docs-recipe", &spec);

    // What the recipe really puts in the CSR on this OpenSSL: the CN, nothing else.
    let text = csr.text();
    assert!(text.contains("Subject: CN = 192.168.1.10"), "{text}");
    assert!(!text.contains("Subject Alternative Name"), "{text}");
    assert!(!text.contains("Key Usage"), "{text}");

    env.process().stdout_has("1 approved, 0 denied, 0 rejected");
    env.check_issued(
        "docs-recipe",
        &LeafExpect {
            rsa_key: true,
            public_key_der: Some(csr.public_key_der()),
            ..LeafExpect::webhook("192.168.1.10")
        },
    );
}

/// A common variant of the recipe's config, `req_extensions = v3_req`, does put the
/// extensions into the CSR (SAN included); it is approved too, and the CSR's keyUsage
/// (nonRepudiation) is not copied.
#[test]
fn smsgate_docs_config_with_req_extensions_carries_the_san_and_is_approved() {
    let env = TestEnv::new();
    let config = smsgate_docs_config("192.168.1.11").replace("x509_extensions", "req_extensions");
    let csr = env.drop_csr(
        "docs-req-extensions",
        &CsrSpec::new(Key::Rsa(2048))
            .config(&config)
            .extensions("v3_req"),
    );
    let text = csr.text();
    assert!(text.contains("Subject: CN = 192.168.1.11"), "{text}");
    assert!(text.contains("IP Address:192.168.1.11"), "{text}");
    assert!(text.contains("Non Repudiation"), "{text}");

    env.process().stdout_has("1 approved, 0 denied, 0 rejected");
    env.check_issued(
        "docs-req-extensions",
        &LeafExpect {
            rsa_key: true,
            public_key_der: Some(csr.public_key_der()),
            ..LeafExpect::webhook("192.168.1.11")
        },
    );
}

/// The same recipe with `-reqexts v3_req`, which adds the extensions in every OpenSSL: the
/// CSR's keyUsage (nonRepudiation, digitalSignature, keyEncipherment) and subject are not copied.
#[test]
fn smsgate_docs_recipe_with_reqexts_is_approved_with_exactly_the_profile() {
    let env = TestEnv::new();
    let csr = env.drop_csr(
        "docs-reqexts",
        &CsrSpec::new(Key::Rsa(2048))
            .config(&smsgate_docs_config("10.1.2.3"))
            .reqexts("v3_req"),
    );
    let text = csr.text();
    assert!(text.contains("IP Address:10.1.2.3"), "{text}");
    assert!(text.contains("Non Repudiation"), "{text}");

    env.process().stdout_has("1 approved, 0 denied, 0 rejected");
    env.check_issued(
        "docs-reqexts",
        &LeafExpect {
            rsa_key: true,
            public_key_der: Some(csr.public_key_der()),
            ..LeafExpect::webhook("10.1.2.3")
        },
    );
}

/// The upstream `smsgate-ca` CLI's CSR: P-256, CN and SAN IP, keyUsage critical
/// digitalSignature+keyEncipherment, and the malformed extendedKeyUsage whose DER value is
/// `30 06 06 04 2b 06 01 05 05 07 03 01` (DESIGN §3): approved, and the EC leaf has
/// digitalSignature only.
#[test]
fn upstream_cli_csr_with_malformed_eku_is_approved_with_exactly_the_profile() {
    let env = TestEnv::new();
    let csr = env.drop_csr("upstream", &CsrSpec::upstream_cli("172.16.5.4"));

    // The CSR carries exactly the upstream bytes.
    let asn1 = openssl_ok(&["asn1parse".as_ref(), "-in".as_ref(), csr.path.as_os_str()]);
    let eku_value = asn1
        .lines()
        .skip_while(|l| !l.contains(":X509v3 Extended Key Usage"))
        .nth(1)
        .unwrap_or_else(|| panic!("no extendedKeyUsage in the CSR:\n{asn1}"));
    assert!(
        eku_value.contains("OCTET STRING")
            && eku_value.ends_with(&hex(&UPSTREAM_BAD_EKU).to_uppercase()),
        "extendedKeyUsage value is not the upstream bytes: {eku_value}"
    );
    let ku_value = asn1
        .lines()
        .skip_while(|l| !l.contains(":X509v3 Key Usage"))
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        ku_value.contains("BOOLEAN           :255") && ku_value.contains(":030205A0"),
        "keyUsage is not critical 03 02 05 a0:\n{ku_value}"
    );

    env.process().stdout_has("1 approved, 0 denied, 0 rejected");
    env.check_issued(
        "upstream",
        &LeafExpect {
            public_key_der: Some(csr.public_key_der()),
            ..LeafExpect::webhook("172.16.5.4")
        },
    );
}

#[test]
fn der_csr_instead_of_pem_is_approved() {
    let env = TestEnv::new();
    let csr = env.drop_csr("der", &CsrSpec::ip("192.168.7.7").der());
    assert!(!csr.bytes().starts_with(b"-----"), "the CSR is DER");
    env.process();
    env.check_issued("der", &LeafExpect::webhook("192.168.7.7"));
}

/// An envelope of type private_server gets the private_server profile: serial prefix 2.
#[test]
fn private_server_envelope_is_issued_with_serial_prefix_2() {
    let env = TestEnv::new();
    let csr = env.csr("ps", &CsrSpec::ip("10.20.30.40"));
    env.drop_file("ps1.json", envelope("ps1", "private_server", &csr.pem()));
    env.process();
    let s = env.check_issued(
        "ps1",
        &LeafExpect {
            serial_prefix: 2,
            ..LeafExpect::webhook("10.20.30.40")
        },
    );
    assert_eq!(s["type"], "private_server");
    assert!(env.list("archive").contains(&"ps1.json".to_owned()));
}

#[test]
fn ec_p384_and_rsa_csrs_are_approved() {
    let env = TestEnv::new();
    env.drop_csr(
        "p384",
        &CsrSpec::new(Key::EcP384)
            .subject("/")
            .addext("subjectAltName=IP:10.0.0.5")
            .digest("sha384"),
    );
    env.drop_csr(
        "rsa3072",
        &CsrSpec::new(Key::Rsa(3072)).addext("subjectAltName=IP:10.0.0.6"),
    );
    env.process().stdout_has("2 approved, 0 denied, 0 rejected");
    env.check_issued("p384", &LeafExpect::webhook("10.0.0.5"));
    env.check_issued(
        "rsa3072",
        &LeafExpect {
            rsa_key: true,
            ..LeafExpect::webhook("10.0.0.6")
        },
    );
}

#[test]
fn approved_request_is_archived_and_published_files_written() {
    let env = TestEnv::new();
    env.drop_csr("arch", &CsrSpec::ip("192.168.3.3"));
    env.process();
    assert_eq!(env.list("incoming"), Vec::<String>::new());
    assert_eq!(env.list("processing"), Vec::<String>::new());
    assert_eq!(env.list("archive"), vec!["arch.csr"]);
    let published = env.list("published");
    assert!(published.contains(&"ca.crt".to_owned()), "{published:?}");
    assert!(
        published.contains(&"ledger-checkpoint.json".to_owned()),
        "{published:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Every reason code a request can earn, each with its status record
// ---------------------------------------------------------------------------------------

/// Drops `bytes` as `incoming/<name>` next to a good request, processes, and checks that
/// `<id>` is denied with `reason` while the good one is still issued.
#[track_caller]
fn denied_with(env: &TestEnv, name: &str, bytes: &[u8], reason: &str) -> serde_json::Value {
    let id = name.split('.').next().unwrap();
    env.drop_file(name, bytes);
    env.drop_csr("zz-good", &CsrSpec::ip("192.168.200.1"));
    env.process();
    env.assert_approved("zz-good");
    env.assert_denied(id, reason)
}

#[test]
fn garbage_bytes_are_invalid_csr() {
    let env = TestEnv::new();
    let s = denied_with(
        &env,
        "garbage.csr",
        b"\x00\x01\x02 not a csr \xff\xfe",
        "invalid_csr",
    );
    assert_eq!(s["type"], "webhook");
    assert!(env.list("archive").contains(&"garbage.csr".to_owned()));
}

#[test]
fn empty_file_is_invalid_csr() {
    let env = TestEnv::new();
    denied_with(&env, "empty.csr", b"", "invalid_csr");
}

#[test]
fn pem_armour_around_junk_is_invalid_csr() {
    let env = TestEnv::new();
    let junk = "-----BEGIN CERTIFICATE REQUEST-----\nSGVsbG8sIHdvcmxkIQ==\n-----END CERTIFICATE REQUEST-----\n";
    denied_with(&env, "armour.csr", junk.as_bytes(), "invalid_csr");
}

#[test]
fn ten_megabyte_file_is_too_large() {
    let env = TestEnv::new();
    let big = vec![b'A'; 10 * 1024 * 1024];
    let s = denied_with(&env, "huge.csr", &big, "too_large");
    assert!(s["message"].as_str().unwrap().contains("bytes"), "{s:#}");
}

#[test]
fn envelope_whose_csr_exceeds_max_csr_bytes_is_too_large() {
    let env = TestEnv::with_policy(&policy_text("max_csr_bytes = 512", "", ""));
    let csr = env.csr(
        "big",
        &CsrSpec::new(Key::Rsa(2048)).addext("subjectAltName=IP:10.9.9.9"),
    );
    assert!(
        csr.pem().len() > 512,
        "an RSA-2048 PEM CSR is over 512 bytes"
    );
    env.drop_file("bigenv.json", envelope("bigenv", "webhook", &csr.pem()));
    env.process();
    env.assert_denied("bigenv", "too_large");
}

#[test]
fn flipped_signature_byte_is_bad_signature() {
    let env = TestEnv::new();
    let csr = env.csr("flip", &CsrSpec::ip("192.168.1.77").der());
    let mut der = csr.bytes();
    // The last byte of a DER CSR lies in its signature.
    *der.last_mut().unwrap() ^= 0x01;
    denied_with(&env, "flipped.csr", &der, "bad_signature");
}

#[test]
fn sha1_signed_csr_is_weak_signature() {
    let env = TestEnv::new();
    let csr = env.csr("sha1", &CsrSpec::ip("192.168.1.78").digest("sha1"));
    assert!(csr.text().contains("ecdsa-with-SHA1"), "{}", csr.text());
    denied_with(&env, "sha1.csr", &csr.bytes(), "weak_signature");
}

#[test]
fn rsa_1024_is_weak_key() {
    let env = TestEnv::new();
    let csr = env.csr(
        "rsa1024",
        &CsrSpec::new(Key::Rsa(1024)).addext("subjectAltName=IP:192.168.1.79"),
    );
    let s = denied_with(&env, "rsa1024.csr", &csr.bytes(), "weak_key");
    assert!(s["message"].as_str().unwrap().contains("1024"), "{s:#}");
}

#[test]
fn dsa_key_is_unsupported_key() {
    let env = TestEnv::new();
    let csr = env.csr(
        "dsa",
        &CsrSpec::new(Key::Dsa).addext("subjectAltName=IP:192.168.1.80"),
    );
    denied_with(&env, "dsa.csr", &csr.bytes(), "unsupported_key");
}

#[test]
fn secp256k1_key_is_unsupported_key() {
    let env = TestEnv::new();
    let csr = env.csr(
        "k1",
        &CsrSpec::new(Key::Secp256k1).addext("subjectAltName=IP:192.168.1.81"),
    );
    denied_with(&env, "k1.csr", &csr.bytes(), "unsupported_key");
}

#[test]
fn ed25519_key_is_unsupported_key() {
    let env = TestEnv::new();
    let csr = env.csr(
        "ed",
        &CsrSpec::new(Key::Ed25519).addext("subjectAltName=IP:192.168.1.82"),
    );
    denied_with(&env, "ed.csr", &csr.bytes(), "unsupported_key");
}

#[test]
fn public_ip_is_ip_not_allowed() {
    let env = TestEnv::new();
    let csr = env.csr("pub", &CsrSpec::ip("8.8.8.8"));
    let s = denied_with(&env, "public.csr", &csr.bytes(), "ip_not_allowed");
    let m = s["message"].as_str().unwrap();
    assert!(m.contains("8.8.8.8") && m.contains("192.168.0.0/16"), "{m}");
}

#[test]
fn cn_different_from_san_ip_is_cn_mismatch() {
    let env = TestEnv::new();
    let csr = env.csr(
        "cnmm",
        &CsrSpec::new(Key::EcP256)
            .subject("/CN=10.0.0.1")
            .addext("subjectAltName=IP:10.0.0.2"),
    );
    denied_with(&env, "cnmismatch.csr", &csr.bytes(), "cn_mismatch");
}

#[test]
fn two_ip_sans_are_too_many_names() {
    let env = TestEnv::new();
    let csr = env.csr(
        "two",
        &CsrSpec::new(Key::EcP256).addext("subjectAltName=IP:10.0.0.1,IP:10.0.0.2"),
    );
    denied_with(&env, "twoips.csr", &csr.bytes(), "too_many_names");
}

#[test]
fn dns_san_is_dns_name_not_allowed() {
    let env = TestEnv::new();
    let csr = env.csr(
        "dns",
        &CsrSpec::new(Key::EcP256).addext("subjectAltName=DNS:printer.lan"),
    );
    denied_with(&env, "dnssan.csr", &csr.bytes(), "dns_name_not_allowed");
}

#[test]
fn email_san_is_no_ip_san() {
    let env = TestEnv::new();
    let csr = env.csr(
        "mail",
        &CsrSpec::new(Key::EcP256).addext("subjectAltName=email:admin@example.com"),
    );
    denied_with(&env, "emailsan.csr", &csr.bytes(), "no_ip_san");
}

#[test]
fn no_san_and_a_non_ip_cn_is_no_ip_san() {
    let env = TestEnv::new();
    let csr = env.csr(
        "nosan",
        &CsrSpec::new(Key::EcP256).subject("/CN=printer.lan/O=Example"),
    );
    denied_with(&env, "nosan.csr", &csr.bytes(), "no_ip_san");
}

#[test]
fn no_san_and_no_cn_is_no_ip_san() {
    let env = TestEnv::new();
    let csr = env.csr("nothing", &CsrSpec::new(Key::EcP256));
    denied_with(&env, "nothing.csr", &csr.bytes(), "no_ip_san");
}

#[test]
fn cn_only_non_canonical_ip_is_no_ip_san() {
    let env = TestEnv::new();
    let csr = env.csr(
        "leading0",
        &CsrSpec::new(Key::EcP256).subject("/CN=192.168.001.010"),
    );
    denied_with(&env, "leadingzeros.csr", &csr.bytes(), "no_ip_san");
}

#[test]
fn requested_ca_true_is_extension_not_allowed() {
    let env = TestEnv::new();
    let csr = env.csr(
        "catrue",
        &CsrSpec::ip("192.168.1.90").addext("basicConstraints=critical,CA:TRUE"),
    );
    denied_with(&env, "catrue.csr", &csr.bytes(), "extension_not_allowed");
}

#[test]
fn requested_key_cert_sign_is_extension_not_allowed() {
    let env = TestEnv::new();
    let csr = env.csr(
        "kcs",
        &CsrSpec::ip("192.168.1.91").addext("keyUsage=critical,digitalSignature,keyCertSign"),
    );
    denied_with(
        &env,
        "keycertsign.csr",
        &csr.bytes(),
        "extension_not_allowed",
    );
}

#[test]
fn critical_unknown_extension_is_extension_not_allowed() {
    let env = TestEnv::new();
    let csr = env.csr(
        "critunk",
        &CsrSpec::ip("192.168.1.92").addext("1.3.6.1.4.1.55555.1=critical,DER:05:00"),
    );
    denied_with(
        &env,
        "critunknown.csr",
        &csr.bytes(),
        "extension_not_allowed",
    );
}

/// A non-critical extension the CA does not know is ignored and never copied.
#[test]
fn non_critical_unknown_extension_is_ignored_and_not_copied() {
    let env = TestEnv::new();
    env.drop_csr(
        "noncrit",
        &CsrSpec::ip("192.168.1.93").addext("1.3.6.1.4.1.55555.1=DER:05:00"),
    );
    env.process();
    env.check_issued("noncrit", &LeafExpect::webhook("192.168.1.93"));
}

#[test]
fn ip_in_a_deny_list_is_ip_denied() {
    let env = TestEnv::with_policy(&policy_text("", r#"deny = ["192.168.66.0/24"]"#, ""));
    let csr = env.csr("den", &CsrSpec::ip("192.168.66.6"));
    denied_with(&env, "denied.csr", &csr.bytes(), "ip_denied");
}

#[test]
fn envelope_with_unknown_type_is_unknown_type() {
    let env = TestEnv::new();
    let csr = env.csr("bogus", &CsrSpec::ip("192.168.1.94"));
    let s = denied_with(
        &env,
        "bogustype.json",
        envelope("bogustype", "bogus", &csr.pem()).as_bytes(),
        "unknown_type",
    );
    assert_eq!(s["type"], "bogus");
}

#[test]
fn envelope_whose_request_id_differs_from_its_file_name_is_invalid_csr() {
    let env = TestEnv::new();
    let csr = env.csr("idmm", &CsrSpec::ip("192.168.1.95"));
    let s = denied_with(
        &env,
        "filename.json",
        envelope("another-id", "webhook", &csr.pem()).as_bytes(),
        "invalid_csr",
    );
    assert!(
        s["message"].as_str().unwrap().contains("request_id"),
        "{s:#}"
    );
    assert!(env.status_opt("another-id").is_none());
}

#[test]
fn envelope_that_is_not_json_is_invalid_csr() {
    let env = TestEnv::new();
    denied_with(&env, "notjson.json", b"{\"request_id\": ", "invalid_csr");
}

#[test]
fn same_id_with_different_content_is_rejected_as_duplicate_and_first_record_kept() {
    let env = TestEnv::new();
    env.drop_csr("dup", &CsrSpec::ip("192.168.1.96"));
    env.process();
    let first = env.check_issued("dup", &LeafExpect::webhook("192.168.1.96"));
    let first_cert = fs::read(env.issued("dup")).unwrap();

    env.drop_csr("dup", &CsrSpec::ip("192.168.1.97"));
    env.process().stdout_has("0 approved, 0 denied, 1 rejected");
    assert_eq!(
        env.status("dup"),
        first,
        "the first record must stay as it was"
    );
    assert_eq!(fs::read(env.issued("dup")).unwrap(), first_cert);
    assert!(env.rejected_reason("dup.csr").contains("duplicate_request"));
    assert!(env.list("rejected").contains(&"dup.csr".to_owned()));
    // The ledger records the refusal.
    let ledger = fs::read_to_string(env.ledger()).unwrap();
    assert!(
        ledger
            .lines()
            .any(|l| l.contains("\"denied\"") && l.contains("duplicate_request")),
        "no denied duplicate_request event in the ledger"
    );
}

#[test]
fn same_id_with_identical_content_is_a_no_op() {
    let env = TestEnv::new();
    let csr = env.drop_csr("same", &CsrSpec::ip("192.168.1.98"));
    env.process();
    let first = env.status("same");
    let ledger_before = fs::read_to_string(env.ledger()).unwrap();
    let issued_before = ledger_before.matches("\"issued\"").count();

    env.drop_file("same.csr", csr.bytes());
    let summary = env.process_json();
    assert_eq!(summary["unchanged"], 1, "{summary}");
    assert_eq!(summary["approved"], 0, "{summary}");
    assert_eq!(summary["rejected"], 0, "{summary}");
    assert_eq!(env.status("same"), first);
    assert!(env.list("incoming").is_empty());
    assert!(!env.list("rejected").contains(&"same.csr".to_owned()));
    let ledger_after = fs::read_to_string(env.ledger()).unwrap();
    assert_eq!(ledger_after.matches("\"issued\"").count(), issued_before);
}

/// A denied request's id is taken too: new content under it is a duplicate, not a retry.
#[test]
fn resubmitting_a_denied_id_with_new_content_is_a_duplicate() {
    let env = TestEnv::new();
    env.drop_csr("retry", &CsrSpec::ip("8.8.4.4"));
    env.process();
    env.assert_denied("retry", "ip_not_allowed");
    env.drop_csr("retry", &CsrSpec::ip("192.168.1.99"));
    env.process();
    env.assert_denied("retry", "ip_not_allowed");
    assert!(env
        .rejected_reason("retry.csr")
        .contains("duplicate_request"));
}

// ---------------------------------------------------------------------------------------
// Files that are not requests go to rejected/ with a .reason, never followed or read
// ---------------------------------------------------------------------------------------

#[test]
fn symlink_in_incoming_is_rejected_and_never_followed() {
    let env = TestEnv::new();
    // A valid CSR outside the spool: were the link followed, it would be signed.
    let outside = env.csr("outside", &CsrSpec::ip("192.168.1.100"));
    let before = outside.bytes();
    symlink(&outside.path, env.incoming("link.csr")).unwrap();
    env.process().stdout_has("0 approved, 0 denied, 1 rejected");

    assert!(
        env.status_opt("link").is_none(),
        "a symlink got a status record"
    );
    assert!(!env.issued("link").exists());
    let moved = env.spool_dir("rejected").join("link.csr");
    let meta = fs::symlink_metadata(&moved).unwrap();
    assert!(
        meta.file_type().is_symlink(),
        "rejected/link.csr is the link itself, not a copy"
    );
    assert_eq!(
        fs::read(&outside.path).unwrap(),
        before,
        "the target is unchanged"
    );
    let reason = env.rejected_reason("link.csr");
    assert!(reason.contains("symbolic link"), "{reason}");
}

/// A FIFO as the link's target: following the link and reading would block `process`.
#[test]
fn symlink_to_a_fifo_outside_the_spool_is_not_read() {
    let env = TestEnv::new();
    let fifo = env.work.join("trap.fifo");
    mkfifo(&fifo);
    symlink(&fifo, env.incoming("trap.csr")).unwrap();
    env.drop_csr("after", &CsrSpec::ip("192.168.1.101"));
    env.process().stdout_has("1 approved, 0 denied, 1 rejected");
    assert!(env.rejected_reason("trap.csr").contains("symbolic link"));
}

#[test]
fn fifo_in_incoming_is_rejected_without_blocking() {
    let env = TestEnv::new();
    mkfifo(&env.incoming("pipe.csr"));
    env.drop_csr("after", &CsrSpec::ip("192.168.1.102"));
    env.process().stdout_has("1 approved, 0 denied, 1 rejected");
    assert!(env.rejected_reason("pipe.csr").contains("FIFO"));
    assert!(env.status_opt("pipe").is_none());
}

#[test]
fn directory_named_like_a_request_is_rejected() {
    let env = TestEnv::new();
    fs::create_dir(env.incoming("dir.csr")).unwrap();
    fs::write(env.incoming("dir.csr").join("inner.csr"), b"x").unwrap();
    env.process().stdout_has("0 approved, 0 denied, 1 rejected");
    assert!(env.rejected_reason("dir.csr").contains("directory"));
    assert!(env.status_opt("dir").is_none());
}

#[test]
fn file_name_with_spaces_is_rejected() {
    let env = TestEnv::new();
    let csr = env.csr("spaces", &CsrSpec::ip("192.168.1.103"));
    env.drop_file("my request.csr", csr.bytes());
    env.process().stdout_has("0 approved, 0 denied, 1 rejected");
    assert!(!env.rejected_reason("my request.csr").is_empty());
    assert!(env.list("rejected").contains(&"my request.csr".to_owned()));
    assert!(env.list("issued").is_empty());
}

#[test]
fn non_ascii_file_name_is_rejected() {
    let env = TestEnv::new();
    let csr = env.csr("nonascii", &CsrSpec::ip("192.168.1.104"));
    env.drop_file("zertifikat-ä.csr", csr.bytes());
    env.process().stdout_has("0 approved, 0 denied, 1 rejected");
    assert!(!env.rejected_reason("zertifikat-ä.csr").is_empty());
    assert!(env.list("issued").is_empty());
}

#[test]
fn file_name_that_is_not_utf8_is_rejected() {
    let env = TestEnv::new();
    let name = std::ffi::OsStr::from_bytes(b"bad\xff.csr");
    fs::write(env.incoming(name), b"x").unwrap();
    env.process().stdout_has("0 approved, 0 denied, 1 rejected");
    let reasons: Vec<String> = env
        .list("rejected")
        .into_iter()
        .filter(|n| n.ends_with(".reason"))
        .collect();
    assert_eq!(reasons.len(), 1, "{:?}", env.list("rejected"));
    assert!(env.list("incoming").is_empty());
}

#[test]
fn foo_txt_is_rejected() {
    let env = TestEnv::new();
    env.drop_file("foo.txt", b"hello");
    env.process().stdout_has("0 approved, 0 denied, 1 rejected");
    let reason = env.rejected_reason("foo.txt");
    assert!(reason.contains("<id>.csr"), "{reason}");
}

#[test]
fn producers_temp_and_dot_files_are_left_alone() {
    let env = TestEnv::new();
    let csr = env.csr("tmp", &CsrSpec::ip("192.168.1.105"));
    env.drop_file(".writing.csr", csr.bytes());
    env.drop_file("half.csr.tmp", csr.bytes());
    env.process().stdout_has("0 approved, 0 denied, 0 rejected");
    assert_eq!(env.list("incoming"), vec![".writing.csr", "half.csr.tmp"]);
}

/// One spool holding every kind of bad input and a few good requests: each bad one gets its
/// record or its `rejected/` entry, and every good one is still signed.
#[test]
fn processing_goes_on_after_every_bad_file_in_one_batch() {
    let env = TestEnv::new();
    let good = ["good-a", "good-b", "good-c"];
    for (i, id) in good.iter().enumerate() {
        env.drop_csr(id, &CsrSpec::ip(&format!("192.168.10.{}", i + 1)));
    }
    env.drop_file("g1.csr", b"garbage");
    env.drop_file("g2.csr", b"");
    env.drop_csr("g3", &CsrSpec::ip("8.8.8.8"));
    env.drop_csr("g4", &CsrSpec::ip("192.168.10.9").digest("sha1"));
    env.drop_csr(
        "g5",
        &CsrSpec::new(Key::EcP256).addext("subjectAltName=DNS:x.lan"),
    );
    let g6 = env.csr("g6", &CsrSpec::ip("192.168.10.6"));
    env.drop_file("g6.json", envelope("g6", "bogus", &g6.pem()));
    env.drop_file("not a request.csr", b"x");
    env.drop_file("foo.txt", b"x");
    mkfifo(&env.incoming("fifo.csr"));
    let target = env.work.join("target.csr");
    fs::write(&target, b"outside").unwrap();
    symlink(&target, env.incoming("ln.csr")).unwrap();
    env.process().stdout_has("3 approved, 6 denied, 4 rejected");
    for id in good {
        env.assert_approved(id);
    }
    for (id, reason) in [
        ("g1", "invalid_csr"),
        ("g2", "invalid_csr"),
        ("g3", "ip_not_allowed"),
        ("g4", "weak_signature"),
        ("g5", "dns_name_not_allowed"),
        ("g6", "unknown_type"),
    ] {
        env.assert_denied(id, reason);
    }
    for name in ["not a request.csr", "foo.txt", "fifo.csr", "ln.csr"] {
        assert!(!env.rejected_reason(name).trim().is_empty(), "{name}");
    }
    assert!(env.list("incoming").is_empty(), "{}", env.tree());
    assert!(env.list("processing").is_empty(), "{}", env.tree());
    env.run(&["ledger", "verify"]).success();
}

// ---------------------------------------------------------------------------------------
// Manual approval, operator decisions and expiry
// ---------------------------------------------------------------------------------------

fn manual_policy() -> String {
    policy_text("", "approval = \"manual\"", "")
}

#[test]
fn manual_profile_holds_then_approve_issues() {
    let env = TestEnv::with_policy(&manual_policy());
    env.drop_csr("held1", &CsrSpec::ip("192.168.5.5"));
    let summary = env.process_json();
    assert_eq!(summary["held"], 1, "{summary}");
    let s = env.status("held1");
    assert_eq!(s["status"], "pending", "{s:#}");
    assert!(s["certificate"].is_null());
    assert_eq!(env.list("held"), vec!["held1.csr"]);
    assert!(!env.issued("held1").exists());

    env.run(&["approve", "held1"])
        .success()
        .stdout_has("approved");
    env.check_issued("held1", &LeafExpect::webhook("192.168.5.5"));
    assert!(env.list("held").is_empty());
    assert_eq!(env.list("archive"), vec!["held1.csr"]);
    env.run(&["ledger", "verify"]).success();
}

/// A held request is not decided again by the next `process`.
#[test]
fn held_request_stays_pending_across_process_runs() {
    let env = TestEnv::with_policy(&manual_policy());
    env.drop_csr("wait", &CsrSpec::ip("192.168.5.6"));
    env.process();
    let first = env.status("wait");
    env.process();
    assert_eq!(env.status("wait"), first);
    assert_eq!(env.list("held"), vec!["wait.csr"]);
}

#[test]
fn approve_of_a_request_that_is_not_held_exits_2() {
    let env = TestEnv::new();
    env.run(&["approve", "nosuchid"])
        .code_is(2)
        .stderr_has("not held");
    env.drop_csr("done", &CsrSpec::ip("192.168.5.7"));
    env.process();
    let before = env.status("done");
    env.run(&["approve", "done"])
        .code_is(2)
        .stderr_has("approved");
    env.run(&["deny", "done", "--reason", "no"]).code_is(2);
    assert_eq!(env.status("done"), before);
}

#[test]
fn approve_with_a_bad_id_exits_2() {
    let env = TestEnv::new();
    env.run(&["approve", "../etc/passwd"]).code_is(2);
}

#[test]
fn approve_when_the_policy_now_denies_exits_3() {
    let env = TestEnv::with_policy(&manual_policy());
    env.drop_csr("changed", &CsrSpec::ip("192.168.77.7"));
    env.process();
    assert_eq!(env.status("changed")["status"], "pending");
    env.write_policy(&policy_text(
        "",
        "approval = \"manual\"\ndeny = [\"192.168.77.0/24\"]",
        "",
    ));
    env.run(&["approve", "changed"])
        .code_is(3)
        .stderr_has("ip_denied");
    env.assert_denied("changed", "ip_denied");
    assert!(env.list("held").is_empty());
}

#[test]
fn deny_with_reason_is_denied_by_operator() {
    let env = TestEnv::with_policy(&manual_policy());
    env.drop_csr("nope", &CsrSpec::ip("192.168.5.8"));
    env.process();
    env.run(&["deny", "nope", "--reason", "not on our network plan"])
        .success();
    let s = env.assert_denied("nope", "denied_by_operator");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("not on our network plan"),
        "{s:#}"
    );
    assert!(env.list("held").is_empty());
    env.run(&["approve", "nope"]).code_is(2);
}

#[test]
fn deny_without_reason_text_exits_2() {
    let env = TestEnv::with_policy(&manual_policy());
    env.drop_csr("r", &CsrSpec::ip("192.168.5.9"));
    env.process();
    env.run(&["deny", "r", "--reason", "  "]).code_is(2);
    env.run(&["deny", "r"]).code_is(2);
    assert_eq!(env.status("r")["status"], "pending");
}

fn short_ttl_policy() -> String {
    policy_text("", "approval = \"manual\"\nheld_ttl = \"1s\"", "")
}

#[test]
fn held_request_past_held_ttl_is_expired_by_process() {
    let env = TestEnv::with_policy(&short_ttl_policy());
    env.drop_csr("old", &CsrSpec::ip("192.168.5.10"));
    env.process();
    assert_eq!(env.status("old")["status"], "pending");
    sleep_secs(2);
    env.process();
    env.assert_denied("old", "expired");
    assert!(env.list("held").is_empty());
}

#[test]
fn held_request_past_held_ttl_is_expired_by_approve() {
    let env = TestEnv::with_policy(&short_ttl_policy());
    env.drop_csr("late", &CsrSpec::ip("192.168.5.11"));
    env.process();
    sleep_secs(2);
    let r = env.run(&["approve", "late"]);
    assert_ne!(r.code(), 0, "approving an expired request must fail: {r:?}");
    env.assert_denied("late", "expired");
    assert!(!env.issued("late").exists());
}

// ---------------------------------------------------------------------------------------
// The spool lock and the summary
// ---------------------------------------------------------------------------------------

#[test]
fn process_refuses_while_another_holds_the_spool_lock() {
    let env = TestEnv::new();
    env.drop_csr("locked", &CsrSpec::ip("192.168.5.12"));
    let lock = env.hold_spool_lock();
    env.run(&["process"]).code_is(1).stderr_has(".lock");
    assert_eq!(env.list("incoming"), vec!["locked.csr"]);
    drop(lock);
    env.process();
    env.assert_approved("locked");
}

#[test]
fn process_summary_counts_each_outcome() {
    let env = TestEnv::with_policy(&policy_text("", "", "approval = \"manual\""));
    env.drop_csr("s1", &CsrSpec::ip("192.168.8.1"));
    env.drop_csr("s2", &CsrSpec::ip("192.168.8.2"));
    env.drop_csr("s3", &CsrSpec::ip("8.8.8.8"));
    env.drop_file("s4.txt", b"x");
    let csr = env.csr("s5", &CsrSpec::ip("192.168.8.5"));
    env.drop_file("s5.json", envelope("s5", "private_server", &csr.pem()));
    let r = env.process();
    let line = r.stdout();
    assert!(
        line.lines()
            .any(|l| l.starts_with("2 approved, 1 denied, 1 rejected")),
        "summary line: {line}"
    );
    let env2 = TestEnv::new();
    env2.drop_csr("j1", &CsrSpec::ip("192.168.8.1"));
    env2.drop_file("j2.csr", b"x");
    let j = env2.process_json();
    assert_eq!(
        (
            j["approved"].as_u64(),
            j["denied"].as_u64(),
            j["rejected"].as_u64()
        ),
        (Some(1), Some(1), Some(0)),
        "{j}"
    );
}

#[test]
fn process_with_nothing_to_do_succeeds() {
    let env = TestEnv::new();
    env.process().stdout_has("0 approved, 0 denied, 0 rejected");
    env.run(&["ledger", "verify"]).success();
}

/// Global flags may stand before the subcommand too (DESIGN §6).
#[test]
fn global_flags_before_the_subcommand_work() {
    let env = TestEnv::new();
    env.drop_csr("before", &CsrSpec::ip("192.168.5.13"));
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("--state")
        .arg(&env.state)
        .arg("--spool")
        .arg(&env.spool)
        .arg("--policy")
        .arg(&env.policy)
        .arg("--passphrase-file")
        .arg(&env.passphrase_file)
        .arg("process")
        .current_dir(&env.root);
    run(cmd).success();
    env.assert_approved("before");
}

fn mkfifo(path: &Path) {
    let r = run({
        let mut c = std::process::Command::new("mkfifo");
        c.arg(path);
        c
    });
    r.success();
}

/// The pinned CSRs of `tests/fixtures`, each decided as its README says; the two approved
/// ones are real clients' CSRs for the same IP, so each gets its own certificate.
#[test]
fn fixtures_are_decided_as_the_readme_says() {
    let env = TestEnv::new();
    for (i, (name, _)) in FIXTURES.iter().enumerate() {
        env.drop_file(format!("fx{i}.csr"), fs::read(fixture(name)).unwrap());
    }
    env.process();
    for (i, (name, want)) in FIXTURES.iter().enumerate() {
        let id = format!("fx{i}");
        match want {
            None => {
                let rsa = name.contains("rsa");
                env.check_issued(
                    &id,
                    &LeafExpect {
                        rsa_key: rsa,
                        ..LeafExpect::webhook("192.168.1.10")
                    },
                );
            }
            Some(reason) => {
                env.assert_denied(&id, reason);
            }
        }
    }
    // The fixture README describes every file in the directory.
    let readme = fs::read_to_string(fixture("README.md")).unwrap();
    for entry in fs::read_dir(fixture("")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name != "README.md" && name != "make.sh" {
            assert!(
                readme.contains(&format!("`{name}`")),
                "README.md lacks {name}"
            );
            assert!(
                FIXTURES.iter().any(|(f, _)| *f == name),
                "FIXTURES lacks {name}"
            );
        }
    }
}

#[test]
fn approve_and_deny_accept_double_dash_before_the_id() {
    let env = TestEnv::with_policy(&manual_policy());
    env.drop_csr("dd1", &CsrSpec::ip("192.168.5.20"));
    env.drop_csr("dd2", &CsrSpec::ip("192.168.5.21"));
    env.process();
    run(env.cmd_dashdash(&["approve"], &["dd1"])).success();
    run(env.cmd_dashdash(&["deny", "--reason", "later"], &["dd2"])).success();
    env.check_issued("dd1", &LeafExpect::webhook("192.168.5.20"));
    env.assert_denied("dd2", "denied_by_operator");
}

/// Nothing of the CSR's subject reaches the certificate, whatever it holds (an e-mail
/// address in the subject would even fail the CA's name constraints).
#[test]
fn csr_subject_attributes_are_not_copied() {
    let env = TestEnv::new();
    env.drop_csr(
        "subj",
        &CsrSpec::new(Key::EcP256)
            .subject("/C=XX/O=Evil Corp/OU=admins/CN=192.168.1.30/emailAddress=root@example.com")
            .addext("subjectAltName=IP:192.168.1.30"),
    );
    env.process();
    env.check_issued("subj", &LeafExpect::webhook("192.168.1.30"));
    let text = x509_text(&env.issued("subj"));
    assert!(
        !text.contains("Evil Corp") && !text.contains("root@example.com"),
        "{text}"
    );
}

/// DESIGN §4: a profile with `subject_cn = true` puts `CN=<ip>` in the subject for legacy
/// clients, and the SAN is then not critical.
#[test]
fn subject_cn_profile_issues_cn_and_a_non_critical_san() {
    let env = TestEnv::with_policy(&policy_text("", "subject_cn = true", ""));
    env.drop_csr(
        "legacy",
        &CsrSpec::new(Key::EcP256).addext("subjectAltName=IP:192.168.1.31"),
    );
    env.process();
    env.check_issued(
        "legacy",
        &LeafExpect {
            subject_cn: true,
            ..LeafExpect::webhook("192.168.1.31")
        },
    );
}

#[test]
fn envelope_without_type_is_a_webhook() {
    let env = TestEnv::new();
    let csr = env.csr("notype", &CsrSpec::ip("192.168.1.32"));
    let body = serde_json::json!({"request_id": "notype", "content": csr.pem()}).to_string();
    env.drop_file("notype.json", body);
    env.process();
    let s = env.check_issued("notype", &LeafExpect::webhook("192.168.1.32"));
    assert_eq!(s["type"], "webhook");
}

#[test]
fn envelope_with_unknown_fields_is_invalid_csr() {
    let env = TestEnv::new();
    let csr = env.csr("extra", &CsrSpec::ip("192.168.1.33"));
    let body = serde_json::json!({
        "request_id": "extra", "type": "webhook", "content": csr.pem(), "admin": true
    })
    .to_string();
    denied_with(&env, "extra.json", body.as_bytes(), "invalid_csr");
}

#[test]
fn hard_link_to_a_file_outside_the_spool_is_rejected() {
    let env = TestEnv::new();
    let outside = env.csr("hard", &CsrSpec::ip("192.168.1.34"));
    fs::hard_link(&outside.path, env.incoming("hard.csr")).unwrap();
    env.process().stdout_has("0 approved, 0 denied, 1 rejected");
    assert!(env.status_opt("hard").is_none());
    assert!(env.rejected_reason("hard.csr").contains("hard link"));
    assert!(outside.path.exists());
}

/// `--workers N` splits the work; every request is still decided exactly once, with distinct
/// serials, and the ledger verifies.
#[test]
fn several_workers_decide_every_request_exactly_once() {
    let env = TestEnv::new();
    let n = 40;
    for i in 0..n {
        let spec = if i % 5 == 4 {
            CsrSpec::ip(&format!("8.8.8.{i}"))
        } else {
            CsrSpec::ip(&format!("192.168.20.{i}"))
        };
        env.drop_csr(&format!("w{i:02}"), &spec);
    }
    let j = {
        let r = env.run(&["process", "--workers", "3", "--json"]).success();
        serde_json::from_str::<serde_json::Value>(r.stdout().trim()).unwrap()
    };
    assert_eq!(j["approved"], 32, "{j}");
    assert_eq!(j["denied"], 8, "{j}");
    let mut serials = std::collections::HashSet::new();
    for i in 0..n {
        let s = env.status(&format!("w{i:02}"));
        if i % 5 == 4 {
            assert_eq!(s["reason"], "ip_not_allowed");
        } else {
            assert!(serials.insert(s["serial"].as_str().unwrap().to_owned()));
        }
    }
    assert_eq!(env.list("issued").len(), 32);
    let ledger = fs::read_to_string(env.ledger()).unwrap();
    assert_eq!(ledger.matches("\"kind\":\"issued\"").count(), 32);
    env.run(&["ledger", "verify"]).success();
}

#[test]
fn dev_flag_creates_an_unencrypted_development_ca_on_first_run() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    env.drop_csr("dev", &CsrSpec::ip("192.168.1.35"));
    env.run(&["process"]).code_is(1).stderr_has("init");
    assert!(env.list("issued").is_empty());
    env.run(&["process", "--dev"])
        .success()
        .stderr_has("DEVELOPMENT");
    let key = fs::read_to_string(env.state.join("ca.key")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    env.check_issued("dev", &LeafExpect::webhook("192.168.1.35"));
}

/// `smsgate-ca process | head -1` and the like: a reader that goes away must not make the
/// program panic (exit 101 with a backtrace); the work is done and the exit is quiet.
#[test]
fn closed_stdout_does_not_make_process_panic() {
    let env = TestEnv::new();
    env.drop_csr("pipe", &CsrSpec::ip("192.168.1.36"));
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let mut cmd = env.cmd(&["process"]);
    cmd.stdout(std::process::Stdio::from(write));
    let out = cmd.stderr(std::process::Stdio::piped()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    env.assert_approved("pipe");
}

/// DESIGN §2: a pending record counts too — the same content again is a no-op, other content
/// under the held id is a duplicate, and the held request is still there to approve.
#[test]
fn resubmitting_a_held_id_is_a_no_op_or_a_duplicate() {
    let env = TestEnv::with_policy(&manual_policy());
    let csr = env.drop_csr("held", &CsrSpec::ip("192.168.5.30"));
    env.process();
    let pending = env.status("held");
    env.drop_file("held.csr", csr.bytes());
    let j = env.process_json();
    assert_eq!(j["unchanged"], 1, "{j}");
    env.drop_csr("held", &CsrSpec::ip("192.168.5.31"));
    env.process().stdout_has("0 approved, 0 denied, 1 rejected");
    assert!(env
        .rejected_reason("held.csr")
        .contains("duplicate_request"));
    assert_eq!(env.status("held"), pending);
    assert_eq!(env.list("held"), vec!["held.csr"]);
    env.run(&["approve", "held"]).success();
    env.check_issued(
        "held",
        &LeafExpect {
            public_key_der: Some(csr.public_key_der()),
            ..LeafExpect::webhook("192.168.5.30")
        },
    );
}

/// IPv6 unique local addresses, when the policy allows them: the leaf verifies for that IP
/// through the CA's IPv6 name constraints.
#[test]
fn ipv6_ula_request_is_issued_and_verifies() {
    let policy = "version = 1\n[profiles.webhook]\nserial_prefix = 1\n\
                  allow = [\"192.168.0.0/16\", \"fd00::/8\"]\n";
    let env = TestEnv::with_policy(policy);
    env.drop_csr(
        "v6",
        &CsrSpec::new(Key::EcP256).addext("subjectAltName=IP:fd12:3456::10"),
    );
    env.drop_csr(
        "v6out",
        &CsrSpec::new(Key::EcP256).addext("subjectAltName=IP:fe80::1"),
    );
    env.process();
    env.check_issued("v6", &LeafExpect::webhook("fd12:3456::10"));
    env.assert_denied("v6out", "ip_not_allowed");
    let forged = env.forge_leaf("IP:2001:db8::1");
    env.verify_chain(&forged).code_is(2);
}
