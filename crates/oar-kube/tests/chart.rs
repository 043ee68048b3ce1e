//! The Helm chart (`charts/oar`): `helm lint --strict` with Helm 3 and Helm 4, `helm template`
//! of every `charts/oar/ci/*.yaml` values file with both (the same manifests), each render
//! checked by `kubernetes-validate --strict` and snapshot-tested, the Role equal to
//! [`oar_kube::rbac::RULES`], and bad values refused with the key's name.
//!
//! The tools come from `scripts/test-tools` (into `$OAR_TOOLS_DIR`, default
//! `~/.cache/oar-tools`). Without them these tests print a loud notice and pass, unless
//! `OAR_REQUIRE_HELM=1` (as in CI), which makes them fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use oar_kube::rbac::{RULES, rules_yaml};
use oar_testkit::tools::Tools;
use serde_json::Value;

/// The Kubernetes version the renders are made for and validated against.
const KUBE_VERSION: &str = "1.30.0";
/// The release every render uses.
const RELEASE: &str = "runner";
const NAMESPACE: &str = "ci";

/// The tools (`scripts/test-tools`), or `None` after a loud notice when they are missing and
/// not required.
fn tools() -> Option<Tools> {
    Tools::find()
}

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/oar")
}

/// `charts/oar/ci/*.yaml`, sorted: (file stem, path).
fn ci_values() -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("charts/oar/ci exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("UTF-8 name")
                .to_owned();
            (stem, p)
        })
        .collect();
    files.sort();
    files
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn run(mut c: Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"))
}

/// `helm template` with the fixed release, namespace, Kubernetes version and the
/// prometheus-operator API present; `args` add values (`-f`, `--set`) or `-s`.
fn template(tools: &Tools, helm: &Path, args: &[&str]) -> Output {
    let mut c = tools.helm(helm);
    c.arg("template")
        .arg(RELEASE)
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE, "--kube-version", KUBE_VERSION])
        .args(["--api-versions", "monitoring.coreos.com/v1"])
        .args(args);
    run(c)
}

