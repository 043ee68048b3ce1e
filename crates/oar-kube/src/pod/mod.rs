//! The job pod, built from `[runners.kubernetes]` and the job: pure (no IO, no clock, no
//! randomness; the pod name is an input).
//!
//! # The pod
//!
//! - **`build`**: the job's image (or `[runners.kubernetes] image`), its command replaced by the
//!   step wrapper (`/bin/sh -c` [`crate::wrapper::WRAPPER`]; with
//!   `FF_KUBERNETES_HONOR_ENTRYPOINT` the image's entrypoint, or the job's `image:entrypoint`,
//!   runs with the wrapper as arguments). Its environment is only `OAR_SCRIPTS_DIR` and
//!   `OAR_LOGS_DIR`: job variables reach steps as exports inside the step scripts, never as pod
//!   env (anyone with `pods get` can read a pod spec).
//! - **`helper`**: the Oar helper image running [`helper_command`]; the payload Secret is
//!   mounted read-only at [`SECRET_MOUNT_PATH`]. `terminationMessagePolicy: File`: the agent
//!   writes its final word to `/dev/termination-log`.
//! - **services**, named after their first alias that is a DNS-1123 label, else `svc-<n>`
//!   (GitLab Runner's rule; `build` and `helper` are never used as service names), sorted by
//!   name. `entrypoint` becomes `command`, `command` becomes `args`. Their env is the job's
//!   public variables (raw values) plus the service's own variables (expanded), with `$`
//!   escaped as `$$`, as GitLab Runner does. They reach each other and the build at
//!   `127.0.0.1`, and by name through `hostAliases`.
//!
//! Volumes: `builds` (emptyDir at `builds_dir`, unless a user volume is mounted exactly there,
//! which then replaces it: that is how to get `medium = "Memory"` or a `size_limit` on it),
//! `scripts` and `logs` (emptyDir at `<scripts_base_dir>/oar/scripts` and
//! `<logs_base_dir>/oar/logs`, by default `/oar/scripts` and `/oar/logs`), `payload` (the
//! Secret), then the user volumes. Build and helper mount builds, scripts, logs and the user
//! volumes; services mount builds and the user volumes (they have no business with the step
//! scripts, which hold the job's secrets).
//!
//! The ServiceAccount is decided by [`crate::identity`]: GitLab Runner's
//! `KUBERNETES_SERVICE_ACCOUNT_OVERWRITE` for accounts no identity rule guards, else the first
//! `[[runners.kubernetes.identity]]` rule the job matches (its account and namespace, the
//! annotation [`ANNOTATION_IDENTITY_RULE`], `automountServiceAccountToken: true` so that the
//! account's token reaches the build container whatever the runner-wide setting, and the
//! rule's `environment` in the build container), else `service_account`. A `projected_token`
//! (the rule's, else the table's) is a `serviceAccountToken` projection with its own audience,
//! mounted read-only in the build container only, at the configured path's directory, with its
//! `environment` (not secrets: token paths and role names) in the build container's env.
//!
//! `activeDeadlineSeconds` is the job timeout plus [`ACTIVE_DEADLINE_MARGIN`] (GitLab Runner
//! adds 1 s; Oar's helper enforces the timeout itself and then still has to upload artifacts
//! on failure and send the final state, so Kubernetes only steps in when the pod is stuck).
//!
//! `[[runners.kubernetes.pod_spec]]` patches apply last, to the PodSpec, when
//! `FF_USE_ADVANCED_POD_SPEC_CONFIGURATION` is on; see [`crate::patch`] for the strategic merge
//! subset. `patch_path` files are read by the caller ([`crate::patch::read_patch_files`]).
//!
//! # Configuration
//!
//! Every `[runners.kubernetes]` key that shapes a pod is honoured with GitLab Runner's
//! semantics, including the `KUBERNETES_*` per-job overwrites (see the `overwrites` module);
//! keys that do not apply to a pod (connection, polling, cleanup) are the lifecycle's.
//! Refused with a [`PodError`]: `namespace_per_job` (the manager watches fixed namespaces and
//! does not manage namespaces) and `KUBERNETES_BEARER_TOKEN` when
//! `bearer_token_overwrite_allowed = true` (one API client serves every job). Ignored with a
//! warning: `helper_image_flavor`, `helper_image_autoset_arch_and_os` (Oar has one helper
//! image), `init_permissions_container_security_context` (Oar has no init container; the
//! agent makes the shared files accessible), `pod_disruption_budget`, and the feature flags
//! `FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY` and
//! `FF_USE_DUMB_INIT_WITH_KUBERNETES_EXECUTOR`.

mod convert;
mod names;
mod overwrites;
mod registry;
mod services;
mod volumes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, LocalObjectReference, Pod, PodSpec, Secret, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use oar_config::KubernetesConfig;
use oar_config::kubernetes::{PatchSource, PullPolicy};
use oar_gitlab::JobResponse;
use oar_job::vars::Variables;
use serde_json::Value;

use crate::error::PodError;
use crate::identity::{self, IdTokens, OVERWRITE_VARIABLE};
use crate::{glob, patch, wrapper};

use overwrites::Overwrites;
use services::ServiceSpec;

