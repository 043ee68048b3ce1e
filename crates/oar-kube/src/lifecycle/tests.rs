//! The lifecycle's API interaction, checked against kube-rs's mock service
//! (`tower_test::mock::pair`): which requests it makes, in which order, and what it does with
//! the answers.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{LocalObjectReference, Pod, Secret, SecretVolumeSource, Volume};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower_test::mock;

use super::create::create_objects;
use super::*;
use crate::pod::{BuiltPod, build_payload_secret, runner_selector};

type Handle = mock::Handle<Request<Body>, Response<Body>>;
type Reply = mock::SendResponse<Response<Body>>;

const NS: &str = "ci";
const NAME: &str = "runner-abc-project-1-concurrent-0-job-7";
const TOKEN: &str = "abc";

fn labels(job: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/managed-by".to_owned(), "oar".to_owned()),
        ("oar.dev/runner".to_owned(), TOKEN.to_owned()),
        ("oar.dev/job-id".to_owned(), job.to_owned()),
    ])
}

fn pod_json(uid: &str, job: &str, rv: &str, helper: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": NAME, "namespace": NS, "uid": uid, "resourceVersion": rv,
                      "labels": labels(job) },
        "spec": { "containers": [
            { "name": "build", "image": "oar.test/busybox:latest" },
            { "name": "helper", "image": "oar.test/busybox:latest" },
        ] },
        "status": {
            "phase": "Running",
            "containerStatuses": [
                { "name": "build", "image": "b", "imageID": "", "ready": true, "restartCount": 0,
                  "state": { "running": {} } },
                { "name": "helper", "image": "h", "imageID": "", "ready": true, "restartCount": 0,
                  "state": helper },
            ],
        },
    })
}

fn built() -> BuiltPod {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": NAME, "namespace": NS, "labels": labels("7") },
        "spec": { "containers": [
            { "name": "build", "image": "oar.test/busybox:latest" },
            { "name": "helper", "image": "oar.test/busybox:latest" },
        ] },
    }))
    .unwrap();
    BuiltPod {
        pod,
        namespace: NS.to_owned(),
        registry_secret: None,
        warnings: Vec::new(),
        pull_policies: BTreeMap::new(),
    }
}

fn payload() -> Secret {
    build_payload_secret(NAME, NS, labels("7"), b"{\"id\":7}")
}

fn respond(reply: Reply, status: StatusCode, body: &Value) {
    let mut response = Response::new(Body::from(serde_json::to_vec(body).unwrap()));
    *response.status_mut() = status;
    reply.send_response(response);
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": reason, "message": message })
}

/// The next request: method, path, query, JSON body (Null if none).
async fn next(handle: &mut Pin<&mut Handle>) -> (Method, String, String, Value, Reply) {
    let (request, reply) = tokio::time::timeout(Duration::from_secs(600), handle.next_request())
        .await
        .expect("a request")
        .expect("the client is alive");
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (method, path, query, body, reply)
}

fn secrets_path() -> String {
    format!("/api/v1/namespaces/{NS}/secrets")
}
fn pods_path() -> String {
    format!("/api/v1/namespaces/{NS}/pods")
}

/// The pod as the API server returns it from a create: with a uid.
fn with_uid(mut body: Value, uid: &str) -> Value {
    body["metadata"]["uid"] = uid.into();
    body
}

fn owner(uid: &str) -> Value {
    json!([{ "apiVersion": "v1", "kind": "Pod", "name": NAME, "uid": uid }])
}

#[tokio::test]
async fn create_issues_pod_create_then_an_owned_secret_create() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        let (m, path, _, body, reply) = next(&mut handle).await;
        assert_eq!((m, path.as_str()), (Method::POST, pods_path().as_str()));
        assert_eq!(body["metadata"]["labels"]["oar.dev/job-id"], "7");
        respond(reply, StatusCode::CREATED, &with_uid(body, "uid-1"));

        // The Secret is owned by the pod from its creation: no patch, no moment without owner.
        let (m, path, _, body, reply) = next(&mut handle).await;
        assert_eq!((m, path.as_str()), (Method::POST, secrets_path().as_str()));
        assert_eq!(body["metadata"]["name"], NAME);
        assert_eq!(body["metadata"]["ownerReferences"], owner("uid-1"));
        respond(reply, StatusCode::CREATED, &body);
        // Nothing else: the client is dropped once create returns.
        assert!(handle.next_request().await.is_none(), "a third request");
    });
    let client = Client::new(service, NS);
    let created = create_objects(&client, &built(), payload()).await.unwrap();
    drop(client);
    server.await.unwrap();
    assert_eq!(created.uid, "uid-1");
    assert_eq!(created.job_id, Some(7));
    assert!(!created.adopted);
}

