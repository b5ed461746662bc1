//! The ledger (issue 2 item 6, DESIGN §7) as an operator sees it: `process` records every
//! decision in `state/ledger.jsonl` and ends with a signed checkpoint, published as
//! `spool/published/ledger-checkpoint.json`; `ledger verify [--checkpoint FILE] [--json]` exits
//! 0 for an intact ledger and 1 for any edit, removal, reordering or truncation, naming the
//! line where the chain breaks.

use std::fs;

use serde_json::Value;

use crate::util::*;

/// A CA whose ledger holds two intents, a denial, two issuances and a checkpoint.
fn env_with_history() -> TestEnv {
    let env = TestEnv::new();
    env.drop_csr("a1", &CsrSpec::ip("192.168.1.1"));
    env.drop_csr("a2", &CsrSpec::ip("192.168.1.2"));
    env.drop_csr("d1", &CsrSpec::ip("8.8.8.8"));
    env.process();
    assert_eq!(
        lines(&env).len(),
        6,
        "2 intents, 1 denial, 2 issued, 1 checkpoint"
    );
    env
}

fn lines(env: &TestEnv) -> Vec<String> {
    fs::read_to_string(env.ledger())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(env: &TestEnv, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(env.ledger(), text).unwrap();
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

/// `,"hash":"` + 64 hex digits + `"}` ends every line.
const HASH_SUFFIX: usize = 9 + 64 + 2;

/// Re-seals a line the way a careful forger would: optionally sets its `prev`, then
/// recomputes its own `hash` (SHA-256 of the bytes before `,"hash":`).
fn reseal(line: &str, prev: Option<&str>) -> String {
    let mut body = line[..line.len() - HASH_SUFFIX].to_owned();
    if let Some(prev) = prev {
        let at = body.find("\"prev\":\"").unwrap() + 8;
        body.replace_range(at..at + 64, prev);
    }
    let hash = hex(&openssl::sha::sha256(body.as_bytes()));
    format!("{body},\"hash\":\"{hash}\"}}")
}

fn hash_of(line: &str) -> String {
    parse(line)["hash"].as_str().unwrap().to_owned()
}

fn verify(env: &TestEnv, extra: &[&str]) -> Run {
    let mut args = vec!["ledger", "verify"];
    args.extend_from_slice(extra);
    env.run(&args)
}

/// `ledger verify` must exit 1 and name `line`.
#[track_caller]
fn broken_at(env: &TestEnv, line: usize) -> Run {
    verify(env, &[])
        .code_is(1)
        .stderr_has(&format!("broken at line {line}:"))
}

#[test]
fn ledger_of_a_process_run_verifies() {
    let env = env_with_history();
    let n = lines(&env).len();
    verify(&env, &[])
        .success()
        .stdout_has(&format!("ledger OK: {n} lines, 1 signed checkpoints"));
    let j: Value = serde_json::from_str(&verify(&env, &["--json"]).success().stdout()).unwrap();
    assert_eq!(j["ok"], true);
    assert_eq!(j["lines"], n);
    assert_eq!(j["checkpoints"], 1);
    assert_eq!(j["head"], hash_of(lines(&env).last().unwrap()));
}

/// What `process` records: an intent before each issuance, the issued certificate, the
/// denial, and a signed checkpoint last, which is also what it publishes.
#[test]
fn ledger_records_intents_issuances_denials_and_a_published_checkpoint() {
    let env = env_with_history();
    let entries: Vec<Value> = lines(&env).iter().map(|l| parse(l)).collect();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i + 1);
    }
    let kinds = |k: &str| entries.iter().filter(|e| e["kind"] == k).count();
    assert_eq!(kinds("intent"), 2);
    assert_eq!(kinds("issued"), 2);
    assert_eq!(kinds("denied"), 1);
    assert_eq!(kinds("checkpoint"), 1);
    for id in ["a1", "a2"] {
        let pos = |k: &str| {
            entries
                .iter()
                .position(|e| e["kind"] == k && e["request_id"] == id)
                .unwrap()
        };
        assert!(pos("intent") < pos("issued"), "{id}: intent after issued");
        let issued = &entries[pos("issued")];
        let status = env.status(id);
        assert_eq!(issued["serial"], status["serial"]);
        assert_eq!(entries[pos("intent")]["serial"], status["serial"]);
        assert_eq!(issued["fingerprint_sha256"], status["fingerprint_sha256"]);
        let leaf = pem_certs(&env.issued(id)).remove(0);
        let logged =
            openssl::x509::X509::from_pem(issued["certificate"].as_str().unwrap().as_bytes())
                .unwrap()
                .to_der()
                .unwrap();
        assert_eq!(
            logged, leaf,
            "{id}: the ledger holds the issued certificate"
        );
    }
    let denied = entries.iter().find(|e| e["kind"] == "denied").unwrap();
    assert_eq!(denied["request_id"], "d1");
    assert_eq!(denied["reason"], "ip_not_allowed");
    let last = lines(&env).pop().unwrap();
    assert_eq!(parse(&last)["kind"], "checkpoint");
    let published =
        fs::read_to_string(env.spool_dir("published").join("ledger-checkpoint.json")).unwrap();
    assert_eq!(published.trim_end(), last);
}

