//! The Helm chart installed as users install it: real `helm install charts/oar` (Helm 3, and
//! Helm 4 for the legacy registration) on the test cluster, with the locally built images
//! (`scripts/images`: `oar.test/oar:dev`, the release `oar` binary on a shell-less root
//! filesystem, and `oar.test/oar-helper:dev`), the manager in its pod authenticating with the
//! chart's ServiceAccount through its in-cluster token, against FakeGitlab.
//!
//! The sandbox carries loopback traffic only, so the manager pod must use the host network to
//! reach FakeGitlab and the API server on 127.0.0.1. That is the post-renderer
//! `tests/chart_install/host-network` (kustomize), kept here: the chart has no value that exists
//! for these tests. Job pods get the host network the way a user would give it to them, with a
//! `pod_spec` patch in `runners.config`.
//!
//! Needs the cluster (`OAR_REQUIRE_CLUSTER=1` makes its absence a failure) and the tools of
//! `scripts/test-tools` (`OAR_REQUIRE_HELM=1` likewise).

mod common;

use common::kube::{PodLog, web_service};
use common::{Fixture, JOB_WAIT, RUNNER_TOKEN, http_get};
use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Resource};
use oar_testkit::cluster::{DEBIAN_IMAGE, TestCluster, TestNamespace, service_account_user};
use oar_testkit::s3::S3Server;
use oar_testkit::tools::Tools;
use oar_testkit::{Endpoint, Fault, JobSnapshot, JobSpec, JobState};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// The manager image `scripts/images` builds from the release binary.
const OAR_IMAGE: (&str, &str, &str) = ("oar.test", "oar", "dev");
/// The helper image (`oar_testkit::cluster::HELPER_IMAGE`).
const HELPER_IMAGE: (&str, &str, &str) = ("oar.test", "oar-helper", "dev");
/// The release name of every test (each test has its own namespace).
const RELEASE: &str = "ci";
/// The manager's name in the chart (`<release>-oar`): Deployment, ServiceAccount, Role.
const FULLNAME: &str = "ci-oar";
/// How long an install, an upgrade or a rollout may take.
const ROLLOUT: Duration = Duration::from_secs(180);
/// The label every job pod and payload Secret carries.
const JOB_LABEL: &str = "oar.dev/job-id";

/// One test's install: the tools, the cluster, the namespace and the values it installs.
struct Chart {
    tools: Tools,
    helm: PathBuf,
    cluster: TestCluster,
    ns: TestNamespace,
    /// The manager's metrics and health port (on the host's network).
    port: u16,
    dir: tempfile::TempDir,
}

/// What a test installs on top of the common values.
struct Values {
    /// `runnerToken` (glrt-) or `runnerRegistrationToken`.
    token: Token,
    /// Extra `[[runners]]` lines (inside the runner table, before `[runners.kubernetes]`).
    runner_extra: String,
    /// Extra `[runners.kubernetes]` lines.
    kube_extra: String,
    /// Whole tables after `[runners.kubernetes]` (`[runners.cache]` ...).
    tail: String,
    /// `runners.cache.secretName`: the S3 keys' Secret.
    cache_secret: Option<String>,
    /// Top-level values YAML after the rest (`jobIdentity: ...`).
    top: String,
}

enum Token {
    Runner(String),
    Registration(String),
}

impl Values {
    fn glrt() -> Values {
        Values {
            token: Token::Runner(RUNNER_TOKEN.to_string()),
            runner_extra: String::new(),
            kube_extra: String::new(),
            tail: String::new(),
            cache_secret: None,
            top: String::new(),
        }
    }
}

/// A TCP port nobody listens on right now (host-network pods share the host's ports).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// YAML's double-quoted form of `s` (JSON's string syntax is a subset of it).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

impl Chart {
    /// The cluster, a fresh namespace and the tools; `None` (skipped loudly) without them.
    async fn setup(prefix: &str, helm4: bool) -> Option<Chart> {
        let tools = Tools::find()?;
        let cluster = TestCluster::from_env().await?;
        let ns = cluster.namespace(prefix).await.expect("test namespace");
        let helm = if helm4 {
            tools.helm4.clone()
        } else {
            tools.helm3.clone()
        };
        Some(Chart {
            tools,
            helm,
            cluster,
            ns,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
        })
    }

