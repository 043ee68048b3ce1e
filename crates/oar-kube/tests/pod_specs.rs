//! Job pods as YAML snapshots: `[runners.kubernetes]` (parsed by oar-config) and a job
//! (GitLab's JSON) in, the pod, its namespace, registry Secret, pull policies and warnings out.
//! Errors are snapshotted as their message. The wrapper script shows as `<WRAPPER>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use oar_config::KubernetesConfig;
use oar_gitlab::JobResponse;
use oar_job::vars::{Variable, Variables};
use oar_kube::identity::IdTokens;
use oar_kube::pod::{BuiltPod, PodInput, build_pod};
use oar_kube::{PodError, wrapper};
use serde_json::{Value, json};

const RUNNER: &str = r#"
[[runners]]
  name = "k8s-runner"
  url = "https://gitlab.example.com/"
  token = "glrt-t1_abcdefghijkl"
  executor = "kubernetes"
"#;

struct Case {
    config: KubernetesConfig,
    feature_flags: BTreeMap<String, bool>,
    patch_files: BTreeMap<PathBuf, String>,
    job: JobResponse,
    vars: Variables,
    builds_dir: String,
    id_tokens: IdTokens,
}

/// The runner config: `tail` holds `[runners.kubernetes]` (and `[runners.feature_flags]`).
fn config(tail: &str) -> (KubernetesConfig, BTreeMap<String, bool>) {
    let text = format!("{RUNNER}{tail}");
    let loaded = oar_config::parse_str(&text, Path::new("config.toml"))
        .unwrap_or_else(|e| panic!("config: {e}"));
    assert!(
        loaded.warnings.is_empty(),
        "config warnings: {:?}",
        loaded.warnings
    );
    let runner = loaded.config.runners.into_iter().next().unwrap();
    (
        runner.kubernetes.expect("kubernetes executor"),
        runner.feature_flags,
    )
}

/// A job; `extra` is merged into the base payload (its `variables` are appended).
fn job(extra: Value) -> JobResponse {
    let mut base = json!({
        "id": 1234,
        "token": "glcbt-job-token-secret",
        "job_info": {
            "id": 1234, "name": "rspec", "stage": "test", "project_id": 42,
            "project_name": "Widget", "pipeline_id": 7, "project_full_path": "acme/widget"
        },
        "git_info": {
            "repo_url": "https://gitlab-ci-token:glcbt-job-token-secret@gitlab.example.com/acme/widget.git",
            "ref": "main",
            "sha": "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c",
            "before_sha": "0000000000000000000000000000000000000000",
            "ref_type": "branch"
        },
        "runner_info": {"timeout": 3600},
        "variables": [
            {"key": "CI_PROJECT_NAMESPACE", "value": "acme", "public": true},
            {"key": "CI_PROJECT_NAMESPACE_ID", "value": "17", "public": true},
            {"key": "CI_PROJECT_ROOT_NAMESPACE", "value": "acme", "public": true},
            {"key": "CI_PROJECT_PATH", "value": "acme/widget", "public": true},
            {"key": "CI_JOB_URL", "value": "https://gitlab.example.com/acme/widget/-/jobs/1234", "public": true},
            {"key": "CI_CONCURRENT_ID", "value": "3", "public": true},
            {"key": "RAILS_ENV", "value": "test", "public": true},
            {"key": "DEPLOY_PASSWORD", "value": "hunter2-secret", "public": false, "masked": true}
        ],
        "steps": [{"name": "script", "script": ["bundle exec rspec"], "timeout": 3600, "when": "on_success"}],
        "image": {"name": "ruby:3.3"},
        "services": [],
        "credentials": []
    });
    let extra_vars = extra.get("variables").cloned();
    if let (Value::Object(base_map), Value::Object(extra_map)) = (&mut base, extra) {
        for (k, v) in extra_map {
            if k != "variables" {
                base_map.insert(k, v);
            }
        }
    }
    if let Some(Value::Array(vars)) = extra_vars {
        base["variables"].as_array_mut().unwrap().extend(vars);
    }
    serde_json::from_value(base).expect("job JSON")
}

/// A public job variable.
fn var(key: &str, value: &str) -> Value {
    json!({"key": key, "value": value, "public": true})
}

impl Case {
    fn new(tail: &str, job: JobResponse) -> Case {
        let (config, feature_flags) = config(tail);
        let mut vars = Variables::new();
        for v in &job.variables {
            vars.push(Variable::from(v));
        }
        Case {
            config,
            feature_flags,
            patch_files: BTreeMap::new(),
            job,
            vars,
            builds_dir: "/builds".into(),
            id_tokens: IdTokens::new(),
        }
    }

    fn build(&self) -> Result<BuiltPod, PodError> {
        build_pod(&PodInput {
            config: &self.config,
            feature_flags: &self.feature_flags,
            patch_files: &self.patch_files,
            job: &self.job,
            vars: &self.vars,
            pod_name: "runner-abcdefghi-project-42-concurrent-0-x7k2m9qa",
            namespace_default: "oar",
            runner_short_token: "abcdefghi",
            runner_name: "k8s-runner",
            builds_dir: &self.builds_dir,
            project_dir: "/builds/acme/widget",
            timeout: Duration::from_secs(3600),
            default_helper_image: "registry.example.com/oar/oar-helper:0.1.0",
            id_tokens: &self.id_tokens,
        })
    }

