//! The HTTP transport shared by the client commands and `sync`: the one way we build a `ureq`
//! [`Agent`] and the mapping of every transport failure to one clear sentence.
//!
//! `ureq` 3 with `native-tls-no-default` has three traps (ECOSYSTEM §7), all closed here:
//! native-tls must be selected explicitly, root certificates must be set explicitly (the
//! default `WebPki` panics at connect time), and 4xx/5xx must not become errors that swallow
//! the JSON error body. Every exchange carries a global timeout.
//!
//! This module knows nothing about CSRs, spools or the API's routes; it moves bytes and says
//! what went wrong.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use ureq::http::{Method, Request};
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
use ureq::Agent;

/// The largest response body we read (a certificate chain, a batch of envelopes).
pub const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// Which certificates an `https://` API must chain to.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The platform's roots (OpenSSL's default store for native-tls).
    Platform,
    /// Only these certificates (`--ca-file`): pin a private CA for a private API.
    Roots(Vec<Certificate<'static>>),
}

impl Trust {
    /// Reads `--ca-file`: one or more PEM certificates.
    pub fn from_file(path: &Path) -> Result<Self, HttpError> {
        let bad = |detail: String| HttpError::CaFile {
            path: path.to_path_buf(),
            detail,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("it holds no PEM certificate".to_owned()));
        }
        let mut roots = Vec::with_capacity(certs.len());
        for cert in certs {
            let der = cert.to_der().map_err(|e| bad(e.to_string()))?;
            roots.push(Certificate::from_der(&der).to_owned());
        }
        Ok(Self::Roots(roots))
    }

    /// `--ca-file` when given, else the platform roots.
    pub fn from_option(path: Option<&Path>) -> Result<Self, HttpError> {
        path.map_or(Ok(Self::Platform), Self::from_file)
    }
}

/// Refuses a plain `http://` base URL whose host is not loopback, unless `insecure` (the
/// `--insecure-http` flag): over plain HTTP anyone on the path could read a bearer token and
/// answer with forgeries. Checked before any connection is made.
pub fn check_plain_http(base: &str, insecure: bool) -> Result<(), HttpError> {
    let trimmed = base.trim();
    let Some(rest) = trimmed
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("http://"))
        .map(|_| &trimmed[7..])
    else {
        return Ok(());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback || insecure {
        return Ok(());
    }
    Err(HttpError::BadUrl {
        url: base.to_owned(),
        detail: format!(
            "plain http:// to {host}, which is not this machine, would send everything in clear \
             and accept forged answers: use https://, or pass --insecure-http if you really mean it"
        ),
    })
}

