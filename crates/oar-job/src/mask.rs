//! Streaming masking of secrets in job output.
//!
//! A [`Masker`] is a chain of three streaming filters, applied in the order GitLab Runner
//! applies them (its `buildlogger` wraps `tokensanitizer(urlsanitizer(masker(..)))`, so the
//! data flows the other way round):
//!
//! 1. **phrase masking** — every masked variable value is replaced by `[MASKED]`. Phrases are
//!    trimmed of surrounding whitespace and de-duplicated (like the runner); empty ones are
//!    ignored. Among phrases starting at the same position the longest wins; matches are taken
//!    leftmost first and never overlap.
//! 2. **URL parameter sanitizing** — the value of the query parameters in
//!    [`SENSITIVE_URL_PARAMS`] (names compared case-insensitively, introduced by `?` or `&` and
//!    followed by `=`) is replaced by `[MASKED]`. The value ends before `&`, `?`, `"`, `'`, an
//!    ASCII space or control character, or at the end of the stream.
//! 3. **token-prefix sanitizing** — after any of the token prefixes (`glpat-` always, plus
//!    the job's `token_mask_prefixes`), the run of `[A-Za-z0-9._=-]` characters is replaced
//!    by `[MASKED]`; the prefix itself is kept. A prefix followed by no such character is left
//!    as is.
//!
//! Every filter is streaming-safe: [`Masker::push`] emits only bytes that can no longer become
//! part of a secret and holds the rest back; for any way of splitting the input into pushes,
//! the concatenated output (after [`Masker::finish`]) is the same as for one push of the whole
//! input. Bytes that belong to a secret are never emitted, not even while the secret is still
//! arriving. The held-back tail is at most one byte shorter than the longest phrase (resp.
//! token prefix); the value of a URL parameter or token is dropped as it arrives, so nothing
//! grows without bound.

use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};

/// What every masked secret is replaced with.
pub const MASK: &[u8] = b"[MASKED]";

/// The token prefix that is always masked (GitLab personal access tokens).
pub const DEFAULT_TOKEN_PREFIX: &str = "glpat-";

/// Query parameters whose values are always masked (names are matched case-insensitively).
pub const SENSITIVE_URL_PARAMS: &[&str] = &[
    "private_token",
    "authenticity_token",
    "rss_token",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
];

/// Above this capacity, scratch buffers are released after use instead of kept.
const SCRATCH_KEEP: usize = 1 << 20;

/// Streaming secret masker: phrases, sensitive URL parameters and prefixed tokens.
///
/// Cloning is cheap (the compiled automata are shared); a clone carries over the held-back
/// state of the original.
#[derive(Clone)]
pub struct Masker {
    cfg: Arc<Config>,
    phrase_pending: Vec<u8>,
    url: UrlState,
    token_pending: Vec<u8>,
    token: TokenState,
    tmp_phrase: Vec<u8>,
    tmp_url: Vec<u8>,
}

impl fmt::Debug for Masker {
    // Never print the phrases: they are secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field("phrases", &self.cfg.phrase_count)
            .field("token_prefixes", &self.cfg.prefix_count)
            .field(
                "held_back",
                &(self.phrase_pending.len() + self.token_pending.len()),
            )
            .finish_non_exhaustive()
    }
}

struct Config {
    phrases: Option<Scanner>,
    prefixes: Option<Scanner>,
    phrase_count: usize,
    prefix_count: usize,
}

impl Masker {
    /// Builds a masker for the given secret phrases and extra token prefixes.
    ///
    /// Phrases and prefixes are trimmed of surrounding whitespace, de-duplicated, and ignored
    /// when empty; `glpat-` is always a token prefix.
    pub fn new(
        phrases: impl IntoIterator<Item = String>,
        token_prefixes: impl IntoIterator<Item = String>,
    ) -> Self {
        let phrases = normalize(phrases);
        let prefixes = normalize(
            token_prefixes
                .into_iter()
                .chain(std::iter::once(DEFAULT_TOKEN_PREFIX.to_owned())),
        );
        let cfg = Config {
            phrase_count: phrases.len(),
            prefix_count: prefixes.len(),
            phrases: Scanner::new(&phrases),
            prefixes: Scanner::new(&prefixes),
        };
        Self::with_config(Arc::new(cfg))
    }

    fn with_config(cfg: Arc<Config>) -> Self {
        Masker {
            cfg,
            phrase_pending: Vec::new(),
            url: UrlState::default(),
            token_pending: Vec::new(),
            token: TokenState::default(),
            tmp_phrase: Vec::new(),
            tmp_url: Vec::new(),
        }
    }

