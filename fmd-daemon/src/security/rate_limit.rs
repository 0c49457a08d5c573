//! Login throttling: at most [`MAX_FAILURES`] failed attempts per [`WINDOW`] per key (a client address, a
//! username); beyond that the key is refused until its oldest failure leaves the window, so guessing a
//! password online takes years while a user who mistyped waits a minute at worst.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

pub const MAX_FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Keys kept at most; a full table forgets keys whose failures all left the window first.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Default)]
pub struct FailureLimiter {
    failures: HashMap<String, VecDeque<Instant>>,
}

impl FailureLimiter {
    /// `None` when `key` may try now; otherwise how long until it may.
    pub fn retry_after(&mut self, key: &str, now: Instant) -> Option<Duration> {
        let times = self.failures.get_mut(key)?;
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            times.pop_front();
        }
        if times.is_empty() {
            self.failures.remove(key);
            return None;
        }
        (times.len() >= MAX_FAILURES).then(|| {
            let oldest = times.front().copied().unwrap_or(now);
            (WINDOW.saturating_sub(now.saturating_duration_since(oldest)))
                .max(Duration::from_secs(1))
        })
    }

    pub fn fail(&mut self, key: &str, now: Instant) {
        if self.failures.len() >= MAX_KEYS && !self.failures.contains_key(key) {
            self.failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < WINDOW)
            });
            if self.failures.len() >= MAX_KEYS {
                // Only under a flood from more addresses than this: the per-username keys still hold.
                return;
            }
        }
        let times = self.failures.entry(key.to_owned()).or_default();
        times.push_back(now);
        // Only the last MAX_FAILURES matter.
        while times.len() > MAX_FAILURES {
            times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_a_minute() {
        let t0 = Instant::now();
        let mut limiter = FailureLimiter::default();
        for i in 0..MAX_FAILURES {
            assert_eq!(limiter.retry_after("ip:1", t0), None, "attempt {i}");
            limiter.fail("ip:1", t0 + Duration::from_secs(i as u64));
        }
        let t = t0 + Duration::from_secs(10);
        assert_eq!(
            limiter.retry_after("ip:1", t),
            Some(Duration::from_secs(50))
        );
        assert_eq!(limiter.retry_after("ip:2", t), None, "other keys are free");
        // The first failure leaves the window: one more attempt.
        assert_eq!(limiter.retry_after("ip:1", t0 + WINDOW), None);
        limiter.fail("ip:1", t0 + WINDOW);
        assert!(limiter.retry_after("ip:1", t0 + WINDOW).is_some());
        assert_eq!(limiter.retry_after("ip:1", t0 + WINDOW * 3), None);
        assert!(limiter.failures.is_empty(), "old keys are forgotten");
    }
}
