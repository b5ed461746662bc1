//! `smsgate-ca serve`: the built binary on 127.0.0.1 with a free port (`--listen
//! 127.0.0.1:0`, the bound address read from its `listening on ADDR` line), driven over HTTP.
//!
//! CSRs, CA certificates and CRLs are made with the `openssl` command line, independently of
//! the code under test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub(crate) const TOKEN: &str = "test-sync-token-0123456789";

/// A running `serve` in its own temporary state directory, pinned (`--ca-chain`) to a CA made
/// by `init --no-passphrase` in `<dir>/state` (see [`Server::issue`]).
pub(crate) struct Server {
    pub(crate) child: Option<Child>,
    pub(crate) port: u16,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) agent: ureq::Agent,
}

impl Server {
    /// Starts a server with a sync token, the rate limit off, and `extra` flags.
    pub(crate) fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra)
    }

    pub(crate) fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        let token = dir.path().join("token");
        write_private(&token, &format!("{TOKEN}\n"));
        let chain = pinned_ca(dir.path());
        let mut args: Vec<String> = vec![
            "--sync-token-file".into(),
            token.display().to_string(),
            "--ca-chain".into(),
            chain.display().to_string(),
        ];
        if !extra.iter().any(|a| a.starts_with("--rate-limit")) {
            args.extend(["--rate-limit".into(), "0".into()]);
        }
        if let Some(i) = extra.iter().position(|a| *a == "--db") {
            if let Some(url) = extra.get(i + 1).filter(|u| u.starts_with("postgres")) {
                std::fs::write(dir.path().join("pg-url"), url).unwrap();
            }
        } else if crate::pg::backend() == crate::pg::Backend::Postgres {
            // One database per server directory (a restart finds its data again).
            let saved = dir.path().join("pg-url");
            let url = std::fs::read_to_string(&saved).unwrap_or_else(|_| {
                let url = crate::pg::Cluster::get().new_database();
                std::fs::write(&saved, &url).unwrap();
                url
            });
            args.extend(["--db".into(), url]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = serve_command(dir.path(), &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("serve.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let port = read_port(&mut child, dir.path());
        Self {
            child: Some(child),
            port,
            dir,
            agent: agent(),
        }
    }

    /// Another instance on `other`'s PostgreSQL database, pinned to the same CA.
    pub(crate) fn start_beside(other: &Server, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        for f in ["ca.crt", "root.crt", "ca.key", "root.key", "chain.pem"] {
            let from = other.dir.path().join("state").join(f);
            if from.exists() {
                std::fs::copy(&from, state.join(f)).unwrap();
            }
        }
        let url = other.db_url().expect("the other server runs on PostgreSQL");
        let mut args = vec!["--db", url.as_str()];
        args.extend_from_slice(extra);
        Self::start_in(dir, &args)
    }

    /// The PostgreSQL URL this server uses, if it runs on PostgreSQL.
    pub(crate) fn db_url(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("pg-url")).ok()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Signs `csr` (a file) for `ip` with the pinned CA's issuing key, as the signer would
    /// (empty subject, critical IP SAN, CA:FALSE, serverAuth); returns leaf + issuing CA PEM.
    pub(crate) fn issue(&self, csr: &Path, ip: &str) -> String {
        issue_with(self.dir.path(), csr, &format!("IP:{ip}"), "30")
    }

    pub(crate) fn get(&self, path: &str) -> Reply {
        Reply::from(self.agent.get(self.url(path)).call().unwrap())
    }

    pub(crate) fn sync_get(&self, path: &str) -> Reply {
        Reply::from(
            self.agent
                .get(self.url(path))
                .header("Authorization", format!("Bearer {TOKEN}"))
                .call()
                .unwrap(),
        )
    }

    pub(crate) fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post_raw(path, "application/json", &body.to_string())
    }

    pub(crate) fn post_raw(&self, path: &str, content_type: &str, body: &str) -> Reply {
        Reply::from(
            self.agent
                .post(self.url(path))
                .content_type(content_type)
                .send(body)
                .unwrap(),
        )
    }

    pub(crate) fn sync_post(&self, path: &str, body: &Value) -> Reply {
        Reply::from(
            self.agent
                .post(self.url(path))
                .header("Authorization", format!("Bearer {TOKEN}"))
                .content_type("application/json")
                .send(body.to_string())
                .unwrap(),
        )
    }

    pub(crate) fn sync_put(&self, path: &str, body: &[u8]) -> Reply {
        Reply::from(
            self.agent
                .put(self.url(path))
                .header("Authorization", format!("Bearer {TOKEN}"))
                .content_type("application/octet-stream")
                .send(body)
                .unwrap(),
        )
    }

    /// Submits a CSR file's PEM; returns the answer.
    pub(crate) fn submit(&self, csr: &Path, kind: Option<&str>) -> Reply {
        let mut body = json!({ "content": std::fs::read_to_string(csr).unwrap() });
        if let Some(k) = kind {
            body["type"] = json!(k);
        }
        self.post_json("/api/v1/csr", &body)
    }

    /// Sends a raw HTTP/1.1 request (for paths a client library would normalise).
    pub(crate) fn raw(&self, request_line_and_headers: &str, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = format!(
            "{request_line_and_headers}\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// Sends only a request head declaring a body of `declared` bytes, then reads the answer.
    pub(crate) fn raw_head(
        &self,
        request_line_and_headers: &str,
        declared: usize,
    ) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = format!(
            "{request_line_and_headers}\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // Read until the body announced by the answer's Content-Length is complete.
        loop {
            let n = s.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&out);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse::<usize>().ok());
                if len.is_some_and(|len| body.len() >= len) {
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    pub(crate) fn sigterm(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        terminate(&mut child)
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An answer: status, headers we look at, body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) retry_after: Option<String>,
    pub(crate) nosniff: bool,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn from(mut r: ureq::http::Response<ureq::Body>) -> Self {
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").unwrap_or_default();
        let retry_after = header("retry-after");
        let nosniff = header("x-content-type-options").as_deref() == Some("nosniff");
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_vec().unwrap();
        Self {
            status,
            content_type,
            retry_after,
            nosniff,
            body,
        }
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}), status {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the SMSGate error envelope with this status; returns the error object.
    pub(crate) fn error(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert!(
            self.content_type.starts_with("application/json"),
            "{}",
            self.content_type
        );
        let v = self.json();
        assert_eq!(v["error"]["code"], json!(status), "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        v["error"].clone()
    }
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn serve_command(dir: &Path, args: &[String]) -> Command {
    // A test that needs its own policy writes `policy.toml` into the directory first.
    let own_policy = dir.join("policy.toml");
    let policy = if own_policy.exists() {
        own_policy
    } else {
        repo().join("policy/default.toml")
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smsgate-ca"));
    cmd.arg("--state")
        .arg(dir.join("state"))
        .arg("--policy")
        .arg(policy)
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Reads `listening on 127.0.0.1:PORT` from the server's stdout.
pub(crate) fn read_port(child: &mut Child, dir: &Path) -> u16 {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining so that the server never blocks on a full pipe.
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "serve did not announce its address; log:\n{}",
                std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
            )
        });
    line.strip_prefix("listening on 127.0.0.1:")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
}

pub(crate) fn terminate(child: &mut Child) -> ExitStatus {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

pub(crate) fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A P-256 CSR for `subject_alt_name` (e.g. `IP:192.168.1.10`), CN `cn`; returns its path.
pub(crate) fn make_csr(dir: &Path, name: &str, cn: &str, subject_alt_name: &str) -> PathBuf {
    let csr = dir.join(format!("{name}.csr"));
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            &format!("subjectAltName={subject_alt_name}"),
            "-out",
            csr.to_str().unwrap(),
        ],
    );
    csr
}

pub(crate) fn good_csr(dir: &Path) -> PathBuf {
    make_csr(dir, "good", "192.168.1.10", "IP:192.168.1.10")
}

/// Makes the CA a server is pinned to (once per directory): `init --no-passphrase` into
/// `<dir>/state`, and `<dir>/ca-chain.pem` = issuing CA then root, like `published/ca.crt`.
pub(crate) fn pinned_ca(dir: &Path) -> PathBuf {
    let state = dir.join("state");
    let chain = dir.join("ca-chain.pem");
    if !state.join("ca.crt").exists() {
        let out = Command::new(env!("CARGO_BIN_EXE_smsgate-ca"))
            .args(["init", "--no-passphrase", "--state"])
            .arg(&state)
            .arg("--policy")
            .arg(repo().join("policy/default.toml"))
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut pem = std::fs::read(state.join("ca.crt")).unwrap();
    pem.extend(std::fs::read(state.join("root.crt")).unwrap());
    std::fs::write(&chain, pem).unwrap();
    chain
}

/// Signs `csr` with the issuing key in `<dir>/state` (openssl CLI), with `san` (e.g.
/// `IP:192.168.1.10`) and `days` of validity; returns leaf + issuing CA PEM.
pub(crate) fn issue_with(dir: &Path, csr: &Path, san: &str, days: &str) -> String {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ext = dir.join(format!("leaf-{n}.ext"));
    std::fs::write(
        &ext,
        format!(
            "subjectAltName = critical, {san}\nbasicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n"
        ),
    )
    .unwrap();
    let out = dir.join(format!("leaf-{n}.crt"));
    let serial = format!("0x01{:030x}", u128::from(n) + 1);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            "state/ca.crt",
            "-CAkey",
            "state/ca.key",
            "-set_serial",
            &serial,
            // An empty subject, as the signer makes (a CN=<ip> would break the CA's DNS name
            // constraint in OpenSSL's eyes, DESIGN §4).
            "-subj",
            "/",
            "-days",
            days,
            "-sha256",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            out.to_str().unwrap(),
        ],
    );
    let mut pem = std::fs::read_to_string(&out).unwrap();
    pem.push_str(&std::fs::read_to_string(dir.join("state/ca.crt")).unwrap());
    pem
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A CRL signed with `<dir>/state`'s issuing key (openssl CLI) with CRLNumber `number` and
/// the given last/next update (`YYMMDDHHMMSSZ`, or `None` for now and 30 days); DER.
pub(crate) fn make_crl(dir: &Path, number: u32, dates: Option<(&str, &str)>) -> Vec<u8> {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ca = dir.join(format!("crl-{n}"));
    std::fs::create_dir_all(&ca).unwrap();
    std::fs::write(
        ca.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
         default_md = sha256\ndefault_crl_days = 30\n",
    )
    .unwrap();
    std::fs::write(ca.join("index.txt"), "").unwrap();
    std::fs::write(ca.join("crlnumber"), format!("{number:02X}\n")).unwrap();
    let state = dir.join("state");
    let (key, crt) = (state.join("ca.key"), state.join("ca.crt"));
    let mut args = vec![
        "ca",
        "-config",
        "ca.cnf",
        "-gencrl",
        "-keyfile",
        key.to_str().unwrap(),
        "-cert",
        crt.to_str().unwrap(),
        "-out",
        "crl.pem",
    ];
    if let Some((last, next)) = dates {
        args.extend(["-crl_lastupdate", last, "-crl_nextupdate", next]);
    }
    openssl(&ca, &args);
    openssl(
        &ca,
        &[
            "crl", "-in", "crl.pem", "-outform", "DER", "-out", "crl.der",
        ],
    );
    std::fs::read(ca.join("crl.der")).unwrap()
}

/// A published ledger checkpoint at `line`, signed with `<dir>/state`'s issuing key by the
/// openssl CLI (the line itself is rendered by the ledger code, its hash over its bytes).
pub(crate) fn make_checkpoint(dir: &Path, line: u64) -> Vec<u8> {
    use smsgate_ca::ledger::{entry, Event};
    let head = "ab".repeat(32);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let msg = dir.join(format!("cp-{n}.msg"));
    std::fs::write(&msg, entry::checkpoint_message(line, &head)).unwrap();
    let sig = dir.join(format!("cp-{n}.sig"));
    openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-sign",
            "state/ca.key",
            "-out",
            sig.to_str().unwrap(),
            msg.to_str().unwrap(),
        ],
    );
    let signature: String = std::fs::read(&sig)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let event = Event::Checkpoint {
        line,
        head: head.clone(),
        signature,
    };
    format!(
        "{}\n",
        entry::render(line, "2026-01-01T00:00:00Z", &event, &head)
    )
    .into_bytes()
}

pub(crate) fn asn1_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%y%m%d%H%M%SZ").to_string()
}

fn post_is_accepted_as_pending_and_get_shows_it() {
    let server = Server::start(&[]);
    let csr = good_csr(server.dir.path());
    let r = server.submit(&csr, None);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["type"], "webhook");
    assert_eq!(v["status"], "pending");
    assert!(v["message"].is_string());
    assert!(v.get("certificate").is_none());
    let id = v["request_id"].as_str().unwrap().to_owned();
    assert!(smsgate_ca::request::RequestId::parse(&id).is_ok());

    let g = server.get(&format!("/api/v1/csr/{id}"));
    assert_eq!(g.status, 200);
    let g = g.json();
    assert_eq!(g["request_id"], json!(id));
    assert_eq!(g["status"], "pending");
    assert_eq!(g["type"], "webhook");
    assert!(g.get("certificate").is_none());

    let p = server.submit(&csr, Some("private_server"));
    assert_eq!(p.status, 202);
    assert_eq!(p.json()["type"], "private_server");
    // The log has one line per request and never the CSR.
    let log = server.log();
    assert!(log.contains("/api/v1/csr"), "{log}");
    assert!(!log.contains("BEGIN CERTIFICATE REQUEST"), "{log}");
}

