//! The job-pod lifecycle (`oar_kube::lifecycle`) against the real cluster of
//! `scripts/cluster up`: real pods built by `oar_kube::pod::build_pod`, the code under test
//! authenticated with a ServiceAccount token bound to a Role of exactly `rbac::RULES`, API calls
//! counted from the audit log. Skipped loudly without a cluster, failed when
//! `OAR_REQUIRE_CLUSTER=1`.
//!
//! The busybox image stands in for the helper: its command is replaced by a script that writes
//! a termination message (or not) the way the agent does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, AttachParams, EvictParams};
use oar_config::KubernetesConfig;
use oar_config::kubernetes::PullPolicy;
use oar_gitlab::JobResponse;
use oar_job::vars::Variables;
use oar_kube::lifecycle::{
    FinalState, JobPod, JobPods, LifecycleOptions, PodEnd, TerminationMessage,
};
use oar_kube::pod::{BuiltPod, HELPER_CONTAINER, PodInput, build_payload_secret, build_pod};
use oar_kube::rbac::RULES;
use oar_testkit::cluster::{
    BUSYBOX_IMAGE, TestCluster, TestNamespace, service_account_user, wait_for,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "lifecycle-tok";
const SA: &str = "oar-manager";
/// Bound of every wait in these tests (pods start in ~2 s on the test cluster).
const LONG: Duration = Duration::from_secs(90);

/// A namespace, a ServiceAccount client limited to `rbac::RULES`, and a shutdown token.
struct Env {
    ns: TestNamespace,
    client: kube::Client,
    shutdown: CancellationToken,
}

impl Env {
    async fn new(prefix: &str) -> Option<Env> {
        let cluster = TestCluster::from_env().await?;
        let ns = cluster.namespace(prefix).await.unwrap();
        let rules = RULES
            .iter()
            .map(|r| PolicyRule {
                api_groups: Some(r.api_groups.iter().map(|s| s.to_string()).collect()),
                resources: Some(r.resources.iter().map(|s| s.to_string()).collect()),
                verbs: r.verbs.iter().map(|s| s.to_string()).collect(),
                ..PolicyRule::default()
            })
            .collect();
        let client = ns.service_account_client(SA, rules).await.unwrap();
        Some(Env {
            ns,
            client,
            shutdown: CancellationToken::new(),
        })
    }

    fn name(&self) -> String {
        self.ns.name().to_owned()
    }

    async fn job_pods(&self) -> JobPods {
        JobPods::start_with(
            self.client.clone(),
            &[self.name()],
            TOKEN,
            self.shutdown.clone(),
            LifecycleOptions {
                cleanup_timeout: Duration::from_secs(30),
                ..LifecycleOptions::default()
            },
        )
        .await
        .unwrap()
    }

    async fn finish(self) {
        self.shutdown.cancel();
        self.ns.delete().await.unwrap();
    }
}

/// The job pod of job `id` from the real builder (busybox everywhere, `imagePullPolicy:
/// Never`, grace period 1 s), then `edit`ed, and its payload Secret.
fn job(namespace: &str, id: i64, edit: impl FnOnce(&mut Pod)) -> (BuiltPod, Secret) {
    let config = KubernetesConfig {
        image: Some(BUSYBOX_IMAGE.to_owned()),
        helper_image: Some(BUSYBOX_IMAGE.to_owned()),
        pull_policy: vec![PullPolicy::Never],
        pod_termination_grace_period_seconds: Some(1),
        ..KubernetesConfig::default()
    };
    let mut response = JobResponse {
        id,
        ..JobResponse::default()
    };
    response.job_info.name = "test".to_owned();
    response.job_info.project_id = 1;
    let vars = Variables::new();
    let flags = BTreeMap::new();
    let patches: BTreeMap<PathBuf, String> = BTreeMap::new();
    let pod_name = format!("runner-{TOKEN}-job-{id}");
    let input = PodInput {
        config: &config,
        feature_flags: &flags,
        patch_files: &patches,
        job: &response,
        vars: &vars,
        pod_name: &pod_name,
        namespace_default: namespace,
        runner_short_token: TOKEN,
        runner_name: "lifecycle-test",
        builds_dir: "/builds",
        project_dir: "/builds/group/project",
        timeout: Duration::from_secs(3600),
        default_helper_image: BUSYBOX_IMAGE,
        id_tokens: &oar_kube::identity::IdTokens::new(),
    };
    let mut built = build_pod(&input).unwrap();
    edit(&mut built.pod);
    let labels = built.pod.metadata.labels.clone().unwrap_or_default();
    let secret = build_payload_secret(&pod_name, &built.namespace, labels, b"{\"id\":1}");
    (built, secret)
}

fn container<'a>(pod: &'a mut Pod, name: &str) -> &'a mut k8s_openapi::api::core::v1::Container {
    pod.spec
        .as_mut()
        .unwrap()
        .containers
        .iter_mut()
        .find(|c| c.name == name)
        .unwrap()
}

