//! `cache-archiver` and `cache-extractor`: one cache archive and, optionally, its pre-signed
//! URL. Like GitLab Runner's helper, failures to reach the cache are warnings for the caller
//! to print; only bad flags and unreadable local files are errors.

use anyhow::{Context, Result, bail};
use clap::Args;
use oar_archive::archive::{self, CreateOptions, Format, Limits};
use oar_archive::remote::{Downloaded, Transfer, TransferOptions, redact_url};
use oar_archive::select::{self, PathSpec};
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

#[derive(Debug, Args)]
pub(crate) struct ArchiverArgs {
    /// The local cache archive to write.
    #[arg(long)]
    file: PathBuf,
    /// Paths to cache (globs, `**` allowed); repeatable.
    #[arg(long = "path")]
    paths: Vec<String>,
    /// Paths to leave out (globs); repeatable.
    #[arg(long = "exclude")]
    exclude: Vec<String>,
    /// Add git's untracked files.
    #[arg(long)]
    untracked: bool,
    /// Pre-signed PUT URL to upload the archive to.
    #[arg(long)]
    url: Option<String>,
    /// Request timeout in minutes.
    #[arg(long, env = "CACHE_REQUEST_TIMEOUT", default_value_t = 10)]
    timeout: u64,
    /// fastest, fast, default, slow or slowest.
    #[arg(long, env = "CACHE_COMPRESSION_LEVEL", default_value = "default")]
    compression_level: String,
    /// Archives larger than this many bytes are not uploaded (0: no limit).
    #[arg(long, env = "CACHE_MAX_UPLOADED_ARCHIVE_SIZE", default_value_t = 0)]
    max_uploaded_archive_size: u64,
    /// Accepted for compatibility with GitLab Runner's helper (extra upload headers).
    #[arg(long = "header")]
    headers: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ExtractorArgs {
    /// The local cache archive (downloaded to when --url is given).
    #[arg(long)]
    file: PathBuf,
    /// Pre-signed GET URL of the cache object.
    #[arg(long)]
    url: Option<String>,
    /// Request timeout in minutes.
    #[arg(long, env = "CACHE_REQUEST_TIMEOUT", default_value_t = 10)]
    timeout: u64,
}

fn level(name: &str) -> Result<i32> {
    Ok(match name {
        "fastest" => 1,
        "fast" => 2,
        "" | "default" => 3,
        "slow" => 9,
        "slowest" => 19,
        other => {
            bail!("--compression-level {other:?}: expected fastest, fast, default, slow or slowest")
        }
    })
}

fn transfer(timeout_minutes: u64) -> Result<Transfer> {
    Transfer::new(TransferOptions {
        timeout: Duration::from_secs(timeout_minutes.max(1) * 60),
        ..TransferOptions::default()
    })
    .context("cannot set up the HTTP client")
}

fn parse_url(flag: &str, url: &str) -> Result<Url> {
    Url::parse(url).with_context(|| format!("--{flag}: not a URL"))
}

fn print(line: &str) {
    println!("{line}");
}

pub(crate) async fn archive(a: ArchiverArgs) -> Result<()> {
    if a.paths.is_empty() && !a.untracked {
        bail!("nothing to cache: give --path or --untracked");
    }
    let zstd_level = level(&a.compression_level)?;
    let url = a.url.as_deref().map(|u| parse_url("url", u)).transpose()?;
    let root = std::env::current_dir().context("cannot read the current directory")?;
    let (paths, exclude, untracked, file) = (
        a.paths.clone(),
        a.exclude.clone(),
        a.untracked,
        a.file.clone(),
    );
    let (selection, stats) = tokio::task::spawn_blocking(move || -> Result<_> {
        let selection = select::select(
            &root,
            &PathSpec {
                paths: &paths,
                exclude: &exclude,
                untracked,
            },
        )?;
        if selection.entries.is_empty() {
            return Ok((selection, None));
        }
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let opts = CreateOptions {
            format: Format::TarZst,
            zstd_level,
            ..CreateOptions::default()
        };
        let stats = archive::create(&root, &selection, &file, &opts)?;
        Ok((selection, Some(stats)))
    })
    .await
    .context("archiver task failed")??;
    for w in &selection.warnings {
        print(&format!("WARNING: {w}"));
    }
    let Some(stats) = stats else {
        print("WARNING: No files to cache");
        return Ok(());
    };
    print(&format!(
        "Created cache archive {} ({} files, {} bytes of content)",
        a.file.display(),
        stats.files,
        stats.bytes
    ));
    let Some(url) = url else {
        print(
            "No URL provided, cache will not be uploaded to shared cache server. Cache will be stored only locally.",
        );
        return Ok(());
    };
    let size = std::fs::metadata(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?
        .len();
    if a.max_uploaded_archive_size > 0 && size > a.max_uploaded_archive_size {
        print(&format!(
            "WARNING: cache archive is {size} bytes, over the upload limit of {} bytes; it is stored only locally",
            a.max_uploaded_archive_size
        ));
        return Ok(());
    }
    print(&format!("Uploading cache archive to {}", redact_url(&url)));
    let mut log = |l: &str| print(l);
    match transfer(a.timeout)?.upload(&a.file, &url, &mut log).await {
        Ok(_) => print("Created cache"),
        Err(e) => print(&format!("WARNING: Failed to upload cache: {e}")),
    }
    Ok(())
}

pub(crate) async fn extract(a: ExtractorArgs) -> Result<()> {
    if let Some(u) = a.url.as_deref() {
        let url = parse_url("url", u)?;
        print(&format!("Downloading cache from {}", redact_url(&url)));
        let mut log = |l: &str| print(l);
        match transfer(a.timeout)?.download(&url, &a.file, &mut log).await {
            Ok(Downloaded::File { bytes }) => print(&format!("Downloaded cache ({bytes} bytes)")),
            Ok(Downloaded::NotFound) => {
                print("WARNING: cache not found on the cache server");
            }
            Err(e) => print(&format!("WARNING: Failed to download cache: {e}")),
        }
    }
    if !a.file.exists() {
        print(&format!(
            "WARNING: {}: no cache archive; nothing to extract",
            a.file.display()
        ));
        return Ok(());
    }
    let root = std::env::current_dir().context("cannot read the current directory")?;
    let file = a.file.clone();
    let extracted =
        tokio::task::spawn_blocking(move || archive::extract(&file, &root, &Limits::default()))
            .await
            .context("extractor task failed")?;
    match extracted {
        Ok(stats) => print(&format!(
            "Successfully extracted cache ({} files)",
            stats.files
        )),
        Err(e) => print(&format!("WARNING: Failed to extract cache: {e}")),
    }
    Ok(())
}
