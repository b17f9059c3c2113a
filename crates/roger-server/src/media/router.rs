//! Downlink slots and the per-channel router: only the speaker's packets pass, each
//! listener's copy rewritten into one continuous stream and queued to its own writer.

use super::{opus_codec, OPUS_PAYLOAD_TYPE};
use crate::history::Tap;
use crate::rewrite::{SourcePacket, StreamRewriter};
use crate::sync::lock as lock_std;
use roger_protocol::{ChannelId, Member, SessionId};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;

/// Where a downlink's packets go: the slot's current track (tests use a queue).
pub trait DownlinkOut: Send + Sync {
    /// Hands `packet` to the transport without waiting; false if it cannot take it now.
    fn try_write(&self, packet: rtp::Packet) -> bool;
}

/// A slot's local track, replaced (same SSRC) whenever the transport is recreated.
struct SlotTrack(Mutex<Arc<TrackLocalStaticRTP>>);

impl DownlinkOut for SlotTrack {
    fn try_write(&self, packet: rtp::Packet) -> bool {
        use futures_util::FutureExt;
        let track = lock_std(&self.0).clone();
        // `write_rtp` takes an uncontended lock and puts the packet on the PeerConnection
        // driver's queue: ready at once unless that queue is full (a stuck transport).
        // Polling it once here, instead of a task per listener, saves a task wake-up per
        // listener per packet (the 1000-listener profile was dominated by them), and a
        // full queue drops this listener's packet without holding up the others.
        match track.write_rtp(packet).now_or_never() {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::trace!(error = %e, "downlink write failed (not bound yet?)");
                false
            }
            None => false,
        }
    }
}

/// The sending half of one listener's downlink for one slot.
pub struct Downlink {
    /// The SSRC every packet on this downlink carries.
    pub ssrc: u32,
    pub(super) payload_type: AtomicU8,
    rewriter: Mutex<StreamRewriter>,
    out: Arc<dyn DownlinkOut>,
}

impl Downlink {
    /// Rewrites a speaker's packet into this downlink's stream and sends it. `now` is
    /// when the original arrived.
    fn push(&self, now: Instant, spurt: u64, packet: &rtp::Packet) {
        let out = {
            // Lock held for a few arithmetic operations; nothing awaits under it.
            let mut rw = lock_std(&self.rewriter);
            rw.rewrite(
                now,
                SourcePacket {
                    ssrc: packet.header.ssrc,
                    spurt,
                    seq: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                },
            )
        };
        let Some(out) = out else {
            metrics::counter!("roger_rtp_dropped_total", "reason" => "stale_spurt").increment(1);
            return;
        };
        let mut p = packet.clone();
        p.header.ssrc = self.ssrc;
        p.header.sequence_number = out.seq;
        p.header.timestamp = out.timestamp;
        // The rewriter decides: the first packet of each spurt, whatever the talker set
        // (a stack that marks every packet would make each look like a new spurt).
        p.header.marker = out.marker;
        p.header.payload_type = self.payload_type.load(Ordering::Relaxed);
        // The ingress leg's extension ids mean nothing on the egress leg.
        p.header.extension = false;
        p.header.extensions.clear();
        p.header.extension_profile = 0;
        if self.out.try_write(p) {
            metrics::counter!("roger_rtp_forwarded_total").increment(1);
            // Added delay: from the talker's packet arriving to this copy being on its
            // transport's queue (the fan-out position).
            metrics::histogram!("roger_forward_delay_seconds").record(now.elapsed().as_secs_f64());
        } else {
            metrics::counter!("roger_rtp_dropped_total", "reason" => "downlink_full").increment(1);
        }
    }
}

/// One audio m-line of a session's receive transport.
pub struct Slot {
    index: usize,
    /// The local track answering that m-line on the current PeerConnection (a new one
    /// is made, with the same SSRC, whenever the transport is recreated).
    track: Arc<SlotTrack>,
    /// Its downlink state (SSRC, rewriter, track): kept across transport recreation so
    /// the listener's stream continues.
    pub downlink: Arc<Downlink>,
    /// The channel it carries now, if any.
    pub channel: Option<ChannelId>,
    /// Whether the current track has been added to the PeerConnection yet.
    pub in_pc: bool,
}

fn downlink_track(index: usize, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("roger-downlink-{index}"),
        format!("roger-downlink-{index}-{ssrc:08x}"),
        format!("downlink {index}"),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: opus_codec(),
            ..Default::default()
        }],
    )))
}

