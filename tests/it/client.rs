//! The client commands (`webhooks`, `private`, `csr`, `status`, `check`), driving the built
//! binary against a fake CA API on 127.0.0.1 and against a spool where the test plays the
//! signer with the `openssl` CLI. Nothing here contacts any other address.
//!
//! The helpers (`Fake`, `TestCa`, `cmd`) are shared with `sync.rs`.

#![allow(clippy::unwrap_used)] // Tests and their helpers may unwrap (STYLE §17).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary, with an environment that cannot reach the outside world by accident.
pub(crate) fn cmd(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_smsgate-ca"));
    c.current_dir(dir);
    for var in [
        "ASG_CA_URL",
        "ASG_CA_TIMEOUT",
        "RUST_LOG",
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        c.env_remove(var);
    }
    c.stdin(Stdio::null());
    c
}

pub(crate) fn run(c: &mut Command) -> Output {
    c.output().expect("the binary runs")
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

/// Names in a directory, sorted.
pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub(crate) fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port nothing listens on.
pub(crate) fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// A test CA made with the openssl CLI (an independent signer).

pub(crate) struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "30",
                "-subj",
                "/CN=Test CA",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        Self { dir }
    }

    /// The CA certificate, PEM.
    pub(crate) fn pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.crt")).unwrap()
    }

    /// Signs a PEM CSR, copying its extensions (the SAN); returns the leaf PEM.
    pub(crate) fn sign(&self, csr_pem: &str) -> String {
        let n: u64 = rand_u64();
        let csr = self.dir.path().join(format!("{n}.csr"));
        let crt = self.dir.path().join(format!("{n}.crt"));
        std::fs::write(&csr, csr_pem).unwrap();
        // What the signer adds besides the SAN copied from the CSR (DESIGN §4).
        std::fs::write(
            self.dir.path().join("leaf.ext"),
            "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        let out = Command::new("openssl")
            .args(["x509", "-req", "-in"])
            .arg(&csr)
            .args([
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-days",
                "10",
                "-copy_extensions",
                "copy",
                "-extfile",
                "leaf.ext",
            ])
            .args(["-set_serial", &n.to_string(), "-out"])
            .arg(&crt)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&crt).unwrap()
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    openssl::rand::rand_bytes(&mut b).unwrap();
    u64::from_le_bytes(b) >> 2
}

/// The public key of a certificate or a private key file, as PEM, via the openssl CLI.
pub(crate) fn pubkey_of_cert(path: &Path) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap()
}

pub(crate) fn pubkey_of_key(path: &Path) -> String {
    let o = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

// ---------------------------------------------------------------------------------------------
// A fake HTTP API on 127.0.0.1: one thread per connection, `Connection: close`.

#[derive(Clone, Debug)]
pub(crate) struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) struct Resp {
    pub status: u16,
    pub content_type: &'static str,
    pub extra: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub(crate) fn json(status: u16, v: serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            extra: vec![],
            body: v.to_string().into_bytes(),
        }
    }

    pub(crate) fn html(status: u16) -> Self {
        Self {
            status,
            content_type: "text/html",
            extra: vec![],
            body: b"<html><body><h1>502 Bad Gateway</h1></body></html>".to_vec(),
        }
    }

    pub(crate) fn empty(status: u16) -> Self {
        Self {
            status,
            content_type: "application/json",
            extra: vec![],
            body: vec![],
        }
    }
}

type Handler = dyn Fn(&Req) -> Resp + Send + Sync;

pub(crate) struct Fake {
    pub port: u16,
    log: Arc<Mutex<Vec<Req>>>,
}

impl Fake {
    pub(crate) fn start(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = Arc::clone(&handler);
                let log = Arc::clone(&log2);
                std::thread::spawn(move || serve_one(stream, &*handler, &log));
            }
        });
        Self { port, log }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1", self.port)
    }

    pub(crate) fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn count(&self, method: &str, prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(prefix))
            .count()
    }
}

