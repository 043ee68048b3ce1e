//! `[[runners.kubernetes.pod_spec]]` patches on the serialized `PodSpec`.
//!
//! GitLab Runner applies them, in order, to the generated PodSpec (not the pod's metadata)
//! when `FF_USE_ADVANCED_POD_SPEC_CONFIGURATION` is on. A patch is JSON or YAML text.
//!
//! - `merge`: JSON merge patch (RFC 7386): objects merge recursively, `null` deletes a key,
//!   anything else (lists included) replaces.
//! - `json`: JSON patch (RFC 6902): a list of `add`/`remove`/`replace`/`move`/`copy`/`test`
//!   operations with JSON pointers (`/containers/0/image`).
//! - `strategic` (GitLab Runner's default): **the subset of Kubernetes' strategic merge patch
//!   that PodSpec patches need**. Objects merge as in a merge patch; lists of objects that
//!   Kubernetes merges by key are merged by that key, matched by field name wherever it
//!   appears: `containers`, `initContainers`, `ephemeralContainers`, `volumes`, `env`,
//!   `imagePullSecrets`, `resourceClaims`, `schedulingGates` by `name`; `volumeMounts` by
//!   `mountPath`; `ports` by `containerPort`; `volumeDevices` by `devicePath`; `hostAliases`
//!   by `ip`; `resizePolicy` by `resourceName`; `topologySpreadConstraints` by `topologyKey`.
//!   A patch element with the key of an existing element merges into it; others are appended.
//!   Every other list (`tolerations`, `command`, `args`, ...) is replaced, as Kubernetes does.
//!   Directives: `$patch: delete` in a list element removes the element with that key;
//!   `$patch: replace` in an object replaces the object instead of merging, and a list
//!   element `{"$patch": "replace"}` replaces the whole list by the other elements.
//!   `$retainKeys`, `$setElementOrder/...` and `$deleteFromPrimitiveList/...` are refused.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use oar_config::kubernetes::{PatchSource, PatchType, PodSpecPatch};
use serde_json::{Map, Value};

/// Reads the `patch_path` files of `patches` (the only IO of the pod builder, done by the
/// caller before [`crate::pod::build_pod`], which takes the contents through
/// [`crate::pod::PodInput::patch_files`]).
pub fn read_patch_files(patches: &[PodSpecPatch]) -> io::Result<BTreeMap<PathBuf, String>> {
    let mut files = BTreeMap::new();
    for patch in patches {
        if let PatchSource::File(path) = &patch.source {
            let text = std::fs::read_to_string(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("pod_spec patch {:?}: reading {path:?}: {e}", patch.name),
                )
            })?;
            files.insert(path.clone(), text);
        }
    }
    Ok(files)
}

/// The config spelling of a patch type.
pub fn patch_type_name(patch_type: PatchType) -> &'static str {
    match patch_type {
        PatchType::Strategic => "strategic",
        PatchType::Merge => "merge",
        PatchType::Json => "json",
    }
}

/// Parses patch text: JSON, else YAML.
pub fn parse_document(text: &str) -> Result<Value, String> {
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(json_error) => serde_saphyr::from_str::<Value>(text)
            .map_err(|yaml_error| format!("neither JSON ({json_error}) nor YAML ({yaml_error})")),
    }
}

/// Applies one patch of `patch_type` to `doc`.
pub fn apply(doc: &mut Value, patch_type: PatchType, patch: &Value) -> Result<(), String> {
    match patch_type {
        PatchType::Merge => {
            merge_patch(doc, patch);
            Ok(())
        }
        PatchType::Json => json_patch(doc, patch),
        PatchType::Strategic => strategic_merge_patch(doc, patch),
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(doc: &mut Value, patch: &Value) {
    json_patch::merge(doc, patch);
}

/// RFC 6902 JSON patch; `patch` must be a list of operations.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let operations: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("not a JSON patch: {e}"))?;
    json_patch::patch(doc, &operations).map_err(|e| e.to_string())
}

/// The strategic merge patch subset described in the [module documentation](self).
pub fn strategic_merge_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    smp(doc, patch, None)
}