fn policy_denials_are_answered_at_post_with_their_reason() {
    let server = Server::start(&[]);
    let dir = server.dir.path();
    let public = make_csr(dir, "public", "8.8.8.8", "IP:8.8.8.8");
    let e = server.submit(&public, None).error(400);
    assert_eq!(e["reason"], "ip_not_allowed", "{e}");

    let dns = make_csr(dir, "dns", "host.example", "DNS:host.example");
    let e = server.submit(&dns, None).error(400);
    assert!(e["reason"].is_string(), "{e}");

    let garbage = json!({
        "content": "-----BEGIN CERTIFICATE REQUEST-----\nnot base64 at all\n-----END CERTIFICATE REQUEST-----\n"
    });
    let e = server.post_json("/api/v1/csr", &garbage).error(400);
    assert_eq!(e["reason"], "invalid_csr", "{e}");
}

fn bad_input_gets_a_json_error_and_the_server_keeps_serving() {
    let server = Server::start(&[]);
    let pem = std::fs::read_to_string(good_csr(server.dir.path())).unwrap();
    let csr = "/api/v1/csr";

    // Malformed JSON, wrong shapes, missing or empty content.
    for body in [
        "{not json",
        "[]",
        "\"x\"",
        "{}",
        r#"{"content": null}"#,
        r#"{"content": ""}"#,
        r#"{"content": "   "}"#,
        r#"{"content": 5}"#,
        r#"{"content": "x", "metadata": {"k": 1}}"#,
        r#"{"content": "x", "metadata": "no"}"#,
    ] {
        server.post_raw(csr, "application/json", body).error(400);
    }
    // Unknown type.
    let e = server
        .post_json(csr, &json!({"content": pem, "type": "mainframe"}))
        .error(400);
    assert_eq!(e["reason"], "unknown_type");
    let e = server
        .post_json(csr, &json!({"content": pem, "type": 7}))
        .error(400);
    assert_eq!(e["reason"], "unknown_type");
    // Not PEM.
    let e = server
        .post_json(csr, &json!({"content": "hello, I am not a CSR"}))
        .error(400);
    assert_eq!(e["reason"], "invalid_csr");
    // Content over 16 KiB, and a body over the hard limit.
    let big = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}",
        "A".repeat(17_000)
    );
    let e = server.post_json(csr, &json!({ "content": big })).error(413);
    assert_eq!(e["reason"], "too_large");
    // (Only the head is sent: the server refuses on Content-Length at once, and a client that
    // keeps writing a body nobody reads may see its connection reset instead of the answer.)
    let (status, body) = server.raw_head(
        "POST /api/v1/csr HTTP/1.1\r\nContent-Type: application/json",
        200_000,
    );
    assert_eq!(status, 413, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], 413);
    // Wrong or missing content type.
    server
        .post_raw(csr, "text/plain", &json!({"content": pem}).to_string())
        .error(415);
    server
        .post_raw(csr, "application/x-www-form-urlencoded", "content=x")
        .error(415);
    let (status, body) = server.raw("POST /api/v1/csr HTTP/1.1", b"{\"content\":\"x\"}");
    assert_eq!(status, 415, "{body}");
    // Unknown ids, ids that are not ids, unknown routes, wrong methods.
    server.get("/api/v1/csr/NoSuchRequest123").error(404);
    for path in [
        "/api/v1/csr/..",
        "/api/v1/csr/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/csr/a%20b",
        "/api/v1/csr/%FF%FE",
        &format!("/api/v1/csr/{}", "x".repeat(10_240)),
        "/api/v1/csr/a/b",
        "/api/v1/csr/../../etc/passwd",
        "/nope",
        "/api/v1/",
    ] {
        let (status, body) = server.raw(&format!("GET {path} HTTP/1.1"), b"");
        assert!(status == 400 || status == 404, "{path}: {status} {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: {body}"));
        assert_eq!(v["error"]["code"], json!(status), "{path}: {body}");
    }
    let r = Reply::from(
        server
            .agent
            .delete(server.url("/api/v1/csr/abc"))
            .call()
            .unwrap(),
    );
    r.error(405);
    server.get(csr).error(405);
    // Sync: results for unknown ids are reported, malformed bodies are 400.
    server
        .sync_post("/api/v1/sync/results", &json!({"results": [{"nope": 1}]}))
        .error(400);
    server
        .sync_post("/api/v1/sync/ack", &json!({"ids": "x"}))
        .error(400);
    server
        .sync_get("/api/v1/sync/requests?limit=abc")
        .error(400);

    // Still serving.
    let h = server.get("/health");
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    assert_eq!(
        server
            .submit(&server.dir.path().join("good.csr"), None)
            .status,
        202
    );
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    assert!(!metrics.contains("status=\"500\""), "{metrics}");
    assert!(
        metrics.contains("smsgate_ca_http_requests_total{route=\"/api/v1/csr\",status=\"400\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("smsgate_ca_http_requests_total{route=\"unmatched\",status=\"404\"}"),
        "{metrics}"
    );
}

fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let post_as = |server: &Server, csr: &Path, client: &str| {
        let body = json!({ "content": std::fs::read_to_string(csr).unwrap() });
        Reply::from(
            server
                .agent
                .post(server.url("/api/v1/csr"))
                .header("X-Forwarded-For", client)
                .content_type("application/json")
                .send(body.to_string())
                .unwrap(),
        )
        .status
    };
    let behind = Server::start(&["--rate-limit", "1/min", "--trusted-proxy", "127.0.0.1"]);
    let csr = good_csr(behind.dir.path());
    assert_eq!(post_as(&behind, &csr, "10.0.0.1"), 202);
    assert_eq!(post_as(&behind, &csr, "10.0.0.2"), 202);
    assert_eq!(post_as(&behind, &csr, "10.0.0.1"), 429);

    // Without --trusted-proxy the header is ignored: every POST comes from 127.0.0.1.
    let direct = Server::start(&["--rate-limit", "1/min"]);
    assert_eq!(post_as(&direct, &csr, "10.0.0.1"), 202);
    assert_eq!(post_as(&direct, &csr, "10.0.0.2"), 429);
}

fn rate_limit_answers_429_with_retry_after() {
    let server = Server::start(&["--rate-limit", "1/min"]);
    let csr = good_csr(server.dir.path());
    assert_eq!(server.submit(&csr, None).status, 202);
    let r = server.submit(&csr, None);
    r.error(429);
    let wait: u64 = r
        .retry_after
        .as_deref()
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!((1..=60).contains(&wait), "{wait}");
    // Other routes are not limited.
    assert_eq!(server.get("/health").status, 200);
    assert_eq!(server.sync_get("/api/v1/sync/requests").status, 200);
}

