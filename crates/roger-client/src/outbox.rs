//! Requests made while the signaling socket is down wait here (pure, virtual time).
//!
//! At most `capacity` (100) wait; PTT requests older than `ptt_max_age` (2 s) are dropped
//! when the socket returns rather than replayed: a floor request from long ago would
//! grab the floor for someone who has already let go of the key.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How a queued request ages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Floor request/release: stale after `ptt_max_age`.
    Ptt,
    /// Anything else (join, leave): kept until sent.
    Other,
}

/// Requests waiting for the socket.
#[derive(Debug)]
pub struct Outbox<T> {
    capacity: usize,
    ptt_max_age: Duration,
    items: VecDeque<(Instant, Kind, T)>,
}

impl<T> Outbox<T> {
    /// An empty outbox.
    pub fn new(capacity: usize, ptt_max_age: Duration) -> Self {
        Outbox {
            capacity,
            ptt_max_age,
            items: VecDeque::new(),
        }
    }

    /// Queues `item`; gives it back when the outbox is full.
    pub fn push(&mut self, now: Instant, kind: Kind, item: T) -> Result<(), T> {
        if self.items.len() >= self.capacity {
            return Err(item);
        }
        self.items.push_back((now, kind, item));
        Ok(())
    }

    /// Takes everything: `(to send, in order; dropped as stale)`.
    pub fn drain(&mut self, now: Instant) -> (Vec<T>, Vec<T>) {
        let mut send = Vec::new();
        let mut stale = Vec::new();
        for (at, kind, item) in self.items.drain(..) {
            if kind == Kind::Ptt && now.saturating_duration_since(at) > self.ptt_max_age {
                stale.push(item);
            } else {
                send.push(item);
            }
        }
        (send, stale)
    }

    /// Removes and returns PTT items older than the max age (so their callers hear back
    /// without waiting for the socket).
    pub fn expire(&mut self, now: Instant) -> Vec<T> {
        let mut stale = Vec::new();
        let mut keep = VecDeque::with_capacity(self.items.len());
        for (at, kind, item) in self.items.drain(..) {
            if kind == Kind::Ptt && now.saturating_duration_since(at) > self.ptt_max_age {
                stale.push(item);
            } else {
                keep.push_back((at, kind, item));
            }
        }
        self.items = keep;
        stale
    }

    /// Waiting requests.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_wait_in_order_and_are_sent_when_the_socket_returns() {
        let t0 = Instant::now();
        let mut o = Outbox::new(100, Duration::from_secs(2));
        o.push(t0, Kind::Other, "join").unwrap();
        o.push(t0, Kind::Ptt, "floor").unwrap();
        let (send, stale) = o.drain(t0 + Duration::from_millis(1500));
        assert_eq!(send, ["join", "floor"]);
        assert!(stale.is_empty());
        assert!(o.is_empty());
    }

    #[test]
    fn ptt_requests_older_than_two_seconds_are_dropped_not_replayed() {
        let t0 = Instant::now();
        let mut o = Outbox::new(100, Duration::from_secs(2));
        o.push(t0, Kind::Ptt, "old floor").unwrap();
        o.push(t0, Kind::Other, "old join").unwrap();
        o.push(t0 + Duration::from_secs(2), Kind::Ptt, "new floor")
            .unwrap();
        let (send, stale) = o.drain(t0 + Duration::from_millis(2500));
        assert_eq!(send, ["old join", "new floor"]);
        assert_eq!(stale, ["old floor"]);
    }

    #[test]
    fn at_most_100_requests_wait() {
        let t0 = Instant::now();
        let mut o = Outbox::new(100, Duration::from_secs(2));
        for i in 0..100 {
            o.push(t0, Kind::Other, i).unwrap();
        }
        assert_eq!(o.push(t0, Kind::Other, 100), Err(100));
        assert_eq!(o.len(), 100);
    }

    #[test]
    fn expiring_removes_only_stale_ptt_requests() {
        let t0 = Instant::now();
        let mut o = Outbox::new(10, Duration::from_secs(2));
        o.push(t0, Kind::Ptt, 1).unwrap();
        o.push(t0, Kind::Other, 2).unwrap();
        assert!(o.expire(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(o.expire(t0 + Duration::from_secs(3)), [1]);
        assert_eq!(o.len(), 1);
    }
}