/// The build container's name (the step protocol's, [`oar_job::podstep::BUILD_CONTAINER`]).
pub const BUILD_CONTAINER: &str = oar_job::podstep::BUILD_CONTAINER;
/// The helper container's name.
pub const HELPER_CONTAINER: &str = "helper";
/// Prefix of service containers without a usable alias (`svc-0`, `svc-1`, ...).
pub const SERVICE_PREFIX: &str = "svc-";

/// The builds emptyDir volume.
pub const BUILDS_VOLUME: &str = "builds";
/// The scripts emptyDir volume (step scripts and the wrapper's control FIFOs).
pub const SCRIPTS_VOLUME: &str = "scripts";
/// The logs emptyDir volume (step output FIFOs).
pub const LOGS_VOLUME: &str = "logs";
/// The payload Secret volume (helper only).
pub const PAYLOAD_VOLUME: &str = "payload";
/// The projected ServiceAccount token volume (`projected_token`; build container only).
pub const CLOUD_TOKEN_VOLUME: &str = "oar-cloud-token";
/// Where the helper sees the payload Secret.
pub const SECRET_MOUNT_PATH: &str = "/oar/secret";
/// The payload's key in the Secret.
pub const PAYLOAD_KEY: &str = "payload.json";
/// The payload file in the helper container.
pub const PAYLOAD_PATH: &str = "/oar/secret/payload.json";

/// The helper's environment variable with the builds directory.
pub const ENV_BUILDS_DIR: &str = "OAR_BUILDS_DIR";
/// The helper's environment variable with the project directory.
pub const ENV_PROJECT_DIR: &str = "OAR_PROJECT_DIR";

/// Added to the job timeout for the pod's `activeDeadlineSeconds`.
pub const ACTIVE_DEADLINE_MARGIN: Duration = Duration::from_secs(300);

/// Label `app.kubernetes.io/managed-by`, always [`MANAGED_BY`].
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "oar";
/// Label with the runner's short token: the manager lists its pods by it.
pub const LABEL_RUNNER: &str = "oar.dev/runner";
/// Label with the GitLab job id.
pub const LABEL_JOB_ID: &str = "oar.dev/job-id";
/// Annotation naming the identity rule that gave the pod its ServiceAccount.
pub const ANNOTATION_IDENTITY_RULE: &str = "oar.dev/identity-rule";

/// Everything a job pod is built from.
#[derive(Debug, Clone, Copy)]
pub struct PodInput<'a> {
    /// `[runners.kubernetes]`.
    pub config: &'a KubernetesConfig,
    /// `[runners.feature_flags]`; a job variable of the same name wins.
    pub feature_flags: &'a BTreeMap<String, bool>,
    /// Contents of the `patch_path` files of `config.pod_spec`, by path
    /// ([`crate::patch::read_patch_files`]).
    pub patch_files: &'a BTreeMap<PathBuf, String>,
    /// The job.
    pub job: &'a JobResponse,
    /// The job's variables (`KUBERNETES_*` overwrites and `FF_*` flags are read from here,
    /// expanded).
    pub vars: &'a Variables,
    /// The pod's name (also the payload Secret's name).
    pub pod_name: &'a str,
    /// The namespace when neither `namespace` nor an overwrite sets one.
    pub namespace_default: &'a str,
    /// The runner's short token (label [`LABEL_RUNNER`]).
    pub runner_short_token: &'a str,
    /// The runner's `name`.
    pub runner_name: &'a str,
    /// The builds directory in the build and helper containers (`/builds`).
    pub builds_dir: &'a str,
    /// The project directory (`/builds/<group>/<project>`), given to the helper.
    pub project_dir: &'a str,
    /// The job timeout.
    pub timeout: Duration,
    /// The helper image when `helper_image` is unset.
    pub default_helper_image: &'a str,
    /// The job's verified ID tokens, for `require_id_token` identity rules
    /// ([`crate::identity::id_token_variables`] says which to verify).
    pub id_tokens: &'a IdTokens,
}

/// A built pod and what goes with it.
#[derive(Debug, Clone)]
pub struct BuiltPod {
    /// The pod (metadata and spec; no owner references).
    pub pod: Pod,
    /// Its namespace (also in `pod.metadata.namespace`).
    pub namespace: String,
    /// The per-job registry credentials Secret (`kubernetes.io/dockerconfigjson`), already
    /// referenced from `imagePullSecrets`. The lifecycle does not create it as such: it merges
    /// it into the job's payload Secret (one Secret per job) and points `imagePullSecrets` there.
    pub registry_secret: Option<Secret>,
    /// Things the job log should say (ignored settings and overwrites).
    pub warnings: Vec<String>,
    /// Each container's ordered pull policies (Kubernetes names, `""` for the cluster
    /// default); the pod uses the first, the next ones are the fallbacks after a pull failure.
    pub pull_policies: BTreeMap<String, Vec<String>>,
}

/// The helper container's command.
pub fn helper_command() -> Vec<String> {
    ["oar-helper", "agent", "--payload", PAYLOAD_PATH]
        .map(str::to_owned)
        .to_vec()
}

/// The label selector of every pod of the runner with this short token.
pub fn runner_selector(runner_short_token: &str) -> String {
    format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_RUNNER}={}",
        names::sanitize_label(runner_short_token)
    )
}

/// Name of the per-job registry credentials Secret of a pod.
pub fn registry_secret_name(pod_name: &str) -> String {
    format!("{pod_name}-registry")
}

