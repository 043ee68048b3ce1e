//! End to end: register / verify / unregister / list with config.toml; config errors.

mod common;

use common::Fixture;
use oar_testkit::{Endpoint, Fault};

#[tokio::test]
async fn register_verify_list_unregister_round_trip() {
    let f = Fixture::new().await;
    f.gl.add_registration_token("GR1348941legacyRegToken");
    let cfg = f.config_path();
    std::fs::write(&cfg, "# my comment stays\nconcurrent = 4\n").unwrap();
    // Every call below meets a server error and a dropped connection first, and is retried.
    for ep in [
        Endpoint::RegisterRunner,
        Endpoint::VerifyRunner,
        Endpoint::UnregisterRunner,
    ] {
        f.gl.inject(Fault::Status {
            endpoint: ep,
            status: 500,
            times: 1,
        });
        f.gl.inject(Fault::Reset {
            endpoint: ep,
            times: 1,
        });
    }
    let out = f
        .oar()
        .args(["register", "--non-interactive", "-c"])
        .arg(&cfg)
        .args([
            "--url",
            &f.gl.url(),
            "--registration-token",
            "GR1348941legacyRegToken",
            "--name",
            "legacy-one",
            "--executor",
            "shell",
            "--tag-list",
            "a,b",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = f
        .oar()
        .args(["register", "-c"])
        .arg(&cfg)
        .args([
            "--url",
            &f.gl.url(),
            "--token",
            common::RUNNER_TOKEN,
            "--name",
            "created-two",
            "--executor",
            "shell",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.starts_with("# my comment stays\nconcurrent = 4\n"),
        "{text}"
    );
    assert!(
        text.contains("legacy-one") && text.contains("created-two"),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let registered = f.gl.runners();
    assert!(
        registered.iter().any(|r| r.description == "legacy-one"
            && r.tag_list == vec!["a".to_string(), "b".to_string()])
    );

    let out = f
        .oar()
        .args(["list", "-c"])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("legacy-one") && stdout.contains("created-two"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(common::RUNNER_TOKEN),
        "list printed a full token"
    );

    let out = f
        .oar()
        .args(["verify", "-c"])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = f
        .oar()
        .args(["unregister", "-c"])
        .arg(&cfg)
        .args(["--name", "legacy-one"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        !text.contains("legacy-one")
            && text.contains("created-two")
            && text.contains("# my comment stays"),
        "{text}"
    );
    assert!(
        f.gl.runners()
            .iter()
            .any(|r| r.description == "legacy-one" && r.deleted)
    );

    // The glrt- runner was created in GitLab: verify made this machine one of its runner
    // managers, and unregistering removes that runner manager only, never the runner.
    let created = |f: &Fixture| {
        f.gl.runners()
            .into_iter()
            .find(|r| r.token == common::RUNNER_TOKEN)
            .expect("the created runner")
    };
    assert_eq!(created(&f).system_ids.len(), 1, "{:?}", created(&f));
    let out = f
        .oar()
        .args(["unregister", "-c"])
        .arg(&cfg)
        .arg("--all-runners")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Unregistering runner manager"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !std::fs::read_to_string(&cfg)
            .unwrap()
            .contains("[[runners]]")
    );
    let runner = created(&f);
    assert!(
        !runner.deleted,
        "a created runner must outlive its managers"
    );
    assert!(runner.system_ids.is_empty(), "{runner:?}");
    assert!(
        f.gl.requests_to(oar_testkit::Endpoint::UnregisterRunner)
            .iter()
            .any(|r| r.path == "/api/v4/runners/managers")
    );
}

#[tokio::test]
async fn broken_config_names_the_line() {
    let f = Fixture::new().await;
    let cfg = f.config_path();
    std::fs::write(&cfg, "concurrent = 1\n\n[[runners]]\n  name = \"x\"\n  url = \"http://127.0.0.1:1\"\n  token = \"glrt-x\"\n  executor = \"shell\"\n  limit = \"three\"\n").unwrap();
    let out = f
        .oar()
        .args(["run", "-c"])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.toml:8"),
        "error does not name line 8: {err}"
    );
    assert!(err.contains("limit"), "{err}");
}

/// What the Helm chart does at pod start: tokens from mounted files, the rendered template as
/// the base, and a `glrt-` token verified with no registration call.
#[tokio::test]
async fn register_from_token_files_and_a_template_as_the_chart_does() {
    let f = Fixture::new().await;
    f.gl.add_registration_token("GR1348941legacyRegToken");
    let secrets = f.dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(
        secrets.join("runner-token"),
        format!("{}\n", common::RUNNER_TOKEN),
    )
    .unwrap();
    std::fs::write(
        secrets.join("runner-registration-token"),
        "GR1348941legacyRegToken\n",
    )
    .unwrap();
    std::fs::write(secrets.join("empty"), "\n").unwrap();
    let template = f.dir.path().join("config.template.toml");
    std::fs::write(
        &template,
        "concurrent = 7\nlisten_address = \":9252\"\n\n[[runners]]\n  output_limit = 16384\n  [runners.kubernetes]\n    poll_timeout = 900\n",
    )
    .unwrap();
    let cfg = f.dir.path().join("generated").join("config.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    let register = |token_flag: &'static str, file: &'static str| {
        let mut c = f.oar();
        c.args(["register", "--non-interactive", "-c"])
            .arg(&cfg)
            .args(["--url", &f.gl.url(), "--executor", "kubernetes", token_flag])
            .arg(secrets.join(file))
            .arg("--template-config")
            .arg(&template)
            .args(["--kubernetes-namespace", "ci-jobs"]);
        c
    };
    let out = register("--token-file", "runner-token")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        f.gl.requests_to(Endpoint::RegisterRunner).is_empty(),
        "a glrt- token must not register"
    );
    assert_eq!(f.gl.requests_to(Endpoint::VerifyRunner).len(), 1);
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.contains("concurrent = 1") || text.contains("concurrent = 7"),
        "{text}"
    );
    assert!(text.contains("listen_address = \":9252\""), "{text}");
    assert!(text.contains("output_limit = 16384"), "{text}");
    assert!(text.contains("poll_timeout = 900"), "{text}");
    assert!(text.contains("namespace = \"ci-jobs\""), "{text}");
    assert!(text.contains(common::RUNNER_TOKEN), "{text}");

    let out = register("--registration-token-file", "runner-registration-token")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(f.gl.requests_to(Endpoint::RegisterRunner).len(), 1);

    let out = register("--token-file", "empty").output().await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--token-file") && err.contains("empty"),
        "{err}"
    );
}

