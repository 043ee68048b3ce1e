//! What the planner knows about the pipeline's situation: variables, changed and existing
//! files, the manual jobs the user asked for.

use std::collections::{BTreeMap, BTreeSet};

use indexmap::IndexMap;

/// The situation a pipeline is loaded and planned in.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Predefined and project variables (`CI_COMMIT_BRANCH`, `CI_COMMIT_REF_NAME`,
    /// `CI_PIPELINE_SOURCE`, `CI_DEFAULT_BRANCH`, ...). Lowest precedence.
    pub variables: IndexMap<String, String>,
    /// Variables the user gave (`--variable K=V`): the highest precedence, like GitLab's
    /// pipeline variables.
    pub user_variables: IndexMap<String, String>,
    /// Files changed by the pipeline's push (for `changes`); `None` when unknown, which makes
    /// every `changes` true, as GitLab does for pipelines without a push diff.
    pub changed_files: Option<Vec<String>>,
    /// Files changed against other refs, for `changes:compare_to`. A `compare_to` ref that is
    /// missing here falls back to [`Context::changed_files`], with a note in the plan.
    pub changed_files_against: BTreeMap<String, Vec<String>>,
    /// The repository's files (for `exists` and wildcard `include:local`); `None` makes every
    /// `exists` false and wildcard includes an error.
    pub files: Option<Vec<String>>,
    /// Manual jobs to run (`--manual JOB`); other manual jobs are left waiting.
    pub manual_jobs: BTreeSet<String>,
    /// Inputs for the main file's `spec:inputs`, as given on the command line.
    pub inputs: IndexMap<String, String>,
}

impl Context {
    /// A context with the given predefined variables.
    pub fn with_variables<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            variables: vars
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Self::default()
        }
    }

    /// Predefined variables overlaid with user variables: what `include:rules` and
    /// `workflow:rules` see before the pipeline's own variables.
    pub(crate) fn base_variables(&self) -> IndexMap<String, String> {
        let mut v = self.variables.clone();
        for (k, val) in &self.user_variables {
            v.insert(k.clone(), val.clone());
        }
        v
    }
}
