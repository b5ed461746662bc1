//! The key types the project names on its command line and in policy files
//! (`ec-p256`, `ec-p384`, `rsa-2048`, `rsa-3072`, `rsa-4096`), and key generation for them.

use std::fmt;
use std::str::FromStr;

use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A key type and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyType {
    /// ECDSA on NIST P-256 (the default everywhere).
    EcP256,
    /// ECDSA on NIST P-384.
    EcP384,
    /// RSA 2048.
    Rsa2048,
    /// RSA 3072.
    Rsa3072,
    /// RSA 4096.
    Rsa4096,
}

impl KeyType {
    /// Every key type, in the order of DESIGN §3.
    pub const ALL: [Self; 5] = [
        Self::EcP256,
        Self::EcP384,
        Self::Rsa2048,
        Self::Rsa3072,
        Self::Rsa4096,
    ];

    /// The name used in flags and policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcP256 => "ec-p256",
            Self::EcP384 => "ec-p384",
            Self::Rsa2048 => "rsa-2048",
            Self::Rsa3072 => "rsa-3072",
            Self::Rsa4096 => "rsa-4096",
        }
    }

    /// Whether this is an RSA type (keyEncipherment is added to RSA leaves, DESIGN §4).
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096)
    }

    /// Generates a fresh private key of this type.
    pub fn generate(self) -> Result<PKey<Private>, openssl::error::ErrorStack> {
        match self {
            Self::EcP256 => ec(Nid::X9_62_PRIME256V1),
            Self::EcP384 => ec(Nid::SECP384R1),
            Self::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?),
            Self::Rsa3072 => PKey::from_rsa(Rsa::generate(3072)?),
            Self::Rsa4096 => PKey::from_rsa(Rsa::generate(4096)?),
        }
    }

    /// The type of an existing key, if it is one of ours.
    pub fn of<T: openssl::pkey::HasPublic>(key: &openssl::pkey::PKeyRef<T>) -> Option<Self> {
        use openssl::pkey::Id;
        match key.id() {
            Id::RSA => match key.bits() {
                2048 => Some(Self::Rsa2048),
                3072 => Some(Self::Rsa3072),
                4096 => Some(Self::Rsa4096),
                _ => None,
            },
            Id::EC => match key.ec_key().ok()?.group().curve_name()? {
                Nid::X9_62_PRIME256V1 => Some(Self::EcP256),
                Nid::SECP384R1 => Some(Self::EcP384),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Builds a P-256, P-384 or RSA public key from a DER SubjectPublicKeyInfo by its raw
/// components; `None` for any other key (use `PKey::public_key_from_der` then).
///
/// OpenSSL 3.0 decodes keys through its provider decoders, about 100 µs a key, and encodes
/// them again the same way when they go into a certificate; keys built from components skip
/// both (a few µs).
pub fn public_key_from_spki(spki_der: &[u8]) -> Option<PKey<openssl::pkey::Public>> {
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::ec::EcPoint;
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    match (spki.parsed().ok()?, curve.as_deref()) {
        (PublicKey::EC(point), Some(oid @ ("1.2.840.10045.3.1.7" | "1.3.132.0.34"))) => {
            let nid = if oid == "1.3.132.0.34" {
                Nid::SECP384R1
            } else {
                Nid::X9_62_PRIME256V1
            };
            let group = named_group(nid)?;
            let mut ctx = BigNumContext::new().ok()?;
            let point = EcPoint::from_bytes(group, point.data(), &mut ctx).ok()?;
            PKey::from_ec_key(EcKey::from_public_key(group, &point).ok()?).ok()
        }
        (PublicKey::RSA(rsa), _)
            if spki.algorithm.algorithm.to_id_string() == "1.2.840.113549.1.1.1" =>
        {
            let n = BigNum::from_slice(rsa.modulus).ok()?;
            let e = BigNum::from_slice(rsa.exponent).ok()?;
            PKey::from_rsa(Rsa::from_public_components(n, e).ok()?).ok()
        }
        _ => None,
    }
}

/// The group of a named curve, made once per process (OpenSSL 3.0 sets up a new group, with
/// its Montgomery context, each time one is made from its name); keys get a copy.
fn named_group(nid: Nid) -> Option<&'static EcGroup> {
    use std::sync::OnceLock;
    static P256: OnceLock<Option<EcGroup>> = OnceLock::new();
    static P384: OnceLock<Option<EcGroup>> = OnceLock::new();
    let cell = if nid == Nid::SECP384R1 { &P384 } else { &P256 };
    cell.get_or_init(|| EcGroup::from_curve_name(nid).ok())
        .as_ref()
}

fn ec(nid: Nid) -> Result<PKey<Private>, openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(nid)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown key type name.
#[derive(Debug, thiserror::Error)]
#[error("unknown key type {0:?}: use one of ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096")]
pub struct UnknownKeyType(pub String);

impl FromStr for KeyType {
    type Err = UnknownKeyType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKeyType(s.to_owned()))
    }
}

impl Serialize for KeyType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for KeyType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_generate() {
        for k in KeyType::ALL {
            assert_eq!(k.as_str().parse::<KeyType>().unwrap(), k);
        }
        let key = KeyType::EcP256.generate().unwrap();
        assert_eq!(KeyType::of(&key), Some(KeyType::EcP256));
        assert!("rsa-1024".parse::<KeyType>().is_err());
    }
}
