//! SFU media: the server side of each client's two transports, and forwarding.
//!
//! - [`Transport`]: one answering PeerConnection (webrtc 0.21). The client always offers;
//!   the server answers with every candidate included (no trickle), so one signaling
//!   round trip sets a transport up.
//! - [`SessionMedia`]: a session's send transport (its microphone producer), receive
//!   transport, and downlink *slots*: one [`Downlink`] track per audio m-line of the
//!   receive transport. Joining a channel assigns it a free slot, or adds one (the client
//!   then renegotiates to receive it).
//! - [`ChannelRouter`]: per channel, the current speaker and the listeners' downlinks.
//!   Only the speaker's packets pass; each downlink rewrites them
//!   ([`crate::rewrite::StreamRewriter`]) into one continuous stream and queues them to
//!   its own writer task, so one slow listener never delays the others.
//!
//! webrtc callbacks only send a tagged event on a channel and return: blocking in a
//! handler stalls that connection's driver.

//!
//! Files: the session's media (this file), the transports (`transport.rs`), slots and
//! the router (`router.rs`).

mod ports;
mod router;
mod transport;

pub use ports::PortRange;

pub use router::*;
pub use transport::*;

use crate::sync::lock as lock_std;
use roger_protocol::{ChannelId, Direction, ErrorBody, ErrorCode, SessionId};
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};

pub use roger_protocol::codec::OPUS_PAYLOAD_TYPE;
/// How long an answer may wait for ICE gathering.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// The Opus codec as Roger negotiates it: 48 kHz, in-band FEC on.
pub fn opus_codec() -> RTCRtpCodec {
    use roger_protocol::codec;
    RTCRtpCodec {
        mime_type: codec::OPUS_MIME_TYPE.to_owned(),
        clock_rate: codec::OPUS_CLOCK_RATE,
        channels: codec::OPUS_SDP_CHANNELS,
        sdp_fmtp_line: codec::OPUS_FMTP.to_owned(),
        rtcp_feedback: vec![],
    }
}

/// Media settings shared by every transport of this server.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// UDP bind addresses (`0.0.0.0:0`, `127.0.0.1:0`, ...).
    pub bind: Vec<String>,
    /// Addresses announced instead of the bound ones.
    pub announced_ips: Vec<String>,
    /// A producer's packets per second; more are dropped (and counted).
    pub max_packets_per_second: u32,
    /// A producer's bytes per second; more are dropped (and counted).
    pub max_bytes_per_second: u32,
    /// When set, transports bind ports of this range instead of ephemeral ones.
    pub ports: Option<Arc<PortRange>>,
}

/// An offer waiting for its transport: its negotiation id, and how to tell it that a
/// newer one superseded it.
type WaitingOffer = (u64, oneshot::Sender<()>);

/// A session's transports and downlink slots.
pub struct SessionMedia {
    session: SessionId,
    settings: MediaSettings,
    events: mpsc::UnboundedSender<TransportEvent>,
    send: tokio::sync::Mutex<Option<Transport>>,
    recv: tokio::sync::Mutex<Option<Transport>>,
    slots: Mutex<Vec<Slot>>,
    /// Where this session's microphone packets go: the router of the channel whose floor
    /// it holds. `None` drops them (a client cannot inject media without the floor).
    route: Mutex<Option<Arc<ChannelRouter>>>,
    received: AtomicU64,
    states: Mutex<[Option<RTCPeerConnectionState>; 2]>,
    /// Receive slots this session may have: the channels its token allows.
    max_slots: usize,
    /// Per transport (send, recv): the offer waiting for the one in flight, if any, by
    /// negotiation id. A newer offer supersedes it, so at most one runs and one waits.
    waiting: [Mutex<Option<WaitingOffer>>; 2],
    /// The producer track in force: a newer track (the client recreated its send
    /// transport) ends the older one's forwarding, so one track per session is forwarded.
    producer_gen: AtomicU64,
    /// Closed with its session: an offer still in flight builds no transport after it.
    closed: std::sync::atomic::AtomicBool,
}

impl SessionMedia {
    /// Media for a new session. Transport events (state changes, tracks) arrive on the
    /// returned receiver; the owner passes tracks to [`SessionMedia::run_producer`].
    pub fn new(
        session: SessionId,
        settings: MediaSettings,
        max_slots: usize,
    ) -> (Arc<SessionMedia>, mpsc::UnboundedReceiver<TransportEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        (
            Arc::new(SessionMedia {
                session,
                settings,
                events,
                send: tokio::sync::Mutex::new(None),
                recv: tokio::sync::Mutex::new(None),
                slots: Mutex::new(Vec::new()),
                route: Mutex::new(None),
                received: AtomicU64::new(0),
                states: Mutex::new([None, None]),
                max_slots: max_slots.max(1),
                waiting: [Mutex::new(None), Mutex::new(None)],
                producer_gen: AtomicU64::new(0),
                closed: std::sync::atomic::AtomicBool::new(false),
            }),
            rx,
        )
    }

