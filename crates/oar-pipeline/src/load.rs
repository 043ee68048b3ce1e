//! Loading: files, `include`, `spec:inputs`, `extends`, `!reference`.

use std::collections::HashMap;

use indexmap::IndexMap;

use crate::context::Context;
use crate::error::{Location, PipelineError, Result};
use crate::glob::Glob;
use crate::merge::{deep_merge, merge_nodes};
use crate::rules::{IncludeRule, eval_exists};
use crate::source::Source;
use crate::yaml::{Budget, Map, Node, Value, parse_documents_in};

/// At most this many files per pipeline, as GitLab limits includes (150).
const MAX_INCLUDES: usize = 150;
/// `extends` nesting limit (GitLab: 11 levels).
const MAX_EXTENDS_DEPTH: usize = 11;
/// `!reference` nesting limit (GitLab: 10 levels).
const MAX_REFERENCE_DEPTH: usize = 10;

fn invalid(
    loc: &Location,
    job: Option<&str>,
    keyword: &str,
    message: impl Into<String>,
) -> PipelineError {
    PipelineError::invalid(loc, job, Some(keyword), message)
}

/// Normalises a repo-relative path: drops a leading `/` and `./`, refuses `..`.
pub(crate) fn normalise(path: &str, loc: &Location) -> Result<String> {
    let p = path.trim().trim_start_matches('/');
    let p = p.strip_prefix("./").unwrap_or(p);
    if p.is_empty() || p.split('/').any(|c| c == "..") {
        return Err(invalid(
            loc,
            None,
            "include",
            format!("local file {path:?} must be a path inside the repository"),
        ));
    }
    Ok(p.to_owned())
}

struct Loader<'a> {
    source: &'a dyn Source,
    ctx: &'a Context,
    vars: IndexMap<String, String>,
    stack: Vec<String>,
    files: usize,
    budget: &'a Budget,
}

/// Reads `path` and everything it includes, merged into one top-level hash (before
/// `extends` and `!reference`).
pub(crate) fn load_merged(
    source: &dyn Source,
    ctx: &Context,
    path: &str,
    budget: &Budget,
) -> Result<Map> {
    let mut l = Loader {
        source,
        ctx,
        vars: ctx.base_variables(),
        stack: Vec::new(),
        files: 0,
        budget,
    };
    let loc = Location::new(path, 0);
    let path = normalise(path, &loc)?;
    l.file(&path, None, &loc, true)
}