    /// Masks `input` as the continuation of everything pushed so far, appending to `out` the
    /// bytes that can no longer become part of a secret; the rest is held back.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if input.is_empty() {
            return;
        }
        self.run(input, false, out);
    }

    /// Ends the stream: flushes the held-back tail (masking what is complete) to `out` and
    /// resets the masker, which can then be reused for a new stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.run(&[], true, out);
    }

    /// Masks a complete, non-streamed text with the same rules (does not touch the state of
    /// `self`).
    pub fn mask_str(&self, s: &str) -> String {
        let mut m = Masker::with_config(Arc::clone(&self.cfg));
        let mut out = Vec::with_capacity(s.len());
        m.run(s.as_bytes(), true, &mut out);
        // Masking only removes whole UTF-8 sequences, so this never falls back in practice.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    fn run(&mut self, input: &[u8], is_final: bool, out: &mut Vec<u8>) {
        let cfg = Arc::clone(&self.cfg);

        // Stage 1: phrases.
        let mut phrased = std::mem::take(&mut self.tmp_phrase);
        phrased.clear();
        let stage1: &[u8] = match &cfg.phrases {
            Some(sc) => {
                feed(&mut self.phrase_pending, input, &mut phrased, |buf, out| {
                    phrase_process(sc, buf, is_final, out)
                });
                &phrased
            }
            None => input,
        };

        // Stage 2: URL parameters.
        let mut urled = std::mem::take(&mut self.tmp_url);
        urled.clear();
        self.url.process(stage1, &mut urled);
        if is_final {
            self.url.finish(&mut urled);
        }

        // Stage 3: token prefixes.
        match &cfg.prefixes {
            Some(sc) => {
                let token = &mut self.token;
                feed(&mut self.token_pending, &urled, out, |buf, out| {
                    token.process(sc, buf, is_final, out)
                });
            }
            None => out.extend_from_slice(&urled),
        }

        self.tmp_phrase = recycle(phrased);
        self.tmp_url = recycle(urled);
    }
}

fn recycle(v: Vec<u8>) -> Vec<u8> {
    if v.capacity() > SCRATCH_KEEP {
        Vec::new()
    } else {
        v
    }
}

fn normalize(items: impl IntoIterator<Item = String>) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = items
        .into_iter()
        .map(|s| s.trim().as_bytes().to_vec())
        .filter(|s| !s.is_empty())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Runs `process` over `pending ++ input` (without copying when nothing is pending); `process`
/// returns the index from which its buffer must be held back, which becomes the new pending.
fn feed(
    pending: &mut Vec<u8>,
    input: &[u8],
    out: &mut Vec<u8>,
    mut process: impl FnMut(&[u8], &mut Vec<u8>) -> usize,
) {
    if pending.is_empty() {
        let keep = process(input, out).min(input.len());
        pending.extend_from_slice(&input[keep..]);
    } else {
        let mut buf = std::mem::take(pending);
        buf.extend_from_slice(input);
        let keep = process(&buf, out).min(buf.len());
        buf.drain(..keep);
        *pending = buf;
    }
}

/// Phrase stage over `buf` (the whole unemitted text). Returns the hold-back index.
fn phrase_process(sc: &Scanner, buf: &[u8], is_final: bool, out: &mut Vec<u8>) -> usize {
    let len = buf.len();
    let mut pos = 0;
    let mut hold = if is_final { len } else { sc.open_start(buf, 0) };
    while let Some((start, end)) = sc.find(buf, pos) {
        if start >= hold {
            break;
        }
        out.extend_from_slice(&buf[pos..start]);
        out.extend_from_slice(MASK);
        pos = end;
        if pos > hold {
            hold = sc.open_start(buf, pos);
        }
    }
    out.extend_from_slice(&buf[pos..hold]);
    hold
}

// ---------------------------------------------------------------------------------------------
// Token prefixes

/// `[A-Za-z0-9._=-]`: the characters a prefixed token consists of.
static TOKEN_ALPHABET: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'=');
        b += 1;
    }
    t
};

#[derive(Clone, Default)]
struct TokenState {
    /// A prefix was matched and its token characters are being dropped.
    in_token: bool,
    /// At least one token character was dropped.
    masked: bool,
}

impl TokenState {
    fn close(&mut self, out: &mut Vec<u8>) {
        if self.masked {
            out.extend_from_slice(MASK);
        }
        self.in_token = false;
        self.masked = false;
    }

