//! Presigned S3 URLs for the distributed cache (manager side).
//!
//! The manager holds the S3 credentials; jobs only ever get presigned URLs (SigV4 query
//! authentication) for their cache objects, valid for the job's timeout (at most 7 days, S3's
//! limit). This mirrors GitLab Runner's `s3v2` cache adapter:
//!
//! - object names are `<Path>/runner/<short token>/project/<project id>/<key>`, without
//!   `runner/<short token>/` when the cache is `Shared` ([`object_name`]);
//! - with no `ServerAddress` (or `s3.amazonaws.com`) the bucket lives on AWS: virtual-host
//!   style `https://<bucket>.s3.dualstack.<region>.amazonaws.com/` (`DualStack` defaults to
//!   true, `Accelerate` gives `s3-accelerate`); with a custom `ServerAddress` the URLs are
//!   path style (`https://<server>/<bucket>/<object>`) unless the server is a known
//!   virtual-host capable one (AWS, Google, Aliyun) or `PathStyle` says otherwise; `Insecure`
//!   makes them `http`;
//! - a missing `BucketLocation` is `us-east-1` (GitLab Runner asks S3 for the bucket's
//!   location first; Oar does not, so set `BucketLocation` for buckets elsewhere on AWS);
//! - `AuthenticationType = "iam"` takes credentials from the environment the manager runs in
//!   ([`IamCredentials`]).
//!
//! The signing itself is [`rusty_s3`]'s.

mod credentials;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusty_s3::actions::{GetObject, HeadObject, PutObject, S3Action};
use rusty_s3::{Bucket, UrlStyle};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub use credentials::{AwsCredentials, CredentialsError, IamCredentials};

use crate::cache::RemoteUrls;

/// S3's longest presigned URL validity: 7 days.
pub const MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The region used when `BucketLocation` is not set.
pub const DEFAULT_REGION: &str = "us-east-1";

/// How the manager authenticates to S3 (`AuthenticationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum S3Authentication {
    /// Static `AccessKey`/`SecretKey` (and optional `SessionToken`) from the config.
    #[default]
    AccessKey,
    /// Credentials from the environment: see [`IamCredentials`].
    Iam,
}

/// `[runners.cache.s3]`, as far as presigning needs it. Plain values: the caller converts its
/// configuration (empty strings should be passed as `None`).
///
/// `Debug` never shows the secret key or the session token.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// `ServerAddress`: `host[:port]` of an S3-compatible server; `None` for AWS. A value with
    /// an `http://` or `https://` scheme is taken as a full endpoint URL.
    pub server_address: Option<String>,
    /// `AccessKey` (an access key id is not a secret).
    pub access_key: Option<String>,
    /// `SecretKey`.
    pub secret_key: Option<SecretString>,
    /// `SessionToken` for temporary credentials.
    pub session_token: Option<SecretString>,
    /// `BucketName`.
    pub bucket_name: String,
    /// `BucketLocation` (the region); `None` means [`DEFAULT_REGION`].
    pub bucket_location: Option<String>,
    /// `Insecure`: plain `http`.
    pub insecure: bool,
    /// The effective `AuthenticationType`.
    pub authentication: S3Authentication,
    /// `PathStyle`; `None` picks as GitLab Runner does (see the [module docs](self)).
    pub path_style: Option<bool>,
    /// `DualStack`; `None` means true (only used for AWS endpoints).
    pub dual_stack: Option<bool>,
    /// `Accelerate` (only used for AWS endpoints).
    pub accelerate: bool,
}

/// `[runners.cache]` `Path` and `Shared`: where in the bucket cache objects go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheNaming {
    /// `Path`: a prefix of every object name.
    pub path: Option<String>,
    /// `Shared`: drop `runner/<short token>/` so that all runners share the objects.
    pub shared: bool,
}

/// The HTTP method a URL is presigned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresignMethod {
    /// Download.
    Get,
    /// Existence and freshness checks.
    Head,
    /// Upload.
    Put,
}

