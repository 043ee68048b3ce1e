//! Turning the merged YAML into the typed model, with GitLab-lint-like errors.

use indexmap::IndexMap;

use crate::error::{Location, PipelineError, Result};
use crate::expr::Expr;
use crate::model::{
    AllowFailure, Artifacts, Cache, CacheKey, CachePolicy, Changes, DEFAULT_STAGES, Defaults,
    Environment, Image, Inherit, Job, Need, Note, OnlyExcept, Parallel, Retry, Rule, Timeout,
    Trigger, UploadWhen, Variable, When, Workflow,
};
use crate::yaml::{Map, Node, Value};

/// Who and what a value belongs to, for error messages.
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub job: Option<&'a str>,
    pub kw: &'a str,
}

impl<'a> At<'a> {
    pub fn new(job: Option<&'a str>, kw: &'a str) -> Self {
        Self { job, kw }
    }

    pub fn err(&self, loc: &Location, message: impl Into<String>) -> PipelineError {
        PipelineError::invalid(loc, self.job, Some(self.kw), message)
    }

    fn wrong(&self, n: &Node, expected: &str) -> PipelineError {
        self.err(&n.loc, format!("expected {expected}, found {}", n.kind()))
    }

    fn string(&self, n: &Node) -> Result<String> {
        match &n.value {
            Value::Str(s) => Ok(s.clone()),
            _ => Err(self.wrong(n, "a string")),
        }
    }

    /// A string, number or boolean as text.
    fn text(&self, n: &Node) -> Result<String> {
        n.scalar_text().ok_or_else(|| self.wrong(n, "a string"))
    }

    fn boolean(&self, n: &Node) -> Result<bool> {
        match n.value {
            Value::Bool(b) => Ok(b),
            _ => Err(self.wrong(n, "a boolean")),
        }
    }

    fn int(&self, n: &Node) -> Result<i64> {
        match n.value {
            Value::Int(i) => Ok(i),
            _ => Err(self.wrong(n, "an integer")),
        }
    }

