//! Creating a job's objects: its Pod, then its payload Secret, created with an ownerReference
//! to the Pod so that it is garbage-collected with it.
//!
//! Two writes per job, and no moment when a Secret exists without its owner: a manager killed
//! between the two calls leaves a pod that cannot start (its payload volume is missing), which
//! the next manager adopts and fails after `poll_timeout`, and deletes; nothing leaks. The pod
//! waits for the Secret without cost: the kubelet mounts the volume only once the pod is
//! scheduled, by which time the Secret, created right after the pod, exists. The same calls
//! after a manager restart between them: an `AlreadyExists` for the same job is adopted. The job's registry credentials (GitLab sends
//! some with nearly every job) do not cost a Secret of their own: they go into the payload
//! Secret, which then has the type the kubelet requires of an image pull Secret
//! (`kubernetes.io/dockerconfigjson`), and the pod pulls with it ([`merge_registry_secret`]).

use k8s_openapi::api::core::v1::{KeyToPath, LocalObjectReference, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use super::error::{LifecycleError, is_already_exists, is_not_found};
use crate::pod::{BuiltPod, LABEL_JOB_ID, PAYLOAD_KEY};

/// What [`create_objects`] made.
#[derive(Debug, Clone)]
pub(crate) struct Created {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) job_id: Option<u64>,
    /// Whether the pod existed already (adopted after a restart).
    pub(crate) adopted: bool,
}

fn job_label(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<&str> {
    meta.labels.as_ref()?.get(LABEL_JOB_ID).map(String::as_str)
}

async fn create_secret(
    api: &Api<Secret>,
    secret: &Secret,
    namespace: &str,
) -> Result<(), LifecycleError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), secret).await {
        Ok(_) => Ok(()),
        // The Secret is named after the pod, which is named after the job: it is this job's,
        // left by a manager that restarted after creating it.
        Err(e) if is_already_exists(&e) => {
            tracing::info!(namespace, secret = %name, "secret exists already: adopting it");
            Ok(())
        }
        Err(e) => Err(LifecycleError::api(format!(
            "creating Secret {namespace}/{name}"
        ))(e)),
    }
}

fn prepare_secret(
    mut secret: Secret,
    namespace: &str,
    what: &'static str,
) -> Result<Secret, LifecycleError> {
    if secret.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err(LifecycleError::Invalid {
            what,
            problem: "it has no metadata.name".to_owned(),
        });
    }
    match secret.metadata.namespace.as_deref() {
        None => secret.metadata.namespace = Some(namespace.to_owned()),
        Some(ns) if ns == namespace => {}
        Some(ns) => {
            return Err(LifecycleError::Invalid {
                what,
                problem: format!("its namespace {ns:?} is not the pod's {namespace:?}"),
            });
        }
    }
    // The owner is set once the pod exists.
    secret.metadata.owner_references = None;
    Ok(secret)
}

/// Puts the registry credentials Secret's data into the payload Secret, which takes its type
/// (`kubernetes.io/dockerconfigjson`: the kubelet reads image pull credentials only from
/// Secrets of that type, and the API server only checks that `.dockerconfigjson` is JSON), and
/// points the pod's `imagePullSecrets` entry at the payload Secret. The helper's payload volume
/// then projects only the payload key. One Secret per job: one create.
pub(crate) fn merge_registry_secret(pod: &mut Pod, payload: &mut Secret, registry: &Secret) {
    let payload_name = payload.metadata.name.clone().unwrap_or_default();
    let registry_name = registry.metadata.name.clone().unwrap_or_default();
    if let Some(kind) = &registry.type_ {
        payload.type_ = Some(kind.clone());
    }
    let data = payload.data.get_or_insert_with(Default::default);
    for (key, value) in registry.data.iter().flatten() {
        data.entry(key.clone()).or_insert_with(|| value.clone());
    }
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let mut pulls_with_payload = false;
    for reference in spec.image_pull_secrets.iter_mut().flatten() {
        if reference.name == registry_name || reference.name == payload_name {
            reference.name.clone_from(&payload_name);
            pulls_with_payload = true;
        }
    }
    if !pulls_with_payload {
        spec.image_pull_secrets
            .get_or_insert_with(Vec::new)
            .push(LocalObjectReference {
                name: payload_name.clone(),
            });
    }
    for volume in spec.volumes.iter_mut().flatten() {
        if let Some(source) = volume
            .secret
            .as_mut()
            .filter(|s| s.secret_name.as_deref() == Some(payload_name.as_str()))
        {
            source.items.get_or_insert_with(|| {
                vec![KeyToPath {
                    key: PAYLOAD_KEY.to_owned(),
                    path: PAYLOAD_KEY.to_owned(),
                    mode: None,
                }]
            });
        }
    }
}

