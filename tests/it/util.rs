//! Shared test environment (in progress).
