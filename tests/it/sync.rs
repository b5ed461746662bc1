//! `smsgate-ca sync`: the built binary against a fake sync API on 127.0.0.1 (to exercise
//! outages, garbage and lost acknowledgements on demand) and end to end against the real
//! `serve`. Nothing here contacts any other address.

#![allow(clippy::unwrap_used)] // Tests and their helpers may unwrap (STYLE §17).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{
    closed_port, cmd, code, names, run, status_record, stderr, stdout, wait_for, write_status,
    Fake, Req, Resp, TestCa,
};

const TOKEN: &str = "s3cret-sync-token";

/// What the fake sync API holds.
#[derive(Default)]
struct Api {
    pending: Vec<Value>,
    acked: BTreeSet<String>,
    results: Vec<Value>,
    published: BTreeMap<String, Vec<u8>>,
    /// When set, every call answers this status with an HTML page (an outage behind a proxy).
    down: Option<u16>,
}

fn envelope(id: &str, csr: &str) -> Value {
    json!({"request_id": id, "type": "webhook", "content": csr,
           "submitted_at": "2026-01-01T00:00:00Z", "metadata": {"source": "test"}})
}

fn fake_sync(api: Arc<Mutex<Api>>) -> Fake {
    Fake::start(move |req: &Req| {
        let mut api = api.lock().unwrap();
        if let Some(status) = api.down {
            return Resp::html(status);
        }
        if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return Resp::json(
                401,
                json!({"error": {"code": 401, "message": "missing or wrong token"}}),
            );
        }
        let path = req.path.as_str();
        match (req.method.as_str(), path) {
            ("GET", p) if p.starts_with("/api/v1/sync/requests") => {
                let list: Vec<Value> = api
                    .pending
                    .iter()
                    .filter(|e| !api.acked.contains(e["request_id"].as_str().unwrap()))
                    .cloned()
                    .collect();
                Resp::json(200, json!({ "requests": list }))
            }
            ("POST", "/api/v1/sync/ack") => {
                let ids: Vec<String> = serde_json::from_value(req.json()["ids"].clone()).unwrap();
                let n = ids.len();
                api.acked.extend(ids);
                Resp::json(200, json!({"acknowledged": n, "unknown": []}))
            }
            ("POST", "/api/v1/sync/results") => {
                let results = req.json()["results"].as_array().unwrap().clone();
                let ids: Vec<Value> = results.iter().map(|r| r["request_id"].clone()).collect();
                api.results.extend(results);
                Resp::json(
                    200,
                    json!({"updated": ids, "unchanged": [], "unknown": [], "conflicts": []}),
                )
            }
            ("PUT", p) if p.starts_with("/api/v1/sync/published/") => {
                let name = p.rsplit('/').next().unwrap().to_owned();
                api.published.insert(name, req.body.clone());
                Resp::empty(204)
            }
            _ => Resp::json(404, json!({"error": {"code": 404, "message": "no route"}})),
        }
    })
}

struct Env {
    dir: tempfile::TempDir,
    spool: PathBuf,
    token: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        Self { dir, spool, token }
    }

    fn sync(&self, url: &str) -> Command {
        let mut c = cmd(self.dir.path());
        c.arg("sync")
            .args(["--api", url, "--token-file"])
            .arg(&self.token)
            .arg("--spool")
            .arg(&self.spool)
            .args(["--timeout", "5s"]);
        c
    }

    fn incoming(&self) -> Vec<String> {
        names(&self.spool.join("incoming"))
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect()
    }
}

fn a_csr(dir: &Path, ip: &str) -> String {
    let o = run(cmd(dir).args(["csr", ip, "--out", "x.csr", "--keyout", "x.key", "--force"]));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    std::fs::read_to_string(dir.join("x.csr")).unwrap()
}