    /// The values file for `f`'s FakeGitlab.
    fn write_values(&self, f: &Fixture, v: &Values) -> PathBuf {
        let token = match &v.token {
            Token::Runner(t) => format!("runnerToken: {}", quoted(t)),
            Token::Registration(t) => format!("runnerRegistrationToken: {}", quoted(t)),
        };
        let config = format!(
            r#"[[runners]]
  builds_dir = "/builds"
  cache_dir = "/cache"
{runner_extra}
  [runners.feature_flags]
    FF_USE_ADVANCED_POD_SPEC_CONFIGURATION = true
  [runners.kubernetes]
    namespace = "{{{{ .Release.Namespace }}}}"
    image = "{DEBIAN_IMAGE}"
    pull_policy = "never"
    poll_timeout = 120
{kube_extra}
    [[runners.kubernetes.pod_spec]]
      name = "host-network"
      patch_type = "merge"
      patch = '{{"hostNetwork": true}}'
{tail}"#,
            runner_extra = v.runner_extra,
            kube_extra = v.kube_extra,
            tail = v.tail,
        );
        let indented: String = config.lines().map(|l| format!("    {l}\n")).collect();
        let yaml = format!(
            r#"gitlabUrl: {url}
{token}
image: {{registry: {ir}, image: {ii}, tag: {it}}}
helperImage: {{registry: {hr}, image: {hi}, tag: {ht}}}
imagePullPolicy: Never
checkInterval: 1
shutdown_timeout: 20
terminationGracePeriodSeconds: 40
metrics:
  port: {port}
readinessProbe:
  initialDelaySeconds: 1
  periodSeconds: 1
  timeoutSeconds: 2
  failureThreshold: 3
runners:
{cache}  config: |
{indented}{top}"#,
            top = v.top,
            url = quoted(&f.gl.url()),
            ir = OAR_IMAGE.0,
            ii = OAR_IMAGE.1,
            it = OAR_IMAGE.2,
            hr = HELPER_IMAGE.0,
            hi = HELPER_IMAGE.1,
            ht = HELPER_IMAGE.2,
            port = self.port,
            cache = v
                .cache_secret
                .as_ref()
                .map(|s| format!("  cache:\n    secretName: {}\n", quoted(s)))
                .unwrap_or_default(),
        );
        let path = self.dir.path().join("values.yaml");
        std::fs::write(&path, yaml).expect("write values");
        path
    }

