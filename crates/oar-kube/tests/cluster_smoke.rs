//! Smoke tests of the test cluster (`scripts/cluster up`, `scripts/images`) through kube-rs:
//! what the Kubernetes executor relies on works there. Skipped loudly without a cluster, failed
//! when `OAR_REQUIRE_CLUSTER=1`.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{Api, ListParams, LogParams, PostParams};
use oar_testkit::cluster::{
    ADMIN_USER, BUSYBOX_IMAGE, TestCluster, TestNamespace, service_account_user, wait_for,
};
use serde_json::json;
use tokio::io::AsyncReadExt;

const POD_TIMEOUT: Duration = Duration::from_secs(60);

/// A busybox pod (`imagePullPolicy: Never`, grace period 1 s, never restarted) from a spec
/// fragment merged over the defaults.
fn pod(name: &str, spec: serde_json::Value) -> Pod {
    let mut base = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "spec": { "restartPolicy": "Never", "terminationGracePeriodSeconds": 1 },
    });
    let target = base["spec"].as_object_mut().unwrap();
    for (k, v) in spec.as_object().unwrap() {
        target.insert(k.clone(), v.clone());
    }
    serde_json::from_value(base).unwrap()
}

fn container(name: &str, script: &str) -> serde_json::Value {
    json!({
        "name": name,
        "image": BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
    })
}

fn terminated(pod: &Pod, container: &str) -> Option<ContainerStateTerminated> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == container)?
        .state
        .as_ref()?
        .terminated
        .clone()
}

async fn create_and_wait_terminated(
    ns: &TestNamespace,
    pod: Pod,
    container: &str,
) -> (Pod, ContainerStateTerminated) {
    let name = pod.metadata.name.clone().unwrap();
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let done = ns
        .wait_pod(&name, POD_TIMEOUT, |p| terminated(p, container).is_some())
        .await
        .unwrap_or_else(|e| panic!("pod {name}: {e}"));
    let state = terminated(&done, container).unwrap();
    (done, state)
}

#[tokio::test]
async fn init_container_empty_dir_exit_code_and_logs() {
    let Some(cluster) = TestCluster::from_env().await else {
        return;
    };
    let ns = cluster.namespace("smoke-init").await.unwrap();
    let mut init = container("init", "echo from-init > /work/greeting");
    init["volumeMounts"] = json!([{ "name": "work", "mountPath": "/work" }]);
    let mut main = container("main", "cat /work/greeting; echo to-stderr >&2; exit 3");
    main["volumeMounts"] = json!([{ "name": "work", "mountPath": "/work" }]);
    let spec = json!({
        "initContainers": [init],
        "containers": [main],
        "volumes": [{ "name": "work", "emptyDir": {} }],
    });
    let (done, state) = create_and_wait_terminated(&ns, pod("steps", spec), "main").await;

    assert_eq!(state.exit_code, 3, "{state:?}");
    let init_state = done
        .status
        .as_ref()
        .unwrap()
        .init_container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!(init_state.exit_code, 0, "{init_state:?}");
    let pods: Api<Pod> = ns.api();
    let logs = pods
        .logs(
            "steps",
            &LogParams {
                container: Some("main".into()),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    // stdout and stderr are two pipes: the kubelet's log keeps each stream's order, not the
    // order between them.
    let mut lines: Vec<&str> = logs.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["from-init", "to-stderr"], "{logs}");

    let calls = ns.api_calls(Some(ADMIN_USER)).await.unwrap();
    assert_eq!(calls.count("create", "pods"), 1, "{calls}");
    assert_eq!(calls.count("get", "pods/log"), 1, "{calls}");
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn memory_limit_is_enforced_by_the_oom_killer() {
    let Some(cluster) = TestCluster::from_env().await else {
        return;
    };
    let ns = cluster.namespace("smoke-oom").await.unwrap();
    // dd fills a 64 MiB buffer: far over the 16 MiB limit.
    let mut hog = container("hog", "exec dd if=/dev/zero of=/dev/null bs=64M count=4");
    hog["resources"] = json!({ "limits": { "memory": "16Mi" } });
    let (_, state) =
        create_and_wait_terminated(&ns, pod("hog", json!({ "containers": [hog] })), "hog").await;
    assert_eq!(state.reason.as_deref(), Some("OOMKilled"), "{state:?}");
    assert_eq!(state.exit_code, 137, "{state:?}");
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn host_network_pod_reaches_the_host_loopback() {
    let Some(cluster) = TestCluster::from_env().await else {
        return;
    };
    let ns = cluster.namespace("smoke-hostnet").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = container(
        "client",
        &format!("echo hello-from-pod | nc 127.0.0.1 {port}"),
    );
    let spec = json!({ "hostNetwork": true, "containers": [client] });
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &pod("hostnet", spec))
        .await
        .unwrap();

    let (mut conn, _) = tokio::time::timeout(POD_TIMEOUT, listener.accept())
        .await
        .expect("the hostNetwork pod never connected")
        .unwrap();
    let mut got = String::new();
    tokio::time::timeout(POD_TIMEOUT, conn.read_to_string(&mut got))
        .await
        .expect("no data from the pod")
        .unwrap();
    assert_eq!(got, "hello-from-pod\n");
    drop(conn);
    let done = ns
        .wait_pod("hostnet", POD_TIMEOUT, |p| {
            terminated(p, "client").is_some()
        })
        .await
        .unwrap();
    assert_eq!(terminated(&done, "client").unwrap().exit_code, 0);
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn service_account_token_is_limited_by_rbac() {
    let Some(cluster) = TestCluster::from_env().await else {
        return;
    };
    let ns = cluster.namespace("smoke-rbac").await.unwrap();
    let rules = vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["pods".into()]),
        verbs: vec!["list".into(), "get".into()],
        ..PolicyRule::default()
    }];
    let sa = ns.service_account_client("lister", rules).await.unwrap();

    let pods: Api<Pod> = Api::namespaced(sa.clone(), ns.name());
    pods.list(&ListParams::default()).await.unwrap();

    let secrets: Api<Secret> = Api::namespaced(sa.clone(), ns.name());
    let secret: Secret = serde_json::from_value(json!({ "metadata": { "name": "nope" } })).unwrap();
    match secrets.create(&PostParams::default(), &secret).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("creating a secret with the SA token must be forbidden: {other:?}"),
    }
    // Nor may it read pods elsewhere.
    let elsewhere: Api<Pod> = Api::namespaced(sa, "default");
    match elsewhere.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("listing pods in another namespace must be forbidden: {other:?}"),
    }

    let calls = ns
        .api_calls(Some(&service_account_user(ns.name(), "lister")))
        .await
        .unwrap();
    assert_eq!(calls.count("list", "pods"), 1, "{calls}");
    assert_eq!(calls.count("create", "secrets"), 1, "{calls}");
    assert_eq!(calls.total(), 2, "{calls}");
    let denied = calls
        .events()
        .iter()
        .find(|e| e.resource == "secrets")
        .unwrap();
    assert_eq!(denied.code, Some(403), "{denied:?}");
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn a_dropped_namespace_is_deleted() {
    let Some(cluster) = TestCluster::from_env().await else {
        return;
    };
    let ns = cluster.namespace("smoke-drop").await.unwrap();
    let name = ns.name().to_owned();
    // What a panicking test does: the namespace is dropped without `delete`.
    drop(ns);
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    wait_for(&namespaces, &name, POD_TIMEOUT, |n: Option<&Namespace>| {
        n.is_none_or(|n| n.metadata.deletion_timestamp.is_some())
    })
    .await
    .unwrap();
}
