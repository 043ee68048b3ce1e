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
        !std::fs::read_to_string(&cfg)
            .unwrap()
            .contains("[[runners]]")
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
