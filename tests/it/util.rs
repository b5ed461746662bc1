//! The shared test environment of the integration tests (STYLE §22): a temporary CA state, spool
//! and policy driven through the built `smsgate-ca` binary, CSRs made with the `openssl` CLI,
//! and independent checks of what comes out (`openssl verify`/`x509`, `x509-parser`).
//!
//! A typical test:
//!
//! ```ignore
//! let env = TestEnv::new(); // default policy, `init` with an encrypted ec-p256 CA
//! let csr = env.csr("r1", &CsrSpec::ip("192.168.1.10"));
//! env.drop_file("r1.csr", &csr.bytes());
//! env.process();
//! let status = env.status("r1");
//! assert_eq!(status["status"], "approved");
//! env.verify_chain(&env.issued("r1")).success();
//! ```
//!
//! Everything lives in one temp directory that is removed when the `TestEnv` drops:
//! `state/` (the CA, `--state`), `spool/` (`--spool`), `policy.toml` (`--policy`),
//! `passphrase` (mode 0600, `--passphrase-file`) and `work/` (keys, CSRs and other scratch
//! files made by the helpers). [`TestEnv::cmd`] adds the four flags to every command, after
//! the subcommand's own arguments (DESIGN §6 lets global flags stand there).

// Each test module uses a different part of this file.
#![allow(dead_code)]
// The helpers are test code; clippy's allow-unwrap-in-tests only covers #[test] fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::{OsStr, OsString};
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_smsgate-ca");

/// The passphrase every [`TestEnv`] encrypts its CA keys with (written with a trailing newline,
/// which is not part of the secret).
pub const PASSPHRASE: &str = "correct horse battery staple";

/// The repository's `policy/default.toml` (DESIGN §3).
pub const DEFAULT_POLICY: &str = smsgate_ca::policy::DEFAULT_POLICY;

/// The private ranges of the default policy, as a TOML array.
pub const PRIVATE_RANGES: &str = r#"["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]"#;

/// OID of ecdsa-with-SHA256.
pub const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
/// OID of ecdsa-with-SHA384.
pub const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
/// OID of sha256WithRSAEncryption.
pub const RSA_SHA256: &str = "1.2.840.113549.1.1.11";

/// The upstream `smsgate-ca` CLI's extendedKeyUsage value: an OID cut short (DESIGN §3).
pub const UPSTREAM_BAD_EKU: [u8; 12] = [
    0x30, 0x06, 0x06, 0x04, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01,
];

/// An openssl config that makes a CSR the way the upstream `smsgate-ca` CLI (Go) does: P-256
/// key, `CN=<ip>`, SAN `IP:<ip>`, keyUsage critical digitalSignature+keyEncipherment
/// (`03 02 05 a0`) and the malformed non-critical extendedKeyUsage [`UPSTREAM_BAD_EKU`].
/// Use it with `-reqexts v3_req` ([`CsrSpec::upstream_cli`]).
pub fn upstream_cli_config(ip: &str) -> String {
    format!(
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = {ip}\n[v3_req]\n\
         subjectAltName = IP:{ip}\n\
         keyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = DER:30:06:06:04:2b:06:01:05:05:07:03:01\n"
    )
}

/// The `server.cnf` of the SMSGate documentation's manual recipe (docs.sms-gate.app,
/// "Certificate Authority"), for `ip`.
pub fn smsgate_docs_config(ip: &str) -> String {
    format!(
        "[req]\ndistinguished_name = req_distinguished_name\nx509_extensions = v3_req\nprompt = no\n\
         [req_distinguished_name]\nCN = {ip}\n\
         [v3_req]\nkeyUsage = nonRepudiation, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = @alt_names\n[alt_names]\nIP.0 = {ip}\n"
    )
}

/// A policy file with the default `[defaults]` and both profiles over the private ranges,
/// plus extra lines: `defaults` go under `[defaults]`, `webhook` and `private_server` into
/// the profiles (e.g. `approval = "manual"`, `deny = ["192.168.66.0/24"]`).
pub fn policy_text(defaults: &str, webhook: &str, private_server: &str) -> String {
    format!(
        "version = 1\n\n[defaults]\n{defaults}\n\n\
         [profiles.webhook]\nserial_prefix = 1\nallow = {PRIVATE_RANGES}\n{webhook}\n\n\
         [profiles.private_server]\nserial_prefix = 2\nallow = {PRIVATE_RANGES}\n{private_server}\n"
    )
}

/// A request envelope (`incoming/<id>.json`, DESIGN §2) as JSON text.
pub fn envelope(request_id: &str, kind: &str, content: &str) -> String {
    serde_json::json!({
        "request_id": request_id,
        "type": kind,
        "content": content,
        "metadata": {"test": "yes"},
        "submitted_at": "2026-01-01T00:00:00Z",
    })
    .to_string()
}

/// The outcome of one command.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub what: String,
    /// What it produced.
    pub output: Output,
}

impl Run {
    /// The exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    /// Standard output as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// Standard error as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Panics unless the command exited with `code`; returns itself for more checks.
    #[track_caller]
    pub fn code_is(self, code: i32) -> Self {
        assert_eq!(
            self.code(),
            code,
            "`{}` exited {} (expected {code})\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what,
            self.code(),
            self.stdout(),
            self.stderr()
        );
        self
    }

