//! Fuzzes `config.toml` loading and validation, and the editable document of the same text
//! (see `oar_config::fuzz::fuzz_config`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| oar_config::fuzz::fuzz_config(data));
