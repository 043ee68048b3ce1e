//! `allowed_images` / `allowed_services` glob matching, with the semantics of the doublestar
//! library GitLab Runner uses (`doublestar.Match`).
//!
//! - `/` separates path components; the whole image reference is matched, tag included
//!   (`ruby:*` matches `ruby:3.3`, not `library/ruby:3.3`).
//! - `*` matches any run of characters within one component, `?` one character.
//! - `**` as a whole component matches zero or more components: `registry.example.com/**`
//!   matches every image below that registry; `**/ruby:*` matches `ruby:3` and `a/b/ruby:3`.
//!   Elsewhere (`a**b`) it is a plain `*`.
//! - `[abc]`, `[a-z]`, `[!a-z]` / `[^a-z]` match one character of (or not of) a class.
//! - `{alt1,alt2}` matches either alternative (alternatives may nest).
//! - `\x` matches `x` literally.
//!
//! A malformed pattern (an unclosed `[` or `{`, a trailing `\`) matches nothing, as doublestar
//! returns `ErrBadPattern` and GitLab Runner treats that as no match.

/// At most this many brace alternatives are tried per pattern.
const MAX_ALTERNATIVES: usize = 1024;

/// Whether `name` matches `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let Some(alternatives) = expand_braces(pattern) else {
        return false;
    };
    let names: Vec<&str> = name.split('/').collect();
    alternatives.iter().any(|alt| {
        let parts: Vec<&str> = split_components(alt);
        match_components(&parts, &names)
    })
}

/// Splits on `/` that are not escaped.
fn split_components(pattern: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in pattern.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '/' => {
                parts.push(&pattern[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&pattern[start..]);
    parts
}

fn match_components(parts: &[&str], names: &[&str]) -> bool {
    match parts.split_first() {
        None => names.is_empty(),
        Some((&"**", rest)) => (0..=names.len()).any(|skip| match_components(rest, &names[skip..])),
        Some((part, rest)) => match names.split_first() {
            Some((name, names)) => {
                match_component(part.as_bytes(), name.as_bytes()) == Some(true)
                    && match_components(rest, names)
            }
            None => false,
        },
    }
}

/// Matches one component; `None` for a malformed pattern.
fn match_component(pattern: &[u8], name: &[u8]) -> Option<bool> {
    // Iterative matching with backtracking to the last `*`.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    star = Some((p, n));
                    continue;
                }
                b'?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' => {
                    let (matched, next) = match_class(&pattern[p..], name[n])?;
                    if matched {
                        p += next;
                        n += 1;
                        continue;
                    }
                }
                b'\\' => {
                    let literal = *pattern.get(p + 1)?;
                    if literal == name[n] {
                        p += 2;
                        n += 1;
                        continue;
                    }
                }
                c if c == name[n] => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((star_p, star_n)) => {
                p = star_p;
                n = star_n + 1;
                star = Some((star_p, star_n + 1));
            }
            None => {
                // Still check the rest of the pattern is well-formed.
                return well_formed(&pattern[p..]).then_some(false);
            }
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    if p == pattern.len() {
        Some(true)
    } else {
        well_formed(&pattern[p..]).then_some(false)
    }
}

fn well_formed(pattern: &[u8]) -> bool {
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 >= pattern.len() => return false,
            b'\\' => i += 2,
            b'[' => match match_class(&pattern[i..], 0) {
                Some((_, len)) => i += len,
                None => return false,
            },
            _ => i += 1,
        }
    }
    true
}

/// Matches `c` against the class at the start of `pattern` (`[...]`); returns whether it
/// matched and the class's length, or `None` if it is unclosed.
fn match_class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negated = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let mut lo = *pattern.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negated, i + 1));
        }
        first = false;
        if lo == b'\\' {
            i += 1;
            lo = *pattern.get(i)?;
        }
        i += 1;
        let mut hi = lo;
        if pattern.get(i) == Some(&b'-') && pattern.get(i + 1).is_some_and(|b| *b != b']') {
            i += 1;
            hi = *pattern.get(i)?;
            if hi == b'\\' {
                i += 1;
                hi = *pattern.get(i)?;
            }
            i += 1;
        }
        if lo <= c && c <= hi {
            matched = true;
        }
    }
}

