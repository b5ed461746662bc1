#![no_main]
//! Fuzz target: see `smsgate_ca::fuzzing::status`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| smsgate_ca::fuzzing::status(data));
