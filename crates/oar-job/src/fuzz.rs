//! The fuzz harnesses of the job driver, shared by `fuzz/fuzz_targets/*.rs` and
//! `tests/fuzz_corpus.rs` (which replays the seed corpora on stable). Not part of the API.

mod keys;
mod mask;
mod trace;

pub use keys::fuzz_keys;
pub use mask::fuzz_mask;
pub use trace::TraceHarness;
