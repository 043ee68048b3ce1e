//! What `oar exec` learns from the local checkout: the repository's root, the predefined
//! variables GitLab would set for a push of the checked-out commit, the files that exist (for
//! `exists`) and the files changed against the default branch (for `changes`).

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};

/// The local checkout.
#[derive(Debug, Clone)]
pub struct Checkout {
    /// The project's root: the work tree's root, or the subdirectory `oar exec` was pointed at
    /// when that directory holds the pipeline file itself (a project inside a repository, such
    /// as `examples/pipeline` in Oar's own).
    pub root: PathBuf,
    /// The git work tree's root.
    pub git_root: PathBuf,
    /// The work tree's git directory (`.git`, or `.git/worktrees/NAME` in a linked work tree):
    /// its index.
    pub git_dir: PathBuf,
    /// The repository's git directory: objects and refs.
    pub common_dir: PathBuf,
    /// The project's path inside the work tree (`examples/pipeline/`), empty at the root.
    pub prefix: String,
    /// `HEAD`'s commit.
    pub sha: String,
    /// `HEAD`'s tree.
    pub tree: String,
    /// The branch checked out, or `None` when `HEAD` is detached.
    pub branch: Option<String>,
    /// The tag `HEAD` is exactly at, when detached on one.
    pub tag: Option<String>,
    /// The default branch (`origin/HEAD`, else `init.defaultBranch`, else `main`).
    pub default_branch: String,
    /// `namespace/name`, from the `origin` remote's URL (else `local/<directory name>`).
    pub project_path: String,
    /// The commit's subject line and full message.
    pub title: String,
    /// The whole commit message.
    pub message: String,
}

/// Runs `git ARGS` in `dir`; its trimmed stdout, or `None` when git says no.
async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<Option<String>> {
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .await
        .context("cannot run git (is it installed?)")?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(
        String::from_utf8_lossy(&out.stdout)
            .trim_end_matches('\n')
            .to_string(),
    ))
}