impl Slot {
    pub(super) fn new(index: usize) -> Slot {
        let ssrc: u32 = rand::random();
        let track = Arc::new(SlotTrack(Mutex::new(downlink_track(index, ssrc))));
        Slot {
            index,
            track: track.clone(),
            downlink: Arc::new(Downlink {
                ssrc,
                payload_type: AtomicU8::new(OPUS_PAYLOAD_TYPE),
                rewriter: Mutex::new(StreamRewriter::new(rand::random(), rand::random())),
                out: track,
            }),
            channel: None,
            in_pc: false,
        }
    }

    /// The current track.
    pub(super) fn current_track(&self) -> Arc<TrackLocalStaticRTP> {
        lock_std(&self.track.0).clone()
    }

    /// A fresh track for a new PeerConnection.
    pub(super) fn renew_track(&mut self) {
        *lock_std(&self.track.0) = downlink_track(self.index, self.downlink.ssrc);
        self.in_pc = false;
    }
}

/// Per-channel forwarding table.
#[derive(Default)]
pub struct ChannelRouter {
    inner: Mutex<RouterState>,
    /// The channel's history recorder, when it records.
    tap: Option<Tap>,
    /// In a cluster: the relay that carries a local speaker to the other nodes.
    relay: std::sync::OnceLock<(Arc<crate::cluster::relay::Relay>, ChannelId)>,
}

#[derive(Default)]
struct RouterState {
    speaker: Option<SessionId>,
    /// Whether the speaker is connected here (else its packets come from another node,
    /// which records and relays them).
    speaker_local: bool,
    spurt: u64,
    listeners: HashMap<SessionId, Arc<Downlink>>,
    /// Relay addresses of the other nodes with members in this channel.
    targets: Vec<std::net::SocketAddr>,
}

impl ChannelRouter {
    /// A router whose forwarded packets are also recorded by `tap`.
    pub fn new(tap: Option<Tap>) -> ChannelRouter {
        ChannelRouter {
            inner: Mutex::default(),
            tap,
            relay: std::sync::OnceLock::new(),
        }
    }

    /// Relays a local speaker of `channel` through `relay` (cluster mode).
    pub fn set_relay(&self, relay: Arc<crate::cluster::relay::Relay>, channel: ChannelId) {
        let _ = self.relay.set((relay, channel));
    }

    /// Where a local speaker's packets are relayed: one copy per node.
    pub fn set_relay_targets(&self, targets: Vec<std::net::SocketAddr>) {
        lock_std(&self.inner).targets = targets;
    }

    /// How many nodes a local speaker is relayed to now (for the gauge).
    pub fn relayed_streams(&self) -> usize {
        let s = lock_std(&self.inner);
        if s.speaker.is_some() && s.speaker_local {
            s.targets.len()
        } else {
            0
        }
    }

    /// Sets the speaker to a session on another node, whose packets arrive through the
    /// relay: a new spurt for the listeners here, not recorded here (its node records).
    /// The same session again (a relay that moved nodes) keeps its spurt.
    pub fn set_remote_speaker(&self, session: Option<SessionId>) {
        let mut s = lock_std(&self.inner);
        if s.speaker_local {
            if let (Some(tap), Some(_)) = (&self.tap, &s.speaker) {
                tap.end(s.spurt);
            }
        } else if s.speaker.is_some() && s.speaker == session {
            return;
        }
        if session.is_some() {
            s.spurt += 1;
        }
        s.speaker = session;
        s.speaker_local = false;
    }

    /// The current speaker, and whether it is connected here.
    pub fn speaker(&self) -> Option<(SessionId, bool)> {
        let s = lock_std(&self.inner);
        s.speaker.clone().map(|sp| (sp, s.speaker_local))
    }

    /// Sets (or clears) who may send. Each new grant starts a new talk spurt (and a new
    /// transmission in the channel's history).
    pub fn set_speaker(&self, speaker: Option<(SessionId, &Member)>) {
        let mut s = lock_std(&self.inner);
        if let (Some(tap), Some(_), true) = (&self.tap, &s.speaker, s.speaker_local) {
            tap.end(s.spurt);
        }
        s.speaker_local = true;
        match speaker {
            Some((session, member)) => {
                s.spurt += 1;
                if let Some(tap) = &self.tap {
                    tap.begin(s.spurt, member);
                }
                s.speaker = Some(session);
            }
            None => s.speaker = None,
        }
    }

    /// Adds or replaces a listener's downlink.
    pub fn add_listener(&self, session: SessionId, downlink: Arc<Downlink>) {
        let mut s = lock_std(&self.inner);
        s.listeners.insert(session, downlink);
    }

    /// Removes a listener.
    pub fn remove_listener(&self, session: &SessionId) {
        let mut s = lock_std(&self.inner);
        s.listeners.remove(session);
    }