/// The merge key of a list field, by field name.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "volumeMounts" => "mountPath",
        "ports" => "containerPort",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "resizePolicy" => "resourceName",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}

const DIRECTIVE: &str = "$patch";

fn directive(value: &Value) -> Result<Option<&str>, String> {
    match value.get(DIRECTIVE) {
        None => Ok(None),
        Some(Value::String(d)) if d == "replace" || d == "delete" || d == "merge" => {
            Ok(Some(d.as_str()))
        }
        Some(other) => Err(format!("unsupported directive \"$patch\": {other}")),
    }
}

fn smp(doc: &mut Value, patch: &Value, field: Option<&str>) -> Result<(), String> {
    match patch {
        Value::Object(patch_map) => {
            match directive(patch)? {
                Some("replace") => {
                    *doc = strip(patch)?;
                    return Ok(());
                }
                Some("delete") => {
                    *doc = Value::Null;
                    return Ok(());
                }
                _ => {}
            }
            if !doc.is_object() {
                *doc = Value::Object(Map::new());
            }
            let Value::Object(doc_map) = doc else {
                return Ok(());
            };
            for (key, value) in patch_map {
                if key == DIRECTIVE {
                    continue;
                }
                if key.starts_with('$') {
                    return Err(format!("unsupported directive {key:?}"));
                }
                if value.is_null() || directive(value)? == Some("delete") {
                    doc_map.remove(key);
                    continue;
                }
                let slot = doc_map.entry(key.clone()).or_insert(Value::Null);
                smp(slot, value, Some(key))?;
            }
            Ok(())
        }
        Value::Array(items) => {
            match (field.and_then(merge_key), doc) {
                (Some(key), Value::Array(current)) => merge_list(current, items, key)?,
                (_, doc) => {
                    *doc = Value::Array(
                        items
                            .iter()
                            .filter(|item| directive(item).ok().flatten().is_none())
                            .map(strip)
                            .collect::<Result<_, _>>()?,
                    );
                }
            }
            Ok(())
        }
        scalar => {
            *doc = scalar.clone();
            Ok(())
        }
    }
}

