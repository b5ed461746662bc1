//! The spool (DESIGN §2): the directories requests and results move through, the lock that
//! keeps one signer per spool, and the engine that processes requests in batches, atomically
//! and durably. All spool I/O goes through [`Spool`]'s directory handles (DESIGN §9).

pub mod engine;
pub mod examine;
pub mod layout;
pub mod lock;
pub mod publish;
pub mod watch;
pub mod writers;

pub use engine::Engine;
pub use layout::Spool;