    /// `helm <verb> ci charts/oar -f values` (install or upgrade) or `helm uninstall ci`, in the
    /// test's namespace with the admin kubeconfig and the host-network post-renderer.
    async fn helm(&self, verb: &str, values: Option<&Path>, wait: bool) -> std::process::Output {
        let mut c = self.tools.helm(&self.helm);
        c.arg(verb).arg(RELEASE);
        if verb != "uninstall" {
            let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/oar");
            c.arg(chart);
            let program =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chart_install/host-network");
            let renderer = self
                .tools
                .post_renderer(&self.helm, "oar-host-network", &program);
            let api = &self.cluster.config().cluster_url;
            c.args(["--post-renderer", &renderer])
                .arg("--post-renderer-args")
                .arg(&self.tools.kubectl)
                .args([
                    "--post-renderer-args",
                    api.host().expect("the API server's host"),
                ])
                .args([
                    "--post-renderer-args",
                    &api.port_u16().unwrap_or(443).to_string(),
                ]);
        }
        if let Some(values) = values {
            c.arg("-f").arg(values);
        }
        if wait {
            c.args(["--wait", "--timeout", &format!("{}s", ROLLOUT.as_secs())]);
        }
        c.args(["--namespace", self.ns.name()])
            .arg("--kubeconfig")
            .arg(self.cluster.kubeconfig_path());
        let started = Instant::now();
        let out = tokio::process::Command::from(c)
            .output()
            .await
            .expect("helm runs");
        eprintln!(
            "helm {verb}: {:?} in {:?}\n{}{}",
            out.status,
            started.elapsed(),
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            out.status.success(),
            "helm {verb} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    }

    /// The manager's address on the host network.
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The manager pods (by the chart's selector labels).
    fn manager_selector() -> String {
        format!("app.kubernetes.io/name=oar,app.kubernetes.io/instance={RELEASE}")
    }

    /// Waits (through a watch) until the manager pods satisfy `done`; returns them.
    async fn wait_managers(&self, what: &str, done: impl Fn(&[Pod]) -> bool) -> Vec<Pod> {
        wait_pods(&self.ns.api::<Pod>(), &Self::manager_selector(), what, done).await
    }

    /// Waits until exactly one manager pod exists and it is Ready; returns it.
    async fn ready_manager(&self, not: Option<&str>) -> Pod {
        let pods = self
            .wait_managers("one Ready manager pod", |pods| {
                pods.len() == 1
                    && is_ready(&pods[0])
                    && not.is_none_or(|n| pods[0].metadata.name.as_deref() != Some(n))
            })
            .await;
        pods.into_iter().next().expect("one pod")
    }

    /// The manager container's log (the current container, or the previous one).
    async fn manager_log(&self, pod: &str, previous: bool) -> String {
        let params = LogParams {
            container: Some("oar".into()),
            previous,
            ..LogParams::default()
        };
        self.ns
            .api::<Pod>()
            .logs(pod, &params)
            .await
            .unwrap_or_else(|e| panic!("the log of {pod}: {e}"))
    }

    /// Waits until the job pods and payload Secrets are gone; panics naming what is left.
    async fn assert_no_job_objects(&self) {
        let selector = ListParams::default().labels(JOB_LABEL);
        let pods: Api<Pod> = self.ns.api();
        wait_pods(&pods, JOB_LABEL, "no job pods", |p| p.is_empty()).await;
        let secrets: Api<Secret> = self.ns.api();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left: Vec<String> = secrets
                .list(&selector)
                .await
                .expect("list secrets")
                .items
                .into_iter()
                .filter_map(|s| s.metadata.name)
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "payload Secrets left: {left:?}");
            // The garbage collector deletes them after their pod: wait for its next change.
            wait_gone(&secrets, &left[0]).await;
        }
    }

    /// After `helm uninstall`: nothing of the chart's, and nothing of any job, is left.
    async fn assert_uninstalled(&self) {
        self.assert_no_job_objects().await;
        wait_pods(
            &self.ns.api::<Pod>(),
            &Self::manager_selector(),
            "no manager pod",
            |p| p.is_empty(),
        )
        .await;
        let params = ListParams::default();
        let deployments: Vec<String> = names(self.ns.api::<Deployment>().list(&params).await);
        let roles: Vec<String> = names(self.ns.api::<Role>().list(&params).await);
        let bindings: Vec<String> = names(self.ns.api::<RoleBinding>().list(&params).await);
        let configmaps: Vec<String> = names(self.ns.api::<ConfigMap>().list(&params).await)
            .into_iter()
            // Kubernetes' own, in every namespace.
            .filter(|n| n != "kube-root-ca.crt")
            .collect();
        let accounts: Vec<String> = names(self.ns.api::<ServiceAccount>().list(&params).await)
            .into_iter()
            .filter(|n| n.starts_with(FULLNAME))
            .collect();
        assert!(deployments.is_empty(), "Deployments left: {deployments:?}");
        assert!(roles.is_empty(), "Roles left: {roles:?}");
        assert!(bindings.is_empty(), "RoleBindings left: {bindings:?}");
        assert!(configmaps.is_empty(), "ConfigMaps left: {configmaps:?}");
        assert!(accounts.is_empty(), "ServiceAccounts left: {accounts:?}");
        // The chart's token Secret, and its ServiceAccount's token (the token controller
        // deletes that one after the account).
        let secrets: Api<Secret> = self.ns.api();
        for s in secrets.list(&params).await.expect("list secrets").items {
            let name = s.metadata.name.clone().unwrap_or_default();
            let of_account = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .cloned();
            let ours = name == FULLNAME || of_account.as_deref() == Some(FULLNAME);
            if ours {
                wait_gone(&secrets, &name).await;
            }
        }
    }

    /// Pod creates by the manager's ServiceAccount, from the audit log.
    async fn manager_pod_creates(&self) -> usize {
        let user = service_account_user(self.ns.name(), FULLNAME);
        self.ns
            .api_calls(Some(&user))
            .await
            .expect("the audit log")
            .count("create", "pods")
    }
}

fn names<K: Resource + Clone>(list: kube::Result<kube::api::ObjectList<K>>) -> Vec<String> {
    list.expect("list")
        .items
        .into_iter()
        .filter_map(|o| o.meta().name.clone())
        .collect()
}

/// Whether the pod is Ready.
fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The `oar` container's status.
fn oar_container(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "oar")
}

/// Waits, through a watch of the pods matching `selector`, until `done` holds of them.
async fn wait_pods(
    api: &Api<Pod>,
    selector: &str,
    what: &str,
    done: impl Fn(&[Pod]) -> bool,
) -> Vec<Pod> {
    let config = watcher::Config::default().labels(selector);
    let mut stream = std::pin::pin!(watcher(api.clone(), config));
    let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
    let mut init: BTreeMap<String, Pod> = BTreeMap::new();
    let mut listed = false;
    let deadline = Instant::now() + ROLLOUT;
    loop {
        if listed {
            let now: Vec<Pod> = pods.values().cloned().collect();
            if done(&now) {
                return now;
            }
        }
        let event = match tokio::time::timeout_at(deadline, stream.try_next()).await {
            Ok(Ok(Some(e))) => e,
            Ok(Ok(None)) => panic!("the pod watch ended waiting for {what}"),
            Ok(Err(e)) => panic!("the pod watch failed waiting for {what}: {e}"),
            Err(_) => panic!(
                "timed out after {ROLLOUT:?} waiting for {what}; pods: {:#?}",
                pods.values().map(pod_summary).collect::<Vec<_>>()
            ),
        };
        match event {
            watcher::Event::Init => init.clear(),
            watcher::Event::InitApply(p) => {
                init.insert(p.metadata.name.clone().unwrap_or_default(), p);
            }
            watcher::Event::InitDone => {
                pods = std::mem::take(&mut init);
                listed = true;
            }
            watcher::Event::Apply(p) => {
                pods.insert(p.metadata.name.clone().unwrap_or_default(), p);
            }
            watcher::Event::Delete(p) => {
                pods.remove(p.metadata.name.as_deref().unwrap_or_default());
            }
        }
    }
}

