//! Archive creation: zip, tar.zst, gzip and raw.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use zip::write::{FullFileOptions, PreparedZipFile, SimpleFileOptions, ZipFileBuilder};

use super::{CreateOptions, Format, Stats};
use crate::error::ArchiveError;
use crate::select::{EntryKind, Selection};

/// Files up to this size are read (tar) or compressed (zip) by worker threads ahead of the
/// writer; bigger ones are streamed by the writer itself, so memory stays bounded.
const SMALL_FILE: u64 = 1 << 20;
/// How many entries the workers may run ahead of the writer.
const WINDOW: usize = 256;
/// Buffer between the writer and the output file / the compressor.
const IO_BUF: usize = 1 << 20;

/// Creates `out` from the `selection` of paths under `root`. Blocking.
///
/// `out` is written atomically: to a temporary file in the same directory (created if
/// missing), renamed into place once complete. Paths that vanished since the selection are
/// skipped with a warning (as GitLab Runner does); a selected path that changed into a device,
/// fifo or socket is skipped too.
///
/// Errors: I/O errors naming the path; zip needs UTF-8 names and symlink targets
/// ([`ArchiveError::Unstorable`]); [`Format::Raw`] needs exactly one regular file and
/// [`Format::Gzip`] at least one ([`ArchiveError::WrongFileCount`]); both refuse symlinks
/// ([`ArchiveError::NotARegularFile`]).
pub fn create(
    root: &Path,
    selection: &Selection,
    out: &Path,
    opts: &CreateOptions,
) -> Result<Stats, ArchiveError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).map_err(|e| ArchiveError::io("creating directory", parent, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".oar-archive-")
        .suffix(".part")
        .tempfile_in(parent)
        .map_err(|e| ArchiveError::io("creating a temporary file in", parent, e))?;
    let stats = {
        let file = tmp.as_file_mut();
        match opts.format {
            Format::Zip => write_zip(root, selection, file, opts)?,
            Format::TarZst => write_tar_zst(root, selection, file, opts)?,
            Format::Gzip => write_gzip(root, selection, file)?,
            Format::Raw => write_raw(root, selection, file)?,
        }
    };
    let tmp_path = tmp.path().to_path_buf();
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(|e| ArchiveError::io("setting mode of", &tmp_path, e))?;
    tmp.persist(out)
        .map_err(|e| ArchiveError::io("renaming into place", out, e.error))?;
    Ok(stats)
}

/// Metadata stored for every entry.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    mtime: i64,
    uid: u64,
    gid: u64,
}

impl Meta {
    fn of(m: &fs::Metadata) -> Meta {
        Meta {
            mode: m.mode() & 0o7777,
            mtime: m.mtime(),
            uid: u64::from(m.uid()),
            gid: u64::from(m.gid()),
        }
    }
}

/// An entry made ready by a worker.
enum Ready {
    /// Vanished or turned special since the selection: skipped.
    Skip,
    Dir(Meta),
    Symlink(Meta, PathBuf),
    /// A small file's content, read ahead.
    Data(Meta, Vec<u8>),
    /// A big file, opened, for the writer to stream.
    Big(Meta, File, u64),
    /// A small file compressed ahead for zip.
    Zipped(PreparedZipFile, u64),
}

/// Looks at one selected path: `Skip` if it is gone or special.
fn inspect(root: &Path, rel: &Path) -> Result<Option<(fs::Metadata, PathBuf)>, ArchiveError> {
    let path = root.join(rel);
    match fs::symlink_metadata(&path) {
        Ok(m) => {
            let ft = m.file_type();
            if ft.is_file() || ft.is_dir() || ft.is_symlink() {
                Ok(Some((m, path)))
            } else {
                tracing::warn!(path = %path.display(), "not a regular file, directory or symlink: ignored");
                Ok(None)
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), "file ignored: it no longer exists");
            Ok(None)
        }
        Err(e) => Err(ArchiveError::io("inspecting", &path, e)),
    }
}

