//! End to end: `oar run-single` / `oar run` with the shell executor against FakeGitlab, with
//! real git over smart HTTP.

mod common;

use common::{Fixture, RUNNER_TOKEN};
use oar_testkit::{Endpoint, Fault, JobSpec, JobState};
use std::time::Duration;

const SECRET: &str = "s3cr3t-Value-9876";

#[tokio::test]
async fn job_clones_runs_and_reports_a_masked_byte_exact_trace() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    let sha =
        f.gl.create_repo("acme/widget", &[("README.md", "hello from the repo\n")])
            .unwrap();
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/widget")
            .masked_variable("DEPLOY_TOKEN", SECRET)
            .file_variable("KUBECONFIG", "apiVersion: v1\n")
            .raw_variable("LITERAL", "$NOT_EXPANDED")
            .script([
                "cat README.md",
                "echo \"token=$DEPLOY_TOKEN\"",
                // The secret split across two writes of two processes.
                "printf 's3cr3t-'; sleep 0.3; printf 'Value-9876\\n'",
                "cat \"$KUBECONFIG\"",
                "echo \"literal=$LITERAL\"",
                "git rev-parse HEAD",
            ]),
    );
    let out = f.run_single(1).await;
    assert!(
        out.status.success(),
        "run-single failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(
        job.checksum_matches,
        "final checksum/bytesize must match the stored trace"
    );
    assert!(trace.contains("hello from the repo"), "{trace}");
    assert!(trace.contains("token=[MASKED]"), "{trace}");
    assert!(!trace.contains(SECRET), "secret leaked: {trace}");
    assert!(
        trace.contains("[MASKED]\n"),
        "split secret not masked: {trace}"
    );
    assert!(trace.contains("apiVersion: v1"), "{trace}");
    assert!(trace.contains("literal=$NOT_EXPANDED"), "{trace}");
    assert!(trace.contains(&sha), "{trace}");
    assert!(!trace.contains(&job.token), "job token leaked");
    // The job token never lands in the checkout's git config.
    let git_config = walk_find(&f.builds_dir(), "config", ".git");
    let text = std::fs::read_to_string(git_config.expect("a checkout exists")).unwrap();
    assert!(
        !text.contains(&job.token) && !text.contains("gitlab-ci-token"),
        "{text}"
    );
}

fn walk_find(root: &std::path::Path, name: &str, parent: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(root).ok()? {
        let p = entry.ok()?.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == parent) && p.join(name).is_file() {
                return Some(p.join(name));
            }
            if let Some(found) = walk_find(&p, name, parent) {
                return Some(found);
            }
        }
    }
    None
}

#[tokio::test]
async fn failing_script_reports_script_failure_and_exit_code() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["echo before", "exit 3", "echo never-printed"])
            .after_script(["echo \"after status=$CI_JOB_STATUS\""]),
    );
    f.run_single(1).await;
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(job.exit_code, Some(3));
    assert!(
        trace.contains("before") && !trace.contains("never-printed\n"),
        "{trace}"
    );
    assert!(trace.contains("after status=failed"), "{trace}");
    assert!(
        trace.contains("ERROR: Job failed: exit status 3"),
        "{trace}"
    );
    assert!(job.checksum_matches);
}

#[tokio::test]
async fn timeout_reports_job_execution_timeout() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .timeout(3)
            .script(["echo sleeping", "sleep 120"])
            .after_script(["echo \"after status=$CI_JOB_STATUS\""]),
    );
    f.run_single(1).await;
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Failed, "{trace}");
    assert_eq!(job.failure_reason.as_deref(), Some("job_execution_timeout"));
    assert!(trace.contains("after status=timedout"), "{trace}");
    assert!(
        trace.contains("execution took longer than 3s seconds"),
        "{trace}"
    );
}

#[tokio::test]
async fn graceful_cancel_runs_after_script_and_ends_canceled() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script([
                "echo started",
                "for i in $(seq 1 600); do echo tick $i; sleep 0.1; done",
            ])
            .after_script(["echo \"after status=$CI_JOB_STATUS\""]),
    );
    let runner = tokio::spawn({
        let f_dir = f.config_path();
        let bin = env!("CARGO_BIN_EXE_oar");
        async move {
            tokio::process::Command::new(bin)
                .args(["run-single", "--max-builds", "1", "-c"])
                .arg(f_dir)
                .kill_on_drop(true)
                .output()
                .await
        }
    });
    f.gl.wait_trace_contains(id, "tick 2", common::JOB_WAIT)
        .await
        .unwrap();
    f.gl.cancel_job(id);
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Canceled, "{trace}");
    assert!(trace.contains("after status=canceled"), "{trace}");
    assert!(
        !trace.contains("tick 600"),
        "script was not stopped: {trace}"
    );
    runner.await.unwrap().unwrap();
}

