//! A path matcher with the semantics of Go's `github.com/bmatcuk/doublestar/v4` `Match`, which
//! GitLab Runner uses for `artifacts:paths`, `cache:paths` and `exclude`.
//!
//! - `*` matches any run of characters except `/`; `?` one character except `/`;
//! - `[abc]`, `[a-z]`, `[^a]`/`[!a]` character classes (never `/`);
//! - `{a,b}` alternatives, which may nest and may contain `/`;
//! - `**` as a whole path segment matches zero or more segments (`a/**` also matches `a`,
//!   `**/c` also matches `c`); elsewhere (`a**`) it is the same as `*`;
//! - `\` escapes the next character;
//! - `*` and `?` match leading dots (unlike a shell).
//!
//! A malformed pattern (unclosed `[` or `{`, trailing `\`, empty class) is an error, as
//! doublestar's `ErrBadPattern`.

use std::fmt;

/// The most alternatives a pattern's `{...}` groups may expand to.
const MAX_ALTERNATIVES: usize = 1024;

/// A malformed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadPattern(pub(crate) &'static str);

impl fmt::Display for BadPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "syntax error in pattern: {}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `[...]`: ranges (inclusive), negated or not.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// `**` alone in a segment.
    Any,
    Toks(Vec<Tok>),
}

/// A compiled pattern: the alternatives its braces expand to, each a list of segments.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    alts: Vec<Vec<Seg>>,
}

/// Whether `s` contains an unescaped glob meta character (`*?[{`), as GitLab checks before
/// splitting a pattern into a literal base and a glob.
pub(crate) fn has_meta(s: &str) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' | '{' => return true,
            _ => {}
        }
    }
    false
}