/// Prepares an entry for tar: small files are read whole.
fn prepare_tar(root: &Path, rel: &Path) -> Result<Ready, ArchiveError> {
    let Some((meta, path)) = inspect(root, rel)? else {
        return Ok(Ready::Skip);
    };
    let ft = meta.file_type();
    if ft.is_dir() {
        return Ok(Ready::Dir(Meta::of(&meta)));
    }
    if ft.is_symlink() {
        let target =
            fs::read_link(&path).map_err(|e| ArchiveError::io("reading symlink", &path, e))?;
        return Ok(Ready::Symlink(Meta::of(&meta), target));
    }
    let (file, meta) = match open_file(&path)? {
        Some(x) => x,
        None => return Ok(Ready::Skip),
    };
    let len = meta.len();
    if len > SMALL_FILE {
        return Ok(Ready::Big(Meta::of(&meta), file, len));
    }
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    (&file)
        .take(len)
        .read_to_end(&mut data)
        .map_err(|e| ArchiveError::io("reading", &path, e))?;
    // A file that shrank meanwhile is padded, as the header already says `len`.
    data.resize(usize::try_from(len).unwrap_or(data.len()), 0);
    Ok(Ready::Data(Meta::of(&meta), data))
}

fn open_file(path: &Path) -> Result<Option<(File, fs::Metadata)>, ArchiveError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), "file ignored: it no longer exists");
            return Ok(None);
        }
        Err(e) => return Err(ArchiveError::io("opening", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| ArchiveError::io("inspecting", path, e))?;
    Ok(Some((file, meta)))
}

/// Runs `prepare` over the entries on `threads` workers, at most [`WINDOW`] ahead, and hands
/// the results to `write` in order.
fn pipeline<P, W>(
    root: &Path,
    selection: &Selection,
    threads: u32,
    prepare: P,
    mut write: W,
) -> Result<(), ArchiveError>
where
    P: Fn(&Path, &Path) -> Result<Ready, ArchiveError> + Sync,
    W: FnMut(&Path, Ready) -> Result<(), ArchiveError>,
{
    let threads = usize::try_from(threads).unwrap_or(1).clamp(1, 64);
    type Job = (usize, mpsc::SyncSender<Result<Ready, ArchiveError>>);
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let entries = &selection.entries;
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let prepare = &prepare;
            scope.spawn(move || {
                loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((index, reply)) = job else { return };
                    let result = prepare(root, &entries[index].rel);
                    // The writer may have stopped on an error: nobody to tell then.
                    let _ = reply.send(result);
                }
            });
        }
        let mut pending: VecDeque<(usize, mpsc::Receiver<Result<Ready, ArchiveError>>)> =
            VecDeque::new();
        let mut next = 0;
        let result = loop {
            while next < entries.len() && pending.len() < WINDOW {
                let (tx, rx) = mpsc::sync_channel(1);
                if job_tx.send((next, tx)).is_err() {
                    break;
                }
                pending.push_back((next, rx));
                next += 1;
            }
            let Some((index, rx)) = pending.pop_front() else {
                break Ok(());
            };
            let rel = &entries[index].rel;
            let ready = match rx.recv() {
                Ok(r) => r,
                Err(_) => Err(ArchiveError::io(
                    "preparing",
                    rel,
                    io::Error::other("worker thread stopped"),
                )),
            };
            if let Err(e) = ready.and_then(|r| write(rel, r)) {
                break Err(e);
            }
        };
        drop(job_tx);
        result
    })
}

