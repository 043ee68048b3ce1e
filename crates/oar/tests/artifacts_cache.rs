//! End to end: artifacts between jobs through FakeGitlab, and caches between pipelines through
//! a real S3 server that checks signatures.

mod common;

use common::Fixture;
use oar_testkit::s3::S3Server;
use oar_testkit::{Endpoint, Fault, JobSpec, JobState};
use serde_json::json;

/// Job A builds a tree with an executable, a symlink, an empty dir and a file to exclude.
fn producer() -> JobSpec {
    JobSpec::new("acme/none")
        .name("build")
        .variable("GIT_STRATEGY", "none")
        .script([
            "rm -rf out",
            "mkdir -p out/empty out/deep/er",
            "echo hello > out/a.txt",
            "printf '#!/bin/sh\\necho tool-ran\\n' > out/tool.sh && chmod 755 out/tool.sh",
            "chmod 640 out/a.txt",
            "ln -s a.txt out/link",
            "echo nested > out/deep/er/n.txt",
            "echo skip > out/skip.log",
        ])
        .artifacts(json!([{
            "name": "bin-$CI_JOB_NAME",
            "paths": ["out/"],
            "exclude": ["out/*.log"],
            "when": "on_success",
            "artifact_type": "archive",
            "artifact_format": "zip",
            "expire_in": "1 day"
        }]))
}

#[tokio::test]
async fn artifacts_of_one_job_reach_the_next_with_modes_and_links() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    let a = f.gl.enqueue_job(producer());
    f.run_single(1).await;
    let job = f.finished(a).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(
        trace.contains("Uploading artifacts as \"archive\" to coordinator... 201 Created"),
        "{trace}"
    );
    assert_eq!(job.artifacts.len(), 1, "{trace}");
    assert_eq!(job.artifacts[0].filename, "bin-build.zip");
    assert_eq!(job.artifacts[0].expire_in.as_deref(), Some("1 day"));

    // The next job downloads through a redirect to "object storage".
    f.gl.set_artifacts_in_object_storage(true);
    // `empty`: a fresh directory, so everything must come from the download.
    let b = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "empty")
            .dependencies(&[a])
            .script([
                "stat -c '%a %n' out/a.txt out/tool.sh",
                "./out/tool.sh",
                "echo link=$(readlink out/link)",
                "cat out/deep/er/n.txt",
                "test -d out/empty && echo empty-dir-kept",
                "test ! -e out/skip.log && echo excluded-file-absent",
            ]),
    );
    f.run_single(1).await;
    let job = f.finished(b).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(trace.contains("Downloading artifacts for build"), "{trace}");
    assert!(
        trace.contains("640 out/a.txt") && trace.contains("755 out/tool.sh"),
        "{trace}"
    );
    assert!(trace.contains("tool-ran"), "{trace}");
    assert!(trace.contains("link=a.txt"), "{trace}");
    assert!(trace.contains("nested"), "{trace}");
    assert!(trace.contains("empty-dir-kept"), "{trace}");
    assert!(trace.contains("excluded-file-absent"), "{trace}");
    assert_eq!(f.gl.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn artifacts_when_on_failure_upload_only_for_failed_jobs() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    let spec = |script: &str| {
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["echo report > report.txt", script])
            .artifacts(json!([
                {"paths": ["report.txt"], "when": "on_failure"}
            ]))
    };
    let ok = f.gl.enqueue_job(spec("true"));
    let bad = f.gl.enqueue_job(spec("exit 4"));
    f.run_single(2).await;
    let ok = f.finished(ok).await;
    assert_eq!(ok.state, JobState::Success, "{}", ok.trace_str());
    assert!(ok.artifacts.is_empty(), "{}", ok.trace_str());
    let bad = f.finished(bad).await;
    assert_eq!(bad.state, JobState::Failed);
    assert_eq!(bad.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(bad.exit_code, Some(4));
    assert_eq!(bad.artifacts.len(), 1, "{}", bad.trace_str());
    assert!(
        bad.trace_str()
            .contains("Uploading artifacts for failed job")
    );
}

#[tokio::test]
async fn artifact_endpoints_retry_server_errors_and_explain_refusals() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    // A 502 and a dropped connection are retried.
    f.gl.inject(Fault::Status {
        endpoint: Endpoint::UploadArtifacts,
        status: 502,
        times: 1,
    });
    f.gl.inject(Fault::Reset {
        endpoint: Endpoint::UploadArtifacts,
        times: 1,
    });
    let a = f.gl.enqueue_job(producer());
    f.run_single(1).await;
    let job = f.finished(a).await;
    assert_eq!(job.state, JobState::Success, "{}", job.trace_str());
    assert_eq!(job.artifacts.len(), 1);
    f.gl.inject(Fault::Status {
        endpoint: Endpoint::DownloadArtifacts,
        status: 503,
        times: 1,
    });
    f.gl.inject(Fault::Reset {
        endpoint: Endpoint::DownloadArtifacts,
        times: 1,
    });
    let b = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .dependencies(&[a])
            .script(["cat out/a.txt"]),
    );
    f.run_single(1).await;
    let job = f.finished(b).await;
    assert_eq!(job.state, JobState::Success, "{}", job.trace_str());

    // 413: the job fails, and its log says the archive is too large.
    f.gl.inject(Fault::Status {
        endpoint: Endpoint::UploadArtifacts,
        status: 413,
        times: 1,
    });
    let c = f.gl.enqueue_job(producer());
    f.run_single(1).await;
    let job = f.finished(c).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Failed, "{trace}");
    assert!(trace.contains("too large"), "{trace}");
    // A dependency whose artifacts are gone (expired, erased) fails the job with the reason.
    let d = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .dependencies(&[c])
            .script(["true"])
            .mutate(|payload| {
                payload["dependencies"][0]["artifacts_file"] =
                    json!({"filename": "artifacts.zip", "size": 1234});
            }),
    );
    f.run_single(1).await;
    let job = f.finished(d).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Failed, "{trace}");
    assert!(trace.contains("404"), "{trace}");
}

