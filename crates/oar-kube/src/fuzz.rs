//! The fuzz harness of the job payload, shared by `fuzz/fuzz_targets/payload.rs` and
//! `tests/fuzz_corpus.rs` (which replays the seed corpus on stable). Not part of the API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use oar_gitlab::JobResponse;
use oar_job::{JobContext, JobSettings, scripts};

use crate::identity::IdTokens;
use crate::pod::{PodInput, build_pod};

/// Separates the payload from the `[runners.kubernetes]` settings in an input.
pub const SEPARATOR: &[u8] = b"\n#--8<--\n";

const RUNNER: &str = "[[runners]]\nname = \"k8s\"\nurl = \"https://gitlab.example.com/\"\n\
    token = \"glrt-t1_abcdefghijkl\"\nexecutor = \"kubernetes\"\n[runners.kubernetes]\n";

/// `payload`: `data` is a job payload (GitLab's JSON for `POST /jobs/request`), then, after
/// [`SEPARATOR`], the body of `[runners.kubernetes]` (by default: overwrites allowed). The
/// payload is parsed, the job's context and every stage script are generated, and its pod is
/// built; a built pod's name, namespace, labels, annotations and container names must be ones
/// Kubernetes accepts, containers unique, and every pull policy for a container of the pod.
/// Panics only on a bug.
pub fn fuzz_payload(data: &[u8]) {
    let (payload, settings) = match data.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        Some(at) => (&data[..at], Some(&data[at + SEPARATOR.len()..])),
        None => (data, None),
    };
    let _ = oar_gitlab::jobs::parse_job_payload(payload);
    let Ok(job) = serde_json::from_slice::<JobResponse>(payload) else {
        return;
    };
    let tail = settings.map_or_else(
        || {
            "namespace_overwrite_allowed = \".*\"\nservice_account_overwrite_allowed = \".*\"\n\
             pod_labels_overwrite_allowed = \".*\"\npod_annotations_overwrite_allowed = \".*\"\n\
             cpu_limit_overwrite_max_allowed = \"4\"\nmemory_limit_overwrite_max_allowed = \"4Gi\"\n"
                .to_owned()
        },
        |s| String::from_utf8_lossy(s).into_owned(),
    );
    let Ok(loaded) = oar_config::parse_str(&format!("{RUNNER}{tail}"), Path::new("config.toml"))
    else {
        return;
    };
    let Some(runner) = loaded.config.runners.into_iter().next() else {
        return;
    };
    let Some(config) = runner.kubernetes else {
        return;
    };
    let settings = JobSettings {
        builds_dir: "/builds".into(),
        cache_dir: "/cache".into(),
        executor: "kubernetes".into(),
        feature_flags: runner.feature_flags.clone(),
        ..JobSettings::default()
    };
    let Ok(ctx) = JobContext::new(job.clone(), settings) else {
        return;
    };
    let _ = scripts::prepare(&ctx);
    let _ = scripts::get_sources(&ctx);
    for step in &ctx.job.steps {
        let _ = scripts::step(&ctx, &step.name, &step.script);
    }
    let _ = scripts::after_script(&ctx, &["echo after".to_owned()], "success");
    let _ = scripts::cleanup(&ctx);

    let pod_name = "runner-abcdefghi-project-42-concurrent-0-x7k2m9qa";
    let Ok(built) = build_pod(&PodInput {
        config: &config,
        feature_flags: &runner.feature_flags,
        patch_files: &BTreeMap::new(),
        job: &job,
        vars: &ctx.vars,
        pod_name,
        namespace_default: "oar",
        runner_short_token: "abcdefghi",
        runner_name: "k8s",
        builds_dir: "/builds",
        project_dir: &ctx.layout.project_dir,
        timeout: Duration::from_secs(3600),
        default_helper_image: "registry.example.com/oar/oar-helper:0.1.0",
        id_tokens: &IdTokens::new(),
    }) else {
        return;
    };
    let meta = &built.pod.metadata;
    assert_eq!(meta.name.as_deref(), Some(pod_name));
    assert_eq!(meta.namespace.as_deref(), Some(built.namespace.as_str()));
    assert!(
        dns_label(&built.namespace),
        "namespace {:?}",
        built.namespace
    );
    for (k, v) in meta.labels.iter().flatten() {
        assert!(qualified_name(k), "label key {k:?}");
        assert!(label_value(v), "label {k}={v:?}");
    }
    for k in meta.annotations.iter().flatten().map(|(k, _)| k) {
        assert!(qualified_name(k), "annotation key {k:?}");
    }
    let spec = built.pod.spec.as_ref().expect("a pod spec");
    let mut names = BTreeSet::new();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        assert!(dns_label(&c.name), "container name {:?}", c.name);
        assert!(names.insert(c.name.clone()), "container {:?} twice", c.name);
    }
    for name in built.pull_policies.keys() {
        assert!(
            names.contains(name),
            "pull policies for no container {name:?}"
        );
    }
    serde_json::to_vec(&built.pod).expect("the pod serializes");
}

/// An RFC 1123 label: what namespaces and container names must be.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A label value: at most 63 characters, alphanumeric at both ends, `-_.` inside.
fn label_value(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then a name that is a
/// non-empty label value.
fn qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let prefix_ok =
        prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(dns_label));
    prefix_ok && !name.is_empty() && label_value(name)
}
