//! The fuzz harness of the archive extractor, shared by `fuzz/fuzz_targets/extract.rs` and
//! `tests/fuzz_corpus.rs` (which replays the seed corpus on stable). Not part of the API.

use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use crate::archive::{Limits, Stats, extract};

/// `extract`: the first byte of `data` says how the rest is presented: as is (a zip, or
/// anything: the format is detected), or as a tar stream the harness compresses with zstd
/// (`1`) or gzip (`2`), so that the fuzzer reaches the tar reader without having to learn
/// zstd or deflate. The archive is extracted into `root/target` beside a sentinel directory
/// `root/outside`; then, whatever the outcome, nothing but `target` may have changed in
/// `root`, and no symlink in `target` may be absolute or resolve outside it (through the other
/// symlinks, as the kernel would). On success the tree holds exactly the files, symlinks and
/// bytes [`Stats`] reports. Panics only on a bug.
pub fn fuzz_extract(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let compressed;
    let data = match mode % 3 {
        0 => rest,
        1 => {
            compressed = zstd::encode_all(rest, 1).expect("zstd");
            &compressed[..]
        }
        _ => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(rest).expect("gzip");
            compressed = e.finish().expect("gzip");
            &compressed[..]
        }
    };
    let root = tempfile::tempdir().expect("temporary directory");
    let root = fs::canonicalize(root.path()).expect("canonical root");
    let archive = root.join("archive");
    fs::write(&archive, data).expect("write archive");
    let outside = root.join("outside");
    fs::create_dir(&outside).expect("sentinel directory");
    fs::write(outside.join("keep"), b"keep").expect("sentinel file");
    let target = root.join("target");
    let limits = Limits {
        max_bytes: 4 << 20,
        max_entries: 2_000,
    };
    let result = extract(&archive, &target, &limits);

    let mut names: Vec<_> = fs::read_dir(&root)
        .expect("read root")
        .map(|e| e.expect("root entry").file_name())
        .collect();
    names.sort();
    let expected: Vec<_> = ["archive", "outside", "target"]
        .iter()
        .map(std::ffi::OsString::from)
        .filter(|n| n != "target" || target.exists())
        .collect();
    assert_eq!(names, expected, "something appeared beside the target");
    assert_eq!(
        fs::read(&archive).expect("archive"),
        data,
        "archive changed"
    );
    let sentinel: Vec<_> = fs::read_dir(&outside)
        .expect("read sentinel")
        .map(|e| e.expect("sentinel entry").file_name())
        .collect();
    assert_eq!(
        sentinel,
        ["keep"],
        "something was written outside the target"
    );
    assert_eq!(fs::read(outside.join("keep")).expect("keep"), b"keep");

    if !target.exists() {
        assert!(result.is_err(), "success without a target directory");
        return;
    }
    let mut found = Stats::default();
    walk(&target, &target, &mut found);
    if let Ok(stats) = result {
        assert_eq!(
            (found.files, found.symlinks, found.bytes),
            (stats.files, stats.symlinks, stats.bytes),
            "the tree differs from what extract reported"
        );
    }
}

/// Counts what is in `dir`, checking that every symlink stays inside `target`.
fn walk(target: &Path, dir: &Path, found: &mut Stats) {
    for entry in fs::read_dir(dir).expect("read extracted directory") {
        let path = entry.expect("extracted entry").path();
        let meta = fs::symlink_metadata(&path).expect("metadata");
        if meta.file_type().is_symlink() {
            found.symlinks += 1;
            let link = fs::read_link(&path).expect("readlink");
            assert!(link.is_relative(), "{} is absolute", path.display());
            let resolved = resolve(&path);
            assert!(
                resolved.as_ref().is_none_or(|p| p.starts_with(target)),
                "symlink {} resolves outside the target: {resolved:?}",
                path.display()
            );
        } else if meta.is_dir() {
            walk(target, &path, found);
        } else {
            assert!(meta.is_file(), "special file {}", path.display());
            found.files += 1;
            found.bytes += meta.len();
        }
    }
}

/// Where `path` leads, following symlinks in every component as the kernel does (a missing
/// component ends the walk lexically). `None` on a symlink loop.
fn resolve(path: &Path) -> Option<PathBuf> {
    let mut pending: Vec<PathBuf> = path
        .components()
        .rev()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut at = PathBuf::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match Path::new(&part).components().next() {
            Some(Component::RootDir) => at = PathBuf::from("/"),
            Some(Component::ParentDir) => {
                at.pop();
            }
            Some(Component::CurDir) | None => {}
            Some(Component::Normal(_) | Component::Prefix(_)) => {
                let next = at.join(&part);
                match fs::read_link(&next) {
                    Ok(link) => {
                        hops += 1;
                        if hops > 40 {
                            return None;
                        }
                        pending.extend(
                            link.components()
                                .rev()
                                .map(|c| PathBuf::from(c.as_os_str())),
                        );
                    }
                    Err(_) => at = next,
                }
            }
        }
    }
    Some(at)
}
