//! Jittered exponential backoff for transport-level retries.

use rand::Rng;
use std::time::Duration;

/// Statuses GitLab Runner retries at the transport level.
pub const RETRY_STATUSES: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// Exponential backoff with full jitter between `min` and `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    factor: u32,
}

/// Why a backoff could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid backoff: {0}")]
pub struct InvalidBackoff(&'static str);

impl Backoff {
    /// Builds a backoff; `max` must not be less than `min`, `factor` at least 1.
    pub fn try_new(min: Duration, max: Duration, factor: u32) -> Result<Self, InvalidBackoff> {
        if max < min {
            return Err(InvalidBackoff("maximum must not be less than minimum"));
        }
        if factor == 0 {
            return Err(InvalidBackoff("factor must be at least 1"));
        }
        Ok(Backoff { min, max, factor })
    }

    /// A backoff known to be valid.
    pub const fn new_unchecked(min: Duration, max: Duration, factor: u32) -> Self {
        Backoff { min, max, factor }
    }

    /// The ceiling of the wait before retry number `attempt` (0-based), without jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let mult = self.factor.saturating_pow(attempt.min(32));
        self.min.saturating_mul(mult).min(self.max)
    }

    /// The wait before retry `attempt`: uniformly jittered in `[ceiling/2, ceiling]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = (ceiling - half).as_millis() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            rand::rng().random_range(0..=spread)
        };
        half + Duration::from_millis(jitter)
    }
}

/// GitLab Runner's transport retry: 100 ms → 60 s, factor 2.
pub const API_BACKOFF: Backoff =
    Backoff::new_unchecked(Duration::from_millis(100), Duration::from_secs(60), 2);

/// Attempts in total for a retried request.
pub const API_ATTEMPTS: u32 = 5;

/// Reads `Retry-After` (seconds) or `RateLimit-ResetTime` (HTTP date) from a response.
pub fn server_wait(headers: &http::HeaderMap) -> Option<Duration> {
    let secs = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(s) = secs {
        return Some(Duration::from_secs(s).min(Duration::from_secs(60)));
    }
    let reset = headers
        .get("RateLimit-ResetTime")
        .and_then(|v| v.to_str().ok())?;
    let at =
        time::OffsetDateTime::parse(reset, &time::format_description::well_known::Rfc2822).ok()?;
    let now = time::OffsetDateTime::now_utc();
    let wait = (at - now).whole_milliseconds().max(0) as u64;
    Some(Duration::from_millis(wait).min(Duration::from_secs(60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_grows_and_caps() {
        let b = Backoff::try_new(Duration::from_millis(100), Duration::from_secs(1), 2).unwrap();
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(4), Duration::from_secs(1));
        assert_eq!(b.ceiling(60), Duration::from_secs(1));
    }

    #[test]
    fn delay_is_within_half_and_full_ceiling() {
        for attempt in 0..10 {
            let d = API_BACKOFF.delay(attempt);
            let c = API_BACKOFF.ceiling(attempt);
            assert!(d <= c && d >= c / 2, "{d:?} not in [{:?}, {c:?}]", c / 2);
        }
    }

    #[test]
    fn invalid_backoff_is_refused() {
        assert!(Backoff::try_new(Duration::from_secs(2), Duration::from_secs(1), 2).is_err());
        assert!(Backoff::try_new(Duration::from_secs(1), Duration::from_secs(1), 0).is_err());
    }

    #[test]
    fn retry_after_is_read_and_capped() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(server_wait(&h), Some(Duration::from_secs(7)));
        h.insert(http::header::RETRY_AFTER, "7000".parse().unwrap());
        assert_eq!(server_wait(&h), Some(Duration::from_secs(60)));
        assert_eq!(server_wait(&http::HeaderMap::new()), None);
    }
}
