//! The one place where extraction writes: a target directory that nothing escapes.
//!
//! Every path is walked component by component from a directory file descriptor with
//! `O_NOFOLLOW`, so no symlink (from the archive or already in the target) is ever followed;
//! files are created with `O_CREAT|O_EXCL|O_NOFOLLOW` after unlinking whatever was there (so
//! neither a symlink nor a hard link in the target can redirect a write); symlink targets are
//! resolved against the target's current state, through existing symlinks, and refused if
//! they would leave it.

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::{Limits, Stats};
use crate::error::ArchiveError;

/// The deepest entry path accepted (each level holds a directory descriptor while in use).
const MAX_DEPTH: usize = 256;
/// The longest symlink target accepted (Linux's `PATH_MAX` less the NUL).
const MAX_LINK: usize = 4095;
/// How many symlinks one symlink target may be resolved through (Linux's `MAXSYMLINKS`).
const MAX_EXPANSIONS: usize = 40;
/// Size of the copy buffer.
const BUF_SIZE: usize = 256 * 1024;
/// Files up to this size are read into memory and written by worker threads, so that file
/// creation (which waits on the filesystem more than it computes) overlaps.
const SMALL_FILE: usize = 256 * 1024;
/// How many small files may wait for a writer.
const QUEUE: usize = 256;

/// A validated entry name.
pub(crate) struct Name {
    /// The name as stored, for messages.
    pub(crate) display: String,
    comps: Vec<OsString>,
    key: Vec<u8>,
}

impl Name {
    fn leaf(&self) -> &OsStr {
        // begin() never returns a Name without components.
        self.comps.last().map_or(OsStr::new("."), |c| c.as_os_str())
    }

    fn parents(&self) -> &[OsString] {
        &self.comps[..self.comps.len().saturating_sub(1)]
    }
}

fn join(comps: &[impl AsRef<OsStr>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c.as_ref().as_bytes());
    }
    out
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(target_os = "linux")]
const DIR_WALK: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW);
#[cfg(not(target_os = "linux"))]
const DIR_WALK: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW);

fn open_dir(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlags) -> Result<OwnedFd, Errno> {
    rfs::openat(dir, name, flags | OFlags::CLOEXEC, Mode::empty())
}

fn file_type_at(dir: BorrowedFd<'_>, name: impl rustix::path::Arg) -> Result<FileType, Errno> {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map(|st| FileType::from_raw_mode(st.st_mode))
}

fn times(mtime: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    }
}

/// The extraction target.
pub(crate) struct Sink {
    archive: PathBuf,
    target: PathBuf,
    root: Arc<OwnedFd>,
    /// The open directories of the current parent chain below `root`.
    stack: Vec<(OsString, Arc<OwnedFd>)>,
    /// Keys of the file entries so far (no directory may be created in their place, even
    /// before a writer thread has created them).
    files: HashSet<Vec<u8>>,
    workers: Option<Workers>,
    /// Entry keys seen so far (duplicates are refused).
    seen: HashSet<Vec<u8>>,
    /// Symlinks (relative paths) that a symlink entry's target was resolved through.
    traversed: HashSet<Vec<u8>>,
    /// Directory entries, whose mode and mtime are applied at the end.
    dirs: Vec<(Vec<OsString>, u32, i64)>,
    limits: Limits,
    entries: u64,
    pub(crate) stats: Stats,
    buf: Vec<u8>,
}

impl Sink {
    /// Opens (creating it if missing) the target directory. `archive` names the archive in
    /// read errors.
    pub(crate) fn new(archive: &Path, target: &Path, limits: Limits) -> Result<Sink, ArchiveError> {
        std::fs::create_dir_all(target)
            .map_err(|e| ArchiveError::io("creating target directory", target, e))?;
        let root = rfs::openat(
            rfs::CWD,
            target,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ArchiveError::io("opening target directory", target, e.into()))?;
        Ok(Sink {
            archive: archive.to_path_buf(),
            target: target.to_path_buf(),
            root: Arc::new(root),
            stack: Vec::new(),
            files: HashSet::new(),
            workers: None,
            seen: HashSet::new(),
            traversed: HashSet::new(),
            dirs: Vec::new(),
            limits,
            entries: 0,
            stats: Stats::default(),
            buf: Vec::new(),
        })
    }

    fn io(&self, op: &'static str, rel: &[u8], e: Errno) -> ArchiveError {
        ArchiveError::io(op, self.target.join(OsStr::from_bytes(rel)), e.into())
    }

