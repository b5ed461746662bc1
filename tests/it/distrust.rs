//! Issue 16, the client and `sync`: each finding of the review, reproduced with a hostile API on
//! 127.0.0.1 (the `Fake` server of `client.rs`) or a hostile spool, must now be refused.
//! Nothing here contacts any other address: the `http://` refusal uses TEST-NET-1
//! (192.0.2.1) and must fail before a packet is sent.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509Req, X509};
use serde_json::json;

use crate::client::{cmd, code, names, run, stderr, stdout, wait_for, Fake, Req, Resp, TestCa};

/// What a forged leaf looks like.
#[derive(Clone)]
struct Forgery {
    /// Days from now: validity start and end.
    from: i64,
    to: i64,
    ca: bool,
    server_auth: bool,
    /// SAN entries: `IP:…`, `DNS:…`; `None` copies the CSR's IP.
    sans: Option<Vec<&'static str>>,
    /// Another key instead of the CSR's.
    other_key: bool,
}

impl Default for Forgery {
    fn default() -> Self {
        Self {
            from: -1,
            to: 30,
            ca: false,
            server_auth: true,
            sans: None,
            other_key: false,
        }
    }
}

fn load_ca(ca: &TestCa) -> (X509, PKey<Private>) {
    let cert = X509::from_pem(&std::fs::read(ca.dir.path().join("ca.crt")).unwrap()).unwrap();
    let key =
        PKey::private_key_from_pem(&std::fs::read(ca.dir.path().join("ca.key")).unwrap()).unwrap();
    (cert, key)
}

/// Signs a leaf for the CSR with `issuer` as `f` says; returns leaf PEM + issuer PEM.
fn forge(csr_pem: &str, issuer: &(X509, PKey<Private>), f: &Forgery) -> String {
    let req = X509Req::from_pem(csr_pem.as_bytes()).unwrap();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = openssl::bn::BigNum::from_u32(rand::random::<u32>() | 1).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(req.subject_name()).unwrap();
    b.set_issuer_name(issuer.0.subject_name()).unwrap();
    let key: PKey<openssl::pkey::Public> = if f.other_key {
        let group =
            openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let other = PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
        PKey::public_key_from_der(&other.public_key_to_der().unwrap()).unwrap()
    } else {
        req.public_key().unwrap()
    };
    b.set_pubkey(&key).unwrap();
    let now = chrono::Utc::now().timestamp();
    b.set_not_before(&Asn1Time::from_unix(now + f.from * 86_400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + f.to * 86_400).unwrap())
        .unwrap();
    let mut bc = BasicConstraints::new();
    bc.critical();
    if f.ca {
        bc.ca();
    }
    b.append_extension(bc.build().unwrap()).unwrap();
    if f.server_auth {
        b.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
            .unwrap();
    } else {
        b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
            .unwrap();
    }
    let mut san = SubjectAlternativeName::new();
    match &f.sans {
        None => {
            san.ip("192.168.1.10");
        }
        Some(list) => {
            for s in list {
                match s.split_once(':').unwrap() {
                    ("IP", ip) => san.ip(ip),
                    ("DNS", d) => san.dns(d),
                    _ => unreachable!(),
                };
            }
        }
    }
    let san = san.build(&b.x509v3_context(Some(&issuer.0), None)).unwrap();
    b.append_extension(san).unwrap();
    b.sign(&issuer.1, MessageDigest::sha256()).unwrap();
    let leaf = b.build();
    format!(
        "{}{}",
        String::from_utf8(leaf.to_pem().unwrap()).unwrap(),
        String::from_utf8(issuer.0.to_pem().unwrap()).unwrap()
    )
}

/// A hostile CA API: POST /csr is accepted; GET /csr/{id} answers `approve(id, csr)`;
/// GET /ca.crt answers `chain`.
fn hostile_api(
    chain: String,
    approve: impl Fn(&str, &str) -> serde_json::Value + Send + Sync + 'static,
) -> Fake {
    let csrs: Mutex<Vec<String>> = Mutex::new(Vec::new());
    Fake::start(move |req: &Req| {
        if req.method == "POST" && req.path == "/api/v1/csr" {
            csrs.lock()
                .unwrap()
                .push(req.json()["content"].as_str().unwrap().to_owned());
            return Resp::json(
                202,
                json!({"request_id": "req1", "type": "webhook", "status": "pending",
                       "message": "queued"}),
            );
        }
        if req.path == "/api/v1/ca.crt" {
            return Resp {
                status: 200,
                content_type: "application/x-pem-file",
                extra: vec![],
                body: chain.clone().into_bytes(),
            };
        }
        if req.path == "/api/v1/csr/req1" {
            let csr = csrs.lock().unwrap()[0].clone();
            return Resp::json(200, approve("req1", &csr));
        }
        Resp::json(404, json!({"error": {"code": 404, "message": "no route"}}))
    })
}

