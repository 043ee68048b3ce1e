//! Wire types of the runner API.
//!
//! Requests are serialised exactly as GitLab Runner sends them. Responses are read leniently:
//! GitLab adds fields often and sends `null` where a value is absent, so every collection and
//! optional field tolerates `null` and unknown fields are ignored.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// Deserialises `null` (or an absent field, with `#[serde(default)]`) as `T::default()`.
fn null_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// A string secret that serialises as its plain value (it is sent to GitLab) but never shows
/// in `Debug` output.
#[derive(Clone, Default)]
pub struct Token(SecretString);

impl Token {
    /// Wraps a token.
    pub fn new(value: impl Into<String>) -> Self {
        Token(SecretString::from(value.into()))
    }
    /// The token's value, for headers and bodies.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    /// Whether the token is empty.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([REDACTED])")
    }
}

impl Serialize for Token {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let v: Option<String> = Option::deserialize(de)?;
        Ok(Token::new(v.unwrap_or_default()))
    }
}

/// The features a runner advertises. Serialised with every key, `false` when unsupported,
/// as GitLab Runner does.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct FeaturesInfo {
    pub variables: bool,
    pub image: bool,
    pub services: bool,
    pub artifacts: bool,
    pub cache: bool,
    pub fallback_cache_keys: bool,
    pub shared: bool,
    pub upload_multiple_artifacts: bool,
    pub upload_raw_artifacts: bool,
    pub session: bool,
    pub terminal: bool,
    pub refspecs: bool,
    pub masking: bool,
    pub proxy: bool,
    pub raw_variables: bool,
    pub artifacts_exclude: bool,
    pub multi_build_steps: bool,
    pub trace_reset: bool,
    pub trace_checksum: bool,
    pub trace_size: bool,
    pub vault_secrets: bool,
    pub cancelable: bool,
    pub return_exit_code: bool,
    pub service_variables: bool,
    pub service_multiple_aliases: bool,
    pub image_executor_opts: bool,
    pub service_executor_opts: bool,
    pub cancel_gracefully: bool,
    pub native_steps_integration: bool,
    pub two_phase_job_commit: bool,
    pub job_inputs: bool,
}

/// The `info` object sent with registration, verification, job requests and updates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VersionInfo {
    /// Always `gitlab-runner`-shaped name of the runner software.
    pub name: String,
    /// Runner version.
    pub version: String,
    /// Source revision.
    pub revision: String,
    /// `linux`.
    pub platform: String,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// Executor name (`shell`, `kubernetes`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub executor: String,
    /// Shell name (`bash`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub shell: String,
    /// Advertised features.
    pub features: FeaturesInfo,
    /// Extra configuration (`gpus`).
    pub config: ConfigInfo,
    /// Runner labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `info.config`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigInfo {
    /// Docker `gpus` setting; always empty for Oar.
    pub gpus: String,
}

/// `POST /runners` body.
#[derive(Debug, Clone, Serialize)]
pub struct RegisterRunnerRequest {
    /// Registration token.
    pub token: Token,
    /// Runner description.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Maintenance note.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub maintenance_note: String,
    /// Comma-joined tags.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tag_list: String,
    /// Whether untagged jobs are taken.
    pub run_untagged: bool,
    /// Locked to the project.
    pub locked: bool,
    /// `not_protected` or `ref_protected`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub access_level: String,
    /// Maximum job timeout in seconds (omitted when 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub maximum_timeout: u64,
    /// Registered paused.
    pub paused: bool,
    /// Runner info.
    pub info: VersionInfo,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// `{id, token, token_expires_at}` returned by registration and verification.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunnerDetails {
    /// Runner id.
    #[serde(default)]
    pub id: i64,
    /// Runner authentication token.
    #[serde(default)]
    pub token: Token,
    /// Expiry as sent (RFC 3339), if any.
    #[serde(default)]
    pub token_expires_at: Option<String>,
}

/// `POST /runners/verify` body.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyRunnerRequest {
    /// Runner token.
    pub token: Token,
    /// System id of this runner manager.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub system_id: String,
    /// Runner info.
    pub info: VersionInfo,
}

/// `POST /jobs/request` body.
#[derive(Debug, Clone, Serialize)]
pub struct JobRequest {
    /// Runner token.
    pub token: Token,
    /// System id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub system_id: String,
    /// Last `X-GitLab-Last-Update` seen.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_update: String,
    /// Runner info.
    pub info: VersionInfo,
}

/// A job variable. Its `Debug` shows the value of public, unmasked variables only.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct JobVariable {
    /// Name.
    #[serde(default, deserialize_with = "null_default")]
    pub key: String,
    /// Value (`null` reads as empty).
    #[serde(default, deserialize_with = "null_default")]
    pub value: String,
    /// Public (not secret).
    #[serde(default, deserialize_with = "null_default")]
    pub public: bool,
    /// Internal to the runner (not exported to the build).
    #[serde(default, skip_serializing, deserialize_with = "null_default")]
    pub internal: bool,
    /// Written to a file whose path is exported.
    #[serde(default, deserialize_with = "null_default")]
    pub file: bool,
    /// Masked in the trace.
    #[serde(default, deserialize_with = "null_default")]
    pub masked: bool,
    /// Not expanded.
    #[serde(default, deserialize_with = "null_default")]
    pub raw: bool,
}

