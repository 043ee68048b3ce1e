//! Verifying GitLab ID tokens (`id_tokens:` in a job) against the instance's keys.
//!
//! GitLab signs ID tokens with RS256 and publishes its keys as a JWKS at
//! `/oauth/discovery/keys`. The [`Verifier`] fetches that set once, keeps it, and fetches it
//! again when a token names a key it does not have (GitLab rotated its key) or when the set
//! is older than [`JWKS_MAX_AGE`]. A token is accepted when its signature verifies with the
//! key its `kid` names, its `iss` and `aud` are the expected ones, it is within `nbf`/`exp`
//! (with [`LEEWAY`]), and its `job_id`, `project_path`, `ref`, `ref_protected` and
//! `environment` claims equal the job payload's ([`Expected`]): so a token of another job,
//! project or ref is refused even though GitLab signed it.
//!
//! Tokens are never logged or put into errors.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use crate::client::Client;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(60);
/// How long a fetched key set is used before it is fetched again.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// The largest JWKS answer read.
const JWKS_MAX_BYTES: usize = 1 << 20;

/// Why a token was refused. The messages name claims and values from the payload, never the
/// token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdTokenError {
    /// Not a JWT, or its header or claims do not parse.
    #[error("not a valid JWT: {0}")]
    Malformed(String),
    /// Signed with an algorithm other than RS256.
    #[error("signed with {0}, GitLab signs with RS256")]
    Algorithm(String),
    /// The header has no `kid`.
    #[error("its header names no key (kid)")]
    NoKeyId,
    /// The `kid` is not in the instance's key set, even after fetching it again.
    #[error("signed by key {kid:?}, which {jwks_url} does not list")]
    UnknownKey {
        /// The key id.
        kid: String,
        /// Where the keys were fetched.
        jwks_url: String,
    },
    /// The signature does not verify with the key named by `kid`.
    #[error("its signature does not verify with GitLab's key {kid:?}")]
    Signature {
        /// The key id.
        kid: String,
    },
    /// `exp` is in the past.
    #[error("it has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("it is not valid yet (nbf)")]
    NotYetValid,
    /// `iss` is not the expected issuer.
    #[error("its issuer is not {expected:?}")]
    Issuer {
        /// The expected issuer.
        expected: String,
    },
    /// `aud` does not contain the expected audience.
    #[error("its audience is not {expected:?} (id_tokens: {{aud: {expected}}} in the job)")]
    Audience {
        /// The expected audience.
        expected: String,
    },
    /// A claim is missing.
    #[error("it has no {0} claim")]
    MissingClaim(String),
    /// A claim differs from the job payload's value.
    #[error("its {claim} claim is {token:?}, the job's is {payload:?}")]
    ClaimMismatch {
        /// The claim.
        claim: &'static str,
        /// The token's value.
        token: String,
        /// The payload's value.
        payload: String,
    },
    /// The key set could not be fetched or read.
    #[error("cannot get GitLab's signing keys from {jwks_url}: {reason}")]
    Jwks {
        /// Where.
        jwks_url: String,
        /// Why.
        reason: String,
    },
}

/// What the payload says about the job, which the token's claims must equal.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// `id` of the payload (`job_id` claim).
    pub job_id: i64,
    /// `job_info.project_full_path` (`project_path`).
    pub project_path: &'a str,
    /// `git_info.ref` (`ref`).
    pub git_ref: &'a str,
    /// `git_info.protected` (`ref_protected`; `None` compares as `false`).
    pub ref_protected: Option<bool>,
    /// The payload's environment name, `CI_ENVIRONMENT_NAME` (`environment`; `None`: the
    /// token must have none).
    pub environment: Option<&'a str>,
}

/// The claims of a token that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdToken {
    /// `sub`: `project_path:<path>:ref_type:<type>:ref:<ref>`.
    pub subject: String,
    /// `environment`.
    pub environment: Option<String>,
}

/// Where the keys are and what tokens must carry.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// The JWKS URL (`<GitLab>/oauth/discovery/keys`).
    pub jwks_url: Url,
    /// The `iss` tokens must carry (GitLab's URL, no trailing `/`).
    pub issuer: String,
    /// The `aud` tokens must carry.
    pub audience: String,
}

impl VerifierConfig {
    /// GitLab's defaults for `client`'s instance: keys at `/oauth/discovery/keys` and the
    /// instance URL as issuer; `issuer` and `jwks_url` replace them when set.
    pub fn for_client(
        client: &Client,
        audience: &str,
        issuer: Option<&str>,
        jwks_url: Option<&str>,
    ) -> Result<Self, crate::Error> {
        let root = client.root();
        let jwks_url = match jwks_url {
            Some(u) => Url::parse(u).map_err(|e| crate::Error::InvalidUrl {
                url: u.to_owned(),
                reason: e.to_string(),
            })?,
            None => root
                .join("oauth/discovery/keys")
                .map_err(|e| crate::Error::InvalidUrl {
                    url: root.to_string(),
                    reason: e.to_string(),
                })?,
        };
        let issuer = issuer
            .map_or_else(|| root.as_str().to_owned(), str::to_owned)
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            jwks_url,
            issuer,
            audience: audience.to_owned(),
        })
    }
}

struct Cached {
    keys: JwkSet,
    fetched: Instant,
}

