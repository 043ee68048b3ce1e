//! Harness for end-to-end tests against the real single-node cluster of `scripts/cluster up`
//! (feature `cluster`).
//!
//! The cluster is found through the variables `scripts/cluster env` prints:
//! [`KUBECONFIG_ENV`] (admin kubeconfig) and [`AUDIT_LOG_ENV`] (the API server's audit log).
//! Without them a test is skipped with a loud message, unless [`REQUIRE_ENV`]` = 1` (CI), where
//! a missing cluster fails the test.
//!
//! ```no_run
//! # async fn demo() -> Result<(), oar_testkit::cluster::ClusterError> {
//! use oar_testkit::cluster::TestCluster;
//!
//! let Some(cluster) = TestCluster::from_env().await else { return Ok(()) };
//! let ns = cluster.namespace("my-test").await?; // fresh namespace, `default` SA exists
//! // ... create pods in ns.name() with ns.client() ...
//! let calls = ns.api_calls(Some("oar-admin")).await?;
//! assert!(calls.count("create", "pods") <= 1, "{calls}");
//! ns.delete().await?;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde::de::DeserializeOwned;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// Path of the cluster's admin kubeconfig (printed by `scripts/cluster env`).
pub const KUBECONFIG_ENV: &str = "OAR_TEST_KUBECONFIG";
/// Path of the API server's audit log (printed by `scripts/cluster env`).
pub const AUDIT_LOG_ENV: &str = "OAR_TEST_AUDIT_LOG";
/// When `1`, a missing cluster fails the test instead of skipping it (CI sets it).
pub const REQUIRE_ENV: &str = "OAR_REQUIRE_CLUSTER";

/// Sandbox image of the test cluster (static C `pause`).
pub const PAUSE_IMAGE: &str = "oar.test/pause:3.2";
/// busybox-static with its applet links and an `/etc/passwd`.
pub const BUSYBOX_IMAGE: &str = "oar.test/busybox:latest";
/// Debian bookworm (minbase) with bash, git and CA certificates.
pub const DEBIAN_IMAGE: &str = "oar.test/debian:bookworm";
/// The Debian image plus `/usr/local/bin/oar-helper` as last built by `scripts/images`.
pub const HELPER_IMAGE: &str = "oar.test/oar-helper:dev";

/// User name of the admin kubeconfig's client certificate (as the audit log records it).
pub const ADMIN_USER: &str = "oar-admin";

/// How long the harness waits for the cluster (namespace setup, cleanup, audit flush).
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Name prefix of the objects the harness reads to flush the audit log; not counted.
const AUDIT_MARKER_PREFIX: &str = "oar-audit-marker-";

/// What can go wrong talking to the test cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The kubeconfig's path.
        path: PathBuf,
        /// Why it could not be used.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An API call failed.
    #[error("{context}: {source}")]
    Kube {
        /// What the harness was doing.
        context: String,
        /// The client's error.
        source: kube::Error,
    },
    /// A watch ended or failed while waiting.
    #[error("{context}: {source}")]
    Wait {
        /// What the harness was waiting for.
        context: String,
        /// The watcher's error.
        source: kube::runtime::wait::Error,
    },
    /// A wait ran out of time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What did not happen.
        what: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The audit log could not be read.
    #[error("audit log {path}: {source}")]
    AuditLog {
        /// The audit log's path.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The API server answered something the harness did not expect.
    #[error("{0}")]
    Unexpected(String),
}

fn kube_err(context: impl Into<String>) -> impl FnOnce(kube::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Kube { context, source }
}

/// A running test cluster: an admin client plus the audit log.
#[derive(Clone)]
pub struct TestCluster {
    client: Client,
    config: Config,
    kubeconfig: PathBuf,
    audit_log: PathBuf,
    /// The API server is older than 1.24: pods need their ServiceAccount's token Secret.
    legacy_token_secrets: bool,
}

impl fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCluster")
            .field("url", &self.config.cluster_url)
            .field("kubeconfig", &self.kubeconfig)
            .field("audit_log", &self.audit_log)
            .finish()
    }
}

/// Whether the environment demands a cluster ([`REQUIRE_ENV`] = `1`).
pub fn cluster_required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v.trim() == "1")
}

