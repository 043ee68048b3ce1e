//! The executed fixture table (issue 12): each directory of `tests/exec_table/` is a pipeline
//! that `oar exec --json` runs for real, in a git checkout made from the directory, and an
//! `expect.toml` saying what a user would see: the exit status, every job's final status,
//! which job ended before which started, and lines of the jobs' output (variables echoed,
//! artifacts listed) that must or must not appear.
//!
//! `expect.toml`:
//!
//! ```toml
//! args = ["--variable", "X=1"]    # after `exec -C <checkout> --json`; {shared} is a scratch
//!                                 # directory outside the checkout, {repo} the checkout
//! branch = "main"                 # the checkout's branch (default main)
//! setup = "git checkout -b topic" # sh run in the checkout after the first commit
//! exit = 0                        # oar's exit status
//! order = ["a < b", "b < c"]      # a's last output line comes before b's first
//! stdout = ["..."]                # substrings of stdout; stderr likewise
//! notes = "..."                   # what was compared with gitlab-ci-local, and why
//! [jobs]                          # every job of the result, with its final status
//! a = "success"
//! [output]                        # whole lines of a job's output, `a | line`
//! a = ["V=1"]
//! [not_output]                    # lines that must not appear
//! a = ["V="]
//! ```
//!
//! A case that shows a bug in code this table may not change is listed with `#[ignore]` and
//! the symptom; its `expect.toml` says what GitLab does.

mod common;

use common::Fixture;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    args: Vec<String>,
    branch: Option<String>,
    setup: Option<String>,
    exit: i32,
    #[serde(default)]
    jobs: BTreeMap<String, String>,
    #[serde(default)]
    order: Vec<String>,
    #[serde(default)]
    output: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    not_output: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    stdout: Vec<String>,
    #[serde(default)]
    stderr: Vec<String>,
    #[serde(default)]
    notes: String,
}

