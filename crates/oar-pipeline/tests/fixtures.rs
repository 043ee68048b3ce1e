//! The fixture table: every directory under `tests/fixtures/` is a repository with a
//! `.gitlab-ci.yml` (and the files it includes) plus an `expect` file:
//!
//! ```text
//! # context (defaults: branch main, push pipeline, default branch main)
//! var NAME=VALUE        predefined/project variable
//! unset NAME            drop a default variable
//! user NAME=VALUE       --variable
//! changed a b           changed files (absent: unknown, so `changes` is true)
//! compare REF a b       changed files against REF (changes:compare_to)
//! files a b             repository files (exists, wildcard includes)
//! manual JOB            --manual JOB
//! fail JOB [CODE]       the job fails (with exit code CODE) when the scheduler runs it
//! # expectations
//! plan a, b             exactly these jobs are planned, in this order (`;` separates
//!                       names that contain commas; `~` stands for a space in JOB)
//! skip JOB: reason      JOB is skipped with this reason
//! var JOB NAME=VALUE [source]
//! novar JOB NAME
//! needs JOB: a, b       resolved needs (`-` for stage ordering)
//! deps JOB: a, b        whose artifacts JOB downloads
//! json JOB FIELD VALUE  the JSON of a planned job's field
//! layers a b | c        scheduler rounds when every job ends as told
//! state JOB STATE       the final scheduler state (success, failed, skipped, manual, blocked...)
//! workflow created|not created: reason
//! name NAME             workflow:name
//! note TEXT             some note contains TEXT
//! error MESSAGE         loading or planning fails with exactly MESSAGE
//! ```

use std::collections::HashMap;
use std::path::Path;

use oar_pipeline::{Context, Decision, DirSource, JobState, Outcome, Pipeline, Scheduler};

fn default_context() -> Context {
    Context::with_variables([
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_COMMIT_REF_NAME", "main"),
        ("CI_DEFAULT_BRANCH", "main"),
        ("CI_PIPELINE_SOURCE", "push"),
        ("CI_PROJECT_NAME", "demo"),
    ])
}

fn split_kv(s: &str) -> (String, String) {
    let (k, v) = s.split_once('=').unwrap_or((s, ""));
    (k.to_owned(), v.to_owned())
}

/// A comma-separated list, or semicolon-separated when names contain commas.
fn list(s: &str) -> Vec<String> {
    let sep = if s.contains(';') { ';' } else { ',' };
    s.split(sep)
        .map(str::trim)
        .filter(|x| !x.is_empty() && *x != "-")
        .map(str::to_owned)
        .collect()
}

fn state_name(s: &JobState) -> String {
    match s {
        JobState::Skipped(r) => format!("skipped ({r})"),
        JobState::Blocked(r) => format!("blocked ({r})"),
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
    }
}

