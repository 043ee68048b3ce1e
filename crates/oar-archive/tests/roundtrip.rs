//! Round trips through every format: contents, modes, symlinks, empty directories and mtimes
//! survive `create` + `extract`; the zip and tar.zst files interoperate with the reference
//! tools (`unzip`, `zip`, `tar`, `zstd`) when they are installed.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use oar_archive::ArchiveError;
use oar_archive::archive::{CreateOptions, Format, Limits, Stats, create, detect, extract};
use oar_archive::select::{PathSpec, Selection, select};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    File {
        mode: u32,
        mtime: i64,
        data: Vec<u8>,
    },
    Dir {
        mode: u32,
        mtime: i64,
    },
    Link {
        target: PathBuf,
        mtime: i64,
    },
}

/// Everything under `root` (not `root` itself), without following symlinks.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        for item in fs::read_dir(root.join(&dir)).unwrap() {
            let item = item.unwrap();
            let rel = dir.join(item.file_name());
            let meta = fs::symlink_metadata(root.join(&rel)).unwrap();
            let node = if meta.file_type().is_symlink() {
                Node::Link {
                    target: fs::read_link(root.join(&rel)).unwrap(),
                    mtime: meta.mtime(),
                }
            } else if meta.is_dir() {
                stack.push(rel.clone());
                Node::Dir {
                    mode: meta.mode() & 0o7777,
                    mtime: meta.mtime(),
                }
            } else {
                Node::File {
                    mode: meta.mode() & 0o7777,
                    mtime: meta.mtime(),
                    data: fs::read(root.join(&rel)).unwrap(),
                }
            };
            out.insert(rel, node);
        }
    }
    out
}