fn serve_one(stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Req>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let req = Req {
        method,
        path,
        headers,
        body,
    };
    log.lock().unwrap().push(req.clone());
    let resp = handler(&req);
    let mut out = stream;
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        resp.status,
        resp.content_type,
        resp.body.len()
    );
    for (k, v) in &resp.extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(&resp.body);
}

/// A fake CA API: POST /csr answers 202 pending; GET /csr/{id} answers `decide(csr_pem)` after
/// `pending_polls` pending answers.
fn fake_ca(
    pending_polls: usize,
    decide: impl Fn(&str, &str) -> serde_json::Value + Send + Sync + 'static,
) -> Fake {
    fake_ca_publishing(pending_polls, None, decide)
}

/// Like [`fake_ca`], also publishing `chain` as GET /ca.crt (the client's trust on first use).
fn fake_ca_publishing(
    pending_polls: usize,
    chain: Option<String>,
    decide: impl Fn(&str, &str) -> serde_json::Value + Send + Sync + 'static,
) -> Fake {
    let csrs: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let polls = Mutex::new(0usize);
    Fake::start(move |req| {
        if let (Some(chain), "/api/v1/ca.crt") = (&chain, req.path.as_str()) {
            return Resp {
                status: 200,
                content_type: "application/x-pem-file",
                extra: vec![],
                body: chain.clone().into_bytes(),
            };
        }
        if req.method == "POST" && req.path == "/api/v1/csr" {
            let body = req.json();
            let id = format!("req{}", csrs.lock().unwrap().len() + 1);
            csrs.lock()
                .unwrap()
                .push((id.clone(), body["content"].as_str().unwrap().to_owned()));
            return Resp::json(
                202,
                serde_json::json!({"request_id": id, "type": body["type"], "status": "pending",
                                   "message": "queued"}),
            );
        }
        if let Some(id) = req.path.strip_prefix("/api/v1/csr/") {
            let found = csrs.lock().unwrap().iter().find(|(i, _)| i == id).cloned();
            let Some((id, csr)) = found else {
                return Resp::json(
                    404,
                    serde_json::json!({"error": {"code": 404, "message": "not found"}}),
                );
            };
            let mut n = polls.lock().unwrap();
            *n += 1;
            if *n <= pending_polls {
                return Resp::json(
                    200,
                    serde_json::json!({"request_id": id, "type": "webhook", "status": "pending",
                                       "message": "waiting for the signer"}),
                );
            }
            return Resp::json(200, decide(&id, &csr));
        }
        Resp::json(
            404,
            serde_json::json!({"error": {"code": 404, "message": "no route"}}),
        )
    })
}

fn approve_with(ca: Arc<TestCa>) -> impl Fn(&str, &str) -> serde_json::Value + Send + Sync {
    move |id, csr| {
        let cert = ca.sign(csr);
        let chain = format!(
            "{cert}{}",
            std::fs::read_to_string(ca.dir.path().join("ca.crt")).unwrap()
        );
        serde_json::json!({"request_id": id, "type": "webhook", "status": "approved",
                           "message": "certificate issued", "certificate": chain})
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals before any work.

#[test]
fn public_ip_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    for args in [
        vec!["webhooks", "8.8.8.8"],
        vec!["private", "2001:4860::8888"],
        vec!["csr", "1.1.1.1"],
        vec!["webhooks", "not-an-ip"],
        vec!["webhooks", "192.168.1.300"],
    ] {
        let o = run(cmd(dir.path())
            .args(&args)
            .args(["--ca-url", &format!("http://127.0.0.1:{port}/api/v1")]));
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(names(dir.path()).is_empty(), "{args:?} left files behind");
    }
    let o = run(cmd(dir.path()).args(["webhooks", "8.8.8.8"]));
    assert!(
        stderr(&o).contains("8.8.8.8 is a public address"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn existing_files_are_not_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.crt"), "mine").unwrap();
    let o = run(cmd(dir.path()).args(["webhooks", "192.168.1.10"]));
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("server.crt already exists"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("server.crt")).unwrap(),
        "mine"
    );
    assert_eq!(names(dir.path()), ["server.crt"]);

    std::fs::write(dir.path().join("server.key"), "mine").unwrap();
    let o = run(cmd(dir.path()).args(["csr", "192.168.1.10", "--out", "x.csr"]));
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("server.key already exists"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("x.csr").exists());
}

#[test]
fn a_missing_output_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(cmd(dir.path()).args(["private", "10.1.2.3", "--keyout", "nope/server.key"]));
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("the directory nope"), "{}", stderr(&o));
    assert!(names(dir.path()).is_empty());
}

