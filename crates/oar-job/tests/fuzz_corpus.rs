//! Replays the fuzz seed corpora (`fuzz/corpus/*`) through the same harnesses as the fuzz
//! targets, so the stable test run catches a regression on any input that once found a bug.

use std::path::Path;

fn replay(target: &str, mut harness: impl FnMut(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "{}: only {} files",
        dir.display(),
        files.len()
    );
    for file in files {
        let data = std::fs::read(&file).expect("corpus file");
        eprintln!("{}", file.display());
        harness(&data);
    }
}

#[test]
fn mask_corpus() {
    replay("mask", oar_job::fuzz::fuzz_mask);
}

#[test]
fn trace_corpus() {
    // The harness wants paused time: the reporter's back-off sleeps then take none.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let harness = rt.block_on(oar_job::fuzz::TraceHarness::new());
    replay("trace", |data| rt.block_on(harness.run(data)));
}

#[test]
fn keys_corpus() {
    replay("keys", oar_job::fuzz::fuzz_keys);
}

/// Found by the `trace` target: an appending reporter (the manager after a pod's helper) whose
/// final state GitLab refused with 412 (its trace had lost a tail) appended its whole log
/// again after what GitLab still held, instead of resending the lost part in place.
#[test]
fn an_appending_reporter_refused_with_412_resends_in_place() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let harness = rt.block_on(oar_job::fuzz::TraceHarness::new());
    let data = fs_read("trace/put_lost_tail_appending");
    rt.block_on(harness.run(&data));
}

fn fs_read(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    std::fs::read(&path).expect("corpus file")
}
