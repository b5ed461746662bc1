//! Issue 9: the spool is hostile (DESIGN §9). Each test pins one finding of the review and
//! drives the built binary as an attacker with write access to the spool would: symlinks and
//! hard links planted where the signer writes (findings 1), revocations without proof (2), an
//! id held both as a certificate request and as a revocation (4), a second file under an id
//! already signed (5), a writer pausing mid-file (7), and `ledger verify` and passphrase files
//! (8). Forged keys (3, 6) are in `real_keys.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// Every file under `dir` (links as their target), by relative path: to prove that nothing
/// was created, changed or removed there.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.insert(rel, t.as_os_str().as_encoded_bytes().to_vec());
            } else if m.is_dir() {
                stack.push(p);
            } else {
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A copy of the env's state directory (keys, certificates, ledger) at `root/decoy`: what a
/// link planted in the spool points at, standing for the real one.
fn decoy(env: &TestEnv) -> PathBuf {
    let decoy = env.root.join("decoy");
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(&env.state)
        .arg(&decoy)
        .output()
        .unwrap();
    assert!(out.status.success());
    decoy
}

/// Finding 1: `spool/.lock` planted as a symbolic link, then as a hard link, to the CA key.
/// Before the fix `process` truncated the key to a pid.
#[test]
fn issue_9_a_lock_file_planted_as_a_link_is_refused_and_the_key_is_untouched() {
    let env = TestEnv::new();
    env.process();
    let decoy = decoy(&env);
    let key = decoy.join("ca.key");
    let before = fs::read(&key).unwrap();
    let lock = env.spool.join(".lock");
    let _ = fs::remove_file(&lock);
    symlink(&key, &lock).unwrap();
    for cmd in ["process", "daemon"] {
        let run = env.run(&[cmd]);
        assert_eq!(fs::read(&key).unwrap(), before, "{cmd} wrote through .lock");
        run.code_is(1).stderr_has(".lock");
    }
    fs::remove_file(&lock).unwrap();
    fs::hard_link(&key, &lock).unwrap();
    env.run(&["process"]).code_is(1).stderr_has("hard link");
    assert_eq!(fs::read(&key).unwrap(), before);
}

/// Finding 1: each spool subdirectory, then the spool root, replaced by a link to a copy of
/// the state directory, with requests that would write into every one of them. Every command
/// refuses (exit 1, the path named) and the copy is byte-for-byte unchanged. Before the fix
/// `issued -> <state>` and a request named `ca` replaced `ca.crt` with a leaf.
#[test]
fn issue_9_spool_directories_planted_as_links_are_refused_and_the_state_is_untouched() {
    let env = TestEnv::with_policy(&policy_text("", "", "approval = \"manual\""));
    let decoy = decoy(&env);
    // Something for every directory: an approval (issued, status, archive, processing), a
    // held request, a rejected name; published/ is written by every run.
    let (ca_csr, _) = quick_csr("192.168.1.10");
    let (held_csr, _) = quick_csr("192.168.1.11");
    let held = envelope(
        "h1",
        "private_server",
        std::str::from_utf8(&held_csr).unwrap(),
    );
    fs::write(decoy.join("ca.csr"), &ca_csr).unwrap();
    let before = snapshot(&decoy);
    for sub in [
        "incoming",
        "processing",
        "held",
        "issued",
        "status",
        "archive",
        "rejected",
        "published",
    ] {
        let dir = env.spool.join(sub);
        let _ = fs::remove_dir_all(&dir);
        if sub != "incoming" {
            env.drop_file("ca.csr", &ca_csr);
            env.drop_file("h1.json", &held);
            env.drop_file("not a request.txt", "x");
        }
        symlink(&decoy, &dir).unwrap();
        let run = env.run(&["process"]);
        assert_eq!(snapshot(&decoy), before, "process wrote through {sub}/");
        run.code_is(1).stderr_has(&dir.display().to_string());
        env.run(&["crl"]).code_is(1);
        env.run(&["approve", "h1"]).code_is(1);
        assert_eq!(snapshot(&decoy), before, "written through {sub}/");
        fs::remove_file(&dir).unwrap();
        fs::create_dir(&dir).unwrap();
    }
    // The spool root itself.
    let real = env.root.join("spool.real");
    fs::rename(&env.spool, &real).unwrap();
    symlink(&decoy, &env.spool).unwrap();
    env.run(&["process"]).code_is(1).stderr_has("symbolic link");
    assert_eq!(snapshot(&decoy), before, "written through the spool root");
    fs::remove_file(&env.spool).unwrap();
    fs::rename(&real, &env.spool).unwrap();
    // With the spool sound again, the same requests go through.
    env.process();
    env.assert_approved("ca");
}

/// Finding 1 (DESIGN §9): the state directory may not lie inside the spool; nothing is
/// created there.
#[test]
fn issue_9_a_state_directory_inside_the_spool_is_refused() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    let inside = env.spool.join("state");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["process", "--dev", "--state"])
        .arg(&inside)
        .arg("--spool")
        .arg(&env.spool)
        .arg("--policy")
        .arg(&env.policy);
    run(cmd).code_is(1).stderr_has("inside the spool");
    assert!(!inside.exists(), "a CA was created inside the spool");
}