/// The Secret holding the job payload, mounted by the helper at [`SECRET_MOUNT_PATH`] under
/// the key [`PAYLOAD_KEY`]. Immutable: the kubelet does not watch it. Its name is the pod's
/// (see [`PodInput::pod_name`]); the lifecycle adds the owner reference to the pod.
pub fn build_payload_secret(
    name: &str,
    namespace: &str,
    labels: BTreeMap<String, String>,
    payload: &[u8],
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: (!labels.is_empty()).then_some(labels),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            PAYLOAD_KEY.to_owned(),
            ByteString(payload.to_vec()),
        )])),
        ..Default::default()
    }
}

/// A Go `time.Duration` string of whole seconds (`2h0m0s`), as in GitLab Runner's
/// `job.runner.gitlab.com/timeout` annotation.
fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// A feature flag: the job variable if it reads as a boolean, else `[runners.feature_flags]`,
/// else the default.
fn flag(input: &PodInput<'_>, name: &str, default: bool) -> bool {
    input
        .vars
        .bool(name)
        .or_else(|| input.feature_flags.get(name).copied())
        .unwrap_or(default)
}

const FF_ADVANCED_POD_SPEC: &str = "FF_USE_ADVANCED_POD_SPEC_CONFIGURATION";
const FF_ACTIVE_DEADLINE: &str = "FF_USE_POD_ACTIVE_DEADLINE_SECONDS";
const FF_HONOR_ENTRYPOINT: &str = "FF_KUBERNETES_HONOR_ENTRYPOINT";

/// Refusals and warnings for settings that do not apply to Oar.
fn check_settings(input: &PodInput<'_>, warnings: &mut Vec<String>) -> Result<(), PodError> {
    let cfg = input.config;
    if cfg.namespace_per_job {
        return Err(PodError::Unsupported {
            setting: "namespace_per_job",
            reason: "the manager watches fixed namespaces and never creates or deletes one; \
                     use namespace (and namespace_overwrite_allowed)",
        });
    }
    let bearer = input
        .vars
        .value("KUBERNETES_BEARER_TOKEN")
        .unwrap_or_default();
    if !bearer.is_empty() {
        if cfg.bearer_token_overwrite_allowed {
            return Err(PodError::Unsupported {
                setting: "KUBERNETES_BEARER_TOKEN",
                reason: "one API client serves every job, so a job cannot bring its own \
                         credentials; remove bearer_token_overwrite_allowed",
            });
        }
        warnings.push(
            "KUBERNETES_BEARER_TOKEN ignored: bearer_token_overwrite_allowed is not set".into(),
        );
    }
    if cfg.helper_image_flavor.is_some() {
        warnings.push("helper_image_flavor ignored: Oar has a single helper image".into());
    }
    if cfg.helper_image_autoset_arch_and_os {
        warnings
            .push("helper_image_autoset_arch_and_os ignored: Oar has a single helper image".into());
    }
    if cfg.init_permissions_container_security_context.is_some() {
        warnings.push(
            "init_permissions_container_security_context ignored: Oar pods have no init container"
                .into(),
        );
    }
    if cfg.pod_disruption_budget {
        warnings
            .push("pod_disruption_budget ignored: Oar does not create PodDisruptionBudgets".into());
    }
    for ff in [
        "FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY",
        "FF_USE_DUMB_INIT_WITH_KUBERNETES_EXECUTOR",
    ] {
        if flag(input, ff, false) {
            warnings.push(format!("{ff} has no effect: Oar's job pod drives itself"));
        }
    }
    Ok(())
}

/// The directories the pod mounts.
struct Paths {
    builds: String,
    scripts: String,
    logs: String,
}

fn overlap(a: &str, b: &str) -> bool {
    let a = a.trim_end_matches('/');
    let b = b.trim_end_matches('/');
    a == b
        || a.is_empty()
        || b.is_empty()
        || b.starts_with(&format!("{a}/"))
        || a.starts_with(&format!("{b}/"))
}

fn paths(input: &PodInput<'_>) -> Result<Paths, PodError> {
    let cfg = input.config;
    if !input.builds_dir.starts_with('/') {
        return Err(PodError::InvalidName {
            what: "builds_dir".into(),
            value: input.builds_dir.to_owned(),
            rule: "an absolute path",
        });
    }
    let paths = Paths {
        builds: input.builds_dir.to_owned(),
        scripts: format!(
            "{}/oar/scripts",
            cfg.scripts_base_dir.as_deref().unwrap_or_default()
        ),
        logs: format!(
            "{}/oar/logs",
            cfg.logs_base_dir.as_deref().unwrap_or_default()
        ),
    };
    let all = [
        ("builds_dir", paths.builds.as_str()),
        ("the scripts directory", paths.scripts.as_str()),
        ("the logs directory", paths.logs.as_str()),
        ("the payload directory", SECRET_MOUNT_PATH),
    ];
    for (i, (first, first_path)) in all.iter().enumerate() {
        for (second, second_path) in &all[i + 1..] {
            if overlap(first_path, second_path) {
                return Err(PodError::OverlappingPaths {
                    first,
                    first_path: (*first_path).to_owned(),
                    second,
                    second_path: (*second_path).to_owned(),
                });
            }
        }
    }
    Ok(paths)
}

fn check_allowed(
    image: &str,
    option: &'static str,
    allowed: &[String],
    internal: &[&str],
) -> Result<(), PodError> {
    if allowed.is_empty()
        || internal.contains(&image)
        || allowed.iter().any(|pattern| glob::matches(pattern, image))
    {
        Ok(())
    } else {
        Err(PodError::DisallowedImage {
            image: image.to_owned(),
            option,
            allowed: allowed.to_vec(),
        })
    }
}