impl Loader<'_> {
    fn file(
        &mut self,
        path: &str,
        inputs: Option<&Map>,
        from: &Location,
        main: bool,
    ) -> Result<Map> {
        self.files += 1;
        if self.files > MAX_INCLUDES {
            return Err(invalid(
                from,
                None,
                "include",
                format!("maximum of {MAX_INCLUDES} nested includes or files exceeded"),
            ));
        }
        if self.stack.iter().any(|p| p == path) {
            let mut chain = self.stack.clone();
            chain.push(path.to_owned());
            return Err(invalid(
                from,
                None,
                "include",
                format!("include cycle: {}", chain.join(" -> ")),
            ));
        }
        let text = self
            .source
            .read(path)
            .map_err(|source| PipelineError::Read {
                location: from.clone(),
                path: path.to_owned(),
                source,
            })?;
        let mut docs = parse_documents_in(&text, path, self.budget)?;
        let (header, body) = match docs.len() {
            0 => (None, Node::new(Value::Null, Location::new(path, 1))),
            1 => (None, docs.remove(0)),
            2 => {
                let body = docs.remove(1);
                (Some(docs.remove(0)), body)
            }
            _ => {
                return Err(PipelineError::Syntax {
                    location: docs[2].loc.clone(),
                    message: "expected at most two documents: a spec header and the configuration"
                        .into(),
                });
            }
        };
        let cli = main.then_some(&self.ctx.inputs);
        let resolved = crate::inputs::resolve(header.as_ref(), inputs, from, cli)?;
        let body = match resolved {
            Some(inputs) => crate::inputs::interpolate(body, &inputs, &self.vars, self.budget)?,
            None => body,
        };
        let mut own = match body.value {
            Value::Map(m) => m,
            Value::Null => Map::new(),
            _ => {
                return Err(invalid(
                    &body.loc,
                    None,
                    "root",
                    format!("the configuration must be a hash, found {}", body.kind()),
                ));
            }
        };
        if let Some((kloc, _)) = own.get("spec")
            && header.is_none()
        {
            return Err(invalid(
                kloc,
                None,
                "spec",
                "spec: must be in a header section that ends with ---",
            ));
        }
        let mut merged = Map::new();
        if let Some((_, inc)) = own.shift_remove("include") {
            self.stack.push(path.to_owned());
            for item in include_items(&inc)? {
                for (file, inputs, loc) in self.resolve_item(item)? {
                    let m = self.file(&file, inputs.as_ref(), &loc, false)?;
                    deep_merge(&mut merged, m);
                }
            }
            self.stack.pop();
        }
        deep_merge(&mut merged, own);
        Ok(merged)
    }

    /// The local files one include item stands for (several for a wildcard), or none when its
    /// rules exclude it.
    fn resolve_item(&self, item: &Node) -> Result<Vec<(String, Option<Map>, Location)>> {
        let loc = item.loc.clone();
        let (local, inputs) = match &item.value {
            Value::Str(s) => (s.clone(), None),
            Value::Map(m) => {
                let mut local = None;
                let mut inputs = None;
                let mut rules = None;
                for (k, (kl, v)) in m {
                    match k.as_str() {
                        "local" => match &v.value {
                            Value::Str(s) => local = Some(s.clone()),
                            _ => {
                                return Err(invalid(
                                    &v.loc,
                                    None,
                                    "include:local",
                                    format!("expected a string, found {}", v.kind()),
                                ));
                            }
                        },
                        "remote" | "project" | "template" | "component" => {
                            let what = v.scalar_text().unwrap_or_default();
                            let kind = match k.as_str() {
                                "remote" => "remote",
                                "project" => "project",
                                "template" => "template",
                                _ => "component",
                            };
                            return Err(PipelineError::NotLocal {
                                location: v.loc.clone(),
                                kind,
                                what,
                            });
                        }
                        "file" | "ref" | "cache" | "integrity" => {}
                        "inputs" | "with" => match &v.value {
                            Value::Map(m) => inputs = Some(m.clone()),
                            _ => {
                                return Err(invalid(
                                    &v.loc,
                                    None,
                                    "include:inputs",
                                    format!("expected a hash, found {}", v.kind()),
                                ));
                            }
                        },
                        "rules" => rules = Some(v),
                        _ => {
                            return Err(invalid(
                                kl,
                                None,
                                "include",
                                format!(
                                    "unknown keyword {k:?}; expected local, remote, project, template, component, inputs or rules"
                                ),
                            ));
                        }
                    }
                }
                if let Some(rules) = rules
                    && !self.include_rules_pass(rules)?
                {
                    return Ok(Vec::new());
                }
                let Some(local) = local else {
                    return Err(invalid(
                        &loc,
                        None,
                        "include",
                        "needs one of local, remote, project, template or component",
                    ));
                };
                (local, inputs)
            }
            _ => {
                return Err(invalid(
                    &loc,
                    None,
                    "include",
                    format!("expected a string or a hash, found {}", item.kind()),
                ));
            }
        };
        if local.contains("://") {
            return Err(PipelineError::NotLocal {
                location: loc,
                kind: "remote",
                what: local,
            });
        }
        let expanded = crate::expand::expand(&local, &self.vars);
        let path = normalise(&expanded, &loc)?;
        if !(path.ends_with(".yml") || path.ends_with(".yaml")) {
            return Err(invalid(
                &loc,
                None,
                "include",
                format!("local file {path:?} does not have a .yml or .yaml extension"),
            ));
        }
        if path.contains(['*', '?', '[', '{']) {
            let glob = Glob::new(&path).map_err(|m| invalid(&loc, None, "include", m))?;
            let Some(files) = &self.ctx.files else {
                return Err(invalid(
                    &loc,
                    None,
                    "include",
                    format!("wildcard include {path:?} needs the repository's file list"),
                ));
            };
            let mut matched: Vec<&String> = files.iter().filter(|f| glob.matches(f)).collect();
            matched.sort();
            return Ok(matched
                .into_iter()
                .map(|f| {
                    (
                        f.trim_start_matches('/').to_owned(),
                        inputs.clone(),
                        loc.clone(),
                    )
                })
                .collect());
        }
        Ok(vec![(path, inputs, loc)])
    }

    fn include_rules_pass(&self, rules: &Node) -> Result<bool> {
        let Value::Seq(items) = &rules.value else {
            return Err(invalid(
                &rules.loc,
                None,
                "include:rules",
                format!("expected an array, found {}", rules.kind()),
            ));
        };
        for item in items {
            let rule = IncludeRule::parse(item)?;
            if rule.matches(&self.vars, self.ctx) {
                return Ok(!rule.never);
            }
        }
        let _ = eval_exists;
        Ok(false)
    }
}

