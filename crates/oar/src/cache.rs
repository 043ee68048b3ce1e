//! The distributed cache, manager side: the manager holds the storage credentials and gives
//! each job only pre-signed URLs for its cache keys, valid for the job's timeout.

use oar_archive::s3::{CacheNaming, IamCredentials, S3Authentication, S3Presigner, S3Settings};
use oar_config::{CacheType, ExposeSecret, RunnerConfig, S3AuthType};
use oar_job::{CacheUrls, JobContext};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// IAM credential providers, one per region, shared by all jobs so that credentials are
/// fetched once and refreshed before they expire.
#[derive(Clone, Default)]
pub struct IamProviders {
    by_region: Arc<Mutex<HashMap<String, Arc<IamCredentials>>>>,
}

impl IamProviders {
    fn get(&self, region: Option<&str>) -> Result<Arc<IamCredentials>, String> {
        let key = region.unwrap_or("").to_string();
        let mut map = self
            .by_region
            .lock()
            .map_err(|_| "IAM credential cache is unusable".to_string())?;
        if let Some(p) = map.get(&key) {
            return Ok(p.clone());
        }
        let provider = Arc::new(
            IamCredentials::from_process_env()
                .map_err(|e| e.to_string())?
                .with_region(region.map(str::to_string)),
        );
        map.insert(key, provider.clone());
        Ok(provider)
    }
}

fn settings_of(s3: &oar_config::S3Config) -> S3Settings {
    S3Settings {
        server_address: s3.server_address.clone(),
        access_key: s3
            .access_key
            .as_ref()
            .map(|k| k.expose_secret().to_string()),
        secret_key: s3.secret_key.clone(),
        session_token: s3.session_token.clone(),
        bucket_name: s3.bucket_name.clone().unwrap_or_default(),
        bucket_location: s3.bucket_location.clone(),
        insecure: s3.insecure,
        authentication: match s3.auth_type() {
            S3AuthType::AccessKey => S3Authentication::AccessKey,
            S3AuthType::Iam => S3Authentication::Iam,
        },
        path_style: s3.path_style,
        dual_stack: s3.dual_stack,
        accelerate: s3.accelerate,
    }
}

/// Pre-signed URLs for every cache key of `ctx`, and warnings for the job log (a cache type
/// Oar does not implement, a presigning failure). Without `[runners.cache]` the map is empty
/// and jobs use their local cache only.
pub async fn urls_for_job(
    iam: &IamProviders,
    runner: &RunnerConfig,
    ctx: &JobContext,
) -> (BTreeMap<String, CacheUrls>, Vec<String>) {
    let mut urls = BTreeMap::new();
    let mut warnings = Vec::new();
    let keys = oar_job::files::keys_to_presign(ctx);
    let Some(cache) = runner.cache.as_ref().filter(|_| !keys.is_empty()) else {
        return (urls, warnings);
    };
    let s3 = match (cache.kind, cache.s3.as_ref()) {
        (None, _) => return (urls, warnings),
        (Some(CacheType::S3), Some(s3)) => s3,
        (Some(CacheType::S3), None) => {
            warnings.push(
                "[runners.cache] Type = \"s3\" has no [runners.cache.s3] table; using the local cache only"
                    .into(),
            );
            return (urls, warnings);
        }
        (Some(other), _) => {
            warnings.push(format!(
                "[runners.cache] Type = {:?} is not supported by Oar (only s3); using the local cache only",
                other.as_str()
            ));
            return (urls, warnings);
        }
    };
    let settings = settings_of(s3);
    let presigner = match settings.authentication {
        S3Authentication::AccessKey => S3Presigner::new(&settings),
        S3Authentication::Iam => match iam.get(settings.bucket_location.as_deref()) {
            Ok(p) => S3Presigner::with_iam(&settings, p),
            Err(e) => {
                warnings.push(format!(
                    "distributed cache disabled for this job: no IAM credentials: {e}"
                ));
                return (urls, warnings);
            }
        },
    };
    let presigner = match presigner {
        Ok(p) => p,
        Err(e) => {
            warnings.push(format!(
                "distributed cache disabled for this job: {e}; using the local cache only"
            ));
            return (urls, warnings);
        }
    };
    let naming = CacheNaming {
        path: cache.path.clone(),
        shared: cache.shared,
    };
    let project_id = u64::try_from(ctx.job.job_info.project_id).unwrap_or(0);
    for (key, put) in keys {
        match presigner
            .cache_urls(
                &naming,
                &ctx.settings.short_token,
                project_id,
                &key,
                ctx.timeout,
                put,
            )
            .await
        {
            Ok(Some(remote)) => {
                urls.insert(
                    key,
                    CacheUrls {
                        get: remote.get.map(|u| u.to_string()),
                        put: remote.put.map(|u| u.to_string()),
                    },
                );
            }
            Ok(None) => {}
            Err(e) => warnings.push(format!(
                "cannot pre-sign the distributed cache for key {key:?}: {e}; using the local cache only"
            )),
        }
    }
    (urls, warnings)
}