    /// Answers an offer on one transport (created on the first offer). One negotiation
    /// runs per transport at a time; of the offers that arrive meanwhile only the newest
    /// waits, the others are answered "superseded" at once.
    pub async fn negotiate(
        &self,
        direction: Direction,
        negotiation_id: u64,
        sdp: String,
    ) -> Result<String, ErrorBody> {
        let mlines = audio_mlines(&sdp);
        let most = match direction {
            Direction::Send => 1,
            Direction::Recv => self.max_slots,
        };
        if mlines > most {
            metrics::counter!("roger_offers_refused_total", "reason" => "too_many_mlines")
                .increment(1);
            return Err(ErrorBody::new(
                ErrorCode::SdpNegotiationError,
                format!(
                    "the offer has {mlines} audio m-lines; a {direction} transport of this session takes at most {most}"
                ),
            ));
        }
        let (lock, waiting) = match direction {
            Direction::Send => (&self.send, &self.waiting[0]),
            Direction::Recv => (&self.recv, &self.waiting[1]),
        };
        let superseded = || {
            metrics::counter!("roger_offers_superseded_total").increment(1);
            ErrorBody::new(
                ErrorCode::SdpNegotiationError,
                format!("offer {negotiation_id} was superseded by a newer offer on the {direction} transport"),
            )
        };
        let (cancel_tx, cancel_rx) = oneshot::channel();
        {
            // The newest offer (by negotiation id) is the one that waits.
            let mut w = lock_std(waiting);
            if w.as_ref().is_some_and(|(id, _)| *id > negotiation_id) {
                return Err(superseded());
            }
            if let Some((_, older)) = w.replace((negotiation_id, cancel_tx)) {
                let _ = older.send(());
            }
        }
        let mut guard = tokio::select! {
            g = lock.lock() => g,
            _ = cancel_rx => return Err(superseded()),
        };
        if self.closed.load(Ordering::Acquire) {
            return Err(ErrorBody::new(
                ErrorCode::SessionExpired,
                "this session has ended",
            ));
        }
        {
            let mut w = lock_std(waiting);
            if w.as_ref().is_some_and(|(id, _)| *id == negotiation_id) {
                w.take();
            }
        }
        // An offer from a new client PeerConnection (new DTLS certificate) replaces the
        // old server side: the client recreated its transport.
        let fingerprint = dtls_fingerprint(&sdp).map(str::to_owned);
        if let Some(old) = guard.as_ref() {
            if fingerprint.is_some() && old.remote_fingerprint != fingerprint {
                tracing::info!(session = %self.session, %direction, "client recreated its transport: replacing ours");
                metrics::counter!("roger_transports_recreated_total").increment(1);
                if let Some(old) = guard.take() {
                    old.close().await;
                }
                if direction == Direction::Recv {
                    for slot in lock_std(&self.slots).iter_mut() {
                        slot.renew_track();
                    }
                }
            }
        }
        if guard.is_none() {
            let mut t = Transport::new(direction, &self.settings, self.events.clone()).await?;
            t.remote_fingerprint = fingerprint;
            *guard = Some(t);
        }
        let transport = guard.as_mut().expect("created above");
        if direction == Direction::Recv {
            self.attach_slots(transport.pc(), mlines).await?;
        }
        let answer = transport.answer(negotiation_id, sdp).await?;
        if direction == Direction::Recv {
            self.learn_payload_types(transport.pc()).await;
        }
        Ok(answer)
    }

    /// Makes sure every offered audio m-line has a slot and every slot's track is on the
    /// PeerConnection before the offer is applied, so each new m-line is answered by one.
    async fn attach_slots(
        &self,
        pc: &Arc<dyn PeerConnection>,
        mlines: usize,
    ) -> Result<(), ErrorBody> {
        let to_add: Vec<Arc<TrackLocalStaticRTP>> = {
            let mut slots = lock_std(&self.slots);
            while slots.len() < mlines {
                let index = slots.len();
                slots.push(Slot::new(index));
            }
            slots
                .iter_mut()
                .filter(|s| !s.in_pc)
                .map(|s| {
                    s.in_pc = true;
                    s.current_track()
                })
                .collect()
        };
        for track in to_add {
            pc.add_track(track as Arc<dyn TrackLocal>)
                .await
                .map_err(|e| {
                    ErrorBody::new(
                        ErrorCode::SdpNegotiationError,
                        format!("add downlink track: {e}"),
                    )
                })?;
        }
        Ok(())
    }