    /// Panics unless the command exited 0.
    #[track_caller]
    pub fn success(self) -> Self {
        self.code_is(0)
    }

    /// Panics unless stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(self, needle: &str) -> Self {
        assert!(
            self.stderr().contains(needle),
            "`{}`: stderr lacks {needle:?}\n--- stderr:\n{}",
            self.what,
            self.stderr()
        );
        self
    }

    /// Panics unless stdout contains `needle`.
    #[track_caller]
    pub fn stdout_has(self, needle: &str) -> Self {
        assert!(
            self.stdout().contains(needle),
            "`{}`: stdout lacks {needle:?}\n--- stdout:\n{}",
            self.what,
            self.stdout()
        );
        self
    }
}

/// Runs a prepared command and captures its output (stdin is closed).
pub fn run(mut cmd: Command) -> Run {
    let what = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
    Run { what, output }
}

/// Runs the `openssl` CLI with `args`.
pub fn openssl<S: AsRef<OsStr>>(args: &[S]) -> Run {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    run(cmd)
}

/// Runs the `openssl` CLI and panics unless it succeeds; returns stdout.
#[track_caller]
pub fn openssl_ok<S: AsRef<OsStr>>(args: &[S]) -> String {
    openssl(args).success().stdout()
}

/// A temporary CA, spool and policy, driven through the binary.
pub struct TestEnv {
    dir: tempfile::TempDir,
    /// The temp directory holding everything below.
    pub root: PathBuf,
    /// `--state`: the CA.
    pub state: PathBuf,
    /// `--spool`.
    pub spool: PathBuf,
    /// `--policy`.
    pub policy: PathBuf,
    /// `--passphrase-file` (mode 0600, holds [`PASSPHRASE`] and a newline).
    pub passphrase_file: PathBuf,
    /// Scratch space for keys, CSRs and forged certificates.
    pub work: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestEnv {
    /// The default policy and a CA made by `init` (encrypted ec-p256 keys, two tiers).
    pub fn new() -> Self {
        Self::with_policy(DEFAULT_POLICY)
    }

    /// A CA made by `init` under the given policy text.
    pub fn with_policy(policy: &str) -> Self {
        let env = Self::without_ca(policy);
        env.init(&[]).success();
        env
    }

    /// Directories, policy and passphrase file, but no CA yet (call [`TestEnv::init`]).
    pub fn without_ca(policy: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("smsgate-it-")
            .tempdir()
            .unwrap();
        let root = dir.path().to_owned();
        let env = Self {
            state: root.join("state"),
            spool: root.join("spool"),
            policy: root.join("policy.toml"),
            passphrase_file: root.join("passphrase"),
            work: root.join("work"),
            root,
            dir,
        };
        fs::create_dir_all(env.spool.join("incoming")).unwrap();
        fs::create_dir_all(&env.work).unwrap();
        env.write_policy(policy);
        fs::write(&env.passphrase_file, format!("{PASSPHRASE}\n")).unwrap();
        fs::set_permissions(&env.passphrase_file, fs::Permissions::from_mode(0o600)).unwrap();
        env
    }

    /// Replaces the policy file.
    pub fn write_policy(&self, text: &str) {
        fs::write(&self.policy, text).unwrap();
    }

    /// The binary with `args`, then `--state --spool --policy --passphrase-file`, run in the
    /// temp directory with no systemd credentials in the environment.
    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .arg("--state")
            .arg(&self.state)
            .arg("--spool")
            .arg(&self.spool)
            .arg("--policy")
            .arg(&self.policy)
            .arg("--passphrase-file")
            .arg(&self.passphrase_file)
            .current_dir(&self.root)
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("RUST_LOG");
        cmd
    }

    /// Like [`TestEnv::cmd`], then `--` and `positional` (e.g. `approve -- ID`, DESIGN §2:
    /// operator commands accept `--` before an id).
    pub fn cmd_dashdash<S: AsRef<OsStr>>(&self, args: &[S], positional: &[S]) -> Command {
        let mut cmd = self.cmd(args);
        cmd.arg("--").args(positional);
        cmd
    }

