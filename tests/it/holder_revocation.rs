//! Issue 10, revocation by the certificate's holder (DESIGN §5, §9): `POST/GET
//! /api/v1/revocations`, `sync` carrying the request to the spool as
//! `incoming/<id>.revoke.json` and the signer's record back, and the client's
//! `revoke-request`. Proofs in the tests are made with the openssl CLI, as the DESIGN
//! documents, independently of our code.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::client::{cmd, code, stderr, stdout, wait_for};
use crate::serve::{issue_with, make_csr, openssl, write_private, Server, TOKEN};

/// A leaf from the server's pinned CA for a fresh key: (cert path, key path, serial hex).
fn holder(server: &Server, name: &str) -> (PathBuf, PathBuf, String) {
    let dir = server.dir.path();
    let csr = make_csr(dir, name, "x", "IP:192.168.1.30");
    let chain = issue_with(dir, &csr, "IP:192.168.1.30", "30");
    let cert = dir.join(format!("{name}.crt"));
    std::fs::write(&cert, chain).unwrap();
    let serial = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let serial = String::from_utf8(serial.stdout)
        .unwrap()
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    assert_eq!(serial.len(), 32, "{serial}");
    (cert, dir.join(format!("{name}.key")), serial)
}

/// `printf 'smsgate-ca revocation v1\n<serial>\n<reason>\n' | openssl dgst -sha256 -sign key |
/// base64 -w0`, as DESIGN §9 documents.
fn proof(dir: &Path, key: &Path, serial: &str, reason: &str) -> String {
    let msg = dir.join("proof.msg");
    std::fs::write(
        &msg,
        format!("smsgate-ca revocation v1\n{serial}\n{reason}\n"),
    )
    .unwrap();
    let sig = dir.join("proof.sig");
    openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-sign",
            key.to_str().unwrap(),
            "-out",
            sig.to_str().unwrap(),
            msg.to_str().unwrap(),
        ],
    );
    let out = Command::new("openssl")
        .args(["base64", "-A", "-in"])
        .arg(&sig)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn post(server: &Server, cert: &Path, reason: &str, proof: &str) -> crate::serve::Reply {
    server.post_json(
        "/api/v1/revocations",
        &json!({"certificate": std::fs::read_to_string(cert).unwrap(), "reason": reason,
                "proof": proof}),
    )
}

fn issue_10_revocation_requests_are_checked_at_once() {
    let server = Server::start(&[]);
    let dir = server.dir.path();
    let (cert, key, serial) = holder(&server, "holder");
    let good = proof(dir, &key, &serial, "keyCompromise");

    // A bad reason, another reason's proof, another key's proof: 400 at once.
    assert_eq!(
        post(&server, &cert, "whenever", &good).error(400)["reason"],
        "bad_reason"
    );
    let other_reason = proof(dir, &key, &serial, "superseded");
    assert_eq!(
        post(&server, &cert, "keyCompromise", &other_reason).error(400)["reason"],
        "bad_proof"
    );
    let (_, other_key, _) = holder(&server, "other");
    let stolen = proof(dir, &other_key, &serial, "keyCompromise");
    assert_eq!(
        post(&server, &cert, "keyCompromise", &stolen).error(400)["reason"],
        "bad_proof"
    );
    assert_eq!(
        post(&server, &cert, "keyCompromise", "not base64!").error(400)["reason"],
        "bad_proof"
    );
    // A certificate this CA did not issue (a self-signed one for the same key).
    let foreign = dir.join("foreign.crt");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            key.to_str().unwrap(),
            "-subj",
            "/CN=x",
            "-set_serial",
            &format!("0x{serial}"),
            "-days",
            "30",
            "-out",
            foreign.to_str().unwrap(),
        ],
    );
    assert_eq!(
        post(&server, &foreign, "keyCompromise", &good).error(400)["reason"],
        "unknown_certificate"
    );

    // The real thing: 202, then pending, listed for sync.
    let r = post(&server, &cert, "keyCompromise", &good);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["status"], "pending");
    let id = v["request_id"].as_str().unwrap().to_owned();
    let g = server.get(&format!("/api/v1/revocations/{id}")).json();
    assert_eq!(g["status"], "pending", "{g}");
    assert_eq!(g["serial"], serial.as_str());
    let list = server.sync_get("/api/v1/sync/requests").json();
    assert_eq!(
        list["revocations"],
        json!([{"request_id": id, "serial": serial, "reason": "keyCompromise", "proof": good}]),
        "{list}"
    );
    server.get("/api/v1/revocations/NoSuchId").error(404);
    server.get("/api/v1/revocations/..%2Fx").error(400);

    // Both routes are in the OpenAPI document.
    let doc = server.get("/api/v1/openapi.json").json();
    assert!(doc["paths"]["/api/v1/revocations"]["post"].is_object());
    assert!(doc["paths"]["/api/v1/revocations/{id}"]["get"].is_object());
}

