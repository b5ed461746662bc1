//! The bearer token of the sync endpoints: read once from `--sync-token-file`, kept only as
//! its SHA-256, and compared in constant time.
//!
//! Both sides are hashed first so that the comparison is between equal-length digests
//! (`openssl::memcmp::eq` requires equal lengths, and this way the token's length does not
//! leak through timing either). The token itself is never logged or kept.

use std::path::Path;

use axum::http::{header, HeaderMap};

/// The sync token, as its SHA-256 digest.
#[derive(Clone)]
pub struct SyncToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for SyncToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncToken(<redacted>)")
    }
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read.
    #[error("cannot read the sync token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is readable by group or others.
    #[error("{0}")]
    LoosePermissions(String),
    /// The token is empty or not printable ASCII.
    #[error("the sync token file {0} must hold one line of printable ASCII without spaces (e.g. `openssl rand -hex 32`)")]
    Malformed(String),
}

impl SyncToken {
    /// A token from its text.
    pub fn new(secret: &str) -> Self {
        Self {
            digest: openssl::sha::sha256(secret.as_bytes()),
        }
    }

    /// Reads a token file: refuses one readable by group or others unless `allow_loose`;
    /// one trailing newline is not part of the token.
    pub fn load(path: &Path, allow_loose: bool) -> Result<Self, TokenError> {
        let shown = path.display().to_string();
        let text = crate::fsx::read_secret_line(path, allow_loose, 4096).map_err(|e| {
            if crate::fsx::is_loose_mode(&e) {
                TokenError::LoosePermissions(e.to_string())
            } else {
                TokenError::Read {
                    path: shown.clone(),
                    source: e,
                }
            }
        })?;
        let ok = !text.is_empty() && text.iter().all(u8::is_ascii_graphic);
        if !ok {
            return Err(TokenError::Malformed(shown));
        }
        let token = Self {
            digest: openssl::sha::sha256(&text),
        };
        Ok(token)
    }

    /// Whether the request carries `Authorization: Bearer <this token>`.
    pub fn verify(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, presented)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let presented = openssl::sha::sha256(presented.trim().as_bytes());
        openssl::memcmp::eq(&presented, &self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn verifies_bearer_tokens() {
        let t = SyncToken::new("s3cret");
        assert!(t.verify(&headers("Bearer s3cret")));
        assert!(t.verify(&headers("bearer s3cret")));
        assert!(!t.verify(&headers("Bearer s3cret2")));
        assert!(!t.verify(&headers("Basic s3cret")));
        assert!(!t.verify(&headers("s3cret")));
        assert!(!t.verify(&HeaderMap::new()));
        assert_eq!(format!("{t:?}"), "SyncToken(<redacted>)");
    }

    #[test]
    fn loads_token_files_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = SyncToken::load(&path, false).unwrap();
        assert!(t.verify(&headers("Bearer abc123")));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SyncToken::load(&path, false),
            Err(TokenError::LoosePermissions(_))
        ));
        assert!(SyncToken::load(&path, true).is_ok());

        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            SyncToken::load(&path, true),
            Err(TokenError::Malformed(_))
        ));
    }
}