fn write_tar_zst(
    root: &Path,
    selection: &Selection,
    file: &mut File,
    opts: &CreateOptions,
) -> Result<Stats, ArchiveError> {
    let out_err = |e: io::Error| ArchiveError::io("writing", "archive", e);
    let mut encoder =
        zstd::stream::write::Encoder::new(BufWriter::with_capacity(IO_BUF, file), opts.zstd_level)
            .map_err(out_err)?;
    encoder.multithread(opts.threads.max(1)).map_err(out_err)?;
    encoder.include_checksum(true).map_err(out_err)?;
    let mut builder = tar::Builder::new(BufWriter::with_capacity(IO_BUF, encoder));
    builder.mode(tar::HeaderMode::Complete);
    builder.follow_symlinks(false);
    let mut stats = Stats::default();
    // Reading files ahead uses few cycles; one reader per core keeps the disk busy.
    pipeline(
        root,
        selection,
        opts.threads.max(2),
        prepare_tar,
        |rel, ready| {
            let path_err = |e: io::Error| ArchiveError::io("archiving", root.join(rel), e);
            let header = |meta: &Meta, kind: tar::EntryType, size: u64| {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(kind);
                h.set_mode(meta.mode);
                h.set_mtime(u64::try_from(meta.mtime).unwrap_or(0));
                h.set_uid(meta.uid);
                h.set_gid(meta.gid);
                h.set_size(size);
                h
            };
            match ready {
                Ready::Skip | Ready::Zipped(..) => {}
                Ready::Dir(meta) => {
                    let mut h = header(&meta, tar::EntryType::Directory, 0);
                    builder
                        .append_data(&mut h, rel, io::empty())
                        .map_err(path_err)?;
                    stats.dirs += 1;
                }
                Ready::Symlink(meta, target) => {
                    let mut h = header(&meta, tar::EntryType::Symlink, 0);
                    builder
                        .append_link(&mut h, rel, &target)
                        .map_err(path_err)?;
                    stats.symlinks += 1;
                }
                Ready::Data(meta, data) => {
                    let mut h = header(&meta, tar::EntryType::Regular, data.len() as u64);
                    builder
                        .append_data(&mut h, rel, data.as_slice())
                        .map_err(path_err)?;
                    stats.files += 1;
                    stats.bytes += data.len() as u64;
                }
                Ready::Big(meta, file, len) => {
                    let mut h = header(&meta, tar::EntryType::Regular, len);
                    let reader = io::BufReader::with_capacity(IO_BUF, Exact::new(file, len));
                    builder.append_data(&mut h, rel, reader).map_err(path_err)?;
                    stats.files += 1;
                    stats.bytes += len;
                }
            }
            Ok(())
        },
    )?;
    let buffered = builder.into_inner().map_err(out_err)?;
    let encoder = buffered.into_inner().map_err(|e| out_err(e.into_error()))?;
    let mut inner = encoder.finish().map_err(out_err)?;
    inner.flush().map_err(out_err)?;
    Ok(stats)
}

/// Reads exactly `len` bytes of a file: cut if it grew, zero-padded if it shrank (a tar header
/// already promised `len`).
struct Exact {
    file: io::Take<File>,
    left: u64,
}

