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

/// Copies `examples/pipeline` into a fresh checkout of its own.
fn example_checkout(dir: &Path) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pipeline");
    let mut files = Vec::new();
    for entry in ["README.md", ".gitlab-ci.yml", "src/build.sh"] {
        files.push((entry, std::fs::read_to_string(example.join(entry)).unwrap()));
    }
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    checkout(dir, "main", &refs);
}

/// The example pipeline runs end to end with the shell executor: artifacts reach the later
/// jobs, the dotenv report sets a variable, the matrix runs twice, the allowed failure keeps
/// the pipeline green, the rule leaves `docs` out, and the cache counts the runs.
#[tokio::test]
async fn the_example_pipeline_runs_and_passes() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    example_checkout(dir.path());
    let out = exec(&f, dir.path(), &["--concurrency", "2"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    for line in [
        "build | hello from the pipeline (build number 1 on this machine)",
        "test: [unit] | running the unit tests against hello from the pipeline",
        "test: [integration] | running the integration tests against hello",
        "package | flavour from the dotenv report of build: release",
        "package | greeting.txt",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    let summary = text.rsplit("\njob ").next().unwrap_or_default();
    for (job, status) in [
        ("build", "success"),
        ("test: [unit]", "success"),
        ("test: [integration]", "success"),
        ("lint", "failed (allowed)"),
        ("package", "success"),
        ("docs", "skipped: rules: no rule matched"),
    ] {
        assert!(
            summary
                .lines()
                .any(|l| l.starts_with(job) && l.trim_end().ends_with(status)),
            "{job}: {status} not in the summary:\n{summary}"
        );
    }
    assert!(text.trim_end().ends_with("Pipeline passed"), "{text}");
    // The work tree is as it was: .oar/ ignores itself.
    let status = std::process::Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "");

    // Again, with an uncommitted change and the rule's variable: the cache survived, the
    // jobs see the change, and docs runs.
    std::fs::write(
        dir.path().join("src/build.sh"),
        std::fs::read_to_string(dir.path().join("src/build.sh"))
            .unwrap()
            .replace("$GREETING", "$GREETING, changed"),
    )
    .unwrap();
    let out = exec(&f, dir.path(), &["--variable", "BUILD_DOCS=yes", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("hello from the pipeline, changed (build number 2 on this machine)"),
        "{text}"
    );
    let results: Value = serde_json::from_str(text.lines().last().unwrap()).expect("JSON last");
    assert_eq!(results["passed"], true);
    let docs = results["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "docs")
        .cloned()
        .unwrap();
    assert_eq!(docs["status"], "success", "{results}");
}

/// A failing job fails the pipeline (exit status 1), its log says why, and the jobs after it
/// do not run; `when: on_failure` and `when: always` jobs do.
#[tokio::test]
async fn a_failing_job_fails_the_pipeline() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    checkout(
        dir.path(),
        "main",
        &[(
            ".gitlab-ci.yml",
            r#"
stages: [build, test]
build:
  stage: build
  script:
    - echo "about to fail"
    - exit 4
test:
  stage: test
  script: [echo "must not run"]
report:
  stage: test
  when: on_failure
  script:
    - echo "the build failed, reporting"
cleanup:
  stage: test
  when: always
  script: [echo "cleaning up"]
"#,
        )],
    );
    let out = exec(&f, dir.path(), &[]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(text.contains("build | about to fail"), "{text}");
    assert!(
        text.contains("exit status 4") || text.contains("exit code 4"),
        "{text}"
    );
    assert!(!text.contains("must not run"), "{text}");
    assert!(
        text.contains("report | the build failed, reporting"),
        "{text}"
    );
    assert!(text.contains("cleanup | cleaning up"), "{text}");
    assert!(text.trim_end().ends_with("Pipeline failed"), "{text}");
}

#[tokio::test]
async fn timestamps_start_every_output_line_with_the_time() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    checkout(
        dir.path(),
        "main",
        &[(
            ".gitlab-ci.yml",
            "job:\n  script: [echo first, echo second]\n",
        )],
    );
    let before = std::time::SystemTime::now();
    let out = exec(&f, dir.path(), &["--timestamps"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("job | ")).collect();
    assert!(lines.len() > 5, "{text}");
    let secs_of_day = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() % 86_400
    };
    let (from, to) = (
        secs_of_day(before),
        secs_of_day(std::time::SystemTime::now()),
    );
    for line in &lines {
        let rest = &line["job | ".len()..];
        let (stamp, _) = rest.split_once(' ').unwrap_or((rest, ""));
        let parts: Vec<u64> = stamp
            .split([':', '.'])
            .map(|p| p.parse().unwrap_or(u64::MAX))
            .collect();
        assert_eq!(parts.len(), 4, "{line}");
        let secs = parts[0] * 3600 + parts[1] * 60 + parts[2];
        // UTC, between the start and the end of the run (a run across midnight wraps).
        assert!(
            (from <= secs && secs <= to) || to < from,
            "{line}: {secs} outside {from}..={to}"
        );
    }
    assert!(lines.iter().any(|l| l.ends_with(" first")), "{text}");
    assert!(lines.iter().any(|l| l.ends_with(" second")), "{text}");
}

/// `--executor kubernetes` on the test cluster: each job in its own pod (the config's
/// `[runners.kubernetes]`), fetching the sources and the artifacts of earlier jobs from
/// `oar exec` over HTTP; a matrix of two with a service; a failing job fails the pipeline with
/// its log; no pod is left.
#[tokio::test]
async fn the_kubernetes_executor_runs_each_job_in_a_pod() {
    let Some((cluster, ns, f)) = common::kube::setup("oar-exec-kube").await else {
        return;
    };
    common::kube::write_kube_config(&f, ns.name(), "", "");
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port, port2) = (free_port(), free_port());
    let pipeline = format!(
        r#"
stages: [build, test, deploy]
build:
  stage: build
  script:
    - mkdir -p out && echo "built in pod $HOSTNAME" > out/app.txt
    - cat README.md
  artifacts:
    paths: [out/]
test:
  stage: test
  parallel:
    # Each its own port: the pods share the host's network, and the first one's service may
    # still be going while the second starts.
    matrix:
      - SUITE: one
        SVC_PORT: "{port}"
      - SUITE: two
        SVC_PORT: "{port2}"
  services:
    - name: {busybox}
      alias: web
      entrypoint: [sh, -c]
      command: ["mkdir -p /tmp/www && echo svc-$SUITE > /tmp/www/index.html && exec httpd -f -p $SVC_PORT -h /tmp/www"]
  script:
    - cat out/app.txt
    - 'for i in $(seq 1 100); do if (exec 3<>/dev/tcp/127.0.0.1/$SVC_PORT && printf "GET /index.html HTTP/1.0\r\n\r\n" >&3 && cat <&3) > /tmp/page 2>/dev/null && grep -q svc- /tmp/page; then break; fi; sleep 0.1; done'
    - 'echo "suite $SUITE saw the service: $(grep svc- /tmp/page)"'
deploy:
  stage: deploy
  script:
    - 'echo "deploying $(cat out/app.txt)"'
"#,
        busybox = oar_testkit::cluster::BUSYBOX_IMAGE,
    );
    let dir = tempfile::tempdir().unwrap();
    checkout(
        dir.path(),
        "main",
        &[
            (".gitlab-ci.yml", pipeline.as_str()),
            ("README.md", "hello from the repo\n"),
        ],
    );
    let run = |extra: &'static [&'static str]| {
        let mut c = f.oar();
        c.env("KUBECONFIG", cluster.kubeconfig_path())
            .arg("exec")
            .arg("-C")
            .arg(dir.path())
            .args(["--executor", "kubernetes", "--concurrency", "1", "-c"])
            .arg(f.config_path())
            .args(extra);
        c
    };
    let out = tokio::time::timeout(common::kube::RUN_TIMEOUT, run(&[]).output())
        .await
        .expect("oar exec ends")
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(text.contains("build | hello from the repo"), "{text}");
    assert!(text.contains("Using the Kubernetes executor"), "{text}");
    assert!(
        text.contains("test: [one, ") && text.contains("built in pod "),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "test: [one, {port}] | suite one saw the service: svc-one"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "test: [two, {port2}] | suite two saw the service: svc-two"
        )),
        "{text}"
    );
    assert!(text.contains("deploy | deploying built in pod"), "{text}");
    assert!(text.trim_end().ends_with("Pipeline passed"), "{text}");
    common::kube::assert_nothing_left(&ns).await;

    // A failing job fails the pipeline, with its log.
    std::fs::write(
        dir.path().join(".gitlab-ci.yml"),
        "build:\n  script:\n    - echo 'failing in a pod'\n    - exit 5\n",
    )
    .unwrap();
    let out = tokio::time::timeout(common::kube::RUN_TIMEOUT, run(&[]).output())
        .await
        .expect("oar exec ends")
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(text.contains("build | failing in a pod"), "{text}");
    assert!(text.contains("failed (exit code 5)"), "{text}");
    common::kube::assert_nothing_left(&ns).await;
    ns.delete().await.ok();
}

