//! The job's registry credentials as a `kubernetes.io/dockerconfigjson` Secret.
//!
//! Sources, first one wins per registry (GitLab Runner's `auth.Resolver` order, without the
//! runner host's `~/.docker/config.json`, which does not exist for a pod):
//! 1. the `DOCKER_AUTH_CONFIG` variable (`{"auths": {...}}`, or the legacy map of registries);
//! 2. the job's `credentials` of type `registry` (GitLab's own registry, with the job token).
//!
//! `credHelpers` and `credsStore` cannot work for the kubelet and are ignored with a warning.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use oar_gitlab::JobResponse;
use oar_job::vars::Variables;
use serde_json::{Map, Value, json};

/// One registry's entry of `.dockerconfigjson`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegistryAuth {
    pub server: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub auth: Option<String>,
}

/// `https://index.docker.io/v1/` and `docker.io` are the same registry: the key GitLab Runner
/// deduplicates on.
fn registry_path(server: &str) -> String {
    let s = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let s = s.trim_end_matches('/');
    let s = s
        .strip_suffix("/v1")
        .or_else(|| s.strip_suffix("/v2"))
        .unwrap_or(s);
    let (host, path) = s.split_once('/').unwrap_or((s, ""));
    let host = match host.to_ascii_lowercase().as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        other => other.to_owned(),
    };
    if path.is_empty() {
        host
    } else {
        format!("{host}/{path}")
    }
}

fn string_field(entry: &Value, key: &str) -> Option<String> {
    entry
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn from_docker_auth_config(text: &str, warnings: &mut Vec<String>) -> Vec<RegistryAuth> {
    let parsed: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            warnings.push(format!(
                "DOCKER_AUTH_CONFIG is not valid JSON ({e}): its credentials are not used"
            ));
            return Vec::new();
        }
    };
    let Some(top) = parsed.as_object() else {
        warnings
            .push("DOCKER_AUTH_CONFIG is not a JSON object: its credentials are not used".into());
        return Vec::new();
    };
    for key in ["credHelpers", "credsStore"] {
        if top.contains_key(key) {
            warnings.push(format!(
                "DOCKER_AUTH_CONFIG {key} ignored: credential helpers cannot run for the kubelet"
            ));
        }
    }
    let auths = match top.get("auths") {
        Some(Value::Object(auths)) => auths.clone(),
        Some(_) => Map::new(),
        // The legacy ~/.dockercfg format: registries at the top level.
        None => top
            .iter()
            .filter(|(k, v)| !matches!(k.as_str(), "credHelpers" | "credsStore") && v.is_object())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    auths
        .iter()
        .map(|(server, entry)| RegistryAuth {
            server: server.clone(),
            username: string_field(entry, "username"),
            password: string_field(entry, "password"),
            auth: string_field(entry, "auth"),
        })
        .filter(|a| a.auth.is_some() || a.username.is_some())
        .collect()
}

/// The registry credentials of the job, deduplicated per registry (first source wins).
pub(crate) fn collect(
    job: &JobResponse,
    vars: &Variables,
    warnings: &mut Vec<String>,
) -> Vec<RegistryAuth> {
    let mut all = Vec::new();
    if let Some(v) = vars.get("DOCKER_AUTH_CONFIG")
        && !v.value.trim().is_empty()
    {
        all.extend(from_docker_auth_config(&v.value, warnings));
    }
    all.extend(
        job.credentials
            .iter()
            .filter(|c| c.kind == "registry" && !c.url.is_empty())
            .map(|c| RegistryAuth {
                server: c.url.clone(),
                username: Some(c.username.clone()).filter(|u| !u.is_empty()),
                password: Some(c.password.expose().to_owned()).filter(|p| !p.is_empty()),
                auth: None,
            }),
    );
    let mut seen = Vec::new();
    all.retain(|a| {
        let path = registry_path(&a.server);
        if seen.contains(&path) {
            false
        } else {
            seen.push(path);
            true
        }
    });
    all
}

/// The `.dockerconfigjson` document (keys sorted, `auth` always present).
pub(crate) fn docker_config_json(auths: &[RegistryAuth]) -> Vec<u8> {
    let mut entries = BTreeMap::new();
    for a in auths {
        let mut entry = Map::new();
        if let Some(u) = &a.username {
            entry.insert("username".into(), json!(u));
        }
        if let Some(p) = &a.password {
            entry.insert("password".into(), json!(p));
        }
        let auth = a.auth.clone().unwrap_or_else(|| {
            STANDARD.encode(format!(
                "{}:{}",
                a.username.as_deref().unwrap_or_default(),
                a.password.as_deref().unwrap_or_default()
            ))
        });
        entry.insert("auth".into(), json!(auth));
        entries.insert(a.server.clone(), Value::Object(entry));
    }
    let doc = json!({ "auths": entries });
    doc.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_paths() {
        assert_eq!(registry_path("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_path("docker.io"), "docker.io");
        assert_eq!(
            registry_path("Registry.Example.com:5005"),
            "registry.example.com:5005"
        );
        assert_eq!(
            registry_path("http://r.example.com/group/"),
            "r.example.com/group"
        );
    }

    #[test]
    fn docker_auth_config_formats() {
        let mut warnings = Vec::new();
        let new = from_docker_auth_config(
            r#"{"auths": {"r.example.com": {"auth": "dTpw"}}, "credHelpers": {"x": "ecr"}}"#,
            &mut warnings,
        );
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].auth.as_deref(), Some("dTpw"));
        assert_eq!(warnings.len(), 1);
        let legacy = from_docker_auth_config(
            r#"{"r.example.com": {"username": "u", "password": "p"}}"#,
            &mut warnings,
        );
        assert_eq!(legacy[0].username.as_deref(), Some("u"));
        assert!(from_docker_auth_config("{", &mut warnings).is_empty());
        assert_eq!(warnings.len(), 2);
    }
}
