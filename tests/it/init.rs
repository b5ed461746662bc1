//! `smsgate-ca init` (issue 2 item 2, DESIGN §4): the CA it makes — encrypted keys with
//! private modes, two tiers or one, each key type, critical name constraints that make
//! `openssl verify` refuse a certificate for a public IP, a DNS name or an e-mail address even
//! when signed with the CA key by hand — and the adoption of an existing CA with
//! `--import-cert/--import-key`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use crate::util::*;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_stores_encrypted_keys_with_private_modes() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    let r = env.init(&[]).success();
    assert_eq!(mode(&env.state), 0o700, "state directory mode");
    for key in ["root.key", "ca.key"] {
        let path = env.state.join(key);
        assert_eq!(mode(&path), 0o600, "{key} mode");
        let pem = fs::read_to_string(&path).unwrap();
        assert!(
            pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
            "{key} is not encrypted PKCS#8: {}",
            pem.lines().next().unwrap_or_default()
        );
        // It opens with the passphrase, and only with it.
        let pass = format!("file:{}", env.passphrase_file.display());
        openssl_ok(&[
            "pkey".as_ref(),
            "-in".as_ref(),
            path.as_os_str(),
            "-passin".as_ref(),
            pass.as_ref(),
            "-noout".as_ref(),
        ]);
        let wrong = openssl(&[
            "pkey".as_ref(),
            "-in".as_ref(),
            path.as_os_str(),
            "-passin".as_ref(),
            "pass:wrong passphrase".as_ref(),
            "-noout".as_ref(),
        ]);
        assert_ne!(wrong.code(), 0, "{key} opens with a wrong passphrase");
    }
    // It prints the root's fingerprint and where the trust anchor is.
    let fp = openssl_fingerprint(&env.root_cert());
    r.stdout_has(&fp).stdout_has("root.crt");
    // The chain sent with leaves is the intermediate.
    assert_eq!(pem_certs(&env.chain()), pem_certs(&env.ca_cert()));
    // The intermediate chains to the root.
    openssl(&[
        "verify".as_ref(),
        "-CAfile".as_ref(),
        env.root_cert().as_os_str(),
        env.ca_cert().as_os_str(),
    ])
    .success();
}

#[test]
fn init_refuses_to_overwrite_an_existing_ca() {
    let env = TestEnv::new();
    let before: Vec<Vec<u8>> = ["root.key", "ca.key", "root.crt", "ca.crt"]
        .iter()
        .map(|f| fs::read(env.state.join(f)).unwrap())
        .collect();
    env.init(&[]).code_is(2).stderr_has("already exists");
    env.init(&["--root-only"]).code_is(2);
    let after: Vec<Vec<u8>> = ["root.key", "ca.key", "root.crt", "ca.crt"]
        .iter()
        .map(|f| fs::read(env.state.join(f)).unwrap())
        .collect();
    assert_eq!(before, after, "init changed an existing CA");
}

#[test]
fn process_with_a_wrong_passphrase_exits_1_and_touches_nothing() {
    let env = TestEnv::new();
    env.drop_csr("w", &CsrSpec::ip("192.168.1.10"));
    fs::write(&env.passphrase_file, "not the passphrase\n").unwrap();
    env.run(&["process"])
        .code_is(1)
        .stderr_has("cannot decrypt the CA key")
        .stderr_has("wrong passphrase");
    assert_eq!(env.list("incoming"), vec!["w.csr"]);
    assert!(env.status_opt("w").is_none());
}

#[test]
fn process_without_a_passphrase_source_and_no_terminal_fails_clearly() {
    let env = TestEnv::new();
    env.drop_csr("np", &CsrSpec::ip("192.168.1.10"));
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["process", "--state"])
        .arg(&env.state)
        .arg("--spool")
        .arg(&env.spool)
        .arg("--policy")
        .arg(&env.policy)
        .current_dir(&env.root)
        .env_remove("CREDENTIALS_DIRECTORY");
    let r = run(cmd);
    assert_ne!(r.code(), 0, "{r:?}");
    r.stderr_has("--passphrase-file");
    assert_eq!(env.list("incoming"), vec!["np.csr"]);
}

