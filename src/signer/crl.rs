//! CRL building (in progress).
