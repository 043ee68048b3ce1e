//! Job caches, job side: [`restore`] before the script, [`save`] after it.
//!
//! A cache lives in `<local dir>/<key>/cache.tar.zst` (Oar's format) and, with a distributed
//! cache, in an S3 object reached through presigned URLs ([`RemoteUrls`], made by the manager
//! with [`crate::s3`]). The local archive is always written first; the remote object mirrors
//! it. GitLab Runner's `cache.zip` (same directory, or a zip stored under the same object name)
//! is restored too: the format is told by the archive's magic bytes.
//!
//! Nothing here fails a job: every problem (missing cache, corrupt archive, refused signature,
//! unreachable server) becomes a `WARNING:` line in the log and an outcome the caller can
//! inspect. The log lines are GitLab Runner's (`Checking cache for <key>...`, `Successfully
//! extracted cache`, `Creating cache <key>...`, `Created cache`, ...), with Oar's file names.

mod key;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use url::Url;

pub use key::{KeyError, default_key, fallback_key_allowed, sanitize_key};

use crate::archive::{self, CreateOptions, Format, Limits, Stats};
use crate::remote::{Downloaded, Transfer, TransferOptions, redact_url};
use crate::select::{self, PathSpec};

/// Oar's local cache archive name.
pub const ARCHIVE_NAME: &str = "cache.tar.zst";
/// GitLab Runner's local cache archive name (restored, never written).
pub const GITLAB_ARCHIVE_NAME: &str = "cache.zip";

/// `cache:policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// `pull`: restore only.
    Pull,
    /// `push`: save only.
    Push,
    /// `pull-push` (the default): restore, then save.
    #[default]
    PullPush,
}

/// `cache:when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum When {
    /// `on_success` (the default): save when the job succeeded.
    #[default]
    OnSuccess,
    /// `on_failure`: save when the job failed.
    OnFailure,
    /// `always`.
    Always,
}

impl When {
    /// Whether a cache with this `when` is saved after a job that succeeded (or not). The
    /// caller checks it before [`save`] (`archive_cache` vs `archive_cache_on_failure`).
    pub fn applies(self, job_succeeded: bool) -> bool {
        match self {
            When::OnSuccess => job_succeeded,
            When::OnFailure => !job_succeeded,
            When::Always => true,
        }
    }
}

/// One entry of a job's `cache:`, variables already expanded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheSpec {
    /// `cache:key` (sanitized by [`restore`]/[`save`]; use [`default_key`] when the job has
    /// none).
    pub key: String,
    /// `cache:fallback_keys`, then `CACHE_FALLBACK_KEY` (if [`fallback_key_allowed`]), in
    /// the order to try them.
    pub fallback_keys: Vec<String>,
    /// `cache:paths`.
    pub paths: Vec<String>,
    /// `cache:untracked`.
    pub untracked: bool,
    /// `cache:policy`.
    pub policy: Policy,
    /// `cache:when`.
    pub when: When,
}

/// Presigned URLs of one cache key's object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteUrls {
    /// Presigned `GET`.
    pub get: Option<Url>,
    /// Presigned `PUT` (only for the main key: fallback keys are never written).
    pub put: Option<Url>,
}

/// Where a job's caches live.
#[derive(Debug, Clone)]
pub struct CacheEnv {
    /// `<cache_dir>/<project path>`: the local archives are `<local_dir>/<key>/cache.tar.zst`.
    pub local_dir: PathBuf,
    /// Presigned URLs by sanitized key. A key without an entry (or without `get`/`put`) is
    /// only cached locally.
    pub remote: BTreeMap<String, RemoteUrls>,
    /// zstd level of new archives (`CACHE_COMPRESSION_LEVEL` mapped to zstd; 3 is zstd's
    /// default).
    pub zstd_level: i32,
    /// Compression threads.
    pub threads: u32,
    /// Extraction limits.
    pub limits: Limits,
    /// Retries and timeout of downloads and uploads (`CACHE_REQUEST_TIMEOUT`).
    pub transfer: TransferOptions,
    /// `MaxUploadedArchiveSize`: larger archives stay local only.
    pub max_upload_size: Option<u64>,
}

