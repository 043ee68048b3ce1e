//! Safe extraction of zip, tar.zst and tar.gz archives.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::mpsc;

use super::sink::Sink;
use super::{Format, Limits, Stats, detect};
use crate::error::ArchiveError;

const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;
const S_IFLNK: u32 = 0o120000;
const S_IFREG: u32 = 0o100000;
const S_IFBLK: u32 = 0o060000;
const S_IFDIR: u32 = 0o040000;
const S_IFCHR: u32 = 0o020000;
const S_IFIFO: u32 = 0o010000;

/// Extracts `archive` into `target` (created if missing). Blocking.
///
/// The format is detected from the magic bytes ([`detect`]): zip, zstd-compressed tar or
/// gzip-compressed tar. Existing files in `target` are overwritten (caches and artifacts are
/// extracted over a checkout); existing symlinks are replaced, never followed.
///
/// Refused, each with an [`ArchiveError`] naming the entry (extraction stops there; what was
/// written before stays, all of it inside `target`):
/// - names with a `..` component ([`ArchiveError::PathTraversal`]), absolute names
///   ([`ArchiveError::AbsolutePath`]), empty names or names with control characters
///   ([`ArchiveError::InvalidName`]);
/// - symlinks whose target, resolved against `target` through the symlinks already there,
///   leaves it ([`ArchiveError::SymlinkEscape`]);
/// - entries whose parent path goes through a symlink ([`ArchiveError::ThroughSymlink`]) or a
///   non-directory ([`ArchiveError::NotADirectory`]);
/// - the same path twice ([`ArchiveError::DuplicateEntry`]);
/// - more than `limits.max_entries` entries ([`ArchiveError::TooManyEntries`]) or more than
///   `limits.max_bytes` bytes of content, counted as written ([`ArchiveError::TooLarge`]);
/// - devices, fifos, sockets and hard links ([`ArchiveError::SpecialFile`]);
/// - a file or symlink where a directory exists ([`ArchiveError::DirectoryInTheWay`]).
///
/// Modes (permission bits and sticky; never setuid/setgid), mtimes (seconds), symlinks and
/// empty directories are restored. Owners are not.
pub fn extract(archive: &Path, target: &Path, limits: &Limits) -> Result<Stats, ArchiveError> {
    let format = detect(archive)?;
    let file = File::open(archive).map_err(|e| ArchiveError::io("opening", archive, e))?;
    let mut sink = Sink::new(archive, target, *limits)?;
    match format {
        Format::Zip => extract_zip(archive, file, &mut sink)?,
        Format::TarZst => {
            let decoder =
                zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(1 << 20, file))
                    .map_err(|e| corrupt(archive, e))?;
            read_ahead(decoder, |r| extract_tar(archive, r, &mut sink))?;
        }
        Format::Gzip => {
            let decoder =
                flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file));
            read_ahead(decoder, |r| extract_tar(archive, r, &mut sink))?;
        }
        Format::Raw => {
            return Err(ArchiveError::UnknownFormat {
                path: archive.to_path_buf(),
            });
        }
    }
    sink.finish()
}

/// Decompresses on another thread, a few chunks ahead of `consume` (as `zstd -d | tar x`
/// would), so that decompression and file writing overlap.
fn read_ahead<R: Read + Send, T>(
    mut inner: R,
    consume: impl FnOnce(&mut ChunkReader) -> Result<T, ArchiveError>,
) -> Result<T, ArchiveError> {
    const CHUNK: usize = 1 << 20;
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            loop {
                let mut chunk = vec![0u8; CHUNK];
                let mut filled = 0;
                let result = loop {
                    match inner.read(&mut chunk[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            filled += n;
                            if filled == CHUNK {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                chunk.truncate(filled);
                let end = filled < CHUNK;
                if !chunk.is_empty() && tx.send(Ok(chunk)).is_err() {
                    // The consumer stopped.
                    return;
                }
                if let Err(e) = result {
                    let _ = tx.send(Err(e));
                    return;
                }
                if end {
                    return;
                }
            }
        });
        let mut reader = ChunkReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        };
        let result = consume(&mut reader);
        // Dropping the receiver unblocks the decompressor if the consumer stopped early.
        drop(reader);
        result
    })
}

