//! A YAML tree that keeps each value's file and line, built from `saphyr-parser` events.
//!
//! Anchors, aliases and merge keys (`<<`) are resolved while building; `!reference` tags are
//! kept as [`Value::Reference`] for the loader to resolve after `extends`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use indexmap::IndexMap;
use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use crate::error::{Location, PipelineError, Result};

/// A mapping: keys in file order, each with the location of the key.
pub type Map = IndexMap<String, (Location, Node)>;

/// A YAML value with the location it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where the value starts.
    pub loc: Location,
}

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping.
    Map(Map),
    /// `!reference [job, key, ...]`, not yet resolved.
    Reference(Vec<String>),
}

impl Node {
    /// A node.
    pub fn new(value: Value, loc: Location) -> Self {
        Self { value, loc }
    }

    /// What kind of value this is, for error messages: "a string", "a hash".
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "an array",
            Value::Map(_) => "a hash",
            Value::Reference(_) => "a !reference",
        }
    }

    /// The mapping, if this is one.
    pub fn as_map(&self) -> Option<&Map> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The text of a string, number or boolean (what GitLab turns a scalar variable into).
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(fmt_float(*f)),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

fn fmt_float(f: f64) -> String {
    if f.is_infinite() {
        if f > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        }
    } else if f.is_nan() {
        ".nan".into()
    } else {
        format!("{f:?}")
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => f.write_str(&fmt_float(*x)),
            Value::Str(s) => f.write_str(s),
            Value::Seq(_) => f.write_str("[...]"),
            Value::Map(_) => f.write_str("{...}"),
            Value::Reference(p) => write!(f, "!reference [{}]", p.join(", ")),
        }
    }
}

/// At most this many values per pipeline, counting alias copies, every included file, and
/// the copies `extends`, `!reference` and inputs make (a guard against alias bombs and their
/// cousins).
pub(crate) const NODE_BUDGET: usize = 1_000_000;
/// At most this many bytes of strings and keys per pipeline, counted like [`NODE_BUDGET`].
pub(crate) const BYTE_BUDGET: usize = 64 << 20;

/// What is left of a pipeline's [`NODE_BUDGET`] and [`BYTE_BUDGET`], shared by every step
/// that copies values.
#[derive(Debug)]
pub(crate) struct Budget {
    nodes: std::cell::Cell<usize>,
    bytes: std::cell::Cell<usize>,
}

impl Budget {
    /// The full budget.
    pub(crate) fn new() -> Self {
        Self {
            nodes: std::cell::Cell::new(NODE_BUDGET),
            bytes: std::cell::Cell::new(BYTE_BUDGET),
        }
    }

    /// Spends `nodes` values and `bytes` bytes; an error at `loc` when the budget is exceeded.
    pub(crate) fn spend(&self, nodes: usize, bytes: usize, loc: &Location) -> Result<()> {
        let (Some(n), Some(b)) = (
            self.nodes.get().checked_sub(nodes),
            self.bytes.get().checked_sub(bytes),
        ) else {
            return Err(PipelineError::Invalid {
                location: loc.clone(),
                job: None,
                keyword: None,
                message: format!(
                    "the pipeline is too large: aliases, includes, extends, !reference and inputs expand to more than {NODE_BUDGET} values or {} MiB",
                    BYTE_BUDGET >> 20
                ),
            });
        };
        self.nodes.set(n);
        self.bytes.set(b);
        Ok(())
    }

    /// Spends what a copy of `node` costs.
    pub(crate) fn spend_copy(&self, node: &Node, loc: &Location) -> Result<()> {
        let (n, b) = count(node);
        self.spend(n, b, loc)
    }
}
/// At most this nesting depth (the tree is walked recursively later).
const MAX_DEPTH: usize = 256;

/// Parses every document of `text`; an empty stream gives no documents.
pub fn parse_documents(text: &str, file: &str) -> Result<Vec<Node>> {
    parse_documents_in(text, file, &Budget::new())
}

/// [`parse_documents`], spending from a pipeline's `budget`.
pub(crate) fn parse_documents_in(text: &str, file: &str, budget: &Budget) -> Result<Vec<Node>> {
    let file: Arc<str> = Arc::from(file);
    let mut b = Builder {
        file: file.clone(),
        stack: Vec::new(),
        anchors: HashMap::new(),
        docs: Vec::new(),
        budget,
    };
    for ev in Parser::new_from_str(text) {
        let (ev, span) = ev.map_err(|e| PipelineError::Syntax {
            location: Location {
                file: file.clone(),
                line: u32::try_from(e.marker().line()).unwrap_or(0),
            },
            message: e.info().to_owned(),
        })?;
        b.event(ev, span)?;
    }
    Ok(b.docs)
}

