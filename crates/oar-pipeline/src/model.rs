//! The typed pipeline: what `.gitlab-ci.yml` says, after include, extends and `!reference`,
//! before any rule is evaluated.

use indexmap::IndexMap;
use serde::Serialize;

use crate::error::Location;
use crate::expr::Expr;

/// GitLab's default `stages`.
pub const DEFAULT_STAGES: [&str; 5] = [".pre", "build", "test", "deploy", ".post"];

/// A variable definition from `variables:` (global, job, rule or workflow rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Variable {
    /// The name.
    pub name: String,
    /// The value (numbers and booleans as GitLab writes them).
    pub value: String,
    /// `description:` (global variables only; shown for manual pipelines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `expand: false` makes `$` literal.
    pub expand: bool,
    /// `options:` (global variables only): the allowed values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// When a job runs (`when:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Only when every earlier job succeeded (the default).
    OnSuccess,
    /// Only when an earlier job failed.
    OnFailure,
    /// Whatever happened before.
    Always,
    /// When a person starts it (`--manual JOB` locally).
    Manual,
    /// After `start_in`.
    Delayed,
    /// Never (the job is not added).
    Never,
}

impl When {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "on_success" => Self::OnSuccess,
            "on_failure" => Self::OnFailure,
            "always" => Self::Always,
            "manual" => Self::Manual,
            "delayed" => Self::Delayed,
            "never" => Self::Never,
            _ => return None,
        })
    }

    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnSuccess => "on_success",
            Self::OnFailure => "on_failure",
            Self::Always => "always",
            Self::Manual => "manual",
            Self::Delayed => "delayed",
            Self::Never => "never",
        }
    }
}

/// `allow_failure:`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AllowFailure {
    /// Whether a failure is allowed at all.
    pub allowed: bool,
    /// With `exit_codes:`, only these exit codes are allowed failures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<i32>,
}

/// `image:` or one entry of `services:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    /// The image reference.
    pub name: String,
    /// `entrypoint:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `command:` (services only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// `alias:` (services only), comma-separated aliases kept as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// `pull_policy:` (always, if-not-present, never).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pull_policy: Vec<String>,
    /// `variables:` (services only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
}

/// `artifacts:when`, `cache:when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadWhen {
    /// When the job succeeds (default).
    OnSuccess,
    /// When the job fails.
    OnFailure,
    /// Always.
    Always,
}

/// `artifacts:`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Artifacts {
    /// `paths:`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// `exclude:`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// `untracked:`.
    pub untracked: bool,
    /// `when:` (`None` = on_success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<UploadWhen>,
    /// `name:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `expire_in:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_in: Option<String>,
    /// `expose_as:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expose_as: Option<String>,
    /// `reports:`: report type → paths (`dotenv`, `junit`, ...).
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub reports: IndexMap<String, Vec<String>>,
}

/// `cache:key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheKey {
    /// A literal key (variables expanded by the runner); `default` when omitted.
    Literal(String),
    /// `key:files` (+ `prefix`): a key computed from the files' last commits.
    Files {
        /// The files (at most two).
        files: Vec<String>,
        /// `key:prefix`.
        #[serde(skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
    },
}

/// `cache:policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CachePolicy {
    /// Download and upload (default).
    PullPush,
    /// Only download.
    Pull,
    /// Only upload.
    Push,
}

/// One entry of `cache:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cache {
    /// `key:`.
    pub key: CacheKey,
    /// `paths:`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// `untracked:`.
    pub untracked: bool,
    /// `policy:`.
    pub policy: CachePolicy,
    /// `when:`.
    pub when: UploadWhen,
    /// `fallback_keys:`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fallback_keys: Vec<String>,
    /// `unprotect:`.
    pub unprotect: bool,
}

/// `retry:`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Retry {
    /// `max:` (0–2).
    pub max: u32,
    /// `when:` failure reasons (empty = `always`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<String>,
    /// `exit_codes:`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<i32>,
}

/// `timeout:`, as written and in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeout {
    /// The text (`1h 30m`).
    pub text: String,
    /// The duration in seconds.
    pub seconds: u64,
}

/// `environment:`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Environment {
    /// `name:` (variables expanded by the planner).
    pub name: String,
    /// `url:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `action:` (start, prepare, stop, verify, access).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `on_stop:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_stop: Option<String>,
    /// `auto_stop_in:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_stop_in: Option<String>,
    /// `deployment_tier:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_tier: Option<String>,
}

/// `trigger:`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Trigger {
    /// `include:` local files of a child pipeline.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// `project:` of a multi-project pipeline (not available locally).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// `branch:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// `strategy: depend`: the trigger job mirrors the child pipeline's status.
    pub depend: bool,
    /// `forward:yaml_variables` (default true).
    pub forward_yaml_variables: bool,
    /// `forward:pipeline_variables` (default false).
    pub forward_pipeline_variables: bool,
}

/// A `needs:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Need {
    /// The needed job (its base name, before parallel expansion).
    pub job: String,
    /// `artifacts:` (default true).
    pub artifacts: bool,
    /// `optional:`.
    pub optional: bool,
    /// `parallel:matrix:` selecting some instances of a matrix job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matrix: Option<Vec<IndexMap<String, Vec<String>>>>,
    /// Where it is written.
    #[serde(skip)]
    pub loc: Location,
}

/// `parallel:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Parallel {
    /// `parallel: N`.
    Count(u32),
    /// `parallel:matrix:`: each entry maps variables to their values.
    Matrix(Vec<IndexMap<String, Vec<String>>>),
}

/// `changes:`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// The path globs.
    pub paths: Vec<String>,
    /// `compare_to:`.
    pub compare_to: Option<String>,
}