#[test]
fn an_unreachable_ca_fails_quickly_with_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let start = Instant::now();
    let o = run(cmd(dir.path()).args([
        "webhooks",
        "--ca-url",
        &format!("http://127.0.0.1:{port}/api/v1"),
        "192.168.1.10",
    ]));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(start.elapsed() < Duration::from_secs(10));
    let err = stderr(&o);
    assert!(
        err.contains("cannot reach") && err.contains("connection refused"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(names(dir.path()).is_empty());
}

#[test]
fn an_https_ca_url_with_a_private_ca_fails_cleanly() {
    // A plain-HTTP server behind an https:// URL: a TLS failure, exit 1, no panic.
    let fake = Fake::start(|_| Resp::html(400));
    let dir = tempfile::tempdir().unwrap();
    let o = run(cmd(dir.path()).args([
        "webhooks",
        "--ca-url",
        &format!("https://127.0.0.1:{}/api/v1", fake.port),
        "192.168.1.10",
    ]));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("TLS"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
}

// ---------------------------------------------------------------------------------------------
// csr and check.

#[test]
fn csr_writes_a_clean_csr_that_openssl_accepts() {
    let dir = tempfile::tempdir().unwrap();
    for (ip, kt) in [("192.168.1.10", "ec-p256"), ("fd00::10", "rsa-2048")] {
        let o = run(cmd(dir.path()).args([
            "csr",
            ip,
            "--key-type",
            kt,
            "--out",
            "s.csr",
            "--keyout",
            "s.key",
            "--force",
        ]));
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let v = Command::new("openssl")
            .args(["req", "-in", "s.csr", "-verify", "-noout", "-text"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
        let text = String::from_utf8_lossy(&v.stdout);
        let san = format!(
            "IP Address:{}",
            ip.to_uppercase().replace("FD00::10", "FD00:0:0:0:0:0:0:10")
        );
        assert!(text.contains(&san), "{text}");
        assert!(text.contains(&format!("CN = {ip}")), "{text}");
        assert!(text.to_lowercase().contains("sha256"), "{text}");
        assert!(!text.contains("Extended Key Usage"), "{text}");
        let mode = std::fs::metadata(dir.path().join("s.key")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The CSR's key is the key written.
        let csr_pub = Command::new("openssl")
            .args(["req", "-in", "s.csr", "-noout", "-pubkey"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&csr_pub.stdout),
            pubkey_of_key(&dir.path().join("s.key"))
        );
    }
    assert_eq!(names(dir.path()), ["s.csr", "s.key"], "no temp files left");
}

fn self_signed(dir: &Path, name: &str, days: &str) -> PathBuf {
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "/dev/null",
            "-out",
            name,
            "-days",
            days,
            "-subj",
            "/CN=192.168.1.10",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    dir.join(name)
}

fn expired_cert(dir: &Path) -> PathBuf {
    use openssl::asn1::Asn1Time;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let key = openssl::pkey::PKey::from_ec_key(
        openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "old").unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    let now = chrono::Utc::now().timestamp();
    b.set_not_before(&Asn1Time::from_unix(now - 10 * 86_400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now - 3 * 86_400).unwrap())
        .unwrap();
    b.sign(&key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    let path = dir.join("expired.crt");
    std::fs::write(&path, b.build().to_pem().unwrap()).unwrap();
    path
}

#[test]
fn check_exits_1_within_the_window_and_0_outside() {
    let dir = tempfile::tempdir().unwrap();
    let short = self_signed(dir.path(), "short.crt", "1");
    let long = self_signed(dir.path(), "long.crt", "90");
    let expired = expired_cert(dir.path());

    let o = run(cmd(dir.path()).args(["check", "short.crt", "--within", "30d"]));
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("renew"), "{}", stdout(&o));

    let o = run(cmd(dir.path())
        .arg("check")
        .arg(&long)
        .args(["--within", "30d"]));
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let line = stdout(&o);
    assert_eq!(line.trim().lines().count(), 1);
    assert!(
        line.contains("valid until") && line.contains("days left"),
        "{line}"
    );

    // The default window is 30 days; 100 days catches the 90-day certificate.
    let o = run(cmd(dir.path()).arg("check").arg(&long));
    assert_eq!(code(&o), 0);
    let o = run(cmd(dir.path())
        .arg("check")
        .arg(&long)
        .args(["--within", "100d"]));
    assert_eq!(code(&o), 1);
    // A 1-day certificate is fine for a 1-hour window.
    let o = run(cmd(dir.path())
        .arg("check")
        .arg(&short)
        .args(["--within", "1h"]));
    assert_eq!(code(&o), 0, "{}", stdout(&o));

    let o = run(cmd(dir.path()).arg("check").arg(&expired));
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("EXPIRED"), "{}", stdout(&o));

    let o = run(cmd(dir.path()).args(["check", "missing.crt"]));
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    std::fs::write(dir.path().join("junk.crt"), "not a certificate").unwrap();
    let o = run(cmd(dir.path()).args(["check", "junk.crt"]));
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("not a PEM or DER"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------------
// Over HTTP, against a fake CA.

#[test]
fn http_approval_writes_the_pair() {
    let ca = Arc::new(TestCa::new());
    let fake = fake_ca_publishing(2, Some(ca.pem()), approve_with(Arc::clone(&ca)));
    let dir = tempfile::tempdir().unwrap();
    let o = run(cmd(dir.path()).args([
        "webhooks",
        "--ca-url",
        &fake.url(),
        "--poll-interval",
        "100ms",
        "--json",
        "192.168.1.10",
    ]));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(json["status"], "approved");
    assert_eq!(names(dir.path()), ["server.crt", "server.key"]);
    let key = dir.path().join("server.key");
    let crt = dir.path().join("server.crt");
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        pubkey_of_cert(&crt),
        pubkey_of_key(&key),
        "the certificate is for our key"
    );
    // The whole chain was written, and it verifies with the independent openssl CLI.
    let chain = std::fs::read_to_string(&crt).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    let v = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca.dir.path().join("ca.crt"))
        .arg(&crt)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    // The request body was the upstream shape.
    let post = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    let body = post.json();
    assert_eq!(body["type"], "webhook");
    assert!(body["content"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE REQUEST"));
    assert_eq!(post.header("content-type"), Some("application/json"));
    assert!(fake.count("GET", "/api/v1/csr/req1") >= 3);
}

#[test]
fn private_sends_type_private_server_and_renewal_keeps_the_key() {
    let ca = Arc::new(TestCa::new());
    let fake = fake_ca_publishing(0, Some(ca.pem()), approve_with(Arc::clone(&ca)));
    let dir = tempfile::tempdir().unwrap();
    let o = run(cmd(dir.path()).args(["private", "--ca-url", &fake.url(), "10.20.30.40"]));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let post = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(post.json()["type"], "private_server");
    let key_before = std::fs::read(dir.path().join("server.key")).unwrap();
    let crt_before = std::fs::read(dir.path().join("server.crt")).unwrap();

    // --renew: same IP (from the SAN), same key, the certificate replaced without --force.
    let o = run(cmd(dir.path()).args([
        "private",
        "--ca-url",
        &fake.url(),
        "--renew",
        "server.crt",
        "--keyout",
        "server.key",
    ]));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("reused"), "{}", stdout(&o));
    assert_eq!(
        std::fs::read(dir.path().join("server.key")).unwrap(),
        key_before
    );
    let crt_after = std::fs::read(dir.path().join("server.crt")).unwrap();
    assert_ne!(crt_after, crt_before, "a new certificate");
    assert_eq!(
        pubkey_of_cert(&dir.path().join("server.crt")),
        pubkey_of_key(&dir.path().join("server.key"))
    );
    let posts: Vec<Req> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 2);
    assert!(posts[1].json()["content"]
        .as_str()
        .unwrap()
        .contains("CERTIFICATE REQUEST"));

    // --renew --new-key replaces the old key of that certificate.
    let o = run(cmd(dir.path()).args([
        "private",
        "--ca-url",
        &fake.url(),
        "--renew",
        "server.crt",
        "--new-key",
    ]));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_ne!(
        std::fs::read(dir.path().join("server.key")).unwrap(),
        key_before
    );
    assert_eq!(
        pubkey_of_cert(&dir.path().join("server.crt")),
        pubkey_of_key(&dir.path().join("server.key"))
    );

    // A key that is not the certificate's is refused before any request.
    let other = dir.path().join("other.key");
    run(cmd(dir.path()).args(["csr", "10.0.0.9", "--out", "o.csr", "--keyout", "other.key"]));
    let before = fake.count("POST", "/api/v1/csr");
    let o = run(cmd(dir.path())
        .args([
            "private",
            "--ca-url",
            &fake.url(),
            "--renew",
            "server.crt",
            "--keyout",
        ])
        .arg(&other));
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("is not the key of"), "{}", stderr(&o));
    assert_eq!(fake.count("POST", "/api/v1/csr"), before);
    // An IP that differs from the certificate's is refused too.
    let o = run(cmd(dir.path()).args([
        "private",
        "--ca-url",
        &fake.url(),
        "--renew",
        "server.crt",
        "10.9.9.9",
    ]));
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

#[test]
fn http_denial_exits_3_with_the_reason_and_writes_nothing() {
    let fake = fake_ca(1, |id, _| {
        serde_json::json!({"request_id": id, "type": "webhook", "status": "denied",
                           "reason": "ip_denied", "message": "192.168.1.10 is in a denied range"})
    });
    let dir = tempfile::tempdir().unwrap();
    let o = run(cmd(dir.path()).args([
        "webhooks",
        "--ca-url",
        &fake.url(),
        "--poll-interval",
        "100ms",
        "192.168.1.10",
    ]));
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("denied (ip_denied): 192.168.1.10 is in a denied range"),
        "{err}"
    );
    assert!(names(dir.path()).is_empty());

    // A refusal at submission (400 with a reason) is a denial too.
    let fake = Fake::start(|_| {
        Resp::json(
            400,
            serde_json::json!({"error": {"code": 400, "message": "10.0.0.1 is outside the allowed ranges",
                                         "reason": "ip_not_allowed"}}),
        )
    });
    let o = run(cmd(dir.path()).args(["webhooks", "--ca-url", &fake.url(), "10.0.0.1"]));
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("ip_not_allowed"), "{}", stderr(&o));
    assert!(names(dir.path()).is_empty());
}

#[test]
fn garbage_answers_are_one_clear_sentence() {
    let dir = tempfile::tempdir().unwrap();
    for (resp, expect) in [
        (Resp::html(200), "HTML page"),
        (Resp::html(502), "HTML page"),
        (Resp::empty(202), "empty body"),
        (
            Resp::json(202, serde_json::json!({"hello": 1})),
            "unexpected shape",
        ),
    ] {
        let resp = Arc::new(resp);
        let r2 = Arc::clone(&resp);
        let fake = Fake::start(move |_| Resp {
            status: r2.status,
            content_type: r2.content_type,
            extra: vec![],
            body: r2.body.clone(),
        });
        let o = run(cmd(dir.path()).args(["webhooks", "--ca-url", &fake.url(), "192.168.1.10"]));
        assert_eq!(code(&o), 1, "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(expect), "{expect}: {err}");
        assert!(err.contains("/api/v1"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(names(dir.path()).is_empty());
    }
}

#[test]
fn rate_limit_longer_than_the_timeout_is_reported() {
    let fake = Fake::start(|_| Resp {
        status: 429,
        content_type: "application/json",
        extra: vec![("Retry-After".into(), "57".into())],
        body: br#"{"error":{"code":429,"message":"too many requests"}}"#.to_vec(),
    });
    let dir = tempfile::tempdir().unwrap();
    let o = run(cmd(dir.path())
        .args(["webhooks", "--ca-url", &fake.url(), "192.168.1.10"])
        .args(["--timeout", "5s"]));
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("try again in 57 seconds"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn http_timeout_exits_1_and_names_the_request() {
    let fake = fake_ca(usize::MAX, |_, _| unreachable!());
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let o = run(cmd(dir.path())
        .args([
            "webhooks",
            "--ca-url",
            &fake.url(),
            "192.168.1.10",
            "--poll-interval",
            "200ms",
        ])
        .env("ASG_CA_TIMEOUT", "2s"));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(start.elapsed() < Duration::from_secs(10));
    let err = stderr(&o);
    assert!(
        err.contains("req1") && err.contains("not decided within 2s"),
        "{err}"
    );
    assert!(err.contains("smsgate-ca status req1"), "{err}");
    assert!(names(dir.path()).is_empty());
}

#[test]
fn status_reads_the_api() {
    let fake = Fake::start(|req| {
        if req.path.ends_with("/csr/abc") {
            Resp::json(
                200,
                serde_json::json!({"request_id": "abc", "type": "webhook", "status": "pending",
                                   "message": "waiting"}),
            )
        } else {
            Resp::json(
                404,
                serde_json::json!({"error": {"code": 404, "message": "not found"}}),
            )
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let o = run(cmd(dir.path()).args(["status", "abc", "--ca-url", &fake.url()]));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("abc: pending: waiting"),
        "{}",
        stdout(&o)
    );
    let o = run(cmd(dir.path())
        .args(["status", "abc", "--json"])
        .env("ASG_CA_URL", fake.url()));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["status"], "pending");
    let o = run(cmd(dir.path()).args(["status", "zzz", "--ca-url", &fake.url()]));
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("no request zzz"), "{}", stderr(&o));
    let o = run(cmd(dir.path()).args(["status", "../etc", "--ca-url", &fake.url()]));
    assert_eq!(code(&o), 2);
}

// ---------------------------------------------------------------------------------------------
// Through a spool, the test playing the signer.

/// Starts the client in spool mode and returns it with the envelope it wrote.
fn spool_client(
    dir: &Path,
    spool: &Path,
    extra: &[&str],
) -> (std::process::Child, serde_json::Value) {
    let child = cmd(dir)
        .args(["webhooks", "--spool"])
        .arg(spool)
        .args(["--poll-interval", "100ms", "--timeout", "30s"])
        .args(extra)
        .arg("192.168.1.10")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let incoming = spool.join("incoming");
    let mut envelope = None;
    wait_for("the envelope in incoming/", Duration::from_secs(20), || {
        for name in names(&incoming) {
            if !name.starts_with('.') && name.ends_with(".json") {
                envelope = Some(incoming.join(name));
                return true;
            }
        }
        false
    });
    let text = std::fs::read_to_string(envelope.unwrap()).unwrap();
    (child, serde_json::from_str(&text).unwrap())
}

/// Writes a status record the way the daemon does: temp file, then rename.
pub(crate) fn write_status(spool: &Path, record: &serde_json::Value) {
    let id = record["request_id"].as_str().unwrap();
    let dir = spool.join("status");
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!(".{id}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(record).unwrap()).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{id}.json"))).unwrap();
}

pub(crate) fn status_record(
    id: &str,
    status: &str,
    certificate: Option<&str>,
) -> serde_json::Value {
    serde_json::json!({
        "request_id": id, "type": "webhook", "status": status,
        "message": format!("test {status}"),
        "reason": if status == "denied" { Some("denied_by_operator") } else { None },
        "certificate": certificate, "serial": null, "not_before": null, "not_after": null,
        "fingerprint_sha256": null, "decided_at": "2026-01-01T00:00:00Z"
    })
}

#[test]
fn spool_approval_after_a_hold_writes_the_pair() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let ca_file = ca.dir.path().join("ca.crt");
    let (child, envelope) = spool_client(
        dir.path(),
        spool.path(),
        &[
            "--out",
            "a.crt",
            "--keyout",
            "a.key",
            "--ca-file",
            ca_file.to_str().unwrap(),
        ],
    );
    let id = envelope["request_id"].as_str().unwrap().to_owned();
    assert_eq!(envelope["type"], "webhook");
    assert!(envelope["submitted_at"].is_string());
    // Held for an operator first: the client keeps waiting.
    write_status(spool.path(), &status_record(&id, "pending", None));
    std::thread::sleep(Duration::from_millis(500));
    assert!(names(dir.path()).is_empty(), "nothing written while held");
    let cert = ca.sign(envelope["content"].as_str().unwrap());
    write_status(spool.path(), &status_record(&id, "approved", Some(&cert)));
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("held for an operator"),
        "{}",
        stderr(&o)
    );
    assert_eq!(names(dir.path()), ["a.crt", "a.key"]);
    let key = dir.path().join("a.key");
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        pubkey_of_cert(&dir.path().join("a.crt")),
        pubkey_of_key(&key)
    );

    // `status --spool` reads the record.
    let o = run(cmd(dir.path())
        .args(["status", &id, "--spool"])
        .arg(spool.path()));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("{id}: approved")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn spool_denial_exits_3_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let (child, envelope) = spool_client(dir.path(), spool.path(), &[]);
    let id = envelope["request_id"].as_str().unwrap();
    write_status(spool.path(), &status_record(id, "denied", None));
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("denied_by_operator"), "{}", stderr(&o));
    assert!(names(dir.path()).is_empty());
}

#[test]
fn spool_certificate_for_another_key_is_refused() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    // The signer's chain as published in the spool: trusted on first use.
    std::fs::create_dir(spool.path().join("published")).unwrap();
    std::fs::write(spool.path().join("published/ca.crt"), ca.pem()).unwrap();
    let (child, envelope) = spool_client(dir.path(), spool.path(), &[]);
    let id = envelope["request_id"].as_str().unwrap();
    // A certificate for some other CSR.
    let other = tempfile::tempdir().unwrap();
    run(cmd(other.path()).args(["csr", "192.168.1.10"]));
    let csr = std::fs::read_to_string(other.path().join("server.csr")).unwrap();
    write_status(
        spool.path(),
        &status_record(id, "approved", Some(&ca.sign(&csr))),
    );
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not for the requested key"),
        "{}",
        stderr(&o)
    );
    assert!(names(dir.path()).is_empty());
}