/// Creates the Pod, then the payload Secret (with the registry credentials, if any) owned by
/// it. When the Secret cannot be created, the Pod created here is deleted again: it could never
/// start.
pub(crate) async fn create_objects(
    client: &Client,
    built: &BuiltPod,
    mut payload_secret: Secret,
) -> Result<Created, LifecycleError> {
    let namespace = built.namespace.as_str();
    let mut pod = built.pod.clone();
    if let Some(registry) = &built.registry_secret {
        merge_registry_secret(&mut pod, &mut payload_secret, registry);
    }
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| LifecycleError::Invalid {
            what: "pod",
            problem: "it has no metadata.name".to_owned(),
        })?;
    match pod.metadata.namespace.as_deref() {
        None => pod.metadata.namespace = Some(namespace.to_owned()),
        Some(ns) if ns == namespace => {}
        Some(ns) => {
            return Err(LifecycleError::Invalid {
                what: "pod",
                problem: format!("its namespace {ns:?} is not BuiltPod::namespace {namespace:?}"),
            });
        }
    }
    let mut secret = prepare_secret(payload_secret, namespace, "payload Secret")?;
    let job_id = job_label(&pod.metadata).map(str::to_owned);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);

    let (created, adopted) = match pods.create(&PostParams::default(), &pod).await {
        Ok(created) => (created, false),
        Err(e) if is_already_exists(&e) => {
            // A manager that restarted between its create calls: the same job's pod is adopted.
            let existing = pods.get(&name).await.map_err(LifecycleError::api(format!(
                "reading Pod {namespace}/{name}"
            )))?;
            let theirs = job_label(&existing.metadata).map(str::to_owned);
            if theirs != job_id {
                return Err(LifecycleError::Conflict {
                    kind: "Pod",
                    namespace: namespace.to_owned(),
                    name,
                    owner: match theirs {
                        Some(id) => format!("job {id}"),
                        None => "something else (no job id label)".to_owned(),
                    },
                });
            }
            tracing::info!(namespace, pod = %name, "pod exists already: adopting it");
            (existing, true)
        }
        Err(e) => {
            return Err(LifecycleError::api(format!(
                "creating Pod {namespace}/{name}"
            ))(e));
        }
    };
    let uid = created
        .metadata
        .uid
        .clone()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| LifecycleError::Invalid {
            what: "pod",
            problem: "the API server returned it without a uid".to_owned(),
        })?;

    // Garbage-collected with the pod. Not `blockOwnerDeletion`: that needs permission on the
    // pod's finalizers, and nothing waits for them.
    secret.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Pod".to_owned(),
        name: name.clone(),
        uid: uid.clone(),
        ..OwnerReference::default()
    }]);
    if let Err(e) = create_secret(&secrets, &secret, namespace).await {
        if !adopted {
            delete_pod_quietly(&pods, namespace, &name, &uid).await;
        }
        return Err(e);
    }
    Ok(Created {
        namespace: namespace.to_owned(),
        name,
        uid,
        job_id: job_id.and_then(|j| j.parse().ok()),
        adopted,
    })
}

/// Deletes the pod `name` with `uid` (a pod that cannot start); errors are only logged.
async fn delete_pod_quietly(api: &Api<Pod>, namespace: &str, name: &str, uid: &str) {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => tracing::warn!(namespace, pod = name, error = %e, "Error cleaning up pod"),
    }
}