/// A pod in a line: name, phase, readiness and container states.
fn pod_summary(p: &Pod) -> String {
    let status = p.status.as_ref();
    let containers: Vec<String> = status
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    format!(
                        "{}: ready={} restarts={} {:?}",
                        c.name, c.ready, c.restart_count, c.state
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{} phase={:?} ready={} {containers:?}",
        p.metadata.name.as_deref().unwrap_or_default(),
        status.and_then(|s| s.phase.clone()),
        is_ready(p)
    )
}

/// Waits until the Secret `name` is gone.
async fn wait_gone(api: &Api<Secret>, name: &str) {
    oar_testkit::cluster::wait_for(api, name, Duration::from_secs(60), |s| s.is_none())
        .await
        .unwrap_or_else(|e| panic!("Secret {name} is still there: {e}"));
}

/// The manager process of `pod` as the host sees it (its container's init process, through
/// containerd): its pid.
async fn manager_pid(pod: &Pod) -> u32 {
    let id = container_id(pod);
    let out = ctr(&["tasks", "ls"]).await;
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(id.as_str()))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no containerd task {id}:\n{out}"))
}

/// The `oar` container's id (without the `containerd://` scheme).
fn container_id(pod: &Pod) -> String {
    oar_container(pod)
        .and_then(|c| c.container_id.as_deref())
        .and_then(|id| id.strip_prefix("containerd://"))
        .unwrap_or_else(|| panic!("no containerd id: {}", pod_summary(pod)))
        .to_string()
}

