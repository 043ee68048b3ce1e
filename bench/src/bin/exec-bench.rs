//! `exec-bench`: the per-job overhead and start time of `oar exec` (shell executor) against
//! gitlab-ci-local's shell executor on generated pipelines of `true` jobs, and the planning
//! time of a generated 2,000-job pipeline (`oar exec --list`, and `oar-pipeline` in-process).
//!
//! Not a test: run it by hand, in release mode (see `bench/README.md`).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use nix::sys::resource::{UsageWho, getrusage};
use oar_pipeline::{Context, Pipeline};

/// Reference figures of the issue for gitlab-ci-local 4.75 on Node 22 (measured earlier).
const REF_WALL_PER_JOB: f64 = 0.035;
const REF_CPU_PER_JOB: f64 = 0.063;
/// Targets: at least 10x less per job than the reference, under 0.1 s to start, planning of
/// 2,000 jobs under 100 ms.
const TARGET_WALL_PER_JOB: f64 = REF_WALL_PER_JOB / 10.0;
const TARGET_CPU_PER_JOB: f64 = REF_CPU_PER_JOB / 10.0;
const TARGET_START: f64 = 0.1;
const TARGET_PLAN: f64 = 0.1;

/// The flags gitlab-ci-local runs with: plain shell jobs on this machine, no Docker, no
/// artifact copy back into the checkout, no colours.
const GCL_FLAGS: &[&str] = &[
    "--shell-executor-no-image",
    "--no-shell-isolation",
    "--no-artifacts-to-source",
    "--no-color",
];

/// Benchmark `oar exec` against gitlab-ci-local on pipelines of `true` jobs.
#[derive(Debug, Parser)]
#[command(name = "exec-bench")]
struct Args {
    /// The `oar` binary (default: `oar` beside this binary, i.e. the release build).
    #[arg(long)]
    oar_bin: Option<PathBuf>,
    /// The gitlab-ci-local installation (`bench/exec-bench-setup.sh` makes it).
    #[arg(long)]
    gcl_prefix: Option<PathBuf>,
    /// Jobs in the per-job pipelines.
    #[arg(long, default_value_t = 50)]
    jobs: usize,
    /// Jobs in the planning pipeline.
    #[arg(long, default_value_t = 2_000)]
    plan_jobs: usize,
    /// Jobs at once, for both tools (default: the number of CPUs).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Runs per measurement; the median is kept.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip gitlab-ci-local (only time Oar).
    #[arg(long)]
    oar_only: bool,
    /// Work directory (a temporary one under it is used and removed).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Wall and CPU (user + sys of the waited-for process tree) of one run.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    wall: f64,
    cpu: f64,
}

/// Monotonic time since the first call. The workspace bans `std::time::Instant` so that async
/// code uses tokio's (pausable in tests); this benchmark is synchronous and wants the real one.
#[allow(clippy::disallowed_types)]
fn mono() -> Duration {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

fn children_cpu() -> Result<f64> {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage")?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(u.user_time()) + secs(u.system_time()))
}

/// Runs `cmd` to completion (output discarded), returning its wall and CPU time.
fn measure(cmd: &mut Command) -> Result<Cost> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let cpu0 = children_cpu()?;
    let t0 = mono();
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let wall = (mono() - t0).as_secs_f64();
    let cpu = children_cpu()? - cpu0;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Cost { wall, cpu })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median wall and CPU of `runs` runs of `make()`'s command.
fn measure_runs(runs: usize, mut make: impl FnMut() -> Command) -> Result<Cost> {
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..runs.max(1) {
        let c = measure(&mut make())?;
        walls.push(c.wall);
        cpus.push(c.cpu);
    }
    Ok(Cost {
        wall: median(walls),
        cpu: median(cpus),
    })
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos()
}