/// Why a URL could not be presigned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3Error {
    /// `BucketName` is empty.
    #[error("the S3 cache has no BucketName")]
    NoBucket,
    /// `AuthenticationType` is `access-key` but `AccessKey` or `SecretKey` is missing.
    #[error("the S3 cache uses access-key authentication but AccessKey or SecretKey is missing")]
    MissingKeys,
    /// The endpoint and bucket do not make a valid URL.
    #[error("invalid S3 endpoint {endpoint:?} for bucket {bucket:?}: {reason}")]
    Endpoint {
        /// The endpoint that was built from `ServerAddress`.
        endpoint: String,
        /// The bucket.
        bucket: String,
        /// Why.
        reason: String,
    },
    /// The object name is empty.
    #[error("empty S3 object name")]
    EmptyObjectName,
    /// `iam` credentials could not be had.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

enum CredentialSource {
    Static(AwsCredentials),
    Iam(Arc<IamCredentials>),
}

/// Presigns cache object URLs for one bucket.
pub struct S3Presigner {
    bucket: Bucket,
    credentials: CredentialSource,
}

impl fmt::Debug for S3Presigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Presigner")
            .field("bucket", &self.bucket.name())
            .field("base_url", &self.bucket.base_url().as_str())
            .field("region", &self.bucket.region())
            .field(
                "credentials",
                &match &self.credentials {
                    CredentialSource::Static(c) => c.access_key_id.as_str(),
                    CredentialSource::Iam(_) => "iam",
                },
            )
            .finish()
    }
}

impl S3Presigner {
    /// A presigner for `settings`. With [`S3Authentication::Iam`], credentials come from the
    /// manager's own environment ([`IamCredentials::from_process_env`]).
    pub fn new(settings: &S3Settings) -> Result<Self, S3Error> {
        let iam = match settings.authentication {
            S3Authentication::AccessKey => None,
            S3Authentication::Iam => Some(Arc::new(
                IamCredentials::from_process_env()?.with_region(settings.bucket_location.clone()),
            )),
        };
        Self::build(settings, iam)
    }

    /// A presigner for `settings` whose `iam` credentials come from `iam` (ignored with
    /// [`S3Authentication::AccessKey`]). Share one [`IamCredentials`] between presigners so
    /// that its credential cache is shared too.
    pub fn with_iam(settings: &S3Settings, iam: Arc<IamCredentials>) -> Result<Self, S3Error> {
        Self::build(settings, Some(iam))
    }

    fn build(settings: &S3Settings, iam: Option<Arc<IamCredentials>>) -> Result<Self, S3Error> {
        let bucket = bucket_for(settings)?;
        let credentials = match settings.authentication {
            S3Authentication::AccessKey => {
                let (Some(key), Some(secret)) = (
                    settings.access_key.as_deref().filter(|k| !k.is_empty()),
                    settings.secret_key.as_ref(),
                ) else {
                    return Err(S3Error::MissingKeys);
                };
                CredentialSource::Static(AwsCredentials {
                    access_key_id: key.to_owned(),
                    secret_access_key: secret.clone(),
                    session_token: settings.session_token.clone(),
                    expires_at: None,
                })
            }
            S3Authentication::Iam => match iam {
                Some(iam) => CredentialSource::Iam(iam),
                None => CredentialSource::Iam(Arc::new(
                    IamCredentials::from_process_env()?
                        .with_region(settings.bucket_location.clone()),
                )),
            },
        };
        Ok(Self {
            bucket,
            credentials,
        })
    }

    /// The bucket's base URL (`https://<bucket>.s3…/` or `http(s)://<server>/<bucket>/`).
    pub fn base_url(&self) -> &Url {
        self.bucket.base_url()
    }

    /// The region signatures are scoped to.
    pub fn region(&self) -> &str {
        self.bucket.region()
    }

