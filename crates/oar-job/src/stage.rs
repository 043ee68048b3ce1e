//! The stages of a job, in GitLab Runner's order and with its section names.

/// One stage of a job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `prepare_script`.
    Prepare,
    /// `get_sources`.
    GetSources,
    /// `restore_cache`.
    RestoreCache,
    /// `download_artifacts`.
    DownloadArtifacts,
    /// `step_<name>` (`step_script`, `step_release`).
    Step(String),
    /// `after_script`.
    AfterScript,
    /// `archive_cache`.
    ArchiveCache,
    /// `archive_cache_on_failure`.
    ArchiveCacheOnFailure,
    /// `upload_artifacts_on_success`.
    UploadArtifactsOnSuccess,
    /// `upload_artifacts_on_failure`.
    UploadArtifactsOnFailure,
    /// `cleanup_file_variables`.
    CleanupFileVariables,
}

impl Stage {
    /// The section name GitLab shows.
    pub fn name(&self) -> String {
        match self {
            Stage::Prepare => "prepare_script".into(),
            Stage::GetSources => "get_sources".into(),
            Stage::RestoreCache => "restore_cache".into(),
            Stage::DownloadArtifacts => "download_artifacts".into(),
            Stage::Step(n) => format!("step_{n}"),
            Stage::AfterScript => "after_script".into(),
            Stage::ArchiveCache => "archive_cache".into(),
            Stage::ArchiveCacheOnFailure => "archive_cache_on_failure".into(),
            Stage::UploadArtifactsOnSuccess => "upload_artifacts_on_success".into(),
            Stage::UploadArtifactsOnFailure => "upload_artifacts_on_failure".into(),
            Stage::CleanupFileVariables => "cleanup_file_variables".into(),
        }
    }

    /// The line printed at the start of the section.
    pub fn description(&self) -> String {
        match self {
            Stage::Prepare => "Preparing environment".into(),
            Stage::GetSources => "Getting source from Git repository".into(),
            Stage::RestoreCache => "Restoring cache".into(),
            Stage::DownloadArtifacts => "Downloading artifacts".into(),
            Stage::Step(n) => format!("Executing \"step_{n}\" stage of the job script"),
            Stage::AfterScript => "Running after_script".into(),
            Stage::ArchiveCache => "Saving cache for successful job".into(),
            Stage::ArchiveCacheOnFailure => "Saving cache for failed job".into(),
            Stage::UploadArtifactsOnSuccess => "Uploading artifacts for successful job".into(),
            Stage::UploadArtifactsOnFailure => "Uploading artifacts for failed job".into(),
            Stage::CleanupFileVariables => {
                "Cleaning up project directory and file based variables".into()
            }
        }
    }

    /// Whether the stage runs with the runner's tools (helper image) rather than the job's
    /// image. Irrelevant for the shell executor.
    pub fn is_predefined(&self) -> bool {
        !matches!(self, Stage::Step(_) | Stage::AfterScript)
    }
}

/// A stage's script, ready for a [`crate::StageRunner`].
#[derive(Debug, Clone)]
pub struct StageScript {
    /// Which stage.
    pub stage: Stage,
    /// The complete POSIX shell script.
    pub script: String,
}
