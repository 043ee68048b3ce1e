//! Command-line interface: GitLab Runner's commands, flags and environment variable names.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Oar: a GitLab CI runner for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "oar", version, about, propagate_version = true)]
pub struct Cli {
    /// Log level.
    #[arg(long, global = true, env = "LOG_LEVEL", value_enum)]
    pub log_level: Option<Level>,
    /// Log format.
    #[arg(long, global = true, env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<Format>,
    /// Debug logging (same as --log-level debug).
    #[arg(long, global = true, env = "RUNNER_DEBUG")]
    pub debug: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log levels.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
    Panic,
}

/// Log formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Format {
    Runner,
    Text,
    Json,
}

/// The config file flag shared by most commands.
#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// Config file.
    #[arg(short = 'c', long = "config", env = "CONFIG_FILE", default_value_os_t = default_config())]
    pub config: PathBuf,
}

/// Where config.toml lives by default: /etc/oar for root, ~/.oar otherwise.
pub fn default_config() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/etc/oar/config.toml")
    } else {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        home.join(".oar").join("config.toml")
    }
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register a runner (or add one created in GitLab with its glrt- token).
    Register(Box<RegisterArgs>),
    /// Check that the configured runners' tokens are valid.
    Verify(VerifyArgs),
    /// Unregister runners and remove them from config.toml.
    Unregister(UnregisterArgs),
    /// List the configured runners.
    List(ConfigArg),
    /// Run the manager: take jobs for every configured runner.
    Run(RunArgs),
    /// Run jobs of a single runner without a config file (or one runner from it).
    RunSingle(Box<RunSingleArgs>),
    /// Run a repository's .gitlab-ci.yml locally, planned as GitLab would plan a push of the
    /// checked-out commit. Each job runs (shell executor) on a snapshot of the work tree: the
    /// commit plus uncommitted changes and untracked files git does not ignore; jobs see each
    /// other's files only through artifacts (kept under .oar/). `--list` shows the jobs by
    /// stage and why any is skipped, `--preview` the merged YAML. Exit status 0 when the
    /// pipeline passes, 1 when it fails, 2 for an invalid pipeline.
    Exec(Box<ExecArgs>),
}

/// `oar exec` flags.
#[derive(Debug, Args, Clone)]
pub struct ExecArgs {
    /// Jobs to run, by name (the base name of a parallel or matrix job chooses all its
    /// instances), with what they need: their `needs`, or the jobs of earlier stages. All
    /// when none is named.
    pub jobs: Vec<String>,
    /// With JOB...: run just them, not what they need (whose artifacts are then missing).
    #[arg(long = "no-needs")]
    pub no_needs: bool,
    /// The pipeline file, relative to the repository's root.
    #[arg(long = "file", default_value = ".gitlab-ci.yml")]
    pub file: PathBuf,
    /// The checkout (default: the current directory).
    #[arg(short = 'C', long = "directory")]
    pub directory: Option<PathBuf>,
    /// Show the jobs by stage, what each needs, and why any is skipped.
    #[arg(long)]
    pub list: bool,
    /// Show the merged YAML after include, extends and !reference.
    #[arg(long)]
    pub preview: bool,
    /// A variable of highest precedence, as a pipeline variable in GitLab (repeatable).
    #[arg(long = "variable", value_name = "KEY=VALUE")]
    pub variable: Vec<String>,
    /// Like --variable, and masked in the jobs' logs as GitLab masks a masked CI/CD variable
    /// (for a token the pipeline needs; repeatable).
    #[arg(long = "masked-variable", value_name = "KEY=VALUE")]
    pub masked_variable: Vec<String>,
    /// Each output line starts with the time it was written (UTC), as GitLab's job log
    /// timestamps.
    #[arg(long)]
    pub timestamps: bool,
    /// A file of KEY=VALUE lines (# comments, `export` allowed), read before --variable.
    #[arg(long = "variables-file", value_name = "FILE")]
    pub variables_file: Vec<PathBuf>,
    /// Run this manual job (repeatable).
    #[arg(long = "manual", value_name = "JOB")]
    pub manual: Vec<String>,
    /// Machine-readable output (with --list: the plan; else the results, as JSON).
    #[arg(long)]
    pub json: bool,
    /// Jobs at once (default: the number of CPUs).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Where jobs run: local processes (`shell`, which ignores `image` and `services`, as
    /// GitLab Runner's shell executor does) or a pod each on the current kubeconfig's cluster
    /// (`kubernetes`).
    #[arg(long, value_enum, default_value_t = ExecExecutor::Shell)]
    pub executor: ExecExecutor,
    /// A config.toml whose first runner's `[runners.kubernetes]` (and feature flags) the
    /// Kubernetes executor uses; its url and token are ignored.
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// The address job pods reach this machine at (the local stand-in for GitLab listens
    /// there). Default 127.0.0.1, which host-network pods of a local cluster reach.
    #[arg(long = "advertise-address")]
    pub advertise_address: Option<String>,
}

