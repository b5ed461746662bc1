//! The policy file format (DESIGN §3): TOML structs with `deny_unknown_fields`, validation that
//! names the line, and rendering back to TOML.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::range::{non_global, RangeSet};
use super::{Approval, Policy, PolicyError, Profile, Revocation, Settings};
use crate::key_type::KeyType;
use crate::request::RequestType;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePolicy {
    version: Spanned<u32>,
    #[serde(default)]
    defaults: FileSettings,
    #[serde(default)]
    profiles: BTreeMap<Spanned<String>, FileProfile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    validity_days: Option<Spanned<u32>>,
    backdate_seconds: Option<Spanned<u32>>,
    approval: Option<Approval>,
    key_types: Option<Vec<Spanned<String>>>,
    csr_signature_digests: Option<Vec<Spanned<String>>>,
    max_csr_bytes: Option<Spanned<u64>>,
    held_ttl: Option<Spanned<String>>,
    subject_cn: Option<bool>,
    revocation: Option<Spanned<String>>,
    crl_url: Option<Spanned<String>>,
    ca_issuers_url: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProfile {
    serial_prefix: Spanned<i64>,
    allow: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    // The keys a profile shares with [defaults]. Spelled out rather than `#[serde(flatten)]`,
    // which would defeat both `deny_unknown_fields` and the spans of `Spanned`.
    validity_days: Option<Spanned<u32>>,
    backdate_seconds: Option<Spanned<u32>>,
    approval: Option<Approval>,
    key_types: Option<Vec<Spanned<String>>>,
    csr_signature_digests: Option<Vec<Spanned<String>>>,
    max_csr_bytes: Option<Spanned<u64>>,
    held_ttl: Option<Spanned<String>>,
    subject_cn: Option<bool>,
    revocation: Option<Spanned<String>>,
    crl_url: Option<Spanned<String>>,
    ca_issuers_url: Option<Spanned<String>>,
}

impl FileProfile {
    fn settings(&self) -> FileSettings {
        FileSettings {
            validity_days: self.validity_days.clone(),
            backdate_seconds: self.backdate_seconds.clone(),
            approval: self.approval,
            key_types: self.key_types.clone(),
            csr_signature_digests: self.csr_signature_digests.clone(),
            max_csr_bytes: self.max_csr_bytes.clone(),
            held_ttl: self.held_ttl.clone(),
            subject_cn: self.subject_cn,
            revocation: self.revocation.clone(),
            crl_url: self.crl_url.clone(),
            ca_issuers_url: self.ca_issuers_url.clone(),
        }
    }
}

pub(super) fn parse(text: &str, origin: &Path) -> Result<Policy, PolicyError> {
    let err = |span: Option<std::ops::Range<usize>>, message: String| PolicyError::Invalid {
        path: origin.to_owned(),
        line: span.map_or(0, |s| line_of(text, s.start)),
        message,
    };
    let file: FilePolicy =
        toml::from_str(text).map_err(|e| err(e.span(), e.message().trim().to_owned()))?;
    if *file.version.get_ref() != 1 {
        return Err(err(
            Some(file.version.span()),
            format!(
                "version = {} is not supported: this program reads version = 1",
                file.version.get_ref()
            ),
        ));
    }
    let base = builtin_settings();
    let defaults = apply(&base, &file.defaults, &err)?;
    if file.profiles.is_empty() {
        return Err(err(None, "the policy has no [profiles.…]: add [profiles.webhook] and/or [profiles.private_server]".into()));
    }
    let public_space = non_global();
    let mut profiles = Vec::new();
    let mut prefixes: Vec<(u8, String)> = Vec::new();
    for (name, fp) in &file.profiles {
        let span = Some(name.span());
        if RequestType::parse(name.get_ref()).is_none() {
            return Err(err(span, format!(
                "unknown profile [profiles.{}]: profiles are named after request types, webhook or private_server",
                name.get_ref()
            )));
        }
        let prefix = *fp.serial_prefix.get_ref();
        if !(1..=127).contains(&prefix) {
            return Err(err(Some(fp.serial_prefix.span()), format!(
                "serial_prefix = {prefix} is out of range: use 1 to 127 (the first serial byte must keep the serial positive)"
            )));
        }
        let prefix = prefix as u8;
        if let Some((_, other)) = prefixes.iter().find(|(p, _)| *p == prefix) {
            return Err(err(Some(fp.serial_prefix.span()), format!(
                "serial_prefix = {prefix} is already used by profile {other}: give each profile its own"
            )));
        }
        prefixes.push((prefix, name.get_ref().clone()));
        let allow = nets(&fp.allow.get_ref()[..], &err)?;
        if allow.is_empty() {
            return Err(err(Some(fp.allow.span()), format!(
                "profile {} allows no addresses: list private ranges in allow, e.g. [\"192.168.0.0/16\"]",
                name.get_ref()
            )));
        }
        for (net, raw) in allow.iter().zip(fp.allow.get_ref()) {
            if !public_space.covers(net) {
                return Err(err(
                    Some(raw.span()),
                    format!(
                    "{net} includes globally routable addresses; this CA only signs private ranges \
                     (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7, …)"
                ),
                ));
            }
            if let Some(outer) = allow.iter().find(|o| *o != net && o.contains(net)) {
                return Err(err(
                    Some(raw.span()),
                    format!("{net} is already inside {outer}: remove one of them"),
                ));
            }
            if allow.iter().filter(|o| *o == net).count() > 1 {
                return Err(err(
                    Some(raw.span()),
                    format!("{net} is listed twice in allow"),
                ));
            }
        }
        let deny = nets(&fp.deny, &err)?;
        let allow_set = RangeSet::new(&allow);
        for (net, raw) in deny.iter().zip(&fp.deny) {
            if !allow.iter().any(|a| a.contains(net) || net.contains(a)) {
                return Err(err(Some(raw.span()), format!(
                    "deny range {net} is outside every allow range of profile {}: it has no effect, remove it",
                    name.get_ref()
                )));
            }
        }
        let deny_set = RangeSet::new(&deny);
        if let Some(a) = allow.iter().find(|a| deny_set.covers(a)) {
            return Err(err(
                Some(fp.allow.span()),
                format!(
                "allow range {a} is entirely denied by the deny list: remove it from one of them"
            ),
            ));
        }
        let settings = apply(&defaults, &fp.settings(), &err)?;
        profiles.push(Profile {
            name: name.get_ref().clone(),
            serial_prefix: prefix,
            allow: allow_set,
            deny: deny_set,
            settings,
        });
    }
    Ok(Policy {
        source: origin.to_owned(),
        defaults,
        profiles,
    })
}

/// Renders a policy as TOML (every key explicit, defaults repeated in each profile).
pub(super) fn render(policy: &Policy) -> String {
    let mut out = String::from("version = 1\n\n[defaults]\n");
    render_settings(&mut out, &policy.defaults);
    for p in &policy.profiles {
        out.push_str(&format!(
            "\n[profiles.{}]\nserial_prefix = {}\n",
            p.name, p.serial_prefix
        ));
        out.push_str(&format!(
            "allow = {}\n",
            list(p.allow.nets().iter().map(ToString::to_string))
        ));
        out.push_str(&format!(
            "deny = {}\n",
            list(p.deny.nets().iter().map(ToString::to_string))
        ));
        render_settings(&mut out, &p.settings);
    }
    out
}

fn render_settings(out: &mut String, s: &Settings) {
    let approval = |a: Approval| {
        if a == Approval::Auto {
            "auto"
        } else {
            "manual"
        }
    };
    out.push_str(&format!("validity_days = {}\n", s.validity_days));
    out.push_str(&format!("backdate_seconds = {}\n", s.backdate_seconds));
    out.push_str(&format!("approval = \"{}\"\n", approval(s.approval)));
    out.push_str(&format!(
        "key_types = {}\n",
        list(s.key_types.iter().map(ToString::to_string))
    ));
    out.push_str(&format!(
        "csr_signature_digests = {}\n",
        list(s.csr_signature_digests.iter().cloned())
    ));
    out.push_str(&format!("max_csr_bytes = {}\n", s.max_csr_bytes));
    out.push_str(&format!(
        "held_ttl = \"{}\"\n",
        crate::duration::format(s.held_ttl)
    ));
    out.push_str(&format!("subject_cn = {}\n", s.subject_cn));
    out.push_str(&format!("revocation = \"{}\"\n", s.revocation.as_str()));
    if let Some(u) = &s.crl_url {
        out.push_str(&format!("crl_url = {}\n", toml::Value::String(u.clone())));
    }
    if let Some(u) = &s.ca_issuers_url {
        out.push_str(&format!(
            "ca_issuers_url = {}\n",
            toml::Value::String(u.clone())
        ));
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.map(|s| toml::Value::String(s).to_string()).collect();
    format!("[{}]", v.join(", "))
}

fn builtin_settings() -> Settings {
    Settings {
        validity_days: 365,
        backdate_seconds: 60,
        approval: Approval::Auto,
        key_types: KeyType::ALL.to_vec(),
        csr_signature_digests: vec!["sha256".into(), "sha384".into(), "sha512".into()],
        max_csr_bytes: 16_384,
        held_ttl: Duration::from_secs(30 * 86_400),
        subject_cn: false,
        revocation: Revocation::Proof,
        crl_url: None,
        ca_issuers_url: None,
    }
}

type ErrFn<'a> = dyn Fn(Option<std::ops::Range<usize>>, String) -> PolicyError + 'a;

fn apply(base: &Settings, f: &FileSettings, err: &ErrFn<'_>) -> Result<Settings, PolicyError> {
    let mut s = base.clone();
    if let Some(v) = &f.validity_days {
        let d = *v.get_ref();
        if !(1..=3650).contains(&d) {
            return Err(err(
                Some(v.span()),
                format!("validity_days = {d} is out of range: use 1 to 3650"),
            ));
        }
        s.validity_days = d;
    }
    if let Some(v) = &f.backdate_seconds {
        let b = *v.get_ref();
        if b > 86_400 {
            return Err(err(
                Some(v.span()),
                format!("backdate_seconds = {b} is too large: use at most 86400"),
            ));
        }
        s.backdate_seconds = b;
    }
    if let Some(a) = f.approval {
        s.approval = a;
    }
    if let Some(r) = &f.revocation {
        s.revocation = match r.get_ref().as_str() {
            "proof" => Revocation::Proof,
            "manual" => Revocation::Manual,
            "auto" => {
                return Err(err(
                    Some(r.span()),
                    "revocation = \"auto\" is gone: it let anyone who can write the spool revoke \
                     any certificate; use revocation = \"proof\" (carried out when signed by the \
                     certificate's own key, else held for an operator) or \"manual\" (every \
                     revocation held) (DESIGN §9)"
                        .into(),
                ))
            }
            other => {
                return Err(err(
                    Some(r.span()),
                    format!("revocation = {other:?} is not a choice: use \"proof\" or \"manual\""),
                ))
            }
        };
    }
    if let Some(list) = &f.key_types {
        let mut types = Vec::new();
        for k in list {
            let t: KeyType = k
                .get_ref()
                .parse()
                .map_err(|e: crate::key_type::UnknownKeyType| err(Some(k.span()), e.to_string()))?;
            types.push(t);
        }
        if types.is_empty() {
            return Err(err(
                None,
                "key_types is empty: no CSR could be signed; list at least ec-p256".into(),
            ));
        }
        s.key_types = types;
    }
    if let Some(list) = &f.csr_signature_digests {
        let mut digests = Vec::new();
        for d in list {
            let name = d.get_ref().as_str();
            if !["sha256", "sha384", "sha512"].contains(&name) {
                return Err(err(
                    Some(d.span()),
                    format!(
                    "csr_signature_digests: {name:?} is not accepted: use sha256, sha384 or sha512"
                ),
                ));
            }
            digests.push(name.to_owned());
        }
        if digests.is_empty() {
            return Err(err(
                None,
                "csr_signature_digests is empty: list at least sha256".into(),
            ));
        }
        s.csr_signature_digests = digests;
    }
    if let Some(v) = &f.max_csr_bytes {
        let m = *v.get_ref();
        if !(256..=65_536).contains(&m) {
            return Err(err(
                Some(v.span()),
                format!("max_csr_bytes = {m} is out of range: use 256 to 65536"),
            ));
        }
        s.max_csr_bytes = m;
    }
    if let Some(v) = &f.held_ttl {
        let d = crate::duration::parse(v.get_ref())
            .map_err(|e| err(Some(v.span()), format!("held_ttl: {e}")))?;
        if d.is_zero() {
            return Err(err(
                Some(v.span()),
                "held_ttl must be longer than 0s".into(),
            ));
        }
        s.held_ttl = d;
    }
    if let Some(b) = f.subject_cn {
        s.subject_cn = b;
    }
    for (slot, value, key) in [
        (&mut s.crl_url, &f.crl_url, "crl_url"),
        (&mut s.ca_issuers_url, &f.ca_issuers_url, "ca_issuers_url"),
    ] {
        if let Some(v) = value {
            let u = v.get_ref();
            let ok = (u.starts_with("http://") || u.starts_with("https://"))
                && u.len() <= 512
                && u.bytes().all(|b| b.is_ascii_graphic() && b != b',');
            if !ok {
                return Err(err(
                    Some(v.span()),
                    format!("{key} = {u:?} is not an http(s) URL (printable ASCII, no commas)"),
                ));
            }
            *slot = Some(u.clone());
        }
    }
    Ok(s)
}

fn nets(raw: &[Spanned<String>], err: &ErrFn<'_>) -> Result<Vec<IpNet>, PolicyError> {
    raw.iter()
        .map(|r| {
            let text = r.get_ref().trim();
            let net: IpNet = text.parse().map_err(|_| {
                err(
                    Some(r.span()),
                    format!(
                        "{text:?} is not a CIDR range: write it like 192.168.0.0/16 or fd00::/8"
                    ),
                )
            })?;
            if net.trunc() != net {
                return Err(err(
                    Some(r.span()),
                    format!("{text} has host bits set: write {} instead", net.trunc()),
                ));
            }
            Ok(net)
        })
        .collect()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}