/// GitLab's `%v` of a pull policy list: `[IfNotPresent Always]`, `[]` for the cluster default.
fn go_list(policies: &[String]) -> String {
    format!("[{}]", policies.join(" "))
}

/// The job's (or the config's) pull policies, filtered by `allowed_pull_policies`.
fn pull_policies(
    container: &str,
    job: &[String],
    config: &KubernetesConfig,
) -> Result<Vec<String>, PodError> {
    let (requested, source_name) = if !job.is_empty() {
        let mut out = Vec::new();
        for value in job {
            let policy = match value.as_str() {
                "always" => PullPolicy::Always,
                "if-not-present" => PullPolicy::IfNotPresent,
                "never" => PullPolicy::Never,
                _ => {
                    return Err(PodError::UnsupportedPullPolicy {
                        container: container.to_owned(),
                        value: value.clone(),
                    });
                }
            };
            out.push(policy.kubernetes_name().to_owned());
        }
        (out, "GitLab pipeline config")
    } else if !config.pull_policy.is_empty() {
        (
            config
                .pull_policy
                .iter()
                .map(|p| p.kubernetes_name().to_owned())
                .collect(),
            "Runner config",
        )
    } else {
        (vec![String::new()], "Runner config (default)")
    };
    if config.allowed_pull_policies.is_empty() {
        return Ok(requested);
    }
    let allowed: Vec<String> = config
        .allowed_pull_policies
        .iter()
        .map(|p| p.kubernetes_name().to_owned())
        .collect();
    let effective: Vec<String> = requested
        .iter()
        .filter(|p| allowed.contains(p))
        .cloned()
        .collect();
    if effective.is_empty() {
        return Err(PodError::PullPolicyNotAllowed {
            container: container.to_owned(),
            policies: go_list(&requested),
            source_name,
            allowed: go_list(&allowed),
            hint: if job.is_empty() && config.pull_policy.is_empty() {
                "; set [runners.kubernetes] pull_policy to one of them"
            } else {
                ""
            },
        });
    }
    Ok(effective)
}

/// The build container's env: the wrapper's directories, then the identity's `KEY=VALUE`
/// pairs (not secrets: role names and token paths), a later key replacing an earlier one.
fn build_env(paths: &Paths, identity: &[(String, String)]) -> Option<Vec<EnvVar>> {
    let fixed = [
        (wrapper::ENV_SCRIPTS_DIR, paths.scripts.as_str()),
        (wrapper::ENV_LOGS_DIR, paths.logs.as_str()),
    ];
    let mut out: Vec<EnvVar> = Vec::new();
    let own = identity
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .filter(|(k, _)| !fixed.iter().any(|(f, _)| f == k));
    for (key, value) in fixed.into_iter().chain(own) {
        let var = EnvVar {
            name: key.to_owned(),
            value: Some(value.to_owned()),
            value_from: None,
        };
        match out.iter_mut().find(|e| e.name == var.name) {
            Some(slot) => *slot = var,
            None => out.push(var),
        }
    }
    Some(out)
}

/// The `projected_token` volume: the pod's ServiceAccount token for `audience`.
fn cloud_token_volume(token: &oar_config::kubernetes::ProjectedToken) -> Volume {
    use k8s_openapi::api::core::v1::{
        ProjectedVolumeSource, ServiceAccountTokenProjection, VolumeProjection,
    };
    Volume {
        name: CLOUD_TOKEN_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o444),
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(token.audience.clone()),
                    expiration_seconds: token.expiration_seconds,
                    path: token.file_name().to_owned(),
                }),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    }
}

fn env(pairs: &[(&str, &str)]) -> Option<Vec<EnvVar>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| EnvVar {
                name: (*k).to_owned(),
                value: Some((*v).to_owned()),
                value_from: None,
            })
            .collect(),
    )
}

/// A service's env: the job's public variables (raw) and the service's own (expanded), `$`
/// escaped as `$$`, deduplicated with the last value winning in the first position.
fn service_env(vars: &Variables, service: &ServiceSpec) -> Option<Vec<EnvVar>> {
    let mut out: Vec<EnvVar> = Vec::new();
    let job = vars
        .deduped()
        .into_iter()
        .filter(|v| v.public && !v.masked && !v.file)
        .map(|v| (v.key.clone(), v.value.clone()));
    for (key, value) in job.chain(service.variables.iter().cloned()) {
        let var = EnvVar {
            name: key,
            value: Some(value.replace('$', "$$")),
            value_from: None,
        };
        match out.iter_mut().find(|e| e.name == var.name) {
            Some(slot) => *slot = var,
            None => out.push(var),
        }
    }
    (!out.is_empty()).then_some(out)
}

fn is_protected_label(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    let (prefix, _) = lower.split_once('/').unwrap_or((&lower, ""));
    let in_namespace = |ns: &str| prefix == ns || prefix.ends_with(&format!(".{ns}"));
    in_namespace("runner.gitlab.com") || in_namespace("oar.dev") || lower == LABEL_MANAGED_BY
}

