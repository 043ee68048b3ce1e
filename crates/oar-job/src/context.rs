//! Everything a job's scripts are generated from: runner settings, the payload, directories,
//! and the full variable list.

use crate::error::JobError;
use crate::vars::{Variable, Variables};
use oar_gitlab::JobResponse;
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::time::Duration;

/// GitLab Runner's default job timeout, used when the payload says 0 or less.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(7200);
/// Default timeout of `after_script`.
pub const DEFAULT_AFTER_SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// File variable with the CA bundle the runner trusts for GitLab.
pub const TLS_CA_FILE: &str = "CI_SERVER_TLS_CA_FILE";
/// File variable with the runner's client certificate for GitLab.
pub const TLS_CERT_FILE: &str = "CI_SERVER_TLS_CERT_FILE";
/// File variable with the runner's client key for GitLab.
pub const TLS_KEY_FILE: &str = "CI_SERVER_TLS_KEY_FILE";

/// Runner-side settings of a job, independent of the executor's mechanics. Serialisable: the
/// Kubernetes executor hands them to the job pod's helper inside the payload Secret.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct JobSettings {
    /// `[[runners]] name`.
    pub runner_name: String,
    /// The runner's short token (9 chars).
    pub short_token: String,
    /// System id of this manager.
    pub system_id: String,
    /// Oar version.
    pub version: String,
    /// Oar revision.
    pub revision: String,
    /// `shell` or `kubernetes`.
    pub executor: String,
    /// Root of the builds (`builds_dir`).
    pub builds_dir: String,
    /// Root of local caches (`cache_dir`).
    pub cache_dir: String,
    /// Whether several concurrent jobs share `builds_dir` (shell executor): then the project
    /// directory is namespaced by short token and concurrent id.
    pub shared_builds_dir: bool,
    /// Runner-local slot of this job.
    pub concurrent_id: usize,
    /// Slot among jobs of the same project.
    pub concurrent_project_id: usize,
    /// `[[runners]] environment` (`KEY=VALUE`).
    pub environment: Vec<String>,
    /// `pre_get_sources_script`.
    pub pre_get_sources_script: Option<String>,
    /// `post_get_sources_script`.
    pub post_get_sources_script: Option<String>,
    /// `pre_build_script`.
    pub pre_build_script: Option<String>,
    /// `post_build_script`.
    pub post_build_script: Option<String>,
    /// `clone_url`: replaces scheme and host of the remote.
    pub clone_url: Option<String>,
    /// `output_limit` in bytes.
    pub output_limit_bytes: usize,
    /// `[runners.feature_flags]`.
    pub feature_flags: BTreeMap<String, bool>,
    /// `[runners.custom_build_dir] enabled`.
    pub custom_build_dir_enabled: bool,
    /// `debug_trace_disabled`.
    pub debug_trace_disabled: bool,
    /// Text (PEM) of the runner's `tls-ca-file`: the job's file variable
    /// `CI_SERVER_TLS_CA_FILE`, which git trusts for the GitLab host.
    pub tls_ca_pem: Option<String>,
    /// Text (PEM) of the runner's `tls-cert-file`: the job's file variable
    /// `CI_SERVER_TLS_CERT_FILE`, git's client certificate for the GitLab host. Used only
    /// together with `tls_key_pem`.
    pub tls_cert_pem: Option<String>,
    /// Text (PEM) of the runner's `tls-key-file`: the job's file variable
    /// `CI_SERVER_TLS_KEY_FILE`. Used only together with `tls_cert_pem`.
    #[serde(serialize_with = "serialize_secret")]
    pub tls_key_pem: Option<SecretString>,
}

/// Writes a secret's value: only into the payload Secret that carries it to the job pod.
fn serialize_secret<S: serde::Serializer>(
    value: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_some(v.expose_secret()),
        None => s.serialize_none(),
    }
}

/// Directories of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `CI_BUILDS_DIR`.
    pub builds_dir: String,
    /// `CI_PROJECT_DIR`.
    pub project_dir: String,
    /// `<project dir>.tmp`: file variables, git config with credentials, `GITLAB_ENV`.
    pub tmp_dir: String,
    /// `<cache_dir>/<namespace>/<project>`.
    pub cache_dir: String,
}

