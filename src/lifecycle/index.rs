//! `<state>/inventory.idx`: the inventory saved in a compact binary form, so that `list` and
//! `show` on a ledger of a million lines read tens of megabytes instead of the whole ledger.
//!
//! The file is a cache and says which prefix of the ledger it describes: byte length, line
//! count, and the offset and hash of its last line. [`describes_prefix`] checks that the ledger
//! still holds that very line there; anything else (a shorter or rewritten ledger, a damaged or
//! foreign file, another format version) makes the caller rebuild it from the ledger. A SHA-256
//! over the whole file catches torn or edited files. Written atomically, mode 0600 like the
//! ledger.
//!
//! Layout (integers little-endian; `str` is a u16 length then UTF-8):
//! magic `SGCAIDX1`; position (len u64, lines u64, last_offset u64, last_hash str); last CRL
//! (u8 flag, then number u64, this_update i64, next_update i64, sha256 str); kinds (u16 count,
//! str each); certificates (u64 count, then each: serial 16 bytes, kind u16, request_id str,
//! ip family u8 (4 or 6) and 4 or 16 bytes, not_before i64, not_after i64, offset u64, revoked
//! u8 flag then revoked_at i64 and reason code u8); SHA-256 of all preceding bytes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::inventory::{Certificate, CrlRecord, Inventory, Position, Revocation};
use crate::fsx;
use crate::ledger::entry;
use crate::signer::crl::RevocationReason;

/// The index file's name in the state directory.
pub const FILE_NAME: &str = "inventory.idx";

/// Serialises an inventory.
pub fn encode(inv: &Inventory) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + inv.certificates.len() * 80);
    out.extend_from_slice(MAGIC);
    let p = &inv.position;
    put_u64(&mut out, p.len);
    put_u64(&mut out, p.lines);
    put_u64(&mut out, p.last_offset);
    put_str(&mut out, &p.last_hash);
    match &inv.last_crl {
        Some(c) => {
            out.push(1);
            put_u64(&mut out, c.number);
            put_i64(&mut out, c.this_update);
            put_i64(&mut out, c.next_update);
            put_str(&mut out, &c.sha256);
        }
        None => out.push(0),
    }
    let kinds = inv.kinds();
    put_u16(&mut out, kinds.len() as u16);
    let mut kind_index: HashMap<&str, u16> = HashMap::new();
    for (i, k) in kinds.iter().enumerate() {
        put_str(&mut out, k);
        kind_index.insert(k, i as u16);
    }
    put_u64(&mut out, inv.certificates.len() as u64);
    for c in &inv.certificates {
        out.extend_from_slice(&c.serial);
        put_u16(&mut out, kind_index.get(&*c.kind).copied().unwrap_or(0));
        put_str(&mut out, &c.request_id);
        match c.ip {
            IpAddr::V4(v4) => {
                out.push(4);
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.push(6);
                out.extend_from_slice(&v6.octets());
            }
        }
        put_i64(&mut out, c.not_before);
        put_i64(&mut out, c.not_after);
        put_u64(&mut out, c.offset);
        match c.revocation {
            Some(r) => {
                out.push(1);
                put_i64(&mut out, r.revoked_at);
                out.push(r.reason.code());
            }
            None => out.push(0),
        }
    }
    let digest = openssl::sha::sha256(&out);
    out.extend_from_slice(&digest);
    out
}

