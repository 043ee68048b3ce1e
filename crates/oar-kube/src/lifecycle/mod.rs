//! The job-pod lifecycle, the manager's side of the Kubernetes executor: create a job's
//! Secret and Pod, watch them, adopt them after a restart, map failures the pod cannot report
//! to GitLab failure reasons, clean up. Pure mechanism over kube-rs; it never talks to GitLab.
//!
//! # API calls
//!
//! - One shared watch per namespace ([`JobPods::start`]): `kube_runtime::watcher` (list, then
//!   watch from the list's resourceVersion, resumed after a broken connection, relisting only
//!   when the API server says the version is gone; the watcher's default backoff between
//!   failures) into a reflector store, filtered by [`crate::pod::runner_selector`]. Jobs
//!   waiting in that namespace are woken through a `tokio::sync::watch` channel fed by the
//!   watch's events: no polling.
//! - Per job ([`JobPods::create`], [`JobPods::cleanup`]): `create` Pod, `create` Secret (the
//!   payload, with its ownerReference to the Pod, so it is garbage-collected with it), `delete`
//!   Pod: 3 writes. The job's registry credentials go into that same Secret.
//! - A `get` Pod only off the normal path: after an `AlreadyExists` (adoption), and when a
//!   timed failure (`poll_timeout`, image pull grace) is due while the watch is broken or has
//!   not shown the pod yet, to confirm it with fresh data.
//! - A `get` Secret only for a pod adopted after a restart ([`JobPods::payload`]): the new
//!   manager reads the job's payload (its id and token) so that it can report the job when the
//!   pod ends without reporting it.
//!
//! All of it fits [`crate::rbac::RULES`].
//!
//! # Restart safety
//!
//! All state is in the cluster: the pod's labels ([`crate::pod::LABEL_RUNNER`],
//! [`crate::pod::LABEL_JOB_ID`]), the Secret, the helper's termination message. A new
//! [`JobPods`] lists the runner's pods ([`JobPods::list`]), and [`JobPods::wait`] on a
//! [`JobPodInfo::job_pod`] picks up where the old manager left off. An API server outage does
//! not end a job: the watch resumes and [`JobPods::wait`] keeps waiting.

mod create;
mod end;
mod error;
mod message;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::{Client, ResourceExt};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use end::{
    PodEnd, disruption, gone_end, helper_finished, helper_message, image_pull_trouble, not_started,
    pod_end, reason, started,
};
pub use error::LifecycleError;
pub use message::{FinalState, TERMINATION_MESSAGE_LIMIT, TerminationMessage};

use crate::pod::{BuiltPod, LABEL_JOB_ID, runner_selector};
use end::{Step, Tracker};
use error::{is_not_found, status_code};
use watch::{ALL_NAMESPACES, NsWatch, View};

/// Settings of the lifecycle (the `[runners.kubernetes]` keys that are not the pod's).
#[derive(Debug, Clone)]
pub struct LifecycleOptions {
    /// How long [`JobPods::start`] waits for each namespace's first list.
    pub start_timeout: Duration,
    /// Grace period of the pod deletion in [`JobPods::cleanup`]
    /// (`cleanup_grace_period_seconds`); `None`: the pod's own. Default 0: a finished pod has
    /// nothing left to do.
    pub cleanup_grace_period_seconds: Option<u32>,
    /// Bound of [`JobPods::cleanup`] (`cleanup_resources_timeout`, default 5 min).
    pub cleanup_timeout: Duration,
    /// How long an image pull failure the kubelet retries (`ErrImagePull`,
    /// `ImagePullBackOff`) may last before the job fails (`poll_timeout` still applies).
    pub image_pull_grace: Duration,
    /// When a timed failure is due but the watch is broken, how long until the next attempt
    /// to confirm it with a `get`.
    pub confirm_retry: Duration,
}

