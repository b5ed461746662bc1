//! The inventory: every certificate the ledger records as issued, with its validity and its
//! revocation, plus the last CRL signed — what `list`, `show`, `revoke` and `crl` read.
//!
//! It is built by reading the ledger (each line's hash and the chain are checked as it goes) and
//! kept on disk as `<state>/inventory.idx` ([`super::index`]) so that a large ledger is not
//! re-read by every command: [`load`] takes the index when it still describes a prefix of the
//! ledger (same line count and last-line hash at the recorded offset), reads only the lines
//! appended since, and saves it back. A stale, damaged or missing index is rebuilt from the
//! ledger; the ledger is never written here.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::Serialize;

use super::{index, LifecycleError};
use crate::fsx::hex;
use crate::ledger::entry::{self, Entry, Event, GENESIS};
use crate::ledger::LedgerError;
use crate::request::rfc3339;
use crate::signer::crl::RevocationReason;

/// One issued certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// The request it was issued for.
    pub request_id: Box<str>,
    /// The 16-byte serial.
    pub serial: [u8; 16],
    /// The request type (`webhook`, `private_server`).
    pub kind: Arc<str>,
    /// The certified IP.
    pub ip: IpAddr,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// Byte offset of the `issued` line in the ledger (it holds the PEM).
    pub offset: u64,
    /// Set once revoked.
    pub revocation: Option<Revocation>,
}

/// When and why a certificate was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Unix seconds.
    pub revoked_at: i64,
    /// The RFC 5280 reason.
    pub reason: RevocationReason,
}

/// A certificate's state as `list` shows it (DESIGN §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Revoked (whether or not it has expired since).
    Revoked,
    /// Past its notAfter.
    Expired,
    /// Neither.
    Valid,
}

impl State {
    /// The name `list` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Valid => "valid",
        }
    }
}

/// The last CRL the ledger records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlRecord {
    /// CRL number.
    pub number: u64,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// SHA-256 of the DER, hex.
    pub sha256: String,
}

/// How much of the ledger the inventory covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// Bytes read (always ends after a newline).
    pub len: u64,
    /// Lines read.
    pub lines: u64,
    /// Byte offset of the last line read (0 when none).
    pub last_offset: u64,
    /// Hash of the last line read ([`GENESIS`] when none).
    pub last_hash: String,
}

impl Default for Position {
    fn default() -> Self {
        Self {
            len: 0,
            lines: 0,
            last_offset: 0,
            last_hash: GENESIS.to_owned(),
        }
    }
}

/// Every certificate issued, in ledger order, and the last CRL.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    /// Certificates in the order they were issued.
    pub certificates: Vec<Certificate>,
    /// The last `crl` event.
    pub last_crl: Option<CrlRecord>,
    /// What has been read of the ledger.
    pub position: Position,
    kinds: Vec<Arc<str>>,
    by_serial: Option<HashMap<[u8; 16], usize>>,
}

/// Where a loaded inventory came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The index file, plus this many lines appended since it was saved.
    Index(u64),
    /// Rebuilt from the whole ledger, for this reason.
    Rebuilt(String),
    /// Read from the whole ledger as asked; the index was neither read nor written.
    Ledger,
}

/// Whether [`load`] may use and refresh the index file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexUse {
    /// Read it when valid, save it when it changed.
    ReadWrite,
    /// Read the whole ledger; leave the index file alone.
    Ignore,
}

/// A loaded inventory and how it was obtained.
#[derive(Debug)]
pub struct Loaded {
    /// The inventory, caught up with the ledger.
    pub inventory: Inventory,
    /// Where it came from.
    pub source: Source,
}

/// Loads the inventory of the ledger at `ledger` (a missing ledger is an empty one), using the
/// index file `<state>/inventory.idx` as `use_index` says.
pub fn load(state: &Path, ledger: &Path, use_index: IndexUse) -> Result<Loaded, LifecycleError> {
    let index_path = state.join(index::FILE_NAME);
    if use_index == IndexUse::Ignore {
        let mut inventory = Inventory::default();
        inventory.catch_up(ledger)?;
        return Ok(Loaded {
            inventory,
            source: Source::Ledger,
        });
    }
    let (mut inventory, rebuilt) = match index::read(&index_path) {
        Ok(Some(inv)) => match index::describes_prefix(&inv.position, ledger) {
            Ok(true) => (inv, None),
            Ok(false) => (
                Inventory::default(),
                Some("the ledger no longer matches it".to_owned()),
            ),
            Err(e) => return Err(LifecycleError::io(ledger, e)),
        },
        Ok(None) => (Inventory::default(), Some("there was none".to_owned())),
        Err(why) => (Inventory::default(), Some(why)),
    };
    if let Some(why) = &rebuilt {
        if why != "there was none" {
            tracing::warn!(index = %index_path.display(), reason = %why,
                "the inventory index is not usable; rebuilding it from the ledger");
        }
    }
    let read = inventory.catch_up(ledger)?;
    if (read > 0 || rebuilt.is_some()) && ledger.exists() {
        if let Err(e) = index::write(&index_path, &inventory) {
            // A cache that cannot be saved only costs time on the next run.
            tracing::debug!(index = %index_path.display(), error = %e, "cannot save the inventory index");
        }
    }
    Ok(Loaded {
        inventory,
        source: match rebuilt {
            Some(why) => Source::Rebuilt(why),
            None => Source::Index(read),
        },
    })
}

