//! Properties of issuance (issue 6): whatever a CSR asks for, a certificate the policy
//! approves holds exactly one SAN, the approved IP, and nothing else from the CSR.

use std::net::IpAddr;

use chrono::Utc;
use proptest::prelude::*;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::issue;
use super::serial::Serial;
use crate::key_type::KeyType;
use crate::policy::{self, Decision, Policy};
use crate::testkit::{test_ca, CsrSpec, San};

fn arb_ip() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<u8>(), any::<u8>(), 1u8..255).prop_map(|(a, b, c)| format!("10.{a}.{b}.{c}")),
        (0u8..16, any::<u8>(), 1u8..255).prop_map(|(a, b, c)| format!("172.{}.{b}.{c}", 16 + a)),
        (any::<u8>(), 1u8..255).prop_map(|(b, c)| format!("192.168.{b}.{c}")),
        (1u8..224, any::<u8>()).prop_map(|(a, b)| format!("{a}.{b}.1.1")),
    ]
}

fn arb_san() -> impl Strategy<Value = San> {
    prop_oneof![
        4 => arb_ip().prop_map(San::Ip),
        1 => "[a-z]{1,8}\\.example".prop_map(San::Dns),
        1 => "[a-z]{1,8}@example\\.com".prop_map(San::Email),
    ]
}

/// Extensions a requester might add: keyUsage, EKU (incl. the upstream CLI's malformed one),
/// basicConstraints CA:TRUE, an unknown OID, each critical or not.
fn arb_extra() -> impl Strategy<Value = (String, bool, Vec<u8>)> {
    prop_oneof![
        Just(("2.5.29.15".to_owned(), vec![0x03, 0x02, 0x05, 0xa0])),
        Just((
            "2.5.29.37".to_owned(),
            vec![0x30, 0x06, 0x06, 0x04, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01]
        )),
        Just(("2.5.29.19".to_owned(), vec![0x30, 0x03, 0x01, 0x01, 0xff])),
        Just(("1.2.3.4.5".to_owned(), vec![0x05, 0x00])),
    ]
    .prop_flat_map(|(oid, der)| any::<bool>().prop_map(move |c| (oid.clone(), c, der.clone())))
}

fn arb_spec() -> impl Strategy<Value = CsrSpec> {
    (
        prop_oneof![Just(KeyType::EcP256), Just(KeyType::EcP384)],
        proptest::option::of(prop_oneof![arb_ip(), "[a-z]{1,10}".prop_map(String::from)]),
        proptest::collection::vec(arb_san(), 0..3),
        proptest::collection::vec(arb_extra(), 0..3),
    )
        .prop_map(|(key, cn, san, extra)| CsrSpec {
            key,
            cn,
            san,
            extra,
            digest: openssl::hash::MessageDigest::sha256(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn approved_certificates_hold_exactly_the_approved_ip(spec in arb_spec()) {
        let policy = Policy::builtin_default();
        let (pem, _) = spec.build();
        let e = policy::evaluate(&pem, "webhook", &policy, &policy::Context::default());
        let Decision::Approve(plan) = e.decision else { return Ok(()) };
        let (_dir, ca) = test_ca(&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]);
        let prepared = issue::prepare(&ca, &plan, &e.public_key_der.unwrap(), Serial::random(1), Utc::now()).unwrap();
        let issued = issue::issue(&ca, prepared).unwrap();
        let der = issued.der.clone();
        let (_, x) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
        prop_assert!(x.subject().iter().next().is_none(), "the subject is empty");
        let mut sans = Vec::new();
        for ext in x.extensions() {
            let oid = ext.oid.to_id_string();
            prop_assert!(["2.5.29.19", "2.5.29.15", "2.5.29.37", "2.5.29.14", "2.5.29.35", "2.5.29.17"].contains(&oid.as_str()), "unexpected {}", oid);
            if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
                sans.extend(san.general_names.iter().map(|g| match g {
                    GeneralName::IPAddress(b) if b.len() == 4 => Some(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())),
                    _ => None,
                }));
            }
            if let ParsedExtension::KeyUsage(ku) = ext.parsed_extension() {
                prop_assert!(!ku.data_encipherment() && !ku.key_cert_sign());
            }
            if let ParsedExtension::BasicConstraints(bc) = ext.parsed_extension() {
                prop_assert!(!bc.ca);
            }
        }
        prop_assert_eq!(sans, vec![Some(plan.ip)]);
        let expected_ip = spec.san.iter().find_map(|s| match s { San::Ip(ip) => Some(ip.clone()), _ => None }).or(spec.cn.clone()).unwrap();
        prop_assert_eq!(plan.ip.to_string(), expected_ip);
    }

    /// A policy rendered to TOML and loaded again decides every CSR the same way.
    #[test]
    fn policy_serialised_and_reloaded_decides_the_same(spec in arb_spec(), deny_third in any::<u8>(), manual in any::<bool>(), days in 1u32..3650) {
        let text = format!(
            "version = 1\n[defaults]\nvalidity_days = {days}\napproval = \"{}\"\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\", \"192.168.0.0/16\"]\ndeny = [\"10.{deny_third}.0.0/16\"]\n[profiles.private_server]\nserial_prefix = 2\nallow = [\"172.16.0.0/12\"]\n",
            if manual { "manual" } else { "auto" }
        );
        let p1 = Policy::from_toml(&text, std::path::Path::new("p.toml")).unwrap();
        let p2 = Policy::from_toml(&p1.to_toml(), std::path::Path::new("rendered.toml")).unwrap();
        let (pem, _) = spec.build();
        for kind in ["webhook", "private_server"] {
            let a = policy::evaluate(&pem, kind, &p1, &policy::Context::default());
            let b = policy::evaluate(&pem, kind, &p2, &policy::Context::default());
            prop_assert_eq!(a.decision, b.decision);
            prop_assert_eq!(a.verdicts, b.verdicts);
        }
    }
}

/// The signer refuses a plan outside the issuing CA's name constraints even if policy (here
/// a wider one) approved it.
#[test]
fn plans_outside_the_name_constraints_are_refused() {
    let policy = Policy::builtin_default();
    let (pem, _) = CsrSpec::ip("10.1.2.3").build();
    let e = policy::evaluate(&pem, "webhook", &policy, &policy::Context::default());
    let Decision::Approve(plan) = e.decision else {
        panic!("the default policy approves 10.1.2.3")
    };
    let (_dir, ca) = test_ca(&["192.168.0.0/16"]);
    let err = issue::prepare(
        &ca,
        &plan,
        &e.public_key_der.unwrap(),
        Serial::random(1),
        Utc::now(),
    )
    .unwrap_err();
    assert!(
        matches!(err, super::SignerError::OutsideNameConstraints(_)),
        "{err}"
    );
}
