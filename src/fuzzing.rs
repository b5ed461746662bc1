//! Fuzz harnesses: one function per untrusted input the project reads, each asserting the
//! invariants that must hold for any bytes. `fuzz/` (cargo-fuzz, nightly) drives them with
//! libFuzzer; the property tests run the same functions on stable in `cargo test`.
//!
//! A harness panics only when an invariant is broken; errors for bad input are expected.

use std::sync::OnceLock;

use crate::policy::{self, Decision, Policy};
use crate::request::{Envelope, StatusRecord};

/// CSR parsing and the policy decision: never panics; an approval is always for one private
/// address inside the profile's ranges.
pub fn csr_policy(data: &[u8]) {
    let policy = default_policy();
    for kind in ["webhook", "private_server", "bogus"] {
        let e = policy::evaluate(data, kind, policy, &policy::Context::default());
        if let Decision::Approve(plan) | Decision::Hold(plan) = &e.decision {
            let p = policy
                .profile(kind)
                .expect("an approval names an existing profile");
            assert!(
                p.allow.contains(plan.ip),
                "approved {} outside the allow ranges",
                plan.ip
            );
            assert!(!p.deny.contains(plan.ip));
            assert!(
                !policy::range::is_public(plan.ip),
                "approved a public address"
            );
            assert!(e.public_key_der.is_some());
        }
        assert!(!e.verdicts.is_empty());
    }
}

/// A spool envelope: parses or not; when it parses, it serialises back to what parses equal.
pub fn envelope(data: &[u8]) {
    if let Ok(e) = serde_json::from_slice::<Envelope>(data) {
        let again: Envelope =
            serde_json::from_str(&serde_json::to_string(&e).expect("envelopes serialise"))
                .expect("round trip");
        assert_eq!(again, e);
    }
}

/// A status record (sync reads them from the spool, the API from sync): same round trip.
pub fn status(data: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<StatusRecord>(data) {
        let again: StatusRecord =
            serde_json::from_str(&serde_json::to_string(&r).expect("records serialise"))
                .expect("round trip");
        assert_eq!(again, r);
    }
}

/// Policy TOML: a file that loads renders to TOML that loads to the same policy.
pub fn policy_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Policy::from_toml(text, std::path::Path::new("fuzz.toml")) {
        let rendered = p.to_toml();
        let again = Policy::from_toml(&rendered, std::path::Path::new("rendered.toml"))
            .unwrap_or_else(|e| {
                panic!("a loaded policy renders to an invalid one: {e}\n{rendered}")
            });
        assert_eq!(again.to_toml(), rendered);
        assert_eq!(again.profiles, p.profiles);
    }
}

/// A ledger line: parses only when its own hash matches; never panics.
pub fn ledger_line(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(entry) = crate::ledger::entry::parse(text) {
        assert_eq!(entry.hash.len(), 64);
    }
}

/// The API's request bodies (`POST /api/v1/csr`, `/sync/ack`, `/sync/results`): parse or not,
/// never panic; a parsed CSR body goes through the policy like the handler does.
pub fn api_bodies(data: &[u8]) {
    if let Ok(body) = serde_json::from_slice::<crate::api::csr::PostCsrRequest>(data) {
        let kind = body.kind.as_deref().unwrap_or("webhook");
        let _ = policy::evaluate(
            body.content.as_bytes(),
            kind,
            default_policy(),
            &policy::Context::default(),
        );
    }
    let _ = serde_json::from_slice::<crate::api::sync::AckRequest>(data);
    let _ = serde_json::from_slice::<crate::api::sync::ResultsRequest>(data);
}

fn default_policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(Policy::builtin_default)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;

    type Harness = fn(&[u8]);

    const TARGETS: [(&str, Harness); 6] = [
        ("csr_policy", csr_policy),
        ("envelope", envelope),
        ("status", status),
        ("policy_toml", policy_toml),
        ("ledger_line", ledger_line),
        ("api_bodies", api_bodies),
    ];

    /// Every seed and every input a fuzzer ever crashed on (`fuzz/regressions/<target>/`)
    /// runs clean through its harness.
    #[test]
    fn seeds_and_fuzz_regressions_pass() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut n = 0;
        for (target, harness) in TARGETS {
            for dir in [
                root.join("seeds").join(target),
                root.join("regressions").join(target),
            ] {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    harness(&std::fs::read(e.path()).unwrap());
                    n += 1;
                }
            }
        }
        assert!(n >= 6, "the seed corpus is missing");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The harnesses hold for random bytes and for seeds with random bytes changed.
        #[test]
        fn harnesses_hold_for_mutated_seeds(target in 0usize..6, edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8), junk in proptest::collection::vec(any::<u8>(), 0..64)) {
            let (name, harness) = TARGETS[target];
            harness(&junk);
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(name);
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let mut bytes = std::fs::read(e.path()).unwrap();
                if bytes.is_empty() { continue; }
                for (i, b) in &edits {
                    let i = i.index(bytes.len());
                    bytes[i] = *b;
                }
                harness(&bytes);
            }
        }
    }
}
