//! Git: bare repositories made with the real `git` CLI, served over smart HTTP by running
//! `git http-backend` as a CGI program, behind `gitlab-ci-token:<job token>` basic auth.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use tokio::io::AsyncWriteExt;

use crate::state::Shared;
use crate::util::{self, message};

/// Largest request body passed to `git http-backend`.
const MAX_BODY: usize = 256 * 1024 * 1024;

/// Find `git-http-backend`: next to the `git` on `PATH`, else Debian's location.
pub(crate) async fn find_http_backend() -> anyhow::Result<PathBuf> {
    let out = tokio::process::Command::new("git")
        .arg("--exec-path")
        .output()
        .await;
    if let Ok(out) = out
        && out.status.success()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let p = Path::new(&dir).join("git-http-backend");
        if p.exists() {
            return Ok(p);
        }
    }
    let p = PathBuf::from("/usr/lib/git-core/git-http-backend");
    if p.exists() {
        return Ok(p);
    }
    bail!("git-http-backend not found (is git installed?)")
}

/// A project path like `acme/widget`: at least two segments of `[A-Za-z0-9._-]`, no `.`/`..`,
/// not ending in `.git`.
pub(crate) fn valid_project_path(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').collect();
    segs.len() >= 2
        && !path.ends_with(".git")
        && segs.iter().all(|s| {
            !s.is_empty()
                && *s != "."
                && *s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
}

/// A file path to commit: relative, not empty, no `..` and no `.git` component (which would
/// write into the work tree's own repository).
pub(crate) fn valid_file_path(path: &str) -> bool {
    use std::path::Component;
    let rel = Path::new(path);
    !path.is_empty()
        && !rel.is_absolute()
        && rel.components().all(|c| match c {
            Component::Normal(name) => !name.eq_ignore_ascii_case(".git"),
            Component::CurDir => true,
            _ => false,
        })
        && rel.components().any(|c| matches!(c, Component::Normal(_)))
}

/// Projects whose bare repositories already exist under `repos` (a kept state directory), as
/// `namespace/name` paths in sorted order.
pub(crate) fn existing_repos(repos: &Path) -> Vec<String> {
    fn walk(repos: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(project) = path
                .strip_prefix(repos)
                .ok()
                .and_then(|rel| rel.to_str())
                .and_then(|rel| rel.strip_suffix(".git"))
            else {
                walk(repos, &path, out);
                continue;
            };
            if valid_project_path(project) && path.join("HEAD").is_file() {
                out.push(project.to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(repos, repos, &mut out);
    out.sort();
    out
}

/// Run git in `dir` with a hermetic environment; returns trimmed stdout.
fn git(dir: &Path, home: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Fake GitLab")
        .env("GIT_AUTHOR_EMAIL", "fake@gitlab.invalid")
        .env("GIT_COMMITTER_NAME", "Fake GitLab")
        .env("GIT_COMMITTER_EMAIL", "fake@gitlab.invalid")
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !out.status.success() {
        bail!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Paths of the bare repository and the work tree of `project`.
fn dirs(shared: &Shared, project: &str) -> (PathBuf, PathBuf) {
    (
        shared.repos.join(format!("{project}.git")),
        shared.work.join(project),
    )
}

/// Create the bare repository with an initial commit on `main`; returns its sha.
pub(crate) fn create_repo(
    shared: &Shared,
    project: &str,
    files: &[(&str, &str)],
) -> anyhow::Result<String> {
    if !valid_project_path(project) {
        bail!("invalid project path {project:?} (want namespace/name)");
    }
    let (bare, work) = dirs(shared, project);
    if bare.exists() {
        bail!("repository {project} already exists");
    }
    std::fs::create_dir_all(&bare)?;
    std::fs::create_dir_all(&work)?;
    let home = shared.work.as_path();
    git(
        &bare,
        home,
        &["init", "--quiet", "--bare", "--initial-branch=main"],
    )?;
    git(&bare, home, &["config", "http.receivepack", "false"])?;
    git(
        &bare,
        home,
        &["config", "uploadpack.allowAnySHA1InWant", "true"],
    )?;
    git(&bare, home, &["config", "uploadpack.allowFilter", "true"])?;
    git(&work, home, &["init", "--quiet", "--initial-branch=main"])?;
    commit(shared, project, files)
}

/// Commit `files` (path, content) on `main` and push; returns the new sha.
pub(crate) fn commit(
    shared: &Shared,
    project: &str,
    files: &[(&str, &str)],
) -> anyhow::Result<String> {
    let (bare, work) = dirs(shared, project);
    if !bare.exists() {
        bail!("repository {project} does not exist");
    }
    let home = shared.work.as_path();
    for (path, content) in files {
        let rel = Path::new(path);
        if !valid_file_path(path) {
            bail!("file path {path:?} must stay inside the repository (and out of .git)");
        }
        let full = work.join(rel);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&full, content)?;
    }
    git(&work, home, &["add", "-A"])?;
    git(
        &work,
        home,
        &["commit", "--quiet", "--allow-empty", "-m", "Update files"],
    )?;
    let bare_str = bare.to_string_lossy().into_owned();
    git(
        &work,
        home,
        &[
            "push",
            "--quiet",
            "--force",
            &bare_str,
            "HEAD:refs/heads/main",
        ],
    )?;
    git(&work, home, &["rev-parse", "HEAD"])
}

/// Commit a submodule at `path` in `project` pointing at the head of `sub_project`'s `main`,
/// with `url` written to `.gitmodules` (relative URLs like `../sub.git` resolve against the
/// superproject's remote, as on GitLab).
pub(crate) fn add_submodule(
    shared: &Shared,
    project: &str,
    path: &str,
    url: &str,
    sub_project: &str,
) -> anyhow::Result<String> {
    let sub_sha = rev_parse(shared, sub_project, "refs/heads/main")
        .with_context(|| format!("no main branch in {sub_project}"))?;
    let (_, work) = dirs(shared, project);
    let home = shared.work.as_path();
    // An unpopulated submodule is an empty directory; without it `git add -A` would stage the
    // gitlink's removal.
    std::fs::create_dir_all(work.join(path))?;
    git(
        &work,
        home,
        &[
            "config",
            "-f",
            ".gitmodules",
            &format!("submodule.{path}.path"),
            path,
        ],
    )?;
    git(
        &work,
        home,
        &[
            "config",
            "-f",
            ".gitmodules",
            &format!("submodule.{path}.url"),
            url,
        ],
    )?;
    git(
        &work,
        home,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{sub_sha},{path}"),
        ],
    )?;
    commit(shared, project, &[])
}

/// `git rev-parse` in the bare repository (`None` if the revision doesn't exist).
pub(crate) fn rev_parse(shared: &Shared, project: &str, rev: &str) -> Option<String> {
    let (bare, _) = dirs(shared, project);
    git(
        &bare,
        &shared.work,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .ok()
}

/// Point `refname` at `sha` in the bare repository.
pub(crate) fn update_ref(
    shared: &Shared,
    project: &str,
    refname: &str,
    sha: &str,
) -> anyhow::Result<()> {
    let (bare, _) = dirs(shared, project);
    git(&bare, &shared.work, &["update-ref", refname, sha]).map(drop)
}

fn unauthorized() -> Response {
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        "HTTP Basic: Access denied. If a password was provided for Git authentication, \
         the password was incorrect or you're required to use a token instead of a password.\n",
    )
        .into_response();
    util::set_header(&mut resp, "www-authenticate", "Basic realm=\"GitLab\"");
    resp
}

/// `gitlab-ci-token:<password>` from a Basic `Authorization` header.
fn basic_password(headers: &HeaderMap) -> Option<String> {
    let raw = util::header_str(headers, "authorization")?;
    let (scheme, b64) = raw.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    (user == "gitlab-ci-token").then(|| pass.to_owned())
}

/// Fallback route: git smart HTTP for `/<project>.git/...`, 404 for anything else.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path();
    let not_found = || message(StatusCode::NOT_FOUND, "404 Not Found");
    let Some((project, rest)) = path.split_once(".git/") else {
        return not_found();
    };
    let project = project.trim_start_matches('/');
    if !valid_project_path(project) {
        return not_found();
    }
    let service = util::query_param(uri.query(), "service");
    let allowed = matches!(
        (&method, rest, service.as_deref()),
        (&Method::GET, "info/refs", Some("git-upload-pack"))
            | (&Method::POST, "git-upload-pack", _)
    );
    // Authenticate: the token of an executing job of this project.
    let Some(password) = basic_password(&headers) else {
        return unauthorized();
    };
    let access = shared.read(|st| {
        st.jobs
            .values()
            .find(|j| j.token == password && j.state.is_executing())
            .map(|j| {
                j.spec.project_path == project
                    || st
                        .job_token_allowlist
                        .contains(&(project.to_owned(), j.spec.project_path.clone()))
            })
    });
    match access {
        None => return unauthorized(),
        Some(false) => return not_found(),
        Some(true) => {}
    }
    let has_repo = shared.repos.join(format!("{project}.git")).is_dir();
    if !has_repo {
        return not_found();
    }
    if !allowed {
        return message(
            StatusCode::FORBIDDEN,
            "403 Forbidden - only git-upload-pack is served",
        );
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return message(
                StatusCode::PAYLOAD_TOO_LARGE,
                "413 Request Entity Too Large",
            );
        }
    };
    let cgi = Cgi {
        method: method.as_str(),
        path_info: format!("/{project}.git/{rest}"),
        query: uri.query().unwrap_or(""),
        headers: &headers,
        body,
    };
    match run_cgi(&shared, cgi).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(error = %e, "git http-backend failed");
            message(StatusCode::BAD_GATEWAY, &format!("502 Bad Gateway - {e:#}"))
        }
    }
}

/// One CGI request.
struct Cgi<'a> {
    method: &'a str,
    path_info: String,
    query: &'a str,
    headers: &'a HeaderMap,
    body: Bytes,
}

