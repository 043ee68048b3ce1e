//! GitLab misbehaving while jobs run (issue 15): down for minutes on the trace and state
//! endpoints, a job token revoked mid-job, the runner's own token revoked. Each ends with the
//! job finished and its trace byte-exact when GitLab came back, or stopped with the reason in
//! the runner's log, and the runner going on.

mod common;

use common::Fixture;
use oar_testkit::{Endpoint, Fault, JobSpec, JobState};
use std::time::Duration;

/// A job printing `n` numbered lines, one every 50 ms, from its own checkout.
fn counting(n: u32) -> JobSpec {
    JobSpec::new("acme/widget").script([format!(
        "for i in $(seq 1 {n}); do echo line-$i; sleep 0.05; done"
    )])
}

fn each_line_once(trace: &str, n: u32) {
    for i in 1..=n {
        assert_eq!(
            trace.matches(&format!("line-{i}\n")).count(),
            1,
            "line-{i} in {trace}"
        );
    }
}

/// GitLab answers 500/503, then 502, to every trace PATCH and state PUT for two minutes,
/// starting while the job writes: the runner keeps the log, backs off, and once GitLab is back delivers the whole
/// trace and the final state. Nothing is lost or doubled, and the runner did not hammer GitLab.
#[tokio::test]
async fn two_minutes_of_5xx_on_trace_and_state_lose_nothing() {
    const OUTAGE: Duration = Duration::from_secs(120);
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    f.gl.create_repo("acme/widget", &[("README.md", "x\n")])
        .unwrap();
    let id = f.gl.enqueue_job(counting(60));
    let mut runner = f.spawn_run(&[]);
    f.gl.wait_trace_contains(id, "line-1\n", Duration::from_secs(60))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    // 500 on the trace, 503 on the state, then 502 on both: a GitLab upgrading itself.
    for (endpoint, status) in [(Endpoint::PatchTrace, 500), (Endpoint::UpdateJob, 503)] {
        f.gl.inject(Fault::Outage {
            endpoint,
            status,
            duration: OUTAGE / 2,
            until: None,
        });
        f.gl.inject(Fault::Outage {
            endpoint,
            status: 502,
            duration: OUTAGE,
            until: None,
        });
    }
    let before = f.gl.requests().len();
    let job =
        f.gl.wait_job_finished(id, OUTAGE + Duration::from_secs(180))
            .await
            .unwrap();
    let trace = job.trace_str();
    assert!(
        started.elapsed() >= OUTAGE,
        "finished during the outage: {trace}"
    );
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(job.checksum_matches, "{trace}");
    each_line_once(&trace, 60);
    assert!(trace.contains("Job succeeded"), "{trace}");
    // Backed off: two minutes of refusals cost tens of requests, not thousands.
    let during = f.gl.requests().len() - before;
    assert!(during < 120, "{during} requests during the outage");
    let _ = runner.kill().await;
}

/// The job token is revoked mid-job (GitLab answers 401 to its trace and state): the runner
/// stops the job at once instead of running and retrying until the job's timeout, says why in
/// its log, and takes the next job.
#[tokio::test]
async fn a_job_token_revoked_mid_job_stops_the_job_and_the_runner_goes_on() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    f.gl.create_repo("acme/widget", &[("README.md", "x\n")])
        .unwrap();
    let marker = f.dir.path().join("after-the-sleep");
    let id = f.gl.enqueue_job(JobSpec::new("acme/widget").script([
        "echo before".to_string(),
        "for i in $(seq 1 60); do echo tick-$i; sleep 1; done".to_string(),
        format!("touch {}", marker.display()),
    ]));
    let mut c = f.oar();
    c.arg("run")
        .arg("-c")
        .arg(f.config_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut runner = c.spawn().unwrap();
    let stderr = runner.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            seen.push(l);
        }
        seen
    });
    f.gl.wait_trace_contains(id, "before\n", Duration::from_secs(60))
        .await
        .unwrap();
    let revoked = tokio::time::Instant::now();
    for endpoint in [Endpoint::PatchTrace, Endpoint::UpdateJob] {
        f.gl.inject(Fault::Outage {
            endpoint,
            status: 401,
            duration: Duration::from_secs(3600),
            until: None,
        });
    }
    // The next job (another token, so the outage is lifted for it) runs on the same runner.
    f.gl.wait_request(
        Endpoint::PatchTrace,
        |r| r.status == Some(401),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    f.gl.clear_faults();
    let next = f.gl.enqueue_job(counting(3));
    let job = f.finished(next).await;
    assert_eq!(job.state, JobState::Success, "{}", job.trace_str());
    assert!(
        revoked.elapsed() < Duration::from_secs(50),
        "the revoked job held the only slot for {:?}",
        revoked.elapsed()
    );
    assert!(!marker.exists(), "the revoked job's script went on");
    common::signal(&runner, nix::sys::signal::Signal::SIGTERM);
    let _ = tokio::time::timeout(Duration::from_secs(30), runner.wait()).await;
    let _ = runner.kill().await;
    let lines = log.await.unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("GitLab refused the trace") && l.contains("401")),
        "{lines:#?}"
    );
}

