//! `[runners.kubernetes]`: every key of GitLab Runner's Kubernetes executor, parsed and
//! checked. Building pods from it is `oar-kube`'s job.

mod affinity;
mod convert;
mod identity;
mod pod;
mod resources;
mod security;
mod volumes;
mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;
use secrecy::SecretString;

pub use affinity::{
    Affinity, LabelSelector, NodeAffinity, NodeSelector, NodeSelectorTerm, PodAffinity,
    PodAffinityTerm, PreferredSchedulingTerm, SelectorRequirement, WeightedPodAffinityTerm,
};
pub use identity::{
    DEFAULT_ID_TOKEN_AUDIENCE, IdTokenSettings, IdentityRule, ProjectedToken, RefType,
};
pub use pod::{
    ContainerLifecycle, DnsConfig, DnsOption, ExecAction, HostAlias, HttpGetAction, HttpHeader,
    LifecycleHandler, PatchSource, PatchType, PodSpecPatch, Service, TcpSocketAction,
};
pub use resources::{ContainerResources, PodResources, ResourceSpec};
pub use security::{ContainerSecurityContext, PodSecurityContext, ProcMount, Profile, ProfileType};
pub use volumes::{
    CsiVolume, EmptyDirVolume, HostPathVolume, ItemsVolume, MountPropagation, NfsVolume, PvcVolume,
    VolumeMount, Volumes,
};
pub(crate) use wire::KubernetesWire;

use crate::path::KeyPath;
use crate::quantity::Quantity;
use crate::validate::Ctx;

/// An image pull policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PullPolicy {
    /// `always` (Kubernetes `Always`).
    Always,
    /// `if-not-present` (Kubernetes `IfNotPresent`).
    IfNotPresent,
    /// `never` (Kubernetes `Never`).
    Never,
}

impl PullPolicy {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "always",
            PullPolicy::IfNotPresent => "if-not-present",
            PullPolicy::Never => "never",
        }
    }

    /// The Kubernetes spelling.
    pub fn kubernetes_name(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// `dns_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsPolicy {
    /// `none` (Kubernetes `None`).
    None,
    /// `default` (Kubernetes `Default`).
    Default,
    /// `cluster-first` (Kubernetes `ClusterFirst`, the default when unset).
    ClusterFirst,
    /// `cluster-first-with-host-net` (Kubernetes `ClusterFirstWithHostNet`).
    ClusterFirstWithHostNet,
}

