#![no_main]
//! Fuzz target: see `smsgate_ca::fuzzing::csr_policy`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| smsgate_ca::fuzzing::csr_policy(data));
