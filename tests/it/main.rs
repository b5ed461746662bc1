//! Integration tests: one binary, one module per feature, driving the built `smsgate-ca`.

mod systemd;
mod util;
