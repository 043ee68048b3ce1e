//! Helpers of the end-to-end tests on the real test cluster (`scripts/cluster up`): a
//! Kubernetes runner's config, a fresh namespace, `oar run-single` with the cluster's
//! kubeconfig, and what a job left behind.

use super::{Fixture, RUNNER_TOKEN};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::runtime::watcher;
use oar_testkit::cluster::{DEBIAN_IMAGE, HELPER_IMAGE, TestCluster, TestNamespace, wait_for};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::Child;

/// How long one `oar run-single` of these tests may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(240);

/// config.toml lines of a Kubernetes runner in `ns`. Job pods use the host network so that
/// they reach FakeGitlab on 127.0.0.1 (the test cluster has no pod routing). `kube_extra` goes
/// into `[runners.kubernetes]` (`poll_timeout` is 120 unless it sets it), `runner_tail` (whole
/// tables such as `[runners.cache]`) after it.
pub fn kube_runner(ns: &str, kube_extra: &str, runner_tail: &str) -> String {
    let poll_timeout = if kube_extra.contains("poll_timeout") {
        ""
    } else {
        "    poll_timeout = 120\n"
    };
    format!(
        r#"  executor = "kubernetes"
  builds_dir = "/builds"
  cache_dir = "/cache"
  [runners.feature_flags]
    FF_USE_ADVANCED_POD_SPEC_CONFIGURATION = true
  [runners.kubernetes]
    namespace = "{ns}"
    image = "{DEBIAN_IMAGE}"
    helper_image = "{HELPER_IMAGE}"
    pull_policy = "never"
{poll_timeout}{kube_extra}
    [[runners.kubernetes.pod_spec]]
      name = "host-network"
      patch_type = "merge"
      patch = '{{"hostNetwork": true}}'
{runner_tail}
"#
    )
}

/// Writes config.toml with one Kubernetes runner (see [`kube_runner`]).
pub fn write_kube_config(f: &Fixture, ns: &str, kube_extra: &str, runner_tail: &str) {
    let text = format!(
        "concurrent = 4\ncheck_interval = 1\n\n[[runners]]\n  name = \"k8s-e2e\"\n  url = \"{}\"\n  token = \"{}\"\n{}",
        f.gl.url(),
        RUNNER_TOKEN,
        kube_runner(ns, kube_extra, runner_tail)
    );
    std::fs::write(f.config_path(), text).expect("write config");
}

/// The cluster, a fresh namespace `<prefix>-<unique>` and a fixture; `None` (test skipped
/// loudly) without a cluster.
pub async fn setup(prefix: &str) -> Option<(TestCluster, TestNamespace, Fixture)> {
    let cluster = TestCluster::from_env().await?;
    let ns = cluster.namespace(prefix).await.expect("test namespace");
    let f = Fixture::new().await;
    Some((cluster, ns, f))
}

/// `oar run-single` against the cluster until `max_builds` jobs ran.
pub fn run_single_command(
    f: &Fixture,
    cluster: &TestCluster,
    max_builds: u32,
) -> tokio::process::Command {
    let mut oar = f.oar();
    oar.env("KUBECONFIG", cluster.kubeconfig_path())
        .args([
            "run-single",
            "--max-builds",
            &max_builds.to_string(),
            "--wait-timeout",
            "60",
            "-c",
        ])
        .arg(f.config_path());
    oar
}

/// Runs `oar run-single` to the end (bounded by [`RUN_TIMEOUT`]).
pub async fn run_single(f: &Fixture, cluster: &TestCluster, max_builds: u32) -> Output {
    tokio::time::timeout(
        RUN_TIMEOUT,
        run_single_command(f, cluster, max_builds).output(),
    )
    .await
    .expect("run-single ends")
    .expect("runs")
}

/// Starts `oar run-single` in the background (stdout and stderr captured).
pub fn spawn_run_single(f: &Fixture, cluster: &TestCluster, max_builds: u32) -> Child {
    run_single_command(f, cluster, max_builds)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("oar run-single starts")
}

