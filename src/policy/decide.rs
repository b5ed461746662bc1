//! The decision: every rule of DESIGN §3 applied to CSR facts, each with its own verdict so
//! that `policy check` can show them all. Pure: no I/O, no clock, no key.
//!
//! The rules look at the names that would go into the certificate (the one IP), not at what
//! the request says about itself: a CSR with no SAN whose CN is an IP in canonical text
//! requests that IP (the SMSGate documentation's openssl recipe, DESIGN §3).

use std::net::IpAddr;

use ipnet::IpNet;

use super::range::{is_public, RangeSet};
use super::{Approval, Decision, Denial, Plan, Policy, Profile, Reason};
use crate::csr::{self, CsrFacts, KeyKind, SanEntry};
use crate::key_type::KeyType;

/// What policy knows beyond the file: the issuing CA's name constraints, when a CA exists.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// The permitted iPAddress subtrees of the issuing CA (None: no CA loaded, not checked).
    pub name_constraints: Option<Vec<IpNet>>,
}

/// A decision and the verdict of every rule that led to it.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The decision.
    pub decision: Decision,
    /// Each rule in order.
    pub verdicts: Vec<Verdict>,
    /// The CSR's public key (DER SPKI) when it parsed: what the signer certifies.
    pub public_key_der: Option<Vec<u8>>,
}

/// One rule's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Rule name (`size`, `parse`, `type`, `signature`, `key`, `digest`, `extensions`,
    /// `names`, `common_name`, `range`, `approval`).
    pub rule: &'static str,
    /// The outcome.
    pub outcome: Outcome,
}

/// A rule's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The rule holds; the text says what was checked.
    Pass(String),
    /// The rule fails.
    Fail(Reason, String),
    /// Not evaluated (an earlier rule made it meaningless).
    Skip,
}

/// Decides about raw CSR bytes: size limit, parse, then [`decide`].
pub fn evaluate(bytes: &[u8], kind: &str, policy: &Policy, ctx: &Context) -> Evaluation {
    let limit = policy.max_csr_bytes(kind);
    if bytes.len() as u64 > limit {
        let msg = format!(
            "the CSR is {} bytes, over the limit of {limit} bytes: send a PEM CSR of one key",
            bytes.len()
        );
        return single("size", Reason::TooLarge, msg);
    }
    match csr::parse(bytes) {
        Ok(facts) => decide(&facts, kind, policy, ctx),
        Err(e) => single(
            "parse",
            Reason::InvalidCsr,
            format!("{e}: send the output of `openssl req -new`"),
        ),
    }
}