    /// Runs the binary with `args` (see [`TestEnv::cmd`]).
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        run(self.cmd(args))
    }

    /// `init` plus `extra` flags (e.g. `--root-only`, `--key-type ec-p384`).
    pub fn init(&self, extra: &[&str]) -> Run {
        let mut args = vec!["init"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `process`, which must exit 0; returns the run (its stdout holds the summary line).
    #[track_caller]
    pub fn process(&self) -> Run {
        self.run(&["process"]).success()
    }

    /// `process --json`, which must exit 0; returns the summary object.
    #[track_caller]
    pub fn process_json(&self) -> Value {
        let r = self.run(&["process", "--json"]).success();
        serde_json::from_str(r.stdout().trim())
            .unwrap_or_else(|e| panic!("process --json printed no JSON ({e}):\n{}", r.stdout()))
    }

    /// A spool subdirectory (`incoming`, `status`, `issued`, `rejected`, …).
    pub fn spool_dir(&self, sub: &str) -> PathBuf {
        self.spool.join(sub)
    }

    /// `spool/incoming/<name>`.
    pub fn incoming(&self, name: impl AsRef<Path>) -> PathBuf {
        self.spool.join("incoming").join(name)
    }

    /// Writes a file into `incoming/` (in place: `process` is not running meanwhile).
    pub fn drop_file(&self, name: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.incoming(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    /// Makes a CSR per `spec` in `work/` and drops it as `incoming/<id>.csr`.
    pub fn drop_csr(&self, id: &str, spec: &CsrSpec) -> Csr {
        let csr = self.csr(id, spec);
        self.drop_file(format!("{id}.csr"), csr.bytes());
        csr
    }

    /// Makes a CSR per `spec` in `work/` (key and CSR file names start with `name`).
    pub fn csr(&self, name: &str, spec: &CsrSpec) -> Csr {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        spec.make(&self.work, &format!("{name}-{n}"))
    }

    /// The status record `status/<id>.json`; panics when there is none.
    #[track_caller]
    pub fn status(&self, id: &str) -> Value {
        self.status_opt(id)
            .unwrap_or_else(|| panic!("no status record for {id}; spool:\n{}", self.tree()))
    }

    /// The status record `status/<id>.json`, if any.
    pub fn status_opt(&self, id: &str) -> Option<Value> {
        let text = fs::read_to_string(self.spool.join("status").join(format!("{id}.json"))).ok()?;
        Some(serde_json::from_str(&text).expect("a status record is JSON"))
    }

    /// Panics unless `status/<id>.json` says denied with `reason`; returns the record.
    #[track_caller]
    pub fn assert_denied(&self, id: &str, reason: &str) -> Value {
        let s = self.status(id);
        assert_eq!(s["status"], "denied", "{id}: {s:#}");
        assert_eq!(s["reason"], reason, "{id}: {s:#}");
        let message = s["message"].as_str().unwrap_or_default();
        assert!(!message.trim().is_empty(), "{id}: a denial needs a message");
        assert!(
            s["certificate"].is_null(),
            "{id}: a denial has no certificate"
        );
        assert!(
            !self.issued(id).exists(),
            "{id}: denied, yet issued/{id}.crt exists"
        );
        s
    }

    /// Panics unless `status/<id>.json` says approved; returns the record.
    #[track_caller]
    pub fn assert_approved(&self, id: &str) -> Value {
        let s = self.status(id);
        assert_eq!(s["status"], "approved", "{id}: {s:#}");
        assert!(s["reason"].is_null(), "{id}: {s:#}");
        s
    }

    /// `spool/issued/<id>.crt`.
    pub fn issued(&self, id: &str) -> PathBuf {
        self.spool.join("issued").join(format!("{id}.crt"))
    }

    /// The `.reason` text of a file in `rejected/` (by its name there).
    #[track_caller]
    pub fn rejected_reason(&self, name: &str) -> String {
        let path = self.spool.join("rejected").join(format!("{name}.reason"));
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("no {} ({e}); spool:\n{}", path.display(), self.tree()))
    }

    /// Names in a spool subdirectory, sorted (dot files included).
    pub fn list(&self, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.spool.join(sub))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The spool's files, one per line, for failure messages.
    pub fn tree(&self) -> String {
        let mut out = String::new();
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
            out.push_str(&format!("  {sub}/: {}\n", self.list(sub).join(" ")));
        }
        out
    }

    /// `state/root.crt`.
    pub fn root_cert(&self) -> PathBuf {
        self.state.join("root.crt")
    }

    /// `state/ca.crt` (the issuing CA).
    pub fn ca_cert(&self) -> PathBuf {
        self.state.join("ca.crt")
    }

    /// `state/chain.pem` (intermediates sent with each leaf; empty for one tier).
    pub fn chain(&self) -> PathBuf {
        self.state.join("chain.pem")
    }

    /// `state/ledger.jsonl`.
    pub fn ledger(&self) -> PathBuf {
        self.state.join("ledger.jsonl")
    }

    /// `openssl verify -CAfile state/root.crt [-untrusted state/chain.pem] [extra] cert`.
    pub fn verify_chain_with(&self, cert: &Path, extra: &[&str]) -> Run {
        let mut args: Vec<OsString> =
            vec!["verify".into(), "-CAfile".into(), self.root_cert().into()];
        let chain = self.chain();
        if fs::metadata(&chain).map(|m| m.len() > 0).unwrap_or(false) {
            args.push("-untrusted".into());
            args.push(chain.into());
        }
        args.extend(extra.iter().map(OsString::from));
        args.push(cert.into());
        openssl(&args)
    }

    /// `openssl verify` of a leaf against the state's root and chain.
    pub fn verify_chain(&self, cert: &Path) -> Run {
        self.verify_chain_with(cert, &[])
    }

    /// The issuing CA key decrypted with the passphrase file into `work/` (for forgeries).
    pub fn ca_key_plain(&self) -> PathBuf {
        self.decrypt_key(&self.state.join("ca.key"))
    }

    /// A state key (`ca.key`, `root.key`) decrypted into `work/`.
    pub fn decrypt_key(&self, key: &Path) -> PathBuf {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let out = self.work.join(format!("plain-{n}.key"));
        let pass = format!("file:{}", self.passphrase_file.display());
        openssl_ok(&[
            "pkey".as_ref(),
            "-in".as_ref(),
            key.as_os_str(),
            "-passin".as_ref(),
            pass.as_ref(),
            "-out".as_ref(),
            out.as_os_str(),
        ]);
        out
    }

    /// Signs a leaf by hand with the issuing CA's key (`openssl x509 -req`), as a misuser of
    /// the key would: empty subject, the given `subjectAltName` value (e.g. `IP:8.8.8.8`,
    /// `DNS:example.com`), basicConstraints CA:FALSE, EKU serverAuth. Returns the PEM path.
    pub fn forge_leaf(&self, san: &str) -> PathBuf {
        self.forge_leaf_with(san, &self.ca_cert(), &self.ca_key_plain())
    }

    /// Like [`TestEnv::forge_leaf`] with any issuer certificate and (plain) key.
    pub fn forge_leaf_with(&self, san: &str, issuer: &Path, issuer_key: &Path) -> PathBuf {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let csr = self.csr("forge", &CsrSpec::new(Key::EcP256));
        let ext = self.work.join(format!("forge-{n}.ext"));
        fs::write(
            &ext,
            format!(
                "subjectAltName = critical, {san}\nbasicConstraints = critical, CA:FALSE\n\
                 keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n"
            ),
        )
        .unwrap();
        let out = self.work.join(format!("forged-{n}.crt"));
        openssl_ok(&[
            "x509".as_ref(),
            "-req".as_ref(),
            "-in".as_ref(),
            csr.path.as_os_str(),
            "-CA".as_ref(),
            issuer.as_os_str(),
            "-CAkey".as_ref(),
            issuer_key.as_os_str(),
            "-set_serial".as_ref(),
            "0x0123456789abcdef".as_ref(),
            "-days".as_ref(),
            "30".as_ref(),
            "-sha256".as_ref(),
            "-extfile".as_ref(),
            ext.as_os_str(),
            "-out".as_ref(),
            out.as_os_str(),
        ]);
        out
    }

    /// Takes the spool lock (`spool/.lock`) the way a running daemon holds it; released when
    /// the returned file is dropped.
    pub fn hold_spool_lock(&self) -> fs::File {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.spool.join(".lock"))
            .unwrap();
        f.try_lock().expect("nobody else holds the spool lock yet");
        f
    }

    /// Checks an approved request end to end with verifiers that are not our code, and
    /// returns its status record:
    /// - `status/<id>.json` is approved and has every field of DESIGN §2, consistent with the
    ///   certificate (serial as 32 lower-case hex, times, the fingerprint `openssl x509
    ///   -fingerprint -sha256` prints, `certificate` = `issued/<id>.crt`);
    /// - `issued/<id>.crt` is the leaf followed by `state/chain.pem`;
    /// - `openssl verify -purpose sslserver -verify_ip <ip>` accepts it against `root.crt`;
    /// - `x509-parser` finds exactly the profile of DESIGN §4 ([`assert_leaf_profile`]);
    /// - `openssl x509 -text` shows the critical SAN with the IP and CA:FALSE, and none of
    ///   what a CSR might have asked for beyond it.
    #[track_caller]
    pub fn check_issued(&self, id: &str, expect: &LeafExpect) -> Value {
        let s = self.assert_approved(id);
        for field in [
            "request_id",
            "type",
            "status",
            "message",
            "reason",
            "certificate",
            "serial",
            "not_before",
            "not_after",
            "fingerprint_sha256",
            "decided_at",
        ] {
            assert!(s.get(field).is_some(), "{id}: status lacks {field}: {s:#}");
        }
        assert_eq!(s["request_id"], id);
        assert!(!s["message"].as_str().unwrap().is_empty());
        let crt = self.issued(id);
        let pem = fs::read_to_string(&crt).unwrap();
        assert_eq!(
            s["certificate"].as_str(),
            Some(pem.as_str()),
            "{id}: certificate != issued/{id}.crt"
        );
        let certs = pem_certs(&crt);
        let mut want_chain = vec![certs[0].clone()];
        want_chain.extend(pem_certs(&self.chain()));
        assert_eq!(
            certs, want_chain,
            "{id}: issued/{id}.crt is not the leaf then state/chain.pem"
        );
        let issuer = pem_certs(&self.ca_cert()).remove(0);
        assert_leaf_profile(&certs[0], &issuer, expect);

        let (_, leaf) = X509Certificate::from_der(&certs[0]).unwrap();
        let serial = s["serial"].as_str().unwrap();
        assert_eq!(serial, hex(leaf.raw_serial()), "{id}: serial");
        assert!(
            serial.len() == 32
                && serial
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{id}: serial {serial:?} is not 32 lower-case hex digits"
        );
        let time = |f: &str| {
            chrono::DateTime::parse_from_rfc3339(s[f].as_str().unwrap())
                .unwrap_or_else(|e| panic!("{id}: {f} is not RFC 3339: {e}"))
                .timestamp()
        };
        assert_eq!(time("not_before"), leaf.validity().not_before.timestamp());
        assert_eq!(time("not_after"), leaf.validity().not_after.timestamp());
        assert!((time("decided_at") - chrono::Utc::now().timestamp()).abs() < 120);
        assert_eq!(
            s["fingerprint_sha256"].as_str(),
            Some(openssl_fingerprint(&crt).as_str())
        );

        let ip = expect.ip.to_string();
        self.verify_chain_with(&crt, &["-purpose", "sslserver", "-verify_ip", &ip])
            .success()
            .stdout_has(": OK");
        let text = x509_text(&crt);
        let (san_line, subject_line) = if expect.subject_cn {
            (
                "X509v3 Subject Alternative Name: \n".to_owned(),
                format!("Subject: CN = {ip}\n"),
            )
        } else {
            (
                "X509v3 Subject Alternative Name: critical".to_owned(),
                "Subject: \n".to_owned(),
            )
        };
        for want in [
            "Version: 3 (0x2)",
            &san_line,
            &subject_line,
            &format!("IP Address:{}", openssl_ip_text(expect.ip)),
            "X509v3 Basic Constraints: critical",
            "CA:FALSE",
            "X509v3 Key Usage: critical",
            "TLS Web Server Authentication",
        ] {
            assert!(
                text.contains(want),
                "{id}: openssl x509 -text lacks {want:?}:\n{text}"
            );
        }
        for unwanted in [
            "Data Encipherment",
            "Non Repudiation",
            "TLS Web Client Authentication",
            "Security",
            "DNS:",
        ] {
            assert!(
                !text.contains(unwanted),
                "{id}: openssl x509 -text has {unwanted:?}:\n{text}"
            );
        }
        s
    }

    /// Keeps the temp directory after the test (for debugging); returns its path.
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// A key type for [`CsrSpec`].
#[derive(Clone, Debug)]
pub enum Key {
    /// ECDSA P-256.
    EcP256,
    /// ECDSA P-384.
    EcP384,
    /// ECDSA on secp256k1 (not accepted by the CA).
    Secp256k1,
    /// RSA with this many bits.
    Rsa(u32),
    /// DSA 2048 (not accepted by the CA).
    Dsa,
    /// Ed25519 (not accepted by the CA).
    Ed25519,
    /// An existing private key file (e.g. `openssl genrsa -out server.key 2048`).
    File(PathBuf),
}

/// How to make a CSR with `openssl req -new`.
#[derive(Clone, Debug)]
pub struct CsrSpec {
    /// The key.
    pub key: Key,
    /// `-subj` (`/` for an empty subject); `None` with a config takes the config's subject.
    pub subject: Option<String>,
    /// `-addext` values.
    pub addext: Vec<String>,
    /// Config file text (`-config`); a minimal one is used when `None`.
    pub config: Option<String>,
    /// `-reqexts SECTION`.
    pub reqexts: Option<String>,
    /// `-extensions SECTION` (which OpenSSL 3 applies to `-x509` only).
    pub extensions: Option<String>,
    /// The signature digest flag without the dash (`sha1`, `sha384`); OpenSSL's default when
    /// `None`.
    pub digest: Option<String>,
    /// Write DER (`-outform DER`) instead of PEM.
    pub der: bool,
}

impl CsrSpec {
    /// A CSR with `key`, an empty subject and no extensions.
    pub fn new(key: Key) -> Self {
        Self {
            key,
            subject: Some("/".into()),
            addext: Vec::new(),
            config: None,
            reqexts: None,
            extensions: None,
            digest: None,
            der: false,
        }
    }

    /// The usual good request: P-256, `CN=<ip>`, SAN `IP:<ip>`.
    pub fn ip(ip: &str) -> Self {
        Self::new(Key::EcP256)
            .subject(&format!("/CN={ip}"))
            .addext(&format!("subjectAltName=IP:{ip}"))
    }

    /// The upstream `smsgate-ca` CLI's CSR for `ip` (see [`upstream_cli_config`]).
    pub fn upstream_cli(ip: &str) -> Self {
        Self {
            subject: None,
            config: Some(upstream_cli_config(ip)),
            reqexts: Some("v3_req".into()),
            ..Self::new(Key::EcP256)
        }
    }

    /// Sets `-subj` (e.g. `/CN=10.0.0.1`, `/` for none).
    pub fn subject(mut self, subject: &str) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Adds an `-addext` (e.g. `subjectAltName=IP:10.0.0.1,IP:10.0.0.2`).
    pub fn addext(mut self, ext: &str) -> Self {
        self.addext.push(ext.into());
        self
    }

    /// Uses a config file; its subject is used unless [`CsrSpec::subject`] is called after.
    pub fn config(mut self, text: &str) -> Self {
        self.config = Some(text.into());
        self.subject = None;
        self
    }

    /// `-reqexts SECTION`.
    pub fn reqexts(mut self, section: &str) -> Self {
        self.reqexts = Some(section.into());
        self
    }

    /// `-extensions SECTION`.
    pub fn extensions(mut self, section: &str) -> Self {
        self.extensions = Some(section.into());
        self
    }

    /// The signature digest (`sha1`, `sha256`, `sha384`, …).
    pub fn digest(mut self, digest: &str) -> Self {
        self.digest = Some(digest.into());
        self
    }

    /// DER output.
    pub fn der(mut self) -> Self {
        self.der = true;
        self
    }

    /// Makes the key (unless [`Key::File`]) and the CSR in `dir` as `<name>.key`/`<name>.csr`.
    pub fn make(&self, dir: &Path, name: &str) -> Csr {
        let key = match &self.key {
            Key::File(p) => p.clone(),
            k => {
                let p = dir.join(format!("{name}.key"));
                gen_key(k, &p);
                p
            }
        };
        let config = dir.join(format!("{name}.cnf"));
        let text = self.config.clone().unwrap_or_else(|| {
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n".into()
        });
        fs::write(&config, text).unwrap();
        let path = dir.join(format!("{name}.csr"));
        let mut args: Vec<String> = vec![
            "req".into(),
            "-new".into(),
            "-key".into(),
            key.display().to_string(),
            "-config".into(),
            config.display().to_string(),
            "-out".into(),
            path.display().to_string(),
        ];
        if let Some(s) = &self.subject {
            args.extend(["-subj".into(), s.clone()]);
        }
        for e in &self.addext {
            args.extend(["-addext".into(), e.clone()]);
        }
        if let Some(s) = &self.reqexts {
            args.extend(["-reqexts".into(), s.clone()]);
        }
        if let Some(s) = &self.extensions {
            args.extend(["-extensions".into(), s.clone()]);
        }
        if let Some(d) = &self.digest {
            args.push(format!("-{d}"));
        }
        if self.der {
            args.extend(["-outform".into(), "DER".into()]);
        }
        openssl_ok(&args);
        Csr { path, key }
    }
}

/// Generates a private key of `kind` into `path` with `openssl genpkey`.
pub fn gen_key(kind: &Key, path: &Path) {
    let p = path.display().to_string();
    let args: Vec<&str> = match kind {
        Key::EcP256 => vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        Key::EcP384 => vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        Key::Secp256k1 => vec![
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:secp256k1",
        ],
        Key::Ed25519 => vec!["-algorithm", "ED25519"],
        Key::Rsa(bits) => {
            let bits = format!("rsa_keygen_bits:{bits}");
            openssl_ok(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                &bits,
                "-out",
                &p,
            ]);
            return;
        }
        Key::Dsa => {
            let params = format!("{p}.params");
            openssl_ok(&[
                "genpkey",
                "-genparam",
                "-algorithm",
                "DSA",
                "-pkeyopt",
                "dsa_paramgen_bits:2048",
                "-out",
                &params,
            ]);
            openssl_ok(&["genpkey", "-paramfile", &params, "-out", &p]);
            return;
        }
        Key::File(_) => unreachable!("an existing key is not generated"),
    };
    let mut all = vec!["genpkey"];
    all.extend(args);
    all.extend(["-out", &p]);
    openssl_ok(&all);
}

