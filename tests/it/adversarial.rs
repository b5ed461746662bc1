//! The adversarial spool (issue 6 item 3): several writers drop good and bad files at once —
//! symlinks and hard links to files outside the spool, FIFOs, directories named like requests,
//! 255-byte and non-UTF-8 names, files growing while written in place, files rewritten after
//! they were renamed in, duplicates — while the daemon is killed (SIGKILL) and restarted at
//! seeded random points. At the end: every request decided exactly once, nothing signed that
//! the policy denies or that was not ours, nothing outside the spool touched, the ledger
//! verifies. Meanwhile spool subdirectories are swapped for symbolic links to that outside
//! directory and back (issue 9: the daemon must refuse them and write nothing through them).
//! `benches/soak.sh` runs the same with more files and kills, outside `cargo test`.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::x509::X509;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::util::quick_csr as csr;

const BIN: &str = env!("CARGO_BIN_EXE_smsgate-ca");

/// Files per writer, kills, and the seed; `SMSGATE_SOAK_*` raise them for the soak script.
fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Spool {
    root: PathBuf,
}

impl Spool {
    fn incoming(&self) -> PathBuf {
        self.root.join("spool/incoming")
    }
    fn put(&self, name: &str, bytes: &[u8]) {
        let tmp = self.incoming().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.incoming().join(name)).unwrap();
    }
}

#[derive(Default)]
struct Expect {
    /// Request ids that must end with exactly one status, and the public keys that may be
    /// certified for each (empty: must be denied).
    requests: HashMap<String, Vec<Vec<u8>>>,
}

fn args(root: &Path) -> Vec<String> {
    vec![
        "--state".into(),
        root.join("state").display().to_string(),
        "--spool".into(),
        root.join("spool").display().to_string(),
        "--policy".into(),
        root.join("policy.toml").display().to_string(),
    ]
}

fn start(root: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("daemon.log"))
        .unwrap();
    Command::new(BIN)
        .args(["daemon", "--workers", "2", "--rescan-interval", "1s"])
        .args(args(root))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[test]
