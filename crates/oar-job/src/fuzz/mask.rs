//! `mask`: the masker and the job log (UTF-8 sanitizer, output limit) under split writes.

use crate::mask::{MASK, Masker};
use crate::tracelog::{TraceLog, TraceLogOptions, limit_notice};

const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// A little reader over the fuzz input.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// `mask`: `data` is `[flags, limit, splits...]`, then the secrets, the extra token prefixes
/// and the split sizes, each length-prefixed, then the output (see the seed corpus). The output
/// is written to a [`TraceLog`] in pieces of the given sizes (cycled), and to another in one
/// write; then:
/// - both logs hold the same bytes (masking, UTF-8 sanitizing and the limit do not depend on
///   how the output was split), and so does a bare [`Masker`] fed the same pieces, compared
///   with one fed the whole output;
/// - no secret (trimmed, as the masker takes it) appears in the log except where it overlaps a
///   `[MASKED]`, a U+FFFD or the limit notice, i.e. text the log made up itself;
/// - the log is valid UTF-8, `len()` and `checksum()` describe its bytes, and the output limit
///   holds: below the limit without the notice, at most the limit plus the notice with it.
pub fn fuzz_mask(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let limit = match input.byte() {
        0 => crate::tracelog::DEFAULT_LIMIT_BYTES,
        n => usize::from(n) * 3,
    };
    let mut phrases = Vec::new();
    for _ in 0..(flags & 3) {
        let n = usize::from(input.byte() % 24) + 1;
        phrases.push(String::from_utf8_lossy(input.bytes(n)).into_owned());
    }
    let mut prefixes = Vec::new();
    for _ in 0..((flags >> 2) & 1) {
        let n = usize::from(input.byte() % 8) + 1;
        prefixes.push(String::from_utf8_lossy(input.bytes(n)).into_owned());
    }
    let splits: Vec<usize> = (0..(flags >> 4))
        .map(|_| usize::from(input.byte()))
        .collect();
    let output = input.0;
    let pieces = split(output, &splits);

    // A bare masker: split invariance.
    let mut whole = Vec::new();
    let mut m = Masker::new(phrases.clone(), prefixes.clone());
    m.push(output, &mut whole);
    m.finish(&mut whole);
    let mut parts = Vec::new();
    let mut m = Masker::new(phrases.clone(), prefixes.clone());
    for p in &pieces {
        let before = parts.len();
        m.push(p, &mut parts);
        assert!(
            whole.starts_with(&parts),
            "a push emitted {:?}, which the whole output does not have there",
            String::from_utf8_lossy(&parts[before..])
        );
    }
    m.finish(&mut parts);
    assert_eq!(
        String::from_utf8_lossy(&parts),
        String::from_utf8_lossy(&whole),
        "masker output depends on the split"
    );
    assert_eq!(parts, whole);

    let opts = TraceLogOptions {
        limit_bytes: limit,
        phrases: phrases.clone(),
        token_prefixes: prefixes,
    };
    let one = TraceLog::new(opts.clone());
    one.write(output);
    one.finish();
    let split_log = TraceLog::new(opts);
    for p in &pieces {
        split_log.write(p);
    }
    split_log.finish();
    let buf = split_log.snapshot();
    assert_eq!(buf, one.snapshot(), "log depends on the split");

    let text = std::str::from_utf8(&buf).expect("the log is valid UTF-8");
    assert_eq!(split_log.len(), buf.len() as u64);
    assert_eq!(
        split_log.checksum(),
        format!("crc32:{:08x}", crc32fast::hash(&buf))
    );
    let notice = limit_notice(limit);
    let body_len = if split_log.truncated() {
        assert!(text.ends_with(&notice), "truncated without the notice");
        let body = buf.len() - notice.len();
        assert!(
            body <= limit,
            "{body} bytes before the notice, limit {limit}"
        );
        body
    } else {
        assert!(buf.len() < limit, "{} bytes, limit {limit}", buf.len());
        buf.len()
    };

    // Ranges of text the log made up: masks, replacement characters, the notice.
    let mut made_up: Vec<(usize, usize)> = find_all(&buf[..body_len], MASK)
        .chain(find_all(&buf[..body_len], REPLACEMENT))
        .collect();
    if split_log.truncated() {
        // The limit may cut a mask or a replacement character short.
        let body = &buf[..body_len];
        for made in [MASK, REPLACEMENT] {
            if let Some(n) = (1..made.len()).rev().find(|&n| body.ends_with(&made[..n])) {
                made_up.push((body_len - n, body_len));
            }
        }
    }
    made_up.push((body_len, buf.len()));
    for phrase in &phrases {
        let phrase = phrase.trim();
        if phrase.is_empty() {
            continue;
        }
        for (s, e) in find_all(&buf, phrase.as_bytes()) {
            assert!(
                made_up.iter().any(|&(ms, me)| ms < e && s < me),
                "secret {phrase:?} got through at {s} in {text:?}"
            );
        }
    }
}

/// `data` in pieces of the sizes in `sizes`, cycled (0 counts as 1); one piece without sizes.
fn split<'a>(mut data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    if sizes.is_empty() {
        return vec![data];
    }
    let mut pieces = Vec::new();
    for &n in sizes.iter().cycle() {
        if data.is_empty() {
            break;
        }
        let (head, rest) = data.split_at(n.clamp(1, data.len()));
        pieces.push(head);
        data = rest;
    }
    pieces
}

/// Every (possibly overlapping) occurrence of `needle` in `hay`, as byte ranges.
fn find_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = (usize, usize)> + 'a {
    hay.windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(move |(i, _)| (i, i + needle.len()))
}
