//! Job variables: the runner's own, the job's, expansion and lookup.

use oar_gitlab::JobVariable;

/// One variable as the job sees it.
#[derive(Clone, PartialEq, Eq)]
pub struct Variable {
    /// Name.
    pub key: String,
    /// Value, before expansion.
    pub value: String,
    /// Written to a file whose path is exported.
    pub file: bool,
    /// Masked in the log.
    pub masked: bool,
    /// Never expanded.
    pub raw: bool,
    /// Not secret (may go to services).
    pub public: bool,
}

impl std::fmt::Debug for Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = if self.masked || !self.public {
            "[REDACTED]"
        } else {
            self.value.as_str()
        };
        f.debug_struct("Variable")
            .field("key", &self.key)
            .field("value", &value)
            .field("file", &self.file)
            .field("masked", &self.masked)
            .field("raw", &self.raw)
            .finish()
    }
}

impl Variable {
    /// A plain public variable.
    pub fn public(key: impl Into<String>, value: impl Into<String>) -> Self {
        Variable {
            key: key.into(),
            value: value.into(),
            file: false,
            masked: false,
            raw: false,
            public: true,
        }
    }
}

impl From<&JobVariable> for Variable {
    fn from(v: &JobVariable) -> Self {
        Variable {
            key: v.key.clone(),
            value: v.value.clone(),
            file: v.file,
            masked: v.masked,
            raw: v.raw,
            public: v.public,
        }
    }
}

/// An ordered list of variables; a later definition of a key wins.
#[derive(Debug, Clone, Default)]
pub struct Variables(Vec<Variable>);

impl Variables {
    /// Empty list.
    pub fn new() -> Self {
        Variables(Vec::new())
    }

    /// Appends a variable (it overrides earlier ones of the same key).
    pub fn push(&mut self, v: Variable) {
        if v.key.is_empty() || !valid_name(&v.key) {
            tracing::warn!(key = %v.key, "ignoring a variable whose name is not a valid shell name");
            return;
        }
        self.0.push(v);
    }

    /// Appends a public variable.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.push(Variable::public(key, value));
    }

    /// The last definition of `key`.
    pub fn get(&self, key: &str) -> Option<&Variable> {
        self.0.iter().rev().find(|v| v.key == key)
    }

    /// The value of `key`, expanded, or `None`.
    pub fn value(&self, key: &str) -> Option<String> {
        self.get(key).map(|v| {
            if v.raw {
                v.value.clone()
            } else {
                self.expand(&v.value)
            }
        })
    }

    /// The value of `key`, or `""`.
    pub fn value_or_empty(&self, key: &str) -> String {
        self.value(key).unwrap_or_default()
    }

    /// Interprets a boolean variable as GitLab does (`true`/`1`/`yes`…); `None` when unset or
    /// unreadable.
    pub fn bool(&self, key: &str) -> Option<bool> {
        let v = self.value(key)?;
        match v.trim().to_ascii_lowercase().as_str() {
            "1" | "t" | "true" | "yes" | "y" | "on" => Some(true),
            "0" | "f" | "false" | "no" | "n" | "off" | "" => Some(false),
            _ => None,
        }
    }

    /// Every variable once (last definition wins), in first-appearance order.
    pub fn deduped(&self) -> Vec<&Variable> {
        let mut out: Vec<&Variable> = Vec::new();
        for v in &self.0 {
            if let Some(slot) = out.iter_mut().find(|o| o.key == v.key) {
                *slot = v;
            } else {
                out.push(v);
            }
        }
        out
    }

    /// Values that must be masked in the log.
    pub fn masked_values(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|v| v.masked && !v.value.is_empty())
            .map(|v| v.value.clone())
            .collect()
    }

    /// Expands `$NAME`, `${NAME}` against this list (one level, unset names give ``);
    /// `$$` gives a literal `$`.
    pub fn expand(&self, input: &str) -> String {
        expand_with(input, |k| self.get(k).map(|v| v.value.clone()))
    }
}

/// Whether `name` is a shell variable name.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Expands `$NAME` / `${NAME}` with `lookup`; `$$` → `$`; a `$` not followed by a name stays.
pub fn expand_with(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            match tail.find('}') {
                Some(end) if valid_name(&tail[..end]) => {
                    out.push_str(&lookup(&tail[..end]).unwrap_or_default());
                    rest = &tail[end + 1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            let len = after
                .char_indices()
                .take_while(|(i, c)| {
                    *c == '_' || c.is_ascii_alphabetic() || (*i > 0 && c.is_ascii_digit())
                })
                .map(|(i, c)| i + c.len_utf8())
                .last()
                .unwrap_or(0);
            if len == 0 {
                out.push('$');
                rest = after;
            } else {
                out.push_str(&lookup(&after[..len]).unwrap_or_default());
                rest = &after[len..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Variables {
        let mut v = Variables::new();
        v.set("CI_PROJECT_DIR", "/builds/acme/widget");
        v.set("CARGO_HOME", "$CI_PROJECT_DIR/.cargo");
        v.push(Variable {
            raw: true,
            ..Variable::public("LIT", "$NOT/${ALSO}")
        });
        v.set("A", "first");
        v.set("A", "second");
        v
    }

    #[test]
    fn expansion_forms() {
        let v = vars();
        assert_eq!(v.expand("$CI_PROJECT_DIR/x"), "/builds/acme/widget/x");
        assert_eq!(v.expand("${A}b $A-c"), "secondb second-c");
        assert_eq!(
            v.expand("cost $$5 and $ alone and ${"),
            "cost $5 and $ alone and ${"
        );
        assert_eq!(v.expand("$UNSET|${UNSET}|"), "||");
        assert_eq!(v.expand("$1abc"), "$1abc");
    }

    #[test]
    fn values_expand_unless_raw() {
        let v = vars();
        assert_eq!(v.value("CARGO_HOME").unwrap(), "/builds/acme/widget/.cargo");
        assert_eq!(v.value("LIT").unwrap(), "$NOT/${ALSO}");
        assert_eq!(v.value("A").unwrap(), "second");
    }

    #[test]
    fn dedup_keeps_last_definition_in_first_position() {
        let v = vars();
        let keys: Vec<_> = v
            .deduped()
            .iter()
            .map(|x| (x.key.clone(), x.value.clone()))
            .collect();
        assert_eq!(
            keys.last().unwrap(),
            &("A".to_string(), "second".to_string())
        );
        assert_eq!(keys.len(), 4);
    }

    #[test]
    fn invalid_names_are_dropped_and_debug_redacts() {
        let mut v = Variables::new();
        v.set("NOT VALID", "x");
        v.push(Variable {
            masked: true,
            ..Variable::public("SECRET", "hunter2hunter2")
        });
        assert!(v.get("NOT VALID").is_none());
        assert!(!format!("{v:?}").contains("hunter2"));
        assert_eq!(v.masked_values(), vec!["hunter2hunter2".to_string()]);
    }

    #[test]
    fn bools() {
        let mut v = Variables::new();
        v.set("X", "TRUE");
        v.set("Y", "0");
        v.set("Z", "maybe");
        assert_eq!(v.bool("X"), Some(true));
        assert_eq!(v.bool("Y"), Some(false));
        assert_eq!(v.bool("Z"), None);
        assert_eq!(v.bool("W"), None);
    }
}
