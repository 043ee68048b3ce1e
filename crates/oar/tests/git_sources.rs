//! End to end: the git options users set on jobs, against real git over smart HTTP.

mod common;

use common::Fixture;
use oar_testkit::{JobSpec, JobState};

#[tokio::test]
async fn recursive_submodules_are_cloned_with_the_job_token() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    f.gl.create_repo("acme/deep", &[("deep.txt", "deepest\n")])
        .unwrap();
    f.gl.create_repo("acme/lib", &[("lib.txt", "library code\n")])
        .unwrap();
    f.gl.add_submodule("acme/lib", "vendor/deep", "../deep.git", "acme/deep")
        .unwrap();
    f.gl.create_repo("acme/app", &[("app.txt", "application\n")])
        .unwrap();
    f.gl.add_submodule("acme/app", "lib", "../lib.git", "acme/lib")
        .unwrap();
    f.gl.allow_job_token_access("acme/lib", "acme/app");
    f.gl.allow_job_token_access("acme/deep", "acme/app");
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/app")
            .variable("GIT_SUBMODULE_STRATEGY", "recursive")
            .script(["cat app.txt lib/lib.txt lib/vendor/deep/deep.txt"]),
    );
    let out = f.run_single(1).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(
        trace.contains("Updating/initializing submodules recursively"),
        "{trace}"
    );
    assert!(
        trace.contains("application\nlibrary code\ndeepest\n"),
        "{trace}"
    );
    assert!(!trace.contains(&job.token), "job token leaked");
    // Without a strategy, submodules are left alone.
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/app").script(["test ! -e lib/lib.txt && echo no-submodule"]),
    );
    f.run_single(1).await;
    let job = f.finished(id).await;
    assert!(
        job.trace_str().contains("no-submodule"),
        "{}",
        job.trace_str()
    );
}

#[tokio::test]
async fn fetch_strategy_reuses_the_checkout_and_cleans_with_git_clean_flags() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    f.gl.create_repo("acme/widget", &[("README.md", "v1\n")])
        .unwrap();
    let first = f.gl.enqueue_job(
        JobSpec::new("acme/widget")
            .variable("GIT_STRATEGY", "fetch")
            .script([
                "echo junk > junk.txt",
                "echo keep > keep.txt",
                "mkdir -p out && touch out/o",
            ]),
    );
    f.run_single(1).await;
    assert_eq!(f.finished(first).await.state, JobState::Success);
    f.gl.commit("acme/widget", &[("README.md", "v2\n")])
        .unwrap();
    let second = f.gl.enqueue_job(
        JobSpec::new("acme/widget")
            .variable("GIT_STRATEGY", "fetch")
            .variable("GIT_CLEAN_FLAGS", "-ffdx -e keep.txt")
            .script([
                "cat README.md",
                "test -e junk.txt && echo junk-present || echo junk-gone",
                "test -e out && echo out-present || echo out-gone",
                "cat keep.txt",
            ]),
    );
    f.run_single(1).await;
    let job = f.finished(second).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(
        trace.contains("Reinitialized existing Git repository"),
        "{trace}"
    );
    assert!(trace.contains("v2\n"), "{trace}");
    assert!(
        trace.contains("junk-gone") && trace.contains("out-gone"),
        "{trace}"
    );
    assert!(trace.contains("keep\n"), "{trace}");

    // GIT_CLEAN_FLAGS=none keeps everything.
    let third = f.gl.enqueue_job(
        JobSpec::new("acme/widget")
            .variable("GIT_STRATEGY", "fetch")
            .variable("GIT_CLEAN_FLAGS", "none")
            .script(["echo again > junk.txt"]),
    );
    f.run_single(1).await;
    assert_eq!(f.finished(third).await.state, JobState::Success);
    let fourth = f.gl.enqueue_job(
        JobSpec::new("acme/widget")
            .variable("GIT_STRATEGY", "fetch")
            .variable("GIT_CLEAN_FLAGS", "none")
            .script(["cat junk.txt"]),
    );
    f.run_single(1).await;
    let job = f.finished(fourth).await;
    assert!(job.trace_str().contains("again\n"), "{}", job.trace_str());
}

#[tokio::test]
async fn git_fetch_extra_flags_replace_the_defaults() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    f.gl.create_repo("acme/widget", &[("README.md", "hi\n")])
        .unwrap();
    // Default flags (`--prune --quiet`): git prints no ref updates.
    let quiet =
        f.gl.enqueue_job(JobSpec::new("acme/widget").script(["true"]));
    f.run_single(1).await;
    let job = f.finished(quiet).await;
    assert_eq!(job.state, JobState::Success, "{}", job.trace_str());
    assert!(
        !job.trace_str().contains("[new ref]"),
        "{}",
        job.trace_str()
    );
    // `--verbose` instead: git lists what it fetched.
    let verbose = f.gl.enqueue_job(
        JobSpec::new("acme/widget")
            .variable("GIT_FETCH_EXTRA_FLAGS", "--verbose")
            .script(["true"]),
    );
    f.run_single(1).await;
    let job = f.finished(verbose).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(
        trace.contains("[new ref]") || trace.contains("[new branch]"),
        "{trace}"
    );
}