    /// Presigns `method` on `object`, valid for `expires` (clamped to 1 s..=[`MAX_EXPIRY`])
    /// from now. With `iam` credentials the URL also stops working when the temporary
    /// credentials expire.
    pub async fn presign(
        &self,
        method: PresignMethod,
        object: &str,
        expires: Duration,
    ) -> Result<Url, S3Error> {
        let creds = match &self.credentials {
            CredentialSource::Static(c) => c.clone(),
            CredentialSource::Iam(iam) => iam.credentials_for(expires).await?,
        };
        self.presign_with(&creds, method, object, expires, SystemTime::now())
    }

    /// Presigns with the given credentials at the given time: pure and deterministic.
    pub fn presign_with(
        &self,
        creds: &AwsCredentials,
        method: PresignMethod,
        object: &str,
        expires: Duration,
        at: SystemTime,
    ) -> Result<Url, S3Error> {
        if object.is_empty() {
            return Err(S3Error::EmptyObjectName);
        }
        let expires = expires.clamp(Duration::from_secs(1), MAX_EXPIRY);
        let at = jiff::Timestamp::try_from(at).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let creds = match &creds.session_token {
            Some(token) => rusty_s3::Credentials::new_with_token(
                creds.access_key_id.clone(),
                creds.secret_access_key.expose_secret(),
                token.expose_secret(),
            ),
            None => rusty_s3::Credentials::new(
                creds.access_key_id.clone(),
                creds.secret_access_key.expose_secret(),
            ),
        };
        let bucket = &self.bucket;
        Ok(match method {
            PresignMethod::Get => {
                GetObject::new(bucket, Some(&creds), object).sign_with_time(expires, &at)
            }
            PresignMethod::Head => {
                HeadObject::new(bucket, Some(&creds), object).sign_with_time(expires, &at)
            }
            PresignMethod::Put => {
                PutObject::new(bucket, Some(&creds), object).sign_with_time(expires, &at)
            }
        })
    }

    /// The URLs of cache `key` for one job: `get` always, `put` when `upload` (fallback keys
    /// are only ever downloaded). `key` should be sanitized already
    /// ([`crate::cache::sanitize_key`]); `None` when it makes no valid object name (see
    /// [`object_name`]), i.e. the job works with its local cache only for this key.
    pub async fn cache_urls(
        &self,
        naming: &CacheNaming,
        short_token: &str,
        project_id: u64,
        key: &str,
        expires: Duration,
        upload: bool,
    ) -> Result<Option<RemoteUrls>, S3Error> {
        let Some(object) = object_name(naming, short_token, project_id, key) else {
            return Ok(None);
        };
        let get = self.presign(PresignMethod::Get, &object, expires).await?;
        let put = if upload {
            Some(self.presign(PresignMethod::Put, &object, expires).await?)
        } else {
            None
        };
        Ok(Some(RemoteUrls {
            get: Some(get),
            put,
        }))
    }
}

/// The object name of cache `key` of project `project_id` for the runner whose short token is
/// `short_token`: `<Path>/runner/<short token>/project/<project id>/<key>`, or
/// `<Path>/project/<project id>/<key>` when `Shared`; joined and cleaned like Go's
/// `path.Join`, without a leading `/`.
///
/// `None` (no distributed cache for this key, as in GitLab Runner) when `key` is empty or
/// would leave `…/project/<project id>/` (through `..`).
pub fn object_name(
    naming: &CacheNaming,
    short_token: &str,
    project_id: u64,
    key: &str,
) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let project_id = project_id.to_string();
    let mut parts: Vec<&str> = Vec::new();
    if let Some(path) = naming.path.as_deref() {
        parts.push(path);
    }
    if !naming.shared {
        parts.extend(["runner", short_token]);
    }
    parts.extend(["project", &project_id]);
    let base = go_path_join(&parts);
    let full = go_path_join(&[&base, key]);
    if !full.starts_with(&format!("{base}/")) {
        return None;
    }
    let name = full.trim_start_matches('/');
    (!name.is_empty()).then(|| name.to_owned())
}

