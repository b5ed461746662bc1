//! The signer daemon (issue 3): inotify, crash safety under SIGKILL, the spool lock, SIGHUP
//! reload, SIGTERM, sd_notify, files still being written, and a spool removed under it.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::util::quick_csr;

const BIN: &str = env!("CARGO_BIN_EXE_smsgate-ca");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new(policy: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
        std::fs::create_dir_all(dir.path().join("spool/incoming")).unwrap();
        let out = Command::new(BIN)
            .args(["init", "--no-passphrase"])
            .args(self_args(dir.path()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).args(self_args(self.dir.path()));
        c
    }

    fn start(&self, extra: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .unwrap();
        let mut args = vec!["daemon", "--workers", "2", "--rescan-interval", "2s"];
        args.extend_from_slice(extra);
        self.cmd(&args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Starts the daemon and waits until it is ready.
    fn start_ready(&self) -> Child {
        let daemon = self.start(&[]);
        self.wait_for("the daemon to start", Duration::from_secs(20), || {
            self.log().contains("daemon ready")
        });
        daemon
    }

    /// Drops a CSR into incoming/ the way producers should: temp name, then rename.
    fn drop_csr(&self, id: &str, pem: &[u8]) {
        let tmp = self.path(&format!("spool/incoming/.{id}.tmp"));
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, self.path(&format!("spool/incoming/{id}.csr"))).unwrap();
    }

    fn count(&self, dir: &str) -> usize {
        std::fs::read_dir(self.path(dir))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    }

    fn wait_for(&self, what: &str, limit: Duration, cond: impl Fn() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn status(&self, id: &str) -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(self.path(&format!("spool/status/{id}.json"))).unwrap(),
        )
        .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }
}