/// Builds the agent every command uses: native-tls with explicit roots, statuses returned as
/// responses, and a global timeout on every call.
pub fn build_agent(trust: &Trust, timeout: Duration) -> Agent {
    let roots = match trust {
        Trust::Platform => RootCerts::PlatformVerifier,
        Trust::Roots(certs) => RootCerts::new_with_certs(certs),
    };
    let tls = TlsConfig::builder()
        .provider(TlsProvider::NativeTls)
        .root_certs(roots)
        .build();
    Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .user_agent(concat!("smsgate-ca/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

/// An API base URL (`…/api/v1`) with an agent and, for the sync endpoints, a bearer token.
#[derive(Clone)]
pub struct Transport {
    agent: Agent,
    base: String,
    token: Option<zeroize::Zeroizing<String>>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("Transport")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Transport {
    /// Checks the base URL (`http://` or `https://`, no query) and keeps it without a
    /// trailing slash.
    pub fn new(base: &str, agent: Agent) -> Result<Self, HttpError> {
        let trimmed = base.trim().trim_end_matches('/');
        let bad = |detail: &str| HttpError::BadUrl {
            url: base.to_owned(),
            detail: detail.to_owned(),
        };
        let rest = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"))
            .ok_or_else(|| bad("it must start with http:// or https://"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad("it names no host"));
        }
        if trimmed.contains(['?', '#', ' ']) {
            return Err(bad(
                "it must be a plain base URL such as https://ca.example/api/v1",
            ));
        }
        trimmed
            .parse::<ureq::http::Uri>()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            agent,
            base: trimmed.to_owned(),
            token: None,
        })
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: zeroize::Zeroizing<String>) -> Self {
        self.token = Some(token);
        self
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `GET base+path`.
    pub fn get(&self, path: &str, timeout: Duration) -> Result<Answer, HttpError> {
        self.exchange(Method::GET, path, None, timeout)
    }

    /// `POST base+path` with a JSON body.
    pub fn post_json(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<Answer, HttpError> {
        let bytes = serde_json::to_vec(body).expect("request bodies serialise to JSON");
        self.exchange(
            Method::POST,
            path,
            Some((bytes, "application/json")),
            timeout,
        )
    }

    /// `PUT base+path` with raw bytes.
    pub fn put(
        &self,
        path: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
        timeout: Duration,
    ) -> Result<Answer, HttpError> {
        self.exchange(Method::PUT, path, Some((bytes, content_type)), timeout)
    }

    fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &'static str)>,
        timeout: Duration,
    ) -> Result<Answer, HttpError> {
        let url = self.url(path);
        let mut builder = Request::builder()
            .method(method)
            .uri(&url)
            .header("Accept", "application/json");
        if let Some(token) = &self.token {
            builder = builder.header("Authorization", format!("Bearer {}", token.as_str()));
        }
        let (bytes, content_type) = body.unwrap_or_default();
        if !content_type.is_empty() {
            builder = builder.header("Content-Type", content_type);
        }
        let request = builder.body(bytes).map_err(|e| HttpError::BadUrl {
            url: url.clone(),
            detail: e.to_string(),
        })?;
        let request = self
            .agent
            .configure_request(request)
            .timeout_global(Some(timeout.max(Duration::from_millis(100))))
            .build();
        let response = self
            .agent
            .run(request)
            .map_err(|e| HttpError::from_ureq(&url, e))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type");
        let retry_after = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
        let body = response
            .into_body()
            .into_with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(|e| HttpError::from_ureq(&url, e))?;
        Ok(Answer {
            url,
            status,
            content_type,
            retry_after,
            body,
        })
    }
}

/// One HTTP answer, whatever its status.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The URL asked.
    pub url: String,
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// `Retry-After` in whole seconds, when sent.
    pub retry_after: Option<u64>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Decodes the body as `T`, or says what came instead.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| self.garbage(Some(&e)))
    }

    /// The `{"error": {"message", "reason"}}` body of a failed answer, if it has one.
    pub fn error_body(&self) -> Option<ErrorBody> {
        #[derive(Deserialize)]
        struct Envelope {
            error: ErrorBody,
        }
        serde_json::from_slice::<Envelope>(&self.body)
            .ok()
            .map(|e| ErrorBody {
                message: super::escape(&e.error.message),
                reason: e.error.reason.as_deref().map(super::escape),
            })
    }

    /// The error for a status the caller did not expect: the API's message when it sent one,
    /// else a description of what came back.
    pub fn unexpected(&self) -> HttpError {
        match self.error_body() {
            Some(body) => HttpError::Status {
                url: self.url.clone(),
                status: self.status,
                message: body.message,
            },
            None => self.garbage(None),
        }
    }

    /// An answer that is not what the API sends.
    pub fn garbage(&self, parse: Option<&serde_json::Error>) -> HttpError {
        let text = String::from_utf8_lossy(&self.body);
        let trimmed = text.trim_start();
        let what = if self.body.is_empty() {
            "an empty body".to_owned()
        } else if trimmed.starts_with('<') {
            "an HTML page".to_owned()
        } else if self
            .content_type
            .as_deref()
            .is_some_and(|c| c.contains("json"))
        {
            match parse {
                Some(e) => format!("JSON of an unexpected shape ({e})"),
                None => "JSON without an error message".to_owned(),
            }
        } else {
            "something that is not JSON".to_owned()
        };
        HttpError::Garbage {
            url: self.url.clone(),
            status: self.status,
            what,
        }
    }
}

