//! `oar-helper`: runs inside every job pod, and is the artifact and cache tool a user can run
//! by hand. Its subcommands and flags follow GitLab Runner's helper (`gitlab-runner-helper`),
//! so scripts written for it keep working.

mod agent;
mod cache_cmd;
mod podrunner;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use oar_gitlab::{Client, ClientConfig, Token};
use oar_job::files::{self, ArtifactStore, UploadRequest};
use std::path::PathBuf;
use std::time::Duration;

/// Oar's in-job helper.
#[derive(Debug, Parser)]
#[command(name = "oar-helper", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive the job of this pod (the Kubernetes executor's helper container).
    Agent(agent::AgentArgs),
    /// Archive files and upload them as the job's artifacts.
    ArtifactsUploader(UploadArgs),
    /// Download a job's artifacts and extract them into the current directory.
    ArtifactsDownloader(DownloadArgs),
    /// Archive files into a cache archive, and upload it to a pre-signed URL.
    CacheArchiver(cache_cmd::ArchiverArgs),
    /// Download a cache archive from a pre-signed URL, and extract it.
    CacheExtractor(cache_cmd::ExtractorArgs),
}

/// The job's credentials and GitLab's address.
#[derive(Debug, Args)]
struct JobCredentials {
    /// GitLab URL.
    #[arg(long, env = "CI_SERVER_URL")]
    url: String,
    /// Job token.
    #[arg(long, env = "CI_JOB_TOKEN", hide_env_values = true)]
    token: String,
    /// Job id.
    #[arg(long, env = "CI_JOB_ID")]
    id: i64,
    /// CA certificates to trust for GitLab (PEM).
    #[arg(long, env = "CI_SERVER_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, env = "CI_SERVER_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, env = "CI_SERVER_TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,
}

impl JobCredentials {
    fn client(&self) -> Result<Client> {
        Client::new(&ClientConfig {
            url: self.url.clone(),
            tls_ca_file: self.tls_ca_file.clone(),
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .context("cannot set up the GitLab client")
    }
}

#[derive(Debug, Args)]
struct UploadArgs {
    #[command(flatten)]
    job: JobCredentials,
    /// Paths to archive (globs, `**` allowed); repeatable.
    #[arg(long = "path")]
    paths: Vec<String>,
    /// Paths to leave out (globs); repeatable.
    #[arg(long = "exclude")]
    exclude: Vec<String>,
    /// Add git's untracked files.
    #[arg(long)]
    untracked: bool,
    /// Name of the archive (without extension).
    #[arg(long, default_value = "artifacts")]
    name: String,
    /// How long GitLab keeps the artifacts (`1 week`).
    #[arg(long, default_value = "")]
    expire_in: String,
    /// zip, gzip or raw.
    #[arg(long, default_value = "zip")]
    artifact_format: String,
    /// archive, junit, ...
    #[arg(long, default_value = "archive")]
    artifact_type: String,
    /// Whole-upload timeout (`1h0m0s`).
    #[arg(long, default_value = "1h0m0s")]
    timeout: String,
    /// Accepted for compatibility; the whole-upload timeout applies.
    #[arg(long, default_value = "10m0s")]
    response_header_timeout: String,
    /// Where the archive is built (default: the system's temporary directory).
    #[arg(long, env = "ARCHIVER_STAGING_DIR")]
    archiver_staging_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DownloadArgs {
    #[command(flatten)]
    job: JobCredentials,
    /// Ask GitLab for a direct object-storage link.
    #[arg(long, env = "FF_USE_DIRECT_DOWNLOAD", default_value_t = true, action = clap::ArgAction::Set)]
    direct_download: bool,
    /// Where the archive is downloaded to (default: the system's temporary directory).
    #[arg(long, env = "ARCHIVER_STAGING_DIR")]
    archiver_staging_dir: Option<PathBuf>,
}

fn say(line: &str) {
    println!("{line}");
}

pub(crate) fn duration_flag(flag: &str, value: &str) -> Result<Duration> {
    oar_job::context::parse_go_duration(value)
        .with_context(|| format!("--{flag} {value:?} is not a duration (like 1h0m0s or 90s)"))
}

fn staging(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(std::env::temp_dir)
}

async fn upload(args: UploadArgs) -> Result<()> {
    if args.paths.is_empty() && !args.untracked {
        bail!("nothing to upload: give --path or --untracked");
    }
    let store = ArtifactStore::Gitlab(args.job.client()?);
    let req = UploadRequest {
        project_dir: std::env::current_dir().context("cannot read the current directory")?,
        tmp_dir: staging(args.archiver_staging_dir),
        paths: args.paths,
        exclude: args.exclude,
        untracked: args.untracked,
        name: args.name,
        format: args.artifact_format,
        artifact_type: args.artifact_type,
        expire_in: args.expire_in,
        job_id: args.job.id,
        token: Token::new(args.job.token.clone()),
        timeout: duration_flag("timeout", &args.timeout)?,
    };
    files::upload_artifact(&store, &req, &say)
        .await
        .map_err(anyhow::Error::msg)
}

async fn download(args: DownloadArgs) -> Result<()> {
    let store = ArtifactStore::Gitlab(args.job.client()?);
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    files::download_dependency(
        &store,
        args.job.id,
        &Token::new(args.job.token.clone()),
        &cwd,
        &staging(args.archiver_staging_dir),
        args.direct_download,
        &say,
    )
    .await
    .map_err(anyhow::Error::msg)
}

/// Fires on the first SIGTERM or SIGINT.
fn stop_on_signals() -> Result<tokio_util::sync::CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = tokio_util::sync::CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        t.cancel();
    });
    Ok(token)
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OAR_HELPER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match cli.command {
        Command::Agent(a) => agent::run(a, stop_on_signals()?).await,
        Command::ArtifactsUploader(a) => upload(a).await,
        Command::ArtifactsDownloader(a) => download(a).await,
        Command::CacheArchiver(a) => cache_cmd::archive(a).await,
        Command::CacheExtractor(a) => cache_cmd::extract(a).await,
    }
}
