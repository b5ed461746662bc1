//! The ledger (DESIGN §7): `<state>/ledger.jsonl`, append-only, hash-chained, flushed before
//! anything it records is published.
//!
//! Writers take an exclusive `flock` on the file for each append, so the daemon and operator
//! commands (`approve`, `revoke`, `crl`) can interleave safely; before appending, a writer
//! catches up with lines another process added. A line torn by a crash mid-append (no final
//! newline) was never acted on — nothing is published before the flush — and is cut off when
//! the ledger is next opened for writing.
//!
//! The in-memory [`Index`] keeps only what the signer needs on the hot path (serials in use,
//! each request's outcome by file offset), so a large ledger costs little memory.

pub mod entry;
pub mod verify;

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::Utc;

pub use entry::{Entry, Event};

use crate::fsx::{self, hex};
use crate::request::rfc3339;

/// Why the ledger cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// I/O on the ledger file.
    #[error("ledger {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A line is invalid or the chain is broken.
    #[error("ledger {path} line {line}: {message}; run `smsgate-ca ledger verify` and restore the ledger from a backup")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// Signing a checkpoint failed.
    #[error("cannot sign the ledger checkpoint: {0}")]
    Sign(String),
}

/// An open ledger with its index.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: File,
    tail: Tail,
    index: Index,
}

#[derive(Debug, Clone)]
struct Tail {
    len: u64,
    seq: u64,
    hash: String,
}

/// What the signer needs to know from the ledger without reading it again.
#[derive(Debug, Default)]
pub struct Index {
    /// Every serial ever reserved (intent) or issued.
    pub serials: HashSet<[u8; 16]>,
    /// Each request's recorded outcome.
    pub requests: HashMap<Box<str>, Outcome>,
    /// Revoked serials.
    pub revoked: HashSet<[u8; 16]>,
    /// Issued serial → byte offset of its `issued` line.
    pub issued: HashMap<[u8; 16], u64>,
}

/// A request's outcome as the ledger knows it (byte offsets of the deciding lines).
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// Offset of the `issued` line.
    pub issued: Option<u64>,
    /// Offset of the last `denied` line.
    pub denied: Option<u64>,
}

/// A line written by [`Ledger::append`].
#[derive(Debug, Clone)]
pub struct Appended {
    /// 1-based line number.
    pub seq: u64,
    /// The exact line (no newline).
    pub line: String,
}

