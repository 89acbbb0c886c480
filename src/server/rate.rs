//! A per-client rate limit, IO-free: the caller passes the time.

use std::collections::HashMap;
use std::time::Duration;

/// Buckets kept before idle (full) ones are dropped.
const MAX_BUCKETS: usize = 10_000;

/// A token bucket per client key: `per_minute` requests a minute on average, bursts of up
/// to `per_minute`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use attachments::server::RateLimiter;
///
/// let mut limiter = RateLimiter::new(2);
/// let t0 = Duration::ZERO;
/// assert!(limiter.check("token-a", t0).is_ok());
/// assert!(limiter.check("token-a", t0).is_ok());
/// // The third request in the same instant waits 30 s for the next token.
/// assert_eq!(limiter.check("token-a", t0), Err(Duration::from_secs(30)));
/// // Other clients have their own bucket.
/// assert!(limiter.check("token-b", t0).is_ok());
/// assert!(limiter.check("token-a", Duration::from_secs(30)).is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: HashMap<String, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Duration,
}

impl RateLimiter {
    /// A limit of `per_minute` requests a minute per client (at least 1).
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute: per_minute.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `key` at time `now` (any monotonic origin), or says how long to
    /// wait for one.
    ///
    /// # Errors
    ///
    /// The wait until the next token, rounded up to whole seconds (for `Retry-After`).
    pub fn check(&mut self, key: &str, now: Duration) -> Result<(), Duration> {
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        if self.buckets.len() >= MAX_BUCKETS && !self.buckets.contains_key(key) {
            self.buckets.retain(|_, b| {
                b.tokens + now.saturating_sub(b.at).as_secs_f64() * per_sec < capacity
            });
        }
        let bucket = self.buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_sub(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.at = bucket.at.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_sec;
            Err(Duration::from_secs(wait.ceil().max(1.0) as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the arrival times, a client never gets more than its burst plus the
        /// refill, and a refusal's wait is enough for the next request to pass.
        #[test]
        fn accepted_requests_stay_within_the_rate(
            per_minute in 1u32..200,
            steps in proptest::collection::vec((0u8..3, 0u64..5_000), 1..300),
        ) {
            let mut limiter = RateLimiter::new(per_minute);
            let mut now = Duration::ZERO;
            let mut accepted = [0u64; 3];
            for (key, advance_ms) in steps {
                now += Duration::from_millis(advance_ms);
                let name = ["a", "b", "c"][usize::from(key)];
                match limiter.check(name, now) {
                    Ok(()) => accepted[usize::from(key)] += 1,
                    Err(wait) => {
                        prop_assert!(wait >= Duration::from_secs(1));
                        // Waiting as told lets the next request through.
                        let mut probe = limiter.clone();
                        prop_assert!(probe.check(name, now + wait).is_ok());
                    }
                }
                let ceiling = u64::from(per_minute)
                    + (now.as_secs_f64() * f64::from(per_minute) / 60.0).floor() as u64;
                prop_assert!(accepted.iter().all(|&n| n <= ceiling), "{accepted:?} > {ceiling}");
            }
        }
    }
}