/// The job, ready to have its scripts written.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The payload.
    pub job: JobResponse,
    /// Runner settings.
    pub settings: JobSettings,
    /// Directories.
    pub layout: Layout,
    /// Every variable the job's shells see, in export order.
    pub vars: Variables,
    /// Whole-job timeout.
    pub timeout: Duration,
}

/// `namespace/project` from the repo URL path, else `project-<id>`.
fn project_path(job: &JobResponse) -> String {
    let from_url = url::Url::parse(job.git_info.repo_url.expose())
        .ok()
        .and_then(|u| {
            let p = u
                .path()
                .trim_matches('/')
                .trim_end_matches(".git")
                .to_string();
            (!p.is_empty()).then_some(p)
        });
    let path = from_url.unwrap_or_else(|| format!("project-{}", job.job_info.project_id));
    // Keep only safe path segments: never climb out of the builds dir.
    path.split('/')
        .filter(|s| !s.is_empty() && *s != "." && *s != "..")
        .collect::<Vec<_>>()
        .join("/")
}

fn join(a: &str, b: &str) -> String {
    format!("{}/{}", a.trim_end_matches('/'), b.trim_start_matches('/'))
}

impl JobContext {
    /// Builds the context, or says why the job cannot run (the error names the field).
    pub fn new(job: JobResponse, settings: JobSettings) -> Result<Self, JobError> {
        let mut job_vars = Variables::new();
        for v in &job.variables {
            job_vars.push(Variable::from(v));
        }
        let strategy = job_vars.value("GIT_STRATEGY").unwrap_or_default();
        let project = project_path(&job);
        let mut project_dir = if settings.shared_builds_dir {
            join(
                &settings.builds_dir,
                &format!(
                    "{}/{}/{project}",
                    settings.short_token, settings.concurrent_project_id
                ),
            )
        } else {
            join(&settings.builds_dir, &project)
        };
        if strategy == "empty" {
            project_dir.push_str("-empty");
        }
        if let Some(clone_path) = job_vars.value("GIT_CLONE_PATH").filter(|p| !p.is_empty()) {
            if !settings.custom_build_dir_enabled {
                return Err(JobError::Payload {
                    field: "GIT_CLONE_PATH".into(),
                    reason: "custom build directories are not enabled for this runner \
                             ([runners.custom_build_dir] enabled = true)"
                        .into(),
                });
            }
            let clean = clone_path.trim_end_matches('/');
            let inside = clean
                .starts_with(&format!("{}/", settings.builds_dir.trim_end_matches('/')))
                && !clean.split('/').any(|s| s == "..");
            if !inside {
                return Err(JobError::Payload {
                    field: "GIT_CLONE_PATH".into(),
                    reason: format!(
                        "{clean} is not inside the builds directory {}",
                        settings.builds_dir
                    ),
                });
            }
            project_dir = clean.to_string();
        }
        let layout = Layout {
            builds_dir: settings.builds_dir.clone(),
            tmp_dir: format!("{project_dir}.tmp"),
            cache_dir: join(&settings.cache_dir, &project),
            project_dir,
        };
        let timeout = match job.runner_info.timeout {
            t if t > 0 => Duration::from_secs(t as u64),
            _ => DEFAULT_JOB_TIMEOUT,
        };
        let vars = Self::all_variables(&job, &settings, &layout, timeout, job_vars);
        Ok(JobContext {
            job,
            settings,
            layout,
            vars,
            timeout,
        })
    }