impl TestCluster {
    /// The cluster named by [`KUBECONFIG_ENV`] and [`AUDIT_LOG_ENV`].
    ///
    /// Returns `None` after printing a loud skip message when they are unset, so a test does
    /// `let Some(cluster) = TestCluster::from_env().await else { return };`.
    ///
    /// # Panics
    ///
    /// When the variables are unset and [`REQUIRE_ENV`] is `1`, or when they are set but the
    /// cluster can't be reached: a configured cluster that does not answer is a failure.
    pub async fn from_env() -> Option<TestCluster> {
        let kubeconfig = std::env::var_os(KUBECONFIG_ENV).filter(|v| !v.is_empty());
        let audit_log = std::env::var_os(AUDIT_LOG_ENV).filter(|v| !v.is_empty());
        let (Some(kubeconfig), Some(audit_log)) = (kubeconfig, audit_log) else {
            let msg = format!(
                "{KUBECONFIG_ENV} and {AUDIT_LOG_ENV} must name the test cluster: run \
                 `scripts/cluster up && eval \"$(scripts/cluster env)\"` (and `scripts/images`)"
            );
            if cluster_required() {
                panic!("{REQUIRE_ENV}=1 but no test cluster: {msg}");
            }
            eprintln!(
                "\n==================== SKIPPED: needs the test cluster ====================\n\
                 {msg}\n\
                 ===========================================================================\n"
            );
            return None;
        };
        match TestCluster::connect(Path::new(&kubeconfig), Path::new(&audit_log)).await {
            Ok(cluster) => Some(cluster),
            Err(e) => panic!(
                "test cluster from {KUBECONFIG_ENV}={} unreachable: {e} (is `scripts/cluster \
                 status` ok?)",
                Path::new(&kubeconfig).display()
            ),
        }
    }

    /// Connects with the admin kubeconfig at `kubeconfig` and checks that the API server answers.
    pub async fn connect(kubeconfig: &Path, audit_log: &Path) -> Result<TestCluster, ClusterError> {
        let config = load_config(kubeconfig).await?;
        let client = Client::try_from(config.clone()).map_err(kube_err("building the client"))?;
        let version = client
            .apiserver_version()
            .await
            .map_err(kube_err("GET /version"))?;
        let minor: u32 = version
            .minor
            .trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .unwrap_or(u32::MAX);
        let legacy_token_secrets = version.major == "1" && minor < 24;
        if !audit_log.exists() {
            return Err(ClusterError::AuditLog {
                path: audit_log.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        Ok(TestCluster {
            client,
            config,
            kubeconfig: kubeconfig.to_owned(),
            audit_log: audit_log.to_owned(),
            legacy_token_secrets,
        })
    }

    /// A client authenticated as the cluster admin (`system:masters`, user [`ADMIN_USER`]).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The admin client's configuration (a base for clients with other credentials).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Path of the API server's audit log.
    pub fn audit_log_path(&self) -> &Path {
        &self.audit_log
    }

    /// Creates a fresh namespace `<prefix>-<unique>` and waits (with a watch) until its
    /// `default` ServiceAccount exists, so pods can be created in it.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, ClusterError> {
        let name = unique_name(prefix);
        let audit_offset = std::fs::metadata(&self.audit_log)
            .map(|m| m.len())
            .map_err(|source| ClusterError::AuditLog {
                path: self.audit_log.clone(),
                source,
            })?;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("oar.test/harness".to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .map_err(kube_err(format!("creating namespace {name}")))?;
        let handle = TestNamespace {
            cluster: self.clone(),
            name,
            audit_offset,
            deleted: false,
        };
        // Before 1.24 the ServiceAccount admission also wants the account's token Secret,
        // which the tokens controller adds to `secrets` a moment after creating the account.
        let legacy_tokens = self.legacy_token_secrets;
        let accounts: Api<ServiceAccount> = handle.api();
        wait_for(
            &accounts,
            "default",
            SETUP_TIMEOUT,
            |sa: Option<&ServiceAccount>| {
                sa.is_some_and(|sa| {
                    !legacy_tokens || sa.secrets.as_ref().is_some_and(|s| !s.is_empty())
                })
            },
        )
        .await?;
        Ok(handle)
    }
}

async fn load_config(path: &Path) -> Result<Config, ClusterError> {
    let wrap = |source: Box<dyn std::error::Error + Send + Sync>| ClusterError::Kubeconfig {
        path: path.to_owned(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| wrap(Box::new(e)))?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| wrap(Box::new(e)))
}

fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    clean.truncate(40);
    let clean = clean.trim_matches('-');
    let clean = if clean.is_empty() { "test" } else { clean };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{clean}-{:x}{:x}{n}",
        std::process::id() % 0xfff,
        nanos % 0xfffff
    )
}

/// Waits with a watch (no polling) until `cond` holds for the object `name` (`None` when it does
/// not exist), at most `timeout`; returns the object as last seen.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    cond: impl Fn(Option<&K>) -> bool,
) -> Result<Option<K>, ClusterError>
where
    K: Resource + Clone + fmt::Debug + Send + DeserializeOwned + 'static,
    K::DynamicType: Default,
{
    let what = format!(
        "{} {name} ({})",
        K::kind(&K::DynamicType::default()),
        api.resource_url()
    );
    match tokio::time::timeout(
        timeout,
        kube::runtime::wait::await_condition(api.clone(), name, cond),
    )
    .await
    {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(source)) => Err(ClusterError::Wait {
            context: format!("watching {what}"),
            source,
        }),
        Err(_) => Err(ClusterError::Timeout { what, timeout }),
    }
}