impl Inventory {
    /// An empty inventory that starts at `position` (used by the index decoder).
    pub(crate) fn from_parts(
        certificates: Vec<Certificate>,
        last_crl: Option<CrlRecord>,
        position: Position,
        kinds: Vec<Arc<str>>,
    ) -> Self {
        Self {
            certificates,
            last_crl,
            position,
            kinds,
            by_serial: None,
        }
    }

    /// Reads the lines appended to the ledger since [`Inventory::position`], checking each
    /// line's hash and the chain, under a shared lock (writers hold it exclusively while they
    /// append). A final line without its newline is being written and is left for next time.
    /// Returns the number of lines read.
    pub fn catch_up(&mut self, ledger: &Path) -> Result<u64, LifecycleError> {
        let file = match File::open(ledger) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.position.lines == 0 => {
                return Ok(0)
            }
            Err(e) => return Err(ledger_io(ledger, e)),
        };
        file.lock_shared().map_err(|e| ledger_io(ledger, e))?;
        let result = self.read_from(&file, ledger);
        let _ = file.unlock();
        result
    }

    fn read_from(&mut self, file: &File, ledger: &Path) -> Result<u64, LifecycleError> {
        let size = file.metadata().map_err(|e| ledger_io(ledger, e))?.len();
        if size < self.position.len {
            return Err(corrupt(ledger, self.position.lines, "the ledger shrank"));
        }
        if size == self.position.len {
            return Ok(0);
        }
        let mut f = file;
        f.seek(SeekFrom::Start(self.position.len))
            .map_err(|e| ledger_io(ledger, e))?;
        let mut reader = BufReader::with_capacity(1 << 20, f);
        let mut buf = Vec::with_capacity(4096);
        let mut read = 0;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| ledger_io(ledger, e))?;
            if n == 0 || buf.last() != Some(&b'\n') {
                break;
            }
            let seq = self.position.lines + 1;
            let line = std::str::from_utf8(&buf[..n - 1])
                .map_err(|_| corrupt(ledger, seq, "not UTF-8"))?;
            let e = entry::parse(line).map_err(|e| corrupt(ledger, seq, &e.to_string()))?;
            if e.seq != seq {
                return Err(corrupt(
                    ledger,
                    seq,
                    &format!("seq is {}, expected {seq}", e.seq),
                ));
            }
            if e.prev != self.position.last_hash {
                return Err(corrupt(
                    ledger,
                    seq,
                    "prev does not match the previous line's hash",
                ));
            }
            let offset = self.position.len;
            self.apply(&e, offset)
                .map_err(|m| corrupt(ledger, seq, &m))?;
            self.position = Position {
                len: offset + n as u64,
                lines: seq,
                last_offset: offset,
                last_hash: e.hash,
            };
            read += 1;
        }
        Ok(read)
    }

    /// Takes one ledger entry into account.
    pub fn apply(&mut self, e: &Entry, offset: u64) -> Result<(), String> {
        match &e.event {
            Event::Issued {
                request_id,
                serial,
                kind,
                ip,
                not_before,
                not_after,
                ..
            } => {
                let serial = serial_bytes(serial).ok_or("an issued serial is not 32 hex digits")?;
                let cert = Certificate {
                    request_id: request_id.as_str().into(),
                    serial,
                    kind: self.intern(kind),
                    ip: ip
                        .parse()
                        .map_err(|_| format!("{ip:?} is not an IP address"))?,
                    not_before: unix(not_before)?,
                    not_after: unix(not_after)?,
                    offset,
                    revocation: None,
                };
                if let Some(map) = &mut self.by_serial {
                    map.insert(serial, self.certificates.len());
                }
                self.certificates.push(cert);
            }
            Event::Revoked {
                serial,
                reason,
                revoked_at,
                ..
            } => {
                let serial = serial_bytes(serial).ok_or("a revoked serial is not 32 hex digits")?;
                let revocation = Revocation {
                    revoked_at: unix(revoked_at)?,
                    // Only RFC 5280 names are ever recorded; anything else reads as unspecified.
                    reason: RevocationReason::parse(reason)
                        .unwrap_or(RevocationReason::Unspecified),
                };
                match self.position_of(&serial) {
                    // The first revocation counts; a second (a race of two revokers) changes
                    // nothing.
                    Some(i) => {
                        let c = &mut self.certificates[i];
                        if c.revocation.is_none() {
                            c.revocation = Some(revocation);
                        }
                    }
                    None => tracing::warn!(serial = %hex::encode(serial), line = e.seq,
                        "the ledger revokes a serial it never issued; ignored"),
                }
            }
            Event::Crl {
                number,
                this_update,
                next_update,
                sha256,
            } => {
                self.last_crl = Some(CrlRecord {
                    number: *number,
                    this_update: unix(this_update)?,
                    next_update: unix(next_update)?,
                    sha256: sha256.clone(),
                });
            }
            Event::Intent { .. } | Event::Denied { .. } | Event::Checkpoint { .. } => {}
        }
        Ok(())
    }

    /// The certificate with this serial.
    pub fn by_serial(&self, serial: &[u8; 16]) -> Option<&Certificate> {
        match &self.by_serial {
            Some(map) => map.get(serial).map(|i| &self.certificates[*i]),
            None => self.certificates.iter().find(|c| &c.serial == serial),
        }
    }

    /// The certificate issued for this request.
    pub fn by_request(&self, id: &str) -> Option<&Certificate> {
        self.certificates
            .iter()
            .rev()
            .find(|c| &*c.request_id == id)
    }

    /// The revoked certificates, in the order they were issued.
    pub fn revoked(&self) -> impl Iterator<Item = (&Certificate, Revocation)> {
        self.certificates
            .iter()
            .filter_map(|c| c.revocation.map(|r| (c, r)))
    }

    /// The request type names in use (for the index).
    pub(crate) fn kinds(&self) -> &[Arc<str>] {
        &self.kinds
    }

    fn intern(&mut self, kind: &str) -> Arc<str> {
        if let Some(k) = self.kinds.iter().find(|k| &***k == kind) {
            return k.clone();
        }
        let k: Arc<str> = kind.into();
        self.kinds.push(k.clone());
        k
    }

    fn position_of(&mut self, serial: &[u8; 16]) -> Option<usize> {
        let certs = &self.certificates;
        let map = self.by_serial.get_or_insert_with(|| {
            certs
                .iter()
                .enumerate()
                .map(|(i, c)| (c.serial, i))
                .collect()
        });
        map.get(serial).copied()
    }
}