#[test]
fn edited_byte_in_a_line_is_caught_at_that_line() {
    let env = env_with_history();
    let mut l = lines(&env);
    let i = l
        .iter()
        .position(|x| x.contains("\"ip\":\"192.168.1.2\""))
        .unwrap();
    l[i] = l[i].replacen("192.168.1.2", "192.168.1.3", 1);
    write_lines(&env, &l);
    broken_at(&env, i + 1).stderr_has("edited");
}

#[test]
fn edited_reason_of_a_denial_is_caught() {
    let env = env_with_history();
    let mut l = lines(&env);
    let i = l.iter().position(|x| x.contains("ip_not_allowed")).unwrap();
    l[i] = l[i].replace("ip_not_allowed", "ip_denied");
    write_lines(&env, &l);
    broken_at(&env, i + 1);
}

/// A forger who also fixes the edited line's own hash breaks the next line's `prev`.
#[test]
fn edited_line_with_its_hash_recomputed_is_caught_at_the_next_line() {
    let env = env_with_history();
    let mut l = lines(&env);
    l[1] = reseal(&l[1].replacen("webhook", "private_server", 1), None);
    write_lines(&env, &l);
    broken_at(&env, 3);
}

/// A forger who rewrites the whole chain after the edit is caught by the signed checkpoint.
#[test]
fn consistently_rewritten_chain_is_caught_by_the_signed_checkpoint() {
    let env = env_with_history();
    let published = env.spool_dir("published").join("ledger-checkpoint.json");
    let mut l = lines(&env);
    l[0] = reseal(&l[0].replacen("192.168.1.", "192.168.9.", 1), None);
    for i in 1..l.len() {
        let prev = hash_of(&l[i - 1]);
        let mut next = reseal(&l[i], Some(&prev));
        if parse(&next)["kind"] == "checkpoint" {
            // Point the checkpoint at the new head too; its signature cannot follow.
            let old_head = parse(&l[i])["head"].as_str().unwrap().to_owned();
            next = reseal(&next.replace(&old_head, &prev), None);
        }
        l[i] = next;
    }
    write_lines(&env, &l);
    let n = l.len();
    broken_at(&env, n).stderr_has("signature");
    verify(&env, &["--checkpoint", published.to_str().unwrap()]).code_is(1);
}

#[test]
fn deleted_line_is_caught() {
    let env = env_with_history();
    let mut l = lines(&env);
    l.remove(2);
    write_lines(&env, &l);
    broken_at(&env, 3);
}

#[test]
fn deleted_first_line_is_caught() {
    let env = env_with_history();
    let mut l = lines(&env);
    l.remove(0);
    write_lines(&env, &l);
    broken_at(&env, 1);
}

#[test]
fn reordered_lines_are_caught() {
    let env = env_with_history();
    let mut l = lines(&env);
    l.swap(1, 2);
    write_lines(&env, &l);
    broken_at(&env, 2);
}

