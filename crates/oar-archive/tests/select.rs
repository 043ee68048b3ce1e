//! Path selection against GitLab Runner's semantics (`commands/helpers/file_archiver.go` and its
//! tests): doublestar globs, directory matches, excludes, outside-root refusals, warnings and
//! `untracked` in a real git repository.

use std::fs;
use std::path::Path;
use std::process::Command;

use oar_archive::select::{EntryKind, PathSpec, Selection, select};

/// Creates files (and directories for names ending in `/`) under `root`.
fn tree(root: &Path, paths: &[&str]) {
    for p in paths {
        let full = root.join(p);
        if p.ends_with('/') {
            fs::create_dir_all(&full).unwrap();
        } else {
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(&full, format!("content of {p}\n")).unwrap();
        }
    }
}

const TREE: &[&str] = &[
    "a.txt",
    "b.txt",
    "c.md",
    ".hidden.txt",
    "foo/file.txt",
    "foo/file.bin",
    "foo/bar/file.txt",
    "foo/bar/baz/file.txt",
    "foo/bar/baz/file.extra.dots.txt",
    "foo/bar/baz/x.md",
    "docs/readme.md",
    "docs/empty/",
    "target/debug/app",
    "target/debug/deps/lib.rlib",
    "target/release/app",
];

fn run(root: &Path, paths: &[&str], exclude: &[&str], untracked: bool) -> Selection {
    let paths: Vec<String> = paths.iter().map(|s| s.to_string()).collect();
    let exclude: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
    select(
        root,
        &PathSpec {
            paths: &paths,
            exclude: &exclude,
            untracked,
        },
    )
    .unwrap()
}

fn names(sel: &Selection) -> Vec<String> {
    sel.entries
        .iter()
        .map(|e| e.rel.to_string_lossy().into_owned())
        .collect()
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<std::path::PathBuf> = v.iter().map(std::path::PathBuf::from).collect();
    v.sort();
    v.into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

struct Case {
    name: &'static str,
    paths: &'static [&'static str],
    exclude: &'static [&'static str],
    want: &'static [&'static str],
}

const FOO_ALL: &[&str] = &[
    "foo",
    "foo/bar",
    "foo/bar/baz",
    "foo/bar/baz/file.extra.dots.txt",
    "foo/bar/baz/file.txt",
    "foo/bar/baz/x.md",
    "foo/bar/file.txt",
    "foo/file.bin",
    "foo/file.txt",
];