/// Expands `{a,b}` alternatives; `None` when unbalanced or too many.
fn expand_braces(pattern: &str) -> Option<Vec<String>> {
    let bytes = pattern.as_bytes();
    // Find the first unescaped `{` and its matching `}`.
    let mut i = 0;
    let mut open = None;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'{' => {
                open = Some(i);
                break;
            }
            _ => {}
        }
        i += 1;
    }
    let Some(open) = open else {
        return Some(vec![pattern.to_owned()]);
    };
    let mut depth = 0;
    let mut commas = Vec::new();
    let mut close = None;
    let mut j = open;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 1,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(j);
                    break;
                }
            }
            b',' if depth == 1 => commas.push(j),
            _ => {}
        }
        j += 1;
    }
    let close = close?;
    let prefix = &pattern[..open];
    let suffix = &pattern[close + 1..];
    let mut bounds = vec![open];
    bounds.extend(commas);
    bounds.push(close);
    let mut out = Vec::new();
    for pair in bounds.windows(2) {
        let alternative = &pattern[pair[0] + 1..pair[1]];
        for expanded in expand_braces(&format!("{prefix}{alternative}{suffix}"))? {
            out.push(expanded);
            if out.len() > MAX_ALTERNATIVES {
                return None;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn tags_and_components() {
        assert!(matches("ruby:*", "ruby:3.3"));
        assert!(!matches("ruby:*", "library/ruby:3.3"));
        assert!(matches("*", "alpine"));
        assert!(!matches("*", "group/alpine"));
        assert!(matches("debian:bookworm", "debian:bookworm"));
        assert!(!matches("debian:bookworm", "debian:bookworm-slim"));
        assert!(matches("debian:bookworm*", "debian:bookworm-slim"));
        assert!(matches("python:3.1?", "python:3.12"));
        assert!(!matches("python:3.1?", "python:3.1"));
    }

    #[test]
    fn doublestar() {
        assert!(matches(
            "registry.example.com/**",
            "registry.example.com/a/b/c:1"
        ));
        assert!(matches("registry.example.com/**", "registry.example.com/x"));
        assert!(matches("registry.example.com/**", "registry.example.com"));
        assert!(!matches(
            "registry.example.com/**",
            "registry.example.org/x"
        ));
        assert!(matches("**/ruby:*", "ruby:3"));
        assert!(matches("**/ruby:*", "a/b/ruby:3"));
        assert!(matches("a/**/b", "a/b"));
        assert!(matches("a/**/b", "a/x/y/b"));
        assert!(!matches("a/**/b", "a/x/y/c"));
        assert!(matches("**", "anything/at/all:1"));
        // Not a whole component: a plain star.
        assert!(matches("a**b", "axxb"));
        assert!(!matches("a**b", "a/b"));
    }

    #[test]
    fn classes_braces_escapes() {
        assert!(matches("node:[0-9]*", "node:20-alpine"));
        assert!(!matches("node:[!0-9]*", "node:20-alpine"));
        assert!(matches("node:[^0-9]*", "node:lts"));
        assert!(matches("{alpine,debian}:*", "debian:12"));
        assert!(matches("{alpine,debian}:*", "alpine:3"));
        assert!(!matches("{alpine,debian}:*", "ubuntu:24.04"));
        assert!(matches("reg/{a,b/{c,d}}:*", "reg/b/d:1"));
        assert!(matches(r"weird\*name", "weird*name"));
        assert!(!matches(r"weird\*name", "weirdXname"));
    }

    #[test]
    fn malformed_patterns_match_nothing() {
        assert!(!matches("alpine[", "alpine["));
        assert!(!matches("{alpine", "alpine"));
        assert!(matches("alpine}", "alpine}"));
        assert!(!matches("x*[", "xyz"));
    }
}