    fn view(&self) -> Value {
        match self.build() {
            Ok(built) => view(&built),
            Err(e) => panic!("build_pod: {e}"),
        }
    }

    fn error(&self) -> String {
        match self.build() {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }
}

/// Replaces the wrapper script by a placeholder, everywhere.
fn hide_wrapper(value: &mut Value) {
    match value {
        Value::String(s) if s == wrapper::WRAPPER => *s = "<WRAPPER>".into(),
        Value::Array(items) => items.iter_mut().for_each(hide_wrapper),
        Value::Object(map) => map.values_mut().for_each(hide_wrapper),
        _ => {}
    }
}

fn secret_view(secret: &Secret) -> Value {
    let mut value = serde_json::to_value(secret).unwrap();
    if let Some(data) = &secret.data {
        let decoded: BTreeMap<&String, Value> = data
            .iter()
            .map(|(k, v)| {
                let text = String::from_utf8(v.0.clone()).unwrap();
                let parsed = serde_json::from_str(&text).unwrap_or(Value::String(text));
                (k, parsed)
            })
            .collect();
        value["data"] = json!({ "decoded": decoded });
    }
    value
}

fn view(built: &BuiltPod) -> Value {
    let mut pod = serde_json::to_value(&built.pod).unwrap();
    hide_wrapper(&mut pod);
    assert_eq!(
        pod["metadata"]["namespace"],
        Value::String(built.namespace.clone())
    );
    json!({
        "warnings": built.warnings,
        "pull_policies": built.pull_policies,
        "registry_secret": built.registry_secret.as_ref().map(secret_view),
        "pod": pod,
    })
}

/// Only the parts of a view at these JSON pointers.
fn pick(view: &Value, pointers: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for p in pointers {
        out.insert(
            (*p).to_owned(),
            view.pointer(p).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(out)
}

fn containers(view: &Value) -> Vec<Value> {
    view.pointer("/pod/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Pods

#[test]
fn minimal() {
    let case = Case::new("[runners.kubernetes]\n", job(json!({})));
    insta::assert_yaml_snapshot!("minimal", case.view());
}

#[test]
fn default_image_expanded_helper_image() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  image = "registry.example.com/ci/debian:bookworm"
  helper_image = "registry.example.com/oar/oar-helper:$HELPER_TAG"
"#,
        job(json!({"image": null, "variables": [var("HELPER_TAG", "0.2.0")]})),
    );
    let view = case.view();
    let images: Vec<Value> = containers(&view)
        .iter()
        .map(|c| json!({"name": c["name"], "image": c["image"]}))
        .collect();
    insta::assert_yaml_snapshot!("default_image_expanded_helper_image", images);
}

#[test]
fn full_featured_config() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  namespace = "ci-jobs"
  service_account = "ci-runner-jobs"
  automount_service_account_token = false
  image_pull_secrets = ["regcred"]
  scheduler_name = "ci-scheduler"
  priority_class_name = "ci-low"
  runtime_class_name = "gvisor"
  pod_termination_grace_period_seconds = 10
  dns_policy = "none"
  logs_base_dir = "/var/tmp/"
  scripts_base_dir = "/var/tmp"
  cpu_request = "500m"
  cpu_limit = "2"
  memory_request = "512Mi"
  memory_limit = "2Gi"
  ephemeral_storage_request = "1Gi"
  helper_cpu_request = "100m"
  helper_memory_limit = "256Mi"
  pod_cpu_limit = "3"
  pod_memory_request = "1Gi"
  [runners.kubernetes.node_selector]
    "kubernetes.io/arch" = "amd64"
    "node-pool" = "ci"
  [runners.kubernetes.node_tolerations]
    "node-role.kubernetes.io/ci=true" = "NoSchedule"
    "dedicated" = "NoExecute"
    "" = ""
  [runners.kubernetes.pod_labels]
    team = "platform"
    project = "$CI_PROJECT_PATH"
    "job.runner.gitlab.com/pod" = "hijack"
  [runners.kubernetes.pod_annotations]
    "example.com/owner" = "$CI_PROJECT_PATH"
    "job.runner.gitlab.com/name" = "renamed"
  [runners.kubernetes.pod_security_context]
    run_as_non_root = true
    run_as_user = 1000
    run_as_group = 1000
    fs_group = 1000
    supplemental_groups = [2000]
    selinux_type = "container_t"
    seccomp_profile = { type = "RuntimeDefault" }
  [runners.kubernetes.affinity.node_affinity.required_during_scheduling_ignored_during_execution]
    [[runners.kubernetes.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms]]
      [[runners.kubernetes.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms.match_expressions]]
        key = "node-pool"
        operator = "In"
        values = ["ci", "ci-spot"]
  [[runners.kubernetes.affinity.pod_anti_affinity.preferred_during_scheduling_ignored_during_execution]]
    weight = 50
    [runners.kubernetes.affinity.pod_anti_affinity.preferred_during_scheduling_ignored_during_execution.pod_affinity_term]
      topology_key = "kubernetes.io/hostname"
      [runners.kubernetes.affinity.pod_anti_affinity.preferred_during_scheduling_ignored_during_execution.pod_affinity_term.label_selector]
        match_labels = { "app.kubernetes.io/managed-by" = "oar" }
  [runners.kubernetes.dns_config]
    nameservers = ["10.0.0.10"]
    searches = ["ci.svc.cluster.local"]
    [[runners.kubernetes.dns_config.options]]
      name = "ndots"
      value = "2"
    [[runners.kubernetes.dns_config.options]]
      name = "edns0"
  [[runners.kubernetes.host_aliases]]
    ip = "10.1.2.3"
    hostnames = ["registry.local", "cache.local"]
  [runners.kubernetes.container_lifecycle.pre_stop.exec]
    command = ["sh", "-c", "sleep 1"]
  [runners.kubernetes.container_lifecycle.post_start.http_get]
    port = 8080
    path = "/ready"
    scheme = "HTTP"
"#,
        job(json!({})),
    );
    insta::assert_yaml_snapshot!("full_featured_config", case.view());
}

#[test]
fn services_with_aliases() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  service_cpu_request = "100m"
  service_memory_limit = "512Mi"
  [[runners.kubernetes.services]]
    name = "postgres:16"
    alias = "db,postgres"
    environment = ["POSTGRES_PASSWORD=ci", "POSTGRES_DB=${CI_PROJECT_NAMESPACE}_test"]
"#,
        job(json!({
            "services": [
                {"name": "redis:7"},
                {"name": "registry.example.com:5000/group/mysql:8.4", "alias": "mysql-db mysql",
                 "entrypoint": ["docker-entrypoint.sh"], "command": ["mysqld", "--skip-log-bin"],
                 "variables": [
                    {"key": "MYSQL_ROOT_PASSWORD", "value": "pa$$word", "public": true},
                    {"key": "MYSQL_DATABASE", "value": "$RAILS_ENV", "public": true}
                 ]},
                {"name": "docker:27-dind", "alias": "helper,docker"},
                {"name": "minio/minio:latest", "alias": "s3.local", "command": ["server", "/data"]}
            ]
        })),
    );
    insta::assert_yaml_snapshot!("services_with_aliases", case.view());
}