impl CacheEnv {
    /// A local-only environment with default settings.
    pub fn local(local_dir: impl Into<PathBuf>) -> Self {
        Self {
            local_dir: local_dir.into(),
            remote: BTreeMap::new(),
            zstd_level: 3,
            threads: archive::available_threads(),
            limits: Limits::default(),
            transfer: TransferOptions::default(),
            max_upload_size: None,
        }
    }

    /// The local archive of `key` (sanitized).
    pub fn archive_path(&self, key: &str) -> PathBuf {
        self.local_dir.join(key).join(ARCHIVE_NAME)
    }
}

/// Where a restored cache came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSource {
    /// Downloaded from its presigned URL.
    Remote,
    /// The local archive.
    Local,
}

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// A cache was extracted into the project directory.
    Restored {
        /// The (sanitized) key it was found under: the main key or a fallback key.
        key: String,
        /// Where it came from.
        source: CacheSource,
        /// What was extracted.
        stats: Stats,
    },
    /// `policy: push`.
    SkippedByPolicy,
    /// Nothing to do: no `paths` and no `untracked`, or no usable key.
    Skipped {
        /// Why.
        reason: String,
    },
    /// No key had a cache; nothing went wrong otherwise.
    NotFound,
    /// No cache was restored and at least one key failed for another reason than a missing
    /// cache (refused signature, corrupt archive, network): the job continues, with these
    /// warnings in its log.
    Failed {
        /// The warnings, one per failed key.
        warnings: Vec<String>,
    },
}

impl RestoreOutcome {
    /// Whether the outcome is worth a warning (something went wrong beyond a cache miss).
    pub fn is_warning(&self) -> bool {
        matches!(self, RestoreOutcome::Failed { .. })
    }
}

/// What happened to the remote copy in [`save`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteSave {
    /// Uploaded.
    Uploaded {
        /// Archive size.
        bytes: u64,
    },
    /// No `PUT` URL: local only.
    LocalOnly,
    /// Over `MaxUploadedArchiveSize`: local only.
    TooLarge {
        /// Archive size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The upload failed (the local archive was written).
    Failed {
        /// The warning.
        warning: String,
    },
}

/// What [`save`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveOutcome {
    /// The local archive was written; `remote` says what became of the remote copy.
    Saved {
        /// The (sanitized) key.
        key: String,
        /// What went into the archive.
        stats: Stats,
        /// The remote copy.
        remote: RemoteSave,
    },
    /// The paths matched nothing: no archive (GitLab Runner: `No files to cache.`).
    NoFiles {
        /// The (sanitized) key.
        key: String,
    },
    /// `policy: pull`.
    SkippedByPolicy,
    /// Nothing to do: no `paths` and no `untracked`, or no usable key.
    Skipped {
        /// Why.
        reason: String,
    },
    /// The archive could not be created.
    Failed {
        /// The warning.
        warning: String,
    },
}

impl SaveOutcome {
    /// Whether the outcome is worth a warning (archive or upload failure).
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            SaveOutcome::Failed { .. }
                | SaveOutcome::Saved {
                    remote: RemoteSave::Failed { .. },
                    ..
                }
        )
    }
}

/// The log callback: one line per call, no trailing newline.
pub type Log<'a> = &'a mut (dyn FnMut(&str) + Send);

/// Sanitizes `raw`, logging GitLab Runner's warnings: the key changed, or could not be
/// sanitized. `Err` is the reason to log as "Skipping cache ... due to <reason>" (GitLab
/// Runner says "empty cache key" for both an empty key and one with nothing left).
fn usable_key(raw: &str, log: Log<'_>) -> Result<String, KeyError> {
    match sanitize_key(raw) {
        Ok(key) => {
            if key != raw {
                log(&format!("WARNING: cache key {raw:?} sanitized to {key:?}"));
            }
            Ok(key)
        }
        Err(err @ KeyError::Unsanitizable(_)) => {
            log(&format!("WARNING: {err}"));
            Err(KeyError::Empty)
        }
        Err(err) => Err(err),
    }
}