#[test]
fn root_only_makes_one_tier_whose_leaves_verify_with_the_root_alone() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    env.init(&["--root-only"]).success();
    assert_eq!(
        fs::read(env.root_cert()).unwrap(),
        fs::read(env.ca_cert()).unwrap()
    );
    assert!(
        pem_certs(&env.chain()).is_empty(),
        "one tier sends no intermediate"
    );
    let ca_key = fs::read_to_string(env.state.join("ca.key")).unwrap();
    assert!(ca_key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));

    env.drop_csr("one", &CsrSpec::ip("192.168.1.10"));
    env.process();
    env.check_issued("one", &LeafExpect::webhook("192.168.1.10"));
    assert_eq!(pem_certs(&env.issued("one")).len(), 1, "only the leaf");
    openssl(&[
        "verify".as_ref(),
        "-CAfile".as_ref(),
        env.root_cert().as_os_str(),
        env.issued("one").as_os_str(),
    ])
    .success();
    // The root itself carries the name constraints.
    let text = x509_text(&env.root_cert());
    assert!(text.contains("X509v3 Name Constraints: critical"), "{text}");
    let forged = env.forge_leaf("IP:8.8.8.8");
    env.verify_chain(&forged).code_is(2);
}

#[test]
fn ec_p384_ca_signs_leaves_with_ecdsa_sha384() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    env.init(&["--key-type", "ec-p384"]).success();
    for cert in [env.root_cert(), env.ca_cert()] {
        let text = x509_text(&cert);
        assert!(text.contains("ASN1 OID: secp384r1"), "{text}");
        assert!(
            text.contains("Signature Algorithm: ecdsa-with-SHA384"),
            "{text}"
        );
    }
    env.drop_csr("p384", &CsrSpec::ip("10.0.0.1"));
    env.process();
    env.check_issued(
        "p384",
        &LeafExpect {
            signature_oid: ECDSA_SHA384,
            ..LeafExpect::webhook("10.0.0.1")
        },
    );
}

#[test]
fn rsa_2048_ca_signs_leaves_with_sha256_rsa() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    env.init(&["--key-type", "rsa-2048"]).success();
    for cert in [env.root_cert(), env.ca_cert()] {
        let text = x509_text(&cert);
        assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
        assert!(
            text.contains("Signature Algorithm: sha256WithRSAEncryption"),
            "{text}"
        );
    }
    env.drop_csr("rsa", &CsrSpec::ip("10.0.0.2"));
    env.process();
    env.check_issued(
        "rsa",
        &LeafExpect {
            signature_oid: RSA_SHA256,
            ..LeafExpect::webhook("10.0.0.2")
        },
    );
}

#[test]
fn unknown_key_type_exits_2() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    env.init(&["--key-type", "rsa-1024"]).code_is(2);
    assert!(!env.state.join("ca.key").exists());
}

/// The name constraints of both tiers come from `--policy` (the union of the profiles' allow
/// ranges), are critical, and exclude every DNS name and e-mail address (`nc.invalid`).
#[test]
fn name_constraints_of_root_and_intermediate_follow_the_policy() {
    let policy = r#"version = 1
[profiles.webhook]
serial_prefix = 1
allow = ["192.168.0.0/16", "100.64.0.0/10"]
[profiles.private_server]
serial_prefix = 2
allow = ["10.0.0.0/8", "fd00::/8"]
"#;
    let env = TestEnv::with_policy(policy);
    for cert in [env.root_cert(), env.ca_cert()] {
        let text = x509_text(&cert);
        let nc: String = text
            .lines()
            .skip_while(|l| !l.contains("X509v3 Name Constraints"))
            .take_while(|l| !l.contains("Signature Algorithm"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(nc.contains("X509v3 Name Constraints: critical"), "{text}");
        for want in [
            "IP:10.0.0.0/255.0.0.0",
            "IP:100.64.0.0/255.192.0.0",
            "IP:192.168.0.0/255.255.0.0",
            "IP:FD00:0:0:0:0:0:0:0/FF00:0:0:0:0:0:0:0",
            "DNS:nc.invalid",
            "email:nc.invalid",
        ] {
            assert!(nc.contains(want), "{} lacks {want}:\n{nc}", cert.display());
        }
        assert!(
            !nc.contains("172.16"),
            "172.16.0.0/12 is in no profile:\n{nc}"
        );
        assert!(!nc.contains("Excluded"), "{nc}");
        assert!(text.contains("CA:TRUE"), "{text}");
        assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");

        // And independently with x509-parser: CA:TRUE, keyCertSign+cRLSign, all critical.
        let der = pem_certs(&cert).remove(0);
        let (_, c) = X509Certificate::from_der(&der).unwrap();
        let mut seen = Vec::new();
        for x in c.extensions() {
            match x.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) => {
                    assert!(x.critical && bc.ca);
                    seen.push("bc");
                }
                ParsedExtension::KeyUsage(ku) => {
                    assert!(x.critical && ku.key_cert_sign() && ku.crl_sign());
                    assert!(!ku.digital_signature() && !ku.key_encipherment());
                    seen.push("ku");
                }
                ParsedExtension::NameConstraints(nc) => {
                    assert!(x.critical);
                    assert!(nc.excluded_subtrees.is_none());
                    assert_eq!(nc.permitted_subtrees.as_ref().unwrap().len(), 6);
                    seen.push("nc");
                }
                ParsedExtension::SubjectKeyIdentifier(_) => seen.push("ski"),
                ParsedExtension::AuthorityKeyIdentifier(_) => seen.push("aki"),
                other => panic!("unexpected CA extension {}: {other:?}", x.oid),
            }
        }
        for want in ["bc", "ku", "nc", "ski"] {
            assert!(seen.contains(&want), "{}: no {want}", cert.display());
        }
    }
    // A leaf for an allowed CGNAT address verifies; one for 172.16.1.1 is refused by policy.
    env.drop_csr("cgnat", &CsrSpec::ip("100.64.1.2"));
    env.drop_csr("outside", &CsrSpec::ip("172.16.1.1"));
    env.process();
    env.check_issued("cgnat", &LeafExpect::webhook("100.64.1.2"));
    env.assert_denied("outside", "ip_not_allowed");
}