#[test]
fn service_alias_invalid() {
    let case = Case::new(
        "[runners.kubernetes]\n",
        job(json!({"services": [{"name": "postgres:16", "alias": "my_db"}]})),
    );
    insta::assert_snapshot!("service_alias_invalid", case.error());
}

#[test]
fn user_volumes_of_each_kind() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  [[runners.kubernetes.volumes.host_path]]
    name = "docker-sock"
    mount_path = "/var/run/docker.sock"
    read_only = true
  [[runners.kubernetes.volumes.host_path]]
    name = "host-cache"
    mount_path = "/cache"
    host_path = "/srv/ci-cache"
    mount_propagation = "HostToContainer"
  [[runners.kubernetes.volumes.secret]]
    name = "deploy-keys"
    mount_path = "/keys"
    read_only = true
    [runners.kubernetes.volumes.secret.items]
      "id_ed25519" = "deploy_key"
  [[runners.kubernetes.volumes.pvc]]
    name = "build-pvc-$CI_CONCURRENT_ID"
    mount_path = "/builds"
  [[runners.kubernetes.volumes.pvc]]
    name = "build-pvc-$CI_CONCURRENT_ID"
    mount_path = "/old-builds"
    sub_path = "$CI_PROJECT_NAMESPACE"
  [[runners.kubernetes.volumes.config_map]]
    name = "ca-bundle"
    mount_path = "/etc/ssl/custom"
    [runners.kubernetes.volumes.config_map.items]
      "ca.crt" = "ca.crt"
  [[runners.kubernetes.volumes.empty_dir]]
    name = "scratch"
    mount_path = "/scratch"
    medium = "Memory"
    size_limit = "1Gi"
  [[runners.kubernetes.volumes.csi]]
    name = "secrets-store"
    mount_path = "/mnt/secrets"
    driver = "secrets-store.csi.k8s.io"
    read_only = true
    [runners.kubernetes.volumes.csi.volume_attributes]
      secretProviderClass = "ci-secrets"
  [[runners.kubernetes.volumes.nfs]]
    name = "artifacts"
    mount_path = "/artifacts"
    server = "nfs.example.com"
    path = "/exports/ci"
"#,
        job(json!({"services": [{"name": "redis:7"}]})),
    );
    let view = case.view();
    insta::assert_yaml_snapshot!(
        "user_volumes_of_each_kind",
        pick(
            &view,
            &[
                "/pod/spec/volumes",
                "/pod/spec/containers/0/volumeMounts",
                "/pod/spec/containers/1/volumeMounts",
                "/pod/spec/containers/2/volumeMounts",
            ]
        )
    );
}

#[test]
fn reserved_volume_name() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  [[runners.kubernetes.volumes.empty_dir]]
    name = "logs"
    mount_path = "/logs"
"#,
        job(json!({})),
    );
    insta::assert_snapshot!("reserved_volume_name", case.error());
}

