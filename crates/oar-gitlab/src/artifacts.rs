//! Artifact upload and download.

use crate::client::{Client, error_message, unexpected};
use crate::error::Error;
use crate::types::Token;
use futures::TryStreamExt;
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// What to upload.
#[derive(Debug, Clone)]
pub struct ArtifactUpload<'a> {
    /// Job id.
    pub job_id: i64,
    /// Job token.
    pub token: &'a Token,
    /// The archive on disk.
    pub file: &'a Path,
    /// File name sent in the multipart part.
    pub file_name: &'a str,
    /// `zip`, `gzip`, `raw`, ...
    pub format: &'a str,
    /// `archive`, `junit`, ...
    pub artifact_type: &'a str,
    /// `1 week`, or empty.
    pub expire_in: &'a str,
    /// Whole-request timeout.
    pub timeout: Duration,
}

/// Why an upload failed, for the job log.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Over the instance's `max_artifacts_size`.
    #[error("artifacts are too large for GitLab (413 Request Entity Too Large)")]
    TooLarge,
    /// Forbidden (job not running or bad token).
    #[error("GitLab refused the upload (403 Forbidden): {0}")]
    Forbidden(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] Error),
}

/// Whether a failed download is worth another try (not an authorisation or missing-file
/// answer).
fn download_retryable(e: &Error) -> bool {
    match e {
        Error::Forbidden { .. } => false,
        Error::Status { status, .. } => !matches!(status, 400..=499) || *status == 429,
        Error::File { .. } => false,
        _ => true,
    }
}

impl Client {
    /// Uploads an artifact archive (`POST /jobs/:id/artifacts`), streaming it from disk.
    /// Retries as the transport does; 413 and 403 are not retried.
    pub async fn upload_artifacts(&self, up: &ArtifactUpload<'_>) -> Result<(), UploadError> {
        const EP: &str = "upload_artifacts";
        let path = format!("jobs/{}/artifacts", up.job_id);
        let mut query: Vec<(&str, &str)> = Vec::new();
        for (k, v) in [
            ("artifact_format", up.format),
            ("artifact_type", up.artifact_type),
            ("expire_in", up.expire_in),
        ] {
            if !v.is_empty() {
                query.push((k, v));
            }
        }
        for attempt in 0..3u32 {
            let file = tokio::fs::File::open(up.file)
                .await
                .map_err(|e| Error::File {
                    path: up.file.display().to_string(),
                    source: e,
                })?;
            let len = file.metadata().await.map(|m| m.len()).ok();
            let stream = tokio_util::io::ReaderStream::new(file);
            let body = reqwest::Body::wrap_stream(stream);
            let part = match len {
                Some(n) => Part::stream_with_length(body, n),
                None => Part::stream(body),
            }
            .file_name(up.file_name.to_string())
            .mime_str("application/octet-stream")
            .map_err(Error::Client)?;
            let form = Form::new().part("file", part);
            let result = self
                .request(Method::POST, &path)
                .query(&query)
                .timeout(up.timeout)
                .header("JOB-TOKEN", up.token.expose())
                .multipart(form)
                .send()
                .await;
            let retry_wait = crate::retry::API_BACKOFF.delay(attempt);
            match result {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    self.observe(EP, status);
                    match status {
                        200 | 201 => return Ok(()),
                        413 => return Err(UploadError::TooLarge),
                        403 => return Err(UploadError::Forbidden(error_message(resp).await)),
                        s if s >= 500 && attempt < 2 => {
                            tracing::warn!(status = s, "artifact upload failed, retrying");
                        }
                        s => {
                            return Err(UploadError::Other(Error::Status {
                                endpoint: EP,
                                status: s,
                                message: error_message(resp).await,
                            }));
                        }
                    }
                }
                Err(e) if attempt < 2 => {
                    self.observe(EP, 0);
                    tracing::warn!(error = %e, "artifact upload failed, retrying");
                }
                Err(e) => {
                    return Err(UploadError::Other(Error::Transport {
                        endpoint: EP,
                        source: e,
                    }));
                }
            }
            tokio::time::sleep(retry_wait).await;
        }
        Err(UploadError::Other(Error::Status {
            endpoint: EP,
            status: 0,
            message: "gave up".into(),
        }))
    }

    /// Downloads a job's artifacts archive to `dest` (`GET /jobs/:id/artifacts`), following
    /// redirects to object storage by hand so that the `JOB-TOKEN` header never leaves GitLab's
    /// host. The file is written to a temporary sibling and renamed when complete. Generic
    /// failures are retried twice; 401, 403 and 404 are not. Returns the size in bytes.
    pub async fn download_artifacts(
        &self,
        job_id: i64,
        token: &Token,
        direct_download: bool,
        dest: &Path,
    ) -> Result<u64, Error> {
        let mut attempt = 0u32;
        loop {
            match self
                .download_artifacts_once(job_id, token, direct_download, dest)
                .await
            {
                Ok(n) => return Ok(n),
                Err(e) if attempt < 2 && download_retryable(&e) => {
                    tracing::warn!(job_id, error = %e, "artifact download failed, retrying");
                    tokio::time::sleep(crate::retry::API_BACKOFF.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn download_artifacts_once(
        &self,
        job_id: i64,
        token: &Token,
        direct_download: bool,
        dest: &Path,
    ) -> Result<u64, Error> {
        const EP: &str = "download_artifacts";
        let path = format!("jobs/{job_id}/artifacts?direct_download={direct_download}");
        let mut resp = self
            .send(EP, || {
                self.request(Method::GET, &path)
                    .header("JOB-TOKEN", token.expose())
            })
            .await?;
        let gitlab_origin = self.base().origin();
        let mut hops = 0;
        while matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) && hops < 5 {
            hops += 1;
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| resp.url().join(l).ok())
                .ok_or_else(|| Error::Decode {
                    endpoint: EP,
                    reason: "redirect without a usable Location header".into(),
                })?;
            let mut req = self.raw().get(location.clone());
            if location.origin() == gitlab_origin {
                req = req.header("JOB-TOKEN", token.expose());
            }
            resp = req.send().await.map_err(|e| Error::Transport {
                endpoint: EP,
                source: e,
            })?;
        }
        if resp.status().as_u16() != 200 {
            return Err(unexpected(EP, resp).await);
        }
        let file_err = |e| Error::File {
            path: dest.display().to_string(),
            source: e,
        };
        let part = dest.with_extension("part");
        let mut file = tokio::fs::File::create(&part).await.map_err(file_err)?;
        let mut stream = resp.bytes_stream();
        let mut total = 0u64;
        let copied: Result<(), Error> = async {
            while let Some(chunk) = stream.try_next().await.map_err(|e| Error::Transport {
                endpoint: EP,
                source: e,
            })? {
                total += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(file_err)?;
            }
            file.flush().await.map_err(file_err)?;
            file.sync_all().await.map_err(file_err)
        }
        .await;
        drop(file);
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
        tokio::fs::rename(&part, dest).await.map_err(file_err)?;
        Ok(total)
    }

    /// A plain GET of any URL (used for following object-storage links).
    pub fn http(&self) -> &reqwest::Client {
        self.raw()
    }
}
