//! How a job pod ends: the pure mapping from a [`Pod`] (as the watch last saw it) to a
//! [`PodEnd`], and the timed decisions of [`super::JobPods::wait`] (image pull grace,
//! `poll_timeout`) as a small state machine over explicit instants.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod, PodCondition};
use tokio::time::Instant;

use super::message::{FinalState, TerminationMessage};
use crate::pod::{BUILD_CONTAINER, HELPER_CONTAINER};

/// How a job pod ended, or why the manager gives up on it.
///
/// Only [`PodEnd::Finished`] comes from the job itself (the helper's termination message);
/// every other variant is a failure the pod cannot report, which the manager writes to the job
/// log ([`PodEnd::log_line`]) and reports with [`PodEnd::failure_reason`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodEnd {
    /// The helper exited with its termination message.
    Finished(TerminationMessage),
    /// The helper container terminated without a (readable) termination message: the agent
    /// crashed or was killed.
    HelperCrashed {
        /// Its exit code.
        exit_code: i32,
        /// The runtime's reason (`Error`, `Completed`, ...).
        reason: Option<String>,
        /// What it left in its termination message, when that was not a
        /// [`TerminationMessage`] (truncated).
        message: Option<String>,
    },
    /// A container's image could not be pulled.
    ImagePullFailed {
        /// The container.
        container: String,
        /// Its image.
        image: String,
        /// The kubelet's reason: `ErrImagePull`, `ImagePullBackOff`, `ErrImageNeverPull`,
        /// `InvalidImageName`.
        reason: String,
        /// The kubelet's message.
        message: Option<String>,
    },
    /// A container could not be created from its configuration
    /// (`CreateContainerConfigError`, e.g. a missing Secret key).
    ContainerConfigError {
        /// The container.
        container: String,
        /// The kubelet's message.
        message: Option<String>,
    },
    /// The scheduler found no node for the pod within `poll_timeout`.
    Unschedulable {
        /// The scheduler's message (`0/1 nodes are available: ...`).
        message: String,
        /// The `poll_timeout` waited.
        waited: Duration,
    },
    /// The pod was scheduled but its containers did not all start within `poll_timeout`.
    StartTimeout {
        /// The pod's phase then.
        phase: String,
        /// A container still waiting, its reason and message.
        waiting: Option<String>,
        /// The `poll_timeout` waited.
        waited: Duration,
    },
    /// The build or helper container was killed for exceeding its memory.
    OomKilled {
        /// The container.
        container: String,
        /// Its memory limit (`16Mi`), if it had one.
        memory_limit: Option<String>,
    },
    /// The kubelet (node pressure) or the Eviction API evicted the pod.
    Evicted {
        /// Kubernetes' explanation.
        message: String,
    },
    /// The pod ran longer than its `activeDeadlineSeconds` and Kubernetes stopped it.
    DeadlineExceeded {
        /// Kubernetes' explanation.
        message: String,
    },
    /// The node running the pod was lost (unreachable, deleted).
    NodeLost {
        /// Kubernetes' explanation.
        message: String,
    },
    /// Someone else deleted the pod before the job finished. On Kubernetes before 1.26 this is
    /// also how an eviction through the Eviction API looks: it sets no reason on the pod.
    Deleted,
    /// The pod failed for a reason of its own (e.g. the kubelet refused it: `OutOfcpu`).
    PodFailed {
        /// Its phase (`Failed`, `Succeeded`).
        phase: String,
        /// Its reason.
        reason: Option<String>,
        /// Its message.
        message: Option<String>,
    },
    /// The manager stopped watching (shutting down, or a namespace it does not watch): the
    /// pod goes on, and a manager that starts later adopts it. Nothing to report.
    Unwatched {
        /// Why.
        reason: String,
    },
}

/// GitLab's failure reasons used here.
pub mod reason {
    /// The runner (not the job) failed.
    pub const RUNNER_SYSTEM_FAILURE: &str = "runner_system_failure";
    /// An image could not be pulled. GitLab versions that do not know it downgrade it to
    /// `runner_system_failure`.
    pub const IMAGE_PULL_FAILURE: &str = "image_pull_failure";
    /// The job ran out of time.
    pub const JOB_EXECUTION_TIMEOUT: &str = "job_execution_timeout";
    /// The runner's or the job's configuration is wrong.
    pub const RUNNER_CONFIGURATION_ERROR: &str = "runner_configuration_error";
    /// A failed job whose helper named no reason.
    pub const UNKNOWN_FAILURE: &str = "unknown_failure";
}