#[tokio::test]
async fn registry_credentials_go_into_the_payload_secret_the_pod_pulls_with() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let registry = format!("{NAME}-registry");
    let server = tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        let (m, path, _, body, reply) = next(&mut handle).await;
        assert_eq!((m, path.as_str()), (Method::POST, pods_path().as_str()));
        assert_eq!(body["spec"]["imagePullSecrets"], json!([{ "name": NAME }]));
        assert_eq!(
            body["spec"]["volumes"][0]["secret"],
            json!({ "secretName": NAME, "items": [{ "key": "payload.json", "path": "payload.json" }] })
        );
        respond(reply, StatusCode::CREATED, &with_uid(body, "uid-1"));

        let (m, path, _, body, reply) = next(&mut handle).await;
        assert_eq!((m, path.as_str()), (Method::POST, secrets_path().as_str()));
        assert_eq!(body["metadata"]["name"], NAME);
        assert_eq!(body["type"], "kubernetes.io/dockerconfigjson");
        assert!(body["data"]["payload.json"].is_string(), "{body}");
        assert!(body["data"][".dockerconfigjson"].is_string(), "{body}");
        assert_eq!(body["metadata"]["ownerReferences"], owner("uid-1"));
        respond(reply, StatusCode::CREATED, &body);
        assert!(handle.next_request().await.is_none(), "a third request");
    });
    let mut with_registry = built();
    let spec = with_registry.pod.spec.as_mut().unwrap();
    spec.image_pull_secrets = Some(vec![LocalObjectReference {
        name: registry.clone(),
    }]);
    spec.volumes = Some(vec![Volume {
        name: "payload".to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(NAME.to_owned()),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }]);
    with_registry.registry_secret = Some(
        serde_json::from_value(json!({
            "metadata": { "name": registry, "namespace": NS },
            "type": "kubernetes.io/dockerconfigjson",
            "data": { ".dockerconfigjson": "e30=" },
        }))
        .unwrap(),
    );
    let client = Client::new(service, NS);
    let created = create_objects(&client, &with_registry, payload())
        .await
        .unwrap();
    drop(client);
    server.await.unwrap();
    assert_eq!(created.uid, "uid-1");
}

#[tokio::test]
async fn create_adopts_already_existing_objects_of_the_same_job() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        let (m, path, _, _, reply) = next(&mut handle).await;
        assert_eq!((m, path.as_str()), (Method::POST, pods_path().as_str()));
        respond(
            reply,
            StatusCode::CONFLICT,
            &status_body(409, "AlreadyExists", "pods \"x\" already exists"),
        );
        let (m, path, _, _, reply) = next(&mut handle).await;
        assert_eq!((m, path), (Method::GET, format!("{}/{NAME}", pods_path())));
        respond(
            reply,
            StatusCode::OK,
            &pod_json("uid-old", "7", "5", json!({ "running": {} })),
        );
        let (m, path, _, body, reply) = next(&mut handle).await;
        assert_eq!((m, path.as_str()), (Method::POST, secrets_path().as_str()));
        assert_eq!(body["metadata"]["ownerReferences"], owner("uid-old"));
        respond(
            reply,
            StatusCode::CONFLICT,
            &status_body(409, "AlreadyExists", "secrets \"x\" already exists"),
        );
        assert!(handle.next_request().await.is_none());
    });
    let client = Client::new(service, NS);
    let created = create_objects(&client, &built(), payload()).await.unwrap();
    drop(client);
    server.await.unwrap();
    assert!(created.adopted);
    assert_eq!(created.uid, "uid-old");
}

