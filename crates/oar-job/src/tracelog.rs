//! The job log: masked, size-limited, checksummed.
//!
//! Every write goes, in order, through the [`Masker`] (phrases, sensitive URL parameters,
//! prefixed tokens), a streaming UTF-8 sanitizer (each byte of an invalid sequence becomes
//! U+FFFD, like Go's `encoding.Replacement`; a sequence split over writes is joined first), and
//! the output limit, into the buffer. `len()`, `read()` and `checksum()` all describe exactly
//! the bytes in the buffer, which are the bytes GitLab receives.
//!
//! Output limit (GitLab Runner's `limitWriter`): when the buffered bytes would reach
//! `limit_bytes`, the data is cut at the last UTF-8 character boundary not past the limit,
//! the notice from [`limit_notice`] is appended once, and everything after that is dropped
//! silently. The notice does not count against the limit (the buffer ends up longer than it).
//! Like the runner, reaching the limit exactly already triggers the notice.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::watch;

use crate::mask::Masker;

/// GitLab Runner's default output limit (`output_limit = 4096` KiB).
pub const DEFAULT_LIMIT_BYTES: usize = 4 * 1024 * 1024;

const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// The notice appended once when the log reaches `limit_bytes`.
pub fn limit_notice(limit_bytes: usize) -> String {
    format!(
        "\n\x1b[33;1mJob's log exceeded limit of {limit_bytes} bytes.\n\
         Job execution will continue but no more output will be collected.\x1b[0;m\n"
    )
}

/// How to build a [`TraceLog`].
#[derive(Clone)]
pub struct TraceLogOptions {
    /// Output limit in bytes (see the module docs); [`DEFAULT_LIMIT_BYTES`] by default.
    pub limit_bytes: usize,
    /// Values of masked variables, replaced by `[MASKED]`.
    pub phrases: Vec<String>,
    /// Token prefixes to mask besides `glpat-` (the job's `features.token_mask_prefixes`).
    pub token_prefixes: Vec<String>,
}

impl Default for TraceLogOptions {
    fn default() -> Self {
        TraceLogOptions {
            limit_bytes: DEFAULT_LIMIT_BYTES,
            phrases: Vec::new(),
            token_prefixes: Vec::new(),
        }
    }
}

impl fmt::Debug for TraceLogOptions {
    // The phrases are secrets: only their number is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceLogOptions")
            .field("limit_bytes", &self.limit_bytes)
            .field("phrases", &format_args!("<{} masked>", self.phrases.len()))
            .field("token_prefixes", &self.token_prefixes)
            .finish()
    }
}

/// The job log buffer shared by the job driver (writing) and the trace streamer (reading).
///
/// Cloning gives another handle to the same log.
#[derive(Clone)]
pub struct TraceLog {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped after every change (bytes appended, finished).
    changes: watch::Sender<u64>,
    /// Signalled (with a stored permit) by [`TraceLog::expedite`].
    expedite: tokio::sync::Notify,
}

struct State {
    masker: Masker,
    utf8: Utf8Sanitizer,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    limit: usize,
    truncated: bool,
    finished: bool,
    /// Set by [`TraceLog::expedite`]: the first output past this offset is sent at once.
    expedite_at: Option<u64>,
    scratch_masked: Vec<u8>,
    scratch_utf8: Vec<u8>,
}

impl fmt::Debug for TraceLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("TraceLog")
            .field("len", &st.buf.len())
            .field("limit", &st.limit)
            .field("truncated", &st.truncated)
            .field("finished", &st.finished)
            .finish_non_exhaustive()
    }
}

