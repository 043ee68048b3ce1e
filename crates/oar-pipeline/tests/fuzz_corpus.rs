//! Replays both fuzz seed corpora (`fuzz/corpus/load_plan`, `fuzz/corpus/rules_expr`) through
//! the same harnesses as the fuzz targets, so the stable test run catches a regression on any
//! input that once found a bug.

use std::path::Path;

fn replay(target: &str, harness: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = fs_err::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{}: only {} files",
        dir.display(),
        files.len()
    );
    for file in files {
        let data = fs_err::read(&file).expect("corpus file");
        eprintln!("{}", file.display());
        harness(&data);
    }
}

#[test]
fn load_plan_corpus() {
    replay("load_plan", oar_pipeline::fuzz::fuzz_load_plan);
}

#[test]
fn rules_expr_corpus() {
    replay("rules_expr", oar_pipeline::fuzz::fuzz_rules_expr);
}