/// `oar exec JOB...` runs those jobs and what they need; `--no-needs` just them; an unknown
/// job is refused with the list of jobs.
#[tokio::test]
async fn named_jobs_run_with_what_they_need() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    example_checkout(dir.path());
    let summary_jobs = |text: &str| -> Vec<String> {
        let summary = text.rsplit("\njob ").next().unwrap_or_default();
        summary
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .map(|l| l.split("  ").next().unwrap_or_default().to_string())
            .collect()
    };
    let out = exec(&f, dir.path(), &["test"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert_eq!(
        summary_jobs(&text),
        ["build", "test: [unit]", "test: [integration]"],
        "{text}"
    );
    assert!(
        text.contains("test: [unit] | running the unit tests against hello"),
        "{text}"
    );

    let out = exec(&f, dir.path(), &["lint", "--no-needs"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert_eq!(summary_jobs(&text), ["lint"], "{text}");

    let out = exec(&f, dir.path(), &["nosuchjob"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no job \"nosuchjob\"; the pipeline's jobs: build, "),
        "{}",
        stderr(&out)
    );
    let out = exec(&f, dir.path(), &["docs"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("rules: no rule matched"),
        "{}",
        stderr(&out)
    );
}

/// Ctrl-C (SIGINT) cancels the running job as GitLab cancels one: its script stops, its
/// after_script runs, later jobs do not start, and the pipeline fails.
#[tokio::test]
async fn an_interrupt_cancels_the_running_jobs() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    checkout(
        dir.path(),
        "main",
        &[(
            ".gitlab-ci.yml",
            "stages: [a, b]\nlong:\n  stage: a\n  script:\n    - for i in $(seq 1 600); do echo tick $i; sleep 0.1; done\n  after_script:\n    - echo \"after_script with status $CI_JOB_STATUS\"\nlater:\n  stage: b\n  script: [echo must not run]\n",
        )],
    );
    let mut child = f
        .oar()
        .arg("exec")
        .arg("-C")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the job's output, then interrupt.
    let stdout_pipe = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout_pipe));
    let mut seen = String::new();
    loop {
        let line = tokio::time::timeout(common::JOB_WAIT, lines.next_line())
            .await
            .expect("the job prints")
            .unwrap()
            .expect("output before the end");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("long | tick 3") {
            break;
        }
    }
    common::signal(&child, nix::sys::signal::Signal::SIGINT);
    while let Some(line) = tokio::time::timeout(common::JOB_WAIT, lines.next_line())
        .await
        .expect("oar exec ends")
        .unwrap()
    {
        seen.push_str(&line);
        seen.push('\n');
    }
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(1), "{seen}");
    assert!(!seen.contains("tick 600"), "{seen}");
    assert!(
        seen.contains("long | after_script with status canceled"),
        "{seen}"
    );
    assert!(!seen.contains("must not run"), "{seen}");
    assert!(seen.contains("canceled"), "{seen}");
    assert!(seen.trim_end().ends_with("Pipeline failed"), "{seen}");
}