const CASES: &[Case] = &[
    Case {
        name: "star at top level matches dot files, not subdirectories",
        paths: &["*.txt"],
        exclude: &[],
        want: &[".hidden.txt", "a.txt", "b.txt"],
    },
    Case {
        name: "doublestar at start matches every depth including the top",
        paths: &["**/*.txt"],
        exclude: &[],
        want: &[
            ".hidden.txt",
            "a.txt",
            "b.txt",
            "foo/bar/baz/file.extra.dots.txt",
            "foo/bar/baz/file.txt",
            "foo/bar/file.txt",
            "foo/file.txt",
        ],
    },
    Case {
        name: "doublestar in the middle matches zero or more directories",
        paths: &["foo/**/*.txt"],
        exclude: &[],
        want: &[
            "foo/bar/baz/file.extra.dots.txt",
            "foo/bar/baz/file.txt",
            "foo/bar/file.txt",
            "foo/file.txt",
        ],
    },
    Case {
        name: "doublestar at the end matches the directory itself and everything under it",
        paths: &["foo/**"],
        exclude: &[],
        want: FOO_ALL,
    },
    Case {
        name: "directory pattern takes the directory and everything under it",
        paths: &["foo"],
        exclude: &[],
        want: FOO_ALL,
    },
    Case {
        name: "trailing slash is the same directory",
        paths: &["foo/bar/"],
        exclude: &[],
        want: &[
            "foo/bar",
            "foo/bar/baz",
            "foo/bar/baz/file.extra.dots.txt",
            "foo/bar/baz/file.txt",
            "foo/bar/baz/x.md",
            "foo/bar/file.txt",
        ],
    },
    Case {
        name: "double slash matches a single slash",
        paths: &["foo//*.txt"],
        exclude: &[],
        want: &["foo/file.txt"],
    },
    Case {
        name: "leading ./ is cleaned",
        paths: &["./foo/*.bin"],
        exclude: &[],
        want: &["foo/file.bin"],
    },
    Case {
        name: "star does not cross a slash; a matched directory brings its contents",
        paths: &["foo/*"],
        exclude: &[],
        want: &[
            "foo/bar",
            "foo/bar/baz",
            "foo/bar/baz/file.extra.dots.txt",
            "foo/bar/baz/file.txt",
            "foo/bar/baz/x.md",
            "foo/bar/file.txt",
            "foo/file.bin",
            "foo/file.txt",
        ],
    },
    Case {
        name: "question mark and character class",
        paths: &["foo/ba?/file.txt", "target/[d-e]ebug/app"],
        exclude: &[],
        want: &["foo/bar/file.txt", "target/debug/app"],
    },
    Case {
        name: "brace alternatives",
        paths: &["{a,b}.txt"],
        exclude: &[],
        want: &["a.txt", "b.txt"],
    },
    Case {
        name: "must be at least two directories deep (GitLab's own case)",
        paths: &["./foo/**//*/*.*"],
        exclude: &[],
        want: &[
            "foo/bar/baz/file.extra.dots.txt",
            "foo/bar/baz/file.txt",
            "foo/bar/baz/x.md",
            "foo/bar/file.txt",
        ],
    },
    Case {
        name: "excluding a directory drops only its own entry (GitLab: exclude is not recursive)",
        paths: &["foo/"],
        exclude: &["foo/bar"],
        want: &[
            "foo",
            "foo/bar/baz",
            "foo/bar/baz/file.extra.dots.txt",
            "foo/bar/baz/file.txt",
            "foo/bar/baz/x.md",
            "foo/bar/file.txt",
            "foo/file.bin",
            "foo/file.txt",
        ],
    },
    Case {
        name: "excluding dir/** drops the directory and its contents",
        paths: &["target"],
        exclude: &["target/debug/**"],
        want: &["target", "target/release", "target/release/app"],
    },
    Case {
        name: "exclude with a leading doublestar",
        paths: &["foo"],
        exclude: &["**/*.txt"],
        want: &[
            "foo",
            "foo/bar",
            "foo/bar/baz",
            "foo/bar/baz/x.md",
            "foo/file.bin",
        ],
    },
    Case {
        name: "exclude with a doublestar in the middle (GitLab's own case)",
        paths: &["foo/**/*.txt"],
        exclude: &["foo/**/file.extra.*"],
        want: &["foo/bar/baz/file.txt", "foo/bar/file.txt", "foo/file.txt"],
    },
    Case {
        name: "an empty directory is selected as a directory",
        paths: &["docs/empty"],
        exclude: &[],
        want: &["docs/empty"],
    },
    Case {
        name: "overlapping patterns are deduplicated and sorted parents first",
        paths: &["docs/readme.md", "docs", "**/readme.md"],
        exclude: &[],
        want: &["docs", "docs/empty", "docs/readme.md"],
    },
    Case {
        name: "the project directory itself selects everything under it",
        paths: &["."],
        exclude: &["foo/**", "target/**", "docs/**"],
        want: &[".hidden.txt", "a.txt", "b.txt", "c.md"],
    },
];

#[test]
fn glob_table() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), TREE);
    for case in CASES {
        let sel = run(dir.path(), case.paths, case.exclude, false);
        assert_eq!(names(&sel), sorted(case.want), "case: {}", case.name);
        assert!(
            sel.warnings.is_empty(),
            "case {}: unexpected warnings {:?}",
            case.name,
            sel.warnings
        );
    }
}