/// A namespace for one test. Delete it with [`TestNamespace::delete`]; if the test panics
/// first, dropping it deletes it (blocking the dropping thread for a moment).
#[derive(Debug)]
pub struct TestNamespace {
    cluster: TestCluster,
    name: String,
    audit_offset: u64,
    deleted: bool,
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin client.
    pub fn client(&self) -> Client {
        self.cluster.client()
    }

    /// The cluster this namespace is in.
    pub fn cluster(&self) -> &TestCluster {
        &self.cluster
    }

    /// An admin [`Api`] for namespaced resources `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.cluster.client(), &self.name)
    }

    /// Waits with a watch until the pod `name` satisfies `cond`; returns it.
    pub async fn wait_pod(
        &self,
        name: &str,
        timeout: Duration,
        cond: impl Fn(&Pod) -> bool,
    ) -> Result<Pod, ClusterError> {
        let pods: Api<Pod> = self.api();
        wait_for(&pods, name, timeout, |p: Option<&Pod>| p.is_some_and(&cond))
            .await?
            .ok_or_else(|| ClusterError::Unexpected(format!("pod {name} vanished")))
    }

    /// Creates ServiceAccount `name`, a Role `name` with `rules` and a RoleBinding between them,
    /// and returns a client authenticated ONLY with a token of that ServiceAccount (no client
    /// certificate, which would win over the token), its default namespace set to this one.
    ///
    /// Returns once the API server's authorizer has seen the binding.
    pub async fn service_account_client(
        &self,
        name: &str,
        rules: Vec<PolicyRule>,
    ) -> Result<Client, ClusterError> {
        let token = self.service_account_token(name, rules).await?;
        let mut config = self.cluster.config.clone();
        config.auth_info = AuthInfo {
            token: Some(secrecy::SecretString::from(token)),
            ..AuthInfo::default()
        };
        config.default_namespace = self.name.clone();
        Client::try_from(config).map_err(kube_err("building the ServiceAccount client"))
    }

    /// Like [`TestNamespace::service_account_client`], but writes a kubeconfig to `path` for a
    /// process to use (e.g. through `KUBECONFIG`): the admin kubeconfig's cluster (server and
    /// CA), a user holding ONLY the ServiceAccount's token (no client certificate, which would
    /// win over the token), and this namespace as the context's default. Returns the user name
    /// the audit log records for it ([`service_account_user`]).
    pub async fn service_account_kubeconfig(
        &self,
        name: &str,
        rules: Vec<PolicyRule>,
        path: &Path,
    ) -> Result<String, ClusterError> {
        self.write_service_account_kubeconfig(name, rules, path, false)
            .await
    }

    /// Like [`TestNamespace::service_account_kubeconfig`], but `rules` are granted in every
    /// namespace: a ClusterRole and a ClusterRoleBinding named `<namespace>-<name>`, owned by
    /// this namespace, so the garbage collector deletes them with it.
    pub async fn service_account_kubeconfig_cluster_wide(
        &self,
        name: &str,
        rules: Vec<PolicyRule>,
        path: &Path,
    ) -> Result<String, ClusterError> {
        self.write_service_account_kubeconfig(name, rules, path, true)
            .await
    }

    async fn write_service_account_kubeconfig(
        &self,
        name: &str,
        rules: Vec<PolicyRule>,
        path: &Path,
        cluster_wide: bool,
    ) -> Result<String, ClusterError> {
        let token = self
            .service_account_token_in(name, rules, cluster_wide)
            .await?;
        let admin_path = &self.cluster.kubeconfig;
        let wrap = |source: Box<dyn std::error::Error + Send + Sync>| ClusterError::Kubeconfig {
            path: admin_path.clone(),
            source,
        };
        let admin = Kubeconfig::read_from(admin_path).map_err(|e| wrap(Box::new(e)))?;
        let cluster_name = admin
            .current_context
            .as_deref()
            .and_then(|cur| admin.contexts.iter().find(|c| c.name == cur))
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .or_else(|| admin.clusters.first().map(|c| c.name.clone()))
            .unwrap_or_default();
        let cluster = admin
            .clusters
            .iter()
            .find(|c| c.name == cluster_name)
            .ok_or_else(|| wrap(format!("no cluster {cluster_name:?}").into()))?;
        let cluster = serde_json::to_value(cluster).map_err(|e| wrap(Box::new(e)))?;
        let user = format!("sa-{name}");
        // JSON is YAML: any kubeconfig reader takes it.
        let doc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{ "name": user, "user": { "token": token } }],
            "contexts": [{
                "name": user,
                "context": { "cluster": cluster_name, "user": user, "namespace": self.name },
            }],
            "current-context": user,
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| wrap(Box::new(e)))?;
        std::fs::write(path, text).map_err(|e| ClusterError::Kubeconfig {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        Ok(service_account_user(&self.name, name))
    }

    /// Creates ServiceAccount `name`, a Role `name` with `rules` and a RoleBinding between them,
    /// and returns a token of that ServiceAccount (valid for an hour), once the API server's
    /// authorizer has seen the binding.
    pub async fn service_account_token(
        &self,
        name: &str,
        rules: Vec<PolicyRule>,
    ) -> Result<String, ClusterError> {
        self.service_account_token_in(name, rules, false).await
    }

    async fn service_account_token_in(
        &self,
        name: &str,
        rules: Vec<PolicyRule>,
        cluster_wide: bool,
    ) -> Result<String, ClusterError> {
        let pp = PostParams::default();
        let meta = || ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.name.clone()),
            ..ObjectMeta::default()
        };
        let first_rule = rules.first().cloned();
        let subject = Subject {
            kind: "ServiceAccount".to_owned(),
            name: name.to_owned(),
            namespace: Some(self.name.clone()),
            ..Subject::default()
        };
        let client = self.cluster.client();
        let (role_meta, role_kind) = if cluster_wide {
            let namespace = Api::<Namespace>::all(client.clone())
                .get(&self.name)
                .await
                .map_err(kube_err(format!("reading namespace {}", self.name)))?;
            // Owned by the namespace: deleted with it, like everything else of the test.
            let owner = OwnerReference {
                api_version: "v1".to_owned(),
                kind: "Namespace".to_owned(),
                name: self.name.clone(),
                uid: namespace.metadata.uid.unwrap_or_default(),
                ..OwnerReference::default()
            };
            let meta = ObjectMeta {
                name: Some(format!("{}-{name}", self.name)),
                owner_references: Some(vec![owner]),
                ..ObjectMeta::default()
            };
            Api::<ClusterRole>::all(client.clone())
                .create(
                    &pp,
                    &ClusterRole {
                        metadata: meta.clone(),
                        rules: Some(rules),
                        ..ClusterRole::default()
                    },
                )
                .await
                .map_err(kube_err(format!("creating ClusterRole for {name}")))?;
            (meta, "ClusterRole")
        } else {
            self.api::<Role>()
                .create(
                    &pp,
                    &Role {
                        metadata: meta(),
                        rules: Some(rules),
                    },
                )
                .await
                .map_err(kube_err(format!("creating Role {name}")))?;
            (meta(), "Role")
        };
        let role_ref = RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: role_kind.to_owned(),
            name: role_meta.name.clone().unwrap_or_default(),
        };
        if cluster_wide {
            Api::<ClusterRoleBinding>::all(client)
                .create(
                    &pp,
                    &ClusterRoleBinding {
                        metadata: role_meta,
                        role_ref,
                        subjects: Some(vec![subject]),
                    },
                )
                .await
                .map_err(kube_err(format!("creating ClusterRoleBinding for {name}")))?;
        } else {
            self.api::<RoleBinding>()
                .create(
                    &pp,
                    &RoleBinding {
                        metadata: role_meta,
                        role_ref,
                        subjects: Some(vec![subject]),
                    },
                )
                .await
                .map_err(kube_err(format!("creating RoleBinding {name}")))?;
        }
        let accounts: Api<ServiceAccount> = self.api();
        accounts
            .create(
                &pp,
                &ServiceAccount {
                    metadata: meta(),
                    ..ServiceAccount::default()
                },
            )
            .await
            .map_err(kube_err(format!("creating ServiceAccount {name}")))?;
        let token = accounts
            .create_token_request(
                name,
                &pp,
                &TokenRequest {
                    spec: TokenRequestSpec {
                        expiration_seconds: Some(3600),
                        ..TokenRequestSpec::default()
                    },
                    ..TokenRequest::default()
                },
            )
            .await
            .map_err(kube_err(format!(
                "requesting a token for ServiceAccount {name}"
            )))?
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ClusterError::Unexpected(format!("empty token for {name}")))?;

        if let Some(rule) = first_rule {
            self.wait_authorized(&service_account_user(&self.name, name), &rule)
                .await?;
        }
        Ok(token)
    }

    /// The RBAC authorizer learns about new bindings through a watch: ask it (one
    /// SubjectAccessReview per answer, no sleeping) until it allows the rule's first verb.
    async fn wait_authorized(&self, user: &str, rule: &PolicyRule) -> Result<(), ClusterError> {
        let (Some(verb), Some(resource)) = (
            rule.verbs.first(),
            rule.resources.as_ref().and_then(|r| r.first()),
        ) else {
            return Ok(());
        };
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r.to_owned(), Some(s.to_owned())),
            None => (resource.clone(), None),
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.to_owned()),
                groups: Some(vec![
                    "system:serviceaccounts".to_owned(),
                    format!("system:serviceaccounts:{}", self.name),
                    "system:authenticated".to_owned(),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(self.name.clone()),
                    verb: Some(verb.clone()),
                    group: rule.api_groups.as_ref().and_then(|g| g.first()).cloned(),
                    resource: Some(resource),
                    subresource,
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let reviews: Api<SubjectAccessReview> = Api::all(self.cluster.client());
        let deadline = Instant::now() + SETUP_TIMEOUT;
        loop {
            let answer =
                tokio::time::timeout_at(deadline, reviews.create(&PostParams::default(), &review))
                    .await
                    .map_err(|_| ClusterError::Timeout {
                        what: format!("RBAC to allow {user} to {verb}"),
                        timeout: SETUP_TIMEOUT,
                    })?
                    .map_err(kube_err("creating a SubjectAccessReview"))?;
            if answer.status.is_some_and(|s| s.allowed) {
                return Ok(());
            }
            tokio::task::yield_now().await;
        }
    }

    /// API calls recorded in the audit log for this namespace since it was created, optionally
    /// only those of `user` (e.g. [`ADMIN_USER`] or [`service_account_user`]).
    ///
    /// Flushes first: reads a marker object and waits (inotify, with a timeout) until the audit
    /// log shows that read, so every call answered before this one is counted.
    pub async fn api_calls(&self, user: Option<&str>) -> Result<ApiCalls, ClusterError> {
        let marker = unique_name(AUDIT_MARKER_PREFIX);
        let path = self.cluster.audit_log.clone();
        let watcher = AuditWatcher::new(&path)?;
        let configmaps: Api<ConfigMap> = self.api();
        // A 404 is expected: only the audit event matters.
        let _ = configmaps.get_opt(&marker).await;
        let ns = self.name.clone();
        let offset = self.audit_offset;
        let events = watcher
            .wait_until(SETUP_TIMEOUT, || {
                let events = read_audit_log(&path, offset)?;
                let seen = events.iter().any(|e| {
                    e.namespace.as_deref() == Some(&ns) && e.name.as_deref() == Some(&marker)
                });
                Ok(seen.then_some(events))
            })
            .await?;
        Ok(ApiCalls::new(
            events
                .into_iter()
                .filter(|e| e.namespace.as_deref() == Some(self.name.as_str()))
                .filter(|e| {
                    !e.name
                        .as_deref()
                        .is_some_and(|n| n.starts_with(AUDIT_MARKER_PREFIX))
                })
                .filter(|e| user.is_none_or(|u| e.user == u)),
        ))
    }

    /// Deletes the namespace's pods with grace period 0, then the namespace; does not wait for
    /// the namespace to go (that takes seconds).
    pub async fn delete(mut self) -> Result<(), ClusterError> {
        self.deleted = true;
        delete_namespace(self.cluster.client(), &self.name).await
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // The test's runtime may be the one we are dropped on: clean up from a thread with its
        // own runtime and its own client.
        let config = self.cluster.config.clone();
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let client = Client::try_from(config)?;
                tokio::time::timeout(SETUP_TIMEOUT, delete_namespace(client, &name)).await??;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("oar-testkit: deleting namespace {}: {e}", self.name),
            Err(_) => eprintln!("oar-testkit: deleting namespace {} panicked", self.name),
        }
    }
}