/// `retry` runs a failed job again as a new job (up to `max`); `resource_group` keeps jobs
/// of one group from running at the same time.
#[tokio::test]
async fn retry_and_resource_group() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let marks = tempfile::tempdir().unwrap();
    checkout(
        dir.path(),
        "main",
        &[(
            ".gitlab-ci.yml",
            r#"
flaky:
  retry: 1
  script:
    - 'if [ -f "$MARKS/once" ]; then echo "second attempt passes"; else touch "$MARKS/once"; echo "first attempt fails"; exit 1; fi'
deploy-a:
  resource_group: production
  script:
    - echo "start a" >> "$MARKS/log"; sleep 0.5; echo "end a" >> "$MARKS/log"
deploy-b:
  resource_group: production
  script:
    - echo "start b" >> "$MARKS/log"; sleep 0.5; echo "end b" >> "$MARKS/log"
"#,
        )],
    );
    let marks_var = format!("MARKS={}", marks.path().display());
    let out = exec(
        &f,
        dir.path(),
        &["--concurrency", "3", "--variable", &marks_var],
    )
    .await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(text.contains("flaky | first attempt fails"), "{text}");
    assert!(text.contains("flaky | retrying: attempt 2 of 2"), "{text}");
    assert!(text.contains("flaky | second attempt passes"), "{text}");
    let log = std::fs::read_to_string(marks.path().join("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines == ["start a", "end a", "start b", "end b"]
            || lines == ["start b", "end b", "start a", "end a"],
        "the group's jobs overlapped: {lines:?}"
    );
}
