//! Certificate serials (DESIGN §4): 16 bytes, the profile's prefix then 15 bytes from the
//! CSPRNG; positive because the prefix is 1..=127.

use std::fmt;

use crate::fsx::hex;

/// A 16-byte serial.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial([u8; 16]);

impl Serial {
    /// A fresh random serial with the given first byte.
    pub fn random(prefix: u8) -> Self {
        let mut b = [0u8; 16];
        openssl::rand::rand_bytes(&mut b[1..]).expect("the OpenSSL CSPRNG is available");
        b[0] = prefix;
        Self(b)
    }

    /// Parses 32 hex digits (colons allowed, any case).
    pub fn parse(s: &str) -> Option<Self> {
        let clean: String = s.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&clean)?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// From raw bytes (must be 16).
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(Self(b.try_into().ok()?))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// 32 lowercase hex digits, leading zeros kept (the `list --json` form).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_serials_keep_prefix_and_round_trip() {
        let s = Serial::random(2);
        assert_eq!(s.as_bytes()[0], 2);
        assert_eq!(s.to_hex().len(), 32);
        assert_eq!(Serial::parse(&s.to_hex()), Some(s));
        assert_ne!(Serial::random(2), s);
        assert!(Serial::parse("01").is_none());
    }
}
