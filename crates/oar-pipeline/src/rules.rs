//! Evaluating `rules`, `only`/`except` and `include:rules` against a context.

use indexmap::IndexMap;

use crate::context::Context;
use crate::error::Result;
use crate::expand::expand;
use crate::glob::Glob;
use crate::model::{Changes, OnlyExcept, Rule, When};
use crate::parse::At;
use crate::yaml::{Node, Value};

/// Whether any of `patterns` (variables expanded) matches any of `files`.
fn any_match(patterns: &[String], files: &[String], vars: &IndexMap<String, String>) -> bool {
    patterns.iter().any(|p| {
        let p = expand(p, vars);
        match Glob::new(&p) {
            Ok(g) => files.iter().any(|f| g.matches(f)),
            Err(_) => false,
        }
    })
}

/// `exists`: true when any pattern matches a file of the repository.
pub(crate) fn eval_exists(
    patterns: &[String],
    vars: &IndexMap<String, String>,
    ctx: &Context,
) -> bool {
    ctx.files
        .as_ref()
        .is_some_and(|files| any_match(patterns, files, vars))
}

/// `changes`: true when a changed file matches, or when the changes are unknown.
pub(crate) fn eval_changes(
    c: &Changes,
    vars: &IndexMap<String, String>,
    ctx: &Context,
    notes: &mut Vec<String>,
) -> bool {
    let files = match &c.compare_to {
        Some(r) => {
            let r = expand(r, vars);
            match ctx.changed_files_against.get(&r) {
                Some(f) => Some(f),
                None => {
                    notes.push(format!("changes:compare_to {r:?}: no diff against it is known; used the push's changes"));
                    ctx.changed_files.as_ref()
                }
            }
        }
        None => ctx.changed_files.as_ref(),
    };
    files.is_none_or(|files| any_match(&c.paths, files, vars))
}

/// Whether a rule's clauses (`if`, `changes`, `exists`) all hold.
pub(crate) fn rule_matches(
    rule: &Rule,
    vars: &IndexMap<String, String>,
    ctx: &Context,
    notes: &mut Vec<String>,
) -> bool {
    rule.if_.as_ref().is_none_or(|e| e.eval(vars))
        && rule
            .changes
            .as_ref()
            .is_none_or(|c| eval_changes(c, vars, ctx, notes))
        && rule
            .exists
            .as_ref()
            .is_none_or(|e| eval_exists(e, vars, ctx))
}

/// The first matching rule, with its 1-based index.
pub(crate) fn first_match<'r>(
    rules: &'r [Rule],
    vars: &IndexMap<String, String>,
    ctx: &Context,
    notes: &mut Vec<String>,
) -> Option<(usize, &'r Rule)> {
    rules
        .iter()
        .enumerate()
        .find(|(_, r)| rule_matches(r, vars, ctx, notes))
        .map(|(i, r)| (i + 1, r))
}

fn var<'v>(vars: &'v IndexMap<String, String>, name: &str) -> Option<&'v str> {
    vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

fn ref_matches(r: &str, vars: &IndexMap<String, String>) -> bool {
    let source = var(vars, "CI_PIPELINE_SOURCE").unwrap_or("push");
    let tag = var(vars, "CI_COMMIT_TAG").is_some();
    let mr = source == "merge_request_event";
    match r {
        "branches" => !tag && !mr,
        "tags" => tag,
        "merge_requests" => mr,
        "pushes" => source == "push",
        "schedules" => source == "schedule",
        "web" => source == "web",
        "api" => source == "api",
        "triggers" => source == "trigger",
        "pipelines" => source == "pipeline" || source == "parent_pipeline",
        "external" => source == "external",
        "chat" => source == "chat",
        "external_pull_requests" => source == "external_pull_request_event",
        _ => {
            let name = var(vars, "CI_COMMIT_REF_NAME").unwrap_or_default();
            let r = r.split('@').next().unwrap_or(r);
            if let Some(body) = r.strip_prefix('/')
                && let Some(end) = body.rfind('/')
            {
                let flags = &body[end + 1..];
                let pat = if flags.contains('i') {
                    format!("(?i){}", &body[..end])
                } else {
                    body[..end].to_owned()
                };
                return regex::Regex::new(&pat).is_ok_and(|re| re.is_match(name));
            }
            r == name
        }
    }
}

/// Whether every specified clause of an `only` (or `except`) holds.
pub(crate) fn only_matches(o: &OnlyExcept, vars: &IndexMap<String, String>, ctx: &Context) -> bool {
    (o.refs.is_empty() || o.refs.iter().any(|r| ref_matches(r, vars)))
        && (o.variables.is_empty() || o.variables.iter().any(|e| e.eval(vars)))
        && (o.changes.is_empty()
            || ctx
                .changed_files
                .as_ref()
                .is_none_or(|f| any_match(&o.changes, f, vars)))
        && (!o.kubernetes || var(vars, "KUBECONFIG").is_some())
}

/// One `include:rules` entry.
pub(crate) struct IncludeRule {
    rule: Rule,
    pub never: bool,
}

impl IncludeRule {
    pub(crate) fn parse(n: &Node) -> Result<Self> {
        let at = At::new(None, "include:rules");
        let Value::Map(m) = &n.value else {
            return Err(at.err(&n.loc, format!("expected a hash, found {}", n.kind())));
        };
        for (k, (kl, _)) in m {
            if !["if", "exists", "changes", "when"].contains(&k.as_str()) {
                return Err(at.err(
                    kl,
                    format!("unknown keyword {k:?}; expected if, exists, changes or when"),
                ));
            }
        }
        let seq = Node::new(Value::Seq(vec![n.clone()]), n.loc.clone());
        let mut rules = crate::parse::rules(None, "include:rules", &seq, false)?;
        let rule = rules.pop().ok_or_else(|| at.err(&n.loc, "empty rule"))?;
        let never = match rule.when {
            None | Some(When::Always) => false,
            Some(When::Never) => true,
            Some(_) => return Err(at.err(&n.loc, "include:rules:when only takes never or always")),
        };
        Ok(Self { rule, never })
    }

    pub(crate) fn matches(&self, vars: &IndexMap<String, String>, ctx: &Context) -> bool {
        rule_matches(&self.rule, vars, ctx, &mut Vec::new())
    }
}
