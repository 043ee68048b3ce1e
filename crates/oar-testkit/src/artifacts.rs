//! `POST /api/v4/jobs/:id/artifacts` and `GET /api/v4/jobs/:id/artifacts` (reference §5).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::state::{Shared, State as St};
use crate::types::StoredArtifact;
use crate::util::{self, bad_param, forbidden, message};

/// Largest upload accepted (`max_artifacts_size` stand-in).
const MAX_UPLOAD: u64 = 256 * 1024 * 1024;

/// `Ci::JobArtifact.file_types` (the common ones).
const ARTIFACT_TYPES: &[&str] = &[
    "archive",
    "metadata",
    "trace",
    "junit",
    "sast",
    "dependency_scanning",
    "container_scanning",
    "dast",
    "codequality",
    "license_scanning",
    "performance",
    "metrics",
    "metrics_referee",
    "network_referee",
    "lsif",
    "dotenv",
    "cobertura",
    "terraform",
    "accessibility",
    "cluster_applications",
    "secret_detection",
    "requirements",
    "coverage_fuzzing",
    "browser_performance",
    "load_performance",
    "api_fuzzing",
    "cluster_image_scanning",
    "cyclonedx",
    "requirements_v2",
    "annotations",
    "repository_xray",
    "jacoco",
];

/// `Ci::JobArtifact.file_formats`.
const ARTIFACT_FORMATS: &[&str] = &["raw", "zip", "gzip"];

/// The multipart form, read completely.
#[derive(Default)]
struct Form {
    fields: HashMap<String, String>,
    file: Option<(String, Vec<u8>)>,
}

async fn read_form(headers: &HeaderMap, body: Body) -> Result<Form, Response> {
    let ct = util::header_str(headers, "content-type").unwrap_or("");
    let boundary = multer::parse_boundary(ct).map_err(|_| {
        message(
            StatusCode::BAD_REQUEST,
            "400 Bad request - multipart/form-data expected",
        )
    })?;
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(MAX_UPLOAD));
    let mut mp =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut form = Form::default();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(multer::Error::StreamSizeExceeded { .. }) => {
                return Err(message(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "413 Request Entity Too Large",
                ));
            }
            Err(e) => {
                return Err(message(
                    StatusCode::BAD_REQUEST,
                    &format!("400 Bad request - {e}"),
                ));
            }
        };
        let name = field.name().unwrap_or("").to_owned();
        let filename = field.file_name().map(str::to_owned);
        let data = field
            .bytes()
            .await
            .map_err(|e| message(StatusCode::BAD_REQUEST, &format!("400 Bad request - {e}")))?;
        match (name.as_str(), filename) {
            ("file", Some(fname)) => form.file = Some((fname, data.to_vec())),
            ("file", None) => form.file = Some(("artifacts".into(), data.to_vec())),
            _ => {
                form.fields
                    .insert(name, String::from_utf8_lossy(&data).into_owned());
            }
        }
    }
    Ok(form)
}

/// Job exists, `token` is its token, job is executing.
fn authenticate(st: &St, id: i64, token: &str) -> Result<(), Response> {
    let Some(job) = st.jobs.get(&id) else {
        return Err(forbidden());
    };
    if job.token != token {
        return Err(forbidden());
    }
    if !job.state.is_executing() {
        return Err(util::job_forbidden(job.state.as_str()));
    }
    Ok(())
}