fn set_mtime(path: &Path, secs: i64) {
    let ts = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A tree with every kind of entry: modes, an empty directory, a big file (streamed rather
/// than read ahead), symlinks to a file, to a directory and a dangling one, distinct mtimes.
fn rich_tree(root: &Path) {
    let files: &[(&str, u32, usize)] = &[
        ("bin/tool", 0o755, 300),
        ("bin/script.sh", 0o700, 40),
        ("src/main.rs", 0o644, 5000),
        ("src/nested/deep/mod.rs", 0o644, 1),
        ("private/key", 0o600, 64),
        ("readonly.txt", 0o444, 10),
        ("empty-file", 0o644, 0),
        ("big/blob.bin", 0o640, 3 << 20),
        ("names with spaces/ünïcödé ☃.txt", 0o644, 12),
    ];
    for (i, (rel, mode, size)) in files.iter().enumerate() {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let data: Vec<u8> = (0..*size)
            .map(|j| b"the quick brown fox jumps over the lazy dog\n"[(j * 7 + i) % 44])
            .collect();
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
        set_mtime(&path, 1_600_000_000 + i as i64 * 1111);
    }
    // Names and link targets over tar's 100-byte header fields.
    let long_dir = format!("{}/{}", "l".repeat(80), "m".repeat(90));
    fs::create_dir_all(root.join(&long_dir)).unwrap();
    fs::write(
        root.join(format!("{long_dir}/{}.txt", "n".repeat(120))),
        b"long",
    )
    .unwrap();
    set_mtime(
        &root.join(format!("{long_dir}/{}.txt", "n".repeat(120))),
        1_650_000_000,
    );
    symlink(
        format!("{long_dir}/{}.txt", "n".repeat(120)),
        root.join("long-link"),
    )
    .unwrap();
    set_mtime(&root.join("long-link"), 1_650_000_001);
    set_mtime(&root.join(&long_dir), 1_650_000_002);
    set_mtime(&root.join("l".repeat(80)), 1_650_000_003);
    fs::create_dir_all(root.join("empty/dir")).unwrap();
    fs::create_dir_all(root.join("restricted")).unwrap();
    fs::write(root.join("restricted/inner"), b"x").unwrap();
    symlink("../src/main.rs", root.join("bin/main-link")).unwrap();
    symlink("src/nested", root.join("nested-link")).unwrap();
    symlink("does-not-exist-yet", root.join("dangling")).unwrap();
    for (i, l) in ["bin/main-link", "nested-link", "dangling"]
        .iter()
        .enumerate()
    {
        set_mtime(&root.join(l), 1_500_000_000 + i as i64);
    }
    // Directories last, deepest first, so creating children does not move their mtimes.
    let dirs = [
        "src/nested/deep",
        "src/nested",
        "src",
        "bin",
        "big",
        "private",
        "names with spaces",
        "empty/dir",
        "empty",
        "restricted",
    ];
    for (i, d) in dirs.iter().enumerate() {
        set_mtime(&root.join(d), 1_400_000_000 + i as i64 * 77);
    }
    fs::set_permissions(root.join("restricted"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(root.join("empty/dir"), fs::Permissions::from_mode(0o700)).unwrap();
}

fn select_all(root: &Path) -> Selection {
    let paths = vec![".".to_string()];
    let sel = select(
        root,
        &PathSpec {
            paths: &paths,
            exclude: &[],
            untracked: false,
        },
    )
    .unwrap();
    assert!(sel.warnings.is_empty(), "{:?}", sel.warnings);
    sel
}

fn opts(format: Format) -> CreateOptions {
    CreateOptions {
        format,
        ..CreateOptions::default()
    }
}

fn round_trip(src: &Path, format: Format) -> (BTreeMap<PathBuf, Node>, Stats, Stats) {
    let work = tempfile::tempdir().unwrap();
    let sel = select_all(src);
    let out = work.path().join("out/archive");
    let created = create(src, &sel, &out, &opts(format)).unwrap();
    assert_eq!(detect(&out).unwrap(), format);
    let target = work.path().join("extracted");
    let extracted = extract(&out, &target, &Limits::default()).unwrap();
    (snapshot(&target), created, extracted)
}

#[test]
fn zip_round_trip_keeps_contents_modes_symlinks_empty_dirs_and_mtimes() {
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path());
    let (got, created, extracted) = round_trip(src.path(), Format::Zip);
    assert_eq!(got, snapshot(src.path()));
    assert_eq!(created, extracted);
    assert_eq!(created.files, 11);
    assert_eq!(created.symlinks, 4);
    assert_eq!(
        created.bytes,
        300 + 40 + 5000 + 1 + 64 + 10 + (3 << 20) + 12 + 1 + 4
    );
}

#[test]
fn tar_zst_round_trip_keeps_contents_modes_symlinks_empty_dirs_and_mtimes() {
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path());
    for threads in [0, 1, 4] {
        let work = tempfile::tempdir().unwrap();
        let sel = select_all(src.path());
        let out = work.path().join("cache.tar.zst");
        let o = CreateOptions {
            format: Format::TarZst,
            zstd_level: 3,
            threads,
        };
        let created = create(src.path(), &sel, &out, &o).unwrap();
        let extracted = extract(&out, &work.path().join("x"), &Limits::default()).unwrap();
        assert_eq!(
            snapshot(&work.path().join("x")),
            snapshot(src.path()),
            "threads {threads}"
        );
        assert_eq!(created, extracted);
    }
}

#[test]
fn extracting_over_an_existing_tree_overwrites_files_and_replaces_symlinks() {
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path());
    for format in [Format::Zip, Format::TarZst] {
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("a");
        create(src.path(), &select_all(src.path()), &out, &opts(format)).unwrap();
        let target = work.path().join("t");
        // A checkout with stale content, a symlink where a file goes, a file where a symlink
        // goes, a hard link to a file outside, and unrelated files that must stay.
        fs::create_dir_all(target.join("src")).unwrap();
        fs::write(target.join("src/main.rs"), b"stale").unwrap();
        fs::write(work.path().join("outside"), b"outside").unwrap();
        symlink(work.path().join("outside"), target.join("readonly.txt")).unwrap();
        fs::hard_link(work.path().join("outside"), target.join("empty-file")).unwrap();
        fs::write(target.join("dangling"), b"a file").unwrap();
        fs::write(target.join("unrelated"), b"keep me").unwrap();
        extract(&out, &target, &Limits::default()).unwrap();
        let mut want = snapshot(src.path());
        let unrelated = fs::read(target.join("unrelated")).unwrap();
        assert_eq!(unrelated, b"keep me");
        let mut got = snapshot(&target);
        got.remove(Path::new("unrelated"));
        // `src` existed: its mode is the archive's, its mtime too (applied at the end).
        want.retain(|k, _| k != Path::new("unrelated"));
        assert_eq!(got, want, "{format:?}");
        assert_eq!(
            fs::read(work.path().join("outside")).unwrap(),
            b"outside",
            "{format:?}"
        );
    }
}

#[test]
fn zip_is_read_by_unzip_and_zip_output_is_extracted() {
    if Command::new("unzip").arg("-v").output().is_err()
        || Command::new("zip").arg("-v").output().is_err()
    {
        eprintln!("zip/unzip not installed: skipped");
        return;
    }
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path());
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("a.zip");
    create(
        src.path(),
        &select_all(src.path()),
        &out,
        &opts(Format::Zip),
    )
    .unwrap();
    let by_unzip = work.path().join("by-unzip");
    fs::create_dir_all(&by_unzip).unwrap();
    let st = Command::new("unzip")
        .arg("-qX")
        .arg(&out)
        .arg("-d")
        .arg(&by_unzip)
        .status()
        .unwrap();
    assert!(st.success());
    // unzip restores contents, modes, symlinks and file mtimes (directory mtimes it does not
    // always restore, so compare those without them).
    let strip = |m: BTreeMap<PathBuf, Node>| -> BTreeMap<PathBuf, Node> {
        m.into_iter()
            .map(|(k, v)| match v {
                Node::Dir { mode, .. } => (k, Node::Dir { mode, mtime: 0 }),
                Node::Link { target, .. } => (k, Node::Link { target, mtime: 0 }),
                other => (k, other),
            })
            .collect()
    };
    assert_eq!(strip(snapshot(&by_unzip)), strip(snapshot(src.path())));

    // And Info-ZIP's archive (symlinks stored with -y) extracts with Oar.
    let theirs = work.path().join("theirs.zip");
    let st = Command::new("zip")
        .current_dir(src.path())
        .args(["-qry"])
        .arg(&theirs)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let target = work.path().join("by-oar");
    extract(&theirs, &target, &Limits::default()).unwrap();
    assert_eq!(strip(snapshot(&target)), strip(snapshot(src.path())));
}