#[test]
fn builds_dir_overlapping_oar_dirs() {
    let mut case = Case::new("[runners.kubernetes]\n", job(json!({})));
    case.builds_dir = "/oar".into();
    insta::assert_snapshot!("builds_dir_overlapping_oar_dirs", case.error());
}

#[test]
fn security_contexts_and_capabilities() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  privileged = true
  allow_privilege_escalation = false
  cap_add = ["SYS_PTRACE", "NET_RAW"]
  cap_drop = ["MKNOD", "SYS_PTRACE"]
  [runners.kubernetes.build_container_security_context]
    run_as_user = 1000
    run_as_group = 1000
    read_only_root_filesystem = false
    proc_mount = "unmasked"
    seccomp_profile = { type = "Localhost", localhost_profile = "profiles/ci.json" }
    [runners.kubernetes.build_container_security_context.capabilities]
      add = ["NET_ADMIN"]
  [runners.kubernetes.helper_container_security_context]
    privileged = false
    run_as_non_root = true
    run_as_user = 65532
    [runners.kubernetes.helper_container_security_context.capabilities]
      drop = ["ALL"]
      add = []
  [runners.kubernetes.service_container_security_context]
    selinux_type = "spc_t"
    app_armor_profile = { type = "Unconfined" }
"#,
        job(json!({"services": [{"name": "docker:27-dind"}]})),
    );
    let view = case.view();
    insta::assert_yaml_snapshot!(
        "security_contexts_and_capabilities",
        pick(
            &view,
            &[
                "/pod/spec/containers/0/securityContext",
                "/pod/spec/containers/1/securityContext",
                "/pod/spec/containers/2/securityContext",
                "/pod/spec/securityContext",
            ]
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Images and pull policies

#[test]
fn pull_policies_allowed() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  pull_policy = ["if-not-present", "always"]
  allowed_pull_policies = ["always", "if-not-present"]
"#,
        job(json!({
            "image": {"name": "ruby:3.3", "pull_policy": ["always"]},
            "services": [
                {"name": "redis:7"},
                {"name": "postgres:16", "pull_policy": ["never", "if-not-present"]}
            ]
        })),
    );
    let view = case.view();
    let policies: Vec<Value> = containers(&view)
        .iter()
        .map(|c| json!({"name": c["name"], "imagePullPolicy": c["imagePullPolicy"]}))
        .collect();
    insta::assert_yaml_snapshot!(
        "pull_policies_allowed",
        json!({"pull_policies": view["pull_policies"], "containers": policies})
    );
}

#[test]
fn pull_policy_refused_from_job() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  allowed_pull_policies = ["always", "never"]
"#,
        job(json!({"image": {"name": "ruby:3.3", "pull_policy": ["if-not-present"]}})),
    );
    insta::assert_snapshot!("pull_policy_refused_from_job", case.error());
}

#[test]
fn pull_policy_refused_by_default() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  allowed_pull_policies = ["always"]
"#,
        job(json!({})),
    );
    insta::assert_snapshot!("pull_policy_refused_by_default", case.error());
}

#[test]
fn pull_policy_unknown() {
    let case = Case::new(
        "[runners.kubernetes]\n",
        job(json!({"services": [{"name": "redis:7", "pull_policy": ["sometimes"]}]})),
    );
    insta::assert_snapshot!("pull_policy_unknown", case.error());
}

#[test]
fn allowed_images_and_services_matched() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  image = "debian:bookworm"
  allowed_images = ["registry.example.com/**", "ruby:3.*"]
  allowed_services = ["{postgres,redis}:*"]
"#,
        job(json!({
            "image": {"name": "registry.example.com/ci/ruby/ruby:3.3"},
            "services": [{"name": "postgres:16"}, {"name": "redis:7"}]
        })),
    );
    let view = case.view();
    let images: Vec<Value> = containers(&view)
        .iter()
        .map(|c| json!({"name": c["name"], "image": c["image"]}))
        .collect();
    insta::assert_yaml_snapshot!("allowed_images_and_services_matched", images);
}

#[test]
fn allowed_images_refused() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  allowed_images = ["registry.example.com/**", "debian:*"]
"#,
        job(json!({"image": {"name": "ruby:3.3"}})),
    );
    insta::assert_snapshot!("allowed_images_refused", case.error());
}

#[test]
fn allowed_services_refused() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  allowed_services = ["postgres:*"]
"#,
        job(json!({"services": [{"name": "postgres:16"}, {"name": "mysql:8"}]})),
    );
    insta::assert_snapshot!("allowed_services_refused", case.error());
}

#[test]
fn no_image() {
    let case = Case::new("[runners.kubernetes]\n", job(json!({"image": null})));
    insta::assert_snapshot!("no_image", case.error());
}

// ---------------------------------------------------------------------------------------------
// Overwrites

#[test]
fn service_account_overwrite_allowed() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  service_account = "ci-default"
  service_account_overwrite_allowed = "^ci-.*$"
"#,
        job(json!({"variables": [var("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE", "ci-deployer")]})),
    );
    insta::assert_yaml_snapshot!(
        "service_account_overwrite_allowed",
        pick(&case.view(), &["/pod/spec/serviceAccountName", "/warnings"])
    );
}