/// Go's `path.Join`: the non-empty elements joined with `/`, then [`go_path_clean`]ed; `""`
/// when all are empty.
pub(crate) fn go_path_join(parts: &[&str]) -> String {
    let joined: Vec<&str> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    if joined.is_empty() {
        return String::new();
    }
    go_path_clean(&joined.join("/"))
}

/// Go's `path.Clean`: one `/` between segments, no `.` segments, `..` resolved (kept at the
/// start of a relative path, dropped at the root), no trailing `/`; `"."` for an empty result.
pub(crate) fn go_path_clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|last| *last != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    let body = out.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_owned(),
        (false, false) => body,
    }
}

/// The bucket (base URL, style, region) for `settings`.
fn bucket_for(settings: &S3Settings) -> Result<Bucket, S3Error> {
    let name = settings.bucket_name.trim();
    if name.is_empty() {
        return Err(S3Error::NoBucket);
    }
    let region = settings
        .bucket_location
        .as_deref()
        .filter(|r| !r.is_empty())
        .unwrap_or(DEFAULT_REGION)
        .to_owned();
    let scheme = if settings.insecure { "http" } else { "https" };
    let custom = settings
        .server_address
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|address| custom_endpoint(address, scheme))
        .filter(|endpoint| endpoint != "https://s3.amazonaws.com");

    let (endpoint, style) = match custom {
        Some(endpoint) => {
            let url = parse_endpoint(&endpoint, name)?;
            let path_style = settings
                .path_style
                .unwrap_or_else(|| !virtual_host_supported(&url, name));
            (url, path_style)
        }
        None => {
            let endpoint = aws_endpoint(
                &region,
                settings.dual_stack.unwrap_or(true),
                settings.accelerate,
                scheme,
            );
            let url = parse_endpoint(&endpoint, name)?;
            // AWS's certificates only cover one label before the endpoint: buckets whose name is
            // not a plain DNS label go path style over https.
            let path_style = settings
                .path_style
                .unwrap_or_else(|| !dns_label(name) || (scheme == "https" && name.contains('.')));
            (url, path_style)
        }
    };
    let style = if style {
        UrlStyle::Path
    } else {
        UrlStyle::VirtualHost
    };
    Bucket::new(endpoint.clone(), style, name.to_owned(), region.clone())
        .or_else(|err| match style {
            // An IP address (or an odd name) cannot take the bucket as a subdomain.
            UrlStyle::VirtualHost => Bucket::new(
                endpoint.clone(),
                UrlStyle::Path,
                name.to_owned(),
                region.clone(),
            ),
            UrlStyle::Path => Err(err),
        })
        .map_err(|err| S3Error::Endpoint {
            endpoint: endpoint.to_string(),
            bucket: name.to_owned(),
            reason: format!("{err:?}"),
        })
}

/// `scheme://address`, with the scheme's default port left out (as GitLab Runner's
/// `GetEndpoint`); an address that already has a scheme is kept as is.
fn custom_endpoint(address: &str, scheme: &str) -> String {
    if address.starts_with("http://") || address.starts_with("https://") {
        return address.to_owned();
    }
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let host = address.strip_suffix(default_port).unwrap_or(address);
    format!("{scheme}://{host}")
}

fn aws_endpoint(region: &str, dual_stack: bool, accelerate: bool, scheme: &str) -> String {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    let host = match (accelerate, dual_stack) {
        (true, true) => format!("s3-accelerate.dualstack.{domain}"),
        (true, false) => format!("s3-accelerate.{domain}"),
        (false, true) => format!("s3.dualstack.{region}.{domain}"),
        (false, false) if region == "us-east-1" => format!("s3.{domain}"),
        (false, false) => format!("s3.{region}.{domain}"),
    };
    format!("{scheme}://{host}")
}

fn parse_endpoint(endpoint: &str, bucket: &str) -> Result<Url, S3Error> {
    Url::parse(endpoint).map_err(|err| S3Error::Endpoint {
        endpoint: endpoint.to_owned(),
        bucket: bucket.to_owned(),
        reason: err.to_string(),
    })
}

