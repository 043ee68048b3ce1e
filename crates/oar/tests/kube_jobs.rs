//! End to end on the real test cluster (`scripts/cluster up`): `oar` with the Kubernetes
//! executor takes jobs from FakeGitlab and runs each in its own pod, whose helper drives the
//! job itself. Skipped loudly without a cluster, unless `OAR_REQUIRE_CLUSTER=1`.

mod common;

use common::{Fixture, JOB_WAIT};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use oar_testkit::JobSpec;
use oar_testkit::JobState;
use oar_testkit::cluster::{DEBIAN_IMAGE, HELPER_IMAGE, TestCluster, TestNamespace, wait_for};
use std::time::Duration;

/// config.toml lines of a Kubernetes runner in `ns`. Job pods use the host network so that
/// they reach FakeGitlab on 127.0.0.1 (the test cluster has no pod routing).
fn kube_runner(ns: &str, extra: &str) -> String {
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
    poll_timeout = 120
{extra}
    [[runners.kubernetes.pod_spec]]
      name = "host-network"
      patch_type = "merge"
      patch = '{{"hostNetwork": true}}'
"#
    )
}

/// config.toml with one Kubernetes runner.
fn write_kube_config(f: &Fixture, ns: &str, extra: &str) {
    let text = format!(
        "concurrent = 4\ncheck_interval = 1\n\n[[runners]]\n  name = \"k8s-e2e\"\n  url = \"{}\"\n  token = \"{}\"\n{}",
        f.gl.url(),
        common::RUNNER_TOKEN,
        kube_runner(ns, extra)
    );
    std::fs::write(f.config_path(), text).expect("write config");
}

async fn setup(prefix: &str) -> Option<(TestCluster, TestNamespace, Fixture)> {
    let cluster = TestCluster::from_env().await?;
    let ns = cluster.namespace(prefix).await.expect("test namespace");
    let f = Fixture::new().await;
    Some((cluster, ns, f))
}

/// What is left in the namespace once the pods' Secrets had time to be garbage collected
/// (they follow their pod through an ownerReference).
async fn leftovers(ns: &TestNamespace) -> (Vec<String>, Vec<String>) {
    let (pods, secrets) = list_leftovers(ns).await;
    let secrets_api = ns.api::<Secret>();
    for name in &secrets {
        let _ = wait_for(&secrets_api, name, Duration::from_secs(30), |s| s.is_none()).await;
    }
    let _ = pods;
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

#[tokio::test]
async fn a_job_runs_in_its_own_pod_and_leaves_nothing_behind() {
    let Some((cluster, ns, f)) = setup("oar-e2e").await else {
        return;
    };
    write_kube_config(&f, ns.name(), "");
    f.gl.create_repo("acme/widget", &[("README.md", "hello from the repo\n")])
        .unwrap();
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/widget")
            .masked_variable("DEPLOY_TOKEN", "s3cr3t-Value-9876")
            .script([
                "cat README.md",
                "echo \"token=$DEPLOY_TOKEN\"",
                "echo shell=$0 pwd=$(pwd)",
                "for i in 1 2 3; do echo line $i; done",
            ])
            .after_script(["echo \"after status=$CI_JOB_STATUS\""]),
    );
    let mut oar = f.oar();
    oar.env("KUBECONFIG", cluster.kubeconfig_path())
        .args([
            "run-single",
            "--max-builds",
            "1",
            "--wait-timeout",
            "60",
            "-c",
        ])
        .arg(f.config_path());
    let out = tokio::time::timeout(Duration::from_secs(240), oar.output())
        .await
        .expect("run-single ends")
        .expect("runs");
    let job = match f.gl.wait_job_finished(id, JOB_WAIT).await {
        Ok(j) => j,
        Err(e) => panic!("{e}\n{}", String::from_utf8_lossy(&out.stderr)),
    };
    let trace = job.trace_str();
    assert!(
        out.status.success(),
        "{}\n{trace}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(job.checksum_matches, "{trace}");
    assert!(trace.contains("hello from the repo"), "{trace}");
    assert!(trace.contains("token=[MASKED]"), "{trace}");
    assert!(trace.contains("line 1\nline 2\nline 3\n"), "{trace}");
    assert!(trace.contains("after status=success"), "{trace}");
    assert!(!trace.contains("s3cr3t-Value-9876"), "{trace}");
    let (pods, secrets) = leftovers(&ns).await;
    assert!(pods.is_empty(), "pods left: {pods:?}");
    assert!(secrets.is_empty(), "secrets left: {secrets:?}");
    ns.delete().await.ok();
}