#[test]
fn duplicated_line_is_caught() {
    let env = env_with_history();
    let mut l = lines(&env);
    let dup = l[1].clone();
    l.insert(2, dup);
    write_lines(&env, &l);
    broken_at(&env, 3);
}

#[test]
fn tail_cut_mid_line_is_caught_at_the_last_line() {
    let env = env_with_history();
    let text = fs::read_to_string(env.ledger()).unwrap();
    let n = text.lines().count();
    fs::write(env.ledger(), &text[..text.len() - 40]).unwrap();
    broken_at(&env, n).stderr_has("incomplete");
}

#[test]
fn garbage_line_is_caught() {
    let env = env_with_history();
    let mut l = lines(&env);
    l.insert(3, "{\"seq\":4}".into());
    write_lines(&env, &l);
    broken_at(&env, 4);
}

/// Cutting whole lines off the end leaves a valid chain; only the published checkpoint shows
/// that history is missing (DESIGN §7).
#[test]
fn truncated_ledger_passes_the_chain_but_fails_the_published_checkpoint() {
    let env = env_with_history();
    let published = env.spool_dir("published").join("ledger-checkpoint.json");
    let mut l = lines(&env);
    l.truncate(l.len() - 3);
    write_lines(&env, &l);
    verify(&env, &[]).success();
    let r = verify(&env, &["--checkpoint", published.to_str().unwrap()]).code_is(1);
    let err = r.stderr();
    assert!(err.contains("cut off"), "{err}");
    let j: Value = serde_json::from_str(
        &verify(
            &env,
            &["--checkpoint", published.to_str().unwrap(), "--json"],
        )
        .code_is(1)
        .stdout(),
    )
    .unwrap();
    assert_eq!(j["ok"], false);
    assert!(
        j["line"].as_u64().is_some() && j["message"].is_string(),
        "{j}"
    );
}

/// An older published checkpoint still verifies against the longer ledger of later runs.
#[test]
fn earlier_checkpoint_verifies_against_a_longer_ledger() {
    let env = env_with_history();
    let published = env.spool_dir("published").join("ledger-checkpoint.json");
    let first = env.work.join("checkpoint-1.json");
    fs::copy(&published, &first).unwrap();
    env.drop_csr("later", &CsrSpec::ip("192.168.1.9"));
    env.process();
    verify(&env, &["--checkpoint", first.to_str().unwrap()])
        .success()
        .stdout_has("2 signed checkpoints");
    verify(&env, &["--checkpoint", published.to_str().unwrap()]).success();
}

#[test]
fn operator_decisions_keep_the_ledger_valid() {
    let env = TestEnv::with_policy(&policy_text("", "approval = \"manual\"", ""));
    env.drop_csr("h1", &CsrSpec::ip("192.168.1.1"));
    env.drop_csr("h2", &CsrSpec::ip("192.168.1.2"));
    env.process();
    env.run(&["approve", "h1"]).success();
    env.run(&["deny", "h2", "--reason", "no"]).success();
    let published = env.spool_dir("published").join("ledger-checkpoint.json");
    verify(&env, &["--checkpoint", published.to_str().unwrap()]).success();
    let l = lines(&env);
    assert_eq!(parse(l.last().unwrap())["kind"], "checkpoint");
    assert!(l.iter().any(|x| x.contains("denied_by_operator")));
}

#[test]
fn invalid_checkpoint_file_fails() {
    let env = env_with_history();
    let bad = env.work.join("bad-checkpoint.json");
    fs::write(&bad, "{\"not\":\"a checkpoint\"}\n").unwrap();
    verify(&env, &["--checkpoint", bad.to_str().unwrap()]).code_is(1);
    // An ordinary ledger line is not a checkpoint either.
    fs::write(&bad, format!("{}\n", lines(&env)[0])).unwrap();
    verify(&env, &["--checkpoint", bad.to_str().unwrap()]).code_is(1);
    verify(
        &env,
        &["--checkpoint", env.work.join("missing").to_str().unwrap()],
    )
    .code_is(2);
}

#[test]
fn verify_without_a_ledger_exits_1() {
    let env = TestEnv::new();
    verify(&env, &[]).code_is(1).stderr_has("no ledger");
}
