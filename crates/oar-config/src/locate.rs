//! Mapping between byte offsets, lines and key paths of the source text.
//!
//! The serde pass reports byte spans (type errors) or key paths (ignored keys, validation
//! errors). This module parses the same text with `toml_edit`, which keeps spans for every key
//! and value, and answers "which line is `runners[0].kubernetes.foo` on?" and "which key is at
//! byte 412?".

use std::ops::Range;

use toml_edit::{Document, Item, Table, TableLike, Value};

use crate::path::{KeyPath, Segment};

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) line: u32,
    pub(crate) column: u32,
}

/// Whether a located path should point at the key or at its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    Key,
    Value,
}

/// The parsed source, with spans.
pub(crate) struct SourceMap<'a> {
    text: &'a str,
    doc: Document<&'a str>,
    line_starts: Vec<usize>,
}

/// A node of the document while walking a path.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn table_like(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(item) => item.as_table_like(),
            Node::Table(table) => Some(table),
            Node::Value(value) => value.as_inline_table().map(|t| t as &dyn TableLike),
        }
    }

    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(Item::Table(table)) | Node::Table(table) => table.span(),
            Node::Item(item) => item.span(),
            Node::Value(value) => value.span(),
        }
    }

    fn element(self, index: usize) -> Option<Node<'a>> {
        match self {
            Node::Item(Item::ArrayOfTables(array)) => array.get(index).map(Node::Table),
            Node::Item(Item::Value(Value::Array(array))) | Node::Value(Value::Array(array)) => {
                array.get(index).map(Node::Value)
            }
            _ => None,
        }
    }

    fn children(self) -> Vec<(Option<String>, Option<Range<usize>>, Node<'a>)> {
        if let Some(table) = self.table_like() {
            return table
                .iter()
                .map(|(key, item)| {
                    let key_span = table.get_key_value(key).and_then(|(k, _)| k.span());
                    (Some(key.to_owned()), key_span, Node::Item(item))
                })
                .collect();
        }
        let mut out = Vec::new();
        let mut index = 0;
        while let Some(child) = self.element(index) {
            out.push((None, None, child));
            index += 1;
        }
        out
    }

    fn kind(self) -> &'static str {
        let value = match self {
            Node::Table(_) | Node::Item(Item::Table(_)) => return "a table",
            Node::Item(Item::ArrayOfTables(_)) => return "an array of tables",
            Node::Item(Item::None) => return "nothing",
            Node::Item(Item::Value(value)) | Node::Value(value) => value,
        };
        match value {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a datetime",
            Value::Array(_) => "an array",
            Value::InlineTable(_) => "a table",
        }
    }
}

/// Normalises a key the way GitLab Runner's TOML decoder compares keys: case-insensitively. We
/// also ignore `_` and `-` so that `server_address` finds `ServerAddress`.
pub(crate) fn fold_key(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn lookup<'t>(table: &'t dyn TableLike, key: &str) -> Option<(Option<Range<usize>>, &'t Item)> {
    if let Some((k, item)) = table.get_key_value(key) {
        return Some((k.span(), item));
    }
    let folded = fold_key(key);
    let name = table
        .iter()
        .map(|(k, _)| k)
        .find(|k| fold_key(k) == folded)?;
    table.get_key_value(name).map(|(k, item)| (k.span(), item))
}

impl<'a> SourceMap<'a> {
    /// Parses `text`; a syntax error is returned as is.
    pub(crate) fn parse(text: &'a str) -> Result<Self, toml_edit::TomlError> {
        let doc = Document::parse(text)?;
        Ok(Self::with_doc(text, doc))
    }

    fn with_doc(text: &'a str, doc: Document<&'a str>) -> Self {
        let line_starts = line_starts(text);
        Self {
            text,
            doc,
            line_starts,
        }
    }

    /// Line and column of a byte offset.
    pub(crate) fn position(&self, offset: usize) -> Position {
        position_in(self.text, &self.line_starts, offset)
    }

    /// Where `path` is written. When the path does not exist in the text (a missing key, or a
    /// value supplied by a default), the deepest existing ancestor is used.
    pub(crate) fn locate(&self, path: &KeyPath, anchor: Anchor) -> Option<Position> {
        let mut node = Node::Item(self.doc.as_item());
        let mut best: Option<Range<usize>> = None;
        let mut key_span: Option<Range<usize>> = None;
        for segment in path.segments() {
            let next = match segment {
                Segment::Key(key) => {
                    node.table_like()
                        .and_then(|t| lookup(t, key))
                        .map(|(span, item)| {
                            key_span = span;
                            Node::Item(item)
                        })
                }
                Segment::Index(index) => {
                    key_span = None;
                    node.element(*index)
                }
            };
            let Some(next) = next else { break };
            node = next;
            if let Some(span) = key_span.clone().or_else(|| node.span()) {
                best = Some(span);
            }
            if anchor == Anchor::Value
                && let Some(span) = node.span()
                && node.table_like().is_none()
            {
                best = Some(span);
            }
        }
        best.map(|span| self.position(span.start))
    }