fn self_args(dir: &Path) -> Vec<String> {
    vec![
        "--state".into(),
        dir.join("state").display().to_string(),
        "--spool".into(),
        dir.join("spool").display().to_string(),
        "--policy".into(),
        dir.join("policy.toml").display().to_string(),
    ]
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// SIGTERM, then a clean exit 0 within 20 s.
fn stop(daemon: &mut Child) {
    signal(daemon, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_exit(daemon, Duration::from_secs(20)).success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(start.elapsed() < limit, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ledger_lines(env: &Env) -> Vec<serde_json::Value> {
    std::fs::read_to_string(env.path("state/ledger.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Issue 3 item 4: several hundred CSRs, SIGKILL at two points mid-batch, restart: every
/// request decided exactly once, never signed twice, the ledger verifies.
#[test]
fn issue_3_sigkill_twice_mid_batch_finishes_everything_exactly_once() {
    let env = Env::new(POLICY);
    const N: usize = 300;
    // Every fifth request is for a public address and must be denied.
    let ids: Vec<String> = (0..N).map(|i| format!("req{i:04}")).collect();
    let pems: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            if i % 5 == 0 {
                csr("8.8.8.8")
            } else {
                csr(&format!(
                    "10.{}.{}.{}",
                    i / 65536,
                    (i / 256) % 256,
                    i % 256 + 1
                ))
            }
        })
        .collect();
    let mut daemon = env.start_ready();
    for (id, pem) in ids.iter().zip(&pems) {
        env.drop_csr(id, pem);
    }
    for kill_at in [N / 5, N / 2] {
        env.wait_for("progress", Duration::from_secs(120), || {
            env.count("spool/status") >= kill_at
        });
        signal(&daemon, nix::sys::signal::Signal::SIGKILL);
        let _ = daemon.wait();
        daemon = env.start(&[]);
    }
    env.wait_for("every request", Duration::from_secs(180), || {
        env.count("spool/status") == N && env.count("spool/processing") == 0
    });
    signal(&daemon, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_exit(&mut daemon, Duration::from_secs(30)).success());

    assert_eq!(env.count("spool/incoming"), 0);
    assert_eq!(env.count("spool/archive"), N);
    let mut approved = 0;
    for (i, id) in ids.iter().enumerate() {
        let s = env.status(id);
        let expected = if i % 5 == 0 { "denied" } else { "approved" };
        assert_eq!(s["status"], expected, "{id}: {s}");
        if expected == "approved" {
            approved += 1;
            assert!(env.path(&format!("spool/issued/{id}.crt")).exists());
        }
    }
    assert_eq!(env.count("spool/issued"), approved);
    let lines = ledger_lines(&env);
    let mut issued_ids = HashSet::new();
    let mut serials = HashSet::new();
    for l in lines.iter().filter(|l| l["kind"] == "issued") {
        assert!(
            issued_ids.insert(l["request_id"].as_str().unwrap().to_owned()),
            "issued twice: {l}"
        );
        assert!(
            serials.insert(l["serial"].as_str().unwrap().to_owned()),
            "serial reused: {l}"
        );
    }
    assert_eq!(issued_ids.len(), approved);
    for l in lines.iter().filter(|l| l["kind"] == "intent") {
        assert!(
            serials.insert(format!("intent-{}", l["serial"])),
            "intent serial reused"
        );
    }
    // The published certificate is the one the ledger holds.
    for l in lines.iter().filter(|l| l["kind"] == "issued") {
        let id = l["request_id"].as_str().unwrap();
        let crt = std::fs::read_to_string(env.path(&format!("spool/issued/{id}.crt"))).unwrap();
        assert!(
            crt.starts_with(l["certificate"].as_str().unwrap()),
            "{id}: certificate differs from the ledger"
        );
    }
    let checkpoint = env
        .path("spool/published/ledger-checkpoint.json")
        .display()
        .to_string();
    let out = env
        .cmd(&["ledger", "verify", "--checkpoint", &checkpoint])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 3 item 3: one daemon per spool; `process` refuses while one runs.
#[test]
fn issue_3_second_daemon_and_process_are_refused_while_one_runs() {
    let env = Env::new(POLICY);
    let mut daemon = env.start_ready();
    for args in [&["daemon"][..], &["process"][..]] {
        let out = env.cmd(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(".lock") && err.contains(&daemon.id().to_string()),
            "{err}"
        );
    }
    stop(&mut daemon);
}

/// Issue 3 item 5: SIGHUP reloads the policy; an invalid file keeps the old one and says why.
#[test]
fn issue_3_sighup_reloads_policy_and_keeps_old_one_when_invalid() {
    let env = Env::new(POLICY);
    let mut daemon = env.start_ready();
    env.drop_csr("before", &csr("10.1.2.3"));
    env.wait_for("before", Duration::from_secs(20), || {
        env.path("spool/status/before.json").exists()
    });
    assert_eq!(env.status("before")["status"], "approved");

    std::fs::write(
        env.path("policy.toml"),
        POLICY.replace("deny = []", "deny = [\"10.1.0.0/16\"]"),
    )
    .unwrap();
    signal(&daemon, nix::sys::signal::Signal::SIGHUP);
    env.wait_for("the reload", Duration::from_secs(20), || {
        env.log().contains("policy reloaded")
    });
    env.drop_csr("after", &csr("10.1.2.4"));
    env.wait_for("after", Duration::from_secs(20), || {
        env.path("spool/status/after.json").exists()
    });
    assert_eq!(env.status("after")["reason"], "ip_denied");

    std::fs::write(env.path("policy.toml"), "version = 1\nbogus_key = 3\n").unwrap();
    signal(&daemon, nix::sys::signal::Signal::SIGHUP);
    env.wait_for("the failed reload", Duration::from_secs(20), || {
        env.log().contains("keeping the old policy")
    });
    assert!(
        env.log().contains("policy.toml:2"),
        "the message names the line: {}",
        env.log()
    );
    env.drop_csr("still", &csr("10.1.2.5"));
    env.wait_for("still", Duration::from_secs(20), || {
        env.path("spool/status/still.json").exists()
    });
    assert_eq!(
        env.status("still")["reason"],
        "ip_denied",
        "the old (last good) policy still applies"
    );
    stop(&mut daemon);
}

/// Issue 3 item 5: READY=1 after start-up, WATCHDOG=1, STATUS= with counts, RELOADING=1 on
/// SIGHUP, STOPPING=1 and exit 0 on SIGTERM.
#[test]
fn issue_3_sd_notify_protocol() {
    let env = Env::new(POLICY);
    let sock_path = env.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = std::fs::File::create(env.path("daemon.log")).unwrap();
    let mut daemon = env
        .cmd(&["daemon", "--workers", "1"])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stderr(log)
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let recv_until = |want: &str, seen: &mut String| {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while !seen.contains(want) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no {want} in {seen}"
            );
            if let Ok(n) = sock.recv(&mut buf) {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                seen.push('\n');
            }
        }
    };
    recv_until("READY=1", &mut seen);
    recv_until("WATCHDOG=1", &mut seen);
    env.drop_csr("one", &csr("10.9.9.9"));
    recv_until("1 approved", &mut seen);
    assert!(seen.contains("STATUS="), "{seen}");
    signal(&daemon, nix::sys::signal::Signal::SIGHUP);
    recv_until("RELOADING=1", &mut seen);
    signal(&daemon, nix::sys::signal::Signal::SIGTERM);
    recv_until("STOPPING=1", &mut seen);
    assert!(wait_exit(&mut daemon, Duration::from_secs(20)).success());
}

/// A file copied in place is taken when it is closed, not while it is being written.
#[test]
fn issue_3_file_written_slowly_in_place_is_taken_when_closed() {
    let env = Env::new(POLICY);
    let mut daemon = env.start_ready();
    let pem = csr("10.7.7.7");
    let mut f = std::fs::File::create(env.path("spool/incoming/slow.csr")).unwrap();
    f.write_all(&pem[..pem.len() / 2]).unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !env.path("spool/status/slow.json").exists(),
        "taken before it was closed"
    );
    f.write_all(&pem[pem.len() / 2..]).unwrap();
    drop(f);
    env.wait_for("slow", Duration::from_secs(20), || {
        env.path("spool/status/slow.json").exists()
    });
    assert_eq!(env.status("slow")["status"], "approved");
    stop(&mut daemon);
}

/// The spool's incoming/ removed under the daemon: an error, then recovery when it is back.
#[test]
fn issue_3_incoming_removed_under_the_daemon_recovers() {
    let env = Env::new(POLICY);
    let mut daemon = env.start_ready();
    std::fs::remove_dir_all(env.path("spool/incoming")).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    std::fs::create_dir_all(env.path("spool/incoming")).unwrap();
    env.drop_csr("back", &csr("10.8.8.8"));
    env.wait_for("back", Duration::from_secs(30), || {
        env.path("spool/status/back.json").exists()
    });
    assert_eq!(env.status("back")["status"], "approved");
    stop(&mut daemon);
}

const POLICY: &str = r#"version = 1

[defaults]
validity_days = 365

[profiles.webhook]
serial_prefix = 1
allow = ["10.0.0.0/8", "192.168.0.0/16"]
deny = []
"#;

fn csr(ip: &str) -> Vec<u8> {
    quick_csr(ip).0
}

/// Issue 5: the daemon re-signs the CRL when a third of its validity is left, keeping the
/// validity the operator chose.
#[test]
fn issue_5_daemon_resigns_the_crl_before_it_lapses() {
    let env = Env::new(POLICY);
    let out = env.cmd(&["crl", "--validity", "12s"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crl_number = || -> u64 {
        let out = Command::new("openssl")
            .args(["crl", "-inform", "DER", "-noout", "-crlnumber", "-in"])
            .arg(env.path("spool/published/ca.crl"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let hex = text.trim().trim_start_matches("crlNumber=0x");
        u64::from_str_radix(hex, 16).unwrap_or(0)
    };
    assert_eq!(crl_number(), 1);
    let mut daemon = env.start(&[]);
    env.wait_for("the re-signed CRL", Duration::from_secs(30), || {
        crl_number() >= 2
    });
    let text = Command::new("openssl")
        .args([
            "crl",
            "-inform",
            "DER",
            "-noout",
            "-lastupdate",
            "-nextupdate",
            "-in",
        ])
        .arg(env.path("spool/published/ca.crl"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let times: Vec<chrono::DateTime<chrono::Utc>> = text
        .lines()
        .filter_map(|l| l.split_once('=').map(|(_, v)| v.trim().to_owned()))
        .map(|v| {
            chrono::NaiveDateTime::parse_from_str(&v, "%b %e %H:%M:%S %Y GMT")
                .unwrap()
                .and_utc()
        })
        .collect();
    assert_eq!((times[1] - times[0]).num_seconds(), 12, "{text}");
    stop(&mut daemon);
}

/// Issue 3, bad input: the spool's disk full. Nothing half-written is published, the request
/// stays queued, the daemon says why, and it finishes the request — without signing it again —
/// once there is room. Needs `mount -t tmpfs` (root); skipped with a message otherwise.
#[test]
fn issue_3_disk_full_publishes_nothing_half_written_and_recovers() {
    let env = Env::new(POLICY);
    let spool = env.path("spool");
    std::fs::remove_dir_all(&spool).unwrap();
    std::fs::create_dir_all(&spool).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&spool)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    }
    let unmount = Unmount(spool.clone());
    for d in [
        "incoming",
        "processing",
        "held",
        "issued",
        "status",
        "archive",
        "rejected",
        "published",
    ] {
        std::fs::create_dir_all(spool.join(d)).unwrap();
    }
    let mut daemon = env.start_ready();
    // The request is written while there is room, then the disk is filled, then it is renamed in.
    std::fs::write(spool.join(".full.tmp"), csr("10.3.3.3")).unwrap();
    let mut filler = std::fs::File::create(spool.join("filler")).unwrap();
    while filler.write_all(&[0u8; 4096]).is_ok() {}
    drop(filler);
    std::fs::rename(spool.join(".full.tmp"), spool.join("incoming/full.csr")).unwrap();
    env.wait_for("the failure to be logged", Duration::from_secs(20), || {
        env.log().contains("No space left")
    });
    assert!(
        !spool.join("status/full.json").exists(),
        "a status was published on a full disk"
    );
    assert!(
        !spool.join("issued/full.crt").exists(),
        "a certificate was published on a full disk"
    );
    assert!(
        std::fs::read_dir(spool.join("status"))
            .unwrap()
            .next()
            .is_none(),
        "a temp file was left in status/"
    );
    std::fs::remove_file(spool.join("filler")).unwrap();
    env.wait_for(
        "the request after the disk has room",
        Duration::from_secs(30),
        || spool.join("status/full.json").exists(),
    );
    assert_eq!(env.status("full")["status"], "approved");
    let issued = ledger_lines(&env)
        .iter()
        .filter(|l| l["kind"] == "issued" && l["request_id"] == "full")
        .count();
    assert_eq!(issued, 1, "signed more than once");
    stop(&mut daemon);
    drop(unmount);
}

/// Unmounts the test's tmpfs even when an assertion fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