impl Exact {
    fn new(file: File, len: u64) -> Exact {
        Exact {
            file: file.take(len),
            left: len,
        }
    }
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let mut n = self.file.read(buf)?;
        if n == 0 {
            n = buf
                .len()
                .min(usize::try_from(self.left).unwrap_or(usize::MAX));
            buf[..n].fill(0);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The zip name of a relative path (UTF-8 required).
fn zip_name(rel: &Path) -> Result<&str, ArchiveError> {
    rel.to_str().ok_or_else(|| ArchiveError::Unstorable {
        path: rel.to_path_buf(),
        reason: "zip entry names must be UTF-8",
    })
}

/// Civil UTC date and time of a Unix time.
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

fn dos_time(mtime: i64) -> zip::DateTime {
    let (y, m, d, hh, mm, ss) = civil(mtime);
    let dt = u16::try_from(y).ok().and_then(|y| {
        zip::DateTime::from_date_and_time(y, m as u8, d as u8, hh as u8, mm as u8, ss as u8).ok()
    });
    match dt {
        Some(dt) => dt,
        None if y < 1980 => zip::DateTime::default(),
        None => zip::DateTime::from_date_and_time(2107, 12, 31, 23, 59, 58).unwrap_or_default(),
    }
}

/// Zip options as GitLab Runner writes them: unix mode, DOS time and an extended timestamp.
fn zip_options(
    meta: &Meta,
    large: bool,
) -> Result<FullFileOptions<'static, 'static>, ArchiveError> {
    let mtime = u32::try_from(meta.mtime.max(0)).unwrap_or(u32::MAX);
    SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(meta.mode)
        .last_modified_time(dos_time(meta.mtime))
        .large_file(large)
        .with_extended_timestamp(Some(mtime), None, None)
        .map_err(|e| ArchiveError::io("preparing zip entry", "", io::Error::other(e)))
}

/// Prepares an entry for zip: small files are compressed whole.
fn prepare_zip(root: &Path, rel: &Path) -> Result<Ready, ArchiveError> {
    let Some((meta, path)) = inspect(root, rel)? else {
        return Ok(Ready::Skip);
    };
    let ft = meta.file_type();
    if ft.is_dir() {
        return Ok(Ready::Dir(Meta::of(&meta)));
    }
    if ft.is_symlink() {
        let target =
            fs::read_link(&path).map_err(|e| ArchiveError::io("reading symlink", &path, e))?;
        return Ok(Ready::Symlink(Meta::of(&meta), target));
    }
    let name = zip_name(rel)?;
    let (file, meta) = match open_file(&path)? {
        Some(x) => x,
        None => return Ok(Ready::Skip),
    };
    let len = meta.len();
    let meta = Meta::of(&meta);
    if len > SMALL_FILE {
        return Ok(Ready::Big(meta, file, len));
    }
    let zip_err =
        |e: zip::result::ZipError| ArchiveError::io("compressing", &path, io::Error::other(e));
    let mut builder = ZipFileBuilder::new(name, zip_options(&meta, false)?).map_err(zip_err)?;
    let copied = io::copy(&mut (&file).take(len), &mut builder)
        .map_err(|e| ArchiveError::io("reading", &path, e))?;
    let prepared = builder.finish().map_err(zip_err)?;
    Ok(Ready::Zipped(prepared, copied))
}

fn write_zip(
    root: &Path,
    selection: &Selection,
    file: &mut File,
    opts: &CreateOptions,
) -> Result<Stats, ArchiveError> {
    let out_err =
        |e: zip::result::ZipError| ArchiveError::io("writing", "archive", io::Error::other(e));
    let mut zip = zip::ZipWriter::new(BufWriter::with_capacity(IO_BUF, file));
    let mut stats = Stats::default();
    pipeline(root, selection, opts.threads, prepare_zip, |rel, ready| {
        let path_err = |e: zip::result::ZipError| {
            ArchiveError::io("archiving", root.join(rel), io::Error::other(e))
        };
        match ready {
            Ready::Skip => {}
            Ready::Dir(meta) => {
                let name = format!("{}/", zip_name(rel)?);
                zip.add_directory(name, zip_options(&meta, false)?)
                    .map_err(path_err)?;
                stats.dirs += 1;
            }
            Ready::Symlink(meta, target) => {
                let target = target.to_str().ok_or_else(|| ArchiveError::Unstorable {
                    path: rel.to_path_buf(),
                    reason: "zip symlink targets must be UTF-8",
                })?;
                let mut meta = meta;
                meta.mode = 0o777;
                zip.add_symlink(zip_name(rel)?, target, zip_options(&meta, false)?)
                    .map_err(path_err)?;
                stats.symlinks += 1;
            }
            Ready::Zipped(prepared, len) => {
                zip.add_prepared_file(prepared).map_err(path_err)?;
                stats.files += 1;
                stats.bytes += len;
            }
            Ready::Big(meta, file, len) => {
                zip.start_file(zip_name(rel)?, zip_options(&meta, len >= 0xFFFF_FFFF)?)
                    .map_err(path_err)?;
                let mut reader = io::BufReader::with_capacity(IO_BUF, (&file).take(len));
                let copied = io::copy(&mut reader, &mut zip)
                    .map_err(|e| ArchiveError::io("archiving", root.join(rel), e))?;
                stats.files += 1;
                stats.bytes += copied;
            }
            Ready::Data(..) => {}
        }
        Ok(())
    })?;
    let mut inner = zip.finish().map_err(out_err)?;
    inner
        .flush()
        .map_err(|e| ArchiveError::io("writing", "archive", e))?;
    Ok(stats)
}

/// The regular files of a selection for gzip/raw (directories are skipped; anything else is an
/// error).
fn regular_files(selection: &Selection) -> Result<Vec<&Path>, ArchiveError> {
    let mut files = Vec::new();
    for e in &selection.entries {
        match e.kind {
            EntryKind::File => files.push(e.rel.as_path()),
            EntryKind::Dir => {}
            EntryKind::Symlink => {
                return Err(ArchiveError::NotARegularFile {
                    path: e.rel.clone(),
                });
            }
        }
    }
    Ok(files)
}

/// GitLab Runner's gzip header names: as is when ASCII without `%`, else `e:` + percent
/// encoding.
fn gzip_header_name(s: &[u8]) -> Vec<u8> {
    if s.iter().all(|&b| b.is_ascii() && b != b'%' && b != 0) {
        return s.to_vec();
    }
    let mut out = b"e:".to_vec();
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-._~$&+:=@".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

fn write_gzip(root: &Path, selection: &Selection, file: &mut File) -> Result<Stats, ArchiveError> {
    let files = regular_files(selection)?;
    if files.is_empty() {
        return Err(ArchiveError::WrongFileCount {
            format: "gzip",
            expected: "at least one regular file",
            found: "none".into(),
        });
    }
    let mut out = BufWriter::with_capacity(IO_BUF, file);
    let mut stats = Stats::default();
    for rel in files {
        let path = root.join(rel);
        let Some((mut input, meta)) = open_file(&path)? else {
            continue;
        };
        if !meta.is_file() {
            return Err(ArchiveError::NotARegularFile {
                path: rel.to_path_buf(),
            });
        }
        let base = rel.file_name().map_or(&[][..], |n| n.as_bytes());
        let mut gz = flate2::GzBuilder::new()
            .filename(gzip_header_name(base))
            .comment(gzip_header_name(rel.as_os_str().as_bytes()))
            .mtime(u32::try_from(meta.mtime().max(0)).unwrap_or(u32::MAX))
            .write(&mut out, flate2::Compression::default());
        let n =
            io::copy(&mut input, &mut gz).map_err(|e| ArchiveError::io("compressing", &path, e))?;
        gz.finish()
            .map_err(|e| ArchiveError::io("writing", "archive", e))?;
        stats.files += 1;
        stats.bytes += n;
    }
    out.flush()
        .map_err(|e| ArchiveError::io("writing", "archive", e))?;
    Ok(stats)
}

fn write_raw(root: &Path, selection: &Selection, file: &mut File) -> Result<Stats, ArchiveError> {
    let files = regular_files(selection)?;
    let [rel] = files.as_slice() else {
        return Err(ArchiveError::WrongFileCount {
            format: "raw",
            expected: "exactly one regular file",
            found: format!("{} files", files.len()),
        });
    };
    let path = root.join(rel);
    let mut input = File::open(&path).map_err(|e| ArchiveError::io("opening", &path, e))?;
    let n = io::copy(&mut input, file).map_err(|e| ArchiveError::io("copying", &path, e))?;
    Ok(Stats {
        files: 1,
        bytes: n,
        ..Stats::default()
    })
}

#[cfg(test)]
mod tests {
    use super::{civil, gzip_header_name};
    use crate::archive::extract::unix_time;

    #[test]
    fn civil_round_trips() {
        for t in [
            0i64,
            951_868_800,
            1_709_210_096,
            315_532_800,
            4_102_444_799,
            86_399,
        ] {
            let (y, m, d, hh, mm, ss) = civil(t);
            assert_eq!(unix_time(y, m, d, hh, mm, ss), t, "{t}");
        }
    }

    #[test]
    fn gzip_names_like_gitlab() {
        assert_eq!(gzip_header_name(b"junit.xml"), b"junit.xml");
        assert_eq!(gzip_header_name(b"100%.txt"), b"e:100%25.txt");
        assert_eq!(gzip_header_name("é".as_bytes()), b"e:%C3%A9");
        assert_eq!(gzip_header_name("a b/é".as_bytes()), b"e:a%20b%2F%C3%A9");
    }
}