enum Frame {
    Seq {
        items: Vec<Node>,
        loc: Location,
        anchor: usize,
        reference: bool,
    },
    Map {
        entries: Vec<(Node, Node)>,
        pending: Option<Node>,
        loc: Location,
        anchor: usize,
    },
}

struct Builder<'b> {
    file: Arc<str>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    docs: Vec<Node>,
    budget: &'b Budget,
}

impl Builder<'_> {
    fn loc(&self, span: Span) -> Location {
        Location {
            file: self.file.clone(),
            line: u32::try_from(span.start.line()).unwrap_or(0),
        }
    }

    fn err(&self, loc: &Location, message: impl Into<String>) -> PipelineError {
        PipelineError::Syntax {
            location: loc.clone(),
            message: message.into(),
        }
    }

    fn spend(&mut self, (n, bytes): (usize, usize), loc: &Location) -> Result<()> {
        if self.stack.len() > MAX_DEPTH {
            return Err(self.err(
                loc,
                format!("values nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        if self.budget.spend(n, bytes, loc).is_err() {
            return Err(self.err(
                loc,
                format!(
                    "document too large (aliases expand to more than {NODE_BUDGET} values or {} MiB)",
                    BYTE_BUDGET >> 20
                ),
            ));
        }
        Ok(())
    }

    fn event(&mut self, ev: Event<'_>, span: Span) -> Result<()> {
        let loc = self.loc(span);
        match ev {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) => {}
            Event::DocumentEnd => self.anchors.clear(),
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| self.err(&loc, "unknown alias"))?;
                if self.stack.len() + depth(&node) > MAX_DEPTH {
                    return Err(self.err(
                        &loc,
                        format!("values nested more than {MAX_DEPTH} levels deep"),
                    ));
                }
                self.spend(count(&node), &loc)?;
                self.push(node)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.spend((1, text.len()), &loc)?;
                // A plain mapping key that Psych would read as a YAML 1.1 boolean (`on:`,
                // `no:`) keeps its text: GitLab's job and variable names are strings.
                let is_key = matches!(self.stack.last(), Some(Frame::Map { pending: None, .. }));
                let value = match scalar(&text, style, tag.as_deref()) {
                    Ok(Value::Bool(_))
                        if is_key
                            && tag.is_none()
                            && !matches!(text.to_ascii_lowercase().as_str(), "true" | "false") =>
                    {
                        Value::Str(text.to_string())
                    }
                    v => v.map_err(|m| self.err(&loc, m))?,
                };
                let node = Node::new(value, loc);
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)?;
            }
            Event::SequenceStart(anchor, tag) => {
                self.spend((1, 0), &loc)?;
                let reference = match tag.as_deref() {
                    None => false,
                    Some(t) if is_reference(t) => true,
                    Some(t) if t.is_yaml_core_schema() && t.suffix == "seq" => false,
                    Some(t) => {
                        return Err(self.err(&loc, format!("unknown tag {}{}", t.handle, t.suffix)));
                    }
                };
                self.stack.push(Frame::Seq {
                    items: Vec::new(),
                    loc,
                    anchor,
                    reference,
                });
            }
            Event::MappingStart(anchor, tag) => {
                self.spend((1, 0), &loc)?;
                match tag.as_deref() {
                    None => {}
                    Some(t) if t.is_yaml_core_schema() && t.suffix == "map" => {}
                    Some(t) => {
                        return Err(self.err(&loc, format!("unknown tag {}{}", t.handle, t.suffix)));
                    }
                }
                self.stack.push(Frame::Map {
                    entries: Vec::new(),
                    pending: None,
                    loc,
                    anchor,
                });
            }
            Event::SequenceEnd => {
                let Some(Frame::Seq {
                    items,
                    loc,
                    anchor,
                    reference,
                }) = self.stack.pop()
                else {
                    return Err(self.err(&loc, "unbalanced sequence"));
                };
                let value = if reference {
                    let mut path = Vec::new();
                    for item in &items {
                        match &item.value {
                            Value::Str(_) | Value::Int(_) | Value::Bool(_) | Value::Float(_) => {
                                path.push(item.scalar_text().unwrap_or_default());
                            }
                            _ => return Err(self.err(
                                &item.loc,
                                "!reference takes an array of keys, like !reference [.job, script]",
                            )),
                        }
                    }
                    if path.is_empty() {
                        return Err(self.err(
                            &loc,
                            "!reference takes an array of keys, like !reference [.job, script]",
                        ));
                    }
                    Value::Reference(path)
                } else {
                    Value::Seq(items)
                };
                let node = Node::new(value, loc);
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)?;
            }
            Event::MappingEnd => {
                let Some(Frame::Map {
                    entries,
                    loc,
                    anchor,
                    ..
                }) = self.stack.pop()
                else {
                    return Err(self.err(&loc, "unbalanced mapping"));
                };
                let map = self.build_map(entries)?;
                let node = Node::new(Value::Map(map), loc);
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)?;
            }
        }
        Ok(())
    }

    fn build_map(&self, entries: Vec<(Node, Node)>) -> Result<Map> {
        let mut map = Map::new();
        let mut explicit: std::collections::HashSet<String> = std::collections::HashSet::new();
        for (key, value) in entries {
            let name = match &key.value {
                Value::Str(s) => s.clone(),
                Value::Null => String::new(),
                Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                    key.scalar_text().unwrap_or_default()
                }
                _ => return Err(self.err(&key.loc, "a mapping key must be a scalar")),
            };
            if name == "<<" && matches!(key.value, Value::Str(_)) {
                let sources: Vec<&Node> = match &value.value {
                    Value::Map(_) => vec![&value],
                    Value::Seq(items) => items.iter().collect(),
                    _ => {
                        return Err(self.err(
                            &value.loc,
                            "merge key << takes a hash or an array of hashes",
                        ));
                    }
                };
                for src in sources {
                    let Value::Map(m) = &src.value else {
                        return Err(
                            self.err(&src.loc, "merge key << takes a hash or an array of hashes")
                        );
                    };
                    for (k, v) in m {
                        if !explicit.contains(k) && !map.contains_key(k) {
                            map.insert(k.clone(), v.clone());
                        }
                    }
                }
                continue;
            }
            if !explicit.insert(name.clone()) {
                return Err(self.err(&key.loc, format!("duplicate key {name:?}")));
            }
            map.insert(name, (key.loc, value));
        }
        Ok(map)
    }

    fn push(&mut self, node: Node) -> Result<()> {
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries, pending, ..
            }) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
        Ok(())
    }
}

