//! Job caches through presigned URLs against a real S3-compatible server that checks SigV4
//! ([`oar_testkit::s3::S3Server`]): save in one pipeline, restore in another, policies, wrong
//! credentials, fallback keys, GitLab Runner zips, corrupt objects, object naming.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oar_archive::archive::{self, CreateOptions, Format};
use oar_archive::cache::{
    self, CacheEnv, CacheSource, CacheSpec, Policy, RemoteSave, RemoteUrls, RestoreOutcome,
    SaveOutcome,
};
use oar_archive::remote::TransferOptions;
use oar_archive::s3::{
    CacheNaming, IamCredentials, PresignMethod, S3Authentication, S3Presigner, S3Settings,
    object_name,
};
use oar_archive::select::{PathSpec, select};
use oar_testkit::s3::S3Server;

const BUCKET: &str = "oar-cache";
const TOKEN: &str = "t1_abcdef";
const PROJECT: u64 = 17;
const HOUR: Duration = Duration::from_secs(3600);

fn settings(s3: &S3Server, secret: &str) -> S3Settings {
    S3Settings {
        server_address: Some(s3.server_address()),
        access_key: Some(s3.access_key().to_owned()),
        secret_key: Some(secret.into()),
        bucket_name: s3.bucket().to_owned(),
        insecure: true,
        authentication: S3Authentication::AccessKey,
        ..S3Settings::default()
    }
}

fn presigner(s3: &S3Server) -> S3Presigner {
    S3Presigner::new(&settings(s3, s3.secret_key())).expect("presigner")
}

/// One pipeline's view: a fresh project directory and a fresh local cache directory (as in a
/// new pod), with URLs for `keys` (the first one also gets a PUT URL).
struct Pipeline {
    _tmp: tempfile::TempDir,
    project: PathBuf,
    env: CacheEnv,
    log: Arc<Mutex<Vec<String>>>,
}

impl Pipeline {
    fn local(&self) -> PathBuf {
        self.env.local_dir.clone()
    }

    fn logger(&self) -> impl FnMut(&str) + Send + 'static {
        let log = self.log.clone();
        move |line: &str| log.lock().unwrap().push(line.to_owned())
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn text(&self) -> String {
        self.lines().join("\n")
    }

    async fn save(&self, spec: &CacheSpec) -> SaveOutcome {
        let mut log = self.logger();
        cache::save(spec, &self.project, &self.env, &mut log).await
    }

    async fn restore(&self, spec: &CacheSpec) -> RestoreOutcome {
        let mut log = self.logger();
        cache::restore(spec, &self.project, &self.env, &mut log).await
    }
}

async fn pipeline(
    presigner: Option<&S3Presigner>,
    naming: &CacheNaming,
    keys: &[&str],
) -> Pipeline {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("builds/acme/widget");
    std::fs::create_dir_all(&project).unwrap();
    let mut env = CacheEnv::local(tmp.path().join("cache/acme/widget"));
    env.transfer = TransferOptions {
        attempts: 2,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        timeout: Duration::from_secs(30),
    };
    env.threads = 1;
    if let Some(presigner) = presigner {
        for (i, key) in keys.iter().enumerate() {
            let urls = presigner
                .cache_urls(naming, TOKEN, PROJECT, key, HOUR, i == 0)
                .await
                .unwrap()
                .expect("an object name");
            env.remote.insert((*key).to_owned(), urls);
        }
    }
    Pipeline {
        _tmp: tmp,
        project,
        env,
        log: Arc::default(),
    }
}

fn spec(key: &str) -> CacheSpec {
    CacheSpec {
        key: key.to_owned(),
        paths: vec!["vendor/".into(), "target/bin".into()],
        ..CacheSpec::default()
    }
}

