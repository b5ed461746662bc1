//! Integration tests: one binary, one module per feature, driving the built `smsgate-ca`.

mod adversarial;
mod client;
mod daemon;
mod init;
mod ledger;
mod policy_check;
mod process;
mod serve;
mod sync;
mod systemd;
mod util;