impl Certificate {
    /// The state at `now` (Unix seconds).
    pub fn state(&self, now: i64) -> State {
        if self.revocation.is_some() {
            State::Revoked
        } else if self.not_after < now {
            State::Expired
        } else {
            State::Valid
        }
    }

    /// The serial as 32 lowercase hex digits.
    pub fn serial_hex(&self) -> String {
        hex::encode(self.serial)
    }

    /// The `list --json` object (DESIGN §7).
    pub fn listing(&self, now: i64) -> Listing<'_> {
        Listing {
            request_id: &self.request_id,
            serial: self.serial_hex(),
            kind: &self.kind,
            ip: self.ip.to_string(),
            not_before: time_text(self.not_before),
            not_after: time_text(self.not_after),
            state: self.state(now),
            revoked_at: self.revocation.map(|r| time_text(r.revoked_at)),
            revocation_reason: self.revocation.map(|r| r.reason.as_str()),
        }
    }
}

/// One element of `list --json` (DESIGN §7), field for field.
#[derive(Debug, Serialize)]
pub struct Listing<'a> {
    /// The request.
    pub request_id: &'a str,
    /// 32 lowercase hex digits.
    pub serial: String,
    /// The request type.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The certified IP.
    pub ip: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// valid, revoked or expired.
    pub state: State,
    /// RFC 3339, when revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// RFC 5280 name, when revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<&'static str>,
}

/// What `list` selects; every given condition must hold.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Valid certificates whose notAfter falls within this many seconds from now.
    pub expiring_within: Option<i64>,
    /// Revoked certificates only.
    pub revoked: bool,
    /// This request type only.
    pub kind: Option<String>,
    /// Certified IPs inside this network only.
    pub ip: Option<IpNet>,
}

