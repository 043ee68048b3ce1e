//! Cache keys: GitLab Runner's sanitising (`cache/cachekey`) and default key.

use crate::s3::{go_path_clean, go_path_join};

/// Why a cache key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is empty.
    #[error("empty cache key")]
    Empty,
    /// Nothing is left of the key once sanitized (e.g. `..` or `/ /`).
    #[error("cache key {0:?} could not be sanitized")]
    Unsanitizable(String),
}

/// Sanitizes a cache key as GitLab Runner does, so that it is a safe relative path (for the
/// local `<cache dir>/<key>/` directory) and object name suffix:
///
/// 1. `%2f`/`%2F` become `/`, `%2e`/`%2E` become `.`, `\` becomes `/` (one pass);
/// 2. the result is cleaned like Go's `path.Clean("/" + key)`, so `..` cannot climb out, and
///    the leading `/` dropped;
/// 3. trailing whitespace is trimmed from the last segments, dropping those left empty.
///
/// An empty key is [`KeyError::Empty`]; a key with nothing left is
/// [`KeyError::Unsanitizable`]. GitLab Runner warns `cache key "<raw>" sanitized to
/// "<clean>"` when the key changed; [`restore`](super::restore) and [`save`](super::save) do
/// the same.
pub fn sanitize_key(raw: &str) -> Result<String, KeyError> {
    if raw.is_empty() {
        return Err(KeyError::Empty);
    }
    let mut key = normalise(raw);
    // Trimming can turn `..  ` into `..`: clean again until stable, so that the result never
    // has `.`/`..` segments (GitLab Runner keeps them, but the object name and local path it
    // derives resolve them anyway, to the same place as here).
    loop {
        let next = clean_and_trim(&key);
        if next == key {
            break;
        }
        key = next;
    }
    if key.is_empty() {
        return Err(KeyError::Unsanitizable(raw.to_owned()));
    }
    Ok(key)
}

/// `path.Clean("/" + key)` without the leading `/`, then trailing whitespace trimmed from the
/// last segments, dropping those left empty.
fn clean_and_trim(key: &str) -> String {
    let cleaned = go_path_clean(&format!("/{key}"));
    let mut parts: Vec<&str> = cleaned[1..].split('/').collect();
    while let Some(last) = parts.last_mut() {
        *last = last.trim_end();
        if !last.is_empty() {
            break;
        }
        parts.pop();
    }
    parts.join("/")
}

/// Decodes `%2f` and `%2e` (either case) and turns `\` into `/`, in a single left-to-right
/// pass (Go's `strings.NewReplacer`): `%252f` stays `%252f`.
fn normalise(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(c) = rest.chars().next() {
        if c == '\\' {
            out.push('/');
            rest = &rest[1..];
            continue;
        }
        if let Some(code) = rest.get(..3) {
            match code {
                "%2f" | "%2F" => {
                    out.push('/');
                    rest = &rest[3..];
                    continue;
                }
                "%2e" | "%2E" => {
                    out.push('.');
                    rest = &rest[3..];
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The key of a cache without `key:`: `<job name>/<git ref>`, joined and cleaned like Go's
/// `path.Join("/", name, ref)` without the leading `/`.
pub fn default_key(job_name: &str, git_ref: &str) -> String {
    let joined = go_path_join(&["/", job_name, git_ref]);
    joined.trim_start_matches('/').to_owned()
}

/// Whether `CACHE_FALLBACK_KEY`'s value may be used: GitLab Runner refuses values ending in
/// `-protected` (ignoring trailing dots and spaces), so that unprotected branches cannot
/// read protected caches through it. When refused, GitLab Runner warns
/// `CACHE_FALLBACK_KEY "<key>" not allowed to end in "-protected"`.
pub fn fallback_key_allowed(key: &str) -> bool {
    !key.trim_end_matches(['.', ' ']).ends_with("-protected")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizing_follows_gitlab_runner() {
        let ok = |raw: &str| sanitize_key(raw).unwrap();
        assert_eq!(ok("main"), "main");
        assert_eq!(ok("cargo-main-protected"), "cargo-main-protected");
        assert_eq!(ok("build/main"), "build/main");
        assert_eq!(ok("a%2Fb%2fc"), "a/b/c");
        assert_eq!(ok("%2e%2E/x"), "x");
        assert_eq!(ok(r"win\path\key"), "win/path/key");
        assert_eq!(ok("../../etc/passwd"), "etc/passwd");
        assert_eq!(ok("a/../../b"), "b");
        assert_eq!(ok("/abs/key/"), "abs/key");
        assert_eq!(ok("a//b/./c"), "a/b/c");
        assert_eq!(ok("key  "), "key");
        assert_eq!(ok("key/ \t/  "), "key");
        assert_eq!(ok("  lead"), "  lead", "leading whitespace is kept");
        assert_eq!(ok("mid dle/x"), "mid dle/x");
        assert_eq!(ok("%252f"), "%252f", "one pass only");
        assert_eq!(ok("ünïcode/ключ"), "ünïcode/ключ");
        assert_eq!(
            ok("a/b/..  "),
            "a",
            "`..` uncovered by trimming is resolved too"
        );
        assert_eq!(ok("a/. "), "a");

        assert_eq!(sanitize_key(""), Err(KeyError::Empty));
        for bad in ["..", "/", " ", "%2e%2e", "./ /", r"\", "..  ", "a/..  "] {
            assert_eq!(
                sanitize_key(bad),
                Err(KeyError::Unsanitizable(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            KeyError::Unsanitizable("..".into()).to_string(),
            r#"cache key ".." could not be sanitized"#
        );
    }

    #[test]
    fn sanitizing_is_idempotent() {
        for raw in ["a%2f..%2fb ", r"x\..\y", "k/./ ", "plain"] {
            let once = sanitize_key(raw).unwrap();
            assert_eq!(sanitize_key(&once).unwrap(), once, "{raw:?}");
        }
    }

    #[test]
    fn default_keys() {
        assert_eq!(default_key("build", "main"), "build/main");
        assert_eq!(default_key("test:unit", "feature/x"), "test:unit/feature/x");
        assert_eq!(default_key("job", "../x"), "x");
        assert_eq!(default_key("", ""), "");
    }

    #[test]
    fn protected_fallback_keys_are_refused() {
        assert!(fallback_key_allowed("main"));
        assert!(fallback_key_allowed("protected-main"));
        assert!(!fallback_key_allowed("cache-main-protected"));
        assert!(!fallback_key_allowed("cache-main-protected. . "));
    }
}