/// The consuming end of [`read_ahead`].
struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The stream ended.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn corrupt(archive: &Path, e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Corrupt {
        path: archive.to_path_buf(),
        detail: e.to_string(),
    }
}

fn extract_tar(archive: &Path, reader: impl Read, sink: &mut Sink) -> Result<(), ArchiveError> {
    let mut ar = tar::Archive::new(reader);
    let entries = ar.entries().map_err(|e| corrupt(archive, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(archive, e))?;
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let is_dir = kind == tar::EntryType::Directory;
        let Some(name) = sink.begin(&raw, is_dir)? else {
            continue;
        };
        let header = entry.header();
        let mode = header.mode().map_err(|e| sink.corrupt(&name.display, e))?;
        let mtime = header
            .mtime()
            .map_err(|e| sink.corrupt(&name.display, e))
            .map(|t| i64::try_from(t).unwrap_or(i64::MAX))?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                sink.file(&name, mode, mtime, &mut entry)?;
            }
            tar::EntryType::Directory => sink.dir(&name, mode, mtime)?,
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .ok_or_else(|| sink.corrupt(&name.display, "symlink without a target"))?;
                sink.symlink(&name, &target, mtime)?;
            }
            tar::EntryType::Link => {
                return Err(ArchiveError::SpecialFile {
                    entry: name.display,
                    kind: "hard link",
                });
            }
            tar::EntryType::Char => {
                return Err(ArchiveError::SpecialFile {
                    entry: name.display,
                    kind: "character device",
                });
            }
            tar::EntryType::Block => {
                return Err(ArchiveError::SpecialFile {
                    entry: name.display,
                    kind: "block device",
                });
            }
            tar::EntryType::Fifo => {
                return Err(ArchiveError::SpecialFile {
                    entry: name.display,
                    kind: "fifo",
                });
            }
            other => {
                return Err(ArchiveError::Unsupported {
                    entry: name.display,
                    what: format!("tar entry type {:?}", other.as_byte() as char),
                });
            }
        }
    }
    Ok(())
}

fn extract_zip(archive: &Path, file: File, sink: &mut Sink) -> Result<(), ArchiveError> {
    let mut zip = zip::ZipArchive::new(BufReader::with_capacity(32 * 1024, file))
        .map_err(|e| corrupt(archive, e))?;
    if zip.has_duplicate_names() {
        let entry = find_duplicate_zip_name(archive, zip.central_directory_start())
            .unwrap_or_else(|| "(unknown: the central directory repeats a name)".to_string());
        return Err(ArchiveError::DuplicateEntry { entry });
    }
    for i in 0..zip.len() {
        let entry = zip
            .name_for_index(i)
            .and_then(Result::ok)
            .map_or_else(|| format!("#{i}"), |n| n.into_owned());
        let mut f = match zip.by_index(i) {
            Ok(f) => f,
            Err(e) => {
                return Err(match e {
                    zip::result::ZipError::UnsupportedArchive(what) => ArchiveError::Unsupported {
                        entry,
                        what: what.to_string(),
                    },
                    e => ArchiveError::Corrupt {
                        path: archive.to_path_buf(),
                        detail: format!("entry {entry:?}: {e}"),
                    },
                });
            }
        };
        let raw = f.name_raw().to_vec();
        let unix = f.unix_mode();
        let type_bits = unix.map_or(0, |m| m & S_IFMT);
        let is_dir = f.is_dir() || type_bits == S_IFDIR;
        let Some(name) = sink.begin(&raw, is_dir)? else {
            continue;
        };
        if f.encrypted() {
            return Err(ArchiveError::Unsupported {
                entry: name.display,
                what: "encryption".into(),
            });
        }
        let mtime = zip_mtime(&f);
        match type_bits {
            _ if is_dir => sink.dir(&name, unix.unwrap_or(0o755) & 0o7777, mtime)?,
            S_IFLNK => {
                let mut target = Vec::new();
                (&mut f)
                    .take(4096)
                    .read_to_end(&mut target)
                    .map_err(|e| sink.corrupt(&name.display, e))?;
                sink.symlink(&name, &target, mtime)?;
            }
            0 | S_IFREG => {
                let mode = unix.map_or(0o644, |m| m & 0o7777);
                sink.file(&name, mode, mtime, &mut f)?;
            }
            S_IFCHR => {
                return Err(ArchiveError::SpecialFile {
                    entry: name.display,
                    kind: "character device",
                });
            }
            S_IFBLK => {
                return Err(ArchiveError::SpecialFile {
                    entry: name.display,
                    kind: "block device",
                });
            }
            S_IFIFO => {
                return Err(ArchiveError::SpecialFile {
                    entry: name.display,
                    kind: "fifo",
                });
            }
            S_IFSOCK => {
                return Err(ArchiveError::SpecialFile {
                    entry: name.display,
                    kind: "socket",
                });
            }
            other => {
                return Err(ArchiveError::Unsupported {
                    entry: name.display,
                    what: format!("file type {other:o}"),
                });
            }
        }
    }
    Ok(())
}