fn s3_config(s3: &S3Server, secret: &str, shared: bool) -> String {
    format!(
        "  [runners.cache]\n    Type = \"s3\"\n    Shared = {shared}\n    Path = \"ci\"\n    [runners.cache.s3]\n      ServerAddress = \"{}\"\n      AccessKey = \"{}\"\n      SecretKey = \"{secret}\"\n      BucketName = \"{}\"\n      BucketLocation = \"us-east-1\"\n      Insecure = true\n      AuthenticationType = \"access-key\"\n",
        s3.server_address(),
        s3.access_key(),
        s3.bucket()
    )
}

fn cache_job(key: &str, policy: &str, script: &[&str]) -> JobSpec {
    JobSpec::new("acme/none")
        .variable("GIT_STRATEGY", "none")
        .script(script.iter().map(|s| s.to_string()))
        .cache(json!([{
            "key": key,
            "paths": ["vendor/"],
            "policy": policy,
            "when": "on_success",
            "untracked": false
        }]))
}

#[tokio::test]
async fn caches_travel_between_pipelines_through_s3() {
    let s3 = S3Server::start("runner-cache").await.unwrap();
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", &s3_config(&s3, s3.secret_key(), false));
    let first = f.gl.enqueue_job(cache_job(
        "deps-$CI_COMMIT_REF_NAME",
        "pull-push",
        &["mkdir -p vendor && echo from-pipeline-1 > vendor/lib.txt"],
    ));
    f.run_single(1).await;
    let job = f.finished(first).await;
    assert_eq!(job.state, JobState::Success, "{}", job.trace_str());
    let keys = s3.object_keys();
    assert_eq!(keys.len(), 1, "{keys:?}\n{}", job.trace_str());
    assert!(
        keys[0].starts_with("ci/runner/")
            && keys[0].contains("/project/")
            && keys[0].ends_with("/deps-main"),
        "{keys:?}"
    );
    // Only the remote copy is left: the local cache dir is wiped.
    std::fs::remove_dir_all(f.dir.path().join("cache")).unwrap();
    std::fs::remove_dir_all(f.builds_dir()).unwrap();
    let second = f.gl.enqueue_job(cache_job(
        "deps-$CI_COMMIT_REF_NAME",
        "pull",
        &["cat vendor/lib.txt"],
    ));
    f.run_single(1).await;
    let job = f.finished(second).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(trace.contains("from-pipeline-1"), "{trace}");
    // The job log never shows a signature.
    assert!(!trace.contains("X-Amz-Signature"), "{trace}");
}

#[tokio::test]
async fn pull_policy_never_uploads_and_fallback_keys_are_tried_in_order() {
    let s3 = S3Server::start("runner-cache").await.unwrap();
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", &s3_config(&s3, s3.secret_key(), true));
    let pull = f.gl.enqueue_job(cache_job(
        "pulled",
        "pull",
        &["mkdir -p vendor && echo x > vendor/x"],
    ));
    f.run_single(1).await;
    let job = f.finished(pull).await;
    assert_eq!(job.state, JobState::Success, "{}", job.trace_str());
    assert!(
        job.trace_str()
            .contains("Not uploading cache pulled due to policy")
    );
    assert!(s3.object_keys().is_empty(), "{:?}", s3.object_keys());

    // Two caches exist remotely: "second" and "third"; the job's key is missing.
    for key in ["second", "third"] {
        let id = f.gl.enqueue_job(cache_job(
            key,
            "push",
            &[&format!(
                "mkdir -p vendor && echo from-{key} > vendor/which"
            )],
        ));
        f.run_single(1).await;
        assert_eq!(f.finished(id).await.state, JobState::Success);
        std::fs::remove_dir_all(f.builds_dir()).unwrap();
    }
    std::fs::remove_dir_all(f.dir.path().join("cache")).unwrap();
    assert_eq!(s3.object_keys().len(), 2, "{:?}", s3.object_keys());
    // Shared = true: no runner segment in the object name.
    assert!(
        s3.object_keys()
            .iter()
            .all(|k| k.starts_with("ci/project/"))
    );
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .variable("CACHE_FALLBACK_KEY", "third")
            .script(["cat vendor/which"])
            .cache(json!([{
                "key": "missing",
                "fallback_keys": ["also-missing", "second"],
                "paths": ["vendor/"],
                "policy": "pull"
            }])),
    );
    f.run_single(1).await;
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(trace.contains("from-second"), "{trace}");
    let missing = trace.find("missing").unwrap();
    let also = trace.find("also-missing").unwrap();
    let second = trace
        .find("Checking cache for second")
        .unwrap_or(usize::MAX);
    assert!(missing < also && also < second, "{trace}");
}

#[tokio::test]
async fn a_wrong_secret_key_is_a_warning_naming_the_signature_error() {
    let s3 = S3Server::start("runner-cache").await.unwrap();
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", &s3_config(&s3, "not-the-secret", false));
    let id = f.gl.enqueue_job(cache_job(
        "deps",
        "pull-push",
        &["mkdir -p vendor && echo x > vendor/x"],
    ));
    f.run_single(1).await;
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(trace.contains("SignatureDoesNotMatch"), "{trace}");
    assert!(s3.object_keys().is_empty());
}
