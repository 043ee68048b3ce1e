//! Smaller pod-level shapes: DNS, host aliases, lifecycle hooks, services, `pod_spec` patches.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::wire::{PodSpecWire, ServiceWire};
use crate::path::KeyPath;
use crate::validate::{EnvVar, Issue, env_list, non_empty, one_of};

/// `[runners.kubernetes.dns_config]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DnsConfig {
    /// `nameservers`: IP addresses.
    pub nameservers: Vec<String>,
    /// `searches`: search domains.
    pub searches: Vec<String>,
    /// `[[runners.kubernetes.dns_config.options]]`.
    pub options: Vec<DnsOption>,
}

impl DnsConfig {
    /// Whether nothing is set (GitLab Runner writes an empty table).
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.searches.is_empty() && self.options.is_empty()
    }
}

/// `{name, value?}` resolver option, e.g. `ndots = 2`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DnsOption {
    /// `name`.
    pub name: String,
    /// `value`; unset for flag options such as `edns0`.
    pub value: Option<String>,
}

/// `[[runners.kubernetes.host_aliases]]`: extra `/etc/hosts` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct HostAlias {
    /// `ip`.
    pub ip: String,
    /// `hostnames`.
    pub hostnames: Vec<String>,
}

/// `[runners.kubernetes.container_lifecycle]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ContainerLifecycle {
    /// `post_start`.
    pub post_start: Option<LifecycleHandler>,
    /// `pre_stop`.
    pub pre_stop: Option<LifecycleHandler>,
}

/// One lifecycle hook; exactly one action should be set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LifecycleHandler {
    /// `exec`.
    pub exec: Option<ExecAction>,
    /// `http_get`.
    pub http_get: Option<HttpGetAction>,
    /// `tcp_socket`.
    pub tcp_socket: Option<TcpSocketAction>,
}

/// `exec = { command = [...] }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ExecAction {
    /// `command`, exec'd without a shell.
    pub command: Vec<String>,
}

/// `http_get`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct HttpGetAction {
    /// `host`; default the pod IP.
    pub host: String,
    /// `port`.
    pub port: u16,
    /// `path`.
    pub path: String,
    /// `scheme`: `HTTP` (default) or `HTTPS`.
    pub scheme: String,
    /// `[[...http_headers]]`.
    pub http_headers: Vec<HttpHeader>,
}

/// `{name, value}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct HttpHeader {
    /// `name`.
    pub name: String,
    /// `value`.
    pub value: String,
}

/// `tcp_socket`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct TcpSocketAction {
    /// `host`; default the pod IP.
    pub host: String,
    /// `port`.
    pub port: u16,
}

/// `[[runners.kubernetes.services]]`: a service container added to every job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `name`: the image. Required.
    pub name: String,
    /// `alias`, split on commas and spaces.
    pub aliases: Vec<String>,
    /// `entrypoint` (becomes the container `command`).
    pub entrypoint: Vec<String>,
    /// `command` (becomes the container `args`).
    pub command: Vec<String>,
    /// `environment`: `KEY=VALUE` entries.
    pub environment: Vec<EnvVar>,
    /// `suspend_data_path` (suspendable environments; not used by Oar).
    pub suspend_data_path: Option<String>,
}

/// `patch_type` of a `pod_spec` patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `strategic` (the default): Kubernetes strategic merge patch.
    Strategic,
    /// `merge`: RFC 7386 JSON merge patch.
    Merge,
    /// `json`: RFC 6902 JSON patch.
    Json,
}

/// Where a patch comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchSource {
    /// `patch`: inline JSON or YAML.
    Inline(String),
    /// `patch_path`: a file read when the pod is built.
    File(PathBuf),
}

/// `[[runners.kubernetes.pod_spec]]` (applied only with `FF_USE_ADVANCED_POD_SPEC_CONFIGURATION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpecPatch {
    /// `name`, for messages.
    pub name: String,
    /// `patch` or `patch_path` (exactly one).
    pub source: PatchSource,
    /// `patch_type`. Default strategic.
    pub patch_type: PatchType,
}

impl Service {
    pub(crate) fn from_wire(wire: ServiceWire, path: &KeyPath) -> Result<Self, Issue> {
        let name = non_empty(wire.name).ok_or_else(|| Issue::missing(&path.key("name")))?;
        let aliases = wire
            .alias
            .unwrap_or_default()
            .split([',', ' '])
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Self {
            name,
            aliases,
            entrypoint: wire.entrypoint,
            command: wire.command,
            environment: env_list(&path.key("environment"), wire.environment)?,
            suspend_data_path: non_empty(wire.suspend_data_path),
        })
    }
}

impl PodSpecPatch {
    pub(crate) fn from_wire(wire: PodSpecWire, path: &KeyPath) -> Result<Self, Issue> {
        let name = non_empty(wire.name).unwrap_or_default();
        let source = match (non_empty(wire.patch), non_empty(wire.patch_path)) {
            (Some(_), Some(_)) => {
                return Err(Issue::value(
                    &path.key("patch_path"),
                    "ambiguous patch: both patch and patch_path are set",
                ));
            }
            (Some(patch), None) => PatchSource::Inline(patch),
            (None, Some(file)) => PatchSource::File(PathBuf::from(file)),
            (None, None) => return Err(Issue::missing(&path.key("patch"))),
        };
        let patch_type = one_of(
            &path.key("patch_type"),
            wire.patch_type.as_deref(),
            &[
                ("strategic", PatchType::Strategic),
                ("merge", PatchType::Merge),
                ("json", PatchType::Json),
            ],
            false,
        )?
        .unwrap_or(PatchType::Strategic);
        Ok(Self {
            name,
            source,
            patch_type,
        })
    }
}

pub(crate) fn check_host_aliases(aliases: &[HostAlias], path: &KeyPath) -> Result<(), Issue> {
    for (i, alias) in aliases.iter().enumerate() {
        if alias.ip.parse::<IpAddr>().is_err() {
            return Err(Issue::value(
                &path.index(i).key("ip"),
                format!("expected an IP address, found {:?}", alias.ip),
            ));
        }
    }
    Ok(())
}