/// A project with cacheable files (and some that are not cached).
fn populate(project: &Path) {
    let write = |rel: &str, data: &[u8]| {
        let path = project.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    };
    write("vendor/lib/a.rs", b"pub fn a() {}\n");
    write(
        "vendor/lib/big.bin",
        &(0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    );
    write("vendor/empty", b"");
    write("target/bin", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(
        project.join("target/bin"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::create_dir_all(project.join("vendor/emptydir")).unwrap();
    std::os::unix::fs::symlink("lib/a.rs", project.join("vendor/link")).unwrap();
    write("src/main.rs", b"fn main() {}\n");
}

/// Every path under `root/rel` with what identifies it: kind, mode, content or link target.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                walk(root, &path, out);
                "dir".to_owned()
            } else {
                let data = std::fs::read(&path).unwrap();
                format!(
                    "file {:o} {} bytes, sum {}",
                    meta.permissions().mode() & 0o7777,
                    data.len(),
                    data.iter().map(|b| u64::from(*b)).sum::<u64>()
                )
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn cached_part(tree: BTreeMap<String, String>) -> BTreeMap<String, String> {
    tree.into_iter()
        .filter(|(k, _)| k.starts_with("vendor") || k.starts_with("target"))
        .collect()
}

fn object(naming: &CacheNaming, key: &str) -> String {
    object_name(naming, TOKEN, PROJECT, key).unwrap()
}

fn assert_no_signature_in_log(p: &Pipeline) {
    let text = p.text();
    assert!(!text.contains("X-Amz-Signature"), "{text}");
    assert!(!text.contains("X-Amz-Credential"), "{text}");
}

#[tokio::test]
async fn saved_in_one_pipeline_restored_in_the_next() {
    let s3 = S3Server::start(BUCKET).await.unwrap();
    let presigner = presigner(&s3);
    let naming = CacheNaming::default();

    let first = pipeline(Some(&presigner), &naming, &["deps-main"]).await;
    populate(&first.project);
    let saved = first.save(&spec("deps-main")).await;
    let SaveOutcome::Saved {
        key,
        stats,
        remote: RemoteSave::Uploaded { bytes },
    } = &saved
    else {
        panic!("{saved:?}\n{}", first.text());
    };
    assert_eq!(key, "deps-main");
    assert_eq!(stats.files, 4, "{stats:?}");
    let obj = object(&naming, "deps-main");
    assert_eq!(obj, format!("runner/{TOKEN}/project/{PROJECT}/deps-main"));
    let stored = s3.get_object(&obj).expect("object uploaded");
    assert_eq!(stored.len() as u64, *bytes);
    assert_eq!(
        stored,
        std::fs::read(first.local().join("deps-main/cache.tar.zst")).unwrap()
    );
    assert_eq!(
        first.lines(),
        vec![
            "Creating cache deps-main...".to_owned(),
            format!("Uploading cache.tar.zst to {}{BUCKET}/{obj}", s3.url()),
            "Created cache".to_owned(),
        ]
    );

    // A new pod: nothing local, everything comes from S3.
    let second = pipeline(Some(&presigner), &naming, &["deps-main"]).await;
    std::fs::create_dir_all(second.project.join("src")).unwrap();
    let restored = second.restore(&spec("deps-main")).await;
    assert!(
        matches!(&restored, RestoreOutcome::Restored { key, source: CacheSource::Remote, .. } if key == "deps-main"),
        "{restored:?}\n{}",
        second.text()
    );
    assert_eq!(
        cached_part(tree(&second.project)),
        cached_part(tree(&first.project))
    );
    assert!(
        !second.project.join("src/main.rs").exists(),
        "only cached paths travel"
    );
    assert_eq!(
        second.lines(),
        vec![
            "Checking cache for deps-main...".to_owned(),
            format!("Downloading cache from {}{BUCKET}/{obj}", s3.url()),
            "Successfully extracted cache".to_owned(),
        ]
    );
    assert!(
        second.local().join("deps-main/cache.tar.zst").is_file(),
        "kept locally"
    );
    assert_no_signature_in_log(&first);
    assert_no_signature_in_log(&second);
}

#[tokio::test]
async fn temporary_credentials_with_a_session_token_work() {
    let s3 = S3Server::start(BUCKET).await.unwrap();
    let mut with_token = settings(&s3, s3.secret_key());
    with_token.session_token = Some("FwoGZXIvYXdzEJr//////////session".into());
    let presigner = S3Presigner::new(&with_token).unwrap();
    let naming = CacheNaming::default();

    let first = pipeline(Some(&presigner), &naming, &["k"]).await;
    populate(&first.project);
    let saved = first.save(&spec("k")).await;
    assert!(
        matches!(
            saved,
            SaveOutcome::Saved {
                remote: RemoteSave::Uploaded { .. },
                ..
            }
        ),
        "{saved:?}"
    );
    let second = pipeline(Some(&presigner), &naming, &["k"]).await;
    let restored = second.restore(&spec("k")).await;
    assert!(
        matches!(restored, RestoreOutcome::Restored { .. }),
        "{restored:?}"
    );
}

#[tokio::test]
async fn pull_policy_never_uploads_and_push_policy_never_downloads() {
    let s3 = S3Server::start(BUCKET).await.unwrap();
    let presigner = presigner(&s3);
    let naming = CacheNaming::default();
    let p = pipeline(Some(&presigner), &naming, &["main"]).await;
    populate(&p.project);

    let pull = CacheSpec {
        policy: Policy::Pull,
        ..spec("main")
    };
    assert_eq!(p.save(&pull).await, SaveOutcome::SkippedByPolicy);
    assert!(s3.object_keys().is_empty(), "{:?}", s3.object_keys());
    assert!(s3.requests().is_empty(), "{:?}", s3.requests());
    assert!(!p.local().join("main").exists(), "no local archive either");
    assert_eq!(p.lines(), vec!["Not uploading cache main due to policy"]);

    let push = CacheSpec {
        policy: Policy::Push,
        ..spec("main")
    };
    assert_eq!(p.restore(&push).await, RestoreOutcome::SkippedByPolicy);
    assert!(s3.requests().is_empty(), "{:?}", s3.requests());
    assert_eq!(
        p.lines().last().unwrap(),
        "Not downloading cache main due to policy"
    );

    // Pull does restore; nothing there yet.
    assert_eq!(p.restore(&pull).await, RestoreOutcome::NotFound);
    let requests = s3.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (requests[0].method.as_str(), requests[0].status),
        ("GET", 404)
    );
}

#[tokio::test]
async fn wrong_secret_key_is_a_warning_naming_signature_does_not_match() {
    let s3 = S3Server::start(BUCKET).await.unwrap();
    let wrong = S3Presigner::new(&settings(&s3, "not-the-secret-key")).unwrap();
    let naming = CacheNaming::default();

    let p = pipeline(Some(&wrong), &naming, &["main"]).await;
    populate(&p.project);
    let saved = p.save(&spec("main")).await;
    assert!(saved.is_warning(), "{saved:?}");
    let SaveOutcome::Saved {
        remote: RemoteSave::Failed { warning },
        ..
    } = &saved
    else {
        panic!("{saved:?}");
    };
    assert!(
        warning.contains("403 Forbidden: SignatureDoesNotMatch"),
        "{warning}"
    );
    let text = p.text();
    assert!(
        text.contains("WARNING: uploading cache: PUT http://"),
        "{text}"
    );
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    assert_eq!(p.lines().last().unwrap(), "Failed to create cache");
    assert!(s3.object_keys().is_empty());
    assert!(
        p.local().join("main/cache.tar.zst").is_file(),
        "the local cache is still written"
    );
    assert_eq!(s3.requests().len(), 1, "a 403 is not retried");

    // Restoring with a wrong signature: a warning, the job goes on with a clean project.
    let q = pipeline(Some(&wrong), &naming, &["main"]).await;
    let restored = q.restore(&spec("main")).await;
    assert!(restored.is_warning(), "{restored:?}");
    let RestoreOutcome::Failed { warnings } = &restored else {
        panic!("{restored:?}")
    };
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("SignatureDoesNotMatch"),
        "{warnings:?}"
    );
    let lines = q.lines();
    assert_eq!(lines[0], "Checking cache for main...");
    assert!(
        lines[2].starts_with("WARNING: downloading cache: GET http://"),
        "{lines:?}"
    );
    assert!(lines[2].contains("SignatureDoesNotMatch"), "{lines:?}");
    assert_eq!(lines[3], "Failed to extract cache");
    assert!(tree(&q.project).is_empty());
    assert_no_signature_in_log(&p);
    assert_no_signature_in_log(&q);
}

#[tokio::test]
async fn fallback_keys_are_tried_in_order() {
    let s3 = S3Server::start(BUCKET).await.unwrap();
    let presigner = presigner(&s3);
    let naming = CacheNaming::default();

    // Only "second" exists remotely (saved by an earlier pipeline).
    let earlier = pipeline(Some(&presigner), &naming, &["second"]).await;
    populate(&earlier.project);
    assert!(matches!(
        earlier.save(&spec("second")).await,
        SaveOutcome::Saved { .. }
    ));
    // "third" exists too, but is never reached.
    let other = pipeline(Some(&presigner), &naming, &["third"]).await;
    std::fs::create_dir_all(other.project.join("vendor")).unwrap();
    std::fs::write(other.project.join("vendor/third"), "3").unwrap();
    assert!(matches!(
        other.save(&spec("third")).await,
        SaveOutcome::Saved { .. }
    ));

    let p = pipeline(Some(&presigner), &naming, &["first", "second", "third"]).await;
    let with_fallbacks = CacheSpec {
        fallback_keys: vec!["second".into(), "third".into()],
        ..spec("first")
    };
    let before = s3.requests().len();
    let restored = p.restore(&with_fallbacks).await;
    assert!(
        matches!(&restored, RestoreOutcome::Restored { key, .. } if key == "second"),
        "{restored:?}\n{}",
        p.text()
    );
    assert!(p.project.join("vendor/lib/a.rs").is_file());
    assert!(!p.project.join("vendor/third").exists());
    let first_url = format!("{}{BUCKET}/{}", s3.url(), object(&naming, "first"));
    assert_eq!(
        p.lines(),
        vec![
            "Checking cache for first...".to_owned(),
            format!("Downloading cache from {first_url}"),
            format!("WARNING: cache not found at {first_url}"),
            "Failed to extract cache".to_owned(),
            "Checking cache for second...".to_owned(),
            format!(
                "Downloading cache from {}{BUCKET}/{}",
                s3.url(),
                object(&naming, "second")
            ),
            "Successfully extracted cache".to_owned(),
        ]
    );
    let gets: Vec<(String, u16)> = s3.requests()[before..]
        .iter()
        .map(|r| (r.path.clone(), r.status))
        .collect();
    assert_eq!(
        gets,
        vec![
            (format!("/{BUCKET}/{}", object(&naming, "first")), 404),
            (format!("/{BUCKET}/{}", object(&naming, "second")), 200),
        ]
    );
}

/// A GitLab Runner-style cache: a zip archive under the same object name.
fn gitlab_runner_zip() -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("p");
    std::fs::create_dir_all(root.join("vendor/from-gitlab")).unwrap();
    std::fs::write(
        root.join("vendor/from-gitlab/file.txt"),
        "zipped by gitlab-runner\n",
    )
    .unwrap();
    let paths = vec!["vendor/".to_owned()];
    let selection = select(
        &root,
        &PathSpec {
            paths: &paths,
            exclude: &[],
            untracked: false,
        },
    )
    .unwrap();
    let out = tmp.path().join("cache.zip");
    archive::create(
        &root,
        &selection,
        &out,
        &CreateOptions {
            format: Format::Zip,
            zstd_level: 3,
            threads: 1,
        },
    )
    .unwrap();
    let bytes = std::fs::read(out).unwrap();
    assert!(bytes.starts_with(b"PK\x03\x04"));
    bytes
}

#[tokio::test]
async fn a_gitlab_runner_zip_is_restored() {
    let s3 = S3Server::start(BUCKET).await.unwrap();
    let presigner = presigner(&s3);
    let naming = CacheNaming::default();
    s3.put_object(&object(&naming, "legacy"), &gitlab_runner_zip())
        .unwrap();

    let p = pipeline(Some(&presigner), &naming, &["legacy"]).await;
    let restored = p.restore(&spec("legacy")).await;
    assert!(
        matches!(
            restored,
            RestoreOutcome::Restored {
                source: CacheSource::Remote,
                ..
            }
        ),
        "{restored:?}\n{}",
        p.text()
    );
    assert_eq!(
        std::fs::read_to_string(p.project.join("vendor/from-gitlab/file.txt")).unwrap(),
        "zipped by gitlab-runner\n"
    );
    // Kept locally under the name of its format.
    assert!(p.local().join("legacy/cache.zip").is_file());
    assert!(!p.local().join("legacy/cache.tar.zst").exists());

    // Saving replaces it with Oar's archive, locally and remotely.
    populate(&p.project);
    assert!(matches!(
        p.save(&spec("legacy")).await,
        SaveOutcome::Saved {
            remote: RemoteSave::Uploaded { .. },
            ..
        }
    ));
    assert!(!p.local().join("legacy/cache.zip").exists());
    assert!(
        s3.get_object(&object(&naming, "legacy"))
            .unwrap()
            .starts_with(&[0x28, 0xB5, 0x2F, 0xFD])
    );
}

#[tokio::test]
async fn a_local_gitlab_runner_zip_is_restored_without_a_distributed_cache() {
    let p = pipeline(None, &CacheNaming::default(), &[]).await;
    let dir = p.local().join("legacy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cache.zip"), gitlab_runner_zip()).unwrap();
    let restored = p.restore(&spec("legacy")).await;
    assert!(
        matches!(
            restored,
            RestoreOutcome::Restored {
                source: CacheSource::Local,
                ..
            }
        ),
        "{restored:?}"
    );
    assert!(p.project.join("vendor/from-gitlab/file.txt").is_file());
    assert_eq!(
        p.lines(),
        vec![
            "Checking cache for legacy...",
            "No URL provided, cache will not be downloaded from shared cache server. Instead a local version of cache will be extracted.",
            "Successfully extracted cache",
        ]
    );
}