#[tokio::test]
async fn trace_416_resumes_at_the_server_offset_without_loss_or_duplication() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["for i in $(seq 1 30); do echo line-$i; sleep 0.05; done"]),
    );
    f.gl.inject(Fault::Trace416 { job: id, times: 3 });
    f.run_single(1).await;
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(job.checksum_matches);
    for i in 1..=30 {
        assert_eq!(
            trace.matches(&format!("line-{i}\n")).count(),
            1,
            "line-{i} in {trace}"
        );
    }
}

#[tokio::test]
async fn server_errors_and_connection_resets_on_every_endpoint_are_retried() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    f.gl.create_repo("acme/widget", &[("README.md", "repo\n")])
        .unwrap();
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/widget")
            .variable("GET_SOURCES_ATTEMPTS", "2")
            .script([
                "cat README.md",
                "for i in 1 2 3; do echo n$i; sleep 0.2; done",
            ]),
    );
    for ep in [
        Endpoint::RequestJob,
        Endpoint::UpdateJob,
        Endpoint::PatchTrace,
    ] {
        f.gl.inject(Fault::Status {
            endpoint: ep,
            status: 502,
            times: 2,
        });
        f.gl.inject(Fault::Reset {
            endpoint: ep,
            times: 1,
        });
    }
    f.gl.inject(Fault::Status {
        endpoint: Endpoint::Git,
        status: 503,
        times: 1,
    });
    let out = f.run_single(1).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(job.checksum_matches);
    assert!(trace.contains("n3\n"), "{trace}");
    let retried =
        f.gl.requests()
            .iter()
            .filter(|r| r.status == Some(502))
            .count();
    assert!(
        retried >= 6,
        "expected the injected 502s to be seen, got {retried}"
    );
    let _ = RUNNER_TOKEN;
}

#[tokio::test]
async fn output_limit_truncates_with_gitlabs_notice_and_the_job_goes_on() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "  output_limit = 1");
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script([
                "head -c 5000 /dev/zero | tr '\\0' 'a'; echo",
                "echo done > marker-$CI_JOB_ID",
            ]),
    );
    f.run_single(1).await;
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(job.checksum_matches);
    assert!(
        trace.contains("Job's log exceeded limit of 1024 bytes."),
        "{trace}"
    );
    assert!(
        job.trace.len() < 1024 + 200,
        "trace not truncated: {} bytes",
        job.trace.len()
    );
}

/// The first output of a step reaches GitLab at once, even when GitLab asks for one trace
/// update an hour (a fixed cadence would hold it back for the whole interval, since the
/// preparation's output was just sent).
#[tokio::test]
async fn a_steps_first_line_shows_in_gitlab_without_waiting_for_the_update_interval() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    f.gl.set_trace_update_interval(3600);
    f.gl.create_repo("acme/widget", &[("README.md", "x\n")])
        .unwrap();
    let go = f.dir.path().join("go");
    let made = std::process::Command::new("mkfifo")
        .arg(&go)
        .status()
        .unwrap();
    assert!(made.success());
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/widget")
            .variable("GIT_STRATEGY", "none")
            .script([
                "echo \"first-line-$((20 + 22))\"".to_string(),
                format!("read word < '{}'; echo \"got-$word\"", go.display()),
            ]),
    );
    let mut run = f.spawn_run(&[]);
    // The job blocks on the FIFO until the line is in GitLab's trace.
    f.gl.wait_trace_contains(id, "first-line-42\n", Duration::from_secs(30))
        .await
        .expect("the step's first line reaches GitLab while the step runs");
    assert_eq!(f.gl.job(id).state, JobState::Running);
    // Within budget: the preparation's PATCH, then at most three for the step's start.
    let patches = f.gl.requests_to(Endpoint::PatchTrace).len();
    assert!((2..=4).contains(&patches), "{patches} PATCHes");
    let path = go.clone();
    tokio::task::spawn_blocking(move || std::fs::write(path, "go\n"))
        .await
        .unwrap()
        .unwrap();
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(trace.contains("got-go\n"), "{trace}");
    assert!(job.checksum_matches);
    common::signal(&run, nix::sys::signal::Signal::SIGTERM);
    let _ = tokio::time::timeout(Duration::from_secs(30), run.wait()).await;
}
