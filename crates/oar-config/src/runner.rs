//! `[[runners]]`: one registered runner.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cache::{CacheConfig, CacheWire};
use crate::kubernetes::{KubernetesConfig, KubernetesWire};
use crate::path::KeyPath;
use crate::serde_util::{Caseless, RawDuration, RawTime};
use crate::token::short_token;
use crate::url::ServerUrl;
use crate::validate::{
    Ctx, EnvVar, Issue, IssueKind, env_list, go_duration, non_empty, non_negative, one_of,
};
use crate::warning::WarningKind;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RunnerWire {
    name: Option<String>,
    url: Option<String>,
    clone_url: Option<String>,
    id: Option<i64>,
    token: Option<SecretString>,
    token_obtained_at: Option<RawTime>,
    token_expires_at: Option<RawTime>,
    #[serde(rename = "tls-ca-file")]
    tls_ca_file: Option<String>,
    #[serde(rename = "tls-cert-file")]
    tls_cert_file: Option<String>,
    #[serde(rename = "tls-key-file")]
    tls_key_file: Option<String>,
    limit: Option<i64>,
    executor: Option<String>,
    shell: Option<String>,
    builds_dir: Option<String>,
    cache_dir: Option<String>,
    environment: Vec<String>,
    request_concurrency: Option<i64>,
    output_limit: Option<i64>,
    pre_get_sources_script: Option<String>,
    post_get_sources_script: Option<String>,
    pre_clone_script: Option<String>,
    post_clone_script: Option<String>,
    pre_build_script: Option<String>,
    post_build_script: Option<String>,
    debug_trace_disabled: Option<bool>,
    safe_directory_checkout: Option<bool>,
    unhealthy_requests_limit: Option<i64>,
    unhealthy_interval: Option<RawDuration>,
    job_status_final_update_retry_limit: Option<i64>,
    custom_build_dir: Option<CustomBuildDirWire>,
    feature_flags: BTreeMap<String, bool>,
    cache: Option<Caseless<CacheWire>>,
    kubernetes: Option<KubernetesWire>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CustomBuildDirWire {
    enabled: Option<bool>,
}

/// The executors Oar runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Executor {
    /// `shell`: jobs run as local processes.
    Shell,
    /// `kubernetes`: jobs run in pods.
    Kubernetes,
}

impl Executor {
    /// The `executor` values Oar accepts.
    pub const SUPPORTED: [&'static str; 2] = ["shell", "kubernetes"];

    /// The config name (`shell`, `kubernetes`).
    pub fn as_str(self) -> &'static str {
        match self {
            Executor::Shell => "shell",
            Executor::Kubernetes => "kubernetes",
        }
    }
}

impl fmt::Display for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `shell` a runner generates scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shell {
    /// `bash` (the default for both executors).
    Bash,
    /// `sh`.
    Sh,
    /// `pwsh` (PowerShell Core).
    Pwsh,
    /// `powershell` (Windows PowerShell).
    Powershell,
}

/// Runner tables of executors Oar does not have; each gets one warning.
pub(crate) const FOREIGN_EXECUTOR_TABLES: [(&str, &str); 8] = [
    ("docker", "docker"),
    ("machine", "docker+machine"),
    ("autoscaler", "docker-autoscaler or instance"),
    ("custom", "custom"),
    ("ssh", "ssh"),
    ("parallels", "parallels"),
    ("virtualbox", "virtualbox"),
    ("instance", "instance"),
];

/// GitLab Runner's default `output_limit` in KiB.
pub const DEFAULT_OUTPUT_LIMIT_KIB: u32 = 4096;