/// Removes backslash escapes from a literal path.
pub(crate) fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Pattern {
    /// Compiles a `/`-separated pattern.
    pub(crate) fn new(pattern: &str) -> Result<Pattern, BadPattern> {
        let mut alts = Vec::new();
        for alt in expand_braces(pattern)? {
            let segs = split_segments(&alt)
                .into_iter()
                .filter(|s| !s.is_empty())
                .map(|s| {
                    if s == "**" {
                        Ok(Seg::Any)
                    } else {
                        parse_segment(s).map(Seg::Toks)
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            alts.push(segs);
        }
        Ok(Pattern { alts })
    }

    /// Whether the whole of `path` (relative, `/`-separated) matches.
    pub(crate) fn matches(&self, path: &str) -> bool {
        let names: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        self.alts
            .iter()
            .any(|segs| run(segs, &names).contains(&segs.len()))
    }

    /// Whether some path strictly below the directory `dir` could match, so that a walk must
    /// descend into it.
    pub(crate) fn may_match_below(&self, dir: &str) -> bool {
        let names: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
        self.alts
            .iter()
            .any(|segs| run(segs, &names).iter().any(|&i| i < segs.len()))
    }
}

/// Runs the segment automaton over `names`: the set of pattern positions reachable after
/// consuming all of them (a position equal to `segs.len()` means a full match).
fn run(segs: &[Seg], names: &[&str]) -> Vec<usize> {
    let mut states = closure(segs, vec![0]);
    for name in names {
        let mut next = Vec::new();
        for &i in &states {
            match segs.get(i) {
                Some(Seg::Any) => next.push(i),
                Some(Seg::Toks(toks)) if match_segment(toks, name) => next.push(i + 1),
                _ => {}
            }
        }
        states = closure(segs, next);
        if states.is_empty() {
            break;
        }
    }
    states
}

/// Adds the positions reachable by letting `**` match zero segments; sorts and dedups.
fn closure(segs: &[Seg], mut states: Vec<usize>) -> Vec<usize> {
    let mut k = 0;
    while k < states.len() {
        let i = states[k];
        if matches!(segs.get(i), Some(Seg::Any)) && !states.contains(&(i + 1)) {
            states.push(i + 1);
        }
        k += 1;
    }
    states.sort_unstable();
    states.dedup();
    states
}

/// Splits on unescaped `/`.
fn split_segments(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '/' {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// Expands `{a,b}` groups (nested, escapes respected) into plain alternatives.
fn expand_braces(s: &str) -> Result<Vec<String>, BadPattern> {
    // Find the first unescaped '{' outside classes.
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut open = None;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '[' => {
                // Skip a class so that `[{]` is not taken for a group.
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '^' || chars[j] == '!') {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    if chars[j] == '\\' {
                        j += 1;
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(BadPattern("unclosed '['"));
                }
                i = j;
            }
            '{' => {
                open = Some(i);
                break;
            }
            _ => {}
        }
        i += 1;
    }
    let Some(open) = open else {
        return Ok(vec![s.to_string()]);
    };
    // Find the matching '}' and the top-level commas.
    let mut depth = 0usize;
    let mut commas = Vec::new();
    let mut close = None;
    let mut j = open + 1;
    while j < chars.len() {
        match chars[j] {
            '\\' => j += 1,
            '{' => depth += 1,
            '}' if depth == 0 => {
                close = Some(j);
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => commas.push(j),
            _ => {}
        }
        j += 1;
    }
    let Some(close) = close else {
        return Err(BadPattern("unclosed '{'"));
    };
    let prefix: String = chars[..open].iter().collect();
    let suffix: String = chars[close + 1..].iter().collect();
    let mut bounds = vec![open];
    bounds.extend(&commas);
    bounds.push(close);
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let inner: String = chars[w[0] + 1..w[1]].iter().collect();
        for expanded in expand_braces(&format!("{prefix}{inner}{suffix}"))? {
            out.push(expanded);
            if out.len() > MAX_ALTERNATIVES {
                return Err(BadPattern("too many '{...}' alternatives"));
            }
        }
    }
    Ok(out)
}

fn parse_segment(s: &str) -> Result<Vec<Tok>, BadPattern> {
    let chars: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                let c = *chars.get(i + 1).ok_or(BadPattern("trailing '\\'"))?;
                toks.push(Tok::Lit(c));
                i += 2;
            }
            '*' => {
                if toks.last() != Some(&Tok::Star) {
                    toks.push(Tok::Star);
                }
                i += 1;
            }
            '?' => {
                toks.push(Tok::One);
                i += 1;
            }
            '[' => {
                let (tok, next) = parse_class(&chars, i + 1)?;
                toks.push(tok);
                i = next;
            }
            c => {
                toks.push(Tok::Lit(c));
                i += 1;
            }
        }
    }
    Ok(toks)
}

/// Parses a class body starting just after `[`; returns the token and the index after `]`.
fn parse_class(chars: &[char], mut i: usize) -> Result<(Tok, usize), BadPattern> {
    let mut negated = false;
    if matches!(chars.get(i), Some('^' | '!')) {
        negated = true;
        i += 1;
    }
    let mut ranges = Vec::new();
    let literal = |i: &mut usize| -> Result<char, BadPattern> {
        match chars.get(*i) {
            Some('\\') => {
                let c = *chars.get(*i + 1).ok_or(BadPattern("unclosed '['"))?;
                *i += 2;
                Ok(c)
            }
            Some(&c) => {
                *i += 1;
                Ok(c)
            }
            None => Err(BadPattern("unclosed '['")),
        }
    };
    loop {
        match chars.get(i) {
            None => return Err(BadPattern("unclosed '['")),
            Some(']') => {
                if ranges.is_empty() {
                    return Err(BadPattern("empty character class"));
                }
                return Ok((Tok::Class { negated, ranges }, i + 1));
            }
            Some(_) => {
                let lo = literal(&mut i)?;
                if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&c| c != ']') {
                    i += 1;
                    let hi = literal(&mut i)?;
                    if hi < lo {
                        return Err(BadPattern("character range out of order"));
                    }
                    ranges.push((lo, hi));
                } else {
                    ranges.push((lo, lo));
                }
            }
        }
    }
}