#[test]
fn init_summary_names_the_constrained_ranges() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    env.init(&[])
        .success()
        .stdout_has("10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16");
}

// ---------------------------------------------------------------------------------------
// Name constraints stop a misused CA key
// ---------------------------------------------------------------------------------------

#[test]
fn forged_leaf_for_a_public_ip_fails_openssl_verify() {
    let env = TestEnv::new();
    let forged = env.forge_leaf("IP:8.8.8.8");
    assert!(x509_text(&forged).contains("IP Address:8.8.8.8"));
    env.verify_chain(&forged)
        .code_is(2)
        .stderr_has("permitted subtree violation");
}

#[test]
fn forged_leaf_for_a_dns_name_fails_openssl_verify() {
    let env = TestEnv::new();
    let forged = env.forge_leaf("DNS:example.com");
    env.verify_chain(&forged)
        .code_is(2)
        .stderr_has("permitted subtree violation");
}

#[test]
fn forged_leaf_for_an_email_address_fails_openssl_verify() {
    let env = TestEnv::new();
    let forged = env.forge_leaf("email:admin@example.com");
    env.verify_chain(&forged)
        .code_is(2)
        .stderr_has("permitted subtree violation");
}

/// The control: the same forgery for a permitted private IP verifies, so the failures above
/// come from the name constraints and not from the forging.
#[test]
fn forged_leaf_for_a_permitted_private_ip_verifies() {
    let env = TestEnv::new();
    let forged = env.forge_leaf("IP:192.168.1.10");
    env.verify_chain_with(&forged, &["-verify_ip", "192.168.1.10"])
        .success();
}

/// The root's constraints hold too: a leaf signed directly with the root key for a public IP
/// fails, the same for a private one verifies.
#[test]
fn forged_leaf_signed_by_the_root_key_is_constrained_too() {
    let env = TestEnv::new();
    let root_key = env.decrypt_key(&env.state.join("root.key"));
    let bad = env.forge_leaf_with("IP:1.1.1.1", &env.root_cert(), &root_key);
    let good = env.forge_leaf_with("IP:10.1.1.1", &env.root_cert(), &root_key);
    for (cert, code) in [(bad, 2), (good, 0)] {
        openssl(&[
            "verify".as_ref(),
            "-CAfile".as_ref(),
            env.root_cert().as_os_str(),
            cert.as_os_str(),
        ])
        .code_is(code);
    }
}

// ---------------------------------------------------------------------------------------
// Adopting an existing CA
// ---------------------------------------------------------------------------------------

