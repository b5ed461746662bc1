//! The web page at `/` (issue 11, DESIGN §5 "A web page for people without a terminal") in
//! a real headless Chromium, against `serve` + `sync --watch` + `daemon` started as in `e2e`.
//!
//! One stack and one browser session serve every case (Chromium is the slow part); the cases
//! run one after another and each failure is reported with its case's name. Everything the
//! page hands out is checked with the `openssl` CLI, the page's own code (`web/csr.js`) is
//! checked against Rust's IP parser, OpenSSL's DER encoders and `smsgate-ca policy check`, and
//! after the flows every file of the stack (database, spool, signer state, sync state, every
//! log) is searched for the private keys the page made: they must be nowhere.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fantoccini::Locator;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::e2e::Stack;
use super::util::{openssl_ip_text, TestEnv, BIN};
use super::webdriver::Browser;

/// How long a request may take from the click to `approved` on a loaded machine.
const DECIDED_WITHIN: Duration = Duration::from_secs(90);

/// What every case gets.
struct Ctx {
    stack: Stack,
    browser: Browser,
    /// `http://127.0.0.1:PORT`, where the page is.
    base: String,
    /// Scratch space outside the stack (keys the test writes must not count as leaks).
    work: tempfile::TempDir,
    /// Every private key the page showed, for the final search.
    keys: std::sync::Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_web_page_in_headless_chromium() {
    let stack = tokio::task::spawn_blocking(Stack::start).await.unwrap();
    let base = stack.api.trim_end_matches("/api/v1").to_owned();
    let ctx = Arc::new(Ctx {
        stack,
        browser: Browser::start().await,
        base,
        work: tempfile::tempdir().unwrap(),
        keys: std::sync::Mutex::new(Vec::new()),
    });
    let mut failures = Vec::new();
    macro_rules! case {
        ($name:ident) => {{
            let ctx = Arc::clone(&ctx);
            let started = std::time::Instant::now();
            match tokio::spawn(async move { $name(&ctx).await }).await {
                Ok(()) => eprintln!(
                    "browser case {} ok in {:?}",
                    stringify!($name),
                    started.elapsed()
                ),
                Err(e) => {
                    eprintln!("browser case {} FAILED", stringify!($name));
                    failures.push(format!("{}: {e}", stringify!($name)));
                }
            }
        }};
    }
    case!(served_with_the_security_headers);
    case!(ip_rules_match_the_cli);
    case!(der_writer_matches_openssl);
    case!(csr_made_in_the_page_passes_policy_check);
    case!(certificate_reader_matches_x509_parser);
    case!(public_ip_is_refused_before_any_key_or_request);
    case!(webhook_end_to_end);
    case!(private_server_by_keyboard_alone);
    case!(reload_while_waiting_resumes_on_a_phone_screen);
    case!(a_certificate_for_another_key_or_ip_is_not_shown);
    case!(private_keys_are_nowhere_on_the_server_side);
    let ctx = Arc::into_inner(ctx).expect("every case has ended");
    ctx.browser.quit().await;
    if !failures.is_empty() {
        panic!(
            "{} browser case(s) failed:\n{}\n--- daemon\n{}\n--- sync\n{}\n--- serve\n{}",
            failures.len(),
            failures.join("\n"),
            ctx.stack.log("daemon.log"),
            ctx.stack.log("sync.log"),
            ctx.stack.log("serve.log")
        );
    }
}

/// `GET /` and its files carry the CSP, nosniff and validator headers, and a matching
/// `If-None-Match` is answered `304`.
async fn served_with_the_security_headers(ctx: &Ctx) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    for path in [
        "/",
        "/web/page.js",
        "/web/csr.js",
        "/web/page.css",
        "/web/icon.svg",
    ] {
        let url = format!("{}{path}", ctx.base);
        let r = agent.get(&url).call().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .unwrap_or_else(|| panic!("{path} has no {name}"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(header("content-security-policy"), "default-src 'self'");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("cache-control"), "no-cache");
        let etag = header("etag");
        let again = agent
            .get(&url)
            .header("If-None-Match", &etag)
            .call()
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    let r = agent
        .get(format!("{}/web/missing.js", ctx.base))
        .call()
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// `parseIp`, `ipText`, `isPublic` and `checkIp` agree with Rust's `IpAddr` parser and
/// `Display`, the policy's non-global ranges and the CLI's messages, on fixed edge cases and
/// seeded random addresses in many spellings.
async fn ip_rules_match_the_cli(ctx: &Ctx) {
    open_page(ctx).await;
    let inputs = ip_inputs();
    let results = ctx
        .browser
        .run(
            r#"const m = await import("/web/csr.js");
               return arguments[0].map((s) => {
                 const bytes = m.parseIp(s);
                 const check = m.checkIp(s);
                 return {
                   bytes: bytes && Array.from(bytes),
                   text: bytes && m.ipText(bytes),
                   public: bytes && m.isPublic(bytes),
                   error: check.error ?? null,
                   checked: check.text ?? null,
                 };
               });"#,
            vec![json!(inputs)],
        )
        .await;
    let results = results.as_array().unwrap_or_else(|| panic!("{results}"));
    assert_eq!(results.len(), inputs.len());
    let mut parsed = 0;
    for (input, got) in inputs.iter().zip(results) {
        let expect: Option<IpAddr> = input.parse().ok();
        let bytes = expect.map(|ip| match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        });
        let got_bytes: Option<Vec<u8>> = serde_json::from_value(got["bytes"].clone()).unwrap();
        assert_eq!(got_bytes, bytes, "parseIp({input:?})");
        if let Some(ip) = expect {
            parsed += 1;
            assert_eq!(got["text"], ip.to_string(), "ipText({input:?})");
            assert_eq!(
                got["public"],
                smsgate_ca::policy::range::is_public(ip),
                "isPublic({input:?})"
            );
        }
        match smsgate_ca::client::keys::parse_private_ip(input) {
            Ok(ip) => assert_eq!(got["checked"], ip.to_string(), "checkIp({input:?})"),
            Err(e) => {
                // The messages are the CLI's (the quoting of odd characters aside).
                if input.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
                    assert_eq!(got["error"], e.to_string(), "checkIp({input:?})");
                } else {
                    assert!(got["error"].is_string(), "checkIp({input:?})");
                }
            }
        }
    }
    assert!(parsed > inputs.len() / 2, "too few valid inputs: {parsed}");
}

/// The DER writer's lengths, integers, OIDs and the r‖s → ECDSA-Sig-Value conversion give the
/// bytes OpenSSL's own encoders give.
async fn der_writer_matches_openssl(ctx: &Ctx) {
    open_page(ctx).await;
    // Lengths: OCTET STRINGs across the short/long-form boundaries, against asn1parse -genconf.
    let sizes = [0usize, 1, 127, 128, 255, 256, 1000, 65535, 65536, 70000];
    let ours = ctx
        .browser
        .run(
            r#"const m = await import("/web/csr.js");
               return arguments[0].map((n) => {
                 const der = m.tlv(0x04, new Uint8Array(n).fill(0x61));
                 return Array.from(der.slice(0, 8)).concat([der.length]);
               });"#,
            vec![json!(sizes)],
        )
        .await;
    for (n, got) in sizes.iter().zip(ours.as_array().unwrap()) {
        let conf = ctx.work.path().join(format!("octets-{n}.cnf"));
        std::fs::write(
            &conf,
            format!("asn1 = FORMAT:ASCII,OCT:{}\n", "a".repeat(*n)),
        )
        .unwrap();
        let out = ctx.work.path().join(format!("octets-{n}.der"));
        let run = Command::new("openssl")
            .args(["asn1parse", "-noout", "-genconf"])
            .arg(&conf)
            .arg("-out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let der = std::fs::read(&out).unwrap();
        let got: Vec<u64> = serde_json::from_value(got.clone()).unwrap();
        let head: Vec<u64> = der.iter().take(8).map(|b| u64::from(*b)).collect();
        assert_eq!(&got[..got.len() - 1], &head[..], "header of {n} bytes");
        assert_eq!(got[got.len() - 1], der.len() as u64, "length of {n} bytes");
    }

    // OIDs, against OpenSSL's encoding of the same dotted text.
    let oids = [
        "1.2.840.10045.4.3.2",
        "1.2.840.113549.1.9.14",
        "2.5.29.17",
        "1.3.6.1.4.1.311.21.20",
        "2.999.1234567",
        "0.9.2342.19200300.100.1.25",
    ];
    let ours = ctx
        .browser
        .run(
            r#"const m = await import("/web/csr.js");
               return arguments[0].map((o) => Array.from(m.oid(o)));"#,
            vec![json!(oids)],
        )
        .await;
    for (text, got) in oids.iter().zip(ours.as_array().unwrap()) {
        let object = openssl::asn1::Asn1Object::from_str(text).unwrap();
        let mut expect = vec![0x06, object.as_slice().len() as u8];
        expect.extend_from_slice(object.as_slice());
        let got: Vec<u8> = serde_json::from_value(got.clone()).unwrap();
        assert_eq!(got, expect, "oid({text})");
    }

    // Signatures: r‖s of P-256 size, with the edge cases of DER integers forced in.
    let mut rng = StdRng::seed_from_u64(11);
    let mut raws: Vec<Vec<u8>> = Vec::new();
    for i in 0..200 {
        let mut raw: Vec<u8> = (0..64).map(|_| rng.random()).collect();
        match i % 8 {
            0 => raw[0] = 0,
            1 => raw[0..3].fill(0),
            2 => raw[0] |= 0x80,
            3 => raw[32] |= 0x80,
            4 => raw[32..40].fill(0),
            5 => raw[0..32].fill(0),
            6 => {
                raw[0] = 0;
                raw[1] |= 0x80;
            }
            _ => {}
        }
        raws.push(raw);
    }
    let ours = ctx
        .browser
        .run(
            r#"const m = await import("/web/csr.js");
               return arguments[0].map((r) => Array.from(m.ecdsaSignatureToDer(Uint8Array.from(r))));"#,
            vec![json!(raws)],
        )
        .await;
    for (raw, got) in raws.iter().zip(ours.as_array().unwrap()) {
        let r = openssl::bn::BigNum::from_slice(&raw[..32]).unwrap();
        let s = openssl::bn::BigNum::from_slice(&raw[32..]).unwrap();
        let expect = openssl::ecdsa::EcdsaSig::from_private_components(r, s)
            .unwrap()
            .to_der()
            .unwrap();
        let got: Vec<u8> = serde_json::from_value(got.clone()).unwrap();
        assert_eq!(
            got,
            expect,
            "ecdsaSignatureToDer({})",
            super::util::hex(raw)
        );
    }
}

/// A CSR the page makes (its key from WebCrypto) verifies with `openssl req -verify`, names the
/// IP in one critical SAN, carries the key's public half, and `smsgate-ca policy check`
/// approves it, for IPv4 and IPv6 and both types.
async fn csr_made_in_the_page_passes_policy_check(ctx: &Ctx) {
    open_page(ctx).await;
    let ranges = r#"["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]"#;
    let env = TestEnv::without_ca(&format!(
        "version = 1\n\n[profiles.webhook]\nserial_prefix = 1\nallow = {ranges}\n\n\
         [profiles.private_server]\nserial_prefix = 2\nallow = {ranges}\n"
    ));
    for (ip, kind) in [
        ("192.168.1.10", "webhook"),
        ("10.0.0.5", "private_server"),
        ("172.31.255.254", "webhook"),
        ("fd12:3456::1", "webhook"),
        ("FD00:0:0:0:0:0:0:AB", "private_server"),
    ] {
        let made = ctx
            .browser
            .run(
                r#"const m = await import("/web/csr.js");
                   const keys = await m.generateKeyPair();
                   const der = await m.buildCsr(keys, m.checkIp(arguments[0]).bytes);
                   return {
                     csr: m.pem("CERTIFICATE REQUEST", der),
                     key: m.pem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", keys.privateKey)),
                   };"#,
                vec![json!(ip)],
            )
            .await;
        let csr = made["csr"].as_str().unwrap_or_else(|| panic!("{made}"));
        let key = made["key"].as_str().unwrap();
        let name = ip.replace(':', "_");
        let csr_path = env.work.join(format!("{name}.csr"));
        let key_path = env.work.join(format!("{name}.key"));
        std::fs::write(&csr_path, csr).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let text = openssl(&["req", "-verify", "-noout", "-text", "-in"], &csr_path);
        let canonical: IpAddr = ip.parse().unwrap();
        assert!(
            text.contains(&format!("IP Address:{}", openssl_ip_text(canonical))),
            "{text}"
        );
        assert!(
            text.contains("Subject Alternative Name: critical"),
            "{text}"
        );
        assert!(text.contains("ecdsa-with-SHA256"), "{text}");
        assert_eq!(
            openssl(&["req", "-pubkey", "-noout", "-in"], &csr_path),
            openssl(&["pkey", "-pubout", "-in"], &key_path),
            "the CSR is not for the key"
        );
        let check = env.run(&[
            "policy",
            "check",
            csr_path.to_str().unwrap(),
            "--type",
            kind,
        ]);
        assert_eq!(
            check.code(),
            0,
            "policy check of the page's CSR for {ip}:\n{}{}",
            check.stdout(),
            check.stderr()
        );
    }
}

/// `certificateFacts` reads the public key and the IP SANs that x509-parser reads, from
/// certificates OpenSSL makes, and throws on truncated DER.
async fn certificate_reader_matches_x509_parser(ctx: &Ctx) {
    open_page(ctx).await;
    let dir = ctx.work.path().join("facts");
    std::fs::create_dir_all(&dir).unwrap();
    let mut ders = Vec::new();
    for (i, (key, san)) in [
        ("ec:P-256", Some("IP:192.168.1.10")),
        ("ec:P-256", Some("critical,IP:10.0.0.1,IP:10.0.0.2")),
        (
            "ec:P-384",
            Some("DNS:example.internal,IP:fd00::1,email:a@b.invalid"),
        ),
        ("rsa:2048", None),
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.join(format!("{i}.der"));
        let (alg, param) = key.split_once(':').unwrap();
        let mut args: Vec<String> = vec![
            "req".into(),
            "-x509".into(),
            "-nodes".into(),
            "-newkey".into(),
            alg.into(),
            "-pkeyopt".into(),
            if alg == "ec" {
                format!("ec_paramgen_curve:{param}")
            } else {
                format!("rsa_keygen_bits:{param}")
            },
            "-keyout".into(),
            dir.join(format!("{i}.key")).display().to_string(),
            "-subj".into(),
            "/CN=facts".into(),
            "-outform".into(),
            "DER".into(),
            "-out".into(),
            out.display().to_string(),
        ];
        if let Some(san) = san {
            args.extend(["-addext".into(), format!("subjectAltName={san}")]);
        }
        let run = Command::new("openssl").args(&args).output().unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        ders.push(std::fs::read(&out).unwrap());
    }
    let ours = ctx
        .browser
        .run(
            r#"const m = await import("/web/csr.js");
               return arguments[0].map((d) => {
                 const der = Uint8Array.from(d);
                 const f = m.certificateFacts(der);
                 const truncated = [1, 10, der.length / 2 | 0, der.length - 1].map((n) => {
                   try { m.certificateFacts(der.slice(0, n)); return false; } catch { return true; }
                 });
                 return { key: Array.from(f.publicKey), ips: f.ips.map((i) => Array.from(i)), truncated };
               });"#,
            vec![json!(ders)],
        )
        .await;
    for (der, got) in ders
        .iter()
        .zip(ours.as_array().unwrap_or_else(|| panic!("{ours}")))
    {
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        let key: Vec<u8> = serde_json::from_value(got["key"].clone()).unwrap();
        assert_eq!(key, cert.public_key().subject_public_key.data.to_vec());
        let mut ips: Vec<Vec<u8>> = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::IPAddress(ip) = name {
                    ips.push(ip.to_vec());
                }
            }
        }
        let got_ips: Vec<Vec<u8>> = serde_json::from_value(got["ips"].clone()).unwrap();
        assert_eq!(got_ips, ips);
        assert_eq!(got["truncated"], json!([true, true, true, true]), "{got}");
    }
}