/// `namespace/name` of a remote URL (`https://host/a/b.git`, `git@host:a/b.git`,
/// `ssh://git@host:22/a/b`), or `None` when it has no such path.
pub fn project_path_of_remote(url: &str) -> Option<String> {
    let url = url.trim();
    // A remote on this machine has no GitLab project path.
    if url.starts_with('/') || url.starts_with('.') || url.starts_with("file://") {
        return None;
    }
    let path = if let Some((_, rest)) = url.split_once("://") {
        // scheme://[user@]host[:port]/path
        rest.split_once('/').map(|(_, p)| p)?
    } else if let Some((_, rest)) = url.split_once(':') {
        // scp-like: [user@]host:path
        rest
    } else {
        url
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    (segments.len() >= 2).then(|| segments.join("/"))
}

impl Checkout {
    /// The checkout that contains `dir`; its project is `dir` itself when `dir` is a
    /// subdirectory holding `pipeline_file`, else the work tree's root.
    pub async fn discover(dir: &Path, pipeline_file: &Path) -> anyhow::Result<Checkout> {
        // One call for both: the root and where `dir` is under it.
        let Some(where_) = git(
            dir,
            &[
                "rev-parse",
                "--path-format=absolute",
                "--show-toplevel",
                "--show-prefix",
                "--git-dir",
                "--git-common-dir",
            ],
        )
        .await?
        else {
            bail!(
                "{} is not inside a git repository: `oar exec` runs the pipeline of a checkout",
                dir.display()
            );
        };
        let mut lines = where_.lines();
        let git_root = PathBuf::from(lines.next().unwrap_or_default());
        let inside = lines.next().unwrap_or_default().to_string();
        let git_dir = PathBuf::from(lines.next().unwrap_or_default());
        let common_dir = PathBuf::from(lines.next().unwrap_or_default());
        let (root, prefix) = if !inside.is_empty() && dir.join(pipeline_file).is_file() {
            (git_root.join(&inside), inside)
        } else {
            (git_root.clone(), String::new())
        };
        // The rest does not depend on each other: at once.
        let (head, branch, tag, origin_head, init_default, remote) = tokio::join!(
            git(&git_root, &["log", "-1", "--format=%H%x00%T%x00%B", "HEAD"]),
            git(&root, &["symbolic-ref", "--short", "-q", "HEAD"]),
            git(&root, &["describe", "--tags", "--exact-match", "HEAD"]),
            git(
                &root,
                &["symbolic-ref", "--short", "-q", "refs/remotes/origin/HEAD"]
            ),
            git(&root, &["config", "init.defaultBranch"]),
            git(&root, &["remote", "get-url", "origin"]),
        );
        let Some(head) = head? else {
            bail!(
                "the repository at {} has no commit yet: commit once, `oar exec` runs the checked-out commit (plus uncommitted changes)",
                git_root.display()
            );
        };
        let mut head = head.splitn(3, '\0');
        let sha = head.next().unwrap_or_default().to_string();
        let tree = head.next().unwrap_or_default().to_string();
        let message = head
            .next()
            .unwrap_or_default()
            .trim_end_matches('\n')
            .to_string();
        let branch = branch?;
        // A tag names the pipeline's ref only when no branch is checked out.
        let tag = tag?.filter(|_| branch.is_none());
        let default_branch = match origin_head? {
            Some(b) => b.strip_prefix("origin/").unwrap_or(&b).to_string(),
            None => init_default?
                .filter(|b| !b.is_empty())
                .unwrap_or_else(|| "main".into()),
        };
        let remote = remote?;
        let dir_name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "project".into());
        let project_path = match remote.as_deref().and_then(project_path_of_remote) {
            // A project inside the repository: named after its directory, in the repository's
            // namespace.
            Some(p) if !prefix.is_empty() => match p.rsplit_once('/') {
                Some((namespace, _)) => format!("{namespace}/{dir_name}"),
                None => format!("local/{dir_name}"),
            },
            Some(p) => p,
            None => format!("local/{dir_name}"),
        };
        let title = message.lines().next().unwrap_or_default().to_string();
        Ok(Checkout {
            root,
            git_root,
            git_dir,
            common_dir,
            prefix,
            sha,
            tree,
            branch,
            tag,
            default_branch,
            project_path,
            title,
            message,
        })
    }

    /// The ref the pipeline is for: the branch, else the tag, else the commit.
    pub fn ref_name(&self) -> &str {
        self.branch
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(&self.sha)
    }

    /// The predefined variables of a push pipeline of this checkout, as GitLab names them.
    pub fn predefined(&self, pipeline_id: u64) -> Vec<(String, String)> {
        let (namespace, name) = self
            .project_path
            .rsplit_once('/')
            .unwrap_or(("local", &self.project_path));
        let mut vars = vec![
            ("CI", "true".to_string()),
            ("GITLAB_CI", "true".to_string()),
            ("CI_PIPELINE_SOURCE", "push".to_string()),
            ("CI_PIPELINE_ID", pipeline_id.to_string()),
            ("CI_PIPELINE_IID", pipeline_id.to_string()),
            ("CI_COMMIT_SHA", self.sha.clone()),
            (
                "CI_COMMIT_SHORT_SHA",
                self.sha.chars().take(8).collect::<String>(),
            ),
            ("CI_COMMIT_REF_NAME", self.ref_name().to_string()),
            ("CI_COMMIT_REF_SLUG", ref_slug(self.ref_name())),
            ("CI_COMMIT_TITLE", self.title.clone()),
            ("CI_COMMIT_MESSAGE", self.message.clone()),
            ("CI_DEFAULT_BRANCH", self.default_branch.clone()),
            ("CI_PROJECT_PATH", self.project_path.clone()),
            ("CI_PROJECT_PATH_SLUG", ref_slug(&self.project_path)),
            ("CI_PROJECT_NAME", name.to_string()),
            ("CI_PROJECT_NAMESPACE", namespace.to_string()),
        ];
        if let Some(b) = &self.branch {
            vars.push(("CI_COMMIT_BRANCH", b.clone()));
        }
        if let Some(t) = &self.tag {
            vars.push(("CI_COMMIT_TAG", t.clone()));
        }
        vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// The repository's files as `exists` sees them: tracked ones and untracked ones that git
    /// does not ignore (what a commit of the work tree would hold).
    pub async fn files(&self) -> anyhow::Result<Vec<String>> {
        let out = git(
            &self.root,
            &[
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
        )
        .await?
        .context("git ls-files failed")?;
        let mut files: Vec<String> = out
            .split('\0')
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect();
        files.sort();
        files.dedup();
        Ok(files)
    }

    /// The files that differ between `reference` and the work tree (committed or not, and
    /// untracked ones), for `changes:compare_to`; `None` when git knows no such ref.
    pub async fn changed_files_against(
        &self,
        reference: &str,
    ) -> anyhow::Result<Option<Vec<String>>> {
        let commit = format!("{reference}^{{commit}}");
        let Some(base) = git(&self.root, &["rev-parse", "--verify", "-q", &commit]).await? else {
            return Ok(None);
        };
        let diff = ["diff", "--name-only", "--relative", "-z", base.as_str()];
        let others = ["ls-files", "-z", "--others", "--exclude-standard"];
        let (diff, untracked) = tokio::join!(git(&self.root, &diff), git(&self.root, &others));
        let mut files: Vec<String> = [diff?, untracked?]
            .iter()
            .flatten()
            .flat_map(|out| out.split('\0'))
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect();
        files.sort();
        files.dedup();
        Ok(Some(files))
    }

    /// GitLab's `cache:key:files` key: the SHA-1 of the sorted last commits that changed each
    /// file (or pattern), joined by `-`; `default` when no commit changed any. A file with
    /// uncommitted changes was last changed by the work tree's `snapshot`.
    pub async fn files_digest(&self, files: &[String], snapshot: &str) -> anyhow::Result<String> {
        use sha1::Digest as _;
        let mut ids = Vec::new();
        for file in files {
            let spec = format!(":(glob){file}");
            let log = ["log", "-1", "--format=%H", "HEAD", "--", spec.as_str()];
            let status = [
                "status",
                "--porcelain",
                "--untracked-files=all",
                "--",
                spec.as_str(),
            ];
            let (last, dirty) = tokio::join!(git(&self.root, &log), git(&self.root, &status));
            if dirty?.is_some_and(|d| !d.is_empty()) {
                ids.push(snapshot.to_string());
            } else if let Some(id) = last?.filter(|id| !id.is_empty()) {
                ids.push(id);
            }
        }
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return Ok("default".into());
        }
        let digest = sha1::Sha1::digest(ids.join("-").as_bytes());
        Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The files changed against the default branch (from where this commit left it) plus the
    /// uncommitted ones, for `changes`; `None` when the default branch is unknown here, which
    /// makes every `changes` true, as GitLab does for a push with no diff to compare to.
    pub async fn changed_files(&self) -> anyhow::Result<Option<Vec<String>>> {
        let merge_base = ["merge-base", self.default_branch.as_str(), "HEAD"];
        let (base, untracked) = tokio::join!(
            git(&self.root, &merge_base),
            git(
                &self.root,
                &["ls-files", "-z", "--others", "--exclude-standard"],
            )
        );
        let Some(base) = base? else {
            return Ok(None);
        };
        let mut files: Vec<String> = git(
            &self.root,
            &["diff", "--name-only", "--relative", "-z", &base],
        )
        .await?
        .unwrap_or_default()
        .split('\0')
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
        let untracked = untracked?.unwrap_or_default();
        files.extend(
            untracked
                .split('\0')
                .filter(|f| !f.is_empty())
                .map(str::to_string),
        );
        files.sort();
        files.dedup();
        Ok(Some(files))
    }
}

/// GitLab's `*_SLUG`: lower case, every run of characters outside `a-z0-9` a single `-`, at
/// most 63 characters, no leading or trailing `-`.
pub fn ref_slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.trim_matches('-').chars().take(63).collect();
    out.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_paths_come_from_every_remote_url_form() {
        for (url, want) in [
            (
                "https://gitlab.example.com/acme/widget.git",
                Some("acme/widget"),
            ),
            (
                "https://gitlab.example.com/acme/sub/widget",
                Some("acme/sub/widget"),
            ),
            (
                "git@gitlab.example.com:acme/widget.git",
                Some("acme/widget"),
            ),
            (
                "ssh://git@gitlab.example.com:2222/acme/widget.git",
                Some("acme/widget"),
            ),
            ("/srv/git/widget.git", None),
            ("file:///srv/git/acme/widget.git", None),
            ("https://gitlab.example.com/widget.git", None),
        ] {
            assert_eq!(project_path_of_remote(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn slugs_are_gitlabs() {
        assert_eq!(ref_slug("feature/Add_Thing"), "feature-add-thing");
        assert_eq!(ref_slug("--v1.2--"), "v1-2");
        assert_eq!(ref_slug(&"a".repeat(70)).len(), 63);
    }

    async fn sh(dir: &Path, script: &str) {
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .await
            .unwrap();
        assert!(status.success(), "{script}");
    }

    #[tokio::test]
    async fn a_checkout_gives_the_push_variables_files_and_changes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        sh(
            d,
            "git init -q -b main . && git remote add origin git@gitlab.example.com:acme/widget.git \
             && echo a > a.txt && git add a.txt && git commit -qm 'first line\n\nbody' \
             && git checkout -qb feature/x && echo b > b.txt && git add b.txt && git commit -qm second \
             && echo c > c.txt && echo ignored > .gitignore.txt && printf 'c.txt\n' > .gitignore \
             && echo d > d.txt",
        )
        .await;
        let c = Checkout::discover(d, Path::new(".gitlab-ci.yml"))
            .await
            .unwrap();
        assert_eq!(c.branch.as_deref(), Some("feature/x"));
        assert_eq!(c.project_path, "acme/widget");
        assert_eq!(c.default_branch, "main");
        assert_eq!(c.title, "second");
        let vars: std::collections::HashMap<_, _> = c.predefined(7).into_iter().collect();
        assert_eq!(vars["CI_COMMIT_BRANCH"], "feature/x");
        assert_eq!(vars["CI_COMMIT_REF_SLUG"], "feature-x");
        assert_eq!(vars["CI_PROJECT_NAME"], "widget");
        assert_eq!(vars["CI_PROJECT_NAMESPACE"], "acme");
        assert_eq!(vars["CI_PIPELINE_ID"], "7");
        assert_eq!(vars["CI_COMMIT_SHA"].len(), 40);
        let files = c.files().await.unwrap();
        assert!(files.contains(&"d.txt".to_string()), "{files:?}");
        assert!(!files.contains(&"c.txt".to_string()), "ignored: {files:?}");
        let changed = c.changed_files().await.unwrap().unwrap();
        assert!(changed.contains(&"b.txt".to_string()), "{changed:?}");
        assert!(changed.contains(&"d.txt".to_string()), "{changed:?}");
        assert!(!changed.contains(&"a.txt".to_string()), "{changed:?}");
    }

    #[tokio::test]
    async fn outside_a_repository_or_before_a_commit_the_error_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let e = Checkout::discover(dir.path(), Path::new(".gitlab-ci.yml"))
            .await
            .unwrap_err();
        assert!(
            format!("{e}").contains("not inside a git repository"),
            "{e}"
        );
        sh(dir.path(), "git init -q .").await;
        let e = Checkout::discover(dir.path(), Path::new(".gitlab-ci.yml"))
            .await
            .unwrap_err();
        assert!(format!("{e}").contains("no commit yet"), "{e}");
    }
}