impl Filter {
    /// Whether `c` is selected at `now` (Unix seconds).
    pub fn matches(&self, c: &Certificate, now: i64) -> bool {
        if let Some(within) = self.expiring_within {
            if c.state(now) != State::Valid || c.not_after > now.saturating_add(within) {
                return false;
            }
        }
        if self.revoked && c.revocation.is_none() {
            return false;
        }
        if let Some(k) = &self.kind {
            if &*c.kind != k.as_str() {
                return false;
            }
        }
        if let Some(net) = &self.ip {
            if !net.contains(&c.ip) {
                return false;
            }
        }
        true
    }
}

/// Reads the ledger line at `offset` (a [`Certificate::offset`]), checking its hash.
pub fn read_entry(ledger: &Path, offset: u64) -> Result<Entry, LifecycleError> {
    Ok(crate::ledger::read_entry_at(ledger, offset)?)
}

/// RFC 3339 text of Unix seconds.
pub fn time_text(secs: i64) -> String {
    rfc3339(DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or_default())
}

fn unix(text: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp())
        .map_err(|_| format!("{text:?} is not an RFC 3339 time"))
}

fn serial_bytes(text: &str) -> Option<[u8; 16]> {
    hex::decode(text)?.try_into().ok()
}

fn ledger_io(path: &Path, source: io::Error) -> LifecycleError {
    LifecycleError::Ledger(LedgerError::Io {
        path: path.to_owned(),
        source,
    })
}

fn corrupt(path: &Path, line: u64, message: &str) -> LifecycleError {
    LifecycleError::Ledger(LedgerError::Corrupt {
        path: path.to_owned(),
        line,
        message: message.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;

    pub(crate) fn issued(id: &str, serial: u8, kind: &str, ip: &str, days: i64) -> Event {
        let now = Utc::now();
        Event::Issued {
            request_id: id.into(),
            serial: hex::encode([serial; 16]),
            kind: kind.into(),
            ip: ip.into(),
            not_before: rfc3339(now - chrono::Duration::days(1)),
            not_after: rfc3339(now + chrono::Duration::days(days)),
            fingerprint_sha256: "AB".into(),
            certificate: "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n".into(),
        }
    }

    pub(crate) fn revoked(id: &str, serial: u8, reason: &str) -> Event {
        Event::Revoked {
            serial: hex::encode([serial; 16]),
            request_id: id.into(),
            reason: reason.into(),
            revoked_at: rfc3339(Utc::now()),
        }
    }

    #[test]
    fn catches_up_incrementally_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut l = Ledger::open(&path).unwrap();
        l.append(&[
            issued("a", 1, "webhook", "192.168.1.10", 1),
            issued("b", 2, "private_server", "10.0.0.5", 300),
        ])
        .unwrap();
        let mut inv = Inventory::default();
        assert_eq!(inv.catch_up(&path).unwrap(), 2);
        assert_eq!(inv.certificates.len(), 2);
        l.append(&[
            revoked("b", 2, "keyCompromise"),
            revoked("b", 2, "superseded"),
        ])
        .unwrap();
        assert_eq!(inv.catch_up(&path).unwrap(), 2);
        assert_eq!(inv.catch_up(&path).unwrap(), 0);
        let b = inv.by_request("b").unwrap();
        assert_eq!(
            b.revocation.unwrap().reason,
            RevocationReason::KeyCompromise
        );
        let now = Utc::now().timestamp();
        let expiring = Filter {
            expiring_within: Some(2 * 86_400),
            ..Filter::default()
        };
        let picked: Vec<_> = inv
            .certificates
            .iter()
            .filter(|c| expiring.matches(c, now))
            .map(|c| &*c.request_id)
            .collect();
        assert_eq!(picked, ["a"]);
        let net = Filter {
            ip: Some("10.0.0.0/8".parse().unwrap()),
            ..Filter::default()
        };
        assert!(net.matches(b, now) && !net.matches(inv.by_request("a").unwrap(), now));
        assert_eq!(b.state(now), State::Revoked);
        let json = serde_json::to_value(b.listing(now)).unwrap();
        assert_eq!(json["revocation_reason"], "keyCompromise");
        assert_eq!(json["type"], "private_server");
        assert_eq!(json["serial"], "02".repeat(16));
        let a = serde_json::to_value(inv.by_request("a").unwrap().listing(now)).unwrap();
        assert!(a.get("revoked_at").is_none());
    }

    #[test]
    fn a_torn_last_line_is_left_for_later_and_edits_are_caught() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        Ledger::open(&path)
            .unwrap()
            .append(&[issued("a", 1, "webhook", "192.168.1.10", 1)])
            .unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"seq\":2").unwrap();
        let mut inv = Inventory::default();
        assert_eq!(inv.catch_up(&path).unwrap(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("192.168.1.10", "192.168.1.11")).unwrap();
        let e = Inventory::default().catch_up(&path).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
