//! Building the `[[runners]]` table that `oar register` appends.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use toml_edit::{Array, Datetime, Item, Table, Value};

use crate::kubernetes::PullPolicy;
use crate::locate::fold_key;
use crate::runner::Executor;

/// Indentation of keys inside `[[runners]]`, as GitLab Runner writes them.
pub(super) const RUNNER_INDENT: &str = "  ";
/// Indentation of keys inside `[runners.kubernetes]`.
const SUBTABLE_INDENT: &str = "    ";
/// GitLab Runner's zero time: "no expiry".
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A runner to append with [`ConfigDocument::append_runner`](super::ConfigDocument::append_runner).
///
/// Optional fields left `None` (or empty) are not written.
#[derive(Debug, Clone)]
pub struct NewRunner {
    /// `name`.
    pub name: String,
    /// `url`.
    pub url: String,
    /// `id` from GitLab's answer.
    pub id: i64,
    /// `token`.
    pub token: SecretString,
    /// `token_obtained_at` (written in UTC, truncated to seconds).
    pub token_obtained_at: OffsetDateTime,
    /// `token_expires_at`; `None` writes the zero time (no expiry), as GitLab Runner does.
    pub token_expires_at: Option<OffsetDateTime>,
    /// `executor`.
    pub executor: Executor,
    /// `limit`.
    pub limit: Option<u32>,
    /// `request_concurrency`.
    pub request_concurrency: Option<u32>,
    /// `tls-ca-file`.
    pub tls_ca_file: Option<PathBuf>,
    /// `tls-cert-file`.
    pub tls_cert_file: Option<PathBuf>,
    /// `tls-key-file`.
    pub tls_key_file: Option<PathBuf>,
    /// `builds_dir`.
    pub builds_dir: Option<String>,
    /// `cache_dir`.
    pub cache_dir: Option<String>,
    /// `environment` (`KEY=VALUE` entries).
    pub environment: Vec<String>,
    /// `shell`.
    pub shell: Option<String>,
    /// `[runners.kubernetes]`; written for the kubernetes executor (an empty table when
    /// `None`).
    pub kubernetes: Option<NewKubernetes>,
    /// `AccessKey` of `[runners.cache.s3]`: static credentials of the S3 cache (given with
    /// [`cache_s3_secret_key`](Self::cache_s3_secret_key)). With a template they are merged
    /// into its `[runners.cache.s3]` table, replacing keys of the same name in any case.
    pub cache_s3_access_key: Option<SecretString>,
    /// `SecretKey` of `[runners.cache.s3]`.
    pub cache_s3_secret_key: Option<SecretString>,
}

impl NewRunner {
    /// A runner with the required keys; set the optional fields afterwards.
    pub fn new(
        name: impl Into<String>,
        url: impl Into<String>,
        id: i64,
        token: SecretString,
        token_obtained_at: OffsetDateTime,
        executor: Executor,
    ) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            id,
            token,
            token_obtained_at,
            token_expires_at: None,
            executor,
            limit: None,
            request_concurrency: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            builds_dir: None,
            cache_dir: None,
            environment: Vec::new(),
            shell: None,
            kubernetes: None,
            cache_s3_access_key: None,
            cache_s3_secret_key: None,
        }
    }
}

/// The `[runners.kubernetes]` keys `register` writes from its flags.
#[derive(Debug, Clone, Default)]
pub struct NewKubernetes {
    /// `host`.
    pub host: Option<String>,
    /// `namespace`.
    pub namespace: Option<String>,
    /// `image`.
    pub image: Option<String>,
    /// `helper_image`.
    pub helper_image: Option<String>,
    /// `service_account`.
    pub service_account: Option<String>,
    /// `privileged`.
    pub privileged: Option<bool>,
    /// `pull_policy` (a string when there is one, else an array).
    pub pull_policy: Vec<PullPolicy>,
    /// `cpu_request`.
    pub cpu_request: Option<String>,
    /// `cpu_limit`.
    pub cpu_limit: Option<String>,
    /// `memory_request`.
    pub memory_request: Option<String>,
    /// `memory_limit`.
    pub memory_limit: Option<String>,
    /// `poll_timeout` in seconds.
    pub poll_timeout: Option<u32>,
}