    /// A read error from the archive while reading `entry`.
    pub(crate) fn corrupt(&self, entry: &str, e: impl std::fmt::Display) -> ArchiveError {
        ArchiveError::Corrupt {
            path: self.archive.clone(),
            detail: format!("entry {entry:?}: {e}"),
        }
    }

    /// Counts an entry and validates its name. `Ok(None)` for a directory entry naming the
    /// target itself (`./`), which is skipped.
    pub(crate) fn begin(&mut self, raw: &[u8], is_dir: bool) -> Result<Option<Name>, ArchiveError> {
        let display = lossy(raw);
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                entry: display,
                limit: self.limits.max_entries,
            });
        }
        if raw.is_empty() {
            return Err(ArchiveError::InvalidName {
                entry: display,
                reason: "empty name",
            });
        }
        if raw.contains(&0) || display.chars().any(char::is_control) {
            return Err(ArchiveError::InvalidName {
                entry: display,
                reason: "control character",
            });
        }
        if raw.starts_with(b"/") {
            return Err(ArchiveError::AbsolutePath { entry: display });
        }
        let mut comps = Vec::new();
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => return Err(ArchiveError::PathTraversal { entry: display }),
                c => comps.push(OsString::from_vec(c.to_vec())),
            }
        }
        if comps.is_empty() {
            if is_dir {
                return Ok(None);
            }
            return Err(ArchiveError::InvalidName {
                entry: display,
                reason: "names the extraction directory itself",
            });
        }
        if comps.len() > MAX_DEPTH {
            return Err(ArchiveError::InvalidName {
                entry: display,
                reason: "too deep",
            });
        }
        let key = join(&comps);
        if !self.seen.insert(key.clone()) {
            return Err(ArchiveError::DuplicateEntry { entry: display });
        }
        if self.traversed.contains(&key) {
            return Err(ArchiveError::SymlinkConflict { entry: display });
        }
        Ok(Some(Name {
            display,
            comps,
            key,
        }))
    }

    fn current(&self) -> BorrowedFd<'_> {
        self.stack
            .last()
            .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd())
    }

    /// Makes the directory chain of `name`'s parents current, creating missing directories and
    /// refusing symlinks and non-directories on the way.
    fn open_parents(&mut self, name: &Name) -> Result<(), ArchiveError> {
        let parents = name.parents();
        let mut common = 0;
        while common < self.stack.len()
            && common < parents.len()
            && self.stack[common].0 == parents[common]
        {
            common += 1;
        }
        self.stack.truncate(common);
        for i in common..parents.len() {
            let comp = &parents[i];
            if self.files.contains(&join(&parents[..=i])) {
                return Err(ArchiveError::NotADirectory {
                    entry: name.display.clone(),
                    parent: lossy(&join(&parents[..=i])),
                });
            }
            let dir = self.current();
            let fd = match open_dir(dir, comp, DIR_WALK) {
                Ok(fd) => Ok(fd),
                Err(Errno::NOENT) => {
                    match rfs::mkdirat(dir, comp.as_os_str(), Mode::from_raw_mode(0o777)) {
                        Ok(()) | Err(Errno::EXIST) => open_dir(dir, comp, DIR_WALK),
                        Err(e) => {
                            return Err(self.io("creating directory", &join(&parents[..=i]), e));
                        }
                    }
                }
                Err(e) => Err(e),
            };
            let fd = match fd {
                Ok(fd) => fd,
                Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                    let path = join(&parents[..=i]);
                    return Err(match file_type_at(self.current(), comp.as_os_str()) {
                        Ok(FileType::Symlink) => ArchiveError::ThroughSymlink {
                            entry: name.display.clone(),
                            symlink: lossy(&path),
                        },
                        Ok(_) => ArchiveError::NotADirectory {
                            entry: name.display.clone(),
                            parent: lossy(&path),
                        },
                        Err(_) => self.io("opening directory", &path, e),
                    });
                }
                Err(e) => return Err(self.io("opening directory", &join(&parents[..=i]), e)),
            };
            self.stack.push((comp.clone(), Arc::new(fd)));
        }
        Ok(())
    }

    /// Writes a regular file with the content of `data`: small files are read here and
    /// written by a worker thread, big ones are streamed here.
    pub(crate) fn file(
        &mut self,
        name: &Name,
        mode: u32,
        mtime: i64,
        data: &mut dyn Read,
    ) -> Result<(), ArchiveError> {
        self.open_parents(name)?;
        self.files.insert(name.key.clone());
        if let Some(workers) = &self.workers {
            workers.check()?;
        }
        let mut head = Vec::new();
        data.take(SMALL_FILE as u64 + 1)
            .read_to_end(&mut head)
            .map_err(|e| self.corrupt(&name.display, e))?;
        self.count(name, head.len())?;
        let dir = self
            .stack
            .last()
            .map_or_else(|| Arc::clone(&self.root), |(_, fd)| Arc::clone(fd));
        let job = Job {
            dir,
            leaf: name.leaf().to_os_string(),
            key: name.key.clone(),
            display: name.display.clone(),
            mode,
            mtime,
            data: head,
        };
        if job.data.len() <= SMALL_FILE {
            self.stats.files += 1;
            let target = self.target.clone();
            return self
                .workers
                .get_or_insert_with(|| Workers::start(target))
                .send(job);
        }
        let mut file = create_file(&self.target, &job)?;
        file.write_all(&job.data).map_err(|e| {
            ArchiveError::io("writing", self.target.join(OsStr::from_bytes(&job.key)), e)
        })?;
        let mut buf = std::mem::take(&mut self.buf);
        if buf.len() < BUF_SIZE {
            buf.resize(BUF_SIZE, 0);
        }
        let result = self.copy(name, data, &mut file, &mut buf);
        self.buf = buf;
        result?;
        finish_file(&self.target, &job, &file)?;
        self.stats.files += 1;
        Ok(())
    }

    /// Counts `n` more bytes of content against the limit.
    fn count(&mut self, name: &Name, n: usize) -> Result<(), ArchiveError> {
        let total = self.stats.bytes.saturating_add(n as u64);
        if total > self.limits.max_bytes {
            return Err(ArchiveError::TooLarge {
                entry: name.display.clone(),
                limit: self.limits.max_bytes,
            });
        }
        self.stats.bytes = total;
        Ok(())
    }

    fn copy(
        &mut self,
        name: &Name,
        data: &mut dyn Read,
        file: &mut File,
        buf: &mut [u8],
    ) -> Result<(), ArchiveError> {
        loop {
            let n = match data.read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.corrupt(&name.display, e)),
            };
            self.count(name, n)?;
            file.write_all(&buf[..n]).map_err(|e| {
                ArchiveError::io("writing", self.target.join(OsStr::from_bytes(&name.key)), e)
            })?;
        }
    }

    /// Creates (or keeps) a directory; its mode and mtime are applied by [`Sink::finish`].
    pub(crate) fn dir(&mut self, name: &Name, mode: u32, mtime: i64) -> Result<(), ArchiveError> {
        self.open_parents(name)?;
        let dir = self.current();
        let mkdir = || rfs::mkdirat(dir, name.leaf(), Mode::from_raw_mode(0o777));
        match mkdir() {
            Ok(()) => {}
            Err(Errno::EXIST) => match file_type_at(dir, name.leaf()) {
                Ok(FileType::Directory) => {}
                Ok(_) => {
                    rfs::unlinkat(dir, name.leaf(), AtFlags::empty())
                        .map_err(|e| self.io("removing", &name.key, e))?;
                    mkdir().map_err(|e| self.io("creating directory", &name.key, e))?;
                }
                Err(e) => return Err(self.io("inspecting", &name.key, e)),
            },
            Err(e) => return Err(self.io("creating directory", &name.key, e)),
        }
        self.dirs.push((name.comps.clone(), mode, mtime));
        self.stats.dirs += 1;
        Ok(())
    }

    /// Creates a symlink after checking that its target stays inside the extraction directory.
    pub(crate) fn symlink(
        &mut self,
        name: &Name,
        target: &[u8],
        mtime: i64,
    ) -> Result<(), ArchiveError> {
        if target.is_empty() || target.contains(&0) {
            return Err(ArchiveError::InvalidName {
                entry: name.display.clone(),
                reason: "empty symlink target or NUL in it",
            });
        }
        if target.len() > MAX_LINK {
            return Err(ArchiveError::InvalidName {
                entry: name.display.clone(),
                reason: "symlink target too long",
            });
        }
        self.open_parents(name)?;
        if !self.resolves_inside(name, target)? {
            return Err(ArchiveError::SymlinkEscape {
                entry: name.display.clone(),
                target: lossy(target),
            });
        }
        let dir = self.current();
        let link = || rfs::symlinkat(OsStr::from_bytes(target), dir, name.leaf());
        match link() {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                remove_existing(&self.target, dir, name.leaf(), &name.key, &name.display)?;
                link().map_err(|e| self.io("creating symlink", &name.key, e))?;
            }
            Err(e) => return Err(self.io("creating symlink", &name.key, e)),
        }
        // Some filesystems refuse times on symlinks; that is not worth failing for.
        let _ = rfs::utimensat(
            self.current(),
            name.leaf(),
            &times(mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        );
        self.stats.symlinks += 1;
        Ok(())
    }

    /// Resolves `target` (relative to the symlink's parent) against the extraction directory as
    /// it is now, through existing symlinks. Inside means every `..` stays within the
    /// directory, no absolute target is met, and no `..` follows a component that does not
    /// exist yet (something created later could redirect it).
    fn resolves_inside(&mut self, name: &Name, target: &[u8]) -> Result<bool, ArchiveError> {
        if target.starts_with(b"/") {
            return Ok(false);
        }
        let mut stack: Vec<Vec<u8>> = name
            .parents()
            .iter()
            .map(|c| c.as_bytes().to_vec())
            .collect();
        let mut queue: VecDeque<Vec<u8>> =
            target.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
        let mut missing = false;
        let mut expansions = 0;
        let mut steps = 0;
        while let Some(c) = queue.pop_front() {
            steps += 1;
            if steps > 16 * 1024 {
                return Ok(false);
            }
            match c.as_slice() {
                b"" | b"." => {}
                b".." => {
                    if missing || stack.pop().is_none() {
                        return Ok(false);
                    }
                }
                _ if missing => stack.push(c),
                _ => {
                    let mut path = join(
                        &stack
                            .iter()
                            .map(|s| OsStr::from_bytes(s))
                            .collect::<Vec<_>>(),
                    );
                    if !path.is_empty() {
                        path.push(b'/');
                    }
                    path.extend_from_slice(&c);
                    if self.files.contains(&path) {
                        // A file of this archive (maybe still being written): nothing below.
                        missing = true;
                        stack.push(c);
                        continue;
                    }
                    match file_type_at(self.root.as_fd(), OsStr::from_bytes(&path)) {
                        Ok(FileType::Directory) => stack.push(c),
                        Ok(FileType::Symlink) => {
                            expansions += 1;
                            if expansions > MAX_EXPANSIONS {
                                return Ok(false);
                            }
                            let link = rfs::readlinkat(
                                self.root.as_fd(),
                                OsStr::from_bytes(&path),
                                Vec::new(),
                            )
                            .map_err(|e| self.io("reading symlink", &path, e))?;
                            let link = link.to_bytes();
                            self.traversed.insert(path.clone());
                            if link.starts_with(b"/") {
                                return Ok(false);
                            }
                            for part in link.rsplit(|&b| b == b'/') {
                                queue.push_front(part.to_vec());
                            }
                        }
                        Ok(_) | Err(Errno::NOENT | Errno::NOTDIR) => {
                            missing = true;
                            stack.push(c);
                        }
                        Err(e) => return Err(self.io("inspecting", &path, e)),
                    }
                }
            }
        }
        Ok(true)
    }

    /// Applies directory modes and mtimes (deepest first) and returns the statistics.
    pub(crate) fn finish(mut self) -> Result<Stats, ArchiveError> {
        if let Some(workers) = self.workers.take() {
            workers.finish()?;
        }
        self.stack.clear();
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|(comps, _, _)| std::cmp::Reverse(comps.len()));
        for (comps, mode, mtime) in dirs {
            let key = join(&comps);
            let mut fd: Option<OwnedFd> = None;
            for (i, comp) in comps.iter().enumerate() {
                let flags = if i + 1 == comps.len() {
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW
                } else {
                    DIR_WALK
                };
                let dir = fd.as_ref().map_or(self.root.as_fd(), |f| f.as_fd());
                fd = Some(
                    open_dir(dir, comp, flags)
                        .map_err(|e| self.io("opening directory", &key, e))?,
                );
            }
            if let Some(fd) = fd {
                rfs::fchmod(&fd, Mode::from_raw_mode(mode & 0o1777))
                    .map_err(|e| self.io("setting mode of", &key, e))?;
                rfs::futimens(&fd, &times(mtime))
                    .map_err(|e| self.io("setting mtime of", &key, e))?;
            }
        }
        Ok(self.stats)
    }
}