impl Default for LifecycleOptions {
    fn default() -> Self {
        LifecycleOptions {
            start_timeout: Duration::from_secs(60),
            cleanup_grace_period_seconds: Some(0),
            cleanup_timeout: Duration::from_secs(300),
            image_pull_grace: Duration::from_secs(20),
            confirm_retry: Duration::from_secs(5),
        }
    }
}

/// A job pod this manager created or adopted: what [`JobPods::wait`] and
/// [`JobPods::cleanup`] need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPod {
    namespace: String,
    name: String,
    uid: String,
    job_id: Option<u64>,
    adopted: bool,
    /// The namespace watch's list count when the pod was known to exist.
    seen_at_seq: u64,
}

impl JobPod {
    /// The pod's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The pod's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pod's UID.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The GitLab job id (label [`LABEL_JOB_ID`]).
    pub fn job_id(&self) -> Option<u64> {
        self.job_id
    }

    /// Whether the pod existed before (`create` after a restart, or from [`JobPods::list`]).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// `namespace/name`.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A pod of this runner as the watch sees it now ([`JobPods::list`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPodInfo {
    /// The GitLab job id (label [`LABEL_JOB_ID`]), when readable.
    pub job_id: Option<u64>,
    /// The pod's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its UID.
    pub uid: String,
    /// Its phase (`Pending`, `Running`, ...).
    pub phase: Option<String>,
    /// Whether the helper container has terminated.
    pub helper_finished: bool,
    /// The helper's termination message, if it left one.
    pub termination: Option<TerminationMessage>,
    /// How it ended, if it has ([`pod_end`]).
    pub end: Option<PodEnd>,
    /// Whether it is being deleted.
    pub deleting: bool,
    seen_at_seq: u64,
}

impl JobPodInfo {
    /// A handle to wait for and clean up this pod.
    pub fn job_pod(&self) -> JobPod {
        JobPod {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            job_id: self.job_id,
            adopted: true,
            seen_at_seq: self.seen_at_seq,
        }
    }
}

/// The job pods of one runner: one shared watch per namespace, and the calls that create,
/// wait for and clean up a job's pod. Dropping it stops the watches.
pub struct JobPods {
    client: Client,
    selector: String,
    required_labels: Vec<(String, String)>,
    namespaces: BTreeMap<String, Arc<NsWatch>>,
    options: LifecycleOptions,
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
}

impl std::fmt::Debug for JobPods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobPods")
            .field("selector", &self.selector)
            .field("namespaces", &self.namespaces.keys().collect::<Vec<_>>())
            .field("options", &self.options)
            .finish()
    }
}