/// A TOML datetime in GitLab Runner's style: UTC, whole seconds; `None` is the zero time.
pub(super) fn datetime(time: Option<OffsetDateTime>) -> Result<Datetime, String> {
    let text = match time {
        None => ZERO_TIME.to_owned(),
        Some(time) => time
            .to_offset(UtcOffset::UTC)
            .replace_nanosecond(0)
            .map_err(|e| e.to_string())
            .and_then(|t| t.format(&Rfc3339).map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot write timestamp {time}: {e}"))?,
    };
    text.parse::<Datetime>()
        .map_err(|e| format!("cannot write timestamp {text}: {e}"))
}

pub(super) fn indent_key(table: &mut Table, key: &str, indent: &str) {
    if let Some(mut key) = table.key_mut(key) {
        key.leaf_decor_mut().set_prefix(indent);
    }
}

struct Writer<'t> {
    table: &'t mut Table,
    indent: &'static str,
}

impl Writer<'_> {
    fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.table.insert(key, Item::Value(value.into()));
        indent_key(self.table, key, self.indent);
    }

    fn opt<V: Into<Value>>(&mut self, key: &str, value: Option<V>) {
        if let Some(value) = value {
            self.set(key, value);
        }
    }

    fn opt_str(&mut self, key: &str, value: Option<&str>) {
        self.opt(key, value.filter(|v| !v.is_empty()));
    }
}

pub(super) fn runner_table(runner: &NewRunner) -> Result<Table, String> {
    let mut table = Table::new();
    // A blank line before `[[runners]]`.
    table.decor_mut().set_prefix("\n");
    let mut w = Writer {
        table: &mut table,
        indent: RUNNER_INDENT,
    };
    w.set("name", runner.name.as_str());
    w.opt("limit", runner.limit.map(i64::from));
    w.opt(
        "request_concurrency",
        runner.request_concurrency.map(i64::from),
    );
    w.set("url", runner.url.as_str());
    w.set("id", runner.id);
    w.set("token", runner.token.expose_secret());
    w.set(
        "token_obtained_at",
        datetime(Some(runner.token_obtained_at))?,
    );
    w.set("token_expires_at", datetime(runner.token_expires_at)?);
    let path_str = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
    w.opt("tls-ca-file", path_str(&runner.tls_ca_file));
    w.opt("tls-cert-file", path_str(&runner.tls_cert_file));
    w.opt("tls-key-file", path_str(&runner.tls_key_file));
    w.set("executor", runner.executor.as_str());
    w.opt_str("builds_dir", runner.builds_dir.as_deref());
    w.opt_str("cache_dir", runner.cache_dir.as_deref());
    if !runner.environment.is_empty() {
        w.set("environment", runner.environment.iter().collect::<Array>());
    }
    w.opt_str("shell", runner.shell.as_deref());
    if runner.executor == Executor::Kubernetes || runner.kubernetes.is_some() {
        let k8s = kubernetes_table(
            runner
                .kubernetes
                .as_ref()
                .unwrap_or(&NewKubernetes::default()),
        );
        table.insert("kubernetes", Item::Table(k8s));
    }
    write_cache_credentials(&mut table, runner);
    Ok(table)
}

/// Whether `runner` carries S3 cache credentials.
pub(super) fn has_cache_credentials(runner: &NewRunner) -> bool {
    runner.cache_s3_access_key.is_some() || runner.cache_s3_secret_key.is_some()
}