impl PodEnd {
    /// GitLab's `failure_reason` for this end; `None` when the job did not fail (success,
    /// canceled) or nothing is to be reported ([`PodEnd::Unwatched`]).
    pub fn failure_reason(&self) -> Option<&str> {
        match self {
            PodEnd::Finished(m) => match m.state {
                FinalState::Failed => Some(
                    m.failure_reason
                        .as_deref()
                        .filter(|r| !r.is_empty())
                        .unwrap_or(reason::UNKNOWN_FAILURE),
                ),
                FinalState::Success | FinalState::Canceled => None,
            },
            PodEnd::ImagePullFailed { .. } => Some(reason::IMAGE_PULL_FAILURE),
            PodEnd::ContainerConfigError { .. } => Some(reason::RUNNER_CONFIGURATION_ERROR),
            PodEnd::DeadlineExceeded { .. } => Some(reason::JOB_EXECUTION_TIMEOUT),
            PodEnd::HelperCrashed { .. }
            | PodEnd::Unschedulable { .. }
            | PodEnd::StartTimeout { .. }
            | PodEnd::OomKilled { .. }
            | PodEnd::Evicted { .. }
            | PodEnd::NodeLost { .. }
            | PodEnd::Deleted
            | PodEnd::PodFailed { .. } => Some(reason::RUNNER_SYSTEM_FAILURE),
            PodEnd::Unwatched { .. } => None,
        }
    }

    /// Whether the manager must send the job's final state to GitLab: always, except when the
    /// helper says it delivered it or that GitLab canceled the job, and for
    /// [`PodEnd::Unwatched`].
    pub fn needs_report(&self) -> bool {
        match self {
            PodEnd::Finished(m) => !m.delivered && m.state != FinalState::Canceled,
            PodEnd::Unwatched { .. } => false,
            _ => true,
        }
    }

    /// Whether the job ended well (the helper reported success).
    pub fn is_success(&self) -> bool {
        matches!(self, PodEnd::Finished(m) if m.state == FinalState::Success)
    }

    /// One sentence for the job log saying what happened.
    pub fn log_line(&self) -> String {
        match self {
            PodEnd::Finished(m) => {
                let reason = m
                    .failure_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                let delivered = if m.delivered {
                    "it delivered the final state"
                } else {
                    "the runner delivers the final state"
                };
                format!(
                    "The job pod's helper finished with state {}{reason}; {delivered}",
                    m.state
                )
            }
            PodEnd::HelperCrashed {
                exit_code,
                reason,
                message,
            } => {
                let reason = reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                let left = match message {
                    Some(m) => format!(", leaving an unreadable termination message: {m}"),
                    None => " without a termination message".to_owned(),
                };
                format!(
                    "The helper container exited with code {exit_code}{reason}{left}: the job \
                     driver crashed or was killed"
                )
            }
            PodEnd::ImagePullFailed {
                container,
                image,
                reason,
                message,
            } => {
                let message = message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                format!(
                    "Failed to pull image {image:?} for container {container:?}: {reason}{message}"
                )
            }
            PodEnd::ContainerConfigError { container, message } => {
                let message = message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                format!(
                    "Container {container:?} could not be created from its configuration{message}"
                )
            }
            PodEnd::Unschedulable { message, waited } => format!(
                "The job pod could not be scheduled within {}s (poll_timeout): {message}",
                waited.as_secs()
            ),
            PodEnd::StartTimeout {
                phase,
                waiting,
                waited,
            } => {
                let waiting = waiting
                    .as_deref()
                    .map(|w| format!("; {w}"))
                    .unwrap_or_default();
                format!(
                    "Timed out after {}s (poll_timeout) waiting for the job pod to start (last \
                     phase: {phase}){waiting}",
                    waited.as_secs()
                )
            }
            PodEnd::OomKilled {
                container,
                memory_limit,
            } => match memory_limit {
                Some(limit) => format!(
                    "Container {container:?} was OOMKilled: it used more than its memory limit of \
                     {limit}"
                ),
                None => format!(
                    "Container {container:?} was OOMKilled (it has no memory limit: the node ran \
                     out of memory)"
                ),
            },
            PodEnd::Evicted { message } => format!("The job pod was evicted: {message}"),
            PodEnd::DeadlineExceeded { message } => format!(
                "The job pod ran past its activeDeadlineSeconds and Kubernetes stopped it: {message}"
            ),
            PodEnd::NodeLost { message } => {
                format!("The node running the job pod was lost: {message}")
            }
            PodEnd::Deleted => "The job pod was deleted before the job finished (by someone \
                                else, or evicted through the Eviction API)"
                .to_owned(),
            PodEnd::PodFailed {
                phase,
                reason,
                message,
            } => {
                let detail = [reason.as_deref(), message.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": ");
                let detail = if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                };
                format!("The job pod ended (phase {phase}) before its helper finished{detail}")
            }
            PodEnd::Unwatched { reason } => {
                format!("The runner stopped watching the job pod: {reason}")
            }
        }
    }
}

impl std::fmt::Display for PodEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.log_line())
    }
}

/// Image pull reasons that fail the job at once (no retry can fix them).
const PULL_FATAL: &[&str] = &["ErrImageNeverPull", "InvalidImageName"];
/// Image pull reasons the kubelet retries: fatal after a grace.
const PULL_RETRIED: &[&str] = &["ErrImagePull", "ImagePullBackOff"];
/// Longest foreign text (termination message, kubelet message) kept in a [`PodEnd`].
const TEXT_LIMIT: usize = 512;

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.len() <= TEXT_LIMIT {
        return s.to_owned();
    }
    let mut end = TEXT_LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or_default()
        .iter()
        .chain(
            status
                .and_then(|s| s.container_statuses.as_deref())
                .unwrap_or_default(),
        )
}

fn container_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == name)
}