fn labels(
    input: &PodInput<'_>,
    ov: &Overwrites,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, String>, PodError> {
    let vars = input.vars;
    let info = &input.job.job_info;
    let s = names::sanitize_label;
    let var = |k: &str| s(&vars.value_or_empty(k));
    let mut labels: BTreeMap<String, String> = [
        ("pod", s(input.pod_name)),
        ("job.runner.gitlab.com/pod", s(input.pod_name)),
        ("project.runner.gitlab.com/id", info.project_id.to_string()),
        ("project.runner.gitlab.com/name", s(&info.project_name)),
        (
            "project.runner.gitlab.com/namespace",
            var("CI_PROJECT_NAMESPACE"),
        ),
        (
            "project.runner.gitlab.com/namespace-id",
            var("CI_PROJECT_NAMESPACE_ID"),
        ),
        (
            "project.runner.gitlab.com/root-namespace",
            var("CI_PROJECT_ROOT_NAMESPACE"),
        ),
        ("manager.runner.gitlab.com/name", s(input.runner_name)),
        (
            "manager.runner.gitlab.com/id-short",
            s(input.runner_short_token),
        ),
        (LABEL_MANAGED_BY, MANAGED_BY.to_owned()),
        (LABEL_RUNNER, s(input.runner_short_token)),
        (LABEL_JOB_ID, input.job.id.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (key, value) in &ov.pod_labels {
        if is_protected_label(key) {
            warnings.push(format!(
                "pod label {key:?} ignored: labels of runner.gitlab.com, oar.dev and \
                 {LABEL_MANAGED_BY} are the runner's"
            ));
            continue;
        }
        names::check_key("pod label key (pod_labels, KUBERNETES_POD_LABELS_*)", key)?;
        labels.insert(key.clone(), s(&vars.expand(value)));
    }
    Ok(labels)
}

fn annotations(
    input: &PodInput<'_>,
    ov: &Overwrites,
) -> Result<BTreeMap<String, String>, PodError> {
    let job = input.job;
    let mut annotations: BTreeMap<String, String> = [
        ("job.runner.gitlab.com/id", job.id.to_string()),
        (
            "job.runner.gitlab.com/url",
            input.vars.value_or_empty("CI_JOB_URL"),
        ),
        ("job.runner.gitlab.com/sha", job.git_info.sha.clone()),
        (
            "job.runner.gitlab.com/before_sha",
            job.git_info.before_sha.clone(),
        ),
        ("job.runner.gitlab.com/ref", job.git_info.git_ref.clone()),
        ("job.runner.gitlab.com/name", job.job_info.name.clone()),
        ("job.runner.gitlab.com/timeout", go_duration(input.timeout)),
        (
            "project.runner.gitlab.com/id",
            job.job_info.project_id.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (key, value) in &ov.pod_annotations {
        names::check_key(
            "pod annotation key (pod_annotations, KUBERNETES_POD_ANNOTATIONS_*)",
            key,
        )?;
        annotations.insert(key.clone(), input.vars.expand(value));
    }
    Ok(annotations)
}

fn tolerations(map: &BTreeMap<String, String>) -> Result<Option<Vec<Toleration>>, PodError> {
    let mut out = Vec::new();
    for (key_value, effect) in map {
        if !matches!(
            effect.as_str(),
            "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute"
        ) {
            return Err(PodError::InvalidName {
                what: format!(
                    "toleration effect of {key_value:?} (node_tolerations, KUBERNETES_NODE_TOLERATIONS_*)"
                ),
                value: effect.clone(),
                rule: "one of NoSchedule, PreferNoSchedule, NoExecute, or empty",
            });
        }
        let effect = (!effect.is_empty()).then(|| effect.clone());
        out.push(match key_value.split_once('=') {
            Some((key, value)) => Toleration {
                key: Some(key.to_owned()),
                operator: Some("Equal".to_owned()),
                value: Some(value.to_owned()),
                effect,
                toleration_seconds: None,
            },
            None => Toleration {
                key: (!key_value.is_empty()).then(|| key_value.clone()),
                operator: Some("Exists".to_owned()),
                value: None,
                effect,
                toleration_seconds: None,
            },
        });
    }
    Ok((!out.is_empty()).then_some(out))
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(Default::default()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// Keys present in `patched` but lost by the PodSpec round trip (unknown fields).
fn dropped_fields(patched: &Value, round_trip: &Value, path: &str, out: &mut Vec<String>) {
    match (patched, round_trip) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => dropped_fields(value, other, &here, out),
                    None if !value.is_null() => out.push(here),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                dropped_fields(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn apply_patches(
    input: &PodInput<'_>,
    spec: PodSpec,
    warnings: &mut Vec<String>,
) -> Result<PodSpec, PodError> {
    let patches = &input.config.pod_spec;
    if patches.is_empty() {
        return Ok(spec);
    }
    if !flag(input, FF_ADVANCED_POD_SPEC, false) {
        warnings.push(format!(
            "[[runners.kubernetes.pod_spec]] ignored: {FF_ADVANCED_POD_SPEC} is off"
        ));
        return Ok(spec);
    }
    warnings.push(
        "pod_spec patches applied (an experimental GitLab Runner feature, issue #29659)".into(),
    );
    let mut doc = serde_json::to_value(&spec).map_err(|e| PodError::PatchedSpecInvalid {
        message: e.to_string(),
    })?;
    for p in patches {
        let patch_type = patch::patch_type_name(p.patch_type);
        let error = |message: String| PodError::Patch {
            name: p.name.clone(),
            patch_type,
            message,
        };
        let text = match &p.source {
            PatchSource::Inline(text) => text.clone(),
            PatchSource::File(path) => input.patch_files.get(path).cloned().ok_or_else(|| {
                error(format!(
                    "patch_path {path:?} was not read (oar_kube::patch::read_patch_files)"
                ))
            })?,
        };
        let value = patch::parse_document(&text).map_err(error)?;
        patch::apply(&mut doc, p.patch_type, &value).map_err(error)?;
    }
    let spec: PodSpec =
        serde_json::from_value(doc.clone()).map_err(|e| PodError::PatchedSpecInvalid {
            message: e.to_string(),
        })?;
    let round_trip = serde_json::to_value(&spec).map_err(|e| PodError::PatchedSpecInvalid {
        message: e.to_string(),
    })?;
    let mut dropped = Vec::new();
    dropped_fields(&doc, &round_trip, "spec", &mut dropped);
    for field in dropped {
        warnings.push(format!(
            "pod_spec patches: unknown field {field} ignored (not part of PodSpec)"
        ));
    }
    Ok(spec)
}

/// Builds the job pod. See the [module documentation](self).
pub fn build_pod(input: &PodInput<'_>) -> Result<BuiltPod, PodError> {
    let cfg = input.config;
    let vars = input.vars;
    let mut warnings = Vec::new();

    check_settings(input, &mut warnings)?;
    let requested = vars.value(OVERWRITE_VARIABLE).filter(|v| !v.is_empty());
    let guarded = requested
        .as_deref()
        .filter(|a| identity::is_guarded(cfg, a));
    let ov = overwrites::evaluate(cfg, vars, guarded.is_some(), &mut warnings)?;
    let overwritten =
        guarded.is_none() && requested.is_some() && cfg.service_account_overwrite_allowed.is_some();
    let identity = identity::decide(
        cfg,
        input.job,
        input.id_tokens,
        guarded,
        ov.service_account.clone(),
        overwritten,
    )?;
    // A job that brought an ID token which did not verify should hear why the rules that
    // need it passed it by, rather than only notice its account later.
    for (variable, check) in input.id_tokens {
        if let identity::IdTokenCheck::Refused(reason) = check {
            warnings.push(format!(
                "ID token {variable} refused ({reason}): identity rules that require it do not apply"
            ));
        }
    }

    let (namespace, namespace_source) = match identity.namespace.as_ref().or(ov.namespace.as_ref())
    {
        Some(ns) if identity.namespace.is_some() => (ns.clone(), "namespace (identity rule)"),
        Some(ns) if vars.value("KUBERNETES_NAMESPACE_OVERWRITE").as_deref() == Some(ns) => {
            (ns.clone(), "namespace (KUBERNETES_NAMESPACE_OVERWRITE)")
        }
        Some(ns) => (ns.clone(), "namespace ([runners.kubernetes] namespace)"),
        None if input.namespace_default.is_empty() => ("default".to_owned(), "namespace"),
        None => (input.namespace_default.to_owned(), "namespace"),
    };
    names::check_label(namespace_source, &namespace)?;
    if let Some(sa) = &identity.service_account {
        names::check_subdomain(
            "service account (service_account, KUBERNETES_SERVICE_ACCOUNT_OVERWRITE)",
            sa,
        )?;
    }
    names::check_subdomain("pod name", input.pod_name)?;
    let paths = paths(input)?;
    if let Some(token) = &identity.projected_token {
        for (what, path) in [
            ("builds_dir", paths.builds.as_str()),
            ("the scripts directory", paths.scripts.as_str()),
            ("the logs directory", paths.logs.as_str()),
        ] {
            if overlap(token.directory(), path) {
                return Err(PodError::OverlappingPaths {
                    first: "the projected_token directory",
                    first_path: token.directory().to_owned(),
                    second: what,
                    second_path: path.to_owned(),
                });
            }
        }
    }

    // Images.
    let config_image = cfg
        .image
        .as_deref()
        .map(|i| vars.expand(i))
        .filter(|i| !i.is_empty());
    let job_image = input
        .job
        .image
        .as_ref()
        .map(|i| vars.expand(&i.name))
        .filter(|i| !i.is_empty());
    let build_image = job_image
        .or_else(|| config_image.clone())
        .ok_or(PodError::NoImage)?;
    let helper_image = cfg
        .helper_image
        .as_deref()
        .map(|i| vars.expand(i))
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| input.default_helper_image.to_owned());
    let internal: Vec<&str> = config_image
        .iter()
        .map(String::as_str)
        .chain([helper_image.as_str()])
        .collect();
    check_allowed(
        &build_image,
        "allowed_images",
        &cfg.allowed_images,
        &internal,
    )?;
    let services = services::collect(cfg, input.job, vars);
    for s in &services {
        check_allowed(
            &s.image,
            "allowed_services",
            &cfg.allowed_services,
            &internal,
        )?;
    }

    // Pull policies: build and helper follow the job's image, as in GitLab Runner.
    let job_policies = input
        .job
        .image
        .as_ref()
        .map(|i| i.pull_policy.clone())
        .unwrap_or_default();
    let mut pull = BTreeMap::new();
    pull.insert(
        BUILD_CONTAINER.to_owned(),
        pull_policies(BUILD_CONTAINER, &job_policies, cfg)?,
    );
    pull.insert(
        HELPER_CONTAINER.to_owned(),
        pull_policies(HELPER_CONTAINER, &job_policies, cfg)?,
    );
    for s in &services {
        pull.insert(
            s.container.clone(),
            pull_policies(&s.container, &s.pull_policy, cfg)?,
        );
    }
    let first_policy = |container: &str| {
        pull.get(container)
            .and_then(|p| p.first())
            .filter(|p| !p.is_empty())
            .cloned()
    };

    // Volumes and mounts.
    let reserved = [
        BUILDS_VOLUME,
        SCRIPTS_VOLUME,
        LOGS_VOLUME,
        PAYLOAD_VOLUME,
        CLOUD_TOKEN_VOLUME,
    ];
    let user = volumes::user_volumes(&cfg.volumes, vars, &reserved)?;
    let builds_replaced = user
        .mounts
        .iter()
        .any(|m| m.mount_path.trim_end_matches('/') == paths.builds.trim_end_matches('/'));
    let mut pod_volumes = Vec::new();
    let mut builds_mounts = Vec::new();
    if !builds_replaced {
        pod_volumes.push(empty_dir(BUILDS_VOLUME));
        builds_mounts.push(mount(BUILDS_VOLUME, &paths.builds, false));
    }
    pod_volumes.push(empty_dir(SCRIPTS_VOLUME));
    pod_volumes.push(empty_dir(LOGS_VOLUME));
    pod_volumes.push(Volume {
        name: PAYLOAD_VOLUME.to_owned(),
        secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
            secret_name: Some(input.pod_name.to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    });
    if let Some(token) = &identity.projected_token {
        pod_volumes.push(cloud_token_volume(token));
    }
    pod_volumes.extend(user.volumes);
    let step_mounts: Vec<VolumeMount> = builds_mounts
        .iter()
        .cloned()
        .chain([
            mount(SCRIPTS_VOLUME, &paths.scripts, false),
            mount(LOGS_VOLUME, &paths.logs, false),
        ])
        .collect();
    let build_mounts: Vec<VolumeMount> = step_mounts
        .iter()
        .cloned()
        .chain(
            identity
                .projected_token
                .iter()
                .map(|t| mount(CLOUD_TOKEN_VOLUME, t.directory(), true)),
        )
        .chain(user.mounts.iter().cloned())
        .collect();
    let helper_mounts: Vec<VolumeMount> = step_mounts
        .iter()
        .cloned()
        .chain([mount(PAYLOAD_VOLUME, SECRET_MOUNT_PATH, true)])
        .chain(user.mounts.iter().cloned())
        .collect();
    let service_mounts: Vec<VolumeMount> = builds_mounts
        .iter()
        .cloned()
        .chain(user.mounts.iter().cloned())
        .collect();

    // Containers.
    let lifecycle = convert::lifecycle(cfg.container_lifecycle.as_ref());
    let (build_command, build_args) = if flag(input, FF_HONOR_ENTRYPOINT, false) {
        let entrypoint = input
            .job
            .image
            .as_ref()
            .map(|i| i.entrypoint.clone())
            .filter(|e| !e.is_empty());
        (entrypoint, Some(wrapper::command()))
    } else {
        (Some(wrapper::command()), None)
    };
    let build = Container {
        name: BUILD_CONTAINER.to_owned(),
        image: Some(build_image),
        image_pull_policy: first_policy(BUILD_CONTAINER),
        command: build_command,
        args: build_args,
        env: build_env(&paths, &identity.environment),
        resources: convert::resources(&ov.build),
        security_context: Some(convert::container_security_context(
            cfg,
            cfg.build_container_security_context.as_ref(),
        )),
        volume_mounts: Some(build_mounts),
        lifecycle: lifecycle.clone(),
        ..Default::default()
    };
    let helper = Container {
        name: HELPER_CONTAINER.to_owned(),
        image: Some(helper_image),
        image_pull_policy: first_policy(HELPER_CONTAINER),
        command: Some(helper_command()),
        env: env(&[
            (wrapper::ENV_SCRIPTS_DIR, &paths.scripts),
            (wrapper::ENV_LOGS_DIR, &paths.logs),
            (ENV_BUILDS_DIR, &paths.builds),
            (ENV_PROJECT_DIR, input.project_dir),
        ]),
        resources: convert::resources(&ov.helper),
        security_context: Some(convert::container_security_context(
            cfg,
            cfg.helper_container_security_context.as_ref(),
        )),
        volume_mounts: Some(helper_mounts),
        lifecycle: lifecycle.clone(),
        termination_message_policy: Some("File".to_owned()),
        ..Default::default()
    };
    let mut containers = vec![build, helper];
    for s in &services {
        let own = |key: &str| s.variable(key);
        let resources = overwrites::service_resources(cfg, &ov.service, &own, &mut warnings)?;
        containers.push(Container {
            name: s.container.clone(),
            image: Some(s.image.clone()),
            image_pull_policy: first_policy(&s.container),
            command: (!s.entrypoint.is_empty()).then(|| s.entrypoint.clone()),
            args: (!s.command.is_empty()).then(|| s.command.clone()),
            env: service_env(vars, s),
            resources: convert::resources(&resources),
            security_context: Some(convert::container_security_context(
                cfg,
                cfg.service_container_security_context.as_ref(),
            )),
            volume_mounts: (!service_mounts.is_empty()).then(|| service_mounts.clone()),
            lifecycle: lifecycle.clone(),
            ..Default::default()
        });
    }

    // Metadata.
    let labels = labels(input, &ov, &mut warnings)?;
    let mut annotations = annotations(input, &ov)?;
    if let Some(rule) = identity.rule.and_then(|i| cfg.identity.get(i)) {
        // Which rule gave the pod its account, for whoever reviews the pods.
        annotations.insert(ANNOTATION_IDENTITY_RULE.to_owned(), rule.path.to_string());
    }
    for (key, value) in &ov.node_selector {
        names::check_key(
            "node selector key (node_selector, KUBERNETES_NODE_SELECTOR_*)",
            key,
        )?;
        names::check_label_value(format!("node selector value of {key:?}"), value)?;
    }

    // Registry credentials.
    let auths = registry::collect(input.job, vars, &mut warnings);
    let registry_secret = if auths.is_empty() {
        None
    } else if cfg.use_service_account_image_pull_secrets {
        warnings.push(
            "the job's registry credentials are not used: use_service_account_image_pull_secrets \
             is set"
                .into(),
        );
        None
    } else {
        Some(Secret {
            metadata: ObjectMeta {
                name: Some(registry_secret_name(input.pod_name)),
                namespace: Some(namespace.clone()),
                labels: Some(labels.clone()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/dockerconfigjson".to_owned()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_owned(),
                ByteString(registry::docker_config_json(&auths)),
            )])),
            ..Default::default()
        })
    };
    let image_pull_secrets: Vec<LocalObjectReference> =
        if cfg.use_service_account_image_pull_secrets {
            Vec::new()
        } else {
            cfg.image_pull_secrets
                .iter()
                .cloned()
                .chain(
                    registry_secret
                        .as_ref()
                        .and_then(|s| s.metadata.name.clone()),
                )
                .map(|name| LocalObjectReference { name })
                .collect()
        };

    let active_deadline_seconds = if !flag(input, FF_ACTIVE_DEADLINE, true) {
        None
    } else if input.timeout.is_zero() {
        warnings.push("no job timeout: activeDeadlineSeconds is not set".into());
        None
    } else {
        i64::try_from((input.timeout + ACTIVE_DEADLINE_MARGIN).as_secs()).ok()
    };

    let spec = PodSpec {
        active_deadline_seconds,
        affinity: cfg.affinity.as_ref().map(convert::affinity),
        // A rule's account is there for the job's own use: its token must reach the build
        // container, whatever the runner-wide setting.
        automount_service_account_token: if identity.rule.is_some() {
            Some(true)
        } else {
            cfg.automount_service_account_token
        },
        containers,
        dns_config: cfg.dns_config.as_ref().and_then(convert::dns_config),
        dns_policy: Some(convert::dns_policy(cfg.dns_policy)),
        host_aliases: services::host_aliases(cfg, &services)?,
        image_pull_secrets: (!image_pull_secrets.is_empty()).then_some(image_pull_secrets),
        node_selector: (!ov.node_selector.is_empty()).then(|| ov.node_selector.clone()),
        priority_class_name: cfg.priority_class_name.clone(),
        resources: convert::resources(&ov.pod),
        restart_policy: Some("Never".to_owned()),
        runtime_class_name: cfg.runtime_class_name.clone(),
        scheduler_name: cfg.scheduler_name.clone(),
        security_context: convert::pod_security_context(cfg.pod_security_context.as_ref()),
        service_account_name: identity.service_account.clone(),
        termination_grace_period_seconds: cfg
            .pod_termination_grace_period_seconds
            .and_then(|s| i64::try_from(s).ok()),
        tolerations: tolerations(&ov.node_tolerations)?,
        volumes: Some(pod_volumes),
        ..Default::default()
    };
    let spec = apply_patches(input, spec, &mut warnings)?;

    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(input.pod_name.to_owned()),
            namespace: Some(namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    };
    Ok(BuiltPod {
        pod,
        namespace,
        registry_secret,
        warnings,
        pull_policies: pull,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(7200)), "2h0m0s");
        assert_eq!(go_duration(Duration::from_secs(5430)), "1h30m30s");
        assert_eq!(go_duration(Duration::from_secs(600)), "10m0s");
        assert_eq!(go_duration(Duration::from_secs(45)), "45s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn protected_labels() {
        for key in [
            "runner.gitlab.com/x",
            "job.runner.gitlab.com/pod",
            "Project.Runner.GitLab.com/id",
            "oar.dev/runner",
            "x.oar.dev/y",
            "app.kubernetes.io/managed-by",
        ] {
            assert!(is_protected_label(key), "{key}");
        }
        for key in [
            "team",
            "example.com/owner",
            "notrunner.gitlab.com/x",
            "oar.dev.example/x",
        ] {
            assert!(!is_protected_label(key), "{key}");
        }
    }

    #[test]
    fn path_overlaps() {
        assert!(overlap("/builds", "/builds/"));
        assert!(overlap("/oar", "/oar/scripts"));
        assert!(overlap("/", "/oar/scripts"));
        assert!(!overlap("/oar/scripts", "/oar/scripts2"));
        assert!(!overlap("/builds", "/oar/logs"));
    }

    #[test]
    fn selector() {
        assert_eq!(
            runner_selector("abcdefghi"),
            "app.kubernetes.io/managed-by=oar,oar.dev/runner=abcdefghi"
        );
    }
}