#[tokio::test]
async fn a_corrupt_object_is_a_warning_and_a_fallback_still_works() {
    let s3 = S3Server::start(BUCKET).await.unwrap();
    let presigner = presigner(&s3);
    let naming = CacheNaming::default();
    // A zstd frame header followed by garbage, and something that is no archive at all.
    let mut corrupt = vec![0x28, 0xB5, 0x2F, 0xFD];
    corrupt.extend((0..5000u32).map(|i| (i * 7 % 256) as u8));
    s3.put_object(&object(&naming, "corrupt"), &corrupt)
        .unwrap();
    s3.put_object(&object(&naming, "junk"), b"<html>not an archive</html>")
        .unwrap();

    let p = pipeline(Some(&presigner), &naming, &["corrupt", "junk"]).await;
    let both = CacheSpec {
        fallback_keys: vec!["junk".into()],
        ..spec("corrupt")
    };
    let restored = p.restore(&both).await;
    let RestoreOutcome::Failed { warnings } = &restored else {
        panic!("{restored:?}\n{}", p.text())
    };
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("extracting cache"), "{warnings:?}");
    assert!(
        warnings[1].contains("downloaded cache is unusable"),
        "{warnings:?}"
    );
    let lines = p.lines();
    assert_eq!(
        lines
            .iter()
            .filter(|l| *l == "Failed to extract cache")
            .count(),
        2,
        "{lines:?}"
    );
    assert!(
        !p.local().join("junk").join("cache.download").exists(),
        "junk download removed"
    );

    // Pipeline with a good fallback after the corrupt key: restored from the fallback.
    let good = pipeline(Some(&presigner), &naming, &["good"]).await;
    populate(&good.project);
    assert!(matches!(
        good.save(&spec("good")).await,
        SaveOutcome::Saved { .. }
    ));
    let q = pipeline(Some(&presigner), &naming, &["corrupt", "good"]).await;
    let restored = q
        .restore(&CacheSpec {
            fallback_keys: vec!["good".into()],
            ..spec("corrupt")
        })
        .await;
    assert!(
        matches!(&restored, RestoreOutcome::Restored { key, .. } if key == "good"),
        "{restored:?}"
    );
    assert_eq!(
        cached_part(tree(&q.project)),
        cached_part(tree(&good.project))
    );
}

