//! Editing keeps comments and formatting, writes atomically with mode 0600.

use std::path::Path;

use oar_config::kubernetes::PullPolicy;
use oar_config::{
    ConfigDocument, ConfigError, Executor, ExposeSecret, NewKubernetes, NewRunner, RunnerSelector,
    SecretString, load,
};
use pretty_assertions::assert_eq;
use time::macros::datetime;

fn k8s_runner() -> NewRunner {
    let mut runner = NewRunner::new(
        "k8s",
        "https://gitlab.example.com/",
        43,
        SecretString::from("glrt-t1_newk8stoken999"),
        datetime!(2024-07-01 12:00:00.123 +02:00),
        Executor::Kubernetes,
    );
    runner.token_expires_at = Some(datetime!(2025-07-01 10:00:00 UTC));
    runner.request_concurrency = Some(2);
    runner.environment = vec!["FOO=bar".to_owned()];
    runner.kubernetes = Some(NewKubernetes {
        namespace: Some("ci".to_owned()),
        image: Some("alpine:3.20".to_owned()),
        pull_policy: vec![PullPolicy::IfNotPresent],
        ..NewKubernetes::default()
    });
    runner
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs_err::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn edits_keep_comments_and_formatting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    fs_err::write(&path, include_str!("fixtures/edit-before.toml")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    let mut doc = ConfigDocument::open_or_default(&path).unwrap();
    let names: Vec<String> = doc.runners().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["old-shell", "to-remove"]);

    assert_eq!(doc.remove_runners(|r| r.name == "to-remove"), 1);
    doc.set_token(
        RunnerSelector::Name("old-shell"),
        &SecretString::from("glrt-rotated222222"),
        datetime!(2024-06-01 00:00:00 UTC),
        None,
    )
    .unwrap();
    doc.append_runner(&k8s_runner()).unwrap();
    doc.save().unwrap();

    let written = fs_err::read_to_string(&path).unwrap();
    insta::assert_snapshot!("edited_config", written);
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);

    let loaded = load(&path).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let runners = &loaded.config.runners;
    assert_eq!(runners.len(), 2);
    assert_eq!(runners[0].token.expose_secret(), "glrt-rotated222222");
    assert_eq!(runners[0].token_expires_at, None);
    assert_eq!(runners[1].short_token(), "newk8stok");
    assert_eq!(
        runners[1].token_obtained_at,
        Some(datetime!(2024-07-01 10:00:00 UTC))
    );
    let kube = runners[1].kubernetes.as_ref().unwrap();
    assert_eq!(kube.effective_namespace(), "ci");
    assert_eq!(kube.pull_policy, [PullPolicy::IfNotPresent]);
}

#[test]
fn new_file_gets_gitlab_globals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etc/oar/config.toml");
    let mut doc = ConfigDocument::open_or_default(&path).unwrap();
    assert!(doc.runners().is_empty());
    let mut shell = NewRunner::new(
        "shell",
        "https://gitlab.example.com/",
        7,
        SecretString::from("glrt-shelltoken"),
        datetime!(2024-07-01 10:00:00 UTC),
        Executor::Shell,
    );
    shell.limit = Some(1);
    shell.builds_dir = Some("/srv/builds".to_owned());
    shell.tls_ca_file = Some("/etc/oar/ca.pem".into());
    doc.append_runner(&shell).unwrap();
    doc.append_runner(&k8s_runner()).unwrap();
    doc.validate().unwrap();
    doc.save().unwrap();
    insta::assert_snapshot!("new_config", fs_err::read_to_string(&path).unwrap());
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    assert_eq!(load(&path).unwrap().config.runners.len(), 2);
}

#[test]
fn selecting_runners() {
    let text = "[[runners]]\nname = \"a\"\n[[runners]]\nname = \"a\"\n[[runners]]\nname = \"b\"\n";
    let mut doc = ConfigDocument::parse(text, Path::new("config.toml")).unwrap();
    let token = SecretString::from("glrt-x");
    let now = datetime!(2024-01-01 00:00:00 UTC);
    let err = doc
        .set_token(RunnerSelector::Name("a"), &token, now, None)
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::AmbiguousRunner { count: 2, .. }),
        "{err}"
    );
    let err = doc
        .set_token(RunnerSelector::Name("c"), &token, now, None)
        .unwrap_err();
    assert_eq!(err.to_string(), "config.toml: no runner named \"c\"");
    let err = doc
        .set_token(RunnerSelector::Index(3), &token, now, None)
        .unwrap_err();
    assert_eq!(err.to_string(), "config.toml: no runner at index 3");
    doc.set_token(RunnerSelector::Index(1), &token, now, None)
        .unwrap();
    assert_eq!(doc.runners()[1].token.expose_secret(), "glrt-x");
    assert_eq!(doc.runners()[0].token.expose_secret(), "");
}