/// A small file for a writer thread.
struct Job {
    dir: Arc<OwnedFd>,
    leaf: OsString,
    key: Vec<u8>,
    display: String,
    mode: u32,
    mtime: i64,
    data: Vec<u8>,
}

/// Removes a non-directory at `leaf` in `dir` (never a directory: that is an error).
fn remove_existing(
    target: &Path,
    dir: BorrowedFd<'_>,
    leaf: &OsStr,
    key: &[u8],
    display: &str,
) -> Result<(), ArchiveError> {
    let io = |op, e: Errno| ArchiveError::io(op, target.join(OsStr::from_bytes(key)), e.into());
    match file_type_at(dir, leaf) {
        Ok(FileType::Directory) => Err(ArchiveError::DirectoryInTheWay {
            entry: display.to_string(),
        }),
        Ok(_) => match rfs::unlinkat(dir, leaf, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(io("removing", e)),
        },
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(io("inspecting", e)),
    }
}

/// Creates the job's file, replacing (never following) whatever non-directory was there.
fn create_file(target: &Path, job: &Job) -> Result<File, ArchiveError> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = job.dir.as_fd();
    let create = || rfs::openat(dir, job.leaf.as_os_str(), flags, Mode::from_raw_mode(0o600));
    let io = |e: Errno| {
        ArchiveError::io(
            "creating",
            target.join(OsStr::from_bytes(&job.key)),
            e.into(),
        )
    };
    let fd = match create() {
        Ok(fd) => fd,
        Err(Errno::EXIST) => {
            remove_existing(target, dir, &job.leaf, &job.key, &job.display)?;
            create().map_err(io)?
        }
        Err(e) => return Err(io(e)),
    };
    Ok(File::from(fd))
}

