//! The planner: workflow and job rules, parallel expansion, variables, needs and
//! dependencies, into an ordered list of jobs to run.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use indexmap::IndexMap;
use serde::Serialize;

use crate::Pipeline;
use crate::context::Context;
use crate::error::{PipelineError, Result};
use crate::expand::expand;
use crate::model::{
    AllowFailure, Artifacts, Cache, Environment, Image, Job, Need, OnlyExcept, Parallel, Retry,
    Timeout, Trigger, Variable, When,
};
use crate::parse::duration_seconds;
use crate::rules::{first_match, only_matches};

/// Where a job's variable comes from, lowest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VariableSource {
    /// Predefined (`CI_*`) and project variables from the [`Context`].
    Predefined,
    /// Global `variables:`.
    Global,
    /// `workflow:rules:variables` of the matching rule.
    Workflow,
    /// The job's `variables:`.
    Job,
    /// The job's `parallel:matrix` values.
    Matrix,
    /// The matching rule's `variables:`.
    Rule,
    /// The user's `--variable`s.
    User,
}

/// A variable as the job sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedVariable {
    /// The name.
    pub name: String,
    /// The value, not expanded (the job driver expands it, unless `expand` is false).
    pub value: String,
    /// Where the winning definition comes from.
    pub source: VariableSource,
    /// `expand: false` makes `$` literal.
    pub expand: bool,
}

/// A resolved `needs:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedNeed {
    /// The needed job's (instance) name.
    pub job: String,
    /// Whether its artifacts are downloaded.
    pub artifacts: bool,
}

/// Whose artifacts a job downloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dependencies {
    /// Every job of the earlier stages (the default without `needs` and `dependencies`);
    /// [`Plan::artifact_sources`] lists them.
    PreviousStages,
    /// These jobs.
    Jobs(Vec<String>),
}

/// A job that will be part of the pipeline, with everything needed to build its payload.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedJob {
    /// The job name (`test 1/3`, `build: [linux, amd64]` for parallel jobs).
    pub name: String,
    /// The name in `.gitlab-ci.yml`.
    pub base_name: String,
    /// The stage.
    pub stage: String,
    /// The stage's position in `stages` (`.pre` is 0).
    pub stage_index: usize,
    /// `hooks:pre_get_sources_script`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pre_get_sources_script: Vec<String>,
    /// `before_script` (from the job or `default`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub before_script: Vec<String>,
    /// `script`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub script: Vec<String>,
    /// `after_script`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after_script: Vec<String>,
    /// `image`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// `services`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Image>,
    /// Every variable the job sees, in definition order, with the winning source.
    pub variables: Vec<PlannedVariable>,
    /// `artifacts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Artifacts>,
    /// `cache`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub caches: Vec<Cache>,
    /// Whose artifacts it downloads.
    pub dependencies: Dependencies,
    /// `needs` (after parallel expansion and dropping optional needs of skipped jobs);
    /// `None` means "after every job of the earlier stages".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<PlannedNeed>>,
    /// The effective `when`.
    pub when: When,
    /// `start_in` in seconds (delayed jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_in: Option<u64>,
    /// The effective `allow_failure`.
    pub allow_failure: AllowFailure,
    /// `timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    /// `retry`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// `resource_group`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
    /// `interruptible`.
    pub interruptible: bool,
    /// `coverage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<String>,
    /// `tags` (ignored locally, kept for the payload).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `environment` (name and url expanded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    /// `trigger` (a child pipeline: see [`Pipeline::child`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// `CI_NODE_INDEX` (parallel jobs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_index: Option<u32>,
    /// `CI_NODE_TOTAL`.
    pub node_total: u32,
    /// A manual job the user asked to run.
    pub manual_requested: bool,
    /// Why the job is in the pipeline (`rules: rule 2 matched`).
    pub reason: String,
}