/// One `[[runners]]` entry, validated.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// `name`: the runner's description. Default: empty.
    pub name: String,
    /// `url`: the GitLab instance (http or https). Required.
    pub url: ServerUrl,
    /// `clone_url`: overrides the URL jobs clone from. Default: derived from `url`.
    pub clone_url: Option<ServerUrl>,
    /// `id`: the runner id GitLab assigned. Default 0.
    pub id: u64,
    /// `token`: the runner authentication token (`glrt-…`). Redacted in `Debug`.
    pub token: SecretString,
    /// `token_obtained_at`. Default: unset.
    pub token_obtained_at: Option<OffsetDateTime>,
    /// `token_expires_at`. Unset, or GitLab Runner's zero time `0001-01-01T00:00:00Z`: the token
    /// does not expire.
    pub token_expires_at: Option<OffsetDateTime>,
    /// `tls-ca-file`: CA bundle for the GitLab connection.
    pub tls_ca_file: Option<PathBuf>,
    /// `tls-cert-file`: client certificate (needs `tls-key-file`).
    pub tls_cert_file: Option<PathBuf>,
    /// `tls-key-file`: client key (needs `tls-cert-file`).
    pub tls_key_file: Option<PathBuf>,
    /// `limit`: maximum concurrent jobs of this runner. Default 0, kept here as `None`: no
    /// limit beyond the global `concurrent`.
    pub limit: Option<u32>,
    /// `executor`. Required.
    pub executor: Executor,
    /// `shell`. Default: bash.
    pub shell: Option<Shell>,
    /// `builds_dir` as configured; see [`RunnerConfig::effective_builds_dir`].
    pub builds_dir: Option<PathBuf>,
    /// `cache_dir` as configured; see [`RunnerConfig::effective_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// `[runners.custom_build_dir] enabled`: allow `GIT_CLONE_PATH`. Default: unset (the
    /// executor decides; GitLab Runner enables it for kubernetes, disables it for shell).
    pub custom_build_dir_enabled: Option<bool>,
    /// `environment`: `KEY=VALUE` variables added to every job.
    pub environment: Vec<EnvVar>,
    /// `request_concurrency`: parallel long-poll requests for jobs. Default 1 (also for 0).
    pub request_concurrency: u32,
    /// `output_limit` in KiB. Default 4096 (also for 0).
    pub output_limit: u32,
    /// `pre_get_sources_script` (falls back to the deprecated `pre_clone_script`).
    pub pre_get_sources_script: Option<String>,
    /// `post_get_sources_script` (falls back to the deprecated `post_clone_script`).
    pub post_get_sources_script: Option<String>,
    /// `pre_build_script`.
    pub pre_build_script: Option<String>,
    /// `post_build_script`.
    pub post_build_script: Option<String>,
    /// `debug_trace_disabled`: refuse `CI_DEBUG_TRACE`. Default `false`.
    pub debug_trace_disabled: bool,
    /// `safe_directory_checkout`: add a git `safe.directory` for the build dir. Default: unset.
    pub safe_directory_checkout: Option<bool>,
    /// `unhealthy_requests_limit`: failed job requests before the worker pauses. Default 3.
    pub unhealthy_requests_limit: u32,
    /// `unhealthy_interval`: how long the worker pauses. Default 60m.
    pub unhealthy_interval: Duration,
    /// `job_status_final_update_retry_limit`. Default: unset (Oar's built-in retry limit).
    pub job_status_final_update_retry_limit: Option<u32>,
    /// `[runners.feature_flags]`: `FF_*` name → value. Flags not listed keep their defaults.
    pub feature_flags: BTreeMap<String, bool>,
    /// `[runners.cache]`.
    pub cache: Option<CacheConfig>,
    /// `[runners.kubernetes]`; always `Some` for the kubernetes executor (defaults when the
    /// table is absent), `None` for shell.
    pub kubernetes: Option<KubernetesConfig>,
}

impl RunnerConfig {
    /// The short token (see [`short_token`](crate::short_token)).
    pub fn short_token(&self) -> &str {
        short_token(self.token.expose_secret())
    }

    /// `builds_dir`, or the executor's fixed default: `/builds` in the job pod for kubernetes.
    /// `None` for the shell executor without a setting: the caller uses
    /// `<working directory>/builds`.
    pub fn effective_builds_dir(&self) -> Option<&Path> {
        match (&self.builds_dir, self.executor) {
            (Some(dir), _) => Some(dir),
            (None, Executor::Kubernetes) => Some(Path::new("/builds")),
            (None, Executor::Shell) => None,
        }
    }

