//! The `[runners.kubernetes]` table as written, with GitLab Runner's key names.
//!
//! Everything is optional here; [`super::KubernetesConfig::from_wire`] applies defaults and
//! checks values. Nested shapes that need no checking (affinity, lifecycle hooks, DNS config)
//! are the public domain types themselves.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

use super::affinity::Affinity;
use super::identity::{IdTokenWire, IdentityRuleWire, ProjectedTokenWire};
use super::pod::{ContainerLifecycle, DnsConfig, HostAlias};
use super::security::{ContainerSecurityContextWire, PodSecurityContextWire};
use super::volumes::VolumesWire;
use crate::serde_util::{OneOrMany, RawDuration};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct KubernetesWire {
    // Connection and auth.
    pub(crate) host: Option<String>,
    pub(crate) context: Option<String>,
    pub(crate) cert_file: Option<String>,
    pub(crate) key_file: Option<String>,
    pub(crate) ca_file: Option<String>,
    pub(crate) bearer_token: Option<SecretString>,
    pub(crate) bearer_token_overwrite_allowed: Option<bool>,
    pub(crate) retry_limit: Option<i64>,
    pub(crate) retry_backoff_max: Option<i64>,
    pub(crate) retry_limits: BTreeMap<String, i64>,

    // Namespace and identity.
    pub(crate) namespace: Option<String>,
    pub(crate) namespace_overwrite_allowed: Option<String>,
    pub(crate) namespace_per_job: Option<bool>,
    pub(crate) service_account: Option<String>,
    pub(crate) service_account_overwrite_allowed: Option<String>,
    pub(crate) automount_service_account_token: Option<bool>,
    pub(crate) image_pull_secrets: Vec<String>,
    pub(crate) use_service_account_image_pull_secrets: Option<bool>,
    pub(crate) resource_availability_check_max_attempts: Option<i64>,

    // Images and policy.
    pub(crate) image: Option<String>,
    pub(crate) helper_image: Option<String>,
    pub(crate) helper_image_flavor: Option<String>,
    pub(crate) helper_image_autoset_arch_and_os: Option<bool>,
    pub(crate) pull_policy: Option<OneOrMany>,
    pub(crate) allowed_pull_policies: Vec<String>,
    pub(crate) allowed_images: Vec<String>,
    pub(crate) allowed_services: Vec<String>,
    pub(crate) allowed_users: Vec<String>,
    pub(crate) allowed_groups: Vec<String>,
    pub(crate) services: Vec<ServiceWire>,

    // Resources: build container.
    pub(crate) cpu_limit: Option<String>,
    pub(crate) cpu_limit_overwrite_max_allowed: Option<String>,
    pub(crate) cpu_request: Option<String>,
    pub(crate) cpu_request_overwrite_max_allowed: Option<String>,
    pub(crate) memory_limit: Option<String>,
    pub(crate) memory_limit_overwrite_max_allowed: Option<String>,
    pub(crate) memory_request: Option<String>,
    pub(crate) memory_request_overwrite_max_allowed: Option<String>,
    pub(crate) ephemeral_storage_limit: Option<String>,
    pub(crate) ephemeral_storage_limit_overwrite_max_allowed: Option<String>,
    pub(crate) ephemeral_storage_request: Option<String>,
    pub(crate) ephemeral_storage_request_overwrite_max_allowed: Option<String>,
    // Resources: helper container.
    pub(crate) helper_cpu_limit: Option<String>,
    pub(crate) helper_cpu_limit_overwrite_max_allowed: Option<String>,
    pub(crate) helper_cpu_request: Option<String>,
    pub(crate) helper_cpu_request_overwrite_max_allowed: Option<String>,
    pub(crate) helper_memory_limit: Option<String>,
    pub(crate) helper_memory_limit_overwrite_max_allowed: Option<String>,
    pub(crate) helper_memory_request: Option<String>,
    pub(crate) helper_memory_request_overwrite_max_allowed: Option<String>,
    pub(crate) helper_ephemeral_storage_limit: Option<String>,
    pub(crate) helper_ephemeral_storage_limit_overwrite_max_allowed: Option<String>,
    pub(crate) helper_ephemeral_storage_request: Option<String>,
    pub(crate) helper_ephemeral_storage_request_overwrite_max_allowed: Option<String>,
    // Resources: service containers.
    pub(crate) service_cpu_limit: Option<String>,
    pub(crate) service_cpu_limit_overwrite_max_allowed: Option<String>,
    pub(crate) service_cpu_request: Option<String>,
    pub(crate) service_cpu_request_overwrite_max_allowed: Option<String>,
    pub(crate) service_memory_limit: Option<String>,
    pub(crate) service_memory_limit_overwrite_max_allowed: Option<String>,
    pub(crate) service_memory_request: Option<String>,
    pub(crate) service_memory_request_overwrite_max_allowed: Option<String>,
    pub(crate) service_ephemeral_storage_limit: Option<String>,
    pub(crate) service_ephemeral_storage_limit_overwrite_max_allowed: Option<String>,
    pub(crate) service_ephemeral_storage_request: Option<String>,
    pub(crate) service_ephemeral_storage_request_overwrite_max_allowed: Option<String>,
    // Resources: pod level (no ephemeral storage).
    pub(crate) pod_cpu_limit: Option<String>,
    pub(crate) pod_cpu_limit_overwrite_max_allowed: Option<String>,
    pub(crate) pod_cpu_request: Option<String>,
    pub(crate) pod_cpu_request_overwrite_max_allowed: Option<String>,
    pub(crate) pod_memory_limit: Option<String>,
    pub(crate) pod_memory_limit_overwrite_max_allowed: Option<String>,
    pub(crate) pod_memory_request: Option<String>,
    pub(crate) pod_memory_request_overwrite_max_allowed: Option<String>,

    // Scheduling, pod metadata, security.
    pub(crate) node_selector: BTreeMap<String, String>,
    pub(crate) node_selector_overwrite_allowed: Option<String>,
    pub(crate) node_tolerations: BTreeMap<String, String>,
    pub(crate) node_tolerations_overwrite_allowed: Option<String>,
    pub(crate) affinity: Option<Affinity>,
    pub(crate) pod_labels: BTreeMap<String, String>,
    pub(crate) pod_labels_overwrite_allowed: Option<String>,
    pub(crate) pod_annotations: BTreeMap<String, String>,
    pub(crate) pod_annotations_overwrite_allowed: Option<String>,
    pub(crate) scheduler_name: Option<String>,
    pub(crate) priority_class_name: Option<String>,
    pub(crate) runtime_class_name: Option<String>,
    pub(crate) dns_policy: Option<String>,
    pub(crate) dns_config: Option<DnsConfig>,
    pub(crate) host_aliases: Vec<HostAlias>,
    pub(crate) privileged: Option<bool>,
    pub(crate) allow_privilege_escalation: Option<bool>,
    pub(crate) cap_add: Vec<String>,
    pub(crate) cap_drop: Vec<String>,
    pub(crate) pod_security_context: Option<PodSecurityContextWire>,
    pub(crate) build_container_security_context: Option<ContainerSecurityContextWire>,
    pub(crate) helper_container_security_context: Option<ContainerSecurityContextWire>,
    pub(crate) service_container_security_context: Option<ContainerSecurityContextWire>,
    pub(crate) init_permissions_container_security_context: Option<ContainerSecurityContextWire>,
    pub(crate) container_lifecycle: Option<ContainerLifecycle>,
    pub(crate) volumes: Option<VolumesWire>,
    pub(crate) pod_spec: Vec<PodSpecWire>,

    // Timing and lifecycle.
    pub(crate) poll_interval: Option<i64>,
    pub(crate) poll_timeout: Option<i64>,
    pub(crate) pod_termination_grace_period_seconds: Option<i64>,
    pub(crate) cleanup_grace_period_seconds: Option<i64>,
    #[serde(rename = "terminationGracePeriodSeconds")]
    pub(crate) termination_grace_period_seconds: Option<i64>,
    pub(crate) cleanup_resources_timeout: Option<RawDuration>,
    pub(crate) logs_base_dir: Option<String>,
    pub(crate) scripts_base_dir: Option<String>,
    pub(crate) print_pod_warning_events: Option<bool>,
    pub(crate) pod_disruption_budget: Option<bool>,

    // Newer extras.
    pub(crate) suspend_pvc_size: Option<String>,
    pub(crate) suspend_pvc_storage_class: Option<String>,

    // Oar's own: per-job identity.
    pub(crate) identity: Vec<IdentityRuleWire>,
    pub(crate) id_token: Option<IdTokenWire>,
    pub(crate) projected_token: Option<ProjectedTokenWire>,
}

/// `[[runners.kubernetes.services]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ServiceWire {
    pub(crate) name: Option<String>,
    pub(crate) alias: Option<String>,
    pub(crate) entrypoint: Vec<String>,
    pub(crate) command: Vec<String>,
    pub(crate) environment: Vec<String>,
    pub(crate) suspend_data_path: Option<String>,
}

/// `[[runners.kubernetes.pod_spec]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PodSpecWire {
    pub(crate) name: Option<String>,
    pub(crate) patch: Option<String>,
    pub(crate) patch_path: Option<String>,
    pub(crate) patch_type: Option<String>,
}