#[test]
fn service_account_overwrite_refused() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  service_account = "ci-default"
  service_account_overwrite_allowed = "^ci-.*$"
"#,
        job(json!({"variables": [var("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE", "admin")]})),
    );
    let error = case.error();
    assert_eq!(
        error,
        r#"KUBERNETES_SERVICE_ACCOUNT_OVERWRITE "admin" does not match service_account_overwrite_allowed "^ci-.*$""#
    );
    insta::assert_snapshot!("service_account_overwrite_refused", error);
}

#[test]
fn overwrites_without_gates_are_ignored() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  namespace = "ci"
  service_account = "ci-default"
  cpu_limit = "1"
  [runners.kubernetes.pod_labels]
    team = "platform"
"#,
        job(json!({"variables": [
            var("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE", "admin"),
            var("KUBERNETES_NAMESPACE_OVERWRITE", "kube-system"),
            var("KUBERNETES_POD_LABELS_TEAM", "team=hackers"),
            var("KUBERNETES_CPU_LIMIT", "64"),
            var("KUBERNETES_BEARER_TOKEN", "stolen-token")
        ]})),
    );
    insta::assert_yaml_snapshot!(
        "overwrites_without_gates_are_ignored",
        pick(
            &case.view(),
            &[
                "/pod/metadata/namespace",
                "/pod/metadata/labels/team",
                "/pod/spec/serviceAccountName",
                "/pod/spec/containers/0/resources",
                "/warnings"
            ]
        )
    );
}

#[test]
fn namespace_overwrite_is_unanchored() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  namespace = "ci"
  namespace_overwrite_allowed = "ci-.*"
"#,
        job(json!({"variables": [var("KUBERNETES_NAMESPACE_OVERWRITE", "team-a-ci-1")]})),
    );
    let built = case.build().unwrap();
    assert_eq!(built.namespace, "team-a-ci-1");
    insta::assert_yaml_snapshot!(
        "namespace_overwrite_is_unanchored",
        pick(&view(&built), &["/pod/metadata/namespace", "/warnings"])
    );
}

#[test]
fn namespace_overwrite_invalid_name() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  namespace_overwrite_allowed = ".*"
"#,
        job(json!({"variables": [var("KUBERNETES_NAMESPACE_OVERWRITE", "Team_A")]})),
    );
    insta::assert_snapshot!("namespace_overwrite_invalid_name", case.error());
}

#[test]
fn map_overwrites_allowed() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  pod_labels_overwrite_allowed = "^(team|cost-center)=.*$"
  pod_annotations_overwrite_allowed = ".*"
  node_selector_overwrite_allowed = "kubernetes.io/arch=.*"
  node_tolerations_overwrite_allowed = ".*"
  [runners.kubernetes.pod_labels]
    team = "platform"
  [runners.kubernetes.node_selector]
    "kubernetes.io/arch" = "amd64"
    "node-pool" = "ci"
  [runners.kubernetes.node_tolerations]
    "dedicated=ci" = "NoSchedule"
"#,
        job(json!({"variables": [
            var("KUBERNETES_POD_LABELS_TEAM", "team=payments"),
            var("KUBERNETES_POD_LABELS_2", "cost-center=CC 4711/b"),
            var("KUBERNETES_POD_ANNOTATIONS_1", "example.com/ticket=OPS-$CI_CONCURRENT_ID"),
            var("KUBERNETES_POD_ANNOTATIONS_OWNER", "job.runner.gitlab.com/name=overridden"),
            var("KUBERNETES_NODE_SELECTOR_ARCH", "kubernetes.io/arch=arm64"),
            var("KUBERNETES_NODE_TOLERATIONS_GPU", "nvidia.com/gpu:NoSchedule"),
            var("KUBERNETES_NODE_TOLERATIONS_SPOT", "spot=true:PreferNoSchedule"),
            var("KUBERNETES_NODE_TOLERATIONS_EMPTY", "empty.value=:NoExecute")
        ]})),
    );
    insta::assert_yaml_snapshot!(
        "map_overwrites_allowed",
        pick(
            &case.view(),
            &[
                "/pod/metadata/labels",
                "/pod/metadata/annotations",
                "/pod/spec/nodeSelector",
                "/pod/spec/tolerations",
                "/warnings"
            ]
        )
    );
}

#[test]
fn protected_label_overwrite_is_dropped() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  pod_labels_overwrite_allowed = ".*"
"#,
        job(json!({"variables": [
            var("KUBERNETES_POD_LABELS_1", "oar.dev/runner=someone-else"),
            var("KUBERNETES_POD_LABELS_2", "manager.runner.gitlab.com/name=x")
        ]})),
    );
    insta::assert_yaml_snapshot!(
        "protected_label_overwrite_is_dropped",
        pick(&case.view(), &["/pod/metadata/labels", "/warnings"])
    );
}

#[test]
fn map_overwrite_refused() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  node_selector_overwrite_allowed = "kubernetes.io/arch=.*"
"#,
        job(json!({"variables": [var("KUBERNETES_NODE_SELECTOR_OS", "kubernetes.io/os=windows")]})),
    );
    insta::assert_snapshot!("map_overwrite_refused", case.error());
}

