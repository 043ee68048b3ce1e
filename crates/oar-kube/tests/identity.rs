//! Identity rules, as a table: a config (parsed by oar-config), a job (GitLab's payload
//! fields, its verified ID tokens, its `KUBERNETES_SERVICE_ACCOUNT_OVERWRITE`) in, the pod's
//! ServiceAccount and namespace out, or the refusal's message (with no pod built).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oar_config::KubernetesConfig;
use oar_gitlab::JobResponse;
use oar_job::vars::{Variable, Variables};
use oar_kube::identity::{IdTokenCheck, IdTokens, id_token_variables};
use oar_kube::pod::{PodInput, build_pod};
use serde_json::json;

const CONFIG: &str = r#"
[[runners]]
  name = "k8s"
  url = "https://gitlab.example.com/"
  token = "glrt-t1_abcdefghijkl"
  executor = "kubernetes"
  [runners.kubernetes]
    namespace = "ci"
    image = "alpine:3.20"
    service_account = "ci-default"
    service_account_overwrite_allowed = "^ci-.*$"
    [[runners.kubernetes.identity]]
      service_account = "deploy-prod"
      projects = ["acme/platform/*"]
      refs = ["main", "v*"]
      protected_ref = true
      environments = ["production"]
      namespace = "deploy"
      require_id_token = "OAR_ID_TOKEN"
    [[runners.kubernetes.identity]]
      service_account = "deploy-staging"
      projects = ["acme/platform/*", "acme/tools/**"]
      ref_type = "branch"
    [[runners.kubernetes.identity]]
      service_account = "tagger"
      projects = ["acme/**"]
      ref_type = "tag"
      refs = ["release-{1,2}.*"]
    [[runners.kubernetes.identity]]
      service_account = "deploy-prod"
      projects = ["acme/emergency"]
      protected_ref = true
"#;

const NO_RULES: &str = r#"
[[runners]]
  name = "k8s"
  url = "https://gitlab.example.com/"
  token = "glrt-t1_abcdefghijkl"
  executor = "kubernetes"
  [runners.kubernetes]
    namespace = "ci"
    image = "alpine:3.20"
    service_account = "ci-default"
    service_account_overwrite_allowed = "^ci-.*$"
"#;

fn config(text: &str) -> KubernetesConfig {
    let loaded = oar_config::parse_str(text, Path::new("config.toml")).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    loaded.config.runners[0].kubernetes.clone().unwrap()
}

/// A job of `project` on `git_ref`.
#[derive(Clone)]
struct Job {
    project: &'static str,
    git_ref: &'static str,
    ref_type: &'static str,
    protected: Option<bool>,
    overwrite: Option<&'static str>,
    token: Option<IdTokenCheck>,
}

fn job(project: &'static str, git_ref: &'static str) -> Job {
    Job {
        project,
        git_ref,
        ref_type: "branch",
        protected: None,
        overwrite: None,
        token: None,
    }
}

impl Job {
    fn protected(mut self) -> Self {
        self.protected = Some(true);
        self
    }
    fn unprotected(mut self) -> Self {
        self.protected = Some(false);
        self
    }
    fn tag(mut self) -> Self {
        self.ref_type = "tag";
        self
    }
    fn asks(mut self, account: &'static str) -> Self {
        self.overwrite = Some(account);
        self
    }
    fn token_env(mut self, environment: Option<&str>) -> Self {
        self.token = Some(IdTokenCheck::Verified {
            environment: environment.map(str::to_owned),
        });
        self
    }
    fn token_refused(mut self, reason: &str) -> Self {
        self.token = Some(IdTokenCheck::Refused(reason.to_owned()));
        self
    }
}

/// `Ok("account@namespace")` or `Err(message)`.
fn decide(config: &KubernetesConfig, j: &Job) -> Result<String, String> {
    let built = build(config, j)?;
    let spec = built.pod.spec.unwrap();
    Ok(format!(
        "{}@{}",
        spec.service_account_name.unwrap_or_default(),
        built.namespace
    ))
}

/// The job log's warnings of the pod built for `j`.
fn warnings(config: &KubernetesConfig, j: &Job) -> Vec<String> {
    build(config, j).unwrap().warnings
}

