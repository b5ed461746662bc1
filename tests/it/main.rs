//! Integration tests: one binary, one module per feature, driving the built `smsgate-ca`.

mod client;
mod daemon;
mod init;
mod policy_check;
mod process;
mod serve;
mod sync;
mod systemd;
mod util;
