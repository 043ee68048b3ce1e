//! End to end: `oar run` concurrency, draining on SIGTERM, metrics, malformed payloads.

mod common;

use common::{Fixture, http_get, signal};
use nix::sys::signal::Signal;
use oar_testkit::{JobSpec, JobState};
use std::time::Duration;

/// Each job records how many jobs were running while it ran (marker files in a shared dir).
fn counting_job(dir: &std::path::Path) -> JobSpec {
    let d = dir.display();
    JobSpec::new("acme/none")
        .variable("GIT_STRATEGY", "none")
        .script([
            format!("mkdir -p {d}/running && touch {d}/running/$CI_JOB_ID"),
            "sleep 2".to_string(),
            format!("ls {d}/running | wc -l > {d}/seen-$CI_JOB_ID"),
            "sleep 0.5".to_string(),
            format!("rm {d}/running/$CI_JOB_ID"),
        ])
}

#[tokio::test]
async fn concurrent_three_runs_three_jobs_at_once_and_never_a_fourth() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 3", "");
    let marks = f.dir.path().join("marks");
    let ids: Vec<i64> = (0..6)
        .map(|_| f.gl.enqueue_job(counting_job(&marks)))
        .collect();
    let mut child = f.spawn_run(&[]);
    for id in &ids {
        let job = f.finished(*id).await;
        assert_eq!(job.state, JobState::Success, "{}", job.trace_str());
    }
    let mut seen = Vec::new();
    for id in &ids {
        let n: usize = std::fs::read_to_string(marks.join(format!("seen-{id}")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        seen.push(n);
    }
    assert!(
        seen.iter().all(|n| *n <= 3),
        "more than 3 jobs ran at once: {seen:?}"
    );
    assert_eq!(
        seen.iter().max(),
        Some(&3),
        "never reached 3 parallel jobs: {seen:?}"
    );
    signal(&child, Signal::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_lets_the_running_job_finish_and_takes_no_new_one() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1\nshutdown_timeout = 60", "");
    let first = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["echo started", "sleep 2", "echo finished-after-signal"]),
    );
    let mut child = f.spawn_run(&[]);
    f.gl.wait_trace_contains(first, "started", common::JOB_WAIT)
        .await
        .unwrap();
    signal(&child, Signal::SIGTERM);
    let second = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["echo second"]),
    );
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let job = f.gl.job(first);
    assert_eq!(job.state, JobState::Success, "{}", job.trace_str());
    assert!(job.trace_str().contains("finished-after-signal"));
    assert_eq!(
        f.gl.job(second).state,
        JobState::Pending,
        "a draining runner took a new job"
    );
}

#[tokio::test]
async fn metrics_show_jobs_and_stages() {
    let f = Fixture::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    f.write_config(&format!("concurrent = 2\nlisten_address = \"{addr}\""), "");
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["echo hi"]),
    );
    let mut child = f.spawn_run(&[]);
    f.finished(id).await;
    // The job is reported before its metrics are recorded; wait until they are.
    let mut body = String::new();
    for _ in 0..100 {
        let (status, b) = http_get(&addr, "/metrics").await;
        assert_eq!(status, 200);
        body = b;
        if body.contains("gitlab_runner_failed_jobs_total")
            || body.contains("gitlab_runner_job_duration_seconds_count")
        {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        body.contains("gitlab_runner_jobs_total{runner=\"e2e\""),
        "{body}"
    );
    assert!(body.contains("gitlab_runner_concurrent 2"), "{body}");
    assert!(
        body.contains(
            "gitlab_runner_job_stage_duration_seconds_count{runner=\"e2e\",stage=\"step_script\"}"
        ),
        "{body}"
    );
    assert!(
        body.contains("gitlab_runner_api_request_statuses_total"),
        "{body}"
    );
    let (live, _) = http_get(&addr, "/health/live").await;
    assert_eq!(live, 200);
    let (ready, _) = http_get(&addr, "/health/ready").await;
    assert_eq!(ready, 200);
    signal(&child, Signal::SIGTERM);
    child.wait().await.unwrap();
}

#[tokio::test]
async fn malformed_payloads_never_crash_the_runner() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    let huge = "x".repeat(2 * 1024 * 1024);
    let corpus: Vec<JobSpec> = vec![
        JobSpec::raw_payload(b"{not json".to_vec()),
        JobSpec::raw_payload(b"[]".to_vec()),
        JobSpec::raw_payload(b"null".to_vec()),
        JobSpec::new("acme/none").mutate(|v| v["steps"] = serde_json::json!("not an array")),
        JobSpec::new("acme/none").mutate(|v| v["variables"] = serde_json::json!([{"key": 5, "value": true}])),
        JobSpec::new("acme/none").mutate(|v| v["git_info"] = serde_json::Value::Null),
        JobSpec::new("acme/none").mutate(|v| v["runner_info"]["timeout"] = serde_json::json!(1e300)),
        JobSpec::new("acme/none").mutate(|v| v["job_info"] = serde_json::json!({"id": "abc"})),
        JobSpec::new("acme/none").mutate(|v| {
            v["steps"] = serde_json::Value::Null;
            v["image"] = serde_json::json!(7);
        }),
        JobSpec::new("acme/none").mutate(|v| {
            v["features"] = serde_json::Value::Null;
            v["dependencies"] = serde_json::json!([{"id": null}]);
        }),
        JobSpec::new("acme/none").mutate(move |v| {
            v["variables"] = serde_json::json!([{"key": "HUGE", "value": huge, "masked": true}]);
            v["steps"] = serde_json::json!([{"name": "script", "script": ["echo ok"]}]);
            v["git_info"]["depth"] = serde_json::json!(-1);
        }),
        JobSpec::new("acme/none").mutate(|v| {
            v["variables"] = serde_json::json!([{"key": "GIT_STRATEGY", "value": "none"}, {"key": "GIT_CLONE_PATH", "value": "/etc"}]);
        }),
    ];
    let ids: Vec<i64> = corpus.into_iter().map(|j| f.gl.enqueue_job(j)).collect();
    let good = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["echo still-alive"]),
    );
    let mut child = f.spawn_run(&[]);
    let job = f.finished(good).await;
    assert_eq!(job.state, JobState::Success, "{}", job.trace_str());
    assert!(child.try_wait().unwrap().is_none(), "oar exited");
    for id in ids {
        let j = f.gl.job(id);
        // Every payload with a usable id and token ends in a state; none is left running.
        assert_ne!(
            j.state,
            JobState::Running,
            "job {id} left running: {}",
            j.trace_str()
        );
    }
    signal(&child, Signal::SIGTERM);
    child.wait().await.unwrap();
}
