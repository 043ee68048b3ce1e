//! End to end on the real test cluster (`scripts/cluster up`): how jobs end in their pods.
//! Each test runs the real `oar run-single` with a Kubernetes runner against FakeGitlab and
//! checks the job's state, failure reason and log as GitLab stores them, and that nothing is
//! left in the namespace. Skipped loudly without a cluster, unless `OAR_REQUIRE_CLUSTER=1`.

mod common;

use common::JOB_WAIT;
use common::kube::{
    PodLog, RUN_TIMEOUT, assert_nothing_left, finish_run, run_single, run_single_command, setup,
    spawn_run_single, web_service, write_kube_config,
};
use common::kube_run::manager_rules;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{EvictParams, PostParams};
use oar_testkit::cluster::{ADMIN_USER, wait_for};
use oar_testkit::s3::S3Server;
use oar_testkit::{JobSnapshot, JobSpec, JobState};
use serde_json::json;
use std::process::Output;
use std::time::Duration;
use tokio::time::Instant;

/// The distributed cache on the in-process S3 server (job pods use the host network, so they
/// reach it on 127.0.0.1).
fn s3_cache(s3: &S3Server) -> String {
    format!(
        "  [runners.cache]\n    Type = \"s3\"\n    Shared = false\n    Path = \"ci\"\n    [runners.cache.s3]\n      ServerAddress = \"{}\"\n      AccessKey = \"{}\"\n      SecretKey = \"{}\"\n      BucketName = \"{}\"\n      BucketLocation = \"us-east-1\"\n      Insecure = true\n      AuthenticationType = \"access-key\"\n",
        s3.server_address(),
        s3.access_key(),
        s3.secret_key(),
        s3.bucket()
    )
}

