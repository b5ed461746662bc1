//! CA private keys at rest: PKCS#8 PEM encrypted with a passphrase (AES-256-CBC, PBKDF2 via
//! OpenSSL's PKCS#8 defaults), files 0600, and the passphrase itself in a zeroising buffer
//! whose `Debug` is redacted.
//!
//! Passphrases come from a file or a terminal prompt, never from argv or the environment.

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use openssl::pkey::{PKey, Private};
use openssl::symm::Cipher;
use zeroize::Zeroizing;

use crate::fsx;

/// A passphrase, wiped from memory when dropped, never printed.
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    /// Wraps bytes (taken by value so no copy is left behind).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// Where the CA key's passphrase comes from.
#[derive(Debug, Clone)]
pub enum PassphraseSource {
    /// A file (a trailing newline is not part of the secret).
    File(PathBuf),
    /// Ask on the terminal (twice when creating a key).
    Prompt,
    /// The key is stored unencrypted (development CAs, `--no-passphrase`).
    None,
}

/// Errors about keys and passphrases.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The passphrase file could not be read.
    #[error("cannot read passphrase file {path}: {source}")]
    PassphraseFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The passphrase file is empty.
    #[error("passphrase file {0} is empty: put the passphrase in it")]
    EmptyPassphrase(PathBuf),
    /// No terminal to ask on.
    #[error("no passphrase: there is no terminal to ask on; use --passphrase-file FILE (or LoadCredential=ca-passphrase under systemd)")]
    NoTerminal,
    /// The two prompts differed.
    #[error("the two passphrases differ: try again")]
    Mismatch,
    /// Too short a new passphrase.
    #[error("the passphrase is shorter than 8 characters: choose a longer one")]
    TooShort,
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The key did not decrypt or parse.
    #[error("cannot decrypt the CA key {0}: wrong passphrase, or not a PKCS#8 key")]
    Decrypt(PathBuf),
    /// The key is encrypted but no passphrase source was given.
    #[error("the CA key {0} is encrypted: give --passphrase-file FILE or run on a terminal")]
    NeedPassphrase(PathBuf),
    /// OpenSSL failed.
    #[error("OpenSSL: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
}

impl PassphraseSource {
    /// Reads the passphrase; `confirm` asks twice on a terminal (when creating a key). A
    /// passphrase file must be private (0600 or stricter), like a key file.
    pub fn read(&self, confirm: bool) -> Result<Option<Passphrase>, KeyError> {
        self.read_allowing(confirm, false)
    }

    /// Like [`PassphraseSource::read`]; `allow_loose` is `--allow-loose-permissions`.
    pub fn read_allowing(
        &self,
        confirm: bool,
        allow_loose: bool,
    ) -> Result<Option<Passphrase>, KeyError> {
        match self {
            Self::None => Ok(None),
            Self::File(path) => read_passphrase_file(path, allow_loose).map(Some),
            Self::Prompt => {
                if !std::io::stdin().is_terminal() {
                    return Err(KeyError::NoTerminal);
                }
                let first = prompt("CA key passphrase: ")?;
                if confirm {
                    if first.expose().len() < 8 {
                        return Err(KeyError::TooShort);
                    }
                    let second = prompt("Repeat the passphrase: ")?;
                    if first.expose() != second.expose() {
                        return Err(KeyError::Mismatch);
                    }
                }
                Ok(Some(first))
            }
        }
    }
}

/// Writes a private key as PKCS#8 PEM, encrypted when a passphrase is given, mode 0600.
pub fn store(path: &Path, key: &PKey<Private>, pass: Option<&Passphrase>) -> Result<(), KeyError> {
    let pem = Zeroizing::new(match pass {
        Some(p) => key.private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), p.expose())?,
        None => key.private_key_to_pem_pkcs8()?,
    });
    fsx::write_new(path, &pem, fsx::MODE_SECRET).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Whether a PEM key file is encrypted.
pub fn is_encrypted(pem: &[u8]) -> bool {
    pem.windows(15).any(|w| w == b"ENCRYPTED PRIVA")
}

/// Loads a private key file, decrypting it with the passphrase from `source` when needed.
pub fn load(
    path: &Path,
    source: &PassphraseSource,
    allow_loose: bool,
) -> Result<PKey<Private>, KeyError> {
    fsx::check_private_mode(path, allow_loose).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    let pem = Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?);
    if is_encrypted(&pem) {
        let pass = match source {
            PassphraseSource::None => return Err(KeyError::NeedPassphrase(path.to_owned())),
            other => other
                .read_allowing(false, allow_loose)?
                .ok_or_else(|| KeyError::NeedPassphrase(path.to_owned()))?,
        };
        PKey::private_key_from_pem_passphrase(&pem, pass.expose())
            .map_err(|_| KeyError::Decrypt(path.to_owned()))
    } else {
        PKey::private_key_from_pem(&pem).map_err(|_| KeyError::Decrypt(path.to_owned()))
    }
}

fn read_passphrase_file(path: &Path, allow_loose: bool) -> Result<Passphrase, KeyError> {
    // Refused like a key file when group or others may read it (DESIGN §9).
    let secret =
        fsx::read_secret_line(path, allow_loose, MAX_PASSPHRASE_BYTES).map_err(|source| {
            KeyError::PassphraseFile {
                path: path.to_owned(),
                source,
            }
        })?;
    let bytes = secret.to_vec();
    if bytes.is_empty() {
        return Err(KeyError::EmptyPassphrase(path.to_owned()));
    }
    Ok(Passphrase::new(bytes))
}

fn prompt(text: &str) -> Result<Passphrase, KeyError> {
    let s = rpassword::prompt_password(text).map_err(|source| KeyError::Io {
        path: PathBuf::from("/dev/tty"),
        source,
    })?;
    Ok(Passphrase::new(s.into_bytes()))
}

/// The largest passphrase file read.
const MAX_PASSPHRASE_BYTES: u64 = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_type::KeyType;

    #[test]
    fn encrypted_round_trip_and_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let pass_file = dir.path().join("pass");
        std::fs::write(&pass_file, "correct horse\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pass_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = KeyType::EcP256.generate().unwrap();
        let src = PassphraseSource::File(pass_file.clone());
        let pass = src.read(false).unwrap().unwrap();
        assert_eq!(pass.expose(), b"correct horse");
        assert_eq!(format!("{pass:?}"), "Passphrase(<redacted>)");
        let path = dir.path().join("ca.key");
        store(&path, &key, Some(&pass)).unwrap();
        let pem = std::fs::read(&path).unwrap();
        assert!(is_encrypted(&pem));
        let loaded = load(&path, &src, false).unwrap();
        assert!(loaded.public_eq(&key));
        std::fs::write(&pass_file, "wrong").unwrap();
        assert!(matches!(
            load(&path, &src, false),
            Err(KeyError::Decrypt(_))
        ));
        assert!(matches!(
            load(&path, &PassphraseSource::None, false),
            Err(KeyError::NeedPassphrase(_))
        ));
    }

    #[test]
    fn loose_key_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.key");
        store(&path, &KeyType::EcP256.generate().unwrap(), None).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&path, &PassphraseSource::None, false).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        assert!(load(&path, &PassphraseSource::None, true).is_ok());
    }
}