/// The API's error object.
#[derive(Clone, Debug, Deserialize)]
pub struct ErrorBody {
    /// The plain-words message.
    #[serde(default)]
    pub message: String,
    /// A stable reason code for policy refusals (e.g. `ip_not_allowed`).
    #[serde(default)]
    pub reason: Option<String>,
}

/// What can go wrong talking to an API, each a sentence that names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The base URL is not usable.
    #[error("{url:?} is not a usable API URL: {detail}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why.
        detail: String,
    },
    /// `--ca-file` cannot be used.
    #[error("cannot use {} as --ca-file: {detail}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// No connection (refused, unresolvable, reset).
    #[error("cannot reach {url}: {detail}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What the system said.
        detail: String,
    },
    /// The TLS handshake failed (untrusted certificate, wrong name, no TLS).
    #[error(
        "TLS with {url} failed: {detail} (if the API uses a private CA, pass its certificate \
         with --ca-file)"
    )]
    Tls {
        /// The URL asked.
        url: String,
        /// What the TLS library said.
        detail: String,
    },
    /// No complete answer in time.
    #[error("{url} did not answer in time")]
    Timeout {
        /// The URL asked.
        url: String,
    },
    /// Something answered, but not the API.
    #[error(
        "{url} answered {status} with {what}, not the API's JSON: check that the URL is the API \
         base ending in /api/v1"
    )]
    Garbage {
        /// The URL asked.
        url: String,
        /// The status code.
        status: u16,
        /// What came instead.
        what: String,
    },
    /// The API refused with an error message.
    #[error("{url} answered {status}: {message}")]
    Status {
        /// The URL asked.
        url: String,
        /// The status code.
        status: u16,
        /// The API's message.
        message: String,
    },
}

impl HttpError {
    /// Maps a `ureq` error for `url` to a sentence.
    pub fn from_ureq(url: &str, err: ureq::Error) -> Self {
        let url = url.to_owned();
        match err {
            ureq::Error::Timeout(_) => Self::Timeout { url },
            ureq::Error::HostNotFound => Self::Unreachable {
                url,
                detail: "the host name does not resolve".to_owned(),
            },
            ureq::Error::ConnectionFailed => Self::Unreachable {
                url,
                detail: "the connection failed".to_owned(),
            },
            ureq::Error::Io(e) => match e.kind() {
                std::io::ErrorKind::ConnectionRefused => Self::Unreachable {
                    url,
                    detail: "connection refused (is the server running?)".to_owned(),
                },
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                    Self::Timeout { url }
                }
                _ => Self::Unreachable {
                    url,
                    detail: e.to_string(),
                },
            },
            ureq::Error::Tls(detail) => Self::Tls {
                url,
                detail: detail.to_owned(),
            },
            ureq::Error::NativeTls(e) => Self::Tls {
                url,
                detail: e.to_string(),
            },
            ureq::Error::Der(e) => Self::Tls {
                url,
                detail: e.to_string(),
            },
            ureq::Error::BadUri(detail) => Self::BadUrl { url, detail },
            ureq::Error::Protocol(e) => Self::Garbage {
                url,
                status: 0,
                what: format!("something that is not HTTP ({e})"),
            },
            ureq::Error::BodyExceedsLimit(n) => Self::Garbage {
                url,
                status: 0,
                what: format!("a body larger than {n} bytes"),
            },
            other => Self::Unreachable {
                url,
                detail: other.to_string(),
            },
        }
    }

    /// Whether trying again later may help (outage, timeout, garbage from a proxy, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } | Self::Garbage { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::BadUrl { .. } | Self::CaFile { .. } | Self::Tls { .. } => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (STYLE §17).
mod tests {
    use super::*;

    /// ECOSYSTEM §7: an agent built with the default roots panics at connect time under
    /// `native-tls-no-default`. Ours sets native-tls and explicit roots.
    #[test]
    fn agent_sets_native_tls_and_explicit_roots() {
        let agent = build_agent(&Trust::Platform, Duration::from_secs(5));
        let tls = agent.config().tls_config();
        assert_eq!(tls.provider(), TlsProvider::NativeTls);
        assert!(matches!(tls.root_certs(), RootCerts::PlatformVerifier));
        assert!(!agent.config().http_status_as_error());
        assert_eq!(
            agent.config().timeouts().global,
            Some(Duration::from_secs(5))
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, self_signed_pem()).unwrap();
        let trust = Trust::from_file(&path).unwrap();
        let agent = build_agent(&trust, Duration::from_secs(5));
        assert!(matches!(
            agent.config().tls_config().root_certs(),
            RootCerts::Specific(c) if c.len() == 1
        ));
    }

