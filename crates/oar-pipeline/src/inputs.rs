//! `spec:inputs` headers and `$[[ inputs.name ]]` interpolation.

use indexmap::IndexMap;

use crate::error::{Location, PipelineError, Result};
use crate::expand::expand_existing;
use crate::yaml::{Budget, Map, Node, Value};

/// The declared type of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputType {
    String,
    Number,
    Boolean,
    Array,
}

#[derive(Debug, Clone)]
struct InputSpec {
    ty: InputType,
    default: Option<Node>,
    options: Option<Vec<Node>>,
    regex: Option<regex::Regex>,
}

fn bad(loc: &Location, keyword: &str, message: impl Into<String>) -> PipelineError {
    PipelineError::invalid(loc, None, Some(keyword), message)
}

/// Parses the header document: `spec: { inputs: { name: {...} } }`.
fn parse_spec(header: &Node) -> Result<IndexMap<String, InputSpec>> {
    let map = header
        .as_map()
        .ok_or_else(|| bad(&header.loc, "spec", "the header must be a hash with spec:"))?;
    let mut out = IndexMap::new();
    for (key, (kloc, value)) in map {
        if key != "spec" {
            return Err(bad(
                kloc,
                key,
                "unknown keyword in the header; only spec: is allowed",
            ));
        }
        let Some(spec) = value.as_map() else {
            if matches!(value.value, Value::Null) {
                continue;
            }
            return Err(bad(
                &value.loc,
                "spec",
                format!("expected a hash, found {}", value.kind()),
            ));
        };
        for (k, (kl, v)) in spec {
            if k != "inputs" {
                return Err(bad(
                    kl,
                    &format!("spec:{k}"),
                    "unknown keyword; only inputs is supported",
                ));
            }
            let inputs = match &v.value {
                Value::Map(m) => m,
                Value::Null => continue,
                _ => {
                    return Err(bad(
                        &v.loc,
                        "spec:inputs",
                        format!("expected a hash, found {}", v.kind()),
                    ));
                }
            };
            for (name, (nl, def)) in inputs {
                out.insert(name.clone(), parse_input(name, nl, def)?);
            }
        }
    }
    Ok(out)
}

fn parse_input(name: &str, loc: &Location, def: &Node) -> Result<InputSpec> {
    let kw = format!("spec:inputs:{name}");
    let _ = loc;
    let mut spec = InputSpec {
        ty: InputType::String,
        default: None,
        options: None,
        regex: None,
    };
    let map = match &def.value {
        Value::Null => return Ok(spec),
        Value::Map(m) => m,
        _ => {
            return Err(bad(
                &def.loc,
                &kw,
                format!("expected a hash, found {}", def.kind()),
            ));
        }
    };
    for (k, (kl, v)) in map {
        match k.as_str() {
            "type" => {
                spec.ty = match v.value {
                    Value::Str(ref s) if s == "string" => InputType::String,
                    Value::Str(ref s) if s == "number" => InputType::Number,
                    Value::Str(ref s) if s == "boolean" => InputType::Boolean,
                    Value::Str(ref s) if s == "array" => InputType::Array,
                    _ => {
                        return Err(bad(
                            &v.loc,
                            &kw,
                            "type must be one of string, number, boolean, array",
                        ));
                    }
                };
            }
            "default" => spec.default = Some(v.clone()),
            "description" => {}
            "options" => match &v.value {
                Value::Seq(items) => spec.options = Some(items.clone()),
                _ => return Err(bad(&v.loc, &kw, "options must be an array")),
            },
            "regex" => {
                let Value::Str(s) = &v.value else {
                    return Err(bad(&v.loc, &kw, "regex must be a string"));
                };
                let pat = s
                    .strip_prefix('/')
                    .and_then(|r| r.strip_suffix('/'))
                    .unwrap_or(s);
                spec.regex = Some(
                    regex::Regex::new(pat)
                        .map_err(|e| bad(&v.loc, &kw, format!("invalid regex: {e}")))?,
                );
            }
            _ => return Err(bad(kl, &kw, format!("unknown keyword {k:?}"))),
        }
    }
    if let Some(d) = spec.default.clone() {
        check(name, &spec, &d)?;
    }
    Ok(spec)
}