#[test]
fn tar_zst_is_read_by_gnu_tar_and_gnu_tar_output_is_extracted() {
    let has = |tool: &str| Command::new(tool).arg("--version").output().is_ok();
    if !has("tar") || !has("zstd") {
        eprintln!("tar/zstd not installed: skipped");
        return;
    }
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path());
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("a.tar.zst");
    create(
        src.path(),
        &select_all(src.path()),
        &out,
        &opts(Format::TarZst),
    )
    .unwrap();
    let by_tar = work.path().join("by-tar");
    fs::create_dir_all(&by_tar).unwrap();
    let st = Command::new("tar")
        .arg("--zstd")
        .arg("-xpf")
        .arg(&out)
        .arg("-C")
        .arg(&by_tar)
        .status()
        .unwrap();
    assert!(st.success());
    let no_link_times = |m: BTreeMap<PathBuf, Node>| -> BTreeMap<PathBuf, Node> {
        m.into_iter()
            .map(|(k, v)| match v {
                Node::Link { target, .. } => (k, Node::Link { target, mtime: 0 }),
                other => (k, other),
            })
            .collect()
    };
    assert_eq!(
        no_link_times(snapshot(&by_tar)),
        no_link_times(snapshot(src.path()))
    );

    let theirs = work.path().join("theirs.tar.zst");
    let st = Command::new("tar")
        .current_dir(src.path())
        .arg("--zstd")
        .arg("-cf")
        .arg(&theirs)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let target = work.path().join("by-oar");
    extract(&theirs, &target, &Limits::default()).unwrap();
    assert_eq!(snapshot(&target), snapshot(src.path()));

    // tar.gz too.
    let gz = work.path().join("theirs.tar.gz");
    let st = Command::new("tar")
        .current_dir(src.path())
        .arg("-czf")
        .arg(&gz)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(detect(&gz).unwrap(), Format::Gzip);
    let target = work.path().join("by-oar-gz");
    extract(&gz, &target, &Limits::default()).unwrap();
    assert_eq!(snapshot(&target), snapshot(src.path()));
}

