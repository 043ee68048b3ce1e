//! The images: the published Dockerfiles (`images/*/Dockerfile`) pass hadolint with the
//! repository's `.hadolint.yaml`, and the manager image the tests build without Docker
//! (`scripts/images`: `oar.test/oar:dev`) has the layout the Dockerfile declares (user,
//! entrypoint, command, environment, working directory, port), so the chart cannot tell the two
//! apart. Tools: `scripts/test-tools` (`OAR_REQUIRE_HELM=1` makes their absence a failure); the
//! image: `scripts/images` (`OAR_REQUIRE_CLUSTER=1` makes its absence a failure).

use oar_testkit::tools::Tools;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_dockerfiles_pass_hadolint() {
    let Some(tools) = Tools::find() else { return };
    for image in ["oar", "oar-helper"] {
        let dockerfile = repo().join("images").join(image).join("Dockerfile");
        let out = Command::new(&tools.hadolint)
            .arg("--config")
            .arg(repo().join(".hadolint.yaml"))
            .args(["--no-color", "--failure-threshold", "style"])
            .arg(&dockerfile)
            .output()
            .expect("hadolint runs");
        assert!(
            out.status.success(),
            "hadolint {}:\n{}{}",
            dockerfile.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The final stage's instructions of a Dockerfile, as (instruction, argument) pairs, with
/// continuation lines joined and comments dropped.
fn final_stage(dockerfile: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let start = joined
        .iter()
        .rposition(|l| l.to_ascii_uppercase().starts_with("FROM "))
        .expect("a FROM");
    joined[start..]
        .iter()
        .map(|l| {
            let (op, arg) = l.split_once(' ').unwrap_or((l, ""));
            (op.to_ascii_uppercase(), arg.trim().to_string())
        })
        .collect()
}

/// The OCI image config of an image archive of `scripts/images`.
fn image_config(archive: &Path) -> Value {
    let member = |name: &str| -> Vec<u8> {
        let out = Command::new("tar")
            .arg("-xOf")
            .arg(archive)
            .arg(name)
            .output()
            .expect("tar runs");
        assert!(out.status.success(), "{name} in {}", archive.display());
        out.stdout
    };
    let blob = |digest: &str| member(&format!("blobs/sha256/{}", &digest["sha256:".len()..]));
    let index: Value = serde_json::from_slice(&member("index.json")).expect("index.json");
    let manifest: Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap()))
            .expect("the manifest");
    let config: Value =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap()))
            .expect("the config");
    config["config"].clone()
}

#[test]
fn the_test_manager_image_has_the_dockerfiles_layout() {
    let cache = std::env::var_os("OAR_IMAGES_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/oar-images")))
        .expect("HOME");
    let archive = cache.join("oar.tar");
    if !archive.exists() {
        let message = format!(
            "{} is missing: run `cargo build --release -p oar && scripts/images`",
            archive.display()
        );
        if oar_testkit::cluster::cluster_required() {
            panic!("{message}");
        }
        eprintln!("\n!!! SKIPPED: {message}\n");
        return;
    }
    let config = image_config(&archive);
    let dockerfile = std::fs::read_to_string(repo().join("images/oar/Dockerfile")).unwrap();
    let stage = final_stage(&dockerfile);
    let last = |op: &str| -> String {
        stage
            .iter()
            .rev()
            .find(|(o, _)| o == op)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("no {op} in the final stage"))
    };
    assert_eq!(config["User"], last("USER"));
    assert_eq!(config["WorkingDir"], last("WORKDIR"));
    assert_eq!(config["StopSignal"], last("STOPSIGNAL"));
    let entrypoint: Value = serde_json::from_str(&last("ENTRYPOINT")).expect("exec form");
    assert_eq!(config["Entrypoint"], entrypoint);
    let cmd: Value = serde_json::from_str(&last("CMD")).expect("exec form");
    assert_eq!(config["Cmd"], cmd);
    let port = last("EXPOSE");
    assert!(
        config["ExposedPorts"]
            .as_object()
            .is_some_and(|p| p.contains_key(&format!("{port}/tcp"))),
        "{config}"
    );
    // ENV k=v k=v ...: each of them, as the image's environment.
    let env: Vec<String> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    for pair in last("ENV").split_whitespace() {
        assert!(env.contains(&pair.to_string()), "{pair} not in {env:?}");
    }
}