    /// `cache_dir`, or the executor's fixed default: `/cache` for kubernetes. `None` for the
    /// shell executor without a setting: the caller uses `<working directory>/cache`.
    pub fn effective_cache_dir(&self) -> Option<&Path> {
        match (&self.cache_dir, self.executor) {
            (Some(dir), _) => Some(dir),
            (None, Executor::Kubernetes) => Some(Path::new("/cache")),
            (None, Executor::Shell) => None,
        }
    }

    /// The value set in `[runners.feature_flags]`, if any.
    pub fn feature_flag(&self, name: &str) -> Option<bool> {
        self.feature_flags.get(name).copied()
    }

    /// `output_limit` in bytes.
    pub fn output_limit_bytes(&self) -> u64 {
        u64::from(self.output_limit) * 1024
    }

    pub(crate) fn from_wire(
        wire: RunnerWire,
        path: &KeyPath,
        ctx: &mut Ctx,
    ) -> Result<Self, Issue> {
        let name = non_empty(wire.name).unwrap_or_default();
        let label = if name.is_empty() {
            path.to_string()
        } else {
            name.clone()
        };
        let executor = executor(path, wire.executor, &label)?;
        let url = ServerUrl::required(&path.key("url"), wire.url)?;
        let clone_url = ServerUrl::optional(&path.key("clone_url"), wire.clone_url)?;
        let token = wire.token.unwrap_or_else(|| SecretString::from(""));
        if token.expose_secret().is_empty() {
            ctx.warn(
                path,
                WarningKind::Suspicious,
                format!("runner {label:?} has no token; GitLab will reject its requests"),
            );
        }
        let tls_cert_file = non_empty(wire.tls_cert_file).map(PathBuf::from);
        let tls_key_file = non_empty(wire.tls_key_file).map(PathBuf::from);
        match (&tls_cert_file, &tls_key_file) {
            (Some(_), None) => {
                return Err(Issue::value(
                    &path.key("tls-cert-file"),
                    "tls-cert-file needs tls-key-file as well",
                ));
            }
            (None, Some(_)) => {
                return Err(Issue::value(
                    &path.key("tls-key-file"),
                    "tls-key-file needs tls-cert-file as well",
                ));
            }
            _ => {}
        }
        let pre_get_sources_script = deprecated_script(
            path,
            ctx,
            wire.pre_get_sources_script,
            wire.pre_clone_script,
            "pre",
        );
        let post_get_sources_script = deprecated_script(
            path,
            ctx,
            wire.post_get_sources_script,
            wire.post_clone_script,
            "post",
        );
        let cache = wire
            .cache
            .map(|Caseless(c)| CacheConfig::from_wire(c, &path.key("cache"), ctx))
            .transpose()?;
        let kubernetes = match (executor, wire.kubernetes) {
            (Executor::Kubernetes, k8s) => Some(KubernetesConfig::from_wire(
                k8s.unwrap_or_default(),
                &path.key("kubernetes"),
                ctx,
            )?),
            (Executor::Shell, Some(_)) => {
                let key = path.key("kubernetes");
                ctx.warn(
                    &key,
                    WarningKind::Suspicious,
                    format!("{key} ignored: runner {label:?} uses the shell executor"),
                );
                None
            }
            (Executor::Shell, None) => None,
        };
        Ok(Self {
            name,
            url,
            clone_url,
            id: non_negative(&path.key("id"), wire.id)?.unwrap_or(0),
            token,
            token_obtained_at: timestamp(&path.key("token_obtained_at"), wire.token_obtained_at)?,
            token_expires_at: timestamp(&path.key("token_expires_at"), wire.token_expires_at)?,
            tls_ca_file: non_empty(wire.tls_ca_file).map(PathBuf::from),
            tls_cert_file,
            tls_key_file,
            limit: non_negative::<u32>(&path.key("limit"), wire.limit)?.filter(|l| *l > 0),
            executor,
            shell: shell(path, wire.shell.as_deref())?,
            builds_dir: non_empty(wire.builds_dir).map(PathBuf::from),
            cache_dir: non_empty(wire.cache_dir).map(PathBuf::from),
            custom_build_dir_enabled: wire.custom_build_dir.and_then(|c| c.enabled),
            environment: env_list(&path.key("environment"), wire.environment)?,
            request_concurrency: positive_or(
                path,
                "request_concurrency",
                wire.request_concurrency,
                1,
            )?,
            output_limit: positive_or(
                path,
                "output_limit",
                wire.output_limit,
                DEFAULT_OUTPUT_LIMIT_KIB,
            )?,
            pre_get_sources_script,
            post_get_sources_script,
            pre_build_script: non_empty(wire.pre_build_script),
            post_build_script: non_empty(wire.post_build_script),
            debug_trace_disabled: wire.debug_trace_disabled.unwrap_or(false),
            safe_directory_checkout: wire.safe_directory_checkout,
            unhealthy_requests_limit: positive_or(
                path,
                "unhealthy_requests_limit",
                wire.unhealthy_requests_limit,
                3,
            )?,
            unhealthy_interval: wire
                .unhealthy_interval
                .map(|d| go_duration(&path.key("unhealthy_interval"), &d))
                .transpose()?
                .unwrap_or(Duration::from_secs(3600)),
            job_status_final_update_retry_limit: non_negative(
                &path.key("job_status_final_update_retry_limit"),
                wire.job_status_final_update_retry_limit,
            )?,
            feature_flags: wire.feature_flags,
            cache,
            kubernetes,
        })
    }
}

