//! Creating a job's objects: Secret(s), Pod, then the Secrets' ownerReference to the Pod.
//!
//! Three writes for a job without registry credentials (five with them), and the same calls
//! after a manager restart between two of them: an `AlreadyExists` for the same job is adopted.

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::error::{LifecycleError, is_already_exists, is_not_found};
use crate::pod::{BuiltPod, LABEL_JOB_ID};

/// What [`create_objects`] made.
#[derive(Debug, Clone)]
pub(crate) struct Created {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) job_id: Option<u64>,
    /// Secrets that did not get their ownerReference: cleanup deletes them itself.
    pub(crate) unowned_secrets: Vec<String>,
    /// Whether the pod existed already (adopted after a restart).
    pub(crate) adopted: bool,
}

fn job_label(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<&str> {
    meta.labels.as_ref()?.get(LABEL_JOB_ID).map(String::as_str)
}

/// A Secret's creation: created now, or there already.
enum SecretOutcome {
    Created,
    Existed,
}

async fn create_secret(
    api: &Api<Secret>,
    secret: &Secret,
    namespace: &str,
) -> Result<SecretOutcome, LifecycleError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), secret).await {
        Ok(_) => Ok(SecretOutcome::Created),
        // The Secret is named after the pod, which is named after the job: it is this job's,
        // left by a manager that restarted before it created the pod.
        Err(e) if is_already_exists(&e) => {
            tracing::info!(namespace, secret = %name, "secret exists already: adopting it");
            Ok(SecretOutcome::Existed)
        }
        Err(e) => Err(LifecycleError::api(format!(
            "creating Secret {namespace}/{name}"
        ))(e)),
    }
}

async fn delete_secret_quietly(api: &Api<Secret>, namespace: &str, name: &str) {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => {
            tracing::warn!(namespace, secret = name, error = %e, "Error cleaning up secrets")
        }
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

/// Creates the registry Secret (if any) and the payload Secret, the Pod, then points the
/// Secrets' ownerReference at the Pod. On a failure to create the pod, the Secrets created
/// here are deleted again.
pub(crate) async fn create_objects(
    client: &Client,
    built: &BuiltPod,
    payload_secret: Secret,
) -> Result<Created, LifecycleError> {
    let namespace = built.namespace.as_str();
    let mut pod = built.pod.clone();
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
    let job_id = job_label(&pod.metadata).map(str::to_owned);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);

    let mut to_own = Vec::new();
    let mut created_here = Vec::new();
    let all_secrets = built
        .registry_secret
        .clone()
        .map(|s| (s, "registry Secret"))
        .into_iter()
        .chain([(payload_secret, "payload Secret")]);
    for (secret, what) in all_secrets {
        let secret = prepare_secret(secret, namespace, what)?;
        let secret_name = secret.metadata.name.clone().unwrap_or_default();
        match create_secret(&secrets, &secret, namespace).await {
            Ok(SecretOutcome::Created) => created_here.push(secret_name.clone()),
            Ok(SecretOutcome::Existed) => {}
            Err(e) => {
                for s in &created_here {
                    delete_secret_quietly(&secrets, namespace, s).await;
                }
                return Err(e);
            }
        }
        to_own.push(secret_name);
    }

    let (created, adopted) = match pods.create(&PostParams::default(), &pod).await {
        Ok(created) => (created, false),
        Err(e) if is_already_exists(&e) => {
            // A manager that restarted between its create calls: the same job's pod is adopted.
            let existing = pods.get(&name).await.map_err(LifecycleError::api(format!(
                "reading Pod {namespace}/{name}"
            )))?;
            let theirs = job_label(&existing.metadata).map(str::to_owned);
            if theirs != job_id {
                for s in &created_here {
                    delete_secret_quietly(&secrets, namespace, s).await;
                }
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
            for s in &created_here {
                delete_secret_quietly(&secrets, namespace, s).await;
            }
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

    // Garbage-collect the Secrets with the pod. Not `blockOwnerDeletion`: that needs
    // permission on the pod's finalizers, and nothing waits for them.
    let owner = json!({
        "metadata": {
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Pod",
                "name": name,
                "uid": uid,
            }]
        }
    });
    let mut unowned_secrets = Vec::new();
    for secret_name in to_own {
        let patched = secrets
            .patch(&secret_name, &PatchParams::default(), &Patch::Merge(&owner))
            .await;
        if let Err(e) = patched {
            tracing::warn!(namespace, secret = %secret_name, error = %e,
                "could not set the secret's owner to its pod; cleanup deletes it");
            unowned_secrets.push(secret_name);
        }
    }
    Ok(Created {
        namespace: namespace.to_owned(),
        name,
        uid,
        job_id: job_id.and_then(|j| j.parse().ok()),
        unowned_secrets,
        adopted,
    })
}
