//! Replays the fuzz seed corpus (`fuzz/corpus/payload`) through the same harness as the fuzz
//! target, so the stable test run catches a regression on any input that once found a bug.

use std::path::Path;

#[test]
fn payload_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/payload");
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
        oar_kube::fuzz::fuzz_payload(&data);
    }
}
