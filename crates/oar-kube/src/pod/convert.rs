//! Config shapes mapped onto their Kubernetes API types.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use oar_config::KubernetesConfig;
use oar_config::kubernetes::{
    Affinity, ContainerLifecycle, ContainerSecurityContext, DnsConfig, DnsPolicy, LabelSelector,
    LifecycleHandler, NodeSelectorTerm, PodAffinity, PodAffinityTerm, PodSecurityContext,
    ProcMount, Profile, ProfileType, SelectorRequirement,
};

use super::overwrites::ResourceSet;

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

fn non_empty_str(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

pub(crate) fn resources(set: &ResourceSet) -> Option<core::ResourceRequirements> {
    let list = |m: &BTreeMap<&'static str, String>| {
        (!m.is_empty()).then(|| {
            m.iter()
                .map(|(k, v)| ((*k).to_owned(), Quantity(v.clone())))
                .collect::<BTreeMap<_, _>>()
        })
    };
    let requirements = core::ResourceRequirements {
        limits: list(&set.limits),
        requests: list(&set.requests),
        ..Default::default()
    };
    (requirements.limits.is_some() || requirements.requests.is_some()).then_some(requirements)
}

pub(crate) fn dns_policy(policy: Option<DnsPolicy>) -> String {
    match policy {
        Some(DnsPolicy::None) => "None",
        Some(DnsPolicy::Default) => "Default",
        Some(DnsPolicy::ClusterFirstWithHostNet) => "ClusterFirstWithHostNet",
        Some(DnsPolicy::ClusterFirst) | None => "ClusterFirst",
    }
    .to_owned()
}

pub(crate) fn dns_config(config: &DnsConfig) -> Option<core::PodDNSConfig> {
    (!config.is_empty()).then(|| core::PodDNSConfig {
        nameservers: non_empty(config.nameservers.clone()),
        searches: non_empty(config.searches.clone()),
        options: non_empty(
            config
                .options
                .iter()
                .map(|o| core::PodDNSConfigOption {
                    name: Some(o.name.clone()),
                    value: o.value.clone(),
                })
                .collect(),
        ),
    })
}

fn requirement(r: &SelectorRequirement) -> core::NodeSelectorRequirement {
    core::NodeSelectorRequirement {
        key: r.key.clone(),
        operator: r.operator.clone(),
        values: non_empty(r.values.clone()),
    }
}

fn node_selector_term(term: &NodeSelectorTerm) -> core::NodeSelectorTerm {
    core::NodeSelectorTerm {
        match_expressions: non_empty(term.match_expressions.iter().map(requirement).collect()),
        match_fields: non_empty(term.match_fields.iter().map(requirement).collect()),
    }
}

fn label_selector(selector: &LabelSelector) -> meta::LabelSelector {
    meta::LabelSelector {
        match_labels: (!selector.match_labels.is_empty()).then(|| selector.match_labels.clone()),
        match_expressions: non_empty(
            selector
                .match_expressions
                .iter()
                .map(|r| meta::LabelSelectorRequirement {
                    key: r.key.clone(),
                    operator: r.operator.clone(),
                    values: non_empty(r.values.clone()),
                })
                .collect(),
        ),
    }
}

fn pod_affinity_term(term: &PodAffinityTerm) -> core::PodAffinityTerm {
    core::PodAffinityTerm {
        label_selector: term.label_selector.as_ref().map(label_selector),
        namespace_selector: term.namespace_selector.as_ref().map(label_selector),
        namespaces: non_empty(term.namespaces.clone()),
        topology_key: term.topology_key.clone(),
        ..Default::default()
    }
}

fn pod_affinity_terms(
    affinity: &PodAffinity,
) -> (
    Option<Vec<core::WeightedPodAffinityTerm>>,
    Option<Vec<core::PodAffinityTerm>>,
) {
    (
        non_empty(
            affinity
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .map(|w| core::WeightedPodAffinityTerm {
                    weight: w.weight,
                    pod_affinity_term: pod_affinity_term(&w.pod_affinity_term),
                })
                .collect(),
        ),
        non_empty(
            affinity
                .required_during_scheduling_ignored_during_execution
                .iter()
                .map(pod_affinity_term)
                .collect(),
        ),
    )
}

pub(crate) fn affinity(affinity: &Affinity) -> core::Affinity {
    core::Affinity {
        node_affinity: affinity.node_affinity.as_ref().map(|n| core::NodeAffinity {
            required_during_scheduling_ignored_during_execution: n
                .required_during_scheduling_ignored_during_execution
                .as_ref()
                .map(|s| core::NodeSelector {
                    node_selector_terms: s
                        .node_selector_terms
                        .iter()
                        .map(node_selector_term)
                        .collect(),
                }),
            preferred_during_scheduling_ignored_during_execution: non_empty(
                n.preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .map(|p| core::PreferredSchedulingTerm {
                        weight: p.weight,
                        preference: node_selector_term(&p.preference),
                    })
                    .collect(),
            ),
        }),
        pod_affinity: affinity.pod_affinity.as_ref().map(|p| {
            let (preferred, required) = pod_affinity_terms(p);
            core::PodAffinity {
                preferred_during_scheduling_ignored_during_execution: preferred,
                required_during_scheduling_ignored_during_execution: required,
            }
        }),
        pod_anti_affinity: affinity.pod_anti_affinity.as_ref().map(|p| {
            let (preferred, required) = pod_affinity_terms(p);
            core::PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: preferred,
                required_during_scheduling_ignored_during_execution: required,
            }
        }),
    }
}

