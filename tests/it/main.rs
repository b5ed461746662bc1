//! Integration tests: one binary, one module per feature, driving the built `smsgate-ca`.

// Tests state their expectations with unwrap and expect: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod adversarial;
mod boundary;
mod client;
mod config;
mod daemon;
mod e2e;
mod init;
mod ledger;
mod lifecycle;
mod policy_check;
mod process;
mod real_keys;
mod serve;
mod sync;
mod systemd;
mod util;
