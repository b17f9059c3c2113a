//! Rate limits: a token bucket on caller-supplied time (per connection, for requests),
//! and a producer's packet and byte rates (per session, for media).
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
        self.try_take_n(now, 1.0)
    }

    /// Takes `n` tokens if there are that many (bytes, for a byte-rate bucket).
    pub fn try_take_n(&mut self, now: Instant, n: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// A media producer's limits: packets per second and bytes per second, each with a
/// second's worth of burst. Every packet a floor holder sends goes to every listener,
/// so what one session may send is bounded before the fan-out.
#[derive(Debug, Clone)]
pub struct ProducerLimit {
    packets: TokenBucket,
    bytes: TokenBucket,
}

/// Why a producer's packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    /// Over the packet rate.
    Packets,
    /// Over the byte rate.
    Bytes,
}

impl ProducerLimit {
    /// Limits of `pps` packets and `bps` bytes per second, full at `now`.
    pub fn new(now: Instant, pps: u32, bps: u32) -> Self {
        ProducerLimit {
            packets: TokenBucket::new(now, pps, pps),
            bytes: TokenBucket::new(now, bps, bps),
        }
    }

    /// Whether a packet of `len` bytes may pass at `now`.
    pub fn check(&mut self, now: Instant, len: usize) -> Result<(), OverLimit> {
        if !self.packets.try_take(now) {
            return Err(OverLimit::Packets);
        }
        if !self.bytes.try_take_n(now, len as f64) {
            return Err(OverLimit::Bytes);
        }
        Ok(())
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

    #[test]
    fn a_producer_over_its_packet_or_byte_rate_is_held_to_it() {
        let t0 = Instant::now();
        // 2000 packets in one second against 100 pps: 100 (the burst) plus what the
        // second refills pass.
        let mut l = ProducerLimit::new(t0, 100, 1_000_000);
        let passed = (0..2000)
            .filter(|i| l.check(t0 + Duration::from_micros(500 * i), 60).is_ok())
            .count();
        assert!((195..=201).contains(&passed), "{passed}");
        // Big packets hit the byte rate first.
        let mut l = ProducerLimit::new(t0, 1000, 10_000);
        assert_eq!(l.check(t0, 6_000), Ok(()));
        assert_eq!(l.check(t0, 6_000), Err(OverLimit::Bytes));
        assert_eq!(l.check(t0 + Duration::from_millis(200), 6_000), Ok(()));
    }
}
