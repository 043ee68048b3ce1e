//! Fuzzes the `rules:if` expression language: parse and evaluate arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| oar_pipeline::fuzz::fuzz_rules_expr(data));
