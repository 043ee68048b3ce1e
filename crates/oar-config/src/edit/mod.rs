//! Editing `config.toml` in place: comments, key order and formatting of everything not
//! touched survive.

mod append;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, Value};

pub use append::{NewKubernetes, NewRunner};

use crate::error::{ConfigError, Location};
use crate::fsutil::write_secret_file;
use crate::load::{Loaded, parse_str};
use crate::locate::{line_starts, position_in};

/// Picks one runner for [`ConfigDocument::set_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerSelector<'a> {
    /// The runner with this `name` (it must be unique).
    Name(&'a str),
    /// The runner at this position of `[[runners]]` (0-based).
    Index(usize),
}

impl From<usize> for RunnerSelector<'_> {
    fn from(index: usize) -> Self {
        RunnerSelector::Index(index)
    }
}

impl<'a> From<&'a str> for RunnerSelector<'a> {
    fn from(name: &'a str) -> Self {
        RunnerSelector::Name(name)
    }
}

impl fmt::Display for RunnerSelector<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunnerSelector::Name(name) => write!(f, "named {name:?}"),
            RunnerSelector::Index(index) => write!(f, "at index {index}"),
        }
    }
}

/// What [`ConfigDocument::runners`] reports about each `[[runners]]` entry, read leniently
/// (missing or mistyped keys read as empty).
#[derive(Debug, Clone)]
pub struct RunnerSummary {
    /// Position in `[[runners]]`.
    pub index: usize,
    /// `name`.
    pub name: String,
    /// `url`.
    pub url: String,
    /// `token` (redacted in `Debug`).
    pub token: SecretString,
    /// `id`.
    pub id: i64,
    /// `executor`.
    pub executor: String,
}

/// A `config.toml` opened for editing.
pub struct ConfigDocument {
    path: PathBuf,
    doc: DocumentMut,
}

impl fmt::Debug for ConfigDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigDocument")
            .field("path", &self.path)
            .field("runners", &self.runners())
            .finish()
    }
}

/// The document text, as [`ConfigDocument::save`] would write it (tokens included).
impl fmt::Display for ConfigDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.doc, f)
    }
}

impl ConfigDocument {
    /// Opens `path`; a missing file gives a new document with GitLab Runner's globals
    /// (`concurrent = 1`, `check_interval = 0`), written only by [`save`](Self::save).
    pub fn open_or_default(path: &Path) -> Result<Self, ConfigError> {
        match Self::open(path) {
            Err(ConfigError::NotFound { .. }) => {
                let mut doc = DocumentMut::new();
                doc.insert("concurrent", toml_edit::value(1));
                doc.insert("check_interval", toml_edit::value(0));
                Ok(Self {
                    path: path.to_owned(),
                    doc,
                })
            }
            other => other,
        }
    }

