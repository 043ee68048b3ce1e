//! GitLab ID tokens (`id_tokens:` in a job): RS256 JWTs signed with one of three fixed RSA
//! keys, with GitLab's claims, and the JWKS GitLab serves at `/oauth/discovery/keys`.
//!
//! The keys are test fixtures (`id_token_keys/key{1,2,3}.pem`, PKCS #8). Key 1 signs and is
//! published at start; [`crate::FakeGitlab::rotate_id_token_key`] moves signing to the next
//! one and publishes it beside the previous one, as GitLab does while it rotates. Key 3 is
//! never published by default: tokens it signs are "another issuer's".

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};
use std::sync::Arc;

use crate::state::{Job, Project, Shared};
use crate::util;

const PEMS: [&str; 3] = [
    include_str!("id_token_keys/key1.pem"),
    include_str!("id_token_keys/key2.pem"),
    include_str!("id_token_keys/key3.pem"),
];

/// Which key signs a token made with [`crate::FakeGitlab::sign_id_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTokenSigner {
    /// The current signing key, with its own `kid` (what GitLab does).
    Current,
    /// Fixture key `n` (0, 1 or 2) with its own `kid`: unknown to the JWKS unless published.
    Key(usize),
    /// Fixture key `n`, but the header names the current key's `kid`: the signature does not
    /// verify against the published key.
    ForgedKid(usize),
}

/// Which keys sign and are published.
#[derive(Debug, Clone)]
pub(crate) struct IdTokenKeys {
    pub signing: usize,
    pub published: Vec<usize>,
}

impl Default for IdTokenKeys {
    fn default() -> Self {
        IdTokenKeys {
            signing: 0,
            published: vec![0],
        }
    }
}

impl IdTokenKeys {
    /// Signing moves to the next of the first two keys; the JWKS holds both.
    pub fn rotate(&mut self) {
        self.signing = (self.signing + 1) % 2;
        if !self.published.contains(&self.signing) {
            self.published.push(self.signing);
        }
    }
}

struct Key {
    pair: RsaKeyPair,
    kid: String,
    jwk: Value,
}

fn keys() -> &'static [Key] {
    static KEYS: OnceLock<Vec<Key>> = OnceLock::new();
    KEYS.get_or_init(|| PEMS.iter().map(|pem| parse(pem)).collect())
}

// The fixtures are part of this crate; a broken one is a bug here, not bad input.
#[allow(clippy::expect_used)]
fn parse(pem: &str) -> Key {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).expect("fixture key is base64");
    let pair = RsaKeyPair::from_pkcs8(&der).expect("fixture key is a PKCS #8 RSA key");
    let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
    let n = URL_SAFE_NO_PAD.encode(&public.n);
    let e = URL_SAFE_NO_PAD.encode(&public.e);
    // RFC 7638 thumbprint, as GitLab's kids are.
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ));
    let jwk = json!({"kty": "RSA", "kid": kid, "e": e, "n": n, "use": "sig", "alg": "RS256"});
    Key { pair, kid, jwk }
}

/// Signs `claims` as an RS256 JWT.
pub(crate) fn sign(claims: &Value, keys_state: &IdTokenKeys, signer: IdTokenSigner) -> String {
    let all = keys();
    let (key, kid) = match signer {
        IdTokenSigner::Current => (&all[keys_state.signing], &all[keys_state.signing].kid),
        IdTokenSigner::Key(n) => (&all[n % 3], &all[n % 3].kid),
        IdTokenSigner::ForgedKid(n) => (&all[n % 3], &all[keys_state.signing].kid),
    };
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0; key.pair.public().modulus_len()];
    // Signing with a valid key into a buffer of the modulus' length does not fail.
    let _ = key.pair.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    );
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// GitLab's claims for an ID token of `job` with audience `aud`.
pub(crate) fn claims(
    base_url: &str,
    job: &Job,
    project: &Project,
    aud: &str,
    lifetime: u64,
) -> Value {
    let p = &project.path;
    let namespace = p.rsplit_once('/').map_or("", |(n, _)| n);
    let iat = now();
    let ref_path = if job.ref_type == "tag" {
        format!("refs/tags/{}", job.git_ref)
    } else {
        format!("refs/heads/{}", job.git_ref)
    };
    let mut c = json!({
        "namespace_id": "5",
        "namespace_path": namespace,
        "project_id": project.id.to_string(),
        "project_path": p,
        "user_id": "1",
        "user_login": "root",
        "user_email": "root@example.com",
        "user_access_level": "owner",
        "pipeline_id": job.pipeline_id.to_string(),
        "pipeline_source": "push",
        "job_id": job.id.to_string(),
        "ref": job.git_ref,
        "ref_type": job.ref_type,
        "ref_path": ref_path,
        "ref_protected": job.spec.protected.to_string(),
        "runner_id": job.runner_id.unwrap_or_default(),
        "runner_environment": "self-hosted",
        "sha": job.sha,
        "project_visibility": "private",
        "ci_config_ref_uri": format!("{}/{p}//.gitlab-ci.yml@{ref_path}", base_url.split_once("://").map_or(base_url, |(_, h)| h)),
        "ci_config_sha": job.sha,
        "jti": util::random_hex(32),
        "iss": base_url,
        "iat": iat,
        "nbf": iat.saturating_sub(5),
        "exp": iat + lifetime,
        "sub": format!("project_path:{p}:ref_type:{}:ref:{}", job.ref_type, job.git_ref),
        "aud": aud,
    });
    if let Some(env) = &job.spec.environment {
        c["environment"] = json!(env);
        c["environment_protected"] = json!("false");
        c["deployment_tier"] = json!(env);
    }
    c
}

/// `GET /oauth/discovery/keys`.
pub(crate) async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    let published = shared.read(|st| st.id_token_keys.published.clone());
    let all = keys();
    let keys: Vec<&Value> = published.iter().map(|i| &all[*i].jwk).collect();
    util::json_response(StatusCode::OK, &json!({ "keys": keys }))
}
