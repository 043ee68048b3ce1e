//! `[runners.kubernetes]`: every key of GitLab Runner's Kubernetes executor, parsed and
//! checked. Building pods from it is `oar-kube`'s job.

mod affinity;
mod pod;
mod resources;
mod security;
mod volumes;
mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;
use secrecy::{ExposeSecret, SecretString};

pub use affinity::{
    Affinity, LabelSelector, NodeAffinity, NodeSelector, NodeSelectorTerm, PodAffinity,
    PodAffinityTerm, PreferredSchedulingTerm, SelectorRequirement, WeightedPodAffinityTerm,
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
use crate::validate::{
    Ctx, Issue, go_duration, non_empty, non_negative, one_of, quantity, regex_gate, seconds_or,
};
use crate::warning::WarningKind;

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

    pub(crate) fn from_wire(
        mut w: KubernetesWire,
        p: &KeyPath,
        ctx: &mut Ctx,
    ) -> Result<Self, Issue> {
        let (build_resources, helper_resources, service_resources, pod_resources) =
            resources::from_wire(&mut w, p)?;
        if w.termination_grace_period_seconds.is_some() {
            let key = p.key("terminationGracePeriodSeconds");
            ctx.warn(
                &key,
                WarningKind::Deprecated,
                format!(
                    "{key} ignored: it is deprecated; use pod_termination_grace_period_seconds \
                     and cleanup_grace_period_seconds"
                ),
            );
        }
        let retry_limits = w
            .retry_limits
            .into_iter()
            .map(|(k, v)| {
                let n = non_negative::<u32>(&p.key("retry_limits").key(&k), Some(v))?;
                Ok((k, n.unwrap_or(0)))
            })
            .collect::<Result<_, Issue>>()?;
        let retry_backoff_ms =
            non_negative::<u64>(&p.key("retry_backoff_max"), w.retry_backoff_max)?.unwrap_or(2000);
        let dns_policy = dns_policy(p, w.dns_policy.as_deref(), ctx);
        pod::check_host_aliases(&w.host_aliases, &p.key("host_aliases"))?;
        Ok(Self {
            host: non_empty(w.host),
            context: non_empty(w.context),
            cert_file: non_empty(w.cert_file).map(PathBuf::from),
            key_file: non_empty(w.key_file).map(PathBuf::from),
            ca_file: non_empty(w.ca_file).map(PathBuf::from),
            bearer_token: w.bearer_token.filter(|t| !t.expose_secret().is_empty()),
            bearer_token_overwrite_allowed: w.bearer_token_overwrite_allowed.unwrap_or(false),
            retry_limit: non_negative(&p.key("retry_limit"), w.retry_limit)?.unwrap_or(5),
            retry_backoff_max: Duration::from_millis(retry_backoff_ms.max(500)),
            retry_limits,
            namespace: non_empty(w.namespace),
            namespace_overwrite_allowed: regex_gate(
                &p.key("namespace_overwrite_allowed"),
                w.namespace_overwrite_allowed,
            )?,
            namespace_per_job: w.namespace_per_job.unwrap_or(false),
            service_account: non_empty(w.service_account),
            service_account_overwrite_allowed: regex_gate(
                &p.key("service_account_overwrite_allowed"),
                w.service_account_overwrite_allowed,
            )?,
            automount_service_account_token: w.automount_service_account_token,
            image_pull_secrets: w.image_pull_secrets,
            use_service_account_image_pull_secrets: w
                .use_service_account_image_pull_secrets
                .unwrap_or(false),
            resource_availability_check_max_attempts: non_negative(
                &p.key("resource_availability_check_max_attempts"),
                w.resource_availability_check_max_attempts,
            )?
            .unwrap_or(0),
            image: non_empty(w.image),
            helper_image: non_empty(w.helper_image),
            helper_image_flavor: non_empty(w.helper_image_flavor),
            helper_image_autoset_arch_and_os: w.helper_image_autoset_arch_and_os.unwrap_or(false),
            pull_policy: pull_policies(
                &p.key("pull_policy"),
                w.pull_policy.map(|p| p.0).unwrap_or_default(),
            )?,
            allowed_pull_policies: pull_policies(
                &p.key("allowed_pull_policies"),
                w.allowed_pull_policies,
            )?,
            allowed_images: w.allowed_images,
            allowed_services: w.allowed_services,
            allowed_users: w.allowed_users,
            allowed_groups: w.allowed_groups,
            services: w
                .services
                .into_iter()
                .enumerate()
                .map(|(i, s)| Service::from_wire(s, &p.key("services").index(i)))
                .collect::<Result<_, _>>()?,
            build_resources,
            helper_resources,
            service_resources,
            pod_resources,
            node_selector: w.node_selector,
            node_selector_overwrite_allowed: regex_gate(
                &p.key("node_selector_overwrite_allowed"),
                w.node_selector_overwrite_allowed,
            )?,
            node_tolerations: w.node_tolerations,
            node_tolerations_overwrite_allowed: regex_gate(
                &p.key("node_tolerations_overwrite_allowed"),
                w.node_tolerations_overwrite_allowed,
            )?,
            affinity: w.affinity.filter(|a| *a != Affinity::default()),
            pod_labels: w.pod_labels,
            pod_labels_overwrite_allowed: regex_gate(
                &p.key("pod_labels_overwrite_allowed"),
                w.pod_labels_overwrite_allowed,
            )?,
            pod_annotations: w.pod_annotations,
            pod_annotations_overwrite_allowed: regex_gate(
                &p.key("pod_annotations_overwrite_allowed"),
                w.pod_annotations_overwrite_allowed,
            )?,
            scheduler_name: non_empty(w.scheduler_name),
            priority_class_name: non_empty(w.priority_class_name),
            runtime_class_name: non_empty(w.runtime_class_name),
            dns_policy,
            dns_config: w.dns_config.filter(|d| !d.is_empty()),
            host_aliases: w.host_aliases,
            privileged: w.privileged,
            allow_privilege_escalation: w.allow_privilege_escalation,
            cap_add: w.cap_add,
            cap_drop: w.cap_drop,
            pod_security_context: PodSecurityContext::from_wire(
                w.pod_security_context,
                &p.key("pod_security_context"),
                ctx,
            )?,
            build_container_security_context: ContainerSecurityContext::from_wire(
                w.build_container_security_context,
                &p.key("build_container_security_context"),
                ctx,
            )?,
            helper_container_security_context: ContainerSecurityContext::from_wire(
                w.helper_container_security_context,
                &p.key("helper_container_security_context"),
                ctx,
            )?,
            service_container_security_context: ContainerSecurityContext::from_wire(
                w.service_container_security_context,
                &p.key("service_container_security_context"),
                ctx,
            )?,
            init_permissions_container_security_context: ContainerSecurityContext::from_wire(
                w.init_permissions_container_security_context,
                &p.key("init_permissions_container_security_context"),
                ctx,
            )?,
            container_lifecycle: w
                .container_lifecycle
                .filter(|l| *l != ContainerLifecycle::default()),
            volumes: Volumes::from_wire(w.volumes, &p.key("volumes"), ctx)?,
            pod_spec: w
                .pod_spec
                .into_iter()
                .enumerate()
                .map(|(i, s)| PodSpecPatch::from_wire(s, &p.key("pod_spec").index(i)))
                .collect::<Result<_, _>>()?,
            poll_interval: seconds_or(
                &p.key("poll_interval"),
                w.poll_interval,
                Duration::from_secs(3),
            )?,
            poll_timeout: seconds_or(
                &p.key("poll_timeout"),
                w.poll_timeout,
                Duration::from_secs(180),
            )?,
            pod_termination_grace_period_seconds: non_negative(
                &p.key("pod_termination_grace_period_seconds"),
                w.pod_termination_grace_period_seconds,
            )?,
            cleanup_grace_period_seconds: non_negative(
                &p.key("cleanup_grace_period_seconds"),
                w.cleanup_grace_period_seconds,
            )?,
            cleanup_resources_timeout: w
                .cleanup_resources_timeout
                .map(|d| go_duration(&p.key("cleanup_resources_timeout"), &d))
                .transpose()?
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(300)),
            logs_base_dir: base_dir(w.logs_base_dir),
            scripts_base_dir: base_dir(w.scripts_base_dir),
            print_pod_warning_events: w.print_pod_warning_events.unwrap_or(true),
            pod_disruption_budget: w.pod_disruption_budget.unwrap_or(false),
            suspend_pvc_size: quantity(&p.key("suspend_pvc_size"), w.suspend_pvc_size)?,
            suspend_pvc_storage_class: non_empty(w.suspend_pvc_storage_class),
        })
    }
}