fn terminated(status: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    status.state.as_ref()?.terminated.as_ref()
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn pod_reason(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.reason.as_deref()
}

fn pod_message(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.message.as_deref())
        .map(clip)
        .unwrap_or_default()
}

/// The image a container runs: from the spec, else from its status.
fn image_of(pod: &Pod, status: &ContainerStatus) -> String {
    pod.spec
        .as_ref()
        .and_then(|spec| {
            spec.containers
                .iter()
                .chain(spec.init_containers.as_deref().unwrap_or_default())
                .find(|c| c.name == status.name)
        })
        .and_then(|c| c.image.clone())
        .unwrap_or_else(|| status.image.clone())
}

fn memory_limit(pod: &Pod, container: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let own = spec
        .containers
        .iter()
        .find(|c| c.name == container)
        .and_then(|c| c.resources.as_ref()?.limits.as_ref()?.get("memory"))
        .map(|q| q.0.clone());
    own.or_else(|| {
        spec.resources
            .as_ref()?
            .limits
            .as_ref()?
            .get("memory")
            .map(|q| q.0.clone())
    })
}

/// The helper's termination message, if it has exited with one.
pub fn helper_message(pod: &Pod) -> Option<TerminationMessage> {
    let helper = container_status(pod, HELPER_CONTAINER)?;
    terminated(helper)?
        .message
        .as_deref()
        .and_then(TerminationMessage::parse)
}

/// Whether the helper container has terminated (with or without a message).
pub fn helper_finished(pod: &Pod) -> bool {
    container_status(pod, HELPER_CONTAINER).is_some_and(|s| terminated(s).is_some())
}

/// Why a pod that is going away goes: eviction, node loss or deletion (from the
/// `DisruptionTarget` condition of Kubernetes 1.26+, else [`PodEnd::Deleted`]).
pub fn disruption(pod: &Pod) -> PodEnd {
    if let Some(c) = condition(pod, "DisruptionTarget").filter(|c| c.status == "True") {
        let message = c.message.as_deref().map(clip).unwrap_or_default();
        match c.reason.as_deref() {
            Some("EvictionByEvictionAPI" | "TerminationByKubelet") => {
                return PodEnd::Evicted { message };
            }
            Some("PreemptionByScheduler" | "PreemptionByKubeScheduler") => {
                return PodEnd::Evicted {
                    message: format!("preempted by a higher-priority pod: {message}"),
                };
            }
            Some("DeletionByTaintManager" | "DeletionByPodGC") => {
                return PodEnd::NodeLost { message };
            }
            _ => {}
        }
    }
    PodEnd::Deleted
}

/// The job pod's end, if the pod as seen now shows one that needs no waiting: the helper's
/// termination message, eviction, `activeDeadlineSeconds`, node loss, an OOM kill of the build
/// or helper container, a helper that exited without a message, an image that can never be
/// pulled, a container that cannot be created, a pod that failed by itself.
///
/// Containers are judged by their own `terminated` state, never by the pod phase (which lags).
/// Service containers do not end the job (as in GitLab Runner), except by a failed image pull.
/// A pod being deleted whose helper still runs has not ended: its helper may still report.
pub fn pod_end(pod: &Pod) -> Option<PodEnd> {
    if let Some(message) = helper_message(pod) {
        return Some(PodEnd::Finished(message));
    }
    match pod_reason(pod) {
        Some("Evicted") => {
            return Some(PodEnd::Evicted {
                message: pod_message(pod),
            });
        }
        Some("DeadlineExceeded") => {
            return Some(PodEnd::DeadlineExceeded {
                message: pod_message(pod),
            });
        }
        Some("NodeLost") => {
            return Some(PodEnd::NodeLost {
                message: pod_message(pod),
            });
        }
        _ => {}
    }
    if phase(pod) == "Unknown" {
        return Some(PodEnd::NodeLost {
            message: format!("the pod's state is unknown: {}", pod_message(pod)),
        });
    }
    for name in [BUILD_CONTAINER, HELPER_CONTAINER] {
        if let Some(t) = container_status(pod, name).and_then(terminated)
            && t.reason.as_deref() == Some("OOMKilled")
            // The runtime says `OOMKilled` when the OOM killer struck any process of the
            // container. A build container that exited 0 was told to by the helper: the OOM
            // kill hit a step, which the wrapper reported, and the helper reports the job.
            && !(name == BUILD_CONTAINER && t.exit_code == 0)
        {
            return Some(PodEnd::OomKilled {
                container: name.to_owned(),
                memory_limit: memory_limit(pod, name),
            });
        }
    }
    let going = pod.metadata.deletion_timestamp.is_some()
        || condition(pod, "DisruptionTarget").is_some_and(|c| c.status == "True");
    if let Some(t) = container_status(pod, HELPER_CONTAINER).and_then(terminated) {
        if going {
            return Some(disruption(pod));
        }
        return Some(PodEnd::HelperCrashed {
            exit_code: t.exit_code,
            reason: t.reason.clone(),
            message: t.message.as_deref().map(clip).filter(|m| !m.is_empty()),
        });
    }
    for status in statuses(pod) {
        let Some(waiting) = status.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        match waiting.reason.as_deref() {
            Some(reason) if PULL_FATAL.contains(&reason) => {
                return Some(PodEnd::ImagePullFailed {
                    container: status.name.clone(),
                    image: image_of(pod, status),
                    reason: reason.to_owned(),
                    message: waiting.message.as_deref().map(clip),
                });
            }
            Some("CreateContainerConfigError") => {
                return Some(PodEnd::ContainerConfigError {
                    container: status.name.clone(),
                    message: waiting.message.as_deref().map(clip),
                });
            }
            _ => {}
        }
    }
    match phase(pod) {
        p @ ("Failed" | "Succeeded") => Some(PodEnd::PodFailed {
            phase: p.to_owned(),
            reason: pod_reason(pod).map(str::to_owned),
            message: pod
                .status
                .as_ref()
                .and_then(|s| s.message.as_deref())
                .map(clip),
        }),
        _ => None,
    }
}