/// Decides about a parsed CSR for a request type.
pub fn decide(facts: &CsrFacts, kind: &str, policy: &Policy, ctx: &Context) -> Evaluation {
    let mut v = Vec::new();
    let profile = policy.profile(kind);
    v.push(match profile {
        Some(_) => pass("type", format!("profile {kind} exists")),
        None => fail(
            "type",
            Reason::UnknownType,
            format!(
                "unknown request type {:?}: use {}",
                truncate(kind),
                policy
                    .profiles
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ),
    });
    v.push(if !super::key::signature_checkable(&facts.key_material) {
        // A point that is nobody's key: its "signature" means nothing (the key rule says why).
        skip("signature")
    } else if facts.signature_valid {
        pass("signature", "the CSR's self-signature verifies".into())
    } else {
        fail("signature", Reason::BadSignature, "the CSR's signature does not verify with its own key: make a new CSR with the private key it carries".into())
    });
    // Profile-dependent rules fall back to the defaults when the type is unknown, so that
    // `policy check` still reports on them.
    let settings = profile.map_or(&policy.defaults, |p| &p.settings);
    let key_type = key_rule(facts, settings, &mut v);
    v.push(digest_rule(facts, settings));
    v.push(extensions_rule(facts));
    let ip = names_rule(facts, &mut v);
    match (ip, profile) {
        (Some(ip), Some(p)) => v.push(range_rule(ip, p, ctx)),
        _ => v.push(skip("range")),
    }

    let first_failure = v.iter().find_map(|x| match &x.outcome {
        Outcome::Fail(reason, message) => Some(Denial {
            reason: *reason,
            message: message.clone(),
        }),
        _ => None,
    });
    let decision = match (first_failure, profile, ip, key_type) {
        (Some(denial), ..) => {
            v.push(skip("approval"));
            Decision::Deny(denial)
        }
        (None, Some(p), Some(ip), Some(key_type)) => {
            let plan = plan(p, ip, key_type);
            if p.settings.approval == Approval::Manual {
                v.push(pass(
                    "approval",
                    format!("profile {} is held for an operator's approval", p.name),
                ));
                Decision::Hold(plan)
            } else {
                v.push(pass("approval", "automatic".into()));
                Decision::Approve(plan)
            }
        }
        // Every path to here has pushed a failure; keep a safe answer all the same.
        _ => Decision::Deny(Denial {
            reason: Reason::InvalidCsr,
            message: "the request could not be evaluated".into(),
        }),
    };
    Evaluation {
        decision,
        verdicts: v,
        public_key_der: Some(facts.public_key_der.clone()),
    }
}

fn plan(p: &Profile, ip: IpAddr, key_type: KeyType) -> Plan {
    Plan {
        ip,
        profile: p.name.clone(),
        serial_prefix: p.serial_prefix,
        validity_days: p.settings.validity_days,
        backdate_seconds: p.settings.backdate_seconds,
        subject_cn: p.settings.subject_cn,
        key_type,
        crl_url: p.settings.crl_url.clone(),
        ca_issuers_url: p.settings.ca_issuers_url.clone(),
    }
}

fn key_rule(facts: &CsrFacts, s: &super::Settings, v: &mut Vec<Verdict>) -> Option<KeyType> {
    let allowed = s
        .key_types
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let key_type = match &facts.key {
        KeyKind::EcP256 => Some(KeyType::EcP256),
        KeyKind::EcP384 => Some(KeyType::EcP384),
        KeyKind::Rsa(2048) => Some(KeyType::Rsa2048),
        KeyKind::Rsa(3072) => Some(KeyType::Rsa3072),
        KeyKind::Rsa(4096) => Some(KeyType::Rsa4096),
        KeyKind::Rsa(bits) if *bits < 2048 => {
            v.push(fail("key", Reason::WeakKey, format!(
                "the CSR's RSA key has {bits} bits, too weak: make a new key with at least 2048 bits (or ec-p256)"
            )));
            return None;
        }
        KeyKind::Rsa(bits) => {
            v.push(fail(
                "key",
                Reason::UnsupportedKey,
                format!("an RSA key of {bits} bits is not supported: use one of {allowed}"),
            ));
            return None;
        }
        KeyKind::Other(name) => {
            v.push(fail(
                "key",
                Reason::UnsupportedKey,
                format!(
                    "the CSR's key is {name}, which this CA does not sign: use one of {allowed}"
                ),
            ));
            return None;
        }
    };
    let t = key_type.expect("every arm above that reaches here is Some");
    if let Err((reason, message)) = super::key::check(&facts.key_material) {
        v.push(fail("key", reason, message));
        None
    } else if s.key_types.contains(&t) {
        v.push(pass("key", format!("{t} is accepted")));
        Some(t)
    } else {
        v.push(fail(
            "key",
            Reason::UnsupportedKey,
            format!("{t} keys are not accepted here: use one of {allowed}"),
        ));
        None
    }
}

fn digest_rule(facts: &CsrFacts, s: &super::Settings) -> Verdict {
    let name = facts.signature_digest.name();
    if s.csr_signature_digests.iter().any(|d| d == name) {
        pass("digest", format!("signed with {name}"))
    } else {
        fail("digest", Reason::WeakSignature, format!(
            "the CSR is signed with {}, which is not accepted: sign it with {} (openssl req -sha256)",
            truncate(name),
            s.csr_signature_digests.join(", ")
        ))
    }
}

fn extensions_rule(facts: &CsrFacts) -> Verdict {
    for ext in &facts.extensions {
        if ext.asks_ca_powers {
            return fail("extensions", Reason::ExtensionNotAllowed, format!(
                "the CSR asks for CA powers (extension {}: CA:TRUE or keyCertSign): request a server certificate without them",
                ext.oid
            ));
        }
        if ext.critical && !(ext.known && ext.parsed) {
            return fail(
                "extensions",
                Reason::ExtensionNotAllowed,
                format!(
                    "the CSR marks extension {} critical, and this CA does not know it: remove it",
                    ext.oid
                ),
            );
        }
    }
    pass("extensions", "no extension asks for CA powers or is critical and unknown (requested extensions are never copied)".into())
}

/// The names rule and the CN rule; returns the one IP the certificate would carry.
fn names_rule(facts: &CsrFacts, v: &mut Vec<Verdict>) -> Option<IpAddr> {
    let cn_ip = |cn: &str| cn.parse::<IpAddr>().ok().filter(|ip| ip.to_string() == cn);
    let ip = if facts.san_present {
        let dns: Vec<&str> = facts
            .san
            .iter()
            .filter_map(|n| match n {
                SanEntry::Dns(d) => Some(d.as_str()),
                _ => None,
            })
            .collect();
        if let Some(d) = dns.first() {
            v.push(fail("names", Reason::DnsNameNotAllowed, format!(
                "the CSR asks for the DNS name {:?}: this CA signs IP addresses only; request just the IP",
                truncate(d)
            )));
            v.push(skip("common_name"));
            return None;
        }
        match facts.san.as_slice() {
            [SanEntry::Ip(ip)] => *ip,
            [] => {
                v.push(fail("names", Reason::NoIpSan, "the CSR's subjectAltName is empty: request exactly one IP address (IP.0 = <ip>)".into()));
                v.push(skip("common_name"));
                return None;
            }
            [one] => {
                v.push(fail(
                    "names",
                    Reason::NoIpSan,
                    format!(
                        "the CSR asks for {}, not an IP address: request exactly one IP address",
                        describe(one)
                    ),
                ));
                v.push(skip("common_name"));
                return None;
            }
            many => {
                v.push(fail("names", Reason::TooManyNames, format!(
                    "the CSR asks for {} names ({}): request exactly one IP address per certificate",
                    many.len(),
                    many.iter().take(4).map(describe).collect::<Vec<_>>().join(", ")
                )));
                v.push(skip("common_name"));
                return None;
            }
        }
    } else {
        // DESIGN §3 compatibility: no SAN at all, CN = <ip> requests that IP.
        match facts.common_names.as_slice() {
            [cn] if cn_ip(cn).is_some() => {
                let ip = cn_ip(cn).expect("checked by the guard");
                v.push(pass(
                    "names",
                    format!("no subjectAltName; the CN {ip} is taken as the requested IP"),
                ));
                v.push(pass("common_name", format!("CN {ip} is the IP")));
                return Some(ip);
            }
            [cn] => {
                v.push(fail("names", Reason::NoIpSan, format!(
                    "the CSR has no subjectAltName and its CN {:?} is not an IP address in canonical form: \
                     add subjectAltName = IP:<ip> (openssl req -addext) or set CN to the IP",
                    truncate(cn)
                )));
                v.push(skip("common_name"));
                return None;
            }
            _ => {
                v.push(fail("names", Reason::NoIpSan, "the CSR requests no IP address: add subjectAltName = IP:<ip> (openssl req -addext \"subjectAltName = IP:<ip>\")".into()));
                v.push(skip("common_name"));
                return None;
            }
        }
    };
    v.push(pass("names", format!("exactly one name, the IP {ip}")));
    match facts.common_names.as_slice() {
        [] => v.push(pass("common_name", "no CN".into())),
        [cn] if cn_ip(cn) == Some(ip) => v.push(pass("common_name", format!("CN {cn} is the IP"))),
        [cn] => {
            v.push(fail(
                "common_name",
                Reason::CnMismatch,
                format!(
                    "the CSR's CN {:?} differs from its IP {ip}: set CN = {ip} or leave the CN out",
                    truncate(cn)
                ),
            ));
            return None;
        }
        many => {
            v.push(fail(
                "common_name",
                Reason::CnMismatch,
                format!(
                    "the CSR has {} CNs: give at most one, equal to {ip}",
                    many.len()
                ),
            ));
            return None;
        }
    }
    Some(ip)
}

fn range_rule(ip: IpAddr, p: &Profile, ctx: &Context) -> Verdict {
    if let IpAddr::V6(v6) = ip {
        if let Some(v4) = v6.to_ipv4_mapped() {
            if !p.allow.contains(ip) {
                return fail(
                    "range",
                    Reason::IpNotAllowed,
                    format!("{ip} is an IPv4-mapped IPv6 address: request {v4} instead"),
                );
            }
        }
    }
    if is_public(ip) && !p.allow.contains(ip) {
        return fail(
            "range",
            Reason::IpNotAllowed,
            format!(
                "{ip} is a public address; this CA only signs {}",
                p.allow.describe()
            ),
        );
    }
    if !p.allow.contains(ip) {
        return fail(
            "range",
            Reason::IpNotAllowed,
            format!(
                "{ip} is outside the ranges this CA signs for {}: {}",
                p.name,
                p.allow.describe()
            ),
        );
    }
    if p.deny.contains(ip) {
        return fail(
            "range",
            Reason::IpDenied,
            format!(
                "{ip} is in a range the operator denies for {} ({}): ask the CA operator",
                p.name,
                p.deny.describe()
            ),
        );
    }
    if let Some(nc) = &ctx.name_constraints {
        if !RangeSet::new(nc).contains(ip) {
            return fail(
                "range",
                Reason::IpNotAllowed,
                format!(
                    "{ip} is outside the CA's name constraints ({}): the CA cannot vouch for it",
                    RangeSet::new(nc).describe()
                ),
            );
        }
    }
    pass("range", format!("{ip} is inside {}", p.allow.describe()))
}

fn describe(n: &SanEntry) -> String {
    match n {
        SanEntry::Ip(ip) => format!("IP {ip}"),
        SanEntry::Dns(d) => format!("DNS {:?}", truncate(d)),
        SanEntry::Email(e) => format!("the e-mail address {:?}", truncate(e)),
        SanEntry::Uri(u) => format!("the URI {:?}", truncate(u)),
        SanEntry::Other(o) => truncate(o),
    }
}

fn truncate(s: &str) -> String {
    let t: String = s.chars().filter(|c| !c.is_control()).take(64).collect();
    if t.len() < s.len() {
        format!("{t}…")
    } else {
        t
    }
}

fn single(rule: &'static str, reason: Reason, message: String) -> Evaluation {
    Evaluation {
        decision: Decision::Deny(Denial {
            reason,
            message: message.clone(),
        }),
        verdicts: vec![Verdict {
            rule,
            outcome: Outcome::Fail(reason, message),
        }],
        public_key_der: None,
    }
}

fn pass(rule: &'static str, text: String) -> Verdict {
    Verdict {
        rule,
        outcome: Outcome::Pass(text),
    }
}

fn fail(rule: &'static str, reason: Reason, text: String) -> Verdict {
    Verdict {
        rule,
        outcome: Outcome::Fail(reason, text),
    }
}

fn skip(rule: &'static str) -> Verdict {
    Verdict {
        rule,
        outcome: Outcome::Skip,
    }
}
