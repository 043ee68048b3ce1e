//! Dotted key paths such as `runners[0].kubernetes.volumes.pvc[1].name`.
//!
//! Warnings and errors name the key they are about with a [`KeyPath`]; the loader turns the
//! path back into a line of the file.

use std::fmt;

/// One step of a [`KeyPath`]: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A key inside a table.
    Key(String),
    /// An element of an array (or of an array of tables).
    Index(usize),
}

/// The location of a value inside the config document, from the root.
///
/// Displayed the way users think of it: `runners[0].cache.s3.BucketName`. Keys that are not
/// bare TOML keys are quoted: `node_selector."kubernetes.io/arch"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The document root (displays as an empty string).
    pub fn root() -> Self {
        Self::default()
    }

    /// This path extended by a table key.
    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        Self(segments)
    }

    /// This path extended by an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Self(segments)
    }

    /// The steps of the path, root first.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// The last table key of the path, if any (`name` for `runners[0].name`).
    pub fn last_key(&self) -> Option<&str> {
        self.0.iter().rev().find_map(|s| match s {
            Segment::Key(k) => Some(k.as_str()),
            Segment::Index(_) => None,
        })
    }

    /// Whether the path is the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Converts a path reported by `serde_ignored`.
    pub(crate) fn from_ignored(path: &serde_ignored::Path<'_>) -> Self {
        use serde_ignored::Path;
        match path {
            Path::Root => Self::root(),
            Path::Seq { parent, index } => Self::from_ignored(parent).index(*index),
            Path::Map { parent, key } => Self::from_ignored(parent).key(key),
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => Self::from_ignored(parent),
        }
    }
}

fn is_bare(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_bare(key) {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_toml() {
        let path = KeyPath::root()
            .key("runners")
            .index(0)
            .key("kubernetes")
            .key("node_selector")
            .key("kubernetes.io/arch");
        assert_eq!(
            path.to_string(),
            r#"runners[0].kubernetes.node_selector."kubernetes.io/arch""#
        );
        assert_eq!(path.last_key(), Some("kubernetes.io/arch"));
        assert_eq!(KeyPath::root().to_string(), "");
    }
}
