//! Checks a certificate chain that someone else handed us, before anything is written or
//! stored (DESIGN §5, "Every party checks what it receives"): the client checks what the API
//! sent back, `serve` checks what `sync` pushes.
//!
//! A chain passes only when every certificate block parses, the leaf chains to a trusted root
//! (OpenSSL's own path validation: signatures, validity now, CA flags, name constraints), is
//! valid now, is not a CA, carries extendedKeyUsage serverAuth, names exactly the expected IP
//! (one IP subjectAltName, no other name; a subject CN, if any, is that IP) and carries
//! exactly the expected public key. What passes is re-encoded from the parsed certificates,
//! so text around the PEM blocks (junk, terminal escapes, a private key) never travels on.
//!
//! Pure: no I/O, no key. Used by `client` and `api`.

use std::net::IpAddr;

use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509Ref, X509StoreContext, X509};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::csr::{CsrFacts, SanEntry};

/// What a chain is checked against.
#[derive(Clone, Debug)]
pub struct Anchors {
    /// Trusted roots.
    pub roots: Vec<X509>,
    /// Intermediates that may complete a path (not trusted by themselves).
    pub intermediates: Vec<X509>,
    /// Whether a root may be a CA that is not self-signed (an operator's `--ca-file` naming an
    /// intermediate: OpenSSL's partial-chain mode).
    pub partial: bool,
}

impl Anchors {
    /// Anchors from a PEM bundle: its self-signed certificates are roots, the others
    /// intermediates. `None` when it holds no self-signed certificate.
    pub fn from_bundle(certs: &[X509]) -> Option<Self> {
        let (roots, intermediates): (Vec<X509>, Vec<X509>) =
            certs.iter().cloned().partition(|c| is_self_signed(c));
        (!roots.is_empty()).then_some(Self {
            roots,
            intermediates,
            partial: false,
        })
    }

    /// Anchors an operator named (`--ca-file`): its self-signed certificates are roots; when it
    /// holds none, every certificate in it is trusted as it is.
    pub fn pinned(certs: Vec<X509>) -> Self {
        Self::from_bundle(&certs).unwrap_or(Self {
            roots: certs,
            intermediates: Vec::new(),
            partial: true,
        })
    }
}

/// What the leaf must be for.
#[derive(Clone, Copy, Debug)]
pub struct Expect<'a> {
    /// The public key, DER SubjectPublicKeyInfo.
    pub public_key_der: &'a [u8],
    /// The one IP address.
    pub ip: IpAddr,
}

/// A chain that passed.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The leaf.
    pub leaf: X509,
    /// Leaf then the other certificates as sent, re-encoded as PEM (nothing else).
    pub chain_pem: String,
}

/// Why a chain was refused; each message names what is wrong.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum LeafError {
    /// No certificate block, or a block that does not parse.
    #[error("the certificate is not PEM X.509: {0}")]
    NotPem(String),
    /// Path validation failed.
    #[error("the certificate does not chain to the trusted CA: {0}")]
    Untrusted(String),
    /// Outside its validity period.
    #[error("the certificate is not valid now (valid from {not_before} until {not_after})")]
    NotValidNow {
        /// notBefore as OpenSSL prints it.
        not_before: String,
        /// notAfter as OpenSSL prints it.
        not_after: String,
    },
    /// basicConstraints CA:TRUE.
    #[error("the certificate is a CA certificate, not a server certificate")]
    IsCa,
    /// No extendedKeyUsage serverAuth.
    #[error("the certificate is not for TLS servers (no extendedKeyUsage serverAuth)")]
    NotServerAuth,
    /// Names other than the one IP.
    #[error("the certificate names {found}, not exactly {expected}")]
    WrongNames {
        /// What it names.
        found: String,
        /// The IP it must name.
        expected: IpAddr,
    },
    /// Another public key.
    #[error("the certificate is not for the requested key")]
    WrongKey,
}

impl LeafError {
    /// A stable short code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotPem(_) => "not_pem",
            Self::Untrusted(_) => "untrusted",
            Self::NotValidNow { .. } => "not_valid_now",
            Self::IsCa => "is_ca",
            Self::NotServerAuth => "not_server_auth",
            Self::WrongNames { .. } => "wrong_names",
            Self::WrongKey => "wrong_key",
        }
    }
}

/// Checks `chain_pem` (leaf first) against `anchors` and `expect` (see the module doc).
pub fn check_chain(
    chain_pem: &str,
    anchors: &Anchors,
    expect: Expect<'_>,
) -> Result<Checked, LeafError> {
    let certs = parse_blocks(chain_pem)?;
    let leaf = certs[0].clone();
    // Cheap, specific checks first, so that the message names the real problem.
    check_validity(&leaf)?;
    let facts = leaf_facts(&leaf)?;
    if facts.is_ca {
        return Err(LeafError::IsCa);
    }
    if !facts.server_auth {
        return Err(LeafError::NotServerAuth);
    }
    let wanted = vec![expect.ip.to_string()];
    let cn_ok = facts.common_names.iter().all(|cn| *cn == wanted[0]);
    if facts.names != wanted || !cn_ok {
        let mut found = facts.names.clone();
        found.extend(facts.common_names.iter().map(|cn| format!("CN={cn}")));
        return Err(LeafError::WrongNames {
            found: if found.is_empty() {
                "no name".to_owned()
            } else {
                found.join(", ")
            },
            expected: expect.ip,
        });
    }
    let key = leaf
        .public_key()
        .and_then(|k| k.public_key_to_der())
        .map_err(|e| LeafError::NotPem(e.to_string()))?;
    if key != expect.public_key_der {
        return Err(LeafError::WrongKey);
    }
    verify_path(&leaf, &certs[1..], anchors)?;
    let mut chain = String::new();
    for c in &certs {
        let pem = c.to_pem().map_err(|e| LeafError::NotPem(e.to_string()))?;
        chain.push_str(std::str::from_utf8(&pem).expect("PEM is ASCII"));
    }
    Ok(Checked {
        leaf,
        chain_pem: chain,
    })
}