/// minio-go's `IsVirtualHostSupported`, which GitLab Runner uses when `PathStyle` is unset:
/// only AWS, Google and Aliyun endpoints, and not for dotted bucket names over https.
fn virtual_host_supported(endpoint: &Url, bucket: &str) -> bool {
    if endpoint.scheme() == "https" && bucket.contains('.') {
        return false;
    }
    let host = endpoint.host_str().unwrap_or("").to_ascii_lowercase();
    let amazon = host == "s3.amazonaws.com"
        || host == "s3-external-1.amazonaws.com"
        || (host.starts_with("s3")
            && (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")));
    let google = host == "storage.googleapis.com";
    let aliyun = host.ends_with(".aliyuncs.com");
    amazon || google || aliyun
}

/// Whether `name` can be one DNS label in front of the S3 host.
fn dns_label(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws_example_settings() -> S3Settings {
        S3Settings {
            access_key: Some("AKIAIOSFODNN7EXAMPLE".into()),
            secret_key: Some("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into()),
            bucket_name: "examplebucket".into(),
            bucket_location: Some("us-east-1".into()),
            dual_stack: Some(false),
            ..S3Settings::default()
        }
    }

    fn example_creds() -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            expires_at: None,
        }
    }

    /// Fri, 24 May 2013 00:00:00 GMT, the time of AWS's SigV4 examples.
    fn may_24_2013() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600)
    }

    /// The presigned GET example of AWS's "Authenticating Requests: Using Query Parameters"
    /// (SigV4) documentation, byte for byte.
    #[tokio::test]
    async fn presigned_get_matches_the_aws_documentation_example() {
        let presigner = S3Presigner::new(&aws_example_settings()).unwrap();
        let url = presigner
            .presign_with(
                &example_creds(),
                PresignMethod::Get,
                "test.txt",
                Duration::from_secs(86400),
                may_24_2013(),
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
        // The static-credential path of `presign` signs with the same keys.
        let now = presigner
            .presign(PresignMethod::Get, "test.txt", Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            now.as_str()
                .contains("X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F")
        );
        assert!(now.as_str().contains("X-Amz-Expires=60&"));
    }

    #[test]
    fn put_and_head_sign_differently_and_carry_the_session_token() {
        let presigner = S3Presigner::new(&aws_example_settings()).unwrap();
        let mut creds = example_creds();
        let sign = |creds: &AwsCredentials, m| {
            presigner
                .presign_with(
                    creds,
                    m,
                    "test.txt",
                    Duration::from_secs(600),
                    may_24_2013(),
                )
                .unwrap()
                .to_string()
        };
        let get = sign(&creds, PresignMethod::Get);
        let put = sign(&creds, PresignMethod::Put);
        let head = sign(&creds, PresignMethod::Head);
        assert_ne!(get, put);
        assert_ne!(get, head);
        creds.session_token = Some("FwoGZXIvYXdzEBY".into());
        let with_token = sign(&creds, PresignMethod::Get);
        assert!(
            with_token.contains("X-Amz-Security-Token=FwoGZXIvYXdzEBY"),
            "{with_token}"
        );
        assert_ne!(
            with_token.split("X-Amz-Signature=").nth(1),
            get.split("X-Amz-Signature=").nth(1)
        );
    }

    #[test]
    fn expiry_is_clamped_to_seven_days() {
        let presigner = S3Presigner::new(&aws_example_settings()).unwrap();
        let url = presigner
            .presign_with(
                &example_creds(),
                PresignMethod::Get,
                "k",
                Duration::from_secs(30 * 24 * 3600),
                may_24_2013(),
            )
            .unwrap();
        assert!(url.as_str().contains("X-Amz-Expires=604800&"), "{url}");
        let url = presigner
            .presign_with(
                &example_creds(),
                PresignMethod::Get,
                "k",
                Duration::ZERO,
                may_24_2013(),
            )
            .unwrap();
        assert!(url.as_str().contains("X-Amz-Expires=1&"), "{url}");
    }

    #[test]
    fn empty_object_and_missing_keys_are_errors() {
        let presigner = S3Presigner::new(&aws_example_settings()).unwrap();
        assert!(matches!(
            presigner.presign_with(
                &example_creds(),
                PresignMethod::Get,
                "",
                Duration::from_secs(1),
                may_24_2013()
            ),
            Err(S3Error::EmptyObjectName)
        ));
        let mut settings = aws_example_settings();
        settings.secret_key = None;
        assert!(matches!(
            S3Presigner::new(&settings),
            Err(S3Error::MissingKeys)
        ));
        settings.bucket_name = " ".into();
        assert!(matches!(
            S3Presigner::new(&settings),
            Err(S3Error::NoBucket)
        ));
    }

    fn base(settings: S3Settings) -> String {
        S3Presigner::new(&settings).unwrap().base_url().to_string()
    }

    #[test]
    fn endpoints_and_url_styles() {
        let aws = S3Settings {
            access_key: Some("AK".into()),
            secret_key: Some("SK".into()),
            bucket_name: "cache".into(),
            ..S3Settings::default()
        };
        // AWS: dual-stack virtual host by default, in the bucket's region.
        assert_eq!(
            base(aws.clone()),
            "https://cache.s3.dualstack.us-east-1.amazonaws.com/"
        );
        let eu = S3Settings {
            bucket_location: Some("eu-west-1".into()),
            ..aws.clone()
        };
        assert_eq!(
            base(eu.clone()),
            "https://cache.s3.dualstack.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            base(S3Settings {
                dual_stack: Some(false),
                ..eu.clone()
            }),
            "https://cache.s3.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            base(S3Settings {
                accelerate: true,
                dual_stack: Some(false),
                ..eu.clone()
            }),
            "https://cache.s3-accelerate.amazonaws.com/"
        );
        assert_eq!(
            base(S3Settings {
                path_style: Some(true),
                ..eu.clone()
            }),
            "https://s3.dualstack.eu-west-1.amazonaws.com/cache/"
        );
        // `s3.amazonaws.com` is the default AWS endpoint, not a custom one.
        assert_eq!(
            base(S3Settings {
                server_address: Some("s3.amazonaws.com".into()),
                ..eu.clone()
            }),
            "https://cache.s3.dualstack.eu-west-1.amazonaws.com/"
        );
        // A dotted bucket cannot be a subdomain under AWS's certificate.
        assert_eq!(
            base(S3Settings {
                bucket_name: "my.cache".into(),
                ..eu
            }),
            "https://s3.dualstack.eu-west-1.amazonaws.com/my.cache/"
        );

        // Custom servers: path style, default ports dropped, Insecure = http.
        let minio = S3Settings {
            server_address: Some("minio.example:9000".into()),
            ..aws.clone()
        };
        assert_eq!(base(minio.clone()), "https://minio.example:9000/cache/");
        assert_eq!(
            base(S3Settings {
                insecure: true,
                ..minio.clone()
            }),
            "http://minio.example:9000/cache/"
        );
        assert_eq!(
            base(S3Settings {
                server_address: Some("minio.example:443".into()),
                ..aws.clone()
            }),
            "https://minio.example/cache/"
        );
        assert_eq!(
            base(S3Settings {
                server_address: Some("127.0.0.1:80".into()),
                insecure: true,
                ..aws.clone()
            }),
            "http://127.0.0.1/cache/"
        );
        // PathStyle = false asks for virtual hosts even on a custom server...
        assert_eq!(
            base(S3Settings {
                path_style: Some(false),
                ..minio
            }),
            "https://cache.minio.example:9000/"
        );
        // ... which an IP address cannot do: path style then.
        assert_eq!(
            base(S3Settings {
                server_address: Some("10.0.0.1:9000".into()),
                path_style: Some(false),
                ..aws.clone()
            }),
            "https://10.0.0.1:9000/cache/"
        );
        // Known virtual-host capable servers.
        assert_eq!(
            base(S3Settings {
                server_address: Some("storage.googleapis.com".into()),
                ..aws.clone()
            }),
            "https://cache.storage.googleapis.com/"
        );
        assert_eq!(
            base(S3Settings {
                server_address: Some("s3.eu-central-1.amazonaws.com".into()),
                ..aws.clone()
            }),
            "https://cache.s3.eu-central-1.amazonaws.com/"
        );
        // A full URL as ServerAddress is taken as is.
        assert_eq!(
            base(S3Settings {
                server_address: Some("http://minio:9000".into()),
                ..aws
            }),
            "http://minio:9000/cache/"
        );
    }

    #[test]
    fn object_keys_are_percent_encoded_in_the_path() {
        let minio = S3Settings {
            server_address: Some("minio:9000".into()),
            access_key: Some("AK".into()),
            secret_key: Some("SK".into()),
            bucket_name: "cache".into(),
            ..S3Settings::default()
        };
        let presigner = S3Presigner::new(&minio).unwrap();
        let url = presigner
            .presign_with(
                &example_creds(),
                PresignMethod::Get,
                "runner/x/project/1/key with space+plus%",
                Duration::from_secs(60),
                may_24_2013(),
            )
            .unwrap();
        assert_eq!(
            url.path(),
            "/cache/runner/x/project/1/key%20with%20space%2Bplus%25"
        );
    }

    #[test]
    fn object_names_follow_gitlab_runner() {
        let plain = CacheNaming::default();
        assert_eq!(
            object_name(&plain, "abc123", 42, "main").as_deref(),
            Some("runner/abc123/project/42/main")
        );
        let shared = CacheNaming {
            path: None,
            shared: true,
        };
        assert_eq!(
            object_name(&shared, "abc123", 42, "main").as_deref(),
            Some("project/42/main")
        );
        let prefixed = CacheNaming {
            path: Some("/ci/cache/".into()),
            shared: false,
        };
        assert_eq!(
            object_name(&prefixed, "abc123", 42, "build/main").as_deref(),
            Some("ci/cache/runner/abc123/project/42/build/main")
        );
        let prefixed_shared = CacheNaming {
            path: Some("ci".into()),
            shared: true,
        };
        assert_eq!(
            object_name(&prefixed_shared, "tok", 7, "a/./b//c").as_deref(),
            Some("ci/project/7/a/b/c")
        );
        // Empty keys and keys leaving the project's namespace get no object.
        assert_eq!(object_name(&plain, "abc123", 42, ""), None);
        assert_eq!(object_name(&plain, "abc123", 42, "../43/main"), None);
        assert_eq!(object_name(&plain, "abc123", 42, "."), None);
        assert_eq!(object_name(&plain, "abc123", 42, "a/../.."), None);
        // `..` that stays inside is resolved.
        assert_eq!(
            object_name(&plain, "abc123", 42, "a/../b").as_deref(),
            Some("runner/abc123/project/42/b")
        );
    }

    #[test]
    fn go_path_semantics() {
        assert_eq!(go_path_clean("a//b/./c/"), "a/b/c");
        assert_eq!(go_path_clean("/../a"), "/a");
        assert_eq!(go_path_clean("../a/.."), "..");
        assert_eq!(go_path_clean(""), ".");
        assert_eq!(go_path_clean("/"), "/");
        assert_eq!(go_path_join(&["", "a", "", "b/"]), "a/b");
        assert_eq!(go_path_join(&["", ""]), "");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut settings = aws_example_settings();
        settings.session_token = Some("TOKEN-VALUE-123".into());
        let presigner = S3Presigner::new(&settings).unwrap();
        for shown in [
            format!("{settings:?}"),
            format!("{presigner:?}"),
            format!("{:?}", example_creds()),
        ] {
            assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
            assert!(!shown.contains("TOKEN-VALUE-123"), "{shown}");
        }
    }
}