#[test]
fn map_overwrite_malformed() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  pod_annotations_overwrite_allowed = ".*"
"#,
        job(json!({"variables": [var("KUBERNETES_POD_ANNOTATIONS_1", "no-equals-sign")]})),
    );
    insta::assert_snapshot!("map_overwrite_malformed", case.error());
}

#[test]
fn resource_overwrites_within_limits() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  cpu_request = "500m"
  cpu_request_overwrite_max_allowed = "2"
  memory_limit = "1Gi"
  memory_limit_overwrite_max_allowed = "4096Mi"
  ephemeral_storage_limit_overwrite_max_allowed = "10Gi"
  helper_memory_request = "64Mi"
  helper_memory_request_overwrite_max_allowed = "256Mi"
  service_cpu_limit = "500m"
  service_cpu_limit_overwrite_max_allowed = "1"
  service_memory_limit_overwrite_max_allowed = "1Gi"
  pod_memory_limit_overwrite_max_allowed = "8Gi"
"#,
        job(json!({
            "variables": [
                var("KUBERNETES_CPU_REQUEST", "1500m"),
                var("KUBERNETES_MEMORY_LIMIT", "4Gi"),
                var("KUBERNETES_EPHEMERAL_STORAGE_LIMIT", "10Gi"),
                var("KUBERNETES_HELPER_MEMORY_REQUEST", "0.25Gi"),
                var("KUBERNETES_SERVICE_CPU_LIMIT", "750m"),
                var("KUBERNETES_POD_MEMORY_LIMIT", "6Gi")
            ],
            "services": [
                {"name": "redis:7"},
                {"name": "postgres:16", "variables": [
                    {"key": "KUBERNETES_SERVICE_CPU_LIMIT", "value": "1", "public": true},
                    {"key": "KUBERNETES_SERVICE_MEMORY_LIMIT", "value": "768Mi", "public": true}
                ]}
            ]
        })),
    );
    let view = case.view();
    let resources: Vec<Value> = containers(&view)
        .iter()
        .map(|c| json!({"name": c["name"], "resources": c["resources"]}))
        .collect();
    insta::assert_yaml_snapshot!(
        "resource_overwrites_within_limits",
        json!({
            "containers": resources,
            "pod": view.pointer("/pod/spec/resources"),
            "warnings": view["warnings"]
        })
    );
}

#[test]
fn resource_overwrite_too_high() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  memory_limit = "1Gi"
  memory_limit_overwrite_max_allowed = "2Gi"
"#,
        job(json!({"variables": [var("KUBERNETES_MEMORY_LIMIT", "5000Mi")]})),
    );
    insta::assert_snapshot!("resource_overwrite_too_high", case.error());
}

#[test]
fn resource_overwrite_too_high_millicores() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  helper_cpu_limit_overwrite_max_allowed = "500m"
"#,
        job(json!({"variables": [var("KUBERNETES_HELPER_CPU_LIMIT", "0.6")]})),
    );
    insta::assert_snapshot!("resource_overwrite_too_high_millicores", case.error());
}

#[test]
fn resource_overwrite_not_a_quantity() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  cpu_request_overwrite_max_allowed = "2"
"#,
        job(json!({"variables": [var("KUBERNETES_CPU_REQUEST", "two cores")]})),
    );
    insta::assert_snapshot!("resource_overwrite_not_a_quantity", case.error());
}

#[test]
fn per_service_overwrite_too_high() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  service_memory_limit_overwrite_max_allowed = "1Gi"
"#,
        job(json!({"services": [{"name": "postgres:16", "variables": [
            {"key": "KUBERNETES_SERVICE_MEMORY_LIMIT", "value": "2Gi", "public": true}
        ]}]})),
    );
    insta::assert_snapshot!("per_service_overwrite_too_high", case.error());
}

#[test]
fn namespace_per_job_refused() {
    let case = Case::new(
        "[runners.kubernetes]\n  namespace_per_job = true\n",
        job(json!({})),
    );
    insta::assert_snapshot!("namespace_per_job_refused", case.error());
}

#[test]
fn bearer_token_overwrite_refused() {
    let case = Case::new(
        "[runners.kubernetes]\n  bearer_token_overwrite_allowed = true\n",
        job(json!({"variables": [var("KUBERNETES_BEARER_TOKEN", "job-token")]})),
    );
    insta::assert_snapshot!("bearer_token_overwrite_refused", case.error());
}

// ---------------------------------------------------------------------------------------------
// pod_spec patches

const PATCHES: &str = r#"
[runners.feature_flags]
  FF_USE_ADVANCED_POD_SPEC_CONFIGURATION = true
