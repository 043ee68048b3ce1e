//! End to end: what an operator does to a running manager (a second signal, editing
//! config.toml) and what GitLab does to a running job (a hard cancel).

mod common;

use common::{Fixture, signal};
use nix::sys::signal::Signal;
use oar_testkit::{JobSpec, JobState};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr};

fn ticking_job() -> JobSpec {
    JobSpec::new("acme/none")
        .variable("GIT_STRATEGY", "none")
        .script(["for i in $(seq 1 600); do echo tick $i; sleep 0.1; done"])
        .after_script(["echo after-script-ran"])
}

/// `oar run` with its log on a pipe, so a test can wait for what it says.
fn spawn_logged(f: &Fixture) -> (Child, Lines<BufReader<ChildStderr>>) {
    let mut c = f.oar();
    c.arg("run")
        .arg("-c")
        .arg(f.config_path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("oar run starts");
    let lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    (child, lines)
}

/// Reads the manager's log until a line contains `needle`.
async fn wait_log(lines: &mut Lines<BufReader<ChildStderr>>, needle: &str) {
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("log readable") {
            if line.contains(needle) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "the manager never logged {needle:?}");
}

#[tokio::test]
async fn a_second_signal_interrupts_running_jobs_at_once() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1\nshutdown_timeout = 3600", "");
    let id = f.gl.enqueue_job(ticking_job());
    let (mut child, mut log) = spawn_logged(&f);
    f.gl.wait_trace_contains(id, "tick 3", common::JOB_WAIT)
        .await
        .unwrap();
    signal(&child, Signal::SIGTERM);
    // Two signals sent back to back may arrive as one: send the second once the first is seen.
    wait_log(&mut log, "stopping: no new jobs").await;
    signal(&child, Signal::SIGTERM);
    // With a shutdown_timeout of an hour, only the second signal can end it this soon.
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the manager stopped after the second signal")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let job = f.gl.job(id);
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Failed, "{trace}");
    assert_eq!(
        job.failure_reason.as_deref(),
        Some("runner_system_failure"),
        "{trace}"
    );
    assert!(!trace.contains("tick 600"), "the script was not stopped");
}

#[tokio::test]
async fn an_edited_config_is_picked_up_without_a_restart() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    let (mut child, mut log) = spawn_logged(&f);
    wait_log(&mut log, "Oar is running").await;
    f.write_config(
        "concurrent = 1",
        "  environment = [\"OAR_RELOADED=from-the-new-config\"]",
    );
    wait_log(&mut log, "configuration reloaded").await;
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["echo value=$OAR_RELOADED"]),
    );
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(trace.contains("value=from-the-new-config"), "{trace}");

    // A broken edit is refused and the runner keeps working with what it had.
    std::fs::write(f.config_path(), "concurrent = \"many\"\n").unwrap();
    wait_log(&mut log, "new configuration refused").await;
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["echo still=$OAR_RELOADED"]),
    );
    let job = f.finished(id).await;
    assert!(
        job.trace_str().contains("still=from-the-new-config"),
        "{}",
        job.trace_str()
    );
    signal(&child, Signal::SIGTERM);
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_job_canceled_in_gitlab_stops_at_once_without_after_script() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    let id = f.gl.enqueue_job(ticking_job());
    let mut child = f.spawn_run(&[]);
    f.gl.wait_trace_contains(id, "tick 3", common::JOB_WAIT)
        .await
        .unwrap();
    let before = f.gl.job(id).trace.len();
    f.gl.abort_job(id);
    // The runner notices on its next trace update, stops the script and takes the next job.
    let next = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["echo next-job"]),
    );
    let job = f.finished(next).await;
    assert_eq!(job.state, JobState::Success, "{}", job.trace_str());
    let aborted = f.gl.job(id);
    assert_eq!(aborted.state, JobState::Canceled);
    let trace = aborted.trace_str();
    assert!(!trace.contains("after-script-ran"), "{trace}");
    assert!(!trace.contains("tick 600"), "{trace}");
    // GitLab refuses trace writes to a canceled job: nothing was appended after the cancel
    // beyond what was in flight.
    assert!(aborted.trace.len() >= before);
    signal(&child, Signal::SIGTERM);
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
}
