//! The spool <-> API bridge run by `smsgate-ca sync` (in progress).