    /// Connecting over https with the agent must give an error, never the WebPki panic.
    #[test]
    fn https_to_a_closed_port_is_an_error_not_a_panic() {
        let port = closed_port();
        let agent = build_agent(&Trust::Platform, Duration::from_secs(5));
        let t = Transport::new(&format!("https://127.0.0.1:{port}/api/v1"), agent).unwrap();
        let err = t.get("/csr/x", Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, HttpError::Unreachable { .. }), "{err}");
        assert!(err.is_transient());
    }

    #[test]
    fn plain_http_servers_that_are_not_tls_fail_the_handshake_cleanly() {
        // A listener that answers plain HTTP to a TLS hello.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                use std::io::Write;
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let agent = build_agent(&Trust::Platform, Duration::from_secs(5));
        let t = Transport::new(&format!("https://127.0.0.1:{port}/api/v1"), agent).unwrap();
        let err = t.get("/csr/x", Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, HttpError::Tls { .. }), "{err:?}");
    }

    #[test]
    fn base_urls_are_checked() {
        let agent = || build_agent(&Trust::Platform, Duration::from_secs(1));
        let t = Transport::new("http://127.0.0.1:3000/api/v1/", agent()).unwrap();
        assert_eq!(t.url("/csr"), "http://127.0.0.1:3000/api/v1/csr");
        for bad in [
            "ftp://x/api/v1",
            "127.0.0.1:3000",
            "http://",
            "http://x/api?y=1",
        ] {
            assert!(Transport::new(bad, agent()).is_err(), "{bad}");
        }
    }

    /// Issue 16: `http://` to another host is refused before any packet is sent.
    #[test]
    fn issue_16_plain_http_is_for_loopback_only() {
        for ok in [
            "http://127.0.0.1:3000/api/v1",
            "http://localhost/api/v1",
            "http://[::1]:8080/api/v1",
            "http://127.1.2.3/api/v1",
            "https://192.0.2.1/api/v1",
        ] {
            assert!(check_plain_http(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "http://192.0.2.1/api/v1",
            "HTTP://192.0.2.1:80/api/v1",
            "http://ca.example/api/v1",
            "http://[2001:db8::1]/api/v1",
            "http://127.0.0.1@192.0.2.1/api/v1",
        ] {
            let e = check_plain_http(bad, false).unwrap_err();
            assert!(e.to_string().contains("--insecure-http"), "{bad}: {e}");
            assert!(check_plain_http(bad, true).is_ok(), "{bad}");
        }
    }

    #[test]
    fn garbage_is_described() {
        let answer = |body: &str, ct: Option<&str>| Answer {
            url: "http://x/api/v1/csr".into(),
            status: 200,
            content_type: ct.map(str::to_owned),
            retry_after: None,
            body: body.as_bytes().to_vec(),
        };
        let e = answer("<html>hi</html>", Some("text/html")).json::<serde_json::Value>();
        assert!(e.unwrap_err().to_string().contains("HTML page"));
        let e = answer("", None).json::<serde_json::Value>();
        assert!(e.unwrap_err().to_string().contains("empty body"));
        let a = answer(
            r#"{"error":{"code":400,"message":"no","reason":"ip_not_allowed"}}"#,
            None,
        );
        let body = a.error_body().unwrap();
        assert_eq!(body.reason.as_deref(), Some("ip_not_allowed"));
        assert_eq!(body.message, "no");
    }

    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    fn self_signed_pem() -> Vec<u8> {
        use openssl::asn1::Asn1Time;
        use openssl::hash::MessageDigest;
        use openssl::x509::{X509Builder, X509NameBuilder};
        let key = crate::key_type::KeyType::EcP256.generate().unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "test").unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        b.build().to_pem().unwrap()
    }
}