/// A TCP port nobody listens on right now (job pods share the host's network).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The job, once FakeGitlab has its final state; the runner's stderr when it has none.
async fn finished(f: &common::Fixture, id: i64, out: Option<&Output>) -> JobSnapshot {
    match f.gl.wait_job_finished(id, JOB_WAIT).await {
        Ok(job) => job,
        Err(e) => panic!(
            "{e}\n--- oar stderr:\n{}",
            out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default()
        ),
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a failed job: its reason, and that its log says `needle`.
fn assert_failed(job: &JobSnapshot, reason: &str, needle: &str, out: &Output) {
    let trace = job.trace_str();
    assert_eq!(
        job.state,
        JobState::Failed,
        "{trace}\n--- oar stderr:\n{}",
        stderr(out)
    );
    assert_eq!(
        job.failure_reason.as_deref(),
        Some(reason),
        "{trace}\n--- oar stderr:\n{}",
        stderr(out)
    );
    assert!(
        trace.contains(needle),
        "the job log lacks {needle:?}:\n{trace}\n--- oar stderr:\n{}",
        stderr(out)
    );
}

/// The job log's last line says `needle`: the manager's reason comes last, after whatever the
/// pod's helper streamed.
fn assert_last_line(job: &JobSnapshot, needle: &str) {
    let trace = job.trace_str();
    let last = trace.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains(needle),
        "the last line lacks {needle:?}:\n{trace}"
    );
}

/// The final update was accepted with a checksum and bytesize that are right, or without any
/// (a manager that reports after the pod streamed part of the log can't know them).
fn assert_final_update_consistent(job: &JobSnapshot) {
    assert!(
        job.checksum_matches || (job.final_checksum.is_none() && job.final_bytesize.is_none()),
        "checksum {:?} / bytesize {:?} do not match the {} stored bytes",
        job.final_checksum,
        job.final_bytesize,
        job.trace.len()
    );
}

/// Services, artifacts, a distributed cache and after_script: the job succeeds with a
/// byte-exact log, its artifacts reach the next job through `dependencies`, its cache comes
/// back in a second job's fresh pod from S3, and nothing is left behind.
#[tokio::test]
async fn services_artifacts_cache_and_after_script_work_in_a_pod() {
    let Some((cluster, ns, f)) = setup("oar-outcome-full").await else {
        return;
    };
    let started = Instant::now();
    let s3 = S3Server::start("runner-cache").await.unwrap();
    write_kube_config(&f, ns.name(), "", &s3_cache(&s3));
    f.gl.create_repo("acme/widget", &[("README.md", "hello from the repo\n")])
        .unwrap();
    let port = free_port();
    let (services, fetch) = web_service(port, "svc-marker-7f3a");
    let build = f.gl.enqueue_job(
        JobSpec::new("acme/widget")
            .name("build")
            .services(services)
            .script([
                fetch.as_str(),
                "fetch 127.0.0.1 && echo 'service at 127.0.0.1: ok'",
                "fetch web && echo 'service as web: ok'",
                "mkdir -p out vendor",
                "echo artifact-from-build > out/a.txt",
                "echo cached-by-build > vendor/lib.txt",
            ])
            .after_script(["echo \"after status=$CI_JOB_STATUS\""])
            .artifacts(json!([{ "paths": ["out/"], "when": "on_success" }]))
            .cache(json!([{
                "key": "deps-$CI_COMMIT_REF_NAME", "paths": ["vendor/"],
                "policy": "pull-push", "when": "on_success", "untracked": false
            }])),
    );
    let out = run_single(&f, &cluster, 1).await;
    let job = finished(&f, build, Some(&out)).await;
    let trace = job.trace_str();
    assert_eq!(
        job.state,
        JobState::Success,
        "{trace}\n--- oar stderr:\n{}",
        stderr(&out)
    );
    assert!(job.checksum_matches, "{trace}");
    assert!(trace.contains("service at 127.0.0.1: ok"), "{trace}");
    assert!(trace.contains("service as web: ok"), "{trace}");
    assert!(trace.contains("after status=success"), "{trace}");
    assert_eq!(job.artifacts.len(), 1, "{trace}");
    let keys = s3.object_keys();
    assert!(
        keys.len() == 1 && keys[0].ends_with("/deps-main"),
        "{keys:?}\n{trace}"
    );
    assert_nothing_left(&ns).await;

    // A fresh pod: the artifacts come from FakeGitlab, the cache from S3.
    let test = f.gl.enqueue_job(
        JobSpec::new("acme/widget")
            .name("test")
            .dependencies(&[build])
            .script(["cat out/a.txt", "cat vendor/lib.txt"])
            .cache(json!([{
                "key": "deps-$CI_COMMIT_REF_NAME", "paths": ["vendor/"],
                "policy": "pull", "when": "on_success", "untracked": false
            }])),
    );
    let out = run_single(&f, &cluster, 1).await;
    let job = finished(&f, test, Some(&out)).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(job.checksum_matches, "{trace}");
    assert!(trace.contains("Downloading artifacts for build"), "{trace}");
    assert!(trace.contains("artifact-from-build"), "{trace}");
    assert!(trace.contains("cached-by-build"), "{trace}");
    assert_eq!(f.gl.violations(), Vec::<String>::new());
    assert_nothing_left(&ns).await;
    eprintln!("took {:?}", started.elapsed());
    ns.delete().await.ok();
}

/// A graceful cancel from GitLab stops the script; after_script still runs and the job ends
/// canceled.
#[tokio::test]
async fn a_canceled_job_runs_after_script_and_ends_canceled() {
    let Some((cluster, ns, f)) = setup("oar-outcome-cancel").await else {
        return;
    };
    let started = Instant::now();
    write_kube_config(&f, ns.name(), "", "");
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["for i in $(seq 1 600); do echo tick $i; sleep 0.1; done"])
            .after_script(["echo \"after status=$CI_JOB_STATUS\""]),
    );
    let run = spawn_run_single(&f, &cluster, 1);
    f.gl.wait_trace_contains(id, "tick 2", JOB_WAIT)
        .await
        .unwrap();
    f.gl.cancel_job(id);
    let out = finish_run(run).await;
    let job = finished(&f, id, Some(&out)).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Canceled, "{trace}");
    assert!(trace.contains("after status=canceled"), "{trace}");
    assert!(!trace.contains("tick 600"), "{trace}");
    assert!(job.checksum_matches, "{trace}");
    assert_nothing_left(&ns).await;
    eprintln!("took {:?}", started.elapsed());
    ns.delete().await.ok();
}

