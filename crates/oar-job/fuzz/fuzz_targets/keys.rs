//! Fuzzes cache and artifact key expansion: job variables, cache keys, fallback keys and
//! artifact names from the input, through the job's cache resolution to the sanitized keys the
//! manager presigns (see `oar_job::fuzz::fuzz_keys`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| oar_job::fuzz::fuzz_keys(data));