/// Waits for a background `oar run-single` to end (bounded by [`RUN_TIMEOUT`]).
pub async fn finish_run(child: Child) -> Output {
    tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .expect("run-single ends")
        .expect("runs")
}

/// What is left in the namespace once the pods' Secrets had time to be garbage collected
/// (they follow their pod through an ownerReference): (pods, secrets).
pub async fn leftovers(ns: &TestNamespace) -> (Vec<String>, Vec<String>) {
    let (pods, secrets) = list_leftovers(ns).await;
    let pods_api = ns.api::<Pod>();
    for name in &pods {
        let _ = wait_for(&pods_api, name, Duration::from_secs(30), |p| p.is_none()).await;
    }
    let secrets_api = ns.api::<Secret>();
    for name in &secrets {
        let _ = wait_for(&secrets_api, name, Duration::from_secs(30), |s| s.is_none()).await;
    }
    list_leftovers(ns).await
}

async fn list_leftovers(ns: &TestNamespace) -> (Vec<String>, Vec<String>) {
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let secrets = ns
        .api::<Secret>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|s| s.type_.as_deref() != Some("kubernetes.io/service-account-token"))
        .filter_map(|s| s.metadata.name)
        .collect();
    (pods, secrets)
}

/// Asserts that no pod and no Secret (but ServiceAccount tokens) is left in the namespace.
pub async fn assert_nothing_left(ns: &TestNamespace) {
    let (pods, secrets) = leftovers(ns).await;
    assert!(pods.is_empty(), "pods left: {pods:?}");
    assert!(secrets.is_empty(), "secrets left: {secrets:?}");
}

/// A pod's name and its `spec.serviceAccountName`.
pub type SeenPod = (String, Option<String>);

/// The pods created in a namespace while it runs, with their ServiceAccount (a watch started
/// before the runner, so no pod escapes it).
pub struct PodLog {
    seen: Arc<Mutex<Vec<SeenPod>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodLog {
    pub async fn start(ns: &TestNamespace) -> PodLog {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let stream = watcher(ns.api::<Pod>(), watcher::Config::default());
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut ready = Some(ready_tx);
                let mut stream = std::pin::pin!(stream);
                while let Ok(Some(event)) = stream.try_next().await {
                    let pod = match event {
                        watcher::Event::Apply(p) | watcher::Event::InitApply(p) => p,
                        watcher::Event::InitDone => {
                            if let Some(tx) = ready.take() {
                                let _ = tx.send(());
                            }
                            continue;
                        }
                        _ => continue,
                    };
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let sa = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.service_account_name.clone());
                    let mut seen = seen.lock().unwrap();
                    if !seen.iter().any(|(n, _)| n == &name) {
                        seen.push((name, sa));
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .expect("the pod watch lists")
            .expect("the pod watch runs");
        PodLog { seen, task }
    }

    pub fn pods(&self) -> Vec<SeenPod> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for PodLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A busybox httpd service on `port` (job pods share the host's network) serving a page with
/// `marker`, aliased `web`: (the job's `services`, the script line defining `fetch HOST`, which
/// retries until HOST serves the marker: bash's /dev/tcp, since the Debian image has no HTTP
/// client, and the service may still be starting).
pub fn web_service(port: u16, marker: &str) -> (serde_json::Value, String) {
    let serve = format!(
        "mkdir -p /tmp/www && echo {marker} > /tmp/www/index.html && exec httpd -f -p {port} -h /tmp/www"
    );
    let services = serde_json::json!([{
        "name": oar_testkit::cluster::BUSYBOX_IMAGE,
        "alias": "web",
        "entrypoint": ["sh", "-c"],
        "command": [serve],
    }]);
    let fetch = format!(
        r#"fetch() {{ for i in $(seq 1 100); do if (exec 3<>"/dev/tcp/$1/{port}" && printf 'GET /index.html HTTP/1.0\r\n\r\n' >&3 && cat <&3) >"/tmp/$1.out" 2>/dev/null; then grep -q {marker} "/tmp/$1.out" && return 0; fi; sleep 0.1; done; return 1; }}"#
    );
    (services, fetch)
}