impl Ledger {
    /// Opens (creating if needed) the ledger for reading and appending, cutting a torn final
    /// line and building the index. Fails on any broken line.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let io_err = |source| LedgerError::Io {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(fsx::MODE_SECRET)
            .open(path)
            .map_err(io_err)?;
        let mut ledger = Self {
            path: path.to_owned(),
            file,
            tail: Tail {
                len: 0,
                seq: 0,
                hash: entry::GENESIS.to_owned(),
            },
            index: Index::default(),
        };
        ledger.file.lock().map_err(io_err)?;
        let result = ledger.catch_up(true);
        let _ = ledger.file.unlock();
        result?;
        Ok(ledger)
    }

    /// The index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Number of lines.
    pub fn line_count(&self) -> u64 {
        self.tail.seq
    }

    /// Whether the ledger is empty.
    pub fn is_empty(&self) -> bool {
        self.tail.seq == 0
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads lines other processes appended since the last look.
    pub fn refresh(&mut self) -> Result<(), LedgerError> {
        let io_err = |source| LedgerError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.lock_shared().map_err(io_err)?;
        let result = self.catch_up(false);
        let _ = self.file.unlock();
        result
    }

    /// Appends events as one write and flushes them to disk before returning.
    pub fn append(&mut self, events: &[Event]) -> Result<Vec<Appended>, LedgerError> {
        self.append_with(events, |_| None)
    }

    /// Appends a checkpoint of everything before it, signed by `sign` (which gets
    /// [`entry::checkpoint_message`] and returns the DER signature, SHA-256 over the message,
    /// by the issuing CA key); returns its line (to publish). Nothing is appended when signing
    /// fails.
    pub fn checkpoint(
        &mut self,
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
    ) -> Result<Appended, LedgerError> {
        let mut failure = None;
        let result = self.append_with(&[], |tail| {
            let line = tail.seq + 1;
            let message = entry::checkpoint_message(line, &tail.hash);
            let signature = sign(&message).map_err(|e| failure = Some(e)).ok()?;
            Some(Event::Checkpoint {
                line,
                head: tail.hash.clone(),
                signature: hex::encode(signature),
            })
        });
        if let Some(e) = failure {
            return Err(LedgerError::Sign(e));
        }
        let mut out = result?;
        out.pop().ok_or_else(|| LedgerError::Corrupt {
            path: self.path.clone(),
            line: self.tail.seq + 1,
            message: "the checkpoint could not be signed".into(),
        })
    }

    /// Reads and parses the line at a byte offset (from the index).
    pub fn read_at(&self, offset: u64) -> Result<Entry, LedgerError> {
        entry_at(&self.file, &self.path, offset)
    }

    /// The `issued` entry of a request, if one was recorded.
    pub fn issued_for(&self, request_id: &str) -> Result<Option<Entry>, LedgerError> {
        match self.index.requests.get(request_id).and_then(|o| o.issued) {
            Some(off) => self.read_at(off).map(Some),
            None => Ok(None),
        }
    }

    /// The last `denied` entry of a request, if one was recorded.
    pub fn denied_for(&self, request_id: &str) -> Result<Option<Entry>, LedgerError> {
        match self.index.requests.get(request_id).and_then(|o| o.denied) {
            Some(off) => self.read_at(off).map(Some),
            None => Ok(None),
        }
    }

    /// Appends the events `keep` accepts, as one write flushed before returning, and says
    /// which were kept. `keep` runs under the exclusive lock on an index caught up with every
    /// other writer, so a check and the append it guards are one step for all the processes
    /// sharing the ledger (DESIGN §9: whether an id may be signed is decided here).
    pub fn append_if(
        &mut self,
        events: &[Event],
        keep: impl Fn(&Index, &Event) -> bool,
    ) -> Result<Vec<bool>, LedgerError> {
        let mut kept = Vec::new();
        self.append_filtered(
            events,
            |index, e| {
                let k = keep(index, e);
                kept.push(k);
                k
            },
            |_| None,
        )?;
        Ok(kept)
    }

    fn append_with(
        &mut self,
        events: &[Event],
        extra: impl FnOnce(&Tail) -> Option<Event>,
    ) -> Result<Vec<Appended>, LedgerError> {
        self.append_filtered(events, |_, _| true, extra)
    }

    fn append_filtered(
        &mut self,
        events: &[Event],
        mut keep: impl FnMut(&Index, &Event) -> bool,
        extra: impl FnOnce(&Tail) -> Option<Event>,
    ) -> Result<Vec<Appended>, LedgerError> {
        let path = self.path.clone();
        let io_err = |source| LedgerError::Io {
            path: path.clone(),
            source,
        };
        self.file.lock().map_err(io_err)?;
        let result = (|| {
            self.catch_up(true)?;
            let ts = rfc3339(Utc::now());
            let mut tail = self.tail.clone();
            let mut text = String::new();
            let mut out = Vec::new();
            let mut push = |event: &Event, tail: &mut Tail, text: &mut String| {
                let seq = tail.seq + 1;
                let line = entry::render(seq, &ts, event, &tail.hash);
                let hash = line[line.len() - 66..line.len() - 2].to_owned();
                text.push_str(&line);
                text.push('\n');
                tail.seq = seq;
                tail.hash = hash;
                out.push(Appended { seq, line });
            };
            for e in events {
                if keep(&self.index, e) {
                    push(e, &mut tail, &mut text);
                }
            }
            if let Some(e) = extra(&tail) {
                push(&e, &mut tail, &mut text);
            }
            if text.is_empty() {
                return Ok(out);
            }
            let write = self
                .file
                .write_all(text.as_bytes())
                .and_then(|()| self.file.sync_data());
            if let Err(e) = write {
                // Leave no partial line behind (e.g. ENOSPC mid-write).
                let _ = self.file.set_len(self.tail.len);
                let _ = self.file.sync_data();
                return Err(io_err(e));
            }
            let base = self.tail.len;
            let mut off = base;
            for a in &out {
                let parsed =
                    entry::parse(&a.line).map_err(|e| self.corrupt(a.seq, e.to_string()))?;
                self.index.add(&parsed, off);
                off += a.line.len() as u64 + 1;
            }
            tail.len = off;
            self.tail = tail;
            Ok(out)
        })();
        let _ = self.file.unlock();
        result
    }

    /// Reads lines from the known end; with `repair`, cuts a torn final line (caller holds the
    /// exclusive lock).
    fn catch_up(&mut self, repair: bool) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let io_err = |source| LedgerError::Io {
            path: path.clone(),
            source,
        };
        let size = self.file.metadata().map_err(io_err)?.len();
        if size == self.tail.len {
            return Ok(());
        }
        if size < self.tail.len {
            return Err(self.corrupt(self.tail.seq, "the ledger shrank while open".into()));
        }
        let mut f = &self.file;
        f.seek(SeekFrom::Start(self.tail.len)).map_err(io_err)?;
        let mut reader = BufReader::with_capacity(1 << 16, f);
        let mut offset = self.tail.len;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(io_err)?;
            if n == 0 {
                break;
            }
            if buf.last() != Some(&b'\n') {
                if repair {
                    tracing::warn!(ledger = %self.path.display(), line = self.tail.seq + 1,
                        "cutting an incomplete final ledger line left by an interrupted write");
                    self.file.set_len(offset).map_err(io_err)?;
                    self.file.sync_data().map_err(io_err)?;
                    break;
                }
                // Another process is mid-append; read it next time.
                break;
            }
            let seq = self.tail.seq + 1;
            let line = std::str::from_utf8(&buf[..n - 1])
                .map_err(|_| self.corrupt(seq, "not UTF-8".into()))?;
            let e = entry::parse(line).map_err(|e| self.corrupt(seq, e.to_string()))?;
            if e.seq != seq {
                return Err(self.corrupt(seq, format!("seq is {}, expected {seq}", e.seq)));
            }
            if e.prev != self.tail.hash {
                return Err(
                    self.corrupt(seq, "prev does not match the previous line's hash".into())
                );
            }
            self.index.add(&e, offset);
            offset += n as u64;
            self.tail = Tail {
                len: offset,
                seq,
                hash: e.hash,
            };
        }
        Ok(())
    }

    fn corrupt(&self, line: u64, message: String) -> LedgerError {
        LedgerError::Corrupt {
            path: self.path.clone(),
            line,
            message,
        }
    }
}