/// A job past its timeout fails with `job_execution_timeout`; after_script runs.
#[tokio::test]
async fn a_job_past_its_timeout_fails_with_job_execution_timeout() {
    let Some((cluster, ns, f)) = setup("oar-outcome-timeout").await else {
        return;
    };
    let started = Instant::now();
    write_kube_config(&f, ns.name(), "", "");
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .timeout(5)
            .script(["echo sleeping", "sleep 120"])
            .after_script(["echo \"after status=$CI_JOB_STATUS\""]),
    );
    let out = run_single(&f, &cluster, 1).await;
    let job = finished(&f, id, Some(&out)).await;
    assert_failed(
        &job,
        "job_execution_timeout",
        "execution took longer than 5s seconds",
        &out,
    );
    let trace = job.trace_str();
    assert!(trace.contains("after status=timedout"), "{trace}");
    assert!(job.checksum_matches, "{trace}");
    assert_nothing_left(&ns).await;
    eprintln!("took {:?}", started.elapsed());
    ns.delete().await.ok();
}

/// A script that exits 3 fails the job with `script_failure` and exit code 3.
#[tokio::test]
async fn a_failing_script_fails_with_script_failure_and_its_exit_code() {
    let Some((cluster, ns, f)) = setup("oar-outcome-exit").await else {
        return;
    };
    let started = Instant::now();
    write_kube_config(&f, ns.name(), "", "");
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["echo about to fail", "exit 3"])
            .after_script(["echo \"after status=$CI_JOB_STATUS\""]),
    );
    let out = run_single(&f, &cluster, 1).await;
    let job = finished(&f, id, Some(&out)).await;
    assert_failed(
        &job,
        "script_failure",
        "ERROR: Job failed: exit status 3",
        &out,
    );
    assert_eq!(job.exit_code, Some(3));
    let trace = job.trace_str();
    assert!(trace.contains("after status=failed"), "{trace}");
    assert!(job.checksum_matches, "{trace}");
    assert_nothing_left(&ns).await;
    eprintln!("took {:?}", started.elapsed());
    ns.delete().await.ok();
}

/// An image that is not there (pull policy never) fails the job with `image_pull_failure`,
/// reported by the manager, the image named in the job log.
#[tokio::test]
async fn a_missing_image_fails_with_image_pull_failure_naming_it() {
    let Some((cluster, ns, f)) = setup("oar-outcome-pull").await else {
        return;
    };
    let started = Instant::now();
    write_kube_config(&f, ns.name(), "", "");
    let image = "oar.test/does-not-exist:1.0";
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .image(json!({ "name": image }))
            .script(["echo never runs"]),
    );
    let out = run_single(&f, &cluster, 1).await;
    let job = finished(&f, id, Some(&out)).await;
    assert_failed(&job, "image_pull_failure", image, &out);
    let trace = job.trace_str();
    assert!(trace.contains("ErrImageNeverPull"), "{trace}");
    assert!(!trace.contains("never runs"), "{trace}");
    assert_last_line(&job, image);
    assert_final_update_consistent(&job);
    // The one liberty: no checksum when the pod's helper had streamed part of the log.
    let violations = f.gl.violations();
    assert!(
        violations
            .iter()
            .all(|v| v.ends_with("final update without output.checksum")),
        "{violations:?}"
    );
    assert_nothing_left(&ns).await;
    eprintln!("took {:?}", started.elapsed());
    ns.delete().await.ok();
}

/// A build container past its memory limit fails the job with a message naming the
/// container and the limit.
#[tokio::test]
async fn a_job_past_its_memory_limit_fails_naming_the_container_and_limit() {
    let Some((cluster, ns, f)) = setup("oar-outcome-oom").await else {
        return;
    };
    let started = Instant::now();
    write_kube_config(&f, ns.name(), "    memory_limit = \"32Mi\"", "");
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script([
                "echo allocating",
                "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}",
                "echo survived",
            ]),
    );
    let out = run_single(&f, &cluster, 1).await;
    let job = finished(&f, id, Some(&out)).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Failed, "{trace}\n{}", stderr(&out));
    assert!(trace.contains("allocating"), "{trace}");
    assert!(!trace.contains("survived"), "{trace}");
    assert!(
        trace.contains(
            "Container \"build\" ran out of memory: the kernel's OOM killer ended the step, \
             which used more than the container's memory limit of 32Mi"
        ),
        "{trace}\n{}",
        stderr(&out)
    );
    // The step's text is not dumped into the log by bash's report of the kill.
    assert!(!trace.contains("export CI_JOB_ID"), "{trace}");
    assert_eq!(
        job.failure_reason.as_deref(),
        Some("runner_system_failure"),
        "{trace}"
    );
    assert_final_update_consistent(&job);
    assert_nothing_left(&ns).await;
    eprintln!("took {:?}", started.elapsed());
    ns.delete().await.ok();
}