    fn map<'n>(&self, n: &'n Node) -> Result<&'n Map> {
        n.as_map().ok_or_else(|| self.wrong(n, "a hash"))
    }

    /// A string or an array of strings.
    fn strings(&self, n: &Node) -> Result<Vec<String>> {
        match &n.value {
            Value::Str(s) => Ok(vec![s.clone()]),
            Value::Seq(items) => items.iter().map(|i| self.text(i)).collect(),
            _ => Err(self.wrong(n, "a string or an array of strings")),
        }
    }

    /// An array of strings (strictly).
    fn string_array(&self, n: &Node) -> Result<Vec<String>> {
        match &n.value {
            Value::Seq(items) => items.iter().map(|i| self.text(i)).collect(),
            _ => Err(self.wrong(n, "an array of strings")),
        }
    }

    fn check_keys(&self, m: &Map, allowed: &[&str]) -> Result<()> {
        for (k, (kl, _)) in m {
            if !allowed.contains(&k.as_str()) {
                return Err(self.err(
                    kl,
                    format!(
                        "unknown keyword {k:?}; expected one of: {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn sub(&self, kw: &'a str) -> At<'a> {
        At { job: self.job, kw }
    }
}

/// A script: a string, or an array of strings and nested arrays (flattened).
pub(crate) fn script(at: At<'_>, n: &Node) -> Result<Vec<String>> {
    fn walk(at: At<'_>, n: &Node, out: &mut Vec<String>, depth: usize) -> Result<()> {
        match &n.value {
            Value::Seq(items) if depth < 10 => {
                for i in items {
                    walk(at, i, out, depth + 1)?;
                }
                Ok(())
            }
            _ if depth > 0 || matches!(n.value, Value::Str(_)) => {
                out.push(
                    at.text(n)
                        .map_err(|_| at.wrong(n, "a string or a nested array of strings"))?,
                );
                Ok(())
            }
            _ => Err(at.wrong(n, "a string or an array of strings")),
        }
    }
    let mut out = Vec::new();
    walk(at, n, &mut out, 0)?;
    Ok(out)
}

pub(crate) fn variables(at: At<'_>, n: &Node, global: bool) -> Result<Vec<Variable>> {
    let m = match &n.value {
        Value::Null => return Ok(Vec::new()),
        Value::Map(m) => m,
        _ => return Err(at.wrong(n, "a hash of variables")),
    };
    let mut out = Vec::new();
    for (name, (kl, v)) in m {
        let mut var = Variable {
            name: name.clone(),
            value: String::new(),
            description: None,
            expand: true,
            options: Vec::new(),
        };
        match &v.value {
            Value::Null => {}
            Value::Map(vm) => {
                let allowed: &[&str] = if global { &["value", "description", "expand", "options"] } else { &["value", "expand"] };
                at.check_keys(vm, allowed)?;
                for (k, (_, x)) in vm {
                    match k.as_str() {
                        "value" => var.value = at.text(x)?,
                        "description" => var.description = Some(at.text(x)?),
                        "expand" => var.expand = at.boolean(x)?,
                        _ => var.options = at.string_array(x)?,
                    }
                }
                if !var.options.is_empty() && !var.options.contains(&var.value) {
                    return Err(at.err(kl, format!("variable {name:?}: value {:?} is not one of its options", var.value)));
                }
            }
            _ => var.value = at.text(v).map_err(|_| at.err(&v.loc, format!("variable {name:?}: expected a string, a number, a boolean or a hash with value:, found {}", v.kind())))?,
        }
        out.push(var);
    }
    Ok(out)
}

fn when(at: At<'_>, n: &Node, allowed: &[When]) -> Result<When> {
    let s = at.string(n)?;
    match When::parse(&s) {
        Some(w) if allowed.contains(&w) => Ok(w),
        _ => Err(at.err(
            &n.loc,
            format!(
                "unknown value {s:?}; expected one of: {}",
                allowed
                    .iter()
                    .map(|w| w.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

const JOB_WHEN: [When; 6] = [
    When::OnSuccess,
    When::OnFailure,
    When::Always,
    When::Manual,
    When::Delayed,
    When::Never,
];

fn allow_failure(at: At<'_>, n: &Node) -> Result<AllowFailure> {
    match &n.value {
        Value::Bool(b) => Ok(AllowFailure {
            allowed: *b,
            exit_codes: Vec::new(),
        }),
        Value::Map(m) => {
            at.check_keys(m, &["exit_codes"])?;
            let codes = match m.get("exit_codes") {
                Some((_, c)) => exit_codes(at, c)?,
                None => Vec::new(),
            };
            Ok(AllowFailure {
                allowed: true,
                exit_codes: codes,
            })
        }
        _ => Err(at.wrong(n, "a boolean or a hash with exit_codes:")),
    }
}

fn exit_codes(at: At<'_>, n: &Node) -> Result<Vec<i32>> {
    let one = |x: &Node| -> Result<i32> {
        i32::try_from(at.int(x)?).map_err(|_| at.err(&x.loc, "exit code out of range"))
    };
    match &n.value {
        Value::Int(_) => Ok(vec![one(n)?]),
        Value::Seq(items) => items.iter().map(one).collect(),
        _ => Err(at.wrong(n, "an integer or an array of integers")),
    }
}

fn expr(at: At<'_>, n: &Node) -> Result<Expr> {
    let s = at.string(n)?;
    Expr::parse(&s).map_err(|e| at.err(&n.loc, format!("invalid expression {s:?}: {e}")))
}

fn changes(at: At<'_>, n: &Node) -> Result<Changes> {
    match &n.value {
        Value::Map(m) => {
            at.check_keys(m, &["paths", "compare_to"])?;
            let paths = match m.get("paths") {
                Some((_, p)) => at.string_array(p)?,
                None => return Err(at.err(&n.loc, "changes: with compare_to also needs paths:")),
            };
            let compare_to = m.get("compare_to").map(|(_, c)| at.string(c)).transpose()?;
            Ok(Changes { paths, compare_to })
        }
        _ => Ok(Changes {
            paths: at.strings(n)?,
            compare_to: None,
        }),
    }
}

fn exists(at: At<'_>, n: &Node) -> Result<Vec<String>> {
    match &n.value {
        Value::Map(m) => {
            at.check_keys(m, &["paths", "project", "ref"])?;
            if let Some((_, p)) = m.get("project") {
                return Err(at.err(&p.loc, "exists:project is not available locally"));
            }
            m.get("paths")
                .map_or(Ok(Vec::new()), |(_, p)| at.string_array(p))
        }
        _ => at.strings(n),
    }
}

pub(crate) fn rules(job: Option<&str>, kw: &str, n: &Node, workflow: bool) -> Result<Vec<Rule>> {
    let at = At::new(job, kw);
    let Value::Seq(top) = &n.value else {
        return Err(at.wrong(n, "an array of rules"));
    };
    // Nested arrays are flattened, as GitLab does for `- !reference [.rules, rules]` among
    // the rules.
    fn flatten<'n>(items: &'n [Node], out: &mut Vec<&'n Node>, depth: usize) {
        for item in items {
            match &item.value {
                Value::Seq(inner) if depth < 10 => flatten(inner, out, depth + 1),
                _ => out.push(item),
            }
        }
    }
    let mut items = Vec::new();
    flatten(top, &mut items, 0);
    let mut out = Vec::new();
    for item in items {
        let m = at.map(item)?;
        let allowed: &[&str] = if workflow {
            &[
                "if",
                "changes",
                "exists",
                "when",
                "variables",
                "auto_cancel",
            ]
        } else {
            &[
                "if",
                "changes",
                "exists",
                "when",
                "start_in",
                "allow_failure",
                "variables",
                "needs",
                "interruptible",
            ]
        };
        at.check_keys(m, allowed)?;
        let mut rule = Rule {
            if_: None,
            changes: None,
            exists: None,
            when: None,
            start_in: None,
            allow_failure: None,
            variables: Vec::new(),
            needs: None,
            interruptible: None,
            loc: item.loc.clone(),
        };
        for (k, (_, v)) in m {
            let sub = format!("{kw}:{k}");
            let at = at.sub(&sub);
            match k.as_str() {
                "if" => rule.if_ = Some(expr(at, v)?),
                "changes" => rule.changes = Some(changes(at, v)?),
                "exists" => rule.exists = Some(exists(at, v)?),
                "when" => {
                    let allowed: &[When] = if workflow {
                        &[When::Always, When::Never]
                    } else {
                        &JOB_WHEN
                    };
                    rule.when = Some(when(at, v, allowed)?);
                }
                "start_in" => rule.start_in = Some(at.text(v)?),
                "allow_failure" => rule.allow_failure = Some(allow_failure(at, v)?),
                "variables" => rule.variables = variables(at, v, false)?,
                "needs" => rule.needs = Some(needs(at, v)?),
                "interruptible" => rule.interruptible = Some(at.boolean(v)?),
                _ => {}
            }
        }
        if rule.when == Some(When::Delayed) && rule.start_in.is_none() {
            return Err(at.err(&item.loc, "rules with when: delayed need start_in"));
        }
        out.push(rule);
    }
    Ok(out)
}

fn only_except(at: At<'_>, n: &Node) -> Result<OnlyExcept> {
    let mut out = OnlyExcept {
        loc: n.loc.clone(),
        ..OnlyExcept::default()
    };
    match &n.value {
        Value::Str(_) | Value::Seq(_) => out.refs = at.strings(n)?,
        Value::Map(m) => {
            at.check_keys(m, &["refs", "variables", "changes", "kubernetes"])?;
            for (k, (_, v)) in m {
                match k.as_str() {
                    "refs" => out.refs = at.strings(v)?,
                    "variables" => {
                        let list = match &v.value {
                            Value::Seq(items) => items.iter().collect(),
                            _ => vec![v],
                        };
                        out.variables = list
                            .into_iter()
                            .map(|x| expr(at, x))
                            .collect::<Result<_>>()?;
                    }
                    "changes" => out.changes = changes(at, v)?.paths,
                    _ => {
                        if at.text(v)? != "active" {
                            return Err(at.err(&v.loc, "kubernetes: only takes active"));
                        }
                        out.kubernetes = true;
                    }
                }
            }
        }
        _ => return Err(at.wrong(n, "a string, an array or a hash")),
    }
    Ok(out)
}

fn matrix(at: At<'_>, n: &Node) -> Result<Vec<IndexMap<String, Vec<String>>>> {
    let Value::Seq(items) = &n.value else {
        return Err(at.wrong(n, "an array of hashes"));
    };
    let mut out = Vec::new();
    for item in items {
        let m = at.map(item)?;
        let mut entry = IndexMap::new();
        for (k, (_, v)) in m {
            let values = match &v.value {
                Value::Seq(vs) => vs.iter().map(|x| at.text(x)).collect::<Result<Vec<_>>>()?,
                _ => vec![
                    at.text(v)
                        .map_err(|_| at.wrong(v, "a string or an array of strings"))?,
                ],
            };
            if values.is_empty() {
                return Err(at.err(&v.loc, format!("variable {k:?} has no values")));
            }
            entry.insert(k.clone(), values);
        }
        if entry.is_empty() {
            return Err(at.err(&item.loc, "a matrix entry needs at least one variable"));
        }
        out.push(entry);
    }
    if out.is_empty() {
        return Err(at.err(&n.loc, "the matrix needs at least one entry"));
    }
    Ok(out)
}

pub(crate) fn needs(at: At<'_>, n: &Node) -> Result<Vec<Need>> {
    let items: Vec<&Node> = match &n.value {
        Value::Seq(items) => items.iter().collect(),
        Value::Str(_) | Value::Map(_) => vec![n],
        Value::Null => Vec::new(),
        _ => return Err(at.wrong(n, "an array of jobs")),
    };
    let mut out = Vec::new();
    for item in items {
        match &item.value {
            Value::Str(s) => out.push(Need {
                job: s.clone(),
                artifacts: true,
                optional: false,
                matrix: None,
                loc: item.loc.clone(),
            }),
            Value::Map(m) => {
                at.check_keys(
                    m,
                    &[
                        "job",
                        "artifacts",
                        "optional",
                        "parallel",
                        "project",
                        "pipeline",
                        "ref",
                    ],
                )?;
                if let Some((_, p)) = m.get("project") {
                    return Err(at.err(
                        &p.loc,
                        "needs:project (artifacts of another project) is not available locally",
                    ));
                }
                if let Some((_, p)) = m.get("pipeline") {
                    return Err(at.err(
                        &p.loc,
                        "needs:pipeline (artifacts of another pipeline) is not available locally",
                    ));
                }
                let Some((_, job)) = m.get("job") else {
                    return Err(at.err(&item.loc, "a needs hash needs job:"));
                };
                let mut need = Need {
                    job: at.string(job)?,
                    artifacts: true,
                    optional: false,
                    matrix: None,
                    loc: item.loc.clone(),
                };
                if let Some((_, a)) = m.get("artifacts") {
                    need.artifacts = at.boolean(a)?;
                }
                if let Some((_, o)) = m.get("optional") {
                    need.optional = at.boolean(o)?;
                }
                if let Some((_, p)) = m.get("parallel") {
                    let pm = at.map(p)?;
                    at.check_keys(pm, &["matrix"])?;
                    if let Some((_, mx)) = pm.get("matrix") {
                        need.matrix = Some(matrix(at, mx)?);
                    }
                }
                out.push(need);
            }
            _ => return Err(at.wrong(item, "a job name or a hash with job:")),
        }
    }
    Ok(out)
}

fn image(at: At<'_>, n: &Node, service: bool) -> Result<Image> {
    let mut img = Image {
        name: String::new(),
        entrypoint: None,
        command: None,
        alias: None,
        pull_policy: Vec::new(),
        variables: Vec::new(),
    };
    match &n.value {
        Value::Str(s) => img.name = s.clone(),
        Value::Map(m) => {
            let allowed: &[&str] = if service {
                &[
                    "name",
                    "entrypoint",
                    "command",
                    "alias",
                    "pull_policy",
                    "variables",
                    "docker",
                    "kubernetes",
                ]
            } else {
                &["name", "entrypoint", "pull_policy", "docker", "kubernetes"]
            };
            at.check_keys(m, allowed)?;
            for (k, (_, v)) in m {
                match k.as_str() {
                    "name" => img.name = at.string(v)?,
                    "entrypoint" => img.entrypoint = Some(at.strings(v)?),
                    "command" => img.command = Some(at.strings(v)?),
                    "alias" => img.alias = Some(at.string(v)?),
                    "pull_policy" => {
                        let p = at.strings(v)?;
                        if let Some(bad) = p
                            .iter()
                            .find(|p| !["always", "if-not-present", "never"].contains(&p.as_str()))
                        {
                            return Err(at.err(&v.loc, format!("unknown pull_policy {bad:?}; expected always, if-not-present or never")));
                        }
                        img.pull_policy = p;
                    }
                    "variables" => img.variables = variables(at, v, false)?,
                    _ => {}
                }
            }
            if img.name.is_empty() {
                return Err(at.err(&n.loc, "name: is required"));
            }
        }
        _ => return Err(at.wrong(n, "a string or a hash")),
    }
    Ok(img)
}

fn services(at: At<'_>, n: &Node) -> Result<Vec<Image>> {
    let Value::Seq(items) = &n.value else {
        return Err(at.wrong(n, "an array of services"));
    };
    items.iter().map(|i| image(at, i, true)).collect()
}

fn upload_when(at: At<'_>, n: &Node) -> Result<UploadWhen> {
    Ok(match at.string(n)?.as_str() {
        "on_success" => UploadWhen::OnSuccess,
        "on_failure" => UploadWhen::OnFailure,
        "always" => UploadWhen::Always,
        other => {
            return Err(at.err(
                &n.loc,
                format!("unknown value {other:?}; expected on_success, on_failure or always"),
            ));
        }
    })
}

fn artifacts(at: At<'_>, n: &Node) -> Result<Artifacts> {
    let m = at.map(n)?;
    at.check_keys(
        m,
        &[
            "paths",
            "exclude",
            "untracked",
            "when",
            "name",
            "expire_in",
            "expose_as",
            "public",
            "access",
            "reports",
        ],
    )?;
    let mut a = Artifacts::default();
    for (k, (_, v)) in m {
        match k.as_str() {
            "paths" => a.paths = at.string_array(v)?,
            "exclude" => a.exclude = at.string_array(v)?,
            "untracked" => a.untracked = at.boolean(v)?,
            "when" => a.when = Some(upload_when(at, v)?),
            "name" => a.name = Some(at.text(v)?),
            "expire_in" => a.expire_in = Some(at.text(v)?),
            "expose_as" => a.expose_as = Some(at.string(v)?),
            "public" => {
                at.boolean(v)?;
            }
            "access" => {
                at.string(v)?;
            }
            _ => {
                let rm = at.map(v)?;
                for (rk, (_, rv)) in rm {
                    let paths = match &rv.value {
                        Value::Map(_) => Vec::new(),
                        _ => at.strings(rv)?,
                    };
                    a.reports.insert(rk.clone(), paths);
                }
            }
        }
    }
    Ok(a)
}

fn one_cache(at: At<'_>, n: &Node) -> Result<Cache> {
    let m = at.map(n)?;
    at.check_keys(
        m,
        &[
            "key",
            "paths",
            "untracked",
            "policy",
            "when",
            "fallback_keys",
            "unprotect",
        ],
    )?;
    let mut c = Cache {
        key: CacheKey::Literal("default".into()),
        paths: Vec::new(),
        untracked: false,
        policy: CachePolicy::PullPush,
        when: UploadWhen::OnSuccess,
        fallback_keys: Vec::new(),
        unprotect: false,
    };
    for (k, (_, v)) in m {
        match k.as_str() {
            "key" => {
                c.key = match &v.value {
                    Value::Map(km) => {
                        at.check_keys(km, &["files", "prefix"])?;
                        let Some((_, files)) = km.get("files") else {
                            return Err(at.err(&v.loc, "key: as a hash needs files:"));
                        };
                        let files = at.string_array(files)?;
                        if files.is_empty() || files.len() > 2 {
                            return Err(at.err(&v.loc, "key:files takes one or two files"));
                        }
                        let prefix = km.get("prefix").map(|(_, p)| at.text(p)).transpose()?;
                        CacheKey::Files { files, prefix }
                    }
                    _ => {
                        let key = at.text(v)?;
                        if key.contains('/') || key == "." || key == "%2F" || key == "%2e" {
                            return Err(at.err(&v.loc, "key cannot contain \"/\" or be \".\""));
                        }
                        CacheKey::Literal(key)
                    }
                };
            }
            "paths" => c.paths = at.string_array(v)?,
            "untracked" => c.untracked = at.boolean(v)?,
            "policy" => {
                c.policy = match at.string(v)?.as_str() {
                    "pull-push" => CachePolicy::PullPush,
                    "pull" => CachePolicy::Pull,
                    "push" => CachePolicy::Push,
                    other => {
                        return Err(at.err(
                            &v.loc,
                            format!("unknown policy {other:?}; expected pull, push or pull-push"),
                        ));
                    }
                };
            }
            "when" => c.when = upload_when(at, v)?,
            "fallback_keys" => c.fallback_keys = at.string_array(v)?,
            _ => c.unprotect = at.boolean(v)?,
        }
    }
    Ok(c)
}

fn cache(at: At<'_>, n: &Node) -> Result<Vec<Cache>> {
    match &n.value {
        Value::Seq(items) => {
            if items.len() > 4 {
                return Err(at.err(&n.loc, "at most 4 caches per job"));
            }
            items.iter().map(|i| one_cache(at, i)).collect()
        }
        Value::Null => Ok(Vec::new()),
        _ => Ok(vec![one_cache(at, n)?]),
    }
}

const RETRY_WHEN: [&str; 14] = [
    "always",
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
    "stuck_or_timeout_failure",
];

fn retry(at: At<'_>, n: &Node) -> Result<Retry> {
    let max = |x: &Node| -> Result<u32> {
        match at.int(x)? {
            i @ 0..=2 => Ok(u32::try_from(i).unwrap_or(0)),
            _ => Err(at.err(&x.loc, "retry max must be 0, 1 or 2")),
        }
    };
    match &n.value {
        Value::Int(_) => Ok(Retry {
            max: max(n)?,
            ..Retry::default()
        }),
        Value::Map(m) => {
            at.check_keys(m, &["max", "when", "exit_codes"])?;
            let mut r = Retry::default();
            for (k, (_, v)) in m {
                match k.as_str() {
                    "max" => r.max = max(v)?,
                    "when" => {
                        r.when = at.strings(v)?;
                        if let Some(bad) = r.when.iter().find(|w| !RETRY_WHEN.contains(&w.as_str()))
                        {
                            return Err(at.err(&v.loc, format!("unknown failure reason {bad:?}")));
                        }
                    }
                    _ => r.exit_codes = exit_codes(at, v)?,
                }
            }
            Ok(r)
        }
        _ => Err(at.wrong(n, "an integer or a hash")),
    }
}

/// Parses a GitLab duration (`1h 30m`, `3 hours`, `90 minutes`, `3600`, `1 day`).
pub(crate) fn duration_seconds(text: &str) -> Option<u64> {
    let t = text.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Some(n);
    }
    let mut total: u64 = 0;
    let mut rest = t;
    let mut any = false;
    while !rest.is_empty() {
        rest = rest
            .trim_start_matches([' ', ','])
            .trim_start_matches("and ");
        if rest.is_empty() {
            break;
        }
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let num: f64 = rest[..num_len].parse().ok()?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult: f64 = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "wk" | "week" | "weeks" => 604_800.0,
            "mo" | "month" | "months" => 2_629_746.0,
            "y" | "yr" | "year" | "years" => 31_556_952.0,
            _ => return None,
        };
        let add = num * mult;
        if !add.is_finite() || !(0.0..=1e15).contains(&add) {
            return None;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let add = add.round() as u64;
        total = total.checked_add(add)?;
        any = true;
    }
    any.then_some(total)
}

fn timeout(at: At<'_>, n: &Node) -> Result<Timeout> {
    let text = at.text(n)?;
    let seconds = duration_seconds(&text)
        .ok_or_else(|| at.err(&n.loc, format!("{text:?} is not a duration (like 1h 30m)")))?;
    Ok(Timeout { text, seconds })
}

fn environment(at: At<'_>, n: &Node) -> Result<Environment> {
    match &n.value {
        Value::Str(s) => Ok(Environment {
            name: s.clone(),
            ..Environment::default()
        }),
        Value::Map(m) => {
            at.check_keys(
                m,
                &[
                    "name",
                    "url",
                    "action",
                    "on_stop",
                    "auto_stop_in",
                    "deployment_tier",
                    "kubernetes",
                ],
            )?;
            let mut e = Environment::default();
            for (k, (_, v)) in m {
                match k.as_str() {
                    "name" => e.name = at.string(v)?,
                    "url" => e.url = Some(at.string(v)?),
                    "action" => {
                        let a = at.string(v)?;
                        if !["start", "prepare", "stop", "verify", "access"].contains(&a.as_str()) {
                            return Err(at.err(&v.loc, format!("unknown action {a:?}; expected start, prepare, stop, verify or access")));
                        }
                        e.action = Some(a);
                    }
                    "on_stop" => e.on_stop = Some(at.string(v)?),
                    "auto_stop_in" => e.auto_stop_in = Some(at.text(v)?),
                    "deployment_tier" => e.deployment_tier = Some(at.string(v)?),
                    _ => {}
                }
            }
            if e.name.is_empty() {
                return Err(at.err(&n.loc, "name: is required"));
            }
            Ok(e)
        }
        _ => Err(at.wrong(n, "a string or a hash")),
    }
}

fn trigger(at: At<'_>, n: &Node) -> Result<Trigger> {
    let mut t = Trigger {
        forward_yaml_variables: true,
        ..Trigger::default()
    };
    match &n.value {
        Value::Str(s) => t.project = Some(s.clone()),
        Value::Map(m) => {
            at.check_keys(m, &["include", "project", "branch", "strategy", "forward"])?;
            for (k, (_, v)) in m {
                match k.as_str() {
                    "include" => {
                        let items: Vec<&Node> = match &v.value {
                            Value::Seq(items) => items.iter().collect(),
                            _ => vec![v],
                        };
                        for i in items {
                            match &i.value {
                                Value::Str(s) => t.include.push(crate::load::normalise(s, &i.loc)?),
                                Value::Map(im) => {
                                    let Some((_, l)) = im.get("local") else {
                                        return Err(at.err(&i.loc, "only include:local child pipelines are available locally"));
                                    };
                                    t.include
                                        .push(crate::load::normalise(&at.string(l)?, &l.loc)?);
                                }
                                _ => return Err(at.wrong(i, "a string or a hash with local:")),
                            }
                        }
                    }
                    "project" => t.project = Some(at.string(v)?),
                    "branch" => t.branch = Some(at.text(v)?),
                    "strategy" => {
                        if at.string(v)? != "depend" {
                            return Err(at.err(&v.loc, "strategy only takes depend"));
                        }
                        t.depend = true;
                    }
                    _ => {
                        let fm = at.map(v)?;
                        at.check_keys(fm, &["yaml_variables", "pipeline_variables"])?;
                        if let Some((_, y)) = fm.get("yaml_variables") {
                            t.forward_yaml_variables = at.boolean(y)?;
                        }
                        if let Some((_, p)) = fm.get("pipeline_variables") {
                            t.forward_pipeline_variables = at.boolean(p)?;
                        }
                    }
                }
            }
            if t.include.is_empty() && t.project.is_none() {
                return Err(at.err(&n.loc, "needs include: or project:"));
            }
        }
        _ => return Err(at.wrong(n, "a string or a hash")),
    }
    Ok(t)
}

fn inherit(at: At<'_>, n: &Node) -> Result<Inherit> {
    match &n.value {
        Value::Bool(true) => Ok(Inherit::All),
        Value::Bool(false) => Ok(Inherit::Nothing),
        Value::Seq(_) => Ok(Inherit::Only(at.string_array(n)?)),
        _ => Err(at.wrong(n, "a boolean or an array of names")),
    }
}

fn hooks(at: At<'_>, n: &Node) -> Result<Vec<String>> {
    let m = at.map(n)?;
    at.check_keys(m, &["pre_get_sources_script"])?;
    match m.get("pre_get_sources_script") {
        Some((_, s)) => script(at, s),
        None => Ok(Vec::new()),
    }
}

fn names_of(at: At<'_>, n: &Node) -> Result<Vec<String>> {
    Ok(at.map(n)?.keys().cloned().collect())
}

const DEFAULT_KEYS: [&str; 12] = [
    "after_script",
    "artifacts",
    "before_script",
    "cache",
    "hooks",
    "id_tokens",
    "image",
    "interruptible",
    "retry",
    "services",
    "tags",
    "timeout",
];

fn defaults(n: &Node, d: &mut Defaults) -> Result<()> {
    let at = At::new(None, "default");
    let m = at.map(n)?;
    at.check_keys(m, &DEFAULT_KEYS)?;
    for (k, (_, v)) in m {
        default_key(k, v, d)?;
    }
    Ok(())
}

fn default_key(k: &str, v: &Node, d: &mut Defaults) -> Result<()> {
    let kw = format!("default:{k}");
    let at = At::new(None, &kw);
    match k {
        "after_script" => d.after_script = Some(script(at, v)?),
        "before_script" => d.before_script = Some(script(at, v)?),
        "artifacts" => d.artifacts = Some(artifacts(at, v)?),
        "cache" => d.cache = Some(cache(at, v)?),
        "hooks" => d.hooks = Some(hooks(at, v)?),
        "id_tokens" => d.id_tokens = Some(names_of(at, v)?),
        "image" => d.image = Some(image(at, v, false)?),
        "interruptible" => d.interruptible = Some(at.boolean(v)?),
        "retry" => d.retry = Some(retry(at, v)?),
        "services" => d.services = Some(services(at, v)?),
        "tags" => d.tags = Some(at.string_array(v)?),
        _ => d.timeout = Some(timeout(at, v)?),
    }
    Ok(())
}

fn workflow(n: &Node, notes: &mut Vec<Note>) -> Result<Workflow> {
    let at = At::new(None, "workflow");
    let m = at.map(n)?;
    at.check_keys(m, &["name", "rules", "auto_cancel"])?;
    let mut w = Workflow::default();
    for (k, (kl, v)) in m {
        match k.as_str() {
            "name" => w.name = Some(at.sub("workflow:name").text(v)?),
            "rules" => {
                let rules = rules(None, "workflow:rules", v, true)?;
                if let Value::Seq(items) = &v.value {
                    for i in items {
                        if let Some((l, _)) = i.as_map().and_then(|m| m.get("auto_cancel")) {
                            notes.push(Note {
                                location: l.clone(),
                                job: None,
                                message: "workflow:rules:auto_cancel is ignored locally".into(),
                            });
                        }
                    }
                }
                w.rules = Some(rules);
            }
            _ => notes.push(Note {
                location: kl.clone(),
                job: None,
                message: "workflow:auto_cancel is ignored locally".into(),
            }),
        }
    }
    Ok(w)
}

const JOB_KEYS: [&str; 38] = [
    "after_script",
    "allow_failure",
    "artifacts",
    "before_script",
    "cache",
    "coverage",
    "dast_configuration",
    "dependencies",
    "environment",
    "except",
    "extends",
    "hooks",
    "id_tokens",
    "identity",
    "image",
    "inherit",
    "interruptible",
    "manual_confirmation",
    "needs",
    "only",
    "pages",
    "parallel",
    "release",
    "resource_group",
    "retry",
    "rules",
    "run",
    "script",
    "secrets",
    "services",
    "stage",
    "start_in",
    "tags",
    "timeout",
    "trigger",
    "variables",
    "when",
    "description",
];

fn job(
    name: &str,
    loc: &Location,
    n: &Node,
    stages: &[String],
    notes: &mut Vec<Note>,
) -> Result<Job> {
    let at = At::new(Some(name), "");
    let m = n.as_map().ok_or_else(|| {
        PipelineError::invalid(
            &n.loc,
            Some(name),
            None,
            format!("config should be a hash, found {}", n.kind()),
        )
    })?;
    for (k, (kl, _)) in m {
        if !JOB_KEYS.contains(&k.as_str()) {
            return Err(PipelineError::invalid(
                kl,
                Some(name),
                None,
                format!("unknown keyword {k:?}"),
            ));
        }
    }
    let mut j = Job {
        name: name.to_owned(),
        loc: loc.clone(),
        stage: "test".into(),
        script: Vec::new(),
        before_script: None,
        after_script: None,
        hooks: None,
        image: None,
        services: None,
        variables: Vec::new(),
        rules: None,
        only: None,
        except: None,
        needs: None,
        dependencies: None,
        artifacts: None,
        cache: None,
        parallel: None,
        when: None,
        start_in: None,
        allow_failure: None,
        timeout: None,
        retry: None,
        resource_group: None,
        interruptible: None,
        coverage: None,
        tags: None,
        environment: None,
        trigger: None,
        id_tokens: None,
        secrets: Vec::new(),
        inherit_default: Inherit::All,
        inherit_variables: Inherit::All,
    };
    let mut has_script = false;
    let mut stage_loc = loc.clone();
    for (k, (kl, v)) in m {
        let at = At::new(Some(name), k);
        if matches!(v.value, Value::Null) && k != "variables" && k != "needs" {
            // `key: null` removes a keyword (GitLab's way to undo an extended value).
            continue;
        }
        match k.as_str() {
            "script" => {
                j.script = script(at, v)?;
                has_script = true;
            }
            "before_script" => j.before_script = Some(script(at, v)?),
            "after_script" => j.after_script = Some(script(at, v)?),
            "hooks" => j.hooks = Some(hooks(at, v)?),
            "stage" => {
                j.stage = at.string(v)?;
                stage_loc = v.loc.clone();
            }
            "image" => j.image = Some(image(at, v, false)?),
            "services" => j.services = Some(services(at, v)?),
            "variables" => j.variables = variables(at, v, false)?,
            "rules" => j.rules = Some(rules(Some(name), "rules", v, false)?),
            "only" => j.only = Some(only_except(at, v)?),
            "except" => j.except = Some(only_except(at, v)?),
            "needs" => j.needs = Some(needs(at, v)?),
            "dependencies" => j.dependencies = Some(at.string_array(v)?),
            "artifacts" => j.artifacts = Some(artifacts(at, v)?),
            "cache" => j.cache = Some(cache(at, v)?),
            "parallel" => {
                j.parallel = Some(match &v.value {
                    Value::Int(i) => {
                        if !(1..=200).contains(i) {
                            return Err(at.err(&v.loc, "parallel must be between 1 and 200"));
                        }
                        Parallel::Count(u32::try_from(*i).unwrap_or(1))
                    }
                    Value::Map(pm) => {
                        at.check_keys(pm, &["matrix"])?;
                        let Some((_, mx)) = pm.get("matrix") else {
                            return Err(at.err(&v.loc, "parallel as a hash needs matrix:"));
                        };
                        Parallel::Matrix(matrix(at, mx)?)
                    }
                    _ => return Err(at.wrong(v, "an integer or a hash with matrix:")),
                });
            }
            "when" => j.when = Some(when(at, v, &JOB_WHEN)?),
            "start_in" => j.start_in = Some(at.text(v)?),
            "allow_failure" => j.allow_failure = Some(allow_failure(at, v)?),
            "timeout" => j.timeout = Some(timeout(at, v)?),
            "retry" => j.retry = Some(retry(at, v)?),
            "resource_group" => j.resource_group = Some(at.string(v)?),
            "interruptible" => j.interruptible = Some(at.boolean(v)?),
            "coverage" => {
                let c = at.string(v)?;
                if !(c.starts_with('/') && c.len() > 1 && c.ends_with('/')) {
                    return Err(at.err(&v.loc, "coverage must be a regular expression between slashes, like /Total: \\d+%/"));
                }
                j.coverage = Some(c);
            }
            "tags" => j.tags = Some(at.string_array(v)?),
            "environment" => j.environment = Some(environment(at, v)?),
            "trigger" => {
                let t = trigger(at, v)?;
                if t.include.is_empty() {
                    return Err(at.err(
                        &v.loc,
                        "multi-project pipelines (trigger:project) are not available locally",
                    ));
                }
                j.trigger = Some(t);
            }
            "id_tokens" => {
                j.id_tokens = Some(names_of(at, v)?);
                notes.push(Note {
                    location: kl.clone(),
                    job: Some(name.into()),
                    message: "id_tokens: no OIDC tokens are issued locally".into(),
                });
            }
            "secrets" => {
                j.secrets = names_of(at, v)?;
                notes.push(Note {
                    location: kl.clone(),
                    job: Some(name.into()),
                    message: "secrets: external secrets are not available locally".into(),
                });
            }
            "inherit" => {
                let im = at.map(v)?;
                at.check_keys(im, &["default", "variables"])?;
                if let Some((_, d)) = im.get("default") {
                    j.inherit_default = inherit(at.sub("inherit:default"), d)?;
                }
                if let Some((_, d)) = im.get("variables") {
                    j.inherit_variables = inherit(at.sub("inherit:variables"), d)?;
                }
            }
            "run" => return Err(at.err(kl, "run: (CI/CD steps) is not supported; use script:")),
            "pages"
            | "release"
            | "dast_configuration"
            | "identity"
            | "manual_confirmation"
            | "description" => {
                notes.push(Note {
                    location: kl.clone(),
                    job: Some(name.into()),
                    message: format!("{k}: is ignored locally"),
                });
            }
            _ => {}
        }
    }
    let _ = at;
    if !has_script && j.trigger.is_none() {
        return Err(PipelineError::invalid(
            loc,
            Some(name),
            None,
            "config should implement the script: or trigger: keyword",
        ));
    }
    if j.script.is_empty() && has_script {
        return Err(PipelineError::invalid(
            loc,
            Some(name),
            Some("script"),
            "can't be blank",
        ));
    }
    if j.trigger.is_some() && has_script {
        return Err(PipelineError::invalid(
            loc,
            Some(name),
            Some("trigger"),
            "a trigger job cannot have script:",
        ));
    }
    if !stages.contains(&j.stage) {
        return Err(PipelineError::invalid(
            &stage_loc,
            Some(name),
            Some("stage"),
            format!(
                "chosen stage {:?} does not exist; available stages are {}",
                j.stage,
                stages.join(", ")
            ),
        ));
    }
    if j.rules.is_some() && (j.only.is_some() || j.except.is_some()) {
        return Err(PipelineError::invalid(
            loc,
            Some(name),
            Some("rules"),
            "rules: cannot be used with only: or except:",
        ));
    }
    if j.when == Some(When::Delayed) && j.start_in.is_none() {
        return Err(PipelineError::invalid(
            loc,
            Some(name),
            Some("start_in"),
            "when: delayed needs start_in",
        ));
    }
    if let Some(s) = &j.start_in
        && !matches!(duration_seconds(s), Some(1..=604_800))
    {
        return Err(PipelineError::invalid(
            loc,
            Some(name),
            Some("start_in"),
            format!("{s:?} must be a duration between 1 second and 1 week"),
        ));
    }
    Ok(j)
}

/// The typed model of a merged configuration.
pub(crate) struct Model {
    pub stages: Vec<String>,
    pub defaults: Defaults,
    pub variables: Vec<Variable>,
    pub workflow: Workflow,
    pub jobs: IndexMap<String, Job>,
    pub notes: Vec<Note>,
}

const GLOBAL_KEYS: [&str; 10] = [
    "stages",
    "default",
    "variables",
    "workflow",
    "include",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
];

pub(crate) fn model(top: &Map) -> Result<Model> {
    let mut notes = Vec::new();
    let mut stages: Vec<String> = DEFAULT_STAGES.iter().map(|s| (*s).to_owned()).collect();
    if let Some((_, s)) = top.get("stages") {
        let at = At::new(None, "stages");
        let mut list = match &s.value {
            Value::Null => Vec::new(),
            _ => script(at, s).map_err(|_| at.wrong(s, "an array of strings"))?,
        };
        list.retain(|x| x != ".pre" && x != ".post");
        let mut seen = std::collections::HashSet::new();
        list.retain(|x| seen.insert(x.clone()));
        stages = std::iter::once(".pre".to_owned())
            .chain(list)
            .chain(std::iter::once(".post".to_owned()))
            .collect();
    }
    let mut d = Defaults::default();
    for key in [
        "image",
        "services",
        "cache",
        "before_script",
        "after_script",
    ] {
        if let Some((kl, v)) = top.get(key) {
            default_key(key, v, &mut d)?;
            notes.push(Note {
                location: kl.clone(),
                job: None,
                message: format!("global {key}: is deprecated; use default:{key}"),
            });
        }
    }
    if let Some((_, v)) = top.get("default") {
        defaults(v, &mut d)?;
    }
    let variables = match top.get("variables") {
        Some((_, v)) => self::variables(At::new(None, "variables"), v, true)?,
        None => Vec::new(),
    };
    let workflow = match top.get("workflow") {
        Some((_, v)) => self::workflow(v, &mut notes)?,
        None => Workflow::default(),
    };
    let mut jobs = IndexMap::new();
    for (name, (kl, v)) in top {
        if GLOBAL_KEYS.contains(&name.as_str()) || name.starts_with('.') {
            continue;
        }
        if name.is_empty() {
            return Err(PipelineError::invalid(
                kl,
                None,
                None,
                "a job name cannot be empty",
            ));
        }
        jobs.insert(name.clone(), job(name, kl, v, &stages, &mut notes)?);
    }
    Ok(Model {
        stages,
        defaults: d,
        variables,
        workflow,
        jobs,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::{duration_seconds, rules};
    use crate::yaml::parse_documents;

    #[test]
    fn nested_rule_arrays_are_flattened() {
        // What `- !reference [.rules, on_main]` among a job's rules becomes.
        let doc = parse_documents(
            "r:\n  - [{if: $A}, [{if: $B}]]\n  - if: $C\n  - [{when: never}]\n",
            "t.yml",
        )
        .unwrap()
        .remove(0);
        let (_, n) = doc.as_map().unwrap().get("r").unwrap();
        let got = rules(Some("job"), "rules", n, false).unwrap();
        let ifs: Vec<Option<&str>> = got
            .iter()
            .map(|r| r.if_.as_ref().map(|e| e.source()))
            .collect();
        assert_eq!(ifs, [Some("$A"), Some("$B"), Some("$C"), None]);
    }

    #[test]
    fn durations() {
        for (t, s) in [
            ("3600", Some(3600)),
            ("1h 30m", Some(5400)),
            ("3 hours", Some(10800)),
            ("10 minutes", Some(600)),
            ("1 day", Some(86400)),
            ("2h30m", Some(9000)),
            ("30 seconds", Some(30)),
            ("soon", None),
            ("", None),
            ("1 fortnight", None),
        ] {
            assert_eq!(duration_seconds(t), s, "{t}");
        }
    }
}
