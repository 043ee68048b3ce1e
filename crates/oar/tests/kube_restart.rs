//! Restart safety and the API budget of the Kubernetes executor, on the real test cluster
//! (`scripts/cluster up`) with the real `oar run`: the manager is killed, stopped and cut off
//! from its API server while job pods run, and the jobs never notice. The manager talks to the
//! cluster as a ServiceAccount bound to exactly `oar_kube::rbac::RULES`, so the API server's
//! audit log counts its calls. Skipped loudly without a cluster, unless `OAR_REQUIRE_CLUSTER=1`.

mod common;

use common::kube::{assert_nothing_left, setup};
use common::kube_run::{RunningOar, count_lines, job_pods, manager_kubeconfig, write_run_config};
use k8s_openapi::api::core::v1::Pod;
use oar_testkit::cluster::{ApiCalls, wait_for};
use oar_testkit::{Endpoint, JobSnapshot, JobSpec, JobState};
use std::time::Duration;
use tokio::time::Instant;

/// These tests fault the manager or the whole cluster and load the 2-core machine with up to 11
/// job pods: under `cargo test` (one process, tests on threads) they take turns. Under nextest
/// (one process per test) `.config/nextest.toml` runs the heavy ones alone.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the jobs of these tests may take, start to end (10 pods start at once on 2 cores).
const JOBS_WAIT: Duration = Duration::from_secs(240);
/// How long a new manager may take to adopt the pods of the previous one.
const ADOPT_WAIT: Duration = Duration::from_secs(60);

/// A job printing `tick <job id> <i>` for i in 1..=ticks, one line a second.
fn ticking_job(ticks: u32) -> JobSpec {
    JobSpec::new("acme/widget").script([format!(
        "for i in $(seq 1 {ticks}); do echo \"tick $CI_JOB_ID $i\"; sleep 1; done"
    )])
}

/// The job succeeded with its whole log: every tick line exactly once, and the checksum GitLab
/// was given matches the bytes it holds.
fn assert_full_log(job: &JobSnapshot, ticks: u32) {
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "job {}:\n{trace}", job.id);
    assert!(job.checksum_matches, "job {}: checksum\n{trace}", job.id);
    for i in 1..=ticks {
        let line = format!("tick {} {i}", job.id);
        assert_eq!(
            count_lines(&trace, &line),
            1,
            "job {}: {line:?}\n{trace}",
            job.id
        );
    }
}

