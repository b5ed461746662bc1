//! Headless Chromium driven through WebDriver for the `browser` tests: Debian's
//! `chromedriver` started on a free 127.0.0.1 port, one Chromium with a fresh profile and a
//! downloads directory, and small helpers (keys, waiting on a condition, running a page
//! function). Nothing is downloaded: a missing `chromedriver` fails with what to install.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Where Debian's `chromium-driver` puts it.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Debian's `chromium` launcher.
const CHROMIUM: &str = "/usr/bin/chromium";

/// A Chromium session and the processes behind it.
pub(crate) struct Browser {
    /// The WebDriver session.
    pub(crate) client: Client,
    driver: Child,
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium with a fresh profile.
    pub(crate) async fn start() -> Self {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "the browser tests need Debian's chromium and chromium-driver \
             (apt-get install chromium chromium-driver; .ci/run installs them)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("downloads")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(CHROMEDRIVER);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that Drop can end Chromium too whatever happened.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let agent = ureq::Agent::new_with_defaults();
        let start = Instant::now();
        while agent.get(format!("{url}/status")).call().is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not answer"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    // The flags above still leave DNS queries for Google's autofill server
                    // (seen with strace): no name is resolved, every connection not to the
                    // loopback goes to a dead local proxy port, and those features are off.
                    // What strace still shows is the IPv6 reachability probe, a UDP connect()
                    // that asks the kernel for a route and sends nothing.
                    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                    "--proxy-server=http://127.0.0.1:9",
                    "--disable-features=AutofillServerCommunication,DnsOverHttps,\
                     OptimizationHints,MediaRouter,Translate",
                    "--disable-domain-reliability",
                    "--no-pings",
                    "--window-size=1000,900",
                    format!("--user-data-dir={}", dir.path().join("profile").display()),
                ],
                "prefs": {
                    "download.default_directory": dir.path().join("downloads"),
                    "download.prompt_for_download": false,
                },
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a Chromium session through chromedriver");
        Self {
            client,
            driver,
            dir,
        }
    }

    /// Where the browser saves downloads.
    pub(crate) fn downloads(&self) -> PathBuf {
        self.dir.path().join("downloads")
    }

    /// Ends the session (Chromium exits) and chromedriver.
    pub(crate) async fn quit(self) {
        let _ = self.client.clone().close().await;
    }

    /// The text of an element.
    pub(crate) async fn text(&self, id: &str) -> String {
        self.client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no #{id}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Runs `body` as an async function in the page (`arguments` are its arguments; its
    /// result comes back as JSON). Errors are returned as `{"error": message}`.
    pub(crate) async fn run(&self, body: &str, args: Vec<Value>) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];
             (async (...arguments) => {{ {body} }})(...Array.from(arguments).slice(0, -1))
               .then(done, (e) => done({{error: String(e && e.stack || e)}}));"
        );
        self.client
            .execute_async(&script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{body}"))
    }

    /// Waits until `#status` contains one of `words`; returns its text.
    pub(crate) async fn wait_status(&self, words: &[&str], timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let status = self.text("status").await;
            if words.iter().any(|w| status.contains(w)) {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "#status never said any of {words:?}; it says {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Presses keys one after another on whatever has the focus, as a person would.
    pub(crate) async fn press(&self, keys: &[char]) {
        let mut actions = KeyActions::new("keyboard".to_owned());
        for &key in keys {
            actions = actions
                .then(KeyAction::Down { value: key })
                .then(KeyAction::Up { value: key });
        }
        self.client.perform_actions(actions).await.unwrap();
    }

    /// Shift+Tab.
    pub(crate) async fn shift_tab(&self) {
        let shift = char::from(fantoccini::key::Key::Shift);
        let tab = char::from(fantoccini::key::Key::Tab);
        let actions = KeyActions::new("keyboard".to_owned())
            .then(KeyAction::Down { value: shift })
            .then(KeyAction::Down { value: tab })
            .then(KeyAction::Up { value: tab })
            .then(KeyAction::Up { value: shift });
        self.client.perform_actions(actions).await.unwrap();
    }

    /// The id of the focused element.
    pub(crate) async fn focused(&self) -> String {
        self.client
            .execute("return document.activeElement.id;", vec![])
            .await
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Chromium's console log since the last call (and empties it).
    pub(crate) async fn log(&self) -> Vec<Value> {
        let log = self.client.issue_cmd(BrowserLog).await.unwrap();
        serde_json::from_value(log).unwrap()
    }

    /// A PNG of the whole page, beyond the window (DevTools' `Page.captureScreenshot`).
    pub(crate) async fn full_screenshot(&self) -> Vec<u8> {
        let size = self
            .run(
                "return [document.documentElement.scrollWidth, \
                 document.documentElement.scrollHeight];",
                vec![],
            )
            .await;
        let shot = self
            .client
            .issue_cmd(Cdp {
                cmd: "Page.captureScreenshot",
                params: json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
                }),
            })
            .await
            .unwrap();
        openssl::base64::decode_block(shot["data"].as_str().unwrap()).unwrap()
    }

    /// Waits until the downloads directory holds `name` (complete, not `.crdownload`).
    pub(crate) async fn downloaded(&self, name: &str) -> Vec<u8> {
        let path = self.downloads().join(name);
        let start = Instant::now();
        loop {
            if let Ok(bytes) = std::fs::read(&path) {
                if !bytes.is_empty() {
                    return bytes;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{name} was not downloaded; the directory holds {:?}",
                std::fs::read_dir(self.downloads())
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the Chromium it started share its process group.
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

/// chromedriver's `se/log` for the browser's console.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(r#"{"type": "browser"}"#.to_owned()),
        )
    }
}

/// A DevTools command through chromedriver's `goog/cdp/execute`.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params});
        (http::Method::POST, Some(body.to_string()))
    }
}
