//! Property tests for the floor and the stream rewriter: random sequences of operations
//! on virtual time, checked against invariants that must hold whatever the order.

use proptest::prelude::*;
use roger_protocol::{Member, SessionId};
use roger_server::floor::{Floor, RequestOutcome};
use roger_server::rewrite::{seq_newer, SourcePacket, StreamRewriter};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
enum Op {
    Request(u8),
    Release(u8),
    Lost(u8),
    Restored(u8),
    Leave(u8),
    Wait(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3).prop_map(Op::Request),
        (0u8..3).prop_map(Op::Release),
        (0u8..3).prop_map(Op::Lost),
        (0u8..3).prop_map(Op::Restored),
        (0u8..3).prop_map(Op::Leave),
        (0u16..3000).prop_map(Op::Wait),
    ]
}

fn who(i: u8) -> (SessionId, Member) {
    let name = format!("user{i}");
    (
        SessionId(name.clone()),
        Member {
            user: name.as_str().into(),
            name,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// One holder at most; a grant only to an idle floor or to the holder itself; a
    /// release or leave by anyone else changes nothing; nobody holds the floor past the
    /// max talk time, nor past the grace after losing the connection.
    #[test]
    fn the_floor_keeps_its_invariants(ops in proptest::collection::vec(op(), 1..200)) {
        let max_talk = Duration::from_millis(5000);
        let grace = Duration::from_millis(1000);
        let mut floor = Floor::new(max_talk, grace);
        let mut now = Instant::now();
        let mut granted_at: Option<(SessionId, Instant)> = None;
        let mut lost_at: Option<Instant> = None;
        for op in ops {
            let before = floor.holder().map(|h| h.session.clone());
            match op {
                Op::Request(i) => {
                    let (s, m) = who(i);
                    match floor.request(now, &s, &m) {
                        RequestOutcome::Granted { newly_taken, expires_in } => {
                            prop_assert!(before.is_none() || before.as_ref() == Some(&s));
                            prop_assert_eq!(newly_taken, before.is_none());
                            prop_assert!(expires_in <= max_talk);
                            if newly_taken {
                                granted_at = Some((s.clone(), now));
                            }
                            lost_at = None;
                        }
                        RequestOutcome::Denied { holder } => {
                            let h = before.clone().expect("denied only when held");
                            prop_assert_ne!(&h, &s);
                            prop_assert_eq!(holder.user.as_str(), h.as_str());
                        }
                    }
                }
                Op::Release(i) | Op::Leave(i) => {
                    let (s, _) = who(i);
                    let released = if matches!(op, Op::Release(_)) {
                        floor.release(&s)
                    } else {
                        floor.remove(&s).is_some()
                    };
                    prop_assert_eq!(released, before.as_ref() == Some(&s));
                    if !released {
                        prop_assert_eq!(floor.holder().map(|h| h.session.clone()), before);
                    }
                }
                Op::Lost(i) => {
                    let (s, _) = who(i);
                    floor.connection_lost(now, &s);
                    if before.as_ref() == Some(&s) && lost_at.is_none() {
                        lost_at = Some(now);
                    }
                }
                Op::Restored(i) => {
                    let (s, _) = who(i);
                    floor.connection_restored(&s);
                    if before.as_ref() == Some(&s) {
                        lost_at = None;
                    }
                }
                Op::Wait(ms) => {
                    now += Duration::from_millis(u64::from(ms));
                    while floor.poll_timeout().is_some_and(|t| t <= now) {
                        floor.handle_timeout(now);
                    }
                }
            }
            if floor.holder().is_none() {
                granted_at = None;
                lost_at = None;
            }
            if let (Some(h), Some((s, at))) = (floor.holder(), &granted_at) {
                prop_assert_eq!(&h.session, s);
                if matches!(op, Op::Wait(_)) {
                    prop_assert!(now < *at + max_talk, "held past the max talk time");
                    if let Some(l) = lost_at {
                        prop_assert!(now < l + grace, "held past the grace after a loss");
                    }
                }
            }
        }
    }

    /// Within a talk spurt, output spacing equals input spacing; every new spurt starts
    /// right after the highest sequence number sent so far, with the marker; packets of
    /// an older spurt are dropped.
    #[test]
    fn the_rewriter_makes_one_continuous_stream(
        spurts in proptest::collection::vec(
            (any::<u32>(), any::<u16>(), any::<u32>(), 1usize..40, 0u64..2000),
            1..12,
        ),
        init_seq in any::<u16>(),
        init_ts in any::<u32>(),
    ) {
        let mut r = StreamRewriter::new(init_seq, init_ts);
        let mut now = Instant::now();
        let mut highest: Option<u16> = None;
        for (k, (ssrc, seq0, ts0, n, pause_ms)) in spurts.into_iter().enumerate() {
            let spurt = k as u64 + 1;
            now += Duration::from_millis(pause_ms);
            let mut first_out = None;
            for i in 0..n {
                now += Duration::from_millis(20);
                let p = SourcePacket {
                    ssrc,
                    spurt,
                    seq: seq0.wrapping_add(i as u16),
                    timestamp: ts0.wrapping_add(960 * i as u32),
                };
                let out = r.rewrite(now, p).expect("current spurt is never dropped");
                match first_out {
                    None => {
                        prop_assert!(out.marker);
                        let expect = highest.map_or(init_seq, |h| h.wrapping_add(1));
                        prop_assert_eq!(out.seq, expect);
                        first_out = Some(out);
                    }
                    Some(f) => {
                        prop_assert!(!out.marker);
                        prop_assert_eq!(out.seq, f.seq.wrapping_add(i as u16));
                        prop_assert_eq!(out.timestamp, f.timestamp.wrapping_add(960 * i as u32));
                    }
                }
                if highest.is_none_or(|h| seq_newer(out.seq, h)) {
                    highest = Some(out.seq);
                }
            }
            if spurt > 1 {
                let stale = SourcePacket { ssrc: 1, spurt: spurt - 1, seq: 0, timestamp: 0 };
                prop_assert!(r.rewrite(now, stale).is_none());
            }
        }
    }
}