#[tokio::test]
async fn object_names_with_and_without_shared_and_path() {
    let s3 = S3Server::start(BUCKET).await.unwrap();
    let presigner = presigner(&s3);
    let cases = [
        (
            CacheNaming {
                path: None,
                shared: false,
            },
            format!("runner/{TOKEN}/project/{PROJECT}/build/main"),
        ),
        (
            CacheNaming {
                path: None,
                shared: true,
            },
            format!("project/{PROJECT}/build/main"),
        ),
        (
            CacheNaming {
                path: Some("ci-cache".into()),
                shared: true,
            },
            format!("ci-cache/project/{PROJECT}/build/main"),
        ),
        (
            CacheNaming {
                path: Some("/ci-cache/".into()),
                shared: false,
            },
            format!("ci-cache/runner/{TOKEN}/project/{PROJECT}/build/main"),
        ),
    ];
    for (naming, expected) in &cases {
        let p = pipeline(Some(&presigner), naming, &["build/main"]).await;
        populate(&p.project);
        let saved = p.save(&spec("build/main")).await;
        assert!(
            matches!(
                saved,
                SaveOutcome::Saved {
                    remote: RemoteSave::Uploaded { .. },
                    ..
                }
            ),
            "{saved:?}"
        );
        assert!(
            s3.get_object(expected).is_some(),
            "{expected} not in {:?}",
            s3.object_keys()
        );
        assert!(p.local().join("build/main/cache.tar.zst").is_file());
    }
    assert_eq!(s3.object_keys().len(), cases.len());
}

