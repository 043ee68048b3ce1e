//! Per-job overrides through `KUBERNETES_*` variables, with GitLab Runner's semantics
//! (`executors/kubernetes/overwrites.go`).
//!
//! - Scalars (`KUBERNETES_NAMESPACE_OVERWRITE`, `KUBERNETES_SERVICE_ACCOUNT_OVERWRITE`): ignored
//!   when the gate regex is unset or the variable is empty; otherwise the value must match the
//!   regex **unanchored** (`ci-.*` accepts `xx-ci-1`; write `^ci-.*$` for a strict match).
//! - Maps (`KUBERNETES_POD_LABELS_*`, `..._POD_ANNOTATIONS_*`, `..._NODE_SELECTOR_*`,
//!   `..._NODE_TOLERATIONS_*`): with a gate, every variable with the prefix (any suffix) must
//!   match it as a whole `key=value` (tolerations: `key[=value][:Effect]`), then overrides the
//!   config map's entry. Without a gate, the config map is used unchanged.
//! - Resources (`KUBERNETES_[HELPER_|SERVICE_|POD_]{CPU,MEMORY,EPHEMERAL_STORAGE}_{REQUEST,LIMIT}`):
//!   with a `*_overwrite_max_allowed` ceiling, the value replaces the config value if it is at
//!   most the ceiling, compared numerically as quantities. A service's own variables may carry
//!   `KUBERNETES_SERVICE_*` too, for that service only, on top of the job-wide values.
//!
//! Variables are read expanded. Ignored overwrites (no gate) are reported as warnings.

use std::collections::BTreeMap;

use oar_config::KubernetesConfig;
use oar_config::Quantity;
use oar_config::kubernetes::{ContainerResources, ResourceSpec};
use oar_job::vars::Variables;
use regex::Regex;

use crate::error::PodError;
use crate::quantity;

/// Requests and limits of one container (or the pod), Kubernetes resource name → quantity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResourceSet {
    pub requests: BTreeMap<&'static str, String>,
    pub limits: BTreeMap<&'static str, String>,
}

/// The settings after the job's overwrites.
#[derive(Debug, Clone)]
pub(crate) struct Overwrites {
    pub namespace: Option<String>,
    pub service_account: Option<String>,
    pub pod_labels: BTreeMap<String, String>,
    pub pod_annotations: BTreeMap<String, String>,
    pub node_selector: BTreeMap<String, String>,
    pub node_tolerations: BTreeMap<String, String>,
    pub build: ResourceSet,
    pub helper: ResourceSet,
    pub service: ResourceSet,
    pub pod: ResourceSet,
}

/// Variable-name part, config-key part and Kubernetes name of each container resource.
const CONTAINER_RESOURCES: [(&str, &str, &str); 3] = [
    ("CPU", "cpu", "cpu"),
    ("MEMORY", "memory", "memory"),
    (
        "EPHEMERAL_STORAGE",
        "ephemeral_storage",
        "ephemeral-storage",
    ),
];

