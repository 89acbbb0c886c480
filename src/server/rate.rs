//! A per-client rate limit, IO-free: the caller passes the time.

use std::collections::HashMap;
use std::time::Duration;

/// Buckets kept before idle (full) ones are dropped, at most once a second.
const MAX_BUCKETS: usize = 10_000;

/// Buckets kept at the most: past this (a flood of distinct keys within one refill
/// window), every bucket is dropped and counting starts over, so memory stays bounded.
const HARD_MAX_BUCKETS: usize = 2 * MAX_BUCKETS;

/// A token bucket per client key: `per_minute` requests a minute on average, bursts of up
/// to `per_minute`. It is kept exactly, in integers, as the generic cell rate algorithm's
/// next arrival time, so a refusal's `Retry-After` is always long enough.
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
    /// Per client, the theoretical arrival time of its next request (GCRA), in scaled
    /// time: nanoseconds times `per_minute`, so that one request's spacing (60 s /
    /// `per_minute`) is the whole number `60e9` and nothing is rounded. Floating-point
    /// tokens once promised a wait after which the request was still refused.
    next: HashMap<String, u128>,
    /// When idle buckets may next be looked for (scaled time): the search reads every
    /// bucket, so a flood of new keys must not run it on each request.
    next_sweep: u128,
}

/// One request's spacing in scaled time (see [`RateLimiter::next`]).
const SPACING: u128 = 60 * 1_000_000_000;

impl RateLimiter {
    /// A limit of `per_minute` requests a minute per client (at least 1).
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute: per_minute.max(1),
            next: HashMap::new(),
            next_sweep: 0,
        }
    }

    /// Takes a token for `key` at time `now` (any monotonic origin), or says how long to
    /// wait for one.
    ///
    /// # Errors
    ///
    /// The wait until the next token, rounded up to whole seconds (for `Retry-After`).
    pub fn check(&mut self, key: &str, now: Duration) -> Result<(), Duration> {
        let scale = u128::from(self.per_minute);
        let now = now.as_nanos() * scale;
        // A burst of `per_minute` requests: the next arrival may run this far ahead.
        let tolerance = (scale - 1) * SPACING;
        if self.next.len() >= MAX_BUCKETS && !self.next.contains_key(key) {
            if now >= self.next_sweep {
                // Clients whose bucket has refilled completely carry no state worth
                // keeping. (At most once a second: it reads every bucket.)
                self.next.retain(|_, next| *next > now);
                self.next_sweep = now + 1_000_000_000 * scale;
            }
            if self.next.len() >= HARD_MAX_BUCKETS {
                self.next.clear();
            }
        }
        let next = self.next.entry(key.to_owned()).or_insert(now);
        let due = (*next).max(now);
        let ahead = due - now;
        if ahead <= tolerance {
            *next = due + SPACING;
            Ok(())
        } else {
            let wait_nanos = (ahead - tolerance).div_ceil(scale);
            let secs = wait_nanos.div_ceil(1_000_000_000).max(1);
            Err(Duration::from_secs(u64::try_from(secs).unwrap_or(u64::MAX)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Found by the `sandbox` fuzz target: with floating-point tokens, 3 a minute and a
    /// request every 200 ms, a promised 20 s wait left the bucket a hair short of a token.
    #[test]
    fn the_promised_wait_always_suffices() {
        for per_minute in 1..=120 {
            let mut limiter = RateLimiter::new(per_minute);
            let mut now = Duration::ZERO;
            for _ in 0..2_000 {
                now += Duration::from_millis(200);
                if let Err(wait) = limiter.check("b", now) {
                    let mut probe = limiter.clone();
                    assert!(
                        probe.check("b", now + wait).is_ok(),
                        "{per_minute}/min at {now:?}"
                    );
                }
            }
        }
    }

    /// A flood of distinct keys (a new one per request, faster than buckets refill) keeps
    /// the map bounded, and looks for idle buckets at most once a second, not per request.
    #[test]
    fn a_flood_of_distinct_keys_stays_bounded() {
        let mut limiter = RateLimiter::new(1);
        let now = Duration::from_secs(5);
        for n in 0..3 * HARD_MAX_BUCKETS {
            assert!(limiter.check(&format!("key-{n}"), now).is_ok());
            assert!(limiter.next.len() <= HARD_MAX_BUCKETS);
        }
        // One second later idle buckets are looked for again: none has refilled (a minute
        // each), so the map is still bounded by the hard cap.
        assert!(limiter.check("late", now + Duration::from_secs(1)).is_ok());
        assert!(limiter.next.len() <= HARD_MAX_BUCKETS);
        // A limited client stays limited while the map is below the hard cap.
        let mut limiter = RateLimiter::new(1);
        assert!(limiter.check("a", now).is_ok());
        assert!(limiter.check("a", now).is_err());
        for n in 0..MAX_BUCKETS {
            let _ = limiter.check(&format!("k{n}"), now);
        }
        assert!(limiter.check("a", now).is_err());
    }

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
