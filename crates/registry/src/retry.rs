//! Retry policy: exponential backoff with full jitter, bounded by attempts and total time, and
//! honouring `Retry-After` on 429/503.

use std::time::{Duration, Instant, SystemTime};

/// How hard to retry a failing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the first retry (the upper bound of its jitter).
    pub base_delay: Duration,
    /// Cap on one delay.
    pub max_delay: Duration,
    /// No retry starts after this much time has passed since the first attempt.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// The delay before retry number `attempt` (1-based count of attempts made so far), or
    /// `None` when the budget is spent. `retry_after` is the server's wish, which wins over the
    /// computed backoff but never over the time budget.
    pub fn next_delay(
        &self,
        attempt: u32,
        started: Instant,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let elapsed = started.elapsed();
        if elapsed >= self.max_elapsed {
            return None;
        }
        let remaining = self.max_elapsed - elapsed;
        let delay = match retry_after {
            Some(d) => d,
            None => {
                let exp = self
                    .base_delay
                    .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
                    .min(self.max_delay);
                // Full jitter: spreads retries of many clients hitting one registry.
                let nanos = u64::try_from(exp.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(fastrand::u64(nanos / 2..=nanos.max(1)))
            }
        };
        if delay >= remaining {
            return None;
        }
        Some(delay)
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Whether an HTTP status is worth retrying.
pub fn retryable_status(status: u16) -> bool {
    status == 429 || status == 408 || (500..600).contains(&status) && status != 501 && status != 505
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(100),
        };
        let start = Instant::now();
        for attempt in 1..10 {
            let d = p.next_delay(attempt, start, None).unwrap();
            let cap = Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_secs(1));
            assert!(
                d <= cap && d >= cap / 2,
                "attempt {attempt}: {d:?} vs {cap:?}"
            );
        }
        assert_eq!(p.next_delay(10, start, None), None);
    }

    #[test]
    fn retry_after_wins_but_not_over_budget() {
        let p = RetryPolicy {
            max_elapsed: Duration::from_secs(10),
            ..Default::default()
        };
        let start = Instant::now();
        assert_eq!(
            p.next_delay(1, start, Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(p.next_delay(1, start, Some(Duration::from_secs(30))), None);
        assert_eq!(RetryPolicy::none().next_delay(1, start, None), None);
    }

    #[test]
    fn retry_after_formats() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert!(retryable_status(503) && retryable_status(429) && !retryable_status(404));
        assert!(!retryable_status(501));
    }
}
