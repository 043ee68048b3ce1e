//! Fuzzes `oar_archive::archive::extract`: whatever the input, extraction must not panic, and
//! nothing may appear outside the target directory (no file next to it, no symlink inside it
//! that resolves outside).
//!
//! The first byte picks how the rest is presented: as is (zip, or anything), as a tar stream
//! compressed with zstd, or as a tar stream compressed with gzip, so that the tar parser is
//! reached without the fuzzer having to learn zstd or deflate.
#![no_main]

use std::fs;
use std::io::Write;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use oar_archive::archive::{Limits, extract};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = match mode % 3 {
        0 => rest.to_vec(),
        1 => match zstd::encode_all(rest, 1) {
            Ok(b) => b,
            Err(_) => return,
        },
        _ => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            if e.write_all(rest).is_err() {
                return;
            }
            match e.finish() {
                Ok(b) => b,
                Err(_) => return,
            }
        }
    };
    let outer = tempfile::tempdir().expect("tempdir");
    let archives = tempfile::tempdir().expect("tempdir");
    let archive = archives.path().join("archive");
    fs::write(&archive, &bytes).expect("write input");
    let target = outer.path().join("target");
    let limits = Limits {
        max_bytes: 32 << 20,
        max_entries: 10_000,
    };
    let _ = extract(&archive, &target, &limits);

    // Nothing next to the target.
    let names: Vec<_> = fs::read_dir(outer.path())
        .expect("read outer")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(
        names.is_empty() || names == [std::ffi::OsString::from("target")],
        "escaped: {names:?}"
    );
    let others: Vec<_> = fs::read_dir(archives.path())
        .expect("read archives")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        others,
        [std::ffi::OsString::from("archive")],
        "escaped into the archive dir"
    );

    // No symlink inside resolves outside.
    if target.exists() {
        let root = fs::canonicalize(&target).expect("canonical target");
        check_links(&root, &root);
    }
});

fn check_links(root: &Path, dir: &Path) {
    let Ok(read) = fs::read_dir(dir) else { return };
    for entry in read.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            if let Ok(resolved) = fs::canonicalize(&path) {
                assert!(
                    resolved.starts_with(root),
                    "{} resolves to {}",
                    path.display(),
                    resolved.display()
                );
            }
            let target = fs::read_link(&path).expect("readlink");
            assert!(target.is_relative(), "{} is absolute", path.display());
        } else if meta.is_dir() {
            check_links(root, &path);
        }
    }
}