fn check(name: &str, spec: &InputSpec, value: &Node) -> Result<()> {
    let kw = format!("inputs:{name}");
    let ok = match spec.ty {
        InputType::String => matches!(value.value, Value::Str(_)),
        InputType::Number => matches!(value.value, Value::Int(_) | Value::Float(_)),
        InputType::Boolean => matches!(value.value, Value::Bool(_)),
        InputType::Array => matches!(value.value, Value::Seq(_)),
    };
    if !ok {
        let want = match spec.ty {
            InputType::String => "a string",
            InputType::Number => "a number",
            InputType::Boolean => "a boolean",
            InputType::Array => "an array",
        };
        return Err(bad(
            &value.loc,
            &kw,
            format!("provided value is not {want} (found {})", value.kind()),
        ));
    }
    if let Some(options) = &spec.options
        && !options.iter().any(|o| o.value == value.value)
    {
        let list: Vec<String> = options.iter().map(|o| o.value.to_string()).collect();
        return Err(bad(
            &value.loc,
            &kw,
            format!(
                "`{}` cannot be used because it is not in the list of allowed options ({})",
                value.value,
                list.join(", ")
            ),
        ));
    }
    if let (Some(re), Value::Str(s)) = (&spec.regex, &value.value)
        && !re.is_match(s)
    {
        return Err(bad(
            &value.loc,
            &kw,
            format!(
                "provided value does not match required RegEx pattern {}",
                re.as_str()
            ),
        ));
    }
    Ok(())
}

/// Resolves the inputs of one file from its header and the include's `inputs:` (or, for the
/// main file, the command line's).
pub(crate) fn resolve(
    header: Option<&Node>,
    given: Option<&Map>,
    given_loc: &Location,
    cli: Option<&IndexMap<String, String>>,
) -> Result<Option<IndexMap<String, Node>>> {
    let Some(header) = header else {
        if let Some((name, (loc, _))) = given.and_then(|g| g.iter().next()) {
            return Err(bad(
                loc,
                &format!("inputs:{name}"),
                "unknown input: the included file has no spec:inputs header",
            ));
        }
        return Ok(None);
    };
    let specs = parse_spec(header)?;
    for (name, (loc, _)) in given.into_iter().flatten() {
        if !specs.contains_key(name) {
            return Err(bad(loc, &format!("inputs:{name}"), "unknown input"));
        }
    }
    for name in cli.into_iter().flatten().map(|(k, _)| k) {
        if !specs.contains_key(name) {
            return Err(bad(given_loc, &format!("inputs:{name}"), "unknown input"));
        }
    }
    let mut out = IndexMap::new();
    for (name, spec) in &specs {
        let value = if let Some((_, v)) = given.and_then(|g| g.get(name)) {
            v.clone()
        } else if let Some(text) = cli.and_then(|c| c.get(name)) {
            typed_from_text(text, spec.ty, given_loc)
        } else if let Some(d) = &spec.default {
            d.clone()
        } else {
            return Err(bad(
                given_loc,
                &format!("inputs:{name}"),
                "required value has not been provided",
            ));
        };
        check(name, spec, &value)?;
        out.insert(name.clone(), value);
    }
    Ok(Some(out))
}

fn typed_from_text(text: &str, ty: InputType, loc: &Location) -> Node {
    let value = match ty {
        InputType::String => Value::Str(text.to_owned()),
        InputType::Number => text
            .parse::<i64>()
            .map(Value::Int)
            .or_else(|_| text.parse::<f64>().map(Value::Float))
            .unwrap_or_else(|_| Value::Str(text.to_owned())),
        InputType::Boolean => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::Str(text.to_owned()),
        },
        InputType::Array => crate::yaml::parse_documents(text, &loc.file)
            .ok()
            .and_then(|mut d| (!d.is_empty()).then(|| d.remove(0).value))
            .unwrap_or_else(|| Value::Str(text.to_owned())),
    };
    Node::new(value, loc.clone())
}