impl Index {
    fn add(&mut self, e: &Entry, offset: u64) {
        match &e.event {
            Event::Intent { serial, .. } => {
                if let Some(s) = serial_bytes(serial) {
                    self.serials.insert(s);
                }
            }
            Event::Issued {
                request_id, serial, ..
            } => {
                if let Some(s) = serial_bytes(serial) {
                    self.serials.insert(s);
                    self.issued.insert(s, offset);
                }
                self.requests
                    .entry(request_id.as_str().into())
                    .or_default()
                    .issued = Some(offset);
            }
            Event::Denied {
                request_id, reason, ..
            } => {
                // A duplicate submission is denied without touching the first request's outcome.
                if reason != "duplicate_request" {
                    self.requests
                        .entry(request_id.as_str().into())
                        .or_default()
                        .denied = Some(offset);
                }
            }
            Event::Revoked { serial, .. } => {
                if let Some(s) = serial_bytes(serial) {
                    self.revoked.insert(s);
                }
            }
            Event::Crl { .. } | Event::Checkpoint { .. } => {}
        }
    }
}

/// Reads and parses the line at a byte offset of a ledger file without opening (and reading)
/// the whole ledger: what `show` needs with an offset from its index.
pub fn read_entry_at(path: &Path, offset: u64) -> Result<Entry, LedgerError> {
    let file = File::open(path).map_err(|source| LedgerError::Io {
        path: path.to_owned(),
        source,
    })?;
    entry_at(&file, path, offset)
}

fn entry_at(file: &File, path: &Path, offset: u64) -> Result<Entry, LedgerError> {
    let corrupt = |message: String| LedgerError::Corrupt {
        path: path.to_owned(),
        line: 0,
        message,
    };
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut pos = offset;
    loop {
        let n = file
            .read_at(&mut chunk, pos)
            .map_err(|source| LedgerError::Io {
                path: path.to_owned(),
                source,
            })?;
        if n == 0 {
            return Err(corrupt(format!("no complete line at byte {offset}")));
        }
        if let Some(nl) = chunk[..n].iter().position(|b| *b == b'\n') {
            buf.extend_from_slice(&chunk[..nl]);
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        pos += n as u64;
    }
    let text = String::from_utf8(buf).map_err(|_| corrupt("not UTF-8".into()))?;
    entry::parse(&text).map_err(|e| corrupt(format!("at byte {offset}: {e}")))
}

fn serial_bytes(hex_serial: &str) -> Option<[u8; 16]> {
    hex::decode(hex_serial)?.try_into().ok()
}

#[cfg(test)]
mod tests;
