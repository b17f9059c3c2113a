//! Per-connection request rate limit: a token bucket on caller-supplied time.
//!
//! Hand-written rather than `governor` because it is a dozen lines, takes `now` as a
//! parameter (so it is tested on virtual time like every other rule here) and needs no
//! keyed store: each connection owns its bucket.

use std::time::Instant;

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(now: Instant, rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_allowed_then_the_rate_applies() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0, 10, 5);
        assert_eq!((0..8).filter(|_| b.try_take(t0)).count(), 5);
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        assert!(!b.try_take(t0 + Duration::from_millis(100)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| b.try_take(later)).count(), 5);
    }
}
