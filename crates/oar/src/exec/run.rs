//! Running a planned pipeline: each job through the same job driver as a job from GitLab
//! (`crate::job::run`, shell executor), talking to the local [`Coordinator`] in GitLab's
//! place, along the plan's stages and needs, several at once.

use super::coordinator::{Coordinator, CoordinatorOptions, FinalState, FinalStatus, LocalJob};
use super::git::Checkout;
use super::payload::{FinishedArtifacts, JobIdentity, PipelineFacts, payload};
use crate::cli::ExecExecutor;
use crate::job::JobEnv;
use crate::metrics::Metrics;
use anyhow::Context as _;
use oar_config::RunnerConfig;
use oar_job::report::ReporterConfig;
use oar_pipeline::{Decision, Outcome, Plan, Scheduler};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a job of the pipeline ended, for the summary.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// The job's name.
    pub name: String,
    /// Its stage.
    pub stage: String,
    /// `success`, `failed`, `failed (allowed)`, `canceled`, `skipped: why`, `manual`, ...
    pub status: String,
    /// How long it ran.
    pub duration: Option<Duration>,
}

/// What `oar exec` needs to run a plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Jobs at once.
    pub concurrency: usize,
    /// Colour and terminal niceties.
    pub color: bool,
    /// Where jobs run.
    pub executor: ExecExecutor,
    /// `--config` (the Kubernetes executor's settings).
    pub config: Option<std::path::PathBuf>,
    /// `--advertise-address`: the host job pods reach the coordinator at.
    pub advertise_address: Option<String>,
    /// The jobs to run (positions in the plan); `None` runs them all. The others count as
    /// passed without running, so the chosen ones are not held back by them.
    pub selected: Option<Vec<bool>>,
    /// `--timestamps`: each output line after the time it was written.
    pub timestamps: bool,
    /// The variables to mask in the jobs' logs (`--masked-variable`).
    pub masked: std::collections::BTreeSet<String>,
    /// Which pipeline this is: the push's, or a child of a trigger job.
    pub pipeline: PipelineRun,
}

/// The pipeline a [`run`] runs.
#[derive(Debug, Clone)]
pub struct PipelineRun {
    /// `CI_PIPELINE_ID`.
    pub id: u64,
    /// `CI_PIPELINE_SOURCE`: `push`, or `parent_pipeline` for a child.
    pub source: &'static str,
    /// Before each job's name in the output and the summary (`child > ` for a child's jobs).
    pub label: String,
    /// Under `.oar/`: where the pipeline's coordinator keeps its artifacts (`""` for the
    /// push's pipeline, `pipelines/<id>` for a child, so ids do not collide).
    pub dir: String,
}

impl Default for PipelineRun {
    fn default() -> Self {
        PipelineRun {
            id: 1,
            source: "push",
            label: String::new(),
            dir: String::new(),
        }
    }
}

/// The next child pipeline's `CI_PIPELINE_ID` (the push's pipeline is 1).
static NEXT_PIPELINE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(2);

/// A child pipeline being run for the trigger job `index`.
type ChildRun<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = (usize, Duration, anyhow::Result<(Vec<JobResult>, bool)>)>
            + 'a,
    >,
>;

/// The planning context of the child pipeline of trigger job `job`: the parent's, with the
/// trigger job's YAML variables as pipeline variables (`forward:yaml_variables`, default on)
/// and the parent's pipeline variables only with `forward:pipeline_variables`.
fn child_context(
    ctx: &oar_pipeline::Context,
    job: &oar_pipeline::PlannedJob,
) -> oar_pipeline::Context {
    use oar_pipeline::VariableSource;
    let mut child = ctx.clone();
    child
        .variables
        .insert("CI_PIPELINE_SOURCE".into(), "parent_pipeline".into());
    let trigger = job.trigger.clone().unwrap_or_default();
    if !trigger.forward_pipeline_variables {
        child.user_variables.clear();
    }
    if trigger.forward_yaml_variables {
        for v in job.variables.iter().filter(|v| {
            matches!(
                v.source,
                VariableSource::Global
                    | VariableSource::Job
                    | VariableSource::Matrix
                    | VariableSource::Rule
            )
        }) {
            child.user_variables.insert(v.name.clone(), v.value.clone());
        }
    }
    child
}