fn include_items(inc: &Node) -> Result<Vec<&Node>> {
    Ok(match &inc.value {
        Value::Seq(items) => items.iter().collect(),
        Value::Str(_) | Value::Map(_) => vec![inc],
        Value::Null => Vec::new(),
        _ => {
            return Err(invalid(
                &inc.loc,
                None,
                "include",
                format!(
                    "expected a string, a hash or an array, found {}",
                    inc.kind()
                ),
            ));
        }
    })
}

/// Resolves `extends` for every top-level hash.
pub(crate) fn resolve_extends(top: &mut Map, budget: &Budget) -> Result<()> {
    let names: Vec<String> = top.keys().cloned().collect();
    let mut done: HashMap<String, Node> = HashMap::new();
    for name in &names {
        let mut stack = Vec::new();
        resolve_one(top, name, &mut done, &mut stack, budget)?;
    }
    for (name, node) in done {
        if let Some((_, slot)) = top.get_mut(&name) {
            *slot = node;
        }
    }
    Ok(())
}

fn extends_list(job: &str, node: &Node) -> Result<Vec<(String, Location)>> {
    let Some(map) = node.as_map() else {
        return Ok(Vec::new());
    };
    let Some((_, ext)) = map.get("extends") else {
        return Ok(Vec::new());
    };
    match &ext.value {
        Value::Str(s) => Ok(vec![(s.clone(), ext.loc.clone())]),
        Value::Seq(items) => items
            .iter()
            .map(|i| match &i.value {
                Value::Str(s) => Ok((s.clone(), i.loc.clone())),
                _ => Err(invalid(
                    &i.loc,
                    Some(job),
                    "extends",
                    format!("expected a string, found {}", i.kind()),
                )),
            })
            .collect(),
        _ => Err(invalid(
            &ext.loc,
            Some(job),
            "extends",
            format!(
                "expected a string or an array of strings, found {}",
                ext.kind()
            ),
        )),
    }
}

