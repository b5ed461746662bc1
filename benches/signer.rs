//! In-process benchmark of the signer's per-request work (issues 12 and 13), with its
//! references measured in the same run by the same process:
//!
//! - OpenSSL's own P-256 sign and verify through a prepared context (the CPU bound counts one
//!   CSR verification plus one signature per request);
//! - the examination of a CSR (`policy::evaluate`: parse once, verify its signature, decide);
//! - issuance with the key file (`issue::prepare` + `issue::issue`: build the TBS, lint it,
//!   sign once, check the TBS bytes and verify the signature), per request;
//! - the same with the issuing key in a SoftHSM2 token (skipped when SoftHSM2 is missing),
//!   printed as a ratio to the key file: our overhead per PKCS#11 call, since SoftHSM2 is
//!   software.
//!
//! Run: `cargo bench --bench signer` (`SMSGATE_BENCH_N`, default 2000 requests; 2 threads).

// A benchmark stops at the first failure: unwrap states that.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chrono::Utc;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::stack::Stack;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509ReqBuilder};
use smsgate_ca::policy::{self, Decision, Policy};
use smsgate_ca::signer::ca::{self, Ca, StatePaths};
use smsgate_ca::signer::issue;
use smsgate_ca::signer::key::PassphraseSource;
use smsgate_ca::signer::pkcs11::PinSource;
use smsgate_ca::signer::serial::Serial;

const BIN: &str = env!("CARGO_BIN_EXE_smsgate-ca");
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const THREADS: usize = 2;

fn main() {
    let n: usize = std::env::var("SMSGATE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    println!("smsgate-ca signer benchmark: {n} P-256 requests, {THREADS} threads");
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(
        &policy_path,
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    let policy = Policy::load(&policy_path).unwrap();
    let csrs: Vec<Vec<u8>> = (0..n).map(csr).collect();

    // References: OpenSSL's sign and verify, prepared contexts, same process.
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let digest = openssl::sha::sha256(b"reference");
    let sig = {
        let mut c = openssl::pkey_ctx::PkeyCtx::new(&key).unwrap();
        c.sign_init().unwrap();
        let mut s = Vec::new();
        c.sign_to_vec(&digest, &mut s).unwrap();
        s
    };
    let sign_rate = parallel(n, |_| {
        thread_local! {
            static CTX: std::cell::RefCell<Option<openssl::pkey_ctx::PkeyCtx<openssl::pkey::Private>>> =
                const { std::cell::RefCell::new(None) };
        }
        CTX.with_borrow_mut(|c| {
            let c = c.get_or_insert_with(|| {
                let mut c = openssl::pkey_ctx::PkeyCtx::new(&key).unwrap();
                c.sign_init().unwrap();
                c
            });
            let mut s = Vec::new();
            c.sign_to_vec(&digest, &mut s).unwrap();
        });
    });
    let verify_rate = parallel(n, |_| {
        thread_local! {
            static CTX: std::cell::RefCell<Option<openssl::pkey_ctx::PkeyCtx<openssl::pkey::Private>>> =
                const { std::cell::RefCell::new(None) };
        }
        CTX.with_borrow_mut(|c| {
            let c = c.get_or_insert_with(|| {
                let mut c = openssl::pkey_ctx::PkeyCtx::new(&key).unwrap();
                c.verify_init().unwrap();
                c
            });
            assert!(c.verify(&digest, &sig).unwrap());
        });
    });
    let bound = 1.0 / (1.0 / sign_rate + 1.0 / verify_rate);
    println!(
        "OpenSSL P-256: {sign_rate:.0} sign/s, {verify_rate:.0} verify/s -> CPU bound {bound:.0} requests/s"
    );

    // Examination: parse + verify + decide, what the daemon does before signing.
    let ctx = policy::Context::default();
    let plans: Vec<(policy::Plan, Vec<u8>)> = csrs
        .iter()
        .map(|c| {
            let e = policy::evaluate(c, "webhook", &policy, &ctx);
            let Decision::Approve(plan) = e.decision else {
                panic!("benchmark CSR denied: {:?}", e.decision)
            };
            (plan, e.public_key_der.unwrap())
        })
        .collect();
    let examine_rate = parallel(n, |i| {
        let e = policy::evaluate(&csrs[i], "webhook", &policy, &ctx);
        assert!(matches!(e.decision, Decision::Approve(_)));
    });
    println!(
        "examine (policy::evaluate: parse, verify, decide): {examine_rate:.0}/s = {:.2} x one verify",
        examine_rate / verify_rate
    );

    let file_ca = make_ca(dir.path(), "file", &policy_path, None);
    let file_rate = issue_rate(&file_ca, &plans);
    println!(
        "issue, key file (build TBS, lint, sign, check TBS + verify): {file_rate:.0}/s = {:.2} x (sign + verify)",
        file_rate / bound
    );
    let both = 1.0 / (1.0 / examine_rate + 1.0 / file_rate);
    println!(
        "examine + issue, key file: {both:.0} requests/s = {:.2} x the CPU bound",
        both / bound
    );

    if Path::new(MODULE).exists() && which("softhsm2-util") {
        let pin = softhsm(dir.path());
        let token_ca = make_ca(dir.path(), "token", &policy_path, Some(&pin));
        let token_rate = issue_rate(&token_ca, &plans);
        println!(
            "issue, SoftHSM2 token: {token_rate:.0}/s = {:.2} x the key file (same run)",
            token_rate / file_rate
        );
    } else {
        println!("SoftHSM2 not installed: no token figure (apt-get install softhsm2)");
    }
}

/// Requests/s of prepare + issue over `plans` on [`THREADS`] threads.
fn issue_rate(ca: &Ca, plans: &[(policy::Plan, Vec<u8>)]) -> f64 {
    parallel(plans.len(), |i| {
        let (plan, spki) = &plans[i];
        let p = issue::prepare(ca, plan, spki, Serial::random(1), Utc::now()).unwrap();
        issue::issue(ca, p).unwrap();
    })
}

/// Runs `f(0..n)` split over [`THREADS`] threads; returns calls per second.
fn parallel(n: usize, f: impl Fn(usize) + Sync) -> f64 {
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let f = &f;
            s.spawn(move || {
                for i in (t..n).step_by(THREADS) {
                    f(i);
                }
            });
        }
    });
    n as f64 / t0.elapsed().as_secs_f64()
}