/// A CSR made by [`CsrSpec::make`].
#[derive(Clone, Debug)]
pub struct Csr {
    /// The CSR file (PEM or DER).
    pub path: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl Csr {
    /// The CSR's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        fs::read(&self.path).unwrap()
    }

    /// The CSR's text (PEM CSRs only).
    pub fn pem(&self) -> String {
        fs::read_to_string(&self.path).unwrap()
    }

    /// `openssl req -text -noout` of the CSR.
    pub fn text(&self) -> String {
        let inform = if self.bytes().starts_with(b"-----") {
            "PEM"
        } else {
            "DER"
        };
        openssl_ok(&[
            "req".as_ref(),
            "-inform".as_ref(),
            inform.as_ref(),
            "-in".as_ref(),
            self.path.as_os_str(),
            "-noout".as_ref(),
            "-text".as_ref(),
        ])
    }

    /// The CSR's public key as DER SubjectPublicKeyInfo (what the certificate must carry).
    pub fn public_key_der(&self) -> Vec<u8> {
        let b = self.bytes();
        let req = openssl::x509::X509Req::from_pem(&b)
            .or_else(|_| openssl::x509::X509Req::from_der(&b))
            .unwrap();
        req.public_key().unwrap().public_key_to_der().unwrap()
    }
}