/// `guarded_service_account`: the job asks for an account an identity rule guards; the
/// rule decides ([`crate::identity`]), so the upstream gate is not applied to it.
pub(crate) fn evaluate(
    config: &KubernetesConfig,
    vars: &Variables,
    guarded_service_account: bool,
    warnings: &mut Vec<String>,
) -> Result<Overwrites, PodError> {
    let namespace = scalar(
        vars,
        "KUBERNETES_NAMESPACE_OVERWRITE",
        "namespace_overwrite_allowed",
        config.namespace.clone(),
        config.namespace_overwrite_allowed.as_ref(),
        warnings,
    )?;
    let service_account = if guarded_service_account {
        config.service_account.clone()
    } else {
        scalar(
            vars,
            "KUBERNETES_SERVICE_ACCOUNT_OVERWRITE",
            "service_account_overwrite_allowed",
            config.service_account.clone(),
            config.service_account_overwrite_allowed.as_ref(),
            warnings,
        )?
    };
    let pod_labels = map(
        vars,
        "KUBERNETES_POD_LABELS_",
        "pod_labels_overwrite_allowed",
        &config.pod_labels,
        config.pod_labels_overwrite_allowed.as_ref(),
        split_key_value,
        warnings,
    )?;
    let pod_annotations = map(
        vars,
        "KUBERNETES_POD_ANNOTATIONS_",
        "pod_annotations_overwrite_allowed",
        &config.pod_annotations,
        config.pod_annotations_overwrite_allowed.as_ref(),
        split_key_value,
        warnings,
    )?;
    let node_selector = map(
        vars,
        "KUBERNETES_NODE_SELECTOR_",
        "node_selector_overwrite_allowed",
        &config.node_selector,
        config.node_selector_overwrite_allowed.as_ref(),
        split_key_value,
        warnings,
    )?;
    let node_tolerations = map(
        vars,
        "KUBERNETES_NODE_TOLERATIONS_",
        "node_tolerations_overwrite_allowed",
        &config.node_tolerations,
        config.node_tolerations_overwrite_allowed.as_ref(),
        split_toleration,
        warnings,
    )?;
    let lookup = |name: &str| vars.value(name);
    let build = container_resources(&lookup, "", &config.build_resources, None, warnings)?;
    let service = container_resources(
        &lookup,
        "SERVICE_",
        &config.service_resources,
        None,
        warnings,
    )?;
    let helper = container_resources(&lookup, "HELPER_", &config.helper_resources, None, warnings)?;
    let pod_specs = [
        ("CPU", "cpu", "cpu", &config.pod_resources.cpu),
        ("MEMORY", "memory", "memory", &config.pod_resources.memory),
    ];
    let pod = resources(&lookup, "POD_", &pod_specs, None, warnings)?;
    Ok(Overwrites {
        namespace,
        service_account,
        pod_labels,
        pod_annotations,
        node_selector,
        node_tolerations,
        build,
        helper,
        service,
        pod,
    })
}