impl std::fmt::Debug for JobVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = self.masked || !self.public;
        f.debug_struct("JobVariable")
            .field("key", &self.key)
            .field(
                "value",
                &if secret {
                    "[REDACTED]"
                } else {
                    self.value.as_str()
                },
            )
            .field("public", &self.public)
            .field("internal", &self.internal)
            .field("file", &self.file)
            .field("masked", &self.masked)
            .field("raw", &self.raw)
            .finish()
    }
}

/// `job_info`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct JobInfo {
    #[serde(default, deserialize_with = "null_default")]
    pub id: i64,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub stage: String,
    #[serde(default, deserialize_with = "null_default")]
    pub project_id: i64,
    #[serde(default, deserialize_with = "null_default")]
    pub project_name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub pipeline_id: i64,
    #[serde(default, deserialize_with = "null_default")]
    pub project_full_path: String,
}

/// `git_info`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GitInfo {
    /// Clone URL with credentials embedded.
    #[serde(default)]
    pub repo_url: Token,
    /// Branch/tag/ref.
    #[serde(default, rename = "ref", deserialize_with = "null_default")]
    pub git_ref: String,
    /// Commit to check out.
    #[serde(default, deserialize_with = "null_default")]
    pub sha: String,
    /// Previous commit.
    #[serde(default, deserialize_with = "null_default")]
    pub before_sha: String,
    /// `branch` or `tag`.
    #[serde(default, deserialize_with = "null_default")]
    pub ref_type: String,
    /// Refspecs to fetch.
    #[serde(default, deserialize_with = "null_default")]
    pub refspecs: Vec<String>,
    /// Fetch depth, 0 = full.
    #[serde(default, deserialize_with = "null_default")]
    pub depth: u32,
    /// `sha1` or `sha256`.
    #[serde(default, deserialize_with = "null_default")]
    pub repo_object_format: String,
}

/// `runner_info`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunnerInfo {
    /// Effective job timeout in seconds; 0 or less means the default (7200).
    #[serde(default, deserialize_with = "null_default")]
    pub timeout: i64,
}

/// One entry of `steps`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Step {
    /// `script`, `release` or `after_script`.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Command lines.
    #[serde(default, deserialize_with = "null_default")]
    pub script: Vec<String>,
    /// Seconds.
    #[serde(default, deserialize_with = "null_default")]
    pub timeout: i64,
    /// `on_success`, `on_failure`, `always`.
    #[serde(default, deserialize_with = "null_default")]
    pub when: String,
    /// Failure allowed.
    #[serde(default, deserialize_with = "null_default")]
    pub allow_failure: bool,
}

/// One entry of `hooks`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Hook {
    /// `pre_get_sources_script` or `post_get_sources_script`.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Command lines.
    #[serde(default, deserialize_with = "null_default")]
    pub script: Vec<String>,
}

/// `image` and `services[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Image {
    /// Image reference.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Service alias(es), comma or space separated.
    #[serde(default, deserialize_with = "null_default")]
    pub alias: String,
    /// Entrypoint override.
    #[serde(default, deserialize_with = "null_default")]
    pub entrypoint: Vec<String>,
    /// Command override.
    #[serde(default, deserialize_with = "null_default")]
    pub command: Vec<String>,
    /// Service variables.
    #[serde(default, deserialize_with = "null_default")]
    pub variables: Vec<JobVariable>,
    /// Pull policies.
    #[serde(default, deserialize_with = "null_default")]
    pub pull_policy: Vec<String>,
}

/// `artifacts[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Artifact {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub untracked: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub paths: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub exclude: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub when: String,
    #[serde(default, deserialize_with = "null_default")]
    pub artifact_type: String,
    #[serde(default, deserialize_with = "null_default")]
    pub artifact_format: String,
    #[serde(default, deserialize_with = "null_default")]
    pub expire_in: String,
}

/// `cache[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Cache {
    #[serde(default, deserialize_with = "null_default")]
    pub key: String,
    #[serde(default, deserialize_with = "null_default")]
    pub untracked: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub policy: String,
    #[serde(default, deserialize_with = "null_default")]
    pub paths: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub when: String,
    #[serde(default, deserialize_with = "null_default")]
    pub fallback_keys: Vec<String>,
}

/// `dependencies[].artifacts_file`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ArtifactsFile {
    /// File name.
    #[serde(default, deserialize_with = "null_default")]
    pub filename: String,
    /// Size in bytes.
    #[serde(default, deserialize_with = "null_default")]
    pub size: i64,
}