/// A TOML table as JSON, for serde (`toml_edit` is what the workspace has; `toml` is not a
/// dependency of this crate).
fn json_of_table(table: &toml_edit::Table) -> serde_json::Value {
    table
        .iter()
        .filter_map(|(k, item)| {
            let v = match item {
                toml_edit::Item::Value(v) => json_of_value(v),
                toml_edit::Item::Table(t) => json_of_table(t),
                _ => return None,
            };
            Some((k.to_string(), v))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn json_of_value(value: &toml_edit::Value) -> serde_json::Value {
    use toml_edit::Value as V;
    match value {
        V::String(s) => s.value().clone().into(),
        V::Integer(i) => (*i.value()).into(),
        V::Boolean(b) => (*b.value()).into(),
        V::Float(f) => (*f.value()).into(),
        V::Datetime(d) => d.value().to_string().into(),
        V::Array(a) => a.iter().map(json_of_value).collect(),
        V::InlineTable(t) => t
            .iter()
            .map(|(k, v)| (k.to_string(), json_of_value(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

fn table_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/exec_table")
}

/// Copies the case's files (not its `expect.toml`) into `to`.
fn copy_tree(from: &Path, to: &Path, top: bool) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target, false);
        } else if !(top && name == "expect.toml") {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn sh(dir: &Path, script: &str, shared: &Path) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("SHARED", shared)
        .env("HOME", shared)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Index of the first and last stdout line of `job` (`job | ...`).
fn span(lines: &[&str], job: &str) -> Option<(usize, usize)> {
    let prefix = format!("{job} | ");
    let first = lines.iter().position(|l| l.starts_with(&prefix))?;
    let last = lines.iter().rposition(|l| l.starts_with(&prefix))?;
    Some((first, last))
}

async fn run_case(name: &str) {
    let dir = table_dir().join(name);
    let text = std::fs::read_to_string(dir.join("expect.toml"))
        .unwrap_or_else(|e| panic!("{name}/expect.toml: {e}"));
    let expect: Expect = text
        .parse::<toml_edit::DocumentMut>()
        .map_err(|e| e.to_string())
        .and_then(|doc| {
            serde_json::from_value(json_of_table(doc.as_table())).map_err(|e| e.to_string())
        })
        .unwrap_or_else(|e| panic!("{name}/expect.toml: {e}"));
    let f = Fixture::new().await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let shared = tmp.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    copy_tree(&dir, &repo, true);
    let branch = expect.branch.as_deref().unwrap_or("main");
    sh(
        &repo,
        &format!(
            "git init -q -b {branch} . && git remote add origin https://gitlab.example.com/acme/widget.git && git add -A && git commit -qm 'the commit'"
        ),
        &shared,
    );
    if let Some(setup) = &expect.setup {
        sh(&repo, setup, &shared);
    }
    let args: Vec<String> = expect
        .args
        .iter()
        .map(|a| {
            a.replace("{shared}", &shared.to_string_lossy())
                .replace("{repo}", &repo.to_string_lossy())
        })
        .collect();
    let run = f
        .oar()
        .arg("exec")
        .arg("-C")
        .arg(&repo)
        .arg("--json")
        .args(&args)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .unwrap_or_else(|_| panic!("{name}: oar exec did not end within 180 s"))
        .expect("oar runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut problems: Vec<String> = Vec::new();
    if out.status.code() != Some(expect.exit) {
        problems.push(format!(
            "exit status {:?}, expected {}",
            out.status.code(),
            expect.exit
        ));
    }
    let lines: Vec<&str> = stdout.lines().collect();
    let result: Option<serde_json::Value> = lines
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v.get("jobs").is_some());
    let statuses: BTreeMap<String, String> = result
        .as_ref()
        .and_then(|r| r["jobs"].as_array())
        .into_iter()
        .flatten()
        .map(|j| {
            (
                j["name"].as_str().unwrap_or_default().to_string(),
                j["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    if statuses != expect.jobs {
        problems.push(format!(
            "job statuses:\n  got      {statuses:?}\n  expected {:?}",
            expect.jobs
        ));
    }
    if let Some(r) = &result {
        let passed = r["passed"].as_bool();
        if passed != Some(expect.exit == 0) {
            problems.push(format!(
                "\"passed\" is {passed:?} with exit {}",
                expect.exit
            ));
        }
    }
    for rule in &expect.order {
        let names: Vec<&str> = rule.split(" < ").collect();
        for pair in names.windows(2) {
            match (span(&lines, pair[0]), span(&lines, pair[1])) {
                (Some((_, a_last)), Some((b_first, _))) if a_last < b_first => {}
                (Some(_), Some(_)) => problems.push(format!(
                    "order {rule:?}: {:?} did not end before {:?} started",
                    pair[0], pair[1]
                )),
                _ => problems.push(format!("order {rule:?}: a job has no output")),
            }
        }
    }
    let has = |job: &str, line: &str| {
        let want = format!("{job} | {line}");
        lines.iter().any(|l| l.trim_end() == want.trim_end())
    };
    for job in expect.output.keys().chain(expect.not_output.keys()) {
        assert!(
            expect.jobs.contains_key(job),
            "case {name}: expect.toml's [output] or [not_output] names {job:?}, not in [jobs]"
        );
    }
    for (job, want) in &expect.output {
        for line in want {
            if !has(job, line) {
                problems.push(format!("{job} did not print the line {line:?}"));
            }
        }
    }
    for (job, unwanted) in &expect.not_output {
        for line in unwanted {
            if has(job, line) {
                problems.push(format!("{job} printed the line {line:?}"));
            }
        }
    }
    for s in &expect.stdout {
        if !stdout.contains(s.as_str()) {
            problems.push(format!("stdout lacks {s:?}"));
        }
    }
    for s in &expect.stderr {
        if !stderr.contains(s.as_str()) {
            problems.push(format!("stderr lacks {s:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "case {name}: {}\nnotes: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        problems.join("\n"),
        expect.notes
    );
}

macro_rules! cases {
    ($($(#[$attr:meta])* $name:ident,)*) => {
        const CASES: &[&str] = &[$(stringify!($name)),*];
        $(
            $(#[$attr])*
            #[tokio::test]
            async fn $name() {
                run_case(stringify!($name)).await;
            }
        )*
    };
}

#[test]
fn every_directory_is_a_case() {
    let mut dirs: Vec<String> = std::fs::read_dir(table_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(dirs, listed, "tests/exec_table/ and the cases! list differ");
    assert!(CASES.len() >= 80, "{} cases", CASES.len());
}

cases! {
    after_script_after_failure,
    after_script_allowed_failure_status,
    after_script_failure_ignored,
    allow_failure_exit_codes,
    allow_failure_then_on_success,
    allow_failure_true,
    anchors_merge_keys,
    artifacts_glob_paths,
    artifacts_name,
    artifacts_paths_exclude,
    artifacts_untracked,
    artifacts_when,
    before_script_failure,
    cache_fallback_keys,
    cache_key_files_commit,
    cache_key_files_prefix,
    cache_key_variables,
    cache_pull_does_not_save,
    cache_push_pull,
    cache_untracked,
    cache_when,
    cli_bad_variable,
    cli_variable_precedence,
    default_inherit_image_note,
    default_keywords,
    default_retry_timeout,
    dependencies_later_stage_invalid,
    dependencies_list,
    dotenv_failed_job,
    dotenv_job_variable_reference,
    dotenv_needs_artifacts_false,
    dotenv_report,
    extends_multi_level,
    extends_multiple,
    extends_rules_replaced,
    hidden_jobs,
    include_deep_merge_job,
    include_inputs,
    include_inputs_array_whole,
    include_inputs_functions,
    include_inputs_missing_invalid,
    include_inputs_options_invalid,
    include_inputs_regex,
    include_inputs_regex_invalid,
    include_inputs_type_invalid,
    include_local_nested,
    include_rules,
    include_wildcard,
    inherit_default,
    inherit_variables,
    invalid_unknown_keyword,
    invalid_yaml,
    job_names_unusual,
    keywords_accepted,
    manual_flag_runs_it,
    masked_variable,
    matrix_variable_expansion,
    needs_artifacts_false,
    needs_dag,
    needs_empty,
    needs_failed_need,
    needs_later_stage_invalid,
    needs_manual_job,
    needs_matrix_job_by_name,
    needs_matrix_refs,
    needs_matrix_refs_invalid,
    needs_missing_invalid,
    needs_optional,
    needs_optional_present,
    needs_parallel_matrix,
    needs_project_refused,
    needs_same_stage,
    needs_with_dependencies,
    only_changes,
    only_except_refs,
    only_except_variables,
    only_pre_post_no_pipeline,
    parallel_count,
    parallel_matrix,
    parallel_matrix_needs_missing_invalid,
    parallel_needs_one_instance,
    predefined_variables,
    reference_in_rules,
    reference_tags,
    resource_group,
    retry_exhausted,
    retry_max,
    retry_max_invalid,
    retry_when,
    rules_allow_failure,
    rules_and_or_parens,
    rules_changes,
    rules_changes_and_exists,
    rules_changes_compare_to,
    rules_delayed,
    rules_exists,
    rules_exists_variables,
    rules_if_equality,
    rules_manual_allow_failure,
    rules_manual_blocks,
    rules_needs,
    rules_null,
    rules_regex,
    rules_regex_escaped_slash,
    rules_variables,
    rules_when_first_match,
    script_nested_arrays,
    select_job_with_needs,
    select_matrix_base_name,
    select_no_needs,
    select_stage_predecessors,
    select_unknown_job,
    stages_custom,
    stages_default,
    stages_undefined_invalid,
    start_in_invalid,
    timeout_exceeded,
    trigger_child,
    trigger_depend_failure,
    user_overrides_predefined,
    variables_dollar_escape,
    variables_global_and_job,
    variables_options_cli,
    variables_options_invalid,
    variables_value_description_expand,
    when_always_needs_failed,
    when_delayed,
    when_manual_blocking,
    when_manual_not_blocking,
    when_never,
    when_on_failure_always,
    when_on_failure_not_run,
    workflow_name,
    workflow_rules_changes,
    workflow_rules_never,
    workflow_rules_no_match,
    workflow_rules_variables,
    yaml11_booleans,
}