/// An openssl-made CA like the upstream ca-backend's: self-signed, CA:TRUE, plain PKCS#8 key.
fn openssl_ca(
    env: &TestEnv,
    name: &str,
    extra: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = env.work.join(format!("{name}.key"));
    let crt = env.work.join(format!("{name}.crt"));
    let cnf = env.work.join(format!("{name}.cnf"));
    fs::write(
        &cnf,
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = x\n",
    )
    .unwrap();
    let mut args: Vec<String> = [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "3650",
        "-subj",
        "/CN=Upstream SMSGate CA",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    args.extend(["-config".into(), cnf.display().to_string()]);
    args.extend(["-keyout".into(), key.display().to_string()]);
    args.extend(["-out".into(), crt.display().to_string()]);
    args.extend(extra.iter().map(ToString::to_string));
    openssl_ok(&args);
    (crt, key)
}

const CA_EXTS: &[&str] = &[
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
    "-addext",
    "subjectKeyIdentifier=hash",
];

#[test]
fn import_adopts_an_openssl_made_ca_and_stores_its_key_encrypted() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    let (crt, key) = openssl_ca(&env, "upstream", CA_EXTS);
    assert!(fs::read_to_string(&key)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    env.init(&[
        "--import-cert",
        crt.to_str().unwrap(),
        "--import-key",
        key.to_str().unwrap(),
    ])
    .success();
    let stored = env.state.join("ca.key");
    assert!(fs::read_to_string(&stored)
        .unwrap()
        .starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    assert_eq!(mode(&stored), 0o600);
    assert_eq!(mode(&env.state), 0o700);
    assert_eq!(pem_certs(&env.root_cert()), pem_certs(&crt));
    assert_eq!(pem_certs(&env.ca_cert()), pem_certs(&crt));

    // The imported CA signs leaves directly; they chain to the imported certificate.
    env.drop_csr("adopted", &CsrSpec::ip("192.168.1.10"));
    env.process();
    env.check_issued("adopted", &LeafExpect::webhook("192.168.1.10"));
    openssl(&[
        "verify".as_ref(),
        "-CAfile".as_ref(),
        crt.as_os_str(),
        env.issued("adopted").as_os_str(),
    ])
    .success();
    // A second init over it is refused.
    env.init(&[
        "--import-cert",
        crt.to_str().unwrap(),
        "--import-key",
        key.to_str().unwrap(),
    ])
    .code_is(2);
}

#[test]
fn import_of_a_certificate_that_is_not_a_ca_exits_2() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    let (crt, key) = openssl_ca(
        &env,
        "leaf",
        &["-addext", "basicConstraints=critical,CA:FALSE"],
    );
    env.init(&[
        "--import-cert",
        crt.to_str().unwrap(),
        "--import-key",
        key.to_str().unwrap(),
    ])
    .code_is(2)
    .stderr_has("not a CA");
    assert!(!env.state.join("ca.key").exists());
}

#[test]
fn import_with_a_key_that_does_not_match_exits_2() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    let (crt, _) = openssl_ca(&env, "ca1", CA_EXTS);
    let (_, other_key) = openssl_ca(&env, "ca2", CA_EXTS);
    env.init(&[
        "--import-cert",
        crt.to_str().unwrap(),
        "--import-key",
        other_key.to_str().unwrap(),
    ])
    .code_is(2)
    .stderr_has("does not match");
    assert!(!env.state.join("ca.key").exists());
}

#[test]
fn import_of_garbage_files_exits_2() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    let junk = env.work.join("junk.pem");
    fs::write(&junk, "not a certificate").unwrap();
    let (crt, _) = openssl_ca(&env, "ca", CA_EXTS);
    env.init(&[
        "--import-cert",
        junk.to_str().unwrap(),
        "--import-key",
        junk.to_str().unwrap(),
    ])
    .code_is(2);
    env.init(&[
        "--import-cert",
        crt.to_str().unwrap(),
        "--import-key",
        junk.to_str().unwrap(),
    ])
    .code_is(2);
    assert!(!env.state.join("ca.key").exists());
}

/// A CA certificate without a subjectKeyIdentifier (an old or hand-made CA) can be adopted
/// only if the CA can then sign with it: leaves need AKI keyid (DESIGN §4). Either `init`
/// refuses it with exit 2, or the leaves it signs verify.
#[test]
fn import_of_a_ca_without_ski_is_refused_or_signs_verifiable_leaves() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    let (crt, key) = openssl_ca(
        &env,
        "noski",
        &[
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "subjectKeyIdentifier=none",
            "-addext",
            "authorityKeyIdentifier=none",
        ],
    );
    assert!(!x509_text(&crt).contains("Subject Key Identifier"));
    let r = env.init(&[
        "--import-cert",
        crt.to_str().unwrap(),
        "--import-key",
        key.to_str().unwrap(),
    ]);
    if r.code() == 2 {
        r.stderr_has("Key Identifier");
        return;
    }
    r.success();
    env.drop_csr("noski", &CsrSpec::ip("192.168.1.10"));
    env.process();
    let s = env.status("noski");
    assert_eq!(s["status"], "approved", "{s:#}");
    openssl(&[
        "verify".as_ref(),
        "-CAfile".as_ref(),
        crt.as_os_str(),
        env.issued("noski").as_os_str(),
    ])
    .success();
}

