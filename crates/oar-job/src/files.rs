//! The job's file stages, run in-process by the driver (shell executor) or by the helper agent
//! (Kubernetes executor): downloading dependencies' artifacts, restoring and saving caches, and
//! uploading artifacts.
//!
//! The operations take plain requests (not a [`JobContext`]) so that `oar-helper`'s
//! subcommands can call them with values from flags; the `*_for_job` functions derive the
//! requests from a job the way GitLab Runner does.

use crate::context::JobContext;
use oar_archive::archive::{self, CreateOptions, Format, Limits};
use oar_archive::cache::{self, CacheEnv, CacheSpec, Policy, RemoteUrls, When};
use oar_archive::select::{self, PathSpec};
use oar_gitlab::{ArtifactUpload, Client, Token, UploadError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Something that prints a line to the job log.
pub type Say<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// Where artifacts go to and come from.
#[derive(Clone)]
pub enum ArtifactStore {
    /// GitLab, with the job's token (`POST`/`GET /jobs/:id/artifacts`).
    Gitlab(Client),
    /// A local directory (`oar exec`): `<dir>/<job id>/<file name>`.
    Local(PathBuf),
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArtifactStore::Gitlab(c) => write!(f, "Gitlab({})", c.root()),
            ArtifactStore::Local(d) => write!(f, "Local({})", d.display()),
        }
    }
}

/// Pre-signed URLs of one cache key, made by the manager (which holds the storage keys).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheUrls {
    /// Pre-signed `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub get: Option<String>,
    /// Pre-signed `PUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub put: Option<String>,
}

impl std::fmt::Debug for CacheUrls {
    /// Signatures are credentials: only scheme, host and path are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |u: &Option<String>| u.as_deref().map(strip_query);
        f.debug_struct("CacheUrls")
            .field("get", &show(&self.get))
            .field("put", &show(&self.put))
            .finish()
    }
}

/// A URL without its query string (where pre-signed URLs carry their signature).
pub fn strip_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or("").to_string()
}

/// What the file stages of one job may use.
#[derive(Debug, Clone)]
pub struct JobFiles {
    /// Artifact storage.
    pub artifacts: ArtifactStore,
    /// Distributed cache URLs per cache key; empty without `[runners.cache]`.
    pub cache_urls: BTreeMap<String, CacheUrls>,
    /// `[runners.cache] MaxUploadedArchiveSize`: larger caches stay local.
    pub cache_max_upload_size: Option<u64>,
}

fn policy_of(s: &str) -> Option<Policy> {
    match s {
        "" | "pull-push" => Some(Policy::PullPush),
        "pull" => Some(Policy::Pull),
        "push" => Some(Policy::Push),
        _ => None,
    }
}

fn when_of(s: &str) -> When {
    match s {
        "on_failure" => When::OnFailure,
        "always" => When::Always,
        _ => When::OnSuccess,
    }
}

/// The job's caches (those with `paths` or `untracked`), with variables expanded as GitLab
/// Runner does: an empty key becomes `<job name>/<ref>`, `fallback_keys` are followed by
/// `CACHE_FALLBACK_KEY` (unless it ends in `-protected`). Keys are sanitised later, by the
/// cache code itself (which says so in the log). An unknown `policy` is an `Err` with the
/// warning to print.
pub fn resolve_caches(ctx: &JobContext) -> Vec<Result<CacheSpec, String>> {
    let global = ctx.var("CACHE_FALLBACK_KEY");
    ctx.job
        .cache
        .iter()
        .filter(|c| !c.paths.is_empty() || c.untracked)
        .map(|c| {
            let key = match ctx.vars.expand(&c.key) {
                k if k.is_empty() => {
                    cache::default_key(&ctx.job.job_info.name, &ctx.job.git_info.git_ref)
                }
                k => k,
            };
            let expanded_policy = ctx.vars.expand(&c.policy);
            let policy = policy_of(expanded_policy.trim()).ok_or_else(|| {
                format!("unknown cache policy {expanded_policy:?} for cache {key:?}; skipping it")
            })?;
            let mut fallback_keys: Vec<String> =
                c.fallback_keys.iter().map(|k| ctx.vars.expand(k)).collect();
            if !global.is_empty() && cache::fallback_key_allowed(&global) {
                fallback_keys.push(global.clone());
            }
            Ok(CacheSpec {
                key,
                fallback_keys,
                paths: c.paths.iter().map(|p| ctx.vars.expand(p)).collect(),
                untracked: c.untracked,
                policy,
                when: when_of(&c.when),
            })
        })
        .collect()
}

