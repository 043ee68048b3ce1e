//! Kubernetes executor for Oar.
//!
//! The pure parts (no IO, no clock, no randomness), snapshot-tested:
//! - [`pod`]: the job pod and its Secrets from `[runners.kubernetes]` and the job, with GitLab
//!   Runner's per-job `KUBERNETES_*` overwrites.
//! - [`wrapper`]: the build container's POSIX `sh` step wrapper and its FIFO protocol with the
//!   helper agent (std only, so the agent can use it without the Kubernetes client).
//! - [`identity`]: which ServiceAccount a job runs as (the upstream overwrite, then Oar's
//!   identity rules, from GitLab's payload fields and verified ID tokens).
//! - [`rbac`]: the API permissions the manager uses, for the Helm chart's Role.
//! - [`patch`], [`quantity`], [`glob`]: `pod_spec` patches, resource quantity comparison,
//!   `allowed_images` globs.
//!
//! Its end-to-end tests (`tests/`) run against the single-node cluster of `scripts/cluster up`
//! through `oar_testkit::cluster`.

mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod glob;
pub mod identity;
pub mod lifecycle;
pub mod patch;
pub mod pod;
pub mod quantity;
pub mod rbac;
pub mod wrapper;

pub use error::PodError;
pub use pod::{BuiltPod, PodInput, build_payload_secret, build_pod};