fn sh(pod: &mut Pod, name: &str, script: &str) {
    container(pod, name).command = Some(vec!["sh".into(), "-c".into(), script.into()]);
    container(pod, name).args = None;
}

/// A helper that writes `message` as its termination message and exits 0.
fn helper_says(message: &TerminationMessage) -> String {
    format!(
        "printf '%s' '{}' > /dev/termination-log; exit 0",
        message.to_json()
    )
}

fn helper_state(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerState> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == HELPER_CONTAINER)?
        .state
        .as_ref()
}

async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + 'static,
    K::DynamicType: Default,
{
    wait_for(api, name, LONG, |o: Option<&K>| o.is_none())
        .await
        .unwrap_or_else(|e| panic!("{name} still there: {e}"));
}

async fn wait_end(pods: &JobPods, pod: &JobPod, poll_timeout: Duration) -> PodEnd {
    tokio::time::timeout(LONG, pods.wait(pod, poll_timeout))
        .await
        .unwrap_or_else(|_| panic!("no end for {} within {LONG:?}", pod.display_name()))
}

#[tokio::test]
async fn finished_helper_reports_its_message_and_cleanup_removes_pod_and_secret() {
    let Some(env) = Env::new("lc-finished").await else {
        return;
    };
    let pods = env.job_pods().await;
    let message = TerminationMessage::new(FinalState::Failed, Some("script_failure".into()), true);
    let (built, secret) = job(&env.name(), 101, |p| {
        sh(p, HELPER_CONTAINER, &helper_says(&message))
    });
    let pod = pods.create(&built, secret).await.unwrap();
    assert!(!pod.adopted());
    assert_eq!(pod.job_id(), Some(101));

    let end = wait_end(&pods, &pod, Duration::from_secs(60)).await;
    assert_eq!(end, PodEnd::Finished(message), "{}", end.log_line());
    assert_eq!(end.failure_reason(), Some("script_failure"));
    assert!(!end.needs_report());
    assert_eq!(pods.running(), 0);

    // The Secret got its owner.
    let secrets: Api<Secret> = env.ns.api();
    let owners = secrets
        .get(pod.name())
        .await
        .unwrap()
        .metadata
        .owner_references
        .unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].uid.as_str()),
        ("Pod", pod.uid())
    );

    pods.cleanup(&pod).await;
    pods.cleanup(&pod).await; // idempotent
    wait_gone(&env.ns.api::<Pod>(), pod.name()).await;
    // Deleted by the garbage collector through its ownerReference, not by the manager.
    wait_gone(&secrets, pod.name()).await;
    env.finish().await;
}

#[tokio::test]
async fn missing_local_image_is_an_image_pull_failure() {
    let Some(env) = Env::new("lc-pull").await else {
        return;
    };
    let pods = env.job_pods().await;
    let (built, secret) = job(&env.name(), 102, |p| {
        container(p, "build").image = Some("oar.test/does-not-exist:1".into());
        sh(p, HELPER_CONTAINER, "sleep 3600");
    });
    let pod = pods.create(&built, secret).await.unwrap();
    let end = wait_end(&pods, &pod, Duration::from_secs(60)).await;
    let PodEnd::ImagePullFailed {
        container,
        image,
        reason,
        ..
    } = &end
    else {
        panic!("{end:?}");
    };
    assert_eq!(
        (container.as_str(), image.as_str(), reason.as_str()),
        ("build", "oar.test/does-not-exist:1", "ErrImageNeverPull")
    );
    assert_eq!(end.failure_reason(), Some("image_pull_failure"));
    assert!(
        end.log_line().contains("oar.test/does-not-exist:1"),
        "{}",
        end.log_line()
    );
    eprintln!("log line: {}", end.log_line());
    pods.cleanup(&pod).await;
    env.finish().await;
}

