//! Path globs as GitLab matches them for `changes`, `exists` and wildcard includes
//! (Ruby's `File.fnmatch` with `FNM_PATHNAME | FNM_DOTMATCH | FNM_EXTGLOB`): `*` and `?` stay
//! within a directory, `**/` spans directories, `[a-z]` classes, `{a,b}` alternatives.

use regex::Regex;

/// A compiled glob.
#[derive(Debug, Clone)]
pub struct Glob {
    re: Regex,
}

impl Glob {
    /// Compiles `pattern`; a leading `/` or `./` is ignored.
    ///
    /// # Errors
    /// A message when the pattern cannot be compiled (an unclosed class, for example).
    pub fn new(pattern: &str) -> Result<Self, String> {
        let pattern = pattern
            .strip_prefix("./")
            .unwrap_or(pattern)
            .trim_start_matches('/');
        let mut re = String::from("^");
        let chars: Vec<char> = pattern.chars().collect();
        let mut i = 0;
        let mut braces = 0usize;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '*' => {
                    if chars.get(i + 1) == Some(&'*') {
                        let at_start = i == 0 || chars[i - 1] == '/';
                        if at_start && chars.get(i + 2) == Some(&'/') {
                            re.push_str("(?:[^/]*/)*");
                            i += 3;
                            continue;
                        }
                        if at_start && i + 2 == chars.len() {
                            re.push_str(".*");
                            i += 2;
                            continue;
                        }
                        re.push_str("[^/]*");
                        i += 2;
                        continue;
                    }
                    re.push_str("[^/]*");
                }
                '?' => re.push_str("[^/]"),
                '[' => {
                    let close = chars[i + 1..]
                        .iter()
                        .position(|&c| c == ']')
                        .map(|p| p + i + 1);
                    let Some(close) = close else {
                        return Err(format!("unclosed [ in {pattern:?}"));
                    };
                    re.push('[');
                    let mut body: String = chars[i + 1..close].iter().collect();
                    if let Some(rest) = body.strip_prefix('!') {
                        body = format!("^{rest}");
                    }
                    re.push_str(&body.replace('\\', "\\\\").replace('[', "\\["));
                    re.push(']');
                    i = close;
                }
                '{' => {
                    braces += 1;
                    re.push_str("(?:");
                }
                '}' if braces > 0 => {
                    braces -= 1;
                    re.push(')');
                }
                ',' if braces > 0 => re.push('|'),
                '\\' if i + 1 < chars.len() => {
                    i += 1;
                    re.push_str(&regex::escape(&chars[i].to_string()));
                }
                c => re.push_str(&regex::escape(&c.to_string())),
            }
            i += 1;
        }
        if braces > 0 {
            return Err(format!("unclosed {{ in {pattern:?}"));
        }
        re.push('$');
        Regex::new(&re)
            .map(|re| Self { re })
            .map_err(|e| e.to_string())
    }

    /// Whether the repo-relative `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        self.re.is_match(
            path.strip_prefix("./")
                .unwrap_or(path)
                .trim_start_matches('/'),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("*.md", "README.md", true),
            ("*.md", "docs/a.md", false),
            ("docs/**/*", "docs/a/b.md", true),
            ("docs/**/*.md", "docs/a.md", true),
            ("**/*.rs", "src/lib.rs", true),
            ("**/*.rs", "lib.rs", true),
            ("src/*.{rs,toml}", "src/a.toml", true),
            ("src/*.{rs,toml}", "src/a.txt", false),
            ("a?c", "abc", true),
            ("[ab]x", "bx", true),
            ("[!ab]x", "cx", true),
            ("/Dockerfile", "Dockerfile", true),
            ("Dockerfile", "sub/Dockerfile", false),
            ("docs/**", "docs/x/y", true),
            (".hidden/*", ".hidden/a", true),
        ];
        for (p, path, want) in cases {
            assert_eq!(Glob::new(p).unwrap().matches(path), *want, "{p} vs {path}");
        }
        assert!(Glob::new("[abc").is_err());
        assert!(Glob::new("{a,b").is_err());
    }
}