/// Executors of `oar exec`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ExecExecutor {
    Shell,
    Kubernetes,
}

/// GitLab connection flags.
#[derive(Debug, Args, Clone, Default)]
pub struct ConnectionArgs {
    /// GitLab URL.
    #[arg(short = 'u', long = "url", env = "CI_SERVER_URL")]
    pub url: Option<String>,
    /// CA bundle for GitLab's certificate.
    #[arg(long = "tls-ca-file", env = "CI_SERVER_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate.
    #[arg(long = "tls-cert-file", env = "CI_SERVER_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Client key.
    #[arg(long = "tls-key-file", env = "CI_SERVER_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
}

/// `register` flags.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnectionArgs,
    /// Runner authentication token (glrt-…) of a runner created in GitLab.
    #[arg(short = 't', long = "token", env = "CI_SERVER_TOKEN")]
    pub token: Option<String>,
    /// Legacy registration token (deprecated in GitLab).
    #[arg(short = 'r', long = "registration-token", env = "REGISTRATION_TOKEN")]
    pub registration_token: Option<String>,
    /// Read the runner authentication token from this file (e.g. a mounted Secret), so it
    /// never appears in a process list or a pod's environment. Given together with
    /// --registration-token-file, whichever file holds a token is used (this one first): a
    /// missing or empty file is skipped.
    #[arg(
        long = "token-file",
        env = "CI_SERVER_TOKEN_FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,
    /// Read the legacy registration token from this file.
    #[arg(
        long = "registration-token-file",
        env = "REGISTRATION_TOKEN_FILE",
        conflicts_with = "registration_token"
    )]
    pub registration_token_file: Option<PathBuf>,
    /// A config.toml whose global settings and first `[[runners]]` entry are the base of what
    /// is registered; flags win over it.
    #[arg(long = "template-config", env = "TEMPLATE_CONFIG_FILE")]
    pub template_config: Option<PathBuf>,
    /// Runner name.
    #[arg(long = "name", visible_alias = "description", env = "RUNNER_NAME")]
    pub name: Option<String>,
    /// Executor: shell or kubernetes.
    #[arg(long = "executor", env = "RUNNER_EXECUTOR")]
    pub executor: Option<String>,
    /// Comma-separated tags (legacy registration only).
    #[arg(long = "tag-list", env = "RUNNER_TAG_LIST")]
    pub tag_list: Option<String>,
    /// Take untagged jobs (legacy registration only).
    #[arg(long = "run-untagged", env = "REGISTER_RUN_UNTAGGED")]
    pub run_untagged: Option<bool>,
    /// Lock to the project (legacy registration only).
    #[arg(long = "locked", env = "REGISTER_LOCKED")]
    pub locked: Option<bool>,
    /// not_protected or ref_protected (legacy registration only).
    #[arg(long = "access-level", env = "REGISTER_ACCESS_LEVEL")]
    pub access_level: Option<String>,
    /// Maximum job timeout in seconds (legacy registration only).
    #[arg(long = "maximum-timeout", env = "REGISTER_MAXIMUM_TIMEOUT")]
    pub maximum_timeout: Option<u64>,
    /// Register paused (legacy registration only).
    #[arg(long = "paused", env = "REGISTER_PAUSED")]
    pub paused: Option<bool>,
    /// Maintenance note (legacy registration only).
    #[arg(long = "maintenance-note", env = "REGISTER_MAINTENANCE_NOTE")]
    pub maintenance_note: Option<String>,
    /// Accepted for compatibility: register never prompts.
    #[arg(
        short = 'n',
        long = "non-interactive",
        env = "REGISTER_NON_INTERACTIVE"
    )]
    pub non_interactive: bool,
    /// Jobs of this runner at once (0 = no limit).
    #[arg(long = "limit", env = "RUNNER_LIMIT")]
    pub limit: Option<u32>,
    /// Parallel job requests.
    #[arg(long = "request-concurrency", env = "RUNNER_REQUEST_CONCURRENCY")]
    pub request_concurrency: Option<u32>,
    /// Builds directory.
    #[arg(long = "builds-dir", env = "RUNNER_BUILDS_DIR")]
    pub builds_dir: Option<String>,
    /// Cache directory.
    #[arg(long = "cache-dir", env = "RUNNER_CACHE_DIR")]
    pub cache_dir: Option<String>,
    /// Shell (bash or sh).
    #[arg(long = "shell", env = "RUNNER_SHELL")]
    pub shell: Option<String>,
    /// KEY=VALUE added to every job (repeatable).
    #[arg(long = "env", env = "RUNNER_ENV", value_delimiter = ';')]
    pub env: Vec<String>,
    /// Kubernetes namespace.
    #[arg(long = "kubernetes-namespace", env = "KUBERNETES_NAMESPACE")]
    pub kubernetes_namespace: Option<String>,
    /// Default job image.
    #[arg(long = "kubernetes-image", env = "KUBERNETES_IMAGE")]
    pub kubernetes_image: Option<String>,
    /// Helper image of job pods (`helper_image`).
    #[arg(long = "kubernetes-helper-image", env = "KUBERNETES_HELPER_IMAGE")]
    pub kubernetes_helper_image: Option<String>,
    /// S3 cache access key, written as `AccessKey` into `[runners.cache.s3]` (merged with the
    /// template's table); needs the secret key too.
    #[arg(
        long = "cache-s3-access-key",
        env = "CACHE_S3_ACCESS_KEY",
        hide_env_values = true
    )]
    pub cache_s3_access_key: Option<String>,
    /// S3 cache secret key (`SecretKey` of `[runners.cache.s3]`).
    #[arg(
        long = "cache-s3-secret-key",
        env = "CACHE_S3_SECRET_KEY",
        hide_env_values = true
    )]
    pub cache_s3_secret_key: Option<String>,
    /// Read the S3 cache access key from this file (e.g. a mounted Secret).
    #[arg(
        long = "cache-s3-access-key-file",
        env = "CACHE_S3_ACCESS_KEY_FILE",
        conflicts_with = "cache_s3_access_key"
    )]
    pub cache_s3_access_key_file: Option<PathBuf>,
    /// Read the S3 cache secret key from this file.
    #[arg(
        long = "cache-s3-secret-key-file",
        env = "CACHE_S3_SECRET_KEY_FILE",
        conflicts_with = "cache_s3_secret_key"
    )]
    pub cache_s3_secret_key_file: Option<PathBuf>,
}

