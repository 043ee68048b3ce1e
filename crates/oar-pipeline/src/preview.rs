//! YAML output of the merged configuration, for `oar exec --preview`.

use crate::yaml::{Map, Node, Value};

/// The merged configuration as YAML, keys in file order (includes first, as merged).
pub(crate) fn to_yaml(map: &Map) -> String {
    let mut out = String::new();
    write_map(&mut out, map, 0);
    out
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push_str("  ");
    }
}

fn write_map(out: &mut String, map: &Map, level: usize) {
    if map.is_empty() {
        out.push_str("{}\n");
        return;
    }
    for (k, (_, v)) in map {
        indent(out, level);
        out.push_str(&scalar_str(k));
        out.push(':');
        write_value(out, v, level);
    }
}

/// Writes what follows `key:` or `-`: a scalar on the same line, or a nested block.
fn write_value(out: &mut String, v: &Node, level: usize) {
    match &v.value {
        Value::Map(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, level + 1);
        }
        Value::Seq(items) if !items.is_empty() => {
            out.push('\n');
            for i in items {
                indent(out, level + 1);
                out.push('-');
                match &i.value {
                    Value::Map(m) if !m.is_empty() => {
                        // First key on the dash line, the rest aligned under it.
                        let mut first = true;
                        for (k, (_, iv)) in m {
                            if first {
                                out.push(' ');
                                first = false;
                            } else {
                                indent(out, level + 2);
                            }
                            out.push_str(&scalar_str(k));
                            out.push(':');
                            write_value(out, iv, level + 2);
                        }
                    }
                    _ => write_value(out, i, level + 1),
                }
            }
        }
        Value::Str(s) if s.contains('\n') && block_ok(s) => {
            let chomp = if s.ends_with('\n') { "" } else { "-" };
            out.push_str(&format!(" |{chomp}\n"));
            for line in s.trim_end_matches('\n').split('\n') {
                if !line.is_empty() {
                    indent(out, level + 1);
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        _ => {
            out.push(' ');
            out.push_str(&inline(v));
            out.push('\n');
        }
    }
}

fn block_ok(s: &str) -> bool {
    !s.starts_with([' ', '\t', '\n'])
        && !s.ends_with("\n\n")
        && !s.contains('\r')
        && !s.lines().any(|l| l.ends_with(' '))
}

/// A value in flow style: `[a, b]`, `{k: v}`, or a scalar.
pub(crate) fn inline(v: &Node) -> String {
    match &v.value {
        Value::Seq(items) => format!(
            "[{}]",
            items.iter().map(inline).collect::<Vec<_>>().join(", ")
        ),
        Value::Map(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, (_, v))| format!("{}: {}", scalar_str(k), inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Str(s) => scalar_str(s),
        Value::Reference(p) => format!(
            "!reference [{}]",
            p.iter()
                .map(|s| scalar_str(s))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// A string as a plain scalar when it reads back as the same string, else double-quoted.
fn scalar_str(s: &str) -> String {
    let plain_ok = !s.is_empty()
        && !s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@` \t".contains(c))
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.contains([',', '[', ']', '{', '}', '\n', '\t', '\r'])
        && s.chars().all(|c| !c.is_control())
        && matches!(crate::yaml::parse_documents(&format!("k: {s}"), "").ok().and_then(|mut d| d.pop()).and_then(|n| n.as_map().and_then(|m| m.get("k")).map(|(_, v)| v.value.clone())), Some(Value::Str(ref x)) if x == s);
    if plain_ok {
        return s.to_owned();
    }
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '\r' => q.push_str("\\r"),
            c if c.is_control() => q.push_str(&format!("\\u{:04x}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_documents;

    #[test]
    fn round_trips() {
        let text = "a:\n  b: [1, two, '3', 'x: y']\n  c:\n  - k: v\n    l: true\n  - plain\n  d: |\n    line1\n    line2\ne: \"\"\nf: {}\ng: null\n";
        let n = parse_documents(text, "t").unwrap().remove(0);
        let y = to_yaml(n.as_map().unwrap());
        let back = parse_documents(&y, "t").unwrap().remove(0);
        let strip = |n: &Node| to_yaml(n.as_map().unwrap());
        assert_eq!(strip(&back), y, "{y}");
        assert!(y.contains("'3'") || y.contains("\"3\""), "{y}");
        assert!(y.contains("\"x: y\""), "{y}");
    }
}