#[tokio::test]
async fn create_refuses_another_jobs_pod_and_creates_nothing() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        let (_, _, _, _, reply) = next(&mut handle).await;
        respond(
            reply,
            StatusCode::CONFLICT,
            &status_body(409, "AlreadyExists", "pods \"x\" already exists"),
        );
        let (m, _, _, _, reply) = next(&mut handle).await;
        assert_eq!(m, Method::GET);
        respond(
            reply,
            StatusCode::OK,
            &pod_json("uid-other", "8", "5", json!({ "running": {} })),
        );
        assert!(handle.next_request().await.is_none());
    });
    let client = Client::new(service, NS);
    let err = create_objects(&client, &built(), payload())
        .await
        .unwrap_err();
    drop(client);
    server.await.unwrap();
    assert!(
        matches!(&err, LifecycleError::Conflict { owner, .. } if owner == "job 8"),
        "{err}"
    );
}

#[tokio::test]
async fn a_refused_pod_creates_no_secret() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        let (_, _, _, _, reply) = next(&mut handle).await;
        respond(
            reply,
            StatusCode::FORBIDDEN,
            &status_body(
                403,
                "Forbidden",
                "pods \"x\" is forbidden: exceeded quota: q",
            ),
        );
        assert!(handle.next_request().await.is_none());
    });
    let client = Client::new(service, NS);
    let err = create_objects(&client, &built(), payload())
        .await
        .unwrap_err();
    drop(client);
    server.await.unwrap();
    assert!(err.to_string().contains("exceeded quota"), "{err}");
}

#[tokio::test]
async fn a_refused_secret_deletes_the_pod_that_could_never_start() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        let (_, _, _, body, reply) = next(&mut handle).await;
        respond(reply, StatusCode::CREATED, &with_uid(body, "uid-1"));
        let (m, _, _, _, reply) = next(&mut handle).await;
        assert_eq!(m, Method::POST);
        respond(
            reply,
            StatusCode::FORBIDDEN,
            &status_body(403, "Forbidden", "secrets is forbidden: exceeded quota: s"),
        );
        let (m, path, _, body, reply) = next(&mut handle).await;
        assert_eq!(
            (m, path),
            (Method::DELETE, format!("{}/{NAME}", pods_path()))
        );
        assert_eq!(body["preconditions"]["uid"], "uid-1", "{body}");
        respond(reply, StatusCode::OK, &status_body(200, "", ""));
        assert!(handle.next_request().await.is_none());
    });
    let client = Client::new(service, NS);
    let err = create_objects(&client, &built(), payload())
        .await
        .unwrap_err();
    drop(client);
    server.await.unwrap();
    assert!(err.to_string().contains("exceeded quota: s"), "{err}");
}

fn pod_list(items: Vec<Value>, rv: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "PodList", "metadata": { "resourceVersion": rv },
            "items": items })
}

fn watch_body(events: &[(&str, Value)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, object) in events {
        out.extend(serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap());
        out.push(b'\n');
    }
    out
}

/// The first list of the watch: checks its selector, answers with `items`.
async fn answer_list(handle: &mut Pin<&mut Handle>, items: Vec<Value>, rv: &str) {
    let (m, path, query, _, reply) = next(handle).await;
    assert_eq!((m, path.as_str()), (Method::GET, pods_path().as_str()));
    assert!(!query.contains("watch=true"), "{query}");
    assert!(!query.contains("sendInitialEvents"), "{query}");
    let selector = runner_selector(TOKEN)
        .replace('/', "%2F")
        .replace('=', "%3D")
        .replace(',', "%2C");
    assert!(
        query.contains(&format!("labelSelector={selector}")),
        "{query}"
    );
    respond(reply, StatusCode::OK, &pod_list(items, rv));
}