fn merge_list(current: &mut Vec<Value>, items: &[Value], key: &str) -> Result<(), String> {
    let is_replace = |item: &Value| {
        item.as_object().is_some_and(|o| o.len() == 1)
            && item.get(DIRECTIVE).and_then(Value::as_str) == Some("replace")
    };
    if items.iter().any(is_replace) {
        *current = items
            .iter()
            .filter(|item| !is_replace(item))
            .map(strip)
            .collect::<Result<_, _>>()?;
        return Ok(());
    }
    for item in items {
        let Some(wanted) = item.get(key) else {
            return Err(format!("list element {item} has no merge key {key:?}"));
        };
        let position = current.iter().position(|c| c.get(key) == Some(wanted));
        match (directive(item)?, position) {
            (Some("delete"), Some(i)) => {
                current.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => smp(&mut current[i], item, None)?,
            (_, None) => current.push(strip(item)?),
        }
    }
    Ok(())
}

/// A patch value as plain data: directives refused, `null` members dropped.
fn strip(value: &Value) -> Result<Value, String> {
    Ok(match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                if k == DIRECTIVE {
                    directive(value)?;
                    continue;
                }
                if k.starts_with('$') {
                    return Err(format!("unsupported directive {k:?}"));
                }
                if !v.is_null() {
                    out.insert(k.clone(), strip(v)?);
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(strip).collect::<Result<_, _>>()?),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> Value {
        json!({
            "containers": [
                {"name": "build", "image": "alpine", "env": [{"name": "A", "value": "1"}],
                 "volumeMounts": [{"name": "builds", "mountPath": "/builds"}]},
                {"name": "helper", "image": "oar-helper"}
            ],
            "volumes": [{"name": "builds", "emptyDir": {}}],
            "tolerations": [{"key": "a", "operator": "Exists"}],
            "restartPolicy": "Never"
        })
    }

    #[test]
    fn merge_patch_replaces_lists() {
        let mut doc = spec();
        merge_patch(
            &mut doc,
            &json!({"containers": [{"name": "x"}], "restartPolicy": null, "hostname": "h"}),
        );
        assert_eq!(doc["containers"], json!([{"name": "x"}]));
        assert!(doc.get("restartPolicy").is_none());
        assert_eq!(doc["hostname"], "h");
    }

    #[test]
    fn json_patch_operations() {
        let mut doc = spec();
        json_patch(
            &mut doc,
            &json!([
                {"op": "replace", "path": "/containers/0/image", "value": "debian"},
                {"op": "add", "path": "/tolerations/-", "value": {"key": "b", "operator": "Exists"}},
                {"op": "remove", "path": "/restartPolicy"}
            ]),
        )
        .unwrap();
        assert_eq!(doc["containers"][0]["image"], "debian");
        assert_eq!(doc["tolerations"].as_array().unwrap().len(), 2);
        assert!(doc.get("restartPolicy").is_none());
        let err = json_patch(
            &mut doc,
            &json!([{"op": "test", "path": "/containers/0/image", "value": "alpine"}]),
        )
        .unwrap_err();
        assert!(err.contains("did not match"), "{err}");
        assert!(json_patch(&mut doc, &json!({"op": "add"})).is_err());
    }

    #[test]
    fn strategic_merges_by_key() {
        let mut doc = spec();
        strategic_merge_patch(
            &mut doc,
            &json!({
                "containers": [
                    {"name": "build", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "x"}],
                     "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]},
                    {"name": "sidecar", "image": "busybox"}
                ],
                "volumes": [{"name": "cache", "emptyDir": {"medium": "Memory"}}],
                "tolerations": [{"key": "z", "operator": "Exists"}]
            }),
        )
        .unwrap();
        assert_eq!(doc["containers"].as_array().unwrap().len(), 3);
        assert_eq!(doc["containers"][0]["image"], "alpine");
        assert_eq!(
            doc["containers"][0]["env"],
            json!([{"name": "A", "value": "x"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(
            doc["containers"][0]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(doc["containers"][2]["name"], "sidecar");
        assert_eq!(doc["volumes"].as_array().unwrap().len(), 2);
        // Not a merge list: replaced.
        assert_eq!(
            doc["tolerations"],
            json!([{"key": "z", "operator": "Exists"}])
        );
    }

    #[test]
    fn strategic_directives() {
        let mut doc = spec();
        strategic_merge_patch(
            &mut doc,
            &json!({
                "containers": [{"name": "helper", "$patch": "delete"}],
                "volumes": [{"$patch": "replace"}, {"name": "only", "emptyDir": {}}],
                "restartPolicy": null
            }),
        )
        .unwrap();
        assert_eq!(doc["containers"].as_array().unwrap().len(), 1);
        assert_eq!(doc["volumes"], json!([{"name": "only", "emptyDir": {}}]));
        assert!(doc.get("restartPolicy").is_none());

        let mut doc = spec();
        strategic_merge_patch(
            &mut doc,
            &json!({"containers": [{"name": "build", "resources": {"$patch": "replace", "limits": {"cpu": "1"}}}]}),
        )
        .unwrap();
        assert_eq!(
            doc["containers"][0]["resources"],
            json!({"limits": {"cpu": "1"}})
        );

        for bad in [
            json!({"$retainKeys": ["a"]}),
            json!({"containers": [{"image": "no-name"}]}),
            json!({"$patch": "explode"}),
        ] {
            assert!(strategic_merge_patch(&mut spec(), &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn documents_are_json_or_yaml() {
        assert_eq!(parse_document(r#"{"a": 1}"#).unwrap(), json!({"a": 1}));
        assert_eq!(
            parse_document("containers:\n  - name: build\n    image: x\n").unwrap(),
            json!({"containers": [{"name": "build", "image": "x"}]})
        );
        assert!(parse_document("{").is_err());
    }
}