impl PlannedJob {
    /// Whether a failure with `exit_code` is allowed (`allow_failure`, with `exit_codes`).
    pub fn failure_allowed(&self, exit_code: Option<i32>) -> bool {
        self.allow_failure.allowed
            && (self.allow_failure.exit_codes.is_empty()
                || exit_code.is_some_and(|c| self.allow_failure.exit_codes.contains(&c)))
    }

    /// The value of a variable, if the job has it.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.value.as_str())
    }
}

/// A job left out of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedJob {
    /// The job's (instance) name.
    pub name: String,
    /// Its stage.
    pub stage: String,
    /// Why (`rules: no rule matched`).
    pub reason: String,
}

/// Whether `workflow:rules` create the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkflowDecision {
    /// Whether the pipeline is created.
    pub created: bool,
    /// Why.
    pub reason: String,
}

/// The planned pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// `workflow:name`, expanded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether the pipeline is created, and why.
    pub workflow: WorkflowDecision,
    /// The stages, `.pre` and `.post` included.
    pub stages: Vec<String>,
    /// The jobs, in an order where every job comes after what it waits for (stage, then
    /// needs, then definition order).
    pub jobs: Vec<PlannedJob>,
    /// The jobs left out, with reasons.
    pub skipped: Vec<SkippedJob>,
    /// Things worth telling the user (ignored keywords, assumptions).
    pub notes: Vec<String>,
    #[serde(skip)]
    pub(crate) index: HashMap<String, usize>,
    #[serde(skip)]
    pub(crate) needs_idx: Vec<Option<Vec<usize>>>,
}

impl Plan {
    /// The job called `name`.
    pub fn job(&self, name: &str) -> Option<&PlannedJob> {
        self.index.get(name).map(|&i| &self.jobs[i])
    }

    /// The position of the job called `name` in [`Plan::jobs`].
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The jobs whose artifacts the job at `index` downloads.
    pub fn artifact_sources(&self, index: usize) -> Vec<&PlannedJob> {
        let Some(job) = self.jobs.get(index) else {
            return Vec::new();
        };
        match &job.dependencies {
            Dependencies::PreviousStages => self
                .jobs
                .iter()
                .filter(|j| j.stage_index < job.stage_index)
                .collect(),
            Dependencies::Jobs(names) => names.iter().filter_map(|n| self.job(n)).collect(),
        }
    }

    /// The positions of the jobs the job at `index` waits for through `needs`, or `None`
    /// when it waits for the earlier stages.
    pub fn needs_of(&self, index: usize) -> Option<&[usize]> {
        self.needs_idx.get(index).and_then(|n| n.as_deref())
    }
}

struct Instance<'j> {
    job: &'j Job,
    name: String,
    node_index: Option<u32>,
    node_total: u32,
    matrix: Vec<(String, String)>,
    order: usize,
}

/// Matrix values of one instance, in key order.
type MatrixVars = Vec<(String, String)>;
/// One parallel instance: name, node index, node total, matrix values.
type Expanded = (String, Option<u32>, u32, MatrixVars);
/// A kept instance with its decision and variables.
type Kept<'j> = (Instance<'j>, Decided, IndexMap<String, PlannedVariable>);

/// At most this many jobs per pipeline, after `parallel` (a guard: the scheduler's work grows
/// with the square of the jobs).
pub(crate) const MAX_PLANNED_JOBS: usize = 5_000;
/// At most this many variables over all planned jobs (global variables are copied into each).
pub(crate) const MAX_PLANNED_VARIABLES: usize = 2_000_000;
/// At most this many resolved `needs` over all planned jobs (a matrix need can stand for
/// 200 jobs).
pub(crate) const MAX_PLANNED_NEEDS: usize = 100_000;

fn too_large(job: &Job, what: String) -> PipelineError {
    PipelineError::invalid(
        &job.loc,
        Some(&job.name),
        None,
        format!("the pipeline is too large: {what}"),
    )
}

