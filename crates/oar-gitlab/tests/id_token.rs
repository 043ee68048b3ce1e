//! ID tokens issued by FakeGitlab (real RS256 JWTs, GitLab's claims, a JWKS at
//! `/oauth/discovery/keys`) through the [`Verifier`]: what it accepts, what it refuses and
//! why, and key rotation.

use oar_gitlab::id_token::{Expected, IdTokenError, Verifier, VerifierConfig};
use oar_gitlab::{Client, ClientConfig, JobRequest, JobRequestOutcome, JobResponse, Token};
use oar_testkit::{FakeGitlab, IdTokenSigner, JobSpec};
use serde_json::json;

const RUNNER: &str = "glrt-id-token-runner-0001";
const VAR: &str = "OAR_ID_TOKEN";

struct Setup {
    gl: FakeGitlab,
    client: Client,
    verifier: Verifier,
}

async fn setup() -> Setup {
    let gl = FakeGitlab::start().await.unwrap();
    gl.add_runner(RUNNER);
    let client = Client::new(&ClientConfig {
        url: gl.url(),
        version: "test".into(),
        ..ClientConfig::default()
    })
    .unwrap();
    let config = VerifierConfig::for_client(&client, "oar", None, None).unwrap();
    assert_eq!(config.issuer, gl.url());
    let verifier = Verifier::new(&client, config);
    Setup {
        gl,
        client,
        verifier,
    }
}

impl Setup {
    /// Enqueues `spec` and takes it as the runner would.
    async fn take(&self, spec: JobSpec) -> JobResponse {
        self.gl.enqueue_job(spec);
        let result = self
            .client
            .request_job(&JobRequest {
                token: Token::new(RUNNER),
                system_id: "s_test".into(),
                last_update: String::new(),
                info: Default::default(),
            })
            .await
            .unwrap();
        match result.outcome {
            JobRequestOutcome::Job(job) => *job,
            other => panic!("no job: {other:?}"),
        }
    }

    fn jwks_fetches(&self) -> usize {
        self.gl
            .requests()
            .iter()
            .filter(|r| r.path == "/oauth/discovery/keys")
            .count()
    }
}

fn prod_job() -> JobSpec {
    JobSpec::new("acme/platform/api")
        .git_ref("main")
        .protected(true)
        .environment("production")
        .id_token(VAR, "oar")
}

fn token_of(job: &JobResponse, name: &str) -> String {
    job.variables
        .iter()
        .rev()
        .find(|v| v.key == name)
        .map(|v| {
            assert!(v.masked && !v.public, "ID tokens are masked secrets");
            v.value.clone()
        })
        .unwrap_or_else(|| panic!("no variable {name}"))
}

fn expected(job: &JobResponse) -> Expected<'_> {
    Expected {
        job_id: job.id,
        project_path: &job.job_info.project_full_path,
        git_ref: &job.git_info.git_ref,
        ref_protected: job.ref_protected,
        environment: payload_environment(job),
    }
}

/// `CI_ENVIRONMENT_NAME`, as `oar_kube::identity::payload_environment` reads it.
fn payload_environment(job: &JobResponse) -> Option<&str> {
    job.variables
        .iter()
        .rev()
        .find(|v| v.key == "CI_ENVIRONMENT_NAME")
        .map(|v| v.value.as_str())
        .filter(|v| !v.is_empty())
}

#[tokio::test]
async fn a_token_gitlab_issued_for_the_job_verifies() {
    let s = setup().await;
    let job = s.take(prod_job()).await;
    assert_eq!(job.ref_protected, Some(true));
    let token = token_of(&job, VAR);
    let verified = s.verifier.verify(&token, &expected(&job)).await.unwrap();
    assert_eq!(verified.environment.as_deref(), Some("production"));
    assert_eq!(
        verified.subject,
        "project_path:acme/platform/api:ref_type:branch:ref:main"
    );
    // The key set is fetched once and kept.
    let second = s.take(prod_job()).await;
    s.verifier
        .verify(&token_of(&second, VAR), &expected(&second))
        .await
        .unwrap();
    assert_eq!(s.jwks_fetches(), 1);
}