impl TraceLogOptions {
    /// The options for `job`'s log: its masked variables and job token are masked (plus
    /// `extra_secrets`, e.g. the runner token), with the job's token prefixes, cut at
    /// `limit_bytes`.
    pub fn for_job(
        job: &oar_gitlab::JobResponse,
        limit_bytes: usize,
        extra_secrets: &[&str],
    ) -> Self {
        let mut phrases: Vec<String> = job
            .variables
            .iter()
            .filter(|v| v.masked && !v.value.is_empty())
            .map(|v| v.value.clone())
            .collect();
        phrases.push(job.token.expose().to_string());
        phrases.extend(
            extra_secrets
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.to_string()),
        );
        TraceLogOptions {
            limit_bytes,
            phrases,
            token_prefixes: job.features.token_mask_prefixes.clone(),
        }
    }
}

impl TraceLog {
    /// Creates an empty log.
    pub fn new(opts: TraceLogOptions) -> Self {
        let state = State {
            masker: Masker::new(opts.phrases, opts.token_prefixes),
            utf8: Utf8Sanitizer::default(),
            buf: Vec::new(),
            crc: crc32fast::Hasher::new(),
            limit: opts.limit_bytes,
            truncated: false,
            finished: false,
            expedite_at: None,
            scratch_masked: Vec::new(),
            scratch_utf8: Vec::new(),
        };
        let (changes, _) = watch::channel(0);
        TraceLog {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                changes,
                expedite: tokio::sync::Notify::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self) {
        self.shared
            .changes
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Appends output: masked, UTF-8 sanitized and limited. Bytes that may still turn out to
    /// be part of a secret are held back until later writes or [`finish`](Self::finish).
    /// Dropped silently after `finish` or once the limit was hit.
    pub fn write(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let appended = {
            let mut st = self.lock();
            if st.finished || st.truncated {
                return;
            }
            st.ingest(data, false)
        };
        if appended {
            self.notify();
        }
    }

    /// Ends the log: flushes what the masker and the UTF-8 sanitizer held back. Later writes
    /// are dropped. Idempotent.
    pub fn finish(&self) {
        {
            let mut st = self.lock();
            if st.finished {
                return;
            }
            if !st.truncated {
                st.ingest(&[], true);
            }
            st.finished = true;
        }
        self.notify();
    }

    /// Asks the streamer to send the next output at once instead of at its usual cadence:
    /// the driver calls it when a step of the user's script starts, so that the step's first
    /// line shows in GitLab right away.
    pub fn expedite(&self) {
        {
            let mut st = self.lock();
            st.expedite_at = Some(st.buf.len() as u64);
        }
        self.shared.expedite.notify_one();
    }

    /// Resolves after the next (or a missed earlier) [`expedite`](Self::expedite).
    pub fn expedited(&self) -> impl Future<Output = ()> + Send + 'static {
        let shared = Arc::clone(&self.shared);
        async move { shared.expedite.notified().await }
    }

    /// The offset set by [`expedite`](Self::expedite), until
    /// [`clear_expedite`](Self::clear_expedite).
    pub fn expedite_mark(&self) -> Option<u64> {
        self.lock().expedite_at
    }

    /// Clears the mark `mark` (a later one stays).
    pub fn clear_expedite(&self, mark: u64) {
        let mut st = self.lock();
        if st.expedite_at == Some(mark) {
            st.expedite_at = None;
        }
    }

    /// Whether [`finish`](Self::finish) was called.
    pub fn is_finished(&self) -> bool {
        self.lock().finished
    }

    /// Number of bytes in the buffer (the trace's `bytesize`).
    pub fn len(&self) -> u64 {
        self.lock().buf.len() as u64
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.lock().buf.is_empty()
    }

    /// A copy of `buffer[offset..offset + max]`, clamped to the buffer; empty if `offset` is at
    /// or past the end.
    pub fn read(&self, offset: u64, max: usize) -> Bytes {
        let st = self.lock();
        let len = st.buf.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(len);
        let end = start.saturating_add(max).min(len);
        Bytes::copy_from_slice(&st.buf[start..end])
    }

    /// `crc32:` and eight lower-case hex digits: CRC-32/IEEE of the whole buffer.
    pub fn checksum(&self) -> String {
        let crc = self.lock().crc.clone().finalize();
        format!("crc32:{crc:08x}")
    }

    /// Whether the output limit was hit (the notice is in the buffer, later output dropped).
    pub fn truncated(&self) -> bool {
        self.lock().truncated
    }

    /// A copy of the whole buffer.
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().buf.clone()
    }