fn tok_matches_one(tok: &Tok, c: char) -> bool {
    match tok {
        Tok::Lit(l) => *l == c,
        Tok::One => c != '/',
        Tok::Class { negated, ranges } => {
            c != '/' && ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
        }
        Tok::Star => false,
    }
}

/// Matches one path segment (no `/` in `name`) against a token list, with `*` backtracking.
fn match_segment(toks: &[Tok], name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    let (mut t, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if t < toks.len() && toks[t] == Tok::Star {
            star = Some((t, n));
            t += 1;
        } else if t < toks.len() && tok_matches_one(&toks[t], name[n]) {
            t += 1;
            n += 1;
        } else if let Some((st, sn)) = star {
            t = st + 1;
            n = sn + 1;
            star = Some((st, sn + 1));
        } else {
            return false;
        }
    }
    toks[t..].iter().all(|tok| *tok == Tok::Star)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Pattern::new(p).unwrap().matches(s)
    }

    /// Cases from doublestar v4's own match table.
    #[test]
    fn doublestar_match_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "ab", false),
            ("a\\*b", "a*b", true),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a[!a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[-]", "-", true),
            ("[x-]", "-", true),
            ("[-x]", "x", true),
            ("*x", "xxx", true),
            ("[abc]", "b", true),
            ("[a-z0-9]", "1", true),
            ("a/**", "a", true),
            ("a/**", "a/b", true),
            ("a/**", "a/b/c", true),
            ("**/c", "c", true),
            ("**/c", "b/c", true),
            ("**/c", "a/b/c", true),
            ("**/c", "a/b", false),
            ("**/c", "abcd", false),
            ("**/c", "a/abc", false),
            ("a/**/b", "a/b", true),
            ("a/**/c", "a/b/c", true),
            ("a/**/d", "a/b/c/d", true),
            ("a/\\**", "a/b/c", false),
            ("ab{c,d}", "abc", true),
            ("ab{c,d,*}", "abcde", true),
            ("a{,bc}", "a", true),
            ("a{,bc}", "abc", true),
            ("a/{b/c,c/b}", "a/b/c", true),
            ("a/{b/c,c/b}", "a/c/b", true),
            ("{a/{b,c},abc}", "a/b", true),
            ("{a/{b,c},abc}", "abc", true),
            ("{a/{b,c},abc}", "a/b/c", false),
            ("abc**", "abc", true),
            ("abc**", "abc/b", false),
            ("**abc", "abc", true),
            ("**/*.txt", "abc/【test】.txt", true),
            ("**/{a,b}", "a/b", true),
            ("a/*/*/d", "a/b/c/d", true),
            ("*", ".hidden", true),
            ("**/*.txt", ".dir/.f.txt", true),
        ];
        for &(p, s, want) in cases {
            assert_eq!(m(p, s), want, "Match({p:?}, {s:?})");
        }
    }

    #[test]
    fn bad_patterns() {
        for p in ["[", "a[", "[^", "[^bc", "\\", "a{b", "[]a]", "ab{c,d}["] {
            assert!(Pattern::new(p).is_err(), "{p:?} should be malformed");
        }
    }

    #[test]
    fn descend_pruning() {
        let p = Pattern::new("foo/*/bar/*.txt").unwrap();
        assert!(p.may_match_below("foo"));
        assert!(p.may_match_below("foo/x"));
        assert!(p.may_match_below("foo/x/bar"));
        assert!(!p.may_match_below("foo/x/bar/y"));
        assert!(!p.may_match_below("other"));
        let p = Pattern::new("**/target").unwrap();
        assert!(p.may_match_below("a/b/c"));
        let p = Pattern::new("a/**").unwrap();
        assert!(p.may_match_below("a/b"));
        assert!(!p.may_match_below("b"));
    }

    #[test]
    fn meta_and_unescape() {
        assert!(has_meta("a/*.txt"));
        assert!(has_meta("a/{b,c}"));
        assert!(!has_meta("a/b\\*c"));
        assert_eq!(unescape("e/\\[x\\]"), "e/[x]");
    }
}