/// The sanitised cache keys the manager presigns for a job: `(key, wants_put)`. Fallback keys
/// are only read; a `pull` cache is never written.
pub fn keys_to_presign(ctx: &JobContext) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    let mut add = |key: &str, put: bool| {
        let Ok(k) = cache::sanitize_key(key) else {
            return;
        };
        match out.iter_mut().find(|(existing, _)| *existing == k) {
            Some(entry) => entry.1 |= put,
            None => out.push((k, put)),
        }
    };
    for spec in resolve_caches(ctx).into_iter().flatten() {
        add(&spec.key, spec.policy != Policy::Pull);
        for fb in &spec.fallback_keys {
            add(fb, false);
        }
    }
    out
}

/// zstd level from `CACHE_COMPRESSION_LEVEL` (fastest, fast, default, slow, slowest).
fn cache_level(ctx: &JobContext) -> i32 {
    match ctx.var("CACHE_COMPRESSION_LEVEL").as_str() {
        "fastest" => 1,
        "fast" => 2,
        "slow" => 9,
        "slowest" => 19,
        _ => 3,
    }
}

fn cache_env(ctx: &JobContext, files: &JobFiles) -> CacheEnv {
    let mut env = CacheEnv::local(&ctx.layout.cache_dir);
    env.remote = files
        .cache_urls
        .iter()
        .map(|(k, u)| {
            let parse = |s: &Option<String>| s.as_deref().and_then(|s| url::Url::parse(s).ok());
            (
                k.clone(),
                RemoteUrls {
                    get: parse(&u.get),
                    put: parse(&u.put),
                },
            )
        })
        .collect();
    env.zstd_level = cache_level(ctx);
    if let Some(minutes) = ctx
        .var("CACHE_REQUEST_TIMEOUT")
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|m| *m > 0)
    {
        env.transfer.timeout = Duration::from_secs(minutes * 60);
    }
    env.max_upload_size = files.cache_max_upload_size;
    env
}

/// `restore_cache`: every cache of the job, in order. Never fails the job.
pub async fn restore_caches_for_job(ctx: &JobContext, files: &JobFiles, say: Say<'_>) {
    let env = cache_env(ctx, files);
    let project = Path::new(&ctx.layout.project_dir);
    for c in resolve_caches(ctx) {
        let c = match c {
            Ok(c) => c,
            Err(w) => {
                say(&format!("\x1b[0;33mWARNING: {w}\x1b[0;m"));
                continue;
            }
        };
        let mut log = |l: &str| say(l);
        cache::restore(&c, project, &env, &mut log).await;
    }
}

/// `archive_cache[_on_failure]`: every cache whose `when` matches `job_ok`. Never fails the
/// job.
pub async fn save_caches_for_job(ctx: &JobContext, files: &JobFiles, job_ok: bool, say: Say<'_>) {
    let env = cache_env(ctx, files);
    let project = Path::new(&ctx.layout.project_dir);
    for c in resolve_caches(ctx).into_iter().flatten() {
        if !c.when.applies(job_ok) {
            continue;
        }
        let mut log = |l: &str| say(l);
        cache::save(&c, project, &env, &mut log).await;
    }
}

/// Whether `artifacts:when` (`on_success` default, `on_failure`, `always`) matches.
pub fn artifact_when_matches(when: &str, job_ok: bool) -> bool {
    match when {
        "always" => true,
        "on_failure" => !job_ok,
        _ => job_ok,
    }
}

/// One artifact upload, as `oar-helper artifacts-uploader` takes it.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    /// Directory paths are relative to.
    pub project_dir: PathBuf,
    /// Where the archive is built.
    pub tmp_dir: PathBuf,
    /// `paths` (globs).
    pub paths: Vec<String>,
    /// `exclude` (globs).
    pub exclude: Vec<String>,
    /// `untracked`.
    pub untracked: bool,
    /// `name`, expanded (default `artifacts`).
    pub name: String,
    /// `zip`, `gzip` or `raw`.
    pub format: String,
    /// `archive`, `junit`, ...
    pub artifact_type: String,
    /// `expire_in`.
    pub expire_in: String,
    /// The job's id.
    pub job_id: i64,
    /// The job's token.
    pub token: Token,
    /// Whole-upload timeout.
    pub timeout: Duration,
}

/// The uploaded file's name: basename of `name` (`artifacts` by default, `default` when it
/// comes out empty) plus the format's extension.
pub fn artifact_file_name(name: &str, format: &str) -> String {
    let name = if name.is_empty() { "artifacts" } else { name };
    let base = name.rsplit('/').find(|s| !s.is_empty()).unwrap_or("");
    let base = if base.is_empty() || base == "." || base == ".." {
        "default"
    } else {
        base
    };
    match format {
        "gzip" => format!("{base}.gz"),
        "raw" => base.to_string(),
        _ => format!("{base}.zip"),
    }
}

