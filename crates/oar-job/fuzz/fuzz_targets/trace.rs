//! Fuzzes the trace sender's final phase against a model GitLab over loopback HTTP: the
//! input chooses the log, where GitLab's trace and the reporter start, and GitLab's faults
//! (500s before or after storing, lost tails, 202s and 412s on the final state); GitLab must
//! end up with exactly the log whenever the reporter says it succeeded (see
//! `oar_job::fuzz::TraceHarness::run`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use oar_job::fuzz::TraceHarness;
use tokio::runtime::Runtime;

thread_local! {
    static HARNESS: (Runtime, TraceHarness) = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        let harness = rt.block_on(TraceHarness::new());
        (rt, harness)
    };
}

fuzz_target!(|data: &[u8]| HARNESS.with(|(rt, h)| rt.block_on(h.run(data))));
