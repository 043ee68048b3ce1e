//! GitLab's artifact and cache path selection: `paths`, `exclude` and `untracked`.
//!
//! The semantics are GitLab Runner's (`commands/helpers/file_archiver.go`):
//!
//! - each path is a doublestar glob (see [`glob`](self)) relative to the project directory; an
//!   absolute path, or a relative one that leaves the directory and comes back
//!   (`../project/x`), is accepted when it lands inside; a pattern reaching outside is refused
//!   with the warning `artifact path is not a subpath of project directory: <pattern>`;
//! - the pattern is cleaned like Go's `filepath.Clean` (`./a//b/` is `a/b`); the literal part
//!   before the first meta character is followed even through a symlink, the rest is matched
//!   while walking without following symlinks;
//! - a match that is a directory brings the directory and everything under it (symlinks are
//!   taken as links, never followed);
//! - every candidate is checked against every `exclude` pattern on its own path: excluding a
//!   directory removes the directory's entry but not its contents (use `dir/**` for that,
//!   which matches `dir` itself too);
//! - a path (or untracked set) that yields nothing warns `<pattern>: no matching files...`;
//! - `untracked` adds what `git ls-files -o -z` prints in the project directory: untracked
//!   files *including* git-ignored ones (GitLab does not pass `--exclude-standard`);
//! - devices, fifos and sockets are skipped with a warning.
//!
//! The result is sorted component-wise (so parents come before their children) and
//! deduplicated.

mod glob;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::ArchiveError;
use glob::{Pattern, has_meta, unescape};

/// What to select: the `paths`, `exclude` and `untracked` of a job's `artifacts:` or `cache:`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathSpec<'a> {
    /// Doublestar globs relative to the project directory (or absolute inside it).
    pub paths: &'a [String],
    /// Doublestar globs; a candidate whose own path matches one is left out.
    pub exclude: &'a [String],
    /// Add the files `git ls-files -o` reports (untracked, including ignored ones).
    pub untracked: bool,
}

/// The kind of a selected entry (as `lstat` sees it: symlinks are never followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (stored as a link, never followed).
    Symlink,
}

/// One selected path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The path relative to the root (never empty, never absolute, no `..`).
    pub rel: PathBuf,
    /// What it is.
    pub kind: EntryKind,
}

/// The outcome of [`select`]: the entries and the warnings to show in the job log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Sorted (parents before children), deduplicated entries.
    pub entries: Vec<Entry>,
    /// Human-readable warnings, GitLab's wording where GitLab has one.
    pub warnings: Vec<String>,
}

impl Selection {
    /// How many entries are regular files.
    pub fn file_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .count()
    }

    /// Whether nothing was selected.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Selects the entries under `root` that `spec` designates. Blocking. GitLab Runner's semantics