fn executor(path: &KeyPath, value: Option<String>, label: &str) -> Result<Executor, Issue> {
    let key = path.key("executor");
    match non_empty(value).as_deref() {
        None => Err(Issue::missing(&key)),
        Some("shell") => Ok(Executor::Shell),
        Some("kubernetes") => Ok(Executor::Kubernetes),
        Some(other) => Err(Issue {
            path: key,
            kind: IssueKind::UnsupportedExecutor {
                runner: label.to_owned(),
                executor: other.to_owned(),
            },
        }),
    }
}

fn shell(path: &KeyPath, value: Option<&str>) -> Result<Option<Shell>, Issue> {
    one_of(
        &path.key("shell"),
        value,
        &[
            ("bash", Shell::Bash),
            ("sh", Shell::Sh),
            ("pwsh", Shell::Pwsh),
            ("powershell", Shell::Powershell),
        ],
        false,
    )
}

/// A non-negative count where 0 (or absent) means `default`.
fn positive_or(path: &KeyPath, key: &str, value: Option<i64>, default: u32) -> Result<u32, Issue> {
    Ok(non_negative::<u32>(&path.key(key), value)?
        .filter(|v| *v > 0)
        .unwrap_or(default))
}

fn deprecated_script(
    path: &KeyPath,
    ctx: &mut Ctx,
    current: Option<String>,
    deprecated: Option<String>,
    which: &str,
) -> Option<String> {
    let deprecated = non_empty(deprecated);
    if deprecated.is_some() {
        let key = path.key(&format!("{which}_clone_script"));
        ctx.warn(
            &key,
            WarningKind::Deprecated,
            format!("{key} is deprecated; use {which}_get_sources_script"),
        );
    }
    non_empty(current).or(deprecated)
}

/// Parses a timestamp; GitLab Runner's zero time (year 1) means unset.
fn timestamp(path: &KeyPath, value: Option<RawTime>) -> Result<Option<OffsetDateTime>, Issue> {
    let Some(RawTime(text)) = value.filter(|t| !t.0.is_empty()) else {
        return Ok(None);
    };
    let parsed = OffsetDateTime::parse(&text, &Rfc3339).map_err(|e| {
        Issue::value(
            path,
            format!("expected an RFC 3339 date-time with offset, found {text:?} ({e})"),
        )
    })?;
    Ok((parsed.year() > 1).then_some(parsed))
}
