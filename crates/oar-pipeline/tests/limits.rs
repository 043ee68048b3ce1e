//! Inputs that once made loading or planning hang, exhaust memory or overflow the stack: each
//! must end quickly with an error (or a result), never a panic.

use oar_pipeline::{Context, MemorySource, Pipeline, PipelineError};

fn ctx() -> Context {
    Context::with_variables([("CI_COMMIT_BRANCH", "main"), ("CI_COMMIT_REF_NAME", "main")])
}

/// Loads and plans `files` (the first is `.gitlab-ci.yml`); each used to hang or run out of
/// memory, so the test run's time-out catches a regression.
fn load_plan(files: &[(&str, &str)]) -> Result<oar_pipeline::Plan, PipelineError> {
    let mut source = MemorySource::new();
    for (p, t) in files {
        source.insert(p, t);
    }
    let ctx = ctx();
    Pipeline::load(&source, ".gitlab-ci.yml", &ctx).and_then(|p| p.plan(&ctx))
}

fn too_large(files: &[(&str, &str)]) -> String {
    let e = load_plan(files).expect_err("too large").to_string();
    assert!(e.contains("too large"), "{e}");
    e
}

/// A hidden job of about `10^levels` values made with aliases.
fn bomb(levels: usize) -> String {
    let mut t = String::from(".a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..levels {
        let p = i - 1;
        t.push_str(&format!(
            ".a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    t
}

#[test]
fn the_same_include_many_times_counts_every_copy() {
    let main: String = "include:\n".to_owned() + &"  - big.yml\n".repeat(140);
    too_large(&[(".gitlab-ci.yml", &main), ("big.yml", &bomb(5))]);
}

#[test]
fn extends_copies_count() {
    let mut main = bomb(5);
    main.push_str(".big:\n  script: x\n  variables:\n    V: *a4\n");
    for i in 0..200 {
        main.push_str(&format!("j{i}:\n  extends: .big\n"));
    }
    too_large(&[(".gitlab-ci.yml", &main)]);
}

#[test]
fn nested_references_count() {
    // Each level refers ten times to the one below: 10^10 copies without a budget.
    let mut main = String::from(".r0:\n  s: [a, b, c, d, e, f, g, h, i, j]\n");
    for i in 1..10 {
        let p = i - 1;
        main.push_str(&format!(".r{i}:\n  s:\n"));
        for _ in 0..10 {
            main.push_str(&format!("    - !reference [.r{p}, s]\n"));
        }
    }
    main.push_str("job:\n  script: !reference [.r9, s]\n");
    too_large(&[(".gitlab-ci.yml", &main)]);
}

#[test]
fn input_copies_count() {
    let mut inc = String::from("spec:\n  inputs:\n    big:\n      type: array\n      default: ");
    inc.push_str(&format!(
        "[{}]\n---\n",
        vec!["x".repeat(1000); 1000].join(", ")
    ));
    for i in 0..200 {
        inc.push_str(&format!("j{i}:\n  script: $[[ inputs.big ]]\n"));
    }
    too_large(&[(".gitlab-ci.yml", "include: t.yml\n"), ("t.yml", &inc)]);
}

#[test]
fn parallel_explosion_is_refused() {
    let mut main = String::from(".p: &p\n  script: x\n  parallel: 200\n");
    for i in 0..100 {
        main.push_str(&format!("j{i}: *p\n"));
    }
    too_large(&[(".gitlab-ci.yml", &main)]);
    let e = load_plan(&[(
        ".gitlab-ci.yml",
        "job:\n  script: x\n  parallel: 1000000000\n",
    )])
    .expect_err("parallel");
    assert!(e.to_string().contains("between 1 and 200"), "{e}");
}

#[test]
fn matrix_explosion_is_cut_at_200() {
    let values = (0..1000)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let main = format!(
        "job:\n  script: x\n  parallel:\n    matrix:\n      - A: [{values}]\n        B: [{values}]\n        C: [{values}]\n"
    );
    let plan = load_plan(&[(".gitlab-ci.yml", &main)]).expect("plan");
    assert_eq!(plan.jobs.len(), 200);
}

#[test]
fn global_variables_times_jobs_is_refused() {
    let mut main = String::from("variables:\n");
    for i in 0..20_000 {
        main.push_str(&format!("  V{i}: x\n"));
    }
    main.push_str(".p: &p\n  script: x\n  parallel: 200\n");
    for i in 0..20 {
        main.push_str(&format!("j{i}: *p\n"));
    }
    too_large(&[(".gitlab-ci.yml", &main)]);
}

#[test]
fn matrix_needs_explosion_is_refused() {
    let mut main = String::from(
        "stages: [a, b]\nwide:\n  stage: a\n  script: x\n  parallel: 200\n.n: &n\n  stage: b\n  script: x\n  parallel: 200\n  needs: [wide]\n",
    );
    for i in 0..10 {
        main.push_str(&format!("j{i}: *n\n"));
    }
    too_large(&[(".gitlab-ci.yml", &main)]);
}

#[test]
fn nested_aliases_cannot_exceed_the_depth_limit() {
    let mut main = format!(".a0: &a0 {}1{}\n", "[".repeat(200), "]".repeat(200));
    for i in 1..10 {
        let p = i - 1;
        main.push_str(&format!(
            ".a{i}: &a{i} {}*a{p}{}\n",
            "[".repeat(100),
            "]".repeat(100)
        ));
    }
    let e = load_plan(&[(".gitlab-ci.yml", &main)]).expect_err("deep");
    assert!(e.to_string().contains("levels deep"), "{e}");
}

#[test]
fn exponential_variables_are_cut() {
    let mut main = String::from("variables:\n");
    for c in 'A'..='J' {
        let next = char::from(u8::try_from(c).unwrap() + 1);
        main.push_str(&format!("  {c}: \"{}\"\n", format!("${next}").repeat(500)));
    }
    main.push_str("job:\n  script: x\n  resource_group: $A\n  environment: $A\n");
    load_plan(&[(".gitlab-ci.yml", &main)]).expect("plan");
}

#[test]
fn long_and_chains_do_not_overflow_the_stack() {
    let cond = vec!["$CI_COMMIT_BRANCH"; 100_000].join(" && ");
    let main = format!("job:\n  script: x\n  rules:\n    - if: '{cond}'\n");
    let plan = load_plan(&[(".gitlab-ci.yml", &main)]).expect("plan");
    assert_eq!(plan.jobs.len(), 1);
}
