//! The signer: the only code that holds the CA key. It creates the CA (`init`), issues exactly
//! the plan policy approved, and signs CRLs and ledger checkpoints. It never decides policy,
//! and never touches HTTP, TOML or a database.

pub mod crl;