fn issue_10_revoke_request_through_serve_and_sync() {
    let server = Server::start(&[]);
    let dir = server.dir.path();
    let (cert, key, serial) = holder(&server, "holder");
    let spool = dir.join("spool");
    std::fs::create_dir(&spool).unwrap();
    let token = dir.join("sync-token");
    write_private(&token, &format!("{TOKEN}\n"));
    let api = server.url("/api/v1");

    // The holder asks; it waits for the signer's answer.
    let client = cmd(dir)
        .args(["revoke-request"])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args([
            "--reason",
            "keyCompromise",
            "--ca-url",
            &api,
            "--timeout",
            "60s",
        ])
        .args(["--poll-interval", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sync = || {
        let o = cmd(dir)
            .args(["sync", "--api", &api, "--token-file"])
            .arg(&token)
            .arg("--spool")
            .arg(&spool)
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        o
    };
    // sync carries it to the spool in exactly DESIGN §9's form.
    let incoming = spool.join("incoming");
    let mut file = PathBuf::new();
    wait_for(
        "the revocation request in incoming/",
        Duration::from_secs(30),
        || {
            sync();
            match crate::client::names(&incoming)
                .into_iter()
                .find(|n| n.ends_with(".revoke.json"))
            {
                Some(n) => {
                    file = incoming.join(n);
                    true
                }
                None => false,
            }
        },
    );
    let id = file
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches(".revoke.json")
        .to_owned();
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(
        written.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["proof", "reason", "serial"]
    );
    assert_eq!(written["serial"], serial.as_str());
    assert_eq!(written["reason"], "keyCompromise");
    // The proof verifies with the certificate's key (openssl, not our code).
    let sig = dir.join("carried.sig");
    let b64 = dir.join("carried.b64");
    std::fs::write(&b64, format!("{}\n", written["proof"].as_str().unwrap())).unwrap();
    openssl(
        dir,
        &[
            "base64",
            "-d",
            "-A",
            "-in",
            b64.to_str().unwrap(),
            "-out",
            sig.to_str().unwrap(),
        ],
    );
    let msg = dir.join("carried.msg");
    std::fs::write(
        &msg,
        format!("smsgate-ca revocation v1\n{serial}\nkeyCompromise\n"),
    )
    .unwrap();
    let pubkey = dir.join("holder.pub");
    openssl(
        dir,
        &[
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-out",
            pubkey.to_str().unwrap(),
        ],
    );
    openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-verify",
            pubkey.to_str().unwrap(),
            "-signature",
            sig.to_str().unwrap(),
            msg.to_str().unwrap(),
        ],
    );
    // A second round does not deliver it again.
    sync();
    assert_eq!(
        crate::client::names(&incoming)
            .iter()
            .filter(|n| n.ends_with(".revoke.json"))
            .count(),
        1
    );

    // The test plays the signer: the record of DESIGN §9, then sync pushes it back.
    std::fs::create_dir_all(spool.join("status")).unwrap();
    let record = json!({"request_id": id, "type": "webhook", "status": "revoked",
        "message": format!("certificate {serial} revoked (keyCompromise)"), "reason": null,
        "serial": serial, "certificate_request_id": "r1", "revocation_reason": "keyCompromise",
        "revoked_at": "2026-01-01T00:00:00Z", "decided_at": "2026-01-01T00:00:00Z"});
    std::fs::write(
        spool.join(format!("status/{id}.revoke.json")),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    let o = sync();
    assert!(stdout(&o).contains("1 result(s) pushed"), "{}", stdout(&o));
    let g = server.get(&format!("/api/v1/revocations/{id}")).json();
    assert_eq!(g["status"], "revoked", "{g}");
    assert_eq!(g["revoked_at"], "2026-01-01T00:00:00Z");

    let o = client.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("revoked"), "{}", stdout(&o));
}

