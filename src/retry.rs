//! When to try a failed request again, and after how long.
//!
//! IO-free: the policy computes a delay from the attempt number, the error and a random
//! number the caller draws; the async shells sleep it.

use std::time::Duration;

use crate::error::Error;

/// Exponential backoff with jitter, for errors that [`Error::is_transient`] calls
/// transient.
///
/// Attempt `n` (1 for the first retry) waits a random time in `[d / 2, d]` where
/// `d = min(max_delay, initial_delay * 2^(n - 1))`, or the server's `Retry-After` when that
/// is longer (capped at `max_retry_after`: a `finish` that an earlier request is still
/// committing is answered with the rest of a 30 s lease, which a retry must outwait), plus
/// up to a quarter of it at random, so that the clients a busy server refused together do
/// not all return together.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use attachments::{Error, retry::RetryPolicy};
///
/// let policy = RetryPolicy::default();
/// let busy = Error::Remote { status: 503, message: "busy".into(), retry_after: None };
/// let wait = policy.delay(1, &busy, u32::MAX).unwrap();
/// assert_eq!(wait, Duration::from_millis(200));
/// // The attempts run out, and a permanent error is never retried.
/// assert_eq!(policy.delay(policy.max_attempts, &busy, 0), None);
/// let gone = Error::Remote { status: 404, message: "gone".into(), retry_after: None };
/// assert_eq!(policy.delay(1, &gone, 0), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: never retry).
    pub max_attempts: u32,
    /// The longest wait before the first retry.
    pub initial_delay: Duration,
    /// The longest wait before any retry the client times itself.
    pub max_delay: Duration,
    /// The longest wait the server may ask for (`Retry-After`) that is honoured.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, waits of up to 200 ms, 400 ms, 800 ms, 1.6 s, or what the server asks
    /// for, up to 60 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// A policy of `max_attempts` attempts with the default delays.
    pub fn new(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            ..RetryPolicy::default()
        }
    }

    /// Never retries.
    pub fn none() -> Self {
        RetryPolicy::new(1)
    }

    /// Sets the delays: `max` caps the waits the client times itself and the waits a
    /// server asks for alike (a client that may not wait long gives up instead).
    pub fn with_delays(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_delay = initial;
        self.max_delay = max.max(initial);
        self.max_retry_after = self.max_delay;
        self
    }

    /// Sets the longest wait a server may ask for (`Retry-After`) that is honoured.
    pub fn with_max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// How long to wait before trying again after attempt number `attempt` (1-based)
    /// failed with `err`, or `None` to give up. `random` is any uniformly drawn number; it
    /// spreads the retries of many clients apart.
    pub fn delay(&self, attempt: u32, err: &Error, random: u32) -> Option<Duration> {
        if attempt >= self.max_attempts || !err.is_transient() {
            return None;
        }
        let doubled = self
            .initial_delay
            .checked_mul(1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX))
            .unwrap_or(self.max_delay);
        let ceiling = doubled.min(self.max_delay);
        // Equal jitter: half fixed, half random, so waits grow but never bunch up.
        let half = ceiling / 2;
        let jittered = half + (ceiling - half).mul_f64(f64::from(random) / f64::from(u32::MAX));
        let asked = match err {
            Error::Remote {
                retry_after: Some(after),
                ..
            } => (*after).min(self.max_retry_after),
            _ => Duration::ZERO,
        };
        // Up to a quarter more than asked, at random: clients a busy server answered at
        // once are told the same wait, and must not all come back in the same instant.
        let spread = asked.mul_f64(0.25 * f64::from(random) / f64::from(u32::MAX));
        Some(jittered.max(asked + spread))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io() -> Error {
        Error::io("read", std::io::Error::other("reset"))
    }

    #[test]
    fn delays_double_up_to_the_maximum_and_stay_within_jitter() {
        let p =
            RetryPolicy::new(20).with_delays(Duration::from_millis(100), Duration::from_secs(1));
        let top: Vec<_> = (1..6)
            .map(|a| p.delay(a, &io(), u32::MAX).unwrap())
            .collect();
        assert_eq!(
            top,
            [100, 200, 400, 800, 1000]
                .map(Duration::from_millis)
                .to_vec()
        );
        for a in 1..19 {
            let low = p.delay(a, &io(), 0).unwrap();
            let high = p.delay(a, &io(), u32::MAX).unwrap();
            assert_eq!(low * 2, high, "attempt {a}");
        }
        assert_eq!(p.delay(20, &io(), 0), None);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_maximum() {
        let p = RetryPolicy::default();
        let asked = |s| Error::Remote {
            status: 429,
            message: "Too Many Requests".into(),
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(p.delay(1, &asked(3), 0), Some(Duration::from_secs(3)));
        // Never less than asked, up to a quarter more: spread apart by the random draw.
        assert_eq!(
            p.delay(1, &asked(4), u32::MAX),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            p.delay(1, &asked(4), u32::MAX / 2),
            Some(Duration::from_millis(4500))
        );
        assert_eq!(p.delay(1, &asked(3600), 0), Some(p.max_retry_after));
        // Longer than the client's own longest wait, as a commit lease's rest may be.
        assert_eq!(p.delay(1, &asked(29), 0), Some(Duration::from_secs(29)));
    }

    /// A `finish` an earlier request is still committing (409 with `Retry-After`) is sent
    /// again after the wait asked, not given up (the client then started the whole upload
    /// over: a second copy of the file); a 409 without it is final.
    #[test]
    fn a_409_that_says_when_to_come_back_is_retried_then() {
        let p = RetryPolicy::default();
        let conflict = |after: Option<u64>| Error::Remote {
            status: 409,
            message: "upload u is being committed by an earlier finish".into(),
            retry_after: after.map(Duration::from_secs),
        };
        assert_eq!(
            p.delay(1, &conflict(Some(7)), 0),
            Some(Duration::from_secs(7))
        );
        assert_eq!(p.delay(1, &conflict(None), 0), None);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let p = RetryPolicy::new(u32::MAX);
        assert_eq!(p.delay(u32::MAX - 1, &io(), u32::MAX), Some(p.max_delay));
    }
}