fn issue_6_adversarial_spool_with_seeded_kills() {
    let per_writer = knob("SMSGATE_SOAK_FILES", 150) as usize;
    let kills = knob("SMSGATE_SOAK_KILLS", 50);
    let seed = knob("SMSGATE_SOAK_SEED", 20261129);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    std::fs::write(root.join("policy.toml"), POLICY).unwrap();
    std::fs::create_dir_all(root.join("spool/incoming")).unwrap();
    let out = Command::new(BIN)
        .args(["init", "--no-passphrase"])
        .args(args(&root))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Files outside the spool that links point at: a canary CSR for an allowed IP (signing it
    // would prove a link was followed) and a secret.
    let outside = root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let (canary_pem, canary_key) = csr("10.200.200.200");
    std::fs::write(outside.join("canary.csr"), &canary_pem).unwrap();
    std::fs::write(outside.join("secret"), b"top secret").unwrap();
    let outside_before = snapshot(&outside);

    let spool = Arc::new(Spool { root: root.clone() });
    let stop = Arc::new(AtomicBool::new(false));
    let mut daemon = start(&root);
    let swapper = {
        let (spool, outside, stop) = (root.join("spool"), outside.clone(), stop.clone());
        std::thread::spawn(move || swap_directories(&spool, &outside, seed, &stop))
    };

    let writers: Vec<_> = (0..4)
        .map(|w| {
            let spool = spool.clone();
            let outside = outside.clone();
            std::thread::spawn(move || writer(w, per_writer, &spool, &outside, seed))
        })
        .collect();

    // Kill and restart at seeded random points while the writers run, and after.
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.random_range(30..250)));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let _ = daemon.wait();
        daemon = start(&root);
    }
    let mut expect = Expect::default();
    for w in writers {
        for (id, keys) in w.join().unwrap().requests {
            expect.requests.insert(id, keys);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 0, "no directory was swapped");
    // A daemon started while a directory was swapped refused to run: start one on the sound
    // spool.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = daemon.wait();
    let log_len = std::fs::metadata(root.join("daemon.log")).map_or(0, |m| m.len());
    daemon = start(&root);

    // Let the last daemon finish everything.
    let spool_dir = root.join("spool");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let log = std::fs::read(root.join("daemon.log")).unwrap_or_default();
        let ready = String::from_utf8_lossy(&log[(log_len as usize).min(log.len())..])
            .contains("daemon ready");
        let pending = count(&spool_dir.join("incoming")) + count(&spool_dir.join("processing"));
        let decided = expect
            .requests
            .keys()
            .filter(|id| spool_dir.join(format!("status/{id}.json")).exists())
            .count();
        if ready && pending == 0 && decided == expect.requests.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not finished: {pending} pending, {decided}/{} decided; log tail:\n{}",
            expect.requests.len(),
            tail(&root.join("daemon.log"))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(daemon.wait().unwrap().success());

    // Nothing outside the spool was written, removed or signed.
    assert_eq!(
        snapshot(&outside),
        outside_before,
        "files outside the spool changed"
    );

    // Every request decided exactly once, and the ledger agrees.
    let ledger = std::fs::read_to_string(root.join("state/ledger.jsonl")).unwrap();
    let mut issued: HashMap<String, serde_json::Value> = HashMap::new();
    for line in ledger.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["kind"] == "issued" {
            let id = v["request_id"].as_str().unwrap().to_owned();
            assert!(
                issued.insert(id.clone(), v).is_none(),
                "{id} was signed twice"
            );
        }
    }
    let mut serials = HashSet::new();
    for (id, keys) in &expect.requests {
        let status: serde_json::Value = serde_json::from_slice(
            &std::fs::read(spool_dir.join(format!("status/{id}.json"))).unwrap(),
        )
        .unwrap();
        match issued.get(id) {
            Some(entry) => {
                assert_eq!(status["status"], "approved", "{id}");
                let cert =
                    X509::from_pem(entry["certificate"].as_str().unwrap().as_bytes()).unwrap();
                let key = cert.public_key().unwrap().public_key_to_der().unwrap();
                assert_ne!(key, canary_key, "{id}: the canary behind a link was signed");
                assert!(
                    keys.contains(&key),
                    "{id}: a key that was never submitted under this id was signed"
                );
                assert!(
                    entry["ip"].as_str().unwrap().starts_with("10."),
                    "{id}: signed outside the policy"
                );
                assert!(serials.insert(entry["serial"].as_str().unwrap().to_owned()));
            }
            None => assert_ne!(
                status["status"], "approved",
                "{id}: approved without a ledger record"
            ),
        }
    }
    for id in issued.keys() {
        assert!(
            expect.requests.contains_key(id),
            "{id}: signed, but no writer submitted it"
        );
    }
    let verify = Command::new(BIN)
        .args(["ledger", "verify"])
        .args(args(&root))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(count(&spool_dir.join("rejected")) > 0);
}

/// Until `stop`: every few hundred milliseconds, atomically exchanges a random spool
/// subdirectory (not `incoming/`, which the writers write into) with a symbolic link to
/// `outside`, then exchanges them back. Returns how many swaps were made.
fn swap_directories(spool: &Path, outside: &Path, seed: u64, stop: &AtomicBool) -> usize {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    const SUBS: [&str; 7] = [
        "processing",
        "held",
        "issued",
        "status",
        "archive",
        "rejected",
        "published",
    ];
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5a5a);
    let link = spool.join(".swap-link");
    let mut swaps = 0;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(rng.random_range(50..400)));
        let sub = spool.join(SUBS[rng.random_range(0..SUBS.len())]);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(outside, &link).unwrap();
        let exchange =
            |a: &Path, b: &Path| renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE);
        if exchange(&link, &sub).is_ok() {
            swaps += 1;
            std::thread::sleep(Duration::from_millis(rng.random_range(20..300)));
            exchange(&link, &sub).unwrap();
        }
        std::fs::remove_file(&link).unwrap();
    }
    swaps
}