fn files_selection(root: &Path, paths: &[&str]) -> Selection {
    let paths: Vec<String> = paths.iter().map(|s| s.to_string()).collect();
    select(
        root,
        &PathSpec {
            paths: &paths,
            exclude: &[],
            untracked: false,
        },
    )
    .unwrap()
}

#[test]
fn gzip_concatenates_one_member_per_file_naming_it() {
    let src = tempfile::tempdir().unwrap();
    fs::create_dir_all(src.path().join("reports")).unwrap();
    fs::write(src.path().join("reports/a.xml"), b"<a/>\n").unwrap();
    fs::write(src.path().join("reports/b.xml"), b"<b/>\n").unwrap();
    set_mtime(&src.path().join("reports/a.xml"), 1_700_000_000);
    let sel = files_selection(src.path(), &["reports"]);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("junit.gz");
    let stats = create(src.path(), &sel, &out, &opts(Format::Gzip)).unwrap();
    assert_eq!((stats.files, stats.bytes), (2, 10));
    assert_eq!(detect(&out).unwrap(), Format::Gzip);

    let bytes = fs::read(&out).unwrap();
    let mut all = String::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_string(&mut all)
        .unwrap();
    assert_eq!(all, "<a/>\n<b/>\n");
    let mut first = flate2::read::GzDecoder::new(&bytes[..]);
    let mut one = String::new();
    first.read_to_string(&mut one).unwrap();
    assert_eq!(one, "<a/>\n");
    let header = first.header().unwrap();
    assert_eq!(header.filename(), Some(&b"a.xml"[..]));
    assert_eq!(header.comment(), Some(&b"reports/a.xml"[..]));
    assert_eq!(header.mtime(), 1_700_000_000);

    let empty = files_selection(src.path(), &["nothing"]);
    let err = create(
        src.path(),
        &empty,
        &work.path().join("x.gz"),
        &opts(Format::Gzip),
    )
    .unwrap_err();
    assert!(
        matches!(err, ArchiveError::WrongFileCount { format: "gzip", .. }),
        "{err}"
    );
}

#[test]
fn raw_copies_exactly_one_file() {
    let src = tempfile::tempdir().unwrap();
    fs::create_dir_all(src.path().join("r")).unwrap();
    fs::write(src.path().join("r/report.json"), b"{\"ok\":true}").unwrap();
    fs::write(src.path().join("r/other.json"), b"{}").unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("report.json");
    let sel = files_selection(src.path(), &["r/report.json"]);
    let stats = create(src.path(), &sel, &out, &opts(Format::Raw)).unwrap();
    assert_eq!(fs::read(&out).unwrap(), b"{\"ok\":true}");
    assert_eq!((stats.files, stats.bytes), (1, 11));

    let two = files_selection(src.path(), &["r"]);
    let bad = work.path().join("bad");
    let err = create(src.path(), &two, &bad, &opts(Format::Raw)).unwrap_err();
    assert!(
        matches!(err, ArchiveError::WrongFileCount { format: "raw", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("2 files"), "{err}");
    // Nothing is left behind by a failed create: neither the output nor a temporary file.
    assert!(!bad.exists());
    let left: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("report.json")]);

    let none = files_selection(src.path(), &["missing"]);
    let err = create(src.path(), &none, &bad, &opts(Format::Raw)).unwrap_err();
    assert!(matches!(err, ArchiveError::WrongFileCount { .. }), "{err}");
}

#[test]
fn create_replaces_the_output_atomically() {
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path());
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("cache.zip");
    fs::write(&out, b"old").unwrap();
    create(
        src.path(),
        &select_all(src.path()),
        &out,
        &opts(Format::Zip),
    )
    .unwrap();
    assert_eq!(detect(&out).unwrap(), Format::Zip);
    let names: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("cache.zip")]);
}

#[test]
fn vanished_files_are_skipped() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("a"), b"a").unwrap();
    fs::write(src.path().join("b"), b"b").unwrap();
    let sel = select_all(src.path());
    fs::remove_file(src.path().join("b")).unwrap();
    let work = tempfile::tempdir().unwrap();
    for format in [Format::Zip, Format::TarZst] {
        let out = work.path().join(format!("{format:?}"));
        let stats = create(src.path(), &sel, &out, &opts(format)).unwrap();
        assert_eq!(stats.files, 1);
        let t = work.path().join(format!("{format:?}-x"));
        extract(&out, &t, &Limits::default()).unwrap();
        assert_eq!(fs::read(t.join("a")).unwrap(), b"a");
        assert!(!t.join("b").exists());
    }
}

