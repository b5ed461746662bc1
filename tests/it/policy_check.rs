//! `smsgate-ca policy check FILE.csr [--type T] [--json]` (issue 2 item 4, DESIGN §7) and the
//! loading of policy files (DESIGN §3): exit 0 approve, 3 deny, 2 unreadable input or a policy
//! that does not load — the message then names the file and the line.

use std::fs;

use serde_json::Value;

use crate::util::*;

fn check(env: &TestEnv, file: &std::path::Path, extra: &[&str]) -> Run {
    let mut args = vec!["policy", "check", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.run(&args)
}

fn check_json(env: &TestEnv, file: &std::path::Path, extra: &[&str], code: i32) -> Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let r = check(env, file, &args).code_is(code);
    serde_json::from_str(&r.stdout())
        .unwrap_or_else(|e| panic!("policy check --json printed no JSON ({e}):\n{}", r.stdout()))
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
fn approvable_csr_exits_0_and_prints_each_rules_verdict() {
    let env = TestEnv::new();
    let csr = env.csr("ok", &CsrSpec::upstream_cli("192.168.1.10"));
    let r = check(&env, &csr.path, &[]).success();
    let out = r.stdout();
    assert!(out.starts_with("decision: approve"), "{out}");
    assert!(out.contains("192.168.1.10"), "{out}");
    for rule in RULES {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with("pass") && l.contains(rule)),
            "no passing verdict for {rule}:\n{out}"
        );
    }
    // A dry run: nothing was signed or written to the spool.
    assert!(env.list("issued").is_empty());
    assert!(!env.ledger().exists() || fs::read_to_string(env.ledger()).unwrap().is_empty());
}

#[test]
fn denied_csr_exits_3_and_names_the_reason_and_the_failing_rule() {
    let env = TestEnv::new();
    let csr = env.csr("pub", &CsrSpec::ip("8.8.8.8"));
    let r = check(&env, &csr.path, &[]).code_is(3);
    let out = r.stdout();
    assert!(out.starts_with("decision: deny (ip_not_allowed)"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("FAIL") && l.contains("range") && l.contains("8.8.8.8")),
        "{out}"
    );
    assert!(
        out.contains("192.168.0.0/16"),
        "the message says what is allowed:\n{out}"
    );
}

#[test]
fn garbage_content_is_a_deny_invalid_csr() {
    let env = TestEnv::new();
    let f = env.work.join("garbage.csr");
    fs::write(&f, b"\x00garbage\xff").unwrap();
    let j = check_json(&env, &f, &[], 3);
    assert_eq!(j["decision"], "deny");
    assert_eq!(j["reason"], "invalid_csr");
    let empty = env.work.join("empty.csr");
    fs::write(&empty, b"").unwrap();
    assert_eq!(check_json(&env, &empty, &[], 3)["reason"], "invalid_csr");
}

#[test]
fn unreadable_file_exits_2() {
    let env = TestEnv::new();
    check(&env, &env.work.join("missing.csr"), &[])
        .code_is(2)
        .stderr_has("missing.csr");
    check(&env, &env.work, &[]).code_is(2);
}

#[test]
fn json_output_has_decision_reason_message_and_every_rule() {
    let env = TestEnv::new();
    let csr = env.csr("j", &CsrSpec::ip("10.0.0.1"));
    let j = check_json(&env, &csr.path, &[], 0);
    assert_eq!(j["decision"], "approve");
    assert!(j["reason"].is_null());
    assert!(j["message"].as_str().unwrap().contains("10.0.0.1"));
    let rules: Vec<&str> = j["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, RULES);
    assert!(j["rules"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["verdict"] == "pass"));

    let bad = env.csr("cn", &CsrSpec::ip("10.0.0.1").subject("/CN=10.0.0.9"));
    let j = check_json(&env, &bad.path, &[], 3);
    assert_eq!(j["reason"], "cn_mismatch");
    let failing: Vec<&Value> = j["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verdict"] == "fail")
        .collect();
    assert_eq!(failing.len(), 1, "{j:#}");
    assert_eq!(failing[0]["rule"], "common_name");
    assert_eq!(failing[0]["reason"], "cn_mismatch");
}

