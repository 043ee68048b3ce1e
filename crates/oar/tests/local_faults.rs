//! Local faults (issue 15): the builds directory's filesystem fills up under a shell job. The
//! job fails with the cause in its log, and the runner goes on with the next job once there is
//! room again.

mod common;

use common::Fixture;
use oar_testkit::{JobSpec, JobState};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A small tmpfs mounted at a directory for the test's life (the test machines run as root).
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (the test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs(dir.to_owned())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_builds_filesystem_fails_the_job_naming_it_and_the_runner_goes_on() {
    let f = Fixture::new().await;
    let _fs = SmallFs::mount(&f.builds_dir(), "4m");
    f.write_config("concurrent = 1", "");
    f.gl.create_repo("acme/widget", &[("README.md", "x\n")])
        .unwrap();
    let big = f.gl.enqueue_job(JobSpec::new("acme/widget").script([
        "echo filling the disk",
        "head -c 8000000 /dev/zero > big.bin",
        "echo never printed",
    ]));
    let mut runner = f.spawn_run(&[]);
    let job = f.finished(big).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Failed, "{trace}");
    assert_eq!(
        job.failure_reason.as_deref(),
        Some("script_failure"),
        "{trace}"
    );
    assert!(trace.contains("No space left on device"), "{trace}");
    assert!(!trace.contains("never printed\n"), "{trace}");
    assert!(job.checksum_matches, "{trace}");
    // An admin makes room; the same runner takes and runs the next job.
    for entry in walk(&f.builds_dir()) {
        if entry.file_name().is_some_and(|n| n == "big.bin") {
            std::fs::remove_file(&entry).unwrap();
        }
    }
    let next =
        f.gl.enqueue_job(JobSpec::new("acme/widget").script(["cat README.md"]));
    let job = f.finished(next).await;
    assert_eq!(job.state, JobState::Success, "{}", job.trace_str());
    assert!(runner.try_wait().unwrap().is_none(), "the runner stopped");
    common::signal(&runner, nix::sys::signal::Signal::SIGTERM);
    let _ = tokio::time::timeout(Duration::from_secs(30), runner.wait()).await;
    let _ = runner.kill().await;
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