/// `ctr -n k8s.io ARGS` against the test cluster's containerd.
async fn ctr(args: &[&str]) -> String {
    let sock = std::env::var("OAR_TEST_CONTAINERD_SOCK")
        .expect("OAR_TEST_CONTAINERD_SOCK (eval \"$(scripts/cluster env)\")");
    let out = tokio::process::Command::new("ctr")
        .args(["--address", &sock, "-n", "k8s.io"])
        .args(args)
        .output()
        .await
        .expect("ctr runs");
    assert!(out.status.success(), "ctr {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// A field of /proc/PID/status (`Uid`, `CapEff`, `VmRSS`...).
fn proc_status(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// The job script of the long-running tests: ticks every 0.2 s until the test opens the gate
/// (a TCP port on 127.0.0.1, reached with bash's /dev/tcp), then says so. Bounded: it gives up
/// after 1,500 ticks (5 minutes).
fn gated_script(gate: u16) -> String {
    format!(
        r#"i=0; until (exec 3<>/dev/tcp/127.0.0.1/{gate}) 2>/dev/null; do i=$((i+1)); echo "tick $i"; [ "$i" -lt 1500 ] || exit 7; sleep 0.2; done; echo "gate open after $i ticks""#
    )
}

/// The gated job's log has every tick exactly once, in order, then the gate line, and its
/// checksum matches: nothing lost, nothing repeated.
fn assert_full_gated_log(job: &JobSnapshot) {
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(job.checksum_matches, "checksum mismatch:\n{trace}");
    let ticks: Vec<u64> = trace
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("tick "))
        .filter_map(|n| n.parse().ok())
        .collect();
    let expected: Vec<u64> = (1..=ticks.len() as u64).collect();
    assert_eq!(ticks, expected, "ticks lost or repeated:\n{trace}");
    let gate = format!("gate open after {} ticks", ticks.len());
    assert!(
        trace.lines().any(|l| l.trim_end_matches('\r') == gate),
        "no {gate:?}:\n{trace}"
    );
}

/// Queues `n` gated jobs (see [`gated_script`]) and waits until each one runs.
async fn start_gated_jobs(f: &Fixture, n: usize, gate: u16) -> Vec<i64> {
    let ids: Vec<i64> = (0..n)
        .map(|i| {
            f.gl.enqueue_job(
                JobSpec::new("acme/none")
                    .name(&format!("long-{i}"))
                    .variable("GIT_STRATEGY", "none")
                    .script([gated_script(gate)]),
            )
        })
        .collect();
    for id in &ids {
        f.gl.wait_trace_contains(*id, "tick 1\n", JOB_WAIT)
            .await
            .expect("the job runs");
    }
    ids
}

/// Opens the gate and checks that every gated job ends with its full log.
async fn finish_gated_jobs(f: &Fixture, ids: &[i64], gate: u16) {
    let _gate = std::net::TcpListener::bind(("127.0.0.1", gate)).expect("the gate");
    for id in ids {
        let job =
            f.gl.wait_job_finished(*id, JOB_WAIT)
                .await
                .expect("finishes");
        assert_full_gated_log(&job);
    }
}

/// How many job pods a manager's log says it adopted.
fn adopted(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("adopting a job pod left by a previous manager"))
        .count()
}

/// The runner's system ids (runner managers) as FakeGitlab has them.
fn system_ids(f: &Fixture, token: &str) -> Vec<String> {
    f.gl.runners()
        .into_iter()
        .find(|r| r.token == token && !r.deleted)
        .map(|r| r.system_ids)
        .unwrap_or_default()
}

/// A glrt- install: the init container only verifies; the pod is not Ready while GitLab
/// refuses job requests and becomes Ready once it answers; `/metrics` answers on the pod's
/// port; a job with a service, an artifact, an S3 cache (keys from the chart's cache Secret)
/// and an allowed ServiceAccount overwrite succeeds with a byte-exact log in a pod of that
/// account; the manager runs read-only as uid 100 without capabilities; `helm uninstall`
/// unregisters its runner manager and leaves nothing.
#[tokio::test]
async fn a_glrt_install_verifies_gets_ready_runs_a_full_job_and_uninstalls_clean() {
    let Some(chart) = Chart::setup("oar-chart-glrt", false).await else {
        return;
    };
    let f = Fixture::new().await;
    let s3 = S3Server::start("chart-cache").await.unwrap();
    let cache_secret = Secret {
        metadata: ObjectMeta {
            name: Some("s3access".into()),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([
            ("accesskey".to_string(), s3.access_key().to_string()),
            ("secretkey".to_string(), s3.secret_key().to_string()),
        ])),
        ..Secret::default()
    };
    chart
        .ns
        .api::<Secret>()
        .create(&PostParams::default(), &cache_secret)
        .await
        .expect("the cache Secret");
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("ci-deployer".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    chart
        .ns
        .api::<ServiceAccount>()
        .create(&PostParams::default(), &account)
        .await
        .expect("the job's ServiceAccount");
    let mut values = Values::glrt();
    values.kube_extra = "    service_account_overwrite_allowed = \"^ci-.*$\"\n".into();
    values.tail = format!(
        "  [runners.cache]\n    Type = \"s3\"\n    Shared = false\n    Path = \"ci\"\n    [runners.cache.s3]\n      ServerAddress = \"{}\"\n      BucketName = \"{}\"\n      BucketLocation = \"us-east-1\"\n      Insecure = true\n      AuthenticationType = \"access-key\"\n",
        s3.server_address(),
        s3.bucket()
    );
    values.cache_secret = Some("s3access".into());
    let values_path = chart.write_values(&f, &values);

    // GitLab refuses job requests until the test says otherwise: the pod must not be Ready.
    f.gl.inject(Fault::Status {
        endpoint: Endpoint::RequestJob,
        status: 500,
        times: 1_000_000,
    });
    let started = Instant::now();
    chart.helm("install", Some(&values_path), false).await;
    let pods = chart
        .wait_managers("the manager container running", |pods| {
            pods.len() == 1
                && oar_container(&pods[0])
                    .and_then(|c| c.state.as_ref())
                    .is_some_and(|s| s.running.is_some())
        })
        .await;
    let pod_name = pods[0].metadata.name.clone().unwrap();
    f.gl.wait_requests(Endpoint::RequestJob, 1, JOB_WAIT)
        .await
        .expect("the manager asks for jobs");
    let (ready, body) = http_get(&chart.addr(), "/health/ready").await;
    assert_eq!(ready, 503, "ready before GitLab answered:\n{body}");
    let pod = chart.ns.api::<Pod>().get(&pod_name).await.unwrap();
    assert!(
        !is_ready(&pod),
        "Ready before GitLab answered: {}",
        pod_summary(&pod)
    );
    // The init container verified the glrt- token and registered nothing.
    assert!(!f.gl.requests_to(Endpoint::VerifyRunner).is_empty());
    assert!(f.gl.requests_to(Endpoint::RegisterRunner).is_empty());
    let ids = system_ids(&f, RUNNER_TOKEN);
    assert_eq!(ids.len(), 1, "one runner manager: {ids:?}");

    f.gl.clear_faults();
    let pod = chart.ready_manager(None).await;
    eprintln!("manager Ready {:?} after helm install", started.elapsed());
    let (ready, _) = http_get(&chart.addr(), "/health/ready").await;
    assert_eq!(ready, 200);
    let (status, metrics) = http_get(&chart.addr(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("gitlab_runner_version_info{"),
        "no gitlab_runner_version_info:\n{metrics}"
    );

    // How the manager runs: read-only root, uid 100, no capabilities.
    let pid = manager_pid(&pod).await;
    let uids = proc_status(pid, "Uid");
    assert!(uids.split_whitespace().all(|u| u == "100"), "uids {uids}");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(proc_status(pid, caps), "0000000000000000", "{caps}");
    }
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .expect("the root mount");
    let options = root.split_whitespace().nth(5).unwrap_or_default();
    assert!(
        options.split(',').any(|o| o == "ro"),
        "the root filesystem is not read-only: {root}"
    );
    eprintln!(
        "manager RSS idle: {} (pid {pid})",
        proc_status(pid, "VmRSS")
    );

    // A full job.
    f.gl.create_repo("acme/widget", &[("README.md", "hello from the repo\n")])
        .unwrap();
    let svc_port = free_port();
    let (services, fetch) = web_service(svc_port, "svc-marker-5d1c");
    let jobs_pods = PodLog::start(&chart.ns).await;
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/widget")
            .name("build")
            .variable("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE", "ci-deployer")
            .services(services)
            .script([
                fetch.as_str(),
                "fetch web && echo 'service as web: ok'",
                "cat README.md",
                "mkdir -p out vendor",
                "echo artifact-from-chart > out/a.txt",
                "echo cached-by-chart > vendor/lib.txt",
            ])
            .artifacts(json!([{ "paths": ["out/"], "when": "on_success" }]))
            .cache(json!([{
                "key": "deps", "paths": ["vendor/"],
                "policy": "pull-push", "when": "on_success", "untracked": false
            }])),
    );
    let job =
        f.gl.wait_job_finished(id, Duration::from_secs(180))
            .await
            .unwrap_or_else(|e| panic!("{e}; {}", pod_summary(&pod)));
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(job.checksum_matches, "{trace}");
    assert!(trace.contains("service as web: ok"), "{trace}");
    // The job's executor is Kubernetes; the helper's own stages do not announce another one.
    assert!(
        trace.contains("Using the Kubernetes executor") && !trace.contains("Using Shell"),
        "{trace}"
    );
    assert!(trace.contains("hello from the repo"), "{trace}");
    assert_eq!(job.artifacts.len(), 1, "{trace}");
    let keys = s3.object_keys();
    assert!(
        keys.len() == 1 && keys[0].ends_with("/deps"),
        "cache objects {keys:?}\n{trace}"
    );
    let seen = jobs_pods.pods();
    let job_pods: Vec<_> = seen.iter().filter(|(n, _)| n != &pod_name).collect();
    assert_eq!(job_pods.len(), 1, "{seen:?}");
    assert_eq!(job_pods[0].1.as_deref(), Some("ci-deployer"), "{seen:?}");
    chart.assert_no_job_objects().await;
    assert_eq!(chart.manager_pod_creates().await, 1);
    eprintln!("manager RSS after a job: {}", proc_status(pid, "VmRSS"));

    // Uninstall: the preStop hook deletes this runner manager, not the runner.
    chart.helm("uninstall", None, true).await;
    chart.assert_uninstalled().await;
    assert_eq!(system_ids(&f, RUNNER_TOKEN), Vec::<String>::new());
    assert!(
        f.gl.runners()
            .iter()
            .any(|r| r.token == RUNNER_TOKEN && !r.deleted),
        "the glrt- runner itself must stay"
    );
    assert_eq!(f.gl.violations(), Vec::<String>::new());
    chart.ns.delete().await.ok();
}

/// A legacy registration token (Helm 4): the init container registers exactly one runner,
/// which takes a job; `helm uninstall` deletes that runner.
#[tokio::test]
async fn a_registration_token_install_registers_exactly_one_runner() {
    let Some(chart) = Chart::setup("oar-chart-legacy", true).await else {
        return;
    };
    let f = Fixture::new().await;
    let registration = "GR1348941chartLegacyToken";
    f.gl.add_registration_token(registration);
    let mut values = Values::glrt();
    values.token = Token::Registration(registration.into());
    let values_path = chart.write_values(&f, &values);
    chart.helm("install", Some(&values_path), true).await;
    let pod = chart.ready_manager(None).await;
    let registered: Vec<_> =
        f.gl.runners()
            .into_iter()
            .filter(|r| r.registered)
            .collect();
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(f.gl.requests_to(Endpoint::RegisterRunner).len(), 1);
    let token = registered[0].token.clone();
    assert!(
        !token.starts_with("glrt-"),
        "a registered runner's token is not a created runner's: {token}"
    );

    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["echo registered runner at work"]),
    );
    let job =
        f.gl.wait_job_finished(id, Duration::from_secs(180))
            .await
            .unwrap_or_else(|e| panic!("{e}; {}", pod_summary(&pod)));
    assert_eq!(job.state, JobState::Success, "{}", job.trace_str());
    assert!(job.checksum_matches);
    assert_eq!(job.runner_id, Some(registered[0].id));
    chart.assert_no_job_objects().await;

    chart.helm("uninstall", None, true).await;
    chart.assert_uninstalled().await;
    let runner = f.gl.runner(registered[0].id).expect("the runner");
    assert!(runner.deleted, "the registered runner must be deleted");
    chart.ns.delete().await.ok();
}

