//! A first run of Oar with nothing but this checkout: starts a FakeGitlab with a git
//! repository and one job, runs `oar run-single` against it, and prints the job log exactly
//! as GitLab stored it.
//!
//! `cargo run -p oar-testkit --example demo`

use oar_testkit::{FakeGitlab, JobSpec};
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let gl = FakeGitlab::start().await?;
    let token = "glrt-demoRunnerToken0123456";
    gl.add_runner(token);
    gl.set_trace_update_interval(1);
    gl.create_repo("acme/widget", &[("README.md", "Hello from acme/widget!\n")])?;
    let id = gl.enqueue_job(
        JobSpec::new("acme/widget")
            .masked_variable("DEPLOY_TOKEN", "s3cr3t-Value-9876")
            .script([
                "cat README.md",
                "echo \"The deploy token is $DEPLOY_TOKEN\"",
                "git log --oneline -1",
            ])
            .after_script(["echo \"after_script sees CI_JOB_STATUS=$CI_JOB_STATUS\""]),
    );
    let work = tempfile::tempdir()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!(
        "FakeGitlab at {}; running job {id} with `oar run-single`...\n",
        gl.url()
    );
    let status = tokio::process::Command::new(cargo)
        .args([
            "run",
            "-q",
            "-p",
            "oar",
            "--",
            "run-single",
            "--url",
            &gl.url(),
            "--token",
            token,
        ])
        .args(["--max-builds", "1", "--builds-dir"])
        .arg(work.path().join("builds"))
        .arg("--cache-dir")
        .arg(work.path().join("cache"))
        .env("HOME", work.path())
        .status()
        .await?;
    let job = gl.wait_job_finished(id, Duration::from_secs(120)).await?;
    println!("----- job {id} log, as GitLab stored it -----");
    print!("{}", job.trace_str());
    println!(
        "----- state: {:?}, checksum matches: {} (oar exit: {status}) -----",
        job.state, job.checksum_matches
    );
    Ok(())
}
