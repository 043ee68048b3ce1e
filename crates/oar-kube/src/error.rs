//! Why a pod cannot be built.

/// A job that cannot get a pod from this runner's configuration.
///
/// Every variant is a configuration problem of the job or of the runner: report it to the job
/// log and fail the job with GitLab's failure reason `runner_configuration_error`, as GitLab
/// Runner does for the same checks. Each message names the variable or key and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodError {
    /// A job asks for a ServiceAccount an identity rule guards, and does not match the rule.
    #[error(transparent)]
    IdentityRefused(#[from] crate::identity::Refusal),
    /// A `KUBERNETES_*` overwrite does not match its `*_overwrite_allowed` regex.
    #[error("{variable} {value:?} does not match {gate_key} {pattern:?}")]
    OverwriteNotAllowed {
        /// The job variable.
        variable: String,
        /// Its value.
        value: String,
        /// The config key holding the regex.
        gate_key: &'static str,
        /// The regex.
        pattern: String,
    },
    /// A map overwrite (`KUBERNETES_POD_LABELS_*`, ...) is not `key=value`.
    #[error("{variable} {value:?} is not of the form {expected}")]
    OverwriteMalformed {
        /// The job variable.
        variable: String,
        /// Its value.
        value: String,
        /// The expected form.
        expected: &'static str,
    },
    /// A resource overwrite asks for more than `*_overwrite_max_allowed`.
    #[error("{variable} {value:?} is higher than {max_key} {max:?}")]
    OverwriteTooHigh {
        /// The job variable.
        variable: String,
        /// Its value.
        value: String,
        /// The config key holding the ceiling.
        max_key: String,
        /// The ceiling.
        max: String,
    },
    /// A resource overwrite that is not a Kubernetes quantity.
    #[error("{variable} {value:?} is not a Kubernetes quantity such as \"500m\" or \"2Gi\"")]
    InvalidQuantity {
        /// The job variable.
        variable: String,
        /// Its value.
        value: String,
    },
    /// A name the API server would reject (namespace, service account, label key, ...).
    #[error("{what} {value:?} is invalid: {rule}")]
    InvalidName {
        /// What the value is and where it comes from.
        what: String,
        /// The value.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// Neither the job nor `[runners.kubernetes] image` names an image.
    #[error("no image specified and no default set in config ([runners.kubernetes] image)")]
    NoImage,
    /// An image or service not matched by `allowed_images` / `allowed_services`.
    #[error("image {image:?} is not allowed: it matches none of {option} {allowed:?}")]
    DisallowedImage {
        /// The image.
        image: String,
        /// `allowed_images` or `allowed_services`.
        option: &'static str,
        /// The globs.
        allowed: Vec<String>,
    },
    /// A `pull_policy` value that is not `always`, `if-not-present` or `never`.
    #[error(
        "pull_policy {value:?} of container {container:?} is not one of always, if-not-present, never"
    )]
    UnsupportedPullPolicy {
        /// The container.
        container: String,
        /// The value.
        value: String,
    },
    /// The effective pull policies and `allowed_pull_policies` have nothing in common.
    #[error(
        "invalid pull policy for container {container:?}: pull_policy ({policies}) defined in {source_name} is not one of the allowed_pull_policies ({allowed}){hint}"
    )]
    PullPolicyNotAllowed {
        /// The container.
        container: String,
        /// The policies asked for, Kubernetes names (`[]` for the cluster default).
        policies: String,
        /// `GitLab pipeline config`, `Runner config` or `Runner config (default)`.
        source_name: &'static str,
        /// `allowed_pull_policies`, Kubernetes names.
        allowed: String,
        /// What to do, when the policies are the defaults.
        hint: &'static str,
    },
    /// A service alias that is not a valid DNS name.
    #[error("provided host alias {alias} for service {image} is invalid DNS: {rule}")]
    InvalidServiceAlias {
        /// The alias.
        alias: String,
        /// The service image.
        image: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A setting Oar refuses rather than half-implements.
    #[error("{setting} is not supported by Oar: {reason}")]
    Unsupported {
        /// The key or variable.
        setting: &'static str,
        /// Why, and what to do instead.
        reason: &'static str,
    },
    /// A user volume named like one of Oar's own volumes.
    #[error("volume name {name:?} ([runners.kubernetes.volumes]) is reserved by Oar")]
    ReservedVolumeName {
        /// The name.
        name: String,
    },
    /// Two of Oar's directories overlap (`builds_dir` inside `/oar/...`, say).
    #[error("{first} {first_path:?} and {second} {second_path:?} overlap")]
    OverlappingPaths {
        /// What the first path is.
        first: &'static str,
        /// The first path.
        first_path: String,
        /// What the second path is.
        second: &'static str,
        /// The second path.
        second_path: String,
    },
    /// A `[[runners.kubernetes.pod_spec]]` patch that cannot be applied.
    #[error("pod_spec patch {name:?} ({patch_type}): {message}")]
    Patch {
        /// The patch's `name`.
        name: String,
        /// `strategic`, `merge` or `json`.
        patch_type: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The pod spec after all `pod_spec` patches does not deserialize as a PodSpec.
    #[error("the pod spec after the pod_spec patches is not a valid PodSpec: {message}")]
    PatchedSpecInvalid {
        /// The deserialization error.
        message: String,
    },
}