/// `helm upgrade` that changes `runners.config` while 5 jobs run: the Deployment rolls, the
/// old pod's preStop deletes its runner manager, the new manager adopts the 5 job pods, and
/// all 5 jobs finish with their full logs; nothing is left.
#[tokio::test]
async fn an_upgrade_while_five_jobs_run_rolls_and_the_new_manager_adopts_them() {
    let Some(chart) = Chart::setup("oar-chart-upgrade", false).await else {
        return;
    };
    let f = Fixture::new().await;
    let mut values = Values::glrt();
    let values_path = chart.write_values(&f, &values);
    chart.helm("install", Some(&values_path), true).await;
    let old = chart.ready_manager(None).await;
    let old_name = old.metadata.name.clone().unwrap();
    let old_ids = system_ids(&f, RUNNER_TOKEN);
    assert_eq!(old_ids.len(), 1, "{old_ids:?}");

    let gate = free_port();
    let ids = start_gated_jobs(&f, 5, gate).await;

    values.runner_extra = "  environment = [\"ROLLED=1\"]\n".into();
    let values_path = chart.write_values(&f, &values);
    chart.helm("upgrade", Some(&values_path), true).await;
    let new = chart.ready_manager(Some(&old_name)).await;
    let new_name = new.metadata.name.clone().unwrap();
    // The old manager's preStop deleted its runner manager; the new one verified its own.
    let new_ids = system_ids(&f, RUNNER_TOKEN);
    assert!(
        !new_ids.contains(&old_ids[0]) && new_ids.len() == 1,
        "runner managers before {old_ids:?}, after {new_ids:?}"
    );
    let log = chart.manager_log(&new_name, false).await;
    assert_eq!(adopted(&log), 5, "the new manager's log:\n{log}");

    finish_gated_jobs(&f, &ids, gate).await;
    chart.assert_no_job_objects().await;
    assert_eq!(chart.manager_pod_creates().await, 5, "jobs started again");
    // The next job sees the new config.
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["echo \"rolled=$ROLLED\""]),
    );
    let job =
        f.gl.wait_job_finished(id, JOB_WAIT)
            .await
            .expect("finishes");
    assert!(job.trace_str().contains("rolled=1"), "{}", job.trace_str());
    chart.assert_no_job_objects().await;
    let pid = manager_pid(&new).await;
    eprintln!("manager RSS after 6 jobs: {}", proc_status(pid, "VmRSS"));

    chart.helm("uninstall", None, true).await;
    chart.assert_uninstalled().await;
    assert_eq!(f.gl.violations(), Vec::<String>::new());
    chart.ns.delete().await.ok();
}