/// The values and bytes (of strings and keys) in `node`.
pub(crate) fn count(node: &Node) -> (usize, usize) {
    match &node.value {
        Value::Seq(items) => items.iter().map(count).fold((1, 0), |(n, b), (cn, cb)| {
            (n.saturating_add(cn), b.saturating_add(cb))
        }),
        Value::Map(m) => m.iter().fold((1, 0), |(n, b), (k, (_, v))| {
            let (cn, cb) = count(v);
            (
                n.saturating_add(cn),
                b.saturating_add(cb).saturating_add(k.len()),
            )
        }),
        Value::Str(s) => (1, s.len()),
        Value::Reference(p) => (1, p.iter().map(String::len).sum()),
        _ => (1, 0),
    }
}

/// How deeply `node` nests (a scalar: 0).
fn depth(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Map(m) => 1 + m.values().map(|(_, v)| depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

fn is_reference(tag: &Tag) -> bool {
    tag.handle == "!" && tag.suffix == "reference"
}

fn scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    if let Some(tag) = tag {
        if tag.is_yaml_core_schema() {
            return Ok(match tag.suffix.as_str() {
                "str" => Value::Str(text.to_string()),
                "null" => Value::Null,
                "bool" => match resolve_plain(text) {
                    v @ Value::Bool(_) => v,
                    _ => return Err(format!("{text:?} is not a boolean")),
                },
                "int" => match resolve_plain(text) {
                    v @ Value::Int(_) => v,
                    _ => return Err(format!("{text:?} is not an integer")),
                },
                "float" => match resolve_plain(text) {
                    Value::Int(i) => Value::Float(i as f64),
                    v @ Value::Float(_) => v,
                    _ => return Err(format!("{text:?} is not a float")),
                },
                other => return Err(format!("unsupported tag !!{other}")),
            });
        }
        if is_reference(tag) {
            return Err("!reference takes an array of keys, like !reference [.job, script]".into());
        }
        return Err(format!("unknown tag {}{}", tag.handle, tag.suffix));
    }
    Ok(match style {
        ScalarStyle::Plain => resolve_plain(text),
        _ => Value::Str(text.to_string()),
    })
}

/// Resolution of a plain scalar: the YAML 1.2 core schema, except for booleans, which are
/// Ruby Psych's (GitLab's YAML 1.1 parser): `yes`, `on` and `true` in any case are true, `no`,
/// `off` and `false` false. So `allow_failure: yes` is a boolean and `VAR: on` is `"true"`,
/// as in GitLab.
fn resolve_plain(text: &str) -> Value {
    if text.len() <= 5 {
        match text.to_ascii_lowercase().as_str() {
            "yes" | "on" | "true" => return Value::Bool(true),
            "no" | "off" | "false" => return Value::Bool(false),
            _ => {}
        }
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = text.parse::<i64>()
    {
        return Value::Int(i);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Int(i);
    }
    let float_chars = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if float_chars
        && digits.bytes().any(|b| b.is_ascii_digit())
        && digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        parse_documents(text, "t.yml").unwrap().remove(0)
    }

    #[test]
    fn scalars_resolve_like_the_core_schema() {
        let n = one("a: 1\nb: '1'\nc: 1.5\nd: true\ne: ~\nf: hello\ng: 1.2.3\n");
        let m = n.as_map().unwrap();
        assert_eq!(m["a"].1.value, Value::Int(1));
        assert_eq!(m["b"].1.value, Value::Str("1".into()));
        assert_eq!(m["c"].1.value, Value::Float(1.5));
        assert_eq!(m["d"].1.value, Value::Bool(true));
        assert_eq!(m["e"].1.value, Value::Null);
        assert_eq!(m["g"].1.value, Value::Str("1.2.3".into()));
        assert_eq!(m["f"].1.loc.line, 6);
    }

    #[test]
    fn booleans_are_psychs() {
        let n = one("a: yes\nb: On\nc: OFF\nd: no\ne: 'yes'\nf: y\ng: tRuE\nh: yesterday\n");
        let m = n.as_map().unwrap();
        assert_eq!(m["a"].1.value, Value::Bool(true));
        assert_eq!(m["b"].1.value, Value::Bool(true));
        assert_eq!(m["c"].1.value, Value::Bool(false));
        assert_eq!(m["d"].1.value, Value::Bool(false));
        assert_eq!(m["e"].1.value, Value::Str("yes".into()));
        assert_eq!(m["f"].1.value, Value::Str("y".into()));
        assert_eq!(m["g"].1.value, Value::Bool(true));
        assert_eq!(m["h"].1.value, Value::Str("yesterday".into()));
        // Keys keep their text: a job named `off` is `off`.
        let n = one("off: no\nyes: 1\n");
        let m = n.as_map().unwrap();
        assert_eq!(m["off"].1.value, Value::Bool(false));
        assert_eq!(m["yes"].1.value, Value::Int(1));
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let n = one(".base: &base\n  a: 1\n  b: 2\njob:\n  <<: *base\n  b: 3\n  c: *base\n");
        let job = &n.as_map().unwrap()["job"].1;
        let m = job.as_map().unwrap();
        assert_eq!(m["a"].1.value, Value::Int(1));
        assert_eq!(m["b"].1.value, Value::Int(3));
        assert!(matches!(m["c"].1.value, Value::Map(_)));
    }

    #[test]
    fn reference_tags_are_kept() {
        let n = one("job:\n  script: !reference [.a, script]\n");
        let job = &n.as_map().unwrap()["job"].1;
        assert_eq!(
            job.as_map().unwrap()["script"].1.value,
            Value::Reference(vec![".a".into(), "script".into()])
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_documents("a: 1\nb: [\n", "t.yml").unwrap_err();
        assert!(e.to_string().starts_with("t.yml:"), "{e}");
        let e = parse_documents("a: 1\na: 2\n", "t.yml").unwrap_err();
        assert_eq!(e.to_string(), "t.yml:2: invalid YAML: duplicate key \"a\"");
        let e = parse_documents("a: !foo 1\n", "t.yml").unwrap_err();
        assert_eq!(e.to_string(), "t.yml:1: invalid YAML: unknown tag !foo");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("a: {}1{}\n", "[".repeat(300), "]".repeat(300));
        let e = parse_documents(&text, "t.yml").unwrap_err();
        assert!(e.to_string().starts_with("t.yml:1: invalid YAML:"), "{e}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            text.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n", p = i - 1));
        }
        assert!(parse_documents(&text, "t.yml").is_err());
    }
}
