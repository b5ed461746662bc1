//! End to end (issue 4 item 4): `serve` + `sync --watch` + `daemon` as real processes sharing
//! a spool on 127.0.0.1; the SMSGate documentation's manual workflow with openssl, jq and
//! curl; the drop-in client; and a real TLS handshake with the issued certificate.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::util::smsgate_docs_config;

const BIN: &str = env!("CARGO_BIN_EXE_smsgate-ca");

/// The three processes and their directories (also used by `browser`).
pub(crate) struct Stack {
    pub(crate) dir: tempfile::TempDir,
    children: Vec<Child>,
    /// The API base, `http://127.0.0.1:PORT/api/v1`.
    pub(crate) api: String,
}

impl Stack {
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("spool/incoming")).unwrap();
        std::fs::write(root.join("token"), "e2e-sync-token\n").unwrap();
        set_mode(&root.join("token"), 0o600);
        let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/default.toml");
        let signer_args = |sub: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = sub.iter().map(|s| (*s).to_owned()).collect();
            v.extend([
                "--state".into(),
                root.join("state").display().to_string(),
                "--spool".into(),
                root.join("spool").display().to_string(),
                "--policy".into(),
                policy.display().to_string(),
            ]);
            v
        };
        let out = Command::new(BIN)
            .args(signer_args(&["init", "--no-passphrase"]))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // serve is pinned to the CA just made (issuing CA then root, as published/ca.crt).
        let mut pinned = std::fs::read(root.join("state/ca.crt")).unwrap();
        pinned.extend(std::fs::read(root.join("state/root.crt")).unwrap());
        std::fs::write(root.join("ca-chain.pem"), pinned).unwrap();
        let log = |name: &str| std::fs::File::create(root.join(name)).unwrap();
        let daemon = Command::new(BIN)
            .args(signer_args(&["daemon", "--workers", "2"]))
            .stdout(Stdio::null())
            .stderr(log("daemon.log"))
            .spawn()
            .unwrap();
        let mut serve = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--rate-limit",
                "0",
                "--sync-token-file",
            ])
            .arg(root.join("token"))
            .arg("--ca-chain")
            .arg(root.join("ca-chain.pem"))
            .arg("--state")
            .arg(root.join("serve"))
            .arg("--policy")
            .arg(&policy)
            .stdout(Stdio::piped())
            .stderr(log("serve.log"))
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(serve.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("serve said {line:?}"))
            .to_owned();
        let api = format!("http://{addr}/api/v1");
        let sync = Command::new(BIN)
            .args([
                "sync",
                "--watch",
                "--interval",
                "2s",
                "--api",
                &api,
                "--token-file",
            ])
            .arg(root.join("token"))
            .arg("--spool")
            .arg(root.join("spool"))
            .arg("--state")
            .arg(root.join("sync-state"))
            .stdout(Stdio::null())
            .stderr(log("sync.log"))
            .spawn()
            .unwrap();
        let stack = Self {
            dir,
            children: vec![daemon, serve, sync],
            api,
        };
        stack.wait_for("the daemon", || {
            stack.log("daemon.log").contains("daemon ready")
        });
        stack
    }

    pub(crate) fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub(crate) fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// The process id of `sync` (the third process started).
    pub(crate) fn sync_pid(&self) -> u32 {
        self.children[2].id()
    }

    pub(crate) fn wait_for(&self, what: &str, cond: impl Fn() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}\n--- daemon\n{}\n--- sync\n{}\n--- serve\n{}",
                self.log("daemon.log"),
                self.log("sync.log"),
                self.log("serve.log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a shell command in the test directory; returns stdout.
    pub(crate) fn sh(&self, script: &str) -> String {
        let out = Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Serves `cert` + `key` with `openssl s_server` on a free 127.0.0.1 port and checks that
/// `openssl s_client -verify_ip <ip> -verify_return_error` against the root accepts it.
fn tls_handshake(stack: &Stack, leaf_and_chain: &Path, key: &Path, ip: &str) {
    let pem = std::fs::read_to_string(leaf_and_chain).unwrap();
    let end = "-----END CERTIFICATE-----\n";
    let split = pem.find(end).unwrap() + end.len();
    std::fs::write(stack.path("tls-leaf.pem"), &pem[..split]).unwrap();
    std::fs::write(stack.path("tls-chain.pem"), &pem[split..]).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-www",
            "-cert",
        ])
        .arg(stack.path("tls-leaf.pem"))
        .arg("-cert_chain")
        .arg(stack.path("tls-chain.pem"))
        .arg("-key")
        .arg(key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let output = loop {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-verify_ip",
                ip,
                "-verify_return_error",
                "-CAfile",
            ])
            .arg(stack.path("state/root.crt"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if out.status.success() || start.elapsed() > Duration::from_secs(10) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        output.contains("Verify return code: 0 (ok)"),
        "handshake failed:\n{output}"
    );
}

/// The SMSGate documentation's manual recipe, exactly as written, through serve → sync →
/// daemon → sync → serve.
#[test]
fn issue_4_smsgate_docs_manual_workflow_end_to_end() {
    let stack = Stack::start();
    std::fs::write(
        stack.path("server.cnf"),
        smsgate_docs_config("192.168.1.10"),
    )
    .unwrap();
    stack.sh("openssl genrsa -out server.key 2048 2>/dev/null
openssl req -new -key server.key -out server.csr -extensions v3_req -config ./server.cnf");
    // What OpenSSL 3 really puts in that CSR: the CN only, no SAN (DESIGN §3).
    let text = stack.sh("openssl req -in server.csr -noout -text");
    assert!(
        text.contains("CN = 192.168.1.10") || text.contains("CN=192.168.1.10"),
        "{text}"
    );
    assert!(
        !text.contains("Subject Alternative Name"),
        "OpenSSL put a SAN in: {text}"
    );

    let started = Instant::now();
    let posted = stack.sh(&format!(
        "jq -n --arg content \"$(cat server.csr)\" '{{content: $content}}' | curl -sS -X POST -H \"Content-Type: application/json\" -d @- {}/csr",
        stack.api
    ));
    let posted: serde_json::Value = serde_json::from_str(&posted).unwrap();
    assert_eq!(posted["status"], "pending", "{posted}");
    let id = posted["request_id"].as_str().unwrap().to_owned();
    let mut answer = serde_json::Value::Null;
    stack.wait_for("the certificate", || {
        let out = Command::new("curl")
            .args(["-sS", &format!("{}/csr/{id}", stack.api)])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let done = v["status"] == "approved";
        if done {
            std::fs::write(stack.path("answer.json"), &out.stdout).unwrap();
        }
        done
    });
    let elapsed = started.elapsed();
    answer = serde_json::from_slice(&std::fs::read(stack.path("answer.json")).unwrap())
        .unwrap_or(answer);
    eprintln!("POST -> GET approved in {} ms", elapsed.as_millis());
    assert_eq!(answer["type"], "webhook");
    let cert = answer["certificate"].as_str().unwrap();
    std::fs::write(stack.path("server.crt"), cert).unwrap();
    stack.sh("openssl verify -CAfile state/root.crt -untrusted state/chain.pem server.crt");
    let x = stack.sh("openssl x509 -in server.crt -noout -text");
    assert!(x.contains("IP Address:192.168.1.10"), "{x}");
    assert!(
        !x.contains("Data Encipherment"),
        "a CSR extension was copied: {x}"
    );
    tls_handshake(
        &stack,
        &stack.path("server.crt"),
        &stack.path("server.key"),
        "192.168.1.10",
    );
}

/// The drop-in client against the stack: `webhooks` and `private`, verified and used for TLS;
/// a denial exits 3 with its reason.
#[test]
fn issue_4_client_webhooks_and_private_end_to_end() {
    let stack = Stack::start();
    for (cmd, ip, expect_type) in [
        ("webhooks", "192.168.1.10", "webhook"),
        ("private", "10.0.0.5", "private_server"),
    ] {
        let out = Command::new(BIN)
            .current_dir(stack.dir.path())
            .args([
                cmd,
                "--ca-url",
                &stack.api,
                "--out",
                &format!("{cmd}.crt"),
                "--keyout",
                &format!("{cmd}.key"),
                "--json",
                ip,
            ])
            .env_remove("ASG_CA_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}\n--- daemon\n{}\n--- sync\n{}\n--- serve\n{}",
            String::from_utf8_lossy(&out.stderr),
            stack.log("daemon.log"),
            stack.log("sync.log"),
            stack.log("serve.log")
        );
        let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if !record.is_null() {
            assert_eq!(record["type"], expect_type, "{record}");
        }
        stack.sh(&format!(
            "openssl verify -CAfile state/root.crt -untrusted state/chain.pem {cmd}.crt"
        ));
        let mode = std::fs::metadata(stack.path(&format!("{cmd}.key"))).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        tls_handshake(
            &stack,
            &stack.path(&format!("{cmd}.crt")),
            &stack.path(&format!("{cmd}.key")),
            ip,
        );
    }
    // Revoke the webhook certificate on the signer side: the CRL travels out through sync and
    // the API serves the same bytes, which openssl then uses to refuse the certificate.
    let serial = stack.sh("openssl x509 -in webhooks.crt -noout -serial");
    let serial = serial.trim().trim_start_matches("serial=").to_owned();
    let out = Command::new(BIN)
        .args(["revoke", &serial, "--reason", "keyCompromise", "--state"])
        .arg(stack.path("state"))
        .arg("--spool")
        .arg(stack.path("spool"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let published = std::fs::read(stack.path("spool/published/ca.crl")).unwrap();
    stack.wait_for("the CRL on the API", || {
        let out = Command::new("curl")
            .args(["-sS", "-f", &format!("{}/crl", stack.api)])
            .output()
            .unwrap();
        out.status.success() && out.stdout == published
    });
    stack.sh(&format!(
        "curl -sS -f {}/crl -o api.crl && openssl crl -inform DER -in api.crl -out api.crl.pem",
        stack.api
    ));
    let verify = Command::new("openssl")
        .args([
            "verify",
            "-crl_check",
            "-CAfile",
            "state/root.crt",
            "-untrusted",
            "state/chain.pem",
            "-CRLfile",
            "api.crl.pem",
            "webhooks.crt",
        ])
        .current_dir(stack.dir.path())
        .output()
        .unwrap();
    assert!(!verify.status.success());
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains("revoked")
            || String::from_utf8_lossy(&verify.stderr).contains("revoked")
    );
    // CGNAT space is private but outside the default policy: denied at once by serve.
    let out = Command::new(BIN)
        .current_dir(stack.dir.path())
        .args([
            "webhooks",
            "--ca-url",
            &stack.api,
            "--out",
            "cg.crt",
            "--keyout",
            "cg.key",
            "100.64.1.1",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("100.64.1.1"));
    assert!(!stack.path("cg.crt").exists() && !stack.path("cg.key").exists());
}