/// One entry of `rules:` (job, workflow or include).
#[derive(Debug, Clone)]
pub struct Rule {
    /// `if:`.
    pub if_: Option<Expr>,
    /// `changes:`.
    pub changes: Option<Changes>,
    /// `exists:`.
    pub exists: Option<Vec<String>>,
    /// `when:`.
    pub when: Option<When>,
    /// `start_in:` (with `when: delayed`).
    pub start_in: Option<String>,
    /// `allow_failure:`.
    pub allow_failure: Option<AllowFailure>,
    /// `variables:`.
    pub variables: Vec<Variable>,
    /// `needs:`.
    pub needs: Option<Vec<Need>>,
    /// `interruptible:`.
    pub interruptible: Option<bool>,
    /// Where the rule is.
    pub loc: Location,
}

/// `only:` / `except:`.
#[derive(Debug, Clone, Default)]
pub struct OnlyExcept {
    /// `refs:` (or the simple form's list): `branches`, `tags`, `merge_requests`, ...,
    /// `/regex/` or ref names.
    pub refs: Vec<String>,
    /// `variables:` expressions.
    pub variables: Vec<Expr>,
    /// `changes:` globs.
    pub changes: Vec<String>,
    /// `kubernetes: active`.
    pub kubernetes: bool,
    /// Where it is written.
    pub loc: Location,
}

/// `inherit:default` / `inherit:variables`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Inherit {
    /// `true` (the default).
    #[default]
    All,
    /// `false`.
    Nothing,
    /// A list of names.
    Only(Vec<String>),
}

impl Inherit {
    /// Whether `name` is inherited.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Nothing => false,
            Self::Only(l) => l.iter().any(|n| n == name),
        }
    }
}

/// `default:` (and the deprecated global `image`, `services`, `cache`, `before_script`,
/// `after_script`).
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// `image:`.
    pub image: Option<Image>,
    /// `services:`.
    pub services: Option<Vec<Image>>,
    /// `before_script:`.
    pub before_script: Option<Vec<String>>,
    /// `after_script:`.
    pub after_script: Option<Vec<String>>,
    /// `cache:`.
    pub cache: Option<Vec<Cache>>,
    /// `artifacts:`.
    pub artifacts: Option<Artifacts>,
    /// `retry:`.
    pub retry: Option<Retry>,
    /// `timeout:`.
    pub timeout: Option<Timeout>,
    /// `interruptible:`.
    pub interruptible: Option<bool>,
    /// `tags:`.
    pub tags: Option<Vec<String>>,
    /// `hooks:pre_get_sources_script`.
    pub hooks: Option<Vec<String>>,
    /// `id_tokens:` names.
    pub id_tokens: Option<Vec<String>>,
}

/// `workflow:`.
#[derive(Debug, Clone, Default)]
pub struct Workflow {
    /// `name:`.
    pub name: Option<String>,
    /// `rules:`.
    pub rules: Option<Vec<Rule>>,
}

/// A job (hidden jobs are not part of the model; they only serve `extends`/`!reference`).
#[derive(Debug, Clone)]
pub struct Job {
    /// The job's name.
    pub name: String,
    /// Where it is defined.
    pub loc: Location,
    /// `stage:` (default `test`).
    pub stage: String,
    /// `script:` (nested arrays flattened; empty for trigger jobs).
    pub script: Vec<String>,
    /// `before_script:`.
    pub before_script: Option<Vec<String>>,
    /// `after_script:`.
    pub after_script: Option<Vec<String>>,
    /// `hooks:pre_get_sources_script`.
    pub hooks: Option<Vec<String>>,
    /// `image:`.
    pub image: Option<Image>,
    /// `services:`.
    pub services: Option<Vec<Image>>,
    /// `variables:`.
    pub variables: Vec<Variable>,
    /// `rules:`.
    pub rules: Option<Vec<Rule>>,
    /// `only:`.
    pub only: Option<OnlyExcept>,
    /// `except:`.
    pub except: Option<OnlyExcept>,
    /// `needs:`.
    pub needs: Option<Vec<Need>>,
    /// `dependencies:`.
    pub dependencies: Option<Vec<String>>,
    /// `artifacts:`.
    pub artifacts: Option<Artifacts>,
    /// `cache:`.
    pub cache: Option<Vec<Cache>>,
    /// `parallel:`.
    pub parallel: Option<Parallel>,
    /// `when:`.
    pub when: Option<When>,
    /// `start_in:`.
    pub start_in: Option<String>,
    /// `allow_failure:`.
    pub allow_failure: Option<AllowFailure>,
    /// `timeout:`.
    pub timeout: Option<Timeout>,
    /// `retry:`.
    pub retry: Option<Retry>,
    /// `resource_group:`.
    pub resource_group: Option<String>,
    /// `interruptible:`.
    pub interruptible: Option<bool>,
    /// `coverage:` (a `/regex/`).
    pub coverage: Option<String>,
    /// `tags:` (ignored locally).
    pub tags: Option<Vec<String>>,
    /// `environment:`.
    pub environment: Option<Environment>,
    /// `trigger:`.
    pub trigger: Option<Trigger>,
    /// `id_tokens:` names (not available locally).
    pub id_tokens: Option<Vec<String>>,
    /// `secrets:` names (not available locally).
    pub secrets: Vec<String>,
    /// `inherit:default`.
    pub inherit_default: Inherit,
    /// `inherit:variables`.
    pub inherit_variables: Inherit,
}

/// Something accepted but not acted on locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    /// Where.
    pub location: Location,
    /// The job, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// What is ignored or unavailable.
    pub message: String,
}
