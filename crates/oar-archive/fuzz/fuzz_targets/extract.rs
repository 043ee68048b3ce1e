//! Fuzzes `oar_archive::archive::extract`: whatever the input, extraction must not panic,
//! nothing may appear outside the target directory, no symlink inside it may be absolute or
//! resolve outside, and on success the tree matches the reported stats. The first byte picks
//! how the rest is presented (as is, or a tar stream compressed with zstd or gzip by the
//! harness); see `oar_archive::fuzz::fuzz_extract`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| oar_archive::fuzz::fuzz_extract(data));