/// A job pod evicted through the Eviction API while its script runs: the job fails with a
/// message saying so.
#[tokio::test]
async fn an_evicted_job_pod_fails_the_job_with_a_readable_message() {
    let Some((cluster, ns, f)) = setup("oar-outcome-evict").await else {
        return;
    };
    let started = Instant::now();
    write_kube_config(&f, ns.name(), "", "");
    // Long enough (200 s) that a kubelet slow to act on the eviction cannot let the job
    // finish first; it normally ends within seconds of the eviction.
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["for i in $(seq 1 2000); do echo tick $i; sleep 0.1; done"]),
    );
    let pods = PodLog::start(&ns).await;
    let run = spawn_run_single(&f, &cluster, 1);
    f.gl.wait_trace_contains(id, "tick 2", JOB_WAIT)
        .await
        .unwrap();
    let seen = pods.pods();
    assert_eq!(seen.len(), 1, "{seen:?}");
    ns.api::<Pod>()
        .evict(&seen[0].0, &EvictParams::default())
        .await
        .expect("eviction accepted");
    let out = finish_run(run).await;
    let job = finished(&f, id, Some(&out)).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Failed, "{trace}\n{}", stderr(&out));
    assert!(!trace.contains("tick 2000"), "{trace}");
    assert!(
        trace.contains("evicted") || trace.contains("deleted"),
        "{trace}\n{}",
        stderr(&out)
    );
    assert_final_update_consistent(&job);
    assert_nothing_left(&ns).await;
    eprintln!("took {:?}", started.elapsed());
    ns.delete().await.ok();
}

/// A pod no node accepts fails the job after `poll_timeout` with the scheduler's message.
#[tokio::test]
async fn an_unschedulable_pod_fails_after_poll_timeout_with_the_schedulers_message() {
    let Some((cluster, ns, f)) = setup("oar-outcome-sched").await else {
        return;
    };
    let started = Instant::now();
    write_kube_config(
        &f,
        ns.name(),
        "    poll_timeout = 5\n    node_selector = { \"oar.test/pool\" = \"nowhere\" }",
        "",
    );
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["echo never runs"]),
    );
    let out = run_single(&f, &cluster, 1).await;
    let job = finished(&f, id, Some(&out)).await;
    assert_failed(&job, "runner_system_failure", "node(s) didn't match", &out);
    let trace = job.trace_str();
    assert!(trace.contains("poll_timeout"), "{trace}");
    assert_last_line(&job, "could not be scheduled within 5s (poll_timeout)");
    assert!(job.checksum_matches, "{trace}");
    assert_nothing_left(&ns).await;
    eprintln!("took {:?}", started.elapsed());
    ns.delete().await.ok();
}

/// A `KUBERNETES_SERVICE_ACCOUNT_OVERWRITE` the config does not allow fails the job before
/// any pod exists, naming the variable and the rule.
#[tokio::test]
async fn a_refused_service_account_overwrite_fails_before_any_pod() {
    let Some((cluster, ns, f)) = setup("oar-outcome-refused").await else {
        return;
    };
    let started = Instant::now();
    write_kube_config(
        &f,
        ns.name(),
        "    service_account_overwrite_allowed = \"^ci-.*$\"",
        "",
    );
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .variable("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE", "cluster-admin-sa")
            .script(["echo never runs"]),
    );
    let out = run_single(&f, &cluster, 1).await;
    let job = finished(&f, id, Some(&out)).await;
    // GitLab versions that do not list runner_configuration_error get script_failure.
    let reason = job.failure_reason.clone().unwrap_or_default();
    assert!(
        reason == "runner_configuration_error" || reason == "script_failure",
        "{reason}"
    );
    assert_failed(
        &job,
        &reason,
        "KUBERNETES_SERVICE_ACCOUNT_OVERWRITE \"cluster-admin-sa\" does not match \
         service_account_overwrite_allowed \"^ci-.*$\"",
        &out,
    );
    assert!(job.checksum_matches, "{}", job.trace_str());
    // No pod, and no Secret from the runner (the tokens controller makes the namespace's).
    let calls = ns.api_calls(None).await.unwrap();
    assert_eq!(calls.count("create", "pods"), 0, "{calls}");
    let runner_calls = ns.api_calls(Some(ADMIN_USER)).await.unwrap();
    assert_eq!(runner_calls.count("create", "secrets"), 0, "{runner_calls}");
    assert_nothing_left(&ns).await;
    eprintln!("took {:?}", started.elapsed());
    ns.delete().await.ok();
}