/// `verify` flags.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// Remove runners whose token GitLab refuses.
    #[arg(long = "delete")]
    pub delete: bool,
    /// Only this runner.
    #[arg(short = 'n', long = "name", env = "RUNNER_NAME")]
    pub name: Option<String>,
}

/// `unregister` flags.
#[derive(Debug, Args)]
pub struct UnregisterArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// GitLab URL (with --token).
    #[arg(short = 'u', long = "url", env = "CI_SERVER_URL")]
    pub url: Option<String>,
    /// The runner's token.
    #[arg(short = 't', long = "token", env = "CI_SERVER_TOKEN")]
    pub token: Option<String>,
    /// The runner's name.
    #[arg(short = 'n', long = "name", env = "RUNNER_NAME")]
    pub name: Option<String>,
    /// Every configured runner.
    #[arg(long = "all-runners")]
    pub all_runners: bool,
}

/// `run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// Base of relative builds and cache directories.
    #[arg(
        short = 'd',
        long = "working-directory",
        env = "RUNNER_WORKING_DIRECTORY"
    )]
    pub working_directory: Option<PathBuf>,
    /// Metrics and health server address (overrides listen_address).
    #[arg(long = "listen-address", env = "LISTEN_ADDRESS")]
    pub listen_address: Option<String>,
    /// Accepted for compatibility (service name).
    #[arg(long = "service", hide = true)]
    pub service: Option<String>,
    /// Accepted for compatibility; Oar runs jobs as its own user.
    #[arg(long = "user", hide = true)]
    pub user: Option<String>,
}

/// `run-single` flags.
#[derive(Debug, Args)]
pub struct RunSingleArgs {
    /// Take the runner from this config file (with --runner-name).
    #[arg(short = 'c', long = "config", env = "CONFIG_FILE")]
    pub config: Option<PathBuf>,
    /// The runner to take from --config.
    #[arg(long = "runner-name")]
    pub runner_name: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnectionArgs,
    /// Runner token.
    #[arg(short = 't', long = "token", env = "CI_SERVER_TOKEN")]
    pub token: Option<String>,
    /// Runner name.
    #[arg(
        long = "name",
        visible_alias = "description",
        env = "RUNNER_NAME",
        default_value = "oar-single"
    )]
    pub name: String,
    /// Executor (shell).
    #[arg(long = "executor", env = "RUNNER_EXECUTOR", default_value = "shell")]
    pub executor: String,
    /// Builds directory.
    #[arg(long = "builds-dir", env = "RUNNER_BUILDS_DIR")]
    pub builds_dir: Option<String>,
    /// Cache directory.
    #[arg(long = "cache-dir", env = "RUNNER_CACHE_DIR")]
    pub cache_dir: Option<String>,
    /// Stop after this many jobs (0 = never).
    #[arg(long = "max-builds", default_value_t = 0)]
    pub max_builds: u64,
    /// Stop after waiting this many seconds for a job (0 = never).
    #[arg(long = "wait-timeout", default_value_t = 0)]
    pub wait_timeout: u64,
    /// Seconds between job requests.
    #[arg(long = "check-interval", default_value_t = 3)]
    pub check_interval: u64,
}
