//! The web page at `/` (issue 11) in Firefox ESR, driven through Marionette (`marionette`),
//! against `serve` + `sync --watch` + `daemon`: DESIGN §5 says the page works in current
//! Chromium and Firefox, and `browser` covers Chromium in depth. Here: a public IP is refused
//! before any key is made, the webhook flow ends in a certificate that openssl checks against
//! the key, the IP and the chain, and a reload shows the same key again.

use std::time::Duration;

use serde_json::json;

use super::browser::check_issued;
use super::e2e::Stack;
use super::marionette::Firefox;

#[test]
fn issue_11_web_page_in_headless_firefox() {
    let stack = Stack::start();
    let base = stack.api.trim_end_matches("/api/v1").to_owned();
    let work = tempfile::tempdir().unwrap();
    let mut firefox = Firefox::start();
    firefox.navigate(&format!("{base}/"));
    let secure = firefox.run("return window.isSecureContext && !!crypto.subtle;", vec![]);
    assert_eq!(secure, json!(true), "WebCrypto is there on 127.0.0.1");

    firefox.run(
        "window.made = 0;
         const generate = crypto.subtle.generateKey.bind(crypto.subtle);
         crypto.subtle.generateKey = (...a) => { window.made++; return generate(...a); };",
        vec![],
    );
    firefox.type_into("ip", "8.8.8.8");
    firefox.click("request");
    let status = firefox.wait_status(&["denied"], Duration::from_secs(10));
    assert!(status.contains("8.8.8.8 is a public address"), "{status}");
    assert_eq!(firefox.run("return window.made;", vec![]), json!(0));

    // Enter in the field submits.
    firefox.type_into("ip", "192.168.1.10\u{e007}");
    let status = firefox.wait_status(&["approved", "denied"], Duration::from_secs(90));
    assert!(status.starts_with("approved: "), "{status}");
    let cert = firefox.text("certificate") + "\n";
    let key = firefox.text("private-key") + "\n";
    let link = firefox.run("return document.getElementById('ca-link').href;", vec![]);
    let issued = check_issued(
        &stack,
        work.path(),
        &cert,
        &key,
        "192.168.1.10",
        link.as_str().unwrap(),
    );
    assert_eq!(issued.serial_prefix, "01");

    firefox.command("WebDriver:Refresh", json!({}));
    firefox.wait_status(&["approved"], Duration::from_secs(30));
    assert_eq!(
        firefox.text("private-key") + "\n",
        key,
        "the key survives a reload"
    );
    let loaded = firefox.run(
        "return performance.getEntriesByType('resource').map((e) => e.name);",
        vec![],
    );
    for url in loaded.as_array().unwrap() {
        assert!(
            url.as_str().unwrap().starts_with(&format!("{base}/")),
            "Firefox loaded {url}"
        );
    }
}
