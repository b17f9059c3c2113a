//! One continuous RTP stream per listener, whoever is speaking: a pure state machine.
//!
//! The SFU keeps one downlink track per listener per channel and switches its source
//! when the floor changes. A listener's decoder and jitter buffer must see a single
//! stream, so each downlink rewrites every forwarded packet:
//! - SSRC: always the downlink's own (done by the caller);
//! - sequence number: continues from the last one sent, `+1` at a source switch;
//! - timestamp: continues from the last one sent, advanced by the wall-clock time since
//!   then (at 48 kHz), so the listener's jitter buffer sees the real pause;
//! - marker bit: set on the first packet of each talk spurt.
//!
//! A *source* is (source SSRC, talk-spurt number). The talk-spurt number increases each
//! time the floor is granted, so the same talker pressing twice is two sources, and a
//! late packet from an earlier spurt is dropped rather than sent out of place.

use std::time::Instant;

/// RTP clock rate of Opus.
pub const CLOCK_RATE: u32 = 48_000;
/// Samples in one 20 ms Opus frame at 48 kHz; the smallest step at a source switch.
pub const FRAME_SAMPLES: u32 = 960;

/// The fields of an incoming packet the rewriter needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePacket {
    /// The sender's SSRC.
    pub ssrc: u32,
    /// Which grant of the floor this packet belongs to.
    pub spurt: u64,
    /// Its sequence number.
    pub seq: u16,
    /// Its timestamp.
    pub timestamp: u32,
}

/// What to write into the outgoing packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Outgoing sequence number.
    pub seq: u16,
    /// Outgoing timestamp.
    pub timestamp: u32,
    /// Whether this is the first packet of a talk spurt on this downlink.
    pub marker: bool,
}

#[derive(Debug, Clone, Copy)]
struct Base {
    ssrc: u32,
    spurt: u64,
    seq_offset: u16,
    ts_offset: u32,
}

/// Rewrites packets of changing sources into one stream.
#[derive(Debug, Clone)]
pub struct StreamRewriter {
    base: Option<Base>,
    /// Highest sequence number and its timestamp sent so far.
    last_seq: u16,
    last_ts: u32,
    last_at: Option<Instant>,
}

impl StreamRewriter {
    /// A rewriter whose first packet gets `initial_seq` and `initial_ts` (random in
    /// production, as RFC 3550 asks; fixed in tests).
    pub fn new(initial_seq: u16, initial_ts: u32) -> Self {
        StreamRewriter {
            base: None,
            last_seq: initial_seq.wrapping_sub(1),
            last_ts: initial_ts.wrapping_sub(FRAME_SAMPLES),
            last_at: None,
        }
    }

    /// Rewrites one packet received at `now`; `None` means drop it (a straggler from an
    /// earlier talk spurt).
    pub fn rewrite(&mut self, now: Instant, p: SourcePacket) -> Option<Rewritten> {
        let marker = match self.base {
            Some(b) if b.ssrc == p.ssrc && b.spurt == p.spurt => false,
            Some(b) if p.spurt < b.spurt => return None,
            _ => {
                let out_seq = self.last_seq.wrapping_add(1);
                let gap = match self.last_at {
                    Some(at) => {
                        let elapsed = now.saturating_duration_since(at);
                        let samples = elapsed.as_micros() * u128::from(CLOCK_RATE) / 1_000_000;
                        u32::try_from(samples)
                            .unwrap_or(u32::MAX)
                            .max(FRAME_SAMPLES)
                    }
                    None => FRAME_SAMPLES,
                };
                let out_ts = self.last_ts.wrapping_add(gap);
                self.base = Some(Base {
                    ssrc: p.ssrc,
                    spurt: p.spurt,
                    seq_offset: out_seq.wrapping_sub(p.seq),
                    ts_offset: out_ts.wrapping_sub(p.timestamp),
                });
                true
            }
        };
        let b = self.base.expect("base set above");
        let seq = p.seq.wrapping_add(b.seq_offset);
        let timestamp = p.timestamp.wrapping_add(b.ts_offset);
        // Advance the high-water mark only for packets newer than it (RFC 3550 A.1 style
        // wrap-aware comparison), so a reordered packet does not rewind the next switch.
        if marker || seq_newer(seq, self.last_seq) {
            self.last_seq = seq;
            self.last_ts = timestamp;
        }
        self.last_at = Some(now);
        Some(Rewritten {
            seq,
            timestamp,
            marker,
        })
    }
}