[runners.kubernetes]
  [[runners.kubernetes.pod_spec]]
    name = "strategic: a sidecar, an env var and a mount on build"
    patch = '''
containers:
  - name: build
    env:
      - name: EXTRA
        value: "1"
    volumeMounts:
      - name: cache
        mountPath: /cache
  - name: sidecar
    image: busybox:1.36
    command: ["sleep", "infinity"]
volumes:
  - name: cache
    emptyDir:
      medium: Memory
'''
  [[runners.kubernetes.pod_spec]]
    name = "merge: hostname and no dns policy"
    patch_type = "merge"
    patch = '{"hostname": "ci", "dnsPolicy": null}'
  [[runners.kubernetes.pod_spec]]
    name = "json: replace the helper's image, add a toleration"
    patch_type = "json"
    patch_path = "/etc/oar/patches/helper.json"
"#;

#[test]
fn pod_spec_patches_of_each_type() {
    let mut case = Case::new(PATCHES, job(json!({})));
    case.patch_files.insert(
        PathBuf::from("/etc/oar/patches/helper.json"),
        r#"[
            {"op": "test", "path": "/containers/1/name", "value": "helper"},
            {"op": "replace", "path": "/containers/1/image", "value": "registry.example.com/oar/oar-helper:debug"},
            {"op": "add", "path": "/tolerations", "value": [{"key": "ci", "operator": "Exists"}]}
        ]"#
        .into(),
    );
    let view = case.view();
    insta::assert_yaml_snapshot!(
        "pod_spec_patches_of_each_type",
        pick(
            &view,
            &[
                "/pod/spec/containers",
                "/pod/spec/volumes",
                "/pod/spec/hostname",
                "/pod/spec/dnsPolicy",
                "/pod/spec/tolerations",
                "/warnings"
            ]
        )
    );
}

#[test]
fn pod_spec_patches_need_the_feature_flag() {
    let mut case = Case::new(
        &PATCHES.replace("= true", "= false"),
        job(json!({"variables": [var("FF_USE_ADVANCED_POD_SPEC_CONFIGURATION", "false")]})),
    );
    case.patch_files.clear();
    insta::assert_yaml_snapshot!(
        "pod_spec_patches_need_the_feature_flag",
        pick(&case.view(), &["/pod/spec/hostname", "/warnings"])
    );
}

#[test]
fn pod_spec_patch_failing() {
    let case = Case::new(
        r#"
[runners.feature_flags]
  FF_USE_ADVANCED_POD_SPEC_CONFIGURATION = true
[runners.kubernetes]
  [[runners.kubernetes.pod_spec]]
    name = "expects a sidecar"
    patch_type = "json"
    patch = '[{"op": "remove", "path": "/containers/5"}]'
"#,
        job(json!({})),
    );
    insta::assert_snapshot!("pod_spec_patch_failing", case.error());
}