#[test]
fn kinds_and_order() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), TREE);
    std::os::unix::fs::symlink("foo", dir.path().join("link")).unwrap();
    let sel = run(dir.path(), &["**"], &[], false);
    let kind = |p: &str| {
        sel.entries
            .iter()
            .find(|e| e.rel == Path::new(p))
            .map(|e| e.kind)
    };
    assert_eq!(kind("foo"), Some(EntryKind::Dir));
    assert_eq!(kind("docs/empty"), Some(EntryKind::Dir));
    assert_eq!(kind("a.txt"), Some(EntryKind::File));
    assert_eq!(kind("link"), Some(EntryKind::Symlink));
    // `**` does not walk through the symlink.
    assert!(kind("link/file.txt").is_none());
    // Every parent that is selected comes before its children; no duplicates.
    for (i, e) in sel.entries.iter().enumerate() {
        for later in &sel.entries[i + 1..] {
            assert_ne!(e.rel, later.rel);
            assert!(
                !e.rel.starts_with(&later.rel),
                "{:?} before its parent {:?}",
                e.rel,
                later.rel
            );
        }
    }
}

#[test]
fn absolute_and_returning_paths_inside_root_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), TREE);
    let abs = format!("{}/foo/*.bin", dir.path().display());
    let base = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let back = format!("../{base}/foo/file.txt");
    let abs_exclude = format!("{}/target/release/**", dir.path().display());
    let sel = run(dir.path(), &[&abs, &back, "target"], &[&abs_exclude], false);
    assert_eq!(
        names(&sel),
        sorted(&[
            "foo/file.bin",
            "foo/file.txt",
            "target",
            "target/debug",
            "target/debug/app",
            "target/debug/deps",
            "target/debug/deps/lib.rlib"
        ])
    );
    assert!(sel.warnings.is_empty(), "{:?}", sel.warnings);
}

#[test]
fn patterns_outside_root_are_refused_with_a_warning() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("project");
    tree(&root, TREE);
    tree(outer.path(), &["secret.txt", "other/x.txt"]);
    for pattern in [
        "../secret.txt",
        "../*.txt",
        "/etc/passwd",
        "/**/absolute.txt",
        "foo/../../other/*",
    ] {
        let sel = run(&root, &[pattern], &[], false);
        assert!(sel.entries.is_empty(), "{pattern}: {:?}", sel.entries);
        assert_eq!(
            sel.warnings,
            vec![format!(
                "artifact path is not a subpath of project directory: {pattern}"
            )],
            "{pattern}"
        );
    }
    // An exclude outside the root is ignored with a warning.
    let sel = run(&root, &["a.txt"], &["../*.txt"], false);
    assert_eq!(names(&sel), ["a.txt"]);
    assert_eq!(
        sel.warnings,
        ["exclude path is not a subpath of project directory: ../*.txt"]
    );
}

#[test]
fn no_match_warnings_name_the_pattern() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), TREE);
    let sel = run(
        dir.path(),
        &["nothing/*.txt", "missing.bin", "a.txt"],
        &[],
        false,
    );
    assert_eq!(names(&sel), ["a.txt"]);
    assert_eq!(sel.warnings.len(), 2, "{:?}", sel.warnings);
    assert!(
        sel.warnings[0].starts_with("nothing/*.txt: no matching files"),
        "{:?}",
        sel.warnings
    );
    assert!(
        sel.warnings[1].starts_with("missing.bin: no matching files"),
        "{:?}",
        sel.warnings
    );

    let sel = run(dir.path(), &[""], &[], false);
    assert_eq!(sel.warnings, ["No matching files. Path is empty."]);

    // Everything excluded counts as no match (GitLab's "cancel out everything").
    let sel = run(dir.path(), &["**"], &["**"], false);
    assert!(sel.entries.is_empty());
    assert_eq!(sel.warnings.len(), 1);
    assert!(
        sel.warnings[0].starts_with("**: no matching files"),
        "{:?}",
        sel.warnings
    );

    let sel = run(dir.path(), &["foo/["], &[], false);
    assert!(sel.entries.is_empty());
    assert_eq!(sel.warnings.len(), 1);
    assert!(
        sel.warnings[0].contains("foo/[: syntax error in pattern"),
        "{:?}",
        sel.warnings
    );
}