fn expand_parallel(job: &Job) -> Vec<Expanded> {
    match &job.parallel {
        None => vec![(job.name.clone(), None, 1, Vec::new())],
        Some(Parallel::Count(n)) => (1..=*n)
            .map(|i| (format!("{} {i}/{n}", job.name), Some(i), *n, Vec::new()))
            .collect(),
        Some(Parallel::Matrix(entries)) => {
            let mut combos: Vec<Vec<(String, String)>> = Vec::new();
            for entry in entries {
                let mut acc: Vec<Vec<(String, String)>> = vec![Vec::new()];
                for (k, values) in entry {
                    let mut next = Vec::with_capacity(acc.len() * values.len());
                    for a in &acc {
                        for v in values {
                            let mut c = a.clone();
                            c.push((k.clone(), v.clone()));
                            next.push(c);
                        }
                        if next.len() > 200 {
                            break;
                        }
                    }
                    acc = next;
                }
                combos.extend(acc);
            }
            combos.truncate(200);
            let total = u32::try_from(combos.len()).unwrap_or(200);
            combos
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    let vals: Vec<&str> = c.iter().map(|(_, v)| v.as_str()).collect();
                    (
                        format!("{}: [{}]", job.name, vals.join(", ")),
                        u32::try_from(i + 1).ok(),
                        total,
                        c,
                    )
                })
                .collect()
        }
    }
}

fn put(vars: &mut IndexMap<String, PlannedVariable>, v: &Variable, source: VariableSource) {
    vars.insert(
        v.name.clone(),
        PlannedVariable {
            name: v.name.clone(),
            value: v.value.clone(),
            source,
            expand: v.expand,
        },
    );
}

fn put_kv(
    vars: &mut IndexMap<String, PlannedVariable>,
    k: &str,
    val: &str,
    source: VariableSource,
) {
    vars.insert(
        k.to_owned(),
        PlannedVariable {
            name: k.to_owned(),
            value: val.to_owned(),
            source,
            expand: true,
        },
    );
}

fn values(vars: &IndexMap<String, PlannedVariable>) -> IndexMap<String, String> {
    vars.iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect()
}

fn slug(name: &str) -> String {
    let mut s: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.truncate(63);
    s.trim_matches('-').to_owned()
}