/// The positions of the jobs `names` choose (a name, or the base name of parallel and matrix
/// jobs), plus, unless `no_needs`, what they need: their `needs`, or for a job without
/// `needs` every job of the earlier stages, and so on. An unknown name is an error listing the
/// jobs there are.
pub fn select(plan: &Plan, names: &[String], no_needs: bool) -> anyhow::Result<Vec<bool>> {
    let mut chosen = vec![false; plan.jobs.len()];
    let mut todo: Vec<usize> = Vec::new();
    for name in names {
        let hits: Vec<usize> = plan
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| &j.name == name || &j.base_name == name)
            .map(|(i, _)| i)
            .collect();
        if hits.is_empty() {
            if let Some(s) = plan.skipped.iter().find(|s| &s.name == name) {
                anyhow::bail!("job {name:?} is not in this pipeline: {}", s.reason);
            }
            let known: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
            anyhow::bail!("no job {name:?}; the pipeline's jobs: {}", known.join(", "));
        }
        todo.extend(hits);
    }
    while let Some(i) = todo.pop() {
        if std::mem::replace(&mut chosen[i], true) || no_needs {
            continue;
        }
        let job = &plan.jobs[i];
        match &job.needs {
            Some(needs) => todo.extend(needs.iter().filter_map(|n| plan.position(&n.job))),
            None => todo.extend(
                plan.jobs
                    .iter()
                    .enumerate()
                    .filter(|(_, j)| j.stage_index < job.stage_index)
                    .map(|(k, _)| k),
            ),
        }
    }
    Ok(chosen)
}

/// The work tree as a commit: `HEAD` plus uncommitted changes and untracked files that git
/// does not ignore (never `.oar/`), under the ref `refs/oar/exec` so that the jobs can fetch
/// it. `HEAD` itself when nothing changed.
async fn snapshot(checkout: &Checkout, state: &Path) -> anyhow::Result<String> {
    // A private index: the user's own index and work tree are not touched.
    let index = state.join("snapshot.index");
    let _ = std::fs::remove_file(&index);
    let git = |args: &[&str]| {
        let mut c = tokio::process::Command::new("git");
        c.arg("-C")
            .arg(&checkout.git_root)
            .args(args)
            .env("GIT_INDEX_FILE", &index)
            .env("GIT_AUTHOR_NAME", "oar exec")
            .env("GIT_AUTHOR_EMAIL", "oar-exec@localhost")
            .env("GIT_COMMITTER_NAME", "oar exec")
            .env("GIT_COMMITTER_EMAIL", "oar-exec@localhost");
        c
    };
    let run = |mut c: tokio::process::Command, what: &'static str| async move {
        let out = c.output().await.with_context(|| format!("git {what}"))?;
        anyhow::ensure!(
            out.status.success(),
            "git {what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok::<_, anyhow::Error>(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    // A copy of the user's index gives `add` the files' stat data, so it hashes only what
    // changed; without one (or when it cannot be read), the index of HEAD.
    let user_index = checkout.git_dir.join("index");
    if tokio::fs::copy(&user_index, &index).await.is_err() {
        run(git(&["read-tree", "HEAD"]), "read-tree").await?;
    }
    let oar_dir = format!(":(exclude){}.oar", checkout.prefix);
    run(git(&["add", "-A", "--", ".", &oar_dir]), "add (snapshot)").await?;
    let message = format!("oar exec: the work tree of {}", checkout.sha);
    let commit = if checkout.prefix.is_empty() {
        let tree = run(git(&["write-tree"]), "write-tree").await?;
        if tree == checkout.tree {
            checkout.sha.clone()
        } else {
            run(
                git(&["commit-tree", &tree, "-p", "HEAD", "-m", &message]),
                "commit-tree",
            )
            .await?
        }
    } else {
        // A project inside the repository: its directory is the commit's root.
        let prefix = format!("--prefix={}", checkout.prefix);
        let tree = run(git(&["write-tree", &prefix]), "write-tree --prefix").await?;
        run(git(&["commit-tree", &tree, "-m", &message]), "commit-tree").await?
    };
    // A loose ref already there (the usual second run on an unchanged tree) is kept.
    let loose = checkout.common_dir.join("refs/oar/exec");
    let current = tokio::fs::read_to_string(&loose).await.unwrap_or_default();
    if current.trim() != commit {
        run(git(&["update-ref", "refs/oar/exec", &commit]), "update-ref").await?;
    }
    Ok(commit)
}

/// The variables of a `reports:dotenv` artifact (gzip as the driver uploads it, or raw):
/// `KEY=VALUE` lines, `#` comments and blank lines skipped, as GitLab reads them.
fn read_dotenv(path: &Path, format: &str) -> anyhow::Result<Vec<(String, String)>> {
    use std::io::Read as _;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = if format == "gzip" {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .read_to_string(&mut text)
            .context("not a gzip of UTF-8 text")?;
        text
    } else {
        String::from_utf8(bytes).context("not UTF-8 text")?
    };
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            anyhow::bail!("line {}: {line:?} is not KEY=VALUE", n + 1);
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        vars.push((k.trim().to_string(), v.to_string()));
    }
    Ok(vars)
}

