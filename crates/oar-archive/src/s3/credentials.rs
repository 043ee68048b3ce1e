//! `AuthenticationType = "iam"`: AWS credentials from the environment the manager runs in.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::remote::xml_text;

/// Credentials are refreshed when they expire within this window.
const REFRESH_WINDOW: Duration = Duration::from_secs(5 * 60);
/// The most validity asked of cached credentials (temporary credentials often last one hour:
/// asking more would refresh them on every call).
const MAX_WANTED_VALIDITY: Duration = Duration::from_secs(55 * 60);
/// EC2/EKS instance metadata service.
const IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// ECS/EKS container credentials (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`).
const CONTAINER_ENDPOINT: &str = "http://169.254.170.2";

/// AWS credentials. `Debug` never shows the secret access key or the session token.
#[derive(Debug, Clone)]
pub struct AwsCredentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
    /// The session token of temporary credentials.
    pub session_token: Option<SecretString>,
    /// When temporary credentials expire; `None` for long-term ones.
    pub expires_at: Option<SystemTime>,
}

impl AwsCredentials {
    /// Whether the credentials stay valid for more than `wanted` after `now`.
    fn valid_for(&self, now: SystemTime, wanted: Duration) -> bool {
        self.expires_at
            .is_none_or(|at| at.duration_since(now).is_ok_and(|left| left > wanted))
    }
}

/// Why `iam` credentials could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// No source in the chain had credentials; the message says what was tried.
    #[error("no AWS credentials found for the S3 cache (tried: {tried})")]
    NotFound {
        /// What was tried and why each failed.
        tried: String,
    },
    /// An HTTP client could not be built.
    #[error("building an HTTP client for AWS credentials: {0}")]
    Client(String),
}

type EnvLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// The AWS SDKs' default credential chain, as far as it applies to a runner manager in a pod or
/// on an instance, tried in this order:
///
/// 1. environment variables `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and
///    `AWS_SESSION_TOKEN`);
/// 2. web identity (EKS IAM roles for service accounts): `AWS_WEB_IDENTITY_TOKEN_FILE` and
///    `AWS_ROLE_ARN` (`AWS_ROLE_SESSION_NAME` optional) → STS `AssumeRoleWithWebIdentity`, an
///    unsigned POST to `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`, the regional endpoint of
///    `AWS_REGION`/`AWS_DEFAULT_REGION`/the bucket's region, or `https://sts.amazonaws.com`;
/// 3. container credentials (EKS Pod Identity, ECS): `AWS_CONTAINER_CREDENTIALS_FULL_URI`
///    (with `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or `AWS_CONTAINER_AUTHORIZATION_TOKEN`)
///    or `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`;
/// 4. the instance metadata service, IMDSv2 (token, then the instance role's credentials;
///    IMDSv1 if the token request is refused), at `AWS_EC2_METADATA_SERVICE_ENDPOINT` or
///    `http://169.254.169.254`, unless `AWS_EC2_METADATA_DISABLED=true`.
///
/// Shared config/credentials files (`~/.aws`) are not read. Credentials are cached until five
/// minutes before they expire.
pub struct IamCredentials {
    env: Arc<EnvLookup>,
    region: Option<String>,
    /// For STS (honours proxies).
    http: reqwest::Client,
    /// For link-local metadata endpoints (never through a proxy, short timeouts).
    metadata_http: reqwest::Client,
    cache: tokio::sync::Mutex<Option<AwsCredentials>>,
}

