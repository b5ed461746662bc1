//! Test support: CSRs with chosen properties and a throwaway CA, built in-process with the
//! openssl crate. Only compiled for unit tests.

use openssl::asn1::{Asn1Object, Asn1OctetString};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509Extension, X509NameBuilder, X509ReqBuilder};

use crate::key_type::KeyType;
use crate::signer::ca::{self, Ca, InitOptions, StatePaths};

/// One requested subjectAltName entry.
#[derive(Debug, Clone)]
pub(crate) enum San {
    Ip(String),
    Dns(String),
    Email(String),
}

/// What to put in a CSR.
#[derive(Clone)]
pub(crate) struct CsrSpec {
    pub key: KeyType,
    pub cn: Option<String>,
    pub san: Vec<San>,
    /// Raw extensions: (dotted OID, critical, DER value).
    pub extra: Vec<(String, bool, Vec<u8>)>,
    pub digest: MessageDigest,
}

impl std::fmt::Debug for CsrSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsrSpec")
            .field("key", &self.key)
            .field("cn", &self.cn)
            .field("san", &self.san)
            .field("extra", &self.extra)
            .finish_non_exhaustive()
    }
}

impl CsrSpec {
    /// A plain P-256 CSR for `ip` with CN and SAN both equal to it.
    pub fn ip(ip: &str) -> Self {
        Self {
            key: KeyType::EcP256,
            cn: Some(ip.to_owned()),
            san: vec![San::Ip(ip.to_owned())],
            extra: Vec::new(),
            digest: MessageDigest::sha256(),
        }
    }

    /// Builds the CSR (PEM) and returns it with its key.
    pub fn build(&self) -> (Vec<u8>, PKey<Private>) {
        let key = self.key.generate().unwrap();
        let mut b = X509ReqBuilder::new().unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        if let Some(cn) = &self.cn {
            name.append_entry_by_text("CN", cn).unwrap();
        }
        b.set_subject_name(&name.build()).unwrap();
        b.set_pubkey(&key).unwrap();
        let mut exts = Stack::new().unwrap();
        if !self.san.is_empty() {
            let mut san = SubjectAlternativeName::new();
            for s in &self.san {
                match s {
                    San::Ip(ip) => san.ip(ip),
                    San::Dns(d) => san.dns(d),
                    San::Email(e) => san.email(e),
                };
            }
            exts.push(san.build(&b.x509v3_context(None)).unwrap())
                .unwrap();
        }
        for (oid, critical, der) in &self.extra {
            let ext = X509Extension::new_from_der(
                &Asn1Object::from_str(oid).unwrap(),
                *critical,
                &Asn1OctetString::new_from_bytes(der).unwrap(),
            )
            .unwrap();
            exts.push(ext).unwrap();
        }
        if !exts.is_empty() {
            b.add_extensions(&exts).unwrap();
        }
        b.sign(&key, self.digest).unwrap();
        (b.build().to_pem().unwrap(), key)
    }
}

/// A two-tier CA with unencrypted keys in a temp dir, constrained to `ranges`.
pub(crate) fn test_ca(ranges: &[&str]) -> (tempfile::TempDir, Ca) {
    let dir = tempfile::tempdir().unwrap();
    let state = StatePaths::new(&dir.path().join("state"));
    let opts = InitOptions {
        key_type: KeyType::EcP256,
        root_only: false,
        days: 30,
        subject: None,
        permitted: ranges.iter().map(|r| r.parse().unwrap()).collect(),
        allow_cn_subjects: false,
    };
    ca::init(&state, &opts, None, &ca::KeyStore::File).unwrap();
    let loaded = ca::load(
        &state,
        &crate::signer::key::PassphraseSource::None,
        None,
        false,
    )
    .unwrap();
    (dir, loaded)
}