/// Whether a failed attempt of `job` is tried again: fewer than `retry:max` retries so far,
/// and the failure is one `retry:when` (default `always`) and `retry:exit_codes` name.
fn retry_allowed(job: &oar_pipeline::PlannedJob, done: u32, end: &FinalState) -> bool {
    let Some(retry) = &job.retry else {
        return false;
    };
    if done >= retry.max {
        return false;
    }
    let reason = end.failure_reason.as_deref().unwrap_or("unknown_failure");
    let when_ok = retry.when.is_empty() || retry.when.iter().any(|w| w == "always" || w == reason);
    let code_ok =
        retry.exit_codes.is_empty() || end.exit_code.is_some_and(|c| retry.exit_codes.contains(&c));
    when_ok && code_ok
}

/// A job token: 24 random letters and digits.
fn random_token() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// The runner the jobs run on, talking to the coordinator at `url` with a token of its own
/// (its short form names the job pods, so two `oar exec` runs never share pods). Shell: builds
/// and cache under `.oar/`. Kubernetes: the first runner of `config` (its
/// `[runners.kubernetes]`, feature flags and the like), or the defaults.
fn runner(state: &Path, url: &str, options: &RunOptions) -> anyhow::Result<RunnerConfig> {
    let token = format!("oarexec{}", random_token());
    let mut runner = match (&options.executor, &options.config) {
        (ExecExecutor::Kubernetes, Some(config)) => oar_config::load(config)?
            .config
            .runners
            .into_iter()
            .next()
            .with_context(|| format!("{}: no [[runners]] table", config.display()))?,
        (ExecExecutor::Kubernetes, None) => {
            let text = "[[runners]]\nname = \"oar-exec\"\nurl = \"http://127.0.0.1/\"\ntoken = \"x\"\nexecutor = \"kubernetes\"\n[runners.kubernetes]\n";
            first_runner(text)?
        }
        (ExecExecutor::Shell, _) => {
            let text = format!(
                "[[runners]]\nname = \"oar-exec\"\nurl = \"http://127.0.0.1/\"\ntoken = \"x\"\nexecutor = \"shell\"\nbuilds_dir = {:?}\ncache_dir = {:?}\n",
                state.join("builds").display().to_string(),
                state.join("cache").display().to_string(),
            );
            first_runner(&text)?
        }
    };
    runner.name = "oar-exec".into();
    runner.url = oar_config::ServerUrl::parse(url)
        .map_err(|e| anyhow::anyhow!("the coordinator's URL {url}: {e}"))?;
    runner.token = oar_config::SecretString::from(token);
    if options.executor == ExecExecutor::Kubernetes {
        runner.executor = oar_config::Executor::Kubernetes;
    }
    Ok(runner)
}