impl fmt::Debug for IamCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IamCredentials")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl IamCredentials {
    /// A chain reading variables through `env` (so tests need not touch the process
    /// environment).
    pub fn new(
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Result<Self, CredentialsError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| CredentialsError::Client(e.to_string()))?;
        let metadata_http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| CredentialsError::Client(e.to_string()))?;
        Ok(Self {
            env: Arc::new(env),
            region: None,
            http,
            metadata_http,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    /// A chain reading the manager's process environment.
    pub fn from_process_env() -> Result<Self, CredentialsError> {
        Self::new(|name| std::env::var(name).ok())
    }

    /// The region whose STS endpoint to use when the environment names none (the bucket's).
    #[must_use]
    pub fn with_region(mut self, region: Option<String>) -> Self {
        self.region = region.filter(|r| !r.is_empty());
        self
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }

    /// Credentials from the first source of the chain that has them; cached until five
    /// minutes before they expire.
    pub async fn credentials(&self) -> Result<AwsCredentials, CredentialsError> {
        self.credentials_for(REFRESH_WINDOW).await
    }

    /// Like [`IamCredentials::credentials`], but cached credentials are only reused while they
    /// stay valid for `validity` (taken as at least five minutes, at most 55), e.g. the
    /// lifetime of the URLs about to be signed. Fresh credentials are returned even if they
    /// expire sooner: a URL signed with temporary credentials stops working when they expire.
    pub async fn credentials_for(
        &self,
        validity: Duration,
    ) -> Result<AwsCredentials, CredentialsError> {
        let wanted = validity.clamp(REFRESH_WINDOW, MAX_WANTED_VALIDITY);
        let mut cache = self.cache.lock().await;
        if let Some(creds) = cache
            .as_ref()
            .filter(|c| c.valid_for(SystemTime::now(), wanted))
        {
            return Ok(creds.clone());
        }
        let creds = self.resolve().await?;
        *cache = Some(creds.clone());
        Ok(creds)
    }

    async fn resolve(&self) -> Result<AwsCredentials, CredentialsError> {
        let mut tried = Vec::new();
        match self.env_source() {
            Ok(creds) => return Ok(creds),
            Err(why) => tried.push(format!("environment: {why}")),
        }
        match self.web_identity_source().await {
            Ok(creds) => return Ok(creds),
            Err(why) => tried.push(format!("web identity: {why}")),
        }
        match self.container_source().await {
            Ok(creds) => return Ok(creds),
            Err(why) => tried.push(format!("container credentials: {why}")),
        }
        match self.imds_source().await {
            Ok(creds) => return Ok(creds),
            Err(why) => tried.push(format!("instance metadata: {why}")),
        }
        Err(CredentialsError::NotFound {
            tried: tried.join("; "),
        })
    }

    fn env_source(&self) -> Result<AwsCredentials, String> {
        let key = self.var("AWS_ACCESS_KEY_ID");
        let secret = self.var("AWS_SECRET_ACCESS_KEY");
        match (key, secret) {
            (Some(key), Some(secret)) => Ok(AwsCredentials {
                access_key_id: key,
                secret_access_key: secret.into(),
                session_token: self.var("AWS_SESSION_TOKEN").map(Into::into),
                expires_at: None,
            }),
            (Some(_), None) => {
                Err("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into())
            }
            (None, _) => Err("AWS_ACCESS_KEY_ID is not set".into()),
        }
    }

    fn sts_endpoint(&self) -> String {
        if let Some(url) = self
            .var("AWS_ENDPOINT_URL_STS")
            .or_else(|| self.var("AWS_ENDPOINT_URL"))
        {
            return url;
        }
        let region = self
            .var("AWS_REGION")
            .or_else(|| self.var("AWS_DEFAULT_REGION"))
            .or_else(|| self.region.clone());
        match region {
            Some(r) if r.starts_with("cn-") => format!("https://sts.{r}.amazonaws.com.cn"),
            Some(r) => format!("https://sts.{r}.amazonaws.com"),
            None => "https://sts.amazonaws.com".to_owned(),
        }
    }

    async fn web_identity_source(&self) -> Result<AwsCredentials, String> {
        let Some(token_file) = self.var("AWS_WEB_IDENTITY_TOKEN_FILE") else {
            return Err("AWS_WEB_IDENTITY_TOKEN_FILE is not set".into());
        };
        let Some(role_arn) = self.var("AWS_ROLE_ARN") else {
            return Err("AWS_ROLE_ARN is not set".into());
        };
        let token = tokio::fs::read_to_string(&token_file)
            .await
            .map_err(|e| format!("reading {token_file}: {e}"))?;
        let session_name = self.var("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| {
            let secs = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            format!("oar-{secs}")
        });
        let endpoint = self.sts_endpoint();
        let form = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role_arn.as_str()),
            ("RoleSessionName", session_name.as_str()),
            ("WebIdentityToken", token.trim()),
        ];
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = self
            .http
            .post(&endpoint)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/xml")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {endpoint}: {}", e.without_url()))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("reading the answer of {endpoint}: {}", e.without_url()))?;
        if !status.is_success() {
            let code = xml_text(&text, "Code").unwrap_or_default();
            let message = xml_text(&text, "Message").unwrap_or_default();
            return Err(format!(
                "STS AssumeRoleWithWebIdentity at {endpoint} answered {status}: {code}: {message}"
            ));
        }
        let field = |name: &str| {
            xml_text(&text, name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("STS answer from {endpoint} has no {name}"))
        };
        let expiration = field("Expiration")?;
        Ok(AwsCredentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?.into(),
            session_token: Some(field("SessionToken")?.into()),
            expires_at: Some(parse_time(&expiration)?),
        })
    }

    async fn container_source(&self) -> Result<AwsCredentials, String> {
        let url = if let Some(relative) = self.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            format!("{CONTAINER_ENDPOINT}{relative}")
        } else if let Some(full) = self.var("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            let parsed = Url::parse(&full).map_err(|e| format!("invalid {full}: {e}"))?;
            if parsed.scheme() == "http" && !allowed_container_host(&parsed) {
                return Err(format!(
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI {full} is plain http to a host that is \
                     neither loopback nor the ECS/EKS credentials address"
                ));
            }
            full
        } else {
            return Err("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI are not set".into());
        };
        let token = match self.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            Some(file) => Some(
                tokio::fs::read_to_string(&file)
                    .await
                    .map_err(|e| format!("reading {file}: {e}"))?
                    .trim()
                    .to_owned(),
            ),
            None => self.var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        };
        let mut req = self.metadata_http.get(&url);
        if let Some(token) = token {
            req = req.header(reqwest::header::AUTHORIZATION, token);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", e.without_url()))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.without_url().to_string())?;
        if !status.is_success() {
            return Err(format!("GET {url} answered {status}"));
        }
        json_credentials(&text, &url)
    }

    async fn imds_source(&self) -> Result<AwsCredentials, String> {
        if self
            .var("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Err("AWS_EC2_METADATA_DISABLED is true".into());
        }
        let base = self
            .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|| IMDS_ENDPOINT.to_owned());
        let base = base.trim_end_matches('/');
        let token_url = format!("{base}/latest/api/token");
        let resp = self
            .metadata_http
            .put(&token_url)
            .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
            .send()
            .await
            .map_err(|e| format!("PUT {token_url}: {}", e.without_url()))?;
        // A refused token request (IMDSv2 unavailable) falls back to IMDSv1.
        let token = if resp.status().is_success() {
            Some(resp.text().await.map_err(|e| e.without_url().to_string())?)
        } else {
            None
        };
        let get = |url: String| {
            let mut req = self.metadata_http.get(&url);
            if let Some(token) = &token {
                req = req.header("X-aws-ec2-metadata-token", token.trim());
            }
            async move {
                let resp = req
                    .send()
                    .await
                    .map_err(|e| format!("GET {url}: {}", e.without_url()))?;
                let status = resp.status();
                let text = resp.text().await.map_err(|e| e.without_url().to_string())?;
                if status.is_success() {
                    Ok(text)
                } else {
                    Err(format!("GET {url} answered {status}"))
                }
            }
        };
        let roles_url = format!("{base}/latest/meta-data/iam/security-credentials/");
        let roles = get(roles_url.clone()).await?;
        let Some(role) = roles.lines().map(str::trim).find(|l| !l.is_empty()) else {
            return Err(format!("{roles_url} lists no instance role"));
        };
        let creds_url = format!("{roles_url}{role}");
        let text = get(creds_url.clone()).await?;
        json_credentials(&text, &creds_url)
    }
}