/// Applies the job's mode and mtime to its written file.
fn finish_file(target: &Path, job: &Job, file: &File) -> Result<(), ArchiveError> {
    let io =
        |op, e: Errno| ArchiveError::io(op, target.join(OsStr::from_bytes(&job.key)), e.into());
    rfs::fchmod(file, Mode::from_raw_mode(job.mode & 0o777))
        .map_err(|e| io("setting mode of", e))?;
    rfs::futimens(file, &times(job.mtime)).map_err(|e| io("setting mtime of", e))
}

fn write_job(target: &Path, job: &Job) -> Result<(), ArchiveError> {
    let mut file = create_file(target, job)?;
    file.write_all(&job.data)
        .map_err(|e| ArchiveError::io("writing", target.join(OsStr::from_bytes(&job.key)), e))?;
    finish_file(target, job, &file)
}

/// Writer threads for small files. The first error is kept and reported by the next
/// [`Workers::check`] (or [`Workers::finish`]); later jobs are then dropped.
struct Workers {
    tx: Option<mpsc::SyncSender<Job>>,
    handles: Vec<JoinHandle<()>>,
    error: Arc<Mutex<Option<ArchiveError>>>,
}

impl Workers {
    fn start(target: PathBuf) -> Workers {
        let n = std::thread::available_parallelism()
            .map_or(2, |n| n.get() * 2)
            .clamp(2, 8);
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let error: Arc<Mutex<Option<ArchiveError>>> = Arc::new(Mutex::new(None));
        let target = Arc::new(target);
        let handles = (0..n)
            .map(|_| {
                let (rx, error, target) =
                    (Arc::clone(&rx), Arc::clone(&error), Arc::clone(&target));
                std::thread::spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let failed = error.lock().map_or(true, |e| e.is_some());
                        if failed {
                            continue;
                        }
                        if let Err(e) = write_job(&target, &job)
                            && let Ok(mut slot) = error.lock()
                            && slot.is_none()
                        {
                            *slot = Some(e);
                        }
                    }
                })
            })
            .collect();
        Workers {
            tx: Some(tx),
            handles,
            error,
        }
    }

    fn check(&self) -> Result<(), ArchiveError> {
        match self.error.lock() {
            Ok(mut slot) => slot.take().map_or(Ok(()), Err),
            Err(_) => Err(ArchiveError::io(
                "writing",
                "",
                io::Error::other("a writer thread panicked"),
            )),
        }
    }

    fn send(&self, job: Job) -> Result<(), ArchiveError> {
        self.check()?;
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if sent {
            Ok(())
        } else {
            Err(ArchiveError::io(
                "writing",
                "",
                io::Error::other("the writer threads stopped"),
            ))
        }
    }

    /// Waits for every queued file to be written.
    fn finish(mut self) -> Result<(), ArchiveError> {
        self.join();
        self.check()
    }

    fn join(&mut self) {
        self.tx = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.join();
    }
}
