//! The web page of `serve` (DESIGN §5, "A web page for people without a terminal"): `GET /`
//! and the files it loads from `/web/{file}`, embedded in the binary from the repository's
//! `web/` directory at build time (no build step, nothing downloaded, nothing read at run time).
//!
//! This module owns those bytes and the headers they go out with: `Content-Security-Policy:
//! default-src 'self'` (the page loads nothing from elsewhere and has no inline script or
//! style), `X-Content-Type-Options: nosniff`, no referrer, no framing, and revalidated caching
//! (`Cache-Control: no-cache` with an `ETag` of the content, answered `304` when it matches).
//! It holds no state and sees no key: the page makes the key pair and the CSR in the browser
//! and talks to the public API like any other client.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use openssl::sha::sha256;

use super::error::ApiError;

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its name under `/web/` (`index.html` is served at `/`).
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// The page and every file it loads.
pub static ASSETS: [Asset; 5] = [
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../web/index.html"),
    },
    Asset {
        name: "page.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/page.css"),
    },
    Asset {
        name: "page.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/page.js"),
    },
    Asset {
        name: "csr.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/csr.js"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../web/icon.svg"),
    },
];

/// The exact policy DESIGN §5 fixes for the page: its own origin only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'";

/// `GET /`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    respond(&ASSETS[0], ETAGS[0].as_str(), &headers)
}

/// `GET /web/{file}`: the page's stylesheet, scripts and icon.
pub async fn file(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (asset, etag) = ASSETS
        .iter()
        .zip(ETAGS.iter())
        .find(|(a, _)| a.name == name)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no such file of the web page: {}",
                super::csr::shorten(&name)
            ))
        })?;
    Ok(respond(asset, etag, &headers))
}

/// The asset with its headers, or `304 Not Modified` when the client already holds it.
fn respond(asset: &Asset, etag: &str, request: &HeaderMap) -> Response {
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|list| list.split(',').any(|t| t.trim() == "*" || t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let headers = response.headers_mut();
    if !fresh {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
    }
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(etag).expect("an ETag is quoted hex, a valid header value"),
    );
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name.clone(), HeaderValue::from_static(value));
    }
    response
}

/// Every asset's `ETag`: a strong validator from its SHA-256, computed once.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = sha256(a.body);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
        .collect()
});

/// Sent with the page and every file of it.
const SECURITY_HEADERS: &[(header::HeaderName, &str)] = &[
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
    // Revalidate every time (a 304 costs one round trip): a new binary serves a new page at
    // once, never one script of the old version with one of the new.
    (header::CACHE_CONTROL, "no-cache"),
];

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (STYLE §17).
mod tests {
    use super::*;

    fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(tag) = if_none_match {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(tag).unwrap());
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            match path.strip_prefix("/web/") {
                None => index(headers).await,
                Some(name) => file(Path(name.to_owned()), headers)
                    .await
                    .unwrap_or_else(IntoResponse::into_response),
            }
        })
    }

    fn header_of(r: &Response, name: header::HeaderName) -> &str {
        r.headers().get(name).unwrap().to_str().unwrap()
    }

    #[test]
    fn every_file_has_its_type_and_the_security_headers() {
        for (path, kind) in [
            ("/", "text/html"),
            ("/web/page.css", "text/css"),
            ("/web/page.js", "text/javascript"),
            ("/web/csr.js", "text/javascript"),
            ("/web/icon.svg", "image/svg+xml"),
        ] {
            let r = get(path, None);
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert!(
                header_of(&r, header::CONTENT_TYPE).starts_with(kind),
                "{path}"
            );
            assert_eq!(
                header_of(&r, header::CONTENT_SECURITY_POLICY),
                "default-src 'self'"
            );
            assert_eq!(header_of(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert_eq!(header_of(&r, header::CACHE_CONTROL), "no-cache");
            assert!(header_of(&r, header::ETAG).starts_with('"'), "{path}");
        }
    }

    #[test]
    fn a_matching_etag_is_not_modified_and_another_is_the_file() {
        let first = get("/web/page.js", None);
        let etag = header_of(&first, header::ETAG).to_owned();
        let again = get("/web/page.js", Some(&etag));
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header_of(&again, header::ETAG), etag);
        assert_eq!(
            header_of(&again, header::CONTENT_SECURITY_POLICY),
            CONTENT_SECURITY_POLICY
        );
        let list = format!("\"0000\", {etag}");
        assert_eq!(
            get("/web/page.js", Some(&list)).status(),
            StatusCode::NOT_MODIFIED
        );
        // Another file's tag is not this file's.
        let css = header_of(&get("/web/page.css", None), header::ETAG).to_owned();
        assert_ne!(css, etag);
        assert_eq!(get("/web/page.js", Some(&css)).status(), StatusCode::OK);
    }

    #[test]
    fn unknown_files_are_not_found() {
        for name in ["nope.js", "../Cargo.toml", "index.htm", ""] {
            let r = get(&format!("/web/{name}"), None);
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{name}");
        }
    }

    /// The page may load only what this module serves: every `src`/`href` and module import
    /// is one of its files or the CA chain link, every fetch goes to the API, nothing is
    /// inline (tests/it/browser.rs watches what a real browser loads).
    #[test]
    fn the_page_refers_only_to_its_own_files() {
        let text = |name: &str| {
            let a = ASSETS.iter().find(|a| a.name == name).unwrap();
            std::str::from_utf8(a.body).unwrap().to_owned()
        };
        let html = text("index.html");
        for attr in ["src=\"", "href=\""] {
            for part in html.split(attr).skip(1) {
                let target = &part[..part.find('"').unwrap()];
                let served = target
                    .strip_prefix("/web/")
                    .is_some_and(|f| ASSETS.iter().any(|a| a.name == f));
                assert!(
                    served || target == "/api/v1/ca.crt",
                    "index.html refers to {target}"
                );
            }
        }
        assert!(!html.contains("style="), "inline style");
        let handler = html.split(" on").skip(1).find(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(handler.is_none(), "inline event handler: on{handler:?}");
        assert_eq!(html.matches("<script").count(), 1);
        assert!(!html.contains("<style"));
        let css = text("page.css");
        assert!(
            !css.contains("url(") && !css.contains("@import"),
            "page.css loads more"
        );
        for name in ["page.js", "csr.js"] {
            let js = text(name);
            assert!(!js.contains("import("), "{name} imports more");
            assert!(!js.contains("http://"), "{name} names a plain-HTTP address");
            let fetches: Vec<&str> = js.split("fetch(").skip(1).collect();
            assert!(
                fetches.iter().all(|f| f.starts_with("`${API}/")),
                "{name} fetches from elsewhere than the API"
            );
        }
        // The one import is the sibling module, as served.
        let js = text("page.js");
        assert_eq!(js.matches(" from \"").count(), 1);
        assert!(js.contains(" from \"./csr.js\""));
        assert!(text("icon.svg").contains("xmlns=\"http://www.w3.org/2000/svg\""));
    }

    /// The page refuses public addresses with the CLI's ranges: its list is the policy's list
    /// of non-global space, in order (tests/it/browser.rs also runs both on many addresses).
    #[test]
    fn the_page_knows_the_non_global_ranges() {
        let js = std::str::from_utf8(ASSETS[3].body).unwrap();
        let start = js.find("export const NON_GLOBAL = [").unwrap();
        let list = &js[start..start + js[start..].find("];").unwrap()];
        let ranges: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
        let policy: Vec<String> = crate::policy::range::non_global()
            .nets()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ranges, policy);
    }
}