#[tokio::test]
async fn keys_are_sanitized_like_gitlab_runner() {
    let s3 = S3Server::start(BUCKET).await.unwrap();
    let presigner = presigner(&s3);
    let naming = CacheNaming::default();
    let p = pipeline(Some(&presigner), &naming, &["feature/x"]).await;
    populate(&p.project);
    let saved = p.save(&spec("feature%2Fy/../x  ")).await;
    assert!(
        matches!(&saved, SaveOutcome::Saved { key, .. } if key == "feature/x"),
        "{saved:?}"
    );
    assert_eq!(
        p.lines()[0],
        r#"WARNING: cache key "feature%2Fy/../x  " sanitized to "feature/x""#
    );
    assert!(s3.get_object(&object(&naming, "feature/x")).is_some());

    let bad = p.save(&spec("../..")).await;
    assert!(matches!(bad, SaveOutcome::Skipped { .. }), "{bad:?}");
    let lines = p.lines();
    assert_eq!(
        lines[lines.len() - 2..],
        [
            r#"WARNING: cache key "../.." could not be sanitized"#,
            "Skipping cache archiving due to empty cache key"
        ]
    );
    let before = p.lines().len();
    let fallbacks = CacheSpec {
        fallback_keys: vec!["/".into(), "feature%2Fx".into()],
        ..spec("nope")
    };
    let restored = p.restore(&fallbacks).await;
    assert!(
        matches!(&restored, RestoreOutcome::Restored { key, .. } if key == "feature/x"),
        "{restored:?}"
    );
    let lines = p.lines();
    assert_eq!(
        lines[before],
        r#"WARNING: cache key "/" could not be sanitized"#
    );
    assert_eq!(
        lines[before + 1],
        "Skipping cache extraction due to empty cache key"
    );
    assert_eq!(
        lines[before + 2],
        r#"WARNING: cache key "feature%2Fx" sanitized to "feature/x""#
    );
    assert_eq!(lines[before + 3], "Checking cache for nope...");
}