    fn all_variables(
        job: &JobResponse,
        s: &JobSettings,
        layout: &Layout,
        timeout: Duration,
        job_vars: Variables,
    ) -> Variables {
        let mut v = Variables::new();
        for (name, on) in &s.feature_flags {
            v.set(name, on.to_string());
        }
        v.set("CI_BUILDS_DIR", &layout.builds_dir);
        v.set("CI_PROJECT_DIR", &layout.project_dir);
        v.set("CI_CONCURRENT_ID", s.concurrent_id.to_string());
        v.set(
            "CI_CONCURRENT_PROJECT_ID",
            s.concurrent_project_id.to_string(),
        );
        v.set("CI_SERVER", "yes");
        v.set("CI_JOB_STATUS", "running");
        v.set("CI_JOB_TIMEOUT", timeout.as_secs().to_string());
        if let Some(image) = job.image.as_ref().filter(|i| !i.name.is_empty()) {
            v.set("CI_JOB_IMAGE", &image.name);
        }
        v.set("CI_RUNNER_SHORT_TOKEN", &s.short_token);
        for entry in &s.environment {
            if let Some((k, val)) = entry.split_once('=') {
                v.set(k, val);
            }
        }
        // TLS file variables, as GitLab Runner adds them: after the runner's own variables,
        // before the job's (which may override them).
        let tls_file = |key: &str, pem: &str, public: bool| Variable {
            key: key.to_string(),
            value: pem.to_string(),
            file: true,
            masked: false,
            raw: true,
            public,
        };
        if let Some(ca) = s.tls_ca_pem.as_deref().filter(|p| !p.is_empty()) {
            v.push(tls_file(TLS_CA_FILE, ca, true));
        }
        if let (Some(cert), Some(key)) = (s.tls_cert_pem.as_deref(), s.tls_key_pem.as_ref())
            && !cert.is_empty()
            && !key.expose_secret().is_empty()
        {
            v.push(tls_file(TLS_CERT_FILE, cert, true));
            v.push(tls_file(TLS_KEY_FILE, key.expose_secret(), false));
        }
        for var in job_vars.deduped() {
            v.push(var.clone());
        }
        if s.shared_builds_dir {
            v.set("CI_SHARED_ENVIRONMENT", "true");
        } else {
            v.set("CI_DISPOSABLE_ENVIRONMENT", "true");
        }
        v.set("CI_RUNNER_VERSION", &s.version);
        v.set("CI_RUNNER_REVISION", &s.revision);
        v.set(
            "CI_RUNNER_EXECUTABLE_ARCH",
            format!("{}/{}", std::env::consts::OS, oar_gitlab::info::go_arch()),
        );
        v.set("RUNNER_TEMP_PROJECT_DIR", &layout.tmp_dir);
        v
    }

    /// Whether a feature flag is on: the job's variable wins over the runner's setting.
    pub fn feature_flag(&self, name: &str) -> bool {
        self.vars.bool(name).unwrap_or_else(|| {
            self.settings
                .feature_flags
                .get(name)
                .copied()
                .unwrap_or(false)
        })
    }

    /// `CI_DEBUG_TRACE` unless the runner disabled it.
    pub fn debug_trace(&self) -> bool {
        !self.settings.debug_trace_disabled && self.vars.bool("CI_DEBUG_TRACE").unwrap_or(false)
    }

    /// Values to mask in the log.
    pub fn masked_values(&self) -> Vec<String> {
        let mut m = self.vars.masked_values();
        // The job token is always a secret, whatever the payload says.
        if !self.job.token.is_empty() {
            m.push(self.job.token.expose().to_string());
        }
        m
    }

    /// Token prefixes to mask, from the job's features.
    pub fn token_prefixes(&self) -> Vec<String> {
        self.job.features.token_mask_prefixes.clone()
    }

    /// A variable's expanded value or `""`.
    pub fn var(&self, key: &str) -> String {
        self.vars.value_or_empty(key)
    }

    /// Duration from a variable such as `RUNNER_SCRIPT_TIMEOUT` (`1h30m`, `90s`, `10m`, or
    /// plain seconds); `None` when unset or unreadable.
    pub fn duration_var(&self, key: &str) -> Option<Duration> {
        parse_go_duration(&self.var(key))
    }
}

/// Parses a Go-style duration (`1h2m3s`, `1.5h`, `300ms`) or plain seconds.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    (0.0..1e12)
        .contains(&total)
        .then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration(""), None);
    }
}