    /// Resolves once bytes were appended or the log was finished after this call (the
    /// subscription is taken when `changed()` is called, not when the future is first polled,
    /// so create it before reading to miss nothing). Resolves at once if the log is already
    /// finished, since it can no longer change.
    pub fn changed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shared.changes.subscribe();
        let finished = self.is_finished();
        async move {
            if !finished {
                // An error means every handle is gone: nothing can change any more.
                let _ = rx.changed().await;
            }
        }
    }

    /// Resolves once the buffer holds more than `offset` bytes or the log is finished.
    pub async fn wait_beyond(&self, offset: u64) {
        loop {
            let mut rx = self.shared.changes.subscribe();
            {
                let st = self.lock();
                if st.buf.len() as u64 > offset || st.finished {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// An [`AsyncWrite`](tokio::io::AsyncWrite) adapter, e.g. to `tokio::io::copy` a
    /// process's output into the log. Shutting it down does not finish the log.
    pub fn writer(&self) -> TraceLogWriter {
        TraceLogWriter { log: self.clone() }
    }
}

impl State {
    /// Runs `data` through masker, UTF-8 sanitizer and limit. Returns whether the buffer grew.
    fn ingest(&mut self, data: &[u8], is_final: bool) -> bool {
        let State {
            masker,
            utf8,
            scratch_masked,
            scratch_utf8,
            ..
        } = self;
        let mut masked = std::mem::take(scratch_masked);
        let mut clean = std::mem::take(scratch_utf8);
        masked.clear();
        clean.clear();
        if is_final {
            masker.push(data, &mut masked);
            masker.finish(&mut masked);
        } else {
            masker.push(data, &mut masked);
        }
        utf8.push(&masked, is_final, &mut clean);
        let appended = self.append_limited(&clean);
        self.scratch_masked = recycle(masked);
        self.scratch_utf8 = recycle(clean);
        appended
    }

    /// GitLab Runner's `limitWriter`: `data` is valid UTF-8.
    fn append_limited(&mut self, data: &[u8]) -> bool {
        if data.is_empty() || self.truncated {
            return false;
        }
        let capacity = self.limit.saturating_sub(self.buf.len());
        if capacity == 0 {
            // Only reachable with a limit of 0: the runner then drops everything, notice included.
            self.truncated = true;
            return false;
        }
        if data.len() < capacity {
            self.append(data);
            return true;
        }
        let mut cut = capacity;
        // Back off to a character boundary (at most 3 continuation bytes in valid UTF-8).
        for _ in 0..3 {
            match data.get(cut) {
                Some(&b) if b & 0xC0 == 0x80 => cut -= 1,
                _ => break,
            }
        }
        self.append(&data[..cut]);
        let notice = limit_notice(self.limit);
        self.append(notice.as_bytes());
        self.truncated = true;
        true
    }

    fn append(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        self.crc.update(data);
    }
}

fn recycle(v: Vec<u8>) -> Vec<u8> {
    if v.capacity() > (1 << 20) {
        Vec::new()
    } else {
        v
    }
}

/// Streaming replacement of invalid UTF-8 by U+FFFD, one per invalid byte (Go's
/// `encoding.Replacement` encoder, which GitLab Runner uses). An incomplete sequence at the
/// end of a write is held back until the next write completes or breaks it.
#[derive(Default)]
struct Utf8Sanitizer {
    pending: Vec<u8>,
}

impl Utf8Sanitizer {
    fn push(&mut self, input: &[u8], is_final: bool, out: &mut Vec<u8>) {
        if self.pending.is_empty() {
            self.run(input, is_final, out);
        } else {
            let mut joined = std::mem::take(&mut self.pending);
            joined.extend_from_slice(input);
            self.run(&joined, is_final, out);
        }
    }

    fn run(&mut self, mut rest: &[u8], is_final: bool, out: &mut Vec<u8>) {
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.extend_from_slice(s.as_bytes());
                    return;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.extend_from_slice(&rest[..valid]);
                    match e.error_len() {
                        Some(n) => {
                            // The maximal invalid subpart: a lead byte plus continuation
                            // bytes, each of which Go decodes as one invalid rune.
                            for _ in 0..n {
                                out.extend_from_slice(REPLACEMENT);
                            }
                            rest = rest.get(valid + n..).unwrap_or_default();
                        }
                        None => {
                            let tail = rest.get(valid..).unwrap_or_default();
                            if is_final {
                                for _ in tail {
                                    out.extend_from_slice(REPLACEMENT);
                                }
                            } else {
                                self.pending.extend_from_slice(tail);
                            }
                            return;
                        }
                    }
                }
            }
        }
    }
}

