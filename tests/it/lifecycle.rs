//! The certificate lifecycle (issue 5): `revoke`, `crl`, `list`, `show`, revocation requests
//! through the spool, the CRL state file, expiry warnings and the metrics textfile. Every CRL is
//! checked with the `openssl` CLI (`openssl crl`, `openssl verify -crl_check`).
//!
//! Spool revocations are driven through the library hook the engine calls
//! (`lifecycle::revocation::handle_spool_file`), the same code `process` and the daemon run.

use std::ffi::OsStr;
use std::fs;
use std::process::Command;

use serde_json::Value;
use smsgate_ca::ledger::Ledger;
use smsgate_ca::lifecycle::crl::maybe_resign;
use smsgate_ca::lifecycle::metrics::render;
use smsgate_ca::lifecycle::revocation::{
    decide_held, expire_held, handle_spool_file, Decision, Verdict,
};
use smsgate_ca::policy::Policy;
use smsgate_ca::request::RequestId;
use smsgate_ca::signer::ca::{self, StatePaths};
use smsgate_ca::signer::key::PassphraseSource;
use smsgate_ca::spool::examine::{Item, Origin};
use smsgate_ca::spool::{Engine, Spool};

use crate::util::*;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Issues webhook certificates for `ids` (192.168.1.10, .11, …) through `process`; returns their
/// serials.
fn issue(env: &TestEnv, ids: &[&str]) -> Vec<String> {
    for (i, id) in ids.iter().enumerate() {
        env.drop_csr(id, &CsrSpec::ip(&format!("192.168.1.{}", 10 + i)));
    }
    env.process();
    ids.iter()
        .map(|id| {
            env.assert_approved(id)["serial"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Like [`issue`], also returning each certificate's private key (for revocation proofs).
fn issue_keyed(env: &TestEnv, ids: &[&str]) -> Vec<(String, std::path::PathBuf)> {
    let keys: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            env.drop_csr(id, &CsrSpec::ip(&format!("192.168.1.{}", 10 + i)))
                .key
        })
        .collect();
    env.process();
    ids.iter()
        .zip(keys)
        .map(|(id, key)| {
            let serial = env.assert_approved(id)["serial"]
                .as_str()
                .unwrap()
                .to_owned();
            (serial, key)
        })
        .collect()
}

fn published(env: &TestEnv, name: &str) -> std::path::PathBuf {
    env.spool.join("published").join(name)
}

/// `openssl crl -inform DER -in published/ca.crl -text -noout`.
fn crl_text(env: &TestEnv) -> String {
    openssl_ok(&[
        OsStr::new("crl"),
        OsStr::new("-inform"),
        OsStr::new("DER"),
        OsStr::new("-in"),
        published(env, "ca.crl").as_os_str(),
        OsStr::new("-text"),
        OsStr::new("-noout"),
    ])
}

/// The CRL Number `openssl crl` reads from `published/ca.crl`.
fn crl_number(env: &TestEnv) -> u64 {
    let text = crl_text(env);
    let after = text
        .split("CRL Number:")
        .nth(1)
        .unwrap_or_else(|| panic!("no CRL Number in:\n{text}"));
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// `openssl verify -crl_check … -CRLfile published/ca.crl.pem` of a leaf.
fn verify_with_crl(env: &TestEnv, id: &str) -> Run {
    let crl = published(env, "ca.crl.pem");
    env.verify_chain_with(
        &env.issued(id),
        &["-crl_check", "-CRLfile", crl.to_str().unwrap()],
    )
}

/// `list --json` (plus `extra`) parsed.
fn list_json(env: &TestEnv, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["list", "--json"];
    args.extend_from_slice(extra);
    let r = env.run(&args).success();
    serde_json::from_str::<Value>(&r.stdout())
        .unwrap_or_else(|e| panic!("list --json is not JSON ({e}):\n{}", r.stdout()))
        .as_array()
        .unwrap()
        .clone()
}

/// The binary with the env's flags *before* the subcommand (so that `--` can end the line).
fn cmd_flags_first(env: &TestEnv, args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.arg("--state")
        .arg(&env.state)
        .arg("--spool")
        .arg(&env.spool)
        .arg("--policy")
        .arg(&env.policy)
        .arg("--passphrase-file")
        .arg(&env.passphrase_file)
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("RUST_LOG");
    run(cmd)
}

/// An engine over the env's spool, policy, CA and ledger, as `process` opens it.
fn engine(env: &TestEnv) -> Engine {
    let policy = Policy::load(&env.policy).unwrap();
    let ca = ca::load(
        &StatePaths::new(&env.state),
        &PassphraseSource::File(env.passphrase_file.clone()),
        None,
        false,
    )
    .unwrap();
    let ledger = Ledger::open(&env.ledger()).unwrap();
    let spool = Spool::open(&env.spool).unwrap();
    Engine::new(spool, policy, ca, ledger)
}

/// Drops `incoming/<id>.revoke.json` with `body`, claims it as the engine does and hands it to
/// the revocation hook.
fn revoke_via_spool(env: &TestEnv, engine: &Engine, id: &str, body: &str) -> Decision {
    let name = format!("{id}.revoke.json");
    env.drop_file(&name, body);
    claim_and_handle(env, engine, &name)
}

fn claim_and_handle(env: &TestEnv, engine: &Engine, name: &str) -> Decision {
    let from = env.incoming(name);
    fs::rename(&from, env.spool_dir("processing").join(name)).unwrap();
    let item = Item {
        name: name.into(),
        claimed: name.into(),
        origin: Origin::Incoming,
        started: std::time::Instant::now(),
    };
    handle_spool_file(engine, &item).unwrap().decision
}

/// `status/<id>.revoke.json`.
fn revocation_record(env: &TestEnv, id: &str) -> Value {
    let path = env.spool_dir("status").join(format!("{id}.revoke.json"));
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no {} ({e}); spool:\n{}", path.display(), env.tree()));
    serde_json::from_str(&text).unwrap()
}

fn uppercase_colons(serial: &str) -> String {
    serial
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

// ---------------------------------------------------------------------------------------
// revoke and crl
// ---------------------------------------------------------------------------------------

#[test]
fn revoke_signs_a_crl_that_openssl_reads_and_verify_refuses_the_revoked_leaf() {
    let env = TestEnv::new();
    let serials = issue(&env, &["r1", "r2", "r3"]);

    env.run(&["revoke", "r1", "--reason", "keyCompromise"])
        .success()
        .stdout_has(&format!("revoked certificate {}", serials[0]))
        .stdout_has("CRL number 1 signed");
    let text = crl_text(&env);
    assert!(text.contains("Version 2"), "{text}");
    assert!(text.contains(&serials[0].to_uppercase()), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    assert!(!text.contains(&serials[1].to_uppercase()), "{text}");
    assert!(text.contains("Authority Key Identifier"), "{text}");

    let refused = verify_with_crl(&env, "r1");
    assert_ne!(refused.code(), 0, "a revoked leaf verified");
    assert!(
        format!("{}{}", refused.stdout(), refused.stderr()).contains("certificate revoked"),
        "{}{}",
        refused.stdout(),
        refused.stderr()
    );
    verify_with_crl(&env, "r2").success().stdout_has("OK");

    // By serial, upper case with colons; the reason lands in the CRL entry.
    env.run(&[
        "revoke",
        &uppercase_colons(&serials[1]),
        "--reason",
        "superseded",
    ])
    .success()
    .stdout_has("CRL number 2 signed");
    let text = crl_text(&env);
    assert!(text.contains("Superseded"), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    assert_ne!(verify_with_crl(&env, "r2").code(), 0);
    verify_with_crl(&env, "r3").success();

    // `--` before an id.
    cmd_flags_first(
        &env,
        &["revoke", "--reason", "cessationOfOperation", "--", "r3"],
    )
    .success()
    .stdout_has("CRL number 3 signed");

    // CRL numbers only grow, across runs.
    let mut last = crl_number(&env);
    assert_eq!(last, 3);
    for days in ["1", "30", "3650"] {
        env.run(&["crl", "--days", days]).success();
        let n = crl_number(&env);
        assert!(n > last, "CRL number went from {last} to {n}");
        last = n;
    }
    let text = crl_text(&env);
    assert!(text.contains("Cessation Of Operation"), "{text}");

    // The JSON summary and the ledger agree.
    let json: Value =
        serde_json::from_str(&env.run(&["crl", "--json"]).success().stdout()).unwrap();
    assert_eq!(json["number"], last + 1);
    assert_eq!(json["entries"], 3);
    let der = fs::read(published(&env, "ca.crl")).unwrap();
    let ledger = fs::read_to_string(env.ledger()).unwrap();
    let sha = smsgate_ca::fsx::hex::encode(openssl::sha::sha256(&der));
    assert!(ledger.contains(&format!("\"sha256\":\"{sha}\"")));
    assert_eq!(json["sha256"], sha);
    env.run(&["ledger", "verify"]).success();
}

#[test]
fn bad_revocations_exit_2_with_a_clear_message_and_change_nothing() {
    let env = TestEnv::new();
    let serials = issue(&env, &["r1"]);
    env.run(&["revoke", "r1", "--reason", "keyCompromise"])
        .success();
    let ledger_before = fs::read(env.ledger()).unwrap();
    let crl_before = fs::read(published(&env, "ca.crl")).unwrap();

    env.run(&["revoke", "r1", "--reason", "superseded"])
        .code_is(2)
        .stderr_has("already revoked at")
        .stderr_has("keyCompromise");
    env.run(&["revoke", &serials[0], "--reason", "superseded"])
        .code_is(2)
        .stderr_has("already revoked");
    env.run(&[
        "revoke",
        "01000000000000000000000000000000",
        "--reason",
        "superseded",
    ])
    .code_is(2)
    .stderr_has("no certificate with serial");
    env.run(&["revoke", "nosuchrequest", "--reason", "superseded"])
        .code_is(2)
        .stderr_has("no certificate was issued for request nosuchrequest");
    env.run(&["revoke", "01:02:03:zz", "--reason", "superseded"])
        .code_is(2)
        .stderr_has("serial");
    env.run(&["revoke", "01:02:03", "--reason", "superseded"])
        .code_is(2)
        .stderr_has("32 hex digits");
    env.run(&["revoke", "r1", "--reason", "stolen"])
        .code_is(2)
        .stderr_has("unknown revocation reason")
        .stderr_has("keyCompromise, cACompromise");
    env.run(&["revoke", "r1", "--reason", "removeFromCRL"])
        .code_is(2)
        .stderr_has("delta CRLs");
    env.run(&["revoke", "r1"]).code_is(2).stderr_has("--reason");
    env.run(&["revoke", "r1", "--reason", "superseded", "--crl-days", "0"])
        .code_is(2);

    assert_eq!(fs::read(env.ledger()).unwrap(), ledger_before);
    assert_eq!(fs::read(published(&env, "ca.crl")).unwrap(), crl_before);
}

#[test]
fn crl_days_out_of_range_exit_2_and_write_nothing() {
    let env = TestEnv::new();
    issue(&env, &["r1"]);
    let ledger_before = fs::read(env.ledger()).unwrap();
    for days in ["0", "100000", "3651", "-1", "seven"] {
        env.run(&["crl", "--days", days])
            .code_is(2)
            .stderr_has("--days");
    }
    assert!(!published(&env, "ca.crl").exists());
    assert!(!published(&env, "ca.crl.pem").exists());
    assert!(!env.state.join("crl.json").exists());
    assert_eq!(fs::read(env.ledger()).unwrap(), ledger_before);

    // Without revocations the CRL is valid and empty.
    env.run(&["crl"])
        .success()
        .stdout_has("CRL number 1 signed")
        .stdout_has("0 revoked");
    let text = crl_text(&env);
    assert!(text.contains("No Revoked Certificates"), "{text}");
}

#[test]
fn a_tampered_or_missing_crl_state_is_rebuilt_from_the_ledger_with_a_warning() {
    let env = TestEnv::new();
    issue(&env, &["r1"]);
    env.run(&["revoke", "r1", "--reason", "keyCompromise"])
        .success();
    env.run(&["crl"]).success().stdout_has("CRL number 2");
    let state_file = env.state.join("crl.json");
    let state: Value = serde_json::from_slice(&fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(state["number"], 2);
    assert_eq!(state["entries"], 1);

    // Edited to jump ahead: the ledger wins.
    fs::write(
        &state_file,
        fs::read_to_string(&state_file)
            .unwrap()
            .replace("\"number\": 2", "\"number\": 99"),
    )
    .unwrap();
    env.run(&["crl"])
        .success()
        .stdout_has("CRL number 3")
        .stderr_has("does not match the ledger")
        .stderr_has("rebuilt from the ledger");
    assert_eq!(crl_number(&env), 3);

    fs::remove_file(&state_file).unwrap();
    env.run(&["crl"])
        .success()
        .stdout_has("CRL number 4")
        .stderr_has("missing; rebuilt from the ledger");

    fs::write(&state_file, "{ not json").unwrap();
    env.run(&["crl"])
        .success()
        .stdout_has("CRL number 5")
        .stderr_has("damaged");

    // Repaired: no warning any more.
    let r = env.run(&["crl"]).success().stdout_has("CRL number 6");
    assert!(!r.stderr().contains("crl.json"), "{}", r.stderr());
    let state: Value = serde_json::from_slice(&fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(state["number"], 6);
}

// ---------------------------------------------------------------------------------------
// list and show
// ---------------------------------------------------------------------------------------

#[test]
fn list_expiring_type_ip_revoked_and_json_on_one_day_certificates() {
    let env = TestEnv::with_policy(&policy_text("", "validity_days = 1", ""));
    env.drop_csr("short", &CsrSpec::ip("192.168.1.10"));
    let server = env.csr("server", &CsrSpec::ip("10.1.2.3"));
    env.drop_file(
        "long.json",
        envelope("long", "private_server", &server.pem()),
    );
    env.drop_csr("short2", &CsrSpec::ip("192.168.1.11"));
    env.process().stdout_has("3 approved");
    let short = env.assert_approved("short");

    let all = list_json(&env, &[]);
    assert_eq!(all.len(), 3);
    let first = &all[0];
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "ip",
            "not_after",
            "not_before",
            "request_id",
            "serial",
            "state",
            "type"
        ]
    );
    assert_eq!(first["request_id"], "short");
    assert_eq!(first["serial"], short["serial"]);
    assert_eq!(first["not_after"], short["not_after"]);
    assert_eq!(first["not_before"], short["not_before"]);
    assert_eq!(first["type"], "webhook");
    assert_eq!(first["ip"], "192.168.1.10");
    assert_eq!(first["state"], "valid");
    let serial = first["serial"].as_str().unwrap();
    assert!(
        serial.len() == 32
            && serial
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    );

    let ids = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|c| c["request_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&list_json(&env, &["--expiring", "2d"])),
        ["short", "short2"]
    );
    assert_eq!(
        ids(&list_json(&env, &["--expiring", "1h"])),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&list_json(&env, &["--type", "private_server"])),
        ["long"]
    );
    assert_eq!(ids(&list_json(&env, &["--ip", "10.0.0.0/8"])), ["long"]);
    assert_eq!(ids(&list_json(&env, &["--ip", "192.168.1.11"])), ["short2"]);

    env.run(&["revoke", "short2", "--reason", "affiliationChanged"])
        .success();
    let revoked = list_json(&env, &["--revoked"]);
    assert_eq!(ids(&revoked), ["short2"]);
    assert_eq!(revoked[0]["state"], "revoked");
    assert_eq!(revoked[0]["revocation_reason"], "affiliationChanged");
    assert!(revoked[0]["revoked_at"].as_str().unwrap().ends_with('Z'));
    // Revoked certificates are not "expiring".
    assert_eq!(ids(&list_json(&env, &["--expiring", "2d"])), ["short"]);
    assert_eq!(
        ids(&list_json(
            &env,
            &["--expiring", "2d", "--type", "private_server"]
        )),
        Vec::<String>::new()
    );

    // The table.
    env.run(&["list"])
        .success()
        .stdout_has("STATE")
        .stdout_has("REQUEST_ID")
        .stdout_has("revoked")
        .stdout_has("3 certificate(s): 2 valid, 1 revoked, 0 expired");

    env.run(&["list", "--type", "mail"])
        .code_is(2)
        .stderr_has("webhook or private_server");
    env.run(&["list", "--ip", "not-a-net"]).code_is(2);
    env.run(&["list", "--expiring", "soon"]).code_is(2);
}

#[test]
fn show_by_id_and_by_serial_prints_the_summary_and_the_pem() {
    let env = TestEnv::new();
    let serials = issue(&env, &["r1", "r2"]);
    let leaf_pem = {
        let chain = fs::read_to_string(env.issued("r1")).unwrap();
        let end = chain.find("-----END CERTIFICATE-----").unwrap() + 26;
        chain[..end].to_owned()
    };
    let by_id = env.run(&["show", "r1"]).success();
    for needle in [
        "request id:   r1",
        &format!("serial:       {}", serials[0]),
        "type:         webhook",
        "ip:           192.168.1.10",
        "state:        valid",
        &leaf_pem,
    ] {
        assert!(
            by_id.stdout().contains(needle),
            "{needle}\n{}",
            by_id.stdout()
        );
    }
    let by_serial = env.run(&["show", &uppercase_colons(&serials[0])]).success();
    assert_eq!(by_serial.stdout(), by_id.stdout());

    env.run(&["revoke", "r1", "--reason", "keyCompromise"])
        .success();
    let json: Value =
        serde_json::from_str(&env.run(&["show", "--json", &serials[0]]).success().stdout())
            .unwrap();
    assert_eq!(json["request_id"], "r1");
    assert_eq!(json["state"], "revoked");
    assert_eq!(json["revocation_reason"], "keyCompromise");
    assert_eq!(json["certificate"], leaf_pem);
    assert_eq!(
        json["fingerprint_sha256"],
        env.status("r1")["fingerprint_sha256"]
    );

    env.run(&["show", "nosuch"])
        .code_is(2)
        .stderr_has("no certificate was issued for request nosuch");
    env.run(&["show", "01000000000000000000000000000000"])
        .code_is(2);
    env.run(&["show", "01:zz"]).code_is(2);
}

#[test]
fn the_inventory_index_is_rebuilt_when_damaged_and_never_disagrees_with_the_ledger() {
    let env = TestEnv::new();
    issue(&env, &["r1", "r2"]);
    let first = env.run(&["list", "--json"]).success().stdout();
    let index = env.state.join("inventory.idx");
    assert!(index.exists());
    assert_eq!(
        env.run(&["list", "--json", "--no-index"])
            .success()
            .stdout(),
        first
    );

    // Damaged: rebuilt with a warning, same answer.
    let mut bytes = fs::read(&index).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&index, &bytes).unwrap();
    env.run(&["list", "--json"])
        .success()
        .stdout_has(first.trim())
        .stderr_has("rebuilding it from the ledger");

    // The ledger grows behind the index's back (another process): caught up.
    issue(&env, &["r3"]);
    let after = list_json(&env, &[]);
    assert_eq!(after.len(), 3);
    assert_eq!(
        env.run(&["list", "--json", "--no-index"])
            .success()
            .stdout(),
        env.run(&["list", "--json"]).success().stdout()
    );
}

#[test]
fn list_warns_when_revocations_have_no_crl_and_when_the_ca_expires_within_90_days() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    env.init(&["--days", "60"]).success();
    issue(&env, &["r1"]);
    env.run(&["list"])
        .success()
        .stderr_has("issuing CA certificate expires")
        .stderr_has("days");

    env.run(&["revoke", "r1", "--reason", "superseded", "--no-crl"])
        .success()
        .stdout_has("no CRL signed");
    assert!(!published(&env, "ca.crl").exists());
    env.run(&["list"])
        .success()
        .stderr_has("no CRL has been signed");
    env.run(&["crl"]).success();
    let r = env.run(&["list"]).success();
    assert!(!r.stderr().contains("no CRL"), "{}", r.stderr());
}

// ---------------------------------------------------------------------------------------
// Revocation requests through the spool
// ---------------------------------------------------------------------------------------

#[test]
fn spool_revocation_with_proof_revokes_and_publishes_a_crl() {
    let env = TestEnv::new();
    let keyed = issue_keyed(&env, &["r1", "r2"]);
    let serials: Vec<String> = keyed.iter().map(|(s, _)| s.clone()).collect();
    let engine = engine(&env);
    let proof = revocation_proof(&keyed[0].1, &serials[0], "keyCompromise");
    let body = serde_json::json!({"serial": serials[0], "reason": "keyCompromise", "type": "webhook", "proof": proof});
    assert_eq!(
        revoke_via_spool(&env, &engine, "rv1", &body.to_string()),
        Decision::Revoked
    );
    let record = revocation_record(&env, "rv1");
    assert_eq!(record["status"], "revoked", "{record:#}");
    assert_eq!(record["serial"], serials[0]);
    assert_eq!(record["certificate_request_id"], "r1");
    assert_eq!(record["revocation_reason"], "keyCompromise");
    assert!(record["reason"].is_null());
    assert!(env.list("archive").contains(&"rv1.revoke.json".to_owned()));
    assert!(env.list("processing").is_empty());
    assert!(crl_text(&env).contains(&serials[0].to_uppercase()));
    assert_ne!(verify_with_crl(&env, "r1").code(), 0);
    verify_with_crl(&env, "r2").success();

    // By request id; the same file again changes nothing; another body under the same id is a
    // duplicate.
    let by_id = serde_json::json!({
        "request_id": "r2",
        "reason": "superseded",
        "proof": revocation_proof(&keyed[1].1, &serials[1], "superseded"),
    })
    .to_string();
    let by_id = by_id.as_str();
    assert_eq!(
        revoke_via_spool(&env, &engine, "rv2", by_id),
        Decision::Revoked
    );
    assert_eq!(revocation_record(&env, "rv2")["serial"], serials[1]);
    assert_eq!(
        revoke_via_spool(&env, &engine, "rv2", by_id),
        Decision::Unchanged
    );
    assert_eq!(
        revoke_via_spool(
            &env,
            &engine,
            "rv2",
            r#"{"request_id": "r1", "reason": "superseded"}"#
        ),
        Decision::Rejected
    );
    assert!(env
        .rejected_reason("rv2.revoke.json")
        .contains("duplicate_request"));

    // An already revoked certificate: revoked, nothing new in the ledger.
    let lines = fs::read_to_string(env.ledger()).unwrap().lines().count();
    assert_eq!(
        revoke_via_spool(&env, &engine, "rv3", &body.to_string()),
        Decision::Revoked
    );
    assert!(revocation_record(&env, "rv3")["message"]
        .as_str()
        .unwrap()
        .contains("already revoked"));
    assert_eq!(
        fs::read_to_string(env.ledger()).unwrap().lines().count(),
        lines
    );

    // A certificate request of the same id as a revocation request keeps its own record.
    assert_eq!(env.status("r1")["status"], "approved");
    // Nothing to re-sign now.
    assert!(maybe_resign(&engine, None).unwrap().is_none());
    env.run(&["ledger", "verify"]).success();
}

#[test]
fn spool_revocation_refusals_have_a_record_and_never_revoke() {
    let env = TestEnv::new();
    let serials = issue(&env, &["r1"]);
    let engine = engine(&env);
    let cases = [
        (
            "bad-reason",
            format!(r#"{{"serial": "{}", "reason": "stolen"}}"#, serials[0]),
            "bad_reason",
        ),
        (
            "wrong-type",
            format!(
                r#"{{"serial": "{}", "reason": "keyCompromise", "type": "private_server"}}"#,
                serials[0]
            ),
            "wrong_type",
        ),
        (
            "unknown",
            r#"{"serial": "01000000000000000000000000000000", "reason": "keyCompromise"}"#.into(),
            "unknown_certificate",
        ),
        (
            "unknown-id",
            r#"{"request_id": "nosuch", "reason": "keyCompromise"}"#.into(),
            "unknown_certificate",
        ),
        (
            "malformed",
            r#"{"serial": "01:02", "reason": "keyCompromise"}"#.into(),
            "malformed_serial",
        ),
        (
            "both",
            format!(
                r#"{{"serial": "{}", "request_id": "r1", "reason": "keyCompromise"}}"#,
                serials[0]
            ),
            "invalid_request",
        ),
        ("garbage", "not json".into(), "invalid_request"),
        (
            "bad-type",
            format!(
                r#"{{"serial": "{}", "reason": "keyCompromise", "type": "mail"}}"#,
                serials[0]
            ),
            "unknown_type",
        ),
        (
            "remove",
            format!(
                r#"{{"serial": "{}", "reason": "removeFromCRL"}}"#,
                serials[0]
            ),
            "bad_reason",
        ),
    ];
    for (id, body, code) in &cases {
        assert_eq!(
            revoke_via_spool(&env, &engine, id, body),
            Decision::Denied,
            "{id}"
        );
        let r = revocation_record(&env, id);
        assert_eq!(r["status"], "denied", "{id}: {r:#}");
        assert_eq!(r["reason"], *code, "{id}: {r:#}");
        assert!(!r["message"].as_str().unwrap().is_empty());
        assert!(env.list("archive").contains(&format!("{id}.revoke.json")));
    }
    let wrong = revocation_record(&env, "wrong-type");
    assert!(
        wrong["message"].as_str().unwrap().contains("webhook"),
        "{wrong:#}"
    );
    let bad = revocation_record(&env, "bad-reason");
    assert!(
        bad["message"].as_str().unwrap().contains("keyCompromise"),
        "{bad:#}"
    );

    // Not a plain file: rejected/ with a reason, never read.
    let target = env.work.join("elsewhere.json");
    fs::write(&target, "{}").unwrap();
    std::os::unix::fs::symlink(&target, env.incoming("link.revoke.json")).unwrap();
    assert_eq!(
        claim_and_handle(&env, &engine, "link.revoke.json"),
        Decision::Rejected
    );
    assert!(env
        .rejected_reason("link.revoke.json")
        .contains("not a regular file"));

    // Nothing was revoked, no CRL was needed for the refusals.
    assert!(list_json(&env, &["--revoked"]).is_empty());
    assert!(!published(&env, "ca.crl").exists());
}

#[test]
fn spool_revocation_under_manual_policy_waits_for_the_operator() {
    let env = TestEnv::with_policy(&policy_text("", "revocation = \"manual\"", ""));
    let serials = issue(&env, &["r1", "r2"]);
    let engine = engine(&env);
    let body = |s: &str| format!(r#"{{"serial": "{s}", "reason": "keyCompromise"}}"#);
    assert_eq!(
        revoke_via_spool(&env, &engine, "ask1", &body(&serials[0])),
        Decision::Held
    );
    let record = revocation_record(&env, "ask1");
    assert_eq!(record["status"], "pending", "{record:#}");
    assert_eq!(record["serial"], serials[0]);
    assert!(env.list("held").contains(&"ask1.revoke.json".to_owned()));
    assert!(list_json(&env, &["--revoked"]).is_empty());
    // Held again with the same content: unchanged.
    assert_eq!(
        revoke_via_spool(&env, &engine, "ask1", &body(&serials[0])),
        Decision::Unchanged
    );

    let id = RequestId::parse("ask1").unwrap();
    let handled = decide_held(&engine, &id, Verdict::Approve)
        .unwrap()
        .unwrap();
    assert_eq!(handled.decision, Decision::Revoked);
    assert!(handled.crl.is_some());
    assert_eq!(revocation_record(&env, "ask1")["status"], "revoked");
    assert!(env.list("held").is_empty());
    assert!(crl_text(&env).contains(&serials[0].to_uppercase()));
    assert!(decide_held(&engine, &id, Verdict::Approve)
        .unwrap()
        .is_none());

    assert_eq!(
        revoke_via_spool(&env, &engine, "ask2", &body(&serials[1])),
        Decision::Held
    );
    let id = RequestId::parse("ask2").unwrap();
    let handled = decide_held(&engine, &id, Verdict::Deny("not yours".into()))
        .unwrap()
        .unwrap();
    assert_eq!(handled.decision, Decision::Denied);
    let r = revocation_record(&env, "ask2");
    assert_eq!(r["reason"], "denied_by_operator");
    assert_eq!(r["message"], "not yours");
    assert_eq!(ids_revoked(&env), ["r1"]);
}

#[test]
fn held_revocation_requests_expire_after_held_ttl() {
    let env = TestEnv::with_policy(&policy_text(
        "",
        "revocation = \"manual\"\nheld_ttl = \"1s\"",
        "",
    ));
    let serials = issue(&env, &["r1"]);
    let engine = engine(&env);
    let body = format!(
        r#"{{"serial": "{}", "reason": "keyCompromise"}}"#,
        serials[0]
    );
    assert_eq!(
        revoke_via_spool(&env, &engine, "late", &body),
        Decision::Held
    );
    assert_eq!(expire_held(&engine), 0);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(expire_held(&engine), 1);
    let r = revocation_record(&env, "late");
    assert_eq!(r["status"], "denied", "{r:#}");
    assert_eq!(r["reason"], "expired");
    assert!(env.list("held").is_empty());
    assert!(ids_revoked(&env).is_empty());
}

fn ids_revoked(env: &TestEnv) -> Vec<String> {
    list_json(env, &["--revoked"])
        .iter()
        .map(|c| c["request_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Once the engine routes `incoming/<id>.revoke.json` to the revocation hook, `process` does
/// all of the above by itself.
#[test]
fn spool_revocation_through_process() {
    let env = TestEnv::new();
    let keyed = issue_keyed(&env, &["r1"]);
    let proof = revocation_proof(&keyed[0].1, &keyed[0].0, "keyCompromise");
    env.drop_file(
        "rv1.revoke.json",
        format!(
            r#"{{"serial": "{}", "reason": "keyCompromise", "type": "webhook", "proof": "{proof}"}}"#,
            keyed[0].0
        ),
    );
    env.process();
    assert_eq!(revocation_record(&env, "rv1")["status"], "revoked");
    assert_ne!(verify_with_crl(&env, "r1").code(), 0);
}

// ---------------------------------------------------------------------------------------
// The daemon's hooks: re-signing and metrics
// ---------------------------------------------------------------------------------------

#[test]
fn maybe_resign_signs_when_missing_or_revoked_and_keeps_the_validity() {
    let env = TestEnv::new();
    issue(&env, &["r1"]);
    let engine = engine(&env);
    // Nothing revoked and no CRL: none is needed yet (`crl` makes one on demand).
    assert!(maybe_resign(&engine, None).unwrap().is_none());
    env.run(&["crl", "--days", "30"]).success();
    assert!(maybe_resign(&engine, None).unwrap().is_none());

    // An operator revokes without signing (another process): the hook notices.
    env.run(&["revoke", "r1", "--reason", "keyCompromise", "--no-crl"])
        .success();
    let second = maybe_resign(&engine, None)
        .unwrap()
        .expect("a revocation since");
    assert_eq!(second.number, 2);
    assert_eq!(second.entries, 1);
    assert_eq!(
        (second.next_update - second.this_update).num_days(),
        30,
        "the published CRL's validity is kept"
    );
    assert!(maybe_resign(&engine, None).unwrap().is_none());

    // The published CRL removed: signed again.
    fs::remove_file(published(&env, "ca.crl")).unwrap();
    assert_eq!(maybe_resign(&engine, None).unwrap().unwrap().number, 3);
    assert!(crl_text(&env).contains("Key Compromise"));
}

#[test]
fn metrics_textfile_has_the_offline_series() {
    let env = TestEnv::new();
    issue(&env, &["r1"]);
    let engine = engine(&env);
    env.drop_file("waiting.csr", "x");
    let path = env.work.join("smsgate.prom");
    smsgate_ca::lifecycle::metrics::write_textfile(&path, &engine).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    for needle in [
        "# TYPE smsgate_ca_requests_total counter",
        "smsgate_ca_requests_total{decision=\"approved\"} 0",
        "smsgate_ca_queue_length 1",
        "smsgate_ca_certificates_issued 1",
        "smsgate_ca_ca_expiry_seconds ",
        "smsgate_ca_ca_expiring 0",
        "smsgate_ca_last_decision_timestamp_seconds ",
    ] {
        assert!(text.contains(needle), "{needle}\n{text}");
    }
    assert!(!text.contains("crl_next_update"), "no CRL yet:\n{text}");
    env.run(&["crl"]).success();
    let text = render(&engine, std::time::SystemTime::now());
    let line = text
        .lines()
        .find(|l| l.starts_with("smsgate_ca_crl_next_update_seconds "))
        .unwrap_or_else(|| panic!("{text}"));
    let secs: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((6.0 * 86_400.0..=7.0 * 86_400.0).contains(&secs), "{line}");
    // Every sample line is `name{labels} value`.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert_eq!(l.split_whitespace().count(), 2, "{l}");
    }
    assert!(fs::read_dir(&env.work).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
}

// ---------------------------------------------------------------------------------------
// Benchmark data (benches/list.sh)
// ---------------------------------------------------------------------------------------

/// Appends a synthetic ledger through the Ledger API for `benches/list.sh`: to
/// `$SMSGATE_BENCH_STATE/ledger.jsonl` until it has `$SMSGATE_BENCH_LINES` lines (default one
/// million): per certificate an `intent` and an `issued` line (a real-sized PEM), every 100th
/// certificate revoked, notBefore spread over 400 days so that some have expired.
#[test]
#[ignore = "benchmark data generator, run by benches/list.sh"]
fn generate_bench_ledger() {
    use chrono::{Duration, Utc};
    use smsgate_ca::ledger::Event;
    use smsgate_ca::request::rfc3339;

    let Ok(state) = std::env::var("SMSGATE_BENCH_STATE") else {
        eprintln!("SMSGATE_BENCH_STATE is not set: nothing to generate");
        return;
    };
    let lines: u64 = std::env::var("SMSGATE_BENCH_LINES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let mut ledger = Ledger::open(&std::path::Path::new(&state).join("ledger.jsonl")).unwrap();
    // A leaf PEM of the usual size (~680 bytes): the ledger stores one per certificate.
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}-----END CERTIFICATE-----\n",
        format!("{}\n", "M".repeat(64)).repeat(9)
    );
    let now = Utc::now();
    let mut batch: Vec<Event> = Vec::with_capacity(10_000);
    let mut i: u64 = 0;
    while ledger.line_count() + (batch.len() as u64) + 2 <= lines {
        i += 1;
        let mut serial = [0u8; 16];
        serial[0] = 1;
        serial[8..].copy_from_slice(&i.to_be_bytes());
        let serial = smsgate_ca::fsx::hex::encode(serial);
        let id = format!("bench{i:08}");
        let ip = format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
        let not_before = now - Duration::days((i % 400) as i64);
        batch.push(Event::Intent {
            request_id: id.clone(),
            serial: serial.clone(),
            kind: "webhook".into(),
            ip: ip.clone(),
        });
        batch.push(Event::Issued {
            request_id: id.clone(),
            serial: serial.clone(),
            kind: "webhook".into(),
            ip,
            not_before: rfc3339(not_before),
            not_after: rfc3339(not_before + Duration::days(365)),
            fingerprint_sha256: "AB:".repeat(31) + "AB",
            certificate: pem.clone(),
        });
        if i.is_multiple_of(100) && ledger.line_count() + (batch.len() as u64) < lines {
            batch.push(Event::Revoked {
                serial,
                request_id: id,
                reason: "keyCompromise".into(),
                revoked_at: rfc3339(now),
            });
        }
        if batch.len() >= 10_000 {
            ledger.append(&batch).unwrap();
            batch.clear();
        }
    }
    if !batch.is_empty() {
        ledger.append(&batch).unwrap();
    }
    eprintln!("ledger: {} lines, {i} certificates", ledger.line_count());
}

/// Issue 5 item 3: with URLs configured, certificates carry a CRL distribution point and AIA
/// caIssuers (and nothing else changes); a URL with a comma is refused at load.
#[test]
fn configured_urls_put_crl_distribution_point_and_ca_issuers_in_leaves() {
    let env = TestEnv::with_policy(&policy_text(
        "crl_url = \"http://ca.example.internal/api/v1/crl\"\n\
         ca_issuers_url = \"http://ca.example.internal/api/v1/ca.crt\"",
        "",
        "",
    ));
    issue(&env, &["urls"]);
    let text = x509_text(&env.spool.join("issued/urls.crt"));
    assert!(text.contains("X509v3 CRL Distribution Points"), "{text}");
    assert!(
        text.contains("URI:http://ca.example.internal/api/v1/crl"),
        "{text}"
    );
    assert!(
        text.contains("CA Issuers - URI:http://ca.example.internal/api/v1/ca.crt"),
        "{text}"
    );

    let bad = policy_text(
        "crl_url = \"http://a.example/crl,URI:http://b.example/\"",
        "",
        "",
    );
    fs::write(&env.policy, bad).unwrap();
    env.run(&["policy", "check", "/dev/null"])
        .code_is(2)
        .stderr_has("no commas");
}