fn approved(id: &str, certificate: &str) -> serde_json::Value {
    json!({"request_id": id, "type": "webhook", "status": "approved",
           "message": "certificate issued", "certificate": certificate})
}

fn webhooks(dir: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    run(cmd(dir)
        .args([
            "webhooks",
            "--ca-url",
            url,
            "--poll-interval",
            "100ms",
            "--timeout",
            "20s",
        ])
        .args(extra)
        .arg("192.168.1.10"))
}

#[test]
fn issue_16_the_client_refuses_every_forgery_and_keeps_the_old_pair() {
    let real = Arc::new(TestCa::new());
    let evil = TestCa::new();
    let real_root = real.dir.path().join("ca.crt");
    let root_pem = std::fs::read_to_string(&real_root).unwrap();
    let evil_ca = load_ca(&evil);
    let real_ca = load_ca(&real);

    type Make = Box<dyn Fn(&str) -> String + Send + Sync>;
    let cases: Vec<(&str, Make)> = vec![
        ("another root", {
            let e = (evil_ca.0.clone(), evil_ca.1.clone());
            Box::new(move |csr| forge(csr, &e, &Forgery::default()))
        }),
        ("expired", {
            let r = (real_ca.0.clone(), real_ca.1.clone());
            Box::new(move |csr| {
                forge(
                    csr,
                    &r,
                    &Forgery {
                        from: -30,
                        to: -1,
                        ..Forgery::default()
                    },
                )
            })
        }),
        ("a CA", {
            let r = (real_ca.0.clone(), real_ca.1.clone());
            Box::new(move |csr| {
                forge(
                    csr,
                    &r,
                    &Forgery {
                        ca: true,
                        ..Forgery::default()
                    },
                )
            })
        }),
        ("no serverAuth", {
            let r = (real_ca.0.clone(), real_ca.1.clone());
            Box::new(move |csr| {
                forge(
                    csr,
                    &r,
                    &Forgery {
                        server_auth: false,
                        ..Forgery::default()
                    },
                )
            })
        }),
        ("a DNS name besides", {
            let r = (real_ca.0.clone(), real_ca.1.clone());
            Box::new(move |csr| {
                let sans = Some(vec!["IP:192.168.1.10", "DNS:*.google.com"]);
                forge(
                    csr,
                    &r,
                    &Forgery {
                        sans,
                        ..Forgery::default()
                    },
                )
            })
        }),
        ("another key", {
            let r = (real_ca.0.clone(), real_ca.1.clone());
            Box::new(move |csr| {
                forge(
                    csr,
                    &r,
                    &Forgery {
                        other_key: true,
                        ..Forgery::default()
                    },
                )
            })
        }),
        ("a private key block", {
            let r = (real_ca.0.clone(), real_ca.1.clone());
            Box::new(move |csr| {
                format!(
                    "{}-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
                    forge(csr, &r, &Forgery::default())
                )
            })
        }),
    ];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.crt"), "old cert\n").unwrap();
    std::fs::write(dir.path().join("server.key"), "old key\n").unwrap();
    for (what, make) in cases {
        let fake = hostile_api(root_pem.clone(), move |id, csr| approved(id, &make(csr)));
        let o = webhooks(
            dir.path(),
            &fake.url(),
            &["--force", "--ca-file", real_root.to_str().unwrap()],
        );
        assert_eq!(code(&o), 1, "{what}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("nothing was written"),
            "{what}: {}",
            stderr(&o)
        );
        assert!(!stdout(&o).contains("valid until"), "{what}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("server.crt")).unwrap(),
            "old cert\n",
            "{what}: the working pair stays"
        );
        assert_eq!(names(dir.path()), ["server.crt", "server.key"], "{what}");
    }

    // Trust on first use: without --ca-file, the chain the API publishes is used, with a
    // warning; junk and escapes around the certificates are not written.
    let r = (real_ca.0.clone(), real_ca.1.clone());
    let fake = hostile_api(root_pem.clone(), move |id, csr| {
        let chain = forge(csr, &r, &Forgery::default());
        approved(
            id,
            &format!("\x1b[31mjunk\x1b]0;title\x07\n{chain}trailing text\n"),
        )
    });
    let out = tempfile::tempdir().unwrap();
    let o = webhooks(out.path(), &fake.url(), &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("trust"),
        "a TOFU warning: {}",
        stderr(&o)
    );
    let written = std::fs::read_to_string(out.path().join("server.crt")).unwrap();
    assert!(
        !written.contains("junk") && !written.contains('\x1b'),
        "{written:?}"
    );
    assert!(!written.contains("trailing"), "{written:?}");
    assert_eq!(written.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    let v = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&real_root)
        .arg(out.path().join("server.crt"))
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

#[test]
fn issue_16_a_poll_answer_for_another_request_is_refused() {
    let ca = Arc::new(TestCa::new());
    let root = std::fs::read_to_string(ca.dir.path().join("ca.crt")).unwrap();
    let c = Arc::clone(&ca);
    let fake = hostile_api(root, move |_, csr| approved("someone-else", &c.sign(csr)));
    let dir = tempfile::tempdir().unwrap();
    let o = webhooks(dir.path(), &fake.url(), &[]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("someone-else"), "{}", stderr(&o));
    assert!(names(dir.path()).is_empty());
}

#[test]
fn issue_16_server_text_reaches_the_terminal_escaped() {
    let fake = Fake::start(|req: &Req| {
        if req.method == "POST" {
            return Resp::json(
                400,
                json!({"error": {"code": 400, "reason": "ip_denied\x1b[2J",
                    "message": "no\n2026-01-01T00:00:00Z  INFO forged log line \x1b[31mred\x1b[0m"}}),
            );
        }
        Resp::json(404, json!({"error": {"code": 404, "message": "no"}}))
    });
    let dir = tempfile::tempdir().unwrap();
    let o = webhooks(dir.path(), &fake.url(), &[]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(!err.contains('\x1b'), "{err:?}");
    assert!(
        !err.contains("\n2026-01-01T00:00:00Z  INFO forged"),
        "{err:?}"
    );
    assert!(
        err.contains("\\n2026-01-01T00:00:00Z  INFO forged"),
        "{err:?}"
    );
    assert!(err.contains("\\u{1b}[31m"), "{err:?}");

    // `status` prints a server's message escaped too.
    let fake = Fake::start(|_: &Req| {
        Resp::json(
            200,
            json!({"request_id": "abc", "type": "webhook", "status": "pending",
                   "message": "waiting\r\x1b[2Kfake prompt$ "}),
        )
    });
    let o = run(cmd(dir.path()).args(["status", "abc", "--ca-url", &fake.url()]));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        !stdout(&o).contains('\x1b') && !stdout(&o).contains('\r'),
        "{:?}",
        stdout(&o)
    );
}

#[test]
fn issue_16_plain_http_to_another_host_is_refused_before_any_packet() {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let o = webhooks(dir.path(), "http://192.0.2.1/api/v1", &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--insecure-http"), "{}", stderr(&o));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "no connection was tried"
    );
    assert!(names(dir.path()).is_empty());

    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir(dir.path().join("spool")).unwrap();
    let o = run(cmd(dir.path())
        .args(["sync", "--api", "http://192.0.2.1/api/v1", "--token-file"])
        .arg(&token)
        .args(["--spool", "spool"]));
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--insecure-http"), "{}", stderr(&o));
}

#[test]
fn issue_16_same_file_in_two_spellings_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(cmd(dir.path()).args([
        "webhooks",
        "--ca-url",
        "http://127.0.0.1:9/api/v1",
        "--out",
        "./y.pem",
        "--keyout",
        "y.pem",
        "192.168.1.10",
    ]));
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot both be written"),
        "{}",
        stderr(&o)
    );
    assert!(names(dir.path()).is_empty());
}