/// The time from spawning `make()`'s command to its first job's `date +%s%N` into `marker`
/// (median of `runs`).
fn first_job_start(runs: usize, marker: &Path, mut make: impl FnMut() -> Command) -> Result<f64> {
    let mut v = Vec::new();
    for _ in 0..runs.max(1) {
        let _ = fs::remove_file(marker);
        let mut cmd = make();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let t0 = now_ns();
        let status = cmd
            .status()
            .with_context(|| format!("cannot run {cmd:?}"))?;
        if !status.success() {
            bail!("{cmd:?} failed ({status})");
        }
        let text = fs::read_to_string(marker)
            .with_context(|| format!("the job wrote no {}", marker.display()))?;
        let t1: u128 = text.trim().parse().context("date +%s%N")?;
        v.push(t1.saturating_sub(t0) as f64 / 1e9);
    }
    Ok(median(v))
}

/// A git checkout in `dir` holding `yaml` as `.gitlab-ci.yml`, committed on `main`.
fn checkout(dir: &Path, yaml: &str) -> Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join(".gitlab-ci.yml"), yaml)?;
    let status = Command::new("sh")
        .arg("-c")
        .arg(
            "git init -q -b main . && git remote add origin https://gitlab.example.com/acme/bench.git \
             && git add -A && git commit -qm bench",
        )
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .stdout(Stdio::null())
        .status()
        .context("git")?;
    if !status.success() {
        bail!("git init/commit in {} failed", dir.display());
    }
    Ok(())
}

/// `jobs` jobs running `script`, spread over `stages` stages, no needs.
fn true_pipeline(jobs: usize, stages: usize, script: &str) -> String {
    let mut y = String::from("stages:\n");
    for s in 0..stages {
        let _ = writeln!(y, "  - s{s}");
    }
    let per = jobs.div_ceil(stages);
    for j in 0..jobs {
        let _ = writeln!(y, "job{j}:\n  stage: s{}\n  script: [{script:?}]", j / per);
    }
    y
}

/// A pipeline of about `jobs` jobs: 20 stages, needs on earlier stages' jobs, rules on every
/// job (a `when: never` rule that does not match, then one that does), variables, `extends`,
/// and one `parallel:matrix` of 10 x 20 instances.
fn plan_pipeline(jobs: usize) -> String {
    let stages = 20;
    let matrix = 200.min(jobs / 2);
    let plain = jobs - matrix;
    let per = plain.div_ceil(stages);
    let mut y = String::from("stages:\n");
    for s in 0..stages {
        let _ = writeln!(y, "  - s{s}");
    }
    y.push_str(
        "variables:\n  GLOBAL: one\n.base:\n  variables:\n    BASE: two\n  before_script: [echo base]\n  rules:\n    - if: '$SKIP_ALL == \"yes\"'\n      when: never\n    - if: '$CI_PIPELINE_SOURCE == \"push\" && $CI_COMMIT_BRANCH =~ /^ma/'\n      when: on_success\n",
    );
    for j in 0..plain {
        let stage = j / per;
        let _ = write!(
            y,
            "job{j}:\n  extends: .base\n  stage: s{stage}\n  variables:\n    N: \"{j}\"\n  script: [echo $N $BASE]\n"
        );
        if stage > 0 {
            // Three jobs of the previous stage.
            let prev = (stage - 1) * per;
            let needs: Vec<String> = (0..3)
                .map(|k| format!("job{}", prev + (j + k) % per))
                .collect();
            let _ = writeln!(y, "  needs: [{}]", needs.join(", "));
        }
    }
    if matrix > 0 {
        let a = 10.min(matrix);
        let b = matrix / a;
        let av: Vec<String> = (0..a).map(|i| format!("a{i}")).collect();
        let bv: Vec<String> = (0..b).map(|i| format!("b{i}")).collect();
        let _ = write!(
            y,
            "matrix:\n  extends: .base\n  stage: s{}\n  script: [echo $A $B]\n  parallel:\n    matrix:\n      - A: [{}]\n        B: [{}]\n",
            stages - 1,
            av.join(", "),
            bv.join(", ")
        );
    }
    y
}