/// A service's own `KUBERNETES_SERVICE_*` variables on top of the job-wide service resources.
pub(crate) fn service_resources(
    config: &KubernetesConfig,
    base: &ResourceSet,
    service_vars: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<ResourceSet, PodError> {
    container_resources(
        service_vars,
        "SERVICE_",
        &config.service_resources,
        Some(base),
        warnings,
    )
}

fn ignored(variable: &str, gate_key: &str) -> String {
    format!("{variable} ignored: {gate_key} is not set in [runners.kubernetes]")
}

fn scalar(
    vars: &Variables,
    variable: &'static str,
    gate_key: &'static str,
    current: Option<String>,
    gate: Option<&Regex>,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, PodError> {
    let value = vars.value(variable).unwrap_or_default();
    if value.is_empty() {
        return Ok(current);
    }
    let Some(gate) = gate else {
        warnings.push(ignored(variable, gate_key));
        return Ok(current);
    };
    if !gate.is_match(&value) {
        return Err(PodError::OverwriteNotAllowed {
            variable: variable.to_owned(),
            value,
            gate_key,
            pattern: gate.as_str().to_owned(),
        });
    }
    Ok(Some(value))
}

type Split = fn(&str) -> Option<(String, String)>;

fn split_key_value(value: &str) -> Option<(String, String)> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
}

/// `key[=value][:Effect]` → (`key[=value]`, `Effect`); never fails (an empty value tolerates
/// every taint).
fn split_toleration(value: &str) -> Option<(String, String)> {
    let (key_value, effect) = value.split_once(':').unwrap_or((value, ""));
    Some((key_value.to_owned(), effect.to_owned()))
}

fn map(
    vars: &Variables,
    prefix: &str,
    gate_key: &'static str,
    base: &BTreeMap<String, String>,
    gate: Option<&Regex>,
    split: Split,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, String>, PodError> {
    let overrides: Vec<(String, String)> = vars
        .deduped()
        .into_iter()
        .filter(|v| v.key.starts_with(prefix))
        .map(|v| (v.key.clone(), vars.value(&v.key).unwrap_or_default()))
        .collect();
    let Some(gate) = gate else {
        for (variable, _) in &overrides {
            warnings.push(ignored(variable, gate_key));
        }
        return Ok(base.clone());
    };
    let mut out = base.clone();
    for (variable, value) in overrides {
        if !gate.is_match(&value) {
            return Err(PodError::OverwriteNotAllowed {
                variable,
                value,
                gate_key,
                pattern: gate.as_str().to_owned(),
            });
        }
        let Some((key, val)) = split(&value) else {
            return Err(PodError::OverwriteMalformed {
                variable,
                value,
                expected: "key=value",
            });
        };
        out.insert(key, val);
    }
    Ok(out)
}

fn container_resources(
    lookup: &dyn Fn(&str) -> Option<String>,
    prefix: &str,
    config: &ContainerResources,
    base: Option<&ResourceSet>,
    warnings: &mut Vec<String>,
) -> Result<ResourceSet, PodError> {
    let specs: Vec<(&str, &str, &'static str, &ResourceSpec)> = CONTAINER_RESOURCES
        .iter()
        .zip([&config.cpu, &config.memory, &config.ephemeral_storage])
        .map(|(&(var, key, name), spec)| (var, key, name, spec))
        .collect();
    resources(lookup, prefix, &specs, base, warnings)
}

/// Requests first, then limits, as GitLab Runner evaluates them (so the first error is the
/// same).
fn resources(
    lookup: &dyn Fn(&str) -> Option<String>,
    prefix: &str,
    specs: &[(&str, &str, &'static str, &ResourceSpec)],
    base: Option<&ResourceSet>,
    warnings: &mut Vec<String>,
) -> Result<ResourceSet, PodError> {
    let key_prefix = prefix.to_ascii_lowercase();
    let mut set = ResourceSet::default();
    for side in ["REQUEST", "LIMIT"] {
        let side_key = side.to_ascii_lowercase();
        for &(var, key, name, spec) in specs {
            let (config_value, max) = match side {
                "REQUEST" => (&spec.request, &spec.request_overwrite_max_allowed),
                _ => (&spec.limit, &spec.limit_overwrite_max_allowed),
            };
            let current = match base {
                Some(base) => {
                    let list = if side == "REQUEST" {
                        &base.requests
                    } else {
                        &base.limits
                    };
                    list.get(name).cloned()
                }
                None => config_value.as_ref().map(|q| q.as_str().to_owned()),
            };
            let variable = format!("KUBERNETES_{prefix}{var}_{side}");
            let max_key = format!("{key_prefix}{key}_{side_key}_overwrite_max_allowed");
            let value = lookup(&variable).unwrap_or_default();
            let chosen = max_resource(variable, max_key, current, max.as_ref(), value, warnings)?;
            if let Some(chosen) = chosen {
                let list = if side == "REQUEST" {
                    &mut set.requests
                } else {
                    &mut set.limits
                };
                list.insert(name, chosen);
            }
        }
    }
    Ok(set)
}

fn max_resource(
    variable: String,
    max_key: String,
    current: Option<String>,
    max: Option<&Quantity>,
    value: String,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, PodError> {
    if value.is_empty() {
        return Ok(current);
    }
    let Some(max) = max else {
        warnings.push(format!(
            "{variable} ignored: {max_key} is not set in [runners.kubernetes]"
        ));
        return Ok(current);
    };
    match quantity::compare(&value, max.as_str()) {
        Err(_) => Err(PodError::InvalidQuantity { variable, value }),
        Ok(std::cmp::Ordering::Greater) => Err(PodError::OverwriteTooHigh {
            variable,
            value,
            max_key,
            max: max.as_str().to_owned(),
        }),
        Ok(_) => Ok(Some(value)),
    }
}