#[test]
fn pod_spec_patch_unknown_field_warns() {
    let case = Case::new(
        r#"
[runners.feature_flags]
  FF_USE_ADVANCED_POD_SPEC_CONFIGURATION = true
[runners.kubernetes]
  [[runners.kubernetes.pod_spec]]
    name = "typo"
    patch_type = "merge"
    patch = '{"shareProcessNamespace": true, "hostNetwrok": true}'
"#,
        job(json!({})),
    );
    insta::assert_yaml_snapshot!(
        "pod_spec_patch_unknown_field_warns",
        pick(
            &case.view(),
            &["/pod/spec/shareProcessNamespace", "/warnings"]
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Registry credentials, feature flags

#[test]
fn registry_credentials_become_a_secret() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  image_pull_secrets = ["regcred"]
"#,
        job(json!({
            "image": {"name": "registry.gitlab.example.com/acme/widget/ci:latest"},
            "credentials": [
                {"type": "registry", "url": "registry.gitlab.example.com", "username": "gitlab-ci-token", "password": "glcbt-job-token-secret"},
                {"type": "registry", "url": "docker.io", "username": "from-job", "password": "loses"},
                {"type": "other", "url": "x", "username": "y", "password": "z"}
            ],
            "variables": [{
                "key": "DOCKER_AUTH_CONFIG",
                "value": "{\"auths\": {\"https://index.docker.io/v1/\": {\"auth\": \"dXNlcjpwYXNz\"}, \"quay.io\": {\"username\": \"robot\", \"password\": \"p$ss\"}}, \"credsStore\": \"desktop\"}",
                "public": false, "masked": false
            }]
        })),
    );
    let view = case.view();
    insta::assert_yaml_snapshot!(
        "registry_credentials_become_a_secret",
        pick(
            &view,
            &[
                "/registry_secret",
                "/pod/spec/imagePullSecrets",
                "/warnings"
            ]
        )
    );
}

#[test]
fn service_account_image_pull_secrets() {
    let case = Case::new(
        r#"
[runners.kubernetes]
  image_pull_secrets = ["regcred"]
  use_service_account_image_pull_secrets = true
"#,
        job(json!({"credentials": [
            {"type": "registry", "url": "registry.gitlab.example.com", "username": "gitlab-ci-token", "password": "glcbt-job-token-secret"}
        ]})),
    );
    insta::assert_yaml_snapshot!(
        "service_account_image_pull_secrets",
        pick(
            &case.view(),
            &[
                "/registry_secret",
                "/pod/spec/imagePullSecrets",
                "/warnings"
            ]
        )
    );
}

#[test]
fn feature_flags_entrypoint_and_deadline() {
    let case = Case::new(
        r#"
[runners.feature_flags]
  FF_KUBERNETES_HONOR_ENTRYPOINT = true
  FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY = true
[runners.kubernetes]
  helper_image_flavor = "ubuntu"
  pod_disruption_budget = true
"#,
        job(json!({
            "image": {"name": "node:22", "entrypoint": ["/usr/local/bin/docker-entrypoint.sh"]},
            "variables": [var("FF_USE_POD_ACTIVE_DEADLINE_SECONDS", "false")]
        })),
    );
    insta::assert_yaml_snapshot!(
        "feature_flags_entrypoint_and_deadline",
        pick(
            &case.view(),
            &[
                "/pod/spec/containers/0/command",
                "/pod/spec/containers/0/args",
                "/pod/spec/activeDeadlineSeconds",
                "/warnings"
            ]
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Properties every pod has

#[test]
fn no_job_variable_in_build_or_helper_env() {
    let case = Case::new(
        "[runners.kubernetes]\n",
        job(json!({"services": [{"name": "redis:7"}]})),
    );
    let built = case.build().unwrap();
    let text = serde_json::to_string(&built.pod).unwrap();
    // Secrets never reach the pod spec, not even a service's env.
    assert!(!text.contains("hunter2-secret"));
    assert!(!text.contains("glcbt-job-token-secret"));
    let spec = built.pod.spec.unwrap();
    for c in &spec.containers[..2] {
        let names: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert!(
            names.iter().all(|n| n.starts_with("OAR_")),
            "{}: {names:?}",
            c.name
        );
    }
    // Public job variables do reach services, as in GitLab Runner.
    let redis_env: Vec<&str> = spec.containers[2]
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert!(redis_env.contains(&"RAILS_ENV"));
    assert!(!redis_env.contains(&"DEPLOY_PASSWORD"));
}

#[test]
fn payload_secret() {
    let labels = BTreeMap::from([("oar.dev/job-id".to_owned(), "1234".to_owned())]);
    let secret = oar_kube::build_payload_secret(
        "runner-abcdefghi-project-42-concurrent-0-x7k2m9qa",
        "ci",
        labels,
        br#"{"id": 1234}"#,
    );
    insta::assert_yaml_snapshot!("payload_secret", secret_view(&secret));
}

const IDENTITY: &str = r#"
[runners.kubernetes]
  namespace = "ci"
  image = "alpine:3.20"
  service_account = "ci-default"
  automount_service_account_token = false
  [[runners.kubernetes.identity]]
    service_account = "deploy-prod"
    projects = ["acme/*"]
    protected_ref = true
    namespace = "deploy"
    environment = ["AWS_ROLE_ARN=arn:aws:iam::111122223333:role/deploy-prod", "AWS_REGION=eu-west-1"]
  [runners.kubernetes.projected_token]
    audience = "sts.amazonaws.com"
    path = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"
    expiration_seconds = 3600
    environment = ["AWS_WEB_IDENTITY_TOKEN_FILE=/var/run/secrets/eks.amazonaws.com/serviceaccount/token", "AWS_REGION=us-east-1"]
"#;

/// A job an identity rule matches: the rule's account and namespace, the token automounted
/// (in spite of the runner-wide `false`), the projected token in the build container only,
/// with the environment SDKs read (the rule's `AWS_REGION` over the token's), and the rule
/// named on the pod.
#[test]
fn identity_rule_match() {
    let mut case = Case::new(IDENTITY, job(json!({})));
    case.job.ref_protected = Some(true);
    insta::assert_yaml_snapshot!(
        "identity_rule_match",
        pick(
            &case.view(),
            &[
                "/pod/metadata/namespace",
                "/pod/metadata/annotations/oar.dev~1identity-rule",
                "/pod/spec/serviceAccountName",
                "/pod/spec/automountServiceAccountToken",
                "/pod/spec/volumes",
                "/pod/spec/containers/0/env",
                "/pod/spec/containers/0/volumeMounts",
                "/pod/spec/containers/1/volumeMounts",
                "/warnings"
            ]
        )
    );
}

/// No rule matches (unprotected ref): the runner's account, namespace and automount setting;
/// the table's projected token still reaches the build container.
#[test]
fn identity_no_match_keeps_the_default_account() {
    let case = Case::new(IDENTITY, job(json!({})));
    insta::assert_yaml_snapshot!(
        "identity_no_match",
        pick(
            &case.view(),
            &[
                "/pod/metadata/namespace",
                "/pod/metadata/annotations/oar.dev~1identity-rule",
                "/pod/spec/serviceAccountName",
                "/pod/spec/automountServiceAccountToken",
                "/pod/spec/containers/0/env",
            ]
        )
    );
}

/// A projected token whose directory would cover the builds directory is refused.
#[test]
fn identity_projected_token_overlapping_builds() {
    let tail = IDENTITY.replace(
        "/var/run/secrets/eks.amazonaws.com/serviceaccount/token\"\n    expiration",
        "/builds/token\"\n    expiration",
    );
    let case = Case::new(&tail, job(json!({})));
    assert_eq!(
        case.error(),
        "the projected_token directory \"/builds\" and builds_dir \"/builds\" overlap"
    );
}
