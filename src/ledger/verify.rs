//! `ledger verify`: walks the whole chain and names the first line where it breaks; checks
//! signed checkpoints inside the ledger and, given a published checkpoint, that the ledger
//! still holds that history (a cut-off tail or rewritten history fails).

use std::io::{BufRead, BufReader};
use std::path::Path;

use openssl::x509::X509Ref;

use super::entry::{self, Event};
use crate::fsx::hex;

/// A successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Lines checked.
    pub lines: u64,
    /// Checkpoints inside the ledger whose signatures verified.
    pub checkpoints: u64,
    /// The hash of the last line.
    pub head: String,
}

/// Where and why verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct Broken {
    /// 1-based line (0: the file or the checkpoint itself).
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

/// Verifies the ledger at `path`; `ca` checks checkpoint signatures; `checkpoint` is the text
/// of a published `ledger-checkpoint.json` the ledger must still contain.
pub fn verify(
    path: &Path,
    ca: Option<&X509Ref>,
    checkpoint: Option<&str>,
) -> Result<Report, Broken> {
    let file = std::fs::File::open(path).map_err(|e| Broken {
        line: 0,
        message: format!("cannot open {}: {e}", path.display()),
    })?;
    let external = match checkpoint {
        Some(text) => Some(parse_checkpoint(text.trim_end())?),
        None => None,
    };
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut prev = entry::GENESIS.to_owned();
    let mut seq = 0u64;
    let mut checkpoints = 0u64;
    let mut buf = Vec::new();
    let mut matched_external = false;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| Broken {
            line: seq + 1,
            message: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        seq += 1;
        let broken = |message: String| Broken { line: seq, message };
        if buf.last() != Some(&b'\n') {
            return Err(broken(
                "the line is incomplete (an interrupted write, or the file was cut)".into(),
            ));
        }
        let line = std::str::from_utf8(&buf[..n - 1]).map_err(|_| broken("not UTF-8".into()))?;
        let e = entry::parse(line).map_err(|e| broken(e.to_string()))?;
        if e.seq != seq {
            return Err(broken(format!(
                "seq is {}, expected {seq} (a line was removed, added or moved)",
                e.seq
            )));
        }
        if e.prev != prev {
            return Err(broken("prev does not match the hash of the line before (that line was edited, or lines were removed or reordered)".into()));
        }
        if let Event::Checkpoint {
            line: cl,
            head,
            signature,
        } = &e.event
        {
            if *cl != seq || *head != prev {
                return Err(broken(
                    "the checkpoint does not describe its own position".into(),
                ));
            }
            if let Some(ca) = ca {
                check_signature(ca, *cl, head, signature).map_err(broken)?;
            }
            checkpoints += 1;
        }
        if let Some((ext_line, ext_hash)) = &external {
            if *ext_line == seq {
                if *ext_hash != e.hash {
                    return Err(broken(
                        "differs from the published checkpoint: the ledger's history was rewritten"
                            .into(),
                    ));
                }
                matched_external = true;
            }
        }
        prev = e.hash;
    }
    if let Some((ext_line, _)) = &external {
        if !matched_external {
            return Err(Broken {
                line: seq,
                message: format!("the ledger has {seq} lines but the published checkpoint is line {ext_line}: its tail was cut off"),
            });
        }
    }
    Ok(Report {
        lines: seq,
        checkpoints,
        head: prev,
    })
}

/// Parses a published checkpoint line: (line number, its hash); checks its own hash.
fn parse_checkpoint(text: &str) -> Result<(u64, String), Broken> {
    let bad = |m: String| Broken {
        line: 0,
        message: format!("the checkpoint file is invalid: {m}"),
    };
    let e = entry::parse(text).map_err(|e| bad(e.to_string()))?;
    match e.event {
        Event::Checkpoint { line, .. } if line == e.seq => Ok((line, e.hash)),
        _ => Err(bad("it is not a checkpoint line".into())),
    }
}

/// Checks a checkpoint's signature by the issuing CA over [`entry::checkpoint_message`] (also
/// used by `serve` on a pushed `ledger-checkpoint.json`).
pub fn check_signature(ca: &X509Ref, line: u64, head: &str, signature: &str) -> Result<(), String> {
    let sig = hex::decode(signature).ok_or("the checkpoint signature is not hex")?;
    let key = ca.public_key().map_err(|e| e.to_string())?;
    let mut v = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &key)
        .map_err(|e| e.to_string())?;
    v.update(&entry::checkpoint_message(line, head))
        .map_err(|e| e.to_string())?;
    if v.verify(&sig).unwrap_or(false) {
        Ok(())
    } else {
        Err("the checkpoint's signature does not verify with the issuing CA's key".into())
    }
}
