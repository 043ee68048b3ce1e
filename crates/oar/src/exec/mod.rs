//! `oar exec`: a repository's `.gitlab-ci.yml`, planned as GitLab would plan a push of the
//! checked-out commit (`oar-pipeline`), shown (`--list`, `--preview`) or run: every job through
//! the same job driver as a job from GitLab, with the shell executor, against the local
//! [`coordinator`] that stands in for GitLab (`run`).

pub(crate) mod coordinator;
pub(crate) mod git;
pub(crate) mod payload;
pub(crate) mod progress;
pub(crate) mod run;

use crate::cli::ExecArgs;
use anyhow::{Context as _, bail};
use oar_pipeline::{Context, DirSource, Pipeline, Plan};
use std::fmt::Write as _;
use std::process::ExitCode;

/// Exit status of a pipeline that is not valid (GitLab's CI lint would refuse it).
pub const EXIT_INVALID: u8 = 2;

/// A `KEY=VALUE` of `--variable` or of a `--variables-file` line.
fn parse_assignment(text: &str, origin: &str) -> anyhow::Result<(String, String)> {
    let Some((key, value)) = text.split_once('=') else {
        bail!("{origin}: {text:?} is not KEY=VALUE");
    };
    let key = key.trim();
    let valid = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if !valid {
        bail!(
            "{origin}: {key:?} is not a variable name (letters, digits and _, not starting with a digit)"
        );
    }
    Ok((key.to_string(), value.to_string()))
}

/// The user's variables: `--variables-file` lines first, then `--variable`s (later ones win).
fn user_variables(args: &ExecArgs) -> anyhow::Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    for file in &args.variables_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read --variables-file {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            vars.push(parse_assignment(
                line,
                &format!("{}:{}", file.display(), n + 1),
            )?);
        }
    }
    for v in &args.variable {
        vars.push(parse_assignment(v, "--variable")?);
    }
    for v in &args.masked_variable {
        vars.push(parse_assignment(v, "--masked-variable")?);
    }
    Ok(vars)
}

/// The planning context of the checkout: predefined variables, files, changes, the user's
/// variables and manual jobs.
async fn context(checkout: &git::Checkout, args: &ExecArgs) -> anyhow::Result<Context> {
    let mut ctx = Context::default();
    ctx.variables.extend(checkout.predefined(1));
    ctx.user_variables.extend(user_variables(args)?);
    let (files, changed) = tokio::join!(checkout.files(), checkout.changed_files());
    ctx.files = Some(files?);
    ctx.changed_files = changed?;
    ctx.manual_jobs.extend(args.manual.iter().cloned());
    Ok(ctx)
}