/// (see the [module documentation](self)).
///
/// Only a missing or unreadable `root` is an error; everything else (patterns outside the root,
/// malformed patterns, no matches, unreadable subdirectories, `git` failing) becomes a warning.
pub fn select(root: &Path, spec: &PathSpec<'_>) -> Result<Selection, ArchiveError> {
    let meta =
        fs::metadata(root).map_err(|e| ArchiveError::io("reading project directory", root, e))?;
    if !meta.is_dir() {
        return Err(ArchiveError::io(
            "reading project directory",
            root,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    let root_abs = std::path::absolute(root)
        .map_err(|e| ArchiveError::io("resolving project directory", root, e))?;
    let mut sel = Selector {
        root,
        roots: vec![clean(&root_abs.to_string_lossy())],
        excludes: Vec::new(),
        found: BTreeMap::new(),
        warnings: Vec::new(),
    };
    if let Ok(canon) = fs::canonicalize(root) {
        let canon = clean(&canon.to_string_lossy());
        if !sel.roots.contains(&canon) {
            sel.roots.push(canon);
        }
    }

    for pattern in spec.exclude {
        match sel.relative(pattern) {
            Some(rel) => match Pattern::new(&rel) {
                Ok(p) => sel.excludes.push(p),
                Err(e) => sel.warnings.push(format!("exclude {pattern}: {e}")),
            },
            None => sel.warnings.push(format!(
                "exclude path is not a subpath of project directory: {pattern}"
            )),
        }
    }

    for path in spec.paths {
        sel.process_path(path);
    }
    if spec.untracked {
        sel.process_untracked();
    }
    Ok(sel.finish())
}

struct Selector<'r> {
    root: &'r Path,
    /// The root as cleaned absolute strings: as given, and canonical if different.
    roots: Vec<String>,
    excludes: Vec<Pattern>,
    found: BTreeMap<PathBuf, EntryKind>,
    warnings: Vec<String>,
}

/// `/`-separated string of a relative path.
fn slash(rel: &Path) -> String {
    rel.to_string_lossy().into_owned()
}

impl Selector<'_> {
    /// The pattern relative to the root, cleaned, or `None` if it reaches outside.
    fn relative(&self, pattern: &str) -> Option<String> {
        let candidates: Vec<String> = if pattern.starts_with('/') {
            vec![clean(pattern)]
        } else {
            self.roots
                .iter()
                .map(|r| clean(&format!("{r}/{pattern}")))
                .collect()
        };
        for full in &candidates {
            for root in &self.roots {
                if full == root {
                    return Some(".".to_string());
                }
                let prefix = if root == "/" {
                    "/".to_string()
                } else {
                    format!("{root}/")
                };
                if let Some(rest) = full.strip_prefix(&prefix) {
                    return Some(rest.to_string());
                }
            }
        }
        None
    }

    fn is_excluded(&self, rel: &str) -> bool {
        self.excludes.iter().any(|p| p.matches(rel))
    }

    fn process_path(&mut self, path: &str) {
        if path.is_empty() {
            self.warnings
                .push("No matching files. Path is empty.".to_string());
            return;
        }
        let Some(rel) = self.relative(path) else {
            self.warnings.push(format!(
                "artifact path is not a subpath of project directory: {path}"
            ));
            return;
        };
        let found = if has_meta(&rel) {
            match Pattern::new(&rel) {
                Ok(pattern) => self.glob(&rel, &pattern),
                Err(e) => {
                    self.warnings.push(format!("{path}: {e}"));
                    return;
                }
            }
        } else if rel == "." {
            self.add_tree(Path::new(""))
        } else {
            let rel = PathBuf::from(unescape(&rel));
            match fs::symlink_metadata(self.root.join(&rel)) {
                Ok(meta) => self.add_match(&rel, meta.file_type()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => {
                    self.warnings.push(format!("{path}: {e}"));
                    0
                }
            }
        };
        if found == 0 {
            self.warnings.push(format!(
                "{path}: no matching files. Ensure that the artifact path is relative to the \
                 working directory ({})",
                self.root.display()
            ));
        }
    }

    /// Walks from the pattern's literal base, adding matches; returns how many entries were
    /// added (counting duplicates, as GitLab does).
    fn glob(&mut self, rel: &str, pattern: &Pattern) -> usize {
        // The literal base: the segments before the first one with a meta character.
        let mut base = PathBuf::new();
        for seg in rel.split('/') {
            if has_meta(seg) {
                break;
            }
            if seg != "." {
                base.push(unescape(seg));
            }
        }
        let mut count = 0;
        if !base.as_os_str().is_empty() {
            // `base/**` matches `base` itself.
            if pattern.matches(&slash(&base))
                && let Ok(meta) = fs::symlink_metadata(self.root.join(&base))
            {
                return self.add_match(&base, meta.file_type());
            }
            // The base is followed even when it is a symlink, as doublestar does.
            match fs::metadata(self.root.join(&base)) {
                Ok(m) if m.is_dir() => {}
                _ => return 0,
            }
        }
        let mut stack = vec![base];
        while let Some(dir) = stack.pop() {
            let read = match fs::read_dir(self.root.join(&dir)) {
                Ok(r) => r,
                Err(e) => {
                    self.warnings
                        .push(format!("{}: {e}", self.root.join(&dir).display()));
                    continue;
                }
            };
            let mut children: Vec<(PathBuf, fs::FileType)> = Vec::new();
            for item in read {
                match item.and_then(|d| Ok((d.file_name(), d.file_type()?))) {
                    Ok((name, ft)) => children.push((dir.join(name), ft)),
                    Err(e) => self
                        .warnings
                        .push(format!("{}: {e}", self.root.join(&dir).display())),
                }
            }
            for (child, ft) in children {
                let s = slash(&child);
                if pattern.matches(&s) {
                    count += self.add_match(&child, ft);
                } else if ft.is_dir() && pattern.may_match_below(&s) {
                    stack.push(child);
                }
            }
        }
        count
    }

    /// Adds a match: the entry itself and, for a directory, everything under it.
    fn add_match(&mut self, rel: &Path, ft: fs::FileType) -> usize {
        let mut count = self.add_one(rel, ft);
        if ft.is_dir() {
            count += self.add_tree(rel);
        }
        count
    }

    /// Adds everything under `dir` (not `dir` itself), without following symlinks.
    fn add_tree(&mut self, dir: &Path) -> usize {
        let mut count = 0;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let read = match fs::read_dir(self.root.join(&dir)) {
                Ok(r) => r,
                Err(e) => {
                    self.warnings
                        .push(format!("{}: {e}", self.root.join(&dir).display()));
                    continue;
                }
            };
            for item in read {
                match item.and_then(|d| Ok((d.file_name(), d.file_type()?))) {
                    Ok((name, ft)) => {
                        let child = dir.join(name);
                        count += self.add_one(&child, ft);
                        if ft.is_dir() {
                            stack.push(child);
                        }
                    }
                    Err(e) => self
                        .warnings
                        .push(format!("{}: {e}", self.root.join(&dir).display())),
                }
            }
        }
        count
    }

    /// Adds one path unless excluded or special; returns 1 if it counts as found.
    fn add_one(&mut self, rel: &Path, ft: fs::FileType) -> usize {
        if self.is_excluded(&slash(rel)) {
            return 0;
        }
        let kind = if ft.is_symlink() {
            EntryKind::Symlink
        } else if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File
        } else {
            self.warnings.push(format!(
                "{}: not a regular file, directory or symlink, ignored",
                rel.display()
            ));
            return 0;
        };
        self.found.insert(rel.to_path_buf(), kind);
        1
    }

    fn process_untracked(&mut self) {
        let output = Command::new("git")
            .args(["ls-files", "-o", "-z"])
            .current_dir(self.root)
            .output();
        let output = match output {
            Ok(o) if o.status.success() => o.stdout,
            Ok(o) => {
                self.warnings.push(format!(
                    "untracked: git ls-files failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                return;
            }
            Err(e) => {
                self.warnings
                    .push(format!("untracked: cannot run git: {e}"));
                return;
            }
        };
        let mut found = 0;
        for raw in output.split(|&b| b == 0).filter(|s| !s.is_empty()) {
            let rel = bytes_to_path(raw);
            // git prints paths relative to the cwd, inside it; refuse anything else anyway.
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                continue;
            }
            if let Ok(meta) = fs::symlink_metadata(self.root.join(&rel)) {
                found += self.add_one(&rel, meta.file_type());
            }
        }
        if found == 0 {
            self.warnings.push("untracked: no files".to_string());
        }
    }

    fn finish(mut self) -> Selection {
        // Drop entries below a selected symlink (possible when a literal path goes through
        // it): an archive holding both could not be extracted safely.
        let mut entries: Vec<Entry> = Vec::with_capacity(self.found.len());
        let mut last_link: Option<PathBuf> = None;
        let mut dropped = 0usize;
        for (rel, kind) in std::mem::take(&mut self.found) {
            if let Some(link) = &last_link
                && rel.starts_with(link)
            {
                dropped += 1;
                continue;
            }
            if kind == EntryKind::Symlink {
                last_link = Some(rel.clone());
            }
            entries.push(Entry { rel, kind });
        }
        if dropped > 0 {
            self.warnings.push(format!(
                "{dropped} path(s) left out because they go through a selected symlink"
            ));
        }
        if entries.iter().any(|e| {
            e.rel
                .components()
                .next()
                .is_some_and(|c| c.as_os_str() == ".git")
        }) {
            self.warnings
                .push("Part of .git directory is on the list of files to archive".to_string());
            self.warnings
                .push("This may introduce unexpected problems".to_string());
        }
        Selection {
            entries,
            warnings: self.warnings,
        }
    }
}

fn bytes_to_path(raw: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(raw))
}

/// Go's `path.Clean` on a `/`-separated string.
pub(crate) fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn clean_like_go() {
        for (i, o) in [
            ("", "."),
            ("a//b/", "a/b"),
            ("./a/./b", "a/b"),
            ("a/../..", ".."),
            ("/../a", "/a"),
            ("/", "/"),
            ("foo/**//*/*.*", "foo/**/*/*.*"),
            ("a/*/../b", "a/b"),
        ] {
            assert_eq!(clean(i), o, "clean({i:?})");
        }
    }
}
