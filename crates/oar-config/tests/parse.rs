//! Parsing realistic configs into the domain model, warnings, defaults and redaction.

use std::path::Path;
use std::time::Duration;

use oar_config::kubernetes::PullPolicy;
use oar_config::{
    CacheType, ConfigError, Executor, ExposeSecret, LogFormat, S3AuthType, WarningKind, load,
    parse_str,
};
use pretty_assertions::assert_eq;

const REALISTIC: &str = include_str!("fixtures/realistic.toml");

fn parse(text: &str) -> oar_config::Loaded {
    match parse_str(text, Path::new("config.toml")) {
        Ok(loaded) => loaded,
        Err(e) => panic!("{e}"),
    }
}

fn warnings(loaded: &oar_config::Loaded) -> Vec<String> {
    loaded.warnings.iter().map(ToString::to_string).collect()
}

#[test]
fn realistic_config_snapshot() {
    let loaded = parse(REALISTIC);
    insta::assert_debug_snapshot!("realistic_config", loaded.config);
    insta::assert_snapshot!("realistic_warnings", warnings(&loaded).join("\n"));
}

#[test]
fn debug_never_prints_secrets() {
    let loaded = parse(REALISTIC);
    let debug = format!("{:?} {:?}", loaded.config, loaded.warnings);
    for secret in [
        "shellsecrettoken",
        "k8ssecrettoken",
        "s3-super-secret-key",
        "s3-session-token-secret",
        "AKIAEXAMPLEACCESSKEY",
        "k8s-bearer-secret",
        "secret-sentry-key",
    ] {
        assert!(!debug.contains(secret), "Debug output leaks {secret}");
    }
    assert!(debug.contains("REDACTED"));
}

