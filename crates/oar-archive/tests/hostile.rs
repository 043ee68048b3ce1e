//! A hostile corpus, built here with the zip and tar crates directly: each archive must be
//! refused with the exact error kind, naming the offending entry, and nothing may appear
//! outside the extraction directory.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use oar_archive::ArchiveError;
use oar_archive::archive::{Limits, extract};
use zip::write::SimpleFileOptions;

enum Z<'a> {
    File(&'a str, Vec<u8>),
    Dir(&'a str),
    Link(&'a str, &'a str),
    /// A file entry with raw unix mode bits (type included).
    Mode(&'a str, u32),
}

fn zip_bytes(entries: &[Z<'_>]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for e in entries {
        match e {
            Z::File(name, data) => {
                zip.start_file(*name, opts).unwrap();
                zip.write_all(data).unwrap();
            }
            Z::Dir(name) => zip.add_directory(*name, opts).unwrap(),
            Z::Link(name, target) => zip.add_symlink(*name, *target, opts).unwrap(),
            Z::Mode(name, mode) => {
                zip.start_file(*name, opts.external_attributes(mode << 16))
                    .unwrap();
            }
        }
    }
    zip.finish().unwrap().into_inner()
}

struct T<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    data: Vec<u8>,
    link: &'a [u8],
}

fn t<'a>(name: &'a [u8], kind: tar::EntryType) -> T<'a> {
    T {
        name,
        kind,
        data: Vec::new(),
        link: b"",
    }
}

fn file<'a>(name: &'a [u8], data: &[u8]) -> T<'a> {
    T {
        name,
        kind: tar::EntryType::Regular,
        data: data.to_vec(),
        link: b"",
    }
}

fn link<'a>(name: &'a [u8], target: &'a [u8]) -> T<'a> {
    T {
        name,
        kind: tar::EntryType::Symlink,
        data: Vec::new(),
        link: target,
    }
}

/// A plain tar, names written raw into the header (the tar crate's own setters refuse `..`
/// and absolute paths).
fn tar_bytes(entries: &[T<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..e.name.len()].copy_from_slice(e.name);
        h.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link);
        h.set_entry_type(e.kind);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_size(e.data.len() as u64);
        h.set_cksum();
        builder.append(&h, e.data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

fn zst(bytes: Vec<u8>) -> Vec<u8> {
    zstd::encode_all(bytes.as_slice(), 3).unwrap()
}

fn gz(bytes: Vec<u8>) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&bytes).unwrap();
    e.finish().unwrap()
}

/// A unique absolute path outside every temp dir we make.
fn evil_abs(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    std::env::temp_dir().join(format!("oar-evil-{tag}-{}-{nanos}", std::process::id()))
}

/// The extraction happens into `<outer>/target`; the archive lives elsewhere.
struct Case {
    outer: tempfile::TempDir,
    archives: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let c = Case {
            outer: tempfile::tempdir().unwrap(),
            archives: tempfile::tempdir().unwrap(),
        };
        fs::create_dir(c.target()).unwrap();
        c
    }

    fn target(&self) -> PathBuf {
        self.outer.path().join("target")
    }

    /// Extracts `bytes` and returns the error, after checking that the outer directory still
    /// holds only `target` (plus `allowed` names prepared by the test) and that none of
    /// `evil` exists.
    fn refuse(
        &self,
        bytes: &[u8],
        limits: Limits,
        allowed: &[&str],
        evil: &[&Path],
    ) -> ArchiveError {
        let archive = self.archives.path().join("archive");
        fs::write(&archive, bytes).unwrap();
        let before = listing(self.outer.path());
        let err = extract(&archive, &self.target(), &limits).expect_err("must be refused");
        let mut want: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        want.push("target".into());
        want.sort();
        assert_eq!(
            listing(self.outer.path()),
            want,
            "something appeared next to the target"
        );
        assert_eq!(before, want);
        for p in evil {
            assert!(
                fs::symlink_metadata(p).is_err(),
                "{} was written",
                p.display()
            );
        }
        err
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_names(err: &ArchiveError, entry: &str) {
    assert_eq!(err.entry(), Some(entry), "{err}");
    assert!(
        err.to_string().contains(&format!("{entry:?}")),
        "message {err} does not name {entry:?}"
    );
}

/// Total bytes of regular files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            total += bytes_under(&e.path());
        } else if m.is_file() {
            total += m.len();
        }
    }
    total
}