/// `dependencies[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Dependency {
    /// Job id of the dependency.
    #[serde(default, deserialize_with = "null_default")]
    pub id: i64,
    /// Its name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Token to download with.
    #[serde(default)]
    pub token: Token,
    /// Present when an archive can be downloaded.
    #[serde(default)]
    pub artifacts_file: Option<ArtifactsFile>,
}

/// `credentials[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Credentials {
    #[serde(default, rename = "type", deserialize_with = "null_default")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_default")]
    pub url: String,
    #[serde(default, deserialize_with = "null_default")]
    pub username: String,
    #[serde(default)]
    pub password: Token,
}

/// `features` of the job (server capabilities).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobFeatures {
    /// Emit section markers.
    #[serde(default, deserialize_with = "null_default")]
    pub trace_sections: bool,
    /// Failure reasons the server accepts.
    #[serde(default, deserialize_with = "null_default")]
    pub failure_reasons: Vec<String>,
    /// Extra token prefixes to mask.
    #[serde(default, deserialize_with = "null_default")]
    pub token_mask_prefixes: Vec<String>,
}

/// The job payload of a `201` answer to `POST /jobs/request`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct JobResponse {
    pub id: i64,
    pub token: Token,
    #[serde(default, deserialize_with = "null_default")]
    pub allow_git_fetch: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub job_info: JobInfo,
    #[serde(default, deserialize_with = "null_default")]
    pub git_info: GitInfo,
    #[serde(default, deserialize_with = "null_default")]
    pub runner_info: RunnerInfo,
    #[serde(default, deserialize_with = "null_default")]
    pub variables: Vec<JobVariable>,
    #[serde(default, deserialize_with = "null_default")]
    pub steps: Vec<Step>,
    #[serde(default, deserialize_with = "null_default")]
    pub hooks: Vec<Hook>,
    #[serde(default)]
    pub image: Option<Image>,
    #[serde(default, deserialize_with = "null_default")]
    pub services: Vec<Image>,
    #[serde(default, deserialize_with = "null_default")]
    pub artifacts: Vec<Artifact>,
    #[serde(default, deserialize_with = "null_default")]
    pub cache: Vec<Cache>,
    #[serde(default, deserialize_with = "null_default")]
    pub credentials: Vec<Credentials>,
    #[serde(default, deserialize_with = "null_default")]
    pub dependencies: Vec<Dependency>,
    #[serde(default, deserialize_with = "null_default")]
    pub features: JobFeatures,
    /// Step-runner steps (a JSON string); Oar does not run native steps.
    #[serde(default, deserialize_with = "null_default")]
    pub run: String,
    /// `git_info.protected` as GitLab sent it: whether the ref is a protected branch or tag
    /// (`None` when GitLab sent `null` or nothing, which identity rules treat as
    /// unprotected). Read by [`JobResponse::from_json`]; Oar's own copies of the payload carry
    /// it at the top level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_protected: Option<bool>,
}

impl JobResponse {
    /// Parses a `/jobs/request` payload as GitLab sends it, `git_info.protected` included.
    pub fn from_json(body: &[u8]) -> serde_json::Result<Self> {
        #[derive(Deserialize)]
        struct Git {
            #[serde(default)]
            protected: Option<bool>,
        }
        #[derive(Deserialize)]
        struct Protected {
            #[serde(default)]
            git_info: Option<Git>,
        }
        let mut job: JobResponse = serde_json::from_slice(body)?;
        let git = serde_json::from_slice::<Protected>(body)
            .ok()
            .and_then(|p| p.git_info)
            .and_then(|g| g.protected);
        if git.is_some() {
            job.ref_protected = git;
        }
        Ok(job)
    }
}

/// `output` of a job update.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobOutput {
    /// `crc32:%08x` of the trace.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub checksum: String,
    /// Bytes in the trace.
    #[serde(skip_serializing_if = "is_zero")]
    pub bytesize: u64,
}

/// `PUT /jobs/:id` body.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateJobRequest {
    /// Runner info.
    pub info: VersionInfo,
    /// Job token.
    pub token: Token,
    /// `running`, `success`, `failed`.
    pub state: String,
    /// Failure reason for `failed`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub failure_reason: String,
    /// Deprecated copy of `output.checksum`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub checksum: String,
    /// Trace checksum and size.
    pub output: JobOutput,
    /// Script exit code (omitted when 0).
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub exit_code: i32,
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secret_variable_values() {
        let masked = JobVariable {
            key: "DEPLOY_TOKEN".into(),
            value: "s3cr3t-value".into(),
            masked: true,
            ..JobVariable::default()
        };
        let private = JobVariable {
            key: "OAR_ID_TOKEN".into(),
            value: "eyJhbGciOi.payload.sig".into(),
            ..JobVariable::default()
        };
        let public = JobVariable {
            key: "CI_COMMIT_REF_NAME".into(),
            value: "main".into(),
            public: true,
            ..JobVariable::default()
        };
        let shown = format!("{masked:?} {private:?} {public:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("eyJ"),
            "{shown}"
        );
        assert!(
            shown.contains("DEPLOY_TOKEN") && shown.contains("\"main\""),
            "{shown}"
        );
    }
}
