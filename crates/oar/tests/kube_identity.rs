//! End to end on the real test cluster (`scripts/cluster up`): per-job identity. The real
//! `oar run-single` with a Kubernetes runner whose `[[runners.kubernetes.identity]]` rule
//! binds `deploy-prod` to protected `main` of `acme/platform/*` in environment `production`,
//! proven by a GitLab ID token that FakeGitlab signs and the manager verifies against
//! FakeGitlab's JWKS. What the job sees is checked from inside its build container: the
//! ServiceAccount token's `sub`, and the projected token's audience. Skipped loudly without a
//! cluster, unless `OAR_REQUIRE_CLUSTER=1`.

mod common;

use common::JOB_WAIT;
use common::kube::{PodLog, assert_nothing_left, run_single, setup, write_kube_config};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use oar_testkit::cluster::{ADMIN_USER, TestNamespace, wait_for};
use oar_testkit::{JobSnapshot, JobSpec, JobState};
use std::process::Output;
use std::time::Duration;

const TOKEN_DIR: &str = "/var/run/secrets/oar.test/sts";

/// The rule, a projected token for `sts.amazonaws.com` with the env AWS SDKs read, and the
/// upstream overwrite gate (which the rule's account does not even match).
fn kube_extra() -> String {
    format!(
        r#"    service_account_overwrite_allowed = "^ci-.*$"
    [runners.kubernetes.projected_token]
      audience = "sts.amazonaws.com"
      path = "{TOKEN_DIR}/token"
      expiration_seconds = 3600
      environment = ["AWS_WEB_IDENTITY_TOKEN_FILE={TOKEN_DIR}/token", "AWS_ROLE_ARN=arn:aws:iam::111122223333:role/default"]
    [[runners.kubernetes.identity]]
      service_account = "deploy-prod"
      projects = ["acme/platform/*"]
      refs = ["main"]
      protected_ref = true
      environments = ["production"]
      require_id_token = "OAR_ID_TOKEN"
      environment = ["AWS_ROLE_ARN=arn:aws:iam::111122223333:role/deploy-prod"]
"#
    )
}

/// Prints the `sub` (and `aud`) of the JWT in file `$1`, decoded with coreutils' base64.
const DECODE: &str = r#"claims() { p=$(cut -d. -f2 "$1" | tr '_-' '/+'); case $(( ${#p} % 4 )) in 2) p="$p==";; 3) p="$p=";; esac; printf '%s' "$p" | base64 -d; }"#;

fn deploy_job(project: &str, protected: bool) -> JobSpec {
    JobSpec::new(project)
        .name("deploy")
        .git_ref("main")
        .protected(protected)
        .environment("production")
        .id_token("OAR_ID_TOKEN", "oar")
        .variable("GIT_STRATEGY", "none")
}

/// A script that shows who the job runs as, from inside the build container.
fn whoami() -> Vec<String> {
    vec![
        DECODE.to_owned(),
        "claims /var/run/secrets/kubernetes.io/serviceaccount/token | grep -o '\"sub\":\"[^\"]*\"' | sed 's/^/service account token: /'".to_owned(),
        "claims \"$AWS_WEB_IDENTITY_TOKEN_FILE\" | grep -o '\"aud\":\\[[^]]*\\]' | sed 's/^/projected token: /'".to_owned(),
        "claims \"$AWS_WEB_IDENTITY_TOKEN_FILE\" | grep -o '\"sub\":\"[^\"]*\"' | sed 's/^/projected token: /'".to_owned(),
        "echo \"role: $AWS_ROLE_ARN\"".to_owned(),
    ]
}

async fn create_account(ns: &TestNamespace, name: &str) {
    let accounts = ns.api::<ServiceAccount>();
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    // Before 1.24 a pod of this account also needs the account's token Secret.
    wait_for(&accounts, name, Duration::from_secs(30), |sa| {
        sa.is_some_and(|sa| sa.secrets.as_ref().is_some_and(|s| !s.is_empty()))
    })
    .await
    .unwrap();
}