/// An allowed `KUBERNETES_SERVICE_ACCOUNT_OVERWRITE` makes the job pod run as that
/// ServiceAccount.
#[tokio::test]
async fn an_allowed_service_account_overwrite_is_the_pods_service_account() {
    let Some((cluster, ns, f)) = setup("oar-outcome-sa").await else {
        return;
    };
    let started = Instant::now();
    let accounts = ns.api::<ServiceAccount>();
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("ci-deployer".into()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    // Before 1.24 a pod of this account also needs the account's token Secret.
    wait_for(&accounts, "ci-deployer", Duration::from_secs(30), |sa| {
        sa.is_some_and(|sa| sa.secrets.as_ref().is_some_and(|s| !s.is_empty()))
    })
    .await
    .unwrap();
    write_kube_config(
        &f,
        ns.name(),
        "    service_account_overwrite_allowed = \"^ci-.*$\"",
        "",
    );
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .variable("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE", "ci-deployer")
            .script(["echo running as the overwritten account"]),
    );
    let pods = PodLog::start(&ns).await;
    let out = run_single(&f, &cluster, 1).await;
    let job = finished(&f, id, Some(&out)).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    let seen = pods.pods();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].1.as_deref(), Some("ci-deployer"), "{seen:?}");
    assert_nothing_left(&ns).await;
    eprintln!("took {:?}", started.elapsed());
    ns.delete().await.ok();
}

/// An allowed `KUBERNETES_NAMESPACE_OVERWRITE` runs the job's pod (and its Secret) in that
/// namespace. The runner, which allows it, watches pods in all namespaces: its manager runs as a
/// ServiceAccount bound to exactly `oar_kube::rbac::RULES` through a ClusterRole. With the same
/// rules in a namespaced Role, it refuses to start and says why.
#[tokio::test]
async fn an_allowed_namespace_overwrite_runs_the_pod_in_that_namespace() {
    let Some((cluster, ns, f)) = setup("oar-outcome-ns").await else {
        return;
    };
    let other = cluster
        .namespace("oar-outcome-other")
        .await
        .expect("a second namespace");
    write_kube_config(
        &f,
        ns.name(),
        "    namespace_overwrite_allowed = \"^oar-outcome-other-\"",
        "",
    );
    let run_as = |kubeconfig: &std::path::Path| {
        let mut oar = run_single_command(&f, &cluster, 1);
        oar.env("KUBECONFIG", kubeconfig);
        tokio::time::timeout(RUN_TIMEOUT, oar.output())
    };

    // A Role in the runner's namespace is not enough to watch all of them.
    let namespaced = f.dir.path().join("namespaced.kubeconfig");
    ns.service_account_kubeconfig("oar-ns-only", manager_rules(), &namespaced)
        .await
        .unwrap();
    let out = run_as(&namespaced).await.expect("run-single ends").unwrap();
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot watch pods in all namespaces")
            && stderr(&out).contains("ClusterRole"),
        "{}",
        stderr(&out)
    );

    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .variable("KUBERNETES_NAMESPACE_OVERWRITE", other.name())
            .script(["echo \"ran in $KUBERNETES_NAMESPACE_OVERWRITE\""]),
    );
    let cluster_wide = f.dir.path().join("cluster-wide.kubeconfig");
    ns.service_account_kubeconfig_cluster_wide("oar-manager", manager_rules(), &cluster_wide)
        .await
        .unwrap();
    let here = PodLog::start(&ns).await;
    let there = PodLog::start(&other).await;
    let out = run_as(&cluster_wide)
        .await
        .expect("run-single ends")
        .unwrap();
    let job = finished(&f, id, Some(&out)).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}\n{}", stderr(&out));
    assert!(
        trace.contains(&format!("ran in {}\n", other.name())),
        "{trace}"
    );
    assert_eq!(there.pods().len(), 1, "{:?}", there.pods());
    assert!(here.pods().is_empty(), "{:?}", here.pods());
    assert_nothing_left(&other).await;
    assert_nothing_left(&ns).await;
    other.delete().await.ok();
    ns.delete().await.ok();
}