#[test]
fn non_utf8_names_round_trip_in_tar_and_are_refused_by_zip() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let src = tempfile::tempdir().unwrap();
    let name = OsStr::from_bytes(b"latin1-\xe9t\xe9.txt");
    fs::write(src.path().join(name), b"bytes").unwrap();
    let sel = select_all(src.path());
    assert_eq!(sel.entries.len(), 1);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("c.tar.zst");
    create(src.path(), &sel, &out, &opts(Format::TarZst)).unwrap();
    extract(&out, &work.path().join("x"), &Limits::default()).unwrap();
    assert_eq!(
        fs::read(work.path().join("x").join(name)).unwrap(),
        b"bytes"
    );

    let err = create(
        src.path(),
        &sel,
        &work.path().join("a.zip"),
        &opts(Format::Zip),
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Unstorable { .. }), "{err}");
    assert!(!work.path().join("a.zip").exists());
}

#[test]
fn detect_refuses_unknown_formats() {
    let work = tempfile::tempdir().unwrap();
    let p = work.path().join("x");
    fs::write(&p, b"hello").unwrap();
    assert!(matches!(
        detect(&p),
        Err(ArchiveError::UnknownFormat { .. })
    ));
    let err = extract(&p, &work.path().join("t"), &Limits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::UnknownFormat { .. }));
    fs::write(&p, b"").unwrap();
    assert!(matches!(
        detect(&p),
        Err(ArchiveError::UnknownFormat { .. })
    ));
}

/// One random entry: path components, content (`None` for a directory), mode, mtime.
type Spec = (Vec<String>, Option<Vec<u8>>, u32, i64);

/// A small random tree.
fn arb_tree() -> impl Strategy<Value = Vec<Spec>> {
    let comp =
        prop::sample::select(vec!["a", "b", "c", "d.txt", "é", "x y"]).prop_map(String::from);
    let path = prop::collection::vec(comp, 1..4);
    let content = prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..300));
    let mode = prop::sample::select(vec![0o644u32, 0o755, 0o600, 0o700, 0o444]);
    let mtime = 0i64..2_000_000_000;
    prop::collection::vec((path, content, mode, mtime), 1..12)
}

fn build(root: &Path, spec: &[Spec]) {
    let mut dirs = Vec::new();
    for (comps, content, mode, mtime) in spec {
        let rel: PathBuf = comps.iter().collect();
        let path = root.join(&rel);
        // Skip entries that collide with what is already there.
        if fs::symlink_metadata(&path).is_ok()
            || rel.ancestors().skip(1).any(|a| root.join(a).is_file())
        {
            continue;
        }
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        match content {
            Some(data) => {
                fs::write(&path, data).unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
                set_mtime(&path, *mtime);
            }
            None => {
                fs::create_dir(&path).unwrap();
                dirs.push((path, *mode | 0o700, *mtime));
            }
        }
    }
    dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
    for (path, mode, mtime) in dirs {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&path, mtime);
    }
    // Implicit parent directories: give them a fixed mtime, after all children exist.
    let mut all: Vec<PathBuf> = Vec::new();
    for (comps, _, _, _) in spec {
        let rel: PathBuf = comps.iter().collect();
        for a in rel.ancestors().skip(1) {
            if !a.as_os_str().is_empty() {
                all.push(a.to_path_buf());
            }
        }
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for a in all {
        let p = root.join(&a);
        if p.is_dir()
            && !spec
                .iter()
                .any(|(c, content, _, _)| content.is_none() && c.iter().collect::<PathBuf>() == a)
        {
            set_mtime(&p, 1_234_567_890);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip(spec in arb_tree()) {
        let src = tempfile::tempdir().unwrap();
        build(src.path(), &spec);
        let want = snapshot(src.path());
        for format in [Format::Zip, Format::TarZst] {
            let (got, created, extracted) = round_trip(src.path(), format);
            prop_assert_eq!(&got, &want, "{:?}", format);
            prop_assert_eq!(created, extracted);
        }
    }
}