/// The manager pod deleted mid-job, then its replacement's process killed with SIGKILL
/// through the container runtime: each successor adopts the running job pods, and the jobs
/// finish with their full logs; no job pod is created twice.
#[tokio::test]
async fn a_deleted_or_killed_manager_is_replaced_and_its_successor_adopts_the_jobs() {
    let Some(chart) = Chart::setup("oar-chart-restart", false).await else {
        return;
    };
    let f = Fixture::new().await;
    let values_path = chart.write_values(&f, &Values::glrt());
    chart.helm("install", Some(&values_path), true).await;
    let first = chart.ready_manager(None).await;
    let first_name = first.metadata.name.clone().unwrap();

    let gate = free_port();
    let ids = start_gated_jobs(&f, 2, gate).await;

    // `kubectl delete pod`: the ReplicaSet replaces it.
    chart
        .ns
        .api::<Pod>()
        .delete(&first_name, &DeleteParams::default())
        .await
        .expect("delete the manager pod");
    let second = chart.ready_manager(Some(&first_name)).await;
    let second_name = second.metadata.name.clone().unwrap();
    // The deleted pod's preStop removed its runner manager; the replacement has its own.
    let managers = system_ids(&f, RUNNER_TOKEN);
    assert_eq!(managers.len(), 1, "{managers:?}");
    let log = chart.manager_log(&second_name, false).await;
    assert_eq!(adopted(&log), 2, "the replacement's log:\n{log}");

    // kill -9 of the replacement's process: the kubelet restarts the container in place.
    let before = ctr(&["tasks", "ls"]).await;
    let id = container_id(&second);
    assert!(before.contains(&id));
    ctr(&["tasks", "kill", "--signal", "SIGKILL", &id]).await;
    let restarted = chart
        .wait_managers("the manager container restarted and Ready", |pods| {
            pods.len() == 1
                && is_ready(&pods[0])
                && oar_container(&pods[0]).is_some_and(|c| c.restart_count >= 1)
        })
        .await;
    assert_eq!(
        restarted[0].metadata.name.as_deref(),
        Some(second_name.as_str())
    );
    let log = chart.manager_log(&second_name, false).await;
    assert_eq!(adopted(&log), 2, "the restarted container's log:\n{log}");
    // The restarted container kept the pod's config and system id (no new runner manager).
    assert_eq!(system_ids(&f, RUNNER_TOKEN), managers);

    finish_gated_jobs(&f, &ids, gate).await;
    chart.assert_no_job_objects().await;
    assert_eq!(chart.manager_pod_creates().await, 2, "jobs started again");

    chart.helm("uninstall", None, true).await;
    chart.assert_uninstalled().await;
    assert_eq!(f.gl.violations(), Vec::<String>::new());
    chart.ns.delete().await.ok();
}