/// `POST /api/v4/jobs/:id/artifacts`.
pub(crate) async fn upload(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let id = match util::parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let q = |k: &str| util::query_param(query.as_deref(), k);
    let header_token = util::header_str(&headers, "job-token").map(str::to_owned);
    // Fail fast (before reading the archive) when the header or query token is wrong.
    if let Some(t) = q("token").or_else(|| header_token.clone())
        && let Err(r) = shared.read(|st| authenticate(st, id, &t))
    {
        return r;
    }
    let form = match read_form(&headers, body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let param = |k: &str| form.fields.get(k).cloned().or_else(|| q(k));
    let token = param("token").or(header_token).unwrap_or_default();
    let Some((filename, data)) = form.file.clone() else {
        return bad_param("file is missing");
    };
    let artifact_type = param("artifact_type").unwrap_or_else(|| "archive".into());
    if !ARTIFACT_TYPES.contains(&artifact_type.as_str()) {
        return bad_param("artifact_type does not have a valid value");
    }
    let artifact_format = param("artifact_format").unwrap_or_else(|| "zip".into());
    if !ARTIFACT_FORMATS.contains(&artifact_format.as_str()) {
        return bad_param("artifact_format does not have a valid value");
    }
    let artifact = StoredArtifact {
        filename,
        artifact_type,
        artifact_format,
        expire_in: param("expire_in"),
        accessibility: param("accessibility"),
        data,
    };
    let artifact_type = artifact.artifact_type.clone();
    let check = |st: &St| -> Result<(), Response> {
        authenticate(st, id, &token)?;
        let duplicate = st.jobs.get(&id).is_some_and(|job| {
            job.artifacts
                .iter()
                .any(|a| a.artifact_type == artifact_type)
        });
        if duplicate {
            return Err(message(
                StatusCode::BAD_REQUEST,
                "another artifact of the same type already exists",
            ));
        }
        Ok(())
    };
    if let Err(r) = shared.read(check) {
        return r;
    }
    // The copy on disk before the (re-checked) store, so the bytes are never held twice.
    if let Some(path) = disk_path(&shared, id, &artifact) {
        keep_copy(&path, &artifact.data).await;
    }
    let stored = shared.write(|st| {
        check(st)?;
        let Some(job) = st.jobs.get_mut(&id) else {
            return Err(forbidden());
        };
        job.artifacts.push(artifact);
        Ok(())
    });
    match stored {
        Ok(()) => util::status_body(StatusCode::CREATED),
        Err(r) => r,
    }
}

/// Where the copy of an uploaded artifact goes: `artifacts/<job id>/<artifact type>/<file
/// name>`, the file name reduced to its last component (`None` if nothing usable is left).
fn disk_path(shared: &Shared, id: i64, a: &StoredArtifact) -> Option<std::path::PathBuf> {
    let name = std::path::Path::new(&a.filename).file_name()?.to_str()?;
    // The type is one of ARTIFACT_TYPES, a plain word.
    Some(
        shared
            .artifacts
            .join(id.to_string())
            .join(&a.artifact_type)
            .join(name),
    )
}

/// Write the on-disk copy; a failure is logged, the upload stands (the job holds the data).
async fn keep_copy(path: &std::path::Path, data: &[u8]) {
    let written = async {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::write(path, data).await
    };
    if let Err(e) = written.await {
        tracing::warn!(path = %path.display(), error = %e, "could not keep a copy of the artifact");
    }
}

/// `GET /api/v4/jobs/:id/artifacts`: with the job's own token or the token of an executing job
/// of the same project (the dependent-job path).
pub(crate) async fn download(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let id = match util::parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let token = util::query_param(query.as_deref(), "token")
        .or_else(|| util::query_param(query.as_deref(), "job_token"))
        .or_else(|| util::header_str(&headers, "job-token").map(str::to_owned));
    let Some(token) = token else {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    };
    let found = shared.read(|st| {
        let Some(job) = st.jobs.get(&id) else {
            return Err(forbidden());
        };
        let allowed = job.token == token
            || st.jobs.values().any(|j| {
                j.token == token
                    && j.state.is_executing()
                    && j.spec.project_path == job.spec.project_path
            });
        if !allowed {
            return Err(forbidden());
        }
        job.artifacts
            .iter()
            .find(|a| a.artifact_type == "archive")
            .cloned()
            .ok_or_else(|| message(StatusCode::NOT_FOUND, "404 Not Found"))
    });
    let port = shared
        .base_url
        .rsplit(':')
        .next()
        .unwrap_or("80")
        .to_owned();
    let scheme = shared
        .base_url
        .split_once("://")
        .map_or("http", |(s, _)| s)
        .to_owned();
    let redirect = shared.write(|st| {
        if !st.settings.artifacts_in_object_storage {
            return None;
        }
        let link = util::random_hex(32);
        st.settings.storage_links.insert(link.clone(), id);
        Some(format!(
            "{scheme}://localhost:{port}/storage/artifacts/{link}"
        ))
    });
    if let (Ok(_), Some(location)) = (&found, redirect) {
        let mut resp = StatusCode::FOUND.into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return resp;
    }
    match found {
        Ok(a) => artifact_response(a),
        Err(r) => r,
    }
}

/// `GET /storage/artifacts/:link`: the "object storage" side of a redirected download. The
/// link itself is the authorisation; a `JOB-TOKEN` header here is a leak.
pub(crate) async fn storage(
    State(shared): State<Arc<Shared>>,
    Path(link): Path<String>,
    headers: HeaderMap,
) -> Response {
    let leaked = headers.contains_key("job-token");
    let found = shared.write(|st| {
        if leaked {
            st.violation(format!(
                "object storage received a JOB-TOKEN header for link {link}"
            ));
        }
        let id = st.settings.storage_links.get(&link).copied()?;
        st.jobs
            .get(&id)?
            .artifacts
            .iter()
            .find(|a| a.artifact_type == "archive")
            .cloned()
    });
    match found {
        Some(a) => artifact_response(a),
        None => (
            StatusCode::FORBIDDEN,
            "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code></Error>",
        )
            .into_response(),
    }
}

fn artifact_response(a: StoredArtifact) -> Response {
    {
        {
            let mut resp = (StatusCode::OK, a.data).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Ok(v) =
                HeaderValue::from_str(&format!("attachment; filename=\"{}\"", a.filename))
            {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            resp
        }
    }
}
