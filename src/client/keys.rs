//! Key and CSR material of the client: a fresh private key (made here, never sent), a clean
//! CSR for one IP, reading an existing key or certificate for renewal. What comes back is
//! checked by [`super::verify`].
//!
//! The CSR is the smallest one policy approves (DESIGN §3): subject `CN=<ip>` and one
//! subjectAltName `IP:<ip>`, both in canonical text form, signed with SHA-256, and no other
//! extension.

use std::net::IpAddr;
use std::path::Path;

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509Req, X509ReqBuilder, X509};

use super::ClientError;
use crate::key_type::KeyType;

/// Parses the IP argument and refuses a public address before any work is done.
pub fn parse_private_ip(text: &str) -> Result<IpAddr, ClientError> {
    let ip: IpAddr = text.trim().parse().map_err(|_| {
        ClientError::BadInput(format!(
            "{text:?} is not an IP address: give an IPv4 or IPv6 address such as 192.168.1.10"
        ))
    })?;
    if crate::policy::range::is_public(ip) {
        return Err(ClientError::BadInput(format!(
            "{ip} is a public address: this CA only issues certificates for private addresses \
             (e.g. 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7)"
        )));
    }
    Ok(ip)
}

/// Generates a private key of the given type.
pub fn generate_key(kind: KeyType) -> Result<PKey<Private>, ClientError> {
    kind.generate()
        .map_err(|e| ClientError::Crypto(format!("cannot generate a {kind} key: {e}")))
}

/// Builds the CSR for `ip`: `CN=<ip>`, SAN `IP:<ip>`, SHA-256.
pub fn build_csr(key: &PKey<Private>, ip: IpAddr) -> Result<X509Req, ClientError> {
    let crypto =
        |e: openssl::error::ErrorStack| ClientError::Crypto(format!("cannot build the CSR: {e}"));
    let text = ip.to_string();
    let mut name = X509NameBuilder::new().map_err(crypto)?;
    name.append_entry_by_text("CN", &text).map_err(crypto)?;
    let name = name.build();
    let mut req = X509ReqBuilder::new().map_err(crypto)?;
    req.set_version(0).map_err(crypto)?;
    req.set_subject_name(&name).map_err(crypto)?;
    req.set_pubkey(key).map_err(crypto)?;
    let san = SubjectAlternativeName::new()
        .ip(&text)
        .build(&req.x509v3_context(None))
        .map_err(crypto)?;
    let mut extensions = Stack::new().map_err(crypto)?;
    extensions.push(san).map_err(crypto)?;
    req.add_extensions(&extensions).map_err(crypto)?;
    req.sign(key, MessageDigest::sha256()).map_err(crypto)?;
    Ok(req.build())
}

/// The CSR as PEM text.
pub fn csr_pem(req: &X509Req) -> Result<String, ClientError> {
    let pem = req
        .to_pem()
        .map_err(|e| ClientError::Crypto(format!("cannot encode the CSR: {e}")))?;
    Ok(String::from_utf8(pem).expect("PEM is ASCII"))
}

/// The key as unencrypted PKCS#8 PEM (the file is written 0600).
pub fn key_pem(key: &PKey<Private>) -> Result<Vec<u8>, ClientError> {
    key.private_key_to_pem_pkcs8()
        .map_err(|e| ClientError::Crypto(format!("cannot encode the key: {e}")))
}

/// Reads a PEM private key (PKCS#8 or traditional) for `--renew`.
pub fn read_key(path: &Path) -> Result<PKey<Private>, ClientError> {
    let bytes = std::fs::read(path).map_err(|e| {
        ClientError::BadInput(format!(
            "cannot read the key {} to reuse it: {e} (pass --new-key to make a new one)",
            path.display()
        ))
    })?;
    PKey::private_key_from_pem(&bytes).map_err(|_| {
        ClientError::BadInput(format!(
            "{} is not an unencrypted PEM private key (pass --new-key to make a new one)",
            path.display()
        ))
    })
}

/// Reads the first certificate of a PEM (or DER) file.
pub fn read_certificate(path: &Path) -> Result<X509, ClientError> {
    let bytes = std::fs::read(path).map_err(|e| {
        ClientError::BadInput(format!(
            "cannot read the certificate {}: {e}",
            path.display()
        ))
    })?;
    parse_certificate(&bytes).ok_or_else(|| {
        ClientError::BadInput(format!(
            "{} is not a PEM or DER X.509 certificate",
            path.display()
        ))
    })
}

/// Parses the first certificate of PEM or DER bytes.
pub fn parse_certificate(bytes: &[u8]) -> Option<X509> {
    X509::from_pem(bytes)
        .or_else(|_| X509::from_der(bytes))
        .ok()
}

/// The one IP a certificate is for: its single IP SAN, else a CN that is an IP.
pub fn certificate_ip(cert: &X509) -> Option<IpAddr> {
    let mut ips = Vec::new();
    if let Some(names) = cert.subject_alt_names() {
        for name in &names {
            if let Some(raw) = name.ipaddress() {
                match raw.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(raw).ok()?)),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(raw).ok()?)),
                    _ => return None,
                }
            }
        }
    }
    match ips.as_slice() {
        [ip] => Some(*ip),
        [] => cert
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
            .next()
            .and_then(|cn| cn.data().to_string().ok())
            .and_then(|cn| cn.parse().ok()),
        _ => None,
    }
}

/// Seconds from now until `cert`'s notAfter (negative when expired).
pub fn seconds_left(cert: &X509) -> Option<i64> {
    let now = openssl::asn1::Asn1Time::from_unix(chrono::Utc::now().timestamp()).ok()?;
    let diff = now.diff(cert.not_after()).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

/// `cert`'s notAfter in RFC 3339 (the project's one time format), or OpenSSL's text.
pub fn not_after_text(cert: &X509) -> String {
    seconds_left(cert)
        .and_then(|left| chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + left, 0))
        .map(crate::request::rfc3339)
        .unwrap_or_else(|| cert.not_after().to_string())
}

/// Whether `key` is the private half of `cert`'s public key.
pub fn key_matches(cert: &X509, key: &PKey<Private>) -> bool {
    cert.public_key()
        .map(|pk| pk.public_eq(key))
        .unwrap_or(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (STYLE §17).
mod tests {
    use super::*;

    #[test]
    fn csr_names_the_ip_twice_and_nothing_else() {
        let key = generate_key(KeyType::EcP256).unwrap();
        let ip: IpAddr = "192.168.1.10".parse().unwrap();
        let req = build_csr(&key, ip).unwrap();
        assert!(req.verify(&req.public_key().unwrap()).unwrap());
        let facts = crate::csr::parse(&req.to_der().unwrap()).unwrap();
        assert_eq!(facts.common_names, vec!["192.168.1.10".to_owned()]);
        assert_eq!(facts.san.len(), 1);
        assert!(facts.extensions.is_empty());
    }

    #[test]
    fn public_and_garbage_ips_are_refused() {
        assert!(parse_private_ip("192.168.1.10").is_ok());
        assert!(parse_private_ip("fd00::1").is_ok());
        for bad in [
            "8.8.8.8",
            "2001:db8::1",
            "2a00::1",
            "example.com",
            "",
            "192.168.1",
        ] {
            assert!(
                matches!(parse_private_ip(bad), Err(ClientError::BadInput(_))),
                "{bad}"
            );
        }
    }
}