async fn delete_namespace(client: Client, name: &str) -> Result<(), ClusterError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), name);
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete_collection(&now, &ListParams::default())
        .await
        .map_err(kube_err(format!("deleting the pods of namespace {name}")))?;
    let namespaces: Api<Namespace> = Api::all(client);
    match namespaces.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(kube_err(format!("deleting namespace {name}"))(e)),
    }
}

/// The user name the API server gives ServiceAccount `name` of `namespace`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// One API request as the audit log recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// The request's audit ID (one per request).
    pub audit_id: String,
    /// The Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// The authenticated user name.
    pub user: String,
    /// The resource, with its subresource when there is one: `pods`, `pods/log`, `pods/exec`.
    pub resource: String,
    /// The object's namespace, if namespaced.
    pub namespace: Option<String>,
    /// The object's name, if the request named one.
    pub name: Option<String>,
    /// The HTTP status of the answer, once known.
    pub code: Option<u16>,
    /// The request URI.
    pub request_uri: String,
}

/// Reads the audit log from byte `offset`, one event per request (a watch logs two stages).
///
/// Requests without an object (health checks, discovery) are left out.
pub fn read_audit_log(path: &Path, offset: u64) -> Result<Vec<AuditEvent>, ClusterError> {
    let io_err = |source| ClusterError::AuditLog {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    let mut events: Vec<AuditEvent> = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(io_err)?;
        // The API server may be writing the last line right now.
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let Some(object) = v.get("objectRef") else {
            continue;
        };
        let s =
            |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let resource = s(object, "resource").unwrap_or_default();
        let resource = match s(object, "subresource") {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource,
        };
        let event = AuditEvent {
            audit_id: s(&v, "auditID").unwrap_or_default(),
            verb: s(&v, "verb").unwrap_or_default(),
            user: v
                .get("user")
                .and_then(|u| s(u, "username"))
                .unwrap_or_default(),
            resource,
            namespace: s(object, "namespace"),
            name: s(object, "name"),
            code: v
                .get("responseStatus")
                .and_then(|r| r.get("code"))
                .and_then(|c| c.as_u64())
                .and_then(|c| u16::try_from(c).ok()),
            request_uri: s(&v, "requestURI").unwrap_or_default(),
        };
        match by_id.get(&event.audit_id) {
            Some(&i) => {
                if event.code.is_some() {
                    events[i].code = event.code;
                }
            }
            None => {
                by_id.insert(event.audit_id.clone(), events.len());
                events.push(event);
            }
        }
    }
    Ok(events)
}