    fn process(&mut self, sc: &Scanner, buf: &[u8], is_final: bool, out: &mut Vec<u8>) -> usize {
        let len = buf.len();
        let mut pos = 0;
        let mut hold: Option<usize> = None;
        loop {
            if self.in_token {
                let n = buf[pos..]
                    .iter()
                    .position(|&b| !TOKEN_ALPHABET[usize::from(b)])
                    .unwrap_or(len - pos);
                if n > 0 {
                    self.masked = true;
                }
                pos += n;
                if pos == len {
                    if is_final {
                        self.close(out);
                    }
                    return len;
                }
                self.close(out);
            }
            let h = if is_final {
                len
            } else {
                match hold {
                    Some(h) if h >= pos => h,
                    _ => {
                        let h = sc.open_start(buf, pos);
                        hold = Some(h);
                        h
                    }
                }
            };
            match sc.find(buf, pos) {
                Some((start, end)) if start < h => {
                    out.extend_from_slice(&buf[pos..end]);
                    pos = end;
                    self.in_token = true;
                }
                _ => {
                    out.extend_from_slice(&buf[pos..h]);
                    return h;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// URL parameters

const KEY_MAX: usize = 20; // longest of SENSITIVE_URL_PARAMS ("x-amz-security-token")

/// Bytes that end a sensitive parameter value.
static URL_VALUE_END: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c <= b' ' || c == 0x7f || matches!(c, b'&' | b'?' | b'"' | b'\'');
        b += 1;
    }
    t
};

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum UrlMode {
    /// Looking for `?` or `&`.
    #[default]
    Normal,
    /// After `?`/`&`: reading a parameter name that may still be a sensitive one.
    Key,
    /// Dropping the value of a sensitive parameter.
    Value,
}

#[derive(Clone, Default)]
struct UrlState {
    mode: UrlMode,
    key: [u8; KEY_MAX],
    key_len: usize,
}

impl UrlState {
    fn key(&self) -> &[u8] {
        &self.key[..self.key_len]
    }

    fn key_is_prefix(&self) -> bool {
        let k = self.key();
        SENSITIVE_URL_PARAMS
            .iter()
            .any(|p| p.as_bytes().starts_with(k))
    }

    fn key_is_sensitive(&self) -> bool {
        let k = self.key();
        SENSITIVE_URL_PARAMS.iter().any(|p| p.as_bytes() == k)
    }

    fn process(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let len = input.len();
        let mut pos = 0;
        while pos < len {
            match self.mode {
                UrlMode::Normal => match memchr::memchr2(b'?', b'&', &input[pos..]) {
                    None => {
                        out.extend_from_slice(&input[pos..]);
                        return;
                    }
                    Some(i) => {
                        out.extend_from_slice(&input[pos..=pos + i]);
                        pos += i + 1;
                        self.mode = UrlMode::Key;
                        self.key_len = 0;
                    }
                },
                UrlMode::Key => {
                    let b = input[pos];
                    out.push(b);
                    pos += 1;
                    match b {
                        b'?' | b'&' => self.key_len = 0,
                        b'=' => {
                            self.mode = if self.key_is_sensitive() {
                                UrlMode::Value
                            } else {
                                UrlMode::Normal
                            };
                        }
                        _ => {
                            if self.key_len < KEY_MAX {
                                self.key[self.key_len] = b.to_ascii_lowercase();
                                self.key_len += 1;
                                if !self.key_is_prefix() {
                                    self.mode = UrlMode::Normal;
                                }
                            } else {
                                self.mode = UrlMode::Normal;
                            }
                        }
                    }
                }
                UrlMode::Value => {
                    match input[pos..]
                        .iter()
                        .position(|&b| URL_VALUE_END[usize::from(b)])
                    {
                        None => return, // the whole rest is secret: drop it
                        Some(i) => {
                            out.extend_from_slice(MASK);
                            pos += i; // the terminator is processed in Normal mode
                            self.mode = UrlMode::Normal;
                        }
                    }
                }
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.mode == UrlMode::Value {
            out.extend_from_slice(MASK);
        }
        *self = UrlState::default();
    }
}

// ---------------------------------------------------------------------------------------------
// Multi-pattern scanner

/// Leftmost-longest multi-pattern search plus detection of the "open" tail: positions from
/// which the text seen so far is a proper prefix of some pattern (so a match could still
/// start there once more bytes arrive).
struct Scanner {
    ac: AhoCorasick,
    trie: PrefixTrie,
}

impl Scanner {
    fn new(patterns: &[Vec<u8>]) -> Option<Scanner> {
        if patterns.is_empty() {
            return None;
        }
        let build = |kind: Option<AhoCorasickKind>| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .kind(kind)
                .build(patterns)
        };
        let ac = match build(None) {
            Ok(ac) => ac,
            Err(_) => match build(Some(AhoCorasickKind::NoncontiguousNFA)) {
                Ok(ac) => ac,
                Err(err) => {
                    // Only possible with pattern sets far beyond anything a job can carry.
                    tracing::error!(%err, "cannot compile mask patterns; masking disabled for them");
                    return None;
                }
            },
        };
        Some(Scanner {
            ac,
            trie: PrefixTrie::new(patterns),
        })
    }

    /// The leftmost-longest match in `hay[from..]`.
    fn find(&self, hay: &[u8], from: usize) -> Option<(usize, usize)> {
        if from >= hay.len() {
            return None;
        }
        self.ac
            .find(Input::new(hay).range(from..))
            .map(|m| (m.start(), m.end()))
    }

    /// The earliest position `p >= from` such that `hay[p..]` is a non-empty proper prefix of
    /// some pattern; `hay.len()` if there is none.
    fn open_start(&self, hay: &[u8], from: usize) -> usize {
        let len = hay.len();
        let start = from.max(len.saturating_sub(self.trie.max_open_depth));
        if start >= len {
            return len;
        }
        self.trie.open_suffix_start(&hay[start..]) + start
    }
}

const ROOT: u32 = 0;

/// A trie of the patterns with Aho-Corasick failure links, used only to find the longest
/// suffix of a text that is a proper prefix of a pattern, in time linear in the text.
/// Edges are stored flat (CSR) to keep long phrases cheap.
struct PrefixTrie {
    /// Per node: index of its first edge in `edge_bytes`/`edge_targets`; one extra entry.
    edge_start: Vec<u32>,
    edge_bytes: Vec<u8>,
    edge_targets: Vec<u32>,
    fail: Vec<u32>,
    depth: Vec<u32>,
    root_next: [u32; 256],
    /// Longest pattern length minus one: the longest possible open suffix.
    max_open_depth: usize,
}

impl PrefixTrie {
    fn new(patterns: &[Vec<u8>]) -> PrefixTrie {
        // Build with per-node sorted edge lists.
        let mut children: Vec<Vec<(u8, u32)>> = vec![Vec::new()];
        let mut depth: Vec<u32> = vec![0];
        let mut max_len = 0usize;
        for p in patterns {
            max_len = max_len.max(p.len());
            let mut node = ROOT;
            for &b in p {
                let kids = &children[node as usize];
                node = match kids.binary_search_by_key(&b, |&(k, _)| k) {
                    Ok(i) => kids[i].1,
                    Err(i) => {
                        let id = u32::try_from(children.len()).unwrap_or(u32::MAX);
                        let d = depth[node as usize].saturating_add(1);
                        children[node as usize].insert(i, (b, id));
                        children.push(Vec::new());
                        depth.push(d);
                        id
                    }
                };
            }
        }

        // Flatten.
        let n = children.len();
        let mut edge_start = Vec::with_capacity(n + 1);
        let mut edge_bytes = Vec::new();
        let mut edge_targets = Vec::new();
        for kids in &children {
            edge_start.push(u32::try_from(edge_bytes.len()).unwrap_or(u32::MAX));
            for &(b, t) in kids {
                edge_bytes.push(b);
                edge_targets.push(t);
            }
        }
        edge_start.push(u32::try_from(edge_bytes.len()).unwrap_or(u32::MAX));
        drop(children);

        let mut trie = PrefixTrie {
            edge_start,
            edge_bytes,
            edge_targets,
            fail: vec![ROOT; n],
            depth,
            root_next: [ROOT; 256],
            max_open_depth: max_len.saturating_sub(1),
        };
        for (b, t) in trie.edges(ROOT).collect::<Vec<_>>() {
            trie.root_next[usize::from(b)] = t;
        }

        // Failure links, breadth first (parents before children).
        let mut queue = std::collections::VecDeque::new();
        for (_, t) in trie.edges(ROOT) {
            queue.push_back(t);
        }
        while let Some(u) = queue.pop_front() {
            let kids: Vec<(u8, u32)> = trie.edges(u).collect();
            for (b, v) in kids {
                let mut f = trie.fail[u as usize];
                let target = loop {
                    if let Some(c) = trie.child(f, b) {
                        break c;
                    }
                    if f == ROOT {
                        break ROOT;
                    }
                    f = trie.fail[f as usize];
                };
                trie.fail[v as usize] = if target == v { ROOT } else { target };
                queue.push_back(v);
            }
        }
        trie
    }

    fn edges(&self, node: u32) -> impl Iterator<Item = (u8, u32)> + '_ {
        let (a, b) = self.edge_range(node);
        self.edge_bytes[a..b]
            .iter()
            .copied()
            .zip(self.edge_targets[a..b].iter().copied())
    }

    fn edge_range(&self, node: u32) -> (usize, usize) {
        let i = node as usize;
        match (self.edge_start.get(i), self.edge_start.get(i + 1)) {
            (Some(&a), Some(&b)) => (a as usize, b as usize),
            _ => (0, 0),
        }
    }

    fn child(&self, node: u32, b: u8) -> Option<u32> {
        if node == ROOT {
            let t = self.root_next[usize::from(b)];
            return (t != ROOT).then_some(t);
        }
        let (lo, hi) = self.edge_range(node);
        let bytes = &self.edge_bytes[lo..hi];
        let i = if bytes.len() <= 8 {
            bytes.iter().position(|&x| x == b)?
        } else {
            bytes.binary_search(&b).ok()?
        };
        self.edge_targets.get(lo + i).copied()
    }

    fn has_children(&self, node: u32) -> bool {
        let (a, b) = self.edge_range(node);
        b > a
    }

    /// Index in `text` where its longest suffix that is a proper prefix of a pattern starts
    /// (`text.len()` if none).
    fn open_suffix_start(&self, text: &[u8]) -> usize {
        let mut s = ROOT;
        for &b in text {
            s = loop {
                if let Some(c) = self.child(s, b) {
                    break c;
                }
                if s == ROOT {
                    break ROOT;
                }
                s = self.fail[s as usize];
            };
        }
        loop {
            if s == ROOT {
                return text.len();
            }
            if self.has_children(s) {
                let d = self.depth[s as usize] as usize;
                return text.len().saturating_sub(d);
            }
            s = self.fail[s as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn masker(phrases: &[&str], prefixes: &[&str]) -> Masker {
        Masker::new(
            phrases.iter().map(|s| s.to_string()),
            prefixes.iter().map(|s| s.to_string()),
        )
    }

    /// Feeds `parts` one push each, then finishes.
    fn stream(m: &mut Masker, parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            m.push(p, &mut out);
        }
        m.finish(&mut out);
        out
    }

    fn bytewise(m: &mut Masker, text: &[u8]) -> Vec<u8> {
        let parts: Vec<&[u8]> = text.chunks(1).collect();
        stream(m, &parts)
    }

    /// `"a|b|c"` → pushes "a", "b", "c".
    fn piped(m: &mut Masker, text: &str) -> String {
        let parts: Vec<&[u8]> = text.split('|').map(str::as_bytes).collect();
        String::from_utf8(stream(m, &parts)).expect("utf8")
    }

    fn check(phrases: &[&str], prefixes: &[&str], input: &str, expected: &str) {
        let m = masker(phrases, prefixes);
        assert_eq!(m.mask_str(input), expected, "mask_str of {input:?}");
        let mut s = m.clone();
        assert_eq!(
            String::from_utf8(bytewise(&mut s, input.as_bytes())).expect("utf8"),
            expected,
            "bytewise {input:?}"
        );
        assert_eq!(
            reference(input.as_bytes(), phrases, prefixes),
            expected.as_bytes(),
            "reference of {input:?}"
        );
    }

    // ----- phrases

    #[test]
    fn phrase_basic() {
        check(&["s3cr3t-value"], &[], "a s3cr3t-value b", "a [MASKED] b");
        check(
            &["s3cr3t-value"],
            &[],
            "s3cr3t-values3cr3t-value",
            "[MASKED][MASKED]",
        );
        check(&["s3cr3t-value"], &[], "s3cr3t-valu", "s3cr3t-valu");
        check(&["aaa"], &[], "aaaaaaa", "[MASKED][MASKED]a");
        check(&["aab"], &[], "aaab aab", "a[MASKED] [MASKED]");
        check(&["abcabd"], &[], "abcabcabd", "abc[MASKED]");
    }

    #[test]
    fn phrase_longest_wins() {
        check(
            &["secret", "secret123"],
            &[],
            "x secret123 secret12",
            "x [MASKED] [MASKED]12",
        );
        check(&["abcd", "cdef"], &[], "abcdef", "[MASKED]ef");
        check(&["bcd", "abcdef"], &[], "abcdeX", "a[MASKED]eX");
        check(&["abc", "abcdef"], &[], "abcdefabcde", "[MASKED][MASKED]de");
    }

    #[test]
    fn phrase_normalization() {
        // Empty and whitespace-only phrases are ignored; others trimmed like the runner does.
        check(
            &["", "  ", " padded-secret\n"],
            &[],
            "[ padded-secret ]",
            "[ [MASKED] ]",
        );
        check(&["dup-secret", "dup-secret"], &[], "dup-secret", "[MASKED]");
        check(&["pässwörd✓"], &[], "x pässwörd✓ y", "x [MASKED] y");
    }

    #[test]
    fn phrase_split_across_writes() {
        let mut m = masker(&["topsecret"], &[]);
        assert_eq!(piped(&mut m, "a top|sec|ret b"), "a [MASKED] b");
        assert_eq!(piped(&mut m, "top|secre|X"), "topsecreX");
        assert_eq!(piped(&mut m, "topsecre"), "topsecre");
    }

    #[test]
    fn phrase_holds_back_only_possible_prefixes() {
        let mut m = masker(&["topsecret"], &[]);
        let mut out = Vec::new();
        m.push(b"hello tops", &mut out);
        assert_eq!(out, b"hello ");
        m.push(b"ecr", &mut out);
        assert_eq!(out, b"hello ");
        m.push(b"et!", &mut out);
        assert_eq!(out, b"hello [MASKED]!");
        m.push(b"top", &mut out);
        m.push(b"\n", &mut out);
        assert_eq!(out, b"hello [MASKED]!top\n");
        m.finish(&mut out);
        assert_eq!(out, b"hello [MASKED]!top\n");
    }

    #[test]
    fn phrase_waits_for_longer_alternative() {
        let mut m = masker(&["cd", "abcdef"], &[]);
        let mut out = Vec::new();
        m.push(b"xabcd", &mut out);
        // "abcdef" may still follow, so neither "ab" nor "cd" can be decided yet.
        assert_eq!(out, b"x");
        m.push(b"e", &mut out);
        assert_eq!(out, b"x");
        m.push(b"Z", &mut out);
        assert_eq!(out, b"xab[MASKED]eZ");
    }

    #[test]
    fn reuse_after_finish() {
        let mut m = masker(&["secretvalue"], &[]);
        assert_eq!(piped(&mut m, "secret|"), "secret");
        assert_eq!(piped(&mut m, "value"), "value");
        assert_eq!(piped(&mut m, "secret|value"), "[MASKED]");
    }

    // ----- token prefixes

    #[test]
    fn token_prefix_basic() {
        let cases = [
            ("token glpat-abcDEF123_.=- end", "token glpat-[MASKED] end"),
            ("glpat-abc", "glpat-[MASKED]"),
            ("xglpat-abc,glpat-def", "xglpat-[MASKED],glpat-[MASKED]"),
            ("glpat- nothing", "glpat- nothing"),
            ("glpat-", "glpat-"),
            ("glpat-glpat-abc x", "glpat-[MASKED] x"),
            ("glpa-abc gl pat", "glpa-abc gl pat"),
            ("GLPAT-abc", "GLPAT-abc"),
            ("glpat-abc\x1b[0m", "glpat-[MASKED]\x1b[0m"),
        ];
        for (input, expected) in cases {
            check(&[], &[], input, expected);
        }
    }

    #[test]
    fn token_custom_prefixes() {
        let p = &["tok-", "gltok-", " tok- ", "", "glpat-"];
        check(
            &[],
            p,
            "a tok-123 gltok-test glpat-x b",
            "a tok-[MASKED] gltok-[MASKED] glpat-[MASKED] b",
        );
        // Overlapping prefixes: the longest one at the leftmost position wins.
        check(
            &[],
            &["ab-", "ab-cd-"],
            "ab-cd-ef ab-cdx",
            "ab-cd-[MASKED] ab-[MASKED]",
        );
        check(
            &[],
            &["_gitlab_session="],
            "Cookie: _gitlab_session=f00ba4; x",
            "Cookie: _gitlab_session=[MASKED]; x",
        );
    }

    #[test]
    fn token_never_leaks_while_arriving() {
        let mut m = masker(&[], &[]);
        let mut out = Vec::new();
        m.push(b"tok: gl", &mut out);
        assert_eq!(out, b"tok: ");
        m.push(b"pat-ab", &mut out);
        assert_eq!(out, b"tok: glpat-");
        m.push(b"cdef", &mut out);
        assert_eq!(out, b"tok: glpat-");
        m.push(b"gh\nnext", &mut out);
        assert_eq!(out, b"tok: glpat-[MASKED]\nnext");
        m.push(b" glpat-zz", &mut out);
        m.finish(&mut out);
        assert_eq!(out, b"tok: glpat-[MASKED]\nnext glpat-[MASKED]");
    }

    #[test]
    fn token_split_across_writes() {
        let mut m = masker(&[], &["tok-"]);
        assert_eq!(
            piped(&mut m, "glpat|-imperdiet x gl|pat-imp y to|k-|abc| z"),
            "glpat-[MASKED] x glpat-[MASKED] y tok-[MASKED] z"
        );
        assert_eq!(piped(&mut m, "glpat| -x"), "glpat -x");
    }

    // ----- URL parameters

    #[test]
    fn url_params() {
        let cases = [
            ("http://h/?test=foobar", "http://h/?test=foobar"),
            (
                "http://h/?private_token=deadbeef x",
                "http://h/?private_token=[MASKED] x",
            ),
            (
                "http://h/?a=1&authenticity_token=x==&b=2",
                "http://h/?a=1&authenticity_token=[MASKED]&b=2",
            ),
            (
                "?rss_token=hide&x-amz-credential=dead both",
                "?rss_token=[MASKED]&x-amz-credential=[MASKED] both",
            ),
            ("?X-AMZ-sigNATure=abc", "?X-AMZ-sigNATure=[MASKED]"),
            (
                "?X-Amz-Security-Token=abc\nnext",
                "?X-Amz-Security-Token=[MASKED]\nnext",
            ),
            (
                "?x-amz-security?x-amz-security-token=h",
                "?x-amz-security?x-amz-security-token=[MASKED]",
            ),
            (
                "curl \"https://h/?private_token=abc\" -o f",
                "curl \"https://h/?private_token=[MASKED]\" -o f",
            ),
            (
                "'https://h/?private_token=abc'",
                "'https://h/?private_token=[MASKED]'",
            ),
            ("?private_token=abc\x08x", "?private_token=[MASKED]\x08x"),
            ("?private_token=a?b", "?private_token=[MASKED]?b"),
            ("?private_token=&x=1", "?private_token=[MASKED]&x=1"),
            (
                "private_token=notmasked ?private_token",
                "private_token=notmasked ?private_token",
            ),
            ("? private_token=v", "? private_token=v"),
            ("?private_tokens=v", "?private_tokens=v"),
            (
                "?this-is-a-really-really-long-key-name=foo",
                "?this-is-a-really-really-long-key-name=foo",
            ),
            ("a && b ?&&?rss_token=1", "a && b ?&&?rss_token=[MASKED]"),
        ];
        for (input, expected) in cases {
            check(&[], &[], input, expected);
        }
        let long = format!("?x-amz-credential={} still", "0".repeat(8192));
        check(&[], &[], &long, "?x-amz-credential=[MASKED] still");
    }

    #[test]
    fn url_value_not_leaked_while_arriving() {
        let mut m = masker(&[], &[]);
        let mut out = Vec::new();
        m.push(b"GET /?x-amz-cred", &mut out);
        m.push(b"ential=abcdef", &mut out);
        assert_eq!(out, b"GET /?x-amz-credential=");
        m.push(b"ghij", &mut out);
        assert_eq!(out, b"GET /?x-amz-credential=");
        m.finish(&mut out);
        assert_eq!(out, b"GET /?x-amz-credential=[MASKED]");
    }

    // ----- pipeline

    #[test]
    fn phrases_are_masked_before_tokens_and_urls() {
        // The whole variable value goes, not just the part after the prefix.
        check(
            &["glpat-0123456789"],
            &[],
            "t=glpat-0123456789;",
            "t=[MASKED];",
        );
        check(
            &["abcdefgh"],
            &[],
            "?private_token=abcdefgh&x",
            "?private_token=[MASKED]&x",
        );
        check(
            &["abcdefgh"],
            &[],
            "?private_token=xabcdefgh y",
            "?private_token=[MASKED] y",
        );
    }

    #[test]
    fn non_utf8_passes_through() {
        let mut m = masker(&["sec\u{e9}ret"], &[]);
        let input = b"\xff\xfe sec\xc3\xa9ret \xc3";
        assert_eq!(bytewise(&mut m, input), b"\xff\xfe [MASKED] \xc3");
    }

    #[test]
    fn debug_does_not_print_secrets() {
        let m = masker(&["hunter2hunter2"], &[]);
        assert!(!format!("{m:?}").contains("hunter2"));
    }

    #[test]
    fn long_phrase() {
        let long: String = (0..5000)
            .map(|i| char::from(b'a' + (i % 7) as u8))
            .collect();
        let text = format!("x{long}y{}", &long[..4999]);
        check(
            &[long.as_str()],
            &[],
            &text,
            &format!("x[MASKED]y{}", &long[..4999]),
        );
    }

    // ----- reference implementation (naive, non-streaming) for the property tests

    fn reference(text: &[u8], phrases: &[&str], prefixes: &[&str]) -> Vec<u8> {
        let phrases: Vec<&[u8]> = phrases
            .iter()
            .map(|p| p.trim().as_bytes())
            .filter(|p| !p.is_empty())
            .collect();
        let mut prefixes: Vec<&[u8]> = prefixes
            .iter()
            .map(|p| p.trim().as_bytes())
            .filter(|p| !p.is_empty())
            .collect();
        prefixes.push(b"glpat-");

        // phrases: leftmost, longest
        let mut s1 = Vec::new();
        let mut i = 0;
        while i < text.len() {
            let best = phrases
                .iter()
                .filter(|p| text[i..].starts_with(p))
                .map(|p| p.len())
                .max();
            match best {
                Some(l) => {
                    s1.extend_from_slice(MASK);
                    i += l;
                }
                None => {
                    s1.push(text[i]);
                    i += 1;
                }
            }
        }

        // URL parameters
        let is_end = |b: u8| b <= b' ' || b == 0x7f || b"&?\"'".contains(&b);
        let mut s2 = Vec::new();
        let mut i = 0;
        while i < s1.len() {
            let b = s1[i];
            s2.push(b);
            i += 1;
            if b != b'?' && b != b'&' {
                continue;
            }
            let Some(j) = s1[i..]
                .iter()
                .position(|c| b"=?&".contains(c))
                .map(|j| j + i)
            else {
                continue;
            };
            let key = s1[i..j].to_ascii_lowercase();
            if s1[j] == b'=' && SENSITIVE_URL_PARAMS.iter().any(|p| p.as_bytes() == key) {
                s2.extend_from_slice(&s1[i..=j]);
                let k = s1[j + 1..]
                    .iter()
                    .position(|&c| is_end(c))
                    .map_or(s1.len(), |k| k + j + 1);
                s2.extend_from_slice(MASK);
                i = k;
            }
        }

        // token prefixes
        let mut s3 = Vec::new();
        let mut i = 0;
        while i < s2.len() {
            let best = prefixes
                .iter()
                .filter(|p| s2[i..].starts_with(p))
                .map(|p| p.len())
                .max();
            match best {
                Some(l) => {
                    s3.extend_from_slice(&s2[i..i + l]);
                    i += l;
                    let n = s2[i..]
                        .iter()
                        .take_while(|&&c| TOKEN_ALPHABET[usize::from(c)])
                        .count();
                    if n > 0 {
                        s3.extend_from_slice(MASK);
                    }
                    i += n;
                }
                None => {
                    s3.push(s2[i]);
                    i += 1;
                }
            }
        }
        s3
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
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

    fn phrase_strategy() -> impl Strategy<Value = Vec<String>> {
        // Lower-case letters and digits only: none of them occur in "[MASKED]", so a phrase
        // can never be re-formed from the replacement text.
        prop::collection::vec("[abcx12-]{1,9}", 0..5)
    }

    fn text_strategy(phrases: Vec<String>) -> impl Strategy<Value = (Vec<String>, Vec<u8>)> {
        let mut frags: Vec<Vec<u8>> = vec![
            b"glpat-".to_vec(),
            b"gl".to_vec(),
            b"glpa".to_vec(),
            b"tok-".to_vec(),
            b"gltok-".to_vec(),
            b"?private_token=".to_vec(),
            b"&X-Amz-Credential=".to_vec(),
            b"?x-amz-".to_vec(),
            "é😀".as_bytes().to_vec(),
            b"\xff\xc3".to_vec(),
        ];
        frags.extend(phrases.iter().map(|p| p.as_bytes().to_vec()));
        let frag = prop_oneof![
            3 => prop::sample::select(frags).boxed(),
            4 => prop::collection::vec(prop::sample::select(b"abcx12-_=?&\"' \n.".to_vec()), 0..8).boxed(),
        ];
        (
            Just(phrases),
            prop::collection::vec(frag, 0..40).prop_map(|v| v.concat()),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn streaming_equals_one_shot_and_reference(
            (phrases, text) in phrase_strategy().prop_flat_map(text_strategy),
            points in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let prefixes = ["tok-", "gltok-"];
            let ph: Vec<&str> = phrases.iter().map(String::as_str).collect();
            let m = masker(&ph, &prefixes);

            let mut whole = m.clone();
            let one_shot = stream(&mut whole, &[&text]);
            let mut split = m.clone();
            let parts = split_at_points(&text, &points);
            let streamed = stream(&mut split, &parts);
            let mut bytes = m.clone();
            let bytewise = bytewise(&mut bytes, &text);

            prop_assert_eq!(&streamed, &one_shot);
            prop_assert_eq!(&bytewise, &one_shot);
            prop_assert_eq!(&one_shot, &reference(&text, &ph, &prefixes));
            for p in &phrases {
                prop_assert!(!contains(&one_shot, p.as_bytes()), "phrase {:?} leaked", p);
            }
        }

        #[test]
        fn streamed_prefix_never_exceeds_final_output(
            (phrases, text) in phrase_strategy().prop_flat_map(text_strategy),
            points in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            // Whatever was emitted before finish is a prefix of the final output: nothing is
            // ever emitted that a later byte would have masked.
            let ph: Vec<&str> = phrases.iter().map(String::as_str).collect();
            let mut m = masker(&ph, &["tok-"]);
            let mut out = Vec::new();
            let expected = m.clone().mask_bytes_for_test(&text);
            for part in split_at_points(&text, &points) {
                m.push(part, &mut out);
                prop_assert!(expected.starts_with(&out));
            }
            m.finish(&mut out);
            prop_assert_eq!(out, expected);
        }
    }

    impl Masker {
        fn mask_bytes_for_test(&mut self, text: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            self.push(text, &mut out);
            self.finish(&mut out);
            out
        }
    }

    /// Throughput check: `cargo test -p oar-job --release --lib mask::tests::throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "performance measurement, run manually in release mode"]
    fn throughput() {
        let phrases: Vec<String> = (0..20)
            .map(|i| format!("s3cr3t-{i:02}-Zq8PxY7mW2kL"))
            .collect();
        let m = Masker::new(phrases, Vec::new());
        let line = "2024-01-01T00:00:00Z Compiling serde v1.0.219 (registry+https://example/?a=b&c=d) \
                    Running `rustc --crate-name foo src/lib.rs --edition=2021` Finished in 3.2s\n";
        let text = line.repeat(64 * 1024 * 1024 / line.len());
        let mut mm = m.clone();
        let mut out = Vec::with_capacity(text.len());
        let t = tokio::time::Instant::now();
        for chunk in text.as_bytes().chunks(8192) {
            out.clear();
            mm.push(chunk, &mut out);
        }
        mm.finish(&mut out);
        let secs = t.elapsed().as_secs_f64();
        println!(
            "masking throughput: {:.0} MB/s",
            text.len() as f64 / secs / 1e6
        );
    }
}
