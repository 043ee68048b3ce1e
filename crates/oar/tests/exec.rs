//! `oar exec` on real checkouts: the plan of a push of the checked-out commit (`--list`,
//! `--list --json`), the merged YAML (`--preview`), the user's variables, and invalid pipelines
//! refused with file and line and exit status 2.

mod common;

use common::Fixture;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

/// A git checkout in `dir` with `files`, committed on `branch`.
fn checkout(dir: &Path, branch: &str, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let script = format!(
        "git init -q -b {branch} . && git remote add origin https://gitlab.example.com/acme/widget.git && git add -A && git commit -qm 'the commit'"
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn exec(f: &Fixture, dir: &Path, args: &[&str]) -> Output {
    f.oar()
        .arg("exec")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .await
        .expect("oar runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const PIPELINE: &str = r#"
stages: [build, test, deploy]
variables:
  GREETING: hello
.base:
  image: alpine
  before_script: [echo base]
build:
  extends: .base
  stage: build
  script: [make]
test:
  stage: test
  parallel:
    matrix:
      - ARCH: [amd64, arm64]
  needs: [build]
  script: [make test]
docs:
  stage: test
  rules:
    - changes: [docs/**/*]
  script: [make docs]
deploy:
  stage: deploy
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
  script: [make deploy]
lint:
  stage: test
  allow_failure: true
  rules:
    - if: $RUN_LINT == "yes"
  script: [make lint]
"#;

#[tokio::test]
async fn list_shows_the_plan_of_a_push_of_the_checkout() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    checkout(dir.path(), "main", &[(".gitlab-ci.yml", PIPELINE)]);
    let out = exec(&f, dir.path(), &["--list"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("for main at "), "{text}");
    assert!(text.contains("(acme/widget)"), "{text}");
    assert!(text.contains("  build "), "{text}");
    assert!(text.contains("test: [amd64]"), "{text}");
    assert!(text.contains("test: [arm64]"), "{text}");
    assert!(text.contains("needs: build"), "{text}");
    assert!(text.contains("  deploy "), "on main, deploy runs:\n{text}");
    assert!(
        text.contains("lint") && text.contains("skipped: rules: no rule matched"),
        "{text}"
    );
    // Stage order: build before test before deploy.
    let at = |s: &str| text.find(&format!("\n{s}\n")).unwrap_or(usize::MAX);
    assert!(
        at("build") < at("test") && at("test") < at("deploy"),
        "{text}"
    );
}

#[tokio::test]
async fn variables_and_branches_change_the_plan() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    checkout(dir.path(), "feature", &[(".gitlab-ci.yml", PIPELINE)]);
    let vars = dir.path().join("vars.env");
    std::fs::write(&vars, "# local settings\nexport RUN_LINT=no\n").unwrap();
    let out = exec(
        &f,
        dir.path(),
        &[
            "--list",
            "--json",
            "--variables-file",
            vars.to_str().unwrap(),
            "--variable",
            "RUN_LINT=yes",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let names: Vec<&str> = plan["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    // --variable wins over the file; deploy needs the default branch.
    assert!(names.contains(&"lint"), "{names:?}");
    assert!(!names.contains(&"deploy"), "{names:?}");
    let skipped: Vec<&str> = plan["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert!(skipped.contains(&"deploy"), "{skipped:?}");
}

#[tokio::test]
async fn changes_are_against_the_default_branch_and_the_work_tree() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    checkout(dir.path(), "main", &[(".gitlab-ci.yml", PIPELINE)]);
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["checkout", "-q", "-b", "topic"]);
    let list = |out: &Output| {
        assert!(out.status.success(), "{}", stderr(out));
        stdout(out)
    };
    let text = list(&exec(&f, dir.path(), &["--list"]).await);
    assert!(text.contains("docs") && text.contains("skipped"), "{text}");
    // An uncommitted file under docs/ counts as a change.
    std::fs::create_dir_all(dir.path().join("docs")).unwrap();
    std::fs::write(dir.path().join("docs/index.md"), "# docs\n").unwrap();
    let text = list(&exec(&f, dir.path(), &["--list"]).await);
    let docs_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("docs"))
        .unwrap();
    assert!(!docs_line.contains("skipped"), "{text}");
}

#[tokio::test]
async fn preview_shows_the_merged_yaml() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    checkout(
        dir.path(),
        "main",
        &[
            (
                ".gitlab-ci.yml",
                "include: ci/common.yml\nbuild:\n  extends: .common\n  script: [make]\n",
            ),
            (
                "ci/common.yml",
                ".common:\n  image: alpine:3.20\n  tags: [linux]\n",
            ),
        ],
    );
    let out = exec(&f, dir.path(), &["--preview"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("alpine:3.20"), "{text}");
    assert!(text.contains("build:"), "{text}");
}

#[tokio::test]
async fn an_invalid_pipeline_names_file_and_line_and_exits_2() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    checkout(
        dir.path(),
        "main",
        &[(
            ".gitlab-ci.yml",
            "build:\n  script: [make]\ntest:\n  script: [make test]\n  needs: [compile]\n",
        )],
    );
    let out = exec(&f, dir.path(), &["--list"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(".gitlab-ci.yml:"), "{err}");
    assert!(err.contains("compile"), "{err}");
    assert!(err.contains("nothing was run"), "{err}");

    let out = exec(&f, dir.path(), &["--list", "--file", "missing.yml"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("missing.yml: no such file"),
        "{}",
        stderr(&out)
    );

    let out = exec(&f, dir.path(), &["--list", "--variable", "1BAD=x"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a variable name"),
        "{}",
        stderr(&out)
    );

    let outside = tempfile::tempdir().unwrap();
    let out = exec(&f, outside.path(), &["--list"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not inside a git repository"),
        "{}",
        stderr(&out)
    );
}