#[test]
fn debug_hides_tokens_and_bad_documents_are_rejected() {
    let doc = ConfigDocument::parse(
        "[[runners]]\nname = \"a\"\ntoken = \"glrt-verysecret\"\n",
        Path::new("config.toml"),
    )
    .unwrap();
    assert!(!format!("{doc:?}").contains("verysecret"));
    assert!(doc.to_string().contains("verysecret"));

    let err = ConfigDocument::parse("runners = 1", Path::new("config.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.toml: runners must be an array of tables ([[runners]])"
    );
    let err = ConfigDocument::parse("a = ", Path::new("config.toml")).unwrap_err();
    assert!(
        err.to_string().starts_with("config.toml:1:5: invalid TOML"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    assert!(matches!(
        ConfigDocument::open(&missing),
        Err(ConfigError::NotFound { .. })
    ));
}

#[test]
fn a_template_gives_globals_and_the_runners_base_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let template = ConfigDocument::parse(
        r#"
concurrent = 25
check_interval = 3
listen_address = ":9252"

[[runners]]
  # from the chart's runners.config
  output_limit = 8192
  [runners.kubernetes]
    namespace = "from-template"
    poll_timeout = 600
    cpu_limit = "2"
  [runners.cache]
    Type = "s3"
    Shared = true
"#,
        &dir.path().join("config.template.toml"),
    )
    .unwrap();
    let path = dir.path().join("config.toml");
    let mut doc = ConfigDocument::open_or_default(&path).unwrap();
    doc.append_runner_with_template(&k8s_runner(), &template)
        .unwrap();
    // A second runner from the same template lands after the first, whole.
    let mut second = k8s_runner();
    second.name = "k8s-2".into();
    doc.append_runner_with_template(&second, &template).unwrap();
    doc.save().unwrap();
    let loaded = load(&path).unwrap();
    // A new document has concurrent = 1 already: the file's own values are kept.
    assert_eq!(loaded.config.concurrent, 1);
    assert_eq!(loaded.config.listen_address.as_deref(), Some(":9252"));
    let r = &loaded.config.runners[0];
    assert_eq!(r.name, "k8s");
    assert_eq!(r.token.expose_secret(), "glrt-t1_newk8stoken999");
    assert_eq!(r.output_limit, 8192);
    let k = r.kubernetes.as_ref().unwrap();
    // The flag's namespace wins; the template's other keys stay.
    assert_eq!(k.namespace.as_deref(), Some("ci"));
    assert_eq!(k.poll_timeout, std::time::Duration::from_secs(600));
    assert_eq!(k.image.as_deref(), Some("alpine:3.20"));
    assert!(r.cache.as_ref().unwrap().shared);
    assert_eq!(loaded.config.runners[1].name, "k8s-2");
    assert_eq!(
        loaded.config.runners[1]
            .kubernetes
            .as_ref()
            .unwrap()
            .poll_timeout,
        std::time::Duration::from_secs(600)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("# from the chart's runners.config"), "{text}");
}

/// `register --cache-s3-access-key-file …` as the chart runs it: the keys land in the
/// template's `[runners.cache.s3]`, next to its bucket settings, replacing a key of the same
/// name in another case; with no template they get a `[runners.cache.s3]` of their own.
#[test]
fn cache_credentials_are_merged_into_the_templates_s3_table() {
    let dir = tempfile::tempdir().unwrap();
    let template = ConfigDocument::parse(
        r#"
[[runners]]
  [runners.kubernetes]
    namespace = "ci"
  [runners.cache]
    Type = "s3"
    Shared = true
    [runners.cache.s3]
      ServerAddress = "s3.example.com"
      BucketName = "ci-cache"
      access_key = "from-the-template"
"#,
        &dir.path().join("config.template.toml"),
    )
    .unwrap();
    let mut runner = k8s_runner();
    runner.cache_s3_access_key = Some(SecretString::from("AKIAEXAMPLE"));
    runner.cache_s3_secret_key = Some(SecretString::from("secret/with+chars"));

    let path = dir.path().join("config.toml");
    let mut doc = ConfigDocument::open_or_default(&path).unwrap();
    doc.append_runner_with_template(&runner, &template).unwrap();
    doc.save().unwrap();
    let text = fs_err::read_to_string(&path).unwrap();
    assert!(!text.contains("from-the-template"), "{text}");
    assert_eq!(text.matches("[runners.cache.s3]").count(), 1, "{text}");
    let loaded = load(&path).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let cache = loaded.config.runners[0].cache.as_ref().unwrap();
    assert!(cache.shared);
    let s3 = cache.s3.as_ref().unwrap();
    assert_eq!(s3.server_address.as_deref(), Some("s3.example.com"));
    assert_eq!(s3.bucket_name.as_deref(), Some("ci-cache"));
    assert_eq!(
        s3.access_key.as_ref().unwrap().expose_secret(),
        "AKIAEXAMPLE"
    );
    assert_eq!(
        s3.secret_key.as_ref().unwrap().expose_secret(),
        "secret/with+chars"
    );
    // The runner's own keys still win over the template's.
    let kube = loaded.config.runners[0].kubernetes.as_ref().unwrap();
    assert_eq!(kube.namespace.as_deref(), Some("ci"));

    // An inline `s3 = { … }` table of the template is merged the same way.
    let inline = ConfigDocument::parse(
        "[[runners]]\n  [runners.cache]\n    Type = \"s3\"\n    S3 = { BucketName = \"inline-bucket\", SecretKey = \"old\" }\n",
        &dir.path().join("inline.toml"),
    )
    .unwrap();
    let mut doc = ConfigDocument::parse("", &dir.path().join("inline-config.toml")).unwrap();
    doc.append_runner_with_template(&runner, &inline).unwrap();
    let loaded = doc.validate().unwrap();
    let s3 = loaded.config.runners[0]
        .cache
        .as_ref()
        .unwrap()
        .s3
        .clone()
        .unwrap();
    assert_eq!(s3.bucket_name.as_deref(), Some("inline-bucket"));
    assert_eq!(s3.access_key.unwrap().expose_secret(), "AKIAEXAMPLE");
    assert_eq!(s3.secret_key.unwrap().expose_secret(), "secret/with+chars");

    // Without a template: a [runners.cache.s3] table with just the keys.
    let mut doc = ConfigDocument::parse("", &dir.path().join("plain.toml")).unwrap();
    doc.append_runner(&runner).unwrap();
    let text = doc.to_string();
    assert!(
        text.contains("  [runners.cache.s3]\n      AccessKey = \"AKIAEXAMPLE\"\n"),
        "{text}"
    );
    assert!(!text.contains("[runners.cache]\n"), "{text}");
    let loaded = doc.validate().unwrap();
    let s3 = loaded.config.runners[0]
        .cache
        .as_ref()
        .unwrap()
        .s3
        .clone()
        .unwrap();
    assert_eq!(s3.secret_key.unwrap().expose_secret(), "secret/with+chars");
}

/// The chart's template with identity rules (arrays of tables inside `[runners.kubernetes]`)
/// and Oar's identity tables: register keeps every rule, in order, under the new runner.
#[test]
fn a_templates_identity_rules_survive_register() {
    let dir = tempfile::tempdir().unwrap();
    let template = ConfigDocument::parse(
        r#"
concurrent = 2

[[runners]]
  [runners.feature_flags]
    FF_USE_ADVANCED_POD_SPEC_CONFIGURATION = true
  [runners.kubernetes]
    namespace = "ci"
    image = "alpine"
    [[runners.kubernetes.pod_spec]]
      name = "host-network"
      patch_type = "merge"
      patch = '{"hostNetwork": true}'
[[runners.kubernetes.identity]]
  service_account = "deploy-prod"
  projects = ["acme/platform/*"]
  protected_ref = true
  require_id_token = "OAR_ID_TOKEN"
[[runners.kubernetes.identity]]
  service_account = "tagger"
  projects = ["acme/**"]
  ref_type = "tag"
[runners.kubernetes.id_token]
  audience = "https://oar.example.com"
[runners.kubernetes.projected_token]
  audience = "sts.amazonaws.com"
  path = "/var/run/secrets/sts/token"
"#,
        &dir.path().join("config.template.toml"),
    )
    .unwrap();
    let path = dir.path().join("config.toml");
    let mut doc = ConfigDocument::open_or_default(&path).unwrap();
    doc.append_runner_with_template(&k8s_runner(), &template)
        .unwrap();
    doc.save().unwrap();
    let text = fs_err::read_to_string(&path).unwrap();
    let loaded = load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(loaded.warnings.is_empty(), "{:?}\n{text}", loaded.warnings);
    let kube = loaded.config.runners[0].kubernetes.as_ref().unwrap();
    let accounts: Vec<&str> = kube
        .identity
        .iter()
        .map(|r| r.service_account.as_str())
        .collect();
    assert_eq!(accounts, ["deploy-prod", "tagger"], "{text}");
    assert_eq!(kube.id_token.audience, "https://oar.example.com");
    assert_eq!(
        kube.projected_token.as_ref().map(|t| t.audience.as_str()),
        Some("sts.amazonaws.com")
    );
}