#[test]
fn spool_timeout_says_held_and_names_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let child = cmd(dir.path())
        .args(["webhooks", "--spool"])
        .arg(spool.path())
        .args([
            "--poll-interval",
            "100ms",
            "--timeout",
            "2s",
            "192.168.1.10",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let incoming = spool.path().join("incoming");
    wait_for("the envelope", Duration::from_secs(20), || {
        names(&incoming)
            .iter()
            .any(|n| n.ends_with(".json") && !n.starts_with('.'))
    });
    let name = names(&incoming)
        .into_iter()
        .find(|n| !n.starts_with('.'))
        .unwrap();
    let id = name.trim_end_matches(".json").to_owned();
    write_status(spool.path(), &status_record(&id, "pending", None));
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(
        err.contains(&id) && err.contains("held for an operator's approval"),
        "{err}"
    );
    assert!(err.contains("--spool"), "{err}");
    assert!(names(dir.path()).is_empty());
}

#[test]
fn a_missing_spool_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(cmd(dir.path()).args(["webhooks", "--spool", "nope", "192.168.1.10"]));
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("spool directory nope does not exist"),
        "{}",
        stderr(&o)
    );
    assert!(names(dir.path()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Real TLS: `openssl s_server` with a certificate for 127.0.0.1 from a private test CA.

/// Starts `openssl s_server -www` (it answers every request with an HTML status page).
fn tls_server(ca: &TestCa) -> (std::process::Child, u16) {
    let dir = ca.dir.path();
    let o = run(cmd(dir).args([
        "csr",
        "127.0.0.1",
        "--out",
        "tls.csr",
        "--keyout",
        "tls.key",
    ]));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let cert = ca.sign(&std::fs::read_to_string(dir.join("tls.csr")).unwrap());
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    for _ in 0..5 {
        let port = closed_port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
            .args(["-cert", "tls.crt", "-key", "tls.key"])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (child, port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut child = child;
        let _ = child.kill();
    }
    panic!("openssl s_server did not start");
}

#[test]
fn https_uses_the_ca_file_and_reports_tls_failures() {
    let ca = TestCa::new();
    let (mut server, port) = tls_server(&ca);
    let url = format!("https://127.0.0.1:{port}/api/v1");
    let dir = tempfile::tempdir().unwrap();

    // Without --ca-file the private CA is not trusted: a TLS failure naming the fix.
    let o = run(cmd(dir.path()).args(["webhooks", "--ca-url", &url, "192.168.1.10"]));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("TLS with") && stderr(&o).contains("--ca-file"),
        "{}",
        stderr(&o)
    );

    // With it the handshake succeeds; s_server's HTML page is then reported as not the API.
    // (`status`: s_server -www answers GETs only.)
    let o = run(cmd(dir.path())
        .args(["status", "abc", "--ca-url", &url, "--ca-file"])
        .arg(ca.dir.path().join("ca.crt")));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("HTML page"), "{}", stderr(&o));
    assert!(names(dir.path()).is_empty());

    // A --ca-file that holds no certificate is bad input.
    std::fs::write(dir.path().join("junk.pem"), "junk").unwrap();
    let o = run(cmd(dir.path()).args([
        "webhooks",
        "--ca-url",
        &url,
        "192.168.1.10",
        "--ca-file",
        "junk.pem",
    ]));
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("junk.pem"), "{}", stderr(&o));
    let _ = server.kill();
    let _ = server.wait();
}

