//! Headless Firefox ESR for the `firefox` test, driven through Marionette, the remote protocol
//! built into Firefox (length-prefixed JSON over TCP; geckodriver speaks it too, but Debian
//! does not package geckodriver). A fresh profile asks Firefox for a free port and fences the
//! network: every connection that is not to 127.0.0.1 goes to a dead local proxy port, so the
//! browser reaches nothing but the server under test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Debian's `firefox-esr`.
const FIREFOX: &str = "/usr/bin/firefox-esr";

/// A Firefox with one Marionette session.
pub(crate) struct Firefox {
    child: Child,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Firefox {
    /// Starts headless Firefox on a fresh, fenced profile and opens a session.
    pub(crate) fn start() -> Self {
        assert!(
            Path::new(FIREFOX).exists(),
            "the Firefox test needs Debian's firefox-esr (apt-get install firefox-esr; .ci/run \
             installs it)"
        );
        let profile = tempfile::tempdir().unwrap();
        std::fs::write(profile.path().join("user.js"), PREFS).unwrap();
        let mut command = Command::new(FIREFOX);
        command
            .args(["--headless", "--marionette", "--no-remote", "--profile"])
            .arg(profile.path())
            .args(["--width", "1000", "--height", "900"])
            .env("MOZ_CRASHREPORTER_DISABLE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that Drop ends the content processes too.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().unwrap();
        // With marionette.port = 0, Firefox writes the port it took into the profile.
        let port_file = profile.path().join("MarionetteActivePort");
        let start = Instant::now();
        let stream = loop {
            let port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse::<u16>().ok());
            if let Some(stream) = port.and_then(|p| TcpStream::connect(("127.0.0.1", p)).ok()) {
                break stream;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "Firefox did not open Marionette"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let mut firefox = Self {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            child,
            next_id: 0,
            _profile: profile,
        };
        let hello = firefox.receive();
        assert_eq!(hello["applicationType"], "gecko", "{hello}");
        firefox.command("WebDriver:NewSession", json!({"capabilities": {}}));
        firefox
    }

    /// Sends one command; returns its result, panicking on a Marionette error.
    pub(crate) fn command(&mut self, name: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let body = json!([0, id, name, params]).to_string();
        write!(self.writer, "{}:{body}", body.len()).unwrap();
        loop {
            let reply = self.receive();
            if reply[1] == id {
                assert!(reply[2].is_null(), "{name}: {}", reply[2]);
                return reply[3].clone();
            }
        }
    }

    /// Opens `url` and waits for it to load.
    pub(crate) fn navigate(&mut self, url: &str) {
        self.command("WebDriver:Navigate", json!({"url": url}));
    }

    /// Runs `body` as an async function in the page; returns its result.
    pub(crate) fn run(&mut self, body: &str, args: Vec<Value>) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];
             (async (...arguments) => {{ {body} }})(...Array.from(arguments).slice(0, -1))
               .then(done, (e) => done({{error: String(e && e.stack || e)}}));"
        );
        self.command(
            "WebDriver:ExecuteAsyncScript",
            json!({"script": script, "args": args}),
        )["value"]
            .clone()
    }

    /// The text of the element with id `id`.
    pub(crate) fn text(&mut self, id: &str) -> String {
        let element = self.element(id);
        self.command("WebDriver:GetElementText", json!({"id": element}))["value"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Replaces the value of the field with id `id` by typing `text`.
    pub(crate) fn type_into(&mut self, id: &str, text: &str) {
        let element = self.element(id);
        self.command("WebDriver:ElementClear", json!({"id": element}));
        self.command(
            "WebDriver:ElementSendKeys",
            json!({"id": element, "text": text}),
        );
    }

    /// Clicks the element with id `id`.
    pub(crate) fn click(&mut self, id: &str) {
        let element = self.element(id);
        self.command("WebDriver:ElementClick", json!({"id": element}));
    }

    /// Waits until `#status` contains one of `words`; returns its text.
    pub(crate) fn wait_status(&mut self, words: &[&str], timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let status = self.text("status");
            if words.iter().any(|w| status.contains(w)) {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "#status never said any of {words:?}; it says {status:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn element(&mut self, id: &str) -> String {
        let found = self.command(
            "WebDriver:FindElement",
            json!({"using": "css selector", "value": format!("#{id}")}),
        );
        found["value"]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no #{id}: {found}"))
            .to_owned()
    }

    /// One `length:json` message.
    fn receive(&mut self) -> Value {
        let mut length = Vec::new();
        self.reader.read_until(b':', &mut length).unwrap();
        length.pop();
        let length: usize = std::str::from_utf8(&length).unwrap().parse().unwrap();
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        let body = json!([0, u64::MAX, "Marionette:Quit", {}]).to_string();
        let _ = write!(self.writer, "{}:{body}", body.len());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The profile: Marionette on a free port, nothing in the background, every name resolved to
/// 127.0.0.1 without asking DNS, and a proxy fence (127.0.0.1:9, where nothing listens) for
/// every address but the loopback one, which Firefox never proxies. (`strace -f -e connect`
/// of the test shows no connection but to 127.0.0.1 and Unix sockets.)
const PREFS: &str = r#"
user_pref("marionette.port", 0);
user_pref("network.proxy.type", 1);
user_pref("network.proxy.http", "127.0.0.1");
user_pref("network.proxy.http_port", 9);
user_pref("network.proxy.ssl", "127.0.0.1");
user_pref("network.proxy.ssl_port", 9);
user_pref("network.proxy.socks", "127.0.0.1");
user_pref("network.proxy.socks_port", 9);
user_pref("network.proxy.socks_remote_dns", true);
user_pref("network.proxy.no_proxies_on", "");
user_pref("network.trr.mode", 5);
user_pref("network.dns.forceResolve", "127.0.0.1");
user_pref("network.dns.native_https_query", false);
user_pref("network.dns.echconfig.enabled", false);
user_pref("services.settings.server", "http://127.0.0.1:9/v1");
user_pref("network.dns.disablePrefetch", true);
user_pref("network.prefetch-next", false);
user_pref("network.predictor.enabled", false);
user_pref("network.http.speculative-parallel-limit", 0);
user_pref("network.http.http3.enable", false);
user_pref("browser.urlbar.quicksuggest.enabled", false);
user_pref("browser.newtabpage.activity-stream.feeds.system.topstories", false);
user_pref("browser.newtabpage.activity-stream.feeds.snippets", false);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("app.update.auto", false);
user_pref("app.update.enabled", false);
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("browser.safebrowsing.downloads.enabled", false);
user_pref("browser.safebrowsing.blockedURIs.enabled", false);
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.page", 0);
user_pref("browser.startup.homepage", "about:blank");
user_pref("browser.newtabpage.enabled", false);
user_pref("browser.region.update.enabled", false);
user_pref("browser.search.update", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("datareporting.healthreport.uploadEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("dom.push.connection.enabled", false);
user_pref("extensions.update.enabled", false);
user_pref("extensions.getAddons.cache.enabled", false);
user_pref("media.gmp-manager.updateEnabled", false);
"#;
