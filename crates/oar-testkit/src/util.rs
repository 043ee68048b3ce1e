//! Small helpers: randomness, checksums, time formatting, slugs and Grape-like responses.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// A random 64-bit number (std's randomly keyed SipHash over a counter).
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// `n` random characters from `alphabet`.
fn random_from(alphabet: &[u8], n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut bits = 0u64;
    let mut left = 0;
    for _ in 0..n {
        if left == 0 {
            bits = random_u64();
            left = 8;
        }
        let idx = (bits & 0xff) as usize % alphabet.len();
        bits >>= 8;
        left -= 1;
        out.push(char::from(alphabet[idx]));
    }
    out
}

/// `n` random lower-case hex digits.
pub(crate) fn random_hex(n: usize) -> String {
    random_from(b"0123456789abcdef", n)
}

/// `prefix` + `n` random `[A-Za-z0-9]` characters.
pub(crate) fn random_token(prefix: &str, n: usize) -> String {
    let body = random_from(
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        n,
    );
    format!("{prefix}{body}")
}

/// `crc32:%08x` of `data`, as the runner reports it.
pub(crate) fn crc32_checksum(data: &[u8]) -> String {
    format!("crc32:{:08x}", crc32fast::hash(data))
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC) for `t`.
pub(crate) fn iso8601(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// GitLab's slug: lower-case, `[^a-z0-9]` → `-`, at most 63 chars, no leading/trailing `-`.
pub(crate) fn slugify(s: &str) -> String {
    let mapped: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    mapped.trim_matches('-').to_owned()
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Grape's `{"message": ...}` error.
pub(crate) fn message(status: StatusCode, msg: &str) -> Response {
    json_response(status, &json!({ "message": msg }))
}

/// Grape's parameter validation error, `400 {"error": ...}`.
pub(crate) fn bad_param(msg: &str) -> Response {
    json_response(StatusCode::BAD_REQUEST, &json!({ "error": msg }))
}

/// `403 Forbidden` without `Job-Status`.
pub(crate) fn forbidden() -> Response {
    message(StatusCode::FORBIDDEN, "403 Forbidden")
}

/// `403` with `Job-Status` (`job_forbidden!`).
pub(crate) fn job_forbidden(status: &str) -> Response {
    let mut resp = message(
        StatusCode::FORBIDDEN,
        "403 Forbidden - Job is not processing on runner",
    );
    set_header(&mut resp, "job-status", status);
    resp
}

/// A `text/plain` response whose body is the status code, as Rails answers job updates.
pub(crate) fn status_body(status: StatusCode) -> Response {
    let mut resp = (status, status.as_u16().to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// Set a header if the value is valid.
pub(crate) fn set_header(resp: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

/// Header value as a string.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Parse a JSON object body; an empty body is an empty object. Anything else is a 400, and
/// so is a body sent with a `Content-Type` other than JSON (Grape would not parse it, so the
/// required `token` would be missing). No `Content-Type` at all is parsed as JSON.
pub(crate) fn json_object(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Map<String, Value>, Response> {
    let ct = header_str(headers, "content-type").unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if !essence.is_empty() && !essence.eq_ignore_ascii_case("application/json") {
        return Err(message(
            StatusCode::BAD_REQUEST,
            &format!("400 Bad request - expected Content-Type: application/json, got {ct:?}"),
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(message(
            StatusCode::BAD_REQUEST,
            "400 Bad request - body must be a JSON object",
        )),
        Err(e) => Err(message(
            StatusCode::BAD_REQUEST,
            &format!("400 Bad request - invalid JSON: {e}"),
        )),
    }
}

/// Optional string parameter; a non-string value is a 400 (`<key> is invalid`).
pub(crate) fn opt_str(map: &Map<String, Value>, key: &str) -> Result<Option<String>, Response> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(bad_param(&format!("{key} is invalid"))),
    }
}

/// Optional boolean parameter, coerced like Grape (`true`/`false`/`1`/`0` strings too).
pub(crate) fn opt_bool(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, Response> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.as_str() {
            "true" | "1" | "yes" => Ok(Some(true)),
            "false" | "0" | "no" => Ok(Some(false)),
            _ => Err(bad_param(&format!("{key} is invalid"))),
        },
        Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok(Some(true)),
        Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(Some(false)),
        Some(_) => Err(bad_param(&format!("{key} is invalid"))),
    }
}

/// Optional integer parameter, coerced like Grape (numeric strings too).
pub(crate) fn opt_int(map: &Map<String, Value>, key: &str) -> Result<Option<i64>, Response> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad_param(&format!("{key} is invalid"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| bad_param(&format!("{key} is invalid"))),
        Some(_) => Err(bad_param(&format!("{key} is invalid"))),
    }
}

/// Value of `key` in a URL query string.
pub(crate) fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Parse a path `:id` like Grape's `Integer` type.
pub(crate) fn parse_id(raw: &str) -> Result<i64, Response> {
    raw.parse().map_err(|_| bad_param("id is invalid"))
}

/// Serialize a `Duration` as whole milliseconds (`#[serde(serialize_with = ...)]`).
pub(crate) fn duration_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_formats_known_instants() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_741_083_330);
        assert_eq!(iso8601(t), "2025-03-04T10:15:30Z");
    }

    #[test]
    fn slugs_and_checksums() {
        assert_eq!(slugify("Feature/Foo_Bar"), "feature-foo-bar");
        assert_eq!(slugify("acme/widget"), "acme-widget");
        assert_eq!(crc32_checksum(b""), "crc32:00000000");
        assert_eq!(crc32_checksum(b"hello"), "crc32:3610a686");
        let t = random_token("glrt-", 20);
        assert_eq!(t.len(), 25);
        assert_ne!(t, random_token("glrt-", 20));
    }
}
