//! The processing engine shared by `process`, the daemon's watcher, its rescans and the operator
//! commands: claim files from `incoming/`, decide, sign, record and publish, in batches.
//!
//! A batch goes through the phases of DESIGN §2 with one flush per phase instead of one per
//! file (group commit):
//! 1. claim (rename into `processing/<id>.request`, one claim per id across processes) and
//!    examine each file: read it carefully, look for an earlier outcome (status record,
//!    ledger), ask policy;
//! 2. append `intent` and `denied` events to the ledger (one flush) — an approval whose id the
//!    ledger, caught up under its exclusive lock, already decided (or whose status record is
//!    final) is refused there and becomes a `duplicate_request`: never signed twice (DESIGN §9);
//! 3. sign each approved plan;
//! 4. append `issued` events (one flush);
//! 5. publish: certificates, then status records (the commit point), then move the requests to
//!    `archive/` or `held/` — temp files flushed together, each directory flushed once.
//!
//! Nothing is published before the ledger holds it, so a crash at any point is finished on
//! restart from the ledger without signing again ([`Engine::recover`]).

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use chrono::Utc;

use super::examine::{self, Item, Origin, Work};
use super::layout::{classify, Name, Spool, Sub};
use super::publish::{self, Publication};
use super::writers::{Verdict, Writers};
use crate::ledger::{Event, Ledger};
use crate::policy::{self, Policy};
use crate::request::{RequestId, Status};
use crate::signer::ca::Ca;
use crate::signer::issue;
use crate::signer::serial::Serial;

/// Decides a claimed `<id>.revoke.json` (the lifecycle module provides it, so that the spool
/// does not depend on revocation). `Err` means the file went back where it came from.
pub type RevocationHandler = Box<dyn Fn(&Engine, &Item) -> Result<(), String> + Send + Sync>;

/// Most files handled in one batch.
pub const BATCH: usize = 64;

/// The engine: spool, policy, CA, ledger and counters.
pub struct Engine {
    /// The spool.
    pub spool: Spool,
    policy: RwLock<Arc<Policy>>,
    ca: Ca,
    ledger: Mutex<Ledger>,
    in_flight: Mutex<HashSet<RequestId>>,
    /// Files a failed publish left in `processing/`, retried by [`Engine::retry_stranded`].
    stranded: Mutex<Vec<Item>>,
    revocations: Option<RevocationHandler>,
    /// Decision counters since start.
    pub counters: Counters,
}

/// Counts of decisions since start.
#[derive(Debug, Default)]
pub struct Counters {
    /// Certificates issued.
    pub approved: AtomicU64,
    /// Requests denied.
    pub denied: AtomicU64,
    /// Requests held for an operator.
    pub held: AtomicU64,
    /// Files moved to `rejected/`.
    pub rejected: AtomicU64,
    /// Identical resubmissions ignored.
    pub unchanged: AtomicU64,
}

/// What a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Files looked at.
    pub handled: usize,
    /// Files left in `incoming/` for later (same id in flight, or an I/O failure).
    pub deferred: usize,
}

/// A batch failed before publishing anything; its requests went back to `incoming/`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BatchError(pub String);

impl Engine {
    /// Builds an engine; the caller holds the spool lock (or, for operator commands, works
    /// only on held requests).
    pub fn new(spool: Spool, policy: Policy, ca: Ca, ledger: Ledger) -> Self {
        Self {
            spool,
            policy: RwLock::new(Arc::new(policy)),
            ca,
            ledger: Mutex::new(ledger),
            in_flight: Mutex::new(HashSet::new()),
            stranded: Mutex::new(Vec::new()),
            counters: Counters::default(),
            revocations: None,
        }
    }

    /// Installs the handler of revocation requests found in the spool (without one they are
    /// rejected as unreadable).
    #[must_use]
    pub fn with_revocations(mut self, handler: RevocationHandler) -> Self {
        self.revocations = Some(handler);
        self
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .expect("policy lock is never poisoned")
            .clone()
    }