fn resolve_one(
    top: &Map,
    name: &str,
    done: &mut HashMap<String, Node>,
    stack: &mut Vec<String>,
    budget: &Budget,
) -> Result<Node> {
    if let Some(n) = done.get(name) {
        budget.spend_copy(n, &n.loc)?;
        return Ok(n.clone());
    }
    let Some((_, node)) = top.get(name) else {
        return Err(invalid(
            &Location::new("", 0),
            None,
            "extends",
            format!("unknown job {name:?}"),
        ));
    };
    let parents = extends_list(name, node)?;
    if parents.is_empty() {
        budget.spend_copy(node, &node.loc)?;
        return Ok(node.clone());
    }
    if stack.len() >= MAX_EXTENDS_DEPTH {
        return Err(invalid(
            &parents[0].1,
            Some(name),
            "extends",
            format!("nesting too deep (more than {MAX_EXTENDS_DEPTH} levels)"),
        ));
    }
    stack.push(name.to_owned());
    let mut base: Option<Node> = None;
    for (parent, loc) in &parents {
        if stack.iter().any(|s| s == parent) {
            let mut chain = stack.clone();
            chain.push(parent.clone());
            return Err(invalid(
                loc,
                Some(name),
                "extends",
                format!("circular dependency detected: {}", chain.join(" -> ")),
            ));
        }
        match top.get(parent) {
            Some((_, p)) if p.as_map().is_some() => {}
            Some(_) => {
                return Err(invalid(
                    loc,
                    Some(name),
                    "extends",
                    format!("{parent:?} is not a hash and cannot be extended"),
                ));
            }
            None => {
                return Err(invalid(
                    loc,
                    Some(name),
                    "extends",
                    format!("unknown job {parent:?} in extends"),
                ));
            }
        }
        let resolved = resolve_one(top, parent, done, stack, budget)?;
        base = Some(match base {
            None => resolved,
            Some(b) => merge_nodes(b, resolved),
        });
    }
    stack.pop();
    budget.spend_copy(node, &node.loc)?;
    let mut own = node.clone();
    if let Value::Map(m) = &mut own.value {
        m.shift_remove("extends");
    }
    let mut merged = match base {
        Some(b) => merge_nodes(b, own),
        None => own,
    };
    if let Value::Map(m) = &mut merged.value {
        m.shift_remove("extends");
    }
    budget.spend_copy(&merged, &merged.loc)?;
    done.insert(name.to_owned(), merged.clone());
    Ok(merged)
}

/// Replaces every `!reference [job, key, ...]` with what it points at.
pub(crate) fn resolve_references(top: &mut Map, budget: &Budget) -> Result<()> {
    let snapshot = top.clone();
    for (_, (_, node)) in top.iter_mut() {
        resolve_refs_in(node, &snapshot, 0, budget)?;
    }
    Ok(())
}

fn resolve_refs_in(node: &mut Node, top: &Map, depth: usize, budget: &Budget) -> Result<()> {
    match &mut node.value {
        Value::Reference(path) => {
            if depth >= MAX_REFERENCE_DEPTH {
                return Err(invalid(
                    &node.loc,
                    None,
                    "!reference",
                    format!("too many nested references (more than {MAX_REFERENCE_DEPTH})"),
                ));
            }
            let path = path.clone();
            let target = lookup(top, &path).ok_or_else(|| {
                invalid(
                    &node.loc,
                    None,
                    "!reference",
                    format!("[{}] could not be found", path.join(", ")),
                )
            })?;
            budget.spend_copy(target, &node.loc)?;
            let mut target = target.clone();
            resolve_refs_in(&mut target, top, depth + 1, budget)?;
            // Keep the location of the reference itself: that is where the value is used.
            node.value = target.value;
            Ok(())
        }
        Value::Seq(items) => {
            for i in items {
                resolve_refs_in(i, top, depth, budget)?;
            }
            Ok(())
        }
        Value::Map(m) => {
            for (_, (_, v)) in m.iter_mut() {
                resolve_refs_in(v, top, depth, budget)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn lookup<'m>(top: &'m Map, path: &[String]) -> Option<&'m Node> {
    let (first, rest) = path.split_first()?;
    let mut cur = &top.get(first)?.1;
    for key in rest {
        cur = &cur.as_map()?.get(key)?.1;
    }
    Some(cur)
}
