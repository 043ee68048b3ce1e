//! Snapshots of the generated stage scripts for one representative job.

use oar_gitlab::JobResponse;
use oar_job::{JobContext, JobSettings, scripts};

fn context() -> JobContext {
    let payload = serde_json::json!({
        "id": 77,
        "token": "glcbt-snapshotJobToken",
        "allow_git_fetch": true,
        "job_info": {"id": 77, "name": "test", "stage": "test", "project_id": 9},
        "git_info": {
            "repo_url": "https://gitlab-ci-token:glcbt-snapshotJobToken@gitlab.example.com/acme/widget.git",
            "ref": "main", "sha": "0123456789abcdef0123456789abcdef01234567", "ref_type": "branch",
            "refspecs": ["+refs/heads/main:refs/remotes/origin/main"], "depth": 20
        },
        "runner_info": {"timeout": 600},
        "variables": [
            {"key": "CI_JOB_TOKEN", "value": "glcbt-snapshotJobToken", "masked": true},
            {"key": "CARGO_HOME", "value": "$CI_PROJECT_DIR/.cargo", "public": true},
            {"key": "LITERAL", "value": "$NOT/${EXPANDED}", "raw": true},
            {"key": "KUBECONFIG", "value": "apiVersion: v1\n", "file": true},
            {"key": "QUOTED", "value": "it's \"quoted\""},
            {"key": "GIT_SUBMODULE_STRATEGY", "value": "recursive"}
        ],
        "steps": [
            {"name": "script", "script": ["cargo test", "cat <<EOF > x\nmulti\nEOF"], "when": "on_success"},
            {"name": "after_script", "script": ["echo done"], "when": "always"}
        ],
        "hooks": [{"name": "pre_get_sources_script", "script": ["echo pre-hook"]}],
        "features": {"trace_sections": true}
    });
    let job: JobResponse = serde_json::from_value(payload).expect("payload parses");
    let settings = JobSettings {
        runner_name: "snap".into(),
        short_token: "abcdefghi".into(),
        version: "0.1.0".into(),
        revision: "rev".into(),
        executor: "shell".into(),
        builds_dir: "/builds".into(),
        cache_dir: "/cache".into(),
        shared_builds_dir: true,
        environment: vec!["RUNNER_ENV=from-config".into()],
        pre_build_script: Some("echo pre-build".into()),
        output_limit_bytes: 4 << 20,
        ..JobSettings::default()
    };
    JobContext::new(job, settings).expect("context")
}

#[test]
fn layout_follows_gitlab_runner() {
    let ctx = context();
    assert_eq!(ctx.layout.project_dir, "/builds/abcdefghi/0/acme/widget");
    assert_eq!(ctx.layout.tmp_dir, "/builds/abcdefghi/0/acme/widget.tmp");
    assert_eq!(ctx.layout.cache_dir, "/cache/acme/widget");
    assert_eq!(
        ctx.var("CARGO_HOME"),
        "/builds/abcdefghi/0/acme/widget/.cargo"
    );
}

#[test]
fn get_sources_script() {
    let s = scripts::get_sources(&context()).script;
    assert!(!s.contains("gitlab-ci-token:glcbt") || s.contains(".gitlab-runner.ext.conf"));
    insta::assert_snapshot!(s);
}

#[test]
fn step_script() {
    let ctx = context();
    insta::assert_snapshot!(scripts::step(&ctx, "script", &ctx.job.steps[0].script).script);
}

#[test]
fn after_script_and_cleanup() {
    let ctx = context();
    let after = scripts::after_script(&ctx, &ctx.job.steps[1].script, "failed").script;
    assert!(after.contains("export CI_JOB_STATUS=failed"));
    insta::assert_snapshot!(format!(
        "{after}\n----- cleanup -----\n{}",
        scripts::cleanup(&ctx).script
    ));
}