fn profile_type(kind: ProfileType) -> String {
    match kind {
        ProfileType::RuntimeDefault => "RuntimeDefault",
        ProfileType::Unconfined => "Unconfined",
        ProfileType::Localhost => "Localhost",
    }
    .to_owned()
}

fn seccomp(profile: &Profile) -> core::SeccompProfile {
    core::SeccompProfile {
        type_: profile_type(profile.kind),
        localhost_profile: profile.localhost_profile.clone(),
    }
}

fn app_armor(profile: &Profile) -> core::AppArmorProfile {
    core::AppArmorProfile {
        type_: profile_type(profile.kind),
        localhost_profile: profile.localhost_profile.clone(),
    }
}

fn se_linux(type_: &Option<String>) -> Option<core::SELinuxOptions> {
    type_.as_ref().map(|t| core::SELinuxOptions {
        type_: Some(t.clone()),
        ..Default::default()
    })
}

pub(crate) fn pod_security_context(
    context: Option<&PodSecurityContext>,
) -> Option<core::PodSecurityContext> {
    let c = context?;
    Some(core::PodSecurityContext {
        fs_group: c.fs_group,
        run_as_group: c.run_as_group,
        run_as_non_root: c.run_as_non_root,
        run_as_user: c.run_as_user,
        supplemental_groups: non_empty(c.supplemental_groups.clone()),
        se_linux_options: se_linux(&c.selinux_type),
        seccomp_profile: c.seccomp_profile.as_ref().map(seccomp),
        app_armor_profile: c.app_armor_profile.as_ref().map(app_armor),
        ..Default::default()
    })
}

/// The capabilities from `cap_add` / `cap_drop` with the implicit drop of `NET_RAW`: start from
/// the default drop list, switch `cap_add` entries to add, then `cap_drop` entries to drop
/// (so drop beats add, and adding `NET_RAW` removes it from the drops).
fn global_capabilities(config: &KubernetesConfig) -> (Vec<String>, Vec<String>) {
    let mut order: Vec<(String, bool)> = vec![("NET_RAW".to_owned(), false)];
    let mut set = |name: &String, add: bool| match order.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = add,
        None => order.push((name.clone(), add)),
    };
    for cap in &config.cap_add {
        set(cap, true);
    }
    for cap in &config.cap_drop {
        set(cap, false);
    }
    let add = order
        .iter()
        .filter(|(_, a)| *a)
        .map(|(n, _)| n.clone())
        .collect();
    let drop = order
        .iter()
        .filter(|(_, a)| !*a)
        .map(|(n, _)| n.clone())
        .collect();
    (add, drop)
}

/// GitLab Runner's `GetContainerSecurityContext`: the per-container block over the globals.
pub(crate) fn container_security_context(
    config: &KubernetesConfig,
    specific: Option<&ContainerSecurityContext>,
) -> core::SecurityContext {
    let default = ContainerSecurityContext::default();
    let c = specific.unwrap_or(&default);
    let (global_add, global_drop) = global_capabilities(config);
    let add = c.capabilities_add.clone().or_else(|| non_empty(global_add));
    let drop = c
        .capabilities_drop
        .clone()
        .or_else(|| non_empty(global_drop));
    let capabilities =
        (add.is_some() || drop.is_some()).then_some(core::Capabilities { add, drop });
    core::SecurityContext {
        capabilities,
        privileged: c.privileged.or(config.privileged),
        allow_privilege_escalation: c
            .allow_privilege_escalation
            .or(config.allow_privilege_escalation),
        run_as_user: c.run_as_user,
        run_as_group: c.run_as_group,
        run_as_non_root: c.run_as_non_root,
        read_only_root_filesystem: c.read_only_root_filesystem,
        proc_mount: c.proc_mount.map(|p| {
            match p {
                ProcMount::Default => "Default",
                ProcMount::Unmasked => "Unmasked",
            }
            .to_owned()
        }),
        se_linux_options: se_linux(&c.selinux_type),
        seccomp_profile: c.seccomp_profile.as_ref().map(seccomp),
        app_armor_profile: c.app_armor_profile.as_ref().map(app_armor),
        ..Default::default()
    }
}

fn lifecycle_handler(handler: &LifecycleHandler) -> core::LifecycleHandler {
    core::LifecycleHandler {
        exec: handler.exec.as_ref().map(|e| core::ExecAction {
            command: Some(e.command.clone()),
        }),
        http_get: handler.http_get.as_ref().map(|h| core::HTTPGetAction {
            host: non_empty_str(&h.host),
            http_headers: non_empty(
                h.http_headers
                    .iter()
                    .map(|x| core::HTTPHeader {
                        name: x.name.clone(),
                        value: x.value.clone(),
                    })
                    .collect(),
            ),
            path: non_empty_str(&h.path),
            port: IntOrString::Int(i32::from(h.port)),
            scheme: non_empty_str(&h.scheme),
        }),
        tcp_socket: handler.tcp_socket.as_ref().map(|t| core::TCPSocketAction {
            host: non_empty_str(&t.host),
            port: IntOrString::Int(i32::from(t.port)),
        }),
        ..Default::default()
    }
}

pub(crate) fn lifecycle(config: Option<&ContainerLifecycle>) -> Option<core::Lifecycle> {
    let c = config?;
    if c.post_start.is_none() && c.pre_stop.is_none() {
        return None;
    }
    Some(core::Lifecycle {
        post_start: c.post_start.as_ref().map(lifecycle_handler),
        pre_stop: c.pre_stop.as_ref().map(lifecycle_handler),
        ..Default::default()
    })
}