/// The JSON of IMDS and container credential endpoints.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonCredentials {
    code: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<SecretString>,
    token: Option<SecretString>,
    expiration: Option<String>,
}

fn json_credentials(text: &str, url: &str) -> Result<AwsCredentials, String> {
    let parsed: JsonCredentials =
        serde_json::from_str(text).map_err(|e| format!("{url} answered invalid JSON: {e}"))?;
    if let Some(code) = parsed.code.filter(|c| c != "Success") {
        return Err(format!("{url} answered Code {code}"));
    }
    let (Some(key), Some(secret)) = (parsed.access_key_id, parsed.secret_access_key) else {
        return Err(format!("{url} answered no AccessKeyId/SecretAccessKey"));
    };
    if key.is_empty() || secret.expose_secret().is_empty() {
        return Err(format!(
            "{url} answered an empty AccessKeyId/SecretAccessKey"
        ));
    }
    Ok(AwsCredentials {
        access_key_id: key,
        secret_access_key: secret,
        session_token: parsed.token.filter(|t| !t.expose_secret().is_empty()),
        expires_at: parsed.expiration.as_deref().map(parse_time).transpose()?,
    })
}

fn parse_time(text: &str) -> Result<SystemTime, String> {
    let parsed =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .map_err(|e| format!("invalid expiration time {text:?}: {e}"))?;
    Ok(SystemTime::from(parsed))
}