#[tokio::test]
async fn local_only_cache_round_trip_and_nothing_to_cache() {
    let p = pipeline(None, &CacheNaming::default(), &[]).await;
    let restored = p.restore(&spec("k")).await;
    assert_eq!(restored, RestoreOutcome::NotFound);
    assert!(
        p.text().contains("WARNING: cache not found:"),
        "{}",
        p.text()
    );

    assert!(matches!(
        p.save(&spec("k")).await,
        SaveOutcome::NoFiles { .. }
    ));
    assert!(
        p.text().contains("WARNING: No files to cache."),
        "{}",
        p.text()
    );

    populate(&p.project);
    let saved = p.save(&spec("k")).await;
    assert!(
        matches!(
            saved,
            SaveOutcome::Saved {
                remote: RemoteSave::LocalOnly,
                ..
            }
        ),
        "{saved:?}"
    );
    assert!(p.text().contains(
        "No URL provided, cache will not be uploaded to shared cache server. Cache will be stored only locally."
    ));
    let before = cached_part(tree(&p.project));
    std::fs::remove_dir_all(p.project.join("vendor")).unwrap();
    std::fs::remove_file(p.project.join("target/bin")).unwrap();
    let restored = p.restore(&spec("k")).await;
    assert!(
        matches!(
            restored,
            RestoreOutcome::Restored {
                source: CacheSource::Local,
                ..
            }
        ),
        "{restored:?}"
    );
    assert_eq!(cached_part(tree(&p.project)), before);
}