#[test]
fn type_option_selects_the_profile() {
    let env = TestEnv::with_policy(&policy_text("", "", "approval = \"manual\""));
    let csr = env.csr("t", &CsrSpec::ip("10.0.0.1"));
    let j = check_json(&env, &csr.path, &["--type", "private_server"], 0);
    assert_eq!(j["decision"], "hold");
    assert_eq!(check_json(&env, &csr.path, &[], 0)["decision"], "approve");
    let j = check_json(&env, &csr.path, &["--type", "bogus"], 3);
    assert_eq!(j["reason"], "unknown_type");
}

#[test]
fn der_csr_is_checked_too() {
    let env = TestEnv::new();
    let csr = env.csr("der", &CsrSpec::ip("10.0.0.1").der());
    assert_eq!(check_json(&env, &csr.path, &[], 0)["decision"], "approve");
}

#[test]
fn each_csr_reason_code_is_reported_by_policy_check() {
    let env = TestEnv::with_policy(&policy_text("", r#"deny = ["10.66.0.0/16"]"#, ""));
    let cases: Vec<(&str, CsrSpec)> = vec![
        ("weak_signature", CsrSpec::ip("10.0.0.1").digest("sha1")),
        (
            "weak_key",
            CsrSpec::new(Key::Rsa(1024)).addext("subjectAltName=IP:10.0.0.1"),
        ),
        (
            "unsupported_key",
            CsrSpec::new(Key::Secp256k1).addext("subjectAltName=IP:10.0.0.1"),
        ),
        ("ip_not_allowed", CsrSpec::ip("1.1.1.1")),
        ("ip_denied", CsrSpec::ip("10.66.1.1")),
        (
            "too_many_names",
            CsrSpec::new(Key::EcP256).addext("subjectAltName=IP:10.0.0.1,IP:10.0.0.2"),
        ),
        (
            "dns_name_not_allowed",
            CsrSpec::new(Key::EcP256).addext("subjectAltName=IP:10.0.0.1,DNS:a.lan"),
        ),
        ("no_ip_san", CsrSpec::new(Key::EcP256).subject("/CN=a.lan")),
        (
            "cn_mismatch",
            CsrSpec::new(Key::EcP256)
                .subject("/CN=10.0.0.1")
                .addext("subjectAltName=IP:10.0.0.2"),
        ),
        (
            "extension_not_allowed",
            CsrSpec::ip("10.0.0.1").addext("basicConstraints=critical,CA:TRUE"),
        ),
    ];
    for (reason, spec) in cases {
        let csr = env.csr(reason, &spec);
        let j = check_json(&env, &csr.path, &[], 3);
        assert_eq!(j["reason"], reason, "{j:#}");
    }
}

/// Policy ranges wider than the CA's name constraints: the CA cannot vouch for the rest, so
/// such requests are `ip_not_allowed` (DESIGN §3), in `policy check` and in `process`.
#[test]
fn ranges_beyond_the_cas_name_constraints_are_ip_not_allowed() {
    let narrow =
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"192.168.0.0/16\"]\n";
    let env = TestEnv::with_policy(narrow);
    env.write_policy(DEFAULT_POLICY);
    let csr = env.csr("wide", &CsrSpec::ip("10.1.2.3"));
    let j = check_json(&env, &csr.path, &[], 3);
    assert_eq!(j["reason"], "ip_not_allowed");
    assert!(
        j["message"].as_str().unwrap().contains("name constraints"),
        "{j:#}"
    );

    env.drop_file("wide.csr", csr.bytes());
    env.drop_csr("inside", &CsrSpec::ip("192.168.4.4"));
    env.process();
    env.assert_denied("wide", "ip_not_allowed");
    env.check_issued("inside", &LeafExpect::webhook("192.168.4.4"));
}

// ---------------------------------------------------------------------------------------
// Policy files that do not load: exit 2 from `process` and `policy check`, naming file:line
// ---------------------------------------------------------------------------------------

/// Writes `policy`, then runs `policy check` and `process` with it: both must exit 2 with a
/// message naming the policy file and `line`, and containing `needle`.
#[track_caller]
fn refused(policy: &str, line: usize, needle: &str) {
    let env = TestEnv::new();
    let csr = env.drop_csr("r", &CsrSpec::ip("10.0.0.1"));
    env.write_policy(policy);
    let want = format!("{}:{line}:", env.policy.display());
    for r in [check(&env, &csr.path, &[]), env.run(&["process"])] {
        let r = r.code_is(2).stderr_has(&want).stderr_has(needle);
        assert!(
            r.stdout().is_empty() || !r.stdout().contains("approved,"),
            "{r:?}"
        );
    }
    // Nothing was decided under a policy that did not load.
    assert_eq!(env.list("incoming"), vec!["r.csr"]);
    assert!(env.status_opt("r").is_none());
}

#[test]
fn policy_with_an_unknown_key_is_refused_with_its_line() {
    refused(
        "version = 1\n[defaults]\nvalidity_dayz = 30\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\"]\n",
        3,
        "validity_dayz",
    );
}

#[test]
fn policy_with_an_unknown_profile_key_is_refused_with_its_line() {
    refused(
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\"]\nallow_dns = true\n",
        5,
        "allow_dns",
    );
}

#[test]
fn policy_with_a_public_range_is_refused_with_its_line() {
    refused(
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\n  \"10.0.0.0/8\",\n  \"8.0.0.0/8\",\n]\n",
        6,
        "8.0.0.0/8",
    );
}

#[test]
fn policy_with_a_range_that_contains_public_space_is_refused() {
    refused(
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"0.0.0.0/0\"]\n",
        4,
        "globally routable",
    );
}

#[test]
fn policy_with_a_bad_cidr_is_refused_with_its_line() {
    refused(
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/33\"]\n",
        4,
        "10.0.0.0/33",
    );
    refused(
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"192.168.1\"]\n",
        4,
        "not a CIDR",
    );
}

#[test]
fn policy_with_host_bits_set_is_refused_with_its_line() {
    refused(
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.1/8\"]\n",
        4,
        "host bits",
    );
}

#[test]
fn policy_with_a_duplicate_serial_prefix_is_refused() {
    let text = "version = 1\n\
                [profiles.webhook]\nserial_prefix = 7\nallow = [\"10.0.0.0/8\"]\n\
                [profiles.private_server]\nserial_prefix = 7\nallow = [\"10.0.0.0/8\"]\n";
    // Either profile's serial_prefix line may be named.
    let env = TestEnv::new();
    env.write_policy(text);
    let csr = env.csr("d", &CsrSpec::ip("10.0.0.1"));
    for r in [check(&env, &csr.path, &[]), env.run(&["process"])] {
        let r = r.code_is(2).stderr_has("serial_prefix");
        let p = env.policy.display().to_string();
        assert!(
            r.stderr().contains(&format!("{p}:3:")) || r.stderr().contains(&format!("{p}:6:")),
            "{r:?}"
        );
    }
}

#[test]
fn policy_with_a_bad_value_is_refused_with_its_line() {
    refused(
        "version = 1\n[defaults]\napproval = \"sometimes\"\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\"]\n",
        3,
        "sometimes",
    );
    refused(
        "version = 1\n[defaults]\nkey_types = [\"rsa-1024\"]\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\"]\n",
        3,
        "rsa-1024",
    );
    refused(
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\"]\nheld_ttl = \"soon\"\n",
        5,
        "held_ttl",
    );
}

#[test]
fn policy_with_an_unknown_profile_name_is_refused() {
    refused(
        "version = 1\n[profiles.webhooks]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\"]\n",
        2,
        "webhooks",
    );
}

#[test]
fn missing_policy_file_exits_2_naming_it() {
    let env = TestEnv::new();
    let csr = env.csr("m", &CsrSpec::ip("10.0.0.1"));
    fs::remove_file(&env.policy).unwrap();
    check(&env, &csr.path, &[])
        .code_is(2)
        .stderr_has(&env.policy.display().to_string());
}

#[test]
fn repository_policies_load() {
    let env = TestEnv::new();
    let csr = env.csr("repo", &CsrSpec::ip("192.168.1.10"));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policy");
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            env.write_policy(&fs::read_to_string(&path).unwrap());
            let r = check(&env, &csr.path, &[]);
            assert!(
                [0, 3].contains(&r.code()),
                "{} does not load: {r:?}",
                path.display()
            );
        }
    }
}

#[test]
fn fixtures_are_checked_as_the_readme_says() {
    let env = TestEnv::new();
    for (name, want) in FIXTURES {
        let j = check_json(
            &env,
            &fixture(name),
            &[],
            if want.is_some() { 3 } else { 0 },
        );
        match want {
            None => assert_eq!(j["decision"], "approve", "{name}: {j:#}"),
            Some(reason) => assert_eq!(j["reason"], reason, "{name}: {j:#}"),
        }
    }
}