    /// The deepest key path whose key or value contains the byte `offset`.
    pub(crate) fn path_at(&self, offset: usize) -> Option<KeyPath> {
        let mut found = None;
        walk(
            Node::Item(self.doc.as_item()),
            &KeyPath::root(),
            offset,
            &mut found,
        );
        found
    }

    /// A description of the value at `path`, such as "a string".
    pub(crate) fn kind_at(&self, path: &KeyPath) -> Option<&'static str> {
        let mut node = Node::Item(self.doc.as_item());
        for segment in path.segments() {
            node = match segment {
                Segment::Key(key) => Node::Item(lookup(node.table_like()?, key)?.1),
                Segment::Index(index) => node.element(*index)?,
            };
        }
        Some(node.kind())
    }
}

fn contains(span: Option<&Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
}

fn walk(node: Node<'_>, path: &KeyPath, offset: usize, found: &mut Option<KeyPath>) {
    for (index, (key, key_span, child)) in node.children().into_iter().enumerate() {
        let child_path = match &key {
            Some(key) => path.key(key),
            None => path.index(index),
        };
        let deeper = found
            .as_ref()
            .is_none_or(|f| f.segments().len() < child_path.segments().len());
        if deeper
            && (contains(key_span.as_ref(), offset) || contains(child.span().as_ref(), offset))
        {
            *found = Some(child_path.clone());
        }
        walk(child, &child_path, offset, found);
    }
}

pub(crate) fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

pub(crate) fn position_in(text: &str, line_starts: &[usize], offset: usize) -> Position {
    let offset = offset.min(text.len());
    let line_index = line_starts
        .partition_point(|start| *start <= offset)
        .saturating_sub(1);
    let start = line_starts.get(line_index).copied().unwrap_or(0);
    let column = text
        .get(start..offset)
        .map_or(offset - start, |prefix| prefix.chars().count())
        + 1;
    Position {
        line: saturate(line_index + 1),
        column: saturate(column),
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"concurrent = 2

[[runners]]
  name = "a"
  [runners.kubernetes]
    namespace = "ci"
    node_selector = { "kubernetes.io/arch" = "amd64" }

[[runners]]
  name = "b"
  [runners.cache.s3]
    ServerAddress = "s3.example.com"
"#;

    #[test]
    fn positions() {
        let map = SourceMap::parse(TEXT).unwrap();
        assert_eq!(map.position(0), Position { line: 1, column: 1 });
        let offset = TEXT.find("namespace").unwrap();
        assert_eq!(map.position(offset), Position { line: 6, column: 5 });
        assert_eq!(
            map.position(TEXT.len() + 10).line,
            u32::try_from(TEXT.lines().count() + 1).unwrap()
        );
    }

    #[test]
    fn locates_paths() {
        let map = SourceMap::parse(TEXT).unwrap();
        let k8s = KeyPath::root().key("runners").index(0).key("kubernetes");
        let line = |p: &KeyPath, a| map.locate(p, a).map(|p| p.line);
        assert_eq!(line(&k8s.key("namespace"), Anchor::Key), Some(6));
        assert_eq!(
            line(
                &k8s.key("node_selector").key("kubernetes.io/arch"),
                Anchor::Value
            ),
            Some(7)
        );
        // missing key: falls back to the enclosing table header
        assert_eq!(line(&k8s.key("image"), Anchor::Key), Some(5));
        let second = KeyPath::root().key("runners").index(1);
        assert_eq!(line(&second, Anchor::Key), Some(9));
        // case-insensitive, underscore-insensitive
        let s3 = second.key("cache").key("s3");
        assert_eq!(line(&s3.key("server_address"), Anchor::Value), Some(12));
        assert_eq!(map.kind_at(&s3.key("ServerAddress")), Some("a string"));
    }

    #[test]
    fn finds_path_at_offset() {
        let map = SourceMap::parse(TEXT).unwrap();
        let offset = TEXT.find("\"ci\"").unwrap();
        assert_eq!(
            map.path_at(offset).unwrap().to_string(),
            "runners[0].kubernetes.namespace"
        );
        let offset = TEXT.find("\"amd64\"").unwrap();
        assert_eq!(
            map.path_at(offset).unwrap().to_string(),
            r#"runners[0].kubernetes.node_selector."kubernetes.io/arch""#
        );
    }
}