/// `--days` shorter than a leaf's lifetime: leaves never outlive the issuing CA (DESIGN §4).
#[test]
fn leaf_validity_is_capped_at_the_issuing_cas_not_after() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    env.init(&["--days", "30"]).success();
    env.drop_csr("short", &CsrSpec::ip("192.168.1.10"));
    env.process();
    let s = env.assert_approved("short");
    let ca = pem_certs(&env.ca_cert()).remove(0);
    let (_, ca) = X509Certificate::from_der(&ca).unwrap();
    let leaf = pem_certs(&env.issued("short")).remove(0);
    let (_, leaf) = X509Certificate::from_der(&leaf).unwrap();
    assert_eq!(
        leaf.validity().not_after.timestamp(),
        ca.validity().not_after.timestamp()
    );
    assert!(ca.validity().not_after.timestamp() - chrono::Utc::now().timestamp() <= 30 * 86_400);
    let na = chrono::DateTime::parse_from_rfc3339(s["not_after"].as_str().unwrap()).unwrap();
    assert_eq!(na.timestamp(), leaf.validity().not_after.timestamp());
    env.verify_chain(&env.issued("short")).success();
}

#[test]
fn subject_option_names_root_and_issuing_ca() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    env.init(&["--subject", "CN=Example Root CA,O=Example"])
        .success();
    let root = x509_text(&env.root_cert());
    assert!(
        root.contains("Subject: CN = Example Root CA, O = Example"),
        "{root}"
    );
    let ca = x509_text(&env.ca_cert());
    assert!(
        ca.contains("Subject: CN = Example Issuing CA, O = Example"),
        "{ca}"
    );
    assert!(
        ca.contains("Issuer: CN = Example Root CA, O = Example"),
        "{ca}"
    );
}

#[test]
fn no_passphrase_stores_plain_keys_only_when_asked() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    env.init(&["--no-passphrase"])
        .success()
        .stdout_has("not encrypted");
    let pem = fs::read_to_string(env.state.join("ca.key")).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    assert_eq!(mode(&env.state.join("ca.key")), 0o600);
    env.drop_csr("plain", &CsrSpec::ip("192.168.1.10"));
    env.process();
    env.check_issued("plain", &LeafExpect::webhook("192.168.1.10"));
}

/// DESIGN §4: a profile with `subject_cn = true` makes OpenSSL check the leaf's CN as a DNS
/// name, so the CA cannot exclude DNS names; `init` says so, and leaves still verify.
#[test]
fn subject_cn_policy_leaves_dns_names_unconstrained_and_init_says_so() {
    let env = TestEnv::without_ca(&policy_text("", "subject_cn = true", ""));
    env.init(&[]).success().stdout_has("subject_cn");
    for cert in [env.root_cert(), env.ca_cert()] {
        let text = x509_text(&cert);
        assert!(text.contains("X509v3 Name Constraints: critical"), "{text}");
        assert!(text.contains("email:nc.invalid"), "{text}");
        assert!(!text.contains("DNS:"), "{text}");
    }
    env.drop_csr("cn", &CsrSpec::ip("192.168.1.10"));
    env.process();
    env.check_issued(
        "cn",
        &LeafExpect {
            subject_cn: true,
            ..LeafExpect::webhook("192.168.1.10")
        },
    );
}

/// The summary `init` prints must describe the constraints it wrote.
#[test]
fn init_summary_does_not_claim_dns_names_are_excluded_when_they_are_not() {
    let env = TestEnv::without_ca(&policy_text("", "subject_cn = true", ""));
    let r = env.init(&[]).success();
    let line = r
        .stdout()
        .lines()
        .find(|l| l.starts_with("Name constraints"))
        .unwrap_or_default()
        .to_owned();
    assert!(!line.contains("no DNS names"), "{line}");
}