#[tokio::test]
async fn archives_over_the_upload_limit_stay_local() {
    let s3 = S3Server::start(BUCKET).await.unwrap();
    let presigner = presigner(&s3);
    let mut p = pipeline(Some(&presigner), &CacheNaming::default(), &["big"]).await;
    p.env.max_upload_size = Some(10);
    populate(&p.project);
    let saved = p.save(&spec("big")).await;
    assert!(
        matches!(
            saved,
            SaveOutcome::Saved {
                remote: RemoteSave::TooLarge { limit: 10, .. },
                ..
            }
        ),
        "{saved:?}"
    );
    assert!(s3.object_keys().is_empty());
    assert!(
        p.text()
            .contains("is too big (Limit is set to 10). Cache will be stored only locally.")
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_warning() {
    let s3 = S3Server::start(BUCKET).await.unwrap();
    let presigner = presigner(&s3);
    let p = pipeline(Some(&presigner), &CacheNaming::default(), &["k"]).await;
    drop(s3);
    populate(&p.project);
    // Wait until the listener is really gone (the accept loop ends at its next turn).
    let url = p.env.remote["k"].get.clone().unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(format!(
            "{}:{}",
            url.host_str().unwrap(),
            url.port().unwrap()
        ))
        .await
        .is_err()
        {
            break;
        }
        tokio::task::yield_now().await;
    }
    let saved = p.save(&spec("k")).await;
    assert!(saved.is_warning(), "{saved:?}");
    let restored = p.restore(&spec("k")).await;
    assert!(restored.is_warning(), "{restored:?}");
    let text = p.text();
    assert!(text.contains("Retrying GET"), "{text}");
    assert_no_signature_in_log(&p);
}

#[tokio::test]
async fn key_without_urls_uses_the_local_cache_and_empty_specs_are_skipped() {
    let empty = CacheSpec {
        paths: vec![],
        untracked: false,
        ..spec("k")
    };
    let p = pipeline(None, &CacheNaming::default(), &[]).await;
    assert!(matches!(
        p.restore(&empty).await,
        RestoreOutcome::Skipped { .. }
    ));
    assert!(matches!(p.save(&empty).await, SaveOutcome::Skipped { .. }));
    assert!(p.lines().is_empty());
    let _ = RemoteUrls::default();
}

/// `iam` authentication: credentials from the manager's environment sign URLs the server
/// accepts (environment variables, then web identity through a fake STS).
#[tokio::test]
async fn iam_credentials_sign_urls_the_server_accepts() {
    let s3 = S3Server::start(BUCKET).await.unwrap();
    s3.put_object("runner/t/project/1/k", b"payload").unwrap();
    let iam_settings = S3Settings {
        access_key: None,
        secret_key: None,
        authentication: S3Authentication::Iam,
        ..settings(&s3, "unused")
    };
    let get = |presigner: S3Presigner| async move {
        let url = presigner
            .presign(PresignMethod::Get, "runner/t/project/1/k", HOUR)
            .await
            .unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resp = reqwest::Client::new().get(url).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };

    let (key, secret) = (s3.access_key().to_owned(), s3.secret_key().to_owned());
    let from_env = IamCredentials::new(move |name| match name {
        "AWS_ACCESS_KEY_ID" => Some(key.clone()),
        "AWS_SECRET_ACCESS_KEY" => Some(secret.clone()),
        "AWS_SESSION_TOKEN" => Some("env-session-token".into()),
        _ => None,
    })
    .unwrap();
    let presigner = S3Presigner::with_iam(&iam_settings, Arc::new(from_env)).unwrap();
    assert_eq!(get(presigner).await, (200, "payload".to_owned()));

    // Web identity: STS hands out the server's keys as temporary credentials.
    let sts = wiremock::MockServer::start().await;
    let expiration = "2999-01-01T00:00:00Z";
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::body_string_contains(
            "Action=AssumeRoleWithWebIdentity",
        ))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_body_string(format!(
                "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\
             <AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>\
             <SessionToken>sts-token</SessionToken><Expiration>{expiration}</Expiration>\
             </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
                s3.access_key(),
                s3.secret_key()
            )),
        )
        .expect(1)
        .mount(&sts)
        .await;
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "jwt").unwrap();
    let (token_path, sts_url) = (token.path().to_str().unwrap().to_owned(), sts.uri());
    let web_identity = IamCredentials::new(move |name| match name {
        "AWS_WEB_IDENTITY_TOKEN_FILE" => Some(token_path.clone()),
        "AWS_ROLE_ARN" => Some("arn:aws:iam::123456789012:role/oar".into()),
        "AWS_ENDPOINT_URL_STS" => Some(sts_url.clone()),
        "AWS_EC2_METADATA_DISABLED" => Some("true".into()),
        _ => None,
    })
    .unwrap();
    let presigner = S3Presigner::with_iam(&iam_settings, Arc::new(web_identity)).unwrap();
    let url = presigner
        .presign(PresignMethod::Get, "x", HOUR)
        .await
        .unwrap();
    assert!(
        url.as_str().contains("X-Amz-Security-Token=sts-token"),
        "{url}"
    );
    assert_eq!(get(presigner).await, (200, "payload".to_owned()));
}
