//! The S3 test server checks SigV4 like S3 does: presigned URLs signed with the wrong secret,
//! expired ones, tampered ones, unsigned requests and unknown keys are all refused.

use std::time::Duration;

use oar_testkit::s3::S3Server;
use reqwest::{Client, StatusCode};
use rusty_s3::actions::{GetObject, PutObject, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};

const BUCKET: &str = "oar-cache";

fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn bucket(s3: &S3Server) -> Bucket {
    Bucket::new(
        s3.url(),
        UrlStyle::Path,
        s3.bucket().to_owned(),
        "us-east-1",
    )
    .expect("bucket")
}

fn good_credentials(s3: &S3Server) -> Credentials {
    Credentials::new(s3.access_key(), s3.secret_key())
}

/// The `<Code>` of an S3 XML error body.
fn error_code(body: &str) -> Option<&str> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = body[start..].find("</Code>")? + start;
    Some(&body[start..end])
}

async fn status_and_body(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    (status, resp.text().await.expect("body"))
}

#[tokio::test]
async fn presigned_put_then_get_round_trips() {
    let s3 = S3Server::start(BUCKET).await.expect("server");
    let bucket = bucket(&s3);
    let creds = good_credentials(&s3);
    let key = "runner/abc/project/7/main key";

    let put = PutObject::new(&bucket, Some(&creds), key).sign(Duration::from_secs(600));
    let resp = client()
        .put(put)
        .body(b"hello cache".to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.text().await);
    assert_eq!(s3.get_object(key).as_deref(), Some(&b"hello cache"[..]));
    assert_eq!(s3.object_keys(), vec![key.to_owned()]);

    let get = GetObject::new(&bucket, Some(&creds), key).sign(Duration::from_secs(600));
    let resp = client().get(get).send().await.expect("get");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.expect("bytes").as_ref(), b"hello cache");

    let methods: Vec<(String, u16)> = s3
        .requests()
        .into_iter()
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(methods, vec![("PUT".into(), 200), ("GET".into(), 200)]);
}

#[tokio::test]
async fn session_token_is_part_of_the_signature() {
    let s3 = S3Server::start(BUCKET).await.expect("server");
    s3.put_object("k", b"v").expect("seed");
    let bucket = bucket(&s3);
    let creds = Credentials::new_with_token(s3.access_key(), s3.secret_key(), "session-token");
    let url = GetObject::new(&bucket, Some(&creds), "k").sign(Duration::from_secs(60));
    assert!(
        url.query()
            .unwrap_or("")
            .contains("X-Amz-Security-Token=session-token")
    );
    let resp = client().get(url.clone()).send().await.expect("get");
    assert_eq!(resp.status(), StatusCode::OK);

    // Changing the (signed) token breaks the signature.
    let tampered = url.as_str().replace("session-token", "other-token");
    let (status, body) = status_and_body(client().get(tampered).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), Some("SignatureDoesNotMatch"), "{body}");
}

#[tokio::test]
async fn wrong_secret_is_signature_does_not_match() {
    let s3 = S3Server::start(BUCKET).await.expect("server");
    s3.put_object("present", b"data").expect("seed");
    let bucket = bucket(&s3);
    let wrong = Credentials::new(s3.access_key(), "not-the-secret");

    let get = GetObject::new(&bucket, Some(&wrong), "present").sign(Duration::from_secs(600));
    let (status, body) = status_and_body(client().get(get).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), Some("SignatureDoesNotMatch"), "{body}");

    let put = PutObject::new(&bucket, Some(&wrong), "new").sign(Duration::from_secs(600));
    let resp = client().put(put).body("x").send().await.expect("put");
    let (status, body) = status_and_body(resp).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), Some("SignatureDoesNotMatch"), "{body}");
    assert_eq!(s3.get_object("new"), None, "a refused PUT stores nothing");
}

#[tokio::test]
async fn expired_presigned_url_is_refused() {
    let s3 = S3Server::start(BUCKET).await.expect("server");
    s3.put_object("present", b"data").expect("seed");
    let bucket = bucket(&s3);
    let creds = good_credentials(&s3);
    let two_hours_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2);

    let get = GetObject::new(&bucket, Some(&creds), "present")
        .sign_with_time(Duration::from_secs(3600), &two_hours_ago);
    let (status, body) = status_and_body(client().get(get).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), Some("AccessDenied"), "{body}");
    assert!(body.contains("expired"), "{body}");

    // Signed two hours ago but valid for three: still good.
    let get = GetObject::new(&bucket, Some(&creds), "present")
        .sign_with_time(Duration::from_secs(3 * 3600), &two_hours_ago);
    let resp = client().get(get).send().await.expect("get");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn tampered_unsigned_and_unknown_key_requests_are_refused() {
    let s3 = S3Server::start(BUCKET).await.expect("server");
    s3.put_object("a", b"A").expect("seed");
    s3.put_object("b", b"B").expect("seed");
    let bucket = bucket(&s3);
    let creds = good_credentials(&s3);

    // The signature covers the path: reusing a signature for another object fails.
    let url = GetObject::new(&bucket, Some(&creds), "a").sign(Duration::from_secs(600));
    let other = url.as_str().replacen("/oar-cache/a?", "/oar-cache/b?", 1);
    assert_ne!(other, url.as_str());
    let (status, body) = status_and_body(client().get(other).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), Some("SignatureDoesNotMatch"), "{body}");

    // ... and the method: a GET signature does not allow a PUT.
    let resp = client().put(url).body("x").send().await.expect("put");
    let (status, body) = status_and_body(resp).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), Some("SignatureDoesNotMatch"), "{body}");
    assert_eq!(s3.get_object("a").as_deref(), Some(&b"A"[..]));

    // Unsigned.
    let plain = bucket.object_url("a");
    let (status, body) = status_and_body(client().get(plain).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), Some("AccessDenied"), "{body}");

    // Unknown access key.
    let stranger = Credentials::new("AKIDUNKNOWN", s3.secret_key());
    let url = GetObject::new(&bucket, Some(&stranger), "a").sign(Duration::from_secs(600));
    let (status, _) = status_and_body(client().get(url).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn missing_object_is_no_such_key() {
    let s3 = S3Server::start(BUCKET).await.expect("server");
    let bucket = bucket(&s3);
    let url =
        GetObject::new(&bucket, Some(&good_credentials(&s3)), "nope").sign(Duration::from_secs(60));
    let (status, body) = status_and_body(client().get(url).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), Some("NoSuchKey"), "{body}");
}

#[tokio::test]
async fn dropping_the_server_stops_it() {
    let s3 = S3Server::start(BUCKET).await.expect("server");
    let url = s3.url();
    let resp = client().get(url.clone()).send().await.expect("up");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "unsigned ListBuckets");
    drop(s3);
    // The accept loop exits at its next turn; a fresh connection is then refused.
    let mut refused = false;
    for _ in 0..200 {
        if client().get(url.clone()).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "server still answering after drop");
}
