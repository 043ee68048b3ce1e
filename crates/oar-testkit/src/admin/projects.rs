//! `POST /_fake/projects`, `POST /_fake/projects/{path}/commits` and
//! `POST /_fake/projects/{path}/tags`.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{AdminError, Reply, blocking, json_body, reply, upgrade};
use crate::git::{valid_file_path, valid_project_path};
use crate::handle::{FakeGitlab, WeakGitlab};

/// Body of `POST /_fake/projects`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewProject {
    /// `namespace/name`.
    path: String,
    /// File path → content of the first commit.
    #[serde(default)]
    files: BTreeMap<String, String>,
}

/// Body of `POST /_fake/projects/{path}/commits`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewCommit {
    /// File path → new content (files not named stay as they are).
    #[serde(default)]
    files: BTreeMap<String, String>,
}

/// Body of `POST /_fake/projects/{path}/tags`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTag {
    /// Tag name, created at the head of `main`.
    name: String,
}

/// Answer of every project route: the project and the commit.
#[derive(Serialize)]
struct Commit {
    path: String,
    sha: String,
}

fn check_path(path: &str) -> Result<(), AdminError> {
    if !valid_project_path(path) {
        return Err(AdminError::bad_request(format!(
            "path: {path:?} is not a project path (want namespace/name, segments of \
             [A-Za-z0-9._-], not ending in .git)"
        )));
    }
    if path.split('/').next() == Some("_fake") {
        return Err(AdminError::bad_request(
            "path: the _fake namespace is reserved for the admin API",
        ));
    }
    Ok(())
}

fn check_files(files: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, AdminError> {
    for name in files.keys() {
        if !valid_file_path(name) {
            return Err(AdminError::bad_request(format!(
                "files: {name:?} must be a relative path inside the repository, out of .git"
            )));
        }
    }
    Ok(files.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn has_repo(gitlab: &FakeGitlab, path: &str) -> bool {
    gitlab
        .shared()
        .read(|st| st.projects.get(path).is_some_and(|p| p.has_repo))
}

fn git_failed(e: &anyhow::Error) -> AdminError {
    AdminError::internal(format!("{e:#}"))
}

/// `POST /_fake/projects`: a project with a repository holding one commit of `files`.
pub(super) async fn create(State(gitlab): State<WeakGitlab>, body: Body) -> Reply {
    let req: NewProject = json_body(body).await?;
    check_path(&req.path)?;
    let files = check_files(&req.files)?;
    let gitlab = upgrade(&gitlab)?;
    if has_repo(&gitlab, &req.path) {
        return Err(AdminError::new(
            StatusCode::CONFLICT,
            format!("path: project {} already has a repository", req.path),
        ));
    }
    let path = req.path.clone();
    let sha = blocking(move || {
        let files: Vec<(&str, &str)> = files.iter().map(|(k, v)| (&**k, &**v)).collect();
        gitlab.create_repo(&path, &files)
    })
    .await?
    .map_err(|e| git_failed(&e))?;
    tracing::info!(project = %req.path, %sha, "created project");
    reply(
        StatusCode::CREATED,
        &Commit {
            path: req.path,
            sha,
        },
    )
}

/// `POST /_fake/projects/{path}/commits` and `/tags` (a wildcard route: the project path has
/// slashes).
pub(super) async fn nested(
    State(gitlab): State<WeakGitlab>,
    rest: Result<Path<String>, PathRejection>,
    body: Body,
) -> Reply {
    let Path(rest) = rest.map_err(|e| AdminError::bad_request(format!("path: {e}")))?;
    let (path, action) = rest
        .rsplit_once('/')
        .ok_or_else(|| AdminError::not_found(format!("no admin route for projects/{rest}")))?;
    let path = path.to_owned();
    match action {
        "commits" => commit(gitlab, path, body).await,
        "tags" => tag(gitlab, path, body).await,
        _ => Err(AdminError::not_found(format!(
            "no admin route for projects/{rest} (want projects/<path>/commits or /tags)"
        ))),
    }
}

fn existing(gitlab: &WeakGitlab, path: &str) -> Result<FakeGitlab, AdminError> {
    check_path(path)?;
    let gitlab = upgrade(gitlab)?;
    if !has_repo(&gitlab, path) {
        return Err(AdminError::not_found(format!(
            "no project {path} with a repository"
        )));
    }
    Ok(gitlab)
}

async fn commit(gitlab: WeakGitlab, path: String, body: Body) -> Reply {
    let req: NewCommit = json_body(body).await?;
    let files = check_files(&req.files)?;
    let gitlab = existing(&gitlab, &path)?;
    let project = path.clone();
    let sha = blocking(move || {
        let files: Vec<(&str, &str)> = files.iter().map(|(k, v)| (&**k, &**v)).collect();
        gitlab.commit(&project, &files)
    })
    .await?
    .map_err(|e| git_failed(&e))?;
    reply(StatusCode::CREATED, &Commit { path, sha })
}

/// A tag name git accepts without surprises: `[A-Za-z0-9._/-]`, no `..`, no leading `-`, `.`
/// or `/`, no trailing `/` or `.lock`.
fn valid_tag(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
        && !name.contains("..")
        && !name.contains("//")
        && !name.starts_with(['-', '.', '/'])
        && !name.ends_with('/')
        && !name.ends_with(".lock")
}

async fn tag(gitlab: WeakGitlab, path: String, body: Body) -> Reply {
    let req: NewTag = json_body(body).await?;
    if !valid_tag(&req.name) {
        return Err(AdminError::bad_request(format!(
            "name: {:?} is not a usable tag name",
            req.name
        )));
    }
    let gitlab = existing(&gitlab, &path)?;
    let project = path.clone();
    let sha = blocking(move || gitlab.create_tag(&project, &req.name))
        .await?
        .map_err(|e| git_failed(&e))?;
    reply(StatusCode::CREATED, &Commit { path, sha })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_names() {
        assert!(valid_tag("v1.2.3"));
        assert!(valid_tag("release/2024-01"));
        for bad in ["", "-x", "a..b", "a b", "x.lock", "/x", "x/", "a//b", ".x"] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }

    #[test]
    fn reserved_namespace() {
        assert!(check_path("_fake/jobs").is_err());
        assert!(check_path("acme").is_err());
        assert!(check_path("acme/widget").is_ok());
    }
}