/// API calls counted from the audit log.
#[derive(Debug, Clone, Default)]
pub struct ApiCalls {
    events: Vec<AuditEvent>,
}

impl ApiCalls {
    /// Collects `events`.
    pub fn new(events: impl IntoIterator<Item = AuditEvent>) -> ApiCalls {
        ApiCalls {
            events: events.into_iter().collect(),
        }
    }

    /// How many `verb` calls on `resource` (`pods`, `pods/log`, `secrets`, ...).
    pub fn count(&self, verb: &str, resource: &str) -> usize {
        self.events
            .iter()
            .filter(|e| e.verb == verb && e.resource == resource)
            .count()
    }

    /// All calls.
    pub fn total(&self) -> usize {
        self.events.len()
    }

    /// Counts per (verb, resource).
    pub fn by_verb_and_resource(&self) -> BTreeMap<(String, String), usize> {
        let mut counts = BTreeMap::new();
        for e in &self.events {
            *counts
                .entry((e.verb.clone(), e.resource.clone()))
                .or_insert(0) += 1;
        }
        counts
    }

    /// The calls, in log order.
    pub fn events(&self) -> &[AuditEvent] {
        &self.events
    }
}

impl fmt::Display for ApiCalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} API calls:", self.total())?;
        for ((verb, resource), n) in self.by_verb_and_resource() {
            writeln!(f, "  {n:4} {verb} {resource}")?;
        }
        Ok(())
    }
}

