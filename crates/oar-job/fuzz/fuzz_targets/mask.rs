//! Fuzzes the masker and the job log: secrets, token prefixes, output and how it is split
//! into writes come from the input; the log must not depend on the split, must never show a
//! whole secret, must be valid UTF-8 and must respect the output limit (see
//! `oar_job::fuzz::fuzz_mask`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| oar_job::fuzz::fuzz_mask(data));
