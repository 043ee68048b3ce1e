//! The error type of path selection, archive creation and extraction.

use std::io;
use std::path::{Path, PathBuf};

/// What went wrong while selecting, creating or extracting.
///
/// Every variant that concerns an archive entry names it (`entry`), and every I/O error names the
/// path it happened on, so the message alone tells a user what to look at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// An I/O operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("reading", "creating directory", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The archive is damaged or not of the format its magic bytes claim.
    #[error("corrupt archive {}: {detail}", path.display())]
    Corrupt {
        /// The archive file.
        path: PathBuf,
        /// What the decoder reported.
        detail: String,
    },
    /// The file does not start with the magic bytes of a format Oar extracts.
    #[error("unknown archive format for {} (not zip, zstd or gzip)", path.display())]
    UnknownFormat {
        /// The archive file.
        path: PathBuf,
    },
    /// An entry name contains a `..` component.
    #[error("entry {entry:?}: path traversal (`..` component) refused")]
    PathTraversal {
        /// The entry name as stored in the archive.
        entry: String,
    },
    /// An entry name is absolute.
    #[error("entry {entry:?}: absolute path refused")]
    AbsolutePath {
        /// The entry name as stored in the archive.
        entry: String,
    },
    /// An entry name is empty or contains control characters (or NUL).
    #[error("entry {entry:?}: invalid name ({reason})")]
    InvalidName {
        /// The entry name as stored in the archive (escaped).
        entry: String,
        /// Why the name was refused.
        reason: &'static str,
    },
    /// A symlink whose target, resolved against the extraction directory (through earlier
    /// symlinks), would point outside it.
    #[error("entry {entry:?}: symlink target {target:?} escapes the extraction directory")]
    SymlinkEscape {
        /// The symlink entry.
        entry: String,
        /// Its target as stored in the archive.
        target: String,
    },
    /// An entry whose parent path goes through a symlink (in the archive or already in the
    /// extraction directory).
    #[error("entry {entry:?}: parent path goes through symlink {symlink:?}")]
    ThroughSymlink {
        /// The entry.
        entry: String,
        /// The symlink on its way, relative to the extraction directory.
        symlink: String,
    },
    /// An entry's parent path exists as something other than a directory.
    #[error("entry {entry:?}: parent {parent:?} is not a directory")]
    NotADirectory {
        /// The entry.
        entry: String,
        /// The parent that is not a directory, relative to the extraction directory.
        parent: String,
    },
    /// An entry would replace a non-empty directory with a file or a symlink.
    #[error("entry {entry:?}: a directory of that name already exists")]
    DirectoryInTheWay {
        /// The entry.
        entry: String,
    },
    /// An entry would replace a symlink that an earlier symlink entry of the same archive
    /// resolves through (which could redirect that earlier symlink).
    #[error("entry {entry:?}: replaces a symlink that an earlier symlink entry resolves through")]
    SymlinkConflict {
        /// The entry.
        entry: String,
    },
    /// The same path appears twice in the archive.
    #[error("entry {entry:?}: duplicate entry")]
    DuplicateEntry {
        /// The entry.
        entry: String,
    },
    /// More entries than [`Limits::max_entries`](crate::archive::Limits::max_entries).
    #[error("entry {entry:?}: too many entries (limit {limit})")]
    TooManyEntries {
        /// The first entry over the limit.
        entry: String,
        /// The limit.
        limit: u64,
    },
    /// More uncompressed bytes than [`Limits::max_bytes`](crate::archive::Limits::max_bytes).
    #[error("entry {entry:?}: uncompressed size over the limit of {limit} bytes")]
    TooLarge {
        /// The entry during which the limit was crossed.
        entry: String,
        /// The limit.
        limit: u64,
    },
    /// A device, fifo, socket or hard link entry.
    #[error("entry {entry:?}: {kind} entries are refused")]
    SpecialFile {
        /// The entry.
        entry: String,
        /// What it is ("character device", "fifo", ...).
        kind: &'static str,
    },
    /// An entry uses a feature Oar does not extract (encryption, an unknown compression
    /// method, a sparse file, ...).
    #[error("entry {entry:?}: unsupported: {what}")]
    Unsupported {
        /// The entry.
        entry: String,
        /// The feature.
        what: String,
    },
    /// A path that the chosen format cannot store (zip needs UTF-8 names).
    #[error("{}: {reason}", path.display())]
    Unstorable {
        /// The path relative to the root.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// `raw` needs exactly one regular file; `gzip` needs at least one.
    #[error("{format} artifacts need {expected}, the selection has {found}")]
    WrongFileCount {
        /// `raw` or `gzip`.
        format: &'static str,
        /// What was expected.
        expected: &'static str,
        /// What the selection holds.
        found: String,
    },
    /// A selected path that is not a regular file where one is needed (gzip, raw).
    #[error("{}: not a regular file", path.display())]
    NotARegularFile {
        /// The path relative to the root.
        path: PathBuf,
    },
}

impl ArchiveError {
    /// An [`ArchiveError::Io`] for `path`.
    pub(crate) fn io(op: &'static str, path: impl AsRef<Path>, source: io::Error) -> Self {
        ArchiveError::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// The archive entry this error is about, if any.
    pub fn entry(&self) -> Option<&str> {
        match self {
            ArchiveError::PathTraversal { entry }
            | ArchiveError::AbsolutePath { entry }
            | ArchiveError::InvalidName { entry, .. }
            | ArchiveError::SymlinkEscape { entry, .. }
            | ArchiveError::ThroughSymlink { entry, .. }
            | ArchiveError::NotADirectory { entry, .. }
            | ArchiveError::DirectoryInTheWay { entry }
            | ArchiveError::SymlinkConflict { entry }
            | ArchiveError::DuplicateEntry { entry }
            | ArchiveError::TooManyEntries { entry, .. }
            | ArchiveError::TooLarge { entry, .. }
            | ArchiveError::SpecialFile { entry, .. }
            | ArchiveError::Unsupported { entry, .. } => Some(entry),
            _ => None,
        }
    }
}