#[test]
fn symlinks_are_entries_and_literal_bases_are_followed() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), TREE);
    std::os::unix::fs::symlink("foo", dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", dir.path().join("dangling")).unwrap();

    let sel = run(dir.path(), &["link", "dangling"], &[], false);
    assert_eq!(names(&sel), ["dangling", "link"]);
    assert!(sel.entries.iter().all(|e| e.kind == EntryKind::Symlink));

    // A literal base through a symlink is followed, as doublestar does.
    let sel = run(dir.path(), &["link/*.bin"], &[], false);
    assert_eq!(names(&sel), ["link/file.bin"]);

    // Both the link and a path through it: the path through it is left out.
    let sel = run(dir.path(), &["link", "link/file.bin"], &[], false);
    assert_eq!(names(&sel), ["link"]);
    assert_eq!(sel.warnings.len(), 1, "{:?}", sel.warnings);
    assert!(sel.warnings[0].contains("go through a selected symlink"));
}

#[test]
fn special_files_are_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), &["d/a.txt"]);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.path().join("d/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let sel = run(dir.path(), &["d"], &[], false);
    assert_eq!(names(&sel), ["d", "d/a.txt"]);
    assert_eq!(sel.warnings.len(), 1);
    assert!(sel.warnings[0].contains("d/fifo"), "{:?}", sel.warnings);
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=Oar",
            "-c",
            "user.email=oar@example.invalid",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

#[test]
fn untracked_lists_untracked_and_ignored_files_like_git_ls_files_o() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tree(root, &["tracked.txt", "src/lib.rs", ".gitignore"]);
    fs::write(root.join(".gitignore"), "*.log\nbuild/\n").unwrap();
    git(root, &["init", "-q"]);
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "init"]);
    tree(
        root,
        &[
            "untracked.txt",
            "debug.log",
            "build/out.o",
            "src/new.rs",
            "неотслеживаемый.txt",
        ],
    );

    let sel = run(root, &[], &[], true);
    assert_eq!(
        names(&sel),
        sorted(&[
            "build/out.o",
            "debug.log",
            "src/new.rs",
            "untracked.txt",
            "неотслеживаемый.txt"
        ]),
        "GitLab runs `git ls-files -o` without --exclude-standard: ignored files are included"
    );
    assert!(sel.entries.iter().all(|e| e.kind == EntryKind::File));
    assert!(sel.warnings.is_empty(), "{:?}", sel.warnings);

    // Excludes apply to untracked files; paths and untracked combine.
    let sel = run(root, &["tracked.txt"], &["*.log", "build/**"], true);
    assert_eq!(
        names(&sel),
        sorted(&[
            "src/new.rs",
            "tracked.txt",
            "untracked.txt",
            "неотслеживаемый.txt"
        ])
    );

    // Nothing untracked: a warning.
    let clean = tempfile::tempdir().unwrap();
    tree(clean.path(), &["a.txt"]);
    git(clean.path(), &["init", "-q"]);
    git(clean.path(), &["add", "."]);
    git(clean.path(), &["commit", "-q", "-m", "init"]);
    let sel = run(clean.path(), &[], &[], true);
    assert!(sel.entries.is_empty());
    assert_eq!(sel.warnings, ["untracked: no files"]);
}

#[test]
fn untracked_outside_a_git_repository_warns() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), &["a.txt"]);
    let sel = run(dir.path(), &[], &[], true);
    assert!(sel.entries.is_empty(), "{:?}", sel.entries);
    assert_eq!(sel.warnings.len(), 1, "{:?}", sel.warnings);
    assert!(
        sel.warnings[0].starts_with("untracked: git ls-files failed"),
        "{:?}",
        sel.warnings
    );
}

#[test]
fn missing_root_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = run_err(&dir.path().join("missing"));
    assert!(err.contains("missing"), "{err}");
}

fn run_err(root: &Path) -> String {
    let paths = vec!["*".to_string()];
    select(
        root,
        &PathSpec {
            paths: &paths,
            exclude: &[],
            untracked: false,
        },
    )
    .unwrap_err()
    .to_string()
}