fn format_of(s: &str) -> Result<Format, String> {
    match s {
        "" | "zip" => Ok(Format::Zip),
        "gzip" => Ok(Format::Gzip),
        "raw" => Ok(Format::Raw),
        other => Err(format!(
            "artifact format {other:?} is not supported (expected zip, gzip or raw)"
        )),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("archiver task failed: {e}"))?
}

/// Selects, archives and uploads one artifact. `Ok` also when nothing matched (a warning is
/// printed, as GitLab Runner does); `Err` carries the line that explains the failure.
pub async fn upload_artifact(
    store: &ArtifactStore,
    req: &UploadRequest,
    say: Say<'_>,
) -> Result<(), String> {
    let format = format_of(&req.format)?;
    let artifact_type = if req.artifact_type.is_empty() {
        "archive"
    } else {
        &req.artifact_type
    };
    let file_name = artifact_file_name(&req.name, &req.format);
    let out = req
        .tmp_dir
        .join(format!("upload-{artifact_type}-{file_name}"));
    let (root, paths, exclude, untracked, tmp, out2) = (
        req.project_dir.clone(),
        req.paths.clone(),
        req.exclude.clone(),
        req.untracked,
        req.tmp_dir.clone(),
        out.clone(),
    );
    let (selection, stats) = blocking(move || {
        let spec = PathSpec {
            paths: &paths,
            exclude: &exclude,
            untracked,
        };
        let selection = select::select(&root, &spec).map_err(|e| e.to_string())?;
        if selection.entries.is_empty() {
            return Ok((selection, None));
        }
        std::fs::create_dir_all(&tmp)
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let opts = CreateOptions {
            format,
            ..CreateOptions::default()
        };
        let stats = archive::create(&root, &selection, &out2, &opts).map_err(|e| e.to_string())?;
        Ok((selection, Some(stats)))
    })
    .await?;
    for w in &selection.warnings {
        say(&format!("\x1b[0;33mWARNING: {w}\x1b[0;m"));
    }
    if stats.is_none() {
        say("\x1b[31;1mERROR: No files to upload\x1b[0;m");
        return Ok(());
    }
    say(&format!(
        "Found {} matching artifact files and directories",
        selection.entries.len()
    ));
    let result = match store {
        ArtifactStore::Gitlab(client) => {
            let up = ArtifactUpload {
                job_id: req.job_id,
                token: &req.token,
                file: &out,
                file_name: &file_name,
                format: if req.format.is_empty() {
                    "zip"
                } else {
                    &req.format
                },
                artifact_type,
                expire_in: &req.expire_in,
                timeout: req.timeout,
            };
            match client.upload_artifacts(&up).await {
                Ok(()) => {
                    say(&format!(
                        "Uploading artifacts as \"{artifact_type}\" to coordinator... 201 Created  id={} responseStatus=201 Created",
                        req.job_id
                    ));
                    Ok(())
                }
                Err(UploadError::TooLarge) => Err(format!(
                    "Uploading artifacts as \"{artifact_type}\" to coordinator... too large archive  id={} responseStatus=413 Request Entity Too Large: the archive is larger than the instance's maximum artifacts size",
                    req.job_id
                )),
                Err(UploadError::Forbidden(m)) => Err(format!(
                    "Uploading artifacts as \"{artifact_type}\" to coordinator... forbidden  id={} responseStatus=403 Forbidden: {m}",
                    req.job_id
                )),
                Err(UploadError::Other(e)) => Err(format!(
                    "Uploading artifacts as \"{artifact_type}\" to coordinator... failed  id={}: {e}",
                    req.job_id
                )),
            }
        }
        ArtifactStore::Local(dir) => {
            let dest_dir = dir.join(req.job_id.to_string());
            let dest = dest_dir.join(&file_name);
            let src = out.clone();
            blocking(move || {
                std::fs::create_dir_all(&dest_dir)
                    .and_then(|()| std::fs::copy(&src, &dest).map(|_| ()))
                    .map_err(|e| format!("cannot store artifacts in {}: {e}", dest.display()))
            })
            .await
            .map(|()| say(&format!("Stored artifacts as \"{artifact_type}\" locally")))
        }
    };
    let _ = tokio::fs::remove_file(&out).await;
    result
}