/// The runner's token is revoked (the runner deleted in GitLab) while a job runs: the job,
/// whose own token still works, finishes; the runner takes no job any more, says why, and
/// does not hammer GitLab with requests it knows are refused.
#[tokio::test]
async fn a_revoked_runner_token_lets_the_running_job_finish_and_takes_no_more() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    f.gl.create_repo("acme/widget", &[("README.md", "x\n")])
        .unwrap();
    let id = f.gl.enqueue_job(counting(40));
    let mut c = f.oar();
    c.arg("run")
        .arg("-c")
        .arg(f.config_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut runner = c.spawn().unwrap();
    let stderr = runner.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            seen.push(l);
        }
        seen
    });
    f.gl.wait_trace_contains(id, "line-1\n", Duration::from_secs(60))
        .await
        .unwrap();
    let runner_id = f.gl.runners()[0].id;
    f.gl.update_runner(runner_id, |r| r.token = "glrt-revoked-by-an-admin".into());
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(job.checksum_matches, "{trace}");
    each_line_once(&trace, 40);
    let later = f.gl.enqueue_job(counting(1));
    // The refusals: a few, then a pause (an admin may restore the token; then jobs resume).
    f.gl.wait_request(
        Endpoint::RequestJob,
        |r| r.status == Some(403),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    // A measurement window, not a synchronisation: how often the runner asks meanwhile.
    let before = f.gl.requests_to(Endpoint::RequestJob).len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let in_ten_seconds = f.gl.requests_to(Endpoint::RequestJob).len() - before;
    assert!(
        in_ten_seconds <= 12,
        "{in_ten_seconds} job requests in 10 s"
    );
    assert_eq!(f.gl.job(later).state, JobState::Pending);
    common::signal(&runner, nix::sys::signal::Signal::SIGTERM);
    let _ = tokio::time::timeout(Duration::from_secs(30), runner.wait()).await;
    let _ = runner.kill().await;
    let lines = log.await.unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("forbidden (check the token): 403")),
        "the runner does not say why it takes no job: {lines:#?}"
    );
    // After `unhealthy_requests_limit` (3) refusals in a row it pauses for
    // `unhealthy_interval` (1 h by default), as GitLab Runner does, and says so.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("runner is unhealthy; pausing job requests")),
        "{lines:#?}"
    );
}

/// A slow GitLab (every trace PATCH and state PUT answered after 5 s, some connections reset):
/// the job is not held back by its reporting, and GitLab ends up with every byte once.
#[tokio::test]
async fn a_slow_gitlab_that_also_resets_connections_gets_every_byte_once() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    f.gl.create_repo("acme/widget", &[("README.md", "x\n")])
        .unwrap();
    let id = f.gl.enqueue_job(counting(40));
    for endpoint in [Endpoint::PatchTrace, Endpoint::UpdateJob] {
        f.gl.inject(Fault::Delay {
            endpoint,
            by: Duration::from_secs(5),
            times: 4,
        });
        f.gl.inject(Fault::Reset { endpoint, times: 3 });
    }
    let mut runner = f.spawn_run(&[]);
    let job =
        f.gl.wait_job_finished(id, Duration::from_secs(240))
            .await
            .unwrap();
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(job.checksum_matches, "{trace}");
    each_line_once(&trace, 40);
    let slow =
        f.gl.requests()
            .iter()
            .filter(|r| r.faulted && r.elapsed >= Duration::from_secs(5))
            .count();
    assert!(slow >= 4, "{slow} slow answers");
    let _ = runner.kill().await;
}

/// `429` with `Retry-After`: the runner waits what GitLab asks before it sends that request
/// again, and loses nothing.
#[tokio::test]
async fn retry_after_is_waited_for() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    f.gl.create_repo("acme/widget", &[("README.md", "x\n")])
        .unwrap();
    let id = f.gl.enqueue_job(counting(20));
    for endpoint in [Endpoint::PatchTrace, Endpoint::UpdateJob] {
        f.gl.inject(Fault::RateLimited {
            endpoint,
            retry_after: 2,
            times: 2,
        });
    }
    let out = f.run_single(1).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(job.checksum_matches, "{trace}");
    each_line_once(&trace, 20);
    for endpoint in [Endpoint::PatchTrace, Endpoint::UpdateJob] {
        let requests = f.gl.requests_to(endpoint);
        let limited: Vec<usize> = (0..requests.len())
            .filter(|i| requests[*i].status == Some(429))
            .collect();
        assert_eq!(limited.len(), 2, "{endpoint:?}");
        for i in limited {
            let next = requests.get(i + 1).expect("a request after the 429");
            let waited = next.at.duration_since(requests[i].at + requests[i].elapsed);
            assert!(
                waited >= Duration::from_millis(1900),
                "{endpoint:?}: sent again after {waited:?}"
            );
        }
    }
}