impl JobPods {
    /// Starts one shared watch per namespace for the pods labelled with this runner's short
    /// token and waits for their first lists, with [`LifecycleOptions::default`].
    pub async fn start(
        client: Client,
        namespaces: &[String],
        runner_short_token: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, LifecycleError> {
        Self::start_with(
            client,
            namespaces,
            runner_short_token,
            shutdown,
            LifecycleOptions::default(),
        )
        .await
    }

    /// [`JobPods::start`] with options.
    pub async fn start_with(
        client: Client,
        namespaces: &[String],
        runner_short_token: &str,
        shutdown: CancellationToken,
        options: LifecycleOptions,
    ) -> Result<Self, LifecycleError> {
        let keys: Vec<String> = namespaces
            .iter()
            .filter(|ns| !ns.is_empty())
            .cloned()
            .collect();
        Self::start_watches(client, keys, runner_short_token, shutdown, options).await
    }

    /// Starts one shared watch of this runner's pods in all namespaces, for a runner whose jobs
    /// may choose their namespace (`namespace_overwrite_allowed`). The manager then needs
    /// to list and watch pods cluster-wide: a ClusterRole with [`crate::rbac::RULES`].
    pub async fn start_cluster_wide(
        client: Client,
        runner_short_token: &str,
        shutdown: CancellationToken,
        options: LifecycleOptions,
    ) -> Result<Self, LifecycleError> {
        let keys = vec![ALL_NAMESPACES.to_owned()];
        Self::start_watches(client, keys, runner_short_token, shutdown, options).await
    }

    /// Whether this runner watches pods in every namespace.
    pub fn is_cluster_wide(&self) -> bool {
        self.namespaces.contains_key(ALL_NAMESPACES)
    }

    async fn start_watches(
        client: Client,
        namespaces: Vec<String>,
        runner_short_token: &str,
        shutdown: CancellationToken,
        options: LifecycleOptions,
    ) -> Result<Self, LifecycleError> {
        let selector = runner_selector(runner_short_token);
        let required_labels = selector
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let stop = shutdown.child_token();
        let stop_on_drop = stop.clone().drop_guard();
        let mut watches = BTreeMap::new();
        for ns in namespaces {
            if watches.contains_key(&ns) {
                continue;
            }
            let watch = NsWatch::start(client.clone(), &ns, &selector, stop.clone());
            watches.insert(ns, watch);
        }
        let deadline = Instant::now() + options.start_timeout;
        for watch in watches.values() {
            let mut changes = watch.changes.subscribe();
            loop {
                if watch.listed() {
                    break;
                }
                let (forbidden, last_error) = watch.start_problem();
                if forbidden {
                    return Err(LifecycleError::WatchStart {
                        namespace: watch.namespace.clone(),
                        timeout: Duration::ZERO,
                        last_error: last_error.unwrap_or_default(),
                    });
                }
                tokio::select! {
                    () = stop.cancelled() => return Err(LifecycleError::ShuttingDown),
                    changed = tokio::time::timeout_at(deadline, changes.changed()) => {
                        if !matches!(changed, Ok(Ok(()))) {
                            return Err(LifecycleError::WatchStart {
                                namespace: watch.namespace.clone(),
                                timeout: options.start_timeout,
                                last_error: last_error
                                    .unwrap_or_else(|| "no answer".to_owned()),
                            });
                        }
                    }
                }
            }
        }
        Ok(JobPods {
            client,
            selector,
            required_labels,
            namespaces: watches,
            options,
            stop,
            _stop_on_drop: stop_on_drop,
        })
    }

    /// The label selector of this runner's pods.
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The watched namespaces (an empty name: all of them, see
    /// [`JobPods::start_cluster_wide`]).
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }

    fn watch_of(&self, namespace: &str) -> Result<&Arc<NsWatch>, LifecycleError> {
        self.namespaces
            .get(namespace)
            .or_else(|| self.namespaces.get(ALL_NAMESPACES))
            .ok_or_else(|| LifecycleError::NotWatched {
                namespace: namespace.to_owned(),
                watched: self.namespaces.keys().cloned().collect(),
            })
    }

    /// Creates the job's Pod, then its payload Secret (holding the registry credentials too,
    /// if any: see [`BuiltPod::registry_secret`]) with an ownerReference to the Pod, so it is
    /// garbage-collected with it.
    ///
    /// Two writes. An `AlreadyExists` for the same job (a manager restarted between these
    /// calls) is adopted; a pod of another job under the same name is a
    /// [`LifecycleError::Conflict`]. When the Secret cannot be created, the pod created here
    /// is deleted again (it could never start).
    pub async fn create(
        &self,
        built: &BuiltPod,
        payload_secret: Secret,
    ) -> Result<JobPod, LifecycleError> {
        let watch = self.watch_of(&built.namespace)?;
        let name = built.pod.metadata.name.clone().unwrap_or_default();
        let labels = built.pod.metadata.labels.clone().unwrap_or_default();
        for (key, value) in &self.required_labels {
            if labels.get(key) != Some(value) {
                return Err(LifecycleError::NotLabelled {
                    name,
                    label: key.clone(),
                    value: value.clone(),
                });
            }
        }
        if self.stop.is_cancelled() {
            return Err(LifecycleError::ShuttingDown);
        }
        let created = create::create_objects(&self.client, built, payload_secret).await?;
        // Read after the pod exists: a list that begins later must show it.
        let seen_at_seq = watch.init_seq();
        Ok(JobPod {
            namespace: created.namespace,
            name: created.name,
            uid: created.uid,
            job_id: created.job_id,
            adopted: created.adopted,
            seen_at_seq,
        })
    }

    /// This runner's pods as the watches see them now (after a restart: the jobs to adopt).
    pub fn list(&self) -> Vec<JobPodInfo> {
        let mut out = Vec::new();
        for watch in self.namespaces.values() {
            let seq = watch.init_seq();
            for pod in watch.store.state() {
                out.push(info(&pod, &watch.namespace, seq));
            }
        }
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    /// The job payload the pod's helper reads ([`crate::pod::PAYLOAD_KEY`] of the Secret named
    /// after the pod), for a manager that adopted the pod and must report its job should the pod
    /// end without reporting. One `get` Secret. `Ok(None)` when the Secret is gone or is not
    /// this pod's (its ownerReference names another pod, or its job label differs).
    pub async fn payload(&self, pod: &JobPod) -> Result<Option<Vec<u8>>, LifecycleError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &pod.namespace);
        let secret = secrets
            .get_opt(&pod.name)
            .await
            .map_err(LifecycleError::api(format!(
                "reading Secret {}/{}",
                pod.namespace, pod.name
            )))?;
        let Some(secret) = secret else {
            return Ok(None);
        };
        let owners = secret
            .metadata
            .owner_references
            .as_deref()
            .unwrap_or_default();
        let ours = if owners.is_empty() {
            let label = secret
                .labels()
                .get(LABEL_JOB_ID)
                .and_then(|j| j.parse().ok());
            label.is_some() && label == pod.job_id
        } else {
            owners.iter().any(|o| o.kind == "Pod" && o.uid == pod.uid)
        };
        if !ours {
            return Ok(None);
        }
        Ok(secret
            .data
            .and_then(|mut d| d.remove(crate::pod::PAYLOAD_KEY))
            .map(|b| b.0))
    }