#[test]
fn realistic_config_helpers() {
    let config = parse(REALISTIC).config;
    assert_eq!(config.concurrent, 10);
    assert_eq!(config.check_interval, Duration::from_secs(3));
    assert_eq!(config.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(config.connection_max_age, Some(Duration::from_secs(1800)));
    assert_eq!(config.log_format, Some(LogFormat::Json));

    let shell = config.runner("shell-runner").unwrap();
    assert_eq!(shell.executor, Executor::Shell);
    assert_eq!(shell.short_token(), "shellsecr");
    assert_eq!(shell.token_expires_at, None, "zero time means no expiry");
    assert_eq!(shell.effective_builds_dir(), Some(Path::new("/srv/builds")));
    assert_eq!(shell.feature_flag("FF_USE_FASTZIP"), Some(true));
    assert_eq!(shell.feature_flag("FF_SCRIPT_SECTIONS"), Some(false));
    assert_eq!(shell.feature_flag("FF_NOT_SET"), None);
    assert_eq!(shell.output_limit_bytes(), 8192 * 1024);
    assert_eq!(shell.limit, Some(2));
    assert_eq!(shell.unhealthy_interval, Duration::from_secs(600));
    assert!(shell.kubernetes.is_none());

    let k8s = config.runner("k8s-runner").unwrap();
    assert_eq!(k8s.short_token(), "k8ssecret");
    assert_eq!(k8s.effective_builds_dir(), Some(Path::new("/builds")));
    assert_eq!(k8s.effective_cache_dir(), Some(Path::new("/cache")));
    assert_eq!(k8s.output_limit_bytes(), 4096 * 1024);
    let obtained = k8s.token_obtained_at.unwrap();
    assert_eq!(obtained.unix_timestamp(), 1_717_223_400);

    let cache = k8s.cache.as_ref().unwrap();
    assert_eq!(cache.kind, Some(CacheType::S3));
    let s3 = cache.s3.as_ref().unwrap();
    assert_eq!(s3.server_address.as_deref(), Some("minio.example.com:9000"));
    assert_eq!(
        s3.secret_key.as_ref().unwrap().expose_secret(),
        "s3-super-secret-key"
    );
    assert_eq!(s3.auth_type(), S3AuthType::AccessKey);

    let kube = k8s.kubernetes.as_ref().unwrap();
    assert_eq!(
        kube.pull_policy,
        [PullPolicy::IfNotPresent, PullPolicy::Always]
    );
    assert_eq!(
        kube.retry_backoff_max,
        Duration::from_millis(500),
        "clamped to 500ms"
    );
    assert_eq!(
        kube.logs_base_dir.as_deref(),
        Some("/tmp"),
        "trailing slash stripped"
    );
    assert!(
        kube.namespace_overwrite_allowed
            .as_ref()
            .unwrap()
            .is_match("xx-ci-foo")
    );
    assert_eq!(
        kube.service_account_overwrite_allowed
            .as_ref()
            .map(|r| r.as_str()),
        None
    );
    assert_eq!(kube.services[0].aliases, ["db", "postgres"]);
    assert!(
        kube.service_container_security_context.is_none(),
        "empty table is unset"
    );
    let memory = &kube.build_resources.memory;
    assert!(
        memory.limit.as_ref().unwrap().as_f64()
            < memory
                .limit_overwrite_max_allowed
                .as_ref()
                .unwrap()
                .as_f64()
    );
}

#[test]
fn unknown_keys_are_warnings_with_lines() {
    let loaded = parse(
        "concurrent = 1\nfoo = 2\n\n[[runners]]\n  url = \"https://x\"\n  executor = \"kubernetes\"\n  token = \"t\"\n  [runners.kubernetes]\n    namespace = \"ci\"\n    foo = 1\n",
    );
    assert_eq!(
        warnings(&loaded),
        [
            "config.toml:2: unknown key foo ignored",
            "config.toml:10: unknown key runners[0].kubernetes.foo ignored",
        ]
    );
    assert!(
        loaded
            .warnings
            .iter()
            .all(|w| w.kind == WarningKind::UnknownKey)
    );
    assert_eq!(
        loaded.warnings[1].key.to_string(),
        "runners[0].kubernetes.foo"
    );
}

#[test]
fn foreign_executor_tables_warn_once_each() {
    let loaded = parse(
        r#"
[[runners]]
  name = "r"
  url = "https://gitlab.example.com"
  token = "t"
  executor = "shell"
  [runners.docker]
    image = "alpine"
    volumes = ["/cache"]
  [runners.machine]
    IdleCount = 1
  [runners.referees]
"#,
    );
    assert_eq!(
        warnings(&loaded),
        [
            "config.toml:7: runners[0].docker ignored: Oar has no docker executor",
            "config.toml:10: runners[0].machine ignored: Oar has no docker+machine executor",
            "config.toml:12: runners[0].referees ignored: Oar does not run metrics referees",
        ]
    );
    assert_eq!(
        loaded.warnings[0].kind,
        WarningKind::UnsupportedExecutorTable
    );
}

#[test]
fn cache_keys_match_case_insensitively() {
    for key in [
        "ServerAddress",
        "serveraddress",
        "server_address",
        "SERVER_ADDRESS",
    ] {
        let text = format!(
            "[[runners]]\nurl = \"https://x\"\ntoken = \"t\"\nexecutor = \"shell\"\n\
             [runners.cache]\ntype = \"s3\"\n[runners.cache.S3]\n{key} = \"s3.local\"\nbucket_name = \"b\"\n"
        );
        let loaded = parse(&text);
        assert_eq!(warnings(&loaded), Vec::<String>::new(), "{key}");
        let cache = loaded.config.runners[0].cache.clone().unwrap();
        assert_eq!(cache.kind, Some(CacheType::S3));
        assert_eq!(
            cache.s3.unwrap().server_address.as_deref(),
            Some("s3.local"),
            "{key}"
        );
    }
}

#[test]
fn cache_tables_report_unknown_and_unimplemented_keys() {
    let loaded = parse(
        "[[runners]]\nurl = \"https://x\"\ntoken = \"t\"\nexecutor = \"shell\"\n\
         [runners.cache]\nType = \"gcs\"\nBogus = 1\n[runners.cache.gcs]\nBucketName = \"b\"\n",
    );
    assert_eq!(
        warnings(&loaded),
        [
            "config.toml:6: runners[0].cache.Type gcs is not implemented by Oar (only s3); the \
             distributed cache is disabled for this runner",
            "config.toml:7: unknown key runners[0].cache.Bogus ignored",
        ]
    );
}

#[test]
fn gitlab_runner_register_output_parses_without_warnings() {
    let loaded = parse(include_str!("fixtures/gitlab-register.toml"));
    assert_eq!(warnings(&loaded), Vec::<String>::new());
    let runner = &loaded.config.runners[0];
    let kube = runner.kubernetes.as_ref().unwrap();
    assert_eq!(kube.effective_namespace(), "default");
    assert!(kube.namespace_overwrite_allowed.is_none());
    assert!(kube.build_container_security_context.is_none());
    assert!(kube.dns_config.is_none());
    assert_eq!(runner.cache.as_ref().unwrap().kind, None);
}

#[test]
fn defaults_follow_gitlab_runner() {
    let config = parse(
        "[[runners]]\nurl = \"https://x\"\ntoken = \"glrt-abc\"\nexecutor = \"kubernetes\"\n",
    )
    .config;
    assert_eq!(config.concurrent, 1);
    assert_eq!(config.check_interval, Duration::from_secs(3));
    assert_eq!(config.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(config.connection_max_age, Some(Duration::from_secs(900)));
    let runner = &config.runners[0];
    assert_eq!(runner.request_concurrency, 1);
    assert_eq!(runner.output_limit, 4096);
    assert_eq!(runner.unhealthy_requests_limit, 3);
    assert_eq!(runner.unhealthy_interval, Duration::from_secs(3600));
    assert_eq!(runner.limit, None);
    let kube = runner.kubernetes.as_ref().unwrap();
    assert_eq!(kube.poll_interval, Duration::from_secs(3));
    assert_eq!(kube.poll_timeout, Duration::from_secs(180));
    assert_eq!(kube.cleanup_resources_timeout, Duration::from_secs(300));
    assert_eq!(kube.retry_limit, 5);
    assert_eq!(kube.retry_backoff_max, Duration::from_millis(2000));
    assert!(kube.print_pod_warning_events);
    assert!(kube.pull_policy.is_empty());
}

#[test]
fn ignored_and_suspicious_settings_warn() {
    let loaded = parse(
        r#"concurrent = 0
connection_max_age = "0"

[[runners]]
  url = "https://x"
  executor = "kubernetes"
  pre_clone_script = "echo old"
  [runners.kubernetes]
    terminationGracePeriodSeconds = 30
    dns_policy = "sometimes"
    [runners.kubernetes.autoscaler]
      max_pause_pods = 2
    [runners.kubernetes.pod_security_context]
      seccomp_profile = { type = "Localhost" }
    [[runners.kubernetes.volumes.empty_dir]]
      name = "x"
      mount_path = "/x"
      size_limit = "big"
"#,
    );
    assert_eq!(loaded.config.concurrent, 1);
    assert_eq!(loaded.config.connection_max_age, None);
    let runner = &loaded.config.runners[0];
    assert_eq!(runner.pre_get_sources_script.as_deref(), Some("echo old"));
    insta::assert_snapshot!("ignored_and_suspicious", warnings(&loaded).join("\n"));
}

#[test]
fn load_reads_files_and_reports_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    match load(&path) {
        Err(ConfigError::NotFound { path: missing, .. }) => assert_eq!(missing, path),
        other => panic!("expected NotFound, got {other:?}"),
    }
    fs_err::write(&path, REALISTIC).unwrap();
    let loaded = load(&path).unwrap();
    assert_eq!(loaded.config.runners.len(), 2);
    let first = &loaded.warnings[0];
    assert_eq!(first.location.file, path);
    assert!(
        first
            .to_string()
            .starts_with(&format!("{}:", path.display()))
    );
}
