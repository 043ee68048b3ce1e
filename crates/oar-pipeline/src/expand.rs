//! `$VAR` / `${VAR}` expansion, as GitLab expands variables in `changes`, `exists`,
//! `environment`, `workflow:name` and `expand_vars`.

use indexmap::IndexMap;

/// Expansion results are cut at this many bytes: values that refer to each other can
/// otherwise grow exponentially (`A: $A$A$A...`, nested eight levels deep).
pub const MAX_EXPANDED: usize = 1 << 20;
/// Expansion stops after reading this many bytes of text and values, even when the result
/// stays short (values that expand to nothing, many times over).
const MAX_WORK: usize = 16 << 20;

/// Expands `$NAME` and `${NAME}` from `vars`; unknown variables become empty, `$$` is a `$`.
/// Values are expanded again (up to eight levels); the result is cut at [`MAX_EXPANDED`]
/// bytes.
pub fn expand(text: &str, vars: &IndexMap<String, String>) -> String {
    if !text.contains('$') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len().min(MAX_EXPANDED));
    let mut work = 0;
    expand_into(text, vars, 0, &mut out, &mut work);
    out
}

/// GitLab's `ExpandVariables.expand_existing`, which the `expand_vars` input function uses:
/// `$NAME` and `${NAME}` of a variable in `vars` become its value as it is (not expanded
/// again); any other text, unknown variables and `$$` included, stays as written. The result
/// is cut at [`MAX_EXPANDED`] bytes.
pub fn expand_existing(text: &str, vars: &IndexMap<String, String>) -> String {
    if !text.contains('$') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len().min(MAX_EXPANDED));
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match vars.get(name).filter(|_| !name.is_empty()) {
            Some(value) => {
                out.push_str(value);
                rest = &after[len..];
            }
            None => {
                // `$$` stays `$$`: the second `$` is not the start of a variable here.
                let keep = if after.starts_with('$') { 2 } else { 1 };
                out.push_str(&rest[at..at + keep]);
                rest = &rest[at + keep..];
            }
        }
        if out.len() > MAX_EXPANDED {
            let mut cut = MAX_EXPANDED;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            return out;
        }
    }
    out.push_str(rest);
    out
}

/// Appends the expansion of `text` to `out`; false once `out` is full.
fn expand_into(
    text: &str,
    vars: &IndexMap<String, String>,
    depth: usize,
    out: &mut String,
    work: &mut usize,
) -> bool {
    *work += text.len() + 1;
    if *work > MAX_WORK {
        return false;
    }
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let push = |out: &mut String, c: char| {
        if out.len() + c.len_utf8() > MAX_EXPANDED {
            return false;
        }
        out.push(c);
        true
    };
    while i < chars.len() {
        if chars[i] != '$' {
            if !push(out, chars[i]) {
                return false;
            }
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'$') {
            if !push(out, '$') {
                return false;
            }
            i += 2;
            continue;
        }
        let (name, next) = if chars.get(i + 1) == Some(&'{') {
            match chars[i + 2..].iter().position(|&c| c == '}') {
                Some(p) => (
                    chars[i + 2..i + 2 + p].iter().collect::<String>(),
                    i + 3 + p,
                ),
                None => {
                    if !push(out, '$') {
                        return false;
                    }
                    i += 1;
                    continue;
                }
            }
        } else {
            let mut j = i + 1;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            (chars[i + 1..j].iter().collect::<String>(), j)
        };
        if name.is_empty() {
            if !push(out, '$') {
                return false;
            }
            i += 1;
            continue;
        }
        if let Some(v) = vars.get(&name) {
            if depth < 8 && v.contains('$') {
                if !expand_into(v, vars, depth + 1, out, work) {
                    return false;
                }
            } else {
                for c in v.chars() {
                    if !push(out, c) {
                        return false;
                    }
                }
            }
        }
        i = next;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands() {
        let vars: IndexMap<String, String> = [("A", "x"), ("B", "$A-y"), ("LOOP", "$LOOP")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        assert_eq!(expand("$A ${B} $C $$A", &vars), "x x-y  $A");
        assert!(expand("$LOOP", &vars).len() < 100);
    }

    #[test]
    fn expand_existing_keeps_unknown_variables_and_does_not_recurse() {
        let vars: IndexMap<String, String> = [("A", "x"), ("NESTED", "$A")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        assert_eq!(
            expand_existing("$A ${A} $UNKNOWN ${UNKNOWN} $$A $NESTED $ ${", &vars),
            "x x $UNKNOWN ${UNKNOWN} $$A $A $ ${"
        );
        assert_eq!(expand_existing("a-$A-b", &vars), "a-x-b");
    }

    #[test]
    fn exponential_values_are_cut() {
        let vars: IndexMap<String, String> = [("A", "$A".repeat(1000))]
            .into_iter()
            .map(|(k, v)| (k.into(), v))
            .collect();
        assert!(expand("$A", &vars).len() <= MAX_EXPANDED);
        // Values that expand to little: the result stays short, the work is bounded.
        let mut empty: IndexMap<String, String> = IndexMap::new();
        for c in b'A'..=b'J' {
            let next = char::from(c + 1);
            empty.insert(char::from(c).to_string(), format!("${next}").repeat(1000));
        }
        assert!(expand("$A", &empty).len() <= MAX_EXPANDED);
    }
}
