//! Reading a `config.toml`: syntax, types, validation, warnings, each with file and line.

use std::io;
use std::path::Path;

use crate::error::{ConfigError, Location};
use crate::global::{Config, ConfigWire};
use crate::locate::{Anchor, SourceMap};
use crate::path::{KeyPath, Segment};
use crate::runner::FOREIGN_EXECUTOR_TABLES;
use crate::validate::{Ctx, Issue, IssueKind, PendingWarning};
use crate::warning::{ConfigWarning, WarningKind};

/// A loaded config and what the loader had to say about it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated config.
    pub config: Config,
    /// Warnings in file order: unknown keys, ignored tables, deprecated settings.
    pub warnings: Vec<ConfigWarning>,
}

/// Reads and validates `path`.
///
/// A missing file is [`ConfigError::NotFound`]; every other problem names the file, line and
/// key.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
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
    parse_str(&text, path)
}

/// Parses and validates config text; `origin` is the file name used in messages.
pub fn parse_str(text: &str, origin: &Path) -> Result<Loaded, ConfigError> {
    let map = SourceMap::parse(text).map_err(|e| {
        let position = e.span().map(|s| map_position(text, s.start));
        syntax_error(origin, position, e.message())
    })?;
    let deserializer = toml::de::Deserializer::parse(text).map_err(|e| {
        let position = e.span().map(|s| map.position(s.start));
        syntax_error(origin, position.map(|p| (p.line, p.column)), e.message())
    })?;
    let mut ignored = Vec::new();
    let wire: ConfigWire = serde_ignored::deserialize(deserializer, |path| {
        ignored.push(KeyPath::from_ignored(&path));
    })
    .map_err(|e| type_error(&e, &map, origin))?;

    let mut ctx = Ctx::default();
    let config = Config::from_wire(wire, &mut ctx).map_err(|i| issue_error(i, &map, origin))?;

    let mut pending: Vec<PendingWarning> = ignored.into_iter().map(ignored_warning).collect();
    pending.extend(ctx.warnings);
    let mut warnings: Vec<ConfigWarning> = pending
        .into_iter()
        .map(|w| ConfigWarning {
            location: Location {
                file: origin.to_owned(),
                line: map.locate(&w.path, w.anchor).map(|p| p.line),
                column: None,
            },
            key: w.path,
            kind: w.kind,
            message: w.message,
        })
        .collect();
    warnings.sort_by_key(|w| w.location.line.unwrap_or(u32::MAX));
    Ok(Loaded { config, warnings })
}

fn map_position(text: &str, offset: usize) -> (u32, u32) {
    let starts = crate::locate::line_starts(text);
    let p = crate::locate::position_in(text, &starts, offset);
    (p.line, p.column)
}

fn location(origin: &Path, position: Option<(u32, u32)>) -> Location {
    Location {
        file: origin.to_owned(),
        line: position.map(|p| p.0),
        column: position.map(|p| p.1),
    }
}

fn syntax_error(origin: &Path, position: Option<(u32, u32)>, message: &str) -> ConfigError {
    let message = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    ConfigError::Syntax {
        location: location(origin, position),
        message,
    }
}

/// A serde error from the wire pass: a value of the wrong type or out of range.
fn type_error(error: &toml::de::Error, map: &SourceMap<'_>, origin: &Path) -> ConfigError {
    let offset = error.span().map(|s| s.start);
    let position = offset.map(|o| map.position(o)).map(|p| (p.line, p.column));
    let key = offset.and_then(|o| map.path_at(o)).unwrap_or_default();
    let location = location(origin, position);
    let message = error.message();
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        let found = map
            .kind_at(&key)
            .map_or_else(|| found.to_owned(), str::to_owned);
        let mut expected = humanize_expected(expected);
        if expected == "an array" && found == "a table" {
            expected = format!("an array of tables ([[{key}]])");
        }
        return ConfigError::InvalidType {
            location,
            key,
            expected,
            found,
        };
    }
    if let Some(rest) = message.strip_prefix("invalid value: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        // serde writes "integer `70000`"; the number is enough.
        let found = found
            .split('`')
            .nth(1)
            .filter(|_| found.ends_with('`'))
            .unwrap_or(found);
        return ConfigError::InvalidValue {
            location,
            key,
            message: format!("expected {}, found {found}", humanize_expected(expected)),
        };
    }
    ConfigError::InvalidValue {
        location,
        key,
        message: message.to_owned(),
    }
}

/// Turns serde's "expected" wording (`i64`, `a sequence`, `struct RunnerWire`) into TOML terms.
fn humanize_expected(expected: &str) -> String {
    let expected = expected.trim();
    let integer = |bits: &str| format!("an integer that fits in {bits} bits");
    match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer".to_owned(),
        "u8" => integer("8 unsigned"),
        "u16" => "an integer from 0 to 65535".to_owned(),
        "u32" => integer("32 unsigned"),
        "u64" | "u128" | "usize" => "a non-negative integer".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a sequence" => "an array".to_owned(),
        "a map" => "a table".to_owned(),
        "a boolean" | "a string" => expected.to_owned(),
        other if other.starts_with("struct ") => "a table".to_owned(),
        other => other.to_owned(),
    }
}

fn issue_error(issue: Issue, map: &SourceMap<'_>, origin: &Path) -> ConfigError {
    let position = map
        .locate(&issue.path, Anchor::Value)
        .map(|p| (p.line, p.column));
    let location = location(origin, position);
    let key = issue.path;
    match issue.kind {
        IssueKind::Value(message) => ConfigError::InvalidValue {
            location,
            key,
            message,
        },
        IssueKind::Missing => ConfigError::MissingKey { location, key },
        IssueKind::Regex(source) => ConfigError::InvalidRegex {
            location,
            key,
            source,
        },
        IssueKind::Url(source) => ConfigError::InvalidUrl {
            location,
            key,
            source,
        },
        IssueKind::UnsupportedExecutor { runner, executor } => ConfigError::UnsupportedExecutor {
            location,
            key,
            runner,
            executor,
        },
    }
}

/// Keys serde skipped: GitLab Runner settings Oar ignores on purpose, or unknown keys.
fn ignored_warning(path: KeyPath) -> PendingWarning {
    let (kind, message) = match path.segments() {
        [
            Segment::Key(runners),
            Segment::Index(_),
            Segment::Key(table),
        ] if runners == "runners" => {
            if let Some((_, executor)) = FOREIGN_EXECUTOR_TABLES.iter().find(|(t, _)| t == table) {
                (
                    WarningKind::UnsupportedExecutorTable,
                    format!("{path} ignored: Oar has no {executor} executor"),
                )
            } else if table == "referees" {
                (
                    WarningKind::NotImplemented,
                    format!("{path} ignored: Oar does not run metrics referees"),
                )
            } else {
                unknown(&path)
            }
        }
        [
            Segment::Key(runners),
            Segment::Index(_),
            Segment::Key(kubernetes),
            Segment::Key(autoscaler),
        ] if runners == "runners" && kubernetes == "kubernetes" && autoscaler == "autoscaler" => (
            WarningKind::NotImplemented,
            format!("{path} ignored: Oar does not pre-warm capacity with pause pods"),
        ),
        _ => unknown(&path),
    };
    PendingWarning {
        path,
        kind,
        message,
        anchor: Anchor::Key,
    }
}

fn unknown(path: &KeyPath) -> (WarningKind, String) {
    (
        WarningKind::UnknownKey,
        format!("unknown key {path} ignored"),
    )
}
