//! Where pipeline files come from.

use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Reads pipeline files by repo-relative path (`.gitlab-ci.yml`, `ci/build.yml`).
///
/// Paths given to [`Source::read`] never start with `/` and never contain `..`: the loader
/// normalises and checks them first.
pub trait Source {
    /// The text of the file at the repo-relative `path`.
    ///
    /// # Errors
    /// Any IO error; [`io::ErrorKind::NotFound`] when the file does not exist.
    fn read(&self, path: &str) -> io::Result<String>;
}

/// Files held in memory, for tests and for callers that read files another way.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    files: BTreeMap<String, String>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a file.
    #[must_use]
    pub fn with(mut self, path: &str, text: &str) -> Self {
        self.insert(path, text);
        self
    }

    /// Adds (or replaces) a file.
    pub fn insert(&mut self, path: &str, text: &str) {
        self.files
            .insert(path.trim_start_matches('/').to_owned(), text.to_owned());
    }
}

impl Source for MemorySource {
    fn read(&self, path: &str) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }
}

/// Files under a directory (the repository's root).
#[derive(Debug, Clone)]
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    /// Files under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

impl Source for DirSource {
    fn read(&self, path: &str) -> io::Result<String> {
        let rel = Path::new(path);
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "path leaves the repository",
            ));
        }
        fs_err::read_to_string(self.root.join(rel))
    }
}
