//! The `.gitlab-ci.yml` model and planner behind `oar exec`: pure, no processes, no network.
//!
//! - [`Pipeline::load`] reads the pipeline through a [`Source`] (a directory with
//!   [`DirSource`], or [`MemorySource`]): YAML anchors, aliases and merge keys, `include`
//!   (local files, nested, with `rules` and `spec:inputs`), `extends`, `!reference`, then the
//!   typed model. Remote, project, template and component includes are refused: they need
//!   GitLab. Every error names the file and line, the job and the keyword, like GitLab's CI
//!   lint: `.gitlab-ci.yml:7: job "test": keyword "when": unknown value "sometimes"; ...`.
//! - [`Pipeline::plan`] evaluates `workflow:rules` and every job's `rules` or
//!   `only`/`except` in a [`Context`], expands `parallel`, resolves `needs` and
//!   `dependencies`, and returns a [`Plan`]: the jobs in a runnable order with everything
//!   needed to build their payloads, and the skipped jobs with reasons.
//! - [`Scheduler`] says which jobs can start once others finished.
//! - [`Pipeline::preview`] is the merged YAML (`oar exec --preview`).
//!
//! Whatever the input, loading and planning end with a result or an error, quickly: values
//! nest at most 256 levels deep; aliases, includes, `extends`, `!reference` and inputs may
//! expand a pipeline to at most a million values (64 MiB of text); a plan has at most 5,000
//! jobs (`parallel` included), 2 million variables over all jobs and 100,000 resolved
//! `needs`; `rules:if` nests parentheses at most 64 deep and regexes are size-limited;
//! variable expansion is cut at 1 MiB. `fuzz/` holds the cargo-fuzz targets that check this.
//!
//! ```
//! use oar_pipeline::{Context, MemorySource, Pipeline};
//!
//! let source = MemorySource::new().with(
//!     ".gitlab-ci.yml",
//!     r#"
//! build:
//!   stage: build
//!   script: make
//! test:
//!   script: make test
//!   rules:
//!     - if: $CI_COMMIT_BRANCH == "main"
//! "#,
//! );
//! let ctx = Context::with_variables([("CI_COMMIT_BRANCH", "feature"), ("CI_COMMIT_REF_NAME", "feature")]);
//! let pipeline = Pipeline::load(&source, ".gitlab-ci.yml", &ctx)?;
//! let plan = pipeline.plan(&ctx)?;
//! assert_eq!(plan.jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(), ["build"]);
//! assert_eq!(plan.skipped[0].reason, "rules: no rule matched");
//! # Ok::<(), oar_pipeline::PipelineError>(())
//! ```

mod context;
mod error;
mod expand;
pub mod expr;
#[doc(hidden)]
pub mod fuzz;
mod glob;
mod inputs;
mod load;
mod merge;
pub mod model;
mod parse;
mod plan;
mod preview;
mod rules;
mod schedule;
mod source;
mod yaml;

use indexmap::IndexMap;

pub use context::Context;
pub use error::{Location, PipelineError, Result};
pub use model::{Job, Note};
pub use plan::{
    Dependencies, Plan, PlannedJob, PlannedNeed, PlannedVariable, SkippedJob, VariableSource,
    WorkflowDecision,
};
pub use schedule::{Decision, JobState, Outcome, Scheduler};
pub use source::{DirSource, MemorySource, Source};

/// A loaded pipeline: the merged configuration and its typed model.
#[derive(Debug)]
pub struct Pipeline {
    file: String,
    merged: yaml::Map,
    pub(crate) model: parse::Model,
    children: IndexMap<String, Pipeline>,
}

impl std::fmt::Debug for parse::Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("stages", &self.stages)
            .field("jobs", &self.jobs.len())
            .finish_non_exhaustive()
    }
}

/// Parent-child pipelines nest at most this deep (GitLab: two levels of children).
const MAX_CHILD_DEPTH: usize = 2;