/// Restores the cache of `spec` into `project_dir`: the main key, then each fallback key, in
/// order, until one is found and extracted. For each key the remote object is downloaded when
/// a `GET` URL is given (into the local archive's place, then extracted), else the local
/// archive (`cache.tar.zst`, or GitLab Runner's `cache.zip`) is extracted.
///
/// Never fails the job: problems are logged as warnings and reported in the outcome.
pub async fn restore(
    spec: &CacheSpec,
    project_dir: &Path,
    env: &CacheEnv,
    log: Log<'_>,
) -> RestoreOutcome {
    if spec.paths.is_empty() && !spec.untracked {
        return RestoreOutcome::Skipped {
            reason: "no paths to cache".into(),
        };
    }
    let main = match usable_key(&spec.key, log) {
        Ok(key) => key,
        Err(err) => {
            log(&format!("Skipping cache extraction due to {err}"));
            return RestoreOutcome::Skipped {
                reason: err.to_string(),
            };
        }
    };
    if spec.policy == Policy::Push {
        log(&format!("Not downloading cache {main} due to policy"));
        return RestoreOutcome::SkippedByPolicy;
    }
    let mut keys = vec![main];
    for raw in spec.fallback_keys.iter().filter(|k| !k.is_empty()) {
        match usable_key(raw, log) {
            Ok(key) => keys.push(key),
            Err(err) => log(&format!("Skipping cache extraction due to {err}")),
        }
    }

    let transfer = match Transfer::new(env.transfer) {
        Ok(t) => Some(t),
        Err(err) => {
            log(&format!(
                "WARNING: {err}; the distributed cache is not used"
            ));
            None
        }
    };
    let mut warnings = Vec::new();
    for key in keys {
        log(&format!("Checking cache for {key}..."));
        match restore_key(&key, project_dir, env, transfer.as_ref(), log).await {
            Ok((source, stats)) => {
                log("Successfully extracted cache");
                return RestoreOutcome::Restored { key, source, stats };
            }
            Err(KeyFailure::Missing(line)) => {
                log(&format!("WARNING: {line}"));
                log("Failed to extract cache");
            }
            Err(KeyFailure::Failed(line)) => {
                log(&format!("WARNING: {line}"));
                log("Failed to extract cache");
                warnings.push(format!("{key}: {line}"));
            }
        }
    }
    if warnings.is_empty() {
        RestoreOutcome::NotFound
    } else {
        RestoreOutcome::Failed { warnings }
    }
}

enum KeyFailure {
    /// No cache under this key.
    Missing(String),
    /// Anything else.
    Failed(String),
}

