//! Issue 10, lifetimes (DESIGN §5): `--pending-ttl` only bounds the wait for `sync` to take a
//! request; once acknowledged it lives until its result arrives (a `pending` result keeps it
//! alive), then for `--result-ttl`.

use std::time::Duration;

use serde_json::json;

use crate::serve::{good_csr, make_csr, Server};

fn issue_10_acknowledged_requests_outlive_the_pending_ttl() {
    let server = Server::start(&["--pending-ttl", "2s", "--result-ttl", "3s"]);
    let dir = server.dir.path();
    let csr = good_csr(dir);
    let held_csr = make_csr(dir, "held", "192.168.1.11", "IP:192.168.1.11");
    let post = |csr| {
        server.submit(csr, None).json()["request_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (acked, held, forgotten) = (post(&csr), post(&held_csr), post(&csr));
    server.sync_post("/api/v1/sync/ack", &json!({ "ids": [acked, held] }));
    let pending = json!({"request_id": held, "type": "webhook", "status": "pending",
        "message": "held for an operator", "reason": null, "certificate": null,
        "serial": null, "not_before": null, "not_after": null, "fingerprint_sha256": null,
        "decided_at": "2026-01-01T00:00:00Z"});
    let r = server.sync_post("/api/v1/sync/results", &json!({ "results": [pending] }));
    assert_eq!(r.json()["updated"], json!([held]));

    std::thread::sleep(Duration::from_millis(3500));
    // The one sync never took is gone; the others wait for their results.
    server.get(&format!("/api/v1/csr/{forgotten}")).error(404);
    assert_eq!(
        server.get(&format!("/api/v1/csr/{acked}")).json()["status"],
        "pending"
    );
    assert_eq!(
        server.get(&format!("/api/v1/csr/{held}")).json()["status"],
        "pending"
    );

    // The result that comes back is stored, not reported unknown.
    let cert = server.issue(&csr, "192.168.1.10");
    let approved = json!({"request_id": acked, "type": "webhook", "status": "approved",
        "message": "issued", "reason": null, "certificate": cert, "serial": null,
        "not_before": null, "not_after": null, "fingerprint_sha256": null,
        "decided_at": "2026-01-01T00:00:00Z"});
    let r = server.sync_post("/api/v1/sync/results", &json!({ "results": [approved] }));
    assert_eq!(r.json()["updated"], json!([acked]), "not unknown");
    assert_eq!(
        server.get(&format!("/api/v1/csr/{acked}")).json()["status"],
        "approved"
    );

    // Then it lives for --result-ttl.
    std::thread::sleep(Duration::from_millis(3500));
    server.get(&format!("/api/v1/csr/{acked}")).error(404);
    assert_eq!(
        server.get(&format!("/api/v1/csr/{held}")).json()["status"],
        "pending"
    );
}

// Each body above runs on SQLite and on PostgreSQL (`<name>::sqlite`, `<name>::postgres`).
crate::pg::on_both_backends!(issue_10_acknowledged_requests_outlive_the_pending_ttl,);