/// Interpolates `$[[ inputs.x ]]` in every key and string of `node`.
pub(crate) fn interpolate(
    node: Node,
    inputs: &IndexMap<String, Node>,
    vars: &IndexMap<String, String>,
    budget: &Budget,
) -> Result<Node> {
    let loc = node.loc.clone();
    let value = match node.value {
        Value::Str(s) => {
            if !s.contains("$[[") {
                Value::Str(s)
            } else {
                interpolate_str(&s, inputs, vars, &loc, budget)?
            }
        }
        Value::Seq(items) => Value::Seq(
            items
                .into_iter()
                .map(|n| interpolate(n, inputs, vars, budget))
                .collect::<Result<_>>()?,
        ),
        Value::Map(m) => {
            let mut out = Map::new();
            for (k, (kl, v)) in m {
                let k = if k.contains("$[[") {
                    match interpolate_str(&k, inputs, vars, &kl, budget)? {
                        Value::Str(s) => s,
                        other => other.to_string(),
                    }
                } else {
                    k
                };
                out.insert(k, (kl, interpolate(v, inputs, vars, budget)?));
            }
            Value::Map(out)
        }
        Value::Reference(path) => Value::Reference(
            path.into_iter()
                .map(|p| match interpolate_str(&p, inputs, vars, &loc, budget)? {
                    Value::Str(s) => Ok(s),
                    other => Ok(other.to_string()),
                })
                .collect::<Result<_>>()?,
        ),
        other => other,
    };
    Ok(Node::new(value, loc))
}

fn interpolate_str(
    s: &str,
    inputs: &IndexMap<String, Node>,
    vars: &IndexMap<String, String>,
    loc: &Location,
    budget: &Budget,
) -> Result<Value> {
    let mut out = String::new();
    let mut rest = s;
    let mut blocks = 0;
    let mut whole: Option<Value> = None;
    while let Some(start) = rest.find("$[[") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let Some(end) = after.find("]]") else {
            return Err(bad(
                loc,
                "inputs",
                format!("unclosed interpolation block in {s:?}"),
            ));
        };
        let value = block(after[..end].trim(), inputs, vars, loc)?;
        // Each use of an input is a copy of it.
        budget.spend_copy(&value, loc)?;
        blocks += 1;
        let is_whole = start == 0 && after[end + 2..].is_empty() && blocks == 1;
        if is_whole {
            whole = Some(value.value.clone());
        }
        match &value.value {
            Value::Seq(_) | Value::Map(_) if !is_whole => {
                out.push_str(&crate::preview::inline(&value));
            }
            v => out.push_str(&v.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(whole.unwrap_or(Value::Str(out)))
}

fn block(
    content: &str,
    inputs: &IndexMap<String, Node>,
    vars: &IndexMap<String, String>,
    loc: &Location,
) -> Result<Node> {
    let mut parts = content.split('|').map(str::trim);
    let head = parts.next().unwrap_or_default();
    let Some(name) = head.strip_prefix("inputs.") else {
        return Err(bad(
            loc,
            "inputs",
            format!("unknown interpolation key {head:?}; expected inputs.NAME"),
        ));
    };
    let Some(value) = inputs.get(name) else {
        return Err(bad(
            loc,
            "inputs",
            format!("unknown interpolation key: {name:?}"),
        ));
    };
    let mut value = value.clone();
    for f in parts {
        let text = value
            .scalar_text()
            .ok_or_else(|| bad(loc, "inputs", format!("function {f} needs a string input")))?;
        let new = if f == "expand_vars" {
            expand_existing(&text, vars)
        } else if f == "posix_escape" {
            posix_escape(&text)
        } else if let Some(args) = f
            .strip_prefix("truncate(")
            .and_then(|a| a.strip_suffix(')'))
        {
            let nums: Vec<Option<usize>> = args.split(',').map(|a| a.trim().parse().ok()).collect();
            let [Some(offset), Some(len)] = nums[..] else {
                return Err(bad(
                    loc,
                    "inputs",
                    format!("invalid function {f:?}: truncate takes two non-negative integers"),
                ));
            };
            text.chars().skip(offset).take(len).collect()
        } else {
            return Err(bad(loc, "inputs", format!("unknown input function {f:?}")));
        };
        value = Node::new(Value::Str(new), value.loc);
    }
    Ok(value)
}

fn posix_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if !(c.is_ascii_alphanumeric() || "_-./:,@%+=".contains(c)) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