fn run_fixture(dir: &Path) -> Vec<String> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let expect = fs_err::read_to_string(dir.join("expect")).unwrap();
    let mut ctx = default_context();
    let mut fails: HashMap<String, Option<i32>> = HashMap::new();
    let mut checks = Vec::new();
    for line in expect
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        match cmd {
            "var"
                if !rest.contains(' ')
                    || rest.split_once(' ').is_some_and(|(a, _)| a.contains('=')) =>
            {
                let (k, v) = split_kv(rest);
                ctx.variables.insert(k, v);
            }
            "unset" => {
                ctx.variables.shift_remove(rest);
            }
            "user" => {
                let (k, v) = split_kv(rest);
                ctx.user_variables.insert(k, v);
            }
            "changed" => {
                ctx.changed_files = Some(rest.split_whitespace().map(str::to_owned).collect())
            }
            "compare" => {
                let mut parts = rest.split_whitespace();
                let r = parts.next().unwrap_or_default().to_owned();
                ctx.changed_files_against
                    .insert(r, parts.map(str::to_owned).collect());
            }
            "files" => ctx.files = Some(rest.split_whitespace().map(str::to_owned).collect()),
            "manual" => {
                ctx.manual_jobs.insert(rest.to_owned());
            }
            "input" => {
                let (k, v) = split_kv(rest);
                ctx.inputs.insert(k, v);
            }
            "fail" => {
                let (job, code) = match rest.rsplit_once(' ') {
                    Some((j, c)) if c.parse::<i32>().is_ok() => (j.to_owned(), c.parse().ok()),
                    _ => (rest.to_owned(), None),
                };
                fails.insert(job, code);
            }
            _ => checks.push((cmd.to_owned(), rest.to_owned())),
        }
    }
    let mut problems = Vec::new();
    let source = DirSource::new(dir);
    let result = Pipeline::load(&source, ".gitlab-ci.yml", &ctx)
        .and_then(|p| p.plan(&ctx).map(|plan| (p, plan)));
    let (pipeline, plan) = match result {
        Ok(x) => x,
        Err(e) => {
            let want = checks
                .iter()
                .find(|(c, _)| c == "error")
                .map(|(_, m)| m.clone());
            if want.as_deref() != Some(e.to_string().as_str()) {
                problems.push(format!("{name}: unexpected error: {e}\n  wanted: {want:?}"));
            }
            return problems;
        }
    };
    // Scheduler simulation.
    let mut sched = Scheduler::new(&plan);
    let mut layers: Vec<Vec<String>> = Vec::new();
    for _ in 0..1000 {
        let decisions = sched.poll();
        let runs: Vec<usize> = decisions
            .iter()
            .filter_map(|d| {
                if let Decision::Run { job, .. } = d {
                    Some(*job)
                } else {
                    None
                }
            })
            .collect();
        if runs.is_empty() {
            break;
        }
        layers.push(runs.iter().map(|&i| plan.jobs[i].name.clone()).collect());
        for i in runs {
            let job = &plan.jobs[i];
            let outcome = match fails.get(&job.name) {
                Some(code) => Outcome::Failed { exit_code: *code },
                None => Outcome::Success,
            };
            sched.finish(i, outcome);
        }
    }
    let find = |job: &str| plan.job(job);
    for (cmd, rest) in checks {
        let mut fail = |msg: String| problems.push(format!("{name}: {cmd} {rest}: {msg}"));
        match cmd.as_str() {
            "plan" => {
                let got: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
                if got != list(&rest) {
                    fail(format!("planned {got:?}"));
                }
            }
            "skip" => {
                let (job, reason) = rest.split_once(": ").unwrap_or((&rest, ""));
                let job = job.replace('~', " ");
                match plan.skipped.iter().find(|s| s.name == job) {
                    Some(s) if s.reason == reason => {}
                    Some(s) => fail(format!("reason {:?}", s.reason)),
                    None => fail(format!("not skipped; skipped: {:?}", plan.skipped)),
                }
            }
            "var" | "novar" => {
                let (job, kv) = rest.split_once(' ').unwrap_or((&rest, ""));
                let job = job.replace('~', " ");
                let Some(j) = find(&job) else {
                    fail("no such job".into());
                    continue;
                };
                if cmd == "novar" {
                    if let Some(v) = j.variables.iter().find(|v| v.name == kv) {
                        fail(format!("has {v:?}"));
                    }
                    continue;
                }
                let (kv, source) = match kv.rsplit_once(" [") {
                    Some((a, b)) => (a, Some(b.trim_end_matches(']'))),
                    None => (kv, None),
                };
                let (k, v) = split_kv(kv);
                match j.variables.iter().find(|x| x.name == k) {
                    Some(x)
                        if x.value == v
                            && source.is_none_or(|s| {
                                serde_json::to_value(x.source)
                                    .ok()
                                    .and_then(|j| j.as_str().map(|s| s.to_owned()))
                                    .as_deref()
                                    == Some(s)
                            }) => {}
                    other => fail(format!("got {other:?}")),
                }
            }
            "needs" => {
                let (job, want) = rest.split_once(": ").unwrap_or((&rest, ""));
                let job = job.replace('~', " ");
                let Some(j) = find(&job) else {
                    fail("no such job".into());
                    continue;
                };
                let got = j
                    .needs
                    .as_ref()
                    .map(|n| n.iter().map(|n| n.job.clone()).collect::<Vec<_>>());
                let want = match want.trim() {
                    "-" => None,
                    "[]" => Some(Vec::new()),
                    w => Some(list(w)),
                };
                if got != want {
                    fail(format!("got {got:?}"));
                }
            }
            "deps" => {
                let (job, want) = rest.split_once(':').unwrap_or((&rest, ""));
                let job = job.replace('~', " ");
                let Some(i) = plan.position(&job) else {
                    fail("no such job".into());
                    continue;
                };
                let got: Vec<String> = plan
                    .artifact_sources(i)
                    .iter()
                    .map(|j| j.name.clone())
                    .collect();
                if got != list(want) {
                    fail(format!("got {got:?}"));
                }
            }
            "json" => {
                let mut parts = rest.splitn(3, ' ');
                let (job, field, want) = (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                );
                let job = job.replace('~', " ");
                let Some(j) = find(&job) else {
                    fail("no such job".into());
                    continue;
                };
                let value = serde_json::to_value(j).unwrap();
                let got = value.get(field).cloned().unwrap_or(serde_json::Value::Null);
                let want: serde_json::Value = serde_json::from_str(want)
                    .unwrap_or_else(|e| panic!("{name}: bad json {want}: {e}"));
                if got != want {
                    fail(format!("got {got}"));
                }
            }
            "layers" => {
                let want: Vec<Vec<String>> = rest.split('|').map(list).collect();
                if layers != want {
                    fail(format!("got {layers:?}"));
                }
            }
            "state" => {
                let (job, want) = rest.split_once(": ").unwrap_or((&rest, ""));
                let job = job.replace('~', " ");
                let Some(i) = plan.position(&job) else {
                    fail("no such job".into());
                    continue;
                };
                let got = sched.state(i).map(state_name).unwrap_or_default();
                if got != want {
                    fail(format!("got {got}"));
                }
            }
            "pipeline" => {
                let got = if sched.failed() { "failed" } else { "passed" };
                if got != rest {
                    fail(format!("got {got}"));
                }
            }
            "workflow" => {
                let got = if plan.workflow.created {
                    format!("created: {}", plan.workflow.reason)
                } else {
                    format!("not created: {}", plan.workflow.reason)
                };
                if got != rest {
                    fail(format!("got {got}"));
                }
            }
            "name" => {
                if plan.name.as_deref() != Some(rest.as_str()) {
                    fail(format!("got {:?}", plan.name));
                }
            }
            "note" => {
                if !plan.notes.iter().any(|n| n.contains(rest.as_str())) {
                    fail(format!("notes: {:?}", plan.notes));
                }
            }
            "child" => {
                let (job, want) = rest.split_once(": ").unwrap_or((&rest, ""));
                let Some(child) = pipeline.child(job) else {
                    fail("no child pipeline".into());
                    continue;
                };
                match child.plan(&ctx) {
                    Ok(p) => {
                        let got: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
                        if got != list(want) {
                            fail(format!("child planned {got:?}"));
                        }
                    }
                    Err(e) => fail(format!("child: {e}")),
                }
            }
            "preview" => {
                if !pipeline.preview().contains(&rest.replace("\\n", "\n")) {
                    fail(format!("preview:\n{}", pipeline.preview()));
                }
            }
            "error" => fail("loaded and planned without error".into()),
            other => fail(format!("unknown check {other}")),
        }
    }
    problems
}

#[test]
fn fixture_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut dirs: Vec<_> = fs_err::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expect").exists())
        .collect();
    dirs.sort();
    let mut problems = Vec::new();
    for d in &dirs {
        problems.extend(run_fixture(d));
    }
    assert!(
        problems.is_empty(),
        "{} fixtures, problems:\n{}",
        dirs.len(),
        problems.join("\n")
    );
    assert!(dirs.len() >= 50, "only {} fixtures", dirs.len());
}
