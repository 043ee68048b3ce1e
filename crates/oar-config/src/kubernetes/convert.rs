//! Wire → domain conversion of `[runners.kubernetes]`.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::identity::{self, IdTokenSettings, IdentityRule, ProjectedToken};
use super::wire::KubernetesWire;
use super::{
    Affinity, ContainerLifecycle, ContainerSecurityContext, DnsPolicy, KubernetesConfig,
    PodSecurityContext, PodSpecPatch, PullPolicy, Service, Volumes, pod, resources,
};
use crate::path::KeyPath;
use crate::validate::{
    Ctx, Issue, go_duration, non_empty, non_negative, one_of, quantity, regex_gate, seconds_or,
};
use crate::warning::WarningKind;

impl KubernetesConfig {
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
        let identity = std::mem::take(&mut w.identity)
            .into_iter()
            .enumerate()
            .map(|(i, r)| IdentityRule::from_wire(r, &p.key("identity").index(i)))
            .collect::<Result<Vec<_>, _>>()?;
        identity::check_rules(
            &identity,
            w.service_account.as_deref().filter(|s| !s.is_empty()),
        )?;
        let id_token = IdTokenSettings::from_wire(w.id_token.take(), &p.key("id_token"))?;
        let projected_token = w
            .projected_token
            .take()
            .map(|t| ProjectedToken::from_wire(t, &p.key("projected_token")))
            .transpose()?;
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
            identity,
            id_token,
            projected_token,
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
