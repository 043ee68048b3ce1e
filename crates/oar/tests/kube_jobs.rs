//! End to end on the real test cluster (`scripts/cluster up`): `oar` with the Kubernetes
//! executor takes jobs from FakeGitlab and runs each in its own pod, whose helper drives the
//! job itself. Skipped loudly without a cluster, unless `OAR_REQUIRE_CLUSTER=1`.

mod common;

use common::JOB_WAIT;
use common::kube::{assert_nothing_left, run_single, setup, write_kube_config};
use oar_testkit::JobSpec;
use oar_testkit::JobState;

#[tokio::test]
async fn a_job_runs_in_its_own_pod_and_leaves_nothing_behind() {
    let Some((cluster, ns, f)) = setup("oar-e2e").await else {
        return;
    };
    write_kube_config(&f, ns.name(), "", "");
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
    let out = run_single(&f, &cluster, 1).await;
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
    assert_nothing_left(&ns).await;
    ns.delete().await.ok();
}