async fn run_cgi(shared: &Shared, req: Cgi<'_>) -> anyhow::Result<Response> {
    let mut cmd = tokio::process::Command::new(&shared.http_backend);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &shared.work)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &shared.repos)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", req.method)
        .env("PATH_INFO", &req.path_info)
        .env("QUERY_STRING", req.query)
        .env("REMOTE_USER", "gitlab-ci-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", req.body.len().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (name, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
    ] {
        if let Some(v) = util::header_str(req.headers, name) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.spawn().context("spawning git http-backend")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let body = req.body;
    let write = async move {
        // http-backend may stop reading early (e.g. on errors); that is not our failure.
        let _ = stdin.write_all(&body).await;
        drop(stdin);
    };
    let ((), out) = tokio::join!(write, child.wait_with_output());
    let out = out.context("waiting for git http-backend")?;
    if !out.stderr.is_empty() {
        tracing::debug!(stderr = %String::from_utf8_lossy(&out.stderr), "git http-backend");
    }
    parse_cgi_output(&out.stdout)
}

/// Split CGI output into headers (incl. `Status:`) and body.
fn parse_cgi_output(out: &[u8]) -> anyhow::Result<Response> {
    let (head_end, body_start) = find_header_end(out).context("no CGI header terminator")?;
    let head = std::str::from_utf8(&out[..head_end]).context("CGI headers are not UTF-8")?;
    let mut builder = axum::http::Response::builder().status(StatusCode::OK);
    for line in head.lines().filter(|l| !l.trim().is_empty()) {
        let (name, value) = line.split_once(':').context("malformed CGI header")?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code: u16 = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .context("malformed CGI Status")?;
            builder = builder.status(code);
        } else {
            builder = builder.header(name.trim(), value);
        }
    }
    builder
        .body(Body::from(out[body_start..].to_vec()))
        .context("building response")
}

fn find_header_end(out: &[u8]) -> Option<(usize, usize)> {
    let crlf = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    let lf = out
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_paths() {
        assert!(valid_project_path("acme/widget"));
        assert!(valid_project_path("group/sub/pro-ject.x"));
        assert!(!valid_project_path("widget"));
        assert!(!valid_project_path("acme/../etc"));
        assert!(!valid_project_path("acme//x"));
        assert!(!valid_project_path("acme/x.git"));
    }

    #[test]
    fn file_paths() {
        assert!(valid_file_path("README.md"));
        assert!(valid_file_path("src/./main.rs"));
        assert!(!valid_file_path(""));
        assert!(!valid_file_path("."));
        assert!(!valid_file_path("/etc/passwd"));
        assert!(!valid_file_path("a/../../b"));
        assert!(!valid_file_path(".git/config"));
        assert!(!valid_file_path("sub/.GIT/hooks/x"));
    }

    #[test]
    fn cgi_output() {
        let out = b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope";
        let resp = parse_cgi_output(out).expect("parse");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let out = b"Content-Type: application/x-git-upload-pack-advertisement\n\n001e# service";
        let resp = parse_cgi_output(out).expect("parse");
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(parse_cgi_output(b"garbage").is_err());
    }
}
