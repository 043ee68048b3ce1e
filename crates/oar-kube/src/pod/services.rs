//! Service containers: `[[runners.kubernetes.services]]` first, then the job's `services:`.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1 as core;
use oar_config::KubernetesConfig;
use oar_gitlab::JobResponse;
use oar_job::vars::{Variables, expand_with};

use super::names::{SUBDOMAIN_RULE, image_host_names, is_dns1123_label, is_dns1123_subdomain};
use super::{BUILD_CONTAINER, HELPER_CONTAINER, SERVICE_PREFIX};
use crate::error::PodError;

/// One service, expanded.
#[derive(Debug, Clone)]
pub(crate) struct ServiceSpec {
    /// Container name: the first usable alias, else `svc-<n>`.
    pub container: String,
    pub image: String,
    pub aliases: Vec<String>,
    pub entrypoint: Vec<String>,
    pub command: Vec<String>,
    /// The service's own variables, values expanded.
    pub variables: Vec<(String, String)>,
    /// `pull_policy` of the job's service (empty for config services).
    pub pull_policy: Vec<String>,
}

impl ServiceSpec {
    /// A variable of the service (last definition wins).
    pub fn variable(&self, key: &str) -> Option<String> {
        self.variables
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
}

fn split_aliases(text: &str) -> Vec<String> {
    text.split([',', ' '])
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Expands `raw` values against the service's variables, then the job's.
fn expand_variables(raw: Vec<(String, String, bool)>, vars: &Variables) -> Vec<(String, String)> {
    let lookup = |key: &str| {
        raw.iter()
            .rev()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.clone())
            .or_else(|| vars.get(key).map(|v| v.value.clone()))
    };
    raw.iter()
        .map(|(k, v, is_raw)| {
            let value = if *is_raw {
                v.clone()
            } else {
                expand_with(v, lookup)
            };
            (k.clone(), value)
        })
        .collect()
}

/// The services in GitLab Runner's order, named, sorted by container name.
pub(crate) fn collect(
    config: &KubernetesConfig,
    job: &JobResponse,
    vars: &Variables,
) -> Vec<ServiceSpec> {
    let mut specs = Vec::new();
    for s in &config.services {
        let image = vars.expand(&s.name);
        if image.is_empty() {
            continue;
        }
        let aliases = s
            .aliases
            .iter()
            .flat_map(|a| split_aliases(&vars.expand(a)))
            .collect();
        let raw = s
            .environment
            .iter()
            .map(|e| (e.key.clone(), e.value.clone(), false))
            .collect();
        specs.push(ServiceSpec {
            container: String::new(),
            image,
            aliases,
            entrypoint: s.entrypoint.clone(),
            command: s.command.clone(),
            variables: expand_variables(raw, vars),
            pull_policy: Vec::new(),
        });
    }
    for s in &job.services {
        let image = vars.expand(&s.name);
        if image.is_empty() {
            continue;
        }
        let raw = s
            .variables
            .iter()
            .map(|v| (v.key.clone(), v.value.clone(), v.raw))
            .collect();
        specs.push(ServiceSpec {
            container: String::new(),
            image,
            aliases: split_aliases(&vars.expand(&s.alias)),
            entrypoint: s.entrypoint.clone(),
            command: s.command.clone(),
            variables: expand_variables(raw, vars),
            pull_policy: s.pull_policy.clone(),
        });
    }
    // Names: the first alias that is a DNS-1123 label and not taken, else svc-<n>. `build` and
    // `helper` are taken (GitLab Runner would produce a duplicate container name).
    let mut used: BTreeSet<String> = [BUILD_CONTAINER, HELPER_CONTAINER]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut index = 0;
    for spec in &mut specs {
        let mut name = None;
        for alias in &spec.aliases {
            if !used.insert(alias.clone()) {
                continue;
            }
            if is_dns1123_label(alias) {
                name = Some(alias.clone());
                break;
            }
        }
        spec.container = match name {
            Some(name) => name,
            None => loop {
                let candidate = format!("{SERVICE_PREFIX}{index}");
                index += 1;
                if !used.contains(&candidate) {
                    break candidate;
                }
            },
        };
    }
    specs.sort_by(|a, b| a.container.cmp(&b.container));
    specs
}

/// The `127.0.0.1` entry naming every service (image-derived names, then explicit aliases;
/// each name once), followed by `host_aliases` from the config.
pub(crate) fn host_aliases(
    config: &KubernetesConfig,
    services: &[ServiceSpec],
) -> Result<Option<Vec<core::HostAlias>>, PodError> {
    let mut hostnames: Vec<String> = Vec::new();
    for s in services {
        hostnames.extend(image_host_names(&s.image));
        for alias in &s.aliases {
            if !is_dns1123_subdomain(alias) {
                return Err(PodError::InvalidServiceAlias {
                    alias: alias.clone(),
                    image: s.image.clone(),
                    rule: SUBDOMAIN_RULE,
                });
            }
            hostnames.push(alias.clone());
        }
    }
    let mut seen = BTreeSet::new();
    hostnames.retain(|h| seen.insert(h.clone()));
    let mut out = Vec::new();
    if !hostnames.is_empty() {
        out.push(core::HostAlias {
            ip: "127.0.0.1".to_owned(),
            hostnames: Some(hostnames),
        });
    }
    out.extend(config.host_aliases.iter().map(|h| core::HostAlias {
        ip: h.ip.clone(),
        hostnames: Some(h.hostnames.clone()),
    }));
    Ok((!out.is_empty()).then_some(out))
}