/// Wakes up when the audit log is written to (inotify), so waiting on it needs no sleeping.
struct AuditWatcher {
    fd: AsyncFd<OwnedFd>,
    path: PathBuf,
}

impl AuditWatcher {
    fn new(path: &Path) -> Result<AuditWatcher, ClusterError> {
        let io_err = |e: nix::Error| ClusterError::AuditLog {
            path: path.to_owned(),
            source: std::io::Error::from(e),
        };
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(io_err)?;
        inotify
            .add_watch(path, AddWatchFlags::IN_MODIFY)
            .map_err(io_err)?;
        // `new` is deprecated because an arbitrary `AsRawFd` may change or close its descriptor
        // while registered; an `OwnedFd` owned by the `AsyncFd` can do neither (the sound
        // replacement, `register`, is `unsafe`, which this workspace forbids).
        #[allow(deprecated)]
        let fd = AsyncFd::new(OwnedFd::from(inotify)).map_err(|source| ClusterError::AuditLog {
            path: path.to_owned(),
            source,
        })?;
        Ok(AuditWatcher {
            fd,
            path: path.to_owned(),
        })
    }

    /// Calls `check` now and after each write to the file until it returns `Some`.
    async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut() -> Result<Option<T>, ClusterError>,
    ) -> Result<T, ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = check()? {
                return Ok(found);
            }
            let mut guard = tokio::time::timeout_at(deadline, self.fd.readable())
                .await
                .map_err(|_| ClusterError::Timeout {
                    what: format!("the audit log {} to record a request", self.path.display()),
                    timeout,
                })?
                .map_err(|source| ClusterError::AuditLog {
                    path: self.path.clone(),
                    source,
                })?;
            let mut buf = [0u8; 4096];
            while nix::unistd::read(guard.get_inner(), &mut buf).is_ok_and(|n| n > 0) {}
            guard.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_dns_labels() {
        let a = unique_name("Smoke Test/ä");
        let b = unique_name("Smoke Test/ä");
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert!(n.len() <= 63, "{n}");
            assert!(n.starts_with("smoke-test"), "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
        }
    }

    #[test]
    fn audit_log_counts_one_event_per_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let line = |id: &str, stage: &str, verb: &str, res: &str, sub: Option<&str>, code: u16| {
            let mut obj = serde_json::json!({"resource": res, "namespace": "ns1", "name": "p"});
            if let Some(sub) = sub {
                obj["subresource"] = sub.into();
            }
            serde_json::json!({
                "auditID": id, "stage": stage, "verb": verb, "requestURI": "/x",
                "user": {"username": "u1"}, "objectRef": obj,
                "responseStatus": {"code": code},
            })
            .to_string()
        };
        let log = [
            line("1", "ResponseComplete", "create", "pods", None, 201),
            line("2", "ResponseStarted", "watch", "pods", None, 200),
            line("3", "ResponseComplete", "get", "pods", Some("log"), 200),
            line("2", "ResponseComplete", "watch", "pods", None, 200),
            r#"{"auditID":"4","verb":"get","requestURI":"/healthz"}"#.to_owned(),
            "{\"truncated".to_owned(),
        ]
        .join("\n");
        std::fs::write(&path, log).unwrap();
        let calls = ApiCalls::new(read_audit_log(&path, 0).unwrap());
        assert_eq!(calls.total(), 3, "{calls}");
        assert_eq!(calls.count("watch", "pods"), 1);
        assert_eq!(calls.count("get", "pods/log"), 1);
        assert_eq!(calls.count("create", "pods"), 1);
        assert_eq!(calls.events()[0].user, "u1");
    }
}
