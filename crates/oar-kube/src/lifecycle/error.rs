//! Why the lifecycle could not do what it was asked.

use std::time::Duration;

/// A failure to start watching or to create a job's objects. Reported to the job as a
/// `runner_system_failure` (API errors: quota, admission, RBAC, API server down) except where
/// noted.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// An API call failed.
    #[error("{action}: {source}")]
    Api {
        /// What the manager was doing (`creating Secret ci/oar-job-1`).
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The object to create lacks something the lifecycle needs.
    #[error("invalid {what}: {problem}")]
    Invalid {
        /// Which object.
        what: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A pod in a namespace this manager does not watch: it could never see it end.
    #[error("namespace {namespace:?} is not watched by this runner (it watches {watched:?})")]
    NotWatched {
        /// The pod's namespace.
        namespace: String,
        /// The watched namespaces.
        watched: Vec<String>,
    },
    /// A pod without this runner's labels: the watch would never see it.
    #[error("pod {name:?} lacks the label {label}={value} that this runner watches for")]
    NotLabelled {
        /// The pod's name.
        name: String,
        /// The label key.
        label: String,
        /// Its expected value.
        value: String,
    },
    /// An object of the same name exists and belongs to another job.
    #[error("{kind} {namespace}/{name} already exists and belongs to {owner}")]
    Conflict {
        /// `Pod` or `Secret`.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Whose it is (`job 41`, `another runner`).
        owner: String,
    },
    /// The watch of a namespace did not finish its first list in time.
    #[error(
        "the watch of pods in {} did not list them within {timeout:?}: {last_error}",
        super::watch::scope_name(namespace)
    )]
    WatchStart {
        /// The namespace (empty: all namespaces).
        namespace: String,
        /// How long the manager waited.
        timeout: Duration,
        /// The watch's last error, if any.
        last_error: String,
    },
    /// The manager is shutting down.
    #[error("the runner is shutting down")]
    ShuttingDown,
}

impl LifecycleError {
    pub(crate) fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> LifecycleError {
        let action = action.into();
        move |source| LifecycleError::Api { action, source }
    }
}

/// The API server's status code of an error, if it answered.
pub(crate) fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Whether the API server answered "already exists".
pub(crate) fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_already_exists() || (s.code == 409 && s.reason.is_empty()))
}

/// Whether the API server answered "not found".
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}
