//! The external tools of the chart and image tests: Helm 3 and Helm 4, kubectl (for its
//! kustomize), kubernetes-validate and hadolint, as `../shared/tools/install-helm-tools.sh` and
//! `.ci/run` install them into `$OAR_TOOLS_DIR` (default `~/.cache/oar-tools`).
//!
//! Without them a test prints a loud notice and passes, unless `OAR_REQUIRE_HELM=1` (as in
//! CI), which makes a missing tool fail the test instead.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The variable that makes missing tools a failure.
pub const REQUIRE_ENV: &str = "OAR_REQUIRE_HELM";

/// The tools, found in `$OAR_TOOLS_DIR/bin`.
#[derive(Debug)]
pub struct Tools {
    /// Helm v3.
    pub helm3: PathBuf,
    /// Helm v4.
    pub helm4: PathBuf,
    /// A current kubectl (its `kustomize` serves the chart tests' post-renderer).
    pub kubectl: PathBuf,
    /// kubernetes-validate, with the schemas of current Kubernetes versions.
    pub validate: PathBuf,
    /// hadolint, the Dockerfile linter.
    pub hadolint: PathBuf,
    /// HELM_*_HOME for hermetic runs (no user repositories or plugins).
    home: tempfile::TempDir,
}

/// The tools' directory.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("OAR_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("oar-tools"))
        })
        .unwrap_or_else(|| PathBuf::from(".cache/oar-tools"))
}

impl Tools {
    /// The tools, or `None` (after a loud notice) when one is missing and [`REQUIRE_ENV`] is
    /// not `1`; with it, a missing tool panics with what to install.
    pub fn find() -> Option<Tools> {
        let bin = tools_dir().join("bin");
        let tools = Tools {
            helm3: bin.join("helm"),
            helm4: bin.join("helm4"),
            kubectl: bin.join("kubectl"),
            validate: bin.join("kubernetes-validate"),
            hadolint: bin.join("hadolint"),
            home: tempfile::tempdir().expect("temp dir"),
        };
        let missing: Vec<String> = [
            &tools.helm3,
            &tools.helm4,
            &tools.kubectl,
            &tools.validate,
            &tools.hadolint,
        ]
        .into_iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
        if missing.is_empty() {
            return Some(tools);
        }
        let message = format!(
            "these tests need {} (install them with `bash ../shared/tools/install-helm-tools.sh` and `scripts/test-tools`, or point OAR_TOOLS_DIR at them)",
            missing.join(", ")
        );
        if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
            panic!("{REQUIRE_ENV}=1: {message}");
        }
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPED: {message}\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        None
    }

    /// Both Helm versions, named.
    pub fn helms(&self) -> [(&'static str, &Path); 2] {
        [("helm 3", &self.helm3), ("helm 4", &self.helm4)]
    }

    /// The hermetic home of these runs: Helm's config, cache and data (and plugins) live here.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Helm's plugin directory in the hermetic home (`HELM_PLUGINS`).
    pub fn helm_plugins(&self) -> PathBuf {
        self.home.path().join("plugins")
    }

    /// A command running `helm` (either version) in the hermetic home.
    pub fn helm(&self, helm: &Path) -> Command {
        let mut c = Command::new(helm);
        for (var, dir) in [
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_DATA_HOME", "data"),
        ] {
            c.env(var, self.home.path().join(dir));
        }
        c.env("HELM_PLUGINS", self.helm_plugins());
        c
    }

    /// Whether `helm` is Helm 4 (whose `--post-renderer` names a plugin, not a program).
    pub fn is_helm4(&self, helm: &Path) -> bool {
        helm == self.helm4
    }

    /// Registers `program` as a Helm 4 post-renderer plugin named `name` in the hermetic home,
    /// and returns what `--post-renderer` takes for `helm`: the plugin's name for Helm 4, the
    /// program's path for Helm 3.
    pub fn post_renderer(&self, helm: &Path, name: &str, program: &Path) -> String {
        if !self.is_helm4(helm) {
            return program.display().to_string();
        }
        let dir = self.helm_plugins().join(name);
        std::fs::create_dir_all(&dir).expect("the plugin directory");
        let manifest = format!(
            "apiVersion: v1\nname: {name}\ntype: postrenderer/v1\nruntime: subprocess\nversion: 0.1.0\nruntimeConfig:\n  platformCommand:\n    - command: {}\n",
            program.display()
        );
        std::fs::write(dir.join("plugin.yaml"), manifest).expect("the plugin manifest");
        name.to_string()
    }
}