    /// Replaces the policy (SIGHUP reload).
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.write().expect("policy lock is never poisoned") = Arc::new(policy);
    }

    /// The CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// Runs a closure with the ledger locked.
    pub fn with_ledger<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        let mut l = self.ledger.lock().expect("ledger lock is never poisoned");
        f(&mut l)
    }

    /// Names in `incoming/` that may be taken now (dot and temp names left out), oldest first,
    /// and how many regular files were left because a process still holds them open for
    /// writing (see [`super::writers`]): a file found by a scan rather than by its close or
    /// rename event is taken only once closed (DESIGN §2).
    pub fn scan_incoming(&self) -> io::Result<(Vec<OsString>, usize)> {
        let entries = self.spool.entries(Sub::Incoming)?;
        let files: HashSet<(u64, u64)> = entries
            .iter()
            .filter(|(name, _)| !is_in_progress(name))
            .filter_map(|(_, st)| st.filter(|st| st.regular).map(|st| st.id))
            .collect();
        let writers = Writers::scan(&files);
        let now = Utc::now().timestamp();
        let mut skipped = 0;
        let mut v: Vec<((i64, i64), OsString)> = Vec::new();
        for (name, st) in entries {
            if is_in_progress(&name) {
                continue;
            }
            if let Some(st) = st.filter(|st| st.regular) {
                if writers.verdict(&st, now) != Verdict::Closed {
                    skipped += 1;
                    continue;
                }
            }
            v.push((st.map_or((0, 0), |st| (st.mtime, st.mtime_nsec)), name));
        }
        v.sort();
        Ok((v.into_iter().map(|(_, n)| n).collect(), skipped))
    }

    /// At start, before any worker runs: finishes what a crash left in `processing/` — each
    /// file is completed from its status record or the ledger, or processed afresh if it was
    /// never signed — and removes stale temp files everywhere.
    pub fn recover(&self) -> Result<usize, BatchError> {
        self.check_spool()?;
        // Not incoming/: producers' temp files there belong to them.
        for sub in Sub::ALL {
            if sub != Sub::Incoming {
                publish::remove_stale_temps(&self.spool, sub);
            }
        }
        let names = scan(&self.spool, Sub::Processing).map_err(|e| {
            BatchError(format!(
                "cannot read {}: {e}",
                self.spool.path(Sub::Processing).display()
            ))
        })?;
        let items = names
            .into_iter()
            .map(|claimed| Item {
                name: examine::recovered_name(&self.spool, &claimed),
                claimed,
                origin: Origin::Recovered,
                started: Instant::now(),
            })
            .collect();
        let done = self.finish_in_processing(items)?;
        if done > 0 {
            tracing::info!(
                files = done,
                "finished requests interrupted by a previous stop"
            );
        }
        Ok(done)
    }

    /// While running: retries only the files this process's own failed batches left in
    /// `processing/`. Never the whole directory: a worker, or an operator's `approve`, may be
    /// handling the other files in it at this moment.
    pub fn retry_stranded(&self) -> Result<usize, BatchError> {
        let items = std::mem::take(&mut *self.stranded.lock().expect("never poisoned"));
        self.finish_in_processing(items)
    }

    /// Runs files already in `processing/` through the batch phases, each id claimed in
    /// flight first (an id another worker holds is left for later).
    fn finish_in_processing(&self, items: Vec<Item>) -> Result<usize, BatchError> {
        let mut done = 0;
        for chunk in items.chunks(BATCH) {
            let mut claimed = Vec::new();
            for item in chunk {
                if let Some(id) = id_of(&item.name) {
                    if !self.in_flight.lock().expect("never poisoned").insert(id) {
                        self.stranded
                            .lock()
                            .expect("never poisoned")
                            .push(item.clone());
                        continue;
                    }
                }
                claimed.push(item.clone());
            }
            done += self.run_claimed(claimed, None)?.handled;
        }
        Ok(done)
    }

    /// Claims and processes up to [`BATCH`] names from `incoming/`. Refused (nothing claimed)
    /// while a spool directory is swapped (DESIGN §9).
    pub fn process_names(&self, names: &[OsString]) -> Result<BatchOutcome, BatchError> {
        self.check_spool()?;
        let mut claimed = Vec::new();
        let mut outcome = BatchOutcome::default();
        for name in names {
            match classify(name) {
                Name::InProgress => {}
                Name::Bad(reason) => {
                    if self
                        .spool
                        .reject(Sub::Incoming, name, name, &reason)
                        .is_ok()
                    {
                        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(file = %name.to_string_lossy(), reason = %reason, decision = "rejected", "rejected a file that is not a request");
                        outcome.handled += 1;
                    }
                }
                Name::Request(id, _) | Name::Revocation(id) => {
                    let to = claim_target(name, &id);
                    match self.claim(&id, Sub::Incoming, name, &to) {
                        Ok(true) => claimed.push(Item {
                            name: name.clone(),
                            claimed: to,
                            origin: Origin::Incoming,
                            started: Instant::now(),
                        }),
                        Ok(false) => {
                            outcome.deferred += usize::from(self.spool.exists(Sub::Incoming, name));
                        }
                        Err(e) => {
                            tracing::error!(file = %name.to_string_lossy(), error = %e, "cannot claim a request; will retry");
                            outcome.deferred += 1;
                        }
                    }
                }
            }
        }
        let r = self.run_claimed(claimed, None)?;
        outcome.handled += r.handled;
        outcome.deferred += r.deferred;
        Ok(outcome)
    }

    /// Claims `from/name` into `processing/to` for `id`: in flight in this process first, then
    /// by a rename that never replaces (one claim per id across processes).
    fn claim(&self, id: &RequestId, from: Sub, name: &OsStr, to: &OsStr) -> io::Result<bool> {
        if !self
            .in_flight
            .lock()
            .expect("in-flight lock is never poisoned")
            .insert(id.clone())
        {
            return Ok(false);
        }
        let r = self.spool.move_file(from, name, Sub::Processing, to);
        if !matches!(r, Ok(true)) {
            self.release(id);
        }
        r
    }

    /// Decides one held request by an operator (`approve` / `deny`): claims it from `held/`,
    /// reads it again and runs it through the same phases (policy and ledger checked again).
    /// Returns what was published; `None` when no such request is held.
    pub fn decide_held(
        &self,
        id: &RequestId,
        verdict: examine::Operator,
    ) -> Result<Option<Publication>, BatchError> {
        self.check_spool()?;
        for ext in ["csr", "json"] {
            let name = OsString::from(format!("{id}.{ext}"));
            if !self.spool.exists(Sub::Held, &name) {
                continue;
            }
            let to = examine::claim_name(id);
            match self.claim(id, Sub::Held, &name, &to) {
                Ok(true) => {
                    let item = Item {
                        name,
                        claimed: to,
                        origin: Origin::Held,
                        started: Instant::now(),
                    };
                    let mut out = Vec::new();
                    self.run_claimed_into(vec![item], Some(verdict), &mut out)?;
                    return Ok(out.pop());
                }
                Ok(false) if self.spool.exists(Sub::Held, &name) => {
                    return Err(BatchError(format!(
                        "request {id} is being handled by another signer right now \
                         (processing/{}): try again in a moment",
                        to.to_string_lossy()
                    )))
                }
                Ok(false) => return Ok(None),
                Err(e) => {
                    return Err(BatchError(format!(
                        "cannot claim {}: {e}",
                        self.spool.path(Sub::Held).join(&name).display()
                    )))
                }
            }
        }
        Ok(None)
    }

    /// Denies held requests whose `held_ttl` has run out (`expired`).
    pub fn expire_held(&self) -> usize {
        let Ok(names) = scan(&self.spool, Sub::Held) else {
            return 0;
        };
        let mut n = 0;
        for name in names {
            let Name::Request(id, _) = classify(&name) else {
                continue;
            };
            if examine::held_expired(&self.spool, &id, &self.policy(), Utc::now())
                && matches!(
                    self.decide_held(&id, examine::Operator::Expire),
                    Ok(Some(_))
                )
            {
                n += 1;
            }
        }
        n
    }

    /// Refuses the batch while a spool directory is swapped (logged and counted by the spool).
    fn check_spool(&self) -> Result<(), BatchError> {
        self.spool.check().map_err(|e| BatchError(e.to_string()))
    }

    fn run_claimed(
        &self,
        claimed: Vec<Item>,
        op: Option<examine::Operator>,
    ) -> Result<BatchOutcome, BatchError> {
        let mut out = Vec::new();
        self.run_claimed_into(claimed, op, &mut out)
    }

    fn run_claimed_into(
        &self,
        claimed: Vec<Item>,
        op: Option<examine::Operator>,
        published: &mut Vec<Publication>,
    ) -> Result<BatchOutcome, BatchError> {
        // Revocation requests take their own path (outside the ledger lock: it appends).
        let (revocations, claimed): (Vec<_>, Vec<_>) = claimed.into_iter().partition(|item| {
            self.revocations.is_some() && matches!(classify(&item.name), Name::Revocation(_))
        });
        let mut outcome = BatchOutcome::default();
        if let Some(handler) = &self.revocations {
            for item in &revocations {
                match handler(self, item) {
                    Ok(()) => outcome.handled += 1,
                    Err(e) => {
                        tracing::error!(file = %item.name.to_string_lossy(), error = %e, "revocation request left for later");
                        outcome.deferred += 1;
                    }
                }
            }
            self.release_all(&revocations);
        }
        if claimed.is_empty() {
            return Ok(outcome);
        }
        let started = Instant::now();
        let policy = self.policy();
        let ctx = policy::Context {
            name_constraints: self.ca.facts.permitted.clone(),
        };
        // Phase 1: examine.
        let priors: Vec<examine::Prior> = {
            let ledger = self.ledger.lock().expect("ledger lock is never poisoned");
            claimed
                .iter()
                .map(|item| examine::Prior::of(&ledger, id_of(&item.name).as_ref()))
                .collect()
        };
        // Parsing and verifying CSRs runs without the ledger's lock: workers in parallel.
        let mut works: Vec<Work> = claimed
            .iter()
            .zip(&priors)
            .map(|(item, prior)| {
                examine::examine(&self.spool, item.clone(), &policy, &ctx, prior, op.clone())
            })
            .collect();
        // A CA key that is away (a token removed) leaves the requests queued, before any
        // serial is reserved for them.
        if works.iter().any(|w| matches!(w, Work::Approve { .. })) {
            if let Err(e) = self.ca.key.ensure_ready() {
                return Err(self.requeue(
                    &claimed,
                    format!("the CA key is unavailable, requests stay queued: {e}"),
                ));
            }
        }
        // Phase 2: intents (each checked against the ledger under its lock) and denials.
        if let Err(e) = self.record_intents(&mut works) {
            return Err(self.requeue(
                &claimed,
                format!("cannot write the ledger, requests stay queued: {e}"),
            ));
        }
        // Phase 3: sign.
        let mut issued_events = Vec::new();
        for w in &mut works {
            let Work::Approve {
                id,
                kind,
                plan,
                serial,
                public_key_der,
                item,
            } = w
            else {
                continue;
            };
            let serial = serial.expect("phase 2 gave every approval a serial");
            let result = issue::prepare(&self.ca, plan, public_key_der, serial, Utc::now())
                .and_then(|p| issue::issue(&self.ca, p));
            match result {
                Ok(issued) => {
                    issued_events.push(Event::Issued {
                        request_id: id.to_string(),
                        serial: serial.to_hex(),
                        kind: kind.clone(),
                        ip: plan.ip.to_string(),
                        not_before: crate::request::rfc3339(issued.not_before),
                        not_after: crate::request::rfc3339(issued.not_after),
                        fingerprint_sha256: issued.fingerprint.clone(),
                        certificate: issued.leaf_pem.clone(),
                    });
                    *w = Work::Signed {
                        id: id.clone(),
                        kind: kind.clone(),
                        plan: plan.clone(),
                        issued: Box::new(issued),
                        item: item.clone(),
                    };
                }
                Err(e) if e.is_unavailable() => {
                    // Nothing of this batch is published: the requests wait for the key.
                    return Err(self.requeue(
                        &claimed,
                        format!("the CA key became unavailable, requests stay queued: {e}"),
                    ));
                }
                Err(e) => {
                    tracing::error!(request_id = %id, error = %e, "the signer refused to sign; holding the request for an operator");
                    *w = Work::Hold { id: id.clone(), kind: kind.clone(), message: format!("held: the signer refused to sign it ({e}); an operator must look at it"), item: item.clone() };
                }
            }
        }
        // Phase 4: issued records, one flush.
        if !issued_events.is_empty() {
            if let Err(e) = self.with_ledger(|l| l.append(&issued_events)) {
                return Err(self.requeue(
                    &claimed,
                    format!("cannot write the ledger, requests stay queued: {e}"),
                ));
            }
        }
        // Phase 5: publish.
        let results = publish::publish(&self.spool, &self.ca, works);
        match results {
            Ok(pubs) => {
                for p in pubs {
                    self.count(&p);
                    outcome.handled += 1;
                    published.push(p);
                }
            }
            Err(e) => {
                let msg = format!("cannot publish results, requests stay queued and will be finished from the ledger: {e}");
                self.stranded
                    .lock()
                    .expect("never poisoned")
                    .extend(claimed.iter().map(|item| Item {
                        origin: Origin::Recovered,
                        ..item.clone()
                    }));
                self.release_all(&claimed);
                return Err(BatchError(msg));
            }
        }
        self.release_all(&claimed);
        tracing::debug!(
            files = claimed.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "batch done"
        );
        Ok(outcome)
    }

    /// Phase 2: gives each approval a fresh serial and appends its `intent` — unless the ledger,
    /// caught up under its exclusive lock, already holds an `issued` event or a final denial
    /// for the id, or the id has a final status record: such a request is never signed again
    /// and becomes a `duplicate_request` (DESIGN §9). Denials are appended with it; one flush
    /// (a second only when something was refused).
    fn record_intents(&self, works: &mut [Work]) -> Result<(), crate::ledger::LedgerError> {
        let mut ledger = self.ledger.lock().expect("ledger lock is never poisoned");
        let mut batch_serials = HashSet::new();
        let mut events = Vec::new();
        for w in works.iter_mut() {
            match w {
                Work::Approve {
                    id,
                    kind,
                    plan,
                    serial,
                    ..
                } => {
                    let s = loop {
                        let s = Serial::random(plan.serial_prefix);
                        if !ledger.index().serials.contains(s.as_bytes()) && batch_serials.insert(s)
                        {
                            break s;
                        }
                    };
                    *serial = Some(s);
                    events.push(Event::Intent {
                        request_id: id.to_string(),
                        serial: s.to_hex(),
                        kind: kind.clone(),
                        ip: plan.ip.to_string(),
                    });
                }
                Work::Deny {
                    id,
                    kind,
                    reason,
                    message,
                    ..
                } => events.push(Event::Denied {
                    request_id: id.to_string(),
                    kind: kind.clone(),
                    reason: reason.as_str().to_owned(),
                    message: message.clone(),
                }),
                Work::Duplicate { id, kind, .. } => events.push(duplicate_event(id, kind)),
                _ => {}
            }
        }
        if events.is_empty() {
            return Ok(());
        }
        let spool = &self.spool;
        let kept = ledger.append_if(&events, |index, event| match event {
            Event::Intent { request_id, .. } => {
                let decided = index
                    .requests
                    .get(request_id.as_str())
                    .is_some_and(|o| o.issued.is_some() || o.denied.is_some());
                let final_record = RequestId::parse(request_id).ok().is_some_and(|id| {
                    examine::read_status(spool, &id).is_some_and(|r| r.status != Status::Pending)
                });
                !(decided || final_record)
            }
            _ => true,
        })?;
        let mut refused = Vec::new();
        let mut intents = events.iter().zip(kept);
        for w in works.iter_mut() {
            let Work::Approve { id, kind, item, .. } = w else {
                if matches!(w, Work::Deny { .. } | Work::Duplicate { .. }) {
                    intents.next();
                }
                continue;
            };
            let Some((_, true)) = intents.next() else {
                tracing::warn!(request_id = %id, "refused to sign: the ledger already holds a decision for this id");
                refused.push(duplicate_event(id, kind));
                *w = Work::Duplicate {
                    id: id.clone(),
                    kind: kind.clone(),
                    item: item.clone(),
                };
                continue;
            };
        }
        if !refused.is_empty() {
            ledger.append(&refused)?;
        }
        Ok(())
    }

    fn count(&self, p: &Publication) {
        let c = match p.decision {
            publish::Decision::Approved => &self.counters.approved,
            publish::Decision::Denied => &self.counters.denied,
            publish::Decision::Held => &self.counters.held,
            publish::Decision::Rejected => &self.counters.rejected,
            publish::Decision::Unchanged => &self.counters.unchanged,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Puts claimed files back where they came from after a failure before anything was
    /// published.
    fn requeue(&self, claimed: &[Item], msg: String) -> BatchError {
        for item in claimed {
            let back = match item.origin {
                Origin::Held => Sub::Held,
                Origin::Incoming | Origin::Recovered => Sub::Incoming,
            };
            let _ = self
                .spool
                .move_file(Sub::Processing, &item.claimed, back, &item.name);
        }
        self.release_all(claimed);
        tracing::error!("{msg}");
        BatchError(msg)
    }

    fn release(&self, id: &RequestId) {
        self.in_flight
            .lock()
            .expect("in-flight lock is never poisoned")
            .remove(id);
    }

    fn release_all(&self, claimed: &[Item]) {
        let mut set = self
            .in_flight
            .lock()
            .expect("in-flight lock is never poisoned");
        for item in claimed {
            if let Some(id) = id_of(&item.name) {
                set.remove(&id);
            }
        }
    }
}

/// The id of a request or revocation file name.
fn id_of(name: &OsStr) -> Option<RequestId> {
    match classify(name) {
        Name::Request(id, _) | Name::Revocation(id) => Some(id),
        _ => None,
    }
}

/// The name a file is claimed under in `processing/`: `<id>.request` for a certificate
/// request (one per id), the file's own name for a revocation request.
fn claim_target(name: &OsStr, id: &RequestId) -> OsString {
    match classify(name) {
        Name::Request(..) => examine::claim_name(id),
        _ => name.to_owned(),
    }
}

fn duplicate_event(id: &RequestId, kind: &str) -> Event {
    Event::Denied {
        request_id: id.to_string(),
        kind: kind.to_owned(),
        reason: policy::Reason::DuplicateRequest.as_str().to_owned(),
        message: "a request with this id and different content was decided before".into(),
    }
}

/// Lists a directory's names that are not dot or temp names, oldest modification first.
pub fn scan(spool: &Spool, sub: Sub) -> io::Result<Vec<OsString>> {
    let mut v: Vec<((i64, i64), OsString)> = spool
        .entries(sub)?
        .into_iter()
        .filter(|(name, _)| !is_in_progress(name))
        .map(|(name, st)| (st.map_or((0, 0), |st| (st.mtime, st.mtime_nsec)), name))
        .collect();
    v.sort();
    Ok(v.into_iter().map(|(_, n)| n).collect())
}

fn is_in_progress(name: &OsStr) -> bool {
    matches!(classify(name), Name::InProgress)
}

/// Processes `names` from `incoming/` on `workers` threads, [`BATCH`] names at a time, each
/// batch claimed by exactly one worker. Returns what was done; stops at the first batch error
/// (its requests stay queued) after the other workers finish their batches.
pub fn run_parallel(
    engine: &Engine,
    names: Vec<OsString>,
    workers: usize,
) -> Result<BatchOutcome, BatchError> {
    let batches: Mutex<std::vec::IntoIter<Vec<OsString>>> = Mutex::new(
        names
            .chunks(BATCH)
            .map(<[OsString]>::to_vec)
            .collect::<Vec<_>>()
            .into_iter(),
    );
    let total = Mutex::new(BatchOutcome::default());
    let failure: Mutex<Option<BatchError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| loop {
                if failure.lock().expect("never poisoned").is_some() {
                    return;
                }
                let Some(batch) = batches.lock().expect("never poisoned").next() else {
                    return;
                };
                match engine.process_names(&batch) {
                    Ok(o) => {
                        let mut t = total.lock().expect("never poisoned");
                        t.handled += o.handled;
                        t.deferred += o.deferred;
                    }
                    Err(e) => {
                        *failure.lock().expect("never poisoned") = Some(e);
                        return;
                    }
                }
            });
        }
    });
    match failure.into_inner().expect("never poisoned") {
        Some(e) => Err(e),
        None => Ok(total.into_inner().expect("never poisoned")),
    }
}

/// Drains `incoming/` until a pass finds nothing more to do. Files still open for writing are
/// left where they are (logged).
pub fn drain(engine: &Engine, workers: usize) -> Result<usize, BatchError> {
    let mut handled = 0;
    loop {
        let (names, open) = engine.scan_incoming().map_err(|e| {
            BatchError(format!(
                "cannot read {}: {e}",
                engine.spool.path(Sub::Incoming).display()
            ))
        })?;
        if names.is_empty() || {
            let o = run_parallel(engine, names, workers)?;
            handled += o.handled;
            // Only deferred files are left (an id in flight or an unreadable name): next time.
            o.handled == 0
        } {
            if open > 0 {
                tracing::warn!(
                    files = open,
                    "left files in incoming/ that a process still holds open for writing"
                );
            }
            return Ok(handled);
        }
    }
}