/// One writer's share: good requests, denials, and the nasty kinds, in a seeded order.
fn writer(w: usize, n: usize, spool: &Spool, outside: &Path, seed: u64) -> Expect {
    let mut rng = StdRng::seed_from_u64(seed ^ (w as u64 + 1));
    let mut expect = Expect::default();
    for i in 0..n {
        let id = format!("w{w}-{i}");
        match rng.random_range(0..14) {
            0..=5 => {
                let (pem, key) = csr(&format!("10.{w}.{}.{}", i / 250, i % 250 + 1));
                spool.put(&format!("{id}.csr"), &pem);
                expect.requests.insert(id, vec![key]);
            }
            6 => {
                // A public address, and garbage: denied.
                let (pem, _) = csr("8.8.4.4");
                spool.put(&format!("{id}.csr"), &pem);
                expect.requests.insert(id.clone(), vec![]);
                spool.put(
                    &format!("{id}-g.csr"),
                    b"-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n",
                );
                expect.requests.insert(format!("{id}-g"), vec![]);
            }
            7 => {
                std::os::unix::fs::symlink(
                    outside.join("canary.csr"),
                    spool.incoming().join(format!("{id}.csr")),
                )
                .unwrap();
                let _ = std::fs::hard_link(
                    outside.join("secret"),
                    spool.incoming().join(format!("{id}-h.csr")),
                );
            }
            8 => {
                let _ = nix::unistd::mkfifo(
                    &spool.incoming().join(format!("{id}.csr")),
                    nix::sys::stat::Mode::S_IRWXU,
                );
                let _ = std::fs::create_dir(spool.incoming().join(format!("{id}-d.json")));
            }
            9 => {
                let long = format!("{}.csr", "x".repeat(251));
                let _ = std::fs::write(spool.incoming().join(long), b"junk");
                let raw = OsString::from_vec(vec![b'n', 0xff, 0xfe, b'.', b'c', b's', b'r']);
                let _ = std::fs::write(spool.incoming().join(raw), b"junk");
            }
            10 => {
                // Growing while written in place, closed at the end.
                let (pem, key) = csr(&format!("10.{w}.251.{}", i % 250 + 1));
                let mut f =
                    std::fs::File::create(spool.incoming().join(format!("{id}.csr"))).unwrap();
                for chunk in pem.chunks(64) {
                    f.write_all(chunk).unwrap();
                    f.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
                drop(f);
                // Written in place: a rescan may have read it half-way (then it is denied
                // invalid_csr) — either outcome is a decision, and only this key may be signed.
                expect.requests.insert(id, vec![key]);
            }
            11 => {
                // Rewritten after it was renamed in (an open descriptor kept by the writer).
                let (pem, key) = csr(&format!("10.{w}.252.{}", i % 250 + 1));
                let (pem2, key2) = csr(&format!("10.{w}.253.{}", i % 250 + 1));
                let path = spool.incoming().join(format!("{id}.csr"));
                spool.put(&format!("{id}.csr"), &pem);
                if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&path) {
                    std::thread::sleep(Duration::from_millis(rng.random_range(0..5)));
                    let _ = f.write_all(&pem2[..pem.len().min(pem2.len())]);
                }
                expect.requests.insert(id, vec![key, key2]);
            }
            _ => {
                // The same id twice with different content: decided once, the second rejected.
                let (pem, key) = csr(&format!("10.{w}.254.{}", i % 250 + 1));
                let (pem2, key2) = csr(&format!("10.{w}.254.{}", i % 250 + 1));
                spool.put(&format!("{id}.csr"), &pem);
                std::thread::sleep(Duration::from_millis(rng.random_range(0..20)));
                spool.put(&format!("{id}.csr"), &pem2);
                expect.requests.insert(id, vec![key, key2]);
            }
        }
        if rng.random_range(0..10) == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    expect
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
                m.mtime() as u64,
            )
        })
        .collect();
    v.sort();
    v
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    s.lines()
        .rev()
        .take(30)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n")
}

const POLICY: &str = r#"version = 1

[profiles.webhook]
serial_prefix = 1
allow = ["10.0.0.0/8"]
deny = []
"#;