/// The end of a pod that is gone, from its last state seen (`None`: never seen).
pub fn gone_end(last: Option<&Pod>) -> PodEnd {
    match last {
        Some(pod) => pod_end(pod).unwrap_or_else(|| disruption(pod)),
        None => PodEnd::Deleted,
    }
}

/// A container whose image pull is failing in a way the kubelet retries (`ErrImagePull`,
/// `ImagePullBackOff`): a failure once it lasts past the grace.
pub fn image_pull_trouble(pod: &Pod) -> Option<PodEnd> {
    statuses(pod).find_map(|status| {
        let waiting = status.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        PULL_RETRIED
            .contains(&reason)
            .then(|| PodEnd::ImagePullFailed {
                container: status.name.clone(),
                image: image_of(pod, status),
                reason: reason.to_owned(),
                message: waiting.message.as_deref().map(clip),
            })
    })
}

/// Whether every container of the pod is running or has run: the pod started, and
/// `poll_timeout` no longer applies.
pub fn started(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    let Some(containers) = status.container_statuses.as_deref() else {
        return false;
    };
    let want = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    containers.len() >= want
        && !containers.is_empty()
        && containers.iter().all(|c| {
            c.state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        })
}

/// Why a pod that has not started is not running, as the end to report once `poll_timeout`
/// has passed: [`PodEnd::Unschedulable`] with the scheduler's message, else
/// [`PodEnd::StartTimeout`] naming a waiting container.
pub fn not_started(pod: Option<&Pod>, waited: Duration) -> PodEnd {
    let Some(pod) = pod else {
        return PodEnd::StartTimeout {
            phase: "unknown (the pod was not seen)".to_owned(),
            waiting: None,
            waited,
        };
    };
    if let Some(c) = condition(pod, "PodScheduled")
        .filter(|c| c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
    {
        return PodEnd::Unschedulable {
            message: c.message.as_deref().map(clip).unwrap_or_default(),
            waited,
        };
    }
    let waiting = statuses(pod).find_map(|s| {
        let w = s.state.as_ref()?.waiting.as_ref()?;
        let reason = w.reason.as_deref().unwrap_or("waiting");
        Some(match w.message.as_deref() {
            Some(m) => format!("container {:?} is {reason}: {}", s.name, clip(m)),
            None => format!("container {:?} is {reason}", s.name),
        })
    });
    PodEnd::StartTimeout {
        phase: phase(pod).to_owned(),
        waiting,
        waited,
    }
}

/// What [`Tracker::step`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// The pod has ended.
    End(PodEnd),
    /// A timed failure is due; the caller may confirm it first if its view could be stale.
    Due(PodEnd),
    /// Nothing yet: look again at the next change, or at this instant.
    Wait(Option<Instant>),
}

/// The timed part of waiting for one pod: `poll_timeout` until it has started, the grace of a
/// retried image pull failure.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    poll_timeout: Duration,
    start_deadline: Instant,
    pull_grace: Duration,
    started: bool,
    pull_since: Option<Instant>,
}

impl Tracker {
    pub(crate) fn new(now: Instant, poll_timeout: Duration, pull_grace: Duration) -> Self {
        Tracker {
            poll_timeout,
            start_deadline: now + poll_timeout,
            pull_grace,
            started: false,
            pull_since: None,
        }
    }

    /// Looks at the pod as seen at `now` (`None`: not seen yet).
    pub(crate) fn step(&mut self, pod: Option<&Pod>, now: Instant) -> Step {
        if let Some(pod) = pod {
            if let Some(end) = pod_end(pod) {
                return Step::End(end);
            }
            self.started |= started(pod);
            if let Some(end) = image_pull_trouble(pod) {
                let since = *self.pull_since.get_or_insert(now);
                let mut due = since + self.pull_grace;
                if !self.started {
                    due = due.min(self.start_deadline);
                }
                return if now >= due {
                    Step::Due(end)
                } else {
                    Step::Wait(Some(due))
                };
            }
            self.pull_since = None;
        }
        if self.started {
            return Step::Wait(None);
        }
        if now >= self.start_deadline {
            Step::Due(not_started(pod, self.poll_timeout))
        } else {
            Step::Wait(Some(self.start_deadline))
        }
    }
}

#[cfg(test)]
mod tests {
    //! The failure mapping on pods as the API server shows them (JSON fixtures modelled on
    //! what Kubernetes 1.20 and 1.32 report).