/// A public address (and text that is no address) is refused in the page with the CLI's
/// message: no key is generated and nothing is fetched. A private address outside the
/// policy goes to the server, which denies it with its reason, shown with advice.
async fn public_ip_is_refused_before_any_key_or_request(ctx: &Ctx) {
    let b = &ctx.browser;
    open_page(ctx).await;
    let posts_before = count_posts(ctx);
    // Count key generations and fetches from now on.
    b.run(
        r#"window.made = 0; window.fetched = [];
           const generate = crypto.subtle.generateKey.bind(crypto.subtle);
           crypto.subtle.generateKey = (...a) => { window.made++; return generate(...a); };
           const fetch = window.fetch.bind(window);
           window.fetch = (...a) => { window.fetched.push(String(a[0])); return fetch(...a); };"#,
        vec![],
    )
    .await;
    for input in [
        "8.8.8.8",
        "2001:db8::1",
        "::ffff:192.168.1.10",
        "192.168.1",
        "example.com",
    ] {
        let field = b.client.find(Locator::Id("ip")).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(input).await.unwrap();
        b.client
            .find(Locator::Id("request"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let status = b.wait_status(&["denied"], Duration::from_secs(10)).await;
        // The CLI refuses the same input with the same sentence.
        let cli = Command::new(BIN)
            .args(["webhooks", "--ca-url", &ctx.stack.api, "--out"])
            .arg(ctx.work.path().join("never.crt"))
            .arg("--keyout")
            .arg(ctx.work.path().join("never.key"))
            .arg(input)
            .output()
            .unwrap();
        assert_eq!(cli.status.code(), Some(2), "the CLI on {input}");
        let message = status
            .strip_prefix("denied (nothing was sent): ")
            .unwrap_or_else(|| panic!("{status}"));
        assert!(
            String::from_utf8_lossy(&cli.stderr).contains(message),
            "page: {message}\ncli: {}",
            String::from_utf8_lossy(&cli.stderr)
        );
        if input.contains(|c: char| c.is_ascii_alphabetic()) && !input.contains(':') {
            assert!(message.contains("is not an IP address"), "{message}");
        } else if input != "192.168.1" {
            assert!(
                message.contains("is a public address")
                    && message.contains("10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7"),
                "{message}"
            );
        }
        assert_eq!(b.focused().await, "ip", "the focus goes back to the field");
        assert_eq!(
            field.attr("aria-invalid").await.unwrap().as_deref(),
            Some("true")
        );
    }
    let counts = b
        .run(
            "return {made: window.made, fetched: window.fetched};",
            vec![],
        )
        .await;
    assert_eq!(
        counts,
        json!({"made": 0, "fetched": []}),
        "work was done for a refused IP"
    );
    assert_eq!(count_posts(ctx), posts_before, "serve saw a POST");

    // CGNAT space is not public, so the page asks; the default policy does not allow it.
    let field = b.client.find(Locator::Id("ip")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys("100.64.1.1").await.unwrap();
    b.client
        .find(Locator::Id("request"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let status = b.wait_status(&["denied"], DECIDED_WITHIN).await;
    assert!(
        status.starts_with("denied: ") && status.contains("100.64.1.1"),
        "{status}"
    );
    let advice = b.text("advice").await;
    assert!(
        advice.contains("operator") && advice.contains("ranges"),
        "{advice}"
    );
    let counts = b.run("return window.made;", vec![]).await;
    assert_eq!(counts, json!(1));
    assert_eq!(count_posts(ctx), posts_before + 1);
    assert_eq!(
        session_request(b).await,
        Value::Null,
        "a denied request is forgotten"
    );
}

/// The whole flow: type an IP, click, wait for `approved`, read the certificate and key, check
/// them with openssl (key matches, SAN, chain through the page's CA link), download both, and
/// check that the page loaded nothing from elsewhere. Saves a screenshot of the final page.
async fn webhook_end_to_end(ctx: &Ctx) {
    let b = &ctx.browser;
    open_page(ctx).await;
    b.client
        .find(Locator::Id("ip"))
        .await
        .unwrap()
        .send_keys("192.168.1.10")
        .await
        .unwrap();
    b.client
        .find(Locator::Id("type"))
        .await
        .unwrap()
        .select_by_value("webhook")
        .await
        .unwrap();
    b.client
        .find(Locator::Id("request"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let status = b.wait_status(&["approved", "denied"], DECIDED_WITHIN).await;
    assert!(
        status.starts_with("approved: ") && status.contains("192.168.1.10"),
        "{status}"
    );
    let (cert, key) = shown(ctx).await;
    let checked = check_shown(ctx, "webhook", &cert, &key, "192.168.1.10").await;
    assert_eq!(checked.serial_prefix, "01");

    // The download buttons save exactly what is shown.
    for (button, file, text) in [
        ("download-certificate", "server.crt", &cert),
        ("download-private-key", "server.key", &key),
    ] {
        b.client
            .find(Locator::Id(button))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(b.downloaded(file).await).unwrap(),
            *text,
            "{file}"
        );
    }
    only_own_resources(ctx).await;
    screenshot(ctx, "page-approved.png", 760).await;
}

/// Keyboard alone: Tab to the field, type, Tab to the type and pick `private_server` with an
/// arrow key, Tab to the button, back to the field, Enter submits; after approval Tab reaches
/// the key's download button and Enter saves it. The certificate has serial prefix 02.
async fn private_server_by_keyboard_alone(ctx: &Ctx) {
    use fantoccini::key::Key;
    let b = &ctx.browser;
    open_page(ctx).await;
    let tab = char::from(Key::Tab);
    b.press(&[tab]).await;
    assert_eq!(
        b.focused().await,
        "ip",
        "Tab from the top reaches the IP field first"
    );
    b.press(&"10.20.30.40".chars().collect::<Vec<_>>()).await;
    b.press(&[tab]).await;
    assert_eq!(b.focused().await, "type");
    b.press(&[char::from(Key::Down)]).await;
    let kind = b
        .run("return document.getElementById('type').value;", vec![])
        .await;
    assert_eq!(kind, json!("private_server"));
    b.press(&[tab]).await;
    assert_eq!(b.focused().await, "request");
    b.shift_tab().await;
    b.shift_tab().await;
    assert_eq!(b.focused().await, "ip");
    b.press(&[char::from(Key::Enter)]).await;
    let status = b.wait_status(&["approved", "denied"], DECIDED_WITHIN).await;
    assert!(status.starts_with("approved: "), "{status}");
    assert_eq!(
        b.focused().await,
        "result-title",
        "the result takes the focus"
    );
    let (cert, key) = shown(ctx).await;
    let checked = check_shown(ctx, "private_server", &cert, &key, "10.20.30.40").await;
    assert_eq!(checked.serial_prefix, "02", "private_server serial prefix");

    let _ = std::fs::remove_file(b.downloads().join("server.key"));
    let mut presses = 0;
    while b.focused().await != "download-private-key" {
        presses += 1;
        assert!(presses < 8, "Tab never reached the key's download button");
        b.press(&[tab]).await;
    }
    b.press(&[char::from(Key::Enter)]).await;
    assert_eq!(
        String::from_utf8(b.downloaded("server.key").await).unwrap(),
        key
    );
    only_own_resources(ctx).await;
}

/// On a 375×812 screen: nothing scrolls sideways, before or after approval. With `sync`
/// paused the request stays pending; a reload picks it up by the id in sessionStorage (the
/// key with it, nothing in localStorage), and once sync runs again the same key is shown with
/// its certificate. A reload after approval shows it again; "Start a new request" forgets it.
async fn reload_while_waiting_resumes_on_a_phone_screen(ctx: &Ctx) {
    let b = &ctx.browser;
    b.client.set_window_size(375, 812).await.unwrap();
    open_page(ctx).await;
    let width = b.run("return window.innerWidth;", vec![]).await;
    assert_eq!(width, json!(375), "the viewport is a phone's");
    no_horizontal_scroll(b).await;

    let paused = Paused::new(ctx.stack.sync_pid());
    b.client
        .find(Locator::Id("ip"))
        .await
        .unwrap()
        .send_keys("192.168.7.7")
        .await
        .unwrap();
    b.client
        .find(Locator::Id("request"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_status(&["pending: CSR received"], DECIDED_WITHIN)
        .await;
    let saved = session_request(b).await;
    let id = saved["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{saved}"))
        .to_owned();
    let key = saved["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{saved}");
    let local = b.run("return localStorage.length;", vec![]).await;
    assert_eq!(local, json!(0), "nothing goes to localStorage");

    b.client.refresh().await.unwrap();
    let status = b.wait_status(&["pending"], Duration::from_secs(10)).await;
    assert!(
        status.contains(&id) || status.contains("waiting"),
        "{status}"
    );
    assert_eq!(session_request(b).await["id"], json!(id));
    let ip = b
        .run("return document.getElementById('ip').value;", vec![])
        .await;
    assert_eq!(ip, json!("192.168.7.7"));
    drop(paused);

    let status = b.wait_status(&["approved", "denied"], DECIDED_WITHIN).await;
    assert!(status.starts_with("approved: "), "{status}");
    let (cert, shown_key) = shown(ctx).await;
    assert_eq!(
        shown_key, key,
        "the key kept across the reload is the one shown"
    );
    check_shown(ctx, "webhook", &cert, &key, "192.168.7.7").await;
    no_horizontal_scroll(b).await;
    screenshot(ctx, "page-phone.png", 0).await;

    b.client.refresh().await.unwrap();
    b.wait_status(&["approved"], DECIDED_WITHIN).await;
    assert_eq!(shown(ctx).await.1, key);
    b.client
        .find(Locator::Id("new-request"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(session_request(b).await, Value::Null);
    let hidden = b
        .run("return document.getElementById('result').hidden;", vec![])
        .await;
    assert_eq!(hidden, json!(true));
    assert_eq!(b.focused().await, "ip");
    only_own_resources(ctx).await;
    b.client.set_window_size(1000, 900).await.unwrap();
}

/// A server that answers `approved` with a certificate for another key, or for our key and
/// another IP, gets neither shown: the page says so and forgets the request. (The server here
/// is played by replacing `fetch` for the status route; the POST goes to the real `serve`.)
async fn a_certificate_for_another_key_or_ip_is_not_shown(ctx: &Ctx) {
    let b = &ctx.browser;
    let dir = ctx.work.path().join("forged");
    std::fs::create_dir_all(&dir).unwrap();
    for (round, ip) in ["192.168.9.9", "192.168.9.10"].into_iter().enumerate() {
        open_page(ctx).await;
        b.run(
            r#"window.forged = null;
               const real = window.fetch.bind(window);
               window.fetch = async (url, init) => {
                 if (!String(url).startsWith("/api/v1/csr/")) return real(url, init);
                 const body = window.forged === null
                   ? {request_id: "forged", type: "webhook", status: "pending", message: "wait"}
                   : {request_id: "forged", type: "webhook", status: "approved",
                      message: "certificate issued", certificate: window.forged};
                 return new Response(JSON.stringify(body),
                   {status: 200, headers: {"Content-Type": "application/json"}});
               };"#,
            vec![],
        )
        .await;
        let field = b.client.find(Locator::Id("ip")).await.unwrap();
        field.send_keys(ip).await.unwrap();
        b.client
            .find(Locator::Id("request"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        b.wait_status(&["pending: wait"], DECIDED_WITHIN).await;
        let key = session_request(b).await["key"].as_str().unwrap().to_owned();
        ctx.keys.lock().unwrap().push(key.clone());
        // Round 0: our key, another IP. Round 1: our IP, another key.
        let key_path = dir.join(format!("{round}.key"));
        if round == 0 {
            std::fs::write(&key_path, &key).unwrap();
        }
        let san = if round == 0 { "192.168.9.99" } else { ip };
        let mut args = vec!["req", "-x509", "-subj", "/CN=forged", "-days", "1"];
        let san = format!("subjectAltName=IP:{san}");
        args.extend(["-addext", &san]);
        if round == 0 {
            args.extend(["-key", key_path.to_str().unwrap()]);
        } else {
            args.extend([
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ]);
            args.extend(["-keyout", key_path.to_str().unwrap()]);
        }
        let out = Command::new("openssl").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let forged = String::from_utf8(out.stdout).unwrap();
        b.run("window.forged = arguments[0];", vec![json!(forged)])
            .await;
        let status = b
            .wait_status(&["approved", "not for this key"], DECIDED_WITHIN)
            .await;
        assert!(status.contains("not for this key and this IP"), "{status}");
        let hidden = b
            .run("return document.getElementById('result').hidden;", vec![])
            .await;
        assert_eq!(hidden, json!(true));
        assert_eq!(b.text("private-key").await, "");
        assert_eq!(session_request(b).await, Value::Null);
        let enabled = b
            .run(
                "return !document.getElementById('request').disabled;",
                vec![],
            )
            .await;
        assert_eq!(enabled, json!(true), "the form is usable again");
    }
}

/// Every file of the stack (serve's database, the spool, the signer's state, sync's state,
/// every process log) is searched for each private key the page showed: its PEM body, its
/// DER and its private scalar in raw, hex and base64 forms. As a control, the same search
/// finds the request ids where they must be.
async fn private_keys_are_nowhere_on_the_server_side(ctx: &Ctx) {
    let keys = ctx.keys.lock().unwrap().clone();
    assert!(keys.len() >= 3, "the flows showed {} keys", keys.len());
    let files = all_files(ctx.stack.dir.path());
    let contents: Vec<(PathBuf, Vec<u8>)> = files
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap_or_default();
            (f, bytes)
        })
        .collect();
    for key in &keys {
        for (what, needle) in key_needles(key) {
            for (file, bytes) in &contents {
                assert!(
                    !contains(bytes, &needle),
                    "the private key's {what} is in {}",
                    file.display()
                );
            }
        }
    }
    // Control: the search sees the database, the spool and the logs.
    let names: Vec<String> = contents
        .iter()
        .map(|(f, _)| {
            f.strip_prefix(ctx.stack.dir.path())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    for expected in ["serve.log", "sync.log", "daemon.log"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("serve/")), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("spool/archive/")),
        "{names:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Helpers

/// What `check_issued` found.
pub(super) struct Issued {
    /// The first byte of the serial, two hex digits.
    pub(super) serial_prefix: String,
}

/// The certificate and key the page shows (the key is remembered for the final search).
async fn shown(ctx: &Ctx) -> (String, String) {
    let cert = ctx.browser.text("certificate").await + "\n";
    let key = ctx.browser.text("private-key").await + "\n";
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
    ctx.keys.lock().unwrap().push(key.clone());
    (cert, key)
}

/// `check_issued` on what Chromium shows, with the CA chain from the page's link.
async fn check_shown(ctx: &Ctx, kind: &str, cert: &str, key: &str, ip: &str) -> Issued {
    let href = ctx
        .browser
        .client
        .find(Locator::Id("ca-link"))
        .await
        .unwrap()
        .prop("href")
        .await
        .unwrap()
        .unwrap();
    let dir = ctx.work.path().join(format!("{kind}-{ip}"));
    check_issued(&ctx.stack, &dir, cert, key, ip, &href)
}

/// Checks with the openssl CLI: the key is an unencrypted P-256 PKCS#8 key that matches the
/// certificate, the SAN is exactly `ip`, and the chain verifies to the root with the
/// intermediates from `ca_link`, which must be the stack's `/api/v1/ca.crt`. Files go to `dir`.
pub(super) fn check_issued(
    stack: &Stack,
    dir: &Path,
    cert: &str,
    key: &str,
    ip: &str,
    ca_link: &str,
) -> Issued {
    std::fs::create_dir_all(dir).unwrap();
    let cert_path = dir.join("server.crt");
    let key_path = dir.join("server.key");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    assert_eq!(
        openssl(&["pkey", "-pubout", "-in"], &key_path),
        openssl(&["x509", "-noout", "-pubkey", "-in"], &cert_path),
        "the key does not match the certificate"
    );
    let key_text = openssl(&["pkey", "-noout", "-text", "-in"], &key_path);
    assert!(
        key_text.contains("prime256v1") || key_text.contains("P-256"),
        "{key_text}"
    );
    let san = openssl(
        &["x509", "-noout", "-ext", "subjectAltName", "-in"],
        &cert_path,
    );
    let names: Vec<&str> = san.lines().skip(1).map(str::trim).collect();
    assert_eq!(names, [format!("IP Address:{ip}")], "{san}");

    // The CA chain, fetched from where the page links it (sync uploads it soon after start).
    assert_eq!(ca_link, format!("{}/ca.crt", stack.api));
    let chain = std::cell::RefCell::new(None);
    stack.wait_for("the CA chain on the API", || {
        let got = ureq::get(ca_link)
            .call()
            .ok()
            .map(|mut r| r.body_mut().read_to_string().unwrap());
        let found = got.is_some();
        *chain.borrow_mut() = got;
        found
    });
    let chain_path = dir.join("ca.crt");
    std::fs::write(&chain_path, chain.into_inner().unwrap()).unwrap();
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(stack.path("state/root.crt"))
        .arg("-untrusted")
        .arg(&chain_path)
        .arg("-verify_ip")
        .arg(ip)
        .arg("-purpose")
        .arg("sslserver")
        .arg(&cert_path)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let serial = openssl(&["x509", "-noout", "-serial", "-in"], &cert_path);
    let serial = serial.trim().trim_start_matches("serial=");
    assert_eq!(serial.len(), 32, "{serial}");
    Issued {
        serial_prefix: serial[..2].to_owned(),
    }
}

/// Opens the page afresh: no request kept from an earlier case, the browser's log emptied.
async fn open_page(ctx: &Ctx) {
    let b = &ctx.browser;
    b.client.goto(&ctx.base).await.unwrap();
    b.run("sessionStorage.clear();", vec![]).await;
    b.client.goto(&ctx.base).await.unwrap();
    b.log().await;
}

/// Every resource the page loaded came from the server itself, and the browser logged no
/// error (a CSP violation is logged as one).
async fn only_own_resources(ctx: &Ctx) {
    let loaded = ctx
        .browser
        .run(
            r#"return performance.getEntriesByType("navigation")
                 .concat(performance.getEntriesByType("resource"))
                 .map((e) => e.name);"#,
            vec![],
        )
        .await;
    let loaded: Vec<String> = serde_json::from_value(loaded).unwrap();
    assert!(loaded.len() >= 4, "{loaded:?}");
    for url in &loaded {
        assert!(
            url.starts_with(&format!("{}/", ctx.base)),
            "the page loaded {url}"
        );
    }
    let log = ctx.browser.log().await;
    let errors: Vec<&Value> = log
        .iter()
        .filter(|e| e["level"] == "SEVERE" || e["message"].to_string().contains("Refused"))
        .collect();
    assert!(errors.is_empty(), "the browser logged errors: {errors:?}");
}

/// The page is no wider than the window.
async fn no_horizontal_scroll(b: &Browser) {
    let widths = b
        .run(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await;
    let (scroll, inner) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
    assert!(
        scroll <= inner,
        "the page is {scroll} px wide in a {inner} px window"
    );
}

/// A screenshot of the whole page under the stack's temp dir (and, when
/// `SMSGATE_SCREENSHOT_DIR` is set, there too: that is how `web/screenshot.png` is made).
/// `width` (CSS px) narrows the window for the shot; 0 keeps it.
async fn screenshot(ctx: &Ctx, name: &str, width: u32) {
    let b = &ctx.browser;
    let (w, h) = b.client.get_window_size().await.unwrap();
    if width > 0 {
        b.client.set_window_size(width, 900).await.unwrap();
    }
    let png = b.full_screenshot().await;
    b.client.set_window_size(w as u32, h as u32).await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::write(ctx.stack.path(name), &png).unwrap();
    if let Some(dir) = std::env::var_os("SMSGATE_SCREENSHOT_DIR") {
        std::fs::write(Path::new(&dir).join(name), &png).unwrap();
    }
}

/// The request the page keeps in sessionStorage, or null.
async fn session_request(b: &Browser) -> Value {
    b.run(
        r#"return JSON.parse(sessionStorage.getItem("smsgate-ca.request") ?? "null");"#,
        vec![],
    )
    .await
}

/// How many `POST /api/v1/csr` serve has logged.
fn count_posts(ctx: &Ctx) -> usize {
    ctx.stack
        .log("serve.log")
        .lines()
        .filter(|l| l.contains("POST") && l.contains("/api/v1/csr"))
        .count()
}

/// Runs `openssl ARGS FILE`, which must succeed; returns stdout.
fn openssl(args: &[&str], file: &Path) -> String {
    let out = Command::new("openssl")
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Stops a process (SIGSTOP) until dropped (SIGCONT), even when the case fails.
struct Paused(nix::unistd::Pid);

impl Paused {
    fn new(pid: u32) -> Self {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        Self(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// The forms in which a private key could have been stored: each tagged with what it is.
fn key_needles(pem: &str) -> Vec<(&'static str, Vec<u8>)> {
    let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = openssl::base64::decode_block(&body.concat()).unwrap();
    let key = openssl::pkey::PKey::private_key_from_der(&der).unwrap();
    let scalar = key
        .ec_key()
        .unwrap()
        .private_key()
        .to_vec_padded(32)
        .unwrap();
    let at = der
        .windows(32)
        .position(|w| w == scalar.as_slice())
        .expect("the scalar is inside the PKCS#8 DER");
    let hex = super::util::hex(&scalar);
    let b64 = openssl::base64::encode_block(&scalar);
    let b64url = b64
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_");
    let mut needles = vec![
        ("PEM body", body.concat().into_bytes()),
        ("DER", der.clone()),
        ("scalar", scalar.clone()),
        ("scalar in hex", hex.clone().into_bytes()),
        ("scalar in upper-case hex", hex.to_uppercase().into_bytes()),
        ("scalar in openssl's hex", colon_hex(&scalar).into_bytes()),
        ("scalar in base64", b64.into_bytes()),
        ("scalar in base64url (JWK d)", b64url.into_bytes()),
    ];
    // PEM lines holding scalar bytes (the others are the fixed header or the public key).
    for (i, line) in body.iter().enumerate() {
        let (start, end) = (i * 48, i * 48 + 48);
        if start < at + 32 && at < end {
            needles.push(("PEM line", line.as_bytes().to_vec()));
        }
    }
    needles
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir`, not following symlinks.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

/// IP spellings for the parser comparison: fixed edge cases, then seeded random addresses
/// near the range edges and anywhere, written canonically, in full, in upper case, and with
/// one character dropped, doubled or replaced.
fn ip_inputs() -> Vec<String> {
    let mut inputs: Vec<String> = [
        "192.168.1.10",
        "10.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3",
        "1.2.3.4.5",
        "1.2.3.04",
        "1..2.3",
        "",
        " ",
        "::",
        "::1",
        "fd00::1",
        "FD00::ABCD",
        "fe80::1%eth0",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "1::2::3",
        ":::",
        "12345::",
        "::ffff:192.168.1.10",
        "::192.168.1.10",
        "64:ff9b::10.0.0.1",
        "1:2:3:4:5:6:1.2.3.4",
        "1:2:3:4:5:6:7:1.2.3.4",
        "1.2.3.4::",
        "fd00::1.2.3.4",
        "fd00:0:0:0:0:0:0:1",
        "fd00:0000::0001",
        "00000::1",
        "2001:db8::1",
        "8.8.8.8",
        "100.64.1.1",
        "172.32.0.1",
        "172.31.255.255",
        "169.254.1.1",
        "127.0.0.1",
        "fc00::",
        "fbff::1",
        "fe80::",
        "febf::1",
        "fec0::1",
        "+1.2.3.4",
        " 192.168.1.10 ",
        "[::1]",
        "::1/128",
        "0x1.2.3.4",
        "1e2.0.0.1",
        "fd00::1:",
        ":fd00::1",
        "fd00:::1",
        "fd00::1::",
        "1:0:0:1:0:0:0:1",
        "1:0:0:0:1:0:0:1",
        "0:0:0:0:0:0:0:0",
        "::0:0",
        "::ffff:0:0",
        "0:0:0:0:0:ffff:7f00:1",
        "::ffff:1.2.3",
        "192.168.1.255\t",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut rng = StdRng::seed_from_u64(11);
    let edges: Vec<ipnet::IpNet> = smsgate_ca::policy::range::non_global().nets().to_vec();
    for i in 0..400 {
        let ip: IpAddr = match i % 4 {
            0 => IpAddr::from(rng.random::<[u8; 4]>()),
            1 => IpAddr::from(rng.random::<[u8; 16]>()),
            _ => {
                let net = edges[rng.random_range(0..edges.len())];
                let addr = if rng.random() {
                    net.network()
                } else {
                    net.broadcast()
                };
                step(addr, rng.random_range(-1..=1))
            }
        };
        let text = match rng.random_range(0..5) {
            0 => ip.to_string(),
            1 => match ip {
                IpAddr::V4(a) => a.to_string(),
                IpAddr::V6(a) => a
                    .segments()
                    .iter()
                    .map(|g| format!("{g:x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            },
            2 => ip.to_string().to_uppercase(),
            _ => {
                let mut chars: Vec<char> = ip.to_string().chars().collect();
                let at = rng.random_range(0..chars.len());
                match rng.random_range(0..3) {
                    0 => {
                        chars.remove(at);
                    }
                    1 => chars.insert(at, chars[at]),
                    _ => chars[at] = [':', '.', '0', 'f', 'g'][rng.random_range(0..5)],
                }
                chars.into_iter().collect()
            }
        };
        inputs.push(text);
    }
    inputs
}

/// The address `delta` (−1, 0 or +1) away, wrapping.
fn step(ip: IpAddr, delta: i32) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::from(std::net::Ipv4Addr::from(
            u32::from(a).wrapping_add_signed(delta),
        )),
        IpAddr::V6(a) => IpAddr::from(std::net::Ipv6Addr::from(
            u128::from(a).wrapping_add_signed(i128::from(delta)),
        )),
    }
}