async fn restore_key(
    key: &str,
    project_dir: &Path,
    env: &CacheEnv,
    transfer: Option<&Transfer>,
    log: Log<'_>,
) -> Result<(CacheSource, Stats), KeyFailure> {
    let dir = env.local_dir.join(key);
    let ours = dir.join(ARCHIVE_NAME);
    let gitlab = dir.join(GITLAB_ARCHIVE_NAME);
    let get = env.remote.get(key).and_then(|r| r.get.as_ref());

    let (archive_file, source) = match (get, transfer) {
        (Some(url), Some(transfer)) => {
            let shown = redact_url(url);
            log(&format!("Downloading cache from {shown}"));
            let part = dir.join("cache.download");
            match transfer.download(url, &part, log).await {
                Ok(Downloaded::File { .. }) => {}
                Ok(Downloaded::NotFound) => {
                    return Err(KeyFailure::Missing(format!("cache not found at {shown}")));
                }
                Err(err) => {
                    return Err(KeyFailure::Failed(format!("downloading cache: {err}")));
                }
            }
            // Keep the download under the name of its format (a GitLab Runner zip may be
            // stored under the same object name), and drop the stale other one.
            let format = blocking(move || archive::detect(&part).map(|f| (f, part))).await;
            let (format, part) = match format {
                Ok(found) => found,
                Err(err) => {
                    let _ = tokio::fs::remove_file(dir.join("cache.download")).await;
                    return Err(KeyFailure::Failed(format!(
                        "downloaded cache is unusable: {err}"
                    )));
                }
            };
            let (keep, stale) = if format == Format::Zip {
                (&gitlab, &ours)
            } else {
                (&ours, &gitlab)
            };
            if let Err(err) = tokio::fs::rename(&part, keep).await {
                return Err(KeyFailure::Failed(format!(
                    "moving the downloaded cache to {}: {err}",
                    keep.display()
                )));
            }
            let _ = tokio::fs::remove_file(stale).await;
            (keep.clone(), CacheSource::Remote)
        }
        _ => {
            log(
                "No URL provided, cache will not be downloaded from shared cache server. \
                 Instead a local version of cache will be extracted.",
            );
            if tokio::fs::try_exists(&ours).await.unwrap_or(false) {
                (ours, CacheSource::Local)
            } else if tokio::fs::try_exists(&gitlab).await.unwrap_or(false) {
                (gitlab, CacheSource::Local)
            } else {
                return Err(KeyFailure::Missing(format!(
                    "cache not found: {} does not exist",
                    ours.display()
                )));
            }
        }
    };

    let target = project_dir.to_path_buf();
    let limits = env.limits;
    let file = archive_file.clone();
    match blocking(move || archive::extract(&file, &target, &limits)).await {
        Ok(stats) => Ok((source, stats)),
        Err(err) => Err(KeyFailure::Failed(format!(
            "extracting cache {}: {err}",
            archive_file.display()
        ))),
    }
}

/// Runs blocking archive work off the async threads; a panic there is an error, not a crash.
async fn blocking<T, F>(f: F) -> Result<T, String>
where
    F: FnOnce() -> Result<T, crate::ArchiveError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(join) => Err(format!("archive worker failed: {join}")),
    }
}

/// Saves the cache of `spec` from `project_dir`: selects `paths`/`untracked`, writes the local
/// archive `<local_dir>/<key>/cache.tar.zst`, then uploads it to the key's `PUT` URL if there
/// is one. The caller checks [`When::applies`] first.
///
/// Never fails the job: problems are logged as warnings and reported in the outcome.
pub async fn save(
    spec: &CacheSpec,
    project_dir: &Path,
    env: &CacheEnv,
    log: Log<'_>,
) -> SaveOutcome {
    if spec.paths.is_empty() && !spec.untracked {
        return SaveOutcome::Skipped {
            reason: "no paths to cache".into(),
        };
    }
    let key = match usable_key(&spec.key, log) {
        Ok(key) => key,
        Err(err) => {
            log(&format!("Skipping cache archiving due to {err}"));
            return SaveOutcome::Skipped {
                reason: err.to_string(),
            };
        }
    };
    if spec.policy == Policy::Pull {
        log(&format!("Not uploading cache {key} due to policy"));
        return SaveOutcome::SkippedByPolicy;
    }

    log(&format!("Creating cache {key}..."));
    fn failed(log: Log<'_>, warning: String) -> SaveOutcome {
        log(&format!("WARNING: {warning}"));
        log("Failed to create cache");
        SaveOutcome::Failed { warning }
    }

    let root = project_dir.to_path_buf();
    let paths = spec.paths.clone();
    let untracked = spec.untracked;
    let selection = blocking(move || {
        select::select(
            &root,
            &PathSpec {
                paths: &paths,
                exclude: &[],
                untracked,
            },
        )
    })
    .await;
    let selection = match selection {
        Ok(selection) => selection,
        Err(err) => return failed(log, format!("selecting files to cache: {err}")),
    };
    for warning in &selection.warnings {
        log(&format!("WARNING: {warning}"));
    }
    if selection.is_empty() {
        log("WARNING: No files to cache.");
        log("Created cache");
        return SaveOutcome::NoFiles { key };
    }

    let out = env.archive_path(&key);
    let opts = CreateOptions {
        format: Format::TarZst,
        zstd_level: env.zstd_level,
        threads: env.threads,
    };
    let root = project_dir.to_path_buf();
    let file = out.clone();
    let stats = match blocking(move || archive::create(&root, &selection, &file, &opts)).await {
        Ok(stats) => stats,
        Err(err) => {
            return failed(
                log,
                format!("creating cache archive {}: {err}", out.display()),
            );
        }
    };
    // The new archive supersedes a GitLab Runner one of the same key.
    if let Some(dir) = out.parent() {
        let _ = tokio::fs::remove_file(dir.join(GITLAB_ARCHIVE_NAME)).await;
    }

    let remote = upload(&key, &out, env, log).await;
    if let RemoteSave::Failed { warning } = &remote {
        log(&format!("WARNING: {warning}"));
        log("Failed to create cache");
    } else {
        log("Created cache");
    }
    SaveOutcome::Saved { key, stats, remote }
}