/// `jobIdentity` installed: the chart creates the job ServiceAccount with its cloud
/// annotation and writes the rule into the runner's config; a protected job of the rule's
/// project, with a GitLab ID token the manager verifies from its pod against FakeGitlab's
/// keys, runs as that account; an unprotected one asking for it fails before any pod exists;
/// `helm uninstall` removes the account.
#[tokio::test]
async fn a_job_identity_install_runs_protected_jobs_as_the_charts_account() {
    let Some(chart) = Chart::setup("oar-chart-identity", false).await else {
        return;
    };
    let f = Fixture::new().await;
    let mut values = Values::glrt();
    values.top = r#"jobIdentity:
  serviceAccounts:
    - name: deploy-prod
      annotations:
        eks.amazonaws.com/role-arn: arn:aws:iam::111122223333:role/deploy-prod
  rules:
    - serviceAccount: deploy-prod
      projects: ["acme/platform/*"]
      protectedRef: true
      requireIdToken: OAR_ID_TOKEN
"#
    .into();
    let values_path = chart.write_values(&f, &values);
    chart.helm("install", Some(&values_path), true).await;
    chart.ready_manager(None).await;
    let accounts = chart.ns.api::<ServiceAccount>();
    // Before 1.24 a pod of an account also needs the account's token Secret.
    let account =
        oar_testkit::cluster::wait_for(&accounts, "deploy-prod", Duration::from_secs(30), |sa| {
            sa.is_some_and(|sa| sa.secrets.as_ref().is_some_and(|s| !s.is_empty()))
        })
        .await
        .expect("the chart's job ServiceAccount")
        .expect("it exists");
    assert_eq!(
        account
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("eks.amazonaws.com/role-arn"))
            .map(String::as_str),
        Some("arn:aws:iam::111122223333:role/deploy-prod")
    );

    let jobs_pods = PodLog::start(&chart.ns).await;
    let job = |protected: bool| {
        JobSpec::new("acme/platform/api")
            .protected(protected)
            .id_token("OAR_ID_TOKEN", "oar")
            .variable("GIT_STRATEGY", "none")
            .variable("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE", "deploy-prod")
            .script(["echo deploying"])
    };
    let refused = f.gl.enqueue_job(job(false));
    let refused = f.gl.wait_job_finished(refused, JOB_WAIT).await.unwrap();
    let trace = refused.trace_str();
    assert_eq!(refused.state, JobState::Failed, "{trace}");
    assert!(
        trace.contains("(protected_ref: ref \"main\" is not protected)"),
        "{trace}"
    );
    assert_eq!(chart.manager_pod_creates().await, 0);

    let id = f.gl.enqueue_job(job(true));
    let done =
        f.gl.wait_job_finished(id, Duration::from_secs(180))
            .await
            .unwrap();
    let trace = done.trace_str();
    assert_eq!(done.state, JobState::Success, "{trace}");
    let seen = jobs_pods.pods();
    let job_pods: Vec<_> = seen
        .iter()
        .filter(|(n, _)| !n.starts_with(FULLNAME))
        .collect();
    assert_eq!(job_pods.len(), 1, "{seen:?}");
    assert_eq!(job_pods[0].1.as_deref(), Some("deploy-prod"), "{seen:?}");
    // The manager deletes the job's pod (and with it its Secret).
    chart.assert_no_job_objects().await;
    assert_eq!(chart.manager_pod_creates().await, 1);

    chart.helm("uninstall", None, true).await;
    chart.assert_uninstalled().await;
    oar_testkit::cluster::wait_for(&accounts, "deploy-prod", Duration::from_secs(30), |sa| {
        sa.is_none()
    })
    .await
    .expect("helm uninstall removes the job ServiceAccount");
    chart.ns.delete().await.ok();
}