fn first_runner(text: &str) -> anyhow::Result<RunnerConfig> {
    oar_config::parse_str(text, Path::new("<oar exec>"))?
        .config
        .runners
        .into_iter()
        .next()
        .context("no runner")
}

/// Strips ANSI escapes and GitLab's section markers from a line for a plain terminal or a
/// file; with colour, only the section markers go.
fn display_line(line: &str, color: bool) -> String {
    let mut line = line.trim_end_matches('\r').to_string();
    // `section_start:TS:NAME\r\x1b[0K` / `section_end:...`: keep what follows (the title).
    for marker in ["section_start:", "section_end:"] {
        while let Some(at) = line.find(marker) {
            let rest = &line[at..];
            let end = rest.find("\x1b[0K").map_or(rest.len(), |e| e + 4);
            line.replace_range(at..at + end, "");
        }
    }
    if color {
        return line;
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Prints a job's trace as it arrives, each line prefixed with the job's name.
/// `HH:MM:SS.mmm ` (UTC) with `--timestamps`, else nothing.
fn stamp(timestamps: bool) -> String {
    if !timestamps {
        return String::new();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03} ",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_millis()
    )
}

fn print_output(
    terminal: super::progress::Terminal,
    name: String,
    color: bool,
    timestamps: bool,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>,
    palette: usize,
) -> tokio::task::JoinHandle<()> {
    const COLORS: [&str; 6] = ["36", "35", "33", "32", "34", "31"];
    let prefix = if color {
        format!("\x1b[{}m{name}\x1b[0m │ ", COLORS[palette % COLORS.len()])
    } else {
        format!("{name} | ")
    };
    tokio::spawn(async move {
        let mut pending: Vec<u8> = Vec::new();
        let emit = |bytes: &[u8], pending: &mut Vec<u8>, flush: bool| {
            pending.extend_from_slice(bytes);
            let mut out = String::new();
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1]);
                let _ = writeln!(
                    out,
                    "{prefix}{}{}",
                    stamp(timestamps),
                    display_line(&text, color)
                );
            }
            if flush && !pending.is_empty() {
                let text = String::from_utf8_lossy(pending).into_owned();
                let _ = writeln!(
                    out,
                    "{prefix}{}{}",
                    stamp(timestamps),
                    display_line(&text, color)
                );
                pending.clear();
            }
            terminal.print(&out);
        };
        while let Some(chunk) = rx.recv().await {
            emit(&chunk, &mut pending, false);
        }
        emit(&[], &mut pending, true);
    })
}

/// The key of every `cache:key:files` list of the plan.
async fn file_keys(
    plan: &Plan,
    checkout: &Checkout,
    snapshot: &str,
) -> anyhow::Result<std::collections::HashMap<Vec<String>, String>> {
    let mut keys = std::collections::HashMap::new();
    for job in &plan.jobs {
        for cache in &job.caches {
            if let oar_pipeline::model::CacheKey::Files { files, .. } = &cache.key
                && !keys.contains_key(files)
            {
                let digest = checkout.files_digest(files, snapshot).await?;
                keys.insert(files.clone(), digest);
            }
        }
    }
    Ok(keys)
}

/// Makes `.oar/` (ignoring itself, so it never shows in `git status` or in a snapshot) and
/// the snapshot commit of the work tree the jobs fetch ([`snapshot`]).
pub async fn prepare(checkout: &Checkout) -> anyhow::Result<String> {
    let state = checkout.root.join(".oar");
    tokio::fs::create_dir_all(&state)
        .await
        .with_context(|| format!("cannot create {}", state.display()))?;
    tokio::fs::write(state.join(".gitignore"), "*\n")
        .await
        .context("writing .oar/.gitignore")?;
    snapshot(checkout, &state).await
}