    /// Forwards a packet from `from` to every other listener, if `from` holds the floor.
    /// Returns false when the packet was not from the speaker.
    pub fn forward(&self, now: Instant, from: &SessionId, packet: &rtp::Packet) -> bool {
        let s = lock_std(&self.inner);
        if s.speaker.as_ref() != Some(from) {
            return false;
        }
        if s.speaker_local {
            if let Some(tap) = &self.tap {
                tap.frame(s.spurt, packet.header.timestamp, &packet.payload);
            }
            if let (Some((relay, channel)), false) = (self.relay.get(), s.targets.is_empty()) {
                relay.send(channel, from, packet, &s.targets);
            }
        }
        for (listener, downlink) in &s.listeners {
            if listener != from {
                downlink.push(now, s.spurt, packet);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn alice_member() -> Member {
        Member {
            user: "alice".into(),
            name: "Alice".into(),
        }
    }

    fn packet(ssrc: u32, seq: u16, ts: u32) -> rtp::Packet {
        let mut p = rtp::Packet::default();
        p.header.ssrc = ssrc;
        p.header.sequence_number = seq;
        p.header.timestamp = ts;
        p.header.payload_type = 96;
        p.header.extension = true;
        p.payload = bytes::Bytes::from_static(b"opus");
        p
    }

    struct Queue(mpsc::Sender<rtp::Packet>);
    impl DownlinkOut for Queue {
        fn try_write(&self, packet: rtp::Packet) -> bool {
            self.0.try_send(packet).is_ok()
        }
    }

    fn downlink(ssrc: u32) -> (Arc<Downlink>, mpsc::Receiver<rtp::Packet>) {
        let (queue, rx) = mpsc::channel(8);
        (
            Arc::new(Downlink {
                ssrc,
                payload_type: AtomicU8::new(111),
                rewriter: Mutex::new(StreamRewriter::new(1000, 0)),
                out: Arc::new(Queue(queue)),
            }),
            rx,
        )
    }

    #[test]
    fn only_the_speakers_packets_reach_the_other_listeners_rewritten() {
        let router = ChannelRouter::default();
        let (alice, bob) = (SessionId::from("alice"), SessionId::from("bob"));
        let (dl_a, mut rx_a) = downlink(0xAAAA);
        let (dl_b, mut rx_b) = downlink(0xBBBB);
        router.add_listener(alice.clone(), dl_a);
        router.add_listener(bob.clone(), dl_b);
        let now = Instant::now();
        // Nobody holds the floor: nothing passes.
        assert!(!router.forward(now, &alice, &packet(1, 5, 0)));
        router.set_speaker(Some((alice.clone(), &alice_member())));
        // Bob does not hold the floor: his packets are dropped.
        assert!(!router.forward(now, &bob, &packet(2, 5, 0)));
        assert!(router.forward(now, &alice, &packet(1, 5, 0)));
        let p = rx_b.try_recv().unwrap();
        assert_eq!(p.header.ssrc, 0xBBBB);
        assert_eq!(p.header.sequence_number, 1000);
        assert_eq!(p.header.payload_type, 111);
        assert!(p.header.marker);
        assert!(!p.header.extension);
        assert_eq!(&p.payload[..], b"opus");
        // The speaker does not hear itself.
        assert!(rx_a.try_recv().is_err());
    }

    #[test]
    fn a_talker_that_marks_every_packet_is_marked_on_the_first_of_each_spurt_only() {
        let router = ChannelRouter::default();
        let alice = SessionId::from("alice");
        let (dl, mut rx) = downlink(7);
        router.add_listener("bob".into(), dl);
        let mut marks = Vec::new();
        for spurt in 0..2u16 {
            router.set_speaker(Some((alice.clone(), &alice_member())));
            for k in 0..3u16 {
                let seq = spurt * 10 + k;
                let mut p = packet(1, seq, u32::from(seq) * 960);
                p.header.marker = true;
                assert!(router.forward(Instant::now(), &alice, &p));
                marks.push(rx.try_recv().unwrap().header.marker);
            }
            router.set_speaker(None);
        }
        assert_eq!(marks, [true, false, false, true, false, false]);
    }

    #[test]
    fn a_full_downlink_drops_instead_of_blocking_the_others() {
        let router = ChannelRouter::default();
        let alice = SessionId::from("alice");
        let (dl, mut rx) = downlink(1);
        router.add_listener("bob".into(), dl);
        router.set_speaker(Some((alice.clone(), &alice_member())));
        for seq in 0..20 {
            router.forward(
                Instant::now(),
                &alice,
                &packet(1, seq, u32::from(seq) * 960),
            );
        }
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 8);
    }
}
