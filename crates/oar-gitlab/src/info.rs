//! The runner's `info` object and the features Oar implements.

use crate::types::{FeaturesInfo, VersionInfo};

/// Go's name of this machine's architecture, as GitLab expects it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The features Oar really implements for a given executor. GitLab fails jobs that need a
/// feature we do not advertise (`runner_unsupported`), so nothing is claimed that is not built.
pub fn features(executor: &str) -> FeaturesInfo {
    FeaturesInfo {
        variables: true,
        raw_variables: true,
        masking: true,
        refspecs: true,
        multi_build_steps: true,
        return_exit_code: true,
        trace_reset: true,
        trace_checksum: true,
        trace_size: true,
        cancelable: true,
        cancel_gracefully: true,
        two_phase_job_commit: true,
        artifacts: true,
        artifacts_exclude: true,
        upload_multiple_artifacts: true,
        upload_raw_artifacts: true,
        cache: true,
        fallback_cache_keys: true,
        shared: executor == "shell",
        ..FeaturesInfo::default()
    }
}

/// Builds the `info` object.
pub fn version_info(version: &str, revision: &str, executor: &str, shell: &str) -> VersionInfo {
    VersionInfo {
        name: "gitlab-runner".into(),
        version: version.into(),
        revision: revision.into(),
        platform: std::env::consts::OS.into(),
        architecture: go_arch().into(),
        executor: executor.into(),
        shell: shell.into(),
        features: features(executor),
        ..VersionInfo::default()
    }
}