/// Runs the plan; the jobs' results in plan order, and whether the pipeline passed. `sha` is
/// the snapshot of [`prepare`].
pub async fn run(
    plan: &Plan,
    pipeline: &oar_pipeline::Pipeline,
    ctx: &oar_pipeline::Context,
    checkout: &Checkout,
    sha: String,
    metrics: Metrics,
    options: RunOptions,
) -> anyhow::Result<(Vec<JobResult>, bool)> {
    let state = checkout.root.join(".oar");
    let git_dir = checkout.common_dir.clone();
    let mut copts = CoordinatorOptions::new(state.join(&options.pipeline.dir));
    copts.repo = Some(git_dir);
    copts.project_path = checkout.project_path.clone();
    if let Some(host) = &options.advertise_address {
        // Reachable from elsewhere than this machine's loopback: every interface.
        copts.bind = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        copts.advertise_host = Some(host.clone());
    }
    let coordinator = Coordinator::start(copts).await?;
    let runner = runner(&state, &coordinator.url(), &options)?;
    let shutdown = CancellationToken::new();
    let mut env = JobEnv {
        login_shell: false,
        client: crate::manager::client_for(&runner, crate::VERSION)?,
        info: crate::manager::info_for(&runner, crate::VERSION, crate::REVISION),
        system_id: "r_oarexeclocal".into(),
        working_dir: checkout.root.clone(),
        metrics: metrics.clone(),
        reporter: ReporterConfig::default(),
        iam: crate::cache::IamProviders::default(),
        kube: None,
    };
    if runner.executor == oar_config::Executor::Kubernetes {
        env.kube = Some(
            crate::kube_job::connect(&runner, shutdown.clone())
                .await
                .context("the Kubernetes executor (the current kubeconfig's cluster)")?,
        );
    }
    let facts = PipelineFacts {
        server_url: coordinator.url(),
        predefined: checkout
            .predefined(options.pipeline.id)
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "CI_PIPELINE_SOURCE" => (k, options.pipeline.source.to_string()),
                _ => (k, v),
            })
            .collect(),
        sha: sha.clone(),
        ref_name: checkout.ref_name().to_string(),
        ref_type: if checkout.branch.is_none() && checkout.tag.is_some() {
            "tag".into()
        } else {
            "branch".into()
        },
        refspec: "+refs/oar/exec:refs/remotes/origin/oar-exec".into(),
        project_path: checkout.project_path.clone(),
        pipeline_id: i64::try_from(options.pipeline.id).unwrap_or(1),
        file_keys: file_keys(plan, checkout, &sha).await?,
        masked: options.masked.clone(),
    };
    let mut ids: Vec<JobIdentity> = (0..plan.jobs.len())
        .map(|i| JobIdentity {
            id: i64::try_from(i).unwrap_or(i64::MAX - 1) + 1,
            token: format!("oarexec-{}", random_token()),
        })
        .collect();
    // A retried job is a new job in GitLab: a new id and token. Ids past the plan's go to
    // retries.
    let mut next_id = i64::try_from(plan.jobs.len()).unwrap_or(i64::MAX - 1) + 1;
    let mut attempts: Vec<u32> = vec![0; plan.jobs.len()];
    // `resource_group`s held by running jobs: a job waits while another of its group runs.
    let mut held: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut results: Vec<JobResult> = plan
        .jobs
        .iter()
        .map(|j| JobResult {
            name: format!("{}{}", options.pipeline.label, j.name),
            stage: j.stage.clone(),
            status: "not run".into(),
            duration: None,
        })
        .collect();
    let display = |index: usize| format!("{}{}", options.pipeline.label, plan.jobs[index].name);
    // Child pipelines of trigger jobs, run alongside the jobs; their results go after ours.
    let mut children: futures::stream::FuturesUnordered<ChildRun<'_>> =
        futures::stream::FuturesUnordered::new();
    let mut child_results: Vec<JobResult> = Vec::new();
    let mut finished: Vec<Option<FinishedArtifacts>> = vec![None; plan.jobs.len()];
    let mut scheduler = Scheduler::new(plan);
    let mut ready: VecDeque<(usize, Option<u64>)> = VecDeque::new();
    let mut running: JoinSet<(usize, usize, anyhow::Result<FinalState>, Duration)> = JoinSet::new();
    let mut free_slots: Vec<usize> = (0..options.concurrency.max(1)).rev().collect();
    let mut printers = Vec::new();
    // On a terminal, a footer line per running job under the output.
    let terminal = super::progress::Terminal::new(options.color);
    let ticker = terminal.ticker();
    let mut signals = crate::signals::Signals::new().context("signal handlers")?;
    let mut running_ids: Vec<i64> = Vec::new();
    let mut stopping = false;
    let chosen = |i: usize| options.selected.as_ref().is_none_or(|s| s[i]);
    loop {
        let mut decided = false;
        for decision in scheduler.poll() {
            decided = true;
            match decision {
                Decision::Run { job, .. } if !chosen(job) => {
                    results[job].status = "not selected".into();
                    scheduler.finish(job, Outcome::Success);
                }
                Decision::Run { job, .. } if stopping => {
                    results[job].status = "canceled: not started (interrupted)".into();
                    scheduler.finish(job, Outcome::Canceled);
                }
                Decision::Run { job, delay_seconds } => ready.push_back((job, delay_seconds)),
                Decision::Skip { job, reason } => {
                    results[job].status = format!("skipped: {reason}")
                }
                Decision::Manual { job, .. } => {
                    results[job].status = "manual: not run (--manual JOB runs it)".into();
                }
                Decision::Blocked { job, reason } => {
                    results[job].status = format!("blocked: {reason}");
                }
            }
        }
        // Trigger jobs take no slot: each starts its child pipeline.
        let mut k = 0;
        while k < ready.len() {
            let index = ready[k].0;
            let job = &plan.jobs[index];
            let Some(trigger) = &job.trigger else {
                k += 1;
                continue;
            };
            ready.remove(k);
            let Some(child) = pipeline.child(&job.name) else {
                results[index].status = "failed (its child pipeline was not loaded)".into();
                scheduler.finish(index, Outcome::Failed { exit_code: None });
                continue;
            };
            let child_ctx = child_context(ctx, job);
            let id = NEXT_PIPELINE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let child_options = RunOptions {
                selected: None,
                pipeline: PipelineRun {
                    id,
                    source: "parent_pipeline",
                    label: format!("{} > ", display(index)),
                    dir: format!("pipelines/{id}"),
                },
                ..options.clone()
            };
            terminal.print(&format!(
                "{} | triggered child pipeline {id} ({}){}\n",
                display(index),
                trigger.include.join(", "),
                if trigger.depend {
                    ", waiting for it (strategy: depend)"
                } else {
                    ""
                }
            ));
            let (sha, metrics) = (sha.clone(), metrics.clone());
            let started = Instant::now();
            children.push(Box::pin(async move {
                let result = match child.plan(&child_ctx) {
                    Err(e) => Err(anyhow::anyhow!("{e}")),
                    Ok(child_plan) => {
                        Box::pin(run(
                            &child_plan,
                            child,
                            &child_ctx,
                            checkout,
                            sha,
                            metrics,
                            child_options,
                        ))
                        .await
                    }
                };
                (index, started.elapsed(), result)
            }));
            if trigger.depend {
                results[index].status = "running".into();
            } else {
                // Without `strategy: depend` the trigger job succeeds once the child exists.
                results[index].status = "success (child pipeline created)".into();
                scheduler.finish(index, Outcome::Success);
            }
        }
        while let Some(slot) = free_slots.pop() {
            let free = ready.iter().position(|(i, _)| {
                plan.jobs[*i]
                    .resource_group
                    .as_ref()
                    .is_none_or(|g| !held.contains(g))
            });
            let Some((index, delay)) = free.and_then(|at| ready.remove(at)) else {
                free_slots.push(slot);
                break;
            };
            if let Some(group) = &plan.jobs[index].resource_group {
                held.insert(group.clone());
            }
            let id = &ids[index];
            if options.executor == ExecExecutor::Shell
                && let Some(image) = &plan.jobs[index].image
            {
                terminal.print(&format!(
                    "{} | note: the shell executor runs this job on this machine; it ignores image {:?}\n",
                    display(index), image.name
                ));
            }
            let mut watch = coordinator.register_job(LocalJob {
                id: id.id,
                name: plan.jobs[index].name.clone(),
                token: id.token.clone(),
            });
            if let Some(rx) = watch.take_output() {
                printers.push(print_output(
                    terminal.clone(),
                    display(index),
                    options.color,
                    options.timestamps,
                    rx,
                    index,
                ));
            }
            let Some(job) = payload(
                plan,
                index,
                &ids,
                &facts,
                |i| finished.get(i).cloned().flatten(),
                coordinator.repo_url(&id.token),
            ) else {
                anyhow::bail!("no payload for job {index}");
            };
            running_ids.push(id.id);
            terminal.started(&display(index), &plan.jobs[index].stage);
            let (env, runner, shutdown) = (env.clone(), runner.clone(), shutdown.clone());
            running.spawn(async move {
                if let Some(secs) = delay {
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                }
                let started = Instant::now();
                crate::job::run(&env, &runner, job, slot, shutdown).await;
                let end = watch.finished().await;
                (index, slot, end, started.elapsed())
            });
        }
        if running.is_empty() && children.is_empty() {
            if ready.is_empty() && !decided {
                break;
            }
            continue;
        }
        let done = tokio::select! {
            done = running.join_next(), if !running.is_empty() => done,
            Some((index, elapsed, result)) = futures::StreamExt::next(&mut children), if !children.is_empty() => {
                let depend = plan.jobs[index].trigger.as_ref().is_some_and(|t| t.depend);
                let passed = match result {
                    Ok((mut jobs, passed)) => {
                        child_results.append(&mut jobs);
                        passed
                    }
                    Err(e) => {
                        terminal.print(&format!("{} | the child pipeline did not run: {e:#}\n", display(index)));
                        false
                    }
                };
                if depend {
                    results[index].duration = Some(elapsed);
                    let outcome = if passed {
                        results[index].status = "success".into();
                        Outcome::Success
                    } else {
                        results[index].status = if plan.jobs[index].failure_allowed(None) {
                            "failed (allowed)".into()
                        } else {
                            "failed (its child pipeline failed)".into()
                        };
                        Outcome::Failed { exit_code: None }
                    };
                    scheduler.finish(index, outcome);
                }
                continue;
            }
            signal = signals.next() => {
                if stopping {
                    // A second signal: stop the running jobs at once.
                    eprintln!("oar exec: {signal} again: stopping the running jobs now");
                    shutdown.cancel();
                } else {
                    // The first: cancel the running jobs as GitLab does (after_script runs),
                    // start nothing new.
                    eprintln!("oar exec: {signal}: canceling the running jobs (again to stop them at once)");
                    stopping = true;
                    for (index, _) in ready.drain(..) {
                        results[index].status = "canceled: not started (interrupted)".into();
                        scheduler.finish(index, Outcome::Canceled);
                    }
                    for id in &running_ids {
                        coordinator.cancel(*id);
                    }
                }
                continue;
            }
        };
        let Some(done) = done else { continue };
        let (index, slot, end, elapsed) = done.context("a job's task panicked")?;
        free_slots.push(slot);
        running_ids.retain(|id| *id != ids[index].id);
        terminal.ended(&display(index));
        if let Some(group) = &plan.jobs[index].resource_group {
            held.remove(group);
        }
        if let Ok(end) = &end
            && end.state == FinalStatus::Failed
            && !stopping
            && retry_allowed(&plan.jobs[index], attempts[index], end)
        {
            attempts[index] += 1;
            terminal.print(&format!(
                "{} | retrying: attempt {} of {} (retry)\n",
                plan.jobs[index].name,
                attempts[index] + 1,
                plan.jobs[index].retry.as_ref().map_or(1, |r| r.max + 1)
            ));
            ids[index] = JobIdentity {
                id: next_id,
                token: format!("oarexec-{}", random_token()),
            };
            next_id += 1;
            ready.push_front((index, None));
            continue;
        }
        results[index].duration = Some(elapsed);
        let outcome = match end {
            Ok(end) => {
                results[index].status = match (end.state, end.exit_code) {
                    (FinalStatus::Success, _) => "success".into(),
                    (FinalStatus::Canceled, _) => "canceled".into(),
                    (FinalStatus::Failed, code) if plan.jobs[index].failure_allowed(code) => {
                        "failed (allowed)".into()
                    }
                    (FinalStatus::Failed, Some(code)) => format!("failed (exit code {code})"),
                    (FinalStatus::Failed, None) => format!(
                        "failed ({})",
                        end.failure_reason.as_deref().unwrap_or("unknown reason")
                    ),
                };
                let archive = coordinator
                    .artifact(ids[index].id, "archive")
                    .map(|a| (a.file_name, i64::try_from(a.size).unwrap_or(i64::MAX)));
                let dotenv = match coordinator.artifact(ids[index].id, "dotenv") {
                    Some(report) => read_dotenv(&report.path, &report.format).unwrap_or_else(|e| {
                        eprintln!(
                            "{}: its dotenv report is ignored: {e:#}",
                            plan.jobs[index].name
                        );
                        Vec::new()
                    }),
                    None => Vec::new(),
                };
                finished[index] = Some(FinishedArtifacts { archive, dotenv });
                match end.state {
                    FinalStatus::Success => Outcome::Success,
                    FinalStatus::Canceled => Outcome::Canceled,
                    FinalStatus::Failed => Outcome::Failed {
                        exit_code: end.exit_code,
                    },
                }
            }
            Err(e) => {
                results[index].status = format!("failed (no final state: {e:#})");
                Outcome::Failed { exit_code: None }
            }
        };
        scheduler.finish(index, outcome);
    }
    for p in printers {
        let _ = p.await;
    }
    if let Some(t) = ticker {
        t.abort();
    }
    terminal.finish();
    coordinator.shutdown().await.ok();
    if !options.pipeline.label.is_empty() {
        // A child's skipped jobs are in its results: the summary has no other list of them.
        results.extend(plan.skipped.iter().map(|s| JobResult {
            name: format!("{}{}", options.pipeline.label, s.name),
            stage: s.stage.clone(),
            status: format!("skipped: {}", s.reason),
            duration: None,
        }));
    }
    results.append(&mut child_results);
    Ok((results, !scheduler.failed()))
}