/// Parses an index file's bytes; the error says what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<Inventory, String> {
    if bytes.len() < MAGIC.len() + 32 || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not an inventory index of this version".into());
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if openssl::sha::sha256(body) != digest {
        return Err("its checksum does not match (torn or edited)".into());
    }
    let mut r = Reader {
        bytes: &body[MAGIC.len()..],
    };
    let position = Position {
        len: r.u64()?,
        lines: r.u64()?,
        last_offset: r.u64()?,
        last_hash: r.string()?,
    };
    let last_crl = match r.u8()? {
        0 => None,
        _ => Some(CrlRecord {
            number: r.u64()?,
            this_update: r.i64()?,
            next_update: r.i64()?,
            sha256: r.string()?,
        }),
    };
    let kind_count = r.u16()?;
    let mut kinds: Vec<Arc<str>> = Vec::with_capacity(usize::from(kind_count));
    for _ in 0..kind_count {
        kinds.push(r.string()?.into());
    }
    let count = r.u64()?;
    // Each record takes at least 45 bytes: refuse counts the file cannot hold.
    if count > (r.bytes.len() / 45) as u64 {
        return Err("its certificate count exceeds its size".into());
    }
    let mut certificates = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let serial: [u8; 16] = r.take(16)?.try_into().map_err(|_| "short serial")?;
        let kind = kinds
            .get(usize::from(r.u16()?))
            .cloned()
            .ok_or("a certificate names an unknown type")?;
        let request_id = r.string()?.into_boxed_str();
        let ip = match r.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(r.take(4)?).map_err(|_| "short IPv4 address")?,
            )),
            6 => IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(r.take(16)?).map_err(|_| "short IPv6 address")?,
            )),
            _ => return Err("a certificate has an unknown address family".into()),
        };
        let not_before = r.i64()?;
        let not_after = r.i64()?;
        let offset = r.u64()?;
        let revocation = match r.u8()? {
            0 => None,
            _ => {
                let revoked_at = r.i64()?;
                let code = r.u8()?;
                let reason = RevocationReason::ALL
                    .into_iter()
                    .find(|x| x.code() == code)
                    .ok_or("a revocation has an unknown reason code")?;
                Some(Revocation { revoked_at, reason })
            }
        };
        certificates.push(Certificate {
            request_id,
            serial,
            kind,
            ip,
            not_before,
            not_after,
            offset,
            revocation,
        });
    }
    if !r.bytes.is_empty() {
        return Err("trailing bytes after the last certificate".into());
    }
    Ok(Inventory::from_parts(
        certificates,
        last_crl,
        position,
        kinds,
    ))
}

/// Reads the index file: `Ok(None)` when there is none, `Err(why)` when it is unusable.
pub fn read(path: &Path) -> Result<Option<Inventory>, String> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    decode(&bytes).map(Some)
}

/// Saves the index atomically.
pub fn write(path: &Path, inv: &Inventory) -> io::Result<()> {
    fsx::write_atomic(path, &encode(inv), fsx::MODE_SECRET)
}

/// Whether the ledger at `ledger` still begins with what `position` describes: at least that
/// long, with the line recorded as the last one (same seq, same hash) at the recorded offset.
pub fn describes_prefix(position: &Position, ledger: &Path) -> io::Result<bool> {
    if position.lines == 0 {
        return Ok(position.len == 0);
    }
    let file = match File::open(ledger) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() < position.len || position.last_offset >= position.len {
        return Ok(false);
    }
    let Ok(size) = usize::try_from(position.len - position.last_offset) else {
        return Ok(false);
    };
    if size > MAX_LINE {
        return Ok(false);
    }
    let mut buf = vec![0u8; size];
    file.read_exact_at(&mut buf, position.last_offset)?;
    if buf.pop() != Some(b'\n') || buf.contains(&b'\n') {
        return Ok(false);
    }
    let Ok(line) = std::str::from_utf8(&buf) else {
        return Ok(false);
    };
    Ok(entry::parse(line).is_ok_and(|e| e.seq == position.lines && e.hash == position.last_hash))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err("it ends too early".into());
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().map_err(|_| "short")?,
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| "short")?,
        ))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| "short")?,
        ))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = usize::from(self.u16()?);
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a text field is not UTF-8".into())
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Every text kept here (ids, types, hex hashes) is far below 64 KiB.
    let b = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    put_u16(out, b.len() as u16);
    out.extend_from_slice(b);
}