fn render(tools: &Tools, helm: &Path, args: &[&str]) -> String {
    let out = template(tools, helm, args);
    assert!(
        out.status.success(),
        "{} template {args:?} failed:\n{}",
        helm.display(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn documents(render: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(render)
        .unwrap_or_else(|e| panic!("the render is not clean YAML: {e}\n{render}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn find<'d>(docs: &'d [Value], kind: &str) -> &'d Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the render"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

#[test]
fn helm_lint_strict_passes_with_helm_3_and_helm_4() {
    let Some(tools) = tools() else { return };
    for (name, values) in ci_values() {
        for (which, helm) in tools.helms() {
            let mut c = tools.helm(helm);
            c.args(["lint", "--strict"])
                .arg(chart_dir())
                .arg("-f")
                .arg(&values)
                .args(["--kube-version", KUBE_VERSION]);
            let out = run(c);
            assert!(
                out.status.success(),
                "{which} lint --strict with ci/{name}.yaml:\n{}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
    }
}

#[test]
fn every_ci_values_file_renders_validates_and_matches_its_snapshot() {
    let Some(tools) = tools() else { return };
    let files = ci_values();
    let names: BTreeSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for scenario in [
        "glrt-token-values",
        "legacy-token-values",
        "cluster-wide-values",
        "metrics-servicemonitor-values",
        "custom-ca-values",
        "s3-cache-values",
        "job-identity-values",
    ] {
        assert!(names.contains(scenario), "ci/{scenario}.yaml is missing");
    }
    let scratch = tempfile::tempdir().expect("temp dir");
    for (name, values) in &files {
        let values = values.to_str().expect("UTF-8 path");
        let v3 = render(&tools, &tools.helm3, &["-f", values]);
        let v4 = render(&tools, &tools.helm4, &["-f", values]);
        assert_eq!(
            v3, v4,
            "helm 3 and helm 4 render ci/{name}.yaml differently"
        );

        // Well-formed YAML: no duplicate keys (Kubernetes' decoder would keep only one).
        let docs = documents(&v3);
        assert!(
            docs.iter().any(|d| d["kind"] == "Deployment"),
            "ci/{name}.yaml"
        );

        let file = scratch.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &v3).expect("write the render");
        let mut c = Command::new(&tools.validate);
        c.args(["--strict", "--kubernetes-version", KUBE_VERSION, "--quiet"])
            .arg(&file);
        let out = run(c);
        let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success() && !report.contains("ERROR"),
            "kubernetes-validate --strict of ci/{name}.yaml:\n{report}"
        );
        // Only the prometheus-operator kinds have no schema to validate against.
        for line in report
            .lines()
            .filter(|l| l.contains("Couldn't find schema"))
        {
            assert!(
                line.contains("ServiceMonitor") || line.contains("PodMonitor"),
                "ci/{name}.yaml: {line}"
            );
        }

        insta::assert_snapshot!(format!("render_{name}"), v3);
    }
}

/// The rules of the rendered Role/ClusterRole as (apiGroups, resources, verbs).
type RuleSets = Vec<(Vec<String>, Vec<String>, Vec<String>)>;

fn rendered_rules(role: &Value) -> RuleSets {
    role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
                strings(&r["verbs"]),
            )
        })
        .collect()
}

fn code_rules() -> RuleSets {
    let owned = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    RULES
        .iter()
        .map(|r| (owned(r.api_groups), owned(r.resources), owned(r.verbs)))
        .collect()
}

#[test]
fn the_role_grants_exactly_the_permissions_oar_kube_uses_and_no_wildcard() {
    let Some(tools) = tools() else { return };
    let values = chart_dir().join("ci/glrt-token-values.yaml");
    let values = values.to_str().expect("UTF-8 path");
    let cluster = chart_dir().join("ci/cluster-wide-values.yaml");
    let cluster = cluster.to_str().expect("UTF-8 path");
    for (which, helm) in tools.helms() {
        let out = render(&tools, helm, &["-f", values, "-s", "templates/role.yaml"]);
        let docs = documents(&out);
        let role = find(&docs, "Role");
        assert_eq!(role["metadata"]["namespace"], NAMESPACE);
        assert_eq!(rendered_rules(role), code_rules(), "{which}: {out}");
        // Written in the same form as the code's own listing.
        assert!(
            out.contains(&rules_yaml()),
            "{which}:\n{out}\nvs\n{}",
            rules_yaml()
        );
        assert!(!out.contains('*'), "{which}: a wildcard in\n{out}");
        let granted: usize = rendered_rules(role).iter().map(|r| r.2.len()).sum();
        let used: usize = RULES.iter().map(|r| r.verbs.len()).sum();
        assert_eq!(granted, used);

        let out = render(&tools, helm, &["-f", cluster, "-s", "templates/role.yaml"]);
        let docs = documents(&out);
        let role = find(&docs, "ClusterRole");
        assert!(role["metadata"].get("namespace").is_none());
        assert_eq!(rendered_rules(role), code_rules(), "{which}: {out}");
        assert!(!out.contains('*'), "{which}: a wildcard in\n{out}");
    }
}

#[test]
fn rbac_rules_override_the_default_list() {
    let Some(tools) = tools() else { return };
    let out = render(
        &tools,
        &tools.helm3,
        &[
            "--set",
            "gitlabUrl=https://gitlab.example.com,runnerToken=glrt-x",
            "--set",
            "rbac.rules[0].resources[0]=pods,rbac.rules[0].verbs[0]=get",
            "-s",
            "templates/role.yaml",
        ],
    );
    let docs = documents(&out);
    let rules = rendered_rules(find(&docs, "Role"));
    assert_eq!(
        rules,
        vec![(vec![String::new()], vec!["pods".into()], vec!["get".into()])]
    );
}

#[test]
fn the_manager_pod_is_locked_down_and_reads_its_tokens_from_files() {
    let Some(tools) = tools() else { return };
    let values = chart_dir().join("ci/glrt-token-values.yaml");
    let out = render(
        &tools,
        &tools.helm3,
        &["-f", values.to_str().expect("UTF-8 path")],
    );
    let docs = documents(&out);
    let deployment = find(&docs, "Deployment");
    let pod = &deployment["spec"]["template"];
    let spec = &pod["spec"];
    assert_eq!(spec["securityContext"]["runAsUser"], 100);
    assert_eq!(spec["securityContext"]["fsGroup"], 65533);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    // Job pods outlive the manager: the grace period covers only its own shutdown.
    let grace = spec["terminationGracePeriodSeconds"].as_i64().expect("set");
    assert!((30..=300).contains(&grace), "{grace}");

    let init = &spec["initContainers"][0];
    let main = &spec["containers"][0];
    for c in [init, main] {
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{c}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{c}");
        assert_eq!(sc["privileged"], false, "{c}");
        assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{c}");
        // No token in the environment, ever.
        let env = serde_json::to_string(&c["env"]).expect("json");
        assert!(!env.contains("glrt-"), "{env}");
        assert!(!env.contains("TOKEN"), "{env}");
    }

    let args = strings(&init["args"]);
    assert_eq!(args[0], "register");
    for arg in [
        "--token-file=/secrets/runner-token",
        "--registration-token-file=/secrets/runner-registration-token",
        "--template-config=/configmaps/config.template.toml",
        "--config=/etc/oar/config.toml",
    ] {
        assert!(args.iter().any(|a| a == arg), "{arg} missing: {args:?}");
    }
    let mounts = serde_json::to_string(&main["volumeMounts"]).expect("json");
    assert!(
        !mounts.contains("/secrets"),
        "only the init container mounts the tokens: {mounts}"
    );

    assert_eq!(
        strings(&main["args"]),
        [
            "run",
            "--config=/etc/oar/config.toml",
            "--listen-address=:9252"
        ]
    );
    assert_eq!(main["ports"][0]["containerPort"], 9252);
    assert_eq!(main["livenessProbe"]["httpGet"]["path"], "/health/live");
    assert_eq!(main["readinessProbe"]["httpGet"]["path"], "/health/ready");
    assert_eq!(
        strings(&main["lifecycle"]["preStop"]["exec"]["command"]),
        [
            "/usr/local/bin/oar",
            "unregister",
            "--config=/etc/oar/config.toml",
            "--all-runners"
        ]
    );
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9252");

    // The Secret is projected as files readable by the pod's fsGroup only.
    let volumes = spec["volumes"].as_array().expect("volumes");
    let secrets = volumes
        .iter()
        .find(|v| v["name"] == "secrets")
        .expect("secrets volume");
    assert_eq!(secrets["projected"]["defaultMode"], 0o440);
    assert_eq!(
        secrets["projected"]["sources"][0]["secret"]["name"],
        format!("{RELEASE}-oar")
    );

    // unregisterRunners: false drops the preStop hook.
    let out = render(
        &tools,
        &tools.helm3,
        &[
            "-f",
            values.to_str().expect("UTF-8 path"),
            "--set",
            "unregisterRunners=false",
            "-s",
            "templates/deployment.yaml",
        ],
    );
    let docs = documents(&out);
    let main = &find(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert!(main.get("lifecycle").is_none(), "{main}");
}

#[test]
fn a_config_or_token_change_rolls_the_pod() {
    let Some(tools) = tools() else { return };
    let annotations = |set: &str| {
        let out = render(
            &tools,
            &tools.helm3,
            &[
                "--set",
                "gitlabUrl=https://gitlab.example.com",
                "--set",
                set,
                "-s",
                "templates/deployment.yaml",
            ],
        );
        let docs = documents(&out);
        find(&docs, "Deployment")["spec"]["template"]["metadata"]["annotations"].clone()
    };
    let base = annotations("runnerToken=glrt-a,concurrent=10");
    let config = annotations("runnerToken=glrt-a,concurrent=11");
    let token = annotations("runnerToken=glrt-b,concurrent=10");
    assert_ne!(base["checksum/config"], config["checksum/config"]);
    assert_eq!(base["checksum/secret"], config["checksum/secret"]);
    assert_ne!(base["checksum/secret"], token["checksum/secret"]);
    assert_eq!(base["checksum/config"], token["checksum/config"]);
}

#[test]
fn bad_values_fail_with_the_keys_name() {
    let Some(tools) = tools() else { return };
    let ok = "gitlabUrl=https://gitlab.example.com,runnerToken=glrt-x";
    let scratch = tempfile::tempdir().expect("temp dir");
    // (what, values file, the text the error must contain)
    let cases: &[(&str, &str, &str)] = &[
        (
            "wrong type",
            "gitlabUrl: https://gitlab.example.com\nrunnerToken: glrt-x\nconcurrent: ten\n",
            "concurrent",
        ),
        (
            "wrong type, nested",
            "gitlabUrl: https://gitlab.example.com\nrunnerToken: glrt-x\nmetrics:\n  port: \"9252\"\n",
            "port",
        ),
        (
            "unknown key",
            "gitlabUrl: https://gitlab.example.com\nrunnerToken: glrt-x\nconcurent: 10\n",
            "concurent",
        ),
        (
            "unknown nested key (an upstream key Oar does not have)",
            "gitlabUrl: https://gitlab.example.com\nrunnerToken: glrt-x\nrbac:\n  podSecurityPolicy:\n    enabled: false\n",
            "podSecurityPolicy",
        ),
        ("missing gitlabUrl", "runnerToken: glrt-x\n", "gitlabUrl"),
        (
            "not a URL",
            "gitlabUrl: gitlab.example.com\nrunnerToken: glrt-x\n",
            "gitlabUrl",
        ),
        (
            "unknown log level",
            "gitlabUrl: https://gitlab.example.com\nrunnerToken: glrt-x\nlogLevel: verbose\n",
            "logLevel",
        ),
        (
            "an RBAC rule without verbs",
            "gitlabUrl: https://gitlab.example.com\nrunnerToken: glrt-x\nrbac:\n  rules:\n    - resources: [pods]\n",
            "verbs",
        ),
        (
            "no token at all",
            "gitlabUrl: https://gitlab.example.com\n",
            "runnerToken",
        ),
        (
            "a registration-only setting with a glrt- token",
            "gitlabUrl: https://gitlab.example.com\nrunnerToken: glrt-x\nrunners:\n  tags: a,b\n",
            "runners.tags",
        ),
        (
            "a ServiceMonitor without the Service",
            "gitlabUrl: https://gitlab.example.com\nrunnerToken: glrt-x\nmetrics:\n  serviceMonitor:\n    enabled: true\n",
            "service.enabled",
        ),
        (
            "an identity rule without projects",
            "gitlabUrl: https://gitlab.example.com\nrunnerToken: glrt-x\njobIdentity:\n  rules:\n    - serviceAccount: deploy\n",
            "projects",
        ),
        (
            "a misspelt identity rule condition",
            "gitlabUrl: https://gitlab.example.com\nrunnerToken: glrt-x\njobIdentity:\n  rules:\n    - serviceAccount: deploy\n      projects: [a/*]\n      protectedRefs: true\n",
            "protectedRefs",
        ),
        (
            "environments without an ID token",
            "gitlabUrl: https://gitlab.example.com\nrunnerToken: glrt-x\njobIdentity:\n  rules:\n    - serviceAccount: deploy\n      projects: [a/*]\n      environments: [production]\n",
            "requireIdToken",
        ),
        (
            "a job ServiceAccount without a name",
            "gitlabUrl: https://gitlab.example.com\nrunnerToken: glrt-x\njobIdentity:\n  serviceAccounts:\n    - annotations: {}\n",
            "name",
        ),
        (
            "a projected token without a path",
            "gitlabUrl: https://gitlab.example.com\nrunnerToken: glrt-x\njobIdentity:\n  projectedToken:\n    audience: sts.amazonaws.com\n",
            "projectedToken",
        ),
    ];
    for (i, (what, values, key)) in cases.iter().enumerate() {
        let file = scratch.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&file, values).expect("write values");
        for (which, helm) in tools.helms() {
            let out = template(&tools, helm, &["-f", file.to_str().expect("UTF-8 path")]);
            let err = text(&out.stderr);
            assert!(
                !out.status.success(),
                "{which}: {what} was accepted:\n{values}"
            );
            assert!(
                err.contains(key),
                "{which}: the error for {what} does not name {key}:\n{err}"
            );
        }
    }
    // The same values with the mistake fixed render.
    render(&tools, &tools.helm3, &["--set", ok]);
}

/// `jobIdentity` renders into the runner's config as identity rules Oar loads without a
/// warning, creates the job ServiceAccounts with their annotations, and gives the manager its
/// Role in each namespace job pods may run in.
#[test]
fn job_identity_values_become_rules_accounts_and_roles() {
    let Some(tools) = tools() else { return };
    let values = chart_dir().join("ci/job-identity-values.yaml");
    let docs = documents(&render(
        &tools,
        &tools.helm3,
        &["-f", values.to_str().expect("UTF-8 path")],
    ));
    let template = find(&docs, "ConfigMap")["data"]["config.template.toml"]
        .as_str()
        .expect("config.template.toml")
        .to_owned();
    // What register adds (url, token, executor) to make it a whole config.
    let config = template.replacen(
        "[[runners]]\n",
        "[[runners]]\n  url = \"https://gitlab.example.com/\"\n  token = \"glrt-x\"\n  executor = \"kubernetes\"\n",
        1,
    );
    let loaded = oar_config::parse_str(&config, Path::new("config.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{config}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let kube = loaded.config.runners[0]
        .kubernetes
        .clone()
        .expect("kubernetes");
    let rules: Vec<(&str, Option<&str>)> = kube
        .identity
        .iter()
        .map(|r| (r.service_account.as_str(), r.namespace.as_deref()))
        .collect();
    assert_eq!(
        rules,
        [("deploy-prod", Some("deploy")), ("ci-builder", None)]
    );
    let prod = &kube.identity[0];
    assert!(prod.protected_ref);
    assert_eq!(prod.refs, ["main", "v*"]);
    assert_eq!(prod.require_id_token.as_deref(), Some("OAR_ID_TOKEN"));
    assert_eq!(prod.environment[0].key, "AWS_ROLE_ARN");
    assert_eq!(kube.id_token.audience, "https://oar.example.com");
    let token = kube.projected_token.expect("projected_token");
    assert_eq!(token.audience, "sts.amazonaws.com");
    assert_eq!(token.expiration_seconds, Some(86400));

    let accounts: Vec<(String, String, String)> = docs
        .iter()
        .filter(|d| d["kind"] == "ServiceAccount")
        .map(|d| {
            let m = &d["metadata"];
            let annotations = m["annotations"]
                .as_object()
                .map(|a| a.keys().cloned().collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            (
                m["name"].as_str().unwrap_or_default().to_owned(),
                m["namespace"].as_str().unwrap_or_default().to_owned(),
                annotations,
            )
        })
        .collect();
    for expected in [
        ("deploy-prod", "deploy", "eks.amazonaws.com/role-arn"),
        ("ci-builder", "ci-jobs", "iam.gke.io/gcp-service-account"),
    ] {
        assert!(
            accounts
                .iter()
                .any(|(n, ns, a)| (n.as_str(), ns.as_str(), a.as_str()) == expected),
            "{expected:?} not in {accounts:?}"
        );
    }
    for kind in ["Role", "RoleBinding"] {
        let namespaces: BTreeSet<&str> = docs
            .iter()
            .filter(|d| d["kind"] == kind)
            .filter_map(|d| d["metadata"]["namespace"].as_str())
            .collect();
        assert_eq!(namespaces, BTreeSet::from(["ci-jobs", "deploy"]), "{kind}");
    }
    for role in docs.iter().filter(|d| d["kind"] == "Role") {
        assert_eq!(rendered_rules(role), code_rules());
    }
}