/// Waits until every job has printed its first tick: its pod runs and streams its log.
async fn wait_first_ticks(f: &common::Fixture, ids: &[i64]) {
    for &id in ids {
        f.gl.wait_trace_contains(id, &format!("tick {id} 1\n"), JOBS_WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// When the job's last answered `PUT` (its final state) was answered.
fn finished_at(f: &common::Fixture, id: i64) -> Instant {
    f.gl.requests_to(Endpoint::UpdateJob)
        .into_iter()
        .filter(|r| r.job_id == Some(id) && r.status == Some(200))
        .map(|r| r.at + r.elapsed)
        .max()
        .unwrap_or_else(|| panic!("job {id} has no answered PUT"))
}

/// The pod is there and its helper has not ended (its phase may lag behind its containers).
fn is_running(pod: &Pod) -> bool {
    let helper_ended = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|c| c.name == oar_kube::pod::HELPER_CONTAINER)
        .any(|c| c.state.as_ref().is_some_and(|st| st.terminated.is_some()));
    pod.metadata.deletion_timestamp.is_none() && !helper_ended
}

/// Write calls (everything but get, list, watch).
fn writes(calls: &ApiCalls) -> usize {
    calls
        .events()
        .iter()
        .filter(|e| !matches!(e.verb.as_str(), "get" | "list" | "watch"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_manager_mid_jobs_then_a_restart_adopts_every_pod() {
    let _serial = SERIAL.lock().await;
    let Some((_cluster, ns, f)) = setup("oar-restart-kill").await else {
        return;
    };
    const JOBS: usize = 10;
    const TICKS: u32 = 20;
    let (kubeconfig, user) = manager_kubeconfig(&f, &ns).await;
    write_run_config(&f, "concurrent = 10", ns.name(), "");
    f.gl.create_repo("acme/widget", &[("README.md", "hi\n")])
        .unwrap();
    let ids: Vec<i64> = (0..JOBS)
        .map(|_| f.gl.enqueue_job(ticking_job(TICKS)))
        .collect();

    let mut first = RunningOar::spawn(&f, &kubeconfig, "oar-1");
    wait_first_ticks(&f, &ids).await;
    let running = job_pods(&ns).await.iter().filter(|p| is_running(p)).count();
    assert_eq!(running, JOBS, "all job pods run before the kill");
    first.kill9().await;
    let killed_at = Instant::now();
    let unfinished = ids
        .iter()
        .filter(|&&id| !f.gl.job(id).state.is_terminal())
        .count();
    // Queued now: it needs a slot the adopted pods hold.
    let eleventh =
        f.gl.enqueue_job(JobSpec::new("acme/widget").script(["echo eleven"]));

    let mut second = RunningOar::spawn(&f, &kubeconfig, "oar-2");
    let adopted = second
        .wait_lines("adopting a job pod", JOBS, ADOPT_WAIT)
        .await;
    let time_to_adopt = adopted.last().expect("adopted").0 - second.started;

    for &id in &ids {
        let job = f.gl.wait_job_finished(id, JOBS_WAIT).await.unwrap();
        assert_full_log(&job, TICKS);
    }
    let job11 = f.gl.wait_job_finished(eleventh, JOBS_WAIT).await.unwrap();
    assert_eq!(job11.state, JobState::Success, "{}", job11.trace_str());
    assert!(
        job11.trace_str().contains("eleven\n"),
        "{}",
        job11.trace_str()
    );
    assert_nothing_left(&ns).await;
    let (status, stop_took) = second.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");

    // Concurrency counted from the cluster: the new manager asked for no job while the ten
    // adopted pods held its ten slots, and started the eleventh only after one of them ended.
    let first_end = ids.iter().map(|&id| finished_at(&f, id)).min().unwrap();
    let asked_early =
        f.gl.requests_to(Endpoint::RequestJob)
            .into_iter()
            .filter(|r| r.at > second.started && r.at < first_end)
            .count();
    assert_eq!(asked_early, 0, "job requests while all slots were taken");
    let ack11 =
        f.gl.requests_to(Endpoint::UpdateJob)
            .into_iter()
            .filter(|r| r.job_id == Some(eleventh))
            .map(|r| r.at)
            .min()
            .expect("the eleventh job was acknowledged");
    let still_running = ids
        .iter()
        .filter(|&&id| finished_at(&f, id) > ack11)
        .count();
    assert!(
        still_running < JOBS,
        "the eleventh job started while {still_running} jobs ran"
    );

    // No extra pods: one per job, the new manager created only the eleventh's.
    let calls = ns.api_calls(Some(&user)).await.unwrap();
    assert_eq!(calls.count("create", "pods"), JOBS + 1, "{calls}");
    assert_eq!(second.lines_with("job pod created").len(), 1);
    assert_eq!(calls.count("get", "pods"), 0, "{calls}");
    eprintln!(
        "kill -9 with {JOBS} running jobs ({unfinished} unfinished at the kill): the new manager \
         adopted them {:.2}s after it started ({:.2}s after the kill); the eleventh job was \
         acknowledged while {still_running} of the ten still ran; SIGTERM exit took {:.2}s\n\
         calls of both managers: {calls}",
        time_to_adopt.as_secs_f64(),
        (adopted.last().unwrap().0 - killed_at).as_secs_f64(),
        stop_took.as_secs_f64(),
    );
    ns.delete().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_running_job_pods_to_finish_on_their_own() {
    let _serial = SERIAL.lock().await;
    let Some((_cluster, ns, f)) = setup("oar-restart-term").await else {
        return;
    };
    const TICKS: u32 = 10;
    let (kubeconfig, _user) = manager_kubeconfig(&f, &ns).await;
    write_run_config(&f, "concurrent = 4", ns.name(), "");
    f.gl.create_repo("acme/widget", &[("README.md", "hi\n")])
        .unwrap();
    let ids = [
        f.gl.enqueue_job(ticking_job(TICKS)),
        f.gl.enqueue_job(ticking_job(TICKS)),
    ];
    let mut first = RunningOar::spawn(&f, &kubeconfig, "oar-1");
    wait_first_ticks(&f, &ids).await;

    let (status, took) = first.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(5), "SIGTERM exit took {took:?}");
    // Left, not ended: no "job finished" (nor a failure counted) for them.
    assert_eq!(first.lines_with("the job goes on in its pod").len(), 2);
    assert!(
        first.lines_with("job finished").is_empty(),
        "{:#?}",
        first.log()
    );
    let pods = job_pods(&ns).await;
    assert_eq!(pods.len(), 2, "the job pods are left running");
    assert!(pods.iter().all(is_running), "{pods:#?}");
    for &id in &ids {
        assert!(!f.gl.job(id).state.is_terminal(), "job {id} still runs");
    }

    // The helpers finish the jobs without a manager.
    for &id in &ids {
        let job = f.gl.wait_job_finished(id, JOBS_WAIT).await.unwrap();
        assert_full_log(&job, TICKS);
    }
    assert_eq!(job_pods(&ns).await.len(), 2, "nobody cleaned up yet");

    // The next manager cleans up what its predecessor left.
    let mut next = RunningOar::spawn(&f, &kubeconfig, "oar-2");
    next.wait_lines("adopted job pod done", 2, ADOPT_WAIT).await;
    assert_nothing_left(&ns).await;
    let (status, _) = next.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    eprintln!(
        "SIGTERM with 2 running jobs: oar run exited in {:.2}s",
        took.as_secs_f64()
    );
    ns.delete().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_job_costs_three_writes_and_no_pod_reads() {
    let _serial = SERIAL.lock().await;
    let Some((_cluster, ns, f)) = setup("oar-api-budget").await else {
        return;
    };
    const JOBS: usize = 3;
    let (kubeconfig, user) = manager_kubeconfig(&f, &ns).await;
    write_run_config(&f, "concurrent = 4", ns.name(), "");
    f.gl.create_repo("acme/widget", &[("README.md", "hi\n")])
        .unwrap();
    let ids: Vec<i64> = (0..JOBS)
        .map(|i| {
            f.gl.enqueue_job(JobSpec::new("acme/widget").script([format!("echo job {i}")]))
        })
        .collect();
    let mut oar = RunningOar::spawn(&f, &kubeconfig, "oar");
    for &id in &ids {
        let job = f.gl.wait_job_finished(id, JOBS_WAIT).await.unwrap();
        assert_eq!(job.state, JobState::Success, "{}", job.trace_str());
    }
    assert_nothing_left(&ns).await;
    let (status, _) = oar.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");

    let calls = ns.api_calls(Some(&user)).await.unwrap();
    eprintln!(
        "{JOBS} jobs, manager {user}: {calls}per job: {:.1} writes",
        writes(&calls) as f64 / JOBS as f64
    );
    assert!(calls.total() > 0, "the audit log shows the manager's calls");
    // Create pod, create its Secret (owned by the pod), delete pod: 3 writes per job.
    assert!(writes(&calls) <= 3 * JOBS, "{calls}");
    assert_eq!(calls.count("create", "pods"), JOBS, "{calls}");
    assert_eq!(calls.count("create", "secrets"), JOBS, "{calls}");
    assert_eq!(calls.count("patch", "secrets"), 0, "{calls}");
    assert_eq!(calls.count("get", "pods"), 0, "{calls}");
    // One shared watch: one list, whatever the number of jobs.
    assert_eq!(calls.count("list", "pods"), 1, "{calls}");
    ns.delete().await.ok();
}

/// `scripts/cluster restart-apiserver`: stops the test cluster's API server and starts it
/// again; returns once it is ready and the node is Ready again.
async fn restart_apiserver() {
    restart("apiserver").await;
}

/// `scripts/cluster restart-<component>` (apiserver, etcd, kubelet, containerd).
async fn restart(component: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/cluster");
    let mut cmd = tokio::process::Command::new(script);
    cmd.arg(format!("restart-{component}"));
    // The cluster the tests were pointed at, whatever this process's HOME.
    if let Some(state) = std::env::var_os("OAR_TEST_CLUSTER_STATE")
        && let Some(dir) = std::path::Path::new(&state).parent()
    {
        cmd.env("OAR_CLUSTER_DIR", dir);
    }
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("the restart ends")
        .expect("scripts/cluster runs");
    assert!(
        out.status.success(),
        "scripts/cluster restart-{component}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stderr).trim_end());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_mid_job_does_not_disturb_the_jobs() {
    let _serial = SERIAL.lock().await;
    let Some((_cluster, ns, f)) = setup("oar-restart-api").await else {
        return;
    };
    const TICKS: u32 = 20;
    let (kubeconfig, user) = manager_kubeconfig(&f, &ns).await;
    write_run_config(&f, "concurrent = 4", ns.name(), "");
    f.gl.create_repo("acme/widget", &[("README.md", "hi\n")])
        .unwrap();
    let ids = [
        f.gl.enqueue_job(ticking_job(TICKS)),
        f.gl.enqueue_job(ticking_job(TICKS)),
    ];
    let mut oar = RunningOar::spawn(&f, &kubeconfig, "oar");
    wait_first_ticks(&f, &ids).await;
    let lists_before = ns
        .api_calls(Some(&user))
        .await
        .unwrap()
        .count("list", "pods");

    let at = Instant::now();
    restart_apiserver().await;
    let outage = at.elapsed();
    for &id in &ids {
        assert!(
            !f.gl.job(id).state.is_terminal(),
            "job {id} must outlast the restart: raise TICKS"
        );
    }
    // The manager goes on creating pods after the restart, too.
    let third =
        f.gl.enqueue_job(JobSpec::new("acme/widget").script(["echo after"]));

    for &id in &ids {
        let job = f.gl.wait_job_finished(id, JOBS_WAIT).await.unwrap();
        assert_full_log(&job, TICKS);
    }
    let job3 = f.gl.wait_job_finished(third, JOBS_WAIT).await.unwrap();
    assert_eq!(job3.state, JobState::Success, "{}", job3.trace_str());
    assert_nothing_left(&ns).await;
    let (status, _) = oar.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");

    // The broken watch resumed without a relist storm.
    let calls = ns.api_calls(Some(&user)).await.unwrap();
    let relists = calls.count("list", "pods") - lists_before;
    eprintln!(
        "API server restart ({:.1}s) with 2 running jobs: {relists} relists after it; \
         manager calls: {calls}",
        outage.as_secs_f64()
    );
    assert!(
        relists <= 2,
        "relists after one restart: {relists}\n{calls}"
    );
    assert_eq!(calls.count("get", "pods"), 0, "{calls}");
    assert!(writes(&calls) <= 3 * 3, "{calls}");
    ns.delete().await.ok();
}

/// The containerd id of a pod's container, once the kubelet reported it.
fn container_id(pod: &Pod, container: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_deref()?
        .iter()
        .find(|c| c.name == container)?
        .container_id
        .as_deref()?
        .strip_prefix("containerd://")
        .map(str::to_owned)
}

/// Kills a container of a pod through the node's containerd (`ctr`), as the kernel's OOM killer
/// or a crash would: the kubelet sees it exit with 137.
async fn kill_container(pod: &Pod, container: &str) {
    let id = container_id(pod, container)
        .unwrap_or_else(|| panic!("container {container} has no containerd id: {pod:#?}"));
    let sock = std::env::var("OAR_TEST_CONTAINERD_SOCK")
        .expect("OAR_TEST_CONTAINERD_SOCK (from scripts/cluster env)");
    let out = tokio::process::Command::new("ctr")
        .args([
            "--address",
            &sock,
            "-n",
            "k8s.io",
            "tasks",
            "kill",
            "-s",
            "SIGKILL",
            &id,
        ])
        .output()
        .await
        .expect("ctr runs");
    assert!(
        out.status.success(),
        "ctr tasks kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_pod_that_dies_without_reporting_is_reported_by_the_new_manager() {
    let _serial = SERIAL.lock().await;
    let Some((_cluster, ns, f)) = setup("oar-restart-crash").await else {
        return;
    };
    let (kubeconfig, _user) = manager_kubeconfig(&f, &ns).await;
    write_run_config(&f, "concurrent = 4", ns.name(), "");
    f.gl.create_repo("acme/widget", &[("README.md", "hi\n")])
        .unwrap();
    let id = f.gl.enqueue_job(ticking_job(60));
    let mut first = RunningOar::spawn(&f, &kubeconfig, "oar-1");
    wait_first_ticks(&f, &[id]).await;
    first.kill9().await;

    let mut second = RunningOar::spawn(&f, &kubeconfig, "oar-2");
    second.wait_lines("adopting a job pod", 1, ADOPT_WAIT).await;
    let pods = job_pods(&ns).await;
    assert_eq!(pods.len(), 1);
    // The kubelet may report the helper's container a moment after the job's first output.
    let name = pods[0].metadata.name.clone().unwrap_or_default();
    let pod = wait_for(&ns.api::<Pod>(), &name, JOBS_WAIT, |p| {
        p.is_some_and(|p| container_id(p, oar_kube::pod::HELPER_CONTAINER).is_some())
    })
    .await
    .unwrap()
    .expect("the job pod");
    // The job's driver dies: the pod can no longer report the job.
    kill_container(&pod, oar_kube::pod::HELPER_CONTAINER).await;

    let job = f.gl.wait_job_finished(id, JOBS_WAIT).await.unwrap();
    assert_eq!(job.state, JobState::Failed, "{}", job.trace_str());
    assert_eq!(
        job.failure_reason.as_deref(),
        Some("runner_system_failure"),
        "{}",
        job.trace_str()
    );
    second
        .wait_lines("adopted job pod done", 1, ADOPT_WAIT)
        .await;
    assert_nothing_left(&ns).await;
    let (status, _) = second.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    eprintln!(
        "trace of the job whose adopted pod died:\n{}",
        job.trace_str()
    );
    ns.delete().await.ok();
}

/// Restarts `component` of the test cluster while two jobs run in their pods, then checks
/// that both finish with every byte of their logs, that a job created after the restart runs
/// too, and that nothing is left (issue 15).
async fn component_restart_mid_job(component: &str) {
    let _serial = SERIAL.lock().await;
    let Some((_cluster, ns, f)) = setup(&format!("oar-restart-{component}")).await else {
        return;
    };
    const TICKS: u32 = 25;
    let (kubeconfig, _user) = manager_kubeconfig(&f, &ns).await;
    write_run_config(&f, "concurrent = 4", ns.name(), "");
    f.gl.create_repo("acme/widget", &[("README.md", "hi\n")])
        .unwrap();
    let ids = [
        f.gl.enqueue_job(ticking_job(TICKS)),
        f.gl.enqueue_job(ticking_job(TICKS)),
    ];
    let mut oar = RunningOar::spawn(&f, &kubeconfig, "oar");
    wait_first_ticks(&f, &ids).await;
    let at = Instant::now();
    restart(component).await;
    let took = at.elapsed();
    for &id in &ids {
        assert!(
            !f.gl.job(id).state.is_terminal(),
            "job {id} must outlast the {component} restart: raise TICKS"
        );
    }
    let third =
        f.gl.enqueue_job(JobSpec::new("acme/widget").script(["echo after"]));
    for &id in &ids {
        let job = f.gl.wait_job_finished(id, JOBS_WAIT).await.unwrap();
        assert_full_log(&job, TICKS);
    }
    let job3 = f.gl.wait_job_finished(third, JOBS_WAIT).await.unwrap();
    assert_eq!(job3.state, JobState::Success, "{}", job3.trace_str());
    assert_nothing_left(&ns).await;
    let (status, _) = oar.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    eprintln!(
        "{component} restart ({:.1}s) with 2 running jobs: both finished byte-exact",
        took.as_secs_f64()
    );
    ns.delete().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_restart_mid_job_loses_nothing() {
    component_restart_mid_job("etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_restart_mid_job_loses_nothing() {
    component_restart_mid_job("kubelet").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_containerd_restart_mid_job_loses_nothing() {
    component_restart_mid_job("containerd").await;
}

/// Sets the test node's `spec.unschedulable` (what `kubectl cordon` / `uncordon` do).
async fn cordon(cluster: &oar_testkit::cluster::TestCluster, on: bool) {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, Patch, PatchParams};
    let nodes: Api<Node> = Api::all(cluster.client());
    for node in nodes.list(&Default::default()).await.unwrap() {
        let name = node.metadata.name.clone().unwrap_or_default();
        nodes
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"unschedulable": on}})),
            )
            .await
            .unwrap();
    }
}

/// Uncordons the node when dropped, even when the test fails: a node left cordoned would fail
/// every later cluster test.
struct Uncordon {
    kubeconfig: std::path::PathBuf,
    audit_log: std::path::PathBuf,
}

impl Drop for Uncordon {
    fn drop(&mut self) {
        let (kubeconfig, audit_log) = (self.kubeconfig.clone(), self.audit_log.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let cluster = oar_testkit::cluster::TestCluster::connect(&kubeconfig, &audit_log)
                    .await
                    .expect("the cluster");
                cordon(&cluster, false).await;
            });
        })
        .join();
    }
}

/// The node is cordoned and drained (its job pods evicted through the Eviction API, as
/// `kubectl drain` does) while a job runs: the job fails once, with a readable message; a job
/// taken while the node is cordoned fails after `poll_timeout` with the scheduler's reason;
/// after `uncordon` jobs run again; nothing is left (issue 15).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordoned_and_drained_node_fails_its_jobs_once_and_readably() {
    use kube::api::EvictParams;
    let _serial = SERIAL.lock().await;
    let Some((cluster, ns, f)) = setup("oar-restart-drain").await else {
        return;
    };
    let (kubeconfig, _user) = manager_kubeconfig(&f, &ns).await;
    write_run_config(&f, "concurrent = 4", ns.name(), "    poll_timeout = 15\n");
    f.gl.create_repo("acme/widget", &[("README.md", "hi\n")])
        .unwrap();
    let drained = f.gl.enqueue_job(ticking_job(200));
    let mut oar = RunningOar::spawn(&f, &kubeconfig, "oar");
    wait_first_ticks(&f, &[drained]).await;
    let _uncordon = Uncordon {
        kubeconfig: cluster.kubeconfig_path().to_owned(),
        audit_log: cluster.audit_log_path().to_owned(),
    };
    cordon(&cluster, true).await;
    let pods = job_pods(&ns).await;
    assert_eq!(pods.len(), 1, "{pods:?}");
    let pod_name = pods[0].metadata.name.clone().unwrap_or_default();
    ns.api::<Pod>()
        .evict(&pod_name, &EvictParams::default())
        .await
        .expect("eviction accepted");
    let job = f.gl.wait_job_finished(drained, JOBS_WAIT).await.unwrap();
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Failed, "{trace}");
    assert!(
        trace.contains("evicted") || trace.contains("deleted"),
        "{trace}"
    );
    assert!(!trace.contains("tick {drained} 200\n"), "{trace}");
    // Reported once: one failure in the log, and GitLab's job ended with it.
    assert_eq!(trace.matches("ERROR: Job failed").count(), 1, "{trace}");
    assert!(job.finished, "{trace}");
    // Cordoned: a new job's pod cannot be scheduled.
    let stuck =
        f.gl.enqueue_job(JobSpec::new("acme/widget").script(["echo never"]));
    let job = f.gl.wait_job_finished(stuck, JOBS_WAIT).await.unwrap();
    let trace = job.trace_str();
    cordon(&cluster, false).await;
    assert_eq!(job.state, JobState::Failed, "{trace}");
    assert!(trace.to_lowercase().contains("unschedulable"), "{trace}");
    assert!(!trace.contains("never\n"), "{trace}");
    // Uncordoned: jobs run again.
    let after =
        f.gl.enqueue_job(JobSpec::new("acme/widget").script(["echo after"]));
    let job = f.gl.wait_job_finished(after, JOBS_WAIT).await.unwrap();
    assert_eq!(job.state, JobState::Success, "{}", job.trace_str());
    assert_nothing_left(&ns).await;
    let (status, _) = oar.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    ns.delete().await.ok();
}