    /// Reads the payload type each downlink negotiated (a third-party client may not use
    /// 111); packets with the wrong type would be dropped silently by the sender.
    async fn learn_payload_types(&self, pc: &Arc<dyn PeerConnection>) {
        for sender in pc.get_senders().await {
            let Ok(params) = sender.get_parameters().await else {
                continue;
            };
            let Some(codec) = params.rtp_parameters.codecs.first() else {
                continue;
            };
            let ssrcs: Vec<u32> = params
                .encodings
                .iter()
                .filter_map(|e| e.rtp_coding_parameters.ssrc)
                .collect();
            let slots = lock_std(&self.slots);
            for slot in slots.iter().filter(|s| ssrcs.contains(&s.downlink.ssrc)) {
                slot.downlink
                    .payload_type
                    .store(codec.payload_type, Ordering::Relaxed);
            }
        }
    }

    /// Assigns `channel` a downlink slot (reusing a free one). Returns the slot's SSRC and
    /// the number of slots the client's receive transport must offer.
    pub fn assign_slot(&self, channel: &ChannelId) -> (Arc<Downlink>, u32) {
        let mut slots = lock_std(&self.slots);
        let index = match slots
            .iter()
            .position(|s| s.channel.as_ref() == Some(channel))
        {
            Some(i) => i,
            None => match slots.iter().position(|s| s.channel.is_none()) {
                Some(i) => i,
                None => {
                    let i = slots.len();
                    slots.push(Slot::new(i));
                    i
                }
            },
        };
        slots[index].channel = Some(channel.clone());
        (slots[index].downlink.clone(), slots.len() as u32)
    }

    /// Frees the slot of `channel`.
    pub fn release_slot(&self, channel: &ChannelId) {
        let mut slots = lock_std(&self.slots);
        for s in slots
            .iter_mut()
            .filter(|s| s.channel.as_ref() == Some(channel))
        {
            s.channel = None;
        }
    }

    /// The number of slots.
    pub fn slot_count(&self) -> u32 {
        lock_std(&self.slots).len() as u32
    }

    /// Routes this session's microphone to `router` (floor granted) or nowhere.
    pub fn set_route(&self, router: Option<Arc<ChannelRouter>>) {
        *lock_std(&self.route) = router;
    }

    /// Which transports exist.
    pub async fn transports(&self) -> Vec<Direction> {
        let mut v = Vec::new();
        if self.send.lock().await.is_some() {
            v.push(Direction::Send);
        }
        if self.recv.lock().await.is_some() {
            v.push(Direction::Recv);
        }
        v
    }

    /// Records a transport's state (for the health check).
    pub fn set_state(&self, direction: Direction, state: RTCPeerConnectionState) {
        let i = match direction {
            Direction::Send => 0,
            Direction::Recv => 1,
        };
        lock_std(&self.states)[i] = Some(state);
    }

    /// Whether any transport is in `failed`.
    pub fn any_failed(&self) -> bool {
        lock_std(&self.states).contains(&Some(RTCPeerConnectionState::Failed))
    }

    /// Packets received from this session's producer.
    pub fn packets_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Reads the client's producer track and forwards what the floor and the producer
    /// limits allow. A newer track of the same session ends this one.
    pub async fn run_producer(self: Arc<Self>, track: Arc<dyn TrackRemote>) {
        let gen = self.producer_gen.fetch_add(1, Ordering::AcqRel) + 1;
        if gen > 1 {
            metrics::counter!("roger_producer_tracks_replaced_total").increment(1);
        }
        let mut limit = crate::limits::ProducerLimit::new(
            Instant::now(),
            self.settings.max_packets_per_second,
            self.settings.max_bytes_per_second,
        );
        while let Some(event) = track.poll().await {
            if self.producer_gen.load(Ordering::Acquire) != gen {
                tracing::debug!(session = %self.session, "a newer producer track took over");
                break;
            }
            if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                self.received.fetch_add(1, Ordering::Relaxed);
                if let Err(over) = limit.check(Instant::now(), packet.payload.len()) {
                    let reason = match over {
                        crate::limits::OverLimit::Packets => "packet_rate",
                        crate::limits::OverLimit::Bytes => "byte_rate",
                    };
                    metrics::counter!("roger_rtp_dropped_total", "reason" => reason).increment(1);
                    continue;
                }
                let router = lock_std(&self.route).clone();
                let forwarded = router
                    .map(|r| r.forward(Instant::now(), &self.session, &packet))
                    .unwrap_or(false);
                if !forwarded {
                    metrics::counter!("roger_rtp_dropped_total", "reason" => "no_floor")
                        .increment(1);
                }
            }
        }
    }

    /// Closes both transports.
    pub async fn close(&self) {
        // Before taking the locks: an offer waiting for one sees it once it has it.
        self.closed.store(true, Ordering::Release);
        self.set_route(None);
        if let Some(t) = self.send.lock().await.take() {
            t.close().await;
        }
        if let Some(t) = self.recv.lock().await.take() {
            t.close().await;
        }
    }
}
