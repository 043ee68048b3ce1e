//! Fuzzes the `.gitlab-ci.yml` loader and planner: the input is the main file (and, after
//! `oar_pipeline::fuzz::SEPARATOR`, an included `inc.yml`), loaded, planned, scheduled to the
//! end, previewed and loaded again. Any panic, stack overflow, time-out or OOM is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| oar_pipeline::fuzz::fuzz_load_plan(data));