#[tokio::test]
async fn unschedulable_pod_fails_after_poll_timeout_with_the_schedulers_message() {
    let Some(env) = Env::new("lc-unsched").await else {
        return;
    };
    let pods = env.job_pods().await;
    let (built, secret) = job(&env.name(), 103, |p| {
        p.spec.as_mut().unwrap().node_selector =
            Some(BTreeMap::from([("oar.test/nowhere".into(), "true".into())]));
    });
    let pod = pods.create(&built, secret).await.unwrap();
    let poll_timeout = Duration::from_secs(4);
    let started = Instant::now();
    let end = wait_end(&pods, &pod, poll_timeout).await;
    assert!(started.elapsed() >= poll_timeout, "{:?}", started.elapsed());
    let PodEnd::Unschedulable { message, waited } = &end else {
        panic!("{end:?}");
    };
    // 1.20 says "didn't match Pod's node affinity" for a nodeSelector, newer versions
    // "didn't match Pod's node affinity/selector".
    assert!(
        message.starts_with("0/1 nodes are available") && message.contains("didn't match"),
        "{message}"
    );
    assert_eq!(*waited, poll_timeout);
    assert_eq!(end.failure_reason(), Some("runner_system_failure"));
    eprintln!("log line: {}", end.log_line());
    pods.cleanup(&pod).await;
    wait_gone(&env.ns.api::<Pod>(), pod.name()).await;
    env.finish().await;
}

#[tokio::test]
async fn build_container_over_its_memory_limit_is_oom_killed() {
    let Some(env) = Env::new("lc-oom").await else {
        return;
    };
    let pods = env.job_pods().await;
    let (built, secret) = job(&env.name(), 104, |p| {
        let build = container(p, "build");
        build.command = Some(vec![
            "sh".into(),
            "-c".into(),
            "exec dd if=/dev/zero of=/dev/null bs=64M count=4".into(),
        ]);
        build.args = None;
        let resources = build.resources.get_or_insert_with(Default::default);
        resources.limits = Some(BTreeMap::from([("memory".into(), Quantity("16Mi".into()))]));
        sh(p, HELPER_CONTAINER, "sleep 3600");
    });
    let pod = pods.create(&built, secret).await.unwrap();
    let end = wait_end(&pods, &pod, Duration::from_secs(60)).await;
    assert_eq!(
        end,
        PodEnd::OomKilled {
            container: "build".into(),
            memory_limit: Some("16Mi".into())
        },
        "{}",
        end.log_line()
    );
    eprintln!("log line: {}", end.log_line());
    pods.cleanup(&pod).await;
    env.finish().await;
}

#[tokio::test]
async fn evicted_pod_ends_the_job() {
    let Some(env) = Env::new("lc-evict").await else {
        return;
    };
    let pods = env.job_pods().await;
    let (built, secret) = job(&env.name(), 105, |p| sh(p, HELPER_CONTAINER, "sleep 3600"));
    let pod = pods.create(&built, secret).await.unwrap();
    env.ns
        .wait_pod(pod.name(), LONG, |p| {
            helper_state(p).is_some_and(|s| s.running.is_some())
        })
        .await
        .unwrap();
    let admin: Api<Pod> = env.ns.api();
    admin
        .evict(pod.name(), &EvictParams::default())
        .await
        .unwrap();
    let end = wait_end(&pods, &pod, Duration::from_secs(60)).await;
    // Kubernetes 1.26+ marks the pod with a DisruptionTarget condition; before, an eviction
    // through the API is a plain deletion and looks like one.
    let version = env.ns.client().apiserver_version().await.unwrap();
    let minor: u32 = version
        .minor
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(0);
    if minor >= 26 {
        assert!(matches!(end, PodEnd::Evicted { .. }), "{end:?}");
    } else {
        assert_eq!(end, PodEnd::Deleted, "{}", end.log_line());
    }
    assert_eq!(end.failure_reason(), Some("runner_system_failure"));
    eprintln!("log line: {}", end.log_line());
    pods.cleanup(&pod).await;
    env.finish().await;
}