/// Whether `a` comes after `b` in 16-bit sequence space.
pub fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pkt(ssrc: u32, spurt: u64, seq: u16, ts: u32) -> SourcePacket {
        SourcePacket {
            ssrc,
            spurt,
            seq,
            timestamp: ts,
        }
    }

    /// Feeds `n` packets 20 ms apart from a source starting at (seq, ts).
    fn talk(
        r: &mut StreamRewriter,
        t: &mut Instant,
        ssrc: u32,
        spurt: u64,
        seq: u16,
        ts: u32,
        n: u16,
    ) -> Vec<Rewritten> {
        (0..n)
            .map(|i| {
                *t += Duration::from_millis(20);
                r.rewrite(
                    *t,
                    pkt(
                        ssrc,
                        spurt,
                        seq.wrapping_add(i),
                        ts.wrapping_add(960 * u32::from(i)),
                    ),
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn the_first_packet_gets_the_initial_values_and_a_marker() {
        let mut r = StreamRewriter::new(100, 5000);
        let out = r.rewrite(Instant::now(), pkt(1, 1, 40_000, 123)).unwrap();
        assert_eq!(
            out,
            Rewritten {
                seq: 100,
                timestamp: 5000,
                marker: true
            }
        );
    }

    #[test]
    fn one_source_keeps_its_spacing() {
        let mut t = Instant::now();
        let mut r = StreamRewriter::new(0, 0);
        let out = talk(&mut r, &mut t, 1, 1, 65_530, 4_294_960_000, 10);
        for w in out.windows(2) {
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
            assert_eq!(w[1].timestamp, w[0].timestamp.wrapping_add(960));
            assert!(!w[1].marker);
        }
    }

    #[test]
    fn a_speaker_change_continues_the_sequence_without_a_gap() {
        let mut t = Instant::now();
        let mut r = StreamRewriter::new(10, 0);
        let a = talk(&mut r, &mut t, 0xA, 1, 500, 77_000, 5);
        t += Duration::from_millis(400); // pause between talkers
        let b = talk(&mut r, &mut t, 0xB, 2, 9, 1_000_000, 5);
        assert_eq!(b[0].seq, a[4].seq.wrapping_add(1));
        assert!(b[0].marker);
        // The timestamp advanced by the real time between the two packets: 420 ms.
        assert_eq!(b[0].timestamp, a[4].timestamp + 420 * 48);
        assert_eq!(b[4].seq, b[0].seq + 4);
    }

    #[test]
    fn the_same_talker_pressing_again_is_a_new_spurt() {
        let mut t = Instant::now();
        let mut r = StreamRewriter::new(0, 0);
        let a = talk(&mut r, &mut t, 0xA, 1, 100, 0, 3);
        // Its sequence continues from where it left off; the rewriter must not reuse the
        // old offset blindly, it re-bases and marks the spurt.
        let b = talk(&mut r, &mut t, 0xA, 2, 103, 2880, 3);
        assert!(b[0].marker);
        assert_eq!(b[0].seq, a[2].seq + 1);
    }

    #[test]
    fn a_straggler_from_an_earlier_spurt_is_dropped() {
        let mut t = Instant::now();
        let mut r = StreamRewriter::new(0, 0);
        talk(&mut r, &mut t, 0xA, 1, 100, 0, 3);
        talk(&mut r, &mut t, 0xB, 2, 7, 0, 3);
        assert_eq!(r.rewrite(t, pkt(0xA, 1, 103, 2880)), None);
    }

    #[test]
    fn reordered_packets_keep_their_order_and_do_not_rewind_the_stream() {
        let mut t = Instant::now();
        let mut r = StreamRewriter::new(0, 0);
        talk(&mut r, &mut t, 0xA, 1, 100, 0, 3); // out seq 0,1,2
        let late = r.rewrite(t, pkt(0xA, 1, 104, 4 * 960)).unwrap();
        let early = r.rewrite(t, pkt(0xA, 1, 103, 3 * 960)).unwrap();
        assert_eq!((early.seq, late.seq), (3, 4));
        let next = talk(&mut r, &mut t, 0xB, 2, 0, 0, 1);
        assert_eq!(next[0].seq, 5);
    }

    #[test]
    fn sequence_comparison_wraps() {
        assert!(seq_newer(1, 65_535));
        assert!(!seq_newer(65_535, 1));
        assert!(!seq_newer(5, 5));
    }
}
