//! RTP numbering of the send track.

use crate::audio::FRAME_SAMPLES;
use std::time::{Duration, Instant};

/// Sequence number and timestamp of one send SSRC. They continue across talk spurts:
/// a receiver's SRTP replay window rejects a sequence number that jumps backwards, so
/// restarting at a random value per transmission would silently drop about half of a
/// client's later transmissions.
pub(super) struct RtpClock {
    seq: u16,
    ts: u32,
    last: Option<Instant>,
}

impl RtpClock {
    pub(super) fn new() -> RtpClock {
        RtpClock {
            seq: rand::random(),
            ts: rand::random(),
            last: None,
        }
    }

    /// The next packet's `(seq, ts)` at `now`. After a pause the timestamp advances by
    /// the real time elapsed, so the receiver's jitter buffer sees the pause.
    pub(super) fn next(&mut self, now: Instant) -> (u16, u32) {
        let step = match self.last {
            // Within a spurt frames are paced 20 ms apart: keep the exact step.
            Some(last) if now.saturating_duration_since(last) < Duration::from_millis(60) => {
                FRAME_SAMPLES as u32
            }
            Some(last) => {
                let elapsed = now.saturating_duration_since(last);
                ((elapsed.as_micros() * 48 / 1000) as u32).max(FRAME_SAMPLES as u32)
            }
            None => 0,
        };
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(step);
        self.last = Some(now);
        (self.seq, self.ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_sequence_continues_across_talk_spurts_and_time_advances_with_the_pause() {
        let t0 = Instant::now();
        let mut c = RtpClock::new();
        let (s0, ts0) = c.next(t0);
        let (s1, ts1) = c.next(t0 + Duration::from_millis(20));
        assert_eq!(s1, s0.wrapping_add(1));
        assert_eq!(ts1, ts0.wrapping_add(960));
        // A new transmission 2 s later: the next sequence number, the timestamp 2 s on.
        let (s2, ts2) = c.next(t0 + Duration::from_millis(2020));
        assert_eq!(s2, s1.wrapping_add(1));
        assert_eq!(ts2, ts1.wrapping_add(96_000));
    }
}