fn pull_policies(path: &KeyPath, values: Vec<String>) -> Result<Vec<PullPolicy>, Issue> {
    let choices = [
        ("always", PullPolicy::Always),
        ("if-not-present", PullPolicy::IfNotPresent),
        ("never", PullPolicy::Never),
    ];
    let mut out = Vec::new();
    for (i, value) in values.iter().enumerate() {
        // A single string is reported at the key itself, a list element at its index.
        let at = if values.len() == 1 {
            path.clone()
        } else {
            path.index(i)
        };
        if let Some(policy) = one_of(&at, Some(value), &choices, false)? {
            out.push(policy);
        }
    }
    Ok(out)
}

/// Invalid values only warn: GitLab Runner logs them and leaves the field empty.
fn dns_policy(p: &KeyPath, value: Option<&str>, ctx: &mut Ctx) -> Option<DnsPolicy> {
    let key = p.key("dns_policy");
    let choices = [
        ("none", DnsPolicy::None),
        ("default", DnsPolicy::Default),
        ("cluster-first", DnsPolicy::ClusterFirst),
        (
            "cluster-first-with-host-net",
            DnsPolicy::ClusterFirstWithHostNet,
        ),
    ];
    match one_of(&key, value, &choices, false) {
        Ok(policy) => policy,
        Err(_) => {
            ctx.warn(
                &key,
                WarningKind::IgnoredValue,
                format!(
                    "{key} {:?} ignored: expected none, default, cluster-first or \
                     cluster-first-with-host-net",
                    value.unwrap_or_default()
                ),
            );
            None
        }
    }
}

fn base_dir(value: Option<String>) -> Option<String> {
    non_empty(value.map(|v| v.trim_end_matches('/').to_owned()))
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