#[tokio::test]
async fn tokens_gitlab_would_not_have_issued_for_this_job_are_refused() {
    let s = setup().await;
    let job = s.take(prod_job()).await;
    let exp = expected(&job);
    let claims = s.gl.id_token_claims(job.id, "oar").unwrap();
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims.clone();
        edit(&mut c);
        s.gl.sign_id_token(&c, IdTokenSigner::Current)
    };
    let now = claims["iat"].as_u64().unwrap();

    // The untouched claims verify: every refusal below is due to its one change.
    s.verifier.verify(&with(&|_| {}), &exp).await.unwrap();

    let cases: Vec<(&str, String, IdTokenError)> = vec![
        (
            "wrong signature",
            s.gl.sign_id_token(&claims, IdTokenSigner::ForgedKid(2)),
            IdTokenError::Signature {
                kid: kid_of(&s.gl.sign_id_token(&claims, IdTokenSigner::Current)),
            },
        ),
        (
            "unknown key",
            s.gl.sign_id_token(&claims, IdTokenSigner::Key(2)),
            IdTokenError::UnknownKey {
                kid: kid_of(&s.gl.sign_id_token(&claims, IdTokenSigner::Key(2))),
                jwks_url: format!("{}/oauth/discovery/keys", s.gl.url()),
            },
        ),
        (
            "expired",
            with(&|c| {
                c["iat"] = json!(now - 7200);
                c["nbf"] = json!(now - 7200);
                c["exp"] = json!(now - 3600);
            }),
            IdTokenError::Expired,
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("sts.amazonaws.com")),
            IdTokenError::Audience {
                expected: "oar".into(),
            },
        ),
        (
            "another issuer",
            with(&|c| c["iss"] = json!("https://gitlab.evil.example")),
            IdTokenError::Issuer {
                expected: s.gl.url(),
            },
        ),
        (
            "another project",
            with(&|c| c["project_path"] = json!("acme/other")),
            IdTokenError::ClaimMismatch {
                claim: "project_path",
                token: "acme/other".into(),
                payload: "acme/platform/api".into(),
            },
        ),
        (
            "another ref",
            with(&|c| c["ref"] = json!("feature")),
            IdTokenError::ClaimMismatch {
                claim: "ref",
                token: "feature".into(),
                payload: "main".into(),
            },
        ),
        (
            "unprotected ref",
            with(&|c| c["ref_protected"] = json!("false")),
            IdTokenError::ClaimMismatch {
                claim: "ref_protected",
                token: "false".into(),
                payload: "true".into(),
            },
        ),
        (
            "another environment",
            with(&|c| c["environment"] = json!("staging")),
            IdTokenError::ClaimMismatch {
                claim: "environment",
                token: "staging".into(),
                payload: "production".into(),
            },
        ),
        (
            "no job id",
            with(&|c| {
                c.as_object_mut().unwrap().remove("job_id");
            }),
            IdTokenError::MissingClaim("job_id".into()),
        ),
        (
            "not a JWT",
            "not.a.jwt".into(),
            IdTokenError::Malformed("InvalidToken".into()),
        ),
    ];
    let mut failures = Vec::new();
    for (name, token, want) in cases {
        match s.verifier.verify(&token, &exp).await {
            Err(e)
                if e == want
                    || (matches!(want, IdTokenError::Malformed(_))
                        && matches!(e, IdTokenError::Malformed(_))) =>
            {
                assert!(
                    !e.to_string().contains(&token),
                    "{name}: the error shows the token"
                );
            }
            other => failures.push(format!("{name}: expected {want:?}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn another_jobs_token_is_refused() {
    let s = setup().await;
    let first = s.take(prod_job()).await;
    let second = s.take(prod_job()).await;
    let err = s
        .verifier
        .verify(&token_of(&first, VAR), &expected(&second))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        IdTokenError::ClaimMismatch {
            claim: "job_id",
            token: first.id.to_string(),
            payload: second.id.to_string(),
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "its job_id claim is \"{}\", the job's is \"{}\"",
            first.id, second.id
        )
    );
}

#[tokio::test]
async fn a_job_claiming_an_environment_its_token_does_not_have_is_refused() {
    let s = setup().await;
    // A job author sets CI_ENVIRONMENT_NAME without deploying: the token has no environment.
    let job = s
        .take(
            JobSpec::new("acme/platform/api")
                .protected(true)
                .variable("CI_ENVIRONMENT_NAME", "production")
                .id_token(VAR, "oar"),
        )
        .await;
    let err = s
        .verifier
        .verify(&token_of(&job, VAR), &expected(&job))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "its environment claim is \"\", the job's is \"production\""
    );
}

#[tokio::test]
async fn key_rotation_is_picked_up_by_fetching_the_keys_again() {
    let s = setup().await;
    let before = s.take(prod_job()).await;
    s.verifier
        .verify(&token_of(&before, VAR), &expected(&before))
        .await
        .unwrap();
    assert_eq!(s.jwks_fetches(), 1);
    s.gl.rotate_id_token_key();
    let after = s.take(prod_job()).await;
    let token = token_of(&after, VAR);
    assert_ne!(kid_of(&token), kid_of(&token_of(&before, VAR)));
    s.verifier.verify(&token, &expected(&after)).await.unwrap();
    assert_eq!(
        s.jwks_fetches(),
        2,
        "the unknown kid made it fetch the keys again"
    );
    // Both keys are now known: no further fetch.
    s.verifier
        .verify(&token_of(&before, VAR), &expected(&before))
        .await
        .unwrap();
    assert_eq!(s.jwks_fetches(), 2);
}

#[tokio::test]
async fn an_unreachable_jwks_is_a_refusal_naming_the_url() {
    let s = setup().await;
    let job = s.take(prod_job()).await;
    let config = VerifierConfig::for_client(
        &s.client,
        "oar",
        None,
        Some(&format!("{}/no/such/keys", s.gl.url())),
    )
    .unwrap();
    let verifier = Verifier::new(&s.client, config);
    let err = verifier
        .verify(&token_of(&job, VAR), &expected(&job))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot get GitLab's signing keys from {}/no/such/keys: HTTP 404",
            s.gl.url()
        )),
        "{message}"
    );
}

/// The `kid` of a JWT's header, decoded by hand (not by the code under test).
fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    value["kid"].as_str().unwrap().to_owned()
}