    /// How many of this runner's pods have not ended (and are not being deleted): the jobs
    /// that count against `concurrent` / `limit`.
    pub fn running(&self) -> usize {
        self.namespaces
            .values()
            .flat_map(|w| w.store.state())
            .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_end(p).is_none())
            .count()
    }

    /// Waits until the job pod ends, and says how. See [`JobPods::wait_with`].
    pub async fn wait(&self, pod: &JobPod, poll_timeout: Duration) -> PodEnd {
        self.wait_with(pod, poll_timeout, self.options.image_pull_grace)
            .await
    }

    /// Waits, from watch events only, until the job pod ends: the helper's termination
    /// message, or a failure the pod cannot report ([`PodEnd`]). `poll_timeout` bounds the
    /// time until every container has started (then an unschedulable pod fails with the
    /// scheduler's message); an image pull failure the kubelet retries fails after
    /// `image_pull_grace`.
    ///
    /// A broken watch does not end the wait: it resumes, and a timed failure that falls due
    /// meanwhile is first confirmed with one `get` of the pod (retried while the API server is
    /// unreachable). Returns [`PodEnd::Unwatched`] when the manager shuts down.
    pub async fn wait_with(
        &self,
        pod: &JobPod,
        poll_timeout: Duration,
        image_pull_grace: Duration,
    ) -> PodEnd {
        let watch = match self.watch_of(&pod.namespace) {
            Ok(w) => w.clone(),
            Err(e) => {
                return PodEnd::Unwatched {
                    reason: e.to_string(),
                };
            }
        };
        let mut changes = watch.changes.subscribe();
        let mut tracker = Tracker::new(Instant::now(), poll_timeout, image_pull_grace);
        loop {
            changes.borrow_and_update();
            let now = Instant::now();
            let view = watch.view(&pod.namespace, &pod.name, &pod.uid, pod.seen_at_seq);
            let step = match &view {
                View::Gone(last) => return gone_end(last.as_deref()),
                View::Present(p) => tracker.step(Some(p), now),
                View::Unseen => tracker.step(None, now),
            };
            let wake_at = match step {
                Step::End(end) => return end,
                Step::Wait(at) => at,
                Step::Due(end) => {
                    let stale = watch.degraded() || matches!(view, View::Unseen);
                    if !stale {
                        return end;
                    }
                    match self.confirm(pod, &mut tracker).await {
                        Confirmed::End(end) => return end,
                        Confirmed::Wait(at) => at,
                    }
                }
            };
            let sleep = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.stop.cancelled() => {
                    return PodEnd::Unwatched { reason: "the runner is shutting down".to_owned() };
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return PodEnd::Unwatched { reason: "the pod watch stopped".to_owned() };
                    }
                }
                () = sleep => {}
            }
        }
    }

    /// A timed failure is due but the watch's view may be stale: one `get` decides.
    async fn confirm(&self, pod: &JobPod, tracker: &mut Tracker) -> Confirmed {
        let now = Instant::now();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        match pods.get_opt(&pod.name).await {
            Ok(Some(fresh)) if fresh.metadata.uid.as_deref() == Some(pod.uid.as_str()) => {
                match tracker.step(Some(&fresh), now) {
                    Step::End(end) | Step::Due(end) => Confirmed::End(end),
                    Step::Wait(at) => Confirmed::Wait(at),
                }
            }
            Ok(Some(_)) | Ok(None) => Confirmed::End(PodEnd::Deleted),
            Err(e) => {
                tracing::warn!(pod = %pod.display_name(), error = %e,
                    "cannot confirm the pod's state; waiting for the API server");
                Confirmed::Wait(Some(now + self.options.confirm_retry))
            }
        }
    }

    /// Deletes the job pod (background propagation: its Secret goes with it through its
    /// ownerReference). Idempotent (a 404
    /// is done), bounded by [`LifecycleOptions::cleanup_timeout`], retried while the API
    /// server is unreachable; errors are only logged.
    pub async fn cleanup(&self, pod: &JobPod) {
        let work = self.cleanup_inner(pod);
        if tokio::time::timeout(self.options.cleanup_timeout, work)
            .await
            .is_err()
        {
            tracing::warn!(pod = %pod.display_name(), timeout = ?self.options.cleanup_timeout,
                "Error cleaning up pod: timed out");
        }
        if let Ok(watch) = self.watch_of(&pod.namespace) {
            watch.forget(&pod.uid);
        }
    }

    async fn cleanup_inner(&self, pod: &JobPod) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let params = DeleteParams {
            grace_period_seconds: self.options.cleanup_grace_period_seconds,
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(Preconditions {
                uid: Some(pod.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        retry_delete("pod", &pod.display_name(), || {
            pods.delete(&pod.name, &params)
        })
        .await;
    }
}

enum Confirmed {
    End(PodEnd),
    Wait(Option<Instant>),
}

/// Deletes with retries on transport errors (API server unreachable); 404 and 409 (the uid
/// precondition: another object of that name) are done; other answers are logged.
async fn retry_delete<F, Fut, T>(kind: &str, name: &str, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut backoff = Duration::from_millis(250);
    loop {
        match call().await {
            Ok(_) => return,
            Err(e) if is_not_found(&e) || status_code(&e) == Some(409) => return,
            Err(e) if status_code(&e).is_some_and(|c| c < 500 && c != 429) => {
                tracing::warn!(%kind, %name, error = %e, "Error cleaning up {kind}");
                return;
            }
            Err(e) => {
                tracing::debug!(%kind, %name, error = %e, "cleanup failed; retrying");
                // Backoff between retries of a failed call, not synchronisation.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn info(pod: &Pod, namespace: &str, seq: u64) -> JobPodInfo {
    JobPodInfo {
        job_id: pod.labels().get(LABEL_JOB_ID).and_then(|j| j.parse().ok()),
        name: pod.name_any(),
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.to_owned()),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        phase: pod.status.as_ref().and_then(|s| s.phase.clone()),
        helper_finished: helper_finished(pod),
        termination: helper_message(pod),
        end: pod_end(pod),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        seen_at_seq: seq,
    }
}