#[tokio::test(start_paused = true)]
async fn wait_rides_out_a_broken_watch_and_sees_the_end_from_events() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let mut handle = Box::pin(handle);
    let running = pod_json("uid-1", "7", "10", json!({ "running": {} }));
    let client = Client::new(service, NS);
    let shutdown = CancellationToken::new();
    let starting = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { JobPods::start(client, &[NS.to_owned()], TOKEN, shutdown).await }
    });
    answer_list(&mut handle.as_mut(), vec![running.clone()], "10").await;
    let pods = starting.await.unwrap().unwrap();

    // After a restart: the pod is listed and counts as running.
    let listed = pods.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].job_id, Some(7));
    assert!(!listed[0].helper_finished);
    assert_eq!(pods.running(), 1);
    let job = listed[0].job_pod();
    let pods = std::sync::Arc::new(pods);
    let waiting = tokio::spawn({
        let pods = pods.clone();
        async move { pods.wait(&job, Duration::from_secs(3)).await }
    });

    // The API server goes away: connections refused, then 503s.
    let (m, _, query, _, reply) = next(&mut handle.as_mut()).await;
    assert_eq!(m, Method::GET);
    assert!(
        query.contains("watch=true") && query.contains("resourceVersion=10"),
        "{query}"
    );
    reply.send_error(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "connection refused",
    ));
    for _ in 0..3 {
        let (m, _, query, _, reply) = next(&mut handle.as_mut()).await;
        assert_eq!(m, Method::GET);
        assert!(
            query.contains("watch=true"),
            "a poll instead of a watch: {query}"
        );
        respond(
            reply,
            StatusCode::SERVICE_UNAVAILABLE,
            &status_body(503, "ServiceUnavailable", "apiserver is shutting down"),
        );
    }
    // Far past poll_timeout: the job is still waited for (it had started).
    assert!(!waiting.is_finished());

    // The watch resumes from where it was and sees the helper finish.
    let (m, _, query, _, reply) = next(&mut handle.as_mut()).await;
    assert_eq!(m, Method::GET);
    assert!(
        query.contains("watch=true") && query.contains("resourceVersion=10"),
        "{query}"
    );
    let message = r#"{"oar":1,"state":"success","delivered":true}"#;
    let finished = pod_json(
        "uid-1",
        "7",
        "11",
        json!({ "terminated": { "exitCode": 0, "reason": "Completed", "message": message } }),
    );
    reply.send_response(Response::new(Body::from(watch_body(&[(
        "MODIFIED", finished,
    )]))));
    let end = waiting.await.unwrap();
    assert_eq!(
        end,
        PodEnd::Finished(TerminationMessage::new(FinalState::Success, None, true))
    );
    assert_eq!(pods.running(), 0);
    assert!(pods.list()[0].helper_finished);
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn wait_reports_a_pod_deleted_by_someone_else() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let mut handle = Box::pin(handle);
    let client = Client::new(service, NS);
    let starting = tokio::spawn(async move {
        JobPods::start(client, &[NS.to_owned()], TOKEN, CancellationToken::new()).await
    });
    let running = pod_json("uid-1", "7", "10", json!({ "running": {} }));
    answer_list(&mut handle.as_mut(), vec![running.clone()], "10").await;
    let pods = std::sync::Arc::new(starting.await.unwrap().unwrap());
    let job = pods.list()[0].job_pod();
    let waiting = tokio::spawn({
        let pods = pods.clone();
        async move { pods.wait(&job, Duration::from_secs(180)).await }
    });
    let (_, _, query, _, reply) = next(&mut handle.as_mut()).await;
    assert!(query.contains("watch=true"), "{query}");
    let mut deleting = running.clone();
    deleting["metadata"]["resourceVersion"] = "11".into();
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
    let mut gone = deleting.clone();
    gone["metadata"]["resourceVersion"] = "12".into();
    reply.send_response(Response::new(Body::from(watch_body(&[
        ("MODIFIED", deleting),
        ("DELETED", gone),
    ]))));
    assert_eq!(waiting.await.unwrap(), PodEnd::Deleted);
    assert_eq!(pods.running(), 0);
    assert!(pods.list().is_empty());
}

#[tokio::test]
async fn start_fails_at_once_when_the_list_is_forbidden() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let mut handle = Box::pin(handle);
    let client = Client::new(service, NS);
    let starting = tokio::spawn(async move {
        JobPods::start(client, &[NS.to_owned()], TOKEN, CancellationToken::new()).await
    });
    let (_, _, _, _, reply) = next(&mut handle.as_mut()).await;
    respond(
        reply,
        StatusCode::FORBIDDEN,
        &status_body(
            403,
            "Forbidden",
            "pods is forbidden: User \"x\" cannot list resource \"pods\"",
        ),
    );
    let err = starting.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, LifecycleError::WatchStart { last_error, .. } if last_error.contains("cannot list")),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn create_refuses_unwatched_namespaces_and_foreign_labels() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let mut handle = Box::pin(handle);
    let client = Client::new(service, NS);
    let starting = tokio::spawn(async move {
        JobPods::start(client, &[NS.to_owned()], TOKEN, CancellationToken::new()).await
    });
    answer_list(&mut handle.as_mut(), vec![], "10").await;
    let pods = starting.await.unwrap().unwrap();
    let mut elsewhere = built();
    elsewhere.namespace = "other".into();
    elsewhere.pod.metadata.namespace = Some("other".into());
    assert!(matches!(
        pods.create(&elsewhere, payload()).await,
        Err(LifecycleError::NotWatched { .. })
    ));
    let mut foreign = built();
    foreign
        .pod
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("oar.dev/runner".into(), "zzz".into());
    assert!(matches!(
        pods.create(&foreign, payload()).await,
        Err(LifecycleError::NotLabelled { .. })
    ));
}