#[test]
fn one_round_delivers_acknowledges_and_never_delivers_twice() {
    let env = Env::new();
    let csr = a_csr(env.dir.path(), "192.168.1.10");
    let api = Arc::new(Mutex::new(Api::default()));
    api.lock().unwrap().pending = vec![envelope("req-1", &csr), envelope("req-2", &csr)];
    let fake = fake_sync(Arc::clone(&api));

    let o = run(&mut env.sync(&fake.url()));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("2 new request(s) delivered"),
        "{}",
        stdout(&o)
    );
    assert_eq!(env.incoming(), ["req-1.json", "req-2.json"]);
    let written: Value = serde_json::from_str(
        &std::fs::read_to_string(env.spool.join("incoming/req-1.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written["request_id"], "req-1");
    assert_eq!(written["type"], "webhook");
    assert_eq!(written["content"], csr.as_str());
    assert_eq!(written["metadata"]["source"], "test");
    assert_eq!(api.lock().unwrap().acked.len(), 2);

    // The API lost the acknowledgements (or sync crashed before sending them): the requests
    // are listed again, acknowledged again, and not written again.
    let before = std::fs::metadata(env.spool.join("incoming/req-1.json"))
        .unwrap()
        .modified()
        .unwrap();
    api.lock().unwrap().acked.clear();
    let o = run(&mut env.sync(&fake.url()));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("0 new request(s) delivered (2 already in the spool)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(api.lock().unwrap().acked.len(), 2);
    let after = std::fs::metadata(env.spool.join("incoming/req-1.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "the envelope was not rewritten");

    // The daemon has moved req-1 on; even without sync's markers it is not delivered again.
    std::fs::create_dir_all(env.spool.join("archive")).unwrap();
    std::fs::rename(
        env.spool.join("incoming/req-1.json"),
        env.spool.join("archive/req-1.json"),
    )
    .unwrap();
    std::fs::remove_dir_all(env.spool.join(".sync")).unwrap();
    api.lock().unwrap().acked.clear();
    let o = run(&mut env.sync(&fake.url()));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(env.incoming(), ["req-2.json"]);
    assert!(env.spool.join(".sync/delivered").is_dir());
}

#[test]
fn results_are_pushed_once_per_status() {
    let env = Env::new();
    let api = Arc::new(Mutex::new(Api::default()));
    let fake = fake_sync(Arc::clone(&api));
    write_status(&env.spool, &status_record("held-1", "pending", None));
    write_status(&env.spool, &status_record("deny-1", "denied", None));
    // Noise every spool reader ignores or survives.
    std::fs::write(env.spool.join("status/.x.json.tmp"), "partial").unwrap();
    std::fs::write(env.spool.join("status/junk.json"), "not json").unwrap();
    std::fs::write(env.spool.join("status/README"), "hello").unwrap();

    let o = run(&mut env.sync(&fake.url()));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("2 result(s) pushed"), "{}", stdout(&o));
    let statuses: Vec<(String, String)> = api
        .lock()
        .unwrap()
        .results
        .iter()
        .map(|r| {
            (
                r["request_id"].as_str().unwrap().into(),
                r["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("deny-1".into(), "denied".into()),
            ("held-1".into(), "pending".into())
        ]
    );

    // Nothing new: nothing pushed.
    let o = run(&mut env.sync(&fake.url()));
    assert!(stdout(&o).contains("0 result(s) pushed"), "{}", stdout(&o));
    assert_eq!(fake.count("POST", "/api/v1/sync/results"), 1);

    // The held request is approved by the operator: pushed again, now approved.
    write_status(
        &env.spool,
        &status_record("held-1", "approved", Some("-----BEGIN CERTIFICATE-----\n")),
    );
    let o = run(&mut env.sync(&fake.url()));
    assert!(stdout(&o).contains("1 result(s) pushed"), "{}", stdout(&o));
    let last = api.lock().unwrap().results.last().unwrap().clone();
    assert_eq!(last["request_id"], "held-1");
    assert_eq!(last["status"], "approved");
    assert!(env.spool.join(".sync/pushed/held-1.approved").exists());
}

#[test]
fn published_files_are_uploaded_when_they_change() {
    let env = Env::new();
    let api = Arc::new(Mutex::new(Api::default()));
    let fake = fake_sync(Arc::clone(&api));
    let published = env.spool.join("published");
    std::fs::create_dir(&published).unwrap();
    std::fs::write(published.join("ca.crt"), "PEM chain").unwrap();
    std::fs::write(published.join("ca.crl"), [0x30, 0x82, 0x01]).unwrap();

    let o = run(&mut env.sync(&fake.url()));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("uploaded ca.crt, ca.crl"),
        "{}",
        stdout(&o)
    );
    assert_eq!(api.lock().unwrap().published["ca.crl"], [0x30, 0x82, 0x01]);

    let o = run(&mut env.sync(&fake.url()));
    assert!(
        stdout(&o).contains("published files unchanged"),
        "{}",
        stdout(&o)
    );
    assert_eq!(fake.count("PUT", "/api/v1/sync/published/"), 2);

    std::fs::write(published.join("ca.crl"), [0x30, 0x82, 0x02]).unwrap();
    std::fs::write(published.join("ledger-checkpoint.json"), "{}").unwrap();
    let o = run(&mut env.sync(&fake.url()));
    assert!(
        stdout(&o).contains("uploaded ca.crl, ledger-checkpoint.json"),
        "{}",
        stdout(&o)
    );
    assert_eq!(fake.count("PUT", "/api/v1/sync/published/ca.crt"), 1);
    let put = fake
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/ca.crl"))
        .unwrap();
    assert_eq!(put.header("content-type"), Some("application/pkix-crl"));
}

#[test]
fn an_unreachable_api_exits_1_with_a_clear_message() {
    let env = Env::new();
    write_status(&env.spool, &status_record("x1", "denied", None));
    let url = format!("http://127.0.0.1:{}/api/v1", closed_port());
    let start = Instant::now();
    let o = run(&mut env.sync(&url));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(
        stderr(&o).contains("cannot reach") && stderr(&o).contains("connection refused"),
        "{}",
        stderr(&o)
    );
    assert!(
        names(&env.spool.join(".sync/pushed")).is_empty(),
        "nothing recorded as pushed"
    );
}

#[test]
fn garbage_and_a_wrong_token_are_clear_errors() {
    let env = Env::new();
    let api = Arc::new(Mutex::new(Api::default()));
    let fake = fake_sync(Arc::clone(&api));
    api.lock().unwrap().down = Some(502);
    let o = run(&mut env.sync(&fake.url()));
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("502 with an HTML page"),
        "{}",
        stderr(&o)
    );
    api.lock().unwrap().down = None;

    std::fs::write(&env.token, "wrong\n").unwrap();
    let o = run(&mut env.sync(&fake.url()));
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("refused the sync token (401)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_configuration_exits_2() {
    let env = Env::new();
    let api = Arc::new(Mutex::new(Api::default()));
    let fake = fake_sync(Arc::clone(&api));
    std::fs::set_permissions(&env.token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(&mut env.sync(&fake.url()));
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    assert_eq!(fake.requests().len(), 0, "nothing sent with a loose token");
    let o = run(env.sync(&fake.url()).arg("--allow-loose-permissions"));
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    let o = run(cmd(env.dir.path())
        .args(["sync", "--token-file"])
        .arg(&env.token));
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--api"), "{}", stderr(&o));
    let o = run(cmd(env.dir.path())
        .args([
            "sync",
            "--api",
            &fake.url(),
            "--spool",
            "nope",
            "--token-file",
        ])
        .arg(&env.token)
        .arg("--allow-loose-permissions"));
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("spool directory nope"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_unwritable_spool_is_an_error_and_nothing_is_lost() {
    let env = Env::new();
    let csr = a_csr(env.dir.path(), "192.168.1.11");
    let api = Arc::new(Mutex::new(Api::default()));
    api.lock().unwrap().pending = vec![envelope("req-9", &csr)];
    let fake = fake_sync(Arc::clone(&api));
    // `incoming` is not a directory: every write fails (root ignores file modes, so a
    // read-only directory would not do in CI).
    std::fs::write(env.spool.join("incoming"), "in the way").unwrap();
    let o = run(&mut env.sync(&fake.url()));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot write") && stderr(&o).contains("req-9.json"),
        "{}",
        stderr(&o)
    );
    assert!(
        api.lock().unwrap().acked.is_empty(),
        "not acknowledged before it is durable"
    );

    std::fs::remove_file(env.spool.join("incoming")).unwrap();
    let o = run(&mut env.sync(&fake.url()));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(env.incoming(), ["req-9.json"]);
    assert!(api.lock().unwrap().acked.contains("req-9"));
}

fn terminate(child: &mut Child) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
}

fn wait_exit(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "sync did not stop in time: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn watch_forwards_both_ways_survives_an_outage_and_stops_on_sigterm() {
    let env = Env::new();
    let csr = a_csr(env.dir.path(), "192.168.1.12");
    let api = Arc::new(Mutex::new(Api::default()));
    let fake = fake_sync(Arc::clone(&api));
    std::fs::create_dir(env.spool.join("status")).unwrap();
    let log = std::fs::File::create(env.dir.path().join("sync.log")).unwrap();
    let child = env
        .sync(&fake.url())
        .args(["--watch", "--interval", "1s"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut child = child;

    // A request arriving at the API reaches incoming/.
    api.lock().unwrap().pending.push(envelope("w-1", &csr));
    wait_for("w-1 in incoming/", Duration::from_secs(10), || {
        env.incoming() == ["w-1.json"]
    });
    // A result appearing in status/ reaches the API within a moment (inotify).
    let t = Instant::now();
    write_status(&env.spool, &status_record("w-1", "denied", None));
    wait_for("the result pushed", Duration::from_secs(5), || {
        api.lock()
            .unwrap()
            .results
            .iter()
            .any(|r| r["request_id"] == "w-1")
    });
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );

    // An outage: the API answers 503 pages; results and requests wait, then go through.
    api.lock().unwrap().down = Some(503);
    write_status(&env.spool, &status_record("w-0", "pending", None));
    std::thread::sleep(Duration::from_secs(2));
    {
        let mut api = api.lock().unwrap();
        api.pending.push(envelope("w-2", &csr));
        api.down = None;
    }
    wait_for("w-2 after the outage", Duration::from_secs(40), || {
        env.incoming().contains(&"w-2.json".to_owned())
    });
    wait_for("w-0 after the outage", Duration::from_secs(40), || {
        api.lock()
            .unwrap()
            .results
            .iter()
            .any(|r| r["request_id"] == "w-0")
    });

    terminate(&mut child);
    let o = wait_exit(child, Duration::from_secs(10));
    let log = std::fs::read_to_string(env.dir.path().join("sync.log")).unwrap();
    assert_eq!(code(&o), 0, "{log}");
    assert!(log.contains("503") && log.contains("retrying"), "{log}");
    assert!(log.contains("sync stopped"), "{log}");
    // Each result was pushed once.
    let pushed: Vec<String> = api
        .lock()
        .unwrap()
        .results
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        pushed.iter().filter(|i| *i == "w-1").count(),
        1,
        "{pushed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// End to end with the real `serve`.

struct Serve {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Serve {
    /// Starts `serve --listen 127.0.0.1:0` pinned to `ca`; `None` when this build has no
    /// `serve` yet.
    fn start(token: &Path, ca: &TestCa) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_smsgate-ca"))
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--policy")
            .arg(repo.join("policy/default.toml"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--rate-limit",
                "0",
                "--sync-token-file",
            ])
            .arg(token)
            .arg("--ca-chain")
            .arg(ca.dir.path().join("ca.crt"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                let port = line
                    .strip_prefix("listening on 127.0.0.1:")
                    .and_then(|p| p.trim().parse().ok())
                    .unwrap_or_else(|| panic!("unexpected first line of serve: {line:?}"));
                Some(Self {
                    child,
                    port,
                    _dir: dir,
                })
            }
            Err(_) => {
                let _ = child.kill();
                let o = child.wait_with_output().unwrap();
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(
                    err.contains("not implemented"),
                    "serve did not start: {err}"
                );
                None
            }
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1", self.port)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> ureq::Agent {
    // Plain http:// on loopback only: no TLS, so the default roots are never consulted.
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .proxy(None)
        .build()
        .new_agent()
}

#[test]
fn end_to_end_with_serve() {
    let env = Env::new();
    let ca = TestCa::new();
    let Some(serve) = Serve::start(&env.token, &ca) else {
        eprintln!("serve is not implemented in this build: end_to_end_with_serve skipped");
        return;
    };
    let agent = http();
    let csr = a_csr(env.dir.path(), "192.168.1.20");
    let mut answer = agent
        .post(format!("{}/csr", serve.url()))
        .content_type("application/json")
        .send(json!({"content": csr}).to_string())
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    let posted: Value = answer.body_mut().read_json().unwrap();
    let id = posted["request_id"].as_str().unwrap().to_owned();

    // One round: the request becomes an envelope in incoming/.
    let o = run(&mut env.sync(&serve.url()));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("1 new request(s) delivered"),
        "{}",
        stdout(&o)
    );
    assert_eq!(env.incoming(), [format!("{id}.json")]);
    let written: Value = serde_json::from_str(
        &std::fs::read_to_string(env.spool.join(format!("incoming/{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(written["content"], csr.as_str());
    assert_eq!(written["type"], "webhook");

    // Twice: nothing duplicated (the API no longer lists it).
    let o = run(&mut env.sync(&serve.url()));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("0 new request(s) delivered"),
        "{}",
        stdout(&o)
    );
    assert_eq!(env.incoming().len(), 1);

    // The test plays the signer: an approval with a certificate made by openssl.
    let cert = ca.sign(&csr);
    let mut record = status_record(&id, "approved", Some(&cert));
    record["message"] = json!("certificate issued for 192.168.1.20");
    write_status(&env.spool, &record);
    let o = run(&mut env.sync(&serve.url()));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("1 result(s) pushed"), "{}", stdout(&o));
    let mut got = agent
        .get(format!("{}/csr/{id}", serve.url()))
        .call()
        .unwrap();
    assert_eq!(got.status().as_u16(), 200);
    let got: Value = got.body_mut().read_json().unwrap();
    assert_eq!(got["status"], "approved", "{got}");
    assert_eq!(got["certificate"].as_str().unwrap().trim(), cert.trim());

    // Again: nothing to push.
    let o = run(&mut env.sync(&serve.url()));
    assert!(stdout(&o).contains("0 result(s) pushed"), "{}", stdout(&o));

    // The client sees the certificate through `status`.
    let o = run(cmd(env.dir.path()).args(["status", &id, "--ca-url", &serve.url()]));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("approved"), "{}", stdout(&o));

    // API down: exit 1 with a clear message.
    let url = serve.url();
    drop(serve);
    let o = run(&mut env.sync(&url));
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
}

#[test]
fn watch_with_serve_forwards_within_a_moment_and_stops_while_long_polling() {
    let env = Env::new();
    let ca = TestCa::new();
    let Some(serve) = Serve::start(&env.token, &ca) else {
        eprintln!("serve is not implemented in this build: test skipped");
        return;
    };
    std::fs::create_dir(env.spool.join("status")).unwrap();
    let log = std::fs::File::create(env.dir.path().join("sync.log")).unwrap();
    let mut child = env
        .sync(&serve.url())
        .arg("--watch")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Let the first long poll start.
    std::thread::sleep(Duration::from_millis(500));

    let agent = http();
    let csr = a_csr(env.dir.path(), "192.168.1.21");
    let t = Instant::now();
    let mut answer = agent
        .post(format!("{}/csr", serve.url()))
        .content_type("application/json")
        .send(json!({"content": csr, "type": "private_server"}).to_string())
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    let id = answer.body_mut().read_json::<Value>().unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for("the envelope", Duration::from_secs(10), || {
        env.incoming() == [format!("{id}.json")]
    });
    let pulled = t.elapsed();

    let t = Instant::now();
    write_status(&env.spool, &status_record(&id, "denied", None));
    wait_for("the denial at the API", Duration::from_secs(10), || {
        let mut got = agent
            .get(format!("{}/csr/{id}", serve.url()))
            .call()
            .unwrap();
        got.body_mut().read_json::<Value>().unwrap()["status"] == "denied"
    });
    let pushed = t.elapsed();
    assert!(
        pulled < Duration::from_secs(2) && pushed < Duration::from_secs(2),
        "pull {pulled:?}, push {pushed:?}"
    );

    // SIGTERM while a long poll is in flight: a prompt, clean exit.
    let t = Instant::now();
    terminate(&mut child);
    let o = wait_exit(child, Duration::from_secs(10));
    let log = std::fs::read_to_string(env.dir.path().join("sync.log")).unwrap();
    assert_eq!(code(&o), 0, "{log}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    eprintln!("watch with serve: request pulled in {pulled:?}, result pushed in {pushed:?}");
}