// ---------------------------------------------------------------------------------------------
// Through a spool with the real signer (`init` + `process`).

fn spool_client_for(env: &crate::util::TestEnv, args: &[&str]) -> std::process::Child {
    let child = cmd(&env.work)
        .args(args)
        .arg("--spool")
        .arg(&env.spool)
        .args(["--timeout", "60s", "--poll-interval", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let incoming = env.spool.join("incoming");
    wait_for("the envelope", Duration::from_secs(20), || {
        names(&incoming)
            .iter()
            .any(|n| n.ends_with(".json") && !n.starts_with('.'))
    });
    child
}

#[test]
fn spool_client_with_the_real_signer() {
    let env = crate::util::TestEnv::new();
    // The operator hands out the root with the spool: the client checks the chain against it.
    let root = env.root_cert();
    let child = spool_client_for(
        &env,
        &[
            "private",
            "192.168.1.10",
            "--ca-file",
            root.to_str().unwrap(),
        ],
    );
    env.process();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let crt = env.work.join("server.crt");
    let key = env.work.join("server.key");
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    assert_eq!(pubkey_of_cert(&crt), pubkey_of_key(&key));
    env.verify_chain_with(
        &crt,
        &["-purpose", "sslserver", "-verify_ip", "192.168.1.10"],
    )
    .success();

    // A private address outside the policy's ranges: denied by the signer, exit 3.
    let child = spool_client_for(
        &env,
        &[
            "webhooks",
            "100.64.1.1",
            "--out",
            "d.crt",
            "--keyout",
            "d.key",
        ],
    );
    env.process();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("ip_not_allowed"), "{}", stderr(&o));
    assert!(!env.work.join("d.crt").exists() && !env.work.join("d.key").exists());
}