/// The chart's register init container, in full: the Secret mounted with both token keys (one
/// empty, or missing in a user's own Secret), the S3 cache keys from `runners.cache.secretName`
/// as files, the helper image as a flag, and a template whose globals start the new file. A
/// restarted init container replaces its runner instead of listing it twice.
#[tokio::test]
async fn register_as_the_chart_does_with_cache_keys_and_one_empty_token() {
    let f = Fixture::new().await;
    f.gl.add_registration_token("GR1348941legacyRegToken");
    let secrets = f.dir.path().join("secrets");
    std::fs::create_dir_all(secrets.join("cache")).unwrap();
    std::fs::write(
        secrets.join("runner-token"),
        format!("{}\n", common::RUNNER_TOKEN),
    )
    .unwrap();
    std::fs::write(secrets.join("runner-registration-token"), "").unwrap();
    std::fs::write(secrets.join("legacy-only"), "GR1348941legacyRegToken").unwrap();
    std::fs::write(secrets.join("cache/accesskey"), "AKIAEXAMPLE\n").unwrap();
    std::fs::write(secrets.join("cache/secretkey"), "s3cr3t/key+x\n").unwrap();
    let template = f.dir.path().join("config.template.toml");
    std::fs::write(
        &template,
        "concurrent = 7\ncheck_interval = 5\nshutdown_timeout = 30\n\n[[runners]]\n  [runners.kubernetes]\n    namespace = \"ci\"\n  [runners.cache]\n    Type = \"s3\"\n    Shared = true\n    [runners.cache.s3]\n      ServerAddress = \"s3.example.com\"\n      BucketName = \"ci-cache\"\n",
    )
    .unwrap();
    let cfg = f.dir.path().join("etc-oar").join("config.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    let register = |cfg: &std::path::Path, token_file: &str, registration_file: &str| {
        let mut c = f.oar();
        c.env_remove("CACHE_S3_ACCESS_KEY")
            .env_remove("CACHE_S3_SECRET_KEY")
            .args(["register", "--non-interactive"])
            .arg(format!("--config={}", cfg.display()))
            .arg(format!("--template-config={}", template.display()))
            .args([&format!("--url={}", f.gl.url()), "--executor=kubernetes"])
            .arg(format!(
                "--token-file={}",
                secrets.join(token_file).display()
            ))
            .arg(format!(
                "--registration-token-file={}",
                secrets.join(registration_file).display()
            ))
            .arg("--kubernetes-helper-image=registry.example.invalid/oar/oar-helper:v0.1.0");
        c
    };
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let with_files = |mut c: tokio::process::Command| {
        c.arg(format!(
            "--cache-s3-access-key-file={}",
            secrets.join("cache/accesskey").display()
        ))
        .arg(format!(
            "--cache-s3-secret-key-file={}",
            secrets.join("cache/secretkey").display()
        ));
        c
    };

    // glrt- token, empty registration token: verified, not registered.
    ok(
        with_files(register(&cfg, "runner-token", "runner-registration-token"))
            .output()
            .await
            .unwrap(),
    );
    assert!(f.gl.requests_to(Endpoint::RegisterRunner).is_empty());
    assert_eq!(f.gl.requests_to(Endpoint::VerifyRunner).len(), 1);
    let text = std::fs::read_to_string(&cfg).unwrap();
    // The new file takes the template's globals.
    assert!(text.contains("concurrent = 7"), "{text}");
    assert!(text.contains("check_interval = 5"), "{text}");
    assert!(!text.contains("concurrent = 1"), "{text}");
    assert!(
        text.contains("helper_image = \"registry.example.invalid/oar/oar-helper:v0.1.0\""),
        "{text}"
    );
    assert!(text.contains("namespace = \"ci\""), "{text}");
    assert_eq!(text.matches("[runners.cache.s3]").count(), 1, "{text}");
    for line in [
        "ServerAddress = \"s3.example.com\"",
        "BucketName = \"ci-cache\"",
        "AccessKey = \"AKIAEXAMPLE\"",
        "SecretKey = \"s3cr3t/key+x\"",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }

    // The init container runs again in the same pod: still one runner.
    ok(
        with_files(register(&cfg, "runner-token", "runner-registration-token"))
            .output()
            .await
            .unwrap(),
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert_eq!(text.matches("[[runners]]").count(), 1, "{text}");

    // A user's Secret with only the registration key (runner-token missing): it registers.
    let legacy = f.dir.path().join("legacy").join("config.toml");
    std::fs::create_dir_all(legacy.parent().unwrap()).unwrap();
    ok(register(&legacy, "no-such-key", "legacy-only")
        .env("CACHE_S3_ACCESS_KEY", "AKIAFROMENV")
        .env("CACHE_S3_SECRET_KEY", "from-env")
        .output()
        .await
        .unwrap());
    assert_eq!(f.gl.requests_to(Endpoint::RegisterRunner).len(), 1);
    let text = std::fs::read_to_string(&legacy).unwrap();
    assert!(text.contains("AccessKey = \"AKIAFROMENV\""), "{text}");
    assert!(text.contains("SecretKey = \"from-env\""), "{text}");

    // Neither file holds a token: both are named.
    let none = f.dir.path().join("none").join("config.toml");
    let out = register(&none, "no-such-key", "runner-registration-token")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--token-file") && err.contains("no such file"),
        "{err}"
    );
    assert!(
        err.contains("--registration-token-file") && err.contains("empty"),
        "{err}"
    );

    // One cache key without the other is refused before any call to GitLab.
    let verified = f.gl.requests_to(Endpoint::VerifyRunner).len();
    let out = register(&none, "runner-token", "runner-registration-token")
        .env("CACHE_S3_ACCESS_KEY", "AKIAONLY")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cache-s3-secret-key"), "{err}");
    assert_eq!(f.gl.requests_to(Endpoint::VerifyRunner).len(), verified);
}
