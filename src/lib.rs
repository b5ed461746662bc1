//! smsgate-ca: a private certificate authority for TLS server certificates on private IP
//! addresses, whose signing key never touches a network (see DESIGN.md).
//!
//! Roles are kept apart as in Let's Encrypt's Boulder: [`policy`] decides (pure), [`signer`]
//! signs exactly what policy approved, [`spool`] and [`ledger`] move and record, and the
//! front doors ([`api`], [`sync`], [`client`], [`cli`]) talk to people and programs.
//! The library exists so that `tests/` and `fuzz/` can reach the internals.

pub mod api;
pub mod cli;
pub mod client;
pub mod csr;
pub mod daemon;
pub mod duration;
pub mod error;
pub mod fsx;
#[doc(hidden)]
pub mod fuzzing;
pub mod key_type;
pub mod ledger;
pub mod lifecycle;
pub mod logging;
pub mod policy;
pub mod proof;
pub mod request;
pub mod signer;
pub mod spool;
pub mod store;
pub mod sync;
pub mod systemd;
#[cfg(test)]
mod testkit;
