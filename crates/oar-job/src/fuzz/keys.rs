//! `keys`: cache and artifact key expansion, from a job's variables to the sanitized keys the
//! manager presigns and the artifact file names.

use oar_archive::cache;
use serde_json::{Value, json};

use crate::context::{JobContext, JobSettings};
use crate::files::{artifact_file_name, keys_to_presign, resolve_caches};
use crate::vars::expand_with;

/// `keys`: `data` is lines: `NAME=VALUE` (a job variable; `NAME*=VALUE` a masked one),
/// `key:`, `fallback:`, `policy:` (of the cache the next `key:` starts), `artifact:` (an
/// artifact name), `job:` and `ref:` (the job's name and ref, for the default key). The job's
/// caches resolve to keys that are the variables' expansion of `key:` (or `<job>/<ref>` when
/// that is empty); every key the manager presigns is a sanitized key: non-empty, relative,
/// without `.`, `..` or empty segments or trailing blanks, stable under sanitizing again,
/// listed once, and the sanitized form of one of the job's keys or fallback keys; each
/// artifact file name is a single path segment with the format's extension.
pub fn fuzz_keys(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut variables = Vec::new();
    let mut caches: Vec<Value> = Vec::new();
    let mut artifacts = Vec::new();
    let (mut job_name, mut git_ref) = ("build".to_owned(), "main".to_owned());
    for line in text.lines() {
        if let Some(k) = line.strip_prefix("key:") {
            caches.push(json!({"key": k, "paths": ["vendor"], "policy": "pull-push"}));
        } else if let Some(f) = line.strip_prefix("fallback:") {
            if let Some(c) = caches.last_mut() {
                match c["fallback_keys"].as_array_mut() {
                    Some(keys) => keys.push(json!(f)),
                    None => c["fallback_keys"] = json!([f]),
                }
            }
        } else if let Some(p) = line.strip_prefix("policy:") {
            if let Some(c) = caches.last_mut() {
                c["policy"] = json!(p);
            }
        } else if let Some(a) = line.strip_prefix("artifact:") {
            artifacts.push(json!({"name": a, "paths": ["out"], "when": "always"}));
        } else if let Some(j) = line.strip_prefix("job:") {
            j.clone_into(&mut job_name);
        } else if let Some(r) = line.strip_prefix("ref:") {
            r.clone_into(&mut git_ref);
        } else if let Some((name, value)) = line.split_once('=') {
            let (name, masked) = match name.strip_suffix('*') {
                Some(n) => (n, true),
                None => (name, false),
            };
            variables
                .push(json!({"key": name, "value": value, "public": !masked, "masked": masked}));
        }
    }
    let job = json!({
        "id": 1, "token": "glcbt-token",
        "job_info": {"id": 1, "name": job_name, "stage": "test", "project_id": 2},
        "git_info": {"repo_url": "https://gitlab.example.com/g/p.git", "ref": git_ref, "sha": "0123456789abcdef0123456789abcdef01234567"},
        "variables": variables,
        "cache": caches,
        "artifacts": artifacts,
        "steps": [{"name": "script", "script": ["true"]}],
    });
    let Ok(job) = serde_json::from_value::<oar_gitlab::JobResponse>(job) else {
        return;
    };
    let settings = JobSettings {
        builds_dir: "/builds".into(),
        cache_dir: "/cache".into(),
        ..JobSettings::default()
    };
    let Ok(ctx) = JobContext::new(job, settings) else {
        return;
    };

    let mut raw_keys = Vec::new();
    let cached = ctx
        .job
        .cache
        .iter()
        .filter(|c| !c.paths.is_empty() || c.untracked);
    for (c, spec) in cached.zip(resolve_caches(&ctx)) {
        let Ok(spec) = spec else { continue };
        let expanded = ctx.vars.expand(&c.key);
        let expected = if expanded.is_empty() {
            cache::default_key(&ctx.job.job_info.name, &ctx.job.git_info.git_ref)
        } else {
            expanded
        };
        assert_eq!(spec.key, expected, "cache key {:?}", c.key);
        raw_keys.push(spec.key.clone());
        raw_keys.extend(spec.fallback_keys.iter().cloned());
    }
    let presigned = keys_to_presign(&ctx);
    for (i, (key, _)) in presigned.iter().enumerate() {
        assert!(!key.is_empty(), "an empty presigned key");
        assert!(!key.starts_with('/'), "absolute key {key:?}");
        for segment in key.split('/') {
            assert!(
                !segment.is_empty() && segment != "." && segment != "..",
                "key {key:?} has segment {segment:?}"
            );
        }
        assert_eq!(key.trim_end(), key, "trailing blanks in {key:?}");
        assert_eq!(
            cache::sanitize_key(key).as_deref(),
            Ok(key.as_str()),
            "unstable"
        );
        assert!(
            presigned[..i].iter().all(|(k, _)| k != key),
            "{key:?} listed twice"
        );
        assert!(
            raw_keys
                .iter()
                .any(|r| cache::sanitize_key(r).as_deref() == Ok(key.as_str())),
            "{key:?} is none of the job's keys"
        );
    }

    for a in &ctx.job.artifacts {
        let name = ctx.vars.expand(&a.name);
        for (format, ext) in [("zip", ".zip"), ("gzip", ".gz"), ("raw", "")] {
            let file = artifact_file_name(&name, format);
            assert!(file.ends_with(ext), "{file:?} for {format}");
            let base = &file[..file.len() - ext.len()];
            assert!(
                !base.is_empty() && !base.contains('/') && base != "." && base != "..",
                "artifact file name {file:?} from {name:?}"
            );
        }
    }

    // Expansion itself: text without `$` is left alone, and `$$` is a literal `$`.
    for k in &raw_keys {
        if !k.contains('$') {
            assert_eq!(&expand_with(k, |_| None), k);
        }
    }
    assert_eq!(expand_with("$$X", |_| Some("y".into())), "$X");
}
