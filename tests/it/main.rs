//! Integration tests: one binary, one module per feature, driving the built `smsgate-ca`.

// Tests state their expectations with unwrap and expect: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod adversarial;
mod boundary;
mod browser;
mod client;
mod config;
mod daemon;
mod distrust;
mod e2e;
mod firefox;
mod front_door;
mod holder_revocation;
mod init;
mod instances;
mod ledger;
mod lifecycle;
mod lifetimes;
mod marionette;
mod pg;
mod pinning;
mod pkcs11;
mod policy_check;
mod process;
mod real_keys;
mod serve;
mod sync;
mod systemd;
mod util;
mod webdriver;