/// `openssl x509 -noout -text` of a PEM certificate file (the first certificate in it).
pub fn x509_text(cert: &Path) -> String {
    openssl_ok(&[
        "x509".as_ref(),
        "-in".as_ref(),
        cert.as_os_str(),
        "-noout".as_ref(),
        "-text".as_ref(),
    ])
}

/// `openssl x509 -noout -fingerprint -sha256`: colon-separated upper-case hex.
pub fn openssl_fingerprint(cert: &Path) -> String {
    let out = openssl_ok(&[
        "x509".as_ref(),
        "-in".as_ref(),
        cert.as_os_str(),
        "-noout".as_ref(),
        "-fingerprint".as_ref(),
        "-sha256".as_ref(),
    ]);
    out.trim()
        .split_once('=')
        .map(|(_, f)| f.to_owned())
        .unwrap_or_else(|| panic!("unexpected fingerprint output {out:?}"))
}

/// The DER of every certificate in a PEM file, in order.
pub fn pem_certs(path: &Path) -> Vec<Vec<u8>> {
    let pem = fs::read(path).unwrap();
    openssl::x509::X509::stack_from_pem(&pem)
        .unwrap()
        .iter()
        .map(|c| c.to_der().unwrap())
        .collect()
}

/// What a leaf must look like (DESIGN §4).
#[derive(Clone, Debug)]
pub struct LeafExpect {
    /// The one IP in the SAN.
    pub ip: IpAddr,
    /// First serial byte (the profile's `serial_prefix`).
    pub serial_prefix: u8,
    /// An RSA subject key (keyUsage adds keyEncipherment).
    pub rsa_key: bool,
    /// The signature algorithm OID ([`ECDSA_SHA256`], …).
    pub signature_oid: &'static str,
    /// notAfter - notBefore in days.
    pub validity_days: i64,
    /// notBefore = now - this (± a minute).
    pub backdate_seconds: i64,
    /// `CN=<ip>` in the subject (profile `subject_cn = true`) instead of an empty subject.
    pub subject_cn: bool,
    /// The CSR's public key (DER SPKI), when known.
    pub public_key_der: Option<Vec<u8>>,
}

