//! Issue 16, `serve`: a holder of the sync token (or of the USB stick that `sync` reads) can
//! no longer make `serve` hand out certificates or files that are not its pinned CA's
//! (DESIGN §5, "Every party checks what it receives").

use std::path::Path;

use serde_json::{json, Value};

use crate::serve::{good_csr, make_checkpoint, make_crl, openssl, serve_command, Server};

/// A CA that is not the pinned one ("Evil Root"), made with the openssl CLI in `dir/evil`.
fn evil_root(dir: &Path) -> std::path::PathBuf {
    let evil = dir.join("evil");
    std::fs::create_dir_all(evil.join("state")).unwrap();
    openssl(
        &evil.join("state"),
        &[
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
            "-subj",
            "/CN=Evil Root",
            "-days",
            "3650",
        ],
    );
    evil
}

fn result(id: &str, status: &str, certificate: Option<&str>) -> Value {
    json!({
        "request_id": id, "type": "webhook", "status": status,
        "message": "certificate issued for 192.168.1.10", "reason": null,
        "certificate": certificate, "serial": null, "not_before": null, "not_after": null,
        "fingerprint_sha256": null, "decided_at": "2026-01-01T00:00:00Z"
    })
}

fn refused_metric(server: &Server, what: &str) -> u64 {
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("smsgate_ca_refused_total{{what=\"{what}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn issue_16_forged_results_are_refused_and_the_real_one_wins() {
    let server = Server::start(&[]);
    let dir = server.dir.path();
    let csr = good_csr(dir);
    let id = server.submit(&csr, None).json()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    server.sync_post("/api/v1/sync/ack", &json!({"ids": [id]}));

    // 1. A 10-year certificate from the token holder's own root, for the right key and IP.
    let evil = evil_root(dir);
    let forged = crate::serve::issue_with(&evil, &csr, "IP:192.168.1.10", "3650");
    // 2. The pinned CA's key misused for 8.8.8.8 (its name constraints forbid it).
    let public_ip = crate::serve::issue_with(dir, &csr, "IP:8.8.8.8", "30");
    // 3. The pinned CA, the right IP, but another key.
    let other = crate::serve::make_csr(dir, "other", "x", "IP:192.168.1.10");
    let other_key = server.issue(&other, "192.168.1.10");
    // 4. The pinned CA, right key, but a DNS name besides the IP.
    let extra_name = crate::serve::issue_with(dir, &csr, "IP:192.168.1.10, DNS:example.com", "30");
    for (what, cert) in [
        ("foreign root", forged.as_str()),
        ("public IP", &public_ip),
        ("another key", &other_key),
        ("extra name", &extra_name),
        ("junk", "<html><script>alert(1)</script>"),
    ] {
        let r = server.sync_post(
            "/api/v1/sync/results",
            &json!({"results": [result(&id, "approved", Some(cert))]}),
        );
        assert_eq!(
            r.status,
            422,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        assert_eq!(v["rejected"], json!([id]), "{what}: {v}");
        assert_eq!(v["error"]["code"], 422, "{what}: {v}");
        let g = server.get(&format!("/api/v1/csr/{id}")).json();
        assert_eq!(g["status"], "pending", "{what}: {g}");
    }
    assert_eq!(refused_metric(&server, "result"), 5);
    assert!(
        server.log().contains("refused a pushed result"),
        "{}",
        server.log()
    );

    // The real signer's result is stored, with its certificate as PEM blocks only.
    let real = server.issue(&csr, "192.168.1.10");
    let with_junk = format!(
        "\x1b[2Jjunk before\n{real}-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n"
    );
    let r = server.sync_post(
        "/api/v1/sync/results",
        &json!({"results": [result(&id, "approved", Some(&with_junk))]}),
    );
    assert_eq!(r.status, 422, "a private key block is not a certificate");
    let r = server.sync_post(
        "/api/v1/sync/results",
        &json!({"results": [result(&id, "approved", Some(&real))]}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["updated"], json!([id]));
    let g = server.get(&format!("/api/v1/csr/{id}")).json();
    assert_eq!(g["status"], "approved");
    assert_eq!(g["certificate"], real);

    // A second, different result is a conflict: 409, the first stays.
    let r = server.sync_post(
        "/api/v1/sync/results",
        &json!({"results": [json!({"request_id": id, "type": "webhook", "status": "denied",
            "message": "no", "reason": "ip_denied", "certificate": null, "serial": null,
            "not_before": null, "not_after": null, "fingerprint_sha256": null,
            "decided_at": "2026-01-01T00:00:00Z"})]}),
    );
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["conflicts"], json!([id]));
    assert_eq!(
        server.get(&format!("/api/v1/csr/{id}")).json()["certificate"],
        real
    );
}

fn issue_16_published_files_must_be_the_pinned_cas() {
    let server = Server::start(&[]);
    let dir = server.dir.path();
    let chain = std::fs::read(dir.join("ca-chain.pem")).unwrap();
    let evil = evil_root(dir);
    let evil_crt = std::fs::read(evil.join("state/ca.crt")).unwrap();

    // ca.crt: a foreign root, or the real chain behind HTML, is refused.
    let mut html = b"<html><script>alert(1)</script>".to_vec();
    html.extend(&chain);
    let r = server.sync_put("/api/v1/sync/published/ca.crt", &evil_crt);
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert_ne!(
        server
            .sync_put("/api/v1/sync/published/ca.crt", &html)
            .status,
        204
    );
    server.get("/api/v1/ca.crt").error(404);
    assert_eq!(
        server
            .sync_put("/api/v1/sync/published/ca.crt", &chain)
            .status,
        204
    );
    let got = server.get("/api/v1/ca.crt");
    assert_eq!(got.body, chain);
    assert!(got.nosniff, "ca.crt is served with nosniff");

    // A CRL from an unrelated issuer is refused; CRLNumber never goes backwards.
    let evil_crl = make_crl(&evil, 5, None);
    assert_eq!(
        server
            .sync_put("/api/v1/sync/published/ca.crl", &evil_crl)
            .status,
        422
    );
    let crl100 = make_crl(dir, 100, None);
    assert_eq!(
        server
            .sync_put("/api/v1/sync/published/ca.crl", &crl100)
            .status,
        204
    );
    let crl1 = make_crl(dir, 1, None);
    let r = server.sync_put("/api/v1/sync/published/ca.crl", &crl1);
    assert_eq!(r.status, 422);
    assert!(
        r.error(422)["message"]
            .as_str()
            .unwrap()
            .contains("CRLNumber"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let got = server.get("/api/v1/crl");
    assert_eq!(got.body, crl100);
    assert!(got.nosniff);

    // A checkpoint must be a signed checkpoint line that does not go backwards.
    let put_cp = |body: &[u8]| {
        server
            .sync_put("/api/v1/sync/published/ledger-checkpoint.json", body)
            .status
    };
    assert_eq!(put_cp(br#"{"line": 99}"#), 400);
    assert_eq!(
        put_cp(&make_checkpoint(&evil, 7)),
        422,
        "signed by another key"
    );
    assert_eq!(put_cp(&make_checkpoint(dir, 7)), 204);
    assert_eq!(put_cp(&make_checkpoint(dir, 3)), 422, "rolled back");
    assert_eq!(put_cp(&make_checkpoint(dir, 9)), 204);

    assert_eq!(refused_metric(&server, "ca.crt"), 2);
    assert_eq!(refused_metric(&server, "ca.crl"), 2);
    assert_eq!(refused_metric(&server, "ledger-checkpoint.json"), 3);
}

#[test]
fn issue_16_a_sync_token_needs_a_pinned_ca() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    crate::serve::write_private(&token, "t0ken\n");
    let out = serve_command(
        dir.path(),
        &["--sync-token-file".to_owned(), token.display().to_string()],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca-chain"), "{err}");

    // A chain that does not end in a root is refused too.
    let leafish = dir.path().join("chain.pem");
    let s = Server::start(&[]);
    std::fs::write(
        &leafish,
        std::fs::read(s.dir.path().join("state/ca.crt")).unwrap(),
    )
    .unwrap();
    let out = serve_command(
        dir.path(),
        &[
            "--sync-token-file".to_owned(),
            token.display().to_string(),
            "--ca-chain".to_owned(),
            leafish.display().to_string(),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

// Each body above runs on SQLite and on PostgreSQL (`<name>::sqlite`, `<name>::postgres`).
crate::pg::on_both_backends!(
    issue_16_forged_results_are_refused_and_the_real_one_wins,
    issue_16_published_files_must_be_the_pinned_cas,
);