    /// Opens an existing `path` ([`ConfigError::NotFound`] when it does not exist).
    pub fn open(path: &Path) -> Result<Self, ConfigError> {
        let text = fs_err::read_to_string(path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                ConfigError::NotFound {
                    path: path.to_owned(),
                    source,
                }
            } else {
                ConfigError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text`, which belongs to the file `path` (where [`save`](Self::save) writes).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
            let position = e
                .span()
                .map(|s| position_in(text, &line_starts(text), s.start));
            ConfigError::Syntax {
                location: Location {
                    file: path.to_owned(),
                    line: position.map(|p| p.line),
                    column: position.map(|p| p.column),
                },
                message: e.message().lines().collect::<Vec<_>>().join("; "),
            }
        })?;
        match doc.get("runners") {
            None | Some(Item::ArrayOfTables(_)) => Ok(Self {
                path: path.to_owned(),
                doc,
            }),
            Some(_) => Err(ConfigError::Document {
                path: path.to_owned(),
                message: "runners must be an array of tables ([[runners]])".to_owned(),
            }),
        }
    }

    /// The file this document belongs to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every `[[runners]]` entry, in file order.
    pub fn runners(&self) -> Vec<RunnerSummary> {
        self.runner_tables()
            .map(|array| {
                array
                    .iter()
                    .enumerate()
                    .map(|(index, table)| summary(index, table))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Appends a `[[runners]]` table the way `gitlab-runner register` writes one.
    pub fn append_runner(&mut self, runner: &NewRunner) -> Result<(), ConfigError> {
        let table = append::runner_table(runner).map_err(|message| ConfigError::Document {
            path: self.path.clone(),
            message,
        })?;
        let runners = self
            .doc
            .entry("runners")
            .or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()));
        match runners {
            Item::ArrayOfTables(array) => {
                array.push(table);
                Ok(())
            }
            _ => Err(self.not_array()),
        }
    }

    /// Appends `runner` on top of a template (`register --template-config`): global settings
    /// of `template` that this document lacks are copied, and the template's first
    /// `[[runners]]` table is the base of the new runner, with `runner`'s values winning
    /// (tables such as `[runners.kubernetes]` and `[runners.cache.s3]` are merged key by key).
    pub fn append_runner_with_template(
        &mut self,
        runner: &NewRunner,
        template: &ConfigDocument,
    ) -> Result<(), ConfigError> {
        for (key, item) in template.doc.iter() {
            if key != "runners" && !self.doc.contains_key(key) {
                self.doc.insert(key, item.clone());
            }
        }
        let mut base = template
            .runner_tables()
            .and_then(|a| a.get(0))
            .cloned()
            .unwrap_or_default();
        let mut table = append::runner_table(runner).map_err(|message| ConfigError::Document {
            path: self.path.clone(),
            message,
        })?;
        if append::has_cache_credentials(runner) {
            // The cache tables match keys in any case: merged key by key below, so that
            // the template's `[runners.cache.s3]` keeps its bucket and gets the keys.
            table.remove("cache");
        }
        merge_tables(&mut base, &table);
        append::write_cache_credentials(&mut base, runner);
        base.set_implicit(false);
        // The template's tables carry their positions in the template; a copy placed in this
        // document must be laid out after the runner it belongs to.
        clear_positions(&mut base);
        let runners = self
            .doc
            .entry("runners")
            .or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()));
        match runners {
            Item::ArrayOfTables(array) => {
                array.push(base);
                Ok(())
            }
            _ => Err(self.not_array()),
        }
    }

    /// Removes every runner for which `predicate` is true; returns how many were removed.
    pub fn remove_runners(&mut self, mut predicate: impl FnMut(&RunnerSummary) -> bool) -> usize {
        let Some(Item::ArrayOfTables(array)) = self.doc.get_mut("runners") else {
            return 0;
        };
        let mut index = 0;
        let mut removed = 0;
        array.retain(|table| {
            let remove = predicate(&summary(index, table));
            index += 1;
            removed += usize::from(remove);
            !remove
        });
        removed
    }

    /// Replaces a runner's token and its timestamps (after a token reset). `expires_at =
    /// None` writes GitLab Runner's zero time: the token does not expire.
    pub fn set_token(
        &mut self,
        selector: RunnerSelector<'_>,
        token: &SecretString,
        obtained_at: OffsetDateTime,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<(), ConfigError> {
        let index = self.select(selector)?;
        let obtained = append::datetime(Some(obtained_at));
        let expires = append::datetime(expires_at);
        let (obtained, expires) = match (obtained, expires) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(message), _) | (_, Err(message)) => {
                return Err(ConfigError::Document {
                    path: self.path.clone(),
                    message,
                });
            }
        };
        let path = self.path.clone();
        let table = match self.doc.get_mut("runners") {
            Some(Item::ArrayOfTables(array)) => array.get_mut(index),
            _ => None,
        }
        .ok_or_else(|| ConfigError::RunnerNotFound {
            path,
            selector: selector.to_string(),
        })?;
        replace_value(table, "token", Value::from(token.expose_secret()));
        replace_value(table, "token_obtained_at", Value::from(obtained));
        replace_value(table, "token_expires_at", Value::from(expires));
        Ok(())
    }

    /// Checks the edited document like [`load`](crate::load) would read it.
    pub fn validate(&self) -> Result<Loaded, ConfigError> {
        parse_str(&self.doc.to_string(), &self.path)
    }

    /// Writes the document atomically with mode 0600.
    pub fn save(&self) -> Result<(), ConfigError> {
        write_secret_file(&self.path, self.doc.to_string())
    }

    fn runner_tables(&self) -> Option<&ArrayOfTables> {
        self.doc.get("runners").and_then(Item::as_array_of_tables)
    }

    fn select(&self, selector: RunnerSelector<'_>) -> Result<usize, ConfigError> {
        let runners = self.runners();
        let not_found = || ConfigError::RunnerNotFound {
            path: self.path.clone(),
            selector: selector.to_string(),
        };
        match selector {
            RunnerSelector::Index(index) if index < runners.len() => Ok(index),
            RunnerSelector::Index(_) => Err(not_found()),
            RunnerSelector::Name(name) => {
                let matching: Vec<usize> = runners
                    .iter()
                    .filter(|r| r.name == name)
                    .map(|r| r.index)
                    .collect();
                match matching.as_slice() {
                    [] => Err(not_found()),
                    [index] => Ok(*index),
                    _ => Err(ConfigError::AmbiguousRunner {
                        path: self.path.clone(),
                        name: name.to_owned(),
                        count: matching.len(),
                    }),
                }
            }
        }
    }

    fn not_array(&self) -> ConfigError {
        ConfigError::Document {
            path: self.path.clone(),
            message: "runners must be an array of tables ([[runners]])".to_owned(),
        }
    }
}

fn summary(index: usize, table: &Table) -> RunnerSummary {
    let text = |key: &str| {
        table
            .get(key)
            .and_then(Item::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    RunnerSummary {
        index,
        name: text("name"),
        url: text("url"),
        token: SecretString::from(text("token")),
        id: table
            .get("id")
            .and_then(Item::as_integer)
            .unwrap_or_default(),
        executor: text("executor"),
    }
}

/// Sets `key`, keeping the existing value's comments and spacing.
fn replace_value(table: &mut Table, key: &str, mut value: Value) {
    match table.get_mut(key) {
        Some(Item::Value(old)) => {
            *value.decor_mut() = old.decor().clone();
            *old = value;
        }
        _ => {
            table.insert(key, Item::Value(value));
            append::indent_key(table, key, append::RUNNER_INDENT);
        }
    }
}

/// Copies `from` into `into`; nested tables are merged, other values replaced (keeping
/// `from`'s key formatting, such as the indentation).
fn merge_tables(into: &mut toml_edit::Table, from: &toml_edit::Table) {
    for (key, item) in from.iter() {
        match (into.get_mut(key), item) {
            (Some(Item::Table(existing)), Item::Table(new)) => merge_tables(existing, new),
            _ => match from.key(key) {
                Some(formatted) => {
                    into.insert_formatted(formatted, item.clone());
                }
                None => {
                    into.insert(key, item.clone());
                }
            },
        }
    }
}

/// Forgets where tables stood in their source document, so they are written in order.
fn clear_positions(table: &mut toml_edit::Table) {
    table.set_position(None);
    for (_, item) in table.iter_mut() {
        if let Item::Table(t) = item {
            clear_positions(t);
        }
    }
}