#[test]
fn issue_10_revoke_request_refuses_a_key_that_is_not_the_certificates() {
    let server = Server::start(&[]);
    let (cert, _, _) = holder(&server, "holder");
    let (_, other_key, _) = holder(&server, "other");
    let o = cmd(server.dir.path())
        .args(["revoke-request"])
        .arg(&cert)
        .arg("--key")
        .arg(&other_key)
        .args([
            "--reason",
            "keyCompromise",
            "--ca-url",
            &server.url("/api/v1"),
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("not the key of"), "{}", stderr(&o));
    let o = cmd(server.dir.path())
        .args(["revoke-request"])
        .arg(&cert)
        .arg("--key")
        .arg(server.dir.path().join("holder.key"))
        .args([
            "--reason",
            "removeFromCRL",
            "--ca-url",
            &server.url("/api/v1"),
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

// Each body above runs on SQLite and on PostgreSQL (`<name>::sqlite`, `<name>::postgres`).
crate::pg::on_both_backends!(
    issue_10_revocation_requests_are_checked_at_once,
    issue_10_revoke_request_through_serve_and_sync,
);

/// The whole flow with the real signer: a certificate issued by `process`, `revoke-request`
/// against `serve`, `sync` carrying the request to the spool, `process` deciding it with the
/// proof (DESIGN §9: revoked at once, the CRL re-signed), `sync` pushing the record back.
#[test]
fn issue_10_revocation_end_to_end_through_serve_sync_and_the_signer() {
    use crate::util::{CsrSpec, TestEnv};
    let env = TestEnv::new();
    let csr = env.drop_csr("r1", &CsrSpec::ip("192.168.1.40"));
    env.process();
    env.assert_approved("r1");
    let cert = env.issued("r1");

    // serve, pinned to this signer's chain.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    for f in ["ca.crt", "root.crt"] {
        std::fs::copy(env.state.join(f), state.join(f)).unwrap();
    }
    let server = Server::start_in(dir, &[]);
    let api = server.url("/api/v1");
    let token = server.dir.path().join("sync-token");
    write_private(&token, &format!("{TOKEN}\n"));
    let sync = || {
        let o = cmd(&env.root)
            .args(["sync", "--api", &api, "--token-file"])
            .arg(&token)
            .arg("--spool")
            .arg(&env.spool)
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    };
    let client = cmd(&env.root)
        .arg("revoke-request")
        .arg(&cert)
        .arg("--key")
        .arg(&csr.key)
        .args([
            "--reason",
            "keyCompromise",
            "--ca-url",
            &api,
            "--timeout",
            "60s",
        ])
        .args(["--poll-interval", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "the revocation request in incoming/",
        Duration::from_secs(30),
        || {
            sync();
            crate::client::names(&env.spool.join("incoming"))
                .iter()
                .any(|n| n.ends_with(".revoke.json"))
        },
    );
    env.process();
    sync();
    let o = client.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("revoked"), "{}", stdout(&o));
    let list = env.run(&["list", "--json"]).success();
    assert!(list.stdout().contains("\"revoked\""), "{}", list.stdout());
}
