//! Unit tests of the policy: every decision rule of DESIGN §3 on CSRs built in-process with
//! the `openssl` crate (and, where OpenSSL will not make such a CSR, on hand-made
//! [`CsrFacts`]), and the loading of policy files with their line-numbered errors.

use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use openssl::asn1::{Asn1Object, Asn1OctetString};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509Extension, X509NameBuilder, X509ReqBuilder};

use super::*;
use crate::csr::{self, CsrFacts, KeyKind, SignatureDigest};

// ---------------------------------------------------------------------------------------
// Building CSRs
// ---------------------------------------------------------------------------------------

/// The upstream `smsgate-ca` CLI's extendedKeyUsage value: an OID cut short (DESIGN §3).
const UPSTREAM_BAD_EKU: [u8; 12] = [
    0x30, 0x06, 0x06, 0x04, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01,
];

fn p256() -> &'static PKey<Private> {
    static K: OnceLock<PKey<Private>> = OnceLock::new();
    K.get_or_init(|| KeyType::EcP256.generate().unwrap())
}

fn p384() -> &'static PKey<Private> {
    static K: OnceLock<PKey<Private>> = OnceLock::new();
    K.get_or_init(|| KeyType::EcP384.generate().unwrap())
}

fn rsa(bits: u32) -> PKey<Private> {
    static R1024: OnceLock<PKey<Private>> = OnceLock::new();
    static R2048: OnceLock<PKey<Private>> = OnceLock::new();
    let cell = match bits {
        1024 => &R1024,
        2048 => &R2048,
        _ => return PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap(),
    };
    cell.get_or_init(|| PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap())
        .clone()
}

fn secp256k1() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::SECP256K1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// What goes into a test CSR.
struct Req {
    key: PKey<Private>,
    cns: Vec<String>,
    san: Option<Vec<String>>,
    extra: Vec<Ext>,
    digest: MessageDigest,
}

enum Ext {
    CaTrue,
    CaFalse,
    KeyCertSign,
    CrlSign,
    ServerAuth,
    UpstreamKeyUsage,
    UpstreamBadEku {
        critical: bool,
    },
    Raw {
        oid: &'static str,
        critical: bool,
        der: &'static [u8],
    },
}

impl Req {
    /// P-256, `CN=<ip>`, SAN `IP:<ip>`, SHA-256.
    fn ip(ip: &str) -> Self {
        Self::new().cn(ip).san(&[&format!("IP:{ip}")])
    }

    /// P-256, empty subject, no extensions, SHA-256.
    fn new() -> Self {
        Self {
            key: p256().clone(),
            cns: Vec::new(),
            san: None,
            extra: Vec::new(),
            digest: MessageDigest::sha256(),
        }
    }

    fn key(mut self, key: PKey<Private>) -> Self {
        self.key = key;
        self
    }

    fn cn(mut self, cn: &str) -> Self {
        self.cns.push(cn.to_owned());
        self
    }

    /// SAN entries as `IP:…`, `DNS:…`, `email:…`, `URI:…`.
    fn san(mut self, names: &[&str]) -> Self {
        self.san = Some(names.iter().map(|s| (*s).to_owned()).collect());
        self
    }

    fn ext(mut self, e: Ext) -> Self {
        self.extra.push(e);
        self
    }

    fn digest(mut self, d: MessageDigest) -> Self {
        self.digest = d;
        self
    }

    /// The DER CSR.
    fn der(&self) -> Vec<u8> {
        let mut b = X509ReqBuilder::new().unwrap();
        b.set_version(0).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        for cn in &self.cns {
            name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
        }
        b.set_subject_name(&name.build()).unwrap();
        b.set_pubkey(&self.key).unwrap();
        let mut exts = Stack::new().unwrap();
        if let Some(names) = &self.san {
            let mut san = SubjectAlternativeName::new();
            for n in names {
                let (kind, value) = n.split_once(':').unwrap();
                match kind {
                    "IP" => san.ip(value),
                    "DNS" => san.dns(value),
                    "email" => san.email(value),
                    "URI" => san.uri(value),
                    other => panic!("unknown SAN kind {other}"),
                };
            }
            exts.push(san.build(&b.x509v3_context(None)).unwrap())
                .unwrap();
        }
        for e in &self.extra {
            let x = match e {
                Ext::CaTrue => BasicConstraints::new().critical().ca().build(),
                Ext::CaFalse => BasicConstraints::new().critical().build(),
                Ext::KeyCertSign => KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .key_cert_sign()
                    .build(),
                Ext::CrlSign => KeyUsage::new().critical().crl_sign().build(),
                Ext::ServerAuth => ExtendedKeyUsage::new().server_auth().build(),
                Ext::UpstreamKeyUsage => KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .key_encipherment()
                    .build(),
                Ext::UpstreamBadEku { critical } => raw("2.5.29.37", *critical, &UPSTREAM_BAD_EKU),
                Ext::Raw { oid, critical, der } => raw(oid, *critical, der),
            }
            .unwrap();
            exts.push(x).unwrap();
        }
        if !exts.is_empty() {
            b.add_extensions(&exts).unwrap();
        }
        b.sign(&self.key, self.digest).unwrap();
        b.build().to_der().unwrap()
    }

    fn pem(&self) -> Vec<u8> {
        openssl::x509::X509Req::from_der(&self.der())
            .unwrap()
            .to_pem()
            .unwrap()
    }

