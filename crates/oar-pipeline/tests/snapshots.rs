//! Whole plans and previews of a few rich pipelines, as insta YAML snapshots; and a large
//! generated pipeline that must plan fast.

use std::path::Path;

use oar_pipeline::{Context, Decision, DirSource, MemorySource, Outcome, Pipeline, Scheduler};

fn ctx() -> Context {
    Context::with_variables([
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_COMMIT_REF_NAME", "main"),
        ("CI_DEFAULT_BRANCH", "main"),
        ("CI_PIPELINE_SOURCE", "push"),
    ])
}

fn load(fixture: &str) -> Pipeline {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    Pipeline::load(&DirSource::new(dir), ".gitlab-ci.yml", &ctx()).unwrap()
}

#[test]
fn plan_snapshots() {
    for fixture in [
        "needs_dag",
        "include_inputs",
        "default_keywords",
        "variable_precedence",
        "parallel_matrix",
    ] {
        let plan = load(fixture).plan(&ctx()).unwrap();
        insta::assert_yaml_snapshot!(format!("plan_{fixture}"), plan);
    }
}

#[test]
fn preview_snapshots() {
    for fixture in [
        "extends_deep_merge",
        "include_local",
        "reference_tags",
        "include_inputs",
        "anchors_merge",
    ] {
        insta::assert_snapshot!(format!("preview_{fixture}"), load(fixture).preview());
    }
}

#[test]
fn preview_reads_back_as_the_same_pipeline() {
    for fixture in [
        "extends_deep_merge",
        "include_local",
        "reference_tags",
        "default_keywords",
        "artifacts_full",
        "cache_variants",
    ] {
        let p = load(fixture);
        let again = Pipeline::parse_str(&p.preview(), &ctx()).unwrap();
        assert_eq!(again.preview(), p.preview(), "{fixture}");
        let (a, b) = (p.plan(&ctx()).unwrap(), again.plan(&ctx()).unwrap());
        assert_eq!(
            serde_json::to_string(&a.jobs).unwrap(),
            serde_json::to_string(&b.jobs).unwrap(),
            "{fixture}"
        );
    }
}

fn generated(jobs: usize) -> String {
    let stages = 10;
    let mut y = String::from("stages:\n");
    for s in 0..stages {
        y.push_str(&format!("  - s{s}\n"));
    }
    y.push_str(".template:\n  image: alpine\n  variables:\n    T: template\n  script: [echo $CI_JOB_NAME]\n");
    for i in 0..jobs {
        let s = i * stages / jobs;
        y.push_str(&format!("job{i}:\n  extends: .template\n  stage: s{s}\n"));
        if s > 0 && i % 2 == 0 {
            let prev = i - jobs / stages;
            y.push_str(&format!("  needs: [job{prev}]\n"));
        }
        if i % 7 == 0 {
            y.push_str("  rules:\n    - if: $CI_COMMIT_BRANCH == \"main\"\n      variables:\n        R: rule\n");
        }
    }
    y
}

#[test]
fn a_2000_job_pipeline_plans_and_schedules_quickly() {
    let text = generated(2000);
    let source = MemorySource::new().with(".gitlab-ci.yml", &text);
    let start = std::time::SystemTime::now();
    let p = Pipeline::load(&source, ".gitlab-ci.yml", &ctx()).unwrap();
    let plan = p.plan(&ctx()).unwrap();
    assert_eq!(plan.jobs.len(), 2000);
    let mut sched = Scheduler::new(&plan);
    let mut ran = 0;
    loop {
        let runs: Vec<usize> = sched
            .poll()
            .into_iter()
            .filter_map(|d| {
                if let Decision::Run { job, .. } = d {
                    Some(job)
                } else {
                    None
                }
            })
            .collect();
        if runs.is_empty() {
            break;
        }
        for i in runs {
            ran += 1;
            sched.finish(i, Outcome::Success);
        }
    }
    assert_eq!(ran, 2000);
    assert!(sched.is_done());
    let elapsed = start.elapsed().unwrap_or_default();
    assert!(elapsed.as_millis() < 1000, "took {elapsed:?}");
}