fn build(config: &KubernetesConfig, j: &Job) -> Result<oar_kube::BuiltPod, String> {
    let mut payload = json!({
        "id": 77, "token": "glcbt-secret-job-token",
        "job_info": {"id": 77, "name": "deploy", "project_id": 9, "project_full_path": j.project},
        "git_info": {"ref": j.git_ref, "ref_type": j.ref_type, "sha": "abc"},
        "variables": [],
        "steps": [{"name": "script", "script": ["true"]}],
    });
    if let Some(p) = j.protected {
        payload["git_info"]["protected"] = json!(p);
    }
    if let Some(account) = j.overwrite {
        payload["variables"] = json!([
            {"key": "KUBERNETES_SERVICE_ACCOUNT_OVERWRITE", "value": account, "public": true}
        ]);
    }
    let response = JobResponse::from_json(payload.to_string().as_bytes()).unwrap();
    let mut vars = Variables::new();
    for v in &response.variables {
        vars.push(Variable::from(v));
    }
    let mut tokens = IdTokens::new();
    if let Some(t) = &j.token {
        tokens.insert("OAR_ID_TOKEN".into(), t.clone());
    }
    let flags = BTreeMap::new();
    let patches: BTreeMap<PathBuf, String> = BTreeMap::new();
    build_pod(&PodInput {
        config,
        feature_flags: &flags,
        patch_files: &patches,
        job: &response,
        vars: &vars,
        pod_name: "runner-abcdefghi-project-9-concurrent-0-00000000",
        namespace_default: "ci",
        runner_short_token: "abcdefghi",
        runner_name: "k8s",
        builds_dir: "/builds",
        project_dir: "/builds/acme/x",
        timeout: Duration::from_secs(600),
        default_helper_image: "helper:1",
        id_tokens: &tokens,
    })
    .map_err(|e| e.to_string())
}

const PROD_REFUSED: &str = "KUBERNETES_SERVICE_ACCOUNT_OVERWRITE \"deploy-prod\" refused: the job \
                            does not match identity rule runners[0].kubernetes.identity[0]";