/// `JobPods::start_cluster_wide` against the mock API server, still waiting for its list.
fn start_cluster_wide() -> (
    tokio::task::JoinHandle<Result<JobPods, LifecycleError>>,
    Pin<Box<Handle>>,
) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let starting = tokio::spawn(async move {
        let options = LifecycleOptions::default();
        JobPods::start_cluster_wide(client, TOKEN, CancellationToken::new(), options).await
    });
    (starting, Box::pin(handle))
}

#[tokio::test(start_paused = true)]
async fn a_cluster_wide_runner_watches_all_namespaces_and_creates_where_the_job_says() {
    let (starting, mut handle) = start_cluster_wide();
    // One list of the runner's pods in every namespace.
    let (m, path, query, _, reply) = next(&mut handle.as_mut()).await;
    assert_eq!((m, path.as_str()), (Method::GET, "/api/v1/pods"));
    assert!(query.contains("labelSelector="), "{query}");
    let here = pod_json("uid-1", "7", "10", json!({ "running": {} }));
    let mut there = pod_json("uid-2", "8", "10", json!({ "running": {} }));
    there["metadata"]["namespace"] = "other".into();
    there["metadata"]["name"] = "runner-abc-project-1-concurrent-1-job-8".into();
    respond(reply, StatusCode::OK, &pod_list(vec![here, there], "10"));
    let pods = starting.await.unwrap().unwrap();
    assert!(pods.is_cluster_wide());
    // After a restart, the jobs of both namespaces are adopted and counted.
    let listed = pods.list();
    let seen: Vec<_> = listed
        .iter()
        .map(|p| (p.namespace.as_str(), p.job_id))
        .collect();
    assert_eq!(seen, [(NS, Some(7)), ("other", Some(8))]);
    assert_eq!(pods.running(), 2);

    // A job whose namespace was overwritten: its objects go there.
    let mut elsewhere = built();
    elsewhere.namespace = "other".into();
    elsewhere.pod.metadata.namespace = Some("other".into());
    let mut secret = payload();
    secret.metadata.namespace = Some("other".into());
    let creating = tokio::spawn(async move { pods.create(&elsewhere, secret).await.map(drop) });
    // (The watch's own GET, racing with the create, is left hanging.)
    let mut watches = Vec::new();
    let (m, path, reply) = loop {
        let (m, path, _, _, reply) = next(&mut handle.as_mut()).await;
        if m != Method::GET {
            break (m, path, reply);
        }
        watches.push(reply);
    };
    assert_eq!(
        (m, path.as_str()),
        (Method::POST, "/api/v1/namespaces/other/pods")
    );
    respond(
        reply,
        StatusCode::FORBIDDEN,
        &status_body(403, "Forbidden", "pods is forbidden in namespace other"),
    );
    let err = creating.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("other"), "{err}");
}

#[tokio::test]
async fn a_cluster_wide_watch_that_is_forbidden_says_so() {
    let (starting, mut handle) = start_cluster_wide();
    let (_, path, _, _, reply) = next(&mut handle.as_mut()).await;
    assert_eq!(path, "/api/v1/pods");
    respond(
        reply,
        StatusCode::FORBIDDEN,
        &status_body(
            403,
            "Forbidden",
            "pods is forbidden: cannot list resource \"pods\" at the cluster scope",
        ),
    );
    let err = starting.await.unwrap().unwrap_err().to_string();
    assert!(
        err.contains("all namespaces") && err.contains("cluster scope"),
        "{err}"
    );
}
