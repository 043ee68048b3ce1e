//! The fuzz harnesses, shared by `fuzz/fuzz_targets/*.rs` and `tests/fuzz_corpus.rs` (which
//! replays the seed corpora on stable). Not part of the API.

use std::collections::HashMap;

use crate::{Context, Decision, MemorySource, Outcome, Pipeline, Scheduler};

/// Separates the main file from the included one in a `load_plan` input.
pub const SEPARATOR: &[u8] = b"\n#--8<--\n";

/// The path the second part of a `load_plan` input is readable at.
pub const INCLUDED: &str = "inc.yml";

fn context() -> Context {
    let mut ctx = Context::with_variables([
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_COMMIT_REF_NAME", "main"),
        ("CI_DEFAULT_BRANCH", "main"),
        ("CI_PIPELINE_SOURCE", "push"),
        ("CI_PROJECT_NAME", "demo"),
        ("INC", INCLUDED),
    ]);
    ctx.changed_files = Some(vec!["src/main.rs".into(), "README.md".into()]);
    ctx.files = Some(vec![
        ".gitlab-ci.yml".into(),
        INCLUDED.into(),
        "src/main.rs".into(),
        "README.md".into(),
    ]);
    ctx.manual_jobs.insert("deploy".into());
    ctx
}

/// `load_plan`: `data` is the main `.gitlab-ci.yml`, and after [`SEPARATOR`] the file
/// [`INCLUDED`]. Loads, plans (child pipelines too), drives a [`Scheduler`] to the end, then
/// loads and plans the preview again. Panics only on a bug.
pub fn fuzz_load_plan(data: &[u8]) {
    let (main, inc) = match data.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        Some(at) => (&data[..at], Some(&data[at + SEPARATOR.len()..])),
        None => (data, None),
    };
    let main = String::from_utf8_lossy(main);
    let inc = inc.map(String::from_utf8_lossy);
    let mut source = MemorySource::new().with(".gitlab-ci.yml", &main);
    if let Some(inc) = &inc {
        source.insert(INCLUDED, inc);
    }
    let ctx = context();
    let Ok(pipeline) = Pipeline::load(&source, ".gitlab-ci.yml", &ctx) else {
        return;
    };
    run(&pipeline, &ctx);
    let preview = pipeline.preview();
    let mut again = MemorySource::new().with(".gitlab-ci.yml", &preview);
    if let Some(inc) = &inc {
        again.insert(INCLUDED, inc);
    }
    if let Ok(p) = Pipeline::load(&again, ".gitlab-ci.yml", &ctx) {
        run(&p, &ctx);
    }
}

fn run(pipeline: &Pipeline, ctx: &Context) {
    for name in pipeline.jobs().keys() {
        if let Some(child) = pipeline.child(name) {
            let _ = child.plan(ctx).map(|p| schedule(&p));
        }
    }
    if let Ok(plan) = pipeline.plan(ctx) {
        schedule(&plan);
    }
}

/// Runs every job the scheduler hands out, failing every other one.
fn schedule(plan: &crate::Plan) {
    let mut s = Scheduler::new(plan);
    let mut fail = false;
    // Every round decides at least one job, so there are at most as many rounds as jobs.
    for _ in 0..=plan.jobs.len() {
        let runs: Vec<usize> = s
            .poll()
            .into_iter()
            .filter_map(|d| match d {
                Decision::Run { job, .. } => Some(job),
                _ => None,
            })
            .collect();
        if runs.is_empty() {
            assert!(s.is_done(), "the scheduler stopped with jobs pending");
            return;
        }
        for job in runs {
            let outcome = if fail {
                Outcome::Failed { exit_code: Some(1) }
            } else {
                Outcome::Success
            };
            fail = !fail;
            s.finish(job, outcome);
        }
    }
    panic!("the scheduler did not finish");
}

/// `rules_expr`: `data` as a `rules:if` expression, parsed and evaluated against a few
/// variables.
pub fn fuzz_rules_expr(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars: HashMap<String, String> = [
        ("BRANCH", "main"),
        ("EMPTY", ""),
        ("TAG", "v1.2.3"),
        ("RE", "/^ma/i"),
        ("BAD_RE", "/(/"),
        ("CI_COMMIT_BRANCH", "main"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Ok(e) = crate::expr::Expr::parse(text) {
        let _ = e.eval(&vars);
        let _ = e.source();
    }
}