/// A job that writes past its emptyDir volume's `size_limit`: the kubelet evicts the pod, the
/// job fails with a message naming the volume and its limit, and nothing is left (issue 15).
#[tokio::test]
async fn a_job_past_its_empty_dir_size_limit_fails_naming_the_volume() {
    let Some((cluster, ns, f)) = setup("oar-outcome-emptydir").await else {
        return;
    };
    let started = Instant::now();
    write_kube_config(
        &f,
        ns.name(),
        "    [[runners.kubernetes.volumes.empty_dir]]\n      name = \"scratch\"\n      mount_path = \"/scratch\"\n      size_limit = \"1Mi\"\n",
        "",
    );
    // 200 s of ticks after the write: the kubelet's eviction manager acts within seconds.
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script([
                "head -c 20000000 /dev/zero > /scratch/big.bin",
                "echo written",
                "for i in $(seq 1 2000); do echo tick $i; sleep 0.1; done",
            ]),
    );
    let out = run_single(&f, &cluster, 1).await;
    let job = finished(&f, id, Some(&out)).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Failed, "{trace}\n{}", stderr(&out));
    assert!(trace.contains("written"), "{trace}");
    assert!(!trace.contains("tick 2000"), "{trace}");
    assert!(trace.contains("evicted"), "{trace}\n{}", stderr(&out));
    assert!(
        trace.contains("scratch") && trace.contains("1Mi"),
        "the message names neither the volume nor its limit:\n{trace}"
    );
    assert_final_update_consistent(&job);
    assert_nothing_left(&ns).await;
    eprintln!("took {:?}", started.elapsed());
    ns.delete().await.ok();
}

/// The job namespace's ResourceQuota is lowered while a job runs: the running job is not
/// touched and finishes; a job whose pod the quota no longer admits fails at once with the
/// API server's reason naming the quota (issue 15; issue 14 makes the manager wait instead).
#[tokio::test]
async fn a_lowered_resource_quota_fails_the_next_job_at_once_naming_it() {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let Some((_cluster, ns, f)) = setup("oar-outcome-quota").await else {
        return;
    };
    // `oar run` (not run-single, which takes one job at a time): the second job is taken
    // while the first runs.
    let (kubeconfig, _user) = common::kube_run::manager_kubeconfig(&f, &ns).await;
    common::kube_run::write_run_config(&f, "concurrent = 4", ns.name(), "");
    let running = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            // 60 s: it must outlast the quota controller counting it and the refusal.
            .script(["for i in $(seq 1 120); do echo tick $i; sleep 0.5; done"]),
    );
    let mut oar = common::kube_run::RunningOar::spawn(&f, &kubeconfig, "oar");
    f.gl.wait_trace_contains(running, "tick 1\n", JOB_WAIT)
        .await
        .unwrap();
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "ci-pods"},
        "spec": {"hard": {"pods": "1"}}
    }))
    .unwrap();
    ns.api::<ResourceQuota>()
        .create(&PostParams::default(), &quota)
        .await
        .unwrap();
    // The quota controller has counted the running pod once `used` is set.
    wait_for(
        &ns.api::<ResourceQuota>(),
        "ci-pods",
        Duration::from_secs(60),
        |q| {
            q.and_then(|q| q.status.as_ref()?.used.as_ref()?.get("pods").cloned())
                .is_some_and(|n| n.0 == "1")
        },
    )
    .await
    .expect("the quota counts the running pod");
    let refused = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["echo never"]),
    );
    let started = Instant::now();
    let job = finished(&f, refused, None).await;
    assert!(
        !f.gl.job(running).state.is_terminal(),
        "the running job ended before the refusal: the test proves nothing (raise its ticks)"
    );
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Failed, "{trace}");
    assert!(trace.contains("exceeded quota"), "{trace}");
    assert!(trace.contains("ci-pods"), "{trace}");
    assert!(!trace.contains("never\n"), "{trace}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "failed after {:?}, not at once",
        started.elapsed()
    );
    let job = finished(&f, running, None).await;
    assert_eq!(job.state, JobState::Success, "{}", job.trace_str());
    assert!(job.checksum_matches);
    assert_nothing_left(&ns).await;
    let (status, _) = oar.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    ns.delete().await.ok();
}