/// The `[runners.kubernetes]` table, validated. Defaults are GitLab Runner's.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    /// `host`: API server URL. Default: in-cluster config, then kubeconfig.
    pub host: Option<String>,
    /// `context`: kubeconfig context, used when `host` is unset.
    pub context: Option<String>,
    /// `cert_file`: client certificate (cert auth needs all three files).
    pub cert_file: Option<PathBuf>,
    /// `key_file`: client key.
    pub key_file: Option<PathBuf>,
    /// `ca_file`: API server CA.
    pub ca_file: Option<PathBuf>,
    /// `bearer_token`: token for API calls. Redacted in `Debug`.
    pub bearer_token: Option<SecretString>,
    /// `bearer_token_overwrite_allowed`: allow `KUBERNETES_BEARER_TOKEN`. Default `false`.
    pub bearer_token_overwrite_allowed: bool,
    /// `retry_limit`: API retries for network-class errors. Default 5.
    pub retry_limit: u32,
    /// `retry_backoff_max` (milliseconds in the file): backoff ceiling. Default 2000 ms;
    /// values below 500 ms are raised to 500 ms.
    pub retry_backoff_max: Duration,
    /// `retry_limits`: per error-substring retry counts. Default empty.
    pub retry_limits: BTreeMap<String, u32>,

    /// `namespace`. Default: unset, which means `default`.
    pub namespace: Option<String>,
    /// `namespace_overwrite_allowed`: gate for `KUBERNETES_NAMESPACE_OVERWRITE`. Default:
    /// unset (overwrite disabled).
    pub namespace_overwrite_allowed: Option<Regex>,
    /// `namespace_per_job`: a `ci-job-<id>` namespace per job. Default `false`.
    pub namespace_per_job: bool,
    /// `service_account`. Default: the namespace default.
    pub service_account: Option<String>,
    /// `service_account_overwrite_allowed`: gate for `KUBERNETES_SERVICE_ACCOUNT_OVERWRITE`.
    pub service_account_overwrite_allowed: Option<Regex>,
    /// `automount_service_account_token`. Default: unset (Kubernetes default).
    pub automount_service_account_token: Option<bool>,
    /// `image_pull_secrets`.
    pub image_pull_secrets: Vec<String>,
    /// `use_service_account_image_pull_secrets`: omit every pull secret. Default `false`.
    pub use_service_account_image_pull_secrets: bool,
    /// `resource_availability_check_max_attempts`. Default 0 (no check).
    pub resource_availability_check_max_attempts: u32,

    /// `image`: default build image. Default: unset.
    pub image: Option<String>,
    /// `helper_image`: override of the derived helper image.
    pub helper_image: Option<String>,
    /// `helper_image_flavor`. Default: unset (`alpine`).
    pub helper_image_flavor: Option<String>,
    /// `helper_image_autoset_arch_and_os`. Default `false`.
    pub helper_image_autoset_arch_and_os: bool,
    /// `pull_policy` (a string or an ordered fallback list). Default empty: cluster default.
    pub pull_policy: Vec<PullPolicy>,
    /// `allowed_pull_policies`. Default empty: no restriction.
    pub allowed_pull_policies: Vec<PullPolicy>,
    /// `allowed_images` (globs). Default empty: all allowed.
    pub allowed_images: Vec<String>,
    /// `allowed_services` (globs). Default empty: all allowed.
    pub allowed_services: Vec<String>,
    /// `allowed_users`: job-provided UIDs allowed. Default empty: all.
    pub allowed_users: Vec<String>,
    /// `allowed_groups`: job-provided GIDs allowed. Default empty: all.
    pub allowed_groups: Vec<String>,
    /// `[[runners.kubernetes.services]]`.
    pub services: Vec<Service>,

    /// Build container resources (`cpu_*`, `memory_*`, `ephemeral_storage_*`).
    pub build_resources: ContainerResources,
    /// Helper container resources (`helper_*`).
    pub helper_resources: ContainerResources,
    /// Service container resources (`service_*`).
    pub service_resources: ContainerResources,
    /// Pod-level resources (`pod_cpu_*`, `pod_memory_*`).
    pub pod_resources: PodResources,

    /// `node_selector`.
    pub node_selector: BTreeMap<String, String>,
    /// `node_selector_overwrite_allowed`: gate for `KUBERNETES_NODE_SELECTOR_*`.
    pub node_selector_overwrite_allowed: Option<Regex>,
    /// `node_tolerations`: `"key[=value]"` → effect.
    pub node_tolerations: BTreeMap<String, String>,
    /// `node_tolerations_overwrite_allowed`: gate for `KUBERNETES_NODE_TOLERATIONS_*`.
    pub node_tolerations_overwrite_allowed: Option<Regex>,
    /// `affinity`.
    pub affinity: Option<Affinity>,
    /// `pod_labels` (values variable-expanded by the executor).
    pub pod_labels: BTreeMap<String, String>,
    /// `pod_labels_overwrite_allowed`: gate for `KUBERNETES_POD_LABELS_*`.
    pub pod_labels_overwrite_allowed: Option<Regex>,
    /// `pod_annotations` (values variable-expanded by the executor).
    pub pod_annotations: BTreeMap<String, String>,
    /// `pod_annotations_overwrite_allowed`: gate for `KUBERNETES_POD_ANNOTATIONS_*`.
    pub pod_annotations_overwrite_allowed: Option<Regex>,
    /// `scheduler_name`.
    pub scheduler_name: Option<String>,
    /// `priority_class_name`.
    pub priority_class_name: Option<String>,
    /// `runtime_class_name`.
    pub runtime_class_name: Option<String>,
    /// `dns_policy`. Default: unset (ClusterFirst). Invalid values are ignored with a warning.
    pub dns_policy: Option<DnsPolicy>,
    /// `dns_config`; `None` when empty.
    pub dns_config: Option<DnsConfig>,
    /// `[[runners.kubernetes.host_aliases]]`.
    pub host_aliases: Vec<HostAlias>,
    /// `privileged`: default for every container. Default: unset.
    pub privileged: Option<bool>,
    /// `allow_privilege_escalation`: default for every container. Default: unset.
    pub allow_privilege_escalation: Option<bool>,
    /// `cap_add` (without the `CAP_` prefix).
    pub cap_add: Vec<String>,
    /// `cap_drop` (`NET_RAW` is dropped implicitly unless added).
    pub cap_drop: Vec<String>,
    /// `pod_security_context`.
    pub pod_security_context: Option<PodSecurityContext>,
    /// `build_container_security_context`.
    pub build_container_security_context: Option<ContainerSecurityContext>,
    /// `helper_container_security_context`.
    pub helper_container_security_context: Option<ContainerSecurityContext>,
    /// `service_container_security_context`.
    pub service_container_security_context: Option<ContainerSecurityContext>,
    /// `init_permissions_container_security_context`.
    pub init_permissions_container_security_context: Option<ContainerSecurityContext>,
    /// `container_lifecycle`.
    pub container_lifecycle: Option<ContainerLifecycle>,
    /// `[runners.kubernetes.volumes]`.
    pub volumes: Volumes,
    /// `[[runners.kubernetes.pod_spec]]` patches, in order.
    pub pod_spec: Vec<PodSpecPatch>,

    /// `poll_interval` (seconds). Default 3 (also for 0).
    pub poll_interval: Duration,
    /// `poll_timeout` (seconds): how long a pod may take to start. Default 180 (also for 0).
    pub poll_timeout: Duration,
    /// `pod_termination_grace_period_seconds`. Default: unset (Kubernetes' 30 s).
    pub pod_termination_grace_period_seconds: Option<u64>,
    /// `cleanup_grace_period_seconds`. Default: unset (the pod's grace period).
    pub cleanup_grace_period_seconds: Option<u64>,
    /// `cleanup_resources_timeout`. Default 5m (also for 0).
    pub cleanup_resources_timeout: Duration,
    /// `logs_base_dir` (trailing `/` removed). Default: unset (`/`).
    pub logs_base_dir: Option<String>,
    /// `scripts_base_dir` (trailing `/` removed). Default: unset (`/`).
    pub scripts_base_dir: Option<String>,
    /// `print_pod_warning_events`. Default `true`.
    pub print_pod_warning_events: bool,
    /// `pod_disruption_budget`: create a PDB per job pod. Default `false`.
    pub pod_disruption_budget: bool,
    /// `suspend_pvc_size` (suspendable environments; not used by Oar). Default: unset (20Gi).
    pub suspend_pvc_size: Option<Quantity>,
    /// `suspend_pvc_storage_class` (suspendable environments; not used by Oar).
    pub suspend_pvc_storage_class: Option<String>,

    /// `[[runners.kubernetes.identity]]` (Oar's own): which jobs run as which ServiceAccount,
    /// checked in order, first match wins. An account named by a rule is *guarded*: a job
    /// asking for it (`KUBERNETES_SERVICE_ACCOUNT_OVERWRITE`) must match one of its rules.
    pub identity: Vec<IdentityRule>,
    /// `[runners.kubernetes.id_token]` (Oar's own): how ID tokens of `require_id_token`
    /// rules are verified.
    pub id_token: IdTokenSettings,
    /// `[runners.kubernetes.projected_token]` (Oar's own): a ServiceAccount token with its
    /// own audience in every build container (a rule's own replaces it). Default: none.
    pub projected_token: Option<ProjectedToken>,
}

/// GitLab Runner's defaults: the config of an empty `[runners.kubernetes]` table.
impl Default for KubernetesConfig {
    fn default() -> Self {
        // Not input data: an empty table has nothing that could fail validation.
        #[allow(clippy::expect_used)]
        Self::from_wire(
            KubernetesWire::default(),
            &KeyPath::root(),
            &mut Ctx::default(),
        )
        .expect("an empty [runners.kubernetes] table is valid")
    }
}

impl KubernetesConfig {
    /// `namespace`, or `default` when unset.
    pub fn effective_namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_gitlab_runners() {
        let config = KubernetesConfig::default();
        assert_eq!(config.effective_namespace(), "default");
        assert_eq!(config.poll_interval, Duration::from_secs(3));
        assert_eq!(config.poll_timeout, Duration::from_secs(180));
        assert_eq!(config.retry_limit, 5);
        assert!(config.print_pod_warning_events);
        assert!(config.volumes.mounts().next().is_none());
    }
}
