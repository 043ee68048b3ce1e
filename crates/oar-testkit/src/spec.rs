//! `JobSpec`: the builder for a queued job. The payload itself is assembled in `payload.rs`
//! when a runner picks the job, because it depends on the runner (`CI_RUNNER_*`).

use std::fmt;

use serde_json::{Value, json};

/// A last-moment edit of the payload JSON.
pub(crate) type Mutator = Box<dyn FnOnce(&mut Value) + Send + 'static>;

/// Builder for a job to enqueue with [`crate::FakeGitlab::enqueue_job`].
///
/// Defaults: name `test`, stage `test`, timeout 3600 s, ref `main` at the head of the project's
/// repository, project default git depth 20, `trace_sections` on, untagged.
pub struct JobSpec {
    pub(crate) project_path: String,
    pub(crate) name: String,
    pub(crate) stage: String,
    pub(crate) before_script: Vec<String>,
    pub(crate) script: Vec<String>,
    pub(crate) after_script: Vec<String>,
    pub(crate) variables: Vec<Value>,
    pub(crate) timeout: u64,
    pub(crate) git_ref: Option<String>,
    pub(crate) sha: Option<String>,
    pub(crate) depth: Option<u32>,
    pub(crate) trace_sections: bool,
    pub(crate) tags: Vec<String>,
    pub(crate) artifacts: Option<Value>,
    pub(crate) cache: Option<Value>,
    pub(crate) dependencies: Vec<i64>,
    pub(crate) image: Option<Value>,
    pub(crate) services: Option<Value>,
    pub(crate) hooks: Vec<Value>,
    pub(crate) allow_git_fetch: bool,
    pub(crate) protected: bool,
    pub(crate) pipeline_id: Option<i64>,
    pub(crate) token: Option<String>,
    pub(crate) allow_failure: bool,
    pub(crate) mutate: Option<Mutator>,
    pub(crate) raw: Option<Vec<u8>>,
    pub(crate) id_tokens: Vec<(String, String)>,
    pub(crate) environment: Option<String>,
}

fn strings<I: IntoIterator<Item = S>, S: Into<String>>(lines: I) -> Vec<String> {
    lines.into_iter().map(Into::into).collect()
}

fn as_array(v: Value) -> Value {
    match v {
        Value::Array(_) | Value::Null => v,
        other => Value::Array(vec![other]),
    }
}

impl JobSpec {
    /// A job of project `project_path` (for git jobs the repository must exist).
    pub fn new(project_path: &str) -> Self {
        JobSpec {
            project_path: project_path.to_owned(),
            name: "test".into(),
            stage: "test".into(),
            before_script: Vec::new(),
            script: Vec::new(),
            after_script: Vec::new(),
            variables: Vec::new(),
            timeout: 3600,
            git_ref: None,
            sha: None,
            depth: None,
            trace_sections: true,
            tags: Vec::new(),
            artifacts: None,
            cache: None,
            dependencies: Vec::new(),
            image: None,
            services: None,
            hooks: Vec::new(),
            allow_git_fetch: true,
            protected: false,
            pipeline_id: None,
            token: None,
            allow_failure: false,
            mutate: None,
            raw: None,
            id_tokens: Vec::new(),
            environment: None,
        }
    }

    /// Send these bytes verbatim as the `201` body (for broken-JSON corpora).
    pub fn raw_payload(body: Vec<u8>) -> Self {
        let mut spec = JobSpec::new("acme/raw");
        spec.raw = Some(body);
        spec
    }

    /// Project of a raw-payload job (matters only for git auth).
    pub fn project(mut self, path: &str) -> Self {
        path.clone_into(&mut self.project_path);
        self
    }

    /// The `script` lines.
    pub fn script<I: IntoIterator<Item = S>, S: Into<String>>(mut self, lines: I) -> Self {
        self.script = strings(lines);
        self
    }

    /// `before_script` lines; GitLab concatenates them in front of `script` in the `script` step.
    pub fn before_script<I: IntoIterator<Item = S>, S: Into<String>>(mut self, lines: I) -> Self {
        self.before_script = strings(lines);
        self
    }

    /// `after_script` lines (an `after_script` step with `when: always`).
    pub fn after_script<I: IntoIterator<Item = S>, S: Into<String>>(mut self, lines: I) -> Self {
        self.after_script = strings(lines);
        self
    }

    fn push_var(
        mut self,
        key: &str,
        value: &str,
        public: bool,
        masked: bool,
        file: bool,
        raw: bool,
    ) -> Self {
        self.variables.push(json!({
            "key": key, "value": value, "public": public,
            "masked": masked, "file": file, "raw": raw,
        }));
        self
    }

    /// A plain job variable.
    pub fn variable(self, key: &str, value: &str) -> Self {
        self.push_var(key, value, true, false, false, false)
    }

    /// A masked (and non-public) variable.
    pub fn masked_variable(self, key: &str, value: &str) -> Self {
        self.push_var(key, value, false, true, false, false)
    }

    /// A file variable.
    pub fn file_variable(self, key: &str, value: &str) -> Self {
        self.push_var(key, value, false, false, true, false)
    }