async fn upload(key: &str, archive: &Path, env: &CacheEnv, log: Log<'_>) -> RemoteSave {
    let Some(url) = env.remote.get(key).and_then(|r| r.put.as_ref()) else {
        log(
            "No URL provided, cache will not be uploaded to shared cache server. \
             Cache will be stored only locally.",
        );
        return RemoteSave::LocalOnly;
    };
    let size = match tokio::fs::metadata(archive).await {
        Ok(meta) => meta.len(),
        Err(err) => {
            return RemoteSave::Failed {
                warning: format!("reading {}: {err}", archive.display()),
            };
        }
    };
    if let Some(limit) = env.max_upload_size.filter(|limit| size > *limit) {
        log(&format!(
            "Cache archive size ({size}) is too big (Limit is set to {limit}). \
             Cache will be stored only locally."
        ));
        return RemoteSave::TooLarge { bytes: size, limit };
    }
    let transfer = match Transfer::new(env.transfer) {
        Ok(t) => t,
        Err(err) => {
            return RemoteSave::Failed {
                warning: err.to_string(),
            };
        }
    };
    log(&format!("Uploading {ARCHIVE_NAME} to {}", redact_url(url)));
    match transfer.upload(archive, url, log).await {
        Ok(bytes) => RemoteSave::Uploaded { bytes },
        Err(err) => RemoteSave::Failed {
            warning: format!("uploading cache: {err}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// The futures can be spawned (`tokio::spawn` needs `Send`).
    #[test]
    fn futures_are_send() {
        let spec = CacheSpec::default();
        let env = CacheEnv::local("/nonexistent");
        let mut log = |_: &str| {};
        let restore = restore(&spec, Path::new("/nonexistent"), &env, &mut log);
        assert_send(&restore);
        drop(restore);
        let save = save(&spec, Path::new("/nonexistent"), &env, &mut log);
        assert_send(&save);
    }

    #[test]
    fn when_and_outcome_helpers() {
        assert!(When::OnSuccess.applies(true));
        assert!(!When::OnSuccess.applies(false));
        assert!(When::OnFailure.applies(false));
        assert!(!When::OnFailure.applies(true));
        assert!(When::Always.applies(true) && When::Always.applies(false));
        assert_eq!(Policy::default(), Policy::PullPush);
        assert_eq!(When::default(), When::OnSuccess);
        assert!(!RestoreOutcome::NotFound.is_warning());
        assert!(RestoreOutcome::Failed { warnings: vec![] }.is_warning());
        let saved = |remote| SaveOutcome::Saved {
            key: "k".into(),
            stats: Stats::default(),
            remote,
        };
        assert!(!saved(RemoteSave::LocalOnly).is_warning());
        assert!(
            saved(RemoteSave::Failed {
                warning: "w".into()
            })
            .is_warning()
        );
        assert_eq!(
            CacheEnv::local("/c/acme/widget").archive_path("build/main"),
            Path::new("/c/acme/widget/build/main/cache.tar.zst")
        );
    }
}