#[tokio::test]
async fn one_job_costs_at_most_four_writes_and_no_pod_gets() {
    let Some(env) = Env::new("lc-budget").await else {
        return;
    };
    let pods = env.job_pods().await;
    let message = TerminationMessage::new(FinalState::Success, None, true);
    let (built, secret) = job(&env.name(), 106, |p| {
        // Runs a moment, so the wait sees several pod updates through the watch.
        sh(
            p,
            HELPER_CONTAINER,
            &format!("sleep 2; {}", helper_says(&message)),
        )
    });
    let pod = pods.create(&built, secret).await.unwrap();
    let end = wait_end(&pods, &pod, Duration::from_secs(60)).await;
    assert_eq!(end, PodEnd::Finished(message));
    pods.cleanup(&pod).await;
    wait_gone(&env.ns.api::<Secret>(), pod.name()).await;

    let user = service_account_user(env.ns.name(), SA);
    let calls = env.ns.api_calls(Some(&user)).await.unwrap();
    eprintln!("API calls of the manager for one job:\n{calls}");
    let writes: usize = ["create", "update", "patch", "delete", "deletecollection"]
        .iter()
        .map(|verb| calls.events().iter().filter(|e| e.verb == *verb).count())
        .sum();
    assert!(writes <= 3, "{writes} writes:\n{calls}");
    assert_eq!(calls.count("create", "secrets"), 1, "{calls}");
    assert_eq!(calls.count("create", "pods"), 1, "{calls}");
    assert_eq!(calls.count("patch", "secrets"), 0, "{calls}");
    assert_eq!(calls.count("delete", "pods"), 1, "{calls}");
    assert_eq!(calls.count("get", "pods"), 0, "polled the pod:\n{calls}");
    assert_eq!(calls.count("list", "pods"), 1, "{calls}");
    env.finish().await;
}

#[tokio::test]
async fn a_restarted_manager_adopts_the_running_pod_and_sees_it_end() {
    let Some(env) = Env::new("lc-restart").await else {
        return;
    };
    let message = TerminationMessage::new(FinalState::Success, None, false);
    let (built, secret) = job(&env.name(), 107, |p| {
        sh(
            p,
            HELPER_CONTAINER,
            &format!(
                "while [ ! -e /tmp/go ]; do sleep 0.2; done; {}",
                helper_says(&message)
            ),
        )
    });
    let first = env.job_pods().await;
    let created = first.create(&built, secret.clone()).await.unwrap();
    drop(first); // the manager restarts

    let second = env.job_pods().await;
    let listed = second.list();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let info = &listed[0];
    assert_eq!(
        (info.job_id, info.name.as_str()),
        (Some(107), created.name())
    );
    assert!(!info.helper_finished);
    assert_eq!(info.end, None);
    assert_eq!(second.running(), 1);
    let adopted = info.job_pod();
    assert_eq!(adopted.uid(), created.uid());

    // Creating it again (a restart between create calls) adopts it too.
    let again = second.create(&built, secret).await.unwrap();
    assert!(again.adopted());
    assert_eq!(again.uid(), created.uid());

    // Let the job end.
    env.ns
        .wait_pod(created.name(), LONG, |p| {
            helper_state(p).is_some_and(|s| s.running.is_some())
        })
        .await
        .unwrap();
    let admin: Api<Pod> = env.ns.api();
    let mut touch = admin
        .exec(
            created.name(),
            ["touch", "/tmp/go"],
            &AttachParams::default()
                .container(HELPER_CONTAINER)
                .stderr(false),
        )
        .await
        .unwrap();
    if let Some(status) = touch.take_status() {
        let _ = tokio::time::timeout(LONG, status).await;
    }
    let end = wait_end(&second, &adopted, Duration::from_secs(60)).await;
    assert_eq!(end, PodEnd::Finished(message));
    assert!(end.needs_report(), "delivered: false");
    assert_eq!(second.running(), 0);
    second.cleanup(&adopted).await;
    wait_gone(&admin, created.name()).await;
    env.finish().await;
}
