//! Container and pod resource requests/limits with their overwrite ceilings.

use super::wire::KubernetesWire;
use crate::path::KeyPath;
use crate::quantity::Quantity;
use crate::validate::{Issue, quantity};

/// One resource (cpu, memory or ephemeral storage) of one container kind.
///
/// All four values default to unset. A `*_overwrite_max_allowed` ceiling enables the matching
/// `KUBERNETES_*` job variable, which may then ask for anything up to the ceiling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceSpec {
    /// `<resource>_request`.
    pub request: Option<Quantity>,
    /// `<resource>_limit`.
    pub limit: Option<Quantity>,
    /// `<resource>_request_overwrite_max_allowed`.
    pub request_overwrite_max_allowed: Option<Quantity>,
    /// `<resource>_limit_overwrite_max_allowed`.
    pub limit_overwrite_max_allowed: Option<Quantity>,
}

/// The resources of one container kind (build, helper or services).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerResources {
    /// `cpu_*`.
    pub cpu: ResourceSpec,
    /// `memory_*`.
    pub memory: ResourceSpec,
    /// `ephemeral_storage_*`.
    pub ephemeral_storage: ResourceSpec,
}

/// Pod-level resources (`pod_cpu_*`, `pod_memory_*`; Kubernetes 1.32+).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodResources {
    /// `pod_cpu_*`.
    pub cpu: ResourceSpec,
    /// `pod_memory_*`.
    pub memory: ResourceSpec,
}

/// Builds a [`ResourceSpec`] from four wire fields named `<prefix>_request`, ...
macro_rules! spec {
    ($path:expr, $wire:expr, $req:ident, $req_max:ident, $lim:ident, $lim_max:ident) => {
        ResourceSpec {
            request: quantity(&$path.key(stringify!($req)), $wire.$req.take())?,
            request_overwrite_max_allowed: quantity(
                &$path.key(stringify!($req_max)),
                $wire.$req_max.take(),
            )?,
            limit: quantity(&$path.key(stringify!($lim)), $wire.$lim.take())?,
            limit_overwrite_max_allowed: quantity(
                &$path.key(stringify!($lim_max)),
                $wire.$lim_max.take(),
            )?,
        }
    };
}

/// The build, helper, service and pod resources, in that order.
pub(crate) fn from_wire(
    w: &mut KubernetesWire,
    p: &KeyPath,
) -> Result<
    (
        ContainerResources,
        ContainerResources,
        ContainerResources,
        PodResources,
    ),
    Issue,
> {
    let build = ContainerResources {
        cpu: spec!(
            p,
            w,
            cpu_request,
            cpu_request_overwrite_max_allowed,
            cpu_limit,
            cpu_limit_overwrite_max_allowed
        ),
        memory: spec!(
            p,
            w,
            memory_request,
            memory_request_overwrite_max_allowed,
            memory_limit,
            memory_limit_overwrite_max_allowed
        ),
        ephemeral_storage: spec!(
            p,
            w,
            ephemeral_storage_request,
            ephemeral_storage_request_overwrite_max_allowed,
            ephemeral_storage_limit,
            ephemeral_storage_limit_overwrite_max_allowed
        ),
    };
    let helper = ContainerResources {
        cpu: spec!(
            p,
            w,
            helper_cpu_request,
            helper_cpu_request_overwrite_max_allowed,
            helper_cpu_limit,
            helper_cpu_limit_overwrite_max_allowed
        ),
        memory: spec!(
            p,
            w,
            helper_memory_request,
            helper_memory_request_overwrite_max_allowed,
            helper_memory_limit,
            helper_memory_limit_overwrite_max_allowed
        ),
        ephemeral_storage: spec!(
            p,
            w,
            helper_ephemeral_storage_request,
            helper_ephemeral_storage_request_overwrite_max_allowed,
            helper_ephemeral_storage_limit,
            helper_ephemeral_storage_limit_overwrite_max_allowed
        ),
    };
    let service = ContainerResources {
        cpu: spec!(
            p,
            w,
            service_cpu_request,
            service_cpu_request_overwrite_max_allowed,
            service_cpu_limit,
            service_cpu_limit_overwrite_max_allowed
        ),
        memory: spec!(
            p,
            w,
            service_memory_request,
            service_memory_request_overwrite_max_allowed,
            service_memory_limit,
            service_memory_limit_overwrite_max_allowed
        ),
        ephemeral_storage: spec!(
            p,
            w,
            service_ephemeral_storage_request,
            service_ephemeral_storage_request_overwrite_max_allowed,
            service_ephemeral_storage_limit,
            service_ephemeral_storage_limit_overwrite_max_allowed
        ),
    };
    let pod = PodResources {
        cpu: spec!(
            p,
            w,
            pod_cpu_request,
            pod_cpu_request_overwrite_max_allowed,
            pod_cpu_limit,
            pod_cpu_limit_overwrite_max_allowed
        ),
        memory: spec!(
            p,
            w,
            pod_memory_request,
            pod_memory_request_overwrite_max_allowed,
            pod_memory_limit,
            pod_memory_limit_overwrite_max_allowed
        ),
    };
    Ok((build, helper, service, pod))
}