/// A daemon on the env's spool (rescans every second, metrics to `metrics.prom`), its log in
/// `daemon.log`; returns once it is ready.
fn start_daemon(env: &TestEnv) -> Child {
    let log = fs::File::create(env.root.join("daemon.log")).unwrap();
    let metrics = env.root.join("metrics.prom");
    let mut cmd = env.cmd(&["daemon", "--workers", "1", "--rescan-interval", "1s"]);
    cmd.arg("--metrics-file")
        .arg(&metrics)
        .stdout(Stdio::null())
        .stderr(log);
    let child = cmd.spawn().unwrap();
    wait_until("the daemon to be ready", Duration::from_secs(60), || {
        daemon_log(env).contains("daemon ready")
    });
    child
}

fn daemon_log(env: &TestEnv) -> String {
    fs::read_to_string(env.root.join("daemon.log")).unwrap_or_default()
}

fn stop_daemon(mut child: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

#[track_caller]
fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Finding 1 while running: `issued/` swapped for a link to a copy of the state. The daemon
/// refuses the spool (error log, metric), writes nothing through the link, and carries on once
/// the directory is put back.
#[test]
fn issue_9_a_directory_swapped_for_a_link_while_running_is_refused_until_put_back() {
    let env = TestEnv::new();
    let decoy = decoy(&env);
    let before = snapshot(&decoy);
    let daemon = start_daemon(&env);
    // Swapped in one step (a missing issued/ would be created again by the daemon).
    let issued = env.spool.join("issued");
    let link = env.spool.join(".issued.link");
    symlink(&decoy, &link).unwrap();
    exchange(&link, &issued);
    let (csr, _) = quick_csr("192.168.1.20");
    env.drop_file(".ca.csr.tmp", &csr);
    fs::rename(env.incoming(".ca.csr.tmp"), env.incoming("ca.csr")).unwrap();
    wait_until("the refusal to be logged", Duration::from_secs(30), || {
        daemon_log(&env).contains("is a symbolic link")
    });
    let metrics = env.root.join("metrics.prom");
    wait_until("the refusal metric", Duration::from_secs(30), || {
        fs::read_to_string(&metrics)
            .unwrap_or_default()
            .contains("smsgate_ca_spool_refusals_total 1")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        snapshot(&decoy),
        before,
        "written through the swapped issued/"
    );
    assert!(env.status_opt("ca").is_none(), "decided while refused");
    exchange(&link, &issued);
    fs::remove_file(&link).unwrap();
    wait_until(
        "the request after the repair",
        Duration::from_secs(60),
        || env.status_opt("ca").is_some(),
    );
    stop_daemon(daemon);
    env.assert_approved("ca");
    env.verify_chain(&env.issued("ca")).success();
    assert_eq!(snapshot(&decoy), before);
}

/// Atomically exchanges two names (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE).unwrap();
}

/// Issues webhook certificates for `ids` (192.168.2.x); returns (serial, key) for each.
fn issue(env: &TestEnv, ids: &[&str]) -> Vec<(String, PathBuf)> {
    let keys: Vec<PathBuf> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            env.drop_csr(id, &CsrSpec::ip(&format!("192.168.2.{}", 10 + i)))
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

fn revocation(env: &TestEnv, id: &str) -> Value {
    let text = fs::read_to_string(env.spool.join(format!("status/{id}.revoke.json")))
        .unwrap_or_else(|e| panic!("no record for {id} ({e}):\n{}", env.tree()));
    serde_json::from_str(&text).unwrap()
}

fn revoked_ids(env: &TestEnv) -> Vec<String> {
    let out = env.run(&["list", "--json", "--revoked"]).success().stdout();
    let v: Vec<Value> = serde_json::from_str(&out).unwrap();
    let mut ids: Vec<String> = v
        .iter()
        .map(|c| c["request_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Finding 2: a serial is printed in every certificate, so naming one revokes nothing. Under
/// `revocation = "proof"` (the default) a request without a proof is held, one with a proof by
/// the certificate's key is carried out, one signed by another key is denied `bad_proof`;
/// under `"manual"` every request is held, even with a good proof.
#[test]
fn issue_9_revocation_needs_a_proof_or_an_operator() {
    let env = TestEnv::new();
    let certs = issue(&env, &["c1", "c2", "c3"]);
    let body = |serial: &str, proof: Option<String>| {
        let mut v = serde_json::json!({"serial": serial, "reason": "keyCompromise"});
        if let Some(p) = proof {
            v["proof"] = p.into();
        }
        v.to_string()
    };
    let proof = |i: usize, key: usize| {
        Some(revocation_proof(
            &certs[key].1,
            &certs[i].0,
            "keyCompromise",
        ))
    };
    env.drop_file("noproof.revoke.json", body(&certs[1].0, None));
    env.drop_file("good.revoke.json", body(&certs[0].0, proof(0, 0)));
    env.drop_file("otherkey.revoke.json", body(&certs[2].0, proof(2, 0)));
    env.process();
    let held = revocation(&env, "noproof");
    assert_eq!(held["status"], "pending", "{held:#}");
    assert_eq!(revocation(&env, "good")["status"], "revoked");
    assert!(env.list("held").contains(&"noproof.revoke.json".to_owned()));
    let bad = revocation(&env, "otherkey");
    assert_eq!(bad["status"], "denied", "{bad:#}");
    assert_eq!(bad["reason"], "bad_proof", "{bad:#}");
    assert_eq!(revoked_ids(&env), ["c1"]);
    // The operator decides the held one.
    env.run(&["approve", "--revocation", "noproof"]).success();
    assert_eq!(revocation(&env, "noproof")["status"], "revoked");
    assert_eq!(revoked_ids(&env), ["c1", "c2"]);

    let manual = TestEnv::with_policy(&policy_text("", "revocation = \"manual\"", ""));
    let certs = issue(&manual, &["m1"]);
    let good = revocation_proof(&certs[0].1, &certs[0].0, "keyCompromise");
    manual.drop_file("m.revoke.json", body(&certs[0].0, Some(good)));
    manual.process();
    let r = revocation(&manual, "m");
    assert_eq!(r["status"], "pending", "{r:#}");
    assert!(revoked_ids(&manual).is_empty());
    manual
        .run(&["deny", "--revocation", "m", "--reason", "ask in person"])
        .success();
    assert_eq!(revocation(&manual, "m")["reason"], "denied_by_operator");
    assert!(revoked_ids(&manual).is_empty());
}

/// Finding 4: `approve web7` approved a held revocation when a certificate request of the same
/// id was held too. Operator commands name what they act on.
#[test]
fn issue_9_approve_never_touches_a_revocation_of_the_same_id() {
    let env = TestEnv::with_policy(&policy_text("", "approval = \"manual\"", ""));
    env.drop_csr("old", &CsrSpec::ip("192.168.3.1"));
    env.process();
    env.run(&["approve", "old"]).success();
    let serial = env.assert_approved("old")["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    env.drop_csr("web7", &CsrSpec::ip("192.168.3.7"));
    env.drop_file(
        "web7.revoke.json",
        serde_json::json!({"serial": serial, "reason": "superseded"}).to_string(),
    );
    env.process();
    assert_eq!(env.status("web7")["status"], "pending");
    assert_eq!(revocation(&env, "web7")["status"], "pending");

    env.run(&["approve", "web7"])
        .success()
        .stdout_has("approved");
    env.assert_approved("web7");
    assert_eq!(revocation(&env, "web7")["status"], "pending");
    assert!(
        revoked_ids(&env).is_empty(),
        "approve ID revoked a certificate"
    );

    env.run(&["approve", "--revocation", "old"])
        .code_is(2)
        .stderr_has("not held");
    env.run(&["approve", "--revocation", "web7"]).success();
    assert_eq!(revocation(&env, "web7")["status"], "revoked");
    assert_eq!(revoked_ids(&env), ["old"]);
    // A plain approve of an id held only as a revocation says where to look.
    env.drop_file(
        "r9.revoke.json",
        serde_json::json!({"request_id": "web7", "reason": "superseded"}).to_string(),
    );
    env.process();
    env.run(&["approve", "r9"])
        .code_is(2)
        .stderr_has("--revocation r9");
}

fn issued_lines(env: &TestEnv, id: &str) -> usize {
    fs::read_to_string(env.ledger())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "issued" && v["request_id"] == id)
        .count()
}

/// Finding 5: one id signed twice. A different file under an id already signed is placed in
/// `held/` and in `processing/` (as a racing `approve` or a crash would leave it); `approve`
/// and a restart never sign it, and the first record and certificate stay as they were.
#[test]
fn issue_9_an_id_already_signed_is_never_signed_again() {
    let env = TestEnv::new();
    env.drop_csr("x", &CsrSpec::ip("192.168.4.1"));
    env.process();
    let first = env.assert_approved("x");
    let cert = fs::read(env.issued("x")).unwrap();
    let (other, _) = quick_csr("192.168.4.2");
    let (third, _) = quick_csr("192.168.4.3");
    fs::write(env.spool.join("held/x.csr"), &other).unwrap();
    fs::write(
        env.spool.join("processing/x.json"),
        envelope("x", "webhook", std::str::from_utf8(&third).unwrap()),
    )
    .unwrap();

    env.run(&["approve", "x"])
        .code_is(2)
        .stderr_has("already decided");
    assert_eq!(issued_lines(&env, "x"), 1, "approve signed x again");
    env.process();
    assert_eq!(issued_lines(&env, "x"), 1, "the restart signed x again");
    assert_eq!(env.status("x"), first, "the first record changed");
    assert_eq!(fs::read(env.issued("x")).unwrap(), cert);
    assert!(env.list("processing").is_empty(), "{}", env.tree());
    assert!(env.list("held").is_empty(), "{}", env.tree());
    // status/ is not evidence either: with the record removed and yet another file under the
    // id, the record comes back from the ledger and the first file stays in archive/.
    let archived = fs::read(env.spool.join("archive/x.csr")).unwrap();
    fs::remove_file(env.spool.join("status/x.json")).unwrap();
    env.drop_file("x.csr", quick_csr("192.168.4.4").0);
    env.process();
    assert_eq!(issued_lines(&env, "x"), 1, "signed x again");
    assert_eq!(env.status("x")["serial"], first["serial"]);
    assert_eq!(fs::read(env.spool.join("archive/x.csr")).unwrap(), archived);
    env.run(&["ledger", "verify"]).success();
}

/// Finding 7: a file written in place whose writer pauses 5 s mid-file is not taken while it
/// is open for writing (the old rescan took it after 2 s of quiet), and is taken once closed.
#[test]
fn issue_9_a_writer_pausing_mid_file_is_waited_for() {
    let env = TestEnv::new();
    let daemon = start_daemon(&env);
    let (pem, _) = quick_csr("192.168.5.5");
    let path = env.incoming("slow.csr");
    let mut f = fs::File::create(&path).unwrap();
    f.write_all(&pem[..pem.len() / 2]).unwrap();
    f.flush().unwrap();
    // Rescans run every second meanwhile.
    std::thread::sleep(Duration::from_secs(5));
    let taken = env.status_opt("slow");
    assert!(
        taken.is_none() && path.exists(),
        "taken while still open for writing: {taken:?}\n{}",
        env.tree()
    );
    f.write_all(&pem[pem.len() / 2..]).unwrap();
    drop(f);
    wait_until("the closed file", Duration::from_secs(60), || {
        env.status_opt("slow").is_some()
    });
    stop_daemon(daemon);
    env.assert_approved("slow");
}

/// Finding 8: `ledger verify` exited 0 checking no signature when the CA certificate could not
/// be loaded, even with `--checkpoint`; a passphrase file anyone may read was used.
#[test]
fn issue_9_ledger_verify_without_the_ca_certificate_and_loose_passphrase_files() {
    let env = TestEnv::new();
    env.drop_csr("v1", &CsrSpec::ip("192.168.6.1"));
    env.process();
    env.run(&["ledger", "verify"]).success();
    let checkpoint = env.spool.join("published/ledger-checkpoint.json");
    let cert = env.ca_cert();
    let aside = env.root.join("ca.crt.aside");
    fs::rename(&cert, &aside).unwrap();
    env.run(&["ledger", "verify"])
        .code_is(1)
        .stderr_has("--no-signatures");
    let cp = checkpoint.to_str().unwrap();
    env.run(&["ledger", "verify", "--checkpoint", cp])
        .code_is(1)
        .stderr_has("signatures");
    env.run(&["ledger", "verify", "--no-signatures", "--checkpoint", cp])
        .success()
        .stdout_has("NOT");
    fs::rename(&aside, &cert).unwrap();

    fs::set_permissions(&env.passphrase_file, fs::Permissions::from_mode(0o644)).unwrap();
    env.drop_csr("v2", &CsrSpec::ip("192.168.6.2"));
    env.run(&["process"]).code_is(1).stderr_has("0644");
    assert!(env.status_opt("v2").is_none());
    env.run(&["process", "--allow-loose-permissions"]).success();
    env.assert_approved("v2");
}