impl std::io::Write for TraceLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        TraceLog::write(self, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`tokio::io::AsyncWrite`] into a [`TraceLog`]; see [`TraceLog::writer`].
#[derive(Clone, Debug)]
pub struct TraceLogWriter {
    log: TraceLog,
}

impl tokio::io::AsyncWrite for TraceLogWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.log.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn log_with(limit: usize, phrases: &[&str]) -> TraceLog {
        TraceLog::new(TraceLogOptions {
            limit_bytes: limit,
            phrases: phrases.iter().map(|s| s.to_string()).collect(),
            token_prefixes: vec!["tok-".into()],
        })
    }

    fn crc_of(b: &[u8]) -> String {
        format!("crc32:{:08x}", crc32fast::hash(b))
    }

    fn assert_consistent(log: &TraceLog) {
        let snap = log.snapshot();
        assert_eq!(log.len(), snap.len() as u64);
        assert_eq!(log.checksum(), crc_of(&snap));
        assert!(
            std::str::from_utf8(&snap).is_ok(),
            "buffer must be valid UTF-8"
        );
    }

    #[test]
    fn empty_log() {
        let log = TraceLog::new(TraceLogOptions::default());
        assert_eq!(log.len(), 0);
        assert!(log.is_empty());
        assert_eq!(log.checksum(), "crc32:00000000");
        assert!(log.read(0, 100).is_empty());
        assert!(!log.truncated());
        assert!(!log.is_finished());
    }

    #[test]
    fn write_read_checksum() {
        let log = log_with(DEFAULT_LIMIT_BYTES, &[]);
        log.write(b"hello ");
        log.write(b"world\n");
        assert_eq!(log.snapshot(), b"hello world\n");
        assert_eq!(log.checksum(), "crc32:af083b2d");
        assert_eq!(log.read(6, 5), Bytes::from_static(b"world"));
        assert_eq!(log.read(6, 1000), Bytes::from_static(b"world\n"));
        assert!(log.read(12, 10).is_empty());
        assert!(log.read(u64::MAX, usize::MAX).is_empty());
        assert_eq!(log.read(0, usize::MAX).len(), 12);
        assert_consistent(&log);
    }

    #[test]
    fn masks_before_buffering() {
        let log = log_with(DEFAULT_LIMIT_BYTES, &["SuperSecret42"]);
        log.write(b"pw=Super");
        log.write(b"Secret42 t=glpat-abc");
        // The token may continue: only the prefix is visible yet.
        assert_eq!(log.snapshot(), b"pw=[MASKED] t=glpat-");
        log.write(b"def tok-x ?private_token=zz");
        log.finish();
        assert_eq!(
            log.snapshot(),
            b"pw=[MASKED] t=glpat-[MASKED] tok-[MASKED] ?private_token=[MASKED]"
        );
        assert_consistent(&log);
    }

    #[test]
    fn invalid_utf8_is_replaced_per_byte() {
        let log = log_with(DEFAULT_LIMIT_BYTES, &[]);
        log.write(b"a\xffb\xe2\x82c\xed\xa0\x80d");
        log.finish();
        assert_eq!(
            String::from_utf8(log.snapshot()).expect("utf8"),
            "a\u{FFFD}b\u{FFFD}\u{FFFD}c\u{FFFD}\u{FFFD}\u{FFFD}d"
        );
        assert_consistent(&log);
    }

    #[test]
    fn split_utf8_is_joined() {
        let log = log_with(DEFAULT_LIMIT_BYTES, &[]);
        for b in "é😀€x".as_bytes() {
            log.write(std::slice::from_ref(b));
        }
        assert_eq!(log.snapshot(), "é😀€x".as_bytes());
        log.write(b"\xf0\x9f");
        assert_eq!(log.snapshot(), "é😀€x".as_bytes()); // held back
        log.write(b"\x98");
        log.write(b"\x80!");
        assert_eq!(log.snapshot(), "é😀€x😀!".as_bytes());
        assert_consistent(&log);
    }

    #[test]
    fn incomplete_utf8_at_finish() {
        let log = log_with(DEFAULT_LIMIT_BYTES, &[]);
        log.write(b"ok\xf0\x9f\x98");
        assert_eq!(log.snapshot(), b"ok");
        log.finish();
        assert_eq!(
            String::from_utf8(log.snapshot()).expect("utf8"),
            "ok\u{FFFD}\u{FFFD}\u{FFFD}"
        );
        // A broken sequence followed by more data.
        let log = log_with(DEFAULT_LIMIT_BYTES, &[]);
        log.write(b"\xe2\x82");
        log.write(b"A");
        assert_eq!(
            String::from_utf8(log.snapshot()).expect("utf8"),
            "\u{FFFD}\u{FFFD}A"
        );
    }

    #[test]
    fn limit_notice_text() {
        assert_eq!(
            limit_notice(4194304),
            "\n\x1b[33;1mJob's log exceeded limit of 4194304 bytes.\nJob execution will continue but no more output will be collected.\x1b[0;m\n"
        );
    }

    #[test]
    fn limit_truncates_and_appends_notice_once() {
        let log = log_with(10, &[]);
        log.write(b"0123456");
        assert!(!log.truncated());
        log.write(b"789abc");
        assert!(log.truncated());
        let expected = [b"0123456789".as_slice(), limit_notice(10).as_bytes()].concat();
        assert_eq!(log.snapshot(), expected);
        log.write(b"more");
        log.finish();
        log.write(b"even more");
        assert_eq!(log.snapshot(), expected);
        assert_consistent(&log);
    }

    #[test]
    fn limit_reached_exactly_triggers_notice() {
        // GitLab Runner's limitWriter: `len(p) >= capacity`.
        let log = log_with(4, &[]);
        log.write(b"abc");
        assert!(!log.truncated());
        log.write(b"d");
        assert!(log.truncated());
        assert_eq!(
            log.snapshot(),
            [b"abcd".as_slice(), limit_notice(4).as_bytes()].concat()
        );
    }

    #[test]
    fn limit_cuts_at_char_boundary() {
        for (limit, kept) in [
            (2, "ab"),
            (3, "abc"),
            (4, "abc"),
            (5, "abc"),
            (6, "abc€"),
            (7, "abc€d"),
        ] {
            let log = log_with(limit, &[]);
            log.write("abc€d".as_bytes());
            assert!(log.truncated(), "limit {limit}");
            let expected = [kept.as_bytes(), limit_notice(limit).as_bytes()].concat();
            assert_eq!(log.snapshot(), expected, "limit {limit}");
            assert_consistent(&log);
        }
    }

    #[test]
    fn limit_applies_to_masked_output() {
        let log = log_with(12, &["0123456789abcdef"]);
        log.write(b"x=0123456789abcdef;");
        // "x=[MASKED];" is 11 bytes: under the limit although the input was 19.
        assert!(!log.truncated());
        assert_eq!(log.snapshot(), b"x=[MASKED];");
        log.write(b"yz");
        assert!(log.truncated());
        assert_eq!(
            log.snapshot(),
            [b"x=[MASKED];y".as_slice(), limit_notice(12).as_bytes()].concat()
        );
    }

    #[test]
    fn limit_zero_drops_everything() {
        let log = log_with(0, &[]);
        log.write(b"abc");
        log.finish();
        assert!(log.snapshot().is_empty());
        assert!(log.truncated());
    }

    #[test]
    fn finish_flushes_and_is_idempotent() {
        let log = log_with(DEFAULT_LIMIT_BYTES, &["secretvalue"]);
        log.write(b"a secret");
        assert_eq!(log.snapshot(), b"a ");
        log.finish();
        assert!(log.is_finished());
        assert_eq!(log.snapshot(), b"a secret");
        log.finish();
        log.write(b"value");
        assert_eq!(log.snapshot(), b"a secret");
        assert_consistent(&log);
    }

    #[test]
    fn io_write_impl() {
        use std::io::Write as _;
        let mut log = log_with(DEFAULT_LIMIT_BYTES, &[]);
        write!(log, "n={}", 5).expect("write");
        log.flush().expect("flush");
        assert_eq!(log.snapshot(), b"n=5");
    }

    #[test]
    fn debug_hides_secrets() {
        let opts = TraceLogOptions {
            phrases: vec!["hunter2hunter2".into()],
            ..TraceLogOptions::default()
        };
        assert!(!format!("{opts:?}").contains("hunter2"));
        let log = TraceLog::new(opts);
        assert!(!format!("{log:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn async_writer_copy() {
        let log = log_with(DEFAULT_LIMIT_BYTES, &["p4ssw0rd!"]);
        let mut reader: &[u8] = b"login p4ssw0rd! ok\n";
        let mut w = log.writer();
        tokio::io::copy(&mut reader, &mut w).await.expect("copy");
        tokio::io::AsyncWriteExt::shutdown(&mut w)
            .await
            .expect("shutdown");
        assert!(!log.is_finished());
        assert_eq!(log.snapshot(), b"login [MASKED] ok\n");
    }

    #[tokio::test(start_paused = true)]
    async fn changed_wakes_waiter_on_write() {
        let log = log_with(DEFAULT_LIMIT_BYTES, &[]);
        let waiter = tokio::spawn(log.changed());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        log.write(b"x");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("join");
    }

    #[tokio::test(start_paused = true)]
    async fn changed_created_before_write_is_not_lost() {
        let log = log_with(DEFAULT_LIMIT_BYTES, &[]);
        let fut = log.changed();
        log.write(b"x"); // before the future is ever polled
        tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .expect("not lost");
    }

    #[tokio::test(start_paused = true)]
    async fn changed_ignores_writes_that_append_nothing() {
        let log = log_with(DEFAULT_LIMIT_BYTES, &["secretvalue"]);
        let fut = log.changed();
        log.write(b"secret"); // all held back by the masker
        // Paused time auto-advances: the timeout fires at once if nothing wakes us.
        assert!(
            tokio::time::timeout(Duration::from_secs(5), fut)
                .await
                .is_err()
        );
        let fut = log.changed();
        log.finish();
        tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .expect("finish wakes");
        // Already finished: resolves at once.
        tokio::time::timeout(Duration::from_secs(5), log.changed())
            .await
            .expect("finished log");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_beyond_offset() {
        let log = log_with(DEFAULT_LIMIT_BYTES, &[]);
        log.write(b"abc");
        tokio::time::timeout(Duration::from_secs(5), log.wait_beyond(2))
            .await
            .expect("already beyond");
        let l2 = log.clone();
        let waiter = tokio::spawn(async move { l2.wait_beyond(3).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        log.write(b"d");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("join");
        let l3 = log.clone();
        let waiter = tokio::spawn(async move { l3.wait_beyond(100).await });
        tokio::task::yield_now().await;
        log.finish();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("finish wakes")
            .expect("join");
    }

    #[test]
    fn concurrent_writers() {
        let log = log_with(DEFAULT_LIMIT_BYTES, &[]);
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let log = log.clone();
                s.spawn(move || {
                    for _ in 0..1000 {
                        log.write(&[b'a' + t; 10]);
                    }
                });
            }
        });
        assert_eq!(log.len(), 40_000);
        assert_consistent(&log);
    }

    /// `cargo test -p oar-job --release --lib tracelog::tests::throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "performance measurement, run manually in release mode"]
    fn throughput() {
        let phrases: Vec<String> = (0..20)
            .map(|i| format!("s3cr3t-{i:02}-Zq8PxY7mW2kL"))
            .collect();
        let log = TraceLog::new(TraceLogOptions {
            limit_bytes: usize::MAX,
            phrases,
            token_prefixes: Vec::new(),
        });
        let line = "2024-01-01T00:00:00Z Compiling serde v1.0.219 (registry+https://example/?a=b) \
                    Running `rustc --crate-name foo src/lib.rs --edition=2021` Finished in 3.2s\n";
        let text = line.repeat(64 * 1024 * 1024 / line.len());
        let t = tokio::time::Instant::now();
        for chunk in text.as_bytes().chunks(8192) {
            log.write(chunk);
        }
        log.finish();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(log.len(), text.len() as u64);
        println!(
            "trace log throughput: {:.0} MB/s",
            text.len() as f64 / secs / 1e6
        );
    }

    fn split_at_points<'a>(text: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
        let mut pts: Vec<usize> = points.iter().map(|p| p % (text.len() + 1)).collect();
        pts.sort_unstable();
        let mut parts = Vec::new();
        let mut last = 0;
        for p in pts {
            parts.push(&text[last..p]);
            last = p;
        }
        parts.push(&text[last..]);
        parts
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn split_writes_equal_one_write(
            frags in prop::collection::vec(prop_oneof![
                Just(b"S3cr3tValue".to_vec()),
                Just(b"glpat-".to_vec()),
                Just("é😀".as_bytes().to_vec()),
                Just(b"\xf0\x9f".to_vec()),
                Just(b"\xff".to_vec()),
                prop::collection::vec(any::<u8>(), 0..6),
                "[a-zS3 \n-]{0,8}".prop_map(String::into_bytes),
            ], 0..30),
            points in prop::collection::vec(any::<usize>(), 0..10),
            limit in prop_oneof![Just(DEFAULT_LIMIT_BYTES), 0usize..120],
        ) {
            let text = frags.concat();
            let whole = log_with(limit, &["S3cr3tValue"]);
            whole.write(&text);
            whole.finish();

            let split = log_with(limit, &["S3cr3tValue"]);
            for part in split_at_points(&text, &points) {
                split.write(part);
            }
            split.finish();

            let snap = split.snapshot();
            prop_assert_eq!(&snap, &whole.snapshot());
            prop_assert_eq!(split.checksum(), crc_of(&snap));
            prop_assert_eq!(split.len(), snap.len() as u64);
            prop_assert!(std::str::from_utf8(&snap).is_ok());
            prop_assert!(!snap.windows(11).any(|w| w == b"S3cr3tValue"));
            let notice = limit_notice(limit);
            if split.truncated() && limit > 0 {
                prop_assert!(snap.ends_with(notice.as_bytes()));
                prop_assert!(snap.len() - notice.len() <= limit);
            } else {
                prop_assert!(snap.len() < limit.max(1));
            }
        }
    }
}