fn ratio(measured: f64, target: f64) -> String {
    let verdict = if measured <= target { "met" } else { "missed" };
    format!("{:.2} ({verdict})", measured / target)
}

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1e3)
}

/// gitlab-ci-local's `bin` directory (its `node` first on `PATH`), or why it is not usable.
fn gcl_bin(args: &Args) -> std::result::Result<PathBuf, String> {
    let prefix = match &args.gcl_prefix {
        Some(p) => p.clone(),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".cache/oar-bench/node22"),
            None => return Err("no HOME and no --gcl-prefix".into()),
        },
    };
    let bin = prefix.join("node_modules/.bin");
    if !bin.join("gitlab-ci-local").is_file() || !bin.join("node").is_file() {
        return Err(format!(
            "not installed in {} (run bench/exec-bench-setup.sh)",
            prefix.display()
        ));
    }
    let out = gcl_command(&bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run gitlab-ci-local: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "gitlab-ci-local --version failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(bin)
}

fn gcl_command(bin: &Path) -> Command {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    let mut cmd = Command::new(bin.join("gitlab-ci-local"));
    cmd.env(
        "PATH",
        std::env::join_paths(paths).unwrap_or_else(|_| path.clone()),
    );
    cmd
}

fn version(mut cmd: Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// One tool's figures on the `true` pipelines.
#[derive(Debug, Default)]
struct Figures {
    one: Cost,
    flat: Cost,
    staged: Cost,
    first_start: f64,
}

impl Figures {
    /// Per job: the pipeline's cost beyond the 1-job pipeline's, over the extra jobs.
    fn per_job(&self, c: Cost, jobs: usize) -> Cost {
        let n = jobs.saturating_sub(1).max(1) as f64;
        Cost {
            wall: (c.wall - self.one.wall) / n,
            cpu: (c.cpu - self.one.cpu) / n,
        }
    }
}

fn run_tool(runs: usize, work: &Path, make: &dyn Fn(&Path) -> Command) -> Result<Figures> {
    let marker = work.join("first-job-started");
    Ok(Figures {
        one: measure_runs(runs, || make(&work.join("one")))?,
        flat: measure_runs(runs, || make(&work.join("flat")))?,
        staged: measure_runs(runs, || make(&work.join("staged")))?,
        first_start: first_job_start(runs, &marker, || make(&work.join("start")))?,
    })
}

fn print_figures(name: &str, f: &Figures, jobs: usize) {
    let flat = f.per_job(f.flat, jobs);
    let staged = f.per_job(f.staged, jobs);
    println!(
        "| {name} | {} | {} | {} | {} | {} / {} | {} / {} | {} / {} |",
        ms(f.first_start),
        ms(f.one.wall),
        ms(f.one.cpu),
        ms(f.flat.wall),
        ms(flat.wall),
        ms(flat.cpu),
        ms(staged.wall),
        ms(staged.cpu),
        ms(f.flat.wall / jobs as f64),
        ms(f.flat.cpu / jobs as f64),
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    let concurrency = args.concurrency.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    });
    let oar = match &args.oar_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory of this binary")?
            .join("oar"),
    };
    if !oar.is_file() {
        bail!(
            "{} is missing: cargo build --release -p oar (or --oar-bin)",
            oar.display()
        );
    }
    let base = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let work = base.path();
    let jobs = args.jobs.max(2);
    let marker = work.join("first-job-started");
    checkout(&work.join("one"), &true_pipeline(1, 1, "true"))?;
    checkout(&work.join("flat"), &true_pipeline(jobs, 1, "true"))?;
    checkout(&work.join("staged"), &true_pipeline(jobs, 5, "true"))?;
    checkout(
        &work.join("start"),
        &true_pipeline(1, 1, &format!("date +%s%N > {}", marker.display())),
    )?;
    let plan_dir = work.join("plan");
    let plan_yaml = plan_pipeline(args.plan_jobs);
    checkout(&plan_dir, &plan_yaml)?;

    println!("# exec-bench\n");
    println!(
        "oar: {} ({})",
        oar.display(),
        version({
            let mut c = Command::new(&oar);
            c.arg("--version");
            c
        })
    );
    let gcl = if args.oar_only {
        Err("--oar-only".to_string())
    } else {
        gcl_bin(&args)
    };
    match &gcl {
        Ok(bin) => println!(
            "gitlab-ci-local: {} (node {}), flags: {} --concurrency {concurrency}",
            version({
                let mut c = gcl_command(bin);
                c.arg("--version");
                c
            }),
            version({
                let mut c = Command::new(bin.join("node"));
                c.arg("--version");
                c
            }),
            GCL_FLAGS.join(" ")
        ),
        Err(why) => println!("gitlab-ci-local: not available ({why})"),
    }
    println!(
        "oar flags: exec -C DIR --concurrency {concurrency}; {} runs per figure (median); CPU = user+sys of the process tree (getrusage RUSAGE_CHILDREN)\n",
        args.runs
    );

    let oar_make = |dir: &Path| {
        let mut c = Command::new(&oar);
        c.arg("exec")
            .arg("-C")
            .arg(dir)
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .env("NO_COLOR", "1");
        c
    };
    eprintln!("timing oar exec ...");
    let oar_f = run_tool(args.runs, work, &oar_make)?;
    let gcl_f = match &gcl {
        Ok(bin) => {
            let make = |dir: &Path| {
                let mut c = gcl_command(bin);
                // gitlab-ci-local wants a relative --cwd: run it in the checkout instead.
                c.current_dir(dir)
                    .args(GCL_FLAGS)
                    .arg("--concurrency")
                    .arg(concurrency.to_string());
                c
            };
            eprintln!("timing gitlab-ci-local ...");
            match run_tool(args.runs, work, &make) {
                Ok(f) => Some(f),
                Err(e) => {
                    println!("gitlab-ci-local: not available (it failed: {e:#})");
                    None
                }
            }
        }
        Err(_) => None,
    };

    println!(
        "## {jobs} `true` jobs\n\nPer job = (pipeline - 1-job pipeline) / {}; first job start = spawn to the 1-job pipeline's `date +%s%N`.\n",
        jobs - 1
    );
    println!(
        "| tool | first job start | 1 job wall | 1 job CPU | {jobs} jobs wall | per job wall / CPU (1 stage) | per job wall / CPU (5 stages) | total / {jobs} wall / CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    print_figures("oar exec", &oar_f, jobs);
    if let Some(g) = &gcl_f {
        print_figures("gitlab-ci-local", g, jobs);
    }
    let of = oar_f.per_job(oar_f.flat, jobs);
    let os = oar_f.per_job(oar_f.staged, jobs);
    println!("\nTargets (measured / target; <= 1 is met):\n");
    println!(
        "- per job wall, 1 stage: {} vs {} target (reference {} / 10): {}",
        ms(of.wall),
        ms(TARGET_WALL_PER_JOB),
        ms(REF_WALL_PER_JOB),
        ratio(of.wall, TARGET_WALL_PER_JOB)
    );
    println!(
        "- per job CPU, 1 stage: {} vs {} target (reference {} / 10): {}",
        ms(of.cpu),
        ms(TARGET_CPU_PER_JOB),
        ms(REF_CPU_PER_JOB),
        ratio(of.cpu, TARGET_CPU_PER_JOB)
    );
    println!(
        "- per job wall / CPU, 5 stages: {} / {}",
        ratio(os.wall, TARGET_WALL_PER_JOB),
        ratio(os.cpu, TARGET_CPU_PER_JOB)
    );
    println!(
        "- start (first job start): {} vs {}: {}",
        ms(oar_f.first_start),
        ms(TARGET_START),
        ratio(oar_f.first_start, TARGET_START)
    );
    println!(
        "- start (1-job pipeline, whole): {} vs {}: {}",
        ms(oar_f.one.wall),
        ms(TARGET_START),
        ratio(oar_f.one.wall, TARGET_START)
    );
    match &gcl_f {
        Some(g) => {
            let gf = g.per_job(g.flat, jobs);
            let gs = g.per_job(g.staged, jobs);
            println!(
                "\nAgainst gitlab-ci-local in this run (gitlab-ci-local / oar; >= 10 is the target per job):\n"
            );
            println!(
                "- per job wall, 1 stage: {:.1}x; CPU: {:.1}x",
                gf.wall / of.wall,
                gf.cpu / of.cpu
            );
            println!(
                "- per job wall, 5 stages: {:.1}x; CPU: {:.1}x",
                gs.wall / os.wall,
                gs.cpu / os.cpu
            );
            println!(
                "- first job start: {:.1}x; 1-job pipeline: {:.1}x",
                g.first_start / oar_f.first_start,
                g.one.wall / oar_f.one.wall
            );
            println!(
                "- gitlab-ci-local here against the issue's reference (35 ms / 63 ms per job, 0.9 s start): wall {:.2}, CPU {:.2}, start {:.2}",
                gf.wall / REF_WALL_PER_JOB,
                gf.cpu / REF_CPU_PER_JOB,
                g.first_start / 0.9
            );
        }
        None => println!("\ngitlab-ci-local: not available, no ratios against it"),
    }

    // Planning.
    eprintln!("timing planning ...");
    let list = measure_runs(args.runs, || {
        let mut c = Command::new(&oar);
        c.arg("exec").arg("-C").arg(&plan_dir).arg("--list");
        c
    })?;
    let ctx = Context::with_variables([
        ("CI_PIPELINE_SOURCE", "push"),
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_COMMIT_REF_NAME", "main"),
        ("CI_DEFAULT_BRANCH", "main"),
    ]);
    let mut parse = Vec::new();
    let mut plan_t = Vec::new();
    let mut planned = 0;
    for _ in 0..args.runs.max(1) {
        let t0 = mono();
        let p = Pipeline::parse_str(&plan_yaml, &ctx).context("the planning pipeline")?;
        let t1 = mono();
        let plan = p.plan(&ctx).context("the planning pipeline's plan")?;
        let t2 = mono();
        planned = plan.jobs.len();
        if !plan.skipped.is_empty() {
            bail!(
                "{} jobs of the planning pipeline were skipped",
                plan.skipped.len()
            );
        }
        parse.push((t1 - t0).as_secs_f64());
        plan_t.push((t2 - t1).as_secs_f64());
    }
    let (parse, plan_t) = (median(parse), median(plan_t));
    println!(
        "\n## Planning {planned} jobs (20 stages, 3 needs a job, rules and extends on every job, a 10 x 20 matrix; {} KB of YAML)\n",
        plan_yaml.len() / 1000
    );
    println!("| how | wall | CPU | / 100 ms target |");
    println!("|---|---|---|---|");
    println!(
        "| `oar exec --list` (process) | {} | {} | {} |",
        ms(list.wall),
        ms(list.cpu),
        ratio(list.wall, TARGET_PLAN)
    );
    println!(
        "| `Pipeline::parse_str` + `plan` (in-process) | {} ({} + {}) | | {} |",
        ms(parse + plan_t),
        ms(parse),
        ms(plan_t),
        ratio(parse + plan_t, TARGET_PLAN)
    );
    if let Ok(bin) = &gcl {
        match measure_runs(1, || {
            let mut c = gcl_command(bin);
            c.current_dir(&plan_dir).arg("--list");
            c
        }) {
            Ok(g) => println!(
                "| `gitlab-ci-local --list` (process, 1 run) | {} | {} | {} |",
                ms(g.wall),
                ms(g.cpu),
                ratio(g.wall, TARGET_PLAN)
            ),
            Err(e) => println!("| `gitlab-ci-local --list` | failed: {e:#} | | |"),
        }
    }
    Ok(())
}