fn describe_only(o: &OnlyExcept) -> String {
    let mut parts = Vec::new();
    if !o.refs.is_empty() {
        parts.push(format!("refs [{}]", o.refs.join(", ")));
    }
    if !o.variables.is_empty() {
        parts.push(format!(
            "variables [{}]",
            o.variables
                .iter()
                .map(|e| e.source())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !o.changes.is_empty() {
        parts.push(format!("changes [{}]", o.changes.join(", ")));
    }
    if o.kubernetes {
        parts.push("kubernetes: active".into());
    }
    parts.join(", ")
}

struct Decided {
    when: When,
    allow_failure: Option<AllowFailure>,
    manual_from_rule: bool,
    start_in: Option<String>,
    needs: Option<Vec<Need>>,
    interruptible: Option<bool>,
    rule_vars: Vec<Variable>,
    reason: String,
}

/// Plans `pipeline` in `ctx`.
pub(crate) fn plan(pipeline: &Pipeline, ctx: &Context) -> Result<Plan> {
    let m = &pipeline.model;
    let mut notes: Vec<String> = m
        .notes
        .iter()
        .map(|n| match &n.job {
            Some(j) => format!("{}: job {j:?}: {}", n.location, n.message),
            None => format!("{}: {}", n.location, n.message),
        })
        .collect();

    // Global variables and workflow.
    let mut base: IndexMap<String, PlannedVariable> = IndexMap::new();
    for (k, v) in &ctx.variables {
        put_kv(&mut base, k, v, VariableSource::Predefined);
    }
    let mut globals = base.clone();
    for v in &m.variables {
        put(&mut globals, v, VariableSource::Global);
    }
    let mut user_vals = values(&globals);
    for (k, v) in &ctx.user_variables {
        user_vals.insert(k.clone(), v.clone());
    }
    let mut workflow_vars: Vec<Variable> = Vec::new();
    let workflow = match &m.workflow.rules {
        None => WorkflowDecision {
            created: true,
            reason: "no workflow:rules".into(),
        },
        Some(rules) => {
            let mut n = Vec::new();
            let d = match first_match(rules, &user_vals, ctx, &mut n) {
                None => WorkflowDecision {
                    created: false,
                    reason: "workflow:rules: no rule matched".into(),
                },
                Some((i, r)) if r.when == Some(When::Never) => WorkflowDecision {
                    created: false,
                    reason: format!("workflow:rules: rule {i} matched with when: never"),
                },
                Some((i, r)) => {
                    workflow_vars.clone_from(&r.variables);
                    WorkflowDecision {
                        created: true,
                        reason: format!("workflow:rules: rule {i} matched"),
                    }
                }
            };
            notes.extend(n);
            d
        }
    };
    let mut plan = Plan {
        name: None,
        workflow,
        stages: m.stages.clone(),
        jobs: Vec::new(),
        skipped: Vec::new(),
        notes,
        index: HashMap::new(),
        needs_idx: Vec::new(),
    };
    if let Some(name) = &m.workflow.name {
        let mut vals = user_vals.clone();
        for v in &workflow_vars {
            vals.insert(v.name.clone(), v.value.clone());
        }
        plan.name = Some(expand(name, &vals));
    }
    if !plan.workflow.created {
        return Ok(plan);
    }
    let stage_index: HashMap<&str, usize> = m
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();

    // Expand and decide every job.
    let mut all_instances: HashMap<&str, Vec<(String, MatrixVars)>> = HashMap::new();
    let mut kept: Vec<Kept<'_>> = Vec::new();
    let mut skipped_reason: HashMap<String, String> = HashMap::new();
    let mut inst_stage: HashMap<String, usize> = HashMap::new();
    let mut order = 0;
    let mut planned_variables = 0usize;
    for job in m.jobs.values() {
        for (name, node_index, node_total, matrix) in expand_parallel(job) {
            if order >= MAX_PLANNED_JOBS {
                return Err(too_large(
                    job,
                    format!("more than {MAX_PLANNED_JOBS} jobs (parallel included)"),
                ));
            }
            planned_variables += globals.len() + job.variables.len() + matrix.len() + 8;
            if planned_variables > MAX_PLANNED_VARIABLES {
                return Err(too_large(
                    job,
                    format!(
                        "more than {MAX_PLANNED_VARIABLES} variables over all jobs (global variables count once per job)"
                    ),
                ));
            }
            all_instances
                .entry(job.name.as_str())
                .or_default()
                .push((name.clone(), matrix.clone()));
            inst_stage.insert(
                name.clone(),
                stage_index.get(job.stage.as_str()).copied().unwrap_or(0),
            );
            let inst = Instance {
                job,
                name,
                node_index,
                node_total,
                matrix,
                order,
            };
            order += 1;
            let mut vars = if job.inherit_variables == crate::model::Inherit::All {
                globals.clone()
            } else {
                let mut v = base.clone();
                for g in &m.variables {
                    if job.inherit_variables.includes(&g.name) {
                        put(&mut v, g, VariableSource::Global);
                    }
                }
                v
            };
            for v in &workflow_vars {
                if job.inherit_variables.includes(&v.name) {
                    put(&mut vars, v, VariableSource::Workflow);
                }
            }
            put_kv(
                &mut vars,
                "CI_JOB_NAME",
                &inst.name,
                VariableSource::Predefined,
            );
            put_kv(
                &mut vars,
                "CI_JOB_NAME_SLUG",
                &slug(&inst.name),
                VariableSource::Predefined,
            );
            put_kv(
                &mut vars,
                "CI_JOB_STAGE",
                &job.stage,
                VariableSource::Predefined,
            );
            put_kv(
                &mut vars,
                "CI_NODE_TOTAL",
                &inst.node_total.to_string(),
                VariableSource::Predefined,
            );
            if let Some(i) = inst.node_index {
                put_kv(
                    &mut vars,
                    "CI_NODE_INDEX",
                    &i.to_string(),
                    VariableSource::Predefined,
                );
            }
            if let Some(n) = &plan.name {
                put_kv(&mut vars, "CI_PIPELINE_NAME", n, VariableSource::Predefined);
            }
            for v in &job.variables {
                put(&mut vars, v, VariableSource::Job);
            }
            for (k, v) in &inst.matrix {
                put_kv(&mut vars, k, v, VariableSource::Matrix);
            }
            let mut eval_vals = values(&vars);
            for (k, v) in &ctx.user_variables {
                eval_vals.insert(k.clone(), v.clone());
            }
            match decide(job, &eval_vals, ctx, &mut plan.notes) {
                Ok(d) => kept.push((inst, d, vars)),
                Err(reason) => {
                    skipped_reason.insert(inst.name.clone(), reason.clone());
                    plan.skipped.push(SkippedJob {
                        name: inst.name,
                        stage: job.stage.clone(),
                        reason,
                    });
                }
            }
        }
    }

    // Index the kept instances.
    let pos: HashMap<String, usize> = kept
        .iter()
        .enumerate()
        .map(|(i, (inst, _, _))| (inst.name.clone(), i))
        .collect();
    let stage_of = |inst: &Instance<'_>| {
        stage_index
            .get(inst.job.stage.as_str())
            .copied()
            .unwrap_or(0)
    };

    // Resolve needs.
    let mut needs_idx: Vec<Option<Vec<(usize, bool)>>> = Vec::with_capacity(kept.len());
    let mut planned_needs = 0usize;
    for (inst, d, _) in &kept {
        let Some(needs) = &d.needs else {
            needs_idx.push(None);
            continue;
        };
        let mut out = Vec::new();
        for need in needs {
            let at = |msg: String| {
                PipelineError::invalid(&need.loc, Some(&inst.job.name), Some("needs"), msg)
            };
            let targets: Vec<&String> = if let Some(list) = all_instances.get(need.job.as_str()) {
                match &need.matrix {
                    None => list.iter().map(|(n, _)| n).collect(),
                    Some(mx) => {
                        let mx = &matrix_refs(mx, &inst.matrix).map_err(at)?;
                        let sel: Vec<&String> = list
                            .iter()
                            .filter(|(_, vars)| matrix_selects(mx, vars))
                            .map(|(n, _)| n)
                            .collect();
                        if sel.is_empty() {
                            return Err(at(format!(
                                "undefined need: {:?} has no matrix instance matching {}",
                                need.job,
                                describe_matrix(mx)
                            )));
                        }
                        sel
                    }
                }
            } else if skipped_reason.contains_key(&need.job) || pos.contains_key(&need.job) {
                vec![&need.job]
            } else {
                return Err(at(format!("undefined need: {:?}", need.job)));
            };
            for t in targets {
                match pos.get(t) {
                    Some(&ti) => {
                        if stage_of(&kept[ti].0) > stage_of(inst) {
                            return Err(at(format!(
                                "{:?} is in a later stage ({}) than this job ({})",
                                t, kept[ti].0.job.stage, inst.job.stage
                            )));
                        }
                        planned_needs += 1;
                        if planned_needs > MAX_PLANNED_NEEDS {
                            return Err(too_large(
                                inst.job,
                                format!("more than {MAX_PLANNED_NEEDS} needs over all jobs"),
                            ));
                        }
                        out.push((ti, need.artifacts));
                    }
                    None if need.optional => {}
                    None => {
                        let why = skipped_reason.get(t).cloned().unwrap_or_default();
                        return Err(at(format!(
                            "needs {t:?}, which is not added to the pipeline ({why}); add it or mark the need optional: true"
                        )));
                    }
                }
            }
        }
        needs_idx.push(Some(out));
    }

    // Order: Kahn over needs edges, ties broken by (stage, definition order).
    let n = kept.len();
    let mut indeg = vec![0usize; n];
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ns) in needs_idx.iter().enumerate() {
        if let Some(ns) = ns {
            for &(t, _) in ns {
                indeg[i] += 1;
                succ[t].push(i);
            }
        }
    }
    let key = |i: usize| (stage_of(&kept[i].0), kept[i].0.order, i);
    let mut heap: BinaryHeap<Reverse<(usize, usize, usize)>> = (0..n)
        .filter(|&i| indeg[i] == 0)
        .map(|i| Reverse(key(i)))
        .collect();
    let mut sorted = Vec::with_capacity(n);
    while let Some(Reverse((_, _, i))) = heap.pop() {
        sorted.push(i);
        for &s in &succ[i] {
            indeg[s] -= 1;
            if indeg[s] == 0 {
                heap.push(Reverse(key(s)));
            }
        }
    }
    if sorted.len() < n {
        let stuck: Vec<&str> = (0..n)
            .filter(|&i| indeg[i] > 0)
            .map(|i| kept[i].0.name.as_str())
            .collect();
        let first = (0..n).find(|&i| indeg[i] > 0).unwrap_or(0);
        let (inst, d, _) = &kept[first];
        let loc = d
            .needs
            .as_ref()
            .and_then(|ns| ns.first())
            .map_or_else(|| inst.job.loc.clone(), |n| n.loc.clone());
        return Err(PipelineError::invalid(
            &loc,
            Some(&inst.job.name),
            Some("needs"),
            format!(
                "circular dependency detected in needs: {}",
                stuck.join(", ")
            ),
        ));
    }
    let mut new_pos = vec![0usize; n];
    for (p, &i) in sorted.iter().enumerate() {
        new_pos[i] = p;
    }

    // Build the planned jobs in order.
    let mut slots: Vec<Option<Kept<'_>>> = kept.into_iter().map(Some).collect();
    let names: Vec<String> = slots
        .iter()
        .map(|s| {
            s.as_ref()
                .map(|(i, _, _)| i.name.clone())
                .unwrap_or_default()
        })
        .collect();
    for &i in &sorted {
        let Some((inst, d, vars)) = slots[i].take() else {
            continue;
        };
        let needs = needs_idx[i].as_ref().map(|ns| {
            ns.iter()
                .map(|&(t, a)| PlannedNeed {
                    job: names[t].clone(),
                    artifacts: a,
                })
                .collect::<Vec<_>>()
        });
        plan.needs_idx.push(
            needs_idx[i]
                .as_ref()
                .map(|ns| ns.iter().map(|&(t, _)| new_pos[t]).collect()),
        );
        let stage_i = stage_of(&inst);
        let dependencies = match &inst.job.dependencies {
            Some(deps) => {
                let mut out = Vec::new();
                for dep in deps {
                    let list: Vec<String> = match all_instances.get(dep.as_str()) {
                        Some(l) => l.iter().map(|(n, _)| n.clone()).collect(),
                        None if pos.contains_key(dep) || skipped_reason.contains_key(dep) => {
                            vec![dep.clone()]
                        }
                        None => {
                            return Err(PipelineError::invalid(
                                &inst.job.loc,
                                Some(&inst.job.name),
                                Some("dependencies"),
                                format!("undefined dependency: {dep:?}"),
                            ));
                        }
                    };
                    for t in list {
                        if pos.contains_key(&t) {
                            let ts = inst_stage.get(&t).copied().unwrap_or(0);
                            if ts > stage_i {
                                return Err(PipelineError::invalid(
                                    &inst.job.loc,
                                    Some(&inst.job.name),
                                    Some("dependencies"),
                                    format!("{t:?} is not defined in current or prior stages"),
                                ));
                            }
                            out.push(t);
                        }
                    }
                }
                Dependencies::Jobs(out)
            }
            None => match &needs {
                Some(ns) => Dependencies::Jobs(
                    ns.iter()
                        .filter(|n| n.artifacts)
                        .map(|n| n.job.clone())
                        .collect(),
                ),
                None => Dependencies::PreviousStages,
            },
        };
        let job = inst.job;
        let def = &m.defaults;
        let inh = |k: &str| job.inherit_default.includes(k);
        let mut vars = vars;
        for v in &d.rule_vars {
            put(&mut vars, v, VariableSource::Rule);
        }
        if d.when == When::Manual
            && ctx
                .manual_jobs
                .iter()
                .any(|n| *n == inst.name || *n == job.name)
        {
            put_kv(
                &mut vars,
                "CI_JOB_MANUAL",
                "true",
                VariableSource::Predefined,
            );
        }
        for (k, v) in &ctx.user_variables {
            put_kv(&mut vars, k, v, VariableSource::User);
        }
        let vals = values(&vars);
        let allow_failure = d.allow_failure.clone().unwrap_or(AllowFailure {
            allowed: d.when == When::Manual && !d.manual_from_rule,
            exit_codes: Vec::new(),
        });
        let environment = job.environment.clone().map(|mut e| {
            e.name = expand(&e.name, &vals);
            e.url = e.url.map(|u| expand(&u, &vals));
            e
        });
        let start_in = if d.when == When::Delayed {
            d.start_in.as_deref().and_then(duration_seconds)
        } else {
            None
        };
        let manual_requested = d.when == When::Manual
            && ctx
                .manual_jobs
                .iter()
                .any(|n| *n == inst.name || *n == job.name);
        plan.index.insert(inst.name.clone(), plan.jobs.len());
        plan.jobs.push(PlannedJob {
            name: inst.name,
            base_name: job.name.clone(),
            stage: job.stage.clone(),
            stage_index: stage_i,
            pre_get_sources_script: job
                .hooks
                .clone()
                .or_else(|| def.hooks.clone().filter(|_| inh("hooks")))
                .unwrap_or_default(),
            before_script: job
                .before_script
                .clone()
                .or_else(|| def.before_script.clone().filter(|_| inh("before_script")))
                .unwrap_or_default(),
            script: job.script.clone(),
            after_script: job
                .after_script
                .clone()
                .or_else(|| def.after_script.clone().filter(|_| inh("after_script")))
                .unwrap_or_default(),
            image: job
                .image
                .clone()
                .or_else(|| def.image.clone().filter(|_| inh("image"))),
            services: job
                .services
                .clone()
                .or_else(|| def.services.clone().filter(|_| inh("services")))
                .unwrap_or_default(),
            variables: vars.into_values().collect(),
            artifacts: job
                .artifacts
                .clone()
                .or_else(|| def.artifacts.clone().filter(|_| inh("artifacts"))),
            caches: job
                .cache
                .clone()
                .or_else(|| def.cache.clone().filter(|_| inh("cache")))
                .unwrap_or_default(),
            dependencies,
            needs,
            when: d.when,
            start_in,
            allow_failure,
            timeout: job
                .timeout
                .clone()
                .or_else(|| def.timeout.clone().filter(|_| inh("timeout"))),
            retry: job
                .retry
                .clone()
                .or_else(|| def.retry.clone().filter(|_| inh("retry"))),
            resource_group: job.resource_group.as_ref().map(|r| expand(r, &vals)),
            interruptible: d
                .interruptible
                .or(job.interruptible)
                .or_else(|| def.interruptible.filter(|_| inh("interruptible")))
                .unwrap_or(false),
            coverage: job.coverage.clone(),
            tags: job
                .tags
                .clone()
                .or_else(|| def.tags.clone().filter(|_| inh("tags")))
                .unwrap_or_default(),
            environment,
            trigger: job.trigger.clone(),
            node_index: inst.node_index,
            node_total: inst.node_total,
            manual_requested,
            reason: d.reason,
        });
    }
    let real = plan
        .jobs
        .iter()
        .filter(|j| j.stage != ".pre" && j.stage != ".post")
        .count();
    if real == 0 {
        plan.workflow = WorkflowDecision {
            created: false,
            reason: if plan.jobs.is_empty() {
                "no job was added to the pipeline".into()
            } else {
                "the pipeline would only have .pre and .post jobs".into()
            },
        };
    }
    Ok(plan)
}

/// `needs:parallel:matrix` with `$[[ matrix.NAME ]]` values replaced by this job's own matrix
/// value `NAME` (GitLab's 1:1 needs between two matrices).
fn matrix_refs(
    mx: &[IndexMap<String, Vec<String>>],
    own: &[(String, String)],
) -> std::result::Result<Vec<IndexMap<String, Vec<String>>>, String> {
    let resolve = |value: &String| -> std::result::Result<String, String> {
        let Some(inner) = value
            .trim()
            .strip_prefix("$[[")
            .and_then(|v| v.strip_suffix("]]"))
        else {
            return Ok(value.clone());
        };
        let Some(name) = inner.trim().strip_prefix("matrix.") else {
            return Err(format!(
                "{value:?}: only $[[ matrix.NAME ]] is known in needs:parallel:matrix"
            ));
        };
        own.iter()
            .find(|(k, _)| k == name.trim())
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                format!(
                    "{value:?}: this job has no parallel:matrix value {}",
                    name.trim()
                )
            })
    };
    mx.iter()
        .map(|entry| {
            entry
                .iter()
                .map(|(k, vals)| {
                    Ok((
                        k.clone(),
                        vals.iter()
                            .map(resolve)
                            .collect::<std::result::Result<_, _>>()?,
                    ))
                })
                .collect()
        })
        .collect()
}