/// The mtime of a zip entry: the extended timestamp field when present (what GitLab Runner and
/// Info-ZIP write), else the DOS date and time taken as UTC.
fn zip_mtime<R: Read>(f: &zip::read::ZipFile<'_, R>) -> i64 {
    for field in f.extra_data_fields() {
        if let zip::extra_fields::ExtraField::ExtendedTimestamp(ts) = field
            && let Some(t) = ts.mod_time()
        {
            return i64::from(t);
        }
    }
    match f.last_modified() {
        Some(dt) => unix_time(
            i64::from(dt.year()),
            u32::from(dt.month()),
            u32::from(dt.day()),
            u32::from(dt.hour()),
            u32::from(dt.minute()),
            u32::from(dt.second()),
        ),
        None => 0,
    }
}

/// Seconds since the epoch of a UTC civil date and time (Howard Hinnant's algorithm).
pub(crate) fn unix_time(y: i64, m: u32, d: u32, hh: u32, mm: u32, ss: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + i64::from(hh) * 3600 + i64::from(mm) * 60 + i64::from(ss)
}

/// Reads the central directory by hand to name a repeated entry (the zip crate keeps only
/// one of them).
fn find_duplicate_zip_name(archive: &Path, start: u64) -> Option<String> {
    let mut reader = BufReader::new(File::open(archive).ok()?);
    reader.seek(SeekFrom::Start(start)).ok()?;
    let mut seen = std::collections::HashSet::new();
    let mut header = [0u8; 46];
    for _ in 0..10_000_000u32 {
        reader.read_exact(&mut header).ok()?;
        if header[..4] != [0x50, 0x4b, 0x01, 0x02] {
            return None;
        }
        let name_len = usize::from(u16::from_le_bytes([header[28], header[29]]));
        let extra_len = i64::from(u16::from_le_bytes([header[30], header[31]]));
        let comment_len = i64::from(u16::from_le_bytes([header[32], header[33]]));
        let mut name = vec![0u8; name_len];
        reader.read_exact(&mut name).ok()?;
        reader
            .seek(SeekFrom::Current(extra_len + comment_len))
            .ok()?;
        if !seen.insert(name.clone()) {
            return Some(String::from_utf8_lossy(&name).into_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::unix_time;

    #[test]
    fn civil_to_unix() {
        assert_eq!(unix_time(1970, 1, 1, 0, 0, 0), 0);
        assert_eq!(unix_time(2000, 3, 1, 0, 0, 0), 951_868_800);
        assert_eq!(unix_time(2024, 2, 29, 12, 34, 56), 1_709_210_096);
        assert_eq!(unix_time(1980, 1, 1, 0, 0, 0), 315_532_800);
    }
}