impl LeafExpect {
    /// The default profile's leaf for `ip`: prefix 1 (webhook), EC key, ecdsa-with-SHA256,
    /// 365 days backdated 60 s, empty subject.
    pub fn webhook(ip: &str) -> Self {
        Self {
            ip: ip.parse().unwrap(),
            serial_prefix: 1,
            rsa_key: false,
            signature_oid: ECDSA_SHA256,
            validity_days: 365,
            backdate_seconds: 60,
            subject_cn: false,
            public_key_der: None,
        }
    }
}

/// Checks a leaf against DESIGN §4 with `x509-parser` (not our code) and returns every
/// deviation: version, serial, subject, issuer, validity, the exact extension set and each
/// extension's content, AKI = the issuer's SKI, signature algorithm.
pub fn leaf_profile_problems(leaf_der: &[u8], issuer_der: &[u8], e: &LeafExpect) -> Vec<String> {
    let mut p = Vec::new();
    let (rest, leaf) = X509Certificate::from_der(leaf_der).expect("the leaf parses");
    if !rest.is_empty() {
        p.push("trailing bytes after the leaf".into());
    }
    let (_, issuer) = X509Certificate::from_der(issuer_der).expect("the issuer parses");
    if leaf.version().0 != 2 {
        p.push(format!("version {:?}, not v3", leaf.version()));
    }
    let serial = leaf.raw_serial();
    if serial.len() != 16 {
        p.push(format!("serial has {} bytes, not 16", serial.len()));
    }
    if serial.first() != Some(&e.serial_prefix) {
        p.push(format!(
            "serial starts with {:02x?}, not the prefix {:02x}",
            serial.first(),
            e.serial_prefix
        ));
    }
    if serial.first().is_some_and(|b| b & 0x80 != 0) {
        p.push("serial is negative".into());
    }
    let cns: Vec<_> = leaf.subject().iter_common_name().collect();
    if e.subject_cn {
        let ok = leaf.subject().iter().count() == 1
            && cns.len() == 1
            && cns[0].as_str().ok() == Some(e.ip.to_string().as_str());
        if !ok {
            p.push(format!(
                "subject is {:?}, not CN={}",
                leaf.subject().to_string(),
                e.ip
            ));
        }
    } else if leaf.subject().iter().count() != 0 {
        p.push(format!(
            "subject is {:?}, not empty",
            leaf.subject().to_string()
        ));
    }
    if leaf.issuer().as_raw() != issuer.subject().as_raw() {
        p.push("issuer name is not the issuing CA's subject".into());
    }
    let nb = leaf.validity().not_before.timestamp();
    let na = leaf.validity().not_after.timestamp();
    if na - nb != e.validity_days * 86_400 {
        p.push(format!(
            "notAfter - notBefore = {} s, not {} days",
            na - nb,
            e.validity_days
        ));
    }
    let now = chrono::Utc::now().timestamp();
    let want_nb = now - e.backdate_seconds;
    if (nb - want_nb).abs() > 60 {
        p.push(format!(
            "notBefore is {} s from now - {} s",
            nb - want_nb,
            e.backdate_seconds
        ));
    }
    let sig = leaf.signature_algorithm.algorithm.to_id_string();
    if sig != e.signature_oid {
        p.push(format!(
            "signature algorithm {sig}, not {}",
            e.signature_oid
        ));
    }
    if leaf.tbs_certificate.signature.algorithm != leaf.signature_algorithm.algorithm {
        p.push("inner and outer signature algorithms differ".into());
    }
    if let Some(spki) = &e.public_key_der {
        if leaf.public_key().raw != &spki[..] {
            p.push("the public key is not the CSR's".into());
        }
    }

    // The exact extension set: each once, nothing else.
    let mut oids: Vec<String> = leaf
        .extensions()
        .iter()
        .map(|x| x.oid.to_id_string())
        .collect();
    oids.sort();
    let mut want = vec![
        "2.5.29.14", // SKI
        "2.5.29.15", // keyUsage
        "2.5.29.17", // SAN
        "2.5.29.19", // basicConstraints
        "2.5.29.35", // AKI
        "2.5.29.37", // EKU
    ];
    want.sort();
    if oids != want {
        p.push(format!("extensions are {oids:?}, not exactly {want:?}"));
    }
    let issuer_ski = issuer
        .extensions()
        .iter()
        .find_map(|x| match x.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        });
    for x in leaf.extensions() {
        match x.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => {
                if !x.critical || bc.ca || bc.path_len_constraint.is_some() {
                    p.push(format!(
                        "basicConstraints critical={} ca={} pathlen={:?}, not critical CA:FALSE",
                        x.critical, bc.ca, bc.path_len_constraint
                    ));
                }
            }
            ParsedExtension::KeyUsage(ku) => {
                let want = if e.rsa_key { 0b101 } else { 0b1 };
                if !x.critical || ku.flags != want {
                    p.push(format!(
                        "keyUsage critical={} flags={:#b}, not critical {:#b}",
                        x.critical, ku.flags, want
                    ));
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                let only_server = eku.server_auth
                    && !eku.any
                    && !eku.client_auth
                    && !eku.code_signing
                    && !eku.email_protection
                    && !eku.time_stamping
                    && !eku.ocsp_signing
                    && eku.other.is_empty();
                if !only_server {
                    p.push(format!("extendedKeyUsage is {eku:?}, not serverAuth only"));
                }
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                let want_critical = !e.subject_cn;
                if x.critical != want_critical {
                    p.push(format!(
                        "SAN critical={}, expected {want_critical}",
                        x.critical
                    ));
                }
                let ok = match san.general_names.as_slice() {
                    [GeneralName::IPAddress(b)] => ip_from(b) == Some(e.ip),
                    _ => false,
                };
                if !ok {
                    p.push(format!(
                        "SAN is {:?}, not exactly IP {}",
                        san.general_names, e.ip
                    ));
                }
            }
            ParsedExtension::SubjectKeyIdentifier(k) => {
                if k.0.is_empty() {
                    p.push("empty SKI".into());
                }
            }
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                let got = aki.key_identifier.as_ref().map(|k| k.0.to_vec());
                if got.is_none() || got != issuer_ski {
                    p.push(format!(
                        "AKI {got:02x?} is not the issuer's SKI {issuer_ski:02x?}"
                    ));
                }
                if aki.authority_cert_issuer.is_some() || aki.authority_cert_serial.is_some() {
                    p.push("AKI carries issuer name/serial, expected keyid only".into());
                }
            }
            other => p.push(format!(
                "unexpected or unparsable extension {}: {other:?}",
                x.oid
            )),
        }
    }
    p
}