    fn facts(&self) -> CsrFacts {
        csr::parse(&self.der()).unwrap()
    }
}

fn raw(oid: &str, critical: bool, der: &[u8]) -> Result<X509Extension, openssl::error::ErrorStack> {
    let oid = Asn1Object::from_str(oid)?;
    let value = Asn1OctetString::new_from_bytes(der)?;
    X509Extension::new_from_der(&oid, critical, &value)
}

/// Facts of a good request for `ip`, to be bent by hand into what OpenSSL will not make.
fn facts_for(ip: &str) -> CsrFacts {
    Req::ip(ip).facts()
}

// ---------------------------------------------------------------------------------------
// Deciding
// ---------------------------------------------------------------------------------------

fn default_policy() -> Policy {
    Policy::builtin_default()
}

fn policy(text: &str) -> Policy {
    Policy::from_toml(text, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// A policy with the default ranges and extra lines in `[defaults]` and in each profile.
fn policy_with(defaults: &str, webhook: &str, private_server: &str) -> Policy {
    policy(&format!(
        "version = 1\n[defaults]\n{defaults}\n\
         [profiles.webhook]\nserial_prefix = 1\n\
         allow = [\"10.0.0.0/8\", \"172.16.0.0/12\", \"192.168.0.0/16\"]\n{webhook}\n\
         [profiles.private_server]\nserial_prefix = 2\n\
         allow = [\"10.0.0.0/8\", \"172.16.0.0/12\", \"192.168.0.0/16\"]\n{private_server}\n"
    ))
}

fn no_ctx() -> Context {
    Context::default()
}

fn decide_with(req: &Req, kind: &str, p: &Policy) -> Evaluation {
    evaluate(&req.der(), kind, p, &no_ctx())
}

/// The decision for a webhook request under the default policy.
fn decision(req: &Req) -> Decision {
    decide_with(req, "webhook", &default_policy()).decision
}

#[track_caller]
fn plan_of(d: Decision) -> Plan {
    match d {
        Decision::Approve(p) => p,
        other => panic!("expected approval, got {other:?}"),
    }
}

#[track_caller]
fn assert_denied(d: &Decision, reason: Reason) -> String {
    match d {
        Decision::Deny(Denial { reason: r, message }) if *r == reason => {
            assert!(!message.trim().is_empty(), "a denial needs words");
            message.clone()
        }
        other => panic!("expected a denial {reason}, got {other:?}"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const RULES: [&str; 9] = [
    "type",
    "signature",
    "key",
    "digest",
    "extensions",
    "names",
    "common_name",
    "range",
    "approval",
];

#[test]
fn good_p256_request_is_approved_with_the_profiles_plan() {
    let e = decide_with(&Req::ip("192.168.1.10"), "webhook", &default_policy());
    let rules: Vec<&str> = e.verdicts.iter().map(|v| v.rule).collect();
    assert_eq!(rules, RULES);
    assert!(
        e.verdicts
            .iter()
            .all(|v| matches!(v.outcome, Outcome::Pass(_))),
        "{:?}",
        e.verdicts
    );
    let plan = plan_of(e.decision);
    assert_eq!(
        plan,
        Plan {
            ip: ip("192.168.1.10"),
            profile: "webhook".into(),
            serial_prefix: 1,
            validity_days: 365,
            backdate_seconds: 60,
            subject_cn: false,
            key_type: KeyType::EcP256,
            crl_url: None,
            ca_issuers_url: None,
        }
    );
    assert_eq!(
        e.public_key_der.unwrap(),
        p256().public_key_to_der().unwrap(),
        "the plan certifies the CSR's own key"
    );
}

#[test]
fn private_server_requests_get_the_private_server_profile() {
    let plan =
        plan_of(decide_with(&Req::ip("10.0.0.1"), "private_server", &default_policy()).decision);
    assert_eq!(plan.profile, "private_server");
    assert_eq!(plan.serial_prefix, 2);
}

#[test]
fn profile_settings_reach_the_plan() {
    let p = policy_with(
        "",
        "validity_days = 90\nbackdate_seconds = 5\nsubject_cn = true\n\
         crl_url = \"http://ca.lan/ca.crl\"\nca_issuers_url = \"http://ca.lan/ca.crt\"",
        "",
    );
    let plan = plan_of(decide_with(&Req::ip("10.0.0.1"), "webhook", &p).decision);
    assert_eq!(plan.validity_days, 90);
    assert_eq!(plan.backdate_seconds, 5);
    assert!(plan.subject_cn);
    assert_eq!(plan.crl_url.as_deref(), Some("http://ca.lan/ca.crl"));
    assert_eq!(plan.ca_issuers_url.as_deref(), Some("http://ca.lan/ca.crt"));
    let other = plan_of(decide_with(&Req::ip("10.0.0.1"), "private_server", &p).decision);
    assert_eq!(other.validity_days, 365);
    assert!(!other.subject_cn);
}

#[test]
fn accepted_key_types_are_in_the_plan() {
    for (key, want) in [
        (p384().clone(), KeyType::EcP384),
        (rsa(2048), KeyType::Rsa2048),
    ] {
        let plan = plan_of(decision(&Req::ip("10.0.0.1").key(key)));
        assert_eq!(plan.key_type, want);
    }
}

/// DESIGN §3: the SMSGate documentation's recipe gives, on OpenSSL 3, a CSR with no SAN and
/// `CN=<ip>`: that CN is the requested IP.
#[test]
fn cn_only_csr_with_a_canonical_ip_is_approved_for_that_ip() {
    let req = Req::new().key(rsa(2048)).cn("192.168.1.10");
    let facts = req.facts();
    assert!(!facts.san_present);
    let plan = plan_of(decision(&req));
    assert_eq!(plan.ip, ip("192.168.1.10"));
    assert_eq!(plan.key_type, KeyType::Rsa2048);
}

#[test]
fn cn_only_csr_whose_cn_is_not_a_canonical_ip_is_no_ip_san() {
    for cn in [
        "192.168.001.010",
        "192.168.1.010",
        "printer.lan",
        "FD00::1",
        " 10.0.0.1",
    ] {
        let d = decision(&Req::new().cn(cn));
        assert_denied(&d, Reason::NoIpSan);
    }
}

#[test]
fn csr_with_neither_san_nor_cn_is_no_ip_san() {
    let m = assert_denied(&decision(&Req::new()), Reason::NoIpSan);
    assert!(m.contains("subjectAltName"), "{m}");
}

/// DESIGN §3: the upstream CLI's CSRs carry a malformed, non-critical extendedKeyUsage and a
/// critical keyUsage; they are approved, and nothing of them reaches the plan.
#[test]
fn upstream_cli_csr_with_its_malformed_eku_is_approved() {
    let req = Req::ip("192.168.1.10")
        .ext(Ext::UpstreamKeyUsage)
        .ext(Ext::UpstreamBadEku { critical: false });
    let facts = req.facts();
    let eku = facts
        .extensions
        .iter()
        .find(|x| x.oid == "2.5.29.37")
        .expect("the EKU is seen");
    assert!(!eku.critical && !eku.asks_ca_powers);
    let plan = plan_of(decision(&req));
    assert_eq!(plan.ip, ip("192.168.1.10"));
    assert_eq!(plan.key_type, KeyType::EcP256);
}

/// The upstream EKU value does not parse as DER (bytes `05 07 03 01` trail the SEQUENCE), so
/// marked critical it is "critical and not understood": DESIGN §3 denies it, as
/// `extensions_rule` intends with `!(known && parsed)`. `csr::parse` reports it as parsed,
/// because `x509-parser` ignores the trailing bytes.
#[test]
fn the_malformed_eku_marked_critical_is_extension_not_allowed() {
    let facts = Req::ip("192.168.1.10")
        .ext(Ext::UpstreamBadEku { critical: false })
        .facts();
    let eku = facts
        .extensions
        .iter()
        .find(|x| x.oid == "2.5.29.37")
        .unwrap();
    assert!(
        !eku.parsed,
        "the upstream EKU value is not valid DER: {eku:?}"
    );
    let req = Req::ip("192.168.1.10").ext(Ext::UpstreamBadEku { critical: true });
    assert_denied(&decision(&req), Reason::ExtensionNotAllowed);
}

#[test]
fn ordinary_requested_extensions_are_ignored() {
    let req = Req::ip("192.168.1.10")
        .ext(Ext::CaFalse)
        .ext(Ext::ServerAuth)
        .ext(Ext::Raw {
            oid: "1.3.6.1.4.1.55555.1",
            critical: false,
            der: &[0x05, 0x00],
        });
    plan_of(decision(&req));
}

#[test]
fn requests_for_ca_powers_are_extension_not_allowed() {
    for e in [Ext::CaTrue, Ext::KeyCertSign, Ext::CrlSign] {
        let d = decision(&Req::ip("192.168.1.10").ext(e));
        let m = assert_denied(&d, Reason::ExtensionNotAllowed);
        assert!(m.contains("CA powers"), "{m}");
    }
}

#[test]
fn critical_unknown_extension_is_extension_not_allowed() {
    let req = Req::ip("192.168.1.10").ext(Ext::Raw {
        oid: "1.3.6.1.4.1.55555.1",
        critical: true,
        der: &[0x05, 0x00],
    });
    let m = assert_denied(&decision(&req), Reason::ExtensionNotAllowed);
    assert!(m.contains("1.3.6.1.4.1.55555.1"), "{m}");
}

#[test]
fn bad_self_signature_is_bad_signature() {
    let mut der = Req::ip("192.168.1.10").der();
    *der.last_mut().unwrap() ^= 0x01;
    let e = evaluate(&der, "webhook", &default_policy(), &no_ctx());
    assert_denied(&e.decision, Reason::BadSignature);
    let sig = e.verdicts.iter().find(|v| v.rule == "signature").unwrap();
    assert!(matches!(
        sig.outcome,
        Outcome::Fail(Reason::BadSignature, _)
    ));
}

#[test]
fn rsa_below_2048_bits_is_weak_key() {
    let m = assert_denied(
        &decision(&Req::ip("10.0.0.1").key(rsa(1024))),
        Reason::WeakKey,
    );
    assert!(m.contains("1024"), "{m}");
}

#[test]
fn unsupported_key_kinds_are_unsupported_key() {
    assert_denied(
        &decision(&Req::ip("10.0.0.1").key(secp256k1())),
        Reason::UnsupportedKey,
    );
    let ed = PKey::generate_ed25519().unwrap();
    // Ed25519 signs without a separate digest.
    let mut b = X509ReqBuilder::new().unwrap();
    b.set_pubkey(&ed).unwrap();
    b.sign(&ed, MessageDigest::null()).unwrap();
    let der = b.build().to_der().unwrap();
    let e = evaluate(&der, "webhook", &default_policy(), &no_ctx());
    assert_denied(&e.decision, Reason::UnsupportedKey);
    for kind in [
        KeyKind::Rsa(8192),
        KeyKind::Rsa(2047 + 1000),
        KeyKind::Other("DSA".into()),
    ] {
        let mut f = facts_for("10.0.0.1");
        f.key = kind;
        let e = decide(&f, "webhook", &default_policy(), &no_ctx());
        assert_denied(&e.decision, Reason::UnsupportedKey);
    }
}

#[test]
fn key_types_missing_from_the_policy_are_unsupported_key() {
    let p = policy_with("key_types = [\"ec-p256\"]", "", "");
    let e = decide_with(&Req::ip("10.0.0.1").key(rsa(2048)), "webhook", &p);
    let m = assert_denied(&e.decision, Reason::UnsupportedKey);
    assert!(m.contains("ec-p256"), "{m}");
    plan_of(decide_with(&Req::ip("10.0.0.1"), "webhook", &p).decision);
}

#[test]
fn digests_outside_the_policy_are_weak_signature() {
    let m = assert_denied(
        &decision(&Req::ip("10.0.0.1").digest(MessageDigest::sha1())),
        Reason::WeakSignature,
    );
    assert!(m.contains("sha1"), "{m}");
    plan_of(decision(
        &Req::ip("10.0.0.1").digest(MessageDigest::sha384()),
    ));
    plan_of(decision(
        &Req::ip("10.0.0.1").digest(MessageDigest::sha512()),
    ));
    let p = policy_with("csr_signature_digests = [\"sha384\"]", "", "");
    assert_denied(
        &decide_with(&Req::ip("10.0.0.1"), "webhook", &p).decision,
        Reason::WeakSignature,
    );
    for digest in [
        SignatureDigest::Md5,
        SignatureDigest::Other("1.2.3.4".into()),
    ] {
        let mut f = facts_for("10.0.0.1");
        f.signature_digest = digest;
        let e = decide(&f, "webhook", &default_policy(), &no_ctx());
        assert_denied(&e.decision, Reason::WeakSignature);
    }
}

#[test]
fn a_dns_name_is_dns_name_not_allowed_even_beside_an_ip() {
    assert_denied(
        &decision(&Req::new().san(&["DNS:printer.lan"])),
        Reason::DnsNameNotAllowed,
    );
    assert_denied(
        &decision(&Req::new().san(&["IP:10.0.0.1", "DNS:printer.lan"])),
        Reason::DnsNameNotAllowed,
    );
}

#[test]
fn more_than_one_ip_is_too_many_names() {
    let m = assert_denied(
        &decision(&Req::new().san(&["IP:10.0.0.1", "IP:10.0.0.2"])),
        Reason::TooManyNames,
    );
    assert!(m.contains("10.0.0.2"), "{m}");
    // The same IP twice is two names too.
    assert_denied(
        &decision(&Req::new().san(&["IP:10.0.0.1", "IP:10.0.0.1"])),
        Reason::TooManyNames,
    );
    assert_denied(
        &decision(&Req::new().san(&["IP:10.0.0.1", "email:a@b.lan"])),
        Reason::TooManyNames,
    );
}

#[test]
fn a_san_without_an_ip_is_no_ip_san() {
    for san in ["email:admin@example.com", "URI:https://10.0.0.1/"] {
        let d = decision(&Req::new().cn("10.0.0.1").san(&[san]));
        assert_denied(&d, Reason::NoIpSan);
    }
    let mut f = facts_for("10.0.0.1");
    f.san.clear();
    let e = decide(&f, "webhook", &default_policy(), &no_ctx());
    assert_denied(&e.decision, Reason::NoIpSan);
}

#[test]
fn cn_must_be_the_san_ip_in_canonical_form() {
    plan_of(decision(&Req::new().cn("10.0.0.1").san(&["IP:10.0.0.1"])));
    plan_of(decision(&Req::new().san(&["IP:10.0.0.1"])));
    for cn in ["10.0.0.2", "010.0.0.1", "host.lan"] {
        let d = decision(&Req::new().cn(cn).san(&["IP:10.0.0.1"]));
        assert_denied(&d, Reason::CnMismatch);
    }
    let d = decision(&Req::ip("10.0.0.1").cn("10.0.0.1"));
    assert_denied(&d, Reason::CnMismatch);
    // IPv6: the canonical text is the compressed lower-case form.
    let p = policy("version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"fd00::/8\"]\n");
    plan_of(decide_with(&Req::ip("fd00::1"), "webhook", &p).decision);
    for cn in ["FD00::1", "fd00:0::1", "fd00:0:0:0:0:0:0:1"] {
        let e = decide_with(&Req::new().cn(cn).san(&["IP:fd00::1"]), "webhook", &p);
        assert_denied(&e.decision, Reason::CnMismatch);
    }
}

/// The names rule looks at what would be certified: the SAN's IP, never the CN.
#[test]
fn the_plan_carries_the_san_ip() {
    let plan = plan_of(decision(&Req::new().san(&["IP:192.168.44.4"])));
    assert_eq!(plan.ip, ip("192.168.44.4"));
}

#[test]
fn public_addresses_are_ip_not_allowed_with_a_message_naming_the_ranges() {
    for addr in [
        "8.8.8.8",
        "1.1.1.1",
        "192.169.0.1",
        "2001:db8::1",
        "2606:4700::1111",
    ] {
        let d = decision(&Req::new().san(&[&format!("IP:{addr}")]));
        let m = assert_denied(&d, Reason::IpNotAllowed);
        assert!(m.contains(addr), "{m}");
    }
    let m = assert_denied(&decision(&Req::ip("8.8.8.8")), Reason::IpNotAllowed);
    assert!(m.contains("public") && m.contains("192.168.0.0/16"), "{m}");
}

#[test]
fn private_addresses_outside_the_profile_are_ip_not_allowed() {
    let p = policy(
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"192.168.0.0/16\"]\n",
    );
    for addr in [
        "10.0.0.1",
        "172.16.0.1",
        "100.64.0.1",
        "127.0.0.1",
        "169.254.1.1",
    ] {
        let e = decide_with(&Req::new().san(&[&format!("IP:{addr}")]), "webhook", &p);
        assert_denied(&e.decision, Reason::IpNotAllowed);
    }
    plan_of(decide_with(&Req::ip("192.168.255.255"), "webhook", &p).decision);
}

#[test]
fn ipv4_mapped_ipv6_is_ip_not_allowed() {
    let d = decision(&Req::new().san(&["IP:::ffff:192.168.1.1"]));
    let m = assert_denied(&d, Reason::IpNotAllowed);
    assert!(m.contains("192.168.1.1"), "{m}");
}

#[test]
fn ipv6_ula_and_cgnat_are_allowed_when_a_profile_lists_them() {
    let p = policy(
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\n\
         allow = [\"fd00::/8\", \"100.64.0.0/10\"]\n",
    );
    for addr in ["fd12:3456::1", "100.100.1.1"] {
        let plan =
            plan_of(decide_with(&Req::new().san(&[&format!("IP:{addr}")]), "webhook", &p).decision);
        assert_eq!(plan.ip, ip(addr));
    }
    plan_of(decide_with(&Req::ip("fd00::1"), "webhook", &p).decision);
    assert_denied(
        &decide_with(&Req::ip("fe80::1"), "webhook", &p).decision,
        Reason::IpNotAllowed,
    );
}

#[test]
fn deny_ranges_win_over_allow_ranges() {
    let p = policy_with("", "deny = [\"192.168.66.0/24\", \"10.0.0.1/32\"]", "");
    for addr in ["192.168.66.1", "192.168.66.255", "10.0.0.1"] {
        let e = decide_with(&Req::ip(addr), "webhook", &p);
        let m = assert_denied(&e.decision, Reason::IpDenied);
        assert!(m.contains(addr), "{m}");
    }
    for addr in ["192.168.67.1", "10.0.0.2"] {
        plan_of(decide_with(&Req::ip(addr), "webhook", &p).decision);
    }
    // The deny list is per profile.
    plan_of(decide_with(&Req::ip("192.168.66.1"), "private_server", &p).decision);
}

#[test]
fn the_cas_name_constraints_limit_what_policy_approves() {
    let narrow = Context {
        name_constraints: Some(vec!["192.168.0.0/16".parse().unwrap()]),
    };
    let e = evaluate(
        &Req::ip("10.0.0.1").der(),
        "webhook",
        &default_policy(),
        &narrow,
    );
    let m = assert_denied(&e.decision, Reason::IpNotAllowed);
    assert!(m.contains("name constraints"), "{m}");
    let e = evaluate(
        &Req::ip("192.168.0.1").der(),
        "webhook",
        &default_policy(),
        &narrow,
    );
    plan_of(e.decision);
}

#[test]
fn unknown_request_type_is_unknown_type_and_names_the_profiles() {
    let e = decide_with(&Req::ip("10.0.0.1"), "bogus", &default_policy());
    let m = assert_denied(&e.decision, Reason::UnknownType);
    assert!(m.contains("webhook") && m.contains("private_server"), "{m}");
    // The other rules are still reported, for `policy check`.
    let key = e.verdicts.iter().find(|v| v.rule == "key").unwrap();
    assert!(matches!(key.outcome, Outcome::Pass(_)));
    // A profile missing from the policy is unknown too.
    let only_webhook =
        policy("version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\"]\n");
    let e = decide_with(&Req::ip("10.0.0.1"), "private_server", &only_webhook);
    assert_denied(&e.decision, Reason::UnknownType);
}

#[test]
fn manual_profiles_hold_approvable_requests_only() {
    let p = policy_with("", "approval = \"manual\"", "");
    let e = decide_with(&Req::ip("10.0.0.1"), "webhook", &p);
    match e.decision {
        Decision::Hold(plan) => assert_eq!(plan.ip, ip("10.0.0.1")),
        other => panic!("expected a hold, got {other:?}"),
    }
    let approval = e.verdicts.iter().find(|v| v.rule == "approval").unwrap();
    assert!(matches!(approval.outcome, Outcome::Pass(_)));
    // A request that fails a rule is denied at once, not held.
    assert_denied(
        &decide_with(&Req::ip("8.8.8.8"), "webhook", &p).decision,
        Reason::IpNotAllowed,
    );
    // The other profile is still automatic.
    plan_of(decide_with(&Req::ip("10.0.0.1"), "private_server", &p).decision);
    // Manual in [defaults] applies to every profile.
    let all = policy_with("approval = \"manual\"", "", "");
    assert!(matches!(
        decide_with(&Req::ip("10.0.0.1"), "private_server", &all).decision,
        Decision::Hold(_)
    ));
}

/// The decision is the first failing rule, in the order `policy check` prints them; the
/// approval verdict is then skipped.
#[test]
fn the_first_failing_rule_decides() {
    let req = Req::ip("8.8.8.8").digest(MessageDigest::sha1());
    let e = decide_with(&req, "webhook", &default_policy());
    assert_denied(&e.decision, Reason::WeakSignature);
    let range = e.verdicts.iter().find(|v| v.rule == "range").unwrap();
    assert!(matches!(
        range.outcome,
        Outcome::Fail(Reason::IpNotAllowed, _)
    ));
    let approval = e.verdicts.iter().find(|v| v.rule == "approval").unwrap();
    assert_eq!(approval.outcome, Outcome::Skip);
}

#[test]
fn oversized_input_is_too_large_before_parsing() {
    let p = policy_with("max_csr_bytes = 512", "", "");
    let pem = Req::ip("10.0.0.1").key(rsa(2048)).pem();
    assert!(pem.len() > 512);
    let e = evaluate(&pem, "webhook", &p, &no_ctx());
    let m = assert_denied(&e.decision, Reason::TooLarge);
    assert!(m.contains("512"), "{m}");
    assert_eq!(e.verdicts.len(), 1);
    assert_eq!(e.verdicts[0].rule, "size");
    assert!(e.public_key_der.is_none());
    // Exactly at the limit is fine; one byte over is not.
    let der = Req::ip("10.0.0.1").der();
    let exact = policy_with(&format!("max_csr_bytes = {}", der.len().max(256)), "", "");
    if der.len() >= 256 {
        plan_of(evaluate(&der, "webhook", &exact, &no_ctx()).decision);
    }
    let garbage = vec![b'x'; 16_385];
    assert_denied(
        &evaluate(&garbage, "webhook", &default_policy(), &no_ctx()).decision,
        Reason::TooLarge,
    );
}

#[test]
fn input_that_is_no_csr_is_invalid_csr() {
    for bytes in [
        &b""[..],
        b"hello",
        b"\x30\x03\x02\x01\x00",
        b"-----BEGIN CERTIFICATE REQUEST-----\nSGVsbG8=\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        let e = evaluate(bytes, "webhook", &default_policy(), &no_ctx());
        assert_denied(&e.decision, Reason::InvalidCsr);
        assert_eq!(e.verdicts[0].rule, "parse");
    }
}

#[test]
fn pem_and_der_decide_alike() {
    let req = Req::ip("10.0.0.1");
    let a = evaluate(&req.der(), "webhook", &default_policy(), &no_ctx());
    let b = evaluate(&req.pem(), "webhook", &default_policy(), &no_ctx());
    assert_eq!(a.decision, b.decision);
    assert_eq!(a.verdicts, b.verdicts);
}

#[test]
fn denial_messages_are_plain_and_bounded() {
    let long = format!("{}.lan", "a".repeat(300));
    let d = decision(&Req::new().san(&[&format!("DNS:{long}")]));
    let m = assert_denied(&d, Reason::DnsNameNotAllowed);
    assert!(
        m.len() < 300,
        "a denial message quotes at most a bounded name: {m}"
    );
    assert!(!m.contains('\n'));
}

#[test]
fn every_reason_code_round_trips() {
    for r in Reason::ALL {
        assert_eq!(Reason::parse(r.as_str()), Some(r));
        assert_eq!(r.to_string(), r.as_str());
    }
    assert_eq!(Reason::parse("nope"), None);
}

// ---------------------------------------------------------------------------------------
// Loading policy files
// ---------------------------------------------------------------------------------------

/// Loads `text` and expects an error on `line` whose message contains `needle`.
#[track_caller]
fn load_error(text: &str, line: usize, needle: &str) {
    match Policy::from_toml(text, Path::new("/etc/smsgate/policy.toml")) {
        Ok(p) => panic!("loaded although it should not: {p:?}"),
        Err(e @ PolicyError::Invalid { .. }) => {
            let PolicyError::Invalid {
                line: l,
                path,
                message,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(*l, line, "wrong line for {needle:?}: {e}");
            assert_eq!(path, Path::new("/etc/smsgate/policy.toml"));
            assert!(message.contains(needle), "{e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("/etc/smsgate/policy.toml:{line}: ")),
                "{e}"
            );
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

const WEBHOOK: &str = "[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\"]\n";

#[test]
fn the_default_policy_is_design_section_3() {
    let p = default_policy();
    assert_eq!(p.profiles.len(), 2);
    let names: Vec<&str> = p.profiles.iter().map(|p| p.name.as_str()).collect();
    assert!(names.contains(&"webhook") && names.contains(&"private_server"));
    for (name, prefix) in [("webhook", 1), ("private_server", 2)] {
        let pr = p.profile(name).unwrap();
        assert_eq!(pr.serial_prefix, prefix);
        assert_eq!(
            pr.allow.describe(),
            "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16"
        );
        assert!(pr.deny.nets().is_empty());
        assert_eq!(pr.settings, p.defaults);
    }
    let d = &p.defaults;
    assert_eq!(d.validity_days, 365);
    assert_eq!(d.backdate_seconds, 60);
    assert_eq!(d.approval, Approval::Auto);
    assert_eq!(d.key_types, KeyType::ALL.to_vec());
    assert_eq!(d.csr_signature_digests, ["sha256", "sha384", "sha512"]);
    assert_eq!(d.max_csr_bytes, 16_384);
    assert_eq!(d.held_ttl, Duration::from_secs(30 * 86_400));
    assert!(!d.subject_cn);
    // The repository's file is the compiled-in default.
    let file =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/default.toml"))
            .unwrap();
    assert_eq!(file, DEFAULT_POLICY);
}

#[test]
fn a_minimal_policy_takes_the_built_in_defaults() {
    let p = policy(&format!("version = 1\n{WEBHOOK}"));
    assert_eq!(p.defaults, default_policy().defaults);
    assert!(p.profile("private_server").is_none());
}

#[test]
fn profiles_override_defaults_and_inherit_the_rest() {
    let p = policy(
        "version = 1\n[defaults]\nvalidity_days = 30\napproval = \"manual\"\nheld_ttl = \"2h\"\n\
         [profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\"]\nvalidity_days = 7\n\
         held_ttl = \"1s\"\nkey_types = [\"ec-p384\"]\nmax_csr_bytes = 4096\n\
         [profiles.private_server]\nserial_prefix = 2\nallow = [\"10.0.0.0/8\"]\napproval = \"auto\"\n",
    );
    let w = &p.profile("webhook").unwrap().settings;
    assert_eq!(w.validity_days, 7);
    assert_eq!(w.approval, Approval::Manual);
    assert_eq!(w.held_ttl, Duration::from_secs(1));
    assert_eq!(w.key_types, [KeyType::EcP384]);
    assert_eq!(w.max_csr_bytes, 4096);
    let s = &p.profile("private_server").unwrap().settings;
    assert_eq!(s.validity_days, 30);
    assert_eq!(s.approval, Approval::Auto);
    assert_eq!(s.held_ttl, Duration::from_secs(7200));
    assert_eq!(p.max_csr_bytes("webhook"), 4096);
    assert_eq!(p.max_csr_bytes("private_server"), 16_384);
    assert_eq!(p.max_csr_bytes("bogus"), 16_384);
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    load_error(
        &format!("version = 1\n[defaults]\nvalidity_dayz = 3\n{WEBHOOK}"),
        3,
        "validity_dayz",
    );
    load_error(
        &format!("version = 1\n{WEBHOOK}allow_dns = true\n"),
        5,
        "allow_dns",
    );
    load_error(
        &format!("version = 1\nverbose = true\n{WEBHOOK}"),
        2,
        "verbose",
    );
    load_error(
        &format!("version = 1\n[profile.webhook]\nserial_prefix = 1\n{WEBHOOK}"),
        2,
        "profile",
    );
}

#[test]
fn public_ranges_are_refused_with_their_line() {
    for range in [
        "8.0.0.0/8",
        "0.0.0.0/0",
        "192.0.0.0/2",
        "2000::/3",
        "::/0",
        "1.1.1.1/32",
    ] {
        load_error(
            &format!(
                "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\n  \"{range}\",\n  \"fd00::/8\",\n]\n"
            ),
            5,
            "globally routable",
        );
    }
}

#[test]
fn non_global_ranges_are_accepted() {
    for range in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
        "fd00::/8",
        "192.168.1.0/24",
        "10.1.2.3/32",
    ] {
        let p = policy(&format!(
            "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"{range}\"]\n"
        ));
        assert_eq!(p.profile("webhook").unwrap().allow.describe(), range);
    }
}

#[test]
fn malformed_cidrs_are_refused_with_their_line() {
    for range in [
        "10.0.0.0/33",
        "10.0.0/8",
        "banana",
        "",
        "10.0.0.0",
        "fd00::/129",
    ] {
        load_error(
            &format!("version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"{range}\"]\n"),
            4,
            "not a CIDR",
        );
    }
}

#[test]
fn host_bits_are_refused_with_the_fix() {
    load_error(
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"192.168.1.1/16\"]\n",
        4,
        "write 192.168.0.0/16",
    );
    load_error(
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\"]\ndeny = [\"10.0.0.1/24\"]\n",
        5,
        "host bits",
    );
}

#[test]
fn overlapping_nonsense_is_refused() {
    load_error(
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\", \"10.1.0.0/16\"]\n",
        4,
        "already inside",
    );
    load_error(
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\", \"10.0.0.0/8\"]\n",
        4,
        "",
    );
    load_error(
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\"]\ndeny = [\"192.168.0.0/16\"]\n",
        5,
        "outside every allow range",
    );
    load_error(
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\", \"192.168.1.0/24\"]\n\
         deny = [\"192.168.0.0/16\"]\n",
        4,
        "entirely denied",
    );
}

#[test]
fn serial_prefixes_must_be_distinct_and_keep_serials_positive() {
    let dup = "version = 1\n\
               [profiles.webhook]\nserial_prefix = 7\nallow = [\"10.0.0.0/8\"]\n\
               [profiles.private_server]\nserial_prefix = 7\nallow = [\"10.0.0.0/8\"]\n";
    let e = Policy::from_toml(dup, Path::new("p.toml")).unwrap_err();
    let PolicyError::Invalid { line, message, .. } = &e else {
        panic!("{e}")
    };
    assert!([3, 6].contains(line), "{e}");
    assert!(message.contains("serial_prefix = 7"), "{e}");
    for bad in ["0", "128", "-1", "255"] {
        load_error(
            &format!("version = 1\n[profiles.webhook]\nserial_prefix = {bad}\nallow = [\"10.0.0.0/8\"]\n"),
            3,
            "serial_prefix",
        );
    }
    policy("version = 1\n[profiles.webhook]\nserial_prefix = 127\nallow = [\"10.0.0.0/8\"]\n");
}

#[test]
fn bad_values_are_refused_with_their_line() {
    let cases: [(&str, &str); 12] = [
        ("validity_days = 0", "validity_days"),
        ("validity_days = 3651", "validity_days"),
        ("backdate_seconds = 86401", "backdate_seconds"),
        ("max_csr_bytes = 100", "max_csr_bytes"),
        ("max_csr_bytes = 70000", "max_csr_bytes"),
        ("held_ttl = \"0s\"", "held_ttl"),
        ("held_ttl = \"soon\"", "held_ttl"),
        ("key_types = [\"rsa-1024\"]", "rsa-1024"),
        ("csr_signature_digests = [\"sha1\"]", "sha1"),
        ("crl_url = \"ftp://ca.lan/ca.crl\"", "crl_url"),
        ("ca_issuers_url = \"http://ca.lan/a b\"", "ca_issuers_url"),
        ("approval = \"sometimes\"", "sometimes"),
    ];
    for (line, needle) in cases {
        load_error(
            &format!("version = 1\n[defaults]\n{line}\n{WEBHOOK}"),
            3,
            needle,
        );
    }
    for empty in ["key_types = []", "csr_signature_digests = []"] {
        let r = Policy::from_toml(
            &format!("version = 1\n[defaults]\n{empty}\n{WEBHOOK}"),
            Path::new("p"),
        );
        assert!(r.is_err(), "{empty} loaded");
    }
}

#[test]
fn structural_errors_are_refused() {
    load_error(&format!("version = 2\n{WEBHOOK}"), 1, "version = 2");
    assert!(
        Policy::from_toml(WEBHOOK, Path::new("p")).is_err(),
        "version is required"
    );
    let e = Policy::from_toml("version = 1\n", Path::new("p")).unwrap_err();
    assert!(e.to_string().contains("[profiles"), "{e}");
    load_error(
        "version = 1\n[profiles.webhooks]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\"]\n",
        2,
        "webhooks",
    );
    load_error(
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = []\n",
        4,
        "allows no addresses",
    );
    load_error("version = 1\n[profiles.webhook\n", 2, "");
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let e = Policy::load(Path::new("/nonexistent/policy.toml")).unwrap_err();
    assert!(matches!(e, PolicyError::Read { .. }));
    assert!(e.to_string().contains("/nonexistent/policy.toml"), "{e}");
}

#[test]
fn a_policy_written_back_loads_to_the_same_policy() {
    let p = policy(
        "version = 1\n[defaults]\nvalidity_days = 90\nheld_ttl = \"36h\"\n\
         [profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\", \"fd00::/8\"]\n\
         deny = [\"10.66.0.0/16\"]\napproval = \"manual\"\nsubject_cn = true\n\
         crl_url = \"http://ca.lan/ca.crl\"\n\
         [profiles.private_server]\nserial_prefix = 9\nallow = [\"192.168.0.0/16\"]\n\
         key_types = [\"ec-p256\"]\ncsr_signature_digests = [\"sha384\"]\n",
    );
    let again = Policy::from_toml(&p.to_toml(), Path::new("again.toml")).unwrap();
    assert_eq!(again.defaults, p.defaults);
    assert_eq!(again.profiles, p.profiles);
}

#[test]
fn all_allow_ranges_is_the_outer_union_of_the_profiles() {
    let p = policy(
        "version = 1\n\
         [profiles.webhook]\nserial_prefix = 1\nallow = [\"192.168.1.0/24\", \"10.0.0.0/8\"]\n\
         [profiles.private_server]\nserial_prefix = 2\nallow = [\"192.168.0.0/16\", \"fd00::/8\"]\n",
    );
    let got: Vec<String> = p
        .all_allow_ranges()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got, ["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"]);
    assert!(!p.any_subject_cn());
    let cn = policy_with("", "subject_cn = true", "");
    assert!(cn.any_subject_cn());
}

/// Issue 9: `revocation = "auto"` let anyone who writes the spool revoke any certificate. A
/// policy still saying it is a load error naming the line and the replacement; the default is
/// `proof`.
#[test]
fn issue_9_revocation_auto_is_a_load_error_naming_the_line_and_the_replacement() {
    let text = "version = 1\n\n[profiles.webhook]\nserial_prefix = 1\n\
                allow = [\"10.0.0.0/8\"]\nrevocation = \"auto\"\n";
    let e = Policy::from_toml(text, Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("p.toml:6:"), "{e}");
    assert!(e.contains("\"proof\"") && e.contains("\"manual\""), "{e}");
    let ok =
        Policy::from_toml(&text.replace("\"auto\"", "\"manual\""), Path::new("p.toml")).unwrap();
    assert_eq!(
        ok.profile("webhook").unwrap().settings.revocation,
        Revocation::Manual
    );
    assert_eq!(
        Policy::builtin_default().defaults.revocation,
        Revocation::Proof
    );
    let rendered = ok.to_toml();
    assert!(rendered.contains("revocation = \"manual\""), "{rendered}");
    Policy::from_toml(&rendered, Path::new("r.toml")).unwrap();
}