#[test]
fn rule_matching_table() {
    let rules = config(CONFIG);
    let api = || job("acme/platform/api", "main");
    let prod = || api().protected().token_env(Some("production"));
    let cases: Vec<(&str, Job, Result<String, String>)> = vec![
        // Every condition of rule 0 holds: its account and namespace.
        ("all of rule 0", prod(), Ok("deploy-prod@deploy".into())),
        ("refs glob v*", job("acme/platform/api", "v1.2").protected().token_env(Some("production")), Ok("deploy-prod@deploy".into())),
        // One condition of rule 0 fails: first match falls through to rule 1.
        ("no ID token", api().protected(), Ok("deploy-staging@ci".into())),
        ("unprotected", api().unprotected().token_env(Some("production")), Ok("deploy-staging@ci".into())),
        ("protected unknown", api().token_env(Some("production")), Ok("deploy-staging@ci".into())),
        ("other ref", job("acme/platform/api", "feature").protected().token_env(Some("production")), Ok("deploy-staging@ci".into())),
        ("other environment", api().protected().token_env(Some("staging")), Ok("deploy-staging@ci".into())),
        ("no environment", api().protected().token_env(None), Ok("deploy-staging@ci".into())),
        // Globs: `*` stays in one component, `**` spans several, braces and ref_type.
        ("* is one component", job("acme/platform/deep/api", "main").protected().token_env(Some("production")), Ok("ci-default@ci".into())),
        ("** spans components", job("acme/tools/a/b", "dev"), Ok("deploy-staging@ci".into())),
        ("tag rule", job("acme/x", "release-1.4").tag(), Ok("tagger@ci".into())),
        ("tag outside braces", job("acme/x", "release-3.0").tag(), Ok("ci-default@ci".into())),
        ("branch is not a tag", job("acme/x", "release-1.4"), Ok("ci-default@ci".into())),
        ("a tag is not a branch", job("acme/platform/api", "dev").tag(), Ok("ci-default@ci".into())),
        ("no project path", job("", "main").protected().token_env(Some("production")), Ok("ci-default@ci".into())),
        // No rule matches: the runner's service_account.
        ("no match", job("acme2/x", "main").protected(), Ok("ci-default@ci".into())),
        // Overwrite inside a rule: the rule is the gate (the regex ^ci-.*$ is not consulted).
        ("guarded and matching", prod().asks("deploy-prod"), Ok("deploy-prod@deploy".into())),
        ("guarded, second rule for it", job("acme/emergency", "hotfix").protected().asks("deploy-prod"), Ok("deploy-prod@ci".into())),
        ("guarded, unprotected", api().unprotected().token_env(Some("production")).asks("deploy-prod"),
            Err(format!("{PROD_REFUSED} (protected_ref: ref \"main\" is not protected)"))),
        ("guarded, other project", job("acme/other", "main").protected().token_env(Some("production")).asks("deploy-prod"),
            Err(format!("{PROD_REFUSED} (projects: project \"acme/other\" does not match [\"acme/platform/*\"])"))),
        ("guarded, other ref", job("acme/platform/api", "feature/x").protected().token_env(Some("production")).asks("deploy-prod"),
            Err(format!("{PROD_REFUSED} (refs: ref \"feature/x\" does not match [\"main\", \"v*\"])"))),
        ("guarded, no token", api().protected().asks("deploy-prod"),
            Err(format!("{PROD_REFUSED} (require_id_token: the job has no ID token OAR_ID_TOKEN (id_tokens: in its .gitlab-ci.yml))"))),
        ("guarded, token refused", api().protected().token_refused("signature does not verify").asks("deploy-prod"),
            Err(format!("{PROD_REFUSED} (require_id_token: ID token OAR_ID_TOKEN refused: signature does not verify)"))),
        ("guarded, other environment", api().protected().token_env(Some("staging")).asks("deploy-prod"),
            Err(format!("{PROD_REFUSED} (environments: environment \"staging\" does not match [\"production\"])"))),
        ("guarded, no environment", api().protected().token_env(None).asks("deploy-prod"),
            Err(format!("{PROD_REFUSED} (environments: the job has no environment; [\"production\"] wanted)"))),
        ("guarded tag rule, branch", job("acme/x", "release-1.0").asks("tagger"),
            Err("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE \"tagger\" refused: the job does not match identity rule runners[0].kubernetes.identity[2] (ref_type: ref \"release-1.0\" is a branch, not a tag)".into())),
        // Overwrite outside every rule: GitLab Runner's behaviour, even for a job a rule matches.
        ("unguarded allowed", prod().asks("ci-builder"), Ok("ci-builder@ci".into())),
        ("unguarded refused by the regex", prod().asks("cluster-admin"),
            Err("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE \"cluster-admin\" does not match service_account_overwrite_allowed \"^ci-.*$\"".into())),
    ];
    let mut failures = Vec::new();
    for (name, j, expected) in &cases {
        let actual = decide(&rules, j);
        if &actual != expected {
            failures.push(format!(
                "{name}:\n  expected {expected:?}\n  actual   {actual:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn without_rules_the_overwrite_works_as_in_gitlab_runner() {
    let plain = config(NO_RULES);
    let api = || job("acme/platform/api", "main").protected();
    assert_eq!(decide(&plain, &api()), Ok("ci-default@ci".into()));
    assert_eq!(decide(&plain, &api().asks("ci-x")), Ok("ci-x@ci".into()));
    assert_eq!(
        decide(&plain, &api().asks("deploy-prod")),
        Err(
            "KUBERNETES_SERVICE_ACCOUNT_OVERWRITE \"deploy-prod\" does not match \
             service_account_overwrite_allowed \"^ci-.*$\""
                .into()
        )
    );
    assert!(id_token_variables(&plain).is_empty());
    assert_eq!(id_token_variables(&config(CONFIG)), vec!["OAR_ID_TOKEN"]);
}

#[test]
fn a_guarded_account_without_the_upstream_gate_is_still_decided_by_its_rule() {
    // No service_account_overwrite_allowed: GitLab Runner would ignore the overwrite; a
    // guarded account is still refused loudly rather than silently run as the default.
    let text = CONFIG.replace("    service_account_overwrite_allowed = \"^ci-.*$\"\n", "");
    let rules = config(&text);
    let j = job("acme/other", "main").protected().asks("deploy-prod");
    let err = decide(&rules, &j).unwrap_err();
    assert!(err.contains("projects: project \"acme/other\""), "{err}");
    let ok = job("acme/emergency", "main")
        .protected()
        .asks("deploy-prod");
    assert_eq!(decide(&rules, &ok), Ok("deploy-prod@ci".into()));
}

#[test]
fn refusals_never_echo_the_job_token() {
    let rules = config(CONFIG);
    let j = job("acme/other", "main").asks("deploy-prod");
    let err = decide(&rules, &j).unwrap_err();
    assert!(!err.contains("glcbt-secret-job-token"), "{err}");
}

#[test]
fn a_refused_id_token_is_explained_in_the_job_log() {
    let rules = config(CONFIG);
    let j = job("acme/platform/api", "main")
        .protected()
        .token_refused("it has expired");
    // Rule 0 does not apply; rule 1 (no token needed) does.
    assert_eq!(decide(&rules, &j), Ok("deploy-staging@ci".into()));
    let warnings = warnings(&rules, &j);
    assert_eq!(
        warnings,
        [
            "ID token OAR_ID_TOKEN refused (it has expired): identity rules that require it do not apply"
        ]
    );
}