/// The summary table printed after the pipeline.
pub fn summary(
    results: &[JobResult],
    skipped: &[oar_pipeline::SkippedJob],
    passed: bool,
) -> String {
    let width = results
        .iter()
        .map(|r| r.name.len())
        .chain(skipped.iter().map(|s| s.name.len()))
        .max()
        .unwrap_or(3)
        .max(3);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<width$}  {:<10}  {:>8}  status",
        "job", "stage", "duration"
    );
    for r in results.iter().filter(|r| r.status != "not selected") {
        let duration = r
            .duration
            .map(|d| format!("{:.1}s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<width$}  {:<10}  {:>8}  {}",
            r.name, r.stage, duration, r.status
        );
    }
    for s in skipped {
        let _ = writeln!(
            out,
            "{:<width$}  {:<10}  {:>8}  skipped: {}",
            s.name, s.stage, "-", s.reason
        );
    }
    let _ = writeln!(
        out,
        "\nPipeline {}",
        if passed { "passed" } else { "failed" }
    );
    out
}

/// Whether output should be coloured: a terminal on stdout, and no `NO_COLOR`.
pub fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_lose_section_markers_and_escapes_without_colour() {
        let line = "section_start:1:get_sources\r\x1b[0K\x1b[36;1mGetting source\x1b[0;m";
        assert_eq!(display_line(line, false), "Getting source");
        assert_eq!(display_line(line, true), "\x1b[36;1mGetting source\x1b[0;m");
        assert_eq!(display_line("section_end:1:x\r\x1b[0K", false), "");
    }
}
