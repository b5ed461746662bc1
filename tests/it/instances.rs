//! Issue 10, several `serve` instances on one PostgreSQL database (DESIGN §5, Storage): one
//! state on all of them, a long-poll on one woken by a POST to another, one shared rate
//! limit, instances started together on an empty database, and nothing acknowledged lost
//! when an instance is killed mid-load.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::pg::{on_postgres, Cluster};
use crate::serve::{agent, good_csr, write_private, Reply, Server, TOKEN};

fn id_of(r: Reply) -> String {
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    r.json()["request_id"].as_str().unwrap().to_owned()
}

#[test]
fn issue_10_two_instances_serve_one_state() {
    on_postgres(|| {
        let a = Server::start(&["--rate-limit", "2/min"]);
        let b = Server::start_beside(&a, &["--rate-limit", "2/min"]);
        let csr = good_csr(a.dir.path());

        // Posted to A, readable on B at once; listed, acknowledged and answered through B.
        let id = id_of(a.submit(&csr, None));
        assert_eq!(
            b.get(&format!("/api/v1/csr/{id}")).json()["status"],
            "pending"
        );
        let list = b.sync_get("/api/v1/sync/requests").json();
        assert_eq!(list["requests"][0]["request_id"], id.as_str(), "{list}");
        b.sync_post("/api/v1/sync/ack", &json!({ "ids": [id] }));
        assert_eq!(
            a.sync_get("/api/v1/sync/requests").json()["requests"],
            json!([])
        );
        let cert = a.issue(&csr, "192.168.1.10");
        let record = json!({"request_id": id, "type": "webhook", "status": "approved",
            "message": "issued", "reason": null, "certificate": cert, "serial": null,
            "not_before": null, "not_after": null, "fingerprint_sha256": null,
            "decided_at": "2026-01-01T00:00:00Z"});
        let r = b.sync_post("/api/v1/sync/results", &json!({ "results": [record] }));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            a.get(&format!("/api/v1/csr/{id}")).json()["status"],
            "approved"
        );

        // The rate limit (2/min) is counted in the database: A and B together allow 2.
        let second = a.submit(&csr, None).status;
        let third = b.submit(&csr, None);
        assert_eq!(second, 202);
        third.error(429);
        a.submit(&csr, None).error(429);

        // Drain what is pending first, so that the poll waits.
        let pending = b.sync_get("/api/v1/sync/requests").json();
        let ids: Vec<Value> = pending["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["request_id"].clone())
            .collect();
        b.sync_post("/api/v1/sync/ack", &json!({ "ids": ids }));
        // A long-poll on B wakes within a moment of a POST to another instance (LISTEN/NOTIFY).
        let url = b.url("/api/v1/sync/requests?wait=30");
        let poll = std::thread::spawn(move || {
            let t = Instant::now();
            let mut r = agent()
                .get(url)
                .header("Authorization", format!("Bearer {TOKEN}"))
                .call()
                .unwrap();
            (r.body_mut().read_json::<Value>().unwrap(), t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(1500));
        let c = Server::start_beside(&a, &[]);
        let posted = Instant::now();
        let new_id = id_of(c.submit(&csr, None));
        let (list, _) = poll.join().unwrap();
        let woke_after = posted.elapsed();
        let listed: Vec<&str> = list["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["request_id"].as_str().unwrap())
            .collect();
        assert!(listed.contains(&new_id.as_str()), "{list}");
        assert!(
            woke_after < Duration::from_secs(3),
            "woke after {woke_after:?}"
        );

        // Each instance has its own /health and /metrics, naming the database.
        for s in [&a, &b] {
            let h = s.get("/health").json();
            assert_eq!(h["database"], "ok", "{h}");
            assert_eq!(h["database_backend"], "postgresql", "{h}");
            assert_eq!(s.get("/metrics").status, 200);
        }
    });
}

#[test]
fn issue_10_three_instances_start_together_on_an_empty_database() {
    let url = Cluster::get().new_database();
    let first = tempfile::tempdir().unwrap();
    crate::serve::pinned_ca(first.path());
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            let state = first.path().join("state");
            std::thread::spawn(move || {
                let dir = tempfile::tempdir().unwrap();
                std::fs::create_dir_all(dir.path().join("state")).unwrap();
                for f in ["ca.crt", "root.crt", "ca.key", "root.key", "chain.pem"] {
                    std::fs::copy(state.join(f), dir.path().join("state").join(f)).unwrap();
                }
                Server::start_in(dir, &["--db", &url])
            })
        })
        .collect();
    let servers: Vec<Server> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let csr = good_csr(servers[0].dir.path());
    let ids: Vec<String> = servers
        .iter()
        .map(|s| id_of(s.submit(&csr, None)))
        .collect();
    for s in &servers {
        for id in &ids {
            assert_eq!(s.get(&format!("/api/v1/csr/{id}")).status, 200);
        }
    }
    let db = url.rsplit('/').next().unwrap();
    let out = Command::new("psql")
        .args(["-X", "-t", "-A", "-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(Cluster::get().port.to_string())
        .args([
            "-d",
            db,
            "-c",
            "SELECT COUNT(*), MAX(version) FROM schema_version",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1|2",
        "the migrations ran once: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn issue_10_an_instance_killed_mid_load_loses_nothing_it_acknowledged() {
    on_postgres(|| {
        let a = Server::start(&[]);
        let mut b = Server::start_beside(&a, &[]);
        let csr = std::fs::read_to_string(good_csr(a.dir.path())).unwrap();
        let urls = [a.url("/api/v1/csr"), b.url("/api/v1/csr")];
        let acked = Arc::new(Mutex::new(Vec::<String>::new()));
        let sent = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let (urls, acked, sent, csr) = (
                    urls.clone(),
                    Arc::clone(&acked),
                    Arc::clone(&sent),
                    csr.clone(),
                );
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(20)))
                        .build()
                        .into();
                    for i in 0..25 {
                        let url = &urls[(w + i) % 2];
                        sent.fetch_add(1, Ordering::SeqCst);
                        let answer = agent
                            .post(url)
                            .content_type("application/json")
                            .send(json!({ "content": csr }).to_string());
                        // A killed instance answers nothing: that POST was not acknowledged.
                        let Ok(mut r) = answer else { continue };
                        if r.status().as_u16() == 202 {
                            let v: Value = r.body_mut().read_json().unwrap();
                            acked
                                .lock()
                                .unwrap()
                                .push(v["request_id"].as_str().unwrap().to_owned());
                        }
                    }
                })
            })
            .collect();
        while sent.load(Ordering::SeqCst) < 100 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut child = b.child.take().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for w in workers {
            w.join().unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        assert!(acked.len() >= 100, "only {} acknowledged", acked.len());

        // The signer's side, for real: sync through A, `process` signs, sync pushes back.
        let dir = a.dir.path();
        let spool = dir.join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        let token = dir.join("sync-token");
        write_private(&token, &format!("{TOKEN}\n"));
        let api = a.url("/api/v1");
        let bin = env!("CARGO_BIN_EXE_smsgate-ca");
        let sync = || {
            let o = Command::new(bin)
                .args(["sync", "--max-pull", "1000", "--api", &api, "--token-file"])
                .arg(&token)
                .arg("--spool")
                .arg(&spool)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        };
        sync();
        let o = Command::new(bin)
            .arg("process")
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--spool")
            .arg(&spool)
            .arg("--policy")
            .arg(crate::serve::repo().join("policy/default.toml"))
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        sync();
        for id in &acked {
            let g = a.get(&format!("/api/v1/csr/{id}")).json();
            assert_eq!(g["status"], "approved", "{id}: {g}");
        }
    });
}

/// The example drop-in for PostgreSQL (systemd/smsgate-ca-serve.postgres.conf): its command
/// line parses with the real CLI, and its password comes from a credential, never argv.
#[test]
fn issue_10_the_postgres_drop_in_parses() {
    use clap::Parser as _;
    let text = std::fs::read_to_string(
        crate::serve::repo().join("systemd/smsgate-ca-serve.postgres.conf"),
    )
    .unwrap();
    let exec = text
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .find(|l| !l.is_empty())
        .expect("an ExecStart= line");
    let argv: Vec<&str> = exec
        .replace("%d", "/run/credentials/smsgate-ca-serve.service")
        .split_whitespace()
        .map(|s| Box::leak(s.to_owned().into_boxed_str()) as &str)
        .collect();
    smsgate_ca::cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{exec}\n{e}"));
    assert!(exec.contains("--db-password-file %d/db-password"), "{exec}");
    assert!(exec.contains("--ca-chain"), "{exec}");
    assert!(text.contains("LoadCredential=db-password:"), "{text}");
}