const MAGIC: &[u8; 8] = b"SGCAIDX1";

/// Longest ledger line the prefix check reads (a line holds one certificate PEM).
const MAX_LINE: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsx::hex;
    use crate::ledger::{Event, Ledger};
    use crate::lifecycle::inventory::{load, IndexUse, Source};
    use crate::request::rfc3339;

    fn issued(id: &str, serial: u8, ip: &str) -> Event {
        let now = chrono::Utc::now();
        Event::Issued {
            request_id: id.into(),
            serial: hex::encode([serial; 16]),
            kind: "webhook".into(),
            ip: ip.into(),
            not_before: rfc3339(now),
            not_after: rfc3339(now + chrono::Duration::days(3)),
            fingerprint_sha256: "AB".into(),
            certificate: "pem".into(),
        }
    }

    fn revoked(serial: u8) -> Event {
        Event::Revoked {
            serial: hex::encode([serial; 16]),
            request_id: "a".into(),
            reason: "keyCompromise".into(),
            revoked_at: rfc3339(chrono::Utc::now()),
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut l = Ledger::open(&path).unwrap();
        l.append(&[
            issued("a", 1, "192.168.1.10"),
            issued("b", 2, "fd00::1"),
            revoked(1),
            Event::Crl {
                number: 4,
                this_update: rfc3339(chrono::Utc::now()),
                next_update: rfc3339(chrono::Utc::now()),
                sha256: "00".repeat(32),
            },
        ])
        .unwrap();
        let mut inv = Inventory::default();
        inv.catch_up(&path).unwrap();
        let bytes = encode(&inv);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.certificates, inv.certificates);
        assert_eq!(back.last_crl, inv.last_crl);
        assert_eq!(back.position, inv.position);
        assert!(describes_prefix(&back.position, &path).unwrap());
        let mut edited = bytes.clone();
        edited[60] ^= 1;
        assert!(decode(&edited).unwrap_err().contains("checksum"));
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(b"garbage").is_err());
    }

    #[test]
    fn load_uses_the_index_catches_up_and_rebuilds_when_the_ledger_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut l = Ledger::open(&path).unwrap();
        l.append(&[issued("a", 1, "192.168.1.10")]).unwrap();
        let first = load(dir.path(), &path, IndexUse::ReadWrite).unwrap();
        assert_eq!(first.source, Source::Rebuilt("there was none".into()));
        assert!(dir.path().join(FILE_NAME).exists());
        l.append(&[issued("b", 2, "192.168.1.11"), revoked(1)])
            .unwrap();
        let second = load(dir.path(), &path, IndexUse::ReadWrite).unwrap();
        assert_eq!(second.source, Source::Index(2));
        assert_eq!(second.inventory.certificates.len(), 2);
        assert!(second.inventory.certificates[0].revocation.is_some());
        let third = load(dir.path(), &path, IndexUse::ReadWrite).unwrap();
        assert_eq!(third.source, Source::Index(0));

        // A different ledger of the same length no longer matches: rebuilt.
        drop(l);
        std::fs::remove_file(&path).unwrap();
        let mut l = Ledger::open(&path).unwrap();
        l.append(&[issued("x", 9, "10.0.0.1")]).unwrap();
        let fourth = load(dir.path(), &path, IndexUse::ReadWrite).unwrap();
        assert!(matches!(fourth.source, Source::Rebuilt(_)));
        assert_eq!(&*fourth.inventory.certificates[0].request_id, "x");

        // A damaged index file is rebuilt too.
        std::fs::write(dir.path().join(FILE_NAME), b"SGCAIDX1 nonsense").unwrap();
        let fifth = load(dir.path(), &path, IndexUse::ReadWrite).unwrap();
        assert!(matches!(fifth.source, Source::Rebuilt(_)));
        assert_eq!(fifth.inventory.certificates.len(), 1);
    }
}
