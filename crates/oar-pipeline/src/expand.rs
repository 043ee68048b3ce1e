//! `$VAR` / `${VAR}` expansion, as GitLab expands variables in `changes`, `exists`,
//! `environment`, `workflow:name` and `expand_vars`.

use indexmap::IndexMap;

/// Expands `$NAME` and `${NAME}` from `vars`; unknown variables become empty, `$$` is a `$`.
pub fn expand(text: &str, vars: &IndexMap<String, String>) -> String {
    expand_depth(text, vars, 0)
}

fn expand_depth(text: &str, vars: &IndexMap<String, String>, depth: usize) -> String {
    if !text.contains('$') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'$') {
            out.push('$');
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
                    out.push('$');
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
            out.push('$');
            i += 1;
            continue;
        }
        if let Some(v) = vars.get(&name) {
            if depth < 8 {
                out.push_str(&expand_depth(v, vars, depth + 1));
            } else {
                out.push_str(v);
            }
        }
        i = next;
    }
    out
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
}