/// Writes `runner`'s S3 cache credentials into `[runners.cache.s3]` of `table` (a
/// `[[runners]]` table), creating the tables as needed and keeping their other keys. The
/// cache tables are read case-insensitively (`s3`, `S3`; `AccessKey`, `access_key`), so
/// an existing key of either name is replaced rather than duplicated.
pub(super) fn write_cache_credentials(table: &mut Table, runner: &NewRunner) {
    if !has_cache_credentials(runner) {
        return;
    }
    let cache_indents = (RUNNER_INDENT, SUBTABLE_INDENT);
    with_child_table(
        table,
        "cache",
        |k| k == "cache",
        cache_indents,
        |cache| {
            let s3_indents = (SUBTABLE_INDENT, CACHE_S3_INDENT);
            with_child_table(
                cache,
                "s3",
                |k| fold_key(k) == "s3",
                s3_indents,
                |s3| {
                    for (key, value) in [
                        ("AccessKey", &runner.cache_s3_access_key),
                        ("SecretKey", &runner.cache_s3_secret_key),
                    ] {
                        let Some(value) = value else { continue };
                        let folded = fold_key(key);
                        let same: Vec<String> = s3
                            .iter()
                            .map(|(k, _)| k.to_owned())
                            .filter(|k| fold_key(k) == folded)
                            .collect();
                        for k in same {
                            s3.remove(&k);
                        }
                        s3.insert(key, Item::Value(Value::from(value.expose_secret())));
                        indent_key(s3, key, CACHE_S3_INDENT);
                    }
                },
            );
        },
    );
}

/// Indentation of keys inside `[runners.cache.s3]`.
const CACHE_S3_INDENT: &str = "      ";

/// Runs `edit` on the sub-table of `parent` whose key matches `is_key`, in place (an inline
/// table becomes a table), or on a new one named `name`: implicit, so that only its
/// sub-tables' headers show until it gets keys of its own. `indents`: of the table's header
/// and of its keys.
fn with_child_table(
    parent: &mut Table,
    name: &str,
    is_key: impl Fn(&str) -> bool,
    (header_indent, key_indent): (&str, &str),
    edit: impl FnOnce(&mut Table),
) {
    let key = parent
        .iter()
        .map(|(k, _)| k.to_owned())
        .find(|k| is_key(k))
        .unwrap_or_else(|| name.to_owned());
    let slot = parent.entry(&key).or_insert(Item::None);
    let mut table = match std::mem::take(slot) {
        Item::Table(t) => t,
        Item::Value(Value::InlineTable(inline)) => {
            let mut t = inline.into_table();
            t.fmt();
            t.decor_mut().set_prefix(header_indent);
            let keys: Vec<String> = t.iter().map(|(k, _)| k.to_owned()).collect();
            for k in keys {
                indent_key(&mut t, &k, key_indent);
            }
            t
        }
        // Missing, or not a table at all (the loader would refuse that anyway).
        _ => {
            let mut t = Table::new();
            t.set_implicit(true);
            t.decor_mut().set_prefix(header_indent);
            t
        }
    };
    edit(&mut table);
    *slot = Item::Table(table);
    // An inline table's key carried `key = ` spacing, which a header would show inside its
    // brackets.
    if let Some(mut k) = parent.key_mut(&key) {
        k.leaf_decor_mut().clear();
    }
}

fn kubernetes_table(k: &NewKubernetes) -> Table {
    let mut table = Table::new();
    table.decor_mut().set_prefix(RUNNER_INDENT);
    let mut w = Writer {
        table: &mut table,
        indent: SUBTABLE_INDENT,
    };
    w.opt_str("host", k.host.as_deref());
    w.opt_str("namespace", k.namespace.as_deref());
    w.opt_str("image", k.image.as_deref());
    w.opt_str("helper_image", k.helper_image.as_deref());
    w.opt_str("service_account", k.service_account.as_deref());
    w.opt("privileged", k.privileged);
    match k.pull_policy.as_slice() {
        [] => {}
        [one] => w.set("pull_policy", one.as_str()),
        many => w.set(
            "pull_policy",
            many.iter().map(|p| p.as_str()).collect::<Array>(),
        ),
    }
    w.opt_str("cpu_request", k.cpu_request.as_deref());
    w.opt_str("cpu_limit", k.cpu_limit.as_deref());
    w.opt_str("memory_request", k.memory_request.as_deref());
    w.opt_str("memory_limit", k.memory_limit.as_deref());
    w.opt("poll_timeout", k.poll_timeout.map(i64::from));
    table
}