/// Path validation of `cert` (with `extra` untrusted certificates) up to one of the roots.
pub fn verify_path(cert: &X509Ref, extra: &[X509], anchors: &Anchors) -> Result<(), LeafError> {
    let err = |e: openssl::error::ErrorStack| LeafError::Untrusted(e.to_string());
    let mut store = X509StoreBuilder::new().map_err(err)?;
    for root in &anchors.roots {
        store.add_cert(root.clone()).map_err(err)?;
    }
    if anchors.partial {
        store
            .set_flags(openssl::x509::verify::X509VerifyFlags::PARTIAL_CHAIN)
            .map_err(err)?;
    }
    let store = store.build();
    let mut untrusted = Stack::new().map_err(err)?;
    for c in extra.iter().chain(&anchors.intermediates) {
        untrusted.push(c.clone()).map_err(err)?;
    }
    let mut ctx = X509StoreContext::new().map_err(err)?;
    let outcome = ctx
        .init(&store, cert, &untrusted, |c| {
            let ok = c.verify_cert()?;
            Ok(if ok {
                Ok(())
            } else {
                Err(c.error().error_string().to_owned())
            })
        })
        .map_err(err)?;
    outcome.map_err(LeafError::Untrusted)
}

/// The one IP a CSR asks for: its single IP subjectAltName, or with no SAN a CN that is an IP
/// (DESIGN §3). `None` when it asks for anything else.
pub fn requested_ip(facts: &CsrFacts) -> Option<IpAddr> {
    match facts.san.as_slice() {
        [SanEntry::Ip(ip)] => Some(*ip),
        [] if !facts.san_present => match facts.common_names.as_slice() {
            [cn] => cn.parse().ok().filter(|ip: &IpAddr| ip.to_string() == *cn),
            _ => None,
        },
        _ => None,
    }
}

/// Whether a certificate is self-signed (its own issuer, its signature verifies with its key).
pub fn is_self_signed(cert: &X509Ref) -> bool {
    let same_name = match (cert.subject_name().to_der(), cert.issuer_name().to_der()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    same_name
        && cert
            .public_key()
            .and_then(|k| cert.verify(&k))
            .unwrap_or(false)
}

/// Parses every PEM block of `text`; every block must be a certificate.
pub fn parse_blocks(text: &str) -> Result<Vec<X509>, LeafError> {
    let mut blocks = 0usize;
    for line in text.lines() {
        if let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if label != "CERTIFICATE" {
                return Err(LeafError::NotPem(format!(
                    "it holds a {:?} block besides certificates",
                    crate::client::escape(label)
                )));
            }
            blocks += 1;
        }
    }
    let certs =
        X509::stack_from_pem(text.as_bytes()).map_err(|e| LeafError::NotPem(e.to_string()))?;
    if certs.is_empty() || certs.len() != blocks {
        return Err(LeafError::NotPem(
            "a certificate block does not parse".to_owned(),
        ));
    }
    Ok(certs)
}

fn check_validity(leaf: &X509Ref) -> Result<(), LeafError> {
    let now =
        openssl::asn1::Asn1Time::days_from_now(0).map_err(|e| LeafError::NotPem(e.to_string()))?;
    let started = leaf.not_before() <= now;
    let running = leaf.not_after() >= now;
    if started && running {
        Ok(())
    } else {
        Err(LeafError::NotValidNow {
            not_before: leaf.not_before().to_string(),
            not_after: leaf.not_after().to_string(),
        })
    }
}

struct LeafFacts {
    is_ca: bool,
    server_auth: bool,
    /// subjectAltName entries as text (`192.168.1.10`, `DNS:x`).
    names: Vec<String>,
    common_names: Vec<String>,
}

fn leaf_facts(leaf: &X509Ref) -> Result<LeafFacts, LeafError> {
    let der = leaf
        .to_der()
        .map_err(|e| LeafError::NotPem(e.to_string()))?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
        .map_err(|e| LeafError::NotPem(e.to_string()))?;
    let mut facts = LeafFacts {
        is_ca: false,
        server_auth: false,
        names: Vec::new(),
        common_names: Vec::new(),
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => facts.is_ca |= bc.ca,
            ParsedExtension::ExtendedKeyUsage(eku) => facts.server_auth |= eku.server_auth,
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    facts.names.push(match name {
                        GeneralName::IPAddress(raw) => match raw.len() {
                            4 => IpAddr::from(<[u8; 4]>::try_from(*raw).unwrap_or_default())
                                .to_string(),
                            16 => IpAddr::from(<[u8; 16]>::try_from(*raw).unwrap_or_default())
                                .to_string(),
                            _ => "a malformed IP".to_owned(),
                        },
                        GeneralName::DNSName(d) => format!("DNS:{}", crate::client::escape(d)),
                        GeneralName::RFC822Name(e) => {
                            format!("email:{}", crate::client::escape(e))
                        }
                        GeneralName::URI(u) => format!("URI:{}", crate::client::escape(u)),
                        other => format!("{other:?}"),
                    });
                }
            }
            _ => {}
        }
    }
    for cn in cert.subject().iter_common_name() {
        facts.common_names.push(
            cn.as_str()
                .map(crate::client::escape)
                .unwrap_or_else(|_| "<not text>".to_owned()),
        );
    }
    Ok(facts)
}