fn make_ca(root: &Path, name: &str, policy: &Path, pin: Option<&PathBuf>) -> Ca {
    let state = root.join(name);
    let mut cmd = Command::new(BIN);
    cmd.args(["init", "--no-passphrase", "--root-only", "--state"])
        .arg(&state)
        .arg("--policy")
        .arg(policy);
    if let Some(pin) = pin {
        cmd.args(["--pkcs11-module", MODULE, "--key-uri"])
            .arg("pkcs11:token=bench;object=issuing")
            .arg("--generate-in-token")
            .arg("--pin-file")
            .arg(pin);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pin = pin.map(|p| PinSource {
        path: p.clone(),
        allow_loose: false,
    });
    ca::load(
        &StatePaths::new(&state),
        &PassphraseSource::None,
        pin.as_ref(),
        false,
    )
    .unwrap()
}

/// A private SoftHSM2 token directory with one token; returns the PIN file.
fn softhsm(root: &Path) -> PathBuf {
    let tokens = root.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = root.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    // The benchmark's own process loads the module too: it reads this variable.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "bench"])
        .args(["--so-pin", "12345678", "--pin", "123456"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pin = root.join("pin");
    std::fs::write(&pin, "123456\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    pin
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn csr(i: usize) -> Vec<u8> {
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let ip = format!(
        "10.{}.{}.{}",
        (i >> 16) & 255,
        (i >> 8) & 255,
        (i & 255).max(1)
    );
    let mut b = X509ReqBuilder::new().unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", &ip).unwrap();
    b.set_subject_name(&name.build()).unwrap();
    b.set_pubkey(&key).unwrap();
    let mut exts = Stack::new().unwrap();
    exts.push(
        SubjectAlternativeName::new()
            .ip(&ip)
            .build(&b.x509v3_context(None))
            .unwrap(),
    )
    .unwrap();
    b.add_extensions(&exts).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    b.build().to_pem().unwrap()
}