impl Pipeline {
    /// Loads the pipeline at the repo-relative `path` (usually `.gitlab-ci.yml`), with the
    /// child pipelines of its `trigger:include` jobs.
    ///
    /// `ctx` provides the variables `include:rules` and `expand_vars` see, the file list for
    /// `include:rules:exists` and wildcard includes, and the main file's inputs.
    ///
    /// # Errors
    /// A [`PipelineError`] naming the file and line of the first problem.
    pub fn load(source: &dyn Source, path: &str, ctx: &Context) -> Result<Self> {
        // One budget for the pipeline and its children: copies of values are counted
        // wherever they are made (aliases, includes, extends, `!reference`, inputs).
        let budget = yaml::Budget::new();
        let merged = load::load_merged(source, ctx, path, &budget)?;
        Self::from_merged(source, ctx, path, merged, 0, &budget)
    }

    fn from_merged(
        source: &dyn Source,
        ctx: &Context,
        path: &str,
        mut merged: yaml::Map,
        depth: usize,
        budget: &yaml::Budget,
    ) -> Result<Self> {
        load::resolve_extends(&mut merged, budget)?;
        load::resolve_references(&mut merged, budget)?;
        let model = parse::model(&merged)?;
        let mut children = IndexMap::new();
        for job in model.jobs.values() {
            let Some(trigger) = &job.trigger else {
                continue;
            };
            if depth >= MAX_CHILD_DEPTH {
                return Err(PipelineError::invalid(
                    &job.loc,
                    Some(&job.name),
                    Some("trigger"),
                    "child pipelines nest at most two levels deep",
                ));
            }
            let mut child = yaml::Map::new();
            for file in &trigger.include {
                let m = load::load_merged(
                    source,
                    &Context {
                        inputs: IndexMap::new(),
                        ..ctx.clone()
                    },
                    file,
                    budget,
                )
                .map_err(|e| match e {
                    PipelineError::Read { path, source, .. } => PipelineError::Read {
                        location: job.loc.clone(),
                        path,
                        source,
                    },
                    e => e,
                })?;
                merge::deep_merge(&mut child, m);
            }
            let first = trigger.include.first().map_or(path, String::as_str);
            children.insert(
                job.name.clone(),
                Self::from_merged(source, ctx, first, child, depth + 1, budget)?,
            );
        }
        Ok(Self {
            file: path.to_owned(),
            merged,
            model,
            children,
        })
    }

    /// Loads `text` as `.gitlab-ci.yml` without other files (includes fail to read).
    ///
    /// # Errors
    /// As [`Pipeline::load`].
    pub fn parse_str(text: &str, ctx: &Context) -> Result<Self> {
        Self::load(
            &MemorySource::new().with(".gitlab-ci.yml", text),
            ".gitlab-ci.yml",
            ctx,
        )
    }

    /// The file it was loaded from.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The stages, `.pre` and `.post` included.
    pub fn stages(&self) -> &[String] {
        &self.model.stages
    }

    /// The (visible) jobs, in file order.
    pub fn jobs(&self) -> &IndexMap<String, Job> {
        &self.model.jobs
    }

    /// `default:`.
    pub fn defaults(&self) -> &model::Defaults {
        &self.model.defaults
    }

    /// Global `variables:`.
    pub fn variables(&self) -> &[model::Variable] {
        &self.model.variables
    }

    /// `workflow:`.
    pub fn workflow(&self) -> &model::Workflow {
        &self.model.workflow
    }

    /// Keywords accepted but ignored or unavailable locally.
    pub fn notes(&self) -> &[Note] {
        &self.model.notes
    }

    /// The child pipeline of the trigger job `job`.
    pub fn child(&self, job: &str) -> Option<&Pipeline> {
        self.children.get(job)
    }

    /// The merged configuration after include, extends and `!reference`, as YAML.
    pub fn preview(&self) -> String {
        preview::to_yaml(&self.merged)
    }

    /// Plans the pipeline in `ctx`.
    ///
    /// # Errors
    /// An undefined, later-stage or skipped (non-optional) `needs` target, a `needs` cycle,
    /// an undefined `dependencies` entry: errors GitLab reports when creating the pipeline.
    pub fn plan(&self, ctx: &Context) -> Result<Plan> {
        plan::plan(self, ctx)
    }
}