#[test]
fn issue_16_a_fifo_reason_in_the_spool_does_not_hang_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let mut child = cmd(dir.path())
        .args(["webhooks", "--spool"])
        .arg(spool.path())
        .args([
            "--poll-interval",
            "100ms",
            "--timeout",
            "5s",
            "192.168.1.10",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let incoming = spool.path().join("incoming");
    let mut name = String::new();
    wait_for("the envelope", Duration::from_secs(20), || {
        name = names(&incoming)
            .into_iter()
            .find(|n| n.ends_with(".json") && !n.starts_with('.'))
            .unwrap_or_default();
        !name.is_empty()
    });
    // The "signer" rejects it, and the reason file is a FIFO nobody writes.
    let rejected = spool.path().join("rejected");
    std::fs::create_dir(&rejected).unwrap();
    nix::unistd::mkfifo(
        &rejected.join(format!("{name}.reason")),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();
    std::fs::rename(incoming.join(&name), rejected.join(&name)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the client hangs on a FIFO in rejected/");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    assert!(t.elapsed() < Duration::from_secs(15));
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("rejected"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// sync against a hostile list.

const TOKEN: &str = "hostile-list-token";

fn sync_env() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("spool")).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, token)
}

/// A sync API listing `items` (oldest first) until they are acknowledged.
fn listing(items: Vec<serde_json::Value>) -> Fake {
    let items = Arc::new(items);
    let acked = Mutex::new(std::collections::HashSet::<String>::new());
    Fake::start(
        move |req: &Req| match (req.method.as_str(), req.path.as_str()) {
            ("GET", p) if p.starts_with("/api/v1/sync/requests") => {
                let limit: usize = p
                    .split("limit=")
                    .nth(1)
                    .and_then(|v| v.split('&').next()?.parse().ok())
                    .unwrap_or(100);
                let acked = acked.lock().unwrap();
                let list: Vec<_> = items
                    .iter()
                    .filter(|e| !acked.contains(e["request_id"].as_str().unwrap()))
                    .take(limit)
                    .cloned()
                    .collect();
                Resp::json(200, json!({ "requests": list }))
            }
            ("POST", "/api/v1/sync/ack") => {
                let ids: Vec<String> = serde_json::from_value(req.json()["ids"].clone()).unwrap();
                acked.lock().unwrap().extend(ids);
                Resp::json(200, json!({"acknowledged": 0, "unknown": []}))
            }
            _ => Resp::json(404, json!({"error": {"code": 404, "message": "no route"}})),
        },
    )
}

fn envelope(id: &str, content: String) -> serde_json::Value {
    json!({"request_id": id, "type": "webhook", "content": content})
}

#[test]
fn issue_16_sync_applies_the_api_limits_to_what_it_pulls() {
    let (dir, token) = sync_env();
    let mut items = vec![envelope("huge", "A".repeat(15 * 1024 * 1024))];
    items.extend((0..300).map(|i| {
        envelope(
            &format!("r{i}"),
            "-----BEGIN CERTIFICATE REQUEST-----".into(),
        )
    }));
    // A listing that never shrinks (acknowledgements ignored), as a hostile API would.
    let fake = listing(items);
    let sync = |extra: &[&str]| {
        run(cmd(dir.path())
            .args(["sync", "--api", &fake.url(), "--token-file"])
            .arg(&token)
            .args(["--spool", "spool", "--timeout", "20s"])
            .args(extra))
    };
    let o = sync(&[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let incoming = dir.path().join("spool/incoming");
    let written = names(&incoming);
    assert_eq!(
        written.len(),
        100,
        "--max-pull 100 by default: {}",
        stdout(&o)
    );
    assert!(!written.contains(&"huge.json".to_owned()));
    let o = sync(&["--max-pull", "10"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(names(&incoming).len(), 110);
}

#[test]
fn issue_16_sync_watch_backs_off_on_items_it_cannot_use() {
    let (dir, token) = sync_env();
    let fake = listing(vec![
        json!({"request_id": "../escape", "type": "webhook", "content": "x"}),
        json!({"request_id": "bad\u{1b}[2J", "content": "x"}),
    ]);
    let log = std::fs::File::create(dir.path().join("sync.log")).unwrap();
    let mut child = cmd(dir.path())
        .args(["sync", "--watch", "--api", &fake.url(), "--token-file"])
        .arg(&token)
        .args(["--spool", "spool"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    let polls = fake.count("GET", "/api/v1/sync/requests");
    assert!((1..=8).contains(&polls), "{polls} polls in 5 s");
    let log = std::fs::read_to_string(dir.path().join("sync.log")).unwrap();
    let warnings = log.matches("skipping a request").count();
    assert!(warnings <= 2, "{warnings} warnings:\n{log}");
    assert!(!log.contains('\x1b'), "{log:?}");
    assert!(names(&dir.path().join("spool/incoming")).is_empty());
}
