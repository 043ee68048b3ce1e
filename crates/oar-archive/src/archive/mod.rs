//! Creating archives from a [`Selection`](crate::select::Selection) and extracting them safely.
//!
//! Formats:
//! - [`Format::Zip`]: GitLab's artifact format, as GitLab Runner writes it: deflate, unix modes
//!   in the external attributes (so exec bits survive), symlinks as entries whose data is the
//!   link target, directories as `name/` entries, mtimes both as DOS time and as an extended
//!   timestamp extra field (`0x5455`, seconds).
//! - [`Format::TarZst`]: Oar's cache format: a tar stream (modes, mtimes, symlinks as links,
//!   empty directories) compressed with multithreaded zstd.
//! - [`Format::Gzip`]: report artifacts (`artifact_format: gzip`): one gzip member per selected
//!   file, concatenated, each naming the file (header name = base name, comment = path, mtime),
//!   as GitLab Runner does. Directories are skipped; any other non-regular entry is an error.
//! - [`Format::Raw`]: report artifacts (`artifact_format: raw`): the single selected file as is.
//!
//! [`extract`] takes zip, zstd-compressed tar and gzip-compressed tar (told apart by their magic
//! bytes) and refuses anything that could write outside the target directory: see
//! [`extract`] for the rules.

mod create;
mod extract;
mod sink;

use std::fs::File;
use std::io::Read;
use std::path::Path;

pub use create::create;
pub use extract::extract;

use crate::error::ArchiveError;

/// An archive format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Zip with deflate (GitLab artifacts, `artifact_format: zip`).
    Zip,
    /// Tar compressed with zstd (Oar's cache format).
    TarZst,
    /// Concatenated gzip members, one per file (`artifact_format: gzip`). When extracting, a
    /// gzip-compressed tar.
    Gzip,
    /// One file as is (`artifact_format: raw`). Cannot be extracted.
    Raw,
}

impl Format {
    /// The file name extension GitLab Runner uses for this format (`""` for raw).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Zip => ".zip",
            Format::TarZst => ".tar.zst",
            Format::Gzip => ".gz",
            Format::Raw => "",
        }
    }
}

/// How to create an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOptions {
    /// The format to write.
    pub format: Format,
    /// The zstd compression level for [`Format::TarZst`] (1..=22; 3 is zstd's default).
    pub zstd_level: i32,
    /// Worker threads for compression (zstd workers; parallel deflate of small zip entries).
    /// 0 or 1 compresses on a single extra thread.
    pub threads: u32,
}

impl Default for CreateOptions {
    /// Zip, zstd level 3, one thread per available core.
    fn default() -> Self {
        CreateOptions {
            format: Format::Zip,
            zstd_level: 3,
            threads: available_threads(),
        }
    }
}

/// The number of available cores (at least 1).
pub fn available_threads() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// Caps applied while extracting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes of file content written (counted as written, headers are not trusted).
    pub max_bytes: u64,
    /// The most entries (files, directories, symlinks) in the archive.
    pub max_entries: u64,
}

impl Default for Limits {
    /// 16 GiB and 1,000,000 entries.
    fn default() -> Self {
        Limits {
            max_bytes: 16 << 30,
            max_entries: 1_000_000,
        }
    }
}

/// What an archive operation wrote or read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Regular files.
    pub files: u64,
    /// Directories (explicit entries only, not parents created on the way).
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Bytes of file content (uncompressed).
    pub bytes: u64,
}

/// Detects an archive's format from its magic bytes: zip (`PK\x03\x04`, or `PK\x05\x06` for an
/// empty one), zstd (`28 B5 2F FD`, taken as [`Format::TarZst`]) or gzip (`1F 8B`, taken as
/// a gzip-compressed tar, [`Format::Gzip`]).
pub fn detect(archive: &Path) -> Result<Format, ArchiveError> {
    let mut file = File::open(archive).map_err(|e| ArchiveError::io("opening", archive, e))?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ArchiveError::io("reading", archive, e)),
        }
    }
    let magic = &magic[..got];
    if magic.starts_with(b"PK\x03\x04") || magic.starts_with(b"PK\x05\x06") {
        Ok(Format::Zip)
    } else if magic.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        Ok(Format::TarZst)
    } else if magic.starts_with(&[0x1F, 0x8B]) {
        Ok(Format::Gzip)
    } else {
        Err(ArchiveError::UnknownFormat {
            path: archive.to_path_buf(),
        })
    }
}