fn sync_endpoints_need_the_token() {
    let server = Server::start(&[]);
    server.get("/api/v1/sync/requests").error(401);
    let wrong = Reply::from(
        server
            .agent
            .get(server.url("/api/v1/sync/requests"))
            .header("Authorization", "Bearer not-the-token")
            .call()
            .unwrap(),
    );
    wrong.error(401);
    let wrong = Reply::from(
        server
            .agent
            .post(server.url("/api/v1/sync/ack"))
            .header("Authorization", format!("Basic {TOKEN}"))
            .content_type("application/json")
            .send("{\"ids\": []}")
            .unwrap(),
    );
    wrong.error(401);
    let put = Reply::from(
        server
            .agent
            .put(server.url("/api/v1/sync/published/ca.crt"))
            .send("x")
            .unwrap(),
    );
    put.error(401);
    assert_eq!(server.sync_get("/api/v1/sync/requests").status, 200);
    assert!(!server.log().contains(TOKEN));

    // Without --sync-token-file the endpoints are off.
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve_command(dir.path(), &["--rate-limit".into(), "0".into()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let port = read_port(&mut child, dir.path());
    let r = Reply::from(
        agent()
            .get(format!("http://127.0.0.1:{port}/api/v1/sync/requests"))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()
            .unwrap(),
    );
    r.error(503);
    assert!(terminate(&mut child).success());
}

fn sync_lists_acknowledges_and_takes_results() {
    let server = Server::start(&[]);
    let csr = good_csr(server.dir.path());
    let pem = std::fs::read_to_string(&csr).unwrap();
    let a = server.post_json(
        "/api/v1/csr",
        &json!({"content": pem, "type": "webhook", "metadata": {"device": "phone-1"}}),
    );
    let a = a.json()["request_id"].as_str().unwrap().to_owned();
    let b = server.submit(&csr, Some("private_server")).json()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let list = server.sync_get("/api/v1/sync/requests?limit=10").json();
    let requests = list["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2, "{list}");
    // Exactly the spool envelope (DESIGN §2).
    let env: smsgate_ca::request::Envelope = serde_json::from_value(requests[0].clone()).unwrap();
    assert_eq!(env.request_id, a);
    assert_eq!(env.kind, "webhook");
    assert_eq!(env.content, pem);
    assert_eq!(env.metadata["device"], "phone-1");
    assert!(env.submitted_at.is_some());
    assert_eq!(requests[1]["type"], "private_server");
    let one = server.sync_get("/api/v1/sync/requests?limit=1").json();
    assert_eq!(one["requests"].as_array().unwrap().len(), 1);

    let ack = server
        .sync_post(
            "/api/v1/sync/ack",
            &json!({"ids": [a, "Unknown1", "../bad"]}),
        )
        .json();
    assert_eq!(ack["acknowledged"], 1, "{ack}");
    assert_eq!(ack["unknown"], json!(["Unknown1", "../bad"]), "{ack}");
    let again = server
        .sync_post("/api/v1/sync/ack", &json!({"ids": [a]}))
        .json();
    assert_eq!(again["acknowledged"], 1);
    let list = server.sync_get("/api/v1/sync/requests").json();
    let ids: Vec<&str> = list["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![b.as_str()]);

    let cert = server.issue(&csr, "192.168.1.10");
    let approved = json!({
        "request_id": a, "type": "webhook", "status": "approved",
        "message": "certificate issued for 192.168.1.10", "reason": null,
        "certificate": cert, "serial": null, "not_before": "2026-01-01T00:00:00Z",
        "not_after": "2027-01-01T00:00:00Z", "fingerprint_sha256": "AB:CD",
        "decided_at": "2026-01-01T00:00:00Z"
    });
    let held = json!({
        "request_id": b, "type": "private_server", "status": "pending",
        "message": "held for an operator", "reason": null, "certificate": null,
        "serial": null, "not_before": null, "not_after": null, "fingerprint_sha256": null,
        "decided_at": "2026-01-01T00:00:00Z"
    });
    let unknown = json!({
        "request_id": "NeverSubmitted", "type": "webhook", "status": "denied",
        "message": "no", "reason": "ip_denied", "certificate": null, "serial": null,
        "not_before": null, "not_after": null, "fingerprint_sha256": null,
        "decided_at": "2026-01-01T00:00:00Z"
    });
    let r = server
        .sync_post(
            "/api/v1/sync/results",
            &json!({"results": [approved, held, unknown]}),
        )
        .json();
    assert_eq!(r["updated"], json!([a, b]), "{r}");
    assert_eq!(r["unknown"], json!(["NeverSubmitted"]), "{r}");
    assert_eq!(r["unchanged"], json!([]));
    assert_eq!(r["conflicts"], json!([]));

    let g = server.get(&format!("/api/v1/csr/{a}")).json();
    assert_eq!(g["status"], "approved");
    assert_eq!(g["certificate"], cert);
    assert_eq!(g["message"], "certificate issued for 192.168.1.10");
    let g = server.get(&format!("/api/v1/csr/{b}")).json();
    assert_eq!(g["status"], "pending");
    assert_eq!(g["message"], "held for an operator");
    // A request with a result is no longer listed.
    let list = server.sync_get("/api/v1/sync/requests").json();
    assert_eq!(list["requests"], json!([]));

    // The same result twice changes nothing; a different final result is refused.
    let r = server
        .sync_post("/api/v1/sync/results", &json!({"results": [approved]}))
        .json();
    assert_eq!(r["unchanged"], json!([a]), "{r}");
    let mut other = approved.clone();
    other["status"] = json!("denied");
    other["certificate"] = Value::Null;
    other["reason"] = json!("denied_by_operator");
    let r = server.sync_post("/api/v1/sync/results", &json!({"results": [other]}));
    assert_eq!(r.status, 409, "a conflicting result is refused");
    let r = r.json();
    assert_eq!(r["conflicts"], json!([a]), "{r}");
    assert_eq!(
        server.get(&format!("/api/v1/csr/{a}")).json()["status"],
        "approved"
    );
    // The held request is then denied by the operator.
    let mut denied = held.clone();
    denied["status"] = json!("denied");
    denied["reason"] = json!("denied_by_operator");
    denied["message"] = json!("denied by the operator: wrong subnet");
    let r = server
        .sync_post("/api/v1/sync/results", &json!({"results": [denied]}))
        .json();
    assert_eq!(r["updated"], json!([b]), "{r}");
    let g = server.get(&format!("/api/v1/csr/{b}")).json();
    assert_eq!(g["status"], "denied");
    assert_eq!(g["reason"], "denied_by_operator");
    assert!(g.get("certificate").is_none());

    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    assert!(
        metrics.contains("smsgate_ca_seconds_since_last_sync"),
        "{metrics}"
    );
    assert!(
        metrics.contains("smsgate_ca_pending_requests 0"),
        "{metrics}"
    );
}

fn long_poll_returns_as_soon_as_a_request_arrives() {
    let server = Server::start(&[]);
    let csr = good_csr(server.dir.path());
    let url = server.url("/api/v1/sync/requests?wait=30");
    let started = Instant::now();
    let poll = std::thread::spawn(move || {
        let r = Reply::from(
            agent()
                .get(url)
                .header("Authorization", format!("Bearer {TOKEN}"))
                .call()
                .unwrap(),
        );
        (r.json(), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !poll.is_finished(),
        "the long-poll returned before any request"
    );
    let id = server.submit(&csr, None).json()["request_id"].clone();
    let (list, took) = poll.join().unwrap();
    assert_eq!(list["requests"][0]["request_id"], id, "{list}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    // With nothing new, it waits for `wait` seconds and answers an empty list.
    server.sync_post("/api/v1/sync/ack", &json!({"ids": [id]}));
    let t = Instant::now();
    let list = server.sync_get("/api/v1/sync/requests?wait=1").json();
    assert_eq!(list["requests"], json!([]));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
}

fn published_crl_and_chain_round_trip() {
    let server = Server::start(&[]);
    server.get("/api/v1/crl").error(404);
    server.get("/api/v1/ca.crt").error(404);
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    assert!(!metrics.contains("crl_next_update_seconds"));

    let chain = std::fs::read(server.dir.path().join("ca-chain.pem")).unwrap();
    let crl = make_crl(server.dir.path(), 1, None);
    assert_eq!(
        server
            .sync_put("/api/v1/sync/published/ca.crl", &crl)
            .status,
        204
    );
    assert_eq!(
        server
            .sync_put("/api/v1/sync/published/ca.crt", &chain)
            .status,
        204
    );
    let checkpoint = make_checkpoint(server.dir.path(), 3);
    assert_eq!(
        server
            .sync_put("/api/v1/sync/published/ledger-checkpoint.json", &checkpoint)
            .status,
        204
    );
    let got = server.get("/api/v1/crl");
    assert_eq!(got.status, 200);
    assert_eq!(got.content_type, "application/pkix-crl");
    assert_eq!(got.body, crl);
    let got = server.get("/api/v1/ca.crt");
    assert_eq!(got.content_type, "application/x-pem-file");
    assert_eq!(got.body, chain);

    // Bad uploads are refused and keep the old file.
    server
        .sync_put("/api/v1/sync/published/ca.crl", b"not a CRL")
        .error(400);
    server
        .sync_put("/api/v1/sync/published/ca.crt", b"not PEM")
        .error(400);
    server
        .sync_put("/api/v1/sync/published/other.txt", b"x")
        .error(404);
    server
        .sync_put("/api/v1/sync/published/ca.crl", &vec![0u8; 2 * 1024 * 1024])
        .error(413);
    assert_eq!(server.get("/api/v1/crl").body, crl);

    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("smsgate_ca_crl_next_update_seconds "))
        .unwrap_or_else(|| panic!("{metrics}"));
    let secs: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(secs > 29.0 * 86_400.0 && secs <= 30.0 * 86_400.0, "{secs}");
    let h = server.get("/health").json();
    assert_eq!(h["status"], "ok", "{h}");
    assert!(h["crl_next_update"].is_string());

    // A CRL with less than a third of its validity left makes /health degraded.
    let now = chrono::Utc::now();
    let stale = make_crl(
        server.dir.path(),
        2,
        Some((
            &asn1_time(now - chrono::Duration::days(9)),
            &asn1_time(now + chrono::Duration::days(1)),
        )),
    );
    assert_eq!(
        server
            .sync_put("/api/v1/sync/published/ca.crl", &stale)
            .status,
        204
    );
    let h = server.get("/health");
    assert_eq!(h.status, 200);
    let h = h.json();
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["problems"][0].as_str().unwrap().contains("CRL"), "{h}");
}

fn pending_requests_expire_after_the_pending_ttl() {
    let server = Server::start(&["--pending-ttl", "1s"]);
    let csr = good_csr(server.dir.path());
    let id = server.submit(&csr, None).json()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(server.get(&format!("/api/v1/csr/{id}")).status, 200);
    std::thread::sleep(Duration::from_millis(2100));
    server.get(&format!("/api/v1/csr/{id}")).error(404);
    let list = server.sync_get("/api/v1/sync/requests").json();
    assert_eq!(list["requests"], json!([]));
}

#[test]
fn openapi_document_describes_the_upstream_routes() {
    let server = Server::start(&[]);
    let r = server.get("/api/v1/openapi.json");
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let post = &doc["paths"]["/api/v1/csr"]["post"];
    let get = &doc["paths"]["/api/v1/csr/{id}"]["get"];
    for code in ["202", "400", "500"] {
        assert!(post["responses"][code].is_object(), "POST {code}");
    }
    for code in ["200", "400", "404", "500"] {
        assert!(get["responses"][code].is_object(), "GET {code}");
    }
    assert!(doc["paths"]["/api/v1/sync/requests"]["get"].is_object());

    // Field names, types, enums and limits as the upstream Swagger (when shared/ is there).
    let upstream = repo().join("../shared/upstream/ca-api-swagger.json");
    let Ok(text) = std::fs::read_to_string(&upstream) else {
        return;
    };
    let upstream: Value = serde_json::from_str(&text).unwrap();
    let ours = &doc["components"]["schemas"];
    for name in [
        "ca.PostCSRRequest",
        "ca.PostCSRResponse",
        "ca.GetCSRStatusResponse",
        "http.JSONErrorResponse",
    ] {
        let theirs = &upstream["definitions"][name]["properties"];
        let mine = &ours[name]["properties"];
        for (field, spec) in theirs.as_object().unwrap() {
            let m = &mine[field];
            assert!(!m.is_null(), "{name}.{field} missing: {mine}");
            if let Some(t) = spec.get("type") {
                assert_eq!(&m["type"], t, "{name}.{field}");
            }
        }
    }
    assert_eq!(
        ours["ca.PostCSRRequest"]["properties"]["content"]["maxLength"],
        json!(16384)
    );
    assert_eq!(ours["ca.PostCSRRequest"]["required"], json!(["content"]));
    assert_eq!(
        ours["ca.CSRStatus"]["enum"],
        upstream["definitions"]["ca.CSRStatus"]["enum"]
    );
    assert_eq!(
        ours["ca.CSRType"]["enum"],
        upstream["definitions"]["ca.CSRType"]["enum"]
    );
}

fn sigterm_stops_cleanly_and_a_restart_keeps_the_data() {
    let mut server = Server::start(&[]);
    let csr = good_csr(server.dir.path());
    let id = server.submit(&csr, None).json()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A long-poll in flight does not hold the shutdown up.
    let url = server.url("/api/v1/sync/requests?wait=60");
    server.sync_post("/api/v1/sync/ack", &json!({"ids": [id]}));
    let poll = std::thread::spawn(move || {
        agent()
            .get(url)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()
            .map(|r| r.status().as_u16())
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let status = server.sigterm();
    assert!(status.success(), "{status:?}: {}", server.log());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let _ = poll.join();

    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    drop(server);
    let server = Server::start_in(dir, &[]);
    let g = server.get(&format!("/api/v1/csr/{id}"));
    assert_eq!(g.status, 200);
    assert_eq!(g.json()["status"], "pending");
}

#[test]
fn sighup_reloads_the_policy_and_keeps_the_old_one_when_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let default = std::fs::read_to_string(repo().join("policy/default.toml")).unwrap();
    std::fs::write(&policy, &default).unwrap();
    let server = Server::start_in(dir, &[]);
    let csr = good_csr(server.dir.path());
    assert_eq!(server.submit(&csr, None).status, 202);

    let hup = || {
        use nix::sys::signal::{kill, Signal};
        let pid = server.child.as_ref().unwrap().id() as i32;
        kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP).unwrap();
    };
    let denying = default.replacen("deny = []", "deny = [\"192.168.1.0/24\"]", 1);
    assert_ne!(denying, default);
    std::fs::write(&policy, denying).unwrap();
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = server.submit(&csr, None);
        if r.status == 400 {
            assert_eq!(r.error(400)["reason"], "ip_denied");
            break;
        }
        assert!(Instant::now() < deadline, "the policy was not reloaded");
        std::thread::sleep(Duration::from_millis(100));
    }

    std::fs::write(&policy, "this is = not [a policy").unwrap();
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("policy reload failed") {
        assert!(Instant::now() < deadline, "no reload error logged");
        std::thread::sleep(Duration::from_millis(100));
    }
    let e = server.submit(&csr, None).error(400);
    assert_eq!(e["reason"], "ip_denied", "the old policy must stay");
}

#[test]
fn unusable_flags_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = serve_command(
            dir.path(),
            &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .output()
        .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A password in the URL would be visible in argv: refused, and not echoed.
    let (code, err) = run(&["--db", "postgres://serve:s3cr3t@localhost/ca"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--db-password-file"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
    let (code, err) = run(&["--db", "mysql://localhost/ca"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["--rate-limit", "fast"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["--pending-ttl", "soon"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["--trusted-proxy", "proxy.example"]);
    assert_eq!(code, Some(2), "{err}");

    let loose = dir.path().join("loose-token");
    std::fs::write(&loose, "t0ken\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = run(&["--sync-token-file", loose.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("chmod"), "{err}");
    assert!(!err.contains("t0ken"), "{err}");
}

// Each body above runs on SQLite and on PostgreSQL (`<name>::sqlite`, `<name>::postgres`).
crate::pg::on_both_backends!(
    post_is_accepted_as_pending_and_get_shows_it,
    policy_denials_are_answered_at_post_with_their_reason,
    bad_input_gets_a_json_error_and_the_server_keeps_serving,
    forwarded_for_is_believed_only_from_a_trusted_proxy,
    rate_limit_answers_429_with_retry_after,
    sync_endpoints_need_the_token,
    sync_lists_acknowledges_and_takes_results,
    long_poll_returns_as_soon_as_a_request_arrives,
    published_crl_and_chain_round_trip,
    pending_requests_expire_after_the_pending_ttl,
    sigterm_stops_cleanly_and_a_restart_keeps_the_data,
);