    /// A raw (not expanded) variable.
    pub fn raw_variable(self, key: &str, value: &str) -> Self {
        self.push_var(key, value, false, false, false, true)
    }

    /// A variable with any combination of the `masked`, `file` and `raw` flags; it is `public`
    /// only without any of them, as with the single-flag methods above.
    pub fn variable_with_flags(
        self,
        key: &str,
        value: &str,
        masked: bool,
        file: bool,
        raw: bool,
    ) -> Self {
        self.push_var(key, value, !(masked || file || raw), masked, file, raw)
    }

    /// Job timeout in seconds (`runner_info.timeout` and every step's `timeout`), capped by the
    /// runner's `maximum_timeout`.
    pub fn timeout(mut self, secs: u64) -> Self {
        self.timeout = secs;
        self
    }

    /// Branch or tag to build (default `main`).
    pub fn git_ref(mut self, r: &str) -> Self {
        self.git_ref = Some(r.to_owned());
        self
    }

    /// Commit to build (default: the ref's head).
    pub fn sha(mut self, sha: &str) -> Self {
        self.sha = Some(sha.to_owned());
        self
    }

    /// `GIT_DEPTH` (also sets `git_info.depth`; 0 = full clone).
    pub fn depth(mut self, d: u32) -> Self {
        self.depth = Some(d);
        self
    }

    /// Job name.
    pub fn name(mut self, n: &str) -> Self {
        n.clone_into(&mut self.name);
        self
    }

    /// Stage name.
    pub fn stage(mut self, s: &str) -> Self {
        s.clone_into(&mut self.stage);
        self
    }

    /// `features.trace_sections`.
    pub fn trace_sections(mut self, on: bool) -> Self {
        self.trace_sections = on;
        self
    }

    /// Job tags: only a runner whose `tag_list` covers them gets the job.
    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        self
    }

    /// The `artifacts` array (an object is wrapped into a one-element array).
    pub fn artifacts(mut self, v: Value) -> Self {
        self.artifacts = Some(as_array(v));
        self
    }

    /// The `cache` array (an object is wrapped into a one-element array).
    pub fn cache(mut self, v: Value) -> Self {
        self.cache = Some(as_array(v));
        self
    }

    /// Jobs whose artifacts this job depends on (`dependencies[]`).
    pub fn dependencies(mut self, job_ids: &[i64]) -> Self {
        self.dependencies = job_ids.to_vec();
        self
    }

    /// The `image` object.
    pub fn image(mut self, v: Value) -> Self {
        self.image = Some(v);
        self
    }

    /// The `services` array.
    pub fn services(mut self, v: Value) -> Self {
        self.services = Some(as_array(v));
        self
    }

    /// A hook (`pre_get_sources_script` or `post_get_sources_script`).
    pub fn hook<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        name: &str,
        lines: I,
    ) -> Self {
        self.hooks
            .push(json!({"name": name, "script": strings(lines)}));
        self
    }

    /// `allow_git_fetch` (default true: `GIT_STRATEGY` defaults to fetch).
    pub fn allow_git_fetch(mut self, on: bool) -> Self {
        self.allow_git_fetch = on;
        self
    }

    /// Protected ref (`git_info.protected`, `CI_COMMIT_REF_PROTECTED`); `ref_protected` runners
    /// only take protected jobs.
    pub fn protected(mut self, on: bool) -> Self {
        self.protected = on;
        self
    }

    /// `allow_failure` of the script step.
    pub fn allow_failure(mut self, on: bool) -> Self {
        self.allow_failure = on;
        self
    }

    /// Pipeline id (default: a new pipeline per job).
    pub fn pipeline(mut self, id: i64) -> Self {
        self.pipeline_id = Some(id);
        self
    }

    /// Job token (default: a random `glcbt-…`).
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// An ID token (`id_tokens: NAME: aud: AUD` in `.gitlab-ci.yml`): a masked variable
    /// `name` holding an RS256 JWT with GitLab's claims for this job, signed by the current
    /// key of [`crate::FakeGitlab::rotate_id_token_key`] and verifiable against
    /// `/oauth/discovery/keys`. It expires with the job's timeout.
    pub fn id_token(mut self, name: &str, aud: &str) -> Self {
        self.id_tokens.push((name.to_owned(), aud.to_owned()));
        self
    }

    /// The job's `environment:` name (`CI_ENVIRONMENT_NAME`, `CI_ENVIRONMENT_SLUG`,
    /// `CI_ENVIRONMENT_TIER` and the ID tokens' `environment` claim).
    pub fn environment(mut self, name: &str) -> Self {
        self.environment = Some(name.to_owned());
        self
    }

    /// Last-moment edit of the payload JSON (for corpora of malformed payloads).
    pub fn mutate(mut self, f: impl FnOnce(&mut Value) + Send + 'static) -> Self {
        self.mutate = Some(Box::new(f));
        self
    }
}

impl fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobSpec")
            .field("project_path", &self.project_path)
            .field("name", &self.name)
            .field("script", &self.script)
            .field("tags", &self.tags)
            .field("raw", &self.raw.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}