const L: Limits = Limits {
    max_bytes: 16 << 30,
    max_entries: 1_000_000,
};

#[test]
fn zip_slip_parent_components() {
    for name in ["../evil", "a/../../evil", "ok/../../../evil"] {
        let c = Case::new();
        let outer_evil = c.outer.path().join("evil");
        let err = c.refuse(
            &zip_bytes(&[
                Z::File("fine.txt", b"ok".to_vec()),
                Z::File(name, b"pwned".to_vec()),
            ]),
            L,
            &[],
            &[&outer_evil],
        );
        assert!(
            matches!(err, ArchiveError::PathTraversal { .. }),
            "{name}: {err}"
        );
        assert_names(&err, name);
        // Entries before the hostile one were extracted, inside.
        assert_eq!(fs::read(c.target().join("fine.txt")).unwrap(), b"ok");

        let c = Case::new();
        let err = c.refuse(
            &zst(tar_bytes(&[file(name.as_bytes(), b"pwned")])),
            L,
            &[],
            &[&outer_evil],
        );
        assert!(
            matches!(err, ArchiveError::PathTraversal { .. }),
            "{name}: {err}"
        );
        assert_names(&err, name);

        let c = Case::new();
        let err = c.refuse(
            &gz(tar_bytes(&[file(name.as_bytes(), b"pwned")])),
            L,
            &[],
            &[&outer_evil],
        );
        assert!(
            matches!(err, ArchiveError::PathTraversal { .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn absolute_paths() {
    let evil = evil_abs("abs");
    let name = evil.to_str().unwrap().to_string();
    let c = Case::new();
    let err = c.refuse(
        &zip_bytes(&[Z::File(&name, b"pwned".to_vec())]),
        L,
        &[],
        &[&evil],
    );
    assert!(matches!(err, ArchiveError::AbsolutePath { .. }), "{err}");
    assert_names(&err, &name);

    let c = Case::new();
    let err = c.refuse(
        &zst(tar_bytes(&[file(name.as_bytes(), b"pwned")])),
        L,
        &[],
        &[&evil],
    );
    assert!(matches!(err, ArchiveError::AbsolutePath { .. }), "{err}");
    assert_names(&err, &name);
}

#[test]
fn symlink_escapes_then_a_file_through_them() {
    let escaping = ["/", "..", "../..", "a/../../..", "/etc"];
    for target in escaping {
        let c = Case::new();
        let through = c.outer.path().join("evil");
        let err = c.refuse(
            &zip_bytes(&[
                Z::Link("link", target),
                Z::File("link/evil", b"pwned".to_vec()),
            ]),
            L,
            &[],
            &[&through],
        );
        assert!(
            matches!(err, ArchiveError::SymlinkEscape { .. }),
            "{target}: {err}"
        );
        assert_names(&err, "link");
        assert!(fs::symlink_metadata(c.target().join("link")).is_err());

        let c = Case::new();
        let err = c.refuse(
            &zst(tar_bytes(&[
                link(b"link", target.as_bytes()),
                file(b"link/evil", b"pwned"),
            ])),
            L,
            &[],
            &[&through],
        );
        assert!(
            matches!(err, ArchiveError::SymlinkEscape { .. }),
            "{target}: {err}"
        );
        assert_names(&err, "link");
    }
}

#[test]
fn symlink_chains_are_resolved_through_earlier_links() {
    // s1 -> . is inside; s2 -> s1/.. resolves through s1 to the target's parent.
    let c = Case::new();
    let err = c.refuse(
        &zip_bytes(&[Z::Link("s1", "."), Z::Link("s2", "s1/..")]),
        L,
        &[],
        &[],
    );
    assert!(matches!(err, ArchiveError::SymlinkEscape { .. }), "{err}");
    assert_names(&err, "s2");

    // d/l1 -> .. (the target itself), then l2 -> d/l1/.. escapes; a three-link chain too.
    let c = Case::new();
    let err = c.refuse(
        &zst(tar_bytes(&[
            t(b"d/", tar::EntryType::Directory),
            link(b"d/l1", b".."),
            link(b"c1", b"d/l1"),
            link(b"c2", b"c1/d/l1"),
            link(b"l2", b"c2/.."),
        ])),
        L,
        &[],
        &[],
    );
    assert!(matches!(err, ArchiveError::SymlinkEscape { .. }), "{err}");
    assert_names(&err, "l2");
    // The inside links before it were created.
    assert_eq!(
        fs::read_link(c.target().join("c1")).unwrap(),
        Path::new("d/l1")
    );

    // A `..` after a component that does not exist yet is refused: a later entry could make
    // that component a symlink.
    let c = Case::new();
    let err = c.refuse(&zip_bytes(&[Z::Link("l", "later/..")]), L, &[], &[]);
    assert!(matches!(err, ArchiveError::SymlinkEscape { .. }), "{err}");
    assert_names(&err, "l");

    // A directory that an earlier link resolves through cannot be swapped for a symlink: in
    // one archive that is a duplicate entry, over an existing directory it is refused.
    let c = Case::new();
    let err = c.refuse(
        &zip_bytes(&[Z::Dir("d/"), Z::Link("s", "d/.."), Z::Link("d", ".")]),
        L,
        &[],
        &[],
    );
    assert!(matches!(err, ArchiveError::DuplicateEntry { .. }), "{err}");
    let c = Case::new();
    fs::create_dir(c.target().join("d")).unwrap();
    let err = c.refuse(
        &zip_bytes(&[Z::Link("s", "d/.."), Z::Link("d", ".")]),
        L,
        &[],
        &[],
    );
    assert!(
        matches!(err, ArchiveError::DirectoryInTheWay { .. }),
        "{err}"
    );
    assert_names(&err, "d");
    assert!(c.target().join("d").is_dir());

    // Link loops are refused rather than followed forever.
    let c = Case::new();
    fs::create_dir(c.target().join("sub")).unwrap();
    std::os::unix::fs::symlink("loop2", c.target().join("loop1")).unwrap();
    std::os::unix::fs::symlink("loop1", c.target().join("loop2")).unwrap();
    let err = c.refuse(&zip_bytes(&[Z::Link("l", "loop1/..")]), L, &[], &[]);
    assert!(matches!(err, ArchiveError::SymlinkEscape { .. }), "{err}");
}

#[test]
fn entries_through_symlinks_are_refused() {
    // An in-archive link that stays inside still cannot be a parent.
    let c = Case::new();
    let err = c.refuse(
        &zip_bytes(&[
            Z::Dir("sub/"),
            Z::Link("inside", "sub"),
            Z::File("inside/x", b"x".to_vec()),
        ]),
        L,
        &[],
        &[],
    );
    assert!(
        matches!(err, ArchiveError::ThroughSymlink { ref symlink, .. } if symlink == "inside"),
        "{err}"
    );
    assert_names(&err, "inside/x");
    assert!(!c.target().join("sub/x").exists());

    // A symlink already in the target, pointing outside, is never followed.
    let c = Case::new();
    fs::create_dir(c.outer.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(c.outer.path().join("elsewhere"), c.target().join("out")).unwrap();
    let escaped = c.outer.path().join("elsewhere/x");
    let err = c.refuse(
        &zst(tar_bytes(&[file(b"out/x", b"pwned")])),
        L,
        &["elsewhere"],
        &[&escaped],
    );
    assert!(matches!(err, ArchiveError::ThroughSymlink { .. }), "{err}");
    assert_names(&err, "out/x");
    let err = c.refuse(
        &zst(tar_bytes(&[t(b"out/newdir/", tar::EntryType::Directory)])),
        L,
        &["elsewhere"],
        &[],
    );
    assert!(matches!(err, ArchiveError::ThroughSymlink { .. }), "{err}");
    assert!(listing(&c.outer.path().join("elsewhere")).is_empty());

    // Replacing a symlink that an earlier link resolves through is refused.
    let c = Case::new();
    fs::create_dir(c.target().join("sub")).unwrap();
    std::os::unix::fs::symlink("sub", c.target().join("t")).unwrap();
    let err = c.refuse(
        &zst(tar_bytes(&[link(b"s", b"t/.."), link(b"t", b".")])),
        L,
        &[],
        &[],
    );
    assert!(matches!(err, ArchiveError::SymlinkConflict { .. }), "{err}");
    assert_names(&err, "t");
    assert_eq!(
        fs::read_link(c.target().join("t")).unwrap(),
        Path::new("sub")
    );
}

#[test]
fn files_written_in_the_background_still_decide_deterministically() {
    // A file of the archive is never a parent, even before a writer thread has created it.
    for _ in 0..20 {
        let c = Case::new();
        let err = c.refuse(
            &zst(tar_bytes(&[file(b"a", b"1"), file(b"a/b", b"2")])),
            L,
            &[],
            &[],
        );
        assert!(
            matches!(err, ArchiveError::NotADirectory { ref parent, .. } if parent == "a"),
            "{err}"
        );
        assert_names(&err, "a/b");
        assert_eq!(fs::read(c.target().join("a")).unwrap(), b"1");
    }
    // A symlink resolving through a path that a file entry of the archive replaces is judged
    // against the file, whether or not it has been written yet.
    for _ in 0..20 {
        let c = Case::new();
        fs::create_dir(c.target().join("sub")).unwrap();
        std::os::unix::fs::symlink("sub", c.target().join("t")).unwrap();
        let err = c.refuse(
            &zst(tar_bytes(&[file(b"t", b"now a file"), link(b"s", b"t/..")])),
            L,
            &[],
            &[],
        );
        assert!(matches!(err, ArchiveError::SymlinkEscape { .. }), "{err}");
        assert_names(&err, "s");
        assert_eq!(fs::read(c.target().join("t")).unwrap(), b"now a file");
    }
}

#[test]
fn zip_bomb_is_cut_at_the_byte_limit() {
    let limit = 10 << 20;
    let limits = Limits {
        max_bytes: limit,
        max_entries: 100,
    };
    let bomb = vec![0u8; 64 << 20];
    let bytes = zip_bytes(&[
        Z::File("small", vec![1; 1000]),
        Z::File("bomb", bomb.clone()),
    ]);
    assert!(
        bytes.len() < 1 << 20,
        "the bomb compresses well ({} bytes)",
        bytes.len()
    );
    let c = Case::new();
    let err = c.refuse(&bytes, limits, &[], &[]);
    assert!(
        matches!(
            err,
            ArchiveError::TooLarge {
                limit: 10485760,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, "bomb");
    assert!(bytes_under(&c.target()) <= limit);

    let c = Case::new();
    let tar = zst(tar_bytes(&[T {
        name: b"bomb",
        kind: tar::EntryType::Regular,
        data: bomb,
        link: b"",
    }]));
    assert!(tar.len() < 1 << 20);
    let err = c.refuse(&tar, limits, &[], &[]);
    assert!(matches!(err, ArchiveError::TooLarge { .. }), "{err}");
    assert_names(&err, "bomb");
    assert!(bytes_under(&c.target()) <= limit);

    // Many small files adding up over the limit.
    let c = Case::new();
    let many: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("f{i:02}"), vec![7u8; 1 << 20]))
        .collect();
    let entries: Vec<Z<'_>> = many.iter().map(|(n, d)| Z::File(n, d.clone())).collect();
    let err = c.refuse(&zip_bytes(&entries), limits, &[], &[]);
    assert!(matches!(err, ArchiveError::TooLarge { .. }), "{err}");
    assert_names(&err, "f10");
}

#[test]
fn too_many_entries() {
    let names: Vec<String> = (0..50).map(|i| format!("d/f{i:02}")).collect();
    let limits = Limits {
        max_bytes: 1 << 30,
        max_entries: 10,
    };
    let c = Case::new();
    let entries: Vec<Z<'_>> = names.iter().map(|n| Z::File(n, b"x".to_vec())).collect();
    let err = c.refuse(&zip_bytes(&entries), limits, &[], &[]);
    assert!(
        matches!(err, ArchiveError::TooManyEntries { limit: 10, .. }),
        "{err}"
    );
    assert_names(&err, "d/f10");
    assert_eq!(listing(&c.target().join("d")).len(), 10);

    let c = Case::new();
    let entries: Vec<T<'_>> = names.iter().map(|n| file(n.as_bytes(), b"x")).collect();
    let err = c.refuse(&zst(tar_bytes(&entries)), limits, &[], &[]);
    assert!(matches!(err, ArchiveError::TooManyEntries { .. }), "{err}");
    assert_names(&err, "d/f10");
}

#[test]
fn duplicate_entries() {
    // The zip crate refuses to write duplicates: write two names and make them equal.
    let mut bytes = zip_bytes(&[
        Z::File("dup1", b"first".to_vec()),
        Z::File("dup2", b"second".to_vec()),
    ]);
    let mut i = 0;
    while let Some(pos) = bytes[i..].windows(4).position(|w| w == b"dup2") {
        bytes[i + pos + 3] = b'1';
        i += pos + 4;
    }
    let c = Case::new();
    let err = c.refuse(&bytes, L, &[], &[]);
    assert!(matches!(err, ArchiveError::DuplicateEntry { .. }), "{err}");
    assert_names(&err, "dup1");

    // The same path spelled differently.
    let c = Case::new();
    let err = c.refuse(
        &zip_bytes(&[
            Z::File("a/x", b"1".to_vec()),
            Z::File("./a//x", b"2".to_vec()),
        ]),
        L,
        &[],
        &[],
    );
    assert!(matches!(err, ArchiveError::DuplicateEntry { .. }), "{err}");
    assert_names(&err, "./a//x");
    assert_eq!(fs::read(c.target().join("a/x")).unwrap(), b"1");

    let c = Case::new();
    let err = c.refuse(
        &zst(tar_bytes(&[file(b"a", b"1"), link(b"a", b"b")])),
        L,
        &[],
        &[],
    );
    assert!(matches!(err, ArchiveError::DuplicateEntry { .. }), "{err}");
    assert_names(&err, "a");
    assert_eq!(fs::read(c.target().join("a")).unwrap(), b"1");
}

#[test]
fn control_characters_in_names() {
    for name in [
        "evil\u{1b}[31m",
        "new\nline",
        "tab\there",
        "del\u{7f}",
        "c1\u{85}",
    ] {
        let c = Case::new();
        let err = c.refuse(&zip_bytes(&[Z::File(name, b"x".to_vec())]), L, &[], &[]);
        assert!(
            matches!(err, ArchiveError::InvalidName { .. }),
            "{name:?}: {err}"
        );
        assert_names(&err, name);

        let c = Case::new();
        let err = c.refuse(&zst(tar_bytes(&[file(name.as_bytes(), b"x")])), L, &[], &[]);
        assert!(
            matches!(err, ArchiveError::InvalidName { .. }),
            "{name:?}: {err}"
        );
        assert_names(&err, name);
        assert!(listing(&c.target()).is_empty());
    }
}

#[test]
fn devices_fifos_and_hard_links_in_tar() {
    let cases: &[(&[u8], tar::EntryType, &str)] = &[
        (b"dev/null", tar::EntryType::Char, "character device"),
        (b"dev/sda", tar::EntryType::Block, "block device"),
        (b"pipe", tar::EntryType::Fifo, "fifo"),
    ];
    for (name, kind, what) in cases {
        let c = Case::new();
        let err = c.refuse(&zst(tar_bytes(&[t(name, *kind)])), L, &[], &[]);
        assert!(
            matches!(err, ArchiveError::SpecialFile { kind, .. } if kind == *what),
            "{err}"
        );
        assert_names(&err, std::str::from_utf8(name).unwrap());
    }
    // A hard link to a file outside, then a write through it, must not happen.
    let c = Case::new();
    let outside = c.outer.path().join("victim");
    fs::write(&outside, b"victim").unwrap();
    let victim = outside.to_str().unwrap().as_bytes().to_vec();
    let entries = [
        T {
            name: b"hl",
            kind: tar::EntryType::Link,
            data: Vec::new(),
            link: &victim,
        },
        file(b"hl", b"pwned"),
    ];
    let err = c.refuse(&zst(tar_bytes(&entries)), L, &["victim"], &[]);
    assert!(
        matches!(
            err,
            ArchiveError::SpecialFile {
                kind: "hard link",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(fs::read(&outside).unwrap(), b"victim");
}

#[test]
fn special_files_in_zip() {
    for (mode, what) in [
        (0o020644u32, "character device"),
        (0o010644, "fifo"),
        (0o140644, "socket"),
    ] {
        let c = Case::new();
        let err = c.refuse(&zip_bytes(&[Z::Mode("special", mode)]), L, &[], &[]);
        assert!(
            matches!(err, ArchiveError::SpecialFile { kind, .. } if kind == what),
            "{err}"
        );
        assert_names(&err, "special");
    }
}

#[test]
fn garbage_is_a_corrupt_archive_not_a_panic() {
    let c = Case::new();
    let mut bytes = zip_bytes(&[Z::File("a", vec![5; 5000])]);
    let len = bytes.len();
    bytes.truncate(len / 2);
    let err = c.refuse(&bytes, L, &[], &[]);
    assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err}");

    let c = Case::new();
    let mut bytes = zst(tar_bytes(&[file(b"a", &[5; 5000])]));
    bytes.truncate(bytes.len() - 5);
    let err = c.refuse(&bytes, L, &[], &[]);
    assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err}");
}