/// Downloads one dependency's artifacts and extracts them into `project_dir`.
pub async fn download_dependency(
    store: &ArtifactStore,
    dep_id: i64,
    token: &Token,
    project_dir: &Path,
    tmp_dir: &Path,
    direct_download: bool,
    say: Say<'_>,
) -> Result<(), String> {
    tokio::fs::create_dir_all(tmp_dir)
        .await
        .map_err(|e| format!("cannot create {}: {e}", tmp_dir.display()))?;
    let file = tmp_dir.join(format!("artifacts-{dep_id}.download"));
    match store {
        ArtifactStore::Gitlab(client) => {
            client
                .download_artifacts(dep_id, token, direct_download, &file)
                .await
                .map_err(|e| {
                    format!("Downloading artifacts from coordinator... failed  id={dep_id}: {e}")
                })?;
            say(&format!(
                "Downloading artifacts from coordinator... ok  id={dep_id} responseStatus=200 OK"
            ));
        }
        ArtifactStore::Local(dir) => {
            let src_dir = dir.join(dep_id.to_string());
            let (f, sd) = (file.clone(), src_dir.clone());
            blocking(move || {
                let entry = std::fs::read_dir(&sd)
                    .map_err(|e| format!("no artifacts stored for job {dep_id}: {e}"))?
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|x| x == "zip"))
                    .ok_or_else(|| format!("no artifacts archive stored for job {dep_id}"))?;
                std::fs::copy(&entry, &f)
                    .map(|_| ())
                    .map_err(|e| format!("cannot read {}: {e}", entry.display()))
            })
            .await?;
        }
    }
    let (f, target) = (file.clone(), project_dir.to_path_buf());
    let extracted = blocking(move || {
        archive::extract(&f, &target, &Limits::default()).map_err(|e| e.to_string())
    })
    .await;
    let _ = tokio::fs::remove_file(&file).await;
    extracted.map_err(|e| format!("cannot extract the artifacts of job {dep_id}: {e}"))?;
    Ok(())
}

/// `download_artifacts` for a job: every dependency with an artifacts file.
pub async fn download_artifacts_for_job(
    ctx: &JobContext,
    files: &JobFiles,
    say: Say<'_>,
) -> Result<(), String> {
    let direct = ctx.vars.bool("FF_USE_DIRECT_DOWNLOAD").unwrap_or(true);
    for dep in ctx
        .job
        .dependencies
        .iter()
        .filter(|d| d.artifacts_file.is_some())
    {
        say(&format!(
            "Downloading artifacts for {} ({})...",
            dep.name, dep.id
        ));
        download_dependency(
            &files.artifacts,
            dep.id,
            &dep.token,
            Path::new(&ctx.layout.project_dir),
            Path::new(&ctx.layout.tmp_dir),
            direct,
            say,
        )
        .await?;
    }
    Ok(())
}

/// `upload_artifacts_on_success|on_failure` for a job: every artifact whose `when` matches.
/// The first failure is returned after the other artifacts were tried.
pub async fn upload_artifacts_for_job(
    ctx: &JobContext,
    files: &JobFiles,
    job_ok: bool,
    say: Say<'_>,
) -> Result<(), String> {
    let mut first_error = None;
    for a in ctx
        .job
        .artifacts
        .iter()
        .filter(|a| artifact_when_matches(&a.when, job_ok))
    {
        say("Uploading artifacts...");
        let req = UploadRequest {
            project_dir: PathBuf::from(&ctx.layout.project_dir),
            tmp_dir: PathBuf::from(&ctx.layout.tmp_dir),
            paths: a.paths.iter().map(|p| ctx.vars.expand(p)).collect(),
            exclude: a.exclude.iter().map(|p| ctx.vars.expand(p)).collect(),
            untracked: a.untracked,
            name: ctx.vars.expand(&a.name),
            format: a.artifact_format.clone(),
            artifact_type: a.artifact_type.clone(),
            expire_in: a.expire_in.clone(),
            job_id: ctx.job.id,
            token: ctx.job.token.clone(),
            timeout: Duration::from_secs(3600),
        };
        if let Err(e) = upload_artifact(&files.artifacts, &req, say).await {
            say(&format!("\x1b[31;1mERROR: {e}\x1b[0;m"));
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_file_names_follow_the_format() {
        assert_eq!(artifact_file_name("", "zip"), "artifacts.zip");
        assert_eq!(artifact_file_name("widget-1a2b", ""), "widget-1a2b.zip");
        assert_eq!(artifact_file_name("dir/report", "gzip"), "report.gz");
        assert_eq!(artifact_file_name("junit.xml", "raw"), "junit.xml");
        assert_eq!(artifact_file_name(".", "zip"), "default.zip");
    }

    #[test]
    fn urls_lose_their_signature_in_debug_output() {
        let u = CacheUrls {
            get: Some("https://s3.example/b/k?X-Amz-Signature=secret".into()),
            put: None,
        };
        let shown = format!("{u:?}");
        assert!(shown.contains("https://s3.example/b/k"));
        assert!(!shown.contains("secret"));
    }

    #[test]
    fn when_rules() {
        assert!(artifact_when_matches("", true));
        assert!(!artifact_when_matches("", false));
        assert!(artifact_when_matches("on_failure", false));
        assert!(artifact_when_matches("always", false));
    }
}
