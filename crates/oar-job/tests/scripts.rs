//! Snapshots of the generated stage scripts for one representative job.

use oar_gitlab::JobResponse;
use oar_job::{JobContext, JobSettings, scripts};

fn context() -> JobContext {
    context_with(|_| {})
}

fn context_with(adjust: impl FnOnce(&mut JobSettings)) -> JobContext {
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
    let mut settings = settings;
    adjust(&mut settings);
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

#[test]
fn tls_files_become_file_variables_and_git_ssl_settings() {
    let ctx = context_with(|s| {
        s.tls_ca_pem = Some("-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n".into());
        s.tls_cert_pem =
            Some("-----BEGIN CERTIFICATE-----\nCLIENT\n-----END CERTIFICATE-----\n".into());
        s.tls_key_pem = Some(
            "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n"
                .to_string()
                .into(),
        );
    });
    let tmp = "/builds/abcdefghi/0/acme/widget.tmp";
    for key in [
        "CI_SERVER_TLS_CA_FILE",
        "CI_SERVER_TLS_CERT_FILE",
        "CI_SERVER_TLS_KEY_FILE",
    ] {
        let v = ctx.vars.get(key).expect(key);
        assert!(v.file && v.raw, "{key}");
    }
    assert!(ctx.vars.get("CI_SERVER_TLS_CA_FILE").unwrap().public);
    assert!(!ctx.vars.get("CI_SERVER_TLS_KEY_FILE").unwrap().public);
    let get_sources = scripts::get_sources(&ctx).script;
    let ext = format!("{tmp}/.gitlab-runner.ext.conf");
    for setting in ["sslCAInfo", "sslCert", "sslKey"] {
        let line = format!("git config -f {ext} http.https://gitlab.example.com.{setting} ");
        assert!(get_sources.contains(&line), "{setting}");
    }
    // Never into the repository's own config.
    assert!(!get_sources.contains("--file .git/config http."));
    let cleanup = scripts::cleanup(&ctx).script;
    for key in [
        "CI_SERVER_TLS_CA_FILE",
        "CI_SERVER_TLS_CERT_FILE",
        "CI_SERVER_TLS_KEY_FILE",
    ] {
        let rm = cleanup
            .lines()
            .find_map(|l| l.split_once("; then rm -f ").map(|(_, rm)| rm))
            .unwrap_or("");
        assert!(rm.contains(&format!(" {tmp}/{key}")), "{key}: {rm}");
    }
    insta::assert_snapshot!(format!("{get_sources}\n----- cleanup -----\n{cleanup}"));
}

#[test]
fn a_ca_alone_configures_only_ssl_ca_info_and_a_lone_cert_is_ignored() {
    let ctx = context_with(|s| {
        s.tls_ca_pem = Some("PEM".into());
        s.tls_cert_pem = Some("CERT without key".into());
    });
    assert!(ctx.vars.get("CI_SERVER_TLS_CERT_FILE").is_none());
    let s = scripts::get_sources(&ctx).script;
    assert!(s.contains("http.https://gitlab.example.com.sslCAInfo"));
    assert!(!s.contains("sslCert") && !s.contains("sslKey"));
    // Without TLS files, no ssl settings at all.
    assert!(
        !scripts::get_sources(&context())
            .script
            .contains("sslCAInfo")
    );
}
