//! Issue 10, the hardened front door of `serve` (DESIGN §5, Robustness), with raw sockets: a
//! bearer route answers 401 before reading the body, request headers must arrive within 10 s,
//! and `--max-connections` bounds open connections while an honest client is still served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::serve::Server;

#[test]
fn issue_10_bearer_routes_answer_401_before_reading_the_body() {
    let server = Server::start(&[]);
    for route in ["/api/v1/sync/ack", "/api/v1/sync/results"] {
        let t = Instant::now();
        // 8,000,000 bytes announced, none sent: the answer must not wait for them.
        let (status, body) = server.raw_head(
            &format!("POST {route} HTTP/1.1\r\nContent-Type: application/json"),
            8_000_000,
        );
        assert_eq!(status, 401, "{route}: {body}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{route}: {:?}",
            t.elapsed()
        );
    }
    let t = Instant::now();
    let (status, _) = server.raw_head("PUT /api/v1/sync/published/ca.crl HTTP/1.1", 1_000_000);
    assert_eq!(status, 401);
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn issue_10_half_a_request_line_is_cut_after_the_header_timeout() {
    let server = Server::start(&[]);
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let t = Instant::now();
    s.write_all(b"GET /health HT").unwrap();
    let mut buf = [0u8; 256];
    // Closed (EOF, a reset, or a 408) within the 10 s header timeout and some slack.
    let _ = s.read(&mut buf);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(8) && took < Duration::from_secs(25),
        "the connection was held {took:?}"
    );
    // And the server still serves.
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn issue_10_connection_cap_keeps_serving_honest_clients() {
    let server = Server::start(&["--max-connections", "4"]);
    let idle: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(("127.0.0.1", server.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let r = server.get("/health");
    assert_eq!(r.status, 200);
    assert!(t.elapsed() < Duration::from_secs(25), "{:?}", t.elapsed());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("connection limit reached") {
        assert!(Instant::now() < deadline, "no log line: {}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(idle);
}