fn matrix_selects(mx: &[IndexMap<String, Vec<String>>], vars: &[(String, String)]) -> bool {
    mx.iter().any(|entry| {
        entry
            .iter()
            .all(|(k, allowed)| vars.iter().any(|(vk, vv)| vk == k && allowed.contains(vv)))
            && entry.len() == vars.len()
    })
}

fn describe_matrix(mx: &[IndexMap<String, Vec<String>>]) -> String {
    mx.iter()
        .map(|e| {
            e.iter()
                .map(|(k, v)| format!("{k}: [{}]", v.join(", ")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Decides whether a job is added: `Ok` with its effective settings, or `Err(reason)`.
fn decide(
    job: &Job,
    vars: &IndexMap<String, String>,
    ctx: &Context,
    notes: &mut Vec<String>,
) -> std::result::Result<Decided, String> {
    let mut d = Decided {
        when: job.when.unwrap_or(When::OnSuccess),
        allow_failure: job.allow_failure.clone(),
        manual_from_rule: false,
        start_in: job.start_in.clone(),
        needs: job.needs.clone(),
        interruptible: None,
        rule_vars: Vec::new(),
        reason: String::new(),
    };
    if let Some(rules) = &job.rules {
        let Some((i, r)) = first_match(rules, vars, ctx, notes) else {
            return Err("rules: no rule matched".into());
        };
        if r.when == Some(When::Never) {
            return Err(format!("rules: rule {i} matched with when: never"));
        }
        if let Some(w) = r.when {
            d.when = w;
            d.manual_from_rule = w == When::Manual;
        }
        if r.allow_failure.is_some() {
            d.allow_failure.clone_from(&r.allow_failure);
        }
        if r.start_in.is_some() {
            d.start_in.clone_from(&r.start_in);
        }
        if r.needs.is_some() {
            d.needs.clone_from(&r.needs);
        }
        d.interruptible = r.interruptible;
        d.rule_vars.clone_from(&r.variables);
        d.reason = format!("rules: rule {i} matched");
    } else {
        let default_only = OnlyExcept {
            refs: vec!["branches".into(), "tags".into()],
            ..OnlyExcept::default()
        };
        let only = job.only.as_ref().unwrap_or(&default_only);
        if !only_matches(only, vars, ctx) {
            return Err(format!("only: {} did not match", describe_only(only)));
        }
        if let Some(except) = &job.except
            && only_matches(except, vars, ctx)
        {
            return Err(format!("except: {} matched", describe_only(except)));
        }
        d.reason = if job.only.is_some() {
            "only: matched".into()
        } else {
            "no rules".into()
        };
    }
    if d.when == When::Never {
        return Err("when: never".into());
    }
    if d.when == When::Delayed && d.start_in.is_none() {
        return Err("when: delayed without start_in".into());
    }
    Ok(d)
}