/// The literal refs of `changes:compare_to` in the pipeline's rules (`$VARIABLE` refs are left
/// to the planner, which notes that it used the push's changes).
fn compare_to_refs(pipeline: &Pipeline) -> Vec<String> {
    let rules = pipeline
        .jobs()
        .values()
        .filter_map(|j| j.rules.as_ref())
        .chain(pipeline.workflow().rules.as_ref());
    let mut refs: Vec<String> = rules
        .flatten()
        .filter_map(|r| r.changes.as_ref()?.compare_to.clone())
        .filter(|r| !r.contains('$'))
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

/// `oar exec`.
pub async fn exec(args: ExecArgs, metrics: crate::metrics::Metrics) -> anyhow::Result<ExitCode> {
    let dir = match &args.directory {
        Some(d) => d.clone(),
        None => std::env::current_dir().context("no current directory")?,
    };
    let checkout = git::Checkout::discover(&dir, &args.file).await?;
    // The snapshot the jobs fetch is taken while the pipeline is read and planned, unless
    // nothing will run.
    let runs = !args.list && !args.preview;
    let (ctx, sha) = tokio::join!(context(&checkout, &args), async {
        if runs {
            Some(run::prepare(&checkout).await)
        } else {
            None
        }
    });
    let ctx = ctx?;
    let source = DirSource::new(&checkout.root);
    let file = args.file.to_string_lossy().into_owned();
    if !checkout.root.join(&args.file).is_file() {
        eprintln!(
            "{file}: no such file in {} (--file names the pipeline file)",
            checkout.root.display()
        );
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let mut ctx = ctx;
    let pipeline = Pipeline::load(&source, &file, &ctx);
    if let Ok(p) = &pipeline {
        for r in compare_to_refs(p) {
            if let Some(files) = checkout.changed_files_against(&r).await? {
                ctx.changed_files_against.insert(r, files);
            }
        }
    }
    let planned = pipeline.and_then(|p| {
        let plan = p.plan(&ctx)?;
        Ok((p, plan))
    });

    let (pipeline, plan) = match planned {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("The pipeline is not valid: nothing was run.");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    if args.preview {
        print!("{}", pipeline.preview());
        return Ok(ExitCode::SUCCESS);
    }
    if args.list {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&plan).context("the plan as JSON")?
            );
        } else {
            print!("{}", list(&plan, &checkout));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let selected = if args.jobs.is_empty() {
        None
    } else {
        match run::select(&plan, &args.jobs, args.no_needs) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("oar exec: {e:#}");
                return Ok(ExitCode::from(EXIT_INVALID));
            }
        }
    };
    if !plan.workflow.created {
        println!("No pipeline: {}", plan.workflow.reason);
        return Ok(ExitCode::SUCCESS);
    }
    for note in &plan.notes {
        eprintln!("note: {note}");
    }
    let options = run::RunOptions {
        concurrency: args.concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
        }),
        color: run::color(),
        executor: args.executor,
        config: args.config.clone(),
        advertise_address: args.advertise_address.clone(),
        selected,
        pipeline: run::PipelineRun::default(),
        timestamps: args.timestamps,
        masked: args
            .masked_variable
            .iter()
            .filter_map(|v| v.split_once('=').map(|(k, _)| k.trim().to_string()))
            .collect(),
    };
    let sha = sha.context("no snapshot of the work tree")??;
    let (results, passed) =
        run::run(&plan, &pipeline, &ctx, &checkout, sha, metrics, options).await?;
    if args.json {
        let jobs: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name, "stage": r.stage, "status": r.status,
                    "duration_s": r.duration.map(|d| d.as_secs_f64()),
                })
            })
            .filter(|j| j["status"] != "not selected")
            .chain(plan.skipped.iter().map(|s| {
                serde_json::json!({"name": s.name, "stage": s.stage, "status": format!("skipped: {}", s.reason)})
            }))
            .collect();
        println!("{}", serde_json::json!({"passed": passed, "jobs": jobs}));
    } else {
        // With chosen jobs, the summary is about them (and what they needed) alone.
        let skipped = if args.jobs.is_empty() {
            plan.skipped.as_slice()
        } else {
            &[]
        };
        print!("{}", run::summary(&results, skipped, passed));
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--list`: the jobs by stage, what each waits for, and the skipped jobs with why.
fn list(plan: &Plan, checkout: &git::Checkout) -> String {
    let mut out = String::new();
    let name = plan.name.as_deref().unwrap_or("pipeline");
    let _ = writeln!(
        out,
        "{name} for {} at {} ({})",
        checkout.ref_name(),
        &checkout.sha[..checkout.sha.len().min(8)],
        checkout.project_path
    );
    if !plan.workflow.created {
        let _ = writeln!(out, "No pipeline: {}", plan.workflow.reason);
        return out;
    }
    for stage in &plan.stages {
        let jobs: Vec<_> = plan.jobs.iter().filter(|j| &j.stage == stage).collect();
        let skipped: Vec<_> = plan.skipped.iter().filter(|j| &j.stage == stage).collect();
        if jobs.is_empty() && skipped.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{stage}");
        for job in jobs {
            let mut line = format!("  {:<32} {}", job.name, job.when.as_str());
            if job.allow_failure.allowed {
                line.push_str(" (allowed to fail)");
            }
            if let Some(needs) = &job.needs {
                let names: Vec<&str> = needs.iter().map(|n| n.job.as_str()).collect();
                let _ = write!(
                    line,
                    "  needs: {}",
                    if names.is_empty() {
                        "[]".to_string()
                    } else {
                        names.join(", ")
                    }
                );
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        for job in skipped {
            let _ = writeln!(out, "  {:<32} skipped: {}", job.name, job.reason);
        }
    }
    for note in &plan.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_are_checked() {
        assert_eq!(
            parse_assignment("A_1=x=y", "--variable").unwrap(),
            ("A_1".into(), "x=y".into())
        );
        for bad in ["noequals", "=v", "1A=v", "A-B=v"] {
            assert!(parse_assignment(bad, "--variable").is_err(), "{bad}");
        }
    }
}