    use serde_json::{Value, json};

    use super::*;

    /// A job pod (build 16Mi limit, helper, one service) with `status` and extra `metadata`.
    fn pod(metadata: Value, status: Value) -> Pod {
        let mut meta = json!({
            "name": "runner-abc-project-1-concurrent-0-job-7",
            "namespace": "ci",
            "uid": "u-1",
            "labels": { "oar.dev/job-id": "7" },
        });
        for (k, v) in metadata.as_object().unwrap() {
            meta[k] = v.clone();
        }
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {
                "containers": [
                    { "name": "build", "image": "oar.test/debian:bookworm",
                      "resources": { "limits": { "memory": "16Mi" } } },
                    { "name": "helper", "image": "oar.test/oar-helper:dev" },
                    { "name": "postgres", "image": "postgres:16" },
                ],
            },
            "status": status,
        }))
        .unwrap()
    }

    fn running() -> Value {
        json!({ "running": { "startedAt": "2026-01-01T00:00:00Z" } })
    }

    fn terminated(code: i32, reason: &str, message: Option<&str>) -> Value {
        let mut t = json!({ "exitCode": code, "reason": reason });
        if let Some(m) = message {
            t["message"] = m.into();
        }
        json!({ "terminated": t })
    }

    fn waiting(reason: &str, message: &str) -> Value {
        json!({ "waiting": { "reason": reason, "message": message } })
    }

    fn cs(name: &str, image: &str, state: Value) -> Value {
        json!({ "name": name, "image": image, "imageID": "", "ready": false,
                "restartCount": 0, "state": state })
    }

    fn statuses(phase: &str, build: Value, helper: Value, svc: Value) -> Value {
        json!({
            "phase": phase,
            "conditions": [{ "type": "PodScheduled", "status": "True" }],
            "containerStatuses": [
                cs("build", "oar.test/debian:bookworm", build),
                cs("helper", "oar.test/oar-helper:dev", helper),
                cs("postgres", "postgres:16", svc),
            ],
        })
    }

    const MESSAGE: &str =
        r#"{"oar":1,"state":"failed","failure_reason":"script_failure","delivered":true}"#;

    #[test]
    fn helper_finished_with_message_is_finished() {
        // The phase may still say Running (it lags the container state): the helper's own
        // terminated state decides.
        let p = pod(
            json!({}),
            statuses(
                "Running",
                running(),
                terminated(0, "Completed", Some(MESSAGE)),
                running(),
            ),
        );
        let end = pod_end(&p).unwrap();
        let PodEnd::Finished(m) = &end else {
            panic!("{end:?}")
        };
        assert_eq!(m.state, FinalState::Failed);
        assert!(m.delivered);
        assert_eq!(end.failure_reason(), Some("script_failure"));
        assert!(!end.needs_report());
        assert!(helper_finished(&p));
        assert_eq!(
            end.log_line(),
            "The job pod's helper finished with state failed (script_failure); it delivered the final state"
        );
        let success = pod(
            json!({}),
            statuses(
                "Running",
                running(),
                terminated(
                    0,
                    "Completed",
                    Some(r#"{"oar":1,"state":"success","delivered":false}"#),
                ),
                running(),
            ),
        );
        let end = pod_end(&success).unwrap();
        assert!(end.is_success());
        assert_eq!(end.failure_reason(), None);
        assert!(end.needs_report());
    }

    #[test]
    fn helper_terminated_without_message_crashed() {
        let p = pod(
            json!({}),
            statuses(
                "Running",
                running(),
                terminated(2, "Error", None),
                running(),
            ),
        );
        let end = pod_end(&p).unwrap();
        assert_eq!(
            end,
            PodEnd::HelperCrashed {
                exit_code: 2,
                reason: Some("Error".into()),
                message: None
            }
        );
        assert_eq!(end.failure_reason(), Some("runner_system_failure"));
        assert_eq!(
            end.log_line(),
            "The helper container exited with code 2 (Error) without a termination message: the \
             job driver crashed or was killed"
        );
        // Garbage in the termination message is not a message.
        let p = pod(
            json!({}),
            statuses(
                "Failed",
                running(),
                terminated(101, "Error", Some("thread 'main' panicked")),
                running(),
            ),
        );
        let PodEnd::HelperCrashed { message, .. } = pod_end(&p).unwrap() else {
            panic!()
        };
        assert_eq!(message.as_deref(), Some("thread 'main' panicked"));
    }

    #[test]
    fn the_watch_keeps_what_the_failure_messages_need_and_little_else() {
        let mut p = pod(
            json!({ "managedFields": [{ "manager": "oar", "operation": "Update" }] }),
            statuses(
                "Running",
                terminated(137, "OOMKilled", None),
                running(),
                waiting("ImagePullBackOff", "Back-off pulling image \"postgres:16\""),
            ),
        );
        let spec = p.spec.as_mut().unwrap();
        let env: Vec<Value> = (0..200)
            .map(|i| json!({ "name": format!("CI_VAR_{i}"), "value": "x".repeat(64) }))
            .collect();
        spec.containers[0] = serde_json::from_value(json!({
            "name": "build", "image": "oar.test/debian:bookworm",
            "command": ["/bin/sh", "-c", "x".repeat(4000)],
            "env": env,
            "volumeMounts": [{ "name": "builds", "mountPath": "/builds" }],
            "resources": { "limits": { "memory": "16Mi" }, "requests": { "cpu": "1" } },
        }))
        .unwrap();
        spec.volumes = Some(vec![
            serde_json::from_value(json!({ "name": "builds", "emptyDir": {} })).unwrap(),
        ]);
        spec.node_name = Some("node-1".into());
        let before = serde_json::to_vec(&p).unwrap().len();
        let end_before = pod_end(&p);
        super::super::watch::slim(&mut p);
        let after = serde_json::to_vec(&p).unwrap().len();
        assert!(after * 10 < before, "{before} bytes became {after}");
        assert_eq!(pod_end(&p), end_before);
        assert_eq!(
            pod_end(&p).unwrap().log_line(),
            "Container \"build\" was OOMKilled: it used more than its memory limit of 16Mi"
        );
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.containers.len(), 3);
        assert_eq!(spec.containers[2].image.as_deref(), Some("postgres:16"));
        assert!(spec.containers[0].env.is_none() && spec.containers[0].command.is_none());
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        assert!(
            p.metadata
                .managed_fields
                .as_deref()
                .unwrap_or_default()
                .is_empty()
        );
        assert_eq!(p.metadata.labels.as_ref().unwrap()["oar.dev/job-id"], "7");
    }

    #[test]
    fn build_oom_killed_while_helper_runs() {
        let p = pod(
            json!({}),
            statuses(
                "Running",
                terminated(137, "OOMKilled", None),
                running(),
                running(),
            ),
        );
        let end = pod_end(&p).unwrap();
        assert_eq!(
            end,
            PodEnd::OomKilled {
                container: "build".into(),
                memory_limit: Some("16Mi".into())
            }
        );
        assert_eq!(end.failure_reason(), Some("runner_system_failure"));
        assert_eq!(
            end.log_line(),
            "Container \"build\" was OOMKilled: it used more than its memory limit of 16Mi"
        );
        // The helper without a limit: the node ran out.
        let p = pod(
            json!({}),
            statuses(
                "Failed",
                running(),
                terminated(137, "OOMKilled", None),
                running(),
            ),
        );
        assert_eq!(
            pod_end(&p),
            Some(PodEnd::OomKilled {
                container: "helper".into(),
                memory_limit: None
            })
        );
        // A step was OOM-killed, the wrapper survived and exited when told to: the helper,
        // still running, reports the job.
        let p = pod(
            json!({}),
            statuses(
                "Running",
                terminated(0, "OOMKilled", None),
                running(),
                running(),
            ),
        );
        assert_eq!(pod_end(&p), None);
        // A service killed for memory does not end the job (as in GitLab Runner).
        let p = pod(
            json!({}),
            statuses(
                "Running",
                running(),
                running(),
                terminated(137, "OOMKilled", None),
            ),
        );
        assert_eq!(pod_end(&p), None);
    }

    #[test]
    fn evicted_by_the_kubelet() {
        let mut status = statuses(
            "Failed",
            terminated(137, "Error", None),
            terminated(137, "Error", None),
            running(),
        );
        status["reason"] = "Evicted".into();
        status["message"] = "The node was low on resource: memory. ".into();
        let end = pod_end(&pod(json!({}), status)).unwrap();
        assert_eq!(
            end,
            PodEnd::Evicted {
                message: "The node was low on resource: memory.".into()
            }
        );
        assert_eq!(end.failure_reason(), Some("runner_system_failure"));
        assert_eq!(
            end.log_line(),
            "The job pod was evicted: The node was low on resource: memory."
        );
    }

    #[test]
    fn evicted_through_the_eviction_api_on_new_clusters() {
        // Kubernetes 1.26+: a DisruptionTarget condition, then the deletion.
        let mut status = statuses("Running", running(), running(), running());
        status["conditions"] = json!([
            { "type": "PodScheduled", "status": "True" },
            { "type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
              "message": "Eviction API: evicting" },
        ]);
        let deleting = json!({ "deletionTimestamp": "2026-01-01T00:00:10Z" });
        // The helper still runs: it may report yet.
        assert_eq!(pod_end(&pod(deleting.clone(), status.clone())), None);
        status["containerStatuses"][1]["state"] = terminated(137, "Error", None);
        let gone = pod(deleting, status);
        let evicted = PodEnd::Evicted {
            message: "Eviction API: evicting".into(),
        };
        assert_eq!(pod_end(&gone), Some(evicted.clone()));
        assert_eq!(gone_end(Some(&gone)), evicted);
    }

    #[test]
    fn deleted_by_someone_else() {
        let deleting = json!({ "deletionTimestamp": "2026-01-01T00:00:10Z" });
        let alive = pod(
            deleting.clone(),
            statuses("Running", running(), running(), running()),
        );
        assert_eq!(pod_end(&alive), None);
        assert_eq!(gone_end(Some(&alive)), PodEnd::Deleted);
        let killed = pod(
            deleting,
            statuses(
                "Running",
                terminated(137, "Error", None),
                terminated(137, "Error", None),
                running(),
            ),
        );
        assert_eq!(pod_end(&killed), Some(PodEnd::Deleted));
        assert_eq!(gone_end(None), PodEnd::Deleted);
        assert_eq!(
            PodEnd::Deleted.failure_reason(),
            Some("runner_system_failure")
        );
        // Deleted after the helper finished: the helper's word stands.
        let done = pod(
            json!({ "deletionTimestamp": "2026-01-01T00:00:10Z" }),
            statuses(
                "Running",
                running(),
                terminated(0, "Completed", Some(MESSAGE)),
                running(),
            ),
        );
        assert!(matches!(gone_end(Some(&done)), PodEnd::Finished(_)));
    }

    #[test]
    fn active_deadline_exceeded() {
        let mut status = statuses("Failed", running(), running(), running());
        status["reason"] = "DeadlineExceeded".into();
        status["message"] = "Pod was active on the node longer than the specified deadline".into();
        let end = pod_end(&pod(json!({}), status)).unwrap();
        assert!(matches!(end, PodEnd::DeadlineExceeded { .. }), "{end:?}");
        assert_eq!(end.failure_reason(), Some("job_execution_timeout"));
    }

    #[test]
    fn node_lost() {
        let mut status = statuses("Running", running(), running(), running());
        status["reason"] = "NodeLost".into();
        status["message"] = "Node 127.0.0.1 which was running pod x is unresponsive".into();
        let end = pod_end(&pod(json!({}), status)).unwrap();
        assert_eq!(
            end,
            PodEnd::NodeLost {
                message: "Node 127.0.0.1 which was running pod x is unresponsive".into()
            }
        );
        let unknown = pod(
            json!({}),
            statuses("Unknown", running(), running(), running()),
        );
        assert!(matches!(pod_end(&unknown), Some(PodEnd::NodeLost { .. })));
        // 1.26+: the taint manager's deletion.
        let mut status = statuses(
            "Running",
            running(),
            terminated(137, "Error", None),
            running(),
        );
        status["conditions"] = json!([{ "type": "DisruptionTarget", "status": "True",
            "reason": "DeletionByTaintManager", "message": "Taint manager: deleting due to NoExecute taint" }]);
        let p = pod(
            json!({ "deletionTimestamp": "2026-01-01T00:00:10Z" }),
            status,
        );
        assert!(matches!(gone_end(Some(&p)), PodEnd::NodeLost { .. }));
    }

    #[test]
    fn image_never_pulled_fails_at_once() {
        let msg = "Container image \"oar.test/nope:1\" is not present with pull policy of Never";
        let mut status = statuses(
            "Pending",
            waiting("ErrImageNeverPull", msg),
            running(),
            running(),
        );
        status["containerStatuses"][0]["image"] = "oar.test/nope:1".into();
        let mut p = pod(json!({}), status);
        p.spec.as_mut().unwrap().containers[0].image = Some("oar.test/nope:1".into());
        let end = pod_end(&p).unwrap();
        assert_eq!(
            end,
            PodEnd::ImagePullFailed {
                container: "build".into(),
                image: "oar.test/nope:1".into(),
                reason: "ErrImageNeverPull".into(),
                message: Some(msg.into()),
            }
        );
        assert_eq!(end.failure_reason(), Some("image_pull_failure"));
        assert_eq!(
            end.log_line(),
            "Failed to pull image \"oar.test/nope:1\" for container \"build\": ErrImageNeverPull: \
             Container image \"oar.test/nope:1\" is not present with pull policy of Never"
        );
        let invalid = pod(
            json!({}),
            statuses(
                "Pending",
                running(),
                running(),
                waiting("InvalidImageName", "bad"),
            ),
        );
        assert!(matches!(
            pod_end(&invalid),
            Some(PodEnd::ImagePullFailed { container, .. }) if container == "postgres"
        ));
    }

    #[test]
    fn image_pull_back_off_waits_for_the_grace() {
        let p = pod(
            json!({}),
            statuses(
                "Pending",
                waiting("ImagePullBackOff", "Back-off pulling image \"x\""),
                running(),
                running(),
            ),
        );
        assert_eq!(pod_end(&p), None);
        let trouble = image_pull_trouble(&p).unwrap();
        assert!(
            matches!(&trouble, PodEnd::ImagePullFailed { reason, .. } if reason == "ImagePullBackOff")
        );

        let t0 = Instant::now();
        let grace = Duration::from_secs(20);
        let mut tracker = Tracker::new(t0, Duration::from_secs(180), grace);
        assert_eq!(tracker.step(Some(&p), t0), Step::Wait(Some(t0 + grace)));
        assert_eq!(
            tracker.step(Some(&p), t0 + Duration::from_secs(5)),
            Step::Wait(Some(t0 + grace))
        );
        assert_eq!(
            tracker.step(Some(&p), t0 + grace),
            Step::Due(trouble.clone())
        );
        // A pull that recovers resets the grace.
        let ok = pod(
            json!({}),
            statuses("Running", running(), running(), running()),
        );
        assert_eq!(tracker.step(Some(&ok), t0 + grace), Step::Wait(None));
        let later = t0 + Duration::from_secs(100);
        assert_eq!(
            tracker.step(Some(&p), later),
            Step::Wait(Some(later + grace))
        );
        // poll_timeout cuts the grace short for a pod that never started.
        let mut tracker = Tracker::new(t0, Duration::from_secs(3), grace);
        assert_eq!(
            tracker.step(Some(&p), t0 + Duration::from_secs(1)),
            Step::Wait(Some(t0 + Duration::from_secs(3)))
        );
        assert_eq!(
            tracker.step(Some(&p), t0 + Duration::from_secs(3)),
            Step::Due(trouble)
        );
    }

    #[test]
    fn unschedulable_after_poll_timeout() {
        let message = "0/1 nodes are available: 1 node(s) didn't match node selector.";
        let p = pod(
            json!({}),
            json!({
                "phase": "Pending",
                "conditions": [{ "type": "PodScheduled", "status": "False",
                                 "reason": "Unschedulable", "message": message }],
            }),
        );
        assert_eq!(pod_end(&p), None);
        assert!(!started(&p));
        let t0 = Instant::now();
        let poll = Duration::from_secs(3);
        let mut tracker = Tracker::new(t0, poll, Duration::from_secs(20));
        assert_eq!(tracker.step(Some(&p), t0), Step::Wait(Some(t0 + poll)));
        let end = PodEnd::Unschedulable {
            message: message.into(),
            waited: poll,
        };
        assert_eq!(tracker.step(Some(&p), t0 + poll), Step::Due(end.clone()));
        assert_eq!(end.failure_reason(), Some("runner_system_failure"));
        assert_eq!(
            end.log_line(),
            "The job pod could not be scheduled within 3s (poll_timeout): 0/1 nodes are \
             available: 1 node(s) didn't match node selector."
        );
    }

    #[test]
    fn start_timeout_names_the_waiting_container_and_stops_once_started() {
        let p = pod(
            json!({}),
            statuses(
                "Pending",
                waiting("ContainerCreating", "pulling"),
                running(),
                running(),
            ),
        );
        let t0 = Instant::now();
        let poll = Duration::from_secs(3);
        let mut tracker = Tracker::new(t0, poll, Duration::from_secs(20));
        let Step::Due(end) = tracker.step(Some(&p), t0 + poll) else {
            panic!()
        };
        assert_eq!(
            end,
            PodEnd::StartTimeout {
                phase: "Pending".into(),
                waiting: Some("container \"build\" is ContainerCreating: pulling".into()),
                waited: poll,
            }
        );
        // Unseen pods time out too (the caller confirms with a get first).
        let mut tracker = Tracker::new(t0, poll, Duration::from_secs(20));
        assert!(matches!(
            tracker.step(None, t0 + poll),
            Step::Due(PodEnd::StartTimeout { .. })
        ));
        // Once started, poll_timeout no longer applies.
        let up = pod(
            json!({}),
            statuses("Running", running(), running(), running()),
        );
        assert!(started(&up));
        let mut tracker = Tracker::new(t0, poll, Duration::from_secs(20));
        assert_eq!(tracker.step(Some(&up), t0), Step::Wait(None));
        assert_eq!(tracker.step(Some(&up), t0 + poll * 100), Step::Wait(None));
    }

    #[test]
    fn container_config_error_and_failed_pods() {
        let p = pod(
            json!({}),
            statuses(
                "Pending",
                waiting("CreateContainerConfigError", "secret \"x\" not found"),
                running(),
                running(),
            ),
        );
        let end = pod_end(&p).unwrap();
        assert!(
            matches!(end, PodEnd::ContainerConfigError { .. }),
            "{end:?}"
        );
        assert_eq!(end.failure_reason(), Some("runner_configuration_error"));
        // The kubelet refused the pod: no container ever ran.
        let refused = pod(
            json!({}),
            json!({ "phase": "Failed", "reason": "OutOfcpu",
                    "message": "Pod Node didn't have enough resource: cpu" }),
        );
        assert_eq!(
            pod_end(&refused),
            Some(PodEnd::PodFailed {
                phase: "Failed".into(),
                reason: Some("OutOfcpu".into()),
                message: Some("Pod Node didn't have enough resource: cpu".into()),
            })
        );
    }

    #[test]
    fn odd_pods_do_not_panic() {
        for status in [
            json!(null),
            json!({}),
            json!({ "phase": "Running" }),
            json!({ "containerStatuses": [] }),
            json!({ "containerStatuses": [{ "name": "helper", "image": "", "imageID": "",
                    "ready": false, "restartCount": 0 }] }),
            json!({ "containerStatuses": [{ "name": "helper", "image": "", "imageID": "",
                    "ready": false, "restartCount": 0, "state": {} }] }),
        ] {
            let p = pod(json!({}), status);
            assert_eq!(pod_end(&p), None, "{p:?}");
            assert!(!started(&p));
            let _ = not_started(Some(&p), Duration::ZERO).log_line();
        }
        let bare: Pod = serde_json::from_value(json!({"metadata": {}})).unwrap();
        assert_eq!(pod_end(&bare), None);
        assert_eq!(gone_end(Some(&bare)), PodEnd::Deleted);
    }
}