async fn finished(f: &common::Fixture, id: i64, out: &Output) -> JobSnapshot {
    match f.gl.wait_job_finished(id, JOB_WAIT).await {
        Ok(job) => job,
        Err(e) => panic!(
            "{e}\n--- oar stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn assert_refused(job: &JobSnapshot, reason: &str) {
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Failed, "{trace}");
    let failure = job.failure_reason.clone().unwrap_or_default();
    // GitLab versions that do not list runner_configuration_error get script_failure.
    assert!(
        failure == "runner_configuration_error" || failure == "script_failure",
        "{failure}"
    );
    assert!(
        trace.contains(reason),
        "the job log lacks {reason:?}:\n{trace}"
    );
    assert!(
        !trace.contains("eyJ"),
        "the job log shows a token:\n{trace}"
    );
}

#[tokio::test]
async fn identity_rules_decide_the_service_account_of_job_pods() {
    let Some((cluster, ns, f)) = setup("oar-identity").await else {
        return;
    };
    create_account(&ns, "deploy-prod").await;
    write_kube_config(&f, ns.name(), &kube_extra(), "");
    let sub = |account: &str| {
        format!(
            "service account token: \"sub\":\"system:serviceaccount:{}:{account}\"",
            ns.name()
        )
    };

    // 1. Asking for deploy-prod without matching the rule: refused before any pod exists.
    let unprotected = f.gl.enqueue_job(
        deploy_job("acme/platform/api", false)
            .variable("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE", "deploy-prod")
            .script(["echo never runs"]),
    );
    let other = f.gl.enqueue_job(
        deploy_job("acme/other", true)
            .variable("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE", "deploy-prod")
            .script(["echo never runs"]),
    );
    let out = run_single(&f, &cluster, 2).await;
    let rule = "KUBERNETES_SERVICE_ACCOUNT_OVERWRITE \"deploy-prod\" refused: the job does not \
                match identity rule runners[0].kubernetes.identity[0]";
    assert_refused(
        &finished(&f, unprotected, &out).await,
        &format!("{rule} (protected_ref: ref \"main\" is not protected)"),
    );
    assert_refused(
        &finished(&f, other, &out).await,
        &format!("{rule} (projects: project \"acme/other\" does not match [\"acme/platform/*\"])"),
    );
    let calls = ns.api_calls(None).await.unwrap();
    assert_eq!(calls.count("create", "pods"), 0, "{calls}");
    let runner_calls = ns.api_calls(Some(ADMIN_USER)).await.unwrap();
    assert_eq!(runner_calls.count("create", "secrets"), 0, "{runner_calls}");

    // 2. The protected main job of acme/platform/api in production runs as deploy-prod, and
    //    a job no rule matches as the namespace's default account.
    let pods = PodLog::start(&ns).await;
    let prod =
        f.gl.enqueue_job(deploy_job("acme/platform/api", true).script(whoami()));
    let out = run_single(&f, &cluster, 1).await;
    let job = finished(&f, prod, &out).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(trace.contains(&sub("deploy-prod")), "{trace}");
    assert!(
        trace.contains("projected token: \"aud\":[\"sts.amazonaws.com\"]"),
        "{trace}"
    );
    assert!(
        trace.contains(&format!(
            "projected token: \"sub\":\"system:serviceaccount:{}:deploy-prod\"",
            ns.name()
        )),
        "{trace}"
    );
    assert!(
        trace.contains("role: arn:aws:iam::111122223333:role/deploy-prod"),
        "{trace}"
    );
    assert!(
        !trace.contains("eyJ"),
        "the job log shows a token:\n{trace}"
    );

    let plain = f.gl.enqueue_job(
        JobSpec::new("acme/other")
            .git_ref("main")
            .protected(true)
            .variable("GIT_STRATEGY", "none")
            .script(whoami()),
    );
    let out = run_single(&f, &cluster, 1).await;
    let job = finished(&f, plain, &out).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(trace.contains(&sub("default")), "{trace}");
    assert!(
        trace.contains("role: arn:aws:iam::111122223333:role/default"),
        "{trace}"
    );

    let seen = pods.pods();
    let accounts: Vec<Option<&str>> = seen.iter().map(|(_, sa)| sa.as_deref()).collect();
    assert_eq!(accounts, [Some("deploy-prod"), Some("default")], "{seen:?}");
    // The manager fetched GitLab's keys to verify the tokens.
    assert!(
        f.gl.requests()
            .iter()
            .any(|r| r.path == "/oauth/discovery/keys"),
        "no JWKS fetch"
    );
    assert_nothing_left(&ns).await;
    ns.delete().await.ok();
}