/// Verifies ID tokens of one GitLab instance; cheap to clone, the key set is shared.
#[derive(Clone)]
pub struct Verifier {
    http: reqwest::Client,
    config: Arc<VerifierConfig>,
    keys: Arc<Mutex<Option<Cached>>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    job_id: Option<Value>,
    #[serde(default)]
    project_path: Option<String>,
    #[serde(rename = "ref", default)]
    git_ref: Option<String>,
    #[serde(default)]
    ref_protected: Option<Value>,
    #[serde(default)]
    environment: Option<String>,
}

/// A claim GitLab sends as a string (`"1234"`, `"true"`) that may also come as a number or
/// a boolean.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Verifier {
    /// A verifier using `client`'s HTTP connection settings (TLS CA, client certificate).
    pub fn new(client: &Client, config: VerifierConfig) -> Self {
        Self {
            http: client.raw().clone(),
            config: Arc::new(config),
            keys: Arc::new(Mutex::new(None)),
        }
    }

    /// The settings.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    async fn fetch(&self) -> Result<JwkSet, IdTokenError> {
        let url = &self.config.jwks_url;
        let error = |reason: String| IdTokenError::Jwks {
            jwks_url: url.to_string(),
            reason,
        };
        let resp = self
            .http
            .get(url.clone())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| error(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(error(format!("HTTP {status}")));
        }
        let body = resp.bytes().await.map_err(|e| error(e.to_string()))?;
        if body.len() > JWKS_MAX_BYTES {
            return Err(error(format!(
                "the answer is larger than {JWKS_MAX_BYTES} bytes"
            )));
        }
        serde_json::from_slice(&body).map_err(|e| error(format!("not a JWKS: {e}")))
    }

    /// The key `kid`, from the cached set, else from a fresh one.
    async fn key(&self, kid: &str) -> Result<DecodingKey, IdTokenError> {
        let mut cache = self.keys.lock().await;
        let fresh = cache
            .as_ref()
            .is_some_and(|c| c.fetched.elapsed() < JWKS_MAX_AGE);
        if fresh && let Some(jwk) = cache.as_ref().and_then(|c| c.keys.find(kid)) {
            return DecodingKey::from_jwk(jwk).map_err(|e| IdTokenError::Malformed(e.to_string()));
        }
        // Unknown key or stale set: fetch again (one fetch at a time: the lock is held).
        let keys = self.fetch().await?;
        tracing::debug!(jwks_url = %self.config.jwks_url, keys = keys.keys.len(), "fetched GitLab's ID token keys");
        let found = keys.find(kid).map(DecodingKey::from_jwk);
        *cache = Some(Cached {
            keys,
            fetched: Instant::now(),
        });
        match found {
            Some(key) => key.map_err(|e| IdTokenError::Malformed(e.to_string())),
            None => Err(IdTokenError::UnknownKey {
                kid: kid.to_owned(),
                jwks_url: self.config.jwks_url.to_string(),
            }),
        }
    }

    /// Verifies `token` for the job described by `expected`.
    pub async fn verify(
        &self,
        token: &str,
        expected: &Expected<'_>,
    ) -> Result<VerifiedIdToken, IdTokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| IdTokenError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(IdTokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(IdTokenError::NoKeyId)?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        validation.set_audience(&[&self.config.audience]);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::InvalidSignature => IdTokenError::Signature { kid: kid.clone() },
            ErrorKind::ExpiredSignature => IdTokenError::Expired,
            ErrorKind::ImmatureSignature => IdTokenError::NotYetValid,
            ErrorKind::InvalidIssuer => IdTokenError::Issuer {
                expected: self.config.issuer.clone(),
            },
            ErrorKind::InvalidAudience => IdTokenError::Audience {
                expected: self.config.audience.clone(),
            },
            ErrorKind::MissingRequiredClaim(c) => IdTokenError::MissingClaim(c.clone()),
            ErrorKind::InvalidAlgorithm => IdTokenError::Algorithm(format!("{:?}", header.alg)),
            _ => IdTokenError::Malformed(e.to_string()),
        })?;
        check_claims(&data.claims, expected)
    }
}

fn check_claims(c: &Claims, e: &Expected<'_>) -> Result<VerifiedIdToken, IdTokenError> {
    let equal = |claim: &'static str, token: Option<String>, payload: String| match token {
        None => Err(IdTokenError::MissingClaim(claim.to_owned())),
        Some(t) if t == payload => Ok(()),
        Some(t) => Err(IdTokenError::ClaimMismatch {
            claim,
            token: t,
            payload,
        }),
    };
    equal("job_id", c.job_id.as_ref().map(text), e.job_id.to_string())?;
    equal(
        "project_path",
        c.project_path.clone(),
        e.project_path.to_owned(),
    )?;
    equal("ref", c.git_ref.clone(), e.git_ref.to_owned())?;
    equal(
        "ref_protected",
        c.ref_protected.as_ref().map(text),
        e.ref_protected.unwrap_or(false).to_string(),
    )?;
    let token_env = c.environment.clone().filter(|v| !v.is_empty());
    if token_env.as_deref() != e.environment {
        return Err(IdTokenError::ClaimMismatch {
            claim: "environment",
            token: token_env.unwrap_or_default(),
            payload: e.environment.unwrap_or_default().to_owned(),
        });
    }
    Ok(VerifiedIdToken {
        subject: c.sub.clone().unwrap_or_default(),
        environment: token_env,
    })
}