/// Panics with every deviation from DESIGN §4 (see [`leaf_profile_problems`]).
#[track_caller]
pub fn assert_leaf_profile(leaf_der: &[u8], issuer_der: &[u8], e: &LeafExpect) {
    let p = leaf_profile_problems(leaf_der, issuer_der, e);
    assert!(
        p.is_empty(),
        "the leaf for {} is not the profile of DESIGN §4:\n  {}",
        e.ip,
        p.join("\n  ")
    );
}

/// An IP as `openssl x509 -text` prints it (IPv6: eight upper-case groups, uncompressed).
pub fn openssl_ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => v6
            .segments()
            .iter()
            .map(|g| format!("{g:X}"))
            .collect::<Vec<_>>()
            .join(":"),
    }
}

fn ip_from(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

/// Lower-case hex of bytes.
/// A P-256 CSR made in-process (fast, for tests that need hundreds): CN and SAN both `ip`.
/// Returns the PEM and the DER of its public key.
pub fn quick_csr(ip: &str) -> (Vec<u8>, Vec<u8>) {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::x509::extension::SubjectAlternativeName;
    let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let key = openssl::pkey::PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut b = openssl::x509::X509ReqBuilder::new().unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", ip).unwrap();
    b.set_subject_name(&name.build()).unwrap();
    b.set_pubkey(&key).unwrap();
    let mut exts = openssl::stack::Stack::new().unwrap();
    exts.push(
        SubjectAlternativeName::new()
            .ip(ip)
            .build(&b.x509v3_context(None))
            .unwrap(),
    )
    .unwrap();
    b.add_extensions(&exts).unwrap();
    b.sign(&key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    (
        b.build().to_pem().unwrap(),
        key.public_key_to_der().unwrap(),
    )
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sleeps until the wall clock has moved past `secs` whole seconds from now (records carry
/// whole-second times).
pub fn sleep_secs(secs: u64) {
    std::thread::sleep(std::time::Duration::from_millis(secs * 1000 + 100));
}

/// `tests/fixtures/<name>` (see its README.md).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Each CSR fixture and the decision `tests/fixtures/README.md` gives for it (`None`:
/// approved), all for 192.168.1.10.
pub const FIXTURES: [(&str, Option<&str>); 8] = [
    ("upstream-cli-p256.csr", None),
    ("smsgate-docs-rsa2048.csr", None),
    ("bad-signature.der", Some("bad_signature")),
    ("truncated.der", Some("invalid_csr")),
    ("dsa-2048.csr", Some("unsupported_key")),
    ("san-ip-5-octets.csr", Some("no_ip_san")),
    ("sha1-rsa2048.csr", Some("weak_signature")),
    ("ca-true.csr", Some("extension_not_allowed")),
];

/// A revocation proof (DESIGN §9) made the documented way: `printf 'smsgate-ca revocation
/// v1\n<serial>\n<reason>\n' | openssl dgst -sha256 -sign KEY | base64 -w0`.
pub fn revocation_proof(key: &Path, serial: &str, reason: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("openssl dgst -sha256 -sign \"$1\" | base64 -w0")
        .arg("sh")
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("smsgate-ca revocation v1\n{serial}\n{reason}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl dgst -sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