/// Plain-http container credential endpoints the SDKs accept: loopback, and the ECS/EKS
/// link-local addresses.
fn allowed_container_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => {
            ip.is_loopback()
                || ip == std::net::Ipv4Addr::new(169, 254, 170, 2)
                || ip == std::net::Ipv4Addr::new(169, 254, 170, 23)
        }
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback()
                || ip
                    == "fd00:ec2::23"
                        .parse::<std::net::Ipv6Addr>()
                        .unwrap_or(std::net::Ipv6Addr::LOCALHOST)
        }
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write as _;

    use wiremock::matchers::{body_string_contains, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    /// Every metadata endpoint pointed at a closed local port, so no test reaches a real one.
    const NO_IMDS: (&str, &str) = ("AWS_EC2_METADATA_DISABLED", "true");

    fn rfc3339(at: SystemTime) -> String {
        time::OffsetDateTime::from(at)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    }

    fn sts_answer(key: &str, expires: SystemTime) -> String {
        format!(
            r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:ci:oar</SubjectFromWebIdentityToken>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/oar-cache/oar</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:oar</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>token&amp;with+specials/{key}</SessionToken>
      <SecretAccessKey>secret/{key}</SecretAccessKey>
      <Expiration>{}</Expiration>
      <AccessKeyId>{key}</AccessKeyId>
    </Credentials>
    <Provider>www.amazon.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#,
            rfc3339(expires)
        )
    }

    fn token_file(contents: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(contents.as_bytes()).unwrap();
        f
    }

    #[tokio::test]
    async fn environment_variables_come_first() {
        let iam = IamCredentials::new(env(&[
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_SESSION_TOKEN", "env-token"),
            // Also configured, but never reached.
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/x"),
        ]))
        .unwrap();
        let creds = iam.credentials().await.unwrap();
        assert_eq!(creds.access_key_id, "AKIDENV");
        assert_eq!(creds.secret_access_key.expose_secret(), "env-secret");
        assert_eq!(
            creds.session_token.as_ref().map(|t| t.expose_secret()),
            Some("env-token")
        );
        assert_eq!(creds.expires_at, None);
        assert!(!format!("{creds:?}").contains("env-secret"));
        assert!(!format!("{creds:?}").contains("env-token"));
    }

    #[tokio::test]
    async fn web_identity_assumes_the_role_at_sts_and_caches() {
        let sts = MockServer::start().await;
        let expires = SystemTime::now() + Duration::from_secs(3600);
        Mock::given(method("POST"))
            .and(path("/"))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .and(body_string_contains("Action=AssumeRoleWithWebIdentity"))
            .and(body_string_contains("Version=2011-06-15"))
            .and(body_string_contains(
                "RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Foar-cache",
            ))
            .and(body_string_contains("RoleSessionName=oar-test"))
            .and(body_string_contains("WebIdentityToken=eyJ.projected.jwt"))
            .respond_with(
                ResponseTemplate::new(200).set_body_string(sts_answer("ASIAWEBID", expires)),
            )
            .expect(1)
            .mount(&sts)
            .await;
        let token = token_file("eyJ.projected.jwt\n");
        let iam = IamCredentials::new(env(&[
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                token.path().to_str().unwrap(),
            ),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/oar-cache"),
            ("AWS_ROLE_SESSION_NAME", "oar-test"),
            ("AWS_ENDPOINT_URL_STS", &sts.uri()),
            NO_IMDS,
        ]))
        .unwrap();
        let creds = iam.credentials().await.unwrap();
        assert_eq!(creds.access_key_id, "ASIAWEBID");
        assert_eq!(creds.secret_access_key.expose_secret(), "secret/ASIAWEBID");
        assert_eq!(
            creds.session_token.as_ref().map(|t| t.expose_secret()),
            Some("token&with+specials/ASIAWEBID"),
            "XML entities are decoded"
        );
        let got = creds.expires_at.unwrap();
        let diff = got
            .duration_since(expires)
            .or_else(|e| Ok::<_, ()>(e.duration()))
            .unwrap();
        assert!(diff < Duration::from_secs(1), "expiration parsed");
        // Cached: the second call does not reach STS (`expect(1)` is checked on drop).
        let again = iam.credentials().await.unwrap();
        assert_eq!(again.access_key_id, "ASIAWEBID");
    }

    #[tokio::test]
    async fn credentials_about_to_expire_are_refreshed() {
        let sts = MockServer::start().await;
        let soon = SystemTime::now() + Duration::from_secs(60);
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_string(sts_answer("ASIASOON", soon)))
            .expect(2)
            .mount(&sts)
            .await;
        let token = token_file("jwt");
        let iam = IamCredentials::new(env(&[
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                token.path().to_str().unwrap(),
            ),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_ENDPOINT_URL_STS", &sts.uri()),
            NO_IMDS,
        ]))
        .unwrap();
        iam.credentials().await.unwrap();
        iam.credentials().await.unwrap();
    }

    #[tokio::test]
    async fn cached_credentials_must_outlive_the_wanted_validity() {
        let sts = MockServer::start().await;
        let in_20_minutes = SystemTime::now() + Duration::from_secs(20 * 60);
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200).set_body_string(sts_answer("ASIA20", in_20_minutes)),
            )
            .expect(3)
            .mount(&sts)
            .await;
        let token = token_file("jwt");
        let iam = IamCredentials::new(env(&[
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                token.path().to_str().unwrap(),
            ),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_ENDPOINT_URL_STS", &sts.uri()),
            NO_IMDS,
        ]))
        .unwrap();
        const MINUTE: Duration = Duration::from_secs(60);
        iam.credentials_for(10 * MINUTE).await.unwrap(); // STS call 1
        iam.credentials_for(10 * MINUTE).await.unwrap(); // cached: 20 minutes left > 10
        iam.credentials_for(60 * MINUTE).await.unwrap(); // STS call 2: wants 55 (capped) > 20
        iam.credentials().await.unwrap(); // cached: wants 5
        iam.credentials_for(30 * MINUTE).await.unwrap(); // STS call 3
    }

    #[tokio::test]
    async fn sts_errors_are_reported_with_their_code() {
        let sts = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(400).set_body_string(
                "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>\
                 <Message>Couldn't retrieve verification key from your identity provider</Message>\
                 </Error></ErrorResponse>",
            ))
            .mount(&sts)
            .await;
        let token = token_file("jwt");
        let iam = IamCredentials::new(env(&[
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                token.path().to_str().unwrap(),
            ),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_ENDPOINT_URL_STS", &sts.uri()),
            NO_IMDS,
        ]))
        .unwrap();
        let err = iam.credentials().await.unwrap_err().to_string();
        assert!(err.contains("InvalidIdentityToken"), "{err}");
        assert!(err.contains("verification key"), "{err}");
        assert!(
            err.contains("AWS_EC2_METADATA_DISABLED"),
            "every source is named: {err}"
        );
    }

    #[tokio::test]
    async fn instance_metadata_v2() {
        let imds = MockServer::start().await;
        let expires = SystemTime::now() + Duration::from_secs(6 * 3600);
        Mock::given(method("PUT"))
            .and(path("/latest/api/token"))
            .and(header("x-aws-ec2-metadata-token-ttl-seconds", "21600"))
            .respond_with(ResponseTemplate::new(200).set_body_string("IMDS-TOKEN"))
            .mount(&imds)
            .await;
        Mock::given(method("GET"))
            .and(path("/latest/meta-data/iam/security-credentials/"))
            .and(header("x-aws-ec2-metadata-token", "IMDS-TOKEN"))
            .respond_with(ResponseTemplate::new(200).set_body_string("node-role\n"))
            .mount(&imds)
            .await;
        Mock::given(method("GET"))
            .and(path("/latest/meta-data/iam/security-credentials/node-role"))
            .and(header("x-aws-ec2-metadata-token", "IMDS-TOKEN"))
            .respond_with(ResponseTemplate::new(200).set_body_string(format!(
                r#"{{"Code":"Success","LastUpdated":"2024-01-01T00:00:00Z","Type":"AWS-HMAC",
                   "AccessKeyId":"ASIAIMDS","SecretAccessKey":"imds-secret","Token":"imds-token",
                   "Expiration":"{}"}}"#,
                rfc3339(expires)
            )))
            .mount(&imds)
            .await;
        let iam = IamCredentials::new(env(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.uri())]))
            .unwrap();
        let creds = iam.credentials().await.unwrap();
        assert_eq!(creds.access_key_id, "ASIAIMDS");
        assert_eq!(creds.secret_access_key.expose_secret(), "imds-secret");
        assert_eq!(
            creds.session_token.as_ref().map(|t| t.expose_secret()),
            Some("imds-token")
        );
        assert!(creds.expires_at.is_some());
    }

    #[tokio::test]
    async fn container_credentials_with_an_authorization_token_file() {
        let agent = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/credentials"))
            .and(header("authorization", "pod-identity-token"))
            .respond_with(ResponseTemplate::new(200).set_body_string(
                r#"{"AccessKeyId":"ASIAPOD","SecretAccessKey":"pod-secret","Token":"pod-token",
                    "Expiration":"2999-01-01T00:00:00Z"}"#,
            ))
            .mount(&agent)
            .await;
        let token = token_file("pod-identity-token\n");
        let iam = IamCredentials::new(env(&[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                &format!("{}/v1/credentials", agent.uri()),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token.path().to_str().unwrap(),
            ),
            NO_IMDS,
        ]))
        .unwrap();
        let creds = iam.credentials().await.unwrap();
        assert_eq!(creds.access_key_id, "ASIAPOD");
    }

    #[tokio::test]
    async fn nothing_configured_is_a_clear_error() {
        let iam = IamCredentials::new(env(&[("AWS_ACCESS_KEY_ID", "AKID"), NO_IMDS])).unwrap();
        let err = iam.credentials().await.unwrap_err().to_string();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY is not"), "{err}");
        assert!(
            err.contains("AWS_WEB_IDENTITY_TOKEN_FILE is not set"),
            "{err}"
        );
    }

    #[test]
    fn sts_endpoint_choice() {
        let iam = |vars: &[(&str, &str)]| IamCredentials::new(env(vars)).unwrap();
        assert_eq!(iam(&[]).sts_endpoint(), "https://sts.amazonaws.com");
        assert_eq!(
            iam(&[])
                .with_region(Some("eu-west-1".into()))
                .sts_endpoint(),
            "https://sts.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            iam(&[("AWS_REGION", "cn-north-1")])
                .with_region(Some("eu-west-1".into()))
                .sts_endpoint(),
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            iam(&[("AWS_ENDPOINT_URL", "http://localstack:4566")]).sts_endpoint(),
            "http://localstack:4566"
        );
    }

    #[test]
    fn container_hosts() {
        let ok = |u: &str| allowed_container_host(&Url::parse(u).unwrap());
        assert!(ok("http://127.0.0.1:8080/x"));
        assert!(ok("http://169.254.170.23/v1/credentials"));
        assert!(ok("http://[fd00:ec2::23]/v1/credentials"));
        assert!(!ok("http://10.1.2.3/creds"));
    }
}
